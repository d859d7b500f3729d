"""The Assets object REST API on the Assets emulator: what Jira user linking calls, over the imported objects.

Served under ``/jsm/assets/workspace/{workspaceId}/v1/`` (https://developer.atlassian.com/cloud/assets/rest/)
with basic auth of the site user (the Jira emulator's e-mail and API token):
``GET objectschema/list``, ``GET objectschema/{id}/objecttypes/flat`` (``includeObjectCounts``),
``GET objecttype/{id}/attributes``, ``POST objecttypeattribute/{objectTypeId}``, ``POST object/aql``
(``qlQuery``; ``startAt``/``maxResults``/``includeAttributes``), ``GET object/{id}``, ``PUT object/{id}`` and
``GET importsource/{id}`` (its ``objectSchemaId``; api-group-importsource, with the same basic auth).

The schema is listed before it has any object type (the admin creates it, with its import, before the first
mapping), and the flat listing shows every type of the schema - mapped or made by hand - in the documented
``ObjectType`` shape, which has no external id (jira.js' model generated from the Assets OpenAPI spec).

Strict: 401 without the site user's basic auth, 400 for malformed bodies, bad AQL, unknown attribute names in
AQL, wrong ``objectTypeId``, a value that is no active Jira account for a User attribute or that breaks an
attribute's type or cardinality, a duplicate attribute name; 404 for unknown schemas, object types, objects
and attributes; 429 with ``Retry-After`` for ``throttle(n)``.

UNCONFIRMED (emulator choices): ``objectCount`` 0 without ``includeObjectCounts=true`` (as
``objectschema/list`` documents for ``includeCounts``), ``GET importsource/{id}`` refusing the import token
(401: only the site user's basic auth is tried), attribute ids (``<type id> * 1000 + position``), the 400/404 bodies
(``{"errorMessages": [...]}``), attributes created here staying out of the import's schema-and-mapping
document (the import API keeps its own view), ``maxResults`` capped at 1000, an empty
``objectAttributeValues`` clearing the attribute, attribute ``type`` numbers (0 Default, 1 Object, 2 User,
7 Status).
"""
from __future__ import annotations

import base64
import re
from collections.abc import Callable

import orjson
from werkzeug.exceptions import HTTPException
from werkzeug.routing import Map, Rule
from werkzeug.wrappers import Request, Response

from sandbox.assets.apply import OBJECT_KEY_PREFIX, AssetsObject, ObjectStore, check_values
from sandbox.assets.aql import AqlError, parse, text_of
from sandbox.assets.mapping import SCHEMA_NAME, AttributeDef, ObjectTypeDef

_V1 = "/jsm/assets/workspace/<ws>/v1"
_ROUTES = Map([
    Rule(f"{_V1}/objectschema/list", endpoint="schemas", methods=["GET"]),
    Rule(f"{_V1}/objectschema/<sid>/objecttypes/flat", endpoint="types", methods=["GET"]),
    Rule(f"{_V1}/objecttype/<tid>/attributes", endpoint="type_attributes", methods=["GET"]),
    Rule(f"{_V1}/objecttypeattribute/<tid>", endpoint="create_attribute", methods=["POST"]),
    Rule(f"{_V1}/object/aql", endpoint="aql", methods=["POST"]),
    Rule(f"{_V1}/object/<oid>", endpoint="get_object", methods=["GET"]),
    Rule(f"{_V1}/object/<oid>", endpoint="put_object", methods=["PUT"]),
    Rule(f"{_V1}/importsource/<src>", endpoint="import_source", methods=["GET"]),
])
OBJECT_SCHEMA_ID = 7    # as the import API reports it (sandbox.assets.emulator.OBJECT_SCHEMA_ID)
_PREFIXES = ("objectschema/", "objecttype/", "objecttypeattribute/", "object/")
TYPE_NUMBERS = {"referenced_object": 1, "status": 7}  # everything else is 0 (Default)
USER_TYPE = 2
_IMPORT_SOURCE = re.compile(r"importsource/[^/]+/?")
_KEYWORDS = {"objecttypeid", "objecttype", "objectschemaid", "key", "label"}


def _json(body: object, status: int = 200, headers: dict | None = None) -> Response:
    return Response(orjson.dumps(body), status, headers=headers, mimetype="application/json")


