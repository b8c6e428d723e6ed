//! The JSON of tuning jobs, as pure functions of the stored records: built here once and used
//! by the dashboard's API and by the CLI (`embtune tune --json`, `embtune results ... --json`),
//! so that every view prints the same figures from the same measurements. The headline figures
//! (best, the baseline a speed-up is quoted against, the speed-up and whether it is a tie) come
//! from [`Job::headline`]; `figures_source` says which measurement they come from.

use serde_json::{Value, json};

use embtune_protocol::tuning::{Job, JobStatus, Objective, Trial, TrialKind};
use embtune_protocol::{DataFlow, Placement, Plan};
use embtune_tuner::job::Tuner;

/// The baselines a job measures before its search.
pub fn baseline_count(job: &Job) -> usize {
    embtune_tuner::job::baseline_count(&job.config)
}

/// The baseline a job's speed-up is quoted against: (name, reported value). See
/// [`Job::headline`].
pub fn best_baseline(job: &Job) -> Option<(String, f64)> {
    job.headline().map(|h| (h.baseline, h.value))
}

/// How many times better the job's best is than the baseline of [`best_baseline`] (1 for a
/// tie and when a baseline is the best), from the same measurements as `best`.
pub fn speedup(job: &Job) -> Option<f64> {
    job.headline().map(|h| h.speedup).filter(|x| x.is_finite())
}

/// A finite number, or null: JSON has no NaN.
fn num(x: f64) -> Value {
    if x.is_finite() { json!(x) } else { Value::Null }
}

/// What a trial's plan sets, one value per parameter (the columns of a trials table, as
/// Optuna's trials data frame has one per parameter).
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct TrialParams {
    /// Bags per task of a replicated table.
    pub sub_batch: u32,
    /// Requests in flight per worker.
    pub inflight_per_worker: u32,
    /// The lowest and highest prefetch distance of the tables read by a prefetching gather
    /// (direct or hot), `None` when no table is.
    pub prefetch_min: Option<u16>,
    pub prefetch_max: Option<u16>,
    /// Rows copied into hot caches, over every table, and the tables that have one.
    pub hot_rows: u64,
    pub hot_tables: usize,
    pub blocked_tables: usize,
    pub replicated_tables: usize,
    /// Tables every client holds and pools itself.
    pub client_tables: usize,
    pub sharded_tables: usize,
    pub owned_tables: usize,
}

impl TrialParams {
    pub fn of(plan: &Plan) -> TrialParams {
        let mut p = TrialParams {
            sub_batch: plan.knobs.sub_batch,
            inflight_per_worker: plan.knobs.inflight_per_worker,
            prefetch_min: None,
            prefetch_max: None,
            hot_rows: 0,
            hot_tables: 0,
            blocked_tables: 0,
            replicated_tables: 0,
            client_tables: 0,
            sharded_tables: 0,
            owned_tables: 0,
        };
        for t in &plan.tables {
            let pf = match t.flow {
                DataFlow::Direct { prefetch } => Some(prefetch),
                DataFlow::HotCache { hot_rows, prefetch } => {
                    p.hot_rows += hot_rows as u64;
                    p.hot_tables += 1;
                    Some(prefetch)
                }
                DataFlow::Blocked { .. } => {
                    p.blocked_tables += 1;
                    None
                }
            };
            if let Some(pf) = pf {
                p.prefetch_min = Some(p.prefetch_min.map_or(pf, |m| m.min(pf)));
                p.prefetch_max = Some(p.prefetch_max.map_or(pf, |m| m.max(pf)));
            }
            match t.placement {
                Placement::Replicated => p.replicated_tables += 1,
                Placement::Client => p.client_tables += 1,
                Placement::Owned(_) => p.owned_tables += 1,
                _ => p.sharded_tables += 1,
            }
        }
        p
    }

    /// The prefetch distance as text: `16`, `0–32` for a mix, `–` for none.
    pub fn prefetch_text(&self) -> String {
        match (self.prefetch_min, self.prefetch_max) {
            (Some(a), Some(b)) if a == b => a.to_string(),
            (Some(a), Some(b)) => format!("{a}–{b}"),
            _ => "–".into(),
        }
    }

