"""The retry layer: transient failures retried with Retry-After, bounded; others handed back."""
import httpx
import pytest

from shared.transport import Failure, GaveUp, RetryPolicy, Transport, classify, retry_after_seconds

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
    assert all(classify(s) is Failure.RETRY for s in (429, 502, 503, 504))
    assert classify(401) is Failure.CREDENTIALS and classify(403) is Failure.PERMISSION
    assert all(classify(s) is Failure.CALLER for s in (400, 404, 409, 410, 413, 500))


def test_retry_after_is_honoured_then_success():
    t, calls, sleeps = _transport([429, 503, 200], headers={"Retry-After": "2.5"})
    assert t.send("GET", "http://x/y").status_code == 200
    assert len(calls) == 3 and sleeps == [2.5, 2.5] and t.requests == 3


def test_gives_up_after_the_attempt_budget():
    t, calls, _ = _transport([503])
    with pytest.raises(GaveUp) as info:
        t.send("GET", "http://x/y")
    assert info.value.status == 503 and len(calls) == 4


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
