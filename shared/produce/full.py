"""Full reconciliation: read everything in scope, compare with what was last pushed, queue what changed.

``plan`` is the core shared by ``sync --full`` (``run_full``) and ``preview``: it reads users (initial round of
``/users/delta``, which also yields the delta link for incremental runs), groups (``/groups/delta`` with
``members``; owners from a list with ``$expand=owners``), devices and service principals (lists with their
owners expanded), maps each object to a record, and yields only the records whose content hash differs from
the stored one - creates and updates - followed by the departures: objects pushed before that are gone from
Entra or out of scope, pushed once more with ``Status = Deleted``. More departures than ``MAX_DEACTIVATIONS``
are held back (the accidental-deletion guard) unless the run allows them.

The five reads run concurrently, each a bounded number of objects ahead (``shared.produce.prefetch``), so a
run's wall time is about its longest chain of pages rather than their sum; the mapping stays in one thread,
in a fixed order. What full runs and catch-ups share (options, scope, guard, comparison, the group merge) is
``shared.produce.plan``.

``run_full`` streams the planned records into one claim-check payload and queues a pointer to it. Checkpoints
(delta links, chosen names of derived objects) travel at the end of the payload and are committed by the
worker only after Assets has finished the execution that carries the records. A run that finds nothing to
push queues nothing, starts no execution and commits its checkpoints at once.

Where the pages come from is a ``Source``: Graph itself (``LiveSource``), or the pages the segments of a long
run staged (``shared.produce.segments``), which ``run_full`` plans once every chain is complete.
"""
from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from contextlib import closing
from dataclasses import dataclass
from typing import Protocol

import orjson

from shared.clients.graph import GraphClient
from shared.contract.checkpoints import GROUPS_DELTA, NAMES, USERS_DELTA
from shared.contract.messages import RecordsMessage
from shared.contract.payload import checkpoints_line, record_line
from shared.errors import (
    ForeignLink,
    GraphPermissionError,
    MassDeactivation,
    ObjectLimitReached,
    RemoteError,
    TypesNotRead,
)
from shared.produce.plan import (
    SAMPLE,
    Change,
    FullRunResult,
    GroupRound,
    Plan,
    Progress,
    RunOptions,
    Scope,
    directory_refs,
    merge_group_round,
    owned_keys,
    read_scope,
    select_for,
)
from shared.produce.prefetch import Prefetch, Stream
from shared.produce.spill import IdSet
from shared.records.build import (
    APPLICATION_SELECT,
    DEVICE_SELECT,
    GROUP_SELECT,
    MANAGED_DEVICE_SELECT,
    SIGN_IN_SELECT,
    USER_SELECT,
    entra_device_id,
    last_sign_in,
    map_application,
    map_device,
    map_group,
    map_license,
    map_managed_device,
    map_user,
)
from shared.records.derived import Derived
from shared.records.schema import BY_KEY
from shared.store.ports import ChangeQueue, PayloadStore, StateStore

log = logging.getLogger(__name__)

LAST_FULL = "full/last"       # scheduling: when the last full run was queued (epoch seconds)
LAST_REPAIR = "full/repair"   # when the last repair run was queued (epoch seconds; REPAIR_INTERVAL_DAYS)
EXPAND_LIMIT = 20             # related objects returned by $expand on a list (reference/graph.md §1.5)

Mapping = Callable[[], Iterator[Change]]  # a type's mapping of its reads, run once they are started
# The order types are mapped in. Users first: the others' references are filtered by the users in scope.
# Groups last: their delta round is merged whole in its own thread, so devices and applications, which stream
# through bounded queues, are mapped while it is still being read - a run then takes about its longest chain.
# Managed devices after devices: their Entra Device links only to devices this run read.
MAPPING_ORDER = ("user", "device", "application", "license", "managed_device", "group")
# signInActivity on the /users list: at most 500 users a page, and 10 such requests a minute per app and tenant
# ("Identity and access reports service limits", https://learn.microsoft.com/graph/throttling-limits; the page
# size is ../reference/graph.md's, UNCONFIRMED). A tenant of N users therefore adds N/5,000 minutes to a full run
# (segmented runs carry it over invocations); a MAPPING_FILE that omits Last Sign-In turns the read off.


