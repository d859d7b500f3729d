"""What a full run and a catch-up share: the run options and the guard, the scope, the stored hashes, the
comparison, the bookkeeping of departures and of types that failed, directory references, and the merge of a
``/groups/delta`` round's ``members@delta`` slices.

A ``Plan`` is the state of one planning run - what was seen, the checkpoints to commit, the counters in its
``FullRunResult``. ``shared.produce.full`` reads a whole tenant into one; ``shared.produce.catch_up`` runs the
stored delta links into one (and a fresh round, where a link expired, with the full run's reads). Both only
read: nothing here writes to the state, the queue or Assets.
"""
from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Self

from shared.clients.graph import GraphClient
from shared.errors import EntraAssetsError, RemoteError, ScopeError
from shared.jira_links import AccountLinker, Linking, linking_for
from shared.produce.spill import BATCH, IdSet, TypeHashes, batches, scratch_db
from shared.records.build import Record, Warnings, deactivated, user_refs
from shared.records.mapping_file_apply import apply_mapping_file, graph_select, load_mapping_file
from shared.records.schema import (
    BY_KEY,
    OBJECT_TYPES,
    REFERENCE_LIMIT,
    ObjectType,
    for_object_types,
    with_link_attributes,
)
from shared.settings import SYNCABLE_TYPES, Settings
from shared.store.ports import StateStore

log = logging.getLogger(__name__)

SAMPLE = 5
RELATIVE_GUARD_FLOOR = 10     # MAX_DEACTIVATION_PERCENT holds a run only above this many departures of a type
ALLOWANCE_WARNING = 0.8       # preview, sync and status warn from this share of ASSETS_OBJECT_LIMIT on

Progress = Callable[[str, int], None]  # (stage, objects so far)


def owned_keys(object_types: Iterable[str]) -> list[str]:
    """The record types that reading ``object_types`` owns: those, plus the derived ones when users are read."""
    keys = list(object_types)
    if "user" in keys:
        keys += [t.key for t in OBJECT_TYPES if t.derived]
    return keys


@dataclass(frozen=True)
class RunOptions:
    """What a full run covers: the object types read from Graph, the scope, and the guard."""

    object_types: tuple[str, ...] = SYNCABLE_TYPES
    user_filter: str | None = None
    group_filter: str | None = None
    scope_group_id: str | None = None
    max_deactivations: int = 500
    allow_mass_deactivation: bool = False
    types: tuple[ObjectType, ...] = OBJECT_TYPES   # after the MAPPING_FILE's additions, renames, omissions
    linking: Linking | None = None                 # Jira user links (SPEC §5) when JIRA_* are set
    max_deactivation_percent: float = 30.0
    object_limit: int = 50_000                     # ASSETS_OBJECT_LIMIT: the site's Assets object allowance
    allow_over_object_limit: bool = False          # the CLI's --allow-object-limit, for one run
    repair: bool = False                           # a repair run: every record in scope is pushed again

    @classmethod
    def from_settings(cls, settings: Settings, allow_mass_deactivation: bool = False,
                      allow_over_object_limit: bool = False) -> RunOptions:
        """Raises ``MappingFileError`` for an invalid MAPPING_FILE."""
        return cls(settings.object_types, settings.user_filter, settings.group_filter, settings.scope_group_id,
                   settings.max_deactivations, allow_mass_deactivation, object_types_for(settings),
                   linking_for(settings), settings.max_deactivation_percent, settings.assets_object_limit,
                   allow_over_object_limit)

    def over_allowance(self, result: FullRunResult) -> bool:
        """True when the run's new objects would take what this app keeps in Assets past ASSETS_OBJECT_LIMIT
        (and the run does not allow it): the run is then held whole. Assets bills by objects and stops
        imports at the site's usage limit, so crossing it is the admin's decision, not the importer's."""
        return not self.allow_over_object_limit and result.objects_after > self.object_limit

    def guard(self, gone: dict[str, int], active: dict[str, int]) -> str | None:
        """Why departures (``gone``: per type) must be held back, or None. ``active``: per type, the objects
        Assets holds that are not marked Deleted. The absolute limit counts all types together; the relative
        one each type alone, so an empty listing (a broken filter, the wrong tenant) never marks a whole type
        Deleted."""
        if self.allow_mass_deactivation:
            return None
        if sum(gone.values()) > self.max_deactivations:
            return f"more than MAX_DEACTIVATIONS={self.max_deactivations}"
        for key, count in sorted(gone.items(), key=lambda item: -item[1]):  # the biggest loss named first
            if count > RELATIVE_GUARD_FLOOR and count > active.get(key, 0) * self.max_deactivation_percent / 100:
                return (f"{count:,} of the {active.get(key, 0):,} {BY_KEY[key].name} objects, more than "
                        f"MAX_DEACTIVATION_PERCENT={self.max_deactivation_percent:g}%")
        return None

    def hold(self, result: FullRunResult, gone: dict[str, list[str]], reason: str) -> None:
        """Count departures held back by the guard in ``result`` (with a few sample ids and the reason)."""
        result.held_reason = reason
        for key, ids in gone.items():
            if ids:
                result.held_back[key] += len(ids)
                result.held_back_sample += [f"{BY_KEY[key].name} {i}" for i in ids[:SAMPLE]]

    def type_keys(self) -> list[str]:
        """The record types this run owns: the chosen types, plus the derived ones when users are synced."""
        return owned_keys(self.object_types)


