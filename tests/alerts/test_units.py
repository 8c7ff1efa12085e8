"""Alert texts in the metric's own terms: the display name, the value to its decimals (or
its label) with its unit, as the device type's metadata says; raw names and numbers
where there is none."""

from __future__ import annotations

from typing import Any

from tests.alerts.conftest import Engine, at


async def describe(engine: Engine, device_type: str, metric: str, **entry: Any) -> None:
    await engine.sql(
        "INSERT INTO metric_metadata (device_type, metric, display_name, unit, decimals, kind,"
        " labels, updated_by) VALUES (%s, %s, %s, %s, %s, %s, %s, 't')",
        device_type,
        metric,
        entry.get("display_name", ""),
        entry.get("unit", ""),
        entry.get("decimals"),
        entry.get("kind", "number"),
        entry.get("labels", "{}"),
    )


async def summaries(engine: Engine) -> list[str]:
    return [row["body"]["summary"] for row in await engine.notifications()]


async def test_a_threshold_alert_reads_in_the_metrics_name_unit_and_decimals(
    engine: Engine,
) -> None:
    await engine.device("cold-1")  # of type "sensor"
    await describe(engine, "*", "t", display_name="Temp", unit="°F")
    await describe(engine, "sensor", "t", display_name="Temperature", unit="°C", decimals=1)
    channel = await engine.channel("a")
    condition = {"type": "threshold", "metric": "t", "op": ">", "value": 30, "clear_value": 28}
    await engine.rule(condition, channels=[channel])
    await engine.write("cold-1", (at(0), 31.24))
    await engine.evaluate()
    await engine.write("cold-1", (at(1), 27.96))
    await engine.evaluate()

    assert await summaries(engine) == [
        "Temperature 31.2 °C > 30 °C on cold-1",  # the type's entry, not `*`'s
        "resolved (cleared, now 28.0 °C): Temperature 31.2 °C > 30 °C on cold-1",
    ]
    (row, _) = await engine.notifications()
    assert (row["body"]["metric"], row["body"]["value"]) == ("t", 31.24)  # the raw fields


async def test_other_types_use_the_entry_for_every_type_or_none(engine: Engine) -> None:
    await engine.device("cold-2")
    await engine.sql("UPDATE devices SET device_type = 'other' WHERE device_id = 'cold-2'")
    await engine.device("fan-1")
    await describe(engine, "*", "t", display_name="Temp", unit="°F")
    await describe(engine, "*", "door", kind="boolean", labels='{"0": "closed", "1": "open"}')
    channel = await engine.channel("a")
    await engine.rule(
        {"type": "threshold", "metric": "t", "op": ">", "value": 86}, channels=[channel]
    )
    await engine.rule(
        {"type": "threshold", "metric": "rpm", "op": "outside", "value": [800, 1200.5]},
        channels=[channel],
    )
    await engine.rule(
        {"type": "threshold", "metric": "door", "op": ">=", "value": 1}, channels=[channel]
    )
    await engine.write("cold-2", (at(0), 88.125))
    await engine.write("fan-1", (at(0), 1500.5), metric="rpm")
    await engine.write("fan-1", (at(0), 1), metric="door")
    await engine.evaluate()

    assert sorted(await summaries(engine)) == [
        "Temp 88.125 °F > 86 °F on cold-2",  # no decimals given: the number as stored
        "door open >= 1 on fan-1",  # a label, and no display name: the metric's own
        "rpm 1500.5 outside [800, 1200.5] on fan-1",  # no metadata at all
    ]
