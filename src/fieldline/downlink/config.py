"""Delivering desired configuration: retained, QoS 1, on each device's config topic.

A change is stored first and published after; what the broker did not
acknowledge stays pending (`version > published_version`) and the worker
publishes it in its next round. Used by the API and by the worker.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

from psycopg import AsyncConnection

from fieldline.broker.base import BrokerError
from fieldline.broker.publisher import Publisher
from fieldline.domain.config import config_message
from fieldline.domain.topics import Downlink, TopicScheme
from fieldline.storage import config as config_store
from fieldline.storage.audit import SYSTEM_ACTOR
from fieldline.storage.db import Row

log = logging.getLogger(__name__)

# Configurations locked and published at once: bounded, and the publishes in a chunk
# are awaited together rather than one acknowledgement after the other.
CHUNK = 200


@dataclass(frozen=True, slots=True)
class Delivery:
    published: int
    failed: int


async def deliver(
    conn: AsyncConnection[Row],
    publisher: Publisher | None,
    topics: TopicScheme,
    *,
    device_ids: list[str] | None = None,
    everything: bool = False,
) -> Delivery:
    """Publish the pending configurations of `device_ids` (None: of every device).

    `everything` republishes those already published too: a broker that keeps
    retained messages in memory only has forgotten them after a restart.
    """
    if publisher is None or not publisher.connected or device_ids == []:
        return Delivery(0, 0)
    published = failed = 0
    after: str | None = None
    while True:
        async with conn.transaction():
            batch = await config_store.lock_deliverable(
                conn, device_ids=device_ids, everything=everything, after=after, limit=CHUNK
            )
            if not batch:
                break
            outcomes = await asyncio.gather(
                *(
                    publisher.publish(
                        topics.downlink(item.device_id, Downlink.CONFIG),
                        config_message(item.version, item.effective),
                        retain=True,
                    )
                    for item in batch
                ),
                return_exceptions=True,
            )
            acknowledged = []
            for item, outcome in zip(batch, outcomes, strict=True):
                if outcome is None:
                    acknowledged.append(item)
                elif isinstance(outcome, BrokerError):
                    failed += 1
                else:
                    raise outcome
            await config_store.mark_published(conn, acknowledged)
        published += len(acknowledged)
        after = batch[-1].device_id
        if len(batch) < CHUNK:
            break
    if failed:
        log.warning(
            "configuration not delivered; the worker retries",
            extra={"published": published, "failed": failed},
        )
    return Delivery(published, failed)


async def follow_group(
    conn: AsyncConnection[Row],
    publisher: Publisher | None,
    topics: TopicScheme,
    device_id: str,
    *,
    actor: str,
) -> None:
    """After a device joined or left a group: version and deliver its configuration.

    Never raises: the device change is already stored, and the worker catches
    up on whatever this did not finish.
    """
    try:
        versioned = await config_store.follow_groups(conn, actor=actor, device_ids=[device_id])
        if versioned:
            await deliver(conn, publisher, topics, device_ids=[device_id])
    except Exception:
        log.exception("configuration not updated after a group change", extra={"device": device_id})


async def forget(publisher: Publisher | None, topics: TopicScheme, device_id: str) -> None:
    """A deleted device's retained configuration must not reach a new device of that id."""
    if publisher is None:
        return
    try:
        await publisher.publish(topics.downlink(device_id, Downlink.CONFIG), b"", retain=True)
    except BrokerError as exc:
        log.warning(
            "retained configuration of a deleted device not cleared",
            extra={"device": device_id, "error": str(exc)},
        )


async def catch_up(
    conn: AsyncConnection[Row],
    publisher: Publisher | None,
    topics: TopicScheme,
    *,
    everything: bool,
) -> Delivery:
    """The worker's round: version devices whose group changed, then publish what is pending.

    `everything` (the worker's first round) republishes every configuration.
    """
    versioned = await config_store.follow_groups(conn, actor=SYSTEM_ACTOR)
    if versioned:
        log.info("configuration versioned after group changes", extra={"count": len(versioned)})
    return await deliver(conn, publisher, topics, everything=everything)
