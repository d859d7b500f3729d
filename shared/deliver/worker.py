"""The single writer: drains the queue, coalesces, pushes one Assets execution, then acknowledges.

Invariants (DESIGN.md): one writer per import source (a lease that expires if its holder dies); many changes
per execution (everything waiting is drained and coalesced: the newest record per object wins); nothing is
acknowledged - no message deleted, no hash or checkpoint moved - before Assets reports the execution DONE.
A crash anywhere means the messages reappear and the same records are pushed again, which is harmless.
"""
from __future__ import annotations

import dataclasses
import itertools
import logging
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from shared import telemetry
from shared.clients.assets import AssetsClient, Execution
from shared.contract.checkpoints import merge_checkpoint
from shared.contract.messages import (
    CatchUpRequest,
    HandOnMessage,
    LifecycleMessage,
    RecordsMessage,
    parse_message,
)
from shared.contract.notifications import Expected, is_cloud_event
from shared.contract.payload import Line
from shared.deliver import follow_ups, handoff, open_executions, push
from shared.deliver.coalesce import Coalesced, coalesced
from shared.deliver.drain import Drained, drain, parsed
from shared.deliver.freshness import PUSHED, Pushed
from shared.deliver.outgoing import Outgoing
from shared.deliver.push import Progress
from shared.errors import WriterBusy
from shared.records.build import Record
from shared.store.ports import ChangeQueue, LeaseBusy, PayloadStore, QueuedMessage, StateStore

log = logging.getLogger(__name__)

DEFER_SECONDS = 30          # a trigger message that finds the lease taken comes back after this
LEASE_POLL_SECONDS = 1.0    # how often a run waiting for the writer lease tries again

# A catch-up's plan: its records, and once they are consumed its checkpoints and the ids it read per type.
CatchUp = Callable[[], tuple[Iterator[Record], dict, Callable[[], dict[str, set[str]]]]]  # plan_catch_up
AfterDone = Callable[[StateStore, Outgoing, Callable[[], None]], object]  # (state, what was pushed, renew)


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
    handed_on: bool = False        # the execution goes on in a later invocation (``shared.deliver.handoff``)
    lifecycle: set[tuple[str, str]] = field(default_factory=set)  # (event, subscription id) of the lifecycle
    # messages drained: the caller renews or recreates those subscriptions (deliver does not manage them)
    began: float | None = None     # when the run's first pass began, for a run handed on (time.time())


def push_queued(queue: ChangeQueue, payloads: PayloadStore, state: StateStore, assets: AssetsClient, *,
                trigger: QueuedMessage | None = None, lease_ttl: float = 60, lease_wait: float = 0,
                progress: Progress = lambda stage, n: None, catch_up: CatchUp | None = None,
                on_pass: Callable[[PushResult, BaseException | None], None] | None = None,
                after: AfterDone | None = None, sleep: Callable[[float], None] = time.sleep,
                budget: float | None = None, events: Expected | None = None) -> PushResult:
    """Push everything waiting in ``queue`` (plus ``trigger``, the message a queue trigger delivered).

    ``records`` messages point at a full run's payload. ``changes`` (from the webhook), ``lifecycle`` and
    ``catchup`` (from the timer) messages ask for a delta catch-up: ``catch_up()`` plans it - once, however
    many such messages were drained - and its records join the same execution, after the payloads' (newer
    wins). Its checkpoints (new delta links) are committed with the rest, after DONE. Nothing stale is pushed
    (``shared.deliver.coalesce``, ``shared.deliver.freshness``), and an execution a crashed writer left open is cancelled
    first (``shared.deliver.open_executions``).

    When another writer holds the lease: with a ``trigger``, the message is re-queued with a delay (so it does
    not burn a delivery attempt) and ``deferred`` is True; without one, the lease is waited for up to
    ``lease_wait`` seconds (a dead holder's lease expires within one ttl), then ``WriterBusy`` is raised.
    Raises on failure, leaving every message to be redelivered. ``on_pass(result, error)`` runs after a pass
    that handled messages, failed ones included, while the lease is still held (the run history: one writer).
    ``after(state, records, renew)`` runs after the commit of every pass (Jira User links, ``shared.jira_links``);
    it must not raise. ``budget``: seconds this invocation may run (``SEGMENT_SECONDS``) before it hands the
    execution on (``shared.deliver.handoff``; ``on_pass`` then runs only if it failed); None: no limit.
    ``events``: what Graph's CloudEvents on the queue must carry (NOTIFICATION_DELIVERY=eventgrid,
    ``shared.deliver.drain.read_message``); None: Event Grid delivery is off and such events are refused.
    """
    if trigger is not None and not is_cloud_event(trigger.body) and parsed(trigger) is None:
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
            return _push(queue, payloads, state, assets, trigger, lease.renew, progress, catch_up, result, after,
                         budget, events)
    except BaseException as error:
        failure = error
        raise
    finally:
        try:
            if on_pass is not None and result.messages and (failure is not None or not result.handed_on):
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
        if handoff.load(state) is not None:
            return False  # the execution is handed on between worker passes: theirs to finish
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


