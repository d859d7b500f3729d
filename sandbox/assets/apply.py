"""Applying a finished execution of the Assets emulator to its object store.

What Assets does with the chunks of one execution (reference §4.4, §5, §6.2), in three phases:

1. For every object type mapping, select the entries (``selector`` = dot path to arrays under ``data``), read
   and check each attribute, match the entry to an object by its ``externalIdPart`` values (case-sensitive)
   and create / update it. Reference attributes are only read here.
2. Resolve references once every entry of the execution is written, so objects created in the same
   execution are found: ``objectMappingIQL`` is compiled once per mapping and evaluated on the referenced
   object type through per-attribute equality indexes (no scans), as the ``100,000 entries in ≤ 10 s``
   target requires. A value that matches nothing leaves the reference empty - it is not an error.
3. Missing objects (not in this execution) per the object type's policy: IGNORE, REMOVE or
   ``("UPDATE", attribute name, value)``.

UNCONFIRMED (emulator choices, see the brief): joining several locators with a space, skipping entries with
an empty label, the text length limit, how a failing entry is reported (one message in ``errorMessages``, the
whole entry skipped), the default cardinalities, and treating an identity as empty only when every part is.
"""
from __future__ import annotations

import contextlib
import datetime as dt
import functools
import gc
import ipaddress
import math
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from sandbox.assets.aql import Query, parse, text_of
from sandbox.assets.mapping import AttributeDef, AttributeMapping, ObjectTypeDef, SchemaModel, TypeMapping

TEXT_MAX_LENGTH = 255          # UNCONFIRMED for external imports: the limit of text attributes in the UI
OBJECT_KEY_PREFIX = "ENTRA"    # Assets keys are "<schema key>-<object id>"; the emulator's schema key
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s.]+$")
_INTEGER = re.compile(r"^[+-]?\d+$")

MissingPolicy = str | tuple[str, str, object]


_SHAPES: dict[tuple[str, ...], tuple[str, ...]] = {}   # interned attribute-name tuples (objects of a type share one)
_SHAPES_KEPT = 10_000
_SHARED_VALUES = 2_000  # distinct values per attribute name the store shares before it stops trying
_NOT_YET = object()  # "no table yet" (None: "not shared")


def _shape(names: tuple[str, ...]) -> tuple[str, ...]:
    found = _SHAPES.get(names)
    if found is None:
        found = names
        if len(_SHAPES) < _SHAPES_KEPT:
            _SHAPES[names] = names
    return found


class AttributeValues(Mapping):
    """Attribute name → value list, read-only (``ObjectStore`` writes). Stored compactly because the emulator
    holds every object of a tenant (about 1.9 million after a full push of a million users): the names as a
    tuple shared by the objects with the same attributes, the values as a tuple beside it - one value as
    itself, several as a tuple. A dict of one-element lists cost about 1.7 KB a user object; this costs a
    fifth of that. Reads return a fresh list; lookups scan the (short) name tuple."""

    __slots__ = ("_names", "_values")

    def __init__(self, values: dict[str, list] | None = None):
        listed = [(name, v) for name, v in (values or {}).items() if v]
        self._names = _shape(tuple(name for name, _ in listed))
        self._values = tuple(_pack(v) for _, v in listed)

    def __getitem__(self, name: str) -> list:
        try:
            value = self._values[self._names.index(name)]
        except ValueError:
            raise KeyError(name) from None
        return list(value) if type(value) is tuple else [value]

    def __contains__(self, name: object) -> bool:
        return name in self._names

    def __iter__(self) -> Iterator[str]:
        return iter(self._names)

    def __len__(self) -> int:
        return len(self._names)

    def __repr__(self) -> str:
        return repr(dict(self.items()))

    def _put(self, name: str, values: list) -> None:
        """Set (or, with no values, remove) one attribute."""
        names, packed = list(self._names), list(self._values)
        if name in names:
            at = names.index(name)
            if values:
                packed[at] = _pack(values)
            else:
                del names[at], packed[at]
        elif values:
            names.append(name)
            packed.append(_pack(values))
        self._names, self._values = _shape(tuple(names)), tuple(packed)


def _pack(values: list) -> object:
    return values[0] if len(values) == 1 and type(values[0]) is not tuple else tuple(values)


@dataclass(slots=True)
class AssetsObject:
    """One object: ``attributes`` maps attribute names to value lists; references hold object keys."""

    id: int
    key: str
    type_name: str
    type_external_id: str
    attributes: AttributeValues = field(default_factory=AttributeValues)


