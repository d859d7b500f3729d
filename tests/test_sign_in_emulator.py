"""Users' sign-in activity: generated per user (sandbox/tenant/sign_ins.py), kept out of the change log, and served
by the Graph emulator over real HTTP as strictly as Graph v1.0 (sandbox/graph/signins.py): refused on delta,
AuditLog.Read.All, a premium tenant, ``$top`` at most 500, ``$filter`` on its dates, and its own throttle of 10
requests a minute per app and tenant."""
from __future__ import annotations

import datetime as dt
import time

import httpx
import pytest

from sandbox.tenant import sign_ins, users
from sandbox.tenant.fleet import LAST_SIGN_IN_BASE
from sandbox.tenant.generator import generate_tenant
from tests.fixtures_graph import app_token, identity  # noqa: F401 - the fixture, by name

AUTH = {"Authorization": "Bearer sandbox-graph-token"}
SELECT = {"$select": "id,signInActivity"}
NOT_PREMIUM = {"code": "Authentication_RequestFromNonPremiumTenantOrB2CTenant",
               "message": "Neither tenant is B2C or tenant doesn't have premium license"}
DENIED = {"code": "Authorization_RequestDenied", "message": "Insufficient privileges to complete the operation."}


@pytest.fixture
def http():
    with httpx.Client(headers=AUTH, timeout=30) as client:
        yield client


def error_of(response: httpx.Response, status: int) -> dict:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error.pop("innerError")) >= {"date", "request-id", "client-request-id"}
    return error


def days_ago(iso: str) -> float:
    return (LAST_SIGN_IN_BASE - dt.datetime.fromisoformat(iso).timestamp()) / 86400


# -- the generated activity -----------------------------------------------------------------------------------

def test_sign_ins_draw_nothing_from_the_users_own_stream(monkeypatch):
    with_sign_ins = [dict(u) for u in generate_tenant(400, seed=9).users.values()]  # built when read: now
    monkeypatch.setattr(users, "activity", lambda *args: None)
    without = list(generate_tenant(400, seed=9).users.values())
    assert [{k: v for k, v in u.items() if k != "signInActivity"} for u in with_sign_ins] == without
    assert sum("signInActivity" in u for u in with_sign_ins) == 399  # all but NOT_RETURNED
    assert not any("signInActivity" in u for u in without)


def test_the_odd_cases_and_the_shares(tenant):
    users_ = list(tenant.users.values())
    assert sign_ins.SIGN_IN_BASE == LAST_SIGN_IN_BASE
    assert users_[sign_ins.NEVER]["signInActivity"] == dict.fromkeys(sign_ins.KEYS)
    assert "signInActivity" not in users_[sign_ins.NOT_RETURNED]
    assert days_ago(users_[sign_ins.STALE]["signInActivity"]["lastSignInDateTime"]) > sign_ins.STALE_DAYS
    only = users_[sign_ins.ONLY_NON_INTERACTIVE]["signInActivity"]
    assert only["lastSignInDateTime"] is None and only["lastNonInteractiveSignInDateTime"] is not None
    failed = users_[sign_ins.FAILED_LAST]["signInActivity"]
    assert failed["lastSuccessfulSignInDateTime"] < failed["lastSignInDateTime"]
    assert failed["lastSuccessfulSignInRequestId"] not in (failed["lastSignInRequestId"],
                                                           failed["lastNonInteractiveSignInRequestId"])
    for user in users_:
        activity = user.get("signInActivity") or {}
        if activity.get("lastSignInDateTime") and activity.get("lastNonInteractiveSignInDateTime"):
            assert activity["lastSignInDateTime"].endswith("Z") and 0 <= days_ago(activity["lastSignInDateTime"])
        if user["accountEnabled"] is False and activity.get("lastSignInDateTime"):
            assert days_ago(activity["lastSignInDateTime"]) > sign_ins.STALE_DAYS  # disabled: no recent sign-in
    big = [u for u in generate_tenant(20_000, seed=3).users.values()][31:]

    def share(kind: str, test) -> float:
        group = [u.get("signInActivity") for u in big if u["userType"] == kind and u["accountEnabled"]]
        return sum(map(test, group)) / len(group)
    never = lambda a: a["lastSignInDateTime"] is None
    stale = lambda a: a["lastSignInDateTime"] is not None and days_ago(a["lastSignInDateTime"]) > 90
    assert 0.02 < share("Member", never) < 0.04 and 0.15 < share("Guest", never) < 0.25
    assert 0.03 < share("Member", stale) < 0.08 and 0.25 < share("Guest", stale) < 0.45


