"""Validation and merging of schema-and-mapping documents (format 2023_10_19) for the Assets emulator.

:func:`merge_document` turns a submitted document plus the current model into the next model, or raises
:class:`DocumentRejected` with every problem as ``{"code", "message"}`` - the ``dataValidationErrors`` of a 400.
PUT is a merge into nothing; PATCH is add-only (reference §3.4,
https://developer.atlassian.com/cloud/assets/imports-rest-api-guide/schema-and-mapping/): new types, attributes,
icons and statuses, new descriptions and icons, whole-mapping overwrites are accepted; renames, attribute type
changes and reference-target changes are refused. Nothing is ever deleted.

Error codes: only ``UNKNOWN_EXTERNAL_ID_MAPPING`` has been observed on a real tenant (reference §3.7). Every
other code below is the emulator's own name - UNCONFIRMED - as are the ``message`` field, the cardinality
defaults and the checks marked so.

Object types made by hand (:func:`add_hand_made_type`: in the Assets UI, before any import) live in the same
model. A PUT takes over a same-named unmapped one: our reading of the real API, UNCONFIRMED - Assets
matches a document's object type by external id, then by name within the schema, so the type keeps its id and
objects, gets the document's external id, and its same-named attributes become the document's. A PATCH that
adds a type does the same here: one reading of how Assets matches, whatever the verb (UNCONFIRMED; the other
reading, a second type of the same name, is what setup's check before any write guards against either way).
"""
from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, field, replace
from pathlib import Path

from jsonschema import Draft201909Validator

from sandbox.assets.aql import AqlError, parse

# Atlassian's published JSON Schema of the document; one copy in the repository, beside the client that
# validates against it before sending.
_SCHEMA_FILE = Path(__file__).parents[2] / "shared" / "records" / "assets-schema-and-mapping.2023_10_19.json"
_VALIDATOR = Draft201909Validator(json.loads(_SCHEMA_FILE.read_text()))
# Assets' defaults when a document gives no cardinality (UNCONFIRMED: the UI's defaults are 0..1).
DEFAULT_MIN_CARDINALITY = 0
DEFAULT_MAX_CARDINALITY = 1
FIRST_TYPE_ID = 2501
SCHEMA_NAME = "Entra ID"    # the name the admin gave the emulated object schema (key ENTRA: apply.OBJECT_KEY_PREFIX)


class DocumentRejected(Exception):
    """A document Assets would answer with 400; ``errors`` is the ``dataValidationErrors`` list."""

    def __init__(self, errors: list[dict[str, str]]):
        super().__init__("; ".join(f"{e['code']}: {e['message']}" for e in errors))
        self.errors = errors


@dataclass(frozen=True)
class AttributeDef:
    """One attribute of an object type; ``reference_type`` is the referenced type's external id."""

    external_id: str
    name: str
    description: str
    type: str
    type_values: tuple[str, ...] | None = None
    label: bool = False
    reference_type: str | None = None
    minimum_cardinality: int = DEFAULT_MIN_CARDINALITY
    maximum_cardinality: int = DEFAULT_MAX_CARDINALITY
    unique: bool = False
    by_hand: bool = False           # made in the Assets UI: ``external_id`` is internal, never shown


@dataclass(frozen=True)
class ObjectTypeDef:
    """One object type; ``id`` is the numeric id Assets reports in ``objectTypeResultMap``."""

    id: int
    external_id: str
    name: str
    description: str
    icon_key: str | None = None
    parent: str | None = None
    attributes: tuple[AttributeDef, ...] = ()
    by_hand: bool = False           # made in the Assets UI without an external id: ``external_id`` is internal

    def attribute(self, external_id: str) -> AttributeDef | None:
        """The attribute with this external id, or None."""
        return next((a for a in self.attributes if a.external_id == external_id), None)

    def attribute_named(self, name: str) -> AttributeDef | None:
        """The attribute with this name (case-insensitive, like AQL), or None."""
        return next((a for a in self.attributes if a.name.casefold() == name.casefold()), None)


@dataclass(frozen=True)
class AttributeMapping:
    """How one attribute is read from an entry: ``attribute`` is its external id."""

    attribute: str
    attribute_name: str
    locators: tuple[str, ...]
    external_id_part: bool = False
    iql: str | None = None


@dataclass(frozen=True)
class TypeMapping:
    """The mapping of one object type (``type`` = its external id)."""

    type: str
    object_type_name: str
    selector: str
    description: str
    attributes: tuple[AttributeMapping, ...]


