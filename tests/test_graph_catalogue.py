"""The Graph v1.0 catalogue (shared/records/graph_catalogue.json): current with the installed msgraph-sdk, and every
property entra-assets selects, expands, filters on or maps is in it - Graph v1.0 answers 400 to any other."""
from __future__ import annotations

import ast
import difflib
import re
from pathlib import Path

import pytest
import yaml

import shared.records.mapping_file
from sandbox.graph.directory import structural
from shared.records.build import (
    APPLICATION_SELECT,
    DEVICE_SELECT,
    GROUP_SELECT,
    MANAGED_DEVICE_SELECT,
    SIGN_IN_SELECT,
    USER_SELECT,
    Warnings,
    entra_device_id,
    last_sign_in,
    map_application,
    map_device,
    map_group,
    map_managed_device,
    map_user,
)
from shared.records.derived import Derived
from shared.records.graph_catalogue import (
    COMPLEX,
    NAVIGATION,
    Property,
    complex_type,
    entity_type,
)
from shared.records.graph_properties import _BAGS, _REFUSED
from shared.records.mapping_file import load_mapping_file
from tools import graph_catalogue as generator

ROOT = Path(__file__).resolve().parent.parent
# Where each select list goes and which relationship delta tracks there (reference/graph.md §2.4, §2.5).
SELECTS = {"USER_SELECT": (USER_SELECT, "user", "manager"), "GROUP_SELECT": (GROUP_SELECT, "group", "members"),
           "DEVICE_SELECT": (DEVICE_SELECT, "device", None),
           "APPLICATION_SELECT": (APPLICATION_SELECT, "servicePrincipal", None),
           "MANAGED_DEVICE_SELECT": (MANAGED_DEVICE_SELECT, "managedDevice", None),
           "SIGN_IN_SELECT": (SIGN_IN_SELECT, "user", None)}
ENTITY_SETS = {"users": "user", "groups": "group", "devices": "device", "servicePrincipals": "servicePrincipal",
               "applications": "application"}


def resolve(type_name: str, path: str) -> tuple[Property, ...]:
    """The properties a dot path walks through from the entity type ``type_name`` (through collections of
    complex values too). KeyError at a segment the catalogue lacks, ValueError after a value without
    sub-properties."""
    found: list[Property] = []
    properties = entity_type(type_name)
    for segment in path.split("."):
        if found and found[-1].kind != COMPLEX:
            raise ValueError(segment)
        found.append(properties[segment])
        if found[-1].kind == COMPLEX:
            properties = complex_type(found[-1].type)
    return tuple(found)


def test_the_checked_in_catalogue_is_what_the_installed_msgraph_sdk_generates():
    expected = generator.render(generator.build())
    actual = generator.OUTPUT.read_text(encoding="utf-8")
    if actual != expected:
        diff = "".join(difflib.unified_diff(actual.splitlines(True), expected.splitlines(True),
                                            "shared/records/graph_catalogue.json", "generated", n=1))
        pytest.fail("shared/records/graph_catalogue.json is stale: run `python -m tools.graph_catalogue`\n" + diff[:6000])


def test_the_catalogue_reads_the_sdk_models_faithfully():
    sp = entity_type("servicePrincipal")
    assert "publisherName" not in sp                       # beta only
    assert sp["verifiedPublisher"].kind == COMPLEX and sp["owners"].kind == NAVIGATION
    assert sp["appOwnerOrganizationId"].type == "Guid" and sp["id"].type == "String"   # id from Entity
    assert entity_type("device")["deletedDateTime"].type == "DateTimeOffset"           # from DirectoryObject
    assert [p.name for p in resolve("user", "onPremisesExtensionAttributes.extensionAttribute15")] == [
        "onPremisesExtensionAttributes", "extensionAttribute15"]
    assert resolve("user", "signInActivity.lastSignInDateTime")[-1].type == "DateTimeOffset"
    assert resolve("user", "identities.issuer")[0].collection
    assert structural("subscribedSku")["prepaidUnits"].type == "licenseUnitsDetail"
    assert structural("managedDevice")["complianceState"].kind == "enum"
    assert entity_type("user")["manager"].type == "directoryObject"
    with pytest.raises(KeyError):
        resolve("servicePrincipal", "verifiedPublisher.name")
    with pytest.raises(ValueError):
        resolve("device", "manufacturer.name")


@pytest.mark.parametrize("name", sorted(SELECTS))
def test_every_selected_property_is_a_v1_property(name):
    select, type_name, tracked = SELECTS[name]
    properties = entity_type(type_name)
    for prop in select:
        assert prop in properties, f"{name}: '{prop}' is not a v1.0 property of {type_name}"
        if properties[prop].kind == NAVIGATION:   # only the relationship delta tracks may be $select-ed
            assert prop == tracked, f"{name}: '{prop}' is a relationship of {type_name}"


