"""`fieldline group list|rename|delete`, `fieldline firmware` and `fieldline rollout` as a user
runs them, against one running `fieldline up` (commands of the API alone: one broker is enough)."""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.api.conftest import platform_on_pg15
from tests.conftest import PgServer
from tests.e2e.conftest import ADMIN_PASSWORD, Platform
from tests.e2e.test_cli import fieldline


@pytest.fixture(scope="module")
def platform(pg15: PgServer) -> Iterator[Platform]:
    with platform_on_pg15(pg15, "cli-groups", {"FIELDLINE_BROKER": "amqtt"}) as running:
        yield running


def test_groups_listed_renamed_and_deleted_from_the_cli(platform: Platform) -> None:
    env = {
        "FIELDLINE_API_URL": platform.api_url,
        "FIELDLINE_API_USERNAME": "admin",
        "FIELDLINE_API_PASSWORD": ADMIN_PASSWORD,
    }
    with httpx.Client(base_url=platform.api_url, headers=platform.headers, timeout=30) as http:
        assert (
            http.post(
                "/api/v1/groups", json={"name": "west yard", "timezone": "Europe/Lisbon"}
            ).status_code
            == 201
        )
        assert http.post("/api/v1/groups", json={"name": "east yard"}).status_code == 201
        assert (
            http.post(
                "/api/v1/devices", json={"device_id": "yard-1", "group": "west yard"}
            ).status_code
            == 201
        )

        listed = fieldline("group", "list", env=env)
        assert listed.returncode == 0, listed.stderr
        (line,) = [line for line in listed.stdout.splitlines() if line.startswith("west yard")]
        assert "Europe/Lisbon" in line
        as_json = json.loads(fieldline("group", "list", "--json", env=env).stdout)
        assert sorted(g["name"] for g in as_json) == ["east yard", "west yard"]

        taken = fieldline("group", "rename", "west yard", "east yard", env=env)
        assert taken.returncode == 1
        assert "already exists" in taken.stderr
        renamed = fieldline("group", "rename", "west yard", "north yard", env=env)
        assert renamed.returncode == 0, renamed.stderr
        assert http.get("/api/v1/devices/yard-1").json()["group"] == "north yard"

        unasked = fieldline("group", "delete", "north yard", env=env)
        assert unasked.returncode == 1  # no terminal to say yes: nothing deleted
        assert http.get("/api/v1/groups/north yard").status_code == 200
        deleted = fieldline("group", "delete", "north yard", "--yes", env=env)
        assert deleted.returncode == 0, deleted.stderr
        assert "devices now in no group: 1," in deleted.stdout
        assert http.get("/api/v1/groups/north yard").status_code == 404
        assert http.get("/api/v1/devices/yard-1").json()["group"] is None


def test_firmware_and_rollouts_through_the_cli(platform: Platform, tmp_path: Path) -> None:
    api = {
        "FIELDLINE_API_URL": platform.api_url,
        "FIELDLINE_API_USERNAME": "admin",
        "FIELDLINE_API_PASSWORD": ADMIN_PASSWORD,
    }
    image = tmp_path / "valve.bin"
    image.write_bytes(os.urandom(70_000))
    uploaded = fieldline(
        "firmware", "upload", str(image), "--model", "valve-v1", "--version", "2.0.0", env=api
    )
    assert uploaded.returncode == 0, uploaded.stderr
    assert hashlib.sha256(image.read_bytes()).hexdigest() in uploaded.stdout
    listed = json.loads(
        fieldline("firmware", "list", "--model", "valve-v1", "--json", env=api).stdout
    )
    assert [(i["version"], i["size_bytes"]) for i in listed] == [("2.0.0", 70_000)]
    keys = fieldline("firmware", "keys", env=api)
    assert keys.returncode == 0 and keys.stdout.rstrip().endswith("active"), keys.stdout
    again = fieldline(
        "firmware", "upload", str(image), "--model", "valve-v1", "--version", "2.0.0", env=api
    )
    assert again.returncode == 1 and "409" in again.stderr

    for device_id in ("valve-1", "valve-2"):
        made = fieldline("device", "create", device_id, "--type", "valve-v1", env=api)
        assert made.returncode == 0, made.stderr
    created = fieldline(
        "rollout", "create", "--model", "valve-v1", "--version", "2.0.0",
        "--device", "valve-1", "--device", "valve-2", "--stage", "1", "--stage", "100%@3600",
        env=api,
    )  # fmt: skip
    assert created.returncode == 0, created.stderr
    assert "2 devices targeted" in created.stdout, created.stdout
    rollout_id = re.search(r"rollout (\d+)", created.stdout)
    assert rollout_id is not None
    number = rollout_id.group(1)
    shown = json.loads(fieldline("rollout", "show", number, "--json", env=api).stdout)
    assert [s.get("devices") or s.get("percentage") for s in shown["stages"]] == [1, 100]
    for action, state in (("pause", "paused"), ("resume", "running"), ("cancel", "cancelled")):
        changed = fieldline("rollout", action, number, env=api)
        assert changed.returncode == 0, changed.stderr
        assert f"rollout {number}: {state}" in changed.stdout
    refused = fieldline("rollout", "raise", number, "50", env=api)
    assert refused.returncode == 1 and "cancelled" in refused.stderr
    assert f"{number}  cancelled" in fieldline("rollout", "list", env=api).stdout