def select_for(object_type: ObjectType, defaults: list[str]) -> list[str]:
    """``defaults`` plus what the MAPPING_FILE's attributes of ``object_type`` read from Graph."""
    return defaults + [p for p in graph_select(object_type) if p not in defaults]


def object_types_for(settings: Settings) -> tuple[ObjectType, ...]:
    """The object types SYNC_OBJECT_TYPES chooses (with User, the derived ones), as the MAPPING_FILE shapes them
    (the defaults without one): the schema ``setup`` submits and the records a run builds. Raises
    MappingFileError."""
    types = apply_mapping_file(OBJECT_TYPES, load_mapping_file(settings.mapping_file)) if settings.mapping_file \
        else OBJECT_TYPES
    types = for_object_types(types, owned_keys(settings.object_types))
    return with_link_attributes(types) if settings.jira_enabled else types


@dataclass
class FullRunResult:
    """What a full run (or a catch-up) saw and queued. Counters are keyed by object type key."""

    run_id: str
    read: Counter = field(default_factory=Counter)
    created: Counter = field(default_factory=Counter)
    updated: Counter = field(default_factory=Counter)
    deactivated: Counter = field(default_factory=Counter)
    unchanged: Counter = field(default_factory=Counter)
    held_back: Counter = field(default_factory=Counter)      # departures stopped by the guard
    held_back_sample: list[str] = field(default_factory=list)
    held_reason: str | None = None                           # which limit of the guard they crossed
    resent: Counter = field(default_factory=Counter)         # a repair run: unchanged records pushed again
    repair: bool = False                                     # the run was a repair (REPAIR_INTERVAL_DAYS)
    objects_kept: int = 0       # objects this app keeps in Assets before the run (every type, Deleted ones too)
    object_limit: int = 0       # ASSETS_OBJECT_LIMIT as the run saw it
    over_allowance: bool = False  # held whole: its new objects would cross the allowance (nothing queued)
    failed: dict[str, str] = field(default_factory=dict)     # object types that could not be read: the reason
    read_started: float = 0.0                                # when the run began reading Graph (epoch seconds)
    graph_pages: int = 0
    segments: list[float] = field(default_factory=list)      # a segmented run: the seconds each segment read
    payload: str | None = None
    warnings: Warnings = field(default_factory=Warnings)
    unmatched: Warnings = field(default_factory=Warnings)    # references left empty, members skipped
    seconds: dict[str, float] = field(default_factory=dict)

    @property
    def users(self) -> int:
        return self.read["user"]

    @property
    def changed(self) -> Counter:
        return self.created + self.updated + self.deactivated

    @property
    def queued(self) -> int:
        return 0 if self.over_allowance else sum(self.changed.values()) + sum(self.resent.values())

    @property
    def objects_after(self) -> int:
        """What this app would keep in Assets once the run is pushed (departures stay: marked Deleted)."""
        return self.objects_kept + sum(self.created.values())

    def allowance_line(self) -> str | None:
        """One line about the objects against ASSETS_OBJECT_LIMIT from 80 % on (None below), for ``preview``,
        ``sync`` and the run history."""
        if not self.object_limit or self.objects_after < ALLOWANCE_WARNING * self.object_limit:
            return None
        share = f"{self.objects_after:,} objects of ASSETS_OBJECT_LIMIT={self.object_limit:,} " \
                f"({100 * self.objects_after / self.object_limit:.0f} %)"
        if self.objects_after > self.object_limit:
            return f"{share}: over the allowance"
        return f"{share}: nearing the allowance"


