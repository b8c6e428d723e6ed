//! Helpers for tests that start real embtune processes.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

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
}

impl Cluster {
    /// A coordinator and `n` workers of one core each, as real processes on loopback.
    pub fn start(n: usize) -> Cluster {
        let dir = tempfile::tempdir().unwrap();
        let certs = dir.path().join("cluster");
        let out = Command::new(exe()).args(["cluster", "init", "--out"]).arg(&certs).output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let addr = free_udp();
        let mut c = Cluster { dir, certs, coordinator: None, addr, workers: Vec::new() };
        c.start_coordinator();
        for _ in 0..n {
            c.add_worker(None);
        }
        c
    }

    pub fn start_coordinator(&mut self) {
        let data = self.dir.path().join("data");
        let p = spawn(
            self.dir.path(),
            "coordinator",
            &[
                "coordinator",
                "--listen",
                &self.addr.to_string(),
                "--http",
                "127.0.0.1:0",
                "--cluster",
                self.certs.to_str().unwrap(),
                "--data-dir",
                data.to_str().unwrap(),
            ],
        );
        self.coordinator = Some(p);
    }

    /// Starts a worker (on `listen`, or a fresh port).
    pub fn add_worker(&mut self, listen: Option<SocketAddr>) -> SocketAddr {
        let listen = listen.unwrap_or_else(free_udp);
        let i = self.workers.len();
        let p = spawn(
            self.dir.path(),
            &format!("worker-{i}"),
            &[
                "worker",
                "--listen",
                &listen.to_string(),
                "--coordinator",
                &self.addr.to_string(),
                "--cluster",
                self.certs.to_str().unwrap(),
                "--cores",
                &(i % 2).to_string(),
                "--memory-limit",
                "2000000000",
                "--name",
                &format!("w{i}"),
            ],
        );
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

    pub fn target_args(&self) -> Vec<String> {
        vec!["--coordinator".into(), self.addr.to_string(), "--cluster".into(), self.certs.to_str().unwrap().into()]
    }
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
