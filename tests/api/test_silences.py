"""Silences over the HTTP API: create, list (active or not), delete; refusals; roles; audit."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from tests.api.conftest import Api
from tests.api.test_alert_rules import RULES, rule, sql
from tests.api.test_auth_and_roles import assert_error

SILENCES = "/api/v1/silences"


def later(**delta: float) -> str:
    return (datetime.now(UTC) + timedelta(**delta)).isoformat()


@pytest.fixture
async def targets(api: Api, admin: dict[str, str]) -> dict[str, Any]:
    """A device, a group and a rule to mute."""
    assert (
        await api.http.post("/api/v1/groups", headers=admin, json={"name": "cold rooms"})
    ).status_code == 201
    assert (
        await api.http.post("/api/v1/devices", headers=admin, json={"device_id": "cold-1"})
    ).status_code == 201
    created = await api.http.post(RULES, headers=admin, json=rule())
    return {"device_id": "cold-1", "group": "cold rooms", "rule_id": created.json()["id"]}


async def test_create_list_and_delete(api: Api, targets: dict[str, Any]) -> None:
    operator, viewer = await api.user("operator"), await api.user("viewer")
    ids = {}
    for target, value in targets.items():
        created = await api.http.post(
            SILENCES,
            headers=operator,
            json={target: value, "ends_at": later(hours=2), "reason": "maintenance"},
        )
        assert created.status_code == 201, created.text
        body = created.json()
        assert body[target] == value and body["active"] is True
        assert {
            k: body[k] for k in ("device_id", "group", "rule_id") if k != target
        } == dict.fromkeys({"device_id", "group", "rule_id"} - {target})
        assert body["reason"] == "maintenance" and body["created_by"].startswith("operator-")
        ids[target] = body["id"]
    future = await api.http.post(
        SILENCES,
        headers=operator,
        json={
            "device_id": "cold-1",
            "starts_at": later(hours=1),
            "ends_at": later(hours=3),
            "reason": "tomorrow's visit",
        },
    )
    assert future.status_code == 201 and future.json()["active"] is False

    listed = await api.http.get(SILENCES, headers=viewer)
    assert [s["id"] for s in listed.json()["items"]] == [
        future.json()["id"],
        ids["rule_id"],
        ids["group"],
        ids["device_id"],
    ]
    active = await api.http.get(SILENCES, headers=viewer, params={"active": "true"})
    assert [s["id"] for s in active.json()["items"]] == [
        ids["rule_id"],
        ids["group"],
        ids["device_id"],
    ]
    inactive = await api.http.get(SILENCES, headers=viewer, params={"active": "false"})
    assert [s["id"] for s in inactive.json()["items"]] == [future.json()["id"]]
    first = await api.http.get(SILENCES, headers=viewer, params={"limit": 3})
    rest = await api.http.get(
        SILENCES, headers=viewer, params={"limit": 3, "cursor": first.json()["next_cursor"]}
    )
    assert [s["id"] for s in rest.json()["items"]] == [ids["device_id"]]
    assert rest.json()["next_cursor"] is None

    deleted = await api.http.delete(f"{SILENCES}/{ids['group']}", headers=operator)
    assert deleted.status_code == 204
    assert_error(
        await api.http.delete(f"{SILENCES}/{ids['group']}", headers=operator), 404, "not_found"
    )
    left = await api.http.get(SILENCES, headers=viewer)
    assert ids["group"] not in [s["id"] for s in left.json()["items"]]


@pytest.mark.parametrize(
    ("body", "says"),
    [
        ({"ends_at": later(hours=1), "reason": "x"}, "exactly one of device_id, group or rule_id"),
        (
            {
                "device_id": "cold-1",
                "group": "cold rooms",
                "ends_at": later(hours=1),
                "reason": "x",
            },
            "exactly one",
        ),
        (
            {"device_id": "nope", "ends_at": later(hours=1), "reason": "x"},
            "device_id: device 'nope' does not exist",
        ),
        (
            {"group": "nope", "ends_at": later(hours=1), "reason": "x"},
            "group: group 'nope' does not exist",
        ),
        (
            {"rule_id": 999999, "ends_at": later(hours=1), "reason": "x"},
            "rule_id: alert rule 999999 does not exist",
        ),
        ({"rule_id": 0, "ends_at": later(hours=1), "reason": "x"}, "rule_id"),
        (
            {"device_id": "cold-1", "ends_at": later(hours=-1), "reason": "x"},
            "ends_at: must be in the future",
        ),
        (
            {
                "device_id": "cold-1",
                "starts_at": later(hours=3),
                "ends_at": later(hours=2),
                "reason": "x",
            },
            "ends_at: must be after starts_at",
        ),
        ({"device_id": "cold-1", "ends_at": "tomorrow", "reason": "x"}, "ends_at"),
        ({"device_id": "cold-1", "reason": "x"}, "ends_at"),
        ({"device_id": "cold-1", "ends_at": later(hours=1), "reason": ""}, "reason"),
        ({"device_id": "cold-1", "ends_at": later(hours=1), "reason": "   "}, "reason"),
        ({"device_id": "cold-1", "ends_at": later(hours=1), "reason": "x" * 501}, "reason"),
    ],
)
async def test_bad_silences_are_refused(
    api: Api, admin: dict[str, str], targets: dict[str, Any], body: dict[str, Any], says: str
) -> None:
    refused = await api.http.post(SILENCES, headers=admin, json=body)
    assert refused.status_code == 422, refused.text
    assert refused.json()["error"]["code"]
    assert says in refused.json()["error"]["message"], refused.text
    assert await sql(api, "SELECT count(*) FROM silences") == [(0,)]


async def test_viewers_list_operators_mute(api: Api, targets: dict[str, Any]) -> None:
    viewer = await api.user("viewer")
    body = {"device_id": "cold-1", "ends_at": later(hours=1), "reason": "x"}
    assert_error(await api.http.post(SILENCES, headers=viewer, json=body), 403, "forbidden")
    operator = await api.user("operator")
    created = (await api.http.post(SILENCES, headers=operator, json=body)).json()
    assert_error(
        await api.http.delete(f"{SILENCES}/{created['id']}", headers=viewer), 403, "forbidden"
    )
    assert_error(await api.http.get(SILENCES), 401, "unauthorized")


async def test_silences_are_audited_and_go_with_their_rule(
    api: Api, admin: dict[str, str], targets: dict[str, Any]
) -> None:
    body = {"rule_id": targets["rule_id"], "ends_at": later(days=1), "reason": "noisy"}
    created = (await api.http.post(SILENCES, headers=admin, json=body)).json()
    await api.http.delete(f"{SILENCES}/{created['id']}", headers=admin)
    log = await api.http.get("/api/v1/audit", headers=admin, params={"target_type": "silence"})
    entries = [(e["action"], e["target_id"], e["detail"]) for e in log.json()["items"]]
    assert [(a, t) for a, t, _ in entries] == [
        ("silence.delete", str(created["id"])),
        ("silence.create", str(created["id"])),
    ]
    assert entries[1][2]["rule_id"] == targets["rule_id"] and entries[1][2]["reason"] == "noisy"

    again = (await api.http.post(SILENCES, headers=admin, json=body)).json()
    await api.http.delete(f"{RULES}/{targets['rule_id']}", headers=admin)
    listed = await api.http.get(SILENCES, headers=admin)
    assert again["id"] not in [s["id"] for s in listed.json()["items"]]  # cascades
