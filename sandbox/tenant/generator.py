"""A seeded synthetic Microsoft Entra tenant: users, groups, devices and service principals in a ``Tenant``.

``generate_tenant(users, seed, groups, devices, applications)`` is deterministic for its arguments and cheap
(plain dicts; 100,000 users, 5,000 groups, 80,000 devices and 2,000 service principals in a few seconds).
Properties use Graph's property names (users: those of ``shared.records.build.USER_SELECT`` without ``manager``).
Relationships live beside the objects: ``managers`` (user → manager), ``members`` (group → direct members as
``(odata type name, id)``), ``group_owners``, ``device_owners`` and ``sp_owners`` (object → owner user ids).

The data is deliberately untidy the way real directories are: department spelling variants, country names
written several ways, guests with ``#EXT#`` UPNs, disabled accounts, missing mail, non-ASCII names, a null
displayName and an over-long jobTitle; a dynamic "All Staff" group with every enabled member user, two groups
of 1,000+ members (at most 60 % of the users in small tenants), exactly one nested group, groups with device
and orgContact members (contacts are ids only), an empty group, groups without owners and with three; devices
without an owner, never signed in, stale, disabled, of unknown compliance; service principals of Microsoft,
of SaaS vendors, of the tenant itself (with owners) and managed identities. The odd cases sit at fixed
positions near the start of each collection, so even a 300-user tenant has each of them.

The generated state is the tenant's version 0: objects are stored directly, without change-log entries.
"""
from __future__ import annotations

import calendar
import random
import time
import unicodedata

from sandbox.tenant.model import Tenant, guid

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


# -- users -------------------------------------------------------------------------------------------------

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


# -- groups, devices and service principals -------------------------------------------------------------

GROUP_TOPICS = ["Team", "Leads", "Project Falcon", "Project Atlas", "Project Nordlicht", "Budget Approvers",
                "On-Call", "Hiring Panel", "Book Club", "Security Champions", "Travel Approvers",
                "Social Committee", "Onboarding Buddies", "Contractors", "Interns", "Tiger Team", "Guild",
                "Quarterly Planning", "Wellbeing", "Mentoring Circle"]
# Fixed positions of the odd groups (every tenant with >= 10 groups has them).
_ALL_STAFF, _LARGE, _NO_OWNER, _PARENT, _NESTED, _DEVICE_GROUP, _CONTACT_GROUP, _EMPTY, _THREE_OWNERS = \
    0, (1, 2), 3, 4, 5, 6, 7, 8, 9
_SPECIAL_GROUPS = {
    _ALL_STAFF: ("All Staff", "Everyone in the company (dynamic membership).", "unified-dynamic"),
    1: ("Engineering Community", "All engineers, all sites.", "unified"),
    2: ("Sales Worldwide", "Sales distribution and security group.", "mail-security"),
    _NO_OWNER: ("Équipe München–Paris ☕", None, "security"),
    _PARENT: ("Leadership Circle", "Leaders and their assistants (contains a nested group).", "unified"),
    _NESTED: ("Executive Assistants", "Nested inside Leadership Circle.", "security"),
    _DEVICE_GROUP: ("Autopilot Devices - Windows", "Devices for Windows Autopilot policies.", "security"),
    _CONTACT_GROUP: ("Partners & Vendors", "External contacts and their internal sponsors.", "distribution"),
    _EMPTY: ("Project Phoenix (archived)", "No members left.", "unified"),
    _THREE_OWNERS: ("東京オフィス Tokyo Office", "Tokyo office: " + "announcements, facilities, events; " * 12,
                    "unified"),
}
DYNAMIC_RULE = '(user.userType -eq "Member") and (user.accountEnabled -eq true)'
# (operatingSystem, share, trustType choices, [(manufacturer, model)], [versions])
DEVICE_PLATFORMS = [
    ("Windows", 0.60, ("AzureAd", "AzureAd", "ServerAd"),
     [("Dell Inc.", "Latitude 7440"), ("LENOVO", "ThinkPad X1 Carbon Gen 11"), ("HP", "HP EliteBook 840 G10"),
      ("Microsoft Corporation", "Surface Laptop 5")],
     ["10.0.22631.4460", "10.0.22631.4602", "10.0.19045.5131", "10.0.26100.2314"]),
    ("MacMDM", 0.10, ("Workplace",), [("Apple", "MacBookPro18,1"), ("Apple", "Mac14,2")], ["14.6.1", "15.1"]),
    ("iOS", 0.15, ("Workplace",), [("Apple", "iPhone 15"), ("Apple", "iPhone 14"), ("Apple", "iPad Air")],
     ["17.6.1", "18.1", "18.1.1"]),
    ("Android", 0.12, ("Workplace",), [("samsung", "SM-S911B"), ("Google", "Pixel 8")], ["13", "14", "15"]),
    ("Linux", 0.03, ("Workplace",), [(None, None)], ["Ubuntu 22.04", "Ubuntu 24.04"]),
]
LAST_SIGN_IN_BASE = calendar.timegm((2026, 11, 20, 8, 15, 0))
_ALNUM = "ABCDEFGHJKLMNPQRSTUVWXYZ0123456789"
MICROSOFT_TENANT = "f8cdef31-a31e-4b4a-93e4-5f571e91255a"  # appOwnerOrganizationId of Microsoft's own apps
FIRST_PARTY = [("Microsoft Graph", "00000003-0000-0000-c000-000000000000"),
               ("Office 365 Exchange Online", "00000002-0000-0ff1-ce00-000000000000"),
               ("Office 365 SharePoint Online", "00000003-0000-0ff1-ce00-000000000000"),
               ("Microsoft Teams", "1fec8e78-bce4-4aaf-ab1b-5451cc387264"),
               ("Azure Portal", "c44b4083-3bb0-49c1-b47d-974e53cbdf3c"),
               ("Microsoft Intune", "0000000a-0000-0000-c000-000000000000")]
