"""Queue trigger: the next segment of a full run, continued through the run queue (shared/produce/segments.py)."""
import logging
import os

import azure.functions as func

from shared.app import on_segment_message
from shared.settings import load_settings
from shared.store.ports import QueuedMessage
from shared.telemetry import SpanKind, invocation

bp = func.Blueprint()
log = logging.getLogger(__name__)


@bp.function_name("full_run_segment")
@bp.queue_trigger(arg_name="msg", queue_name="%RUN_QUEUE_NAME%", connection="AzureWebJobsStorage")
@invocation("full_run_segment", SpanKind.CONSUMER, cid_of=lambda msg: msg.get_json().get("cid"))  # the run's
def full_run_segment(msg: func.QueueMessage) -> None:
    """Raising (another segment still runs, a Graph failure) leaves the message to be redelivered; after
    maxDequeueCount it goes to the poison queue, and the timer resumes the stalled run."""
    message = QueuedMessage(id=msg.id, body=msg.get_json(), dequeue_count=msg.dequeue_count or 1, receipt=None)
    result = on_segment_message(load_settings(os.environ), message)
    if result is not None:
        log.info("full run %s planned after %d segments: %d records queued", result.run_id, len(result.segments),
                 result.queued)
