"""The one writer of ingested data: a whole batch in one transaction, bulk statements only.

De-duplication happens in the database (the message ledger's primary key), so
it holds across redeliveries, restarts and several ingest processes.
`unstorable()` tells a batch the database refused for what one of its messages
holds (which only that message's removal cures) from a failure worth retrying.
"""

from __future__ import annotations

import logging
import struct
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta

import psycopg
from psycopg import AsyncConnection
from psycopg.rows import tuple_row

from fieldline.domain.devices import ConnectionStatus
from fieldline.domain.readings import Reading, RejectReason, storable_copy
from fieldline.storage import partitions
from fieldline.storage.commands import ReportedResult, apply_results
from fieldline.storage.rollouts import ProgressReport, apply_progress
from fieldline.storage.telemetry import announce_latest_changes

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class DeviceReadings:
    device_id: str
    received_at: datetime
    readings: list[Reading]


@dataclass(frozen=True, slots=True)
class Presence:
    """A device was heard from. Any uplink means online; only `reported` can say offline.

    `reported` is set for an explicit status message (or last will), which is
    also kept as a status event.
    """

    device_id: str
    seen_at: datetime
    reported: ConnectionStatus | None = None
    firmware_version: str | None = None
    attributes: dict[str, str] = field(default_factory=dict)
    config_version: int | None = None  # the desired-configuration version it applied


@dataclass(frozen=True, slots=True)
class RejectedMessage:
    received_at: datetime
    device_id: str | None
    topic: str
    reason: str
    detail: str
    payload: bytes


@dataclass(frozen=True, slots=True)
class LimitedMessage:
    """Telemetry over its device's rate limit: rejected as `rejected` says, unless every
    reading is already stored (a redelivery), which makes it a duplicate instead."""

    readings: DeviceReadings
    rejected: RejectedMessage


@dataclass(slots=True)
class Batch:
    telemetry: list[DeviceReadings] = field(default_factory=list)
    presence: list[Presence] = field(default_factory=list)  # in arrival order
    rejected: list[RejectedMessage] = field(default_factory=list)
    command_results: list[ReportedResult] = field(default_factory=list)
    ota_progress: list[ProgressReport] = field(default_factory=list)
    limited: list[LimitedMessage] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class WriteResult:
    """What a batch's commit did. Readings are counted one by one, messages as a whole."""

    readings_stored: int
    duplicates: int  # readings
    points: int
    # Messages none of whose readings were new (telemetry only).
    duplicate_messages: int = 0
    # One reason per message kept in the rejected store: those rejected before the
    # write, and those refused here (over the rate limit, results for no open command).
    rejected_reasons: tuple[str, ...] = ()

    def __add__(self, other: WriteResult) -> WriteResult:
        return WriteResult(
            readings_stored=self.readings_stored + other.readings_stored,
            duplicates=self.duplicates + other.duplicates,
            points=self.points + other.points,
            duplicate_messages=self.duplicate_messages + other.duplicate_messages,
            rejected_reasons=self.rejected_reasons + other.rejected_reasons,
        )


# What the database refuses for what a message holds rather than for the state it is in:
# data exceptions (SQLSTATE class 22: untranslatable character, character not in
# repertoire, numeric value out of range, invalid text representation, ...), integrity
# violations (class 23), and text the driver cannot encode (an unpaired surrogate).
# Sending the same message again fails the same way. Connection errors, serialization
# failures and deadlocks are not among them: those are retried.
_UNSTORABLE = (psycopg.DataError, psycopg.IntegrityError, UnicodeError)


def unstorable(error: BaseException) -> bool:
    """Whether a write failed for what the batch holds, so that retrying cannot cure it."""
    return isinstance(error, _UNSTORABLE)


def unstorable_detail(error: BaseException) -> str:
    """The database's (or driver's) words for an unstorable batch, as a rejection keeps them."""
    first = str(error).strip().splitlines()
    return storable_copy(f"{type(error).__name__}: {first[0] if first else 'refused'}")[:500]


