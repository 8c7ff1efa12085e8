"""What a simulation sent: live counters per device, and the frozen reports built from them."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

from fieldline.sim.payloads import BAD_KINDS, BadKind
from fieldline.sim.values import METRICS_PER_READING


class DeviceStats:
    """Counters one device updates on the hot path; snapshotted into a DeviceReport."""

    __slots__ = (
        "bad",
        "batches",
        "commands_answered",
        "configs_applied",
        "connect_failures",
        "connected",
        "connections_lost",
        "device_id",
        "download_resumes",
        "dropped_offline",
        "duplicates",
        "ever_connected",
        "firmware_version",
        "heartbeats",
        "message_ids",
        "readings",
        "refused",
        "rollbacks",
        "status_published",
        "telemetry_ok",
        "update_failures",
        "updates_installed",
    )

    def __init__(self, *, device_id: str, record_message_ids: bool, firmware_version: str) -> None:
        self.device_id = device_id
        self.firmware_version = firmware_version  # the version it runs now
        self.connected = False
        self.ever_connected = False
        self.connect_failures = 0  # no answer: unreachable, timed out, connection reset
        self.refused: dict[str, int] = {}  # by the broker's reason (CONNACK return code)
        self.connections_lost = 0  # dropped after connecting (then the device reconnects)
        self.telemetry_ok = 0
        self.batches = 0
        self.readings = 0
        self.bad: dict[BadKind, int] = dict.fromkeys(BAD_KINDS, 0)
        self.duplicates = 0
        self.heartbeats = 0
        self.status_published = 0
        self.dropped_offline = 0
        self.configs_applied = 0
        self.commands_answered = 0
        self.updates_installed = 0  # firmware installed and booted into
        self.update_failures: dict[str, int] = {}  # updates reported failed, by reason
        self.rollbacks = 0  # installed, then came back on the old version
        self.download_resumes = 0  # image requests that continued after a cut
        self.message_ids: list[str] | None = [] if record_message_ids else None

    @property
    def bad_total(self) -> int:
        return sum(self.bad.values())

    def report(self) -> DeviceReport:
        return DeviceReport(
            device_id=self.device_id,
            connected=self.ever_connected,
            connect_failures=self.connect_failures,
            refused=dict(self.refused),
            connections_lost=self.connections_lost,
            telemetry_ok=self.telemetry_ok,
            batches=self.batches,
            readings=self.readings,
            bad=dict(self.bad),
            duplicates=self.duplicates,
            heartbeats=self.heartbeats,
            status_published=self.status_published,
            dropped_offline=self.dropped_offline,
            configs_applied=self.configs_applied,
            commands_answered=self.commands_answered,
            firmware_version=self.firmware_version,
            updates_installed=self.updates_installed,
            update_failures=dict(self.update_failures),
            rollbacks=self.rollbacks,
            download_resumes=self.download_resumes,
            message_ids=tuple(self.message_ids or ()),
        )


@dataclass(frozen=True, slots=True)
class DeviceReport:
    """What one device sent over the whole run."""

    device_id: str
    connected: bool  # connected at least once
    connect_failures: int  # attempts the broker never answered (unreachable, timed out)
    refused: Mapping[str, int]  # attempts the broker refused, by its reason
    connections_lost: int  # connections dropped after they were accepted
    telemetry_ok: int  # good telemetry publishes: single readings and batches
    batches: int  # of which `{"readings": [...]}` batches
    readings: int  # good readings, single or inside batches
    bad: Mapping[BadKind, int]
    duplicates: int  # re-sent earlier good messages (same message_id)
    heartbeats: int
    status_published: int  # online/offline status messages, not the will
    dropped_offline: int  # telemetry slots skipped while disconnected
    configs_applied: int  # configuration versions received and reported back
    commands_answered: int  # distinct commands answered
    firmware_version: str  # the version it ran at the end
    updates_installed: int  # firmware updates installed and booted into
    update_failures: Mapping[str, int]  # updates reported failed, by reason
    rollbacks: int  # updates installed that came back on the old version
    download_resumes: int  # image requests that continued after a cut
    # message_id of every good reading, in sending order (empty when not recorded).
    message_ids: tuple[str, ...] = field(repr=False)

    @property
    def points(self) -> int:
        """Metric values the platform should store for this device's good readings."""
        return self.readings * METRICS_PER_READING

    @property
    def bad_total(self) -> int:
        return sum(self.bad.values())


@dataclass(frozen=True, slots=True)
class FleetProgress:
    """Running totals, reported every few seconds while the fleet runs."""

    elapsed_s: float
    devices: int
    devices_connected: int
    telemetry_ok: int
    bad: int
    duplicates: int
    connect_failures: int
    refused: int
    publish_rate: float  # telemetry publishes per second since the previous snapshot

    @property
    def telemetry_total(self) -> int:
        return self.telemetry_ok + self.bad + self.duplicates

    def summary(self) -> str:
        return (
            f"[{self.elapsed_s:7.1f}s] devices {self.devices_connected}/{self.devices} connected, "
            f"sent {self.telemetry_total} (ok {self.telemetry_ok}, bad {self.bad}, "
            f"dup {self.duplicates}), {self.publish_rate:.0f} msg/s, "
            f"refused {self.refused}, connect failures {self.connect_failures}"
        )


