"""Full reconciliation: read everything in scope, compare with what was last pushed, queue what changed.

``plan`` is the core shared by ``sync --full`` (``run_full``) and ``preview``: it reads users (initial round of
``/users/delta``, which also yields the delta link for incremental runs), groups (``/groups/delta`` with
``members``; owners from a list with ``$expand=owners``), devices and service principals (lists with their
owners expanded), maps each object to a record, and yields only the records whose content hash differs from
the stored one - creates and updates - followed by the departures: objects pushed before that are gone from
Entra or out of scope, pushed once more with ``Status = Deleted``. More departures than ``MAX_DEACTIVATIONS``
are held back (the accidental-deletion guard) unless the run allows them.

``run_full`` streams the planned records into one claim-check payload and queues a pointer to it. Checkpoints
(delta links, chosen names of derived objects) travel at the end of the payload and are committed by the
worker only after Assets has finished the execution that carries the records. A run that finds nothing to
push queues nothing, starts no execution and commits its checkpoints at once.
"""
from __future__ import annotations

import logging
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field

import orjson

from shared.clients.graph import GraphClient
from shared.contract.checkpoints import GROUPS_DELTA, NAMES, USERS_DELTA
from shared.contract.messages import RecordsMessage
from shared.contract.payload import checkpoints_line, record_line
from shared.errors import (
    EntraAssetsError,
    ForeignLink,
    GraphPermissionError,
    MassDeactivation,
    RemoteError,
    ScopeError,
    TypesNotRead,
)
from shared.jira_links import Linking, linking_for
from shared.records.build import (
    APPLICATION_SELECT,
    DEVICE_SELECT,
    GROUP_SELECT,
    USER_SELECT,
    Record,
    Warnings,
    deactivated,
    is_deactivated,
    map_application,
    map_device,
    map_group,
    map_user,
    user_refs,
)
from shared.records.derived import Derived
from shared.records.mapping_file_apply import apply_mapping_file, graph_select, load_mapping_file
from shared.records.schema import BY_KEY, OBJECT_TYPES, ObjectType, with_link_attributes
from shared.settings import SYNCABLE_TYPES, Settings
from shared.store.ports import ChangeQueue, PayloadStore, StateStore

log = logging.getLogger(__name__)

LAST_FULL = "full/last"       # scheduling: when the last full run was queued (epoch seconds)
SAMPLE = 5
RELATIVE_GUARD_FLOOR = 10     # MAX_DEACTIVATION_PERCENT holds a run only above this many departures of a type
EXPAND_LIMIT = 20             # related objects returned by $expand on a list (reference/graph.md §1.5)

Progress = Callable[[str, int], None]  # (stage, objects so far)


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

    @classmethod
    def from_settings(cls, settings: Settings, allow_mass_deactivation: bool = False) -> RunOptions:
        """Raises ``MappingFileError`` for an invalid MAPPING_FILE."""
        return cls(settings.object_types, settings.user_filter, settings.group_filter, settings.scope_group_id,
                   settings.max_deactivations, allow_mass_deactivation, object_types_for(settings),
                   linking_for(settings), settings.max_deactivation_percent)

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
        keys = [t for t in self.object_types]
        if "user" in keys:
            keys += [t.key for t in OBJECT_TYPES if t.derived]
        return keys


@dataclass
class FullRunResult:
    """What a full run saw and queued. Counters are keyed by object type key."""

    run_id: str
    read: Counter = field(default_factory=Counter)
    created: Counter = field(default_factory=Counter)
    updated: Counter = field(default_factory=Counter)
    deactivated: Counter = field(default_factory=Counter)
    unchanged: Counter = field(default_factory=Counter)
    held_back: Counter = field(default_factory=Counter)      # departures stopped by the guard
    held_back_sample: list[str] = field(default_factory=list)
    held_reason: str | None = None                           # which limit of the guard they crossed
    failed: dict[str, str] = field(default_factory=dict)     # object types that could not be read: the reason
    read_started: float = 0.0                                # when the run began reading Graph (epoch seconds)
    graph_pages: int = 0
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
        return sum(self.changed.values())


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


def object_types_for(settings: Settings) -> tuple[ObjectType, ...]:
    """The object types as the MAPPING_FILE shapes them (the defaults without one). Raises MappingFileError."""
    types = apply_mapping_file(OBJECT_TYPES, load_mapping_file(settings.mapping_file)) if settings.mapping_file \
        else OBJECT_TYPES
    return with_link_attributes(types) if settings.jira_enabled else types


def full_sync_due(state: StateStore, interval_hours: float, now: float) -> bool:
    """True when no full run was queued within ``interval_hours``."""
    last = state.checkpoint(LAST_FULL)
    return last is None or now - float(last) >= interval_hours * 3600


