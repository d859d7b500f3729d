"""The per-object state of one planning run, kept so that the planner's memory does not grow with the tenant
(issue 11): the stored hashes of a type with the ids the run saw (``TypeHashes``), and a set of ids (``IdSet``,
the users in scope).

Up to ``SPILL_AT`` entries each lives in a Python dict or set (a lookup ~0.2 µs). Past that it moves to a
private temporary SQLite database (``scratch_db``: a file SQLite deletes when it is closed), where a lookup
costs ~5 µs on the 2-core CI machine (measured with ``sqlite3`` 3.40) but a million entries cost a few MB of
page cache instead of ~250 MB of Python strings. The bench tenant (100,000 users) stays in memory; a
million-user tenant spills.
"""
from __future__ import annotations

import itertools
import sqlite3
from collections.abc import Iterable, Iterator, Mapping

from shared.records.build import is_deactivated

SPILL_AT = 200_000   # entries held in memory before a structure moves to disk (~0.25 KB each in memory)
BATCH = 10_000       # rows written to the database per statement batch
IN_CHUNK = 500       # ids per IN (...) query


def scratch_db() -> sqlite3.Connection:
    """A private temporary database (https://www.sqlite.org/inmemorydb.html#temp_db: the name "" puts it in a
    file that is deleted when the connection closes, or is garbage-collected). It is one transaction that is
    never committed, so nothing is synced to disk. Usable from the thread that writes it and, afterwards, from
    another (``check_same_thread=False``; never from two at once)."""
    db = sqlite3.connect("", isolation_level=None, check_same_thread=False)
    db.execute("BEGIN")
    return db


def batches(items: Iterable, size: int = BATCH) -> Iterator[list]:
    """``items`` in lists of ``size`` (``itertools.batched`` is Python 3.12)."""
    it = iter(items)
    return iter(lambda: list(itertools.islice(it, size)), [])


class TypeHashes(Mapping[str, str]):
    """The stored hashes of one object type (id -> hash), read once from ``pairs`` (a later pair for an id wins),
    and which ids this run saw (``see``). Used from one thread at a time."""

    def __init__(self, pairs: Iterable[tuple[str, str]], spill_at: int | None = None):
        spill_at = SPILL_AT if spill_at is None else spill_at
        self._memory: dict[str, str] | None = {}
        self._seen: set[str] = set()
        self._db: sqlite3.Connection | None = None
        for batch in batches(pairs):
            if self._memory is not None:
                self._memory.update(batch)
                if len(self._memory) > spill_at:
                    self._spill()
            else:
                self._db.executemany("INSERT OR REPLACE INTO h VALUES (?, ?, 0)", batch)
        self._count = len(self._memory) if self._memory is not None else \
            self._db.execute("SELECT count(*) FROM h").fetchone()[0]

    def _spill(self) -> None:
        self._db = scratch_db()
        self._db.execute("CREATE TABLE h (id TEXT PRIMARY KEY, hash TEXT NOT NULL, seen INTEGER NOT NULL) "
                         "WITHOUT ROWID")
        # in key order: SQLite appends to the B-tree instead of splitting pages all over it
        self._db.executemany("INSERT INTO h VALUES (?, ?, 0)", sorted(self._memory.items()))
        self._memory = None

    @property
    def spilled(self) -> bool:
        return self._db is not None

    def get(self, object_id: str, default: str | None = None) -> str | None:
        if self._memory is not None:
            return self._memory.get(object_id, default)
        row = self._db.execute("SELECT hash FROM h WHERE id=?", (object_id,)).fetchone()
        return row[0] if row else default

    def __getitem__(self, object_id: str) -> str:
        if (found := self.get(object_id)) is None:
            raise KeyError(object_id)
        return found

    def __contains__(self, object_id: object) -> bool:
        return isinstance(object_id, str) and self.get(object_id) is not None

    def __iter__(self) -> Iterator[str]:
        if self._memory is not None:
            return iter(self._memory)
        return (i for (i,) in self._db.execute("SELECT id FROM h ORDER BY id"))

    def __len__(self) -> int:
        return self._count

    def see(self, object_id: str) -> str | None:
        """The stored hash of ``object_id`` (None: never stored), which then counts as seen by this run."""
        if self._memory is not None:
            stored = self._memory.get(object_id)
            if stored is not None:
                self._seen.add(object_id)
            return stored
        row = self._db.execute("UPDATE h SET seen=1 WHERE id=? RETURNING hash", (object_id,)).fetchone()
        return row[0] if row else None

    def seen(self) -> set[str]:
        """The stored ids seen so far."""
        if self._memory is not None:
            return set(self._seen)
        return {i for (i,) in self._db.execute("SELECT id FROM h WHERE seen")}

    def active(self) -> Iterator[str]:
        """The stored ids not yet marked Deleted, in id order when spilled."""
        if self._memory is not None:
            return (i for i, h in self._memory.items() if not is_deactivated(h))
        return (i for (i,) in self._db.execute("SELECT id FROM h WHERE substr(hash, 1, 1) != 'D' ORDER BY id"))

    def unseen_active(self) -> list[str]:
        """The stored ids not seen by this run and not marked Deleted, sorted."""
        if self._memory is not None:
            return sorted(i for i in self.active() if i not in self._seen)
        return [i for (i,) in self._db.execute("SELECT id FROM h WHERE NOT seen AND substr(hash, 1, 1) != 'D' "
                                               "ORDER BY id")]


