// colloquium's dashboard: polls the node's own API (GET /api/overview every second; dead
// letters, windows and anomalies every few seconds) and draws it. No framework: uPlot for the
// charts, the DOM for the rest. Every value from the node is set as text, never as HTML.
"use strict";

const LEVELS = ["HEALTHY", "ELEVATED", "DEGRADED", "CRITICAL", "EMERGENCY"];
const HISTORY = 300; // points kept per chart: 5 minutes at one a second
const TOKEN_KEY = "colloquium.token";

const state = {
  now: null, // the last overview
  before: null, // the one before (rates are their difference)
  times: [], // chart x values (unix seconds)
  sources: new Map(), // name -> rates
  lanes: new Map(),
  levels: [],
  charts: {},
  dlqSearch: { reason: "", since: "" },
  replaying: new Set(),
  renders: 0,
};
window.colloquium = { firstRender: null, renders: 0 };

// ---- the API ------------------------------------------------------------------------------

class Unauthorized extends Error {}

async function api(path, options = {}) {
  const headers = Object.assign({}, options.headers);
  const token = sessionStorage.getItem(TOKEN_KEY);
  if (token) headers.Authorization = "Bearer " + token;
  const response = await fetch(path, Object.assign({}, options, { headers }));
  if (response.status === 401) throw new Unauthorized();
  const text = await response.text();
  const body = text ? JSON.parse(text) : null;
  if (!response.ok) {
    const error = new Error((body && body.error) || response.statusText);
    error.status = response.status;
    throw error;
  }
  return body;
}

// ---- small DOM helpers --------------------------------------------------------------------

const $ = (id) => document.getElementById(id);

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "class") node.className = v;
    else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else if (v !== undefined && v !== null) node.setAttribute(k, v);
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

function fill(tbody, rows) {
  tbody.replaceChildren(...rows);
}

function rate(x) {
  if (x === null || x === undefined || Number.isNaN(x)) return "–";
  if (x >= 1e6) return (x / 1e6).toFixed(2) + "M";
  if (x >= 1e4) return (x / 1e3).toFixed(1) + "k";
  return x.toFixed(x < 10 && x > 0 ? 1 : 0);
}

function bytes(n) {
  if (n === null || n === undefined) return "–";
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
  return n.toFixed(i ? 1 : 0) + " " + units[i];
}

function duration(seconds) {
  const units = [["d", 86400], ["h", 3600], ["min", 60], ["s", 1]];
  const [unit, size] = units.find(([, size]) => seconds >= size && seconds % size === 0) || ["s", 1];
  return `${seconds / size} ${unit}`;
}

function time(ms) {
  return new Date(Number(ms)).toISOString().replace("T", " ").replace("Z", "");
}

// Per second between the two last overviews, of what `pick` reads from each.
function perSecond(pick) {
  const { now, before } = state;
  if (!now || !before) return null;
  const a = pick(now), b = pick(before);
  const seconds = (now.at - before.at) / 1000;
  if (a === undefined || b === undefined || seconds <= 0) return null;
  return Math.max(0, a - b) / seconds;
}

const findBy = (list, key, value) => (list || []).find((x) => x[key] === value);

// ---- charts -------------------------------------------------------------------------------

function chart(id, names, opts = {}) {
  const target = $(id);
  const palette = ["#2f5bd3", "#1a7f37", "#b7791f", "#c53030", "#6b46c1", "#0e7490"];
  const series = [{}].concat(names.map((name, i) => ({
    label: name, stroke: palette[i % palette.length], width: 1.5,
    ...(opts.stepped ? { paths: uPlot.paths.stepped({ align: 1 }) } : {}),
  })));
  const width = Math.max(200, target.clientWidth);
  const plot = new uPlot({
    width, height: 180, series,
    scales: opts.scales || {},
    axes: opts.axes || [{}, { size: 50 }],
    legend: { live: false },
  }, [state.times, ...names.map(() => [])], target);
  return { plot, names: names.join("\u0000") };
}

function updateChart(id, names, columns, opts) {
  const key = names.join("\u0000");
  let current = state.charts[id];
  if (!current || current.names !== key) {
    if (current) current.plot.destroy();
    current = state.charts[id] = chart(id, names, opts);
  }
  current.plot.setData([state.times, ...columns]);
}

function resizeCharts() {
  for (const [id, { plot }] of Object.entries(state.charts)) {
    plot.setSize({ width: Math.max(200, $(id).clientWidth), height: 180 });
  }
}

function push(series, value) {
  series.push(value);
  if (series.length > HISTORY) series.shift();
}

// ---- rendering ----------------------------------------------------------------------------

