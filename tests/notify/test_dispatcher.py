"""The outbox delivered by the worker to real receivers: order, retries, giving up, failing
channels, and two workers at once."""

from __future__ import annotations

import asyncio
import itertools
import random
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from fieldline.alerts.acknowledge import acknowledge
from fieldline.config import Settings
from fieldline.notify.dispatcher import Dispatcher, notify_jobs, retry_delay
from fieldline.notify.webhook import signature
from fieldline.ops.metrics import Metrics
from fieldline.storage import notifications as outbox
from fieldline.storage.db import Pool
from fieldline.worker.service import Worker
from tests.notify.conftest import Receiver, add_alert, add_channel, enqueue

SECRET = "a-webhook-secret-of-some-length"


def settings(tmp_path: Path, **changes: Any) -> Settings:
    return Settings(
        data_dir=tmp_path,
        notify_interval_seconds=0.05,
        notify_retry_start_seconds=0.05,
        notify_retry_cap_seconds=0.2,
        **changes,
    )


async def rows(pool: Pool, sql: str, *params: object) -> list[dict[str, Any]]:
    async with pool.connection() as conn:
        return await (await conn.execute(sql, params)).fetchall()


async def eventually(check: Callable[[], Awaitable[bool]], *, seconds: float = 30.0) -> None:
    deadline = time.monotonic() + seconds
    while not await check():
        assert time.monotonic() < deadline, "not within the deadline"
        await asyncio.sleep(0.05)


async def run_rounds(
    pool: Pool, dispatcher: Dispatcher, check: Callable[[], Awaitable[bool]]
) -> None:
    """Dispatch rounds, as the worker would, until `check` holds."""

    async def done() -> bool:
        async with pool.connection() as conn:
            await dispatcher.round(conn, None)  # type: ignore[arg-type]  # unused
        return await check()

    await eventually(done)


async def webhook(pool: Pool, name: str, receiver: Receiver, path: str) -> int:
    return await add_channel(pool, name, "webhook", {"url": receiver.url(path), "secret": SECRET})


def test_retry_waits_are_full_jitter_doubling_to_the_cap_and_never_under_retry_after() -> None:
    rng = random.Random(7)
    for attempts, ceiling in [(1, 1.0), (2, 2.0), (3, 4.0), (6, 30.0), (60, 30.0)]:
        waits = [retry_delay(attempts, start=1.0, cap=30.0, retry_after=None, rng=rng)
                 for _ in range(300)]  # fmt: skip
        assert all(0.0 <= wait <= ceiling for wait in waits)
        assert max(waits) > ceiling * 0.9  # spread over the whole range, not its top half
        assert min(waits) < ceiling * 0.1
    assert retry_delay(1, start=1.0, cap=30.0, retry_after=45.0, rng=rng) == 45.0


async def test_a_receiver_down_for_a_while_then_gets_every_notification_in_order_once(
    pool: Pool, receiver: Receiver, tmp_path: Path
) -> None:
    receiver.stop()
    channel = await webhook(pool, "ops", receiver, "/hook")
    first, second = await add_alert(pool), await add_alert(pool)
    keys = [
        await enqueue(pool, first, [channel], "firing"),
        await enqueue(pool, second, [channel], "firing"),
        await enqueue(pool, first, [channel], "repeat"),
        await enqueue(pool, first, [channel], "resolved"),
        await enqueue(pool, second, [channel], "resolved"),
    ]
    metrics = Metrics()
    worker = Worker(settings=settings(tmp_path), pool=pool, metrics=metrics, features=[notify_jobs])
    stopping = asyncio.Event()
    running = asyncio.create_task(worker.run(stopping))
    try:

        async def head_failed_a_few_times() -> bool:
            (head,) = await rows(pool, "SELECT attempts FROM notifications ORDER BY id LIMIT 1")
            return bool(head["attempts"] >= 4)

        await eventually(head_failed_a_few_times)
        # Only the channel's head was tried: the rest wait behind it, in order.
        waiting = await rows(pool, "SELECT attempts FROM notifications ORDER BY id OFFSET 1")
        assert [row["attempts"] for row in waiting] == [0, 0, 0, 0]

        receiver.start()

        async def all_delivered() -> bool:
            return len(receiver.received()) >= len(keys) and not await rows(
                pool, "SELECT 1 FROM notifications WHERE status <> 'delivered'"
            )

        await eventually(all_delivered)
        await asyncio.sleep(0.3)  # a few more rounds: nothing is sent twice
    finally:
        stopping.set()
        await running

    arrived = receiver.received()
    assert [r.headers["X-Fieldline-Idempotency-Key"] for r in arrived] == keys
    assert [r.json()["event"] for r in arrived] == [
        "firing", "firing", "repeat", "resolved", "resolved",
    ]  # fmt: skip
    for request in arrived:
        assert request.headers["X-Fieldline-Signature"] == signature(SECRET, request.body)

    head, *rest = await rows(
        pool,
        "SELECT n.id, n.attempts, n.delivered_at, n.last_error,"
        " array_agg(a.ok ORDER BY a.id) AS oks FROM notifications n"
        " JOIN notification_attempts a ON a.notification_id = n.id GROUP BY n.id ORDER BY n.id",
    )
    # Every attempt is on record: the head's failures, then its delivery.
    assert head["oks"][-1] is True
    assert not any(head["oks"][:-1])
    assert head["attempts"] == len(head["oks"]) >= 5
    assert head["last_error"] is None
    assert all(row["oks"] == [True] and row["attempts"] == 1 for row in rest)
    assert metrics.notifications.labels(outcome="delivered")._value.get() == 5
    assert metrics.notifications.labels(outcome="retried")._value.get() == head["attempts"] - 1
    assert metrics.notifications_pending._value.get() == 0
    (channel_row,) = await rows(
        pool, "SELECT failing_since, last_error FROM notification_channels WHERE id = %s", channel
    )
    assert channel_row == {"failing_since": None, "last_error": None}


