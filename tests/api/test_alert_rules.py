"""Alert rules over the HTTP API: round trips, every refusal as JSON 422, roles, audit,
and what a change does to the rule's revision and open alerts."""

from __future__ import annotations

from typing import Any

import psycopg
import pytest

from tests.api.conftest import Api
from tests.api.test_auth_and_roles import assert_error

RULES = "/api/v1/alert-rules"
WARM = {"type": "threshold", "metric": "temperature", "op": ">", "value": 8, "for_seconds": 600}


def rule(**changes: Any) -> dict[str, Any]:
    return {"name": "cold room warm", "severity": "critical", "condition": WARM} | changes


async def add_channel(api: Api, name: str) -> int:
    """A notification channel row (the channels API is another module's)."""
    async with await psycopg.AsyncConnection.connect(api.url, autocommit=True) as conn:
        row = await (
            await conn.execute(
                "INSERT INTO notification_channels (name, type, config)"
                " VALUES (%s, 'webhook', '{}') RETURNING id",
                (name,),
            )
        ).fetchone()
    assert row is not None
    return int(row[0])


async def sql(api: Api, query: str, *params: object) -> list[tuple[Any, ...]]:
    async with await psycopg.AsyncConnection.connect(api.url, autocommit=True) as conn:
        cursor = await conn.execute(query, params)
        return await cursor.fetchall() if cursor.description else []


async def test_create_read_list_change_delete(api: Api, admin: dict[str, str]) -> None:
    operator = await api.user("operator")
    viewer = await api.user("viewer")
    pager, email = await add_channel(api, "pager"), await add_channel(api, "email")
    created = await api.http.post(
        RULES,
        headers=operator,
        json=rule(
            scope={"group": "cold rooms"},
            channels=[pager],
            repeat_seconds=3600,
            escalate_after_seconds=900,
            escalate_channels=[email],
        ),
    )
    assert created.status_code == 201, created.text
    body = created.json()
    assert body["scope"] == {"group": "cold rooms"}
    assert body["condition"] == WARM | {"value": 8.0, "clear_value": None, "clear_for_seconds": 0}
    assert (body["channels"], body["escalate_channels"]) == ([pager], [email])
    assert (body["repeat_seconds"], body["escalate_after_seconds"]) == (3600, 900)
    assert body["enabled"] is True and body["revision"] == 1
    assert body["created_by"].startswith("operator-")
    assert body["created_at"] and body["updated_at"]

    fetched = await api.http.get(f"{RULES}/{body['id']}", headers=viewer)
    assert fetched.status_code == 200 and fetched.json() == body
    stored = await sql(api, "SELECT kind, metric FROM alert_rules WHERE id = %s", body["id"])
    assert stored == [("threshold", "temperature")]

    renamed = await api.http.patch(
        f"{RULES}/{body['id']}", headers=operator, json={"name": "warm", "severity": "warning"}
    )
    assert renamed.status_code == 200, renamed.text
    assert (renamed.json()["name"], renamed.json()["severity"]) == ("warm", "warning")
    assert renamed.json()["revision"] == 1  # nothing it watches changed

    offline = await api.http.patch(
        f"{RULES}/{body['id']}",
        headers=operator,
        json={"condition": {"type": "offline", "for_seconds": 300}, "scope": {}},
    )
    assert offline.json()["revision"] == 2
    assert offline.json()["scope"] == {}
    stored = await sql(api, "SELECT kind, metric FROM alert_rules WHERE id = %s", body["id"])
    assert stored == [("offline", None)]

    deleted = await api.http.delete(f"{RULES}/{body['id']}", headers=operator)
    assert deleted.status_code == 204 and deleted.content == b""
    gone = await api.http.get(f"{RULES}/{body['id']}", headers=viewer)
    assert_error(gone, 404, "not_found")
    assert_error(await api.http.delete(f"{RULES}/{body['id']}", headers=operator), 404, "not_found")
    assert_error(
        await api.http.patch(f"{RULES}/{body['id']}", headers=operator, json={"name": "x"}),
        404,
        "not_found",
    )


async def test_list_filters_and_pages(api: Api, admin: dict[str, str]) -> None:
    for i, severity in enumerate(["info", "warning", "critical", "critical", "info"]):
        created = await api.http.post(
            RULES, headers=admin, json=rule(name=f"r{i}", severity=severity, enabled=i % 2 == 0)
        )
        assert created.status_code == 201, created.text
    names, cursor = [], None
    while True:
        page = await api.http.get(
            RULES, headers=admin, params={"limit": 2} | ({"cursor": cursor} if cursor else {})
        )
        names += [r["name"] for r in page.json()["items"]]
        cursor = page.json()["next_cursor"]
        if cursor is None:
            break
    assert names == ["r0", "r1", "r2", "r3", "r4"]
    critical = await api.http.get(RULES, headers=admin, params={"severity": "critical"})
    assert [r["name"] for r in critical.json()["items"]] == ["r2", "r3"]
    enabled = await api.http.get(RULES, headers=admin, params={"enabled": "true"})
    assert [r["name"] for r in enabled.json()["items"]] == ["r0", "r2", "r4"]
    both = await api.http.get(RULES, headers=admin, params={"enabled": False, "severity": "info"})
    assert [r["name"] for r in both.json()["items"]] == []
    assert_error(
        await api.http.get(RULES, headers=admin, params={"severity": "x"}), 422, "validation_error"
    )
    assert_error(
        await api.http.get(RULES, headers=admin, params={"cursor": "nope"}), 400, "bad_request"
    )


