"""Intune managed devices: the generated ones (sandbox/tenant/intune.py), the tenant's methods, and
``GET /v1.0/deviceManagement/managedDevices`` of the Graph emulator over real HTTP (sandbox/graph/intune.py):
paging, ``$select``/``$top``, the refused options, Intune's permission and its odd 403, a tenant without Intune."""
from __future__ import annotations

import json
import re
import time

import httpx
import pytest

from sandbox.graph.directory import structural
from sandbox.graph.emulator import NO_PERMISSIONS_TOKEN, GraphEmulator
from sandbox.graph.intune import PAGE_SIZE
from sandbox.identity.emulator import SYNC_APP_ROLES
from sandbox.tenant import intune
from sandbox.tenant.generator import generate_tenant
from tests.fixtures_graph import app_token, identity  # noqa: F401 - the fixture, by name

AUTH = {"Authorization": "Bearer sandbox-graph-token"}
GUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")
ISO = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z$")
PATH = "deviceManagement/managedDevices"
INTUNE_ROLES = ("DeviceManagementManagedDevices.Read.All", "DeviceManagementManagedDevices.ReadWrite.All")


@pytest.fixture
def http():
    with httpx.Client(headers=AUTH, timeout=30) as client:
        yield client


def read_all(http: httpx.Client, url: str, params: dict | None = None) -> tuple[list[dict], list[dict]]:
    """(devices, page bodies) of a paged read, following nextLinks."""
    devices, pages = [], []
    while url:
        response = http.get(url, params=params)
        assert response.status_code == 200, response.text
        pages.append(response.json())
        devices += pages[-1]["value"]
        url, params = pages[-1].get("@odata.nextLink"), None
        assert url is None or "$skiptoken=" in url
    return devices, pages


def error_of(response: httpx.Response, status: int) -> dict:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error.pop("innerError")) >= {"date", "request-id", "client-request-id"}
    return error


# -- the generated devices ----------------------------------------------------------------------------------

def test_managed_devices_name_real_entra_devices_and_users_but_the_odd_cases(tenant):
    devices = list(tenant.managed_devices.values())
    entra = list(tenant.devices.values())
    assert len(devices) == len(entra) == 240  # one per Entra device by default
    device_ids = {d["deviceId"] for d in entra}
    odd = {intune.ENTRA_DEVICE_MISSING, intune.NEVER_REGISTERED}
    for i, device in enumerate(devices):
        assert GUID.match(device["id"]) and set(device) <= set(structural("managedDevice"))
        assert ISO.match(device["enrolledDateTime"]) and ISO.match(device["lastSyncDateTime"])
        assert device["enrolledDateTime"] < device["lastSyncDateTime"]
        assert isinstance(device["totalStorageSpaceInBytes"], int) and \
            0 <= device["freeStorageSpaceInBytes"] <= device["totalStorageSpaceInBytes"]
        assert device["userId"] == "" or device["userId"] in tenant.users
        if i not in odd:  # Entra device i, by its registration id (not its object id)
            assert device["azureADDeviceId"] == entra[i]["deviceId"] != entra[i]["id"]
            assert device["deviceName"] == entra[i]["displayName"]
            assert device["userId"] == next(iter(tenant.device_owners[entra[i]["id"]]), "")
            expected = {"MacMDM": "macOS"}.get(entra[i]["operatingSystem"], entra[i]["operatingSystem"])
            assert device["operatingSystem"] == expected
    missing = devices[intune.ENTRA_DEVICE_MISSING]["azureADDeviceId"]
    assert GUID.match(missing) and missing not in device_ids
    never = devices[intune.NEVER_REGISTERED]
    assert never["azureADDeviceId"] == intune.NOT_REGISTERED and never["azureADRegistered"] is False
    assert devices[intune.NO_PRIMARY_USER]["userId"] == devices[intune.NO_PRIMARY_USER]["userPrincipalName"] == ""
    assert devices[intune.PERSONAL]["managedDeviceOwnerType"] == "personal"
    assert devices[intune.NONCOMPLIANT]["complianceState"] == "noncompliant"
    grace = devices[intune.IN_GRACE_PERIOD]
    assert grace["complianceState"] == "inGracePeriod" and grace["complianceGracePeriodExpirationDateTime"] < "9999"
    assert devices[intune.RETIRE_PENDING]["managementState"] == "retirePending"
    # drawn ones vary too, with v1.0 enum members only
    assert {d["operatingSystem"] for d in devices} >= {"Windows", "macOS", "iOS", "Android"}
    assert {d["complianceState"] for d in devices} <= {"compliant", "noncompliant", "inGracePeriod", "unknown"}
    assert {d["managementState"] for d in devices} == {"managed", "retirePending"}
    assert sum(d["managedDeviceOwnerType"] == "personal" for d in devices[7:]) > 0
    assert sum(d["userId"] == "" for d in devices[7:]) > 0  # Entra devices without an owner


