//! TorchRec interop end to end, with the real binary: the export's format against what TorchRec
//! 1.9.2 loaded (the fixtures `benches/peers/torchrec_plan.py` made), the real planner's plans
//! imported, and the round trip import → tune → export.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::exe;
use serde_json::Value;

fn peers() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../benches/peers")
}

fn read(p: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(p).unwrap_or_else(|e| panic!("{}: {e}", p.display())))
        .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

/// Runs embtune and parses its stdout as JSON, failing with its stderr.
fn embtune_json(args: &[&str]) -> Value {
    let out = Command::new(exe()).args(args).output().unwrap();
    assert!(out.status.success(), "embtune {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!("embtune {}: not JSON ({e}): {}", args.join(" "), String::from_utf8_lossy(&out.stdout))
    })
}

const SHARDING_TYPES: [&str; 7] =
    ["data_parallel", "table_wise", "row_wise", "table_row_wise", "column_wise", "table_column_wise", "grid_shard"];

/// What TorchRec's types need of a plan file, checked without torch: every table a known sharding
/// type on ranks below world_size, shards that tile its rows at full width (empty shards
/// allowed), placements that name their rank, and none for data-parallel.
fn check_format(doc: &Value, tables: &[(String, u64, u64)]) {
    let world = doc["world_size"].as_u64().expect("world_size");
    let local = doc["local_world_size"].as_u64().expect("local_world_size");
    assert!(world > 0 && local > 0 && world.is_multiple_of(local), "{world} / {local}");
    let module = doc["plan"][""].as_object().expect("the collection's module plan");
    assert_eq!(module.len(), tables.len());
    for (name, rows, dim) in tables {
        let p = &module[name];
        let kind = p["sharding_type"].as_str().unwrap();
        assert!(SHARDING_TYPES.contains(&kind), "{name}: {kind}");
        assert!(["dense", "fused"].contains(&p["compute_kernel"].as_str().unwrap()), "{name}: {p}");
        let ranks: Vec<u64> = p["ranks"].as_array().unwrap().iter().map(|r| r.as_u64().unwrap()).collect();
        assert!(!ranks.is_empty() && ranks.iter().all(|&r| r < world), "{name}: {ranks:?}");
        if kind == "data_parallel" {
            assert!(p.get("shards").is_none(), "{name}: data-parallel has no sharding spec");
            assert_eq!(ranks, (0..world).collect::<Vec<_>>());
            continue;
        }
        let mut shards: Vec<(u64, u64)> = Vec::new();
        for (i, s) in p["shards"].as_array().unwrap().iter().enumerate() {
            let off: Vec<u64> = s["shard_offsets"].as_array().unwrap().iter().map(|x| x.as_u64().unwrap()).collect();
            let size: Vec<u64> = s["shard_sizes"].as_array().unwrap().iter().map(|x| x.as_u64().unwrap()).collect();
            assert_eq!((off[1], size[1]), (0, *dim), "{name}: full-width shards");
            assert_eq!(s["placement"], format!("rank:{}/cpu", ranks[i]), "{name}: shard {i}");
            shards.push((off[0], size[0]));
        }
        shards.retain(|s| s.1 > 0);
        shards.sort();
        let mut next = 0;
        for (o, n) in shards {
            assert_eq!(o, next, "{name}: shards must tile the rows");
            next = o + n;
        }
        assert_eq!(next, *rows, "{name}: every row in a shard");
    }
}

fn tables_of(spec: &Value) -> Vec<(String, u64, u64)> {
    spec["tables"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| (t["name"].as_str().unwrap().to_string(), t["rows"].as_u64().unwrap(), t["dim"].as_u64().unwrap()))
        .collect()
}

/// embtune's export of the fixture plan (every placement and flow) is, table for table, what
/// TorchRec 1.9.2 built into its ShardingPlan and serialised back (`mixed.loaded.json`, made by
/// `torchrec_plan.py`), and what is checked in as the export.
#[test]
fn the_export_is_what_torchrec_loaded() {
    let f = peers().join("fixtures");
    let model = f.join("mixed.model.json");
    let plan = f.join("mixed.plan.json");
    let e = embtune_json(&[
        "plan",
        "export",
        "--model",
        model.to_str().unwrap(),
        "--plan",
        plan.to_str().unwrap(),
        "--workers",
        "2",
        "--cores",
        "4",
        "--format",
        "torchrec",
    ]);
    let loaded = read(&f.join("mixed.loaded.json"));
    assert_eq!(loaded["problems"], serde_json::json!([]), "TorchRec found problems when the fixture was made");
    assert!(loaded["torchrec"].as_str().unwrap().starts_with("1.9"), "{}", loaded["torchrec"]);
    assert_eq!(e["plan"], loaded["plan"], "the export differs from what TorchRec loaded");
    let checked_in = read(&f.join("mixed.torchrec.json"));
    assert_eq!(e, checked_in, "the export changed: remake the fixtures (benches/peers/README.md, TorchRec)");
    let spec = embtune_json(&["workload", "show", "--json", "--model", model.to_str().unwrap()]);
    check_format(&e, &tables_of(&spec));
    // What has no TorchRec form is said per table.
    let t = &e["embtune"]["tables"];
    assert_eq!(t["user"]["torchrec_form"], "exact");
    assert_eq!(t["country"]["torchrec_form"], "exact");
    for (name, what) in
        [("item", "hot-row copy"), ("query", "uneven row ranges"), ("ad", "blocked"), ("hashed", "hash shards")]
    {
        assert_eq!(t[name]["torchrec_form"], "nearest", "{name}");
        let lost = t[name]["no_torchrec_form"].to_string();
        assert!(lost.contains(what), "{name}: {lost}");
    }
    assert!(t["query"]["notes"][0].as_str().unwrap().contains("FP16"));
}

