// Authenticate page: photos with views and quick checks, the case request, and the result.
// API: GET /v1/authenticity/info, GET /v1/references, GET /v1/web/samples, POST /v1/authenticate,
// GET /v1/cases/{id} (?case=ID shows a past case).
import { api, ApiError, el, fieldError, formatDate, num, pct, say } from "./common.js";

const CATEGORIES = {
  handbag: { required: ["logo", "stitching", "hardware", "date_code"], optional: ["lining", "overall"] },
  small: { required: ["logo", "stitching", "date_code"], optional: ["hardware", "lining", "overall"] },
  other: { required: ["logo", "overall"], optional: ["stitching", "hardware", "date_code", "lining"] },
};
const FALLBACK_VIEWS = ["logo", "stitching", "hardware", "date_code", "lining", "overall"].map((name) => ({ name, description: "" }));
const MIN_SIDE = 224;

const $ = (id) => document.getElementById(id);
const form = $("case-form");
const photosList = $("photos");
const filesInput = $("files");
const dropzone = $("dropzone");
const formError = $("form-error");
const busy = $("busy");
const submit = $("submit");

let info = null;
let views = FALLBACK_VIEWS;
let photos = [];
let nextId = 1;

function viewLabel(name) {
  return name.replace("_", " ");
}

function category() {
  return CATEGORIES[$("category").value] || CATEGORIES.handbag;
}

// --- views guide -----------------------------------------------------------------------------
function renderGuide() {
  const cat = category();
  const used = new Set(photos.map((p) => p.view));
  const describe = (name) => (views.find((v) => v.name === name) || {}).description || "";
  const item = (name, required) =>
    el("li", {},
      el("span", { class: `tag ${required ? "req" : "opt"}` }, required ? "required" : "optional"), " ",
      el("strong", {}, viewLabel(name)), used.has(name) ? el("span", { class: "tag ok", style: "margin-left:.3rem" }, "added") : "",
      el("br"), el("span", { class: "hint" }, describe(name)));
  const guide = $("views-guide");
  guide.textContent = "";
  guide.append(
    el("h3", {}, "Views to photograph"),
    el("ul", {}, cat.required.map((v) => item(v, true)), cat.optional.map((v) => item(v, false))),
    el("p", { class: "hint" },
      `Template: fill the frame with the detail, in focus, evenly lit, no flash glare. ` +
      (info ? `An authentic verdict needs at least ${info.min_authentic_views} usable photos.` : "")),
  );
}

// --- quick checks in the browser (before upload) ---------------------------------------------
async function precheck(file) {
  const result = { errors: [], warnings: [], notes: [], width: 0, height: 0 };
  const accepted = info ? info.accepted_formats : ["image/jpeg", "image/png", "image/webp"];
  if (!accepted.includes(file.type)) {
    result.errors.push(`This file is not a JPEG, PNG or WebP photo${file.type ? ` (it is ${file.type})` : ""}. Choose a photo instead.`);
    return result;
  }
  if (info && file.size > info.max_file_bytes) {
    result.errors.push(`This photo is ${(file.size / 1e6).toFixed(1)} MB; at most ${(info.max_file_bytes / 1e6).toFixed(0)} MB is accepted.`);
    return result;
  }
  let bitmap;
  try {
    bitmap = await createImageBitmap(file);
  } catch (err) {
    result.errors.push("This file cannot be read as an image; it may be damaged. Choose another photo.");
    return result;
  }
  result.width = bitmap.width;
  result.height = bitmap.height;
  if (info && bitmap.width * bitmap.height > info.max_pixels) {
    result.errors.push(`This photo has ${(bitmap.width * bitmap.height / 1e6).toFixed(0)} megapixels; at most ${(info.max_pixels / 1e6).toFixed(0)} are accepted.`);
  }
  if (Math.min(bitmap.width, bitmap.height) < MIN_SIDE) {
    result.warnings.push(`Small: ${bitmap.width}×${bitmap.height} px; the demo model needs ${MIN_SIDE} px per side, so the server will probably reject it.`);
  } else {
    result.notes.push(`${bitmap.width}×${bitmap.height} px`);
  }
  // Brightness and sharpness on a small copy.
  const scale = Math.min(1, 256 / Math.max(bitmap.width, bitmap.height));
  const w = Math.max(8, Math.round(bitmap.width * scale));
  const h = Math.max(8, Math.round(bitmap.height * scale));
  const canvas = new OffscreenCanvas(w, h);
  const ctx = canvas.getContext("2d", { willReadFrequently: true });
  ctx.drawImage(bitmap, 0, 0, w, h);
  bitmap.close();
  const { data } = ctx.getImageData(0, 0, w, h);
  const grey = new Float32Array(w * h);
  let sum = 0;
  for (let i = 0; i < w * h; i++) {
    grey[i] = 0.299 * data[4 * i] + 0.587 * data[4 * i + 1] + 0.114 * data[4 * i + 2];
    sum += grey[i];
  }
  const mean = sum / (w * h);
  let lap = 0;
  let lap2 = 0;
  let n = 0;
  for (let y = 1; y < h - 1; y++) {
    for (let x = 1; x < w - 1; x++) {
      const i = y * w + x;
      const v = 4 * grey[i] - grey[i - 1] - grey[i + 1] - grey[i - w] - grey[i + w];
      lap += v;
      lap2 += v * v;
      n++;
    }
  }
  const sharpness = n ? lap2 / n - (lap / n) ** 2 : 0;
  if (mean < 45) result.warnings.push("Looks dark: add light or retake.");
  else if (mean > 225) result.warnings.push("Looks overexposed: reduce light or avoid flash.");
  else result.notes.push("exposure looks fine");
  if (sharpness < 12) result.warnings.push("May be blurry: hold still and focus on the detail.");
  else result.notes.push("looks sharp");
  return result;
}

