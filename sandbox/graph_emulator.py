"""A strict emulator of the Microsoft Graph v1.0 directory endpoints, served over real HTTP on loopback.

Emulated (all below ``/v1.0``), for users, groups, devices and servicePrincipals (``{c}`` below):
- ``GET /{c}`` lists: ``$select``, ``$top`` (1-999, default 100), ``$filter`` (``sandbox/odata.py``),
  ``$count=true`` with ``ConsistencyLevel: eventual`` (advanced queries: ``@odata.count`` on the first page,
  ``ne``/``not``/``endsWith``), ``$expand`` of one relationship (users: ``manager``; groups: ``members``,
  ``owners``; devices: ``registeredOwners``, ``registeredUsers``; servicePrincipals: ``owners``) with at most
  ``EXPAND_PAGE_SIZE`` (100) objects per page and ``EXPAND_ITEMS`` (20) per expanded list (reference §1.5),
  ``$skiptoken`` paging; ``GET /{c}/$count`` (text/plain, needs ``ConsistencyLevel: eventual``).
- ``GET /{c}/{id}`` (users also by userPrincipalName), ``GET /users/{id}/manager``, ``GET /groups/{id}/members``,
  ``/owners``, ``/transitiveMembers`` (flattened through nested groups, deduplicated), the type casts
  ``…/members/microsoft.graph.user`` and ``…/transitiveMembers/microsoft.graph.user`` (also ``group``,
  ``device``, ``orgContact``), ``GET /devices/{id}/registeredOwners`` (and ``registeredUsers``),
  ``GET /servicePrincipals/{id}/owners``: ``$select``, ``$top``, paging, ``@odata.type`` on every item.
- ``GET /{c}/delta`` round trips: an initial round in pages with ``@odata.nextLink`` (``$skiptoken``) ending in
  ``@odata.deltaLink`` (``$deltatoken``), later rounds with only the changed objects, ``@removed`` reasons,
  ``manager@delta`` (users), ``members@delta`` (groups; a large group's members are split over consecutive
  pages, the group repeated on each, reference §2.5), ``$deltatoken=latest`` and ``Prefer: return=minimal``.
- ``POST /$batch`` (reference §4.3): up to 20 GET requests answered as the emulator answers them one by one,
  ``dependsOn`` (424 after a failed dependency), per-item throttling (``throttle_batch_items``).
- ``GET /organization``.
- ``GET /applications/{id}`` and ``GET /applications(appId='{appId}')`` (app registrations, their secrets' and
  certificates' dates): ``sandbox/graph_applications.py``. Tokens of a real identity flow: ``authorizer``.
- ``/subscriptions`` (create with the validation handshake, list, get, renew, delete) and the change
  notifications sent to subscribers: ``sandbox/graph_subscriptions.py`` (knobs on ``subscriptions``).
Errors carry Graph's body ``{"error": {"code", "message", "innerError": {"date", "request-id",
"client-request-id"}}}``. Tests turn knobs: ``throttle``, ``throttle_batch_items``, ``expire_delta_tokens``,
``token_ttl``, ``page_size`` (users delta) and ``page_sizes`` (every delta), and read ``requests`` (one entry
per HTTP request, a batch counts once) and ``batch_requests`` (the items of batches).

Page sizes: users delta ``DEFAULT_PAGE_SIZE`` (200 users); groups delta ``GROUP_DELTA_PAGE_SIZE`` (200 group
objects + ``members@delta`` entries together); devices and servicePrincipals delta 200 objects; lists and
relationships ``$top`` (default 100, max 999), with ``$expand`` at most 100.

Sources: /work/shared/reference/graph.md §1.1-1.6 (endpoints, paging, ``$select`` and default properties,
``$filter`` and advanced queries, ``$expand`` limits, members), §2.1-2.6 (delta round trip, tokens and query
options, change shapes, ``members@delta`` paging, expiry), §4.2-4.3 (429, ``$batch``) and §8 (emulator
checklist); Microsoft Learn: https://learn.microsoft.com/en-us/graph/api/user-delta,
https://learn.microsoft.com/en-us/graph/api/group-delta, https://learn.microsoft.com/en-us/graph/delta-query-overview,
https://learn.microsoft.com/en-us/graph/paging, https://learn.microsoft.com/en-us/graph/aad-advanced-queries,
https://learn.microsoft.com/en-us/graph/json-batching, https://learn.microsoft.com/en-us/graph/errors,
https://learn.microsoft.com/en-us/graph/throttling.

Tokens are opaque to clients: base64url of a small JSON array (kind, epoch, issue time, resource, round
bounds, position, the ``$select`` as indices into the resource's property tuple) plus an HMAC with a
per-emulator key, so tampered, foreign or garbage tokens are "not found". An initial round pages the tenant's
insertion order by index up to the length it had when the round started; its deltaLink carries the tenant
version at that start, so objects changed or added mid-round show up (again) in the next round and none is
ever skipped. A later round pages the change-log slice between the two versions.

UNCONFIRMED behaviours (emulator choices):
- 200 users per users-delta page (community reports, reference §2.3); every page but the last is full. Groups
  delta pages hold at most 200 objects + member entries; devices/servicePrincipals delta 200 objects.
- A split group repeats all its selected properties on every page that carries a slice of its members; a group
  without members has no ``members@delta``. Without ``$select`` groups delta tracks ``members`` (reference
  §2.5). A later round lists only added members and removed ones (``"@removed": {"reason": "deleted"}``);
  a group created in the range lists all its members.
- The 400 code/message for properties outside the main store in a delta ``$select`` (``Request_UnsupportedQuery``),
  for ``$orderby``/``$filter``/``$count``/``$search`` on delta, for ``$select`` with ``$skiptoken`` and for a bad
  list skiptoken; ``$select`` is case-sensitive here and may contain spaces around commas.
- The shape of a removed manager link: ``{"@odata.type", "id": <old manager>, "@removed": {"reason": "deleted"}}``,
  sent in the round where the link was removed; a manager change reports only the new manager.
- Deleting a user (soft or permanent) removes its reports' manager links and its memberships and ownerships
  (see ``sandbox/tenant.py``); devices are deleted permanently (reason "deleted").
- Unselected or unset properties: selected-but-unset come back as null (collections as ``[]``).
- ``$select`` with ``$deltatoken`` replaces the tracked properties of the new round (reference §2.2: "supported
  for some Entra resources").
- 410 (forced resync, ``expire_delta_tokens(gone=True)``) uses code ``resyncRequired``; expired or foreign
  skiptokens answer like delta tokens (400 ``syncStateNotFound``).
- ``$filter``: string comparisons are case-insensitive; ``eq null`` works without advanced query; error wording
  for ``ne``/``not``/``endsWith`` without advanced query ("Operator 'ne' is not supported because the required
  parameters might be missing…"), for more than 15 ``in`` values, for incompatible literal types and for
  syntax errors ("Invalid filter clause: …"). ``$filter`` on delta (Graph allows ``id eq`` only) and on
  relationships, ``$orderby``, ``$search`` and ``$skip`` are 400 ``Request_UnsupportedQuery`` here.
- ``$count=true`` without ``ConsistencyLevel: eventual`` is 400 "$count is not currently supported."; an OData
  cast (``…/microsoft.graph.user``) combined with any query option other than ``$skiptoken`` needs an advanced
  query (reference §1.4 "OData casts combined with other query options"); ``$expand`` with a
  ``ConsistencyLevel`` header is 400 (reference §1.4/§1.5).
- ``$expand``: one relationship per request; nested options (``owners($select=id)``) are 400
  ``Request_UnsupportedQuery`` (the 2026 known issue in reference §1.5; examples with nested options exist only
  for a single user); expanded objects carry their type's default properties and ``@odata.type``; a user
  without a manager has no ``manager`` key.
- Relationship items: orgContacts are id-only stubs (``@odata.type`` + ``id``); ``$select`` on a relationship is
  validated against the union of user, group and device properties (one type after a cast) and each item gets
  the selected properties its type has.
- ``$batch``: more than 20 requests, an empty or malformed body, duplicate ids, absolute or nested-batch URLs are
  400 ``BadRequest`` for the whole batch (wording is the emulator's); items answer in request order; a batch is
  throttled as a whole by ``throttle`` and item by item by ``throttle_batch_items``; item headers carry
  ``Content-Type`` plus ``Retry-After``/``Location`` when the single answer has them.
- ``$select=manager``/``members`` outside delta is 400; a non-GET method (except ``POST /$batch`` and
  ``/subscriptions``) is 405 ``Request_BadRequest``; paths outside ``/v1.0`` are 404
  ``Request_ResourceNotFound``; the no-permission token gets 403 on every endpoint.
- 429 carries ``Retry-After`` exactly as given to ``throttle`` and the identity throttle headers of §4.1.
"""
from __future__ import annotations

