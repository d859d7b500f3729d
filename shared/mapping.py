"""Pure mapping: Graph users to Assets records, and the derived objects folded from their attributes.

Nothing here does I/O. ``map_user`` turns one raw Graph user (as the delta endpoint returns it) into a User
``Record``; ``Derived`` watches the users of a full run and afterwards yields the Department, Office Location,
Address, City and Country records, with spelling variants folded together (case, spaces, country names and
codes). Odd input never raises: a missing name falls back to the UPN, over-long text is trimmed to what Assets
accepts and every such fix is counted in ``Warnings`` (object ids only - no names or e-mails).
"""
from __future__ import annotations

import hashlib
import re
from collections import Counter, defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import lru_cache

import orjson
import pycountry

from shared.schema import TEXT_LIMIT

# Properties read from Graph for users: what the schema needs, plus `manager` for relationship tracking.
USER_SELECT = ["id", "displayName", "givenName", "surname", "mail", "userPrincipalName", "jobTitle",
               "department", "companyName", "employeeId", "employeeType", "officeLocation", "streetAddress",
               "city", "state", "postalCode", "country", "mobilePhone", "businessPhones", "accountEnabled",
               "userType", "manager"]
_SPACES = re.compile(r"\s+")
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
# Country spellings pycountry does not know (it knows names, official names and alpha-2/alpha-3 codes).
_COUNTRY_ALIASES = {"uk": "GB", "england": "GB", "scotland": "GB", "wales": "GB", "great britain": "GB",
                    "usa": "US", "u.s.": "US", "u.s.a.": "US", "united states of america": "US",
                    "deutschland": "DE", "holland": "NL", "south korea": "KR", "russia": "RU"}


@dataclass(frozen=True, slots=True)
class Record:
    """One Assets entry: object type key, record id (Entra id or folded key), locator data, content hash."""

    type: str
    id: str
    data: dict
    hash: str

    def line(self) -> bytes:
        """The record as one JSON line for a queue payload."""
        return orjson.dumps({"t": self.type, "id": self.id, "h": self.hash, "d": self.data})


def make_record(type_key: str, record_id: str, data: dict) -> Record:
    """A record with its content hash: any change of any pushed value changes the hash."""
    digest = hashlib.blake2b(orjson.dumps(data, option=orjson.OPT_SORT_KEYS), digest_size=12).hexdigest()
    return Record(type_key, record_id, data, digest)


@dataclass
class Warnings:
    """Counts of data fixes per kind, with a few sample object ids each (never personal values)."""

    counts: Counter = field(default_factory=Counter)
    samples: dict[str, list[str]] = field(default_factory=lambda: defaultdict(list))

    def add(self, kind: str, object_id: str) -> None:
        self.counts[kind] += 1
        if len(self.samples[kind]) < 3:
            self.samples[kind].append(object_id)

    def lines(self) -> list[str]:
        """Readable summary lines, e.g. ``Job Title trimmed to 255 characters: 2 (e.g. 1a2b…)``."""
        return [f"{kind}: {n} (e.g. {', '.join(self.samples[kind])})" for kind, n in sorted(self.counts.items())]


def clean(value, warnings: Warnings | None = None, object_id: str = "", attribute: str = "") -> str | None:
    """Text as Assets should get it: control characters removed, spaces collapsed, trimmed to TEXT_LIMIT.

    Returns None for None/empty. Non-ASCII text is kept as is.
    """
    if value is None:
        return None
    text = _SPACES.sub(" ", _CONTROL.sub("", str(value))).strip()
    if len(text) > TEXT_LIMIT:
        text = text[:TEXT_LIMIT].rstrip()
        if warnings is not None:
            warnings.add(f"{attribute} trimmed to {TEXT_LIMIT} characters", object_id)
    return text or None


def fold(text: str | None) -> str:
    """The folding key of a value: spelling variants that differ in case or spaces fold to one key."""
    return _SPACES.sub(" ", text).strip().casefold() if text else ""


def manager_of(user: dict) -> str | None:
    """The manager id from ``manager@delta`` (a removed link means no manager)."""
    for link in user.get("manager@delta") or ():
        if "@removed" not in link and link.get("id"):
            return link["id"]
    return None


def map_user(user: dict, warnings: Warnings) -> Record:
    """One Graph user (delta JSON) as a User record. Never raises on odd values; fixes are counted."""
    uid = user["id"]
    c = lambda key, attr: clean(user.get(key), warnings, uid, attr)
    name = c("displayName", "Name") or clean(user.get("userPrincipalName")) or clean(user.get("mail")) or uid
    if not user.get("displayName"):
        warnings.add("no display name (used the UPN)", uid)
    email = c("mail", "Email")
    if email and not _EMAIL.match(email):
        warnings.add("e-mail not valid (left empty)", uid)
        email = None
    phones = user.get("businessPhones") or []
    enabled = user.get("accountEnabled")
    data = {
        "id": uid, "name": name, "upn": c("userPrincipalName", "User Principal Name"), "email": email,
        "givenName": c("givenName", "Given Name"), "surname": c("surname", "Surname"),
        "jobTitle": c("jobTitle", "Job Title"), "employeeId": c("employeeId", "Employee ID"),
        "employeeType": c("employeeType", "Employee Type"), "company": c("companyName", "Company"),
        "department": c("department", "Department"), "officeLocation": c("officeLocation", "Office Location"),
        "managerId": manager_of(user), "mobilePhone": c("mobilePhone", "Mobile Phone"),
        "businessPhone": clean(phones[0], warnings, uid, "Business Phone") if phones else None,
        "userType": c("userType", "User Type"), "accountEnabled": bool(enabled) if enabled is not None else None,
        "status": "Disabled" if enabled is False else "Active",
    }
    return make_record("user", uid, data)


