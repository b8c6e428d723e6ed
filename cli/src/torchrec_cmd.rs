//! TorchRec on the command line: `workload import --torchrec`, `plan export --format torchrec`,
//! `plan import --torchrec`, and plan files in TorchRec's format wherever a plan file is read
//! (`bench --plan`, `compare --variants NAME=FILE`, `tune --baseline-plan NAME=FILE`).
//! The conversions themselves are `embtune_workloads::torchrec` and `embtune_tuner::torchrec`.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use clap::Args;

use embtune_protocol::Plan;
use embtune_tuner::torchrec::{self, Ranks};
use embtune_worker::machine::MachineInfo;
use embtune_workloads::ModelSpec;

use crate::workload::{WorkloadArgs, print_notes};

/// Memory each worker of an imported plan may use: what this machine has free, as `plan show`
/// assumes. Jobs and benchmarks move a plan onto their own topology anyway.
fn worker_memory() -> u64 {
    (MachineInfo::detect().mem_available as f64 * 0.85) as u64
}

#[derive(Args, Debug)]
pub struct WorkloadImportArgs {
    /// A JSON or TOML list of TorchRec EmbeddingBagConfigs (name, num_embeddings,
    /// embedding_dim, feature_names, pooling, data_type), each optionally with
    /// `pooling_factor` (mean ids a bag, or poisson:M / uniform:A:B), `pooling_factors` (one
    /// mean per feature, as TorchRec's ParameterConstraints), `access` (uniform, zipf:S,
    /// hotset:P:H, trace:FILE, profile:FILE) and `quantizable`. JSON may be a bare list or an
    /// object with `name`, `batch_size`, `seed` and `tables`; TOML uses [[tables]].
    #[arg(long, value_name = "FILE")]
    pub torchrec: PathBuf,
    /// Where to write the embtune model spec (TOML, or JSON for a .json name; default stdout).
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,
    /// Refuse fields neither TorchRec's config nor embtune knows, instead of reporting them.
    #[arg(long)]
    pub strict: bool,
    /// Print the spec and the import's notes as one JSON object.
    #[arg(long)]
    pub json: bool,
}

/// `embtune workload import --torchrec FILE`.
pub fn workload_import(a: WorkloadImportArgs) -> Result<()> {
    let r = embtune_workloads::torchrec::import_file(&a.torchrec, a.strict)?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&serde_json::json!({ "spec": r.spec, "notes": r.notes }))?);
    } else {
        print_notes(&r.notes, true);
    }
    let text = match &a.out {
        Some(p) if p.extension().is_some_and(|e| e == "json") => serde_json::to_string_pretty(&r.spec)?,
        _ => toml::to_string(&r.spec)?,
    };
    match &a.out {
        Some(p) => {
            std::fs::write(p, text).with_context(|| format!("writing {}", p.display()))?;
            eprintln!(
                "wrote {} ({} tables, {}); use it with --model {}",
                p.display(),
                r.spec.tables.len(),
                crate::ui::bytes(r.spec.total_bytes()),
                p.display()
            );
        }
        None if !a.json => print!("{text}"),
        None => {}
    }
    Ok(())
}

/// A plan file: embtune's JSON, or a TorchRec `ShardingPlan` (imported for `spec`).
pub fn read_plan_file(path: &Path, spec: &ModelSpec) -> Result<Plan> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading plan {}", path.display()))?;
    let v: serde_json::Value =
        serde_json::from_str(&text).with_context(|| format!("{} is not a plan (JSON)", path.display()))?;
    if torchrec::is_torchrec_plan(&v) {
        let r = torchrec::import(&v, spec, None, worker_memory())
            .with_context(|| format!("importing the TorchRec plan {}", path.display()))?;
        return Ok(r.plan);
    }
    serde_json::from_value(v).with_context(|| {
        format!("{} is neither an embtune plan nor a TorchRec ShardingPlan (`{{\"plan\": ...}}`)", path.display())
    })
}

/// `embtune plan export --format torchrec`: the plan as TorchRec's ShardingPlan, with what each
/// table's form keeps.
pub fn export(spec: &ModelSpec, plan: &Plan, module_path: &str, out: Option<&PathBuf>) -> Result<()> {
    let e = torchrec::export(plan, spec, module_path, "cpu")?;
    let text = serde_json::to_string_pretty(&e.json)?;
    for t in e.nearest() {
        eprintln!(
            "note: table `{}` ({}, {}): no exact TorchRec form: {}",
            t.table,
            t.placement,
            t.sharding_type,
            t.no_torchrec_form.join("; ")
        );
    }
    match out {
        Some(f) => {
            std::fs::write(f, text).with_context(|| format!("writing {}", f.display()))?;
            eprintln!(
                "wrote {}: {} tables, {} exact in TorchRec's terms; load it with benches/peers/torchrec_plan.py {}",
                f.display(),
                e.tables.len(),
                e.tables.len() - e.nearest().count(),
                f.display()
            );
        }
        None => println!("{text}"),
    }
    Ok(())
}

#[derive(Args, Debug)]
pub struct PlanImportArgs {
    #[command(flatten)]
    pub workload: WorkloadArgs,
    /// A TorchRec ShardingPlan as JSON (`plan._serialize()`, with `world_size` and
    /// `local_world_size` beside `plan`; torchrec_planner.py writes them so).
    #[arg(long, value_name = "FILE")]
    pub torchrec: PathBuf,
    /// Hosts of the TorchRec topology, when the file does not say (world_size / local_world_size).
    #[arg(long, requires = "cores")]
    pub workers: Option<u32>,
    /// Ranks per host (local_world_size), when the file does not say.
    #[arg(long, requires = "workers")]
    pub cores: Option<u32>,
    /// Where to write the embtune plan (default stdout).
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,
}

/// `embtune plan import --torchrec FILE`.
pub fn plan_import(a: PlanImportArgs) -> Result<()> {
    let spec = a.workload.spec()?;
    let text = std::fs::read_to_string(&a.torchrec).with_context(|| format!("reading {}", a.torchrec.display()))?;
    let v: serde_json::Value =
        serde_json::from_str(&text).with_context(|| format!("{} is not JSON", a.torchrec.display()))?;
    let ranks = match (a.workers, a.cores) {
        (Some(w), Some(c)) if w > 0 && c > 0 => Some(Ranks { world_size: w * c, local_world_size: c }),
        (Some(_), Some(_)) => bail!("--workers and --cores must be at least 1"),
        _ => None,
    };
    let r = torchrec::import(&v, &spec, ranks, worker_memory())
        .with_context(|| format!("importing {}", a.torchrec.display()))?;
    for (t, notes) in &r.notes {
        for n in notes {
            eprintln!("note: table `{t}`: {n}");
        }
    }
    let text = serde_json::to_string_pretty(&r.plan)?;
    match &a.out {
        Some(f) => {
            std::fs::write(f, text).with_context(|| format!("writing {}", f.display()))?;
            eprintln!(
                "wrote {} ({}; {} x {} ranks); measure it with `embtune bench --plan {}` or `embtune tune --baseline-plan torchrec={}` and the same workload flags",
                f.display(),
                r.plan.summary(),
                r.ranks.hosts(),
                r.ranks.local_world_size,
                f.display(),
                a.torchrec.display()
            );
        }
        None => println!("{text}"),
    }
    Ok(())
}
