"""``entra-assets setup``: submit the schema-and-mapping document, validated before it leaves."""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

from jsonschema import Draft201909Validator

from shared.admin.event_grid import ensure_event_grid
from shared.app import assets_client, graph_client, open_backend
from shared.errors import IncompatibleSchema, RemoteError
from shared.jira_links import ensure_jira_user_attribute
from shared.produce.plan import object_types_for
from shared.produce.subscriptions import ensure_subscriptions
from shared.records.mapping_file_apply import incompatible_changes, unmapped_attributes
from shared.records.schema import build_document
from shared.settings import Settings

# Atlassian's JSON Schema of the document, as published (draft 2019-09).
SCHEMA_FILE = Path(__file__).parent.parent / "records" / "assets-schema-and-mapping.2023_10_19.json"
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
    """Validate and send the document (PUT the first time, PATCH later). Idempotent.

    Before a PATCH the live document is compared with ours: the mapping API only adds, so a rename, retype or
    retargeted reference (usually a MAPPING_FILE change) raises ``IncompatibleSchema`` and nothing is sent.
    Raises ``MappingFileError`` for an invalid MAPPING_FILE.
    """
    types = object_types_for(settings)
    document = build_document(settings.schema_key, types)
    problems = document_problems(document)
    if problems:
        raise RemoteError("the schema-and-mapping document is invalid: " + "; ".join(problems[:5]))
    assets = assets_client(settings)
    notes = [MISSING_OBJECTS_NOTE]
    first = assets.config_status() == "MISSING_MAPPING"
    if not first:
        live = assets.schema_and_mapping()
        refused = incompatible_changes(live, document)
        if refused:
            raise IncompatibleSchema("Assets cannot apply these schema changes (its mapping API only adds): "
                                     + "; ".join(refused))
        notes += [f"no longer mapped (kept in Assets): {line}" for line in unmapped_attributes(live, document)]
    action = assets.submit_document(document, first)
    state = open_backend(settings).state if settings.jira_enabled or settings.notification_url else None
    if settings.jira_enabled:  # Jira User (type User) cannot come through the mapping: the object API makes it
        notes += ensure_jira_user_attribute(settings, state)
    if settings.notification_url:  # a webhook is validated during the create: it must be reachable now
        notes += ensure_subscriptions(graph_client(settings), state, settings).lines()
    if settings.event_grid:  # the subscriptions created the partner topic: activate it, check its delivery
        grid = ensure_event_grid(settings)
        notes += grid.lines + grid.problems
    return SetupOutcome(action, len(types), sum(len(t.attributes) for t in types), notes)
