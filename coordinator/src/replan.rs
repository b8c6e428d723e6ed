//! Live re-planning: the coordinator watches the traffic its workers serve and moves to a
//! better plan without dropping a query.
//!
//! Every `interval` the loop drains each worker of the deployment (`TakeTraffic`: exact look-up
//! counts per table, a frequent-rows summary of sampled requests, per-core busy time), merges
//! the reports and asks the tuner's pure [`embtune_tuner::replan::assess`] whether a plan made
//! for this traffic would beat the deployed one by the user's threshold. `suggest` stops there
//! (the finding is on `GetReplan`, the dashboard and `embtune plan live`); `auto` deploys the
//! proposal as a new epoch (workers keep serving the old epoch beside it until clients have
//! moved, then retire it), measures the new plan over the next window of the same traffic and
//! deploys the old plan again if it measured worse. Each switch is a trial of the coordinator's
//! live job in the store.

use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use embtune_protocol::Plan;
use embtune_protocol::replan::{ReplanMode, ReplanStatus, Switch, SwitchOutcome};
use embtune_protocol::tuning::{Job, JobConfig, JobStatus, Measured, Trial, TrialKind};
use embtune_protocol::wire::{Request, Response, TrafficReply};
use embtune_tuner::replan::{Cluster, Effort, LiveTraffic, assess, capacity, judge, merge};
use embtune_workloads::TableProfile;

use crate::jobs::now_ms;
use crate::server::{Active, Coordinator, futures_all};

/// How the coordinator re-plans while serving.
#[derive(Clone, Debug)]
pub struct ReplanConfig {
    pub mode: ReplanMode,
    /// Propose a plan only when the cost model predicts at least this gain for the live traffic.
    pub gain: f64,
    /// How often the traffic is drained and judged, and how long a new plan is measured.
    pub interval: Duration,
    /// A switch whose measured capacity falls short of the old plan's by more than this
    /// fraction is rolled back; a smaller loss is a tie, inside the noise, and the switch stays.
    pub margin: f64,
}

impl Default for ReplanConfig {
    fn default() -> Self {
        ReplanConfig { mode: ReplanMode::Off, gain: 1.1, interval: Duration::from_secs(10), margin: 0.05 }
    }
}

/// What the loop keeps between checks.
#[derive(Default)]
pub(crate) struct ReplanState {
    pub status: Mutex<ReplanStatus>,
    /// The deployed spec's own access profile (what its plan was made for), by spec digest.
    base: Mutex<Option<(u64, Arc<Vec<TableProfile>>)>>,
    /// Each worker's cumulative per-core busy nanoseconds at the last drain, by registered id.
    busy: Mutex<std::collections::HashMap<u16, Vec<u64>>>,
    /// After a rollback, no switch before this: the traffic that misled the cost model is
    /// likely still there, and flapping between two plans costs every client a route change.
    quiet_until: Mutex<Option<Instant>>,
}

/// Intervals without a switch after a rollback.
const QUIET_INTERVALS: u32 = 10;

/// One drain of the deployment's workers: their merged traffic and, where every worker reported
/// twice, the batches per second the busiest core allowed over the window.
struct Window {
    live: LiveTraffic,
    capacity: Option<f64>,
    /// Batches per second the workers served over the window.
    served: Option<f64>,
}

impl Coordinator {
    /// The re-planner's findings and switches so far (`None` when it is off).
    pub fn replan_status(&self) -> Option<ReplanStatus> {
        let s = self.replan_state().status.lock().clone();
        (s.mode != ReplanMode::Off).then_some(s)
    }

