"""A child process kept alive: restarted with capped, jittered backoff when it dies.

A child that logs as fieldline does (`fieldline ingest`) writes to fieldline's own
output; any other (Mosquitto) has its lines relayed through logging, so they land
in fieldline's structured logs instead of a terminal nobody watches.

No child outlives fieldline, even when fieldline is killed: on Linux each child is
sent SIGTERM when fieldline dies (a parent-death signal), and with `lifeline` the
child's standard input is also a pipe this process holds open and never writes to,
so a child watching it sees end-of-file once fieldline is gone. What a child writes
is private to fieldline's user (umask 077).
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import functools
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from fieldline.ops.backoff import Backoff

logger = logging.getLogger(__name__)

MAX_BACKOFF_SECONDS = 30.0
# A child that ran this long before dying is considered to have been healthy,
# so the next crash starts the backoff from the beginning again.
STABLE_SECONDS = 30.0
PRIVATE_UMASK = 0o077
PR_SET_PDEATHSIG = 1  # from <sys/prctl.h>


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
        backoff = Backoff(cap=MAX_BACKOFF_SECONDS)
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
                    umask=PRIVATE_UMASK,
                    preexec_fn=_die_with_parent(),
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
                backoff.reset()
            delay = backoff.next()
            logger.error(
                "child exited unexpectedly; restarting",
                extra={"child": self._name, "returncode": returncode, "delay_s": round(delay, 2)},
            )
            await asyncio.sleep(delay)
            self.restarts += 1

    async def _relay(self, process: asyncio.subprocess.Process) -> None:
        assert process.stdout is not None
        child_logger = logging.getLogger(f"{__name__}.{self._name}")
        while line := await process.stdout.readline():
            text = line.decode(errors="replace").rstrip()
            level = logging.WARNING if ("Error" in text or "Warning" in text) else logging.INFO
            child_logger.log(level, "%s", text, extra={"child": self._name, "pid": process.pid})


@functools.cache
def _prctl() -> Callable[[int, int], int] | None:
    if not sys.platform.startswith("linux"):
        return None
    prctl: Callable[[int, int], int] = ctypes.CDLL(None, use_errno=True).prctl
    return prctl


def _die_with_parent() -> Callable[[], None] | None:
    """What the child runs before exec: SIGTERM me when my parent dies (Linux only).

    The signal is tied to the thread that forked, not the process: asyncio spawns
    from the event loop's thread, which lives as long as every fieldline command.
    Loaded here, in the parent, so the forked child only calls it.
    """
    prctl = _prctl()
    if prctl is None:
        return None
    parent = os.getpid()

    def arm() -> None:
        prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
        if os.getppid() != parent:  # the parent died before the signal was armed
            os._exit(1)

    return arm


def command_line(pid: int) -> list[str] | None:
    """The arguments of the live process `pid`; None when there is none (or a zombie).

    How fieldline makes sure a pid read from a pid file is still the server it
    started before signalling it: pids are reused.
    """
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except FileNotFoundError:
        if Path("/proc/self").exists():
            return None
        return _command_line_from_ps(pid)  # macOS and the BSDs have no /proc
    except OSError:
        return None
    # A zombie has no arguments left: it is gone, its parent has not reaped it yet.
    return [arg.decode(errors="replace") for arg in raw.split(b"\0") if arg] or None


def _command_line_from_ps(pid: int) -> list[str] | None:
    listed = subprocess.run(  # noqa: S603
        ["ps", "-ww", "-o", "command=", "-p", str(pid)],  # noqa: S607
        capture_output=True,
        text=True,
        check=False,
    )
    return listed.stdout.split() or None


def is_fieldline_command(args: list[str]) -> bool:
    """Whether these arguments run fieldline: `fieldline ...`, `python -m fieldline ...`
    or `uv run fieldline ...`."""
    for arg in args:  # the program, past launchers and their options
        name = Path(arg).name
        if name == "fieldline":
            return True
        if not (arg.startswith("-") or name.startswith("python") or name in ("uv", "run")):
            return False
    return False


def read_pid_file(path: Path) -> int | None:
    try:
        return int(path.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def stop_leftover(pid_file: Path, *, marker: str, name: str, timeout: float) -> None:
    """Stop a server an earlier, crashed run left behind, as its pid file names it.

    Only when that pid still runs with `marker` (its configuration file) among its
    arguments: SIGTERM lets it save its state; SIGKILL after `timeout` seconds.
    """
    pid = read_pid_file(pid_file)
    if pid is None:
        return
    if not _runs(pid, marker):
        pid_file.unlink(missing_ok=True)  # the process is gone, or the pid is another's now
        return
    logger.warning("stopping a server left running by an earlier run", extra=_about(name, pid))
    for sig in (signal.SIGTERM, signal.SIGKILL):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)
        deadline = time.monotonic() + timeout
        while _runs(pid, marker) and time.monotonic() < deadline:
            time.sleep(0.05)
        if not _runs(pid, marker):
            logger.info("server left running stopped", extra=_about(name, pid))
            return
        logger.error(
            "server left running ignored a signal", extra={**_about(name, pid), "signal": sig.name}
        )
    raise OSError(f"the {name} left running as pid {pid} does not stop")


def _runs(pid: int, marker: str) -> bool:
    args = command_line(pid)
    return args is not None and marker in args


def _about(name: str, pid: int) -> dict[str, object]:
    return {"server": name, "pid": pid}
