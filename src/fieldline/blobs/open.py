"""The store a URL names: `s3://bucket/prefix` or a local directory."""

from __future__ import annotations

from pathlib import Path

from fieldline.blobs.base import BlobStore


def open_store(url: str, *, s3_endpoint_url: str | None = None) -> BlobStore:
    if url.startswith("s3://"):
        from fieldline.blobs.s3 import S3Store  # pyarrow's S3 only when asked for

        return S3Store(url, s3_endpoint_url)
    if "://" in url:
        from fieldline.blobs.base import BlobStoreError

        raise BlobStoreError(f"unsupported store {url!r}: a directory or s3://bucket/prefix")
    from fieldline.blobs.local import LocalStore

    return LocalStore(Path(url).expanduser())