/// TorchRec 1.9.2's planner's own plans (benches/peers/results, made by torchrec_planner.py)
/// import as embtune plans with its placements: table-wise on rank r is owned by that core,
/// data-parallel is replicated.
#[test]
fn the_planners_plans_import_with_its_placements() {
    let mut seen = 0;
    for entry in std::fs::read_dir(peers().join("results")).unwrap() {
        let path = entry.unwrap().path();
        if !path.to_str().unwrap().ends_with(".torchrec.json") {
            continue;
        }
        seen += 1;
        let doc = read(&path);
        let local = doc["local_world_size"].as_u64().unwrap();
        let flags: Vec<&str> = doc["workload"].as_array().unwrap().iter().map(|v| v.as_str().unwrap()).collect();
        let mut args = vec!["plan", "import", "--torchrec", path.to_str().unwrap()];
        args.extend(&flags);
        let plan = embtune_json(&args);
        assert_eq!(plan["strategy"], "torchrec");
        assert_eq!(
            plan["topology"]["workers"].as_array().unwrap().len() as u64,
            doc["world_size"].as_u64().unwrap() / local
        );
        let module = &doc["plan"][""];
        for t in plan["tables"].as_array().unwrap() {
            let p = &module[t["name"].as_str().unwrap()];
            match p["sharding_type"].as_str().unwrap() {
                "data_parallel" => assert_eq!(t["placement"], "replicated", "{}", path.display()),
                "table_wise" => {
                    let r = p["ranks"][0].as_u64().unwrap();
                    let want = serde_json::json!({"owned": {"worker": r / local, "core": r % local}});
                    assert_eq!(t["placement"], want, "{}", path.display());
                }
                other => panic!("{}: the CPU planner made {other}; extend this test", path.display()),
            }
        }
        // The example: the planner puts criteo-terabyte's pooling-100 table (C21)
        // alone on one core.
        if path.file_name().unwrap().to_str().unwrap().starts_with("criteo-terabyte@0.02-1x8") {
            let r = module["C21"]["ranks"][0].clone();
            let with: Vec<&String> =
                module.as_object().unwrap().iter().filter(|(_, p)| p["ranks"][0] == r).map(|(k, _)| k).collect();
            assert_eq!(with, vec!["C21"], "C21 shares its rank");
        }
    }
    assert_eq!(seen, 8, "four workloads on two topologies");
}

/// The round trip a user makes: TorchRec configs imported as a model, tuned on a local cluster
/// with TorchRec's planner's plan raced as a named baseline, the best plan exported in TorchRec's
/// format, and that file checked against what TorchRec's types need.
#[test]
fn import_tune_export_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let f = peers().join("fixtures");
    let model = dir.path().join("mixed.toml");
    let out = Command::new(exe())
        .args(["workload", "import", "--torchrec"])
        .arg(f.join("mixed.model.json"))
        .arg("--out")
        .arg(&model)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(said.contains("item") && said.contains("2 features"), "{said}");
    assert!(said.contains("ignored: weight_init_max"), "{said}");

    let data = dir.path().join("data");
    let tr = f.join("mixed-2x1.torchrec.json");
    let baseline = format!("torchrec={}", tr.display());
    let job = embtune_json(&[
        "tune",
        "--local",
        "--workers",
        "2",
        "--cores-per-worker",
        "1",
        "--model",
        model.to_str().unwrap(),
        "--trials",
        "1",
        "--round-secs",
        "0.2",
        "--max-rounds",
        "1",
        "--head-to-head-rounds",
        "1",
        "--baseline-plan",
        &baseline,
        "--data-dir",
        data.to_str().unwrap(),
        "--json",
    ]);
    assert!(job["baselines_trials"]["torchrec"].as_f64().unwrap() > 0.0, "{job}");
    assert!(job["head_to_head"]["baselines"]["torchrec"].as_f64().unwrap() > 0.0, "{job}");
    assert!(job["speedup_vs"]["torchrec"].as_f64().unwrap() > 0.0, "{job}");

    let e = embtune_json(&[
        "plan",
        "export",
        "--job",
        job["job"].as_str().unwrap(),
        "--data-dir",
        data.to_str().unwrap(),
        "--format",
        "torchrec",
    ]);
    assert_eq!((e["world_size"].as_u64(), e["local_world_size"].as_u64()), (Some(2), Some(1)));
    let spec = embtune_json(&["workload", "show", "--json", "--model", model.to_str().unwrap()]);
    check_format(&e, &tables_of(&spec));
    let fixture = read(&f.join("mixed.torchrec.json"));
    let keys = |v: &Value| v.as_object().unwrap().keys().cloned().collect::<Vec<_>>();
    assert_eq!(keys(&e), keys(&fixture), "the same fields as the export TorchRec loaded");
    assert_eq!(keys(&e["embtune"]["tables"]["user"]), keys(&fixture["embtune"]["tables"]["user"]));

    // A baseline named like a strategy is refused before any cluster starts.
    let out = Command::new(exe())
        .args(["tune", "--local", "--model", model.to_str().unwrap(), "--baseline-plan"])
        .arg(format!("round-robin={}", tr.display()))
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("taken"), "{}", String::from_utf8_lossy(&out.stderr));
}