@dataclass(frozen=True)
class Scope:
    """Ids selected by the scoping settings; None means everything of that kind is in scope."""

    users: frozenset[str] | None = None
    groups: frozenset[str] | None = None


def read_scope(graph: GraphClient, options: RunOptions) -> Scope:
    """Ask Graph which users and groups the scoping settings select - before anything is read or written.

    Raises ``ScopeError`` naming the setting when Graph refuses a filter or the scope group does not exist.
    """
    users = None
    if options.scope_group_id:
        gid = options.scope_group_id
        try:
            graph.get(f"groups/{gid}", {"$select": "id"})
        except RemoteError as error:
            if error.http_status == 404:
                raise ScopeError(f"SCOPE_GROUP_ID {gid}: no group with this id exists in the tenant") from None
            raise
        # Transitive members, cast to users: nested groups are flattened (reference/graph.md §1.6).
        users = _ids(graph, f"groups/{gid}/transitiveMembers/microsoft.graph.user", None, "SCOPE_GROUP_ID")
    if options.user_filter:
        filtered = _ids(graph, "users", options.user_filter, "USER_FILTER")
        users = filtered if users is None else users & filtered
    groups = _ids(graph, "groups", options.group_filter, "GROUP_FILTER") if options.group_filter else None
    return Scope(users, groups)


def _ids(graph: GraphClient, path: str, odata_filter: str | None, setting: str) -> frozenset[str]:
    params = {"$select": "id", "$top": "999"}
    if odata_filter:
        params["$filter"] = odata_filter
    try:
        return frozenset(o["id"] for o in graph.objects(path, params, advanced=True))
    except RemoteError as error:
        if error.http_status == 400:
            raise ScopeError(f"{setting} was refused by Microsoft Graph ({error.code}): {error.detail} - fix the "
                             "OData $filter (https://learn.microsoft.com/graph/filter-query-parameter)") from None
        raise


@dataclass
class Change:
    """One planned record: ``kind`` is create, update, deactivate or resend (a repair run's unchanged one)."""

    kind: str
    record: Record


class StoredHashes(dict[str, TypeHashes]):
    """The stored hashes by type, each type read from the state on first use: a catch-up that finds no
    change then reads none. A type past ``SPILL_AT`` objects is kept on disk (``shared.produce.spill``)."""

    def __init__(self, state: StateStore):
        super().__init__()
        self._state = state

    def __missing__(self, type_key: str) -> TypeHashes:
        hashes = self[type_key] = TypeHashes(self._state.hashes(type_key))
        if hashes.spilled:
            log.info("%d stored hashes of %s kept in a temporary database for this run", len(hashes), type_key)
        return hashes

    def seen(self) -> dict[str, set[str]]:
        """The stored ids the run saw so far, by type (``Plan.compare``)."""
        return {type_key: hashes.seen() for type_key, hashes in self.items()}


