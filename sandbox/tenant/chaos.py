"""The tenant side of the chaos test (``sandbox/tools/chaos.py``): version-tagged changes and regression counting.

Every object whose Graph data a round of changes touched gets the round's version in one text property
(``TAGS``: a user's ``jobTitle`` becomes ``Title v7``), so the version of every object that Assets shows can
be read back; ``Versions`` remembers the newest version Assets ever showed of each object and counts those
that went back (a stale payload pushed over newer data).
"""
from __future__ import annotations

import math
import random
from collections import Counter

from sandbox.assets.emulator import AssetsEmulator
from sandbox.tenant.model import Tenant
from sandbox.tools.verify import values

# Tenant collection -> (Graph property holding the version tag, its prefix, Assets type, Assets attribute).
TAGS = {"users": ("jobTitle", "Title", "User", "Job Title"),
        "groups": ("description", "Group", "Group", "Description"),
        "devices": ("operatingSystemVersion", "OS", "Device", "OS Version"),
        "servicePrincipals": ("displayName", "App", "Application", "Name")}


class Versions:
    """What Assets showed of each object: ``check`` counts the objects whose version went back.

    The version of an Assets object is the number of its tag (``TAGS``); ``Status = Deleted`` ranks above
    every tag, since a departed object never comes back in this harness. An object went back when it now
    shows less than it showed at the last check and less than the newest it ever showed: one stale push is
    counted once, however many checks see it before a newer push repairs it."""

    def __init__(self) -> None:
        self.highest: dict[tuple[str, str], float] = {}
        self.last: dict[tuple[str, str], float] = {}

    def check(self, assets: AssetsEmulator) -> list[str]:
        """Compare Assets now with what was seen before; returns one line per object that went back."""
        found = []
        for _, prefix, type_name, attribute in TAGS.values():
            for oid, (value, status) in values(assets, type_name, attribute).items():
                key, now = (type_name, oid), math.inf if status == "Deleted" else _tag_number(value, prefix)
                best = self.highest.get(key, -1.0)
                if now < best and now < self.last.get(key, -1.0):
                    found.append(f"{type_name} {oid} went back from {_version_name(best)} to {_version_name(now)}")
                self.highest[key], self.last[key] = max(best, now), now
        return found


def _tag_number(value: object, prefix: str) -> float:
    text = str(value or "")
    return float(text.removeprefix(f"{prefix} v")) if text.startswith(f"{prefix} v") else -1.0


def _version_name(number: float) -> str:
    return "Deleted" if number == math.inf else "untagged" if number < 0 else f"v{number:.0f}"


# -- changing the tenant ------------------------------------------------------------------------------------


def _snapshot(tenant: Tenant) -> dict[str, dict[str, str]]:
    """Per collection and object, everything Graph shows of it except its tag (to see what a change touched)."""
    relations = {"users": lambda oid: tenant.managers.get(oid), "groups": lambda oid: (
        sorted(tenant.members.get(oid, [])), tenant.group_owners.get(oid)),
                 "devices": tenant.device_owners.get, "servicePrincipals": tenant.sp_owners.get}
    return {kind: {oid: repr((sorted((k, repr(v)) for k, v in props.items() if k != TAGS[kind][0]),
                              relations[kind](oid)))
                   for oid, props in tenant.objects[kind].items()} for kind in TAGS}


def tag(tenant: Tenant, kind: str, oid: str, version: int) -> None:
    """Set the version tag of one object (through the tenant's own mutation methods: delta reports it)."""
    prop, prefix, _, _ = TAGS[kind]
    update = {"users": tenant.update_user, "groups": tenant.update_group, "devices": tenant.update_device,
              "servicePrincipals": tenant.update_service_principal}[kind]
    update(oid, **{prop: f"{prefix} v{version}"})


