"""Settings: every problem reported at once, secrets never shown."""
import pytest

from shared.errors import SettingsError
from shared.settings import Secret, load_settings


def test_defaults_follow_the_spec():
    s = load_settings({})
    assert s.graph_base_url == "https://graph.microsoft.com/v1.0"
    assert s.assets_api_url == "https://api.atlassian.com"
    assert s.queue_name == "entra-assets-changes"
    assert s.timer_schedule == "0 */15 * * * *"
    assert s.full_sync_interval_hours == 24.0
    assert not s.uses_azure_storage
    assert s.graph_auth == "managed-identity"


def test_every_problem_is_reported_at_once():
    with pytest.raises(SettingsError) as info:
        load_settings({"AZURE_CLIENT_SECRET": "x", "GRAPH_BASE_URL": "ftp://graph", "SYNC_QUEUE_NAME": "Bad_Name",
                       "TIMER_SYNC_SCHEDULE": "*/5 * * * *", "FULL_SYNC_INTERVAL_HOURS": "-3",
                       "ASSETS_API_URL": "http://api.example.com"})
    text = str(info.value)
    for name in ("AZURE_TENANT_ID", "GRAPH_BASE_URL", "SYNC_QUEUE_NAME", "TIMER_SYNC_SCHEDULE",
                 "FULL_SYNC_INTERVAL_HOURS", "ASSETS_API_URL"):
        assert name in text
    assert len(info.value.problems) == 6


def test_secret_and_certificate_together_is_an_error(tmp_path):
    cert = tmp_path / "c.pem"
    cert.write_text("x")
    with pytest.raises(SettingsError, match="keep only one"):
        load_settings({"AZURE_TENANT_ID": "t", "AZURE_CLIENT_ID": "c", "AZURE_CLIENT_SECRET": "s",
                       "AZURE_CLIENT_CERTIFICATE_PATH": str(cert)})


def test_secrets_are_masked_everywhere():
    s = load_settings({"ASSETS_IMPORT_TOKEN": "ATCTT3xSECRETVALUE", "GRAPH_ACCESS_TOKEN": "eyJSECRET",
                       "AzureWebJobsStorage": "AccountKey=SECRETKEY"})
    for rendered in (repr(s), str(s), f"{s.assets_import_token}", str(s.describe())):
        assert "SECRET" not in rendered
    assert s.assets_import_token.reveal() == "ATCTT3xSECRETVALUE"
    assert isinstance(s.graph_access_token, Secret)
    assert s.uses_azure_storage and s.graph_auth == "token"


def test_loopback_http_is_allowed_for_emulators():
    s = load_settings({"GRAPH_BASE_URL": "http://127.0.0.1:8765/v1.0/", "ASSETS_API_URL": "http://localhost:1"})
    assert s.graph_base_url == "http://127.0.0.1:8765/v1.0"


def test_storage_by_identity_never_signs_in_as_the_graph_app_registration():
    """With a client secret exported for Graph, storage must still use the app's managed identity (Azure) or
    the admin's own login: the app registration has no storage roles (infra/main.bicep)."""
    from azure.identity import DefaultAzureCredential, ManagedIdentityCredential

    from shared.runtime import storage_credential

    base = {"AzureWebJobsStorage__accountName": "acct", "AZURE_TENANT_ID": "t", "AZURE_CLIENT_ID": "c",
            "AZURE_CLIENT_SECRET": "s"}
    in_azure = storage_credential(load_settings({**base, "AzureWebJobsStorage__credential": "managedidentity"}))
    assert isinstance(in_azure, ManagedIdentityCredential)
    elsewhere = storage_credential(load_settings(base))
    assert isinstance(elsewhere, DefaultAzureCredential)
    kinds = {type(c).__name__ for c in elsewhere.credentials}
    assert "EnvironmentCredential" not in kinds and "ManagedIdentityCredential" not in kinds
