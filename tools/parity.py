"""Generate ``docs/parity.md``, the parity matrix with Google's API, and check that it holds.

Usage (from any directory; the checkout is found from this file's location)::

    python tools/parity.py            # (re)write docs/parity.md; exit 1 if a rule below is broken
    python tools/parity.py --check    # write nothing; exit 1 if docs/parity.md is stale or a
                                      # rule below is broken, saying what to do

Inputs, all read without importing the server or the tests:

- ``docs/google-behaviour.md``: each behaviour is an ``<a id="slug"></a>`` line, a heading, prose,
  and the fields ``- google:``, ``- standard:``, ``- parity:`` and ``- sources:`` (the page's
  "Reading and extending this page" section describes them);
- the tests' ``@pytest.mark.google_behaviour("slug", ...)`` markers, found by parsing every
  ``tests/**/test_*.py`` with ``ast`` (on a test function, a test class, or ``pytestmark``);
- the REST methods of the discovery document ``healthcare.v1.json`` that google-api-python-client
  ships (``projects.locations.datasets``, its ``dicomStores`` and all beneath, its ``operations``),
  and their state from the ``WORKING`` and ``UNIMPLEMENTED`` tables of
  ``tests/rest/test_discovery_surface.py``.

Rules: every behaviour whose parity is ``same``, ``chosen`` or ``differs`` is pinned by at least
one test (``not reproduced: <reason>`` and ``untestable: <reason>`` need none, but need the
reason); every marker names a documented behaviour; every ``google-behaviour.md#<anchor>`` link in
the checkout names one; and, with ``--check``, ``docs/parity.md`` is what this tool writes.
"""

from __future__ import annotations

import argparse
import ast
import importlib.util
import json
import re
import sys
import textwrap
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
BEHAVIOURS = Path("docs", "google-behaviour.md")
MATRIX = Path("docs", "parity.md")
TESTS = Path("tests")
SURFACE_TEST = Path("tests", "rest", "test_discovery_surface.py")
MARKER = "google_behaviour"
# Where links to the behaviours page are looked for, and in which files.
LINK_ROOTS = ("server", "protos", "tests", "tools", "docs", "clients", "README.md")
LINK_SUFFIXES = frozenset({".py", ".pyi", ".proto", ".md"})
LINK = re.compile(r"google-behaviour\.md(?:#([A-Za-z0-9][A-Za-z0-9_-]*))?")
# A bare `#<anchor>` after a link, up to LINK_REACH characters on in the same paragraph.
_MORE_LINKS = re.compile(r"(?:^|(?<=[\s(,;]))#([a-z][a-z0-9]*(?:-[a-z0-9]+)*)\b")
LINK_REACH = 300
METHOD_PREFIX = "healthcare.projects.locations."

PINNED = ("same", "chosen", "differs")
EXCUSED = ("not reproduced", "untestable")
FIELDS = ("google", "standard", "parity", "sources")

_ANCHOR = re.compile(r'^<a id="([^"]*)"></a>\s*$')
_SLUG = re.compile(r"^[a-z0-9]+(?:-[a-z0-9]+)*$")
_HEADING = re.compile(r"^(#{1,6})\s+(.+?)\s*$")
_FIELD = re.compile(r"^- (\w+):\s*(.*)$")


@dataclass(frozen=True)
class Behaviour:
    """One documented behaviour of Google's API."""

    slug: str
    title: str
    section: str
    google: str
    standard: str
    parity: str
    """One of PINNED or EXCUSED."""
    reason: str
    """Why a behaviour is not reproduced or cannot be tested; empty otherwise."""
    line: int


@dataclass(frozen=True)
class Pin:
    """A test that carries the marker for one behaviour."""

    test: str
    """`tests/rest/test_qido.py::test_x` (with `::Class` for a method)."""
    slug: str
    where: str
    """`path:line` of the marker, for messages."""


