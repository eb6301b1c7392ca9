"""IPMI at fleet scale: plan N IPMI BMCs (one pyghmi BMC farm process) at a given latency.

    python bench/ipmi_fleet_bench.py [--bmcs 200] [--latency 0.05] [--loss 0.01]

Starts metalform/lab/ipmi_farm.py with N BMCs on consecutive UDP ports of 127.0.0.1, every
packet they send delayed by the latency, and times `metalform plan` of N IPMI Servers (power
and boot device read through RMCP+ sessions): with the default settings, with the
parallelism raised to N, and with the same at `--loss` packet loss (pyghmi retransmits; the
farm counts what it dropped). Target: 200 BMCs at 50 ms planned in <= 5 s.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from reconciler.engine import Engine, PlanRun, Settings

HANG_SECONDS = 120
"""A plan still running after this is reported as hung, not waited for (pyghmi's client
deadlocked under packet loss before providers.ipmi.pyghmi_fixes: see the README)."""
HEAD = """apiVersion: metalform/v1
kind: Credential
metadata: {name: ipmi}
spec: {username: admin, password: {fromEnv: IPMI_FARM_PASSWORD}}
"""
SERVER = """---
apiVersion: metalform/v1
kind: Server
metadata: {{name: ipmi-{i:04d}, labels: {{rack: r{rack:02d}}}}}
spec:
  bmc: {{driver: ipmi, address: "127.0.0.1:{port}", credential: ipmi}}
  power: On
"""


@dataclass
class Run:
    label: str
    seconds: float
    planned: int
    unreachable: int
    farm: dict[str, int]


def write_repo(root: Path, bmcs: int, port: int) -> None:
    servers = "".join(SERVER.format(i=i, rack=i // 40, port=port + i) for i in range(bmcs))
    (root / "inventory.yaml").write_text(HEAD + servers)


def plan_once(
    root: Path, bmcs: int, port: int, latency: float, loss: float, settings: Settings, label: str
) -> Run:
    farm = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "metalform.lab.ipmi_farm",
            f"--count={bmcs}",
            f"--port={port}",
            f"--latency={latency}",
            f"--jitter={latency / 5}",
            f"--loss={loss}",
            "--exit-with-stdin",
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert farm.stdout is not None
        ready = json.loads(farm.stdout.readline())
        assert ready["ready"], ready
        write_repo(root, bmcs, ready["ports"][0])
        t0 = time.perf_counter()
        box: list[PlanRun] = []
        worker = threading.Thread(target=lambda: box.append(Engine(settings).plan(root)))
        worker.daemon = True
        worker.start()
        worker.join(HANG_SECONDS)
        seconds = time.perf_counter() - t0
    finally:
        farm.terminate()
        out, _ = farm.communicate(timeout=10)
    stats = json.loads(out.strip().splitlines()[-1]) if out.strip() else {}
    if not box:
        return Run(label, seconds, -1, -1, stats)
    summary = box[0].plan.summary
    return Run(label, seconds, len(box[0].plan.actions), summary.unreachable, stats)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bmcs", type=int, default=200)
    parser.add_argument("--latency", type=float, default=0.05, help="seconds per packet")
    parser.add_argument("--loss", type=float, default=0.01, help="share of packets dropped")
    parser.add_argument("--loss-bmcs", type=int, help="BMCs of the lossy run (default: --bmcs)")
    parser.add_argument("--port", type=int, default=0, help="first BMC port (0: any free)")
    args = parser.parse_args()
    args.loss_bmcs = args.loss_bmcs or args.bmcs
    os.environ.setdefault("IPMI_FARM_PASSWORD", "bench-only-ipmi")
    runs = []
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        wide = Settings(parallelism=args.bmcs)
        for label, settings, loss, bmcs in (
            ("defaults", Settings(), 0.0, args.bmcs),
            (f"--parallelism {args.bmcs}", wide, 0.0, args.bmcs),
            (
                f"{args.loss_bmcs} BMCs, --parallelism {args.loss_bmcs}, {args.loss:.0%} loss",
                Settings(parallelism=args.loss_bmcs),
                args.loss,
                args.loss_bmcs,
            ),
        ):
            runs.append(plan_once(root, bmcs, args.port, args.latency, loss, settings, label))
    print(f"{args.bmcs} IPMI BMCs (one pyghmi farm process), {args.latency * 1000:.0f} ms/packet")
    for r in runs:
        if r.planned < 0:
            print(f"  plan, {r.label:<40} did not finish in {HANG_SECONDS} s")
            continue
        print(
            f"  plan, {r.label:<40} {r.seconds:6.2f} s  {r.planned} actions, "
            f"{r.unreachable} unreachable; farm sent {r.farm.get('sent', '?')} packets, "
            f"dropped {r.farm.get('dropped', 0)}"
        )
    sys.stdout.flush()
    os._exit(0)  # a hung plan's threads must not keep the benchmark alive


if __name__ == "__main__":
    sys.exit(main())