class PartitionCache:
    """Days whose partitions exist in every tier, so the hot path asks once per day.

    Only yesterday and later are remembered: retention may drop an older day's partition
    (or its month's, or its year's) under a long-running process, and a late reading of
    that day must find it created again rather than fail the batch. Retention never
    drops a partition holding yesterday (each tier is kept at least a day), so what is
    remembered stays true; an older day costs a `CREATE TABLE IF NOT EXISTS` per tier
    in each batch that has readings of it.
    """

    def __init__(self) -> None:
        self._known: set[date] = set()

    async def ensure(self, conn: AsyncConnection[object], days: Iterable[date]) -> None:
        recent = datetime.now(UTC).date() - timedelta(days=1)
        new = {day for day in days if day < recent or day not in self._known}
        if new:
            await partitions.create_for_days(conn, new)
            self._known |= {day for day in new if day >= recent}


class RecentPresence:
    """What this process last wrote of each device's presence, so that a device heard
    in every batch has its `last_seen` written about once a second, not once per batch.

    Each write of `devices` is a new row version and an index entry (`last_seen` is
    indexed for the offline timeout): at small batches these writes cost PostgreSQL
    more than the points themselves. An explicit status, a firmware change or a
    device last written as offline is always written.
    """

    def __init__(self, granularity: timedelta = timedelta(seconds=1)) -> None:
        self._granularity = granularity
        self._written: dict[str, tuple[datetime, bool, str | None]] = {}

    def needed(self, device_id: str, seen: datetime, online: bool, firmware: str | None) -> bool:
        last = self._written.get(device_id)
        return (
            last is None
            or not (online and last[1])
            or (firmware is not None and firmware != last[2])
            or seen - last[0] >= self._granularity
        )

    def remember(self, written: dict[str, tuple[datetime, bool, str | None]]) -> None:
        for device_id, (seen, online, firmware) in written.items():
            last = self._written.get(device_id)
            self._written[device_id] = (seen, online, firmware or (last[2] if last else None))


async def write_batch(
    conn: AsyncConnection[object],
    batch: Batch,
    partitions: PartitionCache,
    recent: RecentPresence | None = None,
) -> WriteResult:
    """Store a batch atomically; answer how many readings were new."""
    fresh = _unique_in_batch(batch.telemetry)
    days = {reading.time.date() for _, reading in fresh}
    await partitions.ensure(conn, days)
    written: dict[str, tuple[datetime, bool, str | None]] = {}
    async with conn.transaction():
        # The ledger is written in the same transaction as the points it guards.
        stored = await _record_ledger(conn, fresh)
        points = _prepare(stored, await _watched_metrics(conn) if stored else frozenset())
        await _copy_points(conn, points)
        await _copy_inbox(conn, points)
        await announce_latest_changes(conn, await _upsert_latest(conn, points))
        await _add_to_rollups(conn, points)
        await _count_activity(conn, len(stored), points.count)
        await _upsert_attributes(conn, stored, batch.presence)
        written = await _update_presence(conn, batch.presence, recent)
        # After the ledger took this batch's own readings: a limited repeat of one is known.
        limited = await _settle_limited(conn, batch.limited)
        await _copy_rejected(conn, [*batch.rejected, *limited.kept])
        refused = await _apply_command_results(conn, batch.command_results)
        refused += await _apply_ota_progress(conn, batch.ota_progress)
    if recent is not None:  # only what was committed
        recent.remember(written)
    total = sum(len(item.readings) for item in batch.telemetry)
    return WriteResult(
        readings_stored=len(stored),
        duplicates=total - len(stored) + limited.duplicate_readings,
        points=points.count,
        duplicate_messages=(
            _duplicate_messages(batch.telemetry, stored) if len(stored) < total else 0
        )
        + limited.duplicate_messages,
        rejected_reasons=tuple(r.reason for r in (*batch.rejected, *limited.kept, *refused)),
    )


def _duplicate_messages(telemetry: list[DeviceReadings], stored: list[tuple[str, Reading]]) -> int:
    """Messages none of whose readings was stored (all already in the ledger)."""
    new = {id(reading) for _, reading in stored}
    return sum(1 for item in telemetry if not any(id(r) in new for r in item.readings))


@dataclass(frozen=True, slots=True)
class _Limited:
    kept: list[RejectedMessage]  # to the rejected store, as rate_limited
    duplicate_messages: int
    duplicate_readings: int


