"""Jira Cloud side of user linking (SPEC §5): the site client, a client-side rate limit and the account cache.

Facts this module relies on (checked with the docs; UNCONFIRMED where marked):
- Find users: ``GET {site}/rest/api/3/user/search?query=<text>`` returns a JSON *array* of users; ``query`` is
  matched against ``displayName`` and ``emailAddress`` *by prefix*, so the answer may hold other people and
  must be filtered (https://developer.atlassian.com/cloud/jira/platform/rest/v3/api-group-user-search/).
  Needs the *Browse users and groups* global permission; without it Jira answers an empty list, not 403.
- ``emailAddress`` is shown only when the user's profile visibility allows it
  (https://developer.atlassian.com/cloud/jira/platform/profile-visibility/), so a hidden address means "no
  match" here - never a guess. Only ``accountType == "atlassian"`` (not ``app`` or ``customer``) and
  ``active`` accounts are accepted; the comparison is exact after case folding of the whole address.
- Basic auth with the Atlassian account e-mail and an API token
  (https://developer.atlassian.com/cloud/jira/platform/basic-auth-for-rest-apis/).
- Rate limits: 429 with ``Retry-After`` (seconds) and ``X-RateLimit-*`` headers
  (https://developer.atlassian.com/cloud/jira/platform/rate-limiting/). ``shared.clients.transport`` retries 429 and
  honours ``Retry-After``; on top of it ``TokenBucket`` paces our own requests so that a first run over many
  users does not run into the limit (or starve other integrations of the site) in the first place.
- The Assets workspace id: ``GET {site}/rest/servicedeskapi/assets/workspace`` → ``{"values":
  [{"workspaceId": ...}]}`` (https://developer.atlassian.com/cloud/assets/assets-rest-api-guide/workflow/).

The cache (``AccountCache``) lives in the state store as one checkpoint: keys are a SHA-256 of the
case-folded e-mail (so the state holds no e-mail address), values the account id or "" (no match), the time
of the check and the Entra id of the user it was searched for (entries written before that field existed
have none). Misses are checked again after a day, hits after about 30 days (spread over 30-45 days by the
key, so that a first run's 100,000 entries do not all expire on the same night); ``due`` lists the expired
entries by user id, so that a catch-up can re-check them without reading every stored user
(``shared.jira_links.AccountLinker.sweep``). ``JiraDirectory`` resolves e-mails through the cache, within a budget
of searches per run (and, for catch-ups, of seconds): an e-mail past the budget is ``PENDING`` and keeps its
previous value until a later catch-up or run. So is every e-mail once a search fails: Jira failing degrades
linking only (``JiraDirectory.failure``), never the directory data.
"""
from __future__ import annotations

import base64
import hashlib
import logging
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from urllib.parse import urlsplit

import httpx
import orjson

from shared.clients.transport import Failure, GaveUp, Origin, RetryPolicy, Transport, classify
from shared.errors import EntraAssetsError, RemoteError

MISS_TTL = 24 * 3600.0          # an e-mail without an account is searched again after a day
HIT_TTL = 30 * 24 * 3600.0      # a match is confirmed again after 30-45 days (spread by key)
PENDING = object()              # resolve(): not searched this run (budget spent, Jira failing); keep the previous value

log = logging.getLogger(__name__)


class JiraError(EntraAssetsError):
    """The Jira site refused the linking credentials (401) or a permission (403). ``status`` is the importer
    status shown by ``check``/``status``; ``reason`` the short form for the run history (no advice)."""

    status = "INVALID_CREDENTIALS"

    def __init__(self, message: str, reason: str):
        super().__init__(message)
        self.reason = reason


class AtlassianError(RemoteError):
    """The Jira site or the Assets object API answered something unexpected or kept failing. ``reason`` is
    the one line for the run history: what failed and its status, never the answer's body (a search answer
    may quote the e-mail searched for)."""

    def __init__(self, message: str, reason: str):
        super().__init__(message)
        self.reason = reason


