"""`metalform lab up|down|status`: the local virtual datacenter that inventory-example/ plans.

The lab is one sushy-emulator (six Redfish servers behind one BMC address, each with its own
System Id), one `ipmi_sim` per IPMI server, a Docker engine on a unix socket and an SMTP sink,
on fixed loopback ports that `inventory-example/` names. Passwords are generated at the first
`lab up` and written, with the environment variables the example's Credentials read, to
`STATE_DIR/env` (mode 0600). With `--sites N` the lab adds a broker and N sites, each with
its own BMC and worker (`sites.py`).
"""

from __future__ import annotations

import os
import secrets
import shlex
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from metalform.lab.docker import DockerPeer
from metalform.lab.farm.peer import FarmPeer
from metalform.lab.ipmi import BmcSpec, IpmiPeer
from metalform.lab.maas import LAB_HOSTNAMES, MaasPeer, lab_machines, new_api_key
from metalform.lab.nova import NovaPeer
from metalform.lab.redfish import LabSystem, RedfishPeer
from metalform.lab.redfish_firmware import IMAGES_DIR, LAB_IMAGES, publish_image
from metalform.lab.sites import (
    BROKER_PASSWORD_VAR,
    CENTRAL_VARS,
    REDIS_PORT,
    SITES_DIR,
    down_sites,
    read_env,
    status_sites,
    up_sites,
)
from metalform.lab.smtp import SmtpPeer

REDFISH_PORT = 18000
SMTP_PORT = 2525
MAAS_PORT = 5240
NOVA_PORT = 8774
IPMI_PORTS = {"storage-001": 16230, "storage-002": 16231}
REDFISH_SERVERS = {
    # name: model; MF-G8 are the GPU hosts the gpu-l40 template matches
    "gpu-host-001": "MF-G8",
    "gpu-host-002": "MF-G8",
    "gpu-host-003": "MF-G8",
    "gpu-host-004": "MF-G8",
    "compute-001": "MF-C2",
    "compute-002": "MF-C2",
}
MANUFACTURER = "Metalform Lab"
ENV_FILE = "env"
PASSWORD_VARS = ("METALFORM_BMC_PASSWORD", "METALFORM_IPMI_PASSWORD", "METALFORM_MAAS_API_KEY")

Say = Callable[[str], None]


def system_id(name: str) -> str:
    """The Redfish System Id of a lab server: a stable UUID derived from its name."""
    return str(uuid.uuid5(uuid.NAMESPACE_DNS, f"{name}.lab.metalform"))


def lab_systems() -> list[LabSystem]:
    return [
        LabSystem(
            identity=system_id(name),
            name=name,
            manufacturer=MANUFACTURER,
            model=model,
            power_state="Off",
        )
        for name, model in REDFISH_SERVERS.items()
    ]


