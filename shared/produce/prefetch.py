"""Reading Graph ahead of the mapping: each read of a full run in its own thread, a bounded number of objects
ahead of the one thread that maps them.

Why: Graph answers a page in hundreds of milliseconds, and a run's reads (users, groups, devices, service
principals) are independent chains of pages. Read one after another, a full run's wall time is the sum of the
chains; read together, it is about the longest one. Group, device and application owners and members are
filtered by the users in scope, known only once every user is mapped - so the other reads are fetched ahead
while users are mapped, and mapped afterwards, in the planner's order.

The threads only fetch and parse pages (``GraphClient``, whose ``httpx.Client`` is thread-safe); mapping,
comparing, counting and every other piece of a run's state stay in the consumer's thread, which takes the
objects from one bounded queue per read. Memory therefore stays bounded by ``DEPTH`` x ``BATCH`` objects per
read, whatever the tenant's size. A read that is of use only whole - a ``/groups/delta`` round, whose entries
must be merged before any group can be mapped - is folded in its own thread (``reduce``) and handed over as
one result, so it never waits for the consumer: it holds what the merge would hold anyway.

Failures stay where they belong: a read that fails hands its error to the consumer, which raises it when it
reaches that read (a 403 on devices fails devices alone, as in a sequential run), and stops. Refused
credentials (``GraphCredentialsError``) and a link off GRAPH_BASE_URL (``ForeignLink``) fail the whole run:
every read stops before its next request, and the consumer raises the error at its next step. The first read
starts alone and the others once it had an answer, so credentials Graph refuses cost one request, not one per
read. ``close()`` (also on leaving the ``with`` block, or when a generator using it is closed or abandoned)
stops every thread and waits for them.
"""
from __future__ import annotations

import contextvars
import ctypes
import logging
import queue
import threading
from collections.abc import Callable, Iterable, Iterator
from typing import Self

from shared.errors import ForeignLink, GraphCredentialsError

log = logging.getLogger(__name__)

BATCH = 100        # objects handed over at a time: a queue operation per object would cost more than mapping it
DEPTH = 8          # batches a read may run ahead of its consumer (800 objects, a few MB of parsed JSON)
POLL_SECONDS = 0.05  # how often a blocked thread looks whether it was stopped
JOIN_SECONDS = 10.0  # close() waits this long for a thread caught in a request (the transport bounds it)
FATAL = (GraphCredentialsError, ForeignLink)  # errors that fail the run, not one object type

_END = object()


class _Failed:
    """A read's error, on its way to the consumer's thread."""

    def __init__(self, error: BaseException):
        self.error = error


class _Shared:
    """What the reads of one run share: the stop signal and the fatal error. It refers to no stream, so no
    reference cycle keeps a finished run's reads - and what their sources refer to - alive until the
    collector runs."""

    def __init__(self) -> None:
        self.stopping = threading.Event()
        self.fatal: BaseException | None = None
        self._lock = threading.Lock()

    def fail(self, error: BaseException) -> None:
        with self._lock:
            if self.fatal is None:
                self.fatal = error
        self.stopping.set()


class _Stopped(Exception):
    """Raised inside a read's thread when it was stopped in the middle of a ``reduce``."""


