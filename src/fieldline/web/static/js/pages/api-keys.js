// API keys: what scripts and integrations sign in with (the X-API-Key header).
//
// A key acts as the user who created it, with that user's role at each request, and has
// no expiry: it works until it is revoked. Its secret exists in the create answer only,
// so it is shown once, with a Copy button. Everyone manages their own keys; an admin
// sees and may revoke everyone's.

import { api } from "../api.js";
import { ago, attempt, confirmAction, empty, errorBox, field, h, showSecret, toast } from "../dom.js";
import { pagedTable } from "../paged.js";
import { listAll } from "../alerts/common.js";

function createForm(onCreated) {
  const name = h("input", { name: "name", required: true, maxlength: 128, autocomplete: "off", placeholder: "grafana-sync" });
  const error = errorBox();
  const submit = h("button.btn.primary", { type: "submit" }, "Create key");
  const described = field("Name", name, "Say what uses it, to know what breaks when it is revoked.");
  described.classList.add("grow");
  const form = h("form.row-form", { "aria-label": "New API key" }, described, submit);
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const created = await attempt(error, submit, () => api("POST", "/api/v1/api-keys", { body: { name: name.value.trim() } }));
    if (!created) return;
    form.reset();
    await showSecret(
      `API key ${created.name} created`,
      [
        "Copy it now: fieldline shows the key only this once. Send it as the ",
        h("code", {}, "X-API-Key"),
        " header; it acts as you, with your role, until it is revoked.",
      ],
      created.api_key,
    );
    onCreated();
  });
  return h(
    "section.card",
    { "aria-labelledby": "new-key-title" },
    h("h2", { id: "new-key-title" }, "New API key"),
    form,
    h("p.muted.form-note", {}, "A key has your role (changing your role changes what it may do) and does not expire. "
      + "Changing your password leaves your keys working."),
    error,
  );
}

export async function render(main, ctx) {
  ctx.setTitle("API keys");
  const admin = ctx.can("admin");
  // An admin sees everyone's keys: name the owners.
  const owners = new Map([[ctx.user.id, "you"]]);
  if (admin) {
    try {
      for (const user of (await listAll("/api/v1/users")).items) {
        if (user.id !== ctx.user.id) owners.set(user.id, user.username);
      }
    } catch {
      // the keys are still listed, by user id
    }
  }
  const table = pagedTable({
    path: "/api/v1/api-keys",
    columns: [
      "Name", { label: "Key id", className: "hide-narrow" }, admin ? "Owner" : null,
      { label: "Created", className: "hide-narrow" }, "Last used", { label: "Actions", hidden: true },
    ].filter(Boolean),
    row,
    empty: () => empty("No API keys", "Create one above for a script or an integration."),
  });

  function row(key) {
    return h(
      "tr",
      { dataset: { keyId: key.key_id } },
      h("td.break", {}, h("strong", {}, key.name)),
      h("td.mono.break.hide-narrow", {}, key.key_id),
      admin ? h("td", {}, owners.get(key.user_id) || `user ${key.user_id}`) : null,
      h("td.hide-narrow", {}, ago(key.created_at)),
      h("td", {}, ago(key.last_used_at)),
      h("td.num", {}, h("button.btn.small.danger", {
        type: "button", "aria-label": `Revoke ${key.name}`, onclick: () => revoke(key),
      }, "Revoke")),
    );
  }

  async function revoke(key) {
    const ok = await confirmAction(
      `Revoke ${key.name}?`,
      `Whatever uses this key (${key.key_id}) is refused from now on. This cannot be undone: create a new key instead.`,
      "Revoke key",
    );
    if (!ok) return;
    const done = await attempt(table.error, null, async () => {
      await api("DELETE", `/api/v1/api-keys/${encodeURIComponent(key.key_id)}`);
      return true;
    });
    if (!done) return;
    toast(`API key ${key.name} revoked`, "ok");
    await table.reload();
  }

  main.append(
    h(
      "div.page-head",
      {},
      h("div", {}, h("h1", {}, "API keys"),
        h("div.sub", {}, admin
          ? "Keys scripts and integrations sign in with: yours and, as an admin, everyone's."
          : "Keys your scripts and integrations sign in with.")),
    ),
    h("div.stack", {}, createForm(() => table.reload()), table.element),
  );
  await table.reload();
  return table.stop;
}
