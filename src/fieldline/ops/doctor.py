"""`fieldline doctor`: what is wrong with this installation, and what to do about it.

Each check is a small function answering findings: ok, a warning, a problem (fieldline
will not work, or not for long) or skipped (what it needs failed first), each with one
line found and one line to fix. The checks look; they change nothing, except that an
embedded database with no `fieldline up` running is started for the while, as every
command that reads it does.
"""

from __future__ import annotations

import datetime as dt
import os
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from pydantic import ValidationError

from fieldline.config import BrokerKind, Settings, load_settings, settings_problems
from fieldline.ops import listeners
from fieldline.security.certs import key_matches, read_certificate

Clock = Callable[[], dt.datetime]

MIN_POSTGRES = 140000  # server_version_num of PostgreSQL 14
CERT_WARNING = dt.timedelta(days=30)
CERT_PROBLEM = dt.timedelta(days=3)
DISK_WARNING = 0.10  # free share of the disk
DISK_PROBLEM = 0.02
SKEW_WARNING = dt.timedelta(seconds=2)
SKEW_PROBLEM = dt.timedelta(seconds=30)
CONNECT_TIMEOUT_SECONDS = 5


class Status(StrEnum):
    OK = "ok"
    WARNING = "warning"
    PROBLEM = "problem"
    SKIPPED = "skipped"


@dataclass(frozen=True, slots=True)
class Finding:
    check: str
    status: Status
    found: str
    fix: str = ""


def _utc_now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def check_settings(**overrides: Any) -> tuple[list[Finding], Settings | None]:
    """Settings as every command loads them; refused ones (placeholders too) each a problem."""
    findings = []
    config_file = os.environ.get("FIELDLINE_CONFIG")
    if config_file and not Path(config_file).is_file():
        findings.append(
            Finding(
                "settings",
                Status.PROBLEM,
                f"FIELDLINE_CONFIG names {config_file}, which is not a file: none of its "
                "settings apply",
                "fix the path in FIELDLINE_CONFIG, or unset it",
            )
        )
    try:
        settings = load_settings(**overrides)
    except ValidationError as exc:
        fix = "set these as the settings table of the README says, then run doctor again"
        findings += [
            Finding("settings", Status.PROBLEM, problem, fix) for problem in settings_problems(exc)
        ]
        return findings, None
    topology = (
        "external PostgreSQL (DATABASE_URL)"
        if settings.database_url
        else f"embedded PostgreSQL in {settings.data_dir.resolve()}"
    )
    findings.append(
        Finding("settings", Status.OK, f"loaded: {topology}, broker {settings.broker.value}")
    )
    return findings, settings


async def diagnose(settings: Settings, *, clock: Clock = _utc_now) -> list[Finding]:
    """Every check after settings, in the order a person would fix them."""
    # Here, not at the top: those checks import this module's types.
    from fieldline.ops.doctor_servers import broker_checks, database_checks

    findings = list(check_ports(settings))
    database, registry = await database_checks(settings, clock=clock)
    findings += database
    findings += await broker_checks(settings, registry)
    findings += check_certificates(settings, now=clock())
    findings += check_disk(settings)
    return findings


# Ports ------------------------------------------------------------------------


def check_ports(settings: Settings) -> Iterator[Finding]:
    """The ports fieldline's own servers listen on: free, or held by fieldline itself."""
    wanted = [("HTTP", settings.http_host, settings.http_port, "FIELDLINE_HTTP_PORT")]
    if settings.broker != BrokerKind.EXTERNAL:  # else the port is the broker's own
        if settings.mqtt_plaintext:
            wanted.append(("MQTT", settings.mqtt_host, settings.mqtt_port, "FIELDLINE_MQTT_PORT"))
        if settings.mqtt_tls_port is not None:
            wanted.append(
                ("MQTT TLS", settings.mqtt_host, settings.mqtt_tls_port, "FIELDLINE_MQTT_TLS_PORT")
            )
    if settings.ops_port is not None:
        wanted.append(("ops", settings.http_host, settings.ops_port, "FIELDLINE_OPS_PORT"))
    for label, host, port, setting in wanted:
        yield _port_finding(f"{label} port", host, port, setting)


def _port_finding(check: str, host: str, port: int, setting: str) -> Finding:
    where = f"{host}:{port}"
    if port == 0:
        return Finding(check, Status.OK, f"{setting}=0: a free port is chosen at each start")
    error = listeners.bind_error(host, port)
    if error is None:
        return Finding(check, Status.OK, f"{where} is free")
    if not listeners.in_use(error):
        return Finding(
            check,
            Status.PROBLEM,
            f"cannot listen on {where}: {error.strerror or error}",
            f"choose a port above 1023 in {setting}, or an address of this machine"
            if port < 1024
            else "set the host to an address of this machine",
        )
    owners = listeners.owners(port)
    if owners is not None:
        others = [listener for listener in owners.listeners if not listener.fieldline]
        if others:
            other = others[0]
            return Finding(
                check,
                Status.PROBLEM,
                f"{where} is taken by pid {other.pid} ({other.command})",
                f"stop that process, or give fieldline another port with {setting}",
            )
        if owners.listeners and not owners.unseen:
            ours = owners.listeners[0]
            return Finding(
                check, Status.OK, f"{where} is fieldline's own (pid {ours.pid}: {ours.command})"
            )
    return Finding(
        check,
        Status.WARNING,
        f"{where} is in use by a process this user cannot see",
        f"`ss -ltnp 'sport = :{port}'` as root names it; unless it is fieldline, free the "
        f"port or set {setting}",
    )


