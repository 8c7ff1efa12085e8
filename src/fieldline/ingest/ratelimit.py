"""Per-device uplink rate limits: a token bucket per device, kept as two floats.

The bucket is stored in its GCRA form (generic cell rate algorithm): instead of
a token count and a timestamp, each device has the time at which its bucket
would be full again. A message is allowed when taking one token keeps that time
within `burst` emission intervals of now. Beside it is the latest time the
device was judged at: a device's clock never runs backwards here, so a message
stamped earlier than the one before it (a buffered reading, a redelivery) takes
its token now instead of being refused as if it came from the past. The hot
path is one dict lookup and one store, and a device whose time has passed has
a full bucket: forgetting it changes nothing. Only a flood of more than
`max_devices` devices all sending at once makes the limiter forget buckets that
are not full, and then those nearest to full, so a device held at its limit
stays held.
"""

from __future__ import annotations

import heapq
from operator import itemgetter

from fieldline.config import Settings
from fieldline.domain.readings import Rejection, RejectReason

DEFAULT_MAX_DEVICES = 100_000
# Below this many tracked devices (about 2 MB) sweeping costs more than it saves:
# a fleet this small never sweeps, so its hot path is one dict lookup and one store.
MIN_SWEEP_AT = 16_384
# Float rounding of accumulated intervals must not turn the burst-th message away.
ROUNDING_SLACK = 1e-6


class DeviceRateLimiter:
    """`rate` messages/s per device on average, `burst` at once from a full bucket.

    Single-threaded by design (the ingest event loop): no locks. At most
    `max_devices` devices are tracked; refilled buckets are dropped whenever
    the count passes `MIN_SWEEP_AT` or twice what the last sweep kept.
    """

    __slots__ = ("_interval", "_limit", "_max_devices", "_state", "_sweep_at", "burst", "rate")

    def __init__(self, rate: float, burst: int, *, max_devices: int = DEFAULT_MAX_DEVICES) -> None:
        if not rate > 0:
            raise ValueError("rate must be positive")
        if burst < 1:
            raise ValueError("burst must be at least 1")
        if max_devices < 2:
            raise ValueError("max_devices must be at least 2")
        self.rate = rate
        self.burst = burst
        self._interval = 1.0 / rate
        self._limit = burst * self._interval + ROUNDING_SLACK * self._interval
        self._max_devices = max_devices
        self._sweep_at = min(MIN_SWEEP_AT, max_devices)
        # device id -> (time at which its bucket is full again, latest time it was judged at),
        # in seconds of the caller's clock
        self._state: dict[str, tuple[float, float]] = {}

    def __len__(self) -> int:
        """Devices currently tracked (those whose bucket is not known to be full)."""
        return len(self._state)

    def allow(self, device_id: str, now: float) -> bool:
        """Take one token for `device_id` at time `now` (seconds); False when it has none.

        A `now` earlier than the device's latest counts as that latest. A refused
        message takes nothing, so a device over its limit still gets `rate`
        messages/s through.
        """
        state = self._state.get(device_id)
        if state is None:
            if len(self._state) >= self._sweep_at:
                self._sweep(now)
            full_at = now
        else:
            full_at, latest = state
            now = max(now, latest)
            full_at = max(full_at, now)
        full_at += self._interval
        if full_at - now > self._limit:
            return False
        self._state[device_id] = (full_at, now)
        return True

    def rejection(self) -> Rejection:
        """Why a message this limiter refused is rejected."""
        return Rejection(
            RejectReason.RATE_LIMITED,
            f"over {self.rate:g} messages/s per device (burst {self.burst})",
        )

    def _sweep(self, now: float) -> None:
        """Forget full buckets; past the cap, also the fullest of the rest.

        Rebuilt rather than deleted from: a dict never shrinks its table on delete.
        """
        live = {device: state for device, state in self._state.items() if state[0] > now}
        keep = self._max_devices // 2
        if len(live) > keep:
            # A flood of devices, all recently active: those nearest to full lose the
            # least by being forgotten, and a device held at its limit is kept.
            live = dict(heapq.nlargest(keep, live.items(), key=itemgetter(1)))
        self._state = live
        self._sweep_at = min(self._max_devices, max(MIN_SWEEP_AT, 2 * len(live)))


def rate_limiter_from(settings: Settings) -> DeviceRateLimiter | None:
    """The limiter `settings` ask for; None when the limit is off (rate 0)."""
    if settings.device_rate_limit == 0:
        return None
    return DeviceRateLimiter(settings.device_rate_limit, settings.device_rate_burst)
