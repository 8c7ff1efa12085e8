// Firmware: the signed images per device model, the upload form (operators), and the
// public keys devices check signatures with (docs/ota.md).
//
// fieldline signs an upload itself unless the form carries a signature made offline,
// which must verify against a trusted key; the answer shows what was signed with which key.

import { api } from "../api.js";
import { ago, attempt, confirmAction, empty, errorBox, field, fill, h, toast } from "../dom.js";
import { pagedTable } from "../paged.js";
import { listAll } from "../alerts/common.js";
import { fmtBytes, shortHash } from "../ota/common.js";

const imagePath = (image) =>
  `/api/v1/firmware/${encodeURIComponent(image.device_model)}/${encodeURIComponent(image.version)}`;

function uploadForm(deviceTypes, onUploaded) {
  const models = h("datalist", { id: "firmware-models" }, deviceTypes.map((t) => h("option", { value: t })));
  const model = h("input", {
    name: "device_model", required: true, maxlength: 128, autocomplete: "off", list: models.id, placeholder: "soil-v2",
  });
  const version = h("input", { name: "version", required: true, maxlength: 64, autocomplete: "off", placeholder: "1.4.0" });
  const file = h("input", { name: "file", type: "file", required: true });
  const notes = h("textarea.short", { name: "release_notes", maxlength: 10000, rows: 3, placeholder: "Faster Wi-Fi reconnect" });
  const signature = h("input.mono", {
    name: "signature", autocomplete: "off", spellcheck: "false", placeholder: "Empty: fieldline signs it",
  });
  const error = errorBox();
  const result = h("div", { "aria-live": "polite" });
  const submit = h("button.btn.primary", { type: "submit" }, "Upload");
  const wide = (label, control, hint) => {
    const labelled = field(label, control, hint);
    labelled.classList.add("grow");
    return labelled;
  };
  const form = h(
    "form.row-form.upload-form",
    { "aria-label": "Upload firmware" },
    field("Device model", model),
    field("Version", version),
    wide("Image file", file),
    wide("Release notes", notes),
    wide("Signature (optional)", signature, "Base64 Ed25519 signature of the manifest, made with an offline key"),
    models,
    submit,
  );
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    fill(result);
    const body = new FormData();
    body.append("device_model", model.value.trim());
    body.append("version", version.value.trim());
    body.append("file", file.files[0]);
    if (notes.value.trim()) body.append("release_notes", notes.value.trim());
    if (signature.value.trim()) body.append("signature", signature.value.trim());
    const image = await attempt(error, submit, () => api("POST", "/api/v1/firmware", { body }));
    if (!image) return;
    fill(result, h(
      "div.alert.ok.upload-result",
      {},
      h("div", {}, `Uploaded ${image.device_model} ${image.version} (${fmtBytes(image.size_bytes)}), signed with key `,
        h("code", {}, image.key_id)),
      h("dl.props", {},
        h("dt", {}, "SHA-256"), h("dd.mono", { dataset: { field: "sha256" } }, image.sha256),
        h("dt", {}, "Signature"), h("dd.mono", { dataset: { field: "signature" } }, image.signature)),
    ));
    toast(`Firmware ${image.device_model} ${image.version} uploaded`, "ok");
    form.reset();
    onUploaded(image);
  });
  return h(
    "section.card",
    { "aria-labelledby": "upload-title" },
    h("h2", { id: "upload-title" }, "Upload an image"),
    form,
    h("p.muted.form-note", {}, "The device model is the devices' type. A model and version are uploaded once; "
      + "fieldline computes the image's SHA-256 and signs its manifest (model, version, digest, size)."),
    error,
    result,
  );
}

function keysCard() {
  const body = h("div", {}, h("p.muted", {}, "Loading keys…"));
  api("GET", "/api/v1/firmware/keys")
    .then(({ items }) => fill(body, items.length
      ? h("div.table-wrap", {}, h("table.data", {},
        h("thead", {}, h("tr", {}, h("th", {}, "Key id"), h("th", {}, "Public key (base64)"))),
        h("tbody", {}, items.map((key) => h(
          "tr",
          { dataset: { keyId: key.key_id } },
          h("td", {}, h("div.mono", {}, key.key_id), key.active
            ? h("span.badge.ok", {}, "active: signs new images")
            : h("span.badge.plain", {}, "trusted")),
          h("td.break.mono", {}, key.public_key),
        )))))
      : empty("No keys", "fieldline makes its signing key at the first start.")))
    .catch((failure) => fill(body, h("div.alert", { role: "alert" }, failure.message)));
  return h(
    "section.card",
    { "aria-labelledby": "keys-title" },
    h("h2", { id: "keys-title" }, "Signing keys"),
    h("p.muted.form-note.keys-note", {}, "Devices check each image's signature against these public keys "
      + "(GET /api/v1/firmware/keys needs no sign-in). The active key signs new uploads; the others stay trusted while keys rotate."),
    body,
  );
}

