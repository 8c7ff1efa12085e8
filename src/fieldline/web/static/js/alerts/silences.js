// The silences list: what is muted, until when and why; operators add and end them.

import { api } from "../api.js";
import { ago, attempt, confirmAction, empty, fmtTime, h, toast } from "../dom.js";
import { pagedTable } from "../paged.js";
import { deviceLink, silence } from "./common.js";

function target(item) {
  if (item.device_id) return ["device ", deviceLink(item.device_id)];
  if (item.group) return `group ${item.group}`;
  return ["rule ", h("a", { href: `#/rules/${item.rule_id}` }, `#${item.rule_id}`)];
}

/** Answers { element, reload(), stop() }. */
export function renderSilences(ctx) {
  const showEnded = h("input", { type: "checkbox", name: "ended" });
  const table = pagedTable({
    path: "/api/v1/silences",
    query: () => ({ active: showEnded.checked ? undefined : "true" }),
    columns: ["Silences", "Until", "Reason", { label: "By", className: "hide-narrow" }, { label: "Actions", hidden: true }],
    row,
    empty: () => empty("Nothing is silenced", ctx.can("operator") ? "Silence a device, group or rule from an alert or here." : ""),
    pageSize: 50,
  });

  function row(item) {
    const remove = ctx.can("operator")
      ? h("button.btn.small.danger", { type: "button", onclick: () => end(item) }, item.active ? "End" : "Delete")
      : null;
    return h(
      "tr",
      { dataset: { silenceId: item.id } },
      h("td.break", {}, target(item), item.active ? null : h("span.muted", {}, " (ended)")),
      h("td", { title: fmtTime(item.ends_at) }, fmtTime(item.ends_at)),
      h("td.wrap", {}, item.reason),
      h("td.hide-narrow", {}, item.created_by, " ", ago(item.created_at)),
      h("td.num", {}, remove),
    );
  }

  async function end(item) {
    const ok = await confirmAction("End this silence?", "Notifications for what it covers are sent again at once.", "End silence");
    if (!ok) return;
    const done = await attempt(table.error, null, async () => {
      await api("DELETE", `/api/v1/silences/${item.id}`);
      return true;
    });
    if (!done) return;
    toast("Silence ended");
    table.reload();
  }

  const add = ctx.can("operator")
    ? h("button.btn.small", {
      type: "button",
      onclick: async () => {
        if (await silence()) table.reload();
      },
    }, "New silence")
    : null;
  showEnded.addEventListener("change", () => table.reload());
  const element = h(
    "section.card",
    { "aria-labelledby": "silences-title" },
    h("div.card-head", {}, h("h2", { id: "silences-title" }, "Silences"),
      h("div.actions", {}, h("label.field.inline", {}, showEnded, "Show ended"), add)),
    table.element,
  );
  return { element, reload: table.reload, stop: table.stop };
}
