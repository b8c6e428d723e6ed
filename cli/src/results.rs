//! `embtune results`: what tuning jobs found, from the store.
//!
//! The store is sled files in a data dir. While a coordinator runs it holds the store's lock;
//! then the results are read through that coordinator's API (found from `coordinator.json` in
//! the same data dir), so the same command works with the cluster up or down.

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand};
use serde_json::json;

use embtune_client::CoordinatorClient;
use embtune_dashboards::views;
use embtune_protocol::tuning::{BestRecord, Job, SearchKind, Trial};
use embtune_tuner::job::Tuner;
use embtune_tuner::store::{Store, StoreError};

use crate::cluster::{Target, read_coordinator_file, runtime};
use crate::ui;

#[derive(Subcommand, Debug)]
pub enum ResultsCmd {
    /// Every job: dataset, status, trials, best value and its speed-up.
    #[command(after_help = "Examples:
  embtune results list                               jobs in ./embtune-data
  embtune results list --data-dir state --json       as JSON, from another data dir
  embtune results list --coordinator 10.0.0.1:7700 --cluster cluster")]
    List {
        #[command(flatten)]
        source: Source,
        /// Print JSON (one object per job) instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// One job with all its trials: each trial's plan, knobs, measurements and times, then the
    /// best plan beside every baseline.
    #[command(after_help = "Examples:
  embtune results show job-1733229913-1
  embtune results show job-1733229913-1 --json | jq '.trials[] | {n, measured}'")]
    Show {
        /// The job's id, as `embtune results list` prints it.
        #[arg(value_name = "JOB")]
        job: String,
        #[command(flatten)]
        source: Source,
        /// Print JSON (the job's summary and its trials as stored) instead of tables.
        #[arg(long)]
        json: bool,
    },
    /// The best plan found for a dataset, per cluster. The dataset is a preset name with
    /// `--scale` (or written `avazu@0.05`), or a model file's name; without an exact match the
    /// datasets that start with it are listed.
    #[command(after_help = "Examples:
  embtune results best --preset avazu --scale 0.05
  embtune results best --preset criteo-kaggle@0.01 --json | jq .plan > plan.json
  embtune bench --plan plan.json --preset criteo-kaggle --scale 0.01")]
    Best {
        /// The dataset: a preset name (`avazu`) or the name `embtune results list` prints
        /// (`avazu@0.05`).
        #[arg(long, value_name = "DATASET")]
        preset: String,
        /// The scale the preset was tuned at (`--preset avazu --scale 0.05` is `avazu@0.05`).
        #[arg(long, value_name = "X")]
        scale: Option<f64>,
        #[command(flatten)]
        source: Source,
        /// Print JSON (with the plan, for `embtune bench --plan`) instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Two jobs side by side: their settings, best values, every baseline with the best plan's
    /// speed-up over it, and the best-so-far curves. Warns when the jobs tuned different
    /// datasets, objectives or clusters.
    #[command(after_help = "Examples:
  embtune results compare job-1733229913-1 job-1733231020-2
  embtune results compare JOB_A JOB_B --json | jq '.a.speedup_vs, .b.speedup_vs'")]
    Compare {
        /// The first job's id (column A).
        #[arg(value_name = "A")]
        a: String,
        /// The second job's id (column B).
        #[arg(value_name = "B")]
        b: String,
        #[command(flatten)]
        source: Source,
        /// Print JSON (both jobs' summaries and curves) instead of tables.
        #[arg(long)]
        json: bool,
    },
    /// A job's trials, one row per trial: JSON as stored, or CSV with one column per
    /// parameter (as Optuna's trials data frame: number, value, start and end, duration,
    /// params_*), for pandas or a spreadsheet.
    #[command(after_help = "Examples:
  embtune results export job-1733229913-1 --format csv > trials.csv
  python3 -c 'import pandas as pd; print(pd.read_csv(\"trials.csv\").sort_values(\"value\"))'
  embtune results export job-1733229913-1 --format json | jq length")]
    Export {
        /// The job's id, as `embtune results list` prints it.
        #[arg(value_name = "JOB")]
        job: String,
        /// The output format.
        #[arg(long, value_enum, default_value_t = ExportFormat::Json)]
        format: ExportFormat,
        #[command(flatten)]
        source: Source,
    },
}

/// What `results export` writes.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExportFormat {
    /// The trials as stored, a JSON array.
    Json,
    /// One row per trial, one column per parameter and measurement.
    Csv,
}

/// Where results come from: a data dir, or a running coordinator.
#[derive(Args, Debug, Clone)]
pub struct Source {
    /// The coordinator's data dir (default embtune-data). While a coordinator runs on it, the
    /// results are read through that coordinator.
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// Ask this running coordinator instead of reading a data dir.
    #[arg(long, value_name = "HOST:PORT", requires = "cluster")]
    pub coordinator: Option<std::net::SocketAddr>,
    /// The cluster's certificate directory (`embtune cluster init --out DIR`), with
    /// --coordinator.
    #[arg(long, value_name = "DIR")]
    pub cluster: Option<PathBuf>,
}

/// An open source of results.
pub enum Results {
    Local(Store),
    Remote(CoordinatorClient, tokio::runtime::Runtime),
}

impl Results {
    pub fn open(s: &Source) -> Result<Results> {
        if let (Some(c), Some(d)) = (&s.coordinator, &s.cluster) {
            return remote(Target { coordinator: *c, cluster: d.clone() });
        }
        let dir = s.data_dir.clone().unwrap_or_else(|| PathBuf::from("embtune-data"));
        if !dir.join("store").exists() {
            bail!(
                "no results in {}: run `embtune tune --data-dir {}` first, or pass --data-dir",
                dir.display(),
                dir.display()
            );
        }
        match Store::try_open(&dir.join("store")) {
            Ok(st) => Ok(Results::Local(st)),
            Err(StoreError::Locked { .. }) => {
                let f = read_coordinator_file(&dir)
                    .context("the store is locked by a process that left no coordinator.json")?;
                // A coordinator killed a moment ago leaves its coordinator.json, and its lock
                // for a moment: read the store once the lock goes rather than wait on a dead
                // process's address; and if a live one does not answer, try the store too.
                if !crate::cluster::process_alive(f.pid) {
                    return Ok(Results::Local(Store::open(&dir.join("store"))?));
                }
                remote(Target { coordinator: f.quic, cluster: dir.join("cluster") })
                    .or_else(|e| Store::open(&dir.join("store")).map(Results::Local).map_err(|_| e))
            }
            Err(e) => Err(e.into()),
        }
    }

