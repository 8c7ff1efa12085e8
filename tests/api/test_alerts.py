"""The alerts API: viewers read, operators acknowledge; bad input answers JSON errors."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from tests.api.conftest import Api


async def _alert(api: Api, device_id: str, *, severity: str = "critical", state: str = "firing"):
    async with api.pool.connection() as conn:
        await conn.execute(
            "INSERT INTO devices (device_id) VALUES (%s) ON CONFLICT DO NOTHING", (device_id,)
        )
        rule = await (
            await conn.execute(
                "INSERT INTO alert_rules (name, severity, scope_kind, kind, metric, condition,"
                " channels, created_by) VALUES ('warm', %s, 'fleet', 'threshold', 't',"
                ' \'{"type": "threshold", "metric": "t", "op": ">", "value": 8}\','
                " ARRAY(SELECT id FROM notification_channels), 'test') RETURNING id",
                (severity,),
            )
        ).fetchone()
        assert rule is not None
        row = await (
            await conn.execute(
                "INSERT INTO alerts (rule_id, rule_name, severity, device_id, metric, state,"
                " started_at, started_value, transitions) VALUES (%s, 'warm', %s, %s, 't', %s,"
                " %s, 9.5, 1) RETURNING id",
                (rule["id"], severity, device_id, state, datetime(2026, 12, 7, tzinfo=UTC)),
            )
        ).fetchone()
        assert row is not None
        return int(row["id"]), int(rule["id"])


async def test_viewers_list_and_read_alerts_newest_first_with_filters(api: Api) -> None:
    viewer = await api.user("viewer")
    first, _ = await _alert(api, "a", severity="warning")
    second, rule = await _alert(api, "b")
    third, _ = await _alert(api, "c", state="resolved")
    response = await api.http.get("/api/v1/alerts", headers=viewer)
    assert response.status_code == 200
    assert [a["id"] for a in response.json()["items"]] == [third, second, first]
    item = response.json()["items"][1]
    assert set(item) == {
        "id", "kind", "rule_id", "rule_name", "channel_id", "severity", "device_id", "metric",
        "state", "started_at", "started_value", "acknowledged_at", "acknowledged_by", "ack_note",
        "resolved_at", "resolved_value", "resolved_reason", "escalated_at", "last_notified_at",
        "silenced",
    }  # fmt: skip
    assert (item["rule_id"], item["silenced"], item["started_value"]) == (rule, False, 9.5)

    async def ids(**params: Any) -> list[int]:
        got = await api.http.get("/api/v1/alerts", headers=viewer, params=params)
        assert got.status_code == 200, got.text
        return [a["id"] for a in got.json()["items"]]

    assert await ids(state="active") == [second, first]
    assert await ids(state="resolved") == [third]
    assert await ids(severity="warning") == [first]
    assert await ids(device_id="b") == [second]
    assert await ids(rule_id=rule) == [second]
    page = await api.http.get("/api/v1/alerts", headers=viewer, params={"limit": 2})
    assert [a["id"] for a in page.json()["items"]] == [third, second]
    rest = await api.http.get(
        "/api/v1/alerts", headers=viewer, params={"cursor": page.json()["next_cursor"]}
    )
    assert [a["id"] for a in rest.json()["items"]] == [first]
    assert rest.json()["next_cursor"] is None
    one = await api.http.get(f"/api/v1/alerts/{first}", headers=viewer)
    assert (one.status_code, one.json()["device_id"]) == (200, "a")
    summary = await api.http.get("/api/v1/alerts/summary", headers=viewer)
    assert summary.json() == {
        "firing": {"info": 0, "warning": 1, "critical": 1},
        "acknowledged": {"info": 0, "warning": 0, "critical": 0},
    }


async def test_bad_input_answers_json_errors(api: Api) -> None:
    viewer = await api.user("viewer")
    for path, status in [
        ("/api/v1/alerts/999", 404),
        ("/api/v1/alerts/0", 422),
        ("/api/v1/alerts/abc", 422),
        ("/api/v1/alerts?state=burning", 422),
        ("/api/v1/alerts?severity=loud", 422),
        ("/api/v1/alerts?cursor=bm9wZQ", 400),
    ]:
        response = await api.http.get(path, headers=viewer)
        assert response.status_code == status, (path, response.text)
        assert set(response.json()["error"]) >= {"code", "message"}
    assert (await api.http.get("/api/v1/alerts")).status_code == 401


async def test_operators_acknowledge_once_with_audit_and_notification(
    api: Api, admin: dict[str, str]
) -> None:
    async with api.pool.connection() as conn:
        await conn.execute(
            "INSERT INTO notification_channels (name, type, config) VALUES ('a', 'webhook', '{}')"
        )
    alert_id, _ = await _alert(api, "a")
    viewer, operator = await api.user("viewer"), await api.user("operator")
    path = f"/api/v1/alerts/{alert_id}/ack"
    refused = await api.http.post(path, headers=viewer, json={})
    assert refused.status_code == 403
    too_long = await api.http.post(path, headers=operator, json={"note": "x" * 1001})
    assert too_long.status_code == 422
    response = await api.http.post(path, headers=operator, json={"note": "on it"})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["state"] == "acknowledged" and body["ack_note"] == "on it"
    assert body["acknowledged_by"].startswith("operator-")
    again = await api.http.post(path, headers=operator)
    assert again.status_code == 409
    assert again.json()["error"]["code"] == "conflict"
    missing = await api.http.post("/api/v1/alerts/12345/ack", headers=operator)
    assert missing.status_code == 404
    audit = await api.http.get(
        "/api/v1/audit", headers=admin, params={"action": "alert.acknowledge"}
    )
    (entry,) = audit.json()["items"]
    assert entry["target_id"] == str(alert_id)
    async with api.pool.connection() as conn:
        rows = await (
            await conn.execute("SELECT event, idempotency_key, body FROM notifications")
        ).fetchall()
    assert [(r["event"], r["idempotency_key"]) for r in rows] == [
        ("acknowledged", f"alert-{alert_id}-2")
    ]
    assert rows[0]["body"]["note"] == "on it"
    resolved, _ = await _alert(api, "b", state="resolved")
    closed = await api.http.post(f"/api/v1/alerts/{resolved}/ack", headers=operator)
    assert closed.status_code == 409
