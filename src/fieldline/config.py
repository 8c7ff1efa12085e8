"""fieldline's one Settings object, loaded at the entry point and passed down.

Every field here is a documented row in the README's settings table; a test
fails when one is missing there.
"""

from __future__ import annotations

import functools
import ipaddress
import itertools
import os
from enum import StrEnum
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from fieldline.domain.topics import TopicScheme

PLACEHOLDER_SECRETS = frozenset(
    {
        "changeme",
        "change-me",
        "change_me",
        "changethis",
        "secret",
        "password",
        "admin",
        "xxx",
        "placeholder",
        "your-secret-key",
        "please-change",
        "default",
        "example",
        "test",
        "todo",
    }
)
MIN_SECRET_KEY_LENGTH = 32
# Also refused by broker/factory.py when `auto` finds no Mosquitto, which Settings cannot know.
AMQTT_HAS_NO_TLS = (
    "FIELDLINE_MQTT_TLS_PORT needs Mosquitto (apt-get install mosquitto); "
    "the in-process amqtt broker has no TLS listener"
)


class BrokerKind(StrEnum):
    AUTO = "auto"
    MOSQUITTO = "mosquitto"
    AMQTT = "amqtt"
    EXTERNAL = "external"


class LogFormat(StrEnum):
    AUTO = "auto"
    JSON = "json"
    CONSOLE = "console"


