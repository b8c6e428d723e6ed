//! The stages of a tuning job's search, each a [`Proposer`]: what to measure next.
//!
//! After TorchRec's planner, whose enumerator, proposer, partitioner and performance model are
//! small stages that plug in: a job is a chain of proposers, asked in turn until one has a plan.
//! [`Baselines`] comes first in every job (each strategy once, then each named plan); the search
//! behind it is chosen by the job's [`SearchKind`]: [`Knobs`] (Bayesian optimisation of the best
//! placement's knobs, every third search trial) then [`Annealing`] (the cost model's favourite
//! placement) for the model-driven search, [`RandomPlans`] for its yardstick. A proposer sees the
//! job through a [`Scene`] and predicts through an [`Estimator`], so another cost model (a
//! GPU's) plugs in without a proposer changing. No clock: the caller's [`SearchBudget`] says
//! how long a search may run.

use std::cell::OnceCell;
use std::collections::HashSet;

use rand_xoshiro::Xoshiro256PlusPlus;
use rand_xoshiro::rand_core::RngCore;

use embtune_protocol::tuning::{JobConfig, SearchKind, Trial, TrialKind};
use embtune_protocol::{Knobs as PlanKnobs, Plan};

use crate::baselines::{BaselineOptions, Strategy};
use crate::bo;
use crate::job::{Context, Proposal, adapt_plan, plan_key};
use crate::search::{Estimator, SearchConfig, anneal};
use crate::space::{Space, neighbour};

/// A stage that proposes plans to measure.
pub trait Proposer {
    /// The next plan this stage wants measured, or `None` to let the next stage propose.
    fn propose(&mut self, scene: &Scene<'_>, rng: &mut Xoshiro256PlusPlus) -> Option<Proposal>;

    /// A trial the job recorded (any stage's, in order; a resumed job's stored trials first).
    fn feedback(&mut self, _trial: &Trial) {}
}

/// The chain of stages for a job's search kind: the baselines, then the search.
pub fn chain(search: SearchKind) -> Vec<Box<dyn Proposer>> {
    let mut stages: Vec<Box<dyn Proposer>> = vec![Box::new(Baselines::default())];
    match search {
        SearchKind::Model => {
            stages.push(Box::new(Knobs));
            stages.push(Box::new(Annealing));
        }
        SearchKind::Random => stages.push(Box::new(RandomPlans)),
    }
    stages
}

/// What the caller allows one proposal's search.
#[derive(Clone, Copy)]
pub struct SearchBudget<'a> {
    /// Annealing steps per attempt (an attempt that finds only measured plans tries again, up
    /// to [`Annealing::ATTEMPTS`] times).
    pub iterations: u64,
    /// Whether the caller's time for this proposal is up: its clock, so the tuner reads none.
    /// Once it says so, the search keeps the best plan it found so far.
    pub out_of_time: &'a dyn Fn() -> bool,
}

fn never() -> bool {
    false
}

impl Default for SearchBudget<'_> {
    /// 1,500 steps an attempt, no time limit (tests, and callers that bound steps only).
    fn default() -> Self {
        SearchBudget { iterations: 1500, out_of_time: &never }
    }
}

/// What a proposer sees: the cluster now, the job's configuration and trials so far, the plans
/// already measured, and the estimator refitted to them.
pub struct Scene<'a> {
    pub ctx: &'a Context<'a>,
    pub config: &'a JobConfig,
    pub trials: &'a [Trial],
    /// Plans measured already, by [`plan_key`]: never proposed again.
    pub seen: &'a HashSet<u64>,
    pub estimator: &'a dyn Estimator,
    /// The job's best trial's plan, as made for the topology it was measured on.
    best_measured: Option<Plan>,
    best: OnceCell<Option<Plan>>,
    space: OnceCell<Space>,
}

