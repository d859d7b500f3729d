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

from shared import links, telemetry
from shared.assets import AssetsClient, Execution
from shared.mapping import Record
from shared.reconcile import NAMES
from shared.schema import BY_KEY
from shared.store import ChangeQueue, LeaseBusy, PayloadStore, QueuedMessage, StateStore

log = logging.getLogger(__name__)

CHUNK_RECORDS = 500         # public clients use 10-500 per chunk; Assets documents no maximum (reference §4.3)
CHUNK_BYTES = 2_000_000     # and no byte limit: stay well under any proxy limit
MAX_MESSAGES = 256          # per execution; the rest waits for the next one
VISIBILITY_SECONDS = 1800   # drained messages stay invisible while their execution runs
DEFER_SECONDS = 30          # a trigger message that finds the lease taken comes back after this

Progress = Callable[[str, int], None]
CatchUp = Callable[[], tuple[Iterator[Record], dict]]   # planned records, checkpoints filled once consumed
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
    links: object | None = None    # Jira User links written after DONE (shared.links.LinkOutcome), if linking is on


def push_queued(queue: ChangeQueue, payloads: PayloadStore, state: StateStore, assets: AssetsClient, *,
                trigger: QueuedMessage | None = None, lease_ttl: float = 60,
                progress: Progress = lambda stage, n: None, catch_up: CatchUp | None = None,
                on_pass: Callable[[PushResult, BaseException | None], None] | None = None,
                after: AfterDone | None = None) -> PushResult:
    """Push everything waiting in ``queue`` (plus ``trigger``, the message a queue trigger delivered).

    ``records`` messages point at a full run's payload. ``changes`` (from the webhook), ``lifecycle`` and
    ``catchup`` (from the timer) messages ask for a delta catch-up: ``catch_up()`` plans it - once, however
    many such messages were drained - and its records join the same execution, after the payloads' (newer
    wins). Its checkpoints (new delta links) are committed with the rest, after DONE.

    Returns a ``PushResult``; ``deferred`` is True when another writer holds the lease (the trigger message
    is then re-queued with a delay, so it does not burn a delivery attempt). Raises on failure, leaving every
    message to be redelivered. ``on_pass(result, error)`` runs after a pass that handled messages, failed ones
    included, while the lease is still held (the run history: one writer). ``after(state, records, renew)``
    runs after the commit of every pass (Jira User links, ``shared.links``); it must not raise.
    """
    if trigger is not None and not _valid(trigger):
        raise ValueError(f"queue message {trigger.id} is not an entra-assets message")  # retried, then poisoned
    lease = state.lease(f"writer/{assets.source_key()}", ttl=lease_ttl)
    try:
        lease.__enter__()
    except LeaseBusy:
        if trigger is None:
            raise
        queue.send(trigger.body, delay=DEFER_SECONDS)
        log.info("another worker holds the import source; message deferred by %ss", DEFER_SECONDS)
        return PushResult(deferred=True)
    result, failure = PushResult(), None
    try:
        with telemetry.span("worker_pass"):
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


def _drain(queue: ChangeQueue, trigger: QueuedMessage | None) -> list[QueuedMessage]:
    messages = [trigger] if trigger else []
    while len(messages) < MAX_MESSAGES:
        batch = queue.receive(max_messages=min(32, MAX_MESSAGES - len(messages)),
                              visibility_timeout=VISIBILITY_SECONDS)
        if not batch:
            break
        messages.extend(batch)
    valid = [m for m in messages if _valid(m)]
    valid.sort(key=lambda m: float(m.body.get("created", 0)))  # the queue is not strictly FIFO
    return valid


def _valid(message: QueuedMessage) -> bool:
    body = message.body
    kind = body.get("kind") if isinstance(body, dict) else None
    ok = kind in CATCH_UP_KINDS or (kind == "records" and isinstance(body.get("payload"), str))
    if not ok:
        # Left in the queue: after maxDequeueCount deliveries it lands in the poison queue for inspection.
        log.error("queue message %s is not an entra-assets message; left for the poison queue", message.id)
    return ok


@dataclass(frozen=True, slots=True)
class Line:
    """One record of a payload (see ``Record.line``): ``data`` is its JSON, kept unparsed."""

    type: str
    id: str
    hash: str
    data: bytes


