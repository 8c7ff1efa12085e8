"""Each channel type sends one notification to a real local receiver: what arrives."""

from __future__ import annotations

import hashlib
import hmac
import json

import orjson
import pytest

from fieldline.notify.base import Notice
from fieldline.notify.channels import build_channel
from fieldline.notify.config import ChannelConfigError, ChannelType, parse_config, redacted
from fieldline.notify.http import http_client
from tests.notify.conftest import HOST, Receiver, SmtpServer, body

SECRET = "a-webhook-secret-of-some-length"


def notice(event: str = "firing") -> Notice:
    return Notice(orjson.dumps(body(12, event)), event, "alert-12-1")


async def test_a_webhook_gets_the_stored_body_signed_with_its_key_and_event(
    receiver: Receiver,
) -> None:
    sent = notice()
    async with http_client() as client:
        channel = build_channel("webhook", {"url": receiver.url(), "secret": SECRET}, client)
        delivery = await channel.send(sent)

    assert delivery.ok
    assert delivery.status_code == 200
    (request,) = receiver.received()
    assert request.body == sent.body  # byte for byte what the outbox stored
    assert request.headers["Content-Type"] == "application/json"
    # What a receiver does to check it: HMAC-SHA256 of the raw body with the shared secret.
    expected = hmac.new(SECRET.encode(), request.body, hashlib.sha256).hexdigest()
    assert request.headers["X-Fieldline-Signature"] == f"sha256={expected}"
    assert request.headers["X-Fieldline-Idempotency-Key"] == "alert-12-1"
    assert request.headers["X-Fieldline-Event"] == "firing"
    assert request.json()["summary"] == "temperature 9.3 > 8 on cold-1"


async def test_a_refusing_or_absent_receiver_is_a_failed_delivery_not_an_exception(
    receiver: Receiver,
) -> None:
    receiver.status = 429
    receiver.retry_after = "7"
    async with http_client() as client:
        discord = build_channel("discord", {"url": receiver.url("/discord")}, client)
        limited = await discord.send(notice())
        receiver.stop()
        down = await discord.send(notice())

    assert not limited.ok
    assert limited.status_code == 429
    assert limited.retry_after == 7.0  # Discord's rate limit is honoured by the dispatcher
    assert limited.error is not None
    assert limited.error.startswith("HTTP 429")
    assert not down.ok
    assert down.status_code is None
    assert down.error is not None
    assert "Connect" in down.error


async def test_discord_gets_content_and_an_embed_coloured_by_severity(receiver: Receiver) -> None:
    async with http_client() as client:
        channel = build_channel("discord", {"url": receiver.url("/discord")}, client)
        assert (await channel.send(notice("firing"))).ok
        assert (await channel.send(notice("resolved"))).ok

    firing, resolved = (r.json() for r in receiver.received("/discord"))
    assert firing["content"] == "[fieldline] critical firing: temperature 9.3 > 8 on cold-1"
    (embed,) = firing["embeds"]
    assert embed["color"] == 0xE5484D  # critical: red
    assert {"name": "Device", "value": "cold-1", "inline": True} in embed["fields"]
    assert firing["allowed_mentions"] == {"parse": []}
    assert resolved["content"].startswith("[fieldline] critical resolved:")
    assert resolved["embeds"][0]["color"] == 0x30A46C  # resolved: green


async def test_slack_gets_text_and_blocks(receiver: Receiver) -> None:
    async with http_client() as client:
        channel = build_channel("slack", {"url": receiver.url("/slack")}, client)
        assert (await channel.send(notice())).ok

    (request,) = receiver.received("/slack")
    sent = request.json()
    assert sent["text"] == "[fieldline] critical firing: temperature 9.3 &gt; 8 on cold-1"
    assert [block["type"] for block in sent["blocks"]] == ["section", "section"]
    assert "*Device:* cold-1" in sent["blocks"][1]["text"]["text"]


async def test_apprise_reaches_a_local_receiver_through_its_json_url(receiver: Receiver) -> None:
    url = f"json://{HOST}:{receiver.port}/apprise"
    async with http_client() as client:
        delivery = await build_channel("apprise", {"url": url}, client).send(notice())

    assert delivery.ok, delivery.error
    (request,) = receiver.received("/apprise")
    sent = request.json()
    assert sent["title"] == "[fieldline] critical firing: temperature 9.3 > 8 on cold-1"
    assert "Device: cold-1" in sent["message"]


async def test_apprise_tells_why_it_could_not_deliver(receiver: Receiver) -> None:
    receiver.status = 500
    url = f"json://{HOST}:{receiver.port}/apprise"
    async with http_client() as client:
        delivery = await build_channel("apprise", {"url": url}, client).send(notice())

    assert not delivery.ok
    assert delivery.error


