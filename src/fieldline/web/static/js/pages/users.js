// Users and their roles (admin only).
//
// The server is the judge of what is allowed (password length, unique usernames,
// not demoting or deleting yourself): its messages are shown where the action was.
// The signed-in admin's own row offers neither a role change, a password reset nor
// deletion (their own password is changed on their account page, with the current one).

import { api } from "../api.js";
import { ago, attempt, confirmAction, empty, errorBox, field, fill, h, toast } from "../dom.js";
import { pagedTable } from "../paged.js";
import { modal } from "../alerts/common.js";

const ROLES = {
  viewer: "Viewer — sees everything, changes nothing",
  operator: "Operator — manages devices, groups and keys",
  admin: "Admin — also manages users",
};

const roleBadge = (role) => h(`span.badge.plain.${role}`, {}, role);

function createForm(onCreated) {
  const username = h("input", {
    name: "username", required: true, maxlength: 128, autocomplete: "off", spellcheck: "false",
    autocapitalize: "none", placeholder: "alice",
  });
  const password = h("input", { name: "password", type: "password", required: true, autocomplete: "new-password" });
  const role = h("select", { name: "role" }, Object.entries(ROLES).map(([value, label]) => h("option", { value }, label)));
  const error = errorBox();
  const submit = h("button.btn.primary", { type: "submit" }, "Create user");
  const form = h(
    "form.row-form",
    { "aria-label": "New user" },
    field("Username", username),
    field("Password", password),
    field("Role", role),
    submit,
  );
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const created = await attempt(error, submit, () =>
      api("POST", "/api/v1/users", { body: { username: username.value.trim(), password: password.value, role: role.value } }));
    if (!created) return;
    toast(`User ${created.username} created`, "ok");
    form.reset();
    username.focus();
    onCreated();
  });
  return h(
    "section.card",
    { "aria-labelledby": "new-user-title" },
    h("h2", { id: "new-user-title" }, "New user"),
    form,
    h("p.muted.form-note", {}, "Letters, digits and . _ @ - in usernames; passwords of at least 10 characters. "
      + "Tell the user their password yourself: fieldline sends no email."),
    error,
  );
}

export async function render(main, ctx) {
  ctx.setTitle("Users");
  const table = pagedTable({
    path: "/api/v1/users",
    columns: [
      "Username", { label: "Role", className: "hide-narrow" }, { label: "Created", className: "hide-narrow" },
      "Change role", { label: "Actions", hidden: true },
    ],
    row,
    empty: () => empty("No users", "Create one above."),
  });
  // What fails on a row is said in the table's error box, above it.
  const { error } = table;

  function row(user) {
    const self = user.id === ctx.user.id;
    const badge = h("td.hide-narrow", {}, roleBadge(user.role));
    let change = h("span.muted", {}, "Your own role");
    if (!self) {
      const select = h(
        "select",
        { name: "role", "aria-label": `New role of ${user.username}` },
        Object.keys(ROLES).map((value) => h("option", { value }, value)),
      );
      select.value = user.role;
      const save = h("button.btn.small", { type: "submit", disabled: true }, "Save");
      select.addEventListener("change", () => {
        save.disabled = select.value === user.role;
      });
      change = h("form.inline-form", { "aria-label": `Role of ${user.username}` }, select, save);
      change.addEventListener("submit", async (event) => {
        event.preventDefault();
        const updated = await attempt(error, save, () =>
          api("PATCH", `/api/v1/users/${user.id}`, { body: { role: select.value } }));
        if (!updated) return;
        user.role = updated.role;
        fill(badge, roleBadge(updated.role));
        save.disabled = true;
        toast(`${updated.username} is now ${updated.role === "admin" ? "an" : "a"} ${updated.role}`, "ok");
      });
    }
    const actions = self
      ? h("a.btn.small", { href: "#/account" }, "Your account")
      : h(
        "div.row-actions",
        {},
        h("button.btn.small", { type: "button", "aria-label": `Reset password of ${user.username}`, onclick: () => resetPassword(user) },
          "Reset password"),
        h("button.btn.small.danger", { type: "button", onclick: () => removeUser(user) }, "Delete"),
      );
    return h(
      "tr",
      { dataset: { username: user.username } },
      h("td.break", {}, h("strong", {}, user.username), self ? h("span.muted", {}, " (you)") : null),
      badge,
      h("td.hide-narrow", {}, ago(user.created_at)),
      h("td", {}, change),
      h("td.num", {}, actions),
    );
  }

  async function resetPassword(user) {
    const password = h("input", { name: "password", type: "password", required: true, autocomplete: "new-password" });
    const saved = await modal(
      `New password for ${user.username}`,
      [
        field("New password", password, "At least 10 characters. Tell it to them yourself: fieldline sends no email."),
        h("p.muted", {}, `Every session of ${user.username} ends at once: they sign in again with this password. `
          + "Their API keys keep working."),
      ],
      "Set password",
      () => api("PATCH", `/api/v1/users/${user.id}`, { body: { password: password.value } }),
    );
    if (saved) toast(`Password of ${user.username} set; their sessions ended`, "ok");
  }

  async function removeUser(user) {
    const ok = await confirmAction(
      `Delete ${user.username}?`,
      `${user.username} can no longer sign in. The audit log keeps what they did.`,
      "Delete user",
    );
    if (!ok) return;
    const done = await attempt(error, null, async () => {
      await api("DELETE", `/api/v1/users/${user.id}`);
      return true;
    });
    if (!done) return;
    toast(`User ${user.username} deleted`);
    await table.reload();
  }

  main.append(
    h(
      "div.page-head",
      {},
      h("div", {}, h("h1", {}, "Users"),
        h("div.sub", {}, "Who can sign in to fieldline, and what their role lets them do.")),
    ),
    h("div.stack", {}, createForm(() => table.reload()), table.element),
  );
  await table.reload();
  return table.stop;
}
