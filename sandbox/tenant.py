"""A seeded synthetic Microsoft Entra tenant: users, a management tree and a change log for delta queries.

``generate_tenant(users, seed)`` is deterministic for a seed and cheap (plain dicts; 100,000 users in a few
seconds). User properties use the Graph property names of ``shared.mapping.USER_SELECT`` (without
``manager``: the management tree lives in ``Tenant.managers``). The data is deliberately untidy the way real
directories are: department spelling variants, country names written several ways, guests with ``#EXT#``
UPNs, disabled accounts, missing mail, non-ASCII names, a null displayName and an over-long jobTitle. The odd
cases sit at fixed positions near the start, so even a 300-user tenant has each of them.

Change log: every mutation bumps ``version`` by one per user it touches and appends that user, with the
properties that changed, to an append-only log; ``changes_since(version)`` turns a slice of the log into the
changes a delta round reports. Version 0 is the generated state. All methods are thread-safe (``lock``).
"""
from __future__ import annotations

import random
import threading
import unicodedata
import uuid
from collections.abc import Collection
from dataclasses import dataclass

DOMAIN = "sandbox.example"
GUEST_DOMAIN = "sandboxtenant.onmicrosoft.com"
_EVERYTHING = None  # a log entry touching every property: created, deleted
# Letters NFKD does not split into an ASCII base letter plus accents.
_UNDECOMPOSABLE = str.maketrans({"ł": "l", "Ł": "L", "ø": "o", "Ø": "O", "ß": "ss", "æ": "ae", "đ": "d",
                                 "ı": "i"})

# Offices with one consistent address each; the country is written several ways (all folded by mapping).
OFFICES = [
    {"officeLocation": "Seattle HQ", "streetAddress": "400 Pine Street", "postalCode": "98101",
     "city": "Seattle", "state": "WA", "countries": ("United States", "US", "USA")},
    {"officeLocation": "New York", "streetAddress": "350 Fifth Avenue", "postalCode": "10118",
     "city": "New York", "state": "NY", "countries": ("United States", "USA")},
    {"officeLocation": "London", "streetAddress": "1 Canada Square", "postalCode": "E14 5AB",
     "city": "London", "state": "England", "countries": ("United Kingdom", "UK", "GB")},
    {"officeLocation": "München", "streetAddress": "Leopoldstraße 25", "postalCode": "80802",
     "city": "München", "state": "Bayern", "countries": ("Germany", "DE", "Deutschland")},
    {"officeLocation": "Berlin", "streetAddress": "Friedrichstraße 100", "postalCode": "10117",
     "city": "Berlin", "state": "Berlin", "countries": ("Germany", "Deutschland")},
    {"officeLocation": "Paris", "streetAddress": "10 Rue de Rivoli", "postalCode": "75004",
     "city": "Paris", "state": "Île-de-France", "countries": ("France", "FR")},
    {"officeLocation": "Tokyo", "streetAddress": "1-1 Marunouchi", "postalCode": "100-0005",
     "city": "Tokyo", "state": "Tokyo", "countries": ("Japan", "JP")},
    {"officeLocation": "São Paulo", "streetAddress": "Avenida Paulista 1000", "postalCode": "01310-100",
     "city": "São Paulo", "state": "SP", "countries": ("Brazil", "BR")},
]
DEPARTMENTS = ["Sales", "Engineering", "Marketing", "Finance", "Human Resources", "Legal", "Support",
               "Operations", "Research & Development", "IT", "Procurement", "Customer Success"]
JOB_TITLES = ["Engineer", "Senior Engineer", "Manager", "Director", "Analyst", "Consultant", "Designer",
              "Account Executive", "Support Specialist", "Accountant", "Recruiter", "Product Manager",
              "Data Scientist", "Office Manager", "Legal Counsel", "Vice President"]