@dataclass(frozen=True)
class SchemaModel:
    """The import source's schema and mapping after every accepted submission. Treat as immutable."""

    name: str
    description: str
    types: dict[str, ObjectTypeDef] = field(default_factory=dict)
    icons: dict[str, dict] = field(default_factory=dict)
    statuses: dict[str, dict] = field(default_factory=dict)     # keyed by casefolded status name
    mappings: dict[str, TypeMapping] = field(default_factory=dict)
    next_type_id: int = FIRST_TYPE_ID

    def type_named(self, name: str) -> ObjectTypeDef | None:
        """The object type with this display name, or None."""
        return next((t for t in self.types.values() if t.name == name), None)


def _error(code: str, message: str) -> dict[str, str]:
    return {"code": code, "message": message}


def schema_errors(document: object) -> list[dict[str, str]]:
    """JSON Schema (2023_10_19, draft 2019-09) problems of ``document``, as ``SCHEMA_VALIDATION`` errors."""
    errors = sorted(_VALIDATOR.iter_errors(document), key=lambda e: list(map(str, e.absolute_path)))
    return [_error("SCHEMA_VALIDATION", f"{e.json_path}: {e.message}") for e in errors]


def merge_document(current: SchemaModel | None, document: object) -> SchemaModel:
    """The model after accepting ``document`` on top of ``current`` (None or hand-made types only for the
    first PUT). A document type whose external id is unknown takes over the unmapped type of the same name
    (module docstring): same numeric id, the document's external id.

    Pure apart from generating external ids for a document that has none. Raises ``DocumentRejected``
    listing every problem found; on rejection nothing changes.
    """
    errors = schema_errors(document)
    if errors:
        raise DocumentRejected(errors)
    assert isinstance(document, dict)
    schema = document["schema"]
    base = current or SchemaModel(schema["objectSchema"]["name"], schema["objectSchema"]["description"])
    flat = _flatten(schema["objectSchema"]["objectTypes"], None)
    errors += _external_id_errors(flat)
    if errors:
        raise DocumentRejected(errors)
    _assign_external_ids(base, flat)
    model = _merge_types(base, flat, errors)
    model = replace(model, icons={**model.icons, **{i["key"]: i for i in schema.get("iconSchema", {}).get(
        "icons", [])}}, statuses={**model.statuses, **{s["name"].casefold(): s for s in schema.get(
            "statusSchema", {}).get("statuses", [])}})
    errors += _type_errors(model)
    mappings = {}
    for raw in document["mapping"]["objectTypeMappings"]:
        mapping = _mapping(model, raw, errors)
        if mapping:
            mappings[mapping.type] = mapping
    if errors:
        raise DocumentRejected(errors)
    return replace(model, mappings={**model.mappings, **mappings})


def _flatten(types: list[dict], parent: dict | None) -> list[tuple[dict | None, dict]]:
    """(parent, type) pairs of a type tree, parents first. Dicts are copied (ids may be filled in)."""
    out: list[tuple[dict | None, dict]] = []
    for raw in types:
        raw = {**raw, "attributes": [dict(a) for a in raw.get("attributes", [])]}
        out.append((parent, raw))
        out += _flatten(raw.get("children", []), raw)
    return out


def _external_id_errors(flat: list[tuple[dict | None, dict]]) -> list[dict[str, str]]:
    """All-or-none and uniqueness of the external ids in one document (reference §3.2)."""
    entities = [t for _, t in flat] + [a for _, t in flat for a in t["attributes"]]
    ids = [e["externalId"] for e in entities if "externalId" in e]
    if ids and len(ids) != len(entities):
        missing = [e["name"] for e in entities if "externalId" not in e]
        return [_error("EXTERNAL_ID_ALL_OR_NONE", "either every object type and attribute has an externalId or "
                       f"none has; missing on: {', '.join(missing[:10])}")]
    duplicates = sorted({i for i in ids if ids.count(i) > 1})
    return [_error("DUPLICATE_EXTERNAL_ID", f"externalId {i!r} is used more than once") for i in duplicates]


def _assign_external_ids(base: SchemaModel, flat: list[tuple[dict | None, dict]]) -> None:
    """Legacy documents carry no external ids: match existing types/attributes by name, generate the rest
    in the format Assets was seen to generate (``cmdb::externalId/<uuid>``, reference §3.2)."""
    for _, raw in flat:
        if "externalId" in raw:
            continue
        existing = base.type_named(raw["name"])
        if existing is not None and existing.by_hand:
            existing = None  # its internal key is no external id: a new one is generated, the PUT adopts by name
        raw["externalId"] = existing.external_id if existing else f"cmdb::externalId/{uuid.uuid4()}"
        for attr in raw["attributes"]:
            old = existing.attribute_named(attr["name"]) if existing else None
            attr["externalId"] = old.external_id if old and not old.by_hand else f"cmdb::externalId/{uuid.uuid4()}"


