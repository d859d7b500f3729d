"""The Assets Imports API emulator, over real HTTP: auth, import source state, mapping rules, executions,
the objects they produce, missing-objects policies and the failure knobs."""
from __future__ import annotations

import copy
import re
import threading
import time

import httpx
import pytest

from sandbox.assets.apply import ObjectStore, apply_execution, read_locators, select
from sandbox.assets.emulator import AssetsEmulator
from sandbox.assets.mapping import merge_document

TOKEN = "sandbox-import-token"


def _attr(ext: str, name: str, type_: str = "text", **extra) -> dict:
    return {"externalId": ext, "name": name, "description": name, "type": type_, **extra}


def _map(ext: str, name: str, locator: str, **extra) -> dict:
    return {"attributeExternalId": ext, "attributeName": name, "attributeLocators": [locator], **extra}


DOCUMENT = {
    "schema": {
        "objectSchema": {"name": "Test", "description": "emulator tests", "objectTypes": [
            {"externalId": "t/person", "name": "Person", "description": "people", "attributes": [
                _attr("a/name", "Name", label=True),
                _attr("a/pid", "Person ID", unique=True),
                _attr("a/email", "Email", "email"),
                _attr("a/age", "Age", "integer"),
                _attr("a/active", "Active", "boolean"),
                _attr("a/status", "Status", "status", typeValues=["Active", "Gone"]),
                _attr("a/tags", "Tags", maximumCardinality=-1),
                _attr("a/team", "Team", "referenced_object", referenceObjectTypeExternalId="t/team"),
                _attr("a/manager", "Manager", "referenced_object", referenceObjectTypeExternalId="t/person"),
            ]},
            {"externalId": "t/team", "name": "Team", "description": "teams", "attributes": [
                _attr("a/team-name", "Name", label=True)]},
        ]},
        "statusSchema": {"statuses": [{"name": "Active", "description": "", "category": "active"},
                                      {"name": "Gone", "description": "", "category": "inactive"}]},
    },
    "mapping": {"objectTypeMappings": [
        {"objectTypeExternalId": "t/person", "objectTypeName": "Person", "selector": "people",
         "description": "people", "attributesMapping": [
             _map("a/name", "Name", "name"), _map("a/pid", "Person ID", "id", externalIdPart=True),
             _map("a/email", "Email", "email"), _map("a/age", "Age", "age"),
             _map("a/active", "Active", "active"), _map("a/status", "Status", "status"),
             _map("a/tags", "Tags", "tags"),
             _map("a/team", "Team", "team", objectMappingIQL="Name = ${team}"),
             _map("a/manager", "Manager", "managerId", objectMappingIQL='"Person ID" = ${managerId}')]},
        {"objectTypeExternalId": "t/team", "objectTypeName": "Team", "selector": "teams", "description": "teams",
         "attributesMapping": [_map("a/team-name", "Name", "name", externalIdPart=True)]},
    ]},
}


def document() -> dict:
    return copy.deepcopy(DOCUMENT)


def person(pid: str, **fields) -> dict:
    return {"id": pid, "name": f"Person {pid}", "email": f"{pid}@example.com", "status": "active", **fields}


class Api:
    """A client that only follows the links the emulator hands out."""

    def __init__(self, emulator: AssetsEmulator, token: str = TOKEN):
        self.http = httpx.Client(headers={"Authorization": f"Bearer {token}"}, timeout=10)
        self.links = self.http.get(f"{emulator.url}/jsm/assets/v1/imports/info").json()["links"]

    def config_status(self) -> dict:
        return self.http.get(self.links["getStatus"]).json()

    def put(self, doc: dict | None = None, **params) -> httpx.Response:
        return self.http.put(self.links["mapping"], json=doc or document(), params=params)

    def patch(self, doc: dict, **params) -> httpx.Response:
        return self.http.patch(self.links["mapping"], json=doc, params=params)

    def start(self) -> dict:
        response = self.http.post(self.links["start"])
        assert response.status_code == 200, response.text
        return response.json()["links"]

    def send(self, execution: dict, data: dict, completed: bool, chunk: str = "c") -> httpx.Response:
        return self.http.post(execution["submitResults"],
                              json={"data": data, "clientGeneratedId": chunk, "completed": completed})

    def wait(self, execution: dict, timeout: float = 10) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            body = self.http.get(execution["getExecutionStatus"]).json()
            if body["status"] in ("DONE", "CANCELLED"):
                return body
            time.sleep(0.02)
        raise AssertionError("the execution did not finish")

    def run(self, *chunks: dict) -> dict:
        """One execution: every chunk in order, the last one completed; returns objectTypeResultMap by name."""
        execution = self.start()
        for i, chunk in enumerate(chunks):
            assert self.send(execution, chunk, i == len(chunks) - 1, f"chunk-{i}").status_code == 200
        body = self.wait(execution)
        assert body["status"] == "DONE" and body["progressResult"]["result"] == "OK"
        return {r["objectTypeName"]: r for r in body["progressResult"]["objectTypeResultMap"].values()}


