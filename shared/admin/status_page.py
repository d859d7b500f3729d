"""The status page: what ``entra-assets status`` shows, as HTML for people or JSON for scripts.

``respond`` is what the ``status_page`` HTTP function answers; ``render_html`` the page itself, a pure
function of ``collect_status``'s data. The page is read-only and self-contained: inline CSS, no scripts,
nothing fetched (the Content-Security-Policy says so, and forbids framing); every value is HTML-escaped. While
a run is going it reloads itself every 15 s (a meta refresh, not a script). The function key travels in the
URL (``code``), so the page sends no Referer and is never cached.
"""
from __future__ import annotations

import html
import json
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass, field

from shared.errors import SettingsError
from shared.settings import load_settings
from shared.store.history import epoch

log = logging.getLogger(__name__)

MAX_ROWS = 50       # runs shown on the page (status --json has them all)
REFRESH_SECONDS = 15
HEADERS = {
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; img-src data:; "
                               "frame-ancestors 'none'; base-uri 'none'; form-action 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",   # the URL carries the function key
    "Cache-Control": "no-store",
}
CSS = """
body{font:14px/1.4 system-ui,-apple-system,"Segoe UI",sans-serif;margin:1.5rem;color:#172b4d;background:#fff}
h1{font-size:1.4rem;margin:0 0 .25rem}h2{font-size:1.1rem;margin:1.5rem 0 .5rem}
.muted{color:#5e6c84}.badge{display:inline-block;padding:.15rem .5rem;border-radius:3px;font-weight:600;
background:#dfe1e6}.ok{background:#e3fcef;color:#006644}.busy{background:#deebff;color:#0747a6}
.bad{background:#ffebe6;color:#bf2600}table{border-collapse:collapse;width:100%}
th,td{border-bottom:1px solid #dfe1e6;padding:.3rem .5rem;text-align:left;vertical-align:top}
th{background:#f4f5f7;font-weight:600}td.n{text-align:right;font-variant-numeric:tabular-nums}
tr.failed td{background:#fff4f2}td.started,td.kind{white-space:nowrap}ul.notes{margin:0;padding-left:1rem}
#unmatched{columns:18rem auto;font-size:.9em}#credential-warnings li{margin:.25rem 0}
"""


@dataclass
class Page:
    """An HTTP answer: status, media type (UTF-8) and body."""

    status: int
    mimetype: str
    body: str
    headers: dict[str, str] = field(default_factory=lambda: dict(HEADERS))


def wants_json(params: Mapping[str, str], headers: Mapping[str, str]) -> bool:
    """JSON for ``?format=json``, or for ``Accept: application/json`` unless HTML comes first; else HTML."""
    fmt = next((v for k, v in params.items() if k.lower() == "format"), "")
    if fmt:
        return fmt.strip().lower() == "json"
    accept = next((v for k, v in headers.items() if k.lower() == "accept"), "") or ""
    types = [part.split(";", 1)[0].strip().lower() for part in accept.split(",")]
    return "application/json" in types and ("text/html" not in types
                                            or types.index("application/json") < types.index("text/html"))


def respond(environ: Mapping[str, str], params: Mapping[str, str], headers: Mapping[str, str],
            now: float | None = None) -> Page:
    """The status page or its JSON. Invalid settings: 500 naming each setting. A store that cannot be read:
    503 (the error type only; the details are in the log)."""
    from shared.admin.status import (
        collect_status,  # status imports the runtime wiring; the page stays importable
    )

    as_json = wants_json(params, headers)
    try:
        data = collect_status(load_settings(environ), now)
    except SettingsError as error:
        problems = list(error.problems)
        if as_json:
            return Page(500, "application/json",
                        json.dumps({"error": "invalid settings", "problems": problems}))
        items = "".join(f"<li>{_e(p)}</li>" for p in problems)
        return Page(500, "text/html",
                    _document("entra-assets: invalid settings", f"<h1>Invalid settings</h1><ul>{items}</ul>"))
    except Exception as error:  # the storage or a remote side failed: say so, without details
        log.exception("status page: collecting the status failed")
        reason = f"status unavailable ({type(error).__name__}); see the function logs"
        if as_json:
            return Page(503, "application/json", json.dumps({"error": reason}))
        return Page(503, "text/html", _document("entra-assets: status unavailable", f"<h1>{_e(reason)}</h1>"))
    if as_json:
        return Page(200, "application/json", json.dumps(data))
    return Page(200, "text/html", render_html(data, time.time() if now is None else now))


def _e(value: object) -> str:
    return html.escape("" if value is None else str(value), quote=True)


def _document(title: str, body: str, refresh: bool = False) -> str:
    meta = f'<meta http-equiv="refresh" content="{REFRESH_SECONDS}">' if refresh else ""
    return ('<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
            '<meta name="viewport" content="width=device-width, initial-scale=1">'
            f'<link rel="icon" href="data:,">{meta}<title>{_e(title)}</title><style>{CSS}</style></head>'
            f"<body>{body}</body></html>")


