"""``make bench``: a full sync of a 100,000-user sandbox tenant (5,000 groups, 80,000 devices, 2,000
applications), measured.

The emulators run in their own process (``entra-assets sandbox``) so that the sync's peak memory and CPU time
are ours alone. The sync runs in a child process too: its peak RSS is its own (``wait4``). Reported: wall
time, peak RSS, users/s of wall time and of our own CPU time, Graph requests against the tenant's page count
(counted by a plain crawl of the same reads), Assets requests and records, a second (unchanged) run, and msgraph-sdk's typed-model parsing of a sample of the same pages for comparison.

The floor, measured in the same run: the least any sync of this tenant costs - the same pages read raw (httpx)
and parsed (orjson), and the same number of records posted in 500-record chunks to a loopback sink that
discards them. Our CPU and wall time are reported as multiples of it. Targets are checked here, not in tests.

``--compare DIR`` (``make bench COMPARE=DIR``) syncs the same tenant with DIR's code as well, against the same
sandbox in the same run, in ABBA order over ``--rounds`` (default 2), and prints both side by side, each tree's
least-CPU round: machines here are too noisy for figures of two runs.
"""
from __future__ import annotations

import argparse
import json
import os
import socket
import socketserver
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx

TARGET_USERS_PER_CPU_SECOND = 20_000
TARGET_PEAK_RSS_MB = 200
GRAPH_REQUEST_SLACK = 5
TARGET_P50_S, TARGET_P95_S, TARGET_WEBHOOK_P99_MS = 1.0, 2.0, 100


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_for(url: str, seconds: float = 120) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            httpx.get(url, timeout=1)
            return
        except httpx.HTTPError:
            time.sleep(0.2)
    raise SystemExit(f"the sandbox did not come up at {url}")


@dataclass
class SandboxProcess:
    """The emulators in a process of their own (``entra-assets sandbox``), up and answering."""

    process: subprocess.Popen
    graph_url: str
    assets_url: str

    def settings(self) -> dict[str, str]:
        """The settings that aim entra-assets at it (no home: each sync brings its own)."""
        from sandbox.emulators import GRAPH_TOKEN, IMPORT_TOKEN, OBJECT_ALLOWANCE

        return {"GRAPH_BASE_URL": self.graph_url, "GRAPH_ACCESS_TOKEN": GRAPH_TOKEN,
                "ASSETS_API_URL": self.assets_url, "ASSETS_IMPORT_TOKEN": IMPORT_TOKEN,
                "ASSETS_OBJECT_LIMIT": OBJECT_ALLOWANCE}

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=60)


def start_sandbox(users: int, seed: int, graph_latency_ms: int = 0, assets_latency_ms: int = 0,
                  wait_seconds: float = 120) -> SandboxProcess:
    """Start the emulators for a ``users``-user tenant on free loopback ports and wait until Graph answers."""
    graph_port, assets_port = _free_port(), _free_port()
    process = subprocess.Popen([sys.executable, "-m", "shared.cli", "sandbox", "--users", str(users), "--seed",
                                str(seed), "--graph-port", str(graph_port), "--assets-port", str(assets_port),
                                "--graph-latency-ms", str(graph_latency_ms),
                                "--assets-latency-ms", str(assets_latency_ms),
                                # Graph's documented 10 sign-in requests a minute would make the sign-in listing
                                # of a 100,000-user tenant take 20 minutes; measured apart (README), not here.
                                "--sign-in-window", "0.01"], stdout=subprocess.DEVNULL)
    box = SandboxProcess(process, f"http://127.0.0.1:{graph_port}/v1.0", f"http://127.0.0.1:{assets_port}")
    try:
        _wait_for(f"{box.graph_url}/organization", wait_seconds)
    except BaseException:
        box.stop()
        raise
    return box