UNVERIFIED = ("displayName", "verifiedPublisherId", "addedDateTime")  # verifiedPublisher of an unverified app
VENDORS = ["Salesforce", "ServiceNow", "Slack Technologies", "Zoom Video Communications", "Atlassian",
           "Adobe Inc.", "Workday", "DocuSign", "GitHub", "Miro", "Zscaler", "Cisco Webex"]
OWN_APPS = ["HR Portal", "Expense Tracker", "Intranet", "Entra Assets Sync", "Build Agent", "Data Lake Reader",
            "Contract Archive", "Partner API", "Room Booking", "Ticket Bridge"]


def _group_kind(kind: str, nickname: str) -> dict:
    """Graph's flags for a group kind; ``mail`` only for mail-enabled groups."""
    unified = kind.startswith("unified")
    mail_enabled = unified or kind in ("distribution", "mail-security")
    return {"groupTypes": ["Unified", "DynamicMembership"] if kind == "unified-dynamic" else
            ["Unified"] if unified else [],
            "mailEnabled": mail_enabled, "securityEnabled": kind in ("security", "mail-security"),
            "mail": f"{nickname}@{DOMAIN}" if mail_enabled else None, "mailNickname": nickname}


def _generate_groups(tenant: Tenant, rng: random.Random, count: int, user_ids: list[str]) -> None:
    users, n = tenant.users, len(user_ids)
    links = [("user", uid) for uid in user_ids]   # shared tuples: a member entry costs one pointer
    by_department: dict[str, list[tuple[str, str]]] = {}
    for link in links:
        department = (users[link[1]].get("department") or "").strip().casefold()
        if department:
            by_department.setdefault(department, []).append(link)
    departments = sorted(by_department)
    canonical = {d.casefold(): d for d in DEPARTMENTS}
    ids = [guid(rng) for _ in range(count)]
    nicknames: set[str] = set()
    cache: dict[str, str] = {}
    large = (lambda: rng.randint(1000, 2500)) if n >= 4200 else (lambda: (n * 3) // 5)
    for index, gid in enumerate(ids):
        members: list[tuple[str, str]]
        if index in _SPECIAL_GROUPS:
            name, description, kind = _SPECIAL_GROUPS[index]
        else:
            topic = rng.choice(GROUP_TOPICS)
            department = rng.choice(departments) if departments and rng.random() < 0.5 else None
            name = f"{canonical.get(department, department.title())} {topic}" if department else \
                f"{topic} {rng.choice(OFFICES)['city']}"
            description = None if rng.random() < 0.15 else f"{name} ({'department' if department else 'site'})"
            kind = rng.choices(("unified", "security", "distribution", "mail-security"), (40, 45, 10, 5))[0]
        nickname = "".join(c for c in _slug(name, cache) if c.isalnum())[:40] or f"group{index}"
        if nickname in nicknames:
            nickname = f"{nickname}{index}"
        nicknames.add(nickname)
        group = {"displayName": name, "description": description, **_group_kind(kind, nickname)}
        if index == _ALL_STAFF:
            group.update(membershipRule=DYNAMIC_RULE, membershipRuleProcessingState="On")
            members = [link for link in links
                       if users[link[1]].get("accountEnabled") and users[link[1]].get("userType") == "Member"]
        elif index in _LARGE:
            members = rng.sample(links, min(n, large()))
        elif index == _EMPTY:
            members = []
        elif index == _DEVICE_GROUP:
            members = []   # filled with devices once they exist
        else:
            size = min(n, 5 + int(195 * rng.random() ** 2))
            pool = by_department.get(department, links) if index not in _SPECIAL_GROUPS and department else links
            members = rng.sample(pool, min(size, len(pool)))
        if index == _PARENT and count > _NESTED:
            members = [*members[:12], ("group", ids[_NESTED])]
        elif index == _CONTACT_GROUP:
            members = [*members[:8], *(("orgContact", guid(rng)) for _ in range(3 + rng.randint(0, 5)))]
        tenant.groups[gid] = {"id": gid, **{k: v for k, v in group.items() if v is not None}}
        tenant.orders["groups"].append(gid)
        tenant.members[gid] = members
        user_members = [m for t, m in members if t == "user"] or user_ids
        if index == _NO_OWNER or not user_ids:
            owners = []
        elif index == _THREE_OWNERS or index == _ALL_STAFF:
            owners = rng.sample(user_members, min(3 if index == _THREE_OWNERS else 2, len(user_members)))
        else:
            roll = rng.random()
            owners = [] if roll < 0.2 else rng.sample(user_members, min(len(user_members),
                                                                        1 if roll < 0.7 else rng.randint(2, 3)))
        tenant.group_owners[gid] = owners


def _generate_devices(tenant: Tenant, rng: random.Random, count: int, user_ids: list[str]) -> None:
    users = tenant.users
    weights = [p[1] for p in DEVICE_PLATFORMS]
    for index in range(count):
        did, device_id = guid(rng), guid(rng)
        system, _, trusts, models, versions = rng.choices(DEVICE_PLATFORMS, weights)[0] if index > 6 else \
            DEVICE_PLATFORMS[0 if index in (0, 2, 3, 6) else 2]
        owner = None if not user_ids or index == 0 or (index > 6 and rng.random() < 0.1) else \
            user_ids[1] if index == 4 else rng.choice(user_ids)
        manufacturer, model = rng.choice(models)
        if system == "Windows":
            name = f"{'LAPTOP' if rng.random() < 0.7 else 'DESKTOP'}-{''.join(rng.choices(_ALNUM, k=7))}"
        else:
            given = users[owner].get("givenName") if owner else None
            label = "MacBook" if system == "MacMDM" else model if system != "Android" else "Android phone"
            name = f"{given}'s {label}" if given else f"{label} {''.join(rng.choices(_ALNUM, k=4))}"
        managed = system in ("Windows", "MacMDM") or rng.random() < 0.5
        seconds = LAST_SIGN_IN_BASE - (rng.randint(400, 900) * 86400 if index == 3 or rng.random() < 0.04
                                       else rng.randint(0, 60 * 86400))
        device = {"deviceId": device_id, "displayName": name, "operatingSystem": system,
                  "operatingSystemVersion": rng.choice(versions),
                  "trustType": "ServerAd" if index == 6 else trusts[0] if index < 7 else rng.choice(trusts),
                  "isCompliant": None if index == 1 else (rng.random() < 0.9) if managed else None,
                  "isManaged": managed and index != 1, "accountEnabled": index != 2 and rng.random() >= 0.03,
                  "approximateLastSignInDateTime": None if index == 5 else
                  time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(seconds)),
                  "manufacturer": manufacturer, "model": model}
        tenant.devices[did] = {"id": did, **{k: v for k, v in device.items() if v is not None}}
        tenant.orders["devices"].append(did)
        tenant.device_owners[did] = [owner] if owner else []


