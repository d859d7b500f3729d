"""Settings (SPEC §2): one frozen value built once from the environment.

``load_settings`` reads every variable, checks all of them and raises one ``SettingsError`` that lists every
problem at once, naming each setting. Secrets are held in ``Secret`` so that they never show up in a repr, a
log line, an error or ``status`` output.
"""
from __future__ import annotations

import datetime as dt
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from urllib.parse import urlsplit

from croniter import croniter

from shared.errors import SettingsError

DEFAULT_GRAPH_BASE_URL = "https://graph.microsoft.com/v1.0"
DEFAULT_ASSETS_API_URL = "https://api.atlassian.com"
DEFAULT_RESOURCE_MANAGER_URL = "https://management.azure.com"
DELIVERIES = ("webhook", "eventgrid")   # NOTIFICATION_DELIVERY
# Azure naming rules (https://learn.microsoft.com/azure/azure-resource-manager/management/resource-name-rules):
# resource groups 1-90 of letters, digits, -_.() not ending in "."; Event Grid partner topics 3-50 of letters,
# digits and "-"; regions are names like "westeurope" (never a display name such as "West Europe", which the
# EventGrid: URL does not take: https://learn.microsoft.com/azure/event-grid/subscribe-to-graph-api-events).
_RESOURCE_GROUP = re.compile(r"^[-\w.()]{0,89}[-\w()]$")
_PARTNER_TOPIC = re.compile(r"^[A-Za-z0-9-]{3,50}$")
_REGION = re.compile(r"^[a-z][a-z0-9]{1,40}$")
_USER_ASSIGNED_IDENTITY = re.compile(r"^/subscriptions/[^/]+/resourceGroups/[^/]+/providers/"
                                     r"Microsoft\.ManagedIdentity/userAssignedIdentities/[^/]+$", re.IGNORECASE)
# https://learn.microsoft.com/rest/api/storageservices/naming-queues-and-metadata
_QUEUE_NAME = re.compile(r"^(?!.*--)[a-z0-9][a-z0-9-]{1,61}[a-z0-9]$")
_SCHEMA_KEY = re.compile(r"^[A-Z][A-Z0-9]{1,9}$")
_LOOPBACK = {"127.0.0.1", "localhost", "::1"}
GUID = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")
# Object types read from a Graph resource (SPEC §4); the derived ones (Department ... Country) come with User.
SYNCABLE_TYPES = ("user", "group", "device", "application", "license", "managed_device")
_TYPE_NAMES = {"user": "user", "users": "user", "group": "group", "groups": "group", "device": "device",
               "devices": "device", "application": "application", "applications": "application",
               "serviceprincipal": "application", "serviceprincipals": "application", "license": "license",
               "licenses": "license", "licence": "license", "licences": "license", "subscribedsku": "license",
               "subscribedskus": "license", "manageddevice": "managed_device", "manageddevices": "managed_device",
               "intune": "managed_device", "intunedevice": "managed_device", "intunedevices": "managed_device"}


class Secret(str):
    """A string that hides itself in ``repr``/``format`` output; use ``.reveal()`` where it is needed."""

    def __repr__(self) -> str:
        return "Secret('***')"

    def __str__(self) -> str:
        return "***"

    def __format__(self, spec: str) -> str:
        return "***"

    def reveal(self) -> str:
        """The real value, for the one place that sends it (an Authorization header, a credential)."""
        return str.__str__(self)


