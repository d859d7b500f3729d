"""``entra-assets demo``: the real pipeline against the sandbox, ending with a readable summary.

Steps: start the emulators, ``check``, ``setup``, a first full sync (everything is new), a second full sync of
the unchanged tenant (no execution at all), then a few changes in the tenant - a new hire, a manager change, a
department respelt, an account disabled - and a third full sync that pushes only those.
"""
from __future__ import annotations

import tempfile
import time
from collections import Counter

from rich.console import Console
from rich.table import Table

from sandbox.emulators import Sandbox, start_sandbox
from shared.runtime import SyncReport, sync_full
from shared.schema import USER
from shared.settings import load_settings
from shared.setup import run_setup
from shared.status import check_all


def verify(box: Sandbox) -> dict[str, int]:
    """Compare the emulated Assets store with the tenant: users present, managers and departments resolved."""
    users = {o.attributes["Entra Object ID"][0]: o for o in box.assets.objects(USER.name)}
    by_key = {o.key: o for o in users.values()}
    managers_ok = departments_ok = offices_ok = 0
    for uid, user in box.tenant.users.items():
        obj = users.get(uid)
        if obj is None:
            continue
        manager = box.tenant.managers.get(uid)
        refs = obj.attributes.get("Manager") or []
        if manager and refs and by_key[refs[0]].attributes["Entra Object ID"][0] == manager:
            managers_ok += 1
        departments_ok += bool(user.get("department") and obj.attributes.get("Department"))
        offices_ok += bool(user.get("officeLocation") and obj.attributes.get("Office Location"))
    return {"users in tenant": len(box.tenant.users), "users in Assets": len(users),
            "managers in tenant": sum(1 for u in box.tenant.users if box.tenant.managers.get(u)),
            "managers resolved": managers_ok,
            "departments resolved": departments_ok, "office locations resolved": offices_ok}


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
    return [f"new hire {hire[:8]}…", f"manager change {mover[:8]}…", f"account disabled {leaver[:8]}…",
            f"department respelt {renamed[:8]}…"]


def _sync_row(table: Table, label: str, report: SyncReport) -> None:
    submit = sum(p.seconds.get("submit", 0) for p in report.pushes)
    wait = sum(p.seconds.get("wait", 0) for p in report.pushes)
    table.add_row(label, f"{report.full.users:,}", f"{report.full.queued:,}", str(report.executions),
                  f"{report.records_pushed:,}", f"{report.full.seconds.get('fetch_and_format', 0):.2f}",
                  f"{submit:.2f}", f"{wait:.2f}", f"{report.seconds:.2f}")


def run_demo(users: int = 2000, seed: int = 1, console: Console | None = None) -> int:
    """Run the demo; returns the exit status (0 when every check held)."""
    console = console or Console()
    started = time.monotonic()
    box = start_sandbox(users=users, seed=seed)
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
            for col in ("run", "users", "changed", "executions", "pushed", "fetch+format s", "submit s",
                        "Assets s", "total s"):
                table.add_column(col, justify="right" if col != "run" else "left")
            _sync_row(table, "1 first sync", sync_full(settings))
            _sync_row(table, "2 unchanged tenant", second := sync_full(settings))
            changes = _change_tenant(box)
            _sync_row(table, "3 after changes", third := sync_full(settings))
            console.print(table)
            console.print("changes made in the tenant: " + ", ".join(changes))
            return _summary(box, console, second, third, time.monotonic() - started)
    finally:
        box.stop()


def _summary(box: Sandbox, console: Console, second: SyncReport, third: SyncReport, seconds: float) -> int:
    facts = verify(box)
    derived = Counter({name: len(box.assets.objects(name))
                       for name in ("Department", "Office Location", "Address", "City", "Country")})
    table = Table(title="Assets after the demo", show_header=False)
    for name, value in facts.items():
        table.add_row(name, f"{value:,}")
    for name, value in derived.items():
        table.add_row(f"{name} objects", f"{value:,}")
    table.add_row("Assets executions in all", str(len(box.assets.executions)))
    table.add_row("demo time", f"{seconds:.1f} s")
    console.print(table)
    ok = (facts["users in Assets"] == facts["users in tenant"]
          and facts["managers resolved"] == facts["managers in tenant"]
          and second.executions == 0 and third.executions == 1)
    console.print("[green]demo finished: every user is in Assets with managers resolved; the unchanged tenant "
                  "started no execution[/green]" if ok else "[red]demo finished with differences (see above)[/red]")
    return 0 if ok else 1
