"""The interface every blob store offers: named files under one root.

Archives and backups (and later firmware images) are written through it, so each works
the same on a local directory and on any S3-compatible store. Keys are relative paths
with `/` separators (`points/date=2026-12-07/hour=13/points.parquet`); a store never
shows a half-written blob under its key, so a reader sees either nothing or all of it.
Calls block: async callers run them in a thread.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Protocol


class BlobStoreError(RuntimeError):
    """The store could not be reached, refused the request, or is misconfigured."""


class BlobNotFound(BlobStoreError):
    """No blob under this key."""


@dataclass(frozen=True, slots=True)
class Blob:
    key: str
    size: int


class BlobStore(Protocol):
    @property
    def url(self) -> str:
        """Where the store is, for messages and records (`/var/backups/fl`, `s3://b/p`)."""
        ...

    def put_file(self, key: str, source: Path) -> None:
        """Copy the local file `source` to `key`, replacing what was there, all at once."""
        ...

    def put_bytes(self, key: str, data: bytes) -> None:
        """Write `data` to `key`, replacing what was there, all at once."""
        ...

    def get_file(self, key: str, target: Path) -> None:
        """Copy `key` to the local file `target`; BlobNotFound when absent."""
        ...

    def get_bytes(self, key: str) -> bytes:
        """The whole of `key` (small blobs: manifests); BlobNotFound when absent."""
        ...

    def list(self, prefix: str = "") -> list[Blob]:
        """Every blob whose key starts with `prefix`, recursively, sorted by key."""
        ...

    def delete(self, key: str) -> None:
        """Remove `key`; nothing happens when it is absent."""
        ...