def _push(queue, payloads, state, assets: AssetsClient, trigger, renew: Callable[[], None],
          progress: Progress, catch_up: CatchUp | None, result: PushResult, after: AfterDone | None,
          budget: float | None, events: Expected | None) -> PushResult:
    """One pass: drain, drop what is superseded, coalesce with the catch-up, push, commit, acknowledge - or,
    when ``budget`` seconds are up first, hand the execution on (``shared.deliver.handoff``). With a journal
    handed on, the pass takes it up instead and drains nothing."""
    started = time.monotonic()
    deadline = None if budget is None else started + budget
    journal = handoff.load(state)
    if journal is not None:
        return _resume(queue, payloads, state, assets, trigger, renew, progress, result, after, deadline, journal,
                       events)
    open_executions.cancel_left_open(assets, state)
    drained = _without_stale_hand_ons(queue, drain(queue, trigger, events), trigger)
    cids, more = _noted(drained, result)
    marks = Pushed.load(state.checkpoint(PUSHED))
    with_payload = _unsuperseded(queue, payloads, [d for d in drained if isinstance(d.message, RecordsMessage)],
                                 trigger, marks, result)
    checkpoints: dict[str, str | None] = {}
    set_aside = Coalesced()
    pending = coalesced(payloads, with_payload, checkpoints, marks, state.read_times, set_aside)
    if catch_up_ran := any(isinstance(d.message, CatchUpRequest) for d in drained):
        if catch_up is None:
            raise ValueError("a catch-up was queued but this worker cannot read Graph")
        planning = time.time()  # its records count as read now: its delta rounds begin after this
        planned, caught_up, seen = catch_up()
        pending = itertools.chain(pending, (_as_line(r, planning) for r in planned),
                                  _merge_later(checkpoints, caught_up))
    first = next(pending, None)  # none: nothing to push (e.g. payloads already pushed and deleted)
    kept = [d for d in drained if not isinstance(d.message, RecordsMessage) or d in with_payload]
    with Outgoing() as pushed:
        paused = None
        if first is not None:
            paused = _execute(assets, state, itertools.chain([first], pending), result, pushed, renew, progress,
                              f"{len(drained)} message(s); correlation ids: {', '.join(cids) or 'none'}"
                              + (f" (+{more} more)" if more else ""), cids, deadline=deadline)
            if paused is not None:
                journal = handoff.begin(time.time() - (time.monotonic() - started), [d.message.body() for d in kept])
                if not paused.sent_all:  # the rest of the stream, catch-up included, for the next passes
                    journal.rest = journal.part("rest")
                    handoff.write_rest(payloads, journal.rest, itertools.chain(paused.unsent, paused.rest))
        if catch_up_ran:
            pushed.confirm(seen(), planning)  # read unchanged by the catch-up: as current as what it pushed
        result.stale = Counter(set_aside.stale_by_type)
        for name, value in set_aside.older_checkpoints.items():  # under what is stored, or what this pass sets
            checkpoints[name] = merge_checkpoint(name, value, checkpoints.get(name, state.checkpoint(name)))
        if paused is not None:
            journal.checkpoints = checkpoints
            _hand_on(queue, payloads, state, journal, paused, pushed, result,
                     [d for d in kept if d.queued is not trigger])
            return result
        _finish(queue, state, pushed, checkpoints, kept, marks, catch_up_ran, result, renew, after)
    _acknowledge(queue, payloads, drained, with_payload, trigger, result)
    _log_set_aside(result)
    result.seconds["push"] = time.monotonic() - started
    progress("Done", result.records)
    return result


