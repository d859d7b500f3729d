"""Full runs in bounded segments: the Graph reads of one full run spread over invocations of at most
``SEGMENT_SECONDS`` each, resumed from a checkpoint after a kill (issue 11).

A full run reads a few chains of pages (``shared.produce.full.chains``); the longest takes minutes against a
big tenant. A segment (``read_segment``) reads every unfinished chain on from where the last segment left it,
each in its own thread, and stages the pages it read as one part in the payload store
(``run-<run id>/<chain>-<n>.jsonl``, a line per page: its objects as JSON). When the segment's time is up, each
chain stops after the page it is reading; only once every part is written is the run's cursor (the checkpoint
``RUN``) moved on to the parts and the links reached. A segment killed midway leaves its parts unreferenced
and the cursor where it was, so the next segment reads again at most what the killed one read.

When every chain is complete, the staged pages are planned as one full run (``StagedSource`` feeds
``shared.produce.full.run_full``): mapping, comparison, departures and the guard see the whole directory, as
an unsegmented run does. Departures are therefore decided only once every listing is complete, and the delta
links travel, as always, at the end of the run's payload: the worker commits them after Assets took the
records. A chain that Graph refuses (403, a property it rejects) is complete with its error: its type fails
alone, as in one invocation.

The continuation is a queue message (``SegmentMessage`` on RUN_QUEUE_NAME), not Durable Functions: the
README says why. Its (run, segment) pair makes it idempotent: a message for a segment already done changes
nothing.
"""
from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import asdict, dataclass, field, replace

import orjson

from shared.clients.graph import GraphClient
from shared.contract.messages import SegmentMessage
from shared.errors import DeltaExpired, ForeignLink, GraphPermissionError, RemoteError
from shared.produce.full import Chain, chains, new_run_id, run_full
from shared.produce.plan import FullRunResult, Progress, RunOptions
from shared.store.ports import ChangeQueue, PayloadStore, StateStore

log = logging.getLogger(__name__)

RUN = "full/run"          # checkpoint: the cursor of the full run in progress (JSON), absent when none
LEASE = "producer/full"   # one segment at a time: a redelivered continuation waits for the running one
LEASE_SECONDS = 60.0      # renewed about every second while a segment reads; a dead holder's expires by itself
RENEW_SECONDS = 15.0      # how often a segment renews it: a quarter of its ttl, one storage request each
JOIN_SECONDS = 1.0        # how often the segment's thread looks up from its reads


def advance(graph: GraphClient, state: StateStore, queue: ChangeQueue, payloads: PayloadStore, runs: ChangeQueue | None,
            options: RunOptions, seconds: float, trigger: str, progress: Progress = lambda stage, n: None,
            stamp: Callable[[FullRunResult, float], dict] = lambda result, started: {},
            fresh: bool = False) -> FullRunResult | None:
    """One segment of the full run: start one when none is in progress, else read on where the last segment
    stopped; plan it once its reads are complete. Returns the run's result once it is planned and its records
    queued for the worker; None while it goes on - its continuation is then queued on ``runs`` (unless None: the
    caller runs the next segment itself).

    The plan runs in the segment that completed the reads when that took less than half of ``seconds`` (a small
    tenant: one invocation, as before); otherwise in a segment of its own. Raises ``LeaseBusy`` while another
    segment runs, and what fails the run (``run_full``; the cursor then stays, and the run resumes).

    ``fresh`` (a forced run: ``sync --full``) replaces a run in progress with a new one, whose data is as new
    as the command: the one in progress may have read its pages long before."""
    with state.lease(LEASE, LEASE_SECONDS) as lease:
        renew = _every(RENEW_SECONDS, lease.renew)
        reads = chains(options, options.object_types)
        cursor = load_cursor(state)
        if cursor is not None and (fresh or cursor.chains.keys() != reads.keys()):
            log.warning("full run %s (%d segments done) is replaced by a new one%s", cursor.run_id, cursor.segment,
                        "" if fresh else ": SYNC_OBJECT_TYPES changed since it began")
            discard(payloads, cursor)
            cursor = None
        if cursor is None:
            started = time.time()
            cursor = begin(new_run_id(started), started, trigger, list(reads), options)
            save_cursor(state, cursor)
        began = time.monotonic()
        if not cursor.complete:
            progress(f"Reading Graph (segment {cursor.segment + 1})", cursor.pages)
            read_segment(graph, payloads, cursor, reads, seconds, renew)
            save_cursor(state, cursor)
            log.info("full run %s: segment %d read %d pages in %.1f s%s", cursor.run_id, cursor.segment,
                     cursor.pages, cursor.seconds[-1], "; its reads are complete" if cursor.complete else "")
        if not cursor.complete or time.monotonic() - began > seconds / 2:
            if runs is not None:
                runs.send(SegmentMessage(cursor.run_id, cursor.segment, time.time(), trigger).body())
            return None
        # What the run began as (a repair, the CLI's overrides) outlives its first segment.
        options = replace(options, allow_mass_deactivation=options.allow_mass_deactivation
                          or cursor.allow_mass_deactivation,
                          allow_over_object_limit=options.allow_over_object_limit or cursor.allow_over_object_limit,
                          repair=options.repair or cursor.repair)
        planning = lambda stage, n: (renew(), progress(stage, n))  # the plan renews the lease too
        result = run_full(graph, state, queue, payloads, planning, options=options, stamp=stamp,
                          staged=StagedRun(cursor, payloads))
        save_cursor(state, None)
    discard(payloads, cursor)
    return result