    /// Runs the loop for as long as the coordinator lives.
    pub(crate) async fn replan_loop(self, cfg: ReplanConfig) {
        {
            let mut s = self.replan_state().status.lock();
            s.mode = cfg.mode;
            s.gain_threshold = cfg.gain;
            s.interval_s = cfg.interval.as_secs_f64();
        }
        loop {
            tokio::time::sleep(cfg.interval).await;
            let Some(active) = self.active() else { continue };
            let w = self.drain(&active).await;
            // A tuning job deploys and measures plans of its own: judging its trials' traffic,
            // or switching under it, would corrupt both. The drain above still starts a fresh
            // window.
            if self.any_job_running() {
                continue;
            }
            if let Err(e) = self.check(&cfg, &active, w).await {
                tracing::warn!("live re-planning: {e}");
            }
        }
    }

    /// Takes every deployment worker's traffic since the last drain.
    async fn drain(&self, active: &Active) -> Window {
        let calls = active.slots.iter().map(|&id| {
            let me = self.clone();
            async move {
                match me.call_worker(id, &Request::TakeTraffic, Duration::from_secs(5)).await {
                    Ok(Response::Traffic(r)) => Some((id, *r)),
                    Ok(other) => {
                        tracing::debug!("worker {id} answered TakeTraffic with {other:?}");
                        None
                    }
                    Err(e) => {
                        tracing::debug!("worker {id} did not give its traffic: {e}");
                        None
                    }
                }
            }
        });
        let got: Vec<(u16, TrafficReply)> = futures_all(calls).await.into_iter().flatten().collect();
        let (mut before, mut after) = (Vec::new(), Vec::new());
        let mut complete = got.len() == active.slots.len();
        {
            let mut busy = self.replan_state().busy.lock();
            for (id, r) in &got {
                let now: Vec<u64> = r.cores.iter().map(|c| c.busy_ns).collect();
                match busy.insert(*id, now.clone()) {
                    Some(prev) if prev.len() == now.len() => {
                        before.extend(prev);
                        after.extend(now);
                    }
                    _ => complete = false,
                }
            }
        }
        let reports: Vec<TrafficReply> = got.into_iter().map(|(_, r)| r).collect();
        let live = merge(&active.plan, active.plan_id, &reports);
        let batch = active.spec.batch_size.max(1) as u64;
        let capacity = if complete { capacity(live.samples() / batch, &before, &after) } else { None };
        let served = (complete && live.window_s > 0.0).then(|| live.samples() as f64 / batch as f64 / live.window_s);
        Window { live, capacity, served }
    }

    /// Judges one window; in `auto` mode, switches when the judgement says so.
    async fn check(&self, cfg: &ReplanConfig, active: &Arc<Active>, w: Window) -> Result<(), String> {
        let (topology, nodes, _) = crate::jobs::context_parts(self);
        if topology.workers.len() != active.plan.topology.workers.len() {
            let mut s = self.replan_state().status.lock();
            s.checks += 1;
            return Err(format!(
                "the plan is for {} workers and {} are healthy; judging again once they are",
                active.plan.topology.workers.len(),
                topology.workers.len()
            ));
        }
        let base = self.base_profiles(active).await;
        let caps = nodes.first().map(|n| n.caps).unwrap_or_default();
        let (spec, plan, plan_id, threshold) = (active.spec.clone(), active.plan.clone(), active.plan_id, cfg.gain);
        let live = w.live.clone();
        let topo = active.plan.topology.clone();
        let judging = Instant::now();
        let a = tokio::task::spawn_blocking(move || {
            let deadline = Instant::now() + Duration::from_secs(3);
            let cluster = Cluster { topology: &topo, nodes: &nodes, caps: &caps };
            assess(&spec, &base, &plan, plan_id, &live, &cluster, threshold, &Effort::default(), &|| {
                Instant::now() > deadline
            })
        })
        .await
        .map_err(|e| format!("the assessment panicked: {e}"))?;
        tracing::info!(
            "live traffic on plan {}: {} look-ups in {:.1}s, judged in {} ms; {}",
            a.plan_id,
            a.lookups,
            a.window_s,
            judging.elapsed().as_millis(),
            a.verdict
        );
        let proposal = a.plan.clone();
        let gain = a.gain;
        {
            let mut s = self.replan_state().status.lock();
            s.checks += 1;
            s.last = Some(a);
        }
        let quiet = self.replan_state().quiet_until.lock().is_some_and(|t| Instant::now() < t);
        match (cfg.mode, proposal, w.capacity) {
            // A switch is judged against the old plan's measured capacity: without one (the
            // first window, or a worker that did not report) it waits for the next window.
            (ReplanMode::Auto, Some(plan), Some(before)) if !quiet => {
                let sw = self.switch(cfg, active, plan, gain, before, w.served.unwrap_or(0.0)).await;
                if sw == SwitchOutcome::RolledBack {
                    *self.replan_state().quiet_until.lock() = Some(Instant::now() + cfg.interval * QUIET_INTERVALS);
                }
                Ok(())
            }
            _ => Ok(()),
        }
    }

