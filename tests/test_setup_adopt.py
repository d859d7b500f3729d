"""``setup`` before the first mapping: object types of the target schema with our names that this installation
did not create are refused (nothing sent) and ``setup --adopt`` takes them over - over real HTTP on loopback,
with the Jira credentials (the Assets object API lists the schema's types) and without (the import's
schema-and-mapping does)."""
from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from sandbox.emulators import IMPORT_TOKEN, Sandbox, start_sandbox
from sandbox.jira.emulator import SITE_EMAIL, SITE_TOKEN
from shared.admin.setup import run_setup
from shared.app import assets_client, sync_full
from shared.clients.jira import basic_auth
from shared.errors import ForeignObjectTypes, RemoteError
from shared.settings import Settings, load_settings

FOREIGN_ID = "cmdb::externalId/5f0c2d1e-7a41-4b7e-9d3c-1a2b3c4d5e6f"


@pytest.fixture(params=[False, True], ids=["schema-and-mapping", "object-api"])
def box(request) -> Iterator[Sandbox]:
    """A small sandbox, once without and once with the Jira credentials (so with the Assets object API).
    Named ``box`` so that conftest's ``cli`` fixture runs against it."""
    sandbox = start_sandbox(users=20, seed=3, jira=request.param)
    yield sandbox
    sandbox.stop()


@pytest.fixture
def jira_box() -> Iterator[Sandbox]:
    sandbox = start_sandbox(users=20, seed=3, jira=True)
    yield sandbox
    sandbox.stop()


def settings_for(box: Sandbox, home, **extra: str) -> Settings:
    return load_settings({**box.settings(), "ENTRA_ASSETS_HOME": str(home), **extra})


@pytest.fixture
def settings(box, tmp_path) -> Settings:
    return settings_for(box, tmp_path / "home")


def hand_made(box: Sandbox) -> None:
    """What an admin left in the schema before entra-assets: a User type made by hand (no external id) with two
    objects, and a Group type another import created (its external id is not ours)."""
    box.assets.create_type_by_hand("User", attributes=("Name", "Job Title", "Notes"))
    box.assets.create_object_by_hand("User", {"Name": ["Front Desk"], "Notes": ["made by hand"]})
    box.assets.create_object_by_hand("User", {"Name": ["Visitor"], "Job Title": ["Guest"]})
    box.assets.create_type_by_hand("Group", external_id=FOREIGN_ID)


def mapping_writes(box: Sandbox) -> list:
    return [r for r in box.assets.requests if r.method in ("PUT", "PATCH") and r.path.endswith("/mapping")]


def object_api_reads(box: Sandbox) -> list:
    """The object-API reads this feature makes: the import source, and the schema's types with counts."""
    return [r for r in box.assets.requests if r.method == "GET" and r.headers.get("Authorization", "").startswith(
        "Basic ") and (r.path.endswith(f"/importsource/{box.assets.import_source_id}")
                       or r.query.get("includeObjectCounts") == "true")]


def live_types(settings: Settings) -> dict[str, dict]:
    """The object types GET schema-and-mapping shows, by name (the import's own view, over HTTP)."""
    live = assets_client(settings).schema_and_mapping()
    return {t["name"]: t for t in live["schema"]["objectSchema"]["objectTypes"]}


# -- refused ------------------------------------------------------------------------------------------------

def test_types_with_our_names_not_made_by_us_are_refused_and_nothing_changes(box, settings):
    hand_made(box)
    types_before = {name: box.assets.object_type(name) for name in ("User", "Group")}
    objects_before = [(o.id, o.key, dict(o.attributes)) for o in box.assets.objects("User")]
    with pytest.raises(ForeignObjectTypes) as refused:
        run_setup(settings)
    message = str(refused.value)
    assert refused.value.exit_code == 3 and sorted(refused.value.names) == ["Group", "User"]
    assert "User (made by hand in Assets: no external id" in message
    assert f"Group (from another import or app: external id '{FOREIGN_ID}'" in message
    assert "Nothing was sent" in message and "`entra-assets setup --adopt`" in message
    assert "Department" not in message  # our names the schema does not have are not listed
    # Nothing changed: no mapping sent, still MISSING_MAPPING, the types and their objects as they were.
    assert mapping_writes(box) == [] and box.assets.document is None
    assert assets_client(settings).config_status() == "MISSING_MAPPING"
    assert {name: box.assets.object_type(name) for name in ("User", "Group")} == types_before
    assert [(o.id, o.key, dict(o.attributes)) for o in box.assets.objects("User")] == objects_before
    assert not [r for r in box.assets.requests if r.method == "POST" and "/objecttypeattribute/" in r.path]
    if box.jira is not None:  # the object API was asked, and told the object counts
        assert "2 objects" in message and "0 objects" in message and len(object_api_reads(box)) == 2
    else:
        assert "2 objects" not in message and object_api_reads(box) == []  # the import API tells no counts


