"""Client of the Assets object REST API, for the one thing imports cannot do: set *User*-type attributes.

Base URL ``https://api.atlassian.com/jsm/assets/workspace/{workspaceId}/v1`` (the workspace id comes from the
Jira site, ``shared.clients.jira.JiraClient.workspace_id``), basic auth with the site user's e-mail and API token
(https://developer.atlassian.com/cloud/assets/assets-rest-api-guide/workflow/). We reuse ``ASSETS_API_URL``
as the host: it is the same api.atlassian.com, and the sandbox serves both APIs on one emulator.

Calls (https://developer.atlassian.com/cloud/assets/rest/):
- ``GET /objectschema/list`` → ``{"values": [{"id", "name", "objectSchemaKey"}], "isLast"...}`` (api-group-objectschema)
- ``GET /objectschema/{id}/objecttypes/flat`` → ``[{"id", "name"}]`` (api-group-objectschema)
- ``GET /objecttype/{id}/attributes`` → ``[{"id", "name", "type", ...}]`` (api-group-objecttype)
- ``POST /objecttypeattribute/{objectTypeId}`` ``{"name", "type": 2, ...}`` → 201 the attribute
  (api-group-objecttypeattribute; ``type`` 2 = User - UNCONFIRMED beyond the Data Center docs' numbering
  0 Default, 1 Object, 2 User, 4 Group, 7 Status)
- ``POST /object/aql`` ``{"qlQuery"}`` with ``startAt``/``maxResults``/``includeAttributes`` query parameters
  → ``{"values": [...], "isLast", "total"?}`` (api-group-object, "Fetch objects by AQL"; paging by ``startAt``
  until ``isLast``)
- ``PUT /object/{id}`` ``{"objectTypeId", "attributes": [{"objectTypeAttributeId", "objectAttributeValues":
  [{"value": accountId}]}]}`` (api-group-object; an empty ``objectAttributeValues`` clears the value - UNCONFIRMED)
- ``GET /importsource/{id}`` → ``ImportSourceResponse`` with ``objectSchemaId`` (a string; api-group-importsource,
  "Get import source by id"; jira.js ``getImportSource``). With basic auth like the rest of this API: the import
  token is not tried there (whether it is accepted is UNCONFIRMED, reference §1.2)
- ``GET /objectschema/{id}/objecttypes/flat?includeObjectCounts=true`` → ``[ObjectType]``: ``id``, ``name``,
  ``objectCount``, ``parentObjectTypeId``... (api-group-objectschema; the path and parameter as jira.js'
  ``findSchemaObjectTypesFlat``, generated from the Assets OpenAPI spec). The documented ``ObjectType`` has no
  external id; UNCONFIRMED whether counts are 0 without the parameter, as ``objectschema/list`` documents
"""
from __future__ import annotations

from collections.abc import Iterator

from shared.clients.jira import TokenBucket, atlassian_call, basic_auth
from shared.clients.transport import Origin, Transport

USER_ATTRIBUTE_TYPE = 2     # objecttypeattribute "type": User
PAGE = 100                  # objects per AQL page


class ObjectApi:
    """The Assets object API of one workspace. Raises ``JiraError`` (401/403) and ``RemoteError``. The site
    user's credentials go only to ASSETS_API_URL's origin (``transport`` is bound to it)."""

    def __init__(self, transport: Transport, api_url: str, workspace_id: str, email: str, token: str,
                 bucket: TokenBucket):
        self.transport, self.bucket = transport, bucket
        transport.allow(Origin.of(api_url, "ASSETS_API_URL", "the Assets object API"))
        self.base = f"{api_url.rstrip('/')}/jsm/assets/workspace/{workspace_id}/v1"
        self._auth = basic_auth(email, token)

    def _call(self, method: str, path: str, body: object = None, params: dict | None = None,
              expect: tuple[int, ...] = (200,)) -> object:
        return atlassian_call(self.transport, self.bucket, self._auth, method, f"{self.base}{path}",
                              what="the Assets object API", body=body, params=params, expect=expect,
                              forbidden="the account of JIRA_EMAIL must be an Assets administrator of the schema "
                                        "(Schema settings › Roles)")

    def _pages(self, method: str, path: str, body: object = None, params: dict | None = None,
               size: int = PAGE) -> Iterator[dict]:
        """The ``values`` of every page, by ``startAt`` until ``isLast`` (or an empty page)."""
        start = 0
        while True:
            page = self._call(method, path, body, params={**(params or {}), "startAt": str(start),
                                                          "maxResults": str(size)})
            values = page.get("values") or []
            yield from values
            if page.get("isLast", True) or not values:
                return
            start += len(values)

    def schemas(self) -> list[dict]:
        """Every object schema of the workspace (all pages)."""
        return list(self._pages("GET", "/objectschema/list", size=50))

    def object_types(self, schema_id: str) -> list[dict]:
        return list(self._call("GET", f"/objectschema/{schema_id}/objecttypes/flat") or [])

    def import_source(self, source_id: str) -> dict:
        """The import source's configuration (``objectSchemaId``: the schema it imports into)."""
        return dict(self._call("GET", f"/importsource/{source_id}") or {})

    def object_types_counted(self, schema_id: str) -> list[dict]:
        """Every object type of the schema (children included: the flat list), each with its ``objectCount``."""
        return list(self._call("GET", f"/objectschema/{schema_id}/objecttypes/flat",
                               params={"includeObjectCounts": "true"}) or [])

    def attributes(self, type_id: str) -> list[dict]:
        return list(self._call("GET", f"/objecttype/{type_id}/attributes") or [])

    def create_user_attribute(self, type_id: str, name: str, description: str) -> dict:
        """A new single-valued attribute of type User on the object type. Not idempotent (check first)."""
        body = {"name": name, "description": description, "type": USER_ATTRIBUTE_TYPE,
                "minimumCardinality": 0, "maximumCardinality": 1}
        return self._call("POST", f"/objecttypeattribute/{type_id}", body, expect=(200, 201))

    def find(self, ql_query: str) -> Iterator[dict]:
        """The objects an AQL query finds, with their attributes, page by page."""
        return self._pages("POST", "/object/aql", {"qlQuery": ql_query}, {"includeAttributes": "true"})

    def set_values(self, object_id: str, type_id: str, attribute_id: str, values: list[str]) -> None:
        """Replace one attribute's values on one object ([] clears it). Idempotent."""
        body = {"objectTypeId": type_id, "attributes": [
            {"objectTypeAttributeId": attribute_id, "objectAttributeValues": [{"value": v} for v in values]}]}
        self._call("PUT", f"/object/{object_id}", body)