def _merge_types(base: SchemaModel, flat: list[tuple[dict | None, dict]], errors: list) -> SchemaModel:
    types = dict(base.types)
    names = {t.name: t.external_id for t in types.values()} | {raw["name"]: raw["externalId"] for _, raw in flat}
    known = set(types) | {raw["externalId"] for _, raw in flat}
    next_id = base.next_type_id
    renamed: dict[str, str] = {}    # adopted types: old key -> the document's external id
    for parent, raw in flat:
        attrs = [_attribute(raw, a, names, known, errors) for a in raw["attributes"]]
        old = types.get(raw["externalId"])
        if old is None:
            old = _adoptable(base, raw, {r["externalId"] for _, r in flat})
            if old is not None:
                del types[old.external_id]
                renamed[old.external_id] = raw["externalId"]
                old = replace(old, external_id=raw["externalId"], by_hand=False)
        if old is None:
            types[raw["externalId"]] = ObjectTypeDef(
                next_id, raw["externalId"], raw["name"], raw["description"], raw.get("iconKey"),
                parent["externalId"] if parent else None, tuple(a for a in attrs if a))
            next_id += 1
            continue
        if old.name != raw["name"]:
            errors.append(_error("RENAME_NOT_ALLOWED", f"object type {raw['externalId']!r} is called "
                                 f"{old.name!r}; it cannot be renamed to {raw['name']!r}"))
        merged = _merge_attributes(old.attributes, [a for a in attrs if a], raw["externalId"] in renamed.values(),
                                   errors)
        types[raw["externalId"]] = replace(old, description=raw["description"],
                                           icon_key=raw.get("iconKey", old.icon_key), attributes=merged)
    types = _retarget(types, renamed)
    owners = [a.external_id for t in types.values() for a in t.attributes] + list(types)
    errors += [_error("DUPLICATE_EXTERNAL_ID", f"externalId {i!r} is already used in the schema")
               for i in sorted({i for i in owners if owners.count(i) > 1})]
    return replace(base, types=types, next_type_id=next_id)


def _merge_attributes(current: tuple[AttributeDef, ...], submitted: list[AttributeDef], adopted: bool,
                      errors: list) -> tuple[AttributeDef, ...]:
    """``current`` with ``submitted`` merged in, matched by external id - and, in a type just adopted, by name
    (an attribute no submitted external id names) - appending the new ones; PATCH's change rules apply."""
    merged = list(current)
    submitted_ids = {a.external_id for a in submitted}
    for attr in submitted:
        index = next((i for i, a in enumerate(merged) if a.external_id == attr.external_id), None)
        if index is None and adopted:
            index = next((i for i, a in enumerate(merged) if a.name == attr.name
                          and a.external_id not in submitted_ids), None)
        if index is None:
            merged.append(attr)
        else:
            errors += _attribute_change_errors(replace(merged[index], external_id=attr.external_id), attr)
            merged[index] = attr
    return tuple(merged)


def _adoptable(base: SchemaModel, raw: dict, document_ids: set[str]) -> ObjectTypeDef | None:
    """The existing type a document type takes over by name: same name (exact), not mapped, and not itself
    matched by external id in this document."""
    found = base.type_named(raw["name"])
    if found is None or found.external_id in base.mappings or found.external_id in document_ids:
        return None
    return found


def _retarget(types: dict[str, ObjectTypeDef], renamed: dict[str, str]) -> dict[str, ObjectTypeDef]:
    """References (and parents) to an adopted type follow it to its new external id."""
    if not renamed:
        return types
    return {key: replace(t, parent=renamed.get(t.parent, t.parent) if t.parent else None, attributes=tuple(
        replace(a, reference_type=renamed.get(a.reference_type, a.reference_type)) if a.reference_type else a
        for a in t.attributes)) for key, t in types.items()}


def add_hand_made_type(model: SchemaModel | None, name: str, external_id: str | None = None,
                       attributes: tuple[str, ...] = ("Name",), schema_name: str = SCHEMA_NAME) -> SchemaModel:
    """``model`` plus an object type an admin made in the Assets UI: text attributes ``attributes`` (the first
    is the label), no external id when ``external_id`` is None (else that one, as another import would leave
    it). Raises ValueError for a name or external id the schema already has."""
    base = model or SchemaModel(schema_name, "")
    if base.type_named(name) is not None:
        raise ValueError(f"the schema already has an object type named {name!r}")
    key = external_id or f"(by hand)/{base.next_type_id}"  # internal key: Assets shows no external id for it
    if key in base.types:
        raise ValueError(f"external id {key!r} is already used in the schema")
    attrs = tuple(AttributeDef(f"{key}/{n}" if external_id else f"{key}/{i}", n, n, "text", label=i == 0,
                               by_hand=external_id is None) for i, n in enumerate(attributes))
    object_type = ObjectTypeDef(base.next_type_id, key, name, f"{name} (made by hand)", attributes=attrs,
                                by_hand=external_id is None)
    return replace(base, types={**base.types, key: object_type}, next_type_id=base.next_type_id + 1)


