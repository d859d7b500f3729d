"""A strict emulator of the Microsoft Graph v1.0 directory endpoints, served over real HTTP on loopback.

Emulated (all below ``/v1.0``), for users, groups, devices and servicePrincipals (``{c}`` below):
- Reads, in ``sandbox/graph/reads.py``: ``GET /{c}`` lists (``$select``, ``$top``, ``$filter``, ``$count``,
  ``$expand``, ``$skiptoken`` paging), ``GET /{c}/$count``, ``GET /{c}/{id}``, the relationships (``manager``,
  ``members``, ``owners``, ``transitiveMembers``, their type casts, ``registeredOwners``/``registeredUsers``)
  and ``GET /organization``.
- ``GET /{c}/delta`` round trips, in ``sandbox/graph/delta.py``.
- ``POST /$batch`` (reference §4.3), in ``sandbox/graph/batch.py``.
- ``GET /applications/{id}`` and ``GET /applications(appId='{appId}')`` (app registrations, their secrets' and
  certificates' dates): ``sandbox/graph/applications.py``. Tokens of a real identity flow: ``authorizer``.
- ``/subscriptions`` (create with the validation handshake, list, get, renew, delete) and the change
  notifications sent to subscribers: ``sandbox/graph/subscriptions.py`` (knobs on ``subscriptions``).
- ``GET /deviceManagement/managedDevices`` (Intune, ``Tenant.managed_devices``): ``sandbox/graph/intune.py``.
- Users' ``signInActivity`` (its permission, licence, ``$top`` and throttle): ``sandbox/graph/signins.py``.
The resource model, ``$select``/``$top``/``$expand`` parsing and rendering live in
``sandbox/graph/directory.py``; paged answers and tokens in ``sandbox/graph/paging.py``. This module owns the
state, authentication, throttling and routing.
Errors carry Graph's body ``{"error": {"code", "message", "innerError": {"date", "request-id",
"client-request-id"}}}``. Tests turn knobs: ``throttle``, ``throttle_batch_items``, ``expire_delta_tokens``,
``token_ttl``, ``page_size`` (users delta), ``page_sizes`` (every delta), ``link_origin`` (nextLinks and
deltaLinks on another host), ``latency`` (seconds before each answer) and ``sign_in_limit`` (signInActivity reads
per app and tenant: ``(requests, window seconds)``, Graph's ``(10, 60.0)``), and read ``requests`` (one entry
per HTTP request, a batch counts once), ``batch_requests`` (the items of batches) and ``sign_in_throttled``
(signInActivity reads answered 429). Callers: the fixed ``token`` holds every permission; with ``authorizer``
(the identity emulator) a token holds its roles; ``NO_PERMISSIONS_TOKEN`` none.

Sources: /work/shared/reference/graph.md §1.1-1.6 (endpoints, paging, ``$select`` and default properties,
``$filter`` and advanced queries, ``$expand`` limits, members), §2.1-2.6 (delta round trip, tokens and query
options, change shapes, ``members@delta`` paging, expiry), §4.2-4.3 (429, ``$batch``) and §8 (emulator
checklist); Microsoft Learn: https://learn.microsoft.com/en-us/graph/api/user-delta,
https://learn.microsoft.com/en-us/graph/api/group-delta, https://learn.microsoft.com/en-us/graph/delta-query-overview,
https://learn.microsoft.com/en-us/graph/paging, https://learn.microsoft.com/en-us/graph/aad-advanced-queries,
https://learn.microsoft.com/en-us/graph/json-batching, https://learn.microsoft.com/en-us/graph/errors,
https://learn.microsoft.com/en-us/graph/throttling.

UNCONFIRMED behaviours (emulator choices; those of reads, delta and ``$batch`` are listed in their modules):
- Unselected or unset properties: selected-but-unset come back as null (collections as ``[]``).
- Properties are those of the v1.0 catalogue (``shared/records/graph_catalogue.json``, from msgraph-sdk's v1.0 models):
  any other name in ``$select`` is 400 ``BadRequest`` "Could not find a property named 'X' on type
  'microsoft.graph.Y'." (as Graph v1.0 answers the beta-only ``publisherName``); the same 400 for a name in
  ``$filter``, and every catalogue property selectable in lists and delta except the hand-listed single-only
  ones (Graph may keep a few more - e.g. the group's ``isFavorite`` - to single reads).
- ``$select`` of any other relationship than ``manager``/``members`` on delta is 400, and
  ``$select=manager``/``members`` outside delta is 400; a non-GET method (except ``POST /$batch`` and
  ``/subscriptions``) is 405 ``Request_BadRequest``; paths outside ``/v1.0`` are 404
  ``Request_ResourceNotFound`` (no ``/beta``); the no-permission token gets 403 on every endpoint (Intune's
  own 403 body under ``/deviceManagement``, as for ``denied``).
- 429 carries ``Retry-After`` exactly as given to ``throttle`` and the identity throttle headers of §4.1.
"""
from __future__ import annotations

