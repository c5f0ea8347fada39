"""One run of `dicomstore-pixel-bench`: the instances stored in every server over STOW-RS, each
request checked once (`pixel_checks.py`), then timed for --duration seconds after WARMUP_S of
warm-up, --repeat times; a server that died is started again, loaded, and its run run again.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import httpx

from dicomstore_bench.load import Tally, drive, post_instances, retrieve_op
from dicomstore_bench.pixel_checks import Unavailable, WrongAnswer, check
from dicomstore_bench.pixel_images import generate
from dicomstore_bench.pixel_report import Row, aim_rendered, scaling_rows, tally_rows
from dicomstore_bench.pixel_servers import how_ended
from dicomstore_bench.pixel_workloads import CASES, RENDERED, WORKLOADS, Case, url
from dicomstore_bench.servers import Target

REFUSED = "refused: "
#: Runs of a measurement in which the server died before it is given up.
ATTEMPTS = 3

Restart = Callable[[str], Target]


@dataclass(frozen=True)
class Settings:
    duration: float
    repeat: int
    workloads: tuple[str, ...] = WORKLOADS


@dataclass
class Chosen:
    """How a server is asked for a case, once its answer checked out."""

    accept: str
    answer: str
    refused: list[str] = field(default_factory=list)  # the accepts tried first, and why not
    least: int = 1  # a timed answer shorter than this is a failure: half the checked one's size


def phase(text: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True)


class Bench:
    """Verification, then the timed runs, of every case against every server. A server that
    dies is started again on fresh storage (`restart`) and loaded, its run counted as crashed
    and run once more."""

    def __init__(self, targets: list[Target], settings: Settings, restart: Restart) -> None:
        self.targets = {target.name: target for target in targets}
        self.settings = settings
        self.restart = restart
        self.cases = [c for c in CASES if c.workload in settings.workloads]
        self.images = generate()
        self.chosen: dict[tuple[str, str], Chosen] = {}  # (case, server) -> how
        self.missing: dict[str, str] = {}  # "case (server)" -> why
        self.problems: list[str] = []
        self.crashes: list[str] = []
        self.smallest: dict[tuple[str, str], int] = {}  # (case, server) -> checked answer size
        self.tallies: dict[tuple[str, int], dict[str, list[Tally]]] = {}

    async def load(self, target: Target) -> None:
        phase(f"storing {len(self.images)} instances in {target.name}")
        async with httpx.AsyncClient(timeout=60) as client:
            for image in self.images.values():
                await post_instances(client, target, [image.data])

    async def _died(self, name: str, doing: str) -> str | None:
        """None while server `name` runs; else how it ended, and it is started again."""
        how = how_ended(self.targets[name].pid)
        if how is None:
            return None
        self.crashes.append(f"{name} died ({how}) during {doing}; started again")
        phase(f"{name} died ({how}) during {doing}: starting it again")
        self.targets[name] = self.restart(name)
        await self.load(self.targets[name])
        return how

    async def verify(self) -> None:
        """Choose how each server is asked for each case: the first Accept it answers right."""
        async with httpx.AsyncClient(timeout=60) as client:
            for case, name in ((c, n) for c in self.cases for n in list(self.targets)):
                refused: list[str] = []
                for accept in case.accepts:
                    answer = await self._check(client, case, name, accept)
                    if answer.startswith(REFUSED):
                        refused.append(f"{accept}: {answer.removeprefix(REFUSED)}")
                        continue
                    least = self.smallest.pop((case.name, name), 2) // 2
                    self.chosen[(case.name, name)] = Chosen(accept, answer, refused, least)
                    break
                else:
                    self.missing[f"{case.name} ({name})"] = "; ".join(refused)

    async def _check(self, client: httpx.AsyncClient, case: Case, name: str, accept: str) -> str:
        """What the server answers to each of the case's URLs, checked; REFUSED and why when
        it answers an error status, the wrong thing, or dies ATTEMPTS times."""
        image = self.images[case.image]
        deaths: list[str] = []
        answer = ""
        for suffix in case.suffixes:
            while True:
                # the root again each time: a server started again has a new port
                asked = url(self.targets[name].root, image, suffix)
                try:
                    reply = await client.get(asked, headers={"Accept": accept})
                    answer = check(case, image, reply, accept)
                    key = (case.name, name)
                    self.smallest[key] = min(len(reply.content), self.smallest.get(key, 1 << 40))
                    break
                except (Unavailable, httpx.HTTPError) as exc:
                    died = await self._died(name, f"the check of {case.name}")
                    if died is None:
                        return REFUSED + (str(exc) or type(exc).__name__)
                    deaths.append(died)
                    if len(deaths) == ATTEMPTS:
                        return f"{REFUSED}the server died each time ({', '.join(deaths)})"
                except (WrongAnswer, ValueError, OSError) as exc:
                    self.problems.append(f"{case.name} ({name}) {accept}: {exc}")
                    return f"{REFUSED}wrong answer: {exc}"
        return answer

    async def measure(self) -> None:
        for case in self.cases:
            for concurrency in case.concurrency:
                runs = self.tallies.setdefault((case.name, concurrency), {})
                for name in list(self.targets):
                    how = self.chosen.get((case.name, name))
                    if how is not None:
                        tally = await self._timed(case, concurrency, name, how)
                        runs.setdefault(name, []).append(tally)

    async def _timed(self, case: Case, concurrency: int, name: str, how: Chosen) -> Tally:
        doing = f"{case.name} c={concurrency}"
        deaths: list[str] = []
        for _ in range(ATTEMPTS):
            phase(f"{doing} {name}")
            target = self.targets[name]
            op = retrieve_op(case.urls(target.root, self.images[case.image]), how.accept, how.least)
            tally = await drive(op, concurrency, duration=self.settings.duration, server=target.pid)
            died = await self._died(name, doing)
            if died is None:
                if deaths:
                    tally.errors[f"died ({', '.join(deaths)}); started and run again"] = 1
                return tally
            deaths.append(died)
        failed = Tally()
        failed.errors[f"died in each of {ATTEMPTS} runs ({', '.join(deaths)})"] = 1
        return failed

    async def run(self) -> None:
        for target in self.targets.values():
            await self.load(target)
        await self.verify()
        for number in range(self.settings.repeat):
            if self.settings.repeat > 1:
                phase(f"round {number + 1} of {self.settings.repeat}")
            await self.measure()

    def rows(self) -> list[Row]:
        out: list[Row] = []
        for case in self.cases:
            for concurrency in case.concurrency:
                tallies = self.tallies.get((case.name, concurrency), {})
                if not tallies:
                    continue
                rows = tally_rows(f"{case.name} c={concurrency}", case.per_s, tallies)
                out += rows
                if case is RENDERED:
                    aim_rendered(concurrency, rows)
            if case is RENDERED and len(case.concurrency) > 1:
                one, four = (self.tallies.get((case.name, c), {}) for c in (1, 4))
                out += scaling_rows(case.name, one, four)
        return out

    def notes(self) -> list[str]:
        out = []
        for case in self.cases:
            for name in self.targets:
                how = self.chosen.get((case.name, name))
                if how is None:
                    continue
                line = f"{case.name} ({name}): Accept {how.accept} -> {how.answer}"
                if how.refused:
                    line += f" (first refused: {'; '.join(how.refused)})"
                out.append(line)
        return out + self.crashes