def _passwords(state_dir: Path, extra: tuple[str, ...] = ()) -> dict[str, str]:
    """The lab's passwords (and `extra` keys): read from STATE_DIR/env, the missing ones
    generated and the file written again (mode 0600)."""
    env_file = state_dir / ENV_FILE
    values = read_env(env_file)
    if all(values.get(v) for v in (*PASSWORD_VARS, *extra)):
        return values
    if not all(values.get(v) for v in PASSWORD_VARS):
        values.update({var: secrets.token_urlsafe(12) for var in PASSWORD_VARS})
        values["METALFORM_MAAS_API_KEY"] = new_api_key()  # consumer:token:secret, as MAAS issues
    for var in extra:
        values[var] = values.get(var) or secrets.token_urlsafe(24)
    state_dir.mkdir(parents=True, exist_ok=True)
    fd = os.open(env_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write("# Written by `metalform lab up`: lab BMC passwords, for inventory-example/\n")
        for key, value in values.items():
            fh.write(f"export {key}={shlex.quote(value)}\n")
    return values


def _redfish(state_dir: Path, password: str | None = None, port: int = REDFISH_PORT) -> RedfishPeer:
    path = state_dir / "redfish"
    if password is None:
        return RedfishPeer.attach(path)
    return RedfishPeer(
        path, lab_systems(), port=port, username="admin", password=password, power_delay=0.5
    )


def _ipmi(
    state_dir: Path, password: str | None = None, base_port: int = min(IPMI_PORTS.values())
) -> IpmiPeer:
    path = state_dir / "ipmi"
    if password is None:
        return IpmiPeer.attach(path)
    bmcs = [
        BmcSpec(name=name, port=base_port + i, power="Off") for i, name in enumerate(IPMI_PORTS)
    ]
    return IpmiPeer(path, bmcs, username="admin", password=password)


def up(
    state_dir: Path,
    say: Say,
    *,
    redfish_port: int = REDFISH_PORT,
    ipmi_base_port: int = min(IPMI_PORTS.values()),
    smtp_port: int = SMTP_PORT,
    maas_port: int = MAAS_PORT,
    nova_port: int = NOVA_PORT,
    fleet: int = 0,
    sites: int = 0,
    redis_port: int = REDIS_PORT,
) -> int:
    passwords = _passwords(state_dir, CENTRAL_VARS if sites else ())
    redfish = _redfish(state_dir, passwords["METALFORM_BMC_PASSWORD"], redfish_port)
    if (state_dir / "redfish").exists() and RedfishPeer.attach(state_dir / "redfish").is_running():
        say(f"Redfish BMC already running at {REDFISH_PORT}")
    else:
        redfish.start()
        say(f"Redfish BMC (sushy-emulator) at {redfish.url}: {', '.join(REDFISH_SERVERS)}")
    for component, version in LAB_IMAGES:  # the firmware images inventory-example/ names
        publish_image(redfish.state_dir / IMAGES_DIR, component, version)
    ipmi = _ipmi(state_dir, passwords["METALFORM_IPMI_PASSWORD"], ipmi_base_port)
    if (state_dir / "ipmi").exists() and IpmiPeer.attach(state_dir / "ipmi").is_running():
        say("IPMI BMCs already running")
    else:
        ipmi.start()
        for name, address in ipmi.addresses.items():
            say(f"IPMI BMC (ipmi_sim) {name} at {address}")
    docker_dir = state_dir / "docker"
    if docker_dir.exists() and DockerPeer.attach(docker_dir).is_running():
        say("Docker engine already running")
    else:
        docker = DockerPeer(docker_dir).start()
        say(f"Docker engine (dockerd) at {docker.url}, image local/busybox:1")
    smtp_dir = state_dir / "smtp"
    if (smtp_dir / "endpoint.json").exists() and SmtpPeer.attach(smtp_dir).is_running():
        say("SMTP sink already running")
    else:
        smtp = SmtpPeer(smtp_dir, port=smtp_port).start()
        say(f"SMTP sink (aiosmtpd) at {smtp.url}, mail kept in {smtp.mailbox}")
    maas_dir = state_dir / "maas"
    if (maas_dir / "endpoint.json").exists() and MaasPeer.attach(maas_dir).is_running():
        say("MAAS simulator already running")
    else:
        maas = MaasPeer(
            maas_dir,
            lab_machines(LAB_HOSTNAMES),
            port=maas_port,
            api_key=passwords["METALFORM_MAAS_API_KEY"],
        ).start()
        say(f"MAAS (simulated MAAS 2.0 API) at {maas.url}: {', '.join(LAB_HOSTNAMES)} Ready")
    nova_dir = state_dir / "nova"
    if (nova_dir / "endpoint.json").exists() and NovaPeer.attach(nova_dir).is_running():
        say("OpenStack compute API already running")
    else:
        # The first start builds nova's own virtualenv (about a minute, once).
        nova = NovaPeer(nova_dir, [*REDFISH_SERVERS, *IPMI_PORTS], port=nova_port).start()
        say(
            f"OpenStack compute API (nova-api 34) at {nova.url}: "
            f"{len(REDFISH_SERVERS) + len(IPMI_PORTS)} compute hosts"
        )
    if fleet:
        _fleet(state_dir, fleet, say)
    if sites:
        central = {var: passwords[var] for var in CENTRAL_VARS}
        up_sites(
            state_dir / SITES_DIR,
            sites,
            central,
            say,
            redis_port=redis_port,
            bmc_base_port=redfish_port + 1,
        )
    say(f"Lab is up. Credentials for inventory-example/: source {state_dir / ENV_FILE}")
    return 0


def _fleet(state_dir: Path, count: int, say: Say) -> None:
    """The BMC farm: `count` TLS Redfish BMCs, one loopback address each, and a repository."""
    fleet_dir = state_dir / "fleet"
    if (fleet_dir / "endpoint.json").exists() and FarmPeer.attach(fleet_dir).is_running():
        say(f"BMC farm already running; desired state of its servers in {fleet_dir / 'repo'}")
        return
    farm = FarmPeer(fleet_dir, count=count).start()
    urls = farm.urls
    say(
        f"BMC farm of {len(urls)} Redfish BMCs (TLS, 100 ms a request) at {urls[0]} .. "
        f"{urls[-1]}; plan them with: metalform plan -C {farm.repo}"
    )


def _attached(state_dir: Path) -> list[tuple[str, Any, Callable[[Any], str]]]:
    """The lab's peers beside its BMCs that have state here: name, peer, what status shows."""
    found: list[tuple[str, Any, Callable[[Any], str]]] = []
    if (state_dir / "docker").exists():
        found.append(("docker", DockerPeer.attach(state_dir / "docker"), lambda p: p.url))
    for name, kind in (("smtp", SmtpPeer), ("maas", MaasPeer), ("nova", NovaPeer)):
        if (state_dir / name / "endpoint.json").exists():
            found.append((name, kind.attach(state_dir / name), lambda p: p.url))
    if (state_dir / "fleet" / "endpoint.json").exists():
        farm = FarmPeer.attach(state_dir / "fleet")
        found.append(("fleet", farm, lambda p: f"{len(p.urls)} BMCs"))
    return found


def down(state_dir: Path, say: Say) -> int:
    stopped = down_sites(state_dir / SITES_DIR)
    if (state_dir / "redfish").exists():
        _redfish(state_dir).stop()
        stopped = True
    if (state_dir / "ipmi").exists():
        _ipmi(state_dir).stop()
        stopped = True
    for _, peer, _ in _attached(state_dir):
        peer.stop()
        stopped = True
    say("Lab stopped." if stopped else f"No lab in {state_dir}.")
    return 0


def status(state_dir: Path, say: Say) -> int:
    if not state_dir.exists():
        say(f"No lab in {state_dir}. Start one with: metalform lab up")
        return 1
    running = True
    if (state_dir / "redfish").exists():
        redfish = _redfish(state_dir)
        ok = redfish.is_running()
        running &= ok
        say(f"redfish  {'running' if ok else 'stopped'}  {redfish.url if ok else ''}".rstrip())
    if (state_dir / "ipmi").exists():
        ipmi = _ipmi(state_dir)
        for name, address in ipmi.addresses.items():
            ok = ipmi.is_running(name)
            running &= ok
            say(f"ipmi     {'running' if ok else 'stopped'}  {name} {address}")
    for name, peer, detail in _attached(state_dir):
        ok = peer.is_running()
        running &= ok
        say(f"{name:<8} {'running' if ok else 'stopped'}  {detail(peer) if ok else ''}".rstrip())
    password = read_env(state_dir / ENV_FILE).get(BROKER_PASSWORD_VAR)
    running &= status_sites(state_dir / SITES_DIR, password, say)
    return 0 if running else 1


def run_lab(
    action: str,
    state_dir: Path,
    say: Say,
    *,
    redfish_port: int = REDFISH_PORT,
    ipmi_base_port: int = min(IPMI_PORTS.values()),
    smtp_port: int = SMTP_PORT,
    maas_port: int = MAAS_PORT,
    nova_port: int = NOVA_PORT,
    fleet: int = 0,
    sites: int = 0,
    redis_port: int = REDIS_PORT,
) -> int:
    if action == "up":
        return up(
            state_dir,
            say,
            redfish_port=redfish_port,
            ipmi_base_port=ipmi_base_port,
            smtp_port=smtp_port,
            maas_port=maas_port,
            nova_port=nova_port,
            fleet=fleet,
            sites=sites,
            redis_port=redis_port,
        )
    return {"down": down, "status": status}[action](state_dir, say)
