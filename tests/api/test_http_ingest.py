"""HTTP ingest: POST /api/v1/devices/{id}/telemetry with a device's own credentials."""

from __future__ import annotations

import asyncio
import base64
import math
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import httpx
import orjson
import pytest

from fieldline.api.app import create_app
from fieldline.api.device_auth import VerifiedSecrets, issue_device_token
from fieldline.domain.topics import TopicScheme
from fieldline.ingest.batcher import Batcher
from fieldline.ingest.consumer import decode_limits
from fieldline.ingest.service import IngestConsumer
from fieldline.ingest.writer import BatchWriter
from tests.api.conftest import Api
from tests.api.test_auth_and_roles import assert_error

Headers = dict[str, str]


async def register(api: Api, admin: Headers, device_id: str) -> httpx.BasicAuth:
    created = await api.http.post("/api/v1/devices", headers=admin, json={"device_id": device_id})
    assert created.status_code == 201, created.text
    return httpx.BasicAuth(device_id, created.json()["mqtt"]["password"])


async def post(api: Api, device_id: str, body: bytes | object, **kwargs: object) -> httpx.Response:
    content = body if isinstance(body, bytes) else orjson.dumps(body)
    return await api.http.post(
        f"/api/v1/devices/{device_id}/telemetry",
        content=content,
        **kwargs,  # type: ignore[arg-type]
    )


async def token_for(api: Api, auth: httpx.BasicAuth, device_id: str) -> Headers:
    answer = await api.http.post(f"/api/v1/devices/{device_id}/token", auth=auth)
    assert answer.status_code == 200, answer.text
    return {"Authorization": f"Bearer {answer.json()['access_token']}"}


async def latest(api: Api, admin: Headers, device_id: str) -> dict[str, dict[str, object]]:
    answer = await api.http.get(f"/api/v1/devices/{device_id}/telemetry/latest", headers=admin)
    assert answer.status_code == 200, answer.text
    metrics: dict[str, dict[str, object]] = answer.json()["metrics"]
    return metrics


async def rejected(api: Api, admin: Headers, device_id: str) -> list[dict[str, object]]:
    answer = await api.http.get("/api/v1/rejected", headers=admin, params={"device_id": device_id})
    assert answer.status_code == 200, answer.text
    items: list[dict[str, object]] = answer.json()["items"]
    return items


def sample(api: Api, name: str, **labels: str) -> float:
    return api.context.metrics.registry.get_sample_value(name, labels) or 0.0


def at(seconds_ago: float) -> datetime:
    return datetime.fromtimestamp(math.floor(time.time() - seconds_ago), tz=UTC)


def same_instant(answer: object, expected: datetime) -> bool:
    return datetime.fromisoformat(str(answer)) == expected


async def test_every_payload_form_is_stored_and_readable(api: Api, admin: Headers) -> None:
    auth = await register(api, admin, "field-1")
    t1, t2, t3, t4 = at(400), at(300), at(200), at(100)
    forms: list[tuple[object, int, dict[str, tuple[float, datetime]]]] = [
        (  # the contract's full form, epoch seconds
            {
                "message_id": "m-1",
                "device_id": "field-1",
                "timestamp": int(t1.timestamp()),
                "sensors": {"soil_moisture": 42.5, "temperature": 22.3},
                "firmware_version": "v0.2.1",
                "signal_strength": -67,
            },
            1,
            {"soil_moisture": (42.5, t1), "signal_strength": (-67, t1)},
        ),
        (  # a flat object, epoch milliseconds
            {"timestamp": int(t2.timestamp() * 1000), "humidity": 45, "door_open": True},
            1,
            {"humidity": (45, t2), "door_open": (1, t2)},
        ),
        (  # a batch, ISO 8601
            {
                "message_id": "b-1",
                "readings": [
                    {"timestamp": t2.isoformat(), "temperature": 21.0},
                    {"timestamp": t3.isoformat().replace("+00:00", "Z"), "temperature": 23.5},
                ],
            },
            2,
            {"temperature": (23.5, t3)},
        ),
        (  # a JSON array of messages
            [
                {"message_id": "a-1", "timestamp": t3.isoformat(), "pressure": 1012.5},
                {"message_id": "a-2", "timestamp": t4.isoformat(), "pressure": 1013.25},
            ],
            2,
            {"pressure": (1013.25, t4)},
        ),
    ]
    for body, readings, _ in forms:
        answer = await post(api, "field-1", body, auth=auth)
        assert answer.status_code == 202, answer.text
        assert answer.json() == {"accepted": readings, "duplicates": 0, "rejected": 0}

    metrics = await latest(api, admin, "field-1")
    for _, _, expected in forms:
        for name, (value, when) in expected.items():
            assert metrics[name]["value"] == value, name
            assert same_instant(metrics[name]["time"], when), name
    status = (await api.http.get("/api/v1/devices/field-1/status", headers=admin)).json()
    assert status["firmware_version"] == "v0.2.1"
    assert status["status"] == "online"
    assert sample(api, "fieldline_messages_received_total", kind="telemetry") == 4
    assert sample(api, "fieldline_readings_stored_total") == 6
    assert sample(api, "fieldline_points_stored_total") == 9