@pytest.fixture
def api(assets_emulator) -> Api:
    return Api(assets_emulator)


@pytest.fixture
def ready(api) -> Api:
    assert api.put().status_code == 204
    return api


def _codes(response: httpx.Response) -> list[str]:
    assert response.status_code == 400, response.text
    return [e["code"] for e in response.json()["dataValidationErrors"]]


# -- auth and import source -------------------------------------------------------------------------------

def test_info_gives_exactly_three_links_into_the_workspace(assets_emulator, api):
    response = api.http.get(f"{assets_emulator.url}/jsm/assets/v1/imports/info")
    assert response.status_code == 200 and set(response.json()) == {"links"}
    base = (f"{assets_emulator.url}/jsm/assets/workspace/{assets_emulator.workspace_id}/v1/importsource/"
            f"{assets_emulator.import_source_id}")
    assert api.links == {"getStatus": f"{base}/configstatus", "start": f"{base}/executions",
                         "mapping": f"{base}/mapping"}


@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer wrong"}, {"Authorization": TOKEN}])
def test_a_bad_or_missing_token_is_401_on_every_route(assets_emulator, api, headers):
    for url in (f"{assets_emulator.url}/jsm/assets/v1/imports/info", api.links["getStatus"]):
        response = httpx.get(url, headers=headers)
        assert response.status_code == 401 and response.json() == {"code": 401, "message": "Unauthorized"}
    assert httpx.post(api.links["start"], headers=headers).status_code == 401


def test_regenerating_the_token_locks_out_the_old_one(assets_emulator, api):
    new = assets_emulator.regenerate_token()
    assert new != TOKEN
    assert api.http.get(api.links["getStatus"]).status_code == 401
    assert Api(assets_emulator, new).config_status() == {"status": "MISSING_MAPPING"}


def test_config_status_follows_mapping_executions_and_the_admin(assets_emulator, api):
    assert api.config_status() == {"status": "MISSING_MAPPING"}
    api.put()
    assert api.config_status() == {"status": "IDLE"}
    execution = api.start()
    running = api.config_status()
    assert running["status"] == "RUNNING"
    assert running["links"] == {"getExecutionStatus": execution["getExecutionStatus"], "cancel": execution["cancel"]}
    api.send(execution, {"teams": []}, completed=True)
    api.wait(execution)
    assert api.config_status() == {"status": "IDLE"}
    assets_emulator.disable()
    assert api.config_status() == {"status": "DISABLED"}
    assets_emulator.enable()
    assert api.config_status() == {"status": "IDLE"}


def test_unknown_import_source_in_a_path_is_404(api):
    other = api.links["getStatus"].replace("/importsource/", "/importsource/0000")
    assert api.http.get(other).status_code == 404


# -- schema and mapping ---------------------------------------------------------------------------------------

