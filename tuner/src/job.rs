//! A tuning job as a state machine its caller drives: ask [`Tuner::next`] for a proposal,
//! deploy and measure it, hand the outcome to [`Tuner::record`], store the trial it returns,
//! repeat. No I/O, no clock: the caller passes the time, so jobs are tested deterministically
//! and resume from their stored trials after a restart.
//!
//! Order of work: every baseline strategy once (the yardsticks) and every named baseline plan
//! the job was given (another planner's), then the search: placements
//! proposed by simulated annealing on the cost model refitted to every measurement so far, and
//! every third trial the knobs (sub-batch, requests in flight) of the best placement, proposed by
//! Bayesian optimisation over what was measured. Plans already measured are never measured again.
//! Each of these is a stage of `crate::propose`, chained by the job's search kind.

use std::collections::HashSet;

use rand_xoshiro::Xoshiro256PlusPlus;
use rand_xoshiro::rand_core::SeedableRng;

use embtune_protocol::tuning::{Job, JobConfig, JobStatus, Measured, Objective, Trial, TrialKind};
use embtune_protocol::{Plan, PlanError, Topology};
use embtune_workloads::{ModelSpec, TableProfile};

use crate::baselines::Strategy;
use crate::cost::{Coefficients, Model, Node, Workload};
use crate::fit::{Observation, refit};
use crate::propose::{Proposer, Scene, SearchBudget, chain};

/// What the caller knows about the cluster now, and what it allows the search.
pub struct Context<'a> {
    pub spec: &'a ModelSpec,
    pub profiles: &'a [TableProfile],
    /// The healthy workers now; a worker lost mid-job shrinks it and the job plans around it.
    pub topology: Topology,
    pub nodes: Vec<Node>,
    pub networked: bool,
    /// Clients loading the cluster at once (load generators), at least one.
    pub clients: usize,
    /// Steps and time the search of one proposal may take.
    pub search: SearchBudget<'a>,
}

/// A plan to deploy and measure, or a baseline that cannot be made on the cluster there is.
#[derive(Clone, Debug)]
pub struct Proposal {
    pub kind: TrialKind,
    /// The plan; for a baseline that does not fit, a stand-in stored with its failed trial and
    /// never deployed.
    pub plan: Plan,
    /// The cost model's prediction of the objective; NaN where the plan does not fit.
    pub predicted: f64,
    /// Why the plan cannot be made here, if it cannot: the caller records the proposal as a
    /// failed trial ([`does_not_fit`](embtune_protocol::tuning::does_not_fit)) without
    /// deploying it, so that it is not proposed again.
    pub unfit: Option<PlanError>,
    /// Milliseconds spent proposing it, which the caller measures (the tuner reads no clock)
    /// and sets before [`Tuner::record`].
    pub planning_ms: u64,
}

impl Proposal {
    /// A plan to deploy and measure.
    pub fn measure(kind: TrialKind, plan: Plan, predicted: f64) -> Proposal {
        Proposal { kind, plan, predicted, unfit: None, planning_ms: 0 }
    }

    /// A baseline `name` whose plan cannot be made (`why`), with a stand-in plan to store.
    pub fn does_not_fit(name: &str, stand_in: Plan, why: PlanError) -> Proposal {
        let plan = Plan { strategy: format!("{name} ({})", embtune_protocol::tuning::DOES_NOT_FIT), ..stand_in };
        Proposal { kind: TrialKind::Baseline(name.into()), plan, predicted: f64::NAN, unfit: Some(why), planning_ms: 0 }
    }

    /// The failure to record for it when it does not fit.
    pub fn unfit_failure(&self) -> Option<String> {
        let what = match &self.kind {
            TrialKind::Baseline(name) => name.clone(),
            other => other.label(),
        };
        self.unfit.as_ref().map(|e| embtune_protocol::tuning::does_not_fit(&what, e))
    }
}

/// A job in progress.
pub struct Tuner {
    pub job: Job,
    pub trials: Vec<Trial>,
    coefficients: Option<Coefficients>,
    seen: HashSet<u64>,
    rng: Xoshiro256PlusPlus,
    /// The stages asked in turn for the next plan ([`chain`]).
    stages: Vec<Box<dyn Proposer>>,
}

