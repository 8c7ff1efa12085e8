"""How an external Mosquitto differs from the registry, without changing anything.

`fieldline broker drift` shows it; `--fix` reconciles the way `fieldline api`
does at every start.
"""

from __future__ import annotations

from collections.abc import Sequence

from fieldline.broker import dynsec
from fieldline.broker.base import Drift
from fieldline.broker.control import LIST_TIMEOUT_SECONDS, DynsecControl
from fieldline.broker.factory import external_client
from fieldline.config import BrokerKind, Settings
from fieldline.domain.devices import DeviceAccess


def require_administered_broker(settings: Settings) -> tuple[str, str]:
    """The admin credentials of an external Mosquitto, or a ValueError saying what to set."""
    if settings.broker != BrokerKind.EXTERNAL:
        raise ValueError(
            "drift is a question for an external broker (FIELDLINE_BROKER=external); the "
            "broker `fieldline up` manages is rewritten from the registry at every start"
        )
    if settings.broker_admin_username is None or settings.broker_admin_password is None:
        raise ValueError(
            "set FIELDLINE_BROKER_ADMIN_USERNAME and FIELDLINE_BROKER_ADMIN_PASSWORD "
            "(the broker's dynamic-security admin)"
        )
    return settings.broker_admin_username, settings.broker_admin_password.get_secret_value()


async def inspect(settings: Settings, devices: Sequence[DeviceAccess]) -> Drift:
    username, password = require_administered_broker(settings)
    endpoint, _ = external_client(settings)
    control = DynsecControl.at(endpoint, username=username, password=password)
    await control.connect()
    try:
        listed = await control.execute(
            [dynsec.list_clients(), dynsec.list_roles()], answer_within=LIST_TIMEOUT_SECONDS
        )
    finally:
        await control.close()
    return dynsec.compute_drift(
        topics=settings.topics,
        devices=devices,
        clients=dynsec.parse_clients(listed[0].data.get("clients")),
        roles=dynsec.parse_roles(listed[1].data.get("roles")),
    )