def _attribute(type_raw: dict, raw: dict, names: dict[str, str], known: set[str],
               errors: list) -> AttributeDef | None:
    """One attribute of the document; None (and an error) when its reference target does not exist."""
    reference = None
    if raw["type"] == "referenced_object":
        reference = raw.get("referenceObjectTypeExternalId") or names.get(raw.get("referenceObjectTypeName", ""))
        if reference not in known:
            target = raw.get("referenceObjectTypeExternalId") or raw.get("referenceObjectTypeName")
            errors.append(_error("UNKNOWN_REFERENCE_OBJECT_TYPE", f"attribute {raw['name']!r} of "
                                 f"{type_raw['name']!r} references an object type that does not exist: {target!r}"))
            return None
    values = raw.get("typeValues")
    return AttributeDef(
        raw["externalId"], raw["name"], raw["description"], raw["type"], tuple(values) if values else None,
        bool(raw.get("label")), reference, raw.get("minimumCardinality", DEFAULT_MIN_CARDINALITY),
        raw.get("maximumCardinality", DEFAULT_MAX_CARDINALITY), bool(raw.get("unique")))


def _attribute_change_errors(old: AttributeDef, new: AttributeDef) -> list[dict[str, str]]:
    """What PATCH may not change on an existing attribute (reference §3.4)."""
    where = f"attribute {old.external_id!r}"
    errors = []
    if old.name != new.name:
        errors.append(_error("RENAME_NOT_ALLOWED", f"{where} is called {old.name!r}; it cannot be renamed to "
                             f"{new.name!r}"))
    if old.type != new.type:
        errors.append(_error("TYPE_CHANGE_NOT_ALLOWED", f"{where} has type {old.type!r}; it cannot become "
                             f"{new.type!r}"))
    elif old.reference_type != new.reference_type:
        errors.append(_error("REFERENCE_CHANGE_NOT_ALLOWED", f"{where} references {old.reference_type!r}; it "
                             f"cannot be changed to {new.reference_type!r}"))
    return errors


def _type_errors(model: SchemaModel) -> list[dict[str, str]]:
    """Checks on the merged schema: one label per type, known icon keys, status values in statusSchema."""
    errors = []
    for t in model.types.values():
        labels = [a.name for a in t.attributes if a.label]
        if len(labels) > 1:
            errors.append(_error("MULTIPLE_LABEL_ATTRIBUTES", f"object type {t.name!r} has more than one label "
                                 f"attribute: {', '.join(labels)}"))
        if t.icon_key is not None and t.icon_key not in model.icons:
            errors.append(_error("UNKNOWN_ICON_KEY", f"object type {t.name!r} uses icon {t.icon_key!r}, which "
                                 "is not in iconSchema"))
        for a in t.attributes:
            unknown = [v for v in a.type_values or () if v.casefold() not in model.statuses]
            if unknown:
                errors.append(_error("UNKNOWN_STATUS", f"attribute {a.name!r} of {t.name!r} allows statuses "
                                     f"missing from statusSchema: {', '.join(unknown)}"))
    return errors


def _mapping(model: SchemaModel, raw: dict, errors: list) -> TypeMapping | None:
    """One objectTypeMapping resolved against the merged schema; None when it names unknown entities."""
    type_id = raw.get("objectTypeExternalId")
    object_type = model.types.get(type_id) if type_id else model.type_named(raw["objectTypeName"])
    if object_type is None:
        errors.append(_error("UNKNOWN_EXTERNAL_ID_MAPPING", f"mapping {raw['objectTypeName']!r} names an object "
                             f"type that does not exist: {type_id or raw['objectTypeName']!r}"))
        return None
    if not all(raw["selector"].split(".")):
        errors.append(_error("INVALID_SELECTOR", f"selector {raw['selector']!r} of {object_type.name!r} is not "
                             "a dot path"))
    attributes = []
    for a in raw.get("attributesMapping", []):
        attr_id = a.get("attributeExternalId")
        attr = object_type.attribute(attr_id) if attr_id else object_type.attribute_named(a["attributeName"])
        if attr is None:
            errors.append(_error("UNKNOWN_EXTERNAL_ID_MAPPING", f"mapping of {object_type.name!r} names an "
                                 f"attribute that does not exist: {attr_id or a['attributeName']!r}"))
            continue
        attributes.append(AttributeMapping(attr.external_id, attr.name, tuple(a["attributeLocators"]),
                                           bool(a.get("externalIdPart")), a.get("objectMappingIQL")))
        if attr.type == "referenced_object":
            errors += _iql_errors(model, object_type, attr, attributes[-1])
    if not any(a.external_id_part for a in attributes):
        errors.append(_error("MISSING_EXTERNAL_ID_PART", f"mapping of {object_type.name!r} has no attribute with "
                             "externalIdPart: objects could not be matched across imports"))
    return TypeMapping(object_type.external_id, raw["objectTypeName"], raw["selector"], raw["description"],
                       tuple(attributes))


