//! The store of tuning jobs and trials: sled files in the coordinator's data dir.
//!
//! sled buffers writes; a trial counts as committed only once [`Store::add_trial`] has flushed
//! it to disk, so a crash (even `kill -9`) loses nothing committed. Records are JSON, readable
//! by newer versions; the schema version in the `meta` tree lets an older embtune refuse a store
//! a newer one wrote instead of misreading it.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, RwLock};
use std::time::{Duration, Instant};

pub use embtune_protocol::tuning::BestRecord;
use embtune_protocol::tuning::{Job, Trial};

/// The store's schema version. Bump it when records change incompatibly.
pub const SCHEMA: u32 = 1;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("the store at {path} is in use by another process (a running coordinator?): {detail}")]
    Locked { path: PathBuf, detail: String },
    #[error(
        "the store at {path} was written by a newer embtune (schema {found}, this one reads {SCHEMA}); upgrade embtune to read it"
    )]
    Newer { path: PathBuf, found: u32 },
    /// The disk is full: nothing of the failed write counts as committed. The store reopens by
    /// itself once there is space again.
    #[error("the disk holding the store at {path} is full ({detail}); free some space, then resume")]
    Full { path: PathBuf, detail: String },
    #[error("store at {path}: {detail}")]
    Sled { path: PathBuf, detail: String },
    #[error("a record in the store is damaged: {0}")]
    Corrupt(String),
    #[error("no job `{0}` in the store; `embtune results list` shows the jobs")]
    NoJob(String),
}

impl StoreError {
    /// Whether the error is the disk being full.
    pub fn is_full(&self) -> bool {
        matches!(self, StoreError::Full { .. })
    }
}

/// Jobs, trials and the best plan per dataset and cluster.
///
/// A write that fails (a full disk, say) leaves sled's in-memory state ahead of its files, and
/// sled refuses writes from then on: the store then reopens itself from its files before the
/// next operation (at most once every [`REOPEN_EVERY`] while that fails), so what it shows is
/// what is on disk, and it works again once the disk has room.
pub struct Store {
    path: PathBuf,
    trees: RwLock<Option<Trees>>,
    /// A write failed: reopen before the next operation.
    damaged: AtomicBool,
    last_reopen: Mutex<Option<Instant>>,
}

struct Trees {
    db: sled::Db,
    jobs: sled::Tree,
    trials: sled::Tree,
    best: sled::Tree,
}

/// How long [`Store::open`] waits for a store's lock before saying another process holds it.
const LOCK_PATIENCE: std::time::Duration = std::time::Duration::from_secs(2);

/// How often a damaged store tries to reopen.
pub const REOPEN_EVERY: Duration = Duration::from_millis(500);

/// Sorts a sled error into the store's errors.
fn classify(path: &Path, e: sled::Error) -> StoreError {
    let detail = e.to_string();
    let full = match &e {
        sled::Error::Io(io) => io.raw_os_error() == Some(libc_enospc()) || io.kind() == std::io::ErrorKind::StorageFull,
        _ => false,
    } || detail.contains("No space left");
    if full {
        StoreError::Full { path: path.to_path_buf(), detail }
    } else if detail.contains("lock")
        || detail.contains("WouldBlock")
        || detail.contains("Resource temporarily unavailable")
    {
        StoreError::Locked { path: path.to_path_buf(), detail }
    } else {
        StoreError::Sled { path: path.to_path_buf(), detail }
    }
}

/// ENOSPC on Linux (the tuner does not link libc for one constant).
const fn libc_enospc() -> i32 {
    28
}

/// Removes snapshots that sled began and never finished. sled writes a snapshot to
/// `snap.<lsn>.generating` and renames it when complete, but reads any `snap.*` file when it
/// opens: one left empty by a full disk made the store unopenable ("Read corrupted data") until
/// removed by hand. An unfinished snapshot holds nothing the log does not.
/// Returns whether it removed any.
fn remove_unfinished_snapshots(dir: &Path) -> bool {
    let Ok(entries) = std::fs::read_dir(dir) else { return false };
    let mut removed = false;
    for e in entries.flatten() {
        let name = e.file_name();
        let name = name.to_string_lossy();
        if name.starts_with("snap.") && name.ends_with(".generating") {
            match std::fs::remove_file(e.path()) {
                Ok(()) => {
                    tracing::warn!("removed an unfinished sled snapshot {}", e.path().display());
                    removed = true;
                }
                Err(err) => tracing::warn!("cannot remove the unfinished snapshot {}: {err}", e.path().display()),
            }
        }
    }
    removed
}