    pub fn jobs(&self) -> Result<Vec<Job>> {
        Ok(match self {
            Results::Local(s) => s.jobs()?,
            Results::Remote(c, rt) => rt.block_on(c.jobs())?,
        })
    }

    pub fn job(&self, id: &str) -> Result<(Job, Vec<Trial>)> {
        Ok(match self {
            Results::Local(s) => (s.job(id)?, s.trials(id)?),
            Results::Remote(c, rt) => rt.block_on(c.job(id))?,
        })
    }

    pub fn best(&self, dataset: &str) -> Result<Vec<(BestRecord, Option<Trial>)>> {
        Ok(match self {
            Results::Local(s) => s
                .best_for(dataset)?
                .into_iter()
                .map(|r| {
                    let t = s.trials(&r.job).ok().and_then(|ts| ts.into_iter().find(|t| t.n == r.trial));
                    (r, t)
                })
                .collect(),
            Results::Remote(c, rt) => rt.block_on(c.best_for(dataset))?,
        })
    }
}

fn remote(t: Target) -> Result<Results> {
    let rt = runtime()?;
    let c = rt.block_on(t.client())?;
    Ok(Results::Remote(c, rt))
}

/// The dataset name `results best` looks for: `avazu` with `--scale 0.05` is `avazu@0.05`, as
/// `tune` names it (a scale of 1 adds nothing).
pub fn dataset_name(preset: &str, scale: Option<f64>) -> String {
    match scale {
        Some(s) if s != 1.0 && !preset.contains('@') => format!("{preset}@{s}"),
        _ => preset.to_string(),
    }
}

/// How a job searched, in words.
fn search_name(s: SearchKind) -> &'static str {
    match s {
        SearchKind::Model => "model (annealing on the cost model, Bayesian knobs)",
        SearchKind::Random => "random (the yardstick)",
    }
}

/// A value with its unit, or `-`.
fn value(v: Option<f64>, unit: &str) -> String {
    v.filter(|v| v.is_finite()).map_or("-".into(), |v| format!("{} {unit}", views::fmt_value(v)))
}