/// A plan's identity for deduplication: its placements, flows, row types and knobs.
pub fn plan_key(p: &Plan) -> u64 {
    let v = serde_json::to_vec(&(&p.tables, &p.knobs)).expect("plans serialise");
    embtune_workloads::spec::fnv1a(&v)
}

/// Moves a plan made for another topology onto `topo`: owners on cores `topo` lacks are folded
/// onto the cores it has, and where `topo` has no clients to hold tables (one engine), the
/// client-resident tables are replicated instead, every engine holding them as every client
/// would. Used when a worker is lost mid-job, and to run a cluster's plan on one engine.
pub fn adapt_plan(plan: &Plan, topo: &Topology) -> Plan {
    let mut p = plan.clone();
    if p.topology == *topo {
        return p;
    }
    if topo.client_memory_bytes == 0 {
        for t in &mut p.tables {
            if t.placement.is_client() {
                t.placement = embtune_protocol::Placement::Replicated;
            }
        }
    }
    let cores: Vec<_> = topo.cores().collect();
    for t in &mut p.tables {
        let fix = |c: &mut embtune_protocol::CoreId| {
            if !topo.contains(*c) {
                *c = cores[(c.worker as usize * 131 + c.core as usize) % cores.len()];
            }
        };
        match &mut t.placement {
            embtune_protocol::Placement::Owned(c) => fix(c),
            embtune_protocol::Placement::RowRange { owners, .. } | embtune_protocol::Placement::Hash { owners } => {
                owners.iter_mut().for_each(fix)
            }
            embtune_protocol::Placement::Replicated | embtune_protocol::Placement::Client => {}
        }
    }
    p.topology = topo.clone();
    p
}

/// The baselines a job measures before its search: every strategy that applies (see
/// [`Strategy::baselines`]) and every named plan.
pub fn baseline_count(config: &JobConfig) -> usize {
    Strategy::baselines(config.client_memory_bytes).len() + config.baseline_plans.len()
}

/// Checks a job's named baseline plans before it starts: names that no strategy or other plan
/// uses, and plans made for this model.
pub fn check_baseline_plans(config: &JobConfig, spec: &ModelSpec) -> Result<(), String> {
    let mut names: HashSet<&str> = Strategy::ALL.iter().map(|s| s.name()).collect();
    for b in &config.baseline_plans {
        if b.name.is_empty() || !names.insert(b.name.as_str()) {
            return Err(format!(
                "baseline plan name `{}` is empty or taken (by a strategy or another plan): name it otherwise",
                b.name
            ));
        }
        if b.plan.spec_digest != spec.digest() || b.plan.tables.len() != spec.tables.len() {
            return Err(format!(
                "baseline plan `{}` was made for another model (spec digest {:#x}, this one {:#x}): make it with the same \
                 preset, scale and flags",
                b.name,
                b.plan.spec_digest,
                spec.digest()
            ));
        }
    }
    Ok(())
}

impl Tuner {
    /// A job, resumed from the trials it already has.
    pub fn new(job: Job, trials: Vec<Trial>) -> Tuner {
        let seen = trials.iter().filter(|t| t.measured.is_some()).map(|t| plan_key(&t.plan)).collect();
        let rng = Xoshiro256PlusPlus::seed_from_u64(job.config.seed ^ trials.len() as u64);
        let mut stages = chain(job.config.search);
        for t in &trials {
            stages.iter_mut().for_each(|s| s.feedback(t));
        }
        Tuner { job, trials, coefficients: None, seen, rng, stages }
    }

    fn objective(&self) -> Objective {
        self.job.config.objective
    }

    /// Measured trials of the search (not baselines).
    pub fn search_trials(&self) -> usize {
        self.trials.iter().filter(|t| !matches!(t.kind, TrialKind::Baseline(_))).count()
    }

