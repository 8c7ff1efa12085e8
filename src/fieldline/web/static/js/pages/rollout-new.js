// A new rollout (operators): which image, to which groups and devices, in which stages
// (a canary of N devices, then percentages after delays) or one percentage raised by
// hand, at what pace, and when it stops itself. While the form changes, the target's
// device count is asked of POST /api/v1/rollouts/preview with the body the form would send.

import { api } from "../api.js";
import { attempt, empty, errorBox, field, fill, h, toast } from "../dom.js";
import { listAll } from "../alerts/common.js";
import { duration } from "../alerts/rule-form.js";

const DEFAULT_STAGES = [
  { devices: 5 },
  { percentage: 25, after_seconds: 3600 },
  { percentage: 100, after_seconds: 86400 },
];
const plural = (count, noun) => `${count} device${count === 1 ? "" : "s"}${noun}`;

/** "1.10.2" after "1.9" and a pre-release before its release, as the server orders them. */
function newestFirst(a, b) {
  const parts = (v) => (v.replace(/^[vV](?=\d)/, "").match(/\d+|[A-Za-z]+/g) || []);
  const pa = parts(a);
  const pb = parts(b);
  for (let i = 0; i < Math.max(pa.length, pb.length); i += 1) {
    const x = pa[i];
    const y = pb[i];
    if (x === undefined) return /^\d/.test(y) ? 1 : -1;
    if (y === undefined) return /^\d/.test(x) ? -1 : 1;
    const nx = /^\d+$/.test(x);
    const ny = /^\d+$/.test(y);
    if (nx && ny && Number(x) !== Number(y)) return Number(y) - Number(x);
    if (nx !== ny) return nx ? -1 : 1;
    if (!nx && x !== y) return x < y ? 1 : -1;
  }
  return 0;
}

/** The stage editor: rows of a canary (devices) or a percentage, each after a delay. */
function stagesEditor(onChange) {
  const list = h("ol.stage-list");
  const rows = [];

  function renumber() {
    rows.forEach((row, i) => row.number(i));
    onChange();
  }

  function add(stage) {
    const kind = h("select", { name: "stage_kind" },
      h("option", { value: "devices" }, "Canary: devices"), h("option", { value: "percentage" }, "Percentage"));
    const amount = h("input", { name: "stage_amount", type: "number", min: 1, step: "any", required: true });
    const unit = h("span.muted.stage-unit");
    const after = duration("after_seconds", "After");
    const remove = h("button.btn.small", { type: "button" }, "Remove");
    const afterBox = h("div.stage-after", {}, after.element);
    const item = h("li.stage", {}, field("Stage", kind), h("div.stage-amount", {}, field("Amount", amount), unit), afterBox, remove);
    const row = {
      item,
      number(i) {
        item.firstChild.firstChild.textContent = `Stage ${i + 1}`;
        kind.setAttribute("aria-label", `Stage ${i + 1} kind`);
        amount.setAttribute("aria-label", `Stage ${i + 1} ${kind.value === "devices" ? "devices" : "percentage"}`);
        after.element.querySelector("input").setAttribute("aria-label", `Stage ${i + 1} after`);
        after.element.querySelector("select").setAttribute("aria-label", `Stage ${i + 1} after unit`);
        remove.setAttribute("aria-label", `Remove stage ${i + 1}`);
        // The first stage starts with the rollout.
        afterBox.hidden = i === 0;
        remove.hidden = rows.length === 1;
      },
      get(i) {
        const value = Number(amount.value);
        if (!amount.value || !Number.isFinite(value) || value <= 0) throw new Error(`Stage ${i + 1}: give a number above 0`);
        const stage = kind.value === "devices" ? { devices: Math.round(value) } : { percentage: value };
        if (i > 0) stage.after_seconds = after.get();
        return stage;
      },
    };
    const syncKind = () => {
      unit.textContent = kind.value === "devices" ? "devices" : "%";
      amount.max = kind.value === "devices" ? "" : "100";
      amount.step = kind.value === "devices" ? "1" : "any";
    };
    kind.value = stage.devices !== undefined ? "devices" : "percentage";
    amount.value = String(stage.devices ?? stage.percentage);
    after.set(stage.after_seconds || 0);
    syncKind();
    kind.addEventListener("change", () => {
      syncKind();
      renumber();
    });
    remove.addEventListener("click", () => {
      rows.splice(rows.indexOf(row), 1);
      item.remove();
      renumber();
    });
    rows.push(row);
    list.append(item);
    renumber();
  }

  DEFAULT_STAGES.forEach(add);
  const addButton = h("button.btn.small", {
    type: "button",
    onclick: () => add({ percentage: 100, after_seconds: 3600 }),
  }, "Add stage");
  return {
    element: h("div.stages", {}, list, addButton),
    get: () => rows.map((row, i) => row.get(i)),
  };
}