class Plan:
    """The state of one planning run: what it saw, the checkpoints it will commit, its counters (``result``).
    Used from one thread (the one that maps); not reusable across runs."""

    def __init__(self, graph: GraphClient, state: StateStore, options: RunOptions, scope: Scope,
                 result: FullRunResult, progress: Progress):
        self.graph, self.state, self.options, self.scope = graph, state, options, scope
        self.result, self.progress = result, progress
        self.types = {t.key: t for t in options.types}
        self.hashes = StoredHashes(state)  # with the stored ids this run saw (``compare``)
        result.repair = options.repair
        self.users_in_scope: IdSet | None = None  # filled once users are read (None: every user id is taken)
        self.checkpoints: dict[str, str | None] = {}

    def linker(self) -> AccountLinker | None:
        """A Jira account linker for one reader of this plan (SPEC §5), or None when linking is off."""
        linking = self.options.linking
        return linking.linker(self.state, self.result.warnings, self.result.unmatched) if linking else None

    def select(self, key: str, defaults: list[str]) -> list[str]:
        """``defaults`` plus what the MAPPING_FILE's attributes of ``key`` read from Graph."""
        return select_for(self.types[key], defaults)

    def compare(self, record: Record) -> Iterator[Change]:
        """``record`` (built as its type is shaped: ``shared.records.build``) as a create or an update when its
        hash differs from the stored one (nothing when equal); counts it, and marks it seen when it is stored.
        (Only stored ids can depart or be confirmed unchanged; the new ones are pushed. Keeping every id read
        cost ~100 MB at a million users on a first run, which stores none.) A repair run pushes an unchanged
        record too ("resend"): Assets may hold a hand edit, or may have lost the object, since it was pushed."""
        stored = self.hashes[record.type].see(record.id)
        if stored == record.hash:
            if self.options.repair:
                self.result.resent[record.type] += 1
                yield Change("resend", record)
            else:
                self.result.unchanged[record.type] += 1
            return
        kind = "create" if stored is None else "update"
        (self.result.created if kind == "create" else self.result.updated)[record.type] += 1
        yield Change(kind, record)

    def type_failed(self, key: str, error: EntraAssetsError) -> None:
        """Record that ``key`` could not be read; users that failed take their derived types along, and the
        users Assets already holds stand in for the unread ones as the targets of references."""
        log.error("%s could not be read, so none is marked Deleted this run: %s", BY_KEY[key].name, error)
        for type_key in owned_keys([key]):
            self.result.failed[type_key] = str(error)
        if key == "user":
            scope = self.scope.users
            if self.users_in_scope is None:
                self.users_in_scope = IdSet()
            self.users_in_scope.update(i for i in self.hashes["user"].active() if scope is None or i in scope)

    def user_ids(self, refs: Iterable[tuple[str, str]], kind: str, owner: str, in_order: bool = False) -> list[str]:
        """The user ids among ``refs`` ((id, object type) pairs, ``directory_refs``), in scope, sorted; references
        to other object types and to users out of scope are counted in ``result.unmatched``. ``in_order``: the
        refs come in id order, so they are taken a batch at a time, and once more than ``REFERENCE_LIMIT`` are in
        (``map_group`` keeps the first) the rest are only counted - a million-member group is never a
        million-entry list."""
        if not in_order:
            return self._users_in_scope(refs, kind, owner)
        ids: list[str] = []
        for batch in batches(refs, BATCH):
            inside = self._users_in_scope(batch, kind, owner)
            if len(ids) <= REFERENCE_LIMIT:
                ids.extend(inside)
        return ids

    def _users_in_scope(self, refs: Iterable[tuple[str, str]], kind: str, owner: str) -> list[str]:
        users = []
        for object_id, object_type in refs:
            if object_type == "user":
                users.append(object_id)
            else:
                self.result.unmatched.add(f"{kind}: {object_type} (not a user) skipped", owner)
        return user_refs(users, self.users_in_scope, self.result.unmatched, f"{kind} outside the scope", owner)

    def released(self, gone: dict[str, list[str]]) -> bool:
        """True when the departures ``gone`` (ids per type) may be pushed; otherwise the guard
        (``RunOptions.guard``) holds them all back and ``result`` says so."""
        active = {key: sum(1 for _ in self.hashes[key].active()) for key, ids in gone.items() if ids}
        reason = self.options.guard({k: len(v) for k, v in gone.items()}, active)
        if reason:
            self.options.hold(self.result, gone, reason)
            return False
        return True

    def count_objects(self) -> None:
        """Note in ``result`` how many objects this app keeps in Assets (every type it ever pushed, marked Deleted
        or not: they stay in Assets and count against the allowance) and the allowance."""
        self.result.objects_kept = sum(len(self.hashes[t.key]) for t in OBJECT_TYPES)
        self.result.object_limit = self.options.object_limit

    def unseen_departures(self, keys: Iterable[str]) -> Iterator[Change]:
        """Objects of ``keys`` pushed before, not seen by this run and not yet marked Deleted - none of a type
        that failed to be read -, marked Deleted, unless the guard holds them back (``released``). For runs
        that read whole types (a full run, a fresh delta round)."""
        keys = [key for key in keys if key not in self.result.failed]
        gone = {key: self.hashes[key].unseen_active() for key in keys}
        if not self.released(gone):
            return
        for key, ids in gone.items():
            last = self.state.records(key, ids) if ids else {}
            for record_id in ids:
                self.result.deactivated[key] += 1
                yield Change("deactivate", deactivated(key, record_id, last.get(record_id)))


