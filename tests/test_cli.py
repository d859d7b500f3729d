"""The command line: exit codes and one-line answers, against the emulators over real HTTP."""
from __future__ import annotations

import json

import pytest


@pytest.fixture
def run(cli):
    return cli


def test_setup_sync_status(run):
    assert run("setup").exit_code == 0
    result = run("sync", "--full")
    assert result.exit_code == 0, result.output
    assert "records pushed" in result.output and f"{len(run.box.tenant.users):,}" in result.output
    status = run("status", "--json")
    data = json.loads(status.output)
    assert data["importer_status"] == "IDLE" and data["current"] is None
    [last] = data["runs"]
    assert last["triggers"] == ["cli"] and last["kind"] == "full" and last["stage"] == "Done"
    assert last["records_pushed"] > len(run.box.tenant.users) == last["records"]["User"] == last["read"]["User"]
    assert last["executions"] == 1 and data["queue"]["messages"] == 0
    human = run("status")
    assert human.exit_code == 0 and "last runs" in human.output and "cli" in human.output


def test_check_reports_ready_and_each_failure(run):
    assert run("check").exit_code == 1  # MISSING_MAPPING until setup
    run("setup")
    ok = run("check")
    assert ok.exit_code == 0 and "importer status: IDLE" in ok.output
    bad = run("check", ASSETS_IMPORT_TOKEN="nope")
    assert bad.exit_code == 1 and "INVALID_TOKEN" in bad.output
    denied = run("check", ASSETS_IMPORT_TOKEN="sandbox-import-token", GRAPH_ACCESS_TOKEN="sandbox-graph-no-perms")
    assert denied.exit_code == 1 and "MISSING_PERMISSIONS" in denied.output and "User.Read.All" in denied.output


def test_bad_input_is_one_clear_line_and_nonzero(run):
    run("setup")
    result = run("sync", "--full", ASSETS_IMPORT_TOKEN="nope")
    assert result.exit_code == 1
    assert "INVALID_TOKEN" in result.output and "nope" not in result.output
    assert len(result.output.strip().splitlines()) == 1


def test_invalid_settings_are_all_listed(run):
    result = run("sync", "--full", SYNC_QUEUE_NAME="Bad_Queue", FULL_SYNC_INTERVAL_HOURS="zero")
    assert result.exit_code == 2
    assert "SYNC_QUEUE_NAME" in result.output and "FULL_SYNC_INTERVAL_HOURS" in result.output


def test_sync_without_full_catches_up_from_the_delta_link(run):
    run("setup")
    assert run("sync", "--full").exit_code == 0
    uid = sorted(run.box.tenant.users)[7]
    run.box.tenant.update_user(uid, jobTitle="Caught Up")
    executions = len(run.box.assets.executions)
    result = run("sync")
    assert result.exit_code == 0, result.output
    assert "delta catch-up" in result.output and len(run.box.assets.executions) == executions + 1
    assert run.box.assets.find("User", "Entra Object ID", uid).attributes["Job Title"] == ["Caught Up"]
    newest = json.loads(run("status", "--json").output)["runs"][0]
    assert newest["kind"] == "catch-up" and newest["records"] == {"User": 1} and newest["updated"] == 1
