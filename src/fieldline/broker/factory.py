"""Choose and build the broker adapter the settings ask for."""

from __future__ import annotations

import shutil

from fieldline.broker.base import Broker, BrokerEndpoint, ServiceAccount
from fieldline.broker.embedded import AmqttBroker
from fieldline.broker.mosquitto import (
    ExternalMosquitto,
    ManagedMosquitto,
    TlsListener,
    find_dynsec_plugin,
)
from fieldline.broker.unmanaged import UnmanagedBroker
from fieldline.config import AMQTT_HAS_NO_TLS, BrokerKind, Settings
from fieldline.domain.topics import TopicScheme


def create_broker(settings: Settings) -> Broker:
    topics = settings.topics
    kind = settings.broker
    if kind == BrokerKind.EXTERNAL:
        return _external(settings, topics)
    plugin = settings.mosquitto_dynsec_plugin or find_dynsec_plugin()
    mosquitto_usable = shutil.which(settings.mosquitto_bin) is not None and (
        plugin is not None and plugin.exists()
    )
    if kind == BrokerKind.MOSQUITTO or (kind == BrokerKind.AUTO and mosquitto_usable):
        return ManagedMosquitto(
            data_dir=settings.data_dir,
            host=settings.mqtt_host,
            port=settings.mqtt_port,
            topics=topics,
            executable=settings.mosquitto_bin,
            plugin=plugin,
            tls=_tls_listener(settings),
            plaintext=settings.mqtt_plaintext,
        )
    if settings.mqtt_tls_port is not None:  # `auto` without Mosquitto (Settings refuses `amqtt`)
        raise ValueError(AMQTT_HAS_NO_TLS)
    return AmqttBroker(
        host=settings.mqtt_host,
        port=settings.mqtt_port,
        topics=topics,
        # No more unacknowledged than ingest holds: MQTT 3.1.1 has no receive maximum.
        max_inflight=settings.ingest_max_pending,
    )


def _tls_listener(settings: Settings) -> TlsListener | None:
    if settings.mqtt_tls_port is None:
        return None
    return TlsListener(
        port=settings.mqtt_tls_port,
        cert_file=settings.tls_cert_file,
        key_file=settings.tls_key_file,
        ca_file=settings.tls_ca_file,
    )


def external_client(settings: Settings) -> tuple[BrokerEndpoint, ServiceAccount]:
    """Where and as whom fieldline's own clients reach a broker it does not run."""
    if settings.broker_service_username is None or settings.broker_service_password is None:
        raise ValueError(
            "FIELDLINE_BROKER=external needs FIELDLINE_BROKER_SERVICE_USERNAME and "
            "FIELDLINE_BROKER_SERVICE_PASSWORD"
        )
    service = ServiceAccount(
        username=settings.broker_service_username,
        password=settings.broker_service_password.get_secret_value(),
    )
    endpoint = BrokerEndpoint(
        host=settings.mqtt_host,
        port=settings.mqtt_port,
        tls_port=settings.mqtt_tls_port,
        mqtt5=settings.broker_mqtt5,
        ca_file=settings.tls_ca_file if settings.broker_tls else None,
    )
    return endpoint, service


def _external(settings: Settings, topics: TopicScheme) -> Broker:
    endpoint, service = external_client(settings)
    # Settings refuses an admin username without its password.
    if settings.broker_admin_username is None or settings.broker_admin_password is None:
        return UnmanagedBroker(endpoint=endpoint, service=service)
    return ExternalMosquitto(
        host=settings.mqtt_host,
        port=settings.mqtt_port,
        topics=topics,
        admin_username=settings.broker_admin_username,
        admin_password=settings.broker_admin_password.get_secret_value(),
        service=service,
        tls_port=endpoint.tls_port,
        ca_file=endpoint.ca_file,
    )
