"""Jira user links (SPEC §5) end to end against the emulated Jira site and Assets object API, over loopback."""
from __future__ import annotations

import httpx
import orjson
import pytest

from sandbox.emulators import start_sandbox
from sandbox.jira.emulator import SITE_EMAIL, SITE_TOKEN
from shared import jira_links as links
from shared.admin.setup import run_setup
from shared.admin.status import collect_status
from shared.app import Backend, open_backend, preview, sync_full, sync_incremental
from shared.clients.jira import (
    PENDING,
    AccountCache,
    JiraDirectory,
    JiraError,
    TokenBucket,
    account_for,
    basic_auth,
    jira_client,
)
from shared.contract.checkpoints import JIRA_CACHE, JIRA_LOOKUPS
from shared.errors import SettingsError
from shared.jira_links import NOT_LOOKED_UP, UNMATCHED_KIND, unmatched_ids, user_email
from shared.settings import load_settings


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
    assert set(unmatched_ids(open_backend(settings).state)) >= {loser}
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
    assert set(unmatched_ids(open_backend(settings).state)) == unmatched
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


class CountingState:
    """The state store, counting the stored user records and hash lists a run reads."""

    def __init__(self, inner):
        self.inner, self.user_ids_read, self.hash_reads = inner, [], []

    def records(self, type_key, ids):
        ids = list(ids)
        if type_key == "user":
            self.user_ids_read.append(len(ids))
        return self.inner.records(type_key, ids)

    def hashes(self, type_key):
        self.hash_reads.append(type_key)
        return self.inner.hashes(type_key)

    def __getattr__(self, name):
        return getattr(self.inner, name)


def counted(settings) -> tuple[Backend, CountingState]:
    backend = open_backend(settings)
    state = CountingState(backend.state)
    return Backend(state, backend.queue, backend.payloads), state


def test_catch_ups_finish_the_lookups_a_full_run_left(box, tmp_path):
    settings = load_settings({**box.settings(), "ENTRA_ASSETS_HOME": str(tmp_path / "h"), "JIRA_LOOKUPS_PER_RUN": "50"})
    run_setup(settings)
    emails = {e.casefold() for u in box.tenant.users.values() if (e := user_email(u))}
    first = sync_full(settings)
    assert box.jira.searches() == 50 and first.full.warnings.counts[NOT_LOOKED_UP] > 0
    pending = orjson.loads(open_backend(settings).state.checkpoint(JIRA_LOOKUPS))
    assert len(pending) == first.full.warnings.counts[NOT_LOOKED_UP]
    mails = [user_email(box.tenant.users[u]).casefold() for u in pending]
    gone = next(u for u, m in zip(pending, mails, strict=True) if mails.count(m) == 1 and sum(
        1 for x in box.tenant.users.values() if (user_email(x) or "").casefold() == m) == 1)
    box.tenant.delete_user(gone, permanent=True)  # a pending user who leaves is never looked up
    searches, executions = [], []
    for _ in range(10):  # catch-ups only: no full run from here on
        box.jira.reset_log()
        box.assets.reset_log()
        backend, state = counted(settings)
        report = sync_incremental(settings, backend=backend)
        searches.append(box.jira.searches())
        executions.append(report.executions)
        assert sum(state.user_ids_read) <= 50 + 10  # the sweep's users (+ the departure's reports), not all
        if searches[-1] == 0:
            break
    assert all(0 < n <= 50 for n in searches[:-1]), searches
    # Every address still in the directory was searched exactly once over the runs: no user was searched
    # twice, none was left out, and the departed user's address was never searched.
    assert 50 + sum(searches) == len(emails) - 1
    assert len(searches) >= 3  # 50 a catch-up: the rest took several
    # The last catch-up found nothing pending: no search, no execution, no stored user read.
    assert searches[-1] == 0 and executions[-1] == 0 and object_writes(box) == []
    assert state.user_ids_read == [] and "user" not in state.hash_reads
    assert open_backend(settings).state.checkpoint(JIRA_LOOKUPS) is None
    expected = {uid: expected_account(box, uid) for uid in box.tenant.users}
    for uid, account in expected.items():
        obj = box.assets.find("User", "Entra Object ID", uid)
        assert jira_user(box, uid) == ([account] if account else []), uid
        assert obj.attributes.get("Atlassian Account ID", []) == ([account] if account else []), uid
    # Reports of users linked by a catch-up get their manager's account with the next full run, searching nothing.
    box.jira.reset_log()
    sync_full(settings)
    assert box.jira.searches() == 0
    for uid in box.tenant.users:
        manager = box.tenant.managers.get(uid)
        account = expected.get(manager) if manager else None
        obj = box.assets.find("User", "Entra Object ID", uid)
        assert obj.attributes.get("Manager Atlassian Account ID", []) == ([account] if account else []), uid


