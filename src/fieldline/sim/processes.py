"""Split a fleet across worker processes.

One event loop publishing through gmqtt tops out at some tens of thousands of
messages per second; the benchmark needs the load generator never to be the
bottleneck, so large fleets spread their devices over several cores.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import multiprocessing
import queue
import signal
import time
from multiprocessing.synchronize import Event as ProcessEvent
from typing import Any

from fieldline.sim.options import FleetOptions
from fieldline.sim.report import FleetProgress, ProgressCallback, SimulationReport

HALT_POLL_S = 0.2
QUEUE_POLL_S = 0.25


class WorkerFailed(RuntimeError):
    """A worker process died without handing back its report."""


async def run_in_processes(
    options: FleetOptions,
    *,
    passwords: dict[str, str] | None,
    stop: asyncio.Event,
    on_progress: ProgressCallback | None,
) -> SimulationReport:
    workers = min(options.processes, options.devices)
    # spawn, not fork: forking a process that runs an event loop copies its state.
    ctx = multiprocessing.get_context("spawn")
    events: Any = ctx.Queue()
    halt = ctx.Event()
    shards = [list(range(first, options.devices + 1, workers)) for first in range(1, workers + 1)]
    procs = [
        ctx.Process(
            target=_worker_main,
            args=(_WorkerJob(options, shard, passwords, number), halt, events),
            name=f"fieldline-sim-{number}",
            daemon=True,
        )
        for number, shard in enumerate(shards)
    ]
    started = time.monotonic()
    for proc in procs:
        proc.start()

    async def relay_stop() -> None:
        await stop.wait()
        halt.set()

    relay = asyncio.create_task(relay_stop(), name="relay stop")
    latest: dict[int, FleetProgress] = {}
    reports: dict[int, SimulationReport] = {}
    try:
        while len(reports) < workers:
            try:
                kind, number, payload = await asyncio.to_thread(events.get, True, QUEUE_POLL_S)
            except queue.Empty:
                for number, proc in enumerate(procs):
                    if number not in reports and proc.exitcode is not None:
                        raise WorkerFailed(
                            f"{proc.name} exited with code {proc.exitcode}"
                        ) from None
                continue
            if kind == "report":
                reports[number] = payload
            else:
                latest[number] = payload
                # Worker 0 paces the merged progress: one line per interval, not one per worker.
                if number == 0 and len(latest) == workers and on_progress is not None:
                    on_progress(_merge_progress(list(latest.values())))
    finally:
        halt.set()
        relay.cancel()
        for proc in procs:
            await asyncio.to_thread(proc.join, 10.0)
            if proc.is_alive():
                proc.kill()
    devices = sorted(
        (d for report in reports.values() for d in report.devices), key=lambda d: d.device_id
    )
    return SimulationReport(devices=tuple(devices), elapsed_s=time.monotonic() - started)


def _merge_progress(parts: list[FleetProgress]) -> FleetProgress:
    merged = parts[0]
    for part in parts[1:]:
        merged = dataclasses.replace(
            merged,
            elapsed_s=max(merged.elapsed_s, part.elapsed_s),
            devices=merged.devices + part.devices,
            devices_connected=merged.devices_connected + part.devices_connected,
            telemetry_ok=merged.telemetry_ok + part.telemetry_ok,
            bad=merged.bad + part.bad,
            duplicates=merged.duplicates + part.duplicates,
            connect_failures=merged.connect_failures + part.connect_failures,
            refused=merged.refused + part.refused,
            publish_rate=merged.publish_rate + part.publish_rate,
        )
    return merged


@dataclasses.dataclass(frozen=True, slots=True)
class _WorkerJob:
    options: FleetOptions
    numbers: list[int]
    passwords: dict[str, str] | None
    number: int


def _worker_main(job: _WorkerJob, halt: ProcessEvent, events: Any) -> None:
    # Ctrl-C reaches every process of the terminal's group; only the parent
    # decides when to stop, so the workers can still shut down cleanly.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    report = asyncio.run(_worker(job, halt, events))
    events.put(("report", job.number, report))


async def _worker(job: _WorkerJob, halt: ProcessEvent, events: Any) -> SimulationReport:
    from fieldline.sim.fleet import run_devices

    stop = asyncio.Event()

    async def watch_halt() -> None:
        # Polled: a thread blocked in halt.wait() would keep asyncio.run from exiting.
        while not halt.is_set():  # noqa: ASYNC110 -- a process Event has no async wait
            await asyncio.sleep(HALT_POLL_S)
        stop.set()

    watcher = asyncio.create_task(watch_halt(), name="watch halt")
    try:
        return await run_devices(
            job.options,
            numbers=job.numbers,
            passwords=job.passwords,
            stop=stop,
            on_progress=lambda progress: events.put(("progress", job.number, progress)),
        )
    finally:
        watcher.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await watcher
