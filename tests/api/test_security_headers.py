"""Every kind of answer carries the same security headers (issue 12)."""

from __future__ import annotations

import httpx
import pytest

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
