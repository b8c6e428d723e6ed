//! Network namespaces for multi-host tests: one namespace per node, each joined by a veth pair
//! to a bridge that lives in a namespace of its own, so the cluster's traffic never touches the
//! root namespace (or this machine's real interfaces).
//!
//! ```text
//!   [coordinator ns] eth0 10.77.0.1  ──veth── p0 ┐
//!   [worker-i ns]    eth0 10.77.0.1x ──veth── pi ├─ br0  [bridge ns]
//!   [client ns]      eth0 10.77.0.100 ─veth── pN ┘
//! ```
//!
//! Needs root (CAP_SYS_ADMIN for `ip netns`, CAP_NET_ADMIN for links and qdiscs) and iproute2.
//! Every namespace is deleted when the [`Net`] is dropped; namespaces left behind by a run that
//! was killed outright are swept by the next run (their names carry the pid).
#![allow(dead_code)]

use std::fs::File;
use std::io::Write;
use std::net::Ipv4Addr;
use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use crate::common::{Proc, exe};

/// Where `ip netns` keeps its named namespaces.
const NETNS_DIR: &str = "/var/run/netns";
/// Every namespace this module creates is named `PREFIX{pid}-{n}-{node}`.
const PREFIX: &str = "etn";
/// The netem shaping of each worker's link, in both directions.
pub const NETEM: &[&str] = &["delay", "2ms", "0.5ms", "loss", "1%"];
/// Set to turn every skip into a failure (for CI machines that must run the test).
pub const REQUIRED_ENV: &str = "EMBTUNE_NETNS_REQUIRED";
/// Set to turn links without netem shaping into a failure (for CI machines whose kernel has it).
pub const NETEM_REQUIRED_ENV: &str = "EMBTUNE_NETEM_REQUIRED";

/// Writes a line to the real stderr: unlike `println!`, not captured by the test harness, so
/// skips and fall-backs show in CI logs without `--nocapture`.
pub fn say(line: &str) {
    let _ = writeln!(std::io::stderr(), "{line}");
}

/// Reports why the test does not run with a `SKIPPED:` line and lets it pass (or fails it when
/// [`REQUIRED_ENV`] is set).
pub fn skip(why: &str) {
    crate::common::skipped("cluster_netns", why, REQUIRED_ENV);
}

/// Reports that the test runs degraded, its links not shaped, with a `SKIPPED:` line (or fails
/// it when [`NETEM_REQUIRED_ENV`] is set).
pub fn unshaped(why: &str) {
    crate::common::skipped("cluster_netns (delay and loss on the links)", why, NETEM_REQUIRED_ENV);
}

/// Why this machine cannot run namespace tests, if it cannot.
pub fn preflight() -> Result<(), String> {
    if unsafe { libc::geteuid() } != 0 {
        return Err("not root: network namespaces need CAP_SYS_ADMIN and CAP_NET_ADMIN \
                    (run `sudo cargo test -p embtune --test cluster_netns`)"
            .into());
    }
    for tool in ["ip", "tc"] {
        match Command::new(tool).arg("-V").stdin(Stdio::null()).output() {
            Ok(o) if o.status.success() => {}
            Ok(o) => return Err(format!("`{tool} -V` failed: {}", String::from_utf8_lossy(&o.stderr).trim())),
            Err(e) => return Err(format!("`{tool}` is missing ({e}); install the iproute2 package")),
        }
    }
    Ok(())
}

/// Runs `prog ARGS`; its stdout, or a message with its stderr.
pub fn sh(prog: &str, args: &[&str]) -> Result<String, String> {
    let line = format!("{prog} {}", args.join(" "));
    let o = Command::new(prog).args(args).stdin(Stdio::null()).output().map_err(|e| format!("`{line}`: {e}"))?;
    if o.status.success() {
        Ok(String::from_utf8_lossy(&o.stdout).into_owned())
    } else {
        Err(format!("`{line}` failed ({}): {}", o.status, String::from_utf8_lossy(&o.stderr).trim()))
    }
}

fn ip(args: &[&str]) -> Result<String, String> {
    sh("ip", args)
}

/// One host: a namespace with one interface, `eth0`, on the shared /24.
#[derive(Clone, Debug)]
pub struct Node {
    pub name: String,
    pub ns: String,
    pub ip: Ipv4Addr,
    /// The bridge-side end of its veth pair (in the bridge namespace).
    pub port: String,
}

/// Whether the workers' links are shaped with netem, and if not, why.
#[derive(Clone, Debug)]
pub enum Shaping {
    Netem(String),
    None(String),
}

