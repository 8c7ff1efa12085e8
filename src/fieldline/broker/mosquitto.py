"""Mosquitto 2.x adapters: one fieldline starts and supervises, one it only administers.

How credentials reach Mosquitto. Mosquitto 2.0.11's dynamic-security plugin
reads PBKDF2-SHA512 hashes (password, salt, iterations) from its JSON file, but
its runtime commands (`createClient`, `setClientPassword`, `modifyClient`) take
only a plaintext password, and SIGHUP does not make it re-read the file. So:

- At start, ManagedMosquitto writes the whole plugin file from the registry,
  copying every device's hash verbatim: no plaintext is ever needed to boot.
- At runtime, `apply(device, password=...)` sends the plaintext (which the
  caller has at registration and rotation) in one dynsec command; Mosquitto
  re-hashes it and disconnects the client's live sessions, so the new secret
  works and the old one stops at once. Disabling (`disableClient`) and
  deleting (`deleteClient`) disconnect and refuse at once without any secret.
- A new or rotated secret applied *without* its plaintext: ManagedMosquitto
  rewrites the file from its registry mirror and restarts Mosquitto (correct,
  but every client reconnects; persistent sessions and retained messages
  survive through Mosquitto's persistence file). ExternalMosquitto cannot
  install it: it disables the client (the old secret stops at once) and
  raises BrokerError; a later apply with the plaintext re-enables it.

Each device client carries `fieldline-device secret=<fingerprint of its
registry hash>` as its text description, which lets a reconcile see a rotated
secret although the broker never reveals hashes, and is bound to its own id as
client id (`clientid`), so no device can connect as another or as one of
fieldline's own clients and take over its session.
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
import glob
import json
import logging
import os
import ssl
import subprocess
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from fieldline.broker import dynsec
from fieldline.broker.base import (
    BrokerEndpoint,
    BrokerError,
    Drift,
    ServiceAccount,
    refuse_reserved,
)
from fieldline.broker.control import LIST_TIMEOUT_SECONDS, DynsecControl, accepts_tls
from fieldline.broker.dynsec import ClientRecord, JsonObject
from fieldline.domain.devices import DeviceAccess
from fieldline.domain.topics import TopicScheme
from fieldline.ops.datadir import private_directory, write_private
from fieldline.ops.process import SupervisedProcess, stop_leftover
from fieldline.ops.sockets import accepts_connections, free_port, port_in_use
from fieldline.security.passwords import SecretHash, generate_secret, hash_secret

logger = logging.getLogger(__name__)

PLUGIN_NAME = "mosquitto_dynamic_security.so"
PLUGIN_CANDIDATES = (
    "/usr/lib/x86_64-linux-gnu",
    "/usr/lib/aarch64-linux-gnu",
    "/usr/lib/*-linux-gnu",
    "/usr/lib",
    "/usr/local/lib",
    "/usr/lib64",
    "/opt/homebrew/lib",
    "/usr/local/opt/mosquitto/lib",
)
# Device ids start with a letter or digit, so these can never collide with one.
ADMIN_USERNAME = "_fieldline-admin"
SERVICE_USERNAME = "_fieldline-service"
ACCOUNT_HASH_ITERATIONS = 1_000  # random 192-bit secrets; the service reconnects often
COMMANDS_PER_MESSAGE = 500
STARTUP_TIMEOUT = 15.0
# Mosquitto writes its persistence file when it receives SIGTERM; a big queue takes a while.
LEFTOVER_STOP_SECONDS = 30.0
# Errors that mean "already so": a leftover role on create, an absent client on delete.
CREATE_TOLERATES = frozenset({"Role already exists"})
DELETE_TOLERATES = frozenset({"Client not found", "Role not found"})


@dataclass(frozen=True, slots=True)
class TlsListener:
    """Mosquitto's MQTT-over-TLS listener and the PEM files it serves."""

    port: int  # 0 picks a free one
    cert_file: Path
    key_file: Path
    ca_file: Path


def find_dynsec_plugin() -> Path | None:
    """The dynamic-security plugin shipped with the installed Mosquitto, if any."""
    for directory in PLUGIN_CANDIDATES:
        for match in sorted(glob.glob(os.path.join(directory, PLUGIN_NAME))):
            return Path(match)
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        listing = subprocess.run(
            ["dpkg", "-L", "mosquitto"],  # noqa: S607 - dpkg from PATH on Debian-likes
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        ).stdout
        for line in listing.splitlines():
            if line.endswith("/" + PLUGIN_NAME) and os.path.exists(line):
                return Path(line)
    return None