// --- photo cards -------------------------------------------------------------------------------
function checksList(p) {
  const items = [];
  if (p.checking) items.push(el("li", { class: "warn" }, "checking…"));
  for (const m of p.precheck?.notes || []) items.push(el("li", {}, m));
  for (const m of p.precheck?.warnings || []) items.push(el("li", { class: "warn" }, m));
  return el("ul", { class: "checks", "aria-label": "Quick checks before upload" }, items);
}

function renderPhotos() {
  photosList.textContent = "";
  photos.forEach((p, index) => {
    const selectId = `view-${p.id}`;
    const errorId = `photo-error-${p.id}`;
    const errors = [...(p.precheck?.errors || []), ...(p.serverError ? [p.serverError] : [])];
    const select = el("select", { id: selectId, "aria-describedby": errorId },
      views.map((v) => el("option", { value: v.name, selected: v.name === p.view }, viewLabel(v.name))));
    select.addEventListener("change", () => {
      p.view = select.value;
      p.serverError = "";
      renderGuide();
      renderPhotos();
      $(selectId).focus();
    });
    const thumb = p.url && !(p.precheck?.errors || []).length
      ? el("img", { class: "thumb", src: p.url, alt: `Photo ${index + 1}: ${p.name}` })
      : el("div", { class: "thumb placeholder" }, p.checking ? "checking…" : "no preview");
    const remove = el("button", { type: "button", class: "small", "aria-label": `Remove photo ${index + 1} (${p.name})` }, "Remove");
    remove.addEventListener("click", () => removePhoto(p.id));
    const card = el("li", { class: `photo${errors.length ? " has-error" : ""}`, "data-photo": index },
      thumb,
      el("p", { class: "name" }, `${index + 1}. ${p.name}`),
      el("div", { class: "field" }, el("label", { for: selectId }, `View of photo ${index + 1}`), select),
      checksList(p),
      el("p", { class: "error", id: errorId, role: "alert" }, errors.join(" ")),
      remove);
    photosList.append(card);
  });
  const max = info ? info.max_photos : 6;
  filesInput.disabled = photos.length >= max;
}

function nextView() {
  const cat = category();
  const used = new Set(photos.map((p) => p.view));
  return [...cat.required, ...cat.optional].find((v) => !used.has(v)) || cat.required[0];
}