@dataclass(frozen=True)
class Method:
    """A REST method of the discovery document and its state here."""

    short_id: str
    http_method: str
    path: str
    state: str


# --- docs/google-behaviour.md -------------------------------------------------------------------


def read_behaviours(text: str, source: str) -> tuple[list[Behaviour], list[str]]:
    """The behaviours of the page, in page order, and what is wrong with their format."""
    lines = text.splitlines()
    behaviours: list[Behaviour] = []
    problems: list[str] = []
    for section, start, end in _blocks(lines):
        behaviour, errors = _behaviour(section, lines, start, end)
        problems.extend(f"{source}:{start + 1}: {error}" for error in errors)
        if behaviour is not None:
            behaviours.append(behaviour)
    seen: dict[str, int] = {}
    for behaviour in behaviours:
        if behaviour.slug in seen:
            problems.append(
                f"{source}:{behaviour.line}: anchor {behaviour.slug!r} is also on line "
                f"{seen[behaviour.slug]}"
            )
        seen.setdefault(behaviour.slug, behaviour.line)
    return behaviours, problems


def _blocks(lines: Sequence[str]) -> Iterator[tuple[str, int, int]]:
    """(section, first line, end) of each behaviour: from its anchor to the next anchor or
    section heading. Fenced code is skipped."""
    section = ""
    start: int | None = None
    in_fence = False
    for index, line in enumerate(lines):
        if line.startswith("```"):
            in_fence = not in_fence
        heading = _HEADING.match(line)
        boundary = _ANCHOR.match(line) or (heading and len(heading.group(1)) <= 2)
        if in_fence or not boundary:
            continue
        if start is not None:
            yield section, start, index
            start = None
        if heading:
            section = heading.group(2)
        else:
            start = index
    if start is not None:
        yield section, start, len(lines)


def _behaviour(
    section: str, lines: Sequence[str], start: int, end: int
) -> tuple[Behaviour | None, list[str]]:
    anchor = _ANCHOR.match(lines[start])
    slug = anchor.group(1) if anchor else ""
    errors: list[str] = []
    if not _SLUG.match(slug):
        errors.append(f"anchor {slug!r} is not a slug (lower-case words joined by '-')")
    body = list(lines[start + 1 : end])
    first = next((line for line in body if line.strip()), "")
    heading = _HEADING.match(first)
    if not heading:
        errors.append(f"anchor {slug!r} is not followed by a heading")
    fields, field_errors = _fields(body)
    errors.extend(f"{slug}: {error}" for error in field_errors)
    parity, reason = _parity(fields.get("parity", ""))
    if fields.get("parity") and parity is None:
        errors.append(
            f"{slug}: parity must be one of {', '.join(PINNED)}, or "
            f"'{EXCUSED[0]}: <reason>' or '{EXCUSED[1]}: <reason>'"
        )
    if errors or parity is None or heading is None:
        return None, errors
    behaviour = Behaviour(
        slug=slug,
        title=heading.group(2),
        section=section,
        google=fields["google"],
        standard=fields["standard"],
        parity=parity,
        reason=reason,
        line=start + 1,
    )
    return behaviour, []


def _fields(body: Sequence[str]) -> tuple[dict[str, str], list[str]]:
    """The `- name: value` fields of a behaviour; a value goes on over lines indented by two."""
    fields: dict[str, str] = {}
    errors: list[str] = []
    current = ""
    for line in body:
        field = _FIELD.match(line)
        if field and field.group(1) in FIELDS:
            current = field.group(1)
            if current in fields:
                errors.append(f"field {current!r} is given twice")
            fields[current] = field.group(2).strip()
        elif current and line.startswith("  ") and line.strip():
            fields[current] = f"{fields[current]} {line.strip()}"
        else:
            current = ""
    missing = [name for name in FIELDS if not fields.get(name)]
    if missing:
        errors.append(f"missing or empty field(s) {', '.join(missing)}")
    return fields, errors