def _refuse_placeholder(value: SecretStr | None, name: str) -> None:
    if value is None:
        return
    raw = value.get_secret_value().strip().lower()
    if not raw or raw in PLACEHOLDER_SECRETS or raw.strip("<>{}$ ") in PLACEHOLDER_SECRETS:
        raise ValueError(f"{name} is a placeholder; set a real secret or leave it unset")


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="FIELDLINE_", extra="forbid", validate_default=True, frozen=True
    )

    data_dir: Path = Field(
        Path("fieldline-data"),
        description="Directory for the embedded database, broker files and generated secrets.",
    )
    database_url: str | None = Field(
        None,
        validation_alias="DATABASE_URL",
        description="PostgreSQL 14+ to use (`postgresql://user:pass@host/db`); unset runs the "
        "embedded server in the data directory.",
    )
    database_port: int | None = Field(
        None,
        ge=1,
        le=65535,
        description="TCP port of the embedded database on loopback (for Grafana, psql); "
        "unset: the port it first started on, kept in the data directory.",
    )
    http_host: str = Field("127.0.0.1", description="Address the HTTP API listens on.")
    http_port: int = Field(8000, ge=0, le=65535, description="HTTP API port (0 picks a free one).")
    public_url: str | None = Field(
        None, description="URL users reach the API at, for printed links; default from host/port."
    )
    broker: BrokerKind = Field(
        BrokerKind.AUTO,
        description="`auto` (managed Mosquitto when installed, else in-process amqtt), "
        "`mosquitto`, `amqtt` or `external`.",
    )
    mqtt_host: str = Field(
        "127.0.0.1",
        description="Address the managed broker listens on, or the external broker's host.",
    )
    mqtt_port: int = Field(1883, ge=0, le=65535, description="MQTT port (0 picks a free one).")
    mqtt_public_host: str | None = Field(
        None, description="Broker host given to devices at registration; default `mqtt_host`."
    )
    mqtt_tls_port: int | None = Field(
        None,
        ge=0,
        le=65535,
        description="MQTT over TLS: the managed Mosquitto listens here (8883 is usual) and "
        "devices are given it at registration; unset means no TLS.",
    )
    mqtt_tls_cert_file: Path | None = Field(
        None,
        description="Server certificate (PEM) of the TLS listener; default "
        "`<data_dir>/certs/server.crt` as written by `fieldline certs`.",
    )
    mqtt_tls_key_file: Path | None = Field(
        None,
        description="Private key (PEM) of the TLS listener; default `<data_dir>/certs/server.key`.",
    )
    mqtt_tls_ca_file: Path | None = Field(
        None,
        description="CA certificate (PEM) devices verify the broker with, returned at "
        "registration; default `<data_dir>/certs/ca.crt`.",
    )
    mqtt_plaintext: bool = Field(
        True,
        description="The managed broker also listens without TLS on `mqtt_port`. False: TLS "
        "only (`mqtt_tls_port`), and fieldline's own clients use TLS too.",
    )
    broker_tls: bool = Field(
        False,
        description="fieldline's own MQTT clients reach the external broker on `mqtt_tls_port` "
        "with TLS, verifying it with `mqtt_tls_ca_file`.",
    )
    broker_mqtt5: bool = Field(
        True,
        description="The external broker speaks MQTT 5. False: fieldline's own clients speak "
        "MQTT 3.1.1 (no shared subscriptions: one ingest process), as `fieldline up` sets for "
        "the ingest process it runs beside its in-process amqtt.",
    )
    mosquitto_bin: str = Field("mosquitto", description="The mosquitto executable to manage.")
    mosquitto_dynsec_plugin: Path | None = Field(
        None, description="Path of `mosquitto_dynamic_security.so`; found automatically if unset."
    )
    broker_admin_username: str | None = Field(
        None,
        description="External Mosquitto: dynamic-security admin user fieldline manages "
        "devices with.",
    )
    broker_admin_password: SecretStr | None = Field(
        None, description="External Mosquitto: password of `broker_admin_username`."
    )
    broker_service_username: str | None = Field(
        None, description="External broker: the MQTT user fieldline's ingest connects as."
    )
    broker_service_password: SecretStr | None = Field(
        None, description="External broker: password of `broker_service_username`."
    )
    emqx_webhook_secret: SecretStr | None = Field(
        None,
        description="EMQX: token EMQX sends as `Authorization: Bearer …` to fieldline's HTTP "
        "authentication and authorization endpoints; unset turns them off.",
    )
    provisioning_secret: SecretStr | None = Field(
        None,
        description="Shared HMAC secret of single-key provisioning (devices sign with key id "
        "`default`), as fleets flashed for an `HMAC_SECRET_KEY` expect; unset: only "
        "provisioning keys created through the API.",
    )
    provisioning_rate_limit: float = Field(
        10.0,
        gt=0,
        description="`POST /provision` requests per second each source address may make on "
        "average (a factory line behind one address provisions many); more get 429.",
    )
    provisioning_rate_burst: int = Field(
        100, ge=1, description="`POST /provision` requests a source address may make at once."
    )
    device_token_minutes: int = Field(
        60, ge=1, description="Lifetime of a device token for HTTP ingest (instead of Basic)."
    )
    command_timeout_seconds: float = Field(
        3600.0,
        gt=0,
        description="A command not answered within this is `expired` (a command may set a "
        "shorter `timeout_seconds`).",
    )
    firmware_signing_key_file: Path | None = Field(
        None,
        description="Ed25519 private key (PKCS#8 PEM) that signs firmware manifests; unset: "
        "generated once and kept in the data directory (`secrets/firmware_signing_key.pem`).",
    )
    firmware_trusted_keys: str = Field(
        "",
        description="More trusted Ed25519 public keys (base64 of the 32 bytes, comma-separated): "
        "keys that sign offline, and keys being rotated in or out.",
    )
    firmware_active_key: str | None = Field(
        None,
        description="Key id of the key new images are signed with; unset: the platform's own. "
        "An offline key makes every upload carry its `signature`.",
    )
    firmware_max_bytes: int = Field(
        64 * 1024 * 1024, ge=1, description="Largest firmware image an upload may carry."
    )
    topic_prefix: str = Field(
        "devices", pattern=r"^[A-Za-z0-9_-]+$", description="First level of every device topic."
    )
    secret_key: SecretStr | None = Field(
        None,
        description="Key that signs access tokens (32+ characters). Unset: generated once and "
        "kept in the data directory. Placeholders refuse to start.",
    )
    admin_password: SecretStr | None = Field(
        None,
        description="Password of the `admin` user created on first start; unset prints a "
        "generated one once.",
    )
    access_token_minutes: int = Field(15, ge=1, description="Lifetime of an access token.")
    refresh_token_days: int = Field(
        14,
        ge=1,
        description="Lifetime of a refresh token (a password or role change, or signing out, "
        "ends it sooner).",
    )
    auth_max_failures_per_account: int = Field(
        10,
        ge=1,
        description="Wrong passwords or API keys one account (user, device, API key) may get "
        "within the window, from any addresses; then every try is refused with 429 for 1 "
        "minute, each lock in a row twice as long up to the window. A success forgets the "
        "failures. Shared by all API processes.",
    )
    auth_max_failures_per_address: int = Field(
        50,
        ge=1,
        description="Wrong passwords or API keys one client address (an IPv6 /64) may get at "
        "once; then one more per window/limit seconds (18 s by default), 429 meanwhile. "
        "Counted by each API process.",
    )
    auth_failure_window_seconds: float = Field(
        900.0, gt=0, description="The window of both limits above."
    )
    trusted_proxies: str = Field(
        "",
        description="Comma-separated addresses or networks (`127.0.0.1,10.0.0.0/8`) of reverse "
        "proxies whose `X-Forwarded-For` names the client; `*` trusts every peer. Empty: the "
        "socket's peer is the client whatever the headers say. Set it behind a proxy, or all "
        "clients share the proxy's limits.",
    )
    cors_origins: str = Field(
        "",
        description="Comma-separated origins (`https://app.example.com`) whose pages may call "
        "the API from a browser (CORS); each exactly as the browser sends it, scheme, host and "
        "port. Empty: none, the dashboard is served by the API itself and needs no CORS.",
    )
    device_hash_iterations: int = Field(
        10_000,
        ge=1_000,
        description="PBKDF2-SHA512 iterations for device secrets (the broker verifies them on "
        "every connect; secrets are 192-bit random).",
    )
    max_payload_bytes: int = Field(
        65_536, ge=256, description="Larger uplink payloads are rejected."
    )
    max_request_body_bytes: int = Field(
        1_048_576,
        ge=1_024,
        description="Largest request body the HTTP API reads on a route without a limit of its "
        "own (HTTP ingest has `max_payload_bytes`); a larger one is answered 413 before it is "
        "read, or as soon as a body without Content-Length grows past it.",
    )
    max_future_skew_seconds: float = Field(
        300.0, ge=0, description="Readings stamped further in the future are rejected."
    )
    online_timeout_seconds: float = Field(
        300.0,
        gt=0,
        description="A device not heard from for this long is shown offline.",
    )
    batch_max_messages: int = Field(
        2_000, ge=1, description="Ingest writes a batch at this many messages..."
    )
    batch_max_delay_ms: int = Field(
        10,
        ge=1,
        description="...or after this many milliseconds (under load a batch also grows while "
        "the previous one is written).",
    )
    ingest_max_pending: int = Field(
        20_000,
        ge=1,
        description="Messages ingest holds unacknowledged while the database is slow or down; "
        "beyond this it stops reading and the broker queues (back-pressure). The in-process "
        "amqtt sends ingest no more than this unacknowledged.",
    )
    ingest_instance: str = Field(
        "1",
        pattern=r"^[A-Za-z0-9_-]{1,64}$",
        description="Name of this ingest process, unique among them: its persistent broker "
        "session is `fieldline-ingest-<instance>`. Restart a process under the same name.",
    )
    ingest_share_group: str = Field(
        "",
        pattern=r"^[A-Za-z0-9_-]*$",
        description="Set (e.g. `fieldline`) on every ingest process to split the uplinks "
        "between them through the shared subscription `$share/<group>/...`. Empty: one "
        "ingest process takes everything, which Mosquitto 2.0 also keeps across its restarts.",
    )
    device_rate_limit: float = Field(
        20.0,
        ge=0,
        description="Uplink messages per second each device may send on average; excess is "
        "rejected as `rate_limited` (0 turns the limit off). Counted per ingest process.",
    )
    device_rate_burst: int = Field(
        200,
        ge=1,
        description="Messages a device may send at once above the rate (a device flushing its "
        "offline buffer); a `readings` batch counts as one message.",
    )
    dedup_window_days: int = Field(
        30,
        ge=1,
        description="How long message ids are remembered for de-duplication; the worker "
        "forgets older ones.",
    )
    rejected_retention_days: int = Field(
        30,
        ge=1,
        description="Rejected messages are kept this long (raw bytes and reason); the worker "
        "deletes older ones.",
    )
    retention_raw_days: int = Field(
        30,
        ge=0,
        description="Raw points are kept this many days (0 = kept), then dropped a day's "
        "partition at a time; charts over older ranges read the rollups.",
    )
    retention_hourly_days: int = Field(
        400,
        ge=0,
        description="Hourly rollups are kept this many days (0 = kept), a month's partition at "
        "a time; at least as long as raw points.",
    )
    retention_daily_days: int = Field(
        0,
        ge=0,
        description="Daily rollups are kept this many days (0 = kept), a year's partition at a "
        "time; at least as long as hourly rollups.",
    )
    archive_url: str | None = Field(
        None,
        description="Where closed hours of raw points are archived as Parquet: a directory or "
        "`s3://bucket/prefix`; unset = no archive. With an archive, raw points are dropped by "
        "retention only once archived.",
    )
    backup_url: str | None = Field(
        None,
        description="Where backups are written: a directory or `s3://bucket/prefix`; default "
        "`<data_dir>/backups`.",
    )
    backup_keep_daily: int = Field(
        7, ge=1, description="Daily backups kept (the newest of each day)."
    )
    backup_keep_weekly: int = Field(
        4,
        ge=0,
        description="Weekly backups kept beyond the daily ones (the newest of each ISO week).",
    )
    s3_endpoint_url: str | None = Field(
        None,
        description="The endpoint of an S3-compatible store (MinIO, Garage, Ceph...) for "
        "`s3://` archive and backup URLs; unset = AWS. Credentials and region come from the "
        "usual `AWS_*` variables.",
    )
    heartbeat_seconds: float = Field(
        10.0,
        gt=0,
        le=300,
        description="How often every fieldline process records that it is alive, with its "
        "vitals, for the health checks and the admin health page; a process silent for 6 "
        "of these is down.",
    )
    worker_interval_seconds: float = Field(
        60.0, gt=0, description="How often the worker runs its housekeeping jobs."
    )
    alert_interval_seconds: float = Field(
        0.5,
        gt=0,
        le=60,
        description="How often the worker evaluates alert rules: readings waiting in the "
        "inbox, durations, offline and no-data timers, repeats and escalations.",
    )
    notify_interval_seconds: float = Field(
        0.5,
        gt=0,
        description="How often the worker looks for notifications due for delivery (a round "
        "that delivered some looks again at once, and the alert evaluator wakes it when it "
        "queued some).",
    )
    notify_retry_start_seconds: float = Field(
        1.0,
        gt=0,
        description="A failed notification is retried after a random wait of up to this, "
        "doubling with each failure of the same notification (full jitter)...",
    )
    notify_retry_cap_seconds: float = Field(
        300.0,
        gt=0,
        description="...up to at most this; a receiver's Retry-After (429, 503) is waited "
        "for when longer.",
    )
    notify_give_up_seconds: float = Field(
        86_400.0,
        gt=0,
        description="A notification still undelivered this long after it was queued is "
        "`failed` at its next failed attempt, and the channel's next one is tried.",
    )
    notify_failing_after_attempts: int = Field(
        3,
        ge=1,
        description="A channel whose oldest pending notification failed this many times in a "
        "row is failing: an alert of kind `channel` is raised on every other channel, and "
        "resolved when it delivers again.",
    )
    ops_port: int | None = Field(
        None,
        ge=0,
        le=65535,
        description="`fieldline ingest` and `fieldline worker` serve /health, /ready and /metrics "
        "on this port (on `http_host`); unset serves none.",
    )
    map_tiles_url: str = Field(
        "https://tile.openstreetmap.org/{z}/{x}/{y}.png",
        description="Tile server of the dashboard's maps (`{z}/{x}/{y}` template, http or "
        "https); empty: no tiles, positions on a grid of coordinates (as when offline).",
    )
    map_attribution: str = Field(
        "© OpenStreetMap contributors",
        description="Credit shown on every map, as the tile server's terms ask.",
    )
    log_level: str = Field("INFO", description="DEBUG, INFO, WARNING or ERROR.")
    log_format: LogFormat = Field(
        LogFormat.AUTO, description="`json`, `console`, or `auto` (console on a terminal)."
    )

    @field_validator("trusted_proxies")
    @classmethod
    def _proxies_are_addresses(cls, value: str) -> str:
        entries = [entry.strip() for entry in value.split(",") if entry.strip()]
        if entries != ["*"]:
            for entry in entries:
                try:
                    ipaddress.ip_network(entry, strict=False)
                except ValueError as exc:
                    raise ValueError(
                        f"trusted_proxies: {entry!r} is not an address or a network"
                    ) from exc
        return ",".join(entries)

    @field_validator("cors_origins")
    @classmethod
    def _origins_are_origins(cls, value: str) -> str:
        entries = [entry.strip() for entry in value.split(",") if entry.strip()]
        for entry in entries:
            parts = urlsplit(entry)
            # An origin is what a browser sends in `Origin`: no path, no trailing slash, and
            # never a wildcard (the API answers with credentials' data).
            if (
                parts.scheme not in ("http", "https")
                or not parts.netloc
                or entry != f"{parts.scheme}://{parts.netloc}"
            ):
                raise ValueError(
                    f"cors_origins: {entry!r} is not an origin like https://app.example.com"
                )
        return ",".join(entries)

    @property
    def cors_origin_list(self) -> list[str]:
        return [entry for entry in self.cors_origins.split(",") if entry]

    @field_validator("map_tiles_url")
    @classmethod
    def _tiles_url_is_a_template(cls, value: str) -> str:
        value = value.strip()
        if not value:
            return value
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ValueError(f"map_tiles_url: {value!r} is not an http(s) URL")
        if not all(key in value for key in ("{z}", "{x}", "{y}")):
            raise ValueError("map_tiles_url must hold {z}, {x} and {y}")
        return value

    @property
    def map_tiles_origin(self) -> str | None:
        """The tile server's origin (scheme://host[:port]), which the dashboard's content
        security policy must allow images from; None without tiles. A `{s}` subdomain
        placeholder becomes a wildcard."""
        if not self.map_tiles_url:
            return None
        parts = urlsplit(self.map_tiles_url)
        return f"{parts.scheme}://{parts.netloc.replace('{s}', '*')}"

    @field_validator("firmware_trusted_keys")
    @classmethod
    def _trusted_keys_are_keys(cls, value: str) -> str:
        from fieldline.domain.firmware import SignatureError, public_key_from_base64

        for text in value.split(","):
            try:
                if text.strip():
                    public_key_from_base64(text)
            except SignatureError as exc:
                raise ValueError(f"FIELDLINE_FIRMWARE_TRUSTED_KEYS: {exc}") from exc
        return value

    @field_validator("secret_key")
    @classmethod
    def _secret_key_is_real(cls, value: SecretStr | None) -> SecretStr | None:
        _refuse_placeholder(value, "FIELDLINE_SECRET_KEY")
        if value is not None and len(value.get_secret_value()) < MIN_SECRET_KEY_LENGTH:
            raise ValueError(
                f"FIELDLINE_SECRET_KEY must be at least {MIN_SECRET_KEY_LENGTH} characters"
            )
        return value

    @field_validator(
        "admin_password",
        "broker_admin_password",
        "broker_service_password",
        "emqx_webhook_secret",
        "provisioning_secret",
    )
    @classmethod
    def _password_is_real(cls, value: SecretStr | None) -> SecretStr | None:
        _refuse_placeholder(value, "password setting")
        return value

    @model_validator(mode="after")
    def _broker_settings_agree(self) -> Settings:
        """Combinations no broker could start with, refused by every command at once
        (what a component needs beyond them: runtime/requirements.py)."""
        if self.broker == BrokerKind.EXTERNAL:
            if self.broker_tls and self.mqtt_tls_port is None:
                raise ValueError("FIELDLINE_BROKER_TLS needs FIELDLINE_MQTT_TLS_PORT")
            if self.broker_admin_username is not None and self.broker_admin_password is None:
                raise ValueError("FIELDLINE_BROKER_ADMIN_USERNAME is set without its password")
            return self
        if not self.mqtt_plaintext and self.mqtt_tls_port is None:
            raise ValueError("FIELDLINE_MQTT_PLAINTEXT=false needs FIELDLINE_MQTT_TLS_PORT")
        if self.broker == BrokerKind.AMQTT and self.mqtt_tls_port is not None:
            # Devices would be told of a TLS port nothing listens on.
            raise ValueError(AMQTT_HAS_NO_TLS)
        return self

    @model_validator(mode="after")
    def _retention_keeps_what_it_promises(self) -> Settings:
        """Retention that would lose data is refused at start, with what to change."""
        refused = retention_refusal(
            self.retention_raw_days,
            self.retention_hourly_days,
            self.retention_daily_days,
            self.dedup_window_days,
        )
        if refused:
            raise ValueError(refused)
        return self

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # Precedence: explicit arguments, then environment, then the TOML file.
        config_file = os.environ.get("FIELDLINE_CONFIG")
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        if config_file:
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=Path(config_file)))
        return tuple(sources)

    @property
    def retention_days(self) -> dict[str, int]:
        """Each telemetry tier's retention in days (0 = kept), by tier name."""
        return {
            "raw": self.retention_raw_days,
            "hourly": self.retention_hourly_days,
            "daily": self.retention_daily_days,
        }

    @property
    def backup_location(self) -> str:
        """Where backups go: `backup_url`, or the data directory's `backups`."""
        return self.backup_url or str(self.data_dir / "backups")

    @property
    def topics(self) -> TopicScheme:
        """The topic scheme of `topic_prefix`: every process reads it from here."""
        return _topic_scheme(self.topic_prefix)

    @property
    def advertised_mqtt_host(self) -> str:
        return self.mqtt_public_host or self.mqtt_host

    @property
    def tls_cert_file(self) -> Path:
        return self.mqtt_tls_cert_file or self.data_dir / "certs" / "server.crt"

    @property
    def tls_key_file(self) -> Path:
        return self.mqtt_tls_key_file or self.data_dir / "certs" / "server.key"

    @property
    def tls_ca_file(self) -> Path:
        return self.mqtt_tls_ca_file or self.data_dir / "certs" / "ca.crt"