async function addFiles(files, assigned = []) {
  const max = info ? info.max_photos : 6;
  say(formError, "");
  fieldError(filesInput, $("files-error"), "");
  const list = Array.from(files);
  if (photos.length + list.length > max) {
    fieldError(filesInput, $("files-error"), `At most ${max} photos per case: ${list.length} chosen, ${max - photos.length} more fit.`);
    list.length = Math.max(0, max - photos.length);
  }
  const added = list.map((file, i) => {
    const p = { id: nextId++, file, name: file.name || `photo ${photos.length + 1}`, view: assigned[i] || "", checking: true, url: "" };
    photos.push(p);
    p.view = p.view || nextView();
    return p;
  });
  renderPhotos();
  renderGuide();
  await Promise.all(added.map(async (p) => {
    p.precheck = await precheck(p.file);
    p.checking = false;
    if (!p.precheck.errors.length) p.url = URL.createObjectURL(p.file);
  }));
  renderPhotos();
}

function removePhoto(id) {
  const p = photos.find((x) => x.id === id);
  if (p?.url) URL.revokeObjectURL(p.url);
  photos = photos.filter((x) => x.id !== id);
  renderPhotos();
  renderGuide();
  filesInput.focus();
}

function clearAll() {
  for (const p of photos) if (p.url) URL.revokeObjectURL(p.url);
  photos = [];
  renderPhotos();
  renderGuide();
}

filesInput.addEventListener("change", () => {
  addFiles(filesInput.files);
  filesInput.value = "";
});
for (const type of ["dragenter", "dragover"]) {
  dropzone.addEventListener(type, (event) => {
    event.preventDefault();
    dropzone.classList.add("over");
  });
}
for (const type of ["dragleave", "drop"]) dropzone.addEventListener(type, () => dropzone.classList.remove("over"));
dropzone.addEventListener("drop", (event) => {
  event.preventDefault();
  if (event.dataTransfer?.files?.length) addFiles(event.dataTransfer.files);
});
$("category").addEventListener("change", renderGuide);
$("clear").addEventListener("click", () => {
  clearAll();
  $("result").hidden = true;
  say(formError, "");
});

// --- submit ------------------------------------------------------------------------------------
function showApiError(err) {
  const message = err.message || String(err);
  const match = /^images\[(\d+)\]/.exec(message);
  if (match && photos[Number(match[1])]) {
    const p = photos[Number(match[1])];
    p.serverError = message.replace(/^images\[\d+\]\s*(\('.*?'\))?:?\s*/, "");
    renderPhotos();
    say(formError, `Photo ${Number(match[1]) + 1} needs attention: ${p.serverError}`);
    return;
  }
  for (const field of ["brand", "model"]) {
    if (message.startsWith(field)) {
      fieldError($(field), $(`${field}-error`), message);
      $(field).focus();
      return;
    }
  }
  say(formError, message);
}

form.addEventListener("submit", async (event) => {
  event.preventDefault();
  say(formError, "");
  let invalid = null;
  for (const field of ["brand", "model"]) {
    const input = $(field);
    const empty = !input.value.trim();
    fieldError(input, $(`${field}-error`), empty ? `Enter the item's ${field}.` : "");
    if (empty && !invalid) invalid = input;
  }
  for (const p of photos) p.serverError = "";
  if (!photos.length) {
    fieldError(filesInput, $("files-error"), "Add at least one photo.");
    invalid = invalid || filesInput;
  }
  const bad = photos.findIndex((p) => (p.precheck?.errors || []).length);
  if (bad >= 0) {
    say(formError, `Photo ${bad + 1} cannot be used: ${photos[bad].precheck.errors[0]} Remove it or choose another file.`);
    invalid = invalid || $(`view-${photos[bad].id}`);
  }
  if (photos.some((p) => p.checking)) {
    say(formError, "Photos are still being checked; try again in a moment.");
    return;
  }
  if (invalid) {
    renderPhotos();
    invalid.focus();
    return;
  }
  const body = new FormData();
  for (const p of photos) {
    body.append("images", p.file, p.name);
    body.append("views", p.view);
  }
  body.append("brand", $("brand").value.trim());
  body.append("model", $("model").value.trim());
  submit.disabled = true;
  say(busy, el("span", {}, el("span", { class: "spinner", "aria-hidden": "true" }), " Analysing the photos…"));
  try {
    const result = await api("/v1/authenticate", { method: "POST", body });
    renderResult(result);
    history.replaceState(null, "", `/authenticate?case=${encodeURIComponent(result.case_id)}`);
    say(busy, `Done: ${result.verdict}.`);
  } catch (err) {
    say(busy, "");
    showApiError(err);
  } finally {
    submit.disabled = false;
  }
});

