"""NetBox as an inventory source: devices tagged in NetBox become Servers (see docs/netbox.md).

NetBox is not a Provider the engine plans against (it manages nothing): it is read once per
plan, right after the desired state is loaded, through the `metalform.inventory` entry point.
"""

from __future__ import annotations

from providers.netbox.client import fetch_devices
from providers.netbox.inventory import (
    NetboxInventory,
    import_inventory,
    merge_inventory,
    servers_from_devices,
)

__all__ = [
    "NetboxInventory",
    "fetch_devices",
    "import_inventory",
    "merge_inventory",
    "servers_from_devices",
]
