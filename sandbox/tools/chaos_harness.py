"""The harness of the chaos test (``sandbox/tools/chaos.py``): the sandbox, the store and the CLI runs it kills.

``Harness`` starts the emulators (the tenant tagged v0), an ``ENTRA_ASSETS_HOME`` set up with
``entra-assets setup``, and runs ``python -m shared.cli sync [--full]`` as real subprocesses. ``Tripwire``
watches the emulators' request logs and SIGKILLs a run at its ``KillPoint``. What time and an admin would
change is done here too: queue messages made visible (``visible_at = 0``), the writer lease expired, open
executions cancelled through the Assets API. Nothing in the product is changed for any of it.
"""
from __future__ import annotations

import contextlib
import datetime as dt
import os
import random
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Self

import httpx

from sandbox.assets.emulator import AssetsEmulator
from sandbox.emulators import IMPORT_TOKEN, Sandbox, start_sandbox
from sandbox.http import RecordedRequest
from sandbox.tenant.chaos import TAGS, Versions, change_tenant, tag
from sandbox.tools.verify import mismatches

ROOT = Path(__file__).resolve().parents[2]
LEASE_SECONDS = 60.0    # the writer lease (shared.deliver.worker push_queued's lease_ttl)
# Settings of the calling environment that must not leak into the sandboxed runs.
_FOREIGN = ("AZURE_", "AzureWebJobs", "ASSETS_", "GRAPH_", "JIRA_", "WEBHOOK_", "APPLICATIONINSIGHTS_",
            "ENTRA_ASSETS_", "SYNC_", "USER_FILTER", "GROUP_FILTER", "SCOPE_GROUP_ID", "MAX_DEACTIVATIONS",
            "MAPPING_FILE", "TIMER_SYNC_", "FULL_SYNC_", "LOG_FORMAT")


@dataclass(frozen=True)
class KillPoint:
    """Kill the run at the ``after``-th request of its ``phase``: "graph" (any Graph request), "chunks" (a
    data POST to an execution) or "wait" (a status poll; the first poll of a DONE execution also counts)."""

    phase: str
    after: int

    def __str__(self) -> str:
        return f"{self.phase} #{self.after}"


@dataclass
class Run:
    """One sync subprocess: what it was asked, how it ended, and its timings (seconds)."""

    command: str                   # "full" (sync --full) or "delta" (sync)
    kill: KillPoint | None
    hit: str | None = None         # the phase it was killed in (a data POST with completed:true counts as wait)
    returncode: int | None = None
    seconds: float = 0.0
    before_start: float | None = None   # launch -> its first Assets execution started (None: started none)
    timed_out: bool = False
    stderr: str = ""
    counts: dict[str, int] = field(default_factory=dict)   # requests per phase ("graph", "chunks", "wait")

    def failure(self) -> str | None:
        """Why this (unkilled) run failed, in one line naming the error; None when it exited 0."""
        if self.timed_out:
            return f"`{self.label}` did not finish within {self.seconds:.0f} s (killed by the harness)"
        if self.returncode == 0:
            return None
        lines = [line for line in self.stderr.splitlines() if line.strip()]
        what = "a traceback" if "Traceback (most recent call last)" in self.stderr else "an error"
        return f"`{self.label}` exited {self.returncode} with {what}: {lines[-1].strip() if lines else '(no stderr)'}"

    @property
    def label(self) -> str:
        return "sync --full" if self.command == "full" else "sync"


class WatchedLog(list):
    """An emulator's request log that also hands each request to ``listener`` as it is recorded. Emulators
    append under their own lock, so the listener sees the requests in arrival order."""

    def __init__(self, items, listener):
        super().__init__(items)
        self.listener = listener

    def append(self, item: RecordedRequest) -> None:
        super().append(item)
        self.listener(item)


