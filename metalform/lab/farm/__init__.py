"""A farm of emulated Redfish BMCs for fleet-scale tests and benchmarks (see README)."""

from metalform.lab.farm.faults import Fault
from metalform.lab.farm.model import DEFAULT_MODELS, SYSTEM_ID, HardwareModel
from metalform.lab.farm.runner import FarmProcess, FarmThread
from metalform.lab.farm.server import Farm, FarmConfig

__all__ = [
    "DEFAULT_MODELS",
    "SYSTEM_ID",
    "Farm",
    "FarmConfig",
    "FarmProcess",
    "FarmThread",
    "Fault",
    "HardwareModel",
]
