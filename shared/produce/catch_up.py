"""Incremental catch-up: run the stored delta links of users and groups once for everything queued.

Microsoft's pattern for change notifications is "notification → run the stored delta link" (reference/graph.md
§2.8). One round returns every change since the link - however many notifications pointed at it - with
``@removed`` for deletions and ``manager@delta`` / ``members@delta`` for relationships. So a burst of N
notifications costs one round of O(changes) requests, where reading the N ids one by one would cost N requests
(20 per ``$batch``) and still miss a deletion whose notification never came. That is why the worker uses the
delta link, and why the timer runs the same catch-up on every tick as the safety net.

What a round yields, compared with a full run:
- changed users and groups, mapped and compared with the stored hashes like a full run; a relationship the
  round does not mention (no ``manager@delta`` key; ``members@delta`` listing only additions and removals) is
  taken from the data last pushed, since Graph sends relationship changes only when they change;
- ``@removed`` objects (and users that left the scope) as departures (``Status = Deleted``), held back by the
  same ``MAX_DEACTIVATIONS`` guard - a held-back departure is found again by the next full run;
- derived objects (departments, locations ...) only when a changed user names a new one: their aggregates
  (the most common company of a department ...) need every user, so the full run keeps them current;
- with Jira linking on, users whose account lookup is pending or due, looked up with the searches the round
  left (``AccountLinker.sweep``, SPEC §5): their last pushed record with the new account, where it changed.
Devices and applications have no change notifications (SPEC §1); full runs keep them current.

An expired or missing delta link (410, ``syncStateNotFound``) starts a fresh round for that resource: the
full-run planner for users or groups alone, departures included - nothing is lost, only re-read.
"""
from __future__ import annotations

import dataclasses
import itertools
import logging
from collections import defaultdict
from collections.abc import Iterator

import orjson

from shared.contract.checkpoints import GROUPS_DELTA, NAMES, USERS_DELTA
from shared.errors import DeltaExpired, ForeignLink, GraphPermissionError, RemoteError
from shared.produce.full import (
    Change,
    FullRunResult,
    Planner,
    Progress,
    RunOptions,
    Scope,
    directory_links,
    object_type_of,
)
from shared.records.build import Record, deactivated, is_deactivated, map_group, map_user
from shared.records.derived import Derived

log = logging.getLogger(__name__)

BATCH = 500  # objects of a round mapped together (one state lookup of their last pushed data)