async def test_retry_after_is_waited_for_and_an_old_notification_is_given_up(
    pool: Pool, receiver: Receiver, tmp_path: Path
) -> None:
    receiver.status = 429
    receiver.retry_after = "1"
    channel = await webhook(pool, "slow", receiver, "/hook")
    alert = await add_alert(pool)
    await enqueue(pool, alert, [channel], "firing")
    await enqueue(pool, alert, [channel], "resolved")
    dispatcher = Dispatcher(settings(tmp_path, notify_give_up_seconds=2.5), Metrics())

    async def given_up() -> bool:
        return bool(await rows(pool, "SELECT 1 FROM notifications WHERE status = 'failed'"))

    await run_rounds(pool, dispatcher, given_up)
    receiver.status, receiver.retry_after = 200, None

    async def second_delivered() -> bool:
        return bool(receiver.received())

    await run_rounds(pool, dispatcher, second_delivered)

    failed, delivered = await rows(
        pool, "SELECT id, status, attempts, last_error FROM notifications ORDER BY id"
    )
    assert failed["status"] == "failed"
    assert failed["last_error"].startswith("HTTP 429")
    assert delivered["status"] == "delivered"
    (request,) = receiver.received()
    assert request.json()["event"] == "resolved"
    # Each retry waited for the receiver's Retry-After (1 s) at least.
    times = [
        row["at"]
        for row in await rows(
            pool,
            "SELECT at FROM notification_attempts WHERE notification_id = %s ORDER BY id",
            failed["id"],
        )
    ]
    assert len(times) == failed["attempts"] >= 2
    assert all((b - a).total_seconds() >= 1.0 for a, b in itertools.pairwise(times))


async def test_a_failing_channel_raises_an_alert_on_the_other_channel_and_resolves_it(
    pool: Pool, receiver: Receiver, tmp_path: Path
) -> None:
    down = Receiver()  # never started until the end
    failing_channel = await webhook(pool, "pager", down, "/pager")
    other = await webhook(pool, "chat", receiver, "/chat")
    disabled = await webhook(pool, "off", receiver, "/off")
    async with pool.connection() as conn:
        await conn.execute(
            "UPDATE notification_channels SET enabled = false WHERE id = %s", (disabled,)
        )
    alert = await add_alert(pool)
    await enqueue(pool, alert, [failing_channel], "firing")
    dispatcher = Dispatcher(settings(tmp_path, notify_failing_after_attempts=3), Metrics())

    async def told_elsewhere() -> bool:
        return bool(receiver.received("/chat"))

    await run_rounds(pool, dispatcher, told_elsewhere)
    (opened,) = await rows(pool, "SELECT * FROM alerts WHERE kind = 'channel'")
    assert opened["channel_id"] == failing_channel
    assert opened["state"] == "firing"
    assert opened["severity"] == "critical"
    assert opened["rule_id"] is None
    assert opened["device_id"] is None
    assert opened["rule_name"] == 'notification channel "pager" failing'
    told = await rows(
        pool, "SELECT channel_id FROM notifications WHERE alert_id = %s", opened["id"]
    )
    assert told == [{"channel_id": other}]  # not itself, not the disabled channel
    # It opened with the third failed attempt (in that attempt's transaction).
    third = await rows(
        pool, "SELECT at FROM notification_attempts WHERE NOT ok ORDER BY id OFFSET 2 LIMIT 1"
    )
    assert third == [{"at": opened["started_at"]}]
    (firing,) = receiver.received("/chat")
    body = firing.json()
    assert body["kind"] == "channel"
    assert body["event"] == body["state"] == "firing"
    assert body["alert_id"] == opened["id"]
    assert body["rule"] == {"id": None, "name": 'notification channel "pager" failing'}
    assert "pager" in body["summary"]
    assert firing.headers["X-Fieldline-Idempotency-Key"] == f"alert-{opened['id']}-1"
    (state,) = await rows(
        pool,
        "SELECT failing_since, last_error FROM notification_channels WHERE id = %s",
        failing_channel,
    )
    assert state["failing_since"] == opened["started_at"]  # declared failing with the alert
    assert "Connect" in state["last_error"]

    # Someone acknowledges it: the other channel hears who, with its own key.
    async with pool.connection() as conn:
        acknowledged = await acknowledge(conn, opened["id"], username="oncall", note="on it")
    assert acknowledged.state == "acknowledged"

    async def ack_told() -> bool:
        return len(receiver.received("/chat")) == 2

    await run_rounds(pool, dispatcher, ack_told)
    ack = receiver.received("/chat")[1]
    assert (ack.json()["event"], ack.json()["state"]) == ("acknowledged", "acknowledged")
    assert (ack.json()["acknowledged_by"], ack.json()["note"]) == ("oncall", "on it")
    assert ack.headers["X-Fieldline-Idempotency-Key"] == f"alert-{opened['id']}-2"

    down.start()
    try:

        async def resolved_elsewhere() -> bool:
            return len(receiver.received("/chat")) == 3 and bool(down.received())

        await run_rounds(pool, dispatcher, resolved_elsewhere)
    finally:
        down.stop()
    (closed,) = await rows(pool, "SELECT * FROM alerts WHERE kind = 'channel'")
    assert closed["state"] == "resolved"
    resolved = receiver.received("/chat")[2]
    assert resolved.json()["event"] == "resolved"
    assert resolved.json()["resolved_at"] is not None
    assert resolved.headers["X-Fieldline-Idempotency-Key"] == f"alert-{opened['id']}-3"
    assert receiver.received("/off") == []  # a disabled channel is told nothing
    (state,) = await rows(
        pool,
        "SELECT failing_since, last_error FROM notification_channels WHERE id = %s",
        failing_channel,
    )
    assert state == {"failing_since": None, "last_error": None}