# -- directory references and the members@delta merge ---------------------------------------------------------


_TYPE_NAMES: dict[str, str] = {}  # "@odata.type" -> its name: one string per type, however many references


def object_type_of(ref: dict) -> str:
    """``#microsoft.graph.user`` -> ``user`` (a directoryObject without a type is taken as a user)."""
    odata_type = ref.get("@odata.type") or "#microsoft.graph.user"
    name = _TYPE_NAMES.get(odata_type)
    if name is None:
        name = odata_type.rsplit(".", 1)[-1].lower()
        if len(_TYPE_NAMES) < 100:  # a few dozen directory object types exist; never grow with what a server sends
            _TYPE_NAMES[odata_type] = name
    return name


def directory_refs(objects: list[dict] | None) -> list[tuple[str, str]]:
    """(id, object type) of each directory object in ``objects`` (owners, members), removed ones left out."""
    return [(o["id"], object_type_of(o)) for o in objects or () if "@removed" not in o]


class GroupRound:
    """A ``/groups/delta`` round merged by group: ``groups`` holds each group's properties (without
    ``members@delta``), or its ``@removed`` entry when the round ends with the group removed; ``members(gid)`` the
    members the group gained (id -> object type), ``removed(gid)`` the member ids it lost.

    The members are kept in a private temporary SQLite database (on disk, deleted when closed): a first round
    lists every membership, and a million-user "All users" group alone was ~150 MB as Python dicts and strings
    (issue 11). Use it as a context manager, or ``close`` it."""

    def __init__(self) -> None:
        self.groups: dict[str, dict] = {}
        self._db = scratch_db()  # written once by the read's thread, then read by the mapping one
        self._db.execute("CREATE TABLE m (gid TEXT, mid TEXT, type TEXT, present INTEGER, PRIMARY KEY (gid, mid)) "
                         "WITHOUT ROWID")

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        self._db.close()

    def members(self, gid: str) -> Iterator[tuple[str, str]]:
        """The members ``gid`` gained, (id, object type) in id order, streamed: not a million-entry dict."""
        return iter(self._db.execute("SELECT mid, type FROM m WHERE gid=? AND present ORDER BY mid", (gid,)))

    def has_group_member(self, gid: str) -> bool:
        return self._db.execute("SELECT 1 FROM m WHERE gid=? AND present AND type='group'", (gid,)).fetchone() \
            is not None

    def removed(self, gid: str) -> set[str]:
        return {mid for (mid,) in self._db.execute("SELECT mid FROM m WHERE gid=? AND NOT present", (gid,))}

    def _forget(self, gid: str) -> None:
        self._db.execute("DELETE FROM m WHERE gid=?", (gid,))

    def _note(self, gid: str, slice_: list[dict]) -> None:
        """One entry's slice of ``members@delta``, in order: the last word on a member wins."""
        self._db.executemany("INSERT OR REPLACE INTO m VALUES (?, ?, ?, ?)",
                             ((gid, m["id"], None, 0) if "@removed" in m else (gid, m["id"], object_type_of(m), 1)
                              for m in slice_))


def merge_group_round(objects: Iterable[dict]) -> GroupRound:
    """Merge the entries of a ``/groups/delta`` round: one group may span several pages, each entry carrying
    a slice of its ``members@delta``, and show up anywhere in the round (reference/graph.md §2.5); the last
    word on a member wins. A group that is removed forgets what the round said about it before; a later entry
    starts it afresh."""
    merged = GroupRound()
    try:
        for group in objects:
            gid = group["id"]
            if "@removed" in group:
                merged.groups[gid] = group
                merged._forget(gid)
                continue
            before = merged.groups.get(gid)
            base = {} if before is None or "@removed" in before else before
            merged.groups[gid] = base | {k: v for k, v in group.items() if k != "members@delta"}
            if group.get("members@delta"):
                merged._note(gid, group["members@delta"])
    except BaseException:
        merged.close()
        raise
    return merged
