// The signed-in user's own account: who they are, changing their password, their API keys.
//
// A password change ends every session of the user, this one included; the answer is a
// new session's tokens, which this tab keeps, so only the other devices sign in again.

import { api, session } from "../api.js";
import { attempt, errorBox, field, h, toast } from "../dom.js";

function passwordForm() {
  const current = h("input", { name: "current_password", type: "password", required: true, autocomplete: "current-password" });
  const fresh = h("input", {
    name: "new_password", type: "password", required: true, autocomplete: "new-password", "aria-describedby": "password-rule",
  });
  const again = h("input", { name: "new_password_again", type: "password", required: true, autocomplete: "new-password" });
  const error = errorBox();
  const submit = h("button.btn.primary", { type: "submit" }, "Change password");
  const form = h(
    "form.stack-form.narrow-form",
    { "aria-label": "Change password" },
    field("Current password", current),
    field("New password", fresh),
    field("New password again", again),
    h("span.muted", { id: "password-rule" }, "At least 10 characters."),
    error,
    h("div.actions", {}, submit),
  );
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const tokens = await attempt(error, submit, () => {
      if (fresh.value !== again.value) throw new Error("The new passwords differ: type the same one twice.");
      return api("POST", "/api/v1/auth/password", {
        body: { current_password: current.value, new_password: fresh.value },
      });
    });
    if (!tokens) {
      (error.textContent.includes("current password") ? current : fresh).focus();
      return;
    }
    // The old tokens stopped working with the change: this tab goes on with the new ones.
    session.set({ ...session.get(), access: tokens.access_token, refresh: tokens.refresh_token });
    form.reset();
    toast("Password changed. Your other sessions were signed out; your API keys keep working.", "ok");
  });
  return h(
    "section.card",
    { "aria-labelledby": "password-title" },
    h("h2", { id: "password-title" }, "Password"),
    h("p.muted", {}, "Changing it signs you out everywhere else (other browsers and devices); you stay signed in here."),
    form,
  );
}

export async function render(main, ctx) {
  ctx.setTitle("Your account");
  const { user } = ctx;
  main.append(
    h(
      "div.page-head",
      {},
      h("div", {}, h("h1", {}, "Your account"),
        h("div.sub", {}, "Signed in as ", h("strong", {}, user.username), " · ", h(`span.badge.plain.${user.role}`, {}, user.role))),
    ),
    h(
      "div.stack",
      {},
      passwordForm(),
      h(
        "section.card",
        { "aria-labelledby": "keys-title" },
        h("h2", { id: "keys-title" }, "API keys"),
        h("p", {}, "Scripts and integrations sign in with an API key instead of your password. ",
          h("a", { href: "#/api-keys" }, "Manage your API keys")),
      ),
    ),
  );
}
