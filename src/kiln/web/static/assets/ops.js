// Operations page: GET /v2, /v2/health/ready, POST /v2/repository/index, GET /v2/models/{m}/config,
// GET /v1/web/engines/{m}, the apps' info routes, and /metrics (Prometheus text) every 2 s.
import { api, el, num, pct, say } from "./common.js";

const $ = (id) => document.getElementById(id);
const POINTS = 60;
const PERIOD_MS = 2000;
const series = { rps: [], latency: [], batch: [] };
let previous = null;

// --- Prometheus text ---------------------------------------------------------------------------
export function parseMetrics(text) {
  const totals = {};
  for (const line of text.split("\n")) {
    if (!line || line.startsWith("#")) continue;
    const match = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})?\s+([^\s]+)/.exec(line);
    if (!match) continue;
    const value = Number(match[3]);
    if (!Number.isFinite(value)) continue;
    totals[match[1]] = (totals[match[1]] || 0) + value;
  }
  return totals;
}

function rate(now, before, name) {
  return (now[name] || 0) - (before[name] || 0);
}

// --- charts ------------------------------------------------------------------------------------
function drawChart(container, points, label, unit, colour) {
  const width = 320;
  const height = 120;
  const max = Math.max(1e-9, ...points.map((p) => p ?? 0));
  const top = max * 1.15;
  const step = width / (POINTS - 1);
  const offset = POINTS - points.length;
  const coords = points.map((v, i) => `${((offset + i) * step).toFixed(1)},${(height - ((v ?? 0) / top) * height).toFixed(1)}`);
  const latest = points.length ? points[points.length - 1] : null;
  const ns = "http://www.w3.org/2000/svg";
  const svg = document.createElementNS(ns, "svg");
  svg.setAttribute("viewBox", `0 0 ${width} ${height + 16}`);
  svg.setAttribute("role", "img");
  svg.setAttribute("aria-label", `${label}: latest ${latest === null ? "no data" : `${num(latest, 2)} ${unit}`}, peak ${num(max, 2)} ${unit} over the last ${points.length * PERIOD_MS / 1000} s`);
  svg.setAttribute("preserveAspectRatio", "none");
  const grid = document.createElementNS(ns, "line");
  Object.entries({ x1: 0, x2: width, y1: height, y2: height, stroke: "#c9ccd2" }).forEach(([k, v]) => grid.setAttribute(k, v));
  svg.append(grid);
  if (coords.length > 1) {
    const line = document.createElementNS(ns, "polyline");
    Object.entries({ points: coords.join(" "), fill: "none", stroke: colour, "stroke-width": 2, "vector-effect": "non-scaling-stroke" })
      .forEach(([k, v]) => line.setAttribute(k, v));
    svg.append(line);
  }
  const caption = document.createElementNS(ns, "text");
  Object.entries({ x: 2, y: height + 13, "font-size": 11, fill: "#4d5561" }).forEach(([k, v]) => caption.setAttribute(k, v));
  caption.textContent = `peak ${num(max, 2)} ${unit}`;
  svg.append(caption);
  container.replaceChildren(svg, el("div", { class: "legend" }, el("span", {}, el("i", { style: `background:${colour}` }), label)));
}

function render() {
  drawChart($("chart-rps"), series.rps, "requests per second", "req/s", "#8a3a12");
  drawChart($("chart-latency"), series.latency, "mean latency", "ms", "#1a5fd0");
  drawChart($("chart-batch"), series.batch, "mean batch size", "items", "#146c2e");
}

async function poll() {
  try {
    const response = await fetch("/metrics");
    const now = { ...parseMetrics(await response.text()), t: performance.now() };
    if (previous) {
      const seconds = (now.t - previous.t) / 1000;
      const requests = rate(now, previous, "kiln_inference_request_success_total") + rate(now, previous, "kiln_inference_request_success");
      const count = rate(now, previous, "kiln_inference_request_duration_seconds_count");
      const latency = count > 0 ? (1000 * rate(now, previous, "kiln_inference_request_duration_seconds_sum")) / count : null;
      const execs = rate(now, previous, "kiln_inference_batch_size_count");
      const batch = execs > 0 ? rate(now, previous, "kiln_inference_batch_size_sum") / execs : null;
      const rps = seconds > 0 ? requests / seconds : 0;
      for (const [key, value] of [["rps", rps], ["latency", latency], ["batch", batch]]) {
        series[key].push(value);
        if (series[key].length > POINTS) series[key].shift();
      }
      $("rps").textContent = `${num(rps, 1)} req/s`;
      $("latency").textContent = latency === null ? "idle" : `${num(latency, 1)} ms`;
      $("batch").textContent = batch === null ? "idle" : num(batch, 1);
      render();
    }
    previous = now;
  } catch (err) {
    say($("ops-error"), `Metrics unavailable: ${err.message}`);
  }
}

