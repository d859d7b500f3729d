"""The tenant's licences: the SKUs it subscribes to (``GET /subscribedSkus``) and which users hold them
(``assignedLicenses``), as pure functions of the user's index - no draw, so every other generated value of a
user stays what it was before licences existed.

Members hold Office 365 E3 unless their index ends in 9, every fourth one Power BI Pro too, every
twentieth Microsoft 365 E5 instead of E3; guests hold none. "Flow Free" is subscribed and assigned to nobody.
The SKU ids and part numbers are Microsoft's published ones
(https://learn.microsoft.com/entra/identity/users/licensing-service-plan-reference).
"""
from __future__ import annotations

from collections.abc import Callable

E3 = "6fd2c87f-b296-42f0-b197-1e91e994b900"       # ENTERPRISEPACK
E5 = "06ebc4ee-1bb5-47dd-8120-11324bc54e06"       # SPE_E5
POWER_BI = "f8a1db68-be16-40ed-86d5-cb42ce701560"  # POWER_BI_PRO
FLOW_FREE = "f30db892-07e9-47e9-837c-80727f46fd3d"  # FLOW_FREE
_PARTS = {E3: "ENTERPRISEPACK", E5: "SPE_E5", POWER_BI: "POWER_BI_PRO", FLOW_FREE: "FLOW_FREE"}


def assigned(index: int, guest: bool) -> list[dict]:
    """``assignedLicenses`` of generated user ``index`` (``[]`` for a guest)."""
    if guest:
        return []
    skus = [] if index % 10 == 9 else [E5 if index % 20 == 0 else E3]
    if index % 4 == 0:
        skus.append(POWER_BI)
    return [{"disabledPlans": [], "skuId": sku} for sku in skus]


def subscribed(tenant_id: str, users: int, is_guest: Callable[[int], bool]) -> list[dict]:
    """The ``subscribedSku`` objects of a tenant of ``users`` generated users. ``consumedUnits`` counts the
    generated assignments (not later changes: an emulator simplification; left 0 above 200,000 users, where
    counting would slow the sandbox's start)."""
    counts = dict.fromkeys(_PARTS, 0)
    for index in range(users) if users <= 200_000 else ():
        for licence in assigned(index, is_guest(index)):
            counts[licence["skuId"]] += 1
    return [{"id": f"{tenant_id}_{sku}", "skuId": sku, "skuPartNumber": part, "capabilityStatus": "Enabled",
             "appliesTo": "User", "consumedUnits": counts[sku],
             "prepaidUnits": {"enabled": max(25, counts[sku] + 50), "suspended": 0, "warning": 0, "lockedOut": 0},
             "servicePlans": [], "accountId": tenant_id, "accountName": "Contoso", "subscriptionIds": []}
            for sku, part in _PARTS.items()]
