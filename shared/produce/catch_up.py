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
full run's reads (``FullReads``) of users or groups alone, departures included - nothing is lost, only re-read.
The catch-up and those reads share one ``Plan`` (shared.produce.plan): what either saw, the checkpoints, the
counters and the guard are the run's.
"""
from __future__ import annotations

import itertools
import logging
from collections import defaultdict
from collections.abc import Callable, Iterator

import orjson

from shared.clients.graph import GraphClient
from shared.contract.checkpoints import GROUPS_DELTA, NAMES, USERS_DELTA
from shared.errors import DeltaExpired, ForeignLink, GraphPermissionError, RemoteError
from shared.produce.full import FullReads
from shared.produce.plan import (
    Change,
    FullRunResult,
    Plan,
    Progress,
    RunOptions,
    Scope,
    directory_refs,
    merge_group_round,
    owned_keys,
)
from shared.records.build import Record, deactivated, is_deactivated, map_group, map_user
from shared.records.derived import Derived
from shared.store.ports import StateStore

log = logging.getLogger(__name__)

BATCH = 500  # objects of a round mapped together (one state lookup of their last pushed data)


class CatchUp:
    """Plans the changes since the stored delta links into ``plan``: ``changes()`` yields, ``plan.checkpoints``
    fills. Not reusable."""

    def __init__(self, plan: Plan):
        self.plan = plan
        self.linker = plan.linker()
        if self.linker:  # planned in the worker, under its lease: a catch-up's short lookup budget
            self.linker.for_catch_up()
        self.accounts = self.linker.accounts if self.linker else None

    def changes(self) -> Iterator[Change]:
        """Each resource's round (a fresh one where the stored link expired), then the departures they found.
        A resource that cannot be read fails alone, as in a full run (``FullReads.changes``)."""
        plan = self.plan
        departures: list[Change] = []
        for key, link_name, round_of in (("user", USERS_DELTA, self._user_round),
                                         ("group", GROUPS_DELTA, self._group_round)):
            if key not in plan.options.object_types:
                continue
            link = plan.state.checkpoint(link_name)
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
                plan.type_failed(key, error)
                departures = [d for d in departures if d.record.type != key]
        yield from self._guarded(departures)

    def _fresh(self, key: str) -> Iterator[Change]:
        """The full run's reads of one resource (an initial delta round), then its departures; the objects
        they read count as seen by this catch-up."""
        yield from FullReads(self.plan, (key,)).read(key)
        yield from self.plan.unseen_departures(owned_keys([key]))

    def _guarded(self, departures: list[Change]) -> Iterator[Change]:
        gone: dict[str, list[str]] = defaultdict(list)
        for change in departures:
            gone[change.record.type].append(change.record.id)
        if not self.plan.released(gone):
            return
        for change in departures:
            self.plan.result.deactivated[change.record.type] += 1
            yield change

    def _departure(self, type_key: str, object_id: str, last: dict | None, departures: list[Change]) -> None:
        stored = self.plan.hashes[type_key].get(object_id)
        if stored is not None and not is_deactivated(stored):
            departures.append(Change("deactivate", deactivated(type_key, object_id, last)))

    def _user_round(self, link: str, departures: list[Change]) -> Iterator[Change]:
        plan, result, scope = self.plan, self.plan.result, self.plan.scope.users
        plan.progress("Fetching users", 0)
        round_ = plan.graph.delta("users", [], link)
        derived = Derived(names=orjson.loads(plan.state.checkpoint(NAMES) or "{}"))
        users = iter(self.linker.users(round_.objects, scope, defer=False) if self.linker else round_.objects)
        for batch in iter(lambda: list(itertools.islice(users, BATCH)), []):  # BATCH users' stored data at a time
            last = plan.state.records("user", [u["id"] for u in batch])
            for user in batch:
                uid = user["id"]
                if "@removed" in user or (scope is not None and uid not in scope):
                    self._departure("user", uid, last.get(uid), departures)
                    continue
                kept = last.get(uid) if "manager@delta" not in user else None  # relationship unchanged: not sent
                # Delta carries no sign-in activity (shared.records.build.SIGN_IN_SELECT): the last full run's stands.
                record = map_user(user, result.warnings, scope, result.unmatched, self.accounts,
                                  shaped=plan.types["user"], kept=kept,
                                  last_sign_in=(last.get(uid) or {}).get("lastSignIn"))
                derived.observe(user, record)
                result.read["user"] += 1
                yield from plan.compare(record)
        for record in derived.records(plan.types):  # only new derived objects; the full run keeps aggregates current
            if record.id not in plan.hashes[record.type]:
                yield from plan.compare(record)
        plan.checkpoints[USERS_DELTA] = round_.delta_link
        plan.checkpoints[NAMES] = orjson.dumps(derived.chosen_names()).decode()
        if self.linker:
            # Pending and due Jira lookups with the searches left (SPEC §5, AccountLinker.sweep): stored data
            # with the new account, already shaped (not through compare: it was not read from Graph this round).
            for record in self.linker.sweep(scope, plan.hashes):
                result.updated["user"] += 1
                yield Change("update", record)
            plan.checkpoints.update(self.linker.checkpoints(full=False))

    def _group_round(self, link: str, departures: list[Change]) -> Iterator[Change]:
        plan, scope = self.plan, self.plan.scope.groups
        plan.progress("Fetching groups", 0)
        round_ = plan.graph.delta("groups", [], link)
        with merge_group_round(round_.objects) as merged:
            last = plan.state.records("group", list(merged.groups))
            for gid, group in merged.groups.items():
                if "@removed" in group or (scope is not None and gid not in scope):
                    self._departure("group", gid, last.get(gid), departures)
                    continue
                # members@delta lists only what changed: the rest is as last pushed
                before = {m: "user" for m in (last.get(gid) or {}).get("members") or ()}
                removed = merged.removed(gid)
                members = {m: t for m, t in before.items() if m not in removed} | dict(merged.members(gid))
                owners = directory_refs(list(plan.graph.objects(f"groups/{gid}/owners",
                                                                {"$select": "id", "$top": "999"})))
                record = map_group(group, plan.user_ids(members.items(), "member", gid),
                                   plan.user_ids(owners, "owner", gid), plan.result.warnings,
                                   shaped=plan.types["group"])
                plan.result.read["group"] += 1
                yield from plan.compare(record)
        plan.checkpoints[GROUPS_DELTA] = round_.delta_link


def plan_catch_up(graph: GraphClient, state: StateStore, options: RunOptions, scope: Scope, result: FullRunResult,
                  progress: Progress = lambda stage, n: None
                  ) -> tuple[Iterator[Record], dict[str, str | None], Callable[[], dict[str, set[str]]]]:
    """The records of a catch-up, lazily; the checkpoints (new delta links), filled once they are consumed; and a
    call that returns the stored ids it read per type (``StoredHashes.seen``; the others it read are new, so
    pushed), once they are consumed. Reads only; writes nothing. Raises ``GraphCredentialsError``; a resource that
    fails otherwise is in ``result.failed`` (``DeltaExpired`` starts a fresh round)."""
    plan = Plan(graph, state, options, scope, result, progress)
    return (change.record for change in CatchUp(plan).changes()), plan.checkpoints, plan.hashes.seen
