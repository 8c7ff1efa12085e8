// "Export": the points behind a view as CSV or Parquet (GET /api/v1/export), for the
// devices or group, metrics and range the view shows at the moment of the click.

import { download } from "./api.js";
import { h, toast } from "./dom.js";

/** what() → { device_id: [...] | undefined, group, metric: [...], start, end } (ms). */
export function exportMenu(what) {
  const run = async (format, button) => {
    const { start, end, ...rest } = what();
    button.disabled = true;
    try {
      const { name, bytes } = await download("/api/v1/export", {
        ...rest,
        start: new Date(start).toISOString(),
        end: new Date(end).toISOString(),
        format,
      });
      toast(`${name} downloaded (${(bytes / 1024).toFixed(bytes < 10240 ? 1 : 0)} KiB)`, "ok");
    } catch (error) {
      toast(`The export failed: ${error.message}`, "error");
    } finally {
      button.disabled = false;
    }
  };
  const button = (format, label) => {
    const b = h("button.btn.small", { type: "button", onclick: () => run(format, b), title: `The points shown, as ${label}` }, label);
    return b;
  };
  return h("div.actions.export-menu", { role: "group", "aria-label": "Export" },
    h("span.muted", {}, "Export"), button("csv", "CSV"), button("parquet", "Parquet"));
}
