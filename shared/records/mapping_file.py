"""Reading the MAPPING_FILE (SPEC §2, §4): YAML or JSON parsed into values that know their place in the
file (``shared.records.mapping_file_text``), validated into a ``MappingFile`` with every problem reported at once
(``load_mapping_file``, ``MappingFileError``, ``name_problem``). Pure apart from reading the file.

The file is YAML (``.yaml``/``.yml``) or JSON (``.json``) with up to three sections; each is optional and an
empty file changes nothing::

    attributes:            # add attributes read from any Graph property
      User:
        - name: Cost Center
          source: employeeOrgData.costCenter
          type: text       # optional, default text
        - name: Extension 1
          source: onPremisesExtensionAttributes.extensionAttribute1
        - name: Badge Number
          source: extension_0123456789abcdef0123456789abcdef_badgeNumber   # directory extension
          description: Badge number from the HR system                      # optional
      Device:
        - {name: Manufacturer, source: manufacturer}
    rename:                # attribute -> new name (its external id stays the same)
      User: {Mobile Phone: Mobile}
    omit:                  # leave optional attributes out
      User: [Employee Type, Business Phone]

The same in JSON: ``{"attributes": {"User": [{"name": "Cost Center", "source": "employeeOrgData.costCenter",
"type": "text"}]}, "rename": {"User": {"Mobile Phone": "Mobile"}}, "omit": {"User": ["Employee Type"]}}``.

What ``load_mapping_file`` checks (every problem is reported at once, each with its place: ``line L, column C
(key.path)`` for YAML, ``key.path (line L)`` for JSON):

- only the sections ``attributes``, ``rename``, ``omit``; object types by their Assets name (``User``,
  ``Office Location``; case-insensitive, the type key ``office`` works too). Only the primary types (User,
  Group, Device, Application) can get added attributes: Department, Office Location, Address, City and Country
  are derived from user attributes, so they can be renamed/omitted in but get no Graph-sourced attributes.
- added attributes: keys ``name``, ``source``, ``type`` (optional, default ``text``), ``description``
  (optional). ``type`` is one of ``ALLOWED_TYPES`` (no references, status or select).
- names (added or renamed): not empty, at most ``NAME_LIMIT`` characters, none of Assets' reserved characters
  ``= ; : ? . "``, no control characters, not a system attribute (Key, Created, Updated), and no clash
  (case-insensitively) with another attribute the type ends up with or with an omitted one (Assets keeps an
  omitted attribute, so its name stays taken).
- ``source``: a Graph property path of the resource behind the type or a directory extension, as
  ``shared.records.graph_properties`` describes; properties Graph refuses or entra-assets cannot read are refused with
  the reason. A source is mapped at most once per type.
- ``rename``/``omit`` name existing attributes of the type; the label, the identity and ``Status``
  (``required``) can be neither renamed nor omitted; one attribute cannot be both renamed and omitted.

UNCONFIRMED:
- the reserved characters ``= ; : ? . "`` were measured on Data Center (reference §7); cloud may accept more.
- ``NAME_LIMIT`` (100) is our choice; Assets' own limit for attribute names is not documented.
"""
from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from shared.errors import EntraAssetsError
from shared.records.graph_properties import RESOURCES, show, source_problem, suggest
from shared.records.mapping_file_text import Node, Reader, key_path, parse
from shared.records.mapping_file_value import EMPTY, CustomAttr, MappingFile
from shared.records.schema import OBJECT_TYPES, Attr, ObjectType

ALLOWED_TYPES = ("text", "textarea", "integer", "double", "boolean", "date", "date_time", "url", "email")
NAME_LIMIT = 100
RESERVED_CHARACTERS = '=;:?."'
# Attributes every Assets object type has; a custom attribute of the same name would clash.
SYSTEM_ATTRIBUTES = ("Key", "Created", "Updated")
SECTIONS = ("attributes", "rename", "omit")
ATTRIBUTE_KEYS = ("name", "source", "type", "description")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


class MappingFileError(EntraAssetsError):
    """The MAPPING_FILE cannot be used; ``problems`` lists every problem, each with its place in the file."""

    exit_code = 2

    def __init__(self, problems: list[str], path: Path | str | None = None):
        self.problems = problems
        self.path = path
        where = f"MAPPING_FILE {path}" if path else "MAPPING_FILE"
        super().__init__(f"{where} is invalid: " + "; ".join(problems))


