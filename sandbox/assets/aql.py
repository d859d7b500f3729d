"""The subset of AQL (Assets Query Language) the emulator needs for ``objectMappingIQL``.

Grammar (keywords case-insensitive)::

    query     := and_expr ("OR" and_expr)*
    and_expr  := primary ("AND" primary)*
    primary   := "(" query ")" | attribute op value | attribute "IN" "(" value ("," value)* ")"
    op        := "=" (case-insensitive) | "==" (case-sensitive) | "!="
    attribute := bare word (Name) | double-quoted string ("Entra Object ID")
    value     := double-quoted string | bare number | ${placeholder}

Anything else (``LIKE``, functions, ``objectType``-style keywords with other operators...) raises ``AqlError``.
AQL reference: https://support.atlassian.com/jira-service-management-cloud/docs/use-assets-query-language-aql/

A query is parsed once (:func:`parse`) into an immutable AST. Placeholders may stay in the AST as parameter
slots and be bound at evaluation time, which is how the emulator compiles an ``objectMappingIQL`` once per
mapping; :func:`substitute` is the textual form Assets documents (``${os}`` becomes ``"macOS Big Sur"``).
Attribute values compare as text (:func:`text_of`); a multi-valued attribute matches if any value matches.
"""
from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Protocol

Params = Mapping[str, str]


class AqlError(ValueError):
    """The query is not in the supported subset; the message names the position and what was expected."""


@dataclass(frozen=True)
class Placeholder:
    """``${name}``: a value bound at evaluation time."""

    name: str


Value = str | Placeholder


@dataclass(frozen=True)
class Compare:
    """``attribute op value`` with op one of ``=``, ``==``, ``!=``."""

    attribute: str
    op: str
    value: Value


@dataclass(frozen=True)
class In:
    """``attribute IN (v1, v2, ...)`` - case-insensitive membership, like ``=``."""

    attribute: str
    values: tuple[Value, ...]


@dataclass(frozen=True)
class BoolOp:
    """``AND`` / ``OR`` of two or more operands."""

    op: str
    operands: tuple[Node, ...]


Node = Compare | In | BoolOp


class Searchable(Protocol):
    """What :meth:`Query.select` needs from an object store: ids and an equality index per attribute."""

    def ids(self) -> set[int]:
        """Every object id in scope."""

    def lookup(self, attribute: str, folded: str) -> set[int]:
        """Ids of objects with a value of ``attribute`` whose ``text_of(..).casefold()`` equals ``folded``."""

    def values(self, object_id: int, attribute: str) -> list:
        """The values of ``attribute`` on one object (empty list when unset)."""


def text_of(value: object) -> str:
    """The text form AQL compares: booleans as ``true``/``false``, numbers without a trailing ``.0``."""
    if type(value) is str:  # the common case first: this runs for every indexed value
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def quote(value: str) -> str:
    """``value`` as an AQL string literal: double quotes, with ``"`` and ``\\`` escaped."""
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


_PLACEHOLDER = re.compile(r"\$\{([^{}]+)\}")


def substitute(text: str, params: Params) -> str:
    """Replace every ``${name}`` in ``text`` by the quoted value of ``params[name]``. Raises ``AqlError``
    for a placeholder without a value. Pure."""
    def replace(match: re.Match) -> str:
        if match.group(1) not in params:
            raise AqlError(f"no value for placeholder ${{{match.group(1)}}}")
        return quote(params[match.group(1)])
    return _PLACEHOLDER.sub(replace, text)


_TOKEN = re.compile(r"""
    (?P<space>\s+)
  | (?P<string>"(?:[^"\\]|\\.)*")
  | (?P<placeholder>\$\{[^{}\s]+\})
  | (?P<number>-?\d+(?:\.\d+)?(?![\w.]))
  | (?P<op>==|!=|=)
  | (?P<punct>[(),])
  | (?P<word>[A-Za-z_][A-Za-z0-9_]*)
""", re.VERBOSE)
_KEYWORDS = {"AND", "OR", "IN"}


@dataclass(frozen=True)
class _Token:
    kind: str
    text: str
    pos: int


def _tokenize(text: str) -> list[_Token]:
    tokens, pos = [], 0
    while pos < len(text):
        match = _TOKEN.match(text, pos)
        if not match:
            raise AqlError(f"unexpected {text[pos:pos + 10]!r} at position {pos}")
        kind = match.lastgroup or ""
        if kind == "word" and match.group().upper() in _KEYWORDS:
            kind = "keyword"
        if kind != "space":
            tokens.append(_Token(kind, match.group(), pos))
        pos = match.end()
    tokens.append(_Token("end", "", len(text)))
    return tokens


def _unquote(literal: str) -> str:
    return re.sub(r"\\(.)", r"\1", literal[1:-1])