async def test_a_reading_without_timestamp_is_stamped_on_receipt(api: Api, admin: Headers) -> None:
    auth = await register(api, admin, "field-2")
    before = datetime.now(UTC)
    answer = await post(api, "field-2", {"temp": 22.5}, auth=auth)
    assert answer.status_code == 202, answer.text
    stamped = datetime.fromisoformat(str((await latest(api, admin, "field-2"))["temp"]["time"]))
    assert before <= stamped <= datetime.now(UTC)


async def test_the_same_body_twice_is_stored_once(api: Api, admin: Headers) -> None:
    auth = await register(api, admin, "field-3")
    stamps = [int(at(s).timestamp()) for s in (30, 20, 10)]
    body = {
        "message_id": "once",
        "readings": [{"timestamp": t, "t": float(n)} for n, t in enumerate(stamps)],
    }
    first = await post(api, "field-3", body, auth=auth)
    again = await post(api, "field-3", body, auth=auth)
    assert first.json() == {"accepted": 3, "duplicates": 0, "rejected": 0}
    assert again.status_code == 202
    assert again.json() == {"accepted": 0, "duplicates": 3, "rejected": 0}
    assert sample(api, "fieldline_readings_duplicate_total") == 3
    series = await api.http.get(
        "/api/v1/devices/field-3/telemetry",
        headers=admin,
        params={"metric": "t", "start": str(stamps[0] - 1)},
    )
    assert [p["value"] for p in series.json()["points"]] == [0.0, 1.0, 2.0]


async def mqtt_deliver(api: Api, device_id: str, payload: bytes) -> None:
    """The payload through MQTT ingest's own consumer and writer, as the broker would hand it."""
    writer = BatchWriter(api.url)
    batcher = Batcher(write=writer, metrics=api.context.metrics, max_messages=10, max_delay=0.01)
    consumer = IngestConsumer(
        batcher=batcher,
        topics=TopicScheme(),
        limits=decode_limits(65_536, 300),
        metrics=api.context.metrics,
    )
    runner = asyncio.create_task(batcher.run())
    await consumer.handle(f"devices/{device_id}/telemetry", payload)
    await batcher.drain()
    await runner
    await writer.close()


async def test_http_and_mqtt_share_deduplication(api: Api, admin: Headers) -> None:
    auth = await register(api, admin, "field-4")
    by_mqtt = orjson.dumps({"message_id": "mq-1", "temp": 20.0})
    await mqtt_deliver(api, "field-4", by_mqtt)
    answer = await post(api, "field-4", by_mqtt, auth=auth)
    assert answer.json() == {"accepted": 0, "duplicates": 1, "rejected": 0}

    by_http = {"message_id": "http-1", "timestamp": int(at(5).timestamp()), "temp": 21.0}
    answer = await post(api, "field-4", by_http, auth=auth)
    assert answer.json() == {"accepted": 1, "duplicates": 0, "rejected": 0}
    before = sample(api, "fieldline_readings_duplicate_total")
    await mqtt_deliver(api, "field-4", orjson.dumps(by_http))
    assert sample(api, "fieldline_readings_duplicate_total") == before + 1