class _CatchUp(Planner):
    """Plans the changes since the stored delta links. ``changes()`` yields; ``checkpoints`` fills."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        if self.linker:  # planned in the worker, under its lease: a catch-up's short lookup budget
            self.linker.for_catch_up()

    def changes(self) -> Iterator[Change]:
        """Each resource's round (a fresh one where the stored link expired), then the departures they found.
        A resource that cannot be read fails alone, as in a full run (``Planner.changes``)."""
        departures: list[Change] = []
        for key, link_name, round_of in (("user", USERS_DELTA, self._user_round),
                                         ("group", GROUPS_DELTA, self._group_round)):
            if key not in self.options.object_types:
                continue
            link = self.state.checkpoint(link_name)
            try:
                try:
                    if link is None:
                        raise DeltaExpired(f"no stored delta link for {key}s yet")
                    yield from round_of(link, departures)
                except DeltaExpired as why:
                    log.warning("%s: starting a fresh %s round", why, key)
                    yield from self._fresh(key)
            except ForeignLink:  # a link off GRAPH_BASE_URL is not one type's trouble: it fails the run
                raise
            except (GraphPermissionError, RemoteError) as error:  # 401 (GraphCredentialsError) fails the run
                self.type_failed(key, error)
                departures = [d for d in departures if d.record.type != key]
        yield from self._guarded(departures)

    def _fresh(self, key: str) -> Iterator[Change]:
        """The full-run planner for one resource (initial delta round, departures included); the objects it
        reads count as seen by this catch-up."""
        options = dataclasses.replace(self.options, object_types=(key,))
        planner = Planner(self.graph, self.state, options, self.scope, self.result, self.progress)
        planner.users_in_scope, planner.seen = self.users_in_scope, self.seen
        yield from planner.changes()
        self.checkpoints.update(planner.checkpoints)

    def _guarded(self, departures: list[Change]) -> Iterator[Change]:
        gone: dict[str, list[str]] = defaultdict(list)
        for change in departures:
            gone[change.record.type].append(change.record.id)
        active = {key: sum(not is_deactivated(h) for h in self.hashes[key].values()) for key in gone}
        reason = self.options.guard({k: len(v) for k, v in gone.items()}, active)
        if reason:
            self.options.hold(self.result, gone, reason)
            return
        for change in departures:
            self.result.deactivated[change.record.type] += 1
            yield change

    def _departure(self, type_key: str, object_id: str, last: dict | None, departures: list[Change]) -> None:
        stored = self.hashes[type_key].get(object_id)
        if stored is not None and not is_deactivated(stored):
            departures.append(Change("deactivate", deactivated(type_key, object_id, last)))

    def _user_round(self, link: str, departures: list[Change]) -> Iterator[Change]:
        self.progress("Fetching users", 0)
        round_ = self.graph.delta("users", [], link)
        derived = Derived(names=orjson.loads(self.state.checkpoint(NAMES) or "{}"))
        users = self.linker.users(round_.objects, self.scope.users, defer=False) if self.linker else round_.objects
        users = iter(users)
        for batch in iter(lambda: list(itertools.islice(users, BATCH)), []):  # BATCH users' stored data at a time
            last = self.state.records("user", [u["id"] for u in batch])
            for user in batch:
                uid, scope = user["id"], self.scope.users
                if "@removed" in user or (scope is not None and uid not in scope):
                    self._departure("user", uid, last.get(uid), departures)
                    continue
                kept = last.get(uid) if "manager@delta" not in user else None  # relationship unchanged: not sent
                record = map_user(user, self.result.warnings, scope, self.result.unmatched, self.accounts,
                                  shaped=self.types["user"], kept=kept)
                derived.observe(user, record)
                self.result.read["user"] += 1
                yield from self._compare(record)
        for record in derived.records(self.types):  # only new derived objects; the full run keeps aggregates current
            if record.id not in self.hashes[record.type]:
                yield from self._compare(record)
        self.checkpoints[USERS_DELTA] = round_.delta_link
        self.checkpoints[NAMES] = orjson.dumps(derived.chosen_names()).decode()
        if self.linker:
            # Pending and due Jira lookups with the searches left (SPEC §5, AccountLinker.sweep): stored data
            # with the new account, already shaped - not through _compare, which would re-shape it from Graph.
            for record in self.linker.sweep(self.scope.users, self.hashes):
                self.result.updated["user"] += 1
                yield Change("update", record)
            self.checkpoints.update(self.linker.checkpoints(full=False))

    def _group_round(self, link: str, departures: list[Change]) -> Iterator[Change]:
        self.progress("Fetching groups", 0)
        round_ = self.graph.delta("groups", [], link)
        groups: dict[str, dict] = {}
        added: dict[str, dict[str, str]] = {}
        removed: dict[str, set[str]] = {}
        for group in round_.objects:  # a group may span pages: merge its members@delta slices
            gid = group["id"]
            if "@removed" in group:
                groups[gid] = group
                continue
            groups[gid] = groups.get(gid, {}) | {k: v for k, v in group.items() if k != "members@delta"}
            for member in group.get("members@delta") or ():
                if "@removed" in member:
                    removed.setdefault(gid, set()).add(member["id"])
                    added.get(gid, {}).pop(member["id"], None)
                else:
                    added.setdefault(gid, {})[member["id"]] = object_type_of(member)
        last = self.state.records("group", list(groups))
        for gid, group in groups.items():
            if "@removed" in group or (self.scope.groups is not None and gid not in self.scope.groups):
                self._departure("group", gid, last.get(gid), departures)
                continue
            before = {m: "user" for m in (last.get(gid) or {}).get("members") or ()}
            members = {m: t for m, t in before.items() if m not in removed.get(gid, ())} | added.get(gid, {})
            owners = directory_links(list(self.graph.objects(f"groups/{gid}/owners", {"$select": "id", "$top": "999"})))
            record = map_group(group, self._refs(members.items(), "member", gid), self._refs(owners, "owner", gid),
                               self.result.warnings, shaped=self.types["group"])
            self.result.read["group"] += 1
            yield from self._compare(record)
        self.checkpoints[GROUPS_DELTA] = round_.delta_link


def plan_catch_up(graph, state, options: RunOptions, scope: Scope, result: FullRunResult,
                  progress: Progress = lambda stage, n: None
                  ) -> tuple[Iterator[Record], dict[str, str | None], dict[str, set[str]]]:
    """The records of a catch-up, lazily; the checkpoints (new delta links) and the ids it read per type, filled
    once they are consumed. Reads only; writes nothing. Raises ``GraphCredentialsError``; a resource that
    fails otherwise is in ``result.failed`` (``DeltaExpired`` starts a fresh round)."""
    planner = _CatchUp(graph, state, options, scope, result, progress)
    return (change.record for change in planner.changes()), planner.checkpoints, planner.seen
