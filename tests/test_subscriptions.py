"""Graph subscriptions: the emulator's /subscriptions and notifications (real HTTP both ways) and
``shared.produce.subscriptions.ensure_subscriptions`` against it."""
from __future__ import annotations

import datetime as dt
import json
import logging
import threading
import time
from collections.abc import Iterator

import httpx
import pytest
from werkzeug.wrappers import Request, Response

from sandbox.emulators import GRAPH_TOKEN
from sandbox.graph.subscriptions import MAX_EXPIRATION_MINUTES, Subscriptions, wait_for, with_query
from sandbox.http import serve
from shared.clients.graph import GraphClient
from shared.clients.transport import RetryPolicy, Transport
from shared.errors import GraphPermissionError
from shared.produce.subscriptions import (
    CHECKPOINT,
    RENEW_MARGIN,
    SubscriptionError,
    SubscriptionQuotaError,
    ensure_subscriptions,
    stored_subscriptions,
)
from shared.settings import Secret, Settings
from shared.store.local import LocalStateStore

AUTH = {"Authorization": f"Bearer {GRAPH_TOKEN}"}
SECRET = "s3cr3t-Client-State-never-logged"


class Receiver:
    """A webhook on loopback: echoes validation tokens (or fails as told) and records every other POST."""

    def __init__(self) -> None:
        self.validations: list[dict] = []
        self.posts: list[dict] = []
        self.validation_mode = "echo"   # echo | wrong | error | json | slow
        self.fail = 0                   # answer the next ``fail`` notification POSTs with 500
        self.delay = 0.0
        self._lock = threading.Lock()
        self.server = serve(self)
        self.url = self.server.url

    def __call__(self, environ, start_response):
        request = Request(environ)
        token = request.args.get("validationToken")
        if token is not None:
            with self._lock:
                self.validations.append({"path": request.path, "args": request.args.to_dict(),
                                         "content_type": request.headers.get("Content-Type"),
                                         "body": request.get_data()})
            mode = self.validation_mode
            if mode == "slow":
                time.sleep(0.5)
            answer = {"echo": Response(token, 200, content_type="text/plain; charset=utf-8"),
                      "slow": Response(token, 200, content_type="text/plain; charset=utf-8"),
                      "wrong": Response(token + "x", 200, content_type="text/plain"),
                      "error": Response("no", 500),
                      "json": Response(json.dumps(token), 200, content_type="application/json")}[mode]
            return answer(environ, start_response)
        if self.delay:
            time.sleep(self.delay)
        with self._lock:
            failing = self.fail > 0
            self.fail -= failing
            if not failing:
                self.posts.append({"path": request.path, "args": request.args.to_dict(), "time": time.time(),
                                   "content_type": request.headers.get("Content-Type"),
                                   "body": json.loads(request.get_data())})
        return Response("", 500 if failing else 202)(environ, start_response)

    def items(self, path: str | None = None) -> list[dict]:
        with self._lock:
            return [i for p in self.posts if path is None or p["path"] == path for i in p["body"]["value"]]


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.server.stop()


@pytest.fixture
def http() -> Iterator[httpx.Client]:
    with httpx.Client(headers=AUTH, timeout=20) as client:
        yield client


@pytest.fixture
def subs(graph_emulator) -> Subscriptions:
    s = graph_emulator.subscriptions
    s.retry_delays = (0.05, 0.1)
    return s


def in_minutes(minutes: float, now: float | None = None) -> str:
    moment = dt.datetime.fromtimestamp((now or time.time()) + minutes * 60, dt.UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def body(receiver: Receiver, resource: str = "users", **extra) -> dict:
    return {"changeType": "updated,deleted", "notificationUrl": f"{receiver.url}/notify?code=abc%3D%3D",
            "lifecycleNotificationUrl": f"{receiver.url}/lifecycle?code=xyz", "resource": resource,
            "expirationDateTime": in_minutes(60 * 24), "clientState": SECRET, **extra}


def error_of(response: httpx.Response, status: int) -> dict:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error["innerError"]) >= {"date", "request-id", "client-request-id"}
    return error


def parse(value: str) -> float:
    return dt.datetime.fromisoformat(value).timestamp()


