"""The Graph emulator over real HTTP: paging, $select, delta rounds, errors, auth and throttling."""
from __future__ import annotations

import base64

import httpx
import pytest

from sandbox.graph_emulator import DEFAULT_PAGE_SIZE, DEFAULT_USER_PROPERTIES, GraphEmulator
from sandbox.tenant import generate_tenant
from shared.graph import GraphClient
from shared.mapping import USER_SELECT, manager_of
from shared.transport import Transport

AUTH = {"Authorization": "Bearer sandbox-graph-token"}


@pytest.fixture
def http():
    with httpx.Client(headers=AUTH, timeout=10) as client:
        yield client


def run_round(http: httpx.Client, url: str, params: dict | None = None) -> tuple[list[dict], str, list[dict]]:
    """Follow nextLinks to the deltaLink: (objects, deltaLink, page bodies); checks the link rules per page."""
    objects, pages = [], []
    while True:
        response = http.get(url, params=params)
        assert response.status_code == 200, response.text
        page = response.json()
        pages.append(page)
        assert page["@odata.context"].startswith("http://127.0.0.1:")
        assert ("@odata.nextLink" in page) != ("@odata.deltaLink" in page)  # never both, never neither
        objects.extend(page["value"])
        if "@odata.deltaLink" in page:
            assert "$deltatoken=" in page["@odata.deltaLink"]
            return objects, page["@odata.deltaLink"], pages
        assert "$skiptoken=" in page["@odata.nextLink"]
        url, params = page["@odata.nextLink"], None


def assert_graph_error(response: httpx.Response, status: int, code: str) -> dict:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    error = response.json()["error"]
    assert error["code"] == code and error["message"]
    assert set(error["innerError"]) >= {"date", "request-id", "client-request-id"}
    return error


def test_initial_round_returns_every_user_once_in_full_pages(graph_emulator, tenant, http):
    users, link, pages = run_round(http, f"{graph_emulator.base_url}/users/delta",
                                   {"$select": ",".join(USER_SELECT)})
    assert [u["id"] for u in users] == list(tenant.users)
    assert [len(p["value"]) for p in pages] == [DEFAULT_PAGE_SIZE, 300 - DEFAULT_PAGE_SIZE]
    assert link.startswith(graph_emulator.base_url + "/users/delta?")
    assert len(graph_emulator.requests) == 2 and graph_emulator.requests[0].query["$select"].startswith("id,")


def test_empty_tenant_answers_one_page_and_large_pages_stay_full(http):
    for size, pages in ((0, 1), (DEFAULT_PAGE_SIZE, 1), (2 * DEFAULT_PAGE_SIZE + 1, 3)):
        emulator = GraphEmulator(generate_tenant(size, seed=3)).start()
        try:
            users, _, bodies = run_round(http, f"{emulator.base_url}/users/delta")
            assert len(bodies) == pages and len({u["id"] for u in users}) == size
        finally:
            emulator.stop()


def test_select_restricts_properties_and_manager_delta_iff_selected(graph_emulator, tenant, http):
    url = f"{graph_emulator.base_url}/users/delta"
    users, _, _ = run_round(http, url, {"$select": "displayName,manager,department"})
    assert all(set(u) <= {"id", "displayName", "department", "manager@delta"} for u in users)
    with_manager = {u["id"]: manager_of(u) for u in users if "manager@delta" in u}
    assert with_manager == tenant.managers
    assert all(u["manager@delta"][0]["@odata.type"] == "#microsoft.graph.user" for u in users if "manager@delta" in u)
    assert all("manager" not in u for u in users)
    plain, _, _ = run_round(http, url, {"$select": "displayName,mail"})
    assert not any("manager@delta" in u for u in plain)
    assert any(u["mail"] is None for u in plain)  # selected but unset comes back as null
    default, _, _ = run_round(http, url)
    assert set(default[0]) == set(DEFAULT_USER_PROPERTIES) and default[0]["preferredLanguage"] is None