def progress_of(
    stats: Iterable[DeviceStats], *, elapsed_s: float, publish_rate: float
) -> FleetProgress:
    devices = connected = ok = bad = dup = failures = refused = 0
    for s in stats:
        devices += 1
        connected += s.connected
        ok += s.telemetry_ok
        bad += s.bad_total
        dup += s.duplicates
        failures += s.connect_failures
        refused += sum(s.refused.values())
    return FleetProgress(
        elapsed_s=elapsed_s,
        devices=devices,
        devices_connected=connected,
        telemetry_ok=ok,
        bad=bad,
        duplicates=dup,
        connect_failures=failures,
        refused=refused,
        publish_rate=publish_rate,
    )


@dataclass(frozen=True, slots=True)
class SimulationReport:
    """The outcome of `run_fleet`: per device, and totals over the fleet."""

    devices: tuple[DeviceReport, ...]
    elapsed_s: float  # from the first connect attempt to the last disconnect

    @property
    def devices_connected(self) -> int:
        return sum(d.connected for d in self.devices)

    @property
    def connect_failures(self) -> int:
        return sum(d.connect_failures for d in self.devices)

    @property
    def refused(self) -> dict[str, int]:
        """Connection attempts the broker refused, by its reason, over the fleet."""
        totals: dict[str, int] = {}
        for d in self.devices:
            for reason, n in d.refused.items():
                totals[reason] = totals.get(reason, 0) + n
        return totals

    @property
    def connections_lost(self) -> int:
        return sum(d.connections_lost for d in self.devices)

    @property
    def telemetry_ok(self) -> int:
        return sum(d.telemetry_ok for d in self.devices)

    @property
    def readings(self) -> int:
        return sum(d.readings for d in self.devices)

    @property
    def points(self) -> int:
        return sum(d.points for d in self.devices)

    @property
    def bad(self) -> dict[BadKind, int]:
        return {kind: sum(d.bad[kind] for d in self.devices) for kind in BAD_KINDS}

    @property
    def duplicates(self) -> int:
        return sum(d.duplicates for d in self.devices)

    @property
    def telemetry_total(self) -> int:
        return self.telemetry_ok + sum(self.bad.values()) + self.duplicates

    @property
    def publish_rate(self) -> float:
        return self.telemetry_total / self.elapsed_s if self.elapsed_s > 0 else 0.0

    def device(self, device_id: str) -> DeviceReport:
        for d in self.devices:
            if d.device_id == device_id:
                return d
        raise KeyError(device_id)

    def summary(self) -> str:
        bad = self.bad
        bad_detail = ", ".join(f"{kind.value} {n}" for kind, n in bad.items() if n)
        refused = self.refused
        refused_detail = ", ".join(f"{reason} {n}" for reason, n in sorted(refused.items()))
        lines = [
            f"devices connected: {self.devices_connected}/{len(self.devices)} "
            f"(connections refused {sum(refused.values())}"
            f"{f' ({refused_detail})' if refused_detail else ''}, "
            f"connect failures {self.connect_failures}, "
            f"connections lost {self.connections_lost})",
            f"telemetry sent: {self.telemetry_total} in {self.elapsed_s:.1f}s "
            f"({self.publish_rate:.0f} msg/s): ok {self.telemetry_ok} "
            f"({self.readings} readings, {self.points} points), "
            f"bad {sum(bad.values())}{f' ({bad_detail})' if bad_detail else ''}, "
            f"duplicates {self.duplicates}",
            f"configurations applied: {sum(d.configs_applied for d in self.devices)}, "
            f"commands answered: {sum(d.commands_answered for d in self.devices)}",
        ]
        if any(d.updates_installed or d.update_failures for d in self.devices):
            lines.append(self._updates_summary())
        return "\n".join(lines)

    def _updates_summary(self) -> str:
        failures: dict[str, int] = {}
        for d in self.devices:
            for reason, n in d.update_failures.items():
                failures[reason] = failures.get(reason, 0) + n
        detail = ", ".join(f"{reason} {n}" for reason, n in sorted(failures.items()))
        versions: dict[str, int] = {}
        for d in self.devices:
            versions[d.firmware_version] = versions.get(d.firmware_version, 0) + 1
        running = ", ".join(f"{v} on {n}" for v, n in sorted(versions.items()))
        return (
            f"firmware updates: installed {sum(d.updates_installed for d in self.devices)}, "
            f"failed {sum(failures.values())}{f' ({detail})' if detail else ''}, "
            f"rolled back {sum(d.rollbacks for d in self.devices)}, "
            f"downloads resumed {sum(d.download_resumes for d in self.devices)}; "
            f"running {running}"
        )


ProgressCallback = Callable[[FleetProgress], None]