@dataclass(frozen=True)
class Settings:
    """Every setting of SPEC §2 that this version uses, parsed and checked."""

    tenant_id: str | None = None
    client_id: str | None = None
    client_secret: Secret | None = None
    client_certificate_path: Path | None = None
    client_certificate_password: Secret | None = None
    authority_host: str | None = None                   # AZURE_AUTHORITY_HOST (azure-identity's own variable)
    client_credential_expires: dt.datetime | None = None  # AZURE_CLIENT_CREDENTIAL_EXPIRES: fallback expiry date
    import_token_expires: dt.datetime | None = None       # ASSETS_IMPORT_TOKEN_EXPIRES
    graph_base_url: str = DEFAULT_GRAPH_BASE_URL
    graph_access_token: Secret | None = None
    assets_import_token: Secret | None = None
    assets_api_url: str = DEFAULT_ASSETS_API_URL
    storage_connection_string: Secret | None = None
    storage_account_name: str | None = None
    storage_credential: str | None = None   # AzureWebJobsStorage__credential: "managedidentity" in Azure
    storage_client_id: str | None = None    # AzureWebJobsStorage__clientId: a user-assigned identity
    home: Path = field(default_factory=lambda: Path(".entra-assets"))
    queue_name: str = "entra-assets-changes"
    run_queue_name: str = "entra-assets-runs"   # RUN_QUEUE_NAME: a segmented full run's continuations
    segment_seconds: float = 300.0              # SEGMENT_SECONDS: how long a full-run segment reads, and a worker invocation sends
    timer_schedule: str = "0 */15 * * * *"
    full_sync_interval_hours: float = 24.0
    schema_key: str = "ENTRA"
    object_types: tuple[str, ...] = SYNCABLE_TYPES
    user_filter: str | None = None
    group_filter: str | None = None
    scope_group_id: str | None = None
    max_deactivations: int = 500
    max_deactivation_percent: float = 30.0  # SPEC §2; 100 = off (no type can lose more than all of its objects)
    assets_object_limit: int = 50_000       # ASSETS_OBJECT_LIMIT: the site's Assets object allowance (SPEC §2)
    repair_interval_days: int = 7           # REPAIR_INTERVAL_DAYS: how often the timer's full run is a repair; 0 never
    mapping_file: Path | None = None
    webhook_url: str | None = None
    webhook_client_state: Secret | None = None          # checked on webhook POSTs and Event Grid events alike
    notification_delivery: str = "webhook"              # NOTIFICATION_DELIVERY: webhook | eventgrid
    eventgrid_partner_topic: str | None = None          # EVENTGRID_PARTNER_TOPIC and where it lives:
    eventgrid_subscription_id: str | None = None        # EVENTGRID_SUBSCRIPTION_ID
    eventgrid_resource_group: str | None = None         # EVENTGRID_RESOURCE_GROUP
    eventgrid_location: str | None = None               # EVENTGRID_LOCATION
    eventgrid_delivery_identity: str | None = None      # EVENTGRID_DELIVERY_IDENTITY: resource id of the
    # user-assigned identity Event Grid delivers to the queue with (setup then creates the event subscription)
    resource_manager_url: str = DEFAULT_RESOURCE_MANAGER_URL  # AZURE_RESOURCE_MANAGER_URL (national clouds, emulators)
    management_access_token: Secret | None = None       # AZURE_MANAGEMENT_TOKEN: a fixed ARM token (sandboxes)
    jira_site_url: str | None = None          # SPEC §5: all three JIRA_* or none (linking off)
    jira_email: str | None = None
    jira_api_token: Secret | None = None
    jira_lookups_per_run: int = 5000
    jira_requests_per_second: float = 10.0

    @property
    def jira_enabled(self) -> bool:
        """True when Jira user linking is configured (JIRA_SITE_URL, JIRA_EMAIL and JIRA_API_TOKEN)."""
        return bool(self.jira_site_url and self.jira_email and self.jira_api_token)

    @property
    def event_grid(self) -> bool:
        """True when Graph delivers change notifications through Event Grid (NOTIFICATION_DELIVERY=eventgrid)."""
        return self.notification_delivery == "eventgrid"

    @property
    def notification_url(self) -> str | None:
        """Where Graph is to deliver change and lifecycle notifications: WEBHOOK_URL, or with Event Grid the
        ``EventGrid:`` URL of the partner topic (https://learn.microsoft.com/azure/event-grid/
        subscribe-to-graph-api-events); None when neither is configured (no subscriptions)."""
        if not self.event_grid:
            return self.webhook_url
        return (f"EventGrid:?azuresubscriptionid={self.eventgrid_subscription_id}"
                f"&resourcegroup={self.eventgrid_resource_group}&partnertopic={self.eventgrid_partner_topic}"
                f"&location={self.eventgrid_location}")

    @property
    def uses_azure_storage(self) -> bool:
        """True when a storage account is configured (the Functions app); else the embedded local store."""
        return bool(self.storage_connection_string or self.storage_account_name)

    @property
    def graph_auth(self) -> str:
        """Which Graph credential is in use: token, secret, certificate or managed-identity."""
        if self.graph_access_token:
            return "token"
        if self.client_secret:
            return "secret"
        if self.client_certificate_path:
            return "certificate"
        return "managed-identity"

    def describe(self) -> dict[str, str]:
        """Every setting for display, secrets masked (for ``check``/``status``)."""
        out = {}
        for f in fields(self):
            value = getattr(self, f.name)
            out[f.name] = "" if value is None else ("***" if isinstance(value, Secret) else str(value))
        return out