def test_put_once_then_409_and_patch_adds(assets_emulator, api):
    assert api.put().status_code == 204 and assets_emulator.document is not None
    second = api.put()
    assert second.status_code == 409 and second.json()["message"] == "A mapping already exists for this import"
    patch = document()
    person_type = patch["schema"]["objectSchema"]["objectTypes"][0]
    person_type["description"] = "humans"
    person_type["attributes"].append(_attr("a/phone", "Phone"))
    patch["schema"]["objectSchema"]["objectTypes"].append(
        {"externalId": "t/site", "name": "Site", "description": "", "attributes": [_attr("a/site", "Site Name")]})
    assert api.patch(patch).status_code == 204
    live = api.http.get(api.links["mapping"].replace("/mapping", "/schema-and-mapping")).json()
    types = {t["name"]: t for t in live["schema"]["objectSchema"]["objectTypes"]}
    assert types["Person"]["description"] == "humans" and set(types) == {"Person", "Team", "Site"}
    assert [a["name"] for a in types["Person"]["attributes"]][-1] == "Phone"
    assert live["schema"]["iconSchema"] == {"icons": []}  # as observed on real tenants: a PATCH would reject it
    assert live == assets_emulator.document


def test_async_patch_answers_303_to_a_finished_progress(ready):
    response = ready.patch(document(), **{"async": "true"})
    assert response.status_code == 303
    progress = ready.http.get(response.headers["Location"])
    assert "/mapping/progress/" in response.headers["Location"]
    assert progress.json() == {"progressStatus": "FINISHED", "result": "OK",
                               "resultMessage": "Schema and mapping successfully updated"}


def test_patch_before_any_put_is_refused(api):
    assert _codes(api.patch(document())) == ["MISSING_MAPPING"]


def _rename_type(doc):
    doc["schema"]["objectSchema"]["objectTypes"][1]["name"] = "Squad"


def _rename_attribute(doc):
    doc["schema"]["objectSchema"]["objectTypes"][0]["attributes"][2]["name"] = "Mail"


def _change_type(doc):
    doc["schema"]["objectSchema"]["objectTypes"][0]["attributes"][3]["type"] = "text"


def _change_target(doc):
    doc["schema"]["objectSchema"]["objectTypes"][0]["attributes"][7]["referenceObjectTypeExternalId"] = "t/person"


@pytest.mark.parametrize("change, code", [(_rename_type, "RENAME_NOT_ALLOWED"),
                                          (_rename_attribute, "RENAME_NOT_ALLOWED"),
                                          (_change_type, "TYPE_CHANGE_NOT_ALLOWED"),
                                          (_change_target, "REFERENCE_CHANGE_NOT_ALLOWED")])
def test_patch_cannot_rename_retype_or_retarget(assets_emulator, ready, change, code):
    before = assets_emulator.document
    patch = document()
    change(patch)
    assert code in _codes(ready.patch(patch))
    assert assets_emulator.document == before


def test_json_schema_errors_name_the_place(api):
    doc = document()
    del doc["schema"]["objectSchema"]["objectTypes"][0]["attributes"][0]["type"]
    doc["schema"]["statusSchema"]["statuses"][0]["category"] = "retired"
    response = api.put(doc)
    assert _codes(response) == ["SCHEMA_VALIDATION", "SCHEMA_VALIDATION"]
    messages = " ".join(e["message"] for e in response.json()["dataValidationErrors"])
    assert "'type' is a required property" in messages and "'retired' is not one of" in messages
    assert api.config_status() == {"status": "MISSING_MAPPING"}
    assert _codes(api.http.put(api.links["mapping"], content=b"{not json")) == ["INVALID_JSON"]


def _types(doc):
    return doc["schema"]["objectSchema"]["objectTypes"]


def _person_mapping(doc):
    return doc["mapping"]["objectTypeMappings"][0]["attributesMapping"]


