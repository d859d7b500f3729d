"""A strict emulator of the Microsoft Entra token endpoint (v2.0, client credentials), over TLS on loopback.

MSAL - under azure-identity's ``ClientSecretCredential`` and ``CertificateCredential`` - only talks to https
authorities, so this emulator serves TLS with certificates from ``trustme`` (a throw-away test CA; clients
trust it through ``REQUESTS_CA_BUNDLE``, set in a test's environment only). What MSAL requests, read from
msal/authority.py and msal/application.py (msal 1.39):

- ``GET /{tenant}/v2.0/.well-known/openid-configuration`` (tenant discovery). Instance discovery would go to
  login.microsoftonline.com, so credentials aimed at a non-Microsoft authority host pass
  ``disable_instance_discovery=True`` (shared/clients/graph_auth.py ``build_credential``).
- ``POST /{tenant}/oauth2/v2.0/token`` with ``grant_type=client_credentials``, ``client_id``, ``scope``
  (``{resource}/.default``) and ``client_secret``, or ``client_assertion`` (a JWT signed with the certificate's
  key, RS256 with ``x5t`` = SHA-1 thumbprint as azure-identity sends it, or PS256 with ``x5t#S256``).

Answers are shaped like Entra's (https://learn.microsoft.com/entra/identity-platform/reference-error-codes):
``{"error", "error_description": "AADSTS<code>: ... Trace ID: ... Correlation ID: ... Timestamp: ...",
"error_codes": [<code>], "timestamp", "trace_id", "correlation_id", "error_uri"}``. Strict:
unknown tenant -> 400 invalid_request AADSTS90002 (also on the discovery document); unknown client -> 400
unauthorized_client AADSTS700016; wrong secret -> 401 invalid_client AADSTS7000215; expired secret -> 401
invalid_client AADSTS7000222; unknown or expired certificate, bad assertion signature -> 401 invalid_client
AADSTS700027; scope without ``/.default`` or of an unknown resource -> 400 invalid_scope AADSTS1002012 /
AADSTS500011; another grant type -> 400 unsupported_grant_type AADSTS70003; a missing parameter -> 400
invalid_request AADSTS900144.

Tokens are JWTs signed with a per-emulator HMAC key (HS256) carrying ``aud`` (the resource), ``tid``, ``appid``
and ``roles`` (the application permissions granted to the app with admin consent, ``grant``/``revoke``).
``attach(graph)`` makes the Graph emulator accept them: 401 InvalidAuthenticationToken for a bad, foreign or
expired token, 403 Authorization_RequestDenied when the token lacks every permission that can read the
resource (``GRAPH_PERMISSIONS``, from the Graph API pages' permission tables; Intune's own body for
``/deviceManagement``); ``authorize`` returns the claims, whose roles the Graph emulator checks for
property-level permissions (``signInActivity`` needs AuditLog.Read.All).

UNCONFIRMED (emulator choices): the HTTP status of each error (401 for invalid_client, 400 otherwise); the
exact wording of the descriptions (taken from error messages quoted in public issues); AADSTS700027 for an
expired certificate; AADSTS50027 for an assertion with a wrong audience or issuer; which permissions read
``/subscriptions`` and ``/organization`` (not gated here).
"""
from __future__ import annotations

import base64
import datetime as dt
import hashlib
import hmac
import secrets
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import jwt
import orjson
from cheroot import wsgi
from cheroot.ssl.builtin import BuiltinSSLAdapter
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID
from werkzeug.wrappers import Request, Response

from sandbox.graph import intune
from sandbox.graph.directory import GraphError
from sandbox.http import RecordedRequest