@dataclass
class Change:
    """One planned record: ``kind`` is create, update or deactivate."""

    kind: str
    record: Record


class _StoredHashes(dict):
    """The stored hashes by type, each type read from the state on first use: a catch-up that finds no
    change then reads none (with Azure Storage, one blob of 100,000 hashes per type)."""

    def __init__(self, state: StateStore):
        super().__init__()
        self._state = state

    def __missing__(self, type_key: str) -> dict[str, str]:
        self[type_key] = self._state.hashes(type_key)
        return self[type_key]


class Planner:
    """Reads, maps and compares one full run; ``changes()`` yields what must be pushed. Not reusable."""

    def __init__(self, graph: GraphClient, state: StateStore, options: RunOptions, scope: Scope,
                 result: FullRunResult, progress: Progress):
        self.graph, self.state, self.options, self.scope = graph, state, options, scope
        self.result, self.progress = result, progress
        self.keys = options.type_keys()
        self.types = {t.key: t for t in options.types}
        self.hashes = _StoredHashes(state)
        self.seen: dict[str, set[str]] = defaultdict(set)
        self.users_in_scope: set[str] | None = None  # filled once users are read (None: users not synced)
        self.checkpoints: dict[str, str | None] = {}
        self.linker = options.linking.linker(state, result.warnings, result.unmatched) if options.linking else None
        self.accounts = self.linker.accounts if self.linker else None  # Entra id -> Atlassian account id

    def changes(self) -> Iterator[Change]:
        """Every type's creates and updates, then the departures. A type that cannot be read (a missing
        permission, an unlicensed feature, a property Graph refuses) fails alone (SPEC §7): what it yielded
        before stays valid data, its failure is in ``result.failed``, and none of its objects is marked
        Deleted. Refused credentials (401), or every type failing, fail the run."""
        readers = {"user": self._users, "group": self._groups, "device": self._devices,
                   "application": self._applications}
        errors = []
        for key in self.options.object_types:
            try:
                yield from readers[key]()
            except ForeignLink:  # a link off GRAPH_BASE_URL is not one type's trouble: it fails the run
                raise
            except (GraphPermissionError, RemoteError) as error:  # 401 (GraphCredentialsError) fails the run
                self.type_failed(key, error)
                errors.append(error)
        if errors and len(errors) == len(self.options.object_types):
            raise errors[0]  # nothing could be read: the run fails as a whole, with the first reason
        yield from self._departures()

    def type_failed(self, key: str, error: EntraAssetsError) -> None:
        """Record that ``key`` could not be read; users that failed take their derived types along, and the
        users Assets already holds stand in for the unread ones as the targets of references."""
        log.error("%s could not be read, so none is marked Deleted this run: %s", BY_KEY[key].name, error)
        failed = [key] + ([t.key for t in OBJECT_TYPES if t.derived] if key == "user" else [])
        for type_key in failed:
            self.result.failed[type_key] = str(error)
        if key == "user":
            known = {i for i, h in self.hashes["user"].items() if not is_deactivated(h)}
            scope = self.scope.users
            self.users_in_scope = (self.users_in_scope or set()) | (known if scope is None else known & scope)

    def _select(self, key: str, defaults: list[str]) -> list[str]:
        return defaults + [p for p in graph_select(self.types[key]) if p not in defaults]

    def _compare(self, record: Record) -> Iterator[Change]:
        """``record`` (built as its type is shaped: ``shared.records.build``) as a change, unless unchanged."""
        self.seen[record.type].add(record.id)
        stored = self.hashes[record.type].get(record.id)
        if stored == record.hash:
            self.result.unchanged[record.type] += 1
            return
        kind = "create" if stored is None else "update"
        (self.result.created if kind == "create" else self.result.updated)[record.type] += 1
        yield Change(kind, record)

    def _users(self) -> Iterator[Change]:
        result, scope = self.result, self.scope.users
        self.progress("Fetching users", 0)
        derived = Derived(names=orjson.loads(self.state.checkpoint(NAMES) or "{}"))
        round_ = self.graph.delta("users", self._select("user", USER_SELECT))
        self.users_in_scope = set()
        users = self.linker.users(round_.objects, scope, defer=True) if self.linker else round_.objects
        for user in users:
            if "@removed" in user or (scope is not None and user["id"] not in scope):
                continue  # gone or out of scope: a departure if it was pushed before
            record = map_user(user, result.warnings, scope, result.unmatched, self.accounts, shaped=self.types["user"])
            derived.observe(user, record)
            self.users_in_scope.add(record.id)
            result.read["user"] += 1
            if result.read["user"] % 5000 == 0:
                self.progress("Fetching users", result.read["user"])
            yield from self._compare(record)
        self.progress("Formatting data", result.read["user"])
        for record in derived.records(self.types):
            yield from self._compare(record)
        self.checkpoints[USERS_DELTA] = round_.delta_link
        self.checkpoints[NAMES] = orjson.dumps(derived.chosen_names()).decode()
        if self.linker:
            self.checkpoints.update(self.linker.checkpoints(full=True))
        self._keep_held_users()

    def _keep_held_users(self) -> None:
        """Users whose departure the guard will hold back stay in Assets as they are, so groups, devices and
        applications keep referring to them: a broken filter must not empty every member list instead."""
        active = [i for i, h in self.hashes["user"].items() if not is_deactivated(h)]
        gone = [i for i in active if i not in self.users_in_scope]
        if gone and self.options.guard({"user": len(gone)}, {"user": len(active)}):
            self.users_in_scope.update(gone)

    def _refs(self, links: Iterable[tuple[str, str]], kind: str, owner: str) -> list[str]:
        """The user ids among ``links`` ((id, object type) pairs), in scope; other object types are counted."""
        ids = []
        for object_id, object_type in links:
            if object_type == "user":
                ids.append(object_id)
            else:
                self.result.unmatched.add(f"{kind}: {object_type} (not a user) skipped", owner)
        return user_refs(ids, self.users_in_scope, self.result.unmatched, f"{kind} outside the scope", owner)

    def _groups(self) -> Iterator[Change]:
        self.progress("Fetching groups", 0)
        round_ = self.graph.delta("groups", self._select("group", GROUP_SELECT))
        groups: dict[str, dict] = {}
        members: dict[str, dict[str, str]] = defaultdict(dict)  # group id -> member id -> object type
        for group in round_.objects:  # one group may span several pages: merge its members@delta slices
            gid = group["id"]
            if "@removed" in group:
                groups.pop(gid, None)
                continue
            groups[gid] = groups.get(gid, {}) | {k: v for k, v in group.items() if k != "members@delta"}
            for link in group.get("members@delta") or ():
                if "@removed" in link:
                    members[gid].pop(link["id"], None)
                else:
                    members[gid][link["id"]] = object_type_of(link)
        owners = {o["id"]: self._expanded(o, "groups", "owners")
                  for o in self.graph.objects("groups", {"$select": "id", "$expand": "owners", "$top": "999"})}
        scope = self.scope.groups
        for gid, group in groups.items():
            if scope is not None and gid not in scope:
                continue
            if "group" in members[gid].values():
                self.result.warnings.add("nested group member (its members are not expanded)", gid)
            record = map_group(group, self._refs(members.pop(gid).items(), "member", gid),
                               self._refs(owners.get(gid, ()), "owner", gid), self.result.warnings,
                               shaped=self.types["group"])
            self.result.read["group"] += 1
            yield from self._compare(record)
        self.checkpoints[GROUPS_DELTA] = round_.delta_link

    def _expanded(self, obj: dict, resource: str, relation: str) -> list[tuple[str, str]]:
        """(id, object type) of ``obj``'s expanded ``relation``. ``$expand`` returns at most 20 related objects
        (reference/graph.md §1.5), so a full list is read again from the relationship itself."""
        links = obj.get(relation) or []
        if len(links) >= EXPAND_LIMIT:
            links = list(self.graph.objects(f"{resource}/{obj['id']}/{relation}", {"$select": "id", "$top": "999"}))
        return directory_links(links)

    def _devices(self) -> Iterator[Change]:
        self.progress("Fetching devices", 0)
        for device in self.graph.objects("devices", {"$select": ",".join(self._select("device", DEVICE_SELECT)),
                                                     "$expand": "registeredOwners", "$top": "999"}):
            owners = self._refs(self._expanded(device, "devices", "registeredOwners"), "registered owner",
                                device["id"])
            self.result.read["device"] += 1
            yield from self._compare(map_device(device, owners, self.result.warnings, shaped=self.types["device"]))

    def _applications(self) -> Iterator[Change]:
        self.progress("Fetching applications", 0)
        select = ",".join(self._select("application", APPLICATION_SELECT))
        for sp in self.graph.objects("servicePrincipals", {"$select": select, "$expand": "owners", "$top": "999"}):
            owners = self._refs(self._expanded(sp, "servicePrincipals", "owners"), "owner", sp["id"])
            self.result.read["application"] += 1
            yield from self._compare(map_application(sp, owners, self.result.warnings,
                                                     shaped=self.types["application"]))

    def _departures(self) -> Iterator[Change]:
        """Objects pushed before, now gone or out of scope and not yet marked Deleted (none of a type that
        failed to be read), unless the guard holds them back (``RunOptions.guard``)."""
        keys = [key for key in self.keys if key not in self.result.failed]
        active = {key: sum(not is_deactivated(h) for h in self.hashes[key].values()) for key in keys}
        gone = {key: sorted(i for i, h in self.hashes[key].items() if i not in self.seen[key]
                            and not is_deactivated(h)) for key in keys}
        reason = self.options.guard({k: len(v) for k, v in gone.items()}, active)
        if reason:
            self.options.hold(self.result, gone, reason)
            return
        for key, ids in gone.items():
            last = self.state.records(key, ids) if ids else {}
            for record_id in ids:
                self.result.deactivated[key] += 1
                yield Change("deactivate", deactivated(key, record_id, last.get(record_id)))