@pytest.mark.parametrize(
    "body",
    [
        pytest.param(b"{", id="not-json"),
        pytest.param(b'{"t": NaN}', id="nan"),
        pytest.param(b'{"device_id": "someone-else", "t": 1}', id="spoofed"),
        pytest.param(b'{"timestamp": 5, "t": 1}', id="1970"),
        pytest.param(b'{"timestamp": 99999999999, "t": 1}', id="future"),
        pytest.param(b'{"\\u202etemp": 1}', id="bidi-name"),
    ],
)
async def test_one_rule_rejects_alike_over_mqtt_and_http(
    api: Api, admin: Headers, body: bytes
) -> None:
    """Both doors go through one consumer: the same payload, the same reason and text."""
    auth = await register(api, admin, "field-both")
    answer = await post(api, "field-both", body, auth=auth)
    await mqtt_deliver(api, "field-both", body)
    by_mqtt, by_http = sorted(
        await rejected(api, admin, "field-both"), key=lambda kept: str(kept["topic"])
    )
    assert (by_mqtt["topic"], by_http["topic"]) == (
        "devices/field-both/telemetry",
        "http:/api/v1/devices/field-both/telemetry",
    )
    assert by_mqtt["reason"] == by_http["reason"] == answer.json()["error"]["code"]
    assert by_mqtt["detail"] == by_http["detail"] == answer.json()["error"]["message"]


async def test_a_device_token_works_until_rotation(api: Api, admin: Headers) -> None:
    auth = await register(api, admin, "field-5")
    answer = await api.http.post("/api/v1/devices/field-5/token", auth=auth)
    assert answer.status_code == 200, answer.text
    issued = answer.json()
    assert issued["token_type"] == "bearer"
    assert answer.headers["cache-control"] == "no-store"
    assert issued["expires_in"] == api.context.settings.device_token_minutes * 60
    bearer = {"Authorization": f"Bearer {issued['access_token']}"}
    assert (await post(api, "field-5", {"v": 1}, headers=bearer)).status_code == 202

    rotated = await api.http.post("/api/v1/devices/field-5/credentials", headers=admin)
    assert rotated.status_code == 200, rotated.text
    assert_error(await post(api, "field-5", {"v": 2}, headers=bearer), 401, "unauthorized")
    assert_error(await post(api, "field-5", {"v": 2}, auth=auth), 401, "unauthorized")
    fresh = httpx.BasicAuth("field-5", rotated.json()["mqtt"]["password"])
    assert (await post(api, "field-5", {"v": 3}, auth=fresh)).status_code == 202
    new_bearer = await token_for(api, fresh, "field-5")
    assert (await post(api, "field-5", {"v": 4}, headers=new_bearer)).status_code == 202


