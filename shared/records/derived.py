"""Derived objects: Department, Office Location, Address, City and Country, folded from user attributes.

``Derived`` watches the users of a full run and afterwards yields one record per distinct normalised value,
spelling variants folded together (case, spaces, country names and codes). Pure: no I/O.
"""
from __future__ import annotations

import hashlib
from collections import Counter, defaultdict
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from functools import lru_cache

import pycountry

from shared.records.build import Record, clean, derived_record, fold
from shared.records.schema import TEXT_LIMIT, ObjectType

# Country spellings pycountry does not know (it knows names, official names and alpha-2/alpha-3 codes).
_COUNTRY_ALIASES = {"uk": "GB", "england": "GB", "scotland": "GB", "wales": "GB", "great britain": "GB",
                    "usa": "US", "u.s.": "US", "u.s.a.": "US", "united states of america": "US",
                    "deutschland": "DE", "holland": "NL", "south korea": "KR", "russia": "RU"}


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
    _seen_addresses: dict = field(default_factory=dict)

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
        # Most users share a handful of addresses: fold each distinct raw address once (a third of the CPU
        # of a 100,000-user run went here before).
        raw = (user.get("country"), user.get("city"), user.get("state"), user.get("streetAddress"),
               user.get("postalCode"))
        if raw not in self._seen_addresses:
            self._seen_addresses[raw] = self._fold_address(*raw)
        return self._seen_addresses[raw]

    def _fold_address(self, country, city, state, street, postal) -> str | None:
        country = clean(country)
        country_name, code = resolve_country(country) if country else (None, "")
        if country_name:
            self._countries.setdefault(country_name, code)
        city, state = clean(city), clean(state)
        city_key = _key(city, state, code or country_name) if city else None
        if city_key and city_key not in self._cities:
            self._cities[city_key] = {"key": city_key, "name": city, "state": state, "country": country_name}
        street, postal = clean(street), clean(postal)
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

    def records(self, types: Mapping[str, ObjectType] | None = None) -> Iterator[Record]:
        """The derived records, once every user has been observed, as ``types`` (by key: the object types as
        the MAPPING_FILE shaped them) have them; the default types for those ``types`` does not name."""
        types = types or {}
        names = self.chosen_names()
        for (type_key, key), _ in sorted(self._variants.items()):
            name = names[type_key][key]
            if type_key == "department":
                yield derived_record("department", key, {"name": name, "company": _most_common(self._company[key]),
                                                         "status": "Active"}, types.get("department"))
            else:
                yield derived_record("office", key, {"name": name, "status": "Active",
                                                     "addressKey": _most_common(self._office_address[key])},
                                     types.get("office"))
        for key, data in sorted(self._addresses.items()):
            yield derived_record("address", key, {**data, "status": "Active"}, types.get("address"))
        for key, data in sorted(self._cities.items()):
            yield derived_record("city", key, {**data, "status": "Active"}, types.get("city"))
        for name, code in sorted(self._countries.items()):
            yield derived_record("country", fold(name), {"name": name, "code": code or None, "status": "Active"},
                                 types.get("country"))
