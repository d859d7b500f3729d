"""The ``entra-assets`` command line (SPEC §3): check, setup, sync, preview, status, serve, demo, sandbox.

Every command reads the same settings as the Functions app (environment variables). Errors an admin can act
on print one line and exit non-zero; nothing here prints secrets.
"""
from __future__ import annotations

import importlib.metadata
import json
import logging
import os
import sys
from contextlib import contextmanager

import click
from rich.console import Console
from rich.markup import escape
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from shared.errors import EntraAssetsError, SettingsError
from shared.settings import Settings, load_settings
from shared.telemetry import LOG_FORMATS, configure_logging, correlation, export_from, log_format_from

console = Console(stderr=True, soft_wrap=True)
# Piped output (CI logs, `| tee`) gets 120 columns instead of rich's 80, so the demo's tables stay readable.
out = Console(soft_wrap=True, width=None if sys.stdout.isatty() else 120)


def _settings() -> Settings:
    return load_settings(os.environ)


def _fail(error: EntraAssetsError) -> None:
    if isinstance(error, SettingsError):
        console.print("[red]invalid settings:[/red]")
        for problem in error.problems:
            console.print(f"  - {escape(problem)}")
    else:
        status = escape(f" [{error.status}]") if error.status else ""
        console.print(f"[red]error{status}:[/red] {escape(str(error))}")
    sys.exit(error.exit_code)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("-v", "--verbose", is_flag=True, help="Log progress details to stderr.")
@click.option("--log-format", type=click.Choice(LOG_FORMATS), default=None,
              help="Log lines on stderr as text or JSON objects (default: LOG_FORMAT, else text).")
@click.pass_context
def main(ctx: click.Context, verbose: bool, log_format: str | None) -> None:
    """Keep Jira Service Management Assets in step with Microsoft Entra ID."""
    try:
        log_format = log_format or log_format_from(os.environ)
    except ValueError as error:
        raise click.UsageError(str(error)) from None
    handler = configure_logging(logging.INFO if verbose else logging.WARNING, log_format)  # shared/telemetry.py
    ctx.call_on_close(lambda: logging.getLogger().removeHandler(handler))  # in-process callers keep no stale handler
    ctx.with_resource(correlation())  # one correlation id per command, in its log lines and queued messages
    export = export_from(os.environ)  # Application Insights when APPLICATIONINSIGHTS_CONNECTION_STRING is set
    if export is not None:
        ctx.call_on_close(export.flush)


@contextmanager
def _progress():
    """A live progress line (stage, objects, elapsed) on stderr when it is a terminal; quiet otherwise."""
    if not console.is_terminal:
        yield lambda stage, n: None
        return
    columns = (SpinnerColumn(), TextColumn("{task.description}"), TextColumn("{task.fields[n]:,}"),
               TimeElapsedColumn())
    with Progress(*columns, console=console, transient=True) as bar:
        task = bar.add_task("Starting", n=0)
        yield lambda stage, n: bar.update(task, description=stage, n=n)


@main.command()
def check() -> None:
    """Verify settings, Graph credentials and permissions, and the import token; print the importer status."""
    from shared.admin.status import check_all

    try:
        report = check_all(_settings())
    except EntraAssetsError as error:
        _fail(error)
    for line in report.lines:
        out.print(escape(line))
    out.print(f"importer status: [bold]{report.status}[/bold]")
    sys.exit(0 if report.ready else 1)


@main.command()
@click.option("--adopt", is_flag=True,
              help="Take over object types of the target schema that have entra-assets' names but were not made "
                   "by it (their objects and same-named attributes become this import's). First setup only.")
