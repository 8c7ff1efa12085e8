"""Administration without the API (issue 16) in headless Chromium: groups renamed and
deleted, a device edited, one's own password changed, another's reset, API keys created
and revoked, and the command list's details; on a desktop and, for the main flows, a
phone viewport. What the user sees is asserted, and that the API's state changed.

Data is prepared through the API (httpx) and named uniquely: the platform is shared by
the whole session.
"""

from __future__ import annotations

import asyncio
import json
import threading
import uuid
from typing import Any

import httpx
import orjson
import pytest
from gmqtt.mqtt.constants import MQTTv311
from playwright.sync_api import Page, expect

from fieldline.sim.payloads import status_online
from tests.mqtt_clients import NoReconnectClient
from tests.web.conftest import ADMIN_PASSWORD, Platform, create_user, sign_in
from tests.web.test_admin_pages import listed, open_page, row_of, unique


@pytest.fixture(params=["desktop", "phone"])
def screen(request: pytest.FixtureRequest) -> Page:
    """The main flows run on both."""
    name = "page" if request.param == "desktop" else "phone"
    chosen: Page = request.getfixturevalue(name)
    return chosen


def ok(answer: httpx.Response) -> Any:
    assert answer.is_success, f"{answer.request.method} {answer.request.url}: {answer.text}"
    return answer.json() if answer.content else None


def register(http: httpx.Client, device_id: str, **fields: Any) -> str:
    created = ok(http.post("/api/v1/devices", json={"device_id": device_id, **fields}))
    return str(created["mqtt"]["password"])


def signed_in_as(page: Page, platform: Platform, role: str) -> str:
    username, password = create_user(platform, role)
    sign_in(page, platform, username, password)
    return username


def test_operator_renames_and_deletes_a_group(
    screen: Page, platform: Platform, http: httpx.Client
) -> None:
    page = screen
    name, renamed, taken = unique("farm"), unique("south"), unique("taken")
    ok(http.post("/api/v1/groups", json={"name": name, "description": "pumps"}))
    ok(http.post("/api/v1/groups", json={"name": taken}))
    ok(http.put(f"/api/v1/groups/{name}/config", json={"config": {"interval_s": 60}}))
    device_id = unique("pump")
    register(http, device_id, group=name)
    ok(http.put(f"/api/v1/devices/{device_id}/config", json={"config": {"led": True}}))
    before = ok(http.get(f"/api/v1/devices/{device_id}/config"))["version"]
    signed_in_as(page, platform, "operator")
    open_page(page, platform, "/groups")
    listed(page)

    row = row_of(page, name)
    expect(row.get_by_role("link", name=name)).to_have_attribute("href", f"#/groups/{name}")
    row.get_by_role("button", name=f"Edit {name}").click()
    dialog = page.get_by_role("dialog")
    expect(dialog.get_by_role("heading")).to_have_text(f"Edit group {name}")
    expect(dialog.get_by_label("Description")).to_have_value("pumps")
    dialog.get_by_label("Time zone").fill("Mars/Olympus")
    dialog.get_by_role("button", name="Save").click()
    expect(dialog.get_by_role("alert")).to_contain_text("IANA time zone")
    dialog.get_by_label("Time zone").fill("Europe/Berlin")
    dialog.get_by_label("Name").fill(taken)
    dialog.get_by_role("button", name="Save").click()
    expect(dialog.get_by_role("alert")).to_contain_text(f"group {taken!r} already exists")
    dialog.get_by_label("Name").fill(renamed)
    dialog.get_by_label("Description").fill("pumps and valves")
    dialog.get_by_role("button", name="Save").click()
    expect(page.locator("dialog")).to_have_count(0)
    expect(page.locator(".toast")).to_contain_text(f"Group {name} renamed to {renamed}")
    listed(page)
    expect(row_of(page, renamed).get_by_role("link", name=renamed)).to_be_visible()
    expect(page.get_by_role("link", name=name, exact=True)).to_have_count(0)

    group = ok(http.get(f"/api/v1/groups/{renamed}"))
    assert (group["description"], group["timezone"], group["device_count"]) == (
        "pumps and valves",
        "Europe/Berlin",
        1,
    )
    assert ok(http.get(f"/api/v1/devices/{device_id}"))["group"] == renamed
    assert ok(http.get(f"/api/v1/groups/{renamed}/config"))["config"] == {"interval_s": 60}

    row = row_of(page, renamed)
    row.get_by_role("button", name=f"Delete {renamed}").click()
    dialog = page.get_by_role("dialog")
    expect(dialog).to_contain_text(f"Delete group {renamed}?")
    expect(dialog).to_contain_text("Its 1 device will stay registered, in no group")
    dialog.get_by_role("button", name="Cancel").click()
    assert http.get(f"/api/v1/groups/{renamed}").status_code == 200
    row.get_by_role("button", name=f"Delete {renamed}").click()
    page.get_by_role("dialog").get_by_role("button", name="Delete group").click()
    expect(page.locator(".toast").last).to_contain_text(
        f"Group {renamed} deleted: 1 device now in no group, 1 device reconfigured"
    )
    listed(page)
    expect(row_of(page, renamed)).to_have_count(0)

    assert http.get(f"/api/v1/groups/{renamed}").status_code == 404
    assert ok(http.get(f"/api/v1/devices/{device_id}"))["group"] is None
    config = ok(http.get(f"/api/v1/devices/{device_id}/config"))
    assert (config["version"], config["effective"]) == (before + 1, {"led": True})


