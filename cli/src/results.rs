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
use embtune_protocol::tuning::{BestRecord, Job, Trial};
use embtune_tuner::job::Tuner;
use embtune_tuner::store::{Store, StoreError};

use crate::cluster::{Target, read_coordinator_file, runtime};
use crate::ui;

#[derive(Subcommand, Debug)]
pub enum ResultsCmd {
    /// Every job: dataset, status, trials, best value.
    List(Source),
    /// One job with all its trials.
    Show {
        job: String,
        #[command(flatten)]
        source: Source,
    },
    /// The best plan found for a dataset (a preset name, with @scale when scaled), per cluster.
    Best {
        #[arg(long)]
        preset: String,
        #[command(flatten)]
        source: Source,
    },
    /// Two jobs side by side: best values, baselines and the best-so-far curves.
    Compare {
        a: String,
        b: String,
        #[command(flatten)]
        source: Source,
    },
    /// A job's trials as JSON or CSV (one row per trial).
    Export {
        job: String,
        #[arg(long, default_value = "json")]
        format: String,
        #[command(flatten)]
        source: Source,
    },
}

/// Where results come from: a data dir, or a running coordinator.
#[derive(Args, Debug, Clone)]
pub struct Source {
    /// The coordinator's data dir (default embtune-data).
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// Ask this coordinator instead.
    #[arg(long, value_name = "HOST:PORT", requires = "cluster")]
    pub coordinator: Option<std::net::SocketAddr>,
    #[arg(long, value_name = "DIR")]
    pub cluster: Option<PathBuf>,
    #[arg(long)]
    pub json: bool,
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

fn job_row(j: &Job, trials: usize) -> serde_json::Value {
    json!({
        "job": j.id,
        "preset": j.dataset,
        "status": j.status.label(),
        "trials": trials,
        "objective": j.config.objective.name(),
        "best": j.best.map(|b| b.1),
        "cluster": j.cluster.key(),
        "created_ms": j.created_ms,
    })
}

pub fn run(cmd: ResultsCmd) -> Result<()> {
    match cmd {
        ResultsCmd::List(s) => {
            let r = Results::open(&s)?;
            let jobs = r.jobs()?;
            let rows: Vec<serde_json::Value> = jobs
                .iter()
                .map(|j| {
                    let n = r.job(&j.id).map(|(_, t)| t.len()).unwrap_or(0);
                    job_row(j, n)
                })
                .collect();
            if s.json {
                println!("{}", serde_json::to_string_pretty(&rows)?);
            } else {
                let mut t = ui::table(&["job", "dataset", "status", "trials", "objective", "best", "cluster"]);
                for row in &rows {
                    t.add_row(vec![
                        row["job"].as_str().unwrap().to_string(),
                        row["preset"].as_str().unwrap().to_string(),
                        row["status"].as_str().unwrap().to_string(),
                        row["trials"].to_string(),
                        row["objective"].as_str().unwrap().to_string(),
                        row["best"].as_f64().map_or("-".into(), |b| format!("{b:.1}")),
                        row["cluster"].as_str().unwrap().to_string(),
                    ]);
                }
                println!("{t}");
            }
        }
        ResultsCmd::Show { job, source } => {
            let r = Results::open(&source)?;
            let (j, trials) = r.job(&job)?;
            if source.json {
                let mut v = crate::tune::summary(&j, &trials);
                v["trials"] = serde_json::to_value(&trials)?;
                v["trials_count"] = json!(trials.len());
                println!("{}", serde_json::to_string_pretty(&v)?);
            } else {
                crate::tune::print_summary(&j, &trials);
            }
        }
        ResultsCmd::Best { preset, source } => {
            let r = Results::open(&source)?;
            let best = r.best(&preset)?;
            if best.is_empty() {
                bail!("no finished job for `{preset}` yet (datasets are named as in `embtune results list`)");
            }
            if source.json {
                let v: Vec<serde_json::Value> = best.iter().map(|(rec, t)| json!({
                    "preset": rec.dataset, "cluster": rec.cluster, "job": rec.job, "trial": rec.trial, "best": rec.value,
                    "plan": t.as_ref().map(|t| &t.plan),
                })).collect();
                println!("{}", serde_json::to_string_pretty(&if v.len() == 1 { v[0].clone() } else { json!(v) })?);
            } else {
                for (rec, t) in &best {
                    println!(
                        "{} on {}: {:.1} (job {}, trial {})",
                        rec.dataset, rec.cluster, rec.value, rec.job, rec.trial
                    );
                    if let Some(t) = t {
                        println!("  {}", t.plan.summary());
                    }
                }
                println!(
                    "export a plan for `embtune bench --plan`: embtune results best --preset {preset} --json | jq .plan > plan.json"
                );
            }
        }
        ResultsCmd::Compare { a, b, source } => {
            let r = Results::open(&source)?;
            let (ja, ta) = r.job(&a)?;
            let (jb, tb) = r.job(&b)?;
            let curve = |j: &Job, t: &[Trial]| Tuner::best_curve(t, j.config.objective);
            if source.json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&json!({
                        "a": crate::tune::summary(&ja, &ta), "b": crate::tune::summary(&jb, &tb),
                        "a_curve": curve(&ja, &ta), "b_curve": curve(&jb, &tb),
                    }))?
                );
            } else {
                let mut t = ui::table(&["", &a, &b]);
                let s = |j: &Job| j.best.map_or("-".into(), |x| format!("{:.1} {}", x.1, j.config.objective.unit()));
                t.add_row(vec!["dataset".into(), ja.dataset.clone(), jb.dataset.clone()]);
                t.add_row(vec!["search".into(), format!("{:?}", ja.config.search), format!("{:?}", jb.config.search)]);
                t.add_row(vec!["best".into(), s(&ja), s(&jb)]);
                t.add_row(vec!["trials".into(), ta.len().to_string(), tb.len().to_string()]);
                println!("{t}");
                let (ca, cb) = (curve(&ja, &ta), curve(&jb, &tb));
                println!("best so far by trial:");
                for i in 0..ca.len().max(cb.len()) {
                    let f = |c: &[(u32, f64)]| c.get(i).map_or(String::new(), |x| format!("#{:<3} {:>10.1}", x.0, x.1));
                    println!("  {:<20} {}", f(&ca), f(&cb));
                }
            }
        }
        ResultsCmd::Export { job, format, source } => {
            let r = Results::open(&source)?;
            let (_, trials) = r.job(&job)?;
            match format.as_str() {
                "json" => println!("{}", serde_json::to_string_pretty(&trials)?),
                "csv" => {
                    println!("trial,kind,plan,predicted,value,ci,batches_per_s,mean_us,p50_us,p99_us,errors,failure");
                    for t in &trials {
                        let m = t.measured.clone().unwrap_or_default();
                        let q = |s: &str| format!("\"{}\"", s.replace('"', "'"));
                        println!(
                            "{},{},{},{},{},{},{},{},{},{},{},{}",
                            t.n,
                            t.kind.label(),
                            q(&t.plan.summary()),
                            t.predicted,
                            if t.measured.is_some() { m.value.to_string() } else { String::new() },
                            m.ci,
                            m.batches_per_s,
                            m.mean_us,
                            m.p50_us,
                            m.p99_us,
                            m.errors,
                            q(t.failure.as_deref().unwrap_or(""))
                        );
                    }
                }
                f => bail!("unknown format `{f}`; use json or csv"),
            }
        }
    }
    Ok(())
}
