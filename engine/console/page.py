"""The console's one HTML page: a small inline script renders the journeys list, a journey's
diagram with live counts, and a profile's inspect timeline, from the worker's `/api/`.

No build step and no network but the worker's own API; text goes in through textContent,
and the only markup taken from the API is the diagram the server draws (escaped there).
"""

from __future__ import annotations

_STYLE = """
*{box-sizing:border-box}
body{font-family:system-ui,sans-serif;margin:0;color:#202124;background:#fff;line-height:1.4}
header{background:#f1f3f4;border-bottom:1px solid #c4c7c5;padding:8px 24px;display:flex;
 gap:24px;align-items:center;flex-wrap:wrap}
header a{font-weight:600}
a{color:#0b57d0}
main{padding:8px 24px 32px;max-width:1400px}
h1{font-size:22px;margin:16px 0 4px}h2{font-size:17px;margin:24px 0 8px}
.meta{color:#444746;font-size:14px;margin:4px 0}
table{border-collapse:collapse;margin:8px 0;font-size:14px}
caption{text-align:left;font-weight:600;padding:4px 0}
th,td{border:1px solid #c4c7c5;padding:4px 8px;text-align:right;vertical-align:top}
th{background:#f8f9fa;text-align:left}
th:first-child,td:first-child,td.text{text-align:left}
form{display:flex;gap:8px;align-items:center}
input{font:inherit;padding:4px 8px;border:1px solid #747775;border-radius:4px}
button{font:inherit;padding:4px 12px;border:1px solid #0b57d0;background:#0b57d0;color:#fff;
 border-radius:4px;cursor:pointer}
button:focus-visible,a:focus-visible,input:focus-visible{outline:3px solid #f9ab00;outline-offset:2px}
.diagram{overflow:auto;border:1px solid #c4c7c5;padding:8px;max-height:70vh}
ul.why{list-style:none;padding:0}
ul.why li{margin:4px 0;padding:6px 10px;border-left:6px solid #747775;background:#f8f9fa}
ul.why li[data-verdict=refused],ul.why li[data-verdict=failed]{border-color:#b3261e}
ul.why li[data-verdict=skipped]{border-color:#b06000}
ul.why li[data-verdict=waiting],ul.why li[data-verdict=entered]{border-color:#0b57d0}
ul.why li[data-verdict=completed],ul.why li[data-verdict=messaged]{border-color:#146c2e}
.verdict{font-weight:700;text-transform:uppercase;font-size:12px;margin-right:8px}
.error{color:#b3261e;font-weight:600}
#token-panel{border:2px solid #0b57d0;padding:12px;margin:16px 0;max-width:520px}
"""