@pytest.mark.parametrize("query, code, fragment", [
    ({"$select": "id,x"}, "Request_BadRequest", "Could not find a property named 'x' on type 'microsoft.graph.user'."),
    ({"$select": "id,skills,birthday"}, "Request_UnsupportedQuery", "following properties: skills, birthday"),
    ({"$orderby": "displayName"}, "Request_UnsupportedQuery", "$orderby"),
    ({"$filter": "userType eq 'Member'"}, "Request_UnsupportedQuery", "$filter"),
    ({"$bogus": "1"}, "BadRequest", "$bogus"),
])
def test_invalid_delta_queries_are_400_graph_errors(graph_emulator, http, query, code, fragment):
    error = assert_graph_error(http.get(f"{graph_emulator.base_url}/users/delta", params=query), 400, code)
    assert fragment in error["message"]


def test_top_and_expand_are_ignored_on_delta(graph_emulator, http):
    response = http.get(f"{graph_emulator.base_url}/users/delta", params={"$top": "5", "$expand": "manager"})
    assert response.status_code == 200 and len(response.json()["value"]) == DEFAULT_PAGE_SIZE


@pytest.mark.parametrize("top", ["0", "1000", "abc", "-1"])
def test_list_users_rejects_bad_top(graph_emulator, http, top):
    error = assert_graph_error(http.get(f"{graph_emulator.base_url}/users", params={"$top": top}), 400,
                               "Request_BadRequest")
    assert error["message"] == f"Invalid page size specified: '{top}'. Must be between 1 and 999 inclusive."


def test_list_users_pages_with_top_select_and_filter(graph_emulator, tenant, http):
    base = graph_emulator.base_url
    first = http.get(f"{base}/users", params={"$select": "id,userType"}).json()
    assert len(first["value"]) == 100 and "$skiptoken=" in first["@odata.nextLink"]
    seen, url, params = [], f"{base}/users", {"$top": "120", "$select": "id"}
    while url:
        page = http.get(url, params=params).json()
        seen += [u["id"] for u in page["value"]]
        assert all(set(u) == {"id"} for u in page["value"])
        url, params = page.get("@odata.nextLink"), None
    assert seen == list(tenant.users)
    guests = http.get(f"{base}/users", params={"$filter": "userType eq 'guest'", "$select": "id,userType"}).json()
    assert {u["id"] for u in guests["value"]} == {u for u, p in tenant.users.items() if p["userType"] == "Guest"}
    assert_graph_error(http.get(f"{base}/users", params={"$filter": "startsWith(mail,'a')"}), 400,
                       "Request_UnsupportedQuery")
    assert_graph_error(http.get(f"{base}/users", params={"$select": "manager"}), 400, "Request_BadRequest")


def test_get_user_and_manager(graph_emulator, tenant, http):
    base = graph_emulator.base_url
    uid, manager = next(iter(tenant.managers.items()))
    user = http.get(f"{base}/users/{uid}", params={"$select": "id,jobTitle,skills"}).json()
    assert user["id"] == uid and user["jobTitle"] == tenant.users[uid]["jobTitle"] and user["skills"] == []
    upn = tenant.users[uid]["userPrincipalName"].upper()
    assert http.get(f"{base}/users/{upn}").json()["id"] == uid
    boss = http.get(f"{base}/users/{uid}/manager").json()
    assert boss["id"] == manager and boss["@odata.type"] == "#microsoft.graph.user"
    ceo = next(iter(tenant.users))
    assert_graph_error(http.get(f"{base}/users/{ceo}/manager"), 404, "Request_ResourceNotFound")
    assert_graph_error(http.get(f"{base}/users/00000000-0000-4000-8000-000000000000"), 404,
                       "Request_ResourceNotFound")
    assert_graph_error(http.get(f"{base}/users/{uid}/photo"), 400, "BadRequest")
    assert_graph_error(http.get(f"{base}/groups"), 400, "BadRequest")
    assert_graph_error(http.post(f"{base}/users"), 405, "Request_BadRequest")
    org = http.get(f"{base}/organization").json()
    assert org["value"] == [{"id": tenant.tenant_id, "displayName": "Sandbox"}]