class _DynsecBroker(abc.ABC):
    """Runtime device changes through the dynamic-security API (shared by both adapters)."""

    def __init__(
        self,
        *,
        host: str,
        port: int,
        topics: TopicScheme,
        timeout: float,
        tls_port: int | None = None,
        ca_file: Path | None = None,
    ) -> None:
        self._host = host
        self._port = port
        self._tls_port = tls_port
        self._ca_file = ca_file  # set: fieldline's own clients use TLS, verifying this CA
        self._topics = topics
        self._timeout = timeout
        self._control: DynsecControl | None = None
        self._known: dict[str, ClientRecord] = {}  # device clients as the broker holds them
        self._lock = asyncio.Lock()  # one change at a time keeps `_known` true

    @property
    def endpoint(self) -> BrokerEndpoint:
        return BrokerEndpoint(
            host=self._host, port=self._port, tls_port=self._tls_port, ca_file=self._ca_file
        )

    async def healthy(self) -> bool:
        control = self._control
        return control is not None and control.connected and await control.reachable()

    async def apply(self, device: DeviceAccess, *, password: str | None = None) -> None:
        refuse_reserved(device.device_id)
        if password is not None and not await asyncio.to_thread(
            SecretHash.decode(device.secret_hash).verify, password
        ):
            raise BrokerError(f"password does not match the secret hash of {device.device_id}")
        async with self._lock:
            await self._apply(device, password)

    async def remove(self, device_id: str) -> None:
        async with self._lock:
            await self._remove(device_id)

    async def _apply(self, device: DeviceAccess, password: str | None) -> None:
        fp = dynsec.fingerprint(device.secret_hash)
        current = self._known.get(device.device_id)
        installed = current.fingerprint if current is not None else None
        if password is None and device.enabled and installed != fp:
            await self._install_without_plaintext(device, current)
            return
        name, role = device.device_id, dynsec.device_role(device.device_id)
        commands: list[JsonObject] = []
        if current is None:
            installed = fp if password is not None else None
            commands.append(dynsec.create_role(role, dynsec.device_acls(self._topics, name)))
            commands.append(
                dynsec.create_device_client(
                    name, password=password, description=dynsec.describe(installed)
                )
            )
            if not device.enabled:
                commands.append(dynsec.disable_client(name))
        else:
            if password is not None and installed != fp:
                commands.append(
                    dynsec.set_secret(name, password=password, description=dynsec.describe(fp))
                )
                installed = fp
            if device.enabled != current.enabled:
                toggle = dynsec.enable_client if device.enabled else dynsec.disable_client
                commands.append(toggle(name))
        await self._execute(commands)
        self._known[name] = dynsec.device_record(
            name, fingerprint=installed, enabled=device.enabled
        )
        logger.info(
            "device applied to broker",
            extra={"device_id": name, "enabled": device.enabled, "commands": len(commands)},
        )

    async def _remove(self, device_id: str) -> None:
        await self._execute(
            [dynsec.delete_client(device_id), dynsec.delete_role(dynsec.device_role(device_id))],
            tolerate=DELETE_TOLERATES,
        )
        self._known.pop(device_id, None)
        logger.info("device removed from broker", extra={"device_id": device_id})

    @abc.abstractmethod
    async def _install_without_plaintext(
        self, device: DeviceAccess, current: ClientRecord | None
    ) -> None:
        """Install a secret known only as a hash: each kind of Mosquitto does it its own way."""

    async def _execute(
        self, commands: Sequence[JsonObject], *, tolerate: frozenset[str] = CREATE_TOLERATES
    ) -> None:
        if self._control is None:
            raise BrokerError("the broker is not started")
        for start in range(0, len(commands), COMMANDS_PER_MESSAGE):
            await self._control.execute(
                commands[start : start + COMMANDS_PER_MESSAGE], tolerate=tolerate
            )

    async def _close_control(self) -> None:
        if self._control is not None:
            await self._control.close()
            self._control = None