@pytest.mark.parametrize(
    ("changes", "says"),
    [
        ({"name": ""}, "name"),
        ({"name": "x" * 129}, "name"),
        ({"severity": "fatal"}, "severity"),
        ({"scope": {"site": "a"}}, "scope: unknown field 'site'"),
        ({"scope": {"group": "a", "device_id": "b"}}, "scope: give one of"),
        ({"condition": {"type": "smoke"}}, "condition.type"),
        ({"condition": WARM | {"op": "~"}}, "condition.op"),
        ({"condition": WARM | {"value": "hot"}}, "condition.value: a finite number"),
        ({"condition": WARM | {"clear_value": 9}}, "condition.clear_value"),
        ({"condition": WARM | {"for_seconds": -1}}, "condition.for_seconds"),
        ({"condition": WARM | {"for_seconds": 1.5}}, "condition.for_seconds"),
        ({"condition": {"type": "no_data", "metric": "t", "for_seconds": 0}}, "above 0"),
        ({"condition": {"type": "threshold", "op": ">", "value": 1}}, "condition.metric"),
        ({"repeat_seconds": -1}, "repeat_seconds"),
        ({"repeat_seconds": 366 * 86_400 + 1}, "repeat_seconds"),
        ({"escalate_after_seconds": 2.5}, "escalate_after_seconds"),
        ({"channels": [987654]}, "channels: notification channel 987654 does not exist"),
        ({"channels": ["a"]}, "channels"),
        (
            {"escalate_channels": [987654], "escalate_after_seconds": 60},
            "escalate_channels: notification channel 987654 does not exist",
        ),
        ({"escalate_channels": [1]}, "escalate_channels: need escalate_after_seconds above 0"),
    ],
)
async def test_bad_rules_are_refused_with_what_is_wrong(
    api: Api, admin: dict[str, str], changes: dict[str, Any], says: str
) -> None:
    refused = await api.http.post(RULES, headers=admin, json=rule(**changes))
    assert refused.status_code == 422, refused.text
    assert says in refused.json()["error"]["message"]
    assert await sql(api, "SELECT count(*) FROM alert_rules") == [(0,)]


async def test_bad_changes_are_refused_and_change_nothing(api: Api, admin: dict[str, str]) -> None:
    created = (await api.http.post(RULES, headers=admin, json=rule())).json()
    url = f"{RULES}/{created['id']}"
    for patch, says in [
        ({"name": None}, "name cannot be null"),
        ({"condition": {"type": "offline", "for_seconds": "soon"}}, "condition.for_seconds"),
        ({"scope": {"device_type": ""}, "condition": {"type": "x"}}, "condition.type"),
        ({"escalate_channels": [1]}, "need escalate_after_seconds above 0"),
        ({"channels": [5, 424242]}, "notification channel 5 does not exist"),
    ]:
        refused = await api.http.patch(url, headers=admin, json=patch)
        assert refused.status_code == 422, (patch, refused.text)
        assert says in refused.json()["error"]["message"], refused.text
    assert (await api.http.get(url, headers=admin)).json() == created
    assert_error(await api.http.get(f"{RULES}/0", headers=admin), 422, "validation_error")
    assert_error(await api.http.get(f"{RULES}/{2**63}", headers=admin), 422, "validation_error")


async def test_viewers_read_operators_write(api: Api, admin: dict[str, str]) -> None:
    viewer = await api.user("viewer")
    assert (await api.http.get(RULES, headers=viewer)).status_code == 200
    assert_error(await api.http.post(RULES, headers=viewer, json=rule()), 403, "forbidden")
    created = (await api.http.post(RULES, headers=admin, json=rule())).json()
    url = f"{RULES}/{created['id']}"
    assert_error(await api.http.patch(url, headers=viewer, json={"name": "y"}), 403, "forbidden")
    assert_error(await api.http.delete(url, headers=viewer), 403, "forbidden")
    assert_error(await api.http.get(RULES), 401, "unauthorized")