function render() {
  const o = state.now;
  const level = o.control.level || "?";
  $("level").textContent = level;
  $("level").className = "pill " + level;
  $("summary").textContent =
    `config v${o.config_version} · ${o.pipelines.length} pipelines · stored ${bytes(o.storage.bytes)}` +
    (o.taps ? ` · ${o.taps} taps` : "");

  // History for the charts.
  push(state.times, o.at / 1000);
  for (const s of o.sources) {
    if (!state.sources.has(s.name)) state.sources.set(s.name, state.times.slice(0, -1).map(() => null));
  }
  for (const [name, series] of state.sources) {
    push(series, perSecond((x) => (findBy(x.sources, "name", name) || {}).accepted));
  }
  for (const lane of o.control.lanes || []) {
    if (!state.lanes.has(lane.lane)) state.lanes.set(lane.lane, state.times.slice(0, -1).map(() => null));
  }
  for (const [name, series] of state.lanes) {
    push(series, perSecond((x) => (findBy(x.control.lanes, "lane", name) || {}).admitted));
  }
  push(state.levels, LEVELS.indexOf(level));
  while (state.times.length > HISTORY) state.times.shift();

  updateChart("chart-sources", [...state.sources.keys()], [...state.sources.values()]);
  updateChart("chart-lanes", [...state.lanes.keys()], [...state.lanes.values()]);
  updateChart("chart-level", ["level"], [state.levels], {
    stepped: true,
    scales: { y: { range: [0, 4] } },
    axes: [{}, { size: 96, splits: () => [0, 1, 2, 3, 4], values: (_, ticks) => ticks.map((t) => LEVELS[t] || "") }],
  });
  const c = o.control;
  $("control-detail").textContent =
    `measured ${c.measured || "?"} · depth ${(c.depth ?? 0).toFixed(2)} · drop rate ${c.drop_rate ?? "–"} · ${c.transitions ?? 0} transitions`;

  fill($("sources").tBodies[0], o.sources.map((s) => el("tr", { "data-source": s.name },
    el("td", {}, s.name), el("td", {}, s.kind),
    el("td", { class: "num" }, rate(perSecond((x) => (findBy(x.sources, "name", s.name) || {}).accepted))),
    el("td", { class: "num accepted" }, s.accepted),
    el("td", { class: "num rejected" }, s.rejected))));

  fill($("lanes").tBodies[0], (o.control.lanes || []).map((l) => el("tr", { "data-lane": l.lane },
    el("td", {}, l.lane),
    el("td", { class: "num" }, `${l.depth} / ${l.capacity}`),
    el("td", { class: "num" }, rate(perSecond((x) => (findBy(x.control.lanes, "lane", l.lane) || {}).admitted))),
    el("td", { class: "num" }, Object.values(l.shed || {}).reduce((a, b) => a + b, 0)))));

  renderGraph(o);
  renderStorage(o);

  fill($("dlq-reasons").tBodies[0], Object.entries(o.dead_lettered).map(([reason, n]) =>
    el("tr", { "data-reason": reason }, el("td", {}, reason), el("td", { class: "num count" }, n))));
  const select = $("dlq-reason");
  for (const reason of Object.keys(o.dead_lettered)) {
    if (![...select.options].some((opt) => opt.value === reason)) select.append(el("option", { value: reason }, reason));
  }

  $("ai-section").hidden = !o.ai;
  if (o.ai) $("ai-text").textContent = `spent $${o.ai.spent_today.toFixed(4)} · reserved $${o.ai.reserved_today.toFixed(4)}`;

  state.renders++;
  window.colloquium.renders = state.renders;
  if (window.colloquium.firstRender === null) window.colloquium.firstRender = performance.now();
}

function lagClass(p) {
  if (p.stopped || p.lag_seconds > 30) return "lag-bad";
  if (p.lag_seconds > 1) return "lag-warn";
  return "";
}