class Tripwire:
    """Counts the requests of the current run per phase and SIGKILLs it when its kill point comes.

    Called from the emulators' serving threads: the kill lands while the request is being answered, so the
    dead client never sees the response (the emulator still processes it, as a real server would)."""

    def __init__(self, assets: AssetsEmulator):
        self._assets = assets
        self._lock = threading.Lock()
        self._pid: int | None = None
        self._point: KillPoint | None = None
        self.counts: Counter = Counter()
        self.hit: str | None = None

    def arm(self, pid: int, point: KillPoint | None) -> None:
        """Start counting for process ``pid``; kill it at ``point`` (None: only count)."""
        with self._lock:
            self._pid, self._point, self.hit = pid, point, None
            self.counts = Counter()

    def disarm(self) -> None:
        """Stop counting and killing (the run ended); ``counts`` and ``hit`` stay until the next ``arm``."""
        with self._lock:
            self._pid = self._point = None

    def graph_request(self, request: RecordedRequest) -> None:
        self._seen("graph", "graph")

    def assets_request(self, request: RecordedRequest) -> None:
        parts = request.path.rstrip("/").split("/")
        if request.method == "POST" and parts[-1] == "data":
            last = isinstance(request.json, dict) and request.json.get("completed") is True
            self._seen("chunks", "wait" if last else "chunks")
        elif request.method == "GET" and parts[-1] == "status" and parts[-3] == "executions":
            done = any(e.id == parts[-2] and e.status == "DONE" for e in self._assets.executions)
            self._seen("wait", "wait", force=done)

    def _seen(self, phase: str, hit: str, force: bool = False) -> None:
        with self._lock:
            if self._pid is None:
                return
            self.counts[phase] += 1
            point = self._point
            if point and point.phase == phase and (self.counts[phase] >= point.after or force):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(self._pid, signal.SIGKILL)
                self.hit, self._point = hit, None


@dataclass(frozen=True)
class Limits:
    """How long a recovery may take: one lease length (a dead holder's lease is waited out at most once)
    plus a normal sync and a margin, both for the whole run and until its first Assets execution starts."""

    normal: float   # wall time of a normal sync of this tenant, measured

    @property
    def recovery(self) -> float:
        return LEASE_SECONDS + self.normal + max(5.0, self.normal)

    @property
    def timeout(self) -> float:
        return self.recovery + 30.0