def _verified_publishers(rng: random.Random) -> dict[str, dict]:
    """Every other vendor's publisher is verified (a Microsoft Partner Network id, the date it was added)."""
    return {vendor: {"displayName": vendor, "verifiedPublisherId": str(rng.randint(1_000_000, 6_999_999)),
                     "addedDateTime": f"20{rng.randint(20, 25)}-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}"
                                      f"T{rng.randint(0, 23):02d}:{rng.randint(0, 59):02d}:00Z"}
            for vendor in VENDORS[::2]}


def _generate_service_principals(tenant: Tenant, rng: random.Random, count: int, user_ids: list[str],
                                 verified: dict[str, dict]) -> None:
    """Service principals as v1.0 lists them: ``verifiedPublisher`` is set for verified third-party publishers and
    all null otherwise - Microsoft's own apps (UNCONFIRMED: they show no verified publisher), the tenant's own
    apps, managed identities; ``appOwnerOrganizationId`` is the tenant the app is registered in (none for
    managed identities and legacy principals). ``publisherName`` is beta-only and not given."""
    vendor_tenants = {v: guid(rng) for v in VENDORS}
    first_party = iter(FIRST_PARTY)
    fixed = ["microsoft", "own", "managed", "vendor", "legacy"]
    for index in range(count):
        sid = guid(rng)
        kind = fixed[index] if index < len(fixed) else \
            rng.choices(("microsoft", "vendor", "own", "managed"), (25, 40, 22, 13))[0]
        party = next(first_party, None) if kind == "microsoft" else None
        if kind == "microsoft" and party is None:
            kind = "vendor"
        owners: list[str] = []
        if kind == "microsoft":
            sp = {"displayName": party[0], "appId": party[1], "servicePrincipalType": "Application",
                  "appOwnerOrganizationId": MICROSOFT_TENANT}
        elif kind == "vendor":
            vendor = rng.choice(VENDORS)
            sp = {"displayName": f"{vendor.split()[0]} {rng.choice(('SSO', 'Connector', 'Provisioning', ''))}"
                  .strip(), "appId": guid(rng), "verifiedPublisher": verified.get(vendor),
                  "servicePrincipalType": "Application", "appOwnerOrganizationId": vendor_tenants[vendor]}
        elif kind == "managed":
            sp = {"displayName": f"func-{rng.choice(('sync', 'billing', 'reports', 'etl'))}-"
                                 f"{rng.choice(('prod', 'test', 'dev'))}-{index}",
                  "appId": guid(rng), "servicePrincipalType": "ManagedIdentity"}
        elif kind == "legacy":
            sp = {"displayName": "Legacy Intranet Connector", "appId": guid(rng),
                  "servicePrincipalType": "Legacy"}
        else:
            sp = {"displayName": rng.choice(OWN_APPS) + ("" if index < 30 else f" {index}"),
                  "appId": guid(rng), "servicePrincipalType": "Application",
                  "appOwnerOrganizationId": tenant.tenant_id}
            if user_ids and (index == 1 or rng.random() < 0.6):
                owners = rng.sample(user_ids, 2 if index == 1 else rng.randint(1, 2))
        sp["accountEnabled"] = index != 3 and rng.random() >= 0.05
        sp["verifiedPublisher"] = sp.get("verifiedPublisher") or dict.fromkeys(UNVERIFIED)
        tenant.service_principals[sid] = {"id": sid, **{k: v for k, v in sp.items() if v is not None}}
        tenant.orders["servicePrincipals"].append(sid)
        tenant.sp_owners[sid] = owners


