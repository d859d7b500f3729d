"""The chaos test: SIGKILL ``entra-assets sync`` at random points and prove that the next run recovers.

Black-box against the CLI: each sync is a real ``python -m shared.cli sync [--full]`` subprocess on the
embedded store (``ENTRA_ASSETS_HOME`` = a temporary directory), talking to the Graph and Assets emulators of
this process over loopback HTTP. One iteration:

1. change the tenant; every object whose Graph data changed gets a version tag (``Title v7`` ...), so the
   version Assets shows of each object can be read back (``TAGS``);
2. start a sync and SIGKILL it at a kill point seen in the emulators' request logs (``Tripwire``): after k
   Graph requests, after k chunks were POSTed to an execution, or after k status polls of an execution that
   is processing (the Assets emulator has a ``processing_delay``);
3. the messages the dead run left (invisible for 30 minutes in the real queue) are made visible - at once,
   or only after newer successful syncs (a stale replay) - by setting ``visible_at = 0`` in the store's
   ``queue`` table: that emulates time passing, nothing in the product is changed;
4. a recovery sync runs without a kill, and is checked: exit 0, no timeout, no longer than a lease length
   plus a normal sync (``Limits``), no execution left open, Assets equal to the tenant
   (``sandbox.tools.verify.mismatches``); after every sync - killed ones, recoveries and replays - no object's
   version in Assets may have gone back (``Versions``).

``run_chaos`` runs the loop and returns a ``ChaosReport``; ``python -m sandbox.tools.chaos --kills 50`` prints it.
After a failed recovery the harness repairs what an admin would (cancels open executions through the Assets
API, lets the writer lease expire) and goes on, so one run reports every kind of failure it meets.
"""
from __future__ import annotations

import argparse
import math
import random
import statistics
import sys
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

from sandbox.tools.chaos_harness import Harness, KillPoint, Limits, Run

CHUNK_RECORDS = 500     # records per data POST (shared.deliver.worker CHUNK_RECORDS): a wide change makes several
PHASES = ("graph", "chunks", "wait")


@dataclass(frozen=True)
class Step:
    """What one iteration does, drawn from the seed before it starts (so timing never changes the plan)."""

    kill: KillPoint
    command: str                 # of the killed run
    recovery: str                # of the recovery run
    settle: bool                 # let an execution the dead run left processing finish before going on
    defer: int                   # 0: the dead run's messages are replayed at once; n: n iterations later
    change_before_recovery: bool
    newer_sync: bool             # a change and a normal sync after the recovery


def plan(rng: random.Random, kills: int, graph_requests: dict[str, int], records: dict[str, int],
         delta_share: float = 0.25) -> list[Step]:
    """``kills`` steps: phases in turn from a shuffled cycle, the k of each kill point drawn within what a run
    of that command does (``graph_requests`` per command; ``records`` a wide change makes it push, in chunks).
    A chunk kill is planned on `sync --full` when a catch-up would push a single chunk."""
    phases = [PHASES[i % len(PHASES)] for i in range(kills)]
    rng.shuffle(phases)
    chunks = {command: math.ceil(n / CHUNK_RECORDS) for command, n in records.items()}
    steps = []
    for phase in phases:
        command = "delta" if rng.random() < delta_share else "full"
        if phase == "chunks" and chunks[command] < 2:
            command = "full"
        last = {"graph": graph_requests[command] - 1, "chunks": chunks[command] - 1, "wait": 3}[phase]
        steps.append(Step(KillPoint(phase, rng.randint(1, max(1, last))), command,
                          "delta" if rng.random() < delta_share else "full", rng.random() < 0.5,
                          0 if rng.random() < 0.5 else rng.randint(1, 3), rng.random() < 0.3, rng.random() < 0.3))
    return steps