@dataclass
class ChainCursor:
    """How far one chain got: the staged parts, the link to read next (None before the first page), and,
    once ``done``, the delta link of its last page or the reason Graph refused it (``error``, its
    ``refused`` kind: "permission" for a 403, else "remote")."""

    parts: list[str] = field(default_factory=list)
    next: str | None = None
    pages: int = 0
    done: bool = False
    delta: str | None = None
    error: str | None = None
    refused: str | None = None


@dataclass
class RunCursor:
    """A segmented full run: its id, when its first segment began reading Graph, who started it, how many
    segments are done, and each chain's cursor. Stored as JSON in the checkpoint ``RUN``."""

    run_id: str
    started: float
    trigger: str
    chains: dict[str, ChainCursor]
    segment: int = 0
    updated: float = 0.0                       # when the last segment ended (epoch seconds)
    seconds: list[float] = field(default_factory=list)  # how long each segment read
    allow_mass_deactivation: bool = False      # the CLI's overrides, kept for the segment that plans
    allow_over_object_limit: bool = False
    repair: bool = False                       # a repair run (REPAIR_INTERVAL_DAYS, sync --full --repair)

    @property
    def complete(self) -> bool:
        return all(chain.done for chain in self.chains.values())

    @property
    def pages(self) -> int:
        return sum(chain.pages for chain in self.chains.values())

    def dumps(self) -> str:
        return orjson.dumps(asdict(self)).decode()

    @classmethod
    def loads(cls, text: str) -> RunCursor:
        """The cursor of ``dumps``; ValueError when the text is not one (a corrupted or foreign checkpoint)."""
        try:
            data = orjson.loads(text)
            return cls(**{**data, "chains": {name: ChainCursor(**chain) for name, chain in data["chains"].items()}})
        except (orjson.JSONDecodeError, TypeError, KeyError, AttributeError) as error:
            raise ValueError(f"the checkpoint {RUN} is not a full run's cursor ({type(error).__name__})") from None


def _every(seconds: float, call: Callable[[], None]) -> Callable[[], None]:
    """``call``, but at most once every ``seconds`` however often the result is called."""
    last = [time.monotonic()]

    def throttled() -> None:
        if time.monotonic() - last[0] >= seconds:
            last[0] = time.monotonic()
            call()
    return throttled


def load_cursor(state: StateStore) -> RunCursor | None:
    """The full run in progress, or None. A checkpoint that is not a cursor (corrupted) is logged and taken as
    no run: the next full run starts afresh, which costs only time."""
    text = state.checkpoint(RUN)
    if not text:
        return None
    try:
        return RunCursor.loads(text)
    except ValueError as error:
        log.warning("%s; a new full run starts", error)
        return None


def save_cursor(state: StateStore, cursor: RunCursor | None) -> None:
    state.commit({}, {RUN: cursor.dumps() if cursor else None})


def begin(run_id: str, started: float, trigger: str, chain_names: list[str],
          options: RunOptions) -> RunCursor:
    """A new run's cursor, with what ``options`` make of it (a repair, the CLI's overrides)."""
    return RunCursor(run_id, started, trigger, {name: ChainCursor() for name in chain_names},
                     allow_mass_deactivation=options.allow_mass_deactivation,
                     allow_over_object_limit=options.allow_over_object_limit, repair=options.repair)


