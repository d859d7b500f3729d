"""A full run's concurrent reads (shared/produce/prefetch.py): the prefetch alone, then full syncs against the
emulators with their latency knob."""
from __future__ import annotations

import contextvars
import gc
import threading
import time
from collections.abc import Iterator

import pytest

from shared.admin.setup import run_setup
from shared.app import graph_client, open_backend, sync_full
from shared.errors import GraphCredentialsError, GraphPermissionError
from shared.produce.full import FullReads, new_result, plan, run_full
from shared.produce.plan import Plan, RunOptions, Scope
from shared.produce.prefetch import Prefetch
from shared.settings import load_settings


def _read_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("graph-read-")]


def _no_read_threads(seconds: float = 2.0) -> bool:
    deadline = time.monotonic() + seconds
    while _read_threads() and time.monotonic() < deadline:
        time.sleep(0.01)
    return not _read_threads()


class Source:
    """A read of ``count`` objects (endless with None) that counts what was pulled from it, optionally failing
    after ``fail_after`` objects, and notes whether it was closed."""

    def __init__(self, count: int | None = 50, fail_after: int | None = None, error: Exception | None = None,
                 delay: float = 0.0):
        self.count, self.fail_after, self.error, self.delay = count, fail_after, error, delay
        self.pulled = 0
        self.called = threading.Event()
        self.closed = threading.Event()

    def __call__(self) -> Iterator[dict]:
        self.called.set()
        try:
            n = 0
            while self.count is None or n < self.count:
                if self.fail_after is not None and n >= self.fail_after:
                    raise self.error
                if self.delay:
                    time.sleep(self.delay)
                self.pulled += 1
                yield {"id": str(n)}
                n += 1
        finally:
            self.closed.set()


# -- the prefetch alone ----------------------------------------------------------------------------------------


def test_every_object_arrives_in_order_from_each_read():
    sources = {name: Source(count) for name, count in (("a", 250), ("b", 7), ("c", 0))}
    with Prefetch(depth=2, batch=10) as reads:
        streams = {name: reads.stream(name, name, source) for name, source in sources.items()}
        reads.start()
        got = {name: [o["id"] for o in stream] for name, stream in streams.items()}
    assert got == {name: [str(i) for i in range(s.count)] for name, s in sources.items()}
    assert _no_read_threads()


def test_a_read_runs_only_a_bounded_number_of_objects_ahead():
    endless = Source(count=None)
    with Prefetch(depth=2, batch=3) as reads:
        stream = iter(reads.stream("a", "a", endless))
        reads.start()
        next(stream)
        time.sleep(0.3)  # ample time to run away with an unbounded queue
        ahead = endless.pulled
    # two queued batches, the one the consumer holds, the one waiting to be queued, one being read
    assert ahead <= 2 * 3 + 3 + 3 + 1
    assert endless.closed.wait(2) and _no_read_threads()


def test_a_failing_read_fails_alone_and_stops():
    bad = Source(count=None, fail_after=5, error=GraphPermissionError("403 on devices"))
    good = Source(count=300, delay=0.001)
    with Prefetch(depth=2, batch=2) as reads:
        failing, fine = reads.stream("device", "devices", bad), reads.stream("user", "users", good)
        reads.start()
        with pytest.raises(GraphPermissionError):
            list(failing)
        assert bad.closed.wait(2) and bad.pulled == 5
        assert len(list(fine)) == 300  # the other read is untouched
    assert _no_read_threads()


def test_refused_credentials_stop_every_read_and_reach_the_consumer_at_once():
    users = Source(count=None, delay=0.001)
    devices = Source(count=None, fail_after=3, error=GraphCredentialsError("401"))
    with Prefetch(depth=4, batch=5) as reads:
        user_stream = reads.stream("user", "users", users)
        reads.stream("device", "devices", devices)
        reads.start()
        with pytest.raises(GraphCredentialsError):
            for _ in user_stream:  # the users read is fine, but the run cannot go on
                pass
        assert users.closed.wait(2)  # stopped by the other read's failure, not by close()
    assert _no_read_threads()


def test_the_first_read_goes_alone_until_it_has_an_answer():
    first = Source(count=None, fail_after=0, error=GraphCredentialsError("401"))
    second = Source()
    with Prefetch() as reads:
        stream = reads.stream("user", "users", first)
        reads.stream("group", "groups", second)
        reads.start()
        with pytest.raises(GraphCredentialsError):
            list(stream)
    assert not second.called.is_set()  # credentials refused: the other reads never sent a request
    slow = Source(count=3, delay=0.2)
    other = Source()
    with Prefetch() as reads:
        reads.stream("user", "users", slow)
        reads.stream("group", "groups", other)
        started = time.monotonic()
        reads.start()
        assert time.monotonic() - started >= 0.15 and other.called.wait(1)


def test_a_reduced_read_is_folded_in_its_thread_without_waiting_for_the_consumer():
    entries, users = Source(count=1000), Source(count=None)
    with Prefetch(depth=1, batch=1) as reads:
        user_stream = reads.stream("user", "users", users)
        merged = reads.stream("group", "groups", entries, reduce=lambda objects: [o["id"] for o in objects])
        reads.start()
        assert entries.closed.wait(2)  # read to the end while nobody took anything: no bounded queue in the way
        assert merged.result() == [str(i) for i in range(1000)]
        next(iter(user_stream))
    endless = Source(count=None)
    with Prefetch() as reads:
        reads.stream("group", "groups", endless, reduce=list)
        reads.start()
        time.sleep(0.05)
        reads.stop("group")  # stopped in the middle of the fold
        assert endless.closed.wait(2)
    assert _no_read_threads()


