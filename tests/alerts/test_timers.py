"""What happens with no reading, in real time: silent devices and metrics, durations that
run out across a worker restart, repeats, acknowledgement, escalation, silences."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from fieldline.alerts.acknowledge import acknowledge
from fieldline.domain.alerts import SILENCE
from tests.alerts.conftest import Engine, at

# Under load a round can be slow; "on time" means within a few seconds of for_seconds.
LATE_BY_AT_MOST = 4.0


async def rounds_until(
    engine: Engine, done: Callable[[], Awaitable[Any]], deadline: float = 30.0
) -> Any:
    """Run evaluation rounds (as the worker's schedule does) until `done()` answers."""
    give_up = time.monotonic() + deadline
    while time.monotonic() < give_up:
        await engine.evaluate()
        found = await done()
        if found:
            return found
        await asyncio.sleep(engine.settings.alert_interval_seconds)
    raise AssertionError("not within the deadline")


async def test_an_offline_device_fires_on_time_and_resolves_when_back(engine: Engine) -> None:
    await engine.device("cold-1")
    channel = await engine.channel("a")
    await engine.rule({"type": "offline", "for_seconds": 2}, channels=[channel])
    went = datetime.now(UTC)
    await engine.sql(
        "UPDATE devices SET status = 'offline', last_seen = %s WHERE device_id = 'cold-1'", went
    )
    (alert,) = await rounds_until(engine, engine.alerts)
    fired = datetime.now(UTC)
    assert alert["started_at"] == went + timedelta(seconds=2)
    assert timedelta(seconds=2) <= fired - went <= timedelta(seconds=2 + LATE_BY_AT_MOST)
    assert alert["metric"] is None
    rows = await engine.notifications()
    assert rows[0]["body"]["summary"] == "cold-1 offline for 2 s"
    await engine.sql(
        "UPDATE devices SET status = 'online', last_seen = now() WHERE device_id = 'cold-1'"
    )

    async def resolved() -> Any:
        return [a for a in await engine.alerts() if a["state"] == "resolved"]

    await rounds_until(engine, resolved)
    assert [r["event"] for r in await engine.notifications()] == ["firing", "resolved"]


async def test_a_device_silent_past_the_online_timeout_counts_as_offline(engine: Engine) -> None:
    await engine.device("quiet")
    engine.settings = engine.settings.model_copy(update={"online_timeout_seconds": 1.0})
    engine.restart()
    await engine.rule({"type": "offline", "for_seconds": 2})
    await engine.sql("UPDATE devices SET status = 'online', last_seen = now()")
    await engine.evaluate()
    assert await engine.alerts() == []
    (alert,) = await rounds_until(engine, engine.alerts)
    assert alert["device_id"] == "quiet"


async def test_a_silent_metric_fires_on_time_and_resolves_when_it_comes_back(
    engine: Engine,
) -> None:
    await engine.device("cold-1")
    await engine.device("never")  # never sent it: counted from the rule's creation
    await engine.rule({"type": "no_data", "metric": "t", "for_seconds": 3})
    last = datetime.now(UTC)
    await engine.write("cold-1", (last, 5.0))
    await engine.write("cold-1", (last, 5.0), metric="other")  # not the rule's metric
    alerts = await rounds_until(engine, engine.alerts)
    fired = datetime.now(UTC)
    assert timedelta(seconds=3) <= fired - last <= timedelta(seconds=3 + LATE_BY_AT_MOST)
    await rounds_until(engine, lambda: _count(engine, 2))
    alerts = await engine.alerts()
    by_device = {a["device_id"]: a for a in alerts}
    assert by_device["cold-1"]["started_at"] == last + timedelta(seconds=3)
    assert by_device["cold-1"]["metric"] == "t"
    await engine.write("cold-1", (datetime.now(UTC), 6.0))

    async def back() -> Any:
        return [a for a in await engine.alerts() if a["state"] == "resolved"]

    (resolved,) = await rounds_until(engine, back)
    assert (resolved["device_id"], resolved["resolved_value"]) == ("cold-1", 6.0)


async def _count(engine: Engine, n: int) -> bool:
    return len(await engine.alerts()) >= n


async def test_a_worker_restarted_mid_duration_neither_restarts_nor_repeats_it(
    engine: Engine,
) -> None:
    """The duration is kept in the database: a new worker fires when it runs out, once.

    The device reports once and falls silent, so the timer (not a reading) runs the
    duration out; it is longer than domain.alerts.SILENCE, so it fires on time."""
    hold = SILENCE + timedelta(seconds=1)
    await engine.device("cold-1")
    channel = await engine.channel("a")
    await engine.rule(
        {
            "type": "threshold",
            "metric": "t",
            "op": ">",
            "value": 8,
            "for_seconds": int(hold.total_seconds()),
        },
        channels=[channel],
    )
    began = datetime.now(UTC)
    await engine.write("cold-1", (began, 9.0))
    await engine.evaluate()
    (state,) = await engine.sql("SELECT phase, since FROM alert_state")
    assert (state["phase"], state["since"]) == ("pending", began)
    engine.restart()  # killed mid-duration: a new worker, nothing in memory
    (alert,) = await rounds_until(engine, engine.alerts)
    assert alert["started_at"] == began + hold  # not began + restart + hold
    assert datetime.now(UTC) - began <= hold + timedelta(seconds=LATE_BY_AT_MOST)
    engine.restart()
    for _ in range(3):
        await engine.evaluate()
    assert len(await engine.alerts()) == 1
    assert len(await engine.notifications()) == 1


async def test_a_broker_running_late_does_not_make_devices_look_silent(
    engine: Engine,
) -> None:
    """Readings reach fieldline 30 s after they were taken (a backlog at the broker): a
    pending device with nothing newer is not silent on the stream's clock while the
    others' readings come; once the stream is quiet, the wall clock runs its duration out."""
    await engine.device("pending")
    await engine.device("other")
    hold = 2
    await engine.rule(
        {"type": "threshold", "metric": "t", "op": ">", "value": 8, "for_seconds": hold}
    )
    late = datetime.now(UTC) - timedelta(seconds=30)
    await engine.write("pending", (late, 9.0))
    await engine.write("other", (late, 1.0))
    await engine.evaluate()
    for second in range(1, 4):  # the backlog drains: newer readings, still 30 s late
        await engine.write("other", (late + timedelta(seconds=second), 1.0))
        await engine.evaluate()
    assert await engine.alerts() == []  # by the wall clock it was silent 30 s
    await engine.evaluate()  # nothing more comes
    (alert,) = await engine.alerts()
    assert (alert["device_id"], alert["started_at"]) == ("pending", late + timedelta(seconds=hold))


async def test_a_round_that_fails_commits_nothing_and_the_next_one_applies_it(
    engine: Engine,
) -> None:
    """Killed mid-round (here: its transaction fails): readings stay in the inbox."""
    await engine.device("cold-1")
    await engine.rule({"type": "threshold", "metric": "t", "op": ">", "value": 8})
    await engine.write("cold-1", (at(0), 9.0))
    await engine.sql("ALTER TABLE alerts ADD CONSTRAINT no_alerts CHECK (false) NOT VALID")
    assert await engine.evaluate() is None  # failed, logged, counted
    assert len(await engine.sql("SELECT * FROM alert_inbox")) == 1
    assert await engine.sql("SELECT * FROM alert_state") == []
    await engine.sql("ALTER TABLE alerts DROP CONSTRAINT no_alerts")
    await engine.evaluate()
    assert len(await engine.alerts()) == 1
    assert await engine.sql("SELECT * FROM alert_inbox") == []


async def test_repeats_until_acknowledged_and_escalation_adds_channels(engine: Engine) -> None:
    await engine.device("cold-1")
    first, boss = await engine.channel("first"), await engine.channel("boss")
    await engine.rule(
        {"type": "threshold", "metric": "t", "op": ">", "value": 8},
        channels=[first],
        repeat_seconds=1,
        escalate_after_seconds=2,
        escalate_channels=[boss],
    )
    await engine.write("cold-1", (at(0), 9.0))

    async def events() -> list[tuple[int, str]]:
        return [(r["channel_id"], r["event"]) for r in await engine.notifications()]

    async def escalated() -> Any:
        return (boss, "escalation") in await events()

    await rounds_until(engine, escalated)
    seen = await events()
    assert seen[0] == (first, "firing")
    assert (first, "repeat") in seen[: seen.index((boss, "escalation"))]
    assert seen.count((boss, "escalation")) == 1

    async def repeated_to_both() -> Any:
        after = (await events())[seen.index((boss, "escalation")) + 1 :]
        return (first, "repeat") in after and (boss, "repeat") in after

    await rounds_until(engine, repeated_to_both)
    (alert,) = await engine.alerts()
    async with engine.pool.connection() as conn:
        acked = await acknowledge(conn, alert["id"], username="alice", note="on my way")
    assert (acked.state, acked.acknowledged_by, acked.ack_note) == (
        "acknowledged",
        "alice",
        "on my way",
    )
    before = await events()
    assert before[-2:] == [(first, "acknowledged"), (boss, "acknowledged")]
    for _ in range(3):  # well past repeat_seconds: nothing more
        await asyncio.sleep(1.0)
        await engine.evaluate()
    assert await events() == before
    # One key per event, shared by the event's channels.
    by_key: dict[str, set[str]] = {}
    for row in await engine.notifications():
        by_key.setdefault(row["idempotency_key"], set()).add(row["event"])
    assert all(len(kinds) == 1 for kinds in by_key.values())
    await engine.write("cold-1", (at(1), 1.0))
    await engine.evaluate()
    assert (await events())[-2:] == [(first, "resolved"), (boss, "resolved")]


async def test_a_silence_keeps_the_alert_and_suppresses_its_notifications(
    engine: Engine,
) -> None:
    await engine.device("cold-1", group="cold rooms")
    channel = await engine.channel("a")
    await engine.rule(
        {"type": "threshold", "metric": "t", "op": ">", "value": 8}, channels=[channel]
    )
    await engine.sql(
        "INSERT INTO silences (group_name, ends_at, reason, created_by)"
        " VALUES ('cold rooms', now() + interval '1 hour', 'defrosting', 'test')"
    )
    await engine.write("cold-1", (at(0), 9.0))
    await engine.evaluate()
    (alert,) = await engine.alerts()
    assert alert["state"] == "firing"
    (row,) = await engine.notifications()
    assert (row["status"], row["last_error"]) == ("suppressed", "silenced: defrosting")
    await engine.sql("UPDATE silences SET ends_at = now(), starts_at = now() - interval '1 h'")
    await engine.write("cold-1", (at(1), 1.0))
    await engine.evaluate()
    assert [r["status"] for r in await engine.notifications()] == ["suppressed", "pending"]