    /// Deploys `plan` beside the deployed one, measures it over the next window and keeps it
    /// or rolls back; stores the switch as a trial of the live job.
    async fn switch(
        &self,
        cfg: &ReplanConfig,
        old: &Arc<Active>,
        plan: Plan,
        gain: f64,
        before: f64,
        served_before: f64,
    ) -> SwitchOutcome {
        let at_ms = now_ms();
        let started = Instant::now();
        let mut sw = Switch {
            at_ms,
            from_plan: old.plan_id,
            to_plan: 0,
            predicted_gain: gain,
            capacity_before: before,
            capacity_after: 0.0,
            served_before,
            served_after: 0.0,
            deploy_s: 0.0,
            outcome: SwitchOutcome::Kept,
        };
        tracing::info!("live re-planning: switching to {} (predicted {gain:.2}x)", plan.summary());
        match self.deploy(old.spec.clone(), plan.clone()).await {
            Err(e) => sw.outcome = SwitchOutcome::Failed(e.to_string()),
            Ok(info) => {
                sw.to_plan = info.plan_id;
                sw.deploy_s = started.elapsed().as_secs_f64();
                // The window that held the switch mixes both plans: start a clean one, then
                // measure a whole interval of the new plan's traffic.
                if let Some(new) = self.active() {
                    let _ = self.drain(&new).await;
                    tokio::time::sleep(cfg.interval).await;
                    let after = self.drain(&new).await;
                    sw.capacity_after = after.capacity.unwrap_or(0.0);
                    sw.served_after = after.served.unwrap_or(0.0);
                }
                // Worse by either measure is worse: the engines' capacity misses what the
                // clients pay (partial sums of split tables), the served rate misses headroom
                // under open-loop load, where it only follows the clients' rate.
                let worse = |b: f64, a: f64| b > 0.0 && a > 0.0 && !judge(b, a, cfg.margin);
                if worse(sw.capacity_before, sw.capacity_after) || worse(sw.served_before, sw.served_after) {
                    tracing::warn!(
                        "live re-planning: the new plan measured {:.0} batches/s of capacity and served {:.0} against {:.0} and {:.0}; rolling back",
                        sw.capacity_after,
                        sw.served_after,
                        sw.capacity_before,
                        sw.served_before
                    );
                    sw.outcome = match self.deploy(old.spec.clone(), old.plan.clone()).await {
                        Ok(_) => SwitchOutcome::RolledBack,
                        Err(e) => SwitchOutcome::Failed(format!("rolling back: {e}")),
                    };
                }
            }
        }
        if let Err(e) = self.store_switch(old, &plan, &sw) {
            tracing::warn!("live re-planning: the switch is not in the store: {e}");
        }
        let outcome = sw.outcome.clone();
        let mut s = self.replan_state().status.lock();
        s.switches.push(sw);
        // Keep the history bounded on a cluster that serves for months.
        if s.switches.len() > 1000 {
            s.switches.remove(0);
        }
        outcome
    }

