"""A seeded synthetic Microsoft Entra tenant: users, groups, devices and service principals in a ``Tenant``.

``generate_tenant(users, seed, groups, devices, applications, managed_devices)`` is deterministic for its arguments and costs
next to nothing whatever the size: nothing is generated up front. Object ``i`` of each collection is a pure
function of (seed, i), computed when it is read (``sandbox/tenant/generated.py``); the tenant stores only what
changes after generation (``sandbox/tenant/overlay.py``). A million-user tenant starts in well under a second
and its emulator stays small (figures: tests/test_lazy_tenant.py).
Properties use Graph's property names (users: those of ``shared.records.build.USER_SELECT`` without ``manager``).
Relationships live beside the objects: ``managers`` (user → manager), ``members`` (group → direct members as
``(odata type name, id)``), ``group_owners``, ``device_owners`` and ``sp_owners`` (object → owner user ids).

The data is deliberately untidy the way real directories are: department spelling variants, country names
written several ways, guests with ``#EXT#`` UPNs, disabled accounts, missing mail, non-ASCII names, a null
displayName and an over-long jobTitle (``users.py``); a dynamic "All Staff" group with every enabled member
user, two groups of 1,000+ members (at most 60 % of the users in small tenants), exactly one nested group,
groups with device and orgContact members (contacts are ids only), an empty group, groups without owners and
with three (``groups.py``); devices without an owner, never signed in, stale, disabled, of unknown
compliance; service principals of Microsoft, of SaaS vendors, of the tenant itself (with owners) and managed
identities (``fleet.py``); Intune managed devices without a primary user, whose Entra device is missing, never
registered in Entra, personal, noncompliant, in grace period (``intune.py``); users who never signed in, stale
sign-ins (``sign_ins.py``). The odd cases sit at fixed positions near the start of each collection, so even a
300-user tenant has each of them.

The generated state is the tenant's version 0: it has no change-log entries.
"""
from __future__ import annotations

import random

from sandbox.tenant.fleet import FIRST_PARTY, MICROSOFT_TENANT, VENDORS  # noqa: F401 - re-exported for tests
from sandbox.tenant.generated import GeneratedDirectory
from sandbox.tenant.model import Tenant, guid
from sandbox.tenant.users import DOMAIN, GUEST_DOMAIN  # noqa: F401 - re-exported


def generate_tenant(users: int = 2000, seed: int = 1, groups: int | None = None, devices: int | None = None,
                    applications: int | None = None, managed_devices: int | None = None) -> Tenant:
    """A tenant of ``users`` users, identical for identical arguments. User 0 is the CEO. None sizes scale with
    the users: groups ≈ users/20 (at least 10), devices ≈ 0.8 × users, service principals ≈ users/50 (at
    least 5), Intune managed devices = the devices (managed device i is Entra device i,
    ``sandbox/tenant/intune.py``). ValueError for a negative size."""
    groups = max(10, users // 20) if groups is None else groups
    devices = int(users * 0.8) if devices is None else devices
    applications = max(5, users // 50) if applications is None else applications
    managed_devices = devices if managed_devices is None else managed_devices
    for name, value in (("users", users), ("groups", groups), ("devices", devices), ("applications", applications),
                        ("managed_devices", managed_devices)):
        if value < 0:
            raise ValueError(f"generate_tenant: {name} must be >= 0, not {value}")
    directory = GeneratedDirectory(seed, users, groups, devices, applications, managed_devices)
    tenant = Tenant(directory.tenant_id, seed, directory)
    app_rng = random.Random(f"app-registration-{seed}")  # the sync app's own registration (no credential yet)
    oid = guid(app_rng)
    tenant.applications[oid] = {"id": oid, "appId": guid(app_rng), "displayName": "Entra Assets sync",
                                "passwordCredentials": [], "keyCredentials": []}
    return tenant
