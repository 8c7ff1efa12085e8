"""The worker's rollout rounds: who is in, who is told, who finished, and when to stop.

Every round (about a second, with jitter) takes each running or paused rollout in a
transaction of its own, its row locked, and:

1. starts the next stage when its time has come (a paused rollout's clock waits);
2. judges the devices under way from what they said since they were told: back on the
   new version (an `online` status with it) starts the settle time; back on the old one
   after installing is a rollback; still on the way after `device_timeout_seconds` is a
   timeout; settled (online, heard from, not offline since, `settle_seconds` long) is
   success, and offline or silent while settling is failure;
3. clears the retained `ota` message of every device whose update is over;
4. pauses the rollout when its failures pass the abort threshold;
5. lets in the target's devices whose place is below the stage's share (new members of
   a targeted group included) and tells the next ones, within the pace;
6. completes it once every targeted device finished at 100%.

Progress reports (downloading .. installed, failed) are applied by ingest's writer as
they arrive (storage/rollouts.apply_progress); this module never waits on a device.
"""

from __future__ import annotations

import asyncio
import logging
import math
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import orjson
from psycopg import AsyncConnection

from fieldline.broker.publisher import Publisher, PublishError
from fieldline.domain.firmware import (
    PLACES,
    is_downgrade,
    place,
    places_for_percentage,
)
from fieldline.domain.topics import Downlink, TopicScheme
from fieldline.storage import audit as audit_store
from fieldline.storage import firmware as firmware_store
from fieldline.storage import rollouts as rollout_store
from fieldline.storage.db import Row
from fieldline.storage.locks import JobLock, session_job_lock
from fieldline.storage.rollouts import FAILURES, FINISHED, OPEN

log = logging.getLogger(__name__)

Conn = AsyncConnection[Row]

# The pace's bucket holds at most this many seconds of notifications: a round late by a
# moment catches up, a rollout paused for an hour does not tell an hour's worth at once.
# Rounds start 0.8-1.2 s after the last one ended, and one may take a second at 10,000
# devices (`fieldline bench ota`): 3 s keeps the pace through a gap of 2 s and more.
BURST_SECONDS = 3.0
# A status stored this little before the device's report that it installed may have been
# sent after it; judged so once the device had ROLLBACK_GRACE to come back on the new one.
REORDER_WINDOW = timedelta(seconds=5)
ROLLBACK_GRACE = timedelta(seconds=30)
INSTALLING = ("installing", "installed")


@dataclass(slots=True)
class RoundOutcome:
    rollouts: int = 0
    notified: int = 0
    finished: dict[str, int] = field(default_factory=dict)
    paused: list[int] = field(default_factory=list)
    completed: list[int] = field(default_factory=list)


async def rollout_round(
    conn: Conn,
    *,
    publisher: Publisher | None,
    topics: TopicScheme,
    base_url: str,
    now: datetime,
) -> RoundOutcome | None:
    """One round over every rollout; None when another worker is doing it."""
    async with session_job_lock(conn, JobLock.ROLLOUTS) as got:
        if not got:
            return None
        return await _round(conn, publisher, topics, base_url, now)


async def _round(
    conn: Conn, publisher: Publisher | None, topics: TopicScheme, base_url: str, now: datetime
) -> RoundOutcome:
    outcome = RoundOutcome()
    cursor = await conn.execute(
        "SELECT id FROM rollouts r WHERE state IN ('running', 'paused') OR EXISTS"
        " (SELECT 1 FROM rollout_devices rd WHERE rd.rollout_id = r.id AND rd.announced"
        " AND rd.finished_at IS NOT NULL) ORDER BY id"
    )
    for row in await cursor.fetchall():
        async with conn.transaction():
            offers = await _advance(conn, row["id"], publisher, topics, base_url, now, outcome)
        outcome.rollouts += 1
        if offers is not None and publisher is not None:
            outcome.notified += await _offer(conn, offers, publisher, topics, now)
    return outcome


@dataclass(frozen=True, slots=True)
class Offers:
    """Devices recorded as told (committed), to be told now: a device that fetches its
    image the moment the message arrives finds itself `notified` already."""

    rollout_id: int
    devices: list[str]
    payload: bytes