_READ_DIRECTORY = frozenset({"Directory.Read.All", "Directory.ReadWrite.All"})
# Application permissions that can read each Graph resource (least privileged first, then the broader ones).
GRAPH_PERMISSIONS: dict[str, frozenset[str]] = {
    "users": frozenset({"User.Read.All", "User.ReadWrite.All"}) | _READ_DIRECTORY,
    "groups": frozenset({"GroupMember.Read.All", "Group.Read.All", "Group.ReadWrite.All"}) | _READ_DIRECTORY,
    "devices": frozenset({"Device.Read.All", "Device.ReadWrite.All"}) | _READ_DIRECTORY,
    "servicePrincipals": frozenset({"Application.Read.All", "Application.ReadWrite.All"}) | _READ_DIRECTORY,
    "applications": frozenset({"Application.Read.All", "Application.ReadWrite.All"}) | _READ_DIRECTORY,
    # https://learn.microsoft.com/graph/api/subscribedsku-list (permissions table)
    "subscribedSkus": frozenset({"LicenseAssignment.Read.All", "Organization.Read.All",
                                 "Organization.ReadWrite.All"}) | _READ_DIRECTORY,
    # https://learn.microsoft.com/graph/api/intune-devices-manageddevice-list: Intune's own permissions only
    "deviceManagement": intune.PERMISSIONS,
}
# What the sandbox's sync app is granted by default. AuditLog.Read.All reads users' signInActivity (checked by the
# Graph emulator per request, sandbox/graph/signins.py: it is a property, not a resource); tests revoke roles.
SYNC_APP_ROLES = ("User.Read.All", "GroupMember.Read.All", "Device.Read.All", "Application.Read.All",
                  "Organization.Read.All", "DeviceManagementManagedDevices.Read.All", "AuditLog.Read.All")
_ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"


def _iso(moment: dt.datetime) -> str:
    return moment.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _parse_iso(value: str) -> dt.datetime:
    return dt.datetime.fromisoformat(value).astimezone(dt.UTC)


class _Rejected(Exception):
    """An error answer of the token endpoint."""

    def __init__(self, status: int, error: str, code: int, description: str):
        super().__init__(description)
        self.status, self.error, self.code, self.description = status, error, code, description


@dataclass
class _Secret:
    key_id: str
    digest: bytes  # SHA-256 of the secret text: the emulator never keeps the secret itself


@dataclass
class _Certificate:
    key_id: str
    certificate: x509.Certificate

    def matches(self, header: dict) -> bool:
        sha1 = jwt.utils.base64url_encode(self.certificate.fingerprint(hashes.SHA1())).decode()
        sha256 = jwt.utils.base64url_encode(self.certificate.fingerprint(hashes.SHA256())).decode()
        # MSAL keeps base64's "=" padding (msal/oauth2cli/assertion.py), RFC 7515 drops it: accept both
        return str(header.get("x5t", "")).rstrip("=") == sha1 or str(header.get("x5t#S256", "")).rstrip("=") == sha256


@dataclass
class _Client:
    """What Entra knows of an app registration beyond its Graph object: secret digests, certificates, roles."""

    app_id: str
    roles: set[str] = field(default_factory=set)
    secrets: list[_Secret] = field(default_factory=list)
    certificates: list[_Certificate] = field(default_factory=list)


