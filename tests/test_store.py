"""One contract (shared/store/ports.py) checked against both stores: the embedded one and Azure Storage (Azurite)."""
from __future__ import annotations

import base64
import gzip
import json
import sqlite3
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pytest
from azure.storage.blob import ContainerClient
from azure.storage.queue import QueueClient

from shared.store import azure as store_azure
from shared.store.azure import AzureLease, AzurePayloadStore, AzureQueue, AzureStateStore, azure_clients
from shared.store.local import LocalPayloadStore, LocalQueue, LocalStateStore
from shared.store.ports import (
    RAW_MESSAGE_LIMIT,
    LeaseBusy,
    QueueDepth,
    in_flight_lines,
    parse_in_flight,
    shard_of,
)


@dataclass
class Stores:
    kind: str
    state: Any
    queue: Any
    payloads: Any
    location: Any          # home (local) or (connection string, container, queue name) (azure)

    def reopen(self) -> Stores:
        """The same store as another process would open it."""
        if self.kind == "local":
            return _local(self.location)
        return _azure(*self.location)


def _local(home: Path) -> Stores:
    return Stores("local", LocalStateStore(home), LocalQueue(home, "changes"), LocalPayloadStore(home), home)


def _azure(connection_string: str, container_name: str, queue_name: str) -> Stores:
    container, queue, poison = azure_clients(connection_string, queue_name=queue_name,
                                             container_name=container_name)
    return Stores("azure", AzureStateStore(container), AzureQueue(queue, poison), AzurePayloadStore(container),
                  (connection_string, container_name, queue_name))


@pytest.fixture
def azure(azurite) -> Stores:
    """Azure Storage on Azurite, in a container and a queue of its own."""
    suffix = uuid.uuid4().hex[:12]
    return _azure(azurite.connection_string, f"c{suffix}", f"q{suffix}")


@pytest.fixture(params=["local", "azure"])
def stores(request, tmp_path) -> Stores:
    if request.param == "local":
        return _local(tmp_path / "home")
    return request.getfixturevalue("azure")


# --- state: hashes and checkpoints --------------------------------------------------------------------------

def test_hashes_merge_per_type_and_never_remove(stores):
    assert dict(stores.state.hashes("user")) == {}
    stores.state.commit({"user": {"a": "1", "b": "2"}, "group": {"g": "9"}}, {})
    stores.state.commit({"user": {"b": "3", "c": "4"}}, {})
    stores.state.commit({"user": {}}, {})
    other = stores.reopen().state
    assert dict(other.hashes("user")) == {"a": "1", "b": "3", "c": "4"}
    assert dict(other.hashes("group")) == {"g": "9"}
    assert dict(other.hashes("department")) == {}


def test_hundred_thousand_hashes_round_trip(stores):
    many = {f"{uuid.UUID(int=i)}": f"{i:016x}" for i in range(100_000)}
    stores.state.commit({"user": many}, {"delta/users": "link"})
    assert dict(stores.reopen().state.hashes("user")) == many
    stores.state.commit({"user": {"extra": "x"}}, {})
    assert dict(stores.state.hashes("user")) == {**many, "extra": "x"}


def test_checkpoints_set_overwrite_and_delete_by_none(stores):
    state = stores.state
    assert state.checkpoint("delta/users") is None
    state.commit({}, {"delta/users": "https://graph/delta?token=1", "names": "{}"})
    state.commit({}, {"delta/users": "https://graph/delta?token=2"})
    assert stores.reopen().state.checkpoint("delta/users") == "https://graph/delta?token=2"
    state.commit({}, {"delta/users": None, "never-set": None})
    assert state.checkpoint("delta/users") is None and state.checkpoint("never-set") is None
    assert state.checkpoint("names") == "{}"
    state.commit({}, {"unicode": "Zoë ✓"})
    assert state.checkpoint("unicode") == "Zoë ✓"