def test_a_group_a_provisioning_key_fills_is_not_deleted_and_the_page_says_why(
    page: Page, platform: Platform, http: httpx.Client
) -> None:
    name = unique("line")
    ok(http.post("/api/v1/groups", json={"name": name}))
    ok(http.post("/api/v1/provisioning-keys", json={"name": "flasher", "group": name}))
    signed_in_as(page, platform, "operator")
    open_page(page, platform, "/groups")
    listed(page)
    row_of(page, name).get_by_role("button", name=f"Delete {name}").click()
    dialog = page.get_by_role("dialog")
    expect(dialog).to_contain_text("It has no devices.")
    dialog.get_by_role("button", name="Delete group").click()
    expect(page.get_by_role("alert").filter(has_text="revoke it first")).to_contain_text(
        "provisioning key 'flasher'"
    )
    expect(row_of(page, name)).to_have_count(1)
    assert http.get(f"/api/v1/groups/{name}").status_code == 200


def test_operator_edits_a_device(screen: Page, platform: Platform, http: httpx.Client) -> None:
    page = screen
    first, second = unique("north"), unique("east")
    for group in (first, second):
        ok(http.post("/api/v1/groups", json={"name": group}))
    device_id = unique("valve")
    register(http, device_id, group=first, name="Valve", device_type="valve-v1")
    signed_in_as(page, platform, "operator")
    open_page(page, platform, f"/devices/{device_id}")

    page.get_by_role("button", name="Edit", exact=True).click()
    dialog = page.get_by_role("dialog")
    expect(dialog.get_by_label("Name")).to_have_value("Valve")
    expect(dialog.get_by_label("Group")).to_have_value(first)
    dialog.get_by_label("Name").fill("Valve by the gate")
    dialog.get_by_label("Group").select_option(second)
    dialog.get_by_label("Device type").fill("valve-v2")
    dialog.get_by_role("button", name="Save").click()
    expect(page.locator("dialog")).to_have_count(0)

    head = page.locator(".page-head")
    expect(head).to_contain_text(f"Fleet / {second}")
    expect(head).to_contain_text("Valve by the gate")
    details = page.locator("dl.props").first
    expect(details).to_contain_text("valve-v2")
    device = ok(http.get(f"/api/v1/devices/{device_id}"))
    assert (device["name"], device["group"], device["device_type"]) == (
        "Valve by the gate",
        second,
        "valve-v2",
    )

    page.get_by_role("button", name="Edit", exact=True).click()
    page.get_by_role("dialog").get_by_label("Group").select_option(label="No group")
    page.get_by_role("dialog").get_by_role("button", name="Save").click()
    expect(head).to_contain_text("Fleet / no group")
    assert ok(http.get(f"/api/v1/devices/{device_id}"))["group"] is None


