// The device page's two control panels: configuration (desired vs reported, with an
// editor) and commands (send one, watch its status, open one for its parameters, who sent
// it and its whole result). Each renders into its element
// and exposes update(), which the page calls with what the device's stream sends.

import { api } from "../api.js";
import { ago, attempt, clear, fill, empty, errorBox, field, fmtTime, h } from "../dom.js";
import { disclosure } from "../paged.js";

const KNOWN_COMMANDS = ["ping", "reboot", "identify"];

/** Parse a textarea as a JSON object, or throw an error a user can act on. */
function jsonObject(text, what) {
  let value;
  try {
    value = JSON.parse(text.trim() || "{}");
  } catch (error) {
    throw new Error(`${what} is not valid JSON: ${error.message}`);
  }
  if (value === null || typeof value !== "object" || Array.isArray(value)) {
    throw new Error(`${what} must be a JSON object, like {"interval": 60}`);
  }
  return value;
}

function syncBadge(state) {
  if (state.version === 0) return h("span.badge.plain", {}, "no configuration");
  if (state.in_sync) return h("span.badge.ok", { dataset: { sync: "in-sync" } }, `in sync · v${state.version}`);
  if (state.delivery_pending) return h("span.badge.pending", { dataset: { sync: "pending" } }, `v${state.version} not delivered yet`);
  return h("span.badge.pending", { dataset: { sync: "waiting" } }, `v${state.version} sent · waiting for the device`);
}

export function renderConfig(container, ctx, base) {
  const status = h("div.config-status", { "aria-live": "polite" });
  const effective = h("pre.config-effective");
  const error = errorBox();
  let editor = null;
  let dirty = false;

  const parts = [status, h("h3", {}, "Effective configuration"), effective];
  if (ctx.can("operator")) {
    editor = h("textarea", {
      name: "config", spellcheck: "false", rows: 8, "aria-describedby": "config-help",
      oninput: () => { dirty = true; },
    });
    const save = h("button.btn.primary", { type: "submit" }, "Save configuration");
    const form = h(
      "form.stack-form",
      {
        "aria-label": "Device configuration",
        onsubmit: async (event) => {
          event.preventDefault();
          const saved = await attempt(error, save, async () => {
            const config = jsonObject(editor.value, "The configuration");
            return api("PUT", `${base}/config`, { body: { config } });
          });
          editor.setAttribute("aria-invalid", String(!saved));
          if (saved) {
            dirty = false;
            update(saved);
          }
        },
      },
      field("This device's own settings (JSON)", editor),
      h("span.muted", { id: "config-help" }, "Merged over its group's configuration and sent to the device, which reports the version it applied."),
      error,
      h("div.actions", {}, save),
    );
    parts.push(form);
  }
  fill(container, ...parts);

  function update(state) {
    fill(status, 
      h(
        "p",
        {},
        syncBadge(state),
        " ",
        state.reported_version !== null
          ? h("span.muted", {}, `device reported v${state.reported_version} `, ago(state.reported_at))
          : h("span.muted", {}, "the device has not reported a version"),
      ),
    );
    effective.textContent = JSON.stringify(state.effective, null, 2);
    if (editor && !dirty && document.activeElement !== editor) {
      editor.value = JSON.stringify(state.desired, null, 2);
    }
  }

  api("GET", `${base}/config`).then(update, (e) => { error.textContent = e.message; });
  return { update };
}

/** Any JSON, indented, as the device or the operator sent it. */
const pretty = (value) => h("pre.command-json", {}, JSON.stringify(value, null, 2));

function commandDetail(c) {
  const row = (label, value) => [h("dt", {}, label), h("dd", {}, value)];
  return h(
    "dl.props.command-detail",
    {},
    row("Parameters", Object.keys(c.params).length ? pretty(c.params) : h("span.muted", {}, "none")),
    row("Result", c.result === null || c.result === undefined
      ? h("span.muted", {}, c.completed_at ? "none" : "not answered yet")
      : pretty(c.result)),
    row("Sent by", c.created_by),
    row("Created", fmtTime(c.created_at)),
    row("Delivered", c.sent_at ? fmtTime(c.sent_at) : h("span.muted", {}, "not yet")),
    row("Answered", c.completed_at ? fmtTime(c.completed_at) : h("span.muted", {}, "not yet")),
    row("Expires", fmtTime(c.expires_at)),
    row("Command id", h("span.mono", {}, c.command_id)),
  );
}

