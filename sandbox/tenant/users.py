"""Generated users: user ``i`` of a seeded tenant and its manager, as pure functions of (seed, i).

The draws that relationships depend on (guest, enabled, name, department slot, manager) are single hashes
(``Seeded.unit``), so reverse lookups (``reports``) and other collections (All Staff, device names) evaluate
them without building a user; everything else of a user comes from a draw stream of its own (``Seeded.rng``).

Departments: user ``i`` belongs to department slot ``(i + offset) % 12``, so the users of one department are an
arithmetic progression that a department's groups can draw members from by position
(``sandbox/tenant/groups.py``). The spelling of the department still varies per user, and 2 % have none.

Mail local parts are ``given.surname`` for the first 30 users (numbered on a clash, as before) and
``given.surname<i>`` after them: unique without remembering every name drawn so far.
"""
from __future__ import annotations

import unicodedata

from sandbox.tenant.licences import assigned
from sandbox.tenant.seeded import Collection, Draws, Seeded
from sandbox.tenant.sign_ins import activity

DOMAIN = "sandbox.example"
GUEST_DOMAIN = "sandboxtenant.onmicrosoft.com"
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
_OFFICE_FIELDS = [{k: v for k, v in office.items() if k != "countries"} for office in OFFICES]
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
_FIXED = 30  # users below this index have their odd cases at fixed positions and draw nothing for them
LONG_TITLE = ("Senior Principal Distinguished Staff Engineer for Cross-Functional Platform Reliability, "
              "Observability, Developer Experience and Internal Tooling in the Office of the Chief "
              "Technology Officer (Europe, Middle East, Africa and Asia-Pacific regions, interim) - acting")
_SLUGS: dict[str, str] = {}


def slug(text: str) -> str:
    """ASCII mail-local-part form of a name ("Zoë" → "zoe"; scripts without ASCII letters → "")."""
    found = _SLUGS.get(text)
    if found is None:
        plain = unicodedata.normalize("NFKD", text.translate(_UNDECOMPOSABLE))
        ascii_text = plain.encode("ascii", "ignore").decode()
        found = _SLUGS[text] = "".join(c for c in ascii_text.lower() if c.isalnum())
    return found


