// A notification channel's form, its fields by type (SPEC §6). Secrets are never sent
// back by the API (a Discord, Slack or Apprise URL is one: shown as its host only), and
// a PATCH merges into the stored config: so editing sends only the fields changed, and
// a secret left blank keeps the stored one.

import { api } from "../api.js";
import { field, fill, h } from "../dom.js";
import { modal } from "./common.js";

export const TYPES = {
  webhook: "Webhook (signed JSON)",
  discord: "Discord",
  slack: "Slack",
  email: "E-mail (SMTP)",
  apprise: "Apprise (Telegram, ntfy, Teams, Pushover…)",
};

// name, label, input props, hint; `secret` fields are blank on edit and omitted when left blank.
const FIELDS = {
  webhook: [
    ["url", "URL", { type: "url", required: true, placeholder: "https://host/path" }],
    ["secret", "Signing secret", { type: "password", autocomplete: "new-password", required: true, minlength: 16, secret: true },
      "At least 16 characters: the HMAC-SHA256 key of X-Fieldline-Signature"],
  ],
  discord: [["url", "Webhook URL", { type: "url", required: true, secret: true }]],
  slack: [["url", "Webhook URL", { type: "url", required: true, secret: true }]],
  email: [
    ["host", "SMTP host", { required: true }],
    ["port", "Port", { type: "number", min: 1, max: 65535, placeholder: "587, or 465 for tls" }],
    ["security", "Security", { options: ["starttls", "tls", "none"] }],
    ["username", "Username", { autocomplete: "off" }],
    ["password", "Password", { type: "password", autocomplete: "new-password", secret: true }],
    ["from", "From", { type: "email", required: true }],
    ["to", "To", { required: true, placeholder: "ops@…, oncall@…" }, "Comma-separated addresses"],
  ],
  apprise: [["url", "Apprise URL", { required: true, secret: true, placeholder: "ntfys://host/topic" }, "Any URL Apprise understands"]],
};

function control(name, props, current, stored) {
  const { options, secret, ...attrs } = props;
  if (options) {
    const select = h("select", { name }, options.map((o) => h("option", { value: o }, o)));
    if (current !== undefined) select.value = current;
    return select;
  }
  const input = h("input", { name, autocomplete: "off", spellcheck: "false", ...attrs });
  if (secret && stored !== undefined) {
    // The stored value is not shown: blank keeps it.
    input.required = false;
    input.placeholder = stored ? "unchanged (set)" : "not set";
  } else if (current !== undefined && current !== null) {
    input.value = Array.isArray(current) ? current.join(", ") : String(current);
  }
  return input;
}

/** Create (channel undefined) or edit a channel in a dialog; answers the saved channel. */
export function editChannel(channel) {
  const editing = Boolean(channel);
  const name = h("input", { name: "name", required: true, maxlength: 100, autocomplete: "off", value: channel?.name || "" });
  const type = h("select", { name: "type", disabled: editing }, Object.entries(TYPES).map(([value, label]) => h("option", { value }, label)));
  if (editing) type.value = channel.type;
  const enabled = h("input", { type: "checkbox", name: "enabled", checked: channel ? channel.enabled : true });
  const area = h("div.stack-form");
  let controls = {};

  function renderFields() {
    const config = editing && channel.type === type.value ? channel.config || {} : {};
    controls = {};
    fill(area, FIELDS[type.value].map(([key, label, props, hint]) => {
      const stored = editing ? (channel.secrets_set || []).includes(key) : undefined;
      const input = control(key, props, config[key], stored);
      controls[key] = { input, secret: Boolean(props.secret), shown: input.value };
      return field(label, controls[key].input, hint);
    }));
  }
  type.addEventListener("change", renderFields);
  renderFields();

  function config() {
    const out = {};
    for (const [key, { input, secret, shown }] of Object.entries(controls)) {
      const text = input.value.trim();
      if (editing && (secret ? !text : input.value === shown)) continue;
      if (input.required && !text) throw new Error(`${input.closest("label").firstChild.textContent}: required`);
      if (key === "to") out.to = text.split(/[\s,;]+/).filter(Boolean);
      else if (key === "port") {
        if (text) out.port = Number(text);
      }
      else if (text) out[key] = text; // a blank optional field is left out: the server's default
    }
    return out;
  }

  return modal(
    editing ? `Edit ${channel.name}` : "New notification channel",
    [field("Name", name), field("Type", type), area, h("label.field.inline", {}, enabled, "Enabled")],
    editing ? "Save channel" : "Create channel",
    () => {
      const body = { name: name.value.trim(), config: config(), enabled: enabled.checked };
      return editing
        ? api("PATCH", `/api/v1/notification-channels/${channel.id}`, { body })
        : api("POST", "/api/v1/notification-channels", { body: { ...body, type: type.value } });
    },
  );
}
