"""The parity matrix (`tools/parity.py`): docs/parity.md is current, every documented behaviour of
Google's API is pinned by a test or says why not, and every marker names a documented behaviour.

The first test checks this checkout, as `.ci/run` does; the others run the tool on a small
checkout of their own to show that it catches each kind of drift.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
TOOL = REPO / "tools" / "parity.py"
PAGE = Path("docs", "google-behaviour" + ".md")

BEHAVIOURS = """# Behaviours

## QIDO-RS (search)

<a id="qido-no-match"></a>
### A search that matches nothing

- google: 204, empty body.
- standard: 200 with `[]`.
- parity: same
- sources: the conformance statement

<a id="pubsub-notifications"></a>
### Pub/Sub notifications

- google: nothing is published.
- standard: as google
- parity: not reproduced: no Pub/Sub here
- sources: the Pub/Sub page
"""

PINNING_TEST = """import pytest


@pytest.mark.google_behaviour("qido-no-match")
def test_no_match_is_204() -> None:
    pass
"""

SURFACE_TEST = """WORKING = {"datasets.get": None}
UNIMPLEMENTED = {"datasets.getIamPolicy": None}
"""


def parity(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(TOOL), "--root", str(root), *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def checkout(root: Path, behaviours: str = BEHAVIOURS, test: str = PINNING_TEST) -> Path:
    """A checkout with a behaviours page, one test module and the surface test's tables, and
    its matrix written by the tool."""
    (root / "docs").mkdir(parents=True)
    (root / PAGE).write_text(behaviours, encoding="utf-8")
    (root / "tests" / "rest").mkdir(parents=True)
    (root / "tests" / "test_search.py").write_text(test, encoding="utf-8")
    (root / "tests" / "rest" / "test_discovery_surface.py").write_text(SURFACE_TEST)
    parity(root)
    return root


def test_this_checkouts_matrix_is_current_and_every_behaviour_is_pinned() -> None:
    result = parity(REPO, "--check")
    assert result.returncode == 0, result.stderr


def test_matrix_lists_behaviours_with_their_tests_and_methods_with_their_state(
    tmp_path: Path,
) -> None:
    root = checkout(tmp_path)
    assert parity(root, "--check").returncode == 0
    matrix = (root / "docs" / "parity.md").read_text(encoding="utf-8")
    pinned_by = "`tests/test_search.py::test_no_match_is_204`"
    assert f"| 204, empty body. | 200 with `[]`. | same | {pinned_by} |" in matrix
    assert "| not reproduced: no Pub/Sub here | — |" in matrix
    assert "| `datasets.get` | GET | `v1/{+name}` | works |" in matrix
    assert "| `datasets.getIamPolicy` | GET | `v1/{+resource}:getIamPolicy` | 501 |" in matrix


def test_check_fails_when_a_behaviour_is_pinned_by_no_test(tmp_path: Path) -> None:
    root = checkout(tmp_path, test="def test_nothing() -> None:\n    pass\n")
    result = parity(root, "--check")
    assert result.returncode == 1
    assert "'qido-no-match' (parity same) is pinned by no test" in result.stderr


def test_not_reproduced_behaviour_needs_a_reason(tmp_path: Path) -> None:
    root = checkout(
        tmp_path, BEHAVIOURS.replace("not reproduced: no Pub/Sub here", "not reproduced")
    )
    result = parity(root, "--check")
    assert result.returncode == 1
    assert "pubsub-notifications: parity must be one of" in result.stderr


def test_check_fails_when_a_marker_names_no_behaviour(tmp_path: Path) -> None:
    root = checkout(
        tmp_path, test=PINNING_TEST.replace('"qido-no-match"', '"qido-no-match", "qido-typo"')
    )
    result = parity(root, "--check")
    assert result.returncode == 1
    assert "tests/test_search.py:4: google_behaviour names 'qido-typo'" in result.stderr


def test_check_fails_when_a_marker_is_not_on_a_test(tmp_path: Path) -> None:
    helper = '\n\n@pytest.mark.google_behaviour("qido-no-match")\ndef helper() -> None:\n    pass\n'
    root = checkout(tmp_path, test=PINNING_TEST + helper)
    result = parity(root, "--check")
    assert result.returncode == 1
    assert "google_behaviour on helper, which is no test" in result.stderr


def test_check_fails_when_a_link_names_no_behaviour(tmp_path: Path) -> None:
    root = checkout(tmp_path)
    (root / "server").mkdir()
    link = "docs/google-behaviour" + ".md#qido-no-match and #qido-gone"
    (root / "server" / "qido.py").write_text(f'"""Search ({link})."""\n')
    result = parity(root, "--check")
    assert result.returncode == 1
    assert "server/qido.py:1: links to" in result.stderr
    assert "#qido-gone, which is no behaviour's anchor" in result.stderr
    assert "#qido-no-match," not in result.stderr


def test_check_fails_when_the_matrix_is_stale(tmp_path: Path) -> None:
    root = checkout(tmp_path)
    page = root / PAGE
    page.write_text(page.read_text().replace("204, empty body.", "204 No Content."))
    result = parity(root, "--check")
    assert result.returncode == 1
    assert "docs/parity.md is stale: run `python tools/parity.py`" in result.stderr
    assert parity(root).returncode == 0
    assert parity(root, "--check").returncode == 0
