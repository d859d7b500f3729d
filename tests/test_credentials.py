"""Credential checks and warnings, through a real identity flow: azure-identity (MSAL) signs in over TLS at the
identity emulator, Graph (the emulator) accepts the token by its roles, Assets (the emulator) the import token.

Every case goes through ``entra-assets check`` (CliRunner) or ``check_all``/``credential_report`` against the
emulators over real HTTP on loopback; the test CA is trusted through REQUESTS_CA_BUNDLE in the test's own
environment only.
"""
from __future__ import annotations

import base64
import datetime as dt
import json
import logging

import pytest
from click.testing import CliRunner

from sandbox.emulators import IMPORT_TOKEN
from sandbox.identity.emulator import SYNC_APP_ROLES, IdentityEmulator
from shared.admin.credential_expiry import (
    TOKEN_SEEN,
    credential_report,
    expiry_warning,
    fingerprint,
    pick_key_credential,
    pick_password_credential,
)
from shared.admin.setup import run_setup
from shared.admin.status import check_all
from shared.app import graph_client, open_backend
from shared.cli import main
from shared.errors import SettingsError
from shared.settings import load_settings

NOW = dt.datetime.now(dt.UTC)


def days(n: float) -> dt.datetime:
    """A moment n days (plus an hour, so whole-day counts are exact) from now."""
    return NOW + dt.timedelta(days=n, hours=1)


@pytest.fixture
def identity(tenant, graph_emulator):
    emulator = IdentityEmulator(tenant).start()
    emulator.attach(graph_emulator)
    emulator.grant(emulator.sync_app_id(), *SYNC_APP_ROLES)
    yield emulator
    emulator.stop()


@pytest.fixture
def env(identity, tenant, graph_emulator, assets_emulator, tmp_path, monkeypatch):
    """The settings of an app that signs in with a client secret (added per test), import set up."""
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(identity.ca_file))  # trust the test CA in this test only
    values = {"AZURE_TENANT_ID": tenant.tenant_id, "AZURE_CLIENT_ID": identity.sync_app_id(),
              "AZURE_AUTHORITY_HOST": identity.url, "GRAPH_BASE_URL": graph_emulator.base_url,
              "ASSETS_API_URL": assets_emulator.url, "ASSETS_IMPORT_TOKEN": IMPORT_TOKEN,
              "ENTRA_ASSETS_HOME": str(tmp_path / "home")}
    for name in ("GRAPH_ACCESS_TOKEN", "AZURE_CLIENT_SECRET", "AZURE_CLIENT_CERTIFICATE_PATH",
                 "AZURE_CLIENT_CREDENTIAL_EXPIRES", "ASSETS_IMPORT_TOKEN_EXPIRES", "SYNC_OBJECT_TYPES"):
        monkeypatch.delenv(name, raising=False)
    for name, value in values.items():
        monkeypatch.setenv(name, value)
    run_setup(load_settings({**values, "GRAPH_ACCESS_TOKEN": "sandbox-graph-token"}))
    return values


def check(monkeypatch, **env):
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return CliRunner().invoke(main, ["check"])


def test_right_secret_signs_in_and_check_is_ready(identity, env, graph_emulator, monkeypatch, caplog):
    secret = identity.add_secret(env["AZURE_CLIENT_ID"], days(60))
    result = check(monkeypatch, AZURE_CLIENT_SECRET=secret)
    assert result.exit_code == 0, result.output
    assert "importer status: IDLE" in result.output
    assert f"client secret, expires {days(60).date().isoformat()} (60 days left; from app registration)" \
        in result.output
    assert "warning" not in result.output  # 60 days: too early to warn
    # the token came from the identity flow: the emulator saw discovery then a client-credentials request
    posts = [r for r in identity.requests if r.method == "POST"]
    assert posts and all(r.json["grant_type"] == "client_credentials" for r in posts)
    assert posts[0].json["scope"] == graph_emulator.base_url.removesuffix("/v1.0") + "/.default"
    assert any(r.path.endswith("/.well-known/openid-configuration") for r in identity.requests)
    # ... and Graph was read with it, including the app registration
    reads = [r.path for r in graph_emulator.requests]
    assert f"/v1.0/applications(appId='{env['AZURE_CLIENT_ID']}')" in reads
    _assert_secret_nowhere(secret, result.output, caplog, identity)