@pytest.mark.parametrize("headers, status, code, message", [
    ({}, 401, "InvalidAuthenticationToken", "Access token is empty."),
    ({"Authorization": "Bearer nope"}, 401, "InvalidAuthenticationToken",
     "Access token validation failure. Invalid audience."),
    ({"Authorization": "Bearer sandbox-graph-no-perms"}, 403, "Authorization_RequestDenied",
     "Insufficient privileges to complete the operation."),
])
def test_401_and_403(graph_emulator, headers, status, code, message):
    for path in ("users/delta", "users", "organization", "no-such-thing"):
        response = httpx.get(f"{graph_emulator.base_url}/{path}", headers=headers)
        assert assert_graph_error(response, status, code)["message"] == message
    assert len(graph_emulator.requests) == 4


def test_throttle_answers_429_with_retry_after_then_serves(graph_emulator, http):
    graph_emulator.throttle(2, retry_after="3")
    url = f"{graph_emulator.base_url}/users/delta"
    for _ in range(2):
        response = http.get(url)
        assert_graph_error(response, 429, "TooManyRequests")
        assert response.headers["Retry-After"] == "3"
    assert http.get(url).status_code == 200
    assert len(graph_emulator.requests) == 3


def test_later_round_returns_exactly_the_changes(graph_emulator, tenant, http):
    url = f"{graph_emulator.base_url}/users/delta"
    _, link, _ = run_round(http, url, {"$select": ",".join(USER_SELECT)})
    empty, link, _ = run_round(http, link)
    assert empty == []
    ids = list(tenant.users)
    bosses = set(tenant.managers.values())
    soft, hard = [u for u in ids[40:] if u not in bosses][:2]
    hire = tenant.add_user({"displayName": "Grace Hopper", "userType": "Member"}, manager_id=ids[0])
    tenant.update_user(ids[3], jobTitle="Chief Tester")
    mover, dropped = [u for u in ids[30:] if u in tenant.managers and u not in (soft, hard)][:2]
    old_boss = tenant.managers[dropped]
    tenant.set_manager(mover, ids[1])
    tenant.set_manager(dropped, None)
    tenant.delete_user(soft)
    tenant.delete_user(hard, permanent=True)
    changes, link, _ = run_round(http, link)
    by_id = {c["id"]: c for c in changes}
    assert list(by_id) == [hire, ids[3], mover, dropped, soft, hard] and len(changes) == 6
    assert by_id[hire]["displayName"] == "Grace Hopper" and manager_of(by_id[hire]) == ids[0]
    assert by_id[hire]["businessPhones"] == [] and by_id[hire]["mail"] is None
    assert by_id[ids[3]]["jobTitle"] == "Chief Tester" and set(by_id[ids[3]]) >= set(USER_SELECT) - {"manager"}
    assert manager_of(by_id[mover]) == ids[1]
    assert by_id[dropped]["manager@delta"] == [{"@odata.type": "#microsoft.graph.user", "id": old_boss,
                                                "@removed": {"reason": "deleted"}}]
    assert by_id[soft] == {"id": soft, "@removed": {"reason": "changed"}}
    assert by_id[hard] == {"id": hard, "@removed": {"reason": "deleted"}}
    assert run_round(http, link)[0] == []


def test_later_round_pages_and_ignores_unselected_changes(graph_emulator, tenant, http):
    graph_emulator.page_size = 2
    _, link, _ = run_round(http, f"{graph_emulator.base_url}/users/delta", {"$select": "id,jobTitle"})
    ids = list(tenant.users)
    tenant.update_user(ids[0], department="Board")  # not selected: must not appear
    for uid in ids[1:6]:
        tenant.update_user(uid, jobTitle="Renamed")
    changes, _, pages = run_round(http, link)
    assert [c["id"] for c in changes] == ids[1:6] and len(pages) == 3
    assert all(set(c) == {"id", "jobTitle"} for c in changes)