async def test_changes_are_audited(api: Api, admin: dict[str, str]) -> None:
    created = (await api.http.post(RULES, headers=admin, json=rule())).json()
    url = f"{RULES}/{created['id']}"
    await api.http.patch(url, headers=admin, json={"repeat_seconds": 60})
    await api.http.patch(url, headers=admin, json={"condition": WARM | {"value": 9}})
    await api.http.delete(url, headers=admin)
    log = await api.http.get("/api/v1/audit", headers=admin, params={"target_type": "alert_rule"})
    entries = [(e["action"], e["target_id"], e["detail"]) for e in log.json()["items"]]
    target = str(created["id"])
    assert [(a, t) for a, t, _ in entries] == [
        ("alert_rule.delete", target),
        ("alert_rule.update", target),
        ("alert_rule.update", target),
        ("alert_rule.create", target),
    ]
    deleted, redefined, repeat, create = (d for _, _, d in entries)
    assert create["name"] == "cold room warm" and create["condition"]["value"] == 8
    assert repeat == {"changes": ["repeat_seconds"], "revision": 1}
    assert redefined["changes"] == ["condition"] and redefined["revision"] == 2
    assert redefined["condition"]["value"] == 9 and redefined["alerts_resolved"] == "rule changed"
    assert deleted["name"] == "cold room warm"


async def open_alert(api: Api, rule_id: int, device_id: str) -> int:
    """An open alert of the rule, with per-device state, as the evaluator would leave them."""
    await sql(api, "INSERT INTO devices (device_id) VALUES (%s) ON CONFLICT DO NOTHING", device_id)
    await sql(
        api,
        "INSERT INTO alert_state (rule_id, device_id, revision, phase, since, last_time)"
        " VALUES (%s, %s, 1, 'firing', now(), now())",
        rule_id,
        device_id,
    )
    [(alert_id,)] = await sql(
        api,
        "INSERT INTO alerts (rule_id, rule_name, severity, device_id, metric, started_at)"
        " VALUES (%s, 'cold room warm', 'critical', %s, 'temperature', now()) RETURNING id",
        rule_id,
        device_id,
    )
    return int(alert_id)


async def alert(api: Api, alert_id: int) -> tuple[Any, ...]:
    [row] = await sql(
        api,
        "SELECT state, resolved_reason, rule_id, rule_name, resolved_at IS NOT NULL"
        " FROM alerts WHERE id = %s",
        alert_id,
    )
    return row


async def state_rows(api: Api, rule_id: int) -> int:
    [(count,)] = await sql(api, "SELECT count(*) FROM alert_state WHERE rule_id = %s", rule_id)
    return int(count)


async def test_a_new_condition_resolves_open_alerts_and_bumps_the_revision(
    api: Api, admin: dict[str, str]
) -> None:
    rule_id = (await api.http.post(RULES, headers=admin, json=rule())).json()["id"]
    url = f"{RULES}/{rule_id}"
    kept = await open_alert(api, rule_id, "cold-1")
    await api.http.patch(url, headers=admin, json={"name": "renamed", "channels": []})
    assert (await alert(api, kept))[0] == "firing"  # a rename changes nothing it watches
    assert await state_rows(api, rule_id) == 1
    same = await api.http.patch(url, headers=admin, json={"condition": WARM, "scope": {}})
    assert same.json()["revision"] == 1  # the same condition again is no change
    assert (await alert(api, kept))[0] == "firing"

    changed = await api.http.patch(url, headers=admin, json={"scope": {"device_id": "cold-1"}})
    assert changed.json()["revision"] == 2
    assert await alert(api, kept) == ("resolved", "rule changed", rule_id, "cold room warm", True)
    assert await state_rows(api, rule_id) == 0


async def test_disabling_resolves_open_alerts(api: Api, admin: dict[str, str]) -> None:
    rule_id = (await api.http.post(RULES, headers=admin, json=rule())).json()["id"]
    firing = await open_alert(api, rule_id, "cold-1")
    disabled = await api.http.patch(
        f"{RULES}/{rule_id}",
        headers=admin,
        json={"enabled": False, "condition": WARM | {"value": 5}},
    )
    assert disabled.json()["enabled"] is False and disabled.json()["revision"] == 2
    assert (await alert(api, firing))[:2] == ("resolved", "rule disabled")
    assert await state_rows(api, rule_id) == 0


async def test_deleting_resolves_open_alerts_and_keeps_the_name(
    api: Api, admin: dict[str, str]
) -> None:
    rule_id = (await api.http.post(RULES, headers=admin, json=rule())).json()["id"]
    firing = await open_alert(api, rule_id, "cold-1")
    [(resolved,)] = await sql(
        api,
        "INSERT INTO alerts (rule_id, rule_name, severity, device_id, started_at, state,"
        " resolved_at, resolved_reason) VALUES (%s, 'cold room warm', 'critical', 'cold-2',"
        " now(), 'resolved', now() - interval '1 day', 'cleared') RETURNING id",
        rule_id,
    )
    assert (await api.http.delete(f"{RULES}/{rule_id}", headers=admin)).status_code == 204
    assert await alert(api, firing) == ("resolved", "rule deleted", None, "cold room warm", True)
    assert (await alert(api, resolved))[:2] == ("resolved", "cleared")  # left as it was
