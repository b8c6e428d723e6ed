// The dashboard in a real browser: starts `embtune up` (two workers, a tiny Criteo model, a
// short tuning job), waits for the job, then drives Debian's chromium headless through
// playwright-core and checks what a person would look at: the cluster page lists the workers,
// the job page draws one point per measured trial, the plan view draws its heat map, the
// results and latency pages render. And the consistency rules: an idle cluster's latency reads
// "no data" (never "0 µs"), no chart repeats an axis label, no card cuts its text off, the job
// page shows one set of figures (the headline, the baselines panel and the side-by-side table
// agree; a tie reads as a tie), and the compare panel compares the two jobs it shows chosen.
// Then a second cluster serves the dlrm-2021 preset's 856 tables (shrunk), whose cluster and
// trial pages must draw without freezing.
// Screenshots go to $EMBTUNE_ARTIFACTS (default target/ci-artifacts/). Finally `up` gets
// SIGINT and must exit 0.
//
//   node tests/browser/dashboard.mjs          (after cargo build -p embtune; see run.sh)
//
// Environment: EMBTUNE_BIN (default target/debug/embtune), EMBTUNE_ARTIFACTS, CHROMIUM
// (default /usr/bin/chromium).

import { spawn } from "node:child_process";
import crypto from "node:crypto";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import readline from "node:readline";
import { fileURLToPath } from "node:url";

import { chromium } from "playwright-core";

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../..");
const BIN = process.env.EMBTUNE_BIN || path.join(ROOT, "target/debug/embtune");
const ARTIFACTS = path.resolve(process.env.EMBTUNE_ARTIFACTS || path.join(ROOT, "target/ci-artifacts"));
const CHROMIUM = process.env.CHROMIUM || "/usr/bin/chromium";
const TRIALS = 3;
// The dashboard runs with a token, so that the test also sees the pages carry it to their
// assets and API calls (a loopback address needs none; any other requires one).
const TOKEN = crypto.randomBytes(12).toString("hex");

let passed = 0;
let failed = 0;
const t0 = Date.now();
const log = (...a) => console.log(`[${((Date.now() - t0) / 1000).toFixed(1)}s]`, ...a);
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

function check(ok, what, detail) {
  if (ok) {
    passed++;
    log(`ok: ${what}`);
  } else {
    failed++;
    log(`FAILED: ${what}${detail === undefined ? "" : ": " + detail}`);
  }
  return ok;
}

// ---- embtune up ---------------------------------------------------------------------------------

function startUp(dataDir, workload = ["--preset", "criteo-kaggle", "--scale", "0.005", "--tune-trials", String(TRIALS), "--tune-round-secs", "0.3",
  "--replan", "suggest", "--replan-interval", "3"]) {
  const args = ["up", "--workers", "2", "--cores-per-worker", "1", ...workload, "--data-dir", dataDir, "--http-token", TOKEN];
  log(`starting ${BIN} ${args.join(" ").replace(TOKEN, "TOKEN")}`);
  const child = spawn(BIN, args, { stdio: ["ignore", "pipe", "pipe"], env: { ...process.env, RUST_LOG: process.env.RUST_LOG || "info" } });
  const stderr = [];
  child.stderr.on("data", (d) => stderr.push(d.toString()));
  const exited = new Promise((resolve) => child.on("exit", (code, signal) => resolve({ code, signal })));
  let coordinator = null;
  const dashboard = new Promise((resolve, reject) => {
    const rl = readline.createInterface({ input: child.stdout });
    rl.on("line", (line) => {
      log(`up: ${line}`);
      const c = line.match(/^coordinator: (\S+)$/);
      if (c) coordinator = c[1];
      const m = line.match(/^dashboard: (http:\/\/\S+)$/);
      if (m) resolve(m[1]);
    });
    exited.then(({ code, signal }) => reject(new Error(`embtune up exited (${code ?? signal}) before printing the dashboard:\n${stderr.join("")}`)));
    setTimeout(() => reject(new Error(`no dashboard line from embtune up within 180 s:\n${stderr.join("")}`)), 180e3);
  });
  return { child, dashboard, exited, stderr, coordinator: () => coordinator };
}

