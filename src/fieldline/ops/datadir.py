"""The data directory: which fieldline process owns it, and files only its user reads.

`fieldline up` holds the lock file `fieldline.lock` for as long as it runs, and so
does a command that starts the embedded database itself (no `up` running). The
lock is an flock: the kernel releases it when its process ends, even by SIGKILL,
so a lock is never stale, and a running process is never mistaken for a crashed
one. The file names the holder (pid and command) for the others to report or
to borrow its database.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from dataclasses import dataclass
from pathlib import Path

from fieldline.ops.files import PRIVATE_FILE, write_atomically
from fieldline.ops.process import command_line, is_fieldline_command

LOCK_NAME = "fieldline.lock"
PRIVATE_DIR = 0o700


@dataclass(frozen=True, slots=True)
class Holder:
    """The process holding a data directory's lock, as its lock file says."""

    pid: int | None  # None while the holder has not written it yet
    command: str

    def __str__(self) -> str:
        return f"`fieldline {self.command}` (pid {self.pid})"


class DataDirLock:
    """The data directory's lock, held by this process until `release()`."""

    def __init__(self, fd: int, path: Path) -> None:
        self._fd = fd
        self.path = path

    @classmethod
    def acquire(cls, data_dir: Path, command: str) -> DataDirLock | Holder:
        """Take the lock for `command`; answer who holds it when another process does."""
        data_dir.mkdir(parents=True, exist_ok=True, mode=PRIVATE_DIR)
        path = data_dir / LOCK_NAME
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, PRIVATE_FILE)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return holder_of(path)
        except BaseException:
            os.close(fd)
            raise
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()} {command}\n".encode())
        return cls(fd, path)

    def release(self) -> None:
        with contextlib.suppress(OSError):
            os.ftruncate(self._fd, 0)  # the next reader sees no holder
        os.close(self._fd)


def running_holder(data_dir: Path) -> Holder | None:
    """The live process its lock file names, or None; creates nothing and takes no lock
    (a probe of the lock could refuse an `up` starting at that instant)."""
    lock_file = data_dir / LOCK_NAME
    if not lock_file.is_file():
        return None
    holder = holder_of(lock_file)
    if holder.pid is None:
        return None  # released (emptied), or being taken right now
    # A killed holder leaves its line behind, and its pid may be another process's now.
    args = command_line(holder.pid)
    return holder if args is not None and is_fieldline_command(args) else None


def holder_of(lock_file: Path) -> Holder:
    try:
        pid, _, command = lock_file.read_text().strip().partition(" ")
        return Holder(int(pid), command)
    except (OSError, ValueError):
        return Holder(None, "unknown")  # the holder took it an instant ago


def private_directory(path: Path) -> Path:
    """Create `path` (and its parents) readable by this user only; tighten an existing one."""
    path.mkdir(parents=True, exist_ok=True, mode=PRIVATE_DIR)
    if path.stat().st_uid == os.geteuid():
        path.chmod(path.stat().st_mode & PRIVATE_DIR)
    return path


def write_private(path: Path, text: str) -> None:
    """Write atomically with mode 0600 (the files that hold secrets or their hashes)."""
    write_atomically(path, text.encode(), mode=PRIVATE_FILE)


def private_file(path: Path) -> Path:
    """Create `path` empty if missing, and make it readable by its owner only."""
    os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, PRIVATE_FILE))
    path.chmod(PRIVATE_FILE)
    return path