def test_catch_ups_check_expired_cache_entries_again(box, settings, monkeypatch):
    sync_full(settings)
    state = open_backend(settings).state
    unmatched = sorted(u for u in box.tenant.users if user_email(box.tenant.users[u]) and not expected_account(box, u))
    misses = {box.tenant.users[u]["mail"].casefold() for u in unmatched}
    newcomer = unmatched[-1]  # joins Jira after the first lookup
    joined = box.jira.add_account(box.tenant.users[newcomer]["mail"].upper(), "Newcomer")
    assert expected_account(box, newcomer) == joined.account_id
    box.jira.reset_log()
    assert sync_incremental(settings).executions == 0 and box.jira.searches() == 0  # the miss is still fresh
    cache = orjson.loads(state.checkpoint(JIRA_CACHE))
    for entry in cache.values():  # two days later: misses are due again (a day), matches are not (30+ days)
        entry[1] -= 2 * 24 * 3600
    state.commit({}, {JIRA_CACHE: orjson.dumps(cache).decode()})
    monkeypatch.setattr(links, "CATCH_UP_LOOKUPS", 20)  # smaller than JIRA_LOOKUPS_PER_RUN (5,000)
    box.assets.reset_log()
    searches, pushed = [], 0
    for _ in range(len(misses) // 20 + 3):
        box.jira.reset_log()
        report = sync_incremental(settings)
        searches.append(box.jira.searches())
        pushed += report.records_pushed
        if searches[-1] == 0:
            break
    assert all(0 < n <= 20 for n in searches[:-1]) and searches[-1] == 0 and report.executions == 0, searches
    assert sum(searches) == len(misses)  # each due address once, no match searched again
    assert pushed == 1 and jira_user(box, newcomer) == [joined.account_id]  # only the newcomer's record changed
    assert len(object_writes(box)) == 1


def test_a_catch_up_stops_searching_at_its_time_limit(box, settings):
    seconds = [0.0]

    def clock() -> float:  # every reading one second later
        seconds[0] += 1.0
        return seconds[0]
    emails = sorted({e for u in box.tenant.users.values() if (e := user_email(u))})
    with httpx.Client() as http:
        directory = JiraDirectory(jira_client(settings, http), AccountCache(None), 1000, time_limit=5,
                                  monotonic=clock)
        found = directory.resolve(emails)
    assert 0 < directory.searched == box.jira.searches() < 10 and directory.remaining() == 0
    assert sum(1 for account in found.values() if account is PENDING) == len(emails) - directory.searched


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
    # A sync is not stopped by it: it pushes the directory without links (tests/test_jira_degraded.py).
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


def test_a_full_run_and_a_catch_up_in_one_pass_keep_each_others_jira_state():
    """The worker coalesces a full run's payload with a catch-up planned from the older state: the account
    cache is merged per key (the catch-up newer), pending and unmatched ids are united, nothing is lost."""
    from shared.contract.checkpoints import JIRA_CACHE, JIRA_LOOKUPS, JIRA_UNMATCHED
    from shared.deliver.worker import _merge_later

    checkpoints = {JIRA_CACHE: orjson.dumps({"a": ["acc-1", 1.0], "b": ["", 1.0]}).decode(),
                   JIRA_LOOKUPS: '["u1", "u3"]', JIRA_UNMATCHED: '["u5"]', "users/delta": "old-link"}
    newer = {JIRA_CACHE: orjson.dumps({"b": ["acc-2", 2.0], "c": ["", 2.0]}).decode(), JIRA_LOOKUPS: '["u2", "u3"]',
             JIRA_UNMATCHED: '["u6"]', "users/delta": "new-link"}
    assert list(_merge_later(checkpoints, newer)) == []
    assert orjson.loads(checkpoints[JIRA_CACHE]) == {"a": ["acc-1", 1.0], "b": ["acc-2", 2.0], "c": ["", 2.0]}
    assert orjson.loads(checkpoints[JIRA_LOOKUPS]) == ["u1", "u2", "u3"]
    assert orjson.loads(checkpoints[JIRA_UNMATCHED]) == ["u5", "u6"]
    assert checkpoints["users/delta"] == "new-link"  # not merged: the catch-up's link is the newer one
    assert list(_merge_later(checkpoints, {JIRA_LOOKUPS: None})) == []  # the catch-up found none left: the run's stay
    assert orjson.loads(checkpoints[JIRA_LOOKUPS]) == ["u1", "u2", "u3"]
    alone: dict = {}
    assert list(_merge_later(alone, {JIRA_LOOKUPS: None})) == [] and alone == {JIRA_LOOKUPS: None}  # no run: as it is
