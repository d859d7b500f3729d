"""Run history and the current stage, kept in the state store for ``status`` and the status page (SPEC §3).

Two checkpoints:

- ``runs/history``: a JSON list of run records, newest first, bounded to ``MAX_RUNS``. A record is one worker
  pass that handled queue messages (whoever queued them: the timer, the webhook, the CLI), or one producer run
  that never reached the worker (a full run that found nothing to push, or failed before queuing). Appends are
  read-modify-write under a short ``history`` lease, so two appenders (the worker and a timer tick) never lose
  each other's record; the worker appends while it also holds the writer lease.
- ``runs/current``: the stage of the run in progress (SPEC §3 stages), written by ``StageTracker`` - on every
  stage change, and for a growing count at most every ``THROTTLE_SECONDS`` - and deleted when the run ends. A
  record not updated for ``STALE_SECONDS`` is treated as left behind by a process that died.

Records hold counts, object ids in samples and error texts of this app and of Assets (trimmed), never names,
e-mails or secrets. Writing history or stage never fails a run: storage errors are logged and ignored.
"""
from __future__ import annotations

import calendar
import json
import logging
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass, field

from shared.errors import EntraAssetsError
from shared.jira_links import degraded_reason
from shared.records.schema import BY_KEY
from shared.store.ports import LeaseBusy, StateStore

log = logging.getLogger(__name__)

HISTORY = "runs/history"
CURRENT = "runs/current"
HISTORY_LEASE = "history"
MAX_RUNS = 200
THROTTLE_SECONDS = 5.0
STALE_SECONDS = 1800.0       # the worker's VISIBILITY_SECONDS: longer than any pass holding its messages
LEASE_WAIT_SECONDS = 20.0
MAX_LINES = 10               # warnings and errors kept per record
MAX_LINE_CHARS = 300

Progress = Callable[[str, int], None]


def iso(epoch: float) -> str:
    """``epoch`` as UTC ISO 8601 with a Z, to the second (what ``status`` shows)."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(epoch))


def epoch(stamp: object) -> float | None:
    """The inverse of ``iso``: epoch seconds of a "YYYY-MM-DDTHH:MM:SSZ" stamp; None when it is not one."""
    try:
        return float(calendar.timegm(time.strptime(str(stamp), "%Y-%m-%dT%H:%M:%SZ")))
    except ValueError:
        return None


def by_name(counter: Mapping[str, int]) -> dict[str, int]:
    """Counts keyed by object type key (``user``) re-keyed by Assets name (``User``), zeros left out."""
    return {BY_KEY[k].name if k in BY_KEY else k: int(v) for k, v in sorted(counter.items()) if v}


def _lines(lines: Iterable[str]) -> list[str]:
    out = []
    for line in lines:
        if len(out) == MAX_LINES:
            out.append("… (more not kept)")
            break
        text = str(line)
        out.append(text if len(text) <= MAX_LINE_CHARS else text[:MAX_LINE_CHARS - 1] + "…")
    return out


def describe(error: BaseException) -> str:
    """One line for a failed run. This app's errors are written for admins (no secrets); anything else is
    named by its type only, as its text may hold URLs or data."""
    if isinstance(error, EntraAssetsError):
        return str(error).splitlines()[0] if str(error) else type(error).__name__
    return f"{type(error).__name__} (see the function logs)"


@dataclass
class RunRecord:
    """One entry of the run history (the ``runs`` items of ``status --json``; keys documented in the README).

    Counts by object type use Assets names. ``created``/``updated``/``identical`` are what Assets reported for
    the executions; ``read``/``deactivated``/``held_back`` what the producer (full run) or the delta catch-up
    planned. ``repeated`` > 1: this entry stands for that many identical quiet catch-ups in a row (nothing to
    push, no problem), the last one started at ``last_started``. ``linking``: why Jira user linking was
    degraded in this run (one line, no secret, no e-mail; ``shared.jira_links``), None when it was not."""

    triggers: list[str]
    kind: str                       # "full" | "repair" (a full run pushing every record again) | "catch-up"
    started: str
    seconds: float
    stage: str = "Done"             # "Done" | "Failed"
    messages: int = 0
    run: str | None = None          # the full run's id, when there was one
    read: dict[str, int] = field(default_factory=dict)
    records: dict[str, int] = field(default_factory=dict)
    records_pushed: int = 0
    executions: int = 0
    created: int = 0
    updated: int = 0
    identical: int = 0
    deactivated: dict[str, int] = field(default_factory=dict)
    held_back: dict[str, int] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    repeated: int = 1
    last_started: str | None = None
    linking: str | None = None
    segments: int = 0               # a full run read in segments: how many (one entry for the whole run)
    objects: int | None = None      # a full run: the objects entra-assets keeps in Assets once it is pushed

    def to_json(self) -> dict:
        return asdict(self)

    @property
    def quiet(self) -> bool:
        """A catch-up that found nothing and reported nothing: merged with the previous quiet one."""
        return (self.kind == "catch-up" and self.stage == "Done" and not self.records_pushed
                and not (self.errors or self.warnings or self.held_back or self.deactivated))


def producer_summary(result, started: float) -> dict:
    """What a full run's ``records`` message carries for the history (``result``: a ``FullRunResult``).
    Small and bounded (counts per type, at most ``MAX_LINES`` warnings), far under the queue message limit."""
    return {"run": result.run_id, "started": started, "read": by_name(result.read),
            "deactivated": by_name(result.deactivated), "held_back": by_name(result.held_back),
            "held_reason": result.held_reason, "failed": failed_lines(result),
            "warnings": _lines(result.warnings.lines() + [line for line in [result.allowance_line()] if line]),
            "linking": degraded_reason(result.warnings), "objects": result.objects_after,
            **({"repair": True} if result.repair else {}),
            **({"segments": len(result.segments)} if result.segments else {})}


def held_back_line(held_back: Mapping[str, int], reason: str | None) -> str:
    """The guard's one line for the history (counts only; ``guard_error`` gives the full message)."""
    counts = ", ".join(f"{n:,} {name}" for name, n in sorted(held_back.items()))
    return (f"{sum(held_back.values()):,} departures not marked Deleted ({counts}): {reason or 'the guard'}; "
            "if they are real, run `entra-assets sync --full --allow-mass-deactivation`")


