"""The AQL subset: parsing into an AST, clear errors, and evaluation on one object and through indexes."""
from __future__ import annotations

import pytest

from sandbox.assets.aql import AqlError, BoolOp, Compare, In, Placeholder, parse, quote, substitute, text_of


class Objects:
    """A tiny ``Searchable``: objects as {id: {attribute: [values]}}, with a scan-built equality index."""

    def __init__(self, objects: dict[int, dict[str, list]]):
        self.objects = objects
        self.lookups = 0

    def ids(self) -> set[int]:
        return set(self.objects)

    def lookup(self, attribute: str, folded: str) -> set[int]:
        self.lookups += 1
        return {i for i, attrs in self.objects.items()
                for name, values in attrs.items() if name.casefold() == attribute.casefold()
                for v in values if text_of(v).casefold() == folded}

    def values(self, object_id: int, attribute: str) -> list:
        attrs = self.objects[object_id]
        return next((v for k, v in attrs.items() if k.casefold() == attribute.casefold()), [])


OBJECTS = Objects({
    1: {"Name": ["Sales"], "Code": ["S1"], "Size": [10]},
    2: {"Name": ["SALES"], "Code": ["S2"], "Size": [3]},
    3: {"Name": ["Marketing"], "Code": ["M1"]},
    4: {"Name": ["Entra Team", "Identity"], "Entra Object ID": ["abc-123"], "Active": [True]},
})


def test_parses_comparisons_with_bare_and_quoted_attribute_names():
    assert parse('Name = "Sales"').root == Compare("Name", "=", "Sales")
    assert parse('"Entra Object ID" == "abc"').root == Compare("Entra Object ID", "==", "abc")
    assert parse("Size != 10").root == Compare("Size", "!=", "10")
    assert parse('Code IN ("S1", "S2", 3)').root == In("Code", ("S1", "S2", "3"))
    assert parse('name = "say \\"hi\\" \\\\ now"').root == Compare("name", "=", 'say "hi" \\ now')


def test_and_binds_tighter_than_or_and_parentheses_override():
    a, b, c = Compare("A", "=", "1"), Compare("B", "=", "2"), Compare("C", "=", "3")
    assert parse("A = 1 OR B = 2 AND C = 3").root == BoolOp("OR", (a, BoolOp("AND", (b, c))))
    assert parse("(A = 1 OR B = 2) and C = 3").root == BoolOp("AND", (BoolOp("OR", (a, b)), c))
    assert parse("A = 1 or B = 2 or C = 3").root == BoolOp("OR", (a, b, c))


def test_placeholders_stay_as_slots_or_are_substituted_quoted_before_parsing():
    query = parse('"Entra Object ID" = ${managerId}')
    assert query.root == Compare("Entra Object ID", "=", Placeholder("managerId"))
    assert query.placeholders == {"managerId"} and query.attributes == {"Entra Object ID"}
    substituted = parse("Name = ${x}", {"x": 'He said "no" \\'})
    assert substituted.text == 'Name = "He said \\"no\\" \\\\"'
    assert substituted.root == Compare("Name", "=", 'He said "no" \\')
    assert substitute("a = ${x} OR b = ${x}", {"x": "v"}) == 'a = "v" OR b = "v"'
    assert quote('a"b') == '"a\\"b"'


@pytest.mark.parametrize("text, fragment", [
    ("", "empty query"),
    ('Name LIKE "x"', "expected '=', '==', '!=' or IN at position 5"),
    ("Name =", "found end of query"),
    ("Name = Sales", "expected a quoted value, a number or ${placeholder} at position 7, found 'Sales'"),
    ('(Name = "x"', "expected ')'"),
    ('Name = "x" Code = "y"', "expected AND, OR or end of query"),
    ('Name IN "x"', "'(' after IN"),
    ('Name IN ("x" "y")', "expected ',' or ')'"),
    ('Name = "unterminated', "unexpected"),
    ("Name = 12abc", "unexpected"),
    ('AND = "x"', "an attribute name"),
    ("objectType = Person", "found 'Person'"),
])
def test_anything_outside_the_subset_is_a_clear_parse_error(text, fragment):
    with pytest.raises(AqlError) as info:
        parse(text)
    assert fragment in str(info.value)


def test_substitution_without_a_value_is_an_error():
    with pytest.raises(AqlError, match=r"no value for placeholder \$\{missing\}"):
        substitute("Name = ${missing}", {})
    with pytest.raises(AqlError, match="no value"):
        parse("Name = ${missing}").select(OBJECTS, {})


@pytest.mark.parametrize("text, expected", [
    ('Name = "sales"', {1, 2}),                  # = ignores case
    ('Name == "Sales"', {1}),                    # == does not
    ('Name == "sales"', set()),
    ('Name != "sales"', {3, 4}),                 # objects without the value, including multi-valued ones
    ('Code IN ("s1", "M1")', {1, 3}),
    ('name = "identity"', {4}),                  # attribute names ignore case; any value of a list matches
    ("Size = 10", {1}),                          # numbers compare as text
    ('Active = "TRUE"', {4}),                    # booleans as true/false
    ('Name = "sales" AND Size = 3', {2}),
    ('Name = "Marketing" OR Code = "S1"', {1, 3}),
    ('(Name = "sales" OR Name = "marketing") AND Code != "S2"', {1, 3}),
    ('Missing = "x"', set()),
])
def test_select_through_indexes_agrees_with_matching_one_object(text, expected):
    query = parse(text)
    assert query.select(OBJECTS) == expected
    assert {i for i, attrs in OBJECTS.objects.items() if query.matches(attrs)} == expected


def test_placeholder_slots_bind_at_evaluation_and_use_the_index():
    query = parse('"Entra Object ID" = ${id}')
    before = OBJECTS.lookups
    assert query.select(OBJECTS, {"id": "ABC-123"}) == {4}
    assert query.select(OBJECTS, {"id": "nobody"}) == set()
    assert OBJECTS.lookups == before + 2
    assert query.matches({"entra object id": ["abc-123"]}, {"id": "abc-123"})


def test_text_of_normalises_what_aql_compares():
    assert [text_of(v) for v in ("x", True, False, 3, 2.0, 2.5)] == ["x", "true", "false", "3", "2", "2.5"]
