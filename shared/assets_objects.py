"""Client of the Assets object REST API, for the one thing imports cannot do: set *User*-type attributes.

Base URL ``https://api.atlassian.com/jsm/assets/workspace/{workspaceId}/v1`` (the workspace id comes from the
Jira site, ``shared.jira.JiraClient.workspace_id``), basic auth with the site user's e-mail and API token
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
"""
from __future__ import annotations

from collections.abc import Iterator

import orjson

from shared.errors import RemoteError
from shared.jira import JiraError, TokenBucket, basic_auth
from shared.transport import Failure, GaveUp, Transport, classify

USER_ATTRIBUTE_TYPE = 2     # objecttypeattribute "type": User
PAGE = 100                  # objects per AQL page


class ObjectApi:
    """The Assets object API of one workspace. Raises ``JiraError`` (401/403) and ``RemoteError``."""

    def __init__(self, transport: Transport, api_url: str, workspace_id: str, email: str, token: str,
                 bucket: TokenBucket):
        self.transport, self.bucket = transport, bucket
        self.base = f"{api_url.rstrip('/')}/jsm/assets/workspace/{workspace_id}/v1"
        self._auth = basic_auth(email, token)

    def _call(self, method: str, path: str, body: object = None, params: dict | None = None,
              expect: tuple[int, ...] = (200,)) -> object:
        self.bucket.take()
        headers = {"Authorization": self._auth, "Accept": "application/json"}
        content = None
        if body is not None:
            headers["Content-Type"] = "application/json"
            content = orjson.dumps(body)
        try:
            response = self.transport.send(method, f"{self.base}{path}", content=content, headers=headers,
                                           params=params)
        except GaveUp as exc:
            raise RemoteError(f"the Assets object API kept failing (HTTP {exc.status}) after retries") from None
        failure = classify(response.status_code)
        if failure is Failure.CREDENTIALS:
            raise JiraError("the Assets object API rejected JIRA_EMAIL/JIRA_API_TOKEN (401): create a new API token "
                            "for that account at https://id.atlassian.com/manage-profile/security/api-tokens")
        if failure is Failure.PERMISSION:
            raise JiraError(f"the Assets object API refused {method} {path.split('?')[0]} (403): the account of "
                            "JIRA_EMAIL must be an Assets administrator of the schema (Schema settings › Roles)")
        if response.status_code not in expect:
            raise RemoteError(f"the Assets object API answered {response.status_code} to {method} {path}: "
                              f"{response.text[:200]}")
        return orjson.loads(response.content) if response.content else None

    def schemas(self) -> list[dict]:
        """Every object schema of the workspace (all pages)."""
        out, start = [], 0
        while True:
            body = self._call("GET", "/objectschema/list", params={"startAt": str(start), "maxResults": "50"})
            values = body.get("values") or []
            out += values
            if body.get("isLast", True) or not values:
                return out
            start += len(values)

    def object_types(self, schema_id: str) -> list[dict]:
        return list(self._call("GET", f"/objectschema/{schema_id}/objecttypes/flat") or [])

    def attributes(self, type_id: str) -> list[dict]:
        return list(self._call("GET", f"/objecttype/{type_id}/attributes") or [])

    def create_user_attribute(self, type_id: str, name: str, description: str) -> dict:
        """A new single-valued attribute of type User on the object type. Not idempotent (check first)."""
        body = {"name": name, "description": description, "type": USER_ATTRIBUTE_TYPE,
                "minimumCardinality": 0, "maximumCardinality": 1}
        return self._call("POST", f"/objecttypeattribute/{type_id}", body, expect=(200, 201))

    def find(self, ql_query: str) -> Iterator[dict]:
        """The objects an AQL query finds, with their attributes, page by page."""
        start = 0
        while True:
            body = self._call("POST", "/object/aql", {"qlQuery": ql_query},
                              params={"startAt": str(start), "maxResults": str(PAGE), "includeAttributes": "true"})
            values = body.get("values") or []
            yield from values
            if body.get("isLast", True) or not values:
                return
            start += len(values)

    def set_values(self, object_id: str, type_id: str, attribute_id: str, values: list[str]) -> None:
        """Replace one attribute's values on one object ([] clears it). Idempotent."""
        body = {"objectTypeId": type_id, "attributes": [
            {"objectTypeAttributeId": attribute_id, "objectAttributeValues": [{"value": v} for v in values]}]}
        self._call("PUT", f"/object/{object_id}", body)
