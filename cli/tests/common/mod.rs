//! Helpers for tests that start real embtune processes.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long a test waits for a condition it needs (workers registered, a job's progress): long
/// enough for a loaded 2-core machine, where 20 s was not. A test never sleeps this long; it
/// polls the condition. `EMBTUNE_TEST_PATIENCE_S` overrides it.
pub static PATIENCE: std::sync::LazyLock<Duration> = std::sync::LazyLock::new(|| {
    Duration::from_secs(std::env::var("EMBTUNE_TEST_PATIENCE_S").ok().and_then(|s| s.parse().ok()).unwrap_or(240))
});

/// Reports a test that does not run (or runs degraded) on this machine: a line starting with
/// `SKIPPED:` on the real stderr (not captured by the test harness, so it shows in every CI
/// log, and `.ci/run` counts it), and the test passes. When the environment variable
/// `required_env` is set (CI sets it where it installed what the test needs), the skip is a
/// failure instead.
pub fn skipped(test: &str, why: &str, required_env: &str) {
    use std::io::Write;
    if std::env::var_os(required_env).is_some() {
        panic!("{required_env} is set, but {test} cannot run for real: {why}");
    }
    let _ = writeln!(std::io::stderr(), "SKIPPED: {test}: {why} (set {required_env} to make this a failure)");
}

pub fn exe() -> &'static str {
    env!("CARGO_BIN_EXE_embtune")
}

/// A child process killed (SIGKILL) when dropped, so failing tests leave nothing behind.
pub struct Proc {
    pub child: Child,
    pub name: String,
}