class IdSet:
    """A set of ids that grows as a run reads (``add``), then answers ``in`` and ``intersection``. Used from one
    thread at a time."""

    def __init__(self, ids: Iterable[str] = (), spill_at: int | None = None):
        self._memory: set[str] | None = set()
        self._pending: set[str] = set()  # added since the last write to the database
        self._db: sqlite3.Connection | None = None
        self._spill_at = SPILL_AT if spill_at is None else spill_at
        self.update(ids)

    @property
    def spilled(self) -> bool:
        return self._db is not None

    def add(self, object_id: str) -> None:
        if self._memory is not None:
            self._memory.add(object_id)
            if len(self._memory) > self._spill_at:
                self._spill()
            return
        self._pending.add(object_id)
        if len(self._pending) >= BATCH:
            self._flush()

    def update(self, ids: Iterable[str]) -> None:
        for object_id in ids:
            self.add(object_id)

    def _spill(self) -> None:
        self._db = scratch_db()
        self._db.execute("CREATE TABLE s (id TEXT PRIMARY KEY) WITHOUT ROWID")
        self._pending, self._memory = self._memory, None
        self._flush()

    def _flush(self) -> None:
        if not self._pending:
            return
        self._db.executemany("INSERT OR IGNORE INTO s VALUES (?)", ((i,) for i in sorted(self._pending)))
        self._pending = set()

    def __contains__(self, object_id: object) -> bool:
        if self._memory is not None:
            return object_id in self._memory
        return object_id in self._pending or \
            self._db.execute("SELECT 1 FROM s WHERE id=?", (object_id,)).fetchone() is not None

    def intersection(self, ids: Iterable[str]) -> set[str]:
        """The ids of ``ids`` in this set: one C call in memory, chunked ``IN`` queries when spilled."""
        if self._memory is not None:
            return self._memory.intersection(ids)
        self._flush()
        ids = ids if isinstance(ids, list) else list(ids)
        if len(ids) <= 2:  # a device's or an application's owners: no IN list to build
            return {i for i in ids if self._db.execute("SELECT 1 FROM s WHERE id=?", (i,)).fetchone()}
        found: set[str] = set()
        for chunk in batches(dict.fromkeys(ids), IN_CHUNK):
            found.update(i for (i,) in self._db.execute(
                f"SELECT id FROM s WHERE id IN ({','.join('?' * len(chunk))})", chunk))
        return found
