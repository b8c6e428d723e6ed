//! Tuning as a user runs it, with real processes: the CLI contract, the store surviving
//! `kill -9` of the coordinator, a worker lost during a job, and impossible constraints.

mod common;

use std::time::Duration;

use common::{Cluster, exe, wait_until};
use embtune_client::CoordinatorClient;
use embtune_protocol::tuning::{JobConfig, JobStatus, Objective};
use embtune_transport::TransportError;
use embtune_workloads::{Preset, PresetOptions};

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap()
}

fn json(out: &std::process::Output) -> serde_json::Value {
    assert!(
        out.status.success(),
        "embtune failed: {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout)
    );
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&out.stdout)))
}

/// A quick job: short rounds, few of them.
fn quick(trials: u32) -> JobConfig {
    JobConfig {
        trials,
        round_s: 0.2,
        max_rounds: 2,
        concurrency: 4,
        objective: Objective::Throughput,
        ..Default::default()
    }
}

#[test]
fn tune_local_and_results_follow_the_contract() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let d = data.to_str().unwrap();
    let out = std::process::Command::new(exe())
        .args([
            "tune",
            "--local",
            "--workers",
            "2",
            "--cores-per-worker",
            "1",
            "--preset",
            "avazu",
            "--scale",
            "0.002",
            "--trials",
            "3",
            "--round-secs",
            "0.2",
            "--max-rounds",
            "2",
            "--data-dir",
            d,
            "--json",
        ])
        .output()
        .unwrap();
    let r = json(&out);
    let job = r["job"].as_str().unwrap().to_string();
    assert_eq!(r["trials"], 3);
    assert!(r["best"].as_f64().unwrap() > 0.0);
    let baselines = r["baselines"].as_object().unwrap();
    // The speed-ups come from the head-to-head: the best plan and every baseline measured again
    // in alternating rounds (noise may put a baseline ahead in so short a job, so no order is
    // asserted, only that every baseline was measured beside the best plan).
    let h = &r["head_to_head"];
    assert_eq!(h["rounds"], 3, "{r}");
    assert!(h["best"].as_f64().unwrap() > 0.0, "{r}");
    // Clients may hold tables (256 MiB by default), so the client-side baseline is measured too.
    for b in embtune_tuner::Strategy::ALL.map(|s| s.name()) {
        assert!(baselines[b].as_f64().unwrap() > 0.0, "baseline {b}: {r}");
        assert!(h["baselines"][b].as_f64().unwrap() > 0.0, "head-to-head {b}: {r}");
        let x = r["speedup_vs"][b].as_f64().unwrap();
        assert_eq!(x, h["speedup_vs"][b].as_f64().unwrap(), "{b}: {r}");
        assert!(x.is_finite() && x > 0.0, "{b}: {r}");
    }
    // `best` and `baselines` come from the same rounds as the speed-ups.
    assert_eq!(r["best"], h["best"], "{r}");
    assert_eq!(r["baselines"], h["baselines"], "{r}");
    // One set of numbers: the best is never below a reported baseline while the speed-ups are
    // at least 1 (a tie is reported as a tie, with the baseline kept).
    let best_value = r["best"].as_f64().unwrap();
    for (b, v) in baselines {
        assert!(best_value >= h["baselines"][b].as_f64().unwrap(), "best below {b} ({v}): {r}");
        assert!(r["speedup_vs"][b].as_f64().unwrap() >= 1.0, "{b}: {r}");
    }
    assert!(r["tie"].is_boolean() && r["verdict"].is_string(), "{r}");
    assert!(r["figures_source"].as_str().unwrap().contains("3 alternating rounds"), "{r}");
    assert_eq!(r["speedup"], r["speedup_vs"][r["best_baseline"]["name"].as_str().unwrap()], "{r}");
    // The cluster's ceiling was measured on the free-engine shape after the head-to-head.
    let ceiling = r["ceiling"].as_f64().expect("a ceiling");
    let share = r["ceiling_share"].as_f64().expect("a ceiling share");
    assert!(ceiling > 0.0 && (share - r["best"].as_f64().unwrap() / ceiling).abs() < 1e-9, "{r}");

    // The cluster is gone; the results are read from the store directly.
    let run = |args: &[&str]| std::process::Command::new(exe()).args(args).output().unwrap();
    let list = json(&run(&["results", "list", "--data-dir", d, "--json"]));
    let l = list.as_array().unwrap();
    assert_eq!(l.len(), 1);
    assert_eq!(l[0]["job"], job.as_str());
    assert_eq!(l[0]["preset"], "avazu@0.002");
    assert_eq!(l[0]["status"], "done");
    // Every baseline (clients may hold tables, so all of them) and the 3 search trials.
    let trials = embtune_tuner::Strategy::ALL.len() + 3;
    assert_eq!(l[0]["trials"], trials);
    let show = json(&run(&["results", "show", &job, "--data-dir", d, "--json"]));
    assert_eq!(show["trials"].as_array().unwrap().len(), trials);
    let best = json(&run(&["results", "best", "--preset", "avazu@0.002", "--data-dir", d, "--json"]));
    assert_eq!(best["job"], job.as_str());
    // A preset with --scale names the same dataset; without the scale, the match is listed.
    let scaled = json(&run(&["results", "best", "--preset", "avazu", "--scale", "0.002", "--data-dir", d, "--json"]));
    assert_eq!(scaled["job"], job.as_str());
    let near = run(&["results", "best", "--preset", "avazu", "--data-dir", d]);
    assert!(!near.status.success());
    let err = String::from_utf8_lossy(&near.stderr);
    assert!(err.contains("avazu@0.002: embtune results best --preset avazu --scale 0.002"), "{err}");
    // The trials table shows every trial's knobs and times.
    let text = run(&["results", "show", &job, "--data-dir", d]);
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(text.contains("sub-batch") && text.contains("in flight") && text.contains("start"), "{text}");
    assert!(text.contains("verdict: "), "{text}");
    // Piped into a reader that closes at once, every command exits quietly.
    for cmd in [format!("results show {job}"), format!("results export {job} --format csv"), "results list".into()] {
        let out = std::process::Command::new("bash")
            .arg("-c")
            .arg(format!("set -o pipefail; '{}' {cmd} --data-dir '{d}' | true", exe()))
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success() && !err.contains("panicked") && !err.contains("Broken pipe"), "{cmd}: {err}");
    }
    // `plan explain --job` headlines the figure the tune table predicted for the trial.
    let trials_shown = show["trials"].as_array().unwrap();
    let trial = &trials_shown[trials_shown.len() - 1];
    let n = trial["n"].as_u64().unwrap().to_string();
    let predicted = trial["predicted"].as_f64().unwrap();
    let explain = run(&["plan", "explain", "--job", &job, "--trial", &n, "--data-dir", d]);
    let explain = String::from_utf8_lossy(&explain.stdout);
    let figure = if predicted >= 1000.0 { format!("{predicted:.0}") } else { format!("{predicted:.1}") };
    assert!(explain.contains(&format!("predicted {figure} batches/s by the job's cost model")), "{figure}: {explain}");
    // `plan show` prints row counts as integers.
    let shown = run(&["plan", "show", "--job", &job, "--data-dir", d]);
    let shown = String::from_utf8_lossy(&shown.stdout);
    assert!(shown.contains("share of time"), "{shown}");
    let spec = Preset::Avazu.spec(&PresetOptions { scale: Some(0.002), ..Default::default() }).unwrap();
    let commas = |n: u64| {
        let s = n.to_string();
        let mut out = String::new();
        for (i, c) in s.chars().enumerate() {
            if i > 0 && (s.len() - i).is_multiple_of(3) {
                out.push(',');
            }
            out.push(c);
        }
        out
    };
    for t in &spec.tables {
        let line = shown
            .lines()
            .find(|l| l.contains(&format!(" {} ", t.name)))
            .unwrap_or_else(|| panic!("{}: {shown}", t.name));
        assert!(line.contains(&format!(" {} ", commas(t.rows))), "rows of {} as an integer: {line}", t.name);
    }
    assert!(best["plan"]["tables"].as_array().unwrap().len() == 21);
    let csv = run(&["results", "export", &job, "--format", "csv", "--data-dir", d]);
    let csv = String::from_utf8_lossy(&csv.stdout);
    assert_eq!(csv.lines().count(), trials + 1, "a header and a line per trial");
    assert!(
        csv.starts_with("number,value,datetime_start,datetime_complete,duration_s,state,kind,params_sub_batch,"),
        "{csv}"
    );

    // The best plan runs locally through `bench --plan`.
    let plan = dir.path().join("plan.json");
    std::fs::write(&plan, serde_json::to_string(&best["plan"]).unwrap()).unwrap();
    let b = json(&run(&[
        "bench",
        "--preset",
        "avazu",
        "--scale",
        "0.002",
        "--plan",
        plan.to_str().unwrap(),
        "--cores",
        "2",
        "--duration",
        "0.2",
        "--warmup",
        "0",
        "--verify",
        "--json",
    ]));
    assert_eq!(b["verified"], true);
}

