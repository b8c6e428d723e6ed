//! `embtune plan scale`: how long planning takes at Meta's scale, simulated.
//!
//! For every cell of a grid of table counts and node counts it builds a model of that many
//! tables (the `dlrm-2021` preset's spreads of rows and pooling, continued) and a topology of
//! that many nodes, then times what the tuner does before anything is deployed: each named
//! baseline's plan (made and validated), the cost model's set-up, and the model-driven search
//! (simulated annealing scored by the cost model) from the best baseline. Nothing is deployed
//! and no process but this one runs; the peak memory is this process's high-water mark, reset
//! before each cell.

use std::time::Instant;

use anyhow::{Context, Result, bail};
use clap::Args;
use serde::Serialize;

use embtune_protocol::{Plan, Topology};
use embtune_tuner::cost::{Coefficients, Model, Node, Workload, predict_model};
use embtune_tuner::search::{Objective, SearchConfig, anneal_observed, cost};
use embtune_tuner::space::Space;
use embtune_tuner::{BaselineOptions, MemoryCaps, Strategy};

use crate::ui;

/// Flags of `embtune plan scale`.
#[derive(Args, Debug)]
#[command(after_help = "Examples:
  embtune plan scale                                      the whole grid (1k-10k tables, 8-1000 nodes)
  embtune plan scale --tables 856 --nodes 8 --iterations 500
  embtune plan scale --json plan-scale.json               figures for a script (benches/scale/plan-grid.sh)")]
pub struct ScaleArgs {
    /// Table counts to plan, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "1000,5000,10000")]
    pub tables: Vec<usize>,
    /// Simulated node counts, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "8,100,1000")]
    pub nodes: Vec<u16>,
    /// Cores per node.
    #[arg(long, default_value_t = 64)]
    pub cores: u16,
    /// Memory per node (simulated; large enough by default that every baseline fits).
    #[arg(long, default_value = "2TiB", value_parser = crate::launch::parse_size)]
    pub memory: u64,
    /// Moves the search proposes per cell (the tuner's default is 3000).
    #[arg(long, default_value_t = 3000)]
    pub iterations: u64,
    /// Baselines whose plans would hold more shards than this are skipped with a note: an
    /// every-core split of 10,000 tables over 64,000 cores is hundreds of millions of shards,
    /// a plan no one would deploy.
    #[arg(long, default_value_t = 20_000_000)]
    pub max_shards: u64,
    /// Write the figures as JSON to this file too.
    #[arg(long, value_name = "FILE")]
    pub json: Option<std::path::PathBuf>,
    /// No progress on stderr.
    #[arg(long)]
    pub quiet: bool,
}

/// One baseline's figures in a cell.
#[derive(Serialize)]
struct BaselineRun {
    strategy: String,
    /// Making and validating the plan.
    plan_s: f64,
    /// One prediction of the plan by the cost model.
    predict_s: f64,
    predicted_batches_per_s: f64,
    /// Why it was not run (too many shards) or failed (memory).
    note: Option<String>,
}

/// One cell of the grid.
#[derive(Serialize)]
struct Cell {
    tables: usize,
    nodes: u16,
    cores: u64,
    baselines: Vec<BaselineRun>,
    /// The cost model's set-up (access curves of every table).
    model_s: f64,
    search_start: String,
    search_s: f64,
    search_iterations: u64,
    search_predicted_batches_per_s: f64,
    start_predicted_batches_per_s: f64,
    /// Everything this cell did, baselines included.
    total_s: f64,
    /// This process's resident high-water mark during the cell (MiB); none where the kernel
    /// does not let it be reset.
    peak_rss_mib: Option<f64>,
}

