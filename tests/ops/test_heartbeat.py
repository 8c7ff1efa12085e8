"""The heartbeat's vitals (ops/heartbeat.py): read from the process's own metrics by name,
so a renamed metric must fail here rather than show as missing on the Health page."""

from __future__ import annotations

from fieldline.ops.heartbeat import COUNTERS, LATENCY, History, read_registry, vitals
from fieldline.ops.metrics import Metrics


def test_every_metric_the_vitals_read_exists() -> None:
    metrics = Metrics()
    families = {family.name: family.type for family in metrics.registry.collect()}
    for sample in COUNTERS.values():
        assert families.get(sample.removesuffix("_total")) == "counter", sample
    assert families.get(LATENCY.removesuffix("_bucket")) == "histogram"
    history = History()
    history.add(read_registry(metrics.registry, 0.0))
    found = vitals(metrics, ["api", "ingest", "worker"], history, None, {})
    ingest, worker = found["ingest"], found["worker"]
    unlabelled = {k: v for k, v in (ingest | worker).items() if k != "certificates"}
    # A fresh registry's gauges read 0 (NaN is None by design); None means no such metric.
    missing = {k for k, v in unlabelled.items() if v is None}
    assert missing <= {"disk_free_bytes", "days_until_full"}, missing
    assert worker["certificates"] == {}


def test_rates_are_increases_over_each_window() -> None:
    metrics = Metrics()
    history = History()
    history.add(read_registry(metrics.registry, 0.0))
    metrics.messages_received.labels(kind="telemetry").inc(100)
    metrics.messages_rejected.labels(reason="invalid_json").inc(7)
    metrics.http_requests.labels(method="GET", route="/x", status="500").inc(3)
    metrics.http_requests.labels(method="GET", route="/x", status="200").inc(17)
    history.add(read_registry(metrics.registry, 400.0))  # past the 5-minute window's start
    metrics.messages_received.labels(kind="telemetry").inc(50)
    for _ in range(50):
        metrics.ingest_latency.observe(0.01)
    history.add(read_registry(metrics.registry, 500.0))
    rates = history.rates()
    assert rates["5m"]["received"] == 50 and rates["5m"]["seconds"] == 100.0
    assert rates["10m"]["received"] == 150 and rates["10m"]["rejected"] == 7
    assert rates["10m"]["requests"] == 20 and rates["10m"]["errors_5xx"] == 3
    assert rates["latency_p99_5m"] is not None and rates["latency_p99_5m"] <= 0.01
