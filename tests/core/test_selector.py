"""Label selectors: grammar, the render/parse law, matching semantics and error positions."""

from __future__ import annotations

import re

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from fleetwarden.core.selector import (
    And,
    Eq,
    Exists,
    In,
    Not,
    Or,
    Selector,
    matches,
    parse,
    render,
)
from fleetwarden.errors import InputError, SelectorError

KEYWORDS = frozenset({"and", "or", "not", "in", "notin"})
MAX_LENGTH = 65536  # the parser's own guard; APIs accept at most 4096 characters
MAX_DEPTH = 64

# -- strategies -------------------------------------------------------------------------------

keys = st.from_regex(r"[A-Za-z0-9_][A-Za-z0-9_.\-/]{0,11}", fullmatch=True).filter(
    lambda k: k.lower() not in KEYWORDS
)
# Bare words, keywords (which must be quoted) and free text, quotes and backslashes included.
values = st.one_of(
    st.from_regex(r"[A-Za-z0-9_.\-/:+@]{1,10}", fullmatch=True),
    st.sampled_from(sorted(KEYWORDS | {"AND", "Or", "NotIn"})),
    st.text(st.characters(exclude_categories=("Cs",)), max_size=10),
    st.text(alphabet="'\"\\ ab", max_size=8),
)
value_sets = st.frozensets(values, min_size=1, max_size=4).map(lambda s: tuple(sorted(s)))

leaves: st.SearchStrategy[Selector] = st.one_of(
    st.builds(Eq, keys, values),
    st.builds(In, keys, value_sets),
    st.builds(Exists, keys),
    st.builds(lambda k: Not(Exists(k)), keys),
    st.builds(lambda k, v: Not(Eq(k, v)), keys, values),
    st.builds(lambda k, vs: Not(In(k, vs)), keys, value_sets),
)


def _flat(kind: type[And | Or], items: list[Selector]) -> tuple[Selector, ...]:
    """Operands as the parser produces them: an And never directly holds an And (same for Or)."""
    out: list[Selector] = []
    for item in items:
        out.extend(item.operands if isinstance(item, kind) else (item,))
    return tuple(out)


def selectors(depth: int = 4) -> st.SearchStrategy[Selector]:
    if depth == 0:
        return leaves
    sub = selectors(depth - 1)
    return st.one_of(
        leaves,
        st.builds(Not, sub),
        st.lists(sub, min_size=2, max_size=3).map(lambda ops: And(_flat(And, ops))),
        st.lists(sub, min_size=2, max_size=3).map(lambda ops: Or(_flat(Or, ops))),
    )


def _keys_of(node: Selector) -> set[str]:
    match node:
        case Eq(key, _) | In(key, _) | Exists(key):
            return {key}
        case Not(operand):
            return _keys_of(operand)
        case And(operands) | Or(operands):
            return set().union(*(_keys_of(o) for o in operands))
    raise AssertionError(node)  # pragma: no cover


attributes = st.dictionaries(
    st.one_of(keys, st.sampled_from(["site", "model", "zone", "k"])),
    st.one_of(values, st.sampled_from(["berlin", "paris", "gw-200", "true", "v"])),
    max_size=6,
)

# Token soups: fragments of valid and invalid selectors glued together at random.
_FRAGMENTS = [
    "k", "site", "a.b/c", "v", "gw-200", "x:y", "@", "+", "=", "==", "!=", "!", "(", ")", ",",
    "and", "or", "not", "in", "notin", "AND", "Or", "NOT", "IN", "'q'", '"q q"', "''", "'",
    '"', "'a\"b'", " ", "\t", "\n", "#", "$", "é", "~", "-", "_", "0", "=(", ")(",
]  # fmt: skip
soups = st.lists(st.sampled_from(_FRAGMENTS), max_size=16).flatmap(
    lambda parts: st.lists(
        st.sampled_from(["", " "]), min_size=len(parts), max_size=len(parts)
    ).map(lambda seps: "".join(p + s for p, s in zip(parts, seps, strict=True)))
)


def _parse_or_error(text: str) -> Selector | None:
    """Parse, or check the error is a SelectorError naming a position inside the text."""
    try:
        return parse(text)
    except SelectorError as e:
        error = e
    assert 0 <= error.position <= len(text), (text, error.position)
    assert str(error).endswith(f"at position {error.position}")
    assert isinstance(error, InputError)
    return None