def setup(adopt: bool) -> None:
    """Submit or update the schema-and-mapping document of the import source.

    The first time, object types of the schema with entra-assets' names that it did not create are refused
    (exit 3, nothing sent) unless --adopt is given."""
    from shared.admin.setup import run_setup

    try:
        outcome = run_setup(_settings(), adopt=adopt)
    except EntraAssetsError as error:
        _fail(error)
    out.print(f"schema and mapping {outcome.action}: {outcome.object_types} object types, "
              f"{outcome.attributes} attributes")
    for note in outcome.notes:
        out.print(f"[yellow]action for the Assets admin:[/yellow] {escape(note)}")


@main.command()
@click.option("--full", is_flag=True, help="Read the whole directory and push what changed (else: delta catch-up).")
@click.option("--allow-mass-deactivation", is_flag=True,
              help="Let this run mark more than MAX_DEACTIVATIONS objects Deleted (once).")
@click.option("--allow-object-limit", is_flag=True,
              help="Let this full run take the objects in Assets past ASSETS_OBJECT_LIMIT (once).")
@click.option("--repair", is_flag=True,
              help="With --full: push every record in scope again, whatever changed (puts back hand edits).")
def sync(full: bool, allow_mass_deactivation: bool, allow_object_limit: bool, repair: bool) -> None:
    """Run the timer path, then the worker in-process until the queue is drained and Assets is done.

    Without --full: a catch-up from the stored delta links (what the timer does between full runs)."""
    from shared.app import run_outcome_error, sync_full, sync_incremental

    try:
        settings = _settings()
        with _progress() as progress:
            run = sync_full if full else sync_incremental
            if repair and not full:
                raise click.UsageError("--repair goes with --full: a repair is a full run")
            extra = {"allow_over_object_limit": allow_object_limit, "repair": repair} if full else {}
            report = run(settings, progress, allow_mass_deactivation=allow_mass_deactivation, **extra)
    except EntraAssetsError as error:
        _fail(error)
    _print_sync(report, "sync --full" if full else "sync (delta catch-up)")
    if (error := run_outcome_error(report.full)) is not None:
        _fail(error)
    sys.exit(1 if any(p.errors for p in report.pushes) else 0)


def _counts(counter) -> str:
    from shared.records.schema import BY_KEY

    return ", ".join(f"{BY_KEY[k].name} {v:,}" for k, v in sorted(counter.items()) if v) or "none"


def _print_sync(report, title: str) -> None:
    full = report.full
    table = Table(title=title, show_header=False)
    table.add_row("objects read", _counts(full.read))
    table.add_row("created", _counts(full.created))
    table.add_row("updated", _counts(full.updated))
    table.add_row("marked Deleted", _counts(full.deactivated))
    table.add_row("records unchanged", f"{sum(full.unchanged.values()):,}")
    if full.repair:
        table.add_row("pushed again (repair)", _counts(full.resent))
    if full.object_limit:  # a full run counted them
        table.add_row("objects in Assets", f"{full.objects_after:,} of ASSETS_OBJECT_LIMIT={full.object_limit:,}"
                      + (" - held: nothing pushed" if full.over_allowance else ""))
    table.add_row("Assets executions", str(report.executions))
    table.add_row("records pushed", f"{report.records_pushed:,}")
    table.add_row("time", f"{report.seconds:.1f} s")
    out.print(table)
    for line in full.unmatched.lines():
        out.print(f"unmatched: {escape(line)}")
    for line in full.warnings.lines():
        out.print(f"[yellow]warning:[/yellow] {escape(line)}")
    if (line := full.allowance_line()) and not full.over_allowance:
        out.print(f"[yellow]warning:[/yellow] {escape(line)}")
    for push in report.pushes:
        for error in push.errors:
            out.print(f"[red]Assets reported:[/red] {escape(error)}")
        for line in push.links.lines() if push.links is not None else ():  # Jira User links (shared.jira_links)
            out.print(escape(line))


