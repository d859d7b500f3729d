"""Generated Intune managed devices (Graph v1.0 ``managedDevice``), as pure functions of (seed, index).

Managed device ``i`` is the Intune record of Entra device ``i`` while ``i`` is below the number of Entra devices
(``sandbox/tenant/fleet.py``): ``azureADDeviceId`` is that device's ``deviceId`` (its registration id, not its
object id), ``deviceName`` its ``displayName``, ``operatingSystem`` its platform as Intune names it (MacMDM ->
macOS), manufacturer, model and ``osVersion`` its own. The primary user (``userId``, ``userPrincipalName``,
``emailAddress``, ``userDisplayName``) is the Entra device's registered owner, or "" for a device without one
(Intune gives empty strings there; UNCONFIRMED for every field but ``userId``). Managed devices beyond the Entra
devices were never registered in Entra under a known id: they carry a ``deviceId`` no Entra device has and
a primary user by the devices' own owner formula (``Devices.owner``, defined for any index).

Fixed odd cases (indices), so a 300-user tenant has each: ``NO_PRIMARY_USER`` (Entra device 0 has no owner),
``ENTRA_DEVICE_MISSING`` (``azureADDeviceId`` a GUID no Entra device has), ``NEVER_REGISTERED``
(``azureADDeviceId`` all zeros, ``azureADRegistered`` false: enrolled by a device enrollment manager),
``RETIRE_PENDING`` (``managementState`` retirePending), ``PERSONAL`` (``managedDeviceOwnerType`` personal),
``NONCOMPLIANT`` and ``IN_GRACE_PERIOD``. Drawn ones: compliance follows the Entra device's ``isCompliant``
(unknown where Entra has none; a quarter of the noncompliant ones still in their grace period), 2 % are
retirePending, a quarter of the phones and 3 % of the computers are personal, and a personal Android (work
profile) reports neither a serial number nor its storage (0). The Entra device's ``isCompliant`` is not kept
in step with the fixed cases: Entra and Intune are separate services here, as they lag each other in reality.

Values are v1.0 enum members (msgraph-sdk's models); ``complianceGracePeriodExpirationDateTime`` is
9999-12-31T23:59:59Z for a device not in its grace period, as Intune reports it (UNCONFIRMED beyond observed
answers). Intune has no delta and no change notifications for managedDevice: the tenant keeps managed devices
outside its change log (sandbox/tenant/model.py).
"""
from __future__ import annotations

import calendar
import time

from sandbox.tenant.fleet import DEVICE_PLATFORMS, LAST_SIGN_IN_BASE, Devices
from sandbox.tenant.seeded import Collection, Draws, Seeded
from sandbox.tenant.users import Users

NOT_REGISTERED = "00000000-0000-0000-0000-000000000000"  # azureADDeviceId of a device never registered in Entra
NO_PRIMARY_USER, ENTRA_DEVICE_MISSING, NEVER_REGISTERED, RETIRE_PENDING, PERSONAL, NONCOMPLIANT, \
    IN_GRACE_PERIOD = range(7)
NOT_IN_GRACE = "9999-12-31T23:59:59Z"
_SYSTEMS = {"Windows": "Windows", "MacMDM": "macOS", "iOS": "iOS", "Android": "Android", "Linux": "Linux"}
_STORAGE_GIB = {"Windows": (256, 512, 1024), "macOS": (256, 512, 1024), "iOS": (128, 256), "Android": (128, 256),
                "Linux": (256, 512)}
# (prefix, random characters) of serial numbers per manufacturer (the formats vendors use, roughly)
_SERIALS = {"Dell Inc.": ("", 7), "LENOVO": ("PF", 6), "HP": ("5CG", 7), "Apple": ("", 10), "samsung": ("R5C", 8),
            "Google": ("", 12), None: ("", 8)}
