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
import socket
import sqlite3
import threading
import time
import uuid
from collections.abc import Iterable, Iterator
from pathlib import Path
from types import TracebackType
from typing import Self

import orjson

try:
    import fcntl
except ImportError:  # Windows: no advisory locks; unfinished payload writes are swept by age alone
    fcntl = None

from shared.store.ports import (
    MAX_DEQUEUE_COUNT,
    LeaseBusy,
    QueueDepth,
    QueuedMessage,
    encode_message,
    in_flight_lines,
    joined,
    parse_in_flight,
)

log = logging.getLogger(__name__)

SCHEMA = """
CREATE TABLE IF NOT EXISTS hashes (type TEXT NOT NULL, id TEXT NOT NULL, hash TEXT NOT NULL,
                                   PRIMARY KEY (type, id)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS records (type TEXT NOT NULL, id TEXT NOT NULL, data BLOB NOT NULL,
                                    read_at REAL, PRIMARY KEY (type, id));
CREATE TABLE IF NOT EXISTS checkpoints (name TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS leases (name TEXT PRIMARY KEY, token TEXT NOT NULL, expires REAL NOT NULL,
                                   holder TEXT);
CREATE TABLE IF NOT EXISTS queue (id TEXT PRIMARY KEY, queue TEXT NOT NULL, body TEXT NOT NULL,
                                  inserted REAL NOT NULL, visible_at REAL NOT NULL,
                                  dequeue_count INTEGER NOT NULL DEFAULT 0, receipt TEXT);
CREATE INDEX IF NOT EXISTS queue_visible ON queue (queue, visible_at);
CREATE TABLE IF NOT EXISTS poison (id TEXT PRIMARY KEY, queue TEXT NOT NULL, body TEXT NOT NULL,
                                   dequeue_count INTEGER NOT NULL, moved REAL NOT NULL);
"""
IN_FLIGHT_READ = 1 << 20  # bytes read at a time from the in-flight notes
IN_CHUNK = 500  # ids per ``WHERE id IN (...)``: well under SQLite's limit of bound parameters
PAGE = 10_000   # rows per query when a whole type is streamed


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
            _add_missing_columns(self.conn)

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


# Columns added after the first release: a database created by it gains them on first open (NULL in old rows).
_LATER_COLUMNS = (("records", "read_at", "REAL"), ("leases", "holder", "TEXT"))


def _add_missing_columns(conn: sqlite3.Connection) -> None:
    for table, column, kind in _LATER_COLUMNS:
        if column not in {row[1] for row in conn.execute(f"PRAGMA table_info({table})")}:
            with contextlib.suppress(sqlite3.OperationalError):  # another process added it first
                conn.execute(f"ALTER TABLE {table} ADD COLUMN {column} {kind}")


def _this_holder() -> str:
    """Who holds a lease: host name and process id, so a process on the same host can tell a dead holder."""
    return f"{socket.gethostname()}:{os.getpid()}"


def _holder_dead(holder: str | None) -> bool:
    """True when ``holder`` is a process of this host that no longer runs (killed, crashed): its lease is free
    at once instead of after its ttl. A holder on another host, or one we cannot check, counts as alive."""
    host, _, pid = (holder or "").rpartition(":")
    if host != socket.gethostname() or not pid.isdigit():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except OSError:  # PermissionError: it exists, under another user
        return False
    return int(pid) != os.getpid() and _is_zombie(int(pid))


