"""Importer status (SPEC §3) for ``check`` and ``status``, and everything ``status`` shows.

The importer status is the one word an Assets admin knows from other importers: IDLE, RUNNING, DISABLED,
MISSING_MAPPING (the import source), INVALID_TOKEN, NO_TOKEN (the import token), INVALID_CREDENTIALS,
MISSING_PERMISSIONS (the Entra side). Errors of the remote APIs become a status and a message here, never a
traceback; only invalid settings raise.
"""
from __future__ import annotations

import datetime as dt
import time
from dataclasses import dataclass, field

from shared.admin.credential_expiry import credential_report, describe
from shared.admin.credential_expiry import warnings as credential_warnings
from shared.admin.event_grid import event_grid_status
from shared.app import assets_client, graph_client, open_backend
from shared.clients.assets import CONFIG_STATUSES
from shared.clients.graph import GraphClient
from shared.deliver import handoff
from shared.errors import EntraAssetsError, GraphPermissionError, RemoteError
from shared.jira_links import check_linking, linked_count, unmatched_ids
from shared.produce.plan import ALLOWANCE_WARNING, object_types_for
from shared.produce.segments import load_cursor
from shared.produce.subscriptions import stored_subscriptions
from shared.settings import Settings
from shared.store import history
from shared.store.ports import StateStore


@dataclass
class CheckReport:
    status: str = "IDLE"
    ready: bool = True
    message: str = ""                                   # what to do about ``status`` when it is not ready
    lines: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)   # credential expiry warnings (also in ``lines``)
    credentials: dict = field(default_factory=dict)     # shared.admin.credential_expiry.credential_report
    jira: str | None = None                             # why Jira linking cannot work (JIRA_* set), else None
    event_grid: dict | None = None                      # NOTIFICATION_DELIVERY=eventgrid: EventGridReport.as_dict


def _assets_status(settings: Settings) -> tuple[str, str]:
    """(status, message) of the import source."""
    try:
        status = assets_client(settings).config_status()
    except EntraAssetsError as error:
        return error.status or "ERROR", str(error)
    hint = {"DISABLED": "enable the import in Assets (Schema configuration > Import)",
            "MISSING_MAPPING": "run `entra-assets setup`"}.get(status, "")
    return status, hint


_RESOURCES = {"user": "users", "group": "groups", "device": "devices", "application": "servicePrincipals",
              "license": "subscribedSkus"}
# Reads a tenant may not offer (SPEC §6: optional permissions; Intune and Entra ID P1/P2 are licences of their
# own): a refusal is reported, and the rest syncs - the check stays ready.
_OPTIONAL = {"managed_device": ("Managed Device is skipped", "deviceManagement/managedDevices",
                                {"$select": "id", "$top": "1"}),
             "sign_in": ("Last Sign-In is left empty", "users", {"$select": "id,signInActivity", "$top": "1"})}


def optional_reads(graph: GraphClient, settings: Settings) -> list[str]:
    """One line per optional read the tenant refuses (Intune devices; users' sign-in activity, when User keeps
    its Last Sign-In attribute), saying why; empty when every chosen one works."""
    wanted = [key for key in ("managed_device",) if key in settings.object_types]
    user = next((t for t in object_types_for(settings) if t.key == "user"), None)
    if user is not None and any(a.locator == "lastSignIn" for a in user.attributes):
        wanted.append("sign_in")
    lines = []
    for key in wanted:
        what, path, query = _OPTIONAL[key]
        try:
            graph.get(path, query)
        except (GraphPermissionError, RemoteError) as error:
            lines.append(f"{what}: {error}")
    return lines


def check_all(settings: Settings, now: dt.datetime | None = None, state: StateStore | None = None) -> CheckReport:
    """Check Graph (credentials, the read permission of every synced resource), Assets (token, import source),
    Jira linking when JIRA_* are set (the site user's token and the site's Assets workspace) and when the
    credentials expire (``shared.admin.credential_expiry``: warnings from 30 days ahead, in ``warnings`` and as "warning:"
    lines). Every missing Graph permission is named, not only the first. Jira failing leaves the importer
    status as it is (SPEC §3 has no status for it; syncs still push the directory) but makes the report not
    ``ready`` (``check`` exits 1) with a "Jira linking:" line saying what to fix, also in ``jira``; so does
    Event Grid delivery that is not ready (NOTIFICATION_DELIVERY=eventgrid, ``shared.admin.event_grid``:
    "Event Grid:" lines, and ``event_grid``). Raises only
    SettingsError. Writes one thing, into ``state`` (default: the configured store): the import token's
    first-seen time, once per accepted token."""
    report = CheckReport()
    report.lines.append(f"settings: ok (Graph credential: {settings.graph_auth}; "
                        f"store: {'Azure Storage' if settings.uses_azure_storage else settings.home})")
    graph = graph_client(settings)
    resources = [_RESOURCES[t] for t in settings.object_types if t in _RESOURCES]
    denied: list[str] = []
    try:
        for resource in resources:
            query = {"$top": "1", "$select": "id"}
            if resource == "subscribedSkus":  # it takes no $top (UNCONFIRMED; shared/produce/full.py)
                query = {"$select": "id"}
            try:
                graph.get(resource, query)
            except GraphPermissionError as error:
                denied.append(str(error))
        if denied:
            report.status, report.ready, report.message = "MISSING_PERMISSIONS", False, " ".join(denied)
            report.lines.extend(f"Microsoft Graph: {line}" for line in denied)
        else:
            report.lines.append(f"Microsoft Graph: ok (can read {', '.join(resources)})")
        report.lines.extend(f"Microsoft Graph: {line}" for line in optional_reads(graph, settings))
    except EntraAssetsError as error:
        report.status, report.ready, report.message = error.status or "ERROR", False, str(error)
        report.lines.append(f"Microsoft Graph: {error}")
    status, message = _assets_status(settings)
    report.lines.append(f"Assets import: {status}" + (f" - {message}" if message else ""))
    if report.ready:
        report.status, report.message = status, message
        report.ready = status in ("IDLE", "RUNNING")
    if report.ready:
        report.lines.append("the import's 'Missing objects' setting must be Ignore for every object type "
                            "(this cannot be read through the import token: check it in Assets)")
    if settings.jira_enabled:
        try:
            report.lines.append(check_linking(settings))
        except EntraAssetsError as error:
            report.ready, report.jira = False, str(error)
            report.lines.append(f"Jira linking: {error} (until then syncs push the directory without new links)")
    if settings.event_grid:  # like Jira: not ready, the importer status unchanged (syncs go on, by the timer)
        grid = event_grid_status(settings)
        report.event_grid = grid.as_dict()
        report.lines.extend(grid.lines + [f"{line} (until then changes arrive by the timer's catch-up only)"
                                          for line in grid.problems])
        report.ready = report.ready and grid.ready
    signed_in = report.status != "INVALID_CREDENTIALS"
    state = state or open_backend(settings).state
    report.credentials = credential_report(settings, graph if signed_in else None, state,
                                           now, record_token=status in CONFIG_STATUSES)  # Assets took the token
    report.lines.append(f"Graph credential: {describe(report.credentials['graph_credential'])}")
    report.lines.append(f"Assets import token: {describe(report.credentials['import_token'])}")
    report.warnings = credential_warnings(report.credentials)
    report.lines.extend(f"warning: {warning}" for warning in report.warnings)
    return report