def load_mapping_file(path: Path, types: tuple[ObjectType, ...] = OBJECT_TYPES) -> MappingFile:
    """Read and validate a MAPPING_FILE (YAML or JSON by extension). Raises ``MappingFileError`` listing every
    problem; an empty file gives ``EMPTY``."""
    path = Path(path)
    suffix = path.suffix.lower()
    fmt = {".yaml": "yaml", ".yml": "yaml", ".json": "json"}.get(suffix)
    if fmt is None:
        raise MappingFileError(
            [f"the file name must end in .yaml, .yml or .json (got '{suffix or path.name}')"], path)
    try:
        text = path.read_bytes().decode("utf-8-sig")
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise MappingFileError([f"cannot read the file ({reason})"], path) from None
    except UnicodeDecodeError:
        raise MappingFileError(["the file is not UTF-8 text"], path) from None
    reader = Reader(fmt)
    top = parse(text, fmt, reader)
    mapping = _validate(top, reader, types) if not reader.problems else EMPTY
    if reader.problems:
        raise MappingFileError(reader.problems, path)
    return mapping


# ------------------------------------------------------------------------------------------------------------
# Validation


def _names(items: Iterable[str]) -> str:
    return ", ".join(items)


def _line_of(node: Node) -> str:
    """`` (line L)`` pointing at another place in the file, or nothing when the line is unknown."""
    return f" (line {node.line})" if node.line else ""


def name_problem(name: Any) -> str | None:
    """Why ``name`` cannot be an Assets attribute name (None when it can)."""
    if not isinstance(name, str):
        return f"the name {show(name)} must be text (quote it)"
    if not name.strip():
        return "the name is empty"
    if len(name) > NAME_LIMIT:
        return f"the name '{name[:40]}...' is {len(name)} characters long; at most {NAME_LIMIT} are allowed"
    bad = sorted({c for c in name if c in RESERVED_CHARACTERS})
    if bad:
        return (f"the name '{name}' contains {' '.join(bad)}: Assets does not allow the characters "
                f"{' '.join(RESERVED_CHARACTERS)} in names")
    if _CONTROL.search(name):
        return f"the name {show(name)} contains control characters"
    if name != name.strip():
        return f"the name '{name}' starts or ends with spaces"
    if name.casefold() in (s.casefold() for s in SYSTEM_ATTRIBUTES):
        return f"'{name}' is a system attribute of every Assets object type ({_names(SYSTEM_ATTRIBUTES)})"
    return None


def _find_type(name: Any, types: tuple[ObjectType, ...]) -> ObjectType | None:
    if not isinstance(name, str):
        return None
    folded = name.strip().casefold()
    for t in types:
        if folded in (t.name.casefold(), t.key.casefold()):
            return t
    return None


def _find_attr(name: Any, t: ObjectType) -> Attr | None:
    if not isinstance(name, str):
        return None
    for a in t.attributes:
        if a.name == name.strip():
            return a
    folded = name.strip().casefold()
    for a in t.attributes:
        if a.name.casefold() == folded:
            return a
    return None


def _no_attribute(t: ObjectType, shown: str) -> str:
    return f"{t.name} has no attribute {shown}; its attributes are {_names(a.name for a in t.attributes)}"


def _is_the_role(attr: Attr, t: ObjectType) -> str:
    """``'Name' is the label of User``: why a required attribute cannot be renamed or left out."""
    role = ("label" if attr.label else "identity" if attr.identity
            else "status" if attr.type == "status" else "required attribute")
    return f"'{attr.name}' is the {role} of {t.name}"


def _validate(top: Node | None, reader: Reader, types: tuple[ObjectType, ...]) -> MappingFile:
    """The ``MappingFile`` the parsed file describes; every problem goes to ``reader``."""
    if top is None or top.value is None:
        return EMPTY
    if not top.is_map:
        reader.add(top, "", f"the file must be a mapping with the sections {_names(SECTIONS)}, "
                            f"not {show(top.plain())}")
        return EMPTY
    for key, (key_node, _) in top.value.items():
        if key not in SECTIONS:
            reader.add(key_node, key,
                       f"unknown section '{key}': use {_names(SECTIONS)}{suggest(key, SECTIONS)}")
    renames = _read_renames(_section(top, "rename", reader, types), reader)
    omit = _read_omit(_section(top, "omit", reader, types), renames, reader)
    added = _read_added(_section(top, "attributes", reader, types), reader)
    result: dict[str, tuple[CustomAttr, ...]] = {}
    for t in types:
        kept = _settle_names(t, renames.get(t.key, {}), omit.get(t.key, []), added.get(t.key, []), reader)
        if kept:
            result[t.key] = kept
    new_names = {k: {old: new for old, (new, _) in v.items()} for k, v in renames.items() if v}
    return MappingFile(result, new_names, {k: tuple(v) for k, v in omit.items() if v})


