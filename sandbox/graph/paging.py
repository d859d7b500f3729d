"""Paged answers and paging tokens of the Graph emulator (``sandbox/graph/emulator.py``).

Tokens are opaque to clients: base64url of a small JSON array (kind, epoch, issue time, resource, round
bounds, position, the ``$select`` as indices into the resource's property tuple) plus an HMAC with a
per-emulator key, so tampered, foreign or garbage tokens are "not found". Kinds: "l" (list skiptoken), "r"
(relationship skiptoken), "i"/"c" (skiptoken of an initial/a later delta round), "d" (delta token).

Sources: /work/shared/reference/graph.md §1.2 (paging: ``@odata.nextLink``, ``$skiptoken``), §2.1-2.2 (delta
round trip: ``@odata.deltaLink``, ``$deltatoken``); https://learn.microsoft.com/en-us/graph/paging.
"""
from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from dataclasses import dataclass

import orjson
from werkzeug.wrappers import Request, Response

from sandbox.graph.directory import Resource

_JSON = "application/json;odata.metadata=minimal;odata.streaming=true;IEEE754Compatible=false;charset=utf-8"


def json_response(body: dict) -> Response:
    """A 200 answer with Graph's JSON content type."""
    return Response(orjson.dumps(body), 200, content_type=_JSON)


LINK_ORIGIN = "sandbox.link_origin"  # environ key: the emulator's ``link_origin`` knob, when set


def version_base(request: Request) -> str:
    """The URL of ``/v1.0`` as the client addressed it (for ``@odata.context`` and links), or on the origin
    the emulator's ``link_origin`` knob names (links to another host, which clients must refuse)."""
    origin = request.environ.get(LINK_ORIGIN) or request.host_url.rstrip("/")
    return f"{origin}/v1.0"


@dataclass(frozen=True)
class Page:
    """What one paged answer holds before serialisation."""

    context: str
    value: list[dict]
    next_link: str | None = None
    delta_link: str | None = None
    count: int | None = None

    def body(self) -> dict:
        body: dict = {"@odata.context": self.context}
        if self.count is not None:
            body["@odata.count"] = self.count
        if self.next_link:
            body["@odata.nextLink"] = self.next_link
        elif self.delta_link:
            body["@odata.deltaLink"] = self.delta_link
        body["value"] = self.value
        return body


class Tokens:
    """Opaque, tamper-evident tokens: base64url(JSON array + 10-byte HMAC). ``None`` for anything invalid."""

    def __init__(self) -> None:
        self._key = secrets.token_bytes(16)

    def encode(self, fields: list) -> str:
        payload = orjson.dumps(fields)
        mac = hmac.new(self._key, payload, hashlib.sha256).digest()[:10]
        return base64.urlsafe_b64encode(payload + mac).rstrip(b"=").decode()

    def decode(self, token: str, kinds: tuple[str, ...]) -> list | None:
        try:
            raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        except (ValueError, TypeError):
            return None
        payload, mac = raw[:-10], raw[-10:]
        if len(raw) <= 10 or not hmac.compare_digest(mac, hmac.new(self._key, payload, hashlib.sha256).digest()[:10]):
            return None
        fields = orjson.loads(payload)
        return fields if fields and fields[0] in kinds else None


def select_to_token(res: Resource, select: tuple[str, ...] | None) -> list[int] | None:
    return None if select is None else [res.index[name] for name in select]


def select_from_token(res: Resource, indices: list[int] | None) -> tuple[str, ...] | None:
    return None if indices is None else tuple(res.token_properties[i] for i in indices)