import base64
import datetime as dt
import hashlib
import hmac
import secrets
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from urllib.parse import quote, urlsplit

import orjson
from werkzeug.test import EnvironBuilder
from werkzeug.wrappers import Request, Response

from sandbox.graph_applications import handle_applications
from sandbox.graph_directory import (
    DEFAULT_USER_PROPERTIES,
    EXPAND_ITEMS,
    EXPAND_PAGE_SIZE,
    LIST_PAGE_SIZE,
    MAX_TOP,
    OUTSIDE_MAIN_STORE,
    RESOURCES,
    TYPE_CASTS,
    USER_PROPERTIES,
    USERS,
    GraphError,
    Resource,
    View,
    bad_request,
    compile_where,
    link_entry,
    not_found,
    parse_expand,
    parse_related_select,
    parse_select,
    parse_top,
    related,
    render_related,
    sync_state_not_found,
    transitive_members,
    view,
)
from sandbox.graph_subscriptions import Subscriptions
from sandbox.http import RecordedRequest, Served
from sandbox.tenant import Change, Tenant

__all__ = ["DEFAULT_PAGE_SIZE", "DEFAULT_USER_PROPERTIES", "DELTA_PAGE_SIZES", "DEVICE_DELTA_PAGE_SIZE",
           "EXPAND_ITEMS", "EXPAND_PAGE_SIZE", "GROUP_DELTA_PAGE_SIZE", "LIST_PAGE_SIZE", "MAX_BATCH_REQUESTS",
           "MAX_TOP", "NO_PERMISSIONS_TOKEN", "OUTSIDE_MAIN_STORE", "SERVICE_PRINCIPAL_DELTA_PAGE_SIZE",
           "TOKEN_TTL_SECONDS", "USER_PROPERTIES", "GraphEmulator", "GraphError", "RecordedRequest"]

