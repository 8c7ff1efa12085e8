"""Device credentials for a simulated fleet: registered through the API, or read from a file."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import os
import random
import time
from collections.abc import Mapping
from pathlib import Path

import httpx
import orjson

from fieldline.client import ApiAccess, ApiCallError, auth_headers, raise_for_error
from fieldline.sim.options import FleetOptions
from fieldline.sim.payloads import DEVICE_TYPE, FIRMWARE_VERSION

log = logging.getLogger(__name__)

REQUEST_CONCURRENCY = 16
REQUEST_TIMEOUT_S = 30.0
PROVISION_ATTEMPTS = 20  # a 429 is waited out this many times before giving up


class ProvisioningError(Exception):
    """The API refused or answered something the simulator cannot use."""


async def resolve_credentials(options: FleetOptions) -> dict[str, str] | None:
    """Passwords by device id, or None to connect without credentials."""
    if options.provision_key is not None:
        assert options.api is not None  # FleetOptions refuses a provision key without it
        known = (
            read_credentials(options.credentials_file)
            if options.credentials_file is not None and options.credentials_file.exists()
            else {}
        )
        passwords = await provision_devices(
            options.api.url,
            options.provision_key,
            device_ids=[d for d in options.device_ids() if d not in known],
            device_type=options.device_type,
            firmware_version=options.firmware_version,
        )
        if options.credentials_file is not None:
            write_credentials(options.credentials_file, passwords)
        return {**known, **passwords}
    if options.create:
        assert options.api is not None  # FleetOptions refuses create without api
        passwords = await register_devices(
            options.api,
            device_ids=options.device_ids(),
            group=options.group,
            device_type=options.device_type,
            firmware_version=options.firmware_version,
        )
        if options.credentials_file is not None:
            write_credentials(options.credentials_file, passwords)
        return passwords
    if options.credentials_file is not None:
        stored = read_credentials(options.credentials_file)
        missing = [d for d in options.device_ids() if d not in stored]
        if missing:
            raise ProvisioningError(
                f"{len(missing)} device(s) have no password in {options.credentials_file} "
                f"(first: {missing[0]}); run once with --create"
            )
        return stored
    return None


async def register_devices(
    api: ApiAccess,
    *,
    device_ids: list[str],
    group: str | None,
    device_type: str = DEVICE_TYPE,
    firmware_version: str = FIRMWARE_VERSION,
) -> dict[str, str]:
    """Create each device, or rotate its password when it already exists (409)."""
    try:
        async with httpx.AsyncClient(base_url=api.url, timeout=REQUEST_TIMEOUT_S) as http:
            http.headers.update(await _auth_headers(http, api))
            if group is not None:
                await _ensure_group(http, group)
            limit = asyncio.Semaphore(REQUEST_CONCURRENCY)

            async def one(number: int, device_id: str) -> tuple[str, str]:
                async with limit:
                    return device_id, await _register_one(
                        http,
                        device_id=device_id,
                        number=number,
                        group=group,
                        device_type=device_type,
                        firmware_version=firmware_version,
                    )

            pairs = await asyncio.gather(*(one(n, d) for n, d in enumerate(device_ids, start=1)))
    except httpx.HTTPError as exc:
        raise ProvisioningError(f"cannot reach the API at {api.url}: {exc!r}") from exc
    return dict(pairs)


def signed_headers(
    key_id: str, secret: str, body: bytes, now: float | None = None
) -> dict[str, str]:
    """The zero-touch provisioning signature, as device firmware computes it.

    `X-Signature` is the hex HMAC-SHA256, keyed with the provisioning key's
    secret, of `"{timestamp}.{raw body}"`.
    """
    timestamp = str(int(time.time() if now is None else now))
    digest = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    return {
        "X-Key-Id": key_id,
        "X-Timestamp": timestamp,
        "X-Signature": digest.hexdigest(),
        "Content-Type": "application/json",
    }


async def provision_devices(
    api_url: str,
    provision_key: str,
    *,
    device_ids: list[str],
    device_type: str = DEVICE_TYPE,
    firmware_version: str = FIRMWARE_VERSION,
) -> dict[str, str]:
    """Each device registers itself with the provisioning key, as a factory-flashed one would."""
    key_id, _, secret = provision_key.partition(":")
    try:
        async with httpx.AsyncClient(base_url=api_url, timeout=REQUEST_TIMEOUT_S) as http:
            limit = asyncio.Semaphore(REQUEST_CONCURRENCY)

            async def one(number: int, device_id: str) -> tuple[str, str]:
                body = orjson.dumps(
                    {
                        "device_id": device_id,
                        "device_type": device_type,
                        "name": f"Simulated sensor {number}",
                        "metadata": {"simulated": True, "firmware_version": firmware_version},
                    }
                )
                async with limit:
                    answer = await _provision_one(http, key_id, secret, body)
                if answer.status_code == 409:
                    raise ProvisioningError(
                        f"{device_id} exists already and its password is not in the credentials "
                        "file; allow re-provisioning (POST /api/v1/devices/{id}/allow-reprovision) "
                        "or use another --prefix"
                    )
                return device_id, str(_field(_expect(answer, f"provision {device_id}"), "password"))

            pairs = await asyncio.gather(*(one(n, d) for n, d in enumerate(device_ids, start=1)))
    except httpx.HTTPError as exc:
        raise ProvisioningError(f"cannot reach the API at {api_url}: {exc!r}") from exc
    return dict(pairs)


async def _provision_one(
    http: httpx.AsyncClient, key_id: str, secret: str, body: bytes
) -> httpx.Response:
    """POST /provision, signed anew for each attempt; waits out 429s as firmware should."""
    for _ in range(PROVISION_ATTEMPTS):
        answer = await http.post(
            "/provision", content=body, headers=signed_headers(key_id, secret, body)
        )
        if answer.status_code != 429:
            return answer
        wait = float(answer.headers.get("Retry-After", "1"))
        await asyncio.sleep(wait * random.uniform(1.0, 1.5))  # noqa: S311 - jitter, not crypto
    return answer


async def _auth_headers(http: httpx.AsyncClient, api: ApiAccess) -> dict[str, str]:
    try:
        return await auth_headers(http, api)
    except ApiCallError as exc:
        raise ProvisioningError(f"cannot log in to the API: {exc}") from exc


async def _ensure_group(http: httpx.AsyncClient, group: str) -> None:
    answer = await http.post("/api/v1/groups", json={"name": group})
    if answer.status_code != 409:  # 409: the group exists already, which is what we want
        _expect(answer, f"create group {group}")


async def _register_one(
    http: httpx.AsyncClient,
    *,
    device_id: str,
    number: int,
    group: str | None,
    device_type: str,
    firmware_version: str,
) -> str:
    body = {
        "device_id": device_id,
        "name": f"Simulated sensor {number}",
        "device_type": device_type,
        "group": group,
        "metadata": {"simulated": True, "firmware_version": firmware_version},
    }
    answer = await http.post("/api/v1/devices", json=body)
    if answer.status_code == 409:
        # Registered by an earlier run whose password we may have lost: rotate it.
        answer = await http.post(f"/api/v1/devices/{device_id}/credentials")
        log.info("rotated simulated device credentials", extra={"device_id": device_id})
        action = f"rotate credentials of {device_id}"
    else:
        action = f"create device {device_id}"
    mqtt = _field(_expect(answer, action), "mqtt")
    if not isinstance(mqtt, dict):
        raise ProvisioningError(f"{action}: `mqtt` is not an object")
    return str(_field(mqtt, "password"))


def _expect(answer: httpx.Response, action: str) -> dict[str, object]:
    try:
        raise_for_error(answer)
    except ApiCallError as exc:
        raise ProvisioningError(f"{action}: {exc}") from exc
    try:
        body = answer.json()
    except ValueError as exc:
        raise ProvisioningError(f"{action}: answer is not JSON") from exc
    if not isinstance(body, dict):
        raise ProvisioningError(f"{action}: answer is not a JSON object")
    return body


def _field(body: Mapping[str, object], name: str) -> object:
    if name not in body:
        raise ProvisioningError(f"API answer lacks `{name}`")
    return body[name]


def read_credentials(path: Path) -> dict[str, str]:
    try:
        data = orjson.loads(path.read_bytes())
    except (OSError, orjson.JSONDecodeError) as exc:
        raise ProvisioningError(f"cannot read credentials from {path}: {exc}") from exc
    if not isinstance(data, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in data.items()
    ):
        raise ProvisioningError(f"{path} must hold a JSON object of device id to password")
    return data


def write_credentials(path: Path, passwords: Mapping[str, str]) -> None:
    """Merge into an existing file, readable by its owner only: these are device secrets."""
    merged = read_credentials(path) if path.exists() else {}
    merged.update(passwords)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(orjson.dumps(merged, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS))
    tmp.replace(path)
