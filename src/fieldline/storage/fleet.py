"""The fleet at a glance: status counts, ingest activity and the devices table.

These are the dashboard's reads. A device's shown status follows the same rule as
`Device.status`: online but silent for longer than the online timeout is offline;
a disabled device counts as disabled whatever it last said.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any

from psycopg import AsyncConnection

from fieldline.domain.vitals import BATTERY_METRICS, SIGNAL_METRICS
from fieldline.storage.db import Row
from fieldline.storage.writer import ACTIVITY_BUCKET_SECONDS

Conn = AsyncConnection[Row]

_SHOWN_STATUS = (
    "CASE WHEN NOT d.enabled THEN 'disabled'"
    " WHEN d.status = 'online' AND (d.last_seen IS NULL OR d.last_seen < %(cutoff)s)"
    " THEN 'offline' ELSE d.status END"
)


class ShownStatus(StrEnum):
    ONLINE = "online"
    OFFLINE = "offline"
    NEVER_SEEN = "never_seen"
    DISABLED = "disabled"


class SortKey(StrEnum):
    DEVICE_ID = "device_id"
    NAME = "name"
    GROUP = "group"
    DEVICE_TYPE = "device_type"
    STATUS = "status"
    LAST_SEEN = "last_seen"
    FIRMWARE = "firmware_version"
    BATTERY = "battery"
    SIGNAL = "signal"


@dataclass(frozen=True, slots=True)
class StatusCounts:
    total: int
    online: int
    offline: int
    never_seen: int
    disabled: int


@dataclass(frozen=True, slots=True)
class ActivityBucket:
    time: datetime
    readings: int
    rejected: int


@dataclass(frozen=True, slots=True)
class Facets:
    groups: list[str]
    device_types: list[str]
    firmware_versions: list[str]


@dataclass(frozen=True, slots=True)
class TableFilter:
    text: str | None = None
    group: str | None = None
    device_type: str | None = None
    status: ShownStatus | None = None
    firmware_version: str | None = None


@dataclass(frozen=True, slots=True)
class TableRow:
    device_id: str
    name: str
    device_type: str
    group: str | None
    enabled: bool
    status: str
    last_seen: datetime | None
    firmware_version: str | None
    battery: float | None
    signal: float | None


async def status_counts(conn: Conn, *, online_cutoff: datetime) -> StatusCounts:
    cursor = await conn.execute(
        f"SELECT shown, count(*) AS n FROM (SELECT {_SHOWN_STATUS} AS shown FROM devices d) s"
        " GROUP BY shown",
        {"cutoff": online_cutoff},
    )
    counts = {str(row["shown"]): int(row["n"]) for row in await cursor.fetchall()}
    return StatusCounts(
        total=sum(counts.values()),
        online=counts.get(ShownStatus.ONLINE, 0),
        offline=counts.get(ShownStatus.OFFLINE, 0),
        never_seen=counts.get(ShownStatus.NEVER_SEEN, 0),
        disabled=counts.get(ShownStatus.DISABLED, 0),
    )


async def activity(conn: Conn, *, since: datetime, until: datetime) -> list[ActivityBucket]:
    """Readings stored and messages rejected per bucket in [since, until), oldest first.

    Every bucket of the span is present, with zeros where nothing happened.
    """
    cursor = await conn.execute(
        "WITH buckets AS ("
        " SELECT generate_series(date_bin(%(width)s, %(since)s, 'epoch'),"
        "  %(until)s, %(width)s) AS bucket),"
        " stored AS (SELECT bucket, sum(readings) AS n FROM ingest_activity"
        "  WHERE bucket >= %(since)s AND bucket < %(until)s GROUP BY bucket),"
        " refused AS (SELECT date_bin(%(width)s, received_at, 'epoch') AS bucket,"
        "  count(*) AS n FROM rejected_messages"
        "  WHERE received_at >= %(since)s AND received_at < %(until)s GROUP BY 1)"
        " SELECT b.bucket, coalesce(s.n, 0) AS readings, coalesce(r.n, 0) AS rejected"
        " FROM buckets b LEFT JOIN stored s USING (bucket) LEFT JOIN refused r USING (bucket)"
        " ORDER BY b.bucket",
        {"width": f"{ACTIVITY_BUCKET_SECONDS} seconds", "since": since, "until": until},
    )
    return [
        ActivityBucket(row["bucket"], int(row["readings"]), int(row["rejected"]))
        for row in await cursor.fetchall()
    ]


async def facets(conn: Conn) -> Facets:
    """What the devices table can be filtered by."""
    row = await (
        await conn.execute(
            "SELECT"
            " ARRAY(SELECT name FROM groups ORDER BY name) AS groups,"
            " ARRAY(SELECT DISTINCT device_type FROM devices WHERE device_type <> ''"
            "  ORDER BY 1) AS device_types,"
            " ARRAY(SELECT DISTINCT firmware_version FROM devices"
            "  WHERE firmware_version IS NOT NULL ORDER BY 1) AS firmware_versions"
        )
    ).fetchone()
    assert row is not None
    return Facets(row["groups"], row["device_types"], row["firmware_versions"])


def _like(text: str) -> str:
    escaped = text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


def _where(filters: TableFilter) -> tuple[str, dict[str, Any]]:
    clauses = ["true"]
    values: dict[str, Any] = {}
    if filters.text:
        clauses.append("(d.device_id ILIKE %(text)s OR d.name ILIKE %(text)s)")
        values["text"] = _like(filters.text)
    if filters.group is not None:
        clauses.append("g.name = %(group)s")
        values["group"] = filters.group
    if filters.device_type is not None:
        clauses.append("d.device_type = %(device_type)s")
        values["device_type"] = filters.device_type
    if filters.firmware_version is not None:
        clauses.append("d.firmware_version = %(firmware)s")
        values["firmware"] = filters.firmware_version
    if filters.status is not None:
        clauses.append(f"({_SHOWN_STATUS}) = %(status)s")
        values["status"] = filters.status.value
    return " AND ".join(clauses), values


def _latest_of(metrics: tuple[str, ...]) -> str:
    """The row's latest value of the first of `metrics` its device reports."""
    names = ", ".join(f"'{name}'" for name in metrics)  # domain.vitals' constants
    order = " ".join(f"WHEN '{name}' THEN {rank}" for rank, name in enumerate(metrics))
    return (
        "(SELECT l.value FROM telemetry_latest l"
        f" WHERE l.device_id = t.device_id AND l.metric IN ({names})"
        f" ORDER BY CASE l.metric {order} END LIMIT 1)"
    )