def _error(status: int, message: str) -> Response:
    return _json({"errorMessages": [message]}, status)


class _Invalid(Exception):
    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


class AssetsObjectApi:
    """The object API of one emulated workspace; holds the attributes created through it (type User)."""

    def __init__(self, emulator, email: str, token: str, is_account: Callable[[str], bool]):
        self.emulator, self.is_account = emulator, is_account
        self._auth = "Basic " + base64.b64encode(f"{email}:{token}".encode()).decode()
        self.extra: dict[str, list[dict]] = {}   # type external id -> attributes created here
        self._throttle = (0, "1")

    def throttle(self, count: int, retry_after: str = "1") -> None:
        self._throttle = (count, retry_after)

    def handles(self, path: str) -> bool:
        prefix = f"/jsm/assets/workspace/{self.emulator.workspace_id}/v1/"
        rest = path[len(prefix):] if path.startswith(prefix) else None
        # importsource/{id} itself (not its import-token sub-paths) is read with the site user's basic auth
        return rest is not None and (rest.startswith(_PREFIXES) or _IMPORT_SOURCE.fullmatch(rest) is not None)

    def respond(self, request: Request, body: bytes) -> Response:
        count, retry_after = self._throttle
        if count > 0:
            self._throttle = (count - 1, retry_after)
            return _json({"errorMessages": ["Rate limit exceeded"]}, 429, {"Retry-After": retry_after})
        if request.headers.get("Authorization") != self._auth:
            return _error(401, "Unauthorized: basic auth with the e-mail and API token of a site user is required")
        try:
            endpoint, params = _ROUTES.bind_to_environ(request.environ).match()
        except HTTPException as exc:
            return _error(exc.code or 500, exc.description or "")
        params.pop("ws", None)
        with self.emulator._store_lock, self.emulator._lock:
            try:
                return getattr(self, f"_{endpoint}")(request, body, **params)
            except _Invalid as invalid:
                return _error(invalid.status, str(invalid))

    # -- model views --------------------------------------------------------------------------------------

    def _model(self):
        model = self.emulator._model
        if model is None:
            raise _Invalid(404, "the workspace has no object schema yet")
        return model

    def _type(self, tid: str) -> ObjectTypeDef:
        found = next((t for t in self._model().types.values() if str(t.id) == tid), None)
        if found is None:
            raise _Invalid(404, f"No object type with id {tid}")
        return found

    def _attributes(self, object_type: ObjectTypeDef) -> list[dict]:
        out = []
        for index, attr in enumerate(object_type.attributes):
            entry = {"id": str(object_type.id * 1000 + index + 1), "name": attr.name, "label": attr.label,
                     "type": TYPE_NUMBERS.get(attr.type, 0), "description": attr.description,
                     "objectType": {"id": str(object_type.id), "name": object_type.name},
                     "minimumCardinality": attr.minimum_cardinality, "maximumCardinality": attr.maximum_cardinality}
            out.append(entry)
        return out + [dict(a) for a in self.extra.get(object_type.external_id, [])]

    def _attribute(self, object_type: ObjectTypeDef, attribute_id: str) -> tuple[dict, AttributeDef | None]:
        for entry in self._attributes(object_type):
            if entry["id"] == str(attribute_id):
                model_attr = object_type.attribute_named(entry["name"]) if entry["type"] != USER_TYPE else None
                return entry, model_attr
        raise _Invalid(404, f"object type {object_type.id} has no attribute with id {attribute_id}")

    def _object_json(self, obj: AssetsObject, with_attributes: bool = True) -> dict:
        object_type = self._model().types[obj.type_external_id]
        out = {"id": str(obj.id), "objectKey": obj.key, "label": text_of((obj.attributes.get("Name") or [""])[0]),
               "objectType": {"id": str(object_type.id), "name": object_type.name}}
        if with_attributes:
            ids = {e["name"]: e["id"] for e in self._attributes(object_type)}
            out["attributes"] = [{"objectTypeAttributeId": ids[name], "objectAttributeValues": [
                {"value": v, "displayValue": text_of(v)} for v in values]}
                for name, values in obj.attributes.items() if name in ids]
        return out

    # -- endpoints ----------------------------------------------------------------------------------------

    def _schemas(self, request: Request, body: bytes) -> Response:
        model = self.emulator._model
        values = [{"id": str(OBJECT_SCHEMA_ID), "name": model.name if model else SCHEMA_NAME,
                   "objectSchemaKey": OBJECT_KEY_PREFIX, "status": "Ok",
                   "objectTypeCount": len(model.types) if model else 0}]
        return _json({"startAt": 0, "maxResults": 50, "total": len(values), "isLast": True, "values": values})

    def _types(self, request: Request, body: bytes, sid: str) -> Response:
        if sid != str(OBJECT_SCHEMA_ID):
            raise _Invalid(404, f"No object schema with id {sid}")
        model = self.emulator._model
        counts = request.args.get("includeObjectCounts") == "true"
        store: ObjectStore = self.emulator._store
        return _json([{"id": str(t.id), "name": t.name, "description": t.description, "objectSchemaId": sid,
                       "objectCount": len(store.ids_of(t.external_id)) if counts else 0,
                       "parentObjectTypeId": model.types[t.parent].id if t.parent else None}
                      for t in (model.types.values() if model else ())])

    def _import_source(self, request: Request, body: bytes, src: str) -> Response:
        """``ImportSourceResponse`` (api-group-importsource, "Get import source by id"), the fields an
        importer reads; 404 for another import source."""
        emulator = self.emulator
        if src.rstrip("/") != emulator.import_source_id:
            raise _Invalid(404, f"No import source with id {src}")
        return _json({"id": emulator.import_source_id, "objectSchemaId": str(OBJECT_SCHEMA_ID),
                      "name": "entra-assets", "importSourceModuleKey": "rlabs-import-type-external",
                      "importStatus": {"configurationStatusType": "ENABLED" if emulator._enabled else "DISABLED",
                                       "validationStatusType": "VALID"},
                      "tokenGenerated": True})

    def _type_attributes(self, request: Request, body: bytes, tid: str) -> Response:
        return _json(self._attributes(self._type(tid)))

    def _create_attribute(self, request: Request, body: bytes, tid: str) -> Response:
        object_type = self._type(tid)
        raw = _body(body)
        name, kind = raw.get("name"), raw.get("type")
        if not isinstance(name, str) or not name.strip():
            raise _Invalid(400, "'name' is required")
        if not isinstance(kind, int) or isinstance(kind, bool) or kind != USER_TYPE:
            raise _Invalid(400, "'type' must be an integer; this emulator creates only User attributes (type 2)")
        if any(e["name"].casefold() == name.casefold() for e in self._attributes(object_type)):
            raise _Invalid(400, f"object type {object_type.name!r} already has an attribute named {name!r}")
        maximum = raw.get("maximumCardinality", 1)
        if not isinstance(maximum, int) or maximum == 0 or maximum < -1:
            raise _Invalid(400, "'maximumCardinality' must be -1 or a positive integer")
        extras = self.extra.setdefault(object_type.external_id, [])
        entry = {"id": str(object_type.id * 1000 + 500 + len(extras) + 1), "name": name, "label": False,
                 "type": USER_TYPE, "description": raw.get("description") or "",
                 "objectType": {"id": str(object_type.id), "name": object_type.name},
                 "minimumCardinality": raw.get("minimumCardinality", 0), "maximumCardinality": maximum}
        extras.append(entry)
        return _json(entry, 201)

    def _aql(self, request: Request, body: bytes) -> Response:
        raw = _body(body)
        if not isinstance(raw.get("qlQuery"), str):
            raise _Invalid(400, "'qlQuery' is required")
        try:
            start = int(request.args.get("startAt", "0"))
            limit = int(request.args.get("maxResults", "25"))
        except ValueError:
            raise _Invalid(400, "startAt and maxResults must be integers") from None
        if start < 0 or not 0 < limit <= 1000:
            raise _Invalid(400, "startAt must be >= 0 and maxResults between 1 and 1000")
        try:
            query = parse(raw["qlQuery"])
        except AqlError as exc:
            raise _Invalid(400, f"AQL: {exc}") from None
        ids = sorted(query.select(_Everything(self), {}))
        page = ids[start:start + limit]
        with_attributes = request.args.get("includeAttributes", "true") != "false"
        store: ObjectStore = self.emulator._store
        return _json({"startAt": start, "maxResults": limit, "total": len(ids), "isLast": start + limit >= len(ids),
                      "values": [self._object_json(store.objects[i], with_attributes) for i in page]})

    def _object(self, oid: str) -> AssetsObject:
        store: ObjectStore = self.emulator._store
        obj = store.objects.get(int(oid)) if oid.isdigit() else None
        if obj is None:
            raise _Invalid(404, f"No object with id {oid}")
        return obj

    def _get_object(self, request: Request, body: bytes, oid: str) -> Response:
        return _json(self._object_json(self._object(oid)))

    def _put_object(self, request: Request, body: bytes, oid: str) -> Response:
        obj = self._object(oid)
        raw = _body(body)
        object_type = self._model().types[obj.type_external_id]
        if str(raw.get("objectTypeId")) != str(object_type.id):
            raise _Invalid(400, f"objectTypeId {raw.get('objectTypeId')!r} is not the type of object {oid}")
        attributes = raw.get("attributes")
        if not isinstance(attributes, list):
            raise _Invalid(400, "'attributes' must be a list")
        updates = [self._checked(object_type, item) for item in attributes]
        store: ObjectStore = self.emulator._store
        for name, values in updates:
            store.set(obj, name, values)
        return _json(self._object_json(obj))

    def _checked(self, object_type: ObjectTypeDef, item: object) -> tuple[str, list]:
        if not isinstance(item, dict) or not isinstance(item.get("objectAttributeValues"), list):
            raise _Invalid(400, "each attribute needs objectTypeAttributeId and an objectAttributeValues list")
        entry, model_attr = self._attribute(object_type, str(item.get("objectTypeAttributeId")))
        values = []
        for value in item["objectAttributeValues"]:
            if not isinstance(value, dict) or "value" not in value:
                raise _Invalid(400, "each objectAttributeValues entry must be {\"value\": ...}")
            values.append(value["value"])
        maximum = entry["maximumCardinality"]
        if maximum != -1 and len(values) > maximum:
            raise _Invalid(400, f"attribute {entry['name']!r} takes at most {maximum} value(s)")
        if entry["type"] == USER_TYPE:
            bad = [v for v in values if not isinstance(v, str) or not self.is_account(v)]
            if bad:
                raise _Invalid(400, f"attribute {entry['name']!r}: {bad[0]!r} is not an active Jira user")
            return entry["name"], values
        try:
            return entry["name"], check_values(self._model(), model_attr, values)
        except ValueError as exc:
            raise _Invalid(400, f"attribute {entry['name']!r}: {exc}") from None



