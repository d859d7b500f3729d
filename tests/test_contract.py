"""The producer/worker contract (shared/contract/): messages round-trip through their JSON, what earlier
producers queued still parses, anything else is refused; the payload line codec; the checkpoint merge."""
from __future__ import annotations

import pytest

from shared.contract.checkpoints import GROUPS_DELTA, JIRA_LOOKUPS, NAMES, merge_checkpoint
from shared.contract.messages import (
    MESSAGE_VERSION,
    CatchUpMessage,
    ChangesMessage,
    InvalidMessage,
    LifecycleMessage,
    NotifiedChange,
    RecordsMessage,
    changes_messages,
    parse_message,
)
from shared.contract.payload import Line, checkpoints_line, parse_lines, record_line
from shared.store.ports import RAW_MESSAGE_LIMIT, encode_message

MESSAGES = [
    RecordsMessage("full-1.jsonl", 100.5, ("user", "group"), "run-1", 7, "timer", {"read": {"user": 3}}, "c" * 16),
    ChangesMessage((NotifiedChange("users", "u1", "deleted"), NotifiedChange("groups", "g1")), 101.0, attempt=1),
    LifecycleMessage("reauthorizationRequired", "sub-1", 102.0, "users"),
    CatchUpMessage(103.0, "cli"),
]


@pytest.mark.parametrize("message", MESSAGES, ids=lambda m: m.KIND)
def test_every_message_round_trips_through_its_json(message):
    body = message.body()
    assert body["v"] == MESSAGE_VERSION and body["kind"] == message.KIND
    assert parse_message(body) == message
    assert parse_message(body).read_time == [100.5, 101.0, 102.0, 103.0][MESSAGES.index(message)]


def test_what_earlier_producers_queued_still_parses():
    # Before the contract: records without "types", changes timed by "created", lifecycle without a time.
    records = parse_message({"v": 1, "kind": "records", "payload": "p.jsonl", "created": 5.0})
    assert records == RecordsMessage("p.jsonl", 5.0) and records.types == ()
    changes = parse_message({"v": 1, "kind": "changes", "trigger": "webhook", "created": 6.0,
                             "changes": [{"r": "users", "id": "u1"}]})
    assert changes.read_time == 6.0 and changes.changes == (NotifiedChange("users", "u1", "updated"),)
    assert parse_message({"kind": "lifecycle", "event": "missed"}).read_time == 0.0  # oldest: never overtakes


@pytest.mark.parametrize("body, why", [
    ("text", "not a JSON object"),
    ({"v": 2, "kind": "records", "payload": "p"}, "message version 2"),
    ({"v": 1, "kind": "other"}, "unknown message kind"),
    ({"v": 1, "kind": "records"}, "without a payload"),
    ({"v": 1, "kind": "changes", "changes": [{"r": "devices", "id": "d1"}]}, "malformed change"),
    ({"v": 1, "kind": "changes", "changes": [{"r": "users", "id": ""}]}, "malformed change"),
    ({"v": 1, "kind": "changes"}, "without its list"),
    ({"v": 1, "kind": "lifecycle"}, "without its event"),
])
def test_anything_else_is_refused_saying_why(body, why):
    with pytest.raises(InvalidMessage, match=why):
        parse_message(body)


def test_changes_are_split_under_the_queue_limit_in_order():
    changes = {("users", f"{n:036d}"): "updated" for n in range(3000)}
    messages = changes_messages(changes, 1.0, cid="c" * 16, attempt=2)
    assert len(messages) > 1 and all(m.attempt == 2 and m.cid == "c" * 16 for m in messages)
    assert all(len(encode_message(m.body()).encode()) <= RAW_MESSAGE_LIMIT for m in messages)
    assert [(c.resource, c.id) for m in messages for c in m.changes] == list(changes)
    assert changes_messages({}, 1.0) == []


def test_payload_lines_round_trip_and_the_data_stays_unparsed():
    data = b'{"Name":"A\\tB","Groups":["g1"]}'
    lines = [record_line("user", "u1", "h1", data), checkpoints_line({GROUPS_DELTA: "link"})]
    checkpoints: dict = {}
    assert list(parse_lines(lines, 9.0, checkpoints)) == [Line("user", "u1", "h1", data, 9.0)]
    assert checkpoints == {GROUPS_DELTA: "link"}
    assert list(parse_lines(lines, 9.0, None)) == [Line("user", "u1", "h1", data, 9.0)]


def test_checkpoints_merge_per_kind():
    assert merge_checkpoint(GROUPS_DELTA, "old-link", "new-link") == "new-link"
    assert merge_checkpoint(GROUPS_DELTA, "old-link", None) == "old-link"
    assert merge_checkpoint(NAMES, '{"department":{"a":"A","b":"B"}}', '{"department":{"b":"B2"}}') == \
        '{"department":{"a":"A","b":"B2"}}'
    assert merge_checkpoint(JIRA_LOOKUPS, '["u1","u3"]', '["u2"]') == '["u1","u2","u3"]'
