"""Generated devices and service principals of a seeded tenant, as pure functions of (seed, index).

Devices: Windows (60 %), macOS, iOS, Android and Linux; without an owner (device 0 and about 10 %), never
signed in (5), stale (3 and about 4 %), disabled (2), of unknown compliance (1), hybrid-joined (6). The owner
of device ``d`` is user ``(a + d·b) mod users`` (b coprime to the number of users), so the devices of a user
are found by inverting it (``owned_by``).

Service principals as v1.0 lists them: ``verifiedPublisher`` is set for verified third-party publishers and
all null otherwise - Microsoft's own apps (UNCONFIRMED: they show no verified publisher), the tenant's own
apps, managed identities; ``appOwnerOrganizationId`` is the tenant the app is registered in (none for managed
identities and legacy principals). ``publisherName`` is beta-only and not given. Microsoft's apps sit at
fixed positions (0 and 5-9), the other kinds are drawn; the tenant's own apps have 0-2 owners.
"""
from __future__ import annotations

import calendar
import math
import random
import time

from sandbox.tenant.seeded import Collection, Draws, Seeded
from sandbox.tenant.users import Users

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
_PLATFORM_WEIGHTS = [p[1] for p in DEVICE_PLATFORMS]
LAST_SIGN_IN_BASE = calendar.timegm((2026, 11, 20, 8, 15, 0))
_ALNUM = "ABCDEFGHJKLMNPQRSTUVWXYZ0123456789"
_DEVICE_GROUP_SCAN, _DEVICE_GROUP_SIZE = 400, 25  # the device group holds the first Windows devices
MICROSOFT_TENANT = "f8cdef31-a31e-4b4a-93e4-5f571e91255a"  # appOwnerOrganizationId of Microsoft's own apps
FIRST_PARTY = [("Microsoft Graph", "00000003-0000-0000-c000-000000000000"),
               ("Office 365 Exchange Online", "00000002-0000-0ff1-ce00-000000000000"),
               ("Office 365 SharePoint Online", "00000003-0000-0ff1-ce00-000000000000"),
               ("Microsoft Teams", "1fec8e78-bce4-4aaf-ab1b-5451cc387264"),
               ("Azure Portal", "c44b4083-3bb0-49c1-b47d-974e53cbdf3c"),
               ("Microsoft Intune", "0000000a-0000-0000-c000-000000000000")]
# Where Microsoft's apps sit: FIRST_PARTY[k] is service principal _FIRST_PARTY_AT[k].
_FIRST_PARTY_AT = {0: 0, **{5 + k: 1 + k for k in range(len(FIRST_PARTY) - 1)}}
_FIXED_KINDS = ["microsoft", "own", "managed", "vendor", "legacy"]
UNVERIFIED = ("displayName", "verifiedPublisherId", "addedDateTime")  # verifiedPublisher of an unverified app
VENDORS = ["Salesforce", "ServiceNow", "Slack Technologies", "Zoom Video Communications", "Atlassian",
           "Adobe Inc.", "Workday", "DocuSign", "GitHub", "Miro", "Zscaler", "Cisco Webex"]
OWN_APPS = ["HR Portal", "Expense Tracker", "Intranet", "Entra Assets Sync", "Build Agent", "Data Lake Reader",
            "Contract Archive", "Partner API", "Room Booking", "Ticket Bridge"]


