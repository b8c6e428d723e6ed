//! The cluster commands: `cluster init|cert|status|netbench`, `coordinator` and `worker`
//! (`up` is in `up.rs`).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand};

use embtune_client::CoordinatorClient;
use embtune_coordinator::server::{Coordinator, CoordinatorConfig};
use embtune_transport::certs;
use embtune_worker::machine::{MachineInfo, parse_cpu_list};
use embtune_worker::server::WorkerConfig;

use crate::ui;

#[derive(Subcommand, Debug)]
pub enum ClusterCmd {
    /// Create a cluster CA and a node certificate in DIR; every process of the cluster is
    /// started with `--cluster DIR` (copy the folder to every machine).
    Init {
        /// The folder to create (the CA, and the node certificate every process may use).
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
    },
    /// Issue another node certificate signed by the cluster CA (e.g. one per Kubernetes pod).
    Cert {
        /// The cluster folder holding the CA (`cluster init --out DIR`).
        #[arg(long, value_name = "DIR")]
        cluster: PathBuf,
        /// The node's name, written into the certificate.
        #[arg(long)]
        name: String,
        /// Writes PREFIX.crt and PREFIX.key.
        #[arg(long, value_name = "PREFIX")]
        out: PathBuf,
    },
    /// Measure the transport beside plain TCP on loopback, in one run: round trip and
    /// streaming throughput of responses of --size bytes.
    Netbench {
        /// Response size, bytes.
        #[arg(long, default_value_t = 1 << 20)]
        size: usize,
        /// Rounds; each measures every transport once, in turn.
        #[arg(long, default_value_t = 5)]
        rounds: usize,
        /// Seconds per round (split between the four measurements).
        #[arg(long, default_value_t = 2.0)]
        round_secs: f64,
        /// Requests in flight for the throughput figures.
        #[arg(long, default_value_t = 4)]
        inflight: usize,
        /// Also measure QUIC over this many connections: one response fetched as that many
        /// concurrent stripes (round trip), and the requests in flight dealt over them
        /// (throughput). Each connection seals and opens its packets on its own thread.
        #[arg(long, default_value_t = 1)]
        connections: usize,
        /// Print JSON (every figure of every round) instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// The workers the coordinator knows: id, address, health, cores, load.
    Status {
        #[command(flatten)]
        target: Target,
        /// Print JSON (the coordinator's view of every worker) instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Stop the deployment the workers are making (a plan of tens of gigabytes takes a while
    /// to fill); the plan served before it stays active. The command that started the
    /// deployment then fails with "cancelled". Ctrl-C in that command does the same.
    CancelDeploy {
        #[command(flatten)]
        target: Target,
    },
}

/// How to reach a running coordinator.
#[derive(Args, Debug, Clone)]
pub struct Target {
    /// The coordinator's QUIC address (`embtune up` prints it).
    #[arg(long, value_name = "HOST:PORT")]
    pub coordinator: SocketAddr,
    /// The cluster's certificate folder (`embtune up` keeps it in DATA_DIR/cluster).
    #[arg(long, value_name = "DIR")]
    pub cluster: PathBuf,
}

impl Target {
    /// A client for control requests, over the default lanes.
    pub async fn client(&self) -> Result<CoordinatorClient> {
        self.client_lanes(embtune_transport::lanes::DEFAULT_LANES).await
    }

    /// A client over `lanes` connections, for queries the coordinator relays.
    pub async fn client_lanes(&self, lanes: usize) -> Result<CoordinatorClient> {
        CoordinatorClient::connect_lanes(self.coordinator, &self.cluster, lanes).await.with_context(|| {
            format!(
                "connecting to the coordinator at {}; is it running, and is {} its cluster folder?",
                self.coordinator,
                self.cluster.display()
            )
        })
    }
}

pub fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread().enable_all().build().context("starting the async runtime")
}

pub fn run(cmd: ClusterCmd) -> Result<()> {
    match cmd {
        ClusterCmd::Init { out } => {
            certs::init_cluster(&out)?;
            println!("cluster CA and node certificate written to {}", out.display());
            println!("start processes with --cluster {}; copy the folder to every machine of the cluster", out.display());
            Ok(())
        }
        ClusterCmd::Cert { cluster, name, out } => {
            let (c, k) = (out.with_extension("crt"), out.with_extension("key"));
            certs::issue(&cluster, &name, &c, &k)?;
            println!("wrote {} and {}", c.display(), k.display());
            Ok(())
        }
        ClusterCmd::Netbench { size, rounds, round_secs, inflight, connections, json } => runtime()?.block_on(async {
            let dir = tempfile::tempdir()?;
            certs::init_cluster(dir.path())?;
            let id = certs::load(dir.path(), None, None)?;
            let r = embtune_transport::netbench::run(&id, "127.0.0.1".parse().unwrap(), size, rounds.max(1), Duration::from_secs_f64(round_secs), inflight, connections).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&r)?);
            } else {
                let mut t = ui::table(&["transport", "round trip (median)", "throughput (median)"]);
                t.add_row(vec!["TCP, plain".into(), ui::us(r.tcp_rtt_us), format!("{:.2} GB/s", r.tcp_bytes_per_s / 1e9)]);
                t.add_row(vec!["QUIC + TLS, embtune frames".into(), ui::us(r.quic_rtt_us), format!("{:.2} GB/s", r.quic_bytes_per_s / 1e9)]);
                if let (Some(rtt), Some(bw)) = (r.quic_striped_rtt_us, r.quic_multi_bytes_per_s) {
                    t.add_row(vec![format!("QUIC + TLS, {} connections", r.connections), format!("{} (striped)", ui::us(rtt)), format!("{:.2} GB/s", bw / 1e9)]);
                }
                println!("responses of {}, {} in flight for throughput, {} rounds", ui::bytes(size as u64), inflight, r.rounds);
                println!("{t}");
                println!("QUIC / TCP throughput: {:.2}", r.ratio);
            }
            Ok(())
        }),
        ClusterCmd::Status { target, json } => runtime()?.block_on(async {
            let s = target.client().await?.status().await?;
            if json {
                let workers: Vec<serde_json::Value> = s.workers.iter().map(|w| serde_json::json!({
                    "id": w.id, "addr": w.addr, "healthy": w.healthy, "cores": w.cores, "name": w.name,
                    "memory_bytes": w.memory_bytes, "bytes_held": w.bytes_held, "queue": w.queue, "requests": w.requests,
                    "gpu": w.gpu, "deploying": w.deploying,
                })).collect();
                println!("{}", serde_json::to_string_pretty(&serde_json::json!({
                    "workers": workers, "plan_id": s.plan_id, "model": s.model, "queries": s.queries, "query_errors": s.query_errors,
                    "loadgens": s.loadgens,
                }))?);
            } else {
                println!("model {} (plan {}), {} queries served, {} failed",
                    s.model.as_deref().unwrap_or("-"), s.plan_id.map_or("-".into(), |p| p.to_string()), s.queries, s.query_errors);
                let mut t = ui::table(&["id", "name", "address", "healthy", "cores", "tables held", "queue", "requests"]);
                for w in &s.workers {
                    // A GPU worker's one core is its device.
                    let cores = w.gpu.as_ref().map_or(w.cores.to_string(), |g| format!("GPU: {g}"));
                    t.add_row(vec![w.id.to_string(), w.name.clone(), w.addr.clone(), if w.healthy { "yes".into() } else { "NO".into() },
                        cores, ui::bytes(w.bytes_held), w.queue.to_string(), w.requests.to_string()]);
                }
                println!("{t}");
                for w in &s.workers {
                    if let Some(d) = &w.deploying {
                        println!("worker {} is deploying plan {}: {} of {} in {:.0}s", w.id, d.plan_id,
                            ui::bytes(d.done_bytes), ui::bytes(d.total_bytes), d.elapsed_ms as f64 / 1e3);
                    }
                }
                if !s.loadgens.is_empty() {
                    let names: Vec<String> = s.loadgens.iter().map(|l| format!("{} ({} cores)", l.name, l.cores)).collect();
                    println!("load generators: {}", names.join(", "));
                }
            }
            Ok(())
        }),
        ClusterCmd::CancelDeploy { target } => runtime()?.block_on(async {
            let client = target.client().await?;
            let busy = client.status().await?.workers.iter().filter(|w| w.deploying.is_some()).count();
            client.cancel_deploy().await?;
            if busy == 0 {
                println!("no worker was deploying; nothing changed");
            } else {
                println!("asked {busy} deploying workers to stop; the plan served before stays active");
            }
            Ok(())
        }),
    }
}

