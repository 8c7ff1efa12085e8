// A device's alerts on its page: the active ones and the recent ones, and their
// periods as bands for the charts (an alert on a metric shades that metric's chart;
// one without a metric, such as offline, shades them all).

import { api } from "../api.js";
import { empty, fill, h } from "../dom.js";
import { headCell } from "../paged.js";
import { ALERT_COLUMNS, alertRow } from "./alert-table.js";
import { byUrgency } from "./common.js";

const RECENT = 50;
const REFRESH_MS = 15000;

/**
 * Fills `area`; onChange() runs when the alerts' periods changed (to redraw the charts).
 * Answers { ready (a promise: the first load), bands(metric), stop() }.
 */
export function renderDeviceAlerts(area, ctx, deviceId, onChange) {
  let alerts = [];
  let seen = "";

  async function load() {
    try {
      const page = await api("GET", "/api/v1/alerts", { query: { device_id: deviceId, limit: RECENT } });
      alerts = page.items;
    } catch (error) {
      fill(area, h("div.alert", { role: "alert" }, `The alerts could not be loaded: ${error.message}`));
      return;
    }
    // Active first as the alerts page orders them; then the resolved, newest first.
    const shown = [...alerts.filter((a) => a.state !== "resolved").sort(byUrgency), ...alerts.filter((a) => a.state === "resolved")];
    fill(area, shown.length
      ? [
        h("div.table-wrap", {}, h("table.data", { "aria-label": "Alerts of this device" },
          h("thead", {}, h("tr", {}, ALERT_COLUMNS.map(headCell))),
          h("tbody", {}, shown.map((alert) => alertRow(alert, ctx, load))))),
        h("p.muted", {}, h("a", { href: `#/alerts?device_id=${encodeURIComponent(deviceId)}` }, "All alerts of this device")),
      ]
      : empty("No alerts", "None of the rules has fired for this device."));
    const periods = JSON.stringify(alerts.map((a) => [a.id, a.state, a.resolved_at]));
    if (seen && periods !== seen) onChange();
    seen = periods;
  }

  const ready = load();
  const timer = setInterval(load, REFRESH_MS);
  return {
    ready,
    bands(metric) {
      return alerts
        .filter((a) => !a.metric || a.metric === metric)
        .map((a) => ({
          start: Date.parse(a.started_at),
          end: a.resolved_at ? Date.parse(a.resolved_at) : null,
          className: a.state,
          label: `${a.rule_name} (${a.state})`,
        }));
    },
    stop: () => clearInterval(timer),
  };
}