@dataclass(frozen=True)
class Chain:
    """One chain of pages a full run reads: its first request (``path``, ``params``), its ``name`` (also its
    read's name in logs) and the object type it feeds; the pages after the first are the ``@odata.nextLink``
    each page gives."""

    path: str
    params: dict[str, str]
    name: str
    key: str


def chains(options: RunOptions, keys: Iterable[str]) -> dict[str, Chain]:
    """The chains of pages that reading ``keys`` takes, by name. Users and groups are initial delta rounds: their
    last page carries the delta link of incremental runs. Group owners come from a list with ``$expand`` (delta
    does not track owners); so do device and application owners."""
    types = {t.key: t for t in options.types}  # the chosen ones (the table below is built for all of them)
    select = lambda key, defaults: ",".join(select_for(types.get(key, BY_KEY[key]), defaults))
    user = types.get("user", BY_KEY["user"])
    sign_ins = [Chain("users", {"$select": ",".join(SIGN_IN_SELECT), "$top": "500"}, "sign-ins", "user")]
    found = {
        "user": [Chain("users/delta", {"$select": select("user", USER_SELECT)}, "users", "user"),
                 *(sign_ins if any(a.locator == "lastSignIn" for a in user.attributes) else ())],
        "group": [Chain("groups/delta", {"$select": select("group", GROUP_SELECT)}, "groups", "group"),
                  Chain("groups", {"$select": "id", "$expand": "owners", "$top": "999"}, "group owners", "group")],
        "device": [Chain("devices", {"$select": select("device", DEVICE_SELECT), "$expand": "registeredOwners",
                                     "$top": "999"}, "devices", "device")],
        "application": [Chain("servicePrincipals", {"$select": select("application", APPLICATION_SELECT),
                                                    "$expand": "owners", "$top": "999"},
                              "service principals", "application")],
        # No query options: Graph documents none for /subscribedSkus but $select (UNCONFIRMED), and a tenant has
        # a few dozen SKUs at most.
        "license": [Chain("subscribedSkus", {}, "licenses", "license")],
        # No $top: Intune pages by 1,000 by default, and its largest $top is not documented (UNCONFIRMED).
        "managed_device": [Chain("deviceManagement/managedDevices",
                                 {"$select": select("managed_device", MANAGED_DEVICE_SELECT)},
                                 "managed devices", "managed_device")],
    }
    return {chain.name: chain for key in keys for chain in found[key]}


class CompleteRun(Protocol):
    """A segmented full run whose reads are complete (``shared.produce.segments``): what ``run_full`` plans."""

    run_id: str
    started: float        # when its first segment began reading Graph
    pages: int            # the Graph pages its segments read
    segments: list[float]  # the seconds each of its segments read
    source: Source


class Source(Protocol):
    """Where a full run's chains come from: Graph itself (``LiveSource``), or the pages earlier segments staged
    (``shared.produce.segments.StagedSource``). ``objects`` may run in a read's own thread."""

    def objects(self, chain: Chain) -> Iterable[dict]:
        """Every object of ``chain``, in page order; raises what reading it raised."""
        ...

    def delta_link(self, chain: Chain) -> str | None:
        """The delta link of a delta chain's last page, once ``objects`` ended (None for a list)."""
        ...


class LiveSource:
    """The chains read from Graph as they are consumed."""

    def __init__(self, graph: GraphClient):
        self.graph = graph
        self._links: dict[str, str | None] = {}

    def objects(self, chain: Chain) -> Iterator[dict]:
        for page in self.graph.pages(chain.path, chain.params):
            yield from page.get("value", ())
            self._links[chain.name] = page.get("@odata.deltaLink") or self._links.get(chain.name)

    def delta_link(self, chain: Chain) -> str | None:
        return self._links.get(chain.name)


def repair_due(state: StateStore, interval_days: int, now: float) -> bool:
    """True when a new full run should be a repair: ``interval_days`` (0: never) since the last repair, or since
    the first full run (which starts the clock: it pushes everything anyway)."""
    last = state.checkpoint(LAST_REPAIR)
    return bool(interval_days) and last is not None and now - float(last) >= interval_days * 86400


