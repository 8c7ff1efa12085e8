"""`fieldline doctor`'s checks of the servers: PostgreSQL (reachable, version, migrations,
clock) and the MQTT broker (reachable, its dynamic-security admin, drift from the registry).
"""

from __future__ import annotations

import shutil
from typing import Any

import psycopg
from psycopg.rows import dict_row, tuple_row

from fieldline.config import BrokerKind, Settings
from fieldline.domain.devices import DeviceAccess
from fieldline.ops.doctor import (
    CONNECT_TIMEOUT_SECONDS,
    MIN_POSTGRES,
    SKEW_PROBLEM,
    SKEW_WARNING,
    Clock,
    Finding,
    Status,
)

Registry = list[DeviceAccess] | None  # None: the registry could not be read

# What the server said (its FATAL line) → what to change.
_CONNECT_FIXES = (
    ("password authentication failed", "check the password in {where}"),
    ("no pg_hba.conf entry", "allow this host and user in the server's pg_hba.conf"),
    ('role "', "create that user (`createuser --pwprompt`) or fix the user name in {where}"),
    ('database "', "create it (`createdb --owner USER NAME`) or fix its name in {where}"),
    ("connection refused", "start PostgreSQL, or fix the host and port in {where}"),
    ("timeout", "check the host in {where}, and that no firewall drops the port"),
)


async def database_checks(settings: Settings, *, clock: Clock) -> tuple[list[Finding], Registry]:
    """The database `up` would use, found as every command finds it."""
    from fieldline.storage.embedded import DatabaseUnavailable, database, server_directory
    from fieldline.storage.pgserver import LocalPostgres, PostgresServerError

    after = ["PostgreSQL version", "migrations", "clock"]
    if not settings.database_url:
        data_dir = settings.data_dir.resolve()
        if not LocalPostgres(server_directory(data_dir)).initialised:
            found = f"no embedded database in {data_dir} yet"
            fix = "`fieldline up` creates it there; or name the right --data-dir, or DATABASE_URL"
            return [Finding("database", Status.WARNING, found, fix), *_skipped(after)], None
    try:
        async with database(settings, command="doctor") as db:
            return await _on_database(db.url, db.label, settings, clock)
    except (DatabaseUnavailable, PostgresServerError, OSError) as exc:
        problem = Finding("database", Status.PROBLEM, str(exc), "see the database's log")
        return [problem, *_skipped(after)], None


def _skipped(checks: list[str], because: str = "the database is unreachable") -> list[Finding]:
    return [Finding(check, Status.SKIPPED, f"not checked: {because}") for check in checks]


async def _on_database(
    url: str, label: str, settings: Settings, clock: Clock
) -> tuple[list[Finding], Registry]:
    try:
        conn = await psycopg.AsyncConnection.connect(
            url, autocommit=True, connect_timeout=CONNECT_TIMEOUT_SECONDS, row_factory=dict_row
        )
    except psycopg.OperationalError as exc:
        problem = _connect_problem(settings, exc)
        return [problem, *_skipped(["PostgreSQL version", "migrations", "clock"])], None
    async with conn:
        findings = [Finding("database", Status.OK, f"reachable: {label}")]
        findings.append(await _version(conn))
        migrations = await _migrations(conn, settings)
        findings += [migrations, await _clock(conn, clock)]
        registry = None
        if migrations.status == Status.OK and _administered(settings):
            from fieldline.storage.devices import all_device_access

            registry = await all_device_access(conn)
    return findings, registry


def _connect_problem(settings: Settings, exc: psycopg.OperationalError) -> Finding:
    where = "DATABASE_URL" if settings.database_url else "the embedded database"
    text = " ".join(str(exc).split())
    # libpq: 'connection to server at "h", port 5432 failed: FATAL: <why>'
    marker = next((m for m in ("FATAL:", "failed:") if m in text), "")
    reason = text.rpartition(marker)[2].strip() if marker else text
    fix = next(
        (fix for key, fix in _CONNECT_FIXES if key in reason.lower()),
        "check {where}, and that PostgreSQL runs there",
    )
    return Finding("database", Status.PROBLEM, f"{where}: {reason}", fix.format(where=where))


