//! The store on a full disk (a small tmpfs, so root only; others print SKIPPED): a write that
//! fails is a typed `Full` error and never shows as committed, the store works again once there
//! is space, and a store opened while the disk was full opens afterwards without manual steps.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use embtune_protocol::tuning::{ClusterDesc, Job, JobConfig, Measured, Trial, TrialKind};
use embtune_protocol::{Knobs, Plan, Topology};
use embtune_tuner::store::{REOPEN_EVERY, Store};

/// A tmpfs of `mib` MiB mounted on a fresh directory, unmounted when dropped.
struct Tmpfs {
    _dir: tempfile::TempDir,
    path: PathBuf,
}

impl Tmpfs {
    fn mount(mib: u32) -> Option<Tmpfs> {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc_geteuid() } != 0 {
            println!("SKIPPED: mounting a small tmpfs to fill needs root");
            return None;
        }
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("disk");
        std::fs::create_dir(&path).unwrap();
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={mib}m"), "tmpfs"])
            .arg(&path)
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            println!("SKIPPED: cannot mount a tmpfs here (a container without CAP_SYS_ADMIN?)");
            return None;
        }
        Some(Tmpfs { _dir: dir, path })
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.path).status();
    }
}

unsafe extern "C" {
    #[link_name = "geteuid"]
    fn libc_geteuid() -> u32;
}

/// Fills the disk at `dir` with a file; returns its path.
fn fill(dir: &Path) -> PathBuf {
    let p = dir.join("filler");
    let mut f = std::fs::File::create(&p).unwrap();
    let chunk = vec![0xabu8; 16 << 10];
    while f.write_all(&chunk).is_ok() {}
    // The last bytes, in smaller pieces.
    let small = [0u8; 512];
    while f.write_all(&small).is_ok() {}
    let _ = f.sync_all();
    p
}

fn job(id: &str) -> Job {
    let spec = embtune_workloads::Preset::Synthetic
        .spec(&embtune_workloads::PresetOptions { tables: Some(1), rows: Some(10), ..Default::default() })
        .unwrap();
    Job::new(id.into(), "synthetic".into(), spec, ClusterDesc::default(), JobConfig::default(), 1)
}

fn trial(n: u32) -> Trial {
    Trial {
        job: "j".into(),
        n,
        kind: TrialKind::Search,
        plan: Plan {
            strategy: format!("a plan with some length to it, number {n}, {}", "x".repeat(400)),
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

/// Retries `f` for a while: a damaged store reopens at most every `REOPEN_EVERY`.
fn eventually<T, E: std::fmt::Display>(mut f: impl FnMut() -> Result<T, E>) -> T {
    let t0 = Instant::now();
    loop {
        match f() {
            Ok(v) => return v,
            Err(e) if t0.elapsed() > Duration::from_secs(20) => panic!("still failing after 20 s: {e}"),
            Err(_) => std::thread::sleep(REOPEN_EVERY / 2),
        }
    }
}

#[test]
fn a_full_disk_fails_writes_cleanly_and_the_store_recovers_when_space_returns() {
    let Some(disk) = Tmpfs::mount(8) else { return };
    let dir = disk.path.join("store");
    let store = Store::open(&dir).unwrap();
    store.put_job(&job("j")).unwrap();
    let mut committed = Vec::new();
    for n in 0..5 {
        store.add_trial(&trial(n)).unwrap();
        committed.push(n);
    }

    let filler = fill(&disk.path);
    let mut failed = None;
    for n in 5..20_000 {
        match store.add_trial(&trial(n)) {
            Ok(()) => committed.push(n),
            Err(e) => {
                assert!(e.is_full(), "a full disk gave an untyped error: {e}");
                assert!(e.to_string().contains("free some space"), "{e}");
                failed = Some(n);
                break;
            }
        }
    }
    let failed = failed.expect("the disk never filled");
    // The failed trial is never shown as committed: reads either fail (the store cannot reopen
    // on a full disk) or show what is on disk.
    if let Ok(trials) = store.trials("j") {
        let ns: Vec<u32> = trials.iter().map(|t| t.n).collect();
        assert!(!ns.contains(&failed), "the trial whose write failed is shown");
        assert_eq!(ns, committed, "committed trials are all there");
    }

    // Space returns: the store reopens itself and takes writes again.
    std::fs::remove_file(&filler).unwrap();
    let trials = eventually(|| store.trials("j"));
    let ns: Vec<u32> = trials.iter().map(|t| t.n).collect();
    assert!(ns.starts_with(&committed), "a committed trial was lost: {ns:?}");
    let next = ns.last().unwrap() + 1;
    eventually(|| store.add_trial(&trial(next)));
    assert_eq!(store.trials("j").unwrap().last().unwrap().n, next);
    committed = store.trials("j").unwrap().iter().map(|t| t.n).collect();
    drop(store);

    // A store opened on a full disk (sled may leave an empty unfinished snapshot) opens again
    // once there is space, with everything committed.
    let filler = fill(&disk.path);
    match Store::open(&dir) {
        Ok(s) => {
            let r = s.add_trial(&trial(next + 1));
            assert!(r.is_err(), "a write to a full disk succeeded");
            drop(s);
        }
        Err(e) => assert!(e.is_full() || e.to_string().contains("space"), "opening on a full disk: {e}"),
    }
    std::fs::remove_file(&filler).unwrap();
    let s = eventually(|| Store::open(&dir));
    let ns: Vec<u32> = s.trials("j").unwrap().iter().map(|t| t.n).collect();
    assert!(ns.starts_with(&committed), "a committed trial was lost: {ns:?} against {committed:?}");
    s.add_trial(&trial(next + 2)).unwrap();
    assert_eq!(s.job("j").unwrap().id, "j");
}
