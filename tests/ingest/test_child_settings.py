"""`up`'s ingest child gets the secrets it needs and no other (issue 12, SPEC §9)."""

from __future__ import annotations

import secrets
import typing

from pydantic import SecretStr

from fieldline.broker.base import BrokerEndpoint, ServiceAccount
from fieldline.config import Settings, environment
from fieldline.ingest.child import child_settings

# What ingest needs: the MQTT service account it subscribes with.
NEEDED = {"broker_service_password"}


def secret_fields() -> list[str]:
    """Every setting typed as a secret, found from the type: a new one is covered at once."""
    return [
        name
        for name, field in Settings.model_fields.items()
        if SecretStr in typing.get_args(field.annotation) or field.annotation is SecretStr
    ]


def test_the_ingest_child_gets_no_secret_it_does_not_need() -> None:
    fields = secret_fields()
    assert {"secret_key", "admin_password", "broker_admin_password"} <= set(fields)
    given = {name: secrets.token_urlsafe(32) for name in fields}
    settings = Settings.model_validate(given)
    service = ServiceAccount(username="_fieldline-service", password=secrets.token_urlsafe(32))

    child = child_settings(
        settings,
        url="postgresql://fieldline@127.0.0.1:5432/fieldline",
        endpoint=BrokerEndpoint(host="127.0.0.1", port=1883),
        service=service,
    )

    kept = {name for name in fields if getattr(child, name) is not None}
    assert kept == NEEDED
    assert child.broker_service_password is not None
    assert child.broker_service_password.get_secret_value() == service.password
    variables = environment(child)
    for name, value in given.items():
        assert value not in variables.values(), f"{name} reaches the ingest child"
