"""End to end over real HTTP: setup and full syncs against both emulators, with the embedded store."""
from __future__ import annotations

import time

import pytest

from sandbox.tools.verify import verify_users
from shared.admin.setup import run_setup
from shared.app import assets_client, graph_client, open_backend, sync_full
from shared.contract.checkpoints import USERS_DELTA
from shared.deliver import drain, push, worker
from shared.deliver.open_executions import UNKNOWN
from shared.errors import AssetsTokenError, GraphCredentialsError, GraphPermissionError, ImportSourceError
from shared.produce.full import run_full
from shared.records.build import USER_SELECT, fold
from shared.settings import load_settings


@pytest.fixture
def settings(box, tmp_path):
    return load_settings({**box.settings(), "ENTRA_ASSETS_HOME": str(tmp_path / "home")})


def _paths(emulator, method=None):
    return [(r.method, r.path) for r in emulator.requests if method is None or r.method == method]


def test_full_sync_puts_every_user_in_assets_with_references(box, settings):
    run_setup(settings)
    report = sync_full(settings)
    facts = verify_users(box.tenant, box.assets)
    assert facts["users in Assets"] == facts["users in tenant"] == report.full.users
    assert facts["managers resolved"] == facts["managers in tenant"] > 0
    users = {o.attributes["Entra Object ID"][0]: o for o in box.assets.objects("User")}
    departments = {o.key: o for o in box.assets.objects("Department")}
    for uid, user in box.tenant.users.items():
        dept = (user.get("department") or "").strip()
        refs = users[uid].attributes.get("Department") or []
        if dept and len(dept) <= 255:
            assert len(refs) == 1 and fold(departments[refs[0]].attributes["Name"][0]) == fold(dept)
    # Variants of one department fold into one object.
    tenant_departments = {fold(u["department"][:255]) for u in box.tenant.users.values() if u.get("department")}
    assert len(departments) == len(tenant_departments)
    # Office Location -> Address -> City -> Country chain resolves.
    office = next(o for o in box.assets.objects("Office Location") if o.attributes.get("Address"))
    address = next(a for a in box.assets.objects("Address") if a.key == office.attributes["Address"][0])
    city = next(c for c in box.assets.objects("City") if c.key == address.attributes["City"][0])
    country = next(c for c in box.assets.objects("Country") if c.key == city.attributes["Country"][0])
    assert len(country.attributes["Code"][0]) == 2
    assert report.executions == 1 and not any(p.errors for p in report.pushes)


def test_unchanged_tenant_starts_no_execution_and_changes_push_only_themselves(box, settings):
    run_setup(settings)
    sync_full(settings)
    executions = len(box.assets.executions)
    box.assets.reset_log()
    second = sync_full(settings)
    assert second.executions == 0 and second.full.queued == 0
    assert len(box.assets.executions) == executions
    assert not [p for m, p in _paths(box.assets, "POST")]  # no start, no data
    uid = sorted(box.tenant.users)[3]
    box.tenant.update_user(uid, jobTitle="Chief Tester")
    third = sync_full(settings)
    assert third.full.changed == {"user": 1} and third.records_pushed == 1 and third.executions == 1
    obj = next(o for o in box.assets.objects("User") if o.attributes["Entra Object ID"] == [uid])
    assert obj.attributes["Job Title"] == ["Chief Tester"]


def test_exact_requests_reach_the_emulators(box, settings):
    run_setup(settings)
    box.graph.reset_log()
    box.assets.reset_log()
    report = sync_full(settings)
    graph = box.graph.requests
    assert graph[0].path.endswith("/users/delta") and graph[0].query["$select"] == ",".join(USER_SELECT)
    users = [r for r in graph if r.path.endswith("/users/delta")]
    assert all("$skiptoken" in r.query or "$deltatoken" in r.query for r in users[1:])  # links as returned
    assert len(graph) == report.full.graph_pages
    assets = [(r.method, r.path.rsplit("/", 2)[-2:]) for r in box.assets.requests]
    assert assets[0] == ("GET", ["imports", "info"]) and assets[1][1][-1] == "configstatus"
    starts = [r for r in box.assets.requests if r.method == "POST" and r.path.endswith("/executions")]
    data = [r for r in box.assets.requests if r.path.endswith("/data")]
    assert len(starts) == 1 and len(data) == report.pushes[0].chunks
    assert [r.json["completed"] for r in data] == [False] * (len(data) - 1) + [True]
    assert all(sum(map(len, r.json["data"].values())) <= push.CHUNK_RECORDS for r in data)
    assert all(r.headers.get("Authorization") == "Bearer sandbox-import-token" for r in box.assets.requests)


