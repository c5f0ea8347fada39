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

Each statement is a round trip, a large share of a search's time, so a search runs as few as
it can: the store's key is looked up inside the statement that searches, and a page's counts
are read with the page (a LATERAL subquery of its rows, in the same snapshot). A studies search
through `study_values` is two statements: what choosing its plan needs, which finds the store
too, then the page (not read when a condition has no value there). Any other search is one,
and one more when it finds nothing: whether the store exists, to tell NotFound from no match.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Any, Final

from asyncpg import Record

from dicomstore.catalog import shared, study_values
from dicomstore.catalog.postgres_statements import Db, execute
from dicomstore.catalog.sqlite_search import DRIVING_KEYWORDS, _drive
from dicomstore.core.model import NewInstance
from dicomstore.core.names import DicomStoreName
from dicomstore.core.queries import Condition, Level, Match, MatchKind, Query
from dicomstore.dicom import qido

#: Attributes picked one by one at most: json_build_object takes at most 100 arguments.
_MAX_PICKED: Final = 50
_MODALITY: Final = "(se.attributes::json -> '00080060' -> 'Value' ->> 0)"
#: The key of the store a search names, as a value inside the statement that searches it
#: (parameters: `_store_params`): one round trip fewer than asking for it first.
_STORE_KEY: Final = f"({shared.STORE_KEY})"
#: The visible series and instances of the study `p.id` and the modalities of those series: a
#: LATERAL subquery over the rows of a page (`_with_study_counts`). Each series' instances are
#: counted from `instances_by_series` alone, and its modality read from its attributes once.
_STUDY_COUNTS: Final = (
    "SELECT COUNT(*) AS series_count, COALESCE(SUM(n.instances), 0)::BIGINT AS instance_count,"
    f" array_agg({_MODALITY}) AS modalities FROM series se CROSS JOIN LATERAL"
    " (SELECT COUNT(*) AS instances FROM instances i WHERE i.series_key = se.id AND i.state = 1)"
    " n WHERE se.study_key = p.id AND n.instances > 0"
)


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
        found: list[Match]
        if query.level is Level.STUDIES and query.study_uid is None:
            by_study = [c for c in query.conditions if study_values.per_study(c)]
            if by_study:
                return await self._studies_by_value(store, query, by_study)
        if query.level is Level.STUDIES:
            found = await self._search_studies(store, query)
        elif query.level is Level.SERIES:
            found = await self._search_series(store, query)
        else:
            found = await self._search_instances(store, query)
        if not found:
            await self.dicom_store_key(store)  # NotFound when the store is missing
        return found

    async def _search_studies(self, store: DicomStoreName, query: Query) -> list[Match]:
        where, params = _probes(query.conditions)
        sql = (
            "SELECT st.id, st.study_uid, st.attributes FROM studies st"
            f" WHERE st.store_key = {_STORE_KEY}"
        )
        args: list[Any] = _store_params(store)
        if query.study_uid is not None:
            sql += " AND st.study_uid = ?"
            args.append(query.study_uid)
        sql += (
            " AND EXISTS (SELECT 1 FROM series se JOIN instances i ON i.series_key = se.id"
            f" WHERE se.study_key = st.id AND i.state = 1{where})"
        )
        cut, cut_params = _page(query)
        rows = await self._all(
            _with_study_counts(f"{sql} ORDER BY st.id{cut}"), [*args, *params, *cut_params]
        )
        return _study_matches(rows)

    async def _studies_by_value(
        self, store: DicomStoreName, query: Query, conditions: list[Condition]
    ) -> list[Match]:
        """A page of studies found through `study_values`, the plan chosen as SQLite's
        (`SqliteSearch._studies_by_value`) and spelled out (`study_values.ordered_page`).

        Two statements: what the choice needs (`_choosing`), which also finds the store, then
        the page with its counts; a condition no study has a value for needs no page."""
        wanted = query.limit + query.offset
        wheres = [_study_where(c) for c in conditions]
        choice = await self._all(
            _choosing([where for where, _ in wheres]),
            [
                *_store_params(store),
                study_values.WALK_COST * wanted,
                *(value for _, values in wheres for value in values),
            ],
        )
        if not choice:
            await self.dicom_store_key(store)  # NotFound (unless created since)
            return []
        (row,) = choice
        store_key, total = int(row["store_key"]), int(row["total"] or 0)
        hits = [int(row[f"hits_{n}"]) for n in range(len(conditions))]
        if min(hits) == 0:
            return []  # `study_values` holds every value of the studies' visible instances
        rarest = hits.index(min(hits))
        where, values = wheres[rarest]
        if _drive(hits, total, wanted, study_values.WALK_COST):
            candidates = study_values.by_value(where)
        else:
            candidates = study_values.in_key_order(conditions[rarest].keyword, where)
        probes, probe_params = _probes(query.conditions, fenced=True)
        cut, cut_params = _page(query)
        rows = await self._all(
            _with_study_counts(study_values.ordered_page(candidates, probes, cut)),
            [*study_values.params(store_key, values, probe_params), *cut_params],
        )
        return _study_matches(rows)

    async def _search_series(self, store: DicomStoreName, query: Query) -> list[Match]:
        where, params = _probes(query.conditions)
        cut, cut_params = _page(query)
        page = (
            "SELECT se.id, se.series_uid, se.attributes, st.study_uid,"
            " st.attributes AS study_attributes FROM series se"
            f" JOIN studies st ON st.id = se.study_key WHERE st.store_key = {_STORE_KEY}"
            + _scope(query)
            + " AND EXISTS (SELECT 1 FROM instances i"
            f" WHERE i.series_key = se.id AND i.state = 1{where}) ORDER BY se.id{cut}"
        )
        # The page's counts in the same statement, each read after the page is cut.
        rows = await self._all(
            "SELECT p.*, (SELECT COUNT(*) FROM instances i"
            f" WHERE i.series_key = p.id AND i.state = 1) AS instance_count FROM ({page}) p"
            " ORDER BY p.id",
            [*_store_params(store), *_scope_params(query), *params, *cut_params],
        )
        attributes = _parsed(t for r in rows for t in (r["study_attributes"], r["attributes"]))
        return [
            Match(
                study_uid=r["study_uid"],
                series_uid=r["series_uid"],
                study_attributes=attributes[2 * n],
                series_attributes=attributes[2 * n + 1],
                instance_count=int(r["instance_count"]),
            )
            for n, r in enumerate(rows)
        ]

    async def _search_instances(self, store: DicomStoreName, query: Query) -> list[Match]:
        where, params = _probes(query.conditions)
        cut, cut_params = _page(query)
        # st.store_key (the same as i.store_key) lets the planner find the path's study by its
        # key (store_key, study_uid), instead of reading that whole index for its study_uid.
        page = (
            "SELECT i.id, i.sop_uid, i.metadata, se.series_uid, st.study_uid"
            " FROM instances i JOIN series se ON se.id = i.series_key"
            " JOIN studies st ON st.id = se.study_key"
            f" WHERE i.store_key = {_STORE_KEY} AND st.store_key = i.store_key"
            f" AND i.state = 1{_scope(query)}{where} ORDER BY i.id{cut}"
        )
        args = [*_store_params(store), *_scope_params(query), *params, *cut_params]
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


