// The audit log (admin only): who changed what, newest first.
//
// Filters match exactly (that is what the API does), so the known actions and
// target types are offered as suggestions; any other value can still be typed.

import { ago, empty, field, h } from "../dom.js";
import { pagedTable } from "../paged.js";

const FILTERS = ["actor", "action", "target_type", "target_id"];
// What fieldline records today (grep audit_store.record); suggestions, not a limit.
const ACTIONS = [
  "api_key.create", "api_key.revoke", "command.send", "config.update", "device.allow_reprovision",
  "device.create", "device.delete", "device.disable", "device.enable", "device.provision",
  "device.rotate_credentials", "device.update", "group.create", "provisioning_key.create",
  "provisioning_key.revoke", "user.create", "user.delete", "user.update",
];
const TARGET_TYPES = ["api_key", "device", "group", "provisioning_key", "user"];

const datalist = (id, values) => h("datalist", { id }, values.map((value) => h("option", { value })));

/** "alice" means the user alice: actors are stored as user:alice, device:x, provisioning-key:pk_… */
function actorQuery(text) {
  return text && !text.includes(":") && text !== "system" ? `user:${text}` : text;
}

/** The detail object on one line, or nothing when it is empty. */
function compact(detail) {
  if (!detail || !Object.keys(detail).length) return h("span.muted", {}, "—");
  // Spaces between the top-level entries, so a long detail wraps between them.
  const entries = Object.entries(detail).map(([key, value]) => `${JSON.stringify(key)}: ${JSON.stringify(value)}`);
  return h("code.detail", {}, `{${entries.join(", ")}}`);
}

export async function render(main, ctx) {
  ctx.setTitle("Audit log");
  const inputs = {
    actor: h("input", { name: "actor", type: "search", placeholder: "user:alice", autocomplete: "off", spellcheck: "false" }),
    action: h("input", { name: "action", type: "search", list: "audit-actions", placeholder: "Any action", autocomplete: "off", spellcheck: "false" }),
    target_type: h("input", { name: "target_type", type: "search", list: "audit-targets", placeholder: "Any type", autocomplete: "off", spellcheck: "false" }),
    target_id: h("input", { name: "target_id", type: "search", placeholder: "Any target", autocomplete: "off", spellcheck: "false" }),
  };
  for (const name of FILTERS) inputs[name].value = ctx.query.get(name) || "";
  const clearButton = h("button.btn", { type: "button" }, "Clear");
  const form = h(
    "form.toolbar",
    { role: "search", "aria-label": "Filter the audit log" },
    field("Actor", inputs.actor),
    field("Action", inputs.action),
    field("Target type", inputs.target_type),
    field("Target id", inputs.target_id),
    h("button.btn", { type: "submit" }, "Apply"),
    clearButton,
    datalist("audit-actions", ACTIONS),
    datalist("audit-targets", TARGET_TYPES),
  );
  const values = () => Object.fromEntries(FILTERS.map((name) => [name, inputs[name].value.trim()]));

  // Clicking a value in the table filters by it: the quickest way to follow a trail.
  function filterLink(wanted, label) {
    const described = Object.values(wanted).join(" ");
    return h("button.linkish", {
      type: "button",
      title: `Show only ${described}`,
      onclick: () => {
        Object.entries(wanted).forEach(([name, value]) => { inputs[name].value = value; });
        form.requestSubmit();
      },
    }, label);
  }

  function row(entry) {
    const target = { target_type: entry.target_type, target_id: entry.target_id };
    return h(
      "tr",
      {},
      h("td", {}, ago(entry.time)),
      h("td.mono.break", {}, filterLink({ actor: entry.actor }, entry.actor)),
      h("td", {}, filterLink({ action: entry.action }, h("span.badge.plain", {}, entry.action))),
      h("td.mono.break", {}, h("span.muted.hide-narrow", {}, `${entry.target_type} `), filterLink(target, entry.target_id)),
      h("td.wrap.hide-narrow", {}, compact(entry.detail)),
    );
  }

  const table = pagedTable({
    path: "/api/v1/audit",
    query: () => {
      const filters = values();
      return { ...filters, actor: actorQuery(filters.actor) };
    },
    columns: ["Time", "Actor", "Action", "Target", { label: "Detail", className: "hide-narrow" }],
    row,
    empty: (filters) => (Object.values(filters).some(Boolean)
      ? empty("Nothing matches these filters.", "Filters match whole values: try fewer of them.")
      : empty("The audit log is empty.", "Changes made through the API or this dashboard show up here.")),
    summary: (shown) => `${shown} entr${shown === 1 ? "y" : "ies"}, newest first`,
  });
  main.append(
    h(
      "div.page-head",
      {},
      h("div", {}, h("h1", {}, "Audit log"),
        h("div.sub", {}, "Every change made through fieldline: who did what, to which resource, and when.")),
    ),
    form,
    table.element,
  );

  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const query = new URLSearchParams(Object.entries(values()).filter(([, value]) => value));
    const qs = query.toString();
    history.replaceState(history.state, "", `#/audit${qs ? `?${qs}` : ""}`);
    table.reload();
  });
  clearButton.addEventListener("click", () => {
    for (const name of FILTERS) inputs[name].value = "";
    form.requestSubmit();
  });
  await table.reload();
  return table.stop;
}