/// The namespaces of one test run; dropped, it deletes them all.
pub struct Net {
    pub bridge_ns: String,
    pub nodes: Vec<Node>,
    pub shaping: Shaping,
    created: Vec<String>,
}

impl Net {
    /// Namespaces for a coordinator (`10.77.0.1`), `workers` workers (`10.77.0.11`, `.12`, ...) and
    /// a client (`10.77.0.100`), bridged; netem on the workers' links where the kernel has it.
    /// An error says what this machine cannot do (the caller skips).
    pub fn create(workers: usize) -> Result<Net, String> {
        static RUNS: AtomicUsize = AtomicUsize::new(0);
        sweep_stale();
        let tag = format!("{PREFIX}{}-{}", std::process::id(), RUNS.fetch_add(1, Ordering::Relaxed));
        let mut net = Net {
            bridge_ns: format!("{tag}-br"),
            nodes: Vec::new(),
            shaping: Shaping::None(String::new()),
            created: Vec::new(),
        };
        let mut specs = vec![("coordinator".to_string(), Ipv4Addr::new(10, 77, 0, 1))];
        specs.extend((0..workers).map(|i| (format!("worker-{i}"), Ipv4Addr::new(10, 77, 0, 11 + i as u8))));
        specs.push(("client".to_string(), Ipv4Addr::new(10, 77, 0, 100)));
        for (k, (name, addr)) in specs.into_iter().enumerate() {
            let ns = format!(
                "{tag}-{}",
                if k == 0 {
                    "c".to_string()
                } else if name == "client" {
                    "cl".into()
                } else {
                    format!("w{}", k - 1)
                }
            );
            net.nodes.push(Node { name, ns, ip: addr, port: format!("p{k}") });
        }

        let mut all = vec![net.bridge_ns.clone()];
        all.extend(net.nodes.iter().map(|n| n.ns.clone()));
        for ns in &all {
            ip(&["netns", "add", ns]).map_err(|e| format!("cannot create a network namespace: {e}"))?;
            net.created.push(ns.clone());
        }
        let br = net.bridge_ns.clone();
        ip(&["-n", &br, "link", "add", "name", "br0", "type", "bridge"])?;
        ip(&["-n", &br, "link", "set", "br0", "up"])?;
        for n in &net.nodes {
            ip(&["-n", &n.ns, "link", "set", "lo", "up"])?;
            ip(&["-n", &br, "link", "add", "name", &n.port, "type", "veth", "peer", "name", "eth0", "netns", &n.ns])?;
            ip(&["-n", &br, "link", "set", &n.port, "master", "br0"])?;
            ip(&["-n", &br, "link", "set", &n.port, "up"])?;
            ip(&["-n", &n.ns, "addr", "add", &format!("{}/24", n.ip), "dev", "eth0"])?;
            ip(&["-n", &n.ns, "link", "set", "eth0", "up"])?;
        }
        net.shaping = net.shape()?;
        // Links come up asynchronously; wait for every end to say so.
        for n in &net.nodes {
            for (ns, dev) in [(&n.ns, "eth0"), (&br, n.port.as_str())] {
                let t0 = Instant::now();
                loop {
                    let s = ip(&["-n", ns, "-br", "link", "show", "dev", dev])?;
                    if s.split_whitespace().nth(1) == Some("UP") {
                        break;
                    }
                    if t0.elapsed() > Duration::from_secs(5) {
                        return Err(format!("{dev} in {ns} never came up: {}", s.trim()));
                    }
                    std::thread::sleep(Duration::from_millis(20));
                }
            }
        }
        Ok(net)
    }

    /// netem on both ends of every worker's veth pair; if the kernel has no netem (after trying
    /// `modprobe sch_netem`), no shaping, and why.
    fn shape(&self) -> Result<Shaping, String> {
        let workers: Vec<&Node> = self.nodes.iter().filter(|n| n.name.starts_with("worker")).collect();
        let Some(first) = workers.first() else { return Ok(Shaping::None("no workers".into())) };
        let add = |ns: &str, dev: &str| {
            let mut args = vec!["-n", ns, "qdisc", "add", "dev", dev, "root", "netem"];
            args.extend_from_slice(NETEM);
            sh("tc", &args)
        };
        if let Err(e) = add(&first.ns, "eth0") {
            let probe = match sh("modprobe", &["sch_netem"]) {
                Ok(_) => "`modprobe sch_netem` succeeded".to_string(),
                Err(m) => m,
            };
            if let Err(e2) = add(&first.ns, "eth0") {
                return Ok(Shaping::None(format!("{e}; {probe}; retried: {e2}")));
            }
        }
        for (i, w) in workers.iter().enumerate() {
            if i > 0 {
                add(&w.ns, "eth0")?;
            }
            add(&self.bridge_ns, &w.port)?;
        }
        Ok(Shaping::Netem(format!("netem {} on both ends of each worker's link", NETEM.join(" "))))
    }

