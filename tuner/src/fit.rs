//! Refitting the cost model to measurements: least squares on log error through argmin.
//!
//! Each coefficient gets a multiplier `exp(theta_i)`; argmin's Nelder-Mead minimises the mean
//! squared log error between predicted and measured objective values over every measured trial,
//! plus a small ridge on `theta` that keeps coefficients near their calibrated values when few
//! trials say little about them.

use argmin::core::{CostFunction, Error as ArgminError, Executor, State};
use argmin::solver::neldermead::NelderMead;

use embtune_protocol::Plan;

use crate::cost::{Coefficients, Model, predict_model};
use crate::search::Objective;

/// One measured plan.
#[derive(Clone, Debug)]
pub struct Observation {
    pub plan: Plan,
    /// The objective's measured value (batches/s or microseconds).
    pub measured: f64,
}

struct Fit<'a, 'm> {
    model: &'a Model<'m>,
    base: Vec<f64>,
    obs: &'a [Observation],
    objective: Objective,
    ridge: f64,
}

impl Fit<'_, '_> {
    fn coefficients(&self, theta: &[f64]) -> Coefficients {
        Coefficients::from_vec(
            &self.base.iter().zip(theta).map(|(b, t)| b * t.clamp(-6.0, 6.0).exp()).collect::<Vec<_>>(),
        )
    }
}

impl CostFunction for Fit<'_, '_> {
    type Param = Vec<f64>;
    type Output = f64;
    fn cost(&self, theta: &Vec<f64>) -> Result<f64, ArgminError> {
        let coef = self.coefficients(theta);
        let nodes = self.model.nodes.iter().map(|n| crate::cost::Node { caps: n.caps, coef: coef.clone() }).collect();
        let m = Model {
            w: crate::cost::Workload { spec: self.model.w.spec, profiles: self.model.w.profiles },
            curves: self.model.curves.clone(),
            nodes,
            networked: self.model.networked,
            clients: self.model.clients,
            wire_value_bytes: self.model.wire_value_bytes,
        };
        let err: f64 = self
            .obs
            .iter()
            .map(|o| {
                let p = crate::search::predicted(self.objective, &predict_model(&m, &o.plan)).max(1e-9);
                (p.ln() - o.measured.max(1e-9).ln()).powi(2)
            })
            .sum::<f64>()
            / self.obs.len().max(1) as f64;
        Ok(err + self.ridge * theta.iter().map(|t| t * t).sum::<f64>())
    }
}

/// The fitted coefficients and the fit's median relative error.
#[derive(Clone, Debug)]
pub struct Fitted {
    pub coefficients: Coefficients,
    /// Median of |predicted - measured| / measured over the observations, after fitting.
    pub median_error: f64,
}

/// Refits the coefficients of `model`'s first node to `obs`.
pub fn refit(model: &Model<'_>, objective: Objective, obs: &[Observation]) -> Fitted {
    let base = model.nodes[0].coef.to_vec();
    let d = base.len();
    if obs.len() < 2 {
        return Fitted { coefficients: model.nodes[0].coef.clone(), median_error: median_error(model, objective, obs) };
    }
    let problem = Fit { model, base: base.clone(), obs, objective, ridge: 0.02 };
    // A simplex around theta = 0 (the calibrated coefficients).
    let mut simplex = vec![vec![0.0; d]];
    for i in 0..d {
        let mut v = vec![0.0; d];
        v[i] = 0.5;
        simplex.push(v);
    }
    let solver = NelderMead::new(simplex).with_sd_tolerance(1e-5).expect("a valid tolerance");
    let res = Executor::new(problem, solver).configure(|s| s.max_iters(400)).run();
    let theta = match res {
        Ok(r) => r.state().get_best_param().cloned().unwrap_or_else(|| vec![0.0; d]),
        Err(e) => {
            tracing::warn!("refitting the cost model failed: {e}");
            vec![0.0; d]
        }
    };
    let fit = Fit { model, base, obs, objective, ridge: 0.0 };
    let coefficients = fit.coefficients(&theta);
    let nodes = model.nodes.iter().map(|n| crate::cost::Node { caps: n.caps, coef: coefficients.clone() }).collect();
    let m = Model {
        w: crate::cost::Workload { spec: model.w.spec, profiles: model.w.profiles },
        curves: model.curves.clone(),
        nodes,
        networked: model.networked,
        clients: model.clients,
        wire_value_bytes: model.wire_value_bytes,
    };
    Fitted { median_error: median_error(&m, objective, obs), coefficients }
}

/// Median relative error of the model's predictions over `obs`.
pub fn median_error(model: &Model<'_>, objective: Objective, obs: &[Observation]) -> f64 {
    let mut e: Vec<f64> = obs
        .iter()
        .map(|o| {
            (crate::search::predicted(objective, &predict_model(model, &o.plan)) - o.measured).abs()
                / o.measured.abs().max(1e-9)
        })
        .collect();
    if e.is_empty() {
        return f64::NAN;
    }
    e.sort_by(f64::total_cmp);
    e[e.len() / 2]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Strategy;
    use crate::cost::{Node, Workload};
    use crate::rules::MemoryCaps;
    use embtune_protocol::Topology;
    use embtune_workloads::{Preset, PresetOptions, TableProfile};

    #[test]
    fn refitting_recovers_a_scaled_machine() {
        // "Measurements" from a machine whose memory is 3x slower than the default
        // coefficients say: the fit must find that and predict within a few percent.
        let spec = Preset::CriteoTerabyte.spec(&PresetOptions { scale: Some(0.0002), ..Default::default() }).unwrap();
        let prof = vec![TableProfile::default(); spec.tables.len()];
        let topo = Topology::uniform(1, 4, 1 << 40);
        let node = Node { caps: MemoryCaps::default(), coef: Coefficients::default() };
        let mut slow = Coefficients::default();
        slow.dram_ns *= 3.0;
        slow.llc_ns *= 3.0;
        let truth =
            Model::local(Workload { spec: &spec, profiles: &prof }, Node { caps: MemoryCaps::default(), coef: slow });
        let obs: Vec<Observation> = Strategy::baselines(0)
            .iter()
            .filter_map(|s| s.plan(&spec, &topo, &Default::default()).ok())
            .map(|plan| Observation {
                measured: crate::search::predicted(Objective::Throughput, &predict_model(&truth, &plan)),
                plan,
            })
            .collect();
        let model = Model::local(Workload { spec: &spec, profiles: &prof }, node);
        let before = median_error(&model, Objective::Throughput, &obs);
        let fitted = refit(&model, Objective::Throughput, &obs);
        assert!(before > 0.3, "the default model should be off: {before}");
        // The issue asks for 20%; the ridge keeps the fit from being exact.
        assert!(fitted.median_error < 0.1, "after fitting: {}", fitted.median_error);
    }
}
