//! The dashboard's HTTP server against a real coordinator in this process, with a real worker
//! (QUIC on loopback), a deployed plan, served queries and a tuning job put in the store: every
//! endpoint is fetched over TCP and its contents checked.

use std::collections::{BTreeSet, HashMap};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use embtune_coordinator::server::{Coordinator, CoordinatorConfig};
use embtune_dashboards::{HttpError, serve};
use embtune_protocol::tuning::{BestRecord, ClusterDesc, Job, JobConfig, JobStatus, Measured, Trial, TrialKind};
use embtune_protocol::{CoreId, Placement, Plan, Topology};
use embtune_workloads::{BatchGenerator, ModelSpec, Pooling, Preset, PresetOptions};

// ---- a small HTTP client ----------------------------------------------------------------------

struct Reply {
    status: u16,
    headers: HashMap<String, String>,
    body: String,
}

impl Reply {
    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
    }
    fn header(&self, name: &str) -> &str {
        self.headers.get(name).map(String::as_str).unwrap_or("")
    }
}

/// GET over a fresh connection (HTTP/1.0: the server closes after the reply, no chunking).
async fn get_with(addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> Reply {
    let mut s = tokio::time::timeout(Duration::from_secs(10), tokio::net::TcpStream::connect(addr))
        .await
        .expect("connect timed out")
        .expect("connect");
    let mut req = format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).await.unwrap();
    let mut raw = Vec::new();
    tokio::time::timeout(Duration::from_secs(30), s.read_to_end(&mut raw)).await.expect("reply timed out").unwrap();
    let text = String::from_utf8(raw).expect("a UTF-8 reply");
    let (head, body) = text.split_once("\r\n\r\n").expect("a header");
    let mut lines = head.lines();
    let status = lines.next().unwrap().split_whitespace().nth(1).unwrap().parse().unwrap();
    let headers: HashMap<String, String> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let body = if headers.get("transfer-encoding").is_some_and(|t| t.contains("chunked")) {
        dechunk(body)
    } else {
        body.to_string()
    };
    Reply { status, headers, body }
}

fn dechunk(mut s: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = s.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if n == 0 {
            break;
        }
        out.push_str(&rest[..n]);
        s = &rest[n + 2..];
    }
    out
}

async fn get(addr: SocketAddr, path: &str) -> Reply {
    get_with(addr, path, &[]).await
}

async fn get_json(addr: SocketAddr, path: &str) -> Value {
    let r = get(addr, path).await;
    assert_eq!(r.status, 200, "{path}: {}", r.body);
    assert!(r.header("content-type").starts_with("application/json"), "{path}: {}", r.header("content-type"));
    r.json()
}

// ---- a cluster in this process ----------------------------------------------------------------

struct Setup {
    c: Coordinator,
    _dir: tempfile::TempDir,
    spec: ModelSpec,
}

fn small_spec() -> ModelSpec {
    Preset::Synthetic
        .spec(&PresetOptions {
            tables: Some(4),
            rows: Some(20_000),
            dim: Some(16),
            pooling: Some(Pooling::Fixed(8)),
            batch: Some(64),
            dist: Some("zipf:1.1".parse().unwrap()),
            ..Default::default()
        })
        .unwrap()
}

/// A plan with every kind of placement on one worker of two cores.
fn mixed_plan(spec: &ModelSpec, strategy: &str) -> Plan {
    let rows = spec.tables[2].rows;
    let placements = [
        Placement::Replicated,
        Placement::Owned(CoreId::new(0, 1)),
        Placement::RowRange { bounds: vec![0, rows / 4, rows], owners: vec![CoreId::new(0, 0), CoreId::new(0, 1)] },
        Placement::Hash { owners: vec![CoreId::new(0, 0), CoreId::new(0, 1)] },
    ];
    Plan::from_placements(strategy, spec, Topology::uniform(1, 2, 1 << 30), placements)
}