class ObjectStore:
    """Every object of the emulated schema, with lazily built equality indexes per (type, attribute)."""

    def __init__(self) -> None:
        self.objects: dict[int, AssetsObject] = {}
        self._by_type: dict[str, dict[int, None]] = {}
        # type external id → casefolded attribute name → casefold(text of value) → object id(s): one id as an
        # int, several as a set (a set per unique value, e.g. every object id, cost 216 bytes an object)
        self._indexes: dict[str, dict[str, dict[str, int | set[int]]]] = {}
        self._next_id = 1
        # attribute name → value → the one string object every object with that value holds (None once the
        # attribute proved to have more than _SHARED_VALUES distinct values, as identities do): status, user
        # type, company, job title... are otherwise one parsed copy per object.
        self._common: dict[str, dict[str, str] | None] = {}

    def _shared(self, name: str, values: list) -> list:
        common = self._common.get(name, _NOT_YET)
        if common is None:
            return values
        if common is _NOT_YET:
            common = self._common[name] = {}
        out = []
        for value in values:
            if type(value) is str:
                found = common.get(value)
                if found is None:
                    if len(common) >= _SHARED_VALUES:
                        self._common[name] = None  # high cardinality: stop looking
                        return values
                    found = common[value] = value
                value = found
            out.append(value)
        return out

    def of_type(self, type_external_id: str) -> list[AssetsObject]:
        """Objects of one type, oldest first."""
        return [self.objects[i] for i in self._by_type.get(type_external_id, {})]

    def ids_of(self, type_external_id: str) -> set[int]:
        """Ids of the objects of one type."""
        return set(self._by_type.get(type_external_id, {}))

    def create(self, object_type: ObjectTypeDef, attributes: dict[str, list]) -> AssetsObject:
        """A new object with the next id and key; empty values are not stored. Not idempotent."""
        obj = AssetsObject(self._next_id, f"{OBJECT_KEY_PREFIX}-{self._next_id}", object_type.name,
                           object_type.external_id)
        self._next_id += 1
        self.objects[obj.id] = obj
        self._by_type.setdefault(obj.type_external_id, {})[obj.id] = None
        obj.attributes = AttributeValues({name: self._shared(name, values) for name, values in attributes.items()})
        for folded, index in self._indexes.get(obj.type_external_id, {}).items():
            for name, values in obj.attributes.items():
                if name.casefold() == folded:
                    _index_add(index, values, obj.id)
        return obj

    def set(self, obj: AssetsObject, name: str, values: list) -> bool:
        """Set one attribute (empty list clears it), keeping built indexes current. Returns whether it changed."""
        old = obj.attributes.get(name, [])
        if old == values:
            return False
        values = self._shared(name, values)
        index = self._indexes.get(obj.type_external_id, {}).get(name.casefold())
        if index is not None:
            for value in old:
                _index_discard(index, value, obj.id)
            _index_add(index, values, obj.id)
        obj.attributes._put(name, values)
        return True

    def delete(self, obj: AssetsObject) -> None:
        """Remove an object and its index entries (idempotent)."""
        for name in list(obj.attributes):
            self.set(obj, name, [])
        self.objects.pop(obj.id, None)
        self._by_type.get(obj.type_external_id, {}).pop(obj.id, None)

    def rename_type(self, old_external_id: str, new_external_id: str) -> None:
        """The objects of one type (and their indexes) now belong under a new external id: an import took the
        type over (``mapping.merge_document``). Ids, keys and values stay as they were."""
        ids = self._by_type.pop(old_external_id, {})
        self._by_type[new_external_id] = ids
        if old_external_id in self._indexes:
            self._indexes[new_external_id] = self._indexes.pop(old_external_id)
        for object_id in ids:
            self.objects[object_id].type_external_id = new_external_id

    def lookup(self, type_external_id: str, name: str, folded: str) -> set[int]:
        """Ids of the objects of one type whose attribute ``name`` has a value of text ``folded`` (casefolded)."""
        found = self.index(type_external_id, name).get(folded)
        return set() if found is None else {found} if type(found) is int else found

    def index(self, type_external_id: str, name: str) -> dict[str, int | set[int]]:
        """``casefold(text) → id or ids`` for one attribute of one type, built on first use (use ``lookup``)."""
        indexes = self._indexes.setdefault(type_external_id, {})
        folded = name.casefold()
        if folded not in indexes:
            index: dict[str, int | set[int]] = {}
            for obj in self.of_type(type_external_id):
                for attr, values in obj.attributes.items():
                    if attr.casefold() == folded:
                        _index_add(index, values, obj.id)
            indexes[folded] = index
        return indexes[folded]


