// A draft rule tried on stored history (POST /alert-rules/preview): where it would have
// fired over the last day or week, drawn on one device's chart of the metric, with
// the threshold (and the clear line) ruled and the would-have-fired intervals shaded.

import { api } from "../api.js";
import { createChart } from "../chart.js";
import { empty, errorBox, fill, fmtNumber, fmtTime, h } from "../dom.js";
import { loadSeries } from "../series.js";
import { deviceLink } from "./common.js";

const RANGES = [["24h", "Last day", 86400e3], ["7d", "Last week", 7 * 86400e3]];

/** The lines a threshold draws for one device (its metadata may set the value). */
function linesFor(condition, metadata) {
  if (condition.type !== "threshold") return [];
  const resolve = (bound) => {
    if (bound === null || bound === undefined) return [];
    if (Array.isArray(bound)) return bound;
    if (typeof bound === "object") {
      const own = metadata?.[bound.metadata];
      return [typeof own === "number" ? own : bound.default].filter((v) => typeof v === "number");
    }
    return [bound];
  };
  const trip = resolve(condition.value);
  const clear = resolve(condition.clear_value);
  return [
    ...trip.map((v) => ({ value: v, label: `${condition.op} ${fmtNumber(v)}` })),
    ...clear.filter((v) => !trip.includes(v)).map((v) => ({ value: v, label: `clear ${fmtNumber(v)}` })),
  ];
}

/** draft() answers { scope, condition } or throws a message; answers { element, stop() }. */
export function renderPreview(draft) {
  let range = RANGES[0];
  let answer = null;
  let sent = null;
  let chart = null;
  const error = errorBox();
  const summary = h("p.preview-summary", { "aria-live": "polite" });
  const chartBox = h("div.preview-chart");
  const intervals = h("div");
  const device = h("select", { name: "preview_device", "aria-label": "Device to chart" });
  const run = h("button.btn.primary", { type: "button" }, "Preview");
  const rangeButtons = h("div.segmented", { role: "group", "aria-label": "Preview range" });

  function renderRanges() {
    fill(rangeButtons, RANGES.map((r) => h("button", {
      type: "button",
      "aria-pressed": String(r === range),
      onclick: () => {
        range = r;
        renderRanges();
        if (answer) preview(); // a preview shown is redone for the range chosen
      },
    }, r[1])));
  }

  async function preview() {
    error.textContent = "";
    let body;
    try {
      body = draft();
    } catch (failure) {
      error.textContent = failure.message;
      return;
    }
    if (body.condition.type === "offline") {
      // The server says so too; said here in words a user can act on.
      error.textContent = "Offline rules cannot be previewed: the stored history does not say when devices were offline.";
      return;
    }
    const end = Date.now();
    body = { ...body, start: new Date(end - range[2]).toISOString(), end: new Date(end).toISOString() };
    run.disabled = true;
    summary.textContent = "Evaluating the stored history…";
    try {
      answer = await api("POST", "/api/v1/alert-rules/preview", { body });
      sent = body;
    } catch (failure) {
      summary.textContent = "";
      error.textContent = failure.message;
      return;
    } finally {
      run.disabled = false;
    }
    const firing = answer.devices.filter((d) => d.intervals.length);
    const count = firing.reduce((sum, d) => sum + d.intervals.length, 0);
    summary.textContent = `${range[1]}: it would have fired ${count} time${count === 1 ? "" : "s"} on ${firing.length} of ${answer.devices.length} device${answer.devices.length === 1 ? "" : "s"} (${answer.points.toLocaleString()} readings${answer.truncated ? ", truncated" : ""}).`;
    const chosen = (firing[0] || answer.devices[0])?.device_id;
    fill(device, answer.devices.map((d) => h("option", { value: d.device_id }, `${d.device_id} (${d.intervals.length})`)));
    if (chosen) device.value = chosen;
    device.hidden = answer.devices.length < 2;
    renderIntervals();
    await draw();
  }

  async function draw() {
    chart?.destroy();
    chart = null;
    const shown = answer?.devices.find((d) => d.device_id === device.value);
    const { condition } = sent || {};
    if (!shown) {
      fill(chartBox, answer ? empty("No device in scope", "The rule watches no device yet.") : null);
      return;
    }
    const start = Date.parse(answer.start);
    const end = Date.parse(answer.end);
    fill(chartBox, h("div.card-head", {}, h("h3", {}, `${condition.metric} on ${shown.device_id}`)));
    const box = h("div");
    chartBox.append(box);
    chart = createChart(box, { label: `${condition.metric} preview` });
    try {
      const [{ points, bucketMs }, metadata] = await Promise.all([
        loadSeries(shown.device_id, condition.metric, start, end),
        condition.value && typeof condition.value === "object" && !Array.isArray(condition.value)
          ? api("GET", `/api/v1/devices/${encodeURIComponent(shown.device_id)}`).then((d) => d.metadata, () => ({}))
          : {},
      ]);
      const bands = shown.intervals.map((i) => ({
        start: Date.parse(i.start), end: i.end ? Date.parse(i.end) : null, label: "would have fired",
      }));
      chart?.setData(points, { start, end, bucketMs, bands, lines: linesFor(condition, metadata) });
    } catch (failure) {
      error.textContent = `The chart could not be loaded: ${failure.message}`;
    }
  }

  function renderIntervals() {
    const rows = answer.devices.flatMap((d) => d.intervals.map((i) => h(
      "tr", {},
      h("td.break", {}, deviceLink(d.device_id)),
      h("td", {}, fmtTime(i.start)),
      h("td", {}, i.end ? fmtTime(i.end) : h("span.badge.state-firing", {}, "still firing")),
      h("td.num", {}, fmtNumber(i.start_value)),
      h("td.num", {}, i.end ? fmtNumber(i.end_value) : "—"),
    )));
    fill(intervals, rows.length
      ? h("div.table-wrap", {}, h("table.data", { "aria-label": "Would have fired" },
        h("thead", {}, h("tr", {}, ["Device", "From", "To", "Value at start", "Value at end"].map((t, i) => h("th", { class: i > 2 ? "num" : null }, t)))),
        h("tbody", {}, rows)))
      : empty("It would not have fired", "Over this range no device in scope met the condition."));
  }

  run.addEventListener("click", preview);
  device.addEventListener("change", draw);
  renderRanges();
  device.hidden = true;
  const element = h(
    "section.card.preview",
    { "aria-labelledby": "preview-title" },
    h("div.card-head", {}, h("h2", { id: "preview-title" }, "Preview on stored history"),
      h("div.actions", {}, rangeButtons, device, run)),
    h("p.muted.form-note", {}, "The draft as it stands in the form, evaluated exactly as the rule will be: nothing is saved or sent."),
    error, summary, chartBox, intervals,
  );
  return { element, stop: () => chart?.destroy() };
}
