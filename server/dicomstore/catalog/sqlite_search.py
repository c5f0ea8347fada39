"""QIDO-RS search over the SQLite catalog's index (`instance_attributes`, `person_name_tokens`,
and `study_values` for studies searches on study-level keys: module `study_values`).

A mixin of `SqliteCatalog`: it uses the catalog's reader helpers and store lookup.
"""

from __future__ import annotations

import asyncio
import json
import math
import sqlite3
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Final

from dicomstore.catalog import shared, study_values
from dicomstore.core.model import NewInstance
from dicomstore.core.names import DicomStoreName
from dicomstore.core.queries import Condition, Level, Match, MatchKind, Query
from dicomstore.dicom import qido

#: Keywords whose values have an index (`instance_attributes_<keyword>`, migration 0004):
#: the keys Google lets one search on. A condition on another keyword never drives a search; it
#: is tested on the instances the other conditions (or a walk in key order) lead to.
DRIVING_KEYWORDS: Final = frozenset(
    {
        "StudyInstanceUID",
        "SeriesInstanceUID",
        "SOPInstanceUID",
        "PatientName",
        "PatientID",
        "AccessionNumber",
        "ReferringPhysicianName",
        "StudyDate",
        "Modality",
    }
)


class SqliteSearch:
    """`Catalog.search` and the index writes `add_instance` makes."""

    _one: Callable[[str, Sequence[Any]], Awaitable[sqlite3.Row | None]]
    _all: Callable[[str, Sequence[Any]], Awaitable[list[sqlite3.Row]]]
    dicom_store_key: Callable[[DicomStoreName], Awaitable[int]]

    @staticmethod
    def _index_rows(
        instance_key: int, instance: NewInstance
    ) -> Callable[[sqlite3.Connection], None]:
        """The writes of the instance's search index rows (in `add_instance`'s transaction)."""
        entries = qido.index_entries(instance.attributes)
        attributes = [(instance_key, k, v) for k, v in entries]
        tokens = [(instance_key, k, t) for k, t in qido.token_entries(instance.attributes)]
        per_study = study_values.entries(entries)
        rows = "SELECT column1 AS keyword, column2 AS value FROM (VALUES " + ", ".join(
            ["(?, ?)"] * len(per_study)
        )
        add_study_values = study_values.INSERT.format(rows=rows + ")")
        study_params = [*(p for pair in per_study for p in pair), instance_key]

        def write(db: sqlite3.Connection) -> None:
            _insert_rows(db, "instance_attributes (instance_key, keyword, value)", attributes)
            _insert_rows(db, "person_name_tokens (instance_key, keyword, token)", tokens)
            if per_study:
                db.execute(add_study_values, study_params)

        return write

    async def search(self, store: DicomStoreName, query: Query) -> Sequence[Match]:
        store_key = await self.dicom_store_key(store)
        if query.level is Level.STUDIES and query.study_uid is None:
            by_study = [c for c in query.conditions if study_values.per_study(c)]
            if by_study:
                rows = await self._studies_by_value(store_key, query, by_study)
                return await self._study_matches(rows)
        driver = await self._driving_condition(query)
        probes = [c for c in query.conditions if c is not driver]
        if query.level is Level.STUDIES:
            return await self._search_studies(store_key, query, driver, probes)
        if query.level is Level.SERIES:
            return await self._search_series(store_key, query, driver, probes)
        return await self._search_instances(store_key, query, driver, probes)

    async def _driving_condition(self, query: Query) -> Condition | None:
        """The condition to read matches from, or None to walk rows in order and test each.

        Each indexed condition's matching instances are counted from the index, up to
        `_count_cap`, and the two plans costed by `_drive`. When the path names the study or
        series, its few rows are walked.
        """
        if query.study_uid is not None or query.series_uid is not None:
            return None
        candidates = [c for c in query.conditions if _indexed(c)]
        if not candidates:
            return None
        total = int((await self._one("SELECT MAX(id) FROM instances", ()) or [0])[0] or 0)
        cap = _count_cap(total, query.limit + query.offset)
        counts, params = [], []
        for condition in candidates:
            sql, values = _hits(condition)
            counts.append(f"(SELECT COUNT(*) FROM ({sql} LIMIT {cap}))")
            params += values
        row = await self._one(f"SELECT {', '.join(counts)}", params)
        assert row is not None
        hits = [int(row[n]) for n in range(len(candidates))]
        if not _drive(hits, total, query.limit + query.offset):
            return None
        return candidates[hits.index(min(hits))]

    async def _search_studies(
        self, store_key: int, query: Query, driver: Condition | None, probes: list[Condition]
    ) -> list[Match]:
        where, params = _probes(probes)
        sql = "SELECT st.id, st.study_uid, st.attributes FROM studies st WHERE st.store_key = ?"
        args: list[Any] = [store_key]
        if query.study_uid is not None:
            sql += " AND st.study_uid = ?"
            args.append(query.study_uid)
        if driver is not None:
            hits, hit_params = _hits(driver)
            sql += (
                " AND st.id IN (SELECT se.study_key FROM instances i JOIN series se"
                f" ON se.id = i.series_key WHERE i.id IN ({hits}) AND i.state = 1{where})"
            )
            args += [*hit_params, *params]
        else:
            sql += (
                " AND EXISTS (SELECT 1 FROM series se JOIN instances i ON i.series_key = se.id"
                f" WHERE se.study_key = st.id AND i.state = 1{where})"
            )
            args += params
        rows = await self._all(sql + " ORDER BY st.id LIMIT ? OFFSET ?", [*args, *_page(query)])
        return await self._study_matches(rows)

    async def _studies_by_value(
        self, store_key: int, query: Query, conditions: list[Condition]
    ) -> list[sqlite3.Row]:
        """A page of studies found through `study_values` (module `study_values`): driven by
        the rarest of `conditions` (studies counted up to the point where walking wins), or
        walked in key order; every condition then tested on the study's visible instances."""
        total = int((await self._one(study_values.TOTAL, ()) or [0])[0] or 0)
        wanted = query.limit + query.offset
        cap = _count_cap(total, wanted, study_values.WALK_COST)
        counts, count_params = [], []
        wheres = [_study_where(c) for c in conditions]
        for where, values in wheres:
            counts.append(study_values.count(where, cap))
            count_params += [store_key, *values]
        row = await self._one(f"SELECT {', '.join(counts)}", count_params)
        assert row is not None
        hits = [int(row[n]) for n in range(len(conditions))]
        where, values = wheres[hits.index(min(hits))]
        probes, probe_params = _probes(query.conditions)
        if _drive(hits, total, wanted, study_values.WALK_COST):
            sql = study_values.drive(where, probes)
        else:
            sql = study_values.walk(where, probes, " INDEXED BY study_values_walk")
        return await self._all(
            sql,
            [*study_values.params(store_key, values, probe_params), *_page(query)],
        )

    async def _study_matches(self, rows: list[sqlite3.Row]) -> list[Match]:
        """The matches of a page of studies (id, study_uid, attributes), with their counts and
        modalities."""
        if not rows:
            return []
        keys = [int(r["id"]) for r in rows]
        series = await self._all(
            "SELECT se.study_key, COUNT(*) AS instances,"
            " json_extract(se.attributes, '$.\"00080060\".Value[0]') AS modality"
            " FROM series se JOIN instances i ON i.series_key = se.id"
            f" WHERE se.study_key IN ({_marks(keys)}) AND i.state = 1 GROUP BY se.id",
            keys,
        )
        counts: dict[int, list[int]] = {key: [0, 0] for key in keys}
        modalities: dict[int, set[str]] = {key: set() for key in keys}
        for r in series:
            counts[r["study_key"]][0] += 1
            counts[r["study_key"]][1] += int(r["instances"])
            if r["modality"]:
                modalities[r["study_key"]].add(str(r["modality"]))
        return [
            Match(
                study_uid=r["study_uid"],
                study_attributes=json.loads(r["attributes"]),
                series_count=counts[r["id"]][0],
                instance_count=counts[r["id"]][1],
                modalities=tuple(sorted(modalities[r["id"]])),
            )
            for r in rows
        ]

    async def _search_series(
        self, store_key: int, query: Query, driver: Condition | None, probes: list[Condition]
    ) -> list[Match]:
        where, params = _probes(probes)
        # CROSS JOIN fixes the outer loop: the study when the path names it, else the series in
        # key order, so that an unfiltered page stops after `limit` rows.
        if query.study_uid is not None:
            sql = (
                " FROM studies st CROSS JOIN series se ON se.study_key = st.id"
                " WHERE st.store_key = ? AND st.study_uid = ?"
            )
            args: list[Any] = [store_key, query.study_uid]
        else:
            sql = (
                " FROM series se CROSS JOIN studies st ON st.id = se.study_key"
                " WHERE st.store_key = ?"
            )
            args = [store_key]
        if query.series_uid is not None:
            sql += " AND se.series_uid = ?"
            args.append(query.series_uid)
        if driver is not None:
            hits, hit_params = _hits(driver)
            sql += (
                " AND se.id IN (SELECT i.series_key FROM instances i"
                f" WHERE i.id IN ({hits}) AND i.state = 1{where})"
            )
            args += [*hit_params, *params]
        else:
            sql += (
                " AND EXISTS (SELECT 1 FROM instances i"
                f" WHERE i.series_key = se.id AND i.state = 1{where})"
            )
            args += params
        rows = await self._all(
            "SELECT se.id, se.series_uid, se.attributes, st.study_uid,"
            f" st.attributes AS study_attributes{sql} ORDER BY se.id LIMIT ? OFFSET ?",
            [*args, *_page(query)],
        )
        if not rows:
            return []
        keys = [int(r["id"]) for r in rows]
        counted = await self._all(
            "SELECT series_key, COUNT(*) AS instances FROM instances"
            f" WHERE series_key IN ({_marks(keys)}) AND state = 1 GROUP BY series_key",
            keys,
        )
        counts = {int(r["series_key"]): int(r["instances"]) for r in counted}
        return [
            Match(
                study_uid=r["study_uid"],
                series_uid=r["series_uid"],
                study_attributes=json.loads(r["study_attributes"]),
                series_attributes=json.loads(r["attributes"]),
                instance_count=counts.get(int(r["id"]), 0),
            )
            for r in rows
        ]

    async def _search_instances(
        self, store_key: int, query: Query, driver: Condition | None, probes: list[Condition]
    ) -> list[Match]:
        where, params = _probes(probes)
        # As for series; `+i.state` keeps the planner off instances_by_store when the path
        # names the study (its series' instances are few, the store's many).
        if query.study_uid is not None:
            sql = (
                " FROM studies st CROSS JOIN series se ON se.study_key = st.id"
                " CROSS JOIN instances i ON i.series_key = se.id"
                " WHERE st.store_key = ? AND st.study_uid = ? AND +i.state = 1"
            )
            args: list[Any] = [store_key, query.study_uid]
        else:
            sql = (
                " FROM instances i CROSS JOIN series se ON se.id = i.series_key"
                " CROSS JOIN studies st ON st.id = se.study_key"
                " WHERE i.store_key = ? AND i.state = 1"
            )
            args = [store_key]
        if query.series_uid is not None:
            sql += " AND se.series_uid = ?"
            args.append(query.series_uid)
        if driver is not None:
            hits, hit_params = _hits(driver)
            sql += f" AND i.id IN ({hits})"
            args += hit_params
        metadata, picked = "i.metadata", []
        if query.attributes is not None and len(query.attributes) <= _MAX_PICKED:
            # SQLite reads the few attributes shown; decoding whole instances costs far more.
            pairs = ", ".join("?, json_extract(i.metadata, ?)" for _ in query.attributes)
            metadata = f"json_object({pairs})"
            picked = [p for tag in query.attributes for p in (tag, f'$."{tag}"')]
        rows = await self._all(
            f"SELECT i.sop_uid, {metadata} AS metadata, se.series_uid, st.study_uid{sql}{where}"
            " ORDER BY i.id LIMIT ? OFFSET ?",
            [*picked, *args, *params, *_page(query)],
        )
        # Parsing a page of DICOM JSON (up to 50,000 instances) stays off the event loop.
        return await asyncio.to_thread(shared.instance_matches, rows)


