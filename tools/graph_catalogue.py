"""Writes ``shared/records/graph_catalogue.json``: the Graph v1.0 properties of the resources entra-assets reads, taken
from msgraph-sdk's generated v1.0 models (a dev dependency; production code only loads the JSON, through
``shared.records.graph_catalogue``). Run ``python -m tools.graph_catalogue`` after upgrading msgraph-sdk;
tests/test_graph_catalogue.py regenerates the text in memory and fails with a diff when the file is stale.

How a model is read: ``get_field_deserializers()`` maps each exact JSON name (inherited ones included: Entity
gives ``id``, DirectoryObject ``deletedDateTime``) to a lambda that calls one reader of a parse node. Each lambda
is called with a probe that records which reader it called and with what class: ``get_str_value`` is a String,
``get_object_value(VerifiedPublisher)`` a complex ``verifiedPublisher``, ``get_collection_of_object_values(
DirectoryObject)`` a collection of an entity type - a navigation property (OData allows entity types only
behind navigation properties). The SDK reads every integer width (Int16/32/64, Byte) with ``get_int_value`` and
every fractional one (Single, Double, Decimal) with ``get_float_value``, so the catalogue says ``Integer`` and
``Number`` for them. ``@odata.type`` is an annotation, not a property, and is left out. Complex types are
listed when a structural property of a listed entity type reaches them, nested ones included.
"""
from __future__ import annotations

import datetime
import importlib
import json
import re
import sys
import uuid
from importlib.metadata import version
from pathlib import Path

from msgraph.generated.models.entity import Entity

OUTPUT = Path(__file__).resolve().parent.parent / "shared" / "records" / "graph_catalogue.json"
# The entity types entra-assets reads or will read: the four synced resources, app registrations (credential
# expiry), what group members and owners can be (directoryObject, orgContact), and Intune devices and licences.
ENTITY_TYPES = ("application", "device", "directoryObject", "group", "managedDevice", "orgContact",
                "servicePrincipal", "subscribedSku", "user")
_PRIMITIVE_READERS = {"get_str_value": "String", "get_bool_value": "Boolean", "get_int_value": "Integer",
                      "get_float_value": "Number", "get_uuid_value": "Guid", "get_datetime_value": "DateTimeOffset",
                      "get_date_value": "Date", "get_time_value": "TimeOfDay", "get_timedelta_value": "Duration",
                      "get_bytes_value": "Binary"}
_PRIMITIVE_CLASSES = {str: "String", bool: "Boolean", int: "Integer", float: "Number", uuid.UUID: "Guid",
                      datetime.datetime: "DateTimeOffset", datetime.date: "Date", datetime.time: "TimeOfDay",
                      datetime.timedelta: "Duration", bytes: "Binary"}
_MODELS = "msgraph.generated.models"


class _Probe:
    """Stands in for a kiota ParseNode: remembers the one reader a field deserializer calls, and its argument."""

    def __init__(self) -> None:
        self.reader: str | None = None
        self.argument: object = None

    def __getattr__(self, reader: str):
        def read(*args):
            self.reader, self.argument = reader, args[0] if args else None
        return read


def type_name(cls: type) -> str:
    """The OData name of a model class below microsoft.graph: ``VerifiedPublisher`` -> ``verifiedPublisher``,
    a class of a sub-namespace with its prefix (``security.alert``)."""
    namespace = cls.__module__.removeprefix(_MODELS + ".").rpartition(".")[0]  # "" or e.g. "security"
    name = cls.__name__[0].lower() + cls.__name__[1:]
    return f"{namespace}.{name}" if namespace else name


def model_class(name: str) -> type:
    """The generated model class of the entity type ``name`` (e.g. ``servicePrincipal``)."""
    module = importlib.import_module(f"{_MODELS}.{re.sub(r'(?<!^)(?=[A-Z])', '_', name).lower()}")
    return getattr(module, name[0].upper() + name[1:])


def describe(cls: type) -> tuple[dict[str, dict], list[type]]:
    """``({json name: {"kind", "type", "collection"}}, complex classes it names)`` of one model class."""
    properties: dict[str, dict] = {}
    complex_classes: list[type] = []
    for name, deserializer in cls().get_field_deserializers().items():
        if name == "@odata.type":
            continue
        probe = _Probe()
        deserializer(probe)
        reader, argument = probe.reader or "", probe.argument
        collection = reader.startswith("get_collection_of_")
        if reader in _PRIMITIVE_READERS:
            kind, type_ = "primitive", _PRIMITIVE_READERS[reader]
        elif reader == "get_collection_of_primitive_values":
            kind, type_ = "primitive", _PRIMITIVE_CLASSES[argument]
        elif reader in ("get_enum_value", "get_collection_of_enum_values"):
            kind, type_ = "enum", type_name(argument)
        elif reader in ("get_object_value", "get_collection_of_object_values"):
            kind = "navigation" if issubclass(argument, Entity) else "complex"
            type_ = type_name(argument)
            if kind == "complex":
                complex_classes.append(argument)
        else:
            raise ValueError(f"{cls.__name__}.{name}: unknown reader {reader!r}")
        properties[name] = {"kind": kind, "type": type_, "collection": collection}
    return properties, complex_classes


def build() -> dict:
    """The catalogue: the listed entity types and every complex type their properties reach."""
    entities: dict[str, dict] = {}
    complex_types: dict[str, dict] = {}
    pending: list[type] = []
    for name in ENTITY_TYPES:
        entities[name], found = describe(model_class(name))
        pending += found
    while pending:
        cls = pending.pop()
        name = type_name(cls)
        if name not in complex_types:
            complex_types[name], found = describe(cls)
            pending += found
    return {"source": f"msgraph-sdk {version('msgraph-sdk')} generated v1.0 models; "
                      "regenerate with: python -m tools.graph_catalogue",
            "entityTypes": entities, "complexTypes": complex_types}


def render(catalogue: dict) -> str:
    """The file's text: sorted, one property per line, so that a diff names the properties that changed."""
    lines = ["{", f'  "source": {json.dumps(catalogue["source"])},']
    sections = [key for key in catalogue if key != "source"]
    for s, section in enumerate(sections):
        lines.append(f'  "{section}": {{')
        types = sorted(catalogue[section].items())
        for t, (name, properties) in enumerate(types):
            lines.append(f'    "{name}": {{')
            rows = sorted(properties.items())
            lines += [f'      "{prop}": {json.dumps(spec, sort_keys=True)}' + ("," if i < len(rows) - 1 else "")
                      for i, (prop, spec) in enumerate(rows)]
            lines.append("    }" + ("," if t < len(types) - 1 else ""))
        lines.append("  }" + ("," if s < len(sections) - 1 else ""))
    lines.append("}")
    return "\n".join(lines) + "\n"


def main() -> int:
    text = render(build())
    OUTPUT.write_text(text, encoding="utf-8")
    catalogue = json.loads(text)
    print(f"wrote {OUTPUT}: {len(catalogue['entityTypes'])} entity types, "
          f"{len(catalogue['complexTypes'])} complex types")
    return 0


if __name__ == "__main__":
    sys.exit(main())
