//! Samplers: turn an [`AccessDist`] into row ids, deterministically from a stream.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex, OnceLock};

use crate::WorkloadError;
use crate::rng::{Permutation, StreamRng, mix};
use crate::spec::{AccessDist, Pooling, TableSpec};
use crate::trace::Empirical;

/// Draws row ids for one table.
#[derive(Clone, Debug)]
pub enum Sampler {
    Uniform { rows: u64 },
    Zipf { zipf: ZipfRanks, perm: Permutation },
    HotSet { rows: u64, hot: u64, p: f64, perm: Permutation },
    Empirical { rows: u64, dist: Arc<Empirical> },
}

impl Sampler {
    /// Builds the sampler for a table. `seed` keys the permutation that scatters hot rows, so
    /// two tables of one model get different hot rows.
    pub fn new(table: &TableSpec, seed: u64) -> Result<Sampler, WorkloadError> {
        let rows = table.rows;
        let perm_seed = mix(seed ^ crate::spec::fnv1a(table.name.as_bytes()));
        Ok(match &table.dist {
            AccessDist::Uniform => Sampler::Uniform { rows },
            AccessDist::Zipf { s } => {
                Sampler::Zipf { zipf: ZipfRanks::new(rows, *s), perm: Permutation::new(rows, perm_seed) }
            }
            AccessDist::HotSet { p, h } => {
                let hot = ((*h * rows as f64).round() as u64).clamp(1, rows);
                Sampler::HotSet { rows, hot, p: *p, perm: Permutation::new(rows, perm_seed) }
            }
            AccessDist::Trace { path } => {
                Sampler::Empirical { rows, dist: load_cached(path, Empirical::from_trace_file)? }
            }
            AccessDist::Profile { path } => {
                Sampler::Empirical { rows, dist: load_cached(path, Empirical::from_profile_file)? }
            }
        })
    }

    /// One row id in `[0, rows)`.
    #[inline]
    pub fn sample(&self, rng: &mut StreamRng) -> u32 {
        let id = match self {
            Sampler::Uniform { rows } => rng.below(*rows),
            Sampler::Zipf { zipf, perm } => perm.apply(zipf.sample(rng) - 1),
            Sampler::HotSet { rows, hot, p, perm } => {
                let rank =
                    if *hot == *rows || rng.unit() < *p { rng.below(*hot) } else { *hot + rng.below(*rows - *hot) };
                perm.apply(rank)
            }
            // A trace recorded on a larger table keeps its hot ids distinct when folded into a
            // smaller one only if ids are reduced modulo the table, not scaled.
            Sampler::Empirical { rows, dist } => dist.sample(rng) % *rows,
        };
        id as u32
    }
}

/// Traces are large and shared by many tables of a preset; load each file once per process.
fn load_cached(
    path: &str,
    load: fn(&Path) -> Result<Empirical, WorkloadError>,
) -> Result<Arc<Empirical>, WorkloadError> {
    static CACHE: OnceLock<Mutex<HashMap<String, Arc<Empirical>>>> = OnceLock::new();
    let cache = CACHE.get_or_init(Default::default);
    if let Some(e) = cache.lock().unwrap().get(path) {
        return Ok(e.clone());
    }
    let e = Arc::new(load(Path::new(path))?);
    cache.lock().unwrap().insert(path.to_string(), e.clone());
    Ok(e)
}

/// Draws a bag length.
#[inline]
pub fn sample_pooling(p: &Pooling, rng: &mut StreamRng) -> u32 {
    match *p {
        Pooling::Fixed(n) => n,
        Pooling::Uniform { min, max } => min + rng.below((max - min) as u64 + 1) as u32,
        Pooling::Poisson { mean } => poisson(mean, rng).min(p.max_len()),
    }
}

/// Poisson by inversion for small means and by a rounded normal approximation for large ones,
/// where inversion's running time grows with the mean.
fn poisson(mean: f64, rng: &mut StreamRng) -> u32 {
    if mean <= 0.0 {
        return 0;
    }
    if mean < 30.0 {
        let limit = libm::exp(-mean);
        let mut k = 0u32;
        let mut prod = rng.unit();
        while prod > limit {
            k += 1;
            prod *= rng.unit();
        }
        k
    } else {
        // Box-Muller from two uniforms; libm keeps it identical on every machine.
        let u1 = rng.unit().max(f64::MIN_POSITIVE);
        let u2 = rng.unit();
        let z = libm::sqrt(-2.0 * libm::log(u1)) * libm::cos(2.0 * std::f64::consts::PI * u2);
        (mean + z * libm::sqrt(mean)).round().max(0.0) as u32
    }
}