def _lines(payloads: PayloadStore, message: QueuedMessage, checkpoints: dict) -> Iterator[Line]:
    """The records of a message's payload; its checkpoints line (a JSON object) goes into ``checkpoints``."""
    try:
        for line in payloads.read(message.body["payload"]):
            head, tab, data = line.partition(b"\t")
            if not tab:
                checkpoints.update(orjson.loads(line)["checkpoints"])
                continue
            type_key, record_id, digest = orjson.loads(head)
            yield Line(type_key, record_id, digest, data)
    except (FileNotFoundError, LookupError) as exc:
        # Deleted after an earlier, successful push whose acknowledgement did not reach the queue.
        log.warning("payload of message %s is gone (%s); treating it as already pushed", message.id,
                    type(exc).__name__)


def _push(queue, payloads, state, assets: AssetsClient, trigger, renew: Callable[[], None],
          progress: Progress, catch_up: CatchUp | None, result: PushResult, after: AfterDone | None = None
          ) -> PushResult:
    started = time.monotonic()
    messages = _drain(queue, trigger)
    result.messages = len(messages)
    cids, more = telemetry.carried_cids(m.body for m in messages)  # the notifications and runs coalesced here
    if messages:
        log.info("worker drained %d message(s)", len(messages),
                 extra={"event": "worker.drained", "messages": len(messages), "cids": cids})
    for message in messages:
        result.triggers[str(message.body.get("trigger") or "unknown")] += 1
        if isinstance(message.body.get("summary"), dict):
            result.summaries.append(message.body["summary"])
    checkpoints: dict[str, str | None] = {}
    with_payload = [m for m in messages if m.body["kind"] == "records"]
    pending = _coalesced(payloads, with_payload, checkpoints)
    if len(with_payload) < len(messages):
        if catch_up is None:
            raise ValueError("a catch-up was queued but this worker cannot read Graph")
        planned, caught_up = catch_up()
        pending = itertools.chain(pending, (_as_line(r) for r in planned), _merge_later(checkpoints, caught_up))
    first = next(pending, None)  # none: nothing to push (e.g. payloads already pushed and deleted)
    hashes: dict[str, dict[str, str]] = defaultdict(dict)
    records: dict[str, dict[str, orjson.Fragment]] = defaultdict(dict)
    if first is not None:
        assets.ensure_ready()
        progress("Submitting data", 0)
        execution = assets.start()
        result.executions = 1
        execution_id = _execution_id(execution)
        span = telemetry.start_span("assets_execution", execution=execution_id, cids=cids)  # ended below
        log.info("Assets execution %s started for %d message(s); correlation ids: %s%s", execution_id,
                 len(messages), ", ".join(cids) or "none", f" (+{more} more)" if more else "",
                 extra={"event": "execution.started", "execution": execution_id, "cids": cids})
        try:
            sending = time.monotonic()
            _send(assets, execution, itertools.chain([first], pending), result, (hashes, records), renew, progress)
            waiting = time.monotonic()
            result.seconds["submit"] = waiting - sending
            progress("Waiting for Assets", result.records)
            body = assets.wait(execution, tick=renew)
            result.seconds["wait"] = time.monotonic() - waiting
        except BaseException as error:
            telemetry.failed(span, error)
            assets.cancel(execution)
            raise
        finally:
            span.end()
        _read_outcome(body, result, hashes, records)
        _log_finished(execution_id, cids, result)
    state.commit(hashes, checkpoints, records)
    if after is not None:  # after DONE and the commit: a failure there never undoes the execution
        result.links = after(state, records, renew)
    for message in messages:
        if message is not trigger:  # the Functions host completes the trigger message itself
            queue.delete(message)
    for name in {m.body["payload"] for m in with_payload}:
        payloads.delete(name)
    result.seconds["push"] = time.monotonic() - started
    progress("Done", result.records)
    return result


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


def _as_line(record: Record) -> Line:
    return Line(record.type, record.id, record.hash, orjson.dumps(record.data))


def _merge_later(checkpoints: dict, newer: dict) -> Iterator[Line]:
    """Yields nothing; once reached (after the catch-up's records), adds its checkpoints: its delta links are
    newer than any a payload carries; the checkpoints both set are merged (``_merged``)."""
    for name, value in newer.items():
        checkpoints[name] = _merged(name, checkpoints.get(name), value)
    yield from ()


