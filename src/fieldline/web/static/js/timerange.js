// The time range a page's charts show: one of a few spans ending now, or a zoomed
// window (from–to), kept in the page's URL so a view can be shared and reloaded.

import { fmtTime, h, fill } from "./dom.js";

export const RANGES = [
  { key: "15m", label: "15 min", ms: 900e3 },
  { key: "1h", label: "1 h", ms: 3600e3 },
  { key: "6h", label: "6 h", ms: 6 * 3600e3 },
  { key: "24h", label: "24 h", ms: 24 * 3600e3 },
  { key: "7d", label: "7 d", ms: 7 * 86400e3 },
  { key: "30d", label: "30 d", ms: 30 * 86400e3 },
  { key: "90d", label: "90 d", ms: 90 * 86400e3 },
];

/** The range in `query` (range=24h, or from= and to= in ms for a zoom), else `fallback`. */
export function rangeFrom(query, fallback = "24h") {
  const from = Number(query.get("from"));
  const to = Number(query.get("to"));
  const zoom = from > 0 && to > from ? { start: from, end: to } : null;
  const key = query.get("range");
  return { range: RANGES.some((r) => r.key === key) ? key : fallback, zoom };
}

/** Writes the range into `query` (a URLSearchParams). */
export function rangeInto(query, view) {
  query.delete("from");
  query.delete("to");
  query.set("range", view.range);
  if (view.zoom) {
    query.set("from", String(view.zoom.start));
    query.set("to", String(view.zoom.end));
  }
}

/** [start, end] in ms of the view now. */
export function domain(view) {
  if (view.zoom) return view.zoom;
  const range = RANGES.find((r) => r.key === view.range) || RANGES[1];
  const end = Date.now();
  return { start: end - range.ms, end };
}

/** The range buttons and the zoom note; `changed()` after the user picks. */
export function rangeControls(view, changed) {
  const buttons = h("div.segmented", { role: "group", "aria-label": "Time range" });
  const note = h("div.actions");
  const render = () => {
    fill(buttons, RANGES.map((r) => h("button", {
      type: "button",
      "aria-pressed": String(!view.zoom && view.range === r.key),
      onclick: () => {
        view.range = r.key;
        view.zoom = null;
        render();
        changed();
      },
    }, r.label)));
    fill(note, view.zoom
      ? [
        h("span.muted", {}, `${fmtTime(new Date(view.zoom.start).toISOString())} – ${fmtTime(new Date(view.zoom.end).toISOString())}`),
        h("button.btn.small", { type: "button", onclick: () => { view.zoom = null; render(); changed(); } }, "Reset zoom"),
      ]
      : h("span.muted.hide-narrow", {}, "Drag across a chart to zoom"));
  };
  render();
  return { element: h("div.actions.range-controls", {}, note, buttons), render };
}
