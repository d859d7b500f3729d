"""The sandbox's Microsoft Entra tenant: users, groups, devices, service principals and a change log.

The seeded synthetic content comes from ``sandbox/tenant/generator.py`` (``generate_tenant``); this module
owns the model: objects (id → Graph properties), their relationships (``managers``, ``members``,
``group_owners``, ``device_owners``, ``sp_owners``), the mutation methods and the change log.

Storage: version 0 is a ``GeneratedDirectory`` that computes object ``i`` from the seed when it is read; a
mutation stores the objects and links it changes in an overlay (``sandbox/tenant/overlay.py``) and reads
merge the overlay over the generated base, so memory grows with the changes, not with the tenant. Deleting
an object asks the generated base who refers to it (reports, groups, owned objects: reverse lookups computed
from the seed, ``sandbox/tenant/generated.py``) and checks the changed links itself.

Change log: every mutation bumps ``version`` by one per object it touches and appends (kind, id, changed
properties, member link) to an append-only log; ``changes_since(version, kind=...)`` turns a slice of the log
into the changes a delta round of that kind reports ("users", "groups", "devices", "servicePrincipals").
Version 0 is the generated state. All methods are thread-safe (``lock``).

Outside the change log (neither delta nor change notifications report them, as in Graph v1.0): Intune's
managed devices (``managed_devices``, ``add_managed_device``...; Intune has no delta and no change notifications
for managedDevice) and users' ``signInActivity`` (sign-ins are not directory changes: ``update_user`` sets it
without a log entry). ``intune`` (False: no Intune licence) and ``premium`` (False: no Entra ID P1/P2, so no
sign-in activity) are the tenant's subscriptions, read by the Graph emulator.

Emulator choices: deleting a user (soft or permanent) removes it from group members and owners and from device
and service-principal owners (reference/graph.md §2.4 says soft-deleted users keep memberships until purged;
the sandbox drops them at once, as the product's brief asks); deleting a group or a device removes it from the
groups it was a member of; devices are always deleted permanently ("deleted"); the dynamic group's rule is
not evaluated (members change only through ``add_member``/``remove_member``); deleting a user (soft or
permanent) clears the primary user (``userId``, ``userPrincipalName``, ``emailAddress``, ``userDisplayName``: "")
of its managed devices, which stay enrolled (real Intune keeps the device and shows it without a user after a
while; the sandbox clears it at once). A managed device's ``userId`` is not checked against the users (Intune is
another service: its ids may dangle).
"""
from __future__ import annotations

import bisect
import random
import threading
import time
import uuid
from collections.abc import Collection, Iterable
from dataclasses import dataclass, field
from functools import partial

from sandbox.tenant.generated import GeneratedDirectory
from sandbox.tenant.licences import subscribed
from sandbox.tenant.overlay import IdOrder, Links, Managers, Objects, PatchedLinks, Relation, position_in

_EVERYTHING = None  # a log entry touching every property: created, deleted
KINDS = ("users", "groups", "devices", "servicePrincipals")
MEMBER_TYPES = ("user", "group", "device", "orgContact")
_TYPE_KIND = {"user": "users", "group": "groups", "device": "devices"}  # orgContact: ids only, not stored
# User properties that are not directory changes: set without a change-log entry, so no delta round reports them.
UNLOGGED_USER_PROPERTIES = frozenset({"signInActivity"})
# A managed device's primary user, cleared when the user is deleted (Intune's "" for none; UNCONFIRMED but userId).
PRIMARY_USER_FIELDS = ("userId", "userPrincipalName", "emailAddress", "userDisplayName")


@dataclass(frozen=True, slots=True)
class Change:
    """One object as a delta round reports it: ``removed`` is None, "changed" (soft) or "deleted" (permanent).

    ``props`` are the properties changed in the range (None = the whole object: created or removed);
    "manager" stands for a user's manager link, "members" for a group's members, "owners"/"registeredOwners"
    for owners. ``links`` (groups) are the net member changes in the range, in order of their last change:
    ``(odata type name, member id, added)``.
    """

    uid: str
    removed: str | None
    props: frozenset[str] | None
    links: tuple[tuple[str, str, bool], ...] = field(default=())

    @property
    def id(self) -> str:
        return self.uid


