"""What a metric is, for people: its name, unit, decimals and kind, per device type."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

ANY_TYPE = "*"  # the entry for devices whose type has none of its own


class MetricKind(enum.StrEnum):
    NUMBER = "number"
    BOOLEAN = "boolean"  # 0 and 1 (or false/true), drawn as a state timeline
    ENUM = "enum"  # a few numeric values with labels, drawn as a state timeline
    LATITUDE = "latitude"  # with a longitude of the same device: a position on a map
    LONGITUDE = "longitude"


@dataclass(frozen=True, slots=True)
class MetricMeta:
    device_type: str
    metric: str
    display_name: str = ""
    unit: str = ""
    decimals: int | None = None
    kind: MetricKind = MetricKind.NUMBER
    labels: dict[str, str] = field(default_factory=dict)  # value as text -> label

    def label(self, value: float) -> str | None:
        """The label of `value` (1.0 is "1"), when it has one."""
        text = str(int(value)) if value == int(value) else repr(value)
        return self.labels.get(text)


def applying(entries: list[MetricMeta], device_type: str) -> dict[str, MetricMeta]:
    """By metric: the entries a device of `device_type` uses (its type's over `*`'s)."""
    chosen: dict[str, MetricMeta] = {}
    for entry in entries:
        if entry.device_type == ANY_TYPE:
            chosen.setdefault(entry.metric, entry)
    for entry in entries:
        if entry.device_type == device_type:
            chosen[entry.metric] = entry
    return chosen