def full_sync_due(state: StateStore, interval_hours: float, now: float) -> bool:
    """True when no full run was queued within ``interval_hours``."""
    last = state.checkpoint(LAST_FULL)
    return last is None or now - float(last) >= interval_hours * 3600


class FullReads:
    """The reads of whole object types into ``plan``: each chain prefetched from ``source`` (Graph by default) in
    its own thread (``shared.produce.prefetch``), mapped and compared in this one, in ``MAPPING_ORDER``. Not
    reusable."""

    def __init__(self, plan: Plan, object_types: Iterable[str], source: Source | None = None):
        self.plan = plan
        self.keys = tuple(sorted(object_types, key=MAPPING_ORDER.index))
        self.chains = chains(plan.options, self.keys)
        self.source = source or LiveSource(plan.graph)
        self.linker = plan.linker()
        self.accounts = self.linker.accounts if self.linker else None  # Entra id -> Atlassian account id
        self.device_ids: set[str] = set()  # the Entra deviceIds (lower case) of the devices read: Intune links

    def _open(self, key: str, reads: Prefetch) -> Mapping:
        """Declare ``key``'s reads on ``reads``; returns their mapping. (Looked up on each call: a dict of bound
        methods kept on self would be a reference cycle, keeping the plan's ``seen`` ids alive after the run
        until the garbage collector happens to run - through the whole push.)"""
        opener = {"user": self._users, "group": self._groups, "device": self._devices,
                  "application": self._applications, "license": self._licenses,
                  "managed_device": self._managed_devices}[key]
        return opener(reads)

    def changes(self) -> Iterator[Change]:
        """Every type's creates and updates, then the departures. A type that cannot be read (a missing
        permission, an unlicensed feature, a property Graph refuses) fails alone (SPEC §7): what it yielded
        before stays valid data, its failure is in ``result.failed``, and none of its objects is marked
        Deleted. Refused credentials (401), a link off GRAPH_BASE_URL, or every type failing, fail the run.
        Closing the generator early stops the reads."""
        errors = []
        with Prefetch() as reads:
            mappings = {key: self._open(key, reads) for key in self.keys}
            reads.start()
            for key in self.keys:
                try:
                    yield from mappings[key]()
                except ForeignLink:  # a link off GRAPH_BASE_URL is not one type's trouble: it fails the run
                    raise
                except (GraphPermissionError, RemoteError) as error:  # 401 (GraphCredentialsError) fails the run
                    reads.stop(key)
                    self.plan.type_failed(key, error)
                    errors.append(error)
        if errors and len(errors) == len(self.keys):
            raise errors[0]  # nothing could be read: the run fails as a whole, with the first reason
        yield from self.plan.unseen_departures(owned_keys(self.keys))
        self.plan.count_objects()

    def read(self, key: str) -> Iterator[Change]:
        """The creates and updates of ``key`` alone, without departures; raises what its reads raise."""
        with Prefetch() as reads:
            mapping = self._open(key, reads)
            reads.start()
            yield from mapping()

    # -- users ---------------------------------------------------------------------------------------------

    def _stream(self, reads: Prefetch, name: str, reduce: Callable[[Iterable[dict]], object] | None = None) -> Stream:
        chain = self.chains[name]
        return reads.stream(chain.key, name, lambda: self.source.objects(chain), reduce=reduce)

    def _users(self, reads: Prefetch) -> Mapping:
        stream = self._stream(reads, "users")
        sign_ins = self._stream(reads, "sign-ins", reduce=_sign_ins) if "sign-ins" in self.chains else None
        return lambda: self._map_users(stream, sign_ins)

    def _last_sign_ins(self, sign_ins: Stream | None) -> dict[str, str]:
        """User id -> Last Sign-In, or {} where the tenant does not give it (no Entra ID P1/P2, no
        AuditLog.Read.All): the attribute is then left empty, the reason is noted, and nothing else changes."""
        if sign_ins is None:
            return {}
        try:
            return sign_ins.result()
        except (GraphPermissionError, RemoteError) as error:
            log.warning("Last Sign-In is left empty this run: %s", error)
            self.plan.result.warnings.add(f"Last Sign-In not read: {error}", "signInActivity")
            return {}

    def _map_users(self, stream: Stream, sign_ins: Stream | None) -> Iterator[Change]:
        plan, result, scope = self.plan, self.plan.result, self.plan.scope.users
        plan.progress("Fetching users", 0)
        last_sign_ins = self._last_sign_ins(sign_ins)
        derived = Derived(names=orjson.loads(plan.state.checkpoint(NAMES) or "{}"))
        plan.users_in_scope = IdSet()
        users = self.linker.users(stream, scope, defer=True) if self.linker else stream
        for user in users:
            if "@removed" in user or (scope is not None and user["id"] not in scope):
                continue  # gone or out of scope: a departure if it was pushed before
            record = map_user(user, result.warnings, scope, result.unmatched, self.accounts,
                              shaped=plan.types["user"], last_sign_in=last_sign_ins.get(user["id"]))
            derived.observe(user, record)
            plan.users_in_scope.add(record.id)
            result.read["user"] += 1
            if result.read["user"] % 5000 == 0:
                plan.progress("Fetching users", result.read["user"])
            yield from plan.compare(record)
        plan.progress("Formatting data", result.read["user"])
        for record in derived.records(plan.types):
            yield from plan.compare(record)
        plan.checkpoints[USERS_DELTA] = self.source.delta_link(self.chains["users"])  # the round is complete
        plan.checkpoints[NAMES] = orjson.dumps(derived.chosen_names()).decode()
        if self.linker:
            plan.checkpoints.update(self.linker.checkpoints(full=True))
        self._keep_held_users()

    def _keep_held_users(self) -> None:
        """Users whose departure the guard will hold back stay in Assets as they are, so groups, devices and
        applications keep referring to them: a broken filter must not empty every member list instead."""
        plan = self.plan
        active, gone = 0, []
        for user_id in plan.hashes["user"].active():
            active += 1
            if user_id not in plan.users_in_scope:
                gone.append(user_id)
        if gone and plan.options.guard({"user": len(gone)}, {"user": active}):
            plan.users_in_scope.update(gone)

    # -- groups, devices, applications ----------------------------------------------------------------------

    def _groups(self, reads: Prefetch) -> Mapping:
        entries = self._stream(reads, "groups", reduce=merge_group_round)
        owners = self._stream(reads, "group owners", reduce=self._owners)
        return lambda: self._map_groups(entries, owners)

    def _owners(self, groups: Iterable[dict]) -> dict[str, list[tuple[str, str]]]:
        """Group id -> its owners (id, object type), from the listing with ``$expand=owners``. Runs in the read's
        thread: it reads Graph and nothing of the plan."""
        return {g["id"]: self._expanded(g, "groups", "owners") for g in groups}

    def _map_groups(self, entries: Stream, owners_read: Stream) -> Iterator[Change]:
        plan, scope = self.plan, self.plan.scope.groups
        plan.progress("Fetching groups", 0)
        owners: dict[str, list[tuple[str, str]]] = owners_read.result()
        merged: GroupRound
        with entries.result() as merged:
            for gid, group in merged.groups.items():
                if "@removed" in group or (scope is not None and gid not in scope):
                    continue
                if merged.has_group_member(gid):
                    plan.result.warnings.add("nested group member (its members are not expanded)", gid)
                record = map_group(group, plan.user_ids(merged.members(gid), "member", gid, in_order=True),
                                   plan.user_ids(owners.get(gid, ()), "owner", gid), plan.result.warnings,
                                   shaped=plan.types["group"])
                plan.result.read["group"] += 1
                yield from plan.compare(record)
        plan.checkpoints[GROUPS_DELTA] = self.source.delta_link(self.chains["groups"])  # merged whole: complete

    def _expanded(self, obj: dict, resource: str, relation: str) -> list[tuple[str, str]]:
        """(id, object type) of ``obj``'s expanded ``relation``. ``$expand`` returns at most 20 related objects
        (reference/graph.md §1.5), so a full list is read again from the relationship itself. Thread-safe."""
        refs = obj.get(relation) or []
        if len(refs) >= EXPAND_LIMIT:
            refs = list(self.plan.graph.objects(f"{resource}/{obj['id']}/{relation}",
                                                {"$select": "id", "$top": "999"}))
        return directory_refs(refs)

    def _devices(self, reads: Prefetch) -> Mapping:
        stream = self._stream(reads, "devices")
        return lambda: self._map_devices(stream)

    def _map_devices(self, stream: Stream) -> Iterator[Change]:
        plan = self.plan
        plan.progress("Fetching devices", 0)
        for device in stream:
            owners = plan.user_ids(self._expanded(device, "devices", "registeredOwners"), "registered owner",
                                   device["id"])
            if isinstance(device.get("deviceId"), str):
                self.device_ids.add(device["deviceId"].lower())
            plan.result.read["device"] += 1
            yield from plan.compare(map_device(device, owners, plan.result.warnings, shaped=plan.types["device"]))

    def _applications(self, reads: Prefetch) -> Mapping:
        stream = self._stream(reads, "service principals")
        return lambda: self._map_applications(stream)

    def _map_applications(self, stream: Stream) -> Iterator[Change]:
        plan = self.plan
        plan.progress("Fetching applications", 0)
        for sp in stream:
            owners = plan.user_ids(self._expanded(sp, "servicePrincipals", "owners"), "owner", sp["id"])
            plan.result.read["application"] += 1
            yield from plan.compare(map_application(sp, owners, plan.result.warnings,
                                                   shaped=plan.types["application"]))


    def _licenses(self, reads: Prefetch) -> Mapping:
        stream = self._stream(reads, "licenses")
        return lambda: self._map_licenses(stream)

    def _map_licenses(self, stream: Stream) -> Iterator[Change]:
        plan = self.plan
        plan.progress("Fetching licences", 0)
        for sku in stream:
            plan.result.read["license"] += 1
            yield from plan.compare(map_license(sku, plan.result.warnings, shaped=plan.types["license"]))


    def _managed_devices(self, reads: Prefetch) -> Mapping:
        stream = self._stream(reads, "managed devices")
        return lambda: self._map_managed_devices(stream)

    def _map_managed_devices(self, stream: Stream) -> Iterator[Change]:
        """Intune devices. Primary User links to a user in scope; Entra Device to a device this run read (when
        devices were not read - not chosen, or refused - to whatever Assets finds by that Device ID)."""
        plan = self.plan
        plan.progress("Fetching Intune devices", 0)
        devices = self.device_ids if "device" in self.keys and "device" not in plan.result.failed else None
        for device in stream:
            mid = device["id"]
            user = device.get("userId")
            users = plan.user_ids([(user, "user")], "primary user", mid) if isinstance(user, str) and user else []
            entra = entra_device_id(device)
            if entra is not None and devices is not None and entra not in devices:
                plan.result.unmatched.add("Intune device: its Entra device is not in Entra ID", mid)
                entra = None
            plan.result.read["managed_device"] += 1
            yield from plan.compare(map_managed_device(device, users[0] if users else None, entra,
                                                       plan.result.warnings, shaped=plan.types["managed_device"]))


