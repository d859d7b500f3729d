"""An emulator of the Jira Cloud site endpoints user linking uses, over real HTTP on loopback.

- ``GET /rest/api/3/user/search?query=&startAt=&maxResults=``: a JSON array of *active* users whose
  ``displayName`` words or ``emailAddress`` start with ``query`` (case-insensitive), as documented
  (https://developer.atlassian.com/cloud/jira/platform/rest/v3/api-group-user-search/). ``emailAddress`` is
  left out of an answer when the account hides it (profile visibility).
- ``GET /rest/servicedeskapi/assets/workspace``: ``{"size", "start", "limit", "isLastPage", "values":
  [{"workspaceId"}]}``.
- ``GET /rest/api/3/myself``: the site user's own account (``accountId``, ``accountType``, ``emailAddress``,
  ``displayName``, ``active``), what ``check`` asks to verify the API token
  (https://developer.atlassian.com/cloud/jira/platform/rest/v3/api-group-myself/).

Strict like the site: 401 without valid basic auth (the site user's e-mail and API token), 400 for a missing
``query`` or a bad ``startAt``/``maxResults``, 404 for other paths, 429 with ``Retry-After`` past
``max_per_second`` requests in one second (and for ``throttle(n)``). Knobs: ``throttle``, ``fail_next`` (5xx
answers), ``token`` (set it to revoke the one the app has).

UNCONFIRMED (emulator choices): whether the search matches an address the account hides (here: it does, but
the address is not returned), the 400 bodies, the per-second window of the rate limit, ``maxResults`` above
1000 being a 400 rather than clamped.

The accounts of the synthetic world come from ``accounts_for(tenant)``: about 70 % of the users with an
e-mail have an Atlassian account with the same address written in other case; a few of those are inactive
or hide their address; app and customer accounts reuse some users' addresses (they must not match).
"""
from __future__ import annotations

import base64
import random
import threading
import time
from collections import deque
from dataclasses import dataclass

import orjson
from werkzeug.wrappers import Request, Response

from sandbox.http import RecordedRequest, Served

SITE_EMAIL = "sandbox-admin@sandbox.example"
SITE_TOKEN = "sandbox-jira-api-token"


@dataclass
class JiraAccount:
    """One Atlassian account as the site knows it."""

    account_id: str
    email: str
    display_name: str
    account_type: str = "atlassian"
    active: bool = True
    email_visible: bool = True

    def to_json(self) -> dict:
        out = {"self": f"/rest/api/3/user?accountId={self.account_id}", "accountId": self.account_id,
               "accountType": self.account_type, "displayName": self.display_name, "active": self.active,
               "timeZone": "Etc/UTC", "locale": "en_US"}
        if self.email_visible:
            out["emailAddress"] = self.email
        return out


def _respell(email: str, rng: random.Random) -> str:
    """The same address in other case, as people type it into different systems."""
    local, _, domain = email.partition("@")
    return rng.choice([email.upper(), local.capitalize() + "@" + domain.upper(), local.title() + "@" + domain])


def accounts_for(tenant, seed: int = 1, share: float = 0.7) -> list[JiraAccount]:
    """The Atlassian accounts of the synthetic world, deterministic for ``tenant`` and ``seed``."""
    rng = random.Random(seed * 7919)
    accounts: list[JiraAccount] = []
    for uid in sorted(tenant.users):
        user = tenant.users[uid]
        mail = user.get("mail")
        if not mail or rng.random() >= share:
            continue
        account = JiraAccount(new_account_id(rng), _respell(mail, rng), user.get("displayName") or mail)
        roll = rng.random()
        account.active = roll >= 0.02
        account.email_visible = not 0.02 <= roll < 0.04
        accounts.append(account)
        if 0.04 <= roll < 0.06:  # an app or customer account with the same address: never a match
            accounts.append(JiraAccount(new_account_id(rng), mail, "Automation for " + (user.get("displayName") or ""),
                                        account_type=rng.choice(["app", "customer"])))
    return accounts


def new_account_id(rng: random.Random | None = None) -> str:
    """An account id in Atlassian's newer form (``712020:<uuid>``)."""
    rng = rng or random.Random()
    hexes = f"{rng.getrandbits(128):032x}"
    return f"712020:{hexes[:8]}-{hexes[8:12]}-{hexes[12:16]}-{hexes[16:20]}-{hexes[20:]}"


def _json(body: object, status: int = 200, headers: dict | None = None) -> Response:
    return Response(orjson.dumps(body), status, headers=headers, mimetype="application/json")


def _error(status: int, message: str, headers: dict | None = None) -> Response:
    return _json({"errorMessages": [message], "errors": {}}, status, headers)