import datetime as dt
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable, Mapping

import orjson
from werkzeug.wrappers import Request, Response

from sandbox.graph.applications import handle_applications
from sandbox.graph.batch import MAX_BATCH_REQUESTS, BatchRequests
from sandbox.graph.delta import (
    DEFAULT_PAGE_SIZE,
    DELTA_PAGE_SIZES,
    DEVICE_DELTA_PAGE_SIZE,
    GROUP_DELTA_PAGE_SIZE,
    SERVICE_PRINCIPAL_DELTA_PAGE_SIZE,
    TOKEN_TTL_SECONDS,
    DeltaRounds,
)
from sandbox.graph.directory import (
    DEFAULT_USER_PROPERTIES,
    EXPAND_ITEMS,
    EXPAND_PAGE_SIZE,
    LIST_PAGE_SIZE,
    MAX_TOP,
    OUTSIDE_MAIN_STORE,
    RESOURCES,
    TYPE_CASTS,
    GraphError,
    bad_request,
    not_found,
)
from sandbox.graph.intune import ManagedDeviceReads
from sandbox.graph.intune import forbidden as intune_forbidden
from sandbox.graph.paging import LINK_ORIGIN, Tokens, version_base
from sandbox.graph.reads import DirectoryReads
from sandbox.graph.signins import CALLER, SIGN_IN_LIMIT, Caller, SignInReads, SignInWindow
from sandbox.graph.subscriptions import Subscriptions
from sandbox.http import RecordedRequest, Served
from sandbox.tenant.model import Change, Tenant

__all__ = ["DEFAULT_PAGE_SIZE", "DEFAULT_USER_PROPERTIES", "DELTA_PAGE_SIZES", "DEVICE_DELTA_PAGE_SIZE",
           "EXPAND_ITEMS", "EXPAND_PAGE_SIZE", "GROUP_DELTA_PAGE_SIZE", "LIST_PAGE_SIZE", "MAX_BATCH_REQUESTS",
           "MAX_TOP", "NO_PERMISSIONS_TOKEN", "OUTSIDE_MAIN_STORE", "SERVICE_PRINCIPAL_DELTA_PAGE_SIZE",
           "TOKEN_TTL_SECONDS", "GraphEmulator", "GraphError", "RecordedRequest"]

NO_PERMISSIONS_TOKEN = "sandbox-graph-no-perms"

_DELTA_SEGMENTS = {"delta", "delta()", "microsoft.graph.delta", "microsoft.graph.delta()"}
_KNOWN_OPTIONS = {"$select", "$top", "$filter", "$orderby", "$count", "$search", "$expand", "$skip",
                  "$skiptoken", "$deltatoken", "$format"}


