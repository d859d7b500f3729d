"""When the credentials run out: the Graph credential (client secret or certificate) and the Assets import token.

``credential_report(settings, graph, state, now)`` is what ``check`` and ``status`` show: for each credential its
kind, expiry, days left and a warning (or None) from ``WARN_DAYS`` (30) days before it expires. Secrets never
leave this module in any form but a 3-character hint comparison and a SHA-256 fingerprint prefix.

Where the dates come from:
- Client secret: the app registration's ``passwordCredentials``, read through Graph
  (``GET /applications(appId='{client id}')?$select=...``, https://learn.microsoft.com/graph/api/application-get,
  permission Application.Read.All - which the app already has to read service principals). The secret in use
  is the one whose ``hint`` - "the first three characters of the password"
  (https://learn.microsoft.com/graph/api/resources/passwordcredential) - matches AZURE_CLIENT_SECRET's; when
  several share the hint, the earliest expiry is reported (the safe side).
- Certificate: the registration's ``keyCredentials`` whose ``customKeyIdentifier`` is the certificate's SHA-1
  thumbprint ("defaults to the thumbprint", https://learn.microsoft.com/graph/api/resources/keycredential;
  whether it comes as base64 of the 20 bytes or as hex text is UNCONFIRMED, both are accepted); else the
  certificate file's own "not valid after", which is the same date.
- Otherwise (no Application.Read.All, a registration in another tenant, managed identity, a fixed
  GRAPH_ACCESS_TOKEN): the optional setting AZURE_CLIENT_CREDENTIAL_EXPIRES.
- Import token: Atlassian documents no lifetime for it and no API tells its creation date
  (reference/assets-imports-api.md §1: "Expiry / lifetime of the token: UNCONFIRMED"); it dies when a new one
  is generated. So its age is counted from the first time this app saw it - a SHA-256 fingerprint prefix and
  that time are kept in the state store - and a warning comes only from the optional ASSETS_IMPORT_TOKEN_EXPIRES
  (your own rotation date), 30 days ahead: warning on age alone would cry wolf for a token that never expires.
"""
from __future__ import annotations

import base64
import binascii
import datetime as dt
import hashlib
import json
import logging
from dataclasses import asdict, dataclass
from pathlib import Path

from shared.errors import EntraAssetsError, GraphPermissionError
from shared.settings import GUID, Settings, parse_utc
from shared.store.ports import StateStore

log = logging.getLogger(__name__)

WARN_DAYS = 30
TOKEN_SEEN = "credentials/import-token"  # checkpoint: {"fingerprint": ..., "first_seen": ISO time}
_APP = "Entra > App registrations > (the app)"


@dataclass(frozen=True)
class CredentialStatus:
    """One credential as ``check``/``status`` report it (``asdict`` is the stable JSON shape)."""

    kind: str                   # client_secret | certificate | managed_identity | access_token | import_token | none
    expires: str | None         # ISO 8601 UTC, None when unknown
    days_left: int | None
    source: str                 # where ``expires`` came from, or why it is unknown
    warning: str | None = None
    fingerprint: str | None = None  # import token only: "sha256:<12 hex>", never the token
    first_seen: str | None = None   # import token only
    age_days: int | None = None     # import token only


# -- pure functions ------------------------------------------------------------------------------------------

def days_left(expires: dt.datetime, now: dt.datetime) -> int:
    """Whole days from ``now`` to ``expires`` (negative once expired)."""
    return (expires - now) // dt.timedelta(days=1)


def pick_password_credential(credentials: list[dict], secret: str) -> dict | None:
    """The registration's secret that is ``secret``, by its 3-character ``hint``; with several candidates the
    one that expires first. None when no hint matches (the secret is not this app's, or hints are absent)."""
    candidates = [c for c in credentials if c.get("hint") and c["hint"] == secret[:3]]
    far = dt.datetime.max.replace(tzinfo=dt.UTC)
    return min(candidates, key=lambda c: parse_utc(c.get("endDateTime")) or far, default=None)


def _identifier_bytes(value: str) -> set[bytes]:
    """The byte strings a ``customKeyIdentifier`` may stand for: base64 of the thumbprint, or hex text (raw or
    base64-wrapped)."""
    out = set()
    try:
        raw = base64.b64decode(value, validate=True)
        out.add(raw)
        out.add(binascii.unhexlify(raw.decode("ascii")))
    except (binascii.Error, ValueError, UnicodeDecodeError):
        pass
    try:
        out.add(binascii.unhexlify(value))
    except (binascii.Error, ValueError):
        pass
    return out


