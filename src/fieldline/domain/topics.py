"""The device contract's MQTT topics (SPEC §2): the one place they are spelled."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class Uplink(StrEnum):
    TELEMETRY = "telemetry"
    STATUS = "status"
    HEARTBEAT = "heartbeat"
    COMMAND_RESULT = "commands/result"
    OTA_PROGRESS = "ota/progress"


class Downlink(StrEnum):
    CONFIG = "config"
    COMMANDS = "commands"
    OTA = "ota"


@dataclass(frozen=True, slots=True)
class TopicScheme:
    prefix: str = "devices"

    def uplink(self, device_id: str, kind: Uplink) -> str:
        return f"{self.prefix}/{device_id}/{kind.value}"

    def downlink(self, device_id: str, kind: Downlink) -> str:
        return f"{self.prefix}/{device_id}/{kind.value}"

    def device_publishes(self, device_id: str) -> list[str]:
        """Topics a device may publish to: its own uplink topics only."""
        return [self.uplink(device_id, kind) for kind in Uplink]

    def device_subscribes(self, device_id: str) -> list[str]:
        """Topic filters a device may subscribe to: its own downlink topics only."""
        return [self.downlink(device_id, kind) for kind in Downlink]

    def ingest_filters(self) -> list[str]:
        """What the ingest service subscribes to (every device's uplink)."""
        return [f"{self.prefix}/+/{kind.value}" for kind in Uplink]

    def parse_uplink(self, topic: str) -> tuple[str, Uplink] | None:
        """Split `prefix/{device_id}/{kind}`; None for any other topic."""
        head = self.prefix + "/"
        if not topic.startswith(head):
            return None
        device_id, sep, rest = topic[len(head) :].partition("/")
        if not sep or not device_id:
            return None
        try:
            return device_id, Uplink(rest)
        except ValueError:
            return None