def failed_lines(result) -> list[str]:
    """One line per object type the run could not read (``FullRunResult.failed``; derived types go unsaid)."""
    return _lines(f"{BY_KEY[k].name} not read (nothing of it marked Deleted): {why}"
                  for k, why in sorted(result.failed.items()) if not BY_KEY[k].derived)


def pass_record(push, started: float, ended: float, error: BaseException | None = None,
                caught_up=None, max_deactivations: int = 0) -> RunRecord:
    """The record of one worker pass. ``push`` is its ``PushResult`` (``triggers``, ``summaries`` of the full
    runs it carried, counts, Assets' errors); ``caught_up`` the ``FullRunResult`` of its delta catch-up, if it
    ran one. Departures held back by the guard make the run Failed, as they fail its invocation; degraded
    Jira linking (lookups or ``Jira User`` writes, ``push.links``) is a warning and the run's ``linking``."""
    summaries = list(push.summaries)
    read: Counter = Counter()
    deactivated: Counter = Counter()
    held_back: Counter = Counter()
    warnings: list[str] = []
    failed: list[str] = []
    reason = None
    linking = [summary.get("linking") for summary in summaries]
    for summary in summaries:
        read.update(summary.get("read") or {})
        deactivated.update(summary.get("deactivated") or {})
        held_back.update(summary.get("held_back") or {})
        warnings += summary.get("warnings") or []
        failed += summary.get("failed") or []
        reason = summary.get("held_reason") or reason
        started = min(started, float(summary.get("started") or started))  # the run began at its producer
    if caught_up is not None:
        read.update(by_name(caught_up.read))
        deactivated.update(by_name(caught_up.deactivated))
        held_back.update(by_name(caught_up.held_back))
        warnings += caught_up.warnings.lines()
        failed += failed_lines(caught_up)
        reason = caught_up.held_reason or reason
        linking.append(degraded_reason(caught_up.warnings))
    written = push.links  # shared.jira_links.LinkOutcome, or None when linking is off
    if written is not None and written.reason:
        links_line = f"Jira User links not written (retried next pass): {written.reason}"
        warnings.append(links_line)
        linking.append(links_line)
    errors = list(push.errors) + failed + ([describe(error)] if error is not None else [])
    if held_back:
        errors.append(held_back_line(held_back, reason or f"more than MAX_DEACTIVATIONS={max_deactivations}"))
    return RunRecord(
        triggers=sorted(push.triggers) or ["unknown"],
        kind="repair" if any(s.get("repair") for s in summaries) else "full" if summaries else "catch-up",
        started=iso(started), seconds=round(ended - started, 3),
        stage="Failed" if errors else "Done", messages=push.messages,
        run=",".join(s["run"] for s in summaries if s.get("run")) or None,
        read=dict(read), records=by_name(push.by_type), records_pushed=push.records,
        executions=push.executions, created=push.result_counts["objectsCreated"],
        updated=push.result_counts["objectsUpdated"], identical=push.result_counts["objectsIdentical"],
        deactivated=dict(deactivated), held_back=dict(held_back),
        errors=_lines(errors), warnings=_lines(warnings), linking=next(filter(None, linking), None),
        segments=sum(int(s.get("segments") or 0) for s in summaries),
        objects=max((int(s["objects"]) for s in summaries if isinstance(s.get("objects"), int)), default=None))


def producer_record(trigger: str, kind: str, started: float, ended: float, error: BaseException) -> RunRecord:
    """The record of a run that never reached the worker: it failed before queuing (``error``)."""
    return RunRecord(triggers=[trigger], kind=kind, started=iso(started), seconds=round(ended - started, 3),
                     stage="Failed", errors=_lines([describe(error)]))


