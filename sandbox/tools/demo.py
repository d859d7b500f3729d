"""``entra-assets demo``: the real pipeline against the sandbox, ending with a readable summary.

Steps: start the emulators, ``check``, ``setup``, a first full sync (users, groups, devices, applications and
the derived objects - everything is new), a second full sync of the unchanged tenant (no execution at all),
then changes in the tenant - a new hire, a manager change, a department respelt, an account disabled, a user
and a device deleted, a member leaving a group - and a third full sync that pushes only those, the departures
as ``Status = Deleted``. The summary compares what is in Assets with the tenant, counted from both sides.
Live changes then arrive through the webhook, or with ``--delivery eventgrid`` through Event Grid (no webhook).
"""
from __future__ import annotations

import tempfile
import time
from collections import Counter

from rich.console import Console
from rich.table import Table

from sandbox.emulators import Sandbox, start_sandbox
from sandbox.host.live import live, timed_change
from sandbox.tools.verify import (
    statuses,
    verify_directory,
    verify_licences,
    verify_managed_devices,
    verify_users,
)
from shared.admin.setup import run_setup
from shared.admin.status import check_all
from shared.app import SyncReport, sync_full
from shared.settings import load_settings


def _change_tenant(box: Sandbox) -> list[str]:
    tenant = box.tenant
    ids = sorted(tenant.users)
    hire = tenant.add_user({"displayName": "Grace Hopper", "userPrincipalName": "grace.hopper@sandbox.example",
                            "mail": "grace.hopper@sandbox.example", "department": "Engineering",
                            "accountEnabled": True, "userType": "Member", "jobTitle": "Rear Admiral"},
                           manager_id=ids[0])
    mover = next(u for u in ids[5:] if tenant.managers.get(u))
    tenant.set_manager(mover, ids[1])
    leaver = next(u for u in ids[10:] if tenant.users[u].get("accountEnabled"))
    tenant.update_user(leaver, accountEnabled=False)
    renamed = next(u for u in ids[20:] if tenant.users[u].get("department"))
    tenant.update_user(renamed, department=tenant.users[renamed]["department"].upper())
    departed = next(u for u in ids[30:] if u not in (hire, mover, leaver, renamed) and u not in tenant.managers.values()
                    and u not in ids[100:])
    tenant.delete_user(departed)
    device = min(tenant.devices)
    tenant.delete_device(device)
    group = next(g for g in sorted(tenant.groups) if any(t == "user" for t, _ in tenant.members.get(g, [])))
    member = next(m for t, m in tenant.members[group] if t == "user")
    tenant.remove_member(group, member)
    return [f"new hire {hire[:8]}…", f"manager change {mover[:8]}…", f"account disabled {leaver[:8]}…",
            f"department respelt {renamed[:8]}…", f"user deleted {departed[:8]}…", f"device deleted {device[:8]}…",
            f"member left group {group[:8]}…"]


def _sync_row(table: Table, label: str, report: SyncReport) -> None:
    submit = sum(p.seconds.get("submit", 0) for p in report.pushes)
    wait = sum(p.seconds.get("wait", 0) for p in report.pushes)
    table.add_row(label, f"{sum(report.full.read.values()):,}", f"{report.full.queued:,}", str(report.executions),
                  f"{report.records_pushed:,}", f"{report.full.seconds.get('fetch_and_format', 0):.2f}",
                  f"{submit:.2f}", f"{wait:.2f}", f"{report.seconds:.2f}")


def run_demo(users: int = 2000, seed: int = 1, console: Console | None = None, delivery: str = "webhook") -> int:
    """Run the demo; returns the exit status (0 when every check held). ``delivery``: how Graph's change
    notifications reach the app in the live part - "webhook" or "eventgrid"."""
    console = console or Console()
    started = time.monotonic()
    box = start_sandbox(users=users, seed=seed, jira=True,  # Jira user links on (SPEC §5)
                        event_grid=delivery == "eventgrid")
    # Graph allows 10 signInActivity requests a minute: the demo's three full runs and its check would wait most
    # of a minute for the last ones. A 6 s window keeps the story short (README: the cost at the documented rate).
    box.graph.sign_in_limit = (10, 6.0)
    try:
        with tempfile.TemporaryDirectory(prefix="entra-assets-demo-") as home:
            settings = load_settings({**box.settings(), "ENTRA_ASSETS_HOME": home})
            console.print(f"[bold]Sandbox[/bold]: {users:,} users (seed {seed}); Graph at {box.graph.base_url}, "
                          f"Assets at {box.assets.url}")
            report = check_all(settings)
            console.print(f"check: importer status {report.status}")
            outcome = run_setup(settings)
            console.print(f"setup: schema and mapping {outcome.action} ({outcome.object_types} object types)")
            table = Table(title="Full syncs", show_lines=False)
            for col in ("run", "objects read", "changed", "executions", "pushed", "fetch+format s", "submit s",
                        "Assets s", "total s"):
                table.add_column(col, justify="right" if col != "run" else "left")
            _sync_row(table, "1 first sync", sync_full(settings))
            _sync_row(table, "2 unchanged tenant", second := sync_full(settings))
            changes = _change_tenant(box)
            _sync_row(table, "3 after changes", third := sync_full(settings))
            console.print(table)
            console.print("changes made in the tenant: " + ", ".join(changes))
            live_ok = _live_changes(box, {**box.settings(), "ENTRA_ASSETS_HOME": home}, console, delivery)
            status = _summary(box, console, second, third, time.monotonic() - started) if live_ok else 1
            return status if _history(box, settings, console) else 1
    finally:
        box.stop()


