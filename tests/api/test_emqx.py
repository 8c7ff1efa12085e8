"""EMQX 5's HTTP authenticator and authorizer, with the bodies EMQX renders from its templates."""

from __future__ import annotations

from urllib.parse import urlencode

import pytest
from pydantic import SecretStr

from fieldline.domain.topics import Downlink, TopicScheme, Uplink
from tests.api.conftest import ADMIN_PASSWORD, Api
from tests.api.test_auth_and_roles import assert_error

WEBHOOK_SECRET = "emqx-webhook-8Qf2vL1xZk7Tn3"
SERVICE_USERNAME = "fieldline-ingest"
SERVICE_PASSWORD = "service-pw-R4nd0m-9d8s7"
EMQX = {"Authorization": f"Bearer {WEBHOOK_SECRET}"}
TOPICS = TopicScheme()


@pytest.fixture
async def emqx(api: Api) -> Api:
    """The API as an EMQX deployment runs it: webhook secret and service account set."""
    api.reconfigure(
        emqx_webhook_secret=SecretStr(WEBHOOK_SECRET),
        broker_service_username=SERVICE_USERNAME,
        broker_service_password=SecretStr(SERVICE_PASSWORD),
    )
    return api


async def register(api: Api, device_id: str) -> str:
    """Register a device through the API; answer its MQTT password."""
    admin = await api.login("admin", ADMIN_PASSWORD)
    created = await api.http.post("/api/v1/devices", headers=admin, json={"device_id": device_id})
    assert created.status_code == 201, created.text
    password: str = created.json()["mqtt"]["password"]
    return password


async def disable(api: Api, device_id: str) -> None:
    admin = await api.login("admin", ADMIN_PASSWORD)
    changed = await api.http.patch(
        f"/api/v1/devices/{device_id}", headers=admin, json={"enabled": False}
    )
    assert changed.status_code == 200, changed.text


def authn_body(username: str, password: str, clientid: str | None = None) -> dict[str, str]:
    # As rendered from body = {username = "${username}", password = "${password}",
    # clientid = "${clientid}", peerhost = "${peerhost}"}; a device's client id is its id.
    return {
        "username": username,
        "password": password,
        "clientid": username if clientid is None else clientid,
        "peerhost": "10.0.0.7",
    }


def authz_body(
    username: str, action: str, topic: str, clientid: str | None = None
) -> dict[str, str]:
    # Every placeholder arrives as a string, qos and retain included.
    return {
        "username": username,
        "clientid": username if clientid is None else clientid,
        "topic": topic,
        "action": action,
        "qos": "1",
        "retain": "false",
    }


async def authn(api: Api, body: dict[str, str]) -> dict[str, object]:
    response = await api.http.post("/emqx/authn", headers=EMQX, json=body)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("application/json")
    answer: dict[str, object] = response.json()
    return answer


async def authz(api: Api, body: dict[str, str]) -> dict[str, object]:
    response = await api.http.post("/emqx/authz", headers=EMQX, json=body)
    assert response.status_code == 200, response.text
    answer: dict[str, object] = response.json()
    return answer


async def test_device_with_its_password_is_allowed(emqx: Api) -> None:
    password = await register(emqx, "greenhouse-7")
    assert await authn(emqx, authn_body("greenhouse-7", password)) == {
        "result": "allow",
        "is_superuser": False,
    }


async def test_a_device_under_any_client_id_but_its_own_is_denied(emqx: Api) -> None:
    """Another client id would take over that client's session (another device's, or
    ingest's); none means EMQX makes one up, or its body template lacks ${clientid}."""
    password = await register(emqx, "greenhouse-7")
    await register(emqx, "greenhouse-8")
    for clientid in ("greenhouse-8", "", "esp32-a1b2c3", "GREENHOUSE-7", "fieldline-ingest-1"):
        assert await authn(emqx, authn_body("greenhouse-7", password, clientid)) == {
            "result": "deny",
            "is_superuser": False,
        }, clientid
    topic = TOPICS.uplink("greenhouse-7", Uplink.TELEMETRY)
    for clientid in ("greenhouse-8", ""):
        answer = await authz(emqx, authz_body("greenhouse-7", "publish", topic, clientid))
        assert answer == {"result": "deny"}


async def test_fieldlines_own_client_ids_are_the_service_accounts_alone(emqx: Api) -> None:
    # Users EMQX knows from elsewhere are left to it, but not under fieldline's client ids.
    assert (await authn(emqx, authn_body("someone", "pw", "someone")))["result"] == "ignore"
    for clientid in ("fieldline-ingest-1", "fieldline-api-host-42"):
        answer = await authn(emqx, authn_body("someone", "pw", clientid))
        assert answer == {"result": "deny", "is_superuser": False}
        answer = await authn(emqx, authn_body(SERVICE_USERNAME, SERVICE_PASSWORD, clientid))
        assert answer == {"result": "allow", "is_superuser": True}
    # No device can be registered under one either.
    admin = await emqx.login("admin", ADMIN_PASSWORD)
    created = await emqx.http.post(
        "/api/v1/devices", headers=admin, json={"device_id": "fieldline-ingest-1"}
    )
    assert created.status_code != 201
    missing = await emqx.http.get("/api/v1/devices/fieldline-ingest-1", headers=admin)
    assert missing.status_code == 404