pub fn run(a: ScaleArgs) -> Result<()> {
    if a.tables.is_empty() || a.nodes.is_empty() || a.tables.contains(&0) || a.nodes.contains(&0) || a.cores == 0 {
        bail!("--tables, --nodes and --cores need values of at least 1 (e.g. --tables 1000 --nodes 8 --cores 64)");
    }
    let cells: Vec<(usize, u16)> = a.tables.iter().flat_map(|&t| a.nodes.iter().map(move |&n| (t, n))).collect();
    let progress = ui::bar(cells.len() as u64 * a.iterations, a.quiet);
    let mut out = Vec::new();
    for (k, &(tables, nodes)) in cells.iter().enumerate() {
        progress.set_prefix(format!("{}/{}", k + 1, cells.len()));
        progress.set_position(k as u64 * a.iterations);
        let cell = plan_cell(&a, tables, nodes, &|msg: &str| progress.set_message(msg.to_string()), &|i| {
            progress.set_position(k as u64 * a.iterations + i.min(a.iterations))
        })?;
        out.push(cell);
    }
    progress.finish_and_clear();
    print_cells(&out, &a);
    if let Some(path) = &a.json {
        let v = serde_json::json!({
            "command": ui::self_command(),
            "cpus": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
            "cells": out,
        });
        std::fs::write(path, serde_json::to_string_pretty(&v)?)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}

/// Shards a strategy's plan would hold, counted without making it.
fn shards(s: Strategy, spec: &embtune_workloads::ModelSpec, cores: u64, o: &BaselineOptions) -> u64 {
    let every_core = |rows: u64| cores.min(rows).max(1);
    match s {
        Strategy::AllShard => spec.tables.iter().map(|t| every_core(t.rows)).sum(),
        Strategy::SizeThreshold | Strategy::ClientThreshold => {
            spec.tables.iter().map(|t| if t.bytes() < o.replicate_below { 1 } else { every_core(t.rows) }).sum()
        }
        _ => spec.tables.len() as u64,
    }
}

fn plan_cell(a: &ScaleArgs, tables: usize, nodes: u16, say: &dyn Fn(&str), step: &dyn Fn(u64)) -> Result<Cell> {
    let peak_reset = reset_peak_rss();
    let t0 = Instant::now();
    let label = format!("{tables} tables on {nodes} x {} cores", a.cores);
    say(&format!("{label}: model"));
    let spec = embtune_workloads::presets::dlrm_shaped(tables)?;
    let topo = Topology::uniform(nodes, a.cores, a.memory);
    let total_cores = topo.total_cores() as u64;
    let node = Node { caps: MemoryCaps::default(), coef: Coefficients::default() };
    let tm = Instant::now();
    // No profiles: the presets' Zipf laws have analytic shares, which is what a planner without
    // a profiling run has too.
    let model = Model::new(Workload { spec: &spec, profiles: &[] }, vec![node; nodes as usize]);
    let model_s = tm.elapsed().as_secs_f64();
    let opts = BaselineOptions::default();
    let objective = Objective::Throughput;
    let mut baselines = Vec::new();
    let mut best: Option<(f64, Plan)> = None;
    for s in Strategy::baselines(topo.client_memory_bytes) {
        say(&format!("{label}: {}", s.name()));
        let n = shards(s, &spec, total_cores, &opts);
        if n > a.max_shards {
            baselines.push(BaselineRun {
                strategy: s.name().into(),
                plan_s: 0.0,
                predict_s: 0.0,
                predicted_batches_per_s: 0.0,
                note: Some(format!("skipped: {} shards (over --max-shards {})", ui::count(n), ui::count(a.max_shards))),
            });
            continue;
        }
        let tp = Instant::now();
        let plan = match s.plan(&spec, &topo, &opts) {
            Ok(p) => p,
            Err(e) => {
                baselines.push(BaselineRun {
                    strategy: s.name().into(),
                    plan_s: tp.elapsed().as_secs_f64(),
                    predict_s: 0.0,
                    predicted_batches_per_s: 0.0,
                    note: Some(e.to_string()),
                });
                continue;
            }
        };
        let plan_s = tp.elapsed().as_secs_f64();
        let tq = Instant::now();
        let p = predict_model(&model, &plan);
        let predict_s = tq.elapsed().as_secs_f64();
        let c = cost(objective, &p);
        if best.as_ref().is_none_or(|(bc, _)| c < *bc) {
            best = Some((c, plan));
        }
        baselines.push(BaselineRun {
            strategy: s.name().into(),
            plan_s,
            predict_s,
            predicted_batches_per_s: p.throughput(),
            note: None,
        });
    }
    let Some((_, start)) = best else { bail!("{label}: no baseline could place the tables; raise --memory") };
    say(&format!("{label}: search from {}", start.strategy));
    let search_start = start.strategy.clone();
    let start_tp = predict_model(&model, &start).throughput();
    let space = Space::new(&spec, &[], total_cores as usize, MemoryCaps::default().l2_bytes);
    // The iteration count bounds the search here, not the clock: the figure is the time the
    // whole search takes.
    let cfg = SearchConfig { iterations: a.iterations, ..Default::default() };
    let ts = Instant::now();
    let found = anneal_observed(&model, &space, objective, start, &cfg, &|| false, Some(step));
    let search_s = ts.elapsed().as_secs_f64();
    Ok(Cell {
        tables,
        nodes,
        cores: total_cores,
        baselines,
        model_s,
        search_start,
        search_s,
        search_iterations: found.iterations,
        search_predicted_batches_per_s: found.value,
        start_predicted_batches_per_s: start_tp,
        total_s: t0.elapsed().as_secs_f64(),
        peak_rss_mib: if peak_reset { peak_rss_mib() } else { None },
    })
}

fn print_cells(cells: &[Cell], a: &ScaleArgs) {
    let mut names: Vec<String> = Vec::new();
    for c in cells {
        for b in &c.baselines {
            if !names.contains(&b.strategy) {
                names.push(b.strategy.clone());
            }
        }
    }
    let mut header: Vec<String> = vec!["tables".into(), "nodes".into(), "cores".into(), "model".into()];
    header.extend(names.iter().map(|n| format!("{n} (plan+predict)")));
    header.extend(["search".into(), "per move".into(), "gain".into(), "total".into(), "peak RSS".into()]);
    let refs: Vec<&str> = header.iter().map(String::as_str).collect();
    let mut t = ui::table(&refs);
    for c in cells {
        let mut row = vec![c.tables.to_string(), c.nodes.to_string(), c.cores.to_string(), secs(c.model_s)];
        for n in &names {
            row.push(match c.baselines.iter().find(|b| &b.strategy == n) {
                Some(b) if b.note.is_none() => secs(b.plan_s + b.predict_s),
                Some(_) => "skipped".into(),
                None => "-".into(),
            });
        }
        row.push(format!("{} ({} moves from {})", secs(c.search_s), c.search_iterations, c.search_start));
        row.push(format!("{:.2} ms", 1e3 * c.search_s / c.search_iterations.max(1) as f64));
        row.push(format!("{:.2}x", c.search_predicted_batches_per_s / c.start_predicted_batches_per_s.max(1e-12)));
        row.push(secs(c.total_s));
        row.push(c.peak_rss_mib.map_or("-".into(), |m| format!("{m:.0} MiB")));
        t.add_row(row);
    }
    println!("{t}");
    for c in cells {
        for b in c.baselines.iter().filter(|b| b.note.is_some()) {
            println!("{} tables on {} nodes, {}: {}", c.tables, c.nodes, b.strategy, b.note.as_deref().unwrap_or(""));
        }
    }
    // How the search's time grows with tables x cores: the slope of log time on log size
    // over the cells (1 is linear).
    let pts: Vec<(f64, f64)> = cells
        .iter()
        .filter(|c| c.search_s > 0.0)
        .map(|c| (((c.tables as f64) * c.cores as f64).ln(), c.search_s.ln()))
        .collect();
    if let Some(slope) = slope(&pts) {
        println!(
            "search time grows as (tables x cores)^{slope:.2} over these cells ({} moves each, {} cores per node; 1.00 is linear)",
            a.iterations, a.cores
        );
    }
    println!("gain: the search's predicted throughput over its start's (the best baseline by the same model).");
}

/// Least-squares slope of `y` on `x`; none with fewer than two distinct `x`.
fn slope(p: &[(f64, f64)]) -> Option<f64> {
    let n = p.len() as f64;
    let mx = p.iter().map(|q| q.0).sum::<f64>() / n;
    let my = p.iter().map(|q| q.1).sum::<f64>() / n;
    let sxx: f64 = p.iter().map(|q| (q.0 - mx).powi(2)).sum();
    let sxy: f64 = p.iter().map(|q| (q.0 - mx) * (q.1 - my)).sum();
    (sxx > 1e-9).then(|| sxy / sxx)
}

fn secs(s: f64) -> String {
    if s < 1.0 { format!("{:.0} ms", s * 1e3) } else { format!("{s:.1} s") }
}

/// Resets this process's resident high-water mark (Linux: `5` to `/proc/self/clear_refs`).
fn reset_peak_rss() -> bool {
    std::fs::write("/proc/self/clear_refs", "5").is_ok()
}

/// This process's resident high-water mark since the last reset, MiB.
fn peak_rss_mib() -> Option<f64> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = s.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_growth_slope_reads_linear_and_quadratic() {
        let lin: Vec<(f64, f64)> = [1.0f64, 10.0, 100.0].iter().map(|&x| (x.ln(), (3.0 * x).ln())).collect();
        assert!((slope(&lin).unwrap() - 1.0).abs() < 1e-9);
        let quad: Vec<(f64, f64)> = [1.0f64, 10.0, 100.0].iter().map(|&x| (x.ln(), (x * x).ln())).collect();
        assert!((slope(&quad).unwrap() - 2.0).abs() < 1e-9);
        assert!(slope(&[(1.0, 1.0)]).is_none());
    }
}