async def _version(conn: psycopg.AsyncConnection[Any]) -> Finding:
    cursor = conn.cursor(row_factory=tuple_row)
    await cursor.execute(
        "SELECT current_setting('server_version_num')::int, current_setting('server_version')"
    )
    number, name = await cursor.fetchone() or (0, "unknown")
    if number < MIN_POSTGRES:
        return Finding(
            "PostgreSQL version",
            Status.PROBLEM,
            f"PostgreSQL {name} is older than 14",
            "upgrade PostgreSQL to 14 or later (pg_upgrade), then run `fieldline migrate`",
        )
    return Finding("PostgreSQL version", Status.OK, f"PostgreSQL {name}")


async def _migrations(conn: psycopg.AsyncConnection[Any], settings: Settings) -> Finding:
    from fieldline.storage.migrate import applied_versions, available_migrations

    known = {m.version: m for m in available_migrations()}
    applied = await applied_versions(conn)
    command = "fieldline migrate" + (
        "" if settings.database_url else f" --data-dir {settings.data_dir}"
    )
    if not applied:
        return Finding(
            "migrations",
            Status.WARNING,
            "the database is empty: no migration applied yet",
            f"`{command}` creates the schema (every fieldline process also does at its start)",
        )
    unknown = sorted(applied - known.keys())
    if unknown:
        return Finding(
            "migrations",
            Status.PROBLEM,
            f"the database has migration(s) {', '.join(f'{v:04d}' for v in unknown)} this "
            "fieldline does not know: a newer fieldline migrated it",
            "run the fieldline version that migrated it (no downgrades; to go back, restore "
            "a backup taken before the upgrade)",
        )
    missing = [m for version, m in sorted(known.items()) if version not in applied]
    if missing:
        names = ", ".join(f"{m.version:04d}_{m.name}" for m in missing)
        return Finding(
            "migrations",
            Status.PROBLEM,
            f"{len(missing)} migration(s) not applied: {names}",
            f"`{command}`",
        )
    last = max(known.values(), key=lambda m: m.version)
    return Finding("migrations", Status.OK, f"up to date ({last.version:04d}_{last.name})")


async def _clock(conn: psycopg.AsyncConnection[Any], clock: Clock) -> Finding:
    cursor = conn.cursor(row_factory=tuple_row)
    before = clock()
    await cursor.execute("SELECT clock_timestamp()")
    after = clock()
    row = await cursor.fetchone()
    if row is None:
        return Finding("clock", Status.SKIPPED, "not checked: the database gave no time")
    local = before + (after - before) / 2
    skew = row[0] - local
    size = abs(skew)
    side = "ahead of" if skew.total_seconds() > 0 else "behind"
    found = f"the database's clock is {size.total_seconds():.1f} s {side} this machine's"
    fix = (
        "synchronise both clocks (chrony or systemd-timesyncd): device timestamps and "
        "token expiry depend on them"
    )
    if size > SKEW_PROBLEM:
        return Finding("clock", Status.PROBLEM, found, fix)
    if size > SKEW_WARNING:
        return Finding("clock", Status.WARNING, found, fix)
    return Finding("clock", Status.OK, found)


def _administered(settings: Settings) -> bool:
    return settings.broker == BrokerKind.EXTERNAL and settings.broker_admin_username is not None


async def broker_checks(settings: Settings, registry: Registry) -> list[Finding]:
    if settings.broker == BrokerKind.EXTERNAL:
        return await _external_broker(settings, registry)
    return await _managed_broker(settings)


