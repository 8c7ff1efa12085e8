"""Merge rules and limits of desired configuration."""

from __future__ import annotations

from typing import Any

import pytest

from fieldline.domain.config import (
    MAX_CONFIG_BYTES,
    MAX_CONFIG_DEPTH,
    config_message,
    config_problem,
    effective,
    merge,
)


def test_device_keys_override_group_keys_and_objects_merge_deeply() -> None:
    group = {"sampling": {"interval_s": 60, "burst": 5}, "led": True, "channels": [1, 2]}
    own = {"sampling": {"interval_s": 10}, "channels": [3]}
    assert effective(group, own) == {
        "sampling": {"interval_s": 10, "burst": 5},
        "led": True,
        "channels": [3],  # arrays are replaced, never merged
    }
    assert group == {"sampling": {"interval_s": 60, "burst": 5}, "led": True, "channels": [1, 2]}


def test_null_removes_a_group_key_and_a_non_object_replaces_an_object() -> None:
    group = {"a": 1, "b": {"c": 1, "d": 2}, "e": {"f": 1}}
    own = {"a": None, "b": {"c": None}, "e": 5, "g": {"h": None, "i": 1}}
    assert merge(group, own) == {"b": {"d": 2}, "e": 5, "g": {"i": 1}}
    assert effective(None, {"x": None}) == {}
    assert effective({"x": {"y": 1}}, {}) == {"x": {"y": 1}}


@pytest.mark.parametrize(
    ("document", "problem"),
    [
        ([1], "JSON object"),
        ("x", "JSON object"),
        ({"a": float("nan")}, "finite"),
        ({"a": [float("inf")]}, "finite"),
        ({"a": 2**64}, "64 bits"),
        ({"a\x00": 1}, "NUL"),
        ({"a": ["\x00"]}, "NUL"),
        ({"a": "x" * MAX_CONFIG_BYTES}, "limit"),
    ],
)
def test_what_is_not_a_configuration(document: Any, problem: str) -> None:
    found = config_problem(document)
    assert found is not None and problem in found


def test_depth_is_limited_without_recursing() -> None:
    deep: dict[str, Any] = {}
    inner = deep
    for _ in range(10_000):  # far beyond Python's recursion limit
        inner["a"] = {}
        inner = inner["a"]
    found = config_problem(deep)
    assert found is not None and str(MAX_CONFIG_DEPTH) in found
    fine: dict[str, Any] = {"a": 1, "b": [True, None, 1.5, -(2**63)], "c": {"d": "é"}}
    assert config_problem(fine) is None


def test_the_downlink_message() -> None:
    assert config_message(3, {"a": 1}) == b'{"version":3,"config":{"a":1}}'
