"""Alerts under faults (SPEC §6, §9): two ingest processes share the devices' messages and
the worker is killed in the middle of a rule's duration; every device still gets exactly
one alert, opened when its duration ran out (it did not start over), notified once."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import httpx
import psycopg
import pytest

from fieldline.bench.receiver import WebhookReceiver
from tests.conftest import FaultReport
from tests.deployment import report_line, wait_stored
from tests.faults.test_faults import DEVICES, _deploy, assert_every_acknowledged_reading_stored_once

pytestmark = [pytest.mark.usefixtures("mosquitto_installed"), pytest.mark.timeout(240)]

HOLD_S = 6  # the rule's for_seconds; the worker dies 3 s in


async def test_two_ingest_processes_and_a_killed_worker_neither_lose_nor_duplicate_an_alert(
    workdir: Path, pg15_database_url: str, fault_report: FaultReport
) -> None:
    receiver = WebhookReceiver()
    await receiver.start()
    try:
        async with _deploy(workdir, pg15_database_url) as (deployment, load):
            share = {"FIELDLINE_INGEST_SHARE_GROUP": "alerts"}
            await deployment.start_ingest("1", **share)
            await deployment.start_ingest("2", **share)
            worker = await deployment.start_worker()
            headers = await deployment.admin_headers()
            async with httpx.AsyncClient(
                base_url=deployment.api_url, headers=headers, timeout=30
            ) as http:
                channel = await http.post(
                    "/api/v1/notification-channels",
                    json={
                        "name": "hook",
                        "type": "webhook",
                        "config": {"url": receiver.url, "secret": "f" * 32},
                    },
                )
                assert channel.status_code == 201, channel.text
                rule = await http.post(
                    "/api/v1/alert-rules",
                    json={
                        "name": "always warm",
                        "severity": "warning",
                        "scope": {},
                        "condition": {
                            "type": "threshold",
                            "metric": "temperature",
                            "op": ">=",
                            "value": 20,  # every reading the load sends (20..29)
                            "for_seconds": HOLD_S,
                        },
                        "channels": [channel.json()["id"]],
                    },
                )
                assert rule.status_code == 201, rule.text

            load.start()
            await asyncio.sleep(HOLD_S / 2)
            worker.kill()  # kill -9, mid-duration
            await asyncio.sleep(2)
            await deployment.start_worker()
            await asyncio.sleep(HOLD_S + 2)
            report = await load.stop()
            result = await wait_stored(pg15_database_url, report.acknowledged)
            shares = [
                await deployment.metric(f"ingest-{n}", "fieldline_readings_stored_total")
                for n in ("1", "2")
            ]

            deadline = time.monotonic() + 30
            while len(receiver.deliveries) < DEVICES and time.monotonic() < deadline:
                await asyncio.sleep(0.2)
            await asyncio.sleep(1)  # anything extra would arrive now
    finally:
        await receiver.stop()

    async with await psycopg.AsyncConnection.connect(pg15_database_url) as conn:
        alerts = await (
            await conn.execute(
                "SELECT a.device_id, a.state,"
                " extract(epoch FROM a.started_at - min(t.time)) AS held,"
                " (SELECT count(*) FROM notifications n WHERE n.alert_id = a.id) AS notified"
                " FROM alerts a JOIN telemetry t ON t.device_id = a.device_id"
                " AND t.metric = 'temperature' GROUP BY a.id ORDER BY a.device_id"
            )
        ).fetchall()
    keys = [d.headers["x-fieldline-idempotency-key"] for d in receiver.deliveries]
    fault_report.append(
        report_line(
            "alerts: 2 ingest + worker kill -9 mid-duration",
            report,
            result,
            **{
                "readings stored by ingest 1/2": f"{shares[0]:.0f}/{shares[1]:.0f}",
                "alerts": len(alerts),
                "webhooks": len(keys),
            },
        )
    )
    assert_every_acknowledged_reading_stored_once(report, result)
    assert all(share > 0 for share in shares), "one ingest process took every message"
    assert [row[0] for row in alerts] == sorted(f"fault-{i:02d}" for i in range(DEVICES))
    assert all(row[1] == "firing" and row[3] == 1 for row in alerts), alerts
    # Opened when the duration ran out from the device's first reading: the restart did
    # not start it over (that would have opened it at least 5 s later). A first reading
    # committed by one ingest process after a later one from the other was evaluated
    # can move the start by a batch or two, never by seconds.
    assert all(HOLD_S <= float(row[2]) < HOLD_S + 1.5 for row in alerts), alerts
    assert len(keys) == len(set(keys)) == DEVICES