def test_a_sign_in_update_is_no_directory_change(graph_emulator, tenant, http):
    base = graph_emulator.base_url
    link = _delta_link(http, f"{base}/users/delta")
    uid = list(tenant.users)[20]
    version = tenant.version
    fresh = dict.fromkeys(sign_ins.KEYS, None) | {"lastSignInDateTime": "2026-11-21T09:00:00Z"}
    tenant.update_user(uid, signInActivity=fresh)
    assert tenant.version == version and tenant.changes_since(version) == []
    assert http.get(link).json()["value"] == []  # neither delta ...
    assert http.get(f"{base}/users/{uid}", params=SELECT).json()["signInActivity"] == fresh  # ... but the read
    tenant.update_user(uid, signInActivity=None, jobTitle="Pilot")  # logged without the sign-in part
    assert [c.props for c in tenant.changes_since(version)] == [frozenset({"jobTitle"})]
    assert http.get(f"{base}/users/{uid}", params=SELECT).json()["signInActivity"] is None


def _delta_link(http: httpx.Client, url: str) -> str:
    while True:
        page = http.get(url).json()
        if "@odata.deltaLink" in page:
            return page["@odata.deltaLink"]
        url = page["@odata.nextLink"]


# -- the list and single reads -------------------------------------------------------------------------------

def test_the_list_gives_every_users_activity_in_pages_of_top(graph_emulator, tenant, http):
    url, params, seen, sizes = f"{graph_emulator.base_url}/users", {**SELECT, "$top": "120"}, {}, []
    while url:
        page = http.get(url, params=params).json()
        sizes.append(len(page["value"]))
        seen |= {u["id"]: u for u in page["value"]}
        url, params = page.get("@odata.nextLink"), None
    assert sizes == [120, 120, 60] and list(seen) == list(tenant.users)
    assert all(set(u) == {"id", "signInActivity"} for u in seen.values())
    assert all(u["signInActivity"] == tenant.users[i].get("signInActivity") for i, u in seen.items())
    assert len(http.get(f"{graph_emulator.base_url}/users", params=SELECT).json()["value"]) == 100  # /users' default
    assert len(http.get(f"{graph_emulator.base_url}/users", params={**SELECT, "$top": "500"}).json()["value"]) == 300
    assert "signInActivity" not in http.get(f"{graph_emulator.base_url}/users").json()["value"][0]  # $select only


@pytest.mark.parametrize("params", [{**SELECT, "$top": "501"},
                                    {"$filter": "signInActivity/lastSignInDateTime le 2026-01-01T00:00:00Z",
                                     "$top": "999"}])
def test_top_above_500_is_400_with_sign_ins(graph_emulator, http, params):
    assert error_of(http.get(f"{graph_emulator.base_url}/users", params=params), 400)["code"] == "Request_BadRequest"
    assert http.get(f"{graph_emulator.base_url}/users", params={"$select": "id", "$top": "999"}).status_code == 200


def test_a_single_user_by_id_but_not_by_upn(graph_emulator, tenant, http):
    uid = list(tenant.users)[9]
    user = http.get(f"{graph_emulator.base_url}/users/{uid}", params={"$select": "displayName,signInActivity"})
    assert user.status_code == 200 and user.json()["signInActivity"] == tenant.users[uid]["signInActivity"]
    upn = tenant.users[uid]["userPrincipalName"]
    by_upn = http.get(f"{graph_emulator.base_url}/users/{upn}", params=SELECT)
    assert error_of(by_upn, 400)["code"] == "BadRequest"
    assert http.get(f"{graph_emulator.base_url}/users/{upn}", params={"$select": "id"}).status_code == 200