@functools.cache
def _topic_scheme(prefix: str) -> TopicScheme:
    # Keyed by the prefix, not cached on the object: a model_copy with another
    # topic_prefix must not carry the old scheme along.
    return TopicScheme(prefix)


def retention_refusal(raw: int, hourly: int, daily: int, dedup_window: int) -> str | None:
    """Why these retention days (0 = kept) would lose data, or None when they would not.

    Each tier must outlive the finer one below it: charts over old ranges read the
    coarser tier, and a rollup cannot be rebuilt once the points under it are gone.
    Raw points must outlive the de-duplication window: readings arrive late (a device
    flushing its buffer, a redelivery) for as long as their message ids are kept, and
    the raw point of such a reading would be dropped as soon as it was stored.
    """
    tiers = [
        ("FIELDLINE_RETENTION_RAW_DAYS", raw),
        ("FIELDLINE_RETENTION_HOURLY_DAYS", hourly),
        ("FIELDLINE_RETENTION_DAILY_DAYS", daily),
    ]
    for (finer, finer_days), (coarser, coarser_days) in itertools.pairwise(tiers):
        if coarser_days and (not finer_days or coarser_days < finer_days):
            if not finer_days:
                return (
                    f"{coarser}={coarser_days} keeps rollups for less time than {finer}=0"
                    f" (kept for good) keeps what they summarise: set {coarser} to 0 too,"
                    f" or {finer} to at most {coarser_days} days"
                )
            return (
                f"{coarser}={coarser_days} keeps rollups for less time than {finer}="
                f"{finer_days} keeps what they summarise: set {coarser} to at least"
                f" {finer_days} days, or 0 to keep them"
            )
    if raw and raw < dedup_window:
        return (
            f"FIELDLINE_RETENTION_RAW_DAYS={raw} is shorter than FIELDLINE_DEDUP_WINDOW_DAYS="
            f"{dedup_window}, the time late readings are still accepted and de-duplicated in:"
            f" raise the retention or lower the window to {raw} days"
        )
    return None


def load_settings(**overrides: Any) -> Settings:
    """Build Settings from the environment, the TOML file and CLI overrides."""
    return Settings(**{k: v for k, v in overrides.items() if v is not None})


def settings_problems(exc: ValidationError) -> list[str]:
    """Each refused setting of `exc` as one line: where, then why."""
    return [
        f"{'.'.join(str(p) for p in error['loc']) or 'settings'}: "
        f"{error['msg'].removeprefix('Value error, ')}"
        for error in exc.errors()
    ]


def environment(settings: Settings) -> dict[str, str]:
    """The environment variables that load exactly `settings` (for a child process).

    Every field that is set, secrets included; unset ones are left out.
    """
    variables: dict[str, str] = {}
    for name, field in Settings.model_fields.items():
        value = getattr(settings, name)
        if value is None:
            continue
        alias = field.validation_alias
        key = alias if isinstance(alias, str) else f"FIELDLINE_{name.upper()}"
        if isinstance(value, SecretStr):
            value = value.get_secret_value()
        if isinstance(value, bool):
            variables[key] = "true" if value else "false"
        else:
            variables[key] = str(value)  # StrEnum members are their value
    return variables
