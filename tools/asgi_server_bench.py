"""Compare the HTTP server under dicomstore's REST gateway: uvicorn (what `dicomstore serve` runs)
and granian (a Rust HTTP server for Python applications), on the same application.

    pip install granian   # not a dependency of dicomstore
    python tools/asgi_server_bench.py [--rounds 2] [--duration 4]

One child process runs one dicomstore `App` (SQLite, local blobs) and serves its ASGI
application twice, on two ports of the same event loop: through the App's own uvicorn, and
through granian's embedded server (`granian.server.embed`, one runtime thread). Everything
else is shared (catalog, blobs, gRPC), so the difference is the HTTP server's. The client
(`dicomstore_bench.load.drive`, one connection per loop) alternates between the two for each
workload, --rounds times: `GET /healthz` at concurrency 1, and STOW-RS of the 10 KB instance of
`dicomstore-dicomweb-bench`, one per request, at concurrency 1, 4 and 16. Printed: requests/s
and the child's CPU time per request, per round.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import httpx

from dicomstore_bench.corpus import Corpus, Template
from dicomstore_bench.load import Op, drive, stow_op
from dicomstore_bench.servers import Target, free_port

LOCATION = "v1/projects/bench/locations/local"
STORE = f"{LOCATION}/datasets/bench/dicomStores/bench"


async def _serve(data_dir: str, uvicorn_port: int, granian_port: int) -> None:
    """The child: one App, served by its uvicorn and by an embedded granian."""
    from granian.constants import Interfaces
    from granian.server.embed import Server

    from dicomstore.api.rest.forwarded import ForwardedOrigin
    from dicomstore.app import App
    from dicomstore.config import Settings

    settings = Settings(
        data_dir=Path(data_dir), http_port=uvicorn_port, grpc_port=0, log_level="warning"
    )
    app = App(settings)
    await app.start()
    assert app.http_app is not None
    granian = Server(
        ForwardedOrigin(app.http_app, settings.forwarded_allow_ips),
        address="127.0.0.1",
        port=granian_port,
        interface=Interfaces.ASGI,
        log_enabled=False,
        websockets=False,
    )
    serving = asyncio.create_task(granian.serve())
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    print("ready", flush=True)
    await stop.wait()
    granian.stop()  # type: ignore[no-untyped-call]
    await serving
    await app.stop()


def _healthz(url: str) -> Op:
    async def op(client: httpx.AsyncClient, k: int) -> tuple[int, int]:
        reply = await client.get(url)
        reply.raise_for_status()
        return 1, len(reply.content)

    return op


def _measure(roots: dict[str, str], pid: int, rounds: int, duration: float) -> None:
    template = Template("10 KB", 100, 100, 8)
    base = 10_000_000
    print(f"{'round':>5}  {'server':8} {'workload':18} {'req/s':>8} {'CPU ms/req':>11}")
    for round_ in range(1, rounds + 1):
        for name, root in roots.items():
            workloads: list[tuple[str, Op, int]] = [
                ("healthz c=1", _healthz(root.split("/v1/")[0] + "/healthz"), 1)
            ]
            for concurrency in (1, 4, 16):
                base += 1_000_000  # fresh UIDs for every run
                target = Target(name, root, pid, True, True, "")
                op = stow_op(target, template, Corpus(base, 3000))
                workloads.append((f"STOW 10 KB c={concurrency}", op, concurrency))
            for label, op, concurrency in workloads:
                tally = asyncio.run(drive(op, concurrency, duration=duration, server=pid))
                if tally.errors:
                    raise RuntimeError(f"{name} {label}: failed requests {tally.errors}")
                rate, cpu = tally.per_s, tally.server_ms_per_item
                print(f"{round_:>5}  {name:8} {label:18} {rate:8.0f} {cpu:11.2f}", flush=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--duration", type=float, default=4.0, help="seconds per timed run")
    parser.add_argument("--serve", nargs=3, help=argparse.SUPPRESS)  # the child process
    args = parser.parse_args()
    if args.serve:
        data_dir, uvicorn_port, granian_port = args.serve
        asyncio.run(_serve(data_dir, int(uvicorn_port), int(granian_port)))
        return 0
    if importlib.util.find_spec("granian") is None:
        print("granian is not installed: pip install granian", file=sys.stderr)
        return 2
    ports = {"uvicorn": free_port(), "granian": free_port()}
    with tempfile.TemporaryDirectory() as tmp:
        command = [sys.executable, __file__, "--serve", f"{tmp}/data", *map(str, ports.values())]
        child = subprocess.Popen(command, stdout=subprocess.PIPE)
        try:
            assert child.stdout is not None
            if child.stdout.readline().strip() != b"ready":
                print("the server did not start", file=sys.stderr)
                return 2
            base = f"http://127.0.0.1:{ports['uvicorn']}/{LOCATION}"
            httpx.post(f"{base}/datasets?datasetId=bench", json={}).raise_for_status()
            store = f"{base}/datasets/bench/dicomStores?dicomStoreId=bench"
            httpx.post(store, json={}).raise_for_status()
            roots = {
                name: f"http://127.0.0.1:{port}/{STORE}/dicomWeb" for name, port in ports.items()
            }
            _measure(roots, child.pid, args.rounds, args.duration)
        finally:
            child.send_signal(signal.SIGTERM)
            child.wait(30)
    return 0


if __name__ == "__main__":
    sys.exit(main())
