// One rollout: its state (and why it paused, prominent when it paused itself), its
// devices' states drawn as a bar with a legend that filters the table, the devices with
// their state, former version, progress and error (failures first), and the operator's
// actions: pause, resume, raise the percentage, cancel. It asks again every few seconds
// until the rollout is over.

import { api } from "../api.js";
import { ago, attempt, confirmAction, empty, errorBox, field, fill, fmtTime, h, toast } from "../dom.js";
import { deviceLink, modal } from "../alerts/common.js";
import {
  DEVICE_STATES, FAILURES, FINISHED, countsOf, currentShare, deviceStateBadge, describeStages, firmwareOf,
  fmtSeconds, rolloutBadge, stateBar, stateLabel, summarize,
} from "../ota/common.js";

const REFRESH_MS = 3000;
const SHOWN = 200; // devices asked for at once; the state filter reaches the others
const ORDER = Object.fromEntries(DEVICE_STATES.map(({ state }, i) => [state, i]));
const OVER = ["completed", "cancelled"];

/** Failures first, then devices still updating, then the rest; by device id within each. */
function byConcern(a, b) {
  const rank = (d) => (FAILURES.includes(d.state) ? 0 : FINISHED.includes(d.state) ? 2 : 1);
  return rank(a) - rank(b) || (ORDER[a.state] ?? 99) - (ORDER[b.state] ?? 99) || a.device_id.localeCompare(b.device_id);
}

function progressCell(device) {
  if (device.progress === null || device.progress === undefined) return h("span.muted", {}, "—");
  const value = Math.max(0, Math.min(100, Number(device.progress)));
  return h("span.ota-device-progress", {},
    h("progress", { max: 100, value, "aria-label": `${device.device_id} progress` }),
    h("span", {}, `${value}%`));
}

function deviceRow(device) {
  return h(
    "tr",
    { dataset: { deviceId: device.device_id, state: device.state } },
    h("td.break", {}, deviceLink(device.device_id)),
    h("td", {}, deviceStateBadge(device.state)),
    h("td.mono.hide-narrow", {}, device.from_version || h("span.muted", {}, "—")),
    h("td", {}, progressCell(device)),
    h("td.wrap", {}, device.error ? h("span.ota-error", {}, device.error) : h("span.muted", {}, "—")),
    h("td.hide-narrow", {}, ago(device.updated_at || device.finished_at || device.notified_at)),
  );
}

function settings(rollout) {
  const target = rollout.target || {};
  const row = (label, value) => [h("dt", {}, label), h("dd", {}, value ?? h("span.muted", {}, "—"))];
  const groups = (target.groups || []).map((g) => h("a", { href: `#/groups/${encodeURIComponent(g)}` }, g));
  const ids = target.device_ids || [];
  const abort = rollout.abort || {};
  return h(
    "dl.props",
    {},
    row("Groups", groups.length ? groups.flatMap((g, i) => (i ? [", ", g] : [g])) : null),
    row("Devices", ids.length ? h("span.mono", {}, ids.join(", ")) : null),
    row("Stages", describeStages(rollout)),
    row("Share now", `${currentShare(rollout)}%${rollout.percentage !== null && rollout.percentage !== undefined ? " (raised by hand)" : ""}`),
    row("Stage now", (rollout.stages || []).length > 1 ? `${rollout.stage + 1} of ${rollout.stages.length}, since ${fmtTime(rollout.stage_started_at)}` : null),
    row("Pace", `at most ${rollout.max_per_minute} devices told per minute`),
    row("Device timeout", fmtSeconds(rollout.device_timeout_seconds)),
    row("Settle time", fmtSeconds(rollout.settle_seconds)),
    row("Pauses itself", abort.min_finished !== undefined
      ? `above ${abort.failure_percent}% failures once ${abort.min_finished} devices finished` : null),
    row("Downgrades", rollout.allow_downgrade ? "allowed" : "not allowed"),
    row("Started", rollout.created_at ? [fmtTime(rollout.created_at), rollout.created_by ? ` by ${rollout.created_by}` : ""] : null),
  );
}

