"""Register tens of thousands of devices in seconds, as the registry and the broker hold them.

Through the API each registration hashes a new secret (PBKDF2, 10,000
iterations) and sends Mosquitto a `createClient`, after which the plugin
rewrites its whole JSON file: quadratic in the fleet. Here the same rows go
into `devices` and `device_credentials` with COPY, and the same client and role
entries (`fieldline.broker.dynsec`, the builders fieldline's own managed broker
writes its file with) into the plugin's file before Mosquitto starts, so that
`fieldline api`'s start-up reconcile finds no drift.

All devices share one password (one hash, same salt): hashing 50,000 secrets
would take minutes of CPU. Each still connects with its own username and is
checked against its own entry, so the broker's per-CONNECT cost is unchanged.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence
from pathlib import Path

import psycopg

from fieldline.broker import dynsec
from fieldline.broker.mosquitto import ACCOUNT_HASH_ITERATIONS
from fieldline.config import Settings
from fieldline.domain.topics import TopicScheme
from fieldline.security.passwords import generate_secret, hash_secret
from fieldline.storage.migrate import migrate

# fieldline's production default (FIELDLINE_DEVICE_HASH_ITERATIONS).
DEVICE_HASH_ITERATIONS: int = Settings.model_fields["device_hash_iterations"].default


def device_ids(count: int, *, prefix: str = "conn") -> list[str]:
    return [f"{prefix}-{number:06d}" for number in range(count)]


async def seed_devices(
    *,
    database_url: str,
    dynsec_file: Path,
    devices: Sequence[str],
    iterations: int = DEVICE_HASH_ITERATIONS,
    topics: TopicScheme | None = None,
    service: tuple[str, str] | None = None,
) -> str:
    """Write `devices` into the registry and the plugin's file; answer their shared password.

    `service` (username, password): also the account ingest and worker use, which
    `fieldline api` creates at start; for a run without the API.
    """
    password = generate_secret()
    secret_hash = (await asyncio.to_thread(hash_secret, password, iterations=iterations)).encode()
    await migrate(database_url)
    async with await psycopg.AsyncConnection.connect(database_url) as conn:
        async with conn.cursor() as cur:
            async with cur.copy("COPY devices (device_id) FROM STDIN") as copy:
                for device_id in devices:
                    await copy.write_row((device_id,))
            async with cur.copy(
                "COPY device_credentials (device_id, secret_hash) FROM STDIN"
            ) as copy:
                for device_id in devices:
                    await copy.write_row((device_id, secret_hash))
        await conn.commit()
    await asyncio.to_thread(
        _add_to_plugin_file, dynsec_file, devices, secret_hash, topics or TopicScheme(), service
    )
    return password


def _add_to_plugin_file(
    path: Path,
    devices: Sequence[str],
    secret_hash: str,
    topics: TopicScheme,
    service: tuple[str, str] | None,
) -> None:
    document = json.loads(path.read_text())
    if service is not None:
        username, password = service
        account = hash_secret(password, iterations=ACCOUNT_HASH_ITERATIONS).encode()
        role = dynsec.SERVICE_ROLE
        document["clients"].append(dynsec.hashed_client_json(username, account, roles=[role]))
        document["roles"].append(dynsec.role_json(role, dynsec.service_acls(topics)))
    description = dynsec.describe(dynsec.fingerprint(secret_hash))
    for device_id in devices:
        role = dynsec.device_role(device_id)
        document["clients"].append(
            dynsec.hashed_client_json(
                device_id, secret_hash, roles=[role], description=description, clientid=device_id
            )
        )
        document["roles"].append(dynsec.role_json(role, dynsec.device_acls(topics, device_id)))
    path.write_text(json.dumps(document))
