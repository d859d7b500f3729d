"""A strict OData ``$filter`` subset for the Graph emulator: a tokenizer and a recursive-descent parser that
turn a filter into a predicate over a stored object (a dict of Graph properties).

Grammar (keywords and function names case-insensitive; reference/graph.md §1.4 and §8)::

    expr     := and ("or" and)*
    and      := unary ("and" unary)*
    unary    := "not" unary | primary
    primary  := "(" expr ")" | func | lambda | compare
    func     := ("startswith" | "endswith") "(" property "," literal ")"
    lambda   := property "/" ("any" | "all") "(" var ":" var ("eq" | "ne") literal ")"
    compare  := property ("eq" | "ne" | "ge" | "gt" | "le" | "lt") literal
              | property "in" "(" literal ("," literal)* ")"
    property := name | name "/" name          (the second: a sub-property of a complex property, a "path")
    literal  := 'string' (quote doubled) | true | false | null | number | GUID | DateTimeOffset

Semantics: string comparisons are case-insensitive (as the directory compares them); ``eq null`` matches an
unset property; ``ne`` is the negation of ``eq``; ``ge``/``gt``/``le``/``lt`` only on DateTimeOffset
properties; ``any`` on string collections. A path (``signInActivity/lastSignInDateTime``) is filterable if
``types`` names it, with ``eq``, ``ne``, ``not``, ``ge`` and ``le`` only, and - for the paths in ``alone`` - not
together with any other property (the v1.0 user model says so of signInActivity). ``ne``, ``not`` and ``endswith`` need an advanced query
(``ConsistencyLevel: eventual`` and ``$count=true``); ``in`` takes at most 15 values unless the query is
advanced. Errors are ``FilterError(code, message)`` with Graph's codes: ``BadRequest`` for syntax and type
errors and for unknown properties (as ``$select`` answers them: "Could not find a property named 'X' on type
'microsoft.graph.Y'."), ``Request_UnsupportedQuery`` for what the directory does not support. Wording that is not quoted in the reference is an emulator choice (UNCONFIRMED).
"""
from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass

Predicate = Callable[[dict], bool]
MAX_IN_VALUES = 15
ADVANCED_HINT = ("is not supported because the required parameters might be missing. Try adding $count=true "
                 "query parameter and ConsistencyLevel:eventual header. Refer to "
                 "https://aka.ms/graph-docs/advanced-queries for more information")
_TOKEN = re.compile(r"""
    (?P<space>\s+)
  | (?P<string>'(?:[^']|'')*')
  | (?P<datetime>\d{4}-\d{2}-\d{2}T\d{2}:\d{2}(?::\d{2}(?:\.\d{1,7})?)?(?:Z|[+-]\d{2}:\d{2}))
  | (?P<guid>[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}(?![\w-]))
  | (?P<number>-?\d+(?:\.\d+)?(?![\w.]))
  | (?P<word>[A-Za-z_][A-Za-z0-9_]*)
  | (?P<punct>[(),:/])
""", re.VERBOSE)
_COMPARE = {"eq", "ne", "ge", "gt", "le", "lt"}
_KIND_NAMES = {"eq": "Equal", "ne": "NotEqual", "ge": "GreaterThanOrEqual", "gt": "GreaterThan",
               "le": "LessThanOrEqual", "lt": "LessThan"}
_EDM = {"string": "Edm.String", "bool": "Edm.Boolean", "guid": "Edm.Guid", "datetime": "Edm.DateTimeOffset",
        "number": "Edm.Int32"}
# Property types as shared.records.graph_catalogue gives them; "Integer" is any width (msgraph-sdk reads Int32 and Int64
# alike): the only filterable one here, device.deviceVersion, is Edm.Int32, as the type error names it.
_ACCEPTS = {"String": "string", "Boolean": "bool", "Guid": "guid", "DateTimeOffset": "datetime", "Integer": "number"}
_EDM_NAMES = {"Integer": "Int32"}


class FilterError(Exception):
    """A rejected filter: ``code`` and ``message`` as Graph's error body gives them (status 400)."""

    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code, self.message = code, message


