"""What an archive holds, read from its manifests: the store, not the database, is the
truth here, so an archive can be listed, checked and imported by a new instance."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from fieldline.archive import layout
from fieldline.archive.layout import Manifest
from fieldline.blobs.base import Blob, BlobStore


@dataclass(frozen=True, slots=True)
class Entry:
    """A file of the archive and its manifest (None when the manifest is missing or bad)."""

    kind: str
    start: datetime
    key: str
    blob: Blob | None  # None: a manifest without its file
    manifest: Manifest | None
    problem: str | None = None  # why the manifest could not be read


def entries(
    store: BlobStore, since: datetime | None = None, until: datetime | None = None
) -> list[Entry]:
    """Every file of the archive starting in [since, until), with its manifest, by start."""
    files: dict[tuple[str, datetime], Blob] = {}
    manifests: dict[tuple[str, datetime], Blob] = {}
    for listed in store.list():
        found = layout.start_of(listed.key)
        if found is None or not _within(found[1], since, until):
            continue
        if listed.key.endswith("/" + layout.MANIFEST):
            manifests[found] = listed
        elif listed.key.endswith(".parquet"):
            files[found] = listed
    result = []
    for kind, start in sorted(files.keys() | manifests.keys(), key=lambda k: (k[1], k[0])):
        blob = files.get((kind, start))
        named = layout.points_key if kind == "points" else layout.daily_key
        key = blob.key if blob else named(start)
        manifest, problem = None, None
        if (kind, start) in manifests:
            try:
                manifest = Manifest.from_json(store.get_bytes(manifests[kind, start].key))
            except ValueError as exc:
                problem = str(exc)
        else:
            problem = "no manifest beside the file"
        result.append(Entry(kind, start, key, blob, manifest, problem))
    return result


def _within(start: datetime, since: datetime | None, until: datetime | None) -> bool:
    return (since is None or start >= since) and (until is None or start < until)