def _folded(value: object) -> str:
    text = text_of(value)
    folded = text.casefold()
    return text if folded == text else folded  # the value's own string when already folded: no copy


def _index_add(index: dict[str, int | set[int]], values: list, object_id: int) -> None:
    for value in values:
        key = _folded(value)
        found = index.get(key)
        if found is None or found == object_id:
            index[key] = object_id
        elif type(found) is int:
            index[key] = {found, object_id}
        else:
            found.add(object_id)


def _index_discard(index: dict[str, int | set[int]], value: object, object_id: int) -> None:
    key = _folded(value)
    found = index.get(key)
    if found == object_id:
        del index[key]
    elif type(found) is set:
        found.discard(object_id)
        if len(found) == 1:
            index[key] = next(iter(found))
        elif not found:
            del index[key]


@dataclass
class TypeView:
    """The objects of one type as an ``aql.Searchable``; attribute names resolve case-insensitively."""

    store: ObjectStore
    object_type: ObjectTypeDef
    _indexes: dict[str, dict[str, int | set[int]]] = field(default_factory=dict)

    def ids(self) -> set[int]:
        return self.store.ids_of(self.object_type.external_id)

    def lookup(self, attribute: str, folded: str) -> set[int]:
        # The store keeps a built index current on every write, so holding on to it here is safe.
        index = self._indexes.get(attribute)
        if index is None:
            index = self._indexes[attribute] = self.store.index(self.object_type.external_id, attribute)
        found = index.get(folded)
        return set() if found is None else {found} if type(found) is int else found

    def values(self, object_id: int, attribute: str) -> list:
        attr = self.object_type.attribute_named(attribute)
        return self.store.objects[object_id].attributes.get(attr.name if attr else attribute, [])


@dataclass
class TypeResult:
    """Counters of one object type in one execution (``objectTypeResultMap`` entry, reference §4.6)."""

    created: int = 0
    updated: int = 0
    identical: int = 0
    missing_updated: int = 0
    missing_deleted: int = 0
    entries: int = 0
    duplicates: int = 0
    empty_label: int = 0
    empty_external_id: int = 0
    updated_references: int = 0
    failed: int = 0            # emulator-only: not in Assets' documented shape, so not sent on the wire
    errors: list[str] = field(default_factory=list)

    def to_json(self, object_type: ObjectTypeDef) -> dict:
        """The wire form, including Assets' misspelt ``duplicateEnries``."""
        return {"id": None, "objectTypeName": object_type.name, "objectTypeId": object_type.id,
                "objectsCreated": self.created, "objectsUpdated": self.updated, "objectsIdentical": self.identical,
                "objectsMissingUpdated": self.missing_updated, "objectsMissingDeleted": self.missing_deleted,
                "entriesInSource": self.entries, "duplicateEnries": self.duplicates,
                "emptyLabelEntries": self.empty_label, "emptyExternalIdEntries": self.empty_external_id,
                "objectsFilteredWithQlQuery": 0, "objectsWithUpdatedReferences": self.updated_references,
                "errorMessages": list(self.errors) or None}


@dataclass(frozen=True)
class _Plan:
    """One attribute mapping, compiled: the attribute, its locators, (for references) the query and
    ``read(element) -> checked values`` (raises ValueError)."""

    attr: AttributeDef
    locators: tuple[str, ...]
    identity: bool
    query: Query | None = None
    read: Callable[[dict], list] = lambda element: []


@dataclass
class _Written:
    obj: AssetsObject
    references: dict[str, list[str]]


def apply_execution(model: SchemaModel, store: ObjectStore, chunks: list[dict],
                    policy: Callable[[ObjectTypeDef], MissingPolicy]) -> dict[str, TypeResult]:
    """Apply every chunk of one execution; returns the counters per object type external id. Mutates
    ``store``; applying the same chunks again leaves the objects as they are (all ``identical``)."""
    with _gc_paused():
        return _apply(model, store, chunks, policy)


