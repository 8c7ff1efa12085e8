// The overview's alert cards: firing alerts counted by severity (and those acknowledged),
// each a link to the alerts page filtered to them. Refreshed every few seconds.

import { api } from "../api.js";
import { fill, h } from "../dom.js";
import { SEVERITIES } from "./common.js";

const REFRESH_MS = 10000;

/** Answers { element, stop() }; the element stays empty until the first answer. */
export function renderAlertSummary() {
  const element = h("section.stats.alert-stats", { "aria-label": "Alerts firing" });

  function card(href, label, count, className) {
    return h(`a.stat.${className}`, { href, dataset: { count } },
      h("div.label", {}, h(`span.swatch.${className}`), label),
      h("div.value", {}, count.toLocaleString()));
  }

  async function load() {
    let summary;
    try {
      summary = await api("GET", "/api/v1/alerts/summary");
    } catch (error) {
      fill(element, h("div.alert", { role: "alert" }, `Alerts: ${error.message}`));
      return;
    }
    const acknowledged = SEVERITIES.reduce((sum, s) => sum + (summary.acknowledged?.[s] || 0), 0);
    fill(element,
      SEVERITIES.map((s) => card(`#/alerts?state=firing&severity=${s}`, `Firing ${s}`, summary.firing?.[s] || 0,
        (summary.firing?.[s] || 0) ? `sev-${s}` : "quiet")),
      card("#/alerts?state=acknowledged", "Acknowledged", acknowledged, "quiet"));
  }

  load();
  const timer = setInterval(load, REFRESH_MS);
  return { element, stop: () => clearInterval(timer) };
}
