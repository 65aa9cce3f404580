// Shared helpers for the kiln pages: DOM building, API calls with readable errors, formatting.

/** Creates an element: el("p", {class: "x", text: "hi"}, child, ...). */
export function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value === undefined || value === null || value === false) continue;
    if (key === "text") node.textContent = value;
    else if (key === "class") node.className = value;
    else if (key === "style") node.style.cssText = value; // CSSOM: allowed under a strict Content-Security-Policy
    else if (key.startsWith("on") && typeof value === "function") node.addEventListener(key.slice(2), value);
    else if (value === true) node.setAttribute(key, "");
    else node.setAttribute(key, String(value));
  }
  for (const child of children.flat()) {
    if (child === undefined || child === null || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

/** An error from the API, with the HTTP status and the server's own message. */
export class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

function plainMessage(status, body) {
  if (body && typeof body.error === "string") return body.error;
  if (status === 404) return "not found on this server (is the app enabled?)";
  if (status === 413) return "the upload is too large";
  if (status >= 500) return `the server failed (HTTP ${status}); try again`;
  return `request failed (HTTP ${status})`;
}

/** fetch() that returns parsed JSON or throws ApiError with the server's message. */
export async function api(path, options = {}) {
  let response;
  try {
    response = await fetch(path, { headers: { Accept: "application/json", ...(options.headers || {}) }, ...options });
  } catch (err) {
    throw new ApiError(0, "the server cannot be reached; is kiln serve running?");
  }
  const type = response.headers.get("content-type") || "";
  const body = type.includes("json") ? await response.json().catch(() => null) : null;
  if (!response.ok) throw new ApiError(response.status, plainMessage(response.status, body));
  return body;
}

export const pct = (x, digits = 0) => `${(100 * x).toFixed(digits)}%`;
export const num = (x, digits = 2) => (x === null || x === undefined ? "–" : Number(x).toFixed(digits));

export function formatDate(iso) {
  const d = new Date(iso);
  return Number.isNaN(d.getTime()) ? iso : d.toLocaleString(undefined, { dateStyle: "medium", timeStyle: "short" });
}

/** Shows a message in a live region (role=status or role=alert). */
export function say(node, message) {
  node.textContent = "";
  if (message) node.append(message);
}

/** Sets or clears an error next to a form control (aria-invalid + aria-describedby). */
export function fieldError(control, errorNode, message) {
  errorNode.textContent = message || "";
  if (message) control.setAttribute("aria-invalid", "true");
  else control.removeAttribute("aria-invalid");
}

/** Marks the current page in the navigation. */
export function markNav() {
  const here = location.pathname.replace(/\/$/, "") || "/";
  for (const link of document.querySelectorAll("header.site nav a")) {
    const target = link.getAttribute("href");
    if (target === here || (target !== "/" && here.startsWith(target))) link.setAttribute("aria-current", "page");
  }
}

markNav();