def _iql_errors(model: SchemaModel, owner: ObjectTypeDef, attr: AttributeDef,
                mapping: AttributeMapping) -> list[dict[str, str]]:
    """objectMappingIQL must exist (UNCONFIRMED: Assets may match by label without it), parse, name
    attributes of the referenced type and use only this mapping's locators as placeholders."""
    where = f"attribute {attr.name!r} of {owner.name!r}"
    if not mapping.iql:
        return [_error("MISSING_OBJECT_MAPPING_IQL", f"{where} is a reference and needs objectMappingIQL")]
    try:
        query = parse(mapping.iql)
    except AqlError as exc:
        return [_error("INVALID_OBJECT_MAPPING_IQL", f"{where}: {mapping.iql!r}: {exc}")]
    target = model.types[attr.reference_type or ""]
    unknown = sorted(a for a in query.attributes if target.attribute_named(a) is None)
    strays = sorted(query.placeholders - set(mapping.locators))
    errors = []
    if unknown:
        errors.append(_error("INVALID_OBJECT_MAPPING_IQL", f"{where}: {target.name!r} has no attribute "
                             f"{', '.join(unknown)}"))
    if strays:
        errors.append(_error("INVALID_OBJECT_MAPPING_IQL", f"{where}: placeholders {', '.join(strays)} are not "
                             "locators of this attribute"))
    return errors


def to_document(model: SchemaModel) -> dict:
    """The document ``GET …/schema-and-mapping`` returns: every field explicit, as Assets does (reference
    §3.5), including an empty ``iconSchema`` that a PATCH would reject (observed gotcha)."""
    def type_doc(t: ObjectTypeDef) -> dict:
        out = ({} if t.by_hand else {"externalId": t.external_id}) | {
            "name": t.name, "description": t.description, "inheritance": False,
            "attributes": [_attribute_doc(model, a) for a in t.attributes],
            "children": [type_doc(c) for c in model.types.values() if c.parent == t.external_id]}
        return out | ({"iconKey": t.icon_key} if t.icon_key else {})
    document: dict = {"schema": {
        "objectSchema": {"name": model.name, "description": model.description,
                         "objectTypes": [type_doc(t) for t in model.types.values() if t.parent is None]},
        "iconSchema": {"icons": list(model.icons.values())}}}
    if model.statuses:
        document["schema"]["statusSchema"] = {"statuses": list(model.statuses.values())}
    document["mapping"] = {"objectTypeMappings": [_mapping_doc(m) for m in model.mappings.values()]}
    return document


def _attribute_doc(model: SchemaModel, a: AttributeDef) -> dict:
    out = ({} if a.by_hand else {"externalId": a.external_id}) | {
        "name": a.name, "description": a.description, "type": a.type, "label": a.label,
        "minimumCardinality": a.minimum_cardinality, "maximumCardinality": a.maximum_cardinality,
        "unique": a.unique}
    if a.type_values:
        out["typeValues"] = list(a.type_values)
    if a.reference_type:
        out["referenceObjectTypeExternalId"] = a.reference_type
        out["referenceObjectTypeName"] = model.types[a.reference_type].name
    return out


def _mapping_doc(m: TypeMapping) -> dict:
    attributes = []
    for a in m.attributes:
        entry = {"attributeExternalId": a.attribute, "attributeName": a.attribute_name,
                 "attributeLocators": list(a.locators), "externalIdPart": a.external_id_part}
        attributes.append(entry | ({"objectMappingIQL": a.iql} if a.iql else {}))
    return {"objectTypeExternalId": m.type, "objectTypeName": m.object_type_name, "selector": m.selector,
            "description": m.description, "attributesMapping": attributes}