/// A coordinator; with `worker`, one worker of two cores, a deployed plan and some queries.
async fn setup(worker: bool) -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let cluster = dir.path().join("cluster");
    embtune_transport::certs::init_cluster(&cluster).unwrap();
    let c =
        Coordinator::start(CoordinatorConfig::new("127.0.0.1:0".parse().unwrap(), cluster.clone(), dir.path().into()))
            .await
            .unwrap();
    let spec = small_spec();
    if worker {
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
        let cfg = embtune_worker::server::WorkerConfig {
            listen: "127.0.0.1:0".parse().unwrap(),
            advertise: None,
            coordinator: c.local_addr(),
            cluster: cluster.clone(),
            cpus: vec![0, 1 % cpus],
            memory_limit: 1 << 30,
            name: "w-test".into(),
            huge_pages: false,
            calibrate: false,
            gpu: None,
            traffic_sample: embtune_worker::server::DEFAULT_TRAFFIC_SAMPLE,
            isa: None,
        };
        tokio::spawn(async move {
            if let Err(e) = embtune_worker::server::run(cfg).await {
                panic!("the worker failed: {e}");
            }
        });
        let t0 = Instant::now();
        while !c.status().workers.iter().any(|w| w.healthy) {
            assert!(t0.elapsed() < Duration::from_secs(30), "the worker never came up");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        c.deploy(spec.clone(), mixed_plan(&spec, "test")).await.expect("deploying");
        let g = BatchGenerator::new(&spec).unwrap();
        for b in g.pool(0, 40) {
            // Relayed through the coordinator, as a thin client's query would be.
            let head = embtune_protocol::wire::QueryHead {
                spec_digest: spec.digest(),
                batch_size: b.batch_size,
                num_tables: b.num_tables,
                offsets: b.offsets.len() as u32,
                ids: b.ids.len() as u32,
            };
            let mut body = b.ids.clone();
            body.extend_from_slice(&b.offsets);
            c.query(head, body).await.expect("a query");
        }
        // The workers' counters come with their heartbeats.
        let t0 = Instant::now();
        while !c.status().workers.iter().all(|w| w.core_counters.iter().map(|k| k.tasks).sum::<u64>() > 0) {
            assert!(t0.elapsed() < Duration::from_secs(10), "no heartbeat with the cores' counters");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    Setup { c, _dir: dir, spec }
}

/// A finished job of five baselines and three search trials (one failed), and its best record.
fn put_job(c: &Coordinator, spec: &ModelSpec, id: &str, scale: f64) -> Job {
    let values = [100.0, 150.0, 120.0, 90.0, 140.0, 180.0, f64::NAN, 210.0];
    let names = ["round-robin", "all-replicate", "all-shard", "size-threshold", "greedy-cost"];
    let cluster = ClusterDesc { workers: Topology::uniform(1, 2, 1 << 30).workers, cpu_model: "test cpu".into() };
    let config = JobConfig { trials: 3, ..Default::default() };
    let created_ms = 1_700_000_000_000 + (scale * 1000.0) as u64;
    let mut job = Job {
        status: JobStatus::Done,
        updated_ms: 1_700_000_100_000,
        best: Some((7, 210.0 * scale)),
        model_error: Some(0.12),
        elapsed_s: 42.0,
        ..Job::new(id.into(), "synthetic@test".into(), spec.clone(), cluster, config, created_ms)
    };
    for (n, v) in values.iter().enumerate() {
        let kind = if n < 5 { TrialKind::Baseline(names[n].into()) } else { TrialKind::Search };
        let measured = v.is_finite().then(|| Measured {
            value: v * scale,
            rounds: vec![v * scale; 3],
            ci: 0.02,
            batches_per_s: v * scale,
            mean_us: 800.0,
            p50_us: 700.0,
            p99_us: 1500.0,
            errors: 0,
        });
        if let TrialKind::Baseline(name) = &kind {
            job.baselines.insert(name.clone(), v * scale);
        }
        let t = Trial {
            job: id.into(),
            n: n as u32,
            kind,
            plan: mixed_plan(spec, if n < 5 { names[n.min(4)] } else { "tuned" }),
            predicted: 130.0 * scale,
            failure: measured.is_none().then(|| "deployment failed: test".to_string()),
            measured,
            started_ms: 1_700_000_000_000 + n as u64 * 1000,
            ended_ms: 1_700_000_000_000 + n as u64 * 1000 + 900,
            planning_ms: 0,
        };
        c.store().add_trial(&t).unwrap();
    }
    c.store().put_job(&job).unwrap();
    let rec = BestRecord {
        dataset: job.dataset.clone(),
        cluster: job.cluster.key(),
        job: id.into(),
        trial: 7,
        value: 210.0 * scale,
    };
    c.store().offer_best(&rec, |a, b| a > b).unwrap();
    job
}

// ---- the exposition format --------------------------------------------------------------------

/// Sample name (with labels) to value, and every series name the families declare.
fn parse_metrics(text: &str) -> (HashMap<String, f64>, BTreeSet<String>) {
    let mut samples = HashMap::new();
    let mut names = BTreeSet::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').unwrap();
            let series: &[&str] = match kind {
                "counter" => &["_total", "_created"],
                "histogram" => &["_bucket", "_sum", "_count", "_created"],
                "info" => &["_info"],
                "gauge" | "unknown" => &[""],
                other => panic!("unexpected metric type {other}"),
            };
            for s in series {
                names.insert(format!("{name}{s}"));
            }
            continue;
        }
        if line.starts_with('#') || line.is_empty() {
            continue;
        }
        let (series, value) = line.rsplit_once(' ').unwrap();
        let v: f64 = match value {
            "+Inf" => f64::INFINITY,
            v => v.parse().unwrap_or_else(|_| panic!("bad value in `{line}`")),
        };
        let name = series.split('{').next().unwrap();
        assert!(names.contains(name), "sample `{name}` has no # TYPE line");
        samples.insert(series.to_string(), v);
    }
    (samples, names)
}

