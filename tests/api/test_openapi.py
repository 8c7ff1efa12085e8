"""The OpenAPI document tells the error answers each operation gives, in the shape it gives
them, and a 405 names every method of the path (issue 12)."""

from __future__ import annotations

from typing import Any

import pytest

from tests.api.conftest import Api
from tests.api.test_auth_and_roles import assert_error

ERROR_BODY = {"$ref": "#/components/schemas/ErrorBody"}


async def operations(api: Api) -> list[tuple[str, str, dict[str, Any]]]:
    document = (await api.http.get("/openapi.json")).json()
    return [
        (method.upper(), path, operation)
        for path, methods in document["paths"].items()
        for method, operation in methods.items()
    ]


async def test_every_error_answer_is_documented_with_the_error_schema(api: Api) -> None:
    document = (await api.http.get("/openapi.json")).json()
    assert "HTTPValidationError" not in document["components"]["schemas"]
    error = document["components"]["schemas"]["ErrorDetail"]
    assert set(error["required"]) == {"code", "message"}
    for method, path, operation in await operations(api):
        answers = operation["responses"]
        where = f"{method} {path}"
        for status, answer in answers.items():
            if int(status) >= 400 and path != "/ready":
                assert answer["content"]["application/json"]["schema"] == ERROR_BODY, where
        if operation.get("security"):
            assert "401" in answers, where
        if "{" in path:
            assert "404" in answers, where
        if "requestBody" in operation:
            assert {"413", "422"} <= set(answers), where


@pytest.mark.parametrize(
    ("method", "path", "errors"),
    [
        ("GET", "/api/v1/devices", {"400", "401", "403", "422"}),
        ("POST", "/api/v1/devices", {"401", "403", "409", "413", "422", "503"}),
        ("PUT", "/api/v1/devices/{device_id}/config", {"401", "403", "404", "413", "422"}),
        ("GET", "/api/v1/audit", {"401", "403", "422"}),
        ("POST", "/api/v1/groups", {"401", "403", "409", "413", "422"}),
        ("POST", "/api/v1/devices/{device_id}/commands", {"401", "403", "404", "409", "422"}),
    ],
)
async def test_an_operation_documents_what_it_answers(
    api: Api, method: str, path: str, errors: set[str]
) -> None:
    found = {(m, p): o for m, p, o in await operations(api)}
    assert errors <= set(found[(method, path)]["responses"])


async def test_operations_answers_document_their_real_bodies(api: Api) -> None:
    found = {(m, p): o for m, p, o in await operations(api)}
    metrics = found[("GET", "/metrics")]["responses"]["200"]["content"]
    assert list(metrics) == ["text/plain; version=1.0.0"]
    assert (
        (await api.http.get("/metrics"))
        .headers["content-type"]
        .startswith("text/plain; version=1.0.0")
    )
    ready = found[("GET", "/ready")]["responses"]
    assert set(ready) == {"200", "503"}
    assert ready["503"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/Readiness"
    }
    health = found[("GET", "/health")]["responses"]["200"]["content"]["application/json"]
    assert health["schema"] == {"$ref": "#/components/schemas/Health"}


@pytest.mark.parametrize(
    ("method", "path", "allowed"),
    [
        ("DELETE", "/api/v1/devices/d-1/config", "GET, PATCH, PUT"),
        ("POST", "/api/v1/devices/d-1", "DELETE, GET, PATCH"),
        ("PUT", "/api/v1/devices", "GET, POST"),
        ("DELETE", "/api/v1/devices/d-1/telemetry", "GET, POST"),
        ("POST", "/health", "GET"),
    ],
)
async def test_a_wrong_method_is_told_every_method_of_the_path(
    api: Api, admin: dict[str, str], method: str, path: str, allowed: str
) -> None:
    answer = await api.http.request(method, path, headers=admin)
    assert_error(answer, 405, "method_not_allowed")
    assert answer.headers["allow"] == allowed


# Answers the OpenAPI-driven test once found undocumented: (method, path, request, status).
ONCE_UNDOCUMENTED: list[tuple[str, str, dict[str, Any], int]] = [
    (
        "POST",
        "/api/v1/auth/login",
        {"json": {"username": "nobody", "password": "a-wrong-password"}},
        401,
    ),
    ("POST", "/api/v1/auth/refresh", {"json": {"refresh_token": "not-a-token"}}, 401),
    (
        "POST",
        "/api/v1/users",
        {"json": {"username": "admin", "password": "a-long-password", "role": "viewer"}},
        409,
    ),
    (
        "POST",
        "/provision",
        {
            "json": {"device_id": "d-1"},
            "headers": {"X-Key-Id": "k", "X-Timestamp": "0", "X-Signature": "00"},
        },
        401,
    ),
]


@pytest.mark.parametrize(
    ("method", "path", "request_", "status"),
    ONCE_UNDOCUMENTED,
    ids=[f"{m} {p} {s}" for m, p, _, s in ONCE_UNDOCUMENTED],
)
async def test_answers_once_undocumented_are_documented(
    api: Api,
    admin: dict[str, str],
    method: str,
    path: str,
    request_: dict[str, Any],
    status: int,
) -> None:
    sent = {**request_, "headers": {**admin, **request_.get("headers", {})}}
    answer = await api.http.request(method, path, **sent)
    assert answer.status_code == status, answer.text
    found = {(m, p): o for m, p, o in await operations(api)}
    assert str(status) in found[(method, path)]["responses"]
