"""The schema-and-mapping document built from the declarative table."""
from shared.admin.setup import document_problems
from shared.records.schema import OBJECT_TYPES, USER, build_document

SPEC_USER = ["Name", "User Principal Name", "Email", "Given Name", "Surname", "Job Title", "Employee ID",
             "Employee Type", "Company", "Department", "Office Location", "Manager", "Mobile Phone",
             "Business Phone", "User Type", "Account Enabled", "Licenses", "Last Sign-In", "Status", "Entra Object ID"]


def test_document_is_valid_against_atlassians_json_schema():
    assert document_problems(build_document("ENTRA")) == []


def test_validation_reports_where_a_document_breaks():
    document = build_document("ENTRA")
    del document["schema"]["objectSchema"]["objectTypes"][0]["attributes"][0]["type"]
    problems = document_problems(document)
    assert problems and "'type' is a required property" in problems[0]


def test_spec_names_and_stable_prefixed_external_ids():
    document = build_document("ACME")
    types = document["schema"]["objectSchema"]["objectTypes"]
    assert [t["name"] for t in types] == ["User", "Group", "Device", "Application", "License",
                                          "Managed Device", "Department", "Office Location", "Address", "City",
                                          "Country"]
    assert sorted(a["name"] for a in types[0]["attributes"]) == sorted(SPEC_USER)
    ids = [t["externalId"] for t in types] + [a["externalId"] for t in types for a in t["attributes"]]
    assert len(ids) == len(set(ids)) and all(i.startswith("ACME/") for i in ids)
    assert build_document("ACME") == document  # stable: same input, same document


def test_every_mapping_has_an_identity_and_references_resolve_by_aql():
    document = build_document("ENTRA")
    type_ids = {t["externalId"] for t in document["schema"]["objectSchema"]["objectTypes"]}
    for mapping in document["mapping"]["objectTypeMappings"]:
        attrs = mapping["attributesMapping"]
        assert any(a.get("externalIdPart") for a in attrs), mapping["objectTypeName"]
        for a in attrs:
            if "objectMappingIQL" in a:
                assert a["objectMappingIQL"].endswith("${" + a["attributeLocators"][0] + "}")
    for t in document["schema"]["objectSchema"]["objectTypes"]:
        for a in t["attributes"]:
            if a["type"] == "referenced_object":
                assert a["referenceObjectTypeExternalId"] in type_ids
    manager = next(a for a in document["mapping"]["objectTypeMappings"][0]["attributesMapping"]
                   if a["attributeName"] == "Manager")
    assert manager["objectMappingIQL"] == '"Entra Object ID" = ${managerId}'
    status = next(a for a in document["schema"]["objectSchema"]["objectTypes"][0]["attributes"]
                  if a["name"] == "Status")
    assert status["type"] == "status" and status["typeValues"] == ["Active", "Disabled", "Deleted"]
    assert len(OBJECT_TYPES) == 11 and USER.attr("Manager").ref == "user"
    members = next(a for a in document["schema"]["objectSchema"]["objectTypes"][1]["attributes"]
                   if a["name"] == "Members")
    assert members["maximumCardinality"] == -1 and members["referenceObjectTypeExternalId"] == "ENTRA/user"


def test_spec_attributes_of_groups_devices_applications():
    spec = {
        "Group": ["Name", "Description", "Email", "Group Types", "Security Enabled", "Mail Enabled", "Members",
                  "Owners", "Status", "Entra Object ID"],
        "Device": ["Name", "Device ID", "Operating System", "OS Version", "Trust Type", "Compliant", "Managed",
                   "Account Enabled", "Last Sign-In", "Registered Owners", "Status", "Entra Object ID"],
        "Application": ["Name", "App ID", "Publisher", "Publisher Tenant ID", "Service Principal Type",
                        "Account Enabled", "Owners", "Status", "Entra Object ID"],
        "Managed Device": ["Intune Device ID", "Name", "Serial Number", "Manufacturer", "Model", "Operating System",
                           "OS Version", "Compliance State", "Management State", "Ownership", "Enrolled",
                           "Last Sync", "Storage Total (GB)", "Storage Free (GB)", "Primary User", "Entra Device",
                           "Status"],
    }
    types = {t.name: t for t in OBJECT_TYPES}
    for name, attributes in spec.items():
        assert sorted(a.name for a in types[name].attributes) == sorted(attributes)
    # Every type can be marked Deleted (derived ones too: an addition to SPEC §4).
    assert all(t.attr("Status").type == "status" for t in OBJECT_TYPES)


def test_sync_object_types_limits_the_schema_to_the_chosen_types_and_what_they_can_refer_to():
    from shared.produce.plan import object_types_for
    from shared.settings import load_settings

    users = object_types_for(load_settings({"SYNC_OBJECT_TYPES": "User"}))
    assert [t.name for t in users] == ["User", "Department", "Office Location", "Address", "City", "Country"]
    assert "Manager" in [a.name for a in users[0].attributes]  # User to User stays
    [group] = object_types_for(load_settings({"SYNC_OBJECT_TYPES": "Group"}))
    assert group.name == "Group" and not {"Members", "Owners"} & {a.name for a in group.attributes}
    [device] = object_types_for(load_settings({"SYNC_OBJECT_TYPES": "Device"}))
    assert "Registered Owners" not in [a.name for a in device.attributes]
    [intune] = object_types_for(load_settings({"SYNC_OBJECT_TYPES": "Intune"}))
    assert not {"Primary User", "Entra Device"} & {a.name for a in intune.attributes}
    mixed = object_types_for(load_settings({"SYNC_OBJECT_TYPES": "Device, Managed Device"}))
    assert [a.name for a in mixed[1].attributes if a.ref] == ["Entra Device"]
    both = object_types_for(load_settings({"SYNC_OBJECT_TYPES": "User,Device"}))
    assert "Registered Owners" in [a.name for a in both[[t.key for t in both].index("device")].attributes]
    for types in (users, (group,), (device,), (intune,), mixed, both):  # each a valid document whose references all resolve
        document = build_document("ENTRA", types)
        assert document_problems(document) == []
        declared = {t["externalId"] for t in document["schema"]["objectSchema"]["objectTypes"]}
        referred = {a["referenceObjectTypeExternalId"] for t in document["schema"]["objectSchema"]["objectTypes"]
                    for a in t["attributes"] if "referenceObjectTypeExternalId" in a}
        assert referred <= declared
    assert len(object_types_for(load_settings({}))) == len(OBJECT_TYPES)  # all, as before