def _parity(value: str) -> tuple[str | None, str]:
    if value in PINNED:
        return value, ""
    head, colon, reason = value.partition(":")
    if head.strip() in EXCUSED and colon and reason.strip():
        return head.strip(), reason.strip()
    return None, ""


# --- the tests' markers ---------------------------------------------------------------------------


def find_pins(root: Path) -> tuple[list[Pin], list[str]]:
    """Every (test, behaviour) pair the markers make, and what is wrong with the markers."""
    pins: list[Pin] = []
    problems: list[str] = []
    for path in sorted((root / TESTS).rglob("test_*.py")):
        relative = path.relative_to(root).as_posix()
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=relative)
        scan = _MarkerScan(relative)
        pins.extend(scan.pins(tree))
        problems.extend(scan.problems)
    return pins, problems


class _MarkerScan:
    """The markers of one test module: where they are, what they name, what is wrong."""

    def __init__(self, relative: str) -> None:
        self.relative = relative
        self.problems: list[str] = []
        self._placed: set[int] = set()

    def pins(self, tree: ast.Module) -> list[Pin]:
        module: list[tuple[str, str]] = []
        tests: list[tuple[str, list[tuple[str, str]]]] = []
        for statement in tree.body:
            if isinstance(statement, ast.Assign | ast.AnnAssign):
                if _assigns(statement, "pytestmark") and statement.value is not None:
                    value = statement.value
                    items = value.elts if isinstance(value, ast.List | ast.Tuple) else [value]
                    module.extend(self._marks(items))
            elif isinstance(statement, ast.FunctionDef | ast.AsyncFunctionDef):
                tests.extend(self._function(statement, f"{self.relative}::", []))
            elif isinstance(statement, ast.ClassDef):
                tests.extend(self._class(statement))
        for node in ast.walk(tree):
            if _is_marker(node) and id(node) not in self._placed:
                self.problems.append(
                    f"{self.relative}:{getattr(node, 'lineno', 0)}: {MARKER} must decorate a "
                    "test function or class, or be in pytestmark"
                )
        return [Pin(test, slug, where) for test, own in tests for slug, where in module + own]

    def _class(self, node: ast.ClassDef) -> list[tuple[str, list[tuple[str, str]]]]:
        own = self._marks(node.decorator_list)
        is_test = node.name.startswith("Test")
        if own and not is_test:
            self.problems.append(f"{own[0][1]}: {MARKER} on {node.name}, which is no test class")
        tests: list[tuple[str, list[tuple[str, str]]]] = []
        for method in node.body:
            if isinstance(method, ast.FunctionDef | ast.AsyncFunctionDef):
                found = self._function(method, f"{self.relative}::{node.name}::", own)
                tests.extend(found if is_test else [])
        return tests

    def _function(
        self, node: ast.FunctionDef | ast.AsyncFunctionDef, prefix: str, inherited: list[Any]
    ) -> list[tuple[str, list[tuple[str, str]]]]:
        own = self._marks(node.decorator_list)
        if node.name.startswith("test"):
            return [(f"{prefix}{node.name}", inherited + own)]
        if own:
            self.problems.append(f"{own[0][1]}: {MARKER} on {node.name}, which is no test")
        return []

    def _marks(self, nodes: Sequence[ast.expr]) -> list[tuple[str, str]]:
        """(slug, `path:line`) of the markers among `nodes`."""
        found: list[tuple[str, str]] = []
        for node in nodes:
            if not isinstance(node, ast.Call) or not _is_marker(node):
                continue
            self._placed.add(id(node))
            where = f"{self.relative}:{node.lineno}"
            slugs = [
                arg.value
                for arg in node.args
                if isinstance(arg, ast.Constant) and isinstance(arg.value, str)
            ]
            if not node.args or len(slugs) != len(node.args) or node.keywords:
                self.problems.append(
                    f"{where}: {MARKER} takes one or more behaviour anchors as plain strings"
                )
            found.extend((slug, where) for slug in slugs)
        return found


