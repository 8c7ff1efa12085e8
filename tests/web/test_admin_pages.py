"""The dashboard's admin pages in headless Chromium: groups, provisioning keys, users,
rejected messages and the audit log, driven as a user would drive them.

Data the pages need is prepared through the API (httpx, synchronously); everything is
named uniquely because the platform is shared by the whole session.
"""

from __future__ import annotations

import base64
import re
import uuid

import httpx
from playwright.sync_api import Dialog, Locator, Page, Request, expect

from tests.web.conftest import ADMIN_PASSWORD, Platform, create_user, sign_in


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def open_page(page: Page, platform: Platform, route: str) -> None:
    """Load the dashboard at `route` afresh (the session stays in localStorage).

    A fresh load rather than a hash change, so that no page still loading (the overview
    right after sign-in) renders into the page under test.
    """
    page.goto("about:blank")
    page.goto(f"{platform.api_url}/#{route}")
    expect(page.locator("main h1, main > .page > .empty").first).to_be_visible()


def settled(page: Page) -> None:
    """Wait until the page after sign-in has rendered, before following a nav link."""
    expect(page.locator("main h1")).to_be_visible()


def listed(page: Page) -> None:
    """Wait until a list fetched again (new filters) shows its answer, not the previous one."""
    expect(page.locator("[aria-busy='true']")).to_have_count(0)


def row_of(page: Page, text: str) -> Locator:
    return page.locator("table.data tbody tr").filter(has_text=text)


def test_admin_creates_a_group_and_edits_its_configuration(
    page: Page, platform: Platform, http: httpx.Client
) -> None:
    name = unique("site")
    sign_in(page, platform, "admin", ADMIN_PASSWORD)
    open_page(page, platform, "/groups")
    expect(page.get_by_role("heading", name="Groups", level=1)).to_be_visible()

    form = page.get_by_role("form", name="New group")
    form.get_by_label("Name").fill(name)
    form.get_by_label("Description").fill("North field pumps")
    form.get_by_label("Description").press("Enter")  # forms submit with Enter

    row = row_of(page, name)
    expect(row).to_contain_text("North field pumps")
    expect(row.get_by_role("link", name=name)).to_have_attribute("href", f"#/groups/{name}")

    row.get_by_role("button", name="Configuration").click()
    expect(page.get_by_text("No shared configuration yet")).to_be_visible()
    page.get_by_role("button", name="Edit configuration").click()

    puts: list[Request] = []
    page.on("request", lambda r: puts.append(r) if r.method == "PUT" else None)
    editor = page.get_by_label("Configuration (JSON object)")
    editor.fill('{"interval_s": ')
    page.get_by_role("button", name="Save configuration").click()
    expect(page.get_by_role("alert").filter(has_text="Not valid JSON")).to_be_visible()
    expect(editor).to_have_attribute("aria-invalid", "true")
    editor.fill("[1, 2]")
    page.get_by_role("button", name="Save configuration").click()
    expect(page.get_by_role("alert").filter(has_text="must be a JSON object")).to_be_visible()
    assert puts == [], "invalid JSON must not be sent"

    editor.fill('{"interval_s": 30, "label": "<b>pump</b>"}')
    page.get_by_role("button", name="Save configuration").click()
    shown = page.locator("pre.config-json")
    expect(shown).to_contain_text('"interval_s": 30')
    expect(shown).to_contain_text('"label": "<b>pump</b>"')
    expect(page.locator(".config-panel")).to_contain_text("Version 1 · updated")
    assert len(puts) == 1
    answer = http.get(f"/api/v1/groups/{name}/config")
    assert answer.json()["config"] == {"interval_s": 30, "label": "<b>pump</b>"}


