"""RANGE: a CIDR (`10.1.0.0/24`), a span (`10.1.0.10-10.1.0.90`) or `@FILE` (one a line)."""

from __future__ import annotations

import ipaddress
from pathlib import Path

from reconciler.errors import MetalformError

MAX_ADDRESSES = 65_536
"""A larger range is most likely a typo (a /8 for a /24); `--force` accepts it."""

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


class RangeError(MetalformError):
    """RANGE cannot be read, or is larger than allowed."""


def _address(text: str, where: str) -> IPAddress:
    try:
        return ipaddress.ip_address(text.strip())
    except ValueError:
        raise RangeError(f"{where}: {text.strip()!r} is not an IP address") from None


def _span(text: str, where: str) -> tuple[IPAddress, IPAddress]:
    """The first and last address of one RANGE item, checked."""
    if "/" in text:
        try:
            network = ipaddress.ip_network(text.strip(), strict=False)
        except ValueError as exc:
            raise RangeError(f"{where}: {text.strip()!r} is not a CIDR range ({exc})") from None
        if network.num_addresses > 2 and network.version == 4:
            # The network and broadcast addresses of an IPv4 subnet are never a BMC.
            return network.network_address + 1, network.broadcast_address - 1
        return network.network_address, network.broadcast_address
    if "-" in text:
        first_text, _, last_text = text.partition("-")
        first, last = _address(first_text, where), _address(last_text, where)
        if first.version != last.version or int(last) < int(first):
            raise RangeError(f"{where}: {text.strip()!r}: the span must go from low to high")
        return first, last
    one = _address(text, where)
    return one, one


def _items(text: str) -> list[tuple[str, str]]:
    """(item, where it was written) for RANGE; `@FILE` reads one address or range a line."""
    if not text.startswith("@"):
        return [(text, "RANGE")]
    path = Path(text[1:])
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise RangeError(f"cannot read {path}: {getattr(exc, 'strerror', None) or exc}") from None
    items = []
    for number, line in enumerate(lines, start=1):
        stripped = line.split("#", 1)[0].strip()
        if stripped:
            items.append((stripped, f"{path}:{number}:1"))
    if not items:
        raise RangeError(f"{path} lists no address")
    return items


def expand(text: str, *, force: bool = False) -> list[str]:
    """Every address RANGE names, in order, without duplicates.

    The size is checked before a single address is built, so a mistyped /8 fails at once.
    """
    spans = [_span(item, where) for item, where in _items(text.strip())]
    total = sum(int(last) - int(first) + 1 for first, last in spans)
    if total > MAX_ADDRESSES and not force:
        raise RangeError(
            f"RANGE {text!r} holds {total:,} addresses, more than {MAX_ADDRESSES:,}; "
            "give --force to import it anyway"
        )
    seen: dict[str, None] = {}
    for first, last in spans:
        for value in range(int(first), int(last) + 1):
            seen.setdefault(str(type(first)(value)), None)
    return list(seen)
