//! The API's JSON for tuning jobs, as pure functions of the stored records. Field names match
//! what `embtune results ... --json` prints where the two overlap (`job`, `preset`, `dataset`,
//! `status`, `objective`, `unit`, `best`, `best_trial`, `best_plan`, `baselines`, `speedup_vs`,
//! `model_error`, `cluster`, `trials_total`, `failed_trials`, `a_curve`, ...).

use serde_json::{Value, json};

use embtune_protocol::tuning::{Job, Objective, Trial, TrialKind};
use embtune_tuner::job::Tuner;

/// The baselines a job measures before its search.
pub fn baseline_count(job: &Job) -> usize {
    embtune_tuner::job::baseline_count(&job.config)
}

/// The best baseline of a job: (name, value).
pub fn best_baseline(job: &Job) -> Option<(String, f64)> {
    let o = job.config.objective;
    job.reported_baselines()
        .iter()
        .filter(|(_, v)| v.is_finite())
        .fold(None, |acc: Option<(&String, f64)>, (k, &v)| match acc {
            Some((_, b)) if !o.better(v, b) => acc,
            _ => Some((k, v)),
        })
        .map(|(k, v)| (k.clone(), v))
}

/// How many times better the job's best is than its best baseline (1 when a baseline is the
/// best), whichever direction the objective goes; from the head-to-head when the job has one.
pub fn speedup(job: &Job) -> Option<f64> {
    if let Some(h) = &job.head_to_head {
        return h.speedup_vs.values().copied().filter(|x| x.is_finite()).reduce(f64::min);
    }
    let (_, base) = best_baseline(job)?;
    let (_, best) = job.best?;
    Some(job.config.objective.speedup(base, best))
}

/// A finite number, or null: JSON has no NaN.
fn num(x: f64) -> Value {
    if x.is_finite() { json!(x) } else { Value::Null }
}

/// A job as `embtune results show --json` summarises it (without the trials), with what the
/// dashboard adds: the best baseline, the speed-up over it and the job's progress.
pub fn summary(job: &Job, trials: &[Trial]) -> Value {
    let o = job.config.objective;
    let best = job.best.map(|b| b.1);
    let speedup_vs: serde_json::Map<String, Value> = job.speedup_vs().into_iter().map(|(k, v)| (k, num(v))).collect();
    let best_trial = job.best.and_then(|(n, _)| trials.iter().find(|t| t.n == n));
    let search = trials.iter().filter(|t| !matches!(t.kind, TrialKind::Baseline(_))).count();
    json!({
        "job": job.id,
        "dataset": job.dataset,
        "preset": job.dataset,
        "status": job.status.label(),
        "failure": match &job.status { embtune_protocol::tuning::JobStatus::Failed(e) => Some(e), _ => None },
        "objective": o.name(),
        "unit": o.unit(),
        "maximise": o.maximise(),
        "search": job.config.search,
        // As `embtune results compare --json`: the search trials (`detail` replaces it with the
        // trials themselves, as `results show --json` does).
        "trials": search,
        "trials_total": trials.len(),
        "search_trials": search,
        "target_trials": job.config.trials as usize + baseline_count(job),
        "failed_trials": trials.iter().filter(|t| t.failure.is_some() || t.measured.is_none()).count(),
        "best": best,
        "best_trial": job.best.map(|b| b.0),
        "best_plan": best_trial.map(|t| t.plan.summary()),
        "baselines": job.reported_baselines(),
        "ceiling": job.ceiling,
        "ceiling_share": job.ceiling_share(),
        "best_baseline": best_baseline(job).map(|(name, value)| json!({"name": name, "value": value})),
        "speedup": speedup(job),
        "speedup_vs": speedup_vs,
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
pub fn list_row(job: &Job, counts: crate::state::Counts, running: bool) -> Value {
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
        "cluster": job.cluster.key(),
        "created_ms": job.created_ms,
        "updated_ms": job.updated_ms,
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
    let o = job.config.objective;
    let base = best_baseline(job);
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
    v["trial_rows"] = Value::Array(
        trials
            .iter()
            .map(|t| {
                let m = t.measured.as_ref();
                json!({
                    "n": t.n,
                    "kind": t.kind.label(),
                    "baseline": matches!(t.kind, TrialKind::Baseline(_)),
                    "summary": t.plan.summary(),
                    "predicted": num(t.predicted),
                    "measured": m.map(|m| num(m.value)),
                    "ci": m.map(|m| num(m.ci)),
                    "batches_per_s": m.map(|m| num(m.batches_per_s)),
                    "p50_us": m.map(|m| num(m.p50_us)),
                    "p99_us": m.map(|m| num(m.p99_us)),
                    "errors": m.map(|m| m.errors),
                    "vs_best_baseline": match (&base, m) {
                        (Some((_, b)), Some(m)) => num(o.speedup(*b, m.value)),
                        _ => Value::Null,
                    },
                    "failure": t.failure,
                    "seconds": (t.ended_ms.saturating_sub(t.started_ms)) as f64 / 1000.0,
                    "best": job.best.is_some_and(|b| b.0 == t.n),
                })
            })
            .collect(),
    );
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
    })
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
        Job {
            id: "j".into(),
            dataset: "d".into(),
            spec_digest: spec.digest(),
            spec,
            cluster: ClusterDesc::default(),
            config: JobConfig { objective: o, trials: 2, ..Default::default() },
            status: JobStatus::Done,
            created_ms: 1,
            updated_ms: 2,
            best: Some((6, 300.0)),
            baselines: [("round-robin".to_string(), 100.0), ("all-shard".to_string(), 200.0)].into_iter().collect(),
            model_error: Some(0.1),
            elapsed_s: 1.0,
            head_to_head: None,
            ceiling: None,
            ceiling_load: None,
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
        assert_eq!(v["target_trials"], 7);
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