    /// Adds the switch to the live job (made on the first switch, with the plan it moved from as
    /// its first trial), durably.
    fn store_switch(&self, old: &Active, plan: &Plan, sw: &Switch) -> Result<(), String> {
        let store = self.store();
        let id = self.replan_state().status.lock().job.clone();
        let mut job = match id.as_deref().map(|id| store.job(id)) {
            Some(Ok(j)) => j,
            _ => {
                let (_, _, cluster) = crate::jobs::context_parts(self);
                let mut j = Job::new(
                    embtune_tuner::store::new_job_id(sw.at_ms, old.spec.digest() ^ 0x11fe),
                    old.spec.name.clone(),
                    old.spec.clone(),
                    cluster,
                    JobConfig { trials: 0, ..JobConfig::default() },
                    sw.at_ms,
                );
                j.status = JobStatus::Live;
                j
            }
        };
        let trials = store.trials(&job.id).map_err(|e| e.to_string())?;
        // The value is the capacity (what the plan allows, whatever the clients' rate);
        // `batches_per_s` is what the workers served in the same window.
        let measured = |v: f64, served: f64| {
            (v > 0.0).then(|| Measured {
                value: v,
                rounds: vec![v],
                ci: f64::NAN,
                batches_per_s: served,
                ..Measured::default()
            })
        };
        let mut n = trials.len() as u32;
        if n == 0 {
            store
                .add_trial(&Trial {
                    job: job.id.clone(),
                    n,
                    kind: TrialKind::Baseline("deployed".into()),
                    plan: old.plan.clone(),
                    predicted: f64::NAN,
                    measured: measured(sw.capacity_before, sw.served_before),
                    failure: None,
                    started_ms: sw.at_ms,
                    ended_ms: sw.at_ms,
                    planning_ms: 0,
                })
                .map_err(|e| e.to_string())?;
            if sw.capacity_before > 0.0 {
                // The plan the live job started from is its baseline: speed-ups read against it.
                job.baselines.insert("deployed".into(), sw.capacity_before);
            }
            n += 1;
        }
        let failure = match &sw.outcome {
            SwitchOutcome::Kept => None,
            SwitchOutcome::RolledBack => Some(format!(
                "rolled back: capacity {:.0} and served {:.0} batches/s against the old plan's {:.0} and {:.0}",
                sw.capacity_after, sw.served_after, sw.capacity_before, sw.served_before
            )),
            SwitchOutcome::Failed(e) => Some(e.clone()),
        };
        store
            .add_trial(&Trial {
                job: job.id.clone(),
                n,
                kind: TrialKind::Switch,
                plan: plan.clone(),
                predicted: sw.capacity_before * sw.predicted_gain,
                measured: measured(sw.capacity_after, sw.served_after),
                failure,
                started_ms: sw.at_ms,
                ended_ms: now_ms(),
                // The assessment that proposed it is logged ("judged in N ms"); a switch is
                // not a tuner's trial.
                planning_ms: 0,
            })
            .map_err(|e| e.to_string())?;
        if sw.outcome == SwitchOutcome::Kept && sw.capacity_after > 0.0 {
            job.best = Some((n, sw.capacity_after));
        } else if job.best.is_none() && sw.capacity_before > 0.0 {
            job.best = Some((0, sw.capacity_before));
        }
        job.updated_ms = now_ms();
        store.put_job(&job).map_err(|e| e.to_string())?;
        self.replan_state().status.lock().job = Some(job.id);
        Ok(())
    }

    /// The deployed spec's access profile, counted once per spec.
    async fn base_profiles(&self, active: &Active) -> Arc<Vec<TableProfile>> {
        let digest = active.spec.digest();
        if let Some((d, p)) = self.replan_state().base.lock().as_ref()
            && *d == digest
        {
            return p.clone();
        }
        let spec = active.spec.clone();
        let p = tokio::task::spawn_blocking(move || {
            embtune_workloads::BatchGenerator::new(&spec)
                .map(|g| embtune_workloads::profile::profile_generator(&g).tables)
                .unwrap_or_default()
        })
        .await
        .unwrap_or_default();
        let p = Arc::new(p);
        *self.replan_state().base.lock() = Some((digest, p.clone()));
        p
    }
}