    pub fn node(&self, name: &str) -> &Node {
        self.nodes.iter().find(|n| n.name == name).unwrap_or_else(|| panic!("no node {name}"))
    }

    /// Deletes every namespace (idempotent). Processes must be gone first: a namespace lives on,
    /// unnamed, while a process is in it.
    pub fn delete(&mut self) {
        for ns in self.created.drain(..).rev() {
            if let Err(e) = ip(&["netns", "delete", &ns]) {
                say(&format!("cleanup: {e}"));
            }
        }
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        self.delete();
    }
}

/// Deletes namespaces of earlier runs whose process is gone (killed before its guards ran).
fn sweep_stale() {
    let Ok(list) = ip(&["netns", "list"]) else { return };
    for line in list.lines() {
        let Some(name) = line.split_whitespace().next() else { continue };
        let Some(pid) = name.strip_prefix(PREFIX).and_then(|r| r.split('-').next()) else { continue };
        if pid.parse::<u32>().is_ok()
            && pid != std::process::id().to_string()
            && !Path::new(&format!("/proc/{pid}")).exists()
        {
            let _ = ip(&["netns", "delete", name]);
        }
    }
}

/// A command line for `embtune ARGS` run in namespace `ns`; the child gets SIGKILL if the test
/// thread that started it dies, so even a killed test run leaves no processes behind.
fn ns_command(ns: &str, args: &[&str]) -> Command {
    let mut c = Command::new("ip");
    c.args(["netns", "exec", ns, exe()]).args(args).env("RUST_LOG", "info").stdin(Stdio::null());
    unsafe {
        c.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong);
            Ok(())
        });
    }
    c
}

/// Starts `embtune ARGS` in namespace `ns`, logging to `dir/NAME.log`. `ip netns exec` execs in
/// place, so the child's pid is embtune's and killing it kills embtune.
pub fn spawn(ns: &str, dir: &Path, name: &str, args: &[&str]) -> Proc {
    let log = std::fs::OpenOptions::new().create(true).append(true).open(dir.join(format!("{name}.log"))).unwrap();
    let child = ns_command(ns, args)
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .unwrap_or_else(|e| panic!("starting {name} in {ns}: {e}"));
    Proc { child, name: name.into() }
}

/// Runs `embtune ARGS` in namespace `ns` to completion, killing it after `timeout`.
pub fn run(ns: &str, dir: &Path, args: &[&str], timeout: Duration) -> Output {
    static N: AtomicUsize = AtomicUsize::new(0);
    let n = N.fetch_add(1, Ordering::Relaxed);
    let (out_path, err_path) = (dir.join(format!("run-{n}.out")), dir.join(format!("run-{n}.err")));
    let mut p = Proc {
        child: ns_command(ns, args)
            .stdout(File::create(&out_path).unwrap())
            .stderr(File::create(&err_path).unwrap())
            .spawn()
            .unwrap_or_else(|e| panic!("running embtune {}: {e}", args.join(" "))),
        name: format!("run-{n}"),
    };
    let t0 = Instant::now();
    let status = loop {
        if let Some(s) = p.child.try_wait().unwrap() {
            break s;
        }
        if t0.elapsed() > timeout {
            p.kill9();
            panic!(
                "`embtune {}` in {ns} did not finish in {timeout:?}; stderr:\n{}",
                args.join(" "),
                std::fs::read_to_string(&err_path).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    Output { status, stdout: std::fs::read(&out_path).unwrap(), stderr: std::fs::read(&err_path).unwrap() }
}

/// Runs `f` on a fresh thread that has entered namespace `ns`: sockets it creates (a client's
/// QUIC endpoint, say) live in that namespace for good, whichever thread uses them later.
pub fn in_netns<T: Send + 'static>(ns: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let path = format!("{NETNS_DIR}/{ns}");
    std::thread::spawn(move || {
        let file = File::open(&path).unwrap_or_else(|e| panic!("opening {path}: {e}"));
        if unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
            panic!("setns({path}): {}", std::io::Error::last_os_error());
        }
        f()
    })
    .join()
    .unwrap_or_else(|e| std::panic::resume_unwind(e))
}
