"""A desired-state repository for a BMC farm (one Server per farm BMC), and the Server of one
farm BMC as a resource, for code that drives a provider directly."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from metalform.lab.farm.model import SYSTEM_ID
from reconciler.model import Metadata, Resource
from reconciler.model.hardware import Bmc, BmcDriver, ServerSpec

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


def farm_server(name: str, url: str, *, verify_tls: bool = False) -> Resource[ServerSpec]:
    """The Server of the farm BMC at `url`, with the Credential `bmc`."""
    bmc = Bmc(
        driver=BmcDriver.REDFISH,
        address=url,
        credential="bmc",
        system_id=SYSTEM_ID,
        verify_tls=verify_tls,
    )
    return Resource(kind="Server", metadata=Metadata(name=name), spec=ServerSpec(bmc=bmc))