# -- the emulator: create and the handshake ----------------------------------------------------------------

def test_create_runs_both_handshakes_and_returns_the_subscription(graph_emulator, subs, receiver, http):
    response = http.post(f"{graph_emulator.base_url}/subscriptions", json=body(receiver))
    assert response.status_code == 201, response.text
    sub = response.json()
    assert sub["resource"] == "users" and sub["changeType"] == "updated,deleted" and sub["clientState"] == SECRET
    assert sub["notificationUrl"] == f"{receiver.url}/notify?code=abc%3D%3D"
    assert sub["lifecycleNotificationUrl"] == f"{receiver.url}/lifecycle?code=xyz"
    assert sub["latestSupportedTlsVersion"] == "v1_2" and sub["includeResourceData"] is False
    assert sub["notificationUrlAppId"] is None and sub["applicationId"] and sub["creatorId"] and sub["id"]
    assert abs(parse(sub["expirationDateTime"]) - (time.time() + 86400)) < 5
    # one validation per URL, the URL's own query string kept, the token URL-decoded by the receiver
    assert [(v["path"], v["args"]["code"]) for v in receiver.validations] == [("/notify", "abc=="),
                                                                             ("/lifecycle", "xyz")]
    assert all(v["args"]["validationToken"].startswith("Validation: ") for v in receiver.validations)
    assert all(v["content_type"].startswith("text/plain") for v in receiver.validations)
    assert [d.kind for d in subs.deliveries] == ["validation", "validation"] and all(d.ok for d in subs.deliveries)
    listed = http.get(f"{graph_emulator.base_url}/subscriptions").json()["value"]
    assert [s["id"] for s in listed] == [sub["id"]]
    assert http.get(f"{graph_emulator.base_url}/subscriptions/{sub['id']}").json()["expirationDateTime"] == \
        sub["expirationDateTime"]


def test_with_query_appends_to_an_existing_query_string():
    assert with_query("https://f.example/api/hook?code=a%2Bb", "validationToken", "V: x y") == \
        "https://f.example/api/hook?code=a%2Bb&validationToken=V%3A%20x%20y"
    assert with_query("https://f.example/hook", "t", "1") == "https://f.example/hook?t=1"


@pytest.mark.parametrize("mode, fragment", [
    ("wrong", "Response must exactly match validationToken"),
    ("error", "must respond with 200 OK to validation request. (the endpoint answered HTTP 500)"),
    ("json", "not text/plain"),
    ("slow", "no answer within 0.2 seconds"),
])
def test_failed_handshake_is_400_and_creates_nothing(graph_emulator, subs, receiver, http, mode, fragment):
    receiver.validation_mode = mode
    subs.validation_timeout = 0.2
    error = error_of(http.post(f"{graph_emulator.base_url}/subscriptions", json=body(receiver)), 400)
    assert error["message"].startswith("Subscription validation request failed.") and fragment in error["message"]
    assert http.get(f"{graph_emulator.base_url}/subscriptions").json()["value"] == []
    assert [d.ok for d in subs.deliveries] == [False]


def test_unreachable_or_failing_lifecycle_url_creates_nothing(graph_emulator, receiver, http):
    dead = serve(lambda e, s: Response("")(e, s))
    dead.stop()
    error = error_of(http.post(f"{graph_emulator.base_url}/subscriptions",
                               json=body(receiver, lifecycleNotificationUrl=f"{dead.url}/gone")), 400)
    assert "could not be reached" in error["message"]
    assert len(receiver.validations) == 1   # the notificationUrl passed, the lifecycle URL did not
    assert graph_emulator.subscriptions.live() == []