async def test_wrong_password_is_denied(emqx: Api) -> None:
    password = await register(emqx, "greenhouse-7")
    for wrong in ("", password[:-1], password + "x", await register(emqx, "other")):
        assert await authn(emqx, authn_body("greenhouse-7", wrong)) == {
            "result": "deny",
            "is_superuser": False,
        }


async def test_unknown_username_is_ignored_for_the_next_authenticator(emqx: Api) -> None:
    await register(emqx, "greenhouse-7")
    for username in ("greenhouse-8", "", "not a device id", "$SYS", "x" * 300, "nul\x00byte"):
        assert await authn(emqx, authn_body(username, "whatever")) == {
            "result": "ignore",
            "is_superuser": False,
        }


async def test_disabled_device_is_denied_even_with_its_password(emqx: Api) -> None:
    password = await register(emqx, "greenhouse-7")
    await disable(emqx, "greenhouse-7")
    assert await authn(emqx, authn_body("greenhouse-7", password)) == {
        "result": "deny",
        "is_superuser": False,
    }


async def test_service_account_is_a_superuser(emqx: Api) -> None:
    assert await authn(emqx, authn_body(SERVICE_USERNAME, SERVICE_PASSWORD)) == {
        "result": "allow",
        "is_superuser": True,
    }
    assert await authn(emqx, authn_body(SERVICE_USERNAME, SERVICE_PASSWORD + "x")) == {
        "result": "deny",
        "is_superuser": False,
    }
    for action, topic in (
        ("subscribe", f"$share/fieldline/{TOPICS.prefix}/+/telemetry"),
        ("publish", TOPICS.downlink("greenhouse-7", Downlink.COMMANDS)),
    ):
        assert await authz(emqx, authz_body(SERVICE_USERNAME, action, topic)) == {"result": "allow"}


async def test_form_encoded_bodies_are_accepted(emqx: Api) -> None:
    password = await register(emqx, "greenhouse-7")
    form = {**EMQX, "Content-Type": "application/x-www-form-urlencoded"}
    answer = await emqx.http.post(
        "/emqx/authn", headers=form, content=urlencode(authn_body("greenhouse-7", password))
    )
    assert answer.json() == {"result": "allow", "is_superuser": False}
    topic = TOPICS.uplink("greenhouse-7", Uplink.TELEMETRY)
    answer = await emqx.http.post(
        "/emqx/authz",
        headers=form,
        content=urlencode(authz_body("greenhouse-7", "publish", topic)),
    )
    assert answer.json() == {"result": "allow"}


async def test_device_publishes_own_uplink_and_subscribes_own_downlink(emqx: Api) -> None:
    await register(emqx, "greenhouse-7")
    for kind in Uplink:
        topic = TOPICS.uplink("greenhouse-7", kind)
        assert await authz(emqx, authz_body("greenhouse-7", "publish", topic)) == {
            "result": "allow"
        }
    for down in Downlink:
        topic = TOPICS.downlink("greenhouse-7", down)
        assert await authz(emqx, authz_body("greenhouse-7", "subscribe", topic)) == {
            "result": "allow"
        }


async def test_topics_outside_the_device_contract_are_denied(emqx: Api) -> None:
    await register(emqx, "greenhouse-7")
    await register(emqx, "greenhouse-8")
    own_uplink = TOPICS.uplink("greenhouse-7", Uplink.TELEMETRY)
    own_downlink = TOPICS.downlink("greenhouse-7", Downlink.COMMANDS)
    denied = [
        # another device's topics
        ("publish", TOPICS.uplink("greenhouse-8", Uplink.TELEMETRY)),
        ("subscribe", TOPICS.downlink("greenhouse-8", Downlink.COMMANDS)),
        # publishing where it should listen, listening where it should publish
        ("publish", own_downlink),
        ("subscribe", own_uplink),
        # wildcards reaching beyond its own topics, or even only its own
        ("subscribe", f"{TOPICS.prefix}/+/commands"),
        ("subscribe", f"{TOPICS.prefix}/#"),
        ("subscribe", "#"),
        ("subscribe", f"{TOPICS.prefix}/greenhouse-7/#"),
        ("subscribe", f"{TOPICS.prefix}/greenhouse-7/+"),
        ("subscribe", f"$share/g/{own_downlink}"),
        # near misses
        ("publish", own_uplink + "/extra"),
        ("publish", "devices2/greenhouse-7/telemetry"),
        ("publish", "$SYS/brokers"),
    ]
    for action, topic in denied:
        answer = await authz(emqx, authz_body("greenhouse-7", action, topic))
        assert answer == {"result": "deny"}, (action, topic)


