"""A blob store on S3 or any S3-compatible server (MinIO, Garage, Ceph, moto...).

pyarrow's S3 filesystem (the AWS SDK underneath) does the work: it already writes the
archive's Parquet, so there is no second S3 client to install. Credentials and region
come from the usual `AWS_*` variables (or an instance profile); an object appears
only when its upload completes, so readers never see half of one.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlsplit

from pyarrow import fs

from fieldline.blobs.base import Blob, BlobNotFound, BlobStoreError

_CHUNK = 8 * 1024 * 1024


class S3Store:
    def __init__(self, url: str, endpoint_url: str | None = None) -> None:
        parts = urlsplit(url)
        if parts.scheme != "s3" or not parts.netloc:
            raise BlobStoreError(f"not an S3 URL: {url!r} (s3://bucket/prefix)")
        self._url = url.rstrip("/")
        self._base = f"{parts.netloc}/{parts.path.strip('/')}".rstrip("/")
        options: dict[str, object] = {
            "region": os.environ.get("AWS_REGION")
            or os.environ.get("AWS_DEFAULT_REGION")
            or "us-east-1",
            # Fail in seconds, not after the SDK's minutes of retries, when it is down.
            "connect_timeout": 10,
            "request_timeout": 60,
            "retry_strategy": fs.AwsStandardS3RetryStrategy(max_attempts=3),
        }
        if endpoint_url:
            endpoint = urlsplit(endpoint_url)
            if not endpoint.scheme or not endpoint.netloc:
                raise BlobStoreError(
                    f"FIELDLINE_S3_ENDPOINT_URL {endpoint_url!r} is not a URL (http://host:port)"
                )
            options["endpoint_override"] = endpoint.netloc
            options["scheme"] = endpoint.scheme
            # S3-compatible servers rarely serve bucket names as host names.
            options["force_virtual_addressing"] = False
        try:
            self._fs = fs.S3FileSystem(**options)
        except Exception as exc:
            raise BlobStoreError(f"cannot use {url}: {exc}") from exc

    @property
    def url(self) -> str:
        return self._url

    def _path(self, key: str) -> str:
        if not key or key.startswith("/") or any(p in ("", ".", "..") for p in key.split("/")):
            raise BlobStoreError(f"invalid blob key {key!r}")
        return f"{self._base}/{key}"

    def put_file(self, key: str, source: Path) -> None:
        with source.open("rb") as local:
            self._write(key, lambda out: _copy(local, out))

    def put_bytes(self, key: str, data: bytes) -> None:
        self._write(key, lambda out: out.write(data))

    def _write(self, key: str, write: Callable[[Any], object]) -> None:
        try:
            with self._fs.open_output_stream(self._path(key), metadata={}) as out:
                write(out)
        except OSError as exc:
            raise BlobStoreError(f"cannot write {key} to {self.url}: {exc}") from exc

    def get_file(self, key: str, target: Path) -> None:
        try:
            with self._fs.open_input_stream(self._path(key)) as remote, target.open("wb") as out:
                _copy(remote, out)
        except FileNotFoundError as exc:
            raise BlobNotFound(f"no {key} in {self.url}") from exc
        except OSError as exc:
            raise BlobStoreError(f"cannot read {key} from {self.url}: {exc}") from exc

    def get_bytes(self, key: str) -> bytes:
        try:
            with self._fs.open_input_stream(self._path(key)) as remote:
                return bytes(remote.read())
        except FileNotFoundError as exc:
            raise BlobNotFound(f"no {key} in {self.url}") from exc
        except OSError as exc:
            raise BlobStoreError(f"cannot read {key} from {self.url}: {exc}") from exc

    def list(self, prefix: str = "") -> list[Blob]:
        try:
            infos = self._fs.get_file_info(fs.FileSelector(self._base, recursive=True))
        except FileNotFoundError:
            return []
        except OSError as exc:
            raise BlobStoreError(f"cannot list {self.url}: {exc}") from exc
        start = len(self._base) + 1
        found = [
            Blob(info.path[start:], info.size or 0)
            for info in infos
            if info.type == fs.FileType.File and info.path[start:].startswith(prefix)
        ]
        return sorted(found, key=lambda blob: blob.key)

    def delete(self, key: str) -> None:
        try:
            self._fs.delete_file(self._path(key))
        except FileNotFoundError:
            return
        except OSError as exc:
            raise BlobStoreError(f"cannot delete {key} from {self.url}: {exc}") from exc


class _Readable(Protocol):
    def read(self, size: int, /) -> bytes: ...


class _Writable(Protocol):
    def write(self, data: bytes, /) -> object: ...


def _copy(source: _Readable, target: _Writable) -> None:
    while chunk := source.read(_CHUNK):
        target.write(chunk)