# -- rule 1: parse(render(x)) == x --------------------------------------------------------------


@given(selectors())
@settings(max_examples=300)
def test_parse_inverts_render(node):
    """Rule 1: ``parse(render(ast)) == ast`` for every AST: the canonical rendering is a stable key."""
    text = render(node)
    assume(len(text) <= MAX_LENGTH)
    assert parse(text) == node
    assert render(parse(text)) == text


@given(soups)
@settings(max_examples=300)
def test_rendering_a_parsed_selector_is_canonical(text):
    """Rule 1: whatever parses renders to a canonical text that parses back to the same AST."""
    node = _parse_or_error(text)
    if node is not None:
        canonical = render(node)
        assert parse(canonical) == node
        assert render(parse(canonical)) == canonical


@pytest.mark.parametrize(
    "text",
    [
        pytest.param(",".join(["a"] * 1000), id="comma-becomes-and-over-4096-chars"),
        pytest.param("not " * 40 + "k", id="not-chain-renders-twice-as-deep"),
    ],
)
def test_every_parsed_selector_renders_to_a_parseable_text(text):
    """Rule 1: ``parse(render(ast)) == ast`` for every AST, including every AST that parse returns.

    ``a,a,...`` (1999 chars) renders with " and " (5995 chars > 4096); ``not not ... k`` (41 unary
    levels) renders as ``not (not (... !k))`` (80 levels > 64). Both re-parse with SelectorError.
    """
    node = parse(text)
    assert parse(render(node)) == node


@pytest.mark.parametrize("value", ["a'b\"c", "back\\slash", "\\", '"', "'", 'end\\"'])
def test_any_value_renders_with_escapes(value):
    """Rule 1 for every value: a backslash escapes the next character inside quotes."""
    node = Eq("k", value)
    assert parse(render(node)) == node


@given(st.text(max_size=40))
def test_every_text_value_round_trips(value):
    """Rule 1: values need not avoid quote characters."""
    node = In("k", (value,))
    assert parse(render(node)) == node


# -- the grammar in the module docstring ------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "site in (berlin,paris) and model=gw-200",
            And((In("site", ("berlin", "paris")), Eq("model", "gw-200"))),
        ),
        ("canary=true, not site=lab", And((Eq("canary", "true"), Not(Eq("site", "lab"))))),
        (
            "(zone=eu-1 or zone=eu-2) and !decommissioned",
            And((Or((Eq("zone", "eu-1"), Eq("zone", "eu-2"))), Not(Exists("decommissioned")))),
        ),
        ("k", Exists("k")),
        ("!k", Not(Exists("k"))),
        ("not k", Not(Exists("k"))),
        ("k=v", Eq("k", "v")),
        ("k==v", Eq("k", "v")),
        ("k!=v", Not(Eq("k", "v"))),
        ("k in (a)", In("k", ("a",))),
        ("k notin (a,b)", Not(In("k", ("a", "b")))),
        ("k not in (a)", Not(In("k", ("a",)))),
        ("k in (b, a, b)", In("k", ("a", "b"))),
        ("a.b/c-d_e=x:y+z@w", Eq("a.b/c-d_e", "x:y+z@w")),
        ("  k  =  v  ", Eq("k", "v")),
        ("k in(a ,b)", In("k", ("a", "b"))),
        ("a or b and c", Or((Exists("a"), And((Exists("b"), Exists("c")))))),
        ("a and b or c", Or((And((Exists("a"), Exists("b"))), Exists("c")))),
        ("a, b or c", Or((And((Exists("a"), Exists("b"))), Exists("c")))),
        ("(a and b) and c", And((Exists("a"), Exists("b"), Exists("c")))),
        ("a or (b or c)", Or((Exists("a"), Exists("b"), Exists("c")))),
        ("a and (b or c)", And((Exists("a"), Or((Exists("b"), Exists("c")))))),
        ("not (a or b)", Not(Or((Exists("a"), Exists("b"))))),
        ("not not a", Not(Not(Exists("a")))),
        ("(((a)))", Exists("a")),
    ],
)
def test_grammar_examples(text, expected):
    """Grammar: ``expr := and_expr ("or" and_expr)*``, ``and_expr := unary (("and" | ",") unary)*``."""
    assert parse(text) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('k="hello world"', Eq("k", "hello world")),
        ("k='hello world'", Eq("k", "hello world")),
        ("k='say \"hi\"'", Eq("k", 'say "hi"')),
        ('k="it\'s"', Eq("k", "it's")),
        ("k=''", Eq("k", "")),
        ("k='in'", Eq("k", "in")),
        ("k='a,b'", Eq("k", "a,b")),
        ("k=' x '", Eq("k", " x ")),
        ("k in ('a b', \"c\", d)", In("k", ("a b", "c", "d"))),
        ("k notin ('(', ')')", Not(In("k", ("(", ")")))),
        ("k!='é'", Not(Eq("k", "é"))),
    ],
)
def test_quoted_values(text, expected):
    """VALUE is a bare word or a single- or double-quoted string."""
    assert parse(text) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("a AND b", And((Exists("a"), Exists("b")))),
        ("a Or b", Or((Exists("a"), Exists("b")))),
        ("NOT a", Not(Exists("a"))),
        ("k IN (x)", In("k", ("x",))),
        ("k NotIn (x)", Not(In("k", ("x",)))),
        ("k NOT IN (x)", Not(In("k", ("x",)))),
        ("k Not In (x)", Not(In("k", ("x",)))),
    ],
)
def test_keywords_are_case_insensitive(text, expected):
    """Grammar: keywords are case-insensitive."""
    assert parse(text) == expected


