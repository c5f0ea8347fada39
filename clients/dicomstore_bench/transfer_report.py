"""The rows of `dicomstore-transfer-bench`: each figure over the rounds (min to max) beside the
issue's target, and the problems that make its exit status 1."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

from dicomstore_bench.report import number
from dicomstore_bench.transfer import Outcome
from dicomstore_bench.transfer_rounds import (
    CONCURRENCY,
    EXPORT_BIGQUERY,
    IMPORTS,
    PER_REQUEST,
    TRANSFERS,
    Round,
)

IMPORT_OVER_STOW = 2.0  # import at least twice Orthanc's best STOW rate
BIGQUERY_ROWS_PER_S = 10_000.0
RSS_MB = 300.0
ORTHANC_BEST = "Orthanc best STOW (reference)"


@dataclass
class Row:
    measurement: str
    unit: str
    values: list[float]  # one per round
    target: str = ""
    met: bool | None = None
    note: str = ""

    @property
    def low(self) -> float:
        return min(self.values, default=math.nan)

    @property
    def high(self) -> float:
        return max(self.values, default=math.nan)

    def aim(self, target: str, met: bool) -> Row:
        self.target, self.met = target, met
        return self


@dataclass
class Report:
    instances: int
    rounds: list[Round] = field(default_factory=list)
    versions: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    instance_bytes: int = 0

    def rows(self) -> list[Row]:
        out: list[Row] = []
        stow = [r for r in self.rounds if r.orthanc]
        for concurrency in CONCURRENCY if stow else ():
            label = f"Orthanc STOW multipart {PER_REQUEST}/request c={concurrency}"
            out.append(Row(label, "inst/s", [r.orthanc[concurrency].per_s for r in stow]))
        if stow:
            out.append(Row(ORTHANC_BEST, "inst/s", [r.orthanc_best for r in stow]))
            cpu = [r.orthanc[r.orthanc_concurrency].server_ms_per_item for r in stow]
            out.append(Row(f"{ORTHANC_BEST}: server CPU", "ms/inst", cpu))
        for name in TRANSFERS:
            outcomes = [r.transfers[name] for r in self.rounds if name in r.transfers]
            if outcomes:
                out += self._transfer_rows(name, outcomes)
        return out

    def _transfer_rows(self, name: str, outcomes: Sequence[Outcome]) -> list[Row]:
        missing = next((o.unavailable for o in outcomes if o.unavailable), "")
        if missing:
            return [Row(name, "", [], note=f"not available: {missing}")]
        rates = [o.per_s for o in outcomes]
        if name == EXPORT_BIGQUERY:
            rows = [
                Row(name, "rows/s", rates).aim(
                    f">= {BIGQUERY_ROWS_PER_S:,.0f}", all(v >= BIGQUERY_ROWS_PER_S for v in rates)
                )
            ]
        else:
            rows = [Row(name, "inst/s", rates), Row(name, "MB/s", [o.mb_per_s for o in outcomes])]
        if name in IMPORTS and all(r.orthanc for r in self.rounds):
            ratios = [o.per_s / r.orthanc_best for o, r in zip(outcomes, self.rounds, strict=True)]
            label = f"{name} / {ORTHANC_BEST}"
            target = f">= {IMPORT_OVER_STOW:g}x"
            rows.append(Row(label, "x", ratios).aim(target, min(ratios) >= IMPORT_OVER_STOW))
        rows.append(Row(f"{name}: server CPU", "ms/inst", [o.cpu_ms_per_item for o in outcomes]))
        rss = [o.rss_mb for o in outcomes]
        rows.append(Row(f"{name}: peak RSS", "MB", rss).aim(f"< {RSS_MB:g} MB", max(rss) < RSS_MB))
        return rows

    def problems(self) -> list[str]:
        """Every failed STOW request, and every transfer that did not move every instance."""
        out: list[str] = []
        for number_, one in enumerate(self.rounds, 1):
            for concurrency, tally in one.orthanc.items():
                if tally.errors:
                    out.append(f"round {number_} Orthanc STOW c={concurrency}: {tally.errors}")
            for name, o in one.transfers.items():
                if o.unavailable:
                    continue
                complete = o.success == self.instances and o.found == self.instances
                if complete and not o.failure and not o.error:
                    continue
                out.append(
                    f"round {number_} {name}: {o.success:,} of {self.instances:,} counted a"
                    f" success, {o.failure:,} a failure; {o.found} found at the destination"
                    + (f"; {o.error}" if o.error else "")
                )
        return out


def _figure(row: Row) -> str:
    if row.note:
        return "-"
    low, high = number(row.low, row.unit), number(row.high, row.unit)
    return low if low == high else f"{low} to {high}"


def print_table(header: Sequence[str], rows: Sequence[Row], notes: Sequence[str]) -> None:
    for line in header:
        print(line)
    print(f"{'measurement':<64}{'unit':>8}{'value':>16}  target")
    for row in rows:
        target = f"{row.target} {'ok' if row.met else 'MISS'}" if row.target else row.note
        print(f"{row.measurement:<64}{row.unit:>8}{_figure(row):>16}  {target}".rstrip())
    for note in notes:
        print(f"note: {note}")
