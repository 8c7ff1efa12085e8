"""Desired configuration (a device twin): merge rules, limits and the downlink message.

A device's effective configuration is its group's object with the device's own
object merged over it. The merge is deep, like JSON Merge Patch (RFC 7386):
where both sides hold an object, the two objects merge key by key; any other
device value (a number, string, array, or an object over a non-object)
replaces the group's; a device value of `null` removes the group's key.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any

import orjson

JsonObject = dict[str, Any]

MAX_CONFIG_BYTES = 64 * 1024  # serialized, per object and for the effective configuration
MAX_CONFIG_DEPTH = 32  # nested objects and arrays; firmware parsers recurse
_INT64 = 2**63


class Scope(StrEnum):
    """What a change set: a group's object, a device's own, or a device's group membership."""

    GROUP = "group"
    DEVICE = "device"
    MEMBERSHIP = "membership"


def merge(base: JsonObject, over: JsonObject) -> JsonObject:
    """`over` merged deeply into `base`; neither is modified."""
    merged = dict(base)
    for key, value in over.items():
        if value is None:
            merged.pop(key, None)
        elif isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = merge(merged[key], value)
        else:
            merged[key] = _without_nulls(value) if isinstance(value, dict) else value
    return merged


def _without_nulls(document: JsonObject) -> JsonObject:
    # A null in `over` means "remove", also where `base` has nothing to remove.
    return merge({}, document)


def effective(group: JsonObject | None, own: JsonObject) -> JsonObject:
    return merge(group or {}, own)


def encoded_size(document: JsonObject) -> int:
    return len(orjson.dumps(document))


def same_document(a: JsonObject | None, b: JsonObject | None) -> bool:
    """Equal as JSON a device parses: unlike Python's ==, 1 is not 1.0 nor true, and 0.0 is
    not -0.0; key order does not matter."""
    return orjson.dumps(a, option=orjson.OPT_SORT_KEYS) == orjson.dumps(
        b, option=orjson.OPT_SORT_KEYS
    )


def config_problem(document: Any) -> str | None:
    """Why `document` cannot be a configuration object, or None when it can."""
    if not isinstance(document, dict):
        return "the configuration must be a JSON object"
    # Iterative, so depth is checked before anything recurses.
    stack: list[tuple[Any, int]] = [(document, 1)]
    while stack:
        value, depth = stack.pop()
        if isinstance(value, dict | list):
            if depth > MAX_CONFIG_DEPTH:
                return f"the configuration nests deeper than {MAX_CONFIG_DEPTH} levels"
            items = value.items() if isinstance(value, dict) else enumerate(value)
            for key, item in items:
                if isinstance(key, str) and "\x00" in key:
                    return "keys cannot contain NUL characters"
                stack.append((item, depth + 1))
        elif isinstance(value, str) and "\x00" in value:
            return "strings cannot contain NUL characters"
        elif isinstance(value, float) and not math.isfinite(value):
            return "numbers must be finite (no NaN or Infinity)"
        elif _is_int(value) and not -_INT64 <= value < _INT64:
            return "integers must fit in 64 bits"
    size = encoded_size(document)
    if size > MAX_CONFIG_BYTES:
        return f"the configuration is {size} bytes serialized; the limit is {MAX_CONFIG_BYTES}"
    return None


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def config_message(version: int, config: JsonObject) -> bytes:
    """What `devices/{id}/config` carries (retained)."""
    return orjson.dumps({"version": version, "config": config})


@dataclass(frozen=True, slots=True)
class DeviceConfig:
    """A device's desired configuration and what became of it."""

    device_id: str
    group: str | None  # the device's group, if any
    own: JsonObject  # the device's own object
    group_config: JsonObject | None  # its group's object; None without a group
    effective: JsonObject  # what `version` is
    version: int  # 0 until the device first has a configuration
    published_version: int | None  # the newest version the broker acknowledged
    reported_version: int | None  # what the device says it applied
    reported_at: datetime | None

    @property
    def delivery_pending(self) -> bool:
        return self.version > (self.published_version or 0)

    @property
    def in_sync(self) -> bool:
        """The device applied the current version (trivially so while there is none)."""
        return (self.reported_version or 0) == self.version


@dataclass(frozen=True, slots=True)
class GroupConfig:
    group: str
    config: JsonObject
    version: int  # 0 until first set
    updated_at: datetime | None


@dataclass(frozen=True, slots=True)
class ConfigChange:
    """One entry of a history: who set which object, and the version it gave."""

    id: int
    time: datetime
    actor: str
    scope: Scope
    target: str | None  # group name or device id; for membership, the group joined
    config: JsonObject | None  # the object set (for membership: the group's object)
    version: int | None  # the device's (or group's) new version; None when unchanged
    devices_versioned: int


@dataclass(frozen=True, slots=True)
class Versioned:
    """A device that got a new version from a change."""

    device_id: str
    version: int
