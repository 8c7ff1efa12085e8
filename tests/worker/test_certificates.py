"""The worker reports when the MQTT TLS certificates expire, read from their files."""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from fieldline.config import Settings
from fieldline.ops.metrics import Metrics
from fieldline.security.certs import issue_certificates
from fieldline.storage.db import Pool, open_pool
from fieldline.worker.certificates import certificate_jobs
from fieldline.worker.service import Worker

METRIC = "fieldline_certificate_expiry_timestamp_seconds"


@pytest.fixture
async def pool(pg15_database_url: str) -> AsyncIterator[Pool]:
    pool = await open_pool(pg15_database_url, min_size=1, max_size=1)
    yield pool
    await pool.close()


def expiry(metrics: Metrics, path: Path) -> float | None:
    return metrics.registry.get_sample_value(METRIC, {"file": str(path)})


async def test_expiry_of_each_file_follows_renewal_and_removal(pool: Pool, tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path)
    metrics = Metrics()
    worker = Worker(settings=settings, pool=pool, metrics=metrics, features=[certificate_jobs])

    await worker.run_job("certificates")
    assert expiry(metrics, settings.tls_cert_file) is None  # no TLS set up: nothing reported

    year_ago = dt.datetime.now(dt.UTC) - dt.timedelta(days=365)
    old = issue_certificates(tmp_path / "certs", names=["localhost"], now=year_ago)
    await worker.run_job("certificates")
    assert expiry(metrics, settings.tls_cert_file) == old.server_expires.timestamp()
    ca_expiry = expiry(metrics, settings.tls_ca_file)
    assert ca_expiry is not None and ca_expiry > old.server_expires.timestamp()

    renewed = issue_certificates(tmp_path / "certs", names=["localhost"])
    await worker.run_job("certificates")
    assert renewed.server_expires > old.server_expires
    assert expiry(metrics, settings.tls_cert_file) == renewed.server_expires.timestamp()

    settings.tls_cert_file.unlink()
    settings.tls_ca_file.write_text("not a certificate\n")
    await worker.run_job("certificates")
    assert expiry(metrics, settings.tls_cert_file) is None
    assert expiry(metrics, settings.tls_ca_file) is None
    assert (
        metrics.registry.get_sample_value(
            "fieldline_worker_jobs_total", {"job": "certificates", "outcome": "done"}
        )
        == 4
    )
