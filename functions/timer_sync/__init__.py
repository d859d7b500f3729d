"""Timer: a full reconciliation when one is due; the changed records go to the queue for the worker."""
import logging
import os

import azure.functions as func

from shared.app import timer_tick
from shared.settings import load_settings
from shared.telemetry import SpanKind, invocation

bp = func.Blueprint()
log = logging.getLogger(__name__)


@bp.function_name("timer_sync")
@bp.timer_trigger(arg_name="timer", schedule="%TIMER_SYNC_SCHEDULE%", run_on_startup=False, use_monitor=True)
@invocation("timer_sync", SpanKind.CONSUMER)  # a correlation id per tick, stamped on what it queues
def timer_sync(timer: func.TimerRequest) -> None:
    """Settings errors and Graph errors raise: the run shows as failed in the Functions monitor."""
    if timer.past_due:
        log.warning("timer_sync is running late")
    result = timer_tick(load_settings(os.environ))
    if result is not None:
        log.info("full run %s queued %d records", result.run_id, result.queued)