def load_settings(env: Mapping[str, str]) -> Settings:
    """Build ``Settings`` from ``env`` (normally ``os.environ``).

    Raises ``SettingsError`` listing every problem found (not only the first). Empty values count as unset.
    """
    get = lambda name: (env.get(name) or "").strip() or None
    problems: list[str] = []
    values: dict = {}

    values["tenant_id"], values["client_id"] = get("AZURE_TENANT_ID"), get("AZURE_CLIENT_ID")
    secret, cert = get("AZURE_CLIENT_SECRET"), get("AZURE_CLIENT_CERTIFICATE_PATH")
    if secret and cert:
        problems.append("AZURE_CLIENT_SECRET and AZURE_CLIENT_CERTIFICATE_PATH are both set: keep only one")
    if (secret or cert) and not (values["tenant_id"] and values["client_id"]):
        problems.append("AZURE_TENANT_ID and AZURE_CLIENT_ID are required with a client secret or certificate")
    if cert and not Path(cert).is_file():
        problems.append(f"AZURE_CLIENT_CERTIFICATE_PATH: no file at {cert}")
    values["client_secret"] = Secret(secret) if secret else None
    values["client_certificate_path"] = Path(cert) if cert else None
    password = get("AZURE_CLIENT_CERTIFICATE_PASSWORD")
    values["client_certificate_password"] = Secret(password) if password else None
    _credentials(get, values, problems)

    values["graph_base_url"] = _url(get("GRAPH_BASE_URL") or DEFAULT_GRAPH_BASE_URL, "GRAPH_BASE_URL", problems)
    values["assets_api_url"] = _url(get("ASSETS_API_URL") or DEFAULT_ASSETS_API_URL, "ASSETS_API_URL", problems)
    for name, key in (("GRAPH_ACCESS_TOKEN", "graph_access_token"), ("ASSETS_IMPORT_TOKEN", "assets_import_token"),
                      ("AzureWebJobsStorage", "storage_connection_string")):
        raw = get(name)
        values[key] = Secret(raw) if raw else None
    values["storage_account_name"] = get("AzureWebJobsStorage__accountName")
    values["storage_credential"] = get("AzureWebJobsStorage__credential")
    values["storage_client_id"] = get("AzureWebJobsStorage__clientId")
    values["home"] = Path(get("ENTRA_ASSETS_HOME") or ".entra-assets")

    queue = get("SYNC_QUEUE_NAME") or "entra-assets-changes"
    if not _QUEUE_NAME.match(queue):
        problems.append(f"SYNC_QUEUE_NAME '{queue}' is not a valid queue name "
                        "(3-63 lowercase letters, digits and single hyphens)")
    values["queue_name"] = queue
    runs = get("RUN_QUEUE_NAME") or "entra-assets-runs"
    if not _QUEUE_NAME.match(runs) or runs == queue:
        problems.append(f"RUN_QUEUE_NAME '{runs}' must be a valid queue name (3-63 lowercase letters, digits and "
                        "single hyphens) other than SYNC_QUEUE_NAME")
    values["run_queue_name"] = runs
    # A segment and the plan after it must fit host.json's functionTimeout (01:00:00) with room to spare.
    values["segment_seconds"] = _number(get("SEGMENT_SECONDS"), 300.0, "SEGMENT_SECONDS", "seconds", 1800, problems)
    schedule = get("TIMER_SYNC_SCHEDULE") or "0 */15 * * * *"
    if len(schedule.split()) != 6 or not croniter.is_valid(schedule, second_at_beginning=True):
        problems.append(f"TIMER_SYNC_SCHEDULE '{schedule}' must be a 6-field NCRONTAB "
                        "expression ({second} {minute} {hour} {day} {month} {day-of-week})")
    values["timer_schedule"] = schedule
    # At most a year: the full run is the safety net for whatever notifications and catch-ups missed (and nan,
    # inf or a typo like 87600 would switch it off without a word).
    values["full_sync_interval_hours"] = _number(get("FULL_SYNC_INTERVAL_HOURS"), 24.0, "FULL_SYNC_INTERVAL_HOURS",
                                                 "hours", 8760, problems)
    key = get("ASSETS_SCHEMA_KEY") or "ENTRA"
    if not _SCHEMA_KEY.match(key):
        problems.append(f"ASSETS_SCHEMA_KEY '{key}' must be 2-10 upper-case letters or digits, starting with a letter")
    values["schema_key"] = key
    _scope(get, values, problems)

    if problems:
        raise SettingsError(problems)
    return Settings(**values)


