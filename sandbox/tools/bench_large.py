"""``make bench-large``: a full run of a big sandbox tenant (default 1,000,000 users) in segments, with the
producer, the worker and the emulators in processes of their own, and one segment killed midway (issue 11).

The sandbox runs in its own process (``entra-assets sandbox``, with a per-request latency). The producer is a
child process that runs segment after segment (``shared.produce.segments.advance``, as ``full_run_segment`` does
in Azure) until the run is planned; after ``--kill-after`` segments it is SIGKILLed in the middle of the next
one and a new producer resumes the run from its checkpoint. The worker is another child process that pushes
what the run queued (``push_queued``). Reported: the segments and their wall time, each process's peak RSS,
Graph and Assets requests, the pages read again after the kill (against a plain crawl of the tenant's pages),
and how long Assets took for the one execution of the whole directory.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def produce(env: dict[str, str]) -> dict:
    """Segments of the full run in this process until it is planned (resuming one in progress)."""
    from shared.app import graph_client, open_backend
    from shared.produce.plan import RunOptions
    from shared.produce.segments import advance
    from shared.settings import load_settings

    settings = load_settings(env)
    backend, graph = open_backend(settings), graph_client(settings)
    options = RunOptions.from_settings(settings)
    cpu, wall = time.process_time(), time.monotonic()
    result = None
    while result is None:
        result = advance(graph, backend.state, backend.queue, backend.payloads, None, options,
                         settings.segment_seconds, "bench")
    return {"cpu_s": time.process_time() - cpu, "wall_s": time.monotonic() - wall, "segments": result.segments,
            "graph_requests": graph.transport.requests, "queued": result.queued,
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def push(env: dict[str, str]) -> dict:
    """The worker in this process, as the Functions host runs it: one queue message per invocation, each with
    the budget of SEGMENT_SECONDS (``push_queued(budget=...)``: a long execution is handed on), until the queue
    is empty and no execution is handed on."""
    from shared.app import assets_client, open_backend
    from shared.deliver import handoff
    from shared.deliver.worker import push_queued
    from shared.settings import load_settings

    settings = load_settings(env)
    backend, assets = open_backend(settings), assets_client(settings)
    cpu, wall, invocations, final, sent_all = time.process_time(), time.monotonic(), [], None, None
    while True:
        batch = backend.queue.receive(max_messages=1, visibility_timeout=3600)
        if not batch:
            if handoff.load(backend.state) is None:
                break
            time.sleep(0.5)  # a hand-on message's delay
            continue
        began = time.monotonic()
        result = push_queued(backend.queue, backend.payloads, backend.state, assets, trigger=batch[0],
                             budget=settings.segment_seconds)
        invocations.append(time.monotonic() - began)
        backend.queue.delete(batch[0])
        journal = handoff.load(backend.state)
        if sent_all is None and (journal is None or journal.phase == handoff.AWAITING):
            sent_all = time.monotonic()
        if not result.handed_on and result.messages:
            final = result
    return {"cpu_s": time.process_time() - cpu, "wall_s": time.monotonic() - wall,
            "records": final.records, "executions": final.executions, "invocations": len(invocations),
            "longest_invocation_s": max(invocations), "assets_wait_s": time.monotonic() - sent_all,
            "assets_requests": assets.transport.requests,
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def _child(mode: str, env: dict[str, str]) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "sandbox.tools.bench_large", f"--{mode}"], cwd=ROOT,
                            env={**os.environ, **env}, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _figures(proc: subprocess.Popen) -> dict:
    out, err = proc.communicate()
    if proc.returncode:
        raise SystemExit(f"child failed:\n{err[-3000:]}")
    return json.loads(out.strip().splitlines()[-1])


def _peak_rss_mb(pid: int) -> float:
    """A live process's peak RSS (``VmHWM``), in MB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