# Search helpers: SQL text from `dicomstore.dicom.qido` conditions. A condition's rows live in
# `instance_attributes` (one per value) or `person_name_tokens` (fuzzy Person Names).

#: What testing one walked row costs against reading one match from the index (measured in
#: SQLite steps: a row joins its series and instances and probes the index for each).
_WALK_COST = 8
#: Attributes read one by one at most: json_object takes at most 127 arguments by default.
_MAX_PICKED = 60


def _branches(condition: Condition) -> tuple[str, list[tuple[str, list[Any]]]]:
    """The index table of `condition` and its alternatives (WHERE text, parameters)."""
    if condition.kind is MatchKind.TOKENS:
        tokens = [("token >= ? AND token < ?", [*qido.prefix_bounds(t)]) for t in condition.values]
        return "person_name_tokens", [
            (f"keyword = ? AND {w}", [condition.keyword, *p]) for w, p in tokens
        ]
    values = list(condition.values)
    if condition.kind is MatchKind.EXACT:
        where = "value = ?"
    elif condition.kind is MatchKind.ANY_OF:
        where = f"value IN ({_marks(values)})"
    elif condition.kind is MatchKind.RANGE:
        low, high = values
        bounds = [("value >= ?", low), ("value <= ?", high)]
        where = " AND ".join(text for text, bound in bounds if bound)
        values = [bound for _, bound in bounds if bound]
    else:
        # GLOB alone would scan the keyword's rows; the literal prefix bounds the range read.
        (pattern,) = values
        prefix = qido.wildcard_prefix(pattern)
        where, values = "value GLOB ?", [qido.glob_pattern(pattern)]
        if prefix:
            where = "value >= ? AND value < ? AND " + where
            values = [*qido.prefix_bounds(prefix), *values]
    if condition.keyword in DRIVING_KEYWORDS:
        # A literal, not a parameter: SQLite uses a partial index only for terms it can see.
        return "instance_attributes", [(f"keyword = '{condition.keyword}' AND {where}", values)]
    return "instance_attributes", [(f"keyword = ? AND {where}", [condition.keyword, *values])]


