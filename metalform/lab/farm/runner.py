"""Running a farm: in a background thread (tests) or as its own process (benchmarks).

A benchmark runs the farm in a process of its own so that the BMCs' CPU is not the client's;
the process prints one JSON line (`{"admin": url, "bmcs": [url, ...]}`) and serves an admin
endpoint on 127.0.0.1 (plain HTTP): `GET /stats`, `POST /reset`, `POST /fault/<i>/<kind>`
(`none` clears it). It exits when its standard input closes.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import subprocess
import sys
import threading
import urllib.request
from collections.abc import Sequence
from concurrent.futures import Future
from pathlib import Path
from typing import Any, cast

from metalform.lab.farm.faults import KINDS, Fault, FaultKind
from metalform.lab.farm.model import dumps
from metalform.lab.farm.server import Farm, FarmConfig, Response, encode, parse_head

BMCS_FILE = "bmcs.json"
"""A lab farm's BMC URLs and admin URL, written once it listens."""
PASSWORD_FILE = "password"


def raise_fd_limit() -> None:
    """Each BMC is a listening socket and each client connection one more descriptor."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


class FarmThread:
    """A farm on an event loop in a daemon thread of this process."""

    def __init__(self, config: FarmConfig) -> None:
        self.config = config
        self.loop = asyncio.new_event_loop()
        self.farm = Farm(config)
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True, name="farm")

    def start(self) -> FarmThread:
        raise_fd_limit()
        self._thread.start()
        self._call(self.farm.start())
        return self

    def _call(self, coro: Any) -> Any:
        future: Future[Any] = asyncio.run_coroutine_threadsafe(coro, self.loop)
        return future.result(timeout=120)

    @property
    def urls(self) -> list[str]:
        return [bmc.url for bmc in self.farm.bmcs]

    def stats(self) -> list[dict[str, Any]]:
        return cast(list[dict[str, Any]], self._call(_async(self.farm.stats)))

    def reset_stats(self) -> None:
        self._call(_async(self.farm.reset_stats))

    def set_fault(self, index: int, fault: Fault | None) -> None:
        self._call(_async(lambda: self.farm.set_fault(index, fault)))

    def stop(self) -> None:
        self._call(self.farm.stop())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout=10)
        self.loop.close()


async def _async(fn: Any) -> Any:
    return fn()


class FarmProcess:
    """A farm in a child process (`python -m metalform.lab.farm`), driven over its admin API."""

    def __init__(self, config: FarmConfig) -> None:
        self.config = config
        self._proc: subprocess.Popen[str] | None = None
        self.urls: list[str] = []
        self.admin = ""

    def start(self) -> FarmProcess:
        c = self.config
        argv = [
            sys.executable,
            "-m",
            "metalform.lab.farm",
            f"--count={c.count}",
            f"--latency={c.latency}",
            f"--jitter={c.jitter}",
            f"--limit={c.limit}",
            f"--username={c.username}",
            f"--first-address={c.first_address}",
            f"--port={c.port}",
        ]
        self._proc = subprocess.Popen(
            argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=_env(c.password)
        )
        assert self._proc.stdout is not None
        line = self._proc.stdout.readline()
        if not line:
            raise RuntimeError("the BMC farm did not start")
        ready = json.loads(line)
        self.urls, self.admin = ready["bmcs"], ready["admin"]
        return self

    def _admin(self, method: str, path: str) -> Any:
        request = urllib.request.Request(self.admin + path, method=method, data=b"")
        with urllib.request.urlopen(request, timeout=60) as answer:
            return json.loads(answer.read() or b"null")

    def stats(self) -> list[dict[str, Any]]:
        return cast(list[dict[str, Any]], self._admin("GET", "/stats"))

    def reset_stats(self) -> None:
        self._admin("POST", "/reset")

    def set_fault(self, index: int, fault: Fault | None) -> None:
        self._admin("POST", f"/fault/{index}/{fault.kind if fault else 'none'}")

    def rss_bytes(self) -> int:
        return int(self._admin("GET", "/rss"))

    def stop(self) -> None:
        if self._proc is not None:
            assert self._proc.stdin is not None
            self._proc.stdin.close()
            try:
                self._proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()


def _env(password: str) -> dict[str, str]:
    # The password goes through the environment, never the command line (ps shows argv).
    return {**os.environ, "METALFORM_FARM_PASSWORD": password}


async def _admin_connection(
    farm: Farm, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
) -> None:
    try:
        head = await reader.readuntil(b"\r\n\r\n")
        method, path, headers = parse_head(head)
        length = int(headers.get("content-length", "0") or 0)
        if length:
            await reader.readexactly(length)
        parts = path.strip("/").split("/")
        if method == "GET" and parts == ["stats"]:
            response = Response(200, dumps(farm.stats()))
        elif method == "GET" and parts == ["rss"]:
            with open("/proc/self/statm") as fh:
                pages = int(fh.read().split()[1])
            response = Response(200, dumps(pages * resource.getpagesize()))
        elif method == "POST" and parts == ["reset"]:
            farm.reset_stats()
            response = Response(200, b"null")
        elif method == "POST" and len(parts) == 3 and parts[0] == "fault":
            kind = parts[2]
            fault = Fault(cast(FaultKind, kind)) if kind in KINDS else None
            farm.set_fault(int(parts[1]), fault)
            response = Response(200, b"null")
        else:
            response = Response(404, b"null")
        writer.write(encode(response, close=True))
        await writer.drain()
    finally:
        writer.close()


async def _serve(config: FarmConfig, state_dir: Path | None) -> None:
    farm = Farm(config)
    await farm.start()
    admin = await asyncio.start_server(
        lambda r, w: _admin_connection(farm, r, w), host="127.0.0.1", port=0
    )
    port = admin.sockets[0].getsockname()[1]
    ready = {"admin": f"http://127.0.0.1:{port}", "bmcs": [b.url for b in farm.bmcs]}
    loop = asyncio.get_running_loop()
    if state_dir is None:
        print(json.dumps(ready), flush=True)
        await loop.run_in_executor(None, sys.stdin.read)  # until the parent closes our stdin
    else:
        # A lab peer (`metalform lab up --fleet N`): runs until `lab down` terminates it.
        (state_dir / BMCS_FILE).write_text(json.dumps(ready))
        endpoint = {"host": "127.0.0.1", "port": port, "pid": os.getpid()}
        (state_dir / "endpoint.json").write_text(json.dumps(endpoint))
        await asyncio.Event().wait()
    admin.close()
    await farm.stop()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m metalform.lab.farm")
    parser.add_argument("--count", type=int, default=50)
    parser.add_argument("--latency", type=float, default=0.1)
    parser.add_argument("--jitter", type=float, default=0.2)
    parser.add_argument("--limit", type=int, default=2)
    parser.add_argument("--username", default="root")
    parser.add_argument("--first-address", default="127.64.0.1")
    parser.add_argument("--port", type=int, default=0, help="one port for every BMC (0: any)")
    parser.add_argument("--state-dir", type=Path, help="run as a lab peer with its files here")
    args = parser.parse_args(argv)
    raise_fd_limit()
    config = FarmConfig(
        count=args.count,
        latency=args.latency,
        jitter=args.jitter,
        limit=args.limit,
        username=args.username,
        password=(
            (args.state_dir / PASSWORD_FILE).read_text().strip()
            if args.state_dir
            else os.environ.get("METALFORM_FARM_PASSWORD", "farm-password")
        ),
        first_address=args.first_address,
        port=args.port,
    )
    asyncio.run(_serve(config, args.state_dir))
    return 0