def _scope(get, values: dict, problems: list[str]) -> None:
    """SYNC_OBJECT_TYPES, the OData filters, SCOPE_GROUP_ID, MAX_DEACTIVATIONS and MAPPING_FILE."""
    raw_types = get("SYNC_OBJECT_TYPES")
    if raw_types:
        names = [n.strip() for n in raw_types.split(",") if n.strip()]
        unknown = [n for n in names if n.casefold().replace(" ", "") not in _TYPE_NAMES]
        if unknown or not names:
            problems.append(f"SYNC_OBJECT_TYPES: unknown object type(s) {', '.join(map(repr, unknown)) or '(none)'}; "
                            "use a comma list of User, Group, Device, Application, License, Managed Device (derived types come "
                            "with User)")
        chosen = {_TYPE_NAMES.get(n.casefold().replace(" ", "")) for n in names}
        values["object_types"] = tuple(t for t in SYNCABLE_TYPES if t in chosen)
    for name, key in (("USER_FILTER", "user_filter"), ("GROUP_FILTER", "group_filter")):
        value = get(name)
        if value and len(value) > 1500:  # URLs of advanced queries are limited to 2,048 characters (graph.md §1.4)
            problems.append(f"{name} is {len(value)} characters long; Graph accepts at most about 1,500 in a URL")
        values[key] = value
    group = get("SCOPE_GROUP_ID")
    if group and not GUID.match(group):
        problems.append(f"SCOPE_GROUP_ID '{group}' is not a group object id (a GUID such as "
                        "0f1e2d3c-4b5a-6978-8695-a4b3c2d1e0f9)")
    values["scope_group_id"] = group
    # More than any Entra directory holds: a bigger number is a typo (one run: --allow-mass-deactivation).
    values["max_deactivations"] = _whole(get("MAX_DEACTIVATIONS"), 500, "MAX_DEACTIVATIONS", "objects",
                                         10_000_000, problems)
    # A share of one type's objects: 100 turns the relative guard off; 0 is refused rather than guessed at
    # (SPEC §2 does not say whether it means "off" or "hold every run").
    values["max_deactivation_percent"] = _number(get("MAX_DEACTIVATION_PERCENT"), 30.0, "MAX_DEACTIVATION_PERCENT",
                                                 "percent", 100, problems)
    # Premium and Enterprise include 50,000 objects; sites that bought more set theirs (SPEC §2). 0 would hold
    # every run that creates anything, so it is refused rather than taken as "no limit".
    limit = _whole(get("ASSETS_OBJECT_LIMIT"), 50_000, "ASSETS_OBJECT_LIMIT", "objects", 1_000_000_000, problems)
    if limit == 0:
        problems.append("ASSETS_OBJECT_LIMIT must be at least 1: the number of objects the Assets site may hold "
                        "(50,000 with Premium or Enterprise, more with the extra-objects add-on)")
    values["assets_object_limit"] = limit or 50_000
    values["repair_interval_days"] = _whole(get("REPAIR_INTERVAL_DAYS"), 7, "REPAIR_INTERVAL_DAYS", "days (0: never)",
                                            3650, problems)
    mapping = get("MAPPING_FILE")
    if mapping and not Path(mapping).is_file():
        problems.append(f"MAPPING_FILE: no file at {mapping}")
    values["mapping_file"] = Path(mapping) if mapping else None
    _webhook(get, values, problems)
    _event_grid(get, values, problems)
    _jira(get, values, problems)


