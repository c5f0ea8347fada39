"""`dicomstore-crash-trials`: `kill -9` a real `dicomstore serve` at random moments, then check.

One server process runs on a data directory of its own. Each trial puts it under load, kills it
with SIGKILL after a random delay, starts it again on the same data directory and checks what a
client may rely on (docs/reliability.md, "Crash safety"):

- **stow** trials: `--clients` concurrent clients, each sending single-part `application/dicom`
  instances or `multipart/related` bodies of 2 to 12 instances (now and then 80, more than the
  server records in one go), streamed in chunks so that a kill lands mid-body; about one instance
  in ten is ~0.3 MB, the others ~10 KB.
- **delete** trials: a study of `--delete-study-instances` instances is stored (acknowledged),
  then `DELETE .../studies/UID` starts its operation, which the client polls, while the stow
  clients go on; the kill falls before the DELETE is answered, while its operation runs, or after.

Every request ends in one of three states: acknowledged (a 200 answer naming the instance in its
ReferencedSOPSequence), refused (any other answer), or in doubt (no answer: the kill came first).
After the restart the checks are:

1. every acknowledged instance reads back through WADO-RS byte-identical (`lost`, `corrupt`);
2. nothing is visible to QIDO-RS that was not acknowledged or in doubt (`phantom`), an in-doubt
   instance that is visible is byte-identical (`corrupt`), and an in-doubt multipart request is
   visible whole or not at all (`partial-request`);
3. a delete whose operation was returned still has that operation, which ends without error
   (`operation`), after which the study is gone for good; a study whose DELETE was in doubt is
   either gone or whole and takes new instances again (`stuck-deleting`);
4. once every operation is done, every file under `DATA_DIR/blobs` is a complete instance blob
   of a visible catalog row and every row has its blob, of its recorded size (`orphan-blob`,
   `missing-blob`); no partial file or folder remains (`temp-file`); the catalog passes
   `PRAGMA integrity_check` and `PRAGMA foreign_key_check` and holds no invisible rows, empty
   studies or series, or studies marked deleting (`catalog`);
5. the server restarts within 60 s and answers every check without a 5xx (`server`).

What was in doubt is then settled (present or gone for good) and the next trial begins on the same
data, so checks cover every instance acknowledged since the directory was made (a fresh directory
every `--fresh-every` trials, 20 by default, keeps a check's cost bounded). The summary gives the
trials, the kills per phase, the instances checked, the violations by kind, and the elapsed time;
the exit status is 1 on any violation, 2 when the trials could not run.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import json
import random
import shutil
import sqlite3
import sys
import tempfile
import time
from collections import Counter
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from dicomstore_bench.corpus import Ids, Template
from dicomstore_bench.servers import ServeProcess, run_async

DATASET = "projects/crash/locations/local/datasets/crash"
STORE = f"{DATASET}/dicomStores/crash"
BOUNDARY = "dicomstore-crash-trials-boundary"
DICOM = "application/dicom"
MULTIPART = f'multipart/related; type="application/dicom"; boundary={BOUNDARY}'
RETRIEVE = "application/dicom; transfer-syntax=*"
OPERATION_TIMEOUT_S = 60.0
CHUNK = 16 * 1024
VIOLATION_KINDS = (
    "lost",
    "corrupt",
    "phantom",
    "partial-request",
    "operation",
    "stuck-deleting",
    "orphan-blob",
    "missing-blob",
    "temp-file",
    "catalog",
    "server",
)


@dataclass(frozen=True)
class Sent:
    """One instance as a client sent it."""

    study: str
    series: str
    sop: str
    digest: str
    size: int


@dataclass
class Request:
    """One STOW request and what its client learnt of it."""

    kind: str  # "single" or "multipart"
    instances: list[Sent]
    state: str = "unsent"  # unsent -> in-flight -> acknowledged | refused
    acknowledged: set[str] = field(default_factory=set)


@dataclass
class Delete:
    """One study delete and what its client learnt of it."""

    study: str
    sops: list[str]
    state: str = "unsent"  # unsent -> in-flight -> acknowledged -> done | refused
    operation: str = ""


@dataclass
class Violation:
    kind: str
    trial: int
    detail: str


@dataclass
class Tally:
    """What the trials did and found, for the summary."""

    trials: int = 0
    kills: Counter[str] = field(default_factory=Counter)
    requests: Counter[str] = field(default_factory=Counter)
    acknowledged_checked: int = 0
    in_doubt_present: int = 0
    in_doubt_absent: int = 0
    deletes: Counter[str] = field(default_factory=Counter)
    restart_s: list[float] = field(default_factory=list)
    violations: list[Violation] = field(default_factory=list)

    def violate(self, kind: str, trial: int, detail: str) -> None:
        self.violations.append(Violation(kind, trial, detail))


class Corpus:
    """Distinct instances: each has a new SOP Instance UID; studies are numbered on."""

    def __init__(self, rng: random.Random, large_fraction: float) -> None:
        self.rng = rng
        self.large_fraction = large_fraction
        self.small = Template("10 KB", 100, 100, 8)
        self.large = Template("0.3 MB", 384, 384, 16)
        self.next_study = rng.randrange(10**6) * 100
        self.data: dict[str, bytes] = {}  # sop -> bytes, while its fate is unknown

    def study(self) -> int:
        self.next_study += 1
        return self.next_study

    def instance(self, study: int, series: int, number: int, *, small: bool = False) -> Sent:
        template = self.small
        if not small and self.rng.random() < self.large_fraction:
            template = self.large
        ids = Ids(study, series, number, study % 10**9, "20240102", "OT")
        data = template.render(ids)
        self.data[ids.sop_uid] = data
        return Sent(ids.study_uid, ids.series_uid, ids.sop_uid, _digest(data), len(data))


def _digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def multipart_chunks(parts: Sequence[bytes]) -> list[bytes]:
    """A `multipart/related; type="application/dicom"` body cut into CHUNK-sized pieces."""
    head = f"--{BOUNDARY}\r\nContent-Type: {DICOM}\r\n\r\n".encode()
    body = b"".join(head + part + b"\r\n" for part in parts) + f"--{BOUNDARY}--\r\n".encode()
    return [body[at : at + CHUNK] for at in range(0, len(body), CHUNK)]


async def _paced(chunks: Sequence[bytes], rng: random.Random) -> AsyncIterator[bytes]:
    for chunk in chunks:
        yield chunk
        if rng.random() < 0.2:
            await asyncio.sleep(rng.random() * 0.01)


def referenced(answer: httpx.Response) -> set[str]:
    """SOP Instance UIDs of a STOW-RS JSON answer's ReferencedSOPSequence."""
    if answer.status_code != 200:
        return set()
    items = answer.json().get("00081199", {}).get("Value", [])
    return {item["00081155"]["Value"][0] for item in items}