impl<'a> Scene<'a> {
    pub fn new(
        ctx: &'a Context<'a>,
        config: &'a JobConfig,
        trials: &'a [Trial],
        seen: &'a HashSet<u64>,
        estimator: &'a dyn Estimator,
        best_measured: Option<Plan>,
    ) -> Scene<'a> {
        Scene { ctx, config, trials, seen, estimator, best_measured, best: OnceCell::new(), space: OnceCell::new() }
    }

    /// The estimator's value of the job's objective for `plan`.
    pub fn predict(&self, plan: &Plan) -> f64 {
        self.estimator.estimate(self.config.objective, plan)
    }

    /// Measured or failed trials of the search (not baselines).
    pub fn search_trials(&self) -> usize {
        self.trials.iter().filter(|t| !matches!(t.kind, TrialKind::Baseline(_))).count()
    }

    /// Whether `plan` may be proposed: valid for the model and not measured before.
    pub fn fresh(&self, plan: &Plan) -> bool {
        plan.validate(self.ctx.spec).is_ok() && !self.seen.contains(&plan_key(plan))
    }

    /// Where the search starts: the best plan so far, folded onto the cores there are now;
    /// before any measurement, the size-threshold plan. `None` when neither can be made.
    pub fn best(&self) -> Option<&Plan> {
        self.best
            .get_or_init(|| {
                let ctx = self.ctx;
                self.best_measured
                    .as_ref()
                    .map(|p| adapt_plan(p, &ctx.topology))
                    .or_else(|| Strategy::SizeThreshold.plan(ctx.spec, &ctx.topology, &BaselineOptions::default()).ok())
            })
            .as_ref()
    }

    /// The plan space of the cluster there is now.
    pub fn space(&self) -> &Space {
        self.space.get_or_init(|| {
            let ctx = self.ctx;
            Space::new(
                ctx.spec,
                ctx.profiles,
                ctx.topology.total_cores(),
                ctx.nodes.first().map_or(1 << 20, |n| n.caps.l2_bytes),
            )
        })
    }
}

/// Every baseline strategy that applies, once, then every named plan the job was given
/// (another planner's), folded onto the cores there are now. A baseline that cannot be made
/// is proposed as not fitting, to be recorded as a failed trial and not proposed again.
#[derive(Default)]
pub struct Baselines {
    tried: HashSet<String>,
}

impl Proposer for Baselines {
    fn propose(&mut self, scene: &Scene<'_>, _rng: &mut Xoshiro256PlusPlus) -> Option<Proposal> {
        let ctx = scene.ctx;
        for s in Strategy::baselines(ctx.topology.client_memory_bytes) {
            if self.tried.contains(s.name()) {
                continue;
            }
            return match s.plan(ctx.spec, &ctx.topology, &BaselineOptions::default()) {
                Ok(plan) => {
                    let predicted = scene.predict(&plan);
                    Some(Proposal::measure(TrialKind::Baseline(s.name().into()), plan, predicted))
                }
                Err(e) => {
                    // The plan stored with the failed trial stands in for the one that could
                    // not be made; spreading every table over every core, it fits wherever
                    // anything does.
                    let stand_in =
                        Strategy::AllShard.plan(ctx.spec, &ctx.topology, &BaselineOptions::default()).ok()?;
                    Some(Proposal::does_not_fit(s.name(), stand_in, e))
                }
            };
        }
        for b in &scene.config.baseline_plans {
            if self.tried.contains(&b.name) {
                continue;
            }
            let mut plan = adapt_plan(&b.plan, &ctx.topology);
            plan.strategy = b.name.clone();
            return Some(match plan.validate(ctx.spec) {
                Ok(()) => {
                    let predicted = scene.predict(&plan);
                    Proposal::measure(TrialKind::Baseline(b.name.clone()), plan, predicted)
                }
                // Recorded as a failed trial, like a strategy whose plan does not fit.
                Err(e) => Proposal::does_not_fit(&b.name, plan, e),
            });
        }
        None
    }

    fn feedback(&mut self, trial: &Trial) {
        if let TrialKind::Baseline(name) = &trial.kind {
            self.tried.insert(name.clone());
        }
    }
}

/// Random plans from the same space, with random knobs: the yardstick the model-driven search
/// is compared to. Each walks a random number of moves from a random baseline.
pub struct RandomPlans;

impl RandomPlans {
    /// Plans drawn before giving up on finding one not measured yet.
    const DRAWS: usize = 50;
}

impl Proposer for RandomPlans {
    fn propose(&mut self, scene: &Scene<'_>, rng: &mut Xoshiro256PlusPlus) -> Option<Proposal> {
        let ctx = scene.ctx;
        let best = scene.best()?;
        let space = scene.space();
        let baselines = Strategy::baselines(ctx.topology.client_memory_bytes);
        for _ in 0..Self::DRAWS {
            let start = baselines[(rng.next_u64() % baselines.len() as u64) as usize]
                .plan(ctx.spec, &ctx.topology, &BaselineOptions::default())
                .unwrap_or_else(|_| best.clone());
            let mut p = start;
            for _ in 0..(5 + rng.next_u64() % 40) {
                p = neighbour(&p, ctx.spec, ctx.profiles, space, rng);
            }
            p.knobs =
                unit_to_knobs(&[(rng.next_u64() % 1000) as f64 / 1000.0, (rng.next_u64() % 1000) as f64 / 1000.0]);
            p.strategy = "random".into();
            if scene.fresh(&p) {
                let predicted = scene.predict(&p);
                return Some(Proposal::measure(TrialKind::Random, p, predicted));
            }
        }
        None
    }
}

/// Every third search trial, the knobs (sub-batch, requests in flight) of the best placement,
/// by Bayesian optimisation over what was measured of that placement.
pub struct Knobs;

