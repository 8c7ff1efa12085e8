"""The channel API (admin) and the notification list (operator), in-process on real
PostgreSQL, sending to a real local receiver."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import httpx

from fieldline.config import Settings
from fieldline.notify.dispatcher import Dispatcher
from fieldline.notify.webhook import signature
from fieldline.ops.metrics import Metrics
from tests.api.conftest import Api
from tests.notify.conftest import HOST, Receiver, add_alert, enqueue

SECRET = "webhook-secret-never-shown-1234"
DISCORD_TOKEN = "discord-token-never-shown"
SLACK_TOKEN = "slack-token-never-shown"
SMTP_PASSWORD = "smtp-password-never-shown"
APPRISE_TOKEN = "apprise-token-never-shown"
ALL_SECRETS = (SECRET, DISCORD_TOKEN, SLACK_TOKEN, SMTP_PASSWORD, APPRISE_TOKEN)


async def create(api: Api, admin: dict[str, str], name: str, kind: str, config: dict) -> dict:
    created = await api.http.post(
        "/api/v1/notification-channels",
        headers=admin,
        json={"name": name, "type": kind, "config": config},
    )
    assert created.status_code == 201, created.text
    return created.json()


def error_of(response: httpx.Response, status: int) -> str:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) >= {"code", "message"}
    return str(error["message"])


async def test_channels_are_created_read_changed_tested_and_deleted_with_audit_entries(
    api: Api, admin: dict[str, str], receiver: Receiver
) -> None:
    channel = await create(
        api, admin, "ops hook", "webhook", {"url": receiver.url("/first"), "secret": SECRET}
    )
    assert channel["type"] == "webhook"
    assert channel["config"] == {"url": receiver.url("/first")}
    assert channel["secrets_set"] == ["secret"]
    assert channel["enabled"] is True
    assert channel["failing_since"] is None
    url = f"/api/v1/notification-channels/{channel['id']}"

    listed = (await api.http.get("/api/v1/notification-channels", headers=admin)).json()
    assert [c["id"] for c in listed["items"]] == [channel["id"]]
    assert (await api.http.get(url, headers=admin)).json() == channel

    # A new URL only: the stored secret is kept (the client was never shown it).
    patched = await api.http.patch(
        url, headers=admin, json={"name": "ops", "config": {"url": receiver.url("/second")}}
    )
    assert patched.status_code == 200, patched.text
    assert patched.json()["name"] == "ops"
    assert patched.json()["secrets_set"] == ["secret"]

    tested = await api.http.post(f"{url}/test", headers=admin)
    assert tested.status_code == 200, tested.text
    result = tested.json()
    assert result["ok"] is True
    assert result["status_code"] == 200
    assert result["error"] is None
    assert result["duration_ms"] > 0
    (request,) = receiver.received("/second")
    sent = request.json()
    assert sent["event"] == "test"
    assert sent["alert_id"] is None
    assert request.headers["X-Fieldline-Event"] == "test"
    assert request.headers["X-Fieldline-Idempotency-Key"].startswith("test-")
    uuid.UUID(request.headers["X-Fieldline-Idempotency-Key"].removeprefix("test-"))
    assert request.headers["X-Fieldline-Signature"] == signature(SECRET, request.body)

    assert (await api.http.delete(url, headers=admin)).status_code == 204
    error_of(await api.http.get(url, headers=admin), 404)

    audit = (
        await api.http.get(
            "/api/v1/audit", headers=admin, params={"target_type": "notification_channel"}
        )
    ).json()["items"]
    assert [entry["action"] for entry in reversed(audit)] == [
        "notification_channel.create",
        "notification_channel.update",
        "notification_channel.test",
        "notification_channel.delete",
    ]
    assert all(entry["target_id"] == str(channel["id"]) for entry in audit)


async def test_a_test_to_an_unreachable_channel_answers_why(
    api: Api, admin: dict[str, str], receiver: Receiver
) -> None:
    channel = await create(api, admin, "down", "slack", {"url": receiver.url("/slack")})
    receiver.stop()
    tested = await api.http.post(
        f"/api/v1/notification-channels/{channel['id']}/test", headers=admin
    )
    assert tested.status_code == 200
    assert tested.json()["ok"] is False
    assert tested.json()["status_code"] is None
    assert "Connect" in tested.json()["error"]


async def test_secrets_are_in_no_answer(
    api: Api, admin: dict[str, str], receiver: Receiver, tmp_path: Path
) -> None:
    answers: list[httpx.Response] = []
    configs = {
        "webhook": {"url": receiver.url("/hook"), "secret": SECRET},
        "discord": {"url": f"http://{HOST}:{receiver.port}/api/webhooks/1/{DISCORD_TOKEN}"},
        "slack": {"url": f"http://{HOST}:{receiver.port}/services/{SLACK_TOKEN}"},
        "email": {
            "host": HOST,
            "port": 1,
            "security": "none",
            "username": "u",
            "password": SMTP_PASSWORD,
            "from": "f@example.org",
            "to": ["t@example.org"],
        },
        "apprise": {"url": f"json://{HOST}:{receiver.port}/{APPRISE_TOKEN}"},
    }
    ids = []
    for kind, config in configs.items():
        created = await api.http.post(
            "/api/v1/notification-channels",
            headers=admin,
            json={"name": kind, "type": kind, "config": config},
        )
        answers.append(created)
        ids.append(created.json()["id"])
        assert created.json()["secrets_set"], kind
    for channel_id in ids:
        url = f"/api/v1/notification-channels/{channel_id}"
        answers.append(await api.http.get(url, headers=admin))
        answers.append(await api.http.patch(url, headers=admin, json={"config": {}}))
        answers.append(await api.http.post(f"{url}/test", headers=admin))
    answers.append(await api.http.get("/api/v1/notification-channels", headers=admin))
    # Deliveries and failures (the e-mail server is absent) in the outbox and its attempts.
    alert = await add_alert(api.pool)
    await enqueue(api.pool, alert, ids, "firing")
    dispatcher = Dispatcher(Settings(data_dir=tmp_path), Metrics())
    async with api.pool.connection() as conn:
        await dispatcher.round(conn, None)  # type: ignore[arg-type]
    answers.append(await api.http.get("/api/v1/notifications", headers=admin))
    answers.append(await api.http.get("/api/v1/audit", headers=admin))
    answers.append(await api.http.get("/openapi.json"))

    assert [(a.request.url.path, a.status_code) for a in answers if a.status_code >= 300] == []
    for answer in answers:
        for secret in ALL_SECRETS:
            assert secret not in answer.text, (answer.request.url, secret)
    attempted = answers[-3].json()["items"]
    assert len(attempted) == 5
    assert all(item["attempt_log"] for item in attempted)


async def test_bad_channels_are_refused_with_json_errors(api: Api, admin: dict[str, str]) -> None:
    path = "/api/v1/notification-channels"

    async def post(body: object) -> httpx.Response:
        return await api.http.post(path, headers=admin, json=body)

    message = error_of(
        await post(
            {"name": "x", "type": "webhook", "config": {"url": "ftp://h/x", "secret": SECRET}}
        ),
        422,
    )
    assert (
        message
        == "invalid webhook config: config.url: must be an http:// or https:// URL with a host"
    )
    assert "config.secret" in error_of(
        await post({"name": "x", "type": "webhook", "config": {"url": "https://h/x"}}), 422
    )
    assert "type" in error_of(await post({"name": "x", "type": "pager", "config": {}}), 422)
    assert "Apprise does not support" in error_of(
        await post({"name": "x", "type": "apprise", "config": {"url": "nope://x"}}), 422
    )
    assert "config.to" in error_of(
        await post(
            {"name": "x", "type": "email", "config": {"host": "h", "from": "a@b", "to": "a@b"}}
        ),
        422,
    )
    error_of(await post({"name": "", "type": "slack", "config": {"url": "https://h/x"}}), 422)
    error_of(await post([]), 422)

    first = await post({"name": "same", "type": "slack", "config": {"url": "https://h/x"}})
    assert first.status_code == 201
    assert "same" in error_of(
        await post({"name": "same", "type": "slack", "config": {"url": "https://h/y"}}), 409
    )
    # A change that breaks the config is refused and changes nothing.
    url = f"{path}/{first.json()['id']}"
    assert "config.url" in error_of(
        await api.http.patch(url, headers=admin, json={"config": {"url": "mailto:x"}}), 422
    )
    assert "config.url" in error_of(
        await api.http.patch(url, headers=admin, json={"config": {"url": None}}), 422
    )
    assert (await api.http.get(url, headers=admin)).json()["config"] == {"url": "https://h/…"}
    error_of(await api.http.patch(f"{path}/999999", headers=admin, json={}), 404)
    error_of(await api.http.post(f"{path}/999999/test", headers=admin), 404)


async def test_a_channel_a_rule_names_cannot_be_deleted(api: Api, admin: dict[str, str]) -> None:
    named = await create(api, admin, "named", "slack", {"url": "https://h/x"})
    escalated = await create(api, admin, "escalated", "slack", {"url": "https://h/y"})
    async with api.pool.connection() as conn:
        await conn.execute(
            "INSERT INTO alert_rules (name, severity, scope_kind, kind, metric, condition,"
            " channels, escalate_channels, created_by)"
            " VALUES ('cold room warm', 'critical', 'fleet', 'threshold', 'temperature',"
            " %s, %s, %s, 'admin')",
            (
                json.dumps({"type": "threshold", "metric": "temperature", "op": ">", "value": 8}),
                [named["id"]],
                [escalated["id"]],
            ),
        )
    for channel in (named, escalated):
        url = f"/api/v1/notification-channels/{channel['id']}"
        message = error_of(await api.http.delete(url, headers=admin), 409)
        assert "cold room warm" in message
        assert (await api.http.get(url, headers=admin)).status_code == 200


async def test_operators_list_notifications_with_their_attempts_by_alert_channel_and_status(
    api: Api, admin: dict[str, str], receiver: Receiver, tmp_path: Path
) -> None:
    operator = await api.user("operator")
    good = await create(api, admin, "good", "webhook", {"url": receiver.url(), "secret": SECRET})
    bad = await create(
        api, admin, "bad", "webhook", {"url": f"http://{HOST}:1/x", "secret": SECRET}
    )
    first, second = await add_alert(api.pool), await add_alert(api.pool)
    await enqueue(api.pool, first, [good["id"], bad["id"]], "firing")
    await enqueue(api.pool, second, [good["id"]], "firing")
    dispatcher = Dispatcher(Settings(data_dir=tmp_path), Metrics())
    async with api.pool.connection() as conn:
        await dispatcher.round(conn, None)  # type: ignore[arg-type]

    async def listed(**params: object) -> list[dict]:
        answer = await api.http.get("/api/v1/notifications", headers=operator, params=params)
        assert answer.status_code == 200, answer.text
        return list(answer.json()["items"])

    everything = await listed()
    assert len(everything) == 3
    assert [n["id"] for n in everything] == sorted((n["id"] for n in everything), reverse=True)
    (failing,) = await listed(status="pending")
    assert failing["channel_id"] == bad["id"]
    assert failing["channel_name"] == "bad"
    assert failing["attempts"] == 1
    assert failing["idempotency_key"] == f"alert-{first}-1"
    (attempt,) = failing["attempt_log"]
    assert attempt["ok"] is False
    assert attempt["status_code"] is None
    assert attempt["error"] == failing["last_error"]
    assert {n["alert_id"] for n in await listed(alert_id=first)} == {first}
    delivered = await listed(channel_id=good["id"], status="delivered")
    assert len(delivered) == 2
    assert all(n["attempt_log"][0]["ok"] and n["delivered_at"] for n in delivered)
    page = await api.http.get("/api/v1/notifications", headers=operator, params={"limit": 2})
    rest = await listed(cursor=page.json()["next_cursor"])
    assert len(page.json()["items"]) + len(rest) == 3
    error_of(
        await api.http.get("/api/v1/notifications", headers=operator, params={"status": "x"}), 422
    )
    # One failure is shown, but does not make the channel failing (that takes 3 in a row).
    shown = await api.http.get(f"/api/v1/notification-channels/{bad['id']}", headers=admin)
    assert shown.json()["last_error"] == failing["last_error"]
    assert shown.json()["failing_since"] is None
    viewer = await api.user("viewer")
    error_of(await api.http.get("/api/v1/notifications", headers=viewer), 403)
    # Operators list the channels (secrets redacted) to name them in rules; only admins change them.
    listed = await api.http.get("/api/v1/notification-channels", headers=operator)
    assert listed.status_code == 200 and {c["name"] for c in listed.json()["items"]} >= {
        bad["name"]
    }
    error_of(await api.http.get("/api/v1/notification-channels", headers=viewer), 403)
    error_of(
        await api.http.post(f"/api/v1/notification-channels/{bad['id']}/test", headers=operator),
        403,
    )
