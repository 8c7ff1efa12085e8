// Groups: the sites, farms or depots devices belong to, and the configuration they share.
//
// Viewers read; operators also create, rename, describe, give a time zone to and delete
// groups, and replace a group's configuration. Controls a role cannot use are not
// rendered at all rather than shown disabled.

import { api } from "../api.js";
import { ago, attempt, confirmAction, empty, errorBox, field, fill, h, toast } from "../dom.js";
import { disclosure, pagedTable } from "../paged.js";
import { modal } from "../alerts/common.js";

let editors = 0; // unique ids for aria-describedby: group names may hold spaces

const groupPage = (name) => `#/groups/${encodeURIComponent(name)}`;
const plural = (count, noun) => `${count} ${noun}${count === 1 ? "" : "s"}`;

/** The IANA zones the browser knows, offered while typing; the server checks the name. */
function zoneList() {
  let zones = [];
  try {
    zones = Intl.supportedValuesOf("timeZone");
  } catch {
    // an older browser: the field is free text
  }
  return h("datalist", { id: `zones-${(editors += 1)}` }, ["UTC", ...zones].map((zone) => h("option", { value: zone })));
}

/** Rename, describe, set the time zone; answers the updated group or undefined. */
function editGroup(group) {
  const name = h("input", { name: "name", required: true, maxlength: 128, autocomplete: "off", value: group.name });
  const description = h("input", { name: "description", maxlength: 2000, autocomplete: "off", value: group.description });
  const zones = zoneList();
  const timezone = h("input", {
    name: "timezone", maxlength: 64, autocomplete: "off", spellcheck: "false", list: zones.id,
    placeholder: "None: each viewer's own", value: group.timezone || "",
  });
  return modal(
    `Edit group ${group.name}`,
    [
      field("Name", name, "Its devices, configuration, keys, alert rules and silences follow a new name."),
      field("Description", description),
      field("Time zone", timezone, "An IANA zone such as Europe/Berlin; empty for none."),
      zones,
    ],
    "Save",
    () => {
      const changes = {};
      if (name.value.trim() !== group.name) changes.name = name.value.trim();
      if (description.value.trim() !== group.description) changes.description = description.value.trim();
      if ((timezone.value.trim() || null) !== group.timezone) changes.timezone = timezone.value.trim() || null;
      if (!Object.keys(changes).length) return group;
      return api("PATCH", `/api/v1/groups/${encodeURIComponent(group.name)}`, { body: changes });
    },
  );
}

/** The textarea's text as a configuration object, or an Error saying what is wrong. */
function parseConfig(text) {
  let value;
  try {
    value = JSON.parse(text);
  } catch (failure) {
    throw new Error(`Not valid JSON: ${failure.message}`);
  }
  if (value === null || typeof value !== "object" || Array.isArray(value)) {
    throw new Error('The configuration must be a JSON object, like {"interval_s": 30}.');
  }
  return value;
}

/** The group's configuration: read-only, plus an editor for operators (the groups list
 * and a group's page); `first`, its answer when the page asked for it already. */
export function configPanel(name, canEdit, first = null) {
  const panel = h("div.config-panel", {}, h("p.muted", {}, "Loading configuration…"));

  function show(state) {
    const unset = state.version === 0;
    const edit = canEdit
      ? h("button.btn.small", { type: "button", onclick: () => editor(state) }, "Edit configuration")
      : null;
    fill(
      panel,
      h(
        "div.card-head",
        {},
        h("div.muted", {}, unset
          ? "No shared configuration yet: each device gets only its own."
          : ["Version ", String(state.version), " · updated ", ago(state.updated_at)]),
        edit,
      ),
      unset ? null : h("pre.config-json", {}, JSON.stringify(state.config, null, 2)),
      unset ? null : h("p.muted", {}, "Each device in the group receives this object, with its own configuration merged over it."),
    );
  }

  function editor(state) {
    const helpId = `config-help-${(editors += 1)}`;
    const text = h("textarea", { name: "config", rows: 12, spellcheck: "false", "aria-describedby": helpId });
    text.value = JSON.stringify(state.config, null, 2);
    const error = errorBox();
    const save = h("button.btn.primary", { type: "submit" }, "Save configuration");
    const cancel = h("button.btn", { type: "button", onclick: () => show(state) }, "Cancel");
    const form = h(
      "form.stack-form",
      { "aria-label": `Configuration of ${name}` },
      field("Configuration (JSON object)", text),
      h("span.muted", { id: helpId },
        "Replaces the group's whole object. Ctrl+Enter saves."),
      error,
      h("div.actions", {}, save, cancel),
    );
    text.addEventListener("input", () => text.removeAttribute("aria-invalid"));
    text.addEventListener("keydown", (event) => {
      if (event.key === "Enter" && (event.ctrlKey || event.metaKey)) form.requestSubmit();
    });
    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      // Checked here first, so a typo is pointed out without a round trip.
      const answer = await attempt(error, save, async () => {
        const config = parseConfig(text.value);
        return api("PUT", `/api/v1/groups/${encodeURIComponent(name)}/config`, { body: { config } });
      });
      if (!answer) {
        text.setAttribute("aria-invalid", "true");
        text.focus();
        return;
      }
      const devices = answer.devices_versioned;
      const reach = devices ? `sent to ${devices} device${devices === 1 ? "" : "s"}` : "no device needed a change";
      const pending = answer.delivery_pending ? ` (${answer.delivery_pending} waiting for the broker)` : "";
      toast(`Configuration of ${name} saved as version ${answer.version}: ${reach}${pending}`, "ok");
      show(answer);
    });
    fill(panel, form);
    text.focus();
  }

  (first || api("GET", `/api/v1/groups/${encodeURIComponent(name)}/config`))
    .then(show)
    .catch((failure) => fill(panel, h("div.alert", { role: "alert" }, failure.message)));
  return panel;
}

