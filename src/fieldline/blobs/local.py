"""A blob store in a local directory (or a mounted network share)."""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Callable
from pathlib import Path

from fieldline.blobs.base import Blob, BlobNotFound, BlobStoreError

# A blob being written is a hidden sibling until it is complete; listings skip them.
_PARTIAL = ".partial-"


class LocalStore:
    def __init__(self, root: Path) -> None:
        self.root = root

    @property
    def url(self) -> str:
        return str(self.root)

    def _path(self, key: str) -> Path:
        parts = key.split("/")
        if not key or any(part in ("", ".", "..") for part in parts):
            raise BlobStoreError(f"invalid blob key {key!r}")
        return self.root.joinpath(*parts)

    def put_file(self, key: str, source: Path) -> None:
        self._replace(key, lambda partial: shutil.copyfile(source, partial))

    def put_bytes(self, key: str, data: bytes) -> None:
        self._replace(key, lambda partial: partial.write_bytes(data))

    def _replace(self, key: str, write: Callable[[Path], object]) -> None:
        target = self._path(key)
        partial = target.with_name(f"{_PARTIAL}{uuid.uuid4().hex}-{target.name}")
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            write(partial)
            # Durable before it is visible: a crash leaves the old blob or the whole new one.
            with partial.open("rb") as written:
                os.fsync(written.fileno())
            os.replace(partial, target)
            directory = os.open(target.parent, os.O_RDONLY)
            try:
                os.fsync(directory)
            finally:
                os.close(directory)
        except OSError as exc:
            partial.unlink(missing_ok=True)
            raise BlobStoreError(f"cannot write {target}: {exc.strerror or exc}") from exc

    def get_file(self, key: str, target: Path) -> None:
        try:
            shutil.copyfile(self._path(key), target)
        except FileNotFoundError as exc:
            raise BlobNotFound(f"no {key} in {self.url}") from exc
        except OSError as exc:
            raise BlobStoreError(f"cannot read {key} in {self.url}: {exc}") from exc

    def get_bytes(self, key: str) -> bytes:
        try:
            return self._path(key).read_bytes()
        except FileNotFoundError as exc:
            raise BlobNotFound(f"no {key} in {self.url}") from exc
        except OSError as exc:
            raise BlobStoreError(f"cannot read {key} in {self.url}: {exc}") from exc

    def list(self, prefix: str = "") -> list[Blob]:
        if not self.root.is_dir():
            return []
        found = []
        for path in self.root.rglob("*"):
            if path.name.startswith(_PARTIAL) or not path.is_file():
                continue
            key = path.relative_to(self.root).as_posix()
            if key.startswith(prefix):
                found.append(Blob(key, path.stat().st_size))
        return sorted(found, key=lambda blob: blob.key)

    def delete(self, key: str) -> None:
        path = self._path(key)
        path.unlink(missing_ok=True)
        # Empty directories left behind would pile up (one per archived hour).
        for parent in path.parents:
            if parent == self.root or not parent.is_relative_to(self.root):
                break
            try:
                parent.rmdir()
            except OSError:
                break
