//! `embtune bench`: measure look-up throughput and latency of a plan.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Result, bail};
use clap::Args;

use embtune_protocol::Topology;
use embtune_protocol::report::BenchReport;
use embtune_worker::bench::{LocalBench, Progress};
use embtune_worker::machine::{MachineInfo, parse_cpu_list};
use embtune_workloads::{BatchGenerator, ModelSpec};

use crate::plan_choice::{PlanChoice, StrategyChoice, memory_caps, resolve_plan};
use crate::ui;
use crate::workload::{WorkloadArgs, batch_pool, profile};

#[derive(Args, Debug)]
pub struct BenchArgs {
    #[command(flatten)]
    pub workload: WorkloadArgs,
    /// Engine threads, one pinned per core (default: every CPU of this machine).
    #[arg(long, value_name = "N")]
    pub cores: Option<usize>,
    /// CPUs to pin the engine threads to, e.g. 0-3,8 (default: 0..N).
    #[arg(long, value_name = "LIST")]
    pub cpus: Option<String>,
    /// A plan exported by `embtune plan export` or `embtune results best`, or a TorchRec
    /// ShardingPlan (JSON, as `embtune plan import --torchrec` reads it).
    #[arg(long, value_name = "FILE", conflicts_with = "strategy")]
    pub plan: Option<PathBuf>,
    /// How to place tables (default auto, whose flows are chosen by rule).
    #[arg(long, value_name = "S", value_parser = StrategyChoice::parser())]
    pub strategy: Option<StrategyChoice>,
    /// Data flow per table: auto (by skew and size), direct, hot, blocked, or keep (the
    /// strategy's own: direct for the baselines).
    #[arg(long, value_name = "F")]
    pub flows: Option<String>,
    /// Prefetch distance in rows for direct and hot-cache flows.
    #[arg(long, value_name = "ROWS")]
    pub prefetch: Option<u16>,
    /// Seconds to measure (after the warm-up).
    #[arg(long, default_value_t = 5.0, value_name = "S")]
    pub duration: f64,
    /// Seconds of warm-up, excluded from the figures.
    #[arg(long, default_value_t = 1.0, value_name = "S")]
    pub warmup: f64,
    /// Batches kept in flight (closed loop; default cores + 1).
    #[arg(long, value_name = "Q")]
    pub concurrency: Option<usize>,
    /// Check every pooled result of a sample of batches against the naive f64 reference.
    #[arg(long)]
    pub verify: bool,
    /// Print one JSON object instead of tables.
    #[arg(long)]
    pub json: bool,
    /// Do not ask the kernel for transparent huge pages.
    #[arg(long)]
    pub no_huge_pages: bool,
    #[command(flatten)]
    pub isa: crate::flags::IsaArg,
    #[command(flatten)]
    pub lanes: crate::flags::LanesArg,
    /// Benchmark a cluster through its coordinator instead of the local engine.
    #[arg(long, value_name = "HOST:PORT", requires = "cluster")]
    pub coordinator: Option<std::net::SocketAddr>,
    /// The cluster's certificate folder (with --coordinator).
    #[arg(long, value_name = "DIR")]
    pub cluster: Option<PathBuf>,
    /// Open loop: Poisson arrivals at this many queries per second (with --coordinator;
    /// default closed loop at --concurrency).
    #[arg(long, value_name = "Q")]
    pub qps: Option<f64>,
    /// With --coordinator, which way queries travel: direct (this process routes each query
    /// to the workers by the coordinator's routing table) or coordinator (the coordinator
    /// relays every query, for thin clients and for comparison).
    #[arg(long, value_name = "PATH", default_value = "direct", value_parser = clap::value_parser!(Path))]
    pub via: Path,
    /// With --coordinator: have the coordinator run the load on this many connected load
    /// generators (`embtune loadgen`; `embtune up --loadgens N` starts them) and merge their
    /// reports; 0 loads from this process.
    #[arg(long, value_name = "L", default_value_t = 0)]
    pub loadgens: usize,
    /// With --coordinator: how workers encode pooled rows on the wire: f32, or f16 / bf16 for
    /// half the bytes (sums stay f32; each partial sum is rounded once).
    #[arg(long, value_name = "FORMAT", default_value = "f32", value_parser = clap::value_parser!(embtune_protocol::wire::WireFormat))]
    pub wire: embtune_protocol::wire::WireFormat,
    /// With --coordinator: memory each client may give to client-resident tables (e.g. 256M);
    /// the plan deployed may then keep small tables in the clients.
    #[arg(long, value_name = "SIZE", value_parser = crate::launch::parse_size_or_zero)]
    pub client_memory: Option<u64>,
    /// With --coordinator: query the plan deployed now even though this workload differs from
    /// the model it was deployed for in pooling or access distributions (the tables must be
    /// the same): how traffic that drifted from the plan is served, and what live re-planning
    /// (`--replan`) reacts to.
    #[arg(long, requires = "coordinator", conflicts_with_all = ["plan", "strategy"])]
    pub keep_plan: bool,
    /// With --coordinator (load from this process): write each second's queries per second to
    /// this CSV (`t_s,queries_per_s`), to see a redeployment or a re-plan happen under load.
    #[arg(long, value_name = "FILE", requires = "coordinator")]
    pub timeline: Option<std::path::PathBuf>,
    /// With --coordinator: engine threads this client pools its client-resident tables on.
    #[arg(long, value_name = "N", default_value_t = 1)]
    pub client_cores: usize,
    /// Run the look-ups on CUDA device N instead of the CPU engine (a build with `--features
    /// gpu`): the prefetching and hot-row kernels side by side, timed with CUDA events, as
    /// `embtune gpu-bench --device N --variant prefetch,hot` (which has every GPU knob).
    #[arg(long, value_name = "N", conflicts_with = "coordinator")]
    pub gpu: Option<usize>,
}

