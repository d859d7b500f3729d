"""The embedded store: one SQLite file (``state.db``) and JSON-lines payload files under ``ENTRA_ASSETS_HOME``.

Used by the CLI when no storage account is configured. SQLite in WAL mode gives several processes (a CLI
sync and a ``status`` next to it) one consistent view; every write is one transaction, and anything that
must be exclusive (taking a lease, receiving messages) runs in ``BEGIN IMMEDIATE`` so two processes cannot
both win. The queue emulates what the Functions host adds to a Storage queue: a message delivered
``MAX_DEQUEUE_COUNT`` times without being deleted moves to a poison table instead of blocking the CLI forever.

State: ``hashes`` holds the content hash of every pushed record, ``records`` its data as compact JSON bytes. The
data has a table of its own (a rowid table: a group's data can be megabytes, which a WITHOUT ROWID table stores
badly) so that reading all hashes never touches it; a database from before the data existed simply gains the
empty table (``CREATE TABLE IF NOT EXISTS``) and keeps its hashes. A ``commit`` writes records, then hashes,
then checkpoints, all in one transaction.
"""
from __future__ import annotations

import contextlib
import json
import logging
import os
import sqlite3
import threading
import time
import uuid
from collections.abc import Iterable, Iterator
from pathlib import Path
from types import TracebackType
from typing import Self

import orjson

from shared.store import MAX_DEQUEUE_COUNT, LeaseBusy, QueueDepth, QueuedMessage, encode_message, joined

log = logging.getLogger(__name__)

SCHEMA = """
CREATE TABLE IF NOT EXISTS hashes (type TEXT NOT NULL, id TEXT NOT NULL, hash TEXT NOT NULL,
                                   PRIMARY KEY (type, id)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS records (type TEXT NOT NULL, id TEXT NOT NULL, data BLOB NOT NULL,
                                    PRIMARY KEY (type, id));
CREATE TABLE IF NOT EXISTS checkpoints (name TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS leases (name TEXT PRIMARY KEY, token TEXT NOT NULL, expires REAL NOT NULL);
CREATE TABLE IF NOT EXISTS queue (id TEXT PRIMARY KEY, queue TEXT NOT NULL, body TEXT NOT NULL,
                                  inserted REAL NOT NULL, visible_at REAL NOT NULL,
                                  dequeue_count INTEGER NOT NULL DEFAULT 0, receipt TEXT);
CREATE INDEX IF NOT EXISTS queue_visible ON queue (queue, visible_at);
CREATE TABLE IF NOT EXISTS poison (id TEXT PRIMARY KEY, queue TEXT NOT NULL, body TEXT NOT NULL,
                                   dequeue_count INTEGER NOT NULL, moved REAL NOT NULL);
"""
IN_CHUNK = 500  # ids per ``WHERE id IN (...)``: well under SQLite's limit of bound parameters


class _Db:
    """One connection to ``home/state.db`` (created with its parents), serialised by a lock so a store may be
    shared between threads. ``transaction`` is ``BEGIN IMMEDIATE`` ... ``COMMIT`` (rolled back on error)."""

    def __init__(self, home: Path | str):
        path = Path(home)
        path.mkdir(parents=True, exist_ok=True)
        # isolation_level=None: we issue BEGIN/COMMIT ourselves; timeout: wait for another process's write.
        self.conn = sqlite3.connect(path / "state.db", timeout=30, isolation_level=None,
                                    check_same_thread=False)
        self.lock = threading.RLock()
        with self.lock:
            self.conn.execute("PRAGMA journal_mode=WAL")
            self.conn.execute("PRAGMA synchronous=NORMAL")  # WAL + NORMAL: durable except on power loss
            self.conn.executescript(SCHEMA)

    @contextlib.contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        with self.lock:
            self.conn.execute("BEGIN IMMEDIATE")
            try:
                yield self.conn
            except BaseException:
                self.conn.execute("ROLLBACK")
                raise
            self.conn.execute("COMMIT")

    def query(self, sql: str, params: tuple = ()) -> list[tuple]:
        with self.lock:
            return self.conn.execute(sql, params).fetchall()