function row(group, canEdit, actions) {
  return h(
    "tr",
    { dataset: { group: group.name } },
    h("td.break", {}, h("a", { href: groupPage(group.name), title: "The group's page" }, h("strong", {}, group.name))),
    h("td.wrap.hide-narrow", {}, group.description || h("span.muted", {}, "—")),
    h("td.hide-narrow", {}, group.timezone || h("span.muted", {}, "—")),
    h("td.hide-narrow", {}, ago(group.created_at)),
    h(
      "td.num",
      {},
      h(
        "div.row-actions",
        {},
        disclosure(() => configPanel(group.name, canEdit), {}, "Configuration"),
        canEdit
          ? h("button.btn.small", { type: "button", "aria-label": `Edit ${group.name}`, onclick: () => actions.edit(group) }, "Edit")
          : null,
        canEdit
          ? h("button.btn.small.danger", { type: "button", "aria-label": `Delete ${group.name}`, onclick: () => actions.remove(group) }, "Delete")
          : null,
      ),
    ),
  );
}

function createForm(onCreated) {
  const name = h("input", { name: "name", required: true, maxlength: 128, autocomplete: "off", placeholder: "north-farm" });
  const description = h("input", { name: "description", maxlength: 2000, autocomplete: "off", placeholder: "Optional" });
  const error = errorBox();
  const submit = h("button.btn.primary", { type: "submit" }, "Create group");
  const described = field("Description", description);
  described.classList.add("grow");
  const form = h(
    "form.row-form",
    { "aria-label": "New group" },
    field("Name", name),
    described,
    submit,
  );
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const created = await attempt(error, submit, () =>
      api("POST", "/api/v1/groups", { body: { name: name.value.trim(), description: description.value.trim() } }));
    if (!created) return;
    toast(`Group ${created.name} created`, "ok");
    form.reset();
    name.focus();
    onCreated(created);
  });
  return h("section.card", { "aria-labelledby": "new-group-title" }, h("h2", { id: "new-group-title" }, "New group"), form, error);
}

export async function render(main, ctx) {
  ctx.setTitle("Groups");
  const canEdit = ctx.can("operator");
  const actions = {
    async edit(group) {
      const updated = await editGroup(group);
      if (!updated || updated === group) return;
      toast(updated.name === group.name
        ? `Group ${updated.name} saved`
        : `Group ${group.name} renamed to ${updated.name}; its devices and configuration moved with it`, "ok");
      await table.reload();
    },
    async remove(group) {
      // Asked afresh: how many devices would leave the group.
      const current = await attempt(table.error, null, () =>
        api("GET", `/api/v1/groups/${encodeURIComponent(group.name)}`));
      if (!current) return;
      const devices = current.device_count
        ? `Its ${plural(current.device_count, "device")} will stay registered, in no group, and no longer get `
          + "the group's configuration: each is sent its own configuration alone, as a new version."
        : "It has no devices.";
      const ok = await confirmAction(
        `Delete group ${group.name}?`,
        `${devices} The group's configuration and its history are deleted; alert rules and silences `
          + "naming the group then cover no device.",
        "Delete group",
      );
      if (!ok) return;
      const deleted = await attempt(table.error, null, () =>
        api("DELETE", `/api/v1/groups/${encodeURIComponent(group.name)}`));
      if (!deleted) return;
      const sent = deleted.devices_versioned ? `, ${plural(deleted.devices_versioned, "device")} reconfigured` : "";
      toast(`Group ${deleted.name} deleted: ${plural(deleted.devices_ungrouped, "device")} now in no group${sent}`, "ok");
      await table.reload();
    },
  };
  const table = pagedTable({
    path: "/api/v1/groups",
    columns: [
      "Name", { label: "Description", className: "hide-narrow" }, { label: "Time zone", className: "hide-narrow" },
      { label: "Created", className: "hide-narrow" }, { label: "Actions", hidden: true },
    ],
    row: (group) => row(group, canEdit, actions),
    empty: () => empty("No groups yet", canEdit
      ? "Create one above, then put devices in it to share a configuration."
      : "An operator creates them; devices in a group share its configuration."),
  });
  main.append(
    h(
      "div.page-head",
      {},
      h("div", {}, h("h1", {}, "Groups"),
        h("div.sub", {}, "Sites, farms or depots: each group's devices share its configuration.")),
    ),
    h("div.stack", {}, canEdit ? createForm(() => table.reload()) : null, table.element),
  );
  await table.reload();
  return table.stop;
}
