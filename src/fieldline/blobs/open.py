"""The store a URL names: `s3://bucket/prefix` or a local directory."""

from __future__ import annotations

from pathlib import Path

from fieldline.blobs.base import BlobStore


def location(url: str) -> str:
    """`url` as stores name themselves and records keep it: `s3://bucket/prefix` without a
    trailing slash, a directory as an absolute path (relative to where the command ran)."""
    if "://" in url:
        return url.rstrip("/")
    return str(Path(url).expanduser().absolute())


def open_store(url: str, *, s3_endpoint_url: str | None = None) -> BlobStore:
    url = location(url)
    if url.startswith("s3://"):
        from fieldline.blobs.s3 import S3Store  # pyarrow's S3 only when asked for

        return S3Store(url, s3_endpoint_url)
    if "://" in url:
        from fieldline.blobs.base import BlobStoreError

        raise BlobStoreError(f"unsupported store {url!r}: a directory or s3://bucket/prefix")
    from fieldline.blobs.local import LocalStore

    return LocalStore(Path(url).expanduser())
