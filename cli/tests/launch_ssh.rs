//! `embtune launch` end to end through a real sshd on loopback: two workers installed and started
//! over ssh, reported healthy by the coordinator, a verified bench through them, a relaunch that
//! restarts them, `launch --stop`, and a worker that cannot start reported with its log.
//!
//! Needs root (sshd logs in as root by key) and OpenSSH (Debian: openssh-server,
//! openssh-client); skips otherwise with a `SKIPPED:` line, or fails when EMBTUNE_SSH_REQUIRED
//! is set (CI sets it as root, after installing OpenSSH).

mod common;

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use common::{Cluster, exe, free_udp, skipped, wait_until};

/// Set to turn a skip into a failure (CI, which installs OpenSSH, sets it as root).
const REQUIRED_ENV: &str = "EMBTUNE_SSH_REQUIRED";

const SSHD: &str = "/usr/sbin/sshd";

fn have(cmd: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {cmd}")])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Why this machine cannot run the test, if it cannot.
fn unsupported() -> Option<String> {
    // SAFETY: geteuid(2) has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Some("not root (sshd must log in as root)".into());
    }
    if !Path::new(SSHD).exists() {
        return Some(format!("{SSHD} is missing (Debian: apt-get install openssh-server)"));
    }
    for c in ["ssh", "ssh-keygen"] {
        if !have(c) {
            return Some(format!("`{c}` is missing (Debian: apt-get install openssh-client)"));
        }
    }
    None
}

/// An sshd on 127.0.0.1, stopped when dropped; on a failing test, prints its log and the remote
/// workers' logs.
struct Sshd {
    child: Child,
    dir: PathBuf,
    port: u16,
    key: PathBuf,
    remote: PathBuf,
}

