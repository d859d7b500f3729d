"""Wiring: builds the clients and stores from ``Settings`` and runs the timer and worker paths.

This is the only module that knows which implementation goes with which setting; the Functions handlers and
the CLI call the operations at the bottom and stay thin.
"""
from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

from shared.clients.assets import AssetsClient
from shared.clients.graph import GraphClient
from shared.clients.graph_auth import TokenProvider
from shared.clients.transport import Transport, http_client
from shared.contract.messages import (
    CatchUpMessage,
    HandOnMessage,
    InvalidMessage,
    RecordsMessage,
    parse_segment_message,
)
from shared.contract.notifications import Expected
from shared.deliver.drain import read_message
from shared.deliver.worker import CatchUp, PushResult, push_queued, recover
from shared.errors import EntraAssetsError
from shared.jira_links import link_hook
from shared.produce.catch_up import plan_catch_up
from shared.produce.full import (
    full_sync_due,
    guard_error,
    new_result,
    object_limit_error,
    repair_due,
    type_failure_error,
)
from shared.produce.plan import FullRunResult, Progress, RunOptions, Scope, read_scope
from shared.produce.preview import PreviewReport, run_preview
from shared.produce.segments import advance, load_cursor
from shared.produce.subscriptions import ensure_subscriptions, subscription_ids
from shared.settings import Settings
from shared.store import history
from shared.store.ports import ChangeQueue, LeaseBusy, PayloadStore, QueuedMessage, StateStore
from shared.telemetry import StampingQueue, run

if TYPE_CHECKING:  # the Azure SDKs load only where Azure Storage is used
    from azure.storage.blob import ContainerClient
    from azure.storage.queue import QueueClient

log = logging.getLogger(__name__)
# Lifecycle events that need the subscription renewed or recreated; "missed" only needs the catch-up.
RESUBSCRIBE = ("reauthorizationRequired", "subscriptionRemoved")
CATCH_UP_QUIET_SECONDS = 2.0  # a queued catch-up shows its stage once it runs this long (history.StageTracker)
# How long a CLI sync waits for the writer lease: a dead holder's lease expires within one ttl (60 s; at once
# in the local store); a live writer (the Functions app) drains the CLI's messages meanwhile.
CLI_LEASE_WAIT_SECONDS = 600.0


@dataclass
class Backend:
    """Where state, queued changes and claim-check payloads live."""

    state: StateStore
    queue: ChangeQueue
    payloads: PayloadStore


def open_backend(settings: Settings, quick: bool = False) -> Backend:
    """Azure Storage when ``AzureWebJobsStorage`` (or its identity form) is set, else the embedded store.
    ``quick``: storage clients that fail fast instead of retrying (the webhook, which must answer Graph in 3 s)."""
    if settings.uses_azure_storage:
        from shared.store.azure import AzurePayloadStore, AzureQueue, AzureStateStore

        container, queue, poison = _azure_clients(settings, settings.queue_name, quick)
        # Messages carry the correlation id of the notification or run that queued them (shared/telemetry.py).
        return Backend(AzureStateStore(container), StampingQueue(AzureQueue(queue, poison)),
                       AzurePayloadStore(container))
    from shared.store.local import LocalPayloadStore, LocalQueue, LocalStateStore

    return Backend(LocalStateStore(settings.home), StampingQueue(LocalQueue(settings.home, settings.queue_name)),
                   LocalPayloadStore(settings.home))


def open_run_queue(settings: Settings) -> ChangeQueue:
    """The queue a segmented full run continues through (RUN_QUEUE_NAME), opened only where runs are segmented
    (not on the webhook's path, which must answer fast)."""
    if settings.uses_azure_storage:
        from shared.store.azure import AzureQueue

        _, queue, poison = _azure_clients(settings, settings.run_queue_name)
        return StampingQueue(AzureQueue(queue, poison))
    from shared.store.local import LocalQueue

    return StampingQueue(LocalQueue(settings.home, settings.run_queue_name))