@contextlib.contextmanager
def _gc_paused() -> Iterator[None]:
    """Pause the cyclic garbage collector: applying 100,000 entries allocates millions of lists and dicts,
    and CPython 3.11's full collections over them took ~40 % of the time. Nothing here creates cycles."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def _apply(model: SchemaModel, store: ObjectStore, chunks: list[dict],
           policy: Callable[[ObjectTypeDef], MissingPolicy]) -> dict[str, TypeResult]:
    results: dict[str, TypeResult] = {}
    written: list[tuple[list[_Plan], list[_Written], TypeResult]] = []
    seen: dict[str, set[tuple]] = {}
    for mapping in model.mappings.values():
        object_type = model.types[mapping.type]
        plans = [_compile(object_type, model, m) for m in mapping.attributes]
        result = results.setdefault(mapping.type, TypeResult())
        entries = _write_entries(model, store, object_type, mapping, plans, chunks, result,
                                 seen.setdefault(mapping.type, set()))
        written.append((plans, entries, result))
    for plans, entries, result in written:
        _resolve_references(model, store, plans, entries, result)
    deleted = sum(_apply_missing(model, store, model.types[t], seen[t], policy(model.types[t]), results[t])
                  for t in seen)
    if deleted:
        _drop_dangling_references(model, store)
    return results


def _compile(object_type: ObjectTypeDef, model: SchemaModel, mapping: AttributeMapping) -> _Plan:
    attr = object_type.attribute(mapping.attribute)
    assert attr is not None  # merge_document only accepts mappings of existing attributes
    query = parse(mapping.iql) if attr.type == "referenced_object" and mapping.iql else None
    return _Plan(attr, mapping.locators, mapping.external_id_part, query, _reader(model, attr, mapping.locators))


def _reader(model: SchemaModel, attr: AttributeDef, locators: tuple[str, ...]) -> Callable[[dict], list]:
    """``read_locators`` + ``check_values`` for one attribute, with the empty single-locator case short-cut
    (it runs once per attribute per entry: 100,000 entries × 20 attributes)."""
    def read(element: dict) -> list:
        return check_values(model, attr, read_locators(element, locators))
    if len(locators) > 1 or attr.minimum_cardinality > 0:
        return read
    locator = locators[0]

    def read_one(element: dict) -> list:
        value = element.get(locator)
        if value is None or value == "" or value == []:
            return []
        return check_values(model, attr, _non_empty(value) if isinstance(value, list) else [value])
    return read_one


def select(data: dict, selector: str, problems: list[str]) -> Iterator[object]:
    """The elements a dot-path selector picks from ``data``; nested segments iterate arrays inside each
    parent element. A non-array on the path is reported in ``problems`` and skipped."""
    nodes: list[object] = [data]
    for segment in selector.split("."):
        found: list[object] = []
        for node in nodes:
            value = node.get(segment) if isinstance(node, dict) else None
            if isinstance(value, list):
                found.extend(value)
            elif value is not None:
                problems.append(f"selector {selector!r}: {segment!r} is not an array")
        nodes = found
    yield from nodes


def _write_entries(model: SchemaModel, store: ObjectStore, object_type: ObjectTypeDef, mapping: TypeMapping,
                   plans: list[_Plan], chunks: list[dict], result: TypeResult, seen: set[tuple]) -> list[_Written]:
    """Phase 1 for one mapping: read, check, de-duplicate (last wins) and write the entries."""
    pending: dict[tuple, tuple[dict[str, list], dict[str, list[str]]]] = {}
    label = next((p for p in plans if p.attr.label), None)
    for chunk in chunks:
        for element in select(chunk, mapping.selector, result.errors):
            result.entries += 1
            entry = _read_entry(model, object_type, plans, element, result, seen)
            if entry is None:
                continue
            identity, values, references = entry
            if label is not None and not values.get(label.attr.name):
                result.empty_label += 1
                continue
            if identity in pending:
                result.duplicates += 1
            pending[identity] = (values, references)
    existing = _identity_map(store, object_type, [p for p in plans if p.identity])
    written = []
    for identity, (values, references) in pending.items():
        obj = existing.get(identity)
        if obj is None:
            obj = store.create(object_type, values)
            result.created += 1
        elif sum(store.set(obj, name, v) for name, v in values.items()):
            result.updated += 1
        else:
            result.identical += 1
        written.append(_Written(obj, references))
    return written


def _read_entry(model: SchemaModel, object_type: ObjectTypeDef, plans: list[_Plan], element: object,
                result: TypeResult, seen: set[tuple]) -> tuple[tuple, dict[str, list], dict[str, list[str]]] | None:
    """(identity, plain values, raw reference values) of one entry, or None when it is skipped (counted)."""
    if not isinstance(element, dict):
        result.failed += 1
        result.errors.append(f"{object_type.name}: entry {text_of(element)[:80]!r} is not a JSON object")
        return None
    values: dict[str, list] = {}
    references: dict[str, list[str]] = {}
    problems = []
    for plan in plans:
        try:
            checked = plan.read(element)
        except ValueError as exc:
            problems.append(f"attribute {plan.attr.name!r}: {exc}")
            checked = []
        (references if plan.query is not None else values)[plan.attr.name] = checked
    identity = tuple(tuple(text_of(v) for v in values.get(p.attr.name, [])) for p in plans if p.identity)
    if any(identity):
        seen.add(identity)  # a failing entry is still "in the source": missing-objects must not touch it
    if problems:
        result.failed += 1
        result.errors.append(f"{object_type.name} {'/'.join(map('|'.join, identity))}: {'; '.join(problems)}")
        return None
    if not any(identity):
        result.empty_external_id += 1
        return None
    return identity, values, references


def _identity_map(store: ObjectStore, object_type: ObjectTypeDef, id_plans: list[_Plan]) -> dict[tuple, AssetsObject]:
    """Existing objects of the type by identity (the current mapping's externalIdPart attributes)."""
    out = {}
    for obj in store.of_type(object_type.external_id):
        out[tuple(tuple(text_of(v) for v in obj.attributes.get(p.attr.name, [])) for p in id_plans)] = obj
    return out


def read_locators(element: dict, locators: tuple[str, ...]) -> list:
    """The raw values of an attribute: one locator gives its value (a JSON list gives several); several
    locators are joined with a space, empty ones left out (UNCONFIRMED: Assets' concatenator). ``None``,
    ``""`` and ``[]`` are empty."""
    if len(locators) == 1:  # the common case, kept fast: it runs once per attribute per entry
        value = element.get(locators[0])
        if value is None or value == "":
            return []
        return _non_empty(value) if isinstance(value, list) else [value]
    raw = [_non_empty(element.get(locator)) for locator in locators]
    joined = " ".join(text_of(v) for values in raw for v in values)
    return [joined] if joined else []


def _non_empty(value: object) -> list:
    items = value if isinstance(value, list) else [value]
    return [v for v in items if v is not None and v != ""]


def check_values(model: SchemaModel, attr: AttributeDef, values: list) -> list:
    """``values`` checked and normalised for the attribute's type and cardinality. Raises ValueError with a
    readable reason. Pure."""
    if not values and attr.minimum_cardinality == 0:
        return values
    if attr.maximum_cardinality != -1 and len(values) > attr.maximum_cardinality:
        raise ValueError(f"{len(values)} values, at most {attr.maximum_cardinality} allowed")
    if attr.type != "referenced_object" and len(values) < attr.minimum_cardinality:
        raise ValueError(f"{len(values)} values, at least {attr.minimum_cardinality} required")
    return [check_value(model, attr, v) for v in values]


def check_value(model: SchemaModel, attr: AttributeDef, value: object) -> object:
    """One value normalised for ``attr.type`` (text, int, float, bool, canonical status name...)."""
    checker = _CHECKERS.get(attr.type, _text_any)
    try:
        if isinstance(value, (dict, list)):
            raise TypeError("a JSON object or array is not a value")
        return checker(model, attr, value)
    except (ValueError, TypeError, OverflowError, KeyError):
        raise ValueError(f"{text_of(value)[:80]!r} is not a valid {attr.type}") from None


def _text(model: SchemaModel, attr: AttributeDef, value: object) -> str:
    text = text_of(value)
    if len(text) > TEXT_MAX_LENGTH:
        raise ValueError("too long")
    return text


def _text_any(model: SchemaModel, attr: AttributeDef, value: object) -> str:
    return text_of(value)


def _integer(model: SchemaModel, attr: AttributeDef, value: object) -> int:
    if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
        raise ValueError
    if isinstance(value, str) and not _INTEGER.match(value.strip()):
        raise ValueError
    return int(value)


def _double(model: SchemaModel, attr: AttributeDef, value: object) -> float:
    if isinstance(value, bool):
        raise TypeError
    number = float(value)
    if not math.isfinite(number):
        raise ValueError
    return number


def _boolean(model: SchemaModel, attr: AttributeDef, value: object) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "false"):
        return value.lower() == "true"
    raise ValueError