impl Proc {
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Sends a signal by name (`STOP`, `CONT`) with the system's `kill`.
    pub fn signal(&self, sig: &str) {
        let ok = Command::new("kill").arg(format!("-{sig}")).arg(self.pid().to_string()).status().unwrap();
        assert!(ok.success(), "kill -{sig} {} failed", self.pid());
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// Starts `embtune ARGS`, logging to `dir/NAME.log`.
pub fn spawn(dir: &Path, name: &str, args: &[&str]) -> Proc {
    let log = std::fs::OpenOptions::new().create(true).append(true).open(dir.join(format!("{name}.log"))).unwrap();
    let child = Command::new(exe())
        .args(args)
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .unwrap_or_else(|e| panic!("starting {name}: {e}"));
    Proc { child, name: name.into() }
}

/// A free UDP port on loopback (bound and released; fine for tests).
pub fn free_udp() -> SocketAddr {
    std::net::UdpSocket::bind("127.0.0.1:0").unwrap().local_addr().unwrap()
}

pub struct Cluster {
    pub dir: tempfile::TempDir,
    pub certs: PathBuf,
    pub coordinator: Option<Proc>,
    pub addr: SocketAddr,
    pub workers: Vec<(SocketAddr, Proc)>,
    /// More arguments for the coordinator (`--max-connections N`).
    pub coordinator_args: Vec<String>,
    /// More arguments for every worker (`--no-calibrate`).
    pub worker_args: Vec<String>,
}

impl Cluster {
    /// A coordinator and `n` workers of one core each, as real processes on loopback.
    pub fn start(n: usize) -> Cluster {
        Self::start_with(n, &[])
    }

    /// [`Cluster::start`] with more arguments for the coordinator.
    pub fn start_with(n: usize, coordinator_args: &[&str]) -> Cluster {
        Self::start_with_workers(n, coordinator_args, &[])
    }

    /// [`Cluster::start_with`] with more arguments for every worker too.
    pub fn start_with_workers(n: usize, coordinator_args: &[&str], worker_args: &[&str]) -> Cluster {
        let dir = tempfile::tempdir().unwrap();
        let certs = dir.path().join("cluster");
        let out = Command::new(exe()).args(["cluster", "init", "--out"]).arg(&certs).output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let addr = free_udp();
        let coordinator_args = coordinator_args.iter().map(|s| s.to_string()).collect();
        let worker_args = worker_args.iter().map(|s| s.to_string()).collect();
        let mut c = Cluster { dir, certs, coordinator: None, addr, workers: Vec::new(), coordinator_args, worker_args };
        c.start_coordinator();
        for _ in 0..n {
            c.add_worker(None);
        }
        c
    }

    pub fn start_coordinator(&mut self) {
        let data = self.dir.path().join("data");
        let (addr, certs) = (self.addr.to_string(), self.certs.to_str().unwrap().to_string());
        let mut args = vec![
            "coordinator",
            "--listen",
            &addr,
            "--http",
            "127.0.0.1:0",
            "--cluster",
            &certs,
            "--data-dir",
            data.to_str().unwrap(),
        ];
        args.extend(self.coordinator_args.iter().map(String::as_str));
        let p = spawn(self.dir.path(), "coordinator", &args);
        self.coordinator = Some(p);
    }

    /// Starts a worker (on `listen`, or a fresh port).
    pub fn add_worker(&mut self, listen: Option<SocketAddr>) -> SocketAddr {
        let listen = listen.unwrap_or_else(free_udp);
        let i = self.workers.len();
        let (listen_s, coordinator, certs, core, name) = (
            listen.to_string(),
            self.addr.to_string(),
            self.certs.to_str().unwrap().to_string(),
            (i % 2).to_string(),
            format!("w{i}"),
        );
        let mut args = vec![
            "worker",
            "--listen",
            &listen_s,
            "--coordinator",
            &coordinator,
            "--cluster",
            &certs,
            "--cores",
            &core,
            "--memory-limit",
            "2000000000",
            "--name",
            &name,
        ];
        args.extend(self.worker_args.iter().map(String::as_str));
        let p = spawn(self.dir.path(), &format!("worker-{i}"), &args);
        self.workers.push((listen, p));
        listen
    }

    pub fn log(&self, name: &str) -> String {
        std::fs::read_to_string(self.dir.path().join(format!("{name}.log"))).unwrap_or_default()
    }

    /// Runs `embtune ARGS` to completion.
    pub fn run(&self, args: &[&str]) -> std::process::Output {
        Command::new(exe()).args(args).output().unwrap()
    }

    /// Waits (up to [`PATIENCE`]) until the coordinator reports `n` healthy workers: on a
    /// loaded machine a worker may register seconds after another, and a bench started in
    /// between deploys to the workers up at the time.
    pub fn wait_healthy(&self, n: usize) {
        let mut args = vec!["cluster".to_string(), "status".into(), "--json".into()];
        args.extend(self.target_args());
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let mut last = String::new();
        let ok = wait_until(*PATIENCE, || {
            let out = self.run(&args);
            last = String::from_utf8_lossy(&out.stdout).into_owned();
            serde_json::from_slice::<serde_json::Value>(&out.stdout).is_ok_and(|s| {
                s["workers"].as_array().is_some_and(|w| w.iter().filter(|x| x["healthy"] == true).count() >= n)
            })
        });
        assert!(ok.is_some(), "{n} workers never became healthy: {last}\n{}", self.log("coordinator"));
    }

    pub fn target_args(&self) -> Vec<String> {
        vec!["--coordinator".into(), self.addr.to_string(), "--cluster".into(), self.certs.to_str().unwrap().into()]
    }
}

/// Resident memory of process `pid` now (`VmRSS`) and at its peak (`VmHWM`), bytes.
pub fn rss(pid: u32) -> (u64, u64) {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| -> u64 {
        s.lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
            << 10
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// Resets process `pid`'s peak resident memory (`VmHWM`) to what it uses now, so that the next
/// [`rss`] reports the peak since this call. False where the kernel does not allow it.
pub fn reset_peak_rss(pid: u32) -> bool {
    std::fs::write(format!("/proc/{pid}/clear_refs"), "5").is_ok()
}

/// Whether process `pid` exists and is not a zombie.
pub fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| s.rsplit_once(')').and_then(|(_, rest)| rest.trim_start().chars().next()))
        .is_some_and(|state| state != 'Z' && state != 'X')
}

/// The pids whose parent is `pid`.
pub fn children_of(pid: u32) -> Vec<u32> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Some(p) = e.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else { continue };
        if let Ok(stat) = std::fs::read_to_string(format!("/proc/{p}/stat"))
            && let Some((_, rest)) = stat.rsplit_once(')')
            && rest.split_whitespace().nth(1).and_then(|pp| pp.parse::<u32>().ok()) == Some(pid)
        {
            out.push(p);
        }
    }
    out
}

/// Polls `f` until it returns true or `timeout` passes; returns the time it took.
pub fn wait_until(timeout: Duration, mut f: impl FnMut() -> bool) -> Option<Duration> {
    let t0 = Instant::now();
    while t0.elapsed() < timeout {
        if f() {
            return Some(t0.elapsed());
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    None
}

impl Drop for Cluster {
    /// A failing test shows what every process logged.
    fn drop(&mut self) {
        if std::thread::panicking() {
            let mut names: Vec<String> = vec!["coordinator".into()];
            names.extend((0..self.workers.len() + 4).map(|i| format!("worker-{i}")));
            for n in names {
                let log = self.log(&n);
                if !log.is_empty() {
                    eprintln!("----- {n}.log -----\n{log}");
                }
            }
        }
    }
}
