"""Durations as people write them in configuration: `30s`, `10m`, `1h30m`, `0` (off)."""

from __future__ import annotations

import re

_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)")
_UNIT = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def parse_duration(text: str | int | float) -> float:
    """Seconds in `text`; a bare number is seconds. Raises ValueError on anything else."""
    if isinstance(text, bool):
        raise ValueError("a duration is a number of seconds or a text such as 30s, 10m, 1h")
    if isinstance(text, int | float):
        if text < 0:
            raise ValueError("a duration cannot be negative")
        return float(text)
    value = text.strip().replace(" ", "")
    if re.fullmatch(r"\d+(\.\d+)?", value):
        return float(value)
    pos, total = 0, 0.0
    for match in _PART.finditer(value):
        if match.start() != pos:
            break
        total += float(match.group(1)) * _UNIT[match.group(2)]
        pos = match.end()
    if pos != len(value) or not value:
        raise ValueError(f"{text!r} is not a duration (examples: 30s, 10m, 1h30m, 0 for off)")
    return total


def format_duration(seconds: float) -> str:
    """`600.0` -> `10m`, for messages and the status page."""
    if seconds and seconds == int(seconds):
        whole = int(seconds)
        for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
            if whole % size == 0:
                return f"{whole // size}{unit}"
        return f"{whole}s"
    return f"{seconds:g}s"