impl Proposer for Knobs {
    fn propose(&mut self, scene: &Scene<'_>, rng: &mut Xoshiro256PlusPlus) -> Option<Proposal> {
        if scene.search_trials() % 3 != 2 {
            return None;
        }
        let best = scene.best()?;
        // Observations of this placement (any knobs), objective flipped to minimise.
        let same: Vec<(Vec<f64>, f64)> = scene
            .trials
            .iter()
            .filter(|t| t.plan.tables == best.tables)
            .filter_map(|t| t.measured.as_ref().map(|m| (knobs_to_unit(&t.plan.knobs), m.value)))
            .collect();
        let sign = if scene.config.objective.maximise() { -1.0 } else { 1.0 };
        let xs: Vec<Vec<f64>> = same.iter().map(|(x, _)| x.clone()).collect();
        let ys: Vec<f64> = same.iter().map(|(_, y)| sign * y.max(1e-9).ln()).collect();
        let x = if xs.len() >= 2 {
            let gp = bo::Gp::fit(&xs, &ys)?;
            let best_y = ys.iter().cloned().fold(f64::INFINITY, f64::min);
            bo::next_point(&gp, best_y, 2, scene.trials.len() as u64)
        } else {
            // Not enough points for a surrogate: a corner the default is far from.
            vec![(rng.next_u64() % 1000) as f64 / 1000.0, (rng.next_u64() % 1000) as f64 / 1000.0]
        };
        let mut p = best.clone();
        p.knobs = unit_to_knobs(&x);
        p.strategy = "tuned".into();
        if !scene.fresh(&p) {
            return None;
        }
        let predicted = scene.predict(&p);
        Some(Proposal::measure(TrialKind::Knobs, p, predicted))
    }
}

/// A placement from simulated annealing on the refitted estimator, started from the best plan
/// so far and never one measured before: when the estimator's favourite is measured already,
/// it explores around it, further on each attempt. The first search trial is the `auto`
/// placement (`make::default_plan`: client-resident small tables, replicate what fits, split
/// the rest), which no baseline is: on the device it measured 1.2-1.6x the all-replicate
/// baseline that a job had tied with (BENCHMARKS.md, "Cluster: the direct path"), so a job
/// that never measured it could miss the best plan it knew how to make.
pub struct Annealing;

impl Annealing {
    /// Attempts, each hotter than the last, before giving up.
    pub const ATTEMPTS: u64 = 6;
}

impl Proposer for Annealing {
    fn propose(&mut self, scene: &Scene<'_>, rng: &mut Xoshiro256PlusPlus) -> Option<Proposal> {
        let ctx = scene.ctx;
        if !scene.trials.iter().any(|t| t.kind == TrialKind::Search) {
            let caps = ctx.nodes.first().map(|n| n.caps).unwrap_or_default();
            if let Ok(mut p) = crate::make::default_plan(ctx.spec, &ctx.topology, ctx.profiles, &caps) {
                p.strategy = "tuned".into();
                if scene.fresh(&p) {
                    let predicted = scene.predict(&p);
                    return Some(Proposal::measure(TrialKind::Search, p, predicted));
                }
            }
        }
        let best = scene.best()?;
        let space = scene.space();
        for attempt in 0..Self::ATTEMPTS {
            let cfg = SearchConfig {
                iterations: ctx.search.iterations,
                seed: scene.config.seed ^ (scene.trials.len() as u64 * 7919) ^ attempt,
                initial_temperature: 0.2 + 0.3 * attempt as f64,
            };
            let found =
                anneal(scene.estimator, space, scene.config.objective, best.clone(), &cfg, ctx.search.out_of_time);
            let mut p = found.plan;
            if scene.seen.contains(&plan_key(&p)) {
                // The estimator's favourite is measured already: explore around it.
                for _ in 0..(1 + attempt) {
                    p = neighbour(&p, ctx.spec, ctx.profiles, space, rng);
                }
            }
            p.strategy = "tuned".into();
            if scene.fresh(&p) {
                let predicted = scene.predict(&p);
                return Some(Proposal::measure(TrialKind::Search, p, predicted));
            }
        }
        None
    }
}

/// Knobs as a point of the unit square: log2 of the sub-batch in [3, 9], log2 of the requests in
/// flight in [0, 5].
fn knobs_to_unit(k: &PlanKnobs) -> Vec<f64> {
    vec![((k.sub_batch.max(1) as f64).log2() - 3.0) / 6.0, (k.inflight_per_worker.max(1) as f64).log2() / 5.0]
}