class LocalLease:
    """A lease row (holder token + expiry) in ``state.db``; see ``shared.store.Lease``."""

    def __init__(self, db: _Db, name: str, ttl: float):
        self._db, self.name, self.ttl = db, name, ttl
        self._token = uuid.uuid4().hex

    def __enter__(self) -> Self:
        """Acquire; raises ``LeaseBusy`` while another holder's lease has not expired."""
        with self._db.transaction() as conn:
            row = conn.execute("SELECT token, expires FROM leases WHERE name=?", (self.name,)).fetchone()
            if row and row[0] != self._token and row[1] > time.time():
                raise LeaseBusy(f"lease {self.name!r} is held by another process for {row[1] - time.time():.1f}s")
            conn.execute("INSERT INTO leases (name, token, expires) VALUES (?, ?, ?) ON CONFLICT(name) DO "
                         "UPDATE SET token=excluded.token, expires=excluded.expires",
                         (self.name, self._token, time.time() + self.ttl))
        return self

    def renew(self) -> None:
        """Extend by ``ttl`` from now. Raises ``LeaseBusy`` when another holder took the lease meanwhile."""
        with self._db.transaction() as conn:
            cursor = conn.execute("UPDATE leases SET expires=? WHERE name=? AND token=?",
                                  (time.time() + self.ttl, self.name, self._token))
            if cursor.rowcount == 0:
                raise LeaseBusy(f"lease {self.name!r} was lost to another holder")

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        """Release; a lease already taken over is only logged. Never raises."""
        try:
            with self._db.transaction() as conn:
                cursor = conn.execute("DELETE FROM leases WHERE name=? AND token=?", (self.name, self._token))
            if cursor.rowcount == 0:
                log.warning("lease %s had already expired and been taken over", self.name)
        except sqlite3.Error as err:  # expires by itself anyway
            log.warning("could not release lease %s: %s", self.name, err)


class LocalStateStore:
    """``shared.store.StateStore`` in ``home/state.db`` (hashes and records tables, see the module docstring).
    A ``commit`` is one transaction (fully atomic)."""

    def __init__(self, home: Path | str):
        self._db = _Db(home)

    def hashes(self, type_key: str) -> dict[str, str]:
        return dict(self._db.query("SELECT id, hash FROM hashes WHERE type=?", (type_key,)))

    def records(self, type_key: str, ids: Iterable[str]) -> dict[str, dict]:
        """Chunked ``IN`` queries inside one read transaction (one consistent snapshot)."""
        wanted = list(dict.fromkeys(ids))
        found: dict[str, dict] = {}
        if not wanted:
            return found
        with self._db.lock:
            conn = self._db.conn
            conn.execute("BEGIN")
            try:
                for start in range(0, len(wanted), IN_CHUNK):
                    chunk = wanted[start:start + IN_CHUNK]
                    rows = conn.execute(f"SELECT id, data FROM records WHERE type=? AND id IN "
                                        f"({','.join('?' * len(chunk))})", (type_key, *chunk))
                    for id_, data in rows:
                        found[id_] = orjson.loads(data)
            finally:
                conn.execute("COMMIT")  # read-only: nothing to roll back
        return found

    def checkpoint(self, name: str) -> str | None:
        rows = self._db.query("SELECT value FROM checkpoints WHERE name=?", (name,))
        return rows[0][0] if rows else None

    def commit(self, hashes: dict[str, dict[str, str]], checkpoints: dict[str, str | None],
               records: dict[str, dict[str, dict]] | None = None) -> None:
        with self._db.transaction() as conn:
            for type_key, by_id in (records or {}).items():
                conn.executemany("INSERT INTO records (type, id, data) VALUES (?, ?, ?) "
                                 "ON CONFLICT (type, id) DO UPDATE SET data=excluded.data",
                                 ((type_key, id_, orjson.dumps(data)) for id_, data in by_id.items()))
            for type_key, by_id in hashes.items():
                conn.executemany("INSERT OR REPLACE INTO hashes (type, id, hash) VALUES (?, ?, ?)",
                                 ((type_key, id_, h) for id_, h in by_id.items()))
            for name, value in checkpoints.items():
                if value is None:
                    conn.execute("DELETE FROM checkpoints WHERE name=?", (name,))
                else:
                    conn.execute("INSERT OR REPLACE INTO checkpoints (name, value) VALUES (?, ?)", (name, value))

    def lease(self, name: str, ttl: float) -> LocalLease:
        return LocalLease(self._db, name, ttl)