def _email(model: SchemaModel, attr: AttributeDef, value: object) -> str:
    if not isinstance(value, str) or not _EMAIL.match(value):
        raise ValueError
    return value


def _url(model: SchemaModel, attr: AttributeDef, value: object) -> str:
    parts = urlsplit(value) if isinstance(value, str) else None
    if parts is None or not parts.scheme or not parts.netloc:
        raise ValueError
    return value


def _iso(parser: Callable[[str], object]) -> Callable[[SchemaModel, AttributeDef, object], str]:
    def check(model: SchemaModel, attr: AttributeDef, value: object) -> str:
        if not isinstance(value, str):
            raise TypeError
        parser(value)
        return value
    return check


def _ip(model: SchemaModel, attr: AttributeDef, value: object) -> str:
    return str(ipaddress.ip_address(str(value)))


def _status(model: SchemaModel, attr: AttributeDef, value: object) -> str:
    allowed = attr.type_values or tuple(s["name"] for s in model.statuses.values())
    return _folded_names(allowed)[text_of(value).casefold()]  # KeyError: not an allowed status


@functools.lru_cache(maxsize=256)
def _folded_names(names: tuple[str, ...]) -> dict[str, str]:
    return {name.casefold(): name for name in names}


_CHECKERS: dict[str, Callable[[SchemaModel, AttributeDef, object], object]] = {
    "text": _text, "select": _text, "textarea": _text_any, "integer": _integer, "double": _double,
    "boolean": _boolean, "email": _email, "url": _url, "date": _iso(dt.date.fromisoformat),
    "date_time": _iso(dt.datetime.fromisoformat), "time": _iso(dt.time.fromisoformat), "ipaddress": _ip,
    "status": _status, "referenced_object": _text_any,
}