def test_wrong_secret_is_invalid_credentials_with_the_action(identity, env, monkeypatch, caplog):
    identity.add_secret(env["AZURE_CLIENT_ID"], days(60))
    result = check(monkeypatch, AZURE_CLIENT_SECRET="not-the-secret-value")
    assert result.exit_code == 1
    assert "importer status: INVALID_CREDENTIALS" in result.output
    assert "AADSTS7000215" in result.output and "Certificates & secrets" in result.output
    assert f"the client secret of app {env['AZURE_CLIENT_ID']} is wrong" in result.output
    assert "AZURE_CLIENT_SECRET" in result.output
    _assert_secret_nowhere("not-the-secret-value", result.output, caplog, identity)


def test_expired_secret_is_invalid_credentials_expired(identity, env, monkeypatch, caplog):
    secret = identity.add_secret(env["AZURE_CLIENT_ID"], NOW - dt.timedelta(days=2))
    result = check(monkeypatch, AZURE_CLIENT_SECRET=secret)
    assert result.exit_code == 1
    assert "importer status: INVALID_CREDENTIALS" in result.output
    assert "has expired (AADSTS7000222): create a new secret" in result.output
    _assert_secret_nowhere(secret, result.output, caplog, identity)


@pytest.mark.parametrize(("setting", "value", "expected"), [
    ("AZURE_TENANT_ID", "00000000-1111-2222-3333-444444444444",
     "tenant 00000000-1111-2222-3333-444444444444 was not found (AADSTS90002): check AZURE_TENANT_ID"),
    ("AZURE_CLIENT_ID", "99999999-1111-2222-3333-444444444444",
     "there is no app with client id 99999999-1111-2222-3333-444444444444"),
])
def test_unknown_tenant_or_app_names_the_setting(identity, env, monkeypatch, setting, value, expected):
    secret = identity.add_secret(env["AZURE_CLIENT_ID"], days(60))
    result = check(monkeypatch, AZURE_CLIENT_SECRET=secret, **{setting: value})
    assert result.exit_code == 1 and "INVALID_CREDENTIALS" in result.output
    assert expected in result.output and secret not in result.output


def test_missing_permissions_are_each_named_with_the_consent_step(identity, env, monkeypatch):
    app = env["AZURE_CLIENT_ID"]
    secret = identity.add_secret(app, days(60))
    identity.revoke(app, "Device.Read.All", "GroupMember.Read.All")
    result = check(monkeypatch, AZURE_CLIENT_SECRET=secret)
    assert result.exit_code == 1
    assert "importer status: MISSING_PERMISSIONS" in result.output
    assert "application permission Device.Read.All" in result.output
    assert "application permission GroupMember.Read.All" in result.output
    assert "User.Read.All" not in result.output  # granted: not reported
    assert "Grant admin consent" in result.output
    # granting it back (a new token carries the new roles) makes the app ready again
    identity.grant(app, "Device.Read.All", "GroupMember.Read.All")
    assert check(monkeypatch).exit_code == 0


def test_revoked_import_token_is_invalid_token_with_the_action(identity, env, assets_emulator, monkeypatch):
    secret = identity.add_secret(env["AZURE_CLIENT_ID"], days(60))
    assets_emulator.regenerate_token()  # the admin generated a new token: ours is revoked
    result = check(monkeypatch, AZURE_CLIENT_SECRET=secret)
    assert result.exit_code == 1
    assert "importer status: INVALID_TOKEN" in result.output
    assert "revoked" in result.output and "External import > Generate new token" in result.output
    assert IMPORT_TOKEN not in result.output
    # a token Assets refused is not remembered
    assert open_backend(load_settings(env)).state.checkpoint(TOKEN_SEEN) is None


def test_secret_expiring_in_10_days_warns_in_check_and_report(identity, env, monkeypatch):
    secret = identity.add_secret(env["AZURE_CLIENT_ID"], days(10))
    result = check(monkeypatch, AZURE_CLIENT_SECRET=secret)
    assert result.exit_code == 0, result.output  # a warning does not make the app unready
    expected = (f"warning: the client secret of app {env['AZURE_CLIENT_ID']} expires on "
                f"{days(10).date().isoformat()} (in 10 days): create a new secret")
    assert expected in result.output
    settings = load_settings({**env, "AZURE_CLIENT_SECRET": secret})
    report = credential_report(settings, graph_client(settings), open_backend(settings).state, NOW)
    graph = report["graph_credential"]
    assert graph["kind"] == "client_secret" and graph["days_left"] == 10 and graph["source"] == "app registration"
    assert graph["warning"].startswith("the client secret of app") and "in 10 days" in graph["warning"]
    assert report["import_token"]["warning"] is None
    assert secret not in json.dumps(report)


