//! What can go wrong in the coordinator's jobs, by what a client can do about it.
//!
//! Each kind maps to one [`ErrorKind`] where it crosses the network ([`CoordinatorError::kind`]),
//! so that a client tells "no such job" (check the id) from "the store is full" (free space, then
//! resume) from "the request cannot run on this cluster" (change it) without reading messages.

use std::time::Duration;

use embtune_protocol::wire::{ErrorKind, WireError};
use embtune_tuner::store::StoreError;

/// An error of the coordinator's job API and of a job's run.
#[derive(Debug, thiserror::Error)]
pub enum CoordinatorError {
    /// The request cannot run as asked on this cluster (the model, its configuration, the
    /// workers' memory): the message says what to change.
    #[error("{0}")]
    Refused(String),
    /// No job of this id is stored.
    #[error("no job `{0}` in the store; `embtune results list` shows the jobs")]
    NoJob(String),
    /// No worker was healthy for this long: start workers, then resume.
    #[error("no healthy worker for {0:?}: start workers, then `embtune tune --resume`")]
    NoWorkers(Duration),
    /// The store could not be read or written.
    #[error(transparent)]
    Store(StoreError),
    /// A job's trial or record could not be written: it stopped with its committed trials.
    #[error("{}", store_stop_text(.job, .source))]
    JobStore { job: String, source: StoreError },
    /// A plan could not be deployed; the workers' own error.
    #[error("deployment failed: {}", .0.message)]
    Deploy(WireError),
    /// A measurement is no measurement (too many queries failed, none completed).
    #[error("{0}")]
    Measure(String),
}

fn store_stop_text(job: &str, e: &StoreError) -> String {
    if e.is_full() {
        format!(
            "{e}: the job stopped with its committed trials kept; once there is space, `embtune tune --resume {job}` goes on"
        )
    } else {
        format!("the store could not be written ({e}); `embtune tune --resume {job}` goes on")
    }
}

impl From<StoreError> for CoordinatorError {
    /// A missing job is its own kind; every other store error stays a store error.
    fn from(e: StoreError) -> CoordinatorError {
        match e {
            StoreError::NoJob(id) => CoordinatorError::NoJob(id),
            other => CoordinatorError::Store(other),
        }
    }
}

impl CoordinatorError {
    /// The wire's kind of this error.
    pub fn kind(&self) -> ErrorKind {
        match self {
            CoordinatorError::Refused(_) | CoordinatorError::NoWorkers(_) => ErrorKind::Deploy,
            CoordinatorError::NoJob(_) => ErrorKind::NoJob,
            CoordinatorError::Store(_) | CoordinatorError::JobStore { .. } => ErrorKind::Store,
            CoordinatorError::Deploy(e) => e.kind,
            CoordinatorError::Measure(_) => ErrorKind::Internal,
        }
    }
}

impl From<CoordinatorError> for WireError {
    fn from(e: CoordinatorError) -> WireError {
        WireError::new(e.kind(), e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    #[test]
    fn a_missing_job_and_a_broken_store_reach_the_client_as_different_kinds() {
        let missing: WireError = CoordinatorError::from(StoreError::NoJob("job-1".into())).into();
        assert_eq!(missing.kind, ErrorKind::NoJob);
        assert!(missing.message.contains("job-1") && missing.message.contains("results list"), "{missing:?}");
        let full = StoreError::Full { path: PathBuf::from("/d"), detail: "ENOSPC".into() };
        let full: WireError = CoordinatorError::from(full).into();
        assert_eq!(full.kind, ErrorKind::Store, "a store error is not a transport or deployment error");
        let damaged: WireError = CoordinatorError::from(StoreError::Corrupt("trial 3".into())).into();
        assert_eq!(damaged.kind, ErrorKind::Store);
    }

    #[test]
    fn each_kind_maps_to_what_the_client_can_do() {
        assert_eq!(CoordinatorError::Refused("too big".into()).kind(), ErrorKind::Deploy);
        assert_eq!(CoordinatorError::NoWorkers(Duration::from_secs(1)).kind(), ErrorKind::Deploy);
        // A deployment's own kind passes through: a client retries a stale plan, not a bad one.
        let stale = WireError::new(ErrorKind::StalePlan, "held 3");
        assert_eq!(CoordinatorError::Deploy(stale).kind(), ErrorKind::StalePlan);
        let stop = CoordinatorError::JobStore {
            job: "job-2".into(),
            source: StoreError::Full { path: PathBuf::from("/d"), detail: "ENOSPC".into() },
        };
        assert_eq!(stop.kind(), ErrorKind::Store);
        assert!(stop.to_string().contains("embtune tune --resume job-2"), "{stop}");
    }
}