    /// The knobs in one short line: `pf 16, sub-batch 64, 8 in flight, hot 0`.
    pub fn text(&self) -> String {
        format!(
            "pf {}, sub-batch {}, {} in flight, hot {}",
            self.prefetch_text(),
            self.sub_batch,
            self.inflight_per_worker,
            if self.hot_tables == 0 {
                "0".to_string()
            } else {
                format!("{} rows in {} tables", self.hot_rows, self.hot_tables)
            }
        )
    }
}

/// The verdict of the head-to-head against each baseline, as JSON: `{median, lo, hi, rounds,
/// verdict}`; the winner itself has `verdict: "winner"`.
fn versus(job: &Job) -> Value {
    let Some(h) = &job.head_to_head else { return Value::Null };
    let mut m = serde_json::Map::new();
    for name in h.baselines.keys() {
        let v = match h.versus.get(name) {
            Some(v) => json!({"median": num(v.median), "lo": num(v.lo), "hi": num(v.hi), "rounds": v.rounds,
                              "verdict": v.verdict.label()}),
            None if h.winner_baseline.as_deref() == Some(name.as_str()) => json!({"verdict": "winner"}),
            None => Value::Null,
        };
        m.insert(name.clone(), v);
    }
    Value::Object(m)
}

/// A one-line sentence for a job's result, the same in every view: a win, a tie or a baseline.
pub fn verdict_text(job: &Job) -> Option<String> {
    let h = job.headline()?;
    let o = job.config.objective;
    let rounds = job.head_to_head.as_ref().map_or(0, |x| x.rounds);
    Some(match (h.tied_trial, h.winner_is_baseline) {
        (Some(t), _) => format!(
            "tie: trial {t} and {} cannot be told apart in {rounds} side-by-side rounds; the simpler plan, {}, is kept",
            h.baseline, h.baseline
        ),
        (None, true) => {
            format!("no searched plan beat every baseline side by side: {} is the best plan", h.baseline)
        }
        (None, false) if h.tie => format!(
            "trial {} ties with {} ({:.2}x: the rounds cannot tell them apart)",
            h.best_trial, h.baseline, h.speedup
        ),
        (None, false) => format!(
            "trial {} is {:.2}x {} ({} {} against {} {}), the baseline it leads least",
            h.best_trial,
            h.speedup,
            h.baseline,
            fmt_value(h.best),
            o.unit(),
            fmt_value(h.value),
            o.unit()
        ),
    })
}

/// Four significant figures or more, as the CLI prints values.
pub fn fmt_value(v: f64) -> String {
    if !v.is_finite() {
        "-".into()
    } else if v >= 1000.0 {
        format!("{v:.0}")
    } else {
        format!("{v:.1}")
    }
}