def test_sizes_are_lazy_and_follow_the_devices_unless_given():
    started = time.perf_counter()
    big = generate_tenant(1_000_000, seed=5)
    assert time.perf_counter() - started < 1.0  # nothing generated up front
    assert len(big.managed_devices) == 800_000
    last = big.managed_devices[big.managed_devices.order[-1]]
    assert last["azureADDeviceId"] == big.devices[big.orders["devices"][-1]]["deviceId"]
    assert len(generate_tenant(100_000, seed=5).managed_devices) == 80_000
    more = generate_tenant(50, seed=5, devices=10, managed_devices=30)
    entra_ids = {d["deviceId"] for d in more.devices.values()}
    beyond = list(more.managed_devices.values())[10:]
    assert len(beyond) == 20 and not {d["azureADDeviceId"] for d in beyond} & entra_ids
    assert all(d["userId"] == "" or d["userId"] in more.users for d in beyond)
    with pytest.raises(ValueError, match="managed_devices"):
        generate_tenant(10, managed_devices=-1)


# -- the tenant's methods -----------------------------------------------------------------------------------

def test_managed_device_changes_leave_the_change_log_and_delta_alone(graph_emulator, tenant, http):
    base = graph_emulator.base_url
    _, delta_link = _delta_link(http, f"{base}/devices/delta")
    version = tenant.version
    mid = tenant.add_managed_device({"deviceName": "KIOSK-01", "operatingSystem": "Windows", "userId": "",
                                     "serialNumber": None})
    first = next(iter(tenant.managed_devices))
    tenant.update_managed_device(first, complianceState="noncompliant", serialNumber=None)
    gone = list(tenant.managed_devices)[1]
    tenant.delete_managed_device(gone)
    assert tenant.version == version  # no log entries, so no delta round and no notification sees them
    assert http.get(delta_link).json()["value"] == []
    devices, _ = read_all(http, f"{base}/{PATH}")
    by_id = {d["id"]: d for d in devices}
    assert by_id[mid] == {"id": mid, "deviceName": "KIOSK-01", "operatingSystem": "Windows", "userId": ""}
    assert by_id[first]["complianceState"] == "noncompliant" and "serialNumber" not in by_id[first]
    assert gone not in by_id and devices[-1]["id"] == mid and len(devices) == 240
    with pytest.raises(KeyError):
        tenant.delete_managed_device(gone)
    with pytest.raises(KeyError):
        tenant.update_managed_device("no-such-device", deviceName="x")
    with pytest.raises(ValueError):
        tenant.update_managed_device(first, id="other")


def test_deleting_a_user_clears_the_primary_user_of_their_devices(tenant):
    held = [d for d in tenant.managed_devices.values() if d["userId"]]
    uid = held[0]["userId"]
    theirs = [d["id"] for d in tenant.managed_devices.values() if d["userId"] == uid]
    added = tenant.add_managed_device({"deviceName": "BYOD", "userId": uid, "userPrincipalName": "x@y"})
    other = next(d for d in held if d["userId"] != uid)
    tenant.delete_user(uid)
    for mid in [*theirs, added]:
        device = tenant.managed_devices[mid]  # the device stays enrolled, without its user
        assert device["userId"] == device["userPrincipalName"] == device["emailAddress"] == "", mid
    assert tenant.managed_devices[other["id"]]["userId"] == other["userId"]
    assert not [d for d in tenant.managed_devices.values() if d.get("userId") == uid]


