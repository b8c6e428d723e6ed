//! `embtune bench`, `compare` and `workload` as a user runs them: the real binary, its JSON
//! contract and its errors.

use std::process::Command;

fn embtune(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_embtune")).args(args).output().expect("the embtune binary runs")
}

fn json(out: &std::process::Output) -> serde_json::Value {
    assert!(out.status.success(), "embtune failed: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&out.stdout)))
}

#[test]
fn bench_json_has_the_contract_fields_and_verifies() {
    let out = embtune(&[
        "bench",
        "--preset",
        "synthetic",
        "--tables",
        "3",
        "--rows",
        "20000",
        "--dim",
        "16",
        "--pooling",
        "8",
        "--dist",
        "hotset:0.99:0.001",
        "--cores",
        "2",
        "--duration",
        "0.3",
        "--warmup",
        "0.1",
        "--verify",
        "--json",
    ]);
    let r = json(&out);
    for field in ["lookups_per_s", "gbytes_per_s", "p50_us", "p99_us", "batches", "cores", "verified"] {
        assert!(r.get(field).is_some(), "missing `{field}` in {r}");
    }
    assert_eq!(r["verified"], true);
    assert_eq!(r["cores"], 2);
    assert!(r["lookups_per_s"].as_f64().unwrap() > 0.0);
    assert!(r["batches"].as_u64().unwrap() > 0);
    assert!(r["p99_us"].as_f64().unwrap() >= r["p50_us"].as_f64().unwrap());
    assert_eq!(r["errors"], 0);
}

#[test]
fn every_strategy_and_flow_verifies_on_a_small_preset() {
    let strategies = embtune_tuner::Strategy::ALL.map(|s| s.name());
    for strategy in strategies.into_iter().chain(["auto"]) {
        for flows in ["direct", "hot", "blocked"] {
            let out = embtune(&[
                "bench",
                "--preset",
                "avazu",
                "--scale",
                "0.002",
                "--cores",
                "2",
                "--strategy",
                strategy,
                "--flows",
                flows,
                "--duration",
                "0.1",
                "--warmup",
                "0",
                "--verify",
                "--json",
            ]);
            let r = json(&out);
            assert_eq!(r["verified"], true, "{strategy} {flows}: {r}");
        }
    }
}

#[test]
fn compare_reports_a_ratio_per_variant() {
    let out = embtune(&[
        "compare",
        "--preset",
        "synthetic",
        "--tables",
        "2",
        "--rows",
        "50000",
        "--dim",
        "32",
        "--dist",
        "zipf:1.05",
        "--cores",
        "1",
        "--variants",
        "round-robin:direct,round-robin:hot,all-shard:blocked",
        "--rounds",
        "2",
        "--round-secs",
        "0.1",
        "--verify",
        "--json",
    ]);
    let r = json(&out);
    let v = r["variants"].as_array().unwrap();
    assert_eq!(v.len(), 3);
    assert_eq!(v[0]["speedup_vs_first"], 1.0);
    assert!(v.iter().all(|x| x["verified"] == true && x["lookups_per_s"].as_f64().unwrap() > 0.0));
}

#[test]
fn limit_reads_far_more_rows_than_the_last_level_cache() {
    // A small table keeps the test fast; the batch pool, not the table, decides whether the
    // ceiling measures the memory system or cache hits.
    let out = embtune(&[
        "limit",
        "--table-gib",
        "0.0625",
        "--rounds",
        "1",
        "--round-secs",
        "0.1",
        "--prefetch",
        "16",
        "--json",
    ]);
    let r = json(&out);
    let (pool, llc) = (r["pool_row_bytes"].as_u64().unwrap(), r["llc_bytes"].as_u64().unwrap());
    assert!(llc > 0, "the last-level cache was not detected: {r}");
    assert!(pool >= 4 * llc, "the batches read {pool} B of rows per pass, under 4x the {llc} B LLC");
    assert!(r["ceiling_best"].as_f64().unwrap() > 0.0 && r["engine_best"].as_f64().unwrap() > 0.0);
}

#[test]
fn profile_of_a_trace_reports_its_skew() {
    let dir = tempfile::tempdir().unwrap();
    let trace = dir.path().join("t.txt");
    // 90 look-ups of row 7, 10 of distinct cold rows, in a 1000-row table.
    let mut text = String::new();
    for _ in 0..90 {
        text.push_str("7\n");
    }
    for i in 100..110 {
        text.push_str(&format!("{i}\n"));
    }
    std::fs::write(&trace, text).unwrap();
    let out = embtune(&["workload", "profile", "--trace", trace.to_str().unwrap(), "--trace-rows", "1000", "--json"]);
    let r = json(&out);
    assert_eq!(r[0]["unique"], 11);
    assert_eq!(r[0]["lookups"], 100);
    // The top 0.1% of 1000 rows is row 7 alone.
    assert!((r[0]["top_0_1pct"].as_f64().unwrap() - 0.9).abs() < 1e-9);
}

#[test]
fn bad_input_gets_a_clear_error_and_a_nonzero_exit() {
    let cases: &[(&[&str], &str)] = &[
        (&["bench", "--preset", "criteo"], "choose one of"),
        (&["bench", "--preset", "synthetic", "--dist", "normal"], "zipf:S"),
        (&["bench", "--preset", "avazu", "--rows", "5"], "--scale"),
        (&["bench", "--preset", "synthetic", "--strategy", "greedy"], "greedy-cost"),
        (&["bench", "--preset", "criteo-terabyte"], "--scale"),
        (&["bench"], "--preset"),
        (&["workload", "profile", "--trace", "/nonexistent/trace.txt"], "cannot open"),
    ];
    for (args, want) in cases {
        let out = embtune(args);
        assert!(!out.status.success(), "{args:?} should fail");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(want), "{args:?}: expected `{want}` in: {err}");
    }
}