SEMANTIC_BREAKS = {
    "EXTERNAL_ID_ALL_OR_NONE": lambda d: _types(d)[1]["attributes"][0].pop("externalId"),
    "DUPLICATE_EXTERNAL_ID": lambda d: _types(d)[1]["attributes"][0].update(externalId="a/name"),
    "UNKNOWN_REFERENCE_OBJECT_TYPE": lambda d: _types(d)[0]["attributes"][7].update(
        referenceObjectTypeExternalId="t/nowhere"),
    "UNKNOWN_EXTERNAL_ID_MAPPING": lambda d: _person_mapping(d)[2].update(attributeExternalId="a/nope"),
    "UNKNOWN_STATUS": lambda d: _types(d)[0]["attributes"][5]["typeValues"].append("Retired"),
    "MISSING_EXTERNAL_ID_PART": lambda d: _person_mapping(d)[1].pop("externalIdPart"),
    "MISSING_OBJECT_MAPPING_IQL": lambda d: _person_mapping(d)[7].pop("objectMappingIQL"),
    "INVALID_OBJECT_MAPPING_IQL": lambda d: _person_mapping(d)[7].update(objectMappingIQL="Name LIKE ${team}"),
    "MULTIPLE_LABEL_ATTRIBUTES": lambda d: _types(d)[0]["attributes"][1].update(label=True),
}


@pytest.mark.parametrize("code", sorted(SEMANTIC_BREAKS))
def test_semantic_validation_errors(api, code):
    doc = document()
    SEMANTIC_BREAKS[code](doc)
    response = api.put(doc)
    assert code in _codes(response)
    assert all(e["message"] for e in response.json()["dataValidationErrors"])
    assert api.config_status() == {"status": "MISSING_MAPPING"}


def test_mapping_an_unknown_object_type_and_iql_on_unknown_attributes(api):
    doc = document()
    doc["mapping"]["objectTypeMappings"][1]["objectTypeExternalId"] = "t/ghost"
    _person_mapping(doc)[8]["objectMappingIQL"] = '"Employee ID" = ${managerId}'
    response = api.put(doc)
    assert _codes(response) == ["INVALID_OBJECT_MAPPING_IQL", "UNKNOWN_EXTERNAL_ID_MAPPING"]


# -- executions -------------------------------------------------------------------------------------------------

def test_start_refusals_name_the_reason(assets_emulator, api):
    def refusal() -> dict:
        response = api.http.post(api.links["start"])
        assert response.status_code == 409
        return response.json()
    assert refusal() == {"result": "error", "errorCode": "MISSING_MAPPING"}
    api.put()
    api.start()
    assert refusal() == {"result": "error", "errorCode": "IN_PROGRESS"}
    assets_emulator.disable()
    assert refusal() == {"result": "error", "errorCode": "DISABLED"}


def test_start_hands_out_four_execution_links(ready):
    response = ready.http.post(ready.links["start"])
    body = response.json()
    assert body["result"] == "success" and set(body["links"]) == {"submitProgress", "submitResults",
                                                                  "getExecutionStatus", "cancel"}
    assert ready.http.put(body["links"]["submitProgress"],
                          json={"steps": {"total": 2, "current": 1}, "objects": {"total": 3, "processed": 1}}
                          ).status_code == 200


def test_chunks_are_applied_on_completion_with_counters(assets_emulator, ready):
    execution = ready.start()
    first = {"people": [person("p1", team="red", age=41, active="true", tags=["a", "b"]),
                        person("p2", managerId="p3", team="Blue")]}
    second = {"people": [person("p3", team="RED", active=False)], "teams": [{"name": "Red"}, {"name": "Blue"}]}
    assert ready.send(execution, first, completed=False).status_code == 200
    assert ready.http.get(execution["getExecutionStatus"]).json()["status"] == "INGESTING"
    assert assets_emulator.objects("Person") == []  # nothing is applied before completed:true
    assert ready.send(execution, second, completed=True).status_code == 200
    body = ready.wait(execution)
    result = body["progressResult"]
    people = result["objectTypeResultMap"][str(_type_id(assets_emulator, "Person"))]
    assert people["objectTypeName"] == "Person" and people["objectsCreated"] == 3
    assert people["entriesInSource"] == 3 and people["objectsWithUpdatedReferences"] == 3
    assert people["duplicateEnries"] == 0 and people["errorMessages"] is None
    assert result["totalNumberEntriesInImport"] == 5 and result["status"] == "FINISHED"
    p1 = assets_emulator.find("Person", "Person ID", "p1")
    red = assets_emulator.find("Team", "Name", "Red")
    assert re.fullmatch(r"ENTRA-\d+", p1.key) and red.key != p1.key
    assert p1.attributes == {"Name": ["Person p1"], "Person ID": ["p1"], "Email": ["p1@example.com"], "Age": [41],
                             "Active": [True], "Status": ["Active"], "Tags": ["a", "b"], "Team": [red.key]}
    p2 = assets_emulator.find("Person", "Person ID", "p2")
    assert p2.attributes["Manager"] == [assets_emulator.find("Person", "Person ID", "p3").key]
    assert assets_emulator.executions[-1].progress_result["objectTypeResultMap"] == result["objectTypeResultMap"]
    assert ready.config_status() == {"status": "IDLE"}