def _jira(get, values: dict, problems: list[str]) -> None:
    """JIRA_SITE_URL, JIRA_EMAIL, JIRA_API_TOKEN (all or none) and the lookup bounds (SPEC §5, shared.clients.jira)."""
    names = ("JIRA_SITE_URL", "JIRA_EMAIL", "JIRA_API_TOKEN")
    site, email, token = (get(n) for n in names)
    missing = [n for n, v in zip(names, (site, email, token), strict=True) if not v]
    if len(missing) < 3:
        if missing:
            problems.append(f"Jira user linking needs JIRA_SITE_URL, JIRA_EMAIL and JIRA_API_TOKEN together; "
                            f"missing: {', '.join(missing)} (or unset all three to turn linking off)")
        if site:
            parts = urlsplit(site)
            if parts.scheme != "https" and not (parts.scheme == "http" and parts.hostname in _LOOPBACK):
                problems.append("JIRA_SITE_URL must be the https URL of the Jira site, e.g. "
                                "https://example.atlassian.net (plain http only on loopback, for the sandbox)")
            elif parts.path.strip("/") or parts.query:
                problems.append("JIRA_SITE_URL must be the site's base URL only, e.g. https://example.atlassian.net")
        if email and not re.match(r"^[^@\s]+@[^@\s]+\.[^@\s]+$", email):
            problems.append("JIRA_EMAIL must be the e-mail address of the Atlassian account that owns JIRA_API_TOKEN")
    values["jira_site_url"] = site.rstrip("/") if site else None
    values["jira_email"] = email
    values["jira_api_token"] = Secret(token) if token else None
    # Jira Cloud allows a site about 1,000 requests a minute (DESIGN.md): a million searches is half a day of
    # them, and more than 1,000 a second is no pace at all (the sandbox's emulated site runs at 500).
    values["jira_lookups_per_run"] = _whole(get("JIRA_LOOKUPS_PER_RUN"), 5000, "JIRA_LOOKUPS_PER_RUN",
                                            "Jira user searches", 1_000_000, problems)
    values["jira_requests_per_second"] = _number(get("JIRA_REQUESTS_PER_SECOND"), 10.0, "JIRA_REQUESTS_PER_SECOND",
                                                 "requests a second", 1000, problems)


def _webhook(get, values: dict, problems: list[str]) -> None:
    """WEBHOOK_URL (public https URL of graph_webhook) and WEBHOOK_CLIENT_STATE (required with it)."""
    url, state = get("WEBHOOK_URL"), get("WEBHOOK_CLIENT_STATE")
    if url:
        parts = urlsplit(url)
        if parts.scheme != "https" and not (parts.scheme == "http" and parts.hostname in _LOOPBACK):
            problems.append("WEBHOOK_URL must be an https URL that Microsoft Graph can reach "
                            "(plain http only on loopback, for the sandbox)")
        if not state:
            problems.append("WEBHOOK_CLIENT_STATE is required with WEBHOOK_URL: a random secret of up to 128 "
                            "characters that Graph echoes in every notification")
    # https://learn.microsoft.com/graph/api/resources/subscription: clientState is at most 128 characters
    if state and len(state) > 128:
        problems.append(f"WEBHOOK_CLIENT_STATE is {len(state)} characters long; Graph accepts at most 128")
    tenant = values.get("tenant_id")
    if url and tenant and not GUID.match(tenant):  # azure-identity also takes a domain name; notifications do not
        problems.append(f"AZURE_TENANT_ID '{_shown(tenant)}' must be the tenant's id (a GUID: Entra > Overview > "
                        "Tenant ID) when WEBHOOK_URL is set: each change notification names its tenant by id, "
                        "and the webhook refuses every other")
    values["webhook_url"] = url
    values["webhook_client_state"] = Secret(state) if state else None


