"""MAPPING_FILE: loading and validation (YAML and JSON), apply_mapping_file, extract, the live-schema comparison."""
from __future__ import annotations

import copy
import json
import textwrap
from dataclasses import replace
from pathlib import Path

import pytest
import yaml

import shared.records.mapping_file_apply
from shared.admin.setup import document_problems
from shared.errors import EntraAssetsError
from shared.records.mapping_file import MappingFileError, load_mapping_file
from shared.records.mapping_file_apply import (
    apply_mapping_file,
    extract,
    graph_select,
    incompatible_changes,
    unmapped_attributes,
)
from shared.records.mapping_file_value import EMPTY, CustomAttr, MappingFile
from shared.records.schema import BY_KEY, OBJECT_TYPES, Attr, build_document

GOOD_YAML = """\
attributes:            # add attributes from any Graph property
  User:
    - name: Cost Center
      source: employeeOrgData.costCenter
      type: text
    - name: Extension 1
      source: onPremisesExtensionAttributes.extensionAttribute1
    - name: Badge Number
      source: extension_0123456789abcdef0123456789abcdef_badgeNumber   # directory extension
      type: integer
    - name: Hire Date
      source: employeeHireDate
      type: date_time
  Device:
    - {name: Manufacturer, source: manufacturer}
rename:
  User: {Mobile Phone: Mobile}
omit:
  User: [Employee Type, Business Phone]
"""
GOOD_JSON = {
    "attributes": {
        "User": [
            {"name": "Cost Center", "source": "employeeOrgData.costCenter", "type": "text"},
            {"name": "Extension 1", "source": "onPremisesExtensionAttributes.extensionAttribute1"},
            {"name": "Badge Number", "source": "extension_0123456789abcdef0123456789abcdef_badgeNumber",
             "type": "integer"},
            {"name": "Hire Date", "source": "employeeHireDate", "type": "date_time"},
        ],
        "Device": [{"name": "Manufacturer", "source": "manufacturer"}],
    },
    "rename": {"User": {"Mobile Phone": "Mobile"}},
    "omit": {"User": ["Employee Type", "Business Phone"]},
}
PREFIX = "ENTRA"


