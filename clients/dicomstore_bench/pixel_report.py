"""The rows of `dicomstore-pixel-bench`: each figure per server over the rounds (min to max), the
ratio dicomstore / Orthanc round by round, and the issue's target beside it."""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from dicomstore_bench.load import Tally

OURS, THEIRS = "dicomstore", "orthanc"
RENDERED_P50_MS = 30.0
#: Throughput at c=4 over c=1 per core the server can use, at least.
SCALING_PER_CORE = 0.75


@dataclass
class Row:
    measurement: str
    unit: str
    values: dict[str, list[float]]  # server -> one value per round
    errors: dict[str, dict[str, int]] = field(default_factory=dict)
    target: str = ""
    met: bool | None = None

    @property
    def ratios(self) -> list[float]:
        """dicomstore / Orthanc, round by round."""
        ours, theirs = self.values.get(OURS, []), self.values.get(THEIRS, [])
        if not ours or not theirs:
            return []
        return [a / b if b else math.nan for a, b in zip(ours, theirs, strict=True)]

    def aim(self, target: str, met: Callable[[float], bool], values: Sequence[float]) -> Row:
        """The target, met when every round's value meets it."""
        self.target = target
        self.met = bool(values) and all(not math.isnan(v) and met(v) for v in values)
        return self


def tally_rows(measurement: str, per_s: str, tallies: Mapping[str, Sequence[Tally]]) -> list[Row]:
    """p50, p99, throughput (`per_s` its unit) and the server's CPU per request, with the errors
    of every round under the first row."""
    errors: dict[str, dict[str, int]] = {}
    for server, rounds in tallies.items():
        for tally in rounds:
            for reason, n in tally.errors.items():
                errors.setdefault(server, {})[reason] = errors.get(server, {}).get(reason, 0) + n

    def row(unit: str, value: Callable[[Tally], float]) -> Row:
        return Row(measurement, unit, {s: [value(t) for t in ts] for s, ts in tallies.items()})

    rows = [
        row("p50 ms", lambda t: t.percentile_ms(0.5)),
        row("p99 ms", lambda t: t.percentile_ms(0.99)),
        row(per_s, lambda t: t.per_s),
        row("CPU ms/req", lambda t: t.server_ms_per_item),
    ]
    rows[0].errors = errors
    return rows


def aim_rendered(concurrency: int, rows: Sequence[Row]) -> None:
    """The issue's targets on the rows of `tally_rows` for `/rendered`: p50 at c=1 below
    RENDERED_P50_MS, throughput at c=4 at least Orthanc's."""
    p50, rate = rows[0], rows[2]
    if concurrency == 1 and OURS in p50.values:
        target = f"< {RENDERED_P50_MS:g} ms"
        p50.aim(target, lambda v: v < RENDERED_P50_MS, p50.values[OURS])
    if concurrency == 4 and OURS in rate.values and THEIRS in rate.values:
        rate.aim(">= orthanc", lambda v: v >= 1, rate.ratios)


def scaling_rows(
    measurement: str, one: Mapping[str, Sequence[Tally]], four: Mapping[str, Sequence[Tally]]
) -> list[Row]:
    """Throughput at c=4 over c=1, round by round, for the servers measured at both; the target
    is SCALING_PER_CORE per core this process may use, up to 4."""
    values = {
        server: [b.per_s / a.per_s for a, b in zip(one[server], four[server], strict=True)]
        for server in one
        if server in four
    }
    if not values:
        return []
    row = Row(f"{measurement} c=4 / c=1", "x req/s", values)
    floor = SCALING_PER_CORE * min(4, len(os.sched_getaffinity(0)))
    if OURS in values:
        row.aim(f">= {floor:.1f}x", lambda v: v >= floor, values[OURS])
    return [row]


def _number(value: float) -> str:
    if value >= 100:
        return f"{value:,.0f}"
    return f"{value:.1f}" if value >= 10 else f"{value:.2f}"


def _range(values: Sequence[float]) -> str:
    """min-max of the rounds that have a figure (a round whose server died has none)."""
    if not values:
        return "-"
    finite = [v for v in values if not math.isnan(v)]
    if not finite:
        return "n/a"
    low, high = _number(min(finite)), _number(max(finite))
    return low if low == high else f"{low}-{high}"


def print_table(
    header: Sequence[str], rows: Sequence[Row], missing: Mapping[str, str], notes: Sequence[str]
) -> None:
    """The figures, then what a server could not do (`missing`: "measurement server" ->
    reason), then the notes."""
    for line in header:
        print(line)
    print(f"{'measurement':<46}{'unit':>11}{'dicomstore':>15}{'orthanc':>15}{'ratio':>12}  target")
    for row in rows:
        ratio = _range(row.ratios).replace("n/a", "-")
        target = f"{row.target} {'ok' if row.met else 'MISS'}" if row.target else ""
        print(
            f"{row.measurement:<46}{row.unit:>11}{_range(row.values.get(OURS, [])):>15}"
            f"{_range(row.values.get(THEIRS, [])):>15}{ratio:>12}  {target}".rstrip()
        )
        for server, errors in row.errors.items():
            print(f"{'':<6}errors {server}: {errors}")
    for what, reason in missing.items():
        print(f"not available: {what}: {reason}")
    for note in notes:
        print(f"note: {note}")