def _study_where(condition: Condition) -> tuple[str, list[Any]]:
    """`condition` as SQL over the columns `keyword` and `value` of `study_values`."""
    _, ((where, values),) = _branches(condition)
    return where, values


def _indexed(condition: Condition) -> bool:
    """Whether an index yields the instances matching `condition`."""
    return condition.kind is MatchKind.TOKENS or condition.keyword in DRIVING_KEYWORDS


def _count_cap(total: int, wanted: int, walk_cost: int = _WALK_COST) -> int:
    """How far to count a condition's matches to choose a plan.

    A condition matching `h` of `total` instances is worth driving alone when
    `h < _WALK_COST * wanted * total / h`, that is below `sqrt(_WALK_COST * wanted * total)`
    (about 9,000 at 100,000 instances and pages of 100): a count past that point changes no
    decision, so choosing a plan reads far fewer index entries than the store holds.
    `walk_cost` replaces `_WALK_COST` where a walked row costs otherwise
    (`study_values.WALK_COST`).
    """
    return math.isqrt(walk_cost * wanted * max(total, 1)) + 1


def _drive(hits: Sequence[int], total: int, wanted: int, walk_cost: int = _WALK_COST) -> bool:
    """Whether reading the rarest condition's `hits` beats walking rows in order.

    Driving reads every match of the rarest condition. Walking tests rows until `wanted`
    (limit + offset) match, about `wanted / p` of them where `p` is the share of the `total`
    instances that match every condition (taken as independent). A capped count only
    understates a share, which favours driving, the plan with a known bound.
    """
    share = 1.0
    for count in hits:
        share *= count / max(total, 1)
    return share == 0 or min(hits) < walk_cost * wanted / share