class _TimedLog(list):
    """The change log; ``times[i]`` is when entry ``i`` was appended (``time.monotonic()``, non-decreasing)."""

    def __init__(self) -> None:
        super().__init__()
        self.times: list[float] = []

    def append(self, entry) -> None:
        self.times.append(time.monotonic())
        super().append(entry)


class Tenant:
    """Users, groups, devices and service principals (id → Graph properties), their links and a change log.

    The attributes read like the dicts and lists they stand for (``users``, ``groups``, ``devices``,
    ``service_principals``, ``objects[kind]``: id → properties; ``managers``: user id → manager id;
    ``members``: group id → ``(odata type name, id)`` links; ``group_owners``, ``device_owners``,
    ``sp_owners``: id → owner user ids; ``orders[kind]``/``order``: every id ever added, in insertion order)
    but are views over ``directory`` - the generated version 0, computed per object on demand - merged with
    an overlay of what changed since (``sandbox/tenant/overlay.py``). Change them only through the methods.
    """

    def __init__(self, tenant_id: str, seed: int = 0, directory: GeneratedDirectory | None = None):
        self.tenant_id = tenant_id
        self.directory = directory or GeneratedDirectory(seed)
        base = self.directory
        self.orders: dict[str, IdOrder] = {kind: IdOrder(base.count(kind), partial(base.id, kind)) for kind in KINDS}
        self.order = self.orders["users"]   # every user id ever added, in insertion order (delta paging by index)
        self.objects: dict[str, Objects] = {
            kind: Objects(self.orders[kind], partial(base.index, kind), partial(base.build, kind)) for kind in KINDS}
        self.users, self.groups = self.objects["users"], self.objects["groups"]
        self.devices, self.service_principals = self.objects["devices"], self.objects["servicePrincipals"]
        self.managers = Managers(self.users, base.manager)
        self.members = Relation(self.groups, base.members)   # group id → direct members (odata type name, id)
        self.group_owners = Relation(self.groups, base.group_owners)
        self.device_owners = Relation(self.devices, base.device_owners)
        self.sp_owners = Relation(self.service_principals, base.sp_owners)
        self.lock = threading.RLock()
        # Entry i is the change of version i + 1: (kind, id, changed properties or None, member link or None).
        self._log = _TimedLog()  # (kind, id, props or None, member link or None), with when each entry came
        self._removed: dict[str, str] = {}  # id → "changed" | "deleted" for objects no longer present
        self._former_manager: dict[str, str] = {}  # id → the manager whose link was removed last
        self._rng = random.Random(f"tenant-changes-{seed}")
        # App registrations (object id -> Graph application), served at /applications by
        # sandbox/graph/applications.py; their secrets and certificates are added by sandbox/identity/emulator.py.
        self.applications: dict[str, dict] = {}
        # The SKUs the tenant subscribes to (skuId -> Graph subscribedSku), served at /subscribedSkus; which users
        # hold them is each user's assignedLicenses (sandbox/tenant/licences.py).
        users = base.kinds["users"]
        self.skus: dict[str, dict] = {sku["skuId"]: sku for sku in subscribed(tenant_id, users.count, users.is_guest)}
        # Intune's managed devices (id -> Graph managedDevice), served at /deviceManagement/managedDevices: the
        # generated ones (sandbox/tenant/intune.py) under the same overlay as the directory, outside the change log.
        managed = base.managed_devices
        self.managed_devices = Objects(IdOrder(managed.count, managed.id), managed.index, managed.build)
        self.intune = True    # False: the tenant has no Intune licence (Graph's Intune API answers 400)
        self.premium = True   # False: no Entra ID P1/P2 (signInActivity answers 403)

    @property
    def version(self) -> int:
        """The version of the current state: 0 as generated, +1 per object touched by each mutation."""
        return len(self._log)

    def version_at(self, moment: float) -> int:
        """The version the tenant had at ``moment`` (``time.monotonic()``): for a delta that lags behind."""
        with self.lock:
            return bisect.bisect_right(self._log.times, moment)

    def new_id(self) -> str:
        """A fresh GUID from the tenant's own generator (deterministic for the seed)."""
        with self.lock:
            return guid(self._rng)

    # -- users ----------------------------------------------------------------------------------------------

    def add_user(self, props: dict, manager_id: str | None = None) -> str:
        """Create a user from Graph properties (``id`` is assigned, None values mean unset); returns the id."""
        with self.lock:
            uid = self.new_id()
            self._insert(uid, props, manager_id)
            self._touch(uid, _EVERYTHING)
            return uid

    def update_user(self, uid: str, **props) -> None:
        """Set properties (None = clear). KeyError for an unknown user; ValueError for ``id``/``manager``.
        ``signInActivity`` (``UNLOGGED_USER_PROPERTIES``) is set without a change-log entry: an update of only
        sign-ins bumps no version, and no delta round or change notification reports it."""
        if {"id", "manager"} & props.keys():
            raise ValueError("update_user cannot change id or manager (use set_manager)")
        with self.lock:
            quiet = {k: props.pop(k) for k in UNLOGGED_USER_PROPERTIES & props.keys()}
            if quiet:
                _assign(self.users.materialise(uid), quiet)
            if props or not quiet:
                self._update("users", uid, props)

    def set_manager(self, uid: str, manager_id: str | None) -> None:
        """Point the user at a new manager, or remove the link (None). KeyError for unknown ids."""
        with self.lock:
            if uid not in self.users or (manager_id is not None and manager_id not in self.users):
                raise KeyError(manager_id if uid in self.users else uid)
            if manager_id == uid:
                raise ValueError("a user cannot manage themselves")
            self._link(uid, manager_id)

    def delete_user(self, uid: str, permanent: bool = False) -> None:
        """Soft delete (delta reason "changed") or permanent delete ("deleted"); a soft-deleted user can
        still be deleted permanently. Reports of the user lose their manager link, groups lose the user as a
        member and owner, devices and service principals as an owner (emulator choices, module docstring)."""
        with self.lock:
            if not self._remove("users", uid, permanent):
                return
            for report in self._reports(uid):
                self._link(report, None)
            self._drop_member("user", uid)
            for mid in self._managed_devices_of(uid):
                self.managed_devices.materialise(mid).update(dict.fromkeys(PRIMARY_USER_FIELDS, ""))
            owned = self.directory.owned_by(uid)
            for kind, owner_map, prop in (("groups", self.group_owners, "owners"),
                                          ("devices", self.device_owners, "registeredOwners"),
                                          ("servicePrincipals", self.sp_owners, "owners")):
                for oid in self._holding(kind, owner_map, owned[kind], lambda owners: uid in owners):
                    owner_map.set(oid, [o for o in owner_map[oid] if o != uid])
                    self._log.append((kind, oid, frozenset({prop}), None))

    def _reports(self, uid: str) -> list[str]:
        """The live users managed by ``uid``, in user order: generated links not overridden, and set ones."""
        found = {r for r in self.directory.reports(uid) if not self.managers.is_overridden(r)}
        found |= {r for r, m in self.managers.overridden() if m == uid}
        return self._in_order("users", (r for r in found if r in self.users))

    def _managed_devices_of(self, uid: str) -> list[str]:
        """The live managed devices whose primary user is ``uid``: generated candidates and stored ones."""
        candidates = set(self.directory.managed_devices_of(uid))
        candidates |= {mid for mid, device in self.managed_devices.stored_items() if device.get("userId") == uid}
        devices = self.managed_devices
        return sorted(mid for mid in candidates if mid in devices and devices[mid].get("userId") == uid)

    def _holding(self, kind: str, relation: Relation, generated: list[str], test) -> list[str]:
        """The live objects of ``kind`` whose links in ``relation`` pass ``test``, in insertion order:
        candidates are the generated holders (``generated``, for objects whose links are unchanged) and
        every object whose links changed."""
        candidates = {oid for oid in generated if not relation.changed(oid)}
        candidates |= {oid for oid, _ in relation.stored_items()}
        objects = self.objects[kind]
        return self._in_order(kind, (oid for oid in candidates if oid in objects and test(relation[oid])))

    def _in_order(self, kind: str, ids) -> list[str]:
        """``ids`` sorted by insertion order (generated ones by index, then added ones)."""
        order, index = self.orders[kind], self.objects[kind].index
        added = None

        def position(oid: str) -> int:
            nonlocal added
            found = index(oid)
            if found is not None:
                return found
            if added is None:
                added = {a: i for i, a in enumerate(order[order.count:], order.count)}
            return added[oid]
        return sorted(ids, key=position)

    def _insert(self, uid: str, props: dict, manager_id: str | None) -> None:
        if manager_id is not None and manager_id not in self.users:
            raise KeyError(manager_id)
        self.users.add(uid, {"id": uid, **{k: v for k, v in props.items() if v is not None and k != "id"}})
        if manager_id is not None:
            self.managers.set(uid, manager_id)

    def _link(self, uid: str, manager_id: str | None) -> None:
        old = self.managers.get(uid)
        if old == manager_id:
            return
        self.managers.set(uid, manager_id)
        if manager_id is None:
            self._former_manager[uid] = old
        else:
            self._former_manager.pop(uid, None)
        self._touch(uid, frozenset({"manager"}))

    def _touch(self, uid: str, props: frozenset[str] | None) -> None:
        self._log.append(("users", uid, props, None))

    # -- groups ---------------------------------------------------------------------------------------------

    def add_group(self, props: dict, members: Iterable[str | tuple[str, str]] = (),
                  owners: Iterable[str] = ()) -> str:
        """Create a group; ``members`` are ids of users, groups or devices, or ``(odata type name, id)`` pairs
        (``("orgContact", id)`` for contacts, which are ids only); ``owners`` are user ids. Returns the id."""
        with self.lock:
            gid = self.new_id()
            links = [self._member_link(m) for m in members]
            owner_ids = self._users_only(owners)
            if len({m for _, m in links}) != len(links):
                raise ValueError("duplicate members")
            self._create("groups", gid, props)
            self.members.set(gid, links)
            self.group_owners.set(gid, owner_ids)
            return gid

    def update_group(self, gid: str, **props) -> None:
        """Set group properties (None = clear). KeyError for an unknown group; ValueError for id/members/owners."""
        if {"id", "members", "owners"} & props.keys():
            raise ValueError("update_group cannot change id, members or owners")
        with self.lock:
            self._update("groups", gid, props)

    def delete_group(self, gid: str, permanent: bool = False) -> None:
        """Soft (reason "changed") or permanent ("deleted") delete; the group leaves the groups it was in."""
        with self.lock:
            if self._remove("groups", gid, permanent):
                self.members.forget(gid)
                self.group_owners.forget(gid)
                self._drop_member("group", gid)

    def add_member(self, gid: str, member_id: str, odata_type: str = "user") -> None:
        """Add a direct member. KeyError for an unknown group or member; ValueError if already a member."""
        with self.lock:
            if gid not in self.groups:
                raise KeyError(gid)
            odata_type, member_id = self._member_link((odata_type, member_id))
            if member_id == gid:
                raise ValueError("a group cannot be a member of itself")
            if position_in(self.members[gid], member_id) is not None:
                raise ValueError(f"{member_id} is already a member of {gid}")
            self._own_members(gid).append((odata_type, member_id))
            self._log.append(("groups", gid, frozenset({"members"}), (odata_type, member_id, True)))

    def remove_member(self, gid: str, member_id: str) -> None:
        """Remove a direct member. KeyError if the group does not exist or ``member_id`` is not a member."""
        with self.lock:
            found = position_in(self.members[gid], member_id) if gid in self.groups else None
            if found is None:
                raise KeyError(member_id if gid in self.groups else gid)
            odata_type, _ = self._own_members(gid).pop(found)
            self._compact(gid)
            self._log.append(("groups", gid, frozenset({"members"}), (odata_type, member_id, False)))

    def set_group_owners(self, gid: str, owner_ids: Iterable[str]) -> None:
        """Replace the owners (user ids). KeyError for an unknown group or user."""
        with self.lock:
            if gid not in self.groups:
                raise KeyError(gid)
            self._set_owners("groups", self.group_owners, gid, owner_ids, "owners")

    def _member_link(self, member: str | tuple[str, str]) -> tuple[str, str]:
        odata_type, mid = member if isinstance(member, tuple) else (self._type_of(member), member)
        if odata_type not in MEMBER_TYPES:
            raise ValueError(f"unsupported member type {odata_type!r} (one of {', '.join(MEMBER_TYPES)})")
        if odata_type in _TYPE_KIND and mid not in self.objects[_TYPE_KIND[odata_type]]:
            raise KeyError(mid)
        return odata_type, mid

    def _type_of(self, oid: str) -> str:
        for odata_type, kind in _TYPE_KIND.items():
            if oid in self.objects[kind]:
                return odata_type
        raise KeyError(oid)

    def _own_members(self, gid: str) -> list[tuple[str, str]] | PatchedLinks:
        """The stored, mutable member list of a live group: generated members are wrapped, not copied, so a
        change to a group of a million members stores only the change."""
        if not self.members.changed(gid):
            links = self.members[gid]
            self.members.set(gid, PatchedLinks(links) if isinstance(links, Links) else list(links))
        return self.members[gid]

    def _compact(self, gid: str) -> None:
        links = self.members[gid]
        if isinstance(links, PatchedLinks) and links.crowded():
            self.members.set(gid, list(links))

    def _drop_member(self, odata_type: str, member_id: str) -> None:
        """Remove ``member_id`` from every group it is a direct member of, logging each group."""
        generated = self.directory.groups_with_member(odata_type, member_id)
        holding = self._holding("groups", self.members, generated,
                                lambda links: position_in(links, member_id) is not None)
        for gid in holding:
            members = self._own_members(gid)
            members.pop(position_in(members, member_id))
            self._compact(gid)
            self._log.append(("groups", gid, frozenset({"members"}), (odata_type, member_id, False)))

    # -- devices and service principals ---------------------------------------------------------------------

    def add_device(self, props: dict, owners: Iterable[str] = ()) -> str:
        """Create a device (a ``deviceId`` is generated unless given); ``owners`` are user ids. Returns the id."""
        with self.lock:
            owner_ids = self._users_only(owners)
            did = self.new_id()
            self._create("devices", did, {"deviceId": self.new_id(), **props})
            self.device_owners.set(did, owner_ids)
            return did

    def update_device(self, did: str, **props) -> None:
        """Set device properties (None = clear). KeyError for an unknown device."""
        with self.lock:
            self._update("devices", did, props)

    def delete_device(self, did: str) -> None:
        """Delete a device (always permanently: reason "deleted"); it leaves the groups it was in."""
        with self.lock:
            if self._remove("devices", did, True):
                self.device_owners.forget(did)
                self._drop_member("device", did)

    def set_device_owners(self, did: str, owner_ids: Iterable[str]) -> None:
        """Replace the registered owners (user ids). KeyError for an unknown device or user."""
        with self.lock:
            if did not in self.devices:
                raise KeyError(did)
            self._set_owners("devices", self.device_owners, did, owner_ids, "registeredOwners")

    def add_service_principal(self, props: dict, owners: Iterable[str] = ()) -> str:
        """Create a service principal (an ``appId`` is generated unless given). Returns the id."""
        with self.lock:
            owner_ids = self._users_only(owners)
            sid = self.new_id()
            self._create("servicePrincipals", sid, {"appId": self.new_id(), **props})
            self.sp_owners.set(sid, owner_ids)
            return sid

    def update_service_principal(self, sid: str, **props) -> None:
        """Set service principal properties (None = clear). KeyError for an unknown one."""
        with self.lock:
            self._update("servicePrincipals", sid, props)

    def delete_service_principal(self, sid: str, permanent: bool = False) -> None:
        """Soft (reason "changed") or permanent ("deleted") delete."""
        with self.lock:
            if self._remove("servicePrincipals", sid, permanent):
                self.sp_owners.forget(sid)

    def set_sp_owners(self, sid: str, owner_ids: Iterable[str]) -> None:
        """Replace the owners (user ids). KeyError for an unknown service principal or user."""
        with self.lock:
            if sid not in self.service_principals:
                raise KeyError(sid)
            self._set_owners("servicePrincipals", self.sp_owners, sid, owner_ids, "owners")

    # -- Intune managed devices (outside the change log) ------------------------------------------------------

    def add_managed_device(self, props: dict) -> str:
        """Enrol a device in Intune from Graph managedDevice properties (``id`` is assigned, None values mean
        unset); returns the id. No change-log entry: Intune has no delta and no change notifications."""
        with self.lock:
            mid = self.new_id()
            self.managed_devices.add(mid, {"id": mid, **{k: v for k, v in props.items()
                                                         if v is not None and k != "id"}})
            return mid

    def update_managed_device(self, mid: str, **props) -> None:
        """Set managed device properties (None = clear). KeyError for an unknown device; ValueError for ``id``."""
        if "id" in props:
            raise ValueError("the id cannot change")
        with self.lock:
            _assign(self.managed_devices.materialise(mid), props)

    def delete_managed_device(self, mid: str) -> None:
        """Remove a device from Intune (retired or wiped). KeyError for an unknown device."""
        with self.lock:
            self.managed_devices.remove(mid)

    # -- shared mutation helpers ----------------------------------------------------------------------------

    def _users_only(self, ids: Iterable[str]) -> list[str]:
        out = list(dict.fromkeys(ids))
        for uid in out:
            if uid not in self.users:
                raise KeyError(uid)
        return out

    def _create(self, kind: str, oid: str, props: dict) -> None:
        self.objects[kind].add(oid, {"id": oid, **{k: v for k, v in props.items() if v is not None and k != "id"}})
        self._log.append((kind, oid, _EVERYTHING, None))

    def _update(self, kind: str, oid: str, props: dict) -> None:
        if "id" in props:
            raise ValueError("the id cannot change")
        _assign(self.objects[kind].materialise(oid), props)   # a generated object is stored from now on
        self._log.append((kind, oid, frozenset(props), None))

    def _remove(self, kind: str, oid: str, permanent: bool) -> bool:
        """Delete from ``kind``; True if the object was present (the caller then drops its links). A second,
        permanent delete of a soft-deleted object only changes its reason. KeyError otherwise."""
        objects = self.objects[kind]
        if oid not in objects:
            if permanent and self._removed.get(oid) == "changed":
                self._removed[oid] = "deleted"
                self._log.append((kind, oid, _EVERYTHING, None))
                return False
            raise KeyError(oid)
        objects.remove(oid)
        self._removed[oid] = "deleted" if permanent else "changed"
        self._log.append((kind, oid, _EVERYTHING, None))
        return True

    def _set_owners(self, kind: str, owner_map: Relation, oid: str, owner_ids: Iterable[str], prop: str) -> None:
        owners = self._users_only(owner_ids)
        if owners != list(owner_map.get(oid, [])):
            owner_map.set(oid, owners)
            self._log.append((kind, oid, frozenset({prop}), None))

    # -- reading the change log --------------------------------------------------------------------------

    def changes_since(self, version: int, until: int | None = None, select: Collection[str] | None = None,
                      *, kind: str = "users") -> list[Change]:
        """The objects of ``kind`` changed after ``version`` up to ``until`` (default: now), one Change each,
        ordered by their last change. With ``select``, objects whose changes touched none of those properties
        (nor the object as a whole) are left out, as Graph does (reference/graph.md §2.2). ``removed`` reflects
        the object's state now. ValueError if the range is outside the log or the kind is unknown.
        """
        if kind not in self.objects:
            raise ValueError(f"unknown kind {kind!r} (one of {', '.join(KINDS)})")
        with self.lock:
            until = self.version if until is None else until
            if not 0 <= version <= until <= self.version:
                raise ValueError(f"no change log range {version}..{until} (version is {self.version})")
            touched: dict[str, frozenset[str] | None] = {}
            links: dict[str, dict[str, tuple[str, str, bool]]] = {}
            for entry_kind, oid, props, link in self._log[version:until]:
                if entry_kind != kind:
                    continue
                before = touched.pop(oid, frozenset())
                touched[oid] = None if before is None or props is None else before | props
                if link is not None:
                    per_object = links.setdefault(oid, {})
                    per_object.pop(link[1], None)
                    per_object[link[1]] = link
            wanted = None if select is None else frozenset(select)
            objects = self.objects[kind]
            return [Change(oid, self._removed.get(oid) if oid not in objects else None, props,
                           tuple(links[oid].values()) if oid in links else ())
                    for oid, props in touched.items()
                    if props is None or wanted is None or props & wanted]

    def removal_reason(self, uid: str, kind: str = "users") -> str | None:
        """"changed" (soft-deleted) or "deleted" (permanently) for a removed object; None otherwise."""
        with self.lock:
            return None if uid in self.objects[kind] else self._removed.get(uid)

    def former_manager(self, uid: str) -> str | None:
        """The manager whose link to ``uid`` was removed most recently (None if it has a manager now)."""
        with self.lock:
            return None if uid in self.managers else self._former_manager.get(uid)


def _assign(obj: dict, props: dict) -> None:
    """Set ``props`` on a stored object: None removes the property."""
    for key, value in props.items():
        if value is None:
            obj.pop(key, None)
        else:
            obj[key] = value


def guid(rng: random.Random) -> str:
    """A version-4 GUID drawn from ``rng`` (deterministic for its seed)."""
    return str(uuid.UUID(int=rng.getrandbits(128), version=4))