export async function render(main, ctx) {
  ctx.setTitle("Firmware");
  const operator = ctx.can("operator");
  const admin = ctx.can("admin");
  const model = h("select", { name: "device_model", "aria-label": "Model" }, h("option", { value: "" }, "All models"));
  if (ctx.query.get("device_model")) {
    model.append(h("option", { value: ctx.query.get("device_model") }, ctx.query.get("device_model")));
    model.value = ctx.query.get("device_model");
  }

  const table = pagedTable({
    path: "/api/v1/firmware",
    query: () => ({ device_model: model.value }),
    columns: [
      "Model", "Version", { label: "Size", className: "num hide-narrow" }, { label: "SHA-256", className: "hide-narrow" },
      { label: "Key", className: "hide-narrow" }, "Uploaded", { label: "Release notes", className: "hide-narrow" },
      { label: "Actions", hidden: true },
    ],
    row,
    empty: (asked) => empty(asked.device_model ? `No images for ${asked.device_model}` : "No firmware yet",
      operator ? "Upload one above." : "An operator uploads them."),
    summary: (shown) => `${shown} image${shown === 1 ? "" : "s"}, newest first`,
  });

  function row(image) {
    const name = `${image.device_model} ${image.version}`;
    return h(
      "tr",
      { dataset: { model: image.device_model, version: image.version } },
      h("td.break", {}, h("strong", {}, image.device_model)),
      h("td.mono", {}, image.version),
      h("td.num.hide-narrow", { title: `${image.size_bytes} bytes` }, fmtBytes(image.size_bytes)),
      h("td.hide-narrow", {}, shortHash(image.sha256)),
      h("td.hide-narrow.mono", {}, image.key_id || "—"),
      h("td", { title: image.uploaded_by ? `by ${image.uploaded_by}` : null }, ago(image.uploaded_at),
        image.uploaded_by ? h("div.muted", {}, image.uploaded_by) : null),
      h("td.wrap.hide-narrow", {}, image.release_notes || h("span.muted", {}, "—")),
      h("td.num", {}, h("div.row-actions", {},
        operator
          ? h("a.btn.small", {
            href: `#/rollouts/new?${new URLSearchParams({ device_model: image.device_model, version: image.version })}`,
            "aria-label": `Roll out ${name}`,
          }, "Roll out")
          : null,
        admin
          ? h("button.btn.small.danger", { type: "button", "aria-label": `Delete ${name}`, onclick: () => remove(image) }, "Delete")
          : null)),
    );
  }

  async function remove(image) {
    const name = `${image.device_model} ${image.version}`;
    const ok = await confirmAction(`Delete firmware ${name}?`,
      "Devices can no longer download it, and the finished rollouts that used it are deleted with it. "
        + "An image a running or paused rollout uses cannot be deleted.", "Delete image");
    if (!ok) return;
    const done = await attempt(table.error, null, async () => {
      await api("DELETE", imagePath(image));
      return true;
    });
    if (!done) return;
    toast(`Firmware ${name} deleted`);
    await Promise.all([loadModels(), table.reload()]);
  }

  /** The filter offers the models that have images. */
  async function loadModels() {
    try {
      const { items } = await listAll("/api/v1/firmware");
      const chosen = model.value;
      const names = [...new Set([...items.map((i) => i.device_model), chosen].filter(Boolean))].sort();
      fill(model, h("option", { value: "" }, "All models"), names.map((n) => h("option", { value: n }, n)));
      model.value = chosen;
    } catch {
      // the filter keeps what it offers; the table reports the error
    }
  }

  model.addEventListener("change", () => {
    const query = model.value ? `?${new URLSearchParams({ device_model: model.value })}` : "";
    history.replaceState(null, "", `#/firmware${query}`);
    table.reload();
  });

  let deviceTypes = [];
  if (operator) {
    try {
      deviceTypes = (await api("GET", "/api/v1/fleet/summary")).facets.device_types;
    } catch {
      // the model is typed without suggestions
    }
  }
  const imagesCard = h(
    "section.card",
    { "aria-labelledby": "images-title" },
    h("div.card-head", {}, h("h2", { id: "images-title" }, "Images"),
      h("div.toolbar", {}, field("Model", model))),
    table.element,
  );
  main.append(
    h("div.page-head", {}, h("div", {}, h("h1", {}, "Firmware"),
      h("div.sub", {}, "Signed images per device model; ", h("a", { href: "#/rollouts" }, "rollouts"), " send them to devices in stages."))),
    h("div.stack", {},
      operator ? uploadForm(deviceTypes, () => Promise.all([loadModels(), table.reload()])) : null,
      imagesCard,
      keysCard()),
  );
  await Promise.all([loadModels(), table.reload()]);
  return table.stop;
}
