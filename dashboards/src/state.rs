//! What the HTTP server keeps between requests: the previous counter sample (busy fractions
//! and rates are deltas between calls), access profiles per model, trial counts per job, and
//! the Prometheus registry.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use prometheus_client::registry::Registry;
use serde::Serialize;

use embtune_coordinator::server::Coordinator;
use embtune_protocol::wire::ClusterInfo;
use embtune_workloads::{AccessProfile, BatchGenerator, ModelSpec};

use crate::counts::TrialCounts;

/// Rates from two samples closer than this are noise (heartbeats come every 250 ms): a call
/// that soon after the previous one gets the previous call's rates.
pub const MIN_INTERVAL: Duration = Duration::from_millis(900);

/// Access profiles kept, by spec digest.
const PROFILES_KEPT: usize = 4;

pub(crate) struct AppState {
    pub c: Coordinator,
    pub token: Option<String>,
    pub load: Mutex<LoadSampler>,
    profiles: tokio::sync::Mutex<Vec<(u64, Option<Arc<AccessProfile>>)>>,
    pub counts: Arc<TrialCounts>,
    pub registry: Registry,
}

impl AppState {
    /// The state of a server for `c`; `registry` holds the collectors `/metrics` encodes (the
    /// caller builds it, so that this module does not depend on the metrics it serves).
    pub fn new(c: Coordinator, token: Option<String>, counts: Arc<TrialCounts>, registry: Registry) -> AppState {
        AppState {
            c,
            token,
            load: Mutex::new(LoadSampler::default()),
            profiles: tokio::sync::Mutex::new(Vec::new()),
            counts,
            registry,
        }
    }

    /// The access profile of `spec` (about a second to count the first time; cached by digest).
    /// `None` if the spec's batches cannot be generated.
    pub async fn profile(&self, spec: &ModelSpec) -> Option<Arc<AccessProfile>> {
        let digest = spec.digest();
        // Held across the computation, so that concurrent requests count a profile once.
        let mut cache = self.profiles.lock().await;
        if let Some((_, p)) = cache.iter().find(|(d, _)| *d == digest) {
            return p.clone();
        }
        let spec = spec.clone();
        let p = tokio::task::spawn_blocking(move || {
            BatchGenerator::new(&spec).ok().map(|g| Arc::new(embtune_workloads::profile::profile_generator(&g)))
        })
        .await
        .ok()
        .flatten();
        if cache.len() >= PROFILES_KEPT {
            cache.remove(0);
        }
        cache.push((digest, p.clone()));
        p
    }
}

/// Cumulative counters of one core at one time.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct CoreSample {
    pub busy_ns: u64,
    pub tasks: u64,
    pub lookups: u64,
}

/// The cluster's cumulative counters at one time.
#[derive(Clone, Debug)]
pub struct Sample {
    pub at: Instant,
    /// By (worker id, core index in the worker).
    pub cores: HashMap<(u16, u16), CoreSample>,
    /// Look-ups, queries and samples the coordinator served.
    pub lookups: u64,
    pub queries: u64,
    pub samples: u64,
}

impl Sample {
    pub fn of(info: &ClusterInfo, lookups: u64, queries: u64, samples: u64, at: Instant) -> Sample {
        let mut cores = HashMap::new();
        for w in &info.workers {
            for c in &w.core_counters {
                cores.insert((w.id, c.core), CoreSample { busy_ns: c.busy_ns, tasks: c.tasks, lookups: c.lookups });
            }
        }
        Sample { at, cores, lookups, queries, samples }
    }
}

/// One core's rates between two samples.
#[derive(Clone, Copy, Debug, Default, Serialize, PartialEq)]
pub struct CoreRate {
    /// Share of the interval the core spent running tasks, in [0, 1].
    pub busy_fraction: f64,
    pub tasks_per_s: f64,
    pub lookups_per_s: f64,
}

/// Rates between two samples.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Rates {
    pub interval_s: f64,
    pub cores: HashMap<(u16, u16), CoreRate>,
    pub lookups_per_s: f64,
    pub queries_per_s: f64,
    pub samples_per_s: f64,
}