def _sign_ins(users: Iterable[dict]) -> dict[str, str]:
    """User id -> Last Sign-In of the users who signed in, from the sign-in listing (in the read's thread)."""
    found = {}
    for user in users:
        when = last_sign_in(user)
        if when is not None:
            found[user["id"]] = when
    return found


def plan(graph: GraphClient, state: StateStore, options: RunOptions, scope: Scope, result: FullRunResult,
         progress: Progress = lambda stage, n: None, source: Source | None = None
         ) -> tuple[Iterator[Change], dict[str, str | None]]:
    """The changes of a full run, lazily, and the checkpoints dict that is filled once they are consumed.
    Reads only (Graph, or the staged pages of ``source``); writes nothing. The reads start with the first change
    asked for; closing the iterator stops them."""
    run = Plan(graph, state, options, scope, result, progress)
    return FullReads(run, options.object_types, source).changes(), run.checkpoints


def new_run_id(started: float) -> str:
    """A full run's id: when it started (UTC, sortable) and a random suffix."""
    return time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(started)) + "-" + uuid.uuid4().hex[:8]


def new_result(clock: Callable[[], float] = time.time) -> FullRunResult:
    return FullRunResult(run_id=new_run_id(clock()))


def run_full(graph: GraphClient, state: StateStore, queue: ChangeQueue, payloads: PayloadStore,
             progress: Progress = lambda stage, n: None, clock: Callable[[], float] = time.time,
             options: RunOptions | None = None,
             stamp: Callable[[FullRunResult, float], dict] = lambda result, started: {},
             staged: CompleteRun | None = None) -> FullRunResult:
    """Read everything in scope, queue what changed since the last push, and return what happened.

    Idempotent: running it twice before the worker runs queues the same changes twice, which the worker
    coalesces. Raises the Graph errors of ``GraphClient`` and ``ScopeError`` before anything is queued.
    When the guard held departures back, the other changes are queued and the result says so
    (``held_back``); the caller reports it (``MassDeactivation``). ``stamp(result, started)`` gives fields added
    to the queued message (its trigger and a summary for the run history). ``staged``: a segmented run whose
    reads are complete (``shared.produce.segments``) - its pages are planned instead of reading Graph again,
    under its id and start time.
    """
    options = options or RunOptions()
    started = staged.started if staged else clock()
    result = FullRunResult(run_id=staged.run_id) if staged else new_result(clock)
    result.read_started = started
    result.segments = list(staged.segments) if staged else []
    pages_before = graph.pages_read - (staged.pages if staged else 0)
    scope = read_scope(graph, options)
    changes, checkpoints = plan(graph, state, options, scope, result, progress, staged.source if staged else None)

    def lines() -> Iterator[bytes]:
        for change in changes:
            record = change.record
            yield record_line(record.type, record.id, record.hash, record.data_json())
        result.seconds["fetch_and_format"] = clock() - started
        yield checkpoints_line(checkpoints)

    name = f"full-{result.run_id}.jsonl"
    with closing(changes):  # a payload write that fails stops the reads at once
        payloads.write(name, lines())
    result.graph_pages = graph.pages_read - pages_before
    if options.over_allowance(result):  # held whole: nothing queued, no checkpoint moves (object_limit_error)
        payloads.delete(name)
        result.over_allowance = True
        state.commit({}, {LAST_FULL: repr(started)})  # tried again at the next full run, not every tick
        log.warning("full run %s held: %s", result.run_id, result.allowance_line())
        return result
    # Queued even when nothing changed: the worker then starts no execution, but commits the checkpoints and
    # notes that Assets holds these types as of ``read`` (shared.deliver.freshness), which older payloads must
    # not undo.
    read_in_full = tuple(k for k in options.type_keys() if k not in result.failed)
    queue.send(RecordsMessage(name, started, read_in_full, result.run_id, result.queued,
                              **stamp(result, started)).body())
    result.payload = name
    repaired = result.repair or state.checkpoint(LAST_REPAIR) is None  # the first full run starts the clock
    state.commit({}, {LAST_FULL: repr(started)} | ({LAST_REPAIR: repr(started)} if repaired else {}))
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