def _azure_clients(settings: Settings, queue_name: str, quick: bool = False
                   ) -> tuple[ContainerClient, QueueClient, QueueClient]:
    """The state container, the queue ``queue_name`` and its poison queue, on the storage account of the
    settings (``shared.store.azure.azure_clients``)."""
    from shared.store.azure import azure_clients

    credential = None if settings.storage_connection_string else storage_credential(settings)
    return azure_clients(settings.storage_connection_string.reveal() if settings.storage_connection_string else None,
                         account_name=settings.storage_account_name, credential=credential, queue_name=queue_name,
                         quick=quick)


def storage_credential(settings: Settings):
    """The identity that reaches the storage account when there is no connection string.

    In Azure, the Functions host's own convention: ``AzureWebJobsStorage__credential=managedidentity`` (with
    ``__clientId`` for a user-assigned identity) means the app's managed identity - the one the template gives
    the storage roles. Elsewhere (an admin's machine) ``DefaultAzureCredential`` without its environment
    credential: an exported ``AZURE_CLIENT_SECRET`` belongs to the Graph app registration, which has no storage
    roles, and would otherwise be tried first (every storage call would answer 403).
    https://learn.microsoft.com/azure/azure-functions/functions-reference#common-properties-for-identity-based-connections
    """
    from azure.identity import DefaultAzureCredential, ManagedIdentityCredential

    if (settings.storage_credential or "").lower() == "managedidentity":
        return ManagedIdentityCredential(client_id=settings.storage_client_id)
    return DefaultAzureCredential(exclude_environment_credential=True, exclude_managed_identity_credential=True)


def graph_client(settings: Settings) -> GraphClient:
    """A Graph reader with the configured credential."""
    return GraphClient(Transport(http_client()), settings.graph_base_url, TokenProvider(settings))


def assets_client(settings: Settings, sleep: Callable[[float], None] = time.sleep) -> AssetsClient:
    """An Assets Imports client for the configured import token."""
    token = settings.assets_import_token.reveal() if settings.assets_import_token else None
    return AssetsClient(Transport(http_client()), settings.assets_api_url, token, sleep=sleep)


def catch_up_planner(settings: Settings, state: StateStore, progress: Progress = lambda stage, n: None,
                     allow_mass_deactivation: bool = False, graph: GraphClient | None = None,
                     scope: Scope | None = None) -> tuple[CatchUp, FullRunResult]:
    """A ``CatchUp`` for the worker and the result it fills (counts, warnings, departures held back, types
    that failed). ``scope``: the scope already read (else it is read when the catch-up is planned)."""
    result = new_result()

    def plan():
        client = graph or graph_client(settings)
        options = RunOptions.from_settings(settings, allow_mass_deactivation)
        return plan_catch_up(client, state, options, scope or read_scope(client, options), result, progress)
    return plan, result


def run_outcome_error(result: FullRunResult | None) -> EntraAssetsError | None:
    """What makes a run end non-zero: held whole because its new objects would cross ASSETS_OBJECT_LIMIT
    (``ObjectLimitReached``, exit 3), object types that could not be read (``TypesNotRead``, exit 1; the
    others were pushed), else departures the guard held back (``MassDeactivation``, exit 3). None for a
    segmented run still in progress."""
    if result is None:
        return None
    if result.over_allowance:
        return object_limit_error(result)
    if result.failed:
        return type_failure_error(result)
    return guard_error(result) if result.held_back else None