def test_concurrent_commits_lose_no_hashes(stores):
    errors = []

    def commit(n: int) -> None:
        try:
            stores.reopen().state.commit({"user": {f"{n}-{i}": str(n) for i in range(50)}}, {},
                                         {"user": {f"{n}-{i}": {"n": n, "i": i} for i in range(50)}})
        except Exception as err:  # noqa: BLE001 - reported below
            errors.append(err)

    threads = [threading.Thread(target=commit, args=(n,)) for n in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert len(dict(stores.state.hashes("user"))) == 6 * 50
    ids = [f"{n}-{i}" for n in range(6) for i in range(50)]
    assert stores.state.records("user", ids) == {f"{n}-{i}": {"n": n, "i": i} for n in range(6) for i in range(50)}


# --- state: data of the pushed records ----------------------------------------------------------------------

def _user(i: int) -> dict:
    return {"name": f"Zoë Ünïcødé {i} ✓", "mail": f"user{i}@example.com", "department": f"Dept {i % 37}",
            "manager": None, "enabled": i % 2 == 0, "licenses": ["E3", "Teams"][: i % 3]}


def test_records_round_trip_and_merge_keeps_untouched_ids(stores):
    state = stores.state
    assert state.records("user", ["a"]) == {} and state.records("user", []) == {}
    odd = 'we"ird\\id ✓'                                        # needs escaping inside the JSON line
    state.commit({"user": {"a": "1", "b": "2", odd: "3"}}, {},
                 {"user": {"a": _user(1), "b": _user(2), odd: {"name": "odd"}}, "group": {"g": {"members": []}}})
    state.commit({"user": {"b": "4", "c": "5"}}, {"cp": "x"},
                 {"user": {"b": {"name": "B2"}, "c": orjson.Fragment(b'{"name":"C","n":[1,2]}')}})
    state.commit({"user": {"d": "6"}}, {})                       # the old call form: data untouched
    state.commit({}, {}, {"user": {}})
    other = stores.reopen().state
    assert other.records("user", ["a", "b", "c", odd, "d", "unknown"]) == {
        "a": _user(1), "b": {"name": "B2"}, "c": {"name": "C", "n": [1, 2]}, odd: {"name": "odd"}}
    assert other.records("user", iter(["c", "c", "nope"])) == {"c": {"name": "C", "n": [1, 2]}}   # any iterable
    assert other.records("group", ["g", "a"]) == {"g": {"members": []}}
    assert other.records("department", ["a"]) == {}
    assert dict(other.hashes("user")) == {"a": "1", "b": "4", "c": "5", odd: "3", "d": "6"}
    assert other.checkpoint("cp") == "x"


def test_read_times_are_stored_with_records_and_confirmations_only_move_them_forward(stores):
    state = stores.state
    state.commit({"user": {"a": "1", "b": "2"}}, {}, {"user": {"a": _user(1), "b": _user(2)}},
                 read={"user": {"a": 100.0, "b": 100.0}})
    state.commit({"user": {"a": "3"}}, {}, {"user": {"a": _user(3)}})            # no time given: keeps 100
    state.commit({}, {}, None, read={"user": {"b": 300.0, "nobody": 50.0}})        # read again, unchanged
    state.commit({}, {}, None, read={"user": {"b": 200.0}})                        # never backwards
    other = stores.reopen().state
    assert other.read_times("user", ["a", "b", "nobody", "c"]) == {"a": 100.0, "b": 300.0}
    assert other.records("user", ["a", "b"]) == {"a": _user(3), "b": _user(2)}   # data untouched by times


def _noted(records) -> dict[str, dict[str, bytes]]:
    """The (type, id, data) stream of ``in_flight``/``parse_in_flight`` by type and id, the later one winning."""
    found: dict[str, dict[str, bytes]] = {}
    for type_key, record_id, data in records:
        found.setdefault(type_key, {})[record_id] = data
    return found


def test_records_in_flight_are_appended_read_back_and_cleared(stores):
    state = stores.state
    assert list(state.in_flight()) == []
    huge = orjson.dumps({"members": [str(uuid.UUID(int=i)) for i in range(120_000)]})  # > one 4 MiB append
    state.note_in_flight({"user": {"a": b'{"n":1}', "b": b'{"n":2}'}})
    state.note_in_flight({"user": {"a": b'{"n":3}'}, "group": {"g": huge}})
    assert [(t, i) for t, i, _ in stores.reopen().state.in_flight()] == [("user", "a"), ("user", "b"),
                                                                         ("user", "a"), ("group", "g")]
    assert _noted(stores.reopen().state.in_flight()) == {"user": {"a": b'{"n":3}', "b": b'{"n":2}'},
                                                         "group": {"g": huge}}
    state.clear_in_flight()
    state.clear_in_flight()
    assert list(stores.reopen().state.in_flight()) == []


def test_a_torn_last_in_flight_line_is_left_out_and_lines_may_span_chunks():
    whole = in_flight_lines({"user": {"a": b'{"n":1}', "b": b'{"n":2}'}})
    assert _noted(parse_in_flight([whole])) == {"user": {"a": b'{"n":1}', "b": b'{"n":2}'}}
    assert _noted(parse_in_flight([whole[:-4]])) == {"user": {"a": b'{"n":1}'}}  # killed in the middle of a write
    assert _noted(parse_in_flight(whole[i:i + 1] for i in range(len(whole)))) == _noted(parse_in_flight([whole]))


def test_records_of_twenty_thousand_ids_unicode_and_a_huge_group(stores):
    users = {str(uuid.UUID(int=i)): _user(i) for i in range(20_000)}
    half = dict(list(users.items())[:10_000])
    stores.state.commit({"user": dict.fromkeys(half, "h")}, {}, {"user": half})
    stores.state.commit({"user": dict.fromkeys(users, "h")}, {}, {"user": users})   # merges over the first
    members = [str(uuid.UUID(int=10**9 + i)) for i in range(50_000)]
    stores.state.commit({"group": {"huge": "h"}}, {}, {"group": {"huge": {"name": "Ål ✓", "members": members}},
                                                       "user": {"extra": {"name": "日本語 😀"}}})
    state = stores.reopen().state
    unknown = [f"unknown-{i}" for i in range(500)]
    assert state.records("user", [*users, *unknown]) == {**users}
    subset = list(users)[5_000:5_300]
    assert state.records("user", subset) == {i: users[i] for i in subset}
    assert state.records("user", ["extra", *unknown]) == {"extra": {"name": "日本語 😀"}}
    assert state.records("group", ["huge"]) == {"huge": {"name": "Ål ✓", "members": members}}


def test_local_db_from_before_records_is_migrated(tmp_path):
    with sqlite3.connect(tmp_path / "state.db") as conn:   # the schema as it was, with hashes in it
        conn.executescript("""
            CREATE TABLE hashes (type TEXT NOT NULL, id TEXT NOT NULL, hash TEXT NOT NULL,
                                 PRIMARY KEY (type, id)) WITHOUT ROWID;
            CREATE TABLE checkpoints (name TEXT PRIMARY KEY, value TEXT NOT NULL);
            INSERT INTO hashes VALUES ('user', 'a', '1'), ('user', 'b', '2');
            INSERT INTO checkpoints VALUES ('delta/users', 'link');""")
    conn.close()
    state = LocalStateStore(tmp_path)
    assert dict(state.hashes("user")) == {"a": "1", "b": "2"} and state.checkpoint("delta/users") == "link"
    assert state.records("user", ["a", "b"]) == {}
    state.commit({"user": {"b": "3"}}, {}, {"user": {"b": {"name": "B"}}})
    again = LocalStateStore(tmp_path)
    assert dict(again.hashes("user")) == {"a": "1", "b": "3"}
    assert again.records("user", ["a", "b"]) == {"b": {"name": "B"}}


def test_azure_records_blob_is_gzip_json_lines_in_the_shard_of_its_id(azure):
    azure.state.commit({}, {}, {"user": {"a": {"name": "Zoë"}, "b": {}}})
    container = azure_clients(azure.location[0], queue_name=azure.location[2], container_name=azure.location[1])[0]
    lines = []
    for record_id in ("a", "b"):
        raw = container.get_blob_client(f"state/records/user/{shard_of(record_id):02d}.jsonl.gz").download_blob()
        lines += [json.loads(line) for line in gzip.decompress(raw.readall()).decode().splitlines()]
    assert sorted({line["id"] for line in lines}) == ["a", "b"] and len(lines) == 2 - (shard_of("a") == shard_of("b"))
    assert {line["id"]: line["d"] for line in lines} == {"a": {"name": "Zoë"}, "b": {}}


def test_azure_state_of_an_unsharded_release_is_read_under_the_shards(azure):
    """What a release before the shards wrote (one blob per type) still counts: its hashes and records are read,
    and a commit, which goes to the shards, wins over them without rewriting that blob."""
    container = azure_clients(azure.location[0], queue_name=azure.location[2], container_name=azure.location[1])[0]
    old = container.get_blob_client("state/hashes/user.json.gz")
    old.upload_blob(gzip.compress(json.dumps({"a": "1", "b": "2"}).encode()))
    container.get_blob_client("state/records/user.jsonl.gz").upload_blob(gzip.compress(
        b'{"id":"a","t":5.0,"d":{"name":"A"}}\n{"id":"b","t":5.0,"d":{"name":"B"}}\n'))
    state = AzureStateStore(container)
    assert dict(state.hashes("user")) == {"a": "1", "b": "2"}
    assert state.records("user", ["a", "b"]) == {"a": {"name": "A"}, "b": {"name": "B"}}
    state.commit({"user": {"b": "3"}}, {}, {"user": {"b": {"name": "B2"}}}, {"user": {"b": 9.0}})
    for again in (state, AzureStateStore(container)):
        assert dict(again.hashes("user")) == {"a": "1", "b": "3"}
        assert again.records("user", ["a", "b"]) == {"a": {"name": "A"}, "b": {"name": "B2"}}
        assert again.read_times("user", ["a", "b"]) == {"a": 5.0, "b": 9.0}
    assert json.loads(gzip.decompress(old.download_blob().readall())) == {"a": "1", "b": "2"}  # never written


def test_azure_commit_writes_records_before_hashes(azure, monkeypatch):
    def crash(*args):
        raise ConnectionError("died between records and hashes")

    monkeypatch.setattr(AzureStateStore, "_merge", crash)
    with pytest.raises(ConnectionError):
        azure.state.commit({"user": {"a": "1"}}, {"cp": "x"}, {"user": {"a": {"name": "A"}}})
    monkeypatch.undo()
    assert azure.state.records("user", ["a"]) == {"a": {"name": "A"}}   # data without a hash: only a re-push
    assert dict(azure.state.hashes("user")) == {} and azure.state.checkpoint("cp") is None


def _small_blocks(azure, monkeypatch) -> AzureStateStore:
    """A state store whose blobs span many blocks and download chunks."""
    monkeypatch.setattr(store_azure, "BLOCK_BYTES", 4 * 1024)
    connection_string, container_name, _ = azure.location
    return AzureStateStore(ContainerClient.from_connection_string(
        connection_string, container_name, max_single_get_size=4 * 1024, max_chunk_get_size=4 * 1024))


def test_azure_concurrent_record_merges_keep_both(azure, monkeypatch):
    """The first committer is held after reading the old blob until the second has committed: its replace must
    fail on the ETag and be redone over the second's records."""
    state = _small_blocks(azure, monkeypatch)
    state.commit({}, {}, {"user": {f"old-{i}": _user(i) for i in range(300)}})
    second_done = threading.Event()
    merges = {"first": 0}
    real_merged = store_azure._merged

    def held_merged(lines, by_id, read):
        if "first-0" in by_id:
            merges["first"] += 1
            if merges["first"] == 1:
                assert second_done.wait(20)
        return real_merged(lines, by_id, read)

    monkeypatch.setattr(store_azure, "_merged", held_merged)
    first = {f"first-{i}": _user(i) for i in range(300)}
    second = {f"second-{i}": _user(i + 1) for i in range(300)}
    errors = []

    def commit(records: dict, done: threading.Event | None) -> None:
        try:
            AzureStateStore(state._container).commit({}, {}, {"user": records})
        except Exception as err:  # noqa: BLE001 - reported below
            errors.append(err)
        if done:
            done.set()

    threads = [threading.Thread(target=commit, args=(first, None)),
               threading.Thread(target=commit, args=(second, second_done))]
    threads[0].start()
    time.sleep(0.2)
    threads[1].start()
    for t in threads:
        t.join()
    assert errors == [] and merges["first"] == 2
    old = {f"old-{i}": _user(i) for i in range(300)}
    assert state.records("user", [*old, *first, *second]) == {**old, **first, **second}


def test_azure_records_read_again_when_replaced_meanwhile(azure, monkeypatch):
    state = _small_blocks(azure, monkeypatch)
    users = {f"u{i}": _user(i) for i in range(2_000)}
    state.commit({}, {}, {"user": users})
    real_inflate = store_azure._inflate_lines
    calls = []

    def inflate_then_commit(chunks):
        calls.append(1)
        for n, line in enumerate(real_inflate(chunks)):
            if len(calls) == 1 and n == 10:   # a committer replaces the blob during the first read
                AzureStateStore(state._container).commit({}, {}, {"user": {"u5": {"name": "new"}}})
            yield line

    monkeypatch.setattr(store_azure, "_inflate_lines", inflate_then_commit)
    assert state.records("user", ["u5", "u1999"]) == {"u5": {"name": "new"}, "u1999": users["u1999"]}
    assert len(calls) >= 3   # first read, the commit's merge, the second read


# --- leases -------------------------------------------------------------------------------------------------

def test_lease_is_exclusive_renewable_and_released(stores):
    rival = stores.reopen().state
    with stores.state.lease("writer/ab12", ttl=30) as lease:
        with pytest.raises(LeaseBusy):
            rival.lease("writer/ab12", ttl=30).__enter__()
        lease.renew()
        with rival.lease("writer/other", ttl=30):  # other names are independent
            pass
    with rival.lease("writer/ab12", ttl=30), pytest.raises(LeaseBusy):
        stores.state.lease("writer/ab12", ttl=30).__enter__()


def test_lost_lease_cannot_be_renewed_and_exit_does_not_raise(stores):
    first = stores.state.lease("writer/x", ttl=0.5).__enter__()
    if stores.kind == "local":
        time.sleep(0.6)              # expired: anyone may take it
    else:
        first.__exit__(None, None, None)  # Azure leases last 15 s at least; release instead of waiting
    second = stores.reopen().state.lease("writer/x", ttl=30).__enter__()
    with pytest.raises(LeaseBusy):
        first.renew()
    first.__exit__(None, None, None)  # logged, not raised
    with pytest.raises(LeaseBusy):    # and releasing the lost lease did not free the new holder's
        stores.state.lease("writer/x", ttl=30).__enter__()
    second.__exit__(None, None, None)


def test_local_lease_expires_by_itself(tmp_path):
    state = LocalStateStore(tmp_path)
    state.lease("writer/y", ttl=0.5).__enter__()  # holder "dies" without releasing
    with pytest.raises(LeaseBusy):
        LocalStateStore(tmp_path).lease("writer/y", ttl=0.5).__enter__()
    time.sleep(0.6)
    with LocalStateStore(tmp_path).lease("writer/y", ttl=0.5):
        pass


def test_azure_lease_duration_is_clamped_to_what_blob_leases_allow(azure):
    container = azure_clients(azure.location[0], queue_name=azure.location[2], container_name=azure.location[1])[0]
    assert AzureLease(container, "a", 0.5).duration == 15
    assert AzureLease(container, "a", 1800).duration == 60
    with azure.state.lease("writer/z", ttl=1):
        props = container.get_blob_client("leases/writer/z").get_blob_properties()
        assert props.lease.state == "leased" and props.lease.duration == "fixed"


# --- queue --------------------------------------------------------------------------------------------------

def test_queue_visibility_redelivery_delete_and_depth(stores):
    queue = stores.queue
    assert queue.depth() == QueueDepth(0, 0)
    queue.send({"kind": "records", "n": 1})
    queue.send({"kind": "records", "n": 2, "text": "Zoë ✓"})
    assert queue.depth().messages == 2
    first = queue.receive(max_messages=10, visibility_timeout=1)
    assert sorted(m.body["n"] for m in first) == [1, 2]
    assert [m.dequeue_count for m in first] == [1, 1]
    assert {m.body.get("text") for m in first} == {None, "Zoë ✓"}
    assert queue.receive(max_messages=10, visibility_timeout=1) == []   # invisible meanwhile
    assert queue.depth().messages == 2                                  # but still counted
    time.sleep(1.2)
    again = stores.reopen().queue.receive(max_messages=10, visibility_timeout=30)
    assert sorted(m.body["n"] for m in again) == [1, 2] and [m.dequeue_count for m in again] == [2, 2]
    for stale in first:                  # the old pop receipts no longer delete: someone else holds them
        queue.delete(stale)
    assert queue.depth().messages == 2
    queue.delete(again[0])
    queue.delete(again[0])               # idempotent
    assert queue.depth().messages == 1
    queue.delete(again[1])
    assert queue.depth() == QueueDepth(0, 0)


def test_queue_delay_and_max_messages(stores):
    queue = stores.queue
    queue.send({"n": 0}, delay=1)
    assert queue.receive(max_messages=5, visibility_timeout=30) == []
    for n in (1, 2, 3):
        queue.send({"n": n})
    got = queue.receive(max_messages=2, visibility_timeout=30)
    assert len(got) == 2 and {m.body["n"] for m in got} <= {1, 2, 3}
    time.sleep(1.2)
    rest = queue.receive(max_messages=5, visibility_timeout=30)
    assert sorted(m.body["n"] for m in got + rest) == [0, 1, 2, 3]


def test_host_delivered_message_is_left_to_the_host(stores):
    stores.queue.send({"n": 1})
    [message] = stores.queue.receive(max_messages=1, visibility_timeout=30)
    stores.queue.delete(type(message)(id=message.id, body=message.body, dequeue_count=1, receipt=None))
    assert stores.queue.depth().messages == 1


def _body_of_size(size: int) -> dict:
    body = {"kind": "records", "pad": ""}
    overhead = len(json.dumps(body, separators=(",", ":")).encode())
    body["pad"] = "é" * ((size - overhead) // 2) + "x" * ((size - overhead) % 2)
    assert len(json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode()) == size
    return body


def test_oversize_message_is_refused_and_the_largest_fits(stores):
    with pytest.raises(ValueError, match=f"{RAW_MESSAGE_LIMIT}-byte limit"):
        stores.queue.send(_body_of_size(RAW_MESSAGE_LIMIT + 1))
    assert stores.queue.depth().messages == 0
    largest = _body_of_size(RAW_MESSAGE_LIMIT)   # 64 KiB exactly once base64'd: the service accepts it
    stores.queue.send(largest)
    [message] = stores.queue.receive(max_messages=1, visibility_timeout=30)
    assert message.body == largest


def test_local_queue_poisons_after_five_deliveries(tmp_path):
    queue = LocalQueue(tmp_path, "changes")
    neighbour = LocalQueue(tmp_path, "other")
    queue.send({"kind": "broken"})
    for attempt in range(1, 6):
        [message] = queue.receive(max_messages=1, visibility_timeout=0)
        assert message.dequeue_count == attempt
    assert queue.receive(max_messages=1, visibility_timeout=0) == []
    assert queue.depth() == QueueDepth(messages=0, poison=1)
    assert neighbour.depth() == QueueDepth(0, 0)
    queue.send({"kind": "records"})                  # the poison no longer blocks anything
    [message] = queue.receive(max_messages=5, visibility_timeout=30)
    assert message.body == {"kind": "records"} and message.dequeue_count == 1


def test_azure_messages_are_base64_json_on_the_wire(azure):
    connection_string, _, queue_name = azure.location
    azure.queue.send({"kind": "records", "name": "Zoë"})
    raw = QueueClient.from_connection_string(connection_string, queue_name)   # no decode policy
    [peeked] = raw.peek_messages(max_messages=1)
    assert json.loads(base64.b64decode(peeked.content, validate=True)) == {"kind": "records", "name": "Zoë"}


def test_azure_undecodable_message_does_not_break_receive(azure):
    connection_string, _, queue_name = azure.location
    QueueClient.from_connection_string(connection_string, queue_name).send_message("not base64 {")
    azure.queue.send({"kind": "records"})
    bodies = [m.body for m in azure.queue.receive(max_messages=5, visibility_timeout=30)]
    assert {"kind": "records"} in bodies and {"_raw": "not base64 {"} in bodies


def test_azure_depth_counts_the_poison_queue_once_it_exists(azure):
    connection_string, _, queue_name = azure.location
    poison = QueueClient.from_connection_string(connection_string, f"{queue_name}-poison")
    poison.create_queue()
    poison.send_message("eyJhIjoxfQ==")
    assert azure.queue.depth() == QueueDepth(messages=0, poison=1)
    azure.reopen()   # creating the clients again is harmless
    assert azure.queue.depth() == QueueDepth(messages=0, poison=1)


# --- payloads -----------------------------------------------------------------------------------------------

def _lines(count: int) -> Iterator[bytes]:
    for i in range(count):
        yield json.dumps({"t": "user", "id": uuid.uuid4().hex, "d": {"Name": f"Zoë Ünïcødé {i} ✓"}},
                         ensure_ascii=False).encode()


def test_payload_round_trip_streams(stores):
    expected = list(_lines(20_000))
    stores.payloads.write("full-1.jsonl.gz", iter(expected))        # a generator, not a list
    reader = stores.reopen().payloads.read("full-1.jsonl.gz")
    assert next(reader) == expected[0]                               # lazily, line by line
    assert [expected[0], *reader] == expected
    stores.payloads.write("full-1.jsonl.gz", iter([b'{"a":1}']))     # replaces
    assert list(stores.payloads.read("full-1.jsonl.gz")) == [b'{"a":1}']
    stores.payloads.write("empty", iter([]))
    assert list(stores.payloads.read("empty")) == []


def test_azure_payload_spanning_blocks_and_chunks(azure, monkeypatch):
    monkeypatch.setattr(store_azure, "BLOCK_BYTES", 4 * 1024)
    monkeypatch.setattr(store_azure, "INFLATE_BYTES", 1000)
    connection_string, container_name, _ = azure.location
    container = ContainerClient.from_connection_string(connection_string, container_name,
                                                       max_single_get_size=8 * 1024, max_chunk_get_size=8 * 1024)
    payloads = AzurePayloadStore(container)
    expected = list(_lines(20_000))
    payloads.write("big", iter(expected))
    blocks = container.get_blob_client("payloads/big").get_block_list("committed")[0]
    assert len(blocks) > 5
    assert list(payloads.read("big")) == expected


def test_missing_payload_and_idempotent_delete(stores):
    missing = FileNotFoundError if stores.kind == "local" else LookupError
    with pytest.raises(missing):
        list(stores.payloads.read("gone"))
    stores.payloads.write("p", iter([b"{}"]))
    stores.payloads.delete("p")
    stores.payloads.delete("p")
    with pytest.raises(missing):
        next(stores.payloads.read("p"))


def test_local_payload_names_stay_inside_home(tmp_path):
    with pytest.raises(ValueError):
        LocalPayloadStore(tmp_path).write("../escape", iter([b"{}"]))
    assert not (tmp_path / "escape").exists()