def child(env: dict[str, str]) -> dict:
    """One ``sync --full`` in this process, with counted clients; returns the figures as a dict."""
    from shared.app import assets_client, graph_client, sync_full
    from shared.settings import load_settings

    settings = load_settings(env)
    graph, assets = graph_client(settings), assets_client(settings)
    cpu, wall = time.process_time(), time.monotonic()
    report = sync_full(settings, graph=graph, assets=assets, repair=env.get("BENCH_REPAIR") == "1")
    return {"wall_s": time.monotonic() - wall, "cpu_s": time.process_time() - cpu, "users": report.full.users,
            "read": dict(report.full.read),
            "graph_requests": graph.transport.requests, "graph_pages": report.full.graph_pages,
            "assets_requests": assets.transport.requests, "records_pushed": report.records_pushed,
            "chunks": sum(p.chunks for p in report.pushes), "executions": report.executions,
            "fetch_format_s": report.full.seconds.get("fetch_and_format", 0.0),
            "segments": report.full.segments,
            "assets_wait_s": sum(p.seconds.get("wait", 0.0) for p in report.pushes)}


def _run_child(env: dict[str, str], tree: Path | None = None) -> tuple[dict, float]:
    """One ``sync --full`` in a child process, with this tree's code or ``tree``'s (``PYTHONPATH``); returns its
    figures and its own peak RSS in MB (``wait4``: the child's alone, not the maximum over all children)."""
    env = {**os.environ, **env, **({"PYTHONPATH": str(tree)} if tree else {})}
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        proc = subprocess.Popen([sys.executable, "-m", "sandbox.tools.bench", "--child"], env=env, cwd=tree,
                                stdout=out, stderr=err)
        _, status, usage = os.wait4(proc.pid, 0)
        out.seek(0), err.seek(0)
        if status:
            raise SystemExit(f"sync failed ({tree or 'this tree'}):\n{err.read().decode()[-3000:]}")
        figures = json.loads(out.read().decode().strip().splitlines()[-1])
    return figures, usage.ru_maxrss / 1024  # kilobytes on Linux


def _sync_twice(env: dict[str, str], tree: Path | None = None) -> tuple[dict, dict, float]:
    """``setup``, a first full sync of the tenant and a second (unchanged) one, in a fresh home: the figures of
    both and the first one's peak RSS. This tree also runs a third, a repair run (``sync --full --repair``),
    whose figures are the second's ``repair``."""
    with tempfile.TemporaryDirectory(prefix="entra-assets-bench-") as home:
        env = {**env, "ENTRA_ASSETS_HOME": home}
        subprocess.run([sys.executable, "-m", "shared.cli", "setup"], cwd=tree, check=True, stdout=subprocess.DEVNULL,
                       env={**os.environ, **env, **({"PYTHONPATH": str(tree)} if tree else {})})
        first, peak_mb = _run_child(env, tree)
        second, _ = _run_child(env, tree)
        if tree is None:
            second["repair"], second["repair_peak_mb"] = _run_child({**env, "BENCH_REPAIR": "1"})
    return first, second, peak_mb


# The reads of a full run, as the sync makes them: the planner's own chains (shared/produce/full.py), path and query.
def _full_run_reads() -> list[tuple[str, dict]]:
    from shared.produce.full import chains
    from shared.produce.plan import RunOptions

    options = RunOptions()
    return [(chain.path, chain.params) for chain in chains(options, options.object_types).values()]


def tenant_pages(graph_url: str, token: str) -> dict[str, int]:
    """How many pages the tenant has for each read of a full run, counted by a plain crawl of nextLinks."""
    pages = {}
    with httpx.Client(headers={"Authorization": f"Bearer {token}"}, timeout=60) as client:
        for path, params in _full_run_reads():
            url, n = f"{graph_url}/{path}", 0
            while url:
                response = client.get(url, params=params if n == 0 else None)
                response.raise_for_status()
                n += 1
                url = response.json().get("@odata.nextLink")
            pages[path] = n
    return pages