/// A job as `embtune tune --json` and `embtune results show --json` print it (without the
/// trials), and as the dashboard shows it: the contract fields (`job`, `trials`, `best`,
/// `baselines`, `speedup_vs`, `head_to_head`, `ceiling`, `ceiling_share`, `model_error`), the
/// headline (best baseline, speed-up, tie) and the job's progress.
pub fn summary(job: &Job, trials: &[Trial]) -> Value {
    let o = job.config.objective;
    let best = job.best.map(|b| b.1);
    let speedup_vs: serde_json::Map<String, Value> = job.speedup_vs().into_iter().map(|(k, v)| (k, num(v))).collect();
    let best_trial = job.best.and_then(|(n, _)| trials.iter().find(|t| t.n == n));
    let search = trials.iter().filter(|t| !matches!(t.kind, TrialKind::Baseline(_))).count();
    let headline = job.headline();
    json!({
        "job": job.id,
        "dataset": job.dataset,
        "preset": job.dataset,
        "status": job.status.label(),
        "failure": match &job.status { JobStatus::Failed(e) => Some(e), _ => None },
        "objective": o.name(),
        "unit": o.unit(),
        "maximise": o.maximise(),
        "search": job.config.search,
        // The search trials (`detail` and `results show --json` replace it with the trials).
        "trials": search,
        "trials_total": trials.len(),
        "search_trials": search,
        "target_trials": job.config.trials as usize + baseline_count(job),
        // Counted as the jobs list counts it, so that the two never disagree.
        "failed_trials": crate::counts::Counts::of(trials).failed,
        "best": best,
        "best_trial": job.best.map(|b| b.0),
        "best_plan": best_trial.map(|t| t.plan.summary()),
        "best_params": best_trial.map(|t| TrialParams::of(&t.plan)),
        "baselines": job.reported_baselines(),
        "baselines_trials": job.baselines,
        "figures_source": job.figures_source(),
        "ceiling": job.ceiling,
        "ceiling_share": job.ceiling_share(),
        // What bounded the cluster: the engines, the clients or the network (see `Bound`).
        "ceiling_bound": job.ceiling_bound().map(|b| b.name()),
        "ceiling_load": job.ceiling_load,
        "best_baseline": headline.as_ref().map(|h| json!({"name": h.baseline, "value": h.value})),
        "speedup": headline.as_ref().map(|h| num(h.speedup)),
        "tie": headline.as_ref().map(|h| h.tie),
        "tied_trial": headline.as_ref().and_then(|h| h.tied_trial),
        "winner_is_baseline": headline.as_ref().map(|h| h.winner_is_baseline),
        "verdict": verdict_text(job),
        "speedup_vs": speedup_vs,
        "versus": versus(job),
        "head_to_head": job.head_to_head,
        "model_error": job.model_error,
        "cluster": job.cluster.key(),
        "created_ms": job.created_ms,
        "updated_ms": job.updated_ms,
        "elapsed_s": job.elapsed_s,
    })
}

/// A row of the jobs list: the fields of `embtune results list --json` (`trials` counts every
/// trial, baselines included) and the dashboard's.
pub fn list_row(job: &Job, counts: crate::counts::Counts, running: bool) -> Value {
    json!({
        "job": job.id,
        "preset": job.dataset,
        "dataset": job.dataset,
        "status": job.status.label(),
        "running": running,
        "trials": counts.total,
        "measured_trials": counts.measured,
        "failed_trials": counts.failed,
        "search_trials": counts.search,
        "target_trials": job.config.trials as usize + baseline_count(job),
        "objective": job.config.objective.name(),
        "unit": job.config.objective.unit(),
        "maximise": job.config.objective.maximise(),
        "best": job.best.map(|b| b.1),
        "best_trial": job.best.map(|b| b.0),
        "best_baseline": best_baseline(job).map(|(name, value)| json!({"name": name, "value": value})),
        "speedup": speedup(job),
        "tie": job.headline().map(|h| h.tie),
        "cluster": job.cluster.key(),
        "created_ms": job.created_ms,
        "updated_ms": job.updated_ms,
    })
}

/// [`list_row`] for a job whose trials are at hand (the CLI's `results list --json`).
pub fn list_row_of(job: &Job, trials: &[Trial], running: bool) -> Value {
    list_row(job, crate::counts::Counts::of(trials), running)
}

/// The best baseline by its own trial (each trial's own measurement, before any side-by-side
/// rounds): what a trial's own measurement is compared with.
pub fn best_baseline_trial(job: &Job) -> Option<(String, f64)> {
    let o = job.config.objective;
    job.baselines
        .iter()
        .filter(|(_, v)| v.is_finite())
        .fold(None, |acc: Option<(&String, f64)>, (k, &v)| match acc {
            Some((_, b)) if !o.better(v, b) => acc,
            _ => Some((k, v)),
        })
        .map(|(k, v)| (k.clone(), v))
}

