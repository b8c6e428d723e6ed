// embtune dashboard: pages over the coordinator's JSON API (/api/...), updated by polling.
// Everything is built with DOM calls (no innerHTML with data), so names from specs and workers
// are shown as text, never run.
"use strict";

const TOKEN = new URLSearchParams(location.search).get("token");
const { fmt, us, bytes, pct } = Charts;

// ---- small helpers ----------------------------------------------------------------------------

function h(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k === "class") e.className = v;
    else if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
    else if (k === "style" && typeof v === "object") Object.assign(e.style, v);
    else e.setAttribute(k, v === true ? "" : String(v));
  }
  for (const c of children.flat()) {
    if (c === null || c === undefined || c === false) continue;
    e.appendChild(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return e;
}

// Replaces an element's children, skipping null and false (replaceChildren would print them).
function fill(el, ...children) {
  el.replaceChildren(...children.flat().filter((c) => c !== null && c !== undefined && c !== false));
  return el;
}

class ApiError extends Error {
  constructor(status, message) { super(message); this.status = status; }
}

async function api(path) {
  const headers = TOKEN ? { Authorization: "Bearer " + TOKEN } : {};
  let r;
  try {
    r = await fetch(path, { headers, cache: "no-store" });
  } catch (e) {
    setLive(false, "the coordinator does not answer");
    throw new ApiError(0, "the coordinator does not answer: " + e.message);
  }
  if (!r.ok) {
    let msg = r.statusText;
    try { msg = (await r.json()).error || msg; } catch (_) { /* not JSON */ }
    setLive(r.status !== 401, msg);
    throw new ApiError(r.status, msg);
  }
  setLive(true);
  return r.json();
}

function setLive(ok, why) {
  const p = document.getElementById("live-pill");
  p.className = "pill " + (ok ? "pill-ok" : "pill-bad");
  p.querySelector(".label").textContent = ok ? "live" : "offline";
  p.title = ok ? "updating every few seconds" : (why || "");
}

const link = (href, ...children) => h("a", { href }, ...children);
const jobHref = (id) => "#/jobs/" + encodeURIComponent(id);
const trialHref = (id, n) => jobHref(id) + "/trials/" + n;
const when = (ms) => ms ? new Date(ms).toLocaleString() : "–";
const ago = (ms) => {
  const s = Math.max(0, (Date.now() - ms) / 1000);
  if (s < 60) return s.toFixed(0) + " s ago";
  if (s < 3600) return (s / 60).toFixed(0) + " min ago";
  if (s < 86400) return (s / 3600).toFixed(1) + " h ago";
  return (s / 86400).toFixed(1) + " d ago";
};
const duration = (s) => !Number.isFinite(s) ? "–" : s < 90 ? s.toFixed(1) + " s" : s < 5400 ? (s / 60).toFixed(1) + " min" : (s / 3600).toFixed(1) + " h";

function kpi(label, value, sub, cls) {
  return h("div", { class: "kpi " + (cls || "") },
    h("div", { class: "kpi-label" }, label),
    h("div", { class: "kpi-value" }, value),
    h("div", { class: "kpi-sub" }, sub || "\u00a0"));
}

function card(titleText, body, opts) {
  opts = opts || {};
  return h("section", { class: "card " + (opts.cls || ""), id: opts.id },
    h("div", { class: "card-head" }, h("h2", {}, titleText), opts.aside || null),
    h("div", { class: "card-body" }, body));
}

function badge(status) {
  return h("span", { class: "badge badge-" + status }, status);
}

// A speed-up, coloured only when it is a difference: a tie (the side-by-side rounds cannot tell
// the plans apart) reads "tie", whatever its ratio.
function speedupText(x, tie) {
  if (!Number.isFinite(x)) return h("span", { class: "muted" }, "–");
  if (tie) return h("span", { class: "speedup flat tie", title: "the side-by-side rounds cannot tell the plans apart" }, x.toFixed(2) + "× tie");
  return h("span", { class: "speedup " + (x >= 1.05 ? "up" : x < 0.95 ? "down" : "flat") }, x.toFixed(2) + "×");
}

// A latency, or "no data" when nothing was measured (an idle cluster has no latency, not 0 µs).
const latText = (x) => (x === null || x === undefined || !Number.isFinite(x) || x <= 0) ? "no data" : us(x);

// A value with its unit in smaller type, so that a card shows the number whole.
const withUnit = (v, unit) => h("span", {}, v, unit ? h("span", { class: "unit" }, " " + unit) : null);

function emptyState(title, ...lines) {
  return h("div", { class: "empty-state" }, h("div", { class: "empty-title" }, title), ...lines.map((l) => h("p", {}, l)));
}

function errorBox(e) {
  if (e.status === 401) {
    return emptyState("This dashboard needs its token",
      "Open it as http://HOST:PORT/?token=TOKEN, with the coordinator's --http-token.");
  }
  return h("div", { class: "error-box" }, e.message || String(e));
}

const widthOf = (el) => Math.max(320, Math.floor((el && el.clientWidth) || 900));

// ---- routing ------------------------------------------------------------------------------------

let current = null; // the page being shown: {timers, alive, onResize}

function route() {
  if (current) { current.alive = false; current.timers.forEach(clearInterval); }
  const ctx = { alive: true, timers: [], onResize: null };
  current = ctx;
  ctx.poll = (fn, ms) => {
    const run = async () => { if (ctx.alive) { try { await fn(); } catch (e) { console.warn(e); } } };
    ctx.timers.push(setInterval(run, ms));
  };
  const hash = location.hash || "#/cluster";
  const table = [
    [/^#\/cluster$/, pageCluster, "cluster"],
    [/^#\/jobs$/, pageJobs, "jobs"],
    [/^#\/jobs\/([^/]+)$/, pageJob, "jobs"],
    [/^#\/jobs\/([^/]+)\/trials\/(\d+)$/, pageTrial, "jobs"],
    [/^#\/results$/, pageResults, "results"],
    [/^#\/results\/compare\/([^/]+)\/([^/]+)$/, pageResults, "results"],
    [/^#\/latency$/, pageLatency, "latency"],
  ];
  const root = document.getElementById("app");
  for (const [re, page, tab] of table) {
    const m = hash.match(re);
    if (!m) continue;
    document.querySelectorAll(".tabs a").forEach((a) => a.classList.toggle("active", a.dataset.tab === tab));
    fill(root, h("div", { class: "loading" }, "loading…"));
    page(ctx, root, ...m.slice(1).map(decodeURIComponent)).catch((e) => {
      if (ctx.alive) fill(root, errorBox(e));
    });
    return;
  }
  location.hash = "#/cluster";
}

window.addEventListener("hashchange", route);
let resizeTimer = null;
window.addEventListener("resize", () => {
  clearTimeout(resizeTimer);
  resizeTimer = setTimeout(() => { if (current && current.onResize) current.onResize(); }, 200);
});

function setModel(info) {
  const p = document.getElementById("model-pill");
  if (info && info.model) {
    p.hidden = false;
    p.textContent = info.model + (info.plan ? " · " + info.plan.split(":")[0] : "");
    p.title = info.plan || "";
  } else {
    p.hidden = true;
  }
}

// ---- Cluster ------------------------------------------------------------------------------------

// Live figures kept across pages, for the time series: {t, qps, lps, p50, p99}.
const live = [];
const LIVE_SPAN = 5 * 60e3;

function pushLive(c) {
  const t = Date.now();
  live.push({ t, qps: c.live.qps, sps: c.live.samples_per_s, lps: c.live.lookups_per_s, p50: c.live.p50_us, p99: c.live.p99_us });
  while (live.length && live[0].t < t - LIVE_SPAN - 10e3) live.shift();
}

async function pageCluster(ctx, root) {
  const kpis = h("div", { class: "kpis" });
  const charts = h("div", { class: "grid-2" });
  const tp = h("div", { class: "chart-box" }), lat = h("div", { class: "chart-box" });
  charts.append(card("Throughput", tp, { aside: h("span", { class: "muted small" }, "queries per second, while this page is open") }),
    card("Latency", lat, { aside: h("span", { class: "legend-inline" }, h("i", { class: "sw p50" }), "p50 ", h("i", { class: "sw p99" }), "p99") }));
  const workersBody = h("div", { class: "table-wrap" });
  const trafficBody = h("div", { class: "table-wrap" });
  const planBody = h("div", {});
  const replanBody = h("div", {});
  const replanCard = card("Live re-planning", replanBody, { id: "replan-card",
    aside: h("span", { class: "muted small" }, "the traffic the workers serve against what the plan was made for") });
  replanCard.style.display = "none";
  fill(root,
    h("div", { class: "page-head" }, h("h1", {}, "Cluster"), h("div", { class: "muted", id: "cluster-sub" })),
    kpis, charts,
    card("Workers", workersBody, { id: "workers-card" }),
    card("Traffic per client", trafficBody, { id: "traffic-card",
      aside: h("span", { class: "muted small" }, "clients query the workers directly; the workers count it") }),
    card("Deployed plan", planBody, { id: "plan-card", aside: link("#/latency", "latency histogram →") }),
    replanCard);

  let lastPlan = undefined, heat = null;

  function drawCharts() {
    const pts = (k) => live.map((p) => [p.t, p[k]]);
    fill(tp, Charts.timeSeries({ width: widthOf(tp), height: 190, series: [{ name: "queries/s", cls: "s-qps", values: pts("qps"), fill: true }], label: "queries per second" }));
    fill(lat, Charts.timeSeries({ width: widthOf(lat), height: 190, format: us, empty: "no data: no query finished while this page was open", series: [
      { name: "p50", cls: "s-p50", values: pts("p50") }, { name: "p99", cls: "s-p99", values: pts("p99") }], label: "latency" }));
  }

  function drawPlan() {
    if (!heat) return;
    if (!heat.deployed) {
      fill(planBody, emptyState("Nothing deployed", "Deploy a plan with embtune up, embtune bench --coordinator or a tuning job."));
      return;
    }
    const box = h("div", { class: "heat-box" });
    fill(planBody,
      h("div", { class: "plan-line" }, h("strong", {}, heat.model), " · ", heat.summary,
        " · sub-batch ", String(heat.knobs.sub_batch), ", ", String(heat.knobs.inflight_per_worker), " in flight per worker"),
      heatLegend(), box);
    box.appendChild(heatView(heat.heatmap, widthOf(planBody), heatState));
  }
  const heatState = { all: false, redraw: () => drawPlan() };

  async function refresh() {
    const c = await api("/api/cluster");
    if (!ctx.alive) return;
    setModel(c);
    pushLive(c);
    const healthy = c.workers_healthy, total = c.workers.length;
    document.getElementById("cluster-sub").textContent =
      `${c.model ? "serving " + c.model : "nothing deployed"} · up ${duration(c.uptime_s)} · ${c.queries} queries served` +
      (c.jobs_running ? ` · ${c.jobs_running} tuning job${c.jobs_running > 1 ? "s" : ""} running` : "");
    fill(kpis,
      kpi("Throughput", fmt(c.live.qps) + " q/s", fmt(c.live.samples_per_s) + " samples/s"),
      kpi("Look-ups", c.live.lookups_per_s === null ? "measuring…" : fmt(c.live.lookups_per_s) + "/s", "embedding rows gathered"),
      kpi("p50 latency", latText(c.live.p50_us), c.live.p50_us === null ? `no query in the last ${c.live.window_s} s` : `over the last ${c.live.window_s} s`),
      kpi("p99 latency", latText(c.live.p99_us), c.live.p99_us === null ? `no query in the last ${c.live.window_s} s` : `over the last ${c.live.window_s} s`),
      kpi("Workers", `${healthy} / ${total}`, healthy === total ? "all healthy" : `${total - healthy} down`, healthy === total ? "" : "kpi-bad"),
      kpi("Errors", String(c.query_errors), c.queries ? pct(c.query_errors / Math.max(1, c.queries), 2) + " of queries" : "", c.query_errors ? "kpi-warn" : ""),
      kpi("On the wire", c.wire_bytes_per_batch == null ? "no data" : bytes(c.wire_bytes_per_batch), "per batch, both ways, in measured load rounds"));
    fill(workersBody, workersTable(c));
    fill(trafficBody, trafficTable(c));
    drawCharts();
    const r = await api("/api/replan");
    if (!ctx.alive) return;
    replanCard.style.display = r.mode === "off" ? "none" : "";
    if (r.mode !== "off") fill(replanBody, replanView(r));
    if (c.plan_id !== lastPlan) {
      lastPlan = c.plan_id;
      heat = await api("/api/deployment");
      if (ctx.alive) drawPlan();
    }
  }
  ctx.onResize = () => { drawCharts(); drawPlan(); };
  await refresh();
  ctx.poll(refresh, 2000);
}

// The live re-planner's last check (verdict, predicted gain, the tables whose traffic moved most)
// and its switches, from /api/replan: the record `embtune plan live` prints.
function replanView(r) {
  const a = r.last;
  const head = h("div", { class: "plan-line" }, h("strong", {}, r.mode), ` · proposes at ${r.gain_threshold.toFixed(2)}× · every ${r.interval_s} s · ${r.checks} checks`);
  if (!a) return h("div", {}, head, h("p", { class: "muted" }, "No traffic judged yet."));
  const drift = h("table", { class: "data" },
    h("thead", {}, h("tr", {}, ...["table", "pooling plan → live", "share plan → live", "top 1% plan → live"].map((x) => h("th", {}, x)))),
    h("tbody", {}, ...a.drift.slice(0, 6).map((d) => h("tr", {},
      h("td", {}, d.table),
      h("td", { class: "num" }, `${d.pooling_planned.toFixed(1)} → ${d.pooling_live.toFixed(1)}`),
      h("td", { class: "num" }, `${pct(d.share_planned, 1)} → ${pct(d.share_live, 1)}`),
      h("td", { class: "num" }, `${pct(d.top1_planned, 1)} → ${pct(d.top1_live, 1)}`)))));
  const parts = [head,
    h("p", { id: "replan-verdict" }, a.verdict),
    a.predicted_current > 0 ? h("p", { class: "muted" },
      `cost model, live traffic: deployed ${fmt(a.predicted_current)} batches/s, best found ${fmt(Math.max(a.predicted_proposed, a.predicted_current))} (`, speedupText(a.gain, false), ")") : null,
    h("div", { class: "table-wrap" }, drift)];
  if (r.switches.length) {
    const outcome = (o) => typeof o === "string" ? o.replace("_", " ") : "failed: " + o.failed;
    parts.push(h("div", { class: "table-wrap" }, h("table", { class: "data", id: "replan-switches" },
      h("thead", {}, h("tr", {}, ...["when", "predicted", "capacity before → after", "served before → after", "deploy", "outcome"].map((x) => h("th", {}, x)))),
      h("tbody", {}, ...r.switches.slice(-10).reverse().map((w) => h("tr", {},
        h("td", {}, new Date(w.at_ms).toLocaleTimeString()),
        h("td", { class: "num" }, w.predicted_gain.toFixed(2) + "×"),
        h("td", { class: "num" }, `${fmt(w.capacity_before)} → ${fmt(w.capacity_after)} batches/s`),
        h("td", { class: "num" }, `${fmt(w.served_before)} → ${fmt(w.served_after)} batches/s`),
        h("td", { class: "num" }, w.deploy_s.toFixed(2) + " s"),
        h("td", {}, outcome(w.outcome))))))));
    if (r.job) parts.push(h("p", {}, link(jobHref(r.job), "every switch is a trial of the live job →")));
  }
  return h("div", {}, ...parts);
}

// A heat map; past Charts.HEAT_ROWS tables it draws the busiest, with a button for all of them
// (`state.all`, redrawn by `state.redraw`).
function heatView(heat, width, state) {
  const n = heat.tables.length;
  const svg = Charts.heatmap({ heat, width, all: state.all });
  if (n <= Charts.HEAT_ROWS) return svg;
  const toggle = h("button", { class: "btn btn-small heat-toggle", onclick: () => { state.all = !state.all; state.redraw(); } },
    state.all ? `Show the ${Charts.HEAT_ROWS} busiest tables` : `Show all ${n} tables`);
  return h("div", {}, h("div", { class: "heat-controls" }, toggle), svg);
}

// Rows the plan's table list shows before "show all": a model of 856 tables is one click away.
const TABLE_ROWS = 100;

function planTable(heat, all) {
  const rows = all ? heat.tables : heat.tables.slice(0, TABLE_ROWS);
  return h("table", { class: "data", id: "plan-tables", "data-total": String(heat.tables.length) },
    h("thead", {}, h("tr", {}, ["Table", "Rows", "Stored", "Placement", "Shards", "Data flow", "Of look-ups"].map((x, i) => h("th", { class: [1, 2, 4, 6].includes(i) ? "num" : "" }, x)))),
    h("tbody", {}, rows.map((r) => h("tr", {},
      h("td", {}, h("i", { class: "mk mk-" + r.mode }, r.mode === "replicated" ? "R" : r.mode === "owned" ? "O" : "S"), " ", r.name),
      h("td", { class: "num" }, r.rows.toLocaleString("en-US")),
      h("td", { class: "num" }, bytes(r.bytes), h("span", { class: "muted small" }, " " + r.row_type)),
      h("td", {}, r.placement),
      h("td", { class: "num" }, r.shards ? String(r.shards) : "–"),
      h("td", { class: "mono small" }, r.flow),
      h("td", { class: "num" }, pct(r.lookup_share, 1))))));
}

function heatLegend() {
  return h("div", { class: "heat-legend" },
    Charts.legend(),
    h("span", { class: "legend-item" }, h("i", { class: "mk mk-replicated" }, "R"), "replicated: a copy on every worker, its bags spread over all cores (hatched)"),
    h("span", { class: "legend-item" }, h("i", { class: "mk mk-sharded" }, "S"), "sharded: rows split over cores"),
    h("span", { class: "legend-item" }, h("i", { class: "mk mk-owned" }, "O"), "owned by one core"),
    h("span", { class: "legend-item" }, h("i", { class: "mk mk-client" }, "C"), "client-resident: pooled in every client, read by no worker"));
}

function workersTable(c) {
  if (!c.workers.length) return emptyState("No worker registered", "Start workers with embtune worker --coordinator HOST:PORT, or use embtune up.");
  const rows = c.workers.map((w) => {
    const mem = w.memory_used_fraction;
    const cores = w.load.length
      ? h("div", { class: "corebars" }, w.load.map((k) => {
        const f = k.busy_fraction;
        return h("div", { class: "corebar", title: `core ${k.core} (CPU ${k.cpu}): ${f === null ? "measuring" : pct(f, 1) + " busy"}, ${fmt(k.lookups_per_s)} look-ups/s, ${k.tasks} tasks` },
          h("div", { class: "corebar-fill" + (f > 0.85 ? " hot" : ""), style: { height: (100 * (f || 0)).toFixed(1) + "%" } }));
      }), h("span", { class: "corebar-text" }, w.busy_fraction === null ? "…" : pct(w.busy_fraction)))
      : h("span", { class: "muted" }, "no heartbeat yet");
    return h("tr", { class: "worker-row" + (w.healthy ? "" : " down"), "data-worker": w.id },
      h("td", {}, h("span", { class: "health " + (w.healthy ? "ok" : "bad"), title: w.healthy ? "healthy" : "down" }),
        h("strong", {}, w.name || "worker"), h("span", { class: "muted" }, " #" + w.id)),
      h("td", { class: "mono" }, w.addr),
      h("td", { class: "num" }, String(w.cores)),
      h("td", {}, h("div", { class: "membar", title: `${bytes(w.bytes_held)} of tables, ${bytes(w.memory_bytes)} allowed` },
        h("div", { class: "membar-fill", style: { width: Math.min(100, 100 * mem).toFixed(1) + "%" } })),
        h("div", { class: "small muted" }, `${bytes(w.bytes_held)} / ${bytes(w.memory_bytes)}`)),
      h("td", {}, cores),
      h("td", { class: "num" }, String(w.queue)),
      h("td", { class: "num" }, w.lookups_per_s === null ? "…" : fmt(w.lookups_per_s)),
      h("td", { class: "num" }, fmt(w.requests)),
      h("td", { class: "num muted" }, (w.last_seen_ms / 1000).toFixed(1) + " s"));
  });
  return h("table", { class: "data", id: "workers-table" },
    h("thead", {}, h("tr", {}, ["Worker", "Address", "Cores", "Tables held", "Core load", "Queue", "Look-ups/s", "Requests", "Last heartbeat"]
      .map((t, i) => h("th", { class: [2, 5, 6, 7, 8].includes(i) ? "num" : "" }, t)))),
    h("tbody", {}, rows));
}

function trafficTable(c) {
  if (!c.traffic || !c.traffic.length) {
    return emptyState("No traffic yet", "Clients (embtune bench --coordinator, embtune loadgen, your programs) appear here once they query the workers.");
  }
  const total = c.traffic.reduce((a, t) => a + t.requests, 0) || 1;
  const ids = c.workers.map((w) => w.id);
  const rows = c.traffic.map((t) => {
    const per = new Map(t.workers.map((x) => [x.worker, x.requests]));
    return h("tr", { class: "client-row", "data-client": String(t.client) },
      h("td", { class: "mono" }, t.relay ? "coordinator (relay)" : t.client.toString(16).padStart(8, "0")),
      h("td", { class: "num" }, fmt(t.requests)),
      h("td", { class: "num" }, pct(t.requests / total, 1)),
      ...ids.map((id) => h("td", { class: "num" }, per.has(id) ? fmt(per.get(id)) : "–")),
      h("td", { class: "num" }, bytes(t.bytes_in)),
      h("td", { class: "num" }, bytes(t.bytes_out)),
      h("td", { class: "num" }, bytes((t.bytes_in + t.bytes_out) / Math.max(1, t.requests))));
  });
  const head = ["Client", "Requests", "Share", ...ids.map((id) => "worker #" + id), "Sent", "Received", "Bytes / request"];
  return h("table", { class: "data", id: "traffic-table" },
    h("thead", {}, h("tr", {}, head.map((t, i) => h("th", { class: i ? "num" : "" }, t)))),
    h("tbody", {}, rows));
}

// ---- Tuning jobs --------------------------------------------------------------------------------

async function pageJobs(ctx, root) {
  const body = h("div", { class: "table-wrap" });
  fill(root, h("div", { class: "page-head" }, h("h1", {}, "Tuning jobs"),
    h("div", { class: "muted" }, "Each job measures the baseline strategies, then searches for a better plan on this cluster.")),
  card("Jobs", body, { id: "jobs-card" }));
  async function refresh() {
    const jobs = await api("/api/jobs");
    if (!ctx.alive) return;
    if (!jobs.length) {
      fill(body, emptyState("No tuning job yet",
        "Start one with embtune tune --coordinator HOST:PORT --cluster DIR --preset P --trials N, or embtune up --tune-trials N."));
      return;
    }
    fill(body, h("table", { class: "data clickable", id: "jobs-table" },
      h("thead", {}, h("tr", {}, ["Job", "Dataset", "Status", "Progress", "Objective", "Best", "Best baseline", "Speed-up", "Cluster", "Started"]
        .map((t, i) => h("th", { class: [5, 6, 7].includes(i) ? "num" : "" }, t)))),
      h("tbody", {}, jobs.map((j) => {
        const done = Math.min(j.trials, j.target_trials);
        return h("tr", { class: "job-row", "data-job": j.job, onclick: () => { location.hash = jobHref(j.job); } },
          h("td", {}, link(jobHref(j.job), j.job)),
          h("td", {}, j.dataset),
          h("td", {}, badge(j.status)),
          h("td", {}, h("div", { class: "progress", title: `${j.trials} of ${j.target_trials} trials (${j.failed_trials} failed)` },
            h("div", { class: "progress-fill", style: { width: (100 * done / Math.max(1, j.target_trials)).toFixed(0) + "%" } })),
          h("span", { class: "small muted" }, `${j.trials} / ${j.target_trials}`)),
          h("td", {}, j.objective, h("span", { class: "muted small" }, " " + j.unit)),
          h("td", { class: "num" }, j.best === null ? "–" : fmt(j.best)),
          h("td", { class: "num" }, j.best_baseline ? [fmt(j.best_baseline.value), h("div", { class: "small muted" }, j.best_baseline.name)] : "–"),
          h("td", { class: "num" }, speedupText(j.speedup, j.tie)),
          h("td", { class: "small" }, j.cluster),
          h("td", { class: "small muted", title: when(j.created_ms) }, ago(j.created_ms)));
      }))));
  }
  await refresh();
  ctx.poll(refresh, 3000);
}

// [key, label, class, what the figure is]
const TRIAL_COLUMNS = [
  ["n", "#", "num"], ["kind", "Kind", ""], ["summary", "Plan", "", "placements and flows"],
  ["knobs", "Knobs", "", "prefetch distance, sub-batch, requests in flight per worker, hot rows"],
  ["predicted", "Predicted", "num", "the cost model's prediction when the trial was proposed"],
  ["measured", "Trial", "num", "the trial's own measurement (mean of its rounds)"], ["ci", "±95%", "num"],
  ["side_by_side", "Side by side", "num", "median of the head-to-head rounds, for its contenders"],
  ["p50_us", "p50", "num"], ["p99_us", "p99", "num"],
  ["vs_best_baseline", "vs best baseline (trial)", "num", "this trial's own measurement over the best baseline's own trial"],
  ["started_ms", "Start", "num"], ["ended_ms", "End", "num"],
];
const clock = (ms) => ms ? new Date(ms).toLocaleTimeString() : "–";

async function pageJob(ctx, root, id) {
  const head = h("div", { class: "page-head" });
  const kpis = h("div", { class: "kpis" });
  const hist = h("div", { class: "chart-box" });
  const pvm = h("div", { class: "chart-box" });
  const bases = h("div", {});
  const trials = h("div", { class: "table-wrap" });
  const histLegend = h("span", { class: "legend-inline" },
    h("i", { class: "dot-k k-baseline" }), "baseline ", h("i", { class: "dot-k k-search" }), "search ",
    h("i", { class: "dot-k k-knobs" }), "knobs ", h("i", { class: "dot-k k-random" }), "random ",
    h("i", { class: "sw best" }), "best search trial so far (own measurement) ", h("i", { class: "sw baseline" }), "baselines");
  fill(root, head, kpis,
    card("Optimisation history", hist, { id: "history-card", aside: histLegend }),
    h("div", { class: "grid-2" }, card("Predicted vs measured", pvm, { id: "pvm-card" }), card("Baselines", bases, { id: "baselines-card" })),
    card("Trials", trials, { id: "trials-card", aside: h("span", { class: "muted small" }, "click a column to sort, a row to see its plan") }));

  let sort = { key: "n", dir: 1 };
  let job = null;

  function drawHistory() {
    const failed = job.trial_rows.filter((t) => t.measured === null).map((t) => t.n);
    fill(hist, Charts.history({
      width: widthOf(hist), points: job.points, curve: job.curve, baselines: job.baselines, failed,
      best: job.best_trial, unit: job.unit, objective: job.objective, maximise: job.maximise,
      trials: Math.max(job.target_trials, job.trials_total),
      onClick: (n) => { location.hash = trialHref(id, n); },
    }));
    fill(pvm, Charts.scatter({ width: widthOf(pvm), pairs: job.predicted_vs_measured, unit: job.unit, onClick: (n) => { location.hash = trialHref(id, n); } }),
      h("p", { class: "small muted" }, job.model_error === null ? "The cost model is refitted once three trials are measured."
        : `Median error of the refitted cost model over this job's trials: ${pct(job.model_error)}.`));
  }

  function drawBaselines() {
    const entries = Object.entries(job.baselines);
    if (!entries.length) { fill(bases, h("p", { class: "muted" }, "No baseline measured yet.")); return; }
    const all = entries.map(([, v]) => v).concat(job.best === null ? [] : [job.best]);
    const max = Math.max(...all);
    const verdictOf = (k) => job.versus && job.versus[k] ? job.versus[k].verdict : null;
    // The factor beside each baseline is `speedup_vs`: the same figure as the side-by-side table
    // and the headline, from the same measurements as the bars.
    const row = (name, v, cls, factor, tie) => h("div", { class: "hbar-row " + (cls || ""), "data-baseline": name },
      h("div", { class: "hbar-label", title: name }, name),
      h("div", { class: "hbar" }, h("div", { class: "hbar-fill", style: { width: (100 * v / Math.max(1e-12, max)).toFixed(1) + "%" } })),
      h("div", { class: "hbar-value" }, fmt(v), factor === undefined ? null
        : h("span", { class: "small" }, " ", cls === "hbar-best" && !tie ? h("span", { class: "muted" }, "best") : speedupText(factor, tie))));
    const h2h = job.head_to_head;
    fill(bases,
      ...entries.sort((a, b) => job.maximise ? b[1] - a[1] : a[1] - b[1]).map(([k, v]) =>
        row(k, v, verdictOf(k) === "winner" ? "hbar-best" : "", job.speedup_vs[k], verdictOf(k) === "tie")),
      job.best === null || job.winner_is_baseline ? null : row(`best (trial ${job.best_trial})`, job.best, "hbar-best"),
      h("p", { class: "small muted" }, `${job.unit}; ${job.maximise ? "higher" : "lower"} is better. Bars: ${job.figures_source}. The factor is the best plan's speed-up over each baseline (median of the rounds' paired ratios; "tie" where the rounds cannot tell them apart).`),
      h2h ? h("div", { id: "head-to-head" },
        h("h4", {}, `Side by side: ${h2h.rounds} alternating rounds`),
        h("table", { class: "data" },
          h("thead", {}, h("tr", {}, ["Baseline", job.unit, "Speed-up", "Rounds' ratios"].map((t, i) => h("th", { class: i ? "num" : "" }, t)))),
          h("tbody", {}, Object.entries(h2h.speedup_vs).sort((a, b) => a[1] - b[1]).map(([k, x]) => {
            const v = job.versus ? job.versus[k] : null;
            const range = v && v.lo !== undefined && v.lo !== null ? `${v.lo.toFixed(2)}–${v.hi.toFixed(2)}×` : (v && v.verdict === "winner" ? "the best plan" : "–");
            return h("tr", { "data-baseline": k, class: v && v.verdict === "tie" ? "tie-row" : "" },
              h("td", {}, k), h("td", { class: "num" }, fmt(h2h.baselines[k])),
              h("td", { class: "num" }, v && v.verdict === "winner" ? "best" : speedupText(x, v && v.verdict === "tie")),
              h("td", { class: "num muted" }, range));
          }))),
        h("p", { class: "small muted" }, `Once the search ended, the best search trials and every baseline were deployed and measured again in turn; trial ${h2h.best_trial} won (${fmt(h2h.best)} ${job.unit}) and is the job's best plan. Each speed-up is the median of the rounds' ratios, reported when, less the rounds' spread, it is still a gain of at least 2%; otherwise it is a tie (1.00×) and, for the best plan, the simpler plan, the baseline, is kept.`))
        : null);
  }

  function drawTrials() {
    const rows = [...job.trial_rows].sort((a, b) => {
      const x = a[sort.key], y = b[sort.key];
      if (x === y) return a.n - b.n;
      if (x === null || x === undefined) return 1;
      if (y === null || y === undefined) return -1;
      return (x < y ? -1 : 1) * sort.dir;
    });
    const th = ([key, label, cls, what]) => h("th", {
      class: cls + " sortable" + (sort.key === key ? " sorted" : ""), "data-key": key, title: what,
      onclick: () => { sort = { key, dir: sort.key === key ? -sort.dir : (key === "n" || key === "kind" || key === "summary" ? 1 : -1) }; drawTrials(); },
    }, label, sort.key === key ? (sort.dir > 0 ? " ▲" : " ▼") : "");
    fill(trials, h("table", { class: "data clickable", id: "trials-table" },
      h("thead", {}, h("tr", {}, TRIAL_COLUMNS.map(th))),
      h("tbody", {}, rows.map((t) => h("tr", {
        class: "trial-row" + (t.best ? " best" : "") + (t.measured === null ? " failed" : ""), "data-trial": t.n,
        onclick: () => { location.hash = trialHref(id, t.n); },
      },
      h("td", { class: "num" }, t.best ? "★ " : "", t.tied ? h("span", { class: "tie-mark", title: "tied with the kept baseline" }, "= ") : "", String(t.n)),
      h("td", {}, h("span", { class: "kind " + (t.baseline ? "k-baseline" : "k-" + t.kind) }, t.kind)),
      h("td", { class: "plan-cell", title: t.summary }, t.summary),
      h("td", { class: "knobs-cell small", title: t.knobs }, t.knobs),
      h("td", { class: "num" }, fmt(t.predicted)),
      h("td", { class: "num" }, t.measured === null ? h("span", { class: "fail", title: t.failure || "" }, "failed") : h("strong", {}, fmt(t.measured))),
      h("td", { class: "num muted" }, t.ci === null ? "" : pct(t.ci, 1)),
      h("td", { class: "num" }, t.side_by_side === null || t.side_by_side === undefined ? "" : fmt(t.side_by_side)),
      h("td", { class: "num" }, latText(t.p50_us)),
      h("td", { class: "num" }, latText(t.p99_us)),
      h("td", { class: "num" }, speedupText(t.vs_best_baseline)),
      h("td", { class: "num muted small", title: when(t.started_ms) }, clock(t.started_ms)),
      h("td", { class: "num muted small", title: `${when(t.ended_ms)} (${duration(t.seconds)})` }, clock(t.ended_ms)))))));
  }

  async function refresh() {
    job = await api("/api/jobs/" + encodeURIComponent(id));
    if (!ctx.alive) return;
    fill(head,
      h("div", { class: "crumbs" }, link("#/jobs", "Tuning jobs"), " / "),
      h("h1", {}, job.job, " ", badge(job.status)),
      h("div", { class: "muted" }, `${job.dataset} · ${job.spec.tables} tables, ${bytes(job.spec.total_bytes)} · ${job.cluster} · objective ${job.objective} (${job.unit}) · ${job.search} search · started ${when(job.created_ms)}`),
      job.failure ? h("div", { class: "error-box" }, "Failed: " + job.failure) : null,
      job.verdict ? h("div", { class: "verdict" + (job.tie ? " verdict-tie" : ""), id: "verdict" }, job.verdict, h("span", { class: "muted small" }, " · figures: " + job.figures_source)) : null);
    const done = job.trials_total, measured = job.points.length;
    fill(kpis,
      kpi("Best", job.best === null ? "–" : withUnit(fmt(job.best), job.unit),
        job.best_trial === null ? "" : `trial ${job.best_trial}${job.winner_is_baseline ? " (" + job.best_baseline.name + ")" : ""} · ${job.head_to_head ? "side by side" : "own trial"}`, "kpi-accent"),
      kpi(job.tie ? "Speed-up: tie" : "Speed-up", job.speedup === null ? "–" : speedupText(job.speedup, job.tie),
        job.best_baseline ? `over ${job.best_baseline.name} (${fmt(job.best_baseline.value)})` : "over the best baseline", job.tie ? "kpi-tie" : ""),
      kpi("Trials", `${done} / ${job.target_trials}`, `${measured} measured, ${job.failed_trials} failed`),
      kpi("Cost-model error", job.model_error === null ? "–" : pct(job.model_error), "median, predicted vs measured"),
      // Over 100% is the noise of two measurements of the same bound: shown as "at the ceiling".
      kpi("Of the ceiling", job.ceiling_share == null ? "–" : job.ceiling_share >= 1 ? "at it" : pct(job.ceiling_share),
        job.ceiling == null ? "measured after the head-to-head" : `ceiling ${fmt(job.ceiling)} ${job.unit}: 1,000-row tables, the engine nearly free`),
      kpi("Time measuring", duration(job.elapsed_s), job.running ? "running now" : "updated " + ago(job.updated_ms)));
    drawHistory();
    drawBaselines();
    drawTrials();
    return job.running || job.status === "running";
  }
  ctx.onResize = () => job && drawHistory();
  let running = await refresh();
  if (running) {
    ctx.poll(async () => { if (running) running = await refresh(); }, 2000);
  }
}

async function pageTrial(ctx, root, id, n) {
  const t = await api(`/api/jobs/${encodeURIComponent(id)}/trials/${n}/plan`);
  if (!ctx.alive) return;
  const box = h("div", { class: "heat-box" });
  const m = t.measured;
  const nav = h("div", { class: "trial-nav" },
    +n > 0 ? link(trialHref(id, +n - 1), "← trial " + (+n - 1)) : h("span", {}),
    link(trialHref(id, +n + 1), "trial " + (+n + 1) + " →"));
  const tables = h("div", { class: "table-wrap" });
  const tableState = { all: false };
  const drawTables = () => {
    if (!t.heatmap) {
      fill(tables, h("p", { class: "muted" }, "This trial's plan does not match the model (a baseline that could not be made)."));
      return;
    }
    const n = t.heatmap.tables.length;
    const more = n > TABLE_ROWS ? h("div", { class: "heat-controls" },
      h("span", { class: "muted small" }, tableState.all ? `all ${n} tables ` : `the first ${TABLE_ROWS} of ${n} tables `),
      h("button", { class: "btn btn-small tables-toggle", onclick: () => { tableState.all = !tableState.all; drawTables(); } },
        tableState.all ? `Show the first ${TABLE_ROWS}` : `Show all ${n}`)) : null;
    fill(tables, more, planTable(t.heatmap, tableState.all));
  };
  drawTables();
  fill(root,
    h("div", { class: "page-head" },
      h("div", { class: "crumbs" }, link("#/jobs", "Tuning jobs"), " / ", link(jobHref(id), id), " / "),
      h("h1", {}, `Trial ${t.trial} `, h("span", { class: "kind " + (t.kind.startsWith("baseline") ? "k-baseline" : "k-" + t.kind) }, t.kind),
        t.best ? h("span", { class: "badge badge-done" }, "best") : null, t.deployed ? h("span", { class: "badge badge-running" }, "deployed now") : null),
      h("div", { class: "muted" }, t.summary), nav),
    h("div", { class: "kpis" },
      kpi("Measured (own trial)", m ? withUnit(fmt(m.value), t.unit) : "failed", m ? `±${pct(m.ci, 1)} over ${m.rounds.length} rounds` : (t.failure || ""), m ? "kpi-accent" : "kpi-bad"),
      kpi("Predicted", t.predicted === null ? "–" : withUnit(fmt(t.predicted), t.unit), "by the cost model when proposed"),
      kpi("p99 latency", m ? latText(m.p99_us) : "–", m ? `p50 ${latText(m.p50_us)} while measured` : ""),
      kpi("Batches/s", m ? fmt(m.batches_per_s) : "–", m ? `${m.errors} errors` : ""),
      kpi("Knobs", `${t.knobs.sub_batch} / ${t.knobs.inflight_per_worker}`, "sub-batch / in flight per worker"),
      kpi("Ran", clock(t.started_ms), `until ${clock(t.ended_ms)}`)),
    card("Plan: access share of every table on every core", t.heatmap ? [heatLegend(), box] : h("p", { class: "muted" }, "no heat map for this plan"), { id: "heat-card" }),
    card("Tables", tables),
    card("Plan as JSON", h("details", {}, h("summary", {}, "show (the format embtune bench --plan reads)"), h("pre", { class: "json" }, JSON.stringify(t.plan, null, 2)))));
  const heatState = { all: false, redraw: () => draw() };
  const draw = () => { if (t.heatmap) fill(box, heatView(t.heatmap, widthOf(box), heatState)); };
  draw();
  ctx.onResize = draw;
}

// ---- Results ------------------------------------------------------------------------------------

async function pageResults(ctx, root, a, b) {
  const [best, jobs] = await Promise.all([api("/api/best"), api("/api/jobs")]);
  if (!ctx.alive) return;
  const bestBody = best.length
    ? h("table", { class: "data", id: "best-table" },
      h("thead", {}, h("tr", {}, ["Dataset", "Cluster", "Best", "Speed-up", "Job", "Trial", "Plan"].map((x, i) => h("th", { class: [2, 3].includes(i) ? "num" : "" }, x)))),
      h("tbody", {}, best.map((r) => h("tr", { class: "best-row" },
        h("td", {}, h("strong", {}, r.dataset)),
        h("td", { class: "small" }, r.cluster),
        h("td", { class: "num" }, fmt(r.best), h("span", { class: "muted small" }, " " + (r.unit || ""))),
        h("td", { class: "num" }, speedupText(r.speedup, r.tie)),
        h("td", {}, link(jobHref(r.job), r.job)),
        h("td", {}, link(trialHref(r.job, r.trial), "#" + r.trial)),
        h("td", { class: "plan-cell", title: r.summary || "" }, r.summary || "–")))))
    : emptyState("No finished job yet", "The best plan of every finished job is kept per dataset and cluster.");
  const pick = (name, val) => h("select", { id: "cmp-" + name, "aria-label": "job " + name.toUpperCase() },
    h("option", { value: "" }, "choose a job"),
    jobs.map((j) => h("option", { value: j.job, selected: j.job === val }, `${j.job} · ${j.dataset} · ${j.status}`)));
  const selA = pick("a", a || (jobs[1] && jobs[1].job)), selB = pick("b", b || (jobs[0] && jobs[0].job));
  const compareChosen = () => { if (selA.value && selB.value) location.hash = `#/results/compare/${encodeURIComponent(selA.value)}/${encodeURIComponent(selB.value)}`; };
  selA.addEventListener("change", compareChosen);
  selB.addEventListener("change", compareChosen);
  const go = h("button", { class: "btn", onclick: compareChosen }, "Compare");
  const cmpBody = h("div", {});
  fill(root,
    h("div", { class: "page-head" }, h("h1", {}, "Results")),
    card("Best plan per dataset and cluster", h("div", { class: "table-wrap" }, bestBody)),
    card("Two jobs side by side", [h("div", { class: "cmp-pick" }, h("span", { class: "cmp-tag cmp-a" }, "A"), selA, h("span", { class: "cmp-tag cmp-b" }, "B"), selB, go), cmpBody], { id: "compare-card" }));
  if (!jobs.length) { fill(cmpBody, h("p", { class: "muted" }, "No job to compare yet.")); return; }
  // Without jobs in the address, the two preselected ones are compared.
  a = a || selA.value; b = b || selB.value;
  if (!(a && b)) { fill(cmpBody, h("p", { class: "muted" }, jobs.length < 2 ? "Only one job so far: choose it twice, or run another." : "Choose two jobs.")); return; }
  const c = await api(`/api/compare?a=${encodeURIComponent(a)}&b=${encodeURIComponent(b)}`);
  if (!ctx.alive) return;
  const fields = [
    ["dataset", (s) => s.dataset], ["status", (s) => badge(s.status)], ["objective", (s) => `${s.objective} (${s.unit})`],
    ["search", (s) => s.search], ["cluster", (s) => s.cluster], ["trials", (s) => `${s.trials_total} (${s.failed_trials} failed)`],
    ["best", (s) => s.best === null ? "–" : h("strong", {}, fmt(s.best) + " " + s.unit)], ["best trial", (s) => s.best_trial === null ? "–" : link(trialHref(s.job, s.best_trial), "#" + s.best_trial)],
    ["best plan", (s) => s.best_plan || "–"], ["speed-up quoted over", (s) => s.best_baseline ? `${s.best_baseline.name}: ${fmt(s.best_baseline.value)}` : "–"],
    ["speed-up", (s) => speedupText(s.speedup, s.tie)], ["verdict", (s) => s.verdict || "–"], ["figures from", (s) => s.figures_source],
    ["cost-model error", (s) => s.model_error === null ? "–" : pct(s.model_error)],
    ["time measuring", (s) => duration(s.elapsed_s)],
  ];
  const chartBox = h("div", { class: "chart-box" });
  fill(cmpBody,
    ...(c.warnings || []).map((w) => h("div", { class: "error-box warning" }, "Not comparable: " + w)),
    h("table", { class: "data compare", id: "compare-table" },
      h("thead", {}, h("tr", {}, h("th", {}), h("th", {}, h("span", { class: "cmp-tag cmp-a" }, "A"), " ", link(jobHref(c.a.job), c.a.job)), h("th", {}, h("span", { class: "cmp-tag cmp-b" }, "B"), " ", link(jobHref(c.b.job), c.b.job)))),
      h("tbody", {}, fields.map(([label, f]) => h("tr", {}, h("th", { class: "row-head" }, label), h("td", {}, f(c.a)), h("td", {}, f(c.b)))))),
    h("h3", {}, "Best so far by trial ", h("span", { class: "legend-inline inline" },
      h("i", { class: "sw cmp-a" }), "A", h("i", { class: "sw cmp-b" }), "B", " · dots: every measured trial, the line: the best search trial so far")), chartBox);
  const draw = () => fill(chartBox, Charts.compare({ width: widthOf(chartBox), a: { points: c.a_points, curve: c.a_curve }, b: { points: c.b_points, curve: c.b_curve } }));
  draw();
  ctx.onResize = draw;
}

// ---- Latency ------------------------------------------------------------------------------------

async function pageLatency(ctx, root) {
  const kpis = h("div", { class: "kpis" });
  const chart = h("div", { class: "chart-box" });
  const sub = h("div", { class: "muted" });
  fill(root, h("div", { class: "page-head" }, h("h1", {}, "Latency of the current plan"), sub), kpis,
    card("Histogram", chart, { id: "latency-card", aside: h("span", { class: "muted small" }, "queries by latency, last 10 s: those the coordinator relayed and the load generators' rounds (a client on the direct path keeps its own)") }));
  let d = null;
  const draw = () => fill(chart, Charts.histogram({ width: widthOf(chart), buckets: d.histogram, marks: [{ name: "p50", us: d.p50_us }, { name: "p99", us: d.p99_us }] }));
  async function refresh() {
    d = await api("/api/latency");
    if (!ctx.alive) return;
    sub.textContent = d.model ? `${d.model} · ${d.plan}` : "nothing deployed";
    fill(kpis,
      kpi("Queries", fmt(d.qps) + "/s", `${d.count} in the last ${d.window_s} s`),
      kpi("p50", latText(d.p50_us), d.count ? "median" : `no query in the last ${d.window_s} s`), kpi("p99", latText(d.p99_us), d.count ? "99th percentile" : `no query in the last ${d.window_s} s`, "kpi-accent"),
      kpi("Mean since start", latText(d.cumulative.mean_us), `${d.cumulative.queries} queries, ${d.cumulative.errors} errors`));
    draw();
  }
  ctx.onResize = () => d && draw();
  await refresh();
  ctx.poll(refresh, 2000);
}

// The model in the top bar, on every page (the cluster page refreshes it itself).
async function refreshModel() {
  if ((location.hash || "#/cluster").startsWith("#/cluster")) return;
  try { setModel(await api("/api/cluster")); } catch (_) { /* the page shows errors */ }
}
setInterval(refreshModel, 15000);
route();
refreshModel();