class LocalQueue:
    """``shared.store.ChangeQueue`` as rows of ``home/state.db`` (several queues share the table by name)."""

    def __init__(self, home: Path | str, queue_name: str):
        self._db, self.name = _Db(home), queue_name

    def send(self, body: dict, delay: float = 0) -> None:
        text = encode_message(body)  # same limit as Azure, so the CLI cannot hide an oversize message
        now = time.time()
        with self._db.transaction() as conn:
            conn.execute("INSERT INTO queue (id, queue, body, inserted, visible_at) VALUES (?, ?, ?, ?, ?)",
                         (uuid.uuid4().hex, self.name, text, now, now + max(delay, 0)))

    def receive(self, max_messages: int, visibility_timeout: float) -> list[QueuedMessage]:
        now = time.time()
        received = []
        with self._db.transaction() as conn:
            self._poison_exhausted(conn, now)
            rows = conn.execute("SELECT id, body, dequeue_count FROM queue WHERE queue=? AND visible_at<=? "
                                "ORDER BY visible_at, inserted LIMIT ?", (self.name, now, max_messages)).fetchall()
            for id_, body, count in rows:
                receipt = uuid.uuid4().hex  # a new pop receipt per delivery: an older one can no longer delete
                conn.execute("UPDATE queue SET visible_at=?, dequeue_count=?, receipt=? WHERE id=?",
                             (now + visibility_timeout, count + 1, receipt, id_))
                received.append(QueuedMessage(id=id_, body=_decode(body), dequeue_count=count + 1,
                                              receipt=receipt))
        return received

    def poison(self, message: QueuedMessage) -> None:
        """Move ``message`` to ``<queue>-poison`` now (the Functions host's move after maxDequeueCount)."""
        with self._db.transaction() as conn:
            conn.execute("INSERT OR REPLACE INTO poison (id, queue, body, dequeue_count, moved) SELECT id, "
                         "queue || '-poison', body, dequeue_count, ? FROM queue WHERE id=?", (time.time(), message.id))
            conn.execute("DELETE FROM queue WHERE id=?", (message.id,))

    def _poison_exhausted(self, conn: sqlite3.Connection, now: float) -> None:
        """What the Functions host does after maxDequeueCount failed deliveries (host.json): move the message
        to ``<queue>-poison``. https://learn.microsoft.com/azure/azure-functions/functions-bindings-storage-queue-trigger#poison-messages"""
        where = "queue=? AND visible_at<=? AND dequeue_count>=?"
        params = (self.name, now, MAX_DEQUEUE_COUNT)
        moved = conn.execute(f"INSERT OR REPLACE INTO poison (id, queue, body, dequeue_count, moved) "
                             f"SELECT id, queue || '-poison', body, dequeue_count, {now!r} FROM queue WHERE {where}",
                             params).rowcount
        if moved:
            conn.execute(f"DELETE FROM queue WHERE {where}", params)
            log.error("%d message(s) of queue %s failed %d deliveries; moved to %s-poison", moved, self.name,
                      MAX_DEQUEUE_COUNT, self.name)

    def delete(self, message: QueuedMessage) -> None:
        """Delete by id and pop receipt; a host-delivered message (receipt None) is the host's to complete."""
        if message.receipt is None:
            log.debug("message %s was delivered by the host, which completes it", message.id)
            return
        with self._db.transaction() as conn:
            deleted = conn.execute("DELETE FROM queue WHERE id=? AND receipt=?",
                                   (message.id, message.receipt)).rowcount
            exists = not deleted and conn.execute("SELECT 1 FROM queue WHERE id=?", (message.id,)).fetchone()
        if exists:
            log.warning("message %s was received again by someone else; not deleted", message.id)

    def depth(self) -> QueueDepth:
        [(messages,)] = self._db.query("SELECT COUNT(*) FROM queue WHERE queue=?", (self.name,))
        [(poison,)] = self._db.query("SELECT COUNT(*) FROM poison WHERE queue=?", (self.name + "-poison",))
        return QueueDepth(messages=messages, poison=poison)


def _decode(text: str) -> dict:
    try:
        body = json.loads(text)
    except ValueError:
        body = None
    return body if isinstance(body, dict) else {"_raw": text[:200]}


class LocalPayloadStore:
    """``shared.store.PayloadStore`` as JSON-lines files under ``home/payloads/``, written to a temporary name and
    renamed into place (``os.replace`` is atomic), so a reader never sees half a payload."""

    def __init__(self, home: Path | str):
        self.root = Path(home) / "payloads"

    def _path(self, name: str) -> Path:
        path = (self.root / name).resolve()
        if not path.is_relative_to(self.root.resolve()) or path == self.root.resolve():
            raise ValueError(f"payload name {name!r} is not a plain relative name")
        return path

    def write(self, name: str, lines: Iterable[bytes]) -> None:
        path = self._path(name)
        path.parent.mkdir(parents=True, exist_ok=True)
        temp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
        try:
            # Plain JSON lines: a payload lives minutes on a local disk, and even gzip level 1 cost ~1 s of CPU
            # per 100,000 users (write and read, profiled) to save disk space nobody needs back.
            with open(temp, "wb") as f:
                f.writelines(joined(lines))
            os.replace(temp, path)
        finally:
            temp.unlink(missing_ok=True)

    def read(self, name: str) -> Iterator[bytes]:
        """Raises FileNotFoundError when the payload does not exist (on the first ``next``)."""
        with open(self._path(name), "rb") as f:
            for line in f:
                yield line.rstrip(b"\n")

    def delete(self, name: str) -> None:
        self._path(name).unlink(missing_ok=True)