async def _offer(
    conn: Conn, offers: Offers, publisher: Publisher, topics: TopicScheme, now: datetime
) -> int:
    """Publish the offers; the devices the broker did not acknowledge wait again."""
    messages = [(topics.downlink(d, Downlink.OTA), offers.payload) for d in offers.devices]
    sent = set(await _publish_all(publisher, messages, retain=True))
    unsent = [d for i, d in enumerate(offers.devices) if i not in sent]
    if unsent:  # they wait again, and the pace gives their turns back
        async with conn.transaction():
            await conn.execute(
                "UPDATE rollout_devices SET state = 'pending', notified_at = NULL,"
                " announced = false WHERE rollout_id = %s AND device_id = ANY(%s)"
                " AND state = 'notified' AND notified_at = %s",
                (offers.rollout_id, unsent, now),
            )
            await conn.execute(
                "UPDATE rollouts SET tokens = tokens + %s WHERE id = %s",
                (len(unsent), offers.rollout_id),
            )
    return len(sent)


async def _advance(
    conn: Conn,
    rollout_id: int,
    publisher: Publisher | None,
    topics: TopicScheme,
    base_url: str,
    now: datetime,
    outcome: RoundOutcome,
) -> Offers | None:
    rollout = await rollout_store.get(conn, rollout_id, lock=True)
    if rollout["state"] not in rollout_store.ACTIVE:  # over: only its messages to clear
        await _clear_finished(conn, rollout, publisher, topics)
        return None
    running = rollout["state"] == "running"
    if running:
        await _next_stage(conn, rollout, now)
    await _judge(conn, rollout, now, outcome)
    await _clear_finished(conn, rollout, publisher, topics)
    if running and await _pause_if_failing(conn, rollout, now):
        outcome.paused.append(rollout_id)
        return None
    if not running:
        return None
    everyone = await _admit(conn, rollout, now)
    offers = await _notify(conn, rollout, publisher, base_url, now)
    if everyone and await _completed(conn, rollout, now):
        outcome.completed.append(rollout_id)
    return offers


async def _next_stage(conn: Conn, rollout: dict[str, Any], now: datetime) -> None:
    stages: list[dict[str, Any]] = rollout["stages"]
    stage = rollout["stage"]
    if stage + 1 >= len(stages):
        return
    due = rollout["stage_started_at"] + timedelta(seconds=stages[stage + 1].get("after_seconds", 0))
    if now < due:
        return
    rollout["stage"], rollout["stage_started_at"] = stage + 1, now
    await rollout_store.update(conn, rollout["id"], {"stage": stage + 1, "stage_started_at": now})
    log.info("rollout stage started", extra={"rollout_id": rollout["id"], "stage": stage + 1})


async def _judge(conn: Conn, rollout: dict[str, Any], now: datetime, outcome: RoundOutcome) -> None:
    """Move the devices under way on from what they said since they were told."""
    cursor = await conn.execute(
        "SELECT rd.device_id, rd.state, rd.from_version, rd.notified_at, rd.installed_at,"
        " rd.came_back_at, rd.reported_at, d.firmware_version, d.last_seen, d.status,"
        " (SELECT max(e.time) FROM device_status_events e WHERE e.device_id = rd.device_id"
        "   AND e.status = 'online' AND e.time > rd.notified_at) AS online_at,"
        " (SELECT max(e.time) FROM device_status_events e WHERE e.device_id = rd.device_id"
        "   AND e.status = 'offline' AND e.time > rd.notified_at) AS offline_at"
        " FROM rollout_devices rd JOIN devices d ON d.device_id = rd.device_id"
        " WHERE rd.rollout_id = %s AND rd.state = ANY(%s)",
        (rollout["id"], list(OPEN)),
    )
    target = rollout["version"]
    timeout = timedelta(seconds=rollout["device_timeout_seconds"])
    settle = timedelta(seconds=rollout["settle_seconds"])
    for device in await cursor.fetchall():
        verdict = _verdict(device, target, now, timeout, settle)
        if verdict is None:
            continue
        state, error, came_back_at = verdict
        finished = state in FINISHED
        await conn.execute(
            "UPDATE rollout_devices SET state = %s, error = coalesce(%s, error),"
            " came_back_at = coalesce(%s, came_back_at), finished_at = %s"
            " WHERE rollout_id = %s AND device_id = %s",
            (
                state,
                error,
                came_back_at,
                now if finished else None,
                rollout["id"],
                device["device_id"],
            ),
        )
        if finished:
            outcome.finished[state] = outcome.finished.get(state, 0) + 1


