"""``entra-assets setup``: submit the schema-and-mapping document, validated before it leaves.

Before the first mapping (config status MISSING_MAPPING) setup looks at the object types the target schema
already holds. Our reading of the real API (UNCONFIRMED, reference §3.2-3.4): Assets matches a document's object
type by external id, then by name within the schema, so the first PUT silently takes over a same-named type -
its objects and same-named attributes become this import's. So a type with one of our names that this
installation did not create (no external id, or one without our prefix, SPEC §4) is refused, listed with where
it came from, and nothing is sent; ``setup --adopt`` takes them over. (The Okta importer's destination guide
does the same: a chosen schema that already has the object types must be updated first,
https://piosoftware.atlassian.net/wiki/spaces/WS/pages/89489513/Destination+Configuration+for+Okta+Importer.)
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

from jsonschema import Draft201909Validator

from shared.admin.event_grid import ensure_event_grid
from shared.app import assets_client, graph_client, open_backend
from shared.clients.assets import AssetsClient
from shared.clients.jira import AtlassianError
from shared.errors import ForeignObjectTypes, IncompatibleSchema, RemoteError
from shared.jira_links import ensure_jira_user_attribute, object_api
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
    """What setup did: ``action`` "created" (PUT) or "updated" (PATCH), the counts sent, the notes for the admin,
    and the names of the object types ``--adopt`` took over."""

    action: str
    object_types: int
    attributes: int
    notes: list[str] = field(default_factory=list)
    adopted: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class SchemaType:
    """An object type the target schema already holds: its external id (None: it has none), whether the
    import's schema-and-mapping showed the type at all (``shown``: else its external id is unknown), and its
    object count when the object API told it."""

    name: str
    external_id: str | None
    objects: int | None = None
    shown: bool = True

    def origin(self) -> str:
        """Where it came from, for the admin."""
        made = ("external id unknown (the import does not show the type): made by hand, by another import, or "
                "by an earlier entra-assets import" if not self.shown else
                "made by hand in Assets: no external id" if not self.external_id else
                f"from another import or app: external id '{self.external_id}'")
        count = "" if self.objects is None else f"; {self.objects} object" + ("" if self.objects == 1 else "s")
        return made + count


@lru_cache(maxsize=1)
def _validator() -> Draft201909Validator:
    return Draft201909Validator(json.loads(SCHEMA_FILE.read_text()))


def document_problems(document: dict) -> list[str]:
    """Where ``document`` breaks Atlassian's JSON Schema, one line per problem (empty when valid)."""
    return [f"{'/'.join(map(str, e.absolute_path)) or '(root)'}: {e.message}"
            for e in _validator().iter_errors(document)]


def run_setup(settings: Settings, adopt: bool = False) -> SetupOutcome:
    """Validate and send the document (PUT the first time, PATCH later). Idempotent.

    Before the PUT, and before a PATCH that adds object types, the target schema's object types are read
    (``schema_types``): one with a name we are about to map that this installation did not create raises
    ``ForeignObjectTypes`` and nothing is sent, unless ``adopt``, which lets the write take them over and names
    each in the notes (and ``adopted``). Before a PATCH the live document is
    compared with ours: the mapping API only adds, so a rename, retype or retargeted reference (usually a
    MAPPING_FILE change) raises ``IncompatibleSchema`` and nothing is sent. Raises ``MappingFileError`` for an
    invalid MAPPING_FILE.
    """
    types = object_types_for(settings)
    document = build_document(settings.schema_key, types)
    problems = document_problems(document)
    if problems:
        raise RemoteError("the schema-and-mapping document is invalid: " + "; ".join(problems[:5]))
    assets = assets_client(settings)
    notes = [MISSING_OBJECTS_NOTE]
    first = assets.config_status() == "MISSING_MAPPING"
    adopted: list[SchemaType] = []
    if first:
        adopted, takeover_notes = _check_takeover(settings, assets, document, adopt)
        notes += takeover_notes
    else:
        live = assets.schema_and_mapping()
        refused = incompatible_changes(live, document)
        if refused:
            raise IncompatibleSchema("Assets cannot apply these schema changes (its mapping API only adds): "
                                     + "; ".join(refused))
        notes += [f"no longer mapped (kept in Assets): {line}" for line in unmapped_attributes(live, document)]
        added = _added_names(live, document)
        if added:  # a PATCH adding a type (SYNC_OBJECT_TYPES grew, an upgrade) may meet a hand-made one too
            adopted, takeover_notes = _check_takeover(settings, assets, document, adopt, added)
            notes += takeover_notes
    action = assets.submit_document(document, first)
    state = open_backend(settings).state if settings.jira_enabled or settings.notification_url else None
    if settings.jira_enabled:  # Jira User (type User) cannot come through the mapping: the object API makes it
        notes += ensure_jira_user_attribute(settings, state)
    if settings.notification_url:  # a webhook is validated during the create: it must be reachable now
        notes += ensure_subscriptions(graph_client(settings), state, settings).lines()
    if settings.event_grid:  # the subscriptions created the partner topic: activate it, check its delivery
        grid = ensure_event_grid(settings)
        notes += grid.lines + grid.problems
    return SetupOutcome(action, len(types), sum(len(t.attributes) for t in types), notes,
                        [t.name for t in adopted])


# ------------------------------------------------------------------------------------------------------------
# Object types the schema already holds (before the first mapping, and before a PATCH that adds types)


