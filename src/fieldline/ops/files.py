"""Files written whole or not at all, and durably: the one way fieldline writes a file that
must survive a crash (secrets, keys, broker configuration).

The data goes to a temporary file in the same directory, is fsynced, then renamed over the
target (or linked to it, when the first writer must win), and the directory is fsynced so
that the rename itself survives a power cut. A crash at any point leaves the old file or the
new one, never a truncated one: an empty secret read back after a crash would be worse than
none.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

PRIVATE_FILE = 0o600


def write_atomically(
    path: Path, data: bytes, *, mode: int = PRIVATE_FILE, exclusive: bool = False
) -> bool:
    """Write `data` to `path` with `mode`; with `exclusive`, only if `path` does not exist.

    Returns False when `exclusive` and another writer got there first (its file is kept).
    The temporary name carries the process id, so concurrent writers never share one.
    """
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, mode)  # the umask may have narrowed or an old file widened it
        if exclusive:
            try:
                os.link(tmp, path)
            except FileExistsError:
                return False
            finally:
                os.unlink(tmp)
        else:
            os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    _fsync_directory(path.parent)
    return True


def _fsync_directory(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
