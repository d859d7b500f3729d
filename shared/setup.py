"""``entra-assets setup``: submit the schema-and-mapping document, validated before it leaves."""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

from jsonschema import Draft201909Validator

from shared.errors import RemoteError
from shared.runtime import assets_client
from shared.schema import OBJECT_TYPES, build_document
from shared.settings import Settings

# Atlassian's JSON Schema of the document, as published (draft 2019-09).
SCHEMA_FILE = Path(__file__).with_name("assets-schema-and-mapping.2023_10_19.json")
MISSING_OBJECTS_NOTE = (
    "in Assets > Schema configuration > Import > this import > Edit mapping, set 'Missing objects' to "
    "Ignore for every object type: entra-assets pushes only what changed and marks departures itself, so "
    "Remove or Update would wrongly touch every object not in a run (the mapping document cannot set this)")


@dataclass
class SetupOutcome:
    action: str
    object_types: int
    attributes: int
    notes: list[str] = field(default_factory=list)


@lru_cache(maxsize=1)
def _validator() -> Draft201909Validator:
    return Draft201909Validator(json.loads(SCHEMA_FILE.read_text()))


def document_problems(document: dict) -> list[str]:
    """Where ``document`` breaks Atlassian's JSON Schema, one line per problem (empty when valid)."""
    return [f"{'/'.join(map(str, e.absolute_path)) or '(root)'}: {e.message}"
            for e in _validator().iter_errors(document)]


def run_setup(settings: Settings) -> SetupOutcome:
    """Validate and send the document (PUT the first time, PATCH later). Idempotent."""
    document = build_document(settings.schema_key)
    problems = document_problems(document)
    if problems:
        raise RemoteError("the schema-and-mapping document is invalid: " + "; ".join(problems[:5]))
    action = assets_client(settings).submit_document(document)
    return SetupOutcome(action, len(OBJECT_TYPES), sum(len(t.attributes) for t in OBJECT_TYPES),
                        [MISSING_OBJECTS_NOTE])