function renderGraph(o) {
  const arrow = () => el("span", { class: "arrow" }, "→");
  const rows = o.pipelines.map((p) => {
    const pick = (f) => (x) => { const q = findBy(x.pipelines, "name", p.name); return q && f(q); };
    const lat = (() => {
      const { now, before } = state;
      const a = now && findBy(now.pipelines, "name", p.name), b = before && findBy(before.pipelines, "name", p.name);
      if (!a || !b || a.latency_count <= b.latency_count) return null;
      return (a.latency_seconds_sum - b.latency_seconds_sum) / (a.latency_count - b.latency_count);
    })();
    const sources = p.from.length ? p.from : ["all sources"];
    const cls = lagClass(p);
    const nodes = [
      el("div", { class: "node source" }, el("div", { class: "name" }, sources.join(", ")), el("div", { class: "kind" }, "from")),
      arrow(),
      el("div", { class: "node pipeline " + cls, "data-pipeline": p.name },
        el("div", { class: "name" }, p.name),
        el("div", { class: "kind" }, p.stopped ? "stopped" : "pipeline"),
        el("div", { class: "stats" }, `${rate(perSecond(pick((q) => q.routed)))}/s · routed `, el("span", { class: "routed" }, p.routed)),
        el("div", { class: "stats" }, `lag ${p.lag_events} (${p.lag_seconds.toFixed(1)} s)`),
        el("div", { class: "stats" }, `latency ${lat === null ? "–" : (lat * 1000).toFixed(1) + " ms"}`)),
    ];
    for (const s of p.stages) {
      const stage = (f) => pick((q) => { const t = findBy(q.stages, "id", s.id); return t && f(t); });
      nodes.push(arrow(), el("div", { class: "node stage " + cls, "data-stage": `${p.name}/${s.id}` },
        el("div", { class: "name" }, s.id),
        el("div", { class: "kind" }, s.kind),
        el("div", { class: "stats" }, `in ${rate(perSecond(stage((t) => t.events_in)))}/s · `, el("span", { class: "in" }, s.events_in)),
        el("div", { class: "stats" }, `out ${rate(perSecond(stage((t) => t.events_out)))}/s · `, el("span", { class: "out" }, s.events_out)),
        el("div", { class: "stats" + (s.failed ? " failed" : "") }, "failed ", el("span", { class: "failed-count" }, s.failed))));
    }
    for (const name of p.sinks) {
      const sink = findBy(o.sinks, "name", name) || { kind: "", sent: 0 };
      nodes.push(arrow(), el("div", { class: "node sink", "data-sink": name },
        el("div", { class: "name" }, name), el("div", { class: "kind" }, sink.kind),
        el("div", { class: "stats" }, `${rate(perSecond((x) => (findBy(x.sinks, "name", name) || {}).sent))}/s · `, el("span", { class: "sent" }, sink.sent))));
    }
    return el("div", { class: "flow" }, nodes);
  });
  $("graph").replaceChildren(...(rows.length ? rows : [el("p", { class: "muted" }, "No pipelines: every event is stored; add pipelines in the config.")]));
}

function renderStorage(o) {
  const s = o.storage;
  const limit = s.max_disk_usage || s.disk_total;
  const used = s.max_disk_usage ? s.bytes : (s.disk_total - s.disk_available);
  const share = limit ? Math.min(100, (100 * used) / limit) : 0;
  $("disk-bar").style.width = share.toFixed(1) + "%";
  const against = s.max_disk_usage
    ? `${bytes(s.bytes)} of max_disk_usage ${bytes(s.max_disk_usage)}`
    : `${bytes(s.bytes)} stored; disk ${bytes(s.disk_available)} free of ${bytes(s.disk_total)} (no max_disk_usage)`;
  const retention = s.retention_seconds ? `retention ${duration(s.retention_seconds)}` : "no retention";
  $("storage-text").replaceChildren(el("span", { id: "storage-bytes", "data-bytes": s.bytes }, against), ` · ${retention} · events stored since start: ${s.events_stored}`);
  fill($("column-families").tBodies[0], Object.entries(s.column_families).map(([cf, n]) =>
    el("tr", {}, el("td", {}, cf), el("td", { class: "num" }, bytes(n)))));
}

// ---- dead letters, windows, anomalies (every few seconds) ---------------------------------

async function refreshDeadLetters() {
  const q = new URLSearchParams({ limit: "50" });
  if (state.dlqSearch.reason) q.set("reason", state.dlqSearch.reason);
  if (state.dlqSearch.since) q.set("since", new Date(state.dlqSearch.since).toISOString());
  const page = await api("/api/dlq?" + q);
  const listed = new Set(page.dead_letters.map((d) => d.id));
  for (const id of state.replaying) if (!listed.has(id)) state.replaying.delete(id);
  fill($("dlq").tBodies[0], page.dead_letters.map((d) => {
    const replaying = state.replaying.has(d.id);
    return el("tr", { "data-dead-letter": d.id },
      el("td", {}, time(d.failed_at)),
      el("td", { class: "reason" }, d.reason),
      el("td", {}, [d.pipeline, d.stage].filter(Boolean).join(" / ") || "–"),
      el("td", {}, d.error),
      el("td", {},
        el("button", { class: "replay", disabled: replaying ? "" : null, onclick: () => replay(d.id) }, replaying ? "replaying…" : "replay"),
        " ",
        el("button", { class: "delete", onclick: (e) => remove(d.id, e.target) }, "delete")));
  }));
  if (!page.dead_letters.length) $("dlq-message").textContent = "No dead letters match.";
  else if ($("dlq-message").dataset.sticky !== "1") $("dlq-message").textContent = page.next_cursor ? "Showing the first 50." : "";
}

function adminMessage(error) {
  const m = $("dlq-message");
  m.dataset.sticky = "1";
  m.textContent = error.status === 403 ? "Replaying and deleting need a token with the admin scope." : "Failed: " + error.message;
  setTimeout(() => { m.dataset.sticky = ""; }, 5000);
}