def _check_takeover(settings: Settings, assets: AssetsClient, document: dict, adopt: bool,
                    names: set[str] | None = None) -> tuple[list[SchemaType], list[str]]:
    """The foreign types the write will take over (only with ``adopt``) and a note naming each, among the
    document's types named in ``names`` (all of them for the first PUT). Raises ``ForeignObjectTypes`` without
    ``adopt`` when there are some, or when the schema could not be read."""
    existing = schema_types(settings, assets)
    if existing is None:  # nothing to compare with: refuse rather than risk a silent takeover
        if not adopt:
            raise ForeignObjectTypes(_unreadable_message(document), [])
        note = ("the target schema's object types could not be read before the first mapping: any named "
                f"{', '.join(_names(document))} were taken over (--adopt) - check them in Assets")
        return [], [note]
    foreign = [t for t in foreign_types(existing, document, settings.schema_key) if names is None or t.name in names]
    if foreign and not adopt:
        raise ForeignObjectTypes(_refusal(foreign), [t.name for t in foreign])
    return foreign, [_adopted_note(t, document) for t in foreign]


def schema_types(settings: Settings, assets: AssetsClient) -> list[SchemaType] | None:
    """The object types of the import's schema, or None when neither API would say.

    With the Jira credentials (settings.jira_enabled) the object API is asked: the import source's
    ``objectSchemaId``, then that schema's flat type list - every type of the schema, whatever the import shows.
    Its documented ``ObjectType`` carries no external id, so the ids come from the import's schema-and-mapping
    (a type it does not show has none we can see, and counts as foreign). Without them, schema-and-mapping
    alone; whether it shows the schema before the first mapping is UNCONFIRMED (a 400/404 there gives None)."""
    live = _live_document(assets)
    shown = {t.get("name"): t.get("externalId") or None for t in _types(live or {})}
    if not settings.jira_enabled:
        return None if live is None else [SchemaType(str(name), xid) for name, xid in shown.items()]
    api = object_api(settings)
    try:
        schema_id = api.import_source(assets.import_source_id()).get("objectSchemaId")
    except AtlassianError as exc:
        raise RemoteError(f"{exc} - reading the import source of ASSETS_IMPORT_TOKEN through the Assets object "
                          "API: JIRA_SITE_URL must be the site whose Assets holds that import") from None
    if not schema_id:
        raise RemoteError("the Assets object API did not say which object schema the import source belongs to "
                          "(no objectSchemaId)")
    return [SchemaType(str(t.get("name")), t.get("externalId") or shown.get(t.get("name")), t.get("objectCount"),
                       shown=bool(t.get("externalId")) or t.get("name") in shown)
            for t in api.object_types_counted(str(schema_id))]


def foreign_types(existing: list[SchemaType], document: dict, prefix: str) -> list[SchemaType]:
    """The existing types that have a name of ``document`` but not an external id with ``prefix`` (ours carry
    it, SPEC §4: ``{prefix}/{key}``). Names match exactly, as the emulator adopts (case rules UNCONFIRMED)."""
    ours = set(_names(document))
    return [t for t in existing if t.name in ours and not (t.external_id or "").startswith(f"{prefix}/")]


def _added_names(live: dict, document: dict) -> set[str]:
    """Names of the document's object types the live schema-and-mapping does not have yet (by external id)."""
    present = {t.get("externalId") for t in _types(live)}
    return {t["name"] for t in _types(document) if t.get("externalId") not in present}


def _live_document(assets: AssetsClient) -> dict | None:
    try:
        return assets.schema_and_mapping()
    except RemoteError as exc:
        if exc.http_status in (400, 404):
            return None
        raise


def _types(document: dict) -> list[dict]:
    """Every object type of a schema-and-mapping document, children included."""
    stack = list((document.get("schema") or {}).get("objectSchema", {}).get("objectTypes") or [])
    out = []
    while stack:
        t = stack.pop(0)
        if isinstance(t, dict):
            out.append(t)
            stack.extend(t.get("children") or [])
    return out


def _names(document: dict) -> list[str]:
    return [t["name"] for t in _types(document)]


_ADOPT_HINT = ("Nothing was sent. Rename or delete them in Assets (Schema configuration > the object type), or "
               "run `entra-assets setup --adopt` to take them over")


def _refusal(foreign: list[SchemaType]) -> str:
    listed = "; ".join(f"{t.name} ({t.origin()})" for t in foreign)
    return (f"the target schema already has object types with entra-assets' names that this installation did "
            f"not create: {listed}. The mapping would take them over - Assets matches object types by "
            f"name, so their objects and same-named attributes would become this import's. {_ADOPT_HINT}")


def _unreadable_message(document: dict) -> str:
    return ("setup could not read the target schema's object types before the first mapping (Assets answered "
            "schema-and-mapping with no schema), so it cannot tell whether the mapping would take over object "
            f"types named {', '.join(_names(document))}. Nothing was sent. Set JIRA_SITE_URL, JIRA_EMAIL and "
            "JIRA_API_TOKEN so setup reads them through the Assets object API, or check the schema in Assets "
            "and run `entra-assets setup --adopt`")


def _adopted_note(adopted: SchemaType, document: dict) -> str:
    xid = next(t.get("externalId") for t in _types(document) if t["name"] == adopted.name)
    return (f"adopted object type '{adopted.name}' ({adopted.origin()}): it is now entra-assets' ({xid}); its "
            "objects and same-named attributes are this import's now, its other attributes stay as they were - "
            "check them, and keep Missing objects = Ignore: Remove or Update would delete or change the objects "
            "Entra ID does not know")
