"""The admin's MAPPING_FILE changes as the rest of entra-assets uses them (SPEC §2, §4). Pure.

``apply_mapping_file`` applies a ``MappingFile`` to the object types of ``shared.records.schema``: renamed attributes keep
their external id (``xid`` = the old key); an added attribute gets the record key (locator) ``x_<source>``
with ``.`` written as ``__`` (no dots: how Assets reads a dotted locator is UNCONFIRMED, reference §4.4) and
the external id key ``custom-<slug of its name>`` - so changing an added attribute's *name* in the file makes
a new attribute (the old one stays in Assets, unmapped; see ``unmapped_attributes``).
``graph_select`` names the Graph properties the added attributes need; ``extract`` reads an added attribute's
value from a Graph object. ``incompatible_changes`` lists what the add-only PATCH cannot do (reference §3.4)
when the file renames something that already exists in Assets.

The file itself is read and checked by ``shared.records.mapping_file`` (format and rules there; ``load_mapping_file``
and ``MappingFileError`` are re-exported here); the Graph properties a source may name are in
``shared.records.graph_properties``; the ``MappingFile`` value is in ``shared.records.mapping_file_value``.

UNCONFIRMED:
- list values: a Graph list (``proxyAddresses``, ``otherMails``, a path through a list such as
  ``identities.issuer``) is pushed as one text value joined with ``", "`` (text/textarea), or its first value
  (email, url, date, date_time); Assets' own handling of list values for a single-valued attribute is not
  documented. Text is trimmed to ``TEXT_LIMIT`` (255) characters like the default attributes.
- date and date_time values are passed as Graph gives them (ISO 8601); cloud date parsing rules are
  UNCONFIRMED (reference §4.4).
"""
from __future__ import annotations

import math
import re
from dataclasses import replace
from typing import Any

import orjson

from shared.records.mapping_file import MappingFileError, load_mapping_file
from shared.records.mapping_file_value import EMPTY, CustomAttr, MappingFile
from shared.records.schema import TEXT_LIMIT, Attr, ObjectType

__all__ = ["EMPTY", "CustomAttr", "MappingFile", "MappingFileError", "apply_mapping_file", "extract", "graph_select",
           "incompatible_changes", "load_mapping_file", "unmapped_attributes"]

