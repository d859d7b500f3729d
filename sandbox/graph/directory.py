"""The directory model of the Graph emulator: resource types, Graph errors, ``$select``/``$top``/``$expand``
parsing and the rendering of stored objects, links and delta entries. HTTP routing lives in
``sandbox/graph/emulator.py``; the ``$filter`` language in ``sandbox/graph/odata.py``.

Sources: /work/shared/reference/graph.md §1.1-1.6 and §2 (see the emulator's module docstring). Properties are
those of the Graph v1.0 catalogue (``shared.records.graph_catalogue``, generated from msgraph-sdk's v1.0 models); which
of them support ``$filter`` follows the Graph docs' "Supports $filter" notes as far as the sync needs them
(UNCONFIRMED in detail).
"""
from __future__ import annotations

from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import cache, cached_property

from sandbox.graph.odata import FilterError, Predicate, compile_filter
from sandbox.tenant.model import Change, Tenant
from shared.records import graph_catalogue as catalogue

LIST_PAGE_SIZE = 100             # default page of lists and relationships (reference §1.2)
MAX_TOP = 999
EXPAND_PAGE_SIZE = 100           # a list page with $expand holds at most 100 objects (reference §1.5)
EXPAND_ITEMS = 20                # an expanded relationship holds at most 20 objects (reference §1.5)


@cache
def structural(name: str) -> Mapping[str, catalogue.Property]:
    """The properties of the entity type ``name`` that are not relationships (what ``$select`` returns)."""
    return {n: p for n, p in catalogue.entity_type(name).items() if p.kind != catalogue.NAVIGATION}


