// Notification channels (admin only): where alerts are sent, whether each is delivering,
// a "Send test" per channel, and the log of notifications with their attempts.

import { api } from "../api.js";
import { ago, attempt, confirmAction, empty, fill, fmtNumber, h, toast } from "../dom.js";
import { pagedTable } from "../paged.js";
import { listAll } from "../alerts/common.js";
import { TYPES, editChannel } from "../alerts/channel-form.js";
import { renderNotifications } from "../alerts/notifications.js";

function health(channel) {
  if (!channel.enabled) return h("span.badge.plain", {}, "disabled");
  if (channel.failing_since) {
    return h("span", {}, h("span.badge.failed", {}, "failing"), " since ", ago(channel.failing_since),
      channel.last_error ? h("div.muted.mono", {}, channel.last_error) : null);
  }
  return h("span.badge.ok", {}, "ok");
}

export async function render(main, ctx) {
  ctx.setTitle("Notification channels");
  const table = pagedTable({
    path: "/api/v1/notification-channels",
    columns: ["Channel", "Type", "Health", "Test", { label: "Actions", hidden: true }],
    row,
    empty: () => empty("No channels yet", "Add a webhook, Discord, Slack, e-mail or Apprise channel; then name it in a rule."),
  });
  const { error } = table;

  function row(channel) {
    const result = h("span.test-result", { "aria-live": "polite" });
    const test = h("button.btn.small", { type: "button" }, "Send test");
    test.addEventListener("click", async () => {
      fill(result, h("span.muted", {}, "Sending…"));
      const answer = await attempt(error, test, () => api("POST", `/api/v1/notification-channels/${channel.id}/test`));
      if (!answer) {
        fill(result);
        return;
      }
      const took = ` · ${fmtNumber(answer.duration_ms, 0)} ms`;
      fill(result, answer.ok
        ? h("span.badge.ok", {}, `ok${answer.status_code ? ` · ${answer.status_code}` : ""}${took}`)
        : h("span", {}, h("span.badge.failed", {}, "error"), " ", h("span.mono", {}, answer.error || `HTTP ${answer.status_code}`)));
      toast(answer.ok ? `Test sent to ${channel.name}` : `Test to ${channel.name} failed`, answer.ok ? "ok" : "error");
      notifications.reload();
    });
    return h(
      "tr",
      { dataset: { channelId: channel.id } },
      h("td.break", {}, h("strong", {}, channel.name)),
      h("td", {}, TYPES[channel.type] ? channel.type : h("span.muted", {}, channel.type)),
      h("td.wrap", {}, health(channel)),
      h("td", {}, h("div.actions", {}, test, result)),
      h("td.num", {}, h("div.actions", {},
        h("button.btn.small", { type: "button", onclick: () => edit(channel) }, "Edit"),
        h("button.btn.small.danger", { type: "button", onclick: () => remove(channel) }, "Delete"))),
    );
  }

  async function edit(channel) {
    const saved = await editChannel(channel);
    if (!saved) return;
    await reload();
    toast(`Channel ${saved.name} ${channel ? "saved" : "created"}`, "ok");
  }

  async function remove(channel) {
    const ok = await confirmAction(`Delete ${channel.name}?`, "Its pending notifications are dropped. A channel a rule still names cannot be deleted.", "Delete channel");
    if (!ok) return;
    const done = await attempt(error, null, async () => {
      await api("DELETE", `/api/v1/notification-channels/${channel.id}`);
      return true;
    });
    if (!done) return;
    toast(`Channel ${channel.name} deleted`);
    reload();
  }

  const notifications = renderNotifications([]);
  async function reload() {
    await table.reload();
    try {
      notifications.setChannels((await listAll("/api/v1/notification-channels")).items);
    } catch {
      // the filter keeps its previous options
    }
  }

  main.append(
    h("div.page-head", {},
      h("div", {}, h("h1", {}, "Notification channels"), h("div.sub", {}, "Where alerts are sent. Rules name the channels they use.")),
      h("div.actions", {}, h("button.btn.primary", { type: "button", onclick: () => edit(undefined) }, "New channel"))),
    h("div.stack", {}, table.element, notifications.element),
  );
  await Promise.all([reload(), notifications.reload()]);
  return () => {
    table.stop();
    notifications.stop();
  };
}
