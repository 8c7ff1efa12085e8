"""Run a fleet of simulated devices: in this process, or split across several."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import random
import time
from collections.abc import Sequence

from fieldline.sim.device import DeviceIdentity, SimulatedDevice
from fieldline.sim.options import FleetOptions
from fieldline.sim.ota import OtaService
from fieldline.sim.provisioning import resolve_credentials
from fieldline.sim.report import ProgressCallback, SimulationReport, progress_of

log = logging.getLogger(__name__)


async def run_fleet(
    options: FleetOptions,
    *,
    stop: asyncio.Event | None = None,
    on_progress: ProgressCallback | None = None,
) -> SimulationReport:
    """Provision (if asked), connect every device, publish until `duration` or `stop`, disconnect.

    `on_progress` is called every `options.progress_interval` seconds with running totals.
    """
    passwords = await resolve_credentials(options)
    stop = stop or asyncio.Event()
    if options.processes > 1 and options.devices > 1:
        from fieldline.sim.processes import run_in_processes

        return await run_in_processes(
            options, passwords=passwords, stop=stop, on_progress=on_progress
        )
    return await run_devices(
        options,
        numbers=range(1, options.devices + 1),
        passwords=passwords,
        stop=stop,
        on_progress=on_progress,
    )


async def run_devices(
    options: FleetOptions,
    *,
    numbers: Sequence[int],
    passwords: dict[str, str] | None,
    stop: asyncio.Event,
    on_progress: ProgressCallback | None,
) -> SimulationReport:
    """Run the devices numbered `numbers` (of the whole fleet) in this event loop."""
    async with contextlib.AsyncExitStack() as resources:
        ota = None
        if options.api is not None:
            # Firmware updates need the API; its published keys are fetched once now.
            ota = await resources.enter_async_context(OtaService(options))
            await ota.fetch_keys()
        return await _run_devices(
            options,
            numbers=numbers,
            passwords=passwords,
            stop=stop,
            on_progress=on_progress,
            ota=ota,
        )


async def _run_devices(
    options: FleetOptions,
    *,
    numbers: Sequence[int],
    passwords: dict[str, str] | None,
    stop: asyncio.Event,
    on_progress: ProgressCallback | None,
    ota: OtaService | None,
) -> SimulationReport:
    seed = options.seed if options.seed is not None else random.randrange(2**32)  # noqa: S311
    devices = [
        SimulatedDevice(
            identity=_identity(options, n, passwords), options=options, seed=seed + n, ota=ota
        )
        for n in numbers
    ]
    gate = asyncio.Semaphore(options.connect_concurrency)
    started = time.monotonic()

    async def live(device: SimulatedDevice) -> None:
        if not await device.connect(stop=stop, gate=gate):
            return
        async with asyncio.TaskGroup() as tasks:
            running = [
                tasks.create_task(device.publish_telemetry(), name="telemetry"),
                tasks.create_task(device.publish_heartbeats(), name="heartbeat"),
                tasks.create_task(device.stay_connected(stop=stop, gate=gate), name="reconnect"),
            ]
            if device.drops_off:
                running.append(tasks.create_task(device.drop_off(), name="drop off"))
            await stop.wait()
            for task in running:
                task.cancel()
        await device.close(kill=options.kill)

    async def end_after_duration() -> None:
        # The clock starts once every device has tried to connect, so a large
        # fleet's connect storm does not eat into the publishing time.
        await asyncio.gather(*(d.attempted.wait() for d in devices))
        if options.duration is not None:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(options.duration):
                    await stop.wait()
            stop.set()

    async def report_progress(callback: ProgressCallback) -> None:
        previous_total, previous_at = 0, time.monotonic()
        while True:
            await asyncio.sleep(options.progress_interval)
            now = time.monotonic()
            snapshot = progress_of(
                (d.stats for d in devices), elapsed_s=now - started, publish_rate=0.0
            )
            total = snapshot.telemetry_total
            rate = (total - previous_total) / (now - previous_at)
            previous_total, previous_at = total, now
            callback(dataclasses.replace(snapshot, publish_rate=rate))

    log.info("simulated fleet starting", extra={"devices": len(devices), "rate": options.rate})
    async with asyncio.TaskGroup() as fleet:
        timer = fleet.create_task(end_after_duration(), name="duration")
        progress = (
            fleet.create_task(report_progress(on_progress), name="progress")
            if on_progress is not None
            else None
        )
        lives = [fleet.create_task(live(d), name=f"device {d.device_id}") for d in devices]
        await asyncio.gather(*lives)
        timer.cancel()
        if progress is not None:
            progress.cancel()
    report = SimulationReport(
        devices=tuple(d.stats.report() for d in devices), elapsed_s=time.monotonic() - started
    )
    log.info(
        "simulated fleet stopped",
        extra={"telemetry": report.telemetry_total, "elapsed_s": round(report.elapsed_s, 3)},
    )
    return report


def _identity(
    options: FleetOptions, number: int, passwords: dict[str, str] | None
) -> DeviceIdentity:
    device_id = options.device_id(number)
    # Claim to be the next device in the fleet; a lone device invents a neighbour.
    spoof_as = (
        options.device_id(number % options.devices + 1)
        if options.devices > 1
        else f"{options.prefix}-spoofed"
    )
    return DeviceIdentity(
        index=number - 1,
        device_id=device_id,
        password=passwords.get(device_id) if passwords is not None else None,
        spoof_as=spoof_as,
    )
