"""HTTP for both APIs: the one table that classifies failures and the one layer of retries.

Every request to Microsoft Graph and to Assets goes through ``Transport.send``. Transient failures (429, 502,
503, 504, timeouts, dropped connections) are retried here, honouring ``Retry-After``, bounded by a number of
attempts *and* a total time; everything else is handed back to the caller, who knows what a 409 or a 410
means for its API. The storage queue's redelivery is the outer retry, so this layer gives up rather than
waiting forever.

- Graph throttling: https://learn.microsoft.com/graph/throttling (429/503/504 with Retry-After)
- Assets rate limits: 429/503 per instance, Retry-After header presence UNCONFIRMED
  (https://jira.atlassian.com/browse/JSDCLOUD-11605) - without it we back off exponentially.
"""
from __future__ import annotations

import email.utils
import itertools
import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum

import httpx
from tenacity import RetryCallState, Retrying, retry_if_exception_type, stop_after_attempt, stop_before_delay

log = logging.getLogger(__name__)

USER_AGENT = "entra-assets/0.1 (+https://github.com/entra-assets)"  # on every request to Graph, Assets and Jira


def http_client(timeout: float = 60.0) -> httpx.Client:
    """A pooled HTTP client with our User-Agent: ``timeout`` per read, 10 s to connect."""
    return httpx.Client(timeout=httpx.Timeout(timeout, connect=10.0), headers={"User-Agent": USER_AGENT})


class Failure(Enum):
    """What a response status means for the caller."""

    OK = "ok"
    RETRY = "retry"            # transient: retried here
    CREDENTIALS = "credentials"  # 401: configuration, never retried
    PERMISSION = "permission"  # 403: configuration, never retried
    CALLER = "caller"          # anything else: the caller interprets it (400, 404, 409, 410, 413 ...)


RETRIABLE_STATUS = frozenset({429, 502, 503, 504})


def classify(status: int) -> Failure:
    """The single classification table for HTTP statuses of both APIs."""
    if 200 <= status < 400:
        return Failure.OK
    if status in RETRIABLE_STATUS:
        return Failure.RETRY
    if status == 401:
        return Failure.CREDENTIALS
    if status == 403:
        return Failure.PERMISSION
    return Failure.CALLER


@dataclass(frozen=True)
class RetryPolicy:
    """Bounds of the retry layer: attempts, total seconds, and the backoff used without Retry-After."""

    attempts: int = 6
    total_seconds: float = 120.0
    base_delay: float = 0.5
    max_delay: float = 30.0


class TransientError(Exception):
    """Raised inside the retry loop for a retriable response or a network failure."""

    def __init__(self, message: str, response: httpx.Response | None = None):
        super().__init__(message)
        self.response = response


class GaveUp(Exception):
    """Retries exhausted: ``status`` is the last HTTP status (None for network errors)."""

    def __init__(self, message: str, status: int | None):
        super().__init__(message)
        self.status = status


def retry_after_seconds(response: httpx.Response | None) -> float | None:
    """Parse ``Retry-After``: seconds (integer or fractional, as Graph's docs show) or an HTTP date."""
    value = response.headers.get("Retry-After") if response is not None else None
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


class Transport:
    """An ``httpx.Client`` plus the retry policy; ``sleep`` is injectable so tests need not wait."""

    def __init__(self, client: httpx.Client, policy: RetryPolicy = RetryPolicy(), sleep=time.sleep):
        self.client = client
        self.policy = policy
        self._sleep = sleep
        self.requests = 0  # every request sent, retries included (reported by the benchmark)

    def _wait(self, state: RetryCallState) -> float:
        error = state.outcome.exception() if state.outcome else None
        hinted = retry_after_seconds(getattr(error, "response", None))
        if hinted is not None:
            return hinted
        backoff = self.policy.base_delay * 2 ** (state.attempt_number - 1)
        return min(self.policy.max_delay, backoff) * (0.5 + random.random() / 2)

    def send(self, method: str, url: str, before_retry: Callable[[], None] | None = None, **kwargs) -> httpx.Response:
        """Send a request; retry transient failures; return the final response of any other status.

        ``before_retry`` runs before each retry (not before the first attempt): a request that is not safe to
        repeat blindly reconciles there what its failed attempt may have done; what it raises ends the retries.
        Raises ``GaveUp`` when the retry budget (attempts or total time) is spent.
        """
        retrying = Retrying(
            stop=stop_after_attempt(self.policy.attempts) | stop_before_delay(self.policy.total_seconds),
            wait=self._wait, retry=retry_if_exception_type(TransientError), sleep=self._sleep, reraise=True)
        attempts = itertools.count()

        def attempt() -> httpx.Response:
            if next(attempts) and before_retry is not None:
                before_retry()
            return self._attempt(method, url, **kwargs)
        try:
            return retrying(attempt)
        except TransientError as exc:
            status = exc.response.status_code if exc.response is not None else None
            raise GaveUp(str(exc), status) from None

    def _attempt(self, method: str, url: str, **kwargs) -> httpx.Response:
        self.requests += 1
        try:
            response = self.client.request(method, url, **kwargs)
        except (httpx.TimeoutException, httpx.NetworkError, httpx.RemoteProtocolError) as exc:
            raise TransientError(f"{method} {_safe(url)}: {type(exc).__name__}") from exc
        if classify(response.status_code) is Failure.RETRY:
            log.info("transient %s from %s %s; retrying", response.status_code, method, _safe(url))
            raise TransientError(f"{method} {_safe(url)}: HTTP {response.status_code}", response)
        return response


def _safe(url: str) -> str:
    """The URL without its query string, for logs: tokens such as $skiptoken stay out of them."""
    return url.split("?", 1)[0]
