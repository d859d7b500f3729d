"""One contract (shared/store.py) checked against both stores: the embedded one and Azure Storage (Azurite)."""
from __future__ import annotations

import base64
import json
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from azure.storage.blob import ContainerClient
from azure.storage.queue import QueueClient

from shared import store_azure
from shared.store import RAW_MESSAGE_LIMIT, LeaseBusy, QueueDepth
from shared.store_azure import AzureLease, AzurePayloadStore, AzureQueue, AzureStateStore, azure_clients
from shared.store_local import LocalPayloadStore, LocalQueue, LocalStateStore


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
    assert stores.state.hashes("user") == {}
    stores.state.commit({"user": {"a": "1", "b": "2"}, "group": {"g": "9"}}, {})
    stores.state.commit({"user": {"b": "3", "c": "4"}}, {})
    stores.state.commit({"user": {}}, {})
    other = stores.reopen().state
    assert other.hashes("user") == {"a": "1", "b": "3", "c": "4"}
    assert other.hashes("group") == {"g": "9"}
    assert other.hashes("department") == {}


def test_hundred_thousand_hashes_round_trip(stores):
    many = {f"{uuid.UUID(int=i)}": f"{i:016x}" for i in range(100_000)}
    stores.state.commit({"user": many}, {"delta/users": "link"})
    assert stores.reopen().state.hashes("user") == many
    stores.state.commit({"user": {"extra": "x"}}, {})
    assert stores.state.hashes("user") == {**many, "extra": "x"}


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
            stores.reopen().state.commit({"user": {f"{n}-{i}": str(n) for i in range(50)}}, {})
        except Exception as err:  # noqa: BLE001 - reported below
            errors.append(err)

    threads = [threading.Thread(target=commit, args=(n,)) for n in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert len(stores.state.hashes("user")) == 6 * 50


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
    monkeypatch.setattr(store_azure, "BLOCK_BYTES", 16 * 1024)
    monkeypatch.setattr(store_azure, "INFLATE_BYTES", 1000)
    connection_string, container_name, _ = azure.location
    container = ContainerClient.from_connection_string(connection_string, container_name,
                                                       max_single_get_size=8 * 1024, max_chunk_get_size=8 * 1024)
    payloads = AzurePayloadStore(container)
    expected = list(_lines(5_000))
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
