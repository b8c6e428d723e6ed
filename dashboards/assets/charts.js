// embtune dashboard charts: small SVG charts drawn from plain JavaScript (no library, nothing
// fetched from elsewhere). Every chart is a function returning an <svg> element.
"use strict";

const Charts = (() => {
  const NS = "http://www.w3.org/2000/svg";

  // An SVG element with attributes and children (strings become text nodes).
  function s(tag, attrs, ...children) {
    const e = document.createElementNS(NS, tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v !== undefined && v !== null && v !== false) e.setAttribute(k, String(v));
    }
    for (const c of children.flat()) {
      if (c === null || c === undefined || c === false) continue;
      e.appendChild(typeof c === "string" || typeof c === "number" ? document.createTextNode(String(c)) : c);
    }
    return e;
  }

  const title = (text) => s("title", {}, text);

  // ---- numbers ----------------------------------------------------------------------------

  function fmt(x, digits) {
    if (x === null || x === undefined || !Number.isFinite(x)) return "–";
    const a = Math.abs(x);
    if (a >= 1e9) return (x / 1e9).toFixed(2) + "G";
    if (a >= 1e6) return (x / 1e6).toFixed(2) + "M";
    if (a >= 1e4) return (x / 1e3).toFixed(1) + "k";
    if (a >= 100) return x.toFixed(0);
    if (a >= 10) return x.toFixed(digits === undefined ? 1 : digits);
    if (a === 0) return "0";
    return x.toFixed(digits === undefined ? 2 : digits);
  }

  // Microseconds as a readable duration.
  function us(x) {
    if (x === null || x === undefined || !Number.isFinite(x)) return "–";
    if (x >= 1e6) return (x / 1e6).toFixed(2) + " s";
    if (x >= 1e3) return (x / 1e3).toFixed(x >= 1e4 ? 1 : 2) + " ms";
    // Below 10 µs a decimal, so that an axis of small values does not repeat "1 µs".
    if (x > 0 && x < 10) return x.toFixed(x < 1 ? 2 : 1) + " µs";
    return x.toFixed(0) + " µs";
  }

  function bytes(b) {
    if (b === null || b === undefined || !Number.isFinite(b)) return "–";
    const u = ["B", "KiB", "MiB", "GiB", "TiB"];
    let i = 0;
    while (b >= 1024 && i < u.length - 1) { b /= 1024; i++; }
    return (i === 0 ? b.toFixed(0) : b.toFixed(b >= 100 ? 0 : 1)) + " " + u[i];
  }

  const pct = (x, d) => (x === null || x === undefined || !Number.isFinite(x)) ? "–" : (100 * x).toFixed(d === undefined ? 0 : d) + "%";

  // Round tick values covering [lo, hi].
  function ticks(lo, hi, n) {
    if (!Number.isFinite(lo) || !Number.isFinite(hi)) return [0, 1];
    if (hi <= lo) { hi = lo + Math.max(1, Math.abs(lo) * 0.1); }
    const raw = (hi - lo) / Math.max(1, n);
    const mag = Math.pow(10, Math.floor(Math.log10(raw)));
    const step = [1, 2, 2.5, 5, 10].map((m) => m * mag).find((st) => st >= raw) || 10 * mag;
    const out = [];
    for (let v = Math.ceil(lo / step) * step; v <= hi + step * 1e-9; v += step) out.push(+v.toPrecision(12));
    return out;
  }

  // A scale from [d0, d1] to [r0, r1], with nice bounds when asked.
  function linear(d0, d1, r0, r1) {
    if (d1 === d0) { d1 = d0 + 1; }
    const f = (v) => r0 + (v - d0) / (d1 - d0) * (r1 - r0);
    f.domain = [d0, d1];
    return f;
  }

  // A round domain covering [lo, hi] with its ticks; from zero when `zero`, else padded (and
  // never below zero for values that are not).
  function niceDomain(lo, hi, n, zero) {
    if (zero) lo = Math.min(0, lo);
    if (hi <= lo) hi = lo + (Math.abs(lo) || 1);
    const span = hi - lo;
    let lo2 = zero ? lo : lo - span * 0.12;
    if (lo >= 0) lo2 = Math.max(0, lo2);
    const hi2 = hi + span * 0.06;
    const raw = (hi2 - lo2) / Math.max(1, n);
    const mag = Math.pow(10, Math.floor(Math.log10(raw)));
    const step = [1, 2, 2.5, 5, 10].map((m) => m * mag).find((st) => st >= raw) || 10 * mag;
    const dlo = Math.floor(lo2 / step + 1e-9) * step, dhi = Math.ceil(hi2 / step - 1e-9) * step;
    const t = [];
    for (let v = dlo; v <= dhi + step * 1e-6; v += step) t.push(+v.toPrecision(12));
    return [dlo, dhi, t];
  }

  function frame(width, height, cls, label) {
    return s("svg", {
      class: "chart " + (cls || ""), viewBox: `0 0 ${width} ${height}`, width: "100%",
      preserveAspectRatio: "xMinYMin meet", role: "img", "aria-label": label || "",
    });
  }

  // Grid lines and labels; a tick whose label would repeat the previous one is left out (two
  // "1 µs" on one axis say nothing).
  function yAxis(g, y, tickVals, x0, x1, format) {
    let last = null;
    for (const t of tickVals) {
      const label = format(t);
      if (label === last) continue;
      last = label;
      const yy = y(t);
      g.appendChild(s("line", { class: "grid", x1: x0, x2: x1, y1: yy, y2: yy }));
      g.appendChild(s("text", { class: "tick", x: x0 - 8, y: yy + 4, "text-anchor": "end" }, label));
    }
  }

  function xAxis(g, x, tickVals, y0, format) {
    g.appendChild(s("line", { class: "axis", x1: x.range0, x2: x.range1, y1: y0, y2: y0 }));
    for (const t of tickVals) {
      const xx = x(t);
      g.appendChild(s("line", { class: "axis", x1: xx, x2: xx, y1: y0, y2: y0 + 4 }));
      g.appendChild(s("text", { class: "tick", x: xx, y: y0 + 18, "text-anchor": "middle" }, format(t)));
    }
  }

  const KIND_CLASS = (kind) => kind.startsWith("baseline") ? "k-baseline" : kind === "knobs" ? "k-knobs" : kind === "random" ? "k-random" : "k-search";

  // ---- the optimisation history -----------------------------------------------------------
  // points: [{n, kind, baseline, value, ci, predicted}], curve: [[n, best]], baselines: {name: v},
  // failed: [n], best: n, unit, maximise. One <circle class="trial-point"> per measured trial.
  function history(o) {
    const W = Math.max(360, o.width || 900), H = o.height || 340;
    const m = { l: 64, r: 150, t: 18, b: 44 };
    const svg = frame(W, H, "history-chart", "optimisation history");
    const pts = o.points || [];
    const base = Object.entries(o.baselines || {}).filter(([, v]) => Number.isFinite(v));
    const vals = pts.map((p) => p.value).concat(base.map(([, v]) => v)).filter((v) => Number.isFinite(v));
    const nMax = Math.max(1, o.trials - 1, ...pts.map((p) => p.n));
    if (vals.length === 0) {
      svg.appendChild(s("text", { class: "empty", x: W / 2, y: H / 2, "text-anchor": "middle" }, "no measured trial yet"));
      return svg;
    }
    const [lo, hi, yt] = niceDomain(Math.min(...vals), Math.max(...vals), 5, false);
    const y = linear(lo, hi, H - m.b, m.t);
    const x = linear(-0.5, nMax + 0.5, m.l, W - m.r);
    x.range0 = m.l; x.range1 = W - m.r;
    const g = s("g", {});
    svg.appendChild(g);
    yAxis(g, y, yt, m.l, W - m.r, fmt);
    const step = Math.max(1, Math.ceil((nMax + 1) / 20));
    const xt = [];
    for (let i = 0; i <= nMax; i += step) xt.push(i);
    xAxis(g, x, xt, H - m.b, (t) => String(t));
    g.appendChild(s("text", { class: "axis-label", x: (m.l + W - m.r) / 2, y: H - 6, "text-anchor": "middle" }, "trial"));
    g.appendChild(s("text", { class: "axis-label", x: 14, y: (m.t + H - m.b) / 2, transform: `rotate(-90 14 ${(m.t + H - m.b) / 2})`, "text-anchor": "middle" },
      `${o.objective || "objective"} (${o.unit || ""}) · ${o.maximise ? "higher" : "lower"} is better`));
    // Baselines as horizontal lines, labelled at the right; labels pushed apart when close.
    const labels = base.map(([name, v]) => ({ name, v, y: y(v) })).sort((a, b) => a.y - b.y);
    for (let i = 1; i < labels.length; i++) if (labels[i].y - labels[i - 1].y < 13) labels[i].y = labels[i - 1].y + 13;
    const bl = s("g", { class: "baselines" });
    for (const b of labels) {
      bl.appendChild(s("line", { class: "baseline-line", x1: m.l, x2: W - m.r, y1: y(b.v), y2: y(b.v) }, title(`baseline ${b.name}: ${fmt(b.v)} ${o.unit}`)));
      bl.appendChild(s("text", { class: "baseline-label", x: W - m.r + 6, y: b.y + 4 }, `${b.name} ${fmt(b.v)}`));
    }
    g.appendChild(bl);
    // Best so far (over the search trials), as a step line.
    const curve = o.curve || [];
    if (curve.length) {
      let d = "";
      curve.forEach(([n, v], i) => {
        const xx = x(n), yy = y(v);
        d += i === 0 ? `M${xx},${yy}` : `H${xx}V${yy}`;
      });
      d += `H${x(nMax + 0.5)}`;
      g.appendChild(s("path", { class: "best-line", d }, title("best so far (search trials)")));
    }
    // Failed trials: crosses on the axis.
    for (const n of o.failed || []) {
      const xx = x(n), yy = H - m.b - 8;
      g.appendChild(s("path", { class: "trial-failed", d: `M${xx - 4},${yy - 4}L${xx + 4},${yy + 4}M${xx - 4},${yy + 4}L${xx + 4},${yy - 4}` }, title(`trial ${n} failed`)));
    }
    // The measured trials.
    const pg = s("g", { class: "points" });
    for (const p of pts) {
      if (!Number.isFinite(p.value)) continue;
      const c = s("circle", {
        class: `trial-point ${KIND_CLASS(p.kind)}${p.n === o.best ? " best" : ""}`,
        cx: x(p.n), cy: y(p.value), r: p.n === o.best ? 7 : 5, "data-trial": p.n,
      }, title(`trial ${p.n} (${p.kind}): ${fmt(p.value)} ${o.unit}` + (Number.isFinite(p.ci) ? ` ±${(100 * p.ci).toFixed(1)}%` : "") + (Number.isFinite(p.predicted) ? `, predicted ${fmt(p.predicted)}` : "")));
      if (o.onClick) { c.style.cursor = "pointer"; c.addEventListener("click", () => o.onClick(p.n)); }
      pg.appendChild(c);
    }
    g.appendChild(pg);
    return svg;
  }

  // ---- predicted against measured ---------------------------------------------------------
  function scatter(o) {
    const W = Math.max(300, o.width || 420), H = o.height || 320;
    const m = { l: 60, r: 16, t: 14, b: 44 };
    const svg = frame(W, H, "pvm-chart", "predicted against measured");
    const pts = (o.pairs || []).filter((p) => Number.isFinite(p.predicted) && Number.isFinite(p.measured));
    if (!pts.length) {
      svg.appendChild(s("text", { class: "empty", x: W / 2, y: H / 2, "text-anchor": "middle" }, "no prediction to compare yet"));
      return svg;
    }
    const all = pts.flatMap((p) => [p.predicted, p.measured]);
    const [lo, hi, t] = niceDomain(Math.min(...all), Math.max(...all), 4, true);
    const x = linear(lo, hi, m.l, W - m.r), y = linear(lo, hi, H - m.b, m.t);
    x.range0 = m.l; x.range1 = W - m.r;
    const g = s("g", {});
    svg.appendChild(g);
    yAxis(g, y, t, m.l, W - m.r, fmt);
    xAxis(g, x, t, H - m.b, fmt);
    g.appendChild(s("line", { class: "diagonal", x1: x(lo), y1: y(lo), x2: x(hi), y2: y(hi) }, title("prediction = measurement")));
    g.appendChild(s("text", { class: "axis-label", x: (m.l + W - m.r) / 2, y: H - 6, "text-anchor": "middle" }, `predicted (${o.unit})`));
    g.appendChild(s("text", { class: "axis-label", x: 14, y: (m.t + H - m.b) / 2, transform: `rotate(-90 14 ${(m.t + H - m.b) / 2})`, "text-anchor": "middle" }, `measured (${o.unit})`));
    for (const p of pts) {
      const c = s("circle", { class: `pvm-point ${KIND_CLASS(p.kind)}`, cx: x(p.predicted), cy: y(p.measured), r: 4.5 },
        title(`trial ${p.n} (${p.kind}): predicted ${fmt(p.predicted)}, measured ${fmt(p.measured)} (${(100 * p.error).toFixed(0)}% off)`));
      if (o.onClick) { c.style.cursor = "pointer"; c.addEventListener("click", () => o.onClick(p.n)); }
      g.appendChild(c);
    }
    return svg;
  }

  // ---- time series (live figures) ---------------------------------------------------------
  // series: [{name, cls, values: [[t_ms, v]]}]
  function timeSeries(o) {
    const W = Math.max(300, o.width || 560), H = o.height || 200;
    const m = { l: 58, r: 12, t: 12, b: 28 };
    const svg = frame(W, H, "ts-chart " + (o.cls || ""), o.label);
    const all = o.series.flatMap((sr) => sr.values);
    const now = Date.now();
    const first = Math.min(now, ...all.map((p) => p[0]));
    const span = o.span || Math.min(300e3, Math.max(60e3, Math.ceil((now - first) / 60e3) * 60e3));
    const x = linear(now - span, now, m.l, W - m.r);
    x.range0 = m.l; x.range1 = W - m.r;
    const vals = all.map((p) => p[1]).filter((v) => Number.isFinite(v) && (!o.empty || v > 0));
    if (!vals.length && o.empty) {
      // Nothing measured: say so instead of drawing an axis of zeros.
      svg.appendChild(s("text", { class: "empty-chart", x: W / 2, y: H / 2, "text-anchor": "middle" }, o.empty));
      return svg;
    }
    const [lo, hi, t] = niceDomain(0, vals.length ? Math.max(...vals) : 1, 4, true);
    const y = linear(lo, hi, H - m.b, m.t);
    const g = s("g", {});
    svg.appendChild(g);
    yAxis(g, y, t, m.l, W - m.r, o.format || fmt);
    const xt = [];
    const every = span > 120e3 ? 60e3 : 15e3;
    for (let k = Math.floor(span / every); k >= 0; k--) xt.push(now - k * every);
    xAxis(g, x, xt, H - m.b, (v) => {
      const d = Math.round((now - v) / 1e3);
      return d === 0 ? "now" : d % 60 === 0 ? `-${d / 60} min` : `-${d} s`;
    });
    for (const sr of o.series) {
      const pts = sr.values.filter((p) => p[0] >= now - span && Number.isFinite(p[1]));
      if (pts.length < 1) continue;
      const d = pts.map((p, i) => `${i ? "L" : "M"}${x(p[0]).toFixed(1)},${y(p[1]).toFixed(1)}`).join("");
      if (sr.fill) {
        g.appendChild(s("path", { class: `ts-area ${sr.cls}`, d: d + `L${x(pts[pts.length - 1][0])},${y(lo)}L${x(pts[0][0])},${y(lo)}Z` }));
      }
      g.appendChild(s("path", { class: `ts-line ${sr.cls}`, d }, title(sr.name)));
      const last = pts[pts.length - 1];
      g.appendChild(s("circle", { class: `ts-last ${sr.cls}`, cx: x(last[0]), cy: y(last[1]), r: 3 }));
    }
    return svg;
  }

  // ---- latency histogram ------------------------------------------------------------------
  // buckets: [{le_us, count}], marks: [{name, us}]
  function histogram(o) {
    const W = Math.max(360, o.width || 900), H = o.height || 300;
    const m = { l: 58, r: 16, t: 16, b: 48 };
    const svg = frame(W, H, "latency-chart", "latency histogram");
    const b = o.buckets || [];
    const n = b.length;
    const max = Math.max(1, ...b.map((x) => x.count));
    const [lo, hi, t] = niceDomain(0, max, 4, true);
    const y = linear(lo, hi, H - m.b, m.t);
    const bw = (W - m.l - m.r) / Math.max(1, n);
    const g = s("g", {});
    svg.appendChild(g);
    yAxis(g, y, t.filter((v) => Number.isInteger(v)), m.l, W - m.r, fmt);
    g.appendChild(s("line", { class: "axis", x1: m.l, x2: W - m.r, y1: H - m.b, y2: H - m.b }));
    const total = b.reduce((a, x) => a + x.count, 0);
    b.forEach((bk, i) => {
      const x0 = m.l + i * bw;
      const lower = i === 0 ? 0 : b[i - 1].le_us;
      const h = (H - m.b) - y(bk.count);
      g.appendChild(s("rect", { class: "hist-bar", x: x0 + 2, y: y(bk.count), width: Math.max(1, bw - 4), height: Math.max(0, h) },
        title(`${us(lower)} – ${us(bk.le_us)}: ${bk.count} queries` + (total ? ` (${(100 * bk.count / total).toFixed(1)}%)` : ""))));
      if (i % Math.ceil(n / 12) === 0 || i === n - 1) {
        g.appendChild(s("text", { class: "tick", x: x0 + bw / 2, y: H - m.b + 16, "text-anchor": "middle" }, "≤" + us(bk.le_us)));
      }
    });
    g.appendChild(s("text", { class: "axis-label", x: (m.l + W - m.r) / 2, y: H - 8, "text-anchor": "middle" }, "latency bucket (upper bound)"));
    // Marks (p50, p99) placed inside their bucket on a log scale.
    for (const mk of o.marks || []) {
      if (!Number.isFinite(mk.us) || mk.us <= 0 || !n) continue;
      let i = b.findIndex((bk) => mk.us <= bk.le_us);
      if (i < 0) i = n - 1;
      const lower = i === 0 ? b[0].le_us / 2 : b[i - 1].le_us;
      const frac = Math.min(1, Math.max(0, Math.log(mk.us / lower) / Math.log(b[i].le_us / lower)));
      const xx = m.l + (i + frac) * bw;
      g.appendChild(s("line", { class: `mark mark-${mk.name}`, x1: xx, x2: xx, y1: m.t, y2: H - m.b }));
      g.appendChild(s("text", { class: `mark-label mark-${mk.name}`, x: xx + 4, y: m.t + 12 }, `${mk.name} ${us(mk.us)}`));
    }
    return svg;
  }

  // ---- heat map: tables x cores -----------------------------------------------------------
  // heat: {cores: [{worker, core, label, worker_id, load}], tables: [{name, mode, placement, flow,
  // lookup_share}], matrix: [[share]]}
  function color(v) {
    // White to deep blue through teal: readable at low shares, dark at 1.
    const stops = [[0, [248, 250, 252]], [0.02, [224, 242, 254]], [0.15, [125, 211, 252]], [0.4, [14, 165, 233]], [0.7, [29, 78, 216]], [1, [30, 27, 105]]];
    v = Math.max(0, Math.min(1, v || 0));
    for (let i = 1; i < stops.length; i++) {
      if (v <= stops[i][0]) {
        const [a, ca] = stops[i - 1], [bb, cb] = stops[i];
        const f = (v - a) / (bb - a);
        const c = ca.map((x, k) => Math.round(x + f * (cb[k] - x)));
        return `rgb(${c[0]},${c[1]},${c[2]})`;
      }
    }
    return "rgb(30,27,105)";
  }

  // Rows a heat map draws unless asked for all: past this a page of hundreds of tables (856
  // in Meta's 2021 data set) would be a chart thousands of pixels tall.
  const HEAT_ROWS = 40;

  // The tables a heat map draws: all of them, or the `limit` with the largest share of the
  // look-ups (in plan order), and what the rest carry.
  function heatRows(h, all, limit) {
    const idx = h.tables.map((_, i) => i);
    if (all || idx.length <= limit) return { rows: idx, hidden: 0, hiddenShare: 0 };
    const top = new Set(idx.slice().sort((a, b) => h.tables[b].lookup_share - h.tables[a].lookup_share || a - b).slice(0, limit));
    const rest = idx.filter((i) => !top.has(i));
    return { rows: idx.filter((i) => top.has(i)), hidden: rest.length, hiddenShare: rest.reduce((a, i) => a + h.tables[i].lookup_share, 0) };
  }

  function heatmap(o) {
    const h = o.heat;
    const shown = heatRows(h, o.all, o.limit || HEAT_ROWS);
    const nc = h.cores.length, nt = shown.rows.length + (shown.hidden ? 1 : 0);
    const labelW = Math.min(220, 24 + 7 * Math.max(6, ...h.tables.map((t) => t.name.length)));
    const modeW = 86, shareW = 90;
    const avail = Math.max(300, (o.width || 900) - labelW - modeW - shareW - 16);
    const cw = Math.max(10, Math.min(nc <= 8 ? 88 : 56, Math.floor(avail / Math.max(1, nc))));
    const ch = nt > 60 ? 12 : 22;
    const top = 46, x0 = labelW + modeW;
    const W = x0 + cw * nc + 12 + shareW, H = top + ch * nt + 8 + 34;
    const svg = frame(W, H, "heatmap", "access share of every table on every core");
    svg.setAttribute("width", W);
    svg.setAttribute("height", H);
    svg.dataset.tablesShown = String(shown.rows.length);
    svg.dataset.tablesTotal = String(h.tables.length);
    svg.appendChild(s("defs", {},
      s("pattern", { id: "hatch", width: 6, height: 6, patternUnits: "userSpaceOnUse", patternTransform: "rotate(45)" },
        s("line", { x1: 0, y1: 0, x2: 0, y2: 6, stroke: "rgba(255,255,255,.75)", "stroke-width": 2 }))));
    // Worker headers spanning their cores.
    const workers = [];
    h.cores.forEach((c, i) => {
      const last = workers[workers.length - 1];
      if (last && last.worker === c.worker) last.n++; else workers.push({ worker: c.worker, id: c.worker_id, start: i, n: 1 });
    });
    for (const w of workers) {
      const xx = x0 + w.start * cw;
      svg.appendChild(s("rect", { class: "hm-worker", x: xx + 1, y: 4, width: w.n * cw - 2, height: 18, rx: 3 }));
      const name = w.id === null || w.id === undefined ? `worker ${w.worker}` : `worker ${w.id}`;
      svg.appendChild(s("text", { class: "hm-worker-label", x: xx + w.n * cw / 2, y: 17, "text-anchor": "middle" }, w.n * cw > 60 ? name : `w${w.id ?? w.worker}`));
    }
    if (cw >= 22) {
      h.cores.forEach((c, i) => svg.appendChild(s("text", { class: "hm-core-label", x: x0 + i * cw + cw / 2, y: top - 8, "text-anchor": "middle" }, `c${c.core}`)));
    }
    svg.appendChild(s("text", { class: "hm-head", x: 8, y: top - 8 }, "table"));
    svg.appendChild(s("text", { class: "hm-head", x: labelW, y: top - 8 }, "placement"));
    svg.appendChild(s("text", { class: "hm-head", x: x0 + cw * nc + 12, y: top - 8 }, "of look-ups"));
    const maxShare = Math.max(1e-9, ...h.tables.map((t) => t.lookup_share));
    shown.rows.forEach((ti, r) => {
      const t = h.tables[ti];
      const yy = top + r * ch;
      const row = s("g", { class: `hm-row mode-${t.mode}` });
      row.appendChild(s("text", { class: "hm-table", x: 8, y: yy + ch / 2 + 4 }, t.name, title(`${t.name}: ${t.rows} rows, ${bytes(t.bytes)} as ${t.row_type}, ${t.flow}`)));
      const badge = t.mode === "replicated" ? "R" : t.mode === "owned" ? "O" : t.mode === "client" ? "C" : "S";
      row.appendChild(s("rect", { class: `hm-badge badge-${t.mode}`, x: labelW, y: yy + 3, width: 16, height: ch - 6, rx: 3 }));
      row.appendChild(s("text", { class: "hm-badge-text", x: labelW + 8, y: yy + ch / 2 + 4, "text-anchor": "middle" }, badge));
      row.appendChild(s("text", { class: "hm-placement", x: labelW + 22, y: yy + ch / 2 + 4 }, t.placement));
      h.matrix[ti].forEach((v, c) => {
        const xx = x0 + c * cw;
        const core = h.cores[c];
        const cell = s("rect", { class: `heat-cell${t.mode === "replicated" ? " replicated" : ""}`, x: xx + 0.5, y: yy + 0.5, width: cw - 1, height: ch - 1, fill: color(v), "data-share": v.toFixed(4) },
          title(`${t.name} on ${core.label}${core.worker_id !== null && core.worker_id !== undefined ? " (worker " + core.worker_id + ")" : ""}: ${pct(v, 1)} of its look-ups` + (t.mode === "replicated" ? " (replicated: spread over every core)" : "")));
        row.appendChild(cell);
        if (t.mode === "replicated") row.appendChild(s("rect", { class: "hatch", x: xx + 0.5, y: yy + 0.5, width: cw - 1, height: ch - 1, fill: "url(#hatch)", "pointer-events": "none" }));
        if (cw >= 40 && ch >= 18 && v >= 0.005 && t.mode !== "replicated") {
          row.appendChild(s("text", { class: "hm-cell-text" + (v > 0.35 ? " on-dark" : ""), x: xx + cw / 2, y: yy + ch / 2 + 4, "text-anchor": "middle", "pointer-events": "none" }, pct(v, v < 0.1 ? 1 : 0)));
        }
      });
      const bx = x0 + cw * nc + 12;
      row.appendChild(s("rect", { class: "hm-share-bg", x: bx, y: yy + 5, width: shareW - 40, height: ch - 10, rx: 2 }));
      row.appendChild(s("rect", { class: "hm-share", x: bx, y: yy + 5, width: (shareW - 40) * t.lookup_share / maxShare, height: ch - 10, rx: 2 }));
      row.appendChild(s("text", { class: "hm-share-text", x: bx + shareW - 36, y: yy + ch / 2 + 4 }, pct(t.lookup_share, t.lookup_share < 0.1 ? 1 : 0)));
      svg.appendChild(row);
    });
    if (shown.hidden) {
      const yy = top + shown.rows.length * ch;
      svg.appendChild(s("text", { class: "hm-note hm-more", x: 8, y: yy + ch / 2 + 4 },
        `… and ${shown.hidden} more tables with ${pct(shown.hiddenShare, 1)} of the look-ups (the ${shown.rows.length} drawn carry the most)`));
    }
    // Per-core load: share of all look-ups.
    const ly = top + nt * ch + 8;
    const maxLoad = Math.max(1e-9, ...h.cores.map((c) => c.load));
    svg.appendChild(s("text", { class: "hm-head", x: x0 - 8, y: ly + 14, "text-anchor": "end" }, "core load"));
    svg.appendChild(s("text", { class: "hm-note", x: x0 - 8, y: ly + 27, "text-anchor": "end" }, "of all look-ups"));
    h.cores.forEach((c, i) => {
      const bh = 26 * c.load / maxLoad;
      svg.appendChild(s("rect", { class: "hm-load", x: x0 + i * cw + 2, y: ly + 28 - bh, width: cw - 4, height: bh }, title(`${c.label}: ${pct(c.load, 1)} of all look-ups`)));
    });
    return svg;
  }

  function legend() {
    const W = 300, H = 34;
    const svg = s("svg", { class: "legend", viewBox: `0 0 ${W} ${H}`, width: W, height: H });
    const grad = s("linearGradient", { id: "lg-heat", x1: 0, x2: 1, y1: 0, y2: 0 });
    for (let i = 0; i <= 10; i++) grad.appendChild(s("stop", { offset: `${i * 10}%`, "stop-color": color(i / 10) }));
    svg.appendChild(s("defs", {}, grad));
    svg.appendChild(s("rect", { x: 0, y: 2, width: 200, height: 12, fill: "url(#lg-heat)", rx: 2, stroke: "#cbd5e1" }));
    svg.appendChild(s("text", { class: "tick", x: 0, y: 28 }, "0%"));
    svg.appendChild(s("text", { class: "tick", x: 100, y: 28, "text-anchor": "middle" }, "50%"));
    svg.appendChild(s("text", { class: "tick", x: 200, y: 28, "text-anchor": "end" }, "100%"));
    svg.appendChild(s("text", { class: "tick", x: 210, y: 12 }, "of the table's"));
    svg.appendChild(s("text", { class: "tick", x: 210, y: 26 }, "look-ups"));
    return svg;
  }

  // ---- two jobs' curves -------------------------------------------------------------------
  function compare(o) {
    const W = Math.max(360, o.width || 900), H = o.height || 300;
    const m = { l: 64, r: 16, t: 16, b: 44 };
    const svg = frame(W, H, "compare-chart", "best so far of two jobs");
    const all = [...o.a.points, ...o.b.points].map((p) => p.value).filter(Number.isFinite);
    if (!all.length) {
      svg.appendChild(s("text", { class: "empty", x: W / 2, y: H / 2, "text-anchor": "middle" }, "no measured trial"));
      return svg;
    }
    const nMax = Math.max(1, ...[...o.a.points, ...o.b.points].map((p) => p.n));
    const [lo, hi, t] = niceDomain(Math.min(...all), Math.max(...all), 5, false);
    const x = linear(-0.5, nMax + 0.5, m.l, W - m.r), y = linear(lo, hi, H - m.b, m.t);
    x.range0 = m.l; x.range1 = W - m.r;
    const g = s("g", {});
    svg.appendChild(g);
    yAxis(g, y, t, m.l, W - m.r, fmt);
    const xt = [];
    for (let i = 0; i <= nMax; i += Math.max(1, Math.ceil((nMax + 1) / 20))) xt.push(i);
    xAxis(g, x, xt, H - m.b, String);
    g.appendChild(s("text", { class: "axis-label", x: (m.l + W - m.r) / 2, y: H - 6, "text-anchor": "middle" }, "trial"));
    for (const [key, sr] of [["a", o.a], ["b", o.b]]) {
      for (const p of sr.points) if (Number.isFinite(p.value)) g.appendChild(s("circle", { class: `cmp-point cmp-${key}`, cx: x(p.n), cy: y(p.value), r: 3.5 }, title(`${key.toUpperCase()} trial ${p.n} (${p.kind}): ${fmt(p.value)}`)));
      if (sr.curve.length) {
        let d = "";
        sr.curve.forEach(([n, v], i) => { d += i === 0 ? `M${x(n)},${y(v)}` : `H${x(n)}V${y(v)}`; });
        d += `H${x(nMax + 0.5)}`;
        g.appendChild(s("path", { class: `cmp-line cmp-${key}`, d }));
      }
    }
    return svg;
  }

  return { s, fmt, us, bytes, pct, ticks, color, history, scatter, timeSeries, histogram, heatmap, HEAT_ROWS, legend, compare };
})();