fn unit_to_knobs(x: &[f64]) -> PlanKnobs {
    PlanKnobs {
        sub_batch: 2f64.powf(3.0 + 6.0 * x[0].clamp(0.0, 1.0)).round() as u32,
        inflight_per_worker: 2f64.powf(5.0 * x[1].clamp(0.0, 1.0)).round().max(1.0) as u32,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::job::Tuner;
    use embtune_protocol::tuning::{ClusterDesc, Job, Measured};
    use embtune_workloads::{ModelSpec, Preset, PresetOptions, TableProfile};

    /// One worker of two cores with the default costs, and a short search.
    fn two_cores<'a>(spec: &'a ModelSpec, prof: &'a [TableProfile], out_of_time: &'a dyn Fn() -> bool) -> Context<'a> {
        Context { search: SearchBudget { iterations: 300, out_of_time }, ..crate::job::tests::two_cores(spec, prof) }
    }

    /// The kinds of the trials a job of `search` proposes, each measured a little better than
    /// the last.
    fn kinds(search: SearchKind, trials: u32) -> Vec<TrialKind> {
        let spec = Preset::Avazu.spec(&PresetOptions { scale: Some(0.001), ..Default::default() }).unwrap();
        let prof = vec![TableProfile::default(); spec.tables.len()];
        let ctx = two_cores(&spec, &prof, &never);
        let config = JobConfig { trials, search, ..Default::default() };
        let job = Job::new("j".into(), "t".into(), spec.clone(), ClusterDesc::default(), config, 0);
        let mut t = Tuner::new(job, Vec::new());
        let mut out = Vec::new();
        while let Some(p) = t.next(&ctx) {
            out.push(p.kind.clone());
            let value = 100.0 + out.len() as f64;
            t.record(&ctx, p, Ok(Measured { value, ..Default::default() }), 0, 0, 1.0);
        }
        out
    }

    #[test]
    fn the_search_kind_chooses_the_stages_behind_the_baselines() {
        let model = kinds(SearchKind::Model, 6);
        let n = Strategy::baselines(0).len();
        assert_eq!(model.len(), n + 6, "every baseline and 6 search trials: {model:?}");
        assert!(model[..n].iter().all(|k| matches!(k, TrialKind::Baseline(_))), "{model:?}");
        assert!(model[n..].iter().all(|k| matches!(k, TrialKind::Search | TrialKind::Knobs)), "{model:?}");
        assert!(model[n..].contains(&TrialKind::Knobs), "the knobs stage has its turn: {model:?}");
        assert!(model[n..].contains(&TrialKind::Search), "{model:?}");
        let random = kinds(SearchKind::Random, 4);
        assert_eq!(random.len(), n + 4, "{random:?}");
        assert!(random[n..].iter().all(|k| *k == TrialKind::Random), "{random:?}");
    }

    #[test]
    fn the_first_search_trial_is_the_auto_placement() {
        let spec = Preset::Avazu.spec(&PresetOptions { scale: Some(0.001), ..Default::default() }).unwrap();
        let prof = vec![TableProfile::default(); spec.tables.len()];
        let ctx = two_cores(&spec, &prof, &never);
        let job = Job::new("j".into(), "t".into(), spec.clone(), ClusterDesc::default(), JobConfig::default(), 0);
        let mut t = Tuner::new(job, Vec::new());
        let first = loop {
            let p = t.next(&ctx).expect("a search trial");
            if p.kind == TrialKind::Search {
                break p;
            }
            t.record(&ctx, p, Ok(Measured { value: 1.0, ..Default::default() }), 0, 0, 1.0);
        };
        let caps = ctx.nodes[0].caps;
        let auto = crate::make::default_plan(&spec, &ctx.topology, &prof, &caps).unwrap();
        assert_eq!(plan_key(&first.plan), plan_key(&auto), "{}", first.plan.summary());
    }

    #[test]
    fn a_search_out_of_time_still_proposes_a_plan_not_measured_before() {
        let spec = Preset::Avazu.spec(&PresetOptions { scale: Some(0.001), ..Default::default() }).unwrap();
        let prof = vec![TableProfile::default(); spec.tables.len()];
        let ctx = two_cores(&spec, &prof, &|| true);
        let config = JobConfig { trials: 2, ..Default::default() };
        let job = Job::new("j".into(), "t".into(), spec.clone(), ClusterDesc::default(), config, 0);
        let mut t = Tuner::new(job, Vec::new());
        let mut keys = HashSet::new();
        while let Some(p) = t.next(&ctx) {
            // Two strategies may make the same plan; the search never proposes a measured one.
            let fresh = keys.insert(plan_key(&p.plan));
            assert!(fresh || matches!(p.kind, TrialKind::Baseline(_)), "proposed twice: {:?}", p.kind);
            t.record(&ctx, p, Ok(Measured { value: 1.0, ..Default::default() }), 0, 0, 1.0);
        }
        assert_eq!(t.search_trials(), 2, "the search explores around its start instead");
    }
}