def _resume(queue, payloads, state, assets: AssetsClient, trigger: QueuedMessage | None, renew: Callable[[], None],
            progress: Progress, result: PushResult, after: AfterDone | None, deadline: float | None,
            journal: handoff.Journal, events: Expected | None) -> PushResult:
    """Take up the execution ``journal`` handed on: send on or ask for DONE, then hand on again or finish. A
    trigger that is not the journal's current hand-on message waits (re-queued: its changes go into the next
    execution) and moves the journal only when it stalled."""
    found = parsed(trigger, events) if trigger is not None else None
    woken = found.message if found is not None else None
    if trigger is not None and not (isinstance(woken, HandOnMessage) and woken.handoff == journal.id
                                    and woken.step == journal.step):
        if woken is not None and not isinstance(woken, HandOnMessage):  # (a refused event: nothing to keep)
            queue.send(woken.body(), delay=DEFER_SECONDS)
        if not handoff.stalled(journal):
            return PushResult(deferred=True)
    started = time.monotonic()
    drained = [Drained(QueuedMessage("", body, 0, None), parse_message(body)) for body in journal.messages]
    handoff.carried(result, journal.figures)
    died_sending = journal.phase == handoff.POSTING and not journal.resumable
    if died_sending or (journal.execution and state.checkpoint(open_executions.OPEN) is None):
        open_executions.cancel_left_open(assets, state)  # a pass died sending, or the execution failed
        done_with = handoff.restart(payloads, journal)
        journal.figures.update(sent={}, chunks=0)  # the new execution counts its own
        log.warning("the Assets execution handed on as %s starts over: a pass stopped while it sent", journal.id)
    else:
        done_with = []
    journal.resumable = False
    handoff.save(state, journal)  # a pass killed from here on leaves it not resumable
    for name in done_with:
        payloads.delete(name)
    with Outgoing() as pushed:
        pushed.sent, pushed.chunks = Counter(journal.figures.get("sent", {})), journal.figures.get("chunks", 0)
        execution = Execution(**journal.execution) if journal.execution else None
        taking = handoff.rest_lines(payloads, journal) if journal.phase == handoff.POSTING else None
        paused = _execute(assets, state, taking, result, pushed, renew, progress, f"hand-off {journal.id}", [],
                          deadline=deadline, execution=execution, asked=journal.phase == handoff.AWAITING)
        if paused is not None:
            if taking is not None:
                journal.taken += taking.count - len(paused.unsent)
            _hand_on(queue, payloads, state, journal, paused, pushed, result, [])
            return result
        handoff.restore(payloads, journal, pushed)
        marks = Pushed.load(state.checkpoint(PUSHED))
        catch_up_ran = any(isinstance(d.message, CatchUpRequest) for d in drained)
        _finish(queue, state, pushed, {**journal.checkpoints, **handoff.closed()}, drained, marks, catch_up_ran,
                result, renew, after)
    with_payload = [d for d in drained if isinstance(d.message, RecordsMessage)]
    _acknowledge(queue, payloads, [], with_payload, trigger, result)
    handoff.discard(payloads, journal)
    result.began = journal.started
    _log_set_aside(result)
    result.seconds["push"] = result.seconds.get("push", 0.0) + time.monotonic() - started
    progress("Done", result.records)
    return result


