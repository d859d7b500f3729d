"""Generated groups: group ``g`` of a seeded tenant, its members and owners, as pure functions of (seed, g).

Members are drawn without storing them: a group's user members are an arithmetic progression over a pool -
all users, or the users of one department (``i ≡ r (mod 12)``, ``sandbox/tenant/users.py``) - visited with a
step coprime to the pool's size, so member ``k`` and the position of a given user are both O(1)
(``Progression``). All Staff (every enabled member user, in user order) is a compact array of user indices
built on first use (4 bytes a member). The odd groups sit at fixed positions: All Staff (dynamic), two large
groups (1,000-2,500 members, 60 % of the users in tenants under 4,200), one without owners, a parent holding
exactly one nested group, device members (the first Windows devices), orgContacts (ids only), an empty group
and one with three owners. Owners are drawn from a group's user members (from all users for the groups
without any), 0-3 of them.
"""
from __future__ import annotations

import bisect
import math
from array import array
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from sandbox.tenant.overlay import Link, Links
from sandbox.tenant.seeded import Collection, Seeded
from sandbox.tenant.users import DEPARTMENTS, DOMAIN, OFFICES, Users, slug

GROUP_TOPICS = ["Team", "Leads", "Project Falcon", "Project Atlas", "Project Nordlicht", "Budget Approvers",
                "On-Call", "Hiring Panel", "Book Club", "Security Champions", "Travel Approvers",
                "Social Committee", "Onboarding Buddies", "Contractors", "Interns", "Tiger Team", "Guild",
                "Quarterly Planning", "Wellbeing", "Mentoring Circle"]
# Fixed positions of the odd groups (every tenant with >= 10 groups has them).
ALL_STAFF, LARGE, NO_OWNER, PARENT, NESTED, DEVICE_GROUP, CONTACT_GROUP, EMPTY, THREE_OWNERS = \
    0, (1, 2), 3, 4, 5, 6, 7, 8, 9
SPECIAL_GROUPS = {
    ALL_STAFF: ("All Staff", "Everyone in the company (dynamic membership).", "unified-dynamic"),
    1: ("Engineering Community", "All engineers, all sites.", "unified"),
    2: ("Sales Worldwide", "Sales distribution and security group.", "mail-security"),
    NO_OWNER: ("Équipe München–Paris ☕", None, "security"),
    PARENT: ("Leadership Circle", "Leaders and their assistants (contains a nested group).", "unified"),
    NESTED: ("Executive Assistants", "Nested inside Leadership Circle.", "security"),
    DEVICE_GROUP: ("Autopilot Devices - Windows", "Devices for Windows Autopilot policies.", "security"),
    CONTACT_GROUP: ("Partners & Vendors", "External contacts and their internal sponsors.", "distribution"),
    EMPTY: ("Project Phoenix (archived)", "No members left.", "unified"),
    THREE_OWNERS: ("東京オフィス Tokyo Office", "Tokyo office: " + "announcements, facilities, events; " * 12,
                   "unified"),
}
DYNAMIC_RULE = '(user.userType -eq "Member") and (user.accountEnabled -eq true)'
_KINDS, _KIND_WEIGHTS = ("unified", "security", "distribution", "mail-security"), (40, 45, 10, 5)
_PARENT_HEAD, _CONTACT_HEAD = 12, 8   # user members kept before the nested group / the contacts


@dataclass(frozen=True, slots=True)
class Progression:
    """The users ``residue + stride·((start + k·step) mod modulus)`` for ``k < size`` (step coprime to
    modulus, so they are distinct); ``position`` inverts it."""

    residue: int
    stride: int
    modulus: int
    start: int
    step: int
    inverse: int
    size: int

    def user(self, k: int) -> int:
        return self.residue + self.stride * ((self.start + k * self.step) % self.modulus)

    def position(self, user: int) -> int | None:
        offset = user - self.residue
        if offset < 0 or offset % self.stride:
            return None
        j = offset // self.stride
        if j >= self.modulus:
            return None
        k = ((j - self.start) * self.inverse) % self.modulus
        return k if k < self.size else None