def _resolve_references(model: SchemaModel, store: ObjectStore, plans: list[_Plan], written: list[_Written],
                        result: TypeResult) -> None:
    """Phase 2: every raw reference value → the keys of the objects its AQL finds on the referenced type."""
    changed: set[int] = set()
    for plan in plans:
        if plan.query is None:
            continue
        view = TypeView(store, model.types[plan.attr.reference_type or ""])
        limit = None if plan.attr.maximum_cardinality == -1 else plan.attr.maximum_cardinality
        for item in written:
            ids: dict[int, None] = {}
            for value in item.references.get(plan.attr.name, []):
                params = {locator: value for locator in plan.locators}
                ids.update(dict.fromkeys(sorted(plan.query.select(view, params))))
            keys = [store.objects[i].key for i in list(ids)[:limit]]
            if store.set(item.obj, plan.attr.name, keys):
                changed.add(item.obj.id)
    result.updated_references += len(changed)


def _apply_missing(model: SchemaModel, store: ObjectStore, object_type: ObjectTypeDef, seen: set[tuple],
                   policy: MissingPolicy, result: TypeResult) -> int:
    """Phase 3 for one type; returns the number of objects deleted."""
    if policy == "IGNORE":
        return 0
    mapping = model.mappings[object_type.external_id]
    id_plans = [_Plan(object_type.attribute(m.attribute), m.locators, True)  # type: ignore[arg-type]
                for m in mapping.attributes if m.external_id_part]
    missing = [obj for identity, obj in _identity_map(store, object_type, id_plans).items() if identity not in seen]
    if policy == "REMOVE":
        for obj in missing:
            store.delete(obj)
        result.missing_deleted += len(missing)
        return len(missing)
    _, name, value = policy  # ("UPDATE", attribute name, value)
    attr = object_type.attribute_named(name)
    try:
        if attr is None:
            raise ValueError(f"{object_type.name!r} has no attribute {name!r}")
        values = check_values(model, attr, [value])
    except ValueError as exc:
        result.errors.append(f"missing objects policy of {object_type.name}: {exc}")
        return 0
    result.missing_updated += sum(store.set(obj, attr.name, values) for obj in missing)
    return 0


def _drop_dangling_references(model: SchemaModel, store: ObjectStore) -> None:
    """After REMOVE, references to deleted objects disappear, as they do in Assets."""
    live = {obj.key for obj in store.objects.values()}
    for object_type in model.types.values():
        names = [a.name for a in object_type.attributes if a.type == "referenced_object"]
        for obj in store.of_type(object_type.external_id):
            for name in names:
                keys = obj.attributes.get(name, [])
                if any(k not in live for k in keys):
                    store.set(obj, name, [k for k in keys if k in live])
