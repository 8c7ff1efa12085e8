"""A simulated device's firmware update: fetch, download, verify, install (docs/ota.md).

`OtaService` is the HTTP side shared by the devices of one process (one connection
pool, one copy of the published keys); `run_update` is one device's update up to the
reboot, reporting each step as firmware would on `devices/{id}/ota/progress`.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import random
import urllib.parse
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from enum import StrEnum

import httpx
import orjson

from fieldline.domain.firmware import is_downgrade
from fieldline.sim import payloads
from fieldline.sim.download import DownloadFailed, DownloadStats, download_image
from fieldline.sim.firmware import FirmwareOffer, Keyring, OfferError, verify_image
from fieldline.sim.options import FleetOptions
from fieldline.sim.report import DeviceStats

log = logging.getLogger(__name__)

REQUEST_TIMEOUT_S = 30.0
KEYS_PATH = "/api/v1/firmware/keys"
PROGRESS_STEP = 10  # report `downloading` each time another 10% has arrived
FLASH_WRITE_ERROR = "flash write error"
_REQUIRED = ("device_model", "version", "binary_url", "sha256", "signature", "key_id")


class OtaState(StrEnum):
    DOWNLOADING = "downloading"
    DOWNLOADED = "downloaded"
    INSTALLING = "installing"
    INSTALLED = "installed"
    FAILED = "failed"


class Fate(StrEnum):
    """What happens to a device's installs, fixed per device so tests know beforehand."""

    HEALTHY = "healthy"
    FLASH_FAILS = "flash_fails"  # reports `failed` "flash write error" while installing
    ROLLS_BACK = "rolls_back"  # boots the new image, which fails: it comes back on the old