@pytest.mark.parametrize("change, fragment", [
    ({"changeType": None}, "'changeType' property is required"),
    ({"resource": ""}, "'resource' property is required"),
    ({"changeType": "created,updated"}, "'created' is not supported for resource 'users'"),
    ({"changeType": "updated,bogus"}, "Invalid changeType 'bogus'"),
    ({"resource": "devices"}, "Resource 'devices' is not supported"),
    ({"resource": "users/1234"}, "Resource 'users/1234' is not supported"),
    ({"notificationUrl": "http://hooks.example.com/x"}, "must use https"),
    ({"lifecycleNotificationUrl": "ftp://127.0.0.1/x"}, "Invalid lifecycleNotificationUrl"),
    ({"clientState": "x" * 129}, "at most 128 characters"),
    ({"expirationDateTime": "tomorrow"}, "Invalid expirationDateTime"),
    ({"expirationDateTime": lambda: in_minutes(MAX_EXPIRATION_MINUTES + 5)},  # when the test runs, not collected
     "Subscription expiration can only be 41760 minutes in the future."),
    ({"includeResourceData": True}, "Rich notifications"),
])
def test_invalid_creates_are_400_before_any_handshake(graph_emulator, receiver, http, change, fragment):
    payload = {k: v() if callable(v) else v for k, v in {**body(receiver), **change}.items() if v is not None}
    error = error_of(http.post(f"{graph_emulator.base_url}/subscriptions", json=payload), 400)
    assert error["code"] == "InvalidRequest" and fragment in error["message"]
    assert receiver.validations == [] and graph_emulator.subscriptions.live() == []


def test_expiration_bounds_and_slash_resource(graph_emulator, receiver, http):
    now = time.time()
    longest = http.post(f"{graph_emulator.base_url}/subscriptions",
                        json=body(receiver, expirationDateTime=in_minutes(MAX_EXPIRATION_MINUTES - 1, now)))
    assert longest.status_code == 201, longest.text
    assert abs(parse(longest.json()["expirationDateTime"]) - (now + (MAX_EXPIRATION_MINUTES - 1) * 60)) < 2
    short = http.post(f"{graph_emulator.base_url}/subscriptions",
                      json=body(receiver, resource="/groups", expirationDateTime=in_minutes(10)))
    assert short.status_code == 201 and short.json()["resource"] == "/groups"
    assert abs(parse(short.json()["expirationDateTime"]) - (time.time() + 45 * 60)) < 5  # raised to 45 min


def test_duplicate_is_409_naming_the_existing_subscription(graph_emulator, receiver, http):
    url = f"{graph_emulator.base_url}/subscriptions"
    first = http.post(url, json=body(receiver)).json()
    for again in (body(receiver), body(receiver, changeType="deleted,updated", resource="/users")):
        error = error_of(http.post(url, json=again), 409)
        assert error["message"] == f"Subscription Id {first['id']} already exists for the requested combination"
    assert http.post(url, json=body(receiver, changeType="updated")).status_code == 201   # another combination
    assert http.post(url, json=body(receiver, resource="groups")).status_code == 201


def test_quota_is_403_naming_the_limit(graph_emulator, subs, receiver, http):
    subs.quota = 2
    url = f"{graph_emulator.base_url}/subscriptions"
    for n in range(2):
        assert http.post(url, json=body(receiver, notificationUrl=f"{receiver.url}/n{n}")).status_code == 201
    error = error_of(http.post(url, json=body(receiver, notificationUrl=f"{receiver.url}/n3")), 403)
    assert "limit of 2" in error["message"] and "'users'" in error["message"]
    assert http.post(url, json=body(receiver, resource="groups")).status_code == 201   # per resource


def test_patch_delete_reauthorize_404_and_expiry(graph_emulator, subs, receiver, http):
    url = f"{graph_emulator.base_url}/subscriptions"
    sid = http.post(url, json=body(receiver)).json()["id"]
    renewed = http.patch(f"{url}/{sid}", json={"expirationDateTime": in_minutes(40_000)})
    assert renewed.status_code == 200 and abs(parse(renewed.json()["expirationDateTime"]) -
                                              (time.time() + 40_000 * 60)) < 5
    too_far = error_of(http.patch(f"{url}/{sid}", json={"expirationDateTime": in_minutes(50_000)}), 400)
    assert "41760 minutes" in too_far["message"]
    assert "lifecycleNotificationUrl" in error_of(http.patch(f"{url}/{sid}", json={
        "lifecycleNotificationUrl": f"{receiver.url}/x"}), 400)["message"]
    assert http.post(f"{url}/{sid}/reauthorize").status_code == 204
    assert http.delete(f"{url}/{sid}").status_code == 204
    for response in (http.get(f"{url}/{sid}"), http.patch(f"{url}/{sid}", json={"expirationDateTime": in_minutes(60)}),
                     http.delete(f"{url}/{sid}")):
        assert error_of(response, 404)["code"] == "ResourceNotFound"
    assert error_of(http.put(url, json={}), 405)["code"] == "Request_BadRequest"
    # expiry: a knob, and the clock passing the expiration
    first = http.post(url, json=body(receiver)).json()["id"]
    subs.expire_subscription(first)
    assert http.get(f"{url}/{first}").status_code == 404 and http.get(url).json()["value"] == []
    second = http.post(url, json=body(receiver, expirationDateTime=in_minutes(60))).json()["id"]
    subs.advance_clock(3601)
    assert http.get(f"{url}/{second}").status_code == 404
    assert error_of(http.get(f"{url}/{second}", headers={"Authorization": "Bearer nope"}), 401)


