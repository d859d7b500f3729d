"""Jira user links (SPEC §5) end to end against the emulated Jira site and Assets object API, over loopback."""
from __future__ import annotations

import httpx
import pytest

from sandbox.emulators import start_sandbox
from sandbox.jira_emulator import SITE_EMAIL, SITE_TOKEN
from shared.errors import SettingsError
from shared.jira import JiraError, TokenBucket, account_for, basic_auth
from shared.links import NOT_LOOKED_UP, UNMATCHED_KIND, unmatched_users, user_email
from shared.runtime import open_backend, preview, sync_full, sync_incremental
from shared.settings import load_settings
from shared.setup import run_setup
from shared.status import collect_status


@pytest.fixture
def box():
    sandbox = start_sandbox(users=200, seed=5, jira=True)
    yield sandbox
    sandbox.stop()


@pytest.fixture
def settings(box, tmp_path):
    settings = load_settings({**box.settings(), "ENTRA_ASSETS_HOME": str(tmp_path / "home")})
    run_setup(settings)
    return settings


def expected_account(box, uid: str) -> str | None:
    """What the link must be, computed from the emulated world independently of the product."""
    mail = box.tenant.users[uid].get("mail")
    if not mail:
        return None
    found = [a.account_id for a in box.jira.accounts if a.account_type == "atlassian" and a.active
             and a.email_visible and a.email.casefold() == mail.strip().casefold()]
    return found[0] if len(found) == 1 else None


def jira_user(box, uid: str) -> list:
    return box.assets.find("User", "Entra Object ID", uid).attributes.get("Jira User", [])


def object_writes(box) -> list:
    return [r for r in box.assets.requests if r.method == "PUT" and "/v1/object/" in r.path]


def test_matching_users_get_jira_user_and_only_they(box, settings):
    sync_full(settings)
    expected = {uid: expected_account(box, uid) for uid in box.tenant.users}
    linked = {uid for uid, account in expected.items() if account}
    assert 0 < len(linked) < len(expected)  # the world has both
    for uid, account in expected.items():
        obj = box.assets.find("User", "Entra Object ID", uid)
        assert obj.attributes.get("Jira User", []) == ([account] if account else []), uid
        assert obj.attributes.get("Atlassian Account ID", []) == ([account] if account else []), uid
        manager = box.tenant.managers.get(uid)
        manager_account = expected.get(manager) if manager else None
        assert obj.attributes.get("Manager Atlassian Account ID", []) == ([manager_account] if manager_account
                                                                           else []), uid
    # Matching is case-insensitive: most accounts spell the address in other case than Entra does.
    respelt = [uid for uid in linked if box.jira.account(expected[uid]).email != box.tenant.users[uid]["mail"]]
    assert respelt
    # Hidden, inactive, app and customer accounts never match, even with the same address.
    decoys = [a for a in box.jira.accounts if a.account_type != "atlassian" or not a.active or not a.email_visible]
    assert decoys and not {a.account_id for a in decoys} & set(filter(None, expected.values()))
    assert len(object_writes(box)) == len(linked)


def test_a_second_sync_sends_nothing(box, settings):
    sync_full(settings)
    box.jira.reset_log()
    box.assets.reset_log()
    report = sync_full(settings)
    assert report.executions == 0 and report.full.queued == 0
    assert box.jira.searches() == 0  # every e-mail answered from the cache
    assert object_writes(box) == []
    assert [r for r in box.assets.requests if "/v1/object" in r.path] == []