@pytest.mark.parametrize("select", ["id,signInActivity", "signInActivity,displayName"])
def test_delta_refuses_sign_in_activity_with_graphs_words(graph_emulator, http, select):
    base = graph_emulator.base_url
    expected = {"code": "BadRequest", "message": "Invalid request for delta query: for this entity set, "
                "$expand/$select is not supported for the following properties: signInActivity"}
    assert error_of(http.get(f"{base}/users/delta", params={"$select": select}), 400) == expected
    link = _delta_link(http, f"{base}/users/delta?$select=id")  # ... also when a later round asks for it
    assert error_of(http.get(link, params={"$select": select}), 400) == expected


def test_filter_on_sign_in_dates(graph_emulator, tenant, http):
    base, cut = graph_emulator.base_url, "2026-08-22T00:00:00Z"

    def ids(expression: str) -> set[str]:
        found, url, params = set(), f"{base}/users", {"$filter": expression, "$select": "id", "$top": "500"}
        while url:
            page = http.get(url, params=params)
            assert page.status_code == 200, page.text
            found |= {u["id"] for u in page.json()["value"]}
            url, params = page.json().get("@odata.nextLink"), None
        return found
    last = {uid: (u.get("signInActivity") or {}).get("lastSignInDateTime") for uid, u in tenant.users.items()}
    stale = {uid for uid, when in last.items() if when and when <= cut}
    assert stale and ids(f"signInActivity/lastSignInDateTime le {cut}") == stale
    assert ids(f"signInActivity/lastSignInDateTime ge {cut}") == {u for u, w in last.items() if w and w >= cut}
    assert ids("signInActivity/lastSignInDateTime eq null") == {u for u, w in last.items() if w is None}
    for bad, code in ((f"signInActivity/lastSignInDateTime gt {cut}", "Request_UnsupportedQuery"),
                      (f"signInActivity/lastSignInDateTime le {cut} and accountEnabled eq true",
                       "Request_UnsupportedQuery"),
                      ("signInActivity/lastSignInRequestId eq 'x'", "Request_UnsupportedQuery"),
                      (f"signInActivty/lastSignInDateTime le {cut}", "BadRequest")):
        assert error_of(http.get(f"{base}/users", params={"$filter": bad}), 400)["code"] == code, bad
    assert http.get(f"{base}/users", params={"$filter": "displayName eq 'signInActivity'"}).status_code == 200


# -- permission, licence ----------------------------------------------------------------------------------------

def test_without_audit_log_sign_ins_are_403_and_the_rest_reads(identity, graph_emulator, tenant):  # noqa: F811
    app = identity.sync_app_id()
    identity.revoke(app, "AuditLog.Read.All")
    headers = {"Authorization": f"Bearer {app_token(identity, graph_emulator)}"}
    base, uid = graph_emulator.base_url, next(iter(tenant.users))
    assert error_of(httpx.get(f"{base}/users", params=SELECT, headers=headers), 403) == DENIED
    assert error_of(httpx.get(f"{base}/users/{uid}", params=SELECT, headers=headers), 403) == DENIED
    filtered = {"$filter": "signInActivity/lastSignInDateTime le 2026-01-01T00:00:00Z"}
    assert error_of(httpx.get(f"{base}/users", params=filtered, headers=headers), 403) == DENIED
    assert httpx.get(f"{base}/users", params={"$select": "id,displayName"}, headers=headers).status_code == 200
    identity.grant(app, "AuditLog.Read.All")  # a new token carries it
    headers = {"Authorization": f"Bearer {app_token(identity, graph_emulator)}"}
    assert httpx.get(f"{base}/users", params=SELECT, headers=headers).status_code == 200


def test_audit_log_alone_does_not_read_users(identity, graph_emulator):  # noqa: F811
    app = identity.sync_app_id()
    identity.revoke(app, "User.Read.All")
    headers = {"Authorization": f"Bearer {app_token(identity, graph_emulator)}"}
    assert error_of(httpx.get(f"{graph_emulator.base_url}/users", params=SELECT, headers=headers), 403) == DENIED