// Load through the coordinator while the pages are looked at: `embtune bench` on the cluster
// (it keeps the plan the job left deployed, since the model is the same).
// Load through the coordinator (`--via coordinator`): the coordinator then measures every query,
// so the live figures and the latency histogram fill in while it runs. (A client on the direct
// path shows on the cluster page through the workers' counters; its latencies stay with it,
// and load generators report theirs per round.)
function startLoad(coordinator, dataDir, seconds) {
  const args = ["bench", "--coordinator", coordinator, "--cluster", path.join(dataDir, "cluster"), "--preset", "criteo-kaggle",
    "--scale", "0.005", "--via", "coordinator", "--duration", String(seconds), "--warmup", "0.5", "--json"];
  log(`load: ${BIN} ${args.join(" ")}`);
  const child = spawn(BIN, args, { stdio: ["ignore", "pipe", "pipe"] });
  const out = [];
  child.stdout.on("data", (d) => out.push(d.toString()));
  child.stderr.on("data", (d) => out.push(d.toString()));
  const exited = new Promise((resolve) => child.on("exit", (code, signal) => resolve({ code, signal, output: out.join("") })));
  return { child, exited };
}

// A second, shorter job on the running cluster (the compare panel needs two).
function runTune(coordinator, dataDir) {
  const args = ["tune", "--coordinator", coordinator, "--cluster", path.join(dataDir, "cluster"), "--preset", "criteo-kaggle",
    "--scale", "0.005", "--trials", "1", "--round-secs", "0.3", "--max-rounds", "2", "--head-to-head-rounds", "2", "--json"];
  log(`second job: ${BIN} ${args.join(" ")}`);
  const child = spawn(BIN, args, { stdio: ["ignore", "pipe", "pipe"] });
  const out = [], err = [];
  child.stdout.on("data", (d) => out.push(d.toString()));
  child.stderr.on("data", (d) => err.push(d.toString()));
  return new Promise((resolve) => child.on("exit", (code) => resolve({ code, stdout: out.join(""), output: err.join("") + out.join("") })));
}

// The page-level consistency rules, checked on whatever page is shown.
async function pageRules(page, name) {
  // No y axis repeats a label ("1 µs" twice says nothing).
  const repeats = await page.$$eval("svg.chart", (svgs) => {
    const bad = [];
    for (const svg of svgs) {
      const byX = {};
      for (const t of svg.querySelectorAll('text.tick[text-anchor="end"]')) (byX[t.getAttribute("x")] ||= []).push(t.textContent);
      for (const labels of Object.values(byX)) {
        const dup = labels.filter((l, i) => labels.indexOf(l) !== i);
        if (dup.length) bad.push(`${svg.getAttribute("aria-label")}: ${labels.join(", ")}`);
      }
    }
    return bad;
  });
  check(repeats.length === 0, `${name}: no chart repeats an axis label`, repeats.join("; "));
  // No card cuts its text off: every value and caption fits its box.
  const cut = await page.$$eval(".kpi-value, .kpi-sub, .kpi-label", (els) => els
    .filter((e) => e.scrollWidth > e.clientWidth + 1)
    .map((e) => `${e.className}: ${e.textContent} (${e.scrollWidth} > ${e.clientWidth})`));
  check(cut.length === 0, `${name}: no card text is cut off`, cut.join("; "));
}

async function getJson(url) {
  const r = await fetch(url, { cache: "no-store", headers: { Authorization: `Bearer ${TOKEN}` } });
  if (!r.ok) throw new Error(`${url}: ${r.status} ${await r.text()}`);
  return r.json();
}

// A page of the dashboard, opened with the token in the address as a person would.
const pageUrl = (base, hash) => `${base}?token=${encodeURIComponent(TOKEN)}${hash}`;

async function waitForJob(base, timeoutMs) {
  const deadline = Date.now() + timeoutMs;
  let last = "";
  while (Date.now() < deadline) {
    const jobs = await getJson(new URL("api/jobs", base));
    if (jobs.length) {
      const j = jobs[0];
      const state = `${j.job}: ${j.status}, ${j.trials}/${j.target_trials} trials`;
      if (state !== last) log(state);
      last = state;
      if (j.status !== "running" && !j.running) return j;
    }
    await sleep(1000);
  }
  throw new Error(`the tuning job did not finish within ${timeoutMs / 1000} s (${last})`);
}