async function replay(id) {
  try {
    await api(`/api/dlq/${encodeURIComponent(id)}/replay`, { method: "POST" });
    state.replaying.add(id);
  } catch (error) {
    if (error instanceof Unauthorized) return showLogin();
    adminMessage(error);
  }
  refreshDeadLetters().catch(() => {});
}

async function remove(id, button) {
  // Two clicks: the first arms the button, so a stray click deletes nothing.
  if (button.dataset.armed !== "1") {
    button.dataset.armed = "1";
    button.textContent = "really delete";
    return;
  }
  try {
    await api(`/api/dlq/${encodeURIComponent(id)}`, { method: "DELETE" });
  } catch (error) {
    if (error instanceof Unauthorized) return showLogin();
    adminMessage(error);
  }
  refreshDeadLetters().catch(() => {});
}

async function refreshWindows() {
  const since = Date.now() - 10 * 60 * 1000;
  const rows = [];
  for (const p of state.now.pipelines) {
    for (const s of p.stages.filter((s) => s.kind === "window")) {
      const q = new URLSearchParams({ pipeline: p.name, stage: s.id, since: String(since), limit: "20" });
      const page = await api("/api/windows?" + q);
      for (const w of page.windows) {
        const values = Object.entries(w)
          .filter(([k]) => !["key", "window_start", "window_end", "final", "early", "update_count"].includes(k))
          .map(([k, v]) => `${k}=${typeof v === "number" ? +v.toFixed(3) : JSON.stringify(v)}`).join(" ");
        rows.push(el("tr", { "data-window": `${p.name}/${s.id}` },
          el("td", {}, `${p.name} / ${s.id}`), el("td", {}, w.key),
          el("td", {}, `${time(w.window_start).slice(11)} – ${time(w.window_end).slice(11)}`),
          el("td", {}, values)));
      }
    }
  }
  fill($("windows").tBodies[0], rows.length ? rows : [el("tr", {}, el("td", { colspan: 4, class: "muted" }, "No window results in the last 10 minutes."))]);
}

async function refreshAnomalies() {
  const page = await api("/api/anomalies?" + new URLSearchParams({ since: String(Date.now() - 3600 * 1000), limit: "20" }));
  fill($("anomalies").tBodies[0], page.anomalies.length ? page.anomalies.map((a) => el("tr", { "data-anomaly": a.id },
    el("td", {}, time(a.ingest_time)), el("td", {}, a.user ?? "–"),
    el("td", { class: "num" }, Number(a.score).toFixed(3)),
    el("td", {}, (a.reasons || []).join("; ")))) : [el("tr", {}, el("td", { colspan: 4, class: "muted" }, "No anomalies in the last hour."))]);
}

// ---- the loop and the token ---------------------------------------------------------------

let timer = null;
let tick = 0;

async function poll() {
  try {
    const overview = await api("/api/overview");
    state.before = state.now;
    state.now = overview;
    render();
    if (tick % 3 === 0 || state.replaying.size) {
      await Promise.all([refreshDeadLetters(), refreshWindows(), refreshAnomalies()]);
    }
    tick++;
    $("status").textContent = "live · " + new Date().toLocaleTimeString();
    $("status").className = "muted";
  } catch (error) {
    if (error instanceof Unauthorized) return showLogin();
    $("status").textContent = "cannot reach the node: " + error.message;
    $("status").className = "error";
  }
  timer = setTimeout(poll, 1000);
}

function showLogin(message) {
  clearTimeout(timer);
  if (sessionStorage.getItem(TOKEN_KEY)) {
    sessionStorage.removeItem(TOKEN_KEY);
    message = message || "That token was refused.";
  }
  $("main").hidden = true;
  $("logout").hidden = true;
  $("login").hidden = false;
  $("login-error").textContent = message || "";
  $("status").textContent = "";
  $("token").focus();
}

function start() {
  $("login").hidden = true;
  $("main").hidden = false;
  $("logout").hidden = !sessionStorage.getItem(TOKEN_KEY);
  clearTimeout(timer);
  poll();
}

$("login").addEventListener("submit", (e) => {
  e.preventDefault();
  sessionStorage.setItem(TOKEN_KEY, $("token").value.trim());
  $("token").value = "";
  start();
});
$("logout").addEventListener("click", () => {
  sessionStorage.removeItem(TOKEN_KEY);
  showLogin();
});
$("dlq-search").addEventListener("submit", (e) => {
  e.preventDefault();
  state.dlqSearch = { reason: $("dlq-reason").value, since: $("dlq-since").value };
  refreshDeadLetters().catch((error) => { $("dlq-message").textContent = error.message; });
});
new ResizeObserver(resizeCharts).observe(document.body);
start();