def _is_zombie(pid: int) -> bool:
    """A killed child that its parent has not reaped yet still answers ``kill(pid, 0)`` (Linux: state Z)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as stat:
            return stat.read().rsplit(b")", 1)[1].split()[0] == b"Z"
    except (OSError, IndexError):
        return False


class LocalLease:
    """A lease row (holder token + expiry) in ``state.db``; see ``shared.store.ports.Lease``."""

    def __init__(self, db: _Db, name: str, ttl: float):
        self._db, self.name, self.ttl = db, name, ttl
        self._token = uuid.uuid4().hex

    def __enter__(self) -> Self:
        """Acquire; raises ``LeaseBusy`` while another live holder's lease has not expired. The lease of a
        holder process on this host that has died is taken over at once (``_holder_dead``)."""
        with self._db.transaction() as conn:
            row = conn.execute("SELECT token, expires, holder FROM leases WHERE name=?", (self.name,)).fetchone()
            if row and row[0] != self._token and row[1] > time.time():
                if not _holder_dead(row[2]):
                    raise LeaseBusy(f"lease {self.name!r} is held by another process for {row[1] - time.time():.0f} s "
                                    "more", expires_in=row[1] - time.time())
                log.warning("lease %s: its holder (process %s) is gone; taking it over", self.name, row[2])
            conn.execute("INSERT INTO leases (name, token, expires, holder) VALUES (?, ?, ?, ?) ON CONFLICT(name) "
                         "DO UPDATE SET token=excluded.token, expires=excluded.expires, holder=excluded.holder",
                         (self.name, self._token, time.time() + self.ttl, _this_holder()))
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
    """``shared.store.ports.StateStore`` in ``home/state.db`` (hashes and records tables, see the module docstring).
    A ``commit`` is one transaction (fully atomic)."""

    def __init__(self, home: Path | str):
        self._db = _Db(home)
        self._in_flight = Path(home) / "in-flight.jsonl"

    def hashes(self, type_key: str) -> Iterator[tuple[str, str]]:
        """Pages of ``PAGE`` rows in id order (keyset paging): the lock is held per page, not while the caller
        works. A commit between two pages shows in the later ones only, as if those ids had been read later."""
        after = ""
        while rows := self._db.query("SELECT id, hash FROM hashes WHERE type=? AND id>? ORDER BY id LIMIT ?",
                                     (type_key, after, PAGE)):
            yield from rows
            after = rows[-1][0]

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

    def read_times(self, type_key: str, ids: Iterable[str]) -> dict[str, float]:
        wanted = list(dict.fromkeys(ids))
        found: dict[str, float] = {}
        for start in range(0, len(wanted), IN_CHUNK):
            chunk = wanted[start:start + IN_CHUNK]
            found.update(self._db.query(f"SELECT id, read_at FROM records WHERE type=? AND read_at IS NOT NULL AND id IN "
                                        f"({','.join('?' * len(chunk))})", (type_key, *chunk)))
        return found

    def checkpoint(self, name: str) -> str | None:
        rows = self._db.query("SELECT value FROM checkpoints WHERE name=?", (name,))
        return rows[0][0] if rows else None

    def commit(self, hashes: dict[str, dict[str, str]], checkpoints: dict[str, str | None],
               records: dict[str, dict[str, dict]] | None = None,
               read: dict[str, dict[str, float]] | None = None) -> None:
        read = read or {}
        with self._db.transaction() as conn:
            # Rows go in in key order: SQLite then appends to its B-trees instead of splitting pages all over
            # them (random ids: ~40% more CPU for a 100,000-user commit).
            for type_key, by_id in (records or {}).items():
                times = read.get(type_key, {})
                conn.executemany("INSERT INTO records (type, id, data, read_at) VALUES (?, ?, ?, ?) ON CONFLICT "
                                 "(type, id) DO UPDATE SET data=excluded.data, read_at=COALESCE(excluded.read_at, read_at)",
                                 ((type_key, id_, orjson.dumps(by_id[id_]), times.get(id_)) for id_ in sorted(by_id)))
            for type_key, times in read.items():  # read times alone: objects read again and found unchanged
                pushed = (records or {}).get(type_key, {})
                conn.executemany("UPDATE records SET read_at=MAX(COALESCE(read_at, ?), ?) WHERE type=? AND id=?",
                                 ((when, when, type_key, id_) for id_, when in times.items() if id_ not in pushed))
            for type_key, by_id in hashes.items():
                conn.executemany("INSERT OR REPLACE INTO hashes (type, id, hash) VALUES (?, ?, ?)",
                                 ((type_key, id_, by_id[id_]) for id_ in sorted(by_id)))
            for name, value in checkpoints.items():
                if value is None:
                    conn.execute("DELETE FROM checkpoints WHERE name=?", (name,))
                else:
                    conn.execute("INSERT OR REPLACE INTO checkpoints (name, value) VALUES (?, ?)", (name, value))

    def note_in_flight(self, records: dict[str, dict[str, bytes]]) -> None:
        """Appended to ``home/in-flight.jsonl`` (lines as in ``shared.store.ports.in_flight_lines``): one write(2)
        per chunk, which a killed process cannot lose - a SQLite transaction per chunk cost ~1 s of CPU per
        100,000 users."""
        with open(self._in_flight, "ab") as f:
            f.write(in_flight_lines(records))

    def in_flight(self) -> Iterator[tuple[str, str, bytes]]:
        try:
            file = open(self._in_flight, "rb")  # noqa: SIM115 - closed below, once the lines are read
        except FileNotFoundError:
            return
        with file:
            yield from parse_in_flight(iter(lambda: file.read(IN_FLIGHT_READ), b""))

    def clear_in_flight(self) -> None:
        self._in_flight.unlink(missing_ok=True)

    def lease(self, name: str, ttl: float) -> LocalLease:
        return LocalLease(self._db, name, ttl)


class LocalQueue:
    """``shared.store.ports.ChangeQueue`` as rows of ``home/state.db`` (several queues share the table by name)."""

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
    """``shared.store.ports.PayloadStore`` as JSON-lines files under ``home/payloads/``, written to a temporary name and
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
        temp = path.with_name(f".{path.name}.{uuid.uuid4().hex}{_UNFINISHED}")
        try:
            # Plain JSON lines: a payload lives minutes on a local disk, and even gzip level 1 cost ~1 s of CPU
            # per 100,000 users (write and read, profiled) to save disk space nobody needs back.
            with open(temp, "wb") as f:
                _lock(f, blocking=True)  # while this writer lives, ``sweep`` leaves the file alone
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
        path = self._path(name)
        path.unlink(missing_ok=True)
        if path.parent != self.root.resolve():  # a staged run's folder goes with its last part
            with contextlib.suppress(OSError):  # not empty yet, or already gone
                path.parent.rmdir()

    def sweep(self, before: float) -> int:
        """Payload files, and the ``.<name>.<random>.tmp`` files of writers killed mid-write, by mtime. A
        ``.tmp`` file is skipped while its writer lives: it holds an exclusive lock on it (``fcntl.flock``,
        released by the kernel when the process dies; without fcntl, as on Windows, only by mtime)."""
        swept = 0
        for path in self.root.rglob("*") if self.root.is_dir() else ():
            with contextlib.suppress(FileNotFoundError):  # a concurrent sweep or delete took it
                if not path.is_file() or path.stat().st_mtime >= before:
                    continue
                if path.name.endswith(_UNFINISHED):
                    with open(path, "rb") as f:
                        if not _lock(f, blocking=False):
                            continue
                path.unlink()
                swept += 1
        return swept


_UNFINISHED = ".tmp"


def _lock(file, blocking: bool) -> bool:
    """An exclusive advisory lock on ``file``; False when another process holds one (non-blocking)."""
    if fcntl is None:
        return True
    try:
        fcntl.flock(file.fileno(), fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
    except BlockingIOError:
        return False
    return True
