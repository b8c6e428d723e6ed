//! Commands that start processes (`tune --local`, `up`) stop them on SIGINT and SIGTERM, leave
//! none behind when killed outright, and `up` starts its coordinator again when it dies, keeping
//! its workers.

mod common;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::{alive, children_of, exe, wait_until};

/// `embtune ARGS` with its output in `dir/NAME.out`.
fn start(dir: &Path, name: &str, args: &[&str]) -> Child {
    let out = std::fs::File::create(dir.join(format!("{name}.out"))).unwrap();
    Command::new(exe()).args(args).stdin(Stdio::null()).stdout(out.try_clone().unwrap()).stderr(out).spawn().unwrap()
}

fn signal(pid: u32, sig: i32) {
    // SAFETY: kill(2) on a child this test started.
    unsafe { libc_kill(pid as i32, sig) };
}

unsafe extern "C" {
    #[link_name = "kill"]
    fn libc_kill(pid: i32, sig: i32) -> i32;
}

const SIGINT: i32 = 2;
const SIGKILL: i32 = 9;
const SIGTERM: i32 = 15;

fn coordinator_pid(data: &Path) -> Option<u32> {
    let text = std::fs::read_to_string(data.join("coordinator.json")).ok()?;
    serde_json::from_str::<serde_json::Value>(&text).ok()?["pid"].as_u64().map(|p| p as u32)
}

/// Starts `tune --local` with a coordinator and a worker and waits until both run.
fn tune_local(dir: &Path) -> (Child, Vec<u32>) {
    let data = dir.join("data");
    let child = start(
        dir,
        "tune",
        &[
            "tune",
            "--local",
            "--workers",
            "1",
            "--cores-per-worker",
            "1",
            "--preset",
            "synthetic",
            "--tables",
            "2",
            "--rows",
            "20000",
            "--trials",
            "200",
            "--round-secs",
            "0.2",
            "--data-dir",
            data.to_str().unwrap(),
        ],
    );
    let pid = child.id();
    let mut kids = Vec::new();
    let up = wait_until(*common::PATIENCE, || {
        kids = children_of(pid);
        kids.len() >= 2 && coordinator_pid(&data).is_some()
    });
    assert!(up.is_some(), "tune --local never started its processes: {}", log(dir, "tune"));
    (child, kids)
}

fn log(dir: &Path, name: &str) -> String {
    std::fs::read_to_string(dir.join(format!("{name}.out"))).unwrap_or_default()
}

fn all_gone(kids: &[u32]) -> bool {
    wait_until(Duration::from_secs(20), || kids.iter().all(|&k| !alive(k))).is_some()
}

#[test]
fn tune_local_stops_its_processes_on_sigterm_and_sigint() {
    for (sig, code) in [(SIGTERM, 143), (SIGINT, 130)] {
        let dir = tempfile::tempdir().unwrap();
        let (mut child, kids) = tune_local(dir.path());
        signal(child.id(), sig);
        let status = child.wait().unwrap();
        assert_eq!(status.code(), Some(code), "signal {sig}: {}", log(dir.path(), "tune"));
        assert!(all_gone(&kids), "signal {sig} left {kids:?} running: {}", log(dir.path(), "tune"));
    }
}

/// `kill -9` gives the command no chance to stop anything: the kernel signals its children
/// (PR_SET_PDEATHSIG).
#[test]
fn tune_local_killed_outright_leaves_no_orphans() {
    let dir = tempfile::tempdir().unwrap();
    let (mut child, kids) = tune_local(dir.path());
    signal(child.id(), SIGKILL);
    child.wait().unwrap();
    assert!(all_gone(&kids), "kill -9 left {kids:?} running");
}

/// `up` starts its coordinator again after `kill -9`, on the same address, and keeps its worker,
/// which registers with the new one; SIGTERM then stops everything.
#[test]
fn up_restarts_a_dead_coordinator_and_keeps_its_workers() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut up = start(
        dir.path(),
        "up",
        &[
            "up",
            "--workers",
            "1",
            "--preset",
            "synthetic",
            "--tables",
            "2",
            "--rows",
            "20000",
            "--data-dir",
            data.to_str().unwrap(),
        ],
    );
    let served = wait_until(*common::PATIENCE, || log(dir.path(), "up").contains("stop with Ctrl-C"));
    assert!(served.is_some(), "up never served: {}", log(dir.path(), "up"));
    let first = coordinator_pid(&data).unwrap();
    // `up` runs a coordinator, its worker and (by default) one load generator; tell them apart
    // by the subcommand each was started with.
    let kids = children_of(up.id());
    let role = |pid: u32| {
        let cmd = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        cmd.split(|&b| b == 0).nth(1).map(|a| String::from_utf8_lossy(a).into_owned()).unwrap_or_default()
    };
    let workers: Vec<u32> = kids.iter().copied().filter(|&k| k != first && role(k) == "worker").collect();
    let loadgens: Vec<u32> = kids.iter().copied().filter(|&k| role(k) == "loadgen").collect();
    assert_eq!(workers.len(), 1, "{kids:?}");
    assert_eq!(loadgens.len(), 1, "{kids:?}");
    let addr = {
        let text = std::fs::read_to_string(data.join("coordinator.json")).unwrap();
        serde_json::from_str::<serde_json::Value>(&text).unwrap()["quic"].as_str().unwrap().to_string()
    };

    signal(first, SIGKILL);
    let again = wait_until(*common::PATIENCE, || coordinator_pid(&data).is_some_and(|p| p != first && alive(p)));
    assert!(again.is_some(), "up did not start its coordinator again: {}", log(dir.path(), "up"));
    assert!(alive(workers[0]), "the worker was torn down with the coordinator");
    assert!(alive(loadgens[0]), "the load generator was torn down with the coordinator");
    let text = std::fs::read_to_string(data.join("coordinator.json")).unwrap();
    assert_eq!(serde_json::from_str::<serde_json::Value>(&text).unwrap()["quic"], addr.as_str(), "a new address");
    // The worker registers with the new coordinator.
    let cluster = data.join("cluster");
    let healthy = wait_until(*common::PATIENCE, || {
        let out = Command::new(exe())
            .args(["cluster", "status", "--json", "--coordinator", &addr, "--cluster", cluster.to_str().unwrap()])
            .output()
            .unwrap();
        out.status.success()
            && serde_json::from_slice::<serde_json::Value>(&out.stdout)
                .is_ok_and(|s| s["workers"].as_array().is_some_and(|w| w.iter().any(|w| w["healthy"] == true)))
    });
    assert!(healthy.is_some(), "the worker never registered with the new coordinator");

    let kids = children_of(up.id());
    signal(up.id(), SIGTERM);
    let status = up.wait().unwrap();
    assert!(status.success(), "up ended with {status}: {}", log(dir.path(), "up"));
    assert!(all_gone(&kids), "up left {kids:?} running");
}