class Devices(Collection):
    """The ``count`` generated devices of a seed and their registered owners."""

    KIND = "devices"

    def __init__(self, seeded: Seeded, count: int, users: Users):
        super().__init__(seeded, count)
        self.users = users
        n = users.count
        self._offset = seeded.below("device-owner-offset", 0, n) if n else 0
        step = 1 + seeded.below("device-owner-step", 0, n - 1) if n > 1 else 1
        while n > 1 and math.gcd(step, n) != 1:
            step = step % (n - 1) + 1
        self._step, self._inverse = step, pow(step, -1, n) if n > 1 else 1
        self._windows: list[str] | None = None

    def owner(self, index: int) -> int | None:
        """The index of the registered owner of device ``index`` (None: no owner)."""
        n = self.users.count
        if not n or index == 0 or (index > 6 and self.seeded.unit("device-unowned", index) < 0.1):
            return None
        if index == 4:
            return min(1, n - 1)
        return (self._offset + index * self._step) % n

    def owners(self, index: int) -> list[str]:
        owner = self.owner(index)
        return [] if owner is None else [self.users.id(owner)]

    def owned_by(self, user: int, below: int | None = None) -> list[int]:
        """The devices whose generated owner is user ``user``: d ≡ (user - a)·b⁻¹ (mod users), plus device 4.
        ``below``: the indices to search instead of ``count`` (``owner`` is defined for any index: Intune's
        managed devices beyond the Entra devices reuse it, sandbox/tenant/intune.py)."""
        n, end = self.users.count, self.count if below is None else below
        if not n:
            return []
        first = ((user - self._offset) * self._inverse) % n if n > 1 else 0
        found = [d for d in range(first, end, n) if self.owner(d) == user]
        if end > 4 and self.owner(4) == user and 4 not in found:
            found.append(4)
        return sorted(found)

    def _platform(self, index: int, rng: Draws) -> tuple:
        if index > 6:
            return rng.choices(DEVICE_PLATFORMS, _PLATFORM_WEIGHTS)[0]
        return DEVICE_PLATFORMS[0 if index in (0, 2, 3, 6) else 2]

    def operating_system(self, index: int) -> str:
        return self._platform(index, self.seeded.rng("device", index))[0]

    def build(self, index: int) -> dict:
        """The Graph properties of device ``index``, with ``id``; unset ones are absent."""
        rng = self.seeded.rng("device", index)
        system, _, trusts, models, versions = self._platform(index, rng)
        owner = self.owner(index)
        manufacturer, model = rng.choice(models)
        if system == "Windows":
            name = f"{'LAPTOP' if rng.random() < 0.7 else 'DESKTOP'}-{''.join(rng.choices(_ALNUM, k=7))}"
        else:
            given = self.users.names(owner)[0] if owner is not None else None
            label = "MacBook" if system == "MacMDM" else model if system != "Android" else "Android phone"
            name = f"{given}'s {label}" if given else f"{label} {''.join(rng.choices(_ALNUM, k=4))}"
        managed = system in ("Windows", "MacMDM") or rng.random() < 0.5
        seconds = LAST_SIGN_IN_BASE - (rng.randint(400, 900) * 86400 if index == 3 or rng.random() < 0.04
                                       else rng.randint(0, 60 * 86400))
        device = {"id": self.id(index), "deviceId": self.seeded.guid("deviceId", index), "displayName": name,
                  "operatingSystem": system, "operatingSystemVersion": rng.choice(versions),
                  "trustType": "ServerAd" if index == 6 else trusts[0] if index < 7 else rng.choice(trusts),
                  "isCompliant": None if index == 1 else (rng.random() < 0.9) if managed else None,
                  "isManaged": managed and index != 1, "accountEnabled": index != 2 and rng.random() >= 0.03,
                  "approximateLastSignInDateTime": None if index == 5 else
                  time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(seconds)),
                  "manufacturer": manufacturer, "model": model}
        return {k: v for k, v in device.items() if v is not None}

    def windows(self) -> list[str]:
        """The device group's members: the first 25 Windows devices among the first 400 (computed once)."""
        if self._windows is None:
            found = (d for d in range(min(self.count, _DEVICE_GROUP_SCAN)) if self.operating_system(d) == "Windows")
            self._windows = [self.id(d) for d, _ in zip(found, range(_DEVICE_GROUP_SIZE))]
        return self._windows