/// Deploys a plan through the coordinator, showing the workers' progress (from their
/// heartbeats) as a bar once the deployment outlasts a second, in bytes of rows filled. On
/// SIGINT or SIGTERM it asks the workers to stop the deployment and fails, so the cluster is
/// left serving the plan it served before instead of finishing tens of gigabytes nobody waits
/// for.
pub async fn deploy_watched(
    client: &CoordinatorClient,
    spec: &embtune_workloads::ModelSpec,
    plan: &embtune_protocol::Plan,
    quiet: bool,
) -> Result<embtune_protocol::wire::DeployedInfo> {
    let deploy = client.deploy(spec, plan);
    tokio::pin!(deploy);
    let mut bar: Option<ui::Progress> = None;
    let mut tick = tokio::time::interval(Duration::from_millis(500));
    let started = std::time::Instant::now();
    let result = loop {
        tokio::select! {
            r = &mut deploy => break r.context("deploying the plan"),
            _ = shutdown_signal() => {
                eprintln!("interrupted: asking the workers to stop the deployment");
                if let Err(e) = client.cancel_deploy().await {
                    eprintln!("could not reach the coordinator to cancel ({e}); the workers finish the deployment");
                }
                bail!("deployment interrupted; the cluster serves the plan it served before");
            }
            _ = tick.tick() => {
                if started.elapsed() < Duration::from_secs(1) {
                    continue;
                }
                let Ok(s) = client.status().await else { continue };
                let (done, total) = s.workers.iter().filter_map(|w| w.deploying.as_ref())
                    .fold((0u64, 0u64), |(d, t), p| (d + p.done_bytes, t + p.total_bytes));
                if total == 0 {
                    continue;
                }
                let b = bar.get_or_insert_with(|| {
                    let b = ui::bar(total, quiet);
                    b.set_prefix("deploying");
                    b
                });
                b.set_length(total);
                b.set_position(done);
                b.set_message(format!("{} of {}", ui::bytes(done), ui::bytes(total)));
            }
        }
    };
    if let Some(b) = bar {
        b.finish_and_clear();
    }
    result
}