def object_type_of(link: dict) -> str:
    """``#microsoft.graph.user`` -> ``user`` (a directoryObject without a type is taken as a user)."""
    return (link.get("@odata.type") or "#microsoft.graph.user").rsplit(".", 1)[-1].lower()


def directory_links(objects: list[dict] | None) -> list[tuple[str, str]]:
    return [(o["id"], object_type_of(o)) for o in objects or () if "@removed" not in o]


def plan(graph: GraphClient, state: StateStore, options: RunOptions, scope: Scope, result: FullRunResult,
         progress: Progress = lambda stage, n: None) -> tuple[Iterator[Change], dict[str, str | None]]:
    """The changes of a full run, lazily, and the checkpoints dict that is filled once they are consumed.
    Reads only; writes nothing."""
    planner = Planner(graph, state, options, scope, result, progress)
    return planner.changes(), planner.checkpoints


def new_result(clock: Callable[[], float] = time.time) -> FullRunResult:
    started = clock()
    return FullRunResult(run_id=time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(started)) + "-" + uuid.uuid4().hex[:8])


def run_full(graph: GraphClient, state: StateStore, queue: ChangeQueue, payloads: PayloadStore,
             progress: Progress = lambda stage, n: None, clock: Callable[[], float] = time.time,
             options: RunOptions = RunOptions(),
             stamp: Callable[[FullRunResult, float], dict] = lambda result, started: {}) -> FullRunResult:
    """Read everything in scope, queue what changed since the last push, and return what happened.

    Idempotent: running it twice before the worker runs queues the same changes twice, which the worker
    coalesces. Raises the Graph errors of ``GraphClient`` and ``ScopeError`` before anything is queued.
    When the guard held departures back, the other changes are queued and the result says so
    (``held_back``); the caller reports it (``MassDeactivation``). ``stamp(result, started)`` gives fields added
    to the queued message (its trigger and a summary for the run history).
    """
    started = clock()
    result = new_result(clock)
    result.read_started = started
    pages_before = graph.pages_read
    scope = read_scope(graph, options)
    changes, checkpoints = plan(graph, state, options, scope, result, progress)

    def lines() -> Iterator[bytes]:
        for change in changes:
            record = change.record
            yield record_line(record.type, record.id, record.hash, record.data_json())
        result.seconds["fetch_and_format"] = clock() - started
        yield checkpoints_line(checkpoints)

    name = f"full-{result.run_id}.jsonl"
    payloads.write(name, lines())
    result.graph_pages = graph.pages_read - pages_before
    # Queued even when nothing changed: the worker then starts no execution, but commits the checkpoints and
    # notes that Assets holds these types as of ``read`` (shared.deliver.freshness), which older payloads must
    # not undo.
    read_in_full = tuple(k for k in options.type_keys() if k not in result.failed)
    queue.send(RecordsMessage(name, started, read_in_full, result.run_id, result.queued,
                              **stamp(result, started)).body())
    result.payload = name
    state.commit({}, {LAST_FULL: repr(started)})
    result.seconds["total"] = clock() - started
    log.info("full run %s: %s read, %d records queued, %d unchanged, %d departures held back", result.run_id,
             dict(result.read), result.queued, sum(result.unchanged.values()), sum(result.held_back.values()))
    return result


def guard_error(result: FullRunResult) -> MassDeactivation:
    """The one-line report of a run whose departures the guard held back."""
    counts = ", ".join(f"{n:,} {BY_KEY[k].name}" for k, n in sorted(result.held_back.items()))
    total = sum(result.held_back.values())
    return MassDeactivation(
        f"{total:,} objects would be marked Deleted ({counts}): {result.held_reason}; nothing was deactivated "
        f"(e.g. {', '.join(result.held_back_sample[:SAMPLE])}). If Entra ID really lost them, run "
        "`entra-assets sync --full --allow-mass-deactivation` once; otherwise check the scope settings")


def type_failure_error(result: FullRunResult) -> TypesNotRead:
    """The one-line report of a run in which object types could not be read (the others were pushed)."""
    return TypesNotRead("; ".join(f"{BY_KEY[k].name} could not be read, so nothing of it was marked Deleted: {why}"
                                  for k, why in sorted(result.failed.items()) if not BY_KEY[k].derived)
                        + " - the other object types were pushed")
