// Packaging page: the brief form → POST /v1/packaging/recommend (reference image via
// POST /v1/packaging/images) → one card per direction with its assets from the result URLs.
import { api, ApiError, el, fieldError, num, say } from "./common.js";

const $ = (id) => document.getElementById(id);
const MAX_COLOURS = 6;
const FIELDS = ["product", "audience", "keywords", "name", "tagline", "count"];
let colourId = 0;

// --- brand colours -----------------------------------------------------------------------------
function addColour(hex = "#2f6b4f", locked = false) {
  const rows = $("colours");
  if (rows.children.length >= MAX_COLOURS) return;
  const id = ++colourId;
  const picker = el("input", { type: "color", id: `colour-pick-${id}`, value: hex });
  const text = el("input", { type: "text", id: `colour-hex-${id}`, value: hex, maxlength: 9, spellcheck: "false", "aria-describedby": `colour-error-${id}` });
  const lock = el("input", { type: "checkbox", id: `colour-lock-${id}`, checked: locked });
  const remove = el("button", { type: "button", class: "small", "aria-label": `Remove brand colour ${id}` }, "Remove");
  picker.addEventListener("input", () => { text.value = picker.value; });
  text.addEventListener("change", () => {
    const value = text.value.trim();
    const ok = /^#?([0-9a-f]{3}|[0-9a-f]{6})$/i.test(value);
    fieldError(text, $(`colour-error-${id}`), ok ? "" : "Write the colour as #RRGGBB, e.g. #2f6b4f.");
    if (ok) {
      let six = value.replace("#", "");
      if (six.length === 3) six = six.split("").map((c) => c + c).join("");
      picker.value = `#${six.toLowerCase()}`;
    }
  });
  const row = el("div", { class: "colour-row", "data-colour": id },
    el("div", { class: "field" }, el("label", { for: picker.id }, `Colour ${rows.children.length + 1}`), picker),
    el("div", { class: "field" }, el("label", { for: text.id }, "Hex"), text),
    el("div", { class: "field" }, el("span", {}, lock, " ", el("label", { for: lock.id }, "Locked"))),
    remove,
    el("p", { class: "error", id: `colour-error-${id}`, style: "flex-basis:100%" }));
  remove.addEventListener("click", () => { row.remove(); $("add-colour").disabled = false; $("add-colour").focus(); });
  rows.append(row);
  $("add-colour").disabled = rows.children.length >= MAX_COLOURS;
}
$("add-colour").addEventListener("click", () => {
  addColour();
  $("colours").lastElementChild?.querySelector("input[type=text]")?.focus();
});

function colours() {
  return Array.from($("colours").children).map((row) => ({
    hex: row.querySelector("input[type=text]").value.trim(),
    locked: row.querySelector("input[type=checkbox]").checked,
  }));
}

// --- examples ---------------------------------------------------------------------------------
function fill(example) {
  for (const [key, value] of Object.entries(example.fields)) $(key).value = value;
  $("colours").replaceChildren();
  for (const [hex, locked] of example.colours) addColour(hex, locked);
}
$("example-zh").addEventListener("click", () => fill({
  fields: { product: "气泡茶饮料", audience: "年轻女性", keywords: "清新 自然 简约 活力", name: "山茶气泡", tagline: "一口清新" },
  colours: [["#2f6b4f", true]],
}));
$("example-en").addEventListener("click", () => fill({
  fields: { product: "organic skincare serum", audience: "women 30+", keywords: "calm, natural, premium, minimal", name: "Verde Serum", tagline: "Quiet strength for skin" },
  colours: [["#3b5d4a", false]],
}));

// --- errors -----------------------------------------------------------------------------------
function clearErrors() {
  say($("brief-error"), "");
  for (const f of FIELDS) fieldError($(f), $(`${f}-error`), "");
  for (const id of ["brand_colors-error", "reference_images-error", "panel-error"]) $(id).textContent = "";
  for (const input of document.querySelectorAll("#brief [aria-invalid]")) input.removeAttribute("aria-invalid");
}