class Users(Collection):
    """The ``count`` generated users of a seed: ids, properties, managers and who reports to whom."""

    KIND = "users"

    def __init__(self, seeded: Seeded, count: int):
        super().__init__(seeded, count)
        self._department_offset = seeded.below("department-offset", 0, len(DEPARTMENTS))
        self._early_locals = self._number_clashes(min(count, _FIXED))

    # -- single-hash draws (cheap: relationships and reverse lookups use them) ---------------------------

    def is_guest(self, index: int) -> bool:
        return index == _GUEST or (index > _FIXED and self.seeded.unit("guest", index) < 0.05)

    def is_enabled(self, index: int) -> bool:
        return not (index == _DISABLED or (index > _FIXED and self.seeded.unit("disabled", index) < 0.05))

    def names(self, index: int) -> tuple[str, str]:
        """(given name, surname) of user ``index``."""
        return _NAMED.get(index) or (GIVEN[self.seeded.below("given", index, len(GIVEN))],
                                     SURNAMES[self.seeded.below("surname", index, len(SURNAMES))])

    def department_slot(self, index: int) -> int:
        """The department (index into DEPARTMENTS) of user ``index``: users of one slot are ``i ≡ r (mod 12)``."""
        return (index + self._department_offset) % len(DEPARTMENTS)

    def slot_residue(self, slot: int) -> int:
        """The residue r such that the users of department ``slot`` are r, r + 12, r + 24, ..."""
        return (slot - self._department_offset) % len(DEPARTMENTS)

    def manager(self, index: int) -> int | None:
        """The manager's index: an earlier member user (spans of about 6-10), or None (CEO, guests, a few)."""
        if index == 0 or index >= self.count or index == _NO_MANAGER or self.is_guest(index) \
                or self.seeded.unit("no-manager", index) < 0.005:
            return None
        low, high = (index - 1) // 10, (index - 1) // 6
        chosen = low + self.seeded.below("manager", index, high - low + 1)
        while self.is_guest(chosen):  # a guest was drawn: walk up to the nearest member (user 0 is one)
            chosen -= 1
        return chosen

    def reports(self, index: int) -> list[int]:
        """The users whose generated manager is ``index``. A report ``i`` draws its manager from
        ``[(i-1)//10, (i-1)//6]`` and walks up over guests, so only ``6·index < i ≤ 10·next_member`` can
        report to ``index`` (next_member: the first member user above it)."""
        if index >= self.count or self.is_guest(index):
            return []
        above = index + 1
        while above < self.count and self.is_guest(above):
            above += 1
        return [i for i in range(max(1, 6 * index + 1), min(self.count, 10 * above + 1))
                if self.manager(i) == index]

    # -- the whole user -----------------------------------------------------------------------------------

    def build(self, index: int) -> dict:
        """The Graph properties of user ``index`` (0 is the CEO), with ``id``; unset properties are absent."""
        rng = self.seeded.rng("user", index)
        given, surname = self.names(index)
        local = self._early_locals[index] if index < _FIXED else f"{self._local(given, surname, index)}{index}"
        # East Asian names are written family name first, without a space.
        display = f"{surname}{given}" if given >= "\u2e80" else f"{given} {surname}"
        user = {"id": self.id(index), "displayName": None if index == _NULL_NAME else display,
                "givenName": given, "surname": surname,
                "jobTitle": LONG_TITLE if index == _LONG_TITLE else
                ("Chief Executive Officer" if index == 0 else rng.choice(JOB_TITLES)),
                "department": "Executive" if index == 0 else self._department(rng, index),
                "accountEnabled": self.is_enabled(index),
                "mobilePhone": f"+1 206 555 {index % 10000:04d}" if rng.random() < 0.8 else None,
                "businessPhones": [f"+1 425 555 {(index * 7) % 10000:04d}"] if rng.random() < 0.85 else [],
                **self._address(rng, index)}
        user["assignedLicenses"] = assigned(index, self.is_guest(index))  # no draw (sandbox/tenant/licences.py)
        # a stream of its own, not the user's (sandbox/tenant/sign_ins.py); None: the user has none
        user["signInActivity"] = activity(self.seeded, index, self.is_guest(index), user["accountEnabled"])
        if self.is_guest(index):
            user.update(userType="Guest", mail=f"{local}@partner.example", companyName="Fabrikam",
                        userPrincipalName=f"{local}_partner.example#EXT#@{GUEST_DOMAIN}")
        else:
            no_mail = index == _NO_MAIL or (index > _FIXED and rng.random() < 0.03)
            user.update(userType="Member", mail=None if no_mail else f"{local}@{DOMAIN}",
                        userPrincipalName=f"{local}@{DOMAIN}", employeeId=f"E{100000 + index}",
                        companyName="Contoso GmbH" if user.get("country") in ("Germany", "DE", "Deutschland")
                        else "Contoso Ltd", employeeType="Contractor" if rng.random() < 0.1 else "Employee")
        return {k: v for k, v in user.items() if v is not None}

    @staticmethod
    def _local(given: str, surname: str, index: int) -> str:
        return ".".join(p for p in (slug(given), slug(surname)) if p) or f"user{index}"

    def _number_clashes(self, count: int) -> list[str]:
        """Mail local parts of the first users: ``given.surname``, numbered with the index on a clash."""
        seen: set[str] = set()
        out = []
        for index in range(count):
            local = self._local(*self.names(index), index)
            if local in seen:
                local = f"{local}{index}"
            seen.add(local)
            out.append(local)
        return out

    def _department(self, rng: Draws, index: int) -> str | None:
        """Mostly the canonical spelling; some case/space variants; a few users without one."""
        roll, name = rng.random(), DEPARTMENTS[self.department_slot(index)]
        if roll < 0.02:
            return None
        if roll < 0.90:
            return name
        return rng.choice((name.lower(), name.upper(), f" {name} ", f"{name}  ", name.title()))

    @staticmethod
    def _address(rng: Draws, index: int) -> dict:
        if index > _FIXED and rng.random() < 0.03:
            return {"officeLocation": "Remote"} if rng.random() < 0.5 else {}
        office = index % len(OFFICES) if index < _FIXED else rng.randrange(len(OFFICES))
        countries = OFFICES[office]["countries"]
        return {**_OFFICE_FIELDS[office],
                "country": countries[0] if rng.random() < 0.7 else rng.choice(countries)}