def test_an_email_change_moves_the_link(box, settings):
    sync_full(settings)
    ids = sorted(box.tenant.users)
    mover = next(u for u in ids if expected_account(box, u))
    loser = next(u for u in ids if expected_account(box, u) and u != mover)
    old = expected_account(box, mover)
    new = box.jira.add_account("Moved.Person@Sandbox.Example", "Moved Person")
    box.tenant.update_user(mover, mail="moved.person@sandbox.example")
    box.tenant.update_user(loser, mail="nobody-in-jira@sandbox.example")
    box.assets.reset_log()
    box.jira.reset_log()
    report = sync_incremental(settings)
    assert report.executions == 1
    assert jira_user(box, mover) == [new.account_id] != [old]
    assert jira_user(box, loser) == []
    assert box.jira.searches() == 2  # only the two new addresses
    writes = object_writes(box)
    values = sorted((w.json["attributes"][0]["objectAttributeValues"] for w in writes), key=len)
    assert values == [[], [{"value": new.account_id}]]  # one link moved, one cleared
    assert {uid["id"] for uid in unmatched_users(open_backend(settings).state)} >= {loser}
    box.assets.reset_log()
    assert sync_incremental(settings).executions == 0 and object_writes(box) == []


def test_unmatched_users_are_listed_by_preview_and_for_status(box, settings):
    report = preview(settings).to_json()
    unmatched = {u for u in box.tenant.users if box.tenant.users[u].get("mail") and not expected_account(box, u)}
    entry = next(e for e in report["unmatched"] if e["kind"] == UNMATCHED_KIND)
    assert entry["count"] == len(unmatched) > 0
    assert set(entry["sample"]) <= unmatched and all("@" not in s for s in entry["sample"])
    assert report["counts"]["create"]["User"] == len(box.tenant.users)
    assert box.assets.executions == []  # preview writes nothing
    sync_full(settings)
    assert {u["id"] for u in unmatched_users(open_backend(settings).state)} == unmatched
    jira = collect_status(settings)["jira"]  # what `status` and the status page show
    assert set(jira["unmatched_ids"]) == unmatched and jira["unmatched"] == len(unmatched)
    assert jira["linked"] == len([u for u in box.tenant.users if jira_user(box, u)]) > 0


def test_lookups_past_the_budget_wait_for_the_next_run(box, tmp_path):
    settings = load_settings({**box.settings(), "ENTRA_ASSETS_HOME": str(tmp_path / "h"), "JIRA_LOOKUPS_PER_RUN": "50"})
    run_setup(settings)
    first = sync_full(settings)
    assert box.jira.searches() == 50
    assert first.full.warnings.counts[NOT_LOOKED_UP] > 0
    for _ in range(8):
        sync_full(settings)
    expected = {uid: expected_account(box, uid) for uid in box.tenant.users}
    assert all(jira_user(box, uid) == ([a] if a else []) for uid, a in expected.items())


def test_jira_rate_limit_is_honoured(box, settings):
    box.jira.throttle(3, retry_after="0")
    sync_full(settings)
    searches = [r for r in box.jira.requests if r.path == "/rest/api/3/user/search"]
    emails = {e.casefold() for u in box.tenant.users.values() if (e := user_email(u))}
    assert len(searches) == len(emails) + 3  # the three refused searches were sent again
    assert all(jira_user(box, u) == ([a] if (a := expected_account(box, u)) else []) for u in box.tenant.users)


def test_token_bucket_paces_requests():
    now = [0.0]
    slept: list[float] = []

    def sleep(seconds: float) -> None:
        slept.append(seconds)
        now[0] += seconds
    bucket = TokenBucket(rate=10, burst=5, clock=lambda: now[0], sleep=sleep)
    for _ in range(25):
        bucket.take()
    assert now[0] == pytest.approx(2.0)  # 5 at once, then 20 at 10 a second
    assert len(slept) == 20


def test_account_matching_is_exact_case_insensitive_and_atlassian_only():
    users = [{"accountId": "a", "accountType": "atlassian", "active": True, "emailAddress": "ANA@Example.com"},
             {"accountId": "b", "accountType": "atlassian", "active": True, "emailAddress": "ana@example.com.au"},
             {"accountId": "c", "accountType": "app", "active": True, "emailAddress": "ana@example.com"}]
    assert account_for(users, "ana@example.com") == "a"
    assert account_for(users[1:], "ana@example.com") is None
    assert account_for([{**users[0], "active": False}], "ana@example.com") is None
    assert account_for([{k: v for k, v in users[0].items() if k != "emailAddress"}], "ana@example.com") is None