def _is_marker(node: ast.AST) -> bool:
    if not isinstance(node, ast.Call) or not isinstance(node.func, ast.Attribute):
        return False
    mark = node.func.value
    return (
        node.func.attr == MARKER
        and isinstance(mark, ast.Attribute)
        and mark.attr == "mark"
        and isinstance(mark.value, ast.Name)
        and mark.value.id == "pytest"
    )


def _assigns(statement: ast.Assign | ast.AnnAssign, name: str) -> bool:
    targets = statement.targets if isinstance(statement, ast.Assign) else [statement.target]
    return any(isinstance(target, ast.Name) and target.id == name for target in targets)


# --- the discovery document and the surface test's tables ----------------------------------------


def discovery_document() -> Path:
    """`healthcare.v1.json` of the installed google-api-python-client (not imported)."""
    spec = importlib.util.find_spec("googleapiclient")
    if spec is None or spec.origin is None:
        raise SystemExit("google-api-python-client is not installed: pip install -e '.[test]'")
    return Path(spec.origin).parent / "discovery_cache" / "documents" / "healthcare.v1.json"


def read_methods(document: Path, surface_test: Path) -> tuple[list[Method], list[str]]:
    """The DICOM surface of the document, in document order, with each method's state."""
    tables, problems = _surface_tables(surface_test)
    working = tables.get("WORKING", set())
    unimplemented = tables.get("UNIMPLEMENTED", set())
    data = json.loads(document.read_text(encoding="utf-8"))
    datasets = data["resources"]["projects"]["resources"]["locations"]["resources"]["datasets"]
    raw = list(_methods({"methods": datasets.get("methods", {})}))
    for name in ("dicomStores", "operations"):
        raw.extend(_methods(datasets["resources"][name]))
    methods: list[Method] = []
    for method in raw:
        short_id = str(method["id"]).removeprefix(METHOD_PREFIX)
        if short_id in working:
            state = "works"
        elif short_id in unimplemented:
            state = "501"
        else:
            state = "501 (in neither table of the surface test)"
        methods.append(Method(short_id, method["httpMethod"], method["path"], state))
    ids = {method.short_id for method in methods}
    for table, names in sorted(tables.items()):
        for name in sorted(names - ids):
            problems.append(f"{surface_test.name}: {table} names {name}, not in the document")
    return methods, problems


def _methods(resource: Mapping[str, Any]) -> Iterator[Mapping[str, Any]]:
    yield from resource.get("methods", {}).values()
    for nested in resource.get("resources", {}).values():
        yield from _methods(nested)


def _surface_tables(path: Path) -> tuple[dict[str, set[str]], list[str]]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    tables: dict[str, set[str]] = {}
    for statement in tree.body:
        if not isinstance(statement, ast.Assign | ast.AnnAssign):
            continue
        for name in ("WORKING", "UNIMPLEMENTED"):
            if _assigns(statement, name) and isinstance(statement.value, ast.Dict):
                tables[name] = {
                    key.value
                    for key in statement.value.keys
                    if isinstance(key, ast.Constant) and isinstance(key.value, str)
                }
    problems = [
        f"{path.name}: no {name} dict of method ids found"
        for name in ("WORKING", "UNIMPLEMENTED")
        if name not in tables
    ]
    return tables, problems


# --- links to the behaviours page -----------------------------------------------------------------


