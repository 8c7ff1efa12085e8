"""MQTT clients the tests use in place of devices."""

from __future__ import annotations

import gmqtt


class NoReconnectClient(gmqtt.Client):  # type: ignore[misc]
    """A gmqtt client that stays dropped once the broker drops or refuses it.

    A test must see what the broker did, and gmqtt otherwise retries once even with
    reconnect_retries 0, after the test closed it, on a socket nobody then closes.
    """

    async def reconnect(self, delay: bool = False) -> None:
        return None
