// What the firmware pages share: a device's update states in the order an update goes
// through them, their colours, the stacked bar that draws a rollout's counts, and the
// few formats (sizes, digests, a rollout's firmware and stages) they all show.

import { h } from "../dom.js";

/** A device's states (docs/ota.md), each with its colour class (css/ota.css) and label. */
export const DEVICE_STATES = [
  { state: "succeeded", label: "succeeded" },
  { state: "verifying", label: "verifying" },
  { state: "installed", label: "installed" },
  { state: "installing", label: "installing" },
  { state: "downloaded", label: "downloaded" },
  { state: "downloading", label: "downloading" },
  { state: "notified", label: "notified" },
  { state: "pending", label: "pending" },
  { state: "failed", label: "failed" },
  { state: "rolled_back", label: "rolled back" },
  { state: "timed_out", label: "timed out" },
  { state: "skipped", label: "skipped" },
  { state: "cancelled", label: "cancelled" },
];
const LABELS = Object.fromEntries(DEVICE_STATES.map((s) => [s.state, s.label]));

/** States that count as a failure for the abort criteria; shown first in tables. */
export const FAILURES = ["failed", "rolled_back", "timed_out"];
/** States a device's update is over in. */
export const FINISHED = ["succeeded", ...FAILURES, "skipped", "cancelled"];

export const stateLabel = (state) => LABELS[state] || String(state).replaceAll("_", " ");
export const deviceStateBadge = (state) => h(`span.badge.ota-state.ota-${state}`, { dataset: { state } }, stateLabel(state));

const ROLLOUT_BADGE = { running: "ok", paused: "pending", completed: "plain", cancelled: "bad" };
export const rolloutBadge = (state) => h(`span.badge.${ROLLOUT_BADGE[state] || "plain"}`, { dataset: { rolloutState: state } }, state);

export function fmtBytes(bytes) {
  if (bytes === null || bytes === undefined) return "—";
  if (bytes < 1024) return `${bytes} B`;
  const units = ["KiB", "MiB", "GiB"];
  let value = bytes / 1024;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit += 1;
  }
  return `${value.toFixed(value >= 100 ? 0 : 1)} ${units[unit]}`;
}

/** A digest's first 12 hex digits, the whole one as tooltip. */
export const shortHash = (hex) => (hex ? h("span.mono", { title: hex }, hex.slice(0, 12)) : h("span.muted", {}, "—"));

const seconds = (s) => {
  if (!s) return "at once";
  if (s % 86400 === 0) return `${s / 86400} d`;
  if (s % 3600 === 0) return `${s / 3600} h`;
  if (s % 60 === 0) return `${s / 60} min`;
  return `${s} s`;
};
export const fmtSeconds = seconds;

const isSet = (value) => value !== null && value !== undefined;

/** "canary of 5 → 25% after 1 h → 100% after 1 d", and "raised by hand to 60%". */
export function describeStages(rollout) {
  const stages = rollout.stages || [];
  const planned = stages.map((stage, i) => {
    const what = isSet(stage.devices) ? `canary of ${stage.devices}` : `${stage.percentage}%`;
    return i && stage.after_seconds ? `${what} after ${seconds(stage.after_seconds)}` : what;
  }).join(" → ");
  const raised = isSet(rollout.percentage) ? `raised by hand to ${rollout.percentage}%` : "";
  return [planned, raised].filter(Boolean).join(" · ") || "—";
}

/** The share of the target the rollout takes now: its stage's percentage (a canary: 0),
 * or what an operator raised it to, whichever is higher. */
export function currentShare(rollout) {
  const stage = (rollout.stages || [])[rollout.stage || 0] || {};
  return Math.max(Number(stage.percentage || 0), Number(rollout.percentage || 0));
}

/** The rollout's firmware as "soil-v2 1.4.0". */
export function firmwareOf(rollout) {
  const fw = rollout.firmware || rollout;
  return { model: fw.device_model, version: fw.version };
}

/** Counts per state, from the answer's `counts` (an object of state → number). */
export function countsOf(rollout) {
  const counts = { ...(rollout.counts || {}) };
  const total = Object.values(counts).reduce((sum, n) => sum + (Number(n) || 0), 0);
  return { counts, total };
}

/** "12 of 40 succeeded · 2 failed · 26 in progress or waiting". */
export function summarize(rollout) {
  const { counts, total } = countsOf(rollout);
  if (!total) return "no devices yet";
  const failed = FAILURES.reduce((sum, s) => sum + (counts[s] || 0), 0);
  const skipped = (counts.skipped || 0) + (counts.cancelled || 0);
  const open = total - (counts.succeeded || 0) - failed - skipped;
  const parts = [`${counts.succeeded || 0} of ${total} succeeded`];
  if (failed) parts.push(`${failed} failed`);
  if (open) parts.push(`${open} in progress or waiting`);
  if (skipped) parts.push(`${skipped} skipped or cancelled`);
  return parts.join(" · ");
}

/**
 * The counts drawn as one horizontal bar, a segment per state in DEVICE_STATES' order,
 * with a legend of the states present (colour, name, count). `onPick(state)`, when
 * given, makes each legend entry a button (the rollout page filters its table by it).
 */
export function stateBar(rollout, { onPick, picked, compact = false } = {}) {
  const { counts, total } = countsOf(rollout);
  const present = DEVICE_STATES.filter(({ state }) => counts[state]);
  const description = present.map(({ state }) => `${counts[state]} ${stateLabel(state)}`).join(", ");
  const bar = h(
    "div.ota-bar",
    { role: "img", "aria-label": total ? `Devices by state: ${description}` : "No devices yet" },
    present.map(({ state }) => {
      const segment = h(`span.ota-seg.ota-${state}`, {
        title: `${stateLabel(state)}: ${counts[state]} of ${total}`,
        dataset: { state, count: counts[state] },
      });
      // Through CSSOM: the Content-Security-Policy refuses style attributes.
      segment.style.flexGrow = String(counts[state]);
      return segment;
    }),
  );
  if (compact) return bar;
  const legend = h(
    "ul.ota-legend",
    { "aria-label": "Devices per state" },
    present.map(({ state }) => {
      const body = [h(`span.ota-swatch.ota-${state}`, { "aria-hidden": "true" }), stateLabel(state), " ", h("strong", {}, String(counts[state]))];
      return h("li", { dataset: { state } }, onPick
        ? h("button.linkish", { type: "button", "aria-pressed": String(picked === state), onclick: () => onPick(state) }, body)
        : body);
    }),
  );
  return h("div.ota-progress", {}, bar, legend);
}
