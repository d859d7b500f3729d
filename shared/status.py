"""Importer status (SPEC §3) for ``check`` and ``status``, and the record of the last CLI run.

The importer status is the one word an Assets admin knows from other importers: IDLE, RUNNING, DISABLED,
MISSING_MAPPING (the import source), INVALID_TOKEN, NO_TOKEN (the import token), INVALID_CREDENTIALS,
MISSING_PERMISSIONS (the Entra side). Errors of the remote APIs become a status and a message here, never a
traceback; only invalid settings raise.
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass, field

from shared.errors import EntraAssetsError
from shared.runtime import SyncReport, assets_client, graph_client, open_backend
from shared.settings import Settings
from shared.subscriptions import stored_subscriptions

LAST_RUN = "runs/last"


@dataclass
class CheckReport:
    status: str = "IDLE"
    ready: bool = True
    lines: list[str] = field(default_factory=list)


def _assets_status(settings: Settings) -> tuple[str, str]:
    """(status, message) of the import source."""
    try:
        status = assets_client(settings).config_status()
    except EntraAssetsError as error:
        return error.status or "ERROR", str(error)
    hint = {"DISABLED": "enable the import in Assets (Schema configuration > Import)",
            "MISSING_MAPPING": "run `entra-assets setup`"}.get(status, "")
    return status, hint


_RESOURCES = {"user": "users", "group": "groups", "device": "devices", "application": "servicePrincipals"}


def check_all(settings: Settings) -> CheckReport:
    """Check Graph (credentials, the read permission of every synced resource) and Assets (token, import
    source). Raises only SettingsError."""
    report = CheckReport()
    report.lines.append(f"settings: ok (Graph credential: {settings.graph_auth}; "
                        f"store: {'Azure Storage' if settings.uses_azure_storage else settings.home})")
    graph = graph_client(settings)
    try:
        resources = [_RESOURCES[t] for t in settings.object_types]
        for resource in resources:
            graph.get(resource, {"$top": "1", "$select": "id"})
        report.lines.append(f"Microsoft Graph: ok (can read {', '.join(resources)})")
    except EntraAssetsError as error:
        report.status, report.ready = error.status or "ERROR", False
        report.lines.append(f"Microsoft Graph: {error}")
    status, message = _assets_status(settings)
    report.lines.append(f"Assets import: {status}" + (f" - {message}" if message else ""))
    if report.ready:
        report.status = status
        report.ready = status in ("IDLE", "RUNNING")
    if report.ready:
        report.lines.append("the import's 'Missing objects' setting must be Ignore for every object type "
                            "(this cannot be read through the import token: check it in Assets)")
    return report


def record_run(settings: Settings, report: SyncReport, kind: str = "full") -> None:
    """Remember the last CLI run for ``status`` (run history with more detail comes later)."""
    last = {"kind": kind, "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() - report.seconds)),
            "stage": "Failed" if any(p.errors for p in report.pushes) or report.full.held_back else "Done",
            "users": report.full.users, "read": dict(report.full.read), "records_queued": report.full.queued,
            "deactivated": sum(report.full.deactivated.values()), "held_back": sum(report.full.held_back.values()),
            "records_pushed": report.records_pushed, "executions": report.executions,
            "seconds": round(report.seconds, 3), "warnings": report.full.warnings.lines()}
    open_backend(settings).state.commit({}, {LAST_RUN: json.dumps(last)})


def collect_status(settings: Settings) -> dict:
    """The data of ``status --json`` (stable keys, documented in the README)."""
    backend = open_backend(settings)
    status, message = _assets_status(settings)
    depth = backend.queue.depth()
    last = backend.state.checkpoint(LAST_RUN)
    return {"importer_status": status, "message": message,
            "last_run": json.loads(last) if last else None,
            "subscriptions": stored_subscriptions(backend.state),
            "queue": {"name": settings.queue_name, "messages": depth.messages, "poison": depth.poison}}