def test_operator_creates_and_revokes_a_provisioning_key(
    page: Page, platform: Platform, http: httpx.Client
) -> None:
    group = unique("depot")
    assert http.post("/api/v1/groups", json={"name": group}).status_code == 201
    username, password = create_user(platform, "operator")
    key_name = unique("line")
    sign_in(page, platform, username, password)
    settled(page)
    nav = page.get_by_role("navigation", name="Main")
    expect(nav.get_by_role("link", name="Provisioning")).to_be_visible()
    expect(nav.get_by_role("link", name="Rejected")).to_be_visible()
    expect(nav.get_by_role("link", name="Users")).to_have_count(0)
    nav.get_by_role("link", name="Provisioning").click()

    form = page.get_by_role("form", name="New provisioning key")
    form.get_by_label("Name").fill(key_name)
    form.get_by_label("Group").select_option(group)
    form.get_by_label("Device type").fill("pump-v2")
    form.get_by_label("Expires at").fill("2031-06-01T12:00")
    form.get_by_label("Max uses").fill("5")
    form.get_by_role("button", name="Create key").click()

    dialog = page.get_by_role("dialog")
    expect(dialog).to_contain_text("shows the secret only this once")
    expect(dialog).to_contain_text("fieldline simulate --provision-key")
    secret = dialog.locator("code.secret-value").inner_text()
    assert re.fullmatch(r"pk_[A-Za-z0-9_.-]+:[0-9a-f]{64}", secret), secret
    dialog.get_by_role("button", name="Done").click()
    expect(page.locator("dialog")).to_have_count(0)  # removed from the page, not just closed
    assert secret.split(":")[1] not in page.content(), "the secret is shown once only"

    row = row_of(page, key_name)
    expect(row).to_contain_text(group)
    expect(row).to_contain_text("pump-v2")
    expect(row).to_contain_text("0 / 5")
    expect(row).to_contain_text("active")
    key_id = secret.split(":")[0]
    expect(row).to_contain_text(key_id)
    keys = http.get("/api/v1/provisioning-keys").json()["items"]
    (listed,) = [k for k in keys if k["key_id"] == key_id]
    assert listed["expires_at"].startswith("2031-06-01")

    row.get_by_role("button", name="Revoke").click()
    page.get_by_role("dialog").get_by_role("button", name="Cancel").click()
    expect(row).to_contain_text("active")
    row.get_by_role("button", name="Revoke").click()
    page.get_by_role("dialog").get_by_role("button", name="Revoke key").click()
    expect(row).to_contain_text("revoked")
    expect(row.get_by_role("button", name="Revoke")).to_have_count(0)


def test_admin_manages_users(page: Page, platform: Platform, http: httpx.Client) -> None:
    username = unique("ana")
    sign_in(page, platform, "admin", ADMIN_PASSWORD)
    open_page(page, platform, "/users")
    form = page.get_by_role("form", name="New user")
    card = page.locator("section.card").filter(has=form)

    form.get_by_label("Username").fill(username)
    form.get_by_label("Password").fill("short")
    form.get_by_role("button", name="Create user").click()
    expect(card.get_by_role("alert")).to_contain_text("at least 10 characters")

    form.get_by_label("Password").fill("a-long-enough-password")
    form.get_by_label("Role").select_option("viewer")
    form.get_by_label("Password").press("Enter")
    row = row_of(page, username)
    expect(row.locator(".badge")).to_have_text("viewer")
    expect(card.locator(".alert")).to_be_empty()  # hidden when empty

    form.get_by_label("Username").fill(username)
    form.get_by_label("Password").fill("another-long-password")
    form.get_by_role("button", name="Create user").click()
    expect(card.get_by_role("alert")).to_contain_text(f"user '{username}' already exists")

    row.get_by_label(f"New role of {username}").select_option("operator")
    row.get_by_role("button", name="Save").click()
    expect(row.locator(".badge")).to_have_text("operator")
    (user,) = [u for u in http.get("/api/v1/users").json()["items"] if u["username"] == username]
    assert user["role"] == "operator"

    # The signed-in admin is offered neither deletion nor a role change of themself.
    me = page.locator("table.data tbody tr[data-username='admin']")
    expect(me).to_contain_text("(you)")
    expect(me.get_by_role("button")).to_have_count(0)

    row.get_by_role("button", name="Delete").click()
    dialog = page.get_by_role("dialog")
    expect(dialog).to_contain_text(f"Delete {username}?")
    dialog.get_by_role("button", name="Delete user").click()
    expect(row).to_have_count(0)
    assert http.get(f"/api/v1/users/{user['id']}").status_code == 404


