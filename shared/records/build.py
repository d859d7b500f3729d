"""Pure mapping: Graph objects (users, groups, devices, service principals) to Assets records.

Nothing here does I/O. ``map_user``, ``map_group``, ``map_device`` and ``map_application`` turn one raw Graph
object into a ``Record`` (the data keyed by the locators of ``shared.records.schema``, plus a content hash);
``deactivated`` builds the record that marks a departure. Odd input never raises: a missing name falls back to
the UPN or the id, over-long text is trimmed to what Assets accepts, and every such fix is counted in
``Warnings`` (object ids only - no names or e-mails). The derived objects live in ``shared.records.derived``.
"""
from __future__ import annotations

import hashlib
import re
from collections import Counter, defaultdict
from collections.abc import Container, Iterable, Mapping
from dataclasses import dataclass, field

import orjson

from shared.records.schema import TEXT_LIMIT

# Properties read from Graph for users: what the schema needs, plus `manager` for relationship tracking.
USER_SELECT = ["id", "displayName", "givenName", "surname", "mail", "userPrincipalName", "jobTitle",
               "department", "companyName", "employeeId", "employeeType", "officeLocation", "streetAddress",
               "city", "state", "postalCode", "country", "mobilePhone", "businessPhones", "accountEnabled",
               "userType", "manager"]
# Groups through delta: `members` turns on members@delta (reference/graph.md §2.5); owners are not tracked by
# delta and come from a list with $expand=owners.
GROUP_SELECT = ["id", "displayName", "description", "mail", "mailNickname", "groupTypes", "securityEnabled",
                "mailEnabled", "members"]
DEVICE_SELECT = ["id", "displayName", "deviceId", "operatingSystem", "operatingSystemVersion", "trustType",
                 "isCompliant", "isManaged", "accountEnabled", "approximateLastSignInDateTime"]
# Service principals: the publisher is v1.0's verifiedPublisher (publisherName is beta-only: v1.0 answers 400 to
# it in a $select); appOwnerOrganizationId is the tenant the app is registered in.
APPLICATION_SELECT = ["id", "displayName", "appId", "verifiedPublisher", "appOwnerOrganizationId",
                      "servicePrincipalType", "accountEnabled"]
_SPACES = re.compile(r"\s+")
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
DELETED = "Deleted"


@dataclass(frozen=True, slots=True)
class Record:
    """One Assets entry: object type key, record id (Entra id or folded key), locator data, content hash."""

    type: str
    id: str
    data: dict
    hash: str

    def line(self) -> bytes:
        """The record as one payload line: ``[type, id, hash]``, a tab, then the data as JSON. The worker reads
        the small head and passes the data on as it is, never parsing it (JSON text holds no raw tab)."""
        return orjson.dumps([self.type, self.id, self.hash]) + b"\t" + orjson.dumps(self.data)


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
    text = value if isinstance(value, str) else str(value)
    if not text.isprintable() or "  " in text:  # the regexes only when they can change something (hot path)
        text = _SPACES.sub(" ", _CONTROL.sub("", text))
    text = text.strip()
    if len(text) > TEXT_LIMIT:
        text = text[:TEXT_LIMIT].rstrip()
        if warnings is not None:
            warnings.add(f"{attribute} trimmed to {TEXT_LIMIT} characters", object_id)
    return text or None


def fold(text: str | None) -> str:
    """The folding key of a value: spelling variants that differ in case or spaces fold to one key."""
    if not text:
        return ""
    if not text.isprintable() or "  " in text:
        text = _SPACES.sub(" ", text)
    return text.strip().casefold()


def manager_of(user: dict) -> str | None:
    """The manager id from ``manager@delta`` (a removed link means no manager)."""
    for link in user.get("manager@delta") or ():
        if "@removed" not in link and link.get("id"):
            return link["id"]
    return None


# Plain text attributes of a user: (record key, Graph property, Assets attribute for warnings).
_USER_TEXT = (("upn", "userPrincipalName", "User Principal Name"), ("givenName", "givenName", "Given Name"),
              ("surname", "surname", "Surname"), ("jobTitle", "jobTitle", "Job Title"),
              ("employeeId", "employeeId", "Employee ID"), ("employeeType", "employeeType", "Employee Type"),
              ("company", "companyName", "Company"), ("department", "department", "Department"),
              ("officeLocation", "officeLocation", "Office Location"), ("mobilePhone", "mobilePhone", "Mobile Phone"),
              ("userType", "userType", "User Type"))


