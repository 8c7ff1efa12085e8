"""Choose and build the broker adapter the settings ask for."""

from __future__ import annotations

import shutil

from fieldline.broker.base import Broker, BrokerEndpoint, ServiceAccount
from fieldline.broker.embedded import AmqttBroker
from fieldline.broker.mosquitto import ExternalMosquitto, ManagedMosquitto, find_dynsec_plugin
from fieldline.broker.unmanaged import UnmanagedBroker
from fieldline.config import BrokerKind, Settings
from fieldline.domain.topics import TopicScheme


def create_broker(settings: Settings) -> Broker:
    topics = TopicScheme(settings.topic_prefix)
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
        )
    return AmqttBroker(host=settings.mqtt_host, port=settings.mqtt_port, topics=topics)


def _external(settings: Settings, topics: TopicScheme) -> Broker:
    if settings.broker_service_username is None or settings.broker_service_password is None:
        raise ValueError(
            "FIELDLINE_BROKER=external needs FIELDLINE_BROKER_SERVICE_USERNAME and "
            "FIELDLINE_BROKER_SERVICE_PASSWORD"
        )
    service = ServiceAccount(
        username=settings.broker_service_username,
        password=settings.broker_service_password.get_secret_value(),
    )
    if settings.broker_admin_username is None:
        endpoint = BrokerEndpoint(
            host=settings.mqtt_host, port=settings.mqtt_port, tls_port=settings.mqtt_tls_port
        )
        return UnmanagedBroker(endpoint=endpoint, service=service)
    if settings.broker_admin_password is None:
        raise ValueError("FIELDLINE_BROKER_ADMIN_USERNAME is set without its password")
    return ExternalMosquitto(
        host=settings.mqtt_host,
        port=settings.mqtt_port,
        topics=topics,
        admin_username=settings.broker_admin_username,
        admin_password=settings.broker_admin_password.get_secret_value(),
        service=service,
    )
