"""The ListDicomStores filter (dicomstore.core.filters)."""

from __future__ import annotations

import pytest

from dicomstore.core.errors import InvalidArgument
from dicomstore.core.filters import parse_filter

pytestmark = pytest.mark.google_behaviour("list-label-filter")

PROD = {"env": "prod", "team": "radiology", "tier": "10"}
DEV = {"env": "dev", "team": "cardiology", "tier": "9"}
BARE: dict[str, str] = {}


def matching(text: str, *stores: dict[str, str]) -> list[dict[str, str]]:
    parsed = parse_filter(text)
    return [store for store in stores if parsed.matches(store)]


@pytest.mark.parametrize("text", ["", "   ", "\t\n"])
def test_filter_matches_everything_when_empty(text: str) -> None:
    assert matching(text, PROD, DEV, BARE) == [PROD, DEV, BARE]
    assert parse_filter(text).text == ""


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("labels.env=prod", [PROD]),
        ("labels.env = prod", [PROD]),
        ("labels.env=pro", []),  # unquoted: exact equality
        ('labels.env="ro"', [PROD]),  # quoted: searched within the label
        ('labels.team="ology"', [PROD, DEV]),
        ("labels.env:*", [PROD, DEV]),
        ("labels.missing:*", []),
        ("labels.team:cardio", [DEV]),  # has: substring
        ('labels.team:"radio"', [PROD]),
        ('labels.env:"*"', []),  # a quoted * is text, not "present"
        ("labels.tier<10", [DEV]),  # numbers compare as numbers: 9 < 10
        ("labels.tier<=10", [PROD, DEV]),
        ("labels.tier>9", [PROD]),
        ("labels.tier>=9.0", [PROD, DEV]),
        ("labels.tier>5e0", [PROD, DEV]),
        ("labels.tier<-1", []),
        ("labels.env<e", [DEV]),  # not numbers: string order, "dev" < "e" < "prod"
        ("labels.env>=prod", [PROD]),
        ("labels.tier<a", [PROD, DEV]),  # "10" and "9" sort before "a" as text
    ],
)
def test_filter_selects_stores_by_operator(text: str, expected: list[dict[str, str]]) -> None:
    assert matching(text, PROD, DEV, BARE) == expected


@pytest.mark.parametrize(
    "text",
    ["labels.env=prod", 'labels.env="p"', "labels.env:p", "labels.env<z", "labels.env>a"],
)
def test_comparison_never_matches_when_label_missing(text: str) -> None:
    assert matching(text, BARE, {"other": "prod"}) == []


def test_not_matches_stores_without_the_label() -> None:
    assert matching("NOT labels.env=prod", PROD, DEV, BARE) == [DEV, BARE]


def test_minus_negates_like_not() -> None:
    assert matching("-labels.env=prod", PROD, DEV, BARE) == [DEV, BARE]
    assert parse_filter("-labels.env=prod").text == "NOT labels.env=prod"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("labels.env=prod AND labels.team=radiology", [PROD]),
        ("labels.env=prod labels.team=radiology", [PROD]),  # juxtaposition is AND
        ("labels.env=prod labels.team=cardiology", []),
        ("labels.env=prod OR labels.env=dev", [PROD, DEV]),
        ("NOT (labels.env=prod OR labels.env=dev)", [BARE]),
        ("(labels.env=prod OR labels.env=dev) AND labels.tier=9", [DEV]),
        ("NOT NOT labels.env=prod", [PROD]),
    ],
)
def test_boolean_operators_combine_comparisons(text: str, expected: list[dict[str, str]]) -> None:
    assert matching(text, PROD, DEV, BARE) == expected


@pytest.mark.parametrize(
    ("text", "grouped"),
    [
        # AIP-160: OR binds tighter than AND, and tighter than juxtaposition.
        (
            "labels.env=dev OR labels.env=prod AND labels.tier=9",
            "(labels.env=dev OR labels.env=prod) AND labels.tier=9",
        ),
        (
            "labels.tier=9 AND labels.env=prod OR labels.env=dev",
            "labels.tier=9 AND (labels.env=prod OR labels.env=dev)",
        ),
        (
            "labels.env=dev OR labels.env=prod labels.tier=10",
            "(labels.env=dev OR labels.env=prod) AND labels.tier=10",
        ),
        # NOT binds tightest.
        (
            "NOT labels.env=prod OR labels.env=prod",
            "(NOT labels.env=prod) OR labels.env=prod",
        ),
    ],
)
def test_or_binds_tighter_than_and(text: str, grouped: str) -> None:
    stores = [PROD, DEV, BARE, {"env": "dev", "tier": "10"}, {"env": "prod", "tier": "9"}]
    assert parse_filter(text).text == parse_filter(grouped).text
    assert matching(text, *stores) == matching(grouped, *stores)


def test_or_precedence_changes_the_result() -> None:
    # Under conventional precedence this would match PROD as well.
    assert matching("labels.env=dev OR labels.env=prod AND labels.tier=9", PROD, DEV) == [DEV]


