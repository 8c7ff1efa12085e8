"""What the backup tests share: a database with devices, users and days of telemetry in
several partitions, and a data directory with a secret and a CA key."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg
from psycopg.rows import dict_row

from fieldline.domain.readings import Reading
from fieldline.storage.migrate import migrate
from fieldline.storage.writer import Batch, DeviceReadings, PartitionCache, write_batch
from tests.conftest import create_devices

DEVICES = ("cold-room-1", "cold-room-2", "truck-7")


async def seed(url: str, *, days: int = 3, per_hour: int = 4) -> int:
    """Migrate, then store `days` days of readings of two metrics for each device; answer
    the points stored."""
    await migrate(url)
    now = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    first = now - timedelta(days=days)
    async with await psycopg.AsyncConnection.connect(
        url, autocommit=True, row_factory=dict_row
    ) as conn:
        await create_devices(conn, *DEVICES)
        await conn.execute(
            "INSERT INTO users (username, password_hash, role) VALUES ('ops', 'x', 'operator')"
        )
        count = days * 24 * per_hour
        batch = Batch(
            telemetry=[
                DeviceReadings(
                    device,
                    now,
                    [
                        Reading(
                            message_id=f"{device}-{i}",
                            time=first + timedelta(minutes=i * 60 // per_hour),
                            metrics={"temperature": i % 17 - 4.25, "humidity": 40.0 + i % 9},
                            attributes={},
                        )
                        for i in range(count)
                    ],
                )
                for device in DEVICES
            ]
        )
        await write_batch(conn, batch, PartitionCache())  # type: ignore[arg-type]
    return 2 * count * len(DEVICES)


def data_dir(root: Path) -> Path:
    """A data directory as `fieldline up` and `fieldline certs` leave it (their secrets)."""
    (root / "secrets").mkdir(parents=True, mode=0o700)
    (root / "secrets" / "secret_key").write_text("the-api-signing-key\n")
    (root / "certs").mkdir(mode=0o700)
    (root / "certs" / "ca.key").write_text("-----BEGIN PRIVATE KEY-----\nnot a real key\n")
    (root / "certs" / "ca.crt").write_text("-----BEGIN CERTIFICATE-----\nnot real\n")
    return root
