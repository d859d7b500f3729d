"""HTTP for every API: the one table that classifies failures, the one layer of retries, and the one place
that decides where a credential may go.

Every request to Microsoft Graph, Assets and Jira goes through ``Transport.send``. Transient failures (429,
500, 502, 503, 504, timeouts, dropped connections) are retried here, honouring ``Retry-After``, bounded by a
number of attempts *and* a total time; everything else is handed back to the caller, who knows what a 409 or a
410 means for its API. The storage queue's redelivery is the outer retry, so this layer gives up rather than
waiting forever. 500 is retried as the Azure SDKs and most HTTP clients do: Graph and Assets answer it for
passing faults, and a request that failed with it is sent again byte for byte (same body, same Assets
``clientGeneratedId``). A request that is not safe to repeat (Assets ``start`` may have created an execution
before failing) passes ``before_retry``, which runs before every retry and may raise to stop them.

- Graph throttling: https://learn.microsoft.com/graph/throttling (429/503/504 with Retry-After)
- Assets rate limits: 429/503 per instance, Retry-After header presence UNCONFIRMED
  (https://jira.atlassian.com/browse/JSDCLOUD-11605) - without it we back off exponentially.

**Deadlines.** httpx's timeouts are per socket operation: a server that sends a byte every few seconds
resets them forever. So each attempt has a total deadline (``RetryPolicy.request_seconds``) and the whole
``send`` one too (``total_seconds``, retries and their waits included). Clients made by ``http_client`` cap
every connect, TLS handshake, write and read at the time left before the current deadline
(``_DeadlineBackend``), so the headers and the body of an answer are bounded together, however slowly they
trickle in. Not bounded: the DNS lookup (the OS resolver has no timeout), what a ``before_retry`` hook does,
and requests made through an ``httpx.Client`` that ``http_client`` did not build (tests' mock transports).

**Origins** (SPEC §7, DESIGN "credentials stay home"). A client binds its transport to the origin (scheme,
host, port) its credentials belong to (``Transport.allow``); from then on ``send`` refuses - before anything is
sent - a URL on any other origin with ``ForeignLink``, naming the host. Links handed out by a server
(``@odata.nextLink``, stored delta links, Assets' import links) are followed only through here.
"""
from __future__ import annotations

import contextvars
import email.utils
import logging
import random
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from enum import Enum
from urllib.parse import urlsplit

import httpcore
import httpx
from tenacity import RetryCallState, Retrying, retry_if_exception_type, stop_after_attempt, stop_before_delay

from shared.errors import ForeignLink

log = logging.getLogger(__name__)

USER_AGENT = "entra-assets/0.1 (+https://github.com/entra-assets)"  # on every request to Graph, Assets and Jira


class Failure(Enum):
    """What a response status means for the caller."""

    OK = "ok"
    RETRY = "retry"            # transient: retried here
    CREDENTIALS = "credentials"  # 401: configuration, never retried
    PERMISSION = "permission"  # 403: configuration, never retried
    CALLER = "caller"          # anything else: the caller interprets it (400, 404, 409, 410, 413 ...)


RETRIABLE_STATUS = frozenset({429, 500, 502, 503, 504})


def classify(status: int) -> Failure:
    """The single classification table for HTTP statuses of every API."""
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
    """Bounds of the retry layer: attempts, total seconds of one ``send`` (retries and waits included),
    seconds of one attempt (connect to last byte of the answer), and the backoff used without Retry-After."""

    attempts: int = 6
    total_seconds: float = 120.0
    request_seconds: float = 90.0
    base_delay: float = 0.5
    max_delay: float = 30.0


class TransientError(Exception):
    """Raised inside the retry loop for a retriable response or a network failure."""

    def __init__(self, message: str, response: httpx.Response | None = None):
        super().__init__(message)
        self.response = response


class GaveUp(Exception):
    """Retries exhausted: ``status`` is the last HTTP status (None for network errors and deadlines)."""

    def __init__(self, message: str, status: int | None):
        super().__init__(message)
        self.status = status

    @property
    def answer(self) -> str:
        """``HTTP 503``, or ``no complete answer`` when the last attempt got none."""
        return f"HTTP {self.status}" if self.status is not None else "no complete answer"


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


# -- origins ---------------------------------------------------------------------------------------------

_DEFAULT_PORTS = {"http": 80, "https": 443}