function number(name, label, value, props = {}) {
  return field(label, h("input", { name, type: "number", min: 0, step: 1, inputmode: "numeric", value: String(value), ...props }));
}

export async function render(main, ctx) {
  ctx.setTitle("New rollout");
  let images;
  let groups;
  try {
    [images, groups] = await Promise.all([
      listAll("/api/v1/firmware").then((r) => r.items),
      listAll("/api/v1/groups").then((r) => r.items),
    ]);
  } catch (failure) {
    main.append(h("div.alert", { role: "alert" }, failure.message));
    return undefined;
  }
  const head = h("div.page-head", {}, h("div", {},
    h("div.muted", {}, h("a", { href: "#/rollouts" }, "Rollouts"), " / new"),
    h("h1", {}, "New rollout"),
    h("div.sub", {}, "Send a firmware image to devices in stages that stop by themselves when devices fail.")));
  if (!images.length) {
    main.append(head, h("div.card", {}, empty("No firmware yet", "Upload an image on the ",
      h("a", { href: "#/firmware" }, "Firmware page"), " first.")));
    return undefined;
  }

  const byModel = new Map();
  for (const image of images) {
    if (!byModel.has(image.device_model)) byModel.set(image.device_model, []);
    byModel.get(image.device_model).push(image.version);
  }
  const model = h("select", { name: "device_model", required: true, "aria-label": "Device model" },
    [...byModel.keys()].sort().map((m) => h("option", { value: m }, m)));
  const version = h("select", { name: "version", required: true, "aria-label": "Version" });
  const fillVersions = () => {
    const versions = [...byModel.get(model.value)].sort(newestFirst);
    fill(version, versions.map((v) => h("option", { value: v }, v)));
  };
  if (byModel.has(ctx.query.get("device_model"))) model.value = ctx.query.get("device_model");
  fillVersions();
  if (byModel.get(model.value).includes(ctx.query.get("version"))) version.value = ctx.query.get("version");

  const groupBoxes = groups.map((g) => h("input", { type: "checkbox", name: "groups", value: g.name }));
  const groupPicker = h("fieldset.channels.group-picker", {}, h("legend", {}, "Groups"), groups.length
    ? groups.map((g, i) => h("label.field.inline", {}, groupBoxes[i], g.name))
    : h("span.muted", {}, "No groups: name the devices instead."));
  const deviceIds = h("textarea.short", {
    name: "device_ids", rows: 2, spellcheck: "false", placeholder: "soil-0001, soil-0002",
  });

  const byHand = h("input", { type: "radio", name: "schedule", value: "percentage" });
  const staged = h("input", { type: "radio", name: "schedule", value: "stages", checked: true });
  const percentage = h("input", { name: "percentage", type: "number", min: 0, max: 100, step: "any", value: "10", "aria-label": "Percentage" });
  const percentageBox = h("div.percentage-box", { hidden: true },
    field("Percentage of the target", percentage, "Raise it by hand on the rollout's page."));
  let asked = 0; // the newest preview asked for wins
  let previewTimer = null;
  const stages = stagesEditor(() => schedule());

  const maxPerMinute = number("max_per_minute", "Devices told per minute at most", 60, { min: 1 });
  const timeout = duration("device_timeout_seconds", "Device timeout");
  timeout.set(3600);
  const settle = duration("settle_seconds", "Settle time");
  settle.set(600);
  const minFinished = number("min_finished", "Judge after finished devices", 5);
  const failurePercent = number("failure_percent", "Pause above failures (%)", 20, { max: 100, step: "any" });
  const downgrade = h("input", { type: "checkbox", name: "allow_downgrade" });

  const count = h("output.target-count", { "aria-live": "polite" }, "Choose groups or devices");
  const error = errorBox();
  const submit = h("button.btn.primary", { type: "submit" }, "Start rollout");

  function body() {
    const ids = deviceIds.value.split(/[\s,]+/).filter(Boolean);
    const chosen = groupBoxes.filter((b) => b.checked).map((b) => b.value);
    const answer = {
      firmware: { device_model: model.value, version: version.value },
      target: { groups: chosen, device_ids: ids },
      max_per_minute: Number(maxPerMinute.querySelector("input").value),
      device_timeout_seconds: timeout.get(),
      settle_seconds: settle.get(),
      abort: {
        min_finished: Number(minFinished.querySelector("input").value),
        failure_percent: Number(failurePercent.querySelector("input").value),
      },
      allow_downgrade: downgrade.checked,
    };
    if (byHand.checked) answer.percentage = Number(percentage.value);
    else answer.stages = stages.get();
    return answer;
  }

  async function preview() {
    const mine = (asked += 1);
    let request;
    try {
      request = body();
    } catch (failure) {
      fill(count, h("span.muted", {}, failure.message));
      return;
    }
    if (!request.target.groups.length && !request.target.device_ids.length) {
      fill(count, h("span.muted", {}, "Choose groups or devices"));
      return;
    }
    count.setAttribute("aria-busy", "true");
    try {
      const answer = await api("POST", "/api/v1/rollouts/preview", { body: request });
      if (mine !== asked) return;
      const others = [];
      if (answer.already_on_version) others.push(`${plural(answer.already_on_version, "")} already on ${request.firmware.version}`);
      if (answer.newer && !request.allow_downgrade) others.push(`${plural(answer.newer, "")} on a newer version, skipped`);
      if (answer.other_model) others.push(`${plural(answer.other_model, "")} of other models left out`);
      fill(count,
        h("strong", { dataset: { targeted: answer.targeted } }, `${plural(answer.targeted, "")} of ${request.firmware.device_model} targeted`),
        others.length ? h("span.muted", {}, ` · ${others.join(" · ")}`) : null);
    } catch (failure) {
      if (mine === asked) fill(count, h("span.alert", {}, failure.message));
    } finally {
      if (mine === asked) count.removeAttribute("aria-busy");
    }
  }
  function schedule() {
    clearTimeout(previewTimer);
    previewTimer = setTimeout(preview, 250);
  }

  const form = h(
    "form.rollout-form",
    { "aria-label": "New rollout" },
    h("section.card", { "aria-labelledby": "rollout-firmware-title" },
      h("h2", { id: "rollout-firmware-title" }, "Firmware"),
      h("div.row-form", {}, field("Device model", model), field("Version", version)),
      h("label.field.inline", {}, downgrade, "Allow downgrade",
        h("span.muted", {}, " (devices on a newer version are otherwise skipped)"))),
    h("section.card", { "aria-labelledby": "rollout-target-title" },
      h("h2", { id: "rollout-target-title" }, "Target"),
      h("div.row-form", {}, groupPicker,
        h("div.grow", {}, field("Device ids", deviceIds, "Comma or space separated; devices of the model only"))),
      h("p.target-line", {}, count)),
    h("section.card", { "aria-labelledby": "rollout-stages-title" },
      h("h2", { id: "rollout-stages-title" }, "Stages"),
      h("div.actions", { role: "radiogroup", "aria-label": "Schedule" },
        h("label.field.inline", {}, staged, "Stages: a canary, then percentages after delays"),
        h("label.field.inline", {}, byHand, "One percentage, raised by hand")),
      stages.element,
      percentageBox),
    h("section.card", { "aria-labelledby": "rollout-safety-title" },
      h("h2", { id: "rollout-safety-title" }, "Pace and safety"),
      h("div.row-form.safety", {}, maxPerMinute, timeout.element, settle.element, minFinished, failurePercent),
      h("p.muted.form-note", {}, "A device must finish within the timeout of being told, and stay online on the new "
        + "version for the settle time to count as succeeded. Once enough devices finished, a share of failures above "
        + "the limit pauses the rollout by itself.")),
    error,
    h("div.actions", {}, submit, h("a.btn", { href: "#/rollouts" }, "Cancel")),
  );

  const syncSchedule = () => {
    stages.element.hidden = byHand.checked;
    percentageBox.hidden = !byHand.checked;
  };
  for (const radio of [byHand, staged]) radio.addEventListener("change", syncSchedule);
  model.addEventListener("change", fillVersions);
  form.addEventListener("input", schedule);
  form.addEventListener("change", schedule);
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const created = await attempt(error, submit, () => api("POST", "/api/v1/rollouts", { body: body() }));
    if (!created) return;
    toast(`Rollout ${created.id} started`, "ok");
    ctx.navigate(`#/rollouts/${created.id}`);
  });

  main.append(head, form);
  return () => clearTimeout(previewTimer);
}