def write(tmp_path: Path, text: str, name: str = "mapping.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def problems_of(tmp_path: Path, text: str, name: str = "mapping.yaml") -> list[str]:
    with pytest.raises(MappingFileError) as caught:
        load_mapping_file(write(tmp_path, text, name))
    return caught.value.problems


def by_external_id(document: dict) -> tuple[dict, dict]:
    schema = {a["externalId"]: a for t in document["schema"]["objectSchema"]["objectTypes"]
              for a in t["attributes"]}
    mapping = {a["attributeExternalId"]: a for m in document["mapping"]["objectTypeMappings"]
               for a in m["attributesMapping"]}
    return schema, mapping


# --- loading ------------------------------------------------------------------------------------------------


def test_yaml_and_json_load_to_the_same_customization(tmp_path):
    from_yaml = load_mapping_file(write(tmp_path, GOOD_YAML))
    from_json = load_mapping_file(write(tmp_path, json.dumps(GOOD_JSON, indent=2), "mapping.json"))
    assert from_yaml == from_json
    assert hash(from_yaml) == hash(from_json)
    assert from_yaml.attributes["user"][0] == CustomAttr("Cost Center", "employeeOrgData.costCenter", "text")
    assert from_yaml.attributes["device"] == (CustomAttr("Manufacturer", "manufacturer"),)
    assert from_yaml.renames == {"user": {"Mobile Phone": "Mobile"}}
    assert from_yaml.omit == {"user": ("Employee Type", "Business Phone")}
    assert from_yaml and not EMPTY


@pytest.mark.parametrize(("name", "text"), [
    ("empty.yaml", ""), ("comments.yml", "# nothing yet\n"), ("null.yaml", "~\n"), ("empty.json", "  \n"),
    ("sections.yaml", "attributes:\nrename:\nomit:\n"),
    ("sections.json", '{"attributes": {}, "omit": {"User": []}}'),
])
def test_empty_files_change_nothing(tmp_path, name, text):
    assert load_mapping_file(write(tmp_path, text, name)) == EMPTY


def test_object_types_and_attribute_names_are_matched_case_insensitively(tmp_path):
    c = load_mapping_file(write(tmp_path, "rename:\n  office location: {address: Street Address}\n"
                                           "omit:\n  user: [employee type]\n"))
    assert c.renames == {"office": {"Address": "Street Address"}}
    assert c.omit == {"user": ("Employee Type",)}


def test_mapping_file_apply_still_exports_the_names_other_modules_import():
    # shared.produce.full and shared.admin.setup import these from shared.records.mapping_file_apply.
    for name in ("apply_mapping_file", "extract", "graph_select", "load_mapping_file", "incompatible_changes",
                 "unmapped_attributes", "MappingFileError", "MappingFile", "CustomAttr", "EMPTY"):
        assert hasattr(shared.records.mapping_file_apply, name), name
    assert shared.records.mapping_file_apply.load_mapping_file is load_mapping_file
    assert shared.records.mapping_file_apply.EMPTY is EMPTY


def test_error_is_a_settings_kind_error(tmp_path):
    with pytest.raises(MappingFileError) as caught:
        load_mapping_file(write(tmp_path, "extra: 1\n"))
    assert isinstance(caught.value, EntraAssetsError)
    assert caught.value.exit_code == 2
    assert str(tmp_path / "mapping.yaml") in str(caught.value)


def test_unsupported_extension_and_missing_file(tmp_path):
    with pytest.raises(MappingFileError, match=r"\.yaml, \.yml or \.json.*'\.txt'"):
        load_mapping_file(write(tmp_path, "attributes: {}", "mapping.txt"))
    with pytest.raises(MappingFileError, match="cannot read the file"):
        load_mapping_file(tmp_path / "absent.yaml")


# --- invalid files: each message names the place and the bad value ------------------------------------------

INVALID_YAML = [
    ("unknown section", "atributes:\n  User: []\n",
     ["line 1, column 1 (atributes)", "unknown section 'atributes'", "did you mean 'attributes'"]),
    ("unknown object type", "rename:\n  Users: {Email: Mail}\n",
     ["line 2, column 3 (rename.Users)", "unknown object type 'Users'", "User, Group"]),
    ("derived type gets no Graph attributes", "attributes:\n  Department:\n    - {name: Cost, source: x}\n",
     ["line 3", "attributes.Department", "Department is derived from user attributes",
      "cannot get Graph-sourced attributes"]),
    ("empty name", "attributes:\n  User:\n    - {name: '', source: mail}\n",
     ["line 3, column 14 (attributes.User[0].name)", "the name is empty"]),
    ("long name", f"attributes:\n  User:\n    - {{name: {'N' * 101}, source: mail}}\n",
     ["line 3", "attributes.User[0].name", "101 characters long", "at most 100"]),
    ("reserved characters", "attributes:\n  User:\n    - name: 'Cost: Center?'\n      source: mail\n",
     ["line 3, column 13 (attributes.User[0].name)", "'Cost: Center?'", ": ?", "does not allow"]),
    ("clash with an existing attribute", "attributes:\n  User:\n    - {name: JOB TITLE, source: mail}\n",
     ["line 3", "'JOB TITLE' clashes with the attribute 'Job Title' of User"]),
    ("clash with an omitted attribute", ("attributes:\n  User:\n    - {name: Company, source: mail}\n"
     "omit:\n  User: [Company]\n"), ["line 3", "the omitted attribute 'Company' (Assets keeps it)"]),
    ("clash with a renamed attribute", ("attributes:\n  User:\n    - {name: Mobile, source: mail}\n"
     "rename:\n  User: {Mobile Phone: Mobile}\n"),
     ["line 3", "'Mobile' clashes with 'Mobile Phone' renamed to"]),
    ("rename onto an existing name", "rename:\n  User: {Mobile Phone: email}\n",
     ["line 2, column 24 (rename.User.Mobile Phone)", "'email' clashes with the attribute 'Email'"]),
    ("two added attributes with one name", ("attributes:\n  Group:\n    - {name: Tag, source: theme}\n"
     "    - {name: tag, source: visibility}\n"),
     ["line 4", "attributes.Group[1].name", "'tag' clashes with the added"]),
    ("system attribute name", "attributes:\n  User:\n    - {name: Created, source: createdDateTime}\n",
     ["line 3", "'Created' is a system attribute"]),
    ("unknown type", "attributes:\n  User:\n    - name: Cost\n      source: mail\n      type: datetime\n",
     ["line 5, column 13 (attributes.User[0].type)", "unknown type 'datetime'", "did you mean 'date_time'",
      "text, textarea, integer"]),
    ("reference type refused",
     "attributes:\n  User:\n    - {name: Boss, source: mail, type: referenced_object}\n",
     ["line 3", "unknown type 'referenced_object'", "references, status and select cannot be added"]),
    ("unknown property", "attributes:\n  User:\n    - {name: Cost, source: costCentre}\n",
     ["line 3", "attributes.User[0].source", "'costCentre' is not a property of a Graph user"]),
    ("property case", "attributes:\n  User:\n    - {name: Fax, source: faxnumber}\n",
     ["line 3", "did you mean 'faxNumber'"]),
    ("relationship", "attributes:\n  User:\n    - {name: Boss, source: manager.displayName}\n",
     ["line 3", "'manager' is a relationship of a Graph user"]),
    ("malformed directory extension",
     "attributes:\n  User:\n    - {name: Badge, source: extension_0123_badge}\n",
     ["line 3", "'extension_0123_badge' is not a directory extension", "32 hex digits"]),
    ("extension attribute out of range",
     "attributes:\n  User:\n    - {name: Ext, source: onPremisesExtensionAttributes.extensionAttribute16}\n",
     ["line 3", "extensionAttribute16", "extensionAttribute1...extensionAttribute15"]),
    ("extension attributes need a sub-property",
     "attributes:\n  User:\n    - {name: Ext, source: onPremisesExtensionAttributes}\n",
     ["line 3", "attributes.User[0].source", "must be followed by .extensionAttribute1", "not nothing"]),
    # Documented for devices, but not in the v1.0 metadata msgraph-sdk is generated from: refused (stricter).
    ("device extension attributes are not v1.0",
     "attributes:\n  Device:\n    - {name: Ext, source: extensionAttributes.extensionAttribute1}\n",
     ["line 3", "'extensionAttributes' is not a property of a Graph device (v1.0)"]),
    ("complex sub-property",
     "attributes:\n  Application:\n    - {name: Vendor, source: verifiedPublisher.name}\n",
     ["line 3", "verifiedPublisher must be followed by .addedDateTime, .displayName or .verifiedPublisherId",
      "not 'name'"]),
    ("employeeOrgData sub-property",
     "attributes:\n  User:\n    - {name: Org, source: employeeOrgData.region}\n",
     ["line 3", "'employeeOrgData.region'", ".costCenter or .division", "not 'region'"]),
    ("outside the main store", "attributes:\n  User:\n    - {name: Skills, source: skills}\n",
     ["line 3", "'skills'", "outside the directory's main store", "delta $select"]),
    ("sign-in activity",
     "attributes:\n  User:\n    - {name: Last, source: signInActivity.lastSignInDateTime}\n",
     ["line 3", "signInActivity", "delta $select"]),
    ("single-group property", "attributes:\n  Group:\n    - {name: Ext, source: allowExternalSenders}\n",
     ["line 3", "allowExternalSenders", "only when reading one group"]),
    ("plain property with a sub-path",
     "attributes:\n  Device:\n    - {name: Maker, source: manufacturer.name}\n",
     ["line 3", "manufacturer is a plain value; it has no 'name'"]),
    ("property of another resource",
     "attributes:\n  Application:\n    - {name: Maker, source: manufacturer}\n",
     ["line 3", "'manufacturer' is not a property of a Graph servicePrincipal"]),
    ("source mapped twice", ("attributes:\n  Device:\n    - {name: Maker, source: manufacturer}\n"
     "    - {name: Brand, source: manufacturer}\n"),
     ["line 4", "attributes.Device[1].source", "already mapped to 'Maker' (line 3)"]),
    ("unknown attribute key", "attributes:\n  User:\n    - {name: Cost, source: mail, typ: text}\n",
     ["line 3", "attributes.User[0].typ", "unknown key 'typ'", "did you mean 'type'"]),
    ("missing source", "attributes:\n  User:\n    - name: Cost\n", ["line 3", "has no 'source'"]),
    ("name must be text", "attributes:\n  User:\n    - {name: 42, source: mail}\n",
     ["line 3", "42", "must be text"]),
    ("rename of an unknown attribute", "rename:\n  User: {Mobile: Cell}\n",
     ["line 2, column 10 (rename.User.Mobile)", "User has no attribute 'Mobile'", "Mobile Phone"]),
    ("rename of the label", "rename:\n  Group: {Name: Group Name}\n",
     ["line 2", "rename.Group.Name", "'Name' is the label of Group; it cannot be renamed"]),
    ("omit the identity", "omit:\n  User: [Entra Object ID]\n",
     ["line 2, column 10 (omit.User[0])",
      "'Entra Object ID' is the identity of User; it cannot be left out"]),
    ("omit the status", "omit:\n  Country: [Status]\n", ["line 2", "'Status' is the status of Country"]),
    ("omit what is renamed", "rename:\n  User: {Surname: Last Name}\nomit:\n  User: [Surname]\n",
     ["line 4, column 10 (omit.User[0])", "'Surname' is both omitted and renamed to 'Last Name' (line 2)"]),
    ("omit is a list", "omit:\n  User: Surname\n", ["line 2", "must be a list of attribute names"]),
    ("duplicate key", "rename:\n  User: {Surname: A}\n  User: {Surname: B}\n",
     ["line 3", "duplicate key 'User'"]),
    ("not a mapping", "- attributes\n", ["line 1", "must be a mapping with the sections"]),
    ("syntax error", "attributes:\n  User: [\n", ["line 3", "invalid YAML"]),
    ("arbitrary tags are refused", "attributes: !!python/object/apply:os.system ['echo owned']\n",
     ["line 1", "unsupported"]),
    ("scalar tags are refused", "rename:\n  User: {Surname: !!python/name:os.system x}\n",
     ["line 2", "unsupported value"]),
]


@pytest.mark.parametrize(("case", "text", "expected"), INVALID_YAML, ids=[c[0] for c in INVALID_YAML])
def test_invalid_yaml_names_line_and_value(tmp_path, case, text, expected):
    problems = problems_of(tmp_path, text)
    assert len(problems) == 1, problems
    for part in expected:
        assert part in problems[0], (part, problems[0])


def test_invalid_json_names_key_path_and_line(tmp_path):
    document = copy.deepcopy(GOOD_JSON)
    document["attributes"]["User"][1]["type"] = "txt"
    document["attributes"]["Device"][0]["source"] = "onPremisesExtensionAttributes.extensionAttribute1"
    document["rename"]["User"]["Name"] = "Display Name"
    problems = problems_of(tmp_path, json.dumps(document, indent=2), "mapping.json")
    assert len(problems) == 3, problems
    assert problems[0].startswith("attributes.User[1].type (line ")
    assert "'txt'" in problems[0]
    assert problems[1].startswith("attributes.Device[0].source (line ")
    assert "not a property of a Graph device" in problems[1]
    assert problems[2].startswith("rename.User.Name (line ")
    assert "cannot be renamed" in problems[2]


BETA_ONLY_YAML = """\
attributes:
  Application:
    - name: Homepage
      source: homepage
    - name: Vendor
      source: publisherName
"""


def test_a_beta_only_property_is_refused_at_load_with_its_line(tmp_path):
    # servicePrincipal.publisherName exists only in Graph beta: v1.0 answers 400 "Could not find a property
    # named 'publisherName'" to a $select naming it, so every sync would fail. Refused when the file is read.
    problems = problems_of(tmp_path, BETA_ONLY_YAML)
    assert problems == [("line 6, column 15 (attributes.Application[1].source): the source 'publisherName': "
                         "'publisherName' is not a property of a Graph servicePrincipal (v1.0)")]
    document = yaml.safe_load(BETA_ONLY_YAML)
    problems = problems_of(tmp_path, json.dumps(document, indent=2), "mapping.json")
    assert len(problems) == 1, problems
    line = json.dumps(document, indent=2).splitlines().index('        "source": "publisherName"') + 1
    assert problems[0].startswith(f"attributes.Application[1].source (line {line}): ")
    assert "'publisherName' is not a property of a Graph servicePrincipal (v1.0)" in problems[0]


def test_invalid_json_without_lines_still_names_the_key_path(tmp_path):
    # Tabs between JSON tokens are valid JSON that PyYAML does not read: no lines then, key paths remain.
    text = '{"attributes":\t{"User": [{"name": "A", "source": "mail", "type": "txt"}]}}'
    problems = problems_of(tmp_path, text, "mapping.json")
    assert problems == [
        ("attributes.User[0].type: unknown type 'txt': use one of text, textarea, integer, double, boolean, "
         "date, date_time, url, email (references, status and select cannot be added)")]


def test_json_syntax_error_and_duplicate_keys(tmp_path):
    assert problems_of(tmp_path, '{"attributes": {\n  "User": [}\n', "mapping.json")[0].startswith(
        "line 2, column 12: invalid JSON")
    duplicate = problems_of(tmp_path, '{"omit": {}, "omit": {}}', "mapping.json")
    assert duplicate == ["(top level): duplicate key 'omit'"]


def test_every_problem_is_reported_at_once_in_file_order(tmp_path):
    text = textwrap.dedent("""\
        attributes:
          User:
            - name: Cost.Center
              source: employeeOrgData.costcenter
              type: txt
            - {name: Skills, source: skills}
          Department:
            - {name: X, source: y}
        rename:
          User: {Name: Full Name, Nope: X}
        omit:
          User: [Status]
        extra: 1
        """)
    problems = problems_of(tmp_path, text)
    assert [p.split(":")[0] for p in problems] == [
        "line 3, column 13 (attributes.User[0].name)", "line 4, column 15 (attributes.User[0].source)",
        "line 5, column 13 (attributes.User[0].type)", "line 6, column 30 (attributes.User[1].source)",
        "line 8, column 5 (attributes.Department)", "line 10, column 10 (rename.User.Name)",
        "line 10, column 27 (rename.User.Nope)", "line 12, column 10 (omit.User[0])",
        "line 13, column 1 (extra)"]
    assert "did you mean 'costCenter'" in problems[1]


# --- apply_mapping_file ----------------------------------------------------------------------------------------------


def test_customize_keeps_external_ids_and_the_document_stays_valid(tmp_path):
    c = load_mapping_file(write(tmp_path, GOOD_YAML))
    types = apply_mapping_file(OBJECT_TYPES, c)
    document = build_document(PREFIX, types)
    assert document_problems(document) == []
    schema, mapping = by_external_id(document)
    default_schema, _ = by_external_id(build_document(PREFIX))

    # renamed: same external id, new name, same locator
    assert default_schema["ENTRA/user/mobile-phone"]["name"] == "Mobile Phone"
    assert schema["ENTRA/user/mobile-phone"]["name"] == "Mobile"
    assert mapping["ENTRA/user/mobile-phone"] == {
        "attributeExternalId": "ENTRA/user/mobile-phone", "attributeName": "Mobile",
        "attributeLocators": ["mobilePhone"]}
    # omitted: gone from schema and mapping
    for gone in ("ENTRA/user/employee-type", "ENTRA/user/business-phone"):
        assert gone in default_schema
        assert gone not in schema and gone not in mapping
    # added: type, locator, description
    assert schema["ENTRA/user/custom-cost-center"]["type"] == "text"
    assert schema["ENTRA/user/custom-badge-number"]["type"] == "integer"
    assert schema["ENTRA/user/custom-hire-date"]["type"] == "date_time"
    assert mapping["ENTRA/user/custom-cost-center"]["attributeLocators"] == ["x_employeeOrgData__costCenter"]
    assert mapping["ENTRA/user/custom-extension-1"]["attributeLocators"] == [
        "x_onPremisesExtensionAttributes__extensionAttribute1"]
    assert mapping["ENTRA/device/custom-manufacturer"]["attributeLocators"] == ["x_manufacturer"]
    assert "externalIdPart" not in mapping["ENTRA/user/custom-cost-center"]
    # everything else untouched
    untouched = set(default_schema) - {"ENTRA/user/mobile-phone", "ENTRA/user/employee-type",
                                       "ENTRA/user/business-phone"}
    assert all(schema[x] == default_schema[x] for x in untouched)


def test_customize_is_pure(tmp_path):
    c = load_mapping_file(write(tmp_path, GOOD_YAML))
    before = copy.deepcopy(OBJECT_TYPES)
    first, second = apply_mapping_file(OBJECT_TYPES, c), apply_mapping_file(OBJECT_TYPES, c)
    assert first == second
    assert OBJECT_TYPES == before
    assert apply_mapping_file(OBJECT_TYPES, EMPTY) == OBJECT_TYPES
    user = first[0]
    added = user.attr("Cost Center")
    assert (added.source, added.xid, added.locator, added.type) == (
        "employeeOrgData.costCenter", "custom-cost-center", "x_employeeOrgData__costCenter", "text")
    assert user.attr("Mobile").key == "mobile-phone"
    # only the types given come back (SYNC_OBJECT_TYPES may leave some out)
    assert [t.key for t in apply_mapping_file((BY_KEY["device"],), c)] == ["device"]


def test_a_rename_of_a_referenced_attribute_follows_into_the_query():
    c = MappingFile(renames={"city": {"City Key": "Key of City"}})  # not allowed by the file (identity)
    types = apply_mapping_file(OBJECT_TYPES, c)
    address = next(t for t in types if t.key == "address")
    assert address.attr("City").ref_attr == "Key of City"


def test_added_attribute_external_id_is_a_slug_of_its_name():
    assert CustomAttr("Cost Center (EU)", "mail").xid == "custom-cost-center-eu"
    assert CustomAttr("Ünïcödé", "mail").xid == "custom-n-c-d"
    hashed = CustomAttr("番号", "mail").xid
    assert hashed.startswith("custom-") and len(hashed) > 7


# --- graph_select and extract -------------------------------------------------------------------------------


def test_graph_select_lists_first_segments_once_in_order(tmp_path):
    c = load_mapping_file(write(tmp_path, GOOD_YAML + "  Group: []\n"))
    user, group, device = apply_mapping_file(OBJECT_TYPES, c)[:3]
    assert graph_select(user) == [
        "employeeOrgData", "onPremisesExtensionAttributes",
        "extension_0123456789abcdef0123456789abcdef_badgeNumber", "employeeHireDate"]
    assert graph_select(device) == ["manufacturer"]
    assert graph_select(group) == []
    division = Attr("Division", "x_d", source="employeeOrgData.division")
    two = replace(user, attributes=user.attributes + (division,))
    assert graph_select(two).count("employeeOrgData") == 1


def custom(source: str, kind: str = "text") -> Attr:
    return Attr("X", "x_" + source.replace(".", "__"), kind, source=source)


RAW_USER = {
    "id": "u1",
    "employeeOrgData": {"costCenter": "CC-42", "division": None},
    "onPremisesExtensionAttributes": {"extensionAttribute1": "  blue  ", "extensionAttribute2": None},
    "extension_0123456789abcdef0123456789abcdef_badgeNumber": "00123",
    "employeeHireDate": "2021-03-01T00:00:00Z",
    "proxyAddresses": ["SMTP:a@example.com", "smtp:b@example.com"],
    "otherMails": ["", "c@example.com"],
    "identities": [{"issuer": "contoso.com", "signInType": "userPrincipalName"}, {"issuer": "ext.example"}],
    "accountEnabled": True,
    "showInAddressList": "False",
    "faxNumber": 12345,
    "assignedLicenses": [{"skuId": "s1", "disabledPlans": []}],
    "preferredLanguage": "x" * 300,
}


@pytest.mark.parametrize(("source", "kind", "expected"), [
    ("employeeOrgData.costCenter", "text", "CC-42"),
    ("employeeOrgData.division", "text", None),
    ("onPremisesExtensionAttributes.extensionAttribute1", "text", "blue"),
    ("onPremisesExtensionAttributes.extensionAttribute2", "text", None),
    ("onPremisesExtensionAttributes.extensionAttribute3", "text", None),
    ("extension_0123456789abcdef0123456789abcdef_badgeNumber", "text", "00123"),
    ("extension_0123456789abcdef0123456789abcdef_badgeNumber", "integer", 123),
    ("extension_0123456789abcdef0123456789abcdef_badgeNumber", "double", 123.0),
    ("extension_ffffffffffffffffffffffffffffffff_missing", "text", None),
    ("mobilePhone", "text", None),
    ("proxyAddresses", "text", "SMTP:a@example.com, smtp:b@example.com"),
    ("proxyAddresses", "textarea", "SMTP:a@example.com, smtp:b@example.com"),
    ("otherMails", "email", "c@example.com"),
    ("identities.issuer", "text", "contoso.com, ext.example"),
    ("employeeHireDate", "date_time", "2021-03-01T00:00:00Z"),
    ("employeeHireDate", "date", "2021-03-01T00:00:00Z"),
    ("accountEnabled", "boolean", True),
    ("accountEnabled", "text", "true"),
    ("showInAddressList", "boolean", False),
    ("faxNumber", "text", "12345"),
    ("faxNumber", "integer", 12345),
    ("employeeOrgData.costCenter", "integer", None),
    ("employeeOrgData.costCenter", "double", None),
    ("employeeOrgData.costCenter", "boolean", None),
    ("employeeOrgData.costCenter", "date", None),
    ("employeeOrgData.costCenter", "email", None),
    ("employeeOrgData.costCenter", "url", None),
    ("assignedLicenses", "text", '{"disabledPlans":[],"skuId":"s1"}'),
    ("employeeOrgData.costCenter.deeper", "text", None),
])
def test_extract(source, kind, expected):
    assert extract(RAW_USER, custom(source, kind)) == expected


def test_extract_trims_text_to_the_assets_limit_but_not_textarea():
    assert len(extract(RAW_USER, custom("preferredLanguage"))) == 255
    assert len(extract(RAW_USER, custom("preferredLanguage", "textarea"))) == 300


@pytest.mark.parametrize("odd", [None, [], "text", {"employeeOrgData": "flat"},
                                 {"employeeOrgData": [1, {"x": 2}]},
                                 {"employeeOrgData": {"costCenter": float("nan")}},
                                 {"employeeOrgData": {"costCenter": {"a": {1, 2}}}}])
def test_extract_never_raises_on_odd_data(odd):
    for kind in ("text", "integer", "double", "boolean", "date_time", "email", "url"):
        assert extract(odd, custom("employeeOrgData.costCenter", kind)) is None


@pytest.mark.parametrize(("value", "kind", "expected"), [
    (True, "integer", None), ("12.0", "integer", 12), ("1_000", "integer", None), (2 ** 40, "integer", None),
    (1.5, "integer", None), ("1.5", "double", 1.5), ("inf", "double", None), ("yes", "boolean", True),
    ("TRUE ", "boolean", True), (0, "boolean", False), (2, "boolean", None), ([True], "boolean", True),
    ([True, False], "boolean", None), ("https://contoso.com/x", "url", "https://contoso.com/x"),
    ("contoso.com", "url", None), ("2024-02-30", "date", "2024-02-30"), ("yesterday", "date_time", None),
])
def test_extract_conversions(value, kind, expected):
    assert extract({"faxNumber": value}, custom("faxNumber", kind)) == expected


def test_extract_ignores_default_attributes():
    assert extract(RAW_USER, BY_KEY["user"].attr("Email")) is None


# --- comparison with the live schema ------------------------------------------------------------------------


def live_document() -> dict:
    """What GET schema-and-mapping might return for the default document: extra keys, a system attribute."""
    document = copy.deepcopy(build_document(PREFIX))
    for t in document["schema"]["objectSchema"]["objectTypes"]:
        t["attributes"].insert(0, {"name": "Key", "type": "text", "label": False, "unique": True})
        for a in t["attributes"]:
            a.setdefault("minimumCardinality", 0)
            a.setdefault("maximumCardinality", 1)
    return document


def test_pure_additions_are_compatible_and_omissions_are_only_unmapped(tmp_path):
    c = load_mapping_file(write(tmp_path, "attributes:\n  User:\n    - {name: Fax, source: faxNumber}\n"
                                           "omit:\n  User: [Employee Type]\n"))
    new = build_document(PREFIX, apply_mapping_file(OBJECT_TYPES, c))
    assert incompatible_changes(live_document(), new) == []
    assert incompatible_changes(live_document(), build_document(PREFIX)) == []
    notes = unmapped_attributes(live_document(), new)
    assert notes == [("User: attribute 'Employee Type' (ENTRA/user/employee-type) is no longer mapped; "
                      "Assets keeps it and its values, which stop being updated (delete it in Assets if "
                      "unwanted)")]
    assert unmapped_attributes(live_document(), build_document(PREFIX)) == []


def test_a_rename_is_incompatible_and_says_what_to_do(tmp_path):
    c = load_mapping_file(write(tmp_path, "rename:\n  User: {Mobile Phone: Mobile}\n"))
    lines = incompatible_changes(live_document(), build_document(PREFIX, apply_mapping_file(OBJECT_TYPES, c)))
    assert lines == [("User: attribute 'Mobile Phone' (ENTRA/user/mobile-phone) would be renamed to "
                      "'Mobile', which Assets imports cannot do: rename it in Assets first "
                      "(Schema › User › attributes) or revert the MAPPING_FILE change")]


def test_retype_retarget_cardinality_and_type_rename_are_incompatible():
    live = live_document()
    new = copy.deepcopy(build_document(PREFIX))
    types = {t["externalId"]: t for t in new["schema"]["objectSchema"]["objectTypes"]}
    attrs = {a["externalId"]: a for t in types.values() for a in t["attributes"]}
    attrs["ENTRA/user/surname"]["type"] = "textarea"
    attrs["ENTRA/user/manager"]["referenceObjectTypeExternalId"] = "ENTRA/group"
    attrs["ENTRA/group/members"]["maximumCardinality"] = 1
    types["ENTRA/device"]["name"] = "Computer"
    lines = incompatible_changes(live, new)
    assert len(lines) == 4, lines
    assert lines[0].startswith("object type 'Device' (ENTRA/device) would be renamed to 'Computer'")
    assert "'Surname' (ENTRA/user/surname) is text in Assets but textarea" in lines[1]
    assert "revert the type in the MAPPING_FILE" in lines[1]
    assert "'Manager' (ENTRA/user/manager) refers to ENTRA/user in Assets but to ENTRA/group" in lines[2]
    assert ("'Members' (ENTRA/group/members) holds any number of values in Assets but at most 1 value"
            in lines[3])


def test_unmapped_object_types_and_foreign_attributes():
    live = live_document()
    live["schema"]["objectSchema"]["objectTypes"][0]["attributes"].append(
        {"externalId": "cmdb::externalId/abc", "name": "Added by hand", "type": "text"})
    new = build_document(PREFIX, tuple(t for t in OBJECT_TYPES if t.key != "device"))
    assert unmapped_attributes(live, new) == [
        "object type 'Device' (ENTRA/device) is no longer synchronised; Assets keeps it and its objects"]
    assert incompatible_changes({}, new) == [] and unmapped_attributes({}, new) == []