async def _external_broker(settings: Settings, registry: Registry) -> list[Finding]:
    from fieldline.broker.base import BrokerError
    from fieldline.broker.control import accepts_tls
    from fieldline.broker.drift import inspect
    from fieldline.broker.factory import external_client
    from fieldline.ops.sockets import accepts_connections

    admin = "dynamic security"
    try:
        endpoint, _ = external_client(settings)
        host, port, tls = endpoint.client_target()
    except (ValueError, BrokerError) as exc:
        return [Finding("broker", Status.PROBLEM, str(exc), "set it, then run doctor again")]
    kind = "MQTT over TLS" if tls else "MQTT"
    if tls is None:
        reachable = await accepts_connections(host, port, within=3.0)
    else:
        reachable = await accepts_tls(host, port, tls, within=3.0)
    if not reachable:
        return [
            Finding(
                "broker",
                Status.PROBLEM,
                f"nothing accepts {kind} at {host}:{port}",
                "start the broker (`systemctl start mosquitto`), or correct FIELDLINE_MQTT_HOST"
                " and FIELDLINE_MQTT_PORT" + (" / FIELDLINE_MQTT_TLS_PORT" if tls else ""),
            ),
            *_skipped([admin], "the broker is unreachable"),
        ]
    findings = [Finding("broker", Status.OK, f"accepts {kind} at {host}:{port}")]
    username = settings.broker_admin_username
    if username is None:
        findings.append(
            Finding(admin, Status.OK, "no admin account set: fieldline does not administer it")
        )
        return findings
    if registry is None:
        return [*findings, *_skipped([admin], "the device registry could not be read")]
    try:
        drift = await inspect(settings, registry)
    except BrokerError as exc:
        findings.append(
            Finding(
                admin,
                Status.PROBLEM,
                f"admin {username}: {exc}",
                "check FIELDLINE_BROKER_ADMIN_USERNAME and FIELDLINE_BROKER_ADMIN_PASSWORD "
                "against the broker's dynamic-security admin",
            )
        )
        return findings
    if drift.clean:
        findings.append(
            Finding(
                admin,
                Status.OK,
                f"admin {username} logs in; the broker matches the registry "
                f"({len(registry)} devices)",
            )
        )
        return findings
    counts = (
        f"{len(drift.missing)} missing, {len(drift.unexpected)} unknown to the registry, "
        f"{len(drift.changed)} different"
    )
    findings.append(
        Finding(
            admin,
            Status.PROBLEM,
            f"the broker's clients differ from the registry: {counts}",
            "`fieldline broker drift` lists them; `fieldline broker drift --fix` reconciles",
        )
    )
    return findings


async def _managed_broker(settings: Settings) -> list[Finding]:
    """The broker `fieldline up` runs: reachable while `up` runs, else startable."""
    from fieldline.broker.embedded import AmqttBroker
    from fieldline.broker.factory import create_broker
    from fieldline.broker.mosquitto import find_dynsec_plugin
    from fieldline.ops.datadir import running_holder
    from fieldline.ops.sockets import accepts_connections

    holder = running_holder(settings.data_dir.resolve())
    if holder is not None and holder.command == "up":
        if not settings.mqtt_plaintext or settings.mqtt_port == 0:
            return [Finding("broker", Status.SKIPPED, f"{holder} runs; its port is not known")]
        host = "127.0.0.1" if settings.mqtt_host in ("", "0.0.0.0", "::") else settings.mqtt_host  # noqa: S104
        where = f"{host}:{settings.mqtt_port}"
        if await accepts_connections(host, settings.mqtt_port, within=3.0):
            return [Finding("broker", Status.OK, f"{holder}'s broker accepts MQTT at {where}")]
        return [
            Finding(
                "broker",
                Status.PROBLEM,
                f"{holder} runs, but nothing accepts MQTT at {where}",
                "its log says why; restart it",
            )
        ]
    plugin = settings.mosquitto_dynsec_plugin or find_dynsec_plugin()
    installed = shutil.which(settings.mosquitto_bin) is not None and plugin is not None
    if settings.broker == BrokerKind.MOSQUITTO and not installed:
        return [
            Finding(
                "broker",
                Status.PROBLEM,
                f"FIELDLINE_BROKER=mosquitto, but {settings.mosquitto_bin} with its "
                "dynamic-security plugin is not installed",
                "apt-get install mosquitto (or FIELDLINE_BROKER=auto for the in-process broker)",
            )
        ]
    try:
        adapter = create_broker(settings)
    except ValueError as exc:
        return [Finding("broker", Status.PROBLEM, str(exc), "install Mosquitto, or unset TLS")]
    which = (
        "the in-process amqtt broker (Mosquitto is not installed)"
        if isinstance(adapter, AmqttBroker)
        else f"Mosquitto ({shutil.which(settings.mosquitto_bin)}, dynamic security {plugin})"
    )
    return [Finding("broker", Status.OK, f"not running; `fieldline up` starts {which}")]