_INT32 = (-(2 ** 31), 2 ** 31 - 1)  # Assets integers (UNCONFIRMED: assumed 32-bit)
_INTEGER = re.compile(r"^[+-]?\d+$")
_BOOLEANS = {"true": True, "false": False, "yes": True, "no": False, "1": True, "0": False}
_TIMESTAMP = re.compile(r"^\d{4}-\d{2}-\d{2}([T ]\d{2}:\d{2}(:\d{2}(\.\d+)?)?(Z|[+-]\d{2}:?\d{2})?)?$")
# Single-valued types whose value must look right (a list gives its first value).
_SHAPES = {"date": _TIMESTAMP, "date_time": _TIMESTAMP,
           "email": re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$"),
           "url": re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://\S+$")}


# ------------------------------------------------------------------------------------------------------------
# Applying it


def apply_mapping_file(types: tuple[ObjectType, ...], c: MappingFile) -> tuple[ObjectType, ...]:
    """``types`` with ``c`` applied: renames (keeping each external id), omissions, added attributes appended.
    Pure; same input, same output. Types ``c`` does not mention come back unchanged."""
    if not c:
        return tuple(types)
    out = []
    for t in types:
        renames = c.renames.get(t.key, {})
        omitted = set(c.omit.get(t.key, ()))
        attributes = []
        for a in t.attributes:
            if a.name in omitted:
                continue
            if a.name in renames:
                a = replace(a, name=renames[a.name], xid=a.key)
            if a.ref and a.ref_attr in c.renames.get(a.ref, {}):
                # objectMappingIQL names the referenced type's attribute: follow its rename.
                a = replace(a, ref_attr=c.renames[a.ref][a.ref_attr])
            attributes.append(a)
        for custom in c.attributes.get(t.key, ()):
            attributes.append(Attr(custom.name, custom.locator, custom.type,
                                   description=custom.description or f"{custom.source} from Microsoft Graph",
                                   source=custom.source, xid=custom.xid))
        out.append(replace(t, attributes=tuple(attributes)))
    return tuple(out)


def graph_select(object_type: ObjectType) -> list[str]:
    """The Graph ``$select`` properties the type's added attributes need (first path segment, in order)."""
    out: list[str] = []
    for a in object_type.attributes:
        if a.source:
            first = a.source.split(".", 1)[0]
            if first not in out:
                out.append(first)
    return out


def _walk(value: Any, segments: list[str]) -> Any:
    """Follow ``segments``; through a list, follow each element and collect the values found."""
    for i, segment in enumerate(segments):
        if isinstance(value, list):
            found = []
            for element in value:
                got = _walk(element, segments[i:])
                if isinstance(got, list):
                    found.extend(got)
                elif got is not None:
                    found.append(got)
            return found or None
        if not isinstance(value, dict):
            return None
        value = value.get(segment)
    return value


def _text(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        text = value.strip()
        return text or None
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, (int, float)):
        return str(value)
    if isinstance(value, list):
        parts = [t for t in (_text(v) for v in value) if t]
        return ", ".join(parts) or None
    try:
        return orjson.dumps(value, option=orjson.OPT_SORT_KEYS).decode()
    except (TypeError, orjson.JSONEncodeError):
        return None


def _first(value: Any) -> Any:
    if isinstance(value, list):
        for v in value:
            if v is not None and v != "":
                return v
        return None
    return value


def _single(value: Any) -> Any:
    if isinstance(value, list):
        values = [v for v in value if v is not None]
        return values[0] if len(values) == 1 else None
    return value


def _boolean(value: Any) -> bool | None:
    value = _single(value)
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if isinstance(value, str):
        return _BOOLEANS.get(value.strip().lower())
    return None


def _integer(value: Any) -> int | None:
    value = _single(value)
    if isinstance(value, bool) or value is None:
        return None
    number: int | None = None
    if isinstance(value, int):
        number = value
    elif isinstance(value, float) and math.isfinite(value) and value.is_integer():
        number = int(value)
    elif isinstance(value, str):
        text = value.strip().replace("_", "x")  # int()/float() accept "1_000"; Graph data means no number
        if _INTEGER.match(text):
            number = int(text)
        else:
            as_float = _double(text)
            if as_float is not None and as_float.is_integer():
                number = int(as_float)
    if number is None or not _INT32[0] <= number <= _INT32[1]:
        return None
    return number


def _double(value: Any) -> float | None:
    value = _single(value)
    if isinstance(value, bool) or value is None:
        return None
    try:
        number = float(value.strip().replace("_", "x")) if isinstance(value, str) else float(value)
    except (TypeError, ValueError, OverflowError):
        return None
    return number if math.isfinite(number) else None



_CONVERTERS = {"boolean": _boolean, "integer": _integer, "double": _double}


def extract(raw: dict, attr: Attr) -> object:
    """The value of a custom attribute (``attr.source``) in a raw Graph object, as Assets accepts it for
    ``attr.type``; None when missing or unusable. Never raises on odd data."""
    if not attr.source or not isinstance(raw, dict):
        return None
    try:
        value = _walk(raw, attr.source.split("."))
        kind = attr.type
        if kind in _CONVERTERS:
            return _CONVERTERS[kind](value)
        if kind in _SHAPES:
            text = _text(_first(value))
            return text if text and _SHAPES[kind].match(text) else None
        text = _text(value)
        if text is not None and kind == "text" and len(text) > TEXT_LIMIT:
            text = text[:TEXT_LIMIT]
        return text
    except Exception:  # noqa: BLE001 - odd data gives no value, never a failed run
        return None



# ------------------------------------------------------------------------------------------------------------
# Comparing with the live schema


def _object_types(document: dict) -> list[dict]:
    """Every object type of a schema-and-mapping document, children included, in document order."""
    try:
        roots = document["schema"]["objectSchema"]["objectTypes"]
    except (KeyError, TypeError):
        return []
    out: list[dict] = []
    stack = [t for t in reversed(roots or []) if isinstance(t, dict)]
    while stack:
        t = stack.pop()
        out.append(t)
        stack.extend(c for c in reversed(t.get("children") or []) if isinstance(c, dict))
    return out


def _attributes(document: dict) -> dict[str, tuple[dict, dict]]:
    """``{attribute externalId: (object type, attribute)}``."""
    out: dict[str, tuple[dict, dict]] = {}
    for t in _object_types(document):
        for a in t.get("attributes") or []:
            if isinstance(a, dict) and a.get("externalId"):
                out.setdefault(a["externalId"], (t, a))
    return out


_FIX = "rename it in Assets first (Schema › {type} › attributes) or revert the MAPPING_FILE change"


def incompatible_changes(live: dict, new: dict) -> list[str]:
    """What sending ``new`` over ``live`` (both schema-and-mapping documents, matched by external id) would
    need but the add-only PATCH cannot do: renamed object types or attributes, retyped attributes, retargeted
    references, changed cardinality. One readable line each, saying what to do instead. Additions and
    attributes no longer mapped are not incompatible (see ``unmapped_attributes``)."""
    problems: list[str] = []
    live_types = {t.get("externalId"): t for t in _object_types(live) if t.get("externalId")}
    for t in _object_types(new):
        old = live_types.get(t.get("externalId"))
        if old is not None and old.get("name") != t.get("name"):
            problems.append(f"object type '{old.get('name')}' ({t['externalId']}) would be renamed to "
                            f"'{t.get('name')}', which Assets imports cannot do: rename the object type in "
                            "Assets first (Schema › object type › Edit) or keep its name")
    live_attributes = _attributes(live)
    for xid, (t, a) in _attributes(new).items():
        if xid not in live_attributes:
            continue
        live_type, old = live_attributes[xid]
        where = f"{t.get('name')}: attribute '{old.get('name')}' ({xid})"
        if old.get("name") != a.get("name"):
            problems.append(f"{where} would be renamed to '{a.get('name')}', which Assets imports cannot do: "
                            + _FIX.format(type=live_type.get("name")))
        if old.get("type") and a.get("type") and old.get("type") != a.get("type"):
            problems.append(f"{where} is {old.get('type')} in Assets but {a.get('type')} in the new mapping, "
                            "and Assets imports cannot change an attribute's type: revert the type in the "
                            "MAPPING_FILE, or give the attribute a new name (a new attribute) and delete the "
                            "old one in Assets")
        old_target = old.get("referenceObjectTypeExternalId")
        new_target = a.get("referenceObjectTypeExternalId")
        if old_target and new_target and old_target != new_target:
            problems.append(f"{where} refers to {old_target} in Assets but to {new_target} in the new "
                            "mapping, and Assets imports cannot change a reference's target: delete the "
                            "attribute in Assets first or revert the change")
        old_max, new_max = old.get("maximumCardinality"), a.get("maximumCardinality")
        if old_max is not None and new_max is not None and old_max != new_max:
            problems.append(f"{where} holds {_cardinality(old_max)} in Assets but {_cardinality(new_max)} in "
                            "the new mapping, which Assets imports cannot change: change it in Assets first "
                            f"(Schema › {live_type.get('name')} › attributes) or revert the change")
    return problems


def _cardinality(n: Any) -> str:
    return "any number of values" if n == -1 else f"at most {n} value" + ("" if n == 1 else "s")


def unmapped_attributes(live: dict, new: dict) -> list[str]:
    """Attributes (and object types) that entra-assets created in Assets but the new document no longer maps:
    Assets keeps them and their values, which stop being updated. One note line each."""
    new_types = {t.get("externalId") for t in _object_types(new) if t.get("externalId")}
    prefixes = {x.rsplit("/", 1)[0] + "/" for x in new_types if "/" in x}
    new_attributes = _attributes(new)
    notes: list[str] = []
    for t in _object_types(live):
        xid = t.get("externalId")
        if not xid:
            continue
        if xid not in new_types:
            if any(xid.startswith(p) for p in prefixes):
                notes.append(f"object type '{t.get('name')}' ({xid}) is no longer synchronised; Assets keeps "
                             "it and its objects")
            continue
        for a in t.get("attributes") or []:
            axid = a.get("externalId") if isinstance(a, dict) else None
            if axid and axid.startswith(xid + "/") and axid not in new_attributes:
                notes.append(f"{t.get('name')}: attribute '{a.get('name')}' ({axid}) is no longer mapped; "
                             "Assets keeps it and its values, which stop being updated (delete it in "
                             "Assets if unwanted)")
    return notes
