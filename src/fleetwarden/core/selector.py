"""Label selectors: which devices an operator means.

Grammar (keywords are case-insensitive, whitespace is free)::

    expr     := and_expr ( "or" and_expr )*
    and_expr := unary ( ( "and" | "," ) unary )*
    unary    := "not" unary | "!" KEY | "(" expr ")" | term
    term     := KEY [ ("=" | "==" | "!=") VALUE
                    | "in" "(" VALUE ("," VALUE)* ")"
                    | ("notin" | "not in") "(" VALUE ("," VALUE)* ")" ]

A bare ``KEY`` means "the key is present"; ``!KEY`` means it is absent. VALUE is a bare word
(letters, digits and ``_ . - / : + @``) or a single- or double-quoted string in which a
backslash escapes the next character (``"say \\"hi\\""``). Examples::

    site in (berlin,paris) and model=gw-200
    canary=true, not site=lab
    (zone=eu-1 or zone=eu-2) and !decommissioned

Rules:
  1. ``parse(render(ast)) == ast`` for every AST ``parse`` returns (and every AST whose
     rendering is within the length limit): the canonical rendering is a stable key. The
     input limit (4096, enforced at the API) is far below the parser's own, so rendering a
     parsed selector — which may add spaces — always parses again.
  2. A key that a device does not have never equals anything: ``k!=v`` and ``k notin (..)``
     are true for it, matching Kubernetes label-selector semantics.
  3. Every syntax error names its position in the input.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TypeAlias

from fleetwarden.errors import SelectorError

__all__ = [
    "And",
    "Eq",
    "Exists",
    "In",
    "Not",
    "Or",
    "Selector",
    "matches",
    "parse",
    "render",
]


@dataclass(frozen=True, slots=True)
class Eq:
    key: str
    value: str


@dataclass(frozen=True, slots=True)
class In:
    key: str
    values: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Exists:
    key: str


@dataclass(frozen=True, slots=True)
class Not:
    operand: Selector


@dataclass(frozen=True, slots=True)
class And:
    operands: tuple[Selector, ...]


@dataclass(frozen=True, slots=True)
class Or:
    operands: tuple[Selector, ...]


Selector: TypeAlias = Eq | In | Exists | Not | And | Or

_KEY_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.\-/]*")
_WORD_RE = re.compile(r"[A-Za-z0-9_.\-/:+@]+")
_KEYWORDS = frozenset({"and", "or", "not", "in", "notin"})
#: The parser's own bound: a guard against abuse, well above the 4096 characters the APIs
#: accept, so that the canonical rendering of any accepted selector parses again (rule 1).
_MAX_LENGTH = 65536
_MAX_DEPTH = 64


@dataclass(frozen=True, slots=True)
class _Token:
    kind: str  # "word", "string", "op", "end"
    text: str
    pos: int


def _tokenize(text: str) -> list[_Token]:
    tokens: list[_Token] = []
    i = 0
    while i < len(text):
        ch = text[i]
        if ch.isspace():
            i += 1
        elif text.startswith(("==", "!="), i):
            tokens.append(_Token("op", text[i : i + 2], i))
            i += 2
        elif ch in "=(),!":
            tokens.append(_Token("op", ch, i))
            i += 1
        elif ch in "'\"":
            value, end = _quoted(text, i)
            tokens.append(_Token("string", value, i))
            i = end
        else:
            m = _WORD_RE.match(text, i)
            if m is None:
                raise SelectorError(f"unexpected character {ch!r}", i)
            tokens.append(_Token("word", m.group(), i))
            i = m.end()
    tokens.append(_Token("end", "", len(text)))
    return tokens


def _quoted(text: str, start: int) -> tuple[str, int]:
    """The value of the quoted string at ``start`` and the index just after it."""
    quote = text[start]
    out: list[str] = []
    i = start + 1
    while i < len(text):
        ch = text[i]
        if ch == "\\" and i + 1 < len(text):
            out.append(text[i + 1])
            i += 2
        elif ch == quote:
            return "".join(out), i + 1
        else:
            out.append(ch)
            i += 1
    raise SelectorError("unterminated quoted string", start)


class _Parser:
    def __init__(self, text: str) -> None:
        self.tokens = _tokenize(text)
        self.i = 0
        self.depth = 0

    @property
    def tok(self) -> _Token:
        return self.tokens[self.i]

    def _keyword(self, word: str) -> bool:
        return self.tok.kind == "word" and self.tok.text.lower() == word

    def _expect_op(self, op: str) -> None:
        if not (self.tok.kind == "op" and self.tok.text == op):
            raise SelectorError(f"expected {op!r}", self.tok.pos)
        self.i += 1

    def parse(self) -> Selector:
        if self.tok.kind == "end":
            raise SelectorError("empty selector", 0)
        node = self._or()
        if self.tok.kind != "end":
            raise SelectorError(f"unexpected {self.tok.text!r}", self.tok.pos)
        return node

    def _or(self) -> Selector:
        items = [self._and()]
        while self._keyword("or"):
            self.i += 1
            items.append(self._and())
        return items[0] if len(items) == 1 else Or(_flatten(Or, items))

    def _and(self) -> Selector:
        items = [self._unary()]
        while self._keyword("and") or (self.tok.kind == "op" and self.tok.text == ","):
            self.i += 1
            items.append(self._unary())
        return items[0] if len(items) == 1 else And(_flatten(And, items))

    def _unary(self) -> Selector:
        self.depth += 1
        if self.depth > _MAX_DEPTH:
            raise SelectorError("selector nests too deeply", self.tok.pos)
        try:
            if self._keyword("not"):
                self.i += 1
                return Not(self._unary())
            if self.tok.kind == "op" and self.tok.text == "!":
                self.i += 1
                return Not(Exists(self._key()))
            if self.tok.kind == "op" and self.tok.text == "(":
                self.i += 1
                node = self._or()
                self._expect_op(")")
                return node
            return self._term()
        finally:
            self.depth -= 1

    def _key(self) -> str:
        tok = self.tok
        if tok.kind != "word" or tok.text.lower() in _KEYWORDS or not _KEY_RE.fullmatch(tok.text):
            raise SelectorError("expected a label key", tok.pos)
        self.i += 1
        return tok.text

    def _value(self) -> str:
        tok = self.tok
        if tok.kind == "string" or (tok.kind == "word" and tok.text.lower() not in _KEYWORDS):
            self.i += 1
            return tok.text
        raise SelectorError("expected a value", tok.pos)

    def _values(self) -> tuple[str, ...]:
        self._expect_op("(")
        values = [self._value()]
        while self.tok.kind == "op" and self.tok.text == ",":
            self.i += 1
            values.append(self._value())
        self._expect_op(")")
        return tuple(sorted(set(values)))

    def _term(self) -> Selector:
        key = self._key()
        tok = self.tok
        if tok.kind == "op" and tok.text in {"=", "=="}:
            self.i += 1
            return Eq(key, self._value())
        if tok.kind == "op" and tok.text == "!=":
            self.i += 1
            return Not(Eq(key, self._value()))
        if self._keyword("in"):
            self.i += 1
            return In(key, self._values())
        if self._keyword("notin"):
            self.i += 1
            return Not(In(key, self._values()))
        if self._keyword("not") and self.tokens[self.i + 1].text.lower() == "in":
            self.i += 2
            return Not(In(key, self._values()))
        return Exists(key)


def _flatten(kind: type[And | Or], items: list[Selector]) -> tuple[Selector, ...]:
    out: list[Selector] = []
    for item in items:
        if isinstance(item, kind):
            out.extend(item.operands)
        else:
            out.append(item)
    return tuple(out)


def parse(text: str) -> Selector:
    """Parse a selector.

    Raises:
        SelectorError: the text is not a selector; the message names the position.
    """
    if len(text) > _MAX_LENGTH:
        raise SelectorError(f"selector longer than {_MAX_LENGTH} characters", _MAX_LENGTH)
    return _Parser(text).parse()


def _render_value(value: str) -> str:
    if _WORD_RE.fullmatch(value) and value.lower() not in _KEYWORDS:
        return value
    escaped = value.replace("\\", "\\\\").replace('"', '\\"')
    return f'"{escaped}"'


def render(node: Selector) -> str:
    """Canonical text of a selector; ``parse(render(x)) == x``."""
    match node:
        case Eq(key, value):
            return f"{key}={_render_value(value)}"
        case In(key, values):
            return f"{key} in ({','.join(_render_value(v) for v in values)})"
        case Exists(key):
            return key
        case Not(operand):
            return _render_not(operand)
        case And(operands):
            return " and ".join(
                f"({render(o)})" if isinstance(o, Or) else render(o) for o in operands
            )
        case Or(operands):
            return " or ".join(render(o) for o in operands)
    raise TypeError(f"not a selector node: {node!r}")  # pragma: no cover


def _render_not(operand: Selector) -> str:
    match operand:
        case Exists(key):
            return f"!{key}"
        case Eq(key, value):
            return f"{key}!={_render_value(value)}"
        case In(key, values):
            return f"{key} notin ({','.join(_render_value(v) for v in values)})"
        case Not():
            # No parentheses around a unary operand: they would double the nesting depth.
            return f"not {render(operand)}"
    return f"not ({render(operand)})"


def matches(node: Selector, attributes: Mapping[str, str]) -> bool:
    """Whether a device with these attributes (labels and inventory facts) is selected."""
    match node:
        case Eq(key, value):
            return attributes.get(key) == value
        case In(key, values):
            return attributes.get(key) in values
        case Exists(key):
            return key in attributes
        case Not(operand):
            return not matches(operand, attributes)
        case And(operands):
            return all(matches(o, attributes) for o in operands)
        case Or(operands):
            return any(matches(o, attributes) for o in operands)
    raise TypeError(f"not a selector node: {node!r}")  # pragma: no cover