async fn scrape(addr: SocketAddr) -> (HashMap<String, f64>, BTreeSet<String>, String) {
    let r = get(addr, "/metrics").await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(r.header("content-type").starts_with("application/openmetrics-text"), "{}", r.header("content-type"));
    assert!(r.body.trim_end().ends_with("# EOF"));
    let (s, n) = parse_metrics(&r.body);
    (s, n, r.body)
}

// ---- the tests ----------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_endpoint_serves_the_cluster_and_its_jobs() {
    let s = setup(true).await;
    let job = put_job(&s.c, &s.spec, "job-a", 1.0);
    put_job(&s.c, &s.spec, "job-b", 0.5);
    let addr = serve(s.c.clone(), "127.0.0.1:0".parse().unwrap(), None).await.unwrap();

    // The page and its assets, embedded.
    let r = get(addr, "/healthz").await;
    assert_eq!((r.status, r.body.as_str()), (200, "ok"));
    let r = get(addr, "/").await;
    assert_eq!(r.status, 200);
    assert!(r.header("content-type").starts_with("text/html"));
    assert!(r.body.contains(r#"<script src="/assets/app.js"></script>"#), "{}", r.body);
    assert!(!r.body.contains("{{Q}}"));
    assert!(r.header("content-security-policy").contains("default-src 'self'"));
    for (asset, ct, needle) in [
        ("app.js", "text/javascript", "pageCluster"),
        ("charts.js", "text/javascript", "trial-point"),
        ("style.css", "text/css", ".heat-cell"),
        ("favicon.svg", "image/svg+xml", "<svg"),
    ] {
        let r = get(addr, &format!("/assets/{asset}")).await;
        assert_eq!(r.status, 200, "{asset}");
        assert!(r.header("content-type").starts_with(ct), "{asset}: {}", r.header("content-type"));
        assert!(r.body.contains(needle), "{asset}");
    }
    assert_eq!(get(addr, "/assets/nothing.js").await.status, 404);
    let r = get(addr, "/api/nothing").await;
    assert_eq!(r.status, 404);
    assert!(r.json()["error"].as_str().unwrap().contains("/api/nothing"));
    let index = get_json(addr, "/api").await;
    assert!(index["endpoints"].as_array().unwrap().iter().any(|e| e == "/api/latency"));

    // /api/cluster: the worker, live figures, and busy fractions from the second call on.
    let c1 = get_json(addr, "/api/cluster").await;
    let w = &c1["workers"][0];
    assert_eq!(c1["workers"].as_array().unwrap().len(), 1);
    assert_eq!(w["healthy"], true);
    assert_eq!(w["name"], "w-test");
    assert_eq!(w["cores"], 2);
    assert!(w["bytes_held"].as_u64().unwrap() > 0, "{w}");
    assert!(w["memory_used_fraction"].as_f64().unwrap() > 0.0);
    assert_eq!(c1["model"], s.spec.name.as_str());
    assert_eq!(c1["workers_healthy"], 1);
    assert!(c1["queries"].as_u64().unwrap() >= 40);
    assert_eq!(c1["stats"]["buckets"].as_array().unwrap().len(), 16);
    assert!(c1["live"]["qps"].as_f64().unwrap() > 0.0, "{}", c1["live"]);
    assert!(c1["live"]["p50_us"].as_f64().unwrap() > 0.0);
    assert!(c1["interval_s"].is_null(), "the first call has no previous sample");
    assert_eq!(c1["workers"][0]["load"][0]["busy_fraction"], Value::Null);
    assert!(c1["workers"][0]["load"][0]["tasks"].as_u64().unwrap() > 0);
    // /api/latency: the window's histogram (asked early: the window is 10 s).
    let l = get_json(addr, "/api/latency").await;
    assert_eq!(l["model"], s.spec.name.as_str());
    assert_eq!(l["histogram"].as_array().unwrap().len(), 16);
    let in_window: u64 = l["histogram"].as_array().unwrap().iter().map(|b| b["count"].as_u64().unwrap()).sum();
    assert_eq!(in_window, l["count"].as_u64().unwrap());
    assert!(in_window >= 40, "{l}");
    assert!(l["p99_us"].as_f64().unwrap() >= l["p50_us"].as_f64().unwrap());
    assert_eq!(l["cumulative"]["buckets"].as_array().unwrap().len(), 16);

    tokio::time::sleep(Duration::from_millis(1200)).await;
    let c2 = get_json(addr, "/api/cluster").await;
    let interval = c2["interval_s"].as_f64().expect("rates on the second call");
    assert!(interval >= 0.9, "{interval}");
    let load = c2["workers"][0]["load"].as_array().unwrap();
    assert_eq!(load.len(), 2, "{load:?}");
    for core in load {
        let f = core["busy_fraction"].as_f64().expect("a busy fraction");
        assert!((0.0..=1.0).contains(&f), "{f}");
        assert!(core["busy_ns"].as_u64().unwrap() > 0, "the queries kept the core busy: {core}");
    }
    assert!(c2["live"]["lookups_per_s"].is_number());

    // /api/deployment: the plan and its heat map.
    let d = get_json(addr, "/api/deployment").await;
    assert_eq!(d["deployed"], true);
    assert_eq!(d["spec"]["tables"].as_array().unwrap().len(), 4);
    assert_eq!(d["plan"]["strategy"], "test");
    assert_eq!(d["slots"], serde_json::json!([0]));
    let heat = &d["heatmap"];
    assert_eq!(heat["profiled"], true);
    assert_eq!(heat["cores"].as_array().unwrap().len(), 2);
    assert_eq!(heat["cores"][1]["label"], "w0c1");
    assert_eq!(heat["cores"][1]["worker_id"], 0);
    let modes: Vec<&str> = heat["tables"].as_array().unwrap().iter().map(|t| t["mode"].as_str().unwrap()).collect();
    assert_eq!(modes, ["replicated", "owned", "sharded", "sharded"]);
    let matrix = heat["matrix"].as_array().unwrap();
    assert_eq!(matrix.len(), 4);
    for row in matrix {
        let sum: f64 = row.as_array().unwrap().iter().map(|x| x.as_f64().unwrap()).sum();
        assert!((sum - 1.0).abs() < 1e-9, "{row}");
    }
    assert_eq!(matrix[0], serde_json::json!([0.5, 0.5]));
    assert_eq!(matrix[1], serde_json::json!([0.0, 1.0]));
    // Table 2's first shard (the first quarter of its rows) takes the share of look-ups the
    // model's access profile counts there.
    let profile = embtune_workloads::profile::profile_generator(&BatchGenerator::new(&s.spec).unwrap());
    let t2 = &profile.tables[2];
    let quarter = s.spec.tables[2].rows / 4;
    let low: u64 = t2.hot.iter().filter(|(id, _)| (*id as u64) < quarter).map(|(_, c)| *c as u64).sum();
    let want = low as f64 / t2.lookups as f64;
    assert!((matrix[2][0].as_f64().unwrap() - want).abs() < 1e-9, "{} against {want}", matrix[2]);
    assert!(want > 0.0 && want < 1.0);

    // /api/jobs: the CLI's `results list --json` fields and the speed-up, newest first.
    let jobs = get_json(addr, "/api/jobs").await;
    let jobs = jobs.as_array().unwrap();
    assert_eq!(jobs.len(), 2);
    let a = jobs.iter().find(|j| j["job"] == "job-a").unwrap();
    assert_eq!(jobs[0]["job"], "job-a", "newest first");
    for f in ["job", "preset", "status", "trials", "objective", "best", "cluster", "created_ms"] {
        assert!(a.get(f).is_some(), "missing {f} in {a}");
    }
    assert_eq!(a["trials"], 8);
    assert_eq!(a["measured_trials"], 7);
    assert_eq!(a["failed_trials"], 1);
    // The job's 3 trials after every baseline it measures (a new baseline changes the count).
    assert_eq!(
        a["target_trials"],
        3 + embtune_tuner::job::baseline_count(&JobConfig { trials: 3, ..Default::default() })
    );
    assert_eq!(a["status"], "done");
    assert_eq!(a["running"], false);
    assert_eq!(a["best"], 210.0);
    assert_eq!(a["best_baseline"]["name"], "all-replicate");
    assert!((a["speedup"].as_f64().unwrap() - 1.4).abs() < 1e-9);
    assert_eq!(a["cluster"], job.cluster.key().as_str());

    // /api/jobs/{id}: trials, history, baselines, predicted vs measured, model error.
    let j = get_json(addr, "/api/jobs/job-a").await;
    assert_eq!(j["job"], "job-a");
    assert_eq!(j["trials"].as_array().unwrap().len(), 8);
    assert_eq!(j["trials_count"], 8);
    assert_eq!(j["trials"][7]["measured"]["value"], 210.0);
    assert_eq!(j["points"].as_array().unwrap().len(), 7, "one point per measured trial");
    assert_eq!(j["curve"], serde_json::json!([[5, 180.0], [6, 180.0], [7, 210.0]]));
    assert_eq!(j["baselines"].as_object().unwrap().len(), 5);
    assert_eq!(j["predicted_vs_measured"].as_array().unwrap().len(), 7);
    assert_eq!(j["model_error"], 0.12);
    assert_eq!(j["best_trial"], 7);
    assert!(j["best_plan"].as_str().unwrap().starts_with("tuned:"));
    assert_eq!(j["speedup_vs"]["round-robin"], 2.1);
    let rows = j["trial_rows"].as_array().unwrap();
    assert_eq!(rows[6]["measured"], Value::Null);
    assert_eq!(rows[6]["failure"], "deployment failed: test");
    assert_eq!(rows[7]["best"], true);
    assert_eq!(get(addr, "/api/jobs/no-such-job").await.status, 404);

    // /api/jobs/{id}/trials/{n}/plan: the plan and its heat map.
    let p = get_json(addr, "/api/jobs/job-a/trials/7/plan").await;
    assert_eq!(p["trial"], 7);
    assert_eq!(p["kind"], "search");
    assert_eq!(p["best"], true);
    assert_eq!(p["measured"]["value"], 210.0);
    assert_eq!(p["plan"]["strategy"], "tuned");
    assert_eq!(p["heatmap"]["tables"].as_array().unwrap().len(), 4);
    assert_eq!(p["heatmap"]["matrix"][1], serde_json::json!([0.0, 1.0]));
    assert_eq!(p["heatmap"]["cores"][0]["worker_id"], Value::Null);
    let r = get(addr, "/api/jobs/job-a/trials/99/plan").await;
    assert_eq!(r.status, 404);
    assert!(r.json()["error"].as_str().unwrap().contains("no trial 99"));

    // /api/best: one record per dataset and cluster (job-b's is worse), with its plan.
    let best = get_json(addr, "/api/best").await;
    let best = best.as_array().unwrap();
    assert_eq!(best.len(), 1, "{best:?}");
    assert_eq!(best[0]["job"], "job-a");
    assert_eq!(best[0]["trial"], 7);
    assert_eq!(best[0]["best"], 210.0);
    assert_eq!(best[0]["preset"], "synthetic@test");
    assert_eq!(best[0]["plan"]["strategy"], "tuned");
    let filtered = get_json(addr, "/api/best?dataset=synthetic%40test").await;
    assert_eq!(filtered.as_array().unwrap().len(), 1);
    assert_eq!(get_json(addr, "/api/best?dataset=other").await, serde_json::json!([]));

    // /api/compare: the CLI's `results compare --json` fields.
    let cmp = get_json(addr, "/api/compare?a=job-a&b=job-b").await;
    assert_eq!(cmp["a"]["job"], "job-a");
    assert_eq!(cmp["b"]["best"], 105.0);
    assert_eq!(cmp["a"]["trials"], 3, "the search trials, as `results compare --json`");
    assert_eq!(cmp["a"]["trials_total"], 8);
    assert_eq!(cmp["a_curve"], j["curve"]);
    assert_eq!(cmp["b_points"].as_array().unwrap().len(), 7);
    assert_eq!(cmp["same_objective"], true);
    assert_eq!(get(addr, "/api/compare?a=job-a").await.status, 400);
    assert_eq!(get(addr, "/api/compare?a=job-a&b=nope").await.status, 404);

    // /metrics: the coordinator's counters, the latency histogram, cores, workers, tuning.
    let (m, _, text) = scrape(addr).await;
    let q = s.c.query_stats();
    assert_eq!(m["embtune_queries_total"], q.queries as f64, "{text}");
    assert_eq!(m["embtune_lookups_total"], q.lookups as f64);
    assert_eq!(m["embtune_query_errors_total"], 0.0);
    assert_eq!(m["embtune_query_latency_seconds_count"], q.queries as f64);
    assert_eq!(m[r#"embtune_query_latency_seconds_bucket{le="+Inf"}"#], q.queries as f64);
    assert_eq!(m[r#"embtune_query_latency_seconds_bucket{le="0.0016"}"#], q.buckets[5].1 as f64, "{text}");
    assert!((m["embtune_query_latency_seconds_sum"] - q.latency_sum_us as f64 / 1e6).abs() < 1e-9);
    assert!(m[r#"embtune_core_busy_seconds_total{worker="0",core="0"}"#] > 0.0, "{text}");
    assert!(m.contains_key(r#"embtune_core_lookups_total{worker="0",core="1"}"#));
    assert_eq!(m[r#"embtune_worker_up{worker="0"}"#], 1.0);
    assert_eq!(m[r#"embtune_worker_cores{worker="0"}"#], 2.0);
    assert!(m.contains_key(r#"embtune_worker_queue{worker="0"}"#));
    assert!(text.contains(r#"embtune_worker_info{worker="0",name="w-test",addr="127.0.0.1:"#), "{text}");
    assert_eq!(m["embtune_workers_healthy"], 1.0);
    assert_eq!(m[r#"embtune_plan_tables{mode="sharded"}"#], 2.0);
    assert_eq!(m["embtune_tune_jobs_running"], 0.0);
    let jl = r#"{job="job-a",dataset="synthetic@test",objective="throughput"}"#;
    assert_eq!(m[&format!("embtune_tune_trials{jl}")], 8.0);
    assert_eq!(m[&format!("embtune_tune_trials_failed{jl}")], 1.0);
    let target = 3 + embtune_tuner::job::baseline_count(&JobConfig { trials: 3, ..Default::default() });
    assert_eq!(m[&format!("embtune_tune_trials_target{jl}")], target as f64);
    assert_eq!(m[&format!("embtune_tune_best{jl}")], 210.0);
    assert_eq!(m[&format!("embtune_tune_best_baseline{jl}")], 150.0);
    assert!((m[&format!("embtune_tune_speedup{jl}")] - 1.4).abs() < 1e-9);
    assert_eq!(m[&format!("embtune_tune_running{jl}")], 0.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_token_is_required_for_pages_api_and_metrics() {
    let s = setup(false).await;
    let token = "s3cret/+ token";
    let addr = serve(s.c.clone(), "127.0.0.1:0".parse().unwrap(), Some(token.into())).await.unwrap();
    let q = "token=s3cret%2F%2B%20token";
    for path in ["/", "/assets/app.js", "/api/cluster", "/api/jobs", "/api/latency", "/metrics", "/api/nothing"] {
        let r = get(addr, path).await;
        assert_eq!(r.status, 401, "{path} without the token");
        assert!(r.header("www-authenticate").starts_with("Bearer"), "{path}");
        let r = get_with(addr, path, &[("Authorization", "Bearer wrong")]).await;
        assert_eq!(r.status, 401, "{path} with a wrong token");
        let sep = if path.contains('?') { '&' } else { '?' };
        assert_eq!(get(addr, &format!("{path}{sep}token=wrong")).await.status, 401, "{path}");
    }
    // With it: the page (which passes it on to its assets), the API and the metrics.
    let r = get(addr, &format!("/?{q}")).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(r.body.contains(&format!(r#"<script src="/assets/app.js?{q}"></script>"#)), "{}", r.body);
    assert_eq!(get(addr, &format!("/assets/app.js?{q}")).await.status, 200);
    let auth = format!("Bearer {token}");
    let r = get_with(addr, "/api/cluster", &[("Authorization", &auth)]).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["workers"], serde_json::json!([]));
    assert_eq!(get(addr, &format!("/api/jobs?{q}")).await.json(), serde_json::json!([]));
    let r = get_with(addr, "/metrics", &[("Authorization", &auth)]).await;
    assert_eq!(r.status, 200);
    assert!(r.body.contains("embtune_queries_total 0"), "{}", r.body);
    assert_eq!(get(addr, &format!("/metrics?{q}")).await.status, 200);
    // The health check stays open, for probes; it tells nothing.
    assert_eq!(get(addr, "/healthz").await.body, "ok");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_non_loopback_address_needs_a_token() {
    let s = setup(false).await;
    let any: SocketAddr = "0.0.0.0:0".parse().unwrap();
    match serve(s.c.clone(), any, None).await {
        Err(HttpError::NoToken(a)) => assert_eq!(a, any),
        other => panic!("served on {any} without a token: {other:?}"),
    }
    assert!(matches!(serve(s.c.clone(), any, Some(String::new())).await, Err(HttpError::EmptyToken)));
    // With a token it serves, and answers 401 to a request without it.
    let bound = serve(s.c.clone(), any, Some("tok".into())).await.unwrap();
    let local: SocketAddr = format!("127.0.0.1:{}", bound.port()).parse().unwrap();
    assert_eq!(get(local, "/api/cluster").await.status, 401);
    assert_eq!(get(local, "/").await.status, 401);
    assert_eq!(get_with(local, "/api/cluster", &[("Authorization", "Bearer tok")]).await.status, 200);
}

// ---- Grafana ------------------------------------------------------------------------------------

/// PromQL functions and keywords the boards may use.
const PROMQL_WORDS: &[&str] = &[
    "sum",
    "avg",
    "min",
    "max",
    "count",
    "topk",
    "bottomk",
    "quantile",
    "rate",
    "irate",
    "increase",
    "delta",
    "histogram_quantile",
    "clamp_min",
    "clamp_max",
    "label_values",
    "label_replace",
    "abs",
    "round",
    "vector",
    "time",
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
    "bool",
    "and",
    "or",
    "unless",
    "offset",
    "max_over_time",
    "min_over_time",
    "avg_over_time",
    "last_over_time",
    "changes",
    "resets",
    "deriv",
];

/// The metric names a PromQL expression reads: identifiers outside label matchers, ranges,
/// strings and grouping clauses that are not functions or keywords.
fn metric_names(expr: &str) -> Vec<String> {
    let b = expr.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    let mut prev_word = String::new();
    while i < b.len() {
        let c = b[i] as char;
        match c {
            '{' | '[' | '"' | '\'' | '`' => {
                let close = match c {
                    '{' => '}',
                    '[' => ']',
                    q => q,
                };
                let end = expr[i + 1..].find(close).map_or(b.len(), |j| i + 1 + j);
                i = end + 1;
            }
            '(' if matches!(
                prev_word.as_str(),
                "by" | "without" | "on" | "ignoring" | "group_left" | "group_right"
            ) =>
            {
                let end = expr[i..].find(')').map_or(b.len(), |j| i + j);
                i = end + 1;
                prev_word.clear();
            }
            '$' => {
                // A Grafana variable: $name or ${name}.
                i += 1;
                if i < b.len() && b[i] == b'{' {
                    i = expr[i..].find('}').map_or(b.len(), |j| i + j + 1);
                } else {
                    while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'_') {
                        i += 1;
                    }
                }
            }
            c if c.is_ascii_digit() || (c == '.' && i + 1 < b.len() && b[i + 1].is_ascii_digit()) => {
                while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'.') {
                    i += 1;
                }
            }
            c if c.is_ascii_alphabetic() || c == '_' || c == ':' => {
                let start = i;
                while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'_' || b[i] == b':') {
                    i += 1;
                }
                let word = &expr[start..i];
                let mut j = i;
                while j < b.len() && b[j] == b' ' {
                    j += 1;
                }
                let call = j < b.len() && b[j] == b'(';
                if call || PROMQL_WORDS.contains(&word) {
                    assert!(PROMQL_WORDS.contains(&word), "unknown PromQL function `{word}` in `{expr}`");
                } else {
                    out.push(word.to_string());
                }
                prev_word = word.to_string();
            }
            _ => i += 1,
        }
    }
    out
}

fn collect_exprs(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::Object(o) => {
            for (k, x) in o {
                match (k.as_str(), x) {
                    ("expr", Value::String(e)) => out.push(e.clone()),
                    ("definition", Value::String(e)) if e.contains("label_values") => out.push(e.clone()),
                    _ => collect_exprs(x, out),
                }
            }
        }
        Value::Array(a) => a.iter().for_each(|x| collect_exprs(x, out)),
        _ => {}
    }
}

fn datasources(v: &Value, out: &mut Vec<Value>) {
    match v {
        Value::Object(o) => {
            for (k, x) in o {
                if k == "datasource" {
                    out.push(x.clone());
                }
                datasources(x, out);
            }
        }
        Value::Array(a) => a.iter().for_each(|x| datasources(x, out)),
        _ => {}
    }
}

#[test]
fn promql_names_are_found() {
    let e = r#"histogram_quantile(0.99, sum by (le) (rate(embtune_query_latency_seconds_bucket{job=~"$job"}[$__rate_interval]))) / on(worker) group_left(name) embtune_worker_info"#;
    assert_eq!(metric_names(e), ["embtune_query_latency_seconds_bucket", "embtune_worker_info"]);
    assert_eq!(metric_names("label_values(embtune_tune_trials, job)"), ["embtune_tune_trials", "job"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn grafana_boards_parse_and_use_only_exported_metrics() {
    let s = setup(true).await;
    put_job(&s.c, &s.spec, "job-a", 1.0);
    let addr = serve(s.c.clone(), "127.0.0.1:0".parse().unwrap(), None).await.unwrap();
    let (samples, names, text) = scrape(addr).await;
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("grafana");
    let mut boards = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|e| e != "json") {
            continue;
        }
        boards += 1;
        let board: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap())
            .unwrap_or_else(|e| panic!("{} does not parse: {e}", path.display()));
        let file = path.file_name().unwrap().to_string_lossy().into_owned();
        assert!(board["title"].as_str().is_some_and(|t| t.starts_with("embtune")), "{file}");
        assert!(board["uid"].as_str().is_some_and(|u| !u.is_empty()), "{file}");
        assert!(board.get("id").is_none_or(Value::is_null), "{file}: an id would clash on import");
        // Importable as it is: a datasource variable, and every panel and query on it.
        let vars = board["templating"]["list"].as_array().unwrap();
        let ds =
            vars.iter().find(|v| v["type"] == "datasource").unwrap_or_else(|| panic!("{file}: no datasource variable"));
        assert_eq!(ds["query"], "prometheus", "{file}");
        let var = format!("${{{}}}", ds["name"].as_str().unwrap());
        let mut dss = Vec::new();
        datasources(&board, &mut dss);
        assert!(!dss.is_empty());
        for d in &dss {
            assert_eq!(d["uid"], var.as_str(), "{file}: a datasource not on the variable: {d}");
        }
        let panels = board["panels"].as_array().unwrap();
        assert!(panels.len() >= 4, "{file}");
        let mut exprs = Vec::new();
        collect_exprs(&board, &mut exprs);
        assert!(exprs.len() >= panels.len() / 2, "{file}: {exprs:?}");
        for e in &exprs {
            let mut found = metric_names(e);
            if e.contains("label_values") {
                found.truncate(1); // label_values(metric, label): the label is no metric
            }
            assert!(!found.is_empty(), "{file}: no metric in `{e}`");
            for name in found {
                assert!(names.contains(&name), "{file}: `{name}` (in `{e}`) is not exported by /metrics:\n{text}");
            }
        }
    }
    assert_eq!(boards, 2, "an overview board and a tuning board");
    assert!(!samples.is_empty());
}