def duration(seconds: float | None) -> str:
    """``3.2 s``, ``4 min 05 s``, ``2 h 03 min``, ``29 d 13 h``."""
    if seconds is None:
        return "-"
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, secs = divmod(round(seconds), 60)
    if minutes < 60:
        return f"{minutes} min {secs:02d} s"
    hours = minutes // 60
    return f"{hours} h {minutes % 60:02d} min" if hours < 48 else f"{hours // 24} d {hours % 24} h"


def _counts(counts: object) -> str:
    if not isinstance(counts, dict) or not counts:
        return "-"
    return ", ".join(f"{_e(name)} {int(n):,}" for name, n in counts.items())


def render_html(data: dict, now: float) -> str:
    """The page for ``collect_status``'s ``data`` at ``now`` (epoch seconds). Pure; every value escaped."""
    status = str(data.get("importer_status") or "UNKNOWN")
    tone = {"IDLE": "ok", "RUNNING": "busy"}.get(status, "bad")
    message = f' <span class="muted">{_e(data.get("message"))}</span>' if data.get("message") else ""
    generated = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(now))
    parts = [f'<h1>entra-assets status</h1><p class="muted">as of {generated} UTC - read-only</p>',
             f'<p>Importer status: <span id="importer-status" class="badge {tone}">{_e(status)}</span>'
             + message + "</p>",
             _current(data.get("current")), _objects(data.get("objects")), _runs(data.get("runs") or []),
             _subscriptions(data.get("subscriptions") or {}, now), _event_grid(data.get("event_grid")),
             _queue(data.get("queue") or {})]
    parts += [_credentials(data.get("credentials")), _jira(data.get("jira"))]
    return _document(f"entra-assets: {status}", "".join(parts), refresh=bool(data.get("current")))


def _current(current: dict | None) -> str:
    if not current:
        return '<p id="current">No run in progress.</p>'
    return (f'<p id="current">Running now: <strong>{_e(current.get("stage"))}</strong> '
            f'({int(current.get("count") or 0):,} so far) - {_e(current.get("kind"))} run started by '
            f'{_e(current.get("trigger"))} at {_e(current.get("started"))} UTC</p>')


_RUN_COLUMNS = ("Started (UTC)", "Trigger", "Kind", "Stage", "Duration", "Records pushed", "Created",
                "Updated", "Identical", "Executions", "Notes")


def _runs(runs: list[dict]) -> str:
    head = "".join(f"<th>{c}</th>" for c in _RUN_COLUMNS)
    if not runs:
        return f'<h2>Last runs</h2><table id="runs"><tr>{head}</tr></table><p>No runs recorded yet.</p>'
    rows = [_run_row(run) for run in runs[:MAX_ROWS]]
    more = (f'<p class="muted">{len(runs) - MAX_ROWS} older runs are in the JSON (?format=json).</p>'
            if len(runs) > MAX_ROWS else "")
    return (f'<h2>Last runs</h2><table id="runs"><thead><tr>{head}</tr></thead><tbody>{"".join(rows)}</tbody>'
            f"</table>{more}")


def _run_row(run: dict) -> str:
    stage = str(run.get("stage") or "")
    notes = []
    if int(run.get("repeated") or 1) > 1:
        notes.append(f"{int(run['repeated'])} quiet runs in a row, the last at {run.get('last_started')}")
    if run.get("read"):
        notes.append("read: " + ", ".join(f"{k} {int(v):,}" for k, v in run["read"].items()))
    if run.get("deactivated"):
        notes.append("marked Deleted: " + ", ".join(f"{k} {int(v):,}" for k, v in run["deactivated"].items()))
    notes += [f"error: {x}" for x in run.get("errors") or []]
    notes += [f"warning: {x}" for x in run.get("warnings") or []]
    cells = [("started", run.get("started", "").replace("T", " ").rstrip("Z"), ""),
             ("trigger", " + ".join(run.get("triggers") or []), ""), ("kind", run.get("kind"), ""),
             ("stage", stage, ""), ("duration", duration(run.get("seconds")), "n")]
    out = [f'<td class="{name} {align}">{_e(value)}</td>' for name, value, align in cells]
    out.append(f'<td class="records">{_counts(run.get("records"))}</td>')
    out += [f'<td class="{k} n">{int(run.get(k) or 0):,}</td>' for k in ("created", "updated", "identical",
                                                                         "executions")]
    items = "".join(f"<li>{_e(n)}</li>" for n in notes)
    out.append(f'<td class="notes">{f"<ul class=notes>{items}</ul>" if notes else ""}</td>')
    return f'<tr class="run {"failed" if stage == "Failed" else "done"}">{"".join(out)}</tr>'


def _objects(objects: dict | None) -> str:
    """The objects entra-assets keeps in Assets against ASSETS_OBJECT_LIMIT (warned from 80 %)."""
    if not objects:
        return ""
    warning = (f' <span class="badge bad" id="objects-warning">{_e(objects.get("warning"))}</span>'
               if objects.get("warning") else "")
    return (f'<p id="objects">Objects in Assets: {int(objects.get("kept") or 0):,} of ASSETS_OBJECT_LIMIT='
            f'{int(objects.get("limit") or 0):,}{warning}</p>')


