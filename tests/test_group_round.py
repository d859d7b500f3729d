"""Merging a /groups/delta round (``shared.produce.plan.merge_group_round``): members@delta slices of one group
spread over the round, the last word on a member winning (reference/graph.md §2.5)."""
from __future__ import annotations

from shared.produce.plan import merge_group_round

USER, GROUP = "#microsoft.graph.user", "#microsoft.graph.group"


def _member(mid: str, odata_type: str = USER, removed: bool = False) -> dict:
    return {"@odata.type": odata_type, "id": mid} | ({"@removed": {"reason": "deleted"}} if removed else {})


def test_slices_anywhere_in_the_round_merge_and_the_last_word_on_a_member_wins():
    entries = [
        {"id": "g1", "displayName": "One", "members@delta": [_member("u1"), _member("u2"), _member("g9", GROUP)]},
        {"id": "g2", "displayName": "Two", "members@delta": [_member("u1")]},
        {"id": "g1", "members@delta": [_member("u2", removed=True), _member("u3")]},   # the same group, later
        {"id": "g1", "description": "d", "members@delta": [_member("u4", removed=True), _member("u1")]},
        {"id": "g2", "members@delta": [_member("u1", removed=True)]},
        {"id": "g2", "members@delta": [_member("u1")]},                                # removed, then added again
    ]
    with merge_group_round(entries) as merged:
        assert merged.groups == {"g1": {"id": "g1", "displayName": "One", "description": "d"},
                                 "g2": {"id": "g2", "displayName": "Two"}}
        assert dict(merged.members("g1")) == {"u1": "user", "u3": "user", "g9": "group"}
        assert merged.removed("g1") == {"u2", "u4"}
        assert [mid for mid, _ in merged.members("g1")] == ["g9", "u1", "u3"]  # in id order, streamed
        assert merged.has_group_member("g1") and not merged.has_group_member("g2")
        assert dict(merged.members("g2")) == {"u1": "user"} and merged.removed("g2") == set()
        assert dict(merged.members("unknown")) == {} and merged.removed("unknown") == set()


def test_a_removed_group_forgets_what_the_round_said_and_a_later_entry_starts_it_afresh():
    entries = [
        {"id": "g1", "displayName": "Old", "members@delta": [_member("u1"), _member("u2", removed=True)]},
        {"id": "g1", "@removed": {"reason": "deleted"}},
    ]
    with merge_group_round(entries) as merged:
        assert merged.groups["g1"] == {"id": "g1", "@removed": {"reason": "deleted"}}
        assert dict(merged.members("g1")) == {} and merged.removed("g1") == set()
    with merge_group_round([*entries, {"id": "g1", "displayName": "New", "members@delta": [_member("u3")]}]) as again:
        assert again.groups["g1"] == {"id": "g1", "displayName": "New"} and dict(again.members("g1")) == {"u3": "user"}


def test_a_group_of_200000_members_over_20_pages_reads_back_whole():
    """The round's members live in its temporary database: a big group merges across its pages and reads back."""
    members = [_member(f"u{i:06d}") for i in range(200_000)]
    pages = [{"id": "all", "members@delta": members[i:i + 10_000]} for i in range(0, len(members), 10_000)]
    with merge_group_round(pages) as merged:
        assert len(dict(merged.members("all"))) == 200_000
