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

    from shared.app import storage_credential

    base = {"AzureWebJobsStorage__accountName": "acct", "AZURE_TENANT_ID": "t", "AZURE_CLIENT_ID": "c",
            "AZURE_CLIENT_SECRET": "s"}
    in_azure = storage_credential(load_settings({**base, "AzureWebJobsStorage__credential": "managedidentity"}))
    assert isinstance(in_azure, ManagedIdentityCredential)
    elsewhere = storage_credential(load_settings(base))
    assert isinstance(elsewhere, DefaultAzureCredential)
    kinds = {type(c).__name__ for c in elsewhere.credentials}
    assert "EnvironmentCredential" not in kinds and "ManagedIdentityCredential" not in kinds


# --- numbers: finite, in range, written plainly (a typo never switches a safety net off) --------------------------

NUMERIC = {  # setting: (a valid value and what it reads as, the largest valid value)
    "FULL_SYNC_INTERVAL_HOURS": ("0.5", 0.5, "8760"),
    "JIRA_REQUESTS_PER_SECOND": ("2.5", 2.5, "1000"),
    "MAX_DEACTIVATION_PERCENT": ("12.5", 12.5, "100"),
    "MAX_DEACTIVATIONS": ("0", 0, "10000000"),
    "JIRA_LOOKUPS_PER_RUN": ("0", 0, "1000000"),
}
FIELDS = {"FULL_SYNC_INTERVAL_HOURS": "full_sync_interval_hours", "JIRA_REQUESTS_PER_SECOND": "jira_requests_per_second",
          "MAX_DEACTIVATION_PERCENT": "max_deactivation_percent", "MAX_DEACTIVATIONS": "max_deactivations",
          "JIRA_LOOKUPS_PER_RUN": "jira_lookups_per_run"}
JIRA = {"JIRA_SITE_URL": "https://example.atlassian.net", "JIRA_EMAIL": "a@example.com", "JIRA_API_TOKEN": "x"}


@pytest.mark.parametrize("name", sorted(NUMERIC))
@pytest.mark.parametrize("raw", ["nan", "NaN", "inf", "-inf", "Infinity", "1e3", "-1", " 5x", "5,0", "1_000", "ten",
                                 "²", "٣", "0x10", "+5", "9" * 400])
def test_a_numeric_setting_refuses_what_is_not_a_plain_number_in_range(name, raw):
    """nan passed float() and every comparison with it is False: the timer never reconciled again. '²' passed
    str.isdigit() and then crashed int(). Each is one problem that names the setting; the value is shortened."""
    with pytest.raises(SettingsError) as info:
        load_settings({**JIRA, name: raw})
    [problem] = info.value.problems
    assert problem.startswith(f"{name} '") and len(problem) < 160


@pytest.mark.parametrize("name", sorted(NUMERIC))
def test_a_numeric_setting_takes_its_whole_range_and_refuses_beyond_it(name):
    valid, parsed, largest = NUMERIC[name]
    assert getattr(load_settings({**JIRA, name: valid}), FIELDS[name]) == parsed
    assert getattr(load_settings({**JIRA, name: largest}), FIELDS[name]) == float(largest)
    for beyond in (str(int(largest) + 1), largest + "0"):
        with pytest.raises(SettingsError, match=f"^invalid settings: {name} '{beyond}' must be .* (at most|to) "
                                                f"{int(largest):,}$"):
            load_settings({**JIRA, name: beyond})


@pytest.mark.parametrize("name", ["FULL_SYNC_INTERVAL_HOURS", "JIRA_REQUESTS_PER_SECOND", "MAX_DEACTIVATION_PERCENT"])
def test_a_rate_or_share_must_be_greater_than_zero(name):
    for zero in ("0", "0.0", ".0", "-0"):
        with pytest.raises(SettingsError, match=f"{name} .* greater than 0"):
            load_settings({**JIRA, name: zero})


def test_whole_numbers_take_no_fraction_or_exponent():
    for raw in ("5.0", "5.", "1e3", "1E3"):
        with pytest.raises(SettingsError, match="MAX_DEACTIVATIONS .* whole number of objects from 0 to 10,000,000"):
            load_settings({"MAX_DEACTIVATIONS": raw})
    assert load_settings({"MAX_DEACTIVATIONS": "007"}).max_deactivations == 7


def test_max_deactivation_percent_defaults_to_the_spec_and_100_turns_it_off():
    assert load_settings({}).max_deactivation_percent == 30.0
    assert load_settings({"MAX_DEACTIVATION_PERCENT": "100"}).max_deactivation_percent == 100.0


def test_bad_numbers_are_reported_together_with_the_other_problems():
    with pytest.raises(SettingsError) as info:
        load_settings({"FULL_SYNC_INTERVAL_HOURS": "nan", "JIRA_REQUESTS_PER_SECOND": "inf",
                       "MAX_DEACTIVATION_PERCENT": "0", "MAX_DEACTIVATIONS": "²", "SYNC_QUEUE_NAME": "Bad_Name"})
    assert [p.split(" ", 1)[0] for p in info.value.problems] == [
        "SYNC_QUEUE_NAME", "FULL_SYNC_INTERVAL_HOURS", "MAX_DEACTIVATIONS", "MAX_DEACTIVATION_PERCENT",
        "JIRA_REQUESTS_PER_SECOND"]


def test_with_a_webhook_the_tenant_must_be_given_by_its_id():
    """Notifications name their tenant by id only (shared.produce.notifications compares it with AZURE_TENANT_ID), so a
    domain name, which azure-identity would take, would refuse every notification."""
    webhook = {"WEBHOOK_URL": "https://func.example.net/api/graph-webhook?code=k", "WEBHOOK_CLIENT_STATE": "s"}
    with pytest.raises(SettingsError, match="AZURE_TENANT_ID 'contoso.onmicrosoft.com' must be the tenant's id"):
        load_settings({**webhook, "AZURE_TENANT_ID": "contoso.onmicrosoft.com"})
    tenant = "E1AD7F5C-F009-4BBC-9D22-129EB7C92C5E"
    assert load_settings({**webhook, "AZURE_TENANT_ID": tenant}).tenant_id == tenant
    assert load_settings({"AZURE_TENANT_ID": "contoso.onmicrosoft.com"}).tenant_id == "contoso.onmicrosoft.com"