// --- result ------------------------------------------------------------------------------------
function heatFigure(image, caseData) {
  const heatId = `heat-${image.index}`;
  const opacityId = `opacity-${image.index}`;
  const overlay = el("img", { class: "overlay", src: image.heatmap_url, alt: `Heatmap of photo ${image.index + 1}`, style: "opacity:0.6" });
  const toggle = el("input", { type: "checkbox", id: heatId, checked: true });
  const opacity = el("input", { type: "range", id: opacityId, min: 0, max: 100, value: 60 });
  toggle.addEventListener("change", () => { overlay.hidden = !toggle.checked; opacity.disabled = !toggle.checked; });
  opacity.addEventListener("input", () => { overlay.style.opacity = String(opacity.value / 100); });
  const q = image.quality;
  const findings = [];
  if (image.score !== null && image.score !== undefined) {
    findings.push(el("li", { class: image.score >= 0.5 ? "bad" : "" }, `counterfeit evidence ${pct(image.score)}${image.region ? ` (strongest: ${image.region})` : ""}`));
  }
  findings.push(el("li", { class: image.view_similarity < 0.3 ? "warn" : "" }, `looks like a ${viewLabel(image.view)} photo: similarity ${num(image.view_similarity)}`));
  for (const r of q.reasons) findings.push(el("li", { class: q.ok ? "warn" : "bad" }, `${r.message} — ${r.guidance}`));
  return el("figure", { class: "card heat" },
    el("div", { class: "stack" }, el("img", { src: image.image_url, alt: `Photo ${image.index + 1} of case ${caseData.case_id}: ${viewLabel(image.view)}` }), overlay),
    el("div", { class: "controls" },
      el("span", {}, toggle, " ", el("label", { for: heatId }, "Heatmap")),
      el("span", {}, el("label", { for: opacityId }, "Opacity"), " ", opacity)),
    el("figcaption", {},
      el("strong", {}, `${image.index + 1}. ${viewLabel(image.view)} `),
      el("span", { class: `tag ${q.ok ? "ok" : "bad"}` }, q.ok ? "usable" : "rejected"),
      el("ul", { class: "checks", "aria-label": `Findings for photo ${image.index + 1}` }, findings)));
}

function renderResult(c) {
  const body = $("result-body");
  body.textContent = "";
  const engine = c.engine;
  body.append(
    el("div", { class: `card verdict ${c.verdict}` },
      el("div", {},
        el("div", { class: "word" }, c.verdict),
        el("div", { class: "muted small" }, `${c.brand} · ${c.model} · case ${c.case_id} · ${formatDate(c.created_at)}`)),
      el("div", {},
        el("div", {}, `Confidence ${pct(c.confidence, 1)}`),
        el("div", { class: "meter", role: "img", "aria-label": `confidence ${pct(c.confidence, 1)}` }, el("span", { style: `width:${(100 * c.confidence).toFixed(1)}%` })),
        c.counterfeit_probability !== null ? el("div", { class: "small muted" }, `Probability counterfeit: ${pct(c.counterfeit_probability, 1)}`) : ""),
      el("div", { class: "actions" },
        el("a", { class: "button", href: c.report_url, target: "_blank", rel: "noopener" }, "HTML report"),
        el("a", { class: "button", href: c.pdf_url, target: "_blank", rel: "noopener" }, "PDF certificate"),
        el("a", { class: "button", href: c.json_url, target: "_blank", rel: "noopener" }, "JSON"))),
    c.reasons.length ? el("ul", {}, c.reasons.map((r) => el("li", {}, r))) : "",
    c.notes.length ? el("ul", { class: "muted small" }, c.notes.map((n) => el("li", {}, n))) : "",
    el("p", { class: "muted small" },
      `Engine ${engine.name}: ${engine.backbone}, ${engine.precision} on ${engine.backend}.`,
      engine.trained_on_synthetic_data ? el("strong", {}, " Trained on synthetic data: a demo model, not for real items.") : ""),
    el("h3", {}, "Photos, heatmaps and findings per view"),
    el("p", { class: "hint" }, "Red: counterfeit evidence; blue: authentic evidence."),
    el("div", { class: "result-photos" }, c.images.map((image) => heatFigure(image, c))),
  );
  body.append(el("h3", {}, "Nearest references"));
  if (!c.references.length) {
    body.append(el("p", { class: "muted" }, "No verified references of this brand and model are registered for these views."));
  } else {
    body.append(el("div", { class: "refs" }, c.references.map((ref) => {
      const photo = c.images.find((i) => i.index === ref.photo_index);
      return el("div", { class: "card" },
        el("div", { class: "pair" },
          el("figure", {}, el("img", { src: photo ? photo.image_url : "", alt: `Photo ${ref.photo_index + 1} of this case` }), el("figcaption", {}, `this item: photo ${ref.photo_index + 1}`)),
          el("figure", {}, el("img", { src: ref.image_url, alt: `Verified reference ${ref.reference_id.slice(0, 8)} (${viewLabel(ref.view)})` }), el("figcaption", {}, `reference ${ref.reference_id.slice(0, 8)}`))),
        el("p", { class: "small" }, `${viewLabel(ref.view)}: similarity ${num(ref.similarity)}`));
    })));
  }
  $("result").hidden = false;
  $("result-title").focus();
}

