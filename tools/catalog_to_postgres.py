"""Copy a SQLite catalog's rows into an empty PostgreSQL catalog with COPY (for benchmarks).

    python tools/catalog_to_postgres.py CATALOG.sqlite postgresql://...

`tools/catalog_bench.py` loads through the Catalog port, which takes about an hour for
1,000,000 instances on PostgreSQL; this copies a catalog that port wrote on SQLite, row for
row, in minutes: the database is brought to the current schema (`PostgresCatalog.open`), the
tables are filled with foreign key triggers off (`session_replication_role = replica`; the rows
are consistent already), the sequences moved past the copied keys, and the database vacuumed and
analysed (`VACUUM (ANALYZE)`, as autovacuum would do soon after: index-only scans need the
visibility map it writes).
Columns present on one side only keep their defaults.
"""

from __future__ import annotations

import asyncio
import sqlite3
import sys
import time
from collections.abc import Iterator
from typing import Any

import asyncpg

from dicomstore.catalog.postgres import PostgresCatalog

#: In foreign key order.
TABLES = (
    "datasets",
    "dicom_stores",
    "studies",
    "series",
    "instances",
    "instance_attributes",
    "person_name_tokens",
    "study_values",
)
ROWS_PER_COPY = 50_000


def chunks(source: sqlite3.Connection, table: str, columns: list[str]) -> Iterator[list[Any]]:
    cursor = source.execute(f"SELECT {', '.join(columns)} FROM {table}")
    while rows := cursor.fetchmany(ROWS_PER_COPY):
        yield [tuple(row) for row in rows]


async def copy(path: str, url: str) -> None:
    catalog = PostgresCatalog(url)
    await catalog.open()  # the schema
    await catalog.close()
    source = sqlite3.connect(path)
    db = await asyncpg.connect(url)
    try:
        await db.execute("SET session_replication_role = replica")
        for table in TABLES:
            started = time.perf_counter()
            mine = [row[1] for row in source.execute(f"PRAGMA table_info({table})")]
            theirs = {
                r["column_name"]
                for r in await db.fetch(
                    "SELECT column_name FROM information_schema.columns WHERE table_name = $1",
                    table,
                )
            }
            columns = [c for c in mine if c in theirs]
            count = 0
            for rows in chunks(source, table, columns):
                await db.copy_records_to_table(table, records=rows, columns=columns)
                count += len(rows)
            print(f"{table}: {count} rows in {time.perf_counter() - started:.0f} s", flush=True)
        for table in ("datasets", "dicom_stores", "studies", "series"):
            await db.execute(
                f"SELECT setval(pg_get_serial_sequence('{table}', 'id'),"
                f" (SELECT COALESCE(MAX(id), 0) + 1 FROM {table}), false)"
            )
        await db.execute(
            "SELECT setval('instance_keys', (SELECT COALESCE(MAX(id), 0) + 1 FROM instances),"
            " false)"
        )
        started = time.perf_counter()
        await db.execute("VACUUM (ANALYZE)")
        print(f"VACUUM (ANALYZE) in {time.perf_counter() - started:.0f} s", flush=True)
    finally:
        await db.close()
        source.close()


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__.split("\n\n")[1])
    asyncio.run(copy(sys.argv[1], sys.argv[2]))
