"""App registrations in the Graph emulator: ``GET /applications/{id}`` and ``GET /applications(appId='{appId}')``.

https://learn.microsoft.com/graph/api/application-get: an application is addressed by its object id or, as an
alternate key, by its appId (the client id); ``$select`` picks properties; the application permission is
``Application.Read.All`` (checked by the token's roles, sandbox/identity/emulator.py). ``passwordCredentials``
carry ``hint`` (the first three characters of the secret), ``keyId``, ``displayName`` and the dates, never the
secret (``secretText`` is null outside addPassword); ``keyCredentials[].key`` is returned only when selected
on a single object (https://learn.microsoft.com/graph/api/resources/keycredential).

``$select`` takes the v1.0 properties of ``application`` (``shared.records.graph_catalogue``); one the tenant does not
store is null (a collection []), anything else is Graph's 400 "Could not find a property named ...".

UNCONFIRMED (emulator choices): the 400 wording for a malformed alternate key; the default property set (every
stored property, ``key`` null).
"""
from __future__ import annotations

import re

import orjson
from werkzeug.wrappers import Request, Response

from sandbox.graph.directory import GraphError, bad_request, not_found, structural, unknown_property
from sandbox.tenant.model import Tenant

# Returned without $select: what the tenant stores of an app registration.
DEFAULT_PROPERTIES = ("id", "appId", "displayName", "createdDateTime", "signInAudience", "publisherDomain",
                      "passwordCredentials", "keyCredentials", "deletedDateTime")
_PROPERTIES = structural("application")
_ALTERNATE_KEY = re.compile(r"^applications\(appId='([^']*)'\)$")


def handle_applications(tenant: Tenant, request: Request, segments: list[str], base: str) -> Response:
    """Answer ``/applications...`` (``segments`` below /v1.0). Raises GraphError for anything else."""
    if request.method != "GET":
        raise GraphError(405, "Request_BadRequest", "Specified HTTP method is not allowed for the request uri.")
    alternate = _ALTERNATE_KEY.match(segments[0])
    if alternate and len(segments) == 1:
        key, field = alternate.group(1), "appId"
    elif segments[0] == "applications" and len(segments) == 2:
        key, field = segments[1], "id"
    else:
        raise bad_request(f"Resource not found for the segment '{segments[-1]}'.", "BadRequest")
    unknown = [k for k in request.args if k != "$select"]
    if unknown:
        raise bad_request(f"Query option '{unknown[0]}' is not supported by this emulator on /applications.",
                          "Request_UnsupportedQuery")
    select = None
    if "$select" in request.args:
        select = tuple(dict.fromkeys(n.strip() for n in request.args["$select"].split(",")))
        wrong = [n for n in select if n not in _PROPERTIES]
        if wrong:
            raise unknown_property(wrong[0], "microsoft.graph.application")
    with tenant.lock:
        app = next((a for a in tenant.applications.values() if a.get(field, "").lower() == key.lower()), None)
        if app is None:
            raise not_found(key)
        out = {name: _copy(app.get(name), name, select) for name in (select or DEFAULT_PROPERTIES)}
    body = {"@odata.context": f"{base}/$metadata#applications/$entity", **out}
    return Response(orjson.dumps(body), 200, content_type="application/json;odata.metadata=minimal;charset=utf-8")


def _copy(value, name: str, select: tuple[str, ...] | None):
    """A property as Graph renders it: collections copied (unset ones []); a key credential's ``key`` only when
    selected."""
    if name == "keyCredentials":
        return [{**c, "key": c.get("key") if select else None} for c in value or ()]
    if name == "passwordCredentials":
        return [{**c, "secretText": None} for c in value or ()]
    if value is None and _PROPERTIES[name].collection:
        return []
    return value