class GraphEmulator(DirectoryReads, DeltaRounds, BatchRequests, ManagedDeviceReads, SignInReads, Served):
    """A WSGI app answering Graph's directory endpoints from a ``Tenant``. Thread-safe; see the module docstring."""

    def __init__(self, tenant: Tenant, *, token: str = "sandbox-graph-token", page_size: int = DEFAULT_PAGE_SIZE,
                 token_ttl: float = TOKEN_TTL_SECONDS, sign_in_limit: tuple[int, float] = SIGN_IN_LIMIT):
        self.tenant = tenant
        self.token = token
        self.page_sizes = {**DELTA_PAGE_SIZES, "users": page_size}
        self.token_ttl = token_ttl
        self.requests: list[RecordedRequest] = []
        self.batch_requests: list[RecordedRequest] = []
        self.base_url = ""
        self.link_origin: str | None = None  # "http://host:port": paging and delta links point there
        self._tokens = Tokens()
        self._epoch = 0
        self._gone_epochs: set[int] = set()
        self._throttle = (0, "1")
        self._batch_throttle = (0, "1")
        self._change_cache: OrderedDict[tuple, list[Change]] = OrderedDict()
        self._transitive_cache: OrderedDict[tuple, list[tuple[str, str]]] = OrderedDict()
        self._lock = threading.RLock()
        # /subscriptions and change notifications (sandbox/graph/subscriptions.py); knobs and ``deliveries`` there
        self.subscriptions = Subscriptions(tenant)
        # Tokens other than ``token``: a callable (Authorization header, path) that raises GraphError 401/403 or
        # returns the token's claims (``appid``, ``roles``; None: every permission), set by
        # sandbox/identity/emulator.py ``attach`` so that tokens from a real identity flow are accepted.
        self.authorizer: Callable[[str, str], Mapping | None] | None = None
        # signInActivity reads admitted per (app, tenant) in a sliding window (sandbox/graph/signins.py)
        self._sign_ins = SignInWindow(sign_in_limit)
        # Knob: resources (first path segment, e.g. "servicePrincipals") answered 403 as if the app lacked
        # their permission - one object type that cannot be read (SPEC §7).
        self.denied: set[str] = set()
        self.delta_lag = 0.0  # seconds by which later delta rounds lag the tenant (sandbox/graph/delta.py)
        # Knob: seconds every HTTP request waits before it is answered (a $batch once) - Graph's real latency,
        # for sandbox/tools/bench_latency.py; requests wait side by side, as they would on the network.
        self.latency = 0.0

    @property
    def sign_in_limit(self) -> tuple[int, float]:
        """Knob: signInActivity reads admitted per app and tenant, as (requests, window in seconds)."""
        return self._sign_ins.limit

    @sign_in_limit.setter
    def sign_in_limit(self, value: tuple[int, float]) -> None:
        self._sign_ins.limit = value

    @property
    def sign_in_throttled(self) -> int:
        """How many signInActivity reads were answered 429 by the sign-in throttle."""
        return self._sign_ins.throttled

    @property
    def page_size(self) -> int:
        """Users per ``/users/delta`` page (``page_sizes["users"]``)."""
        return self.page_sizes["users"]

    @page_size.setter
    def page_size(self, value: int) -> None:
        self.page_sizes["users"] = value

    # -- lifecycle and knobs ------------------------------------------------------------------------------

    def start(self, host: str = "127.0.0.1", port: int = 0) -> GraphEmulator:
        """Serve on ``host:port`` (0 = a free port) in a background thread; sets ``base_url``. Returns self."""
        super().start(host, port)
        self.base_url = f"{self.url}/v1.0"
        self.subscriptions.start()
        return self

    def stop(self) -> None:
        """Stop serving and the notification dispatcher (idempotent)."""
        self.subscriptions.stop()
        super().stop()

    def reset_log(self) -> None:
        """Forget the recorded requests (and batch items)."""
        with self._lock:
            self.requests.clear()
            self.batch_requests.clear()

    def throttle(self, count: int, retry_after: str = "1") -> None:
        """Answer the next ``count`` requests with 429, ``Retry-After: retry_after`` and a TooManyRequests body."""
        with self._lock:
            self._throttle = (count, retry_after)

    def throttle_batch_items(self, count: int, retry_after: str = "1") -> None:
        """Answer the next ``count`` items of ``$batch`` requests with an item status 429 (reference §4.3)."""
        with self._lock:
            self._batch_throttle = (count, retry_after)

    def expire_delta_tokens(self, gone: bool = False) -> None:
        """Invalidate every delta and skip token issued so far: 400 ``syncStateNotFound``, or with ``gone``
        410 with a ``Location`` to restart from (reference §2.6)."""
        with self._lock:
            if gone:
                self._gone_epochs.add(self._epoch)
            self._epoch += 1

    # -- WSGI ---------------------------------------------------------------------------------------------

    def __call__(self, environ: dict, start_response):
        if self.link_origin:
            environ[LINK_ORIGIN] = self.link_origin
        request = Request(environ)
        with self._lock:
            self.requests.append(RecordedRequest(request.method, request.path, request.args.to_dict(),
                                                 dict(request.headers)))
        if self.latency > 0:
            time.sleep(self.latency)
        return self._respond(request)(environ, start_response)

    def _respond(self, request: Request, item: bool = False) -> Response:
        request_id = str(uuid.uuid4())
        client_id = request.headers.get("client-request-id") or request_id
        try:
            response = self._checked(request, item)
        except GraphError as exc:
            inner = {"date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S"), "request-id": request_id,
                     "client-request-id": client_id}
            body = {"error": {"code": exc.code, "message": exc.message, "innerError": inner}}
            response = Response(orjson.dumps(body), exc.status, headers=exc.headers, mimetype="application/json")
        response.headers["request-id"] = request_id
        response.headers["client-request-id"] = client_id
        return response

    def _checked(self, request: Request, item: bool = False) -> Response:
        """Throttling, then authentication, then routing (all before any resource is looked at)."""
        with self._lock:
            count, retry_after = self._batch_throttle if item else self._throttle
            if count > 0:
                if item:
                    self._batch_throttle = (count - 1, retry_after)
                else:
                    self._throttle = (count - 1, retry_after)
                raise GraphError(429, "TooManyRequests", "Please retry again later.", {
                    "Retry-After": retry_after, "x-ms-throttle-information": "ResourceUnitLimitExceeded",
                    "x-ms-throttle-scope": f"Tenant_Application/ReadWrite/sandbox/{self.tenant.tenant_id}"})
        auth = request.headers.get("Authorization", "")
        if not auth.strip():
            raise GraphError(401, "InvalidAuthenticationToken", "Access token is empty.",
                             {"WWW-Authenticate": 'Bearer realm=""'})
        if auth == f"Bearer {NO_PERMISSIONS_TOKEN}":
            raise _forbidden(request.path)
        if auth == f"Bearer {self.token}":
            caller = Caller(self.token)
        elif self.authorizer is not None:
            claims = self.authorizer(auth, request.path)
            caller = Caller(auth) if claims is None else \
                Caller(str(claims.get("appid", "")), frozenset(claims.get("roles") or ()))
        else:
            raise GraphError(401, "InvalidAuthenticationToken", "Access token validation failure. Invalid audience.",
                             {"WWW-Authenticate": 'Bearer realm=""'})
        request.environ[CALLER] = caller
        return self._route(request, item)

    def _route(self, request: Request, item: bool = False) -> Response:
        if not request.path.startswith("/v1.0/"):
            raise not_found(request.path)
        segments = [s for s in request.path[len("/v1.0/"):].split("/") if s]
        if segments and segments[0].split("(", 1)[0] in self.denied:
            raise _forbidden(request.path)
        if segments == ["$batch"] and not item:
            if request.method != "POST":
                raise GraphError(405, "Request_BadRequest", "Specified HTTP method is not allowed for the request uri.")
            return self._batch(request)
        if segments and segments[0].startswith("applications"):
            return handle_applications(self.tenant, request, segments, version_base(request))
        if segments and segments[0] == "subscriptions":
            return self.subscriptions.handle(request, segments[1:], version_base(request))
        if request.method != "GET":
            raise GraphError(405, "Request_BadRequest", "Specified HTTP method is not allowed for the request uri.")
        unknown = [k for k in request.args if k.startswith("$") and k not in _KNOWN_OPTIONS]
        if unknown:
            raise bad_request(f"Query option '{unknown[0]}' is not supported.", "BadRequest")
        res = RESOURCES.get(segments[0]) if segments else None
        match segments:
            case ["organization"]:
                return self._organization(request)
            case ["subscribedSkus"]:
                return self._subscribed_skus(request)
            case ["deviceManagement", "managedDevices"]:
                return self._managed_devices(request)
            case [_] if res:
                return self._list(request, res)
            case [_, "$count"] if res:
                return self._count(request, res)
            case [_, segment] if res and segment in _DELTA_SEGMENTS:
                return self._delta(request, res)
            case [_, oid] if res:
                return self._get(request, res, oid)
            case ["users", uid, "manager"]:
                return self._get_manager(request, uid)
            case [_, oid, relation] if res and relation in res.relations:
                return self._relation(request, res, oid, relation)
            case [_, oid, relation, cast] if res is not None and relation in res.relations \
                    and relation != "manager" and cast in TYPE_CASTS:
                return self._relation(request, res, oid, relation, TYPE_CASTS[cast])
        segment = segments[-1] if res and len(segments) > 2 else (segments or [""])[0]
        raise bad_request(f"Resource not found for the segment '{segment}'.", "BadRequest")


def _forbidden(path: str) -> GraphError:
    """The 403 of a request without permission: Intune's own body under ``/deviceManagement``."""
    if path.removeprefix("/v1.0").lstrip("/").startswith("deviceManagement"):
        return intune_forbidden(path)
    return GraphError(403, "Authorization_RequestDenied", "Insufficient privileges to complete the operation.")
