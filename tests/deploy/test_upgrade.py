"""docs/deploy.md's "Upgrading", followed from the previous release's schema.

The database is migrated as far as the previous release went (storage/releases.py) and
holds what that release stored, written in SQL of its schema; the broker holds the
devices' accounts as that release's `fieldline api` installed them. Then each step runs
as an operator types it: `fieldline backup create`, `fieldline migrate`, `fieldline api`,
ingest and worker, `fieldline doctor`, `/ready`, `fieldline device list`. What was there
before is there after, an old device publishes with its old password, and the backup
restores over the upgraded database as the previous release's (what to do when a
migration fails).
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import httpx
import psycopg
import pytest
from gmqtt.mqtt.constants import MQTTv311
from psycopg.types.json import Json

from fieldline.broker import dynsec
from fieldline.domain.topics import TopicScheme
from fieldline.ops.sockets import free_port
from fieldline.storage.migrate import applied_versions, available_migrations, migrate
from fieldline.storage.releases import PREVIOUS_RELEASE, SCHEMA_OF_RELEASE
from tests.deployment import Deployment, MosquittoServer, running
from tests.e2e.test_deploy import fieldline
from tests.mqtt_clients import NoReconnectClient

pytestmark = [pytest.mark.usefixtures("mosquitto_installed"), pytest.mark.timeout(180)]

PREVIOUS = SCHEMA_OF_RELEASE[PREVIOUS_RELEASE]

# Hashes as the previous release stored them (PBKDF2-SHA512), not made by today's code.
USER, USER_PASSWORD = "ana", "ana-kept-this-password"
USER_HASH = (
    "pbkdf2_sha512$210000$hZDpo0mNkylMiJxH$IMimp4qPzYJshhbtFNKBjHn/XIdon4XZqUKOPAIa9/LNF"
    "xSF3WVrJ6A2f1fTOj7+dgmizQAYv9hFKPfGf5IWUA=="
)
DEVICES = {  # device id: its MQTT password, and the hash the registry keeps of it
    "gh-1": (
        "gh-1-mqtt-secret",
        "pbkdf2_sha512$10000$AipQQn/2SSeoYcF+$7+I5dRh8iHklipfPi7PlaicieZ8gz/U5u16ZtDTlIMGX"
        "fuhzF6/mP5kqSr1qywXcYT1/+a3bAeb1vWe5eV+CLA==",
    ),
    "gh-2": (
        "gh-2-mqtt-secret",
        "pbkdf2_sha512$10000$2bMVXXq2+yrhHbuw$xQT0si5t4spXzMI6scdyztzBpRO2CfPt9jGDY8CREdhS"
        "ASCcsVkm6+y6f7X7xzLZdNMJh+/X2LJr1NYMCP8/pQ==",
    ),
}
GROUP = "greenhouses"
POINTS = 12  # per device, 5 minutes apart, in the hour before the upgrade
RULE = {
    "type": "threshold",
    "metric": "temperature",
    "op": ">",
    "value": 35.0,
    "for_seconds": 300,
    "clear_value": None,
    "clear_for_seconds": 0,
}


def value(device_id: str, n: int) -> float:
    return (18.0 if device_id == "gh-1" else 25.0) + n / 2


async def store_as_the_previous_release(url: str, times: list[datetime]) -> None:
    """A user, a group with its configuration, two devices with credentials and a
    configuration, their points with what ingest kept beside them, an alert rule."""
    days = sorted({t.date() for t in times})
    partitions = (
        [("telemetry", f"p{d:%Y%m%d}", d, d + timedelta(days=1), "") for d in days]
        + [
            ("telemetry_hourly", f"p{m:%Y%m}", m, next_month(m), " WITH (fillfactor = 50)")
            for m in sorted({d.replace(day=1) for d in days})
        ]
        + [
            (
                "telemetry_daily",
                f"p{y:%Y}",
                y,
                y.replace(year=y.year + 1),
                " WITH (fillfactor = 50)",
            )
            for y in sorted({d.replace(month=1, day=1) for d in days})
        ]
    )
    async with await psycopg.AsyncConnection.connect(url) as conn:
        await conn.execute(
            "INSERT INTO users (username, password_hash, role) VALUES (%s, %s, 'admin')",
            (USER, USER_HASH),
        )
        cursor = await conn.execute(
            "INSERT INTO groups (name, timezone) VALUES (%s, 'Europe/Berlin') RETURNING id",
            (GROUP,),
        )
        row = await cursor.fetchone()
        assert row is not None
        group_id = row[0]
        await conn.execute(
            "INSERT INTO group_configs (group_id, config, version) VALUES (%s, %s, 1)",
            (group_id, Json({"interval_s": 60})),
        )
        for device_id, (_, secret_hash) in DEVICES.items():
            await conn.execute(
                "INSERT INTO devices (device_id, name, device_type, group_id, metadata, status,"
                " last_seen, firmware_version, reported_config_version, config_reported_at)"
                " VALUES (%s, %s, 'climate', %s, %s, 'online', %s, '1.4.2', 1, %s)",
                (
                    device_id,
                    f"Greenhouse {device_id[-1]}",
                    group_id,
                    Json({"site": "north"}),
                    times[-1],
                    times[0],
                ),
            )
            await conn.execute(
                "INSERT INTO device_credentials (device_id, secret_hash) VALUES (%s, %s)",
                (device_id, secret_hash),
            )
            await conn.execute(
                "INSERT INTO device_configs (device_id, config, effective, version, group_id,"
                " group_version, published_version, published_at)"
                " VALUES (%s, %s, %s, 1, %s, 1, 1, %s)",
                (
                    device_id,
                    Json({"heater": "auto"}),
                    Json({"interval_s": 60, "heater": "auto"}),
                    group_id,
                    times[0],
                ),
            )
        # Points in partitions named as ingest names them, with its ledger, latest values
        # and rollups.
        for table, suffix, start, end, storage in partitions:
            await conn.execute(
                f"CREATE TABLE {table}_{suffix} PARTITION OF {table} FOR VALUES"
                f" FROM ('{start} 00:00:00+00') TO ('{end} 00:00:00+00'){storage}".encode()
            )
        async with conn.cursor() as cur:
            await cur.executemany(
                "INSERT INTO telemetry (time, device_id, metric, value)"
                " VALUES (%s, %s, 'temperature', %s)",
                [(t, d, value(d, n)) for d in DEVICES for n, t in enumerate(times)],
            )
            await cur.executemany(
                "INSERT INTO message_ledger (device_id, message_id, received_at)"
                " VALUES (%s, %s, %s)",
                [(d, f"{d}-{n}", t) for d in DEVICES for n, t in enumerate(times)],
            )
        await conn.execute(
            "INSERT INTO telemetry_latest (device_id, metric, time, value)"
            " SELECT DISTINCT ON (device_id, metric) device_id, metric, time, value"
            " FROM telemetry ORDER BY device_id, metric, time DESC"
        )
        for table, column, width in (
            ("telemetry_hourly", "hour", "1 hour"),
            ("telemetry_daily", "day", "1 day"),
        ):
            await conn.execute(
                f"INSERT INTO {table} (device_id, metric, {column}, count, sum, min, max)"
                f" SELECT device_id, metric,"
                f" date_bin('{width}', time, TIMESTAMPTZ '1970-01-01 00:00:00+00'),"
                " count(*), sum(value), min(value), max(value)"
                " FROM telemetry GROUP BY 1, 2, 3".encode()
            )
        await conn.execute(
            "INSERT INTO alert_rules (name, severity, scope_kind, scope_value, kind, metric,"
            " condition, created_by) VALUES ('greenhouse too hot', 'warning', 'group', %s,"
            " 'threshold', 'temperature', %s, %s)",
            (GROUP, Json(RULE), USER),
        )


def next_month(first: date) -> date:
    return date(first.year + first.month // 12, first.month % 12 + 1, 1)


async def previous_release_broker(directory: Path) -> MosquittoServer:
    """Mosquitto with the devices' accounts the previous release installed in it."""
    broker = MosquittoServer(directory)
    path = directory / "dynamic-security.json"
    document = json.loads(path.read_text())
    for device_id, (_, secret_hash) in DEVICES.items():
        role = dynsec.device_role(device_id)
        document["clients"].append(
            dynsec.hashed_client_json(
                device_id,
                secret_hash,
                roles=[role],
                description=dynsec.describe(dynsec.fingerprint(secret_hash)),
                clientid=device_id,
            )
        )
        document["roles"].append(
            dynsec.role_json(role, dynsec.device_acls(TopicScheme(), device_id))
        )
    path.write_text(json.dumps(document))
    await broker.start()
    return broker