async def _settle_limited(conn: AsyncConnection[object], limited: list[LimitedMessage]) -> _Limited:
    """Over-limit messages: a duplicate when the ledger has every reading, else rejected.

    A redelivery is not the device sending too fast, and must not bury real
    rejections; a message with a reading the ledger cannot know (no id) is new.
    """
    if not limited:
        return _Limited([], 0, 0)
    keys = {
        (item.readings.device_id, r.message_id)
        for item in limited
        for r in item.readings.readings
        if r.message_id is not None
    }
    known: set[tuple[str, str]] = set()
    if keys:
        devices, ids = zip(*keys, strict=True)
        cursor = conn.cursor(row_factory=tuple_row)
        await cursor.execute(
            "SELECT device_id, message_id FROM message_ledger"
            " WHERE (device_id, message_id) IN"
            " (SELECT * FROM unnest(%b::text[], %b::text[]))",
            (list(devices), list(ids)),
        )
        known = {(row[0], row[1]) for row in await cursor.fetchall()}
    kept: list[RejectedMessage] = []
    duplicate_messages = duplicate_readings = 0
    for item in limited:
        device, readings = item.readings.device_id, item.readings.readings
        if all((device, r.message_id) in known for r in readings):
            duplicate_messages += 1
            duplicate_readings += len(readings)
        else:
            kept.append(item.rejected)
    return _Limited(kept, duplicate_messages, duplicate_readings)


def _unique_in_batch(telemetry: list[DeviceReadings]) -> list[tuple[str, Reading]]:
    """Readings of the batch minus repeats within it; the ledger decides the rest."""
    seen: set[tuple[str, str]] = set()
    fresh: list[tuple[str, Reading]] = []
    for item in telemetry:
        for reading in item.readings:
            if reading.message_id is not None:
                key = (item.device_id, reading.message_id)
                if key in seen:
                    continue
                seen.add(key)
            fresh.append((item.device_id, reading))
    return fresh


async def _record_ledger(
    conn: AsyncConnection[object], fresh: list[tuple[str, Reading]]
) -> list[tuple[str, Reading]]:
    keyed = [(device, r) for device, r in fresh if r.message_id is not None]
    if not keyed:
        return fresh
    # Rows by position whatever the connection's row factory (ingest's or a pooled one).
    cursor = conn.cursor(row_factory=tuple_row)
    await cursor.execute(
        "INSERT INTO message_ledger (device_id, message_id) "
        "SELECT * FROM unnest(%b::text[], %b::text[]) "
        "ON CONFLICT DO NOTHING RETURNING device_id, message_id",
        ([device for device, _ in keyed], [r.message_id for _, r in keyed]),
    )
    inserted = {(row[0], row[1]) for row in await cursor.fetchall()}
    return [
        (device, r)
        for device, r in fresh
        if r.message_id is None or (device, r.message_id) in inserted
    ]


# Binary COPY rows of `telemetry (time, device_id, metric, value)`, encoded here: one
# pass over the batch builds them and the latest values and hourly rollups together,
# at a third of the cost of psycopg's per-row `write_row` (profiled under load).
_COPY_SIGNATURE = b"PGCOPY\n\xff\r\n\x00" + bytes(8)  # signature, flags, header extension
_COPY_TRAILER = b"\xff\xff"
_ROW_START = struct.Struct(">hiq")  # field count, then the time field: length, microseconds
_VALUE = struct.Struct(">id")  # length, float8
_LENGTH = struct.Struct(">i")
_PG_EPOCH = datetime(2000, 1, 1, tzinfo=UTC)

Series = tuple[str, str]  # device, metric


@dataclass(slots=True)
class _Points:
    """A batch's stored readings, prepared for the statements that write them."""

    copy: bytes
    count: int
    inbox: bytes | None  # the same rows, of watched metrics only, for `alert_inbox`
    latest: dict[Series, tuple[datetime, float]]  # the newest value of each series
    hourly: dict[tuple[str, str, datetime], list[float]]  # count, sum, min, max per hour


