"""Microsoft Graph reader: credentials, the one place that pages, and the user delta round.

Bulk pages are parsed as raw JSON with orjson: msgraph-sdk's typed models cost about 3 ms per object to
deserialize (a 999-user page in ~3 s against ~5 ms for the raw parse - see reference/graph.md §5.10 and
https://github.com/microsoftgraph/msgraph-sdk-python/issues/584), which would make a 100,000-user tenant take
minutes of CPU just to build objects we immediately flatten again.
"""
from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import httpx
import orjson

from shared.errors import DeltaExpired, GraphCredentialsError, GraphPermissionError, RemoteError
from shared.settings import Settings
from shared.transport import Failure, GaveUp, Origin, Transport, classify

log = logging.getLogger(__name__)

# Authority host of each national cloud, keyed by its Graph host (reference/graph.md §6).
_AUTHORITIES = {
    "graph.microsoft.us": "login.microsoftonline.us",
    "dod-graph.microsoft.us": "login.microsoftonline.us",
    "microsoftgraph.chinacloudapi.cn": "login.chinacloudapi.cn",
}
# The least-privileged application permission that reads each resource (reference/graph.md §1.1).
PERMISSIONS = {"users": "User.Read.All", "groups": "GroupMember.Read.All", "devices": "Device.Read.All",
               "servicePrincipals": "Application.Read.All", "applications": "Application.Read.All"}
_RESYNC_CODES = {"syncstatenotfound", "syncstateinvalid", "resyncrequired"}
# Hosts MSAL knows (msal/authority.py WELL_KNOWN_AUTHORITY_HOSTS, the ones of reference/graph.md §6).
_MICROSOFT_AUTHORITIES = {"login.microsoftonline.com", "login.microsoft.com", "login.windows.net",
                          "login.microsoftonline.us", "login.chinacloudapi.cn", "login.partner.microsoftonline.cn"}


class TokenProvider:
    """Bearer tokens for Graph: a fixed token, or an azure-identity credential with caching."""

    def __init__(self, settings: Settings):
        self._settings = settings
        self._credential = None
        self._token: str | None = None
        self._expires = 0.0
        self._lock = threading.Lock()

    @property
    def scope(self) -> str:
        """``https://<graph host>/.default`` - explicit, so national clouds and emulators get the right one."""
        parts = urlsplit(self._settings.graph_base_url)
        return f"{parts.scheme}://{parts.netloc}/.default"

    def __call__(self) -> str:
        s = self._settings
        if s.graph_access_token:
            return s.graph_access_token.reveal()
        with self._lock:
            if self._token is None or time.time() > self._expires - 300:
                try:
                    token = self._get_credential().get_token(self.scope)
                except Exception as exc:  # noqa: BLE001 - azure-identity raises several types; all mean "no token"
                    raise GraphCredentialsError(sign_in_failure(s, exc)) from None
                self._token, self._expires = token.token, token.expires_on
            return self._token

    def _get_credential(self):
        if self._credential is None:
            self._credential = build_credential(self._settings)
        return self._credential


def build_credential(settings: Settings):
    """The azure-identity credential for the settings: client secret, certificate, or (with neither)
    ``DefaultAzureCredential`` - managed identity, workload identity or a developer's Azure CLI login.

    The authority is AZURE_AUTHORITY_HOST when set (azure-identity's own variable), else the one of the cloud
    that GRAPH_BASE_URL names. MSAL validates an authority it does not know by asking
    login.microsoftonline.com ("instance discovery"), which fails for private authorities (Azure Stack, the
    sandbox's identity emulator): for those it is turned off, as azure-identity's docs advise."""
    from azure import identity

    host = urlsplit(settings.graph_base_url).hostname or ""
    authority = settings.authority_host or _AUTHORITIES.get(host, identity.AzureAuthorityHosts.AZURE_PUBLIC_CLOUD)
    known = (urlsplit(authority).hostname or authority) in _MICROSOFT_AUTHORITIES
    options = {"authority": authority} | ({} if known else {"disable_instance_discovery": True})
    if settings.client_secret:
        return identity.ClientSecretCredential(settings.tenant_id, settings.client_id,
                                               settings.client_secret.reveal(), **options)
    if settings.client_certificate_path:
        password = settings.client_certificate_password
        return identity.CertificateCredential(
            settings.tenant_id, settings.client_id, str(settings.client_certificate_path),
            password=password.reveal() if password else None, **options)
    return identity.DefaultAzureCredential(managed_identity_client_id=settings.client_id,
                                           exclude_interactive_browser_credential=True, **options)