@pytest.mark.parametrize(
    ("node", "text"),
    [
        (Eq("k", "v"), "k=v"),
        (Eq("k", "in"), 'k="in"'),
        (Eq("k", "a b"), 'k="a b"'),
        (Eq("k", "it's"), 'k="it\'s"'),
        (Eq("k", 'say "hi"'), 'k="say \\"hi\\""'),
        (Eq("k", ""), 'k=""'),
        (Not(Not(Exists("k"))), "not !k"),
        (Not(Eq("k", "v")), "k!=v"),
        (Not(Exists("k")), "!k"),
        (Not(In("k", ("a", "b"))), "k notin (a,b)"),
        (And((Or((Exists("a"), Exists("b"))), Exists("c"))), "(a or b) and c"),
        (Or((And((Exists("a"), Exists("b"))), Exists("c"))), "a and b or c"),
        (Not(And((Exists("a"), Exists("b")))), "not (a and b)"),
    ],
)
def test_canonical_rendering(node, text):
    """Rule 1: the canonical rendering is a stable key."""
    assert render(node) == text


# -- rule 2: matching semantics ---------------------------------------------------------------

DEVICE = {"site": "berlin", "model": "gw-200", "canary": "true"}


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("site=berlin", True),
        ("site=paris", False),
        ("site!=paris", True),
        ("site!=berlin", False),
        ("site in (berlin,paris)", True),
        ("site in (paris,rome)", False),
        ("site notin (paris)", True),
        ("site notin (berlin)", False),
        ("site", True),
        ("!site", False),
        ("zone", False),
        ("!zone", True),
        ("site in (berlin,paris) and model=gw-200", True),
        ("site in (berlin,paris) and model=gw-100", False),
        ("canary=true, not site=lab", True),
        ("site=lab or canary=true", True),
        ("site=lab or canary=false", False),
        ("not (site=berlin and canary=true)", False),
    ],
)
def test_matches_examples(text, expected):
    """matches: whether a device with these attributes is selected."""
    assert matches(parse(text), DEVICE) is expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("zone!=eu-1", True),
        ("zone notin (eu-1,eu-2)", True),
        ("zone not in (eu-1)", True),
        ("zone=eu-1", False),
        ("zone in (eu-1,eu-2)", False),
        ("zone=''", False),
        ("zone in ('')", False),
    ],
)
def test_missing_key_never_equals_anything(text, expected):
    """Rule 2: a key that a device does not have never equals anything: ``k!=v`` and
    ``k notin (..)`` are true for it."""
    assert matches(parse(text), DEVICE) is expected


@given(keys, values, value_sets, attributes)
def test_missing_key_satisfies_not_equal_and_notin(key, value, vals, attrs):
    """Rule 2: a key that a device does not have never equals anything."""
    attrs.pop(key, None)
    assert matches(Not(Eq(key, value)), attrs)
    assert matches(Not(In(key, vals)), attrs)
    assert not matches(Eq(key, value), attrs)
    assert not matches(In(key, vals), attrs)
    assert not matches(Exists(key), attrs)


