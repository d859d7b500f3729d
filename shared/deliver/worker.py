"""The single writer: drains the queue, coalesces, pushes one Assets execution, then acknowledges.

Invariants (DESIGN.md): one writer per import source (a lease that expires if its holder dies); many changes
per execution (everything waiting is drained and coalesced: the newest record per object wins); nothing is
acknowledged - no message deleted, no hash or checkpoint moved - before Assets reports the execution DONE.
A crash anywhere means the messages reappear and the same records are pushed again, which is harmless.
"""
from __future__ import annotations

import itertools
import logging
import re
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import orjson

from shared import telemetry
from shared.clients.assets import AssetsClient, Execution
from shared.contract import PUSHED, Pushed, message_read_time, message_types
from shared.deliver import follow_ups, open_executions
from shared.deliver.coalesce import Coalesced, Line, coalesced, merge_checkpoint
from shared.errors import WriterBusy
from shared.records.build import Record
from shared.records.schema import BY_KEY
from shared.store.ports import ChangeQueue, LeaseBusy, PayloadStore, QueuedMessage, StateStore

log = logging.getLogger(__name__)

CHUNK_RECORDS = 500         # public clients use 10-500 per chunk; Assets documents no maximum (reference §4.3)
CHUNK_BYTES = 2_000_000     # and no byte limit: stay well under any proxy limit
MAX_MESSAGES = 256          # per execution; the rest waits for the next one
VISIBILITY_SECONDS = 1800   # drained messages stay invisible while their execution runs
DEFER_SECONDS = 30          # a trigger message that finds the lease taken comes back after this
LEASE_POLL_SECONDS = 1.0    # how often a run waiting for the writer lease tries again

Progress = Callable[[str, int], None]
# A catch-up's plan: its records, and once they are consumed its checkpoints and the ids it read per type.
CatchUp = Callable[[], tuple[Iterator[Record], dict, dict[str, set[str]]]]
CATCH_UP_KINDS = ("changes", "lifecycle", "catchup")
AfterDone = Callable[[StateStore, dict, Callable[[], None]], object]  # (state, pushed records by type, renew)


@dataclass
class PushResult:
    """What one worker pass did."""

    messages: int = 0
    records: int = 0
    by_type: Counter = field(default_factory=Counter)
    chunks: int = 0
    executions: int = 0
    deferred: bool = False
    result_counts: Counter = field(default_factory=Counter)   # created/updated/identical from Assets
    errors: list[str] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)
    triggers: Counter = field(default_factory=Counter)    # who queued the messages: timer, webhook, cli (history)
    summaries: list[dict] = field(default_factory=list)   # the producer summaries of the full runs carried
    links: object | None = None    # Jira User links written after DONE (shared.jira_links.LinkOutcome), if linking is on
    superseded: int = 0            # records messages dropped whole: newer full runs were pushed
    stale: Counter = field(default_factory=Counter)  # records dropped per type: newer data was pushed
    leftovers: int = 0             # payloads (and unfinished writes) of superseded or dead runs deleted
    follow_ups: int = 0            # notified ids the catch-up did not see, queued for another one (delta lag)