def test_a_user_changes_their_own_password(
    screen: Page, platform: Platform, http: httpx.Client
) -> None:
    page = screen
    username, password = create_user(platform, "viewer")
    sign_in(page, platform, username, password)
    elsewhere = ok(
        http.post("/api/v1/auth/login", json={"username": username, "password": password})
    )["access_token"]
    open_page(page, platform, "/account")
    expect(page.get_by_role("heading", name="Your account", level=1)).to_be_visible()
    expect(page.locator(".page-head")).to_contain_text(username)
    form = page.get_by_role("form", name="Change password")
    new_password = f"new-{uuid.uuid4().hex}"

    form.get_by_label("Current password").fill("not my password")
    form.get_by_label("New password", exact=True).fill(new_password)
    form.get_by_label("New password again").fill(new_password)
    form.get_by_role("button", name="Change password").click()
    expect(form.get_by_role("alert")).to_contain_text("the current password is wrong")

    form.get_by_label("Current password").fill(password)
    form.get_by_label("New password again").fill(new_password + "x")
    form.get_by_role("button", name="Change password").click()
    expect(form.get_by_role("alert")).to_contain_text("The new passwords differ")

    form.get_by_label("New password again").fill(new_password)
    form.get_by_role("button", name="Change password").click()
    expect(page.locator(".toast")).to_contain_text("Your other sessions were signed out")
    expect(form.get_by_label("Current password")).to_have_value("")

    # This tab stays signed in with the new session; the other session ended.
    page.get_by_role("link", name="Manage your API keys").click()
    expect(page.get_by_role("heading", name="API keys", level=1)).to_be_visible()
    assert page.get_by_text("Your session ended").count() == 0
    gone = http.get("/api/v1/auth/me", headers={"Authorization": f"Bearer {elsewhere}"})
    assert gone.status_code == 401
    old = httpx.post(
        f"{platform.api_url}/api/v1/auth/login", json={"username": username, "password": password}
    )
    assert old.status_code == 401
    new = httpx.post(
        f"{platform.api_url}/api/v1/auth/login",
        json={"username": username, "password": new_password},
    )
    assert new.status_code == 200


def test_a_user_creates_copies_and_revokes_an_api_key(
    screen: Page, platform: Platform, http: httpx.Client
) -> None:
    page = screen
    page.context.grant_permissions(["clipboard-read", "clipboard-write"], origin=platform.api_url)
    username = signed_in_as(page, platform, "operator")
    open_page(page, platform, "/api-keys")
    listed(page)
    expect(page.get_by_text("No API keys")).to_be_visible()
    key_name = unique("ci")

    form = page.get_by_role("form", name="New API key")
    form.get_by_label("Name").fill(key_name)
    form.get_by_role("button", name="Create key").click()
    dialog = page.get_by_role("dialog")
    expect(dialog).to_contain_text("shows the key only this once")
    secret = dialog.locator("code.secret-value").inner_text()
    dialog.get_by_role("button", name="Copy").click()
    expect(page.locator(".toast").filter(has_text="Copied")).to_be_visible()
    assert page.evaluate("navigator.clipboard.readText()") == secret
    dialog.get_by_role("button", name="Done").click()
    expect(page.locator("dialog")).to_have_count(0)
    assert secret not in page.content(), "the key is shown once only"

    listed(page)
    row = row_of(page, key_name)
    expect(row).to_contain_text("never")  # not used yet
    me = httpx.get(f"{platform.api_url}/api/v1/auth/me", headers={"X-API-Key": secret})
    assert me.status_code == 200 and me.json()["username"] == username

    row.get_by_role("button", name=f"Revoke {key_name}").click()
    dialog = page.get_by_role("dialog")
    expect(dialog).to_contain_text(f"Revoke {key_name}?")
    dialog.get_by_role("button", name="Revoke key").click()
    expect(page.locator(".toast").filter(has_text=f"API key {key_name} revoked")).to_be_visible()
    listed(page)
    expect(row_of(page, key_name)).to_have_count(0)
    refused = httpx.get(f"{platform.api_url}/api/v1/auth/me", headers={"X-API-Key": secret})
    assert refused.status_code == 401