# -- the $select / $expand / $filter strings written in shared/ ---------------------------------------------


def _text(node: ast.expr) -> str | None:
    """A string argument as written: f-string placeholders as ``{}``; None when computed."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    if isinstance(node, ast.JoinedStr):
        return "".join(v.value if isinstance(v, ast.Constant) else "{}" for v in node.values)
    return None


def _target_type(path: str | None) -> str | None:
    """The entity type a Graph path returns (``groups/{}/owners`` -> directoryObject); None when computed."""
    if not path or path.startswith("{}"):
        return None
    if path == "deviceManagement/managedDevices":  # a singleton's collection: not an entity set
        return "managedDevice"
    segments = path.split("/")
    type_name = ENTITY_SETS[segments[0].split("(", 1)[0]]
    for segment in segments[1:]:
        if segment.startswith("microsoft.graph."):
            type_name = segment.removeprefix("microsoft.graph.")
        elif segment not in ("{}", "delta"):
            type_name = entity_type(type_name)[segment].type
    return type_name


def _queries() -> list[tuple[str, str | None, dict[str, ast.expr]]]:
    """``(place, path, {option: value node})`` of every Graph call in shared/ that passes query options."""
    found = []
    for file in sorted((ROOT / "shared").rglob("*.py")):
        tree = ast.parse(file.read_text(encoding="utf-8"))
        for function in ast.walk(tree):
            if not isinstance(function, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            options: dict[str, dict[str, ast.expr]] = {}   # variable -> its query options
            for node in ast.walk(function):
                if isinstance(node, ast.Assign) and isinstance(node.value, ast.Dict):
                    for target in node.targets:
                        if isinstance(target, ast.Name):
                            options.setdefault(target.id, {}).update(_options(node.value))
                elif isinstance(node, ast.Assign) and isinstance(node.targets[0], ast.Subscript):
                    target = node.targets[0]
                    key = _text(target.slice)
                    if isinstance(target.value, ast.Name) and key and key.startswith("$"):
                        options.setdefault(target.value.id, {})[key] = node.value
            for call in ast.walk(function):
                if not isinstance(call, ast.Call) or not call.args:
                    continue
                for arg in call.args[1:]:
                    query = _options(arg) if isinstance(arg, ast.Dict) else \
                        options.get(arg.id, {}) if isinstance(arg, ast.Name) else {}
                    if query:
                        found.append((f"{file.name}:{call.lineno}", _text(call.args[0]), query))
    return found


def _options(node: ast.Dict) -> dict[str, ast.expr]:
    return {key: value for k, value in zip(node.keys, node.values)
            if k is not None and (key := _text(k)) and key.startswith("$")}


def _names(node: ast.AST) -> set[str]:
    return {n.id for n in ast.walk(node) if isinstance(n, ast.Name)}


def test_the_optional_reads_of_check_name_v1_properties():
    from shared.admin.status import _OPTIONAL

    for what, path, query in _OPTIONAL.values():
        for name in query["$select"].split(","):
            assert name in entity_type(_target_type(path)), f"{what}: '{name}' is not a v1.0 property of {path}"


def test_the_query_walk_finds_the_known_calls():
    places = {(place.split(":")[0], path) for place, path, _ in _queries()}
    assert {("full.py", "servicePrincipals"), ("full.py", "devices"), ("full.py", "groups"),
            ("credential_expiry.py", "applications(appId='{}')"), ("catch_up.py", "groups/{}/owners"),
            ("plan.py", "groups/{}"), ("status.py", None)} <= places


def test_every_query_option_written_in_shared_names_v1_properties():
    every_type = ("user", "group", "device", "servicePrincipal", "application", "directoryObject")
    for place, path, query in _queries():
        type_name = _target_type(path)
        for option, value in query.items():
            text = _text(value)
            if text is None:
                # Computed: a select list checked above, or a filter the admin wrote (USER_FILTER / GROUP_FILTER,
                # which Graph itself judges before anything is read).
                assert _names(value) & (set(SELECTS) | {"select", "odata_filter"}), \
                    f"{place}: {option} is computed from something this test cannot check"
                continue
            if option == "$top":
                continue
            names = [n.strip() for n in text.split(",")] if option in ("$select", "$expand") else \
                re.findall(r"\b([A-Za-z_]\w*)\s+(?:eq|ne|ge|gt|le|lt|in)\b", text)
            assert names, f"{place}: {option}={text!r} names no property"
            for name in names:
                owners = (type_name,) if type_name else every_type   # a computed path: every type must have it
                for owner in owners:
                    prop = entity_type(owner).get(name)
                    assert prop, f"{place}: {option} names '{name}', not a v1.0 property of {owner}"
                    assert (prop.kind == NAVIGATION) == (option == "$expand"), \
                        f"{place}: {option} names the {prop.kind} property '{name}'"


# -- what the mappers read ----------------------------------------------------------------------------------


class Recording(dict):
    """A Graph object that remembers every property path read from it; complex values are recordings too."""

    def __init__(self, type_name: str, seen: set[str], prefix: str = "", properties=None):
        super().__init__()
        self.type_name, self.seen, self.prefix = type_name, seen, prefix
        self.properties = entity_type(type_name) if properties is None else properties

    def _read(self, key: str):
        self.seen.add(self.prefix + key)
        prop = self.properties.get(key.removesuffix("@delta"))
        if prop is not None and prop.kind == COMPLEX and not prop.collection:
            return Recording(self.type_name, self.seen, f"{self.prefix}{key}.", complex_type(prop.type))
        return "1b2c3d4e" if key == "id" else None

    def __bool__(self) -> bool:  # a complex value read as ``sp.get("verifiedPublisher") or {}`` is there
        return True

    def get(self, key, default=None):
        value = self._read(key)
        return default if value is None else value

    def __getitem__(self, key):
        return self._read(key)


def _read_by(type_name: str, mapper) -> set[str]:
    seen: set[str] = set()
    mapper(Recording(type_name, seen))
    return seen


def test_every_property_the_mappers_read_is_selected_and_v1():
    warnings = Warnings()
    read = {
        "USER_SELECT": _read_by("user", lambda u: Derived().observe(u, map_user(u, warnings))),
        "GROUP_SELECT": _read_by("group", lambda g: map_group(g, [], [], warnings)),
        "DEVICE_SELECT": _read_by("device", lambda d: map_device(d, [], warnings)),
        "APPLICATION_SELECT": _read_by("servicePrincipal", lambda s: map_application(s, [], warnings)),
        "MANAGED_DEVICE_SELECT": _read_by("managedDevice", lambda d: (entra_device_id(d),
                                                                      map_managed_device(d, None, None, warnings))),
        "SIGN_IN_SELECT": _read_by("user", lambda u: (u["id"], last_sign_in(u))),
    }
    assert "verifiedPublisher.displayName" in read["APPLICATION_SELECT"]
    assert "manager@delta" in read["USER_SELECT"] and "streetAddress" in read["USER_SELECT"]
    for name, paths in read.items():
        select, type_name, _ = SELECTS[name]
        for path in paths:
            resolve(type_name, path.replace("@delta", ""))   # KeyError/ValueError name the bad segment
            assert path.split(".")[0].removesuffix("@delta") in select, f"{type_name} '{path}' is not in {name}"


# -- the documented MAPPING_FILE examples --------------------------------------------------------------------


def _documented_examples() -> list[tuple[str, str]]:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = readme[readme.index("### Custom attributes"):]
    block = re.search(r"```yaml\n(.*?)```", section, re.DOTALL).group(1)
    docstring = shared.records.mapping_file.__doc__
    example = docstring[docstring.index("    attributes:"):docstring.index("The same in JSON")]
    return [("README.md", block), ("shared/records/mapping_file.py", re.sub(r"(?m)^    ", "", example))]


@pytest.mark.parametrize(("where", "text"), _documented_examples(), ids=["README.md", "mapping_file.py"])
def test_the_documented_mapping_file_examples_name_v1_properties(tmp_path, where, text):
    path = tmp_path / "mapping.yaml"
    path.write_text(text, encoding="utf-8")
    customization = load_mapping_file(path)   # raises MappingFileError naming any source the catalogue lacks
    sources = [a.source for attrs in customization.attributes.values() for a in attrs]
    assert sources and "employeeOrgData.costCenter" in sources, (where, yaml.safe_load(text))


def test_shared_does_not_import_msgraph():
    # msgraph-sdk is a dev dependency: the app loads the JSON, the generator (tools/) reads the SDK.
    for file in (ROOT / "shared").rglob("*.py"):
        imported = {alias.name for node in ast.walk(ast.parse(file.read_text(encoding="utf-8")))
                    if isinstance(node, ast.Import) for alias in node.names}
        imported |= {node.module or "" for node in ast.walk(ast.parse(file.read_text(encoding="utf-8")))
                     if isinstance(node, ast.ImportFrom)}
        assert not any(name.split(".")[0] == "msgraph" for name in imported), file.name


def test_the_refusal_reasons_name_v1_properties():
    # A reason kept for a property v1.0 no longer has would never be shown: the catalogue answers first.
    for resource, reasons in _REFUSED.items():
        assert set(reasons) <= set(structural(resource)), resource
    for bag in _BAGS:
        assert complex_type(bag) and all(p.kind == "primitive" for p in complex_type(bag).values())
