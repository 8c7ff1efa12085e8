// The device page's "Firmware updates" panel: the update a rollout has under way for the
// device (if any) and its update history, newest first. It asks again every few seconds
// while an update is under way, and when the page says the device changed.

import { api } from "../api.js";
import { ago, empty, fill, fmtTime, h } from "../dom.js";
import { FINISHED, deviceStateBadge } from "./common.js";

const REFRESH_MS = 5000;
const ACTIVE = ["running", "paused"]; // a rollout that may still tell the device

const rolloutLink = (id) => h("a", { href: `#/rollouts/${id}` }, `#${id}`);

function pendingLine(update) {
  const progress = update.progress === null || update.progress === undefined ? null : `${update.progress}%`;
  return h(
    "div.alert.info.pending-update",
    { dataset: { rolloutId: update.rollout_id } },
    h("strong", {}, `Updating to ${update.version}`), " (rollout ", rolloutLink(update.rollout_id), "): ",
    deviceStateBadge(update.state), progress ? ` ${progress}` : null,
  );
}

function historyTable(items) {
  return h("div.table-wrap", {}, h("table.data.device-updates", {},
    h("thead", {}, h("tr", {}, h("th", {}, "Rollout"), h("th", {}, "Version"), h("th", {}, "State"),
      h("th.hide-narrow", {}, "Told"), h("th.hide-narrow", {}, "Finished"))),
    h("tbody", {}, items.map((u) => h(
      "tr",
      { dataset: { rolloutId: u.rollout_id, state: u.state } },
      h("td", {}, rolloutLink(u.rollout_id)),
      h("td.mono", {}, u.from_version ? `${u.from_version} → ${u.version}` : u.version),
      h("td.wrap", {}, deviceStateBadge(u.state),
        u.progress !== null && u.progress !== undefined && !FINISHED.includes(u.state) ? ` ${u.progress}%` : null,
        u.error ? h("div.ota-error", {}, u.error) : null),
      h("td.hide-narrow", { title: u.notified_at ? fmtTime(u.notified_at) : null }, u.notified_at ? ago(u.notified_at) : h("span.muted", {}, "not yet")),
      h("td.hide-narrow", {}, u.finished_at ? fmtTime(u.finished_at) : h("span.muted", {}, "—")),
    )))));
}

/** Fill `container`; answers { reload(), stop() }. */
export function renderDeviceUpdates(container, base) {
  let timer = null;
  let stopped = false;

  async function reload() {
    clearTimeout(timer);
    timer = null;
    let answer;
    try {
      answer = await api("GET", `${base}/updates`);
    } catch (failure) {
      if (!stopped) fill(container, h("div.alert", { role: "alert" }, failure.message));
      return;
    }
    if (stopped) return;
    const items = answer.items;
    const pending = items.find((u) => !FINISHED.includes(u.state) && ACTIVE.includes(u.rollout_state));
    fill(container,
      pending ? pendingLine(pending) : null,
      items.length ? historyTable(items) : empty("No firmware updates yet", "A rollout that reaches this device shows here."));
    if (pending) timer = setTimeout(reload, REFRESH_MS);
  }

  fill(container, h("p.muted", {}, "Loading updates…"));
  reload();
  return {
    reload,
    stop() {
      stopped = true;
      clearTimeout(timer);
    },
  };
}