#[derive(Args, Debug)]
pub struct CoordinatorArgs {
    /// QUIC address for workers and clients.
    #[arg(long, default_value = "127.0.0.1:7700", value_name = "ADDR")]
    pub listen: SocketAddr,
    /// The cluster's certificate folder (`embtune cluster init --out DIR`).
    #[arg(long, value_name = "DIR")]
    pub cluster: PathBuf,
    /// Where the coordinator keeps its state (tuning results) and writes `coordinator.json`.
    #[arg(long, value_name = "DIR")]
    pub data_dir: PathBuf,
    /// HTTP address of the dashboard and metrics (loopback by default).
    #[arg(long, default_value = "127.0.0.1:7780", value_name = "ADDR")]
    pub http: SocketAddr,
    /// Token the dashboard, API and metrics require (as `Authorization: Bearer TOKEN` or
    /// `?token=TOKEN`); required when --http is not a loopback address.
    #[arg(long, env = "EMBTUNE_HTTP_TOKEN", value_name = "TOKEN")]
    pub http_token: Option<String>,
    #[command(flatten)]
    pub limits: ServeArgs,
    #[command(flatten)]
    pub lanes: crate::flags::LanesArg,
    #[command(flatten)]
    pub replan: ReplanArgs,
}

/// Live re-planning: the coordinator watches the traffic the workers serve and moves to a
/// better plan while serving.
#[derive(Args, Debug, Clone)]
pub struct ReplanArgs {
    /// What the coordinator does when the live traffic no longer fits the deployed plan:
    /// `off` watches nothing; `suggest` judges the traffic every --replan-interval and shows a
    /// better plan (dashboard, `embtune plan live`) without deploying it; `auto` also deploys
    /// it beside the old one (no query fails while clients move), measures it over the next
    /// interval and rolls back a switch that measured worse.
    #[arg(long, default_value = "off", value_name = "MODE")]
    pub replan: embtune_protocol::replan::ReplanMode,
    /// Propose a new plan only when the cost model predicts at least this gain for the live
    /// traffic (1.1 = 10% more batches per second).
    #[arg(long, default_value_t = 1.1, value_name = "RATIO")]
    pub replan_gain: f64,
    /// Seconds of traffic judged at a time, and how long a new plan is measured before it is
    /// kept or rolled back.
    #[arg(long, default_value_t = 10.0, value_name = "SECS")]
    pub replan_interval: f64,
}

