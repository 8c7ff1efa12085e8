"""Simulated device fleet and load generator (`fieldline simulate`, SPEC §7)."""

from fieldline.client import ApiAccess
from fieldline.sim.fleet import run_fleet
from fieldline.sim.options import FleetOptions, MqttVersion
from fieldline.sim.payloads import BadKind
from fieldline.sim.provisioning import ProvisioningError
from fieldline.sim.report import DeviceReport, FleetProgress, SimulationReport

__all__ = [
    "ApiAccess",
    "BadKind",
    "DeviceReport",
    "FleetOptions",
    "FleetProgress",
    "MqttVersion",
    "ProvisioningError",
    "SimulationReport",
    "run_fleet",
]