GIVEN = ["Anna", "Ben", "Chloé", "David", "Elif", "Farah", "Gustav", "Hannah", "Ivan", "Jürgen", "Kenji",
         "Lena", "Mateo", "Nadia", "Oliver", "Priya", "Quentin", "Rosa", "Søren", "Tomás", "Uma", "Victor",
         "Wei", "Xavier", "Yuki", "Zoë", "José", "Łukasz", "Ольга", "Mohammed", "Siobhán", "Björn"]
SURNAMES = ["Smith", "Müller", "García", "Nguyen", "Kowalski", "O'Brien", "Rossi", "Dubois", "Tanaka",
            "Ångström", "Núñez", "Żółć", "Иванова", "Johansson", "Van der Berg", "Silva", "Kim", "Patel",
            "Schmidt", "López", "Novák", "Fernández", "Andersen", "Brown", "Yılmaz", "Papadopoulos"]
# (given, surname) forced at fixed positions: every tenant of >= 30 users has them.
_NAMED = {1: ("Zoë", "Ångström"), 2: ("José", "Núñez"), 3: ("Łukasz", "Żółć"), 4: ("雷", "李"),
          5: ("Ольга", "Иванова")}
_NULL_NAME, _LONG_TITLE, _GUEST, _DISABLED, _NO_MAIL, _NO_MANAGER = 7, 11, 13, 17, 19, 23
LONG_TITLE = ("Senior Principal Distinguished Staff Engineer for Cross-Functional Platform Reliability, "
              "Observability, Developer Experience and Internal Tooling in the Office of the Chief "
              "Technology Officer (Europe, Middle East, Africa and Asia-Pacific regions, interim) - acting")


@dataclass(frozen=True, slots=True)
class Change:
    """One user as a delta round reports it: ``removed`` is None, "changed" (soft) or "deleted" (permanent).

    ``props`` are the properties changed in the range (None = the whole object: created or removed);
    "manager" stands for the manager link.
    """

    uid: str
    removed: str | None
    props: frozenset[str] | None