def _origin(url: str) -> tuple[str, str, int]:
    """(scheme, host, port) of ``url``, lower-cased, the port filled in. ``urlsplit``: on every request, and
    ~10x cheaper than building an ``httpx.URL`` (which percent-checks every character of a long page link)."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    try:
        port = parts.port
    except ValueError:  # not a port: matches no origin
        port = -1
    return scheme, parts.hostname or "", port or _DEFAULT_PORTS.get(scheme, 0)


def _display(scheme: str, host: str, port: int) -> str:
    """``graph.microsoft.com``, ``evil.example:8443``, ``http://127.0.0.1:5001``: the host as an admin reads it."""
    shown = host if port == _DEFAULT_PORTS.get(scheme) else f"{host}:{port}"
    return shown if scheme == "https" else f"{scheme}://{shown}"


@dataclass(frozen=True)
class Origin:
    """Where a credential may go: the scheme, host and port of a configured URL; ``setting`` names that URL's
    setting (``GRAPH_BASE_URL``) and ``service`` the API that hands out links to it (``Microsoft Graph``)."""

    scheme: str
    host: str
    port: int
    setting: str
    service: str

    @classmethod
    def of(cls, url: str, setting: str, service: str) -> Origin:
        return cls(*_origin(url), setting, service)

    def admits(self, url: str) -> bool:
        return _origin(url) == (self.scheme, self.host, self.port)

    def __str__(self) -> str:
        return _display(self.scheme, self.host, self.port)


def foreign_link(origins: Iterable[Origin], url: str) -> ForeignLink:
    """The one-line refusal of ``url``, naming its host and the configured ones. Pure."""
    origins = list(origins)
    host = _display(*_origin(url))
    services = " or ".join(dict.fromkeys(o.service for o in origins))
    allowed = " or ".join(f"{o.setting}'s host {o}" for o in origins)
    settings = ", ".join(dict.fromkeys(o.setting for o in origins))
    return ForeignLink(f"{services} returned a link to {host}, which is not {allowed}; refused (the token is only "
                       f"sent to {settings})", host)


# -- deadlines -------------------------------------------------------------------------------------------

_DEADLINE: contextvars.ContextVar[float | None] = contextvars.ContextVar("entra_assets_deadline", default=None)


def _time_left(timeout: float | None, expired: type[Exception]) -> float | None:
    """``timeout`` capped at the seconds left before the current attempt's deadline; raises ``expired`` (an
    httpcore timeout, which httpx turns into its own) once it has passed."""
    deadline = _DEADLINE.get()
    if deadline is None:
        return timeout
    left = deadline - time.monotonic()
    if left <= 0:
        raise expired("the request's total deadline passed")
    return left if timeout is None else min(timeout, left)


class _DeadlineStream(httpcore.NetworkStream):
    """A socket whose every read and write ends by the deadline of the request using it."""

    def __init__(self, stream: httpcore.NetworkStream):
        self._stream = stream

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        return self._stream.read(max_bytes, _time_left(timeout, httpcore.ReadTimeout))

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        self._stream.write(buffer, _time_left(timeout, httpcore.WriteTimeout))

    def close(self) -> None:
        self._stream.close()

    def start_tls(self, ssl_context, server_hostname: str | None = None,
                  timeout: float | None = None) -> httpcore.NetworkStream:
        return _DeadlineStream(self._stream.start_tls(ssl_context, server_hostname,
                                                      _time_left(timeout, httpcore.ConnectTimeout)))

    def get_extra_info(self, info: str):
        return self._stream.get_extra_info(info)


class _DeadlineBackend(httpcore.NetworkBackend):
    """httpcore's network backend with ``_DeadlineStream`` sockets (httpcore's documented extension point)."""

    def __init__(self, backend: httpcore.NetworkBackend):
        self._backend = backend

    def connect_tcp(self, host: str, port: int, timeout: float | None = None, local_address: str | None = None,
                    socket_options=None) -> httpcore.NetworkStream:
        return _DeadlineStream(self._backend.connect_tcp(host, port, _time_left(timeout, httpcore.ConnectTimeout),
                                                         local_address, socket_options))

    def connect_unix_socket(self, path: str, timeout: float | None = None,
                            socket_options=None) -> httpcore.NetworkStream:
        return _DeadlineStream(self._backend.connect_unix_socket(
            path, _time_left(timeout, httpcore.ConnectTimeout), socket_options))

    def sleep(self, seconds: float) -> None:
        self._backend.sleep(seconds)