def test_the_secret_in_use_is_found_by_its_hint_among_several(identity, env, monkeypatch):
    app = env["AZURE_CLIENT_ID"]
    identity.add_secret(app, days(5), display_name="old one")  # another secret, about to expire
    secret = identity.add_secret(app, days(200))
    report = check_all(load_settings({**env, "AZURE_CLIENT_SECRET": secret}))
    assert report.ready and report.warnings == []
    assert report.credentials["graph_credential"]["days_left"] == 200


def test_fallback_setting_when_the_registration_cannot_be_read(identity, env, monkeypatch):
    app = env["AZURE_CLIENT_ID"]
    secret = identity.add_secret(app, days(90))
    identity.revoke(app, "Application.Read.All")  # syncing no applications, the app may lack it
    base = {**env, "AZURE_CLIENT_SECRET": secret, "SYNC_OBJECT_TYPES": "User,Group,Device"}
    report = check_all(load_settings({**base, "AZURE_CLIENT_CREDENTIAL_EXPIRES": days(5).date().isoformat()}))
    assert report.ready, report.lines
    graph = report.credentials["graph_credential"]
    assert graph["source"] == "AZURE_CLIENT_CREDENTIAL_EXPIRES" and graph["days_left"] in (4, 5)
    assert any(w.startswith("the client secret of app") and "create a new secret" in w for w in report.warnings)
    without = check_all(load_settings(base)).credentials["graph_credential"]
    assert without["expires"] is None and without["warning"] is None
    assert "could not be read (403: the app lacks Application.Read.All)" in without["source"]
    assert "set AZURE_CLIENT_CREDENTIAL_EXPIRES" in without["source"]


def test_certificate_signs_in_and_its_expiry_comes_from_the_registration(identity, env, monkeypatch, tmp_path):
    path = identity.add_certificate(env["AZURE_CLIENT_ID"], days(20), tmp_path)
    result = check(monkeypatch, AZURE_CLIENT_CERTIFICATE_PATH=str(path))
    assert result.exit_code == 0, result.output
    assert "certificate, expires" in result.output and "(20 days left; from app registration)" in result.output
    assert f"warning: the certificate of app {env['AZURE_CLIENT_ID']} expires on" in result.output
    assert any(r.json.get("client_assertion") == "***" for r in identity.requests if r.method == "POST")


def test_certificate_not_uploaded_is_invalid_credentials(identity, env, monkeypatch, tmp_path):
    other = IdentityEmulator(identity.tenant)  # a certificate the registration does not know
    path = other.add_certificate(env["AZURE_CLIENT_ID"], days(200), tmp_path)
    identity.application(env["AZURE_CLIENT_ID"])["keyCredentials"].clear()
    result = check(monkeypatch, AZURE_CLIENT_CERTIFICATE_PATH=str(path))
    assert result.exit_code == 1 and "INVALID_CREDENTIALS" in result.output
    assert "AADSTS700027" in result.output and "AZURE_CLIENT_CERTIFICATE_PATH" in result.output


def test_import_token_age_is_counted_from_first_sight(identity, env):
    secret = identity.add_secret(env["AZURE_CLIENT_ID"], days(300))
    settings = load_settings({**env, "AZURE_CLIENT_SECRET": secret})
    first = check_all(settings, now=NOW).credentials["import_token"]
    assert first["fingerprint"] == fingerprint(IMPORT_TOKEN) and IMPORT_TOKEN not in json.dumps(first)
    assert first["age_days"] == 0 and first["expires"] is None and first["warning"] is None
    later = check_all(settings, now=NOW + dt.timedelta(days=40)).credentials["import_token"]
    assert later["first_seen"] == first["first_seen"] and later["age_days"] == 40
    expiring = load_settings({**env, "AZURE_CLIENT_SECRET": secret,
                              "ASSETS_IMPORT_TOKEN_EXPIRES": days(10).date().isoformat()})
    report = check_all(expiring, now=NOW)
    assert report.credentials["import_token"]["days_left"] in (9, 10)
    assert any(w.startswith("the Assets import token expires on") for w in report.warnings)


