//! The model-driven search: simulated annealing over plans (argmin's solver), scored by an
//! [`Estimator`] (the calibrated cost model), memory limits as hard constraints. It reads no
//! clock: how long it may run is the caller's to say.

use std::cell::{Cell, RefCell};

use argmin::core::{CostFunction, Error as ArgminError, Executor, State};
use argmin::solver::simulatedannealing::{Anneal, SATempFunc, SimulatedAnnealing};
use rand_xoshiro::Xoshiro256PlusPlus;
use rand_xoshiro::rand_core::SeedableRng;

use embtune_protocol::Plan;
pub use embtune_protocol::tuning::Objective;
use embtune_workloads::{ModelSpec, TableProfile};

use crate::cost::{CoreCache, Model, Prediction, predict_cached, predict_model};
use crate::space::{Space, neighbour};

/// What the search and the proposers predict plans with: the CPU cost model ([`Model`]), or
/// another model that plugs in (a GPU's).
pub trait Estimator {
    /// The model the plans are for.
    fn spec(&self) -> &ModelSpec;
    /// The model's tables' access profiles.
    fn profiles(&self) -> &[TableProfile];
    /// The predicted value of `objective` for `plan`, in the objective's unit (batches/s for
    /// throughput, microseconds for the latencies).
    fn estimate(&self, objective: Objective, plan: &Plan) -> f64;
    /// [`Estimator::estimate`] that may reuse per-core costs kept in `cache` between calls on
    /// similar plans (a search's moves change a table or two). The default keeps nothing.
    fn estimate_cached(&self, objective: Objective, plan: &Plan, _cache: &CoreCache) -> f64 {
        self.estimate(objective, plan)
    }
}

impl Estimator for Model<'_> {
    fn spec(&self) -> &ModelSpec {
        self.w.spec
    }

    fn profiles(&self) -> &[TableProfile] {
        self.w.profiles
    }

    fn estimate(&self, objective: Objective, plan: &Plan) -> f64 {
        predicted(objective, &predict_model(self, plan))
    }

    fn estimate_cached(&self, objective: Objective, plan: &Plan, cache: &CoreCache) -> f64 {
        predicted(objective, &predict_cached(self, plan, cache))
    }
}

/// The model's estimate of an objective's value for a prediction: batches/s for throughput,
/// microseconds for the latencies.
pub fn predicted(objective: Objective, p: &Prediction) -> f64 {
    match objective {
        Objective::Throughput => p.throughput(),
        Objective::Mean => p.latency_ns / 1e3,
        Objective::P99 { qps } => {
            // Queueing at utilisation rho inflates the tail; past saturation it grows without
            // bound, which a large finite value keeps comparable.
            let rho = qps * p.bottleneck_ns / 1e9;
            let lat = p.latency_ns / 1e3;
            if rho >= 0.97 { lat * 1e3 * rho } else { lat * (1.0 + 2.3 * rho / (1.0 - rho)) }
        }
    }
}

/// A cost to minimise for an objective.
pub fn cost(objective: Objective, p: &Prediction) -> f64 {
    cost_of(objective, predicted(objective, p))
}

/// The cost to minimise for an objective's predicted value.
fn cost_of(objective: Objective, v: f64) -> f64 {
    if objective.maximise() { 1e9 / v.max(1e-9) } else { v }
}

/// How hard to search: the steps, and the seeds and temperature that make a search
/// reproducible.
#[derive(Clone, Debug)]
pub struct SearchConfig {
    pub iterations: u64,
    pub seed: u64,
    pub initial_temperature: f64,
}

impl Default for SearchConfig {
    fn default() -> Self {
        SearchConfig { iterations: 3000, seed: 1, initial_temperature: 0.2 }
    }
}

struct Problem<'a, E: ?Sized> {
    est: &'a E,
    space: &'a Space,
    objective: Objective,
    rng: RefCell<Xoshiro256PlusPlus>,
    /// The starting plan's cost: costs are relative to it, so one temperature suits any model.
    scale: f64,
    out_of_time: &'a dyn Fn() -> bool,
    /// Moves proposed so far, and who wants to hear of them (a progress bar).
    steps: Cell<u64>,
    on_step: Option<&'a dyn Fn(u64)>,
    /// Per-core costs between moves: a move changes a table or two, so most cores cost what
    /// they did.
    cache: CoreCache,
}