def problem(error: EntraAssetsError) -> str:
    """The one-line, secret- and e-mail-free reason of a linking failure (for the history and ``status``)."""
    return getattr(error, "reason", None) or str(error).splitlines()[0]


class TokenBucket:
    """Client-side rate limit: at most ``rate`` requests a second on average, bursts of ``burst``. Thread-safe;
    ``take`` sleeps until a token is free. ``clock``/``sleep`` are injectable for tests."""

    def __init__(self, rate: float, burst: int = 10, clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep):
        self.rate, self.burst = rate, max(1, burst)
        self._tokens, self._clock, self._sleep = float(self.burst), clock, sleep
        self._last = clock()
        self._lock = threading.Lock()

    def take(self) -> None:
        with self._lock:
            now = self._clock()
            self._tokens = min(self.burst, self._tokens + (now - self._last) * self.rate)
            self._last = now
            self._tokens -= 1
            wait = -self._tokens / self.rate if self._tokens < 0 else 0.0
        if wait:
            self._sleep(wait)


def basic_auth(email: str, token: str) -> str:
    """The ``Authorization`` header value for Atlassian basic auth (e-mail + API token)."""
    return "Basic " + base64.b64encode(f"{email}:{token}".encode()).decode()


def atlassian_call(transport: Transport, bucket: TokenBucket, auth: str, method: str, url: str, *, what: str,
                   forbidden: str, body: object = None, params: dict | None = None,
                   expect: tuple[int, ...] = (200,)) -> object:
    """One paced request with the site user's basic auth, to the Jira site or the Assets object API (``what``
    names it in errors). Raises ``JiraError`` on 401 and on 403 (``forbidden`` says what permission is
    missing), ``ForeignLink`` for a URL off the transport's origins (nothing sent), ``AtlassianError`` on
    anything else unexpected (retries spent, another status, a body that is not JSON). Returns the JSON body
    (None when empty)."""
    bucket.take()
    headers = {"Authorization": auth, "Accept": "application/json"}
    content = None
    if body is not None:
        headers["Content-Type"] = "application/json"
        content = orjson.dumps(body)
    path = urlsplit(url).path
    try:
        response = transport.send(method, url, content=content, headers=headers, params=params)
    except GaveUp as exc:
        reason = f"{what} kept failing ({exc.answer}) after retries"
        raise AtlassianError(reason, reason) from None
    failure = classify(response.status_code)
    if failure is Failure.CREDENTIALS:
        reason = f"{what} rejected JIRA_EMAIL/JIRA_API_TOKEN (401)"
        raise JiraError(f"{reason}: check that JIRA_EMAIL is the e-mail of the Atlassian account that created the "
                        "API token, and create a new token at https://id.atlassian.com/manage-profile/security/"
                        "api-tokens if it was revoked or expired", reason)
    if failure is Failure.PERMISSION:
        reason = f"{what} refused {method} {path} (403)"
        raise JiraError(f"{reason}: {forbidden}", reason)
    if response.status_code not in expect:
        reason = f"{what} answered {response.status_code} to {method} {path}"
        raise AtlassianError(f"{reason}: {response.text[:200]}", reason)
    try:
        return orjson.loads(response.content) if response.content else None
    except orjson.JSONDecodeError:
        reason = f"{what} answered {method} {path} with a body that is not JSON"
        raise AtlassianError(reason, reason) from None