# Certificates -----------------------------------------------------------------


def check_certificates(settings: Settings, *, now: dt.datetime) -> list[Finding]:
    """The MQTT TLS files: those configured, or those `fieldline certs` left in the data dir."""
    managed_tls = settings.broker != BrokerKind.EXTERNAL and settings.mqtt_tls_port is not None
    external_tls = settings.broker == BrokerKind.EXTERNAL and settings.broker_tls
    files = [
        ("TLS CA", settings.tls_ca_file, settings.mqtt_tls_ca_file, managed_tls or external_tls),
        ("TLS certificate", settings.tls_cert_file, settings.mqtt_tls_cert_file, managed_tls),
    ]
    findings: list[Finding] = []
    loaded: dict[str, x509.Certificate] = {}
    for label, path, configured, needed in files:
        if not path.exists():
            if configured is not None or needed:
                findings.append(
                    Finding(
                        label,
                        Status.PROBLEM,
                        f"{path} does not exist",
                        "create it with `fieldline certs` (or name the right file)",
                    )
                )
            continue
        try:
            cert = read_certificate(path)
        except (OSError, ValueError) as exc:
            findings.append(
                Finding(
                    label,
                    Status.PROBLEM,
                    f"cannot read {path}: {exc}",
                    "make it readable by fieldline's user, or write it again with "
                    "`fieldline certs`",
                )
            )
            continue
        loaded[label] = cert
        findings.append(_expiry(label, path, cert, now))
    server = loaded.get("TLS certificate")
    if server is not None:
        findings.append(_key_finding(settings.tls_key_file, server))
        ca = loaded.get("TLS CA")
        if ca is not None:
            try:
                server.verify_directly_issued_by(ca)
            except (InvalidSignature, ValueError, TypeError) as exc:
                findings.append(
                    Finding(
                        "TLS certificate",
                        Status.PROBLEM,
                        f"{settings.tls_cert_file} is not signed by {settings.tls_ca_file} "
                        f"({type(exc).__name__}): devices will refuse the broker",
                        "issue the server certificate again with `fieldline certs` (keeps the CA)",
                    )
                )
    if not findings:
        findings.append(Finding("TLS", Status.OK, "no MQTT TLS configured"))
    return findings


def _expiry(label: str, path: Path, cert: x509.Certificate, now: dt.datetime) -> Finding:
    expires = cert.not_valid_after_utc
    left = expires - now
    renew = (
        "`fieldline certs --force` makes a new CA (every device must be given its ca.crt)"
        if label == "TLS CA"
        else "`fieldline certs` issues a new one (the CA is kept), then restart the broker"
    )
    if left <= dt.timedelta(0):
        return Finding(label, Status.PROBLEM, f"{path} expired {expires:%Y-%m-%d}", renew)
    when = f"{path} expires {expires:%Y-%m-%d} (in {left.days} days)"
    if left < CERT_PROBLEM:
        return Finding(label, Status.PROBLEM, when, renew)
    if left < CERT_WARNING:
        return Finding(label, Status.WARNING, when, renew)
    if cert.not_valid_before_utc > now:
        return Finding(
            label,
            Status.PROBLEM,
            f"{path} is not valid before {cert.not_valid_before_utc:%Y-%m-%d %H:%M} UTC",
            "check this machine's clock, or issue it again with `fieldline certs`",
        )
    return Finding(label, Status.OK, when)


def _key_finding(key_file: Path, cert: x509.Certificate) -> Finding:
    fix = "write the pair again with `fieldline certs`, or name the matching key"
    try:
        matches = key_matches(cert, key_file)
    except (OSError, ValueError, TypeError) as exc:
        return Finding("TLS key", Status.PROBLEM, f"cannot read {key_file}: {exc}", fix)
    if not matches:
        return Finding(
            "TLS key", Status.PROBLEM, f"{key_file} is not the key of the TLS certificate", fix
        )
    return Finding("TLS key", Status.OK, f"{key_file} matches the certificate")


# Disk -------------------------------------------------------------------------


def check_disk(settings: Settings) -> list[Finding]:
    """Free space where fieldline writes: the data directory (and the embedded database)."""
    path = settings.data_dir.resolve()
    while not path.exists():  # not created yet: the disk it will be on
        path = path.parent
    try:
        usage = shutil.disk_usage(path)
    except OSError as exc:
        return [Finding("disk", Status.SKIPPED, f"cannot read the disk of {path}: {exc}")]
    free = usage.free / usage.total if usage.total else 1.0
    found = f"{path}: {free:.0%} free ({usage.free / 1e9:.1f} of {usage.total / 1e9:.1f} GB)"
    if not settings.database_url:
        found += ", the embedded database included"
    fix = "free space or grow the disk; shorter retention (FIELDLINE_RETENTION_*) slows growth"
    if free < DISK_PROBLEM:
        return [Finding("disk", Status.PROBLEM, found, fix)]
    if free < DISK_WARNING:
        return [Finding("disk", Status.WARNING, found, fix)]
    return [Finding("disk", Status.OK, found)]


def summary(findings: list[Finding]) -> dict[Status, int]:
    return {status: sum(f.status == status for f in findings) for status in Status}


def healthy(findings: list[Finding]) -> bool:
    return not any(f.status == Status.PROBLEM for f in findings)