@dataclass
class ChaosReport:
    """The figures of a chaos run; ``failures`` are (kind, one line) - the run passed when there are none."""

    kills: int = 0
    hits: Counter = field(default_factory=Counter)      # kill points hit, by phase
    missed: int = 0                                     # runs that finished before their kill point
    syncs: int = 0
    recoveries: int = 0
    repairs: int = 0
    replayed: Counter = field(default_factory=Counter)  # messages of dead runs made visible: "at once", "later"
    regressions: int = 0
    objects_compared: int = 0
    open_executions: int = 0                            # found after a recovery or a checked sync
    recovery_seconds: list[float] = field(default_factory=list)
    before_start: list[float] = field(default_factory=list)
    leftovers: Counter = field(default_factory=Counter)
    limit: float = 0.0
    seconds: float = 0.0
    failures: list[tuple[str, str]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.failures

    def lines(self, samples: int = 3) -> list[str]:
        """The figures, then the failures by kind with a few samples each."""
        p50 = statistics.median(self.recovery_seconds) if self.recovery_seconds else 0.0
        kinds = Counter(kind for kind, _ in self.failures)
        first_start = f"max {max(self.before_start):.1f} s" if self.before_start else "no recovery started one"
        out = [f"kills: {self.kills} (hit: {', '.join(f'{p} {self.hits[p]}' for p in PHASES)}; missed {self.missed})",
               f"syncs: {self.syncs}; recoveries: {self.recoveries}; repairs after a failed recovery: {self.repairs}",
               (f"messages of dead runs replayed: {self.replayed['at once']} at once, {self.replayed['later']} "
                "after newer syncs"),
               f"regressions (an object's version in Assets went back): {self.regressions}",
               f"objects compared with the tenant: {self.objects_compared:,}",
               f"open executions after recoveries: {self.open_executions}",
               (f"recovery time: max {max(self.recovery_seconds, default=0):.1f} s, p50 {p50:.1f} s; time to "
                f"the first Assets start: {first_start} (limit {self.limit:.0f} s)"),
               (f"leftovers at the end: {self.leftovers['queue messages']} queue messages, "
                f"{self.leftovers['payload files']} payload files"),
               f"time: {self.seconds:.0f} s",
               f"failures: {len(self.failures)}" + (f" ({', '.join(f'{k} {n}' for k, n in kinds.items())})"
                                                    if kinds else "")]
        for kind in kinds:
            out += [f"  {kind}: {text}" for k, text in self.failures if k == kind][:samples]
        return out


class ChaosLoop:
    """Runs the iterations of ``plan`` on a ``Harness`` and fills a ``ChaosReport`` (module docstring)."""

    def __init__(self, harness: Harness, seed: int, say: Callable[[str], None] = lambda line: None):
        self.h = harness
        self.rng = random.Random(f"chaos-{seed}")
        self.report = ChaosReport()
        self.say = say
        self.deferred: list[tuple[int, list[str]]] = []   # (iteration due, message ids)
        self.limits = Limits(normal=0.0)
        self.graph_requests: dict[str, int] = {}

    def prepare(self) -> None:
        """A first full sync, then a round of changes and a catch-up: the normal sync time, and the Graph
        requests of each command (the kill points are drawn within them)."""
        full = self.checked("initial sync --full", "full", timeout=600)
        self.h.change()
        delta = self.checked("initial sync", "delta", timeout=600)
        if not self.report.ok:
            raise RuntimeError("the sandbox does not sync without kills: " + "; ".join(t for _, t in self.report.failures))
        self.limits = Limits(normal=max(full.seconds, delta.seconds))
        self.report.limit = self.limits.recovery
        self.graph_requests = {"full": full.counts.get("graph", 1), "delta": delta.counts.get("graph", 1)}

    def steps(self, kills: int) -> list[Step]:
        """The plan of ``kills`` iterations; a wide change retags every user and device (a catch-up reads
        devices only in full runs, so its records are the users)."""
        tenant = self.h.box.tenant
        records = {"full": len(tenant.users) + len(tenant.devices), "delta": len(tenant.users)}
        return plan(self.rng, kills, self.graph_requests, records)

    def iteration(self, i: int, step: Step) -> bool:
        """One kill and its recovery; False when even a repair could not recover (the loop stops)."""
        self.h.change(wide=step.kill.phase == "chunks")
        self.replay_due(i)
        held = set(self.h.hidden_messages())   # messages of earlier kills, still waiting for their replay
        killed = self.sync(f"kill {i} ({step.kill}, {step.command})", step.command, step.kill, self.limits.timeout,
                           settle=step.settle)
        self.report.kills += 1
        if killed.hit:
            self.report.hits[killed.hit] += 1
        else:
            self.report.missed += 1
        left = [m for m in self.h.hidden_messages() if m not in held]
        if step.defer:
            self.deferred.append((i + step.defer, left))
        else:
            self.report.replayed["at once"] += self.h.replay(left)
        if step.change_before_recovery:
            self.h.change()
        self.say(f"kill {i}: {step.kill} of `{killed.label}` -> {killed.hit or 'missed'}; {len(left)} message(s) "
                 f"left, replayed {'at once' if not step.defer else f'after {step.defer} iteration(s)'}")
        if not self.recover(f"recovery {i}", step.recovery):
            return False
        if step.newer_sync:
            self.h.change()
            return self.recover(f"sync after recovery {i}", "full", counted=False)
        return True

    def finish(self) -> None:
        """Replay everything still held back, run a last full sync, and count what is left behind."""
        for _, ids in self.deferred:
            self.report.replayed["later"] += self.h.replay(ids)
        self.deferred.clear()
        self.h.replay(self.h.hidden_messages())
        self.recover("final sync", "full", counted=False)
        self.report.leftovers = self.h.leftovers()
        if sum(self.report.leftovers.values()):
            self.fail("leftovers", f"after the final sync: {self.report.leftovers['queue messages']} queue "
                      f"message(s) and {self.report.leftovers['payload files']} payload file(s) remain "
                      f"({', '.join(self.h.payload_files()[:3]) or 'no files'})")

    def replay_due(self, i: int) -> None:
        due = [ids for when, ids in self.deferred if when <= i]
        self.deferred = [(when, ids) for when, ids in self.deferred if when > i]
        for ids in due:
            self.report.replayed["later"] += self.h.replay(ids)

    # -- runs and their checks ---------------------------------------------------------------------------

    def fail(self, kind: str, text: str) -> None:
        self.report.failures.append((kind, text))
        self.say(f"FAIL {kind}: {text}")

    def sync(self, label: str, command: str, kill: KillPoint | None = None, timeout: float = 300,
             settle: bool = True) -> Run:
        """One run; afterwards no object's version in Assets may have gone back."""
        run = self.h.run(command, kill, timeout, settle)
        self.report.syncs += 1
        went_back = self.h.check_versions()
        self.report.regressions += len(went_back)
        if went_back:
            self.fail("regression", f"after {label}: {len(went_back)} object(s) went back, e.g. {went_back[0]}")
        return run

    def checked(self, label: str, command: str, timeout: float) -> Run:
        """A run that must succeed: exit 0, no execution left open, Assets equal to the tenant."""
        run = self.sync(label, command, timeout=timeout)
        problem = run.failure()
        if problem:
            self.fail("timeout" if run.timed_out else "exit", f"{label}: {problem}")
        open_now = self.h.open_executions()
        self.report.open_executions += len(open_now)
        if open_now:
            self.fail("open execution", f"{label}: {len(open_now)} execution(s) left open ({', '.join(open_now)})")
        if not problem:
            found, compared = self.h.mismatches(catch_up=command == "delta")
            self.report.objects_compared += compared
            if found:
                self.fail("mismatch", f"{label}: Assets differs from the tenant in {len(found)} place(s), "
                          f"e.g. {found[0]}")
        return run

    def recover(self, label: str, command: str, counted: bool = True) -> bool:
        """A checked run within the recovery limits; after a failure, a repair. False if that fails too."""
        run = self.checked(label, command, self.limits.timeout)
        if counted:
            self.report.recoveries += 1
            if not run.failure():  # the timings of recoveries that recovered (a failed one fails above)
                self.report.recovery_seconds.append(run.seconds)
                self.report.before_start += [run.before_start] if run.before_start is not None else []
            for what, seconds in (("took", run.seconds), ("started its execution after", run.before_start or 0)):
                if seconds > self.limits.recovery and not run.timed_out:  # a timeout has failed already
                    self.fail("slow", f"{label} {what} {seconds:.1f} s: more than a lease length and a normal sync "
                              f"({self.limits.recovery:.0f} s)")
        if not run.failure() and not self.h.open_executions():
            return True
        return self.repair(label)

    def repair(self, label: str) -> bool:
        """What an admin would do after a failed run: cancel open executions, wait the writer lease out (here:
        expire it), run a full sync. False when that sync fails as well."""
        self.report.repairs += 1
        cancelled = self.h.cancel_open_executions()
        self.h.expire_lease()
        self.say(f"repair after {label}: cancelled {cancelled} execution(s), expired the writer lease")
        run = self.checked(f"repair after {label}", "full", self.limits.timeout)
        return not run.failure() and not self.h.open_executions()


def run_chaos(kills: int = 8, users: int = 300, seed: int = 1, processing_delay: float = 0.5,
              say: Callable[[str], None] = lambda line: None) -> ChaosReport:
    """The whole chaos run (module docstring) on a fresh sandbox; returns its figures and failures."""
    started = time.monotonic()
    with Harness(users, seed, processing_delay) as harness:
        loop = ChaosLoop(harness, seed, say)
        loop.prepare()
        for i, step in enumerate(loop.steps(kills), 1):
            if not loop.iteration(i, step):
                loop.fail("unrecoverable", f"iteration {i}: even a repaired full sync failed; the loop stopped")
                break
        else:
            loop.finish()
    loop.report.seconds = time.monotonic() - started
    return loop.report


def main(argv: list[str] | None = None) -> int:
    """``python -m sandbox.tools.chaos --kills 50``: the long chaos run; prints each kill and the figures."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--kills", type=int, default=50)
    parser.add_argument("--users", type=int, default=1200)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--processing-delay", type=float, default=0.5, help="seconds Assets takes per execution")
    args = parser.parse_args(argv)
    print(f"chaos: {args.kills} kills on a {args.users:,}-user tenant (seed {args.seed})", flush=True)
    report = run_chaos(args.kills, args.users, args.seed, args.processing_delay, say=lambda s: print(s, flush=True))
    print("\n".join(report.lines(samples=10)))
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