class _Sink(socketserver.StreamRequestHandler):
    """Answers every request on a keep-alive connection with an empty 200, reading and discarding its body."""

    def handle(self) -> None:
        while True:
            length = 0
            while (line := self.rfile.readline()) not in (b"\r\n", b"\n"):
                if not line:
                    return
                if line[:15].lower() == b"content-length:":
                    length = int(line[15:])
            self.rfile.read(length)
            self.wfile.write(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")


def floor(graph_url: str, token: str, records: int, chunk: int = 500) -> dict:
    """The floor of a full sync of this tenant: every page of the full run's reads fetched with httpx and parsed
    with orjson, then ``records`` records (Graph objects of those pages, over again) posted as JSON in chunks of
    ``chunk`` to a loopback sink in another thread. CPU is this thread's own (``thread_time``), so the sink's
    work is not counted, as the emulators' work is not counted in ours."""
    import orjson

    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), _Sink)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    sample: list[dict] = []
    cpu, wall = time.thread_time(), time.monotonic()
    with httpx.Client(headers={"Authorization": f"Bearer {token}"}, timeout=60) as client:
        for path, params in _full_run_reads():
            url, query = f"{graph_url}/{path}", params
            while url:
                page = orjson.loads(client.get(url, params=query).raise_for_status().content)
                if len(sample) < chunk:
                    sample += page.get("value", ())[:chunk - len(sample)]
                url, query = page.get("@odata.nextLink"), None
    read_cpu, read_wall = time.thread_time() - cpu, time.monotonic() - wall
    sink = f"http://127.0.0.1:{server.server_address[1]}/chunks"
    with httpx.Client(timeout=60) as client:
        for n, start in enumerate(range(0, records, chunk)):
            data = [sample[i % len(sample)] for i in range(start, min(start + chunk, records))]
            body = orjson.dumps({"data": {"objects": data}, "clientGeneratedId": f"chunk-{n:05d}",
                                 "completed": start + chunk >= records})
            client.post(sink, content=body, headers={"Content-Type": "application/json"}).raise_for_status()
    server.shutdown()
    server.server_close()
    return {"cpu_s": time.thread_time() - cpu, "wall_s": time.monotonic() - wall, "read_cpu_s": read_cpu,
            "read_wall_s": read_wall}


def owner_strategies(graph_url: str, token: str) -> dict[str, tuple[int, float]]:
    """Group owners read two ways - ``$expand=owners`` on the listing (what the sync does) and ``$batch`` of
    ``/groups/{id}/owners`` (20 per batch) - as (requests, seconds), so the choice stays measured."""
    out = {}
    with httpx.Client(base_url=graph_url, headers={"Authorization": f"Bearer {token}"}, timeout=60) as client:
        def pages(url: str, params: dict | None) -> Iterator[dict]:
            while url:
                page = client.get(url, params=params).raise_for_status().json()
                yield page
                url, params = page.get("@odata.nextLink"), None
        started, requests = time.perf_counter(), 0
        for _ in pages("/groups", {"$select": "id", "$expand": "owners", "$top": "999"}):
            requests += 1
        out["$expand=owners on the listing"] = (requests, time.perf_counter() - started)
        started, requests, ids = time.perf_counter(), 0, []
        for page in pages("/groups", {"$select": "id", "$top": "999"}):
            requests += 1
            ids += [g["id"] for g in page["value"]]
        for i in range(0, len(ids), 20):
            batch = [{"id": str(n), "method": "GET", "url": f"/groups/{gid}/owners?$select=id"}
                     for n, gid in enumerate(ids[i:i + 20])]
            client.post("/$batch", json={"requests": batch}).raise_for_status()
            requests += 1
        out["$batch of /groups/{id}/owners"] = (requests, time.perf_counter() - started)
    return out


def live_latency(changes: int = 200, users: int = 2000) -> dict:
    """Near-real-time path on a fresh sandbox (emulators, functions and the embedded store in this process):
    ``changes`` sequential job-title changes, each timed from the webhook queuing Graph's notification to the
    change showing in the Assets emulator (no artificial delay); then the webhook under 100 requests/s."""
    from sandbox.emulators import start_sandbox
    from sandbox.host.live import live, percentile, settings, timed_change, webhook_load
    from shared.app import sync_full

    box = start_sandbox(users=users, seed=2)
    try:
        with tempfile.TemporaryDirectory(prefix="entra-assets-live-") as home:
            env = {**box.settings(), "ENTRA_ASSETS_HOME": home}
            with live(box, env) as host:  # setup done, subscriptions live
                sync_full(settings())
                ids = sorted(box.tenant.users)
                timings = []
                for n in range(changes):
                    uid, title = ids[n % len(ids)], f"Title {n}"
                    find = lambda u=uid, t=title: (box.assets.find("User", "Entra Object ID", u)
                                                   .attributes.get("Job Title") == [t])
                    timings.append(timed_change(box, title, lambda u=uid, t=title: box.tenant.update_user(
                        u, jobTitle=t), find).latency)
                responses = webhook_load(host.function_url("graph-webhook"), rate=100, seconds=5)
            strategies = catch_up_strategies(box, env, changed=1000)
    finally:
        box.stop()
    return {"changes": len(timings), "p50": percentile(timings, 50), "p95": percentile(timings, 95),
            "requests": len(responses), "webhook_p99": percentile(responses, 99), "strategies": strategies}


