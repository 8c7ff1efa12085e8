"""`fieldline backup` and `fieldline restore` as an operator runs them: on an external
PostgreSQL 15 with backups on S3, and the worker's daily job from the command line."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import boto3
import psycopg

from tests.backup.conftest import data_dir, seed
from tests.conftest import PgServer, S3Server


def fieldline(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    own = {key for key in os.environ if key.startswith("FIELDLINE_") or key == "DATABASE_URL"}
    clean = {key: value for key, value in os.environ.items() if key not in own}
    return subprocess.run(
        [sys.executable, "-m", "fieldline", *args],
        capture_output=True,
        text=True,
        timeout=180,
        env={**clean, "FIELDLINE_LOG_LEVEL": "WARNING", **env},
        check=False,
    )


def flip_a_byte(s3: S3Server, bucket: str, key: str) -> None:
    client = boto3.client(
        "s3",
        endpoint_url=s3.endpoint_url,
        aws_access_key_id=s3.env["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=s3.env["AWS_SECRET_ACCESS_KEY"],
        region_name=s3.env["AWS_REGION"],
    )
    content = bytearray(client.get_object(Bucket=bucket, Key=key)["Body"].read())
    content[len(content) // 3] ^= 0x40
    client.put_object(Bucket=bucket, Key=key, Body=bytes(content))


async def test_backup_list_verify_and_restore_on_s3(
    pg15: PgServer, pg15_database_url: str, s3_server: S3Server, tmp_path: Path
) -> None:
    await seed(pg15_database_url, days=2)
    bucket = s3_server.create_bucket()
    location = f"s3://{bucket}/nightly"
    env = {
        **s3_server.env,
        "DATABASE_URL": pg15_database_url,
        "FIELDLINE_BACKUP_URL": location,
        "FIELDLINE_DATA_DIR": str(data_dir(tmp_path / "data")),
    }
    assert fieldline("backup", "list", env=env).stdout == f"no backups in {location}\n"

    created = fieldline("backup", "create", env=env)
    assert created.returncode == 0, created.stderr
    made = re.fullmatch(
        rf"backup (fieldline-\S+) written to {location}: (\d+) tables, ([\d,]+) rows, "
        r"[\d.]+ kB, in [\d.]+ s\n"
        r"with secrets/secret_key, certs/ca.crt, certs/ca.key \(keep this location private\)\n",
        created.stdout,
    )
    assert made, created.stdout
    backup_id = made[1]
    assert created.stderr == ""  # no progress bar off a terminal

    listed = fieldline("backup", "list", env=env)
    assert listed.returncode == 0, listed.stderr
    row = rf"^{backup_id} +\d{{4}}-\d\d-\d\d [\d:]+ +[\d.]+ kB  complete$"
    assert re.search(row, listed.stdout, re.MULTILINE), listed.stdout
    as_json = json.loads(fieldline("backup", "list", "--json", env=env).stdout)
    assert [(b["backup"], b["complete"]) for b in as_json] == [(backup_id, True)]

    verified = fieldline("backup", "verify", env=env)
    assert verified.returncode == 0, verified.stderr
    assert verified.stdout == (
        f"backup {backup_id} verified: restored into a scratch database, {made[2]} tables "
        f"and {made[3]} rows match its manifest ({verified.stdout.split('(')[-1]}"
    )

    target = pg15.create_database()
    try:
        new = {**env, "DATABASE_URL": pg15.url_for(target)}
        new_dir = tmp_path / "new"
        restored = fieldline("restore", location, "--data-dir", str(new_dir), env=new)
        assert restored.returncode == 0, restored.stderr
        assert restored.stdout.startswith(f"restored {backup_id} (taken ")
        assert f"into external PostgreSQL: {made[2]} tables, {made[3]} rows\n" in restored.stdout
        assert (new_dir / "secrets" / "secret_key").read_text() == "the-api-signing-key\n"
        with psycopg.connect(pg15.url_for(target)) as conn:
            assert conn.execute("SELECT count(*) FROM devices").fetchone() == (3,)

        again = fieldline("restore", f"{location}/{backup_id}", "--data-dir", str(new_dir), env=new)
        assert again.returncode == 1 and "Traceback" not in again.stderr
        assert "Error: the database is not empty (it has public." in again.stderr
        assert "give --force to drop everything in it first" in again.stderr

        # A flipped byte: verify fails and says why, and restore will not use it.
        flip_a_byte(s3_server, bucket, f"nightly/{backup_id}/database.dump")
        failed = fieldline("backup", "verify", backup_id, env=env)
        assert failed.returncode == 1 and "Traceback" not in failed.stderr
        assert f"Error: backup {backup_id} FAILED verification:" in failed.stderr
        assert f"{backup_id}/database.dump is corrupted: its sha256 is" in failed.stderr
        forced = fieldline("restore", location, "--force", "--data-dir", str(new_dir), env=new)
        assert forced.returncode == 1 and "is corrupted" in forced.stderr
        with psycopg.connect(pg15.url_for(target)) as conn:  # left as it was
            assert conn.execute("SELECT count(*) FROM devices").fetchone() == (3,)
    finally:
        pg15.drop_database(target)


def test_bad_input_is_an_error_not_a_traceback(pg15_database_url: str, tmp_path: Path) -> None:
    env = {"DATABASE_URL": pg15_database_url, "FIELDLINE_DATA_DIR": str(tmp_path)}
    for args, message in (
        (("restore", str(tmp_path / "nothing-here")), "no backup in"),
        (("restore", "ftp://host/backups"), "unsupported store 'ftp://host/backups'"),
        (("backup", "verify", "fieldline-20261207T030000.000Z"), "no complete backup"),
        (("backup", "list"), "no backups in"),
    ):
        ran = fieldline(*args, env=env)
        assert "Traceback" not in ran.stderr, ran.stderr
        assert message in ran.stdout + ran.stderr, (args, ran.stdout, ran.stderr)


async def test_the_worker_backs_up_once_a_day_and_verifies_each_backup(
    pg15_database_url: str, tmp_path: Path
) -> None:
    """`fieldline worker --once --job backup` as cron would run it: nothing while the
    instance is younger than a day, then a backup, then nothing until a day later."""
    await seed(pg15_database_url, days=1)
    env = {
        "DATABASE_URL": pg15_database_url,
        "FIELDLINE_DATA_DIR": str(data_dir(tmp_path / "data")),
        "FIELDLINE_BACKUP_URL": str(tmp_path / "backups"),
    }
    young = fieldline("worker", "--once", "--job", "backup", env=env)
    assert young.returncode == 0, young.stderr
    assert re.fullmatch(r"backup: not due until \d{4}-\d\d-\d\d \d\d:\d\d UTC\n", young.stdout)
    nothing = fieldline("worker", "--once", "--job", "backup_verify", env=env)
    assert nothing.stdout == f"backup_verify: no backup in {tmp_path / 'backups'} to verify yet\n"

    with psycopg.connect(pg15_database_url, autocommit=True) as conn:
        conn.execute("UPDATE schema_migrations SET applied_at = applied_at - interval '25 hours'")
    due = fieldline("worker", "--once", "--job", "backup", env=env)
    assert due.returncode == 0, due.stderr
    made = re.fullmatch(
        rf"backup: (fieldline-\S+) written to {tmp_path / 'backups'} \([\d,]+ bytes\)\n",
        due.stdout,
    )
    assert made, due.stdout
    assert [p.name for p in (tmp_path / "backups").iterdir()] == [made[1]]

    verified = fieldline("worker", "--once", "--job", "backup_verify", env=env)
    assert verified.stdout == f"backup_verify: {made[1]} restored and matches its manifest\n"
    twice = fieldline("worker", "--once", "--job", "backup_verify", env=env)
    assert twice.stdout == f"backup_verify: {made[1]}, the newest backup, is verified already\n"
    again = fieldline("worker", "--once", "--job", "backup", env=env)
    assert again.stdout.startswith("backup: not due until "), again.stdout
    assert len(list((tmp_path / "backups").iterdir())) == 1
