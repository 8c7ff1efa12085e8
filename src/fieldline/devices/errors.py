"""What the device operations refuse, for each door (API, CLI, worker) to say its own way.

Missing devices and taken ids are the storage's `NotFoundError`/`AlreadyExistsError`,
and a group that does not exist is `GroupNotFoundError`: those are raised as they are.
"""

from __future__ import annotations


class BrokerUpdateError(Exception):
    """The broker did not take a device change; the registry change was undone with it."""

    def __init__(self, detail: str) -> None:
        super().__init__(f"the broker could not be updated, nothing was changed: {detail}")


class DeviceDisabledError(Exception):
    """A disabled device gets no commands: the broker refuses its connections."""

    def __init__(self, device_id: str) -> None:
        super().__init__(f"device {device_id!r} is disabled")
        self.device_id = device_id


class InvalidCommandError(ValueError):
    """A command this server will not store or send (timeout, parameters, size)."""


class ProvisioningRefusedError(Exception):
    """The request is not signed by a usable provisioning key; `code` says why."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class KeyUnavailableError(Exception):
    """The key exists but its sealed secret does not open: the server's secret key changed."""


class OutOfScopeError(Exception):
    """The key provisions devices of another group or type only."""


class AlreadyProvisionedError(Exception):
    """The device exists and no operator allowed it to provision itself again."""

    def __init__(self, device_id: str) -> None:
        super().__init__(f"device {device_id!r} is provisioned already")
        self.device_id = device_id