impl ReplanArgs {
    pub fn config(&self) -> Result<embtune_coordinator::replan::ReplanConfig> {
        if !(self.replan_gain >= 1.0 && self.replan_gain.is_finite()) {
            bail!("--replan-gain must be at least 1 (1.1 proposes plans predicted 10% faster)");
        }
        if !(self.replan_interval >= 0.5 && self.replan_interval <= 86_400.0) {
            bail!("--replan-interval must be between 0.5 and 86400 seconds");
        }
        Ok(embtune_coordinator::replan::ReplanConfig {
            mode: self.replan,
            gain: self.replan_gain,
            interval: Duration::from_secs_f64(self.replan_interval),
            ..Default::default()
        })
    }

    /// The same flags for a coordinator this process starts.
    pub fn to_args(&self) -> Vec<String> {
        vec![
            "--replan".into(),
            self.replan.name().into(),
            "--replan-gain".into(),
            self.replan_gain.to_string(),
            "--replan-interval".into(),
            self.replan_interval.to_string(),
        ]
    }
}

/// The limits a serving process keeps against its peers (`embtune_transport::guard`).
#[derive(Args, Debug, Clone)]
pub struct ServeArgs {
    /// QUIC connections served at once; more are refused during the handshake. Every worker
    /// and client holds one per lane (`--lanes`, default 4).
    #[arg(long, env = "EMBTUNE_MAX_CONNECTIONS", value_name = "N",
          default_value_t = embtune_transport::guard::DEFAULT_MAX_CONNECTIONS)]
    pub max_connections: usize,
}

impl ServeArgs {
    /// Sets this process's limits; before anything serves.
    pub fn apply(&self) -> Result<()> {
        if self.max_connections == 0 {
            bail!("--max-connections must be at least 1");
        }
        let limits =
            embtune_transport::guard::ServeLimits { max_connections: self.max_connections, ..Default::default() };
        embtune_transport::guard::configure(limits);
        Ok(())
    }
}

/// Where a coordinator says it listens, for `up` and for tools that only know the data dir.
#[derive(serde::Serialize, serde::Deserialize, Debug)]
pub struct CoordinatorFile {
    pub quic: SocketAddr,
    pub http: SocketAddr,
    pub pid: u32,
}

pub const COORDINATOR_FILE: &str = "coordinator.json";

pub fn coordinator(a: CoordinatorArgs) -> Result<()> {
    a.limits.apply()?;
    runtime()?.block_on(async move {
        std::fs::create_dir_all(&a.data_dir).with_context(|| format!("creating {}", a.data_dir.display()))?;
        let mut cfg = CoordinatorConfig::new(a.listen, a.cluster.clone(), a.data_dir.clone());
        cfg.replan = a.replan.config()?;
        cfg.lanes = a.lanes.lanes;
        let c = Coordinator::start(cfg).await?;
        let http = embtune_dashboards::serve(c.clone(), a.http, a.http_token.clone()).await?;
        let file = CoordinatorFile { quic: c.local_addr(), http, pid: std::process::id() };
        let path = a.data_dir.join(COORDINATOR_FILE);
        std::fs::write(&path, serde_json::to_string_pretty(&file)?)
            .with_context(|| format!("writing {}", path.display()))?;
        eprintln!("coordinator: {}", file.quic);
        eprintln!("dashboard: http://{}/", file.http);
        shutdown_signal().await;
        let _ = std::fs::remove_file(&path);
        Ok(())
    })
}