    /// The best trial: the winner of the head-to-head once the job has one, before that the
    /// best measured.
    pub fn best(&self) -> Option<&Trial> {
        if let Some(h) = &self.job.head_to_head
            && let Some(t) = self.trials.iter().find(|t| t.n == h.best_trial && t.measured.is_some())
        {
            return Some(t);
        }
        self.best_measured()
    }

    /// The trial with the best measured value.
    pub fn best_measured(&self) -> Option<&Trial> {
        let o = self.objective();
        self.trials.iter().filter(|t| t.measured.is_some()).reduce(|a, b| {
            if o.better(b.measured.as_ref().unwrap().value, a.measured.as_ref().unwrap().value) { b } else { a }
        })
    }

    /// Whether the job is finished at time `now_s` (seconds since it started, summed).
    pub fn finished(&self, elapsed_s: f64) -> bool {
        self.search_trials() >= self.job.config.trials as usize
            || self.job.config.time_limit_s.is_some_and(|l| elapsed_s >= l)
    }

    fn model<'a>(&self, ctx: &'a Context<'a>) -> Model<'a> {
        let nodes: Vec<Node> = ctx
            .nodes
            .iter()
            .map(|n| Node { caps: n.caps, coef: self.coefficients.clone().unwrap_or_else(|| n.coef.clone()) })
            .collect();
        let w = Workload { spec: ctx.spec, profiles: ctx.profiles };
        let mut m = Model::new(w, nodes);
        m.networked = ctx.networked;
        m.clients = ctx.clients.max(1) as f64;
        m.wire_value_bytes = self.job.config.wire.value_bytes() as f64;
        m
    }

    /// The next plan to measure, or `None` when the job is done: the first stage's of the chain
    /// that has one.
    pub fn next(&mut self, ctx: &Context<'_>) -> Option<Proposal> {
        if self.finished(self.job.elapsed_s) {
            return None;
        }
        let model = self.model(ctx);
        let best = self.best().map(|t| t.plan.clone());
        let scene = Scene::new(ctx, &self.job.config, &self.trials, &self.seen, &model, best);
        self.stages.iter_mut().find_map(|s| s.propose(&scene, &mut self.rng))
    }

    /// Records a measured (or failed) proposal and returns the trial to store. Updates the best
    /// plan, the baselines and the refitted model.
    pub fn record(
        &mut self,
        ctx: &Context<'_>,
        p: Proposal,
        outcome: Result<Measured, String>,
        started_ms: u64,
        ended_ms: u64,
        seconds: f64,
    ) -> Trial {
        let n = self.trials.len() as u32;
        let (measured, failure) = match outcome {
            Ok(m) => (Some(m), None),
            Err(e) => (None, Some(e)),
        };
        let trial = Trial {
            job: self.job.id.clone(),
            n,
            kind: p.kind.clone(),
            plan: p.plan,
            predicted: p.predicted,
            measured,
            failure,
            started_ms,
            ended_ms,
            planning_ms: p.planning_ms,
        };
        if trial.measured.is_some() {
            self.seen.insert(plan_key(&trial.plan));
        }
        self.trials.push(trial.clone());
        self.stages.iter_mut().for_each(|s| s.feedback(&trial));
        self.job.elapsed_s += seconds;
        self.job.updated_ms = ended_ms;
        if let (TrialKind::Baseline(name), Some(m)) = (&trial.kind, &trial.measured) {
            self.job.baselines.insert(name.clone(), m.value);
        }
        self.job.best = self.best_measured().map(|t| (t.n, t.measured.as_ref().unwrap().value));
        // Refit the model to every measurement of this topology.
        let obs: Vec<Observation> = self
            .trials
            .iter()
            .filter(|t| t.plan.topology == ctx.topology)
            .filter_map(|t| t.measured.as_ref().map(|m| Observation { plan: t.plan.clone(), measured: m.value }))
            .collect();
        if obs.len() >= 3 {
            let base = self.model(ctx);
            let fitted = refit(&base, self.objective(), &obs);
            self.coefficients = Some(fitted.coefficients);
            self.job.model_error = Some(fitted.median_error);
        }
        trial
    }