class ProgressionLinks(Links):
    """A group's generated members: ``users`` of a progression, then ``extras`` (nested group, contacts)."""

    def __init__(self, users: Users, progression: Progression, extras: tuple[Link, ...] = ()):
        self.users, self.progression, self.extras = users, progression, extras

    def __len__(self) -> int:
        return self.progression.size + len(self.extras)

    def _at(self, index: int) -> Link:
        size = self.progression.size
        return ("user", self.users.id(self.progression.user(index))) if index < size else self.extras[index - size]

    def position(self, member_id: str) -> int | None:
        user = self.users.index(member_id)
        if user is not None:
            return self.progression.position(user)
        return next((self.progression.size + i for i, link in enumerate(self.extras) if link[1] == member_id), None)


class IndexLinks(Links):
    """User members given as an ascending array of user indices (All Staff)."""

    def __init__(self, users: Users, indices: array):
        self.users, self.indices = users, indices

    def __len__(self) -> int:
        return len(self.indices)

    def _at(self, index: int) -> Link:
        return "user", self.users.id(self.indices[index])

    def position(self, member_id: str) -> int | None:
        user = self.users.index(member_id)
        if user is None:
            return None
        found = bisect.bisect_left(self.indices, user)
        return found if found < len(self.indices) and self.indices[found] == user else None