async def test_authentication_failures(api: Api, admin: Headers) -> None:
    auth = await register(api, admin, "field-6")
    other = await register(api, admin, "field-7")
    body = {"v": 1}

    missing = await post(api, "field-6", body)
    assert_error(missing, 401, "unauthorized")
    assert "Basic" in missing.headers["www-authenticate"]
    wrong = httpx.BasicAuth("field-6", "not-the-password")
    assert_error(await post(api, "field-6", body, auth=wrong), 401, "unauthorized")
    unknown = httpx.BasicAuth("nobody", "whatever")
    assert_error(await post(api, "nobody", body, auth=unknown), 401, "unauthorized")
    assert_error(
        await post(api, "field-6", body, headers={"Authorization": "Basic %%%"}),
        401,
        "unauthorized",
    )
    not_ascii = base64.b64encode(b"field-6:\xff\xfe").decode()
    assert_error(
        await post(api, "field-6", body, headers={"Authorization": f"Basic {not_ascii}"}),
        401,
        "unauthorized",
    )
    assert_error(
        await post(api, "field-6", body, headers={"Authorization": "Bearer not.a.jwt"}),
        401,
        "unauthorized",
    )
    # Authenticated, but as another device than the path names: by password or by token.
    assert_error(await post(api, "field-6", body, auth=other), 403, "forbidden")
    other_bearer = await token_for(api, other, "field-7")
    assert_error(await post(api, "field-6", body, headers=other_bearer), 403, "forbidden")
    assert_error(await api.http.post("/api/v1/devices/field-6/token", auth=other), 403, "forbidden")

    # User tokens are not device tokens, and device tokens are not user tokens.
    assert_error(await post(api, "field-6", body, headers=admin), 401, "unauthorized")
    bearer = await token_for(api, auth, "field-6")
    assert_error(await api.http.get("/api/v1/devices", headers=bearer), 401, "unauthorized")
    # A token is got with the password, not with another token.
    assert_error(
        await api.http.post("/api/v1/devices/field-6/token", headers=bearer), 401, "unauthorized"
    )

    expired = issue_device_token(
        secret_key=api.context.secret_key,
        device_id="field-6",
        secret_hash=(await device_hash(api, "field-6")),
        ttl=timedelta(seconds=-1),
    )
    assert_error(
        await post(api, "field-6", body, headers={"Authorization": f"Bearer {expired.token}"}),
        401,
        "unauthorized",
    )
    forged = issue_device_token(
        secret_key="x" * 40,
        device_id="field-6",
        secret_hash=(await device_hash(api, "field-6")),
        ttl=timedelta(minutes=5),
    )
    assert_error(
        await post(api, "field-6", body, headers={"Authorization": f"Bearer {forged.token}"}),
        401,
        "unauthorized",
    )
    assert await rejected(api, admin, "field-6") == []  # nothing unauthenticated is kept


async def device_hash(api: Api, device_id: str) -> str:
    async with api.pool.connection() as conn:
        row = await (
            await conn.execute(
                "SELECT secret_hash FROM device_credentials WHERE device_id = %s", (device_id,)
            )
        ).fetchone()
    assert row is not None
    return str(row["secret_hash"])


async def test_disabling_or_deleting_a_device_stops_password_and_token(
    api: Api, admin: Headers
) -> None:
    auth = await register(api, admin, "field-8")
    bearer = await token_for(api, auth, "field-8")
    assert (await post(api, "field-8", {"v": 1}, auth=auth)).status_code == 202  # now cached

    disabled = await api.http.patch(
        "/api/v1/devices/field-8", headers=admin, json={"enabled": False}
    )
    assert disabled.status_code == 200, disabled.text
    assert_error(await post(api, "field-8", {"v": 2}, auth=auth), 401, "unauthorized")
    assert_error(await post(api, "field-8", {"v": 2}, headers=bearer), 401, "unauthorized")
    assert_error(
        await api.http.post("/api/v1/devices/field-8/token", auth=auth), 401, "unauthorized"
    )

    await api.http.patch("/api/v1/devices/field-8", headers=admin, json={"enabled": True})
    assert (await post(api, "field-8", {"v": 3}, headers=bearer)).status_code == 202

    deleted = await api.http.delete("/api/v1/devices/field-8", headers=admin)
    assert deleted.status_code == 204, deleted.text
    assert_error(await post(api, "field-8", {"v": 4}, auth=auth), 401, "unauthorized")
    assert_error(await post(api, "field-8", {"v": 4}, headers=bearer), 401, "unauthorized")


async def test_only_successful_verifications_are_cached(api: Api, admin: Headers) -> None:
    auth = await register(api, admin, "field-9")
    cache = api.context.device_secrets
    wrong = httpx.BasicAuth("field-9", "guess")
    assert_error(await post(api, "field-9", {"v": 1}, auth=wrong), 401, "unauthorized")
    assert len(cache) == 0
    for value in range(3):
        assert (await post(api, "field-9", {"v": value}, auth=auth)).status_code == 202
    assert len(cache) == 1