# -- the emulator: notifications -------------------------------------------------------------------------

def test_notifications_for_user_and_group_changes(graph_emulator, subs, tenant, receiver, http):
    url = f"{graph_emulator.base_url}/subscriptions"
    users_sub = http.post(url, json=body(receiver)).json()
    groups_sub = http.post(url, json=body(receiver, resource="groups")).json()
    uid, other = list(tenant.users)[10], list(tenant.users)[11]
    gid = next(g for g, m in tenant.members.items() if m and all(x != uid for _, x in m))
    changed_at = time.time()
    tenant.update_user(uid, jobTitle="Astronaut")
    assert wait_for(lambda: receiver.items("/notify"), 2)
    first = receiver.posts[0]
    assert first["time"] - changed_at < 0.5          # the brief asks ~100 ms; loaded CI machines get slack
    assert first["args"] == {"code": "abc=="} and first["content_type"] == "application/json"
    assert first["body"]["value"] == [{
        "subscriptionId": users_sub["id"], "subscriptionExpirationDateTime": users_sub["expirationDateTime"],
        "changeType": "updated", "clientState": SECRET, "resource": f"Users/{uid}", "tenantId": tenant.tenant_id,
        "resourceData": {"@odata.type": "#Microsoft.Graph.User", "@odata.id": f"Users/{uid}", "id": uid,
                         "organizationId": tenant.tenant_id}}]
    new = tenant.add_user({"displayName": "New Person", "userType": "Member", "accountEnabled": True})
    tenant.add_member(gid, uid)
    tenant.delete_user(other, permanent=True)
    wanted = {("Users", new, "updated"), ("Groups", gid, "updated"), ("Users", other, "deleted")}
    seen = lambda: {(*i["resource"].split("/"), i["changeType"]) for i in receiver.items()}
    assert wait_for(lambda: wanted <= seen(), 2), seen()
    group_items = [i for i in receiver.items() if i["resource"] == f"Groups/{gid}"]
    assert group_items[0]["subscriptionId"] == groups_sub["id"]
    assert group_items[0]["resourceData"]["@odata.type"] == "#Microsoft.Graph.Group"
    soft = list(tenant.users)[12]
    tenant.delete_user(soft)
    assert wait_for(lambda: ("Users", soft, "updated") in seen(), 2)   # a soft delete is "updated"
    assert all(d.ok for d in subs.deliveries) and all(d.observed for d in subs.deliveries if d.kind == "notification")


def test_notifications_are_batched_100_per_post(graph_emulator, subs, tenant, receiver, http):
    deleted_only = http.post(f"{graph_emulator.base_url}/subscriptions",
                             json=body(receiver, changeType="deleted", notificationUrl=f"{receiver.url}/deleted"))
    assert http.post(f"{graph_emulator.base_url}/subscriptions", json=body(receiver)).status_code == 201
    ids = list(tenant.users)[:250]
    with tenant.lock:   # all 250 changes land in one collection window
        for uid in ids:
            tenant.update_user(uid, department="Batch")
    assert wait_for(lambda: len(receiver.items("/notify")) >= 250, 3)
    time.sleep(0.15)
    posts = [p for p in receiver.posts if p["path"] == "/notify"]
    assert sorted(len(p["body"]["value"]) for p in posts) == [50, 100, 100]
    assert {i["resourceData"]["id"] for p in posts for i in p["body"]["value"]} == set(ids)
    assert receiver.items("/deleted") == [] and deleted_only.status_code == 201  # updates only: nothing to send
    records = [d for d in subs.deliveries if d.kind == "notification"]
    assert sorted(d.items for d in records) == [50, 100, 100] and all(d.status == 202 for d in records)