    /// Ends the job once [`Tuner::next`] has nothing more to measure, after the caller put the
    /// head-to-head (if it measured one) on `job.head_to_head`. Until then the job stays running:
    /// whoever follows it waits for the side-by-side figures too.
    pub fn finish(&mut self, now_ms: u64) {
        // The best plan is reported with its side-by-side value when it won a head-to-head, so
        // that `best`, the baselines and the speed-ups all come from the same rounds; its earlier,
        // solo measurement next to side-by-side baselines read as if a plan that measured faster
        // had been passed over.
        self.job.best = self.best().map(|t| match &self.job.head_to_head {
            Some(h) if h.best_trial == t.n => (t.n, h.best),
            _ => (t.n, t.measured.as_ref().unwrap().value),
        });
        self.job.status = JobStatus::Done;
        self.job.updated_ms = now_ms;
    }

    /// The contenders of the head-to-head: the `k` best search trials (by their measured
    /// value) and every measured baseline, as trial numbers, best first.
    pub fn head_to_head_contenders(&self, k: usize) -> Vec<u32> {
        let o = self.objective();
        let mut search: Vec<&Trial> =
            self.trials.iter().filter(|t| t.measured.is_some() && !matches!(t.kind, TrialKind::Baseline(_))).collect();
        search.sort_by(|a, b| {
            let (x, y) = (a.measured.as_ref().unwrap().value, b.measured.as_ref().unwrap().value);
            if o.maximise() { y.total_cmp(&x) } else { x.total_cmp(&y) }
        });
        let baselines = self.trials.iter().filter(|t| t.measured.is_some() && matches!(t.kind, TrialKind::Baseline(_)));
        search.into_iter().take(k).chain(baselines).map(|t| t.n).collect()
    }

