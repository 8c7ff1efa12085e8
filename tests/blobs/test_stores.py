"""Both blob stores keep the same contract: a local directory and a real S3-compatible
server (moto in server mode) on loopback."""

from __future__ import annotations

from pathlib import Path

import pytest

from fieldline.blobs.base import Blob, BlobNotFound, BlobStore, BlobStoreError
from fieldline.blobs.open import open_store
from tests.conftest import S3Server


@pytest.fixture(params=["local", "s3"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> BlobStore:
    if request.param == "local":
        return open_store(str(tmp_path / "store"))
    bucket = request.getfixturevalue("s3_bucket")
    server: S3Server = request.getfixturevalue("s3_server")
    return open_store(f"s3://{bucket}/some/prefix", s3_endpoint_url=server.endpoint_url)


def test_blobs_are_written_read_listed_and_deleted(store: BlobStore, tmp_path: Path) -> None:
    assert store.list() == []
    store.put_bytes("a/manifest.json", b'{"rows": 3}')
    big = tmp_path / "big.bin"
    big.write_bytes(bytes(range(256)) * 40_000)  # 10 MB: more than one upload chunk
    store.put_file("a/b/data.bin", big)
    store.put_bytes("z.txt", b"")

    assert store.list() == [
        Blob("a/b/data.bin", 10_240_000),
        Blob("a/manifest.json", 11),
        Blob("z.txt", 0),
    ]
    assert store.list("a/b/") == [Blob("a/b/data.bin", 10_240_000)]
    assert store.get_bytes("a/manifest.json") == b'{"rows": 3}'
    copy = tmp_path / "copy.bin"
    store.get_file("a/b/data.bin", copy)
    assert copy.read_bytes() == big.read_bytes()

    store.put_bytes("a/manifest.json", b'{"rows": 4}')  # replaced whole
    assert store.get_bytes("a/manifest.json") == b'{"rows": 4}'

    store.delete("a/b/data.bin")
    store.delete("a/b/data.bin")  # already gone: nothing happens
    assert [blob.key for blob in store.list()] == ["a/manifest.json", "z.txt"]
    with pytest.raises(BlobNotFound):
        store.get_bytes("a/b/data.bin")
    with pytest.raises(BlobNotFound):
        store.get_file("nothing", tmp_path / "nothing")


def test_keys_cannot_leave_the_store(store: BlobStore) -> None:
    for key in ("../escape", "a/../../b", "/absolute", "", "a//b"):
        with pytest.raises(BlobStoreError, match="invalid blob key"):
            store.put_bytes(key, b"x")


def test_an_unreachable_s3_store_is_a_clear_error(
    s3_bucket: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from fieldline.ops.sockets import free_port

    closed = f"http://127.0.0.1:{free_port('127.0.0.1')}"
    store = open_store(f"s3://{s3_bucket}/p", s3_endpoint_url=closed)
    with pytest.raises(BlobStoreError, match=f"cannot write x to s3://{s3_bucket}/p"):
        store.put_bytes("x", b"1")


def test_an_unknown_kind_of_store_is_refused() -> None:
    with pytest.raises(BlobStoreError, match="unsupported store"):
        open_store("ftp://host/dir")


def test_a_local_store_leaves_no_partial_blob_when_the_source_is_missing(tmp_path: Path) -> None:
    store = open_store(str(tmp_path / "store"))
    with pytest.raises((BlobStoreError, OSError)):
        store.put_file("a/b", tmp_path / "missing")
    assert store.list() == []
