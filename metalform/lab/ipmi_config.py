"""What one simulated IPMI BMC is made of: its spec and the files `ipmi_sim` reads.

Per BMC, in its own directory: `lan.conf` (the LAN channel, users and passwords; mode 0600),
`sim.emu` (the emulated management controller), the `chassis` program and its state file (see
`metalform.lab.ipmi_chassis`), which keeps power and boot device across restarts.
"""

from __future__ import annotations

import os
import re
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from metalform.lab import ipmi_chassis

LAN_CONF = "lan.conf"
SIM_EMU = "sim.emu"
SIM_STATE = "sim-state"
MC_ADDRESS = "0x20"
# Get Device ID answers: MontaVista's IANA number (the author of ipmi_sim), a made-up product.
MANUFACTURER_ID = 0x1291
PRODUCT_ID = 0x0F02
USERNAME_PATTERN = re.compile(r"^[A-Za-z0-9._-]{1,16}$")
# lan.conf takes the password as a quoted word: no quotes, backslashes or blanks; IPMI 2.0
# allows at most 20 bytes.
PASSWORD_PATTERN = re.compile(r"^[!#-\[\]-~]{1,20}$")
NAME_PATTERN = re.compile(r"^[a-z0-9]([a-z0-9.-]*[a-z0-9])?$")
PRIVILEGES = ("callback", "user", "operator", "admin")
MAX_EXTRA_USERS = 13
"""Slots 3 to 15: slot 1 is the anonymous user, slot 2 the lab's own."""


@dataclass(frozen=True)
class BmcSpec:
    """One simulated BMC: its name, UDP port (0: pick a free one) and initial chassis state."""

    name: str
    port: int = 0
    power: str = "Off"
    """Power state when the BMC's state directory holds none yet: `On` or `Off`."""
    boot: str = "none"
    """Boot device when none is stored yet: none, pxe, default (hard disk), cdrom, bios."""
    users: tuple[LabUser, ...] = ()
    """More users than the lab's own (slot 2), in slots 3 and up: accounts nobody declared,
    for pruneAccounts to find."""


@dataclass(frozen=True)
class LabUser:
    """An extra `ipmi_sim` user: name, password and privilege limit."""

    name: str
    password: str
    privilege: str = "user"
    """callback, user, operator or admin (ipmi_sim's words)."""


def normalise_bmcs(bmcs: Mapping[str, int] | Iterable[BmcSpec | str]) -> list[BmcSpec]:
    """The BMCs as specs (from names, a name -> port map or specs), checked; ValueError if not."""
    if isinstance(bmcs, Mapping):
        specs = [BmcSpec(name=name, port=port) for name, port in bmcs.items()]
    else:
        specs = [b if isinstance(b, BmcSpec) else BmcSpec(name=b) for b in bmcs]
    names = [s.name for s in specs]
    if len(set(names)) != len(names):
        raise ValueError(f"BMC names must be unique: {names}")
    for spec in specs:
        _check(spec)
    return specs


def _check(spec: BmcSpec) -> None:
    if not NAME_PATTERN.match(spec.name):
        raise ValueError(f"BMC name {spec.name!r}: use lowercase letters, digits, '.', '-'")
    if not 0 <= spec.port <= 65535:
        raise ValueError(f"BMC {spec.name}: port {spec.port} is out of range")
    if spec.power not in ("On", "Off"):
        raise ValueError(f"BMC {spec.name}: power must be On or Off, not {spec.power!r}")
    if spec.boot not in ipmi_chassis.BOOT_DEVICES:
        raise ValueError(f"BMC {spec.name}: boot must be one of {ipmi_chassis.BOOT_DEVICES}")
    for user in spec.users:
        if not USERNAME_PATTERN.match(user.name) or not PASSWORD_PATTERN.match(user.password):
            raise ValueError(f"BMC {spec.name}: user {user.name!r}: bad name or password")
        if user.privilege not in PRIVILEGES:
            raise ValueError(f"BMC {spec.name}: user privilege must be one of {PRIVILEGES}")
    if len(spec.users) > MAX_EXTRA_USERS:
        raise ValueError(f"BMC {spec.name}: at most {MAX_EXTRA_USERS} extra users")


def write_bmc(
    directory: Path,
    spec: BmcSpec,
    *,
    host: str,
    port: int,
    username: str,
    password: str | None,
    soft_off_delay: float,
) -> None:
    """Write (or refresh) every file `ipmi_sim` reads for one BMC.

    With `password` None the existing `lan.conf` is kept (only its address is updated): a
    re-attached peer keeps the user and password it was created with. The caller checks that
    there is one.
    """
    (directory / SIM_STATE).mkdir(parents=True, exist_ok=True)
    conf = directory / LAN_CONF
    if password is None:
        text = re.sub(r"(?m)^(\s*addr )\S+ \d+$", rf"\g<1>{host} {port}", conf.read_text())
        conf.write_text(text)
    else:
        # The file holds the password: readable by its owner only.
        fd = os.open(conf, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(_lan_conf(spec, host, port, username, password))
    (directory / SIM_EMU).write_text(_sim_emu())
    ipmi_chassis.write_script(directory)
    state = ipmi_chassis.load(directory)
    if not (directory / ipmi_chassis.STATE_FILE).exists():
        state["power"] = 1 if spec.power == "On" else 0
        state["boot"] = spec.boot
    state["soft_off_delay_ms"] = round(soft_off_delay * 1000)
    ipmi_chassis.save(directory, state)


def _lan_conf(spec: BmcSpec, host: str, port: int, username: str, password: str) -> str:
    name = spec.name
    guid = uuid.uuid5(uuid.NAMESPACE_URL, f"metalform-lab-ipmi:{name}").hex
    extra = [
        f'  user {slot} true "{u.name}" "{u.password}" {u.privilege} 16 md5'
        for slot, u in enumerate(spec.users, start=3)
    ]
    return "\n".join(
        [
            "# Written by metalform/lab/ipmi_config.py; see ipmi_lan(5).",
            f'name "{name}"',
            f"set_working_mc {MC_ADDRESS}",
            "  startlan 1",
            f"    addr {host} {port}",
            "    priv_limit admin",
            "    allowed_auths_callback md5",
            "    allowed_auths_user md5",
            "    allowed_auths_operator md5",
            "    allowed_auths_admin md5",
            f"    guid {guid}",
            "  endlan",
            # Relative to the working directory, which is the BMC's directory: no
            # quoting trouble whatever the state directory is called.
            f'  chassis_control "./chassis {MC_ADDRESS}"',
            f'  user 2 true "{username}" "{password}" admin 16 md5',
            *extra,
            "",
        ]
    )


def _sim_emu() -> str:
    return (
        "# Written by metalform/lab/ipmi_config.py; see ipmi_sim_cmd(5).\n"
        f"mc_setbmc {MC_ADDRESS}\n"
        f"mc_add {MC_ADDRESS} 0 no-device-sdrs 0x23 9 8 0x9f "
        f"{MANUFACTURER_ID:#x} {PRODUCT_ID:#x}\n"
        f"mc_enable {MC_ADDRESS}\n"
    )
