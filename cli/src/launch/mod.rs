//! `embtune launch`: workers on other machines, started over ssh.
//!
//! For every line of a hosts file: copy the embtune binary and the cluster's certificates to a
//! folder on the host (once per host, and the binary only when it differs from the one already
//! there), start `embtune worker` detached (its pid in `DIR/run/NAME.pid`, its log in
//! `DIR/logs/NAME.log`), then wait until the coordinator reports every launched worker healthy.
//! `launch --stop` ends them by their pid files.
//!
//! Only `ssh` is needed on this machine (files travel as `ssh HOST 'cat > FILE'`), only a POSIX
//! `sh` on the hosts, and the CA key never leaves this machine: hosts get `ca.crt`, `node.crt`
//! and `node.key`.
//!
//! The hosts file is parsed in `hosts`, the shell text run on the hosts is built in `shell`
//! (both pure), and `ssh` runs it; this module is the command that puts them together.

mod hosts;
mod shell;
mod ssh;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use clap::Args;

use embtune_client::CoordinatorClient;
use embtune_protocol::wire::WorkerInfo;
use embtune_transport::certs;

use crate::cluster::runtime;
use crate::ui;

pub use hosts::{HostLine, parse_hosts, parse_size, parse_size_or_zero};
use shell::{
    EXIT_NO_RUN, EXIT_SHORT_COPY, check_script, install_script, probe_script, remote_dir_expr, start_script,
    stop_script, worker_args,
};
use ssh::{Ssh, advertise_addr, elf_arch, indent, resolve, sha256, tail};

