"""``make bench-latency``: one ``sync --full`` against emulators that answer as slowly as the real services -
50 ms a Graph request, 100 ms an Assets one - on a 20,000-user tenant, measured against the page chains it
has to read.

Against real latency a full run's wall time is set by its chains of pages: read one after another, it is their
sum; read concurrently (shared/produce/prefetch.py), about the longest one. The target: wall time at most
1.2 x the longest chain plus the Assets time - the time spent on Assets before the read (the import checks,
recovery) and after it (pushing, waiting for the execution), which no concurrency of Graph reads can shorten.

The sandbox runs in its own process (``entra-assets sandbox --graph-latency-ms --assets-latency-ms``), the
sync in a child process. The chains are counted by a plain crawl of the same reads
(``sandbox.tools.bench.tenant_pages``), each page costing the Graph latency. ``--compare DIR`` runs the same
sync with another tree's code (``PYTHONPATH=DIR``, e.g. ``git worktree add DIR <commit>``) against the same
sandbox, right after ours, so both figures come from one session.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TARGET_FACTOR = 1.2
ROOT = Path(__file__).resolve().parents[2]
# The child runs this file by path, so that a --compare tree (which may lack this module) is measured with
# its own shared/ and nothing of ours.
_CHILD = ("import runpy, sys; sys.argv = ['bench_latency', '--child']; "
          f"runpy.run_path({str(Path(__file__).resolve())!r}, run_name='__main__')")


def child(env: dict[str, str]) -> dict:
    """One ``sync --full`` in this process; the figures as a dict. Uses only what every tree has."""
    from shared.app import assets_client, graph_client, sync_full
    from shared.settings import load_settings

    settings = load_settings(env)
    graph, assets = graph_client(settings), assets_client(settings)
    started, marks = time.monotonic(), {}

    def progress(stage: str, n: int) -> None:
        marks.setdefault(stage, time.monotonic() - started)  # the first time each stage is reached
    cpu = time.process_time()
    report = sync_full(settings, progress=progress, graph=graph, assets=assets)
    return {"wall_s": time.monotonic() - started, "cpu_s": time.process_time() - cpu, "users": report.full.users,
            "before_read_s": marks.get("Starting", 0.0),  # options, the import checks and recovery (Assets)
            "read_s": report.full.seconds.get("fetch_and_format", 0.0),
            "full_run_s": report.full.seconds.get("total", 0.0),
            "push_s": sum(p.seconds.get("push", 0.0) for p in report.pushes),
            "graph_requests": graph.transport.requests, "assets_requests": assets.transport.requests,
            "records": report.records_pushed, "failed": sorted(report.full.failed),
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}  # kilobytes on Linux


def _sync(tree: Path, env: dict[str, str]) -> dict:
    """Set up a fresh home and run one sync with ``tree``'s code in a child process."""
    with tempfile.TemporaryDirectory(prefix="entra-assets-latency-") as home:
        env = {**os.environ, **env, "ENTRA_ASSETS_HOME": home, "PYTHONPATH": str(tree)}
        subprocess.run([sys.executable, "-m", "shared.cli", "setup"], env=env, cwd=tree, check=True,
                       stdout=subprocess.DEVNULL)
        proc = subprocess.run([sys.executable, "-c", _CHILD], env=env, cwd=tree, capture_output=True, text=True,
                              check=False)
    if proc.returncode:
        raise SystemExit(f"sync with {tree} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=20_000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--graph-latency-ms", type=int, default=50)
    parser.add_argument("--assets-latency-ms", type=int, default=100)
    parser.add_argument("--compare", type=Path, action="append", default=[], metavar="DIR",
                        help="also run the sync with the code in DIR (PYTHONPATH=DIR), e.g. a baseline worktree")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(child(dict(os.environ))))
        return 0
    from sandbox.emulators import GRAPH_TOKEN
    from sandbox.tools.bench import start_sandbox, tenant_pages

    print(f"generating a {args.users:,}-user tenant and starting the sandbox in its own process, "
          f"{args.graph_latency_ms} ms a Graph request, {args.assets_latency_ms} ms an Assets one …", flush=True)
    sandbox = start_sandbox(args.users, args.seed, args.graph_latency_ms, args.assets_latency_ms)
    try:
        print("counting the page chains (a plain crawl of the full run's reads) …", flush=True)
        pages = tenant_pages(sandbox.graph_url, GRAPH_TOKEN)
        env = sandbox.settings()
        runs = {}
        for tree in [ROOT, *args.compare]:
            print(f"sync --full with {tree} …", flush=True)
            runs[tree] = _sync(tree.resolve(), env)
    finally:
        sandbox.stop()
    return _report(pages, args.graph_latency_ms / 1000, runs)


def _report(pages: dict[str, int], latency: float, runs: dict[Path, dict]) -> int:
    chains = {read: n * latency for read, n in pages.items()}
    longest_read = max(chains, key=chains.get)
    longest = chains[longest_read]
    print()
    print("pages per read: " + ", ".join(f"{read} {n}" for read, n in pages.items()))
    print(f"sum of the page chains  {sum(chains.values()):.1f} s  (pages x {latency * 1000:.0f} ms)")
    print(f"longest chain           {longest:.1f} s  ({longest_read})")
    print()
    header = ("code", "wall", "read", "Assets", "target", "CPU", "peak RSS", "Graph req", "Assets req", "records")
    rows = []
    verdicts = []
    for tree, run in runs.items():
        assets = run["before_read_s"] + run["push_s"]
        target = TARGET_FACTOR * longest + assets
        ok = run["wall_s"] <= target
        verdicts.append(ok)
        rows.append((str(tree), f"{run['wall_s']:.1f} s", f"{run['read_s']:.1f} s", f"{assets:.1f} s",
                     f"{target:.1f} s", f"{run['cpu_s']:.1f} s", f"{run['peak_rss_mb']:.0f} MB",
                     str(run["graph_requests"]),
                     str(run["assets_requests"]), f"{run['records']:,}"))
        if run["failed"]:
            print(f"{tree}: types not read: {', '.join(run['failed'])}")
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    for row in [header, *rows]:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)))
    print("(read: Graph read and mapping; Assets: the import checks before it plus pushing and waiting after it;"
          f" target: {TARGET_FACTOR} x the longest chain + Assets)")
    print()
    for (tree, run), ok in zip(runs.items(), verdicts, strict=True):
        print(f"{'PASS' if ok else 'FAIL'}  {tree}: wall {run['wall_s']:.1f} s <= {TARGET_FACTOR} x longest chain "
              f"+ Assets time = {TARGET_FACTOR * longest + run['before_read_s'] + run['push_s']:.1f} s")
    return 0 if verdicts[0] else 1  # our code's verdict; compared trees are shown, not judged


if __name__ == "__main__":
    sys.exit(main())