def test_graph_emulator_serves_app_registrations_strictly(identity, env, graph_emulator):
    app = identity.application(env["AZURE_CLIENT_ID"])
    identity.add_secret(app["appId"], days(30))
    graph = graph_client(load_settings({**env, "GRAPH_ACCESS_TOKEN": "sandbox-graph-token"}))
    by_object_id = graph.get(f"applications/{app['id']}", {"$select": "appId,passwordCredentials"})
    assert set(by_object_id) == {"@odata.context", "appId", "passwordCredentials"}
    assert by_object_id["passwordCredentials"][0]["secretText"] is None
    assert len(by_object_id["passwordCredentials"][0]["hint"]) == 3
    with pytest.raises(Exception, match="Could not find a property named 'secret'"):
        graph.get(f"applications/{app['id']}", {"$select": "secret"})
    with pytest.raises(Exception, match="does not exist"):
        graph.get("applications(appId='00000000-0000-0000-0000-000000000000')")


# -- pure functions ---------------------------------------------------------------------------------------

def test_pick_password_credential_by_hint_earliest_first():
    creds = [{"hint": "abc", "endDateTime": "2030-01-01T00:00:00Z", "keyId": "late"},
             {"hint": "abc", "endDateTime": "2029-01-01T00:00:00.1234567Z", "keyId": "early"},
             {"hint": "xyz", "endDateTime": "2020-01-01T00:00:00Z", "keyId": "other"}]
    assert pick_password_credential(creds, "abcdef")["keyId"] == "early"
    assert pick_password_credential(creds, "qqqqq") is None


def test_pick_key_credential_accepts_base64_and_hex_thumbprints():
    thumb = bytes(range(20))
    for identifier in (base64.b64encode(thumb).decode(), thumb.hex().upper(),
                       base64.b64encode(thumb.hex().upper().encode()).decode()):
        assert pick_key_credential([{"customKeyIdentifier": identifier, "keyId": "k"}], thumb)["keyId"] == "k"
    assert pick_key_credential([{"customKeyIdentifier": base64.b64encode(b"x" * 20).decode()}], thumb) is None


def test_expiry_warning_from_30_days_ahead():
    assert expiry_warning("it", "renew", NOW + dt.timedelta(days=31), NOW) is None
    assert "in 29 days" in expiry_warning("it", "renew", NOW + dt.timedelta(days=29, hours=1), NOW)
    assert expiry_warning("it", "renew", NOW - dt.timedelta(hours=1), NOW).startswith("it expired on")


def test_expiry_settings_are_validated_with_a_clear_message():
    with pytest.raises(SettingsError) as error:
        load_settings({"AZURE_CLIENT_CREDENTIAL_EXPIRES": "next spring", "AZURE_AUTHORITY_HOST": "http://login.x"})
    assert "AZURE_CLIENT_CREDENTIAL_EXPIRES 'next spring' is not a date" in str(error.value)
    assert "AZURE_AUTHORITY_HOST" in str(error.value)


def _assert_secret_nowhere(secret: str, output: str, caplog, identity) -> None:
    assert secret not in output
    assert all(secret not in record.getMessage() for record in caplog.records if record.levelno >= logging.DEBUG)
    assert all(secret not in json.dumps(r.json) for r in identity.requests)


def test_status_reports_the_entra_side_and_the_expiry_warning(identity, env, monkeypatch, caplog):
    """`status` (and the status page, same data) says what `check` says: the Entra side's status first."""
    app = env["AZURE_CLIENT_ID"]
    secret = identity.add_secret(app, days(10))
    for name, value in {**env, "AZURE_CLIENT_SECRET": secret}.items():
        monkeypatch.setenv(name, value)
    result = CliRunner().invoke(main, ["status"])
    assert result.exit_code == 0, result.output
    assert "importer status: IDLE" in result.output and "warning: the client secret of app" in result.output
    data = json.loads(CliRunner().invoke(main, ["status", "--json"]).stdout)
    assert data["credentials"]["graph_credential"]["days_left"] == 10 and len(data["credentials"]["warnings"]) == 1
    identity.revoke(app, "Device.Read.All")
    data = json.loads(CliRunner().invoke(main, ["status", "--json"]).stdout)
    assert data["importer_status"] == "MISSING_PERMISSIONS" and "Device.Read.All" in data["message"]
    monkeypatch.setenv("AZURE_CLIENT_SECRET", "not-the-secret-value")
    data = json.loads(CliRunner().invoke(main, ["status", "--json"]).stdout)
    assert data["importer_status"] == "INVALID_CREDENTIALS" and "AADSTS7000215" in data["message"]
    _assert_secret_nowhere(secret, json.dumps(data), caplog, identity)