def _event_grid(get, values: dict, problems: list[str]) -> None:
    """NOTIFICATION_DELIVERY and, with ``eventgrid``, the partner topic (EVENTGRID_*), the client state and
    how the management API is reached (AZURE_RESOURCE_MANAGER_URL, AZURE_MANAGEMENT_TOKEN)."""
    delivery = (get("NOTIFICATION_DELIVERY") or "webhook").casefold()
    if delivery not in DELIVERIES:
        problems.append(f"NOTIFICATION_DELIVERY '{_shown(delivery)}' must be webhook or eventgrid")
        delivery = "webhook"
    values["notification_delivery"] = delivery
    names = {"EVENTGRID_PARTNER_TOPIC": (_PARTNER_TOPIC, "3-50 letters, digits and hyphens"),
             "EVENTGRID_SUBSCRIPTION_ID": (GUID, "the Azure subscription's id (a GUID)"),
             "EVENTGRID_RESOURCE_GROUP": (_RESOURCE_GROUP, "a resource group name"),
             "EVENTGRID_LOCATION": (_REGION, "a region name such as westeurope (az account list-locations), "
                                             + "not a display name")}
    for name, (pattern, what) in names.items():
        value = get(name)
        values[name.lower()] = value
        if delivery == "eventgrid" and not value:
            problems.append(f"{name} is required with NOTIFICATION_DELIVERY=eventgrid: {what}")
        elif value and not pattern.match(value):
            problems.append(f"{name} '{_shown(value)}' is not valid: {what}")
    identity = get("EVENTGRID_DELIVERY_IDENTITY")
    if identity and not _USER_ASSIGNED_IDENTITY.match(identity):
        problems.append(f"EVENTGRID_DELIVERY_IDENTITY '{_shown(identity, 60)}' must be the resource id of a "
                        "user-assigned identity: /subscriptions/<id>/resourceGroups/<group>/providers/"
                        "Microsoft.ManagedIdentity/userAssignedIdentities/<name> (the template's output "
                        "eventGridDeliveryIdentityId)")
    values["eventgrid_delivery_identity"] = identity
    if delivery == "eventgrid":
        if values.get("webhook_url"):
            problems.append("WEBHOOK_URL is set but NOTIFICATION_DELIVERY=eventgrid: Graph delivers to Event Grid "
                            "then, so unset WEBHOOK_URL (or set NOTIFICATION_DELIVERY=webhook)")
        if not values.get("webhook_client_state"):
            problems.append("WEBHOOK_CLIENT_STATE is required with NOTIFICATION_DELIVERY=eventgrid: Graph puts it "
                            "in every event and the worker refuses events without it")
        tenant = values.get("tenant_id")
        if not tenant or not GUID.match(tenant):
            problems.append("AZURE_TENANT_ID must be the tenant's id (a GUID) with NOTIFICATION_DELIVERY=eventgrid: "
                            "each event names its tenant by id, and the worker refuses every other")
    values["resource_manager_url"] = _url(get("AZURE_RESOURCE_MANAGER_URL") or DEFAULT_RESOURCE_MANAGER_URL,
                                          "AZURE_RESOURCE_MANAGER_URL", problems)
    token = get("AZURE_MANAGEMENT_TOKEN")
    values["management_access_token"] = Secret(token) if token else None


