"""Slack through an incoming webhook: the summary as text, details as a block."""

from __future__ import annotations

from dataclasses import dataclass

import httpx
import orjson

from fieldline.notify import render
from fieldline.notify.base import Delivery, Notice
from fieldline.notify.http import post_json


def _escape(text: str) -> str:
    """Slack's mrkdwn treats these three as markup."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


@dataclass(frozen=True, slots=True)
class SlackChannel:
    url: str
    client: httpx.AsyncClient

    async def send(self, notice: Notice) -> Delivery:
        fields = notice.fields()
        title = _escape(render.headline(fields))
        lines = "\n".join(f"*{label}:* {_escape(value)}" for label, value in render.details(fields))
        body = {
            "text": title,  # what notifications and clients without blocks show
            "blocks": [
                {"type": "section", "text": {"type": "mrkdwn", "text": f"*{title}*"[:3000]}},
                {"type": "section", "text": {"type": "mrkdwn", "text": lines[:3000] or " "}},
            ],
        }
        return await post_json(self.client, self.url, orjson.dumps(body))