/// `bench --gpu N`: the GPU benchmark with its default knobs and this command's workload.
#[cfg(feature = "gpu")]
fn gpu(args: BenchArgs, device: usize) -> Result<()> {
    use clap::Parser;
    #[derive(Parser)]
    struct Defaults {
        #[command(flatten)]
        a: crate::gpu_bench::GpuBenchArgs,
    }
    let mut g = Defaults::try_parse_from(["gpu-bench", "--variant", "prefetch,hot"])?.a;
    g.workload = args.workload;
    g.device = device;
    g.verify = args.verify;
    g.json = args.json;
    if !args.json {
        return crate::gpu_bench::run(g);
    }
    // `--json` keeps `embtune bench`'s contract: its fields, from the fastest variant, with the
    // whole GPU report beside them.
    let Some(report) = crate::gpu_bench::measure(&g)? else { return Ok(()) };
    println!("{}", serde_json::to_string_pretty(&gpu_contract(&report)?)?);
    crate::gpu_bench::check_verified(&report)
}

/// `embtune bench --json`'s fields for a GPU run: the fastest variant's kernel time per batch
/// (all tables, one launch) as the latency, its look-ups and row bytes per second, `cores` 1
/// (one device), and the whole `gpu-bench` report under `gpu`.
#[cfg(feature = "gpu")]
fn gpu_contract(r: &embtune_worker::gpu::bench::GpuBenchReport) -> Result<serde_json::Value> {
    let best = r
        .runs
        .iter()
        .max_by(|a, b| a.lookups_per_s.total_cmp(&b.lookups_per_s))
        .ok_or_else(|| anyhow::anyhow!("the GPU benchmark ran no variant"))?;
    let verified =
        (!r.runs.iter().all(|x| x.verified.is_none())).then(|| r.runs.iter().all(|x| x.verified != Some(false)));
    Ok(serde_json::json!({
        "mode": "gpu",
        "model": r.model,
        "device": r.device,
        "variant": best.name,
        "workers": 1,
        "cores": 1,
        "batch_size": r.batch_size,
        "batches": best.ms.n,
        "lookups_per_s": best.lookups_per_s,
        "gbytes_per_s": best.row_bytes_per_s / 1e9,
        "p50_us": best.ms.median * 1e3,
        "p99_us": best.ms.p99 * 1e3,
        "verified": verified,
        "gpu": r,
    }))
}

#[cfg(not(feature = "gpu"))]
fn gpu(_: BenchArgs, device: usize) -> Result<()> {
    bail!(
        "--gpu {device}: this embtune was built without the `gpu` feature; rebuild with \
         `cargo build --release --features gpu` (the CUDA driver is loaded at run time)"
    )
}

/// Which way queries travel.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Path {
    /// Clients query the workers themselves, by the routing table.
    Direct,
    /// The coordinator relays every query.
    Coordinator,
}

impl std::str::FromStr for Path {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "direct" => Ok(Path::Direct),
            "coordinator" => Ok(Path::Coordinator),
            _ => Err(format!("unknown path `{s}`; use direct (the default) or coordinator")),
        }
    }
}

impl Path {
    pub fn name(self) -> &'static str {
        match self {
            Path::Direct => "direct",
            Path::Coordinator => "coordinator",
        }
    }
}