def _credentials(get, values: dict, problems: list[str]) -> None:
    """AZURE_AUTHORITY_HOST (sign-in authority, https) and the optional expiry dates of the credentials."""
    host = get("AZURE_AUTHORITY_HOST")
    if host and "://" not in host:
        host = f"https://{host}"  # azure-identity accepts a bare host name and means https
    if host and (urlsplit(host).scheme != "https" or not urlsplit(host).hostname):
        problems.append(f"AZURE_AUTHORITY_HOST '{host}' must be an https authority such as "
                        "https://login.microsoftonline.us (Microsoft's sign-in only speaks TLS)")
    values["authority_host"] = host.rstrip("/") if host else None
    hints = {"AZURE_CLIENT_CREDENTIAL_EXPIRES": "the client secret's or certificate's 'Expires' date from Entra > "
                                                "App registrations > <app> > Certificates & secrets",
             "ASSETS_IMPORT_TOKEN_EXPIRES": "the date by which the import token must be replaced"}
    for name, key in (("AZURE_CLIENT_CREDENTIAL_EXPIRES", "client_credential_expires"),
                      ("ASSETS_IMPORT_TOKEN_EXPIRES", "import_token_expires")):
        raw = get(name)
        values[key] = parse_utc(raw)
        if raw and values[key] is None:
            problems.append(f"{name} '{raw}' is not a date: give {hints[name]} as YYYY-MM-DD")


def _url(value: str, name: str, problems: list[str]) -> str:
    """Check an API base URL: https, or http only on loopback (emulators). Returns it without trailing '/'."""
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        problems.append(f"{name} '{value}' is not an http(s) URL")
    elif parts.scheme == "http" and parts.hostname not in _LOOPBACK:
        problems.append(f"{name} must use https (plain http is only allowed on loopback, for emulators)")
    return value.rstrip("/")


# ASCII digits only: "²".isdigit() is True and int() refuses it; no sign, exponent, separator or space.
_WHOLE = re.compile(r"[0-9]{1,12}")
# A plain decimal ("24", "0.5", ".5"): no sign, exponent, "nan" or "inf", which float() would all take.
_DECIMAL = re.compile(r"[0-9]{1,12}(?:\.[0-9]{0,12})?|\.[0-9]{1,12}")


def _whole(raw: str | None, default: int, name: str, unit: str, most: int, problems: list[str]) -> int:
    """``raw`` as a whole number from 0 to ``most``; ``default`` when unset. Else a problem naming ``name``."""
    if raw is None:
        return default
    if _WHOLE.fullmatch(raw) and int(raw) <= most:
        return int(raw)
    problems.append(f"{name} '{_shown(raw)}' must be a whole number of {unit} from 0 to {most:,}")
    return default


def _number(raw: str | None, default: float, name: str, unit: str, most: float, problems: list[str]) -> float:
    """``raw`` as a finite number greater than 0 and at most ``most``; ``default`` when unset. Else a problem
    naming ``name``."""
    if raw is None:
        return default
    value = float(raw) if _DECIMAL.fullmatch(raw) else math.nan
    if 0 < value <= most:  # never true for nan
        return value
    problems.append(f"{name} '{_shown(raw)}' must be a number of {unit} greater than 0 and at most {most:,g}")
    return default


def _shown(raw: str, most: int = 40) -> str:
    """``raw`` shortened for a message (a pasted blob must not flood the one-line error)."""
    return raw if len(raw) <= most else raw[:most - 1] + "…"


def parse_utc(value: str | None) -> dt.datetime | None:
    """An ISO 8601 date or time ("2027-01-31", Graph's "2026-01-02T03:04:05.1234567Z") as an aware UTC
    datetime (no zone: UTC); None when absent or not a date."""
    if not value:
        return None
    try:
        moment = dt.datetime.fromisoformat(value)
    except ValueError:
        return None
    return moment.replace(tzinfo=dt.UTC) if moment.tzinfo is None else moment.astimezone(dt.UTC)
