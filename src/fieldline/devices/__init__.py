"""Device operations every door shares (API, CLI, worker, simulator): plain async
functions over a connection, the broker and the downlink publisher, raising the
domain errors of `devices.errors` rather than HTTP ones."""

from fieldline.devices.commands import create_command
from fieldline.devices.credentials import MqttAccess, mqtt_access
from fieldline.devices.provisioning import Provisioned, Signer, authenticate, provision
from fieldline.devices.registry import (
    Registered,
    delete_device,
    register_device,
    rotate_credentials,
    update_device,
)

__all__ = [
    "MqttAccess",
    "Provisioned",
    "Registered",
    "Signer",
    "authenticate",
    "create_command",
    "delete_device",
    "mqtt_access",
    "provision",
    "register_device",
    "rotate_credentials",
    "update_device",
]