class Stream:
    """One read (an iterable of Graph objects) run in its own thread; iterate it in the consumer's thread.
    Iterating raises the read's error, or the run's fatal error when another read had one. With ``reduce``,
    the thread folds the objects itself and the stream yields the one result (``result()``)."""

    def __init__(self, shared: _Shared, key: str, name: str, source: Callable[[], Iterable[dict]], depth: int,
                 batch: int, reduce: Callable[[Iterable[dict]], object] | None = None):
        self.key, self.name = key, name
        self._shared, self._source, self._batch, self._reduce = shared, source, batch, reduce
        self._queue: queue.Queue = queue.Queue(maxsize=depth)
        self._stop = threading.Event()
        self.answered = threading.Event()  # set once the read yielded its first object, or ended
        self.thread: threading.Thread | None = None

    def start(self) -> None:
        context = contextvars.copy_context()  # the run's correlation id follows into the thread's logs
        self.thread = threading.Thread(target=context.run, args=(self._run,), name=f"graph-read-{self.name}",
                                       daemon=True)
        self.thread.start()

    def stop(self) -> None:
        """Stop this read before its next request (its object type failed, or the run ends)."""
        self._stop.set()

    def result(self) -> object:
        """What ``reduce`` made of the read (waits for it)."""
        return next(iter(self))

    def __iter__(self) -> Iterator[dict]:
        while True:
            item = self._take()
            if item is _END:
                return
            if isinstance(item, _Failed):
                raise item.error
            yield from item

    # -- the consumer's side ----------------------------------------------------------------------------------

    def _take(self) -> object:
        while True:
            if self._shared.fatal is not None:
                raise self._shared.fatal
            try:
                return self._queue.get(timeout=POLL_SECONDS)
            except queue.Empty:
                if self.thread is None or not self.thread.is_alive() and self._queue.empty():
                    raise RuntimeError(f"the read of {self.name} stopped without an answer") from None

    # -- the thread's side ------------------------------------------------------------------------------------

    def _until_stopped(self, objects: Iterator[dict]) -> Iterator[dict]:
        """``objects``, ending the read with ``_Stopped`` as soon as it is stopped (for a ``reduce``)."""
        for obj in objects:
            if self._stopped():
                raise _Stopped
            if not self.answered.is_set():
                self.answered.set()
            yield obj

    def _stopped(self) -> bool:
        return self._stop.is_set() or self._shared.stopping.is_set()

    def _put(self, item: object) -> bool:
        """Hand ``item`` over, waiting while the queue is full; False when the read was stopped meanwhile."""
        while not self._stopped():
            try:
                self._queue.put(item, timeout=POLL_SECONDS)
                return True
            except queue.Full:
                continue
        return False

    def _run(self) -> None:
        try:
            if self._stopped() or not self._fetch():
                return
            self._put(_END)
        except _Stopped:
            return
        except BaseException as error:  # noqa: BLE001 - every error is handed to the consumer, who raises it
            if isinstance(error, FATAL):
                self._shared.fail(error)
            self._put(_Failed(error))
        finally:
            self.answered.set()

    def _fetch(self) -> bool:
        """Read the source into the queue in batches; False when stopped before the end."""
        objects = iter(self._source())
        try:
            if self._reduce is not None:
                return self._put([self._reduce(self._until_stopped(objects))])
            batch: list[dict] = []
            for obj in objects:
                batch.append(obj)
                if len(batch) == 1:
                    self.answered.set()
                if len(batch) >= self._batch:
                    if not self._put(batch):
                        return False
                    batch = []
            return not batch or self._put(batch)
        finally:
            close = getattr(objects, "close", None)
            if close is not None:
                close()  # a generator over Graph's pages: no further request


class Prefetch:
    """The concurrent reads of one run: declare them with ``stream()``, ``start()`` them, iterate each
    ``Stream`` in the consumer's thread, ``close()`` at the end (or use ``with``)."""

    def __init__(self, depth: int = DEPTH, batch: int = BATCH):
        self._depth, self._batch = depth, batch
        self.streams: list[Stream] = []
        self._shared = _Shared()

    @property
    def fatal(self) -> BaseException | None:
        """The error that failed the run (``FATAL``), once a read had one."""
        return self._shared.fatal

    def stream(self, key: str, name: str, source: Callable[[], Iterable[dict]],
               reduce: Callable[[Iterable[dict]], object] | None = None) -> Stream:
        """Declare a read of object type ``key``: ``source()`` is called in the read's own thread and iterated
        there. ``name`` tells the reads of one type apart in thread names and logs. ``reduce``, for a read
        that is only of use whole (a delta round whose entries must be merged): called in the thread with the
        objects; it must touch nothing but them and what it builds (and may read Graph)."""
        stream = Stream(self._shared, key, name, source, self._depth, self._batch, reduce)
        self.streams.append(stream)
        return stream

    def stop(self, key: str) -> None:
        """Stop the reads of object type ``key`` (it failed: what they would read is not used)."""
        for stream in self.streams:
            if stream.key == key:
                stream.stop()

    def start(self) -> None:
        """Start the first read alone and the others once it had an answer (an object, its end or its error):
        credentials that Graph refuses then cost one request."""
        if not self.streams:
            return
        first, *others = self.streams
        first.start()
        while not first.answered.wait(POLL_SECONDS) and first.thread.is_alive():
            pass
        if self.fatal is None:
            for stream in others:
                stream.start()

    def close(self, timeout: float = JOIN_SECONDS) -> None:
        """Stop every read and wait for its thread (idempotent). A thread still inside a request after
        ``timeout`` is left to finish it: it stops before the next one, and it is a daemon."""
        self._shared.stopping.set()
        for stream in self.streams:
            if stream.thread is not None:
                stream.thread.join(timeout)
                if stream.thread.is_alive():
                    log.warning("the Graph read of %s is still in a request; it stops after it", stream.name)
        if any(stream.thread is not None for stream in self.streams):
            self._trim()

    @staticmethod
    def _trim() -> None:
        """Hand the memory the reads' threads freed back to the system (glibc ``malloc_trim``).

        glibc gives each thread that allocates its own malloc arena, and what is freed into one is reused by
        nothing else: the pages the threads parsed, freed by the consumer, would stay resident while the
        worker pushes (measured: 6 MB more peak RSS for a 20,000-user full sync without it). A no-op off glibc."""
        try:
            ctypes.CDLL(None).malloc_trim(0)
        except (OSError, AttributeError):  # not glibc (musl, macOS, Windows)
            pass

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