/// Zipf over ranks `1..=n` with exponent `s`, by Hörmann and Derflinger's rejection-inversion:
/// O(1) memory and time per draw for any `n`, which matters for 40M-row tables.
#[derive(Clone, Debug)]
pub struct ZipfRanks {
    n: f64,
    s: f64,
    h_x1: f64,
    h_n: f64,
    cut: f64,
}

impl ZipfRanks {
    pub fn new(n: u64, s: f64) -> ZipfRanks {
        let mut z = ZipfRanks { n: n as f64, s, h_x1: 0.0, h_n: 0.0, cut: 0.0 };
        z.h_x1 = z.h_integral(1.5) - 1.0;
        z.h_n = z.h_integral(n as f64 + 0.5);
        z.cut = 2.0 - z.h_integral_inv(z.h_integral(2.5) - z.h(2.0));
        z
    }

    /// A rank in `1..=n`; rank 1 is the most frequent.
    #[inline]
    pub fn sample(&self, rng: &mut StreamRng) -> u64 {
        loop {
            let u = self.h_n + rng.unit() * (self.h_x1 - self.h_n);
            let x = self.h_integral_inv(u);
            let k = (x + 0.5).floor().clamp(1.0, self.n);
            if k - x <= self.cut || u >= self.h_integral(k + 0.5) - self.h(k) {
                return k as u64;
            }
        }
    }

    fn h(&self, x: f64) -> f64 {
        libm::exp(-self.s * libm::log(x))
    }

    fn h_integral(&self, x: f64) -> f64 {
        let lx = libm::log(x);
        helper_expm1_over_x((1.0 - self.s) * lx) * lx
    }

    fn h_integral_inv(&self, x: f64) -> f64 {
        let t = (x * (1.0 - self.s)).max(-1.0);
        libm::exp(helper_log1p_over_x(t) * x)
    }
}

fn helper_log1p_over_x(x: f64) -> f64 {
    if x.abs() > 1e-8 { libm::log1p(x) / x } else { 1.0 - x * (0.5 - x * (1.0 / 3.0 - 0.25 * x)) }
}

fn helper_expm1_over_x(x: f64) -> f64 {
    if x.abs() > 1e-8 { libm::expm1(x) / x } else { 1.0 + x * 0.5 * (1.0 + x / 3.0 * (1.0 + 0.25 * x)) }
}

/// Share of look-ups that land on the `top` most frequent rows of `rows`, computed from the
/// distribution itself (no sampling). Used by `workload profile` and the cost model.
pub fn analytic_top_share(dist: &AccessDist, rows: u64, top: u64) -> Option<f64> {
    let top = top.min(rows);
    let f = top as f64 / rows as f64;
    match *dist {
        AccessDist::Uniform => Some(f),
        AccessDist::HotSet { p, h } => {
            let hot = ((h * rows as f64).round() as u64).clamp(1, rows);
            if hot == rows {
                return Some(f);
            }
            Some(if top <= hot {
                p * top as f64 / hot as f64
            } else {
                p + (1.0 - p) * (top - hot) as f64 / (rows - hot) as f64
            })
        }
        AccessDist::Zipf { s } => Some(generalized_harmonic(top, s) / generalized_harmonic(rows, s)),
        AccessDist::Trace { .. } | AccessDist::Profile { .. } => None,
    }
}