def test_status_is_answered_while_an_execution_is_applied(assets_emulator, ready, monkeypatch):
    """Assets answers status while it processes an execution. The emulator applied a million records (minutes)
    under the lock every request takes, so the worker's status poll got no answer within 90 s and failed."""
    import sandbox.assets.emulator as emulator_module
    applying, release = threading.Event(), threading.Event()

    def slow_apply(*args):
        applying.set()
        release.wait(10)
        return apply_execution(*args)
    monkeypatch.setattr(emulator_module, "apply_execution", slow_apply)
    execution = ready.start()
    assert ready.send(execution, {"people": [person("p1")]}, completed=True).status_code == 200
    assert applying.wait(5)
    try:
        status = ready.http.get(execution["getExecutionStatus"], timeout=2).json()["status"]
    finally:
        release.set()
    assert status == "PROCESSING"
    assert ready.wait(execution)["status"] == "DONE" and assets_emulator.find("Person", "Person ID", "p1")


def _type_id(emulator: AssetsEmulator, name: str) -> int:
    return next(t["objectTypeId"] for t in emulator.executions[-1].progress_result["objectTypeResultMap"].values()
                if t["objectTypeName"] == name)


def test_identity_matches_objects_across_executions(assets_emulator, ready):
    people = [person("p1"), person("p2"), person("P2")]  # identity is case-sensitive: P2 is someone else
    assert ready.run({"people": people})["Person"]["objectsCreated"] == 3
    keys = {o.attributes["Person ID"][0]: o.key for o in assets_emulator.objects("Person")}
    again = ready.run({"people": [person("p1"), person("p2", name="Renamed"), person("P2")]})["Person"]
    assert (again["objectsCreated"], again["objectsUpdated"], again["objectsIdentical"]) == (0, 1, 2)
    assert {o.attributes["Person ID"][0]: o.key for o in assets_emulator.objects("Person")} == keys
    assert assets_emulator.find("Person", "Person ID", "p2").attributes["Name"] == ["Renamed"]


def test_empty_values_clear_attributes(assets_emulator, ready):
    ready.run({"people": [person("p1", age=3, team="x")], "teams": [{"name": "X"}]})
    assert "Team" in assets_emulator.find("Person", "Person ID", "p1").attributes
    result = ready.run({"people": [person("p1", age=None, email="", team=None)]})["Person"]
    assert result["objectsUpdated"] == 1 and result["objectsWithUpdatedReferences"] == 1
    assert assets_emulator.find("Person", "Person ID", "p1").attributes == {
        "Name": ["Person p1"], "Person ID": ["p1"], "Status": ["Active"]}


def test_references_resolve_across_executions_and_missing_ones_stay_empty(assets_emulator, ready):
    ready.run({"teams": [{"name": "Platform"}]})
    result = ready.run({"people": [person("p1", team="platform", managerId="nobody")]})["Person"]
    assert result["errorMessages"] is None  # a reference that finds nothing is not an error
    p1 = assets_emulator.find("Person", "Person ID", "p1")
    assert p1.attributes["Team"] == [assets_emulator.find("Team", "Name", "Platform").key]
    assert "Manager" not in p1.attributes


def test_invalid_values_fail_their_entry_only(assets_emulator, ready):
    result = ready.run({"people": [
        person("ok"), person("bad-mail", email="nope"), person("bad-age", age="forty"),
        person("bad-status", status="Retired"), person("too-long", name="x" * 256),
        person("bad-bool", active="yes"), person("two-teams", team=["a", "b"])]})["Person"]
    assert result["objectsCreated"] == 1 and len(result["errorMessages"]) == 6
    assert any("bad-mail" in m and "'Email'" in m and "valid email" in m for m in result["errorMessages"])
    assert [o.attributes["Person ID"] for o in assets_emulator.objects("Person")] == [["ok"]]
    assert assets_emulator.executions[-1].results["t/person"].failed == 6


