"""One Assets execution: the records sent in bounded chunks, DONE awaited, the outcome read.

Nothing here commits or acknowledges: ``Outgoing`` (``shared.deliver.outgoing``) spools what went out, and the
worker commits it once the execution is DONE (``shared.deliver.worker``). Around the execution,
``shared.deliver.open_executions`` notes it as open, so that a writer that dies mid-execution leaves enough for
the next one to cancel it and compare.
"""
from __future__ import annotations

import logging
import re
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import orjson

from shared import telemetry
from shared.clients.assets import AssetsClient, Execution
from shared.contract.payload import Line
from shared.deliver import open_executions
from shared.deliver.outgoing import Outgoing
from shared.records.schema import BY_KEY
from shared.store.ports import StateStore

log = logging.getLogger(__name__)

CHUNK_RECORDS = 500         # public clients use 10-500 per chunk; Assets documents no maximum (reference §4.3)
CHUNK_BYTES = 2_000_000     # and no byte limit: stay well under any proxy limit

Progress = Callable[[str, int], None]


@dataclass
class Outcome:
    """What Assets reported for a finished execution, and how long sending and waiting took."""

    counts: Counter = field(default_factory=Counter)   # objectsCreated / objectsUpdated / objectsIdentical
    errors: list[str] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)


@dataclass
class Paused:
    """An execution this invocation hands on (``shared.deliver.handoff``) when its time is up: ``unsent`` the
    records it took from ``records`` but did not send, ``rest`` what it did not take; both empty when every
    record went out and only DONE is still to come."""

    execution: Execution
    unsent: list[Line] = field(default_factory=list)
    rest: Iterator[Line] = field(default_factory=lambda: iter(()))

    @property
    def sent_all(self) -> bool:
        return not self.unsent  # a pause while sending holds back at least the record that found time up


def execute(assets: AssetsClient, state: StateStore, records: Iterator[Line] | None, pushed: Outgoing,
            renew: Callable[[], None], progress: Progress, cids: list[str], note: str, *,
            execution: Execution | None = None, deadline: float | None = None,
            await_seconds: float = 0.0) -> Outcome | Paused:
    """One Assets execution for ``records``, filling ``pushed`` as they go out: noted as open
    (``shared.deliver.open_executions``) from before ``start`` until the commit; cancelled, and its records
    marked for comparison, when anything fails before DONE. ``note`` says what it carries, for the log.

    ``execution``: one an earlier invocation opened and handed on - ``records`` are the rest to send (None:
    every record went out, only DONE is awaited). ``deadline`` (``time.monotonic()``): no chunk starts after
    it, and DONE is awaited ``await_seconds`` at most and not past it (one status request at least); then
    ``Paused`` says what is left. Without a deadline everything is sent and DONE awaited here."""
    if execution is None:
        assets.ensure_ready()
        progress("Submitting data", 0)
        open_executions.note_starting(state)
        execution = assets.start()
        open_executions.note_opened(state, execution)
    pushed.started = True
    execution_id = _execution_id(execution)
    span = telemetry.start_span("assets_execution", execution=execution_id, cids=cids)  # ended below
    log.info("Assets execution %s %s for %s", execution_id, "goes on" if pushed.chunks else "started", note,
             extra={"event": "execution.started", "execution": execution_id, "cids": cids})
    outcome = Outcome()
    try:
        sending = time.monotonic()
        if records is not None:
            paused = _send(assets, state, execution, records, pushed, renew, progress, deadline)
            if paused is not None:
                return paused
        waiting = time.monotonic()
        outcome.seconds["submit"] = waiting - sending
        progress("Waiting for Assets", pushed.sent.total())
        until = None if deadline is None else min(deadline, time.monotonic() + await_seconds)
        body = assets.wait(execution, tick=renew, until=until)
        if body is None:
            return Paused(execution)
        outcome.seconds["wait"] = time.monotonic() - waiting
    except BaseException as error:
        telemetry.failed(span, error)
        assets.cancel(execution)
        open_executions.abandon(state)  # Assets may have applied some of it: compared again by the next run
        raise
    finally:
        span.end()
    _read_outcome(body, outcome, pushed)
    _log_finished(execution_id, cids, pushed, outcome)
    return outcome


def _execution_id(execution: Execution) -> str:
    """The execution's id from its links (``.../executions/{id}/status``), for logs; "unknown" if absent."""
    match = re.search(r"/executions/([0-9A-Za-z-]{1,64})/", execution.status)
    return match.group(1) if match else "unknown"


