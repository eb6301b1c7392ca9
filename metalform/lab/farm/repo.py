"""A desired-state repository for a BMC farm: one Server per farm BMC."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from metalform.lab.farm.model import SYSTEM_ID

ATTRIBUTES = {
    "BootMode": "Uefi",
    "ProcVirtualization": "Enabled",
    "SriovGlobalEnable": "Enabled",
    "WorkloadProfile": "HighPerformance",
    "ProcTurboMode": "Disabled",
    "NumaNodesPerSocket": 2,
}


def write_fleet_repo(
    root: Path, urls: Sequence[str], username: str, password: str, system_id: str = SYSTEM_ID
) -> None:
    """Write a Credential, a BiosTemplate and one Server per BMC URL.

    `password` is the Credential's secret reference as a YAML flow mapping
    (`{fromEnv: VAR}` or `{fromFile: path}`).
    """
    attributes = ", ".join(f"{k}: {v}" for k, v in ATTRIBUTES.items())
    parts = [
        f"""apiVersion: metalform/v1
kind: Credential
metadata: {{name: bmc}}
spec: {{username: {username}, password: {password}}}
---
apiVersion: metalform/v1
kind: BiosTemplate
metadata: {{name: fleet}}
spec:
  attributes: {{{attributes}}}
"""
    ]
    for i, url in enumerate(urls):
        parts.append(
            f"""apiVersion: metalform/v1
kind: Server
metadata: {{name: node-{i:05d}}}
spec:
  bmc:
    {{driver: redfish, address: "{url}", systemId: {system_id}, credential: bmc, verifyTls: false}}
  power: On
  bios: {{template: fleet}}
"""
        )
    root.mkdir(parents=True, exist_ok=True)
    (root / "fleet.yaml").write_text(parts[0])
    # A file of the desired state may not exceed 1 MiB: 1,000 Servers a file.
    for start in range(1, len(parts), 1000):
        chunk = parts[start : start + 1000]
        (root / f"servers-{start // 1000:03d}.yaml").write_text("---\n".join(chunk))