def timer_tick(settings: Settings, now: float | None = None) -> FullRunResult | None:
    """The timer path: a full reconciliation when one is due (``FULL_SYNC_INTERVAL_HOURS``); otherwise a
    delta catch-up is queued - the safety net for change notifications Graph never delivered.

    A full run goes in segments (``shared.produce.segments``): the tick runs the first and the run continues
    through the run queue. While a run is in progress, ticks queue catch-ups; a run whose continuation was
    lost (no segment ended for ``stalled_after`` seconds) is resumed by the next tick.

    Raises ``TypesNotRead`` or ``MassDeactivation`` after queuing the other changes when object types could
    not be read or the guard held departures back, so the invocation shows as failed in the Functions monitor
    (and alerts built on it fire). Returns the run's result once it is planned, else None."""
    backend = open_backend(settings)
    now = time.time() if now is None else now
    depth = backend.queue.depth()  # the poison-queue alert reads this event (infra/alerts.bicep)
    log.info("queue: %d waiting, %d poison", depth.messages, depth.poison,
             extra={"event": "queue.depth", "messages": depth.messages, "poison": depth.poison})
    if settings.notification_url:  # create, renew or recreate the change-notification subscriptions
        ensure_subscriptions(graph_client(settings), backend.state, settings)
    cursor = load_cursor(backend.state)
    resume = cursor is not None and now - max(cursor.updated, cursor.started) > stalled_after(settings)
    if not resume and (cursor is not None or not full_sync_due(backend.state, settings.full_sync_interval_hours,
                                                                now)):
        log.info("full run %s; queuing a delta catch-up",
                 f"{cursor.run_id} in progress ({cursor.segment} segments done)" if cursor else "not due yet")
        backend.queue.send(CatchUpMessage(now, "timer").body())
        return None
    if resume:
        log.warning("full run %s stalled after %d segments; resuming it", cursor.run_id, cursor.segment)
    else:
        _log_credentials(settings, backend.state)  # a new full run: at least daily
    return _segment(settings, backend, "timer",
                    repair=not resume and repair_due(backend.state, settings.repair_interval_days, now))


def _log_credentials(settings: Settings, state: StateStore) -> None:
    """One ``credential.status`` event (kind, days left; no secret) per credential: the expiry alert reads them
    (infra/alerts.bicep). Never fails the tick: a report that cannot be made is logged as such."""
    from shared.admin.credential_expiry import credential_report

    try:
        report = credential_report(settings, graph_client(settings), state)
    except EntraAssetsError as error:
        log.warning("credential expiry not reported (%s)", type(error).__name__)
        return
    for entry in report.values():
        log.info("credential %s: %s days left", entry["kind"], entry["days_left"],
                 extra={"event": "credential.status", "kind": entry["kind"], "days_left": entry["days_left"]})


def stalled_after(settings: Settings) -> float:
    """How long a run may go without a segment ending before a timer tick resumes it: a segment, the plan, and
    the queue's redeliveries of a failed continuation (visibility timeout 60 s, five deliveries), twice over."""
    return 2 * (2 * settings.segment_seconds + 5 * 60)


def on_segment_message(settings: Settings, message: QueuedMessage) -> FullRunResult | None:
    """The run queue's path: the next segment of the full run the message continues. A message for a run or a
    segment already done (a redelivery, a duplicate) changes nothing. Raises ``LeaseBusy`` while another
    segment runs (the host delivers the message again later)."""
    try:
        continued = parse_segment_message(message.body)
    except InvalidMessage as why:  # raised: the host retries it, then moves it to the poison queue
        raise ValueError(f"queue message {message.id} is not an entra-assets run message ({why})") from None
    backend = open_backend(settings)
    cursor = load_cursor(backend.state)
    if cursor is None or (cursor.run_id, cursor.segment) != (continued.run, continued.done):
        log.info("continuation of full run %s after %d segments is stale; nothing to do", continued.run,
                 continued.done)
        return None
    return _segment(settings, backend, continued.trigger)


def _segment(settings: Settings, backend: Backend, trigger: str, repair: bool = False) -> FullRunResult | None:
    """One segment of the full run (started by ``trigger`` when none is in progress; a repair run when
    ``repair``), with the run history's stage; what a crashed worker left is recovered first, before anything
    is planned."""
    recover(backend.state, assets_client(settings))
    tracker = history.StageTracker(backend.state, trigger, "full")
    options = replace(RunOptions.from_settings(settings), repair=repair)
    try:
        result = _full_run(settings, backend, graph_client(settings), trigger, options, tracker,
                           open_run_queue(settings))
    finally:
        tracker.finish()  # the worker takes over from here
    if (error := run_outcome_error(result)) is not None:
        raise error
    return result