impl Trees {
    fn open(dir: &Path, patience: Duration) -> Result<Trees, StoreError> {
        let path = dir.to_path_buf();
        let err = |e: sled::Error| classify(&path, e);
        std::fs::create_dir_all(dir).map_err(|e| StoreError::Sled { path: path.clone(), detail: e.to_string() })?;
        // sled releases its file lock when its last handle goes, and its flusher thread may hold
        // one for a moment after the store is dropped (and a process that just exited, a moment
        // before the kernel drops its lock). So a locked store is retried for a short while
        // before it is reported as held by another process.
        let t0 = Instant::now();
        let mut cleaned = false;
        let db = loop {
            match sled::Config::new().path(dir).open().map_err(err) {
                Err(StoreError::Locked { .. }) if t0.elapsed() < patience => {
                    std::thread::sleep(Duration::from_millis(20))
                }
                // sled took the lock and could not read the files: no other instance has them
                // open, so an unfinished snapshot is a leftover, and removing it is safe.
                Err(StoreError::Sled { .. } | StoreError::Full { .. })
                    if !cleaned && remove_unfinished_snapshots(dir) =>
                {
                    cleaned = true
                }
                r => break r?,
            }
        };
        let meta = db.open_tree("meta").map_err(err)?;
        match meta.get("schema").map_err(err)? {
            Some(v) => {
                let found = u32::from_be_bytes(
                    v.as_ref().try_into().map_err(|_| StoreError::Corrupt("the schema version".into()))?,
                );
                if found > SCHEMA {
                    return Err(StoreError::Newer { path, found });
                }
            }
            None => {
                meta.insert("schema", &SCHEMA.to_be_bytes()).map_err(err)?;
                db.flush().map_err(err)?;
            }
        }
        Ok(Trees {
            jobs: db.open_tree("jobs").map_err(err)?,
            trials: db.open_tree("trials").map_err(err)?,
            best: db.open_tree("best").map_err(err)?,
            db,
        })
    }
}

impl Store {
    /// Opens (or creates) the store in `dir`, waiting a moment for a lock that is being
    /// released (see [`LOCK_PATIENCE`]).
    pub fn open(dir: &Path) -> Result<Store, StoreError> {
        Self::open_within(dir, LOCK_PATIENCE)
    }

    /// Opens the store at once, or says it is locked: for callers that expect a running
    /// coordinator to hold it and have another way to its records.
    pub fn try_open(dir: &Path) -> Result<Store, StoreError> {
        Self::open_within(dir, Duration::ZERO)
    }

