"""Backups in a blob store: a folder per backup, named by when it was taken.

`<id>/database.dump` and `<id>/files.tar` are written first, `<id>/manifest.json` last:
a folder without a manifest is a backup that did not finish, never listed or restored.
A local store's backups are private to this user (0700 folders, 0600 files): they hold
the instance's secrets. Calls block, as the store's do.
"""

from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from fieldline.backup.manifest import DUMP, FILES, MANIFEST, Manifest
from fieldline.blobs.base import BlobNotFound, BlobStore, BlobStoreError
from fieldline.blobs.local import LocalStore
from fieldline.ops.datadir import private_directory
from fieldline.ops.files import PRIVATE_FILE

_ID = re.compile(r"^fieldline-(\d{8}T\d{6})\.(\d{3})Z$")


class BackupNotFound(LookupError):
    """No complete backup by this name (or none at all) in the store."""


class BackupCorrupt(RuntimeError):
    """A backup's files are not what its manifest says they are."""


@dataclass(frozen=True, slots=True)
class Listed:
    id: str
    taken_at: datetime
    complete: bool  # its manifest was written
    bytes: int


def new_id(now: datetime) -> str:
    """A backup's name: the time it was taken, to the millisecond, sortable as text."""
    now = now.astimezone(UTC)
    return f"fieldline-{now:%Y%m%dT%H%M%S}.{now.microsecond // 1000:03d}Z"


def taken_at(backup_id: str) -> datetime | None:
    found = _ID.match(backup_id)
    if found is None:
        return None
    moment = datetime.strptime(found[1], "%Y%m%dT%H%M%S").replace(tzinfo=UTC)
    return moment.replace(microsecond=int(found[2]) * 1000)


def listed(store: BlobStore) -> list[Listed]:
    """The store's backups, oldest first, finished or not; other files are ignored."""
    found: dict[str, list[tuple[str, int]]] = {}
    for blob in store.list():
        folder, _, name = blob.key.partition("/")
        if taken_at(folder) is not None and "/" not in name:
            found.setdefault(folder, []).append((name, blob.size))
    backups = []
    for folder, blobs in sorted(found.items()):
        moment = taken_at(folder)
        assert moment is not None
        names = {name for name, _ in blobs}
        complete = MANIFEST in names
        backups.append(Listed(folder, moment, complete, sum(size for _, size in blobs)))
    return backups


def manifest(store: BlobStore, backup_id: str | None = None) -> Manifest:
    """The manifest of `backup_id`, or of the newest complete backup."""
    if backup_id is None:
        complete = [backup for backup in listed(store) if backup.complete]
        if not complete:
            raise BackupNotFound(f"no backup in {store.url} yet")
        backup_id = complete[-1].id
    try:
        return Manifest.from_json(store.get_bytes(f"{backup_id}/{MANIFEST}"))
    except BlobNotFound as exc:
        raise BackupNotFound(f"no complete backup {backup_id} in {store.url}") from exc


def write(store: BlobStore, result: Manifest, dump_file: Path, files_tar: bytes) -> None:
    """Store a backup: its parts, then the manifest that makes it complete."""
    if isinstance(store, LocalStore):
        try:
            if not store.root.exists():  # one of ours; a directory given is left as it is
                private_directory(store.root)
            private_directory(store.root / result.id)
        except OSError as exc:
            raise BlobStoreError(f"cannot write to {store.url}: {exc}") from exc
    store.put_file(f"{result.id}/{DUMP}", dump_file)
    store.put_bytes(f"{result.id}/{FILES}", files_tar)
    store.put_bytes(f"{result.id}/{MANIFEST}", result.to_json())
    if isinstance(store, LocalStore):
        for name in (DUMP, FILES, MANIFEST):
            os.chmod(store.root / result.id / name, PRIVATE_FILE)


def fetch(store: BlobStore, result: Manifest, into: Path) -> tuple[Path, bytes]:
    """The backup's dump (copied into the directory `into`) and files, checked against the
    manifest's sizes and sha256: BackupCorrupt when they differ."""
    dump_file = into / DUMP
    store.get_file(f"{result.id}/{DUMP}", dump_file)
    files_tar = store.get_bytes(f"{result.id}/{FILES}")
    for part, size, sha256 in (
        (result.dump, *digest(dump_file)),
        (result.files, len(files_tar), hashlib.sha256(files_tar).hexdigest()),
    ):
        if (size, sha256) != (part.bytes, part.sha256):
            raise BackupCorrupt(
                f"{result.id}/{part.key} is corrupted: its sha256 is {sha256} ({size} bytes), "
                f"the manifest says {part.sha256} ({part.bytes} bytes)"
            )
    return dump_file, files_tar


def digest(path: Path) -> tuple[int, str]:
    """A file's size and sha256."""
    found = hashlib.sha256()
    with path.open("rb") as content:
        while chunk := content.read(1024 * 1024):
            found.update(chunk)
    return path.stat().st_size, found.hexdigest()


def delete(store: BlobStore, backup_id: str) -> None:
    """Remove a backup, its manifest first, so that a half-deleted one is not listed whole."""
    names = [blob.key for blob in store.list(f"{backup_id}/")]
    for key in sorted(names, key=lambda key: not key.endswith(f"/{MANIFEST}")):
        store.delete(key)
