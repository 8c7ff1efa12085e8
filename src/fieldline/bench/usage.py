"""CPU and memory of each part of a benchmarked system, sampled in a background thread.

A part is a named group of processes (all of PostgreSQL's backends, say), found
again at every sample so that processes started later are counted. CPU is
reported as a percentage of one core over the measured window, memory as the
group's peak summed resident set.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import psutil

from fieldline.bench.report import Table

Finder = Callable[[], Iterable[psutil.Process]]


def tree(pid: int) -> Finder:
    """A process and all its descendants (PostgreSQL's postmaster and backends)."""

    def find() -> list[psutil.Process]:
        try:
            root = psutil.Process(pid)
            return [root, *root.children(recursive=True)]
        except psutil.NoSuchProcess:
            return []

    return find


def _children(parent: int, matches: Callable[[psutil.Process], bool]) -> Finder:
    def find() -> list[psutil.Process]:
        try:
            children = psutil.Process(parent).children()
        except psutil.NoSuchProcess:
            return []
        found = []
        for child in children:
            try:
                if matches(child):
                    found.append(child)
            except psutil.NoSuchProcess:
                continue
        return found

    return find


def named(parent: int, name: str) -> Finder:
    """The children of `parent` with this program name (`fieldline up`'s Mosquitto)."""
    return _children(parent, lambda child: child.name() == name)


def commanded(parent: int, argument: str) -> Finder:
    """The children of `parent` with `argument` on their command line (`up`'s ingest)."""
    return _children(parent, lambda child: argument in child.cmdline())


def pids(*numbers: int) -> Finder:
    def find() -> list[psutil.Process]:
        found = []
        for number in numbers:
            try:
                found.append(psutil.Process(number))
            except psutil.NoSuchProcess:
                continue
        return found

    return find


@dataclass
class _Part:
    name: str
    find: Finder
    # CPU seconds seen per pid so far (a process that exits keeps what it used).
    cpu: dict[int, float] = field(default_factory=dict)
    peak_rss: int = 0
    start_cpu: float = 0.0


class Usage:
    """Samples named process groups every `every` seconds between `start()` and `stop()`."""

    def __init__(self, every: float = 0.5) -> None:
        self._every = every
        self._parts: dict[str, _Part] = {}
        self._cache: dict[int, psutil.Process] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._started = 0.0
        self._elapsed = 0.0
        self._lock = threading.Lock()

    def watch(self, name: str, find: Finder) -> None:
        with self._lock:
            self._parts[name] = _Part(name, find)

    def unwatch(self, name: str) -> None:
        with self._lock:
            self._parts.pop(name, None)

    def start(self) -> None:
        """Begin a measured window (again, after an earlier `stop()`)."""
        self._stop = threading.Event()
        self._sample()
        for part in self._parts.values():
            part.start_cpu = sum(part.cpu.values())
            part.peak_rss = 0
        self._started = time.monotonic()
        self._thread = threading.Thread(target=self._run, name="bench-usage", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self._sample()
        self._elapsed = time.monotonic() - self._started

    def summary(self) -> dict[str, dict[str, float]]:
        """Per part: mean CPU % of one core over the window, and peak RSS in MiB."""
        elapsed = max(self._elapsed, 1e-9)
        return {
            part.name: {
                "cpu_percent": round(100 * (sum(part.cpu.values()) - part.start_cpu) / elapsed, 1),
                "peak_rss_mib": round(part.peak_rss / 2**20, 1),
            }
            for part in self._parts.values()
        }

    def table(self, title: str = "CPU and memory during the measured window") -> Table:
        table = Table(title, ["process", "CPU % of one core", "peak RSS MiB"])
        for name, numbers in self.summary().items():
            table.rows.append([name, numbers["cpu_percent"], numbers["peak_rss_mib"]])
        return table

    def _run(self) -> None:
        while not self._stop.wait(self._every):
            self._sample()

    def _sample(self) -> None:
        with self._lock:
            for part in self._parts.values():
                rss = 0
                for found in part.find():
                    process = self._cache.setdefault(found.pid, found)
                    try:
                        with process.oneshot():
                            times = process.cpu_times()
                            rss += process.memory_info().rss
                    except (psutil.NoSuchProcess, psutil.AccessDenied):
                        continue
                    part.cpu[process.pid] = times.user + times.system
                part.peak_rss = max(part.peak_rss, rss)
