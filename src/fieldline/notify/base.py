"""The interface every notification channel offers to the outbox's dispatcher.

A channel turns one notification (the webhook body of SPEC §6, as stored in the outbox)
into one send to one place: a webhook, Discord, Slack, an SMTP server, or anything
Apprise reaches. It answers what happened; the dispatcher decides what follows
(delivered, retried later, given up, the channel marked failing).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Protocol

import orjson

# How long one send may take (connect, TLS, request, answer) before it counts as failed.
SEND_TIMEOUT_SECONDS = 10.0
# The longest wait a receiver's Retry-After is taken at its word for.
MAX_RETRY_AFTER_SECONDS = 3600.0


@dataclass(frozen=True, slots=True)
class Notice:
    """One notification to send: the stored body, byte for byte, and what names it."""

    body: bytes  # the JSON webhook body exactly as stored: what the signature covers
    event: str  # firing | repeat | escalation | acknowledged | resolved | test
    idempotency_key: str  # the same for every channel and every retry of one event

    def fields(self) -> dict[str, Any]:
        """The body parsed, for channels that render it in their own shape."""
        parsed = orjson.loads(self.body)
        return parsed if isinstance(parsed, dict) else {}


@dataclass(frozen=True, slots=True)
class Delivery:
    """What one send came to.

    `ok` only when the receiver accepted it (a 2xx, or the SMTP server queued the mail).
    `status_code` is the HTTP status or SMTP reply code when there was one; `error` a
    line for people when not ok; `retry_after` the seconds the receiver asked to wait
    (HTTP 429/503 Retry-After), which the dispatcher honours over its own backoff.
    """

    ok: bool
    status_code: int | None = None
    error: str | None = None
    retry_after: float | None = None


class Channel(Protocol):
    async def send(self, notice: Notice) -> Delivery:
        """Send `notice` once, within SEND_TIMEOUT_SECONDS.

        Never raises for a failed delivery (refused, unreachable, timed out, a bad
        answer): it answers Delivery(ok=False, error=...) instead, so the dispatcher
        records every attempt alike. It does not retry; the outbox does.
        """
        ...


def failed(error: str, status_code: int | None = None) -> Delivery:
    return Delivery(ok=False, status_code=status_code, error=error[:500])


def retry_after_seconds(value: str | None) -> float | None:
    """An HTTP Retry-After given in seconds (the form webhook receivers use), bounded."""
    if value is None:
        return None
    try:
        seconds = float(value)
    except ValueError:
        return None
    if math.isnan(seconds) or seconds < 0:  # not an answer
        return None
    return min(seconds, MAX_RETRY_AFTER_SECONDS)
