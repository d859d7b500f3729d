"""Executions a crashed writer left open (DESIGN.md invariant 8): found and cancelled by the next writer.

Assets runs one execution per import source at a time; one left INGESTING by a killed writer answers every
later ``start`` with ``409 IN_PROGRESS`` (reference/assets-imports-api.md §4.1). So the writer notes, under its
lease, what it is about to open (checkpoint ``assets/execution``):
1. ``{"starting": <time>}`` just before ``start`` (``note_starting``, which also forgets older in-flight ids);
2. the execution's links (``Execution``) as soon as ``start`` returns, before the first chunk (``note_opened``);
3. before each chunk, the records it carries (``StateStore.note_in_flight``);
4. nothing (``closed``) in the commit after DONE.
The next writer (``cancel_left_open``, right after it takes the lease) finds a note, asks Assets and cancels
what is still INGESTING or PROCESSING: its records were never committed, so their messages come back and are
pushed again. A note without links (killed inside ``start``) is resolved through the import source's status:
an execution RUNNING then is taken for the one that ``start`` created (the lease excludes other writers of
ours; a foreign import started in that same second would be cancelled too - unlikely, and harmless but for
its re-run). An open execution the note does not explain is someone else's: ``start`` waits for it.

Whatever the orphan's end, Assets may hold some of its records (it may have finished, or processed part of
them before the cancel), while the state does not know it. So every record it had in flight gets the stored
hash ``UNKNOWN`` (``abandon``), which matches no record, and its data as the last pushed: the next full run
pushes each such object again, or marks it Deleted if it is gone - without it, an object the orphan created
and the tenant then deleted would stay Active in Assets for good. A writer whose own execution fails does
the same.
"""
from __future__ import annotations

import dataclasses
import logging
import time

import orjson

from shared.clients.assets import AssetsClient, Execution
from shared.deliver.outgoing import Outgoing
from shared.errors import EntraAssetsError
from shared.store.ports import StateStore

log = logging.getLogger(__name__)

OPEN = "assets/execution"   # checkpoint: the execution this writer is starting or sending to
OPEN_STATUSES = ("INGESTING", "PROCESSING")
UNKNOWN = "?"               # a stored hash that matches no record: Assets may or may not hold what was sent


def note_starting(state: StateStore) -> None:
    """Commit the note just before ``start``, forgetting the in-flight records of any earlier execution."""
    state.clear_in_flight()
    state.commit({}, {OPEN: orjson.dumps({"starting": time.time()}).decode()})


def note_opened(state: StateStore, execution: Execution) -> None:
    """Commit the execution's links as soon as ``start`` returned, before the first chunk."""
    state.commit({}, {OPEN: orjson.dumps(dataclasses.asdict(execution)).decode()})


def closed() -> dict[str, None]:
    """The checkpoint change that goes with the commit after DONE."""
    return {OPEN: None}


def abandon(state: StateStore) -> int:
    """After an execution ended without its commit (cancelled, failed, or left by a dead writer): its in-flight
    records get the stored hash ``UNKNOWN`` and their data is stored as the last pushed (what a departure
    pushes again with Status = Deleted: Assets skips a record without its label), and the note is cleared.
    Returns how many records were marked."""
    marked = 0
    with Outgoing() as records:  # spooled by shard and committed shard by shard, as the worker's own commit
        for type_key, record_id, data in state.in_flight():
            records.mark(type_key, record_id, UNKNOWN, data)
        for batch in records.batches():
            state.commit(batch.hashes, {}, batch.records)
            marked += sum(map(len, batch.hashes.values()))
            del batch  # before the next shard is read (as ``worker._commit``)
    state.commit({}, closed())  # last: a writer killed before it leaves the note for the next one to redo
    return marked


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
    marked = abandon(state)
    if marked:
        log.warning("%d record(s) the crashed writer had sent will be compared again by the next full run", marked)
    return cancelled


def _cancel_if_open(assets: AssetsClient, execution: Execution) -> bool:
    status = assets.execution_status(execution).get("status")
    if status not in OPEN_STATUSES:
        log.info("the Assets execution a crashed writer left is %s; nothing to cancel", status)
        return False
    assets.cancel(execution)
    log.warning("cancelled the Assets execution a crashed writer left %s; its records are pushed again", status)
    return True