class Groups(Collection):
    """The ``count`` generated groups of a seed. ``windows_devices()`` gives the device group's members."""

    KIND = "groups"

    def __init__(self, seeded: Seeded, count: int, users: Users, windows_devices: Callable[[], list[str]]):
        super().__init__(seeded, count)
        self.users = users
        self._windows_devices = windows_devices
        self._all_staff: array | None = None
        self._progressions: list[Progression | None] | None = None

    # -- properties -----------------------------------------------------------------------------------

    def _department(self, index: int) -> int | None:
        """The department slot an ordinary group is about (half of them), else None."""
        if index in SPECIAL_GROUPS or not self.users.count or self.seeded.unit("group-department", index) >= 0.5:
            return None
        return self.seeded.below("group-department-slot", index, len(DEPARTMENTS))

    def build(self, index: int) -> dict:
        """The Graph properties of group ``index``, with ``id``; unset ones are absent."""
        if index in SPECIAL_GROUPS:
            name, description, kind = SPECIAL_GROUPS[index]
        else:
            rng, department = self.seeded.rng("group", index), self._department(index)
            topic = rng.choice(GROUP_TOPICS)
            name = f"{DEPARTMENTS[department]} {topic}" if department is not None else \
                f"{topic} {rng.choice(OFFICES)['city']}"
            description = None if rng.random() < 0.15 else \
                f"{name} ({'department' if department is not None else 'site'})"
            kind = rng.choices(_KINDS, _KIND_WEIGHTS)[0]
        nickname = slug(name)[:40] or "group"
        if index not in SPECIAL_GROUPS:  # unique without remembering the others: the index is part of it
            nickname = f"{nickname}{index}"
        unified = kind.startswith("unified")
        mail_enabled = unified or kind in ("distribution", "mail-security")
        group = {"id": self.id(index), "displayName": name, "description": description,
                 "groupTypes": ["Unified", "DynamicMembership"] if kind == "unified-dynamic" else
                 ["Unified"] if unified else [],
                 "mailEnabled": mail_enabled, "securityEnabled": kind in ("security", "mail-security"),
                 "mail": f"{nickname}@{DOMAIN}" if mail_enabled else None, "mailNickname": nickname}
        if index == ALL_STAFF:
            group.update(membershipRule=DYNAMIC_RULE, membershipRuleProcessingState="On")
        return {k: v for k, v in group.items() if v is not None}

    # -- members ----------------------------------------------------------------------------------------

    def progression(self, index: int) -> Progression | None:
        """The user members of group ``index`` as a progression (None: All Staff, the empty and device groups)."""
        users = self.users.count
        if index in (ALL_STAFF, EMPTY, DEVICE_GROUP) or not users:
            return None
        department = self._department(index)
        if department is None:
            residue, stride, modulus = 0, 1, users
        else:
            residue, stride = self.users.slot_residue(department), len(DEPARTMENTS)
            modulus = max(0, (users - residue + stride - 1) // stride)
        if index in LARGE:
            size = 1000 + self.seeded.below("group-size", index, 1501) if users >= 4200 else (users * 3) // 5
        else:
            size = 5 + int(195 * self.seeded.unit("group-size", index) ** 2)
        if index == PARENT:
            size = min(size, _PARENT_HEAD)
        elif index == CONTACT_GROUP:
            size = min(size, _CONTACT_HEAD)
        if modulus <= 1:
            return Progression(residue, stride, max(modulus, 1), 0, 1, 1, min(size, modulus))
        step = 1 + self.seeded.below("group-step", index, modulus - 1)
        while math.gcd(step, modulus) != 1:
            step = step % (modulus - 1) + 1
        return Progression(residue, stride, modulus, self.seeded.below("group-start", index, modulus), step,
                           pow(step, -1, modulus), min(size, modulus))

    def _extras(self, index: int) -> tuple[Link, ...]:
        if index == PARENT and self.count > NESTED:
            return (("group", self.id(NESTED)),)
        if index == CONTACT_GROUP:
            count = 3 + self.seeded.below("contacts", index, 6)
            return tuple(("orgContact", self.seeded.guid("contacts", k)) for k in range(count))
        return ()

    def all_staff(self) -> array:
        """Ascending indices of the enabled member users (built once: about 1 s per million users)."""
        if self._all_staff is None:
            users = self.users
            self._all_staff = array("i", (i for i in range(users.count)
                                          if not users.is_guest(i) and users.is_enabled(i)))
        return self._all_staff

    def members(self, index: int) -> Sequence[Link]:
        """The generated direct members of group ``index`` as ``(odata type name, id)``."""
        if index == ALL_STAFF:
            return IndexLinks(self.users, self.all_staff())
        if index == DEVICE_GROUP:
            return [("device", did) for did in self._windows_devices()]
        progression = self.progression(index)
        return [] if progression is None else ProgressionLinks(self.users, progression, self._extras(index))

    # -- owners -----------------------------------------------------------------------------------------

    def _owner_positions(self, index: int, pool: int) -> list[int]:
        """Positions in the owner pool (the user members, or all users) of group ``index``'s owners."""
        if index == NO_OWNER or pool == 0:
            return []
        if index in (THREE_OWNERS, ALL_STAFF):
            count = 3 if index == THREE_OWNERS else 2
        else:
            roll = self.seeded.unit("group-owners", index)
            count = 0 if roll < 0.2 else 1 if roll < 0.7 else 2 + self.seeded.below("group-owner-count", index, 2)
        return self.seeded.rng("group-owners", index).sample(range(pool), min(count, pool)) if count else []

    def _owner_pool(self, index: int) -> tuple[int, Callable[[int], int]]:
        """(size, position → user index) of the users group ``index`` draws its owners from."""
        if index == ALL_STAFF:
            staff = self.all_staff()
            if staff:
                return len(staff), staff.__getitem__
        progression = self.progression(index)
        if progression is not None and progression.size:
            return progression.size, progression.user
        return self.users.count, int

    def owners(self, index: int) -> list[str]:
        """The generated owners (user ids) of group ``index``."""
        size, user = self._owner_pool(index)
        return [self.users.id(user(p)) for p in self._owner_positions(index, size)]

    # -- reverse lookups ----------------------------------------------------------------------------------

    def _all_progressions(self) -> list[Progression | None]:
        if self._progressions is None:  # cached: a reverse lookup visits every group
            self._progressions = [self.progression(g) for g in range(self.count)]
        return self._progressions

    def with_user(self, user: int) -> list[int]:
        """The groups whose generated members include user ``user``."""
        found = [g for g, p in enumerate(self._all_progressions()) if p is not None and p.position(user) is not None]
        if self.count > ALL_STAFF and not self.users.is_guest(user) and self.users.is_enabled(user):
            found.insert(0, ALL_STAFF)
        return found

    def with_member(self, odata_type: str, oid: str) -> list[int]:
        """The groups whose generated members include the directory object ``oid`` of ``odata_type``."""
        if odata_type == "user":
            user = self.users.index(oid)
            return [] if user is None else self.with_user(user)
        if odata_type == "group":
            return [PARENT] if self.count > NESTED and oid == self.id(NESTED) else []
        if odata_type == "device":
            return [DEVICE_GROUP] if self.count > DEVICE_GROUP and oid in self._windows_devices() else []
        return []

    def owned_by(self, user: int) -> list[int]:
        """The groups whose generated owners include user ``user``."""
        found = []
        staff = self.count > ALL_STAFF and len(self.all_staff()) > 0
        everyone = [g for g, p in enumerate(self._all_progressions())  # groups drawing owners from all users
                    if (p is None or not p.size) and not (g == ALL_STAFF and staff)]
        for g in self.with_user(user) + everyone:
            size, at = self._owner_pool(g)
            if any(at(p) == user for p in self._owner_positions(g, size)):
                found.append(g)
        return sorted(set(found))
