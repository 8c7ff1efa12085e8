"""A small client of fieldline's own HTTP API, for the CLI and the simulator."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

import httpx

REQUEST_TIMEOUT_SECONDS = 30.0


class ApiCallError(Exception):
    """The API answered with an error (`{"error": {"code", "message"}}`)."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status = status
        self.code = code


@dataclass(frozen=True, slots=True)
class ApiAccess:
    """How to reach and authenticate to the HTTP API (secrets kept out of repr)."""

    url: str = "http://127.0.0.1:8000"
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    api_key: str | None = field(default=None, repr=False)

    @classmethod
    def from_env(
        cls,
        url: str | None = None,
        username: str | None = None,
        password: str | None = None,
        api_key: str | None = None,
    ) -> ApiAccess:
        return cls(
            url=url or os.environ.get("FIELDLINE_API_URL", "http://127.0.0.1:8000"),
            username=username or os.environ.get("FIELDLINE_API_USERNAME"),
            password=password or os.environ.get("FIELDLINE_API_PASSWORD"),
            api_key=api_key or os.environ.get("FIELDLINE_API_KEY"),
        )


def raise_for_error(response: httpx.Response) -> None:
    if response.is_success:
        return
    try:
        error = response.json()["error"]
        code, message = str(error["code"]), str(error["message"])
    except (ValueError, KeyError, TypeError):
        code, message = "error", response.text[:200]
    raise ApiCallError(response.status_code, code, message)


async def auth_headers(http: httpx.AsyncClient, access: ApiAccess) -> dict[str, str]:
    """Headers that authenticate as `access` (an API key, or a login for a bearer token)."""
    if access.api_key:
        return {"X-API-Key": access.api_key}
    if not (access.username and access.password):
        raise ApiCallError(
            401,
            "unauthorized",
            "give --api-key, or --username and --password "
            "(or FIELDLINE_API_KEY / FIELDLINE_API_USERNAME and _PASSWORD)",
        )
    response = await http.post(
        "/api/v1/auth/login", json={"username": access.username, "password": access.password}
    )
    raise_for_error(response)
    return {"Authorization": f"Bearer {response.json()['access_token']}"}


async def open_client(access: ApiAccess) -> httpx.AsyncClient:
    http = httpx.AsyncClient(base_url=access.url, timeout=REQUEST_TIMEOUT_SECONDS)
    try:
        http.headers.update(await auth_headers(http, access))
    except BaseException:
        await http.aclose()
        raise
    return http


async def call(http: httpx.AsyncClient, method: str, path: str, **kwargs: Any) -> Any:
    response = await http.request(method, path, **kwargs)
    raise_for_error(response)
    return None if response.status_code == 204 else response.json()