def change_tenant(tenant: Tenant, rng: random.Random, version: int, wide: bool = False) -> Counter:
    """One round of changes, all tagged ``version``: retitled users, a toggled account, moved managers, leavers
    (soft and permanent deletes), new hires, group members added and removed, a device retired and one
    enrolled, sometimes a group deleted or new application owners. ``wide`` retags every user and device too,
    so the push needs several chunks. Returns what was done, counted by kind."""
    before = _snapshot(tenant)
    done: Counter = Counter()
    users = sorted(tenant.users)
    some = max(1, len(users) // 150)
    forced = {("users", u) for u in rng.sample(users, max(3, len(users) // 20))}
    if wide:
        forced |= {("users", u) for u in users} | {("devices", d) for d in tenant.devices}
    toggled = rng.choice(users)
    tenant.update_user(toggled, accountEnabled=not tenant.users[toggled].get("accountEnabled", True))
    done["accounts toggled"] += 1
    for uid in rng.sample(users, 2 * some):
        manager = rng.choice(users)
        if manager != uid:
            tenant.set_manager(uid, manager)
            done["managers moved"] += 1
    for uid in rng.sample(users[1:], some):  # user 0 (the CEO) stays
        tenant.delete_user(uid, permanent=rng.random() < 0.5)
        done["users deleted"] += 1
    _hire(tenant, rng, some, done)
    _change_members(tenant, rng, 2 * some, done)
    _change_devices_and_groups(tenant, rng, done)
    after = _snapshot(tenant)
    for kind, objects in after.items():
        forced |= {(kind, oid) for oid, seen in objects.items() if before[kind].get(oid) != seen}
    for kind, oid in sorted(forced):  # sorted: the same change log order in every process
        if oid in tenant.objects[kind]:
            tag(tenant, kind, oid, version)
    done["objects tagged"] += len(forced)
    return done


def _hire(tenant: Tenant, rng: random.Random, count: int, done: Counter) -> None:
    for _ in range(count):
        n = len(tenant.order)
        tenant.add_user({"displayName": f"New Hire {n}", "givenName": "New", "surname": f"Hire {n}",
                         "userPrincipalName": f"new.hire{n}@sandbox.example", "mail": f"new.hire{n}@sandbox.example",
                         "accountEnabled": True, "userType": "Member", "department": "Engineering",
                         "jobTitle": "Title v0"}, manager_id=rng.choice(sorted(tenant.users)))
        done["users added"] += 1


def _change_members(tenant: Tenant, rng: random.Random, count: int, done: Counter) -> None:
    groups, users = sorted(tenant.groups), sorted(tenant.users)
    for _ in range(count):
        gid = rng.choice(groups)
        members = [m for t, m in tenant.members.get(gid, []) if t == "user"]
        joiner = rng.choice(users)
        if joiner not in members:
            tenant.add_member(gid, joiner)
            done["members added"] += 1
        if members:
            tenant.remove_member(gid, rng.choice(members))
            done["members removed"] += 1


def _change_devices_and_groups(tenant: Tenant, rng: random.Random, done: Counter) -> None:
    users = sorted(tenant.users)
    if tenant.devices and rng.random() < 0.5:
        tenant.delete_device(rng.choice(sorted(tenant.devices)))
        done["devices deleted"] += 1
    if rng.random() < 0.5:
        tenant.add_device({"displayName": f"CHAOS-{len(tenant.orders['devices'])}", "operatingSystem": "Windows",
                           "operatingSystemVersion": "OS v0", "accountEnabled": True}, owners=[rng.choice(users)])
        done["devices added"] += 1
    if len(tenant.groups) > 10 and rng.random() < 0.1:
        tenant.delete_group(rng.choice(sorted(tenant.groups)[10:]))  # the generator's odd groups stay
        done["groups deleted"] += 1
    if tenant.service_principals and rng.random() < 0.3:
        tenant.set_sp_owners(rng.choice(sorted(tenant.service_principals)), rng.sample(users, 2))
        done["application owners changed"] += 1