def test_failed_deliveries_are_retried_and_recorded(graph_emulator, subs, tenant, receiver, http):
    http.post(f"{graph_emulator.base_url}/subscriptions", json=body(receiver))
    receiver.fail = 2
    uid = list(tenant.users)[5]
    tenant.update_user(uid, city="Oslo")
    assert wait_for(lambda: receiver.items(), 2)
    # The emulator records a delivery once the receiver's answer is back, a moment after the receiver saw it.
    assert wait_for(lambda: len([d for d in subs.deliveries if d.kind == "notification"]) >= 3, 2)
    attempts = [d for d in subs.deliveries if d.kind == "notification"]
    assert [(d.attempt, d.status, d.ok) for d in attempts] == [(1, 500, False), (2, 500, False), (3, 202, True)]
    assert attempts[1].sent >= attempts[0].sent + 0.05 and all(d.elapsed >= 0 for d in attempts)
    receiver.fail = 10   # gives up after three attempts
    subs.reset_deliveries()
    tenant.update_user(uid, city="Bergen")
    assert wait_for(lambda: len(subs.deliveries) >= 3, 2)
    time.sleep(0.2)
    assert [d.status for d in subs.deliveries] == [500, 500, 500] and len(receiver.items()) == 1


def test_slow_endpoint_times_out_and_is_retried(graph_emulator, subs, tenant, receiver, http):
    http.post(f"{graph_emulator.base_url}/subscriptions", json=body(receiver))
    subs.delivery_timeout, receiver.delay = 0.1, 0.3
    tenant.update_user(list(tenant.users)[5], city="Oslo")
    assert wait_for(lambda: len(subs.deliveries) >= 5, 3)
    notes = [d for d in subs.deliveries if d.kind == "notification"]
    assert notes[0].status is None and notes[0].error == "ReadTimeout" and notes[0].attempt == 1


def test_lifecycle_notifications(graph_emulator, subs, tenant, receiver, http):
    url = f"{graph_emulator.base_url}/subscriptions"
    sid = http.post(url, json=body(receiver)).json()["id"]
    delivery = subs.send_lifecycle(sid, "reauthorizationRequired")
    assert delivery.ok and delivery.kind == "lifecycle" and delivery.url.endswith("/lifecycle?code=xyz")
    (post,) = receiver.posts
    assert post["path"] == "/lifecycle" and post["args"] == {"code": "xyz"}
    item = post["body"]["value"][0]
    assert item["lifecycleEvent"] == "reauthorizationRequired" and item["subscriptionId"] == sid
    assert item["clientState"] == SECRET and item["organizationId"] == tenant.tenant_id
    assert item["subscriptionExpirationDateTime"].endswith("Z")
    plain = http.post(url, json=body(receiver, resource="groups", lifecycleNotificationUrl=None)).json()["id"]
    subs.remove_subscription(plain, notify=True)
    assert receiver.posts[-1]["path"] == "/notify"
    assert receiver.posts[-1]["body"]["value"][0]["lifecycleEvent"] == "subscriptionRemoved"
    assert http.get(f"{url}/{plain}").status_code == 404
    with pytest.raises(KeyError):
        subs.send_lifecycle(plain, "missed")


def test_stop_ends_the_dispatcher(tenant, receiver, http):
    from sandbox.graph.emulator import GraphEmulator

    emulator = GraphEmulator(tenant, token=GRAPH_TOKEN).start()
    assert http.post(f"{emulator.base_url}/subscriptions", json=body(receiver)).status_code == 201
    thread = emulator.subscriptions._thread
    assert thread is not None and thread.is_alive()
    emulator.stop()
    assert not thread.is_alive()
    tenant.update_user(list(tenant.users)[3], city="Rome")
    time.sleep(0.1)
    assert receiver.posts == []
    emulator.stop()   # idempotent