def _came_back_on_the_old(
    device: dict[str, Any], online_at: datetime | None, now: datetime
) -> bool:
    """Online again on the old version after installing: a rollback.

    After `installed` the next `online` status is the reboot. The report and that status
    travel on two connections (before and after the reboot), so the status may be stored
    a moment before the report: one within REORDER_WINDOW before it counts too, once the
    device has had ROLLBACK_GRACE to come back on the new version and has not. While
    `installing`, an `online` status may be a dropped connection during the flash: it
    counts only when neither `installed` nor the new version followed within the grace.
    The `online` status is the proof, whatever came after it: the last will of the
    session the reboot cut off may arrive later still.
    """
    state = device["state"]
    if online_at is None or state not in INSTALLING:
        return False
    since: datetime = device["reported_at"] if state == "installed" else device["installed_at"]
    if state == "installed" and online_at > since:
        return True
    return online_at > since - REORDER_WINDOW and now - max(online_at, since) > ROLLBACK_GRACE


def _verdict(
    device: dict[str, Any],
    target: str,
    now: datetime,
    timeout: timedelta,
    settle: timedelta,
) -> tuple[str, str | None, datetime | None] | None:
    """The device's next state, an error for the operator, and when it came back."""
    firmware = device["firmware_version"]
    online_at: datetime | None = device["online_at"]
    offline_at: datetime | None = device["offline_at"]
    if device["state"] == "verifying":
        came_back: datetime = device["came_back_at"]
        if firmware != target:
            return "rolled_back", f"went back to {firmware} while settling", None
        if now < came_back + settle:
            return None
        last_seen: datetime | None = device["last_seen"]
        # Offline since it came back, and nothing heard after: down. An offline status
        # followed by readings is not: a broker publishes the last will of the session
        # the reboot cut off when the new one takes its place, which may be just after
        # the device said it was online again.
        if (
            offline_at is not None
            and offline_at > came_back
            and (last_seen is None or last_seen <= offline_at)
        ):
            seconds = (offline_at - came_back).total_seconds()
            return "failed", f"went offline {seconds:.0f} s after coming back on {target}", None
        if settle and (last_seen is None or last_seen <= came_back):
            return "failed", f"silent for the {settle.total_seconds():.0f} s after its reboot", None
        return "succeeded", None, None
    if online_at is not None and firmware == target and firmware != device["from_version"]:
        return "verifying", None, online_at
    rolled_back = _came_back_on_the_old(device, online_at, now)
    if rolled_back:
        return "rolled_back", f"came back on {firmware} after installing {target}", None
    if now - device["notified_at"] > timeout:
        return "timed_out", f"not done {timeout.total_seconds():.0f} s after it was told", None
    return None


async def _clear_finished(
    conn: Conn, rollout: dict[str, Any], publisher: Publisher | None, topics: TopicScheme
) -> None:
    """Remove the retained `ota` message of each device whose update is over."""
    if publisher is None or not publisher.connected:
        return
    cursor = await conn.execute(
        "SELECT device_id FROM rollout_devices WHERE rollout_id = %s AND announced"
        " AND state <> ALL(%s) LIMIT 1000",
        (rollout["id"], list(OPEN)),
    )
    devices = [row["device_id"] for row in await cursor.fetchall()]
    cleared = await _publish_all(
        publisher, [(topics.downlink(device, Downlink.OTA), b"") for device in devices]
    )
    if cleared:
        await conn.execute(
            "UPDATE rollout_devices SET announced = false WHERE rollout_id = %s"
            " AND device_id = ANY(%s)",
            (rollout["id"], [devices[i] for i in cleared]),
        )


