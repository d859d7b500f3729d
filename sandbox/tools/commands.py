"""The sandbox's commands of the ``entra-assets`` CLI: ``demo``, ``sandbox`` and ``serve``.

``register`` adds them to the CLI's group; ``shared/cli.py`` finds it through the entry point
``entra_assets.commands`` (pyproject.toml), so the product itself never imports the sandbox. The CLI's helpers
are imported when a command runs, not here: ``shared/cli.py`` loads this module while it is itself loading.
"""
from __future__ import annotations

import sys
import time

import click

from shared.errors import EntraAssetsError


def register(group: click.Group) -> None:
    """Add ``serve``, ``demo`` and ``sandbox`` to ``group`` (the ``entra-assets`` CLI)."""
    for command in (serve, demo, sandbox):
        group.add_command(command)


@click.command()
@click.option("--port", default=7071, show_default=True, help="Loopback port of the HTTP functions (/api/...).")
@click.option("--no-timer", is_flag=True, help="Do not run timer_sync on its schedule.")
@click.option("--function-key", envvar="ENTRA_ASSETS_FUNCTION_KEY", default=None,
              help="The key the HTTP functions require (code=... or x-functions-key); random when not given.")
def serve(port: int, no_timer: bool, function_key: str | None) -> None:
    """Run the app's functions on this machine - the webhook over HTTP on loopback, the queue worker, the
    timer - calling the same handlers Azure runs (the Functions host itself cannot be installed offline)."""
    from sandbox.host.functions_host import FunctionsHost
    from shared.cli import _fail, _settings, out

    try:
        settings = _settings()
    except EntraAssetsError as error:
        _fail(error)
    host = FunctionsHost(run_timer=not no_timer, function_key=function_key).start(port=port)
    # The key is printed to this terminal only (as the Azure portal shows it to its admin), never logged.
    out.print(f"graph_webhook at {host.function_url('graph-webhook')}\nstatus page at {host.function_url('status')}"
              f"\nsubmit_worker on queue {settings.queue_name}"
              + ("" if no_timer else f"; timer_sync on '{settings.timer_schedule}'") + ". Ctrl+C stops.",
              highlight=False)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        host.stop()


@click.command()
@click.option("--users", default=2000, show_default=True, help="Size of the synthetic tenant.")
@click.option("--seed", default=1, show_default=True)
@click.option("--delivery", type=click.Choice(["webhook", "eventgrid"]), default="webhook", show_default=True,
              help="How Graph's change notifications reach the app in the live part (NOTIFICATION_DELIVERY).")
def demo(users: int, seed: int, delivery: str) -> None:
    """Run the real pipeline against the sandbox (emulated Graph and Assets on loopback)."""
    from sandbox.tools.demo import run_demo
    from shared.cli import out

    sys.exit(run_demo(users=users, seed=seed, console=out, delivery=delivery))


@click.command()
@click.option("--users", default=2000, show_default=True)
@click.option("--seed", default=1, show_default=True)
@click.option("--graph-port", default=8765, show_default=True)
@click.option("--assets-port", default=8766, show_default=True)
@click.option("--graph-latency-ms", default=0, show_default=True, type=click.IntRange(min=0),
              help="Delay before the emulated Graph answers each request (real Graph: hundreds of ms a page).")
@click.option("--assets-latency-ms", default=0, show_default=True, type=click.IntRange(min=0),
              help="Delay before the emulated Assets answers each request.")
@click.option("--sign-in-window", default=60.0, show_default=True, type=click.FloatRange(min=0.001),
              help="Seconds of Graph's window of 10 signInActivity requests (60: as documented; the bench shrinks "
                   "it so a 100,000-user tenant does not take 20 minutes).")
def sandbox(users: int, seed: int, graph_port: int, assets_port: int, graph_latency_ms: int,
            assets_latency_ms: int, sign_in_window: float) -> None:
    """Run the emulators in the foreground and print the settings that point the app at them."""
    from sandbox.emulators import start_sandbox
    from shared.cli import out

    box = start_sandbox(users=users, seed=seed, graph_port=graph_port, assets_port=assets_port)
    box.graph.latency, box.assets.latency = graph_latency_ms / 1000, assets_latency_ms / 1000
    box.graph.sign_in_limit = (10, sign_in_window)
    out.print("Sandbox running. Point entra-assets at it with:\n")
    for name, value in box.settings().items():
        out.print(f"export {name}={value}")
    out.print("\nPress Ctrl+C to stop.")
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        box.stop()