def test_duplicates_empty_identities_and_empty_labels_are_counted(assets_emulator, ready):
    result = ready.run({"people": [person("p1", age=1), person("p1", age=2), {"name": "no id"},
                                   person("p2", name=""), person("p3", name=None)]})["Person"]
    assert (result["entriesInSource"], result["objectsCreated"], result["duplicateEnries"]) == (5, 1, 1)
    assert (result["emptyExternalIdEntries"], result["emptyLabelEntries"]) == (1, 2)
    assert assets_emulator.find("Person", "Person ID", "p1").attributes["Age"] == [2]  # last one wins


def test_cancel_discards_the_execution(assets_emulator, ready):
    execution = ready.start()
    ready.send(execution, {"people": [person("p1")]}, completed=False)
    assert ready.http.delete(execution["cancel"]).status_code == 200
    assert ready.http.get(execution["getExecutionStatus"]).json()["status"] == "CANCELLED"
    late = ready.send(execution, {"people": [person("p2")]}, completed=True)
    assert _codes(late) == ["EXECUTION_NOT_INGESTING"]
    failed = ready.http.post(execution["getExecutionStatus"].replace("/status", "/history/failed"),
                             json={"failureReason": "worker died"})
    assert failed.status_code == 204 and assets_emulator.executions[-1].failure_reason == "worker died"
    assert ready.config_status() == {"status": "IDLE"} and assets_emulator.objects("Person") == []
    assert assets_emulator.executions[-1].status == "CANCELLED"


def test_latest_execution_status_is_404_before_the_first_run(ready):
    latest = ready.links["start"] + "/status"
    assert ready.http.get(latest).status_code == 404
    execution = ready.start()
    body = ready.http.get(latest).json()
    assert body["executionId"] in execution["cancel"] and body["status"] == "INGESTING"


def test_data_after_completed_and_malformed_bodies_are_400(ready):
    execution = ready.start()
    url = execution["submitResults"]
    for body in ({"Data": {"people": []}, "completed": False}, {"data": {"people": []}},
                 {"data": {"people": []}, "completed": "yes"}, {"data": [], "completed": False},
                 {"data": {}, "completed": False, "clientGeneratedId": 7}):
        assert _codes(ready.http.post(url, json=body)) == ["INVALID_DATA"], body
    assert ready.send(execution, {"people": []}, completed=True).status_code == 200
    assert _codes(ready.send(execution, {"people": []}, completed=True)) == ["EXECUTION_NOT_INGESTING"]
    assert ready.wait(execution)["progressResult"]["infoMessage"] == "No data to import"
    assert _codes(ready.http.delete(execution["cancel"])) == ["EXECUTION_FINISHED"]


def test_processing_delay_shows_processing(assets_emulator, ready):
    assets_emulator.processing_delay = 0.3
    execution = ready.start()
    ready.send(execution, {"teams": [{"name": "A"}]}, completed=True)
    assert ready.http.get(execution["getExecutionStatus"]).json()["status"] == "PROCESSING"
    assert ready.config_status()["status"] == "RUNNING"
    assert ready.wait(execution)["status"] == "DONE"


# -- missing objects ------------------------------------------------------------------------------------------

def test_remove_policy_deletes_missing_objects_and_references_to_them(assets_emulator, ready):
    ready.run({"people": [person("p1", managerId="p2"), person("p2")]})
    assets_emulator.set_missing_objects("Person", "REMOVE")
    result = ready.run({"people": [person("p1")]})["Person"]
    assert result["objectsMissingDeleted"] == 1 and result["objectsIdentical"] == 1
    assert [o.attributes["Person ID"] for o in assets_emulator.objects("Person")] == [["p1"]]
    assert "Manager" not in assets_emulator.objects("Person")[0].attributes


