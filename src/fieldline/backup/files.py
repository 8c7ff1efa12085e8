"""The data directory's files a backup must hold beside the database.

An instance cannot come back from its database alone: `secrets/` holds the key its API
tokens are signed with, and `certs/` the CA every device trusts (a new CA means
re-flashing the fleet). Everything else in the data directory is rebuilt at start:
the embedded server's files by the restore itself, the managed Mosquitto's from the
device registry. They travel as one tar; restored, they are private to this user
(0600 files in 0700 directories), as they were.
"""

from __future__ import annotations

import io
import tarfile
from dataclasses import dataclass
from pathlib import Path

from fieldline.ops.datadir import private_directory
from fieldline.ops.files import write_atomically

DIRECTORIES = ("secrets", "certs")


class FilesConflict(RuntimeError):
    """The data directory already holds other versions of the backup's files."""


@dataclass(frozen=True, slots=True)
class DataFiles:
    tar: bytes
    names: tuple[str, ...]  # relative to the data directory, `/`-separated


def collect(data_dir: Path) -> DataFiles:
    """The data directory's secrets and certificates as a tar (none yet: an empty one)."""
    buffer = io.BytesIO()
    names = []
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for directory in DIRECTORIES:
            root = data_dir / directory
            if not root.is_dir():
                continue
            for path in sorted(root.rglob("*")):
                if not path.is_file() or path.name.startswith("."):
                    continue  # temporary files of a write in progress
                name = path.relative_to(data_dir).as_posix()
                info = tar.gettarinfo(str(path), arcname=name)
                info.uid = info.gid = 0
                info.uname = info.gname = ""
                info.mode = 0o600
                with path.open("rb") as content:
                    tar.addfile(info, content)
                names.append(name)
    return DataFiles(buffer.getvalue(), tuple(names))


def read(data: bytes) -> dict[str, bytes]:
    """The files of a backup's tar, by relative name; only regular files in DIRECTORIES."""
    found = {}
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:") as tar:
        for member in tar.getmembers():
            parts = member.name.split("/")
            if (
                not member.isfile()
                or parts[0] not in DIRECTORIES
                or any(part in ("", ".", "..") for part in parts)
            ):
                raise ValueError(f"unexpected entry {member.name!r} in the backup's files")
            content = tar.extractfile(member)
            assert content is not None
            found[member.name] = content.read()
    return found


def conflicts(data_dir: Path, files: dict[str, bytes]) -> list[str]:
    """The files a restore would replace with different content."""
    return [
        name
        for name, content in files.items()
        if (data_dir / name).is_file() and (data_dir / name).read_bytes() != content
    ]


def restore(data_dir: Path, files: dict[str, bytes]) -> None:
    """Write the backup's files into `data_dir`, privately, each whole or not at all.

    The data directory itself is left as it is when it exists: run as root, the embedded
    server's user must still traverse it."""
    if not data_dir.exists():
        private_directory(data_dir)
    for name, content in files.items():
        path = data_dir / name
        for directory in reversed(path.relative_to(data_dir).parents[:-1]):
            private_directory(data_dir / directory)
        write_atomically(path, content)  # 0600