@dataclass(frozen=True, slots=True)
class _Tok:
    kind: str     # string, datetime, guid, number, word, punct, end
    text: str
    pos: int


@dataclass(frozen=True, slots=True)
class _Literal:
    kind: str     # string, bool, null, guid, datetime, number
    value: object


def tokenize(text: str) -> list[_Tok]:
    """The tokens of ``text`` (spaces dropped) ending with an ``end`` token; FilterError on stray characters."""
    tokens, pos = [], 0
    while pos < len(text):
        match = _TOKEN.match(text, pos)
        if not match:
            raise _syntax(text, pos)
        if match.lastgroup != "space":
            tokens.append(_Tok(match.lastgroup, match.group(), pos))
        pos = match.end()
    tokens.append(_Tok("end", "", len(text)))
    return tokens


def _syntax(text: str, pos: int) -> FilterError:
    return FilterError("BadRequest", f"Invalid filter clause: Syntax error at position {pos} in '{text}'.")


def compile_filter(text: str, *, entity: str, types: Mapping[str, str], known: Collection[str],
                   advanced: bool = False, endswith: Collection[str] = (), alone: Collection[str] = ()) -> Predicate:
    """A predicate for ``text`` on objects of ``entity`` (e.g. "microsoft.graph.user").

    ``types`` maps the filterable properties to their Edm type name ("String", "Boolean", "Guid",
    "DateTimeOffset", "Integer", "Collection(String)"); ``known`` are all property names of the type (a known
    but unfilterable one is Request_UnsupportedQuery, an unknown one BadRequest); ``endswith`` lists
    the properties that support ``endswith`` (advanced queries only); ``alone`` the paths that cannot be
    combined with other properties.
    """
    if not text.strip():
        raise FilterError("BadRequest", "Invalid filter clause: The filter expression is empty.")
    parser = _Parser(text, tokenize(text), entity, types, known, advanced, frozenset(endswith))
    predicate = parser.expr()
    if parser.peek().kind != "end":
        raise _syntax(text, parser.peek().pos)
    lone = parser.used & frozenset(alone)
    if lone and parser.used - lone:  # wording UNCONFIRMED
        raise FilterError("Request_UnsupportedQuery", f"Property '{min(lone).split('/')[0]}' cannot be "
                                                      "combined with other properties in $filter.")
    return predicate