def _merged(name: str, older: str | None, newer: str | None) -> str | None:
    """One checkpoint set by a full run's payload (``older``) and by the catch-up of the same pass, which
    planned from the state before that run. Derived-object names and the Jira account cache are merged per
    key, the catch-up winning; id lists (Jira lookups pending, users unmatched) are united - an id kept once
    too often costs a cache read or one stale line in ``status``, while an id dropped would be lost until the
    next full run. Anything else: the catch-up's value."""
    if name not in _MERGED or not older:
        return newer
    if not newer:  # the catch-up left its list empty (None): the run's ids stay
        return older if name in (links.LOOKUPS, links.UNMATCHED) else newer
    old, new = orjson.loads(older), orjson.loads(newer)
    if name == NAMES:
        for type_key, names in new.items():
            old.setdefault(type_key, {}).update(names)
        return orjson.dumps(old).decode()
    if name == links.CACHE:
        return orjson.dumps({**old, **new}).decode()
    return orjson.dumps(sorted(set(old) | set(new))).decode()


_MERGED = (NAMES, links.CACHE, links.LOOKUPS, links.UNMATCHED)


def _coalesced(payloads: PayloadStore, messages: list[QueuedMessage], checkpoints: dict) -> Iterator[Line]:
    """The records to push, the newest per object winning, streamed; fills ``checkpoints`` on the way (the
    last line of each payload). One message - the usual case - is streamed once; several are read twice:
    pass 1 finds the newest line per object, pass 2 yields only those."""
    if len(messages) == 1:
        yield from _lines(payloads, messages[0], checkpoints)
        return
    winners: dict[tuple[str, str], tuple[int, int]] = {}
    for mi, message in enumerate(messages):
        for li, line in enumerate(_lines(payloads, message, checkpoints)):
            winners[line.type, line.id] = (mi, li)
    for mi, message in enumerate(messages):
        for li, line in enumerate(_lines(payloads, message, {})):
            if winners.get((line.type, line.id)) == (mi, li):
                yield line


def _send(assets: AssetsClient, execution: Execution, records: Iterator[Line], result: PushResult,
          pushed: tuple[dict, dict], renew: Callable[[], None], progress: Progress) -> None:
    """Send records in bounded chunks; one full chunk is held back so that the last one carries
    ``completed: true`` (sending ``completed`` alone with no data is UNCONFIRMED, reference §4.3).

    ``pushed`` = (hashes, data) by type and id, filled as records go out: committed once Assets is DONE. The
    data stays the raw JSON of the payload line (``orjson.Fragment``): a 100,000-user execution then holds
    ~60 MB, not ~150 MB of dicts, and no record is parsed or serialised again. A record bigger than
    ``CHUNK_BYTES`` (a group with tens of thousands of members) goes alone."""
    hashes, data = pushed
    held: dict | None = None
    current: dict[str, list] = {}
    count = size = 0
    for line in records:
        if count and (count >= CHUNK_RECORDS or size + len(line.data) > CHUNK_BYTES):
            if held is not None:
                _submit(assets, execution, held, result, completed=False)
                renew()
                progress("Submitting data", result.records)
            held, current, count, size = current, {}, 0, 0
        fragment = orjson.Fragment(line.data)  # embedded as is in the chunk and in the state's records
        current.setdefault(BY_KEY[line.type].selector, []).append(fragment)
        hashes[line.type][line.id] = line.hash
        data[line.type][line.id] = fragment
        result.by_type[line.type] += 1
        result.records += 1
        count, size = count + 1, size + len(line.data)
    if held is not None:
        _submit(assets, execution, held, result, completed=False)
    _submit(assets, execution, current, result, completed=True)


def _submit(assets: AssetsClient, execution: Execution, data: dict, result: PushResult, completed: bool) -> None:
    result.chunks += 1
    assets.submit(execution, data, f"chunk-{result.chunks:05d}", completed)


def _read_outcome(body: dict, result: PushResult, hashes: dict, records: dict) -> None:
    """Counts from the execution result. Types that report errors keep their old hashes, so the next full
    run pushes their records again instead of believing Assets has them."""
    progress_result = body.get("progressResult") or {}
    by_name = {t.name: t.key for t in BY_KEY.values()}
    for entry in (progress_result.get("objectTypeResultMap") or {}).values():
        for counter in ("objectsCreated", "objectsUpdated", "objectsIdentical"):
            result.result_counts[counter] += int(entry.get(counter) or 0)
        if entry.get("errorMessages"):
            result.errors.append(f"{entry.get('objectTypeName')}: {entry['errorMessages']}")
            hashes.pop(by_name.get(entry.get("objectTypeName"), ""), None)
            records.pop(by_name.get(entry.get("objectTypeName"), ""), None)
    if progress_result.get("errorMessages"):
        result.errors.append(str(progress_result["errorMessages"]))
