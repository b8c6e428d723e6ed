//! `embtune plan show|explain|export|import`: look at a plan before (or after) running it.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::{Args, Subcommand};

use embtune_dashboards::views;
use embtune_protocol::{Placement, Plan, Topology};
use embtune_tuner::cost::{Coefficients, Model, Node, Prediction, Workload, predict_model};
use embtune_tuner::rules::choose_flow;
use embtune_worker::machine::MachineInfo;
use embtune_workloads::{BatchGenerator, ModelSpec, TableProfile};

use crate::plan_choice::{PlanChoice, StrategyChoice, memory_caps, resolve_plan};
use crate::results::{Results, Source};
use crate::ui;
use crate::workload::{WorkloadArgs, profile};

#[derive(Subcommand, Debug)]
pub enum PlanCmd {
    /// Where each table lives and how it is read: per table its rows, dim, pooling, placement
    /// and shards, data flow, bytes per core and the cost model's share of the time.
    #[command(after_help = "Examples:
  embtune plan show --preset criteo-kaggle --scale 0.01 --workers 2 --cores 4
  embtune plan show --preset avazu --strategy greedy-cost --flows direct
  embtune plan show --job job-1733229913-1 --trial 7       a tuning job's trial
  embtune plan show --plan plan.json --preset criteo-kaggle --scale 0.01")]
    Show(ViewArgs),
    /// The cost model's prediction per table, and the reason for each decision. With --job, the
    /// headline figure is the one the job's model predicted for the trial (as the tune table
    /// and `results show` print it).
    #[command(after_help = "Examples:
  embtune plan explain --preset criteo-kaggle --scale 0.01 --strategy auto
  embtune plan explain --job job-1733229913-1              the job's best plan
  embtune plan explain --job job-1733229913-1 --trial 7 --json")]
    Explain(ViewArgs),
    /// The plan as JSON (for `embtune bench --plan`), to stdout or --out.
    ///
    /// `--format torchrec` writes TorchRec's ShardingPlan instead: per table a ParameterSharding
    /// (sharding type, ranks as worker x cores-per-worker + core, shard sizes and offsets), and
    /// per table what has no TorchRec form (hash shards, hot-row copies, client-resident tables,
    /// uneven row ranges).
    #[command(after_help = "Examples:
  embtune plan export --preset criteo-kaggle --scale 0.01 --strategy greedy-cost --out plan.json
  embtune bench --plan plan.json --preset criteo-kaggle --scale 0.01 --verify
  embtune plan export --preset avazu --scale 0.05 --workers 2 --cores 4 --format torchrec --out avazu.torchrec.json")]
    Export {
        #[command(flatten)]
        args: PlanArgs,
        /// Write the plan to this file instead of stdout.
        #[arg(long, value_name = "FILE")]
        out: Option<PathBuf>,
        /// embtune (the plan itself) or torchrec (TorchRec's ShardingPlan).
        #[arg(long, default_value = "embtune", value_parser = ["embtune", "torchrec"])]
        format: String,
        /// With --format torchrec: the module path of the EmbeddingBagCollection in the model
        /// the plan is for ("" for the collection planned on its own).
        #[arg(long, default_value = "", value_name = "PATH")]
        module_path: String,
    },
    /// A TorchRec ShardingPlan (its planner's output) as an embtune plan: table-wise becomes
    /// owned, row-wise row ranges at TorchRec's offsets, data-parallel replicated, column-wise
    /// the nearest embtune form (flagged).
    #[command(after_help = "Examples:
  embtune plan import --preset criteo-kaggle --scale 0.05 --torchrec benches/peers/results/criteo-kaggle@0.05-2x4.torchrec.json --out tr.json
  embtune bench --plan tr.json --preset criteo-kaggle --scale 0.05 --verify")]
    Import(crate::torchrec_cmd::PlanImportArgs),
    /// How long planning takes at scale, simulated: for 1,000 to 10,000 tables (the dlrm-2021
    /// preset's spreads) on 8 to 1,000 nodes, the time of each baseline, of the cost model and
    /// of the model-driven search, and the planner's peak memory. Nothing is deployed.
    Scale(crate::plan_scale::ScaleArgs),
    /// What a serving cluster's live re-planner saw: how the traffic the workers serve differs
    /// from what the deployed plan was made for (per table: pooling, share of the look-ups,
    /// share on the hottest 1% of rows), the cost model's gain for a new plan, its verdict, and
    /// every switch it made (measured before and after, kept or rolled back). The coordinator
    /// must run with `--replan suggest` or `--replan auto`.
    #[command(after_help = "Examples:
  embtune up --preset criteo-kaggle --scale 0.01 --replan auto --replan-interval 5
  embtune plan live --coordinator 127.0.0.1:7700 --cluster embtune-data/cluster
  embtune plan live --coordinator 127.0.0.1:7700 --cluster embtune-data/cluster --json")]
    Live {
        #[command(flatten)]
        target: crate::cluster::Target,
        /// Print the re-planner's status as JSON.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Args, Debug)]
pub struct PlanArgs {
    #[command(flatten)]
    pub workload: WorkloadArgs,
    /// A plan file (JSON, as `plan export` writes it).
    #[arg(long, value_name = "FILE", conflicts_with_all = ["strategy", "job"])]
    pub plan: Option<PathBuf>,
    /// How to place tables (default auto).
    #[arg(long, value_name = "S", value_parser = StrategyChoice::parser())]
    pub strategy: Option<StrategyChoice>,
    /// The data flow of every table: auto (by rule), direct, hot, blocked or keep (the
    /// strategy's own).
    #[arg(long, value_name = "FLOW")]
    pub flows: Option<String>,
    /// A tuning job's best plan (or --trial N's), from --data-dir's results.
    #[arg(long, value_name = "JOB")]
    pub job: Option<String>,
    /// With --job: this trial's plan instead of the job's best.
    #[arg(long, value_name = "N", requires = "job")]
    pub trial: Option<u32>,
    /// The data dir whose results --job reads (default embtune-data).
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// Shape of the cluster the plan is for: workers (default: one worker with this machine's
    /// CPUs).
    #[arg(long, default_value_t = 1)]
    pub workers: u16,
    /// Shape of the cluster the plan is for: cores per worker (default: this machine's CPUs).
    #[arg(long, value_name = "N")]
    pub cores: Option<u16>,
    /// Memory each client may give to client-resident tables (e.g. 256M; default none): the
    /// plan may then keep small tables in the clients.
    #[arg(long, value_name = "SIZE", value_parser = crate::launch::parse_size_or_zero)]
    pub client_memory: Option<u64>,
}

/// What `show` and `explain` take: a plan, and how to print it.
#[derive(Args, Debug)]
pub struct ViewArgs {
    #[command(flatten)]
    pub plan: PlanArgs,
    /// Print JSON: the plan (show), the prediction (explain).
    #[arg(long)]
    pub json: bool,
}

/// A plan the flags name, with its spec and, for a job's trial, what the job predicted for it.
struct Loaded {
    spec: ModelSpec,
    plan: Plan,
    /// (job, trial, the job's prediction when it proposed the trial, objective).
    trial: Option<(String, u32, f64, embtune_protocol::tuning::Objective)>,
}

/// The plan the flags name, with its spec.
fn load(a: &PlanArgs) -> Result<Loaded> {
    if let Some(job) = &a.job {
        let r = Results::open(&Source { data_dir: a.data_dir.clone(), coordinator: None, cluster: None })?;
        let (j, trials) = r.job(job)?;
        let n = a.trial.or(j.best.map(|b| b.0)).context("the job has no measured trial yet")?;
        let t = trials.iter().find(|t| t.n == n).with_context(|| format!("job {job} has no trial {n}"))?;
        return Ok(Loaded {
            spec: j.spec,
            plan: t.plan.clone(),
            trial: Some((job.clone(), n, t.predicted, j.config.objective)),
        });
    }
    let spec = a.workload.spec()?;
    let m = MachineInfo::detect();
    let topo = Topology::uniform(
        a.workers.max(1),
        a.cores.unwrap_or(m.cpus as u16).max(1),
        (m.mem_available as f64 * 0.85) as u64,
    )
    .with_client_memory(a.client_memory.unwrap_or(0));
    let prof = profile(&BatchGenerator::new(&spec)?);
    let choice = PlanChoice {
        file: a.plan.as_ref(),
        strategy: a.strategy.unwrap_or_default(),
        flows: a.flows.as_deref(),
        prefetch: None,
    };
    let plan = resolve_plan(&spec, &topo, &choice, &prof.tables, &memory_caps(&m, true))?;
    Ok(Loaded { spec, plan, trial: None })
}

/// The uncalibrated cost model of this machine, for a plan's topology.
fn predict(
    spec: &ModelSpec,
    plan: &Plan,
) -> Result<(Prediction, bool, embtune_tuner::rules::MemoryCaps, Vec<TableProfile>)> {
    let m = MachineInfo::detect();
    let caps = memory_caps(&m, true);
    let prof = profile(&BatchGenerator::new(spec)?);
    let node = Node { caps, coef: Coefficients::default() };
    let w = Workload { spec, profiles: &prof.tables };
    let model = if plan.topology.workers.len() == 1 {
        Model::local(w, node)
    } else {
        Model::new(w, vec![node; plan.topology.workers.len()])
    };
    let p = predict_model(&model, plan);
    let networked = model.networked;
    Ok((p, networked, caps, prof.tables))
}

/// Bytes a core (or a worker, for a replicated table) holds of a table under a plan: the
/// largest shard for a split table.
fn bytes_per_core(tp: &embtune_protocol::TablePlan, ts: &embtune_workloads::TableSpec) -> String {
    let row = tp.row_type.row_bytes(ts.dim) as u64;
    match &tp.placement {
        Placement::Replicated => format!("{}/worker", ui::bytes(ts.rows * row)),
        Placement::Client => format!("{}/client", ui::bytes(ts.rows * row)),
        p => {
            let most = (0..p.shards()).map(|i| p.shard_rows(i, ts.rows).len(ts.rows)).max().unwrap_or(0);
            format!("{}/core", ui::bytes(most * row))
        }
    }
}

/// The compact per-table statistics of a plan (as TorchRec's planner prints its sharding
/// plan): one row per table.
fn stats_table(spec: &ModelSpec, plan: &Plan, p: &Prediction) -> comfy_table::Table {
    let total: f64 = p.per_table.iter().map(|t| t.ns_per_batch).sum::<f64>().max(1e-12);
    let mut t = ui::table(&[
        "table",
        "rows",
        "dim",
        "pooling",
        "rows as",
        "placement",
        "shards on",
        "flow",
        "bytes per core",
        "share of time",
    ]);
    for ((tp, ts), tc) in plan.tables.iter().zip(&spec.tables).zip(&p.per_table) {
        t.add_row(vec![
            ts.name.clone(),
            ui::count(ts.rows),
            ts.dim.to_string(),
            {
                let m = ts.pooling.mean();
                if m.fract() == 0.0 { format!("{m:.0}") } else { format!("{m:.1}") }
            },
            tp.row_type.to_string(),
            tp.placement.kind(),
            owners(&tp.placement),
            tp.flow.to_string(),
            bytes_per_core(tp, ts),
            format!("{:.1}%", 100.0 * tc.ns_per_batch / total),
        ]);
    }
    t
}

fn owners(p: &Placement) -> String {
    match p {
        Placement::Replicated => "every core".into(),
        Placement::Client => "every client".into(),
        p => {
            let o: Vec<String> = p.owners().iter().map(|c| c.to_string()).collect();
            if o.len() > 6 { format!("{} .. {} ({} shards)", o[0], o[o.len() - 1], o.len()) } else { o.join(" ") }
        }
    }
}

pub fn run(cmd: PlanCmd) -> Result<()> {
    match cmd {
        PlanCmd::Show(a) => {
            let Loaded { spec, plan, .. } = load(&a.plan)?;
            if a.json {
                println!("{}", serde_json::to_string_pretty(&plan)?);
                return Ok(());
            }
            let (p, _, _, _) = predict(&spec, &plan)?;
            println!(
                "{} for `{}` on {} worker(s), {} cores; knobs: sub-batch {}, {} requests in flight per worker",
                plan.strategy,
                spec.name,
                plan.topology.workers.len(),
                plan.topology.total_cores(),
                plan.knobs.sub_batch,
                plan.knobs.inflight_per_worker
            );
            println!("{}", stats_table(&spec, &plan, &p));
            println!(
                "pooling: mean look-ups per bag; share of time: each table's core time per batch in this machine's uncalibrated cost model (`plan explain` has the rest)"
            );
        }
        PlanCmd::Explain(a) => {
            let Loaded { spec, plan, trial } = load(&a.plan)?;
            let (p, networked, caps, profiles) = predict(&spec, &plan)?;
            if a.json {
                let mut v = serde_json::to_value(&p)?;
                if let Some((job, n, predicted, o)) = &trial {
                    v["job"] = serde_json::json!({"job": job, "trial": n, "objective": o.name(), "unit": o.unit(),
                        "predicted": if predicted.is_finite() { Some(*predicted) } else { None }});
                }
                println!("{}", serde_json::to_string_pretty(&v)?);
                return Ok(());
            }
            match &trial {
                Some((job, n, predicted, o)) if predicted.is_finite() => println!(
                    "{} for `{}`, trial {n} of {job}: predicted {} {} by the job's cost model when it proposed the trial (refitted to the trials before it, as the tune table shows); the breakdown below is this machine's uncalibrated model, {:.0} batches/s and {} per batch on an idle {}",
                    plan.strategy,
                    spec.name,
                    views::fmt_value(*predicted),
                    o.unit(),
                    p.throughput(),
                    ui::us(p.latency_ns / 1e3),
                    if networked { "cluster" } else { "engine" }
                ),
                _ => println!(
                    "{} for `{}`: predicted {:.0} batches/s, {} per batch on an idle {} (this machine's uncalibrated cost model)",
                    plan.strategy,
                    spec.name,
                    p.throughput(),
                    ui::us(p.latency_ns / 1e3),
                    if networked { "cluster" } else { "engine" }
                ),
            }
            let mut t = ui::table(&["table", "placement", "flow", "core-us/batch", "L2", "LLC", "DRAM", "why"]);
            let cores = plan.topology.total_cores() as u64;
            for ((tp, ts), (tc, pr)) in plan.tables.iter().zip(&spec.tables).zip(p.per_table.iter().zip(&profiles)) {
                let bytes = ts.rows * tp.row_type.row_bytes(ts.dim) as u64;
                let per_batch = spec.batch_size as f64 * ts.pooling.mean();
                let place = match &tp.placement {
                    Placement::Replicated => format!(
                        "replicated: {} on every worker; its {:.0} look-ups a batch spread over all cores with no request split",
                        ui::bytes(bytes),
                        per_batch
                    ),
                    Placement::Owned(c) => {
                        format!("owned by {c}: its whole {} stays in one core's caches", ui::bytes(bytes))
                    }
                    Placement::Client => format!(
                        "client-resident: {} in every client, pooled there; its {} pooled bytes a batch never cross the network",
                        ui::bytes(bytes),
                        spec.batch_size as u64 * ts.dim as u64 * 4
                    ),
                    pl => format!(
                        "{} shards by {} mass: each core caches only its shard's hottest rows ({} of {} cores)",
                        pl.shards(),
                        if matches!(pl, Placement::Hash { .. }) { "id hash of" } else { "access" },
                        pl.shards(),
                        cores
                    ),
                };
                let rule = choose_flow(
                    ts,
                    pr,
                    spec.batch_size,
                    ts.rows / tp.placement.shards().max(1) as u64,
                    &caps,
                    caps.l2_bytes / 2 + caps.llc_share(),
                );
                let flow = if rule.flow == tp.flow {
                    rule.reason
                } else {
                    format!("{} (the rule alone would pick {}: {})", tp.flow, rule.flow, rule.reason)
                };
                t.add_row(vec![
                    ts.name.clone(),
                    tp.placement.kind(),
                    tp.flow.to_string(),
                    format!("{:.1}", tc.ns_per_batch / 1e3),
                    format!("{:.0}%", tc.l2 * 100.0),
                    format!("{:.0}%", tc.llc * 100.0),
                    format!("{:.0}%", tc.dram * 100.0),
                    format!("{place}; {flow}"),
                ]);
            }
            println!("{t}");
            let busy: Vec<String> = p.per_core_ns.iter().map(|(c, ns)| format!("{c} {}", ui::us(ns / 1e3))).collect();
            println!("busy per core per batch: {}", busy.join(", "));
        }
        PlanCmd::Import(a) => crate::torchrec_cmd::plan_import(a)?,
        PlanCmd::Scale(a) => crate::plan_scale::run(a)?,
        PlanCmd::Live { target, json } => live(&target, json)?,
        PlanCmd::Export { args, out, format, module_path } if format == "torchrec" => {
            let Loaded { spec, plan, .. } = load(&args)?;
            crate::torchrec_cmd::export(&spec, &plan, &module_path, out.as_ref())?;
        }
        PlanCmd::Export { args, out, .. } => {
            let Loaded { plan, .. } = load(&args)?;
            let text = serde_json::to_string_pretty(&plan)?;
            match out {
                Some(f) => {
                    std::fs::write(&f, text).with_context(|| format!("writing {}", f.display()))?;
                    eprintln!(
                        "wrote {}; run it with `embtune bench --plan {}` and the same workload flags",
                        f.display(),
                        f.display()
                    );
                }
                None => println!("{text}"),
            }
        }
    }
    Ok(())
}

/// `plan live`: the coordinator's re-planner, as it reports itself.
fn live(target: &crate::cluster::Target, json: bool) -> Result<()> {
    let status = crate::cluster::runtime()?
        .block_on(async { target.client().await?.replan().await.map_err(anyhow::Error::from) })?;
    let Some(s) = status else {
        anyhow::bail!(
            "the coordinator at {} runs with --replan off; start it (or `embtune up`) with --replan suggest or --replan auto",
            target.coordinator
        );
    };
    if json {
        println!("{}", serde_json::to_string_pretty(&s)?);
        return Ok(());
    }
    println!(
        "live re-planning: {} (propose at {:.2}x, every {:.0}s), {} checks, {} switches",
        s.mode.name(),
        s.gain_threshold,
        s.interval_s,
        s.checks,
        s.switches.len()
    );
    match &s.last {
        None => println!("no traffic judged yet"),
        Some(a) => {
            println!(
                "last check: plan {} served {} look-ups in {:.1}s; {}",
                a.plan_id, a.lookups, a.window_s, a.verdict
            );
            if a.predicted_current > 0.0 {
                println!(
                    "predicted for the live traffic: deployed {} batches/s, best found {} batches/s ({:.2}x)",
                    crate::ui::si(a.predicted_current),
                    crate::ui::si(a.predicted_proposed.max(a.predicted_current)),
                    a.gain
                );
                println!("deployed: {}\nproposed: {}", a.current, a.proposed);
            }
            let mut t = crate::ui::table(&["table", "pooling plan → live", "share plan → live", "top 1% plan → live"]);
            for d in a.drift.iter().take(10) {
                t.add_row(vec![
                    d.table.clone(),
                    format!("{:.1} → {:.1}", d.pooling_planned, d.pooling_live),
                    format!("{:.1}% → {:.1}%", 100.0 * d.share_planned, 100.0 * d.share_live),
                    format!("{:.1}% → {:.1}%", 100.0 * d.top1_planned, 100.0 * d.top1_live),
                ]);
            }
            println!("{t}");
        }
    }
    if !s.switches.is_empty() {
        let mut t = crate::ui::table(&[
            "when",
            "from → to",
            "predicted",
            "capacity before → after",
            "served before → after",
            "deploy",
            "outcome",
        ]);
        let ratio = |b: f64, a: f64| if b > 0.0 && a > 0.0 { format!(" ({:.2}x)", a / b) } else { String::new() };
        for w in &s.switches {
            t.add_row(vec![
                crate::ui::utc(w.at_ms),
                format!("{} → {}", w.from_plan, w.to_plan),
                format!("{:.2}x", w.predicted_gain),
                format!(
                    "{} → {}{}",
                    crate::ui::si(w.capacity_before),
                    crate::ui::si(w.capacity_after),
                    ratio(w.capacity_before, w.capacity_after)
                ),
                format!(
                    "{} → {}{}",
                    crate::ui::si(w.served_before),
                    crate::ui::si(w.served_after),
                    ratio(w.served_before, w.served_after)
                ),
                format!("{:.2}s", w.deploy_s),
                match &w.outcome {
                    embtune_protocol::replan::SwitchOutcome::Kept => "kept".into(),
                    embtune_protocol::replan::SwitchOutcome::RolledBack => "rolled back".into(),
                    embtune_protocol::replan::SwitchOutcome::Failed(e) => format!("failed: {e}"),
                },
            ]);
        }
        println!("{t}");
        if let Some(j) = &s.job {
            println!("every switch is a trial of job {j}: embtune results show {j}");
        }
        println!(
            "batches/s. capacity: what the busiest engine core allows (its busy time per batch); served: what the \
             workers served. A switch worse by either beyond 5% is rolled back."
        );
    }
    Ok(())
}
