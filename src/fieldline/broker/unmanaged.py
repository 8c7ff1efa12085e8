"""A broker fieldline can reach but not administer (e.g. EMQX pointed at fieldline).

Credentials and ACLs are the broker's own business there, so device changes
are only logged: the operator's broker must enforce them. A device under one of
fieldline's own client ids is still refused here, as every adapter refuses it.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from fieldline.broker.base import BrokerEndpoint, Drift, ServiceAccount, refuse_reserved
from fieldline.domain.devices import DeviceAccess
from fieldline.ops.sockets import accepts_connections

logger = logging.getLogger(__name__)


class UnmanagedBroker:
    def __init__(self, *, endpoint: BrokerEndpoint, service: ServiceAccount) -> None:
        self._endpoint = endpoint
        self._service = service

    @property
    def endpoint(self) -> BrokerEndpoint:
        return self._endpoint

    @property
    def service(self) -> ServiceAccount:
        return self._service

    async def start(self, devices: Sequence[DeviceAccess]) -> Drift:
        logger.warning(
            "external broker without admin credentials: device credentials are not managed",
            extra={"host": self._endpoint.host, "port": self._endpoint.port},
        )
        return Drift()

    async def stop(self) -> None:
        return None

    async def apply(self, device: DeviceAccess, *, password: str | None = None) -> None:
        refuse_reserved(device.device_id)
        logger.warning(
            "device change not propagated to the unmanaged broker",
            extra={"device_id": device.device_id, "enabled": device.enabled},
        )

    async def remove(self, device_id: str) -> None:
        logger.warning(
            "device removal not propagated to the unmanaged broker", extra={"device_id": device_id}
        )

    async def healthy(self) -> bool:
        return await accepts_connections(self._endpoint.host, self._endpoint.client_port)
