// One alert rule: the editor (new from a template, or an existing rule), and the
// preview of the draft on stored history. Viewers see the rule and may preview it;
// operators save, enable or disable and delete it.

import { api } from "../api.js";
import { attempt, confirmAction, empty, errorBox, field, h, toast } from "../dom.js";
import { listAll } from "../alerts/common.js";
import { TEMPLATES, buildRuleForm } from "../alerts/rule-form.js";
import { renderPreview } from "../alerts/preview.js";

/** The channels a rule may name (operators list them; admins manage them); null for viewers. */
async function channelsSeen(ctx) {
  if (!ctx.can("operator")) return null;
  try {
    return (await listAll("/api/v1/notification-channels")).items;
  } catch {
    return null;
  }
}

async function groupNames() {
  try {
    return (await listAll("/api/v1/groups")).items.map((g) => g.name);
  } catch {
    return [];
  }
}

export async function render(main, ctx) {
  const id = ctx.params[0] === "new" ? null : Number(ctx.params[0]);
  const editable = ctx.can("operator");
  const [rule, channels, groups] = await Promise.all([
    id === null ? null : api("GET", `/api/v1/alert-rules/${id}`).catch((error) => error),
    channelsSeen(ctx),
    groupNames(),
  ]);
  if (rule instanceof Error) {
    main.append(rule.status === 404
      ? empty("No such rule", `There is no rule ${id}. `, h("a", { href: "#/rules" }, "Back to the rules"))
      : h("div.alert", { role: "alert" }, rule.message));
    return undefined;
  }
  if (id === null && !editable) {
    main.append(empty("Not available", "Creating rules needs the operator role."));
    return undefined;
  }
  ctx.setTitle(rule ? rule.name : "New rule");

  const form = buildRuleForm({ channels, groups, editable });
  if (rule) form.set(rule);
  const error = errorBox();
  const save = h("button.btn.primary", { type: "submit" }, rule ? "Save rule" : "Create rule");
  const element = h(
    "form.card.rule-editor",
    { "aria-label": "Rule", novalidate: true },
    form.element,
    error,
    editable ? h("div.actions", {}, save, h("a.btn", { href: "#/rules" }, "Cancel")) : null,
  );
  element.addEventListener("submit", async (event) => {
    event.preventDefault();
    const saved = await attempt(error, save, () => {
      const body = form.get();
      return rule
        ? api("PATCH", `/api/v1/alert-rules/${rule.id}`, { body })
        : api("POST", "/api/v1/alert-rules", { body });
    });
    if (!saved) return;
    toast(rule ? `Rule ${saved.name} saved` : `Rule ${saved.name} created`, "ok");
    if (rule) {
      Object.assign(rule, saved);
      form.set(saved);
    } else {
      ctx.navigate(`#/rules/${saved.id}`);
    }
  });

  async function remove() {
    const ok = await confirmAction(`Delete “${rule.name}”?`, "Its open alerts are resolved; past alerts keep its name.", "Delete rule");
    if (!ok) return;
    const done = await attempt(error, null, async () => {
      await api("DELETE", `/api/v1/alert-rules/${rule.id}`);
      return true;
    });
    if (!done) return;
    toast(`Rule ${rule.name} deleted`);
    ctx.navigate("#/rules");
  }

  const template = id === null
    ? h("select", {
      name: "template",
      onchange: (event) => {
        const chosen = TEMPLATES.find((t) => t.key === event.target.value);
        if (chosen) form.set({ ...chosen.rule, enabled: true, channels: [], escalate_channels: [] });
      },
    }, h("option", { value: "" }, "Start from a template…"), TEMPLATES.map((t) => h("option", { value: t.key }, t.label)))
    : null;
  const preview = renderPreview(() => form.draft());
  main.append(
    h("div.page-head", {},
      h("div", {},
        h("div.muted", {}, h("a", { href: "#/rules" }, "Alert rules"), " / "),
        h("h1", {}, rule ? rule.name : "New rule")),
      h("div.actions", {},
        template ? field("Template", template) : null,
        rule ? h("a.btn", { href: `#/alerts?rule_id=${rule.id}` }, "Its alerts") : null,
        rule && editable ? h("button.btn.danger", { type: "button", onclick: remove }, "Delete") : null)),
    h("div.stack", {}, element, preview.element),
  );
  if (editable) form.focus();
  return preview.stop;
}