def read_segment(graph: GraphClient, payloads: PayloadStore, cursor: RunCursor, chains: Mapping[str, Chain],
                 seconds: float, renew: Callable[[], None] = lambda: None,
                 clock: Callable[[], float] = time.monotonic) -> None:
    """Read every unfinished chain of ``cursor`` on for about ``seconds`` (each stops after the page it is in
    when the time is up), staging what it read; then move ``cursor`` on (in memory: the caller saves it).

    Raises what fails the run (refused credentials, a link off GRAPH_BASE_URL): ``cursor`` is then left as it
    was. ``renew`` is called about every second from this thread (the caller's lease, throttled)."""
    began = clock()
    deadline = began + seconds
    stop = threading.Event()
    reached: dict[str, ChainCursor] = {}
    fatal: list[BaseException] = []

    answered = threading.Event()

    def read(name: str) -> None:
        try:
            reached[name] = _read_chain(graph, payloads, cursor, chains[name], deadline, stop, clock, answered)
        except BaseException as error:  # noqa: BLE001 - handed to the segment's thread, which raises it
            fatal.append(error)
            stop.set()
        finally:
            answered.set()

    threads = [threading.Thread(target=read, args=(name,), name=f"segment {name}", daemon=True)
               for name, chain in cursor.chains.items() if not chain.done]
    if threads:  # the others start once the first chain had an answer: refused credentials cost one request
        threads[0].start()
        while not answered.wait(JOIN_SECONDS):
            renew()
    for thread in threads[1:] if not stop.is_set() else ():
        thread.start()
    for thread in (t for t in threads if t.ident is not None):
        while thread.is_alive():
            thread.join(JOIN_SECONDS)
            renew()
    if fatal:
        raise fatal[0]
    cursor.chains.update(reached)
    cursor.segment += 1
    cursor.updated = time.time()
    cursor.seconds.append(round(clock() - began, 3))


def _read_chain(graph: GraphClient, payloads: PayloadStore, cursor: RunCursor, chain: Chain, deadline: float,
                stop: threading.Event, clock: Callable[[], float], answered: threading.Event) -> ChainCursor:
    """One chain's share of a segment: its pages from the cursor's link until the deadline, as one part."""
    before = cursor.chains[chain.name]
    after = ChainCursor(list(before.parts), before.next, before.pages)
    part = f"run-{cursor.run_id}/{chain.name.replace(' ', '-')}-{len(before.parts):04d}.jsonl"

    def pages() -> Iterator[bytes]:
        url, params = (before.next, None) if before.next else (chain.path, chain.params)
        for page in graph.pages(url, params):  # a resumed link is checked against GRAPH_BASE_URL like any other
            answered.set()
            yield orjson.dumps(page.get("value") or [])
            after.pages += 1
            after.next, after.delta = page.get("@odata.nextLink"), page.get("@odata.deltaLink")
            if not after.next:
                after.done = True
                return
            if stop.is_set() or clock() >= deadline:
                return

    try:
        payloads.write(part, pages())
    except DeltaExpired:
        if not before.next:
            raise
        # The round's link expired between segments (UNCONFIRMED how long Graph keeps a nextLink valid): the
        # chain starts again in the next segment; its parts so far are left to the sweep.
        log.warning("the %s read of full run %s expired between segments; it starts again", chain.name,
                    cursor.run_id)
        return ChainCursor()
    except ForeignLink:
        raise  # not this chain's trouble: it fails the run
    except (GraphPermissionError, RemoteError) as error:
        return ChainCursor(after.parts, None, after.pages, done=True, error=str(error),
                           refused="permission" if isinstance(error, GraphPermissionError) else "remote")
    if after.pages > before.pages:
        after.parts.append(part)
    return after


@dataclass
class StagedRun:
    """A segmented run whose reads are complete, as ``shared.produce.full.run_full`` plans it."""

    cursor: RunCursor
    payloads: PayloadStore

    @property
    def run_id(self) -> str:
        return self.cursor.run_id

    @property
    def started(self) -> float:
        return self.cursor.started

    @property
    def pages(self) -> int:
        return self.cursor.pages

    @property
    def segments(self) -> list[float]:
        return self.cursor.seconds

    @property
    def source(self) -> StagedSource:
        return StagedSource(self.cursor, self.payloads)


class StagedSource:
    """The chains of a complete run, read back from their staged parts (``shared.produce.full.Source``)."""

    def __init__(self, cursor: RunCursor, payloads: PayloadStore):
        self.cursor, self.payloads = cursor, payloads

    def objects(self, chain: Chain) -> Iterator[dict]:
        staged = self.cursor.chains[chain.name]
        for part in staged.parts:
            for line in self.payloads.read(part):
                yield from orjson.loads(line)
        if staged.error:  # what it staged before Graph refused it stays valid data, as in one invocation
            raise (GraphPermissionError if staged.refused == "permission" else RemoteError)(staged.error)

    def delta_link(self, chain: Chain) -> str | None:
        return self.cursor.chains[chain.name].delta


def discard(payloads: PayloadStore, cursor: RunCursor) -> None:
    """Delete the run's staged parts (idempotent; what a crash leaves is swept with old payloads)."""
    for chain in cursor.chains.values():
        for part in chain.parts:
            payloads.delete(part)
