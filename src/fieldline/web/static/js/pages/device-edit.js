// Editing a device's name, group and type in a dialog (the device page's Edit button).
//
// Only what changed is sent: a PATCH that names the group moves the device, which gives
// it the new group's configuration (a new version, delivered at once).

import { api } from "../api.js";
import { field, h } from "../dom.js";
import { listAll, modal } from "../alerts/common.js";

/** Resolves to the updated device, or null when cancelled (or nothing changed). */
export async function editDevice(device) {
  const groups = (await listAll("/api/v1/groups")).items.map((g) => g.name);
  if (device.group && !groups.includes(device.group)) groups.push(device.group);
  const name = h("input", { name: "name", maxlength: 256, autocomplete: "off", value: device.name });
  const group = h(
    "select",
    { name: "group" },
    h("option", { value: "" }, "No group"),
    groups.map((g) => h("option", { value: g, selected: g === device.group }, g)),
  );
  const deviceType = h("input", {
    name: "device_type", maxlength: 128, autocomplete: "off", spellcheck: "false", value: device.device_type,
  });
  const updated = await modal(
    `Edit ${device.device_id}`,
    [
      field("Name", name),
      field("Group", group, "Its devices get the group's configuration, merged under their own."),
      field("Device type", deviceType, "Says which units, decimals and kinds its metrics have."),
    ],
    "Save",
    async () => {
      const changes = {};
      if (name.value.trim() !== device.name) changes.name = name.value.trim();
      if ((group.value || null) !== device.group) changes.group = group.value || null;
      if (deviceType.value.trim() !== device.device_type) changes.device_type = deviceType.value.trim();
      if (!Object.keys(changes).length) return null;
      return api("PATCH", `/api/v1/devices/${encodeURIComponent(device.device_id)}`, { body: changes });
    },
  );
  return updated || null;
}