def http_client(timeout: float = 60.0) -> httpx.Client:
    """A pooled HTTP client with our User-Agent: ``timeout`` per read, 10 s to connect, and sockets that honour
    the total deadline ``Transport`` sets for each attempt (proxies from the environment included).

    httpx has no option for a network backend, so it is set on the connection pools the client built (httpx
    is pinned; tests/test_transport.py fails if a new version moves them)."""
    client = httpx.Client(timeout=httpx.Timeout(timeout, connect=10.0), headers={"User-Agent": USER_AGENT})
    for transport in (client._transport, *client._mounts.values()):
        if isinstance(transport, httpx.HTTPTransport):
            pool = transport._pool
            if not hasattr(pool, "_network_backend"):
                raise RuntimeError("httpx/httpcore changed: cannot bound the total time of requests")
            pool._network_backend = _DeadlineBackend(pool._network_backend)
    return client


# -- the retry layer -------------------------------------------------------------------------------------


class Transport:
    """An ``httpx.Client`` plus the retry policy and the allowed origins; ``sleep`` is injectable so tests
    need not wait."""

    def __init__(self, client: httpx.Client, policy: RetryPolicy = RetryPolicy(), sleep=time.sleep,
                 origins: Iterable[Origin] = ()):
        self.client = client
        self.policy = policy
        self._sleep = sleep
        self.origins: tuple[Origin, ...] = tuple(origins)
        self.requests = 0  # every request sent, retries included (reported by the benchmark)

    def allow(self, origin: Origin) -> None:
        """Restrict this transport to ``origin`` and the ones allowed before: from the first call on, ``send``
        refuses every other origin. Each client calls it with the origin its credentials belong to."""
        if origin not in self.origins:
            self.origins += (origin,)

    def _wait(self, state: RetryCallState) -> float:
        error = state.outcome.exception() if state.outcome else None
        hinted = retry_after_seconds(getattr(error, "response", None))
        if hinted is not None:
            return hinted
        backoff = self.policy.base_delay * 2 ** (state.attempt_number - 1)
        return min(self.policy.max_delay, backoff) * (0.5 + random.random() / 2)

    def send(self, method: str, url: str, *, before_retry: Callable[[], None] | None = None,
             **kwargs) -> httpx.Response:
        """Send a request; retry transient failures; return the final response of any other status.

        ``before_retry`` runs before each retry (not before the first attempt); an exception it raises stops the
        retries and propagates. Raises ``ForeignLink`` - nothing sent - for a URL outside the allowed origins,
        and ``GaveUp`` when the retry budget (attempts, ``total_seconds``) is spent.
        """
        if self.origins and not any(origin.admits(url) for origin in self.origins):
            raise foreign_link(self.origins, url)
        deadline = time.monotonic() + self.policy.total_seconds

        def before(state: RetryCallState) -> None:
            if before_retry is not None and state.attempt_number > 1:
                before_retry()
        retrying = Retrying(
            stop=stop_after_attempt(self.policy.attempts) | stop_before_delay(self.policy.total_seconds),
            wait=self._wait, retry=retry_if_exception_type(TransientError), sleep=self._sleep, reraise=True,
            before=before)
        try:
            return retrying(self._attempt, method, url, deadline, **kwargs)
        except TransientError as exc:
            status = exc.response.status_code if exc.response is not None else None
            raise GaveUp(str(exc), status) from None

    def _attempt(self, method: str, url: str, send_deadline: float, **kwargs) -> httpx.Response:
        self.requests += 1
        deadline = min(time.monotonic() + self.policy.request_seconds, send_deadline)
        token = _DEADLINE.set(deadline)
        try:
            response = self.client.request(method, url, **kwargs)
        except httpx.TimeoutException as exc:
            why = (f"no complete answer within {self.policy.request_seconds:g} s" if time.monotonic() >= deadline
                   else type(exc).__name__)
            raise TransientError(f"{method} {_safe(url)}: {why}") from exc
        except (httpx.NetworkError, httpx.RemoteProtocolError) as exc:
            raise TransientError(f"{method} {_safe(url)}: {type(exc).__name__}") from exc
        finally:
            _DEADLINE.reset(token)
        if classify(response.status_code) is Failure.RETRY:
            log.info("transient %s from %s %s; retrying", response.status_code, method, _safe(url))
            raise TransientError(f"{method} {_safe(url)}: HTTP {response.status_code}", response)
        return response


def _safe(url: str) -> str:
    """The URL without its query string, for logs: tokens such as $skiptoken stay out of them."""
    return url.split("?", 1)[0]
