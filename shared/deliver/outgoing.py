"""The records one execution sent, spooled to local disk until the worker commits them (issue 11).

Nothing is committed before Assets reports the execution DONE, so what went out must be kept until then: each
record's hash, its data and when it was read. Held in memory that is ~1 KB per record (1.2 GB for a million-user
run); here it goes to files in a temporary directory, one per id shard (``shared.store.ports.shard_of``, the shards
the state is stored in), and the commit reads them back one shard at a time (``batches``). Memory then holds one
shard's records: 1/16 of the run. The files sit on the instance's local disk (a Flex Consumption instance has its
temporary directory there) and are removed by ``close``. A killed worker leaves its spool behind: the next
``Outgoing`` of the instance removes spools untouched for ``STALE_SPOOL_SECONDS`` (whether the platform empties
the temporary directory of a live instance is UNCONFIRMED, so it is not relied on).

A file line is ``[type, id, hash, read]``, a tab, then the record's JSON (which holds no raw newline)
(``spool_line``). An execution handed on to a later invocation (``shared.deliver.handoff``) takes its spool
along as a payload: ``export`` writes it out in that format, ``restore`` reads it into another ``Outgoing``.
"""
from __future__ import annotations

import shutil
import tempfile
import time
from collections import Counter, defaultdict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO, Self

import orjson

from shared.contract.payload import Line
from shared.store.ports import SHARDS, shard_of

PREFIX = "entra-assets-sent-"
STALE_SPOOL_SECONDS = 24 * 3600   # far longer than any execution: a spool this old belongs to a killed worker


def spool_line(line: Line) -> bytes:
    """``line`` as a spool line (without its newline)."""
    return orjson.dumps([line.type, line.id, line.hash, line.read]) + b"\t" + line.data


def parse_spool_line(raw: bytes) -> Line:
    """The record of a spool line a handed-off execution has yet to send (``spool_line``)."""
    head, _, data = raw.partition(b"\t")
    type_key, record_id, digest, read = orjson.loads(head)
    return Line(type_key, record_id, digest, data, read)


@dataclass
class Batch:
    """One shard's part of what an execution sent, in ``StateStore.commit``'s shape."""

    hashes: dict[str, dict[str, str]] = field(default_factory=lambda: defaultdict(dict))
    records: dict[str, dict[str, orjson.Fragment]] = field(default_factory=lambda: defaultdict(dict))
    read: dict[str, dict[str, float]] = field(default_factory=lambda: defaultdict(dict))