/// `kill -9` of the coordinator in a loop: after every kill the store opens, holds every trial
/// the API had reported and every trial committed before, and `results show` reads it at once
/// (not waiting on the dead coordinator); the job resumes each time. Three cycles by default;
/// `EMBTUNE_KILL9_CYCLES=100` is the long mode (RELIABILITY.md), whose kills come at varied
/// moments (most without waiting for a new trial) on a job too long to finish.
#[test]
fn kill_9_of_the_coordinator_loses_no_committed_trial_and_the_job_resumes() {
    let cycles: usize = std::env::var("EMBTUNE_KILL9_CYCLES").ok().and_then(|v| v.parse().ok()).unwrap_or(3);
    let long = cycles > 3;
    let mut c = Cluster::start(2);
    let rt = rt();
    let spec = Preset::Avazu.spec(&PresetOptions { scale: Some(0.002), ..Default::default() }).unwrap();
    let id = rt.block_on(async {
        let client = CoordinatorClient::connect(c.addr, &c.certs).await.unwrap();
        client.wait_for_workers(2, *common::PATIENCE).await.unwrap();
        client.submit_tune("avazu@0.002", &spec, &quick(if long { 1000 } else { 8 })).await.unwrap()
    });
    let data = c.dir.path().join("data");
    let store_dir = data.join("store");
    let mut committed = Vec::new();
    let mut reported = Vec::new();
    for round in 0..cycles {
        // Let it commit a trial or two more (every third cycle in the long mode; the others kill
        // at a varied moment, mid-deployment or mid-measurement), then kill it hard.
        let job = |rt: &tokio::runtime::Runtime| {
            rt.block_on(CoordinatorClient::connect(c.addr, &c.certs)).ok().and_then(|cl| rt.block_on(cl.job(&id)).ok())
        };
        if !long || round % 3 == 0 {
            let want = committed.len() + if long { 1 } else { 2 };
            let got = wait_until(*common::PATIENCE, || {
                job(&rt).is_some_and(|(_, t)| {
                    let ok = t.len() >= want;
                    if ok {
                        reported = t;
                    }
                    ok
                })
            });
            assert!(got.is_some(), "round {round}: no progress: {}", c.log("coordinator"));
        } else {
            let wait_ms = 200 + (round as u64 * 7919) % 2300;
            std::thread::sleep(Duration::from_millis(wait_ms));
            if let Some((_, t)) = job(&rt) {
                reported = t;
            }
        }
        c.coordinator.as_mut().unwrap().kill9();
        // `results show` reads the store at once (its coordinator.json names a dead process).
        let t0 = std::time::Instant::now();
        let show = c.run(&["results", "show", &id, "--data-dir", data.to_str().unwrap(), "--json"]);
        let shown = json(&show);
        assert!(t0.elapsed() < Duration::from_secs(20), "round {round}: results show took {:?}", t0.elapsed());
        assert!(shown["trials"].as_array().unwrap().len() >= reported.len(), "round {round}: {shown}");
        // The store opens cleanly and holds every trial reported or committed before the kill.
        {
            let store = embtune_tuner::store::Store::open(&store_dir).expect("the store opens after kill -9");
            let trials = store.trials(&id).unwrap();
            assert!(
                trials.len() >= committed.len().max(reported.len()),
                "round {round}: trials went from {} (API: {}) to {}",
                committed.len(),
                reported.len(),
                trials.len()
            );
            for (a, b) in committed.iter().zip(&trials) {
                assert_eq!(a, b, "round {round}: a committed trial changed");
            }
            for (a, b) in reported.iter().zip(&trials) {
                assert_eq!(a, b, "round {round}: a trial the API reported changed or was lost");
            }
            committed = trials;
        }
        c.start_coordinator();
    }
    if long {
        eprintln!("{cycles} kill -9 cycles; {} trials committed and kept", committed.len());
        assert!(committed.len() >= cycles / 3, "the job made too little progress across the kills");
        return;
    }
    // The workers re-register with the new coordinator, which resumes the job to the end.
    let done = wait_until(*common::PATIENCE, || {
        rt.block_on(CoordinatorClient::connect(c.addr, &c.certs))
            .ok()
            .and_then(|cl| rt.block_on(cl.job(&id)).ok())
            .is_some_and(|(j, _)| j.status == JobStatus::Done)
    });
    assert!(done.is_some(), "the job did not finish after restarts: {}", c.log("coordinator"));
    let (job, trials) =
        rt.block_on(async { CoordinatorClient::connect(c.addr, &c.certs).await.unwrap().job(&id).await.unwrap() });
    for (a, b) in committed.iter().zip(&trials) {
        assert_eq!(a, b);
    }
    assert_eq!(trials.iter().map(|t| t.n).collect::<Vec<_>>(), (0..trials.len() as u32).collect::<Vec<_>>());
    assert_eq!(
        job.baselines.len(),
        embtune_tuner::Strategy::baselines(job.config.client_memory_bytes).len(),
        "each baseline measured once across the restarts"
    );
}