@pytest.mark.parametrize(("env", "expected"), [
    ({"JIRA_SITE_URL": "https://example.atlassian.net"}, "missing: JIRA_EMAIL, JIRA_API_TOKEN"),
    ({"JIRA_EMAIL": "admin@example.com", "JIRA_API_TOKEN": "x"}, "missing: JIRA_SITE_URL"),
    ({"JIRA_SITE_URL": "http://example.atlassian.net", "JIRA_EMAIL": "a@b.co", "JIRA_API_TOKEN": "x"},
     "JIRA_SITE_URL must be the https URL"),
    ({"JIRA_SITE_URL": "https://example.atlassian.net", "JIRA_EMAIL": "admin", "JIRA_API_TOKEN": "x"}, "JIRA_EMAIL"),
    ({"JIRA_SITE_URL": "https://e.atlassian.net", "JIRA_EMAIL": "a@b.co", "JIRA_API_TOKEN": "x",
      "JIRA_LOOKUPS_PER_RUN": "lots"}, "JIRA_LOOKUPS_PER_RUN"),
])
def test_bad_or_incomplete_jira_settings_are_named(env, expected):
    with pytest.raises(SettingsError) as error:
        load_settings(env)
    assert expected in str(error.value)
    assert "x" not in [p.split()[-1] for p in error.value.problems]  # the token is never echoed


def test_a_rejected_api_token_is_actionable_and_changes_nothing(box, tmp_path):
    settings = load_settings({**box.settings(), "ENTRA_ASSETS_HOME": str(tmp_path / "h"),
                              "JIRA_API_TOKEN": "revoked-token"})
    with pytest.raises(JiraError) as error:
        run_setup(settings)
    message = str(error.value)
    assert "401" in message and "JIRA_API_TOKEN" in message and "revoked-token" not in message
    with pytest.raises(JiraError):
        sync_full(settings)
    assert box.assets.executions == []
    assert not any(o.attributes.get("Jira User") for o in box.assets.objects("User"))


def test_emulators_are_strict(box, settings):
    sync_full(settings)
    site = httpx.Client(base_url=box.jira.url)
    auth = {"Authorization": basic_auth(SITE_EMAIL, SITE_TOKEN)}
    assert site.get("/rest/api/3/user/search", params={"query": "a"}).status_code == 401
    assert site.get("/rest/api/3/user/search", headers=auth).status_code == 400
    assert site.get("/rest/api/3/user/search", params={"query": "a", "maxResults": "5000"}, headers=auth).status_code == 400
    api = httpx.Client(base_url=f"{box.assets.url}/jsm/assets/workspace/{box.assets.workspace_id}/v1")
    assert api.post("/object/aql", json={"qlQuery": "Name = x"}).status_code == 401
    assert api.post("/object/aql", json={"qlQuery": "Name LIKE x"}, headers=auth).status_code == 400
    assert api.post("/object/aql", json={"qlQuery": '"No Such Attribute" = x'}, headers=auth).status_code == 400
    assert api.put("/object/999999", json={"objectTypeId": "1", "attributes": []}, headers=auth).status_code == 404
    user = box.assets.objects("User")[0]
    attributes = api.get(f"/objecttype/{_type_id(api, auth)}/attributes", headers=auth).json()
    jira = next(a for a in attributes if a["name"] == "Jira User")
    body = {"objectTypeId": _type_id(api, auth), "attributes": [
        {"objectTypeAttributeId": jira["id"], "objectAttributeValues": [{"value": "712020:not-an-account"}]}]}
    assert api.put(f"/object/{user.id}", json=body, headers=auth).status_code == 400
    assert api.post(f"/objecttypeattribute/{_type_id(api, auth)}", json={"name": "Jira User", "type": 2},
                    headers=auth).status_code == 400  # exists already


def _type_id(api: httpx.Client, auth: dict) -> str:
    return next(t["id"] for t in api.get("/objectschema/7/objecttypes/flat", headers=auth).json() if t["name"] == "User")