def push_queued(queue: ChangeQueue, payloads: PayloadStore, state: StateStore, assets: AssetsClient, *,
                trigger: QueuedMessage | None = None, lease_ttl: float = 60, lease_wait: float = 0,
                progress: Progress = lambda stage, n: None, catch_up: CatchUp | None = None,
                on_pass: Callable[[PushResult, BaseException | None], None] | None = None,
                after: AfterDone | None = None, sleep: Callable[[float], None] = time.sleep) -> PushResult:
    """Push everything waiting in ``queue`` (plus ``trigger``, the message a queue trigger delivered).

    ``records`` messages point at a full run's payload. ``changes`` (from the webhook), ``lifecycle`` and
    ``catchup`` (from the timer) messages ask for a delta catch-up: ``catch_up()`` plans it - once, however
    many such messages were drained - and its records join the same execution, after the payloads' (newer
    wins). Its checkpoints (new delta links) are committed with the rest, after DONE. Nothing stale is pushed
    (``shared.deliver.coalesce``, ``shared.contract``), and an execution a crashed writer left open is cancelled
    first (``shared.deliver.open_executions``).

    When another writer holds the lease: with a ``trigger``, the message is re-queued with a delay (so it does
    not burn a delivery attempt) and ``deferred`` is True; without one, the lease is waited for up to
    ``lease_wait`` seconds (a dead holder's lease expires within one ttl), then ``WriterBusy`` is raised.
    Raises on failure, leaving every message to be redelivered. ``on_pass(result, error)`` runs after a pass
    that handled messages, failed ones included, while the lease is still held (the run history: one writer).
    ``after(state, records, renew)`` runs after the commit of every pass (Jira User links, ``shared.jira_links``);
    it must not raise.
    """
    if trigger is not None and not _valid(trigger):
        raise ValueError(f"queue message {trigger.id} is not an entra-assets message")  # retried, then poisoned
    result, failure = PushResult(), None
    lease = state.lease(f"writer/{assets.source_key()}", ttl=lease_ttl)
    try:
        _acquire(lease, lease_wait if trigger is None else 0, sleep)
    except LeaseBusy:
        if trigger is None:
            raise WriterBusy(f"another entra-assets writer kept the Assets import source for {lease_wait:.0f} s; "
                             "the changes stay queued and that writer pushes them") from None
        queue.send(trigger.body, delay=DEFER_SECONDS)
        log.info("another worker holds the import source; message deferred by %ss", DEFER_SECONDS)
        return PushResult(deferred=True)
    try:
        with telemetry.span("worker_pass"):
            open_executions.cancel_left_open(assets, state)
            return _push(queue, payloads, state, assets, trigger, lease.renew, progress, catch_up, result, after)
    except BaseException as error:
        failure = error
        raise
    finally:
        try:
            if on_pass is not None and result.messages:
                on_pass(result, failure)
        finally:
            lease.__exit__(None, None, None)


def recover(state: StateStore, assets: AssetsClient, *, lease_ttl: float = 60, lease_wait: float = 0,
            sleep: Callable[[float], None] = time.sleep) -> bool:
    """Before a full run plans: resolve, under the writer lease, an execution a crashed writer left open
    (``shared.deliver.open_executions``), so that the plan compares against what Assets may now hold. Waits up to
    ``lease_wait`` for the lease; a lease still busy then belongs to a live writer, who resolves it. Returns
    True when an execution was cancelled."""
    lease = state.lease(f"writer/{assets.source_key()}", ttl=lease_ttl)
    try:
        _acquire(lease, lease_wait, sleep)
    except LeaseBusy:
        return False
    try:
        return open_executions.cancel_left_open(assets, state)
    finally:
        lease.__exit__(None, None, None)


def _acquire(lease, wait: float, sleep: Callable[[float], None]) -> None:
    """Enter ``lease``, polling for up to ``wait`` seconds while it is busy; one line tells why a run pauses.
    Raises ``LeaseBusy`` when the wait is over."""
    started, told = time.monotonic(), False
    while True:
        try:
            lease.__enter__()
            return
        except LeaseBusy as busy:
            waited = time.monotonic() - started
            if waited >= wait:
                raise
            if not told:
                expires = f" (it expires in {busy.expires_in:.0f} s unless its holder renews it)" \
                    if busy.expires_in is not None else ""
                log.warning("another writer holds the Assets import source%s; waiting up to %.0f s", expires, wait)
                told = True
            sleep(min(LEASE_POLL_SECONDS, wait - waited))


def _drain(queue: ChangeQueue, trigger: QueuedMessage | None) -> list[QueuedMessage]:
    messages = [trigger] if trigger else []
    while len(messages) < MAX_MESSAGES:
        batch = queue.receive(max_messages=min(32, MAX_MESSAGES - len(messages)),
                              visibility_timeout=VISIBILITY_SECONDS)
        if not batch:
            break
        messages.extend(batch)
    valid = [m for m in messages if _valid(m)]
    valid.sort(key=lambda m: message_read_time(m.body))  # the queue is not strictly FIFO
    return valid


def _valid(message: QueuedMessage) -> bool:
    body = message.body
    kind = body.get("kind") if isinstance(body, dict) else None
    ok = kind in CATCH_UP_KINDS or (kind == "records" and isinstance(body.get("payload"), str))
    if not ok:
        # Left in the queue: after maxDequeueCount deliveries it lands in the poison queue for inspection.
        log.error("queue message %s is not an entra-assets message; left for the poison queue", message.id)
    return ok


