// Alerts: the active ones first (firing before acknowledged, the most severe and newest
// first), the resolved ones below a page at a time, and the silences in force.
//
// Viewers see everything; operators also acknowledge and silence (the API checks roles).

import { empty, errorBox, field, fill, h } from "../dom.js";
import { headCell, pagedTable } from "../paged.js";
import { ALERT_COLUMNS, alertRow } from "../alerts/alert-table.js";
import { SEVERITIES, byUrgency, listAll } from "../alerts/common.js";
import { renderSilences } from "../alerts/silences.js";

const FILTERS = ["state", "severity", "device_id", "rule_id"];
const REFRESH_MS = 10000;

export async function render(main, ctx) {
  ctx.setTitle("Alerts");
  const inputs = {
    state: h("select", { name: "state" },
      [["", "Active and resolved"], ["firing", "Firing"], ["acknowledged", "Acknowledged"], ["resolved", "Resolved"]]
        .map(([value, label]) => h("option", { value }, label))),
    severity: h("select", { name: "severity" }, h("option", { value: "" }, "All"), SEVERITIES.map((s) => h("option", { value: s }, s))),
    device_id: h("input", { name: "device_id", type: "search", placeholder: "Any device", autocomplete: "off", spellcheck: "false" }),
    rule_id: h("select", { name: "rule_id" }, h("option", { value: "" }, "All rules")),
  };
  const form = h(
    "form.toolbar",
    { role: "search", "aria-label": "Filter alerts" },
    field("State", inputs.state), field("Severity", inputs.severity),
    field("Device", inputs.device_id), field("Rule", inputs.rule_id),
    h("button.btn", { type: "submit" }, "Apply"),
  );
  const values = () => Object.fromEntries(FILTERS.map((name) => [name, inputs[name].value.trim()]));

  const activeError = errorBox();
  const activeList = h("div", { "aria-live": "polite" }, h("p.muted", {}, "Loading…"));
  const activeCard = h("section.card", { "aria-labelledby": "active-title" },
    h("div.card-head", {}, h("h2", { id: "active-title" }, "Active")), activeError, activeList);
  const resolved = pagedTable({
    path: "/api/v1/alerts",
    query: () => ({ ...values(), state: "resolved" }),
    columns: ALERT_COLUMNS,
    row: (alert) => alertRow(alert, ctx, reloadAll),
    empty: () => empty("No resolved alerts", "Alerts that cleared or were closed show up here."),
    summary: (shown) => `${shown} resolved, newest first`,
    pageSize: 50,
  });
  const resolvedCard = h("section.card", { "aria-labelledby": "resolved-title" },
    h("div.card-head", {}, h("h2", { id: "resolved-title" }, "Resolved")), resolved.element);
  const silences = renderSilences(ctx);

  let loading = null;
  async function loadActive({ quiet = false } = {}) {
    const { state, ...filters } = values();
    if (state === "resolved") return;
    if (quiet && activeList.contains(document.activeElement)) return; // keep the user's focus
    loading?.abort();
    const mine = new AbortController();
    loading = mine;
    try {
      const { items, more } = await listAll("/api/v1/alerts", { ...filters, state: state || "active" });
      if (mine.signal.aborted) return;
      activeError.textContent = "";
      items.sort(byUrgency);
      fill(activeList, items.length
        ? [
          h("div.table-wrap", {}, h("table.data", { "aria-label": "Active alerts" },
            h("thead", {}, h("tr", {}, ALERT_COLUMNS.map(headCell))),
            h("tbody", {}, items.map((alert) => alertRow(alert, ctx, reloadAll))))),
          more ? h("p.muted", {}, `The first ${items.length} active alerts; narrow the filters to see the others.`) : null,
        ]
        : empty("Nothing is firing", "Alerts open here when a rule's condition holds."));
    } catch (error) {
      if (!mine.signal.aborted) activeError.textContent = `The alerts could not be loaded: ${error.message}`;
    }
  }

  function reloadAll() {
    const { state } = values();
    activeCard.hidden = state === "resolved";
    resolvedCard.hidden = state === "firing" || state === "acknowledged";
    return Promise.all([
      loadActive(),
      resolvedCard.hidden ? null : resolved.reload(),
      silences.reload(),
    ]);
  }

  async function loadRules() {
    try {
      const { items } = await listAll("/api/v1/alert-rules");
      const chosen = inputs.rule_id.value;
      fill(inputs.rule_id, h("option", { value: "" }, "All rules"),
        items.map((rule) => h("option", { value: String(rule.id) }, rule.name)));
      if (chosen && !items.some((rule) => String(rule.id) === chosen)) inputs.rule_id.append(h("option", { value: chosen }, `rule ${chosen}`));
      inputs.rule_id.value = chosen;
    } catch {
      // the filter still works with the rule given in the address
    }
  }

  for (const name of FILTERS) {
    const value = ctx.query.get(name) || "";
    if (name === "rule_id" && value) inputs.rule_id.append(h("option", { value }, `rule ${value}`));
    inputs[name].value = value;
  }
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const query = new URLSearchParams(Object.entries(values()).filter(([, value]) => value)).toString();
    history.replaceState(history.state, "", `#/alerts${query ? `?${query}` : ""}`);
    reloadAll();
  });
  for (const name of ["state", "severity", "rule_id"]) inputs[name].addEventListener("change", () => form.requestSubmit());

  main.append(
    h("div.page-head", {}, h("div", {}, h("h1", {}, "Alerts"),
      h("div.sub", {}, "What the rules found: acknowledge to stop repeats, silence during maintenance."))),
    form,
    h("div.stack", {}, activeCard, resolvedCard, silences.element),
  );
  await Promise.all([loadRules(), reloadAll()]);
  const timer = setInterval(() => loadActive({ quiet: true }), REFRESH_MS);
  return () => {
    clearInterval(timer);
    loading?.abort();
    resolved.stop();
    silences.stop();
  };
}