/// One row of a job's trials table, as the dashboard, `results show` and the CSV export show
/// it: what the trial measured on its own, its value side by side when it was a contender of
/// the head-to-head, its parameters and its start and end.
pub fn trial_row(job: &Job, t: &Trial) -> Value {
    let o = job.config.objective;
    let base = best_baseline_trial(job);
    let m = t.measured.as_ref();
    let side = job.head_to_head.as_ref().and_then(|h| h.contenders.get(&t.n).copied());
    json!({
        "n": t.n,
        "kind": t.kind.label(),
        "baseline": matches!(t.kind, TrialKind::Baseline(_)),
        "summary": t.plan.summary(),
        "params": TrialParams::of(&t.plan),
        "knobs": TrialParams::of(&t.plan).text(),
        "predicted": num(t.predicted),
        "measured": m.map(|m| num(m.value)),
        "ci": m.map(|m| num(m.ci)),
        "rounds": m.map(|m| m.rounds.len()),
        "side_by_side": side.map(num),
        "batches_per_s": m.map(|m| num(m.batches_per_s)),
        "mean_us": m.map(|m| num(m.mean_us)),
        "p50_us": m.map(|m| num(m.p50_us)),
        "p99_us": m.map(|m| num(m.p99_us)),
        "errors": m.map(|m| m.errors),
        // Trial against trial: this trial's own measurement over the best baseline's own.
        "vs_best_baseline": match (&base, m) {
            (Some((_, b)), Some(m)) => num(o.speedup(*b, m.value)),
            _ => Value::Null,
        },
        "vs_baseline_name": base.as_ref().map(|b| b.0.clone()),
        "failure": t.failure,
        "started_ms": t.started_ms,
        "ended_ms": t.ended_ms,
        "seconds": (t.ended_ms.saturating_sub(t.started_ms)) as f64 / 1000.0,
        // The tuner's time proposing it (the model and the search), before the deployment.
        "planning_s": t.planning_ms as f64 / 1000.0,
        "best": job.best.is_some_and(|b| b.0 == t.n),
        "tied": job.headline().and_then(|h| h.tied_trial) == Some(t.n),
    })
}

/// The best-so-far curve over the search trials, as `embtune results compare --json` prints it:
/// `[[trial, best], ...]`.
pub fn curve(job: &Job, trials: &[Trial]) -> Value {
    json!(Tuner::best_curve(trials, job.config.objective))
}

/// One point per measured trial, for the history chart.
pub fn points(trials: &[Trial]) -> Value {
    Value::Array(
        trials
            .iter()
            .filter_map(|t| {
                let m = t.measured.as_ref()?;
                Some(json!({
                    "n": t.n,
                    "kind": t.kind.label(),
                    "baseline": matches!(t.kind, TrialKind::Baseline(_)),
                    "value": num(m.value),
                    "ci": num(m.ci),
                    "predicted": num(t.predicted),
                }))
            })
            .collect(),
    )
}

/// A job with everything its page shows: the summary, the trials (as stored, and as table
/// rows), the history (points and best-so-far curve), predicted against measured.
pub fn detail(job: &Job, trials: &[Trial], running: bool) -> Value {
    let mut v = summary(job, trials);
    v["running"] = json!(running);
    v["config"] = json!(job.config);
    v["spec"] = json!({
        "name": job.spec.name,
        "tables": job.spec.tables.len(),
        "batch_size": job.spec.batch_size,
        "total_bytes": job.spec.total_bytes(),
        "digest": format!("{:#x}", job.spec_digest),
    });
    v["trials"] = json!(trials);
    v["trials_count"] = json!(trials.len());
    v["trial_rows"] = Value::Array(trials.iter().map(|t| trial_row(job, t)).collect());
    v["curve"] = curve(job, trials);
    v["points"] = points(trials);
    v["predicted_vs_measured"] = Value::Array(
        trials
            .iter()
            .filter_map(|t| {
                let m = t.measured.as_ref()?;
                (t.predicted.is_finite() && m.value.is_finite()).then(|| {
                    json!({"n": t.n, "kind": t.kind.label(), "predicted": t.predicted, "measured": m.value,
                           "error": (t.predicted - m.value).abs() / m.value.abs().max(1e-12)})
                })
            })
            .collect(),
    );
    v
}