def _push(queue, payloads, state, assets: AssetsClient, trigger, renew: Callable[[], None],
          progress: Progress, catch_up: CatchUp | None, result: PushResult, after: AfterDone | None = None
          ) -> PushResult:
    """One pass: drain, drop what is superseded, coalesce with the catch-up, push, commit, acknowledge."""
    started = time.monotonic()
    messages = _drain(queue, trigger)
    cids, more = _noted(messages, result)
    marks = Pushed.load(state.checkpoint(PUSHED))
    with_payload = _unsuperseded(queue, payloads, [m for m in messages if m.body["kind"] == "records"], trigger,
                                 marks, result)
    checkpoints: dict[str, str | None] = {}
    set_aside = Coalesced()
    pending = coalesced(payloads, with_payload, checkpoints, marks, state.read_times, set_aside)
    if catch_up_ran := any(m.body["kind"] in CATCH_UP_KINDS for m in messages):
        if catch_up is None:
            raise ValueError("a catch-up was queued but this worker cannot read Graph")
        planning = time.time()  # its records count as read now: its delta rounds begin after this
        planned, caught_up, seen = catch_up()
        pending = itertools.chain(pending, (_as_line(r, planning) for r in planned),
                                  _merge_later(checkpoints, caught_up))
    first = next(pending, None)  # none: nothing to push (e.g. payloads already pushed and deleted)
    pushed = Outgoing()
    if first is not None:
        _execute(assets, state, itertools.chain([first], pending), result, pushed, renew, progress,
                 len(messages), cids, more)
    if catch_up_ran:
        pushed.confirm(seen, planning)  # read unchanged by the catch-up: as current as what it pushed
    result.stale = Counter(set_aside.stale_by_type)
    for name, value in set_aside.older_checkpoints.items():  # under what is stored, or what this pass sets
        checkpoints[name] = merge_checkpoint(name, value, checkpoints.get(name, state.checkpoint(name)))
    marks.advance(pushed.newest_read(), {t: message_read_time(m.body) for m in with_payload
                                         for t in message_types(m.body) if t not in pushed.failed})
    state.commit(pushed.hashes, {**checkpoints, PUSHED: marks.dump(), **open_executions.closed()},
                 pushed.records, pushed.read)
    if catch_up_ran:
        _follow_up(queue, state, messages, pushed, result)
    if after is not None:  # after DONE and the commit: a failure there never undoes the execution
        result.links = after(state, pushed.records, renew)
    _acknowledge(queue, payloads, messages, with_payload, trigger, result)
    if result.superseded or result.stale or result.leftovers or result.follow_ups:
        log.info("worker pass set aside %d superseded message(s) and %d stale record(s) (%s), swept %d leftover "
                 "payload(s), queued %d notified id(s) for a follow-up catch-up", result.superseded,
                 sum(result.stale.values()), dict(result.stale), result.leftovers, result.follow_ups,
                 extra={"event": "worker.set_aside", "superseded": result.superseded,
                        "stale": sum(result.stale.values()), "leftovers": result.leftovers,
                        "follow_ups": result.follow_ups})
    result.seconds["push"] = time.monotonic() - started
    progress("Done", result.records)
    return result


def _noted(messages: list[QueuedMessage], result: PushResult) -> tuple[list[str], int]:
    """Count the drained messages and their triggers in ``result``; their correlation ids (and how many more)."""
    result.messages = len(messages)
    cids, more = telemetry.carried_cids(m.body for m in messages)  # the notifications and runs coalesced here
    if messages:
        log.info("worker drained %d message(s)", len(messages),
                 extra={"event": "worker.drained", "messages": len(messages), "cids": cids})
    for message in messages:
        result.triggers[str(message.body.get("trigger") or "unknown")] += 1
        if isinstance(message.body.get("summary"), dict):
            result.summaries.append(message.body["summary"])
    return cids, more


def _follow_up(queue: ChangeQueue, state: StateStore, messages: list[QueuedMessage], pushed: Outgoing,
               result: PushResult) -> None:
    """Queue a later catch-up for the notified ids this one did not see (delta may lag the notification)."""
    for attempt, changes in follow_ups.missed(messages, pushed.read, state.read_times).items():
        for body, delay in follow_ups.follow_ups(changes, attempt, time.time()):
            queue.send(body, delay=delay)
            result.follow_ups += len(body["changes"])


def _acknowledge(queue: ChangeQueue, payloads: PayloadStore, messages: list[QueuedMessage],
                 with_payload: list[QueuedMessage], trigger: QueuedMessage | None, result: PushResult) -> None:
    """After the commit: delete the messages and their payloads, and sweep what dead or superseded runs left
    (older than the newest full run just pushed)."""
    for message in messages:
        if message is not trigger:  # the Functions host completes the trigger message itself
            queue.delete(message)
    for name in {m.body["payload"] for m in with_payload}:
        payloads.delete(name)
    full_runs = [message_read_time(m.body) for m in with_payload if message_types(m.body)]
    if full_runs:
        result.leftovers = payloads.sweep(before=max(full_runs))