_PORTAL_APP = "Entra > App registrations > (the app)"
# What an admin does about each Entra sign-in error (https://learn.microsoft.com/entra/identity-platform/
# reference-error-codes); {app} is the client id, {tenant} the tenant id - neither is a secret.
_SIGN_IN_ERRORS = {
    "7000215": "the client secret of app {app} is wrong (AADSTS7000215): copy the secret's Value - not its "
               f"Secret ID - from {_PORTAL_APP} > Certificates & secrets (or create a new secret there) into "
               "AZURE_CLIENT_SECRET",
    "7000222": "the client secret of app {app} has expired (AADSTS7000222): create a new secret in "
               f"{_PORTAL_APP} > Certificates & secrets and update AZURE_CLIENT_SECRET",
    "700016": "there is no app with client id {app} in tenant {tenant} (AADSTS700016): check AZURE_CLIENT_ID "
              f"(the Application (client) ID in {_PORTAL_APP} > Overview) and AZURE_TENANT_ID",
    "90002": "tenant {tenant} was not found (AADSTS90002): check AZURE_TENANT_ID (Entra > Overview > Tenant ID) "
             "and, for a national cloud, GRAPH_BASE_URL and AZURE_AUTHORITY_HOST",
    "700027": "the certificate of app {app} was refused (AADSTS700027: not uploaded to the app, or expired): "
              f"upload its public part in {_PORTAL_APP} > Certificates & secrets, or renew it, and update "
              "AZURE_CLIENT_CERTIFICATE_PATH",
    "500011": "the Microsoft Graph of GRAPH_BASE_URL is not known to tenant {tenant} (AADSTS500011): use the "
              "Graph of the tenant's cloud",
}
_SIGN_IN_ERRORS["700024"] = _SIGN_IN_ERRORS["700027"]
_AADSTS = re.compile(r"AADSTS(\d+)")


def sign_in_failure(settings: Settings, exc: BaseException) -> str:
    """One actionable line for a failed Entra sign-in, from the AADSTS code in ``exc`` or its chain (MSAL
    chains the server's answer, e.g. a failed tenant discovery). Never includes the exception's text, which
    could carry more than a code."""
    code, seen = None, exc
    while seen is not None and code is None:
        match = _AADSTS.search(str(seen))
        code, seen = (match.group(1) if match else None), seen.__cause__ or seen.__context__
    names = {"app": settings.client_id or "(AZURE_CLIENT_ID unset)", "tenant": settings.tenant_id or "(unset)"}
    if code in _SIGN_IN_ERRORS:
        return _SIGN_IN_ERRORS[code].format(**names)
    if code:
        return (f"Entra refused the sign-in of app {names['app']} (AADSTS{code}): see "
                f"https://login.microsoftonline.com/error?code={code}")
    return (f"could not get a Microsoft Graph token with the {settings.graph_auth} credential "
            f"({type(exc).__name__}): check AZURE_TENANT_ID, AZURE_CLIENT_ID and the credential")


@dataclass
class DeltaRound:
    """The result of one delta round: iterate ``objects``; afterwards ``delta_link`` holds the new link."""

    objects: Iterator[dict]
    delta_link: str | None = None
    pages: int = 0


@dataclass
class GraphClient:
    """Reads Graph with raw JSON. ``transport`` carries the retry policy; ``token`` yields bearer tokens, which
    go only to the origin of ``base_url`` (the transport is bound to it: links elsewhere raise ``ForeignLink``)."""

    transport: Transport
    base_url: str
    token: Callable[[], str]
    permission_hint: dict[str, str] = field(default_factory=lambda: dict(PERMISSIONS))
    pages_read: int = 0   # pages fetched through ``pages`` (reported by runs and the benchmark)

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