#[derive(Args, Debug)]
pub struct WorkerArgs {
    /// QUIC address the worker serves on (port 0 picks one).
    #[arg(long, default_value = "127.0.0.1:0", value_name = "ADDR")]
    pub listen: SocketAddr,
    /// The cluster's certificate folder (`embtune cluster init --out DIR`).
    #[arg(long, value_name = "DIR")]
    pub cluster: PathBuf,
    /// The coordinator to register with (a name or an address).
    #[arg(long, value_name = "HOST:PORT")]
    pub coordinator: String,
    /// CPUs for the engine's core threads, e.g. 0-3 (default: the CPUs this process may run
    /// on, which respects taskset and container cpusets).
    #[arg(long, value_name = "LIST")]
    pub cores: Option<String>,
    /// Bytes of tables this worker may hold (default: 85% of available memory, or of the
    /// container's memory limit if lower).
    #[arg(long, value_name = "BYTES")]
    pub memory_limit: Option<u64>,
    /// A name for reports (default: the host name and port).
    #[arg(long)]
    pub name: Option<String>,
    /// The address the coordinator should dial (a name or an address; default: the listen
    /// address, or the local address that routes to the coordinator).
    #[arg(long, value_name = "HOST:PORT")]
    pub advertise: Option<String>,
    /// Do not ask the kernel for transparent huge pages for the tables.
    #[arg(long)]
    pub no_huge_pages: bool,
    /// Skip the start-up calibration sweep (the cost model then starts from defaults).
    #[arg(long)]
    pub no_calibrate: bool,
    /// Serve this worker's tables from CUDA device N instead of the CPU cores (a build with
    /// `--features gpu`). The worker registers as one core, the device, with the device's
    /// free memory; plans place whole tables or one shard of a table on it.
    #[arg(long, value_name = "N")]
    pub gpu: Option<usize>,
    /// Count the rows of one request in N into the per-table hot-row summaries the
    /// coordinator's live re-planner reads (`--replan`); 0 turns the summaries off (look-ups and
    /// samples per table are always counted: a few adds per request). Processes `embtune up`
    /// starts take it from EMBTUNE_TRAFFIC_SAMPLE.
    #[arg(long, env = "EMBTUNE_TRAFFIC_SAMPLE", value_name = "N",
          default_value_t = embtune_worker::server::DEFAULT_TRAFFIC_SAMPLE)]
    pub traffic_sample: u32,
    #[command(flatten)]
    pub isa: crate::flags::IsaArg,
    #[command(flatten)]
    pub limits: ServeArgs,
}

/// Resolves `HOST:PORT` (a name or an address), preferring IPv4.
pub fn resolve(s: &str) -> Result<SocketAddr> {
    use std::net::ToSocketAddrs;
    let addrs: Vec<SocketAddr> =
        s.to_socket_addrs().with_context(|| format!("cannot resolve `{s}`: give HOST:PORT"))?.collect();
    addrs
        .iter()
        .find(|a| a.is_ipv4())
        .or(addrs.first())
        .copied()
        .with_context(|| format!("`{s}` resolves to no address"))
}

/// The CPUs this process may run on (its affinity mask).
pub(crate) fn allowed_cpus() -> Vec<usize> {
    match core_affinity::get_core_ids() {
        Some(ids) if !ids.is_empty() => ids.into_iter().map(|c| c.id).collect(),
        _ => (0..MachineInfo::detect().cpus).collect(),
    }
}

/// The container's memory limit (cgroup v2 or v1), if it has one.
fn cgroup_memory_limit() -> Option<u64> {
    for f in ["/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"] {
        if let Ok(s) = std::fs::read_to_string(f)
            && let Ok(v) = s.trim().parse::<u64>()
            && v < (1 << 60)
        {
            return Some(v);
        }
    }
    None
}