class JiraClient:
    """The Jira site calls linking needs. Raises ``JiraError`` on 401/403 and ``RemoteError`` otherwise. The
    site user's credentials go only to JIRA_SITE_URL's origin (and, through the same transport, the object
    API's ASSETS_API_URL): ``transport`` is bound to it."""

    def __init__(self, transport: Transport, site_url: str, email: str, token: str, bucket: TokenBucket):
        self.transport, self.site_url, self.bucket = transport, site_url.rstrip("/"), bucket
        transport.allow(Origin.of(site_url, "JIRA_SITE_URL", "the Jira site"))
        self._auth = basic_auth(email, token)

    def _get(self, path: str, params: dict | None = None) -> object:
        return atlassian_call(self.transport, self.bucket, self._auth, "GET", f"{self.site_url}{path}",
                              what="the Jira site", params=params,
                              forbidden="the account of JIRA_EMAIL needs the 'Browse users and groups' global "
                                        "permission and Jira Service Management access to Assets")

    def myself(self) -> dict:
        """The account of JIRA_EMAIL (``GET /rest/api/3/myself``): what ``check`` asks to verify the token."""
        found = self._get("/rest/api/3/myself")
        return found if isinstance(found, dict) else {}

    def search_users(self, email: str) -> list[dict]:
        """The users ``/rest/api/3/user/search?query=<email>`` returns (prefix matches; filter with
        ``account_for``). One request; the e-mail goes in the query string only, never in a log line."""
        found = self._get("/rest/api/3/user/search", {"query": email, "maxResults": "20"})
        return [u for u in found if isinstance(u, dict)] if isinstance(found, list) else []

    def workspace_id(self) -> str:
        """The site's Assets workspace id. Raises ``RemoteError`` when the site has no Assets (JSM Premium)."""
        body = self._get("/rest/servicedeskapi/assets/workspace")
        values = body.get("values") if isinstance(body, dict) else None
        if not values or not isinstance(values[0], dict) or not values[0].get("workspaceId"):
            reason = "the Jira site lists no Assets workspace"
            raise AtlassianError(f"{reason}: Assets needs Jira Service Management Premium or Enterprise on "
                                 "JIRA_SITE_URL", reason)
        return str(values[0]["workspaceId"])


def account_for(users: Iterable[dict], email: str) -> str | None:
    """The account id of the one active Atlassian account whose visible ``emailAddress`` equals ``email``
    (case-insensitive), else None. Two such accounts (should not happen) count as no match. Pure."""
    wanted = email.strip().casefold()
    found = {u.get("accountId") for u in users
             if u.get("accountType") == "atlassian" and u.get("active") is True and u.get("accountId")
             and isinstance(u.get("emailAddress"), str) and u["emailAddress"].strip().casefold() == wanted}
    return found.pop() if len(found) == 1 else None


def email_key(email: str) -> str:
    """The cache key of an e-mail: the first 32 hex digits of SHA-256 of the case-folded address."""
    return hashlib.sha256(email.strip().casefold().encode()).hexdigest()[:32]


class AccountCache:
    """``email key -> [account id or "", checked at (epoch s), Entra id searched for]``, loaded from and dumped
    to one checkpoint. Entries from before the Entra id was kept have two items; they are read the same."""

    def __init__(self, raw: str | None):
        self.entries: dict[str, list] = orjson.loads(raw) if raw else {}
        self.changed = False

    @staticmethod
    def _fresh(key: str, account: str | None, checked: float, now: float) -> bool:
        ttl = MISS_TTL if account is None else HIT_TTL * (1 + int(key[:4], 16) / 0xFFFF / 2)
        return now - checked < ttl

    def get(self, key: str, now: float) -> tuple[str | None, bool] | None:
        """(account or None, still fresh) for a cached key, or None when never checked."""
        entry = self.entries.get(key)
        if entry is None:
            return None
        account, checked = entry[0] or None, float(entry[1])
        return account, self._fresh(key, account, checked, now)

    def put(self, key: str, account: str | None, now: float, owner: str | None = None) -> None:
        """Record a search's answer; ``owner`` is the Entra id of the user searched for (what ``due`` lists)."""
        self.entries[key] = [account or "", round(now)] + ([owner] if owner else [])
        self.changed = True

    def forget(self, key: str) -> None:
        """Drop an entry (its user left, or its e-mail changed): a later lookup of the address searches again."""
        if self.entries.pop(key, None) is not None:
            self.changed = True

    def due(self, now: float) -> list[tuple[str, str]]:
        """(key, Entra id) of the expired entries that name their user, the longest expired first. A pass over
        the entries in memory (about 0.1 s for 100,000): no stored user is read to find them."""
        expired = [(float(entry[1]), key, entry[2]) for key, entry in self.entries.items()
                   if len(entry) > 2 and entry[2] and not self._fresh(key, entry[0] or None, float(entry[1]), now)]
        expired.sort()
        return [(key, owner) for _, key, owner in expired]

    def dump(self) -> str:
        return orjson.dumps(self.entries).decode()