def catch_up_strategies(box, env: dict[str, str], changed: int) -> dict[str, tuple[int, float]]:
    """After ``changed`` users changed, read their fresh state two ways - the stored delta link (what the
    worker does) and per-id reads in ``$batch`` requests of 20 - as (requests, seconds)."""
    from shared.app import open_backend
    from shared.contract.checkpoints import USERS_DELTA
    from shared.records.build import USER_SELECT
    from shared.settings import load_settings

    link = open_backend(load_settings(env)).state.checkpoint(USERS_DELTA)
    ids = sorted(box.tenant.users)[:changed]
    for uid in ids:
        box.tenant.update_user(uid, jobTitle="Strategy")
    out = {}
    with httpx.Client(headers={"Authorization": f"Bearer {env['GRAPH_ACCESS_TOKEN']}"}, timeout=60) as client:
        started, requests, url = time.perf_counter(), 0, link
        while url:
            page = client.get(url).raise_for_status().json()
            requests += 1
            url = page.get("@odata.nextLink")
        out["delta link (one round)"] = (requests, time.perf_counter() - started)
        started, requests, select = time.perf_counter(), 0, ",".join(s for s in USER_SELECT if s != "manager")
        for i in range(0, len(ids), 20):
            batch = [{"id": str(n), "method": "GET", "url": f"/users/{uid}?$select={select}&$expand=manager"}
                     for n, uid in enumerate(ids[i:i + 20])]
            answers = client.post(f"{env['GRAPH_BASE_URL']}/$batch", json={"requests": batch}).raise_for_status()
            if any(item["status"] != 200 for item in answers.json()["responses"]):
                raise SystemExit("a per-id read in $batch failed: the comparison would not be fair")
            requests += 1
        out["per-id reads ($batch of 20)"] = (requests, time.perf_counter() - started)
    return out


def typed_model_sample(graph_url: str, token: str, pages: int = 3) -> dict:
    """Parse a few real delta pages with msgraph-sdk's typed models and with orjson; per-user costs."""
    import orjson
    from kiota_serialization_json.json_parse_node_factory import JsonParseNodeFactory
    from msgraph.generated.users.delta.delta_get_response import DeltaGetResponse

    from shared.records.build import USER_SELECT

    headers = {"Authorization": f"Bearer {token}"}
    url, bodies = f"{graph_url}/users/delta?$select={','.join(USER_SELECT)}", []
    with httpx.Client(headers=headers, timeout=60) as client:
        for _ in range(pages):
            response = client.get(url)
            bodies.append(response.content)
            url = response.json().get("@odata.nextLink")
    users = sum(len(orjson.loads(b)["value"]) for b in bodies)
    JsonParseNodeFactory().get_root_parse_node("application/json", bodies[0])  # imports out of the timing
    started = time.perf_counter()
    for body in bodies:
        JsonParseNodeFactory().get_root_parse_node("application/json", body).get_object_value(DeltaGetResponse)
    typed = time.perf_counter() - started
    started = time.perf_counter()
    for body in bodies:
        orjson.loads(body)
    raw = time.perf_counter() - started
    return {"users": users, "typed_ms_per_user": 1000 * typed / users, "raw_ms_per_user": 1000 * raw / users}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=100_000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--compare", type=Path, action="append", default=[], metavar="DIR",
                        help="also sync with DIR's code (e.g. `git worktree add DIR main`), interleaved with ours")
    parser.add_argument("--rounds", type=int, default=2,
                        help="with --compare: rounds of syncs, in ABBA order; each tree's least CPU is reported")
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(dict(os.environ))))
        return 0
    from sandbox.emulators import GRAPH_TOKEN

    print(f"generating a {args.users:,}-user tenant (with groups, devices and applications in proportion) and "
          "starting the sandbox in its own process …", flush=True)
    sandbox = start_sandbox(args.users, args.seed)
    try:
        graph_url, env = sandbox.graph_url, sandbox.settings()
        first, second, peak_mb, others = _syncs(env, args.compare, args.rounds)
        least = floor(graph_url, GRAPH_TOKEN, first["records_pushed"])
        sample = typed_model_sample(graph_url, GRAPH_TOKEN)
        pages = tenant_pages(graph_url, GRAPH_TOKEN)
        owners = owner_strategies(graph_url, GRAPH_TOKEN)
    finally:
        sandbox.stop()
    latency = live_latency()
    verdict = _report(args.users, first, second, peak_mb, least, sample, pages, owners, latency)
    if others:
        _compare(first, second, peak_mb, least, others)
    return verdict


