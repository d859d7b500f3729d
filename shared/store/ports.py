"""The storage interfaces the producer (``reconcile``) and the single writer (``worker``) depend on.

Two implementations: ``store_local`` (SQLite + files under ``ENTRA_ASSETS_HOME``, for the CLI without a
storage account) and ``store_azure`` (Blob for state and payloads, Queue for changes, for the Functions app).
``tests/test_store.py`` runs one contract suite against both.

Delivery is at-least-once everywhere: a message may be received again after its visibility timeout, a payload
may be read after a crash, a commit may be repeated. Every operation here is therefore safe to repeat; the ones
that are not idempotent by nature (``send``) say so.
"""
from __future__ import annotations

import json
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from types import TracebackType
from typing import Protocol, Self

import orjson

# A Storage queue message holds at most 64 KiB of text; base64 (host.json ``messageEncoding: base64``) turns
# 3 bytes into 4, so 48 KiB of raw JSON is the most one message can carry. Bigger batches go to a payload
# (claim check). https://learn.microsoft.com/rest/api/storageservices/put-message
QUEUE_MESSAGE_LIMIT = 64 * 1024
RAW_MESSAGE_LIMIT = QUEUE_MESSAGE_LIMIT // 4 * 3
MAX_DEQUEUE_COUNT = 5  # host.json extensions.queues.maxDequeueCount: the host poisons after this many
# Per-object state is kept and committed in shards of ids (issue 11: bounded memory): the Azure store keeps one
# blob per type and shard, and the worker commits one shard at a time. A million users make ~62,500 per shard.
SHARDS = 16


def shard_of(record_id: str) -> int:
    """The id's shard: stable across processes and releases (unlike ``hash``), over any kind of id."""
    return zlib.crc32(record_id.encode()) % SHARDS


@dataclass(frozen=True)
class QueuedMessage:
    """One received message. ``receipt`` is the backend handle ``delete`` needs (a pop receipt); it is None
    for a message the Functions host delivered, which the host completes itself."""

    id: str
    body: dict
    dequeue_count: int
    receipt: object | None


@dataclass(frozen=True)
class QueueDepth:
    """Approximate message counts of the queue and of its ``<queue>-poison`` queue."""

    messages: int
    poison: int


class LeaseBusy(Exception):
    """Another holder has the lease; ``expires_in`` is how long it lasts unless renewed (seconds, when known)."""

    def __init__(self, message: str, expires_in: float | None = None):
        super().__init__(message)
        self.expires_in = expires_in


class Lease(Protocol):
    """An exclusive, expiring lease. ``__enter__`` acquires it or raises ``LeaseBusy``; ``renew`` extends it by
    its ttl (raises ``LeaseBusy`` if another holder took it meanwhile); ``__exit__`` releases it and never
    raises (a lease that already expired or was taken over is only logged). If the holder dies, the lease
    expires by itself after its ttl (Azure: the ttl clamped into 15-60 s)."""

    def __enter__(self) -> Self: ...

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None: ...

    def renew(self) -> None: ...


class StateStore(Protocol):
    """What was last pushed, per record: its content hash and its data (the attributes it was pushed with), and
    named checkpoints (delta link, chosen names...).

    The data is what a departure pushes once more with Status = Deleted (so an import that removes empty
    values does not blank the record) and what ``preview`` compares an update against. ``commit`` writes the
    data first, then the hashes, then the checkpoints: a hash never exists without its data, and a crash in
    between leaves at worst data without a hash, which only causes a re-push."""

    def hashes(self, type_key: str) -> Iterator[tuple[str, str]]:
        """(record id, content hash) of what was last pushed, for one object type, streamed so that a type
        never has to be in memory at once (the planner spills it: ``shared.produce.spill``). An id may come
        twice; the later pair wins (the Azure store yields a legacy unsharded blob before the shards)."""
        ...

    def records(self, type_key: str, ids: Iterable[str]) -> dict[str, dict]:
        """Record id -> the data last pushed for it, for those of ``ids`` that have data (unknown ids are
        absent). Efficient for a few ids as for every id of a type: the local store queries in chunks, the
        Azure store streams the type's records blob once, keeping only the wanted ids."""
        ...

    def read_times(self, type_key: str, ids: Iterable[str]) -> dict[str, float]:
        """Record id -> when the data last pushed for it was read from Graph (epoch seconds), for those of ``ids``
        that have one (records committed without a read time are absent). Read as ``records`` is."""
        ...

    def checkpoint(self, name: str) -> str | None:
        """The checkpoint's value, or None when it was never set or was deleted."""
        ...

    def commit(self, hashes: dict[str, dict[str, str]], checkpoints: dict[str, str | None],
               records: dict[str, dict[str, dict]] | None = None,
               read: dict[str, dict[str, float]] | None = None) -> None:
        """Merge ``records`` ({type: {id: data}}) and ``hashes`` ({type: {id: hash}}) into the stored ones per
        type (add or overwrite; ids not given are kept, nothing is ever removed) and set each checkpoint (a None
        value deletes it). A data value is a JSON object: a dict, or an ``orjson.Fragment`` holding one
        (already serialised JSON, stored as is). ``read`` ({type: {id: epoch seconds}}) is when each record's
        data was read from Graph, stored with the record (an id of ``records`` without one keeps its old
        time). Idempotent. Written in this order: records, hashes, checkpoints, so a crash in between only
        makes the next run redo work (a hash is never stored without its data). Each shard's hashes and
        records are replaced atomically (Azure: one blob each), but the commit as a whole is atomic only in the
        local store."""
        ...

    def note_in_flight(self, records: dict[str, dict[str, bytes]]) -> None:
        """Durably add ``records`` ({type: {id: data as JSON}}) to those in flight: about to be sent in an
        execution whose outcome is not committed yet (``shared.deliver.open_executions``). One append per call."""
        ...

    def in_flight(self) -> Iterator[tuple[str, str, bytes]]:
        """(type, id, data as JSON) of the records noted in flight since the last ``clear_in_flight``, in the
        order noted (an id noted again: the later one counts), streamed: a million-record execution's notes are
        never held whole."""
        ...

    def clear_in_flight(self) -> None:
        """Forget the records in flight (before a new execution starts). Idempotent."""
        ...

    def lease(self, name: str, ttl: float) -> Lease:
        """A lease named ``name`` (may contain "/", e.g. ``writer/<source>``) that expires ``ttl`` seconds after
        it was acquired or last renewed. Not acquired until entered."""
        ...


