"""Everything `run_fleet` needs to know, validated once up front."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

from fieldline.client import ApiAccess
from fieldline.domain.devices import is_valid_device_id
from fieldline.sim.payloads import DEVICE_TYPE, FIRMWARE_VERSION


class MqttVersion(StrEnum):
    # 3.1.1 is the default because the embedded amqtt broker speaks nothing newer.
    V311 = "3.1.1"
    V5 = "5"


@dataclass(frozen=True, slots=True)
class FleetOptions:
    devices: int = 10
    rate: float = 1.0  # telemetry messages per second per device
    duration: float | None = None  # seconds of publishing; None runs until stopped
    qos: int = 1
    mqtt_host: str = "127.0.0.1"
    mqtt_port: int = 1883
    mqtt_version: MqttVersion = MqttVersion.V311
    prefix: str = "sim"  # device ids are `{prefix}-0001`, ...
    topic_prefix: str = "devices"
    group: str | None = None
    # Every K-th telemetry slot of a device is bad / a duplicate / a batch (0: never).
    bad_every: int = 0
    duplicate_every: int = 0
    batch_every: int = 0
    batch_size: int = 10
    heartbeat_interval: float = 30.0
    # Incidents on demand, for alert rules to catch: the first `hot` devices report
    # temperatures HOT_DEGREES above normal, and the last `drop` devices vanish (no
    # DISCONNECT: the broker sends their last will), both `incident_after` seconds in.
    hot: int = 0
    drop: int = 0
    incident_after: float = 10.0
    # End by dropping connections without DISCONNECT, so the broker fires every last will.
    kill: bool = False
    api: ApiAccess | None = None
    create: bool = False  # register the devices (and group) through the API first
    # "KEY_ID:SECRET": each device provisions itself through POST /provision (zero-touch).
    provision_key: str | None = None
    # JSON {device_id: password}: written after `create`, read otherwise.
    credentials_file: Path | None = None
    processes: int = 1
    connect_concurrency: int = 100
    max_inflight: int = 1_000  # unacknowledged QoS 1 publishes per device before it waits
    progress_interval: float = 5.0
    record_message_ids: bool = True
    seed: int | None = None
    # The model firmware updates are for (the devices' `device_type`) and the version
    # the devices start on.
    device_type: str = DEVICE_TYPE
    firmware_version: str = FIRMWARE_VERSION
    # Firmware updates: shares (%) of devices, chosen by a hash of the device id, whose
    # installs fail ("flash write error"), that come back on their old version after the
    # reboot (a rollback), and whose downloads are cut once midway (then resume).
    ota_fail_percent: float = 0.0
    ota_rollback_percent: float = 0.0
    ota_cut_percent: float = 0.0
    ota_download_delay: float = 0.0  # seconds between Range requests (a slow link)
    ota_chunk_bytes: int = 64 * 1024  # bytes per Range request
    ota_install_seconds: float = 1.0  # writing to flash, between installing and installed
    ota_boot_seconds: float = 1.0  # a reboot: from the disconnect to connecting again

    def __post_init__(self) -> None:
        problems: list[str] = []
        if self.devices < 1:
            problems.append("devices must be at least 1")
        if not self.rate > 0:
            problems.append("rate must be positive")
        if self.duration is not None and self.duration < 0:
            problems.append("duration must not be negative")
        if self.qos not in (0, 1):
            problems.append("qos must be 0 or 1")
        for name in ("bad_every", "duplicate_every", "batch_every"):
            if getattr(self, name) < 0:
                problems.append(f"{name} must not be negative")
        if self.hot < 0 or self.drop < 0 or self.hot + self.drop > self.devices:
            problems.append("hot and drop must not be negative nor add up to more than devices")
        if self.incident_after < 0:
            problems.append("incident_after must not be negative")
        if self.batch_size < 1:
            problems.append("batch_size must be at least 1")
        if self.processes < 1 or self.connect_concurrency < 1 or self.max_inflight < 2:
            problems.append("processes, connect_concurrency and max_inflight must be positive")
        if not is_valid_device_id(self.device_id(self.devices)):
            problems.append(f"prefix {self.prefix!r} does not make valid device ids")
        if self.create and self.api is None:
            problems.append("create needs API access")
        if self.provision_key is not None:
            key_id, sep, secret = self.provision_key.partition(":")
            if not (sep and key_id and secret):
                problems.append("provision_key must be KEY_ID:SECRET")
            if self.create:
                problems.append("create and provision_key exclude each other")
            if self.api is None:
                problems.append("provision_key needs the API's address")
        problems += self._ota_problems()
        if problems:
            raise ValueError("; ".join(problems))

    def _ota_problems(self) -> list[str]:
        problems: list[str] = []
        shares = (self.ota_fail_percent, self.ota_rollback_percent, self.ota_cut_percent)
        if not all(0 <= share <= 100 for share in shares):
            problems.append("ota percentages must be between 0 and 100")
        if self.ota_fail_percent + self.ota_rollback_percent > 100:
            problems.append("ota_fail_percent and ota_rollback_percent add up to more than 100")
        if min(self.ota_download_delay, self.ota_install_seconds, self.ota_boot_seconds) < 0:
            problems.append("ota delays must not be negative")
        if self.ota_chunk_bytes < 1:
            problems.append("ota_chunk_bytes must be at least 1")
        if not self.device_type or not self.firmware_version:
            problems.append("device_type and firmware_version must not be empty")
        return problems

    def device_id(self, number: int) -> str:
        """Id of the `number`-th device, counting from 1."""
        return f"{self.prefix}-{number:04d}"

    def device_ids(self) -> list[str]:
        return [self.device_id(n) for n in range(1, self.devices + 1)]