// --- samples and start-up ---------------------------------------------------------------------
async function loadSample(sample, button) {
  button.disabled = true;
  say(busy, `Loading the sample case ${sample.title}…`);
  try {
    const files = await Promise.all(sample.photos.map(async (p) => {
      const response = await fetch(p.url);
      if (!response.ok) throw new ApiError(response.status, `sample photo ${p.file} is missing on the server`);
      const blob = await response.blob();
      return new File([blob], `${sample.id}-${p.file}`, { type: blob.type || "image/jpeg" });
    }));
    clearAll();
    $("result").hidden = true;
    $("brand").value = sample.brand;
    $("model").value = sample.model;
    fieldError($("brand"), $("brand-error"), "");
    fieldError($("model"), $("model-error"), "");
    $("category").value = "handbag";
    await addFiles(files, sample.photos.map((p) => p.view));
    say(busy, `Loaded the sample case ${sample.title}: ${files.length} photos. Press Authenticate.`);
    submit.focus();
  } catch (err) {
    say(busy, "");
    say(formError, `Could not load the sample: ${err.message}`);
  } finally {
    button.disabled = false;
  }
}

async function loadSamples() {
  const box = $("samples");
  try {
    const { cases } = await api("/v1/web/samples");
    if (!cases.length) {
      say($("samples-hint"), "This server has no sample cases (run kiln demo --prepare to make them).");
      return;
    }
    for (const sample of cases) {
      const button = el("button", { type: "button", "data-label": sample.label }, `Sample: ${sample.label} ${sample.id.split("-").pop()} (${sample.brand} ${sample.model})`);
      button.addEventListener("click", () => loadSample(sample, button));
      box.append(button);
    }
  } catch (err) {
    $("samples-box").hidden = true;
  }
}

async function loadNames() {
  try {
    const { references } = await api("/v1/references");
    const brands = [...new Set(references.map((r) => r.brand))].sort();
    const models = [...new Set(references.map((r) => r.model))].sort();
    $("brands").replaceChildren(...brands.map((b) => el("option", { value: b })));
    $("models").replaceChildren(...models.map((m) => el("option", { value: m })));
  } catch (err) {
    // Names are only suggestions.
  }
}

async function start() {
  renderGuide();
  try {
    info = await api("/v1/authenticity/info");
    views = info.views;
    renderGuide();
  } catch (err) {
    say(formError, err instanceof ApiError && err.status === 404
      ? "The authentication app is not enabled on this server (start kiln serve with --apps authenticity)."
      : `The authentication app is not available: ${err.message}`);
    submit.disabled = true;
    return;
  }
  loadSamples();
  loadNames();
  const caseId = new URLSearchParams(location.search).get("case");
  if (caseId) {
    try {
      renderResult(await api(`/v1/cases/${encodeURIComponent(caseId)}`));
    } catch (err) {
      say(formError, `Case ${caseId}: ${err.message}`);
    }
  }
}
start();