    /// Best-so-far curve over the search trials: (trial number, best value), for reports.
    pub fn best_curve(trials: &[Trial], objective: Objective) -> Vec<(u32, f64)> {
        let mut best: Option<f64> = None;
        let mut out = Vec::new();
        for t in trials {
            if let Some(m) = &t.measured
                && !matches!(t.kind, TrialKind::Baseline(_))
            {
                best = Some(match best {
                    Some(b) if !objective.better(m.value, b) => b,
                    _ => m.value,
                });
            }
            if let Some(b) = best {
                out.push((t.n, b));
            }
        }
        out
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::cost::predict_model;
    use crate::rules::MemoryCaps;
    use crate::search::predicted;
    use embtune_protocol::tuning::{ClusterDesc, HeadToHead, JobConfig};
    use embtune_workloads::{AccessProfile, BatchGenerator, Preset, PresetOptions};
    use std::collections::BTreeMap;

    /// A "cluster" that is the cost model itself with hidden, different coefficients, plus noise.
    fn truth(ctx: &Context<'_>, plan: &Plan, obj: Objective, salt: u64) -> f64 {
        let mut c = Coefficients::default();
        c.dram_ns *= 2.0;
        c.task_ns *= 3.0;
        let m = Model {
            w: Workload { spec: ctx.spec, profiles: ctx.profiles },
            curves: Model::new(Workload { spec: ctx.spec, profiles: ctx.profiles }, vec![]).curves,
            nodes: vec![Node { caps: MemoryCaps::default(), coef: c }],
            networked: false,
            clients: 1.0,
            wire_value_bytes: 4.0,
        };
        let v = predicted(obj, &predict_model(&m, plan));
        v * (1.0 + ((salt % 7) as f64 - 3.0) * 0.003)
    }

    fn job(spec: &ModelSpec, trials: u32) -> Job {
        let config = JobConfig { trials, ..Default::default() };
        Job::new("j".into(), "t".into(), spec.clone(), ClusterDesc::default(), config, 0)
    }

    #[test]
    fn a_job_measures_baselines_then_beats_them_without_repeating_plans() {
        let spec = Preset::CriteoTerabyte.spec(&PresetOptions { scale: Some(0.0002), ..Default::default() }).unwrap();
        let g = BatchGenerator::new(&spec).unwrap();
        let rows: Vec<u64> = spec.tables.iter().map(|t| t.rows).collect();
        let prof = AccessProfile::from_batches(&rows, &g.pool(1 << 40, 2));
        let ctx = Context {
            spec: &spec,
            profiles: &prof.tables,
            topology: Topology::uniform(1, 4, 1 << 40),
            nodes: vec![Node { caps: MemoryCaps::default(), coef: Coefficients::default() }],
            networked: false,
            clients: 1,
            search: Default::default(),
        };
        let mut t = Tuner::new(job(&spec, 9), Vec::new());
        let mut keys = HashSet::new();
        while let Some(p) = t.next(&ctx) {
            assert!(keys.insert(plan_key(&p.plan)), "plan proposed twice: {:?}", p.kind);
            let v = truth(&ctx, &p.plan, Objective::Throughput, t.trials.len() as u64);
            t.record(&ctx, p, Ok(Measured { value: v, ..Default::default() }), 0, 0, 1.0);
        }
        assert_eq!(t.job.status, JobStatus::Running, "running until the caller finishes it");
        t.finish(1);
        assert_eq!(t.job.status, JobStatus::Done);
        assert_eq!(t.job.baselines.len(), Strategy::baselines(0).len());
        assert_eq!(t.search_trials(), 9);
        let best = t.job.best.unwrap().1;
        let rr = t.job.baselines["round-robin"];
        assert!(best > 1.5 * rr, "best {best} vs round-robin {rr}");
        assert!(t.job.model_error.unwrap() < 0.2, "model error {:?}", t.job.model_error);
    }

    /// One worker of two cores with the default costs.
    pub(crate) fn two_cores<'a>(spec: &'a ModelSpec, prof: &'a [TableProfile]) -> Context<'a> {
        Context {
            spec,
            profiles: prof,
            topology: Topology::uniform(1, 2, 1 << 40),
            nodes: vec![Node { caps: MemoryCaps::default(), coef: Coefficients::default() }],
            networked: false,
            clients: 1,
            search: Default::default(),
        }
    }

    #[test]
    fn the_head_to_head_winner_becomes_the_best_plan() {
        let spec = Preset::Avazu.spec(&PresetOptions { scale: Some(0.001), ..Default::default() }).unwrap();
        let prof = vec![TableProfile::default(); spec.tables.len()];
        let ctx = two_cores(&spec, &prof);
        let mut t = Tuner::new(job(&spec, 4), Vec::new());
        // Every baseline at 100 and a little more, then search trials that measured 150, 120,
        // 140, 130.
        let n = Strategy::baselines(0).len() as u32;
        let values = (0..n).map(|b| 100.0 + b as f64).chain([150.0, 120.0, 140.0, 130.0]);
        for v in values {
            let p = t.next(&ctx).unwrap();
            t.record(&ctx, p, Ok(Measured { value: v, ..Default::default() }), 0, 0, 1.0);
        }
        assert!(t.next(&ctx).is_none());
        assert_eq!(t.best().unwrap().n, n, "before the head-to-head: the best measured");
        // The three best search trials, then every baseline.
        assert_eq!(t.head_to_head_contenders(3), [n, n + 2, n + 3].into_iter().chain(0..n).collect::<Vec<_>>());
        // Side by side, all-replicate (trial 1) beats the lucky first search trial.
        let round: BTreeMap<u32, f64> =
            [(n, 100.0), (n + 2, 98.0), (n + 3, 97.0), (0, 60.0), (1, 105.0)].into_iter().collect();
        let names = [(0, "round-robin".to_string()), (1, "all-replicate".to_string())].into_iter().collect();
        let h = HeadToHead::from_rounds(Objective::Throughput, &[round], &names).unwrap();
        t.job.head_to_head = Some(h);
        t.finish(9);
        assert_eq!(t.job.status, JobStatus::Done);
        assert_eq!(t.best().unwrap().n, 1);
        assert_eq!(t.job.best, Some((1, 105.0)), "the winner's side-by-side value, not its trial's");
        assert_eq!(t.job.reported_baselines()["round-robin"], 60.0);
        assert_eq!(t.job.speedup_vs()["all-replicate"], 1.0);
    }

    #[test]
    fn a_named_baseline_plan_is_measured_after_the_strategies_and_raced() {
        let spec = Preset::Avazu.spec(&PresetOptions { scale: Some(0.001), ..Default::default() }).unwrap();
        let prof = vec![TableProfile::default(); spec.tables.len()];
        let ctx = two_cores(&spec, &prof);
        // "Another planner's" plan, made for 2 workers x 2 cores: folded onto the one worker here.
        let mut other =
            Strategy::RoundRobin.plan(&spec, &Topology::uniform(2, 2, 1 << 40), &Default::default()).unwrap();
        other.strategy = "made elsewhere".into();
        let mut j = job(&spec, 2);
        j.config.baseline_plans = vec![embtune_protocol::tuning::NamedPlan { name: "torchrec".into(), plan: other }];
        check_baseline_plans(&j.config, &spec).unwrap();
        let mut t = Tuner::new(j, Vec::new());
        let mut kinds = Vec::new();
        while let Some(p) = t.next(&ctx) {
            if p.kind == TrialKind::Baseline("torchrec".into()) {
                assert_eq!(p.plan.topology, ctx.topology);
                assert_eq!(p.plan.strategy, "torchrec");
                assert!(p.predicted.is_finite());
            }
            kinds.push(p.kind.label());
            t.record(&ctx, p, Ok(Measured { value: 100.0 + kinds.len() as f64, ..Default::default() }), 0, 0, 1.0);
        }
        // The strategies, then the named plan, then the search.
        let n = Strategy::baselines(0).len();
        assert_eq!(kinds[n], "baseline:torchrec", "{kinds:?}");
        assert_eq!(kinds.len(), n + 3, "the strategies, the plan, 2 search trials: {kinds:?}");
        assert_eq!(t.job.baselines["torchrec"], 100.0 + (n + 1) as f64);
        assert!(t.head_to_head_contenders(3).contains(&(n as u32)), "raced in the head-to-head");
        // A resumed job does not measure it again.
        let mut again = Tuner::new(t.job.clone(), t.trials.clone());
        assert!(again.next(&ctx).is_none());

        let mut bad = t.job.config.clone();
        bad.baseline_plans[0].name = "round-robin".into();
        assert!(check_baseline_plans(&bad, &spec).unwrap_err().contains("taken"));
        let other_spec = Preset::Avazu.spec(&PresetOptions { scale: Some(0.002), ..Default::default() }).unwrap();
        assert!(check_baseline_plans(&t.job.config, &other_spec).unwrap_err().contains("another model"));
        // A plan that cannot fit is a failed trial, not a crash.
        let mut small = job(&spec, 1);
        small.config.baseline_plans = t.job.config.baseline_plans.clone();
        small.config.baseline_plans[0].plan.tables[0].placement =
            embtune_protocol::Placement::Owned(embtune_protocol::CoreId::new(0, 0));
        small.config.baseline_plans[0].plan.tables[0].flow = embtune_protocol::DataFlow::Blocked { block_rows: 0 };
        let mut t = Tuner::new(small, Vec::new());
        for _ in 0..n {
            let p = t.next(&ctx).unwrap();
            t.record(&ctx, p, Ok(Measured { value: 1.0, ..Default::default() }), 0, 0, 1.0);
        }
        let p = t.next(&ctx).unwrap();
        assert!(p.predicted.is_nan() && matches!(p.unfit, Some(embtune_protocol::PlanError::Invalid(_))), "{p:?}");
        let failure = p.unfit_failure().unwrap();
        assert!(failure.starts_with("does not fit: torchrec: invalid plan"), "{failure}");
    }

    #[test]
    fn a_searched_plan_that_ties_leaves_the_baseline_as_the_best_plan() {
        let spec = Preset::Avazu.spec(&PresetOptions { scale: Some(0.001), ..Default::default() }).unwrap();
        let prof = vec![TableProfile::default(); spec.tables.len()];
        let ctx = two_cores(&spec, &prof);
        let mut t = Tuner::new(job(&spec, 1), Vec::new());
        // Every baseline (round-robin 700, all-replicate 1400, the others below it), then one
        // search trial, trial `n`, alone at 1450.
        let n = Strategy::baselines(0).len();
        for i in 0..=n {
            let v = match i {
                0 => 700.0,
                1 => 1400.0,
                i if i == n => 1450.0,
                i => 800.0 + 100.0 * i as f64,
            };
            let p = t.next(&ctx).unwrap();
            t.record(&ctx, p, Ok(Measured { value: v, ..Default::default() }), 0, 0, 1.0);
        }
        // Side by side, trial n and all-replicate (trial 1) trade places from round to round.
        let rounds: Vec<BTreeMap<u32, f64>> =
            [(1342.0, 1412.0, 700.0), (1500.0, 1450.0, 760.0), (1300.0, 1290.0, 690.0)]
                .iter()
                .map(|&(s, a, r)| [(n as u32, s), (1, a), (0, r)].into_iter().collect())
                .collect();
        let names = [(0, "round-robin".to_string()), (1, "all-replicate".to_string())].into_iter().collect();
        t.job.head_to_head = HeadToHead::from_rounds(Objective::Throughput, &rounds, &names);
        t.finish(10);
        assert_eq!(t.job.best, Some((1, 1412.0)), "the simpler plan, at its side-by-side value");
        assert_eq!(t.best().unwrap().n, 1);
        let h = t.job.headline().unwrap();
        assert!(h.tie && h.winner_is_baseline && h.tied_trial == Some(n as u32), "{h:?}");
        for (k, v) in t.job.reported_baselines() {
            assert!(*v <= 1412.0, "{k} {v}");
        }
        assert!(t.job.speedup_vs().values().all(|&x| x >= 1.0));
    }

    #[test]
    fn a_resumed_job_continues_where_it_stopped() {
        let spec = Preset::Avazu.spec(&PresetOptions { scale: Some(0.001), ..Default::default() }).unwrap();
        let prof = vec![TableProfile::default(); spec.tables.len()];
        let ctx = two_cores(&spec, &prof);
        let mut a = Tuner::new(job(&spec, 4), Vec::new());
        for _ in 0..6 {
            let p = a.next(&ctx).unwrap();
            let v = truth(&ctx, &p.plan, Objective::Throughput, 1);
            a.record(&ctx, p, Ok(Measured { value: v, ..Default::default() }), 0, 0, 1.0);
        }
        // "Restart": a new tuner from the stored job and trials.
        let mut b = Tuner::new(a.job.clone(), a.trials.clone());
        let next = b.next(&ctx).unwrap();
        assert!(!matches!(next.kind, TrialKind::Baseline(_)), "baselines are not measured again");
        assert!(!a.trials.iter().any(|t| plan_key(&t.plan) == plan_key(&next.plan)));
    }

    #[test]
    fn a_lost_worker_shrinks_the_plans() {
        let spec = Preset::Avazu.spec(&PresetOptions { scale: Some(0.001), ..Default::default() }).unwrap();
        let prof = vec![TableProfile::default(); spec.tables.len()];
        let node = Node { caps: MemoryCaps::default(), coef: Coefficients::default() };
        let two = Context {
            spec: &spec,
            profiles: &prof,
            topology: Topology::uniform(2, 2, 1 << 40),
            nodes: vec![node.clone(); 2],
            networked: true,
            clients: 1,
            search: Default::default(),
        };
        let mut t = Tuner::new(job(&spec, 6), Vec::new());
        for _ in 0..6 {
            let p = t.next(&two).unwrap();
            let v = truth(&two, &p.plan, Objective::Throughput, 2);
            t.record(&two, p, Ok(Measured { value: v, ..Default::default() }), 0, 0, 1.0);
        }
        let one = Context { topology: Topology::uniform(1, 2, 1 << 40), nodes: vec![node], ..two };
        let p = t.next(&one).unwrap();
        assert_eq!(p.plan.topology.workers.len(), 1);
        p.plan.validate(&spec).unwrap();
    }
}