def test_without_a_schema_to_compare_with_setup_refuses_rather_than_guess(box, settings):
    # The other reading of the real API: schema-and-mapping says nothing before the first mapping.
    box.assets.schema_before_mapping = False
    box.assets.create_type_by_hand("User")
    with pytest.raises(ForeignObjectTypes) as refused:
        run_setup(settings)
    message = str(refused.value)
    if box.jira is not None:  # the object API still lists the type; its external id is unknown
        assert refused.value.names == ["User"] and "User (external id unknown" in message
    else:
        assert refused.value.names == [] and "could not read the target schema's object types" in message
        assert "JIRA_SITE_URL" in message and "entra-assets setup --adopt" in message
    assert mapping_writes(box) == [] and box.assets.document is None
    outcome = run_setup(settings, adopt=True)
    assert outcome.action == "created" and box.assets.object_type("User").external_id == "ENTRA/user"
    expected = "adopted object type 'User'" if box.jira is not None else "could not be read before the first"
    assert any(expected in n for n in outcome.notes)


# -- adopted ------------------------------------------------------------------------------------------------

def test_adopt_takes_them_over_with_their_objects(box, settings):
    hand_made(box)
    user_id, group_id = box.assets.object_type("User").id, box.assets.object_type("Group").id
    hand_objects = {o.id: dict(o.attributes) for o in box.assets.objects("User")}
    outcome = run_setup(settings, adopt=True)
    assert outcome.action == "created" and sorted(outcome.adopted) == ["Group", "User"]
    user_note = next(n for n in outcome.notes if n.startswith("adopted object type 'User'"))
    assert "made by hand in Assets" in user_note and "(ENTRA/user)" in user_note
    assert any(n.startswith("adopted object type 'Group'") and FOREIGN_ID in n for n in outcome.notes)
    assert [r.method for r in mapping_writes(box)] == ["PUT"]
    # The same types (ids), now carrying our external ids; the hand-made objects are still there.
    user, group = box.assets.object_type("User"), box.assets.object_type("Group")
    assert (user.id, user.external_id, group.id, group.external_id) == (user_id, "ENTRA/user", group_id,
                                                                         "ENTRA/group")
    assert {o.id: dict(o.attributes) for o in box.assets.objects("User")} == hand_objects
    shown = live_types(settings)
    assert shown["User"]["externalId"] == "ENTRA/user" and shown["Group"]["externalId"] == "ENTRA/group"
    attributes = {a["name"]: a for a in shown["User"]["attributes"]}
    assert attributes["Job Title"]["externalId"] == "ENTRA/user/job-title"  # same name: now ours
    assert "externalId" not in attributes["Notes"]  # only the admin's: left as it was
    # The import now fills the adopted type beside the objects made by hand (Missing objects = Ignore).
    sync_full(settings)
    uid = min(box.tenant.users)
    assert box.assets.find("User", "Entra Object ID", uid) is not None
    assert box.assets.find("User", "Notes", "made by hand").attributes["Name"] == ["Front Desk"]


def test_adopt_is_refused_by_assets_when_a_same_named_attribute_has_another_type(box, settings):
    # Strict emulator: adopting by name cannot change an attribute's type (Email is an email attribute of ours).
    box.assets.create_type_by_hand("User", attributes=("Name", "Email"))
    with pytest.raises(RemoteError, match="TYPE_CHANGE_NOT_ALLOWED"):
        run_setup(settings, adopt=True)
    assert box.assets.document is None and box.assets.object_type("User").by_hand
    assert assets_client(settings).config_status() == "MISSING_MAPPING"


# -- ours are never foreign; later setups as before ----------------------------------------------------------

def test_our_own_types_from_an_earlier_setup_are_never_foreign(box, settings, tmp_path):
    assert run_setup(settings).action == "created"
    user_id = box.assets.object_type("User").id
    # The admin deletes the import and creates a new one in the same schema: our types stay, the mapping goes.
    token = box.assets.new_import()
    box.assets.create_type_by_hand("Laptop")  # made by hand, but not one of our names
    again = run_setup(settings_for(box, tmp_path / "home", ASSETS_IMPORT_TOKEN=token))
    assert again.action == "created" and again.adopted == []
    assert not [n for n in again.notes if n.startswith("adopted")]
    assert [r.method for r in mapping_writes(box)] == ["PUT", "PUT"]
    assert box.assets.object_type("User").id == user_id and box.assets.object_type("Laptop").by_hand


