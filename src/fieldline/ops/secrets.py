"""Secrets fieldline generates once and keeps in its data directory (mode 0600)."""

from __future__ import annotations

import secrets
from collections.abc import Callable
from pathlib import Path

from fieldline.ops.files import write_atomically


def stored_secret(data_dir: Path, name: str, *, nbytes: int = 32) -> str:
    """Read `data_dir/secrets/name`, creating it with a random value the first time."""
    folder = data_dir / "secrets"
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    path = folder / name
    try:
        return path.read_text().strip()
    except FileNotFoundError:
        value = secrets.token_urlsafe(nbytes)
    if not write_atomically(path, (value + "\n").encode(), exclusive=True):
        return path.read_text().strip()  # another process wrote it first
    return value


def stored_secret_file(data_dir: Path, name: str, make: Callable[[], bytes]) -> bytes:
    """Read `data_dir/secrets/name`, creating it from `make()` the first time (a key)."""
    folder = data_dir / "secrets"
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    path = folder / name
    try:
        return path.read_bytes()
    except FileNotFoundError:
        value = make()
    if not write_atomically(path, value, exclusive=True):
        return path.read_bytes()  # another process wrote it first
    return value