def _syncs(env: dict[str, str], trees: list[Path], rounds: int
           ) -> tuple[dict, dict, float, dict[Path, tuple[dict, dict, float]]]:
    """Our syncs and each ``trees`` one's, ``rounds`` times, every other round in reverse order (ABBA), so a
    machine that speeds up or slows down during the bench favours no tree. For each tree, the round of least
    CPU (the one least disturbed by neighbours). Without ``trees``, our one sync."""
    order: list[Path | None] = [None, *(tree.resolve() for tree in trees)]
    runs: dict[Path | None, list[tuple[dict, dict, float]]] = {tree: [] for tree in order}
    for n in range(rounds if trees else 1):
        for tree in order if n % 2 == 0 else order[::-1]:
            runs[tree].append(_sync_twice(env, tree))
    best = {tree: min(found, key=lambda figures: figures[0]["cpu_s"]) for tree, found in runs.items()}
    first, second, peak_mb = best.pop(None)
    return first, second, peak_mb, {tree: figures for tree, figures in best.items() if tree is not None}


def _compare(first: dict, second: dict, peak_mb: float, least: dict,
             others: dict[Path, tuple[dict, dict, float]]) -> None:
    """Ours beside each ``--compare`` tree's, synced against the same sandbox in the same run."""
    def row(name: str, one: dict, two: dict, peak: float) -> tuple[str, ...]:
        return (name, f"{one['cpu_s']:.1f} s", f"{one['users'] / one['cpu_s']:,.0f}", f"{one['wall_s']:.1f} s",
                f"{peak:.0f} MB", f"{one['cpu_s'] / least['cpu_s']:.1f}x", f"{one['wall_s'] / least['wall_s']:.1f}x",
                f"{two['cpu_s']:.1f} s", f"{one['cpu_s'] / first['cpu_s']:.2f}")
    rows = [("code", "CPU", "users/CPU-s", "wall", "peak RSS", "CPU/floor", "wall/floor", "2nd run CPU",
             "CPU vs ours"), row("this tree", first, second, peak_mb)]
    rows += [row(str(tree), *figures) for tree, figures in others.items()]
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    print()
    for r in rows:
        print("  ".join(cell.ljust(w) for cell, w in zip(r, widths)))