def event_checks(settings: Settings, state: StateStore) -> Expected | None:
    """What Graph's events on the queue must carry to be acted on (``shared.contract.notifications``); None
    unless NOTIFICATION_DELIVERY=eventgrid (then every event is refused)."""
    if not settings.event_grid:
        return None
    secret = settings.webhook_client_state.reveal() if settings.webhook_client_state else None
    return Expected.of(secret, subscription_ids(state), settings.tenant_id)


def on_queue_message(settings: Settings, message: QueuedMessage) -> PushResult:
    """The worker path for one delivered message: drain, coalesce, push, acknowledge."""
    backend = open_backend(settings)
    events = event_checks(settings, backend.state)
    try:
        delivered = read_message(message.body, events)
    except InvalidMessage as why:  # raised: the host retries it, then moves it to the poison queue
        raise ValueError(f"queue message {message.id} is not an entra-assets message ({why})") from None
    if delivered is None:  # an Event Grid event that is not ours: logged, and completed by the host
        return PushResult()
    kind = "full" if isinstance(delivered, RecordsMessage | HandOnMessage) else "catch-up"
    tracker = history.StageTracker(backend.state, delivered.trigger, kind,
                                   quiet_for=0.0 if kind == "full" else CATCH_UP_QUIET_SECONDS)
    catch_up, result = catch_up_planner(settings, backend.state, tracker)
    try:
        pushed = push_queued(backend.queue, backend.payloads, backend.state, assets_client(settings),
                             trigger=message, progress=tracker, catch_up=catch_up,
                             on_pass=_recorder(settings, backend.state, result), after=link_hook(settings),
                             budget=settings.segment_seconds, events=events)
    finally:
        tracker.finish()
    resubscribe(settings, backend.state, pushed)
    if (error := run_outcome_error(result)) is not None:
        raise error
    return pushed


def resubscribe(settings: Settings, state: StateStore, pushed: PushResult) -> None:
    """Renew or recreate the subscriptions whose lifecycle events a worker pass drained (the trigger's or not):
    Graph repeats reauthorizationRequired until the subscription is renewed, so it is renewed whatever its
    expiry (https://learn.microsoft.com/azure/event-grid/subscribe-to-graph-api-events); subscriptionRemoved
    finds it gone and creates it again. "missed" needs only the catch-up the pass ran."""
    renew = {subscription for event, subscription in pushed.lifecycle if event in RESUBSCRIBE}
    if renew and settings.notification_url:
        ensure_subscriptions(graph_client(settings), state, settings, renew=renew)


@dataclass
class SyncReport:
    """A CLI ``sync --full``: the producer's result and every worker pass until the queue was empty."""

    full: FullRunResult
    pushes: list[PushResult] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def executions(self) -> int:
        return sum(p.executions for p in self.pushes)

    @property
    def records_pushed(self) -> int:
        return sum(p.records for p in self.pushes)


def sync_full(settings: Settings, progress: Progress = lambda stage, n: None, **kwargs) -> SyncReport:
    """``entra-assets sync --full``: a forced full run, then the worker until the queue is empty (``_sync``)."""
    with run("sync_full"):  # joins the CLI command's correlation id (or starts one)
        return _sync(settings, progress, full=True, **kwargs)


def sync_incremental(settings: Settings, progress: Progress = lambda stage, n: None, **kwargs) -> SyncReport:
    """``entra-assets sync``: a delta catch-up through the queue and the worker (``_sync``)."""
    with run("sync_incremental"):
        return _sync(settings, progress, full=False, **kwargs)


