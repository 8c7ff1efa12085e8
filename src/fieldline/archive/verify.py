"""Re-read every file of an archive and check it against its manifest: the bytes'
sha256 and size, and the rows Parquet's own footer counts. A file the database recorded
as archived but the store does not hold is a problem too."""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow.parquet as pq

from fieldline.archive.catalog import Entry
from fieldline.archive.export import sha256_of
from fieldline.blobs.base import BlobStore, BlobStoreError


@dataclass(frozen=True, slots=True)
class Problem:
    key: str
    reason: str


@dataclass(slots=True)
class Checked:
    files: int = 0
    rows: int = 0
    bytes: int = 0
    problems: list[Problem] = field(default_factory=list)


def verify(
    store: BlobStore,
    found: list[Entry],
    recorded_keys: Iterable[str] = (),
    on_file: Callable[[Entry], None] = lambda _entry: None,
) -> Checked:
    checked = Checked()
    present = {entry.key for entry in found if entry.blob is not None}
    for key in sorted(set(recorded_keys) - present):
        checked.problems.append(Problem(key, "recorded as archived, missing from the archive"))
    with tempfile.TemporaryDirectory(prefix="fieldline-verify-") as scratch:
        local = Path(scratch) / "file.parquet"
        for entry in found:
            problem = _check(store, entry, local)
            checked.files += 1
            if problem:
                checked.problems.append(Problem(entry.key, problem))
            elif entry.manifest is not None:
                checked.rows += entry.manifest.rows
                checked.bytes += entry.manifest.bytes
            on_file(entry)
    return checked


def _check(store: BlobStore, entry: Entry, local: Path) -> str | None:
    if entry.blob is None:
        return "its manifest is there, the file is missing"
    if entry.manifest is None:
        return entry.problem or "no manifest"
    manifest = entry.manifest
    if manifest.file != entry.key:
        return f"the manifest describes {manifest.file}"
    try:
        store.get_file(entry.key, local)
    except BlobStoreError as exc:
        return f"cannot be read: {exc}"
    size = local.stat().st_size
    if size != manifest.bytes:
        return f"{size} bytes, the manifest says {manifest.bytes}"
    digest = sha256_of(local)
    if digest != manifest.sha256:
        return f"sha256 {digest}, the manifest says {manifest.sha256}"
    try:
        rows = pq.ParquetFile(local).metadata.num_rows
    except Exception as exc:  # pyarrow raises several kinds for a damaged file
        return f"not readable as Parquet: {exc}"
    if rows != manifest.rows:
        return f"{rows} rows, the manifest says {manifest.rows}"
    return None