    fn open_within(dir: &Path, patience: Duration) -> Result<Store, StoreError> {
        let trees = Trees::open(dir, patience)?;
        Ok(Store {
            path: dir.to_path_buf(),
            trees: RwLock::new(Some(trees)),
            damaged: AtomicBool::new(false),
            last_reopen: Mutex::new(None),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Runs `f` on the trees, reopening them first if a write failed; a failed write marks
    /// them for reopening.
    fn with<R>(&self, f: impl FnOnce(&Trees) -> Result<R, StoreError>) -> Result<R, StoreError> {
        if self.damaged.load(Ordering::Acquire) {
            self.reopen()?;
        }
        let guard = self.trees.read().unwrap_or_else(|p| p.into_inner());
        let trees = guard.as_ref().ok_or_else(|| StoreError::Sled {
            path: self.path.clone(),
            detail: "the store is closed after a failed write and could not be reopened yet".into(),
        })?;
        let r = f(trees);
        if matches!(r, Err(StoreError::Full { .. } | StoreError::Sled { .. })) {
            self.damaged.store(true, Ordering::Release);
        }
        r
    }

    /// Reopens the store from its files (see [`Store`]).
    fn reopen(&self) -> Result<(), StoreError> {
        {
            let mut last = self.last_reopen.lock().unwrap_or_else(|p| p.into_inner());
            if last.is_some_and(|t| t.elapsed() < REOPEN_EVERY) {
                return Err(StoreError::Full {
                    path: self.path.clone(),
                    detail: "a write failed and the store could not be reopened yet".into(),
                });
            }
            *last = Some(Instant::now());
        }
        let mut guard = self.trees.write().unwrap_or_else(|p| p.into_inner());
        if !self.damaged.load(Ordering::Acquire) {
            return Ok(()); // another thread reopened it meanwhile
        }
        // The old instance must be gone before the files can be locked again.
        if let Some(old) = guard.take() {
            drop(old);
        }
        let trees = Trees::open(&self.path, LOCK_PATIENCE)?;
        tracing::info!("reopened the store at {} after a failed write", self.path.display());
        *guard = Some(trees);
        self.damaged.store(false, Ordering::Release);
        Ok(())
    }

    /// Keeps the cluster's deployment, durably: a restarted coordinator routes by it.
    pub fn put_deployment(&self, d: &embtune_protocol::wire::DeploymentRecord) -> Result<(), StoreError> {
        let v = serde_json::to_vec(d).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        self.with(|t| {
            let meta = t.db.open_tree("meta").map_err(|e| classify(&self.path, e))?;
            meta.insert("deployment", v).map_err(|e| classify(&self.path, e))?;
            t.flush(&self.path)
        })
    }

    /// The deployment last kept, if any.
    pub fn deployment(&self) -> Result<Option<embtune_protocol::wire::DeploymentRecord>, StoreError> {
        let v = self.with(|t| {
            let meta = t.db.open_tree("meta").map_err(|e| classify(&self.path, e))?;
            meta.get("deployment").map_err(|e| classify(&self.path, e))
        })?;
        match v {
            None => Ok(None),
            Some(v) => {
                serde_json::from_slice(&v).map(Some).map_err(|e| StoreError::Corrupt(format!("deployment: {e}")))
            }
        }
    }

    /// Creates or updates a job, durably.
    pub fn put_job(&self, job: &Job) -> Result<(), StoreError> {
        let v = serde_json::to_vec(job).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        self.with(|t| {
            t.jobs.insert(job.id.as_bytes(), v).map_err(|e| classify(&self.path, e))?;
            t.flush(&self.path)
        })
    }

    pub fn job(&self, id: &str) -> Result<Job, StoreError> {
        let v = self
            .with(|t| t.jobs.get(id.as_bytes()).map_err(|e| classify(&self.path, e)))?
            .ok_or_else(|| StoreError::NoJob(id.to_string()))?;
        serde_json::from_slice(&v).map_err(|e| StoreError::Corrupt(format!("job {id}: {e}")))
    }

    /// Every job, oldest first.
    pub fn jobs(&self) -> Result<Vec<Job>, StoreError> {
        let mut out = self.with(|t| {
            let mut out = Vec::new();
            for kv in t.jobs.iter() {
                let (k, v) = kv.map_err(|e| classify(&self.path, e))?;
                out.push(
                    serde_json::from_slice::<Job>(&v)
                        .map_err(|e| StoreError::Corrupt(format!("job {}: {e}", String::from_utf8_lossy(&k))))?,
                );
            }
            Ok(out)
        })?;
        out.sort_by_key(|j| j.created_ms);
        Ok(out)
    }

    fn trial_key(job: &str, n: u32) -> Vec<u8> {
        let mut k = job.as_bytes().to_vec();
        k.push(0);
        k.extend_from_slice(&n.to_be_bytes());
        k
    }

    /// Commits a trial: on return it is on disk. On an error nothing of it counts: the store
    /// reopens from its files before anyone reads it.
    pub fn add_trial(&self, t: &Trial) -> Result<(), StoreError> {
        let v = serde_json::to_vec(t).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        self.with(|trees| {
            trees.trials.insert(Self::trial_key(&t.job, t.n), v).map_err(|e| classify(&self.path, e))?;
            trees.flush(&self.path)
        })
    }

    /// A job's trials in order.
    pub fn trials(&self, job: &str) -> Result<Vec<Trial>, StoreError> {
        let mut prefix = job.as_bytes().to_vec();
        prefix.push(0);
        self.with(|t| {
            let mut out = Vec::new();
            for kv in t.trials.scan_prefix(&prefix) {
                let (_, v) = kv.map_err(|e| classify(&self.path, e))?;
                out.push(
                    serde_json::from_slice::<Trial>(&v)
                        .map_err(|e| StoreError::Corrupt(format!("a trial of {job}: {e}")))?,
                );
            }
            Ok(out)
        })
    }

    /// Records `rec` as the best for its dataset and cluster if it beats what is there.
    pub fn offer_best(&self, rec: &BestRecord, better: impl Fn(f64, f64) -> bool) -> Result<bool, StoreError> {
        let key = format!("{}\0{}", rec.dataset, rec.cluster);
        self.with(|t| {
            if let Some(old) = t.best.get(key.as_bytes()).map_err(|e| classify(&self.path, e))? {
                let old: BestRecord = serde_json::from_slice(&old).map_err(|e| StoreError::Corrupt(e.to_string()))?;
                if !better(rec.value, old.value) {
                    return Ok(false);
                }
            }
            t.best
                .insert(key.as_bytes(), serde_json::to_vec(rec).map_err(|e| StoreError::Corrupt(e.to_string()))?)
                .map_err(|e| classify(&self.path, e))?;
            t.flush(&self.path)?;
            Ok(true)
        })
    }

    /// The best records for a dataset, over every cluster.
    pub fn best_for(&self, dataset: &str) -> Result<Vec<BestRecord>, StoreError> {
        let mut prefix = dataset.as_bytes().to_vec();
        prefix.push(0);
        self.with(|t| {
            let mut out = Vec::new();
            for kv in t.best.scan_prefix(&prefix) {
                let (_, v) = kv.map_err(|e| classify(&self.path, e))?;
                out.push(serde_json::from_slice(&v).map_err(|e| StoreError::Corrupt(e.to_string()))?);
            }
            Ok(out)
        })
    }

    /// Every best record.
    pub fn all_best(&self) -> Result<Vec<BestRecord>, StoreError> {
        self.with(|t| {
            let mut out = Vec::new();
            for kv in t.best.iter() {
                let (_, v) = kv.map_err(|e| classify(&self.path, e))?;
                out.push(serde_json::from_slice(&v).map_err(|e| StoreError::Corrupt(e.to_string()))?);
            }
            Ok(out)
        })
    }
}

impl Trees {
    /// Writes everything buffered to disk.
    fn flush(&self, path: &Path) -> Result<(), StoreError> {
        self.db.flush().map(|_| ()).map_err(|e| classify(path, e))
    }
}

/// A job id that sorts by time and reads as a date: `job-20261122-140215-3f2a`.
pub fn new_job_id(now_ms: u64, salt: u64) -> String {
    let secs = now_ms / 1000;
    let (y, m, d) = civil(secs / 86_400);
    let s = secs % 86_400;
    format!(
        "job-{y:04}{m:02}{d:02}-{:02}{:02}{:02}-{:04x}",
        s / 3600,
        s / 60 % 60,
        s % 60,
        (embtune_workloads::rng::mix(now_ms ^ salt) & 0xffff)
    )
}

/// Days since 1970-01-01 to a calendar date (Howard Hinnant's algorithm).
fn civil(days: u64) -> (i64, u32, u32) {
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;
    use embtune_protocol::tuning::{ClusterDesc, JobConfig, Measured, TrialKind};
    use embtune_protocol::{Knobs, Plan, Topology};

    fn job(id: &str) -> Job {
        let spec = embtune_workloads::Preset::Synthetic
            .spec(&embtune_workloads::PresetOptions { tables: Some(1), rows: Some(10), ..Default::default() })
            .unwrap();
        Job::new(id.into(), "synthetic".into(), spec, ClusterDesc::default(), JobConfig::default(), 1)
    }

    fn trial(j: &str, n: u32) -> Trial {
        Trial {
            job: j.into(),
            n,
            kind: TrialKind::Search,
            plan: Plan {
                strategy: "x".into(),
                spec_digest: 0,
                topology: Topology::uniform(1, 1, 1),
                tables: vec![],
                knobs: Knobs::default(),
            },
            predicted: 1.0,
            measured: Some(Measured { value: n as f64, ..Default::default() }),
            failure: None,
            started_ms: 0,
            ended_ms: 0,
            planning_ms: 0,
        }
    }

    #[test]
    fn a_store_held_open_is_reported_locked() {
        let dir = tempfile::tempdir().unwrap();
        let held = Store::open(dir.path()).unwrap();
        let e = Store::try_open(dir.path()).err().expect("sled locks its files");
        assert!(matches!(e, StoreError::Locked { .. }), "{e}");
        drop(held);
        // Released with the last handle (after a moment, which `open` waits for).
        Store::open(dir.path()).unwrap();
    }

    #[test]
    fn jobs_and_trials_survive_reopening() {
        let dir = tempfile::tempdir().unwrap();
        {
            let s = Store::open(dir.path()).unwrap();
            s.put_job(&job("a")).unwrap();
            for n in 0..5 {
                s.add_trial(&trial("a", n)).unwrap();
            }
            s.add_trial(&trial("ab", 0)).unwrap(); // a prefix of no other job's trials
        }
        let s = Store::open(dir.path()).unwrap();
        assert_eq!(s.job("a").unwrap().id, "a");
        let t = s.trials("a").unwrap();
        assert_eq!(t.iter().map(|t| t.n).collect::<Vec<_>>(), vec![0, 1, 2, 3, 4]);
        assert!(matches!(s.job("zz"), Err(StoreError::NoJob(_))));
    }

    /// A baseline that does not fit the workers' memory is stored as a failed trial with no
    /// prediction (NaN, which JSON holds as `null`); its job must still read.
    #[test]
    fn a_failed_trial_without_a_prediction_reads_back() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(dir.path()).unwrap();
        s.put_job(&job("a")).unwrap();
        let failed = Trial {
            predicted: f64::NAN,
            measured: None,
            failure: Some("does not fit: all-replicate: needs 108 MB per worker, has 80 MB".into()),
            ..trial("a", 0)
        };
        s.add_trial(&failed).unwrap();
        s.add_trial(&trial("a", 1)).unwrap();
        let t = s.trials("a").unwrap();
        assert_eq!(t.len(), 2);
        assert!(t[0].predicted.is_nan());
        assert_eq!(t[0].failure, failed.failure);
        assert_eq!(t[1].predicted, 1.0);
    }

    #[test]
    fn a_store_from_a_newer_version_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        {
            let db = sled::open(dir.path()).unwrap();
            db.open_tree("meta").unwrap().insert("schema", &(SCHEMA + 1).to_be_bytes()).unwrap();
            db.flush().unwrap();
        }
        let e = Store::open(dir.path()).err().unwrap().to_string();
        assert!(e.contains("newer embtune"), "{e}");
    }

    #[test]
    fn best_records_keep_the_better_value() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(dir.path()).unwrap();
        let rec = |job: &str, v: f64| BestRecord {
            dataset: "d".into(),
            cluster: "c".into(),
            job: job.into(),
            trial: 0,
            value: v,
        };
        assert!(s.offer_best(&rec("a", 10.0), |a, b| a > b).unwrap());
        assert!(!s.offer_best(&rec("b", 5.0), |a, b| a > b).unwrap());
        assert!(s.offer_best(&rec("b", 20.0), |a, b| a > b).unwrap());
        assert_eq!(s.best_for("d").unwrap()[0].job, "b");
    }

    #[test]
    fn job_ids_read_as_dates() {
        // 2026-11-22 14:02:15 UTC
        let id = new_job_id(1_795_356_135_000, 7);
        assert!(id.starts_with("job-20261122-"), "{id}");
    }
}