def test_users_added_mid_round_come_in_the_next_round(graph_emulator, tenant, http):
    graph_emulator.page_size = 100
    first = http.get(f"{graph_emulator.base_url}/users/delta", params={"$select": "id"}).json()
    late = tenant.add_user({"displayName": "Late Joiner"})
    tenant.delete_user(list(tenant.users)[150])
    rest, link, _ = run_round(http, first["@odata.nextLink"])
    assert late not in {u["id"] for u in rest} and len(first["value"]) + len(rest) == 299
    assert {u["id"] for u in run_round(http, link)[0]} >= {late}


def test_prefer_minimal_returns_only_changed_properties(graph_emulator, tenant, http):
    _, link, _ = run_round(http, f"{graph_emulator.base_url}/users/delta", {"$select": "id,jobTitle,mail"})
    uid = list(tenant.users)[9]
    tenant.update_user(uid, jobTitle="Minimalist")
    changes = http.get(link, headers={"Prefer": "return=minimal"}).json()["value"]
    assert changes == [{"id": uid, "jobTitle": "Minimalist"}]


def test_expired_garbage_and_tampered_tokens_are_sync_state_not_found(graph_emulator, http):
    _, link, _ = run_round(http, f"{graph_emulator.base_url}/users/delta", {"$select": "id"})
    base, token = link.split("$deltatoken=")
    raw = bytearray(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
    raw[3] ^= 1
    tampered = base64.urlsafe_b64encode(bytes(raw)).rstrip(b"=").decode()
    for bad in ("garbage", tampered, "AAAA"):
        error = assert_graph_error(http.get(f"{base}$deltatoken={bad}"), 400, "syncStateNotFound")
        assert error["message"].startswith("The sync state generation is not found.")
    next_link = http.get(f"{graph_emulator.base_url}/users/delta").json()["@odata.nextLink"]
    assert_graph_error(http.get(f"{next_link}&$select=id"), 400, "Request_BadRequest")
    graph_emulator.expire_delta_tokens()
    assert_graph_error(http.get(link), 400, "syncStateNotFound")
    assert_graph_error(http.get(next_link), 400, "syncStateNotFound")
    _, fresh, _ = run_round(http, f"{graph_emulator.base_url}/users/delta", {"$select": "id"})
    graph_emulator.expire_delta_tokens(gone=True)
    gone = http.get(fresh)
    assert_graph_error(gone, 410, "resyncRequired")
    assert gone.headers["Location"].endswith("/users/delta?$select=id&$deltatoken=")


def test_token_ttl(graph_emulator, http):
    _, link, _ = run_round(http, f"{graph_emulator.base_url}/users/delta")
    graph_emulator.token_ttl = -1
    assert_graph_error(http.get(link), 400, "syncStateNotFound")


def test_graph_client_reads_a_full_then_an_incremental_round(graph_emulator, tenant):
    client = GraphClient(Transport(httpx.Client()), graph_emulator.base_url, token=lambda: "sandbox-graph-token")
    first = client.delta("users", USER_SELECT)
    users = list(first.objects)
    assert len(users) == 300 and first.pages == 2 and first.delta_link
    assert {u["id"]: manager_of(u) for u in users if manager_of(u)} == tenant.managers
    uid = list(tenant.users)[12]
    tenant.update_user(uid, department="Skunk Works")
    second = client.delta("users", USER_SELECT, link=first.delta_link)
    changed = list(second.objects)
    assert [(u["id"], u["department"]) for u in changed] == [(uid, "Skunk Works")]
    assert second.delta_link and second.delta_link != first.delta_link