/** One line of JSON for the list; Details shows it whole. */
function preview(value) {
  if (value === null || value === undefined) return "—";
  const text = JSON.stringify(value);
  return text.length > 80 ? `${text.slice(0, 79)}…` : text;
}

function commandRow(c) {
  return h(
    "tr",
    { dataset: { commandId: c.command_id } },
    h("td", {}, ago(c.created_at)),
    h("td.mono", {}, c.name),
    h("td.wrap.mono.hide-narrow", {}, Object.keys(c.params).length ? preview(c.params) : "—"),
    h("td.hide-narrow", {}, c.created_by),
    h("td", {}, h(`span.badge.${c.status}`, {}, c.status)),
    h("td.wrap.mono.hide-narrow", {}, preview(c.result)),
    h("td.num", {}, disclosure(() => commandDetail(c), { "aria-label": `Details of ${c.name}` }, "Details")),
  );
}

export function renderCommands(container, ctx, base) {
  const list = h("div", { "aria-live": "polite" });
  const parts = [];
  if (ctx.can("operator")) {
    const error = errorBox();
    const name = h("input", { name: "command", required: true, list: "known-commands", autocomplete: "off", placeholder: "ping" });
    const params = h("textarea.short", { name: "params", rows: 2, spellcheck: "false", placeholder: "{}" });
    const send = h("button.btn.primary", { type: "submit" }, "Send command");
    parts.push(
      h(
        "form.stack-form",
        {
          "aria-label": "Send a command",
          onsubmit: async (event) => {
            event.preventDefault();
            const sent = await attempt(error, send, async () => {
              const body = { name: name.value.trim(), params: jsonObject(params.value, "The parameters") };
              return api("POST", `${base}/commands`, { body });
            });
            if (sent) {
              prepend(sent);
              name.value = "";
              params.value = "";
            }
          },
        },
        h("div.row-form", {}, h("div.grow", {}, field("Command", name)), field("Parameters (JSON)", params)),
        h("datalist", { id: "known-commands" }, KNOWN_COMMANDS.map((c) => h("option", { value: c }))),
        error,
        h("div.actions", {}, send),
      ),
    );
  }
  parts.push(list);
  fill(container, ...parts);
  let shown = [];

  function prepend(command) {
    if (!shown.some((c) => c.command_id === command.command_id)) update([command, ...shown]);
  }

  function update(items) {
    shown = items;
    if (!items.length) {
      fill(list, empty("No commands yet", ctx.can("operator") ? "Send one above; its result shows here." : ""));
      return;
    }
    // A stream update redraws the list: what the user opened opens again, with the news.
    const opened = new Set(
      [...list.querySelectorAll("[aria-expanded='true']")].map((toggle) => toggle.closest("tr").dataset.commandId),
    );
    const rows = items.map(commandRow);
    fill(list,
      h(
        "div.table-wrap",
        {},
        h(
          "table.data.commands",
          { "aria-label": "Commands" },
          h("thead", {}, h("tr", {}, h("th", {}, "Sent"), h("th", {}, "Command"),
            h("th.hide-narrow", {}, "Parameters"), h("th.hide-narrow", {}, "By"), h("th", {}, "Status"), h("th.hide-narrow", {}, "Result"),
            h("th", {}, h("span.visually-hidden", {}, "Details")))),
          h("tbody", {}, rows),
        ),
      ),
    );
    for (const tr of rows) {
      if (opened.has(tr.dataset.commandId)) tr.querySelector("[aria-expanded]").click();
    }
  }

  api("GET", `${base}/commands`, { query: { limit: 20 } }).then((answer) => update(answer.items), () => update([]));
  return { update };
}