pub fn run(cmd: ResultsCmd) -> Result<()> {
    match cmd {
        ResultsCmd::List { source, json } => {
            let r = Results::open(&source)?;
            let jobs = r.jobs()?;
            let rows: Vec<serde_json::Value> = jobs
                .iter()
                .map(|j| {
                    let trials = r.job(&j.id).map(|(_, t)| t).unwrap_or_default();
                    views::list_row_of(j, &trials, false)
                })
                .collect();
            if json {
                println!("{}", serde_json::to_string_pretty(&rows)?);
            } else {
                let mut t =
                    ui::table(&["job", "dataset", "status", "trials", "objective", "best", "speed-up", "cluster"]);
                for (row, j) in rows.iter().zip(&jobs) {
                    let speedup = match j.headline() {
                        Some(h) if h.tie => format!("{:.2}x {} (tie)", h.speedup, h.baseline),
                        Some(h) => format!("{:.2}x {}", h.speedup, h.baseline),
                        None => "-".into(),
                    };
                    t.add_row(vec![
                        j.id.clone(),
                        j.dataset.clone(),
                        j.status.label().to_string(),
                        row["trials"].to_string(),
                        j.config.objective.name().to_string(),
                        value(j.best.map(|b| b.1), j.config.objective.unit()),
                        speedup,
                        j.cluster.key(),
                    ]);
                }
                println!("{t}");
                if let Some(j) = jobs.first() {
                    println!(
                        "best and speed-up: {}; `embtune results show {}` for the trials",
                        j.figures_source(),
                        j.id
                    );
                }
            }
        }
        ResultsCmd::Show { job, source, json } => {
            let r = Results::open(&source)?;
            let (j, trials) = r.job(&job)?;
            if json {
                let mut v = crate::job_view::summary(&j, &trials);
                v["trials"] = serde_json::to_value(&trials)?;
                v["trial_rows"] = json!(trials.iter().map(|t| views::trial_row(&j, t)).collect::<Vec<_>>());
                v["trials_count"] = json!(trials.len());
                println!("{}", serde_json::to_string_pretty(&v)?);
            } else {
                crate::job_view::print_summary(&j, &trials);
            }
        }
        ResultsCmd::Best { preset, scale, source, json } => {
            let r = Results::open(&source)?;
            let dataset = dataset_name(&preset, scale);
            let best = r.best(&dataset)?;
            if best.is_empty() {
                let jobs = r.jobs()?;
                let base = dataset.split('@').next().unwrap_or(&dataset);
                let mut near: Vec<String> = jobs
                    .iter()
                    .filter(|j| j.dataset == base || j.dataset.starts_with(&format!("{base}@")))
                    .map(|j| j.dataset.clone())
                    .collect();
                near.sort();
                near.dedup();
                if near.is_empty() {
                    bail!(
                        "no finished job for `{dataset}` yet; the datasets with jobs are: {} (see `embtune results list`)",
                        {
                            let mut all: Vec<String> = jobs.iter().map(|j| j.dataset.clone()).collect();
                            all.sort();
                            all.dedup();
                            if all.is_empty() { "none".to_string() } else { all.join(", ") }
                        }
                    );
                }
                let hint: Vec<String> = near
                    .iter()
                    .map(|d| match d.split_once('@') {
                        Some((p, s)) => format!("  {d}: embtune results best --preset {p} --scale {s}"),
                        None => format!("  {d}: embtune results best --preset {d}"),
                    })
                    .collect();
                bail!("no finished job for `{dataset}`; these datasets match `{base}`:\n{}", hint.join("\n"));
            }
            if json {
                let v: Vec<serde_json::Value> = best.iter().map(|(rec, t)| json!({
                    "preset": rec.dataset, "cluster": rec.cluster, "job": rec.job, "trial": rec.trial, "best": rec.value,
                    "plan": t.as_ref().map(|t| &t.plan),
                })).collect();
                println!("{}", serde_json::to_string_pretty(&if v.len() == 1 { v[0].clone() } else { json!(v) })?);
            } else {
                for (rec, t) in &best {
                    println!(
                        "{} on {}: {} (job {}, trial {})",
                        rec.dataset,
                        rec.cluster,
                        views::fmt_value(rec.value),
                        rec.job,
                        rec.trial
                    );
                    if let Some(t) = t {
                        println!("  {}; {}", t.plan.summary(), views::TrialParams::of(&t.plan).text());
                    }
                }
                println!(
                    "export a plan for `embtune bench --plan`: embtune results best --preset {dataset} --json | jq .plan > plan.json"
                );
            }
        }
        ResultsCmd::Compare { a, b, source, json } => {
            let r = Results::open(&source)?;
            let (ja, ta) = r.job(&a)?;
            let (jb, tb) = r.job(&b)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&views::compare((&ja, &ta), (&jb, &tb)))?);
                return Ok(());
            }
            for w in views::compare_warnings(&ja, &jb) {
                eprintln!("warning: {w}");
            }
            let mut t = ui::table(&["", &a, &b]);
            let row = |t: &mut comfy_table::Table, k: &str, f: &dyn Fn(&Job, &[Trial]) -> String| {
                t.add_row(vec![k.to_string(), f(&ja, &ta), f(&jb, &tb)]);
            };
            row(&mut t, "dataset", &|j, _| j.dataset.clone());
            row(&mut t, "cluster", &|j, _| j.cluster.key());
            row(&mut t, "objective", &|j, _| format!("{} ({})", j.config.objective.name(), j.config.objective.unit()));
            row(&mut t, "search", &|j, _| search_name(j.config.search).to_string());
            row(&mut t, "trials", &|_, tr| {
                format!("{} ({} failed)", tr.len(), tr.iter().filter(|t| t.measured.is_none()).count())
            });
            row(&mut t, "best", &|j, _| match j.best {
                Some((n, v)) => format!("{} (trial {n})", value(Some(v), j.config.objective.unit())),
                None => "-".into(),
            });
            row(&mut t, "figures from", &|j, _| j.figures_source());
            let mut names: Vec<String> =
                ja.reported_baselines().keys().chain(jb.reported_baselines().keys()).cloned().collect();
            names.sort();
            names.dedup();
            for name in &names {
                row(&mut t, &format!("vs {name}"), &|j, _| {
                    let v = j.reported_baselines().get(name).copied();
                    let x = j.speedup_vs().get(name).copied();
                    let tie = j
                        .head_to_head
                        .as_ref()
                        .and_then(|h| h.versus.get(name))
                        .is_some_and(|v| v.verdict == embtune_protocol::tuning::Verdict::Tie);
                    match (x, v) {
                        (Some(x), v) => {
                            format!(
                                "{x:.2}x{} over {}",
                                if tie { " (tie)" } else { "" },
                                value(v, j.config.objective.unit())
                            )
                        }
                        _ => "-".into(),
                    }
                });
            }
            row(&mut t, "verdict", &|j, _| views::verdict_text(j).unwrap_or_else(|| "-".into()));
            row(&mut t, "cost-model error", &|j, _| j.model_error.map_or("-".into(), |e| format!("{:.0}%", e * 100.0)));
            println!("{t}");
            let curve = |j: &Job, t: &[Trial]| Tuner::best_curve(t, j.config.objective);
            let (ca, cb) = (curve(&ja, &ta), curve(&jb, &tb));
            println!("best search trial so far, by trial (each trial's own measurement):");
            println!("  {:<22} {}", a, b);
            for i in 0..ca.len().max(cb.len()) {
                let f = |c: &[(u32, f64)]| {
                    c.get(i).map_or(String::new(), |x| format!("#{:<3} {:>10}", x.0, views::fmt_value(x.1)))
                };
                println!("  {:<22} {}", f(&ca), f(&cb));
            }
        }
        ResultsCmd::Export { job, format, source } => {
            let r = Results::open(&source)?;
            let (j, trials) = r.job(&job)?;
            match format {
                ExportFormat::Json => println!("{}", serde_json::to_string_pretty(&trials)?),
                ExportFormat::Csv => print!("{}", csv(&j, &trials)),
            }
        }
    }
    Ok(())
}