def find_links(root: Path) -> Iterator[tuple[str, str]]:
    """(`path:line`, slug) of every link to a behaviour in the checkout's own files.

    A link is `google-behaviour.md#<anchor>`, or a bare `#<anchor>` that follows one in the same
    paragraph (`docs/google-behaviour.md#stow-status and #qido-no-match`). The behaviours page
    and the matrix are left out: their own links are to headings as well as behaviours.
    """
    skipped = {root / BEHAVIOURS, root / MATRIX}
    for name in LINK_ROOTS:
        top = root / name
        files = [top] if top.is_file() else sorted(top.rglob("*")) if top.is_dir() else []
        for path in files:
            if path.suffix not in LINK_SUFFIXES or not path.is_file() or path in skipped:
                continue
            text = path.read_text(encoding="utf-8", errors="replace")
            where = path.relative_to(root).as_posix()
            for match in LINK.finditer(text):
                found = [(match.start(), match.group(1))] if match.group(1) else []
                paragraph = text[match.end() : match.end() + LINK_REACH].split("\n\n")[0]
                found += [
                    (match.end() + more.start(), more.group(1))
                    for more in _MORE_LINKS.finditer(paragraph)
                ]
                for offset, slug in found:
                    yield f"{where}:{text.count(chr(10), 0, offset) + 1}", slug


# --- the matrix -----------------------------------------------------------------------------------


def rules(
    behaviours: Sequence[Behaviour], pins: Sequence[Pin], links: Sequence[tuple[str, str]]
) -> list[str]:
    """What breaks the rules: unpinned behaviours, unknown slugs in markers and links."""
    known = {behaviour.slug for behaviour in behaviours}
    pinned = {pin.slug for pin in pins}
    problems = [
        f"{BEHAVIOURS.as_posix()}:{b.line}: behaviour {b.slug!r} (parity {b.parity}) is pinned "
        f'by no test: add @pytest.mark.{MARKER}("{b.slug}") to the tests that check it, or '
        "make its parity 'not reproduced: <reason>' or 'untestable: <reason>'"
        for b in behaviours
        if b.parity in PINNED and b.slug not in pinned
    ]
    problems.extend(
        f"{pin.where}: {MARKER} names {pin.slug!r}, which {BEHAVIOURS.as_posix()} does not document"
        for pin in _unique_by_where(pins)
        if pin.slug not in known
    )
    problems.extend(
        f"{where}: links to {BEHAVIOURS.as_posix()}#{slug}, which is no behaviour's anchor"
        for where, slug in links
        if slug not in known
    )
    return problems


def _unique_by_where(pins: Sequence[Pin]) -> list[Pin]:
    seen: set[tuple[str, str]] = set()
    unique: list[Pin] = []
    for pin in pins:
        if (pin.where, pin.slug) not in seen:
            seen.add((pin.where, pin.slug))
            unique.append(pin)
    return unique


