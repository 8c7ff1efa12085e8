"""Discord through an incoming webhook: the summary as the message, details in an embed.

Discord answers 429 with Retry-After when a webhook posts too fast; the dispatcher
waits that long before the channel's next attempt.
"""

from __future__ import annotations

from dataclasses import dataclass

import httpx
import orjson

from fieldline.notify import render
from fieldline.notify.base import Delivery, Notice
from fieldline.notify.http import post_json

# Discord's limits: message content 2,000 characters, embed title 256, field value 1,024.
_CONTENT_MAX = 2000


@dataclass(frozen=True, slots=True)
class DiscordChannel:
    url: str
    client: httpx.AsyncClient

    async def send(self, notice: Notice) -> Delivery:
        fields = notice.fields()
        embed = {
            "title": render.headline(fields)[:256],
            "color": render.colour(fields),
            "fields": [
                {"name": label, "value": value[:1024], "inline": True}
                for label, value in render.details(fields)[:25]
            ],
        }
        if isinstance(fields.get("sent_at"), str):
            embed["timestamp"] = fields["sent_at"]
        body = {
            "content": render.headline(fields)[:_CONTENT_MAX],
            "embeds": [embed],
            "allowed_mentions": {"parse": []},  # a device name is never a ping
        }
        return await post_json(self.client, self.url, orjson.dumps(body))