async def test_the_documented_upgrade_from_the_previous_release(
    workdir: Path, pg15_database_url: str
) -> None:
    url = pg15_database_url
    assert [m.version for m in await migrate(url, up_to=PREVIOUS)][-1] == PREVIOUS
    now = datetime.now(UTC).replace(microsecond=0)
    times = [now - timedelta(minutes=5 * n) for n in range(POINTS, 0, -1)]
    await store_as_the_previous_release(url, times)
    broker = await previous_release_broker(workdir / "mosquitto")
    # One environment for every process and command, as the environment file is.
    deployment = Deployment(
        workdir,
        url,
        broker,
        extra_env={
            "FIELDLINE_BROKER_ADMIN_USERNAME": broker.admin_username,
            "FIELDLINE_BROKER_ADMIN_PASSWORD": broker.admin_password,
        },
    )
    env = deployment.env(FIELDLINE_HTTP_PORT=str(deployment.api_port))

    with running(deployment):
        # 1. Back up (restored at the end, rather than verified here: the same check).
        made = fieldline("backup", "create", env=env)
        assert made.returncode == 0, made.stderr
        taken = re.search(r"^backup (\S+) written to (\S+):", made.stdout)
        assert taken is not None, made.stdout
        backup = f"{taken[2]}/{taken[1]}"

        # 2. Stop: nothing to stop here. The test has the previous release's schema and
        # data, not its code.
        # 3. Migrate.
        newer = [m for m in available_migrations() if m.version > PREVIOUS]
        migrated = fieldline("migrate", env=env)
        assert migrated.returncode == 0, migrated.stderr
        assert migrated.stdout.strip() == (
            f"{len(newer)} migration(s) applied" if newer else "schema is up to date"
        )

        # 4. Start: the API, ingest, the worker.
        await deployment.start_api()
        await deployment.start_ingest("1")
        await deployment.start_worker(FIELDLINE_OPS_PORT=str(free_port("127.0.0.1")))

        # 5. Verify: doctor, /ready, and the latest data.
        checked = fieldline("doctor", env=env)
        assert checked.returncode == 0, checked.stdout
        last = available_migrations()[-1]
        assert f"up to date ({last.version:04d}_{last.name})" in checked.stdout
        assert "the broker matches the registry (2 devices)" in checked.stdout
        async with httpx.AsyncClient(base_url=deployment.api_url, timeout=10) as http:
            ready = await http.get("/ready")
            assert ready.status_code == 200, ready.text
            assert ready.json()["status"] == "ready"

            # The user signs in with the password the previous release kept.
            login = await http.post(
                "/api/v1/auth/login", json={"username": USER, "password": USER_PASSWORD}
            )
            assert login.status_code == 200, login.text
            http.headers["Authorization"] = f"Bearer {login.json()['access_token']}"

            # An old device publishes with its old password, and its reading is stored.
            device = NoReconnectClient("gh-1")
            device.set_auth_credentials("gh-1", DEVICES["gh-1"][0])
            await device.connect("127.0.0.1", broker.port, version=MQTTv311)
            sent_at = datetime.now(UTC).replace(microsecond=0)
            device.publish(
                "devices/gh-1/telemetry",
                json.dumps(
                    {
                        "message_id": "after-upgrade",
                        "timestamp": int(sent_at.timestamp() * 1000),
                        "sensors": {"temperature": 21.25},
                    }
                ),
                qos=1,
            )
            deadline = time.monotonic() + 30
            while True:
                latest = await http.get("/api/v1/devices/gh-1/telemetry/latest")
                assert latest.status_code == 200, latest.text
                if latest.json()["metrics"].get("temperature", {}).get("value") == 21.25:
                    break
                assert time.monotonic() < deadline, deployment.components["ingest-1"].tail()
                await asyncio.sleep(0.2)
            await device.disconnect()

            api = ["--api-url", deployment.api_url, "--username", USER, "--password", USER_PASSWORD]
            listed = fieldline("device", "list", "--json", *api, env=env)
            assert listed.returncode == 0, listed.stderr
            assert {d["device_id"]: (d["name"], d["group"]) for d in json.loads(listed.stdout)} == {
                "gh-1": ("Greenhouse 1", GROUP),
                "gh-2": ("Greenhouse 2", GROUP),
            }
            latest = await http.get("/api/v1/devices/gh-2/telemetry/latest")
            assert latest.json()["metrics"]["temperature"] == {
                "time": times[-1].isoformat().replace("+00:00", "Z"),
                "value": value("gh-2", POINTS - 1),
            }

            # Every stored point, raw and from the rollups the previous release kept.
            for device_id in DEVICES:
                series = await http.get(
                    f"/api/v1/devices/{device_id}/telemetry",
                    params={
                        "metric": "temperature",
                        "start": times[0].isoformat(),
                        "end": (sent_at + timedelta(seconds=1)).isoformat(),
                    },
                )
                assert series.status_code == 200, series.text
                stored = [p["value"] for p in series.json()["points"]]
                old = [value(device_id, n) for n in range(POINTS)]
                assert stored == ([*old, 21.25] if device_id == "gh-1" else old)
            first_day = datetime.combine(times[0].date(), datetime.min.time(), UTC)
            daily = await http.get(
                "/api/v1/devices/gh-2/telemetry",
                params={
                    "metric": "temperature",
                    "start": first_day.isoformat(),
                    "end": (first_day + timedelta(days=3)).isoformat(),
                    "bucket": "1d",
                    "agg": "count",
                },
            )
            assert daily.status_code == 200, daily.text
            assert sum(p["value"] for p in daily.json()["points"]) == POINTS

            rules = (await http.get("/api/v1/alert-rules")).json()["items"]
            assert [(r["name"], r["scope"], r["condition"]) for r in rules] == [
                ("greenhouse too hot", {"group": GROUP}, RULE)
            ]
            config = (await http.get("/api/v1/devices/gh-2/config")).json()
            assert config["desired"] == {"heater": "auto"}
            assert config["group"] == {"interval_s": 60}
            assert config["effective"] == {"interval_s": 60, "heater": "auto"}
            assert (config["version"], config["in_sync"]) == (1, True)

        assert deployment.stop_all() == dict.fromkeys(deployment.components, 0)

    # Had a migration failed: the backup restores over the database as the previous
    # release left it.
    restored = fieldline("restore", "--force", backup, env=env)
    assert restored.returncode == 0, restored.stderr
    async with await psycopg.AsyncConnection.connect(url) as conn:
        assert max(await applied_versions(conn)) == PREVIOUS
        cursor = await conn.execute(
            "SELECT device_id, count(*) FROM telemetry GROUP BY 1 ORDER BY 1"
        )
        assert await cursor.fetchall() == [(device_id, POINTS) for device_id in DEVICES]
