"""The MQTT TLS certificates' expiry as a metric, so that monitoring warns before devices
cannot connect: the worker reads the configured files every housekeeping round (a renewed
file is seen at the next round), and any worker may (no lock: reading files is cheap)."""

from __future__ import annotations

import contextlib
import logging
from datetime import datetime
from pathlib import Path
from typing import Any

from psycopg import AsyncConnection

from fieldline.security.certs import read_certificate
from fieldline.storage.db import Row
from fieldline.worker.jobs import HOUSEKEEPING, Job, WorkerContext

log = logging.getLogger(__name__)


def certificate_jobs(worker: WorkerContext) -> list[Job[Any]]:
    settings, gauge = worker.settings, worker.metrics.certificate_expiry
    # The server certificate the broker presents and the CA devices verify it with.
    files = list(dict.fromkeys([settings.tls_cert_file, settings.tls_ca_file]))

    async def read(_conn: AsyncConnection[Row], _now: datetime) -> dict[Path, datetime]:
        found: dict[Path, datetime] = {}
        for path in files:
            try:
                found[path] = read_certificate(path).not_valid_after_utc
            except FileNotFoundError:
                pass  # no TLS, or not `fieldline certs` yet: nothing to expire
            except (OSError, ValueError) as error:
                log.warning(
                    "certificate file unreadable", extra={"file": str(path), "error": str(error)}
                )
        for path in files:
            if path in found:
                gauge.labels(file=str(path)).set(found[path].timestamp())
            else:
                with contextlib.suppress(KeyError):  # never reported
                    gauge.remove(str(path))
        return found

    return [Job("certificates", HOUSEKEEPING, None, read)]