def _store_params(store: DicomStoreName) -> list[Any]:
    """The parameters of `_STORE_KEY`."""
    return [str(store.dataset.location), store.dataset.dataset_id, store.store_id]


def _choosing(wheres: Sequence[str]) -> str:
    """One statement for what choosing a studies plan needs: the store's key (no row: no such
    store), the number of studies (`study_values.TOTAL`) and, as `hits_0`, `hits_1`, ..., the
    studies with a value matching each of `wheres`, counted up to `sqlite_search._count_cap`
    of that number (the same integer square root, in SQL). Parameters: `_store_params`,
    `WALK_COST x (limit + offset)`, then each condition's."""
    counts = "".join(
        f", (SELECT COUNT(*) FROM (SELECT 1 FROM study_values WHERE store_key = k.id AND {where}"
        f" LIMIT t.cap) c) AS hits_{n}"
        for n, where in enumerate(wheres)
    )
    return (
        f"WITH k AS ({shared.STORE_KEY}), t AS (SELECT m.total,"
        " floor(sqrt((?::BIGINT * GREATEST(m.total, 1))::NUMERIC))::BIGINT + 1 AS cap"
        f" FROM ({study_values.TOTAL}) m (total))"
        f" SELECT k.id AS store_key, t.total{counts} FROM k CROSS JOIN t"
    )


def _with_study_counts(page: str) -> str:
    """`page` (SQL selecting studies' id, study_uid and attributes, in key order) with each
    study's counts and modalities (`_STUDY_COUNTS`), read for the page's rows alone."""
    return (
        "SELECT p.id, p.study_uid, p.attributes, c.series_count, c.instance_count,"
        f" c.modalities FROM ({page}) p CROSS JOIN LATERAL ({_STUDY_COUNTS}) c ORDER BY p.id"
    )


def _study_matches(rows: Sequence[Record]) -> list[Match]:
    """The matches of a page of studies read by `_with_study_counts`."""
    attributes = _parsed(r["attributes"] for r in rows)
    return [
        Match(
            study_uid=r["study_uid"],
            study_attributes=study,
            series_count=int(r["series_count"]),
            instance_count=int(r["instance_count"]),
            modalities=tuple(sorted({str(m) for m in r["modalities"] or () if m})),
        )
        for r, study in zip(rows, attributes, strict=True)
    ]


def _parsed(texts: Iterable[str]) -> list[dict[str, Any]]:
    """JSON objects (a page's attributes) parsed in one call: the parser then makes each key
    (a tag, "vr", "Value") once for all of them, and a page of 100 studies takes about 40 %
    less time to parse than object by object."""
    parsed: list[dict[str, Any]] = json.loads(f"[{','.join(texts)}]")
    return parsed


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


def _page(query: Query) -> tuple[str, list[int]]:
    """The page's LIMIT and OFFSET, as SQL text and its parameters.

    A first page's OFFSET is written as 0: a parameter there makes PostgreSQL cost a generic
    plan as if the offset skipped a share of the rows, so it keeps a custom plan and plans the
    statement again at every search (about 0.5 ms for a studies page). Later pages pass their
    offset as a parameter, so that paging prepares no statement per offset."""
    if query.offset == 0:
        return " LIMIT ? OFFSET 0", [query.limit]
    return " LIMIT ? OFFSET ?", [query.limit, query.offset]