def _hand_on(queue: ChangeQueue, payloads: PayloadStore, state: StateStore, journal: handoff.Journal,
             paused: push.Paused, pushed: Outgoing, result: PushResult, acknowledged: list[Drained]) -> None:
    """Commit ``journal`` resumable with what this pass sent, delete the ``acknowledged`` messages it now
    holds, and queue the hand-on message that wakes the next pass."""
    journal.phase = handoff.AWAITING if paused.sent_all else handoff.POSTING
    journal.execution = dataclasses.asdict(paused.execution)
    journal.asked += journal.phase == handoff.AWAITING
    part = journal.part(f"sent-{len(journal.sent) + 1}")
    payloads.write(part, pushed.export())
    journal.sent.append(part)
    journal.figures = handoff.carry(result, pushed)
    journal.resumable, journal.step = True, journal.step + 1
    handoff.save(state, journal)
    for d in acknowledged:
        queue.delete(d.queued)
    delay = handoff.delay(journal)
    queue.send(HandOnMessage(journal.id, journal.step, time.time()).body(), delay=delay)
    result.handed_on = True
    log.info("Assets execution handed on as %s (%s; %d record(s) sent so far); next pass in %.0f s", journal.id,
             journal.phase, pushed.sent.total(), delay,
             extra={"event": "execution.handed_on", "handoff": journal.id, "phase": journal.phase})


def _finish(queue: ChangeQueue, state: StateStore, pushed: Outgoing, checkpoints: dict[str, str | None],
            drained: list[Drained], marks: Pushed, catch_up_ran: bool, result: PushResult,
            renew: Callable[[], None], after: AfterDone | None) -> None:
    """After DONE: the commit, the follow-up catch-ups, and ``after`` (the Jira User links)."""
    marks.advance(pushed.newest_read(), {t: d.message.read for d in drained if isinstance(d.message, RecordsMessage)
                                         for t in d.message.types if t not in pushed.failed})
    _commit(state, pushed, {**checkpoints, PUSHED: marks.dump(), **open_executions.closed()}, renew)
    if catch_up_ran:
        _follow_up(queue, state, drained, pushed, result)
    if after is not None:  # after DONE and the commit: a failure there never undoes the execution
        result.links = after(state, pushed, renew)


def _log_set_aside(result: PushResult) -> None:
    if result.superseded or result.stale or result.leftovers or result.follow_ups:
        log.info("worker pass set aside %d superseded message(s) and %d stale record(s) (%s), swept %d leftover "
                 "payload(s), queued %d notified id(s) for a follow-up catch-up", result.superseded,
                 sum(result.stale.values()), dict(result.stale), result.leftovers, result.follow_ups,
                 extra={"event": "worker.set_aside", "superseded": result.superseded,
                        "stale": sum(result.stale.values()), "leftovers": result.leftovers,
                        "follow_ups": result.follow_ups})


def _without_stale_hand_ons(queue: ChangeQueue, drained: list[Drained], trigger: QueuedMessage | None
                            ) -> list[Drained]:
    """``drained`` without hand-on messages: with no journal open, theirs is finished (deleted at once)."""
    kept = []
    for d in drained:
        if isinstance(d.message, HandOnMessage):
            if d.queued is not trigger:
                queue.delete(d.queued)
        else:
            kept.append(d)
    return kept


def _commit(state: StateStore, pushed: Outgoing, checkpoints: dict[str, str | None],
            renew: Callable[[], None]) -> None:
    """The records sent, one shard at a time (``Outgoing.batches``: memory holds one shard), then the
    checkpoints. A writer killed in between has committed some records of a DONE execution and not its
    checkpoints: its messages come back and its execution note is still open, so the next writer marks the
    execution's records for comparison and pushes them again (``shared.deliver.open_executions``) - no record
    is believed pushed with data Assets does not hold."""
    for batch in pushed.batches():
        state.commit(batch.hashes, {}, batch.records, batch.read)
        del batch  # before the next shard is read: never two shards in memory (~85 MB each at a million users)
        renew()
    state.commit({}, checkpoints)