class JiraEmulator(Served):
    """A WSGI app emulating a Jira Cloud site's user search and Assets workspace discovery. Thread-safe."""

    def __init__(self, accounts: list[JiraAccount], workspace_id: str, *, email: str = SITE_EMAIL,
                 token: str = SITE_TOKEN, max_per_second: int = 1000):
        self.accounts = list(accounts)
        self.workspace_id = workspace_id
        self.email, self.token = email, token
        self.max_per_second = max_per_second
        self.requests: list[RecordedRequest] = []
        self._recent: deque[float] = deque()
        self._throttle = (0, "1")
        self._failing = (0, 503, "0")
        self.admin_account_id = new_account_id(random.Random(0))
        self._lock = threading.RLock()

    # -- knobs and inspection -----------------------------------------------------------------------------

    def fail_next(self, count: int, status: int = 503, retry_after: str = "0") -> None:
        """Answer the next ``count`` requests with ``status`` (a site that is down), with ``Retry-After``."""
        with self._lock:
            self._failing = (count, status, retry_after)

    def throttle(self, count: int, retry_after: str = "1") -> None:
        """Answer the next ``count`` requests with 429 and ``Retry-After``."""
        with self._lock:
            self._throttle = (count, retry_after)

    def add_account(self, email: str, display_name: str = "", **kw) -> JiraAccount:
        with self._lock:
            account = JiraAccount(new_account_id(), email, display_name or email, **kw)
            self.accounts.append(account)
            return account

    def account(self, account_id: str) -> JiraAccount | None:
        with self._lock:
            return next((a for a in self.accounts if a.account_id == account_id), None)

    def is_active_account(self, account_id: str) -> bool:
        """For the Assets emulator: a User attribute accepts only existing active accounts."""
        account = self.account(account_id)
        return account is not None and account.active

    def searches(self) -> int:
        with self._lock:
            return sum(1 for r in self.requests if r.path == "/rest/api/3/user/search")

    def reset_log(self) -> None:
        with self._lock:
            self.requests.clear()

    # -- WSGI ---------------------------------------------------------------------------------------------

    def __call__(self, environ: dict, start_response):
        request = Request(environ)
        with self._lock:
            self.requests.append(RecordedRequest(request.method, request.path, request.args.to_dict(),
                                                 dict(request.headers)))
            response = self._respond(request)
        return response(environ, start_response)

    def _limited(self) -> Response | None:
        count, retry_after = self._throttle
        if count > 0:
            self._throttle = (count - 1, retry_after)
            return _error(429, "Rate limit exceeded", {"Retry-After": retry_after})
        now = time.monotonic()
        while self._recent and now - self._recent[0] > 1.0:
            self._recent.popleft()
        if len(self._recent) >= self.max_per_second:
            return _error(429, "Rate limit exceeded", {"Retry-After": "1", "RateLimit-Reason": "jira-burst-based"})
        self._recent.append(now)
        return None

    def _respond(self, request: Request) -> Response:
        count, status, retry_after = self._failing
        if count > 0:
            self._failing = (count - 1, status, retry_after)
            return _error(status, "Service unavailable", {"Retry-After": retry_after})
        limited = self._limited()
        if limited is not None:
            return limited
        expected = "Basic " + base64.b64encode(f"{self.email}:{self.token}".encode()).decode()
        if request.headers.get("Authorization") != expected:
            return _error(401, "Client must be authenticated to access this resource.")
        if request.method != "GET":
            return _error(405, f"{request.method} is not supported here")
        if request.path == "/rest/api/3/user/search":
            return self._search(request)
        if request.path == "/rest/api/3/myself":
            return _json({"self": f"/rest/api/3/user?accountId={self.admin_account_id}",
                          "accountId": self.admin_account_id, "accountType": "atlassian", "emailAddress": self.email,
                          "displayName": "Sandbox admin", "active": True, "timeZone": "Etc/UTC"})
        if request.path == "/rest/servicedeskapi/assets/workspace":
            return _json({"size": 1, "start": 0, "limit": 50, "isLastPage": True,
                          "values": [{"workspaceId": self.workspace_id}]})
        return _error(404, f"No resource at {request.path}")

    def _search(self, request: Request) -> Response:
        query = (request.args.get("query") or "").strip().casefold()
        if not query and not request.args.get("accountId") and not request.args.get("property"):
            return _error(400, "One of 'query', 'accountId' or 'property' is required.")
        try:
            start = int(request.args.get("startAt", "0"))
            limit = int(request.args.get("maxResults", "50"))
        except ValueError:
            return _error(400, "startAt and maxResults must be integers")
        if start < 0 or not 0 < limit <= 1000:
            return _error(400, "startAt must be >= 0 and maxResults between 1 and 1000")
        found = [a for a in self.accounts if a.active and (
            a.email.casefold().startswith(query)
            or any(word.casefold().startswith(query) for word in a.display_name.split()))]
        return _json([a.to_json() for a in found[start:start + limit]])
