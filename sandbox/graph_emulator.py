"""A strict emulator of the Microsoft Graph v1.0 user endpoints, served over real HTTP on loopback.

Emulated (all below ``/v1.0``): ``GET /organization``, ``GET /users`` (``$select``, ``$top``, a cheap
``$filter`` subset, ``$skiptoken`` paging), ``GET /users/{id|upn}``, ``GET /users/{id}/manager`` and the
``GET /users/delta`` round trip: an initial round in pages of ``DEFAULT_PAGE_SIZE`` with ``@odata.nextLink``
(``$skiptoken``) ending in ``@odata.deltaLink`` (``$deltatoken``), later rounds with only the changed users,
``@removed`` reasons, ``manager@delta``, ``$deltatoken=latest`` and ``Prefer: return=minimal``. Errors carry
Graph's body ``{"error": {"code", "message", "innerError": {"date", "request-id", "client-request-id"}}}``.
Tests turn knobs: ``throttle``, ``expire_delta_tokens``, ``token_ttl``, ``page_size``, and read ``requests``.

Sources: /work/shared/reference/graph.md §1.1-1.5 (endpoints, paging, ``$select`` and the default property set,
``$filter``), §2.1-2.6 (delta round trip, tokens and query options, change shapes, expiry), §4.2 (429) and §8
(emulator checklist); Microsoft Learn: https://learn.microsoft.com/en-us/graph/api/user-delta,
https://learn.microsoft.com/en-us/graph/delta-query-users, https://learn.microsoft.com/en-us/graph/delta-query-overview,
https://learn.microsoft.com/en-us/graph/paging, https://learn.microsoft.com/en-us/graph/errors,
https://learn.microsoft.com/en-us/graph/throttling.

Tokens are opaque to clients: base64url of a small JSON array (kind, epoch, issue time, tenant version, round
bounds, position, the ``$select`` as indices into ``_TOKEN_PROPERTIES``) plus an HMAC with a per-emulator key, so
tampered, foreign or garbage tokens are "not found". An initial round pages the tenant's insertion order by
index up to the length it had when the round started; its deltaLink carries the tenant version at that start,
so users changed or added mid-round show up (again) in the next round and none is ever skipped. A later round
pages the change-log slice between the two versions.

UNCONFIRMED behaviours (emulator choices):
- 200 users per delta page (community reports, reference §2.3); every page but the last is full.
- The 400 code/message for properties outside the main store in a delta ``$select`` (``Request_UnsupportedQuery``),
  for ``$orderby``/``$filter``/``$count``/``$search`` on delta, for ``$select`` with ``$skiptoken`` and for a bad
  ``/users`` skiptoken; ``$select`` is case-sensitive here and may contain spaces around commas.
- The shape of a removed manager link: ``{"@odata.type", "id": <old manager>, "@removed": {"reason": "deleted"}}``,
  sent in the round where the link was removed; a manager change reports only the new manager.
- Deleting a user (soft or permanent) removes its reports' manager links (see ``sandbox/tenant.py``).
- Unselected or unset properties: selected-but-unset come back as null (collections as ``[]``).
- ``$select`` with ``$deltatoken`` replaces the tracked properties of the new round (reference §2.2: "supported
  for some Entra resources").
- 410 (forced resync, ``expire_delta_tokens(gone=True)``) uses code ``resyncRequired``; expired or foreign
  skiptokens answer like delta tokens (400 ``syncStateNotFound``).
- ``$filter`` on ``/users``: one ``<property> eq <literal>`` clause, strings compared case-insensitively;
  everything else is 400 ``Request_UnsupportedQuery``; ``$expand`` on ``/users`` is not emulated (400).
- ``$select=manager`` outside delta is 400; a non-GET method is 405 ``Request_BadRequest``; paths outside
  ``/v1.0`` are 404 ``Request_ResourceNotFound``; the no-permission token gets 403 on every endpoint.
- 429 carries ``Retry-After`` exactly as given to ``throttle`` and the identity throttle headers of §4.1.
"""
from __future__ import annotations