def _kill_midway(env: dict[str, str], after: int) -> dict:
    """A producer killed in the middle of segment ``after`` + 1: what its cursor held, and when."""
    from shared.produce.segments import load_cursor
    from shared.settings import load_settings
    from shared.store.local import LocalStateStore

    state = LocalStateStore(load_settings(env).home)
    proc = _child("produce", env)
    while (cursor := load_cursor(state)) is None or cursor.segment < after:
        if proc.poll() is not None:
            raise SystemExit("the run ended before the kill; lower --kill-after or --segment-seconds")
        time.sleep(0.05)
    time.sleep(max(cursor.seconds[-1], 0.2) / 2)  # the middle of the next segment
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    killed = load_cursor(state)
    return {"segments": killed.segment, "pages": killed.pages}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=1_000_000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--graph-latency-ms", type=int, default=20)
    parser.add_argument("--assets-latency-ms", type=int, default=20)
    parser.add_argument("--segment-seconds", type=float, default=60)
    parser.add_argument("--kill-after", type=int, default=2, help="segments before the producer is killed")
    parser.add_argument("--produce", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--push", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.produce or args.push:
        print(json.dumps((produce if args.produce else push)(dict(os.environ))))
        return 0
    from sandbox.emulators import GRAPH_TOKEN
    from sandbox.tools.bench import start_sandbox, tenant_pages

    print(f"starting a {args.users:,}-user sandbox ({args.graph_latency_ms} ms a Graph request, "
          f"{args.assets_latency_ms} ms an Assets one), segments of {args.segment_seconds:g} s …", flush=True)
    started = time.monotonic()
    sandbox = start_sandbox(args.users, args.seed, args.graph_latency_ms, args.assets_latency_ms, wait_seconds=1800)
    try:
        graph_url = sandbox.graph_url
        ready = time.monotonic() - started
        with tempfile.TemporaryDirectory(prefix="entra-assets-large-") as home:
            env = {**sandbox.settings(), "ENTRA_ASSETS_HOME": home, "SEGMENT_SECONDS": str(args.segment_seconds)}
            subprocess.run([sys.executable, "-m", "shared.cli", "setup"], env={**os.environ, **env}, cwd=ROOT,
                           check=True, stdout=subprocess.DEVNULL)
            killed = _kill_midway(env, args.kill_after) if args.kill_after else None
            producer = _figures(_child("produce", env))
            worker = _figures(_child("push", env))
        emulators_mb = _peak_rss_mb(sandbox.process.pid)
        print("counting the tenant's pages (a plain crawl) …", flush=True)
        pages = sum(tenant_pages(graph_url, GRAPH_TOKEN).values())
    finally:
        sandbox.stop()
    return _report(args, ready, killed, producer, worker, emulators_mb, pages)


def _report(args, ready: float, killed: dict | None, producer: dict, worker: dict, emulators_mb: float,
            pages: int) -> int:
    segments = producer["segments"]
    rows = [
        ("tenant", f"{args.users:,} users; {pages:,} Graph pages; sandbox ready in {ready:.0f} s"),
        ("segments", f"{len(segments)} (" + ", ".join(f"{s:.0f}" for s in segments) + " s of reading each)"
                     + (f"; killed in segment {killed['segments'] + 1}, resumed" if killed else "")),
        ("producer" + (" (the resumed one)" if killed else ""), (f"wall {producer['wall_s']:.0f} s, CPU {producer['cpu_s']:.0f} s, "
                                   f"peak RSS {producer['peak_rss_mb']:.0f} MB, "
                                   f"{producer['graph_requests']:,} Graph requests")),
        ("worker", (f"wall {worker['wall_s']:.0f} s, CPU {worker['cpu_s']:.0f} s, peak RSS "
                   f"{worker['peak_rss_mb']:.0f} MB, {worker['assets_requests']:,} Assets requests, "
                   f"{worker['records']:,} records in {worker['executions']} execution(s), "
                   f"{worker['invocations']} invocation(s), the longest {worker['longest_invocation_s']:.0f} s")),
        ("Assets took for the execution", f"{worker['assets_wait_s']:.0f} s after the last chunk"),
        ("emulators (one process)", f"peak RSS {emulators_mb:.0f} MB"),
    ]
    if killed:
        # The resumed producer reads what the checkpoint did not hold - the killed segment's pages among them, read
        # a second time - and no checkpointed page: its requests are the rest of the tenant's pages (plus the
        # plan's few owner reads of objects with 20+ owners).
        rows.append(("after the kill", (f"{killed['pages']:,} pages checkpointed in {killed['segments']} segments; "
                                       f"the resumed producer made {producer['graph_requests']:,} requests for the "
                                       f"{pages - killed['pages']:,} pages left")))
    width = max(len(k) for k, _ in rows)
    print()
    for key, value in rows:
        print(f"{key:<{width}}  {value}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
