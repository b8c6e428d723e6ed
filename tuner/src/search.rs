//! The model-driven search: simulated annealing over plans (argmin's solver), scored by the
//! calibrated cost model, memory limits as hard constraints.

use std::cell::{Cell, RefCell};
use std::time::{Duration, Instant};

use argmin::core::{CostFunction, Error as ArgminError, Executor, State};
use argmin::solver::simulatedannealing::{Anneal, SATempFunc, SimulatedAnnealing};
use rand_xoshiro::Xoshiro256PlusPlus;
use rand_xoshiro::rand_core::SeedableRng;

use embtune_protocol::Plan;
pub use embtune_protocol::tuning::Objective;

use crate::cost::{CoreCache, Model, Prediction, predict_cached, predict_model};
use crate::space::{Space, neighbour};

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
    let v = predicted(objective, p);
    if objective.maximise() { 1e9 / v.max(1e-9) } else { v }
}

/// How long and how hard to search.
#[derive(Clone, Debug)]
pub struct SearchConfig {
    pub iterations: u64,
    pub time_limit: Duration,
    pub seed: u64,
    pub initial_temperature: f64,
}

impl Default for SearchConfig {
    fn default() -> Self {
        SearchConfig { iterations: 3000, time_limit: Duration::from_secs(8), seed: 1, initial_temperature: 0.2 }
    }
}

struct Problem<'a, 'm> {
    model: &'a Model<'m>,
    space: &'a Space,
    objective: Objective,
    rng: RefCell<Xoshiro256PlusPlus>,
    /// The starting plan's cost: costs are relative to it, so one temperature suits any model.
    scale: f64,
    deadline: Instant,
    /// Moves proposed so far, and who wants to hear of them (a progress bar).
    steps: Cell<u64>,
    on_step: Option<&'a dyn Fn(u64)>,
    /// Per-core costs between moves: a move changes a table or two, so most cores cost what
    /// they did.
    cache: CoreCache,
}

impl CostFunction for Problem<'_, '_> {
    type Param = Plan;
    type Output = f64;
    fn cost(&self, plan: &Plan) -> Result<f64, ArgminError> {
        if plan.validate(self.model.w.spec).is_err() {
            // Over a memory limit (or otherwise invalid): never accepted.
            return Ok(f64::INFINITY);
        }
        Ok(cost(self.objective, &predict_cached(self.model, plan, &self.cache)) / self.scale)
    }
}

impl Anneal for Problem<'_, '_> {
    type Param = Plan;
    type Output = Plan;
    type Float = f64;
    fn anneal(&self, plan: &Plan, extent: f64) -> Result<Plan, ArgminError> {
        if Instant::now() > self.deadline {
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
            p = neighbour(&p, self.model.w.spec, self.model.w.profiles, self.space, &mut rng);
        }
        Ok(p)
    }
}

/// Result of a search.
pub struct Found {
    pub plan: Plan,
    pub prediction: Prediction,
    pub iterations: u64,
    pub seconds: f64,
}

/// Anneals from `start` and returns the best plan the model found (never worse than `start`).
pub fn anneal(model: &Model<'_>, space: &Space, objective: Objective, start: Plan, cfg: &SearchConfig) -> Found {
    anneal_observed(model, space, objective, start, cfg, None)
}

/// [`anneal`], calling `on_step` with the number of moves proposed so far after each one (at
/// most `cfg.iterations`), for progress.
pub fn anneal_observed(
    model: &Model<'_>,
    space: &Space,
    objective: Objective,
    start: Plan,
    cfg: &SearchConfig,
    on_step: Option<&dyn Fn(u64)>,
) -> Found {
    let t0 = Instant::now();
    let start_pred = predict_model(model, &start);
    let scale = cost(objective, &start_pred).max(1e-9);
    let problem = Problem {
        model,
        space,
        objective,
        rng: RefCell::new(Xoshiro256PlusPlus::seed_from_u64(cfg.seed)),
        scale,
        deadline: t0 + cfg.time_limit,
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
    let mut prediction = predict_model(model, &plan);
    if cost(objective, &prediction) > cost(objective, &start_pred) || plan.validate(model.w.spec).is_err() {
        plan = start;
        prediction = start_pred;
    }
    Found { plan, prediction, iterations, seconds: t0.elapsed().as_secs_f64() }
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
        let found = anneal(&model, &space, Objective::Throughput, start.clone(), &cfg);
        let before = predict_model(&model, &start).throughput();
        assert!(found.prediction.throughput() > before * 1.5, "{} vs {before}", found.prediction.throughput());
        found.plan.validate(&spec).unwrap();
        // The same seed finds the same plan: searches are reproducible.
        let again = anneal(&model, &space, Objective::Throughput, start, &cfg);
        assert_eq!(again.plan, found.plan);
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