class Trials:
    """The trials on one server and what the clients know; `tally` is the running summary."""

    def __init__(self, args: argparse.Namespace, work: Path, tally: Tally) -> None:
        self.args = args
        self.work = work
        self.rng = random.Random(args.seed)
        self.corpus = Corpus(self.rng, args.large_fraction)
        self.tally = tally
        self.server: ServeProcess | None = None
        self.generation = 0
        self.killed = False
        self.expected: dict[str, Sent] = {}  # sop -> instance surely present
        self.gone: set[str] = set()  # sops that must never be visible again
        self.studies: dict[str, list[str]] = {}  # study -> sops in `expected`

    @property
    def web(self) -> str:
        assert self.server is not None
        return f"{self.server.base}/v1/{STORE}/dicomWeb"

    # Set-up

    async def fresh_server(self) -> None:
        if self.server is not None:
            await self.server.stop()
        self.generation += 1
        data_dir = self.work / f"data-{self.generation}"
        if self.generation > 1 and not self.args.keep:
            shutil.rmtree(self.work / f"data-{self.generation - 1}", ignore_errors=True)
        self.server = ServeProcess(data_dir, self.work / "server.log", self.args.server_arg)
        await self.server.start()
        self.expected.clear()
        self.gone.clear()
        self.studies.clear()
        async with httpx.AsyncClient(base_url=self.server.base, timeout=30) as client:
            for path in (
                "/v1/projects/crash/locations/local/datasets?datasetId=crash",
                f"/v1/{DATASET}/dicomStores?dicomStoreId=crash",
            ):
                (await client.post(path, json={})).raise_for_status()

    def _expect(self, sent: Sent) -> None:
        self.expected[sent.sop] = sent
        self.studies.setdefault(sent.study, []).append(sent.sop)
        self.corpus.data.pop(sent.sop, None)

    # Load

    async def stow(self, client: httpx.AsyncClient, request: Request) -> None:
        parts = [self.corpus.data[s.sop] for s in request.instances]
        if request.kind == "single":
            content: Any = parts[0]
            headers = {"Content-Type": DICOM, "Accept": "application/dicom+json"}
        else:
            content = _paced(multipart_chunks(parts), self.rng)
            headers = {"Content-Type": MULTIPART, "Accept": "application/dicom+json"}
        request.state = "in-flight"
        answer = await client.post("/studies", content=content, headers=headers)
        request.acknowledged = referenced(answer)
        request.state = "acknowledged" if request.acknowledged else "refused"
        if answer.status_code >= 500:
            self.tally.violate("server", self.tally.trials, f"STOW answered {answer.status_code}")

    async def stow_client(self, index: int, requests: list[Request]) -> None:
        assert self.server is not None
        multipart = index % 2 == 1
        study = self.corpus.study()
        number = 0
        async with httpx.AsyncClient(base_url=self.web, timeout=60) as client:
            while True:
                if multipart:
                    count = 80 if self.rng.random() < 0.05 else self.rng.randint(2, 12)
                    study = self.corpus.study()
                    sent = [self.corpus.instance(study, n // 6, n) for n in range(count)]
                    request = Request("multipart", sent)
                else:
                    number += 1
                    request = Request("single", [self.corpus.instance(study, 0, number)])
                requests.append(request)
                try:
                    await self.stow(client, request)
                except Exception as exc:
                    self._client_error(exc)
                    return  # the kill: this request stays in flight

    async def delete_client(self, delete: Delete, start_after: float) -> None:
        assert self.server is not None
        await asyncio.sleep(start_after)
        async with httpx.AsyncClient(base_url=self.server.base, timeout=60) as client:
            delete.state = "in-flight"
            try:
                answer = await client.delete(f"/v1/{STORE}/dicomWeb/studies/{delete.study}")
                if answer.status_code != 200:
                    delete.state = "refused"
                    kind = "server" if answer.status_code >= 500 else "operation"
                    self.tally.violate(
                        kind, self.tally.trials, f"DELETE answered {answer.status_code}"
                    )
                    return
                delete.operation = answer.json()["name"]
                delete.state = "acknowledged"
                while True:
                    polled = await client.get(f"/v1/{delete.operation}")
                    if polled.status_code == 200 and polled.json().get("done"):
                        delete.state = "done"
                        return
                    await asyncio.sleep(0.02)
            except Exception as exc:
                self._client_error(exc)

    def _client_error(self, exc: Exception) -> None:
        """A request that failed without an answer: the kill's doing, unless it came first.

        Connections cut by the kill fail in several ways (httpx transport errors, and an
        AttributeError from anyio when the socket goes away as the connection is set up).
        """
        if not self.killed:
            self.tally.violate(
                "server", self.tally.trials, f"request failed before the kill: {exc!r}"
            )

    async def prepare_delete(self) -> Delete:
        """A study of `--delete-study-instances` instances, stored and acknowledged."""
        assert self.server is not None
        study = self.corpus.study()
        count = self.args.delete_study_instances
        sent = [self.corpus.instance(study, n // 50, n, small=True) for n in range(count)]
        request = Request("multipart", sent)
        async with httpx.AsyncClient(base_url=self.web, timeout=120) as client:
            await self.stow(client, request)
        if request.acknowledged != {s.sop for s in sent}:
            raise RuntimeError(f"storing the study to delete failed ({request.state})")
        for s in sent:
            self._expect(s)
        return Delete(sent[0].study, [s.sop for s in sent])

    async def trial(self) -> None:
        assert self.server is not None
        trial = self.tally.trials
        self.killed = False
        deleting = self.rng.random() < self.args.delete_fraction
        delete = await self.prepare_delete() if deleting else None
        requests: list[Request] = []
        tasks = [
            asyncio.create_task(self.stow_client(i, requests)) for i in range(self.args.clients)
        ]
        if delete is not None:
            tasks.append(asyncio.create_task(self.delete_client(delete, self.rng.random() * 0.2)))
        await asyncio.sleep(self.rng.random() * self.args.max_delay)
        phase = self._phase(requests, delete)
        self.killed = True
        self.server.kill()
        await asyncio.gather(*tasks)
        await self.server.wait()
        for name in phase:
            self.tally.kills[name] += 1
        try:
            restart = await self.server.start()
        except RuntimeError as exc:
            self.tally.violate("server", trial, f"restart failed: {exc}")
            raise
        self.tally.restart_s.append(restart)
        began = time.monotonic()
        known = len(self.tally.violations)
        await self.check(trial, requests, delete)
        if self.args.verbose:
            for violation in self.tally.violations[known:]:
                print(f"trial {trial}: {violation.kind}: {violation.detail}", file=sys.stderr)
            print(
                f"trial {trial}: killed during {', '.join(phase)}; restart {restart:.2f} s,"
                f" check {time.monotonic() - began:.2f} s, {len(self.expected)} instances"
                f" expected, {len(self.tally.violations)} violations so far",
                file=sys.stderr,
            )

    @staticmethod
    def _phase(requests: Sequence[Request], delete: Delete | None) -> list[str]:
        """What was going on at the kill: in-flight STOW kinds and the delete's progress."""
        phase = sorted({f"stow-{r.kind}" for r in requests if r.state == "in-flight"})
        if delete is not None:
            phase.append(
                {
                    "unsent": "delete-not-sent",
                    "in-flight": "delete-unacknowledged",
                    "acknowledged": "delete-running",
                    "done": "delete-done",
                    "refused": "delete-refused",
                }[delete.state]
            )
        return phase or ["idle"]

    # Checks

    async def check(self, trial: int, requests: Sequence[Request], delete: Delete | None) -> None:
        assert self.server is not None
        async with httpx.AsyncClient(base_url=self.server.base, timeout=60) as client:
            await self._settle_operations(client, trial, delete)
            visible = await self._visible(client, trial)
            in_doubt = self._settle_requests(trial, requests, visible)
            if delete is not None:
                self._check_delete(trial, delete, visible)
            for sop in sorted(visible - self.expected.keys() - in_doubt.keys()):
                why = "was deleted or refused" if sop in self.gone else "was never acknowledged"
                self.tally.violate("phantom", trial, f"instance {sop} is visible but {why}")
            for sop in self.expected.keys() - visible:
                self.tally.violate("lost", trial, f"acknowledged instance {sop} is not visible")
            await self._read_back(client, trial, self.expected.values(), acknowledged=True)
            await self._read_back(client, trial, in_doubt.values(), acknowledged=False)
            for sent in in_doubt.values():
                self._expect(sent)
            if delete is not None:
                await self._probe(client, trial, delete)
        self.corpus.data.clear()
        self._check_files(trial)

    def _settle_requests(
        self, trial: int, requests: Sequence[Request], visible: set[str]
    ) -> dict[str, Sent]:
        """Sort the trial's instances into expected and gone; return the in-doubt visible ones."""
        in_doubt: dict[str, Sent] = {}
        for request in requests:
            self.tally.requests[f"{request.kind} {request.state}"] += 1
            if request.state == "acknowledged":
                for sent in request.instances:
                    if sent.sop in request.acknowledged:
                        self._expect(sent)
                    else:
                        self.gone.add(sent.sop)
                continue
            shown = [s for s in request.instances if s.sop in visible]
            if request.state != "in-flight":  # refused, or never sent
                self.gone.update(s.sop for s in request.instances)
                continue
            if request.kind == "multipart" and 0 < len(shown) < len(request.instances):
                self.tally.violate(
                    "partial-request",
                    trial,
                    f"{len(shown)} of the {len(request.instances)} instances of an"
                    " unanswered multipart request are visible",
                )
            in_doubt.update((s.sop, s) for s in shown)
            self.gone.update(s.sop for s in request.instances if s.sop not in visible)
            self.tally.in_doubt_present += len(shown)
            self.tally.in_doubt_absent += len(request.instances) - len(shown)
        return in_doubt

    async def _settle_operations(
        self, client: httpx.AsyncClient, trial: int, delete: Delete | None
    ) -> None:
        """Wait until every operation is done; an acknowledged one must exist and succeed."""
        names = [delete.operation] if delete is not None and delete.operation else []
        deadline = time.monotonic() + OPERATION_TIMEOUT_S
        while True:
            listed = await client.get(f"/v1/{DATASET}/operations", params={"filter": "done=false"})
            if listed.status_code != 200:
                self.tally.violate("server", trial, f"ListOperations {listed.status_code}")
                return
            if not listed.json().get("operations"):
                break
            if time.monotonic() > deadline:
                self.tally.violate("operation", trial, "operations still running after 60 s")
                return
            await asyncio.sleep(0.05)
        for name in names:
            got = await client.get(f"/v1/{name}")
            if got.status_code != 200:
                self.tally.violate(
                    "operation", trial, f"acknowledged {name} answers {got.status_code}"
                )
            elif not got.json().get("done") or "error" in got.json():
                self.tally.violate("operation", trial, f"{name} ended {got.json()}")

    async def _visible(self, client: httpx.AsyncClient, trial: int) -> set[str]:
        """SOP Instance UIDs QIDO-RS finds in the store."""
        found: set[str] = set()
        while True:
            page = await client.get(
                f"/v1/{STORE}/dicomWeb/instances",
                params={"limit": "5000", "offset": str(len(found))},
            )
            if page.status_code == 204:
                return found
            if page.status_code != 200:
                self.tally.violate("server", trial, f"QIDO answered {page.status_code}")
                return found
            items = page.json()
            found.update(item["00080018"]["Value"][0] for item in items)
            if len(items) < 5000:
                return found

    def _check_delete(self, trial: int, delete: Delete, visible: set[str]) -> None:
        """A delete that was recorded (its operation is done by now) left nothing behind.

        An acknowledged delete was recorded; an unanswered one was if any instance is gone.
        One that was not recorded leaves the study whole (the `lost` check sees to that).
        """
        shown = [sop for sop in delete.sops if sop in visible]
        self.tally.deletes[delete.state] += 1
        recorded = delete.state in ("acknowledged", "done") or (
            delete.state == "in-flight" and len(shown) < len(delete.sops)
        )
        if not recorded:
            return
        if shown:
            self.tally.violate(
                "phantom" if delete.state == "done" else "operation",
                trial,
                f"{len(shown)} instances of study {delete.study} remain after its delete",
            )
            visible.difference_update(shown)  # counted once, here
        self._forget_study(delete.study)

    async def _probe(self, client: httpx.AsyncClient, trial: int, delete: Delete) -> None:
        """A study that survived its delete must take new instances again."""
        if delete.study not in self.studies:
            return
        number = int(delete.study.rsplit(".", 1)[1]) - 10**9
        probe = self.corpus.instance(number, 999, 999_999, small=True)
        answer = await client.post(
            f"/v1/{STORE}/dicomWeb/studies",
            content=self.corpus.data[probe.sop],
            headers={"Content-Type": DICOM, "Accept": "application/dicom+json"},
        )
        if probe.sop in referenced(answer):
            self._expect(probe)
            await self._read_back(client, trial, [probe], acknowledged=True)
        else:
            self.gone.add(probe.sop)
            self.tally.violate(
                "stuck-deleting",
                trial,
                f"study {delete.study} survived its delete but refuses new instances:"
                f" {answer.status_code} {answer.text[:200]}",
            )

    def _forget_study(self, study: str) -> None:
        for sop in self.studies.pop(study, []):
            self.expected.pop(sop, None)
            self.gone.add(sop)

    async def _read_back(
        self, client: httpx.AsyncClient, trial: int, instances: Any, *, acknowledged: bool
    ) -> None:
        """WADO-RS each instance; its bytes must be those sent."""
        queue = list(instances)

        async def reader() -> None:
            while queue:
                sent = queue.pop()
                url = f"/v1/{STORE}/dicomWeb/studies/{sent.study}/series/{sent.series}"
                got = await client.get(f"{url}/instances/{sent.sop}", headers={"Accept": RETRIEVE})
                if got.status_code == 404:
                    self.tally.violate("lost", trial, f"instance {sent.sop} is not readable")
                elif got.status_code != 200:
                    kind = "server" if got.status_code >= 500 else "lost"
                    self.tally.violate(kind, trial, f"WADO {sent.sop}: {got.status_code}")
                elif _digest(got.content) != sent.digest:
                    self.tally.violate(
                        "corrupt",
                        trial,
                        f"instance {sent.sop} reads back {len(got.content)} bytes that differ"
                        f" from the {sent.size} sent",
                    )
                elif acknowledged:
                    self.tally.acknowledged_checked += 1

        await asyncio.gather(*(reader() for _ in range(8)))

    def _check_files(self, trial: int) -> None:
        assert self.server is not None
        for kind, detail in check_data_dir(self.server.data_dir):
            self.tally.violate(kind, trial, detail)


def check_data_dir(data_dir: Path) -> list[tuple[str, str]]:
    """(kind, detail) for each way the blobs and the catalog of an idle server disagree.

    The server must be idle (no request in flight, no operation running): then every file
    under `blobs/` is `STORE/XX/ID.dcm` of a visible instance row of that store, of the size
    the row records, and the catalog is sound.
    """
    uri = f"file:{data_dir / 'catalog.sqlite'}?mode=ro"
    with contextlib.closing(sqlite3.connect(uri, uri=True)) as db:
        found = _check_catalog(db)
        rows = {
            (int(store), int(key)): int(size)
            for key, store, size in db.execute("SELECT id, store_key, blob_size FROM instances")
        }
    return found + _check_blobs(data_dir / "blobs", rows)


_CATALOG_CHECKS = {
    "invisible instance rows": "SELECT count(*) FROM instances WHERE state <> 1",
    "series without instances": "SELECT count(*) FROM series se WHERE NOT EXISTS"
    " (SELECT 1 FROM instances i WHERE i.series_key = se.id)",
    "studies without series": "SELECT count(*) FROM studies st WHERE NOT EXISTS"
    " (SELECT 1 FROM series se WHERE se.study_key = st.id)",
    "studies or series marked deleting": "SELECT (SELECT count(*) FROM studies WHERE deleting)"
    " + (SELECT count(*) FROM series WHERE deleting)",
}


def _check_catalog(db: sqlite3.Connection) -> list[tuple[str, str]]:
    found: list[tuple[str, str]] = []
    integrity = [row[0] for row in db.execute("PRAGMA integrity_check")]
    if integrity != ["ok"]:
        found.append(("catalog", f"integrity_check: {integrity[:5]}"))
    broken = db.execute("PRAGMA foreign_key_check").fetchall()
    if broken:
        found.append(("catalog", f"foreign_key_check: {broken[:5]}"))
    for what, sql in _CATALOG_CHECKS.items():
        count = db.execute(sql).fetchone()[0]
        if count:
            found.append(("catalog", f"{count} {what} after recovery"))
    return found


def _check_blobs(blobs: Path, rows: dict[tuple[int, int], int]) -> list[tuple[str, str]]:
    """Files under `blobs` against the instance rows, (store key, instance key) -> blob size."""
    found: list[tuple[str, str]] = []
    seen: set[tuple[int, int]] = set()
    for path in sorted(blobs.rglob("*")):
        parts = path.relative_to(blobs).parts
        name = "blobs/" + "/".join(parts)
        if path.is_dir():
            shard = parts[1] if len(parts) == 2 else "00"
            if not parts[0].isdigit() or len(parts) > 2 or len(shard) != 2:
                found.append(("temp-file", f"unexpected folder {name}"))
            continue
        stem = path.name.removesuffix(".dcm")
        if len(parts) != 3 or stem == path.name or not stem.isdigit() or not parts[0].isdigit():
            found.append(("temp-file", f"unexpected file {name}"))
            continue
        key = (int(parts[0]), int(stem))
        seen.add(key)
        size = path.stat().st_size
        if parts[1] != f"{key[1] % 256:02x}":
            found.append(("orphan-blob", f"{name} is in the wrong folder"))
        elif key not in rows:
            found.append(("orphan-blob", f"{name} has no catalog row"))
        elif rows[key] != size:
            found.append(("missing-blob", f"{name} has {size} bytes, its row says {rows[key]}"))
    for store, instance in sorted(rows.keys() - seen):
        found.append(("missing-blob", f"instance row {instance} of store {store} has no blob"))
    return found


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="dicomstore-crash-trials",
        description="kill -9 a dicomstore server at random moments of STOW and study delete,"
        " restart it, and check that nothing acknowledged is lost and nothing else remains",
    )
    parser.add_argument("--trials", type=int, default=100, help="kills (default 100)")
    parser.add_argument(
        "--clients",
        type=int,
        default=4,
        help="concurrent STOW clients, half single-part and half multipart (default 4)",
    )
    parser.add_argument(
        "--max-delay",
        type=float,
        default=1.5,
        help="the kill comes after a random delay of up to this many seconds (default 1.5)",
    )
    parser.add_argument(
        "--delete-fraction",
        type=float,
        default=0.4,
        help="share of trials that also delete a study (default 0.4)",
    )
    parser.add_argument(
        "--delete-study-instances",
        type=int,
        default=60,
        help="instances of the study a delete trial deletes (default 60)",
    )
    parser.add_argument(
        "--large-fraction",
        type=float,
        default=0.1,
        help="share of ~0.3 MB instances, the others ~10 KB (default 0.1)",
    )
    parser.add_argument(
        "--fresh-every",
        type=int,
        default=20,
        help="a new data directory every this many trials (default 20)",
    )
    parser.add_argument("--seed", type=int, default=None, help="random seed (default: random)")
    parser.add_argument(
        "--work-dir",
        type=Path,
        default=None,
        help="where data directories and the server log go (default: a"
        " temporary directory, removed unless a violation was found)",
    )
    parser.add_argument("--keep", action="store_true", help="keep every data directory")
    parser.add_argument(
        "--server-arg",
        action="append",
        default=[],
        help="an extra `dicomstore serve` argument (repeatable)",
    )
    parser.add_argument("--json", action="store_true", help="print the summary as JSON")
    parser.add_argument("--verbose", action="store_true", help="a line per trial on stderr")
    return parser


def summary(tally: Tally, elapsed: float, args: argparse.Namespace) -> dict[str, Any]:
    by_kind = Counter(v.kind for v in tally.violations)
    restarts = sorted(tally.restart_s)
    return {
        "trials": tally.trials,
        "seed": args.seed,
        "settings": {
            "clients": args.clients,
            "max_delay_s": args.max_delay,
            "delete_fraction": args.delete_fraction,
            "delete_study_instances": args.delete_study_instances,
            "large_fraction": args.large_fraction,
            "fresh_every": args.fresh_every,
        },
        "kills_by_phase": dict(sorted(tally.kills.items())),
        "requests": dict(sorted(tally.requests.items())),
        "deletes": dict(sorted(tally.deletes.items())),
        "acknowledged_instances_checked": tally.acknowledged_checked,
        "in_doubt_instances": {"present": tally.in_doubt_present, "absent": tally.in_doubt_absent},
        "restart_s": {
            "median": restarts[len(restarts) // 2] if restarts else None,
            "max": restarts[-1] if restarts else None,
        },
        "violations": {kind: by_kind.get(kind, 0) for kind in VIOLATION_KINDS},
        "violation_details": [
            {"kind": v.kind, "trial": v.trial, "detail": v.detail} for v in tally.violations[:50]
        ],
        "elapsed_s": round(elapsed, 1),
    }


def _print_text(report: dict[str, Any]) -> None:
    print(f"trials: {report['trials']} (seed {report['seed']}), elapsed {report['elapsed_s']} s")
    print("kills by phase (a kill may fall in several):")
    for phase, count in report["kills_by_phase"].items():
        print(f"  {phase:<24} {count:>6}")
    print("STOW requests by outcome:")
    for outcome, count in report["requests"].items():
        print(f"  {outcome:<24} {count:>6}")
    print(f"study deletes by state at the kill: {report['deletes']}")
    print(
        f"acknowledged instances checked byte-identical: {report['acknowledged_instances_checked']}"
    )
    doubt = report["in_doubt_instances"]
    print(f"in-doubt instances: {doubt['present']} present, {doubt['absent']} absent")
    restart = report["restart_s"]
    if restart["median"] is not None:
        print(f"restart to /healthz: median {restart['median']:.2f} s, max {restart['max']:.2f} s")
    total = sum(report["violations"].values())
    print(f"violations: {total}")
    for kind, count in report["violations"].items():
        print(f"  {kind:<24} {count:>6}")
    for item in report["violation_details"]:
        print(f"  trial {item['trial']}: {item['kind']}: {item['detail']}")


async def run(args: argparse.Namespace, work: Path, tally: Tally) -> None:
    """Run `args.trials` trials in `work`, counting into `tally`."""
    trials = Trials(args, work, tally)
    try:
        for n in range(args.trials):
            if n % max(args.fresh_every, 1) == 0:
                await trials.fresh_server()
            await trials.trial()
            trials.tally.trials += 1
    finally:
        if trials.server is not None:
            await trials.server.stop()


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.seed is None:
        args.seed = random.randrange(2**32)
    began = time.monotonic()
    work = args.work_dir or Path(tempfile.mkdtemp(prefix="dicomstore-crash-trials-"))
    work.mkdir(parents=True, exist_ok=True)
    tally = Tally()
    failed = ""
    try:
        run_async(run(args, work, tally))
    except (RuntimeError, OSError, httpx.HTTPError) as exc:
        failed = f"dicomstore-crash-trials: {exc} (server log: {work / 'server.log'})"
    report = summary(tally, time.monotonic() - began, args)
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        _print_text(report)
    if failed:
        print(failed, file=sys.stderr)
        return 2
    if tally.violations:
        print(f"violations found; data and server log kept in {work}", file=sys.stderr)
        return 1
    if args.work_dir is None and not args.keep:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