class ChangeQueue(Protocol):
    """The queue of change messages between the producer and the single writer. Not FIFO; at-least-once."""

    def send(self, body: dict, delay: float = 0) -> None:
        """Enqueue ``body`` as JSON, invisible for ``delay`` seconds. Not idempotent (each call adds a message).
        Raises ValueError when the JSON exceeds ``RAW_MESSAGE_LIMIT`` (the 64 KiB queue limit after base64):
        put the data in a ``PayloadStore`` and send its name instead."""
        ...

    def receive(self, max_messages: int, visibility_timeout: float) -> list[QueuedMessage]:
        """Up to ``max_messages`` visible messages (possibly fewer, [] when none). Each becomes invisible for
        ``visibility_timeout`` seconds (Azure rounds up to whole seconds, at least 1) and its dequeue_count
        grows by one; unless deleted, it is received again after that."""
        ...

    def delete(self, message: QueuedMessage) -> None:
        """Acknowledge ``message``. Idempotent: an already deleted message, or one whose receipt went stale
        because another receiver took it meanwhile, is logged and ignored."""
        ...

    def poison(self, message: QueuedMessage) -> None:
        """Move ``message`` to ``<queue>-poison`` (what the Functions host does after maxDequeueCount failed
        deliveries; the local host stand-in calls it). Kept there for inspection and replay."""
        ...

    def depth(self) -> QueueDepth:
        """Approximate counts (visible and invisible) of this queue and of ``<queue>-poison``."""
        ...


class PayloadStore(Protocol):
    """Claim-check payloads: named files of newline-separated JSON documents (gzip'd in Azure, where they
    cross the network; plain on a local disk, where compressing only costs CPU)."""

    def write(self, name: str, lines: Iterable[bytes]) -> None:
        """Store ``lines`` (each one JSON document without a newline) under ``name``, streaming: memory stays
        bounded whatever the number of lines. Readers never see a half-written payload; writing an existing
        name replaces it."""
        ...

    def read(self, name: str) -> Iterator[bytes]:
        """Yield the lines back in order, streaming. Raises FileNotFoundError (local) or LookupError (Azure)
        when the payload does not exist."""
        ...

    def delete(self, name: str) -> None:
        """Remove the payload. Idempotent: a missing payload is not an error."""
        ...

    def sweep(self, before: float) -> int:
        """Delete every payload, and every unfinished write a dead writer left, last modified before ``before``
        (epoch seconds); returns how many. Callers pass a time that no live writer can be behind."""
        ...


def joined(lines: Iterable[bytes], size: int = 512, most: int = 1 << 20) -> Iterator[bytes]:
    """``lines`` as newline-terminated blocks of ``size`` lines, or fewer once a block holds ``most`` bytes: one
    compressor call per block, not per line, and a bounded block whatever the lines (a staged Graph page is
    ~100 KB: 512 of them would hold 50 MB)."""
    block: list[bytes] = []
    held = 0
    for line in lines:
        block.append(line)
        held += len(line)
        if len(block) >= size or held >= most:
            yield b"\n".join(block) + b"\n"
            block, held = [], 0
    if block:
        yield b"\n".join(block) + b"\n"


def in_flight_lines(records: dict[str, dict[str, bytes]]) -> bytes:
    """Records in flight as lines ``[type, id]``, a tab, the record's JSON (which holds no raw newline)."""
    return b"".join(b'["' + type_key.encode() + b'",' + orjson.dumps(id_) + b"]\t" + data + b"\n"
                    for type_key, by_id in records.items() for id_, data in by_id.items())


def parse_in_flight(chunks: Iterable[bytes]) -> Iterator[tuple[str, str, bytes]]:
    """(type, id, data) of each record of ``in_flight_lines`` output given in chunks, in order, streamed; a torn
    last line (a writer killed mid-write) is left out."""
    rest = b""
    for chunk in chunks:
        lines = (rest + chunk).split(b"\n")
        rest = lines.pop()  # what follows the last newline: the start of the next line, or a torn one
        for line in lines:
            head, _, data = line.partition(b"\t")
            type_key, id_ = orjson.loads(head)
            yield type_key, id_, data


def encode_message(body: dict) -> str:
    """``body`` as compact JSON text; ValueError when it would not fit one queue message (see ``send``)."""
    text = json.dumps(body, separators=(",", ":"), ensure_ascii=False)
    size = len(text.encode())
    if size > RAW_MESSAGE_LIMIT:
        raise ValueError(f"queue message of {size} bytes exceeds the {RAW_MESSAGE_LIMIT}-byte limit "
                         f"({QUEUE_MESSAGE_LIMIT // 1024} KiB after base64); send a payload name instead")
    return text