import base64
import contextlib
import datetime as dt
import hashlib
import hmac
import re
import secrets
import socket
import threading
import time
import uuid
from collections import OrderedDict
from dataclasses import dataclass
from urllib.parse import quote

import orjson
from werkzeug.wrappers import Request, Response

from sandbox.http import RunningServer, serve
from sandbox.tenant import Change, Tenant

DEFAULT_PAGE_SIZE = 200          # users per /users/delta page (UNCONFIRMED, reference §2.3)
LIST_PAGE_SIZE = 100             # default page of GET /users (reference §1.2)
MAX_TOP = 999
NO_PERMISSIONS_TOKEN = "sandbox-graph-no-perms"
TOKEN_TTL_SECONDS = 7 * 24 * 3600  # delta links of directory objects last 7 days (reference §2.6)

# Default property set of a user without $select (reference §1.3).
DEFAULT_USER_PROPERTIES = ("businessPhones", "displayName", "givenName", "id", "jobTitle", "mail", "mobilePhone",
                           "officeLocation", "preferredLanguage", "surname", "userPrincipalName")
# Stored outside the Entra main store: only on a single user, never in a delta $select (reference §1.3).
OUTSIDE_MAIN_STORE = ("aboutMe", "birthday", "hireDate", "interests", "mailboxSettings", "mySite",
                      "pastProjects", "preferredName", "responsibilities", "schools", "skills")
USER_PROPERTIES = (
    "accountEnabled", "ageGroup", "assignedLicenses", "assignedPlans", "authorizationInfo", "businessPhones",
    "city", "companyName", "consentProvidedForMinor", "country", "createdDateTime", "creationType",
    "customSecurityAttributes", "deletedDateTime", "department", "displayName", "employeeHireDate", "employeeId",
    "employeeLeaveDateTime", "employeeOrgData", "employeeType", "externalUserState",
    "externalUserStateChangeDateTime", "faxNumber", "givenName", "id", "identities", "imAddresses",
    "isManagementRestricted", "isResourceAccount", "jobTitle", "lastPasswordChangeDateTime",
    "legalAgeGroupClassification", "licenseAssignmentStates", "mail", "mailNickname", "mobilePhone",
    "officeLocation", "onPremisesDistinguishedName", "onPremisesDomainName", "onPremisesExtensionAttributes",
    "onPremisesImmutableId", "onPremisesLastSyncDateTime", "onPremisesProvisioningErrors",
    "onPremisesSamAccountName", "onPremisesSecurityIdentifier", "onPremisesSyncEnabled",
    "onPremisesUserPrincipalName", "otherMails", "passwordPolicies", "passwordProfile", "postalCode",
    "preferredDataLocation", "preferredLanguage", "provisionedPlans", "proxyAddresses", "securityIdentifier",
    "serviceProvisioningErrors", "showInAddressList", "signInActivity", "signInSessionsValidFromDateTime",
    "state", "streetAddress", "surname", "usageLocation", "userPrincipalName", "userType")
_COLLECTIONS = frozenset({"assignedLicenses", "assignedPlans", "businessPhones", "identities", "imAddresses",
                          "licenseAssignmentStates", "onPremisesProvisioningErrors", "otherMails",
                          "provisionedPlans", "proxyAddresses", "serviceProvisioningErrors", "interests",
                          "pastProjects", "responsibilities", "schools", "skills"})
# Every selectable name, in a fixed order: tokens carry a $select as indices into this tuple.
_TOKEN_PROPERTIES = USER_PROPERTIES + OUTSIDE_MAIN_STORE + ("manager",)
_INDEX = {name: i for i, name in enumerate(_TOKEN_PROPERTIES)}
_DELTA_SEGMENTS = {"delta", "delta()", "microsoft.graph.delta", "microsoft.graph.delta()"}
_KNOWN_OPTIONS = {"$select", "$top", "$filter", "$orderby", "$count", "$search", "$expand", "$skip",
                  "$skiptoken", "$deltatoken", "$format"}