/// `sum_{k=1..n} k^-s`: exact for the first 64 terms, then the midpoint integral with its
/// first Euler-Maclaurin correction, within about 1e-10 of the sum. Cheap (the cost model calls
/// it for every segment of every table: 10,000 exact terms made a 10,000-table model take
/// minutes to set up).
pub fn generalized_harmonic(n: u64, s: f64) -> f64 {
    const EXACT: u64 = 64;
    let m = n.min(EXACT);
    let mut sum = 0.0;
    for k in 1..=m {
        sum += libm::pow(k as f64, -s);
    }
    if n > m {
        let (a, b) = (m as f64 + 0.5, n as f64 + 0.5);
        sum += if (s - 1.0).abs() < 1e-12 {
            libm::log(b / a)
        } else {
            (libm::pow(b, 1.0 - s) - libm::pow(a, 1.0 - s)) / (1.0 - s)
        };
        // The midpoint rule's error, sum f''(k) / 24, as (f'(b) - f'(a)) / 24.
        sum += s / 24.0 * (libm::pow(b, -s - 1.0) - libm::pow(a, -s - 1.0));
    }
    sum
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::{PoolingMode, RowType};

    fn table(rows: u64, dist: &str) -> TableSpec {
        TableSpec {
            name: "t".into(),
            rows,
            dim: 4,
            row_type: RowType::F32,
            pooling: Pooling::Fixed(1),
            mode: PoolingMode::Sum,
            dist: dist.parse().unwrap(),
            quantizable: false,
        }
    }

    fn top_share(s: &Sampler, rows: u64, top: usize, n: usize) -> f64 {
        let mut rng = StreamRng::new(3, 0, 0);
        let mut counts = vec![0u32; rows as usize];
        for _ in 0..n {
            counts[s.sample(&mut rng) as usize] += 1;
        }
        counts.sort_unstable_by(|a, b| b.cmp(a));
        counts[..top].iter().map(|&c| c as f64).sum::<f64>() / n as f64
    }

    #[test]
    fn zipf_matches_its_analytic_head() {
        let rows = 100_000;
        let t = table(rows, "zipf:1.05");
        let s = Sampler::new(&t, 1).unwrap();
        let measured = top_share(&s, rows, 1000, 400_000);
        let expected = analytic_top_share(&t.dist, rows, 1000).unwrap();
        assert!((measured - expected).abs() < 0.02, "measured {measured} expected {expected}");
    }

    #[test]
    fn hotset_puts_p_of_lookups_on_h_of_rows() {
        let rows = 100_000;
        let t = table(rows, "hotset:0.9:0.01");
        let s = Sampler::new(&t, 1).unwrap();
        let measured = top_share(&s, rows, 1000, 200_000);
        assert!((measured - 0.9).abs() < 0.01, "{measured}");
    }

    #[test]
    fn samples_stay_in_range_for_tiny_tables() {
        for dist in ["uniform", "zipf:1.2", "hotset:0.99:0.001", "zipf:0.5"] {
            for rows in [1u64, 2, 3, 10] {
                let s = Sampler::new(&table(rows, dist), 5).unwrap();
                let mut rng = StreamRng::new(0, 1, 2);
                for _ in 0..1000 {
                    assert!((s.sample(&mut rng) as u64) < rows, "{dist} rows={rows}");
                }
            }
        }
    }

    #[test]
    fn poisson_pooling_has_the_right_mean() {
        for mean in [3.0, 12.0, 80.0] {
            let p = Pooling::Poisson { mean };
            let mut rng = StreamRng::new(1, 1, 1);
            let n = 20_000;
            let total: u64 = (0..n).map(|_| sample_pooling(&p, &mut rng) as u64).sum();
            let m = total as f64 / n as f64;
            assert!((m - mean).abs() < 0.05 * mean + 0.1, "mean {mean}: got {m}");
        }
    }

    #[test]
    fn harmonic_tail_is_accurate() {
        // Compare the Euler-Maclaurin tail with brute force.
        let n = 200_000;
        let brute: f64 = (1..=n).map(|k| (k as f64).powf(-1.05)).sum();
        let fast = generalized_harmonic(n, 1.05);
        assert!((brute - fast).abs() / brute < 1e-9);
        for s in [0.5, 0.95, 1.0, 1.2, 2.0] {
            for n in [65u64, 1000, 50_000] {
                let brute: f64 = (1..=n).map(|k| (k as f64).powf(-s)).sum();
                let fast = generalized_harmonic(n, s);
                assert!((brute - fast).abs() / brute < 1e-9, "s {s} n {n}: {fast} vs {brute}");
            }
        }
    }
}
