// Rejected messages: what devices sent that fieldline did not store, and why.
//
// A payload is untrusted device input: it is only ever set as text inside a <pre>,
// and bytes that are not UTF-8 are shown as the API sends them (base64).

import { ago, empty, field, fmtTime, h } from "../dom.js";
import { disclosure, pagedTable } from "../paged.js";

// RejectReason in fieldline/domain/readings.py: a closed set, so a select.
const REASONS = {
  invalid_json: "Invalid JSON",
  invalid_payload: "Invalid payload",
  invalid_name: "Invalid name",
  invalid_text: "Invalid text",
  too_large: "Too large",
  device_mismatch: "Device mismatch",
  non_finite_value: "Non-finite value",
  future_timestamp: "Future timestamp",
  invalid_timestamp: "Invalid timestamp",
  no_readings: "No readings",
  unknown_topic: "Unknown topic",
  rate_limited: "Rate limited",
  unknown_command: "Unknown command",
  command_closed: "Command closed",
  unstorable: "Refused by the database",
};
// Relative windows: what someone looking into a problem actually asks for.
// Pairs, not an object: numeric keys would be listed before "Any time".
const WITHIN = [["", "Any time"], ["3600", "Last hour"], ["86400", "Last 24 hours"], ["604800", "Last 7 days"]];

const options = (pairs, current) =>
  pairs.map(([value, label]) => h("option", { value, selected: value === current }, label));

function payloadView(item) {
  const binary = item.payload_text === null;
  const size = `${item.size_bytes.toLocaleString()} byte${item.size_bytes === 1 ? "" : "s"}`;
  let payload = h("pre", {}, binary ? item.payload_base64 : item.payload_text);
  if (item.size_bytes === 0) payload = h("p.muted", {}, "The payload was empty.");
  return h(
    "div.payload",
    {},
    // Repeats what narrow screens hide from the row, and gives the exact time.
    h(
      "dl.props",
      {},
      h("dt", {}, "Received"), h("dd", {}, fmtTime(item.received_at)),
      h("dt", {}, "Topic"), h("dd.mono", {}, item.topic),
      h("dt", {}, "Why"), h("dd", {}, item.detail),
      h("dt", {}, "Payload"), h("dd", {}, binary ? `${size}, not UTF-8 text: shown as base64` : `${size} as received`),
    ),
    payload,
  );
}

function row(item) {
  const toggle = disclosure(
    () => payloadView(item),
    // Named by aria-label: phones show the chevron only.
    { "aria-label": "Payload", title: "Show the payload as it arrived" },
    h("span.hide-narrow", {}, "Payload"),
  );
  const device = item.device_id
    ? h("a", { href: `#/devices/${encodeURIComponent(item.device_id)}` }, item.device_id)
    : h("span.muted", {}, "unknown");
  const tr = h(
    "tr.expandable",
    {},
    h("td", {}, ago(item.received_at)),
    h("td.mono", {}, device),
    h("td.mono.hide-narrow", {}, item.topic),
    h("td", {}, h("span.badge.bad", { title: item.reason }, REASONS[item.reason] || item.reason)),
    h("td.wrap.hide-narrow", {}, item.detail),
    h("td.num", {}, toggle),
  );
  // A click anywhere on the row opens it too; links keep their own meaning.
  tr.addEventListener("click", (event) => {
    if (!event.target.closest("a, button") && !getSelection().toString()) toggle.click();
  });
  return tr;
}

export async function render(main, ctx) {
  ctx.setTitle("Rejected messages");
  const deviceInput = h("input", {
    name: "device_id", type: "search", placeholder: "Any device", autocomplete: "off", spellcheck: "false",
    value: ctx.query.get("device_id") || "",
  });
  const reasonSelect = h("select", { name: "reason" }, options([["", "Any reason"], ...Object.entries(REASONS)], ctx.query.get("reason") || ""));
  const withinSelect = h("select", { name: "within" }, options(WITHIN, ctx.query.get("within") || ""));
  const deviceField = field("Device id", deviceInput);
  deviceField.classList.add("grow");
  const form = h(
    "form.toolbar",
    { role: "search", "aria-label": "Filter rejected messages" },
    deviceField,
    field("Reason", reasonSelect),
    field("Received", withinSelect),
    h("button.btn", { type: "submit" }, "Apply"),
  );
  const table = pagedTable({
    path: "/api/v1/rejected",
    query: () => {
      const within = Number(withinSelect.value);
      return {
        device_id: deviceInput.value.trim(),
        reason: reasonSelect.value,
        since: within ? new Date(Date.now() - within * 1000).toISOString() : "",
      };
    },
    columns: [
      "Received", "Device", { label: "Topic", className: "hide-narrow" },
      "Reason", { label: "Detail", className: "hide-narrow" }, { label: "Payload", hidden: true },
    ],
    row,
    empty: (filters) => (Object.values(filters).some(Boolean)
      ? empty("No rejected messages match these filters.", "Try another device, reason or time range.")
      : empty("No rejected messages — every message so far was accepted.")),
    summary: (shown) => `${shown} message${shown === 1 ? "" : "s"}, newest first`,
    pageSize: 50,
  });
  const refresh = h("button.btn", { type: "button", onclick: () => table.reload() }, "Refresh");
  main.append(
    h(
      "div.page-head",
      {},
      h("div", {}, h("h1", {}, "Rejected messages"),
        h("div.sub", {}, "Messages fieldline received but did not store: why, and the payload exactly as it arrived.")),
      h("div.actions", {}, refresh),
    ),
    form,
    table.element,
  );

  // Keep the filters in the address (shareable, survives a reload) without re-routing.
  function remember() {
    const query = new URLSearchParams();
    if (deviceInput.value.trim()) query.set("device_id", deviceInput.value.trim());
    if (reasonSelect.value) query.set("reason", reasonSelect.value);
    if (withinSelect.value) query.set("within", withinSelect.value);
    const qs = query.toString();
    history.replaceState(history.state, "", `#/rejected${qs ? `?${qs}` : ""}`);
  }

  form.addEventListener("submit", (event) => {
    event.preventDefault();
    remember();
    table.reload();
  });
  // A select has nothing more to type: apply at once.
  for (const select of [reasonSelect, withinSelect]) select.addEventListener("change", () => form.requestSubmit());
  await table.reload();
  return table.stop;
}