@pytest.mark.usefixtures("trust_test_ca")
# aiosmtpd, the test's own SMTP server, leaves the socket of an implicit-TLS session to
# the garbage collector now and then (a ResourceWarning from aiosmtpd/smtp.py, seen once
# in three full runs); the client under test closes its side, which the test checks by
# the mail having arrived.
@pytest.mark.filterwarnings("ignore:Exception ignored in:pytest.PytestUnraisableExceptionWarning")
async def test_email_arrives_with_subject_and_fields_over_each_security_mode(
    smtp: tuple[str, SmtpServer],
) -> None:
    security, server = smtp
    config: dict[str, object] = {
        "host": HOST,
        "port": server.port,
        "security": security,
        "from": "fieldline@example.org",
        "to": ["ops@example.org", "oncall@example.org"],
    }
    if security != "none":
        config |= {"username": "fieldline", "password": "smtp-password"}
    async with http_client() as client:
        delivery = await build_channel("email", config, client).send(notice())

    assert delivery.ok, delivery.error
    ((sender, recipients, mail),) = server.mailbox.mails
    assert sender == "fieldline@example.org"
    assert recipients == ["ops@example.org", "oncall@example.org"]
    assert mail["Subject"] == "[fieldline] critical firing: temperature 9.3 > 8 on cold-1"
    assert mail["X-Fieldline-Idempotency-Key"] == "alert-12-1"
    text = mail.get_payload(decode=True).decode()
    assert "Device: cold-1" in text
    assert "Value: 9.3" in text
    if security != "none":
        assert server.mailbox.logins == [("fieldline", "smtp-password")]


@pytest.mark.parametrize("smtp", ["starttls", "tls"], indirect=True)
async def test_email_to_a_server_whose_certificate_is_not_trusted_fails_with_the_reason(
    smtp: tuple[str, SmtpServer],
) -> None:
    security, server = smtp
    config = {
        "host": HOST,
        "port": server.port,
        "security": security,
        "username": "fieldline",
        "password": "smtp-password",
        "from": "fieldline@example.org",
        "to": ["ops@example.org"],
    }
    async with http_client() as client:
        delivery = await build_channel("email", config, client).send(notice())

    assert not delivery.ok
    assert delivery.error is not None
    assert "CERTIFICATE_VERIFY_FAILED" in delivery.error or "certificate" in delivery.error
    assert server.mailbox.mails == []


@pytest.mark.parametrize(
    ("kind", "config", "problem"),
    [
        ("webhook", {"url": "ftp://example.org/x", "secret": SECRET}, "config.url: must be an"),
        ("webhook", {"url": "https://example.org/x"}, "config.secret: Field required"),
        ("webhook", {"url": "https://example.org/x", "secret": "short"}, "config.secret"),
        ("discord", {"url": "file:///etc/passwd"}, "config.url: must be an"),
        ("slack", {"url": "https://hooks.example/x", "extra": 1}, "config.extra"),
        ("email", {"host": "smtp.example.org", "to": ["a@example.org"]}, "config.from"),
        ("email", {"host": "h", "from": "a@b", "to": [], "security": "ssl"}, "config.security"),
        ("email", {"host": "h", "from": "a@b\nBcc: x@y", "to": ["a@b"]}, "config.from"),
        ("apprise", {"url": "nosuchscheme://x"}, "Apprise does not support this URL"),
    ],
)
def test_a_config_that_cannot_work_is_refused_with_the_field_and_reason(
    kind: str, config: dict[str, object], problem: str
) -> None:
    with pytest.raises(ChannelConfigError, match="invalid") as refused:
        parse_config(ChannelType(kind), config)
    assert problem in str(refused.value)


def test_secrets_are_left_out_or_shortened_when_shown() -> None:
    shown, secrets = redacted(
        ChannelType.DISCORD, {"url": "https://discord.com/api/webhooks/123/tok3n"}
    )
    assert shown == {"url": "https://discord.com/…"}
    assert secrets == ["url"]
    shown, secrets = redacted(
        ChannelType.WEBHOOK, {"url": "https://u:pw@example.org:8443/hook?token=t", "secret": "s"}
    )
    assert shown == {"url": "https://example.org:8443/hook?…"}
    assert secrets == ["secret"]
    shown, secrets = redacted(
        ChannelType.EMAIL, {"host": "h", "from": "a@b", "to": ["c@d"], "password": "pw"}
    )
    assert "password" not in json.dumps(shown)
    assert secrets == ["password"]