class JiraDirectory:
    """E-mail → Atlassian account id, through the cache, at most ``budget`` searches per run (per instance) and,
    with a ``time_limit``, no search started more than that many seconds after the first one.

    Jira failing never fails the run (DESIGN "fail apart"): the first search that raises - a rejected token,
    a missing permission, a site that keeps failing or times out, a foreign link - ends this instance's
    searches (``failure`` holds its one-line reason), and every e-mail not answered by a fresh cache entry is
    PENDING: its user keeps what it had, never an empty account that Jira did not say."""

    def __init__(self, client: JiraClient | None, cache: AccountCache, budget: int,
                 clock: Callable[[], float] = time.time, time_limit: float | None = None,
                 monotonic: Callable[[], float] = time.monotonic):
        self.client, self.cache, self.budget, self.clock = client, cache, budget, clock
        self.time_limit, self._monotonic, self._started = time_limit, monotonic, None
        self.searched = 0
        self.failure: str | None = None  # why searching stopped early (shared.clients.jira.problem), None while it works

    def remaining(self) -> int:
        """Searches this instance may still make (0 once the budget or the time limit is spent, or Jira failed)."""
        if self.client is None or self.failure is not None:
            return 0
        if self._started is not None and self.time_limit is not None \
                and self._monotonic() - self._started >= self.time_limit:
            return 0
        return max(0, self.budget - self.searched)

    def resolve(self, emails: Iterable[str], owners: Mapping[str, str] | None = None) -> dict[str, object]:
        """``{email: account id | None | PENDING}`` for each e-mail: fresh cache entries as they are, others
        searched while the budget lasts (the result cached, with ``owners[email]``, the Entra id searched for),
        the rest PENDING - stale entries too once a search failed. Never raises for a Jira failure."""
        now = self.clock()
        out: dict[str, object] = {}
        for email in emails:
            key = email_key(email)
            cached = self.cache.get(key, now)
            if cached is not None and cached[1]:
                out[email] = cached[0]
            elif self.remaining() > 0:
                out[email] = self._search(email, key, now, (owners or {}).get(email))
            elif self.failure is None:
                # Budget spent: a stale entry is still the best value we have; with none, the caller keeps its own.
                out[email] = cached[0] if cached is not None else PENDING
            else:
                out[email] = PENDING
        return out

    def _search(self, email: str, key: str, now: float, owner: str | None) -> object:
        if self._started is None:
            self._started = self._monotonic()
        self.searched += 1
        try:
            found = self.client.search_users(email)
        except EntraAssetsError as error:
            self.failure = problem(error)
            log.warning("Jira lookups stopped for this run, accounts kept as they were: %s", self.failure)
            return PENDING
        account = account_for(found, email)
        self.cache.put(key, account, now, owner)
        return account


def jira_client(settings, http: httpx.Client, sleep: Callable[[float], None] = time.sleep,
                policy: RetryPolicy | None = None) -> JiraClient:
    """A client for the configured site (``settings.jira_enabled`` must be true)."""
    bucket = TokenBucket(settings.jira_requests_per_second, burst=max(1, int(settings.jira_requests_per_second)),
                         sleep=sleep)
    return JiraClient(Transport(http, policy or RetryPolicy(), sleep=sleep), settings.jira_site_url, settings.jira_email,
                      settings.jira_api_token.reveal(), bucket)