def render(behaviours: Sequence[Behaviour], pins: Sequence[Pin], methods: Sequence[Method]) -> str:
    """docs/parity.md."""
    tests: dict[str, list[str]] = {}
    for pin in pins:
        listed = tests.setdefault(pin.slug, [])
        if pin.test not in listed:
            listed.append(pin.test)
    counts = {parity: 0 for parity in PINNED + EXCUSED}
    for behaviour in behaviours:
        counts[behaviour.parity] += 1
    pinned = sum(1 for behaviour in behaviours if tests.get(behaviour.slug))
    working = sum(1 for method in methods if method.state == "works")
    intro = (
        "Generated by `python tools/parity.py` from [google-behaviour.md](google-behaviour.md) "
        f"(the behaviours), the tests' `@pytest.mark.{MARKER}` markers (the tests that pin each "
        "one), the discovery document `healthcare.v1.json` that google-api-python-client ships "
        "(the REST methods) and the `WORKING` / `UNIMPLEMENTED` tables of "
        "`tests/rest/test_discovery_surface.py` (their state). Do not edit it: "
        "`python tools/parity.py --check` (run by `.ci/run` and by `tests/unit/test_parity.py`) "
        "fails when it is stale, when a behaviour is pinned by no test, or when a marker names "
        "no behaviour."
    )
    summary = (
        f"{len(behaviours)} behaviours: {counts['same']} as Google documents them, "
        f"{counts['chosen']} where Google's documents are silent (our reading), "
        f"{counts['differs']} deliberately different, {counts['not reproduced']} not reproduced, "
        f"{counts['untestable']} untestable here; {pinned} pinned by tests. "
        f"{len(methods)} REST methods: {working} work, {len(methods) - working} answer 501."
    )
    legend = (
        "Parity: `same` as Google documents it; `chosen` where Google's documents are silent or "
        "ambiguous (dicomstore's reading, to check against the live API); `differs` on purpose; "
        "`not reproduced` and `untestable` with the reason."
    )
    out = ["# Parity with Google's Cloud Healthcare API v1 DICOM store"]
    for paragraph in (intro, summary, legend):
        out += ["", textwrap.fill(paragraph, width=100, break_on_hyphens=False)]
    out += ["", "## Behaviours"]
    section = None
    for behaviour in behaviours:
        if behaviour.section != section:
            section = behaviour.section
            out += [
                "",
                f"### {section}",
                "",
                "| behaviour | google mode | standard mode | parity | pinned by |",
                "|---|---|---|---|---|",
            ]
        parity = behaviour.parity
        if behaviour.reason:
            parity = f"{parity}: {behaviour.reason}"
        pinned_by = "<br>".join(f"`{test}`" for test in tests.get(behaviour.slug, [])) or "—"
        out.append(
            "| "
            + " | ".join(
                [
                    f"[{_cell(behaviour.title)}](google-behaviour.md#{behaviour.slug})",
                    _cell(behaviour.google),
                    _cell(behaviour.standard),
                    _cell(parity),
                    pinned_by,
                ]
            )
            + " |"
        )
    out += [
        "",
        "## REST methods of the discovery document",
        "",
        textwrap.fill(
            "The methods of `projects.locations.datasets`, of `...datasets.dicomStores` and "
            "everything beneath it, and of `...datasets.operations`, in the document's order (ids "
            f"without `{METHOD_PREFIX}`). `501` is UNIMPLEMENTED with a message naming the method.",
            width=100,
            break_on_hyphens=False,
        ),
        "",
        "| method | HTTP | path | state |",
        "|---|---|---|---|",
    ]
    out += [
        f"| `{m.short_id}` | {m.http_method} | `{_cell(m.path)}` | {m.state} |" for m in methods
    ]
    return "\n".join(out) + "\n"


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


# --- command line ---------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--check", action="store_true", help="write nothing; fail if docs/parity.md is stale"
    )
    parser.add_argument("--root", type=Path, default=REPO, help="the checkout (default: this one)")
    parser.add_argument(
        "--discovery", type=Path, help="healthcare.v1.json (default: google-api-python-client's)"
    )
    args = parser.parse_args(argv)
    root: Path = args.root.resolve()
    document: Path = args.discovery or discovery_document()

    behaviours, problems = read_behaviours(
        (root / BEHAVIOURS).read_text(encoding="utf-8"), BEHAVIOURS.as_posix()
    )
    pins, pin_problems = find_pins(root)
    methods, method_problems = read_methods(document, root / SURFACE_TEST)
    problems += pin_problems + method_problems
    problems += rules(behaviours, pins, list(find_links(root)))
    matrix = render(behaviours, pins, methods)
    target = root / MATRIX
    if args.check:
        current = target.read_text(encoding="utf-8") if target.exists() else ""
        if current != matrix:
            problems.append(
                f"{MATRIX.as_posix()} is stale: run `python tools/parity.py` and commit the result"
            )
    elif not target.exists() or target.read_text(encoding="utf-8") != matrix:
        target.write_text(matrix, encoding="utf-8")
        print(f"wrote {MATRIX.as_posix()}")
    for problem in problems:
        print(problem, file=sys.stderr)
    if problems:
        print(f"parity: {len(problems)} problem(s)", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