class _Parser:
    def __init__(self, text: str, tokens: list[_Tok], entity: str, types: Mapping[str, str],
                 known: Collection[str], advanced: bool, endswith: frozenset[str]):
        self.text, self.tokens, self.i = text, tokens, 0
        self.entity, self.types, self.known, self.advanced, self.endswith = entity, types, known, advanced, endswith
        self.used: set[str] = set()  # the properties (and paths) the filter names
        self.resource = entity.rsplit(".", 1)[-1][:1].upper() + entity.rsplit(".", 1)[-1][1:]

    # -- token helpers --------------------------------------------------------------------------------------

    def peek(self, ahead: int = 0) -> _Tok:
        return self.tokens[min(self.i + ahead, len(self.tokens) - 1)]

    def take(self) -> _Tok:
        tok = self.peek()
        self.i += 1
        return tok

    def is_word(self, word: str, ahead: int = 0) -> bool:
        tok = self.peek(ahead)
        return tok.kind == "word" and tok.text.lower() == word

    def expect(self, text: str) -> None:
        tok = self.take()
        if tok.text.lower() != text:
            raise _syntax(self.text, tok.pos)

    def advanced_only(self, operator: str) -> None:
        if not self.advanced:
            raise FilterError("Request_UnsupportedQuery", f"Operator '{operator}' {ADVANCED_HINT}")

    # -- grammar --------------------------------------------------------------------------------------------

    def expr(self) -> Predicate:
        parts = [self.conj()]
        while self.is_word("or"):
            self.take()
            parts.append(self.conj())
        return parts[0] if len(parts) == 1 else (lambda obj: any(p(obj) for p in parts))

    def conj(self) -> Predicate:
        parts = [self.unary()]
        while self.is_word("and"):
            self.take()
            parts.append(self.unary())
        return parts[0] if len(parts) == 1 else (lambda obj: all(p(obj) for p in parts))

    def unary(self) -> Predicate:
        if self.is_word("not") and not (self.peek(1).kind == "word" and self.peek(1).text.lower() in _COMPARE):
            self.take()
            self.advanced_only("not")
            inner = self.unary()
            return lambda obj: not inner(obj)
        return self.primary()

    def primary(self) -> Predicate:
        tok = self.peek()
        if tok.text == "(":
            self.take()
            inner = self.expr()
            self.expect(")")
            return inner
        if tok.kind != "word":
            raise _syntax(self.text, tok.pos)
        if tok.text.lower() in ("startswith", "endswith") and self.peek(1).text == "(":
            return self.function()
        if self.peek(1).text == "/" and self._quantifier(2):
            return self.lambda_()
        return self.compare()

    def _quantifier(self, ahead: int) -> bool:
        """Whether ``any(``/``all(`` (a lambda) starts ``ahead`` tokens on."""
        return (self.is_word("any", ahead) or self.is_word("all", ahead)) and self.peek(ahead + 1).text == "("

    def prop(self) -> tuple[str, str]:
        tok = self.take()
        if tok.kind != "word":
            raise _syntax(self.text, tok.pos)
        if tok.text not in self.known:
            raise FilterError("BadRequest", f"Could not find a property named '{tok.text}' on type "
                                                    f"'{self.entity}'.")
        name = tok.text
        if self.peek().text == "/" and self.peek(1).kind == "word" and not self._quantifier(1):
            self.take()
            name = f"{name}/{self.take().text}"
        if name not in self.types:
            raise self.unsupported(name)
        self.used.add(name)
        return name, self.types[name]

    def unsupported(self, name: str) -> FilterError:
        return FilterError("Request_UnsupportedQuery", "Unsupported or invalid query filter clause specified for "
                                                       f"property '{name}' of resource '{self.resource}'.")

    def literal(self) -> _Literal:
        tok = self.take()
        if tok.kind == "string":
            return _Literal("string", tok.text[1:-1].replace("''", "'"))
        if tok.kind == "word" and tok.text in ("true", "false"):
            return _Literal("bool", tok.text == "true")
        if tok.kind == "word" and tok.text == "null":
            return _Literal("null", None)
        if tok.kind == "guid":
            return _Literal("guid", tok.text.lower())
        if tok.kind == "datetime":
            return _Literal("datetime", _parse_datetime(tok.text))
        if tok.kind == "number":
            return _Literal("number", float(tok.text) if "." in tok.text else int(tok.text))
        raise _syntax(self.text, tok.pos)

    def check_type(self, edm: str, literal: _Literal, operator: str) -> None:
        element = edm[len("Collection("):-1] if edm.startswith("Collection(") else edm
        if literal.kind == "null" and operator in ("eq", "ne") and not edm.startswith("Collection("):
            return
        if _ACCEPTS.get(element) != literal.kind:
            found = _EDM.get(literal.kind, "null")
            raise FilterError("BadRequest", "A binary operator with incompatible types was detected. Found operand "
                                            f"types 'Edm.{_EDM_NAMES.get(element, element)}' and '{found}' for "
                                            f"operator kind '{_KIND_NAMES[operator]}'.")

    def compare(self) -> Predicate:
        name, edm = self.prop()
        op_tok = self.take()
        operator = op_tok.text.lower()
        if op_tok.kind != "word" or operator not in (*_COMPARE, "in"):
            raise _syntax(self.text, op_tok.pos)
        if edm.startswith("Collection(") or ("/" in name and operator not in ("eq", "ne", "ge", "le")):
            raise self.unsupported(name)
        if operator == "in":
            self.expect("(")
            values = [self.literal()]
            while self.peek().text == ",":
                self.take()
                values.append(self.literal())
            self.expect(")")
            for value in values:
                self.check_type(edm, value, "eq")
            if len(values) > MAX_IN_VALUES and not self.advanced:
                raise FilterError("Request_UnsupportedQuery", "Too many child clauses specified in search filter "
                                                              f"expression containing 'OR' operators: {len(values)}. "
                                                              f"Max allowed: {MAX_IN_VALUES}.")
            tests = [_equals(name, v) for v in values]
            return lambda obj: any(t(obj) for t in tests)
        literal = self.literal()
        self.check_type(edm, literal, operator)
        if operator == "ne":
            self.advanced_only("ne")
            test = _equals(name, literal)
            return lambda obj: not test(obj)
        if operator == "eq":
            return _equals(name, literal)
        if edm != "DateTimeOffset" or literal.kind == "null":
            raise self.unsupported(name)
        return _ordered(name, operator, literal.value)

    def function(self) -> Predicate:
        function = self.take().text.lower()
        self.expect("(")
        name, edm = self.prop()
        self.expect(",")
        literal = self.literal()
        self.expect(")")
        if edm != "String" or literal.kind != "string":
            raise self.unsupported(name)
        prefix = literal.value.casefold()
        if function == "endswith":
            self.advanced_only("endsWith")
            if name not in self.endswith:
                raise self.unsupported(name)
            return lambda obj: isinstance(v := obj.get(name), str) and v.casefold().endswith(prefix)
        return lambda obj: isinstance(v := obj.get(name), str) and v.casefold().startswith(prefix)

    def lambda_(self) -> Predicate:
        name, edm = self.prop()
        self.expect("/")
        quantifier = self.take()
        if quantifier.kind != "word" or quantifier.text.lower() not in ("any", "all"):
            raise _syntax(self.text, quantifier.pos)
        if not edm.startswith("Collection("):
            raise self.unsupported(name)
        self.expect("(")
        var = self.take()
        self.expect(":")
        ref = self.take()
        if var.kind != "word" or ref.text != var.text:
            raise _syntax(self.text, ref.pos)
        op_tok = self.take()
        operator = op_tok.text.lower()
        if operator not in ("eq", "ne"):
            raise _syntax(self.text, op_tok.pos) if operator not in _COMPARE else self.unsupported(name)
        literal = self.literal()
        self.check_type(edm, literal, operator)
        self.expect(")")
        if operator == "ne":
            self.advanced_only("ne")
        wanted = literal.value.casefold()
        if quantifier.text.lower() == "all":
            self.advanced_only("all")
        matches = (lambda item: isinstance(item, str) and item.casefold() == wanted) if operator == "eq" else \
            (lambda item: not (isinstance(item, str) and item.casefold() == wanted))
        if quantifier.text.lower() == "all":
            return lambda obj: all(matches(item) for item in obj.get(name) or ())
        return lambda obj: any(matches(item) for item in obj.get(name) or ())