// ---- the browser --------------------------------------------------------------------------------

function launch(profileDir) {
  return chromium.launchPersistentContext(profileDir, {
    executablePath: CHROMIUM,
    headless: true,
    args: ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
      "--disable-component-update", "--disable-sync", "--disable-quic"],
    viewport: { width: 1440, height: 900 },
    deviceScaleFactor: 1,
  });
}

// Meta's 2021 shape (856 tables, the dlrm-2021 preset shrunk to at most 1,000 rows a table and
// 64 samples a batch) on its own cluster with a one-trial job: the cluster page and a trial's
// page must draw their heat maps and table lists without freezing, the heat map showing the
// busiest tables with a button for all 856, the table list its first 100 with one for all.
async function dlrmPages() {
  const dataDir = fs.mkdtempSync(path.join(os.tmpdir(), "embtune-browser-dlrm-"));
  const profileDir = fs.mkdtempSync(path.join(os.tmpdir(), "embtune-browser-profile-"));
  const up = startUp(dataDir, ["--preset", "dlrm-2021", "--scale", "0.0001", "--batch", "64", "--tune-trials", "1",
    "--tune-round-secs", "0.2", "--client-memory", "0"]);
  let context = null;
  try {
    const base = await up.dashboard;
    context = await launch(profileDir);
    const page = context.pages()[0] || (await context.newPage());
    const problems = [];
    page.on("pageerror", (e) => problems.push(`page error: ${e.message}`));
    page.on("console", (m) => { if (m.type() === "error") problems.push(`console error: ${m.text()}`); });
    // The page draws a frame within two seconds: a frozen page would not (the limit leaves room
    // for a busy 2-core CI machine).
    const responsive = async (what) => {
      const t = Date.now();
      await page.evaluate(() => new Promise((r) => requestAnimationFrame(() => r(1))));
      const ms = Date.now() - t;
      check(ms < 2000, `${what}: the page stays responsive (a frame in ${ms} ms)`, ms);
    };
    let t = Date.now();
    await page.goto(pageUrl(base, "#/cluster"));
    await page.waitForSelector("#plan-card svg.heatmap", { timeout: 30e3 });
    const drawn = Date.now() - t;
    const counts = async (sel) => page.$eval(sel, (e) => [+e.dataset.tablesShown, +e.dataset.tablesTotal]);
    const [shown, total] = await counts("#plan-card svg.heatmap");
    check(total === 856 && shown === 40, `856 tables: the cluster page's heat map draws the 40 busiest (${drawn} ms to draw)`, JSON.stringify({ shown, total }));
    check((await page.$eval("#plan-card .hm-more", (e) => e.textContent)).includes("816 more tables"), "the heat map says how many tables it leaves out");
    await page.click("#plan-card .heat-toggle");
    await page.waitForFunction(() => +document.querySelector("#plan-card svg.heatmap")?.dataset.tablesShown === 856, null, { timeout: 20e3 });
    check(true, "\"Show all 856 tables\" draws every table");
    await sleep(4500); // two polls of the cluster page with the full heat map
    await responsive("cluster page with 856 tables");
    check(await page.$eval("#plan-card svg.heatmap", (e) => +e.dataset.tablesShown) === 856, "the full heat map stays drawn across polls");
    await shotPage(page, "dlrm-cluster");

    const job = await waitForJob(base, 400e3);
    check(job.status === "done", `the 856-table tuning job finished (${job.status})`, JSON.stringify(job));
    const detail = await getJson(new URL(`api/jobs/${encodeURIComponent(job.job)}`, base));
    t = Date.now();
    await page.goto(pageUrl(base, `#/jobs/${encodeURIComponent(job.job)}/trials/${detail.best_trial}`));
    await page.waitForSelector("#heat-card svg.heatmap", { timeout: 30e3 });
    await page.waitForSelector("#plan-tables", { timeout: 30e3 });
    const trialMs = Date.now() - t;
    const rows = await page.$$eval("#plan-tables tbody tr", (r) => r.length);
    check(rows === 100 && (await page.$eval("#plan-tables", (e) => +e.dataset.total)) === 856,
      `856 tables: a trial's page lists the first 100 (${trialMs} ms to draw)`, rows);
    await page.click(".tables-toggle");
    await page.waitForFunction(() => document.querySelectorAll("#plan-tables tbody tr").length === 856, null, { timeout: 20e3 });
    check(true, "\"Show all 856\" lists every table");
    await responsive("trial page with 856 tables");
    await shotPage(page, "dlrm-trial");
    check(problems.length === 0, "856 tables: no error in the page", problems.join("\n"));
  } finally {
    if (context) await context.close().catch(() => {});
    up.child.kill("SIGINT");
    const res = await Promise.race([up.exited, sleep(30e3).then(() => null)]);
    check(res !== null && res.code === 0, "embtune up (856 tables) exits 0 on SIGINT", JSON.stringify(res));
    if (res === null) up.child.kill("SIGKILL");
    fs.rmSync(profileDir, { recursive: true, force: true });
    fs.rmSync(dataDir, { recursive: true, force: true });
  }
}