def append(state: StateStore, record: RunRecord, *, wait: float = LEASE_WAIT_SECONDS,
           sleep: Callable[[float], None] = time.sleep) -> bool:
    """Add ``record`` as the newest entry (a quiet catch-up merges into a quiet newest entry with the same
    triggers), keeping ``MAX_RUNS``. Under the ``history`` lease, so concurrent appends are not lost. Returns
    False - logged, not raised - when the lease stayed busy for ``wait`` seconds or the store failed: a run
    must not fail (and be pushed again) because its history entry could not be written.

    Also logs the event ``run.finished`` (kind, stage): the alert on failed full runs reads it (infra/alerts.bicep)."""
    log.info("%s run %s", record.kind, record.stage.lower(),
             extra={"event": "run.finished", "kind": record.kind, "stage": record.stage})
    deadline = time.monotonic() + wait
    while True:
        try:
            with state.lease(HISTORY_LEASE, ttl=15):
                runs = read_runs(state)
                _add(runs, record)
                state.commit({}, {HISTORY: json.dumps(runs[:MAX_RUNS], separators=(",", ":"))})
                return True
        except LeaseBusy:
            if time.monotonic() > deadline:
                log.warning("run history not written: the history lease stayed busy for %.0f s", wait)
                return False
            sleep(0.2)
        except Exception as error:  # noqa: BLE001 - see the docstring
            log.warning("run history not written (%s)", type(error).__name__)
            return False


def _add(runs: list[dict], record: RunRecord) -> None:
    newest = runs[0] if runs else None
    if newest is not None and record.quiet and _is_quiet(newest) and newest.get("triggers") == record.triggers:
        newest["repeated"] = int(newest.get("repeated") or 1) + 1
        newest["last_started"] = record.started
        return
    runs.insert(0, record.to_json())


def _is_quiet(entry: dict) -> bool:
    try:
        return RunRecord(**entry).quiet
    except TypeError:  # an entry written by another version
        return False


def read_runs(state: StateStore, limit: int | None = None) -> list[dict]:
    """The history, newest first ([] when none or unreadable)."""
    text = state.checkpoint(HISTORY)
    try:
        runs = json.loads(text) if text else []
    except ValueError:
        log.warning("run history checkpoint is not JSON; starting a new one")
        return []
    runs = [r for r in runs if isinstance(r, dict)] if isinstance(runs, list) else []
    return runs[:limit] if limit is not None else runs


class StageTracker:
    """A ``Progress`` callback that keeps ``runs/current`` up to date for one run; ``finish()`` deletes it.

    Writes on every stage change and, while the stage stays, at most every ``every`` seconds when the count
    grows - a few writes per run, not one per object. With ``quiet_for``, nothing is written before the run has
    gone on that long: a webhook's catch-up of a few changes (well under a second) then costs no storage write
    before its push - the history records it anyway. Two runs at once (a timer tick while the worker pushes)
    share the one record: the latest writer wins, which is enough to say *something* is running."""

    def __init__(self, state: StateStore, trigger: str, kind: str, *, every: float = THROTTLE_SECONDS,
                 quiet_for: float = 0.0, clock: Callable[[], float] = time.time):
        self.state, self.trigger, self.kind, self.every, self.clock = state, trigger, kind, every, clock
        self.quiet_for = quiet_for
        self.started = clock()
        self.stage: str | None = None
        self.count = 0
        self.written = 0.0
        self.writes = 0

    def __call__(self, stage: str, count: int) -> None:
        now = self.clock()
        changed = stage != self.stage
        self.stage, self.count = stage, count
        if stage in ("Done", "Failed") or now - self.started < self.quiet_for:
            return  # the end of a pass is not the end of the run (finish() says that); or a short run so far
        if changed or now - self.written >= self.every:
            self._write({"stage": stage, "trigger": self.trigger, "kind": self.kind,
                         "started": iso(self.started), "count": count, "updated": iso(now)})
            self.written = now

    def finish(self) -> None:
        """The run is over (done or failed): no current stage any more. A tracker that never wrote (a worker
        that found the lease taken) leaves the record alone: it belongs to the run that holds the lease."""
        if self.writes:
            self._write(None)

    def _write(self, value: dict | None) -> None:
        try:
            self.state.commit({}, {CURRENT: None if value is None else json.dumps(value)})
            self.writes += 1
        except Exception as error:  # noqa: BLE001 - a stage indicator never fails a run
            log.warning("current stage not written (%s)", type(error).__name__)


def read_current(state: StateStore, now: float | None = None) -> dict | None:
    """The stage of the run in progress, or None (no run, or a record left by a process that died)."""
    text = state.checkpoint(CURRENT)
    try:
        current = json.loads(text) if text else None
    except ValueError:
        return None
    if not isinstance(current, dict):
        return None
    now = time.time() if now is None else now
    updated = epoch(current.get("updated"))
    return current if updated is not None and now - updated <= STALE_SECONDS else None


def fanout(*callbacks: Progress) -> Progress:
    """One ``Progress`` calling each of ``callbacks`` (the CLI's progress bar and the stage tracker)."""
    def progress(stage: str, count: int) -> None:
        for callback in callbacks:
            callback(stage, count)
    return progress
