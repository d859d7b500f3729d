"""A seeded directory that is never stored: the generated base under ``Tenant``'s overlay.

``GeneratedDirectory(seed, users, groups, devices, applications, managed_devices)`` answers, for object ``i`` of each
collection, its id, its properties and its links, and the reverse questions a deletion asks (whom does a user
manage, which groups hold it, what does it own), all computed from (seed, i) on demand
(``sandbox/tenant/users.py``, ``groups.py``, ``fleet.py``; Intune's managed devices, outside ``kinds`` and the
change log: ``intune.py``). Building one costs next to nothing whatever its
size, so a million-user tenant starts at once; ``GeneratedDirectory(seed)`` is the empty directory under a
tenant built by hand.
"""
from __future__ import annotations

from collections.abc import Sequence

from sandbox.tenant.fleet import Devices, ServicePrincipals
from sandbox.tenant.groups import Groups
from sandbox.tenant.intune import ManagedDevices
from sandbox.tenant.overlay import Link
from sandbox.tenant.seeded import Seeded
from sandbox.tenant.users import Users


class GeneratedDirectory:
    """The generated users, groups, devices and service principals of one seed (module docstring)."""

    def __init__(self, seed: object = 0, users: int = 0, groups: int = 0, devices: int = 0, applications: int = 0,
                 managed_devices: int = 0):
        self.seed = seed
        self.seeded = Seeded(seed)
        self.tenant_id = self.seeded.guid("tenant", 0)
        self.users = Users(self.seeded, users)
        self.devices = Devices(self.seeded, devices, self.users)
        self.groups = Groups(self.seeded, groups, self.users, self.devices.windows)
        self.service_principals = ServicePrincipals(self.seeded, applications, self.users, self.tenant_id, seed)
        # Intune's devices: not a directory kind (no delta, no change log), read by the tenant's managed_devices
        self.managed_devices = ManagedDevices(self.seeded, managed_devices, self.devices, self.users)
        self.kinds = {"users": self.users, "groups": self.groups, "devices": self.devices,
                      "servicePrincipals": self.service_principals}

    def count(self, kind: str) -> int:
        return self.kinds[kind].count

    def id(self, kind: str, index: int) -> str:
        return self.kinds[kind].id(index)

    def index(self, kind: str, oid: object) -> int | None:
        """The index of a generated object id of ``kind`` (None for other ids)."""
        return self.kinds[kind].index(oid)

    def build(self, kind: str, index: int) -> dict:
        """Fresh properties (with ``id``) of object ``index`` of ``kind``."""
        return self.kinds[kind].build(index)

    # -- links ----------------------------------------------------------------------------------------------

    def manager(self, index: int) -> str | None:
        """The id of the generated manager of user ``index``."""
        found = self.users.manager(index)
        return None if found is None else self.users.id(found)

    def members(self, index: int) -> Sequence[Link]:
        return self.groups.members(index)

    def group_owners(self, index: int) -> list[str]:
        return self.groups.owners(index)

    def device_owners(self, index: int) -> list[str]:
        return self.devices.owners(index)

    def sp_owners(self, index: int) -> list[str]:
        return self.service_principals.owners(index)

    # -- reverse lookups (what a deletion must unlink) ------------------------------------------------------

    def reports(self, uid: str) -> list[str]:
        """Ids of the users whose generated manager is ``uid``."""
        index = self.users.index(uid)
        return [] if index is None else [self.users.id(i) for i in self.users.reports(index)]

    def groups_with_member(self, odata_type: str, oid: str) -> list[str]:
        """Ids of the groups whose generated members include ``oid``."""
        return [self.groups.id(g) for g in self.groups.with_member(odata_type, oid)]

    def managed_devices_of(self, uid: str) -> list[str]:
        """Ids of the managed devices whose generated primary user is ``uid``."""
        index = self.users.index(uid)
        return [] if index is None else [self.managed_devices.id(m) for m in self.managed_devices.with_user(index)]

    def owned_by(self, uid: str) -> dict[str, list[str]]:
        """Ids of the groups, devices and service principals whose generated owners include ``uid``."""
        index = self.users.index(uid)
        if index is None:
            return {"groups": [], "devices": [], "servicePrincipals": []}
        return {"groups": [self.groups.id(g) for g in self.groups.owned_by(index)],
                "devices": [self.devices.id(d) for d in self.devices.owned_by(index)],
                "servicePrincipals": [self.service_principals.id(s) for s in self.service_principals.owned_by(index)]}