def _history(box: Sandbox, settings, console: Console) -> bool:
    """What ``entra-assets status`` shows after the demo, checked against Assets: one history entry per
    execution with Assets' own counts, and every object in Assets created by exactly one of them."""
    from shared.app import open_backend
    from shared.cli import runs_table
    from shared.records.schema import OBJECT_TYPES
    from shared.store.history import read_runs

    runs = read_runs(open_backend(settings).state)
    console.print(runs_table(runs, title="entra-assets status: the run history (newest first)"))
    reported = Counter()
    for execution in box.assets.executions:
        for entry in execution.result_map.values():
            reported.update(created=entry["objectsCreated"], updated=entry["objectsUpdated"])
    in_assets = sum(len(box.assets.objects(t.name)) for t in OBJECT_TYPES)
    ok = (sum(r["executions"] for r in runs) == len(box.assets.executions)
          and sum(r["created"] for r in runs) == reported["created"] == in_assets
          and sum(r["updated"] for r in runs) == reported["updated"])
    if not ok:
        console.print("[red]the run history does not match what Assets reported[/red]")
    return ok


def _live_changes(box: Sandbox, env: dict[str, str], console: Console, delivery: str) -> bool:
    """Changes made while the functions run: each travels notification → webhook (or Event Grid) → queue →
    worker → Assets. With Event Grid, false when the webhook was called at all."""
    tenant, assets = box.tenant, box.assets
    user = lambda uid: assets.find("User", "Entra Object ID", uid)
    ids = sorted(tenant.users)
    mover = next(u for u in ids[100:] if tenant.managers.get(u) and tenant.managers[u] != ids[2])
    leaver = next(u for u in ids[120:] if tenant.users[u].get("accountEnabled") and u != mover)
    group = next(g for g in sorted(tenant.groups) if tenant.members.get(g))
    joiner = next(u for u in ids if ("user", u) not in tenant.members[group] and u not in (mover, leaver))
    with live(box, env, delivery) as host:
        hire: list[str] = []
        timings = [
            timed_change(box, "new hire", lambda: hire.append(tenant.add_user(
                {"displayName": "Ada Lovelace", "userPrincipalName": "ada@sandbox.example", "accountEnabled": True,
                 "department": "Engineering"}, manager_id=ids[0])),
                lambda: bool(hire) and user(hire[0]) is not None),
            timed_change(box, "manager change", lambda: tenant.set_manager(mover, ids[2]),
                         lambda: user(mover).attributes.get("Manager") == [user(ids[2]).key]),
            timed_change(box, "leaver (account disabled)", lambda: tenant.update_user(leaver, accountEnabled=False),
                         lambda: user(leaver).attributes.get("Status") == ["Disabled"]),
            timed_change(box, "joins a group", lambda: tenant.add_member(group, joiner),
                         lambda: user(joiner).key in assets.find("Group", "Entra Object ID", group)
                         .attributes.get("Members", [])),
        ]
        webhook_calls = sum(1 for name, *_ in host.invocations if name == "graph_webhook")
    path = "Graph event → Event Grid" if delivery == "eventgrid" else "Graph notification → webhook"
    table = Table(title=f"Live changes ({path} → queue → worker → Assets)")
    table.add_column("change")
    table.add_column("notification → in Assets", justify="right")
    for timing in timings:
        table.add_row(timing.label, f"{timing.latency * 1000:,.0f} ms")
    console.print(table)
    if delivery != "eventgrid":
        return True
    events = Counter(outcome for _, outcome, _ in box.event_grid.published)
    console.print(f"Event Grid: {events['delivered']} events delivered to the queue, the webhook called "
                  f"{webhook_calls} times")
    return webhook_calls == 0 and events["delivered"] >= len(timings)


def _summary(box: Sandbox, console: Console, second: SyncReport, third: SyncReport, seconds: float) -> int:
    facts = verify_users(box.tenant, box.assets) | verify_directory(box.tenant, box.assets) \
        | verify_licences(box.tenant, box.assets) | verify_managed_devices(box.tenant, box.assets)
    facts["users with a Last Sign-In"] = sum(1 for o in box.assets.objects("User") if o.attributes.get("Last Sign-In"))
    derived = Counter({name: len(box.assets.objects(name))
                       for name in ("Group", "Device", "Application", "License", "Managed Device", "Department",
                                    "Office Location", "Address", "City", "Country")})
    table = Table(title="Assets after the demo", show_header=False)
    for name, value in facts.items():
        table.add_row(name, f"{value:,}")
    for name, value in derived.items():
        table.add_row(f"{name} objects", f"{value:,}")
    deleted = Counter(name for name in ("User", "Device") for status in statuses(box.assets, name).values()
                      if status == "Deleted")
    for name, value in sorted(deleted.items()):
        table.add_row(f"{name} objects marked Deleted (kept)", f"{value:,}")
    linked = sum(1 for o in box.assets.objects("User") if o.attributes.get("Jira User"))
    table.add_row("User objects linked to a Jira user (Jira User)", f"{linked:,}")
    table.add_row("Assets executions in all", str(len(box.assets.executions)))
    table.add_row("demo time", f"{seconds:.1f} s")
    console.print(table)
    links = [k.removesuffix(" in tenant") for k in facts if k.endswith("links in tenant")]
    ok = (facts["users in Assets"] == facts["users in tenant"] + 1  # the departed user stays, as Deleted
          and facts["managers resolved"] == facts["managers in tenant"]
          and all(facts[f"{k} resolved"] == facts[f"{k} in tenant"] for k in links)
          and deleted == {"User": 1, "Device": 1}
          and second.executions == 0 and third.executions == 1)
    console.print("[green]demo finished: every object is in Assets with its references resolved, departures are "
                  "marked Deleted, and the unchanged tenant started no execution[/green]" if ok
                  else "[red]demo finished with differences (see above)[/red]")
    return 0 if ok else 1