class IdentityEmulator:
    """A WSGI app answering Entra's v2.0 discovery and token endpoints for one ``Tenant``'s app registrations.

    ``start()`` serves it over TLS; ``ca_file`` is the PEM of the CA to trust. Thread-safe."""

    def __init__(self, tenant, *, token_ttl: float = 3600):
        self.tenant = tenant
        self.token_ttl = token_ttl
        self.url = ""
        self.ca_file: Path | None = None
        self.requests: list[RecordedRequest] = []
        self._key = secrets.token_bytes(32)
        self._clients: dict[str, _Client] = {}
        self._resources: set[str] = set()
        self._lock = threading.RLock()
        self._server: wsgi.Server | None = None
        self._thread: threading.Thread | None = None
        self._dir: tempfile.TemporaryDirectory | None = None

    # -- lifecycle --------------------------------------------------------------------------------------

    def start(self, host: str = "127.0.0.1", port: int = 0) -> IdentityEmulator:
        """Serve over TLS on ``host:port`` (0 = a free port) with a certificate of a fresh test CA."""
        import trustme  # test-only dependency: the sandbox's other emulators do not need it

        self._dir = tempfile.TemporaryDirectory(prefix="identity-emulator-")
        folder = Path(self._dir.name)
        ca = trustme.CA()
        issued = ca.issue_cert(host, "localhost")
        self.ca_file = folder / "ca.pem"
        ca.cert_pem.write_to_path(str(self.ca_file))
        issued.private_key_pem.write_to_path(str(folder / "key.pem"))
        issued.cert_chain_pems[0].write_to_path(str(folder / "cert.pem"))
        server = wsgi.Server((host, port), self, numthreads=4, shutdown_timeout=1)
        server.ssl_adapter = BuiltinSSLAdapter(str(folder / "cert.pem"), str(folder / "key.pem"))
        server.expiration_interval = 0.02
        server.prepare()
        self._server = server
        self._thread = threading.Thread(target=server.serve, name="identity-emulator", daemon=True)
        self._thread.start()
        self.url = f"https://{host}:{server.bind_addr[1]}"
        return self

    def stop(self) -> None:
        """Stop serving and delete the certificates (idempotent)."""
        if self._server:
            self._server.stop()
            self._thread.join(timeout=10)
            self._server = None
        if self._dir:
            self._dir.cleanup()
            self._dir = None

    # -- the directory side: registrations, credentials, consent -------------------------------------------

    def application(self, app_id: str) -> dict:
        """The tenant's app registration (Graph ``application``) with this appId; KeyError when there is none."""
        with self.tenant.lock:
            for app in self.tenant.applications.values():
                if app["appId"] == app_id:
                    return app
        raise KeyError(app_id)

    def sync_app_id(self) -> str:
        """The appId of the tenant's "Entra Assets sync" registration (sandbox/tenant/generator.py)."""
        with self.tenant.lock:
            return next(a["appId"] for a in self.tenant.applications.values()
                        if a["displayName"] == "Entra Assets sync")

    def _client(self, app_id: str) -> _Client:
        self.application(app_id)
        return self._clients.setdefault(app_id, _Client(app_id))

    def grant(self, app_id: str, *roles: str) -> None:
        """Grant application permissions (with admin consent); tokens issued from now on carry them."""
        with self._lock:
            self._client(app_id).roles.update(roles)

    def revoke(self, app_id: str, *roles: str) -> None:
        """Remove application permissions; tokens already issued keep theirs until they expire (as in Entra)."""
        with self._lock:
            self._client(app_id).roles.difference_update(roles)

    def add_secret(self, app_id: str, expires: dt.datetime, display_name: str = "entra-assets") -> str:
        """Add a client secret ending at ``expires`` (Graph ``addPassword``) and return its text, which - as in
        Entra - is shown only here: the registration keeps its ``hint`` (first three characters) and dates."""
        text = secrets.token_urlsafe(30)
        key_id = str(uuid.uuid4())
        with self._lock, self.tenant.lock:
            self._client(app_id).secrets.append(_Secret(key_id, hashlib.sha256(text.encode()).digest()))
            self.application(app_id)["passwordCredentials"].append({
                "customKeyIdentifier": None, "displayName": display_name, "endDateTime": _iso(expires),
                "hint": text[:3], "keyId": key_id, "secretText": None,
                "startDateTime": _iso(dt.datetime.now(dt.UTC))})
        return text

    def add_certificate(self, app_id: str, expires: dt.datetime, folder: Path) -> Path:
        """Create a self-signed certificate ending at ``expires``, upload its public part to the registration
        (``keyCredentials``, ``customKeyIdentifier`` = the SHA-1 thumbprint) and write key + certificate as one
        PEM file in ``folder`` (what AZURE_CLIENT_CERTIFICATE_PATH points at). Returns the file."""
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "entra-assets")])
        start = min(dt.datetime.now(dt.UTC), expires) - dt.timedelta(days=1)
        cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
                .serial_number(x509.random_serial_number()).not_valid_before(start).not_valid_after(expires)
                .sign(key, hashes.SHA256()))
        path = folder / f"{uuid.uuid4().hex[:8]}.pem"
        path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()) + cert.public_bytes(serialization.Encoding.PEM))
        key_id = str(uuid.uuid4())
        der = cert.public_bytes(serialization.Encoding.DER)
        with self._lock, self.tenant.lock:
            self._client(app_id).certificates.append(_Certificate(key_id, cert))
            self.application(app_id)["keyCredentials"].append({
                # Graph's Binary type is base64 in JSON: the SHA-1 thumbprint's 20 bytes (UNCONFIRMED: portals
                # show the thumbprint as hex; shared/admin/credential_expiry.py accepts both)
                "customKeyIdentifier": _b64(cert.fingerprint(hashes.SHA1())),
                "displayName": "CN=entra-assets", "endDateTime": _iso(expires), "key": _b64(der),
                "keyId": key_id, "startDateTime": _iso(start), "type": "AsymmetricX509Cert", "usage": "Verify"})
        return path

    # -- the resource side: Graph accepts our tokens -----------------------------------------------------------

    def attach(self, graph) -> None:
        """Make ``graph`` (a started GraphEmulator) a resource of this tenant and accept this emulator's tokens."""
        parts = urlsplit(graph.base_url)
        with self._lock:
            self._resources.add(f"{parts.scheme}://{parts.netloc}")
        graph.authorizer = self.authorize

    def authorize(self, authorization: str, path: str) -> dict:
        """Check a Graph request's ``Authorization`` header for ``path``; raises GraphError 401 or 403 (Intune's
        own 403 body under ``/deviceManagement``), else returns the token's claims (``appid``, ``roles``: the
        Graph emulator checks property-level permissions such as AuditLog.Read.All with them)."""
        token = authorization[7:].strip() if authorization.startswith("Bearer ") else ""
        try:
            claims = jwt.decode(token, self._key, algorithms=["HS256"], audience=sorted(self._resources),
                                issuer=f"https://sts.windows.net/{self.tenant.tenant_id}/")
        except jwt.ExpiredSignatureError:
            raise GraphError(401, "InvalidAuthenticationToken", "Lifetime validation failed, the token is expired.",
                             {"WWW-Authenticate": 'Bearer realm=""'}) from None
        except jwt.InvalidAudienceError:
            raise GraphError(401, "InvalidAuthenticationToken", "Access token validation failure. Invalid audience.",
                             {"WWW-Authenticate": 'Bearer realm=""'}) from None
        except jwt.PyJWTError:
            raise GraphError(401, "InvalidAuthenticationToken", "Access token validation failure.",
                             {"WWW-Authenticate": 'Bearer realm=""'}) from None
        segment = path.removeprefix("/v1.0/").split("/", 1)[0].split("(", 1)[0]
        accepted = GRAPH_PERMISSIONS.get(segment)
        if accepted is not None and not accepted & set(claims.get("roles") or ()):
            if segment == "deviceManagement":
                raise intune.forbidden(path)
            raise GraphError(403, "Authorization_RequestDenied", "Insufficient privileges to complete the operation.")
        return claims

    # -- WSGI -------------------------------------------------------------------------------------------------

    def __call__(self, environ: dict, start_response):
        request = Request(environ)
        form = request.form.to_dict() if request.method == "POST" else {}
        with self._lock:
            # the form is recorded without the credential: tests assert what reached us, never a secret
            safe = {k: ("***" if k in ("client_secret", "client_assertion") else v) for k, v in form.items()}
            self.requests.append(RecordedRequest(request.method, request.path, request.args.to_dict(),
                                                 dict(request.headers), json=safe))
        segments = [s for s in request.path.split("/") if s]
        try:
            if request.method == "GET" and segments[1:] == ["v2.0", ".well-known", "openid-configuration"]:
                response = self._discovery(segments[0])
            elif request.method == "POST" and segments[1:] == ["oauth2", "v2.0", "token"]:
                response = self._token(segments[0], form, request)
            else:
                raise _Rejected(404, "invalid_request", 90027, "The requested endpoint does not exist.")
        except _Rejected as exc:
            response = self._error(exc, request)
        return response(environ, start_response)

    def _known_tenant(self, tenant: str) -> None:
        if tenant.lower() != self.tenant.tenant_id.lower():
            raise _Rejected(400, "invalid_tenant" if tenant else "invalid_request", 90002,
                            f"Tenant '{tenant}' not found. Check to make sure you have the correct tenant ID and are "
                            "signing into the correct cloud.")

    def _discovery(self, tenant: str) -> Response:
        self._known_tenant(tenant)
        tid = self.tenant.tenant_id
        base = f"{self.url}/{tid}"
        return _json({"token_endpoint": f"{base}/oauth2/v2.0/token", "authorization_endpoint":
                      f"{base}/oauth2/v2.0/authorize", "issuer": f"{base}/v2.0", "jwks_uri":
                      f"{self.url}/{tid}/discovery/v2.0/keys", "tenant_region_scope": "EU",
                      "token_endpoint_auth_methods_supported": ["client_secret_post", "private_key_jwt",
                                                                "client_secret_basic"],
                      "response_types_supported": ["code", "id_token", "code id_token", "id_token token"],
                      "scopes_supported": ["openid", "profile", "email", "offline_access"]})

    def _token(self, tenant: str, form: dict, request: Request) -> Response:
        self._known_tenant(tenant)
        for name in ("grant_type", "client_id", "scope"):
            if not form.get(name):
                raise _Rejected(400, "invalid_request", 900144,
                                f"The request body must contain the following parameter: '{name}'.")
        if form["grant_type"] != "client_credentials":
            raise _Rejected(400, "unsupported_grant_type", 70003, "The app requested an unsupported grant type "
                            f"'{form['grant_type']}'.")
        app_id = form["client_id"]
        with self._lock:
            try:
                app = self.application(app_id)
            except KeyError:
                raise _Rejected(400, "unauthorized_client", 700016, f"Application with identifier '{app_id}' was "
                                f"not found in the directory '{self.tenant.tenant_id}'. This can happen if the "
                                "application has not been installed by the administrator of the tenant or "
                                "consented to by any user in the tenant. You may have sent your authentication "
                                "request to the wrong tenant.") from None
            client = self._client(app_id)
            resource = self._resource(form["scope"])
            if "client_assertion" in form:
                self._check_assertion(app, client, form, request)
            else:
                self._check_secret(app, client, form.get("client_secret") or "")
            roles = sorted(client.roles)
        now = int(time.time())
        claims = {"aud": resource, "iss": f"https://sts.windows.net/{self.tenant.tenant_id}/", "iat": now,
                  "nbf": now, "exp": now + int(self.token_ttl), "appid": app_id, "tid": self.tenant.tenant_id,
                  "idtyp": "app", "roles": roles, "ver": "1.0"}
        token = jwt.encode(claims, self._key, algorithm="HS256")
        return _json({"token_type": "Bearer", "expires_in": int(self.token_ttl),
                      "ext_expires_in": int(self.token_ttl), "access_token": token})

    def _resource(self, scope: str) -> str:
        scopes = scope.split()
        if len(scopes) != 1 or not scopes[0].endswith("/.default"):
            raise _Rejected(400, "invalid_scope", 1002012, f"The provided value for scope {scope} is not valid. "
                            "Client credential flows must have a scope value with /.default suffixed to the "
                            "resource identifier (application ID URI).")
        resource = scopes[0].removesuffix("/.default")
        if resource not in self._resources:
            raise _Rejected(400, "invalid_resource", 500011, f"The resource principal named {resource} was not "
                            f"found in the tenant named {self.tenant.tenant_id}.")
        return resource

    def _check_secret(self, app: dict, client: _Client, text: str) -> None:
        digest = hashlib.sha256(text.encode()).digest()
        match = next((s for s in client.secrets if hmac.compare_digest(s.digest, digest)), None)
        ends = {c["keyId"]: c["endDateTime"] for c in app["passwordCredentials"]}
        if match is None or match.key_id not in ends:  # unknown, or removed from the registration
            raise _Rejected(401, "invalid_client", 7000215, "Invalid client secret provided. Ensure the secret being "
                            "sent in the request is the client secret value, not the client secret ID, for a secret "
                            f"added to app '{client.app_id}'.")
        if _parse_iso(ends[match.key_id]) <= dt.datetime.now(dt.UTC):
            raise _Rejected(401, "invalid_client", 7000222, f"The provided client secret keys for app "
                            f"'{client.app_id}' are expired. Visit the Azure portal to create new keys for your app: "
                            "https://aka.ms/NewClientSecret, or consider using certificate credentials for added "
                            "security: https://aka.ms/certCreds.")

    def _check_assertion(self, app: dict, client: _Client, form: dict, request: Request) -> None:
        if form.get("client_assertion_type") != _ASSERTION_TYPE:
            raise _Rejected(400, "invalid_request", 900144, "The request body must contain the following parameter: "
                            f"'client_assertion_type' with the value '{_ASSERTION_TYPE}'.")
        assertion = form["client_assertion"]
        try:
            header = jwt.get_unverified_header(assertion)
        except jwt.PyJWTError:
            raise _Rejected(401, "invalid_client", 50027, "JWT token is invalid or malformed.") from None
        ends = {c["keyId"]: c["endDateTime"] for c in app["keyCredentials"]}
        cert = next((c for c in client.certificates if c.matches(header) and c.key_id in ends), None)
        if cert is None:
            raise _Rejected(401, "invalid_client", 700027, "Client assertion contains an invalid signature. "
                            "[Reason - The key was not found.]")
        if _parse_iso(ends[cert.key_id]) <= dt.datetime.now(dt.UTC):
            raise _Rejected(401, "invalid_client", 700027, "Client assertion contains an invalid signature. "
                            "[Reason - The key used is expired.]")
        audience = f"{self.url}/{self.tenant.tenant_id}/oauth2/v2.0/token"
        try:
            claims = jwt.decode(assertion, cert.certificate.public_key(), algorithms=["RS256", "PS256"],
                                audience=audience, options={"require": ["exp", "aud", "iss", "sub"]})
        except jwt.InvalidSignatureError:
            raise _Rejected(401, "invalid_client", 700027, "Client assertion contains an invalid signature.") from None
        except jwt.ExpiredSignatureError:
            raise _Rejected(401, "invalid_client", 700024, "Client assertion is not within its valid time range.") \
                from None
        except jwt.PyJWTError as exc:
            raise _Rejected(401, "invalid_client", 50027, f"JWT token is invalid or malformed ({exc}).") from None
        if claims["iss"] != client.app_id or claims["sub"] != client.app_id:
            raise _Rejected(401, "invalid_client", 50027, "The client assertion's iss and sub must be the client id.")

    def _error(self, exc: _Rejected, request: Request) -> Response:
        now = dt.datetime.now(dt.UTC)
        trace = str(uuid.uuid4())
        correlation = request.headers.get("client-request-id") or str(uuid.uuid4())
        stamp = now.strftime("%Y-%m-%d %H:%M:%SZ")
        body = {"error": exc.error,
                "error_description": f"AADSTS{exc.code}: {exc.description}\r\nTrace ID: {trace}\r\n"
                                     f"Correlation ID: {correlation}\r\nTimestamp: {stamp}",
                "error_codes": [exc.code], "timestamp": stamp, "trace_id": trace, "correlation_id": correlation,
                "error_uri": f"{self.url}/error?code={exc.code}"}
        return Response(orjson.dumps(body), exc.status, mimetype="application/json")


def _json(body: dict) -> Response:
    return Response(orjson.dumps(body), 200, mimetype="application/json",
                    headers={"Cache-Control": "no-store, no-cache", "Pragma": "no-cache"})


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()
