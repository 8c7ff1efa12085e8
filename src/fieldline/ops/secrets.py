"""Secrets fieldline generates once and keeps in its data directory (mode 0600)."""

from __future__ import annotations

import os
import secrets
from pathlib import Path


def stored_secret(data_dir: Path, name: str, *, nbytes: int = 32) -> str:
    """Read `data_dir/secrets/name`, creating it with a random value the first time."""
    folder = data_dir / "secrets"
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    path = folder / name
    try:
        return path.read_text().strip()
    except FileNotFoundError:
        value = secrets.token_urlsafe(nbytes)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:  # another process wrote it first
        return path.read_text().strip()
    with os.fdopen(fd, "w") as handle:
        handle.write(value + "\n")
    return value
