"""What an execution sent, spooled to disk by id shard until the commit (``shared.deliver.outgoing``)."""
from __future__ import annotations

import os
import tempfile
import time

import orjson

from shared.contract.payload import Line
from shared.deliver.outgoing import STALE_SPOOL_SECONDS, Outgoing
from shared.store.ports import shard_of


def _line(type_key: str, record_id: str, digest: str, read: float) -> Line:
    return Line(type_key, record_id, digest, orjson.dumps({"id": record_id, "v": digest}), read)


def _committed(pushed: Outgoing) -> tuple[dict, dict, dict, list[set[int]]]:
    hashes, records, read, shards = {}, {}, {}, []
    for batch in pushed.batches():
        shards.append({shard_of(i) for by_id in batch.read.values() for i in by_id})
        for into, part in ((hashes, batch.hashes), (records, batch.records), (read, batch.read)):
            for type_key, by_id in part.items():
                into.setdefault(type_key, {}).update(by_id)
    return hashes, records, read, shards


def test_batches_hold_one_shard_each_and_the_later_send_of_an_id_wins():
    with Outgoing() as pushed:
        for i in range(200):
            pushed.add(_line("user", f"u{i}", "h1", 10.0))
        pushed.add(_line("user", "u7", "h2", 11.0))            # sent again, later: this one is committed
        pushed.add(_line("group", "g1", "g", 10.0))
        hashes, records, read, shards = _committed(pushed)
    assert all(len(s) == 1 for s in shards) and len({next(iter(s)) for s in shards}) == len(shards) > 1
    assert len(hashes["user"]) == 200 and hashes["user"]["u7"] == "h2" and read["user"]["u7"] == 11.0
    assert orjson.loads(orjson.dumps(records["user"]["u7"])) == {"id": "u7", "v": "h2"}
    assert hashes["group"] == {"g1": "g"} and pushed.sent == {"user": 201, "group": 1}
    assert pushed.newest_read() == {"user": 11.0, "group": 10.0}


def test_a_failed_type_is_not_committed_and_confirmed_ids_keep_a_sent_time():
    with Outgoing() as pushed:
        pushed.add(_line("user", "u1", "h", 10.0))
        pushed.add(_line("group", "g1", "g", 10.0))
        pushed.drop("group")                                    # Assets reported errors for Group
        pushed.confirm({"user": {"u1", "u2"}, "group": {"g2"}}, 20.0)
        hashes, _, read, _ = _committed(pushed)
        assert hashes == {"user": {"u1": "h"}} and read == {"user": {"u1": 10.0, "u2": 20.0}}
        assert pushed.read_times("user", ["u1", "u2", "u3"]) == {"u1": 10.0, "u2": 20.0}
        assert pushed.read_times("group", ["g1", "g2"]) == {}
        assert pushed.newest_read() == {"user": 20.0} and pushed.failed == {"group"}


def test_records_of_a_type_and_the_spool_is_removed_on_close():
    pushed = Outgoing()
    pushed.add(_line("user", "u1", "a", 1.0))
    pushed.add(_line("device", "d1", "b", 1.0))
    pushed.add(_line("user", "u1", "c", 2.0))
    assert [(i, orjson.loads(d)["v"]) for i, d in pushed.records_of("user")] == [("u1", "a"), ("u1", "c")]
    spool = pushed._dir
    assert any(spool.iterdir())
    pushed.close()
    assert not spool.exists()


def test_a_spool_a_killed_worker_left_is_swept_and_a_live_one_kept(tmp_path, monkeypatch):
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    with Outgoing() as live:
        live.add(_line("user", "u1", "h", 1.0))
        dead = Outgoing()                                        # its worker is killed: never closed
        dead.add(_line("user", "u2", "h", 1.0))
        for file in dead._files.values():                        # its files closed by its death
            file.close()
        dead._files.clear()
        old = time.time() - STALE_SPOOL_SECONDS - 60
        for path in (dead._dir, *dead._dir.iterdir()):
            os.utime(path, (old, old))
        with Outgoing():
            assert not dead._dir.exists() and live._dir.exists()
        assert [orjson.loads(d)["id"] for _, d in live.records_of("user")] == ["u1"]


def test_an_exported_spool_restores_into_another_as_it_was_sent():
    """What a hand-on carries to the next invocation (``export``, ``restore``): the same commit, confirmed read
    times included; the restored records are not counted as sent again."""
    with Outgoing() as first, Outgoing() as second:
        for i in range(50):
            first.add(_line("user", f"u{i}", "h1", 10.0))
        first.add(_line("user", "u3", "h2", 12.0))
        first.confirm({"user": {"u99", "u3"}, "group": set()}, 11.0)
        second.restore(first.export())
        second.add(_line("group", "g1", "g", 13.0))  # what the second invocation sent itself
        hashes, records, read, _ = _committed(second)
        assert orjson.loads(orjson.dumps(records["user"]["u3"])) == {"id": "u3", "v": "h2"}
        assert hashes["user"] == _committed(first)[0]["user"] and hashes["group"] == {"g1": "g"}
        assert read["user"]["u99"] == 11.0 and read["user"]["u3"] == 12.0  # sent beats confirmed
        assert second.sent == {"group": 1} and second.newest_read() == {"user": 12.0, "group": 13.0}
