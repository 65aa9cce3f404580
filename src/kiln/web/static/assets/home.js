// Home: a one-line summary of what the server has loaded.
import { api, say } from "./common.js";

const status = document.getElementById("status");

async function check() {
  try {
    const models = await api("/v2/repository/index", { method: "POST", headers: { "Content-Type": "application/json" }, body: "{}" });
    const ready = models.filter((m) => m.state === "READY").length;
    const loading = models.filter((m) => m.state === "LOADING").length;
    if (models.length === 0) say(status, "The server has no models: start it with --repo pointing at a model repository.");
    else if (loading) {
      say(status, `Loading models: ${ready} of ${models.length} ready…`);
      setTimeout(check, 2000);
    } else say(status, `${ready} of ${models.length} models ready (${models.map((m) => m.name).join(", ")}).`);
  } catch (err) {
    say(status, `Server status unavailable: ${err.message}`);
  }
}
check();
