"""Download a firmware image in HTTP Range requests, resuming after a cut.

Field links drop. Each request asks for the next `chunk_size` bytes after those already
held, and every byte that arrived before a failure is kept, so a cut costs only the
bytes in flight, never the image so far (what esp_https_ota's partial download does).
"""

from __future__ import annotations

import asyncio
import logging
import random
import re
from collections.abc import Callable
from dataclasses import dataclass

import httpx

from fieldline.ops.backoff import Backoff

log = logging.getLogger(__name__)

CHUNK_BYTES = 64 * 1024
# Consecutive failed requests that brought no new byte before the download gives up.
MAX_ATTEMPTS = 6
_CONTENT_RANGE = re.compile(r"bytes (\d+)-(\d+)/(\d+|\*)")
# Answers that will not change by asking again. Not 403: a device told of an update may
# ask before the platform has recorded that it told it.
_FINAL_STATUSES = {400, 401, 404, 410, 416}


class DownloadFailed(Exception):
    """The image could not be downloaded; the message is the reason a device reports."""


@dataclass(slots=True)
class DownloadStats:
    requests: int = 0
    resumes: int = 0  # requests that continued after a failed one, from the bytes held


class _Cut(Exception):
    """The simulated link dropped mid-response."""


async def download_image(
    http: httpx.AsyncClient,
    url: str,
    *,
    size: int,
    into: bytearray,
    auth: httpx.Auth | None = None,
    chunk_size: int = CHUNK_BYTES,
    chunk_delay: float = 0.0,
    cut_at: int | None = None,
    retry_start: float = 0.5,
    rng: random.Random | None = None,
    on_progress: Callable[[int], None] | None = None,
) -> DownloadStats:
    """Fill `into` with the image's `size` bytes, continuing from those it holds already.

    `cut_at` drops the connection once, after that many bytes in all, to simulate a
    flaky link; `chunk_delay` waits between requests (a slow link). `on_progress` is
    called with the bytes held after each piece that arrives.
    """
    stats = DownloadStats()
    backoff = Backoff(cap=10.0, start=retry_start, rng=rng or random.Random())  # noqa: S311
    failures = 0
    failed_before = False
    while len(into) < size:
        if stats.requests and chunk_delay > 0:
            await asyncio.sleep(chunk_delay)
        start = len(into)
        end = min(start + chunk_size, size) - 1
        stats.requests += 1
        if failed_before:
            stats.resumes += 1
        try:
            await _fetch_range(http, url, start, end, size, into, auth, cut_at, on_progress)
            failed_before = False
        except (httpx.TransportError, _Cut, _Retryable) as exc:
            if isinstance(exc, _Cut):
                cut_at = None  # the link drops once
            failed_before = True
            if len(into) > start:
                failures = 0  # it moved on: only a link that gives nothing gives up
                backoff.reset()
            failures += 1
            if failures >= MAX_ATTEMPTS:
                raise DownloadFailed(f"download failed: {_reason(exc)}") from exc
            log.info(
                "firmware download interrupted; resuming",
                extra={"url": url, "held_bytes": len(into), "error": _reason(exc)},
            )
            await asyncio.sleep(backoff.next())
    return stats


class _Retryable(Exception):
    """An answer worth asking again for (5xx, 429, a short or odd 206)."""


async def _fetch_range(
    http: httpx.AsyncClient,
    url: str,
    start: int,
    end: int,
    size: int,
    into: bytearray,
    auth: httpx.Auth | None,
    cut_at: int | None,
    on_progress: Callable[[int], None] | None,
) -> None:
    headers = {"Range": f"bytes={start}-{end}"}
    async with http.stream(
        "GET", url, headers=headers, auth=auth if auth is not None else httpx.USE_CLIENT_DEFAULT
    ) as answer:
        if answer.status_code == 200:
            # A server that ignores Range sends the whole image: start again from its start.
            del into[:]
            limit = size
        elif answer.status_code == 206:
            first = _range_start(answer.headers.get("Content-Range", ""))
            if first != start:
                raise _Retryable(f"206 for bytes from {first}, asked from {start}")
            limit = end + 1
        elif answer.status_code in _FINAL_STATUSES:
            raise DownloadFailed(f"download refused: HTTP {answer.status_code}")
        else:
            raise _Retryable(f"HTTP {answer.status_code}")
        async for piece in answer.aiter_bytes():
            into += piece[: limit - len(into)]
            if on_progress is not None:
                on_progress(len(into))
            if cut_at is not None and len(into) >= cut_at:
                raise _Cut(f"link dropped after {len(into)} bytes")
            if len(into) >= limit:
                break
    if len(into) < limit:
        raise _Retryable(f"answer ended after {len(into)} of {limit} bytes")


def _range_start(content_range: str) -> int | None:
    match = _CONTENT_RANGE.fullmatch(content_range.strip())
    return int(match.group(1)) if match else None


def _reason(exc: BaseException) -> str:
    return str(exc) or type(exc).__name__