def _unsuperseded(queue: ChangeQueue, payloads: PayloadStore, messages: list[QueuedMessage],
                  trigger: QueuedMessage | None, marks: Pushed, result: PushResult) -> list[QueuedMessage]:
    """The ``records`` messages that newer full runs have not superseded; the others are acknowledged and their
    payloads deleted at once: what they carry was planned again, from newer data, by a run already pushed."""
    kept = []
    for message in messages:
        if not marks.superseded(message_read_time(message.body), message_types(message.body)):
            kept.append(message)
            continue
        result.superseded += 1
        log.info("message %s: its full run was superseded by a newer one already pushed; dropped", message.id)
        payloads.delete(message.body["payload"])
        if message is not trigger:
            queue.delete(message)
    return kept


@dataclass
class Outgoing:
    """The records sent in one execution, by type and id: their hash, their data (the payload's raw JSON, as
    ``orjson.Fragment``) and when it was read. Committed once Assets reports DONE, minus the types it reported
    errors for (``failed``). ``read`` also holds the objects a catch-up read and found unchanged."""

    hashes: dict[str, dict[str, str]] = field(default_factory=lambda: defaultdict(dict))
    records: dict[str, dict[str, orjson.Fragment]] = field(default_factory=lambda: defaultdict(dict))
    read: dict[str, dict[str, float]] = field(default_factory=lambda: defaultdict(dict))
    failed: set[str] = field(default_factory=set)

    def add(self, line: Line, fragment: orjson.Fragment) -> None:
        self.hashes[line.type][line.id] = line.hash
        self.records[line.type][line.id] = fragment
        self.read[line.type][line.id] = line.read

    def drop(self, type_key: str) -> None:
        self.failed.add(type_key)
        for table in (self.hashes, self.records, self.read):
            table.pop(type_key, None)

    def confirm(self, seen: dict[str, set[str]], read: float) -> None:
        for type_key, ids in seen.items():
            times = self.read[type_key]
            for object_id in ids:
                times.setdefault(object_id, read)

    def newest_read(self) -> dict[str, float]:
        return {type_key: max(times.values()) for type_key, times in self.read.items() if times}


def _execute(assets: AssetsClient, state: StateStore, records: Iterator[Line], result: PushResult,
             pushed: Outgoing, renew: Callable[[], None], progress: Progress, messages: int, cids: list[str],
             more: int) -> None:
    """One Assets execution for ``records``: noted as open (``shared.deliver.open_executions``) from before ``start``
    until the commit; cancelled, and its records marked for comparison, when anything fails before DONE."""
    assets.ensure_ready()
    progress("Submitting data", 0)
    open_executions.note_starting(state)
    execution = assets.start()
    open_executions.note_opened(state, execution)
    result.executions = 1
    execution_id = _execution_id(execution)
    span = telemetry.start_span("assets_execution", execution=execution_id, cids=cids)  # ended below
    log.info("Assets execution %s started for %d message(s); correlation ids: %s%s", execution_id,
             messages, ", ".join(cids) or "none", f" (+{more} more)" if more else "",
             extra={"event": "execution.started", "execution": execution_id, "cids": cids})
    try:
        sending = time.monotonic()
        _send(assets, state, execution, records, result, pushed, renew, progress)
        waiting = time.monotonic()
        result.seconds["submit"] = waiting - sending
        progress("Waiting for Assets", result.records)
        body = assets.wait(execution, tick=renew)
        result.seconds["wait"] = time.monotonic() - waiting
    except BaseException as error:
        telemetry.failed(span, error)
        assets.cancel(execution)
        open_executions.abandon(state)  # Assets may have applied some of it: compared again by the next run
        raise
    finally:
        span.end()
    _read_outcome(body, result, pushed)
    _log_finished(execution_id, cids, result)


def _execution_id(execution: Execution) -> str:
    """The execution's id from its links (``.../executions/{id}/status``), for logs; "unknown" if absent."""
    match = re.search(r"/executions/([0-9A-Za-z-]{1,64})/", execution.status)
    return match.group(1) if match else "unknown"