@pytest.mark.parametrize(
    ("text", "labels"),
    [
        ('labels."my-key"=x', {"my-key": "x"}),
        ('labels."a b"="c d"', {"a b": "xc dx"}),
        ('labels.k="say \\"hi\\""', {"k": 'they say "hi"'}),
        ('labels.k="back\\\\slash"', {"k": "back\\slash"}),
        ('labels.k="x AND y OR NOT z"', {"k": "x AND y OR NOT z"}),  # operators are text in quotes
        ('labels.k="(a)"', {"k": "(a)"}),
        ("labels.ключ=значение", {"ключ": "значение"}),
        ("labels.k=a-b_c", {"k": "a-b_c"}),
        ("labels.k=and", {"k": "and"}),  # only upper-case keywords are operators
    ],
)
def test_quoting_and_escapes_reach_the_label(text: str, labels: dict[str, str]) -> None:
    assert parse_filter(text).matches(labels)


@pytest.mark.parametrize(
    ("text", "normalised"),
    [
        ("labels.a = x", "labels.a=x"),
        ("  labels.a=x   labels.b:*  ", "labels.a=x AND labels.b:*"),
        ("((labels.a=x))", "labels.a=x"),
        ("labels.a=x AND (labels.b=y AND labels.c=z)", "labels.a=x AND labels.b=y AND labels.c=z"),
        ('labels."plain"="q"', 'labels.plain="q"'),
        ('labels."a b"="say \\"hi\\""', 'labels."a b"="say \\"hi\\""'),
        ("- labels.a=x", "NOT labels.a=x"),
    ],
)
def test_text_is_normalised_when_spelling_differs(text: str, normalised: str) -> None:
    parsed = parse_filter(text)
    assert parsed.text == normalised
    assert parse_filter(parsed.text).text == normalised


def test_text_differs_when_quoting_changes_meaning() -> None:
    assert parse_filter("labels.a=x").text != parse_filter('labels.a="x"').text


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("(labels.a=1))", "filter: unexpected token ')' at position 12"),
        (")", "filter: unexpected token ')' at position 0"),
        ('labels.a="abc', "filter: unterminated string at position 9"),
        ('labels."abc=x', "filter: unterminated string at position 7"),
        ('labels.a="abc\\"', "filter: unterminated string at position 9"),
        ("labels.a=", "filter: expected a value after '=' at position 9"),
        ("labels.a<= )", "filter: expected a value after '<=' at position 11"),
        ("labels.a= AND labels.b=c", "filter: expected a value after '=' at position 10"),
        (
            "labels.a",
            "filter: expected an operator (=, :, <, <=, >, >=) after 'labels.a' at position 8",
        ),
        ("labels=x", "filter: expected '.' and a label key after 'labels' at position 6"),
        ("labels.=x", "filter: expected a label key after 'labels.' at position 7"),
        (
            "labels.a.b=c",
            "filter: unexpected '.' after a label key (labels have no fields) at position 8",
        ),
        ("(labels.a=1", "filter: expected ')' at position 11 to close '(' at position 0"),
        ("labels.a=x AND", "filter: unexpected end of filter at position 14"),
        ("NOT", "filter: unexpected end of filter at position 3"),
        ("labels.a=x OR OR labels.b=y", "filter: unexpected token 'OR' at position 14"),
        ("AND labels.a=x", "filter: unexpected token 'AND' at position 0"),
        ("()", "filter: unexpected token ')' at position 1"),
        ("labels.a=x =y", "filter: unexpected token '=' at position 11"),
        (
            'labels.a="\\n"',
            "filter: unknown escape '\\n' at position 10; only \\\" and \\\\ are supported",
        ),
        (
            "(" * 65 + "labels.a=x" + ")" * 65,
            "filter: nesting deeper than 64 levels at position 65",
        ),
    ],
)
def test_syntax_error_says_where(text: str, message: str) -> None:
    with pytest.raises(InvalidArgument) as caught:
        parse_filter(text)
    assert caught.value.message == message
    assert caught.value.field == "filter"


@pytest.mark.parametrize(
    ("text", "position"),
    [
        ("labels.env!=prod", 10),
        ("labels.env != prod", 11),
        ('labels.env!="prod"', 10),
    ],
)
def test_inequality_rejected_with_hint(text: str, position: int) -> None:
    with pytest.raises(InvalidArgument) as caught:
        parse_filter(text)
    assert caught.value.message == (
        f"filter: no inequality operator '!=' at position {position}; "
        "use NOT, e.g. NOT labels.key=value"
    )
    assert caught.value.field == "filter"


@pytest.mark.parametrize(
    ("text", "got"),
    [
        ("name=x", "got 'name' at position 0"),
        ("labels.a=x AND create_time>2020", "got 'create_time' at position 15"),
        ("Labels.a=x", "got 'Labels' at position 0"),
        ("prod", "got 'prod' at position 0"),
        ('"prod"', "got a quoted string at position 0"),
    ],
)
def test_field_other_than_labels_rejected(text: str, got: str) -> None:
    with pytest.raises(InvalidArgument) as caught:
        parse_filter(text)
    assert caught.value.message == (
        f"filter: only filtering on labels is supported, e.g. labels.key=value; {got}"
    )
    assert caught.value.field == "filter"
