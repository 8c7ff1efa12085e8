"""A channel of each type, built from its stored config."""

from __future__ import annotations

from typing import Any

import httpx

from fieldline.notify.apprise import AppriseChannel
from fieldline.notify.base import Channel
from fieldline.notify.config import (
    AppriseConfig,
    ChannelType,
    DiscordConfig,
    EmailConfig,
    SlackConfig,
    WebhookConfig,
    parse_config,
)
from fieldline.notify.discord import DiscordChannel
from fieldline.notify.email import EmailChannel
from fieldline.notify.slack import SlackChannel
from fieldline.notify.webhook import WebhookChannel


def build_channel(kind: str, config: dict[str, Any], client: httpx.AsyncClient) -> Channel:
    """The channel a stored (type, config) describes; ChannelConfigError (a ValueError) if
    the stored config no longer validates, ValueError for an unknown type."""
    parsed = parse_config(ChannelType(kind), config)
    match parsed:
        case WebhookConfig():
            return WebhookChannel(parsed.url, parsed.secret, client)
        case DiscordConfig():
            return DiscordChannel(parsed.url, client)
        case SlackConfig():
            return SlackChannel(parsed.url, client)
        case EmailConfig():
            return EmailChannel(
                host=parsed.host,
                port=parsed.effective_port,
                security=parsed.security,
                sender=parsed.sender,
                to=tuple(parsed.to),
                username=parsed.username,
                password=parsed.password,
            )
        case AppriseConfig():
            return AppriseChannel(parsed.url)
