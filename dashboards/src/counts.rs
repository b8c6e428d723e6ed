//! How many trials each job has, by kind and outcome, cached per job so that listing jobs and
//! scraping metrics do not re-read every trial. The server's state, the job views and the
//! metrics all read it; it depends on none of them.

use std::collections::HashMap;

use parking_lot::Mutex;
use serde::Serialize;

use embtune_protocol::tuning::{Job, TrialKind};

/// Counts of a job's trials, cached by the job's `updated_ms` (a job's trials change only
/// together with it), so that listing jobs and scraping metrics do not re-read every plan.
#[derive(Default)]
pub(crate) struct TrialCounts {
    cache: Mutex<HashMap<String, (u64, Counts)>>,
}

#[derive(Clone, Copy, Debug, Default, Serialize, PartialEq)]
pub struct Counts {
    /// Every trial recorded, baselines and failures included.
    pub total: usize,
    pub measured: usize,
    pub failed: usize,
    /// Trials of the search (not baselines).
    pub search: usize,
}

impl Counts {
    /// The counts of a job's trials.
    pub fn of(trials: &[embtune_protocol::tuning::Trial]) -> Counts {
        Counts {
            total: trials.len(),
            measured: trials.iter().filter(|t| t.measured.is_some()).count(),
            failed: trials.iter().filter(|t| t.measured.is_none()).count(),
            search: trials.iter().filter(|t| !matches!(t.kind, TrialKind::Baseline(_))).count(),
        }
    }
}

impl TrialCounts {
    pub fn get(&self, store: &embtune_tuner::store::Store, job: &Job) -> Counts {
        if let Some((at, c)) = self.cache.lock().get(&job.id)
            && *at == job.updated_ms
        {
            return *c;
        }
        let trials = store.trials(&job.id).unwrap_or_default();
        let c = Counts::of(&trials);
        self.cache.lock().insert(job.id.clone(), (job.updated_ms, c));
        c
    }
}
