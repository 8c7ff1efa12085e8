// A list endpoint shown as a table a page at a time, as the admin pages show theirs:
// GET path?limit=&cursor=, a "Load more" button while the answer has a next_cursor.
// Pages keep only what is theirs: filters, rows, forms.

import { api } from "./api.js";
import { errorBox, fill, h } from "./dom.js";

/**
 * pagedTable({ path, query, columns, row, empty, summary, pageSize })
 *   path      the list endpoint, e.g. "/api/v1/groups"
 *   query     () => filters for a first page (values "" or undefined are left out);
 *             "Load more" reuses what the shown list was asked with, not what is typed since
 *   columns   header cells: "Name", or { label, className: "num hide-narrow", hidden: true }
 *             (hidden: named for screen readers only, as a column of buttons)
 *   row       (item) => a <tr>, or an array of them
 *   empty     (query) => what to show instead of the table when the first page is empty
 *   summary   (shown) => pager text such as "12 messages, newest first"; none by default
 * Answers { element, error, reload(), stop() }: element holds the error box, the list and
 * the pager; error is the box, for the page's own actions on rows to report into; reload()
 * fetches the first page again; stop() drops a request under way (when leaving the page).
 */
export function pagedTable({ path, query = () => ({}), columns, row, empty, summary, pageSize = 100 }) {
  const error = errorBox();
  const list = h("div", {}, h("p.muted", {}, "Loading…"));
  const pager = h("div.pager");
  let controller = null;
  let tbody = null;
  let applied = {};
  let cursor = null;
  let shown = 0;

  async function load(more = false) {
    // The newest request wins: an older one answering late would mix two lists.
    controller?.abort();
    controller = new AbortController();
    const { signal } = controller;
    error.textContent = "";
    const asked = more ? applied : query();
    // Busy until the answer is shown: what is on screen may still be the previous filters'
    // list, so assistive technology (and a test acting on the rows) waits for this one.
    list.setAttribute("aria-busy", "true");
    let page;
    try {
      page = await api("GET", path, { query: { ...asked, limit: pageSize, cursor: more ? cursor : undefined }, signal });
    } catch (failure) {
      if (failure.name === "AbortError") return; // the newer request clears the flag
      error.textContent = failure.message;
      list.removeAttribute("aria-busy");
      return;
    }
    if (signal.aborted) return;
    list.removeAttribute("aria-busy");
    if (!more) {
      applied = asked;
      shown = 0;
      tbody = h("tbody");
      fill(list, page.items.length
        ? h("div.table-wrap", {}, h("table.data", {}, h("thead", {}, h("tr", {}, columns.map(headCell))), tbody))
        : empty(asked));
    }
    tbody.append(...page.items.flatMap((item) => row(item)));
    shown += page.items.length;
    cursor = page.next_cursor;
    fill(
      pager,
      h("span", {}, shown && summary ? summary(shown) : null),
      cursor ? h("button.btn.small", { type: "button", onclick: () => load(true) }, "Load more") : null,
    );
  }

  return {
    element: h("div", {}, error, list, pager),
    error,
    reload: () => load(),
    stop: () => controller?.abort(),
  };
}

/** A header cell: "Name", or { label, className, hidden } as pagedTable's columns take. */
export function headCell(column) {
  const { label, className, hidden } = typeof column === "string" ? { label: column } : column;
  return h("th", { class: className }, hidden ? h("span.visually-hidden", {}, label) : label);
}

/**
 * A button that opens a detail row beneath its own row, e.g. a payload or a configuration:
 * disclosure(() => node, { "aria-label": "Payload" }, "Payload"). The detail is built
 * afresh at each opening (so it shows the current state) and spans the whole row.
 */
export function disclosure(detail, props = {}, ...label) {
  let opened = null;
  const toggle = h(
    "button.btn.small.disclose",
    { type: "button", "aria-expanded": "false", ...props },
    h("span.chevron", { "aria-hidden": "true" }),
    ...label,
  );
  toggle.addEventListener("click", () => {
    if (opened) {
      opened.remove();
      opened = null;
    } else {
      const tr = toggle.closest("tr");
      opened = h("tr.detail-row", {}, h("td", { colspan: tr.cells.length }, detail()));
      tr.after(opened);
    }
    toggle.setAttribute("aria-expanded", String(Boolean(opened)));
  });
  return toggle;
}