/// The CSV columns: Optuna's trials data frame's first ones (`number`, `value`,
/// `datetime_start`, `datetime_complete`, `duration`, `state`), then one column per parameter
/// (`params_*`) and what else a trial measured.
pub const CSV_HEADER: &str = "number,value,datetime_start,datetime_complete,duration_s,state,kind,\
params_sub_batch,params_inflight_per_worker,params_prefetch_min,params_prefetch_max,params_hot_rows,\
params_hot_tables,params_blocked_tables,params_replicated_tables,params_client_tables,params_sharded_tables,params_owned_tables,\
predicted,ci,rounds,side_by_side,batches_per_s,mean_us,p50_us,p99_us,errors,plan,failure";

/// A job's trials as CSV ([`CSV_HEADER`]); times in UTC, empty cells for what a trial lacks.
pub fn csv(job: &Job, trials: &[Trial]) -> String {
    let q = |s: &str| format!("\"{}\"", s.replace('"', "\"\""));
    let f = |v: f64| if v.is_finite() { v.to_string() } else { String::new() };
    let o = |v: Option<u16>| v.map_or(String::new(), |v| v.to_string());
    let mut out = String::from(CSV_HEADER);
    out.push('\n');
    for t in trials {
        let p = views::TrialParams::of(&t.plan);
        let m = t.measured.as_ref();
        let state = if m.is_some() { "COMPLETE" } else { "FAIL" };
        let side = job.head_to_head.as_ref().and_then(|h| h.contenders.get(&t.n)).map_or(String::new(), |v| f(*v));
        let cells = [
            t.n.to_string(),
            m.map_or(String::new(), |m| f(m.value)),
            ui::utc(t.started_ms),
            ui::utc(t.ended_ms),
            f(t.ended_ms.saturating_sub(t.started_ms) as f64 / 1000.0),
            state.into(),
            t.kind.label(),
            p.sub_batch.to_string(),
            p.inflight_per_worker.to_string(),
            o(p.prefetch_min),
            o(p.prefetch_max),
            p.hot_rows.to_string(),
            p.hot_tables.to_string(),
            p.blocked_tables.to_string(),
            p.replicated_tables.to_string(),
            p.client_tables.to_string(),
            p.sharded_tables.to_string(),
            p.owned_tables.to_string(),
            f(t.predicted),
            m.map_or(String::new(), |m| f(m.ci)),
            m.map_or(String::new(), |m| m.rounds.len().to_string()),
            side,
            m.map_or(String::new(), |m| f(m.batches_per_s)),
            m.map_or(String::new(), |m| f(m.mean_us)),
            m.map_or(String::new(), |m| f(m.p50_us)),
            m.map_or(String::new(), |m| f(m.p99_us)),
            m.map_or(String::new(), |m| m.errors.to_string()),
            q(&t.plan.summary()),
            q(t.failure.as_deref().unwrap_or("")),
        ];
        out.push_str(&cells.join(","));
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_preset_and_a_scale_name_the_dataset_as_tune_does() {
        assert_eq!(dataset_name("avazu", Some(0.05)), "avazu@0.05");
        assert_eq!(dataset_name("avazu", None), "avazu");
        assert_eq!(dataset_name("avazu", Some(1.0)), "avazu");
        assert_eq!(dataset_name("avazu@0.05", Some(0.05)), "avazu@0.05");
    }

    #[test]
    fn the_csv_has_one_column_per_parameter_and_a_cell_for_each() {
        let cols = CSV_HEADER.split(',').count();
        assert!(CSV_HEADER.starts_with("number,value,datetime_start,datetime_complete,"));
        assert!(CSV_HEADER.contains(",params_sub_batch,params_inflight_per_worker,params_prefetch_min,"));
        let job: Job = serde_json::from_value(json!({
            "id": "j", "dataset": "d", "spec": {"name": "m", "batch_size": 1, "seed": 1, "tables": []},
            "spec_digest": 0, "cluster": {"workers": [], "cpu_model": ""}, "config": serde_json::to_value(
                embtune_protocol::tuning::JobConfig::default()).unwrap(),
            "status": "done", "created_ms": 0, "updated_ms": 0, "best": null, "baselines": {},
            "model_error": null, "elapsed_s": 0.0
        }))
        .unwrap();
        let t: Trial = serde_json::from_value(json!({
            "job": "j", "n": 0, "kind": "search", "predicted": null, "measured": null, "failure": "a, \"quoted\" failure",
            "started_ms": 1000, "ended_ms": 2500, "plan": {"strategy": "s", "spec_digest": 0,
            "topology": {"workers": [{"cores": 1, "memory_bytes": 1}]}, "tables": [],
            "knobs": {"sub_batch": 32, "inflight_per_worker": 4}}
        }))
        .unwrap();
        let text = csv(&job, &[t]);
        let row = text.lines().nth(1).unwrap();
        assert!(row.starts_with("0,,1970-01-01 00:00:01,1970-01-01 00:00:02,1.5,FAIL,search,32,4,"), "{row}");
        assert!(row.ends_with(",\"a, \"\"quoted\"\" failure\""), "{row}");
        // Quoted cells hold commas: count the columns outside quotes.
        let mut n = 1;
        let mut quoted = false;
        for c in row.chars() {
            match c {
                '"' => quoted = !quoted,
                ',' if !quoted => n += 1,
                _ => {}
            }
        }
        assert_eq!(n, cols, "{row}");
    }
}