@given(selectors(3), attributes)
def test_matching_laws(node, attrs):
    """matches is boolean logic over the tree: Not negates, And is all, Or is any."""
    result = matches(node, attrs)
    assert matches(Not(node), attrs) is (not result)
    other = Exists("site")
    assert matches(And((node, other)), attrs) is (result and "site" in attrs)
    assert matches(Or((node, other)), attrs) is (result or "site" in attrs)


@given(selectors(3), attributes, st.dictionaries(keys, values, max_size=3))
def test_matching_only_reads_keys_the_selector_names(node, attrs, extra):
    """matches depends only on the attributes whose keys the selector names."""
    named = _keys_of(node)
    noise = {k: v for k, v in extra.items() if k not in named}
    assert matches(node, attrs | noise) is matches(node, attrs)
    stripped = {k: v for k, v in attrs.items() if k in named}
    assert matches(node, attrs) is matches(node, stripped)


# -- rule 3: errors name their position ------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "position"),
    [
        ("", 0),
        ("   ", 0),
        ("k=", 2),
        ("k==", 3),
        ("k in ()", 6),
        ("k in (a", 7),
        ("k in a", 5),
        ("k notin", 7),
        ("a and", 5),
        ("a or", 4),
        ("(a", 2),
        ("a)", 1),
        (")", 0),
        ("a b", 2),
        ("k='abc", 2),
        ('k="abc', 2),
        ("k=v#", 3),
        ("!", 1),
        ("!'k'", 1),
        ("!in", 1),
        ("and", 0),
        ("in=v", 0),
        ("-k", 0),
        ("a:b=c", 0),
        ("k=in", 2),
        ("k not (a)", 2),
        ("k=v, ", 5),
        ("not", 3),
        ("k in (a,)", 8),
        ("k=(", 2),
        ("k!", 1),
    ],
)
def test_syntax_errors_name_their_position(text, position):
    """Rule 3: every syntax error names its position in the input."""
    with pytest.raises(SelectorError) as info:
        parse(text)
    assert info.value.position == position
    assert str(info.value).endswith(f"at position {position}")


@given(st.text())
@settings(max_examples=500)
def test_arbitrary_text_parses_or_raises_selector_error(text):
    """Rule 3: malformed input raises SelectorError (never any other exception) inside the text."""
    _parse_or_error(text)


@given(soups)
@settings(max_examples=500)
def test_token_soup_parses_or_raises_selector_error(text):
    """Rule 3: malformed input raises SelectorError (never any other exception) inside the text."""
    _parse_or_error(text)


@given(selectors(3), st.integers(min_value=0), st.text(min_size=1, max_size=3))
def test_corrupted_selectors_parse_or_raise_selector_error(node, at, junk):
    """Rule 3: a valid selector with junk spliced in still only ever raises SelectorError."""
    text = render(node)
    at %= len(text) + 1
    _parse_or_error(text[:at] + junk + text[at:])
    _parse_or_error(text[:at])


def test_over_long_input_is_rejected():
    """Limits: a selector longer than the parser's guard is rejected before parsing."""
    assert parse("k" * MAX_LENGTH) == Exists("k" * MAX_LENGTH)
    with pytest.raises(SelectorError) as info:
        parse("k" * (MAX_LENGTH + 1))
    assert info.value.position == MAX_LENGTH
    with pytest.raises(SelectorError):
        parse(" or ".join(["a=b"] * 10_000))


@pytest.mark.parametrize(
    ("opening", "closing", "fits"),
    [("(", ")", 63), ("not ", "", 63), ("not (", ")", 31)],
)
def test_over_deep_input_is_rejected(opening, closing, fits):
    """Limits: nesting deeper than 64 unary levels is a SelectorError, never a RecursionError."""
    assert parse(opening * fits + "k" + closing * fits) is not None
    with pytest.raises(SelectorError) as info:
        parse(opening * (fits + 1) + "k" + closing * (fits + 1))
    assert 0 <= info.value.position <= len(opening * (fits + 1))
    huge = opening * (MAX_LENGTH // len(opening))
    with pytest.raises(SelectorError) as info:
        parse(huge)
    assert 0 <= info.value.position <= len(huge)


def test_depth_limit_is_exactly_64_unary_levels():
    """Limits: 63 parentheses around a term is 64 levels (accepted), 64 is 65 (rejected)."""
    assert parse("(" * 63 + "k" + ")" * 63) == Exists("k")
    with pytest.raises(SelectorError, match=re.escape("nests too deeply")):
        parse("(" * 64 + "k" + ")" * 64)
