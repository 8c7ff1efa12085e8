"""Capped, jittered exponential backoff: how every retry loop in fieldline waits.

Delays start at `start` seconds and double up to `cap`; each is drawn uniformly from the
upper half of the current step ("equal jitter"), so that processes which failed together
(every device after a broker restart, every component after a reboot) do not retry in step,
while none waits much less than the schedule. After a success, `reset()`.
"""

from __future__ import annotations

import asyncio
import random
from dataclasses import dataclass, field


@dataclass(slots=True)
class Backoff:
    cap: float
    start: float = 0.5
    rng: random.Random = field(default_factory=random.Random, repr=False)
    _step: float = field(init=False)

    def __post_init__(self) -> None:
        self._step = self.start

    def next(self) -> float:
        """The delay before the next attempt; each call moves one step further."""
        delay = self._step * self.rng.uniform(0.5, 1.0)
        self._step = min(self._step * 2, self.cap)
        return delay

    def reset(self) -> None:
        self._step = self.start


async def sleep_unless(stopping: asyncio.Event, seconds: float) -> bool:
    """Wait `seconds`, or less if `stopping` is set meanwhile; whether it is set."""
    try:
        async with asyncio.timeout(seconds):
            await stopping.wait()
    except TimeoutError:
        return False
    return True
