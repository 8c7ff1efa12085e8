"""Metric metadata as an operator sets it and a viewer reads it: per device type, with a
default for every type, kinds and labels checked."""

from __future__ import annotations

from tests.api.conftest import Api
from tests.conftest import create_devices


async def test_a_device_reads_its_types_metadata_over_the_default(api: Api) -> None:
    operator, viewer = await api.user("operator"), await api.user("viewer")
    async with api.pool.connection() as conn:
        await create_devices(conn, "gh-1", "pump-1")
        await conn.execute("UPDATE devices SET device_type = 'greenhouse' WHERE device_id = 'gh-1'")

    celsius = {"display_name": "Temperature", "unit": "°C", "decimals": 1}
    answer = await api.http.put(
        "/api/v1/device-types/*/metrics/temperature", json=celsius, headers=operator
    )
    assert answer.status_code == 200, answer.text
    assert answer.json() == {
        **celsius, "kind": "number", "labels": {}, "device_type": "*", "metric": "temperature",
    }  # fmt: skip
    vent = {"display_name": "Vent", "kind": "boolean", "labels": {"0": "closed", "1": "open"}}
    fahrenheit = {"display_name": "Air temperature", "unit": "°F", "decimals": 0}
    for metric, body in (("vent", vent), ("temperature", fahrenheit)):
        put = await api.http.put(
            f"/api/v1/device-types/greenhouse/metrics/{metric}", json=body, headers=operator
        )
        assert put.status_code == 200, put.text

    mine = await api.http.get("/api/v1/devices/gh-1/metric-metadata", headers=viewer)
    assert [(m["metric"], m["device_type"], m["unit"]) for m in mine.json()["items"]] == [
        ("temperature", "greenhouse", "°F"),  # its type's, over the default
        ("vent", "greenhouse", ""),
    ]
    other = await api.http.get("/api/v1/devices/pump-1/metric-metadata", headers=viewer)
    assert [(m["metric"], m["unit"]) for m in other.json()["items"]] == [("temperature", "°C")]
    listed = await api.http.get("/api/v1/metric-metadata", headers=viewer)
    assert len(listed.json()["items"]) == 3

    # Viewers read, operators write; what is refused says why.
    assert (
        await api.http.put("/api/v1/device-types/*/metrics/x", json={}, headers=viewer)
    ).status_code == 403
    for body, why in (
        ({"kind": "number", "labels": {"1": "on"}}, "labels are for kind boolean or enum"),
        ({"kind": "enum", "labels": {"high": "x"}}, "label keys are values"),
        ({"decimals": 12}, "less than or equal to 9"),
        ({"kind": "colour"}, "Input should be"),
    ):
        refused = await api.http.put(
            "/api/v1/device-types/greenhouse/metrics/x", json=body, headers=operator
        )
        assert refused.status_code == 422 and why in refused.text, refused.text

    gone = await api.http.delete(
        "/api/v1/device-types/greenhouse/metrics/temperature", headers=operator
    )
    assert gone.status_code == 204
    again = await api.http.delete(
        "/api/v1/device-types/greenhouse/metrics/temperature", headers=operator
    )
    assert again.status_code == 404
    mine = await api.http.get("/api/v1/devices/gh-1/metric-metadata", headers=viewer)
    assert [(m["metric"], m["unit"]) for m in mine.json()["items"]] == [
        ("temperature", "°C"),  # the default again
        ("vent", ""),
    ]
    missing = await api.http.get("/api/v1/devices/nobody/metric-metadata", headers=viewer)
    assert missing.status_code == 404