def _delta_link(http: httpx.Client, url: str) -> tuple[list[dict], str]:
    objects = []
    while True:
        page = http.get(url).json()
        objects += page["value"]
        if "@odata.deltaLink" in page:
            return objects, page["@odata.deltaLink"]
        url = page["@odata.nextLink"]


# -- the list -----------------------------------------------------------------------------------------------

def test_pages_of_1000_by_default_and_every_device_once_in_order():
    emulator = GraphEmulator(generate_tenant(1500, seed=4)).start()
    try:
        with httpx.Client(headers=AUTH, timeout=30) as client:
            devices, pages = read_all(client, f"{emulator.base_url}/{PATH}")
        assert [len(p["value"]) for p in pages] == [PAGE_SIZE, 200]
        assert [d["id"] for d in devices] == list(emulator.tenant.managed_devices)
        assert devices == list(emulator.tenant.managed_devices.values())  # no $select: what each device has
        assert pages[0]["@odata.context"] == f"{emulator.base_url}/$metadata#{PATH}"
    finally:
        emulator.stop()


def test_top_and_select_page_through_skiptokens(graph_emulator, tenant, http):
    select = "deviceName,azureADDeviceId,userId,notes,deviceActionResults"
    devices, pages = read_all(http, f"{graph_emulator.base_url}/{PATH}", {"$select": select, "$top": "100"})
    assert [len(p["value"]) for p in pages] == [100, 100, 40]
    assert all("$select=deviceName,azureADDeviceId" in p["@odata.nextLink"] for p in pages[:-1])
    assert pages[0]["@odata.context"].endswith(f"#{PATH}(id,deviceName,azureADDeviceId,userId,notes,"
                                               "deviceActionResults)")
    assert [d["id"] for d in devices] == list(tenant.managed_devices)
    for device in devices:  # the selected ones (and id); unset ones null, an unset collection []
        stored = tenant.managed_devices[device["id"]]
        assert device == {"id": stored["id"], "deviceName": stored["deviceName"], "userId": stored["userId"],
                          "azureADDeviceId": stored["azureADDeviceId"], "notes": None, "deviceActionResults": []}
    assert len(http.get(f"{graph_emulator.base_url}/{PATH}", params={"$top": "1000"}).json()["value"]) == 240


@pytest.mark.parametrize("name", ["hardwareInformation", "displayName", "DeviceName"])
def test_select_of_a_name_v1_managed_device_lacks_is_graphs_400(graph_emulator, http, name):
    # hardwareInformation is beta-only; displayName is the Entra device's name, not Intune's
    response = http.get(f"{graph_emulator.base_url}/{PATH}", params={"$select": f"id,{name}"})
    assert error_of(response, 400) == {"code": "BadRequest", "message": f"Could not find a property named '{name}' "
                                                                        "on type 'microsoft.graph.managedDevice'."}


@pytest.mark.parametrize("top", ["0", "1001", "abc", "-5"])
def test_top_outside_1_to_1000_is_400(graph_emulator, http, top):
    response = http.get(f"{graph_emulator.base_url}/{PATH}", params={"$top": top})
    assert "Must be between 1 and 1000" in error_of(response, 400)["message"]


@pytest.mark.parametrize("option, value", [("$filter", "complianceState eq 'compliant'"), ("$expand", "users"),
                                           ("$orderby", "deviceName"), ("$count", "true"), ("$search", '"x"'),
                                           ("$skip", "10")])
def test_other_query_options_are_400(graph_emulator, http, option, value):
    response = http.get(f"{graph_emulator.base_url}/{PATH}", params={option: value})
    assert option in error_of(response, 400)["message"]


def test_a_foreign_or_tampered_skiptoken_is_400(graph_emulator, http):
    link = http.get(f"{graph_emulator.base_url}/{PATH}", params={"$top": "5"}).json()["@odata.nextLink"]
    assert http.get(link).status_code == 200
    assert error_of(http.get(link[:-3] + "AAA"), 400)["code"] == "BadRequest"
    users_link = http.get(f"{graph_emulator.base_url}/users", params={"$top": "5"}).json()["@odata.nextLink"]
    token = users_link.split("$skiptoken=")[1]
    assert http.get(f"{graph_emulator.base_url}/{PATH}", params={"$skiptoken": token}).status_code == 400