def map_user(user: dict, warnings: Warnings, scope: Container[str] | None = None,
             unmatched: Warnings | None = None, accounts: Mapping[str, str | None] | None = None) -> Record:
    """One Graph user (delta JSON) as a User record. Never raises on odd values; fixes are counted.

    With a ``scope`` (the ids of the users in scope), a manager outside it is left empty and counted in
    ``unmatched``: Assets would otherwise link to a stale object, or to nothing, depending on history.
    With ``accounts`` (Jira linking on: Entra user id -> Atlassian account id, ``shared.jira_links``), the record
    also carries the user's and the manager's account ids.
    """
    uid = user["id"]
    name = clean(user.get("displayName"), warnings, uid, "Name")
    if not name:
        warnings.add("no display name (used the UPN)", uid)
        name = clean(user.get("userPrincipalName")) or clean(user.get("mail")) or uid
    email = clean(user.get("mail"), warnings, uid, "Email")
    if email and not _EMAIL.match(email):
        warnings.add("e-mail not valid (left empty)", uid)
        email = None
    phones = user.get("businessPhones") or []
    enabled = user.get("accountEnabled")
    data = {"id": uid, "name": name, "email": email}
    for key, graph_key, attribute in _USER_TEXT:  # a loop, not 11 calls through a lambda: the hot path
        value = user.get(graph_key)
        data[key] = None if value is None else clean(value, warnings, uid, attribute)
    data |= {
        "managerId": _in_scope(manager_of(user), scope, unmatched, "manager outside the scope", uid),
        "businessPhone": clean(phones[0], warnings, uid, "Business Phone") if phones else None,
        "accountEnabled": bool(enabled) if enabled is not None else None, "status": _status(enabled),
    }
    if accounts is not None:
        manager = data["managerId"]
        data["atlassianAccountId"] = accounts.get(uid)
        data["managerAtlassianAccountId"] = accounts.get(manager) if manager else None
    return make_record("user", uid, data)


def _in_scope(ref: str | None, scope: Container[str] | None, unmatched: Warnings | None, kind: str,
              owner: str) -> str | None:
    if ref is None or scope is None or ref in scope:
        return ref
    if unmatched is not None:
        unmatched.add(kind, owner)
    return None


def user_refs(refs: Iterable[str], scope: Container[str] | None, unmatched: Warnings | None, kind: str,
              owner: str) -> list[str]:
    """The user ids of ``refs`` that are in scope (all when ``scope`` is None), sorted for a stable hash."""
    return sorted({r for r in refs if _in_scope(r, scope, unmatched, kind, owner)})


def _status(enabled: object) -> str:
    return "Disabled" if enabled is False else "Active"


def _bool(value: object) -> bool | None:
    return bool(value) if value is not None else None


def map_group(group: dict, members: list[str], owners: list[str], warnings: Warnings) -> Record:
    """One Graph group (delta JSON, ``members@delta`` already merged by the caller) as a Group record.

    ``members`` and ``owners`` are the user ids to link (the caller drops non-users and users out of scope).
    """
    gid = group["id"]
    c = lambda key, attr: clean(group.get(key), warnings, gid, attr)
    email = c("mail", "Email")
    data = {
        "id": gid, "name": c("displayName", "Name") or clean(group.get("mailNickname")) or gid,
        "description": c("description", "Description"), "email": email if email and _EMAIL.match(email) else None,
        "groupTypes": clean(", ".join(group.get("groupTypes") or ())), "securityEnabled": _bool(group.get("securityEnabled")),
        "mailEnabled": _bool(group.get("mailEnabled")), "members": members, "owners": owners, "status": "Active",
    }
    return make_record("group", gid, data)


def map_device(device: dict, owners: list[str], warnings: Warnings) -> Record:
    """One Graph device as a Device record; ``owners`` are the registered owners' user ids in scope."""
    did = device["id"]
    c = lambda key, attr: clean(device.get(key), warnings, did, attr)
    data = {
        "id": did, "name": c("displayName", "Name") or did, "deviceId": c("deviceId", "Device ID"),
        "operatingSystem": c("operatingSystem", "Operating System"),
        "osVersion": c("operatingSystemVersion", "OS Version"), "trustType": c("trustType", "Trust Type"),
        "compliant": _bool(device.get("isCompliant")), "managed": _bool(device.get("isManaged")),
        "accountEnabled": _bool(device.get("accountEnabled")),
        "lastSignIn": clean(device.get("approximateLastSignInDateTime")), "registeredOwners": owners,
        "status": _status(device.get("accountEnabled")),
    }
    return make_record("device", did, data)


def map_application(sp: dict, owners: list[str], warnings: Warnings) -> Record:
    """One Graph service principal (an enterprise application) as an Application record. The publisher is the
    verified publisher's name (null for an app whose publisher is not verified, and for Microsoft's own)."""
    sid = sp["id"]
    c = lambda key, attr: clean(sp.get(key), warnings, sid, attr)
    publisher = sp.get("verifiedPublisher") or {}
    data = {
        "id": sid, "name": c("displayName", "Name") or clean(sp.get("appId")) or sid, "appId": c("appId", "App ID"),
        "publisher": clean(publisher.get("displayName"), warnings, sid, "Publisher"),
        "publisherTenantId": c("appOwnerOrganizationId", "Publisher Tenant ID"),
        "servicePrincipalType": c("servicePrincipalType", "Service Principal Type"),
        "accountEnabled": _bool(sp.get("accountEnabled")), "owners": owners,
        "status": _status(sp.get("accountEnabled")),
    }
    return make_record("application", sid, data)


def deactivated(type_key: str, record_id: str, last: dict | None) -> Record:
    """The record that marks a departed object: its last pushed data with ``Status = Deleted`` (users also
    ``Account Enabled = false``). Without stored data (pushed by an older version), only what identifies it.
    The hash carries a ``D`` prefix, so later runs see at a glance that the departure was already pushed."""
    data = dict(last) if last else {"id": record_id}
    data["status"] = DELETED
    if type_key == "user":
        data["accountEnabled"] = False
    record = make_record(type_key, record_id, data)
    return Record(record.type, record.id, record.data, "D" + record.hash)


def is_deactivated(stored_hash: str) -> bool:
    """Whether a stored hash is that of a departure record (see ``deactivated``)."""
    return stored_hash.startswith("D")
