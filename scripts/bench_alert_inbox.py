"""The ingest writer's cost with no rules, rules on other metrics, and watched metrics (alert_inbox).

Run: uv run --frozen python scripts/bench_alert_inbox.py (needs /usr/lib/postgresql/15/bin).
"""
import asyncio, statistics, sys, tempfile, time, uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
import psycopg
from fieldline.domain.readings import Reading
from fieldline.storage.pgserver import LocalPostgres
from fieldline.storage.migrate import migrate
from fieldline.storage.writer import Batch, DeviceReadings, PartitionCache, write_batch

DEVICES, BATCH, ROUNDS = 1000, 2000, 40
METRICS = ("temperature", "humidity", "battery_voltage", "rssi")

def batch(n0):
    now = datetime.now(UTC)
    return Batch(telemetry=[DeviceReadings(f"d{(n0+i)%DEVICES}", now,
        [Reading(uuid.uuid4().hex, now - timedelta(microseconds=i), {m: float(i) for m in METRICS}, {})])
        for i in range(BATCH)])

CONFIGS = {}

async def interleaved(url):
    times = {label: [] for label in CONFIGS}
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        cache = PartitionCache()
        await write_batch(conn, batch(0), cache)
        for r in range(ROUNDS):
            for label, setup in CONFIGS.items():
                await conn.execute("DELETE FROM alert_rules"); await conn.execute("TRUNCATE alert_inbox")
                for sql in setup: await conn.execute(sql)
                b = batch(r)
                t = time.perf_counter(); await write_batch(conn, b, cache); times[label].append(time.perf_counter() - t)
    for label, ts in times.items():
        med = statistics.median(ts)
        print(f"{label:42s} median {med*1000:6.1f} ms/batch of {BATCH} msgs ({BATCH*4} points): {BATCH/med:7.0f} msg/s")

def rule(metric):
    return ("INSERT INTO alert_rules (name, severity, scope_kind, kind, metric, condition, created_by)"
            f" SELECT 'r'||g, 'info', 'fleet', 'threshold', '{metric}', '{{}}', 'b' FROM generate_series(1, 500) g")

async def main():
    tmp = Path(tempfile.mkdtemp())
    server = LocalPostgres(tmp / "pg", bin_dir=Path("/usr/lib/postgresql/15/bin")); server.start()
    try:
        url = server.url("postgres")
        await migrate(url)
        async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
            await conn.execute("INSERT INTO devices (device_id) SELECT 'd'||g FROM generate_series(0, %s) g", (DEVICES,))
        CONFIGS.update({
            "no rules": [],
            "1000 rules on other metrics (none watched)": [rule("co2"), rule("pm25")],
            "1000 rules on temperature (1 of 4 watched)": [rule("temperature"), rule("temperature")],
            "2000 rules on all 4 metrics (all watched)": [rule(m) for m in METRICS],
        })
        await interleaved(url)
    finally:
        server.stop()
asyncio.run(main())