impl Sshd {
    fn start(dir: &Path, remote: &Path) -> Sshd {
        let keygen = |name: &str| {
            let out = Command::new("ssh-keygen")
                .args(["-q", "-t", "ed25519", "-N", "", "-C", "embtune-test", "-f"])
                .arg(dir.join(name))
                .output()
                .unwrap();
            assert!(out.status.success(), "ssh-keygen: {}", String::from_utf8_lossy(&out.stderr));
        };
        keygen("host_key");
        keygen("client_key");
        std::fs::copy(dir.join("client_key.pub"), dir.join("authorized_keys")).unwrap();
        let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let config = format!(
            "Port {port}\nListenAddress 127.0.0.1\nHostKey {hk}\nPidFile {pid}\nAuthorizedKeysFile {ak}\n\
             PermitRootLogin prohibit-password\nPubkeyAuthentication yes\nPasswordAuthentication no\n\
             KbdInteractiveAuthentication no\nUsePAM no\nStrictModes no\nLogLevel VERBOSE\n",
            hk = dir.join("host_key").display(),
            pid = dir.join("sshd.pid").display(),
            ak = dir.join("authorized_keys").display(),
        );
        std::fs::write(dir.join("sshd_config"), config).unwrap();
        // sshd's privilege separation directory; packages create it at boot, containers may not.
        std::fs::create_dir_all("/run/sshd").unwrap();
        let log = std::fs::File::create(dir.join("sshd.log")).unwrap();
        let child = Command::new(SSHD)
            .args(["-D", "-e", "-p", &port.to_string(), "-f"])
            .arg(dir.join("sshd_config"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("starting sshd");
        let s = Sshd { child, dir: dir.to_path_buf(), port, key: dir.join("client_key"), remote: remote.to_path_buf() };
        let ssh_ok = || {
            let mut argv = s.ssh_argv();
            argv.extend([
                "-o".into(),
                "BatchMode=yes".into(),
                "-p".into(),
                port.to_string(),
                "root@127.0.0.1".into(),
                "true".into(),
            ]);
            Command::new(&argv[0]).args(&argv[1..]).stdin(Stdio::null()).output().is_ok_and(|o| o.status.success())
        };
        assert!(wait_until(Duration::from_secs(15), ssh_ok).is_some(), "sshd never accepted the test key: {}", s.log());
        s
    }

    fn ssh_argv(&self) -> Vec<String> {
        [
            "ssh",
            "-F",
            "/dev/null",
            "-i",
            self.key.to_str().unwrap(),
            "-o",
            "StrictHostKeyChecking=no",
            "-o",
            "UserKnownHostsFile=/dev/null",
            "-o",
            "LogLevel=ERROR",
        ]
        .map(String::from)
        .to_vec()
    }

    /// The --ssh value.
    fn ssh_cmd(&self) -> String {
        self.ssh_argv().join(" ")
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("sshd.log")).unwrap_or_default()
    }
}

impl Drop for Sshd {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("----- sshd.log -----\n{}", self.log());
            if let Ok(rd) = std::fs::read_dir(self.remote.join("logs")) {
                for e in rd.flatten() {
                    eprintln!(
                        "----- remote {} -----\n{}",
                        e.path().display(),
                        std::fs::read_to_string(e.path()).unwrap_or_default()
                    );
                }
            }
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Kills whatever pids the remote folder still lists, so a failing test leaves no worker behind.
struct RemoteWorkers(PathBuf);

impl Drop for RemoteWorkers {
    fn drop(&mut self) {
        for pid in pids(&self.0) {
            if alive(pid) {
                // SAFETY: kill(2) on a worker pid this test started through sshd.
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
        }
    }
}

/// The pids in REMOTE/run/*.pid.
fn pids(remote: &Path) -> Vec<i32> {
    let Ok(rd) = std::fs::read_dir(remote.join("run")) else { return Vec::new() };
    rd.flatten().filter_map(|e| std::fs::read_to_string(e.path()).ok()?.trim().parse().ok()).collect()
}

/// Running (a zombie left to a container's init counts as gone).
fn alive(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => !matches!(stat.rsplit_once(')').and_then(|(_, r)| r.trim().chars().next()), Some('Z' | 'X')),
        Err(_) => false,
    }
}

fn run(args: &[String]) -> Output {
    Command::new(exe()).args(args).output().unwrap()
}

fn text(o: &Output) -> String {
    format!(
        "exit {:?}\nstdout:\n{}\nstderr:\n{}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn strs(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

#[test]
fn launch_over_ssh_serves_verified_lookups_and_stops() {
    if let Some(why) = unsupported() {
        return skipped("launch_ssh", &why, REQUIRED_ENV);
    }
    let help = run(&strs(&["launch", "--help"]));
    assert!(help.status.success(), "`embtune launch` is not wired into cli/src/main.rs: {}", text(&help));

    let c = Cluster::start(0);
    let remote = c.dir.path().join("remote");
    let sshd = Sshd::start(c.dir.path(), &remote);
    let _cleanup = RemoteWorkers(remote.clone());
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let (p0, p1) = (free_udp().port(), free_udp().port());
    let hosts = c.dir.path().join("hosts.txt");
    std::fs::write(
        &hosts,
        format!(
            "# two workers on one host through the test sshd\n\
             root@127.0.0.1:{s} port={p0} cores=0 memory=1G name=ssh-w0\n\
             root@127.0.0.1:{s} port={p1} cores={c1} memory=1G name=ssh-w1   # second\n",
            s = sshd.port,
            c1 = 1 % cpus
        ),
    )
    .unwrap();
    let launch: Vec<String> = strs(&["launch", "--hosts", hosts.to_str().unwrap()])
        .into_iter()
        .chain(c.target_args())
        .chain(strs(&["--remote-dir", remote.to_str().unwrap(), "--ssh", &sshd.ssh_cmd(), "--timeout", "60"]))
        .collect();

    // Launch: copied, started detached, healthy before launch returns.
    let out = run(&launch);
    assert!(out.status.success(), "launch failed: {}", text(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("copying"), "{err}");
    assert!(err.contains("2 workers healthy"), "{err}");
    assert!(remote.join("bin/embtune").exists());
    assert!(remote.join("cluster/node.key").exists());
    assert!(!remote.join("cluster/ca.key").exists(), "the CA key must stay on the launching machine");
    let first = pids(&remote);
    assert_eq!(first.len(), 2, "pid files: {first:?}");
    assert!(first.iter().all(|p| alive(*p)));

    let mut status: Vec<String> = strs(&["cluster", "status", "--json"]);
    status.extend(c.target_args());
    let s: serde_json::Value = serde_json::from_slice(&run(&status).stdout).unwrap();
    let ws = s["workers"].as_array().unwrap();
    assert_eq!(ws.len(), 2, "{s}");
    // Started side by side, so registered in either order.
    for (name, port) in [("ssh-w0", p0), ("ssh-w1", p1)] {
        let w = ws.iter().find(|w| w["name"] == name).unwrap_or_else(|| panic!("no worker {name}: {s}"));
        assert_eq!(w["healthy"], true, "{s}");
        assert_eq!(w["addr"], format!("127.0.0.1:{port}"), "{s}");
        assert_eq!(w["cores"], 1, "{s}");
        assert_eq!(w["memory_bytes"], 1u64 << 30, "{s}");
    }

    // A verified benchmark through the coordinator and the two launched workers.
    let mut bench: Vec<String> = strs(&["bench"]);
    bench.extend(c.target_args());
    bench.extend(strs(&[
        "--preset",
        "criteo-kaggle",
        "--scale",
        "0.005",
        "--duration",
        "1",
        "--warmup",
        "0.2",
        "--verify",
        "--json",
    ]));
    let out = run(&bench);
    assert!(out.status.success(), "bench failed: {}", text(&out));
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(r["verified"], true, "{r}");
    assert_eq!(r["workers"], 2, "{r}");
    assert_eq!(r["errors"], 0, "{r}");

    // Launching again restarts them (the binary is already there) and waits for the new ones.
    let out = run(&launch);
    assert!(out.status.success(), "relaunch failed: {}", text(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("already this one") && err.contains("restarting"), "{err}");
    let second = pids(&remote);
    assert_eq!(second.len(), 2);
    assert!(second.iter().all(|p| !first.contains(p) && alive(*p)), "{first:?} then {second:?}");
    assert!(first.iter().all(|p| !alive(*p)), "the old workers are still running: {first:?}");

    // Stop: gone, pid files removed, the coordinator notices; a second stop has nothing to do.
    let stop: Vec<String> = strs(&[
        "launch",
        "--stop",
        "--hosts",
        hosts.to_str().unwrap(),
        "--remote-dir",
        remote.to_str().unwrap(),
        "--ssh",
        &sshd.ssh_cmd(),
    ]);
    let out = run(&stop);
    assert!(out.status.success(), "stop failed: {}", text(&out));
    let so = String::from_utf8_lossy(&out.stdout);
    assert_eq!(so.matches("stopped pid").count(), 2, "{so}");
    assert!(second.iter().all(|p| !alive(*p)), "workers survived --stop: {second:?}");
    assert!(pids(&remote).is_empty());
    let down = wait_until(Duration::from_secs(10), || {
        let s: serde_json::Value = serde_json::from_slice(&run(&status).stdout).unwrap();
        s["workers"].as_array().unwrap().iter().all(|w| w["healthy"] == false)
    });
    assert!(down.is_some(), "the coordinator still lists the stopped workers as healthy");
    let out = run(&stop);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(String::from_utf8_lossy(&out.stdout).matches("not running").count(), 2, "{}", text(&out));

    // A worker that cannot start (its port is taken) is reported with the tail of its log.
    let taken = std::net::UdpSocket::bind("0.0.0.0:0").unwrap();
    let bad_hosts = c.dir.path().join("bad-hosts.txt");
    std::fs::write(
        &bad_hosts,
        format!(
            "root@127.0.0.1:{} port={} cores=0 memory=1G name=ssh-bad\n",
            sshd.port,
            taken.local_addr().unwrap().port()
        ),
    )
    .unwrap();
    let mut bad = launch.clone();
    bad[2] = bad_hosts.to_str().unwrap().into();
    let out = run(&bad);
    assert!(!out.status.success(), "a worker on a taken port was reported healthy: {}", text(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("worker ssh-bad") && err.contains("exited") && err.contains("last lines of"), "{err}");
    assert!(err.contains("launch --stop"), "{err}");
}

#[test]
fn unreachable_hosts_and_dry_runs_say_what_happens() {
    let dir = tempfile::tempdir().unwrap();
    let certs = dir.path().join("cluster");
    let out = run(&["cluster".into(), "init".into(), "--out".into(), certs.to_str().unwrap().into()]);
    assert!(out.status.success(), "{}", text(&out));
    // Nothing listens on this port.
    let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let hosts = dir.path().join("hosts");
    std::fs::write(&hosts, format!("nobody@127.0.0.1:{port} port=7799 cores=0-1 memory=2G name=w9\n")).unwrap();
    let base: Vec<String> = strs(&[
        "launch",
        "--hosts",
        hosts.to_str().unwrap(),
        "--cluster",
        certs.to_str().unwrap(),
        "--coordinator",
        "127.0.0.1:7700",
    ]);

    let mut dry = base.clone();
    dry.push("--dry-run".into());
    let out = run(&dry);
    assert!(out.status.success(), "{}", text(&out));
    let so = String::from_utf8_lossy(&out.stdout);
    for want in [
        &format!("-p {port} nobody@127.0.0.1"),
        "--listen 0.0.0.0:7799 --advertise 127.0.0.1:7799 --coordinator 127.0.0.1:7700 --cluster cluster --cores 0-1 --memory-limit 2147483648 --name w9",
        "<contents of",
        "run/w9.pid",
    ] {
        assert!(so.contains(want), "dry run lacks `{want}`:\n{so}");
    }
    assert!(!so.contains("PRIVATE KEY"), "a dry run must not print the node key");

    // A bad hosts file names the line.
    std::fs::write(dir.path().join("bad"), "h1\nh2 colour=blue\n").unwrap();
    let mut b = base.clone();
    b[2] = dir.path().join("bad").to_str().unwrap().into();
    let out = run(&b);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("line 2: unknown key `colour`"), "{}", text(&out));

    if !have("ssh") {
        return skipped(
            "launch_ssh (an unreachable host)",
            "`ssh` is missing (Debian: apt-get install openssh-client)",
            REQUIRED_ENV,
        );
    }
    let mut stop: Vec<String> = strs(&["launch", "--stop", "--hosts", hosts.to_str().unwrap()]);
    stop.extend(strs(&["--ssh", "ssh -F /dev/null -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null"]));
    let out = run(&stop);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&format!("cannot reach nobody@127.0.0.1:{port} over ssh")), "{err}");
    assert!(err.contains("without a prompt") && err.contains(" true"), "{err}");
}