/// Two jobs side by side, as `embtune results compare --json` prints them, with their points.
pub fn compare(a: (&Job, &[Trial]), b: (&Job, &[Trial])) -> Value {
    json!({
        "a": summary(a.0, a.1),
        "b": summary(b.0, b.1),
        "a_curve": curve(a.0, a.1),
        "b_curve": curve(b.0, b.1),
        "a_points": points(a.1),
        "b_points": points(b.1),
        "same_objective": a.0.config.objective.name() == b.0.config.objective.name(),
        "same_dataset": a.0.dataset == b.0.dataset && a.0.spec_digest == b.0.spec_digest,
        "warnings": compare_warnings(a.0, b.0),
    })
}

/// What makes two jobs' figures not comparable, in words: different datasets, objectives or
/// clusters.
pub fn compare_warnings(a: &Job, b: &Job) -> Vec<String> {
    let mut w = Vec::new();
    if a.dataset != b.dataset || a.spec_digest != b.spec_digest {
        w.push(format!(
            "the jobs tuned different datasets ({} and {}): their values are not comparable",
            a.dataset, b.dataset
        ));
    }
    if a.config.objective.name() != b.config.objective.name() {
        w.push(format!(
            "the jobs optimise different objectives ({} and {})",
            a.config.objective.name(),
            b.config.objective.name()
        ));
    }
    if a.cluster.key() != b.cluster.key() {
        w.push(format!("the jobs ran on different clusters ({} and {})", a.cluster.key(), b.cluster.key()));
    }
    w
}

/// The objective's label for a job: `throughput (batches/s)`.
pub fn objective_label(o: Objective) -> String {
    format!("{} ({})", o.name(), o.unit())
}

#[cfg(test)]
mod tests {
    use super::*;
    use embtune_protocol::tuning::{ClusterDesc, JobConfig, JobStatus, Measured};
    use embtune_protocol::{Knobs, Plan, Topology};

    fn job(o: Objective) -> Job {
        let spec = embtune_workloads::Preset::Synthetic
            .spec(&embtune_workloads::PresetOptions { tables: Some(1), rows: Some(10), ..Default::default() })
            .unwrap();
        let config = JobConfig { objective: o, trials: 2, ..Default::default() };
        Job {
            status: JobStatus::Done,
            updated_ms: 2,
            best: Some((6, 300.0)),
            baselines: [("round-robin".to_string(), 100.0), ("all-shard".to_string(), 200.0)].into_iter().collect(),
            model_error: Some(0.1),
            elapsed_s: 1.0,
            ..Job::new("j".into(), "d".into(), spec, ClusterDesc::default(), config, 1)
        }
    }

    fn trial(n: u32, kind: TrialKind, value: Option<f64>) -> Trial {
        Trial {
            job: "j".into(),
            n,
            kind,
            plan: Plan {
                strategy: "s".into(),
                spec_digest: 0,
                topology: Topology::uniform(1, 1, 1),
                tables: vec![],
                knobs: Knobs::default(),
            },
            predicted: if n == 0 { f64::NAN } else { 150.0 },
            measured: value.map(|value| Measured { value, ..Default::default() }),
            failure: value.is_none().then(|| "boom".to_string()),
            started_ms: 0,
            ended_ms: 1500,
            planning_ms: 40,
        }
    }

    #[test]
    fn speedup_is_over_the_best_baseline_in_the_objective_direction() {
        let j = job(Objective::Throughput);
        assert_eq!(best_baseline(&j), Some(("all-shard".into(), 200.0)));
        assert_eq!(speedup(&j), Some(1.5));
        let mut j = job(Objective::Mean);
        j.best = Some((6, 50.0));
        assert_eq!(best_baseline(&j), Some(("round-robin".into(), 100.0)));
        assert_eq!(speedup(&j), Some(2.0));
    }