#[test]
fn a_worker_lost_during_a_job_fails_a_trial_and_the_job_goes_on() {
    let mut c = Cluster::start(2);
    let rt = rt();
    let spec = Preset::Avazu.spec(&PresetOptions { scale: Some(0.002), ..Default::default() }).unwrap();
    let client = rt.block_on(CoordinatorClient::connect(c.addr, &c.certs)).unwrap();
    let id = rt.block_on(async {
        client.wait_for_workers(2, *common::PATIENCE).await.unwrap();
        client.submit_tune("avazu@0.002", &spec, &JobConfig { round_s: 0.5, max_rounds: 4, ..quick(6) }).await.unwrap()
    });
    wait_until(*common::PATIENCE, || rt.block_on(client.job(&id)).is_ok_and(|(_, t)| t.len() >= 2))
        .expect("no progress");
    let (_, mut w) = c.workers.remove(1);
    w.kill9();
    let done =
        wait_until(*common::PATIENCE, || rt.block_on(client.job(&id)).is_ok_and(|(j, _)| j.status == JobStatus::Done));
    assert!(done.is_some(), "{}", c.log("coordinator"));
    let (job, trials) = rt.block_on(client.job(&id)).unwrap();
    let failed: Vec<_> = trials.iter().filter(|t| t.failure.is_some()).collect();
    assert!(!failed.is_empty(), "no trial recorded the lost worker");
    assert!(failed.iter().all(|t| !t.failure.as_deref().unwrap().is_empty()), "failures carry their reason");
    // After the loss, plans are made for the one worker left.
    let last = trials.last().unwrap();
    assert_eq!(last.plan.topology.workers.len(), 1, "the job re-planned around the lost worker");
    // The job kept measuring on what was left. (Not necessarily the last trial: on a loaded
    // machine the survivor may itself miss heartbeats for a moment and fail one.)
    let first_failed = trials.iter().position(|t| t.failure.is_some()).unwrap();
    assert!(
        trials[first_failed..].iter().any(|t| t.measured.is_some() && t.plan.topology.workers.len() == 1),
        "no trial was measured on the worker left: {:?}",
        trials.iter().map(|t| &t.failure).collect::<Vec<_>>()
    );
    assert!(job.best.is_some());
}

#[test]
fn impossible_constraints_are_refused_before_anything_is_deployed() {
    let c = Cluster::start(1);
    let rt = rt();
    rt.block_on(async {
        let client = CoordinatorClient::connect(c.addr, &c.certs).await.unwrap();
        client.wait_for_workers(1, *common::PATIENCE).await.unwrap();
        // The worker may hold 2 GB (see common); one table of 10 GB cannot fit anywhere.
        let spec = Preset::Synthetic
            .spec(&PresetOptions { tables: Some(2), rows: Some(40_000_000), dim: Some(64), ..Default::default() })
            .unwrap();
        let err = client.submit_tune("big", &spec, &quick(2)).await.unwrap_err();
        let TransportError::Remote(e) = err else { panic!("expected a typed error") };
        assert!(
            e.message.contains("no plan can place it") || e.message.contains("cluster's workers hold"),
            "{}",
            e.message
        );
        assert!(client.deployment().await.unwrap().is_none(), "nothing was deployed");
        assert!(client.jobs().await.unwrap().is_empty(), "no job was created");
    });
}