// --- models, engines, apps -------------------------------------------------------------------
async function readiness() {
  try {
    const response = await fetch("/v2/health/ready");
    $("ready").textContent = response.ok ? "Ready" : "Starting…";
    if (!response.ok) setTimeout(readiness, 2000);
  } catch (err) {
    $("ready").textContent = "Unreachable";
  }
}

async function models() {
  try {
    const index = await api("/v2/repository/index", { method: "POST", headers: { "Content-Type": "application/json" }, body: "{}" });
    const rows = await Promise.all(index.map(async (m) => {
      let engine = null;
      if (m.state === "READY") {
        engine = await api(`/v1/web/engines/${encodeURIComponent(m.name)}`).catch(() => null);
        if (!engine) {
          const config = await api(`/v2/models/${encodeURIComponent(m.name)}/config`).catch(() => null);
          if (config) engine = { backend: config.backend, precision: "", hardware: {}, batch: { max: config.max_batch_size } };
        }
      }
      const hw = engine?.hardware || {};
      const hardware = engine ? [engine.device, hw.gpus?.length ? hw.gpus.join(", ") : hw.cpu, hw.cores ? `${hw.cores} cores` : ""].filter(Boolean).join(" · ") : "";
      const gate = engine?.validation
        ? `${num(engine.validation.engine_top1, 1)}% vs ${num(engine.validation.reference_top1, 1)}% FP32 (drop ${num(engine.validation.drop_points, 2)} ≤ ${engine.validation.max_drop})`
        : engine ? "not run" : "";
      return el("tr", {},
        el("th", { scope: "row" }, m.name),
        el("td", {}, m.version || "–"),
        el("td", {}, el("span", { class: `tag ${m.state === "READY" ? "ok" : m.state === "LOADING" ? "warn" : "bad"}` }, m.state.toLowerCase()),
          m.reason ? el("div", { class: "small muted" }, m.reason) : ""),
        el("td", {}, engine?.backend || ""),
        el("td", {}, engine?.precision || ""),
        el("td", { class: "small" }, hardware),
        el("td", {}, engine?.batch ? `${engine.batch.min ?? 1}–${engine.batch.max}` : ""),
        el("td", { class: "small" }, gate));
    }));
    $("models").querySelector("tbody").replaceChildren(...rows);
    if (index.some((m) => m.state === "LOADING")) setTimeout(models, 2000);
  } catch (err) {
    say($("ops-error"), `Models unavailable: ${err.message}`);
  }
}

async function apps() {
  const cards = [];
  const auth = await api("/v1/authenticity/info").catch(() => null);
  if (auth) {
    cards.push(el("section", { class: "card", "aria-labelledby": "app-auth" },
      el("h3", { id: "app-auth" }, "Authentication"),
      el("p", { class: "small" }, `Engine ${auth.engine.name}: ${auth.engine.backbone}, ${auth.engine.precision} on ${auth.engine.backend}`,
        auth.engine.trained_on_synthetic_data ? " (trained on synthetic data)" : ""),
      el("p", { class: "small" }, `${auth.references} references · up to ${auth.max_photos} photos per case · thresholds: counterfeit ≥ ${num(auth.thresholds.counterfeit, 3)}, authentic ≤ ${num(auth.thresholds.authentic, 3)} (target precision ${pct(auth.thresholds.target_precision)})`)));
  }
  const styles = await api("/v1/packaging/styles").catch(() => null);
  if (styles) {
    cards.push(el("section", { class: "card", "aria-labelledby": "app-pack" },
      el("h3", { id: "app-pack" }, "Packaging"),
      el("p", { class: "small" }, `${styles.length} styles: ${styles.map((s) => s.name).join(", ")}`)));
  }
  if (!cards.length) cards.push(el("p", { class: "muted" }, "No apps are enabled on this server."));
  $("apps").replaceChildren(...cards);
}

async function server() {
  const meta = await api("/v2").catch(() => null);
  if (meta) say($("server"), `${meta.name} ${meta.version} · Open Inference Protocol extensions: ${(meta.extensions || []).join(", ")}`);
}

readiness();
models();
apps();
server();
render();
poll();
setInterval(poll, PERIOD_MS);