async def test_two_workers_dispatching_at_once_send_each_notification_once(
    pool: Pool, receiver: Receiver, tmp_path: Path
) -> None:
    channels = [await webhook(pool, f"hook-{i}", receiver, f"/{i}") for i in range(3)]
    alert = await add_alert(pool)
    keys = [await enqueue(pool, alert, channels, "repeat") for _ in range(10)]
    one, two = (Dispatcher(settings(tmp_path), Metrics()) for _ in range(2))
    skipped = 0

    async def keep_dispatching(dispatcher: Dispatcher) -> None:
        nonlocal skipped
        for _ in range(40):
            async with pool.connection() as conn:
                if await dispatcher.round(conn, None) is None:  # type: ignore[arg-type]
                    skipped += 1

    await asyncio.gather(keep_dispatching(one), keep_dispatching(two))

    for i in range(3):
        arrived = [r.headers["X-Fieldline-Idempotency-Key"] for r in receiver.received(f"/{i}")]
        assert arrived == keys
    assert not await rows(pool, "SELECT 1 FROM notifications WHERE status <> 'delivered'")
    assert skipped > 0  # they did overlap, and one stood aside


@pytest.mark.parametrize("status", [500, 404])
async def test_every_failed_attempt_is_recorded_with_its_status_and_error(
    pool: Pool, receiver: Receiver, tmp_path: Path, status: int
) -> None:
    receiver.status = status
    channel = await webhook(pool, "bad", receiver, "/hook")
    await enqueue(pool, await add_alert(pool), [channel], "firing")
    dispatcher = Dispatcher(settings(tmp_path), Metrics())

    async def tried_twice() -> bool:
        return len(await rows(pool, "SELECT 1 FROM notification_attempts")) >= 2

    await run_rounds(pool, dispatcher, tried_twice)
    attempts = await rows(
        pool, "SELECT ok, status_code, error, duration_ms FROM notification_attempts"
    )
    assert all(not a["ok"] and a["status_code"] == status for a in attempts)
    assert all(a["error"].startswith(f"HTTP {status}") and a["duration_ms"] > 0 for a in attempts)


async def test_a_send_whose_record_is_lost_is_sent_again_with_the_same_key(
    pool: Pool, receiver: Receiver, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The worker dies (here: its database write fails) after a receiver accepted a
    notification and before that was recorded: the next round sends it again, with the
    same idempotency key, and nothing after it is lost or reordered."""
    channel = await webhook(pool, "ops", receiver, "/hook")
    alert = await add_alert(pool)
    keys = [await enqueue(pool, alert, [channel], event) for event in ("firing", "resolved")]
    dispatcher = Dispatcher(settings(tmp_path), Metrics())
    record = outbox.record_attempt

    async def lost(*args: Any, **kwargs: Any) -> str | None:
        raise ConnectionError("the database went away")

    monkeypatch.setattr(outbox, "record_attempt", lost)
    async with pool.connection() as conn:
        with pytest.raises(ExceptionGroup):
            await dispatcher.round(conn, None)  # type: ignore[arg-type]
    assert [r.headers["X-Fieldline-Idempotency-Key"] for r in receiver.received()] == keys[:1]
    monkeypatch.setattr(outbox, "record_attempt", record)

    async def all_delivered() -> bool:
        return not await rows(pool, "SELECT 1 FROM notifications WHERE status <> 'delivered'")

    await run_rounds(pool, dispatcher, all_delivered)
    arrived = [r.headers["X-Fieldline-Idempotency-Key"] for r in receiver.received()]
    assert arrived == [keys[0], keys[0], keys[1]]
