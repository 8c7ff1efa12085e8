"""Threshold rules from the stored readings to alerts and outbox rows."""

from __future__ import annotations

import asyncio

from fieldline.alerts.lifecycle import resolve_rule_alerts
from tests.alerts.conftest import Engine, at

WARM = {"type": "threshold", "metric": "t", "op": ">", "value": 8, "for_seconds": 2}


async def test_held_for_its_duration_opens_one_alert_and_one_notification_per_channel(
    engine: Engine,
) -> None:
    await engine.device("cold-1")
    first, second = await engine.channel("a"), await engine.channel("b")
    off = await engine.channel("off", enabled=False)
    await engine.rule(WARM, channels=[first, second, off], name="cold room warm")
    await engine.write("cold-1", (at(0), 9.0), (at(1), 9.5))
    await engine.evaluate()
    assert await engine.alerts() == []  # held 1 s of 2
    await engine.write("cold-1", (at(2), 9.3))
    await engine.evaluate()
    await engine.write("cold-1", (at(3), 9.8))
    await engine.evaluate()
    (alert,) = await engine.alerts()
    assert (alert["state"], alert["device_id"], alert["started_value"]) == ("firing", "cold-1", 9.3)
    assert alert["started_at"] == at(2)  # when the duration ran out, in reading time
    rows = await engine.notifications()
    assert [(r["channel_id"], r["event"], r["status"]) for r in rows] == [
        (first, "firing", "pending"),
        (second, "firing", "pending"),
    ]
    key = f"alert-{alert['id']}-1"
    assert {r["idempotency_key"] for r in rows} == {key}
    body = rows[0]["body"]
    assert body["summary"] == "t 9.3 > 8 for 2 s on cold-1"
    assert body["rule"] == {"id": alert["rule_id"], "name": "cold room warm"}
    assert (body["event"], body["state"], body["value"], body["kind"]) == (
        "firing",
        "firing",
        9.3,
        "rule",
    )
    assert body["started_at"] == at(2).isoformat()
    assert set(body) == {
        "alert_id", "kind", "state", "event", "rule", "severity", "device_id", "metric",
        "value", "started_at", "resolved_at", "acknowledged_by", "note", "summary", "sent_at",
    }  # fmt: skip
    assert await engine.sql("SELECT * FROM alert_inbox") == []


async def test_hovering_inside_the_hysteresis_band_opens_nothing_new_then_resolves(
    engine: Engine,
) -> None:
    await engine.device("cold-1")
    channel = await engine.channel("a")
    condition = {**WARM, "for_seconds": 0, "clear_value": 7}
    await engine.rule(condition, channels=[channel])
    values = [9.0, 7.5, 8.5, 7.1, 8.1, 7.9, 8.0001]
    for second, value in enumerate(values):
        await engine.write("cold-1", (at(second), value))
        await engine.evaluate()
    (alert,) = await engine.alerts()
    assert alert["state"] == "firing"
    await engine.write("cold-1", (at(10), 6.9))
    await engine.evaluate()
    (alert,) = await engine.alerts()
    assert (alert["state"], alert["resolved_value"], alert["resolved_reason"]) == (
        "resolved",
        6.9,
        "cleared",
    )
    assert alert["resolved_at"] == at(10)
    rows = await engine.notifications()
    assert [(r["event"], r["idempotency_key"]) for r in rows] == [
        ("firing", f"alert-{alert['id']}-1"),
        ("resolved", f"alert-{alert['id']}-2"),
    ]
    assert rows[1]["body"]["value"] == 6.9
    assert rows[1]["body"]["resolved_at"] == at(10).isoformat()
    # A new crossing after the resolution is a new alert.
    await engine.write("cold-1", (at(11), 9.0))
    await engine.evaluate()
    assert [a["state"] for a in await engine.alerts()] == ["resolved", "firing"]


async def test_a_round_that_opens_resolves_and_opens_again_keeps_each_events_order(
    engine: Engine,
) -> None:
    """A device flushing its buffer: three changes of one (rule, device) in one round,
    beside another device's one, each notified once and in order."""
    await engine.device("cold-1")
    await engine.device("cold-2")
    channel = await engine.channel("a")
    await engine.rule({**WARM, "for_seconds": 0, "clear_value": 7}, channels=[channel])
    await engine.write("cold-1", (at(0), 9.0), (at(1), 6.0), (at(2), 9.5))
    await engine.write("cold-2", (at(0), 9.9))
    await engine.evaluate()
    first, second, third = await engine.alerts()  # by id
    assert (first["device_id"], first["state"], first["started_value"]) == (
        "cold-1",
        "resolved",
        9.0,
    )
    assert (first["resolved_at"], first["resolved_value"]) == (at(1), 6.0)
    assert {(a["device_id"], a["state"], a["started_value"]) for a in (second, third)} == {
        ("cold-1", "firing", 9.5),
        ("cold-2", "firing", 9.9),
    }
    again = second if second["device_id"] == "cold-1" else third
    rows = await engine.notifications()
    cold_1 = [
        (r["event"], r["idempotency_key"]) for r in rows if r["body"]["device_id"] == "cold-1"
    ]
    assert cold_1 == [
        ("firing", f"alert-{first['id']}-1"),
        ("resolved", f"alert-{first['id']}-2"),
        ("firing", f"alert-{again['id']}-1"),
    ]
    assert len(rows) == 4