def _parse_datetime(text: str) -> dt.datetime:
    value = dt.datetime.fromisoformat(text)
    return value if value.tzinfo else value.replace(tzinfo=dt.UTC)


def _getter(name: str) -> Callable[[dict], object]:
    """Reads property ``name`` of an object, or the sub-property of a path ("complex/sub"; None if unset)."""
    if "/" not in name:
        return lambda obj: obj.get(name)
    head, sub = name.split("/", 1)
    return lambda obj: v.get(sub) if isinstance(v := obj.get(head), dict) else None


def _equals(name: str, literal: _Literal) -> Predicate:
    kind, wanted, get = literal.kind, literal.value, _getter(name)
    if kind == "null":
        return lambda obj: get(obj) is None
    if kind == "string":
        folded = wanted.casefold()
        return lambda obj: isinstance(v := get(obj), str) and v.casefold() == folded
    if kind == "guid":
        return lambda obj: isinstance(v := get(obj), str) and v.lower() == wanted
    if kind == "datetime":
        return lambda obj: isinstance(v := get(obj), str) and _parse_datetime(v) == wanted
    if kind == "bool":
        return lambda obj: get(obj) is wanted
    return lambda obj: get(obj) == wanted


def _ordered(name: str, operator: str, wanted: dt.datetime) -> Predicate:
    compare = {"ge": dt.datetime.__ge__, "gt": dt.datetime.__gt__, "le": dt.datetime.__le__,
               "lt": dt.datetime.__lt__}[operator]
    get = _getter(name)
    return lambda obj: isinstance(v := get(obj), str) and compare(_parse_datetime(v), wanted)
