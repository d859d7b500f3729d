"""Users' ``signInActivity`` in the Graph emulator: who may read it, which tenants have it, its own throttle.

A ``GraphEmulator`` mixin. A read of users that selects ``signInActivity`` - or filters on it - (``GET /users``,
its pages, ``GET /users/{id}``, relationships and ``$batch`` items alike) passes these checks after its query
options are validated, in this order (the order is UNCONFIRMED):
1. ``$top`` at most ``SIGN_IN_MAX_TOP`` (500) on a list, else 400 (/work/shared/reference/graph.md §1.3;
   UNCONFIRMED: older Graph docs said 120, with larger ``$top`` served 120 a page rather than refused);
2. a single user is addressed by its object id: by userPrincipalName 400 (Microsoft Q&A 1311910, "Selecting the
   'signInActivity' resource using UPN is not supported"; the wording here is UNCONFIRMED);
3. the token holds ``AuditLog.Read.All`` besides a permission to read users, else 403
   ``Authorization_RequestDenied`` (msgraph-sdk's v1.0 user model: "Details for this property require a
   Microsoft Entra ID P1 or P2 license and the AuditLog.Read.All permission");
4. the tenant has Entra ID P1/P2 (``Tenant.premium``), else 403
   ``Authentication_RequestFromNonPremiumTenantOrB2CTenant``;
5. at most ``limit[0]`` such requests in any ``limit[1]`` seconds per (app, tenant), else 429 with ``Retry-After``
   (whole seconds until the oldest admitted request leaves the window) - "Identity and access reports service
   limits" of https://learn.microsoft.com/graph/throttling-limits: "GET signInActivity: 10 requests per minute"
   per app per tenant. A sliding window of admitted requests; refused ones (400, 403, 429) take no slot
   (UNCONFIRMED). Knob: ``GraphEmulator.sign_in_limit``; refusals counted in ``sign_in_throttled``.
``/users/delta`` refuses ``signInActivity`` in ``$select`` (sandbox/graph/directory.py ``parse_select``).

The caller of a request (``Caller``: its app and roles) is put in the WSGI environ by the emulator's
authentication: the emulator's fixed token holds every permission, a token of the identity emulator its roles.
"""
from __future__ import annotations

import math
import re
import threading
import time
from collections import deque
from dataclasses import dataclass

from werkzeug.wrappers import Request

from sandbox.graph.directory import GraphError, bad_request
from sandbox.tenant.model import Tenant

SIGN_IN = "signInActivity"
SIGN_IN_MAX_TOP = 500
SIGN_IN_LIMIT = (10, 60.0)    # requests per window seconds, per app and tenant (throttling-limits, above)
AUDIT_LOG = frozenset({"AuditLog.Read.All"})
CALLER = "sandbox.caller"     # WSGI environ key of the request's ``Caller``
_STRINGS = re.compile(r"'(?:[^']|'')*'")
_GUID = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")


@dataclass(frozen=True)
class Caller:
    """Who sent a request: the app (throttling key) and its application permissions (None: all of them)."""

    app: str
    roles: frozenset[str] | None = None

    def holds(self, permissions: frozenset[str]) -> bool:
        return self.roles is None or bool(self.roles & permissions)


def caller_of(request: Request) -> Caller:
    return request.environ.get(CALLER) or Caller("")


def mentions_sign_in(select: tuple[str, ...] | None, raw_filter: str | None) -> bool:
    """Whether a read selects ``signInActivity`` or names it in ``$filter`` (outside string literals)."""
    return bool(select and SIGN_IN in select) or (
        raw_filter is not None and re.search(rf"\b{SIGN_IN}\b", _STRINGS.sub("", raw_filter)) is not None)


class SignInWindow:
    """A sliding window of the sign-in reads admitted per key; thread-safe."""

    def __init__(self, limit: tuple[int, float] = SIGN_IN_LIMIT):
        self.limit = limit
        self.throttled = 0
        self._admitted: dict[tuple[str, str], deque[float]] = {}
        self._lock = threading.Lock()

    def admit(self, key: tuple[str, str]) -> None:
        """Take a slot for ``key`` or raise Graph's 429 with ``Retry-After`` (whole seconds, at least 1)."""
        count, window = self.limit
        now = time.monotonic()
        with self._lock:
            seen = self._admitted.setdefault(key, deque())
            while seen and seen[0] <= now - window:
                seen.popleft()
            if len(seen) < count:
                seen.append(now)
                return
            self.throttled += 1
            wait = max(1, math.ceil(seen[len(seen) - count] + window - now))
        # The shape of the emulator's ``throttle`` answer (sandbox/graph/emulator.py ``_checked``).
        raise GraphError(429, "TooManyRequests", "Please retry again later.", {
            "Retry-After": str(wait), "x-ms-throttle-information": "RequestLimitExceeded",
            "x-ms-throttle-scope": f"Tenant_Application/Read/{key[0]}/{key[1]}"})


class SignInReads:
    """The checks on reads of ``signInActivity``; mixed into ``GraphEmulator``, which owns ``_sign_ins``."""

    tenant: Tenant
    _sign_ins: SignInWindow

    def _check_sign_ins(self, request: Request, top: int | None = None, key: str | None = None) -> None:
        """Raise the answer Graph gives a read of ``signInActivity`` it refuses (module docstring). ``top``: a
        list's ``$top`` (None: a single read or a later page); ``key``: how a single user was addressed."""
        if top is not None and top > SIGN_IN_MAX_TOP:
            raise bad_request(f"Invalid page size specified: '{top}'. Must be between 1 and {SIGN_IN_MAX_TOP} "
                              f"inclusive when {SIGN_IN} is selected or filtered on.")
        if key is not None and not _GUID.match(key):
            raise bad_request("Get By Key only supports UserId and the key has to be a valid Guid", "BadRequest")
        caller = caller_of(request)
        if not caller.holds(AUDIT_LOG):
            raise GraphError(403, "Authorization_RequestDenied", "Insufficient privileges to complete the operation.")
        if not self.tenant.premium:
            raise GraphError(403, "Authentication_RequestFromNonPremiumTenantOrB2CTenant",
                             "Neither tenant is B2C or tenant doesn't have premium license")
        self._sign_ins.admit((caller.app, self.tenant.tenant_id))