class ServicePrincipals(Collection):
    """The ``count`` generated service principals of a seed and their owners."""

    KIND = "servicePrincipals"

    def __init__(self, seeded: Seeded, count: int, users: Users, tenant_id: str, seed: object):
        super().__init__(seeded, count)
        self.users, self.tenant_id = users, tenant_id
        self._vendor_tenants = {v: seeded.guid("vendor-tenants", k) for k, v in enumerate(VENDORS)}
        self._verified = _verified_publishers(random.Random(f"publishers-{seed}"))

    def kind(self, index: int) -> str:
        if index in _FIRST_PARTY_AT:
            return "microsoft"
        if index < len(_FIXED_KINDS):
            return _FIXED_KINDS[index]
        roll = self.seeded.below("sp-kind", index, 75)  # vendor 40, own 22, managed 13
        return "vendor" if roll < 40 else "own" if roll < 62 else "managed"

    def owner_indices(self, index: int) -> list[int]:
        """The owners (user indices) of service principal ``index``: only the tenant's own apps have some."""
        n = self.users.count
        if self.kind(index) != "own" or not n or (index != 1 and self.seeded.unit("sp-owned", index) >= 0.6):
            return []
        first = self.seeded.below("sp-owner", index, n)
        if n == 1 or (index != 1 and self.seeded.unit("sp-owner-count", index) < 0.5):
            return [first]
        return [first, (first + 1 + self.seeded.below("sp-co-owner", index, n - 1)) % n]

    def owners(self, index: int) -> list[str]:
        return [self.users.id(u) for u in self.owner_indices(index)]

    def owned_by(self, user: int) -> list[int]:
        """The service principals whose generated owners include user ``user`` (a scan: they are few)."""
        return [s for s in range(self.count) if user in self.owner_indices(s)]

    def build(self, index: int) -> dict:
        """The Graph properties of service principal ``index``, with ``id``; unset ones are absent."""
        rng, kind = self.seeded.rng("servicePrincipal", index), self.kind(index)
        app_id = self.seeded.guid("appId", index)
        if kind == "microsoft":
            name, app_id = FIRST_PARTY[_FIRST_PARTY_AT[index]]
            sp = {"displayName": name, "servicePrincipalType": "Application",
                  "appOwnerOrganizationId": MICROSOFT_TENANT}
        elif kind == "vendor":
            vendor = VENDORS[0] if index == 3 else rng.choice(VENDORS)  # the fixed one is verified
            sp = {"displayName": f"{vendor.split()[0]} {rng.choice(('SSO', 'Connector', 'Provisioning', ''))}"
                  .strip(), "verifiedPublisher": self._verified.get(vendor),
                  "servicePrincipalType": "Application", "appOwnerOrganizationId": self._vendor_tenants[vendor]}
        elif kind == "managed":
            sp = {"displayName": f"func-{rng.choice(('sync', 'billing', 'reports', 'etl'))}-"
                                 f"{rng.choice(('prod', 'test', 'dev'))}-{index}",
                  "servicePrincipalType": "ManagedIdentity"}
        elif kind == "legacy":
            sp = {"displayName": "Legacy Intranet Connector", "servicePrincipalType": "Legacy"}
        else:
            sp = {"displayName": rng.choice(OWN_APPS) + ("" if index < 30 else f" {index}"),
                  "servicePrincipalType": "Application", "appOwnerOrganizationId": self.tenant_id}
        sp["accountEnabled"] = index != 3 and rng.random() >= 0.05
        sp["verifiedPublisher"] = sp.get("verifiedPublisher") or dict.fromkeys(UNVERIFIED)
        return {"id": self.id(index), "appId": app_id, **{k: v for k, v in sp.items() if v is not None}}


def _verified_publishers(rng: random.Random) -> dict[str, dict]:
    """Every other vendor's publisher is verified (a Microsoft Partner Network id, the date it was added)."""
    return {vendor: {"displayName": vendor, "verifiedPublisherId": str(rng.randint(1_000_000, 6_999_999)),
                     "addedDateTime": f"20{rng.randint(20, 25)}-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}"
                                      f"T{rng.randint(0, 23):02d}:{rng.randint(0, 59):02d}:00Z"}
            for vendor in VENDORS[::2]}
