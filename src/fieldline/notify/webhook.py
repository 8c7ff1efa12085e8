"""The generic webhook: the stored body as it is, signed, with its idempotency key.

Receivers verify `X-Fieldline-Signature: sha256=<hex>` as the HMAC-SHA256 of the raw
request body with the channel's secret, and drop a repeated
`X-Fieldline-Idempotency-Key`: the outbox delivers at least once, so a worker that
stops between a send and recording it sends the same notification again, with the
same key.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass

import httpx

from fieldline.notify.base import Delivery, Notice
from fieldline.notify.http import post_json

SIGNATURE_HEADER = "X-Fieldline-Signature"
IDEMPOTENCY_HEADER = "X-Fieldline-Idempotency-Key"
EVENT_HEADER = "X-Fieldline-Event"


def signature(secret: str, body: bytes) -> str:
    """The signature header's value for `body`."""
    digest = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    return f"sha256={digest}"


@dataclass(frozen=True, slots=True)
class WebhookChannel:
    url: str
    secret: str
    client: httpx.AsyncClient

    async def send(self, notice: Notice) -> Delivery:
        return await post_json(
            self.client,
            self.url,
            notice.body,
            {
                SIGNATURE_HEADER: signature(self.secret, notice.body),
                IDEMPOTENCY_HEADER: notice.idempotency_key,
                EVENT_HEADER: notice.event,
            },
        )