def test_verified_secrets_expire_are_bounded_and_follow_the_hash() -> None:
    now = [0.0]
    cache = VerifiedSecrets(ttl=60, max_entries=2, clock=lambda: now[0])
    cache.add("d1", "pw", "hash-1")
    assert cache.contains("d1", "pw", "hash-1")
    assert not cache.contains("d1", "other", "hash-1")
    assert not cache.contains("d1", "pw", "hash-2")  # rotated: verify again
    assert not cache.contains("d2", "pw", "hash-1")
    now[0] = 60.0
    assert not cache.contains("d1", "pw", "hash-1")
    assert len(cache) == 0
    for device in ("a", "b", "c"):
        cache.add(device, "pw", "h")
    assert len(cache) == 2
    assert not cache.contains("a", "pw", "h")  # the oldest went first
    assert cache.contains("c", "pw", "h")


LIMIT = 65_536


@pytest.mark.parametrize(
    ("body", "headers", "status", "reason"),
    [
        pytest.param(b"temperature=22.5", {}, 400, "invalid_json", id="not-json"),
        pytest.param(b"", {}, 400, "invalid_json", id="empty"),
        pytest.param(b'{"t": "\xff\xfe"}', {}, 400, "invalid_json", id="not-utf8"),
        pytest.param(
            b"a=1&b=2",
            {"Content-Type": "application/x-www-form-urlencoded"},
            400,
            "invalid_json",
            id="form-data",
        ),
        pytest.param(b'{"t": NaN}', {}, 422, "non_finite_value", id="nan"),
        pytest.param(b'{"sensors": {"t": Infinity}}', {}, 422, "non_finite_value", id="infinity"),
        pytest.param(
            orjson.dumps({"timestamp": int(time.time()) + 86_400, "t": 1}),
            {},
            422,
            "future_timestamp",
            id="future",
        ),
        pytest.param(
            b'{"device_id": "someone-else", "t": 1}', {}, 422, "device_mismatch", id="mismatch"
        ),
        pytest.param(b'{"readings": {}}', {}, 422, "invalid_payload", id="shape"),
        pytest.param(b"[]", {}, 422, "no_readings", id="no-readings"),
        pytest.param(b"42", {}, 422, "invalid_payload", id="scalar"),
        pytest.param(b'{"timestamp": 5, "t": 1}', {}, 422, "invalid_timestamp", id="1970"),
        pytest.param(b"{" + b" " * LIMIT + b"}", {}, 413, "too_large", id="too-large"),
        # Text PostgreSQL cannot store: these answered 500 and were not kept.
        pytest.param(b'{"sensors": {"\\ud800": 1}}', {}, 422, "invalid_name", id="surrogate"),
        pytest.param(b'{"t": 1, "message_id": "a\\u0000"}', {}, 422, "invalid_text", id="nul-id"),
        pytest.param(b'{"t": 1, "mode": "\\u0000"}', {}, 422, "invalid_text", id="nul-attribute"),
        pytest.param(b'{"t": 1, "mode": "\\udc00"}', {}, 422, "invalid_text", id="surrogate-value"),
        pytest.param(b'{"\\u202etemp": 1}', {}, 422, "invalid_name", id="bidi-override"),
        pytest.param(b'{"te\\u200bmp": 1}', {}, 422, "invalid_name", id="zero-width"),
        pytest.param(b'{"sensors": {" ": 1}}', {}, 422, "invalid_name", id="blank-name"),
    ],
)
async def test_a_bad_message_is_refused_and_kept_byte_for_byte(
    api: Api, admin: Headers, body: bytes, headers: Headers, status: int, reason: str
) -> None:
    auth = await register(api, admin, "field-10")
    answer = await post(api, "field-10", body, auth=auth, headers=headers)
    assert_error(answer, status, reason)

    [kept] = await rejected(api, admin, "field-10")
    assert kept["reason"] == reason
    assert kept["topic"] == "http:/api/v1/devices/field-10/telemetry"
    assert kept["detail"] == answer.json()["error"]["message"]
    raw = base64.b64decode(str(kept["payload_base64"]))
    assert raw == (body[:LIMIT] if reason == "too_large" else body)
    assert sample(api, "fieldline_messages_rejected_total", reason=reason) == 1
    assert sample(api, "fieldline_messages_received_total", kind="telemetry") == 1
    assert await latest(api, admin, "field-10") == {}
    status_now = (await api.http.get("/api/v1/devices/field-10/status", headers=admin)).json()
    assert status_now["last_seen"] is not None  # heard from, as over MQTT