async def test_thresholds_come_from_each_devices_metadata(engine: Engine) -> None:
    await engine.device("fridge", metadata={"max_temp": 5})
    await engine.device("room")  # no key: the default
    await engine.device("odd", metadata={"max_temp": "high"})  # not a number: the default
    condition = {**WARM, "for_seconds": 0, "value": {"metadata": "max_temp", "default": 8}}
    await engine.rule(condition)
    for device in ("fridge", "room", "odd"):
        await engine.write(device, (at(0), 6.0))
    await engine.evaluate()
    assert [a["device_id"] for a in await engine.alerts()] == ["fridge"]
    await engine.write("room", (at(1), 8.5))
    await engine.evaluate()
    assert sorted(a["device_id"] for a in await engine.alerts()) == ["fridge", "room"]


async def test_scope_limits_a_rule_to_its_group(engine: Engine) -> None:
    await engine.device("in", group="cold rooms")
    await engine.device("out", group="offices")
    await engine.rule({**WARM, "for_seconds": 0}, scope=("group", "cold rooms"))
    await engine.write("in", (at(0), 9.0))
    await engine.write("out", (at(0), 9.0))
    await engine.evaluate()
    assert [a["device_id"] for a in await engine.alerts()] == ["in"]


async def test_late_readings_are_evaluated_in_their_own_time_order(engine: Engine) -> None:
    """A flushed buffer arrives newest first; applied in reading time, it held for 2 s."""
    await engine.device("cold-1")
    await engine.rule(WARM)
    await engine.write("cold-1", (at(2), 9.0), (at(0), 9.5), (at(1), 9.2))
    await engine.evaluate()
    (alert,) = await engine.alerts()
    assert (alert["started_at"], alert["started_value"]) == (at(2), 9.0)
    # Older than what was applied: counted late, not applied.
    await engine.write("cold-1", (at(1.5), 1.0))
    await engine.evaluate()
    assert engine.metrics.registry.get_sample_value("fieldline_alert_readings_late_total") == 1
    assert [a["state"] for a in await engine.alerts()] == ["firing"]


async def test_a_new_rule_is_judged_on_the_latest_value(engine: Engine) -> None:
    await engine.device("cold-1")
    await engine.write("cold-1", (at(0), 9.0))  # before any rule: nothing in the inbox
    assert await engine.sql("SELECT * FROM alert_inbox") == []
    await engine.rule({**WARM, "for_seconds": 0})
    await engine.evaluate()
    (alert,) = await engine.alerts()
    assert (alert["started_at"], alert["started_value"]) == (at(0), 9.0)


async def test_unwatched_metrics_cost_ingest_no_inbox_rows(engine: Engine) -> None:
    await engine.device("cold-1")
    await engine.rule(WARM)
    await engine.write("cold-1", (at(0), 1.0), metric="humidity")
    await engine.write("cold-1", (at(0), 1.0))
    rows = await engine.sql("SELECT device_id, metric, time, value FROM alert_inbox")
    assert rows == [{"device_id": "cold-1", "metric": "t", "time": at(0), "value": 1.0}]


