"""The simulated host behind an `ipmi_sim` BMC: its `chassis_control` program and state file.

`ipmi_sim` (OpenIPMI) has no host to power. For every chassis request it runs its
`chassis_control` command through `popen` and expects this protocol (OpenIPMI's
`lanserv/ipmi_sim_chassiscontrol` documents it):

    PROGRAM <mc> get PARAM [PARAM ...]               prints `PARAM:VALUE` per line
    PROGRAM <mc> set PARAM VALUE [PARAM VALUE ...]   prints nothing on success

with PARAM one of `power` (0/1), `reset` (a pulse), `shutdown` (ACPI soft-off request), `boot`
(none, pxe, default = hard disk, cdrom, bios) and `identify`. A failure prints its reason and
exits 1; `ipmi_sim` then answers completion code 0xFF.

The program is a POSIX shell script (`SCRIPT`), written next to the BMC's `lan.conf`: ipmi_sim
blocks while it runs, and a shell script answers in a few milliseconds where a Python
interpreter needs 15 to 40. It keeps the host in `chassis.state`, `key=value` lines, which
survive a restart of the simulator; this module reads and writes the same file for the lab
(`IpmiPeer.chassis`, `IpmiPeer.set_chassis`). A soft-off request powers the host off after a
fixed delay, observed at the next `get power`, because real hosts take a while to shut down.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

SCRIPT_NAME = "chassis"
STATE_FILE = "chassis.state"
BOOT_DEVICES = ("none", "pxe", "default", "cdrom", "bios")
DEFAULTS: dict[str, int | str] = {
    "power": 0,
    "boot": "none",
    "soft_off_at": 0,
    "soft_off_delay_ms": 500,
    "resets": 0,
    "power_ons": 0,
    "last_boot": "none",
    "last_request": "none",
}
_INT_KEYS = frozenset(k for k, v in DEFAULTS.items() if isinstance(v, int))

SCRIPT = r"""#!/bin/sh
# chassis_control program of a simulated BMC (written by metalform/lab/ipmi_chassis.py).
# ipmi_sim runs it as: chassis <mc> get PARAM... | chassis <mc> set PARAM VALUE...
cd "$(dirname "$0")" || exit 1
power=0; boot=none; soft_off_at=0; soft_off_delay_ms=500; resets=0; power_ons=0; last_boot=none
last_request=none
if [ -f chassis.state ]; then . ./chassis.state; fi
changed=0
now_ms() { date +%s%3N; }
# A soft-off completes once its delay has passed.
if [ "$soft_off_at" != 0 ] && [ "$(now_ms)" -ge "$soft_off_at" ]; then
    power=0; soft_off_at=0; changed=1
fi
save() {
    tmp=".chassis.state.$$"
    {
        echo "power=$power"; echo "boot=$boot"; echo "soft_off_at=$soft_off_at"
        echo "soft_off_delay_ms=$soft_off_delay_ms"; echo "resets=$resets"
        echo "power_ons=$power_ons"; echo "last_boot=$last_boot"; echo "last_request=$last_request"
    } > "$tmp" && mv -f "$tmp" chassis.state
}
[ $# -ge 2 ] || { echo "usage: $0 MC get|set PARAM [VALUE]..."; exit 1; }
shift
op=$1; shift
case $op in
get)
    for p in "$@"; do
        case $p in
            power) echo "power:$power" ;;
            boot) echo "boot:$boot" ;;
            *) echo "Invalid parameter: $p"; exit 1 ;;
        esac
    done ;;
set)
    while [ $# -gt 0 ]; do
        if [ $# -lt 2 ]; then echo "No value present for parameter $1"; exit 1; fi
        p=$1; v=$2; shift 2
        # identify takes "interval force": not a word, and not a change of the host
        if [ "$p" != identify ]; then last_request=$p-$v; fi
        case $p in
            power)
                case $v in
                    1) if [ "$power" = 0 ]; then power_ons=$((power_ons + 1)); last_boot=$boot; fi
                       power=1; soft_off_at=0 ;;
                    0) power=0; soft_off_at=0 ;;
                    *) echo "Invalid power value: $v"; exit 1 ;;
                esac ;;
            reset)
                # A host that is off has nothing to reset; real BMCs refuse it too.
                if [ "$power" = 0 ]; then
                    echo "chassis is powered off; nothing to reset"; exit 1
                fi
                resets=$((resets + 1)); last_boot=$boot ;;
            shutdown)
                if [ "$power" = 1 ] && [ "$soft_off_at" = 0 ]; then
                    soft_off_at=$(( $(now_ms) + soft_off_delay_ms ))
                fi ;;
            boot)
                case $v in
                    none|pxe|default|cdrom|bios) boot=$v ;;
                    *) echo "Invalid boot value: $v"; exit 1 ;;
                esac ;;
            identify) ;;
            *) echo "Invalid parameter: $p"; exit 1 ;;
        esac
    done
    changed=1 ;;
*) echo "Unknown operation: $op"; exit 1 ;;
esac
if [ "$changed" = 1 ]; then save || exit 1; fi
exit 0
"""


def write_script(directory: Path) -> Path:
    """Write the chassis_control program into a BMC's directory; returns its path."""
    path = directory / SCRIPT_NAME
    path.write_text(SCRIPT, encoding="utf-8")
    path.chmod(0o755)
    return path


def load(directory: Path) -> dict[str, int | str]:
    """The host's state as the script keeps it, with defaults for anything missing."""
    state = dict(DEFAULTS)
    try:
        text = (directory / STATE_FILE).read_text(encoding="utf-8")
    except FileNotFoundError:
        return state
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if sep and key in DEFAULTS:
            state[key] = int(value) if key in _INT_KEYS else value
    return state


def save(directory: Path, state: dict[str, int | str]) -> None:
    """Write the state atomically, in the format the script sources."""
    for key in ("boot", "last_boot"):
        if state[key] not in BOOT_DEVICES:
            raise ValueError(f"{key} must be one of {BOOT_DEVICES}, not {state[key]!r}")
    if not str(state["last_request"]).replace("-", "").isalnum():
        raise ValueError(f"last_request {state['last_request']!r} is not a word")
    text = "".join(
        f"{key}={int(state[key]) if key in _INT_KEYS else state[key]}\n" for key in DEFAULTS
    )
    tmp = directory / f".{STATE_FILE}.py{os.getpid()}"
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, directory / STATE_FILE)


def settle(state: dict[str, int | str], now: float | None = None) -> dict[str, int | str]:
    """The state as the next `get power` will see it (a due soft-off completed)."""
    now_ms = int((time.time() if now is None else now) * 1000)
    due = int(state["soft_off_at"])
    if due and now_ms >= due:
        state = {**state, "power": 0, "soft_off_at": 0}
    return state