def _section(top: Node, name: str, reader: Reader,
             types: tuple[ObjectType, ...]) -> list[tuple[ObjectType, Node, str]]:
    """(object type, value node, path) of each object type listed in the section ``name``."""
    entry = top.value.get(name)
    if entry is None or entry[1].value is None:
        return []
    node = entry[1]
    if not node.is_map:
        reader.add(node, name, f"'{name}' must map object type names (User, Group, ...) to entries")
        return []
    out: list[tuple[ObjectType, Node, str]] = []
    for type_name, (key_node, value) in node.value.items():
        t = _find_type(type_name, types)
        path = key_path(name, type_name)
        if t is None:
            reader.add(key_node, path, f"unknown object type '{type_name}': use one of "
                                       f"{_names(x.name for x in types)}")
        elif any(t is seen for seen, _, _ in out):
            reader.add(key_node, path, f"{t.name} is listed twice in '{name}'")
        else:
            out.append((t, value, path))
    return out


# {type key: {default name: (new name, node of the new name)}}
_Renames = dict[str, dict[str, tuple[str, Node]]]


def _read_renames(section: list[tuple[ObjectType, Node, str]], reader: Reader) -> _Renames:
    renames: _Renames = {}
    for t, node, path in section:
        if node.value is None:
            continue
        if not node.is_map:
            reader.add(node, path, "must map attribute names to new names, e.g. {Mobile Phone: Mobile}")
            continue
        for old, (key_node, new_node) in node.value.items():
            sub = key_path(path, old)
            attr = _find_attr(old, t)
            if attr is None:
                reader.add(key_node, sub, _no_attribute(t, f"'{old}'"))
            elif attr.required:
                reader.add(key_node, sub, f"{_is_the_role(attr, t)}; it cannot be renamed")
            elif problem := name_problem(new_node.value):
                reader.add(new_node, sub, problem)
            elif attr.name in renames.get(t.key, {}):
                reader.add(key_node, sub, f"'{attr.name}' is renamed twice")
            else:
                renames.setdefault(t.key, {})[attr.name] = (new_node.value, new_node)
    return renames


def _read_omit(section: list[tuple[ObjectType, Node, str]], renames: _Renames,
               reader: Reader) -> dict[str, list[str]]:
    omit: dict[str, list[str]] = {}
    for t, node, path in section:
        if node.value is None:
            continue
        if not node.is_list:
            reader.add(node, path,
                       f"must be a list of attribute names, e.g. [Employee Type], not {show(node.plain())}")
            continue
        for i, item in enumerate(node.value):
            sub = f"{path}[{i}]"
            attr = _find_attr(item.value, t)
            renamed = renames.get(t.key, {}).get(attr.name) if attr else None
            if attr is None:
                reader.add(item, sub, _no_attribute(t, show(item.value)))
            elif attr.required:
                reader.add(item, sub, f"{_is_the_role(attr, t)}; it cannot be left out")
            elif renamed:
                new, new_node = renamed
                reader.add(item, sub, f"'{attr.name}' is both omitted and renamed to "
                                      f"'{new}'{_line_of(new_node)}; keep one of the two")
            elif attr.name in omit.get(t.key, []):
                reader.add(item, sub, f"'{attr.name}' is omitted twice")
            else:
                omit.setdefault(t.key, []).append(attr.name)
    return omit


# (added attribute, node of its name, path of its name) per type key
_Added = dict[str, list[tuple[CustomAttr, Node, str]]]