def generate_tenant(users: int = 2000, seed: int = 1, groups: int | None = None, devices: int | None = None,
                    applications: int | None = None) -> Tenant:
    """A tenant of ``users`` users, identical for identical arguments. User 0 is the CEO. None sizes scale with
    the users: groups ≈ users/20 (at least 10), devices ≈ 0.8 × users, service principals ≈ users/50 (at
    least 5)."""
    rng = random.Random(seed)
    tenant = Tenant(guid(rng), seed)
    ids = [guid(rng) for _ in range(users)]
    seen: set[str] = set()
    cache: dict[str, str] = {}
    for index, uid in enumerate(ids):
        user = _user(rng, index, seen, cache)
        manager = _manager_index(rng, index, user)
        # A guest may have been picked as manager's index range; walk up to the nearest member.
        while manager is not None and tenant.users[ids[manager]]["userType"] == "Guest":
            manager = manager - 1 if manager else None
        # Version 0: stored without a change-log entry (add_user would log a creation).
        tenant._insert(uid, user, ids[manager] if manager is not None else None)
    groups = max(10, users // 20) if groups is None else groups
    devices = int(users * 0.8) if devices is None else devices
    applications = max(5, users // 50) if applications is None else applications
    _generate_groups(tenant, random.Random(f"groups-{seed}"), groups, ids)
    _generate_devices(tenant, random.Random(f"devices-{seed}"), devices, ids)
    # The verified publishers come from a stream of their own: the rest of the tenant is as it was before them.
    _generate_service_principals(tenant, random.Random(f"apps-{seed}"), applications, ids,
                                 _verified_publishers(random.Random(f"publishers-{seed}")))
    app_rng = random.Random(f"app-registration-{seed}")  # the sync app's own registration (no credential yet)
    oid = guid(app_rng)
    tenant.applications[oid] = {"id": oid, "appId": guid(app_rng), "displayName": "Entra Assets sync",
                                "passwordCredentials": [], "keyCredentials": []}
    device_group = tenant.orders["groups"][_DEVICE_GROUP] if groups > _DEVICE_GROUP else None
    if device_group:
        windows = [d for d in tenant.orders["devices"][:400] if tenant.devices[d]["operatingSystem"] == "Windows"]
        tenant.members[device_group] = [("device", d) for d in windows[:25]]
    return tenant
