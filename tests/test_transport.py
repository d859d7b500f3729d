"""The retry layer: transient failures retried with Retry-After, bounded; others handed back; total deadlines;
credentials only to the allowed origins."""
import socket
import threading
import time

import httpx
import pytest

from shared.clients.transport import (
    Failure,
    GaveUp,
    Origin,
    RetryPolicy,
    Transport,
    _DeadlineBackend,
    classify,
    http_client,
    retry_after_seconds,
)
from shared.errors import ForeignLink

FOUR_TRIES = RetryPolicy(attempts=4, total_seconds=60)


def _transport(statuses, policy=FOUR_TRIES, headers=None):
    calls, sleeps = [], []

    def handler(request):
        calls.append(request)
        return httpx.Response(statuses[min(len(calls) - 1, len(statuses) - 1)], headers=headers or {})
    t = Transport(httpx.Client(transport=httpx.MockTransport(handler)), policy, sleep=sleeps.append)
    return t, calls, sleeps


def test_classification_table():
    assert classify(200) is Failure.OK and classify(204) is Failure.OK
    assert all(classify(s) is Failure.RETRY for s in (429, 500, 502, 503, 504))
    assert classify(401) is Failure.CREDENTIALS and classify(403) is Failure.PERMISSION
    assert all(classify(s) is Failure.CALLER for s in (400, 404, 409, 410, 413, 501))


def test_retry_after_is_honoured_then_success():
    t, calls, sleeps = _transport([429, 503, 200], headers={"Retry-After": "2.5"})
    assert t.send("GET", "http://x/y").status_code == 200
    assert len(calls) == 3 and sleeps == [2.5, 2.5] and t.requests == 3


def test_a_500_is_retried_with_the_same_bytes():
    t, calls, _ = _transport([500, 500, 200])
    body = b'{"data":{"users":[]},"clientGeneratedId":"chunk-00001","completed":false}'
    assert t.send("POST", "http://x/data", content=body).status_code == 200
    assert len(calls) == 3 and {c.content for c in calls} == {body}


def test_gives_up_after_the_attempt_budget():
    t, calls, _ = _transport([503])
    with pytest.raises(GaveUp) as info:
        t.send("GET", "http://x/y")
    assert info.value.status == 503 and len(calls) == 4 and info.value.answer == "HTTP 503"


def test_gives_up_when_retry_after_exceeds_the_time_budget():
    t, calls, sleeps = _transport([429], RetryPolicy(attempts=10, total_seconds=5), {"Retry-After": "60"})
    with pytest.raises(GaveUp):
        t.send("GET", "http://x/y")
    assert len(calls) == 1 and sleeps == []


def test_non_transient_statuses_are_returned_not_retried():
    for status in (400, 401, 403, 409):
        t, calls, _ = _transport([status])
        assert t.send("POST", "http://x/y").status_code == status and len(calls) == 1


def test_retry_after_http_date_and_garbage():
    assert retry_after_seconds(httpx.Response(429, headers={"Retry-After": "Wed, 21 Oct 2015 07:28:00 GMT"})) == 0
    assert retry_after_seconds(httpx.Response(429, headers={"Retry-After": "soon"})) is None
    assert retry_after_seconds(httpx.Response(429)) is None


def test_before_retry_runs_before_each_retry_only():
    t, calls, _ = _transport([500, 502, 200])
    seen: list[int] = []
    assert t.send("POST", "http://x/start", before_retry=lambda: seen.append(len(calls))).status_code == 200
    assert seen == [1, 2] and len(calls) == 3  # before the 2nd and 3rd attempt, never before the first


def test_before_retry_can_stop_the_retries():
    t, calls, _ = _transport([500, 200])

    class Reconciled(Exception):
        pass

    def reconcile():
        raise Reconciled("the execution exists already")
    with pytest.raises(Reconciled):
        t.send("POST", "http://x/start", before_retry=reconcile)
    assert len(calls) == 1  # the failed attempt only: the hook's exception stopped the retry


