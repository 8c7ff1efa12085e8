// Rollouts: each with its state, its firmware and how far it got (its devices' states
// drawn as one bar); operators start a new one (pages/rollout-new.js).

import { ago, empty, field, h } from "../dom.js";
import { pagedTable } from "../paged.js";
import { describeStages, firmwareOf, rolloutBadge, stateBar, summarize } from "../ota/common.js";

const STATES = ["running", "paused", "completed", "cancelled"];

function row(rollout) {
  const { model, version } = firmwareOf(rollout);
  const link = `#/rollouts/${rollout.id}`;
  return h(
    "tr",
    { dataset: { rolloutId: rollout.id } },
    h("td", {}, h("a", { href: link }, h("strong", {}, `#${rollout.id}`))),
    h("td.break", {}, h("a", { href: `#/firmware?${new URLSearchParams({ device_model: model })}` }, model), " ",
      h("span.mono", {}, version)),
    h("td.wrap", {}, rolloutBadge(rollout.state),
      rollout.state === "paused" && rollout.pause_reason ? h("div.muted.pause-note", {}, rollout.pause_reason) : null),
    h("td.wrap.progress-cell", {}, stateBar(rollout, { compact: true }), h("div.muted", {}, summarize(rollout))),
    h("td.wrap.hide-narrow", {}, describeStages(rollout)),
    h("td.hide-narrow", { title: rollout.created_by ? `by ${rollout.created_by}` : null }, ago(rollout.created_at),
      rollout.created_by ? h("div.muted", {}, rollout.created_by) : null),
  );
}

export async function render(main, ctx) {
  ctx.setTitle("Rollouts");
  const operator = ctx.can("operator");
  const state = h("select", { name: "state", "aria-label": "State" }, h("option", { value: "" }, "All"), STATES.map((s) => h("option", { value: s }, s)));
  if (STATES.includes(ctx.query.get("state"))) state.value = ctx.query.get("state");
  const table = pagedTable({
    path: "/api/v1/rollouts",
    query: () => ({ state: state.value }),
    columns: ["Rollout", "Firmware", "State", "Progress", { label: "Stages", className: "hide-narrow" },
      { label: "Started", className: "hide-narrow" }],
    row,
    empty: (asked) => empty(asked.state ? `No ${asked.state} rollouts` : "No rollouts yet", operator
      ? h("a", { href: "#/rollouts/new" }, "Start the first one")
      : "An operator starts them."),
    summary: (shown) => `${shown} rollout${shown === 1 ? "" : "s"}, newest first`,
  });
  state.addEventListener("change", () => {
    history.replaceState(null, "", `#/rollouts${state.value ? `?state=${state.value}` : ""}`);
    table.reload();
  });
  main.append(
    h("div.page-head", {},
      h("div", {}, h("h1", {}, "Rollouts"),
        h("div.sub", {}, "Firmware sent to devices in stages; a rollout pauses itself when too many devices fail.")),
      operator ? h("div.actions", {}, h("a.btn.primary", { href: "#/rollouts/new" }, "New rollout")) : null),
    h("div.toolbar", {}, field("State", state)),
    table.element,
  );
  await table.reload();
  return table.stop;
}
