//! Bayesian optimisation of the continuous knobs: a Gaussian-process surrogate of measured
//! results with expected improvement as the acquisition; argmin's Nelder-Mead fits the kernel's
//! hyperparameters (by marginal likelihood) and maximises the acquisition.
//!
//! The knobs are scaled to the unit cube; observations are minimised (callers negate what they
//! maximise) and standardised before fitting.

use argmin::core::{CostFunction, Error as ArgminError, Executor, State};
use argmin::solver::neldermead::NelderMead;

/// A squared-exponential Gaussian process with one length scale per dimension.
#[derive(Clone, Debug)]
pub struct Gp {
    xs: Vec<Vec<f64>>,
    ys: Vec<f64>,
    mean: f64,
    scale: f64,
    lengths: Vec<f64>,
    signal: f64,
    /// Cholesky factor of the kernel matrix and K^-1 y, for predictions.
    chol: Vec<Vec<f64>>,
    alpha: Vec<f64>,
}

fn kernel(a: &[f64], b: &[f64], lengths: &[f64], signal: f64) -> f64 {
    let d2: f64 = a.iter().zip(b).zip(lengths).map(|((x, y), l)| ((x - y) / l).powi(2)).sum();
    signal * (-0.5 * d2).exp()
}

/// Lower Cholesky factor of a symmetric positive-definite matrix, or `None`.
fn cholesky(k: &[Vec<f64>]) -> Option<Vec<Vec<f64>>> {
    let n = k.len();
    let mut l = vec![vec![0.0; n]; n];
    for i in 0..n {
        for j in 0..=i {
            let s: f64 = (0..j).map(|m| l[i][m] * l[j][m]).sum();
            if i == j {
                let v = k[i][i] - s;
                if v <= 0.0 {
                    return None;
                }
                l[i][j] = v.sqrt();
            } else {
                l[i][j] = (k[i][j] - s) / l[j][j];
            }
        }
    }
    Some(l)
}

/// Solves L L^T x = b.
fn solve(l: &[Vec<f64>], b: &[f64]) -> Vec<f64> {
    let n = b.len();
    let mut y = vec![0.0; n];
    for i in 0..n {
        y[i] = (b[i] - (0..i).map(|j| l[i][j] * y[j]).sum::<f64>()) / l[i][i];
    }
    let mut x = vec![0.0; n];
    for i in (0..n).rev() {
        x[i] = (y[i] - (i + 1..n).map(|j| l[j][i] * x[j]).sum::<f64>()) / l[i][i];
    }
    x
}

impl Gp {
    fn build(
        xs: &[Vec<f64>],
        ys: &[f64],
        lengths: &[f64],
        signal: f64,
        noise: f64,
        mean: f64,
        scale: f64,
    ) -> Option<Gp> {
        let n = xs.len();
        let k: Vec<Vec<f64>> = (0..n)
            .map(|i| {
                (0..n).map(|j| kernel(&xs[i], &xs[j], lengths, signal) + if i == j { noise } else { 0.0 }).collect()
            })
            .collect();
        let chol = cholesky(&k)?;
        let z: Vec<f64> = ys.iter().map(|y| (y - mean) / scale).collect();
        let alpha = solve(&chol, &z);
        Some(Gp { xs: xs.to_vec(), ys: z, mean, scale, lengths: lengths.to_vec(), signal, chol, alpha })
    }

    /// Negative log marginal likelihood of the standardised data.
    fn nll(&self) -> f64 {
        let fit: f64 = self.ys.iter().zip(&self.alpha).map(|(y, a)| y * a).sum::<f64>() * 0.5;
        let det: f64 = self.chol.iter().enumerate().map(|(i, r)| r[i].ln()).sum();
        fit + det
    }

    /// Fits a GP to observations, choosing length scales, signal and noise by maximum marginal
    /// likelihood.
    pub fn fit(xs: &[Vec<f64>], ys: &[f64]) -> Option<Gp> {
        if xs.is_empty() {
            return None;
        }
        let d = xs[0].len();
        let mean = ys.iter().sum::<f64>() / ys.len() as f64;
        let var = ys.iter().map(|y| (y - mean).powi(2)).sum::<f64>() / ys.len() as f64;
        let scale = var.sqrt().max(1e-9);
        struct Nll<'a> {
            xs: &'a [Vec<f64>],
            ys: &'a [f64],
            mean: f64,
            scale: f64,
        }
        impl CostFunction for Nll<'_> {
            type Param = Vec<f64>;
            type Output = f64;
            fn cost(&self, p: &Vec<f64>) -> Result<f64, ArgminError> {
                let d = p.len() - 2;
                let lengths: Vec<f64> = p[..d].iter().map(|v| v.clamp(-5.0, 3.0).exp()).collect();
                let signal = p[d].clamp(-5.0, 3.0).exp();
                let noise = p[d + 1].clamp(-9.0, 1.0).exp();
                Ok(Gp::build(self.xs, self.ys, &lengths, signal, noise, self.mean, self.scale)
                    .map_or(1e12, |g| g.nll()))
            }
        }
        let start: Vec<f64> = std::iter::repeat_n((0.3f64).ln(), d).chain([0.0, (0.05f64).ln()]).collect();
        let mut simplex = vec![start.clone()];
        for i in 0..start.len() {
            let mut v = start.clone();
            v[i] += 0.7;
            simplex.push(v);
        }
        let best = Executor::new(Nll { xs, ys, mean, scale }, NelderMead::new(simplex).with_sd_tolerance(1e-4).ok()?)
            .configure(|s| s.max_iters(200))
            .run()
            .ok()
            .and_then(|r| r.state().get_best_param().cloned())
            .unwrap_or(start);
        let lengths: Vec<f64> = best[..d].iter().map(|v| v.clamp(-5.0, 3.0).exp()).collect();
        Gp::build(xs, ys, &lengths, best[d].clamp(-5.0, 3.0).exp(), best[d + 1].clamp(-9.0, 1.0).exp(), mean, scale)
    }

    /// Posterior mean and standard deviation at `x`, in the data's units.
    pub fn predict(&self, x: &[f64]) -> (f64, f64) {
        let k: Vec<f64> = self.xs.iter().map(|xi| kernel(x, xi, &self.lengths, self.signal)).collect();
        let mu: f64 = k.iter().zip(&self.alpha).map(|(a, b)| a * b).sum();
        let v = solve(&self.chol, &k);
        let var = (self.signal - k.iter().zip(&v).map(|(a, b)| a * b).sum::<f64>()).max(1e-12);
        (self.mean + mu * self.scale, var.sqrt() * self.scale)
    }

    /// Expected improvement below `best` (minimisation) at `x`.
    pub fn expected_improvement(&self, x: &[f64], best: f64) -> f64 {
        let (mu, sd) = self.predict(x);
        let z = (best - mu) / sd;
        (best - mu) * normal_cdf(z) + sd * normal_pdf(z)
    }
}