_SCRIPT = r"""
"use strict";
const TOKEN_KEY = "journey-console-token";
const NEEDS_TOKEN = document.body.dataset.needsToken === "1";
const content = document.getElementById("content");
const title = document.getElementById("title");
const updated = document.getElementById("updated");
let timer = null;

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, v);
  for (const c of children) node.append(c instanceof Node ? c : String(c ?? ""));
  return node;
}
function table(caption, heads, rows, textCols) {
  const t = el("table", {}, el("caption", {}, caption));
  t.append(el("tr", {}, ...heads.map(h => el("th", {scope: "col"}, h))));
  for (const row of rows) {
    t.append(el("tr", {}, ...row.map((c, i) =>
      el("td", (textCols || [0]).includes(i) ? {class: "text"} : {}, c))));
  }
  return t;
}
function pairs(obj) {
  const items = Object.entries(obj || {});
  return items.length ? items.map(([k, v]) => `${k}: ${v}`).join(", ") : "0";
}
function link(href, text) { return el("a", {href}, text); }
function askToken(message) {
  const panel = document.getElementById("token-panel");
  panel.hidden = false;
  document.getElementById("token-message").textContent = message || "";
  document.getElementById("token").focus();
}
async function api(path) {
  const headers = {};
  const token = sessionStorage.getItem(TOKEN_KEY);
  if (token) headers.Authorization = "Bearer " + token;
  const response = await fetch(path, {headers});
  if (response.status === 401) {
    askToken(token ? "That token was refused." : "This console needs its token.");
    throw new Error("the console token is needed");
  }
  const body = await response.json();
  if (!response.ok) throw new Error(body.error || response.statusText);
  return body;
}
function show(heading, ...nodes) {
  title.textContent = heading;
  document.title = heading + " · Journey console";
  content.replaceChildren(...nodes);
  updated.textContent = "Updated " + new Date().toLocaleTimeString();
}

async function journeysPage() {
  const data = await api("/api/journeys");
  const rows = data.journeys.map(j => [
    link("/console/journeys/" + encodeURIComponent(j.journey_id), j.journey_id), j.name,
    j.versions.join(", "), j.status, j.live, j.last_24h.entered, j.last_24h.completed,
    j.last_24h.sent, j.last_24h.delivered, j.last_24h.read, j.last_24h.failed]);
  show("Journeys",
    el("p", {class: "meta"}, "Live instances now; the other figures cover the last 24 hours. Refreshes every 5 seconds."),
    rows.length ? table("Deployed journeys",
      ["Journey", "Name", "Versions", "Status", "Live", "Entered", "Completed", "Sent",
       "Delivered", "Read", "Failed"], rows, [0, 1, 3])
      : el("p", {}, "No journey is deployed."));
}

async function journeyPage(id) {
  const j = await api("/api/journeys/" + encodeURIComponent(id));
  const diagram = el("div", {class: "diagram"});
  diagram.innerHTML = j.svg;  // drawn and escaped by the server (engine/reporting/html.py)
  const rows = j.activities.map(a => [a.activity_id, a.waiting, a.passed, a.sent,
    a.delivered, a.read, pairs(a.failed), pairs(a.skipped)]);
  const d = j.last_24h;
  show(`${j.name} (${j.journey_id})`,
    el("p", {class: "meta"}, `Status ${j.status} · versions ${j.versions.join(", ")} · ` +
      `${j.live} live now · last 24 h: ${d.entered} entered, ${d.completed} completed, ` +
      `${d.sent} sent, ${d.delivered} delivered, ${d.read} read, ${d.failed} failed, ` +
      `${d.skipped} skipped`),
    el("h2", {}, "Diagram"),
    el("p", {class: "meta"}, "Each step shows instances waiting there now and passes in the last 24 hours. Refreshes every 5 seconds."),
    diagram,
    el("h2", {}, "Activities"),
    table("Per activity", ["Activity", "Waiting now", "Passed (24 h)", "Sent", "Delivered",
      "Read", "Failed by code", "Skipped by reason"], rows, [0, 6, 7]));
}

async function profilePage(id) {
  const since = new URLSearchParams(location.search).get("since") || "";
  const q = since ? "?since=" + encodeURIComponent(since) : "";
  const p = await api("/api/profiles/" + encodeURIComponent(id) + "/inspect" + q);
  const why = el("ul", {class: "why"}, ...p.why.map(w =>
    el("li", {"data-verdict": w.verdict, "data-journey": w.journey_id},
      el("span", {class: "verdict"}, w.verdict), el("strong", {}, w.journey_id + ": "), w.text)));
  const instances = p.instances.map(i => [i.journey_id, i.version, i.activity_id,
    i.waiting_for ? `${i.waiting_for}${i.wait_event ? " " + i.wait_event : ""}` : "running",
    i.waiting_until || "", i.entered_at]);
  const timeline = p.timeline.map(t => [t.at, t.source, t.journey_id || "", t.text]);
  const state = p.state || {};
  const attrs = Object.entries(state.attributes || {}).map(([k, v]) => [k, JSON.stringify(v)]);
  const caps = (state.frequency_caps || []).map(c =>
    [c.journey_id, c.channel, `${c.used} of ${c.max}`, `${c.per_seconds / 3600} h`]);
  show("Profile " + p.profile_id,
    el("p", {class: "meta"}, p.known ? `Consent (WhatsApp): ${state.consent.whatsapp}. Records since ${p.since}.`
      : "The engine holds no state for this profile; records only."),
    el("h2", {}, "Why"), p.why.length ? why : el("p", {}, "No journey has seen this profile."),
    el("h2", {}, "Live instances"),
    instances.length ? table("Live instances", ["Journey", "Version", "Activity", "Waiting for",
      "Until", "Entered at"], instances, [0, 2, 3, 4, 5]) : el("p", {}, "None."),
    el("h2", {}, "Timeline"),
    table("Steps, messages, dead letters and refusals, oldest first",
      ["Time", "Source", "Journey", "What"], timeline, [0, 1, 2, 3]),
    el("h2", {}, "Attributes"),
    table("Attributes (phone numbers masked)", ["Attribute", "Value"], attrs, [0, 1]),
    el("h2", {}, "Frequency caps"),
    caps.length ? table("Sends counted against each cap", ["Journey", "Channel", "Used",
      "Per"], caps, [0, 1]) : el("p", {}, "No deployed journey has a frequency cap."));
}

async function render() {
  const path = location.pathname;
  try {
    if (path.startsWith("/console/journeys/")) {
      await journeyPage(decodeURIComponent(path.slice("/console/journeys/".length)));
    } else if (path.startsWith("/console/profiles/")) {
      await profilePage(decodeURIComponent(path.slice("/console/profiles/".length)));
      return false;
    } else {
      await journeysPage();
    }
    return true;
  } catch (err) {
    content.replaceChildren(el("p", {class: "error", role: "alert"}, err.message));
    return false;
  }
}

async function start() {
  clearInterval(timer);
  const refreshing = await render();
  if (refreshing || !location.pathname.startsWith("/console/profiles/")) {
    timer = setInterval(render, 5000);
  }
}

document.getElementById("token-form").addEventListener("submit", ev => {
  ev.preventDefault();
  sessionStorage.setItem(TOKEN_KEY, document.getElementById("token").value);
  document.getElementById("token-panel").hidden = true;
  start();
});
document.getElementById("lookup").addEventListener("submit", ev => {
  ev.preventDefault();
  const id = document.getElementById("profile-id").value.trim();
  if (id) location.href = "/console/profiles/" + encodeURIComponent(id);
});
if (NEEDS_TOKEN && !sessionStorage.getItem(TOKEN_KEY)) askToken("This console needs its token.");
else start();
"""


def console_page(*, needs_token: bool) -> str:
    """The console's page; the script picks the view from the path (/console/...)."""
    return (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>Journey console</title><style>{_STYLE}</style></head>"
        f'<body data-needs-token="{int(needs_token)}">'
        '<header><nav aria-label="Console"><a href="/console/">Journeys</a></nav>'
        '<form id="lookup" role="search"><label for="profile-id">Profile id</label>'
        '<input id="profile-id" name="profile-id" required autocomplete="off">'
        "<button type=submit>Inspect</button></form>"
        '<span id="updated" class="meta" aria-live="off"></span></header>'
        '<main><section id="token-panel" hidden aria-labelledby="token-heading">'
        '<h2 id="token-heading">Console token</h2><p id="token-message" role="alert"></p>'
        '<form id="token-form"><label for="token">Token</label>'
        '<input id="token" type="password" autocomplete="current-password" required>'
        "<button type=submit>Use token</button></form></section>"
        '<h1 id="title">Journey console</h1>'
        '<div id="content" aria-live="polite"><p>Loading…</p></div></main>'
        f"<script>{_SCRIPT}</script></body></html>"
    )