class Outgoing:
    """The records sent in one execution: committed once Assets reports DONE, minus the types it reported errors
    for (``failed``). It also holds the objects a catch-up read and found unchanged (``confirm``: their read
    times only, in memory - a catch-up reads few). Use it as a context manager: leaving removes the spool."""

    def __init__(self) -> None:
        self._dir = Path(tempfile.mkdtemp(prefix=PREFIX))
        _sweep(self._dir.parent, time.time() - STALE_SPOOL_SECONDS)
        self._files: dict[int, BinaryIO] = {}
        self._newest: dict[str, float] = {}
        self._confirmed: dict[str, dict[str, float]] = defaultdict(dict)
        self.failed: set[str] = set()
        self.sent: Counter = Counter()   # records sent per type (a record sent twice counts twice)
        self.chunks = 0
        self.started = False             # Assets started the execution

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        for file in self._files.values():
            file.close()
        self._files.clear()
        shutil.rmtree(self._dir, ignore_errors=True)

    def add(self, line: Line) -> None:
        """Spool one record as it goes out (a record sent again later wins)."""
        self._write_line(line.id, spool_line(line))
        self._newest[line.type] = max(self._newest.get(line.type, line.read), line.read)
        self.sent[line.type] += 1

    def _write_line(self, record_id: str, raw: bytes) -> None:
        shard = shard_of(record_id)
        file = self._files.get(shard)
        if file is None:
            file = self._files[shard] = open(self._dir / f"{shard:02d}", "ab")  # noqa: SIM115 - closed by close()
        file.write(raw + b"\n")

    def export(self) -> Iterator[bytes]:
        """Everything this spool holds, as lines (without newlines) that ``restore`` reads back: the records
        sent (``spool_line``; of every type, failed or not), then one line of the confirmed read times."""
        for shard in range(SHARDS):
            file = self._files.get(shard)
            if file is not None:
                file.flush()
                with open(file.name, "rb") as spooled:
                    yield from (raw[:-1] for raw in spooled)
        yield orjson.dumps({"confirmed": self._confirmed})

    def restore(self, lines: Iterable[bytes]) -> None:
        """Add what ``export`` wrote (of this execution, by an earlier invocation): its records as sent - not
        counted in ``sent`` again - and its confirmed read times."""
        for raw in lines:
            if b"\t" not in raw:
                for type_key, times in orjson.loads(raw)["confirmed"].items():
                    if times:
                        self._confirmed[type_key].update(times)
                        self._newest[type_key] = max(self._newest.get(type_key, 0.0), *times.values())
                continue
            line = parse_spool_line(raw)  # a record sent (``add``: with its read time)
            self._write_line(line.id, raw)
            self._newest[line.type] = max(self._newest.get(line.type, line.read), line.read)

    def mark(self, type_key: str, record_id: str, digest: str, data: bytes) -> None:
        """Spool a record to commit with ``digest`` and no read time (``open_executions.abandon``)."""
        self._write_line(record_id, orjson.dumps([type_key, record_id, digest, None]) + b"\t" + data)

    def drop(self, type_key: str) -> None:
        """Commit nothing of ``type_key``: Assets reported errors for it."""
        self.failed.add(type_key)
        self._newest.pop(type_key, None)
        self._confirmed.pop(type_key, None)

    def confirm(self, seen: dict[str, set[str]], read: float) -> None:
        """The ids a catch-up read at ``read``, unchanged or not: those not sent get ``read`` as their read time."""
        for type_key, ids in seen.items():
            if type_key in self.failed:
                continue
            self._confirmed[type_key].update(dict.fromkeys(ids, read))
            if ids:
                self._newest[type_key] = max(self._newest.get(type_key, read), read)

    def newest_read(self) -> dict[str, float]:
        """Per type committed, the newest read time sent or confirmed."""
        return dict(self._newest)

    def batches(self) -> Iterator[Batch]:
        """What to commit, one shard at a time (a record sent twice: the later one; a confirmed id that was also
        sent: the time it was sent with)."""
        for shard in range(SHARDS):
            batch = Batch()
            for type_key, record_id, digest, read, data in self._lines(shard):
                batch.hashes[type_key][record_id] = digest
                batch.records[type_key][record_id] = orjson.Fragment(data)
                if read is not None:
                    batch.read[type_key][record_id] = read
            for type_key, times in self._confirmed.items():
                for record_id, when in times.items():
                    if shard_of(record_id) == shard:
                        batch.read[type_key].setdefault(record_id, when)
            if batch.hashes or batch.read:
                yield batch

    def read_times(self, type_key: str, ids: Iterable[str]) -> dict[str, float]:
        """Of ``ids``, those sent or confirmed in this execution, with their read time (``StateStore.read_times``'
        shape). Reads only the shards that hold them."""
        wanted = set(ids)
        found = {i: t for i, t in self._confirmed.get(type_key, {}).items() if i in wanted}
        for shard in sorted({shard_of(i) for i in wanted}):
            for line_type, record_id, _, read, _ in self._lines(shard):
                if line_type == type_key and record_id in wanted and read is not None:
                    found[record_id] = read
        return found

    def records_of(self, type_key: str) -> Iterator[tuple[str, bytes]]:
        """(id, data as JSON) of every record of ``type_key`` sent (one id may come more than once: the last wins)."""
        for shard in range(SHARDS):
            for line_type, record_id, _, _, data in self._lines(shard):
                if line_type == type_key:
                    yield record_id, data

    def _lines(self, shard: int) -> Iterator[tuple[str, str, str, float | None, bytes]]:
        """The shard's spooled lines, of the types not failed, in the order they were sent."""
        file = self._files.get(shard)
        if file is None:
            return
        file.flush()
        with open(file.name, "rb") as spooled:
            for raw in spooled:
                head, _, data = raw.partition(b"\t")
                type_key, record_id, digest, read = orjson.loads(head)
                if type_key not in self.failed:
                    yield type_key, record_id, digest, read, data[:-1]


def _sweep(root: Path, before: float) -> None:
    """Remove the spools in ``root`` whose newest file (or the spool itself, when empty) is older than ``before``."""
    for spool in root.glob(f"{PREFIX}*"):
        try:
            touched = max([spool.stat().st_mtime, *(f.stat().st_mtime for f in spool.iterdir())])
        except OSError:  # removed meanwhile by another worker's sweep
            continue
        if touched < before:
            shutil.rmtree(spool, ignore_errors=True)