_PLATFORM_WEIGHTS = [p[1] for p in DEVICE_PLATFORMS]
_ALNUM = "ABCDEFGHJKLMNPQRSTUVWXYZ0123456789"
_DAY = 86400


def _iso(seconds: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(seconds))


def _seconds(iso: str) -> int:
    return calendar.timegm(time.strptime(iso, "%Y-%m-%dT%H:%M:%SZ"))


class ManagedDevices(Collection):
    """The ``count`` generated managed devices of a seed, linked to the Entra ``devices`` and their owners."""

    KIND = "managedDevices"

    def __init__(self, seeded: Seeded, count: int, devices: Devices, users: Users):
        super().__init__(seeded, count)
        self.devices, self.users = devices, users

    def primary_user(self, index: int) -> int | None:
        """The index of the generated primary user of managed device ``index`` (None: it has none)."""
        return self.devices.owner(index)

    def with_user(self, user: int) -> list[int]:
        """The managed devices whose generated primary user is user ``user`` (the devices' inverse formula)."""
        return [m for m in self.devices.owned_by(user, below=self.count) if m < self.count]

    def build(self, index: int) -> dict:
        """The Graph properties of managed device ``index``, with ``id``; unset ones are absent."""
        rng = self.seeded.rng("managedDevice", index)
        linked = index < self.devices.count
        entra = self.devices.build(index) if linked else self._unregistered(index, rng)
        system = _SYSTEMS[entra["operatingSystem"]]
        owner = self.primary_user(index)
        user = self.users.build(owner) if owner is not None else {}
        phone = system in ("iOS", "Android")
        personal = index == PERSONAL or (index >= 7 and rng.random() < (0.25 if phone else 0.03))
        last_sync = self._last_sync(index, entra, rng)
        enrolled = last_sync - rng.randint(30 * _DAY, 900 * _DAY)
        compliance = self._compliance(index, entra if linked and index != ENTRA_DEVICE_MISSING else None, rng)
        total, free = self._storage(system, rng)
        no_storage = personal and system == "Android"  # a work profile sees neither
        upn = user.get("userPrincipalName", "")
        stamp = time.gmtime(enrolled)
        hour = stamp.tm_hour % 12 or 12
        device = {
            "id": self.id(index), "deviceName": entra["displayName"],
            "managedDeviceName": f"{upn.split('@')[0] or entra['displayName']}_{system}_{stamp.tm_mon}/"
                                 f"{stamp.tm_mday}/{stamp.tm_year}_{hour}:{stamp.tm_min:02d} "
                                 f"{'AM' if stamp.tm_hour < 12 else 'PM'}",
            "serialNumber": "" if no_storage else self._serial(entra.get("manufacturer"), rng),
            "manufacturer": entra.get("manufacturer"), "model": entra.get("model"), "operatingSystem": system,
            "osVersion": entra["operatingSystemVersion"], "complianceState": compliance,
            "complianceGracePeriodExpirationDateTime":
                _iso(LAST_SIGN_IN_BASE + rng.randint(1, 6) * _DAY) if compliance == "inGracePeriod" else NOT_IN_GRACE,
            "managementState": "retirePending" if index == RETIRE_PENDING or (index >= 7 and rng.random() < 0.02)
            else "managed",
            "managedDeviceOwnerType": "personal" if personal else "company",
            "enrolledDateTime": _iso(enrolled), "lastSyncDateTime": _iso(last_sync),
            "totalStorageSpaceInBytes": 0 if no_storage else total, "freeStorageSpaceInBytes": 0 if no_storage else free,
            "userId": user.get("id", ""), "userPrincipalName": upn, "emailAddress": user.get("mail", ""),
            "userDisplayName": user.get("displayName", "") if owner is not None else "",
            "azureADDeviceId": NOT_REGISTERED if index == NEVER_REGISTERED else
            self.seeded.guid("managedDevice-foreign-deviceId", index) if index == ENTRA_DEVICE_MISSING else
            entra["deviceId"],
            "azureADRegistered": index != NEVER_REGISTERED,
            "deviceRegistrationState": "notRegistered" if index == NEVER_REGISTERED else "registered",
            "deviceEnrollmentType": self._enrollment(index, system, entra.get("trustType"), personal),
            "managementAgent": "configurationManagerClientMdm" if entra.get("trustType") == "ServerAd" else "mdm",
            "isEncrypted": system in ("iOS", "macOS") or rng.random() < 0.9,
            "isSupervised": system == "iOS" and not personal,
            "jailBroken": "Unknown" if system == "Windows" else "False"}
        return {k: v for k, v in device.items() if v is not None}

    # -- parts ------------------------------------------------------------------------------------------------

    def _unregistered(self, index: int, rng: Draws) -> dict:
        """What a managed device beyond the Entra devices looks like where Entra would say it (a fresh id)."""
        system, _, _, models, versions = rng.choices(DEVICE_PLATFORMS, _PLATFORM_WEIGHTS)[0]
        manufacturer, model = rng.choice(models)
        name = f"DESKTOP-{''.join(rng.choices(_ALNUM, k=7))}" if system == "Windows" else \
            f"{model or 'Device'} {''.join(rng.choices(_ALNUM, k=4))}"
        return {"deviceId": self.seeded.guid("managedDevice-foreign-deviceId", index), "displayName": name,
                "operatingSystem": system, "operatingSystemVersion": rng.choice(versions),
                "manufacturer": manufacturer, "model": model}

    @staticmethod
    def _last_sync(index: int, entra: dict, rng: Draws) -> int:
        """Near the Entra device's last sign-in (a device syncs when it is used), else within 20 days."""
        seen = entra.get("approximateLastSignInDateTime")
        base = _seconds(seen) if seen else LAST_SIGN_IN_BASE - rng.randint(0, 20 * _DAY)
        if index == RETIRE_PENDING:
            base = min(base, LAST_SIGN_IN_BASE - 200 * _DAY)
        return min(LAST_SIGN_IN_BASE, base + rng.randint(-6 * 3600, 6 * 3600))

    @staticmethod
    def _compliance(index: int, entra: dict | None, rng: Draws) -> str:
        if index == NONCOMPLIANT:
            return "noncompliant"
        if index == IN_GRACE_PERIOD:
            return "inGracePeriod"
        if index == NEVER_REGISTERED:
            return "unknown"
        compliant = entra.get("isCompliant") if entra is not None else rng.random() < 0.9
        if compliant is None:
            return "unknown"
        if compliant:
            return "compliant"
        return "inGracePeriod" if rng.random() < 0.25 else "noncompliant"

    @staticmethod
    def _storage(system: str, rng: Draws) -> tuple[int, int]:
        """(total, free) bytes: a nominal size less what formatting takes, some of it free."""
        total = rng.choice(_STORAGE_GIB[system]) * (1 << 30) - rng.randint(1 << 30, 6 << 30)
        return total, int(total * (0.05 + 0.75 * rng.random()))

    @staticmethod
    def _serial(manufacturer: str | None, rng: Draws) -> str:
        if manufacturer == "Microsoft Corporation":
            return "".join(rng.choices("0123456789", k=12))
        prefix, length = _SERIALS.get(manufacturer, ("", 8))
        return prefix + "".join(rng.choices(_ALNUM, k=length))

    @staticmethod
    def _enrollment(index: int, system: str, trust: str | None, personal: bool) -> str:
        """v1.0 ``deviceEnrollmentType``: how the device came into Intune."""
        if index == NEVER_REGISTERED:
            return "deviceEnrollmentManager"
        if system == "Windows":
            return "windowsCoManagement" if trust == "ServerAd" else \
                "windowsAutoEnrollment" if personal else "windowsAzureADJoin"
        if system in ("iOS", "macOS"):
            return "userEnrollment" if personal else "appleBulkWithUser"
        return "userEnrollment"
