"""Studies searches through `study_values` (SQLite's migration 0008, PostgreSQL's 0004): SQL text
both catalogs run (with SQLite's `?` placeholders).

`study_values` holds the values of the study-level search keys once per study: every value the
study's visible instances have, maybe more (rows of invisible instances, and of deleted ones
until their study goes). So a study it yields is then tested against its visible instances, as
every search does (`check`), and a studies search reads one entry per study, not one per
instance, in one of two orders:
- the drive: the studies whose value matches, by value (`study_values_by_value`); its work is
  the number of matching studies, a few for an identifier or a date range;
- the walk: the store's studies in key order with their values (`study_values_walk`), stopping
  after `limit + offset` studies that match; its work is the page over the share of studies
  that match, a few hundred entries for a surname prefix, whatever the store's size.
The catalog counts the matching studies up to the point where the walk wins, as for instances
(`sqlite_search._count_cap`, `_drive`, with `WALK_COST`): sqrt(limit x studies), about 3,200
studies at 100,000 studies and pages of 100.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any, Final

from dicomstore.core.queries import Condition, MatchKind

#: Study-level keys whose values `study_values` holds (the migrations list the same).
STUDY_KEYWORDS: Final = frozenset(
    {"PatientName", "PatientID", "AccessionNumber", "ReferringPhysicianName", "StudyDate"}
)

#: What walking one study costs against driving one (`sqlite_search._drive`): both read one
#: index entry per study and test only the studies of the page against their instances.
WALK_COST: Final = 1
#: The number of studies in the stores (an upper bound: keys only grow).
TOTAL: Final = "SELECT MAX(id) FROM studies"
_SELECT: Final = "SELECT st.id, st.study_uid, st.attributes"


def per_study(condition: Condition) -> bool:
    """Whether `study_values` yields the studies matching `condition`."""
    return condition.kind is not MatchKind.TOKENS and condition.keyword in STUDY_KEYWORDS


def entries(attributes: Iterable[tuple[str, str]]) -> list[tuple[str, str]]:
    """The (keyword, value) pairs of an instance's index entries that `study_values` holds."""
    return [(k, v) for k, v in attributes if k in STUDY_KEYWORDS]


#: Add an instance's study values: `rows` is a SELECT of (keyword, value) columns, its parameters
#: come first, then the instance key; the instance's row must exist.
INSERT: Final = (
    "INSERT INTO study_values (study_key, keyword, value, store_key)"
    " SELECT se.study_key, v.keyword, v.value, i.store_key"
    " FROM instances i JOIN series se ON se.id = i.series_key"
    " CROSS JOIN ({rows}) v WHERE i.id = ? ON CONFLICT DO NOTHING"
)


def count(where: str, cap: int) -> str:
    """SQL counting the store's studies (store key first) with a value matching `where`, up to
    `cap`."""
    return (
        f"(SELECT COUNT(*) FROM (SELECT 1 FROM study_values WHERE store_key = ? AND {where}"
        f" LIMIT {cap}) c)"
    )


def check(probes: str, study: str) -> str:
    """The test of `study` (its key as SQL) against its visible instances: `probes` are
    `AND EXISTS ...` over instance `i` (every condition of the query)."""
    return (
        " AND EXISTS (SELECT 1 FROM series se JOIN instances i ON i.series_key = se.id"
        f" WHERE se.study_key = {study} AND i.state = 1{probes})"
    )


def drive(where: str, probes: str) -> str:
    """A page of studies read by value; parameters: store key, `where`'s, the probes', limit,
    offset."""
    return (
        f"{_SELECT} FROM studies st WHERE st.id IN (SELECT study_key FROM study_values"
        f" WHERE store_key = ? AND {where}){check(probes, 'st.id')}"
        " ORDER BY st.id LIMIT ? OFFSET ?"
    )


def walk(where: str, probes: str, hint: str = "") -> str:
    """A page of studies walked in key order; parameters as `drive`'s. `hint` follows the
    table's name (SQLite's `INDEXED BY`: its planner would rather read the range by value)."""
    return (
        f"{_SELECT} FROM studies st WHERE st.id IN (SELECT sv.study_key FROM study_values sv{hint}"
        f" WHERE sv.store_key = ? AND {where}{check(probes, 'sv.study_key')}"
        " GROUP BY sv.study_key ORDER BY sv.study_key LIMIT ? OFFSET ?) ORDER BY st.id"
    )


def params(store_key: int, values: Sequence[Any], probes: Sequence[Any]) -> list[Any]:
    return [store_key, *values, *probes]


# PostgreSQL's planner reads a range and sorts when it expects few rows, and tests every match
# before it sorts: each plan is spelled out instead, as the studies to test in key order
# (a subquery fenced by OFFSET 0, whose order the outer query keeps), then tested one by one
# until the page is full.


def ordered_page(candidates: str, probes: str, page: str) -> str:
    """A page of the studies of `candidates` (SQL yielding `study_key`s in key order) that pass
    `check`, cut by `page` (its LIMIT and OFFSET); parameters: the candidates', the probes',
    the page's. (OFFSET 0 keeps the check a test of each study: without it, the planner turns
    it into a join over every instance that matches.)"""
    return (
        f"{_SELECT} FROM ({candidates}) c JOIN studies st ON st.id = c.study_key"
        f" WHERE TRUE{check(probes + ' OFFSET 0', 'st.id')} ORDER BY c.study_key{page}"
    )


def by_value(where: str) -> str:
    """The store's studies (store key first) with a value matching `where`, read by value and
    sorted."""
    return (
        "SELECT DISTINCT study_key FROM study_values WHERE store_key = ?"
        f" AND {where} ORDER BY study_key OFFSET 0"
    )


def in_key_order(keyword: str, where: str) -> str:
    """The store's studies (store key first) with a `keyword` value matching `where`, walked in
    key order. `keyword` is one of STUDY_KEYWORDS, a literal for the planner."""
    assert keyword in STUDY_KEYWORDS
    return (
        "SELECT DISTINCT study_key FROM (SELECT study_key, keyword, value FROM study_values"
        f" WHERE store_key = ? AND keyword = '{keyword}' ORDER BY study_key OFFSET 0) sv"
        f" WHERE {where}"
    )
