"""The `chassis_control` program of a simulated IPMI BMC (`ipmi_sim` from OpenIPMI).

`ipmi_sim` has no host to power: it runs its `chassis_control` command through `popen` for every
chassis request and expects this protocol (see OpenIPMI's `lanserv/ipmi_sim_chassiscontrol`):

    PROGRAM <mc> get PARAM [PARAM ...]          prints `PARAM:VALUE` per line
    PROGRAM <mc> set PARAM VALUE [PARAM VALUE ...]   prints nothing on success

with PARAM one of `power` (0/1), `reset` (pulse), `shutdown` (ACPI soft-off request), `boot`
(none, pxe, default, cdrom, bios) and `identify`. Errors go to stdout with exit status 1, which
`ipmi_sim` answers with completion code 0xFF.

This module keeps the chassis in a JSON file (`chassis.json` next to `lan.conf`), so power and
boot device survive a restart of the simulator and a test can read the truth independently of
the IPMI client. A soft-off request powers off after a fixed delay (`softOffDelay` seconds),
observed lazily at the next `get power`, because real hosts take a while to shut down.

It is executed as a script by `ipmi_sim` for every request, so it imports only the standard
library (it runs with `python -I -S`) and stays fast: about 15 ms per call.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

STATE_FILE = "chassis.json"
LOCK_FILE = "chassis.lock"
BOOT_DEVICES = ("none", "pxe", "default", "cdrom", "bios")
DEFAULT_STATE: dict[str, Any] = {
    "power": 0,
    "boot": "none",
    "softOffDelay": 0.5,
    "softOffAt": None,
    "resets": 0,
    "powerOns": 0,
    "lastBootDevice": None,
}


class ChassisError(Exception):
    """A request the chassis refuses; the message is reported to ipmi_sim on stdout."""


@contextlib.contextmanager
def locked(directory: Path) -> Iterator[None]:
    """Serialise updates between ipmi_sim's calls and the lab changing the chassis directly."""
    with open(directory / LOCK_FILE, "a+") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def load(directory: Path) -> dict[str, Any]:
    """The chassis state, with defaults for anything missing."""
    state = dict(DEFAULT_STATE)
    with contextlib.suppress(FileNotFoundError):
        state.update(json.loads((directory / STATE_FILE).read_text(encoding="utf-8")))
    return state


def save(directory: Path, state: dict[str, Any]) -> None:
    """Write the state atomically, so a concurrent reader never sees half a file."""
    tmp = directory / f".{STATE_FILE}.{os.getpid()}"
    tmp.write_text(json.dumps(state, indent=1, sort_keys=True), encoding="utf-8")
    os.replace(tmp, directory / STATE_FILE)


def settle(state: dict[str, Any], now: float) -> bool:
    """Complete a soft-off whose delay has passed; True when the state changed."""
    due = state.get("softOffAt")
    if due is not None and now >= float(due):
        state["power"] = 0
        state["softOffAt"] = None
        return True
    return False


def _power_on(state: dict[str, Any]) -> None:
    if not state["power"]:
        state["powerOns"] = int(state["powerOns"]) + 1
        state["lastBootDevice"] = state["boot"]
    state["power"] = 1
    state["softOffAt"] = None


def apply_set(state: dict[str, Any], param: str, value: str, now: float) -> None:
    """Apply one `set PARAM VALUE` request to the state."""
    if param == "power":
        if value not in ("0", "1"):
            raise ChassisError(f"Invalid power value: {value}")
        if value == "1":
            _power_on(state)
        else:
            state["power"] = 0
            state["softOffAt"] = None
    elif param == "reset":
        # A hard reset restarts a running host; a host that is off has nothing to reset,
        # and real BMCs refuse the request in that state.
        if not state["power"]:
            raise ChassisError("chassis is powered off; nothing to reset")
        state["resets"] = int(state["resets"]) + 1
        state["lastBootDevice"] = state["boot"]
    elif param == "shutdown":
        if state["power"] and state.get("softOffAt") is None:
            state["softOffAt"] = now + float(state["softOffDelay"])
    elif param == "boot":
        if value not in BOOT_DEVICES:
            raise ChassisError(f"Invalid boot value: {value}")
        state["boot"] = value
    elif param == "identify":
        pass  # no light to blink
    else:
        raise ChassisError(f"Invalid parameter: {param}")


def get_value(state: dict[str, Any], param: str) -> str:
    """The value printed for one `get PARAM` request."""
    if param == "power":
        return "1" if state["power"] else "0"
    if param == "boot":
        return str(state["boot"])
    raise ChassisError(f"Invalid parameter: {param}")


def run(directory: Path, args: list[str], now: float | None = None) -> str:
    """Handle one invocation (`<mc> get|set ...`) and return what to print."""
    if len(args) < 2:
        raise ChassisError("usage: ipmi_chassis.py STATE_DIR MC get|set PARAM [VALUE] ...")
    op, params = args[1], args[2:]
    now = time.time() if now is None else now
    with locked(directory):
        state = load(directory)
        changed = settle(state, now)
        if op == "get":
            out = "".join(f"{p}:{get_value(state, p)}\n" for p in params)
        elif op == "set":
            if len(params) % 2:
                raise ChassisError(f"No value present for parameter {params[-1]}")
            for param, value in zip(params[::2], params[1::2], strict=True):
                apply_set(state, param, value, now)
            changed, out = True, ""
        elif op == "check":
            raise ChassisError("check is not supported for chassis control")
        else:
            raise ChassisError(f"Unknown operation: {op}")
        if changed:
            save(directory, state)
    return out


def main(argv: list[str]) -> int:
    """Entry point: `ipmi_chassis.py STATE_DIR MC get|set ...`."""
    if len(argv) < 2:
        print("usage: ipmi_chassis.py STATE_DIR MC get|set PARAM [VALUE] ...")
        return 1
    try:
        sys.stdout.write(run(Path(argv[1]), argv[2:]))
    except (ChassisError, OSError, ValueError) as exc:
        # ipmi_sim logs our stdout when the exit status is not zero.
        print(exc)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