def _log_finished(execution_id: str, cids: list[str], result: PushResult) -> None:
    """The execution's outcome in counts (Assets' error texts may quote data: only their number is logged)."""
    counts = result.result_counts
    log.info("Assets execution %s finished: %d records in %d chunk(s); created %d, updated %d, identical %d; "
             "%d error(s)", execution_id, result.records, result.chunks, counts["objectsCreated"],
             counts["objectsUpdated"], counts["objectsIdentical"], len(result.errors),
             extra={"event": "execution.finished", "execution": execution_id, "cids": cids,
                    "records": result.records, "errors": len(result.errors)})
    telemetry.count("entra_assets.records_pushed", result.records)
    telemetry.count("entra_assets.executions", 1, outcome="errors" if result.errors else "ok")


def _as_line(record: Record, read: float) -> Line:
    return Line(record.type, record.id, record.hash, orjson.dumps(record.data), read)


def _merge_later(checkpoints: dict, newer: dict) -> Iterator[Line]:
    """Yields nothing; once reached (after the catch-up's records), adds its checkpoints: its delta links are
    newer than any a payload carries; the checkpoints both set are merged (``merge_checkpoint``)."""
    for name, value in newer.items():
        checkpoints[name] = merge_checkpoint(name, checkpoints.get(name), value)
    yield from ()


def _send(assets: AssetsClient, state: StateStore, execution: Execution, records: Iterator[Line],
          result: PushResult, pushed: Outgoing, renew: Callable[[], None], progress: Progress) -> None:
    """Send records in bounded chunks; one full chunk is held back so that the last one carries
    ``completed: true`` (sending ``completed`` alone with no data is UNCONFIRMED, reference §4.3).

    ``pushed`` is filled as records go out: committed once Assets is DONE. The data stays the raw JSON of the
    payload line (``orjson.Fragment``): a 100,000-user execution then holds ~60 MB, not ~150 MB of dicts, and
    no record is parsed or serialised again. A record bigger than ``CHUNK_BYTES`` (a group with tens of
    thousands of members) goes alone. Before a chunk goes out its ids are noted as in flight
    (``shared.deliver.open_executions``): if this writer dies, the next one knows what Assets may hold."""
    held: _Chunk | None = None
    current = _Chunk()
    for line in records:
        if current.count and (current.count >= CHUNK_RECORDS or current.size + len(line.data) > CHUNK_BYTES):
            if held is not None:
                _submit(assets, state, execution, held, result, completed=False)
                renew()
                progress("Submitting data", result.records)
            held, current = current, _Chunk()
        fragment = orjson.Fragment(line.data)  # embedded as is in the chunk and in the state's records
        current.add(line, fragment)
        pushed.add(line, fragment)
        result.by_type[line.type] += 1
        result.records += 1
    if held is not None:
        _submit(assets, state, execution, held, result, completed=False)
    _submit(assets, state, execution, current, result, completed=True)


@dataclass
class _Chunk:
    """One chunk being filled: its data by selector (as Assets wants it) and its records by type and id."""

    data: dict[str, list] = field(default_factory=dict)
    records: dict[str, dict[str, bytes]] = field(default_factory=dict)   # by type and id: the record's JSON
    count: int = 0
    size: int = 0

    def add(self, line: Line, fragment: orjson.Fragment) -> None:
        self.data.setdefault(BY_KEY[line.type].selector, []).append(fragment)
        self.records.setdefault(line.type, {})[line.id] = line.data
        self.count, self.size = self.count + 1, self.size + len(line.data)


def _submit(assets: AssetsClient, state: StateStore, execution: Execution, chunk: _Chunk, result: PushResult,
            completed: bool) -> None:
    result.chunks += 1
    state.note_in_flight(chunk.records)
    assets.submit(execution, chunk.data, f"chunk-{result.chunks:05d}", completed)


def _read_outcome(body: dict, result: PushResult, pushed: Outgoing) -> None:
    """Counts from the execution result. Types that report errors keep their old hashes, so the next full
    run pushes their records again instead of believing Assets has them."""
    progress_result = body.get("progressResult") or {}
    by_name = {t.name: t.key for t in BY_KEY.values()}
    for entry in (progress_result.get("objectTypeResultMap") or {}).values():
        for counter in ("objectsCreated", "objectsUpdated", "objectsIdentical"):
            result.result_counts[counter] += int(entry.get(counter) or 0)
        if entry.get("errorMessages"):
            result.errors.append(f"{entry.get('objectTypeName')}: {entry['errorMessages']}")
            pushed.drop(by_name.get(entry.get("objectTypeName"), ""))
    if progress_result.get("errorMessages"):
        result.errors.append(str(progress_result["errorMessages"]))