    #[test]
    fn a_tie_reads_as_a_tie_with_one_set_of_numbers() {
        use embtune_protocol::tuning::HeadToHead;
        let mut j = job(Objective::Throughput);
        // Trial 6 against all-shard (trial 1) and round-robin (trial 0): 6 wins two rounds of
        // three over all-shard, whose median value is the higher.
        let rounds: Vec<std::collections::BTreeMap<u32, f64>> =
            [(1342.0, 1412.0, 700.0), (1500.0, 1450.0, 760.0), (1300.0, 1290.0, 690.0)]
                .iter()
                .map(|&(t, a, r)| [(6, t), (1, a), (0, r)].into_iter().collect())
                .collect();
        let names = [(0, "round-robin".to_string()), (1, "all-shard".to_string())].into_iter().collect();
        let h = HeadToHead::from_rounds(Objective::Throughput, &rounds, &names).unwrap();
        j.best = Some((h.best_trial, h.best));
        j.head_to_head = Some(h);
        let trials = vec![
            trial(0, TrialKind::Baseline("round-robin".into()), Some(100.0)),
            trial(1, TrialKind::Baseline("all-shard".into()), Some(200.0)),
            trial(6, TrialKind::Search, Some(300.0)),
        ];
        let v = detail(&j, &trials, false);
        assert_eq!(v["best"], 1412.0);
        assert_eq!(v["best_trial"], 1);
        assert_eq!(v["tie"], true);
        assert_eq!(v["tied_trial"], 6);
        assert_eq!(v["winner_is_baseline"], true);
        assert_eq!(v["best_baseline"]["name"], "all-shard");
        assert_eq!(v["speedup"], 1.0);
        assert!(v["verdict"].as_str().unwrap().starts_with("tie: trial 6 and all-shard"), "{}", v["verdict"]);
        assert!(v["figures_source"].as_str().unwrap().contains("3 alternating rounds"));
        // Every reported baseline is at most the best, and every speed-up at least 1.
        for (k, b) in v["baselines"].as_object().unwrap() {
            assert!(b.as_f64().unwrap() <= 1412.0, "{k}");
            assert!(v["speedup_vs"][k].as_f64().unwrap() >= 1.0, "{k}");
        }
        assert_eq!(v["versus"]["all-shard"]["verdict"], "winner");
        assert_eq!(v["versus"]["round-robin"]["verdict"], "better");
        let rows = v["trial_rows"].as_array().unwrap();
        assert_eq!(rows[2]["tied"], true);
        assert_eq!(rows[2]["side_by_side"], 1342.0);
        assert_eq!(rows[1]["best"], true);
        assert_eq!(rows[2]["knobs"], "pf –, sub-batch 64, 8 in flight, hot 0");
        assert_eq!(rows[2]["started_ms"], 0);
        assert_eq!(rows[2]["ended_ms"], 1500);
        // The list row and the metrics use the same figures.
        assert_eq!(speedup(&j), Some(1.0));
        assert_eq!(best_baseline(&j), Some(("all-shard".into(), 1412.0)));
    }

    #[test]
    fn detail_has_points_for_measured_trials_only() {
        let j = job(Objective::Throughput);
        let trials = vec![
            trial(0, TrialKind::Baseline("round-robin".into()), Some(100.0)),
            trial(1, TrialKind::Baseline("all-shard".into()), Some(200.0)),
            trial(2, TrialKind::Search, None),
            trial(3, TrialKind::Search, Some(250.0)),
            trial(4, TrialKind::Knobs, Some(300.0)),
        ];
        let v = detail(&j, &trials, false);
        assert_eq!(v["points"].as_array().unwrap().len(), 4);
        assert_eq!(v["trial_rows"].as_array().unwrap().len(), 5);
        assert_eq!(v["trials"].as_array().unwrap().len(), 5);
        assert_eq!(v["failed_trials"], 1);
        assert_eq!(v["search_trials"], 3);
        // The job's trials (2) after every baseline it measures.
        assert_eq!(v["target_trials"], 2 + baseline_count(&j));
        // The curve covers the search only, as the CLI's.
        assert_eq!(v["curve"], json!([[3, 250.0], [4, 300.0]]));
        // The first baseline had no prediction: no pair for it, and null rather than NaN.
        assert_eq!(v["predicted_vs_measured"].as_array().unwrap().len(), 3);
        assert_eq!(v["trial_rows"][0]["predicted"], Value::Null);
        assert_eq!(v["trial_rows"][4]["vs_best_baseline"], 1.5);
        assert_eq!(v["speedup_vs"]["round-robin"], 3.0);
        assert!(serde_json::to_string(&v).is_ok());
    }
}