def _share(device_id: str, salt: str) -> float:
    """A stable number in [0, 100) for the device: its place in every percentage."""
    digest = hashlib.sha256(f"{salt}:{device_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 * 100


def fate_of(device_id: str, *, fail_percent: float, rollback_percent: float) -> Fate:
    """The first `fail_percent` of places fail, the next `rollback_percent` roll back."""
    place = _share(device_id, "ota-fate")
    if place < fail_percent:
        return Fate.FLASH_FAILS
    if place < fail_percent + rollback_percent:
        return Fate.ROLLS_BACK
    return Fate.HEALTHY


def link_drops(device_id: str, *, cut_percent: float) -> bool:
    """Whether the device's downloads are cut once midway (then resume)."""
    return _share(device_id, "ota-cut") < cut_percent


ProgressReport = Callable[[OtaState, int, str | None], None]


@dataclass(frozen=True, slots=True)
class DeviceSide:
    """Who is updating: what the update needs to know of the device."""

    device_id: str
    password: str | None
    model: str
    firmware_version: str


class OtaService:
    """HTTP access to the platform for a process's devices (an async context manager)."""

    def __init__(self, options: FleetOptions) -> None:
        assert options.api is not None  # only built with the API's address
        self._options = options
        self._http = httpx.AsyncClient(base_url=options.api.url, timeout=REQUEST_TIMEOUT_S)
        self._keyring: Keyring | None = None
        self._keys_lock = asyncio.Lock()

    async def __aenter__(self) -> OtaService:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._http.aclose()

    async def fetch_keys(self) -> Keyring | None:
        """Fetch the published keys (at start, and when an image names an unknown one)."""
        try:
            answer = await self._http.get(KEYS_PATH)
            answer.raise_for_status()
            self._keyring = Keyring.from_json(answer.json())
        except (httpx.HTTPError, ValueError) as exc:
            log.warning("cannot fetch the firmware keys", extra={"error": repr(exc)})
        return self._keyring

    async def keyring_with(self, key_id: str) -> Keyring | None:
        """The keys, fetched again once when `key_id` is not among them (a rotation)."""
        known = self._keyring
        if known is not None and key_id in known:
            return known
        async with self._keys_lock:
            # Another device may have fetched them meanwhile.
            if self._keyring is not known and self._keyring is not None:
                return self._keyring
            return await self.fetch_keys()

    async def offer(self, device: DeviceSide, message: Mapping[str, object]) -> FirmwareOffer:
        """The metadata the message carries, or fetched as `GET /firmware/{model}/{version}`."""
        if all(message.get(name) for name in _REQUIRED):
            return FirmwareOffer.from_json(message)
        model = str(message.get("device_model") or device.model)
        version = str(message.get("version") or "latest")
        path = f"/firmware/{_segment(model)}/{_segment(version)}"
        answer = await self._http.get(path, auth=_auth(device))
        if answer.status_code != 200:
            raise OfferError(f"metadata refused: HTTP {answer.status_code}")
        body = answer.json()
        if not isinstance(body, dict):
            raise OfferError("metadata is not a JSON object")
        return FirmwareOffer.from_json(body)

    async def download(
        self,
        device: DeviceSide,
        offer: FirmwareOffer,
        *,
        on_progress: Callable[[int], None],
        rng: random.Random,
    ) -> tuple[bytes, DownloadStats]:
        image = bytearray()
        cut = link_drops(device.device_id, cut_percent=self._options.ota_cut_percent)
        stats = await download_image(
            self._http,
            offer.binary_url,
            size=offer.size_bytes,
            into=image,
            auth=_auth(device),
            chunk_size=self._options.ota_chunk_bytes,
            chunk_delay=self._options.ota_download_delay,
            cut_at=offer.size_bytes // 2 if cut and offer.size_bytes > 1 else None,
            rng=rng,
            on_progress=on_progress,
        )
        return bytes(image), stats


def _segment(text: str) -> str:
    return urllib.parse.quote(text, safe="")


def _auth(device: DeviceSide) -> httpx.Auth | None:
    if device.password is None:
        return None
    return httpx.BasicAuth(device.device_id, device.password)


@dataclass(frozen=True, slots=True)
class UpdateOutcome:
    installed: bool  # then the device reboots into it
    resumes: int = 0  # download requests that continued after a cut


async def run_update(
    service: OtaService,
    device: DeviceSide,
    offer: FirmwareOffer,
    *,
    fate: Fate,
    install_seconds: float,
    report: ProgressReport,
    rng: random.Random,
) -> UpdateOutcome:
    """Download, verify and install `offer`; whether it was installed (then reboot).

    Every outcome is reported, a failure with the reason the operator reads.
    """
    if offer.device_model != device.model:
        report(OtaState.FAILED, 0, f"image for model {offer.device_model}, not {device.model}")
        return UpdateOutcome(installed=False)
    if not offer.allow_downgrade and is_downgrade(device.firmware_version, offer.version):
        report(OtaState.FAILED, 0, "downgrade refused")
        return UpdateOutcome(installed=False)
    reported = -PROGRESS_STEP

    def downloading(held: int) -> None:
        nonlocal reported
        percent = held * 100 // offer.size_bytes if offer.size_bytes else 100
        if percent >= reported + PROGRESS_STEP and percent < 100:
            reported = percent - percent % PROGRESS_STEP
            report(OtaState.DOWNLOADING, reported, None)

    downloading(0)
    try:
        image, stats = await service.download(device, offer, on_progress=downloading, rng=rng)
    except DownloadFailed as exc:
        report(OtaState.FAILED, max(reported, 0), str(exc))
        return UpdateOutcome(installed=False)
    failed = UpdateOutcome(installed=False, resumes=stats.resumes)
    report(OtaState.DOWNLOADED, 100, None)
    keyring = await service.keyring_with(offer.key_id)
    if keyring is None:
        report(OtaState.FAILED, 100, "cannot fetch the firmware keys")
        return failed
    problem = verify_image(offer, image, keyring)
    if problem is not None:
        report(OtaState.FAILED, 100, problem)
        return failed
    report(OtaState.INSTALLING, 100, None)
    await asyncio.sleep(install_seconds)
    if fate is Fate.FLASH_FAILS:
        report(OtaState.FAILED, 100, FLASH_WRITE_ERROR)
        return failed
    report(OtaState.INSTALLED, 100, None)
    return UpdateOutcome(installed=True, resumes=stats.resumes)


@dataclass(frozen=True, slots=True)
class UpdaterIdentity:
    device_id: str
    password: str | None


class UpdateAgent:
    """One device's firmware updates: which offers it takes, one at a time, and the reboot.

    The offer on `devices/{id}/ota` is retained, so it comes again at every connection
    until the platform clears it: an offer of the version running, or of an update tried
    already (failed, or rolled back), is not taken again.
    """

    __slots__ = (
        "_cancellable",
        "_fate",
        "_identity",
        "_options",
        "_publish_progress",
        "_reboot",
        "_rng",
        "_service",
        "_stats",
        "_task",
        "_tried",
    )

    def __init__(
        self,
        *,
        identity: UpdaterIdentity,
        options: FleetOptions,
        service: OtaService | None,
        stats: DeviceStats,
        rng: random.Random,
        publish_progress: Callable[[bytes], None],
        reboot: Callable[[str], Awaitable[None]],
    ) -> None:
        self._identity = identity
        self._options = options
        self._service = service
        self._stats = stats
        self._rng = rng
        self._publish_progress = publish_progress
        self._reboot = reboot
        self._fate = fate_of(
            identity.device_id,
            fail_percent=options.ota_fail_percent,
            rollback_percent=options.ota_rollback_percent,
        )
        self._task: asyncio.Task[None] | None = None
        self._tried: set[tuple[int | None, str]] = set()  # (rollout id, version)
        self._cancellable = False  # the update under way may stop: it is not installing

    def offered(self, payload: bytes) -> None:
        """A message on `devices/{id}/ota`: take the update it offers, or stop one cleared."""
        if not payload:
            # Cleared: the update is over or the rollout was cancelled. A download stops;
            # an install under way finishes (flash is being written).
            if self._task is not None and self._cancellable:
                self._task.cancel()
            return
        try:
            message = orjson.loads(payload)
        except orjson.JSONDecodeError:
            log.warning("undecodable firmware offer", extra={"device_id": self._identity.device_id})
            return
        if not isinstance(message, dict):
            return
        version, rollout_id = message.get("version"), message.get("rollout_id")
        if version == self._stats.firmware_version:
            return  # running it already: the retained offer again, after the reboot
        tried = (rollout_id if isinstance(rollout_id, int) else None, str(version))
        if tried in self._tried or (self._task is not None and not self._task.done()):
            return
        self._tried.add(tried)
        self._cancellable = True
        self._task = asyncio.get_running_loop().create_task(
            self._run(message), name=f"firmware update {self._identity.device_id}"
        )

    def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()

    async def _run(self, message: dict[str, object]) -> None:
        stats = self._stats
        rollout_id = message.get("rollout_id")
        version = str(message.get("version") or "")

        def report(state: OtaState, progress: int, error: str | None) -> None:
            if state is OtaState.INSTALLING:
                self._cancellable = False
            if state is OtaState.FAILED and error is not None:
                stats.update_failures[error] = stats.update_failures.get(error, 0) + 1
            self._publish_progress(
                payloads.ota_progress(
                    rollout_id=rollout_id if isinstance(rollout_id, int) else None,
                    version=version,
                    state=state.value,
                    progress=progress,
                    error=error,
                )
            )

        device = DeviceSide(
            device_id=self._identity.device_id,
            password=self._identity.password,
            model=self._options.device_type,
            firmware_version=stats.firmware_version,
        )
        if self._service is None:
            report(OtaState.FAILED, 0, "no API address to download from")
            return
        try:
            offer = await self._service.offer(device, message)
            rollout_id, version = offer.rollout_id, offer.version
            outcome = await run_update(
                self._service,
                device,
                offer,
                fate=self._fate,
                install_seconds=self._options.ota_install_seconds,
                report=report,
                rng=self._rng,
            )
        except (OfferError, httpx.HTTPError) as exc:
            report(OtaState.FAILED, 0, f"update metadata unusable: {exc}")
            return
        stats.download_resumes += outcome.resumes
        if not outcome.installed:
            return
        if self._fate is Fate.ROLLS_BACK:
            # The new image boots and fails its self-test: the bootloader goes back.
            stats.rollbacks += 1
            await self._reboot(stats.firmware_version)
        else:
            stats.updates_installed += 1
            await self._reboot(offer.version)