def object_limit_error(result: FullRunResult) -> ObjectLimitReached:
    """The one-line report of a run held because its new objects would cross ASSETS_OBJECT_LIMIT."""
    counts = ", ".join(f"{n:,} {BY_KEY[k].name}" for k, n in sorted(result.created.items()) if n)
    return ObjectLimitReached(
        f"this run would create {sum(result.created.values()):,} objects ({counts}) and entra-assets keeps "
        f"{result.objects_kept:,} in Assets: {result.objects_after:,} is more than ASSETS_OBJECT_LIMIT="
        f"{result.object_limit:,}, so nothing was pushed. If the site's allowance is higher (Premium and "
        "Enterprise include 50,000 objects; the extra-objects add-on raises it), set ASSETS_OBJECT_LIMIT to it; "
        "or narrow SYNC_OBJECT_TYPES or the scope; or run `entra-assets sync --full --allow-object-limit` once")


def type_failure_error(result: FullRunResult) -> TypesNotRead:
    """The one-line report of a run in which object types could not be read (the others were pushed)."""
    return TypesNotRead("; ".join(f"{BY_KEY[k].name} could not be read, so nothing of it was marked Deleted: {why}"
                                  for k, why in sorted(result.failed.items()) if not BY_KEY[k].derived)
                        + " - the other object types were pushed")