def objects_against_allowance(runs: list[dict], settings: Settings) -> dict | None:
    """The objects entra-assets keeps in Assets as the newest full run counted them, against ASSETS_OBJECT_LIMIT,
    with a warning from 80 % on; None before the first full run (``objects`` of the run history)."""
    newest = next((run for run in runs if run.get("objects") is not None), None)
    if newest is None:
        return None
    kept, limit = int(newest["objects"]), settings.assets_object_limit
    share = 100 * kept / limit
    warning = None if kept < ALLOWANCE_WARNING * limit else (
        f"{kept:,} objects of ASSETS_OBJECT_LIMIT={limit:,} ({share:.0f} %): "
        + ("over the allowance: full runs that add objects are held" if kept > limit else "nearing the allowance"))
    return {"kept": kept, "limit": limit, "percent": round(share, 1), "as_of": newest["started"],
            "warning": warning}


def collect_status(settings: Settings, now: float | None = None) -> dict:
    """The data of ``status --json`` and of the status page: stable keys, documented in the README.

    ``importer_status`` is what ``check`` finds (SPEC §3: the Entra side's INVALID_CREDENTIALS or
    MISSING_PERMISSIONS first, then the import token and source), RUNNING while one of our runs is going
    (``current``, a segmented full run: ``full_run``, or an execution handed on between worker invocations:
    ``handed_on``) even before Assets sees an execution; ``message`` says
    what to do about it. ``runs`` is the
    history, newest first (``shared.store.history``); ``event_grid`` the partner topic's state with
    NOTIFICATION_DELIVERY=eventgrid (null otherwise); ``credentials`` the expiry report with its warnings
    (``shared.admin.credential_expiry``); ``jira`` the user links (null when linking is off), with ``degraded``: why linking
    does not work - what ``check`` finds now, else what the newest run reported - or null. Costs what ``check`` costs:
    a token, one Graph read per synced resource and the registration, one Assets request. Raises only
    SettingsError; a remote side that fails becomes ``importer_status`` and ``message``."""
    now = time.time() if now is None else now
    backend = open_backend(settings)
    check = check_all(settings, dt.datetime.fromtimestamp(now, dt.UTC), backend.state)
    status = check.status
    current = history.read_current(backend.state, now)
    if current is not None and status == "IDLE":
        status = "RUNNING"
    depth = backend.queue.depth()
    runs = history.read_runs(backend.state)
    cursor = load_cursor(backend.state)
    full_run = None if cursor is None else {
        "run": cursor.run_id, "trigger": cursor.trigger, "started": history.iso(cursor.started),
        "updated": history.iso(cursor.updated) if cursor.updated else None, "segments": cursor.segment,
        "pages": cursor.pages, "reads": len(cursor.chains), "reads_complete": sum(c.done for c in cursor.chains.values())}
    journal = handoff.load(backend.state)
    handed_on = None if journal is None else {
        "id": journal.id, "phase": journal.phase, "started": history.iso(journal.started),
        "updated": history.iso(journal.touched), "records_sent": sum(journal.figures.get("sent", {}).values()),
        "invocations": journal.step, "stalled": handoff.stalled(journal)}
    if (full_run is not None or handed_on is not None) and status == "IDLE":
        status = "RUNNING"
    jira = None
    if settings.jira_enabled:
        unmatched = unmatched_ids(backend.state)
        jira = {"linked": linked_count(backend.state), "unmatched": len(unmatched), "unmatched_ids": unmatched,
                "degraded": check.jira or (runs[0].get("linking") if runs else None)}
    return {"importer_status": status, "message": check.message, "current": current, "full_run": full_run,
            "handed_on": handed_on, "runs": runs, "objects": objects_against_allowance(runs, settings),
            "subscriptions": stored_subscriptions(backend.state), "event_grid": check.event_grid,
            "queue": {"name": settings.queue_name, "messages": depth.messages, "poison": depth.poison},
            "credentials": {**check.credentials, "warnings": check.warnings}, "jira": jira}