def test_update_policy_sets_an_attribute_and_ignore_is_the_default(assets_emulator, ready):
    ready.run({"people": [person("p1"), person("p2")], "teams": [{"name": "A"}]})
    assets_emulator.set_missing_objects("Person", ("UPDATE", "Status", "gone"))
    result = ready.run({"people": [person("p1")]})
    assert result["Person"]["objectsMissingUpdated"] == 1 and result["Team"]["objectsMissingDeleted"] == 0
    assert assets_emulator.find("Person", "Person ID", "p2").attributes["Status"] == ["Gone"]
    assert assets_emulator.find("Team", "Name", "A") is not None
    with pytest.raises(ValueError):
        assets_emulator.set_missing_objects("Person", "DELETE")


# -- failure knobs and the request log --------------------------------------------------------------------------

def test_throttling_answers_429_with_retry_after(assets_emulator, api):
    assets_emulator.reset_log()
    assets_emulator.throttle(2, retry_after="3")
    first, second = (api.http.get(api.links["getStatus"]) for _ in range(2))
    assert first.status_code == second.status_code == 429 and first.headers["Retry-After"] == "3"
    assert api.http.get(api.links["getStatus"]).status_code == 200
    assert len(assets_emulator.requests) == 3


def test_bodies_over_the_limit_are_413():
    emulator = AssetsEmulator().start()
    try:
        api = Api(emulator)
        assert api.put().status_code == 204
        emulator.max_body_bytes = 2_000
        execution = api.start()
        big = {"people": [person(f"p{i}") for i in range(100)]}
        assert api.send(execution, big, completed=False).status_code == 413
        assert api.send(execution, {"people": [person("p1")]}, completed=True).status_code == 200
        assert api.wait(execution)["status"] == "DONE"
    finally:
        emulator.stop()


def test_requests_are_recorded(assets_emulator, ready):
    assets_emulator.reset_log()
    execution = ready.start()
    ready.send(execution, {"teams": [{"name": "A"}]}, completed=True, chunk="chunk-7")
    start, data = assets_emulator.requests
    assert (start.method, start.path.rsplit("/", 1)[-1], start.body, start.json) == ("POST", "executions", b"", None)
    assert data.json == {"data": {"teams": [{"name": "A"}]}, "clientGeneratedId": "chunk-7", "completed": True}
    assert data.headers["Authorization"] == f"Bearer {TOKEN}" and data.path.endswith("/data")
    ready.http.get(ready.links["mapping"] + "/progress/x", params={"a": "b"})
    assert assets_emulator.requests[-1].query == {"a": "b"}


# -- applying, without HTTP -----------------------------------------------------------------------------------

def test_selectors_iterate_nested_arrays_and_locators_join():
    data = {"drives": [{"id": "d1", "files": [{"path": "/a"}, {"path": "/b"}]}, {"id": "d2", "files": []},
                       {"id": "d3"}], "odd": {"not": "an array"}}
    problems: list[str] = []
    assert [f["path"] for f in select(data, "drives.files", problems)] == ["/a", "/b"]
    assert list(select(data, "odd", problems)) == [] and problems == ["selector 'odd': 'odd' is not an array"]
    assert read_locators({"a": "x", "b": "", "c": 3}, ("a", "b", "c")) == ["x 3"]
    assert read_locators({"a": ["x", None, ""]}, ("a",)) == ["x"]


def test_a_hundred_thousand_entries_with_references_apply_within_ten_seconds():
    model = merge_document(None, document())
    n = 100_000
    people = [{"id": f"p{i}", "name": f"P {i}", "managerId": f"p{i // 2}", "status": "Active"} for i in range(n)]
    chunks = [{"people": people[i:i + 1000]} for i in range(0, n, 1000)]
    store = ObjectStore()
    started = time.perf_counter()
    results = apply_execution(model, store, chunks, lambda object_type: "IGNORE")
    elapsed = time.perf_counter() - started
    assert results["t/person"].created == n and results["t/person"].updated_references == n
    assert elapsed <= 10, f"{elapsed:.1f} s"
    last = store.objects[n]
    assert last.attributes["Manager"] == [f"ENTRA-{(n - 1) // 2 + 1}"]
