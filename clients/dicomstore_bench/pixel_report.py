"""The rows of `dicomstore-pixel-bench`: each figure per server over the rounds (min to max), the
ratio dicomstore / Orthanc round by round, and the issue's target beside it."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from dicomstore_bench.load import Tally

OURS, THEIRS = "dicomstore", "orthanc"


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


def tally_rows(
    measurement: str, per_s: str, tallies: Mapping[str, Sequence[Tally]], *, latency: bool = True
) -> list[Row]:
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
    ]
    if not latency:
        rows = []
    rows += [row(per_s, lambda t: t.per_s), row("CPU ms/req", lambda t: t.server_ms_per_item)]
    rows[0].errors = errors
    return rows


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