DEFAULT_PAGE_SIZE = 200          # users per /users/delta page (UNCONFIRMED, reference §2.3)
GROUP_DELTA_PAGE_SIZE = 200      # group objects + members@delta entries per /groups/delta page (reference §2.5)
DEVICE_DELTA_PAGE_SIZE = 200     # devices per /devices/delta page (UNCONFIRMED)
SERVICE_PRINCIPAL_DELTA_PAGE_SIZE = 200  # per /servicePrincipals/delta page (UNCONFIRMED)
DELTA_PAGE_SIZES = {"users": DEFAULT_PAGE_SIZE, "groups": GROUP_DELTA_PAGE_SIZE, "devices": DEVICE_DELTA_PAGE_SIZE,
                    "servicePrincipals": SERVICE_PRINCIPAL_DELTA_PAGE_SIZE}
MAX_BATCH_REQUESTS = 20          # reference §4.3
NO_PERMISSIONS_TOKEN = "sandbox-graph-no-perms"
TOKEN_TTL_SECONDS = 7 * 24 * 3600  # delta links of directory objects last 7 days (reference §2.6)

_DELTA_SEGMENTS = {"delta", "delta()", "microsoft.graph.delta", "microsoft.graph.delta()"}
_KNOWN_OPTIONS = {"$select", "$top", "$filter", "$orderby", "$count", "$search", "$expand", "$skip",
                  "$skiptoken", "$deltatoken", "$format"}
RESOURCES_BY_TYPE = {r.type: r.name for r in RESOURCES.values()}
_JSON = "application/json;odata.metadata=minimal;odata.streaming=true;IEEE754Compatible=false;charset=utf-8"


@dataclass(frozen=True)
class _Page:
    """What one paged answer holds before serialisation."""

    context: str
    value: list[dict]
    next_link: str | None = None
    delta_link: str | None = None
    count: int | None = None

    def body(self) -> dict:
        body: dict = {"@odata.context": self.context}
        if self.count is not None:
            body["@odata.count"] = self.count
        if self.next_link:
            body["@odata.nextLink"] = self.next_link
        elif self.delta_link:
            body["@odata.deltaLink"] = self.delta_link
        body["value"] = self.value
        return body


class _Tokens:
    """Opaque, tamper-evident tokens: base64url(JSON array + 10-byte HMAC). ``None`` for anything invalid."""

    def __init__(self) -> None:
        self._key = secrets.token_bytes(16)

    def encode(self, fields: list) -> str:
        payload = orjson.dumps(fields)
        mac = hmac.new(self._key, payload, hashlib.sha256).digest()[:10]
        return base64.urlsafe_b64encode(payload + mac).rstrip(b"=").decode()

    def decode(self, token: str, kinds: tuple[str, ...]) -> list | None:
        try:
            raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        except (ValueError, TypeError):
            return None
        payload, mac = raw[:-10], raw[-10:]
        if len(raw) <= 10 or not hmac.compare_digest(mac, hmac.new(self._key, payload, hashlib.sha256).digest()[:10]):
            return None
        fields = orjson.loads(payload)
        return fields if fields and fields[0] in kinds else None