def _body(body: bytes) -> dict:
    try:
        raw = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise _Invalid(400, "the body is not JSON") from None
    if not isinstance(raw, dict):
        raise _Invalid(400, "the body must be a JSON object")
    return raw


class _Everything:
    """Every object of the schema as an ``aql.Searchable``: ``objectTypeId``/``objectType`` select by type,
    other names are attributes of any type (an unknown name is a 400, as in Assets)."""

    def __init__(self, api: AssetsObjectApi):
        self.api = api
        self.store: ObjectStore = api.emulator._store
        self.model = api._model()

    def ids(self) -> set[int]:
        return set(self.store.objects)

    def lookup(self, attribute: str, folded: str) -> set[int]:
        name = attribute.casefold()
        if name == "objecttypeid":
            return {i for t in self.model.types.values() if str(t.id) == folded for i in self.store.ids_of(t.external_id)}
        if name == "objecttype":
            return {i for t in self.model.types.values() if t.name.casefold() == folded
                    for i in self.store.ids_of(t.external_id)}
        if name in _KEYWORDS:
            raise _Invalid(400, f"AQL: {attribute} is not supported by this emulator")
        types = [t for t in self.model.types.values()
                 if any(e["name"].casefold() == name for e in self.api._attributes(t))]
        if not types:
            raise _Invalid(400, f"AQL: no attribute named {attribute!r} in the schema")
        return {i for t in types for i in self.store.lookup(t.external_id, attribute, folded)}

    def values(self, object_id: int, attribute: str) -> list:
        obj = self.store.objects[object_id]
        return next((v for k, v in obj.attributes.items() if k.casefold() == attribute.casefold()), [])

