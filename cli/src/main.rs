//! `embtune`: benchmark and autotune where a recommender model's embedding tables live.
//!
//! One binary with a subcommand per job; each subcommand's module holds its flags and its run
//! function, and the crates below hold the logic.

mod bench;
mod cluster;
mod cluster_bench;
mod compare;
mod flags;
#[cfg(feature = "gpu")]
mod gpu_bench;
mod job_view;
mod launch;
mod plan_choice;
mod plan_cmd;
mod plan_scale;
mod results;
mod torchrec_cmd;
mod tune;
mod ui;
mod up;
mod workload;
mod workload_cmd;

use anyhow::Result;
use clap::{Parser, Subcommand};

/// Benchmark and autotune embedding look-ups of deep recommender models.
///
/// Embedding look-ups (gather rows by id, sum-pool them per sample) dominate recommender
/// inference. embtune places each table (replicated, sharded or owned by one core), picks a
/// data flow per table (prefetching gather, cache-resident hot rows, blocked gather) and
/// measures the result on a real engine.
///
/// Start with:
///   embtune workload presets                          the datasets it knows
///   embtune bench --preset criteo-kaggle --scale 0.1  measure the default plan on this machine
///   embtune up --tune-trials 8                        a local cluster, tuned, with its dashboard
#[derive(Parser, Debug)]
#[command(name = "embtune", version, verbatim_doc_comment, propagate_version = true)]
struct Cli {
    /// More log output (repeat for more); RUST_LOG overrides.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    verbose: u8,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Measure look-up throughput and latency of a plan on this machine's engine.
    ///
    /// Example: embtune bench --preset synthetic --tables 4 --rows 1000000 --dim 64
    ///            --pooling 20 --dist hotset:0.99:0.001 --flows auto --verify
    Bench(bench::BenchArgs),
    /// Compare plans on one workload in alternating rounds: medians and ratios.
    ///
    /// Example: embtune compare --preset synthetic --tables 1 --rows 4000000 --dim 64
    ///            --dist hotset:0.99:0.001 --cores 1 --variants round-robin:direct,round-robin:auto
    Compare(compare::CompareArgs),
    /// Measure this machine's random-gather ceiling beside the engine's direct flow.
    Limit(compare::LimitArgs),
    /// Time the CUDA look-up kernels (baseline, vector, prefetch, hot rows pinned in L2) on a
    /// GPU, checked against the reference (built with the `gpu` feature).
    #[cfg(feature = "gpu")]
    GpuBench(gpu_bench::GpuBenchArgs),
    /// Autotune where tables live and how they are read, measured on a cluster: baselines,
    /// then simulated annealing on a calibrated cost model and Bayesian optimisation of knobs.
    ///
    /// Example: embtune tune --local --workers 2 --cores-per-worker 1 --preset criteo-kaggle
    ///            --scale 0.01 --trials 10
    Tune(tune::TuneArgs),
    /// What tuning jobs found: list, show, best, compare, export.
    #[command(subcommand)]
    Results(results::ResultsCmd),
    /// Look at a plan: show, explain (predicted cost and reasons), export (embtune or TorchRec),
    /// import (a TorchRec ShardingPlan).
    #[command(subcommand)]
    Plan(plan_cmd::PlanCmd),
    /// Start a whole cluster on this machine: a coordinator and N worker processes on
    /// loopback, with a fresh cluster certificate, a deployed plan and the dashboard.
    ///
    /// Example: embtune up --workers 2 --cores-per-worker 1 --preset criteo-kaggle --scale 0.01
    Up(up::UpArgs),
    /// Run a coordinator: cluster membership, plan deployment, query routing, dashboard.
    Coordinator(cluster::CoordinatorArgs),
    /// Run a worker: the look-up engine behind QUIC, registered with a coordinator.
    Worker(cluster::WorkerArgs),
    /// Run a load generator: a client of the direct path that the coordinator directs (tuning
    /// jobs measure with every one connected; `embtune bench --loadgens N` uses N of them).
    ///
    /// Example: embtune loadgen --coordinator 10.0.0.1:7700 --cluster cluster --cores 2
    Loadgen(cluster::LoadgenArgs),
    /// Start workers on other machines over ssh (binary and certificates copied there), wait
    /// until the coordinator reports them healthy; `--stop` ends them.
    ///
    /// Example: embtune launch --hosts hosts.txt --coordinator 10.0.0.1:7700 --cluster cluster
    Launch(launch::LaunchArgs),
    /// Cluster certificates and status.
    #[command(subcommand)]
    Cluster(cluster::ClusterCmd),
    /// Inspect workloads: presets, specs and access skew.
    #[command(subcommand)]
    Workload(workload_cmd::WorkloadCmd),
}

fn main() {
    keep_freed_memory();
    ui::quiet_broken_pipe();
    let cli = Cli::parse();
    init_logging(cli.verbose);
    if let Err(e) = run(cli.command) {
        // A signal stopped the local cluster under the command: what failed was the cluster
        // going away, so end as the signal asks (the signal thread is still stopping processes
        // and exits with the same status once they are gone; this waits for it, then exits).
        let code = up::INTERRUPTED.load(std::sync::atomic::Ordering::Acquire);
        if code != 0 {
            std::thread::sleep(std::time::Duration::from_secs(10));
            std::process::exit(code);
        }
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}

/// Keeps freed heap memory for reuse instead of returning it to the kernel.
///
/// Every request moves buffers of hundreds of kilobytes (ids in, pooled rows out). glibc serves
/// those with a fresh `mmap` and unmaps them on free, so each request paid a page fault and a
/// page clear for every 4 KiB it touched: a third of the coordinator's CPU time on Criteo batches
/// of 256. Tables do not come from the heap (the engine maps them itself), so what stays
/// reserved is the peak of the request buffers in flight.
fn keep_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets allocator parameters; it runs before any other thread exists.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 64 << 20);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 512 << 20);
    }
}

fn run(cmd: Command) -> Result<()> {
    match cmd {
        Command::Bench(a) if a.coordinator.is_some() => cluster_bench::run(a),
        Command::Bench(a) => bench::run(a),
        Command::Compare(a) => compare::run(a),
        Command::Limit(a) => compare::limit(a),
        #[cfg(feature = "gpu")]
        Command::GpuBench(a) => gpu_bench::run(a),
        Command::Workload(c) => workload_cmd::run(c),
        Command::Up(a) => up::run(a),
        Command::Tune(a) => tune::run(a),
        Command::Results(c) => results::run(c),
        Command::Plan(c) => plan_cmd::run(c),
        Command::Coordinator(a) => cluster::coordinator(a),
        Command::Worker(a) => cluster::worker(a),
        Command::Loadgen(a) => cluster::loadgen(a),
        Command::Launch(a) => launch::run(a),
        Command::Cluster(c) => cluster::run(c),
    }
}

fn init_logging(verbose: u8) {
    let default = match verbose {
        0 => "warn",
        1 => "info",
        2 => "debug",
        _ => "trace",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).init();
}
