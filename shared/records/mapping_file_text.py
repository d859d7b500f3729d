"""The MAPPING_FILE's text parsed into values that know their place (line and column, 1-based) and the list
of problems that cites those places: YAML through ``yaml.compose`` (PyYAML's safe constructor for scalars;
custom tags, merge keys, duplicate keys and alias bombs refused), JSON through ``json`` with each value's line
found by composing the same text as YAML. Pure.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import yaml


def key_path(path: str, key: str) -> str:
    """``path.key`` (just ``key`` at the top level): how problems name a place without a line."""
    return f"{path}.{key}" if path else key


@dataclass
class Node:
    """A value of the file with where it starts (1-based; None when unknown). Mappings hold
    ``{key: (key node, value node)}``, sequences a list of nodes, scalars the value."""

    value: Any
    line: int | None = None
    column: int | None = None

    @property
    def is_map(self) -> bool:
        return isinstance(self.value, dict)

    @property
    def is_list(self) -> bool:
        return isinstance(self.value, list)

    def plain(self) -> Any:
        if self.is_map:
            return {k: v.plain() for k, (_, v) in self.value.items()}
        if self.is_list:
            return [v.plain() for v in self.value]
        return self.value


class Reader:
    """Problems with their places, in the style of the file's format."""

    def __init__(self, fmt: str):
        self.fmt = fmt
        self._found: list[tuple[int, int, str]] = []

    @property
    def problems(self) -> list[str]:
        """In file order (problems without a line first)."""
        return [text for _, _, text in sorted(self._found, key=lambda p: (p[0], p[1]))]

    def note(self, text: str, line: int | None = None, column: int | None = None) -> None:
        self._found.append((line or 0, column or 0, text))

    def where(self, node: Node | None, path: str) -> str:
        line = node.line if node else None
        if self.fmt == "yaml":
            if line is None:
                return path or "(top level)"
            return f"line {line}, column {node.column}" + (f" ({path})" if path else "")
        return (path or "(top level)") + (f" (line {line})" if line else "")

    def add(self, node: Node | None, path: str, message: str) -> None:
        self.note(f"{self.where(node, path)}: {message}", node.line if node else None,
                  node.column if node else None)


_MAX_NODES = 100_000
_STANDARD_TAGS = ("tag:yaml.org,2002:map", "tag:yaml.org,2002:seq")


class _YamlNodes:
    """Located nodes from a composed YAML document (scalars built by PyYAML's safe constructor). Refuses
    custom tags, merge keys, duplicate keys and alias bombs (more than ``_MAX_NODES`` nodes, recursion)."""

    def __init__(self, reader: Reader):
        self.reader = reader
        self.constructor = yaml.SafeLoader("")
        self.count = 0
        self.active: set[int] = set()

    def convert(self, node: yaml.Node, path: str) -> Node:
        self.count += 1
        here = _located(node)
        if self.count > _MAX_NODES or id(node) in self.active:
            self.reader.add(here, path, "too many nested or recursive aliases")
            return here
        if isinstance(node, yaml.ScalarNode):
            try:
                here.value = self.constructor.construct_object(node, deep=True)
            except yaml.YAMLError as exc:
                self.reader.add(here, path, f"unsupported value ({getattr(exc, 'problem', None) or exc})")
            return here
        if node.tag not in _STANDARD_TAGS:
            self.reader.add(here, path, f"unsupported tag {node.tag}")
            return here
        self.active.add(id(node))
        try:
            if isinstance(node, yaml.SequenceNode):
                here.value = [self.convert(item, f"{path}[{i}]") for i, item in enumerate(node.value)]
            else:
                here.value = self._mapping(node, path)
            return here
        finally:
            self.active.discard(id(node))

    def _mapping(self, node: yaml.MappingNode, path: str) -> dict[str, tuple[Node, Node]]:
        out: dict[str, tuple[Node, Node]] = {}
        for key_node, value_node in node.value:
            key = _located(key_node)
            if not isinstance(key_node, yaml.ScalarNode) or key_node.tag == "tag:yaml.org,2002:merge":
                self.reader.add(key, path, "unsupported key (use plain names as keys)")
                continue
            try:
                key.value = str(self.constructor.construct_object(key_node))
            except yaml.YAMLError:
                key.value = str(key_node.value)
            sub = key_path(path, key.value)
            if key.value in out:
                self.reader.add(key, sub, f"duplicate key '{key.value}'")
                continue
            out[key.value] = (key, self.convert(value_node, sub))
        return out


def _located(node: yaml.Node) -> Node:
    return Node(None, node.start_mark.line + 1, node.start_mark.column + 1)


def _from_plain(value: Any) -> Node:
    if isinstance(value, dict):
        return Node({str(k): (Node(str(k)), _from_plain(v)) for k, v in value.items()})
    if isinstance(value, list):
        return Node([_from_plain(v) for v in value])
    return Node(value)


def parse(text: str, fmt: str, reader: Reader) -> Node | None:
    """The file's top node, or None (after recording the problem) when it cannot be parsed."""
    if not text.strip():
        return None
    return _parse_json(text, reader) if fmt == "json" else _parse_yaml(text, reader)


def _parse_yaml(text: str, reader: Reader) -> Node | None:
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        place = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        reader.note(f"{place}invalid YAML ({exc.problem or exc.context})", mark.line + 1 if mark else None)
        return None
    except yaml.YAMLError as exc:
        reader.note(f"invalid YAML ({exc})")
        return None
    return _YamlNodes(reader).convert(node, "") if node is not None else None


def _parse_json(text: str, reader: Reader) -> Node | None:
    duplicates: list[str] = []

    def pairs(items: list[tuple[str, Any]]) -> dict:
        seen: dict = {}
        for k, v in items:
            if k in seen:
                duplicates.append(k)
            seen[k] = v
        return seen

    try:
        data = json.loads(text, object_pairs_hook=pairs)
    except json.JSONDecodeError as exc:
        reader.note(f"line {exc.lineno}, column {exc.colno}: invalid JSON ({exc.msg})", exc.lineno, exc.colno)
        return None
    # JSON is (nearly) YAML: compose it again only to learn the line of each value. When PyYAML reads it
    # differently (rare escapes, tabs), fall back to key paths without lines.
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        located = _YamlNodes(Reader("json")).convert(node, "") if node is not None else None
    except yaml.YAMLError:
        located = None
    if located is None or located.plain() != data or duplicates:
        located = _from_plain(data)
        for key in sorted(set(duplicates)):
            reader.add(None, "", f"duplicate key '{key}'")
    return located
