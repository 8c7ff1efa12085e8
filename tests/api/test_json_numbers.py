"""Numbers in documents users send come back, and reach the device, exactly (issue 12).

jsonb wrote 1.5e300 back as a 301-digit integer (a 500 on PUT, and a group
configuration that silently reached no device), 1e19 as an integer and -0.0 as 0.0.
"Exactly" here is as a device's JSON parser sees it: the same numbers of the same
types (an integer stays an integer, a float a float).
"""

from __future__ import annotations

import json
from typing import Any

import orjson

from fieldline.broker.publisher import Publisher
from tests.api.conftest import Api
from tests.api.test_config import Subscribe, configs, register, subscribed
from tests.broker.conftest import eventually

__all__ = ["subscribed"]  # the fixture, shared with test_config

# As a client writes it; parsed with json.loads, as the API parses a body.
NUMBERS = (
    '{"huge": 1.5e300, "e19": 1e19, "e16": 1e16, "negative_zero": -0.0, "tiny": 1.5e-7,'
    ' "whole_float": 100.0, "int64": 9223372036854775807, "flag": true, "one": 1,'
    ' "nested": {"list": [1e300, -1e-300, 0.1]}}'
)


def exact(value: Any) -> bytes:
    """A form in which 1, 1.0 and true differ, and so do 0.0 and -0.0; keys sorted."""
    return orjson.dumps(value, option=orjson.OPT_SORT_KEYS)


def sent() -> dict[str, Any]:
    parsed: dict[str, Any] = json.loads(NUMBERS)
    return parsed


async def put_raw(api: Api, headers: dict[str, str], path: str, document: str) -> Any:
    answer = await api.http.put(
        path,
        content=f'{{"config": {document}}}',
        headers={**headers, "Content-Type": "application/json"},
    )
    assert answer.status_code == 200, answer.text
    return json.loads(answer.text)


async def test_a_device_configuration_round_trips_exactly(
    api: Api, admin: dict[str, str], publisher: Publisher, subscribed: Subscribe
) -> None:
    password = await register(api, admin, "num-1")
    device = await subscribed("num-1", password)

    answer = await put_raw(api, admin, "/api/v1/devices/num-1/config", NUMBERS)
    assert exact(answer["desired"]) == exact(sent())
    assert exact(answer["effective"]) == exact(sent())

    got = json.loads((await api.http.get("/api/v1/devices/num-1/config", headers=admin)).text)
    assert exact(got["desired"]) == exact(got["effective"]) == exact(sent())

    assert await eventually(lambda: bool(configs(device)), within=30)
    [message] = configs(device)
    assert exact(message["config"]) == exact(sent())


async def test_a_device_joining_a_configured_group_gets_its_configuration(
    api: Api, admin: dict[str, str], publisher: Publisher, subscribed: Subscribe
) -> None:
    made = await api.http.post("/api/v1/groups", headers=admin, json={"name": "num-site"})
    assert made.status_code == 201, made.text
    group = await put_raw(api, admin, "/api/v1/groups/num-site/config", NUMBERS)
    assert exact(group["config"]) == exact(sent())

    # Registered into the group, and moved into it.
    password = await register(api, admin, "num-2", group="num-site")
    await register(api, admin, "num-3")
    moved = await api.http.patch("/api/v1/devices/num-3", headers=admin, json={"group": "num-site"})
    assert moved.status_code == 200, moved.text
    for device_id in ("num-2", "num-3"):
        state = json.loads(
            (await api.http.get(f"/api/v1/devices/{device_id}/config", headers=admin)).text
        )
        assert state["version"] == 1, device_id
        assert exact(state["effective"]) == exact(sent()), device_id

    device = await subscribed("num-2", password)

    assert await eventually(lambda: bool(configs(device)), within=30)
    assert exact(configs(device)[0]["config"]) == exact(sent())


async def test_an_integer_becoming_a_float_is_a_new_version(
    api: Api, admin: dict[str, str]
) -> None:
    """1 and 1.0 are equal in Python but not to a device's parser: the device must be told."""
    await register(api, admin, "num-4")
    first = await put_raw(api, admin, "/api/v1/devices/num-4/config", '{"x": 1}')
    second = await put_raw(api, admin, "/api/v1/devices/num-4/config", '{"x": 1.0}')
    assert (first["version"], second["version"]) == (1, 2)
    assert exact(second["effective"]) == exact({"x": 1.0})


async def test_command_parameters_round_trip_exactly(api: Api, admin: dict[str, str]) -> None:
    await register(api, admin, "num-5")
    answer = await api.http.post(
        "/api/v1/devices/num-5/commands",
        content=f'{{"name": "calibrate", "params": {NUMBERS}}}',
        headers={**admin, "Content-Type": "application/json"},
    )
    assert answer.status_code == 201, answer.text
    assert exact(json.loads(answer.text)["params"]) == exact(sent())
    command_id = answer.json()["command_id"]
    got = await api.http.get(f"/api/v1/devices/num-5/commands/{command_id}", headers=admin)
    assert exact(json.loads(got.text)["params"]) == exact(sent())


async def test_device_metadata_round_trips_exactly(api: Api, admin: dict[str, str]) -> None:
    created = await api.http.post(
        "/api/v1/devices",
        content=f'{{"device_id": "num-6", "metadata": {NUMBERS}}}',
        headers={**admin, "Content-Type": "application/json"},
    )
    assert created.status_code == 201, created.text
    assert exact(json.loads(created.text)["metadata"]) == exact(sent())
    got = await api.http.get("/api/v1/devices/num-6", headers=admin)
    assert exact(json.loads(got.text)["metadata"]) == exact(sent())


async def test_numbers_no_device_could_parse_are_refused_with_a_reason(
    api: Api, admin: dict[str, str]
) -> None:
    await register(api, admin, "num-7")
    for document, reason in (
        ('{"x": 1e400}', "finite"),  # past float range: JSON readers make it Infinity
        ('{"x": 123456789012345678901234567890}', "64 bits"),
        ('{"x": NaN}', "finite"),
    ):
        answer = await api.http.put(
            "/api/v1/devices/num-7/config",
            content=f'{{"config": {document}}}',
            headers={**admin, "Content-Type": "application/json"},
        )
        assert answer.status_code == 422, (document, answer.text)
        assert reason in answer.json()["error"]["message"], document