@main.command()
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output (documented in the README).")
def preview(as_json: bool) -> None:
    """Dry run of a full reconciliation: what `sync --full` would create, update and mark Deleted."""
    from shared.app import preview as run_preview

    try:
        with _progress() as progress:
            report = run_preview(_settings(), progress)
    except EntraAssetsError as error:
        _fail(error)
    data = report.to_json()
    if as_json:
        out.print_json(json.dumps(data))
        return
    table = Table(title="preview (nothing was written)")
    for column in ("object type", "create", "update", "mark Deleted", "unchanged"):
        table.add_column(column, justify="left" if column == "object type" else "right")
    counts = data["counts"]
    names = sorted({n for kind in counts.values() for n in kind})
    for name in names:
        table.add_row(name, *(f"{counts[k].get(name, 0):,}" for k in ("create", "update", "deactivate", "unchanged")))
    out.print(table)
    for update in [u for v in data["updates"].values() for u in v][:10]:
        changed = ", ".join(update.get("changes", {})) or "-"
        out.print(f"update {escape(str(update['name']))} ({update['id']}): {escape(changed)}")
    if data["counts"]["held_back"]:
        out.print(f"[red]the guard would hold back {sum(data['counts']['held_back'].values()):,} departures "
                  "(MAX_DEACTIVATIONS)[/red]")
    objects = data["objects"]
    out.print(f"objects in Assets after the run: {objects['after']:,} of ASSETS_OBJECT_LIMIT={objects['limit']:,} "
              f"({objects['kept']:,} now)")
    if objects["held"]:
        out.print("[red]sync --full would be held: its new objects cross ASSETS_OBJECT_LIMIT (raise it to the "
                  "site's allowance, or run sync --full --allow-object-limit once)[/red]")
    elif objects["warning"]:
        out.print(f"[yellow]warning:[/yellow] {escape(objects['warning'])}")
    for item in data["unmatched"]:
        out.print(f"unmatched: {escape(item['kind'])}: {item['count']:,}")
    for item in data["warnings"]:
        out.print(f"[yellow]warning:[/yellow] {escape(item['kind'])}: {item['count']:,}")


@main.command()
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output (documented in the README).")
@click.option("--runs", "limit", default=10, show_default=True, help="How many of the last runs to list.")
def status(as_json: bool, limit: int) -> None:
    """Importer status, the current stage, the last runs, subscriptions and the queue."""
    from shared.admin.credential_expiry import describe
    from shared.admin.status import collect_status

    try:
        data = collect_status(_settings())
    except EntraAssetsError as error:
        _fail(error)
    if as_json:
        out.print_json(json.dumps(data))
        return
    out.print(f"importer status: [bold]{data['importer_status']}[/bold]")
    if data.get("message"):
        out.print(f"  {escape(data['message'])}")
    current = data.get("current")
    if current:
        out.print(f"running now: {current['stage']} ({current['count']:,} so far) - {current['kind']} run started "
                  f"by {current['trigger']} at {current['started']}")
    handed_on = data.get("handed_on")
    if handed_on:
        out.print(f"Assets execution handed on between invocations ({handed_on['phase']}): "
                  f"{handed_on['records_sent']:,} records sent in {handed_on['invocations']} invocation(s) since "
                  f"{handed_on['started']}, last moved at {handed_on['updated']}"
                  + (" - stalled: the next worker pass takes it up" if handed_on["stalled"] else ""))
    full_run = data.get("full_run")
    if full_run:
        out.print(f"full run {full_run['run']} in progress: {full_run['segments']} segment(s), "
                  f"{full_run['pages']:,} Graph pages, {full_run['reads_complete']} of {full_run['reads']} reads "
                  f"complete (started by {full_run['trigger']} at {full_run['started']})")
    out.print(runs_table(data["runs"][:limit]) if data["runs"] else "no runs recorded yet")
    for resource, subscription in sorted(data["subscriptions"].items()):
        out.print(f"subscription {resource}: expires {escape(str(subscription.get('expires')))}")
    objects = data.get("objects")
    if objects is not None:
        out.print(f"objects in Assets: {objects['kept']:,} of ASSETS_OBJECT_LIMIT={objects['limit']:,} "
                  f"({objects['percent']:g} %, as of the full run of {objects['as_of']})")
        if objects["warning"]:
            out.print(f"[yellow]warning:[/yellow] {escape(objects['warning'])}")
    grid = data.get("event_grid")
    if grid is not None:
        out.print(f"Event Grid partner topic {escape(grid['partner_topic'])}: {grid['activation'] or 'not created'}"
                  + (f", delivering to {', '.join(grid['queues'])}" if grid["queues"] else ""))
        for problem in grid["problems"]:
            out.print(f"[yellow]Event Grid not ready:[/yellow] {escape(problem)}")
    out.print(f"queue: {data['queue']['messages']} waiting, {data['queue']['poison']} poison")
    credentials = data["credentials"]
    out.print(f"Graph credential: {escape(describe(credentials['graph_credential']))}")
    out.print(f"Assets import token: {escape(describe(credentials['import_token']))}")
    for warning in credentials["warnings"]:
        out.print(f"[yellow]warning:[/yellow] {escape(warning)}")
    if data["jira"] is not None:
        jira = data["jira"]
        sample = ", ".join(jira["unmatched_ids"][:5]) + (", …" if jira["unmatched"] > 5 else "")
        out.print(f"Jira user links: {jira['linked']:,} linked, {jira['unmatched']:,} unmatched"
                  + (f" ({sample}; all in --json)" if sample else ""))
        if jira.get("degraded"):
            out.print(f"[yellow]Jira linking degraded:[/yellow] {escape(jira['degraded'])}")