@pytest.mark.parametrize(
    "body",
    [
        b"[" * 30_000 + b"]" * 30_000,
        b'{"a": ' * 6_000 + b"1" + b"}" * 6_000,
        b'{"t": 1e999}',
        b'{"t": 123456789012345678901234567890}',
        b'{"timestamp": "yesterday", "t": 1}',
        b'{"timestamp": 1e300, "t": 1}',
        b'{"timestamp": -1, "t": 1}',
        b'{"message_id": {"a": 1}, "t": 1}',
        b'{"message_id": "", "t": 1}',
        b'{"sensors": [1, 2], "t": 1}',
        b'{"' + b"k" * 300 + b'": 1}',
        b'{"a": {"b": {"c": {"d": {"e": {"f": 1}}}}}}',
        b'{"readings": [1, 2]}',
        b"\x00\x01\x02",
        b"\xef\xbb\xbf{}",
        b"null",
        b'"text"',
        b'{"sensors":{"\\ud800":1}}',
        b'{"message_id": "\\u0000", "t": 1}',
        b'{"firmware_version": "\\ud83d", "t": 1}',
        b'{"t": [1' + b"0" * 30 + b', "\\ud800"]}',
        b'{"t": 1' + b"0" * 400 + b"}",
        b'{"t": 1e300}',
    ],
)
async def test_no_payload_makes_a_server_error(api: Api, admin: Headers, body: bytes) -> None:
    auth = await register(api, admin, "field-14")
    answer = await post(api, "field-14", body, auth=auth)
    assert answer.status_code in (202, 400, 413, 422), answer.text
    if answer.status_code != 202:
        [kept] = await rejected(api, admin, "field-14")
        assert base64.b64decode(str(kept["payload_base64"])) == body[:LIMIT]


async def test_any_content_type_carries_json(api: Api, admin: Headers) -> None:
    auth = await register(api, admin, "field-11")
    for content_type in ("text/plain", "application/octet-stream", "application/xml"):
        answer = await post(
            api, "field-11", {"t": 1.5}, auth=auth, headers={"Content-Type": content_type}
        )
        assert answer.status_code == 202, answer.text


async def test_a_streamed_body_is_read_only_up_to_the_limit(api: Api, admin: Headers) -> None:
    """Without Content-Length (chunked), reading stops past the limit."""
    auth = await register(api, admin, "field-12")
    chunk = b" " * 1024
    sent = 0

    async def chunks() -> AsyncIterator[bytes]:
        nonlocal sent
        yield b"{"
        for _ in range(10_000):  # 10 MiB
            sent += 1
            yield chunk

    answer = await api.http.post("/api/v1/devices/field-12/telemetry", content=chunks(), auth=auth)
    assert_error(answer, 413, "too_large")
    assert sent < 100
    [kept] = await rejected(api, admin, "field-12")
    assert kept["size_bytes"] == LIMIT


