"""Microsoft Graph reader: the one place that pages, and the delta rounds (credentials: graph_auth.py).

Bulk pages are parsed as raw JSON with orjson: msgraph-sdk's typed models cost about 3 ms per object to
deserialize (a 999-user page in ~3 s against ~5 ms for the raw parse - see reference/graph.md §5.10 and
https://github.com/microsoftgraph/msgraph-sdk-python/issues/584), which would make a 100,000-user tenant take
minutes of CPU just to build objects we immediately flatten again.
"""
from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import httpx
import orjson

from shared.clients.transport import Failure, GaveUp, Origin, Transport, classify
from shared.errors import DeltaExpired, GraphCredentialsError, GraphPermissionError, RemoteError

log = logging.getLogger(__name__)

# The least-privileged application permission that reads each resource (reference/graph.md §1.1).
PERMISSIONS = {"users": "User.Read.All", "groups": "GroupMember.Read.All", "devices": "Device.Read.All",
               "servicePrincipals": "Application.Read.All", "applications": "Application.Read.All",
               "subscribedSkus": "Organization.Read.All",  # or LicenseAssignment.Read.All (subscribedsku-list)
               "deviceManagement": "DeviceManagementManagedDevices.Read.All"}
# Graph's 403 for signInActivity in a tenant without Microsoft Entra ID P1/P2: no permission would help.
_NOT_PREMIUM = "authentication_requestfromnonpremiumtenantorb2ctenant"
_RESYNC_CODES = {"syncstatenotfound", "syncstateinvalid", "resyncrequired"}


@dataclass
class DeltaRound:
    """The result of one delta round: iterate ``objects``; afterwards ``delta_link`` holds the new link."""

    objects: Iterator[dict]
    delta_link: str | None = None
    pages: int = 0