def _by_type(counts: dict, most: int = 3) -> str:
    top = sorted(counts.items(), key=lambda item: -item[1])
    return ", ".join(f"{name} {n:,}" for name, n in top[:most]) + (", …" if len(top) > most else "")


def runs_table(runs: list[dict], title: str = "last runs (newest first)") -> Table:
    """The run history as a table (``status``, the demo); ``status --json`` and the page have every detail."""
    table = Table(title=title)
    numbers = ("s", "pushed", "created", "updated", "identical", "exec.")
    for column in ("started (UTC)", "trigger", "kind", "stage", *numbers, "notes"):
        table.add_column(column, justify="right" if column in numbers else "left",
                         no_wrap=column in ("started (UTC)", "kind"))
    for run in runs:
        repeated = run.get("repeated") or 1
        notes = [f"{repeated} quiet runs, the last at {run.get('last_started', '')[11:19]}"] if repeated > 1 else []
        notes += [_by_type(run["records"])] if run.get("records") else []
        notes += [f"marked Deleted: {_by_type(run['deactivated'])}"] if run.get("deactivated") else []
        notes += run.get("errors") or []
        notes += [f"{len(run['warnings'])} warning(s)"] if run.get("warnings") else []
        stage = run["stage"] if run["stage"] == "Done" else f"[red]{run['stage']}[/red]"
        table.add_row(run["started"][5:19].replace("T", " "), "+".join(run["triggers"]), run["kind"], stage,
                      f"{run['seconds']:.1f}", f"{run['records_pushed']:,}", f"{run['created']:,}",
                      f"{run['updated']:,}", f"{run['identical']:,}", str(run["executions"]),
                      escape("; ".join(notes)))
    return table


def _register_commands() -> None:
    """Add the commands other installed packages declare (entry points ``entra_assets.commands``, each a
    function taking this click group): the sandbox's ``demo``, ``sandbox`` and ``serve``
    (``sandbox/tools/commands.py``). The product never imports the sandbox; where it is not installed (the
    Functions package leaves it out, .funcignore), those commands are simply absent."""
    for entry in importlib.metadata.entry_points(group="entra_assets.commands"):
        try:
            entry.load()(main)
        except ImportError:
            continue


_register_commands()


if __name__ == "__main__":
    main()