def _prepare(stored: list[tuple[str, Reading]], watched: frozenset[str]) -> _Points:
    rows: list[bytes] = [_COPY_SIGNATURE]
    inbox: list[bytes] = [_COPY_SIGNATURE]
    names: dict[Series, bytes] = {}
    latest: dict[Series, tuple[datetime, float]] = {}
    hourly: dict[tuple[str, str, datetime], list[float]] = {}
    count = 0
    for device, reading in stored:
        time = reading.time
        since = time - _PG_EPOCH
        start = _ROW_START.pack(
            4, 8, (since.days * 86_400 + since.seconds) * 1_000_000 + since.microseconds
        )
        hour = time.replace(minute=0, second=0, microsecond=0)
        for metric, value in reading.metrics.items():
            series = (device, metric)
            name = names.get(series)
            if name is None:
                name = names[series] = _text(device) + _text(metric)
            row = (start, name, _VALUE.pack(8, value))
            rows += row
            if metric in watched:
                inbox += row
            count += 1
            current = latest.get(series)
            if current is None or current[0] <= time:
                latest[series] = (time, value)
            rollup = hourly.get((device, metric, hour))
            if rollup is None:
                hourly[device, metric, hour] = [1, value, value, value]
            else:
                rollup[0] += 1
                rollup[1] += value
                if value < rollup[2]:
                    rollup[2] = value
                elif value > rollup[3]:
                    rollup[3] = value
    rows.append(_COPY_TRAILER)
    inbox.append(_COPY_TRAILER)
    return _Points(
        b"".join(rows), count, b"".join(inbox) if len(inbox) > 2 else None, latest, hourly
    )


def _text(value: str) -> bytes:
    encoded = value.encode()
    return _LENGTH.pack(len(encoded)) + encoded


async def _copy_points(conn: AsyncConnection[object], points: _Points) -> None:
    if points.count:
        async with conn.cursor().copy(
            "COPY telemetry (time, device_id, metric, value) FROM STDIN (FORMAT BINARY)"
        ) as copy:
            await copy.write(points.copy)


async def _watched_metrics(conn: AsyncConnection[object]) -> frozenset[str]:
    """The metrics some enabled threshold rule watches, read in the batch's transaction.

    Read per batch rather than cached: a rule takes effect with the next batch in
    every ingest process, and the partial index makes it a read of the rules'
    metrics only. Measured (scripts/bench_alert_inbox.py, PostgreSQL 15 on the shared
    2-core machine, 2,000-message batches of 4 metrics, 60 batches per case,
    interleaved): median 306 ms a batch with no rules, 317 with 1,000 rules on other
    metrics, 296 with 1,000 rules watching 1 of the 4 metrics (2,000 inbox rows a
    batch), 291 with every metric watched (8,000 rows): the query and the inbox's
    COPY are within the machine's noise (about ±5 %).
    """
    cursor = conn.cursor(row_factory=tuple_row)
    await cursor.execute(
        "SELECT array_agg(DISTINCT metric) FROM alert_rules WHERE enabled AND kind = 'threshold'"
    )
    row = await cursor.fetchone()
    return frozenset(row[0]) if row and row[0] else frozenset()


async def _copy_inbox(conn: AsyncConnection[object], points: _Points) -> None:
    """Readings of watched metrics to the evaluator's inbox, in the transaction that
    stores them: committed together, so no process restart or second ingest process
    loses or repeats one (the evaluator deletes what it applies)."""
    if points.inbox is not None:
        async with conn.cursor().copy(
            "COPY alert_inbox (time, device_id, metric, value) FROM STDIN (FORMAT BINARY)"
        ) as copy:
            await copy.write(points.inbox)


async def _upsert_latest(conn: AsyncConnection[object], points: _Points) -> set[str]:
    """Keep each series' newest value; answer the devices that had values in the batch."""
    latest = points.latest
    if not latest:
        return set()
    keys = sorted(latest)
    await conn.execute(
        "INSERT INTO telemetry_latest (device_id, metric, time, value) "
        "SELECT * FROM unnest(%b::text[], %b::text[], %b::timestamptz[], %b::float8[]) "
        "ON CONFLICT (device_id, metric) DO UPDATE"
        " SET time = EXCLUDED.time, value = EXCLUDED.value "
        "WHERE telemetry_latest.time <= EXCLUDED.time",
        (
            [k[0] for k in keys],
            [k[1] for k in keys],
            [latest[k][0] for k in keys],
            [latest[k][1] for k in keys],
        ),
    )
    return {device for device, _ in keys}


