"""Intune's managed devices in the Graph emulator: ``GET /v1.0/deviceManagement/managedDevices``.

A ``GraphEmulator`` mixin serving ``Tenant.managed_devices`` (sandbox/tenant/intune.py) in pages of ``$top``
(1-``MAX_TOP``, default ``PAGE_SIZE``) with ``@odata.nextLink``/``$skiptoken`` (sandbox/graph/paging.py).
Sources: https://learn.microsoft.com/graph/api/intune-devices-manageddevice-list (permissions, the call);
https://learn.microsoft.com/graph/intune-concept-overview ("The Microsoft Graph API for Intune requires an active
Intune license for the tenant"); the 403 body as Graph answers it, quoted in
https://github.com/microsoftgraph/microsoft-graph-explorer-v4/issues/706 (reported there as 401; served 403, as
AzureAD/microsoft-authentication-library-for-js#7007 shows it for an app token).

Rules, in order:
- the token holds ``DeviceManagementManagedDevices.Read.All`` or ``.ReadWrite.All`` (``PERMISSIONS``;
  Directory.Read.All does not cover Intune), else 403 with Intune's own body (``forbidden``: code
  ``UnknownError``, the message a JSON text wrapping the Intune service's error), checked by the identity
  emulator's ``authorize``, the ``denied`` knob and the no-permission token alike;
- the tenant has Intune (``Tenant.intune``), else 400 ``BadRequest`` "Request not applicable to target tenant."
  (UNCONFIRMED: the answer commonly reported for tenants without Intune);
- ``$select`` names properties of the v1.0 managedDevice (the catalogue), else the 400 every list gives;
  without it a device comes back with the properties it has (Graph gives every property: UNCONFIRMED which);
  a selected property the device lacks is null (a collection ``[]``); ``id`` always comes back;
- ``$top`` 1-1000 (UNCONFIRMED: forums report 1,000 as Intune's default and largest page), else 400; any
  other query option (``$filter``, ``$expand``, ``$orderby``, ``$count``, ``$search``, ``$skip``...) is 400
  here: Intune supports some, the sync uses none (an emulator restriction, wording the emulator's).
No delta and no change notifications exist for managedDevice (v1.0), so none is served.
"""
from __future__ import annotations

import uuid
from urllib.parse import quote

import orjson
from werkzeug.wrappers import Request, Response

from sandbox.graph.directory import GraphError, bad_request, render, structural, unknown_property
from sandbox.graph.paging import Page, Tokens, json_response, version_base
from sandbox.tenant.model import Tenant

PERMISSIONS = frozenset({"DeviceManagementManagedDevices.Read.All", "DeviceManagementManagedDevices.ReadWrite.All"})
PAGE_SIZE = 1000
MAX_TOP = 1000
ENTITY = "microsoft.graph.managedDevice"
_PATH = "deviceManagement/managedDevices"
_OPTIONS = ("$select", "$top", "$skiptoken")
# The Intune front end named in its errors (the region part varies by tenant; any is as good).
_FRONT_END = "https://fef.msua06.manage.microsoft.com/DeviceFE/StatelessDeviceFEService"


def forbidden(path: str = f"/{_PATH}") -> GraphError:
    """Graph's 403 for an Intune request without permission: ``{"error": {"code": "UnknownError", "message":
    "{\\"ErrorCode\\":\\"Forbidden\\",\\"Message\\":\\"{\\r\\n  \\\\\\"_version\\\\\\": 3, ...}\\", ...}"}}`` -
    the Intune service's own error, a JSON text inside a JSON text inside Graph's message."""
    realm = 'Bearer realm="urn:intune:service,c3998d6e-2e37-4c56-87b5-7b444ee1cb26,' \
            '3e9c57b9-808d-4aa0-9500-4b2d369279e7"'
    fields = {"_version": 3,
              "Message": "An error has occurred - Operation ID (for customer support): "
                         f"00000000-0000-0000-0000-000000000000 - Activity ID: {uuid.uuid4()} - Url: {_FRONT_END}"
                         f"/{path.removeprefix('/v1.0/').lstrip('/')}?api-version=2023-07-04",
              "CustomApiErrorPhrase": "", "RetryAfter": None, "ErrorSourceService": "",
              "HttpHeaders": orjson.dumps({"WWW-Authenticate": realm}).decode()}
    # The service's body is .NET's indented JSON (CRLF, two spaces), as the quoted answers show.
    inner = "{\r\n" + ",\r\n".join(f'  "{k}": {orjson.dumps(v).decode()}' for k, v in fields.items()) + "\r\n}"
    message = orjson.dumps({"ErrorCode": "Forbidden", "Message": inner, "Target": None, "Details": None,
                            "InnerError": None, "InstanceAnnotations": []}).decode()
    return GraphError(403, "UnknownError", message)


def not_applicable() -> GraphError:
    """Graph's 400 for an Intune request in a tenant without an Intune licence."""
    return GraphError(400, "BadRequest", "Request not applicable to target tenant.")


class ManagedDeviceReads:
    """``GET /deviceManagement/managedDevices``; mixed into ``GraphEmulator``, which owns the state below."""

    tenant: Tenant
    _tokens: Tokens

    def _managed_devices(self, request: Request) -> Response:
        """One page of the tenant's managed devices in enrolment order (module docstring for the rules)."""
        if not self.tenant.intune:
            raise not_applicable()
        args = request.args
        other = [k for k in args if k.startswith("$") and k not in _OPTIONS]
        if other:
            raise bad_request(f"Query option '{other[0]}' is not supported by this emulator on /{_PATH}.",
                              "BadRequest")
        if "$skiptoken" in args:
            fields = self._tokens.decode(args["$skiptoken"], ("m",))
            if fields is None:
                raise bad_request("The specified page token value has expired or is invalid.", "BadRequest")
            _, pos, top, select = fields
            select = tuple(select) if select is not None else None
        else:
            pos, top = 0, _top(args.get("$top"))
            select = _select(args["$select"]) if "$select" in args else None
        keys = None if select is None else ("id", *(n for n in select if n != "id"))
        collections = frozenset(n for n, p in structural("managedDevice").items() if p.collection)
        with self.tenant.lock:
            devices, order = self.tenant.managed_devices, self.tenant.managed_devices.order
            value, end = [], len(order)
            while pos < end:
                device = devices.get(order[pos])
                if device is not None:
                    if len(value) == top:
                        break
                    value.append(dict(device) if keys is None else render(device, keys, collections))
                pos += 1
        base = version_base(request)
        next_link = None
        if pos < end:
            token = self._tokens.encode(["m", pos, top, list(select) if select is not None else None])
            options = "".join(f"{k}={quote(args[k], safe=',$()')}&" for k in ("$select", "$top") if k in args)
            next_link = f"{base}/{_PATH}?{options}$skiptoken={token}"
        context = f"{base}/$metadata#{_PATH}" + (f"({','.join(keys)})" if keys else "")
        return json_response(Page(context, value, next_link=next_link).body())


def _select(raw: str) -> tuple[str, ...]:
    names = tuple(dict.fromkeys(name.strip() for name in raw.split(",")))
    known = structural("managedDevice")
    for name in names:
        if name not in known:
            raise unknown_property(name, ENTITY)
    return names


def _top(raw: str | None) -> int:
    if raw is None:
        return PAGE_SIZE
    if not raw.strip().isdigit() or not 1 <= int(raw) <= MAX_TOP:
        raise bad_request(f"Invalid page size specified: '{raw}'. Must be between 1 and {MAX_TOP} inclusive.",
                          "BadRequest")
    return int(raw)
