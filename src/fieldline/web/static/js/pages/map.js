// The fleet on a map: every device that reports a position (metric metadata's latitude
// and longitude, or metrics named lat and lon), coloured by status, of one group or all.

import { api } from "../api.js";
import { createMap } from "../map.js";
import { empty, field, fill, h } from "../dom.js";

const REFRESH_MS = 15000;

export async function render(main, ctx) {
  ctx.setTitle("Map");
  const state = { group: ctx.query.get("group") || "" };
  const note = h("div.sub", {}, "Loading…");
  const box = h("div", { id: "fleet-map" });
  const message = h("div");
  const groups = await api("GET", "/api/v1/groups", { query: { limit: 1000 } }).catch(() => ({ items: [] }));
  const choose = h(
    "select",
    {
      name: "group",
      onchange: () => {
        state.group = choose.value;
        history.replaceState(null, "", state.group ? `#/map?${new URLSearchParams({ group: state.group })}` : "#/map");
        load(true);
      },
    },
    h("option", { value: "" }, "All groups"),
    groups.items.map((g) => h("option", { value: g.name, selected: g.name === state.group }, g.name)),
  );
  main.append(
    h("div.page-head", {}, h("div", {}, h("h1", {}, "Map"), note), h("div.toolbar", {}, field("Group", choose))),
    h("section.card", { "aria-label": "Devices on the map" }, message, box),
  );
  const map = await createMap(box, {
    label: "Devices on the map",
    onOpen: (deviceId) => ctx.navigate(`#/devices/${encodeURIComponent(deviceId)}`),
  });

  async function load(fitView) {
    try {
      const answer = await api("GET", "/api/v1/positions", { query: { group: state.group } });
      map.setDevices(answer.items, { fitView });
      const n = answer.items.length;
      note.textContent = `${n.toLocaleString()} device${n === 1 ? "" : "s"} with a position${state.group ? ` in ${state.group}` : ""}`;
      fill(message, n ? null : empty(
        "No positions yet",
        "Devices appear here when they report a latitude and a longitude: metrics named lat and lon, or any pair marked as latitude and longitude on the ",
        h("a", { href: "#/metrics" }, "Metrics page"), ".",
      ));
    } catch (error) {
      fill(message, h("div.alert", { role: "alert" }, error.message));
    }
  }
  await load(true);
  // Devices move: positions refresh, the view stays where the user put it.
  const timer = setInterval(() => load(false), REFRESH_MS);
  return () => {
    clearInterval(timer);
    map.destroy();
  };
}
