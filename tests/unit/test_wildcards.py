"""Import-source wildcards (dicomstore.core.uris): the listing prefix and the name matcher.

Rules of GcsSource.uri (docs/cloud-storage.md): `*` any run of characters but `/`, `?` exactly
one character but `/`, `**` any run including `/`; everything else is literal.
"""

from __future__ import annotations

import pytest

from dicomstore.core.errors import InvalidArgument
from dicomstore.core.uris import object_pattern, parse_import_source

pytestmark = pytest.mark.google_behaviour("import-wildcards")

MATRIX = [
    # (object pattern, name, matches)
    ("DIR/Example*.dcm", "DIR/Example.dcm", True),
    ("DIR/Example*.dcm", "DIR/Example22.dcm", True),
    ("DIR/Example*.dcm", "DIR/Example-x.y.dcm", True),
    ("DIR/Example*.dcm", "DIR/sub/Example1.dcm", False),
    ("DIR/Example*.dcm", "DIR/Example/1.dcm", False),
    ("DIR/Example*.dcm", "DIR/Example1.dcmx", False),
    ("DIR/Example*.dcm", "DIR/example1.dcm", False),
    ("DIR/Example*.dcm", "OTHER/Example1.dcm", False),
    ("DIR/Example?.dcm", "DIR/Example1.dcm", True),
    ("DIR/Example?.dcm", "DIR/Exampleü.dcm", True),  # one character, not one byte
    ("DIR/Example?.dcm", "DIR/Example.dcm", False),
    ("DIR/Example?.dcm", "DIR/Example01.dcm", False),
    ("DIR/Example?.dcm", "DIR/Example/.dcm", False),
    ("DIR/**.dcm", "DIR/a.dcm", True),
    ("DIR/**.dcm", "DIR/.dcm", True),
    ("DIR/**.dcm", "DIR/sub/a.dcm", True),
    ("DIR/**.dcm", "DIR/sub/deeper/a.dcm", True),
    ("DIR/**.dcm", "DIR/a.dcm.bak", False),
    ("DIR/**.dcm", "DIR/adcm", False),
    ("DIR/**.dcm", "DIRECTORY/a.dcm", False),
    ("DIR/**.dcm", "a.dcm", False),
    ("DIR/**", "DIR/a", True),
    ("DIR/**", "DIR/sub/b/c", True),
    ("DIR/**", "DIR/", False),  # a folder placeholder, not a file
    ("DIR/**", "DIR/sub/", False),
    ("DIR/**", "DIR", False),
    ("DIR/**", "DIRX/a", False),
    ("**", "a", True),
    ("**", "a/b/c.dcm", True),
    ("*", "a", True),
    ("*", "a/b", False),
    ("*/*.dcm", "x/y.dcm", True),
    ("*/*.dcm", "x/y/z.dcm", False),
    ("d?r/file*.dcm", "dir/file.dcm", True),
    ("d?r/file*.dcm", "d/r/file.dcm", False),
    ("dir*/sub/*", "dir/sub/a", True),
    ("dir*/sub/*", "dir-2/sub/a", True),
    ("dir*/sub/*", "dir/x/sub/a", False),
    ("a*b*c", "abc", True),
    ("a*b*c", "axxbyyc", True),
    ("a*b*c", "axxbyy", False),
    ("??", "ab", True),
    ("??", "a", False),
    # Regular-expression characters are literal.
    ("a.b*", "a.bc", True),
    ("a.b*", "axbc", False),
    ("(x)+[y]{2}$^|*", "(x)+[y]{2}$^|z", True),
    ("(x)+[y]{2}$^|*", "xxy", False),
    ("[ab]*", "a1", False),
    ("[ab]*", "[ab]1", True),
    ("a+b?", "a+bc", True),
    ("a+b?", "aab", False),
    ("line*", "line\nbreak", True),
    ("sp ace*", "sp ace.dcm", True),
    ("ü*", "über", True),
    # No wildcard: that object only.
    ("DIR/Example.dcm", "DIR/Example.dcm", True),
    ("DIR/Example.dcm", "DIR/Example.dcm2", False),
    ("DIR/Example.dcm", "DIR/Example.dcm/x", False),
    ("DIR/Example.dcm", "dir/example.dcm", False),
]


@pytest.mark.parametrize(("pattern", "name", "expected"), MATRIX)
def test_pattern_matches_names_by_wildcard_rules(pattern: str, name: str, expected: bool) -> None:
    source = parse_import_source(f"gs://bucket/{pattern}", "gcs_source.uri")
    assert object_pattern(source).matches(name) is expected


@pytest.mark.parametrize(
    ("pattern", "prefix", "exact"),
    [
        ("DIR/Example*.dcm", "DIR/Example", False),
        ("DIR/Example?.dcm", "DIR/Example", False),
        ("DIR/**.dcm", "DIR/", False),
        ("DIR/**", "DIR/", False),
        ("**", "", False),
        ("*.dcm", "", False),
        ("d?r/*", "d", False),
        ("a.b[c]/x*", "a.b[c]/x", False),
        ("DIR/Example.dcm", "DIR/Example.dcm", True),
    ],
)
def test_pattern_prefix_is_the_name_up_to_the_first_wildcard(
    pattern: str, prefix: str, exact: bool
) -> None:
    source = parse_import_source(f"gs://bucket/{pattern}", "gcs_source.uri")
    found = object_pattern(source)
    assert (found.prefix, found.exact) == (prefix, exact)


@pytest.mark.parametrize("pattern", ["DIR/", "DIR/sub/", "a*/"])
def test_import_source_invalid_argument_when_it_names_a_folder(pattern: str) -> None:
    with pytest.raises(InvalidArgument) as caught:
        parse_import_source(f"gs://bucket/{pattern}", "gcs_source.uri")
    assert caught.value.field == "gcs_source.uri"
    assert f"gs://bucket/{pattern}**" in caught.value.message