def _execute(assets: AssetsClient, state: StateStore, records: Iterator[Line] | None, result: PushResult,
             pushed: Outgoing, renew: Callable[[], None], progress: Progress, note: str, cids: list[str], *,
             deadline: float | None = None, execution: Execution | None = None,
             asked: bool = False) -> push.Paused | None:
    """``push.execute``, its figures in ``result`` - also when it fails (the run history of a failed pass).
    Returns what to hand on when the time ran out (``asked``: DONE was asked for before, so once more only)."""
    try:
        outcome = push.execute(assets, state, records, pushed, renew, progress, cids, note, execution=execution,
                               deadline=deadline, await_seconds=0.0 if asked else handoff.AWAIT_INLINE_SECONDS)
    finally:
        result.executions += execution is None and pushed.started
        result.records, result.by_type, result.chunks = pushed.sent.total(), Counter(pushed.sent), pushed.chunks
    if isinstance(outcome, push.Paused):
        return outcome
    result.result_counts, result.errors = outcome.counts, outcome.errors
    for stage, seconds in outcome.seconds.items():
        result.seconds[stage] = result.seconds.get(stage, 0.0) + seconds
    return None


def _noted(drained: list[Drained], result: PushResult) -> tuple[list[str], int]:
    """Count the drained messages and their triggers in ``result``; their correlation ids (and how many more)."""
    result.messages = len(drained)
    cids, more = telemetry.carried_cids(d.queued.body for d in drained)  # the notifications and runs coalesced
    if drained:
        log.info("worker drained %d message(s)", len(drained),
                 extra={"event": "worker.drained", "messages": len(drained), "cids": cids})
    for d in drained:
        result.triggers[d.message.trigger] += 1
        if isinstance(d.message, RecordsMessage) and d.message.summary is not None:
            result.summaries.append(d.message.summary)
        if isinstance(d.message, LifecycleMessage):
            result.lifecycle.add((d.message.event, d.message.subscription))
    return cids, more


def _follow_up(queue: ChangeQueue, state: StateStore, drained: list[Drained], pushed: Outgoing,
               result: PushResult) -> None:
    """Queue a later catch-up for the notified ids this one did not see (delta may lag the notification)."""
    for attempt, changes in follow_ups.missed([d.message for d in drained], pushed.read_times,
                                               state.read_times).items():
        for message, delay in follow_ups.follow_ups(changes, attempt, time.time()):
            queue.send(message.body(), delay=delay)
            result.follow_ups += len(message.changes)


def _acknowledge(queue: ChangeQueue, payloads: PayloadStore, drained: list[Drained],
                 with_payload: list[Drained], trigger: QueuedMessage | None, result: PushResult) -> None:
    """After the commit: delete the messages and their payloads, and sweep what dead or superseded runs left
    (older than the newest full run just pushed)."""
    for d in drained:
        if d.queued is not trigger:  # the Functions host completes the trigger message itself
            queue.delete(d.queued)
    for name in {d.message.payload for d in with_payload}:
        payloads.delete(name)
    full_runs = [d.message.read for d in with_payload if d.message.types]
    if full_runs:
        result.leftovers = payloads.sweep(before=max(full_runs))


def _unsuperseded(queue: ChangeQueue, payloads: PayloadStore, drained: list[Drained],
                  trigger: QueuedMessage | None, marks: Pushed, result: PushResult) -> list[Drained]:
    """The ``records`` messages that newer full runs have not superseded; the others are acknowledged and their
    payloads deleted at once: what they carry was planned again, from newer data, by a run already pushed."""
    kept = []
    for d in drained:
        if not marks.superseded(d.message.read, d.message.types):
            kept.append(d)
            continue
        result.superseded += 1
        log.info("message %s: its full run was superseded by a newer one already pushed; dropped", d.queued.id)
        payloads.delete(d.message.payload)
        if d.queued is not trigger:
            queue.delete(d.queued)
    return kept


def _as_line(record: Record, read: float) -> Line:
    return Line(record.type, record.id, record.hash, record.data_json(), read)


def _merge_later(checkpoints: dict, newer: dict) -> Iterator[Line]:
    """Yields nothing; once reached (after the catch-up's records), adds its checkpoints: its delta links are
    newer than any a payload carries; the checkpoints both set are merged (``merge_checkpoint``)."""
    for name, value in newer.items():
        checkpoints[name] = merge_checkpoint(name, checkpoints.get(name), value)
    yield from ()