@lru_cache(maxsize=4096)
def resolve_country(raw: str) -> tuple[str, str]:
    """(name, ISO alpha-2 code) for a country written any common way; unknown ones keep their text, no code."""
    text = clean(raw) or ""
    code = _COUNTRY_ALIASES.get(text.casefold())
    try:
        country = pycountry.countries.get(alpha_2=code) if code else pycountry.countries.lookup(text)
    except LookupError:
        return text, ""
    return getattr(country, "common_name", None) or country.name, country.alpha_2


def _key(*parts: str | None) -> str:
    """A readable identity key from folded parts; hashed when it would not fit a text attribute."""
    key = "|".join(fold(p) for p in parts)
    return key if len(key) <= TEXT_LIMIT else "sha1:" + hashlib.sha1(key.encode()).hexdigest()


def _most_common(counter: Counter) -> str | None:
    """The most frequent value; ties go to the alphabetically first, so runs are deterministic."""
    return min(counter.items(), key=lambda kv: (-kv[1], kv[0]))[0] if counter else None


@dataclass
class Derived:
    """Collects the derived objects of a full run from its users, folding spelling variants.

    ``names`` maps (type key, folding key) to a name chosen in an earlier run: once a department has been
    pushed as "Sales", a later majority of "SALES" does not rename it (Assets identity is case-sensitive, so a
    new spelling would create a second object).
    """

    names: dict[str, dict[str, str]] = field(default_factory=dict)
    _variants: dict = field(default_factory=lambda: defaultdict(Counter))
    _company: dict = field(default_factory=lambda: defaultdict(Counter))
    _office_address: dict = field(default_factory=lambda: defaultdict(Counter))
    _addresses: dict = field(default_factory=dict)
    _cities: dict = field(default_factory=dict)
    _countries: dict = field(default_factory=dict)

    def observe(self, user: dict, record: Record) -> None:
        """Count what ``user`` (raw Graph JSON) and its record contribute to the derived objects."""
        d = record.data
        if d["department"]:
            key = fold(d["department"])
            self._variants["department", key][d["department"]] += 1
            if d["company"]:
                self._company[key][d["company"]] += 1
        address_key = self._observe_address(user)
        if d["officeLocation"]:
            key = fold(d["officeLocation"])
            self._variants["office", key][d["officeLocation"]] += 1
            if address_key:
                self._office_address[key][address_key] += 1

    def _observe_address(self, user: dict) -> str | None:
        country = clean(user.get("country"))
        country_name, code = resolve_country(country) if country else (None, "")
        if country_name:
            self._countries.setdefault(country_name, code)
        city, state = clean(user.get("city")), clean(user.get("state"))
        city_key = _key(city, state, code or country_name) if city else None
        if city_key and city_key not in self._cities:
            self._cities[city_key] = {"key": city_key, "name": city, "state": state, "country": country_name}
        street, postal = clean(user.get("streetAddress")), clean(user.get("postalCode"))
        if not (street or postal):
            return None
        address_key = _key(street, postal, city_key or country_name)
        if address_key not in self._addresses:
            line = ", ".join(p for p in (street, " ".join(p for p in (postal, city) if p), state, country_name) if p)
            self._addresses[address_key] = {"key": address_key, "name": clean(line), "street": street,
                                            "postalCode": postal, "state": state, "cityKey": city_key}
        return address_key

    def chosen_names(self) -> dict[str, dict[str, str]]:
        """Names to remember for the next run: earlier choices plus the majority spelling of new keys."""
        out = {t: dict(v) for t, v in self.names.items()}
        for (type_key, key), variants in self._variants.items():
            out.setdefault(type_key, {}).setdefault(key, _most_common(variants))
        return out

    def records(self) -> Iterator[Record]:
        """The derived records, once every user has been observed."""
        names = self.chosen_names()
        for (type_key, key), _ in sorted(self._variants.items()):
            name = names[type_key][key]
            if type_key == "department":
                yield make_record("department", key, {"name": name, "company": _most_common(self._company[key])})
            else:
                yield make_record("office", key, {"name": name,
                                                  "addressKey": _most_common(self._office_address[key])})
        for key, data in sorted(self._addresses.items()):
            yield make_record("address", key, data)
        for key, data in sorted(self._cities.items()):
            yield make_record("city", key, data)
        for name, code in sorted(self._countries.items()):
            yield make_record("country", fold(name), {"name": name, "code": code or None})