pub fn worker(a: WorkerArgs) -> Result<()> {
    a.limits.apply()?;
    let m = MachineInfo::detect();
    let cpus = match &a.cores {
        Some(l) => parse_cpu_list(l).map_err(anyhow::Error::msg)?,
        None => allowed_cpus(),
    };
    let available = m.mem_available.min(cgroup_memory_limit().unwrap_or(u64::MAX));
    let cfg = WorkerConfig {
        listen: a.listen,
        advertise: a.advertise.as_deref().map(resolve).transpose()?,
        coordinator: resolve(&a.coordinator)?,
        cluster: a.cluster,
        cpus,
        memory_limit: a.memory_limit.unwrap_or((available as f64 * 0.85) as u64),
        name: a.name.unwrap_or_else(|| format!("{}:{}", hostname(), a.listen.port())),
        huge_pages: !a.no_huge_pages,
        calibrate: !a.no_calibrate,
        gpu: a.gpu,
        traffic_sample: a.traffic_sample,
        isa: a.isa.isa,
    };
    // The engine's threads do the work; the async threads only move frames.
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    rt.block_on(async move {
        tokio::select! {
            r = embtune_worker::server::run(cfg) => r.map_err(anyhow::Error::msg),
            _ = shutdown_signal() => Ok(()),
        }
    })
}

#[derive(Args, Debug)]
pub struct LoadgenArgs {
    /// The coordinator to register with (a name or an address).
    #[arg(long, value_name = "HOST:PORT")]
    pub coordinator: String,
    /// The cluster's certificate folder.
    #[arg(long, value_name = "DIR")]
    pub cluster: PathBuf,
    /// Engine threads for the client-resident tables this client pools itself.
    #[arg(long, default_value_t = 1, value_name = "N")]
    pub cores: usize,
    /// Async threads that send queries and open replies (default: the CPUs this process may
    /// run on, at least two).
    #[arg(long, value_name = "N")]
    pub threads: Option<usize>,
    /// A name for reports (default: the host name and process id).
    #[arg(long)]
    pub name: Option<String>,
    #[command(flatten)]
    pub lanes: crate::flags::LanesArg,
}

pub fn loadgen(a: LoadgenArgs) -> Result<()> {
    let cfg = embtune_client::service::LoadgenConfig {
        coordinator: resolve(&a.coordinator)?,
        cluster: a.cluster,
        name: a.name.unwrap_or_else(|| format!("{}:{}", hostname(), std::process::id())),
        client: embtune_client::ClientConfig {
            local_cores: a.cores.max(1),
            lanes: a.lanes.lanes,
            ..Default::default()
        },
    };
    let threads = a.threads.unwrap_or_else(|| allowed_cpus().len()).max(2);
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(threads).enable_all().build()?;
    rt.block_on(async move {
        tokio::select! {
            r = embtune_client::service::run(cfg) => r.map_err(anyhow::Error::msg),
            _ = shutdown_signal() => Ok(()),
        }
    })
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "worker".into())
}

/// Resolves on SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("a SIGTERM handler");
    let mut int = signal(SignalKind::interrupt()).expect("a SIGINT handler");
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
}

/// Whether process `pid` is running (a zombie, dead but not yet reaped, is not).
pub fn process_alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state follows the command name, which is in parentheses and may hold spaces.
        Ok(stat) => stat.rsplit_once(')').is_some_and(|(_, rest)| !rest.trim_start().starts_with(['Z', 'X'])),
        Err(_) => false,
    }
}

/// Reads `coordinator.json` in a data dir.
pub fn read_coordinator_file(data_dir: &Path) -> Result<CoordinatorFile> {
    let p = data_dir.join(COORDINATOR_FILE);
    let text = std::fs::read_to_string(&p)
        .with_context(|| format!("no running coordinator found: {} is missing", p.display()))?;
    Ok(serde_json::from_str(&text)?)
}

/// Waits for a child process to write `coordinator.json`, failing if the child exits first.
pub fn wait_for_coordinator(
    data_dir: &Path,
    child: &mut std::process::Child,
    timeout: Duration,
) -> Result<CoordinatorFile> {
    let t0 = std::time::Instant::now();
    loop {
        if let Ok(f) = read_coordinator_file(data_dir)
            && f.pid == child.id()
        {
            return Ok(f);
        }
        if let Some(status) = child.try_wait()? {
            bail!("the coordinator exited during start-up ({status}); see its log above");
        }
        if t0.elapsed() > timeout {
            bail!("the coordinator did not start within {timeout:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}