class ManagedMosquitto(_DynsecBroker):
    """A private Mosquitto fieldline configures, starts and keeps alive.

    With `tls`, Mosquitto also listens with TLS; with `plaintext=False` it listens
    with TLS only, the endpoint's `port` is the TLS port and fieldline's own
    clients use TLS too. One dynamic-security plugin (per_listener_settings
    false) authenticates and authorises on every listener alike.
    """

    def __init__(
        self,
        *,
        data_dir: Path,
        host: str,
        port: int,
        topics: TopicScheme,
        executable: str = "mosquitto",
        plugin: Path | None = None,
        timeout: float = 10.0,
        tls: TlsListener | None = None,
        plaintext: bool = True,
    ) -> None:
        if tls is None and not plaintext:
            raise ValueError("a broker without a plaintext listener needs a TLS listener")
        if tls is not None and plaintext and tls.port == port != 0:
            raise ValueError(f"the TLS and plaintext listeners cannot share port {port}")
        super().__init__(
            host=host,
            port=port if plaintext or tls is None else tls.port,
            topics=topics,
            timeout=timeout,
            tls_port=tls.port if tls is not None else None,
            ca_file=tls.ca_file if tls is not None and not plaintext else None,
        )
        self._tls = tls
        self._plaintext = plaintext
        self._dir = data_dir / "mosquitto"
        self._executable = executable
        self._plugin = plugin
        self._devices: dict[str, DeviceAccess] = {}
        self._accounts: dict[str, str] = {}
        self._process: SupervisedProcess | None = None

    @property
    def config_path(self) -> Path:
        return self._dir / "mosquitto.conf"

    @property
    def dynsec_path(self) -> Path:
        return self._dir / "dynamic-security.json"

    @property
    def pid_path(self) -> Path:
        return self._dir / "mosquitto.pid"

    @property
    def service(self) -> ServiceAccount:
        if not self._accounts:
            raise BrokerError("the broker is not started")
        return ServiceAccount(username=SERVICE_USERNAME, password=self._accounts["service"])

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    async def start(self, devices: Sequence[DeviceAccess]) -> Drift:
        plugin = self._plugin or find_dynsec_plugin()
        if plugin is None or not plugin.exists():
            raise BrokerError("mosquitto's dynamic-security plugin was not found")
        self._plugin = plugin
        private_directory(self._dir)
        self._accounts = _load_or_create_accounts(self._dir / "accounts.json")
        drift = self._drift_from_previous_run(devices)
        self._devices = {device.device_id: device for device in devices}
        self._choose_ports()
        await self._boot()
        logger.info(
            "managed mosquitto started",
            extra={
                "port": self._port,
                "tls_port": self._tls_port,
                "plaintext": self._plaintext,
                "devices": len(self._devices),
                "pid": self.pid,
                "missing": len(drift.missing),
                "unexpected": len(drift.unexpected),
                "changed": len(drift.changed),
            },
        )
        return drift

    async def stop(self) -> None:
        async with self._lock:
            await self._close_control()
            if self._process is not None:
                await self._process.stop()
                self._process = None

    async def apply(self, device: DeviceAccess, *, password: str | None = None) -> None:
        # The mirror is what a restart installs, so it changes even if the command fails.
        self._devices[device.device_id] = device
        await super().apply(device, password=password)

    async def remove(self, device_id: str) -> None:
        self._devices.pop(device_id, None)
        await super().remove(device_id)

    async def _install_without_plaintext(
        self, device: DeviceAccess, current: ClientRecord | None
    ) -> None:
        logger.warning(
            "secret changed without its plaintext; restarting mosquitto to load it",
            extra={"device_id": device.device_id},
        )
        await self._close_control()
        if self._process is not None:
            await self._process.stop()
            self._process = None
        await self._boot()

    def _choose_ports(self) -> None:
        """Settle port-0 settings on free ports (kept across restarts, as devices use them)."""
        if self._plaintext and self._port == 0:
            self._port = free_port(self._host)
        if self._tls_port == 0:
            tls_port = free_port(self._host)
            while self._plaintext and tls_port == self._port:
                tls_port = free_port(self._host)
            self._tls_port = tls_port
        if not self._plaintext:
            assert self._tls_port is not None
            self._port = self._tls_port

    def _listener_ports(self) -> list[tuple[int, str]]:
        ports = [(self._port, "--mqtt-port / FIELDLINE_MQTT_PORT")] if self._plaintext else []
        if self._tls_port is not None:
            ports.append((self._tls_port, "FIELDLINE_MQTT_TLS_PORT"))
        return ports

    async def _listening(self, port: int) -> bool:
        if port != self._tls_port:
            return await accepts_connections(self._host, port, within=0.5)
        # Only "does it speak TLS": the admin connection verifies the certificate next.
        probe = ssl.create_default_context()
        probe.check_hostname = False
        probe.verify_mode = ssl.CERT_NONE
        return await accepts_tls(self._host, port, probe, within=0.5)

    def _check_tls_files(self) -> None:
        """Refuse clearly here rather than watch Mosquitto exit on a missing or bad file."""
        tls = self._tls
        if tls is None:
            return
        for path in (tls.cert_file, tls.key_file, tls.ca_file):
            if not path.is_file():
                raise BrokerError(
                    f"the MQTT TLS listener needs {path}, which does not exist; "
                    "run `fieldline certs` to create a CA and a server certificate"
                )
        try:
            ssl.create_default_context(ssl.Purpose.CLIENT_AUTH).load_cert_chain(
                tls.cert_file, tls.key_file
            )
            ssl.create_default_context(cafile=str(tls.ca_file))
        except (OSError, ValueError) as exc:
            raise BrokerError(
                f"unusable TLS files {tls.cert_file}, {tls.key_file}, {tls.ca_file}: {exc}; "
                "run `fieldline certs` to issue a matching certificate and key"
            ) from exc

    async def _boot(self) -> None:
        # A Mosquitto of an earlier run that was killed (its own process survives where
        # no parent-death signal exists) holds the ports and the queue: it saves the
        # queue to the persistence file when stopped, and this one loads it.
        try:
            await asyncio.to_thread(
                stop_leftover,
                self.pid_path,
                marker=str(self.config_path),
                name="mosquitto",
                timeout=LEFTOVER_STOP_SECONDS,
            )
        except OSError as exc:  # e.g. it runs as another user
            raise BrokerError(f"cannot stop the mosquitto left running: {exc}") from exc
        # Otherwise mosquitto exits at once and whatever holds the port answers for it.
        for port, setting in self._listener_ports():
            if port_in_use(self._host, port):
                raise BrokerError(
                    f"port {port} on {self._host} is already in use; choose another with {setting}"
                )
        self._check_tls_files()
        self._write_files()
        process = SupervisedProcess(
            [self._executable, "-c", str(self.config_path)], name="mosquitto"
        )
        try:
            await process.start()
        except OSError as exc:
            raise BrokerError(f"cannot run {self._executable}: {exc}") from exc
        self._process = process
        deadline = time.monotonic() + STARTUP_TIMEOUT
        for port, _ in self._listener_ports():
            while not await self._listening(port):
                if time.monotonic() > deadline:
                    await process.stop()
                    self._process = None
                    raise BrokerError(f"mosquitto did not start listening on port {port}")
                await asyncio.sleep(0.05)
        control = DynsecControl.at(
            self.endpoint,
            username=ADMIN_USERNAME,
            password=self._accounts["admin"],
            timeout=self._timeout,
        )
        await control.connect()
        self._control = control
        self._known = {
            device.device_id: dynsec.device_record(
                device.device_id,
                fingerprint=dynsec.fingerprint(device.secret_hash),
                enabled=device.enabled,
            )
            for device in self._devices.values()
        }

    def _drift_from_previous_run(self, devices: Sequence[DeviceAccess]) -> Drift:
        try:
            previous = json.loads(self.dynsec_path.read_text())
        except FileNotFoundError:
            previous = {}
        except ValueError:
            logger.warning(
                "unreadable dynamic-security file replaced", extra={"path": str(self.dynsec_path)}
            )
            previous = {}
        return dynsec.compute_drift(
            topics=self._topics,
            devices=devices,
            clients=dynsec.parse_clients(previous.get("clients")),
            roles=dynsec.parse_roles(previous.get("roles")),
        )

    def _write_files(self) -> None:
        document = dynsec.config_document(
            topics=self._topics,
            devices=self._installable(self._devices.values()),
            admin_username=ADMIN_USERNAME,
            admin_hash=hash_secret(
                self._accounts["admin"], iterations=ACCOUNT_HASH_ITERATIONS
            ).encode(),
            service_username=SERVICE_USERNAME,
            service_hash=hash_secret(
                self._accounts["service"], iterations=ACCOUNT_HASH_ITERATIONS
            ).encode(),
        )
        write_private(self.dynsec_path, json.dumps(document, indent=1))
        write_private(self.config_path, self._config_text())

    def _installable(self, devices: Iterable[DeviceAccess]) -> Iterable[DeviceAccess]:
        for device in _claimable(devices):
            try:
                salt = SecretHash.decode(device.secret_hash).salt
            except ValueError:
                salt = b""
            if len(salt) == dynsec.MOSQUITTO_SALT_BYTES:
                yield device
            else:
                logger.error(
                    "device secret hash unusable by mosquitto; device refused",
                    extra={"device_id": device.device_id},
                )

    def _config_text(self) -> str:
        lines = [
            "# Written by fieldline at every start; edits are overwritten.",
            # One set of security settings (the dynsec plugin) for every listener.
            "per_listener_settings false",
            "allow_anonymous false",
            f"plugin {self._plugin}",
            f"plugin_opt_config_file {self.dynsec_path}",
            # Queued messages survive a restart: written every autosave_interval seconds
            # and when Mosquitto stops (SIGTERM, also fieldline's death: see ops/process.py).
            "persistence true",
            f"persistence_location {self._dir}/",
            "persistence_file mosquitto.db",
            "autosave_interval 60",
            # How the next start finds a Mosquitto left running by a crash of this one.
            f"pid_file {self.pid_path}",
            # Ingest may fall behind for a while (database down): queue, don't drop.
            "max_queued_messages 1000000",
            "max_queued_bytes 0",
            # No broker-side cap on unacknowledged QoS 1 deliveries: a subscriber
            # that acks in batches is limited by its own receive-maximum, not starved.
            "max_inflight_messages 0",
            "set_tcp_nodelay true",
            "log_dest stderr",  # unbuffered, unlike stdout into a pipe
            "log_type error",
            "log_type warning",
            "log_type notice",
            "log_type information",
            "connection_messages false",
            "log_timestamp false",
        ]
        if os.geteuid() == 0:
            # As root Mosquitto switches to user `mosquitto`, which cannot reach a data
            # directory under a root-only path (e.g. /root); deployments run fieldline
            # itself as an unprivileged user, where this line has no effect.
            lines.append("user root")
        # Listeners last: the lines after a `listener` line configure that listener.
        if self._plaintext:
            lines.append(f"listener {self._port} {self._host}")
        if self._tls is not None:
            lines += [
                f"listener {self._tls_port} {self._host}",
                f"cafile {self._tls.ca_file.absolute()}",
                f"certfile {self._tls.cert_file.absolute()}",
                f"keyfile {self._tls.key_file.absolute()}",
                "tls_version tlsv1.2",  # the minimum; TLS 1.3 is offered too
            ]
        return "\n".join(lines) + "\n"