# -- the product: ensure_subscriptions ---------------------------------------------------------------------

@pytest.fixture
def graph(graph_emulator) -> Iterator[GraphClient]:
    with httpx.Client(timeout=30) as client:
        yield GraphClient(Transport(client, RetryPolicy(attempts=2, base_delay=0.01)), graph_emulator.base_url,
                          lambda: GRAPH_TOKEN)


@pytest.fixture
def state(tmp_path) -> LocalStateStore:
    return LocalStateStore(tmp_path)


def settings_for(receiver: Receiver, types: tuple[str, ...] = ("user", "group", "device")) -> Settings:
    return Settings(webhook_url=f"{receiver.url}/api/graph-webhook?code=fn-key", webhook_client_state=Secret(SECRET),
                    object_types=types)


def writes(emulator) -> list[tuple[str, str]]:
    return [(r.method, r.path.removeprefix("/v1.0/")) for r in emulator.requests if r.method != "GET"]


def test_ensure_creates_records_and_is_idempotent(graph_emulator, subs, graph, state, receiver, caplog):
    caplog.set_level(logging.DEBUG)
    settings = settings_for(receiver)
    now = dt.datetime.now(dt.UTC)
    report = ensure_subscriptions(graph, state, settings, now)
    assert report.enabled and {r: s.action for r, s in report.resources.items()} == {"users": "created",
                                                                                    "groups": "created"}
    live = {s["resource"]: s for s in subs.live()}
    assert set(live) == {"users", "groups"}
    for resource, sub in live.items():
        assert sub["notificationUrl"] == sub["lifecycleNotificationUrl"] == settings.webhook_url
        assert sub["changeType"] == "updated,deleted" and sub["clientState"] == SECRET
        expires = report.resources[resource].expires
        assert dt.timedelta(days=28) < expires - now < dt.timedelta(minutes=MAX_EXPIRATION_MINUTES)
    stored = json.loads(state.checkpoint(CHECKPOINT))
    assert stored == {r: {"id": live[r]["id"], "expires": live[r]["expirationDateTime"][:19] + "Z"} for r in live}
    assert len(receiver.validations) == 4   # two URLs (the same one) per subscription
    assert all(v["args"]["code"] == "fn-key" for v in receiver.validations)
    graph_emulator.reset_log()
    again = ensure_subscriptions(graph, state, settings, now)
    assert {s.action for s in again.resources.values()} == {"kept"} and not again.changed
    assert writes(graph_emulator) == [] and json.loads(state.checkpoint(CHECKPOINT)) == stored
    assert SECRET not in caplog.text and all(SECRET not in line for line in report.lines() + again.lines())
    assert SECRET not in json.dumps(report.as_dict())


def test_ensure_renews_near_expiry(graph_emulator, subs, graph, state, receiver):
    settings = settings_for(receiver, ("user",))
    first = ensure_subscriptions(graph, state, settings).resources["users"]
    later = dt.timedelta(minutes=MAX_EXPIRATION_MINUTES) - RENEW_MARGIN
    subs.advance_clock(later.total_seconds())            # Graph's clock moves with ours
    now = dt.datetime.now(dt.UTC) + later
    graph_emulator.reset_log()
    renewed = ensure_subscriptions(graph, state, settings, now).resources["users"]
    assert renewed.action == "renewed" and renewed.id == first.id and renewed.expires - first.expires > later / 2
    assert writes(graph_emulator) == [("PATCH", f"subscriptions/{first.id}")]
    assert stored_subscriptions(state)["users"]["expires"] == renewed.expires.strftime("%Y-%m-%dT%H:%M:%SZ")
    assert ensure_subscriptions(graph, state, settings, now).resources["users"].action == "kept"