def test_throttling_is_waited_out(box, settings):
    run_setup(settings)
    box.graph.throttle(2, retry_after="0")
    report = sync_full(settings)
    assert report.full.users == len(box.tenant.users)
    assert len(box.graph.requests) == report.full.graph_pages + 2


def _nothing_written(settings, box):
    backend = open_backend(settings)
    assert dict(backend.state.hashes("user")) == {} and backend.state.checkpoint(USERS_DELTA) is None
    assert backend.queue.depth().messages == 0
    assert box.assets.objects("User") == []


def test_wrong_import_token_is_invalid_token_and_nothing_is_written(box, settings, tmp_path):
    run_setup(settings)
    bad = load_settings({**box.settings(), "ASSETS_IMPORT_TOKEN": "wrong", "ENTRA_ASSETS_HOME": str(tmp_path / "h")})
    with pytest.raises(AssetsTokenError) as info:
        sync_full(bad)
    assert info.value.status == "INVALID_TOKEN" and "ASSETS_IMPORT_TOKEN" in str(info.value)
    assert not [r for r in box.graph.requests if "/users" in r.path]
    _nothing_written(bad, box)


def test_disabled_and_missing_mapping_are_clear_errors(box, settings):
    with pytest.raises(ImportSourceError) as info:
        sync_full(settings)
    assert info.value.status == "MISSING_MAPPING" and "entra-assets setup" in str(info.value)
    run_setup(settings)
    box.assets.disable()
    with pytest.raises(ImportSourceError) as info:
        sync_full(settings)
    assert info.value.status == "DISABLED"
    _nothing_written(settings, box)


@pytest.mark.parametrize("token, error, status", [
    ("expired-or-wrong", GraphCredentialsError, "INVALID_CREDENTIALS"),
    ("sandbox-graph-no-perms", GraphPermissionError, "MISSING_PERMISSIONS"),
])
def test_graph_401_and_403_are_clear_errors(box, tmp_path, token, error, status):
    settings = load_settings({**box.settings(), "GRAPH_ACCESS_TOKEN": token,
                              "ENTRA_ASSETS_HOME": str(tmp_path / "h")})
    run_setup(settings)
    with pytest.raises(error) as info:
        sync_full(settings)
    assert info.value.status == status
    if status == "MISSING_PERMISSIONS":
        assert "User.Read.All" in str(info.value)
    _nothing_written(settings, box)


def test_checkpoints_move_only_after_done(box, settings, monkeypatch):
    run_setup(settings)
    backend = open_backend(settings)
    graph, assets = graph_client(settings), assets_client(settings)
    run_full(graph, backend.state, backend.queue, backend.payloads)
    assert backend.state.checkpoint(USERS_DELTA) is None and backend.queue.depth().messages == 1
    calls = {"n": 0}
    real_submit = assets.submit

    def failing_submit(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:
            raise RuntimeError("worker died mid-execution")
        return real_submit(*args, **kwargs)
    monkeypatch.setattr(assets, "submit", failing_submit)
    monkeypatch.setattr(drain, "VISIBILITY_SECONDS", 1)
    monkeypatch.setattr(push, "CHUNK_RECORDS", 100)  # several chunks, so the second one can fail
    with pytest.raises(RuntimeError):
        worker.push_queued(backend.queue, backend.payloads, backend.state, assets)
    assert box.assets.executions[-1].status == "CANCELLED"
    # No real hash moved: the ids the failed execution had sent are only marked "compare again" (UNKNOWN)
    assert set(dict(backend.state.hashes("user")).values()) == {UNKNOWN}
    assert backend.state.checkpoint(USERS_DELTA) is None
    monkeypatch.setattr(assets, "submit", real_submit)
    time.sleep(1.2)  # the drained message becomes visible again
    result = worker.push_queued(backend.queue, backend.payloads, backend.state, assets)
    assert result.messages == 1 and result.executions == 1
    assert len(dict(backend.state.hashes("user"))) == len(box.tenant.users)
    assert backend.state.checkpoint(USERS_DELTA).startswith(box.graph.base_url)
    assert backend.queue.depth().messages == 0
    assert verify_users(box.tenant, box.assets)["users in Assets"] == len(box.tenant.users)
