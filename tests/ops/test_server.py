"""The operations endpoints ingest and the worker serve (the API serves the same router)."""

from __future__ import annotations

import httpx

from fieldline.ops.metrics import Metrics
from fieldline.ops.server import ReadyChecks, ops_app


async def get(checks: ReadyChecks, path: str) -> httpx.Response:
    transport = httpx.ASGITransport(app=ops_app(metrics=Metrics(), checks=checks))
    async with httpx.AsyncClient(transport=transport, base_url="http://ops") as http:
        return await http.get(path)


async def test_ready_says_which_check_failed() -> None:
    async def checks() -> dict[str, bool]:
        return {"database": True, "broker": False}

    answer = await get(checks, "/ready")
    assert answer.status_code == 503
    assert answer.json() == {"status": "not_ready", "checks": {"database": True, "broker": False}}


async def test_a_check_that_fails_outright_is_not_ready_rather_than_an_error() -> None:
    async def checks() -> dict[str, bool]:
        raise OSError("the probe itself failed")

    answer = await get(checks, "/ready")
    assert answer.status_code == 503
    assert answer.json() == {"status": "not_ready", "checks": {"checks": False}}


async def test_health_and_metrics() -> None:
    async def checks() -> dict[str, bool]:
        return {}

    assert (await get(checks, "/health")).json() == {"status": "ok"}
    metrics = await get(checks, "/metrics")
    assert metrics.status_code == 200
    assert "# TYPE fieldline_messages_stored_total counter" in metrics.text