const HELP: &str = "\
Hosts file: one worker a line; `#` starts a comment.

  [user@]host[:sshport] [port=7701] [cores=LIST] [memory=SIZE] [name=NAME] [advertise=IP:PORT]

  host       the machine ssh logs in to, and the address the coordinator dials (resolved here;
             an alias of ~/.ssh/config is resolved with `ssh -G`); IPv6 as [addr]:sshport
  sshport    ssh's port (default: ssh's own, usually 22)
  port       the worker's QUIC port, UDP (default 7701; workers sharing a host need their own)
  cores      CPUs for the worker's engine threads, e.g. 0-7 or 0-3,8-11 (default: all)
  memory     bytes of tables it may hold: 64G, 512M, 1.5T (powers of 1024) or plain bytes
             (default: 85% of the host's available memory)
  name       its name in reports and of its log and pid files (default: HOST-PORT)
  advertise  the address the coordinator should dial, when not host:port (NAT, several NICs)

  # two workers on gpu1, one per socket; one on gpu2 with ssh on port 2222
  ubuntu@gpu1  port=7701 cores=0-15  memory=100G name=gpu1-a
  ubuntu@gpu1  port=7702 cores=16-31 memory=100G name=gpu1-b
  gpu2:2222    cores=0-7 memory=32G

On each host, launch uses DIR (--remote-dir): DIR/bin/embtune, DIR/cluster/ (ca.crt, node.crt,
node.key; never the CA key), DIR/logs/NAME.log (the previous run's in NAME.log.1) and
DIR/run/NAME.pid. Workers listen on 0.0.0.0:PORT; the coordinator and the workers must reach
each other over UDP. A worker already running under the same name is restarted.

ssh runs with -o BatchMode=yes -o ConnectTimeout=10: no password prompts, so use a key,
ssh-agent or ~/.ssh/config. Options given in --ssh come first and take precedence.

Examples:
  embtune cluster init --out cluster
  embtune coordinator --listen 0.0.0.0:7700 --cluster cluster --data-dir state
  embtune launch --hosts hosts.txt --coordinator 10.0.0.1:7700 --cluster cluster
  embtune launch --hosts hosts.txt --coordinator 10.0.0.1:7700 --cluster cluster --dry-run
  embtune launch --hosts hosts.txt --coordinator 10.0.0.1:7700 --cluster cluster \\
      --ssh \"ssh -i ~/.ssh/lab -o StrictHostKeyChecking=accept-new\" --remote-dir /opt/embtune
  embtune launch --stop --hosts hosts.txt";

#[derive(Args, Debug)]
#[command(after_help = HELP)]
pub struct LaunchArgs {
    /// The hosts file: one worker a line (format below).
    #[arg(long, value_name = "FILE")]
    pub hosts: PathBuf,
    /// The coordinator's QUIC address, as the workers reach it.
    #[arg(long, value_name = "HOST:PORT", required_unless_present = "stop")]
    pub coordinator: Option<String>,
    /// The cluster's certificate folder (`embtune cluster init --out DIR`).
    #[arg(long, value_name = "DIR", required_unless_present = "stop")]
    pub cluster: Option<PathBuf>,
    /// The embtune binary to install (default: this one). It must run on the hosts: same CPU
    /// architecture, and a C library no older than the one it was built against.
    #[arg(long, value_name = "PATH")]
    pub binary: Option<PathBuf>,
    /// The folder on each host for the binary, certificates, logs and pid files; a relative
    /// path or ~/ is in the remote user's home.
    #[arg(long, value_name = "DIR", default_value = "~/embtune")]
    pub remote_dir: String,
    /// The ssh command and its options, e.g. "ssh -i ~/.ssh/lab -o StrictHostKeyChecking=accept-new".
    #[arg(long, value_name = "CMD", default_value = "ssh")]
    pub ssh: String,
    /// Seconds to wait for the launched workers to be healthy.
    #[arg(long, value_name = "SECS", default_value_t = 120.0)]
    pub timeout: f64,
    /// Stop the workers of the hosts file (by their pid files) instead of starting them.
    #[arg(long)]
    pub stop: bool,
    /// Print what would run on each host, and run nothing.
    #[arg(long)]
    pub dry_run: bool,
}

pub fn run(a: LaunchArgs) -> Result<()> {
    let text =
        std::fs::read_to_string(&a.hosts).with_context(|| format!("reading the hosts file {}", a.hosts.display()))?;
    let hosts = parse_hosts(&text).map_err(|e| anyhow!("{}: {e}", a.hosts.display()))?;
    if hosts.is_empty() {
        bail!(
            "{} lists no hosts: write one `[user@]host[:sshport] [port=7701] [cores=0-7] [memory=64G] [name=w1]` a line (see embtune launch --help)",
            a.hosts.display()
        );
    }
    let ssh = Ssh::new(&a.ssh)?;
    let dir = remote_dir_expr(&a.remote_dir).map_err(anyhow::Error::msg)?;
    if a.stop { stop(&a, &ssh, &dir, &hosts) } else { launch(&a, &ssh, &dir, &hosts) }
}

/// Lines grouped by ssh login, in file order: one install per login.
fn by_login(hosts: &[HostLine]) -> Vec<(String, Vec<&HostLine>)> {
    let mut groups: Vec<(String, Vec<&HostLine>)> = Vec::new();
    for h in hosts {
        match groups.iter_mut().find(|(l, _)| *l == h.login()) {
            Some((_, v)) => v.push(h),
            None => groups.push((h.login(), vec![h])),
        }
    }
    groups
}

struct Launched<'a> {
    h: &'a HostLine,
    advertise: Option<SocketAddr>,
    pid: String,
    started: Instant,
    /// The coordinator already listed a healthy worker at this address before the launch: a
    /// previous run's, which the coordinator takes a moment to notice gone.
    stale: bool,
}

/// Whether `w` is the coordinator's record of `l`.
fn is_slot(w: &WorkerInfo, l: &Launched) -> bool {
    l.advertise.map_or(w.name == l.h.name, |ad| w.addr == ad.to_string())
}

fn launch(a: &LaunchArgs, ssh: &Ssh, dir: &str, hosts: &[HostLine]) -> Result<()> {
    let cluster = a.cluster.as_ref().expect("clap requires --cluster without --stop");
    let coord_text = a.coordinator.as_ref().expect("clap requires --coordinator without --stop");
    // The workers take an IP:PORT: resolve a host name here (IPv4 first).
    let coordinator = coord_text
        .rsplit_once(':')
        .and_then(|(h, p)| resolve(h.trim_start_matches('[').trim_end_matches(']'), p.parse().ok()?))
        .ok_or_else(|| anyhow!("--coordinator {coord_text}: not HOST:PORT, or the host name does not resolve here"))?;
    if coordinator.ip().is_unspecified() {
        bail!("--coordinator {coordinator}: give the address the workers dial, not 0.0.0.0");
    }
    let local = |h: &HostLine| resolve(&h.host, 1).is_some_and(|x| x.ip().is_loopback());
    if coordinator.ip().is_loopback() && !hosts.iter().all(local) {
        eprintln!(
            "warning: --coordinator {coordinator} is a loopback address: workers on other machines cannot reach it; give the coordinator's network address"
        );
    }
    let mut certs_text = Vec::new();
    for f in [certs::CA_CERT, certs::NODE_CERT, certs::NODE_KEY] {
        let p = cluster.join(f);
        let t = std::fs::read_to_string(&p).with_context(|| {
            format!(
                "reading {}: is {} a cluster folder? create one with `embtune cluster init --out {}`",
                p.display(),
                cluster.display(),
                cluster.display()
            )
        })?;
        certs_text.push((f, t));
    }
    let binary = match &a.binary {
        Some(b) => b.clone(),
        None => std::env::current_exe().context("locating the embtune binary; pass --binary")?,
    };
    let binary_len =
        std::fs::metadata(&binary).with_context(|| format!("reading the binary {}", binary.display()))?.len();
    let groups = by_login(hosts);
    for (login, ws) in &groups {
        if ws.len() > 1 && ws.iter().any(|h| h.memory.is_none() || h.cores.is_none()) {
            eprintln!(
                "warning: {login} runs {} workers, not all with cores= and memory=: each may use every CPU and 85% of the memory",
                ws.len()
            );
        }
    }
    let advertise: Vec<Option<SocketAddr>> = hosts.iter().map(|h| advertise_addr(ssh, h)).collect();
    for (h, ad) in hosts.iter().zip(&advertise) {
        if ad.is_none() {
            eprintln!(
                "warning: {} (line {}) does not resolve here; the worker will advertise the address it routes to the coordinator from (give advertise=IP:PORT to choose)",
                h.host, h.line
            );
        }
    }

    if a.dry_run {
        let redacted: Vec<(&str, String)> =
            certs_text.iter().map(|(f, _)| (*f, format!("<contents of {}>", cluster.join(f).display()))).collect();
        println!(
            "# coordinator {coordinator}, binary {} ({}), remote folder {}",
            binary.display(),
            ui::bytes(binary_len),
            a.remote_dir
        );
        for (login, ws) in &groups {
            println!("\n# {login}: check the architecture and the installed binary");
            println!("{}\n  SCRIPT:\n{}", ssh.show(ws[0], None), indent(&probe_script(dir)));
            println!("# {login}: install the certificates and (when it differs) the binary");
            println!(
                "{}\n  SCRIPT:\n{}",
                ssh.show(ws[0], Some(&binary)),
                indent(&install_script(dir, &redacted, Some(binary_len)))
            );
            for h in ws {
                let i = hosts.iter().position(|x| std::ptr::eq(x, *h)).unwrap();
                println!("# {login}: start worker {}", h.name);
                let script = start_script(dir, &h.name, &worker_args(h, coordinator, advertise[i]));
                println!("{}\n  SCRIPT:\n{}", ssh.show(h, None), indent(&script));
            }
        }
        println!("# then wait until the coordinator at {coordinator} reports {} workers healthy", hosts.len());
        return Ok(());
    }

    let rt = runtime()?;
    let client = rt
        .block_on(CoordinatorClient::connect(coordinator, cluster))
        .with_context(|| format!("connecting to the coordinator at {coordinator} from here: is it running (embtune coordinator --listen 0.0.0.0:{} --cluster {} ...), and is {} its cluster folder?", coordinator.port(), cluster.display(), cluster.display()))?;

    let before = rt.block_on(client.status()).context("asking the coordinator for its workers")?;
    let local_arch = elf_arch(&binary);
    let local_sum = sha256(&binary);
    let t0 = Instant::now();
    let results: Vec<Result<Vec<Result<Launched>>>> = std::thread::scope(|s| {
        let handles: Vec<_> = groups
            .iter()
            .map(|(login, ws)| {
                let (certs_text, binary, advertise, local_sum, before) = (&certs_text, &binary, &advertise, &local_sum, &before);
                s.spawn(move || -> Result<Vec<Result<Launched>>> {
                    let first = ws[0];
                    let probe = ssh.check(first, "checking the host", ssh.run(first, &probe_script(dir), None)?)?;
                    let mut lines = probe.lines();
                    let (arch, sum) = (lines.next().unwrap_or("").trim(), lines.next().unwrap_or("none").trim());
                    if let Some(la) = local_arch
                        && !arch.is_empty()
                        && arch != la
                        && !(arch == "arm64" && la == "aarch64")
                    {
                        bail!(
                            "{login} is {arch} but {} is built for {la}: build embtune for {arch} (cargo build --release --target {arch}-unknown-linux-gnu) and pass --binary",
                            binary.display()
                        );
                    }
                    let copy = local_sum.as_deref() != Some(sum);
                    if copy {
                        eprintln!("{login}: copying {} ({}) to {}", binary.display(), ui::bytes(binary_len), a.remote_dir);
                    } else {
                        eprintln!("{login}: the binary there is already this one");
                    }
                    let script = install_script(dir, certs_text, copy.then_some(binary_len));
                    let out = ssh.run(first, &script, copy.then_some(binary.as_path()))?;
                    match out.status.code() {
                        Some(EXIT_SHORT_COPY) => bail!(
                            "copying the binary to {login}:{} failed: {}; is the disk full? (df -h there), or choose another --remote-dir",
                            a.remote_dir,
                            String::from_utf8_lossy(&out.stderr).trim()
                        ),
                        Some(EXIT_NO_RUN) => bail!(
                            "{} does not run on {login}: {}\n  build embtune on (or for) a system no newer than that host's, or statically (--target x86_64-unknown-linux-musl), and pass --binary",
                            binary.display(),
                            tail(&String::from_utf8_lossy(&out.stderr), 5).trim()
                        ),
                        _ => {
                            ssh.check(first, &format!("installing embtune and the certificates in {}", a.remote_dir), out)
                                .map_err(|e| {
                                    anyhow!("{e:#}\n  check that the folder is writable and the disk has room, or choose another --remote-dir")
                                })?;
                        }
                    }
                    // Start the host's workers side by side (a restart waits for the old process).
                    let started: Vec<Result<Launched>> = std::thread::scope(|sc| {
                        let hs: Vec<_> = ws
                            .iter()
                            .map(|h| {
                                sc.spawn(move || -> Result<Launched> {
                                    let i = hosts.iter().position(|x| std::ptr::eq(x, *h)).unwrap();
                                    let script = start_script(dir, &h.name, &worker_args(h, coordinator, advertise[i]));
                                    let out =
                                        ssh.check(h, &format!("starting worker {}", h.name), ssh.run(h, &script, None)?)?;
                                    for l in out.lines().filter(|l| l.starts_with("restarting")) {
                                        eprintln!("{login}: {}: {l}", h.name);
                                    }
                                    let pid =
                                        out.lines().find_map(|l| l.strip_prefix("pid ")).unwrap_or("").trim().to_string();
                                    eprintln!(
                                        "{login}: started {} on port {} (pid {}), log {}/logs/{}.log",
                                        h.name,
                                        h.port,
                                        if pid.is_empty() { "?" } else { &pid },
                                        a.remote_dir,
                                        h.name
                                    );
                                    let mut l =
                                        Launched { h, advertise: advertise[i], pid, started: Instant::now(), stale: false };
                                    l.stale = before.workers.iter().any(|w| w.healthy && is_slot(w, &l));
                                    Ok(l)
                                })
                            })
                            .collect();
                        hs.into_iter().map(|j| j.join().unwrap_or_else(|_| Err(anyhow!("a start thread panicked")))).collect()
                    });
                    Ok(started)
                })
            })
            .collect();
        handles.into_iter().map(|j| j.join().unwrap_or_else(|_| Err(anyhow!("a launch thread panicked")))).collect()
    });
    let mut launched = Vec::new();
    let mut errors = Vec::new();
    for ((login, _), r) in groups.iter().zip(results) {
        match r {
            Ok(v) => {
                for w in v {
                    match w {
                        Ok(l) => launched.push(l),
                        Err(e) => errors.push(format!("{login}: {e:#}")),
                    }
                }
            }
            Err(e) => errors.push(format!("{login}: {e:#}")),
        }
    }
    if !errors.is_empty() {
        let more = if launched.is_empty() {
            String::new()
        } else {
            format!(
                "\n{} workers did start and keep running; stop them with `embtune launch --stop --hosts {}`",
                launched.len(),
                a.hosts.display()
            )
        };
        bail!("launching failed:\n{}{more}", errors.join("\n"));
    }

    // Wait for the coordinator to report each of them healthy; look at the hosts now and then.
    let timeout = Duration::from_secs_f64(a.timeout.max(1.0));
    // A stale record looks healthy until the coordinator misses the old process's heartbeats.
    let healthy = |w: &WorkerInfo, l: &Launched| {
        w.healthy && is_slot(w, l) && (!l.stale || l.started.elapsed() > Duration::from_secs(3))
    };
    let mut last_check = Instant::now();
    let status = loop {
        let s = rt.block_on(client.status()).context("asking the coordinator for its workers")?;
        let pending: Vec<&Launched> = launched.iter().filter(|l| !s.workers.iter().any(|w| healthy(w, l))).collect();
        if pending.is_empty() {
            break s;
        }
        let late = t0.elapsed() > timeout;
        if late || last_check.elapsed() > Duration::from_secs(5) {
            last_check = Instant::now();
            let checks: Vec<(&Launched, Result<String>)> = std::thread::scope(|sc| {
                let hs: Vec<_> = pending
                    .iter()
                    .map(|l| {
                        (
                            *l,
                            sc.spawn(|| {
                                ssh.check(
                                    l.h,
                                    "checking the worker",
                                    ssh.run(l.h, &check_script(dir, &l.h.name), None)?,
                                )
                            }),
                        )
                    })
                    .collect();
                hs.into_iter().map(|(l, j)| (l, j.join().unwrap_or_else(|_| Err(anyhow!("panicked"))))).collect()
            });
            let mut bad = Vec::new();
            for (l, r) in checks {
                let text = match r {
                    Ok(t) => t,
                    Err(e) => format!("exited\n---\n(could not look: {e:#})"),
                };
                let (state, log) = text.split_once("---\n").unwrap_or((&text, ""));
                let exited = state.trim() == "exited";
                if !(exited || late) {
                    continue;
                }
                let registered = s.workers.iter().find(|w| is_slot(w, l));
                let why = if exited {
                    "exited".to_string()
                } else if let Some(w) = registered {
                    format!(
                        "is running and registered, but the coordinator cannot reach it at {}: open UDP port {} on {} to the coordinator, or give advertise=IP:PORT",
                        w.addr, l.h.port, l.h.host
                    )
                } else {
                    format!(
                        "is running (pid {}) but has not registered within {timeout:?}: can {} reach the coordinator at {coordinator} over UDP? (a firewall, or --coordinator given as an address only this machine uses)",
                        l.pid, l.h.host
                    )
                };
                bad.push(format!(
                    "worker {} on {} (line {}) {why}\n  last lines of {}/logs/{}.log:\n{}",
                    l.h.name,
                    l.h.login(),
                    l.h.line,
                    a.remote_dir,
                    l.h.name,
                    indent(log.trim_end())
                ));
            }
            if !bad.is_empty() {
                bail!(
                    "{} of {} launched workers are not serving:\n{}\nfix the cause and run launch again (it restarts the workers), or stop them with `embtune launch --stop --hosts {}`",
                    bad.len(),
                    launched.len(),
                    bad.join("\n"),
                    a.hosts.display()
                );
            }
        }
        std::thread::sleep(Duration::from_millis(250));
    };
    let mut t = ui::table(&["id", "name", "address", "healthy", "cores", "memory"]);
    for l in &launched {
        if let Some(w) = status.workers.iter().find(|w| healthy(w, l)) {
            t.add_row(vec![
                w.id.to_string(),
                w.name.clone(),
                w.addr.clone(),
                "yes".into(),
                w.cores.to_string(),
                ui::bytes(w.memory_bytes),
            ]);
        }
    }
    println!("{t}");
    eprintln!(
        "{} workers healthy after {:.1}s; {} healthy in all. Next:\n  embtune cluster status --coordinator {coordinator} --cluster {}\n  embtune launch --stop --hosts {}",
        launched.len(),
        t0.elapsed().as_secs_f64(),
        status.workers.iter().filter(|w| w.healthy).count(),
        cluster.display(),
        a.hosts.display()
    );
    Ok(())
}

fn stop(a: &LaunchArgs, ssh: &Ssh, dir: &str, hosts: &[HostLine]) -> Result<()> {
    if a.dry_run {
        for h in hosts {
            println!("# {}: stop worker {}", h.login(), h.name);
            println!("{}\n  SCRIPT:\n{}", ssh.show(h, None), indent(&stop_script(dir, &h.name)));
        }
        return Ok(());
    }
    let results: Vec<(&HostLine, Result<String>)> = std::thread::scope(|s| {
        let hs: Vec<_> = hosts
            .iter()
            .map(|h| {
                (
                    h,
                    s.spawn(move || {
                        ssh.check(
                            h,
                            &format!("stopping worker {}", h.name),
                            ssh.run(h, &stop_script(dir, &h.name), None)?,
                        )
                    }),
                )
            })
            .collect();
        hs.into_iter().map(|(h, j)| (h, j.join().unwrap_or_else(|_| Err(anyhow!("a stop thread panicked"))))).collect()
    });
    let mut errors = Vec::new();
    for (h, r) in results {
        match r {
            Ok(out) => println!("{} on {}: {}", h.name, h.login(), out.trim().replace('\n', "; ")),
            Err(e) => errors.push(format!("{} on {}: {e:#}", h.name, h.login())),
        }
    }
    if !errors.is_empty() {
        bail!("could not stop {} of {} workers:\n{}", errors.len(), hosts.len(), errors.join("\n"));
    }
    Ok(())
}