fn normal_pdf(z: f64) -> f64 {
    (-0.5 * z * z).exp() / (2.0 * std::f64::consts::PI).sqrt()
}

fn normal_cdf(z: f64) -> f64 {
    0.5 * (1.0 + libm_erf(z / std::f64::consts::SQRT_2))
}

/// erf by Abramowitz and Stegun 7.1.26 (error below 1.5e-7): plenty for an acquisition.
fn libm_erf(x: f64) -> f64 {
    let s = x.signum();
    let x = x.abs();
    let t = 1.0 / (1.0 + 0.327_591_1 * x);
    let y = 1.0
        - (((((1.061_405_429 * t - 1.453_152_027) * t) + 1.421_413_741) * t - 0.284_496_736) * t + 0.254_829_592)
            * t
            * (-x * x).exp();
    s * y
}

/// The point of the unit cube with the highest expected improvement: a Latin grid of starts,
/// each refined by Nelder-Mead, the best kept.
pub fn next_point(gp: &Gp, best: f64, dims: usize, seed: u64) -> Vec<f64> {
    struct NegEi<'a> {
        gp: &'a Gp,
        best: f64,
    }
    impl CostFunction for NegEi<'_> {
        type Param = Vec<f64>;
        type Output = f64;
        fn cost(&self, x: &Vec<f64>) -> Result<f64, ArgminError> {
            if x.iter().any(|v| !(0.0..=1.0).contains(v)) {
                return Ok(1e9);
            }
            Ok(-self.gp.expected_improvement(x, self.best))
        }
    }
    let mut best_x = vec![0.5; dims];
    let mut best_v = f64::INFINITY;
    let starts = 8;
    for s in 0..starts {
        // Deterministic, spread starting points.
        let x0: Vec<f64> = (0..dims)
            .map(|d| ((s as f64 + 0.5) / starts as f64 + 0.37 * d as f64 + (seed % 97) as f64 * 0.011).fract())
            .collect();
        let mut simplex = vec![x0.clone()];
        for d in 0..dims {
            let mut v = x0.clone();
            v[d] = (v[d] + 0.15).min(1.0);
            simplex.push(v);
        }
        let Ok(nm) = NelderMead::new(simplex).with_sd_tolerance(1e-6) else { continue };
        if let Ok(r) = Executor::new(NegEi { gp, best }, nm).configure(|st| st.max_iters(80)).run()
            && let Some(x) = r.state().get_best_param()
        {
            let v = r.state().get_best_cost();
            if v < best_v {
                best_v = v;
                best_x = x.clone();
            }
        }
    }
    best_x.iter().map(|v| v.clamp(0.0, 1.0)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_gp_interpolates_and_is_unsure_away_from_data() {
        let xs: Vec<Vec<f64>> = (0..8).map(|i| vec![i as f64 / 7.0]).collect();
        let ys: Vec<f64> = xs.iter().map(|x| (6.0 * x[0]).sin()).collect();
        let gp = Gp::fit(&xs, &ys).unwrap();
        for (x, y) in xs.iter().zip(&ys) {
            let (m, _) = gp.predict(x);
            assert!((m - y).abs() < 0.1, "at {x:?}: {m} vs {y}");
        }
        let (_, sd_near) = gp.predict(&[0.5]);
        let (_, sd_far) = gp.predict(&[3.0]);
        assert!(sd_far > sd_near);
    }

    #[test]
    fn expected_improvement_finds_the_minimum_of_a_bowl() {
        // Minimise (x - 0.7)^2 + (y - 0.2)^2 from 5 points, adding the EI choice each round.
        let f = |x: &[f64]| (x[0] - 0.7).powi(2) + (x[1] - 0.2).powi(2);
        let mut xs: Vec<Vec<f64>> =
            vec![vec![0.1, 0.1], vec![0.9, 0.9], vec![0.5, 0.5], vec![0.1, 0.9], vec![0.9, 0.1]];
        let mut ys: Vec<f64> = xs.iter().map(|x| f(x)).collect();
        for round in 0..12 {
            let gp = Gp::fit(&xs, &ys).unwrap();
            let best = ys.iter().cloned().fold(f64::INFINITY, f64::min);
            let x = next_point(&gp, best, 2, round);
            ys.push(f(&x));
            xs.push(x);
        }
        let best = ys.iter().cloned().fold(f64::INFINITY, f64::min);
        assert!(best < 0.01, "best found {best}");
    }
}
