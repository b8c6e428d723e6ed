//! `embtune compare` and `embtune limit`: measurements that put several contenders side by
//! side in one run, in alternating rounds, and report medians and ratios.

use std::time::Duration;

use anyhow::{Result, bail};
use clap::Args;

use embtune_protocol::Topology;
use embtune_worker::compare::{CompareConfig, Variant};
use embtune_worker::limit::LimitConfig;
use embtune_worker::machine::{MachineInfo, parse_cpu_list};
use embtune_workloads::BatchGenerator;

use crate::flags::IsaArg;
use crate::plan_choice::{PlanChoice, StrategyChoice, memory_caps, resolve_plan};
use crate::ui;
use crate::workload::{WorkloadArgs, batch_pool, profile};

#[derive(Args, Debug)]
pub struct CompareArgs {
    #[command(flatten)]
    pub workload: WorkloadArgs,
    /// Plans to compare, comma-separated, each STRATEGY[:FLOWS[:PREFETCH]] or NAME=FILE (a plan
    /// file: embtune's, or a TorchRec ShardingPlan); the first is the baseline of the ratios.
    /// E.g. `round-robin:direct,round-robin:auto,auto` or `auto,torchrec=tr-1x8.json`.
    #[arg(long, value_name = "LIST", default_value = "round-robin:direct,auto")]
    pub variants: String,
    /// Engine threads, one pinned per core (default: every CPU).
    #[arg(long, value_name = "N")]
    pub cores: Option<usize>,
    /// The CPUs to pin the engine threads to, e.g. 0-3,8 (default: the first --cores CPUs).
    #[arg(long, value_name = "LIST")]
    pub cpus: Option<String>,
    /// Rounds; every variant runs once per round, in rotating order.
    #[arg(long, default_value_t = 5)]
    pub rounds: usize,
    /// Seconds each variant runs per round.
    #[arg(long, default_value_t = 1.0)]
    pub round_secs: f64,
    /// Batches in flight (closed loop; default: one more than the cores).
    #[arg(long, value_name = "Q")]
    pub concurrency: Option<usize>,
    /// Check a few batches of every variant against the f64 reference.
    #[arg(long)]
    pub verify: bool,
    /// Do not ask the kernel for transparent huge pages.
    #[arg(long)]
    pub no_huge_pages: bool,
    #[command(flatten)]
    pub isa: IsaArg,
    /// Print JSON (every round of every variant, the medians and ratios) instead of a table.
    #[arg(long)]
    pub json: bool,
}

pub fn run(a: CompareArgs) -> Result<()> {
    let spec = a.workload.spec()?;
    let machine = MachineInfo::detect();
    let cpus = match (&a.cpus, a.cores) {
        (Some(l), _) => parse_cpu_list(l).map_err(anyhow::Error::msg)?,
        (None, Some(n)) => (0..n).map(|c| c % machine.cpus).collect(),
        (None, None) => (0..machine.cpus).collect(),
    };
    let variants: Vec<&str> = a.variants.split(',').map(str::trim).filter(|s| !s.is_empty()).collect();
    if variants.is_empty() {
        bail!("--variants names no plan");
    }
    let memory = (machine.mem_available as f64 * 0.85) as u64;
    if spec.total_bytes() * variants.len() as u64 > memory {
        bail!(
            "{} variants of a {} model need {}, more than the {} available: compare fewer variants or pass a smaller --scale",
            variants.len(),
            ui::bytes(spec.total_bytes()),
            ui::bytes(spec.total_bytes() * variants.len() as u64),
            ui::bytes(memory)
        );
    }
    let cache = memory_caps(&machine, !a.no_huge_pages);
    let topo = Topology::uniform(1, cpus.len() as u16, memory);
    let sp = ui::spinner("generating batches and access profiles", a.json);
    let generator = BatchGenerator::new(&spec)?;
    let prof = profile(&generator);
    let pool = batch_pool(&generator, machine.llc_bytes);
    sp.finish_and_clear();
    let mut plans = Vec::new();
    for v in &variants {
        if let Some((label, file)) = v.split_once('=') {
            let file = std::path::PathBuf::from(file);
            let choice = PlanChoice { file: Some(&file), ..Default::default() };
            let mut plan = resolve_plan(&spec, &topo, &choice, &prof.tables, &cache)?;
            plan.strategy = label.to_string();
            plans.push(Variant { label: label.to_string(), plan });
            continue;
        }
        let mut parts = v.split(':');
        let strategy = match parts.next() {
            Some(s) => s.parse::<StrategyChoice>().map_err(|e| anyhow::anyhow!("variant `{v}`: {e}"))?,
            None => StrategyChoice::Auto,
        };
        let flows = parts.next();
        let prefetch = parts
            .next()
            .map(|p| p.trim_start_matches("pf").parse::<u16>())
            .transpose()
            .map_err(|_| anyhow::anyhow!("variant `{v}`: the third part is a prefetch distance such as pf16"))?;
        let choice = PlanChoice { file: None, strategy, flows, prefetch };
        let plan = resolve_plan(&spec, &topo, &choice, &prof.tables, &cache)?;
        plans.push(Variant { label: v.to_string(), plan });
    }
    let bar = ui::bar((a.rounds * plans.len()) as u64, a.json);
    let hot = prof.clone();
    let report = embtune_worker::compare::run(
        CompareConfig {
            spec: spec.clone(),
            variants: plans,
            cpus: cpus.clone(),
            rounds: a.rounds.max(1),
            round: Duration::from_secs_f64(a.round_secs.max(0.05)),
            warmup: Duration::from_millis(300),
            concurrency: a.concurrency.unwrap_or(cpus.len() + 1),
            pool,
            hot: Box::new(move |t, n| hot.tables[t].hottest(n)),
            huge_pages: !a.no_huge_pages,
            verify: a.verify,
            isa: a.isa.isa,
        },
        &|r, n, label| {
            bar.set_prefix(format!("round {}/{n}", r + 1));
            bar.set_message(label.to_string());
            bar.inc(1);
        },
    )?;
    bar.finish_and_clear();
    if a.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
        return Ok(());
    }
    println!(
        "model {} on {} cores, {} rounds of {:.1}s per variant (medians; ratios per round)",
        report.model, report.cores, report.rounds, report.round_s
    );
    let mut t = ui::table(&["variant", "plan", "look-ups/s", "vs first", "p50", "p99", "verified"]);
    for v in &report.variants {
        t.add_row(vec![
            v.label.clone(),
            v.plan.clone(),
            ui::si(v.lookups_per_s),
            format!("{:.2}x", v.speedup_vs_first),
            ui::us(v.p50_us),
            ui::us(v.p99_us),
            v.verified.map_or("-".into(), |b| if b { "yes".into() } else { "NO".into() }),
        ]);
    }
    println!("{t}");
    if report.variants.iter().any(|v| v.verified == Some(false)) {
        bail!("a variant's results differ from the reference");
    }
    Ok(())
}

