// The device page's two control panels: configuration (desired vs reported, with an
// editor) and commands (send one, watch its result). Each renders into its element
// and exposes update(), which the page calls with what the device's stream sends.

import { api } from "../api.js";
import { ago, attempt, clear, fill, empty, errorBox, field, h } from "../dom.js";

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
    fill(list, 
      h(
        "div.table-wrap",
        {},
        h(
          "table.data",
          { "aria-label": "Commands" },
          h("thead", {}, h("tr", {}, h("th", {}, "Sent"), h("th", {}, "Command"), h("th", {}, "Status"), h("th", {}, "Result"))),
          h(
            "tbody",
            {},
            items.map((c) =>
              h(
                "tr",
                { dataset: { commandId: c.command_id } },
                h("td", { title: `by ${c.created_by}` }, ago(c.created_at)),
                h("td.mono", {}, c.name),
                h("td", {}, h(`span.badge.${c.status}`, {}, c.status)),
                h("td.wrap.mono", {}, c.result === null || c.result === undefined ? "—" : JSON.stringify(c.result)),
              )),
          ),
        ),
      ),
    );
  }

  api("GET", `${base}/commands`, { query: { limit: 20 } }).then((answer) => update(answer.items), () => update([]));
  return { update };
}