def _select_to_token(res: Resource, select: tuple[str, ...] | None) -> list[int] | None:
    return None if select is None else [res.index[name] for name in select]


def _select_from_token(res: Resource, indices: list[int] | None) -> tuple[str, ...] | None:
    return None if indices is None else tuple(res.token_properties[i] for i in indices)


class GraphEmulator(Served):
    """A WSGI app answering Graph's directory endpoints from a ``Tenant``. Thread-safe; see the module docstring."""

    def __init__(self, tenant: Tenant, *, token: str = "sandbox-graph-token", page_size: int = DEFAULT_PAGE_SIZE,
                 token_ttl: float = TOKEN_TTL_SECONDS):
        self.tenant = tenant
        self.token = token
        self.page_sizes = {**DELTA_PAGE_SIZES, "users": page_size}
        self.token_ttl = token_ttl
        self.requests: list[RecordedRequest] = []
        self.batch_requests: list[RecordedRequest] = []
        self.base_url = ""
        self._tokens = _Tokens()
        self._epoch = 0
        self._gone_epochs: set[int] = set()
        self._throttle = (0, "1")
        self._batch_throttle = (0, "1")
        self._change_cache: OrderedDict[tuple, list[Change]] = OrderedDict()
        self._transitive_cache: OrderedDict[tuple, list[tuple[str, str]]] = OrderedDict()
        self._lock = threading.RLock()
        # /subscriptions and change notifications (sandbox/graph_subscriptions.py); knobs and ``deliveries`` there
        self.subscriptions = Subscriptions(tenant)
        # Tokens other than ``token``: a callable (Authorization header, path) that raises GraphError 401/403, set
        # by sandbox/identity_emulator.py ``attach`` so that tokens from a real identity flow are accepted.
        self.authorizer: Callable[[str, str], None] | None = None

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
        request = Request(environ)
        with self._lock:
            self.requests.append(RecordedRequest(request.method, request.path, request.args.to_dict(),
                                                 dict(request.headers)))
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
            raise GraphError(403, "Authorization_RequestDenied", "Insufficient privileges to complete the operation.")
        if auth != f"Bearer {self.token}" and self.authorizer is not None:
            self.authorizer(auth, request.path)
        elif auth != f"Bearer {self.token}":
            raise GraphError(401, "InvalidAuthenticationToken", "Access token validation failure. Invalid audience.",
                             {"WWW-Authenticate": 'Bearer realm=""'})
        return self._route(request, item)

    def _route(self, request: Request, item: bool = False) -> Response:
        if not request.path.startswith("/v1.0/"):
            raise not_found(request.path)
        segments = [s for s in request.path[len("/v1.0/"):].split("/") if s]
        if segments == ["$batch"] and not item:
            if request.method != "POST":
                raise GraphError(405, "Request_BadRequest", "Specified HTTP method is not allowed for the request uri.")
            return self._batch(request)
        if segments and segments[0].startswith("applications"):
            return handle_applications(self.tenant, request, segments, self._base(request))
        if segments and segments[0] == "subscriptions":
            return self.subscriptions.handle(request, segments[1:], self._base(request))
        if request.method != "GET":
            raise GraphError(405, "Request_BadRequest", "Specified HTTP method is not allowed for the request uri.")
        unknown = [k for k in request.args if k.startswith("$") and k not in _KNOWN_OPTIONS]
        if unknown:
            raise bad_request(f"Query option '{unknown[0]}' is not supported.", "BadRequest")
        res = RESOURCES.get(segments[0]) if segments else None
        match segments:
            case ["organization"]:
                return self._organization(request)
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

    def _base(self, request: Request) -> str:
        return f"{request.host_url.rstrip('/')}/v1.0"

    @staticmethod
    def _json(body: dict) -> Response:
        return Response(orjson.dumps(body), 200, content_type=_JSON)

    @staticmethod
    def _count_mode(request: Request) -> tuple[bool, bool]:
        """(``$count=true`` given, advanced query) — advanced = ``ConsistencyLevel: eventual`` + ``$count=true``."""
        raw = request.args.get("$count")
        if raw is not None and raw.lower() not in ("true", "false"):
            raise bad_request(f"Invalid value '{raw}' for $count; expected true or false.", "BadRequest")
        count = raw is not None and raw.lower() == "true"
        eventual = request.headers.get("ConsistencyLevel", "").strip().lower() == "eventual"
        if count and not eventual:
            raise bad_request("$count is not currently supported.")
        return count, count and eventual

    # -- plain reads --------------------------------------------------------------------------------------

    def _organization(self, request: Request) -> Response:
        return self._json({"@odata.context": f"{self._base(request)}/$metadata#organization",
                           "value": [{"id": self.tenant.tenant_id, "displayName": "Sandbox"}]})

    def _find(self, res: Resource, key: str) -> dict | None:
        """An object by id; users also by userPrincipalName (case-insensitive), as ``/users/{id | upn}``."""
        obj = self.tenant.objects[res.name].get(key)
        if obj is None and res is USERS and "@" in key:
            folded = key.casefold()
            obj = next((u for u in self.tenant.users.values()
                        if (u.get("userPrincipalName") or "").casefold() == folded), None)
        return obj

    def _expanded(self, out: dict, res: Resource, obj: dict, expand: tuple[str, ...]) -> dict:
        """``out`` with the ``$expand``-ed relationship: at most ``EXPAND_ITEMS`` objects (reference §1.5)."""
        for relation in expand:
            links = related(self.tenant, res, obj["id"], relation)
            items = []
            for odata_type, oid in links:
                rendered = render_related(self.tenant, odata_type, oid, None)
                if rendered is not None:
                    items.append(rendered)
                    if len(items) == EXPAND_ITEMS:
                        break
            if relation == "manager":
                if items:
                    out["manager"] = items[0]
            else:
                out[relation] = items
        return out

    def _get(self, request: Request, res: Resource, key: str) -> Response:
        args = request.args
        select = parse_select(args["$select"], res, where="single") if "$select" in args else None
        expand = parse_expand(args.get("$expand"), res)
        with self.tenant.lock:
            obj = self._find(res, key)
            if obj is None:
                raise not_found(key)
            body = {"@odata.context": f"{self._base(request)}/$metadata#{res.name}/$entity"}
            return self._json({**body, **self._expanded(view(self.tenant, res, select).object(obj), res, obj, expand)})

    def _get_manager(self, request: Request, key: str) -> Response:
        raw = request.args.get("$select")
        select = parse_select(raw, USERS, where="single") if raw is not None else None
        with self.tenant.lock:
            user = self._find(USERS, key)
            if user is None:
                raise not_found(key)
            manager = self.tenant.users.get(self.tenant.managers.get(user["id"], ""))
            if manager is None:
                raise not_found("manager")
            body = {"@odata.context": f"{self._base(request)}/$metadata#directoryObjects/$entity",
                    "@odata.type": USERS.odata_type}
            return self._json({**body, **view(self.tenant, USERS, select).object(manager)})

    def _list(self, request: Request, res: Resource) -> Response:
        """``GET /{c}``: pages of ``$top`` objects in insertion order; the nextLink repeats the options."""
        args = request.args
        for option in ("$orderby", "$search", "$skip", "$deltatoken"):
            if option in args:
                raise bad_request(f"Query option '{option}' is not supported by this emulator on /{res.name}.",
                                  "Request_UnsupportedQuery")
        count, advanced = self._count_mode(request)
        if "$skiptoken" in args:
            fields = self._tokens.decode(args["$skiptoken"], ("l",))
            if fields is None or fields[1] != res.name:
                raise bad_request("The specified page token value has expired or is invalid.")
            _, _, pos, top, indices, raw_filter, expand, advanced = fields
            select, expand, count = _select_from_token(res, indices), tuple(expand), False
        else:
            pos, top = 0, parse_top(args.get("$top"))
            select = parse_select(args["$select"], res, where="list") if "$select" in args else None
            expand = parse_expand(args.get("$expand"), res)
            if expand and "ConsistencyLevel" in request.headers:
                raise bad_request("$expand is not supported together with advanced queries "
                                  "(ConsistencyLevel: eventual).", "Request_UnsupportedQuery")
            raw_filter = args.get("$filter")
        where = compile_where(raw_filter, res, advanced)
        limit = min(top, EXPAND_PAGE_SIZE) if expand else top
        rendering = view(self.tenant, res, select)
        with self.tenant.lock:
            order, objects = self.tenant.orders[res.name], self.tenant.objects[res.name]
            found, pos = self._scan(order, objects, pos, len(order), limit, where)
            value = [self._expanded(rendering.object(o), res, o, expand) for o in found]
            total = sum(1 for oid in order if (o := objects.get(oid)) is not None and (where is None or where(o))) \
                if count else None
        next_link = None
        if pos is not None:
            token = self._tokens.encode(["l", res.name, pos, top, _select_to_token(res, select), raw_filter,
                                         list(expand), advanced])
            options = "".join(f"{k}={quote(args[k], safe=',$()')}&" for k in ("$select", "$filter", "$expand", "$top")
                              if k in args)
            next_link = f"{self._base(request)}/{res.name}?{options}$skiptoken={token}"
        page = _Page(f"{self._base(request)}/$metadata#{rendering.context_list}", value, next_link=next_link,
                     count=total)
        return self._json(page.body())

    def _count(self, request: Request, res: Resource) -> Response:
        """``GET /{c}/$count``: the number of (filtered) objects as text/plain; needs ConsistencyLevel."""
        if request.headers.get("ConsistencyLevel", "").strip().lower() != "eventual":
            raise bad_request("Count is not currently supported without the ConsistencyLevel:eventual header.")
        where = compile_where(request.args.get("$filter"), res, True)
        with self.tenant.lock:
            total = sum(1 for o in self.tenant.objects[res.name].values() if where is None or where(o))
        return Response(str(total), 200, content_type="text/plain;charset=utf-8")

    @staticmethod
    def _scan(order: Sequence[str], objects: dict, pos: int, end: int, limit: int,
              keep: Callable[[dict], bool] | None = None) -> tuple[list[dict], int | None]:
        """Up to ``limit`` live objects from ``order[pos:end]`` (those ``keep`` accepts) and the position of the
        next one, or None when none is left: so every page but the last is full and no page is empty."""
        found = []
        while pos < end:
            obj = objects.get(order[pos])
            if obj is not None and (keep is None or keep(obj)):
                if len(found) == limit:
                    return found, pos
                found.append(obj)
            pos += 1
        return found, None

    # -- relationships ------------------------------------------------------------------------------------

    def _links(self, res: Resource, oid: str, relation: str) -> Sequence[tuple[str, str]]:
        """The links of a relationship; transitive members are cached per (group, tenant version)."""
        if relation != "transitiveMembers":
            return related(self.tenant, res, oid, relation)
        key = (oid, self.tenant.version)
        with self._lock:
            if key not in self._transitive_cache:
                self._transitive_cache[key] = transitive_members(self.tenant, oid)
                while len(self._transitive_cache) > 16:
                    self._transitive_cache.popitem(last=False)
            self._transitive_cache.move_to_end(key)
            return self._transitive_cache[key]

    def _relation(self, request: Request, res: Resource, key: str, relation: str, cast: str | None = None) -> Response:
        """``GET /{c}/{id}/{relation}[/microsoft.graph.{type}]``: directoryObjects with ``@odata.type``."""
        args = request.args
        for option in ("$orderby", "$search", "$skip", "$deltatoken", "$expand", "$filter"):
            if option in args:
                raise bad_request(f"Query option '{option}' is not supported by this emulator on relationships.",
                                  "Request_UnsupportedQuery")
        count, advanced = self._count_mode(request)
        if cast and not advanced and any(k.startswith("$") and k != "$skiptoken" for k in args):
            raise bad_request("An OData cast combined with other query options requires an advanced query: add "
                              "$count=true and the ConsistencyLevel:eventual header.", "Request_UnsupportedQuery")
        if "$skiptoken" in args:
            fields = self._tokens.decode(args["$skiptoken"], ("r",))
            if fields is None or fields[1:5] != [res.name, key, relation, cast]:
                raise bad_request("The specified page token value has expired or is invalid.")
            pos, top, select, count = fields[5], fields[6], fields[7] and tuple(fields[7]), False
        else:
            pos, top = 0, parse_top(args.get("$top"))
            select = parse_related_select(args["$select"], cast) if "$select" in args else None
        with self.tenant.lock:
            obj = self._find(res, key)
            if obj is None:
                raise not_found(key)
            links = self._links(res, obj["id"], relation)
            value, next_pos, total = [], None, 0
            for index in range(pos, len(links)):
                odata_type, oid = links[index]
                if cast and odata_type != cast:
                    continue
                rendered = render_related(self.tenant, odata_type, oid, select)
                if rendered is None:
                    continue
                if len(value) == top:
                    next_pos = index
                    break
                value.append(rendered)
            if count:
                total = sum(1 for t, m in links if (not cast or t == cast)
                            and (t == "orgContact" or m in self.tenant.objects[RESOURCES_BY_TYPE[t]]))
        base = self._base(request)
        next_link = None
        if next_pos is not None:
            token = self._tokens.encode(["r", res.name, key, relation, cast, next_pos, top,
                                         list(select) if select else None])
            path = f"{res.name}/{key}/{relation}" + (f"/microsoft.graph.{cast}" if cast else "")
            next_link = f"{base}/{path}?$skiptoken={token}"
        context = f"{base}/$metadata#{RESOURCES_BY_TYPE.get(cast, 'directoryObjects')}"
        return self._json(_Page(context, value, next_link=next_link, count=total if count else None).body())

    # -- delta ----------------------------------------------------------------------------------------------

    def _delta(self, request: Request, res: Resource) -> Response:
        """``GET /{c}/delta``: an initial round, a page of a round (``$skiptoken``) or a later round."""
        args = request.args
        for option in ("$orderby", "$filter", "$count", "$search", "$skip"):
            if option in args:
                raise bad_request(f"Invalid request for delta query: {option} is not supported.",
                                  "Request_UnsupportedQuery")
        skip, delta = args.get("$skiptoken"), args.get("$deltatoken")
        if skip is not None and delta is not None:
            raise bad_request("$skiptoken and $deltatoken cannot be used together.")
        if skip is not None:
            if "$select" in args:  # reference §2.2: $select with a $skiptoken is not supported
                raise bad_request("$select is not supported together with $skiptoken; follow the nextLink as is.")
            return self._delta_page(request, self._decode_round(skip, ("i", "c"), res))
        raw = args.get("$select")  # $top and $expand are ignored on delta (reference §1.5, §2.2)
        select = parse_select(raw, res, where="delta") if raw is not None else None
        indices = _select_to_token(res, select)
        with self.tenant.lock:
            now, version, end = int(time.time()), self.tenant.version, len(self.tenant.orders[res.name])
        if not delta:
            return self._delta_page(request, ["i", self._epoch, now, res.name, version, end, 0, 0, indices])
        if delta == "latest":
            return self._delta_page(request, ["c", self._epoch, now, res.name, version, version, 0, 0, indices])
        fields = self._decode_round(delta, ("d",), res)
        indices = indices if raw is not None else fields[5]
        return self._delta_page(request, ["c", self._epoch, now, res.name, fields[4], version, 0, 0, indices])

    def _decode_round(self, token: str, kinds: tuple[str, ...], res: Resource) -> list:
        """The fields of a delta/skip token of this emulator for ``res``; 400 syncStateNotFound (or 410)."""
        fields = self._tokens.decode(token, kinds)
        if fields is None or fields[3] != res.name:
            raise sync_state_not_found()
        with self._lock:
            epoch, gone = self._epoch, fields[1] in self._gone_epochs
        if gone:
            select = _select_from_token(res, fields[-1])
            query = f"$select={','.join(select)}&" if select else ""
            raise GraphError(410, "resyncRequired", "The delta token is no longer valid; synchronize again.",
                             {"Location": f"{self.base_url}/{res.name}/delta?{query}$deltatoken="})
        if fields[1] != epoch or time.time() - fields[2] > self.token_ttl:
            raise sync_state_not_found()
        return fields

    def _delta_page(self, request: Request, state: list) -> Response:
        """One page of a round. ``state``: [kind, epoch, issued, resource, from, to, position, link offset,
        select]; kind "i" pages ``tenant.orders[resource][position:to]`` (``from`` = the version at the
        round's start), kind "c" pages the changes between versions ``from`` and ``to``. A page holds at most
        ``page_sizes[resource]`` objects plus split link entries (groups' ``members@delta``)."""
        kind, epoch, issued, name, start, end, pos, sub, indices = state
        res = RESOURCES[name]
        rendering = view(self.tenant, res, _select_from_token(res, indices))
        minimal = "return=minimal" in request.headers.get("Prefer", "").replace(" ", "")
        budget, value = self.page_sizes[name], []
        with self.tenant.lock:
            if kind == "i":
                objects, order = self.tenant.objects[name], self.tenant.orders[name]
                items: Sequence = order
                entry, links = (lambda oid: rendering.entry(objects[oid])), \
                    (lambda oid: rendering.links(objects[oid]))
                live = objects.__contains__
            else:
                items = self._changes(res, start, end, rendering)
                end = len(items)
                entry, links = (lambda c: rendering.change(c, minimal)), rendering.change_links
                live = None
            while pos < end:
                item = items[pos]
                if live is not None and not live(item):
                    pos, sub = pos + 1, 0
                    continue
                if budget <= 0:
                    break
                out, budget = entry(item), budget - 1
                pending = links(item)
                if pending:
                    part = pending[sub:sub + max(budget, 0)]
                    if part:
                        out[f"{res.delta_nav}@delta"] = [link_entry(link) for link in part]
                    budget -= len(part)
                    if sub + len(part) < len(pending):
                        value.append(out)
                        sub += len(part)
                        break
                value.append(out)
                pos, sub = pos + 1, 0
        base = self._base(request)
        context = f"{base}/$metadata#{rendering.context_list}"
        if pos < end:
            token = self._tokens.encode([kind, epoch, issued, name, start, state[5], pos, sub, indices])
            return self._json(_Page(context, value, next_link=f"{base}/{name}/delta?$skiptoken={token}").body())
        delta_version = start if kind == "i" else state[5]
        token = self._tokens.encode(["d", epoch, int(time.time()), name, delta_version, indices])
        return self._json(_Page(context, value, delta_link=f"{base}/{name}/delta?$deltatoken={token}").body())

    def _changes(self, res: Resource, since: int, until: int, rendering: View) -> list[Change]:
        """The tenant's changes of ``res`` in (since, until] that touch the tracked properties; cached, because
        every page of a round needs the same list and the log slice between two versions never changes."""
        tracked = rendering.tracked()
        key = (res.name, since, until, tracked)
        with self._lock:
            if key not in self._change_cache:
                self._change_cache[key] = self.tenant.changes_since(since, until, tracked, kind=res.name)
                while len(self._change_cache) > 8:
                    self._change_cache.popitem(last=False)
            self._change_cache.move_to_end(key)
            return self._change_cache[key]

    # -- $batch ---------------------------------------------------------------------------------------------

    def _batch(self, request: Request) -> Response:
        """``POST /$batch``: each item answered as the single GET would be (reference §4.3)."""
        try:
            body = orjson.loads(request.get_data())
        except orjson.JSONDecodeError:
            raise bad_request("Invalid batch payload format.", "BadRequest") from None
        items = body.get("requests") if isinstance(body, dict) else None
        if not isinstance(items, list) or not items:
            raise bad_request("Invalid batch payload format: 'requests' must be a non-empty array.", "BadRequest")
        if len(items) > MAX_BATCH_REQUESTS:
            raise bad_request(f"The number of requests in a batch ({len(items)}) exceeds the limit of "
                              f"{MAX_BATCH_REQUESTS}.", "BadRequest")
        ids: list[str] = []
        for item in items:
            if not isinstance(item, dict) or not all(isinstance(item.get(k), str) for k in ("id", "method", "url")):
                raise bad_request("Invalid batch payload format: every request needs 'id', 'method' and 'url'.",
                                  "BadRequest")
            url = item["url"]
            if "://" in url or urlsplit(url).path.strip("/").split("/")[0] in ("$batch", "v1.0", "beta"):
                raise bad_request(f"Invalid request URL '{url}' in batch: use a URL relative to the version, such "
                                  "as /users.", "BadRequest")
            depends = item.get("dependsOn", [])
            if not isinstance(depends, list) or any(d not in ids for d in depends):
                raise bad_request(f"Request {item['id']}: dependsOn must name earlier requests of the batch.",
                                  "BadRequest")
            if item["id"] in ids:
                raise bad_request(f"Request id '{item['id']}' appears more than once in the batch.", "BadRequest")
            ids.append(item["id"])
        statuses: dict[str, int] = {}
        responses = []
        for item in items:
            failed = [d for d in item.get("dependsOn", []) if statuses[d] >= 400]
            if failed:
                statuses[item["id"]] = 424
                responses.append({"id": item["id"], "status": 424, "headers": {"Content-Type": "application/json"},
                                  "body": {"error": {"code": "FailedDependency", "message":
                                                     f"Depends on failed request {failed[0]}."}}})
                continue
            answer = self._batch_item(request, item)
            statuses[item["id"]] = answer["status"]
            responses.append(answer)
        return self._json({"responses": responses})

    def _batch_item(self, outer: Request, item: dict) -> dict:
        parts = urlsplit(item["url"])
        headers = {"Authorization": outer.headers.get("Authorization", ""), **(item.get("headers") or {})}
        environ = EnvironBuilder(path="/v1.0/" + parts.path.lstrip("/"), query_string=parts.query,
                                 method=item["method"].upper(), headers=headers,
                                 base_url=outer.host_url).get_environ()
        sub = Request(environ)
        with self._lock:
            self.batch_requests.append(RecordedRequest(sub.method, sub.path, sub.args.to_dict(), dict(sub.headers)))
        response = self._respond(sub, item=True)
        data = response.get_data()
        content_type = response.headers.get("Content-Type", "")
        answer_headers = {"Content-Type": content_type}
        for name in ("Retry-After", "Location"):
            if name in response.headers:
                answer_headers[name] = response.headers[name]
        body = orjson.loads(data) if content_type.startswith("application/json") else data.decode()
        return {"id": item["id"], "status": response.status_code, "headers": answer_headers, "body": body}

