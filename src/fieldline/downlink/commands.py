"""Sending commands through the broker and recording that the broker has them.

Devices usually connect with clean sessions, so the broker cannot be trusted to
keep a command for an offline device: fieldline keeps it `pending` and sends it
once the device is online again (the worker's dispatcher), or at once when it
is online already (the API, `send_new`). "sent" means the broker acknowledged
the message (QoS 1), not that the device got it; a device that never answers
lets the command expire.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime
from uuid import UUID

from psycopg import AsyncConnection

from fieldline.broker.publisher import Publisher, PublishError
from fieldline.domain.commands import Command
from fieldline.domain.topics import Downlink, TopicScheme
from fieldline.storage import commands as command_store
from fieldline.storage.db import Row
from fieldline.storage.locks import JobLock, try_job_lock

log = logging.getLogger(__name__)

DISPATCH_BATCH = 200  # commands sent per round at most; a full round is followed at once


@dataclass(frozen=True, slots=True)
class DispatchRound:
    expired: int
    sent: int
    more: bool = False  # the round was full: more may be due now


async def _publish(publisher: Publisher, topics: TopicScheme, command: Command) -> bool:
    try:
        await publisher.publish(
            topics.downlink(command.device_id, Downlink.COMMANDS), command.message()
        )
    except PublishError as exc:
        log.warning(
            "command not sent; it stays pending",
            extra={
                "device_id": command.device_id,
                "command_id": str(command.command_id),
                "error": str(exc),
            },
        )
        return False
    return True


async def send_new(
    conn: AsyncConnection[Row], publisher: Publisher, topics: TopicScheme, command: Command
) -> Command:
    """Send a just-created command to its online device now; answer it as it is then.

    It stays pending (for the dispatcher) when an older command of the device is
    still pending, when the dispatcher is sending it already, or when the broker
    does not acknowledge it.
    """
    async with conn.transaction():
        claimed = await command_store.claim_if_next(conn, command.command_id)
        if claimed is None or not await _publish(publisher, topics, claimed):
            return command
        (sent,) = await command_store.mark_sent(conn, [claimed.command_id])
    return sent


async def dispatch_round(
    conn: AsyncConnection[Row],
    *,
    publisher: Publisher | None,
    topics: TopicScheme,
    online_since: datetime,
    limit: int = DISPATCH_BATCH,
) -> DispatchRound | None:
    """Expire overdue commands; send pending ones to devices online since `online_since`.

    None: another dispatcher holds the lock. Without a connected publisher,
    commands are only expired.
    """
    deliver = publisher is not None and publisher.connected
    if not await command_store.dispatch_needed(conn, online_since=online_since, deliver=deliver):
        return DispatchRound(expired=0, sent=0)
    async with conn.transaction():
        if not await try_job_lock(conn, JobLock.COMMAND_DISPATCH):  # one dispatcher: in order, once
            return None
        expired = await command_store.expire_overdue(conn)
        sent: list[UUID] = []
        if publisher is not None and deliver:
            for command in await command_store.claim_due(
                conn, online_since=online_since, limit=limit
            ):
                if not await _publish(publisher, topics, command):
                    break  # the broker is away: the rest waits for the next round, in order
                sent.append(command.command_id)
        await command_store.mark_sent(conn, sent)
    return DispatchRound(expired=expired, sent=len(sent), more=len(sent) == limit)