class _Parser:
    """Recursive descent over the token list; every failure names the position and the expectation."""

    def __init__(self, text: str):
        self.tokens = _tokenize(text)
        self.i = 0

    def peek(self) -> _Token:
        return self.tokens[self.i]

    def take(self) -> _Token:
        token = self.tokens[self.i]
        self.i += 1
        return token

    def fail(self, expected: str) -> AqlError:
        token = self.peek()
        found = "end of query" if token.kind == "end" else repr(token.text)
        return AqlError(f"expected {expected} at position {token.pos}, found {found}")

    def is_keyword(self, word: str) -> bool:
        return self.peek().kind == "keyword" and self.peek().text.upper() == word

    def query(self) -> Node:
        return self._chain("OR", self.and_expr)

    def and_expr(self) -> Node:
        return self._chain("AND", self.primary)

    def _chain(self, word: str, operand) -> Node:
        operands = [operand()]
        while self.is_keyword(word):
            self.take()
            operands.append(operand())
        return operands[0] if len(operands) == 1 else BoolOp(word, tuple(operands))

    def primary(self) -> Node:
        if self.peek().text == "(":
            self.take()
            node = self.query()
            if self.take().text != ")":
                self.i -= 1
                raise self.fail("')'")
            return node
        attribute = self.attribute()
        if self.is_keyword("IN"):
            self.take()
            return In(attribute, self.value_list())
        if self.peek().kind != "op":
            raise self.fail("'=', '==', '!=' or IN")
        return Compare(attribute, self.take().text, self.value())

    def attribute(self) -> str:
        token = self.peek()
        if token.kind == "word":
            return self.take().text
        if token.kind == "string":
            return _unquote(self.take().text)
        raise self.fail("an attribute name")

    def value(self) -> Value:
        token = self.peek()
        if token.kind == "string":
            return _unquote(self.take().text)
        if token.kind == "number":
            return self.take().text
        if token.kind == "placeholder":
            return Placeholder(self.take().text[2:-1])
        raise self.fail("a quoted value, a number or ${placeholder}")

    def value_list(self) -> tuple[Value, ...]:
        if self.take().text != "(":
            self.i -= 1
            raise self.fail("'(' after IN")
        values = [self.value()]
        while self.peek().text == ",":
            self.take()
            values.append(self.value())
        if self.take().text != ")":
            self.i -= 1
            raise self.fail("',' or ')'")
        return tuple(values)


@dataclass(frozen=True)
class Query:
    """A parsed query. ``placeholders`` and ``attributes`` list what it needs; evaluation is pure."""

    text: str
    root: Node

    @property
    def placeholders(self) -> frozenset[str]:
        """Names of the ``${...}`` slots left in the AST."""
        return frozenset(v.name for v in _values(self.root) if isinstance(v, Placeholder))

    @property
    def attributes(self) -> frozenset[str]:
        """Attribute names the query reads."""
        return frozenset(_attributes(self.root))

    def matches(self, attributes: Mapping[str, list], params: Params | None = None) -> bool:
        """Whether an object with these attribute values (name → list) satisfies the query."""
        return _matches(self.root, {k.casefold(): v for k, v in attributes.items()}, params or {})

    def select(self, source: Searchable, params: Params | None = None) -> set[int]:
        """Ids of the objects of ``source`` that satisfy the query, through its indexes (no scan except
        for ``!=``). Raises ``AqlError`` for an unbound placeholder."""
        return _select(self.root, source, params or {})


def parse(text: str, params: Params | None = None) -> Query:
    """Parse ``text``; with ``params``, placeholders are substituted (quoted) first. Raises ``AqlError``."""
    source = substitute(text, params) if params is not None else text
    parser = _Parser(source)
    if parser.peek().kind == "end":
        raise AqlError("empty query")
    root = parser.query()
    if parser.peek().kind != "end":
        raise parser.fail("AND, OR or end of query")
    return Query(source, root)


def _values(node: Node) -> Iterable[Value]:
    if isinstance(node, Compare):
        yield node.value
    elif isinstance(node, In):
        yield from node.values
    else:
        for operand in node.operands:
            yield from _values(operand)


def _attributes(node: Node) -> Iterable[str]:
    if isinstance(node, BoolOp):
        for operand in node.operands:
            yield from _attributes(operand)
    else:
        yield node.attribute


def _bind(value: Value, params: Params) -> str:
    if isinstance(value, Placeholder):
        if value.name not in params:
            raise AqlError(f"no value for placeholder ${{{value.name}}}")
        return params[value.name]
    return value


def _matches(node: Node, attributes: Mapping[str, list], params: Params) -> bool:
    if isinstance(node, BoolOp):
        combine = all if node.op == "AND" else any
        return combine(_matches(o, attributes, params) for o in node.operands)
    texts = [text_of(v) for v in attributes.get(node.attribute.casefold(), [])]
    if isinstance(node, In):
        wanted = {_bind(v, params).casefold() for v in node.values}
        return any(t.casefold() in wanted for t in texts)
    value = _bind(node.value, params)
    if node.op == "==":
        return value in texts
    equal = any(t.casefold() == value.casefold() for t in texts)
    # "!=" matches objects without the value, including objects where the attribute is empty (UNCONFIRMED:
    # Assets may exclude empty attributes from "!=").
    return equal if node.op == "=" else not equal


def _select(node: Node, source: Searchable, params: Params) -> set[int]:
    if isinstance(node, BoolOp):
        sets = [_select(o, source, params) for o in node.operands]
        return set.intersection(*sets) if node.op == "AND" else set.union(*sets)
    if isinstance(node, In):
        found: set[int] = set()
        for value in node.values:
            found |= source.lookup(node.attribute, _bind(value, params).casefold())
        return found
    value = _bind(node.value, params)
    equal = source.lookup(node.attribute, value.casefold())
    if node.op == "=":
        return equal
    if node.op == "==":
        return {i for i in equal if value in (text_of(v) for v in source.values(i, node.attribute))}
    return source.ids() - equal