class Tenant:
    """Users (id → Graph properties, never the manager), the management tree and a change log."""

    def __init__(self, tenant_id: str, seed: int = 0):
        self.tenant_id = tenant_id
        self.users: dict[str, dict] = {}
        self.managers: dict[str, str] = {}
        self.order: list[str] = []          # every id ever added, in insertion order (delta paging by index)
        self.lock = threading.RLock()
        self._log: list[tuple[str, frozenset[str] | None]] = []  # entry i is the change of version i + 1
        self._removed: dict[str, str] = {}  # id → "changed" | "deleted" for users no longer in ``users``
        self._former_manager: dict[str, str] = {}  # id → the manager whose link was removed last
        self._rng = random.Random(f"tenant-changes-{seed}")

    @property
    def version(self) -> int:
        """The version of the current state: 0 as generated, +1 per user touched by each mutation."""
        return len(self._log)

    def new_id(self) -> str:
        """A fresh GUID from the tenant's own generator (deterministic for the seed)."""
        with self.lock:
            return _guid(self._rng)

    # -- mutations ------------------------------------------------------------------------------------

    def add_user(self, props: dict, manager_id: str | None = None) -> str:
        """Create a user from Graph properties (``id`` is assigned, None values mean unset); returns the id."""
        with self.lock:
            uid = self.new_id()
            self._insert(uid, props, manager_id)
            self._touch(uid, _EVERYTHING)
            return uid

    def update_user(self, uid: str, **props) -> None:
        """Set properties (None = clear). KeyError for an unknown user; ValueError for ``id``/``manager``."""
        if {"id", "manager"} & props.keys():
            raise ValueError("update_user cannot change id or manager (use set_manager)")
        with self.lock:
            user = self.users[uid]
            for key, value in props.items():
                if value is None:
                    user.pop(key, None)
                else:
                    user[key] = value
            self._touch(uid, frozenset(props))

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
        still be deleted permanently. Reports of the user lose their manager link (an emulator choice)."""
        with self.lock:
            if uid not in self.users:
                if permanent and self._removed.get(uid) == "changed":
                    self._removed[uid] = "deleted"
                    self._touch(uid, _EVERYTHING)
                    return
                raise KeyError(uid)
            del self.users[uid]
            self.managers.pop(uid, None)
            self._removed[uid] = "deleted" if permanent else "changed"
            self._touch(uid, _EVERYTHING)
            for report in [r for r, m in self.managers.items() if m == uid]:
                self._link(report, None)

    def _insert(self, uid: str, props: dict, manager_id: str | None) -> None:
        if manager_id is not None and manager_id not in self.users:
            raise KeyError(manager_id)
        self.users[uid] = {"id": uid, **{k: v for k, v in props.items() if v is not None and k != "id"}}
        self.order.append(uid)
        if manager_id is not None:
            self.managers[uid] = manager_id

    def _link(self, uid: str, manager_id: str | None) -> None:
        old = self.managers.get(uid)
        if old == manager_id:
            return
        if manager_id is None:
            del self.managers[uid]
            self._former_manager[uid] = old
        else:
            self.managers[uid] = manager_id
            self._former_manager.pop(uid, None)
        self._touch(uid, frozenset({"manager"}))

    def _touch(self, uid: str, props: frozenset[str] | None) -> None:
        self._log.append((uid, props))

    # -- reading the change log --------------------------------------------------------------------------

    def changes_since(self, version: int, until: int | None = None,
                      select: Collection[str] | None = None) -> list[Change]:
        """The users changed after ``version`` up to ``until`` (default: now), one Change each, ordered by
        their last change. With ``select``, users whose changes touched none of those properties (nor the
        object as a whole) are left out, as Graph does (reference/graph.md §2.2). ``removed`` reflects the
        user's state now. ValueError if the range is outside the log.
        """
        with self.lock:
            until = self.version if until is None else until
            if not 0 <= version <= until <= self.version:
                raise ValueError(f"no change log range {version}..{until} (version is {self.version})")
            touched: dict[str, frozenset[str] | None] = {}
            for uid, props in self._log[version:until]:
                before = touched.pop(uid, frozenset())
                touched[uid] = None if before is None or props is None else before | props
            wanted = None if select is None else frozenset(select)
            return [Change(uid, self._removed.get(uid) if uid not in self.users else None, props)
                    for uid, props in touched.items()
                    if props is None or wanted is None or props & wanted]

    def removal_reason(self, uid: str) -> str | None:
        """"changed" (soft-deleted) or "deleted" (permanently) for a removed user; None otherwise."""
        with self.lock:
            return None if uid in self.users else self._removed.get(uid)

    def former_manager(self, uid: str) -> str | None:
        """The manager whose link to ``uid`` was removed most recently (None if it has a manager now)."""
        with self.lock:
            return None if uid in self.managers else self._former_manager.get(uid)


# -- generation ----------------------------------------------------------------------------------------

def _guid(rng: random.Random) -> str:
    return str(uuid.UUID(int=rng.getrandbits(128), version=4))


def _slug(text: str, cache: dict[str, str]) -> str:
    """ASCII mail-local-part form of a name ("Zoë" → "zoe"; scripts without ASCII letters → "")."""
    if text not in cache:
        plain = unicodedata.normalize("NFKD", text.translate(_UNDECOMPOSABLE))
        ascii_text = plain.encode("ascii", "ignore").decode()
        cache[text] = "".join(c for c in ascii_text.lower() if c.isalnum())
    return cache[text]


def _department(rng: random.Random) -> str | None:
    """Mostly the canonical spelling; some case/space variants; a few users without one."""
    roll, name = rng.random(), rng.choice(DEPARTMENTS)
    if roll < 0.02:
        return None
    if roll < 0.90:
        return name
    return rng.choice((name.lower(), name.upper(), f" {name} ", f"{name}  ", name.title()))


def _address(rng: random.Random, index: int) -> dict:
    if rng.random() < 0.03 and index > 30:
        return {"officeLocation": "Remote"} if rng.random() < 0.5 else {}
    office = OFFICES[index % len(OFFICES)] if index < 30 else rng.choice(OFFICES)
    out = {k: v for k, v in office.items() if k != "countries"}
    out["country"] = office["countries"][0] if rng.random() < 0.7 else rng.choice(office["countries"])
    return out


def _names(rng: random.Random, index: int) -> tuple[str, str]:
    return _NAMED.get(index) or (rng.choice(GIVEN), rng.choice(SURNAMES))


def _mail_names(given: str, surname: str, index: int, seen: set[str], cache: dict[str, str]) -> str:
    """A unique mail local part: ``given.surname``, numbered on a clash; ``user<index>`` for non-Latin names."""
    local = ".".join(p for p in (_slug(given, cache), _slug(surname, cache)) if p) or f"user{index}"
    if local in seen:
        local = f"{local}{index}"
    seen.add(local)
    return local


def _user(rng: random.Random, index: int, seen: set[str], cache: dict[str, str]) -> dict:
    """The Graph properties of generated user number ``index`` (0 is the CEO)."""
    given, surname = _names(rng, index)
    local = _mail_names(given, surname, index, seen, cache)
    guest = index == _GUEST or (index > 30 and rng.random() < 0.05)
    # East Asian names are written family name first, without a space.
    display = f"{surname}{given}" if given >= "\u2e80" else f"{given} {surname}"
    user = {"displayName": None if index == _NULL_NAME else display, "givenName": given,
            "surname": surname, "jobTitle": LONG_TITLE if index == _LONG_TITLE else
            ("Chief Executive Officer" if index == 0 else rng.choice(JOB_TITLES)),
            "department": "Executive" if index == 0 else _department(rng),
            "accountEnabled": not (index == _DISABLED or (index > 30 and rng.random() < 0.05)),
            "mobilePhone": f"+1 206 555 {index % 10000:04d}" if rng.random() < 0.8 else None,
            "businessPhones": [f"+1 425 555 {(index * 7) % 10000:04d}"] if rng.random() < 0.85 else [],
            **_address(rng, index)}
    if guest:
        user.update(userType="Guest", mail=f"{local}@partner.example", companyName="Fabrikam",
                    userPrincipalName=f"{local}_partner.example#EXT#@{GUEST_DOMAIN}")
    else:
        no_mail = index == _NO_MAIL or (index > 30 and rng.random() < 0.03)
        user.update(userType="Member", mail=None if no_mail else f"{local}@{DOMAIN}",
                    userPrincipalName=f"{local}@{DOMAIN}", employeeId=f"E{100000 + index}",
                    companyName="Contoso GmbH" if user.get("country") in ("Germany", "DE", "Deutschland")
                    else "Contoso Ltd", employeeType="Contractor" if rng.random() < 0.1 else "Employee")
    return user


def _manager_index(rng: random.Random, index: int, user: dict) -> int | None:
    """A management tree with spans of about 6-10: the manager is always an earlier (non-guest) user."""
    if index == 0 or user["userType"] == "Guest" or index == _NO_MANAGER or rng.random() < 0.005:
        return None
    return rng.randint((index - 1) // 10, (index - 1) // 6)


def generate_tenant(users: int = 2000, seed: int = 1) -> Tenant:
    """A tenant of ``users`` users, identical for identical arguments. User 0 is the CEO."""
    rng = random.Random(seed)
    tenant = Tenant(_guid(rng), seed)
    ids = [_guid(rng) for _ in range(users)]
    seen: set[str] = set()
    cache: dict[str, str] = {}
    for index, uid in enumerate(ids):
        user = _user(rng, index, seen, cache)
        manager = _manager_index(rng, index, user)
        # A guest may have been picked as manager's index range; walk up to the nearest member.
        while manager is not None and tenant.users[ids[manager]]["userType"] == "Guest":
            manager = manager - 1 if manager else None
        tenant._insert(uid, user, ids[manager] if manager is not None else None)
    return tenant
