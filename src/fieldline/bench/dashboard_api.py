"""The dashboard's API without a browser (`dashboard` scenario).

The admin's session, as the sign-in form would store it (each browser context gets a
fresh one), and the requests on the pages' critical path timed from Python, one at a
time: the API's own share of a page's time.
"""

from __future__ import annotations

import time
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import urlencode

import httpx

from fieldline.bench.dashboard_pages import (
    CHART_RANGE,
    CHART_RANGE_DAYS,
    COMPARE_DEVICES,
    COMPARE_METRIC,
    MAP_DEVICES,
    MAP_GROUP,
)
from fieldline.bench.deployment import ADMIN_PASSWORD
from fieldline.bench.queries import CHART_METRIC, LONG_DEVICE, fleet_ids


async def sign_in(api_url: str) -> dict[str, Any]:
    """The admin's session, as the sign-in form would store it in localStorage."""
    async with httpx.AsyncClient(base_url=api_url, timeout=30) as http:
        tokens = (
            (
                await http.post(
                    "/api/v1/auth/login", json={"username": "admin", "password": ADMIN_PASSWORD}
                )
            )
            .raise_for_status()
            .json()
        )
        headers = {"Authorization": f"Bearer {tokens['access_token']}"}
        me = (await http.get("/api/v1/auth/me", headers=headers)).raise_for_status().json()
    return {"access": tokens["access_token"], "refresh": tokens["refresh_token"], "user": me}


# What js/pages/device.js asks for over 30 days: the smallest bucket giving at most
# 300 points. The checks compare it with what the page asked for.
CHART_BUCKET = "3h"


def server_requests(end: datetime) -> dict[str, str]:
    last = end.isoformat()
    first = (end - timedelta(days=CHART_RANGE_DAYS)).isoformat()
    day = (end - timedelta(days=1)).isoformat()
    device = f"/api/v1/devices/{LONG_DEVICE}"
    return {
        "GET /auth/me": "/api/v1/auth/me",
        "GET /fleet/devices (first page of 50)": (
            "/api/v1/fleet/devices?sort=device_id&order=asc&offset=0&limit=50"
        ),
        "GET /fleet/summary (what the stream sends)": "/api/v1/fleet/summary",
        "GET /fleet/stream, to its first event": "/api/v1/fleet/stream",
        "GET /devices/{id}": device,
        "GET /devices/{id}/telemetry/latest": f"{device}/telemetry/latest",
        f"GET /devices/{{id}}/telemetry, {CHART_RANGE} of one metric, {CHART_BUCKET} buckets": (
            f"{device}/telemetry?metric={CHART_METRIC}&bucket={CHART_BUCKET}&agg=avg&"
            + urlencode({"start": first, "end": last})
        ),
        # The group page's and the compare view's slowest.
        f"GET /groups/{{name}}/trend, {MAP_DEVICES:,} devices, 24 h of 5 min buckets": (
            f"/api/v1/groups/{MAP_GROUP}/trend?metric={COMPARE_METRIC}&bucket=5m&"
            + urlencode({"start": day, "end": last})
        ),
        f"GET /positions of {MAP_DEVICES:,} devices": f"/api/v1/positions?group={MAP_GROUP}",
        f"GET /series, {COMPARE_DEVICES} devices x 24 h of 5 min buckets": (
            "/api/v1/series?"
            + urlencode(
                [("device_id", d) for d in fleet_ids(COMPARE_DEVICES)]
                + [("metric", COMPARE_METRIC), ("bucket", "5m"), ("start", day), ("end", last)]
            )
        ),
    }


async def server_times(api_url: str, end: datetime, repetitions: int) -> dict[str, list[float]]:
    """Each request the pages make on their critical path, from Python, one at a time.

    The API's own share of a page's time, with no browser competing for the cores.
    """
    session = await sign_in(api_url)
    headers = {"Authorization": f"Bearer {session['access']}"}
    times: dict[str, list[float]] = {}
    async with httpx.AsyncClient(base_url=api_url, headers=headers, timeout=30) as http:
        for name, path in server_requests(end).items():
            times[name] = []
            for repetition in range(repetitions + 1):  # the first one warms up
                started = time.perf_counter()
                if path.endswith("/stream"):
                    async with http.stream("GET", path) as answer:
                        answer.raise_for_status()
                        async for line in answer.aiter_lines():
                            if line.startswith("data:"):
                                break
                else:
                    (await http.get(path)).raise_for_status()
                if repetition:
                    times[name].append(round(1000 * (time.perf_counter() - started), 1))
    return times
