"""HTTP: Graph change notifications in, queue messages out (the work itself is in shared.produce.notifications)."""
import functools
import logging
import os
import time

import azure.functions as func

from shared.app import Backend, open_backend
from shared.produce.notifications import handle_notification_request, is_validation
from shared.produce.subscriptions import subscription_ids
from shared.settings import Settings, load_settings
from shared.telemetry import current_cid, invocation

bp = func.Blueprint()
log = logging.getLogger(__name__)


@functools.lru_cache(maxsize=4)
def _backend(settings: Settings) -> Backend:
    """One backend (storage clients, their connection pools) per process and settings: Graph wants < 3 s."""
    return open_backend(settings, quick=True)  # fail fast: a 503 in seconds, and Graph delivers again


@bp.function_name("graph_webhook")
@bp.route(route="graph-webhook", methods=["POST"], auth_level=func.AuthLevel.FUNCTION)
@invocation("graph_webhook")  # a correlation id per POST, queued with its messages; a span
def graph_webhook(req: func.HttpRequest) -> func.HttpResponse:
    """Queue first, then 202; a queue that cannot be written answers 503 so that Graph retries."""
    settings = load_settings(os.environ)
    secret = settings.webhook_client_state.reveal() if settings.webhook_client_state else None
    try:
        backend = None if is_validation(req.params) else _backend(settings)  # the handshake needs no storage
        outcome = handle_notification_request(req.params, req.headers, req.get_body(), client_state=secret,
                                              subscriptions=backend and subscription_ids(backend.state),
                                              tenant=settings.tenant_id, now=time.time(), cid=current_cid())
        for message in outcome.messages:
            backend.queue.send(message.body())
    except Exception as err:  # noqa: BLE001 - whatever failed, nothing may be lost: let Graph retry
        log.error("graph_webhook could not queue notifications (%s); answering 503", type(err).__name__)
        return func.HttpResponse("queue unavailable, retry later", status_code=503, headers={"Retry-After": "10"})
    log.info("graph_webhook %d: %s", outcome.status, dict(sorted(outcome.counts.items())),
             extra={"event": "notification", "status": outcome.status, "queued": len(outcome.messages)})
    mimetype, _, charset = outcome.content_type.partition("; charset=")
    return func.HttpResponse(outcome.body, status_code=outcome.status, mimetype=mimetype, charset=charset or None,
                             headers={"X-Content-Type-Options": "nosniff", "Cache-Control": "no-store"})
