"""What a ``source:`` of the MAPPING_FILE may name: the Graph v1.0 properties of the resource each object type
is read from (user, group, device, servicePrincipal) as ``shared.records.graph_catalogue`` holds them (generated from
msgraph-sdk's v1.0 models), the ones entra-assets refuses and why, and the directory-extension form.
``source_problem`` checks a source path against them. Pure.

A source is a dot path whose first segment is a v1.0 property of the resource or a directory extension
``extension_<app id, 32 hex digits without dashes>_<name>``. A complex property may be followed by the names of
its sub-properties (``verifiedPublisher.displayName``, ``identities.issuer`` through a collection); the bags of
named values (``onPremisesExtensionAttributes``, ``employeeOrgData``) must be; plain values take no sub-path.
A name the v1.0 catalogue lacks - a beta-only property such as a servicePrincipal's ``publisherName`` - is
refused: Graph v1.0 answers 400 to it in a ``$select``. Refused too, with the reason: properties Graph refuses
in a delta ``$select`` (for users those stored outside the main directory store: skills, aboutMe, birthday,
...; ``signInActivity``), properties Graph only returns when reading a single object, and properties that need
permissions entra-assets does not ask for.
"""
from __future__ import annotations

import difflib
import re
from collections.abc import Iterable, Mapping
from typing import Any

from shared.records.graph_catalogue import COMPLEX, NAVIGATION, Property, complex_type, entity_type
from shared.records.schema import ObjectType

# The Graph resource each primary object type is read from.
RESOURCES = {"user": "user", "group": "group", "device": "device", "application": "servicePrincipal"}
# Complex types that are bags of named values: a source names one of their values, never the whole bag.
_BAGS = ("employeeOrgData", "onPremisesExtensionAttributes")
_OUTSIDE_MAIN_STORE = ("is stored outside the directory's main store: Graph refuses it in a delta $select "
                       "(400 'Invalid request for delta query', reference/graph.md §1.3)")
_SINGLE_GROUP = "is returned only when reading one group (GET /groups/{id}), not in a list or delta query"
_CUSTOM_SECURITY = ("needs the CustomSecAttributeAssignment.Read.All permission, which entra-assets "
                    "does not ask for")
# Properties refused, with the reason.
_REFUSED = {
    "user": {
        **{p: _OUTSIDE_MAIN_STORE for p in ("aboutMe", "birthday", "hireDate", "interests", "mySite",
                                            "pastProjects", "preferredName", "responsibilities", "schools",
                                            "skills", "mailboxSettings")},
        "signInActivity": ("is refused by Graph in a delta $select (400 '$expand/$select is not supported "
                           "for the following properties: signInActivity') and needs AuditLog.Read.All"),
        "employeeLeaveDateTime": ("needs the User-LifeCycleInfo.Read.All permission, which entra-assets does "
                                  "not ask for (reference/graph.md §1.3)"),
        "customSecurityAttributes": _CUSTOM_SECURITY,
        "passwordProfile": "is never returned when reading users",
    },
    "group": {
        **{p: _SINGLE_GROUP for p in ("allowExternalSenders", "autoSubscribeNewMembers",
                                      "hideFromAddressLists", "hideFromOutlookClients", "isSubscribedByMail",
                                      "unseenCount")},
        **{p: "is never returned in a $select (Graph documents it as an exception)"
           for p in ("hasMembersWithLicenseErrors", "isArchived")},
    },
    "device": {},
    "servicePrincipal": {"customSecurityAttributes": _CUSTOM_SECURITY},
}
_SEGMENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_EXTENSION = re.compile(r"^extension_[0-9a-fA-F]{32}_[A-Za-z0-9_]+$")
_NUMBERED = re.compile(r"^(.*?)(\d+)$")


# ------------------------------------------------------------------------------------------------------------
# Wording shared with the MAPPING_FILE validator


def show(value: Any) -> str:
    """``value`` as it is quoted in a problem: text in single quotes, anything else as its repr; at most 80
    characters."""
    text = repr(value) if not isinstance(value, str) else f"'{value}'"
    return text if len(text) <= 80 else text[:77] + "..."


