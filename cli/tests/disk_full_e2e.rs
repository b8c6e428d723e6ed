//! A tuning job whose coordinator's disk fills up (a small tmpfs, so root only; others print
//! SKIPPED): the job fails with a reason that says to resume, the trials the API showed are the
//! ones on disk, and once there is space `tune --resume` goes on without a restart.

mod common;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::{Cluster, wait_until};
use embtune_client::CoordinatorClient;
use embtune_protocol::tuning::{JobConfig, JobStatus, Objective};
use embtune_workloads::{Preset, PresetOptions};

unsafe extern "C" {
    #[link_name = "geteuid"]
    fn libc_geteuid() -> u32;
}

struct Mounted(PathBuf);

impl Drop for Mounted {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

fn mount_tmpfs(at: &Path, mib: u32) -> Option<Mounted> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc_geteuid() } != 0 {
        println!("SKIPPED: filling a small tmpfs needs root");
        return None;
    }
    std::fs::create_dir_all(at).unwrap();
    let ok = Command::new("mount")
        .args(["-t", "tmpfs", "-o", &format!("size={mib}m"), "tmpfs"])
        .arg(at)
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        println!("SKIPPED: cannot mount a tmpfs here");
        return None;
    }
    Some(Mounted(at.to_path_buf()))
}

fn fill(dir: &Path) -> PathBuf {
    let p = dir.join("filler");
    let mut f = std::fs::File::create(&p).unwrap();
    let chunk = vec![0u8; 16 << 10];
    while f.write_all(&chunk).is_ok() {}
    while f.write_all(&[0u8; 256]).is_ok() {}
    p
}

#[test]
fn a_full_disk_fails_the_job_resumably_and_resume_goes_on_once_there_is_space() {
    let mut c = Cluster::start(2);
    // The coordinator's data dir moves onto a 16 MiB tmpfs.
    c.coordinator.as_mut().unwrap().kill9();
    let data = c.dir.path().join("data");
    let Some(_mounted) = mount_tmpfs(&data, 16) else { return };
    c.start_coordinator();
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    let spec = Preset::Avazu.spec(&PresetOptions { scale: Some(0.002), ..Default::default() }).unwrap();
    let config = JobConfig {
        trials: 300,
        round_s: 0.2,
        max_rounds: 2,
        concurrency: 4,
        objective: Objective::Throughput,
        ..Default::default()
    };
    let client = rt.block_on(async {
        let client = CoordinatorClient::connect(c.addr, &c.certs).await.unwrap();
        client.wait_for_workers(2, *common::PATIENCE).await.unwrap();
        client
    });
    let id = rt.block_on(client.submit_tune("avazu@0.002", &spec, &config)).unwrap();
    let progress = wait_until(*common::PATIENCE, || rt.block_on(client.job(&id)).is_ok_and(|(_, t)| t.len() >= 2));
    assert!(progress.is_some(), "no trial before the disk filled: {}", c.log("coordinator"));

    let filler = fill(&data);
    let mut shown = Vec::new();
    let failed = wait_until(*common::PATIENCE, || {
        rt.block_on(client.job(&id)).is_ok_and(|(j, t)| {
            shown = t;
            matches!(&j.status, JobStatus::Failed(r) if r.contains("full") && r.contains("--resume"))
        })
    });
    assert!(failed.is_some(), "the job did not fail on the full disk: {}", c.log("coordinator"));

    // Space returns; resuming needs no restart.
    std::fs::remove_file(&filler).unwrap();
    let resumed = wait_until(*common::PATIENCE, || rt.block_on(client.resume(&id)).is_ok());
    assert!(resumed.is_some(), "resume was refused after space returned: {}", c.log("coordinator"));
    let more = wait_until(*common::PATIENCE, || {
        rt.block_on(client.job(&id)).is_ok_and(|(j, t)| j.status == JobStatus::Running && t.len() > shown.len())
    });
    assert!(more.is_some(), "the resumed job made no progress: {}", c.log("coordinator"));
    let (_, trials) = rt.block_on(client.job(&id)).unwrap();
    for (a, b) in shown.iter().zip(&trials) {
        assert_eq!(a, b, "a trial shown before the disk filled changed or was lost");
    }
    assert_eq!(trials.iter().map(|t| t.n).collect::<Vec<_>>(), (0..trials.len() as u32).collect::<Vec<_>>());

    // Every trial shown is on disk: after kill -9 the store holds them.
    c.coordinator.as_mut().unwrap().kill9();
    let store = embtune_tuner::store::Store::open(&data.join("store")).expect("the store opens");
    let on_disk = store.trials(&id).unwrap();
    assert!(on_disk.len() >= shown.len());
    for (a, b) in shown.iter().zip(&on_disk) {
        assert_eq!(a, b);
    }
    let _ = Duration::ZERO;
}
