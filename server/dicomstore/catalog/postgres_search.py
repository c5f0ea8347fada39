"""QIDO-RS search over the PostgreSQL catalog's index (`instance_attributes`,
`person_name_tokens`, as in SQLite).

Each condition is an `EXISTS` over the index rows of the instance tested; PostgreSQL's planner,
from its statistics, chooses whether to read a condition's matches from its index (the partial
index of a driving keyword, `sqlite_search.DRIVING_KEYWORDS`, or the token index) or to walk
the store's rows in key order and probe the primary key, the choice `sqlite_search` makes by
counting. A studies search on study-level keys goes through `study_values` instead, its plan
chosen by counting as in SQLite and spelled out (module `study_values`). Equality, ranges and
a wildcard's literal prefix are byte-ordered range reads (COLLATE "C"); the rest of a wildcard
is a LIKE on what the prefix leaves.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Final

from asyncpg import Record

from dicomstore.catalog import shared, study_values
from dicomstore.catalog.postgres_statements import Db, execute
from dicomstore.catalog.sqlite_search import DRIVING_KEYWORDS, _count_cap, _drive
from dicomstore.core.model import NewInstance
from dicomstore.core.names import DicomStoreName
from dicomstore.core.queries import Condition, Level, Match, MatchKind, Query
from dicomstore.dicom import qido

#: Attributes picked one by one at most: json_build_object takes at most 100 arguments.
_MAX_PICKED: Final = 50
_MODALITY: Final = "(se.attributes::json -> '00080060' -> 'Value' ->> 0)"


class PostgresSearch:
    """`Catalog.search` and the index writes `add_instance` makes."""

    _all: Callable[[str, Sequence[Any]], Awaitable[list[Record]]]
    dicom_store_key: Callable[[DicomStoreName], Awaitable[int]]

    @staticmethod
    def _index_rows(instance_key: int, instance: NewInstance) -> Callable[[Db], Awaitable[None]]:
        """The writes of the instance's search index rows (in `add_instance`'s transaction)."""
        attributes = qido.index_entries(instance.attributes)
        tokens = qido.token_entries(instance.attributes)
        per_study = study_values.entries(attributes)
        add_study_values = study_values.INSERT.format(
            rows="SELECT unnest(?::TEXT[]) AS keyword, unnest(?::TEXT[]) AS value"
        )

        async def write(db: Db) -> None:
            for table, rows in (
                ("instance_attributes", attributes),
                ("person_name_tokens", tokens),
            ):
                if rows:
                    await execute(
                        db,
                        f"INSERT INTO {table} SELECT ?::BIGINT, unnest(?::TEXT[]),"
                        " unnest(?::TEXT[])",
                        (instance_key, [k for k, _ in rows], [v for _, v in rows]),
                    )
            if per_study:
                keywords, values = [k for k, _ in per_study], [v for _, v in per_study]
                await execute(db, add_study_values, (keywords, values, instance_key))

        return write

    async def search(self, store: DicomStoreName, query: Query) -> Sequence[Match]:
        store_key = await self.dicom_store_key(store)
        if query.level is Level.STUDIES and query.study_uid is None:
            by_study = [c for c in query.conditions if study_values.per_study(c)]
            if by_study:
                rows = await self._studies_by_value(store_key, query, by_study)
                return await self._study_matches(rows)
        if query.level is Level.STUDIES:
            return await self._search_studies(store_key, query)
        if query.level is Level.SERIES:
            return await self._search_series(store_key, query)
        return await self._search_instances(store_key, query)

    async def _search_studies(self, store_key: int, query: Query) -> list[Match]:
        where, params = _probes(query.conditions)
        sql = "SELECT st.id, st.study_uid, st.attributes FROM studies st WHERE st.store_key = ?"
        args: list[Any] = [store_key]
        if query.study_uid is not None:
            sql += " AND st.study_uid = ?"
            args.append(query.study_uid)
        sql += (
            " AND EXISTS (SELECT 1 FROM series se JOIN instances i ON i.series_key = se.id"
            f" WHERE se.study_key = st.id AND i.state = 1{where})"
        )
        rows = await self._all(
            sql + " ORDER BY st.id LIMIT ? OFFSET ?", [*args, *params, *_page(query)]
        )
        return await self._study_matches(rows)

    async def _studies_by_value(
        self, store_key: int, query: Query, conditions: list[Condition]
    ) -> list[Record]:
        """A page of studies found through `study_values`, the plan chosen as SQLite's
        (`SqliteSearch._studies_by_value`) and spelled out (`study_values.ordered_page`)."""
        wanted = query.limit + query.offset
        wheres = [_study_where(c) for c in conditions]
        counts, count_params = [], []
        (total_row,) = await self._all(study_values.TOTAL, ())
        total = int(total_row[0] or 0)
        cap = _count_cap(total, wanted, study_values.WALK_COST)
        for where, values in wheres:
            counts.append(study_values.count(where, cap))
            count_params += [store_key, *values]
        (row,) = await self._all(f"SELECT {', '.join(counts)}", count_params)
        hits = [int(row[n]) for n in range(len(conditions))]
        rarest = hits.index(min(hits))
        where, values = wheres[rarest]
        if _drive(hits, total, wanted, study_values.WALK_COST):
            candidates = study_values.by_value(where)
        else:
            candidates = study_values.in_key_order(conditions[rarest].keyword, where)
        probes, probe_params = _probes(query.conditions, fenced=True)
        return await self._all(
            study_values.ordered_page(candidates, probes),
            [*study_values.params(store_key, values, probe_params), *_page(query)],
        )

    async def _study_matches(self, rows: Sequence[Record]) -> list[Match]:
        """The matches of a page of studies (id, study_uid, attributes), with their counts and
        modalities."""
        if not rows:
            return []
        keys = [int(r["id"]) for r in rows]
        series = await self._all(
            f"SELECT se.study_key, COUNT(*) AS instances, {_MODALITY} AS modality"
            " FROM series se JOIN instances i ON i.series_key = se.id"
            " WHERE se.study_key = ANY(?::BIGINT[]) AND i.state = 1 GROUP BY se.id",
            (keys,),
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

    async def _search_series(self, store_key: int, query: Query) -> list[Match]:
        where, params = _probes(query.conditions)
        sql = (
            " FROM series se JOIN studies st ON st.id = se.study_key WHERE st.store_key = ?"
            + _scope(query)
            + " AND EXISTS (SELECT 1 FROM instances i"
            f" WHERE i.series_key = se.id AND i.state = 1{where})"
        )
        rows = await self._all(
            "SELECT se.id, se.series_uid, se.attributes, st.study_uid,"
            f" st.attributes AS study_attributes{sql} ORDER BY se.id LIMIT ? OFFSET ?",
            [store_key, *_scope_params(query), *params, *_page(query)],
        )
        if not rows:
            return []
        counted = await self._all(
            "SELECT series_key, COUNT(*) AS instances FROM instances"
            " WHERE series_key = ANY(?::BIGINT[]) AND state = 1 GROUP BY series_key",
            ([int(r["id"]) for r in rows],),
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

    async def _search_instances(self, store_key: int, query: Query) -> list[Match]:
        where, params = _probes(query.conditions)
        page = (
            "SELECT i.id, i.sop_uid, i.metadata, se.series_uid, st.study_uid"
            " FROM instances i JOIN series se ON se.id = i.series_key"
            " JOIN studies st ON st.id = se.study_key"
            f" WHERE i.store_key = ? AND i.state = 1{_scope(query)}{where}"
            " ORDER BY i.id LIMIT ? OFFSET ?"
        )
        args = [store_key, *_scope_params(query), *params, *_page(query)]
        if query.attributes is not None and len(query.attributes) <= _MAX_PICKED:
            # The few attributes shown, picked in the database from each instance of the page
            # parsed once (jsonb): decoding whole instances here costs more.
            pairs = ", ".join("?::TEXT, m -> ?::TEXT" for _ in query.attributes)
            picked = [p for tag in query.attributes for p in (tag, tag)]
            rows = await self._all(
                f"SELECT p.sop_uid, json_build_object({pairs})::TEXT AS metadata, p.series_uid,"
                f" p.study_uid FROM ({page}) p"
                " CROSS JOIN LATERAL (SELECT p.metadata::jsonb AS m OFFSET 0) j ORDER BY p.id",
                [*picked, *args],
            )
        else:
            rows = await self._all(page, args)
        # Parsing a page of DICOM JSON (up to 50,000 instances) stays off the event loop.
        return await asyncio.to_thread(shared.instance_matches, rows)


def _scope(query: Query) -> str:
    """The study and series the path names, as SQL text over `st` and `se`."""
    return (" AND st.study_uid = ?" if query.study_uid is not None else "") + (
        " AND se.series_uid = ?" if query.series_uid is not None else ""
    )


def _scope_params(query: Query) -> list[str]:
    return [uid for uid in (query.study_uid, query.series_uid) if uid is not None]


def _branches(condition: Condition) -> tuple[str, list[tuple[str, list[Any]]]]:
    """The index table of `condition` and its alternatives (WHERE text, parameters)."""
    if condition.kind is MatchKind.TOKENS:
        return "person_name_tokens", [
            (
                "keyword = ? AND token >= ? AND token < ?",
                [condition.keyword, *qido.prefix_bounds(t)],
            )
            for t in condition.values
        ]
    values: list[Any] = list(condition.values)
    if condition.kind is MatchKind.EXACT:
        where = "value = ?"
    elif condition.kind is MatchKind.ANY_OF:
        where = f"value IN ({', '.join('?' * len(values))})"
    elif condition.kind is MatchKind.RANGE:
        bounds = [("value >= ?", values[0]), ("value <= ?", values[1])]
        where = " AND ".join(text for text, bound in bounds if bound)
        values = [bound for _, bound in bounds if bound]
    else:
        (pattern,) = values
        prefix = qido.wildcard_prefix(pattern)
        where, values = "value LIKE ?", [like_pattern(pattern)]
        if prefix:
            where = "value >= ? AND value < ? AND " + where
            values = [*qido.prefix_bounds(prefix), *values]
    if condition.keyword in DRIVING_KEYWORDS:
        # A literal, not a parameter: the planner matches a partial index only to terms it sees.
        return "instance_attributes", [(f"keyword = '{condition.keyword}' AND {where}", values)]
    return "instance_attributes", [(f"keyword = ? AND {where}", [condition.keyword, *values])]


def _study_where(condition: Condition) -> tuple[str, list[Any]]:
    """`condition` as SQL over the columns `keyword` and `value` of `study_values`."""
    _, ((where, values),) = _branches(condition)
    return where, values


def like_pattern(pattern: str) -> str:
    """A PS3.4 wildcard pattern (`*`, `?`) as a LIKE pattern, LIKE's own wildcards and escape
    character taken literally."""
    escaped = {"\\": "\\\\", "%": "\\%", "_": "\\_", "*": "%", "?": "_"}
    return "".join(escaped.get(c, c) for c in pattern)


def _probes(conditions: Sequence[Condition], *, fenced: bool = False) -> tuple[str, list[Any]]:
    """SQL text (`AND EXISTS ...` per condition) testing the instance `i` against each.

    `fenced`: each test reads the instance's own rows (its primary key), never the matches of
    the condition by value, which the planner may do when it underestimates them (a prefix's
    range and its LIKE count twice in its estimate): OFFSET 0 keeps the test a subplan."""
    sql, params, fence = "", [], " OFFSET 0" if fenced else ""
    for condition in conditions:
        table, branches = _branches(condition)
        either = " OR ".join(f"({w})" for w, _ in branches)
        sql += (
            f" AND EXISTS (SELECT 1 FROM {table} WHERE instance_key = i.id AND ({either}){fence})"
        )
        params += [p for _, values in branches for p in values]
    return sql, params


def _page(query: Query) -> list[int]:
    return [query.limit, query.offset]
