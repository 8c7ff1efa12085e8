"""Devices downloading one firmware image at once, as a rollout's devices do.

Each device is its own httpx client with one connection, authenticated with HTTP Basic
(its id and password), and asks for the image whole or in Range requests of
`range_bytes` after the bytes it holds (what the simulator does, sim/download.py).
Nothing is retried: an answer other than 200/206 with the bytes asked for, a dropped
connection or a digest that differs is a failed download, reported with its reason.
"""

from __future__ import annotations

import asyncio
import hashlib
import ssl
import time
from dataclasses import dataclass

import httpx

# Generous: the measurement is how long a download takes, not whether it beats a deadline.
TIMEOUT_S = 300.0


@dataclass(frozen=True, slots=True)
class Download:
    device_id: str
    seconds: float  # from the common start to the last byte checked
    received: int
    requests: int
    error: str | None  # None: every byte arrived and the sha256 matched


@dataclass(frozen=True, slots=True)
class Image:
    path: str  # /firmware/{model}/{version}/binary
    size: int
    sha256: str


async def download_all(
    api_url: str,
    image: Image,
    devices: list[str],
    password: str,
    *,
    range_bytes: int | None,
) -> list[Download]:
    """Every device downloads `image` at the same moment; answer each one's outcome."""
    context = ssl.create_default_context()  # one for all: httpx builds one per client else
    clients = [
        httpx.AsyncClient(
            base_url=api_url,
            auth=(device_id, password),
            timeout=TIMEOUT_S,
            limits=httpx.Limits(max_connections=1, max_keepalive_connections=1),
            verify=context,
        )
        for device_id in devices
    ]
    go = asyncio.Event()
    try:
        tasks = [
            asyncio.create_task(_one(client, device_id, image, range_bytes, go))
            for client, device_id in zip(clients, devices, strict=True)
        ]
        await asyncio.sleep(0)  # every task waits on `go` before any starts
        began = time.perf_counter()
        go.set()
        outcomes = await asyncio.gather(*tasks)
    finally:
        await asyncio.gather(*(client.aclose() for client in clients))
    return [
        Download(device_id, finished - began, received, requests, error)
        for device_id, (finished, received, requests, error) in zip(devices, outcomes, strict=True)
    ]


async def _one(
    client: httpx.AsyncClient,
    device_id: str,
    image: Image,
    range_bytes: int | None,
    go: asyncio.Event,
) -> tuple[float, int, int, str | None]:
    await go.wait()
    digest = hashlib.sha256()
    received = requests = 0
    error: str | None = None
    try:
        while received < image.size:
            requests += 1
            if range_bytes is None:
                headers, status = {}, 200
                last = image.size - 1
            else:
                last = min(received + range_bytes, image.size) - 1
                headers, status = {"Range": f"bytes={received}-{last}"}, 206
            async with client.stream("GET", image.path, headers=headers) as answer:
                if answer.status_code != status:
                    await answer.aread()
                    raise _Refused(f"HTTP {answer.status_code}: {answer.text[:200]}")
                async for piece in answer.aiter_bytes():
                    digest.update(piece)
                    received += len(piece)
            if received != last + 1:
                raise _Refused(f"{received} bytes held after asking up to byte {last}")
        if digest.hexdigest() != image.sha256:
            error = "sha256 differs"
    except (httpx.HTTPError, _Refused) as exc:
        error = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    return time.perf_counter(), received, requests, error


class _Refused(Exception):
    """An answer that is not the bytes asked for."""
