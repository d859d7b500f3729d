"""The Graph v1.0 catalogue: every property of the entity types entra-assets reads (user, group, device,
servicePrincipal, application, orgContact, directoryObject, managedDevice, subscribedSku) with its kind, and
the sub-properties of the complex types they reach. Loaded from ``graph_catalogue.json``, which
``tools/graph_catalogue.py`` writes from msgraph-sdk's generated v1.0 models (tests/test_graph_catalogue.py
checks that it is current); nothing here imports msgraph. Pure apart from reading that file once.

A property is ``primitive`` (an Edm type: String, Boolean, Guid, DateTimeOffset, Integer, Number, ...), an
``enum``, ``complex`` (its type is in ``complex_type``) or a ``navigation`` relationship (manager, members,
owners ...: an entity type, read through ``$expand``, a relationship URL or, on delta, ``$select``).
"""
from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache
from pathlib import Path

_FILE = Path(__file__).with_name("graph_catalogue.json")
ENUM, COMPLEX, NAVIGATION = "enum", "complex", "navigation"


@dataclass(frozen=True, slots=True)
class Property:
    """One property of a Graph type: its JSON name, kind, type name and whether it holds a collection."""

    name: str
    kind: str
    type: str
    collection: bool

    @property
    def edm(self) -> str:
        """The type as ``$filter`` compares it: ``String``, ``Collection(String)`` (an enum compares as text)."""
        element = "String" if self.kind == ENUM else self.type
        return f"Collection({element})" if self.collection else element


def _properties(specs: Mapping[str, dict]) -> dict[str, Property]:
    return {name: Property(name, s["kind"], s["type"], s["collection"]) for name, s in specs.items()}


@cache
def _load() -> tuple[dict[str, dict[str, Property]], dict[str, dict[str, Property]]]:
    raw = json.loads(_FILE.read_text(encoding="utf-8"))
    return ({name: _properties(p) for name, p in raw["entityTypes"].items()},
            {name: _properties(p) for name, p in raw["complexTypes"].items()})


def entity_type(name: str) -> Mapping[str, Property]:
    """Every property of the entity type ``name``, navigation properties included; KeyError if not held."""
    return _load()[0][name]


def complex_type(name: str) -> Mapping[str, Property]:
    """The sub-properties of the complex type ``name``; KeyError if not held."""
    return _load()[1][name]