def test_rejected_message_payload_is_shown_as_text(
    page: Page, platform: Platform, http: httpx.Client
) -> None:
    device_id = unique("probe")
    answer = http.post("/api/v1/devices", json={"device_id": device_id})
    assert answer.status_code == 201, answer.text
    device = httpx.BasicAuth(device_id, answer.json()["mqtt"]["password"])
    url = f"{platform.api_url}/api/v1/devices/{device_id}/telemetry"
    markup = b'{"temperature": "<script>alert(1)</script>"'  # not JSON: unclosed
    assert httpx.post(url, content=markup, auth=device).status_code == 400
    binary = b"\xff\xfe\x00\x01"  # not UTF-8
    assert httpx.post(url, content=binary, auth=device).status_code == 400

    dialogs: list[str] = []

    def dismiss(dialog: Dialog) -> None:  # an alert() would mean the payload ran as script
        dialogs.append(dialog.message)
        dialog.dismiss()

    page.on("dialog", dismiss)
    sign_in(page, platform, "admin", ADMIN_PASSWORD)
    open_page(page, platform, "/rejected")
    page.get_by_label("Device id").fill(device_id)
    page.get_by_label("Device id").press("Enter")
    listed(page)
    rows = page.locator("table.data tbody tr")
    expect(rows).to_have_count(2)
    expect(rows.first).to_contain_text("Invalid JSON")  # newest first: the binary one
    expect(page).to_have_url(re.compile(rf"#/rejected\?device_id={device_id}$"))

    markup_row = rows.nth(1)
    markup_row.get_by_role("button", name="Payload").click()
    expect(markup_row.get_by_role("button", name="Payload")).to_have_attribute(
        "aria-expanded", "true"
    )
    payload = page.locator("tr.detail-row pre")
    expect(payload).to_have_text(markup.decode())
    assert page.locator("main script").count() == 0
    assert page.evaluate("document.querySelectorAll('script').length") == 1  # app.js only
    assert dialogs == []

    rows.first.get_by_role("button", name="Payload").click()
    binary_detail = page.locator("tr.detail-row").first
    expect(binary_detail).to_contain_text("not UTF-8 text: shown as base64")
    expect(binary_detail.locator("pre")).to_have_text(base64.b64encode(binary).decode())

    # The device page links here with the device in the address.
    open_page(page, platform, f"/rejected?device_id={device_id}&reason=too_large")
    expect(page.get_by_label("Device id")).to_have_value(device_id)
    expect(page.get_by_text("No rejected messages match these filters.")).to_be_visible()
    page.get_by_label("Reason").select_option("invalid_json")
    expect(rows).to_have_count(2)


def test_audit_log_shows_a_group_creation(
    page: Page, platform: Platform, http: httpx.Client
) -> None:
    name = unique("audited")
    assert http.post("/api/v1/groups", json={"name": name}).status_code == 201
    sign_in(page, platform, "admin", ADMIN_PASSWORD)
    open_page(page, platform, "/audit")
    page.get_by_label("Action").fill("group.create")
    page.get_by_label("Target id").fill(name)
    page.get_by_label("Target id").press("Enter")
    listed(page)
    rows = page.locator("table.data tbody tr")
    expect(rows).to_have_count(1)
    expect(rows).to_contain_text("user:admin")
    expect(rows).to_contain_text("group.create")
    expect(rows).to_contain_text(name)

    # A value in the table filters by itself; "admin" alone means the user admin.
    page.get_by_role("button", name="Clear").click()
    page.get_by_label("Actor").fill("admin")
    page.get_by_label("Actor").press("Enter")
    listed(page)
    expect(rows.first).to_contain_text("user:admin")
    rows.filter(has_text=name).get_by_role("button", name=name).click()
    expect(page.get_by_label("Target id")).to_have_value(name)
    expect(rows).to_have_count(1)


def test_viewer_sees_groups_read_only(page: Page, platform: Platform, http: httpx.Client) -> None:
    name = unique("viewed")
    assert http.post("/api/v1/groups", json={"name": name}).status_code == 201
    config = http.put(f"/api/v1/groups/{name}/config", json={"config": {"mode": "eco"}})
    assert config.status_code == 200, config.text
    username, password = create_user(platform, "viewer")
    sign_in(page, platform, username, password)

    nav = page.get_by_role("navigation", name="Main")
    expect(nav.get_by_role("link", name="Groups")).to_be_visible()
    for hidden in ("Rejected", "Provisioning", "Users", "Audit log"):
        expect(nav.get_by_role("link", name=hidden)).to_have_count(0)

    nav.get_by_role("link", name="Groups").click()
    row = row_of(page, name)
    expect(row).to_be_visible()
    expect(page.get_by_role("form", name="New group")).to_have_count(0)
    row.get_by_role("button", name="Configuration").click()
    expect(page.locator("pre.config-json")).to_contain_text('"mode": "eco"')
    expect(page.get_by_role("button", name="Edit configuration")).to_have_count(0)
    expect(page.locator("main textarea")).to_have_count(0)

    open_page(page, platform, "/users")
    expect(page.locator("main")).to_contain_text("Not available")