function showApiError(err) {
  // Validation messages look like "body.keywords: Value error, ...; body.panel: ...".
  let shown = false;
  for (const part of err.message.split(/; (?=(?:body|query|path)\b)/)) {
    let match = /^body\.([a-z_]+)(?:\.(\d+))?(?:\.[a-z_]+)?:\s*(.*)$/.exec(part);
    const whole = /^body:\s*(.*)$/.exec(part);
    if (!match && whole) {
      // Checks of the whole brief: place them by what they are about.
      const field = /brand colour/.test(whole[1]) ? "brand_colors" : /product, audience or keywords/.test(whole[1]) ? "keywords" : "";
      if (field) match = [part, field, undefined, whole[1]];
    }
    if (!match) continue;
    const [, field, index, text] = match;
    const message = text.replace(/^Value error,\s*/, "");
    if (FIELDS.includes(field)) {
      fieldError($(field), $(`${field}-error`), message);
    } else if (field === "panel") {
      $("panel-error").textContent = `Panel: ${message}`;
      $("width").setAttribute("aria-invalid", "true");
      $("height").setAttribute("aria-invalid", "true");
    } else if (field === "brand_colors" && index !== undefined && $("colours").children[Number(index)]) {
      const row = $("colours").children[Number(index)];
      fieldError(row.querySelector("input[type=text]"), row.querySelector(".error"), message);
    } else if ($(`${field}-error`)) {
      $(`${field}-error`).textContent = message;
    } else continue;
    shown = true;
  }
  if (!shown) say($("brief-error"), err.message);
  else say($("brief-error"), "Some fields need attention; see the messages next to them.");
  const first = document.querySelector("#brief [aria-invalid=true]");
  if (first) first.focus();
}

// --- results ----------------------------------------------------------------------------------
async function copy(hex, button) {
  try {
    await navigator.clipboard.writeText(hex);
    button.textContent = "Copied";
  } catch (err) {
    button.textContent = "Copy failed";
  }
  setTimeout(() => { button.textContent = "Copy"; }, 1500);
}

function directionCard(d) {
  const n = d.index + 1;
  const heatId = `layout-heat-${n}`;
  const overlay = el("img", { class: "overlay", src: d.layout.heatmap_url, alt: `Layout heatmap of direction ${n}`, hidden: true });
  const toggle = el("input", { type: "checkbox", id: heatId });
  toggle.addEventListener("change", () => { overlay.hidden = !toggle.checked; });
  const s = d.style;
  const swatches = d.palette.colours.map((c) => {
    const button = el("button", { type: "button", class: "small", "aria-label": `Copy ${c.hex} (${c.role})` }, "Copy");
    button.addEventListener("click", () => copy(c.hex, button));
    return el("li", { class: "swatch" },
      el("div", { class: "chip", style: `background:${c.hex}`, role: "img", "aria-label": `${c.role} colour ${c.hex}` }),
      el("div", { class: "meta" },
        el("strong", {}, c.role, c.locked ? el("span", { class: "tag ok", style: "margin-left:.25rem" }, "locked") : ""),
        el("code", {}, c.hex), button));
  });
  const badges = d.palette.contrast.map((p) =>
    el("li", { class: `tag ${p.passes ? "ok" : "bad"}`, title: `${p.foreground} on ${p.background}; needs ${p.minimum}:1` },
      `${p.usage} ${num(p.ratio, 1)}:1 ${p.level} ${p.passes ? "✓" : "✗"}`));
  const f = d.fonts;
  const exports = [
    ["JSON", d.exports.json_url], ["CSS", d.exports.css_url], ["SVG", d.exports.svg_url], ["ASE", d.exports.ase_url],
    ["PDF", d.mockup.pdf_url], ["Mock-up SVG", d.mockup.svg_url],
  ];
  return el("article", { class: "card direction", "aria-labelledby": `direction-${n}` },
    el("div", { class: "head" },
      el("h3", { id: `direction-${n}` }, `${n}. ${s.name}`, s.name_zh ? el("span", { lang: "zh", class: "muted" }, ` · ${s.name_zh}`) : ""),
      el("span", { class: "tag ok" }, `fit ${num(s.fit)}`)),
    el("div", { class: "mock" }, el("img", { class: "mockup", src: d.mockup.png_url, alt: `Mock-up of direction ${n}: ${s.name}` }), overlay),
    el("p", { class: "small" }, toggle, " ", el("label", { for: heatId }, "Show layout heatmap")),
    el("ul", { class: "scores", "aria-label": "Style scores" },
      el("li", {}, `lexicon ${num(s.scores.lexicon)}`), el("li", {}, `encoder ${num(s.scores.encoder)}`),
      s.scores.image !== null ? el("li", {}, `image ${num(s.scores.image)}`) : "",
      d.image_style_score && d.image_style_score[s.id] !== undefined ? el("li", {}, `reference image style ${num(d.image_style_score[s.id])}`) : ""),
    el("p", { class: "small" }, s.rationale),
    el("h4", {}, `Palette (${d.palette.harmony}, ${d.palette.mode})`),
    el("ul", { class: "swatches" }, swatches),
    el("ul", { class: "badges", "aria-label": "Contrast checks" }, badges),
    el("h4", {}, "Fonts"),
    el("p", { class: "small" }, `${f.heading.family} / ${f.body.family} (${f.relation}). ${f.reason}`),
    el("img", { class: "fonts-preview", src: f.preview_url, alt: `Font pairing preview: ${f.heading.family} and ${f.body.family}`, loading: "lazy" }),
    el("p", { class: "small muted" }, `Layout: ${d.layout.template}, ${d.layout.align} aligned; saliency from the ${d.layout.saliency_source}.`),
    el("div", { class: "actions", role: "group", "aria-label": `Exports of direction ${n}` },
      exports.map(([label, url]) => el("a", { class: "button small", href: url, download: "" }, label))));
}

