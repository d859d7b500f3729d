"""The claim-check payload of a ``records`` message: its line format, written and read here only.

A payload is JSON lines. Each record is ``[type, id, hash]``, a tab, then the record's data as JSON: the worker
reads the small head and passes the data on as it is, never parsing it (JSON text holds no raw tab). The last
line is ``{"checkpoints": {...}}`` (``shared.contract.checkpoints``): the producer's checkpoints, committed by
the worker once Assets has finished the execution that carries the records.
"""
from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import orjson


@dataclass(frozen=True, slots=True)
class Line:
    """One record as the worker pushes it: ``data`` is its JSON, kept unparsed; ``read`` when it was read."""

    type: str
    id: str
    hash: str
    data: bytes
    read: float


def record_line(type_key: str, record_id: str, digest: str, data: bytes) -> bytes:
    """One record's payload line; ``data`` is the record's data as JSON."""
    return orjson.dumps([type_key, record_id, digest]) + b"\t" + data


def checkpoints_line(checkpoints: dict[str, str | None]) -> bytes:
    """The payload's last line."""
    return orjson.dumps({"checkpoints": checkpoints})


def parse_lines(lines: Iterable[bytes], read: float, checkpoints: dict | None) -> Iterator[Line]:
    """The records of a payload, each read at ``read``; its checkpoints line goes into ``checkpoints`` (None:
    ignored). Raises ``orjson.JSONDecodeError`` or ``ValueError`` for a line of another format."""
    for raw in lines:
        head, tab, data = raw.partition(b"\t")
        if not tab:
            if checkpoints is not None:
                checkpoints.update(orjson.loads(raw)["checkpoints"])
            continue
        type_key, record_id, digest = orjson.loads(head)
        yield Line(type_key, record_id, digest, data, read)
