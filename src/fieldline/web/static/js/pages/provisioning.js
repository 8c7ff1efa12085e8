// Provisioning keys: devices flashed with one register themselves (POST /provision).
//
// The secret exists in the create answer only, so it is shown once, in a dialog with
// a Copy button, together with how a device (or the simulator) uses it.

import { api } from "../api.js";
import { ago, attempt, confirmAction, empty, errorBox, field, fmtTime, h, showSecret, toast } from "../dom.js";
import { pagedTable } from "../paged.js";

const STATE_BADGE = { active: "ok", revoked: "bad", expired: "expired", exhausted: "pending" };

/** datetime-local's "2025-01-31T18:00" (local time) as "YYYY-MM-DDTHH:MM" for its min attribute. */
function localNow() {
  const now = new Date();
  return new Date(now.getTime() - now.getTimezoneOffset() * 60000).toISOString().slice(0, 16);
}

function secretExplanation() {
  return [
    "Copy it now: fieldline shows the secret only this once. Flash this value (KEY_ID:SECRET) into your devices' "
      + "firmware and each one registers itself on first boot. To try it with simulated devices, run ",
    h("code", {}, "fieldline simulate --provision-key VALUE"),
    ".",
  ];
}

function createForm(groups, onCreated) {
  const name = h("input", { name: "name", required: true, maxlength: 128, autocomplete: "off", placeholder: "factory-line-2" });
  const group = h(
    "select",
    { name: "group" },
    h("option", { value: "" }, "No group"),
    groups.map((g) => h("option", { value: g.name }, g.name)),
  );
  const deviceType = h("input", { name: "device_type", maxlength: 128, autocomplete: "off", placeholder: "Any type" });
  const expires = h("input", { name: "expires_at", type: "datetime-local", min: localNow() });
  const maxUses = h("input", { name: "max_uses", type: "number", min: 1, step: 1, inputmode: "numeric", placeholder: "No limit" });
  const error = errorBox();
  const submit = h("button.btn.primary", { type: "submit" }, "Create key");
  const form = h(
    "form.row-form",
    { "aria-label": "New provisioning key" },
    field("Name", name),
    field("Group", group),
    field("Device type", deviceType),
    field("Expires at", expires),
    field("Max uses", maxUses),
    submit,
  );
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const body = { name: name.value.trim() };
    if (group.value) body.group = group.value;
    if (deviceType.value.trim()) body.device_type = deviceType.value.trim();
    // The browser gives local wall-clock time; the API wants an instant.
    if (expires.value) body.expires_at = new Date(expires.value).toISOString();
    if (maxUses.value) body.max_uses = Number(maxUses.value);
    const created = await attempt(error, submit, () => api("POST", "/api/v1/provisioning-keys", { body }));
    if (!created) return;
    form.reset();
    onCreated();
    await showSecret(`Key “${created.name}” created`, secretExplanation(), `${created.key_id}:${created.secret}`);
    name.focus();
  });
  return h(
    "section.card",
    { "aria-labelledby": "new-key-title" },
    h("h2", { id: "new-key-title" }, "New key"),
    form,
    h("p.muted.form-note", {}, "Devices provisioned with the key join its group and get its device type. "
      + "Leave expiry and max uses empty for a key that lasts until revoked."),
    error,
  );
}

function row(key, onRevoke) {
  const uses = key.max_uses === null ? String(key.uses) : `${key.uses} / ${key.max_uses}`;
  return h(
    "tr",
    {},
    h("td", {}, h("div", {}, h("strong", {}, key.name)), h("div.mono.muted", {}, key.key_id)),
    h("td.hide-narrow", {}, key.group ? h("a", { href: `#/?${new URLSearchParams({ group: key.group })}` }, key.group) : h("span.muted", {}, "—")),
    h("td.hide-narrow", {}, key.device_type || h("span.muted", {}, "any")),
    h("td.num.hide-narrow", { title: key.max_uses === null ? "no limit" : null }, uses),
    h("td.hide-narrow", {}, key.expires_at ? h("time", { datetime: key.expires_at }, fmtTime(key.expires_at)) : h("span.muted", {}, "never")),
    h("td.hide-narrow", { title: `by ${key.created_by}` }, ago(key.created_at)),
    h("td", {}, h(`span.badge.${STATE_BADGE[key.state] || "plain"}`, {}, key.state)),
    h("td.num", {}, key.revoked
      ? null
      : h("button.btn.small.danger", { type: "button", onclick: () => onRevoke(key) }, "Revoke")),
  );
}

export async function render(main, ctx) {
  ctx.setTitle("Provisioning keys");
  const table = pagedTable({
    path: "/api/v1/provisioning-keys",
    columns: [
      "Name", { label: "Group", className: "hide-narrow" }, { label: "Device type", className: "hide-narrow" },
      { label: "Uses", className: "num hide-narrow" }, { label: "Expires", className: "hide-narrow" },
      { label: "Created", className: "hide-narrow" }, "State", { label: "Actions", hidden: true },
    ],
    row: (key) => row(key, revoke),
    empty: () => empty("No provisioning keys yet", "Create one above and flash it into your devices: they register themselves."),
  });

  async function revoke(key) {
    const ok = await confirmAction(
      `Revoke “${key.name}”?`,
      "Devices can no longer register with this key. Devices it already provisioned keep their credentials. This cannot be undone.",
      "Revoke key",
    );
    if (!ok) return;
    const done = await attempt(table.error, null, async () => {
      await api("DELETE", `/api/v1/provisioning-keys/${encodeURIComponent(key.key_id)}`);
      return true;
    });
    if (!done) return;
    toast(`Key “${key.name}” revoked`);
    await table.reload();
  }

  // The group select needs the groups; without them a key can still be made.
  let groups = [];
  try {
    groups = (await api("GET", "/api/v1/groups", { query: { limit: 1000 } })).items;
  } catch {
    // fall back to "No group" only
  }
  main.append(
    h(
      "div.page-head",
      {},
      h("div", {}, h("h1", {}, "Provisioning keys"),
        h("div.sub", {}, "Devices flashed with a key register themselves on first boot: no per-device setup.")),
    ),
    h("div.stack", {}, createForm(groups, () => table.reload()), table.element),
  );
  await table.reload();
  return table.stop;
}