def _read_added(section: list[tuple[ObjectType, Node, str]], reader: Reader) -> _Added:
    added: _Added = {}
    for t, node, path in section:
        if t.derived or t.key not in RESOURCES:
            reader.add(node, path, f"{t.name} is derived from user attributes, not read from a Graph "
                                   "resource: it cannot get Graph-sourced attributes (add them to User "
                                   "instead)")
            continue
        if node.value is None:
            continue
        if not node.is_list:
            reader.add(node, path,
                       "must be a list of attributes, each with name and source (and optional type)")
            continue
        for i, item in enumerate(node.value):
            sub = f"{path}[{i}]"
            custom = _custom_attr(item, sub, t, reader)
            if custom is None:
                continue
            same = [(other, n) for other, n, _ in added.get(t.key, []) if other.source == custom.source]
            if same:
                other, other_node = same[0]
                reader.add(item.value["source"][1], key_path(sub, "source"), f"the source '{custom.source}' "
                           f"is already mapped to '{other.name}'{_line_of(other_node)}")
            else:
                added.setdefault(t.key, []).append((custom, item.value["name"][1], key_path(sub, "name")))
    return added


def _custom_attr(item: Node, path: str, t: ObjectType, reader: Reader) -> CustomAttr | None:
    """The added attribute ``item`` describes, or None after recording why it cannot be one."""
    if not item.is_map:
        reader.add(item, path,
                   f"each attribute must be a mapping with name and source, not {show(item.plain())}")
        return None
    problems: list[tuple[Node, str, str]] = []  # (node, path, problem)
    for key, (key_node, _) in item.value.items():
        if key not in ATTRIBUTE_KEYS:
            hint = suggest(key, ATTRIBUTE_KEYS)
            problems.append((key_node, key_path(path, key),
                             f"unknown key '{key}': an attribute has {_names(ATTRIBUTE_KEYS)}{hint}"))
    values = {k: v.value for k, (_, v) in item.value.items()}
    nodes = {k: v for k, (_, v) in item.value.items()}
    problems += [(item, path, f"the attribute has no '{key}'")
                 for key in ("name", "source") if key not in values]
    checks = {"name": name_problem, "source": lambda source: source_problem(source, t),
              "type": _type_problem, "description": _description_problem}
    for key, check in checks.items():
        problem = check(values[key]) if key in values else None
        if problem:
            problems.append((nodes[key], key_path(path, key), problem))
    for node, where, problem in problems:
        reader.add(node, where, problem)
    if problems:
        return None
    return CustomAttr(values["name"], values["source"], values.get("type", "text"),
                      (values.get("description") or "").strip())


def _type_problem(kind: Any) -> str | None:
    if kind in ALLOWED_TYPES:
        return None
    hint = " (did you mean 'date_time'?)" if isinstance(kind, str) and kind.casefold() in (
        "datetime", "date-time", "timestamp") else ""
    return (f"unknown type {show(kind)}{hint}: use one of {_names(ALLOWED_TYPES)} "
            "(references, status and select cannot be added)")


def _description_problem(description: Any) -> str | None:
    return None if description is None or isinstance(description, str) else "the description must be text"


def _settle_names(t: ObjectType, renames: dict[str, tuple[str, Node]], omitted: list[str],
                  added: list[tuple[CustomAttr, Node, str]], reader: Reader) -> tuple[CustomAttr, ...]:
    """Check that the names ``t`` ends up with are unique (case-insensitively) and clear of omitted ones;
    the added attributes that pass."""
    taken: dict[str, str] = {}  # folded name -> what holds it
    for a in t.attributes:
        if a.name in omitted:
            taken.setdefault(a.name.casefold(), f"the omitted attribute '{a.name}' (Assets keeps it)")
        elif a.name not in renames:
            taken.setdefault(a.name.casefold(), f"the attribute '{a.name}'")
    for old, (new, node) in renames.items():
        clash = taken.get(new.casefold())
        if clash:
            reader.add(node, key_path(key_path("rename", t.name), old),
                       f"'{new}' clashes with {clash} of {t.name}")
        else:
            taken[new.casefold()] = f"'{old}' renamed to '{new}'"
    keys = {a.key for a in t.attributes}
    kept = []
    for custom, node, path in added:
        clash = taken.get(custom.name.casefold())
        if clash:
            reader.add(node, path, f"the name '{custom.name}' clashes with {clash} of {t.name}")
        elif custom.xid in keys:
            reader.add(node, path, f"the name '{custom.name}' gives the external id key '{custom.xid}', "
                                   "already used by another added attribute; choose a more distinct name")
        else:
            taken[custom.name.casefold()] = f"the added attribute '{custom.name}'"
            keys.add(custom.xid)
            kept.append(custom)
    return tuple(kept)