def test_a_tenant_without_intune_is_not_applicable(graph_emulator, tenant, http):
    tenant.intune = False
    response = http.get(f"{graph_emulator.base_url}/{PATH}", params={"$select": "id"})
    assert error_of(response, 400) == {"code": "BadRequest", "message": "Request not applicable to target tenant."}
    assert http.get(f"{graph_emulator.base_url}/devices").status_code == 200  # Entra is unaffected


def test_a_batch_item_reads_managed_devices_like_a_single_get(graph_emulator, http):
    body = {"requests": [{"id": "1", "method": "GET", "url": f"/{PATH}?$select=id,deviceName&$top=2"},
                         {"id": "2", "method": "GET", "url": f"/{PATH}?$top=5000"}]}
    answers = {r["id"]: r for r in http.post(f"{graph_emulator.base_url}/$batch", json=body).json()["responses"]}
    assert answers["1"]["status"] == 200 and len(answers["1"]["body"]["value"]) == 2
    assert answers["2"]["status"] == 400


# -- permission -----------------------------------------------------------------------------------------------

def assert_intune_forbidden(response: httpx.Response) -> None:
    """Intune's 403: code UnknownError, the message a JSON text whose Message is the service's own JSON text."""
    error = error_of(response, 403)
    assert error["code"] == "UnknownError"
    outer = json.loads(error["message"])
    assert outer["ErrorCode"] == "Forbidden" and outer["InstanceAnnotations"] == [] and outer["Target"] is None
    assert outer["Message"].startswith('{\r\n  "_version": 3,\r\n  "Message": "An error has occurred - Operation ID '
                                       '(for customer support): 00000000-0000-0000-0000-000000000000 - Activity ID: ')
    inner = json.loads(outer["Message"])
    assert "/deviceManagement/managedDevices?api-version=" in inner["Message"]
    assert inner["RetryAfter"] is None and "urn:intune:service" in json.loads(inner["HttpHeaders"])["WWW-Authenticate"]


def test_the_sync_app_reads_managed_devices_with_its_default_roles(identity, graph_emulator):  # noqa: F811
    assert "DeviceManagementManagedDevices.Read.All" in SYNC_APP_ROLES and "AuditLog.Read.All" in SYNC_APP_ROLES
    token = app_token(identity, graph_emulator)
    response = httpx.get(f"{graph_emulator.base_url}/{PATH}", headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 200 and len(response.json()["value"]) == 240


@pytest.mark.parametrize("granted", [INTUNE_ROLES[:1], INTUNE_ROLES[1:]])
def test_either_intune_permission_reads(identity, graph_emulator, granted):  # noqa: F811
    app = identity.sync_app_id()
    identity.revoke(app, *INTUNE_ROLES)
    identity.grant(app, *granted)
    token = app_token(identity, graph_emulator)
    assert httpx.get(f"{graph_emulator.base_url}/{PATH}", headers={"Authorization": f"Bearer {token}"}) \
        .status_code == 200


def test_without_an_intune_permission_intunes_odd_403_even_with_directory_read_all(identity, graph_emulator):  # noqa: F811
    app = identity.sync_app_id()
    identity.revoke(app, *INTUNE_ROLES)
    identity.grant(app, "Directory.Read.All")
    headers = {"Authorization": f"Bearer {app_token(identity, graph_emulator)}"}
    assert_intune_forbidden(httpx.get(f"{graph_emulator.base_url}/{PATH}", headers=headers))
    assert httpx.get(f"{graph_emulator.base_url}/devices", headers=headers).status_code == 200


def test_the_denied_knob_and_the_no_permission_token_give_intunes_403(graph_emulator, http):
    assert_intune_forbidden(http.get(f"{graph_emulator.base_url}/{PATH}",
                                     headers={"Authorization": f"Bearer {NO_PERMISSIONS_TOKEN}"}))
    graph_emulator.denied.add("deviceManagement")
    assert_intune_forbidden(http.get(f"{graph_emulator.base_url}/{PATH}"))
    assert http.get(f"{graph_emulator.base_url}/users").status_code == 200