async def test_two_writers_at_once_are_evaluated_exactly_once(engine: Engine) -> None:
    """Readings of one device reach two ingest writers; each is applied once, in order."""
    await engine.device("cold-1")
    await engine.rule({**WARM, "for_seconds": 0, "clear_value": 7})
    stop = asyncio.Event()

    async def evaluating() -> None:
        while not stop.is_set():
            await engine.evaluate()
            await asyncio.sleep(0.01)

    async def writer(offset: int) -> None:
        for i in range(offset, 200, 2):  # the two writers interleave in reading time
            await engine.write("cold-1", (at(i), 9.0 if (i // 20) % 2 == 0 else 6.0))

    await engine.evaluate()  # the rule is judged on latest values (none yet) before writes
    task = asyncio.create_task(evaluating())
    await asyncio.gather(writer(0), writer(1))
    stop.set()
    await task
    await engine.evaluate()
    sample = engine.metrics.registry.get_sample_value
    evaluated = sample("fieldline_alert_evaluations_total") or 0
    late = sample("fieldline_alert_readings_late_total") or 0
    assert evaluated + late == 200  # every reading taken exactly once
    alerts = await engine.alerts()
    # Never two open at once (the unique index would refuse), and no more than the
    # 5 warm spells there were.
    assert 1 <= len(alerts) <= 5
    assert [a["state"] for a in alerts[:-1]] == ["resolved"] * (len(alerts) - 1)
    assert await engine.sql("SELECT * FROM alert_inbox") == []


async def test_a_rule_change_resolves_its_alerts_and_forgets_its_state(engine: Engine) -> None:
    await engine.device("cold-1")
    channel = await engine.channel("a")
    rule = await engine.rule({**WARM, "for_seconds": 0}, channels=[channel])
    await engine.write("cold-1", (at(0), 9.0))
    await engine.evaluate()
    async with engine.pool.connection() as conn, conn.transaction():
        assert await resolve_rule_alerts(conn, rule, "rule changed") == 1
    (alert,) = await engine.alerts()
    assert (alert["state"], alert["resolved_reason"]) == ("resolved", "rule changed")
    assert [r["event"] for r in await engine.notifications()] == ["firing", "resolved"]
    assert await engine.sql("SELECT * FROM alert_state") == []
    # Disabled without resolving (by hand): the evaluator's safety net resolves.
    await engine.write("cold-1", (at(1), 9.0))
    await engine.evaluate()
    await engine.sql("UPDATE alert_rules SET enabled = false")
    await engine.evaluate()
    assert [(a["state"], a["resolved_reason"]) for a in await engine.alerts()] == [
        ("resolved", "rule changed"),
        ("resolved", "rule disabled"),
    ]


async def test_the_evaluator_applies_a_rules_new_version_from_its_next_round(
    engine: Engine,
) -> None:
    """The worker keeps parsed rules between rounds; a changed row is read again."""
    await engine.device("cold-1")
    channel = await engine.channel("a")
    await engine.rule({**WARM, "for_seconds": 0}, channels=[channel], name="warm")
    await engine.write("cold-1", (at(0), 7.0))
    await engine.evaluate()
    assert await engine.alerts() == []
    # Edited by hand (no revision bump, no resolution): the lower line and a new name.
    await engine.sql(
        "UPDATE alert_rules SET name = 'warmer', condition = jsonb_set(condition::jsonb,"
        " '{value}', '6')::json"
    )
    await engine.write("cold-1", (at(1), 7.0))
    await engine.evaluate()
    (alert,) = await engine.alerts()
    assert (alert["rule_name"], alert["started_value"]) == ("warmer", 7.0)
    await engine.sql("UPDATE alert_rules SET enabled = false")
    await engine.write("cold-1", (at(2), 99.0))
    await engine.evaluate()
    assert [a["resolved_reason"] for a in await engine.alerts()] == ["rule disabled"]


async def test_a_device_deleted_or_moved_out_of_scope_resolves_its_alerts(
    engine: Engine,
) -> None:
    await engine.device("moved", group="cold rooms")
    await engine.device("deleted", group="cold rooms")
    await engine.device("stays", group="cold rooms")
    await engine.device("elsewhere", group="offices")
    channel = await engine.channel("a")
    await engine.rule({**WARM, "for_seconds": 0}, scope=("group", "cold rooms"), channels=[channel])
    for device in ("moved", "deleted", "stays"):
        await engine.write(device, (at(0), 9.0))
    await engine.evaluate()
    assert len(await engine.alerts()) == 3
    await engine.sql(
        "UPDATE devices SET group_id = (SELECT group_id FROM devices WHERE device_id = 'elsewhere')"
        " WHERE device_id = 'moved'"
    )
    await engine.sql("DELETE FROM devices WHERE device_id = 'deleted'")
    await engine.evaluate()
    states = {a["device_id"]: (a["state"], a["resolved_reason"]) for a in await engine.alerts()}
    assert states == {
        "moved": ("resolved", "device left the rule's scope"),
        "deleted": ("resolved", "device deleted"),
        "stays": ("firing", None),
    }
    resolved = [r for r in await engine.notifications() if r["event"] == "resolved"]
    assert sorted(r["body"]["device_id"] for r in resolved) == ["deleted", "moved"]
    # Back in scope, the device starts afresh: a new reading over the line is a new alert.
    await engine.sql(
        "UPDATE devices SET group_id = (SELECT group_id FROM devices WHERE device_id = 'stays')"
        " WHERE device_id = 'moved'"
    )
    await engine.write("moved", (at(5), 9.0))
    await engine.evaluate()
    assert [a["state"] for a in await engine.alerts() if a["device_id"] == "moved"] == [
        "resolved",
        "firing",
    ]