def suggest(word: str, choices: Iterable[str], close: bool = True) -> str:
    """A ``(did you mean ...?)`` hint: the same word in another case, else (when ``close``) a near one."""
    choices = list(choices)
    folded = {c.casefold(): c for c in choices}
    if word.casefold() in folded:
        return f" (did you mean '{folded[word.casefold()]}'? names are case-sensitive)"
    if not close:
        return ""
    matches = difflib.get_close_matches(word, choices, n=1, cutoff=0.75)
    return f" (did you mean '{matches[0]}'?)" if matches else ""


# ------------------------------------------------------------------------------------------------------------
# Checking a source


def source_problem(source: Any, object_type: ObjectType) -> str | None:
    """Why ``source`` is not a usable Graph property path for ``object_type`` (None when it is)."""
    resource = RESOURCES.get(object_type.key)
    if resource is None:
        return f"{object_type.name} is not read from a Graph resource"
    if not isinstance(source, str) or not source.strip():
        return (f"the source {show(source)} must be a Graph property path such as "
                "'employeeOrgData.costCenter'")
    segments = source.split(".")
    if not all(_SEGMENT.match(s) for s in segments):
        return (f"the source '{source}' is not a property path: use Graph property names separated by dots, "
                "e.g. onPremisesExtensionAttributes.extensionAttribute1")
    first, rest = segments[0], segments[1:]
    if first.startswith("extension_"):
        return _extension_problem(source, first, rest)
    problem = _property_problem(source, first, resource)
    if problem:
        return problem
    return _sub_path_problem(source, first, rest, resource)


def _extension_problem(source: str, first: str, rest: list[str]) -> str | None:
    if not _EXTENSION.match(first):
        return (f"the source '{source}' is not a directory extension: the form is "
                "extension_<app id: 32 hex digits without dashes>_<name>")
    if rest:
        return f"the directory extension '{first}' is a single value; it has no '{'.'.join(rest)}'"
    return None


def _property_problem(source: str, first: str, resource: str) -> str | None:
    """Why ``first`` is not a property of ``resource`` entra-assets can read (None when it is)."""
    properties = entity_type(resource)
    prop = properties.get(first)
    if prop is not None and prop.kind == NAVIGATION:
        return f"'{first}' is a relationship of a Graph {resource}, not a property; it cannot be a source"
    if prop is None:
        plain = [name for name, p in properties.items() if p.kind != NAVIGATION]
        return (f"the source '{source}': '{first}' is not a property of a Graph {resource} (v1.0)"
                f"{suggest(first, plain)}")
    refused = _REFUSED[resource].get(first)
    if refused:
        return f"the source '{source}': {first} {refused}"
    return None


def _sub_path_problem(source: str, first: str, rest: list[str], resource: str) -> str | None:
    """Why ``rest`` cannot follow the property ``first`` (None when it can): each segment must be a
    sub-property of the complex value before it."""
    prop, walked = entity_type(resource)[first], first
    if prop.kind == COMPLEX and prop.type in _BAGS and not rest:
        return (f"the source '{source}': {first} must be followed by {_choices(complex_type(prop.type))}, "
                "not nothing")
    for i, segment in enumerate(rest):
        if prop.kind != COMPLEX:
            return f"the source '{source}': {walked} is a plain value; it has no '{'.'.join(rest[i:])}'"
        properties = complex_type(prop.type)
        if segment not in properties:
            return (f"the source '{source}': {walked} must be followed by {_choices(properties)}, not "
                    f"'{'.'.join(rest[i:])}'{suggest(segment, properties)}")
        prop, walked = properties[segment], f"{walked}.{segment}"
    return None


def _choices(properties: Mapping[str, Property]) -> str:
    """``.a, .b or .c``; a numbered run as ``.extensionAttribute1...extensionAttribute15``."""
    names = sorted(properties, key=_natural)
    if not names:
        return "nothing (it has no sub-properties in Graph v1.0)"
    stems = {m.group(1) if (m := _NUMBERED.match(n)) else n for n in names}
    if len(names) > 2 and len(stems) == 1:
        return f".{names[0]}...{names[-1]}"
    dotted = [f".{n}" for n in names]
    return dotted[0] if len(dotted) == 1 else f"{', '.join(dotted[:-1])} or {dotted[-1]}"


def _natural(name: str) -> tuple[str, int]:
    match = _NUMBERED.match(name)
    return (match.group(1), int(match.group(2))) if match else (name, -1)
