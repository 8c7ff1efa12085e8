"""`fieldline archive` as a user runs it: against a real S3-compatible server, on an
external database, from a shell."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta

import boto3
import psycopg
from psycopg.rows import dict_row

from fieldline.domain.readings import Reading
from fieldline.storage.writer import Batch, DeviceReadings, PartitionCache, write_batch
from tests.conftest import PgServer, S3Server, create_devices
from tests.e2e.test_cli import fieldline


async def test_archive_run_list_verify_and_import_from_the_shell(
    pg15_database_url: str, pg15: PgServer, s3_server: S3Server
) -> None:
    bucket = s3_server.create_bucket()
    env = {"DATABASE_URL": pg15_database_url, "FIELDLINE_LOG_LEVEL": "WARNING"}
    assert fieldline("migrate", env=env).returncode == 0
    unset = fieldline("archive", "run", env=env)
    assert unset.returncode == 2 and "set FIELDLINE_ARCHIVE_URL" in unset.stderr

    now = datetime.now(UTC)
    first = (now - timedelta(days=2)).replace(hour=0, minute=0, second=0, microsecond=0)
    async with await psycopg.AsyncConnection.connect(
        pg15_database_url, autocommit=True, row_factory=dict_row
    ) as conn:
        await create_devices(conn, "silo-1")
        readings = [
            Reading(
                message_id=f"m{i}",
                time=first + timedelta(minutes=30 * i),
                metrics={"level": float(i)},
                attributes={},
            )
            for i in range(48 * 2)  # two whole days, every half hour
        ]
        await write_batch(conn, Batch([DeviceReadings("silo-1", now, readings)]), PartitionCache())

    env |= s3_server.env | {"FIELDLINE_ARCHIVE_URL": f"s3://{bucket}/fleet"}
    ran = fieldline("archive", "run", env=env)
    assert ran.returncode == 0, ran.stderr
    assert f"archived 48 hour(s) and 2 day(s) of aggregates to s3://{bucket}/fleet: 96 points" in (
        ran.stdout
    )
    again = fieldline("worker", "--once", "--job", "archive", env=env)
    assert again.returncode == 0, again.stderr
    assert "archive: wrote 0 file(s), 0 still due" in again.stdout

    listed = fieldline("archive", "list", env=env)
    assert listed.returncode == 0, listed.stderr
    day = f"{first:%Y-%m-%d}"
    assert re.search(rf"^{day}\s+24\s+48\s+[\d.]+ kB\s+yes", listed.stdout, re.M), listed.stdout
    (first_day, _) = json.loads(fieldline("archive", "list", "--json", env=env).stdout)
    assert first_day == {"day": day, "hours": 24, "points": 48, "bytes": first_day["bytes"],
                         "daily": True, "problems": 0}  # fmt: skip
    verified = fieldline("archive", "verify", env=env)
    assert verified.returncode == 0, verified.stderr
    assert "all good: 50 file(s), 98 rows" in verified.stdout  # 96 points, 2 daily rows

    # A new instance takes the first day back from the archive.
    fresh = pg15.url_for(pg15.create_database())
    try:
        into_fresh = env | {"DATABASE_URL": fresh}
        imported = fieldline("archive", "import", "--from", day, "--to", day, env=into_fresh)
        assert imported.returncode == 0, imported.stderr
        assert "imported 24 hour(s)" in imported.stdout and "48 points added" in imported.stdout
        twice = fieldline("archive", "import", "--from", day, "--to", day, env=into_fresh)
        assert "0 points added, 48 already there" in twice.stdout
        with psycopg.connect(fresh) as conn:
            stored = conn.execute("SELECT time, value FROM telemetry ORDER BY time").fetchall()
        assert stored == [(r.time, r.metrics["level"]) for r in readings[:48]]

        # A damaged file: verify names it, import refuses it.
        key = f"fleet/points/date={day}/hour=05/points.parquet"
        s3 = boto3.client(
            "s3",
            endpoint_url=s3_server.endpoint_url,
            aws_access_key_id=s3_server.env["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=s3_server.env["AWS_SECRET_ACCESS_KEY"],
            region_name="us-east-1",
        )
        s3.put_object(Bucket=bucket, Key=key, Body=b"PAR1 not really PAR1")
        bad = fieldline("archive", "verify", env=env)
        assert bad.returncode == 1
        assert f"BAD  points/date={day}/hour=05/points.parquet: 20 bytes" in bad.stderr
        assert "1 problem(s) among 50 file(s)" in bad.stderr
        refused = fieldline("archive", "import", "--from", day, "--to", day, env=into_fresh)
        assert refused.returncode == 1 and "Traceback" not in refused.stderr
        assert "its sha256 differs from its manifest's; nothing of it was imported" in (
            refused.stderr
        )
    finally:
        pg15.drop_database(fresh.rsplit("/", 1)[1])
