"""The one atomic file write and the one retry schedule every part of fieldline uses."""

from __future__ import annotations

import asyncio
import random
import stat
from pathlib import Path

import pytest

from fieldline.ops.backoff import Backoff, sleep_unless
from fieldline.ops.files import write_atomically
from fieldline.ops.secrets import stored_secret


def test_a_write_replaces_the_file_whole_and_private(tmp_path: Path) -> None:
    path = tmp_path / "key.pem"
    path.write_bytes(b"old")
    path.chmod(0o644)
    assert write_atomically(path, b"new")
    assert path.read_bytes() == b"new"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert [p.name for p in tmp_path.iterdir()] == ["key.pem"]  # no temporary left


def test_an_exclusive_write_keeps_the_first_writers_file(tmp_path: Path) -> None:
    path = tmp_path / "secret"
    assert write_atomically(path, b"first", exclusive=True)
    assert not write_atomically(path, b"second", exclusive=True)
    assert path.read_bytes() == b"first"
    assert [p.name for p in tmp_path.iterdir()] == ["secret"]


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path: Path) -> None:
    path = tmp_path / "missing-dir" / "file"
    with pytest.raises(FileNotFoundError):
        write_atomically(path, b"x")
    target = tmp_path / "file"
    target.write_bytes(b"kept")
    with pytest.raises(TypeError):
        write_atomically(target, "not bytes")  # type: ignore[arg-type]
    assert target.read_bytes() == b"kept"
    assert [p.name for p in tmp_path.iterdir()] == ["file"]


def test_a_stored_secret_is_created_once_and_read_back(tmp_path: Path) -> None:
    first = stored_secret(tmp_path, "secret_key")
    assert len(first) >= 32
    assert stored_secret(tmp_path, "secret_key") == first
    assert stat.S_IMODE((tmp_path / "secrets" / "secret_key").stat().st_mode) == 0o600


def test_backoff_doubles_within_jitter_up_to_its_cap_and_resets() -> None:
    backoff = Backoff(cap=4.0, rng=random.Random(7))
    steps = [0.5, 1.0, 2.0, 4.0, 4.0, 4.0]
    for step in steps:
        assert step / 2 <= backoff.next() <= step
    backoff.reset()
    assert 0.25 <= backoff.next() <= 0.5


async def test_sleep_unless_returns_early_when_stopping() -> None:
    stopping = asyncio.Event()
    assert not await sleep_unless(stopping, 0.01)
    asyncio.get_running_loop().call_later(0.05, stopping.set)
    assert await sleep_unless(stopping, 60)
