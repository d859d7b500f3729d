"""Queue trigger: the single writer that pushes queued changes to Assets."""
import logging
import os

import azure.functions as func

from shared.app import on_queue_message
from shared.settings import load_settings
from shared.store.ports import QueuedMessage
from shared.telemetry import SpanKind, invocation

bp = func.Blueprint()
log = logging.getLogger(__name__)


@bp.function_name("submit_worker")
@bp.queue_trigger(arg_name="msg", queue_name="%SYNC_QUEUE_NAME%", connection="AzureWebJobsStorage")
@invocation("submit_worker", SpanKind.CONSUMER, cid_of=lambda msg: msg.get_json().get("cid"))  # the producer's
def submit_worker(msg: func.QueueMessage) -> None:
    """Raising leaves the message to be redelivered; after maxDequeueCount it goes to the poison queue."""
    message = QueuedMessage(id=msg.id, body=msg.get_json(), dequeue_count=msg.dequeue_count or 1, receipt=None)
    result = on_queue_message(load_settings(os.environ), message)
    log.info("pushed %d records from %d messages in %d execution(s)%s", result.records, result.messages,
             result.executions, " (deferred)" if result.deferred else "")
