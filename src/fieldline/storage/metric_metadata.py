"""Metric metadata per device type (migration 0020)."""

from __future__ import annotations

from psycopg import AsyncConnection
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from fieldline.domain.metrics import ANY_TYPE, MetricKind, MetricMeta, applying
from fieldline.storage.errors import NotFoundError

_COLUMNS = "device_type, metric, display_name, unit, decimals, kind, labels"


def _meta(row: dict[str, object]) -> MetricMeta:
    return MetricMeta(
        device_type=str(row["device_type"]),
        metric=str(row["metric"]),
        display_name=str(row["display_name"]),
        unit=str(row["unit"]),
        decimals=row["decimals"],  # type: ignore[arg-type]
        kind=MetricKind(str(row["kind"])),
        labels=dict(row["labels"]),  # type: ignore[call-overload]
    )


async def for_types(conn: AsyncConnection[object], device_types: list[str]) -> list[MetricMeta]:
    """The entries of these types and of `*`, by type and metric."""
    cursor = conn.cursor(row_factory=dict_row)
    await cursor.execute(
        f"SELECT {_COLUMNS} FROM metric_metadata WHERE device_type = ANY(%s)"
        " ORDER BY device_type, metric",
        ([*device_types, ANY_TYPE],),
    )
    return [_meta(row) for row in await cursor.fetchall()]


async def of_devices(
    conn: AsyncConnection[object], device_ids: list[str]
) -> dict[str, dict[str, MetricMeta]]:
    """By device, then metric: the entries each device uses (its type's over `*`'s)."""
    if not device_ids:
        return {}
    cursor = conn.cursor(row_factory=dict_row)
    await cursor.execute(
        "SELECT device_id, device_type FROM devices WHERE device_id = ANY(%s)", (device_ids,)
    )
    types = {str(row["device_id"]): str(row["device_type"]) for row in await cursor.fetchall()}
    if not types:
        return {}
    entries = await for_types(conn, sorted(set(types.values())))
    return {device: applying(entries, device_type) for device, device_type in types.items()}


async def all_entries(conn: AsyncConnection[object]) -> list[MetricMeta]:
    cursor = conn.cursor(row_factory=dict_row)
    await cursor.execute(f"SELECT {_COLUMNS} FROM metric_metadata ORDER BY device_type, metric")
    return [_meta(row) for row in await cursor.fetchall()]


async def put(conn: AsyncConnection[object], meta: MetricMeta, actor: str) -> MetricMeta:
    cursor = conn.cursor(row_factory=dict_row)
    await cursor.execute(
        f"INSERT INTO metric_metadata ({_COLUMNS}, updated_by)"
        " VALUES (%s, %s, %s, %s, %s, %s, %s, %s)"
        " ON CONFLICT (device_type, metric) DO UPDATE SET display_name = EXCLUDED.display_name,"
        " unit = EXCLUDED.unit, decimals = EXCLUDED.decimals, kind = EXCLUDED.kind,"
        " labels = EXCLUDED.labels, updated_at = now(), updated_by = EXCLUDED.updated_by"
        f" RETURNING {_COLUMNS}",
        (
            meta.device_type,
            meta.metric,
            meta.display_name,
            meta.unit,
            meta.decimals,
            meta.kind.value,
            Jsonb(meta.labels),
            actor,
        ),
    )
    row = await cursor.fetchone()
    assert row is not None  # RETURNING of an upsert
    return _meta(row)


async def delete(conn: AsyncConnection[object], device_type: str, metric: str) -> None:
    deleted = await conn.execute(
        "DELETE FROM metric_metadata WHERE device_type = %s AND metric = %s",
        (device_type, metric),
    )
    if deleted.rowcount == 0:
        raise NotFoundError(f"no metadata for {metric!r} of device type {device_type!r}")


async def device_type_of(conn: AsyncConnection[object], device_id: str) -> str:
    cursor = conn.cursor(row_factory=dict_row)
    await cursor.execute("SELECT device_type FROM devices WHERE device_id = %s", (device_id,))
    row = await cursor.fetchone()
    if row is None:
        raise NotFoundError(f"device {device_id!r} does not exist")
    return str(row["device_type"])