#[derive(Args, Debug)]
pub struct LimitArgs {
    /// Threads for the ceiling and cores for the engine.
    #[arg(long, default_value_t = 1)]
    pub threads: usize,
    /// Size of the table, GiB (far larger than the last-level cache).
    #[arg(long, default_value_t = 2.0)]
    pub table_gib: f64,
    #[arg(long, default_value_t = 5)]
    pub rounds: usize,
    #[arg(long, default_value_t = 1.5)]
    pub round_secs: f64,
    /// Prefetch distances to try, rows.
    #[arg(long, default_value = "16,24,32", value_delimiter = ',')]
    pub prefetch: Vec<usize>,
    /// Samples per batch (pooling 20 each), on both sides. Larger batches mean fewer hand-offs
    /// per look-up in the engine; the ceiling loop has none.
    #[arg(long, default_value_t = 256)]
    pub batch: u32,
    #[command(flatten)]
    pub isa: IsaArg,
    /// Print JSON (every round, the medians and the ratio) instead of text.
    #[arg(long)]
    pub json: bool,
}

pub fn limit(a: LimitArgs) -> Result<()> {
    let cfg = LimitConfig {
        table_bytes: (a.table_gib * (1u64 << 30) as f64) as u64,
        threads: a.threads.max(1),
        rounds: a.rounds.max(1),
        round: Duration::from_secs_f64(a.round_secs),
        prefetches: a.prefetch.clone(),
        batch: a.batch.max(1),
        isa: a.isa.isa,
    };
    let bar = ui::bar(cfg.rounds as u64, a.json);
    bar.set_prefix("limit");
    let r = embtune_worker::limit::run(&cfg, &|i, _| bar.set_position(i as u64))?;
    bar.finish_and_clear();
    if a.json {
        println!("{}", serde_json::to_string_pretty(&r)?);
        return Ok(());
    }
    println!(
        "gather ceiling vs engine: {} thread(s), {} table ({} on huge pages), D={}, pooling {}, uniform",
        r.threads,
        ui::bytes(r.table_bytes),
        ui::bytes(r.huge_page_bytes),
        embtune_worker::limit::DIM,
        embtune_worker::limit::POOLING
    );
    let mut t = ui::table(&["prefetch", "ceiling look-ups/s", "engine look-ups/s", "engine/ceiling"]);
    for (c, e) in r.ceiling.iter().zip(&r.engine) {
        t.add_row(vec![
            c.prefetch.to_string(),
            ui::si(c.lookups_per_s),
            ui::si(e.lookups_per_s),
            format!("{:.2}", e.lookups_per_s / c.lookups_per_s),
        ]);
    }
    t.add_row(vec!["best".into(), ui::si(r.ceiling_best), ui::si(r.engine_best), format!("{:.2}", r.ratio)]);
    println!("{t}");
    println!("ceiling kernels: {}; engine kernels: {} (run-time dispatch)", r.ceiling_isa, r.engine_isa);
    println!(
        "the batches read {} of rows per pass, against a {} last-level cache",
        ui::bytes(r.pool_row_bytes),
        ui::bytes(r.llc_bytes)
    );
    if r.table_bytes < 4 * r.llc_bytes {
        println!(
            "note: the table is less than 4x the last-level cache, so both figures include cache hits; \
             pass --table-gib {} or more to measure the memory system",
            (4 * r.llc_bytes).div_ceil(1 << 30)
        );
    }
    Ok(())
}