export async function render(main, ctx) {
  const id = ctx.params[0];
  const path = `/api/v1/rollouts/${encodeURIComponent(id)}`;
  ctx.setTitle(`Rollout #${id}`);
  const operator = ctx.can("operator");
  const head = h("div.page-head");
  const banner = h("div.pause-banner-slot", { "aria-live": "polite" });
  const progress = h("div");
  const summary = h("p.muted.progress-summary");
  const details = h("div");
  const actionError = errorBox();
  const filter = h("select", { name: "state", "aria-label": "Show devices" });
  const devices = h("div");
  const devicesNote = h("p.muted.form-note");
  let rollout = null;
  let picked = ctx.query.get("state") || "";
  let timer = null;
  let stopped = false;
  let controller = null;

  function show(state) {
    picked = state;
    history.replaceState(null, "", `#/rollouts/${id}${picked ? `?state=${picked}` : ""}`);
    draw(); // at once from what is known, then the server's devices of that state
    load();
  }
  // A legend entry shows its state's devices; pressed again, all of them.
  const pick = (state) => show(picked === state ? "" : state);

  async function act(body, doneMessage) {
    const answer = await attempt(actionError, null, () => api("PATCH", path, { body }));
    if (!answer) return;
    toast(doneMessage, "ok");
    await load();
  }

  async function cancel() {
    const ok = await confirmAction(`Cancel rollout #${id}?`,
      "No further device is told. Devices that have not finished are marked cancelled and their pending update "
      + "is withdrawn; devices already installing may still finish. A cancelled rollout cannot be resumed.",
      "Cancel rollout");
    if (ok) await act({ action: "cancel" }, `Rollout #${id} cancelled`);
  }

  async function raise() {
    const current = currentShare(rollout);
    const input = h("input", { name: "percentage", type: "number", min: current, max: 100, step: "any", required: true,
      value: String(Math.min(100, Math.max(current, current ? current * 2 : 10))) });
    const answer = await modal(`Raise rollout #${id}`, [
      field("Percentage of the target", input, `Now ${current}%. Devices already in stay in; the next ones in the rollout's order join.`),
    ], "Raise", () => api("PATCH", path, { body: { percentage: Number(input.value) } }));
    if (!answer) return;
    toast(`Rollout #${id} raised to ${answer.percentage ?? input.value}%`, "ok");
    await load();
  }

  function drawHead() {
    const { model, version } = firmwareOf(rollout);
    const buttons = [];
    if (operator && !OVER.includes(rollout.state)) {
      if (rollout.state === "running") {
        buttons.push(h("button.btn", { type: "button", onclick: () => act({ action: "pause" }, `Rollout #${id} paused`) }, "Pause"));
      } else if (rollout.state === "paused") {
        buttons.push(h("button.btn.primary", { type: "button", onclick: () => act({ action: "resume" }, `Rollout #${id} resumed`) }, "Resume"));
      }
      buttons.push(
        h("button.btn", { type: "button", onclick: raise }, "Raise percentage"),
        h("button.btn.danger", { type: "button", onclick: cancel }, "Cancel rollout"),
      );
    }
    fill(head,
      h("div", {},
        h("div.muted", {}, h("a", { href: "#/rollouts" }, "Rollouts"), ` / #${id}`),
        h("h1", {}, `Rollout #${id}: ${model} ${version} `, rolloutBadge(rollout.state)),
        h("div.sub", {}, describeStages(rollout), rollout.created_at ? [" · started ", ago(rollout.created_at)] : null)),
      buttons.length ? h("div.actions", {}, buttons) : null);
    const reason = rollout.pause_reason || "";
    if (rollout.state === "paused") {
      // A rollout that stopped itself needs the operator: its reason says why.
      fill(banner, rollout.auto_paused
        ? h("div.alert.pause-banner", { role: "alert" }, h("strong", {}, "Paused by itself: "), reason,
          h("div.pause-hint", {}, "No further device is told until an operator resumes it; devices already updating go on."))
        : h("div.alert.info.pause-banner", {}, h("strong", {}, reason ? `${reason[0].toUpperCase()}${reason.slice(1)}. ` : "Paused. "),
          "No further device is told until it is resumed."));
    } else {
      fill(banner);
    }
  }

  function draw() {
    drawHead();
    fill(progress, stateBar(rollout, { onPick: pick, picked }));
    summary.textContent = summarize(rollout);
    fill(details, settings(rollout));
    // The devices come filtered by the server; the counts say how many each state holds.
    const { counts, total } = countsOf(rollout);
    const shown = [...(rollout.devices || [])].filter((d) => !picked || d.state === picked).sort(byConcern);
    const present = DEVICE_STATES.filter(({ state }) => counts[state] || state === picked);
    fill(filter, h("option", { value: "" }, `All (${total}), failures first`),
      present.map(({ state }) => h("option", { value: state }, `${stateLabel(state)} (${counts[state] || 0})`)));
    filter.value = picked;
    const matching = picked ? counts[picked] || 0 : total;
    fill(devices, shown.length
      ? h("div.table-wrap", {}, h("table.data.rollout-devices", {},
        h("thead", {}, h("tr", {}, h("th", {}, "Device"), h("th", {}, "State"), h("th.hide-narrow", {}, "From version"),
          h("th", {}, "Progress"), h("th", {}, "Error"), h("th.hide-narrow", {}, "Changed"))),
        h("tbody", {}, shown.map(deviceRow))))
      : empty(picked ? `No device ${stateLabel(picked)}` : "No devices yet",
        picked ? "" : "Devices appear as the rollout reaches them."));
    devicesNote.textContent = matching > shown.length
      ? `${shown.length} of ${matching} shown, failures first, then the latest changed; choose a state to see others.` : "";
  }

  async function load() {
    controller?.abort();
    controller = new AbortController();
    try {
      rollout = await api("GET", path, { query: { state: picked, limit: SHOWN }, signal: controller.signal });
    } catch (failure) {
      if (failure.name === "AbortError") return false;
      if (!rollout) {
        fill(main, failure.status === 404
          ? empty("No such rollout", `There is no rollout #${id}. `, h("a", { href: "#/rollouts" }, "All rollouts"))
          : h("div.alert", { role: "alert" }, failure.message));
        return false;
      }
      actionError.textContent = `Could not refresh: ${failure.message}`;
      return true;
    }
    if (stopped) return false;
    if (actionError.textContent.startsWith("Could not refresh")) actionError.textContent = "";
    draw();
    return true;
  }

  // Asked again every few seconds while devices may still change state.
  function follow() {
    const live = !OVER.includes(rollout.state);
    ctx.setLive(live);
    if (live) {
      timer = setTimeout(async () => {
        await load(); // an action's own load may supersede this one: the chain goes on
        if (!stopped) follow();
      }, REFRESH_MS);
    }
  }

  filter.addEventListener("change", () => show(filter.value));
  main.append(
    head,
    banner,
    actionError,
    h("section.card.rollout-progress", { "aria-labelledby": "rollout-progress-title" },
      h("h2", { id: "rollout-progress-title" }, "Progress"), progress, summary),
    h("div.grid.two.rollout-body", {},
      h("section.card", { "aria-labelledby": "rollout-devices-title" },
        h("div.card-head", {}, h("h2", { id: "rollout-devices-title" }, "Devices"), h("div.toolbar", {}, field("Show", filter))),
        devices, devicesNote),
      h("section.card", { "aria-labelledby": "rollout-settings-title" },
        h("h2", { id: "rollout-settings-title" }, "Settings"), details)),
  );
  if (!(await load())) return undefined;
  ctx.setTitle(`Rollout #${id}: ${firmwareOf(rollout).model} ${firmwareOf(rollout).version}`);
  follow();
  return () => {
    stopped = true;
    clearTimeout(timer);
    controller?.abort();
  };
}