def _event_grid(grid: dict | None) -> str:
    """The partner topic Graph delivers to (NOTIFICATION_DELIVERY=eventgrid), and what stops its events."""
    if not grid:
        return ""
    state = grid.get("activation") or "not created"
    queues = ", ".join(grid.get("queues") or []) or "no queue"
    problems = "".join(f'<p class="badge bad event-grid-problem">{_e(p)}</p>' for p in grid.get("problems") or [])
    return (f'<p id="event-grid">Event Grid partner topic <code>{_e(grid.get("partner_topic"))}</code>: '
            f'{_e(state)}, delivering to {_e(queues)}</p>{problems}')


def _subscriptions(subscriptions: dict, now: float) -> str:
    if not subscriptions:
        return ('<h2>Change notifications</h2><p id="subscriptions">No subscriptions (WEBHOOK_URL not set, '
                "or <code>entra-assets setup</code> not run since).</p>")
    rows = []
    for resource, sub in sorted(subscriptions.items()):
        expires = sub.get("expires") if isinstance(sub, dict) else None
        left = epoch(str(expires)[:19] + "Z") if expires else None
        remaining = "expired" if left is not None and left <= now else duration(left - now) if left else "-"
        sid = sub.get("id") if isinstance(sub, dict) else ""
        rows.append(f"<tr><td>{_e(resource)}</td><td>{_e(sid)}</td><td>{_e(expires)}</td>"
                    f"<td>{_e(remaining)}</td></tr>")
    return ('<h2>Change notifications</h2><table id="subscriptions"><thead><tr><th>Resource</th>'
            "<th>Subscription</th><th>Expires (UTC)</th><th>Left</th></tr></thead><tbody>"
            + "".join(rows) + "</tbody></table>")


def _queue(queue: dict) -> str:
    poison = int(queue.get("poison") or 0)
    hint = (" - messages that failed 5 times; fix the cause, then move them back to the queue (README: the "
            "poison queue)" if poison else "")
    return (f'<h2>Queue</h2><p id="queue"><code>{_e(queue.get("name"))}</code>: '
            f'<span class="waiting">{int(queue.get("messages") or 0):,}</span> waiting, '
            f'<span class="poison{" badge bad" if poison else ""}">{poison:,}</span> in the poison queue'
            f"{_e(hint)}</p>")


KINDS = {"client_secret": "client secret", "certificate": "certificate", "access_token": "fixed token",
         "managed_identity": "managed identity", "import_token": "import token", "none": "none"}


def _credentials(report: dict | None) -> str:
    """The Graph credential and the import token: kind, expiry, source, and the 30-day warnings."""
    if not report:
        return ""
    rows = []
    for key, title in (("graph_credential", "Microsoft Graph credential"), ("import_token", "Assets import token")):
        entry = report.get(key) or {}
        left = entry.get("days_left")
        rows.append(f"<tr><td>{title}</td><td>{_e(KINDS.get(entry.get('kind'), entry.get('kind')))}</td>"
                    f"<td>{_e(str(entry.get('expires') or '-')[:10])}</td>"
                    f'<td class="n">{_e("-" if left is None else left)}</td><td>{_e(entry.get("source"))}</td>'
                    f'<td class="n">{_e(entry.get("age_days") if entry.get("age_days") is not None else "-")}</td>'
                    "</tr>")
    warnings = "".join(f'<li class="badge bad">{_e(w)}</li>' for w in report.get("warnings") or [])
    return ('<h2>Credentials</h2><table id="credentials"><thead><tr><th>Credential</th><th>Kind</th>'
            "<th>Expires</th><th>Days left</th><th>Known from</th><th>Age (days)</th></tr></thead><tbody>"
            + "".join(rows) + "</tbody></table>" + (f'<ul id="credential-warnings">{warnings}</ul>' if warnings else ""))


def _jira(jira: dict | None) -> str:
    """Jira user links (SPEC §5): why linking is degraded (if it is), how many are set, and the users whose
    e-mail matched no account (ids)."""
    if not jira:
        return ""
    degraded = (f'<p id="jira-degraded" class="badge bad">Linking degraded: {_e(jira["degraded"])}</p>'
                if jira.get("degraded") else "")
    ids = jira.get("unmatched_ids") or []
    sample = "".join(f"<li><code>{_e(uid)}</code></li>" for uid in ids[:MAX_ROWS])
    more = f'<p class="muted">{len(ids) - MAX_ROWS} more in the JSON.</p>' if len(ids) > MAX_ROWS else ""
    return (f'<h2>Jira user links</h2>{degraded}<p id="jira"><span class="linked">{int(jira.get("linked") or 0):,}</span> '
            f'users linked to their Jira account; <span class="unmatched">{int(jira.get("unmatched") or 0):,}'
            "</span> unmatched (their e-mail matches no Jira account, or its owner hides it)</p>"
            + (f'<ul id="unmatched">{sample}</ul>{more}' if ids else ""))