async function shotPage(page, name) {
  const file = path.join(ARTIFACTS, `dashboard-${name}.png`);
  await page.screenshot({ path: file, fullPage: true });
  log(`screenshot ${file}`);
}

async function main() {
  fs.mkdirSync(ARTIFACTS, { recursive: true });
  const dataDir = fs.mkdtempSync(path.join(os.tmpdir(), "embtune-browser-data-"));
  const profileDir = fs.mkdtempSync(path.join(os.tmpdir(), "embtune-browser-profile-"));
  const up = startUp(dataDir);
  let context = null;
  let load = null;
  let stopped = false;
  try {
    const base = await up.dashboard;
    log(`dashboard at ${base}`);
    const open = await fetch(new URL("api/cluster", base));
    check(open.status === 401, "the API answers 401 without the token", open.status);
    const job = await waitForJob(base, 300e3);
    check(job.status === "done", `the tuning job finished (${job.status})`, JSON.stringify(job));
    const detail = await getJson(new URL(`api/jobs/${encodeURIComponent(job.job)}`, base));
    const measured = detail.trials.filter((t) => t.measured !== null).length;
    log(`job ${job.job}: ${detail.trials.length} trials, ${measured} measured`);
    // Every baseline the tuner knows, then the trials asked for: the job's own target says how
    // many baselines that is (a new baseline needs no edit here). `up` gives the clients memory
    // for tables, so client-small is one of them.
    const baselines = detail.trial_rows.filter((t) => t.kind.startsWith("baseline:")).length;
    check(detail.trials.length === TRIALS + baselines && detail.target_trials === TRIALS + baselines && baselines >= 6
        && detail.trial_rows.some((t) => t.kind === "baseline:client-small"),
        `the job recorded ${TRIALS} trials after its ${baselines} baselines, client-small among them`,
        JSON.stringify({ trials: detail.trials.length, target: detail.target_trials, baselines }));

    context = await launch(profileDir);
    const page = context.pages()[0] || (await context.newPage());
    const problems = [];
    page.on("pageerror", (e) => problems.push(`page error: ${e.message}`));
    page.on("console", (m) => { if (m.type() === "error") problems.push(`console error: ${m.text()}`); });
    page.on("requestfailed", (r) => {
      // A poll cut short by a navigation is no fault of the page.
      if (!(r.failure()?.errorText || "").includes("ERR_ABORTED")) problems.push(`request failed: ${r.url()} ${r.failure()?.errorText}`);
    });
    const shot = (name) => shotPage(page, name);

    // Idle: once no query has finished for a whole window, latency is "no data", never "0 µs".
    const idleBy = Date.now() + 30e3;
    while (Date.now() < idleBy && (await getJson(new URL("api/cluster", base))).live.p50_us !== null) await sleep(500);
    const idleApi = await getJson(new URL("api/cluster", base));
    check(idleApi.live.p50_us === null && idleApi.live.p99_us === null, "the API reports no latency (null) for an idle cluster", JSON.stringify(idleApi.live));
    await page.goto(pageUrl(base, "#/cluster"));
    await page.waitForFunction(() => document.querySelectorAll(".kpi").length >= 4, null, { timeout: 15e3 });
    await sleep(2500);
    const idleKpis = await page.$$eval(".kpi", (k) => k.map((x) => x.textContent));
    const idleLat = idleKpis.filter((t) => /latency/i.test(t));
    check(idleLat.length === 2 && idleLat.every((t) => t.includes("no data") && !/\b0 µs/.test(t)),
      "an idle cluster's latency cards say \"no data\", not \"0 µs\"", JSON.stringify(idleLat));
    const idleText = await page.$eval("#app", (e) => e.textContent);
    check(!/(^|[^0-9.])0 µs/.test(idleText), "the idle cluster page shows no \"0 µs\" anywhere");
    await pageRules(page, "idle cluster page");
    await shot("cluster-idle");
    await page.goto(pageUrl(base, "#/latency"));
    await page.waitForSelector("svg.latency-chart", { state: "attached", timeout: 15e3 });
    const idleLatency = await page.$$eval(".kpi", (k) => k.map((x) => x.textContent));
    check(idleLatency.filter((t) => /^p(50|99)/.test(t)).every((t) => t.includes("no data")), "the idle latency page says \"no data\" for p50 and p99", JSON.stringify(idleLatency));
    await shot("latency-idle");

    // A second job, for the compare panel.
    const second = await runTune(up.coordinator(), dataDir);
    check(second.code === 0, "a second tuning job (embtune tune --coordinator) finished", second.output.slice(-2000));
    let secondJob = null;
    try { secondJob = JSON.parse(second.stdout); } catch (e) { log(`could not read the second job's JSON: ${e}`); }
    if (secondJob) {
      const bs = Object.values(secondJob.baselines);
      check(bs.every((b) => secondJob.maximise ? secondJob.best >= b : secondJob.best <= b) && Object.values(secondJob.speedup_vs).every((x) => x >= 1),
        "tune --json: best is never below a reported baseline and every speed-up is at least 1", JSON.stringify({ best: secondJob.best, baselines: secondJob.baselines, speedup_vs: secondJob.speedup_vs }));
    }

    // Traffic for the live figures and the latency histogram (its window is 10 s).
    const before = (await getJson(new URL("api/cluster", base))).queries;
    load = startLoad(up.coordinator(), dataDir, 14);
    const waitLoad = Date.now() + 30e3;
    while (Date.now() < waitLoad && (await getJson(new URL("api/cluster", base))).queries < before + 50) await sleep(250);
    // Cluster: both workers listed and healthy; the live figures fill in.
    await page.goto(pageUrl(base, "#/cluster"));
    await page.waitForFunction(() => document.querySelectorAll("#workers-table tbody tr.worker-row").length >= 2, null, { timeout: 30e3 });
    const rows = await page.$$eval("#workers-table tbody tr.worker-row", (trs) => trs.map((tr) => ({
      text: tr.textContent, healthy: !!tr.querySelector(".health.ok"),
    })));
    check(rows.length === 2, "the cluster page lists the 2 workers", rows.length);
    check(rows.every((r) => r.healthy), "both workers show as healthy", JSON.stringify(rows));
    check(rows.some((r) => r.text.includes("w0")) && rows.some((r) => r.text.includes("w1")), "the workers are named w0 and w1", JSON.stringify(rows.map((r) => r.text)));
    await page.waitForSelector("#plan-card svg.heatmap", { timeout: 30e3 });
    // Two polls, so that per-core load (a delta between calls) is shown.
    await page.waitForFunction(() => [...document.querySelectorAll(".corebar-text")].some((e) => e.textContent.endsWith("%")), null, { timeout: 15e3 });
    await sleep(2500); // a few more polls for the live charts
    const busy = await page.$$eval(".corebar-text", (e) => e.map((x) => x.textContent));
    const lookups = await page.$$eval("#workers-table tbody tr.worker-row td:nth-child(7)", (e) => e.map((x) => x.textContent));
    check(busy.length === 2 && busy.every((b) => /%$/.test(b)) && lookups.some((l) => parseFloat(l) > 0),
      "the cluster page shows the cores' load and look-ups under traffic", JSON.stringify({ busy, lookups }));
    // The live re-planner (`--replan suggest`): its card shows the last check's verdict, and in
    // suggest mode it never deploys.
    await page.waitForSelector("#replan-card #replan-verdict", { state: "visible", timeout: 30e3 });
    const verdict = await page.$eval("#replan-verdict", (e) => e.textContent);
    const replan = await getJson(new URL("api/replan", base));
    check(replan.mode === "suggest" && replan.checks > 0 && replan.switches.length === 0 && verdict.length > 10,
      "the live re-planning card shows the re-planner's verdict; suggest mode switches nothing", JSON.stringify({ verdict, mode: replan.mode, checks: replan.checks }));
    await pageRules(page, "cluster page under load");
    await shot("cluster");

    // Tuning jobs list.
    await page.goto(pageUrl(base, "#/jobs"));
    await page.waitForSelector(`#jobs-table tr.job-row[data-job="${job.job}"]`, { timeout: 15e3 });
    const speedup = await page.$eval(`#jobs-table tr.job-row[data-job="${job.job}"]`, (tr) => tr.textContent);
    check(speedup.includes("×"), "the jobs list shows the speed-up", speedup);
    await shot("jobs");

    // The job page: one point per measured trial.
    await page.goto(pageUrl(base, `#/jobs/${encodeURIComponent(job.job)}`));
    await page.waitForSelector("svg.history-chart", { timeout: 15e3 });
    const points = await page.$$eval("svg.history-chart circle.trial-point", (c) => c.length);
    check(points === measured && measured > 0, `the history chart draws ${measured} points, one per measured trial`, points);
    const baselineLines = await page.$$eval("svg.history-chart .baseline-line", (l) => l.length);
    check(baselineLines === Object.keys(detail.baselines).length, "the history chart draws the baselines as lines", baselineLines);
    const trialRows = await page.$$eval("#trials-table tbody tr.trial-row", (r) => r.length);
    check(trialRows === detail.trials.length, "the trials table lists every trial", trialRows);
    // Sorting by the measured value puts the best first.
    await page.click('#trials-table th[data-key="measured"]');
    const first = await page.$eval("#trials-table tbody tr.trial-row", (tr) => +tr.dataset.trial);
    const top = detail.trials.filter((t) => t.measured !== null)
      .reduce((a, b) => (detail.maximise ? b.measured.value > a.measured.value : b.measured.value < a.measured.value) ? b : a);
    check(first === top.n, "sorting by measured value puts the best-measured trial first", first);
    // The head-to-head at the end of the job: the best plan beside every baseline.
    check(detail.head_to_head && detail.head_to_head.rounds > 0, "the job measured its best plan beside the baselines", JSON.stringify(detail.head_to_head));
    const h2hRows = await page.$$eval("#head-to-head tbody tr", (r) => r.length);
    check(h2hRows === Object.keys(detail.head_to_head.speedup_vs).length, "the job page lists the side-by-side speed-ups", h2hRows);
    // One set of figures: the best is never below a reported baseline, no speed-up is below 1,
    // and the headline, the baselines panel and the side-by-side table show the same numbers.
    const baseVals = Object.values(detail.baselines);
    check(baseVals.every((b) => detail.maximise ? detail.best >= b : detail.best <= b), "the best is not below any reported baseline", JSON.stringify({ best: detail.best, baselines: detail.baselines }));
    check(Object.values(detail.speedup_vs).every((x) => x >= 1), "no reported speed-up is below 1", JSON.stringify(detail.speedup_vs));
    const figures = await page.evaluate(() => {
      const kpis = [...document.querySelectorAll(".kpi")].map((k) => ({ label: k.querySelector(".kpi-label").textContent, value: k.querySelector(".kpi-value").textContent }));
      const panel = Object.fromEntries([...document.querySelectorAll("#baselines-card .hbar-row[data-baseline]")].map((r) => [r.dataset.baseline, r.querySelector(".speedup")?.textContent || null]));
      const table = Object.fromEntries([...document.querySelectorAll("#head-to-head tbody tr[data-baseline]")].map((r) => [r.dataset.baseline, r.querySelector(".speedup")?.textContent || null]));
      return { kpis, panel, table };
    });
    const speedKpi = figures.kpis.find((k) => k.label.startsWith("Speed-up"));
    const wantSpeed = detail.speedup.toFixed(2) + "×" + (detail.tie ? " tie" : "");
    check(speedKpi && speedKpi.value === wantSpeed, `the headline speed-up reads ${wantSpeed}`, JSON.stringify(speedKpi));
    const disagree = Object.keys(figures.table).filter((k) => figures.table[k] !== figures.panel[k]);
    check(Object.keys(figures.table).length > 0 && disagree.length === 0, "the baselines panel and the side-by-side table show the same speed-ups", JSON.stringify(figures));
    check(await page.$eval("#verdict", (e, v) => e.textContent.includes(v), detail.verdict), "the job page states the verdict", detail.verdict);
    const knobsCells = await page.$$eval("#trials-table tbody tr.trial-row td.knobs-cell", (c) => c.map((x) => x.textContent));
    check(knobsCells.length === detail.trials.length && knobsCells.every((k) => /sub-batch \d+/.test(k)), "the trials table shows every trial's knobs", JSON.stringify(knobsCells.slice(0, 3)));
    await pageRules(page, "job page");
    await shot("job");

    // A tie reads as a tie: the same page, served a job whose best could not be told from its
    // best baseline (the figures the tie rule gives such a job).
    const tieName = detail.best_baseline.name;
    await page.route(`**/api/jobs/${encodeURIComponent(job.job)}`, async (route) => {
      const r = await route.fetch();
      const j = await r.json();
      j.tie = true;
      j.speedup = 1;
      j.speedup_vs[tieName] = 1;
      j.versus = { ...(j.versus || {}), [tieName]: { median: 1.01, lo: 0.97, hi: 1.04, rounds: j.head_to_head.rounds, verdict: "tie" } };
      j.verdict = `tie: trial ${j.best_trial} and ${tieName} cannot be told apart in ${j.head_to_head.rounds} side-by-side rounds; the simpler plan, ${tieName}, is kept`;
      await route.fulfill({ response: r, json: j });
    });
    await page.goto(pageUrl(base, "#/jobs"));
    await page.goto(pageUrl(base, `#/jobs/${encodeURIComponent(job.job)}`));
    await page.waitForSelector("#head-to-head", { timeout: 15e3 });
    const tie = await page.evaluate((name) => ({
      kpi: [...document.querySelectorAll(".kpi")].find((k) => k.querySelector(".kpi-label").textContent.startsWith("Speed-up"))?.textContent,
      verdict: document.querySelector("#verdict")?.textContent,
      panel: document.querySelector(`#baselines-card .hbar-row[data-baseline="${name}"] .speedup`)?.textContent,
      row: document.querySelector(`#head-to-head tbody tr[data-baseline="${name}"]`)?.className,
    }), tieName);
    check(tie.kpi && tie.kpi.includes("tie") && tie.verdict && tie.verdict.startsWith("tie:") && tie.panel === "1.00× tie" && tie.row === "tie-row",
      "a tie reads as a tie in the headline, the verdict, the baselines panel and the side-by-side table", JSON.stringify(tie));
    await pageRules(page, "job page with a tie");
    await shot("job-tie");
    await page.unroute(`**/api/jobs/${encodeURIComponent(job.job)}`);

    // A trial's plan: the heat map of tables x cores.
    await page.click(`#trials-table tbody tr.trial-row[data-trial="${detail.best_trial}"]`);
    await page.waitForSelector("#heat-card svg.heatmap", { timeout: 30e3 });
    const cells = await page.$$eval("#heat-card rect.heat-cell", (r) => r.length);
    const plan = await getJson(new URL(`api/jobs/${encodeURIComponent(job.job)}/trials/${detail.best_trial}/plan`, base));
    const want = plan.heatmap.tables.length * plan.heatmap.cores.length;
    check(cells === want, `the plan view draws ${want} heat-map cells (tables x cores)`, cells);
    await shot("plan");
    // And a plan with sharded tables, when the job measured one.
    const sharded = detail.trials.find((t) => t.plan.tables.some((x) => x.placement !== "replicated" && (x.placement.row_range || x.placement.hash)));
    if (sharded) {
      await page.goto(pageUrl(base, `#/jobs/${encodeURIComponent(job.job)}/trials/${sharded.n}`));
      await page.waitForSelector("#heat-card svg.heatmap", { timeout: 30e3 });
      const marks = await page.$$eval("#heat-card .hm-row.mode-sharded", (r) => r.length);
      check(marks > 0, `trial ${sharded.n}'s plan view marks its sharded tables`, marks);
      await shot("plan-sharded");
    }

    // Results: the best plan, and the two jobs compared as the panel preselects them.
    await page.goto(pageUrl(base, "#/results"));
    await page.waitForSelector("#best-table tr.best-row", { timeout: 15e3 });
    check((await page.$$eval("#best-table tr.best-row", (r) => r.length)) >= 1, "the results page shows the best plan");
    const chosen = await page.evaluate(() => [document.querySelector("#cmp-a").value, document.querySelector("#cmp-b").value]);
    check(chosen[0] && chosen[1] && chosen[0] !== chosen[1], "the compare panel preselects two different jobs", JSON.stringify(chosen));
    await page.waitForSelector("svg.compare-chart", { timeout: 15e3 });
    const cmpText = await page.$eval("#compare-card", (e) => e.textContent);
    check(!cmpText.includes("Choose two jobs"), "with two jobs chosen, the compare panel compares them", cmpText.slice(0, 300));
    const cmpHeads = await page.$$eval("#compare-table thead th a", (a) => a.map((x) => x.textContent));
    check(cmpHeads.length === 2 && cmpHeads.includes(chosen[0]) && cmpHeads.includes(chosen[1]), "the compare table shows the chosen jobs", JSON.stringify(cmpHeads));
    await pageRules(page, "results page");
    await shot("results");
    // Choosing a job in a selector compares at once.
    await page.selectOption("#cmp-a", job.job);
    await page.selectOption("#cmp-b", job.job);
    await page.waitForFunction((id) => location.hash.endsWith(`/${encodeURIComponent(id)}/${encodeURIComponent(id)}`), job.job, { timeout: 15e3 });
    await page.waitForSelector("#compare-table", { timeout: 15e3 });
    check(true, "choosing jobs in the selectors compares them");

    // Latency of the current plan.
    await page.goto(pageUrl(base, "#/latency"));
    await page.waitForSelector("svg.latency-chart rect.hist-bar", { state: "attached", timeout: 15e3 });
    const bars = await page.$$eval("svg.latency-chart rect.hist-bar", (r) => r.map((b) => +b.getAttribute("height")));
    check(bars.length === 16, "the latency histogram draws its 16 buckets", bars.length);
    check(bars.some((h) => h > 0), "the latency histogram shows the load's queries", JSON.stringify(bars));
    await pageRules(page, "latency page");
    await shot("latency");

    const bench = await Promise.race([load.exited, sleep(60e3).then(() => null)]);
    check(bench !== null && bench.code === 0, "the load (embtune bench through the coordinator) succeeded", bench && bench.output.slice(-2000));
    load = null;

    check(problems.length === 0, "no error in the page", problems.join("\n"));

    // Stop: SIGINT, and `up` must exit 0.
    await context.close();
    context = null;
    up.child.kill("SIGINT");
    stopped = true;
    const res = await Promise.race([up.exited, sleep(30e3).then(() => null)]);
    check(res !== null && res.code === 0, "embtune up exits 0 on SIGINT", JSON.stringify(res));
    if (res === null) up.child.kill("SIGKILL");

    // Meta's scale: 856 tables on a cluster of their own.
    await dlrmPages();
  } catch (e) {
    failed++;
    log(`FAILED: ${e.stack || e}`);
  } finally {
    if (context) await context.close().catch(() => {});
    if (load && load.child.exitCode === null) load.child.kill("SIGKILL");
    if (!stopped) {
      up.child.kill("SIGINT");
      await Promise.race([up.exited, sleep(15e3)]);
      if (up.child.exitCode === null && up.child.signalCode === null) up.child.kill("SIGKILL");
    }
    if (failed) {
      // Keep the cluster's logs for the artefacts.
      const logs = path.join(dataDir, "logs");
      if (fs.existsSync(logs)) fs.cpSync(logs, path.join(ARTIFACTS, "browser-test-logs"), { recursive: true });
      fs.writeFileSync(path.join(ARTIFACTS, "browser-test-up-stderr.txt"), up.stderr.join(""));
    }
    fs.rmSync(profileDir, { recursive: true, force: true });
    fs.rmSync(dataDir, { recursive: true, force: true });
  }
  console.log(`${passed} passed, ${failed} failed`);
  process.exit(failed ? 1 : 0);
}

main();