async def test_unknown_or_disabled_device_is_denied_everything(emqx: Api) -> None:
    await register(emqx, "greenhouse-7")
    topic = TOPICS.uplink("greenhouse-7", Uplink.TELEMETRY)
    assert await authz(emqx, authz_body("greenhouse-7", "publish", topic)) == {"result": "allow"}
    await disable(emqx, "greenhouse-7")
    assert await authz(emqx, authz_body("greenhouse-7", "publish", topic)) == {"result": "deny"}
    ghost_topic = TOPICS.uplink("ghost", Uplink.TELEMETRY)
    assert await authz(emqx, authz_body("ghost", "publish", ghost_topic)) == {"result": "deny"}
    assert await authz(emqx, authz_body("", "subscribe", "#")) == {"result": "deny"}


async def test_topic_prefix_setting_is_honoured(emqx: Api) -> None:
    await register(emqx, "greenhouse-7")
    emqx.reconfigure(topic_prefix="farm")
    farm = TopicScheme("farm")
    assert await authz(
        emqx, authz_body("greenhouse-7", "publish", farm.uplink("greenhouse-7", Uplink.STATUS))
    ) == {"result": "allow"}
    assert await authz(
        emqx, authz_body("greenhouse-7", "publish", TOPICS.uplink("greenhouse-7", Uplink.STATUS))
    ) == {"result": "deny"}


@pytest.mark.parametrize("path", ["/emqx/authn", "/emqx/authz"])
async def test_missing_or_wrong_bearer_token_is_401(emqx: Api, path: str) -> None:
    body = authz_body("greenhouse-7", "publish", "devices/greenhouse-7/telemetry")
    body["password"] = "pw"
    for headers in (
        {},
        {"Authorization": "Bearer wrong-secret"},
        {"Authorization": f"Bearer {WEBHOOK_SECRET}x"},
        {"Authorization": f"Basic {WEBHOOK_SECRET}"},
        {"X-API-Key": WEBHOOK_SECRET},
    ):
        response = await emqx.http.post(path, headers=headers, json=body)
        assert_error(response, 401, "unauthorized")
        assert response.headers["www-authenticate"] == "Bearer"
    # A user's access token is not EMQX's secret.
    admin = await emqx.login("admin", ADMIN_PASSWORD)
    assert_error(await emqx.http.post(path, headers=admin, json=body), 401, "unauthorized")
    # Nor is a malformed body looked at before the caller is known.
    assert_error(await emqx.http.post(path, content=b"{not json"), 401, "unauthorized")


@pytest.mark.parametrize("path", ["/emqx/authn", "/emqx/authz"])
async def test_endpoints_are_off_without_the_secret(api: Api, path: str) -> None:
    assert api.context.settings.emqx_webhook_secret is None
    for headers in ({}, {"Authorization": "Bearer anything"}):
        assert_error(
            await api.http.post(path, headers=headers, json={"username": "u"}), 404, "not_found"
        )


async def test_endpoints_are_not_in_the_openapi_schema(emqx: Api) -> None:
    schema = (await emqx.http.get("/openapi.json")).json()
    assert not [path for path in schema["paths"] if path.startswith("/emqx")]


@pytest.mark.parametrize(
    ("path", "content", "content_type", "status", "code"),
    [
        ("/emqx/authn", b"{not json", "application/json", 400, "bad_request"),
        ("/emqx/authn", b"", "application/json", 400, "bad_request"),
        ("/emqx/authn", b"[1, 2]", "application/json", 422, "validation_error"),
        ("/emqx/authn", b'{"username": "d1"}', "application/json", 422, "validation_error"),
        ("/emqx/authn", b'{"username": 7, "password": "p"}', "application/json", 422, None),
        (
            "/emqx/authn",
            b"username=d1&password=%ZZ\xff",
            "application/x-www-form-urlencoded",
            400,
            None,
        ),
        ("/emqx/authn", b"username=d1", "application/x-www-form-urlencoded", 422, None),
        ("/emqx/authn", b"<xml/>", "text/xml", 415, "unsupported_media_type"),
        ("/emqx/authz", b'{"username": "d1", "topic": "t"}', "application/json", 422, None),
        (
            "/emqx/authz",
            b'{"username": "d1", "topic": "t", "action": "all"}',
            "application/json",
            422,
            "validation_error",
        ),
        ("/emqx/authz", b"null", "application/json", 422, "validation_error"),
    ],
)
async def test_malformed_bodies_are_json_client_errors(
    emqx: Api, path: str, content: bytes, content_type: str, status: int, code: str | None
) -> None:
    response = await emqx.http.post(
        path, headers={**EMQX, "Content-Type": content_type}, content=content
    )
    assert_error(response, status, code or {400: "bad_request", 422: "validation_error"}[status])


async def test_answers_are_exactly_emqx_shaped(emqx: Api) -> None:
    """No extra keys: EMQX reads `result` and `is_superuser`, and newer fields mean things."""
    password = await register(emqx, "greenhouse-7")
    answer = await authn(emqx, authn_body("greenhouse-7", password))
    assert set(answer) == {"result", "is_superuser"}
    topic = TOPICS.uplink("greenhouse-7", Uplink.HEARTBEAT)
    assert set(await authz(emqx, authz_body("greenhouse-7", "publish", topic))) == {"result"}