async def _pause_if_failing(conn: Conn, rollout: dict[str, Any], now: datetime) -> bool:
    cursor = await conn.execute(
        "SELECT state, count(*) AS n FROM rollout_devices WHERE rollout_id = %s"
        " AND state = ANY(%s) AND (%s::timestamptz IS NULL OR finished_at >= %s)"
        " GROUP BY state",
        (rollout["id"], list(FINISHED), rollout["counting_since"], rollout["counting_since"]),
    )
    counts = {row["state"]: row["n"] for row in await cursor.fetchall()}
    finished = sum(counts.values())
    failures = sum(counts.get(state, 0) for state in FAILURES)
    if finished < rollout["abort_min_finished"] or finished == 0:
        return False
    share = 100.0 * failures / finished
    threshold = rollout["abort_failure_percent"]
    if share <= threshold:
        return False
    reason = (
        f"{failures} of {finished} finished devices failed ({share:.0f}% > {threshold:g}%): "
        f"{counts.get('failed', 0)} failed, {counts.get('rolled_back', 0)} rolled back, "
        f"{counts.get('timed_out', 0)} timed out"
    )
    await rollout_store.update(
        conn, rollout["id"], {"state": "paused", "paused_at": now, "pause_reason": reason}
    )
    await audit_store.record(
        conn,
        actor=audit_store.SYSTEM_ACTOR,
        action="rollout.auto_pause",
        target_type="rollout",
        target_id=str(rollout["id"]),
        detail={"reason": reason},
    )
    log.warning("rollout paused itself", extra={"rollout_id": rollout["id"], "reason": reason})
    return True


def _share_places(rollout: dict[str, Any], places: list[int]) -> int:
    """The places below which devices are in at the current stage (or the hand-raised share)."""
    stage = rollout["stages"][rollout["stage"]]
    if "devices" in stage:
        ordered = sorted(places)
        count = min(int(stage["devices"]), len(ordered))
        bound = ordered[count - 1] + 1 if count else 0
    else:
        bound = places_for_percentage(float(stage["percentage"]))
    manual = rollout["manual_percentage"]
    if manual is not None:
        bound = max(bound, places_for_percentage(float(manual)))
    return bound


async def _admit(conn: Conn, rollout: dict[str, Any], now: datetime) -> bool:
    """Let in the target's devices below the current share; answer whether the share is
    the whole target (every device in, or waiting in another rollout)."""
    devices = await rollout_store.targeted(
        conn,
        device_model=rollout["device_model"],
        group_ids=rollout["target_groups"],
        device_ids=rollout["target_devices"],
    )
    cursor = await conn.execute(
        "SELECT device_id FROM rollout_devices WHERE rollout_id = %s", (rollout["id"],)
    )
    present = {row["device_id"] for row in await cursor.fetchall()}
    placed = {d["device_id"]: place(rollout["id"], d["device_id"]) for d in devices}
    bound = _share_places(rollout, list(placed.values()))
    entering = [
        d for d in devices if d["device_id"] not in present and placed[d["device_id"]] < bound
    ]
    if entering:
        busy = await _busy_elsewhere(conn, rollout["id"], [d["device_id"] for d in entering])
        rows = []
        for device in entering:
            if device["device_id"] in busy:
                continue  # its update in another rollout goes first
            current, version = device["firmware_version"], rollout["version"]
            state, error = "pending", None
            if current == version:
                state, error = "skipped", f"already on {version}"
            elif is_downgrade(current, version) and not rollout["allow_downgrade"]:
                state, error = "skipped", f"on {current}, newer than {version}; no downgrades"
            rows.append(
                (
                    rollout["id"],
                    device["device_id"],
                    placed[device["device_id"]],
                    state,
                    current,
                    error,
                    now,
                    now if state == "skipped" else None,
                )
            )
        async with conn.cursor() as insert:
            await insert.executemany(
                "INSERT INTO rollout_devices (rollout_id, device_id, place, state, from_version,"
                " error, entered_at, finished_at) VALUES (%s, %s, %s, %s, %s, %s, %s, %s)"
                " ON CONFLICT DO NOTHING",
                rows,
            )
    return bound >= PLACES and len(present) + len(entering) >= len(devices)