def test_a_later_setup_patches_as_before_without_looking_for_foreign_types(box, settings):
    run_setup(settings)
    box.assets.reset_log()
    outcome = run_setup(settings, adopt=True)
    assert outcome.action == "updated" and outcome.adopted == []
    assert [r.method for r in mapping_writes(box)] == ["PATCH"]
    assert object_api_reads(box) == []


def test_a_setup_that_adds_a_type_refuses_a_hand_made_one_of_that_name(box, tmp_path):
    # SYNC_OBJECT_TYPES=User first; the admin then makes a Managed Device type by hand; a later setup for every
    # type PATCHes Managed Device in - which would take the hand-made one over (or make a second of that name).
    home = tmp_path / "home"
    assert run_setup(settings_for(box, home, SYNC_OBJECT_TYPES="User")).action == "created"
    box.assets.create_type_by_hand("Managed Device", attributes=("Name", "Serial Number"))
    box.assets.create_object_by_hand("Managed Device", {"Name": ["Spare laptop"], "Serial Number": ["SN-1"]})
    hand_id = box.assets.object_type("Managed Device").id
    document_before = box.assets.document
    box.assets.reset_log()
    everything = settings_for(box, home)
    with pytest.raises(ForeignObjectTypes) as refused:
        run_setup(everything)
    assert refused.value.names == ["Managed Device"]
    assert "Managed Device (made by hand" in str(refused.value) and "setup --adopt" in str(refused.value)
    assert mapping_writes(box) == [] and box.assets.document == document_before
    assert box.assets.object_type("Managed Device").by_hand
    adopted = run_setup(everything, adopt=True)
    assert adopted.action == "updated" and adopted.adopted == ["Managed Device"]
    assert [r.method for r in mapping_writes(box)] == ["PATCH"]
    taken = box.assets.object_type("Managed Device")
    assert taken.id == hand_id and taken.external_id.startswith("ENTRA/") and not taken.by_hand
    assert live_types(everything)["Managed Device"]["externalId"] == taken.external_id
    assert box.assets.find("Managed Device", "Serial Number", "SN-1") is not None  # its object stays


# -- the command line ---------------------------------------------------------------------------------------

def test_the_cli_refuses_with_exit_3_and_adopt_goes_ahead(cli):
    hand_made(cli.box)
    refused = cli("setup")
    assert refused.exit_code == 3
    assert refused.output.startswith("error: the target schema already has object types with entra-assets' "
                                     "names that this installation did not create: User (made by hand")
    assert "run `entra-assets setup --adopt` to take them over" in refused.output
    assert len(refused.output.strip().splitlines()) == 1 and cli.box.assets.document is None
    adopted = cli("setup", "--adopt")
    assert adopted.exit_code == 0, adopted.output
    assert "schema and mapping created" in adopted.output
    assert "adopted object type 'User'" in adopted.output and "adopted object type 'Group'" in adopted.output
    assert cli.box.assets.object_type("User").external_id == "ENTRA/user"


# -- the emulator's object API, as strict as the real one ---------------------------------------------------

def test_the_object_api_lists_hand_made_types_with_basic_auth_only(jira_box):
    jira_box.assets.create_type_by_hand("User")
    jira_box.assets.create_object_by_hand("User", {"Name": ["Front Desk"]})
    base = f"{jira_box.assets.url}/jsm/assets/workspace/{jira_box.assets.workspace_id}/v1"
    site = {"Authorization": basic_auth(SITE_EMAIL, SITE_TOKEN)}
    flat = f"{base}/objectschema/7/objecttypes/flat"
    source = f"{base}/importsource/{jira_box.assets.import_source_id}"
    for headers in ({}, {"Authorization": f"Bearer {IMPORT_TOKEN}"}):
        assert httpx.get(flat, headers=headers).status_code == 401
        assert httpx.get(source, headers=headers).status_code == 401
    [listed] = httpx.get(flat, headers=site, params={"includeObjectCounts": "true"}).json()
    assert listed["name"] == "User" and listed["objectCount"] == 1 and "externalId" not in listed
    assert httpx.get(flat, headers=site).json()[0]["objectCount"] == 0  # counts only when asked for
    assert httpx.get(source, headers=site).json()["objectSchemaId"] == "7"
    assert httpx.get(f"{base}/importsource/0000", headers=site).status_code == 404