async def test_a_device_over_its_rate_limit_gets_429_and_the_message_is_kept(
    api: Api, admin: Headers
) -> None:
    settings = api.context.settings.model_copy(
        update={"device_rate_limit": 0.5, "device_rate_burst": 2}
    )
    context = api.context.with_settings(settings)
    assert context.device_rate_limiter is not None
    transport = httpx.ASGITransport(app=create_app(context))
    async with httpx.AsyncClient(transport=transport, base_url="http://fieldline") as http:
        created = await http.post("/api/v1/devices", headers=admin, json={"device_id": "chatty"})
        auth = httpx.BasicAuth("chatty", created.json()["mqtt"]["password"])
        answers = [
            await http.post(
                "/api/v1/devices/chatty/telemetry", content=f'{{"n": {n}}}'.encode(), auth=auth
            )
            for n in range(3)
        ]
        assert [a.status_code for a in answers] == [202, 202, 429]
        assert_error(answers[2], 429, "rate_limited")
        assert answers[2].headers["retry-after"] == "2"
        # Other devices have buckets of their own.
        created = await http.post("/api/v1/devices", headers=admin, json={"device_id": "quiet"})
        quiet = httpx.BasicAuth("quiet", created.json()["mqtt"]["password"])
        assert (
            await http.post("/api/v1/devices/quiet/telemetry", content=b'{"n": 0}', auth=quiet)
        ).status_code == 202
    [kept] = await rejected(api, admin, "chatty")
    assert kept["reason"] == "rate_limited"
    assert kept["payload_text"] == '{"n": 2}'
    assert sample(api, "fieldline_messages_rejected_total", reason="rate_limited") == 1
    assert (await latest(api, admin, "chatty"))["n"]["value"] == 1  # the refused n=2 is not


async def test_a_copy_over_the_rate_limit_is_a_duplicate_and_the_counts_add_up(
    api: Api, admin: Headers
) -> None:
    """A device resending what it already sent (its answer was lost) is not over its limit:
    the copy is de-duplicated (202), never kept as rate_limited."""
    settings = api.context.settings.model_copy(
        update={"device_rate_limit": 0.001, "device_rate_burst": 2}
    )
    context = api.context.with_settings(settings)
    transport = httpx.ASGITransport(app=create_app(context))
    async with httpx.AsyncClient(transport=transport, base_url="http://fieldline") as http:
        created = await http.post("/api/v1/devices", headers=admin, json={"device_id": "resend"})
        auth = httpx.BasicAuth("resend", created.json()["mqtt"]["password"])

        async def send(body: bytes) -> httpx.Response:
            return await http.post("/api/v1/devices/resend/telemetry", content=body, auth=auth)

        first = await send(b'{"message_id": "a", "n": 1}')
        second = await send(b'{"message_id": "b", "n": 2}')
        copy = await send(b'{"message_id": "a", "n": 1}')
        new = await send(b'{"message_id": "c", "n": 3}')
        bad = await send(b'{"message_id": "d", "\\u2066n": 3}')
    assert [a.status_code for a in (first, second, copy, new)] == [202, 202, 202, 429]
    assert copy.json() == {"accepted": 0, "duplicates": 1, "rejected": 0}
    assert_error(bad, 422, "invalid_name")
    assert [r["reason"] for r in await rejected(api, admin, "resend")] == [
        "invalid_name",
        "rate_limited",
    ]
    received = sample(api, "fieldline_messages_received_total", kind="telemetry")
    stored = sample(api, "fieldline_messages_stored_total")
    duplicate = sample(api, "fieldline_messages_duplicate_total")
    refused = sum(
        sample(api, "fieldline_messages_rejected_total", reason=reason)
        for reason in ("rate_limited", "invalid_name")
    )
    assert (received, stored, duplicate, refused) == (5, 2, 1, 2)


async def test_a_path_that_is_no_device_id_is_refused(api: Api, admin: Headers) -> None:
    auth = await register(api, admin, "field-13")
    answer = await api.http.post("/api/v1/devices/bad$id/telemetry", content=b"{}", auth=auth)
    assert_error(answer, 422, "validation_error")


async def test_the_endpoints_are_in_the_openapi_document(api: Api) -> None:
    document = (await api.http.get("/openapi.json")).json()
    telemetry = document["paths"]["/api/v1/devices/{device_id}/telemetry"]["post"]
    assert {"202", "400", "401", "403", "413", "422", "429"} <= set(telemetry["responses"])
    assert "/api/v1/devices/{device_id}/token" in document["paths"]