async def _add_to_rollups(conn: AsyncConnection[object], points: _Points) -> None:
    """Add the batch's points to their hourly and daily rollups (count, sum, min, max)."""
    hours = points.hourly
    if not hours:
        return
    days: dict[tuple[str, str, datetime], list[float]] = {}
    for (device, metric, hour), (count, total, low, high) in hours.items():
        key = (device, metric, hour.replace(hour=0))
        day = days.get(key)
        if day is None:
            days[key] = [count, total, low, high]
        else:
            day[0] += count
            day[1] += total
            day[2] = min(day[2], low)
            day[3] = max(day[3], high)
    await _upsert_rollups(conn, "telemetry_hourly", "hour", hours)
    await _upsert_rollups(conn, "telemetry_daily", "day", days)


async def _upsert_rollups(
    conn: AsyncConnection[object],
    table: str,
    column: str,
    rollups: dict[tuple[str, str, datetime], list[float]],
) -> None:
    keys = sorted(rollups)  # the same lock order in every ingest process
    await conn.execute(
        f"INSERT INTO {table} AS r (device_id, metric, {column}, count, sum, min, max) "
        "SELECT * FROM unnest(%b::text[], %b::text[], %b::timestamptz[], %b::int8[],"
        " %b::float8[], %b::float8[], %b::float8[]) "
        f"ON CONFLICT (device_id, metric, {column}) DO UPDATE SET count = r.count + EXCLUDED.count,"
        " sum = r.sum + EXCLUDED.sum, min = least(r.min, EXCLUDED.min),"
        " max = greatest(r.max, EXCLUDED.max)".encode(),
        (
            [k[0] for k in keys],
            [k[1] for k in keys],
            [k[2] for k in keys],
            [int(rollups[k][0]) for k in keys],
            [rollups[k][1] for k in keys],
            [rollups[k][2] for k in keys],
            [rollups[k][3] for k in keys],
        ),
    )


ACTIVITY_BUCKET_SECONDS = 10


async def _count_activity(conn: AsyncConnection[object], readings: int, points: int) -> None:
    """Add this batch to the 10-second bucket the dashboard's ingest rate is read from."""
    if readings == 0:
        return
    await conn.execute(
        "INSERT INTO ingest_activity (bucket, writer, readings, points) VALUES"
        " (date_bin(make_interval(secs => %s), now(), 'epoch'), pg_backend_pid(), %s, %s)"
        " ON CONFLICT (bucket, writer) DO UPDATE SET"
        " readings = ingest_activity.readings + excluded.readings,"
        " points = ingest_activity.points + excluded.points",
        (ACTIVITY_BUCKET_SECONDS, readings, points),
    )


async def _upsert_attributes(
    conn: AsyncConnection[object], stored: list[tuple[str, Reading]], presence: list[Presence]
) -> None:
    latest: dict[tuple[str, str], tuple[datetime, str]] = {}

    def offer(device: str, time: datetime, attributes: dict[str, str]) -> None:
        for key, value in attributes.items():
            current = latest.get((device, key))
            if current is None or current[0] <= time:
                latest[(device, key)] = (time, value)

    for device, reading in stored:
        offer(device, reading.time, reading.attributes)
    for item in presence:
        offer(item.device_id, item.seen_at, item.attributes)
    if not latest:
        return
    keys = sorted(latest)
    await conn.execute(
        "INSERT INTO device_attributes (device_id, key, time, value) "
        "SELECT * FROM unnest(%b::text[], %b::text[], %b::timestamptz[], %b::text[]) "
        "ON CONFLICT (device_id, key) DO UPDATE SET time = EXCLUDED.time, value = EXCLUDED.value "
        "WHERE device_attributes.time <= EXCLUDED.time",
        (
            [k[0] for k in keys],
            [k[1] for k in keys],
            [latest[k][0] for k in keys],
            [latest[k][1] for k in keys],
        ),
    )