def test_a_tenant_without_premium_is_403_only_for_sign_ins(graph_emulator, tenant, http):
    tenant.premium = False
    base = graph_emulator.base_url
    assert error_of(http.get(f"{base}/users", params=SELECT), 403) == NOT_PREMIUM
    assert error_of(http.get(f"{base}/users/{next(iter(tenant.users))}", params=SELECT), 403) == NOT_PREMIUM
    assert http.get(f"{base}/users", params={"$select": "id"}).status_code == 200


# -- throttling -------------------------------------------------------------------------------------------------

def test_ten_a_minute_then_429_with_retry_after(graph_emulator, http):
    assert graph_emulator.sign_in_limit == (10, 60.0)  # Graph's, by default
    url = f"{graph_emulator.base_url}/users"
    assert all(http.get(url, params=SELECT).status_code == 200 for _ in range(10))
    response = http.get(url, params=SELECT)
    assert error_of(response, 429)["code"] == "TooManyRequests"
    assert 55 <= int(response.headers["Retry-After"]) <= 60
    assert graph_emulator.sign_in_throttled == 1
    assert all(http.get(url, params={"$select": "id"}).status_code == 200 for _ in range(20))  # others unaffected
    assert graph_emulator.sign_in_throttled == 1


def test_the_window_frees_slots_and_every_page_counts(graph_emulator, http):
    graph_emulator.sign_in_limit = (3, 1.0)
    page = http.get(f"{graph_emulator.base_url}/users", params={**SELECT, "$top": "100"}).json()
    page = http.get(page["@odata.nextLink"]).json()
    last = http.get(page["@odata.nextLink"])
    assert last.status_code == 200 and "@odata.nextLink" not in last.json()
    throttled = http.get(f"{graph_emulator.base_url}/users", params=SELECT)
    assert throttled.status_code == 429 and throttled.headers["Retry-After"] == "1"
    time.sleep(1.05)
    assert http.get(f"{graph_emulator.base_url}/users", params=SELECT).status_code == 200
    assert graph_emulator.sign_in_throttled == 1


def test_the_limit_is_per_app(identity, graph_emulator, tenant):  # noqa: F811
    other = {"id": "0c0c0c0c-0000-4000-8000-000000000001", "appId": "0c0c0c0c-0000-4000-8000-000000000002",
             "displayName": "Reporting", "passwordCredentials": [], "keyCredentials": []}
    tenant.applications[other["id"]] = other
    identity.grant(other["appId"], "User.Read.All", "AuditLog.Read.All")
    graph_emulator.sign_in_limit = (2, 60.0)
    url = f"{graph_emulator.base_url}/users"
    sync = {"Authorization": f"Bearer {app_token(identity, graph_emulator)}"}
    assert [httpx.get(url, params=SELECT, headers=sync).status_code for _ in range(3)] == [200, 200, 429]
    again = {"Authorization": f"Bearer {app_token(identity, graph_emulator)}"}  # a new token: the same app
    assert httpx.get(url, params=SELECT, headers=again).status_code == 429
    reporting = {"Authorization": f"Bearer {app_token(identity, graph_emulator, other['appId'])}"}
    assert httpx.get(url, params=SELECT, headers=reporting).status_code == 200


def test_batch_items_count_against_the_limit(graph_emulator, http):
    graph_emulator.sign_in_limit = (2, 60.0)
    body = {"requests": [{"id": str(i), "method": "GET", "url": "/users?$select=id,signInActivity&$top=5"}
                         for i in range(3)] + [{"id": "3", "method": "GET", "url": "/users?$select=id&$top=5"}]}
    answers = http.post(f"{graph_emulator.base_url}/$batch", json=body).json()["responses"]
    assert [a["status"] for a in answers] == [200, 200, 429, 200]
    assert 55 <= int(answers[2]["headers"]["Retry-After"]) <= 60
    assert graph_emulator.sign_in_throttled == 1