def pick_key_credential(credentials: list[dict], thumbprint: bytes) -> dict | None:
    """The registration's certificate whose ``customKeyIdentifier`` is ``thumbprint`` (SHA-1, 20 bytes)."""
    return next((c for c in credentials if c.get("customKeyIdentifier")
                 and thumbprint in _identifier_bytes(c["customKeyIdentifier"])), None)


def expiry_warning(what: str, action: str, expires: dt.datetime, now: dt.datetime) -> str | None:
    """"<what> has expired/expires on <date> ...: <action>" from ``WARN_DAYS`` days ahead, else None."""
    left = days_left(expires, now)
    day = expires.date().isoformat()
    if expires <= now:
        return f"{what} expired on {day}: {action}"
    if left < WARN_DAYS:
        return f"{what} expires on {day} (in {left} day{'s' if left != 1 else ''}): {action} before then"
    return None


def fingerprint(token: str) -> str:
    """A non-reversible name for a token: ``sha256:`` + 12 hex digits."""
    return "sha256:" + hashlib.sha256(token.encode()).hexdigest()[:12]


def certificate_facts(path: Path, password: str | None) -> tuple[bytes, dt.datetime]:
    """(SHA-1 thumbprint, not-valid-after) of the certificate in a PEM or PKCS#12 file, as azure-identity reads
    it. Raises ValueError when the file holds no certificate."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.serialization import pkcs12

    data = path.read_bytes()
    if b"-----BEGIN CERTIFICATE-----" in data:
        cert = x509.load_pem_x509_certificate(data)
    else:
        cert = pkcs12.load_key_and_certificates(data, password.encode() if password else None)[1]
        if cert is None:
            raise ValueError("no certificate in the PKCS#12 file")
    return cert.fingerprint(hashes.SHA1()), cert.not_valid_after_utc


# -- the Graph credential ------------------------------------------------------------------------------------

def read_registration(graph, client_id: str | None) -> tuple[dict | None, str]:
    """(the app registration's credentials, "") or (None, why it could not be read). ``graph`` is a
    ``GraphClient``; a 403 (no Application.Read.All) or 404 (registered in another tenant) is a reason, not
    an error: the caller falls back to the setting."""
    if graph is None:
        return None, "Microsoft Graph could not be signed in to"
    if not client_id or not GUID.match(client_id):
        return None, "no AZURE_CLIENT_ID to look the app registration up by"
    try:
        return graph.get(f"applications(appId='{client_id}')",
                         {"$select": "id,displayName,passwordCredentials,keyCredentials"}), ""
    except GraphPermissionError:
        return None, "the app registration could not be read (403: the app lacks Application.Read.All)"
    except EntraAssetsError as error:
        status = getattr(error, "http_status", None) or error.status or type(error).__name__
        log.info("app registration not readable (%s)", status)
        return None, f"the app registration could not be read ({status})"


def graph_credential(settings: Settings, graph, now: dt.datetime) -> CredentialStatus:
    """The expiry of the credential Graph is read with (see the module docstring for the sources)."""
    kind = {"secret": "client_secret", "certificate": "certificate", "token": "access_token"}.get(
        settings.graph_auth, "managed_identity")
    facts, why = None, ""
    if kind == "certificate":
        try:
            facts = certificate_facts(settings.client_certificate_path, settings.client_certificate_password
                                      and settings.client_certificate_password.reveal())
        except (OSError, ValueError) as exc:
            why = f"the certificate file could not be read ({type(exc).__name__})"
    registration = None
    if kind in ("client_secret", "certificate"):
        registration, why = read_registration(graph, settings.client_id)
    expires, source = None, why or "unknown"
    if registration is not None and kind == "client_secret":
        found = pick_password_credential(registration.get("passwordCredentials") or [],
                                         settings.client_secret.reveal())
        expires, source = (parse_utc(found.get("endDateTime")), "app registration") if found else \
            (None, "no secret of the app registration has the hint of AZURE_CLIENT_SECRET")
    elif registration is not None and kind == "certificate" and facts:
        found = pick_key_credential(registration.get("keyCredentials") or [], facts[0])
        expires, source = (parse_utc(found.get("endDateTime")), "app registration") if found else \
            (None, "the certificate is not among the app registration's certificates")
    if expires is None and facts:
        expires, source = facts[1], "certificate file"
    if expires is None and settings.client_credential_expires:
        expires, source = settings.client_credential_expires, "AZURE_CLIENT_CREDENTIAL_EXPIRES"
    if expires is None:
        if kind in ("client_secret", "certificate"):
            source += ": set AZURE_CLIENT_CREDENTIAL_EXPIRES to be warned before it expires"
        return CredentialStatus(kind, None, None, source)
    what, action = _wording(kind, settings.client_id)
    return CredentialStatus(kind, expires.isoformat().replace("+00:00", "Z"), days_left(expires, now), source,
                            expiry_warning(what, action, expires, now))


def _wording(kind: str, client_id: str | None) -> tuple[str, str]:
    app = client_id or "(AZURE_CLIENT_ID)"
    if kind == "certificate":
        return (f"the certificate of app {app}", (f"upload a renewed certificate in {_APP} > Certificates & "
                "secrets and update AZURE_CLIENT_CERTIFICATE_PATH (and AZURE_CLIENT_CREDENTIAL_EXPIRES if set)"))
    if kind == "client_secret":
        return (f"the client secret of app {app}", (f"create a new secret in {_APP} > Certificates & secrets and "
                "update AZURE_CLIENT_SECRET (and AZURE_CLIENT_CREDENTIAL_EXPIRES if set)"))
    return ("the Microsoft Graph credential", "renew it and update AZURE_CLIENT_CREDENTIAL_EXPIRES")


# -- the import token ----------------------------------------------------------------------------------------

def import_token_status(settings: Settings, state: StateStore, now: dt.datetime,
                        record: bool = True) -> CredentialStatus:
    """Age (from the first time this fingerprint was seen) and the ASSETS_IMPORT_TOKEN_EXPIRES warning of the
    import token. With ``record``, a token not seen before is remembered from ``now`` on (one checkpoint write;
    pass False when Assets refused the token, so a wrong token leaves no trace)."""
    if not settings.assets_import_token:
        return CredentialStatus("none", None, None, "ASSETS_IMPORT_TOKEN is not set")
    mark = fingerprint(settings.assets_import_token.reveal())
    stored = state.checkpoint(TOKEN_SEEN)
    seen = json.loads(stored) if stored else {}
    if seen.get("fingerprint") != mark:
        seen = {"fingerprint": mark, "first_seen": now.isoformat().replace("+00:00", "Z")} if record else {}
        if record:
            state.commit({}, {TOKEN_SEEN: json.dumps(seen)})
    first = parse_utc(seen.get("first_seen"))
    age = max(0, days_left(now, first)) if first else None
    expires = settings.import_token_expires
    if expires is None:
        return CredentialStatus("import_token", None, None, "unknown (Atlassian import tokens have no documented "
                                "expiry; set ASSETS_IMPORT_TOKEN_EXPIRES for a rotation reminder)", None, mark,
                                seen.get("first_seen"), age)
    warning = expiry_warning("the Assets import token", "generate a new one in Assets > (the schema) > Import > "
                             "External import > Generate new token, then update ASSETS_IMPORT_TOKEN and "
                             "ASSETS_IMPORT_TOKEN_EXPIRES", expires, now)
    return CredentialStatus("import_token", expires.isoformat().replace("+00:00", "Z"), days_left(expires, now),
                            "ASSETS_IMPORT_TOKEN_EXPIRES", warning, mark, seen.get("first_seen"), age)


def credential_report(settings: Settings, graph, state: StateStore, now: dt.datetime | None = None,
                      record_token: bool = True) -> dict:
    """``{"graph_credential": {...}, "import_token": {...}}`` with the keys of ``CredentialStatus`` (stable,
    JSON-able) - for ``status --json`` and ``check``. Reads the app registration through ``graph`` (a
    ``GraphClient``); never raises for an unreadable registration or certificate."""
    now = now or dt.datetime.now(dt.UTC)
    return {"graph_credential": asdict(graph_credential(settings, graph, now)),
            "import_token": asdict(import_token_status(settings, state, now, record_token))}


def warnings(report: dict) -> list[str]:
    """The warnings of a ``credential_report``, in a fixed order."""
    return [entry["warning"] for entry in (report["graph_credential"], report["import_token"]) if entry["warning"]]


_KINDS = {"client_secret": "client secret", "certificate": "certificate", "access_token": "fixed GRAPH_ACCESS_TOKEN",
          "managed_identity": "managed identity (nothing to renew)", "import_token": "import token",
          "none": "none"}


def describe(entry: dict) -> str:
    """One line for ``check`` about one entry of a ``credential_report`` (no secret: kind, dates, source)."""
    text = _KINDS.get(entry["kind"], entry["kind"])
    if entry.get("fingerprint"):
        text += f" {entry['fingerprint']}"
        if entry.get("first_seen"):
            text += f", first seen {entry['first_seen'][:10]} ({entry['age_days']} days ago)"
    if entry["expires"]:
        return f"{text}, expires {entry['expires'][:10]} ({entry['days_left']} days left; from {entry['source']})"
    return f"{text}, expiry {entry['source']}" if entry["kind"] not in ("managed_identity", "none") else text