class GraphError(Exception):
    """An error answer in Graph's shape; raised anywhere below the emulator's ``_respond``."""

    def __init__(self, status: int, code: str, message: str, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status, self.code, self.message, self.headers = status, code, message, headers or {}


def bad_request(message: str, code: str = "Request_BadRequest") -> GraphError:
    return GraphError(400, code, message)


def sync_state_not_found() -> GraphError:
    return GraphError(400, "syncStateNotFound", "The sync state generation is not found. The delta token is "
                                                "expired and data must be synchronized again.")


def not_found(resource: str) -> GraphError:
    return GraphError(404, "Request_ResourceNotFound", f"Resource '{resource}' does not exist or one of its "
                                                       "queried reference-property objects are not present.")


# -- resource types ----------------------------------------------------------------------------------------
# Property names and types come from the Graph v1.0 catalogue (shared/records/graph_catalogue.json, generated from
# msgraph-sdk's v1.0 models): a $select or $filter naming anything else is Graph's 400. The tenant may store
# fewer properties than the catalogue has; a selected property it does not hold is null (a collection []), as
# Graph renders unset properties. What is hand-written below are the rules on top: the default property set,
# the properties only a single read returns, which properties support $filter ("Supports $filter" in the
# Graph docs, as far as the sync needs them; UNCONFIRMED in detail) and the relationships served.

# Default property set of a user without $select (reference §1.3).
DEFAULT_USER_PROPERTIES = ("businessPhones", "displayName", "givenName", "id", "jobTitle", "mail", "mobilePhone",
                           "officeLocation", "preferredLanguage", "surname", "userPrincipalName")
# Stored outside the Entra main store: only on a single user, never in a delta $select (reference §1.3).
OUTSIDE_MAIN_STORE = ("aboutMe", "birthday", "hireDate", "interests", "mailboxSettings", "mySite",
                      "pastProjects", "preferredName", "responsibilities", "schools", "skills")
_USER_FILTER = ("id", "userPrincipalName", "mail", "displayName", "givenName", "surname", "userType", "department",
                "jobTitle", "employeeId", "companyName", "officeLocation", "city", "country", "employeeType",
                "state", "postalCode", "mailNickname", "usageLocation", "mobilePhone", "preferredLanguage",
                "streetAddress", "onPremisesSamAccountName", "onPremisesImmutableId", "accountEnabled",
                "onPremisesSyncEnabled", "createdDateTime", "employeeHireDate", "proxyAddresses", "otherMails",
                "businessPhones", "imAddresses")
# signInActivity's sub-properties that support $filter (eq, ne, not, ge, le) "but not with any other filterable
# properties" (msgraph-sdk's v1.0 user model; which sub-properties: UNCONFIRMED, the three DateTimeOffsets).
_USER_FILTER_PATHS = ("signInActivity/lastSignInDateTime", "signInActivity/lastNonInteractiveSignInDateTime",
                      "signInActivity/lastSuccessfulSignInDateTime")
# Refused in a users-delta $select: https://github.com/microsoftgraph/microsoft-graph-explorer-v4/issues/3189.
USER_NOT_IN_DELTA = ("signInActivity",)
GROUP_SINGLE_ONLY = ("allowExternalSenders", "autoSubscribeNewMembers", "hideFromAddressLists",
                     "hideFromOutlookClients", "isArchived", "isSubscribedByMail", "unseenCount")
_GROUP_FILTER = ("id", "displayName", "description", "mail", "mailNickname", "classification", "membershipRule",
                 "onPremisesSamAccountName", "preferredLanguage", "securityIdentifier", "uniqueName", "mailEnabled",
                 "securityEnabled", "isAssignableToRole", "onPremisesSyncEnabled", "createdDateTime",
                 "expirationDateTime", "renewedDateTime", "groupTypes", "proxyAddresses")
_DEVICE_FILTER = ("id", "deviceId", "displayName", "operatingSystem", "operatingSystemVersion", "trustType",
                  "manufacturer", "model", "deviceOwnership", "enrollmentType", "enrollmentProfileName",
                  "managementType", "profileType", "mdmAppId", "deviceCategory", "accountEnabled", "isCompliant",
                  "isManaged", "onPremisesSyncEnabled", "isRooted", "approximateLastSignInDateTime",
                  "registrationDateTime", "onPremisesLastSyncDateTime", "physicalIds", "systemLabels",
                  "deviceVersion")
_SP_FILTER = ("id", "appId", "displayName", "servicePrincipalType", "appDisplayName", "preferredSingleSignOnMode",
              "signInAudience", "accountEnabled", "appRoleAssignmentRequired", "appOwnerOrganizationId",
              "servicePrincipalNames", "tags", "alternativeNames")


@dataclass(frozen=True)
class Resource:
    """One directory collection: its segment (also the tenant's change-log kind), its type and the rules the
    emulator applies on top of the type's v1.0 properties."""

    name: str                          # "groups": the URL segment and the tenant kind
    type: str                          # "group": microsoft.graph.group, as the catalogue names it
    filterable: tuple[str, ...]        # properties that support $filter
    default_set: tuple[str, ...] | None = None  # returned without $select; None: every selectable property
    single_only: tuple[str, ...] = ()  # selectable only when reading one object
    endswith: frozenset[str] = frozenset()
    delta_nav: str | None = None       # relationship tracked by delta when selected (manager / members)
    nav_by_default: bool = False       # ... and also tracked without $select (groups, reference §2.5)
    relations: tuple[str, ...] = ()    # GET /{name}/{id}/{relation}, each also $expand-able on lists
    split_links: bool = False          # the tracked relationship's entries are split over pages
    not_in_delta: tuple[str, ...] = ()  # selectable in lists and single reads but refused in a delta $select
    filter_paths: tuple[str, ...] = ()  # "complex/sub" properties that support $filter, each on its own

    @property
    def entity(self) -> str:
        return f"microsoft.graph.{self.type}"

    @property
    def odata_type(self) -> str:
        return f"#microsoft.graph.{self.type}"

    @cached_property
    def properties(self) -> tuple[str, ...]:
        """Selectable in lists, delta and single reads: the type's v1.0 properties but the single-only ones."""
        return tuple(n for n in structural(self.type) if n not in self.single_only)

    @cached_property
    def default(self) -> tuple[str, ...]:
        return self.properties if self.default_set is None else self.default_set

    @cached_property
    def collections(self) -> frozenset[str]:
        """Properties that are collections (an unset one comes back as [])."""
        return frozenset(n for n, p in structural(self.type).items() if p.collection)

    @cached_property
    def filter_types(self) -> dict[str, str]:
        """Filterable property -> its type as ``$filter`` compares it (``String``, ``Collection(String)`` ...)."""
        types = {n: structural(self.type)[n].edm for n in self.filterable}
        for path in self.filter_paths:
            head, sub = path.split("/", 1)
            types[path] = catalogue.complex_type(structural(self.type)[head].type)[sub].edm
        return types

    @cached_property
    def token_properties(self) -> tuple[str, ...]:
        """Every selectable name in a fixed order: tokens carry a $select as indices into this tuple."""
        return self.properties + self.single_only + ((self.delta_nav,) if self.delta_nav else ())

    @cached_property
    def index(self) -> dict[str, int]:
        return {name: i for i, name in enumerate(self.token_properties)}

    @cached_property
    def known(self) -> frozenset[str]:
        return frozenset(self.properties + self.single_only)


USERS = Resource("users", "user", _USER_FILTER, DEFAULT_USER_PROPERTIES, OUTSIDE_MAIN_STORE,
                 frozenset({"mail", "userPrincipalName"}), delta_nav="manager", relations=("manager",),
                 not_in_delta=USER_NOT_IN_DELTA, filter_paths=_USER_FILTER_PATHS)
GROUPS = Resource("groups", "group", _GROUP_FILTER, None, GROUP_SINGLE_ONLY, frozenset({"mail"}),
                  delta_nav="members", nav_by_default=True, relations=("members", "owners", "transitiveMembers"),
                  split_links=True)
DEVICES = Resource("devices", "device", _DEVICE_FILTER, relations=("registeredOwners", "registeredUsers"))
SERVICE_PRINCIPALS = Resource("servicePrincipals", "servicePrincipal", _SP_FILTER, relations=("owners",))
RESOURCES = {r.name: r for r in (USERS, GROUPS, DEVICES, SERVICE_PRINCIPALS)}
BY_TYPE = {r.type: r for r in RESOURCES.values()}
# What a member/owner link may point at; orgContacts are ids only in the sandbox.
LINK_TYPES = {"user": USERS, "group": GROUPS, "device": DEVICES, "orgContact": None}
ODATA_TYPES = {t: f"#microsoft.graph.{t}" for t in (*LINK_TYPES, "servicePrincipal", "directoryObject")}
# $select on a directoryObject collection (members, owners ...) may name a property of any type it can hold.
DIRECTORY_OBJECT_PROPERTIES = frozenset().union(*(structural(t) for t in LINK_TYPES))
TYPE_CASTS = {f"microsoft.graph.{t}": t for t in LINK_TYPES}


def unknown_property(name: str, entity: str) -> GraphError:
    """Graph's 400 for a name the type does not have, e.g. a beta-only property in a v1.0 ``$select``: ``{"error":
    {"code":"BadRequest","message":"Could not find a property named 'publisherName' on type
    'microsoft.graph.servicePrincipal'."}}``."""
    return bad_request(f"Could not find a property named '{name}' on type '{entity}'.", "BadRequest")


# -- query options -----------------------------------------------------------------------------------------

def parse_select(raw: str, res: Resource, *, where: str) -> tuple[str, ...]:
    """Validate a ``$select`` for ``where`` ("delta", "list" or "single"); the names in order, deduplicated.

    Raises GraphError 400 for unknown names, for the tracked relationship (``manager``/``members``) outside
    delta and for properties stored outside the main store in delta (Graph's message lists them) or in a list.
    """
    names = list(dict.fromkeys(name.strip() for name in raw.split(",")))
    for name in names:
        if name not in res.index or (name == res.delta_nav and where != "delta"):
            raise unknown_property(name, res.entity)
    refused = [n for n in names if n in res.not_in_delta]
    if refused and where == "delta":  # Graph's words and code, confirmed (USER_NOT_IN_DELTA)
        raise bad_request("Invalid request for delta query: for this entity set, $expand/$select is not supported "
                          f"for the following properties: {', '.join(refused)}", "BadRequest")
    outside = [n for n in names if n in res.single_only]
    if outside and where == "delta":
        raise bad_request("Invalid request for delta query: $expand/$select is not supported for the following "
                          f"properties: {', '.join(outside)}", "Request_UnsupportedQuery")
    if outside and where == "list":
        raise bad_request(f"The following properties can only be selected on a single {res.type}: "
                          f"{', '.join(outside)}", "Request_UnsupportedQuery")
    return tuple(names)


def parse_related_select(raw: str, cast: str | None) -> tuple[str, ...]:
    """``$select`` on a relationship (directoryObjects, or one type after a cast)."""
    known = structural(cast) if cast else DIRECTORY_OBJECT_PROPERTIES
    names = tuple(dict.fromkeys(name.strip() for name in raw.split(",")))
    for name in names:
        if name not in known:
            raise unknown_property(name, f"microsoft.graph.{cast or 'directoryObject'}")
    return names


def parse_top(raw: str | None, default: int = LIST_PAGE_SIZE) -> int:
    """``$top`` of a list: 1-999 (reference §1.2)."""
    if raw is None:
        return default
    if not raw.strip().isdigit() or not 1 <= int(raw) <= MAX_TOP:
        raise bad_request(f"Invalid page size specified: '{raw}'. Must be between 1 and {MAX_TOP} inclusive.")
    return int(raw)


def parse_expand(raw: str | None, res: Resource) -> tuple[str, ...]:
    """``$expand`` of a list or single read: relationship names only; nested options are 400 (reference §1.5:
    no nested ``$select``/``$filter`` inside ``$expand`` on lists; emulator choice for single reads too)."""
    if raw is None:
        return ()
    names = tuple(dict.fromkeys(n.strip() for n in raw.split(",")))
    for name in names:
        base = name.split("(", 1)[0].strip()
        if base not in res.relations or base == "transitiveMembers":
            raise unknown_property(base, res.entity)
        if "(" in name:
            raise bad_request(f"Query options inside $expand ('{name}') are not supported on directory objects.",
                              "Request_UnsupportedQuery")
    if len(names) > 1:
        raise bad_request("Only one navigation property can be expanded at a time (emulator).",
                          "Request_UnsupportedQuery")
    return names


def compile_where(raw: str | None, res: Resource, advanced: bool) -> Predicate | None:
    """The ``$filter`` of a list as a predicate (None without one); GraphError 400 as Graph words it."""
    if raw is None:
        return None
    try:
        return compile_filter(raw, entity=res.entity, types=res.filter_types, known=res.known, advanced=advanced,
                              endswith=res.endswith, alone=res.filter_paths)
    except FilterError as exc:
        raise bad_request(exc.message, exc.code) from None


# -- relationships -----------------------------------------------------------------------------------------

def related(tenant: Tenant, res: Resource, oid: str, relation: str) -> Sequence[tuple[str, str]]:
    """The links of ``relation`` of object ``oid`` as ``(odata type name, id)`` (caller holds the lock)."""
    if res is GROUPS:
        if relation == "members":
            return tenant.members.get(oid, ())
        if relation == "owners":
            return [("user", u) for u in tenant.group_owners.get(oid, ())]
        if relation == "transitiveMembers":
            return transitive_members(tenant, oid)
    if res is DEVICES:
        return [("user", u) for u in tenant.device_owners.get(oid, ())]
    if res is SERVICE_PRINCIPALS:
        return [("user", u) for u in tenant.sp_owners.get(oid, ())]
    if res is USERS and relation == "manager":
        manager = tenant.managers.get(oid)
        return [("user", manager)] if manager else []
    raise KeyError(relation)


def transitive_members(tenant: Tenant, gid: str) -> list[tuple[str, str]]:
    """Members of ``gid`` and of its nested groups (breadth first; nested groups themselves included), once."""
    out, seen, queue = [], {gid}, deque([gid])
    while queue:
        for link in tenant.members.get(queue.popleft(), ()):
            if link[1] not in seen:
                seen.add(link[1])
                out.append(link)
                if link[0] == "group":
                    queue.append(link[1])
    return out


# -- rendering ---------------------------------------------------------------------------------------------

def render(obj: dict, keys: Sequence[str], collections: frozenset[str] | Sequence[str]) -> dict:
    """The ``keys`` of a stored object: unset ones null, unset collections ``[]``."""
    out = dict(zip(keys, map(obj.get, keys)))
    for key in collections:
        if key in out and out[key] is None:
            out[key] = []
    return out


def render_related(tenant: Tenant, odata_type: str, oid: str, select: Sequence[str] | None) -> dict | None:
    """A linked directory object with ``@odata.type``: the selected properties its type has (its default set
    without ``$select``); orgContacts are id-only stubs; None if the object no longer exists."""
    res = LINK_TYPES.get(odata_type)
    if res is None:
        return {"@odata.type": ODATA_TYPES[odata_type], "id": oid}
    obj = tenant.objects[res.name].get(oid)
    if obj is None:
        return None
    names = res.default if select is None else [n for n in select if n in res.known]
    keys = ("id", *(n for n in names if n != "id"))
    return {"@odata.type": ODATA_TYPES[odata_type], **render(obj, keys, res.collections)}


def link_entry(link: tuple) -> dict:
    """A ``members@delta``/``manager@delta`` entry for ``(type, id)`` or ``(type, id, added)``."""
    entry = {"@odata.type": ODATA_TYPES[link[0]], "id": link[1]}
    if len(link) == 3 and not link[2]:
        entry["@removed"] = {"reason": "deleted"}
    return entry


@dataclass
class View:
    """How one delta round or list renders objects of ``res`` for a ``$select`` (None = the default set)."""

    tenant: Tenant
    res: Resource
    select: tuple[str, ...] | None
    keys: tuple[str, ...] = field(init=False)
    collections: list[str] = field(init=False)
    track: bool = field(init=False)
    context_list: str = field(init=False)

    def __post_init__(self) -> None:
        names = self.res.default if self.select is None else self.select
        nav = self.res.delta_nav
        self.keys = ("id", *(n for n in names if n not in ("id", nav)))
        self.collections = [k for k in self.keys if k in self.res.collections]
        self.track = nav is not None and (nav in names or (self.select is None and self.res.nav_by_default))
        self.context_list = self.res.name if self.select is None else f"{self.res.name}({','.join(names)})"

    def tracked(self) -> tuple[str, ...]:
        """The properties whose changes make an object appear in a later round."""
        return (*self.keys, self.res.delta_nav) if self.track else self.keys

    def object(self, obj: dict, keys: Sequence[str] | None = None) -> dict:
        return render(obj, keys or self.keys, self.collections)

    def entry(self, obj: dict) -> dict:
        """An initial-round entry (split links are added by the pager)."""
        return self.object(obj)

    def links(self, obj: dict) -> Sequence[tuple]:
        """The tracked links of an object, split over pages by the pager (groups: members)."""
        return related(self.tenant, self.res, obj["id"], "members") if self.track and self.res.split_links else ()

    def change(self, change: Change, minimal: bool) -> dict:
        """A later-round entry: ``@removed`` for a removed object, else the object (only changed props if
        minimal)."""
        obj = self.tenant.objects[self.res.name].get(change.uid)
        if obj is None:
            reason = self.tenant.removal_reason(change.uid, self.res.name) or "changed"
            return {"id": change.uid, "@removed": {"reason": reason}}
        keys = None
        if minimal and change.props is not None:
            keys = ("id", *(k for k in self.keys if k in change.props))
        return self.object(obj, keys)

    def change_links(self, change: Change) -> Sequence[tuple]:
        """The link entries of a later-round object: all current ones for a created object, else the net
        additions and removals of the range."""
        if not (self.track and self.res.split_links) or change.uid not in self.tenant.objects[self.res.name]:
            return ()
        return self.links({"id": change.uid}) if change.props is None else change.links


class UserView(View):
    """Users: ``manager@delta`` on every entry whose manager is tracked (reference §2.4)."""

    def entry(self, obj: dict) -> dict:
        out = self.object(obj)
        if self.track:
            manager = self.tenant.managers.get(obj["id"])
            if manager:
                out["manager@delta"] = [link_entry(("user", manager))]
        return out

    def change(self, change: Change, minimal: bool) -> dict:
        user = self.tenant.users.get(change.uid)
        if user is None:
            return super().change(change, minimal)
        keys = None
        if minimal and change.props is not None:
            keys = ("id", *(k for k in self.keys if k in change.props))
        out = self.object(user, keys)
        manager_changed = change.props is None or "manager" in change.props
        if self.track and (manager_changed or not minimal):
            manager = self.tenant.managers.get(change.uid)
            former = self.tenant.former_manager(change.uid)
            if manager:
                out["manager@delta"] = [link_entry(("user", manager))]
            elif manager_changed and former:
                out["manager@delta"] = [link_entry(("user", former, False))]
        return out


def view(tenant: Tenant, res: Resource, select: tuple[str, ...] | None) -> View:
    return (UserView if res is USERS else View)(tenant, res, select)