def _hits(condition: Condition) -> tuple[str, list[Any]]:
    """SQL selecting the keys of the instances (any state) that satisfy `condition`."""
    table, branches = _branches(condition)
    sql = " UNION ".join(f"SELECT instance_key FROM {table} WHERE {w}" for w, _ in branches)
    return sql, [p for _, params in branches for p in params]


def _probes(conditions: Sequence[Condition]) -> tuple[str, list[Any]]:
    """SQL text (`AND EXISTS ...` per condition) testing the instance `i` against each."""
    sql, params = "", []
    for condition in conditions:
        table, branches = _branches(condition)
        either = " OR ".join(f"({w})" for w, _ in branches)
        sql += f" AND EXISTS (SELECT 1 FROM {table} WHERE instance_key = i.id AND ({either}))"
        params += [p for _, values in branches for p in values]
    return sql, params


def _page(query: Query) -> list[int]:
    return [query.limit, query.offset]


def _marks(values: Sequence[Any]) -> str:
    return ", ".join("?" * len(values))


#: Rows per INSERT statement; each takes three parameters (SQLite allows 32,766 since 3.32).
_ROWS_PER_INSERT = 500


def _insert_rows(db: sqlite3.Connection, into: str, rows: Sequence[tuple[Any, Any, Any]]) -> None:
    """Insert rows of three values with one multi-row statement per `_ROWS_PER_INSERT`, not one
    statement per row: each statement hands the GIL back and forth with the event loop."""
    for start in range(0, len(rows), _ROWS_PER_INSERT):
        chunk = rows[start : start + _ROWS_PER_INSERT]
        marks = ", ".join(["(?, ?, ?)"] * len(chunk))
        db.execute(f"INSERT INTO {into} VALUES {marks}", [v for row in chunk for v in row])