def test_stopping_one_type_stops_its_reads_only():
    owners, entries, users = Source(count=None), Source(count=None), Source(count=20)
    with Prefetch(depth=1, batch=1) as reads:
        reads.stream("group", "groups", entries)
        reads.stream("group", "group owners", owners)
        user_stream = reads.stream("user", "users", users)
        reads.start()
        time.sleep(0.05)
        reads.stop("group")
        assert owners.closed.wait(2) and entries.closed.wait(2)
        assert len(list(user_stream)) == 20
    assert _no_read_threads()


def test_closing_or_abandoning_a_generator_stops_its_reads():
    def changes(sources: list[Source]) -> Iterator[dict]:  # as FullReads.changes holds its reads
        with Prefetch(depth=2, batch=2) as reads:
            streams = [reads.stream(str(n), str(n), source) for n, source in enumerate(sources)]
            reads.start()
            for stream in streams:
                yield from stream

    sources = [Source(count=None) for _ in range(3)]
    closed = changes(sources)
    next(closed)
    assert len(_read_threads()) == 3
    closed.close()
    assert not _read_threads() and all(s.closed.is_set() for s in sources)  # joined by close()
    sources = [Source(count=None) for _ in range(3)]
    abandoned = changes(sources)
    next(abandoned)
    del abandoned
    gc.collect()
    assert _no_read_threads() and all(s.closed.wait(1) for s in sources)


def test_a_read_sees_the_context_of_the_run_that_started_it():
    cid: contextvars.ContextVar[str | None] = contextvars.ContextVar("cid", default=None)
    seen = []

    def source() -> Iterator[dict]:
        seen.append(cid.get())
        yield {"id": "1"}
    cid.set("run-42")
    with Prefetch() as reads:
        stream = reads.stream("user", "users", source)
        reads.start()
        list(stream)
    assert seen == ["run-42"]  # the correlation id of the run's logs (shared.telemetry) follows into the thread


# -- full syncs against the emulators --------------------------------------------------------------------------


@pytest.fixture
def settings(box, tmp_path):
    settings = load_settings({**box.settings(), "ENTRA_ASSETS_HOME": str(tmp_path / "home")})
    run_setup(settings)
    return settings


def _reads(box) -> dict[str, int]:
    """Requests per read of a full run in the emulator's log."""
    out: dict[str, int] = {}
    for r in box.graph.requests:
        path = r.path.removeprefix("/v1.0/")
        if path in ("users/delta", "groups/delta", "groups", "devices", "servicePrincipals"):
            out[path] = out.get(path, 0) + 1
    return out


def test_the_reads_overlap(box, settings):
    """With 200 ms a request, the read phase takes about the longest chain of pages (plus the first page of
    users, which goes alone), not their sum: 13 pages, the longest chain 6 (groups/delta)."""
    box.graph.latency = 0.2
    report = sync_full(settings)
    chains = _reads(box)
    assert report.full.users == len(box.tenant.users) and set(chains) == {
        "users/delta", "groups/delta", "groups", "devices", "servicePrincipals"}
    read_phase = report.full.seconds["fetch_and_format"]
    assert read_phase < 0.75 * sum(chains.values()) * 0.2, (read_phase, chains)
    assert _no_read_threads()


def test_a_denied_type_still_fails_alone_with_concurrent_reads(box, settings):
    box.graph.latency = 0.01
    box.graph.denied.add("devices")
    report = sync_full(settings)
    assert set(report.full.failed) == {"device"} and "Device.Read.All" in report.full.failed["device"]
    assert report.full.users == len(box.tenant.users) and report.full.read["group"] > 0
    assert report.full.read["application"] > 0 and report.full.read["device"] == 0
    assert _reads(box)["devices"] == 1  # the failed read stopped at its first answer
    assert box.assets.objects("Device") == [] and len(box.assets.objects("User")) == len(box.tenant.users)
    assert _no_read_threads()


def test_refused_credentials_fail_the_run_with_one_request(box, tmp_path):
    settings = load_settings({**box.settings(), "GRAPH_ACCESS_TOKEN": "expired-or-wrong",
                              "ENTRA_ASSETS_HOME": str(tmp_path / "h")})
    run_setup(settings)
    box.graph.reset_log()
    with pytest.raises(GraphCredentialsError):
        sync_full(settings)
    assert [r.path for r in box.graph.requests] == ["/v1.0/users/delta"]  # no flood: the others never started
    assert _no_read_threads()


def test_a_finished_run_leaves_nothing_for_the_collector(box, settings):
    """No reference cycle keeps a run's plan (its ``seen`` ids: one per object read) alive after it: with the
    collector off, it goes as soon as the changes are consumed - not at some collection during the push."""
    backend = open_backend(settings)
    result = new_result()
    gc.collect()
    gc.disable()
    try:
        changes, _ = plan(graph_client(settings), backend.state, RunOptions(), Scope(), result)
        assert sum(1 for _ in changes) > len(box.tenant.users)
        del changes
        assert not [o for o in gc.get_objects() if isinstance(o, (Plan, FullReads, Prefetch))]
    finally:
        gc.enable()


def test_a_payload_write_that_fails_stops_the_reads(box, settings):
    backend = open_backend(settings)
    box.graph.latency = 0.02

    class Failing:
        def write(self, name, lines):
            next(iter(lines))
            raise OSError("disk full")

    with pytest.raises(OSError) as info:  # held, as a caller logging it would: its frames stay alive
        run_full(graph_client(settings), backend.state, backend.queue, Failing())
    assert not _read_threads(), info  # stopped and joined before run_full raised, not left to the collector