_FILTERABLE = {"id", "userPrincipalName", "mail", "displayName", "givenName", "surname", "userType",
               "accountEnabled", "department", "jobTitle", "employeeId", "companyName", "officeLocation",
               "city", "country", "employeeType"}
_FILTER = re.compile(r"^\s*(\w+)\s+eq\s+('(?:[^']|'')*'|true|false)\s*$")
_USER_TYPE = "#microsoft.graph.user"
_JSON = "application/json;odata.metadata=minimal;odata.streaming=true;IEEE754Compatible=false;charset=utf-8"


@dataclass(frozen=True)
class RecordedRequest:
    """One request as it reached the emulator (throttled and rejected ones included)."""

    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]


class GraphError(Exception):
    """An error answer in Graph's shape; raised anywhere below ``_respond``."""

    def __init__(self, status: int, code: str, message: str, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status, self.code, self.message, self.headers = status, code, message, headers or {}


def _bad_request(message: str, code: str = "Request_BadRequest") -> GraphError:
    return GraphError(400, code, message)


def _sync_state_not_found() -> GraphError:
    return GraphError(400, "syncStateNotFound", "The sync state generation is not found. The delta token is "
                                                "expired and data must be synchronized again.")


def _not_found(resource: str) -> GraphError:
    return GraphError(404, "Request_ResourceNotFound", f"Resource '{resource}' does not exist or one of its "
                                                       "queried reference-property objects are not present.")


@dataclass(frozen=True)
class _Page:
    """What one paged answer holds before serialisation."""

    context: str
    value: list[dict]
    next_link: str | None = None
    delta_link: str | None = None

    def body(self) -> dict:
        link = {"@odata.nextLink": self.next_link} if self.next_link else {"@odata.deltaLink": self.delta_link}
        return {"@odata.context": self.context, **(link if self.next_link or self.delta_link else {}),
                "value": self.value}


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


def _select_to_token(select: tuple[str, ...] | None) -> list[int] | None:
    return None if select is None else [_INDEX[name] for name in select]


def _select_from_token(indices: list[int] | None) -> tuple[str, ...] | None:
    return None if indices is None else tuple(_TOKEN_PROPERTIES[i] for i in indices)


def parse_select(raw: str, *, where: str) -> tuple[str, ...]:
    """Validate a ``$select`` for ``where`` ("delta", "list" or "single"); the names in order, deduplicated.

    Raises GraphError 400 for unknown names, for ``manager`` outside delta and for properties stored outside
    the main store in delta (Graph's message lists them) or in a list.
    """
    names = list(dict.fromkeys(name.strip() for name in raw.split(",")))
    for name in names:
        if name not in _INDEX or (name == "manager" and where != "delta"):
            raise _bad_request(f"Could not find a property named '{name}' on type 'microsoft.graph.user'.")
    outside = [n for n in names if n in OUTSIDE_MAIN_STORE]
    if outside and where == "delta":
        raise _bad_request("Invalid request for delta query: $expand/$select is not supported for the following "
                           f"properties: {', '.join(outside)}", "Request_UnsupportedQuery")
    if outside and where == "list":
        raise _bad_request(f"The following properties can only be selected on a single user: {', '.join(outside)}",
                           "Request_UnsupportedQuery")
    return tuple(names)


def parse_top(raw: str | None) -> int:
    """``$top`` of ``GET /users``: 1-999, default 100 (reference §1.2)."""
    if raw is None:
        return LIST_PAGE_SIZE
    if not raw.strip().isdigit() or not 1 <= int(raw) <= MAX_TOP:
        raise _bad_request(f"Invalid page size specified: '{raw}'. Must be between 1 and {MAX_TOP} inclusive.")
    return int(raw)


def parse_filter(raw: str | None) -> tuple[str, object] | None:
    """One ``<property> eq <literal>`` clause as (property, value); anything else is 400 (strict)."""
    if raw is None:
        return None
    match = _FILTER.match(raw)
    if not match or match.group(1) not in _FILTERABLE or \
            (match.group(1) == "accountEnabled") != (match.group(2) in ("true", "false")):
        raise _bad_request("Unsupported or invalid query filter clause specified for property "
                           f"'{match.group(1) if match else raw}' of resource 'User'.", "Request_UnsupportedQuery")
    prop, literal = match.groups()
    return prop, (literal == "true") if prop == "accountEnabled" else literal[1:-1].replace("''", "'").casefold()


def _matches(user: dict, where: tuple[str, object] | None) -> bool:
    if where is None:
        return True
    prop, wanted = where
    value = user.get(prop)
    return value == wanted if isinstance(wanted, bool) else isinstance(value, str) and value.casefold() == wanted


class _Renderer:
    """Turns stored users into response objects for one ``$select`` (None = the default property set)."""

    def __init__(self, tenant: Tenant, select: tuple[str, ...] | None):
        names = DEFAULT_USER_PROPERTIES if select is None else select
        self.tenant = tenant
        self.keys = ("id", *(n for n in names if n not in ("id", "manager")))
        self.collections = [k for k in self.keys if k in _COLLECTIONS]
        self.manager = "manager" in names
        self.context_list = "users" if select is None else f"users({','.join(names)})"

    def user(self, user: dict, keys: tuple[str, ...] | None = None) -> dict:
        """The selected properties (unset ones null, empty collections ``[]``) and ``manager@delta``."""
        out = dict(zip(keys or self.keys, map(user.get, keys or self.keys)))
        for key in self.collections:
            if key in out and out[key] is None:
                out[key] = []
        if self.manager:
            manager = self.tenant.managers.get(user["id"])
            if manager:
                out["manager@delta"] = [{"@odata.type": _USER_TYPE, "id": manager}]
        return out

    def change(self, change: Change, minimal: bool) -> dict:
        """A later-round entry: ``@removed`` for a deleted user, else the user (only changed props if minimal)."""
        user = self.tenant.users.get(change.uid)
        if user is None:
            reason = self.tenant.removal_reason(change.uid) or "changed"
            return {"id": change.uid, "@removed": {"reason": reason}}
        keys = None
        if minimal and change.props is not None:
            keys = ("id", *(k for k in self.keys if k in change.props))
        out = self.user(user, keys)
        if minimal and change.props is not None and "manager" not in change.props:
            out.pop("manager@delta", None)
        manager_changed = change.props is None or "manager" in change.props
        former = self.tenant.former_manager(change.uid)
        if self.manager and manager_changed and former:
            out["manager@delta"] = [{"@odata.type": _USER_TYPE, "id": former, "@removed": {"reason": "deleted"}}]
        return out


class GraphEmulator:
    """A WSGI app answering Graph's user endpoints from a ``Tenant``. Thread-safe; see the module docstring."""

    def __init__(self, tenant: Tenant, *, token: str = "sandbox-graph-token", page_size: int = DEFAULT_PAGE_SIZE,
                 token_ttl: float = TOKEN_TTL_SECONDS):
        self.tenant = tenant
        self.token = token
        self.page_size = page_size
        self.token_ttl = token_ttl
        self.requests: list[RecordedRequest] = []
        self.base_url = ""
        self._tokens = _Tokens()
        self._epoch = 0
        self._gone_epochs: set[int] = set()
        self._throttle = (0, "1")
        self._change_cache: OrderedDict[tuple, list[Change]] = OrderedDict()
        self._lock = threading.RLock()
        self._server: RunningServer | None = None

    # -- lifecycle and knobs ------------------------------------------------------------------------------

    def start(self, host: str = "127.0.0.1", port: int = 0) -> GraphEmulator:
        """Serve on ``host:port`` (0 = a free port) in a background thread; sets ``base_url``. Returns self."""
        self._server = serve(self, host, port)
        self.base_url = f"{self._server.url}/v1.0"
        return self

    def stop(self) -> None:
        """Stop serving (idempotent)."""
        if not self._server:
            return
        stopper = threading.Thread(target=self._server.stop)
        stopper.start()
        # serve_forever only looks at its shutdown flag every 0.5 s, between select() calls; a connection
        # wakes select() at once, so a test's teardown takes milliseconds instead of half a second.
        host, port = self._server.server.server_address[:2]
        while stopper.is_alive():
            with contextlib.suppress(OSError):
                socket.create_connection((host, port), timeout=0.1).close()
            stopper.join(0.01)
        self._server = None

    def reset_log(self) -> None:
        """Forget the recorded requests."""
        with self._lock:
            self.requests.clear()

    def throttle(self, count: int, retry_after: str = "1") -> None:
        """Answer the next ``count`` requests with 429, ``Retry-After: retry_after`` and a TooManyRequests body."""
        with self._lock:
            self._throttle = (count, retry_after)

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

    def _respond(self, request: Request) -> Response:
        request_id = str(uuid.uuid4())
        client_id = request.headers.get("client-request-id") or request_id
        try:
            response = self._checked(request)
        except GraphError as exc:
            inner = {"date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S"), "request-id": request_id,
                     "client-request-id": client_id}
            body = {"error": {"code": exc.code, "message": exc.message, "innerError": inner}}
            response = Response(orjson.dumps(body), exc.status, headers=exc.headers, mimetype="application/json")
        response.headers["request-id"] = request_id
        response.headers["client-request-id"] = client_id
        return response

    def _checked(self, request: Request) -> Response:
        """Throttling, then authentication, then routing (all before any resource is looked at)."""
        with self._lock:
            count, retry_after = self._throttle
            if count > 0:
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
        if auth != f"Bearer {self.token}":
            raise GraphError(401, "InvalidAuthenticationToken", "Access token validation failure. Invalid audience.",
                             {"WWW-Authenticate": 'Bearer realm=""'})
        return self._route(request)

    def _route(self, request: Request) -> Response:
        if not request.path.startswith("/v1.0/"):
            raise _not_found(request.path)
        segments = [s for s in request.path[len("/v1.0/"):].split("/") if s]
        if request.method != "GET":
            raise GraphError(405, "Request_BadRequest", "Specified HTTP method is not allowed for the request uri.")
        unknown = [k for k in request.args if k.startswith("$") and k not in _KNOWN_OPTIONS]
        if unknown:
            raise _bad_request(f"Query option '{unknown[0]}' is not supported.", "BadRequest")
        match segments:
            case ["organization"]:
                return self._organization(request)
            case ["users"]:
                return self._list_users(request)
            case ["users", segment] if segment in _DELTA_SEGMENTS:
                return self._delta(request)
            case ["users", uid]:
                return self._get_user(request, uid)
            case ["users", uid, "manager"]:
                return self._get_manager(request, uid)
        segment = segments[2] if segments[:1] == ["users"] and len(segments) > 2 else (segments or [""])[0]
        raise _bad_request(f"Resource not found for the segment '{segment}'.", "BadRequest")

    def _base(self, request: Request) -> str:
        return f"{request.host_url.rstrip('/')}/v1.0"

    @staticmethod
    def _json(body: dict) -> Response:
        return Response(orjson.dumps(body), 200, content_type=_JSON)

    # -- plain reads --------------------------------------------------------------------------------------

    def _organization(self, request: Request) -> Response:
        return self._json({"@odata.context": f"{self._base(request)}/$metadata#organization",
                           "value": [{"id": self.tenant.tenant_id, "displayName": "Sandbox"}]})

    def _find(self, key: str) -> dict | None:
        """A user by id, or by userPrincipalName (case-insensitive), as ``/users/{id | userPrincipalName}``."""
        user = self.tenant.users.get(key)
        if user is None and "@" in key:
            folded = key.casefold()
            user = next((u for u in self.tenant.users.values()
                         if (u.get("userPrincipalName") or "").casefold() == folded), None)
        return user

    def _single(self, request: Request, user: dict, context: str, odata_type: bool = False) -> Response:
        raw = request.args.get("$select")
        select = parse_select(raw, where="single") if raw is not None else None
        renderer = _Renderer(self.tenant, select)
        body = {"@odata.context": f"{self._base(request)}/$metadata#{context}"}
        if odata_type:
            body["@odata.type"] = _USER_TYPE
        return self._json({**body, **renderer.user(user)})

    def _get_user(self, request: Request, key: str) -> Response:
        with self.tenant.lock:
            user = self._find(key)
            if user is None:
                raise _not_found(key)
            return self._single(request, user, "users/$entity")

    def _get_manager(self, request: Request, key: str) -> Response:
        with self.tenant.lock:
            user = self._find(key)
            if user is None:
                raise _not_found(key)
            manager = self.tenant.users.get(self.tenant.managers.get(user["id"], ""))
            if manager is None:
                raise _not_found("manager")
            return self._single(request, manager, "directoryObjects/$entity", odata_type=True)

    def _list_users(self, request: Request) -> Response:
        """``GET /users``: pages of ``$top`` users in insertion order; the nextLink repeats the options."""
        args = request.args
        for option in ("$orderby", "$count", "$search", "$expand", "$skip", "$deltatoken"):
            if option in args:
                raise _bad_request(f"Query option '{option}' is not supported by this emulator on /users "
                                   "(advanced queries are not emulated).", "Request_UnsupportedQuery")
        if "$skiptoken" in args:
            fields = self._tokens.decode(args["$skiptoken"], ("l",))
            if fields is None:
                raise _bad_request("The specified page token value has expired or is invalid.")
            _, pos, top, indices, where = fields
            select = _select_from_token(indices)
            where = tuple(where) if where else None
        else:
            top, pos = parse_top(args.get("$top")), 0
            raw = args.get("$select")
            select = parse_select(raw, where="list") if raw is not None else None
            where = parse_filter(args.get("$filter"))
        renderer = _Renderer(self.tenant, select)
        with self.tenant.lock:
            users, pos = self._scan(self.tenant.order, pos, len(self.tenant.order), top,
                                    lambda u: _matches(u, where))
            value = [renderer.user(u) for u in users]
        next_link = None
        if pos is not None:
            token = self._tokens.encode(["l", pos, top, _select_to_token(select), list(where) if where else None])
            options = "".join(f"{k}={quote(args[k], safe=',$()')}&" for k in ("$select", "$filter", "$top")
                              if k in args)
            next_link = f"{self._base(request)}/users?{options}$skiptoken={token}"
        page = _Page(f"{self._base(request)}/$metadata#{renderer.context_list}", value, next_link=next_link)
        return self._json(page.body())

    def _scan(self, order: list[str], pos: int, end: int, limit: int, keep=None) -> tuple[list[dict], int | None]:
        """Up to ``limit`` live users from ``order[pos:end]`` (those ``keep`` accepts) and the position of the
        next one, or None when none is left: so every page but the last is full and no page is empty."""
        users, found = self.tenant.users, []
        while pos < end:
            user = users.get(order[pos])
            if user is not None and (keep is None or keep(user)):
                if len(found) == limit:
                    return found, pos
                found.append(user)
            pos += 1
        return found, None

    # -- delta ----------------------------------------------------------------------------------------------

    def _delta(self, request: Request) -> Response:
        """``GET /users/delta``: an initial round, a page of a round (``$skiptoken``) or a later round."""
        args = request.args
        for option in ("$orderby", "$filter", "$count", "$search", "$skip"):
            if option in args:
                raise _bad_request(f"Invalid request for delta query: {option} is not supported.",
                                   "Request_UnsupportedQuery")
        skip, delta = args.get("$skiptoken"), args.get("$deltatoken")
        if skip is not None and delta is not None:
            raise _bad_request("$skiptoken and $deltatoken cannot be used together.")
        if skip is not None:
            if "$select" in args:  # reference §2.2: $select with a $skiptoken is not supported
                raise _bad_request("$select is not supported together with $skiptoken; follow the nextLink as is.")
            return self._delta_page(request, self._decode_round(skip, ("i", "c")))
        raw = args.get("$select")  # $top and $expand are ignored on delta (reference §1.5, §2.2)
        select = parse_select(raw, where="delta") if raw is not None else None
        with self.tenant.lock:
            now, version, end = int(time.time()), self.tenant.version, len(self.tenant.order)
        if not delta:
            return self._delta_page(request, ["i", self._epoch, now, version, end, 0, _select_to_token(select)])
        if delta == "latest":
            return self._delta_page(request, ["c", self._epoch, now, version, version, 0, _select_to_token(select)])
        fields = self._decode_round(delta, ("d",))
        indices = _select_to_token(select) if raw is not None else fields[4]
        return self._delta_page(request, ["c", self._epoch, now, fields[3], version, 0, indices])

    def _decode_round(self, token: str, kinds: tuple[str, ...]) -> list:
        """The fields of a delta/skip token of this emulator; 400 syncStateNotFound (or 410) otherwise."""
        fields = self._tokens.decode(token, kinds)
        if fields is None:
            raise _sync_state_not_found()
        with self._lock:
            epoch, gone = self._epoch, fields[1] in self._gone_epochs
        if gone:
            select = _select_from_token(fields[-1])
            query = f"$select={','.join(select)}&" if select else ""
            raise GraphError(410, "resyncRequired", "The delta token is no longer valid; synchronize again.",
                             {"Location": f"{self.base_url}/users/delta?{query}$deltatoken="})
        if fields[1] != epoch or time.time() - fields[2] > self.token_ttl:
            raise _sync_state_not_found()
        return fields

    def _delta_page(self, request: Request, state: list) -> Response:
        """One page of a round. ``state``: [kind, epoch, issued, from, to, position, select]; kind "i" pages
        ``tenant.order[position:to]`` (``from`` = the version at the round's start), kind "c" pages the
        changes between versions ``from`` and ``to``."""
        kind, epoch, issued, start, end, pos, indices = state
        renderer = _Renderer(self.tenant, _select_from_token(indices))
        minimal = "return=minimal" in request.headers.get("Prefer", "").replace(" ", "")
        with self.tenant.lock:
            if kind == "i":
                users, next_pos = self._scan(self.tenant.order, pos, end, self.page_size)
                value = [renderer.user(u) for u in users]
            else:
                changes = self._changes(start, end, renderer)
                value = [renderer.change(c, minimal) for c in changes[pos:pos + self.page_size]]
                next_pos = pos + self.page_size if pos + self.page_size < len(changes) else None
        base = self._base(request)
        context = f"{base}/$metadata#{renderer.context_list}"
        if next_pos is not None:
            token = self._tokens.encode([kind, epoch, issued, start, end, next_pos, indices])
            return self._json(_Page(context, value, next_link=f"{base}/users/delta?$skiptoken={token}").body())
        delta_version = start if kind == "i" else end
        token = self._tokens.encode(["d", epoch, int(time.time()), delta_version, indices])
        return self._json(_Page(context, value, delta_link=f"{base}/users/delta?$deltatoken={token}").body())

    def _changes(self, since: int, until: int, renderer: _Renderer) -> list[Change]:
        """The tenant's changes in (since, until] that touch the selected properties; cached, because every
        page of a round needs the same list and the log slice between two versions never changes."""
        tracked = (*renderer.keys, "manager") if renderer.manager else renderer.keys
        key = (since, until, tracked)
        with self._lock:
            if key not in self._change_cache:
                self._change_cache[key] = self.tenant.changes_since(since, until, tracked)
                while len(self._change_cache) > 8:
                    self._change_cache.popitem(last=False)
            self._change_cache.move_to_end(key)
            return self._change_cache[key]