async def _update_presence(
    conn: AsyncConnection[object], presence: list[Presence], recent: RecentPresence | None
) -> dict[str, tuple[datetime, bool, str | None]]:
    """last_seen, online/offline and reported firmware; the last word per device wins.

    Answers what it wrote, per device, for `recent` to remember once committed.
    """
    state: dict[str, tuple[datetime, bool, str | None]] = {}
    events: list[Presence] = []
    for p in presence:
        firmware = p.firmware_version or state.get(p.device_id, (p.seen_at, True, None))[2]
        state[p.device_id] = (p.seen_at, p.reported != ConnectionStatus.OFFLINE, firmware)
        if p.reported is not None:
            events.append(p)
    if recent is not None:
        reported = {p.device_id for p in events}
        state = {
            device: values
            for device, values in state.items()
            if device in reported or recent.needed(device, *values)
        }
    devices = sorted(state)
    if not devices:
        return state
    await conn.execute(
        "UPDATE devices AS d SET last_seen = greatest(d.last_seen, v.seen),"
        " status = CASE WHEN v.online THEN 'online' ELSE 'offline' END,"
        " firmware_version = coalesce(v.firmware, d.firmware_version) "
        "FROM unnest(%b::text[], %b::timestamptz[], %b::bool[], %b::text[])"
        " AS v(device_id, seen, online, firmware) "
        "WHERE d.device_id = v.device_id",
        (
            devices,
            [state[d][0] for d in devices],
            [state[d][1] for d in devices],
            [state[d][2] for d in devices],
        ),
    )
    # Configuration versions are reported by status messages only: rare, so a statement apart.
    applied = {p.device_id: p for p in presence if p.config_version is not None}
    if applied:
        await conn.execute(
            "UPDATE devices AS d SET reported_config_version = v.version,"
            " config_reported_at = v.time "
            "FROM unnest(%b::text[], %b::bigint[], %b::timestamptz[])"
            " AS v(device_id, version, time) "
            "WHERE d.device_id = v.device_id"
            " AND (d.config_reported_at IS NULL OR d.config_reported_at <= v.time)",
            (
                list(applied),
                [p.config_version for p in applied.values()],
                [p.seen_at for p in applied.values()],
            ),
        )
    if events:
        await conn.execute(
            "INSERT INTO device_status_events (device_id, time, status) "
            "SELECT * FROM unnest(%b::text[], %b::timestamptz[], %b::text[])",
            (
                [e.device_id for e in events],
                [e.seen_at for e in events],
                [str(e.reported) for e in events],
            ),
        )
    return state


async def _copy_rejected(conn: AsyncConnection[object], rejected: list[RejectedMessage]) -> None:
    if not rejected:
        return
    async with conn.cursor().copy(
        "COPY rejected_messages (received_at, device_id, topic, reason, detail, payload) "
        "FROM STDIN (FORMAT BINARY)"
    ) as copy:
        copy.set_types(["timestamptz", "text", "text", "text", "text", "bytea"])
        # The payload is bytes and stays as it came; a detail may quote what the device
        # sent, so text is made storable here: a rejection must never fail its batch.
        for item in rejected:
            await copy.write_row(
                (
                    item.received_at,
                    None if item.device_id is None else storable_copy(item.device_id),
                    storable_copy(item.topic),
                    item.reason,
                    storable_copy(item.detail),
                    item.payload,
                )
            )


async def _apply_ota_progress(
    conn: AsyncConnection[object], reports: list[ProgressReport]
) -> list[RejectedMessage]:
    """Record OTA progress on the updates under way; keep the others as rejected."""
    if not reports:
        return []
    refusals = await apply_progress(conn, reports)  # type: ignore[arg-type]
    refused = [
        RejectedMessage(
            item.received_at,
            item.device_id,
            item.topic,
            RejectReason.NO_UPDATE.value,
            refusal,
            item.payload,
        )
        for item, refusal in zip(reports, refusals, strict=True)
        if refusal is not None
    ]
    await _copy_rejected(conn, refused)
    return refused


async def _apply_command_results(
    conn: AsyncConnection[object], results: list[ReportedResult]
) -> list[RejectedMessage]:
    """Close the commands the results answer; keep the others as rejected messages."""
    if not results:
        return []
    outcomes = await apply_results(conn, results)
    refused = [
        RejectedMessage(
            item.received_at,
            item.device_id,
            item.topic,
            rejection.reason.value,
            rejection.detail,
            item.payload,
        )
        for item, rejection in zip(results, outcomes, strict=True)
        if rejection is not None
    ]
    await _copy_rejected(conn, refused)
    return refused
