"""`fieldline group list|rename|delete` as a user runs them, against a running `fieldline up`."""

from __future__ import annotations

import json
from collections.abc import Iterator

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
