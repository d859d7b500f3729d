"""``POST /$batch`` of the Graph emulator (reference/graph.md §4.3), a ``GraphEmulator`` mixin.

Up to ``MAX_BATCH_REQUESTS`` (20) GET requests answered as the emulator answers them one by one, ``dependsOn``
(424 after a failed dependency), per-item throttling (``throttle_batch_items``); the items are recorded in
``batch_requests``. Source: https://learn.microsoft.com/en-us/graph/json-batching.

UNCONFIRMED behaviours (emulator choices):
- ``$batch``: more than 20 requests, an empty or malformed body, duplicate ids, absolute or nested-batch URLs are
  400 ``BadRequest`` for the whole batch (wording is the emulator's); items answer in request order; a batch is
  throttled as a whole by ``throttle`` and item by item by ``throttle_batch_items``; item headers carry
  ``Content-Type`` plus ``Retry-After``/``Location`` when the single answer has them.
"""
from __future__ import annotations

import threading
from collections.abc import Callable
from urllib.parse import urlsplit

import orjson
from werkzeug.test import EnvironBuilder
from werkzeug.wrappers import Request, Response

from sandbox.graph.directory import bad_request
from sandbox.graph.paging import json_response
from sandbox.http import RecordedRequest

MAX_BATCH_REQUESTS = 20          # reference §4.3


class BatchRequests:
    """``POST /$batch``; mixed into ``GraphEmulator``, which owns the state below and answers each item
    (``_respond(request, item=True)``: throttled by ``throttle_batch_items``, authenticated, routed)."""

    batch_requests: list[RecordedRequest]
    _lock: threading.RLock
    _respond: Callable[..., Response]

    def _batch(self, request: Request) -> Response:
        """``POST /$batch``: each item answered as the single GET would be (reference §4.3)."""
        try:
            body = orjson.loads(request.get_data())
        except orjson.JSONDecodeError:
            raise bad_request("Invalid batch payload format.", "BadRequest") from None
        items = body.get("requests") if isinstance(body, dict) else None
        if not isinstance(items, list) or not items:
            raise bad_request("Invalid batch payload format: 'requests' must be a non-empty array.", "BadRequest")
        if len(items) > MAX_BATCH_REQUESTS:
            raise bad_request(f"The number of requests in a batch ({len(items)}) exceeds the limit of "
                              f"{MAX_BATCH_REQUESTS}.", "BadRequest")
        ids: list[str] = []
        for item in items:
            if not isinstance(item, dict) or not all(isinstance(item.get(k), str) for k in ("id", "method", "url")):
                raise bad_request("Invalid batch payload format: every request needs 'id', 'method' and 'url'.",
                                  "BadRequest")
            url = item["url"]
            if "://" in url or urlsplit(url).path.strip("/").split("/")[0] in ("$batch", "v1.0", "beta"):
                raise bad_request(f"Invalid request URL '{url}' in batch: use a URL relative to the version, such "
                                  "as /users.", "BadRequest")
            depends = item.get("dependsOn", [])
            if not isinstance(depends, list) or any(d not in ids for d in depends):
                raise bad_request(f"Request {item['id']}: dependsOn must name earlier requests of the batch.",
                                  "BadRequest")
            if item["id"] in ids:
                raise bad_request(f"Request id '{item['id']}' appears more than once in the batch.", "BadRequest")
            ids.append(item["id"])
        statuses: dict[str, int] = {}
        responses = []
        for item in items:
            failed = [d for d in item.get("dependsOn", []) if statuses[d] >= 400]
            if failed:
                statuses[item["id"]] = 424
                responses.append({"id": item["id"], "status": 424, "headers": {"Content-Type": "application/json"},
                                  "body": {"error": {"code": "FailedDependency", "message":
                                                     f"Depends on failed request {failed[0]}."}}})
                continue
            answer = self._batch_item(request, item)
            statuses[item["id"]] = answer["status"]
            responses.append(answer)
        return json_response({"responses": responses})

    def _batch_item(self, outer: Request, item: dict) -> dict:
        parts = urlsplit(item["url"])
        headers = {"Authorization": outer.headers.get("Authorization", ""), **(item.get("headers") or {})}
        environ = EnvironBuilder(path="/v1.0/" + parts.path.lstrip("/"), query_string=parts.query,
                                 method=item["method"].upper(), headers=headers,
                                 base_url=outer.host_url).get_environ()
        sub = Request(environ)
        with self._lock:
            self.batch_requests.append(RecordedRequest(sub.method, sub.path, sub.args.to_dict(), dict(sub.headers)))
        response = self._respond(sub, item=True)
        data = response.get_data()
        content_type = response.headers.get("Content-Type", "")
        answer_headers = {"Content-Type": content_type}
        for name in ("Retry-After", "Location"):
            if name in response.headers:
                answer_headers[name] = response.headers[name]
        body = orjson.loads(data) if content_type.startswith("application/json") else data.decode()
        return {"id": item["id"], "status": response.status_code, "headers": answer_headers, "body": body}
