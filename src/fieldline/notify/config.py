"""Each channel type's configuration: checked where it comes in, redacted where it goes out.

The API validates a config with these models before storing it (a bad one is a 422 that
says which field and why); the dispatcher builds channels from what was stored.

What an answer never shows (SECRET_FIELDS): a webhook's `secret`, an e-mail `password`,
and the URLs of Discord, Slack and Apprise, whose path or host *is* the credential:
they are shown as scheme and host only (`https://discord.com/…`). Each answer lists in
`secrets_set` which of these the channel has, so a client can tell "kept" from "unset".
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError


class ChannelType(StrEnum):
    WEBHOOK = "webhook"
    DISCORD = "discord"
    SLACK = "slack"
    EMAIL = "email"
    APPRISE = "apprise"


class ChannelConfigError(ValueError):
    """A channel's config that cannot be used; the message says which field and why."""


def _http_url(value: str) -> str:
    parts = urlsplit(value)
    if parts.scheme not in {"http", "https"} or not parts.hostname:
        raise ValueError("must be an http:// or https:// URL with a host")
    if any(ch.isspace() for ch in value):
        raise ValueError("must not contain spaces")
    return value


def _apprise_url(value: str) -> str:
    from fieldline.notify.apprise import supported

    if not supported(value):
        scheme = value.partition("://")[0] if "://" in value else "(none)"
        raise ValueError(f"Apprise does not support this URL (scheme {scheme!r})")
    return value


HttpUrl = Annotated[str, Field(min_length=8, max_length=2048), AfterValidator(_http_url)]
# No spaces, no line breaks (they would end an SMTP header), one @.
Address = Annotated[str, Field(max_length=254, pattern=r"^[^@\s<>,;]+@[^@\s<>,;]+$")]


class _Config(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class WebhookConfig(_Config):
    url: HttpUrl
    secret: str = Field(
        min_length=16,
        max_length=1024,
        description="Key of the X-Fieldline-Signature HMAC; never returned",
    )


class DiscordConfig(_Config):
    url: HttpUrl = Field(description="The channel's incoming webhook URL; shown as its host only")


class SlackConfig(_Config):
    url: HttpUrl = Field(description="The incoming webhook URL; shown as its host only")


class EmailConfig(_Config):
    host: str = Field(min_length=1, max_length=255, pattern=r"^[A-Za-z0-9.:\[\]-]+$")
    port: int | None = Field(
        None, ge=1, le=65535, description="Default 587 (starttls), 465 (tls), 25 (none)"
    )
    security: Literal["starttls", "tls", "none"] = "starttls"
    username: str | None = Field(None, min_length=1, max_length=255)
    password: str | None = Field(None, min_length=1, max_length=1024, description="Never returned")
    sender: Address = Field(alias="from")
    to: list[Address] = Field(min_length=1, max_length=50)

    @property
    def effective_port(self) -> int:
        if self.port is not None:
            return self.port
        return {"starttls": 587, "tls": 465, "none": 25}[self.security]


class AppriseConfig(_Config):
    url: Annotated[str, Field(min_length=4, max_length=2048), AfterValidator(_apprise_url)] = Field(
        description="An Apprise URL (tgram://, ntfy://, msteams://, pover://, json://...)"
    )


ChannelConfig = WebhookConfig | DiscordConfig | SlackConfig | EmailConfig | AppriseConfig

MODELS: dict[ChannelType, type[ChannelConfig]] = {
    ChannelType.WEBHOOK: WebhookConfig,
    ChannelType.DISCORD: DiscordConfig,
    ChannelType.SLACK: SlackConfig,
    ChannelType.EMAIL: EmailConfig,
    ChannelType.APPRISE: AppriseConfig,
}
SECRET_FIELDS: dict[ChannelType, tuple[str, ...]] = {
    ChannelType.WEBHOOK: ("secret",),
    ChannelType.DISCORD: ("url",),
    ChannelType.SLACK: ("url",),
    ChannelType.EMAIL: ("password",),
    ChannelType.APPRISE: ("url",),
}


def parse_config(kind: ChannelType, raw: dict[str, Any]) -> ChannelConfig:
    """The typed config, or ChannelConfigError naming every problem."""
    try:
        return MODELS[kind].model_validate(raw)
    except ValidationError as exc:
        problems = "; ".join(
            f"config.{'.'.join(str(part) for part in error['loc']) or '(whole)'}: "
            f"{error['msg'].removeprefix('Value error, ')}"
            for error in exc.errors()
        )
        raise ChannelConfigError(f"invalid {kind.value} config: {problems}") from exc


def stored(config: ChannelConfig) -> dict[str, Any]:
    """What the database keeps (secrets included), under the API's field names."""
    return config.model_dump(by_alias=True, exclude_none=True)


def _host_only(url: str) -> str:
    parts = urlsplit(url)
    host = parts.hostname or ""
    if parts.scheme in {"http", "https"} and host:
        return f"{parts.scheme}://{host}/…"
    return f"{parts.scheme}://…" if parts.scheme else "…"


def _without_credentials(url: str) -> str:
    """A webhook URL as shown: its query and any user:password@ are left out."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    port = f":{parts.port}" if parts.port else ""
    shown = f"{parts.scheme}://{host}{port}{parts.path}"
    return shown + ("?…" if parts.query else "")


def redacted(kind: ChannelType, config: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """The config as the API answers it, and which secret fields are set."""
    secrets = SECRET_FIELDS[kind]
    shown = {key: value for key, value in config.items() if key not in secrets}
    if "url" in config and isinstance(config["url"], str):
        url = config["url"]
        shown["url"] = _without_credentials(url) if "url" not in secrets else _host_only(url)
    return shown, [key for key in secrets if config.get(key)]