impl<E: Estimator + ?Sized> CostFunction for Problem<'_, E> {
    type Param = Plan;
    type Output = f64;
    fn cost(&self, plan: &Plan) -> Result<f64, ArgminError> {
        if plan.validate(self.est.spec()).is_err() {
            // Over a memory limit (or otherwise invalid): never accepted.
            return Ok(f64::INFINITY);
        }
        Ok(cost_of(self.objective, self.est.estimate_cached(self.objective, plan, &self.cache)) / self.scale)
    }
}

impl<E: Estimator + ?Sized> Anneal for Problem<'_, E> {
    type Param = Plan;
    type Output = Plan;
    type Float = f64;
    fn anneal(&self, plan: &Plan, extent: f64) -> Result<Plan, ArgminError> {
        if (self.out_of_time)() {
            // Out of time: propose the same plan, which ends the search by stalling.
            return Ok(plan.clone());
        }
        self.steps.set(self.steps.get() + 1);
        if let Some(f) = self.on_step {
            f(self.steps.get());
        }
        let mut rng = self.rng.borrow_mut();
        // Hot starts take several steps at once; cold ones refine one move at a time.
        let steps = 1 + (extent * 3.0) as usize;
        let mut p = plan.clone();
        for _ in 0..steps {
            p = neighbour(&p, self.est.spec(), self.est.profiles(), self.space, &mut rng);
        }
        Ok(p)
    }
}

/// Result of a search.
pub struct Found {
    pub plan: Plan,
    /// The estimator's value of the objective for it.
    pub value: f64,
    pub iterations: u64,
}

/// Anneals from `start` and returns the best plan the estimator found (never worse than
/// `start`), in at most `cfg.iterations` steps and until `out_of_time` (the caller's clock)
/// says to stop.
pub fn anneal<E: Estimator + ?Sized>(
    est: &E,
    space: &Space,
    objective: Objective,
    start: Plan,
    cfg: &SearchConfig,
    out_of_time: &dyn Fn() -> bool,
) -> Found {
    anneal_observed(est, space, objective, start, cfg, out_of_time, None)
}