/// Rates from `prev` to `cur`. A core whose counters went backwards (its worker restarted) or
/// that is new has no rate.
pub fn rates(prev: &Sample, cur: &Sample) -> Rates {
    let dt = cur.at.saturating_duration_since(prev.at).as_secs_f64().max(1e-9);
    let mut cores = HashMap::new();
    for (k, c) in &cur.cores {
        let Some(p) = prev.cores.get(k) else { continue };
        if c.busy_ns < p.busy_ns || c.tasks < p.tasks || c.lookups < p.lookups {
            continue;
        }
        cores.insert(
            *k,
            CoreRate {
                busy_fraction: ((c.busy_ns - p.busy_ns) as f64 / 1e9 / dt).clamp(0.0, 1.0),
                tasks_per_s: (c.tasks - p.tasks) as f64 / dt,
                lookups_per_s: (c.lookups - p.lookups) as f64 / dt,
            },
        );
    }
    let per_s = |a: u64, b: u64| b.saturating_sub(a) as f64 / dt;
    Rates {
        interval_s: dt,
        cores,
        lookups_per_s: per_s(prev.lookups, cur.lookups),
        queries_per_s: per_s(prev.queries, cur.queries),
        samples_per_s: per_s(prev.samples, cur.samples),
    }
}

/// The previous sample and the rates computed from it.
#[derive(Default)]
pub struct LoadSampler {
    prev: Option<Sample>,
    last: Option<Rates>,
}

impl LoadSampler {
    /// Takes a new sample; returns the rates since the previous one (`None` on the first call).
    /// Samples closer than [`MIN_INTERVAL`] to the previous one return the previous rates and do
    /// not replace the previous sample, so that several pages polling at once still see rates
    /// over a sensible interval.
    pub fn observe(&mut self, cur: Sample) -> Option<Rates> {
        match &self.prev {
            Some(p) if cur.at.saturating_duration_since(p.at) < MIN_INTERVAL => self.last.clone(),
            Some(p) => {
                let r = rates(p, &cur);
                self.last = Some(r.clone());
                self.prev = Some(cur);
                Some(r)
            }
            None => {
                self.prev = Some(cur);
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(at: Instant, busy: u64, tasks: u64, lookups: u64) -> Sample {
        let mut cores = HashMap::new();
        cores.insert((0, 0), CoreSample { busy_ns: busy, tasks, lookups });
        Sample { at, cores, lookups: lookups * 2, queries: tasks, samples: tasks * 10 }
    }

    #[test]
    fn rates_are_deltas_over_the_interval() {
        let t0 = Instant::now();
        let mut s = LoadSampler::default();
        assert_eq!(s.observe(sample(t0, 0, 0, 0)), None);
        // Too soon: no rates yet, and the first sample stays the reference.
        assert_eq!(s.observe(sample(t0 + Duration::from_millis(100), 50_000_000, 1, 1)), None);
        let r = s.observe(sample(t0 + Duration::from_secs(2), 500_000_000, 20, 4000)).unwrap();
        assert!((r.interval_s - 2.0).abs() < 1e-9);
        let c = r.cores[&(0, 0)];
        assert!((c.busy_fraction - 0.25).abs() < 1e-9, "{c:?}");
        assert!((c.tasks_per_s - 10.0).abs() < 1e-9);
        assert!((c.lookups_per_s - 2000.0).abs() < 1e-9);
        assert!((r.lookups_per_s - 4000.0).abs() < 1e-9);
        assert!((r.samples_per_s - 100.0).abs() < 1e-9);
        // Soon after: the same rates again.
        let again = s.observe(sample(t0 + Duration::from_millis(2100), 0, 0, 0)).unwrap();
        assert_eq!(again, r);
        // A restarted worker's counters go back to zero: no rate for its cores.
        let r = s.observe(sample(t0 + Duration::from_secs(4), 1000, 1, 1)).unwrap();
        assert!(r.cores.is_empty());
        // Busy time can never exceed the interval (heartbeats are late or early).
        let r = s.observe(sample(t0 + Duration::from_secs(5), 3_000_000_000, 2, 2)).unwrap();
        assert_eq!(r.cores[&(0, 0)].busy_fraction, 1.0);
    }
}