def test_a_transport_bound_to_an_origin_refuses_others_before_sending():
    t, calls, _ = _transport([200])
    t.allow(Origin.of("https://graph.microsoft.com/v1.0", "GRAPH_BASE_URL", "Microsoft Graph"))
    assert t.send("GET", "https://GRAPH.microsoft.com:443/v1.0/users").status_code == 200  # same origin
    for foreign in ("https://evil.example:8443/v1.0/users", "http://graph.microsoft.com/v1.0/users",
                    "https://graph.microsoft.com:8443/v1.0/users", "https://graph.microsoft.com@evil.example/"):
        with pytest.raises(ForeignLink) as info:
            t.send("GET", foreign)
        assert "GRAPH_BASE_URL's host graph.microsoft.com" in str(info.value)
    assert info.value.host == "evil.example" and len(calls) == 1
    assert "evil.example:8443, which is not" in str(pytest.raises(ForeignLink, t.send, "GET",
                                                                  "https://evil.example:8443/").value)


def test_http_clients_bound_the_total_time_of_a_request():
    """A guard for httpx upgrades: ``http_client`` puts the deadline-aware backend into its pools."""
    client = http_client()
    assert isinstance(client._transport._pool._network_backend, _DeadlineBackend)


class TrickleServer:
    """A loopback HTTP/1.1 server that answers every request 200 but slowly: one byte every ``gap`` seconds, of
    the status line and headers (``headers=True``) or of the body, for ``seconds`` in all - then it completes
    the answer. ``requests`` counts the requests it received."""

    def __init__(self, *, headers: bool, seconds: float = 6.0, gap: float = 0.05):
        self.headers, self.seconds, self.gap = headers, seconds, gap
        self.requests = 0
        self._sock = socket.create_server(("127.0.0.1", 0))
        self._sock.settimeout(0.1)
        self.url = f"http://127.0.0.1:{self._sock.getsockname()[1]}"
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._sock.accept()
            except TimeoutError:
                continue
            threading.Thread(target=self._answer, args=(conn,), daemon=True).start()

    def _answer(self, conn: socket.socket) -> None:
        with conn:
            data = b""
            while b"\r\n\r\n" not in data:
                chunk = conn.recv(4096)
                if not chunk:
                    return
                data += chunk
            self.requests += 1
            body = b"x" * int(self.seconds / self.gap)
            head = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: %d\r\n\r\n" % len(body)
            slow, fast = (head, body) if self.headers else (body, head)
            try:
                if not self.headers:
                    conn.sendall(fast)
                for i in range(len(slow)):
                    if self._stop.is_set():
                        return
                    conn.sendall(slow[i:i + 1])
                    time.sleep(self.gap * (len(body) / len(slow) if self.headers else 1))
                if self.headers:
                    conn.sendall(fast)
            except OSError:  # the client gave up and closed the connection
                return

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self._sock.close()


@pytest.mark.parametrize("trickled", ["body", "headers"])
def test_a_trickling_server_cannot_hold_a_request_past_its_deadline(trickled):
    server = TrickleServer(headers=trickled == "headers")
    try:
        transport = Transport(http_client(timeout=5.0), RetryPolicy(attempts=3, total_seconds=1.5,
                                                                     request_seconds=0.6, base_delay=0.01))
        started = time.monotonic()
        with pytest.raises(GaveUp) as info:
            transport.send("GET", f"{server.url}/v1.0/users")
        elapsed = time.monotonic() - started
    finally:
        server.stop()
    # Each read got a byte well within its 5 s timeout: only the total deadline stopped the attempts, and the
    # whole call (3 attempts of at most 0.6 s, under the 1.5 s budget) ended in time, not after 6 s.
    assert elapsed < 2.5, elapsed
    assert "no complete answer within 0.6 s" in str(info.value) and info.value.status is None
    assert server.requests >= 2  # a deadline is a dropped connection: retried