/// [`anneal`], calling `on_step` with the number of moves proposed so far after each one (at
/// most `cfg.iterations`), for progress.
pub fn anneal_observed<E: Estimator + ?Sized>(
    est: &E,
    space: &Space,
    objective: Objective,
    start: Plan,
    cfg: &SearchConfig,
    out_of_time: &dyn Fn() -> bool,
    on_step: Option<&dyn Fn(u64)>,
) -> Found {
    let start_value = est.estimate(objective, &start);
    let scale = cost_of(objective, start_value).max(1e-9);
    let problem = Problem {
        est,
        space,
        objective,
        rng: RefCell::new(Xoshiro256PlusPlus::seed_from_u64(cfg.seed)),
        scale,
        out_of_time,
        steps: Cell::new(0),
        on_step,
        cache: CoreCache::default(),
    };
    let solver =
        SimulatedAnnealing::new_with_rng(cfg.initial_temperature, Xoshiro256PlusPlus::seed_from_u64(cfg.seed ^ 0x5a))
            .expect("a positive temperature")
            .with_temp_func(SATempFunc::Boltzmann)
            .with_stall_best(cfg.iterations / 3 + 50)
            .with_reannealing_best(cfg.iterations / 6 + 20);
    let res = Executor::new(problem, solver).configure(|s| s.param(start.clone()).max_iters(cfg.iterations)).run();
    let (plan, iterations) = match res {
        Ok(r) => {
            let iters = r.state().get_iter();
            let best = r.state.best_param.clone().unwrap_or(start.clone());
            (best, iters)
        }
        Err(e) => {
            tracing::warn!("the search stopped early: {e}");
            (start.clone(), 0)
        }
    };
    let mut plan = plan;
    let mut value = est.estimate(objective, &plan);
    if cost_of(objective, value) > cost_of(objective, start_value) || plan.validate(est.spec()).is_err() {
        plan = start;
        value = start_value;
    }
    Found { plan, value, iterations }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Strategy;
    use crate::cost::{Coefficients, Node, Workload};
    use crate::rules::MemoryCaps;
    use embtune_protocol::Topology;
    use embtune_workloads::{AccessProfile, BatchGenerator, Preset, PresetOptions};

    #[test]
    fn the_search_improves_on_its_start_and_respects_memory() {
        // Terabyte's C21 looks up 100 ids a sample: round-robin leaves its core the bottleneck.
        let spec = Preset::CriteoTerabyte.spec(&PresetOptions { scale: Some(0.0002), ..Default::default() }).unwrap();
        let g = BatchGenerator::new(&spec).unwrap();
        let rows: Vec<u64> = spec.tables.iter().map(|t| t.rows).collect();
        let prof = AccessProfile::from_batches(&rows, &g.pool(1 << 40, 4));
        // One engine of four cores; a per-core memory limit that round-robin meets, so the
        // search must keep to it too.
        let mut topo = Topology::uniform(1, 4, spec.total_bytes() * 2);
        topo.workers[0].core_memory_bytes = Some(spec.total_bytes() / 2);
        let model = Model::local(
            Workload { spec: &spec, profiles: &prof.tables },
            Node { caps: MemoryCaps::default(), coef: Coefficients::default() },
        );
        let start = Strategy::RoundRobin.plan(&spec, &topo, &Default::default()).unwrap();
        start.validate(&spec).unwrap();
        let space = Space::new(&spec, &prof.tables, 4, 1 << 20);
        let cfg = SearchConfig { iterations: 600, ..Default::default() };
        let found = anneal(&model, &space, Objective::Throughput, start.clone(), &cfg, &|| false);
        let before = predict_model(&model, &start).throughput();
        assert!(found.value > before * 1.5, "{} vs {before}", found.value);
        found.plan.validate(&spec).unwrap();
        // The same seed finds the same plan: searches are reproducible.
        let again = anneal(&model, &space, Objective::Throughput, start.clone(), &cfg, &|| false);
        assert_eq!(again.plan, found.plan);
        // Out of time from the start: the search stalls and keeps where it started.
        let stopped = anneal(&model, &space, Objective::Throughput, start.clone(), &cfg, &|| true);
        assert_eq!(stopped.plan, start);
    }

    #[test]
    fn cached_predictions_equal_fresh_ones() {
        // A walk of moves (tables owned, sharded, replicated and back) on workers of two sizes:
        // the cached prediction of every plan must be the fresh one, figure for figure.
        let spec = Preset::CriteoKaggle
            .spec(&PresetOptions { scale: Some(0.001), allow_quantization: true, ..Default::default() })
            .unwrap();
        let g = BatchGenerator::new(&spec).unwrap();
        let rows: Vec<u64> = spec.tables.iter().map(|t| t.rows).collect();
        let prof = AccessProfile::from_batches(&rows, &g.pool(0, 4));
        let shape = |cores| embtune_protocol::WorkerShape { cores, memory_bytes: 8 << 30, core_memory_bytes: None };
        let topo = Topology::of(vec![shape(2), shape(3), shape(2)]);
        let node = Node { caps: MemoryCaps::default(), coef: Coefficients::default() };
        let model = Model::new(Workload { spec: &spec, profiles: &prof.tables }, vec![node; 3]);
        let space = Space::new(&spec, &prof.tables, 7, 1 << 20);
        let cache = CoreCache::default();
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(3);
        let mut plan = Strategy::GreedyCost.plan(&spec, &topo, &Default::default()).unwrap();
        let mut replicated_seen = 0;
        for i in 0..400 {
            plan = crate::space::neighbour(&plan, &spec, &prof.tables, &space, &mut rng);
            let (a, b) = (predict_model(&model, &plan), predict_cached(&model, &plan, &cache));
            assert_eq!(a.bottleneck_ns, b.bottleneck_ns, "move {i}");
            assert_eq!(a.latency_ns, b.latency_ns, "move {i}");
            assert_eq!(a.per_core_ns, b.per_core_ns, "move {i}");
            assert!(b.per_table.is_empty());
            replicated_seen +=
                plan.tables.iter().filter(|t| t.placement == embtune_protocol::Placement::Replicated).count();
        }
        assert!(replicated_seen > 0, "the walk never replicated a table");
    }
}