class Harness:
    """A sandbox (tenant tagged v0, Graph and Assets emulators watched by a ``Tripwire``), an
    ``ENTRA_ASSETS_HOME`` with the schema set up (``entra-assets setup``), and the CLI runs against them.
    A context manager: leaving it stops the emulators and removes the home."""

    def __init__(self, users: int = 300, seed: int = 1, processing_delay: float = 0.5, page_size: int = 50):
        self.users, self.seed = users, seed
        self.processing_delay, self.page_size = processing_delay, page_size
        self.version = 0
        self.tenant_rng = random.Random(f"chaos-tenant-{seed}")
        self.versions = Versions()

    def __enter__(self) -> Self:
        self.box: Sandbox = start_sandbox(users=self.users, seed=self.seed)
        # Dozens of full runs a minute: Graph's documented 10 signInActivity requests a minute would make the
        # loop measure the throttle's waits, not recovery (tests/test_sign_in_emulator.py checks the throttle).
        self.box.graph.sign_in_limit = (10, 0.01)
        self._home = tempfile.TemporaryDirectory(prefix="entra-assets-chaos-")
        try:
            self._prepare()
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def _prepare(self) -> None:
        """Knobs and watched logs on the emulators, every object tagged v0, the settings, ``setup``."""
        self.home = Path(self._home.name)
        graph, assets = self.box.graph, self.box.assets
        graph.page_size = self.page_size                 # more Graph pages: more places to be killed
        assets.processing_delay = self.processing_delay  # status polls happen while the execution processes
        self.tripwire = Tripwire(assets)
        graph.requests = WatchedLog(graph.requests, self.tripwire.graph_request)
        assets.requests = WatchedLog(assets.requests, self.tripwire.assets_request)
        for kind in TAGS:
            for oid in sorted(self.box.tenant.objects[kind]):
                tag(self.box.tenant, kind, oid, 0)
        self.env = self._environment()
        setup = subprocess.run([sys.executable, "-m", "shared.cli", "setup"], cwd=ROOT, env=self.env,
                               capture_output=True, text=True, timeout=120, check=False)
        if setup.returncode:
            raise RuntimeError(f"entra-assets setup failed: {setup.stderr.strip()[-500:]}")

    def __exit__(self, *exc) -> None:
        self.box.stop()
        self._home.cleanup()

    def _environment(self) -> dict[str, str]:
        """The calling environment without any entra-assets or Azure setting, plus the sandbox's settings and
        this home (the embedded store). ``PYTHONPATH`` makes the runs import this checkout's code."""
        env = {k: v for k, v in os.environ.items() if not k.startswith(_FOREIGN)}
        return {**env, **self.box.settings(), "ENTRA_ASSETS_HOME": str(self.home), "PYTHONPATH": str(ROOT)}

    # -- runs --------------------------------------------------------------------------------------------

    def run(self, command: str = "full", kill: KillPoint | None = None, timeout: float = 300,
            settle: bool = True) -> Run:
        """Run ``sync --full`` ("full") or ``sync`` ("delta") as a subprocess; SIGKILL it at ``kill``, or after
        ``timeout`` seconds (then ``timed_out``). With ``settle``, returns only once no execution is still
        processing (a killed run's last chunk is applied by Assets after the client died)."""
        run = Run(command, kill)
        args = [sys.executable, "-m", "shared.cli", "sync", *(["--full"] if command == "full" else [])]
        self.box.graph.reset_log()   # the tripwire counts; the logs would only grow
        self.box.assets.reset_log()
        first = len(self.box.assets.executions)
        with tempfile.TemporaryFile() as stderr:
            launched, started = time.time(), time.monotonic()
            process = subprocess.Popen(args, cwd=ROOT, env=self.env, stdout=subprocess.DEVNULL, stderr=stderr)
            self.tripwire.arm(process.pid, kill)
            try:
                run.returncode = process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                process.kill()
                run.returncode, run.timed_out = process.wait(), True
            run.seconds = time.monotonic() - started
            self.tripwire.disarm()
            run.hit, run.counts = self.tripwire.hit, dict(self.tripwire.counts)
            stderr.seek(0)
            run.stderr = stderr.read().decode(errors="replace")
        executions = self.box.assets.executions[first:]
        if executions:
            run.before_start = dt.datetime.fromisoformat(executions[0].started).timestamp() - launched
        if settle:
            self._settle()
        return run

    def _settle(self, seconds: float = 10) -> None:
        """Wait until no execution is PROCESSING (a killed run's last chunk is still being applied)."""
        deadline = time.monotonic() + self.processing_delay + seconds
        while time.monotonic() < deadline and any(e.status == "PROCESSING" for e in self.box.assets.executions):
            time.sleep(0.05)

    def change(self, wide: bool = False) -> Counter:
        """A round of tenant changes tagged with the next version (``change_tenant``)."""
        self.version += 1
        return change_tenant(self.box.tenant, self.tenant_rng, self.version, wide)

    def check_versions(self) -> list[str]:
        """The objects whose version in Assets went back since the last check (``Versions``)."""
        return self.versions.check(self.box.assets)

    def mismatches(self, catch_up: bool = False) -> tuple[list[str], int]:
        """Differences between Assets and the tenant, and the number of objects compared (``catch_up``: only
        what a `sync` keeps current, ``sandbox.tools.verify.mismatches``)."""
        return mismatches(self.box.tenant, self.box.assets, catch_up)

    # -- the store and Assets, as time and an admin would change them -------------------------------------

    @contextlib.contextmanager
    def _db(self):
        db = sqlite3.connect(self.home / "state.db", timeout=30, isolation_level=None)
        try:
            yield db
        finally:
            db.close()

    def hidden_messages(self) -> list[str]:
        """Ids of the queue messages received by a run and not deleted: invisible for 30 minutes."""
        with self._db() as db:
            return [row[0] for row in db.execute("SELECT id FROM queue WHERE visible_at > ?", (time.time(),))]

    def replay(self, ids: list[str]) -> int:
        """Make these messages visible now (as the visibility timeout running out would); returns how many
        were still there."""
        with self._db() as db:
            return sum(db.execute("UPDATE queue SET visible_at = 0 WHERE id = ?", (i,)).rowcount for i in ids)

    def expire_lease(self) -> None:
        """Let every lease run out now (as a lease length passing would)."""
        with self._db() as db:
            db.execute("UPDATE leases SET expires = 0")

    def payload_files(self) -> list[str]:
        """The files under the home's ``payloads`` (temporary ones included), by relative name."""
        root = self.home / "payloads"
        return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()) if root.exists() else []

    def leftovers(self) -> Counter:
        """How many queue messages and payload files are still in the home."""
        with self._db() as db:
            [(messages,)] = db.execute("SELECT COUNT(*) FROM queue").fetchall()
        return Counter({"queue messages": messages, "payload files": len(self.payload_files())})

    def open_executions(self) -> list[str]:
        """The executions neither DONE nor CANCELLED, as "#number STATUS"."""
        return [f"#{e.number} {e.status}" for e in self.box.assets.executions if e.status not in ("DONE", "CANCELLED")]

    def cancel_open_executions(self) -> int:
        """Cancel every open execution through the Assets API, as an admin would; returns how many."""
        assets = self.box.assets
        base = f"{assets.url}/jsm/assets/workspace/{assets.workspace_id}/v1/importsource/{assets.import_source_id}"
        open_ones = [e for e in assets.executions if e.status not in ("DONE", "CANCELLED")]
        for execution in open_ones:
            httpx.delete(f"{base}/executions/{execution.id}", headers={"Authorization": f"Bearer {IMPORT_TOKEN}"},
                         timeout=10).raise_for_status()
        return len(open_ones)