def _sync(settings: Settings, progress: Progress, *, full: bool, backend: Backend | None = None,
          graph: GraphClient | None = None, assets: AssetsClient | None = None,
          allow_mass_deactivation: bool = False, allow_over_object_limit: bool = False,
          repair: bool = False) -> SyncReport:
    """The timer path (forced), then the worker in-process until the queue holds nothing more. Raises
    whatever stopped it; queued work then stays queued for the next run. Bad input (settings, a MAPPING_FILE,
    the import, a scope filter Graph refuses) is refused before anything is queued or written. ``backend``,
    ``graph`` and ``assets`` default to what the settings describe (tests and the benchmark pass their own to
    count requests). Departures held back by the guard show in ``report.full.held_back``, types that could
    not be read in ``report.full.failed``, a run held by the allowance in ``report.full.over_allowance``.
    ``allow_over_object_limit`` lets one full run cross ASSETS_OBJECT_LIMIT; ``repair`` makes it a repair run."""
    started = time.monotonic()
    options = RunOptions.from_settings(settings, allow_mass_deactivation,  # a bad MAPPING_FILE fails first
                                       allow_over_object_limit)
    options = replace(options, repair=repair)
    backend = backend or open_backend(settings)
    assets = assets or assets_client(settings)
    assets.ensure_ready()  # a bad token or a disabled import fails before the directory is read
    recover(backend.state, assets, lease_wait=CLI_LEASE_WAIT_SECONDS)  # what a killed run left, before planning
    tracker = history.StageTracker(backend.state, "cli", "full" if full else "catch-up")
    progress = history.fanout(progress, tracker)
    try:
        progress("Starting", 0)
        graph = graph or graph_client(settings)
        scope = None if full else read_scope(graph, options)  # a refused filter queues no catch-up
        catch_up, caught_up = catch_up_planner(settings, backend.state, progress, allow_mass_deactivation, graph,
                                               scope)
        if full:
            result = _full_run(settings, backend, graph, "cli", options, progress, None, fresh=True)
            while result is None:  # every segment in this process: the CLI has no invocation time limit
                result = _full_run(settings, backend, graph, "cli", options, progress, None)
            report = SyncReport(result)
        else:
            backend.queue.send(CatchUpMessage(time.time(), "cli").body())
            report = SyncReport(caught_up)
        while True:
            pushed = push_queued(backend.queue, backend.payloads, backend.state, assets, progress=progress,
                                 catch_up=catch_up, on_pass=_recorder(settings, backend.state, caught_up),
                                 after=link_hook(settings), lease_wait=CLI_LEASE_WAIT_SECONDS,
                                 events=event_checks(settings, backend.state))
            report.pushes.append(pushed)
            resubscribe(settings, backend.state, pushed)
            if pushed.messages == 0:
                break
    finally:
        tracker.finish()
    report.seconds = time.monotonic() - started
    return report


def _full_run(settings: Settings, backend: Backend, graph: GraphClient, trigger: str, options: RunOptions,
              progress: Progress, runs: ChangeQueue | None, fresh: bool = False) -> FullRunResult | None:
    """One segment of the full run (``advance``), its records message stamped for the run history (trigger,
    producer summary); ``runs`` None: no continuation is queued (the caller loops); ``fresh``: a new run replaces
    one in progress (``advance``). A run that failed before
    queuing - which the worker never sees - is recorded here."""
    started = time.time()
    try:
        result = advance(graph, backend.state, backend.queue, backend.payloads, runs, options,
                         settings.segment_seconds, trigger, progress,
                         stamp=lambda r, t: {"trigger": trigger, "summary": history.producer_summary(r, t)},
                         fresh=fresh)
    except LeaseBusy:
        raise  # another segment of the run is running: not a failure of the run
    except Exception as error:
        history.append(backend.state, history.producer_record(trigger, "full", started, time.time(), error))
        raise
    if result is not None and result.over_allowance:  # held whole: the worker never sees it
        history.append(backend.state, history.producer_record(trigger, "full", started, time.time(),
                                                              object_limit_error(result)))
    return result


def _recorder(settings: Settings, state: StateStore, caught_up: FullRunResult):
    """The worker's ``on_pass``: one history record per pass that handled messages (failed ones included)."""
    started = time.time()

    def record(pushed: PushResult, error: BaseException | None) -> None:
        history.append(state, history.pass_record(pushed, pushed.began or started, time.time(), error, caught_up,
                                                  settings.max_deactivations))
    return record


def preview(settings: Settings, progress: Progress = lambda stage, n: None) -> PreviewReport:
    """``entra-assets preview``: the full run's plan, nothing written."""
    backend = open_backend(settings)
    return run_preview(graph_client(settings), backend.state, RunOptions.from_settings(settings), progress)
