"""Graph change notifications (graph.md §3): the pure part of ``functions/graph_webhook``.

``handle_notification_request`` takes what the HTTP request carried and returns what to answer and what to
queue; it does no I/O, so the webhook stays a thin adapter and everything here is tested without a host.

- A ``validationToken`` query parameter is the subscription handshake (§3.2): answered 200 with the token as
  ``text/plain`` before any body is looked at. Tokens over 1,024 characters or with control characters: 400.
- Anything else is a notification POST (§3.3): JSON (415 otherwise), at most 1 MiB (413), an object with a
  ``value`` array (400). These errors queue nothing.
- Each item must pass the checks of ``shared.contract.notifications`` (clientState, subscription, tenant,
  resource): the same checks the worker applies to events Event Grid delivers. Items that fail are counted,
  never queued, and still answered 202: Graph must not retry a forged or foreign notification, and there is no
  sender to tell. Lifecycle notifications pass the same checks.
- Accepted changes become one ``changes`` message per request, deduplicated by (resource, id) keeping the
  strongest change type; the message is split when its JSON would not fit one queue message. Lifecycle
  notifications (§3.6) become one ``lifecycle`` message each (deduplicated by event and subscription).

The messages are the contract's (``shared.contract.messages``): ``ChangesMessage`` and ``LifecycleMessage``,
with ``trigger`` "webhook" (the producer, in the run history) and ``cid``, when given, the POST's correlation id
(``shared/telemetry.py``).

``counts`` holds only fixed keys (``shared.contract.notifications.COUNT_KEYS``), never ids or secrets, so it can be logged as is.
"""
from __future__ import annotations

import json
import unicodedata
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field

from shared.contract.messages import ChangesMessage, LifecycleMessage
from shared.contract.notifications import Expected, accept

MAX_TOKEN_CHARS = 1024
MAX_BODY_BYTES = 1024 * 1024
TEXT_PLAIN = "text/plain; charset=utf-8"


@dataclass
class WebhookOutcome:
    """What to answer (``status``, ``content_type``, ``body``) and what to queue (``messages``, in order)."""

    status: int
    content_type: str = TEXT_PLAIN
    body: str = ""
    messages: list[ChangesMessage | LifecycleMessage] = field(default_factory=list)
    counts: Counter = field(default_factory=Counter)


def _get(mapping: Mapping[str, str], name: str) -> str | None:
    """``mapping[name]`` with a case-insensitive fallback (plain dicts in tests, the host's mappings live)."""
    value = mapping.get(name)
    if value is not None:
        return value
    folded = name.casefold()
    for key, value in mapping.items():
        if key.casefold() == folded:
            return value
    return None


def is_validation(query: Mapping[str, str]) -> bool:
    """True when the request is the subscription handshake (it needs no state, no storage)."""
    return _get(query, "validationToken") is not None


def _error(status: int, text: str, **counts: int) -> WebhookOutcome:
    return WebhookOutcome(status=status, body=text, counts=Counter(counts))


def _validation(token: str) -> WebhookOutcome:
    if not token:
        return _error(400, "empty validationToken", validation_refused=1)
    if len(token) > MAX_TOKEN_CHARS:
        return _error(400, f"validationToken longer than {MAX_TOKEN_CHARS} characters", validation_refused=1)
    if any(unicodedata.category(ch) == "Cc" for ch in token):
        return _error(400, "validationToken contains control characters", validation_refused=1)
    # Echoed exactly, as text/plain (never HTML): the host sends it with "X-Content-Type-Options: nosniff".
    return WebhookOutcome(status=200, body=token, counts=Counter(validation=1))


def _is_json(content_type: str | None) -> bool:
    return bool(content_type) and content_type.split(";", 1)[0].strip().casefold() == "application/json"


def handle_notification_request(query: Mapping[str, str], headers: Mapping[str, str], body: bytes, *,
                                client_state: str | None, subscriptions: Mapping[str, str] | None,
                                tenant: str | None, now: float, cid: str | None = None) -> WebhookOutcome:
    """Answer one POST to the webhook; see the module docstring. ``client_state`` is the revealed secret (None
    or empty: nothing is accepted); ``subscriptions`` maps our subscription ids to "users"/"groups" (None: not
    known yet, nothing is accepted); ``tenant`` is ``AZURE_TENANT_ID`` (None: tenant ids are not checked);
    ``cid``, the request's correlation id, goes into every queued message."""
    token = _get(query, "validationToken")
    if token is not None:
        return _validation(token)
    if not _is_json(_get(headers, "Content-Type")):
        return _error(415, "expected Content-Type: application/json", rejected_content_type=1)
    if len(body) > MAX_BODY_BYTES:
        return _error(413, f"body larger than {MAX_BODY_BYTES} bytes", rejected_too_large=1)
    try:
        document = json.loads(body)
    except (ValueError, RecursionError):  # UnicodeDecodeError is a ValueError
        return _error(400, "body is not valid JSON", rejected_invalid_json=1)
    items = document.get("value") if isinstance(document, dict) else None
    if not isinstance(items, list):
        return _error(400, "body has no 'value' array", rejected_no_value=1)

    outcome = WebhookOutcome(status=202)
    expected = Expected.of(client_state, subscriptions, tenant)
    outcome.messages.extend(accept(items, expected, outcome.counts).messages(now, cid, "webhook"))
    return outcome