def test_ensure_recreates_a_removed_subscription(graph_emulator, subs, graph, state, receiver, tenant):
    settings = settings_for(receiver)
    first = ensure_subscriptions(graph, state, settings)
    subs.remove_subscription(first.resources["users"].id)
    second = ensure_subscriptions(graph, state, settings)
    users = second.resources["users"]
    assert users.action == "recreated" and users.id != first.resources["users"].id
    assert second.resources["groups"].action == "kept"
    assert stored_subscriptions(state)["users"]["id"] == users.id
    tenant.update_user(list(tenant.users)[1], city="Lima")   # and it notifies
    assert wait_for(lambda: any(i["subscriptionId"] == users.id for i in receiver.items()), 2)


def test_ensure_deletes_duplicates_and_unwanted_resources(graph_emulator, subs, graph, state, receiver, http):
    settings = settings_for(receiver)
    first = ensure_subscriptions(graph, state, settings).resources["users"]
    extra = http.post(f"{graph_emulator.base_url}/subscriptions",
                      json=body(receiver, changeType="updated", notificationUrl=settings.webhook_url))
    assert extra.status_code == 201
    foreign = http.post(f"{graph_emulator.base_url}/subscriptions", json=body(receiver)).json()["id"]  # not ours
    report = ensure_subscriptions(graph, state, settings_for(receiver, ("user",)))
    assert report.resources["users"].action == "kept" and report.resources["users"].duplicates_deleted == 1
    assert report.resources["groups"].action == "deleted"
    assert {s["id"] for s in subs.live()} == {first.id, foreign}
    assert set(stored_subscriptions(state)) == {"users"}


def test_ensure_replaces_a_subscription_without_lifecycle_url(graph_emulator, subs, graph, state, receiver, http):
    settings = settings_for(receiver, ("user",))
    old = http.post(f"{graph_emulator.base_url}/subscriptions",
                    json=body(receiver, notificationUrl=settings.webhook_url, lifecycleNotificationUrl=None)).json()
    report = ensure_subscriptions(graph, state, settings).resources["users"]
    assert report.action == "recreated" and report.id != old["id"]
    assert [s["lifecycleNotificationUrl"] for s in subs.live()] == [settings.webhook_url]


class StaleListing(GraphClient):
    """A GraphClient whose first listing of /subscriptions is empty: another instance creates ours meanwhile."""

    first = True

    def objects(self, path, params=None, advanced=False):
        if path == "subscriptions" and self.first:
            self.first = False
            return iter(())
        return super().objects(path, params, advanced)


def test_ensure_adopts_on_409(graph_emulator, subs, graph, state, receiver, tmp_path):
    settings = settings_for(receiver, ("user",))
    existing = ensure_subscriptions(graph, state, settings).resources["users"]
    other_instance = LocalStateStore(tmp_path / "other")
    stale = StaleListing(graph.transport, graph.base_url, graph.token)
    adopted = ensure_subscriptions(stale, other_instance, settings).resources["users"]
    assert adopted.action == "adopted" and adopted.id == existing.id and len(subs.live()) == 1
    assert stored_subscriptions(other_instance)["users"]["id"] == existing.id


def test_ensure_reports_quota_and_refusals_clearly(graph_emulator, subs, graph, state, receiver):
    subs.quota = 0
    with pytest.raises(SubscriptionQuotaError) as quota:
        ensure_subscriptions(graph, state, settings_for(receiver))
    assert "quota" in str(quota.value) and "limit of 0" in str(quota.value) and SECRET not in str(quota.value)
    assert state.checkpoint(CHECKPOINT) is None
    subs.quota = 100
    receiver.validation_mode = "error"
    with pytest.raises(SubscriptionError) as refused:
        ensure_subscriptions(graph, state, settings_for(receiver))
    assert "validation request failed" in str(refused.value) and "WEBHOOK_URL" in str(refused.value)
    assert subs.live() == [] and state.checkpoint(CHECKPOINT) is None
    denied = GraphClient(graph.transport, graph.base_url, lambda: "sandbox-graph-no-perms")
    with pytest.raises(GraphPermissionError):
        ensure_subscriptions(denied, state, settings_for(receiver))


def test_ensure_without_webhook_url_does_nothing(graph_emulator, graph, state):
    report = ensure_subscriptions(graph, state, Settings())
    assert not report.enabled and "WEBHOOK_URL is not set" in report.message and report.resources == {}
    assert graph_emulator.requests == [] and state.checkpoint(CHECKPOINT) is None