def test_an_admin_sees_whose_keys_they_are(
    page: Page, platform: Platform, http: httpx.Client
) -> None:
    owner, password = create_user(platform, "viewer")
    token = ok(http.post("/api/v1/auth/login", json={"username": owner, "password": password}))
    key_name = unique("owned")
    ok(
        httpx.post(
            f"{platform.api_url}/api/v1/api-keys",
            json={"name": key_name},
            headers={"Authorization": f"Bearer {token['access_token']}"},
        )
    )
    sign_in(page, platform, "admin", ADMIN_PASSWORD)
    open_page(page, platform, "/api-keys")
    listed(page)
    expect(row_of(page, key_name)).to_contain_text(owner)


def test_an_admin_resets_another_users_password(
    screen: Page, platform: Platform, http: httpx.Client
) -> None:
    page = screen
    username, password = create_user(platform, "operator")
    session = ok(http.post("/api/v1/auth/login", json={"username": username, "password": password}))
    sign_in(page, platform, "admin", ADMIN_PASSWORD)
    open_page(page, platform, "/users")
    listed(page)
    row = row_of(page, username)
    row.get_by_role("button", name=f"Reset password of {username}").click()
    dialog = page.get_by_role("dialog")
    expect(dialog).to_contain_text(f"Every session of {username} ends at once")
    dialog.get_by_label("New password").fill("short")
    dialog.get_by_role("button", name="Set password").click()
    expect(dialog.get_by_role("alert")).to_contain_text("at least 10 characters")
    chosen = f"reset-{uuid.uuid4().hex}"
    dialog.get_by_label("New password").fill(chosen)
    dialog.get_by_role("button", name="Set password").click()
    expect(page.locator(".toast")).to_contain_text(f"Password of {username} set")

    bearer = {"Authorization": f"Bearer {session['access_token']}"}
    assert http.get("/api/v1/auth/me", headers=bearer).status_code == 401
    login = httpx.post(
        f"{platform.api_url}/api/v1/auth/login", json={"username": username, "password": chosen}
    )
    assert login.status_code == 200

    # The admin's own row: no reset, but the way to their own account page.
    me = page.locator("table.data tbody tr[data-username='admin']")
    expect(me.get_by_role("button")).to_have_count(0)
    expect(me.get_by_role("link", name="Your account")).to_have_attribute("href", "#/account")


class AnsweringDevice:
    """A device over MQTT that answers every command with `result`, in a thread with an
    event loop of its own (Playwright's sync API holds the test's)."""

    def __init__(self, device_id: str, password: str, port: int, result: Any) -> None:
        self.device_id, self.password, self.port, self.result = device_id, password, port, result
        self.ready = threading.Event()
        self.failure: BaseException | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> AnsweringDevice:
        self._thread.start()
        assert self.ready.wait(15), "the device did not connect"
        if self.failure is not None:
            raise self.failure
        return self

    def __exit__(self, *_: object) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(15)

    def _run(self) -> None:
        try:
            asyncio.run(self._main())
        except BaseException as exc:
            self.failure = exc
            self.ready.set()

    async def _main(self) -> None:
        self._loop, self._stop = asyncio.get_running_loop(), asyncio.Event()
        subscribed = asyncio.Event()
        client = NoReconnectClient(self.device_id)
        client.set_auth_credentials(self.device_id, self.password)
        client.set_config({"reconnect_retries": 0})
        topic = f"devices/{self.device_id}"

        def on_message(_c: Any, _topic: str, payload: bytes, _q: int, _p: Any) -> int:
            command = json.loads(payload)
            answer = {"command_id": command["command_id"], "status": "succeeded"}
            client.publish(
                f"{topic}/commands/result", orjson.dumps(answer | {"result": self.result}), qos=1
            )
            return 0

        client.on_message = on_message
        client.on_subscribe = lambda *_: subscribed.set()
        await client.connect("127.0.0.1", self.port, version=MQTTv311)
        try:
            client.subscribe(f"{topic}/commands", qos=1)
            await asyncio.wait_for(subscribed.wait(), 10)
            online = status_online(uptime_s=1, heap_free=100_000, boot_count=1)
            client.publish(f"{topic}/status", online, qos=1)
            self.ready.set()
            await self._stop.wait()
        finally:
            await client.disconnect()