def _report(users: int, first: dict, second: dict, peak_mb: float, least: dict, sample: dict, pages: dict[str, int],
            owners: dict[str, tuple[int, float]], latency: dict) -> int:
    per_cpu = first["users"] / first["cpu_s"]
    tenant_pages = sum(pages.values())
    checks = {
        f"own processing >= {TARGET_USERS_PER_CPU_SECOND:,} users/s": per_cpu >= TARGET_USERS_PER_CPU_SECOND,
        f"peak RSS <= {TARGET_PEAK_RSS_MB} MB": peak_mb <= TARGET_PEAK_RSS_MB,
        f"Graph requests <= tenant pages + {GRAPH_REQUEST_SLACK}":
            first["graph_requests"] <= tenant_pages + GRAPH_REQUEST_SLACK,
        "unchanged tenant starts no execution": second["executions"] == 0,
        "a repair run pushes every record again in one execution":
            (second["repair"]["records_pushed"], second["repair"]["executions"]) == (first["records_pushed"], 1),
        "every user read": first["users"] == users,
        f"incremental latency p50 <= {TARGET_P50_S} s": latency["p50"] <= TARGET_P50_S,
        f"incremental latency p95 <= {TARGET_P95_S} s": latency["p95"] <= TARGET_P95_S,
        f"webhook p99 <= {TARGET_WEBHOOK_P99_MS} ms at 100 requests/s":
            latency["webhook_p99"] * 1000 <= TARGET_WEBHOOK_P99_MS,
    }
    rows = [
        ("objects read", ", ".join(f"{k} {v:,}" for k, v in first["read"].items())),
        ("sync --full wall time", f"{first['wall_s']:.1f} s ({first['users'] / first['wall_s']:,.0f} users/s)"),
        ("  of which Graph read + mapping", f"{first['fetch_format_s']:.1f} s"),
        ("  of which waiting for Assets", f"{first['assets_wait_s']:.1f} s"),
        ("segments read", f"{len(first.get('segments') or [])} ("
                          + ", ".join(f"{s:.1f}" for s in first.get("segments") or []) + " s)"),
        ("our CPU time", (f"{first['cpu_s']:.1f} s ({per_cpu:,.0f} users/s of own processing, all object types "
                         "included)")),
        ("floor (raw read + orjson, no-op sink)", (f"CPU {least['cpu_s']:.1f} s (reads {least['read_cpu_s']:.1f} s), "
                                                   f"wall {least['wall_s']:.1f} s (reads {least['read_wall_s']:.1f} s)")),
        ("  ours against the floor", (f"CPU {first['cpu_s'] / least['cpu_s']:.1f}x, "
                                      f"wall {first['wall_s'] / least['wall_s']:.1f}x")),
        ("peak RSS of the sync process", f"{peak_mb:.0f} MB"),
        ("Graph requests", f"{first['graph_requests']} (tenant pages: {tenant_pages}: "
                           + ", ".join(f"{k} {v}" for k, v in pages.items()) + ")"),
        ("Assets requests", (f"{first['assets_requests']} ({first['chunks']} chunks, "
                             f"{first['executions']} execution)")),
        ("Assets records pushed", f"{first['records_pushed']:,}"),
        ("second run (unchanged)", (f"{second['wall_s']:.1f} s, {second['executions']} executions, "
                                    f"{second['assets_requests']} Assets requests, "
                                    f"{second['graph_requests']} Graph requests")),
        ("repair run (sync --full --repair)", (
            f"{second['repair']['wall_s']:.1f} s wall ({second['repair']['assets_wait_s']:.1f} s waiting for "
            f"Assets), CPU {second['repair']['cpu_s']:.1f} s, {second['repair']['records_pushed']:,} records "
            f"in {second['repair']['executions']} execution, {second['repair']['assets_requests']} Assets "
            f"requests, peak RSS {second['repair_peak_mb']:.0f} MB")),
        ("msgraph-sdk typed models", (f"{sample['typed_ms_per_user']:.2f} ms/user on {sample['users']} users "
                                      f"= {sample['typed_ms_per_user'] * users / 1000:,.0f} s for the tenant")),
        ("raw JSON (orjson)", (f"{sample['raw_ms_per_user']:.4f} ms/user "
                               f"({sample['typed_ms_per_user'] / max(sample['raw_ms_per_user'], 1e-9):,.0f}x faster)")),
    ] + [(f"group owners: {way}", f"{n} requests, {seconds:.2f} s") for way, (n, seconds) in owners.items()] + [
        ("incremental latency", (f"p50 {latency['p50'] * 1000:,.0f} ms, p95 {latency['p95'] * 1000:,.0f} ms over "
                                f"{latency['changes']} changes (notification queued -> in Assets)")),
        *((f"catch-up of 1,000 changed users: {way}", f"{n} requests, {sec:.2f} s")
          for way, (n, sec) in latency["strategies"].items()),
        ("webhook at 100 requests/s", (f"p99 {latency['webhook_p99'] * 1000:.1f} ms over {latency['requests']} "
                                      "requests")),
    ]
    width = max(len(k) for k, _ in rows)
    print()
    for key, value in rows:
        print(f"{key:<{width}}  {value}")
    print()
    for name, ok in checks.items():
        print(f"{'PASS' if ok else 'FAIL'}  {name}")
    return 0 if all(checks.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
