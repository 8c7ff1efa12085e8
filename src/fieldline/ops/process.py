"""A child process kept alive: restarted with capped, jittered backoff when it dies.

A child that logs as fieldline does (`fieldline ingest`) writes to fieldline's own
output; any other (Mosquitto) has its lines relayed through logging, so they land
in fieldline's structured logs instead of a terminal nobody watches.

With `lifeline`, the child's standard input is a pipe this process holds open and
never writes to: a child watching it sees end-of-file once fieldline is gone, even
killed, and stops instead of living on as an orphan.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import signal
import time
from collections.abc import Mapping, Sequence

logger = logging.getLogger(__name__)

MAX_BACKOFF_SECONDS = 30.0
# A child that ran this long before dying is considered to have been healthy,
# so the next crash starts the backoff from the beginning again.
STABLE_SECONDS = 30.0


class SupervisedProcess:
    def __init__(
        self,
        argv: Sequence[str],
        *,
        name: str,
        stop_timeout: float = 10.0,
        env: Mapping[str, str] | None = None,
        relay_output: bool = True,
        lifeline: bool = False,
    ) -> None:
        self._argv = list(argv)
        self._name = name
        self._stop_timeout = stop_timeout
        self._env = dict(env) if env is not None else None
        self._relay_output = relay_output
        self._lifeline = lifeline
        self._process: asyncio.subprocess.Process | None = None
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self._spawned = asyncio.Event()
        self.restarts = 0

    @property
    def pid(self) -> int | None:
        process = self._process
        return process.pid if process is not None and process.returncode is None else None

    async def start(self) -> None:
        if self._task is not None:
            return
        self._stopping = False
        self._spawned.clear()
        self._task = asyncio.create_task(self._supervise(), name=f"supervise-{self._name}")
        await self._spawned.wait()
        if self._task.done():
            self._task.result()  # surfaces a spawn failure (e.g. missing executable)

    async def stop(self) -> None:
        self._stopping = True
        process = self._process
        if process is not None and process.returncode is None:
            process.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(process.wait(), self._stop_timeout)
            except TimeoutError:
                logger.warning("child ignored SIGTERM; killing", extra={"child": self._name})
                process.kill()
                await process.wait()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _supervise(self) -> None:
        backoff = 0.5
        while not self._stopping:
            try:
                process = await asyncio.create_subprocess_exec(
                    *self._argv,
                    env=self._env,
                    stdin=asyncio.subprocess.PIPE if self._lifeline else asyncio.subprocess.DEVNULL,
                    stdout=asyncio.subprocess.PIPE if self._relay_output else None,
                    stderr=asyncio.subprocess.STDOUT if self._relay_output else None,
                    # Ctrl-C in a terminal signals the whole process group; fieldline
                    # stops its children itself, in order, after draining ingest.
                    start_new_session=True,
                )
            finally:
                self._spawned.set()
            self._process = process
            started = time.monotonic()
            logger.info("child started", extra={"child": self._name, "pid": process.pid})
            if self._relay_output:
                await self._relay(process)
            returncode = await process.wait()
            if self._stopping:
                logger.info("child stopped", extra={"child": self._name, "returncode": returncode})
                return
            if time.monotonic() - started > STABLE_SECONDS:
                backoff = 0.5
            delay = backoff * random.uniform(0.8, 1.2)  # noqa: S311 - jitter, not crypto
            logger.error(
                "child exited unexpectedly; restarting",
                extra={"child": self._name, "returncode": returncode, "delay_s": round(delay, 2)},
            )
            await asyncio.sleep(delay)
            backoff = min(backoff * 2, MAX_BACKOFF_SECONDS)
            self.restarts += 1

    async def _relay(self, process: asyncio.subprocess.Process) -> None:
        assert process.stdout is not None
        child_logger = logging.getLogger(f"{__name__}.{self._name}")
        while line := await process.stdout.readline():
            text = line.decode(errors="replace").rstrip()
            level = logging.WARNING if ("Error" in text or "Warning" in text) else logging.INFO
            child_logger.log(level, "%s", text, extra={"child": self._name, "pid": process.pid})
