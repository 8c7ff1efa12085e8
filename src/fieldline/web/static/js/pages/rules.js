// Alert rules: what each watches and how it is set; operators add, edit, enable or
// disable and delete them (the editor with its preview is pages/rule-edit.js).

import { api } from "../api.js";
import { attempt, confirmAction, empty, field, h, toast } from "../dom.js";
import { pagedTable } from "../paged.js";
import { SEVERITIES, describeCondition, describeScope, severityBadge } from "../alerts/common.js";

export async function render(main, ctx) {
  ctx.setTitle("Alert rules");
  const operator = ctx.can("operator");
  const severity = h("select", { name: "severity" }, h("option", { value: "" }, "All"), SEVERITIES.map((s) => h("option", { value: s }, s)));
  const enabled = h("select", { name: "enabled" },
    [["", "All"], ["true", "Enabled"], ["false", "Disabled"]].map(([value, label]) => h("option", { value }, label)));
  const table = pagedTable({
    path: "/api/v1/alert-rules",
    query: () => ({ severity: severity.value, enabled: enabled.value }),
    columns: ["Rule", "Severity", "Watches", "Condition", { label: "Channels", className: "hide-narrow" }, "Enabled",
      { label: "Actions", hidden: true }],
    row,
    empty: () => empty("No rules yet", operator ? h("a", { href: "#/rules/new" }, "Create the first rule") : "An operator creates them."),
    summary: (shown) => `${shown} rule${shown === 1 ? "" : "s"}`,
  });
  const { error } = table;

  function row(rule) {
    const toggle = operator
      ? h("input", {
        type: "checkbox", checked: rule.enabled, "aria-label": `${rule.name} enabled`,
        onchange: async (event) => {
          const box = event.target;
          const updated = await attempt(error, box, () => api("PATCH", `/api/v1/alert-rules/${rule.id}`, { body: { enabled: box.checked } }));
          if (!updated) {
            box.checked = rule.enabled;
            return;
          }
          rule.enabled = updated.enabled;
          toast(`${rule.name} ${updated.enabled ? "enabled" : "disabled"}`, "ok");
        },
      })
      : h("span", {}, rule.enabled ? "yes" : "no");
    const channels = rule.channels.length + rule.escalate_channels.length;
    return h(
      "tr",
      { dataset: { ruleId: rule.id } },
      h("td.break", {}, h("a", { href: `#/rules/${rule.id}` }, h("strong", {}, rule.name))),
      h("td", {}, severityBadge(rule.severity)),
      h("td.break", {}, describeScope(rule.scope)),
      h("td.wrap", {}, describeCondition(rule.condition)),
      h("td.hide-narrow", {}, channels ? `${rule.channels.length}${rule.escalate_channels.length ? ` + ${rule.escalate_channels.length} on escalation` : ""}` : h("span.muted", {}, "none")),
      h("td", {}, toggle),
      h("td.num", {}, h("div.actions", {},
        h("a.btn.small", { href: `#/alerts?rule_id=${rule.id}` }, "Alerts"),
        h("a.btn.small", { href: `#/rules/${rule.id}` }, operator ? "Edit" : "View"),
        operator ? h("button.btn.small.danger", { type: "button", onclick: () => remove(rule) }, "Delete") : null)),
    );
  }

  async function remove(rule) {
    const ok = await confirmAction(`Delete “${rule.name}”?`, "Its open alerts are resolved; past alerts keep its name.", "Delete rule");
    if (!ok) return;
    const done = await attempt(error, null, async () => {
      await api("DELETE", `/api/v1/alert-rules/${rule.id}`);
      return true;
    });
    if (!done) return;
    toast(`Rule ${rule.name} deleted`);
    table.reload();
  }

  for (const control of [severity, enabled]) control.addEventListener("change", () => table.reload());
  main.append(
    h("div.page-head", {},
      h("div", {}, h("h1", {}, "Alert rules"), h("div.sub", {}, "What fieldline watches, and whom it tells.")),
      operator ? h("div.actions", {}, h("a.btn.primary", { href: "#/rules/new" }, "New rule")) : null),
    h("div.toolbar", {}, field("Severity", severity), field("Enabled", enabled)),
    table.element,
  );
  await table.reload();
  return table.stop;
}