def test_the_command_list_shows_parameters_sender_and_the_whole_result(
    page: Page, platform: Platform, http: httpx.Client
) -> None:
    device_id = unique("meter")
    password = register(http, device_id)
    result = {
        "readings": [{"channel": i, "value": i * 1.5} for i in range(30)],
        "note": "<b>ok</b>",
    }
    username = signed_in_as(page, platform, "operator")
    with AnsweringDevice(device_id, password, platform.mqtt_port, result):
        open_page(page, platform, f"/devices/{device_id}")
        form = page.get_by_role("form", name="Send a command")
        form.get_by_label("Command").fill("dump")
        form.get_by_label("Parameters (JSON)").fill('{"channels": 30, "format": "full"}')
        form.get_by_role("button", name="Send command").click()
        commands = page.get_by_role("table", name="Commands")
        row = commands.locator("tbody tr").filter(has_text="dump")
        expect(row.locator(".badge")).to_have_text("succeeded")
        expect(row).to_contain_text('{"channels":30,"format":"full"}')
        expect(row).to_contain_text(f"user:{username}")
        expect(row).to_contain_text('{"readings":[{"channel":0,')  # a line of it, cut short
        expect(row).to_contain_text("…")

        row.get_by_role("button", name="Details of dump").click()
        detail = commands.locator("tr.detail-row")
        shown = detail.locator("pre.command-json")
        expect(shown).to_have_count(2)
        assert json.loads(shown.nth(0).inner_text()) == {"channels": 30, "format": "full"}
        assert json.loads(shown.nth(1).inner_text()) == result  # whole, not cut to a line
        assert '\n  "readings": [' in shown.nth(1).inner_text()  # indented
        expect(detail).to_contain_text(f"user:{username}")

    (command,) = ok(http.get(f"/api/v1/devices/{device_id}/commands"))["items"]
    assert (command["status"], command["result"]) == ("succeeded", result)


def test_a_viewer_sees_no_administration_controls(
    screen: Page, platform: Platform, http: httpx.Client
) -> None:
    page = screen
    group = unique("plain")
    ok(http.post("/api/v1/groups", json={"name": group}))
    device_id = unique("plain")
    register(http, device_id, group=group)
    ok(http.post(f"/api/v1/devices/{device_id}/commands", json={"name": "ping"}))
    signed_in_as(page, platform, "viewer")

    open_page(page, platform, "/groups")
    listed(page)
    row = row_of(page, group)
    expect(row.get_by_role("link", name=group)).to_be_visible()
    expect(row.get_by_role("button", name="Configuration")).to_be_visible()
    expect(row.get_by_role("button", name=f"Edit {group}")).to_have_count(0)
    expect(row.get_by_role("button", name=f"Delete {group}")).to_have_count(0)
    expect(page.get_by_role("form", name="New group")).to_have_count(0)

    open_page(page, platform, f"/devices/{device_id}")
    expect(page.locator(".page-head h1")).to_contain_text(device_id)
    expect(page.locator(".page-head").get_by_role("button")).to_have_count(0)
    expect(page.get_by_role("table", name="Commands")).to_contain_text("ping")

    # Their own account and keys are theirs to manage; other users' are not shown.
    open_page(page, platform, "/account")
    expect(page.get_by_role("form", name="Change password")).to_be_visible()
    open_page(page, platform, "/users")
    expect(page.get_by_text("Not available")).to_be_visible()
