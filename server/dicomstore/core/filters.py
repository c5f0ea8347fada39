"""The `filter` of ListDicomStores, restricted to labels.

Implements ListDicomStoresRequest.filter
(https://cloud.google.com/healthcare-api/docs/reference/rest/v1/projects.locations.datasets.dicomStores/list)
with the grammar of AIP-160 (https://google.aip.dev/160). As in AIP-160, OR binds tighter than
AND, and juxtaposition means AND: `labels.a=1 OR labels.b=2 labels.c=3` is
`(labels.a=1 OR labels.b=2) AND labels.c=3`.

    filter     = [expression]
    expression = sequence {"AND" sequence}
    sequence   = factor {factor}
    factor     = term {"OR" term}
    term       = ("NOT" | "-") term | "(" expression ")" | comparison
    comparison = "labels" "." key operator value
    operator   = "=" | ":" | "<" | "<=" | ">" | ">="
    key, value = word | '"' text '"'          (text escapes \\" and \\\\)

Meaning, for the label named key (a store without it never satisfies a comparison):
`=word` equals; `="text"` and `:value` contain the text; `:*` is present; `<`, `<=`, `>`, `>=`
compare as numbers when both sides are numbers, else as strings (code point order). There is no
`!=`; negate with NOT. AND, OR and NOT are upper case, and are plain text inside quotes.

The parser is hand-written recursive descent: for five rules a parser library would be no
shorter, and error positions come for free.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import TypeAlias, TypeVar

from dicomstore.core.errors import InvalidArgument, invalid

_FIELD = "filter"
# Characters that end a bare word; "." also ends the field name and an unquoted label key.
_DELIMITERS = frozenset('()"=<>!:')
_NAME_DELIMITERS = _DELIMITERS | {"."}
_KEYWORDS = frozenset({"AND", "OR", "NOT"})
_OPERATORS = ("<=", ">=", "=", ":", "<", ">")  # two-character operators first
# Deep nesting would otherwise end in RecursionError, an INTERNAL error instead of a bad filter.
_MAX_DEPTH = 64
_Comparable = TypeVar("_Comparable", Decimal, str)
_NUMBER = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")


class Operator(enum.Enum):
    """A comparison operator of the filter grammar."""

    EQUALS = "="
    HAS = ":"
    LESS = "<"
    LESS_EQUAL = "<="
    GREATER = ">"
    GREATER_EQUAL = ">="


def _ordered(op: Operator, left: _Comparable, right: _Comparable) -> bool:
    match op:
        case Operator.LESS:
            return left < right
        case Operator.LESS_EQUAL:
            return left <= right
        case Operator.GREATER:
            return left > right
        case _:
            return left >= right


def _number(text: str) -> Decimal | None:
    return Decimal(text) if _NUMBER.fullmatch(text) else None


def _quoted(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _is_word(text: str, delimiters: frozenset[str]) -> bool:
    return (
        bool(text)
        and text not in _KEYWORDS
        and not any(c.isspace() or c in delimiters for c in text)
        and not text.startswith("-")
    )


def _field(key: str) -> str:
    return "labels." + (key if _is_word(key, _NAME_DELIMITERS) else _quoted(key))


@dataclass(frozen=True)
class Comparison:
    """`labels.KEY <operator> VALUE`; a quoted value is searched within the label (=, :)."""

    key: str
    operator: Operator
    value: str
    quoted: bool

    def matches(self, labels: Mapping[str, str]) -> bool:
        actual = labels.get(self.key)
        if actual is None:
            return False
        if self.operator is Operator.EQUALS:
            return self.value in actual if self.quoted else actual == self.value
        if self.operator is Operator.HAS:
            return self.value in actual
        left, right = _number(actual), _number(self.value)
        if left is not None and right is not None:
            return _ordered(self.operator, left, right)
        return _ordered(self.operator, actual, self.value)

    def render(self) -> str:
        value = _quoted(self.value) if self.quoted else self.value
        return f"{_field(self.key)}{self.operator.value}{value}"


@dataclass(frozen=True)
class Present:
    """`labels.KEY:*`: the label is set, whatever its value."""

    key: str

    def matches(self, labels: Mapping[str, str]) -> bool:
        return self.key in labels

    def render(self) -> str:
        return f"{_field(self.key)}:*"


@dataclass(frozen=True)
class And:
    """All terms match."""

    terms: tuple[Node, ...]

    def matches(self, labels: Mapping[str, str]) -> bool:
        return all(term.matches(labels) for term in self.terms)

    def render(self) -> str:
        return " AND ".join(_grouped(term) for term in self.terms)


@dataclass(frozen=True)
class Or:
    """Any term matches."""

    terms: tuple[Node, ...]

    def matches(self, labels: Mapping[str, str]) -> bool:
        return any(term.matches(labels) for term in self.terms)

    def render(self) -> str:
        return " OR ".join(_grouped(term) for term in self.terms)


@dataclass(frozen=True)
class Not:
    """The term does not match (true for a store without the label)."""

    term: Node

    def matches(self, labels: Mapping[str, str]) -> bool:
        return not self.term.matches(labels)

    def render(self) -> str:
        return f"NOT {_grouped(self.term)}"


Node: TypeAlias = Comparison | Present | And | Or | Not


def _grouped(node: Node) -> str:
    # Parentheses around every compound term: the text reads the same under either precedence.
    return f"({node.render()})" if isinstance(node, And | Or) else node.render()


def _all(terms: Iterable[Node]) -> Node:
    flat = tuple(t for term in terms for t in (term.terms if isinstance(term, And) else (term,)))
    return flat[0] if len(flat) == 1 else And(flat)


def _any(terms: Iterable[Node]) -> Node:
    flat = tuple(t for term in terms for t in (term.terms if isinstance(term, Or) else (term,)))
    return flat[0] if len(flat) == 1 else Or(flat)


@dataclass(frozen=True)
class Filter:
    """A parsed filter. `text` is its normalised form: equal filters have equal text."""

    text: str
    root: Node | None

    def matches(self, labels: Mapping[str, str]) -> bool:
        """Whether a store with these labels passes the filter."""
        return self.root is None or self.root.matches(labels)


def parse_filter(text: str) -> Filter:
    """Parse ListDicomStoresRequest.filter; empty text matches every store.

    Raises InvalidArgument (field "filter") naming the 0-based position of the first error.
    """
    if not text.strip():
        return Filter("", None)
    root = _Parser(text).parse()
    return Filter(root.render(), root)


class _Parser:
    def __init__(self, text: str) -> None:
        self.text = text
        self.pos = 0
        self.depth = 0

    def parse(self) -> Node:
        node = self.expression()
        self.skip_space()
        if not self.at_end():
            raise self.unexpected()
        return node

    # Grammar rules, one method each.

    def expression(self) -> Node:
        terms = [self.sequence()]
        while self.keyword("AND"):
            terms.append(self.sequence())
        return _all(terms)

    def sequence(self) -> Node:
        terms = [self.factor()]
        while True:
            self.skip_space()
            if self.at_end() or self.text[self.pos] == ")" or self.peek_word() == "AND":
                return _all(terms)
            terms.append(self.factor())

    def factor(self) -> Node:
        terms = [self.term()]
        while self.keyword("OR"):
            terms.append(self.term())
        return _any(terms)

    def term(self) -> Node:
        self.skip_space()
        if self.at_end() or self.peek_word() in {"AND", "OR"}:
            raise self.unexpected()
        start = self.pos
        if self.text[start] == "-" or self.peek_word() == "NOT":
            self.pos += 1 if self.text[start] == "-" else 3
            return Not(self.nested(self.term))
        if self.text[start] == "(":
            self.pos += 1
            node = self.nested(self.expression)
            self.skip_space()
            if self.at_end() or self.text[self.pos] != ")":
                raise invalid(
                    _FIELD, f"expected ')' at position {self.pos} to close '(' at position {start}"
                )
            self.pos += 1
            return node
        return self.comparison()

    def comparison(self) -> Node:
        start = self.pos
        name = self.word(_NAME_DELIMITERS)
        if name != "labels":
            if not name and self.text[start] != '"':
                raise self.unexpected()
            got = "a quoted string" if not name else f"'{_shortened(name)}'"
            raise invalid(
                _FIELD,
                f"only filtering on labels is supported, e.g. labels.key=value; "
                f"got {got} at position {start}",
            )
        if self.at_end() or self.text[self.pos] != ".":
            raise self.error("expected '.' and a label key after 'labels'")
        self.pos += 1
        key = self.label_key()
        self.skip_space()
        if self.text.startswith("!=", self.pos):
            raise invalid(
                _FIELD,
                f"no inequality operator '!=' at position {self.pos}; "
                "use NOT, e.g. NOT labels.key=value",
            )
        symbol = next((s for s in _OPERATORS if self.text.startswith(s, self.pos)), None)
        if symbol is None:
            raise self.error(f"expected an operator (=, :, <, <=, >, >=) after '{_field(key)}'")
        self.pos += len(symbol)
        value, quoted = self.value(symbol)
        if symbol == ":" and value == "*" and not quoted:
            return Present(key)
        return Comparison(key, Operator(symbol), value, quoted)

    def label_key(self) -> str:
        if not self.at_end() and self.text[self.pos] == '"':
            key = self.string()
        else:
            key = self.word(_NAME_DELIMITERS)
            if not key:
                raise self.error("expected a label key after 'labels.'")
        if not self.at_end() and self.text[self.pos] == ".":
            raise self.error("unexpected '.' after a label key (labels have no fields)")
        return key

    def value(self, symbol: str) -> tuple[str, bool]:
        """The value after an operator, and whether it was quoted."""
        self.skip_space()
        if not self.at_end() and self.text[self.pos] == '"':
            return self.string(), True
        value = self.peek_word()
        if not value or value in _KEYWORDS:
            raise self.error(f"expected a value after '{symbol}'")
        self.pos += len(value)
        return value, False

    # Lexing, on demand: what a character means depends on where the parser is.

    def string(self) -> str:
        start = self.pos
        self.pos += 1
        chars: list[str] = []
        while self.pos < len(self.text):
            char = self.text[self.pos]
            if char == '"':
                self.pos += 1
                return "".join(chars)
            if char == "\\" and self.pos + 1 < len(self.text):
                escaped = self.text[self.pos + 1]
                if escaped not in '"\\':
                    raise invalid(
                        _FIELD,
                        f"unknown escape '\\{escaped}' at position {self.pos}; "
                        'only \\" and \\\\ are supported',
                    )
                chars.append(escaped)
                self.pos += 2
                continue
            chars.append(char)
            self.pos += 1
        raise invalid(_FIELD, f"unterminated string at position {start}")

    def word(self, delimiters: frozenset[str]) -> str:
        end = self.pos
        while end < len(self.text) and not (
            self.text[end].isspace() or self.text[end] in delimiters
        ):
            end += 1
        word = self.text[self.pos : end]
        self.pos = end
        return word

    def peek_word(self) -> str:
        start = self.pos
        word = self.word(_DELIMITERS)
        self.pos = start
        return word

    def keyword(self, word: str) -> bool:
        self.skip_space()
        if self.peek_word() != word:
            return False
        self.pos += len(word)
        return True

    def skip_space(self) -> None:
        while self.pos < len(self.text) and self.text[self.pos].isspace():
            self.pos += 1

    def at_end(self) -> bool:
        return self.pos >= len(self.text)

    def nested(self, rule: Callable[[], Node]) -> Node:
        self.depth += 1
        if self.depth > _MAX_DEPTH:
            raise self.error(f"nesting deeper than {_MAX_DEPTH} levels")
        node = rule()
        self.depth -= 1
        return node

    def error(self, what: str) -> InvalidArgument:
        return invalid(_FIELD, f"{what} at position {self.pos}")

    def unexpected(self) -> InvalidArgument:
        if self.at_end():
            return self.error("unexpected end of filter")
        token = self.peek_word() or self.text[self.pos]
        if token in {"<", ">", "!"} and self.text.startswith("=", self.pos + 1):
            token += "="
        return self.error(f"unexpected token '{_shortened(token)}'")


def _shortened(text: str, limit: int = 40) -> str:
    return text if len(text) <= limit else text[:limit] + "…"