@dataclass
class GraphClient:
    """Reads Graph with raw JSON. ``transport`` carries the retry policy; ``token`` yields bearer tokens, which
    go only to the origin of ``base_url`` (the transport is bound to it: links elsewhere raise ``ForeignLink``).
    Safe to use from several threads at once (httpx.Client is; the page count is kept under a lock)."""

    transport: Transport
    base_url: str
    token: Callable[[], str]
    permission_hint: dict[str, str] = field(default_factory=lambda: dict(PERMISSIONS))
    pages_read: int = 0   # pages fetched through ``pages`` (reported by runs and the benchmark)
    # ``pages`` may run in several threads at once (a full run's concurrent reads): the count is kept under it
    _count_lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def __post_init__(self) -> None:
        self.transport.allow(Origin.of(self.base_url, "GRAPH_BASE_URL", "Microsoft Graph"))

    def get(self, url: str, params: dict | None = None, headers: dict | None = None) -> dict:
        """GET one Graph resource (absolute URL or path below ``base_url``) and return its JSON.

        Raises ``GraphCredentialsError`` (401), ``GraphPermissionError`` (403), ``DeltaExpired`` (410 or
        400 syncStateNotFound), ``ForeignLink`` (an absolute URL off GRAPH_BASE_URL's origin: nothing sent) and
        ``RemoteError`` for anything else that is not a success.
        """
        if not url.startswith(("http://", "https://")):
            url = f"{self.base_url}/{url.lstrip('/')}"
        headers = {**(headers or {}), "Authorization": f"Bearer {self.token()}", "Accept": "application/json"}
        try:
            response = self.transport.send("GET", url, params=params, headers=headers)
        except GaveUp as exc:
            raise RemoteError(f"Microsoft Graph kept failing ({exc.answer}) after retries: {exc}") from None
        if classify(response.status_code) is Failure.OK:
            return orjson.loads(response.content)
        raise self._error(response, url)

    def send(self, method: str, url: str, body: dict | None = None, headers: dict | None = None) -> dict | None:
        """Send ``method`` (POST, PATCH, DELETE...) with ``body`` as JSON through the same transport, retries and
        error handling as ``get``; returns the JSON answer, or None for an empty one (204).

        Transient failures are retried by the transport, so a POST may reach Graph twice: callers handle the
        409 of a repeated create. Every error carries Graph's answer in ``http_status``, ``code`` and
        ``detail`` (403 included, so that a quota refusal can be told from a missing permission).
        """
        if not url.startswith(("http://", "https://")):
            url = f"{self.base_url}/{url.lstrip('/')}"
        headers = {**(headers or {}), "Authorization": f"Bearer {self.token()}", "Accept": "application/json"}
        kwargs: dict = {"headers": headers}
        if body is not None:
            kwargs["content"] = orjson.dumps(body)
            headers["Content-Type"] = "application/json"
        try:
            response = self.transport.send(method, url, **kwargs)
        except GaveUp as exc:
            raise RemoteError(f"Microsoft Graph kept failing ({exc.answer}) after retries: {exc}") from None
        if classify(response.status_code) is Failure.OK:
            return orjson.loads(response.content) if response.content.strip() else None
        error = self._error(response, url)
        code, message = _graph_error(response)
        error.http_status, error.code, error.detail = response.status_code, code, message
        raise error

    def pages(self, url: str, params: dict | None = None, headers: dict | None = None) -> Iterator[dict]:
        """Yield every page of a collection, following ``@odata.nextLink`` exactly as returned - on GRAPH_BASE_URL's
        origin only (``ForeignLink`` otherwise, before the link is requested).

        The last page (the one without a nextLink) is yielded too: delta rounds read their deltaLink from it.
        Raises ``RemoteError`` if the server hands back a link it already gave (a paging loop).
        """
        seen: set[str] = set()
        page = self.get(url, params, headers)
        while True:
            with self._count_lock:
                self.pages_read += 1
            yield page
            next_link = page.get("@odata.nextLink")
            if not next_link:
                return
            if next_link in seen:
                raise RemoteError("Microsoft Graph returned the same @odata.nextLink twice (paging loop)")
            seen.add(next_link)
            page = self.get(next_link, headers=headers)

    def delta(self, resource: str, select: list[str], link: str | None = None) -> DeltaRound:
        """Start a delta round on ``resource`` (initial round, or from a stored ``link``).

        Query options go only on the first request; later links carry them (reference/graph.md §2.2).
        """
        round_ = DeltaRound(objects=iter(()))
        params = None if link else {"$select": ",".join(select)}

        def objects() -> Iterator[dict]:
            for page in self.pages(link or f"{resource}/delta", params):
                round_.pages += 1
                yield from page.get("value", ())
                round_.delta_link = page.get("@odata.deltaLink") or round_.delta_link
        round_.objects = objects()
        return round_

    def objects(self, path: str, params: dict | None = None, advanced: bool = False) -> Iterator[dict]:
        """Every object of a collection (all pages). ``advanced`` sends ``ConsistencyLevel: eventual`` and
        ``$count=true``, which Graph requires for ``ne``/``not``/``endsWith`` filters and type casts
        (reference/graph.md §1.4); such queries read an index that may lag recent changes by a little."""
        headers = None
        if advanced:
            params, headers = {**(params or {}), "$count": "true"}, {"ConsistencyLevel": "eventual"}
        for page in self.pages(path, params, headers):
            yield from page.get("value", ())

    def _error(self, response: httpx.Response, url: str) -> Exception:
        code, message = _graph_error(response)
        kind = classify(response.status_code)
        # the first segment names the resource; "applications(appId='...')" is the applications alternate key
        resource = urlsplit(url).path.rsplit("/v1.0/", 1)[-1].split("/", 1)[0].split("(", 1)[0] or "the directory"
        if resource == "deviceManagement" and response.status_code in (401, 403):
            # Intune answers a missing permission with "UnknownError" wrapping "Forbidden", reported as 401 by some
            # (https://github.com/microsoftgraph/microsoft-graph-explorer-v4/issues/706; UNCONFIRMED which one):
            # the token that reads the directory is fine, so either is the Intune permission, not the credentials.
            kind = Failure.PERMISSION
        if kind is Failure.PERMISSION and code.lower() == _NOT_PREMIUM:
            return GraphPermissionError(
                f"Microsoft Graph refused /{resource} (403 {code}): sign-in activity needs a Microsoft Entra ID P1 or "
                "P2 licence in the tenant")
        if kind is Failure.CREDENTIALS:
            return GraphCredentialsError(
                f"Microsoft Graph rejected the credentials (401 {code}): check AZURE_TENANT_ID, AZURE_CLIENT_ID "
                "and the client secret/certificate, or GRAPH_ACCESS_TOKEN")
        if kind is Failure.PERMISSION:
            needed = self.permission_hint.get(resource, "the read permission for " + resource)
            return GraphPermissionError(
                f"Microsoft Graph denied access to /{resource} (403 {code}): the app registration lacks the "
                f"application permission {needed} - add it in Entra > App registrations > (the app) > API "
                "permissions > Add a permission > Microsoft Graph > Application permissions, then 'Grant admin "
                "consent'")
        if response.status_code == 410 or code.lower() in _RESYNC_CODES:
            return DeltaExpired(f"the stored delta link for /{resource} expired ({response.status_code} {code})")
        error = RemoteError(f"Microsoft Graph answered {response.status_code} {code} for /{resource}: {message}")
        error.http_status, error.code, error.detail = response.status_code, code, message
        return error



def _graph_error(response: httpx.Response) -> tuple[str, str]:
    """(code, message) from Graph's error body ``{"error": {"code", "message"}}``, tolerant of other bodies."""
    try:
        error = orjson.loads(response.content).get("error") or {}
        return str(error.get("code") or ""), str(error.get("message") or "")[:300]
    except (orjson.JSONDecodeError, AttributeError):
        return "", ""
