//! The model-driven search: simulated annealing over plans (argmin's solver), scored by the
//! calibrated cost model, memory limits as hard constraints.

use std::cell::RefCell;
use std::time::{Duration, Instant};

use argmin::core::{CostFunction, Error as ArgminError, Executor, State};
use argmin::solver::simulatedannealing::{Anneal, SATempFunc, SimulatedAnnealing};
use rand_xoshiro::Xoshiro256PlusPlus;
use rand_xoshiro::rand_core::SeedableRng;

use embtune_protocol::Plan;
pub use embtune_protocol::tuning::Objective;

use crate::cost::{Model, Prediction, predict_model};
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
}

impl CostFunction for Problem<'_, '_> {
    type Param = Plan;
    type Output = f64;
    fn cost(&self, plan: &Plan) -> Result<f64, ArgminError> {
        if plan.validate(self.model.w.spec).is_err() {
            // Over a memory limit (or otherwise invalid): never accepted.
            return Ok(f64::INFINITY);
        }
        Ok(cost(self.objective, &predict_model(self.model, plan)) / self.scale)
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
}
