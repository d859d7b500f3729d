"""Executions a crashed writer left open (DESIGN.md invariant 8): found and cancelled by the next writer.

Assets runs one execution per import source at a time; one left INGESTING by a killed writer answers every
later ``start`` with ``409 IN_PROGRESS`` (reference/assets-imports-api.md §4.1). So the writer notes, under its
lease, what it is about to open (checkpoint ``assets/execution``):
1. ``{"starting": <time>}`` just before ``start``;
2. the execution's links (``Execution``) as soon as ``start`` returns, before the first chunk;
3. nothing (``None``) in the commit after DONE, or after it cancelled the execution itself.
The next writer (``cancel_left_open``, right after it takes the lease) finds a note, asks Assets and cancels
what is still INGESTING or PROCESSING: its records were never committed, so their messages come back and are
pushed again. A note without links (killed inside ``start``) is resolved through the import source's status:
an execution RUNNING then is taken for the one that ``start`` created (the lease excludes other writers of
ours; a foreign import started in that same second would be cancelled too - unlikely, and harmless but for
its re-run). An open execution the note does not explain is someone else's: ``start`` waits for it.
"""
from __future__ import annotations

import dataclasses
import logging
import time

import orjson

from shared.assets import AssetsClient, Execution
from shared.errors import EntraAssetsError
from shared.store import StateStore

log = logging.getLogger(__name__)

OPEN = "assets/execution"   # checkpoint: the execution this writer is starting or sending to
OPEN_STATUSES = ("INGESTING", "PROCESSING")


def starting(now: float | None = None) -> dict[str, str]:
    """The checkpoint to commit just before ``start``."""
    return {OPEN: orjson.dumps({"starting": time.time() if now is None else now}).decode()}


def opened(execution: Execution) -> dict[str, str]:
    """The checkpoint to commit as soon as ``start`` returned, before the first chunk."""
    return {OPEN: orjson.dumps(dataclasses.asdict(execution)).decode()}


def closed() -> dict[str, None]:
    """The checkpoint change that goes with the commit after DONE (or after cancelling)."""
    return {OPEN: None}


def cancel_left_open(assets: AssetsClient, state: StateStore) -> bool:
    """Cancel the execution a crashed writer left open, if any, and clear its note. Call under the writer lease,
    before ``start``. Returns True when an execution was cancelled. Assets errors are logged, not raised: the
    note stays, and ``start`` reports an execution that is still open."""
    raw = state.checkpoint(OPEN)
    if not raw:
        return False
    note = orjson.loads(raw)
    try:
        if "submit_results" in note:
            cancelled = _cancel_if_open(assets, Execution(**note))
        else:
            cancelled = assets.cancel_running()
            if cancelled:
                log.warning("cancelled the Assets execution that a writer killed while starting it left open")
    except EntraAssetsError as error:
        if getattr(error, "http_status", None) != 404:  # 404: Assets no longer knows it - nothing is open
            log.warning("could not check the Assets execution a crashed writer left: %s", error)
            return False
        cancelled = False
    state.commit({}, closed())
    return cancelled


def _cancel_if_open(assets: AssetsClient, execution: Execution) -> bool:
    status = assets.execution_status(execution).get("status")
    if status not in OPEN_STATUSES:
        log.info("the Assets execution a crashed writer left is %s; nothing to cancel", status)
        return False
    assets.cancel(execution)
    log.warning("cancelled the Assets execution a crashed writer left %s; its records are pushed again", status)
    return True