async def _busy_elsewhere(conn: Conn, rollout_id: int, device_ids: list[str]) -> set[str]:
    cursor = await conn.execute(
        "SELECT rd.device_id FROM rollout_devices rd JOIN rollouts r ON r.id = rd.rollout_id"
        " WHERE rd.device_id = ANY(%s) AND rd.rollout_id <> %s AND r.state = ANY(%s)"
        " AND rd.state = ANY(%s)",
        (device_ids, rollout_id, list(rollout_store.ACTIVE), ["pending", *OPEN]),
    )
    return {row["device_id"] for row in await cursor.fetchall()}


async def _notify(
    conn: Conn,
    rollout: dict[str, Any],
    publisher: Publisher | None,
    base_url: str,
    now: datetime,
) -> Offers | None:
    """Record the next pending devices (in place order) as told, as many as the pace
    allows; the caller tells them once this is committed."""
    rate = rollout["max_per_minute"] / 60.0
    elapsed = max((now - rollout["tokens_at"]).total_seconds(), 0.0)
    tokens = min(rollout["tokens"] + elapsed * rate, max(1.0, rate * BURST_SECONDS))
    allowed = math.floor(tokens)
    devices: list[str] = []
    if allowed and publisher is not None and publisher.connected:
        cursor = await conn.execute(
            "UPDATE rollout_devices SET state = 'notified', notified_at = %(now)s,"
            " announced = true WHERE rollout_id = %(id)s AND device_id IN (SELECT device_id"
            " FROM rollout_devices WHERE rollout_id = %(id)s AND state = 'pending'"
            " ORDER BY place LIMIT %(allowed)s) RETURNING device_id, place",
            {"now": now, "id": rollout["id"], "allowed": allowed},
        )
        rows = sorted(await cursor.fetchall(), key=lambda row: row["place"])
        devices = [row["device_id"] for row in rows]
    await rollout_store.update(
        conn, rollout["id"], {"tokens": tokens - len(devices), "tokens_at": now}
    )
    if not devices:
        return None
    return Offers(rollout["id"], devices, await _announcement(conn, rollout, base_url))


async def _announcement(conn: Conn, rollout: dict[str, Any], base_url: str) -> bytes:
    """The `ota` message: the metadata `GET /firmware/{model}/{version}` answers."""
    firmware = await firmware_store.get_by_id(conn, rollout["firmware_id"])
    return orjson.dumps(
        {
            "device_model": firmware.device_model,
            "version": firmware.version,
            "binary_url": f"{base_url}/firmware/{firmware.device_model}/{firmware.version}/binary",
            "sha256": firmware.sha256,
            "signature": firmware.signature,
            "key_id": firmware.key_id,
            "size_bytes": firmware.size_bytes,
            "uploaded_at": firmware.uploaded_at,
            "required": rollout["required"],
            "rollout_id": rollout["id"],
            "allow_downgrade": rollout["allow_downgrade"],
        },
        option=orjson.OPT_UTC_Z,
    )


async def _publish_all(
    publisher: Publisher, messages: list[tuple[str, bytes]], *, retain: bool = True
) -> list[int]:
    """Publish at QoS 1 side by side; answer the indexes the broker acknowledged."""
    results = await asyncio.gather(
        *(publisher.publish(topic, payload, retain=retain) for topic, payload in messages),
        return_exceptions=True,
    )
    failed = [r for r in results if isinstance(r, BaseException)]
    for error in failed[:1]:
        if not isinstance(error, PublishError):
            raise error
        log.warning(
            "ota messages not acknowledged", extra={"failed": len(failed), "error": str(error)}
        )
    return [i for i, r in enumerate(results) if not isinstance(r, BaseException)]


async def _completed(conn: Conn, rollout: dict[str, Any], now: datetime) -> bool:
    row = await (
        await conn.execute(
            "SELECT count(*) AS open FROM rollout_devices WHERE rollout_id = %s"
            " AND (finished_at IS NULL OR announced)",
            (rollout["id"],),
        )
    ).fetchone()
    if row is None or row["open"]:
        return False
    await rollout_store.update(conn, rollout["id"], {"state": "completed", "finished_at": now})
    await audit_store.record(
        conn,
        actor=audit_store.SYSTEM_ACTOR,
        action="rollout.complete",
        target_type="rollout",
        target_id=str(rollout["id"]),
    )
    log.info("rollout completed", extra={"rollout_id": rollout["id"]})
    return True