/// Measures a plan on the local engine (`bench` without `--coordinator`; with it, `main` runs
/// `cluster_bench`, which uses this module's flags, not the other way round).
pub fn run(args: BenchArgs) -> Result<()> {
    if args.qps.is_some() {
        bail!("--qps drives a cluster: add --coordinator HOST:PORT --cluster DIR");
    }
    if let Some(device) = args.gpu {
        return gpu(args, device);
    }
    let spec = args.workload.spec()?;
    let machine = MachineInfo::detect();
    let cpus = match (&args.cpus, args.cores) {
        (Some(list), _) => parse_cpu_list(list).map_err(anyhow::Error::msg)?,
        (None, Some(n)) => (0..n).map(|c| c % machine.cpus).collect(),
        (None, None) => (0..machine.cpus).collect(),
    };
    if cpus.is_empty() {
        bail!("--cores must be at least 1");
    }
    let cache = memory_caps(&machine, !args.no_huge_pages);
    let memory = (machine.mem_available as f64 * 0.85) as u64;
    let topo = Topology::uniform(1, cpus.len() as u16, memory);
    if spec.total_bytes() > memory {
        bail!(
            "the model `{}` needs {} of tables but {} is available: pass --scale {:.3} or smaller",
            spec.name,
            ui::bytes(spec.total_bytes()),
            ui::bytes(memory),
            memory as f64 / spec.total_bytes() as f64 * 0.9
        );
    }
    let quiet = args.json;
    let sp = ui::spinner("generating batches and access profiles", quiet);
    let generator = BatchGenerator::new(&spec)?;
    let profile = profile(&generator);
    let pool = batch_pool(&generator, machine.llc_bytes);
    sp.finish_and_clear();
    let choice = PlanChoice {
        file: args.plan.as_ref(),
        strategy: args.strategy.unwrap_or_default(),
        flows: args.flows.as_deref(),
        prefetch: args.prefetch,
    };
    let plan = resolve_plan(&spec, &topo, &choice, &profile.tables, &cache)?;
    let hot_profile = profile.clone();
    let bar = ui::bar(1000, quiet);
    let duration = Duration::from_secs_f64(args.duration.max(0.05));
    let report = embtune_worker::bench::run(
        LocalBench {
            spec: spec.clone(),
            plan: plan.clone(),
            cpus: cpus.clone(),
            duration,
            warmup: Duration::from_secs_f64(args.warmup.max(0.0)),
            concurrency: args.concurrency.unwrap_or(cpus.len() + 1),
            pool,
            hot: Box::new(move |t, n| hot_profile.tables[t].hottest(n)),
            verify: if args.verify { 8 } else { 0 },
            huge_pages: !args.no_huge_pages,
            isa: args.isa.isa,
        },
        &|p| match p {
            Progress::Deploying => bar.set_prefix("deploying"),
            Progress::Deployed { seconds, bytes } => bar.set_message(format!("{} in {seconds:.1}s", ui::bytes(bytes))),
            Progress::WarmingUp => bar.set_prefix("warm-up"),
            Progress::Measuring { fraction, lookups_per_s } => {
                bar.set_prefix("measuring");
                bar.set_position((fraction * 1000.0) as u64);
                bar.set_message(format!("{} look-ups/s", ui::si(lookups_per_s)));
            }
            Progress::Verifying { done, of } => {
                bar.set_prefix("verifying");
                bar.set_message(format!("batch {done}/{of}"));
            }
        },
    )?;
    bar.finish_and_clear();
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print_report(&report, &spec);
    }
    if report.verified == Some(false) {
        bail!("verification failed: the engine's results differ from the reference (see the log above)");
    }
    Ok(())
}

/// The human form of a report.
pub fn print_report(r: &BenchReport, spec: &ModelSpec) {
    println!(
        "model   {} ({} tables, batch {}, {} of rows)",
        r.model,
        spec.tables.len(),
        r.batch_size,
        ui::bytes(spec.total_bytes())
    );
    println!("plan    {}", r.plan);
    println!("engine  {} worker(s), {} cores, {} kernels, concurrency {}", r.workers, r.cores, r.isa, r.concurrency);
    if let Some(h) = &r.huge_pages {
        println!(
            "pages   huge pages on {} of {} eligible (THP mode {})",
            ui::bytes(h.granted_bytes),
            ui::bytes(h.eligible_bytes),
            h.thp_mode
        );
    }
    let mut t = ui::table(&["look-ups/s", "GB/s rows", "samples/s", "batches", "p50", "p95", "p99", "p99.9", "errors"]);
    t.add_row(vec![
        ui::si(r.lookups_per_s),
        format!("{:.2}", r.gbytes_per_s),
        ui::si(r.samples_per_s),
        r.batches.to_string(),
        ui::us(r.p50_us),
        ui::us(r.p95_us),
        ui::us(r.p99_us),
        ui::us(r.p999_us),
        r.errors.to_string(),
    ]);
    println!("{t}");
    let mut c = ui::table(&["worker", "core", "cpu", "busy", "tasks", "look-ups"]);
    for l in &r.per_core {
        c.add_row(vec![
            l.worker.to_string(),
            l.core.to_string(),
            l.cpu.to_string(),
            format!("{:.0}%", l.busy * 100.0),
            l.tasks.to_string(),
            ui::si(l.lookups as f64),
        ]);
    }
    println!("{c}");
    if let Some(f) = r.network_fraction {
        println!("network and coordinator: {:.0}% of request time", f * 100.0);
    }
    if let Some(v) = r.verified {
        println!(
            "verified: {} ({} batches checked against the f64 reference)",
            if v { "yes" } else { "NO" },
            r.verified_batches.unwrap_or(0)
        );
    }
}
