// Cases page: GET /v1/cases with verdict / brand / date filters, pages of 20, links to the reports.
import { api, el, fieldError, formatDate, pct, say } from "./common.js";

const $ = (id) => document.getElementById(id);
const PAGE = 20;
let offset = 0;

function filters() {
  const params = new URLSearchParams();
  for (const [name, id] of [["verdict", "f-verdict"], ["brand", "f-brand"], ["since", "f-since"], ["until", "f-until"]]) {
    const value = $(id).value.trim();
    if (value) params.set(name, value);
  }
  return params;
}

function validate() {
  const since = $("f-since").value;
  const until = $("f-until").value;
  const wrong = since && until && until < since;
  fieldError($("f-until"), $("f-until-error"), wrong ? "“Until” is before “From”." : "");
  return !wrong;
}

function showError(message) {
  for (const [name, id] of [["brand", "f-brand"], ["since", "f-since"], ["until", "f-until"]]) {
    if (message.includes(`query.${name}`)) {
      fieldError($(id), $(`${id}-error`), message.replace(/^.*?query\.\w+:\s*/, ""));
      return;
    }
  }
  say($("filters-error"), message);
}

async function load() {
  say($("filters-error"), "");
  for (const id of ["f-brand", "f-since", "f-until"]) fieldError($(id), $(`${id}-error`), "");
  if (!validate()) return;
  const params = filters();
  params.set("limit", String(PAGE));
  params.set("offset", String(offset));
  say($("count"), "Loading…");
  try {
    const page = await api(`/v1/cases?${params}`);
    const rows = page.cases.map((c) =>
      el("tr", {},
        el("td", {}, formatDate(c.created_at)),
        el("td", {}, `${c.brand} · ${c.model}`),
        el("td", {}, el("span", { class: `tag ${c.verdict === "authentic" ? "ok" : c.verdict === "counterfeit" ? "bad" : "warn"}` }, c.verdict)),
        el("td", {}, pct(c.confidence, 1)),
        el("td", {}, el("span", { class: "actions" },
          el("a", { href: `/authenticate?case=${encodeURIComponent(c.case_id)}`, "aria-label": `Open case ${c.case_id.slice(0, 8)}` }, "case"),
          el("a", { href: c.report_url, target: "_blank", rel: "noopener", "aria-label": `HTML report of case ${c.case_id.slice(0, 8)}` }, "report"),
          el("a", { href: `${c.case_url}/report.pdf`, target: "_blank", rel: "noopener", "aria-label": `PDF certificate of case ${c.case_id.slice(0, 8)}` }, "PDF")))));
    $("cases").querySelector("tbody").replaceChildren(...rows);
    const last = offset + page.cases.length;
    // the server counts matches up to 10,000 (total_capped: more match)
    const of = page.total_capped ? `${page.total.toLocaleString("en")}+` : page.total.toLocaleString("en");
    say($("count"), page.total ? `Cases ${offset + 1}–${last} of ${of}.` : "No cases match these filters yet. Authenticate an item to make one.");
    $("prev").disabled = offset === 0;
    $("next").disabled = page.total_capped ? page.cases.length < PAGE : last >= page.total;
  } catch (err) {
    say($("count"), "");
    showError(err.message);
  }
}

async function loadBrands() {
  try {
    const { cases } = await api("/v1/cases?limit=200");
    const brands = [...new Set(cases.map((c) => c.brand))].sort();
    $("brand-list").replaceChildren(...brands.map((b) => el("option", { value: b })));
  } catch (err) {
    // suggestions only
  }
}

$("filters").addEventListener("submit", (event) => {
  event.preventDefault();
  offset = 0;
  load();
});
$("filters").addEventListener("reset", () => {
  offset = 0;
  setTimeout(load, 0);
});
$("prev").addEventListener("click", () => { offset = Math.max(0, offset - PAGE); load(); });
$("next").addEventListener("click", () => { offset += PAGE; load(); });
load();
loadBrands();
