"""Every kind of answer carries the same security headers (issue 12)."""

from __future__ import annotations

import httpx
import pytest
from pydantic import ValidationError

from fieldline.api.app import create_app
from fieldline.config import Settings
from fieldline.ops.metrics import Metrics
from fieldline.ops.server import ops_app
from tests.api.conftest import Api

COMMON = {
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
    "x-frame-options": "DENY",
}


def assert_secured(headers: httpx.Headers, what: str) -> None:
    for name, value in COMMON.items():
        assert headers.get(name) == value, f"{what}: {name}"
    policy = str(headers.get("content-security-policy"))
    assert "default-src 'self'" in policy, what
    assert "frame-ancestors 'none'" in policy, what


@pytest.mark.parametrize(
    ("path", "signed_in", "status", "cache"),
    [
        pytest.param("/api/v1/devices", True, 200, "no-store", id="api-json"),
        pytest.param("/api/v1/devices", False, 401, "no-store", id="api-error"),
        pytest.param("/api/v1/devices/nobody", True, 404, "no-store", id="api-not-found"),
        pytest.param("/nowhere", False, 404, "no-store", id="unrouted"),
        pytest.param("/openapi.json", False, 200, "no-store", id="openapi"),
        pytest.param("/docs", False, 200, "no-cache", id="docs"),
        pytest.param("/docs/assets/swagger-ui.css", False, 200, "no-cache", id="docs-asset"),
        pytest.param("/", False, 200, "no-cache", id="dashboard"),
        pytest.param("/ui/js/app.js", False, 200, "no-cache", id="dashboard-asset"),
        pytest.param("/metrics", False, 200, "no-store", id="metrics"),
        pytest.param("/health", False, 200, "no-store", id="health"),
    ],
)
async def test_every_answer_is_secured(
    api: Api, admin: dict[str, str], path: str, signed_in: bool, status: int, cache: str
) -> None:
    answer = await api.http.get(path, headers=admin if signed_in else {})
    assert answer.status_code == status, answer.text
    assert_secured(answer.headers, path)
    assert answer.headers["cache-control"] == cache


async def test_a_login_answer_is_not_stored(api: Api) -> None:
    """It carries credentials: no cache may keep it."""
    answer = await api.http.post(
        "/api/v1/auth/login", json={"username": "admin", "password": "wrong-password"}
    )
    assert answer.status_code == 401
    assert_secured(answer.headers, "login")
    assert answer.headers["cache-control"] == "no-store"


async def test_a_refused_body_is_secured_too(api: Api) -> None:
    answer = await api.http.post(
        "/api/v1/auth/login", content=b"x", headers={"Content-Length": str(2**40)}
    )
    assert answer.status_code == 413
    assert_secured(answer.headers, "413")


@pytest.mark.parametrize("path", ["/health", "/ready", "/metrics"])
async def test_the_ops_endpoints_of_ingest_and_worker_are_secured(path: str) -> None:
    """`fieldline ingest --ops-port` and `fieldline worker --ops-port` serve these apart."""

    async def checks() -> dict[str, bool]:
        return {"database": True}

    app = ops_app(metrics=Metrics(), checks=checks)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://ops") as http:
        answer = await http.get(path)
    assert answer.status_code == 200, answer.text
    assert_secured(answer.headers, path)
    assert answer.headers["cache-control"] == "no-store"


async def test_strict_transport_security_only_over_https(api: Api) -> None:
    """HSTS sent over plain HTTP would lock out a site without a certificate: never there.
    Behind a proxy the scheme comes from a trusted `X-Forwarded-Proto` (tests/deploy)."""
    plain = await api.http.get("/health")
    assert "strict-transport-security" not in plain.headers
    transport = httpx.ASGITransport(app=api.app)
    async with httpx.AsyncClient(transport=transport, base_url="https://fieldline") as https:
        for path in ("/health", "/", "/api/v1/devices"):
            answer = await https.get(path)
            assert answer.headers["strict-transport-security"] == "max-age=31536000", path
            assert_secured(answer.headers, path)


async def test_cors_is_off_by_default(api: Api) -> None:
    answer = await api.http.get("/health", headers={"Origin": "https://app.example.com"})
    assert "access-control-allow-origin" not in answer.headers
    preflight = await api.http.options(
        "/api/v1/devices",
        headers={
            "Origin": "https://app.example.com",
            "Access-Control-Request-Method": "GET",
        },
    )
    assert "access-control-allow-origin" not in preflight.headers


async def test_cors_answers_the_listed_origins_only(api: Api, admin: dict[str, str]) -> None:
    settings = api.context.settings.model_copy(
        update={"cors_origins": "https://app.example.com,http://localhost:5173"}
    )
    app = create_app(api.context.with_settings(settings))
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://fieldline") as http:
        for origin in ("https://app.example.com", "http://localhost:5173"):
            preflight = await http.options(
                "/api/v1/devices",
                headers={
                    "Origin": origin,
                    "Access-Control-Request-Method": "GET",
                    "Access-Control-Request-Headers": "authorization",
                },
            )
            assert preflight.status_code == 200, preflight.text
            assert preflight.headers["access-control-allow-origin"] == origin
            assert "authorization" in preflight.headers["access-control-allow-headers"].lower()
            assert_secured(preflight.headers, "preflight")
            listed = await http.get("/api/v1/devices", headers={**admin, "Origin": origin})
            assert listed.status_code == 200
            assert listed.headers["access-control-allow-origin"] == origin

        for other in ("https://evil.example.com", "https://app.example.com:8443"):
            preflight = await http.options(
                "/api/v1/devices",
                headers={"Origin": other, "Access-Control-Request-Method": "GET"},
            )
            assert preflight.status_code == 400
            assert "access-control-allow-origin" not in preflight.headers
            answer = await http.get("/api/v1/devices", headers={**admin, "Origin": other})
            assert answer.status_code == 200  # the browser, not the server, withholds it
            assert "access-control-allow-origin" not in answer.headers


@pytest.mark.parametrize(
    "value", ["*", "https://app.example.com/", "app.example.com", "https://x.example/path"]
)
def test_cors_origins_must_be_exact_origins(value: str) -> None:
    with pytest.raises(ValidationError, match="cors_origins"):
        Settings(cors_origins=value)