class ExternalMosquitto(_DynsecBroker):
    """A Mosquitto 2.x fieldline does not run, administered through dynamic security."""

    def __init__(
        self,
        *,
        host: str,
        port: int,
        topics: TopicScheme,
        admin_username: str,
        admin_password: str,
        service: ServiceAccount,
        timeout: float = 10.0,
        tls_port: int | None = None,
        ca_file: Path | None = None,
    ) -> None:
        """`ca_file` set: the admin connection uses TLS to `tls_port`, verifying this CA."""
        super().__init__(
            host=host, port=port, topics=topics, timeout=timeout, tls_port=tls_port, ca_file=ca_file
        )
        self._admin_username = admin_username
        self._admin_password = admin_password
        self._service = service

    @property
    def service(self) -> ServiceAccount:
        return self._service

    async def start(self, devices: Sequence[DeviceAccess]) -> Drift:
        control = DynsecControl.at(
            self.endpoint,
            username=self._admin_username,
            password=self._admin_password,
            timeout=self._timeout,
        )
        await control.connect()
        self._control = control
        async with self._lock:
            return await self._reconcile(devices)

    async def stop(self) -> None:
        async with self._lock:
            await self._close_control()

    async def _reconcile(self, devices: Sequence[DeviceAccess]) -> Drift:
        assert self._control is not None
        listed = await self._control.execute(
            [dynsec.list_clients(), dynsec.list_roles()], answer_within=LIST_TIMEOUT_SECONDS
        )
        clients = dynsec.parse_clients(listed[0].data.get("clients"))
        roles = dynsec.parse_roles(listed[1].data.get("roles"))
        drift = dynsec.compute_drift(
            topics=self._topics, devices=devices, clients=clients, roles=roles
        )
        commands = self._service_commands(clients, roles)
        for device_id in drift.unexpected:
            commands += [
                dynsec.delete_client(device_id),
                dynsec.delete_role(dynsec.device_role(device_id)),
            ]
        known: dict[str, ClientRecord] = {}
        lacking_secret: list[str] = []
        for device in _claimable(devices):
            device_commands, record = self._fix(device, clients.get(device.device_id), roles)
            commands += device_commands
            known[device.device_id] = record
            if device.enabled and record.fingerprint != dynsec.fingerprint(device.secret_hash):
                lacking_secret.append(device.device_id)
        await self._execute(commands, tolerate=CREATE_TOLERATES | DELETE_TOLERATES)
        self._known = known
        if not drift.clean:
            logger.warning(
                "broker differed from the registry; fixed",
                extra={
                    "missing": list(drift.missing),
                    "unexpected": list(drift.unexpected),
                    "changed": list(drift.changed),
                },
            )
        if lacking_secret:
            logger.warning(
                "devices refused until their credentials are rotated (the broker "
                "only accepts plaintext passwords)",
                extra={"count": len(lacking_secret), "device_ids": lacking_secret[:20]},
            )
        return drift

    def _service_commands(
        self, clients: dict[str, ClientRecord], roles: dict[str, frozenset[dynsec.Acl]]
    ) -> list[JsonObject]:
        commands = dynsec.sync_role_commands(
            dynsec.SERVICE_ROLE, dynsec.service_acls(self._topics), roles.get(dynsec.SERVICE_ROLE)
        )
        record = clients.get(self._service.username)
        if record is None:
            commands.append(
                dynsec.create_client(
                    self._service.username,
                    password=self._service.password,
                    roles=[dynsec.SERVICE_ROLE],
                )
            )
        elif dynsec.SERVICE_ROLE not in record.roles:
            commands.append(dynsec.add_client_role(self._service.username, dynsec.SERVICE_ROLE))
        return commands

    def _fix(
        self,
        device: DeviceAccess,
        record: ClientRecord | None,
        roles: dict[str, frozenset[dynsec.Acl]],
    ) -> tuple[list[JsonObject], ClientRecord]:
        name, role = device.device_id, dynsec.device_role(device.device_id)
        commands = dynsec.sync_role_commands(
            role, dynsec.device_acls(self._topics, name), roles.get(role)
        )
        fp = dynsec.fingerprint(device.secret_hash)
        if record is None:
            commands.append(
                dynsec.create_device_client(name, password=None, description=dynsec.describe(None))
            )
            installed: str | None = None
        else:
            installed = record.fingerprint
            if role not in record.roles:
                commands.append(dynsec.add_client_role(name, role))
            if record.clientid != name:
                commands.append(dynsec.bind_client_id(name))
        # A stale fieldline secret must stop working; without the plaintext the
        # only way is to disable the client until the next rotation.
        stale = record is not None and record.managed and installed not in (None, fp)
        enabled = device.enabled and not stale
        currently_enabled = record.enabled if record is not None else True
        if enabled != currently_enabled:
            commands.append((dynsec.enable_client if enabled else dynsec.disable_client)(name))
        return commands, dynsec.device_record(name, fingerprint=installed, enabled=enabled)

    async def _install_without_plaintext(
        self, device: DeviceAccess, current: ClientRecord | None
    ) -> None:
        name, role = device.device_id, dynsec.device_role(device.device_id)
        if current is None:
            await self._execute(
                [
                    dynsec.create_role(role, dynsec.device_acls(self._topics, name)),
                    dynsec.create_device_client(
                        name, password=None, description=dynsec.describe(None)
                    ),
                    dynsec.disable_client(name),
                ]
            )
        elif current.enabled:
            await self._execute([dynsec.disable_client(name)])
        self._known[name] = dynsec.device_record(
            name, fingerprint=current.fingerprint if current else None, enabled=False
        )
        raise BrokerError(
            f"the external broker needs the plaintext password to install the new secret of "
            f"{name}; the device is refused until it is applied with one"
        )


def _claimable(devices: Iterable[DeviceAccess]) -> Iterable[DeviceAccess]:
    """The devices whose id no fieldline client uses; the others are never installed."""
    for device in devices:
        try:
            refuse_reserved(device.device_id)
        except BrokerError as exc:
            logger.error("device refused", extra={"device_id": device.device_id, "error": str(exc)})
            continue
        yield device


def _load_or_create_accounts(path: Path) -> dict[str, str]:
    """fieldline's own broker passwords, generated once and kept beside the broker's files."""
    try:
        stored = json.loads(path.read_text())
        if isinstance(stored, dict) and {"admin", "service"} <= stored.keys():
            return {"admin": str(stored["admin"]), "service": str(stored["service"])}
    except FileNotFoundError:
        pass
    accounts = {"admin": generate_secret(), "service": generate_secret()}
    write_private(path, json.dumps(accounts))
    return accounts