_WITH_LATEST = (
    f"t.*, {_latest_of(BATTERY_METRICS)} AS battery, {_latest_of(SIGNAL_METRICS)} AS signal"
)


async def device_table(
    conn: Conn,
    *,
    filters: TableFilter,
    sort: SortKey,
    descending: bool,
    offset: int,
    limit: int,
    online_cutoff: datetime,
) -> tuple[list[TableRow], int]:
    """One page of the devices table and how many devices match in all."""
    where, values = _where(filters)
    values |= {"cutoff": online_cutoff, "offset": offset, "limit": limit}
    direction = "DESC" if descending else "ASC"
    column = "group_name" if sort is SortKey.GROUP else sort.value  # the others are named so
    order = f"ORDER BY {column} {direction} NULLS LAST, device_id {direction}"
    matching = (
        "SELECT d.device_id, d.name, d.device_type, g.name AS group_name, d.enabled,"
        f" {_SHOWN_STATUS} AS status, d.last_seen, d.firmware_version"
        f" FROM devices d LEFT JOIN groups g ON g.id = d.group_id WHERE {where}"
    )
    page = "OFFSET %(offset)s LIMIT %(limit)s"
    if sort in (SortKey.BATTERY, SortKey.SIGNAL):
        query = f"SELECT * FROM (SELECT {_WITH_LATEST} FROM ({matching}) t) t {order} {page}"
    else:  # only the page's rows need their latest values: sort and cut first
        query = f"SELECT {_WITH_LATEST} FROM ({matching} {order} {page}) t {order}"
    rows = await (await conn.execute(query.encode(), values)).fetchall()
    count = await (
        await conn.execute(f"SELECT count(*) AS n FROM ({matching}) t".encode(), values)
    ).fetchone()
    items = [
        TableRow(
            device_id=row["device_id"],
            name=row["name"],
            device_type=row["device_type"],
            group=row["group_name"],
            enabled=row["enabled"],
            status=row["status"],
            last_seen=row["last_seen"],
            firmware_version=row["firmware_version"],
            battery=row["battery"],
            signal=row["signal"],
        )
        for row in rows
    ]
    return items, int(count["n"]) if count else 0


@dataclass(frozen=True, slots=True)
class PlacedDevice:
    """A device and the latest values of the metrics that may hold its position."""

    device_id: str
    name: str
    device_type: str
    group: str | None
    status: str
    latest: dict[str, tuple[float, datetime]]


async def devices_with_latest(
    conn: Conn,
    *,
    metrics: list[str],
    group: str | None,
    device_ids: list[str] | None,
    online_cutoff: datetime,
) -> list[PlacedDevice]:
    """Devices (of `group`, or those named) that have a latest value of any of `metrics`,
    with those values: what the maps place. One query, however many devices."""
    rows = await (
        await conn.execute(
            "SELECT d.device_id, d.name, d.device_type, g.name AS group_name,"
            f" {_SHOWN_STATUS} AS status, l.metric, l.value, l.time"
            " FROM devices d LEFT JOIN groups g ON g.id = d.group_id"
            " JOIN telemetry_latest l ON l.device_id = d.device_id"
            " AND l.metric = ANY(%(metrics)s)"
            " WHERE (%(group)s::text IS NULL OR g.name = %(group)s)"
            " AND (%(ids)s::text[] IS NULL OR d.device_id = ANY(%(ids)s))"
            " ORDER BY d.device_id",
            {"metrics": metrics, "group": group, "ids": device_ids, "cutoff": online_cutoff},
        )
    ).fetchall()
    placed: dict[str, PlacedDevice] = {}
    for row in rows:
        device = placed.get(row["device_id"])
        if device is None:
            device = placed[row["device_id"]] = PlacedDevice(
                device_id=row["device_id"],
                name=row["name"],
                device_type=row["device_type"],
                group=row["group_name"],
                status=row["status"],
                latest={},
            )
        device.latest[row["metric"]] = (row["value"], row["time"])
    return list(placed.values())
