"""Credentials for Microsoft Graph: the azure-identity credential the settings name, cached bearer tokens, and
one actionable line for a failed Entra sign-in.
"""
from __future__ import annotations

import re
import threading
import time
from urllib.parse import urlsplit

from shared.errors import GraphCredentialsError
from shared.settings import Settings

# Authority host of each national cloud, keyed by its Graph host (reference/graph.md §6).
_AUTHORITIES = {
    "graph.microsoft.us": "login.microsoftonline.us",
    "dod-graph.microsoft.us": "login.microsoftonline.us",
    "microsoftgraph.chinacloudapi.cn": "login.chinacloudapi.cn",
}
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