function renderResults(response) {
  const terms = response.brief?.terms || [];
  say($("understood"), terms.length
    ? `Understood: ${terms.map((t) => (t.term === t.english ? t.term : `${t.term} (${t.english})`)).join(", ")}.`
    : "No known mood words were recognised; directions follow the product and audience.");
  $("directions").replaceChildren(...response.directions.map(directionCard));
  $("results").hidden = false;
  $("results-title").focus();
}

// --- submit -----------------------------------------------------------------------------------
async function uploadReference() {
  const file = $("reference").files[0];
  if (!file) return [];
  const body = new FormData();
  body.append("file", file, file.name);
  try {
    const { id } = await api("/v1/packaging/images", { method: "POST", body });
    return [id];
  } catch (err) {
    fieldError($("reference"), $("reference_images-error"), err.message);
    throw new ApiError(err.status, "");
  }
}

$("brief").addEventListener("submit", async (event) => {
  event.preventDefault();
  clearErrors();
  const brief = {
    product: $("product").value, audience: $("audience").value, keywords: $("keywords").value,
    name: $("name").value, tagline: $("tagline").value, brand_colors: colours(),
    panel: { width_mm: Number($("width").value), height_mm: Number($("height").value) }, count: Number($("count").value),
  };
  if (!brief.product.trim() && !brief.keywords.trim() && !brief.audience.trim()) {
    fieldError($("keywords"), $("keywords-error"), "Describe the product, its audience or its mood words.");
    $("keywords").focus();
    return;
  }
  $("go").disabled = true;
  say($("busy"), el("span", {}, el("span", { class: "spinner", "aria-hidden": "true" }), " Designing…"));
  try {
    brief.reference_images = await uploadReference();
    const response = await api("/v1/packaging/recommend", {
      method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(brief),
    });
    say($("busy"), `${response.directions.length} directions.`);
    renderResults(response);
  } catch (err) {
    say($("busy"), "");
    if (err.message) showApiError(err);
    else say($("brief-error"), "The reference image was not accepted; see the message next to it.");
  } finally {
    $("go").disabled = false;
  }
});

async function start() {
  try {
    await api("/v1/packaging/styles");
  } catch (err) {
    say($("brief-error"), err instanceof ApiError && err.status === 404
      ? "The packaging app is not enabled on this server (start kiln serve with --apps packaging)."
      : `The packaging app is not available: ${err.message}`);
    $("go").disabled = true;
  }
}
start();