def _log_finished(execution_id: str, cids: list[str], pushed: Outgoing, outcome: Outcome) -> None:
    """The execution's outcome in counts (Assets' error texts may quote data: only their number is logged)."""
    counts, records = outcome.counts, pushed.sent.total()
    log.info("Assets execution %s finished: %d records in %d chunk(s); created %d, updated %d, identical %d; "
             "%d error(s)", execution_id, records, pushed.chunks, counts["objectsCreated"],
             counts["objectsUpdated"], counts["objectsIdentical"], len(outcome.errors),
             extra={"event": "execution.finished", "execution": execution_id, "cids": cids,
                    "records": records, "errors": len(outcome.errors)})
    telemetry.count("entra_assets.records_pushed", records)
    telemetry.count("entra_assets.executions", 1, outcome="errors" if outcome.errors else "ok")


def _send(assets: AssetsClient, state: StateStore, execution: Execution, records: Iterator[Line],
          pushed: Outgoing, renew: Callable[[], None], progress: Progress, deadline: float | None) -> Paused | None:
    """Send records in bounded chunks; one full chunk is held back so that the last one carries
    ``completed: true`` (sending ``completed`` alone with no data is UNCONFIRMED, reference §4.3). Returns None
    once all went out; ``Paused`` when ``deadline`` passed first (checked after each chunk: an invocation runs
    over its time by one chunk at most).

    ``pushed`` spools each chunk's records as it goes out: committed once Assets is DONE. The data stays the raw
    JSON of the payload line (``orjson.Fragment`` in the chunk): no record is parsed or serialised again. A record
    bigger than ``CHUNK_BYTES`` (a group with tens of thousands of members) goes alone. Before a chunk goes out
    its ids are noted as in flight (``shared.deliver.open_executions``): if this writer dies, the next one knows
    what Assets may hold."""
    held: _Chunk | None = None
    current = _Chunk()
    for line in records:
        if current.count and (current.count >= CHUNK_RECORDS or current.size + len(line.data) > CHUNK_BYTES):
            if held is not None:
                _submit(assets, state, execution, held, pushed, completed=False)
                renew()
                progress("Submitting data", pushed.sent.total())
                if deadline is not None and time.monotonic() >= deadline:
                    return Paused(execution, [*current.lines, line], records)
            held, current = current, _Chunk()
        current.add(line)
    if held is not None:
        _submit(assets, state, execution, held, pushed, completed=False)
    _submit(assets, state, execution, current, pushed, completed=True)
    return None


@dataclass
class _Chunk:
    """One chunk being filled: its data by selector (as Assets wants it), its records by type and id, and its
    lines (spooled in ``pushed`` once the chunk went out)."""

    data: dict[str, list] = field(default_factory=dict)
    records: dict[str, dict[str, bytes]] = field(default_factory=dict)   # by type and id: the record's JSON
    lines: list[Line] = field(default_factory=list)
    count: int = 0
    size: int = 0

    def add(self, line: Line) -> None:
        self.data.setdefault(BY_KEY[line.type].selector, []).append(orjson.Fragment(line.data))  # embedded as is
        self.records.setdefault(line.type, {})[line.id] = line.data
        self.lines.append(line)
        self.count, self.size = self.count + 1, self.size + len(line.data)


def _submit(assets: AssetsClient, state: StateStore, execution: Execution, chunk: _Chunk, pushed: Outgoing,
            completed: bool) -> None:
    pushed.chunks += 1
    state.note_in_flight(chunk.records)
    assets.submit(execution, chunk.data, f"chunk-{pushed.chunks:05d}", completed)
    for line in chunk.lines:
        pushed.add(line)


def _read_outcome(body: dict, outcome: Outcome, pushed: Outgoing) -> None:
    """Counts from the execution result. Types that report errors keep their old hashes, so the next full
    run pushes their records again instead of believing Assets has them."""
    progress_result = body.get("progressResult") or {}
    by_name = {t.name: t.key for t in BY_KEY.values()}
    for entry in (progress_result.get("objectTypeResultMap") or {}).values():
        for counter in ("objectsCreated", "objectsUpdated", "objectsIdentical"):
            outcome.counts[counter] += int(entry.get(counter) or 0)
        if entry.get("errorMessages"):
            outcome.errors.append(f"{entry.get('objectTypeName')}: {entry['errorMessages']}")
            pushed.drop(by_name.get(entry.get("objectTypeName"), ""))
    if progress_result.get("errorMessages"):
        outcome.errors.append(str(progress_result["errorMessages"]))
