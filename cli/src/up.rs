//! `embtune up`: a whole cluster on this machine, as real processes on loopback.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::Args;

use embtune_protocol::{Topology, WorkerShape};
use embtune_worker::machine::MachineInfo;
use embtune_workloads::BatchGenerator;

use crate::cluster::{Target, runtime, shutdown_signal, wait_for_coordinator};
use crate::plan_choice::{PlanChoice, StrategyChoice, memory_caps, resolve_plan};
use crate::workload::{WorkloadArgs, profile};

#[derive(Args, Debug)]
pub struct UpArgs {
    /// Worker processes to start.
    #[arg(long, default_value_t = 2)]
    pub workers: usize,
    /// Engine cores per worker (CPUs are dealt to workers in turn).
    #[arg(long, default_value_t = 1)]
    pub cores_per_worker: usize,
    /// Memory each worker may hold (e.g. 512M, 2G; default: 80% of what is available, shared).
    /// Set it below the model's size to emulate a cluster whose workers cannot each hold every
    /// table: strategies that do not fit are then refused, and plans must shard.
    #[arg(long, value_name = "SIZE", value_parser = crate::launch::parse_size)]
    pub worker_memory: Option<u64>,
    /// The model to deploy (default: criteo-kaggle at scale 0.01).
    #[command(flatten)]
    pub workload: WorkloadArgs,
    /// Where the cluster keeps its certificates (DIR/cluster), state and logs.
    #[arg(long, default_value = "embtune-data", value_name = "DIR")]
    pub data_dir: PathBuf,
    /// Strategy of the first plan (default auto).
    #[arg(long, value_name = "S", value_parser = StrategyChoice::parser())]
    pub strategy: Option<StrategyChoice>,
    /// Coordinator QUIC address (port 0 picks one).
    #[arg(long, default_value = "127.0.0.1:0")]
    pub listen: String,
    /// Dashboard address (port 0 picks one).
    #[arg(long, default_value = "127.0.0.1:0")]
    pub http: String,
    /// Token the dashboard requires; needed when --http is not loopback.
    #[arg(long, env = "EMBTUNE_HTTP_TOKEN", value_name = "TOKEN")]
    pub http_token: Option<String>,
    /// Start a tuning job of this many trials once the cluster is up (0: none); follow it on
    /// the dashboard or with `embtune results`.
    #[arg(long, default_value_t = 0, value_name = "N")]
    pub tune_trials: u32,
    /// Seconds per measurement round of that job.
    #[arg(long, default_value_t = 0.5)]
    pub tune_round_secs: f64,
    /// Also start a worker that serves its tables from CUDA device N (a build with
    /// `--features gpu`); plans then place tables on the GPU beside the CPU workers.
    #[arg(long, value_name = "N")]
    pub gpu: Option<usize>,
    /// Load generator processes to start (on the CPUs the workers leave): the tuning job
    /// measures with them, straight to the workers, and `embtune bench --loadgens N` can use
    /// them.
    #[arg(long, value_name = "L", default_value_t = 1)]
    pub loadgens: usize,
    /// Memory each client may give to client-resident tables (e.g. 256M): plans may keep small
    /// tables in the clients, whose pooled rows then never cross the network. 0 keeps every
    /// table on the workers.
    #[arg(long, value_name = "SIZE", default_value = "256M", value_parser = crate::launch::parse_size_or_zero)]
    pub client_memory: u64,
    #[command(flatten)]
    pub replan: crate::cluster::ReplanArgs,
}

/// The processes `up` started; stopped in reverse order when dropped.
struct Children(Vec<(String, Child)>);

impl Children {
    fn stop(&mut self) {
        for (_, c) in self.0.iter_mut().rev() {
            // SAFETY: kill(2) with SIGTERM on the pid of a child we started and have not reaped.
            unsafe { libc::kill(c.id() as i32, libc::SIGTERM) };
        }
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        for (name, c) in self.0.iter_mut() {
            loop {
                match c.try_wait() {
                    Ok(Some(_)) => break,
                    Ok(None) if std::time::Instant::now() < deadline => std::thread::sleep(Duration::from_millis(20)),
                    _ => {
                        tracing::warn!("{name} did not stop on SIGTERM; killing it");
                        let _ = c.kill();
                        let _ = c.wait();
                        break;
                    }
                }
            }
        }
        self.0.clear();
    }
}

impl Drop for Children {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A coordinator and worker processes on loopback, stopped when dropped.
///
/// Children run in a process group of their own, so that a terminal's Ctrl-C reaches only this
/// process, which stops them in order; each also gets SIGTERM from the kernel if this process
/// dies without stopping them (`PR_SET_PDEATHSIG`: even `kill -9` of `up` or `tune --local`
/// leaves no orphan). Until [`LocalCluster::handle_signals_yourself`] is called, SIGINT or
/// SIGTERM stops the children and ends this process (see [`SignalWatch`]).
pub struct LocalCluster {
    children: Children,
    pub file: crate::cluster::CoordinatorFile,
    pub cluster: PathBuf,
    pub data: PathBuf,
    /// How the coordinator was started, to start it again ([`LocalCluster::revive_coordinator`]).
    coordinator: CoordinatorLaunch,
    /// CPUs no worker was given: the coordinator's and the load generators'.
    spare: Vec<usize>,
    watch: SignalWatch,
}

/// What starting the coordinator takes.
struct CoordinatorLaunch {
    exe: PathBuf,
    token: Option<String>,
    spare: Vec<usize>,
    /// Flags passed on as they were given (live re-planning).
    extra: Vec<String>,
}

impl CoordinatorLaunch {
    fn command(&self, listen: &str, http: &str, cluster: &Path, data: &Path) -> Result<Command> {
        let mut coord = Command::new(&self.exe);
        coord.args(["coordinator", "--listen", listen, "--http", http]);
        coord.args(&self.extra);
        if let Some(t) = &self.token {
            coord.env("EMBTUNE_HTTP_TOKEN", t);
        }
        if !self.spare.is_empty() {
            pin_child(&mut coord, self.spare.clone());
        }
        coord
            .arg("--cluster")
            .arg(cluster)
            .arg("--data-dir")
            .arg(data)
            .stdin(Stdio::null())
            .stdout(log_file(data, "coordinator")?)
            .stderr(log_file(data, "coordinator")?);
        own_group_and_die_with_parent(&mut coord);
        Ok(coord)
    }
}

/// Appends to `data/logs/NAME.log`.
fn log_file(data: &Path, name: &str) -> Result<Stdio> {
    Ok(Stdio::from(
        std::fs::OpenOptions::new().create(true).append(true).open(data.join("logs").join(format!("{name}.log")))?,
    ))
}

/// Puts the child that `cmd` starts in a process group of its own and has the kernel send it
/// SIGTERM when the thread that started it dies. Commands start their children from the main
/// thread, which lives as long as the process.
fn own_group_and_die_with_parent(cmd: &mut Command) {
    use std::os::unix::process::CommandExt;
    let parent = std::process::id() as libc::pid_t;
    // SAFETY: the closure runs in the forked child before exec and calls only async-signal-safe
    // functions (setpgid, prctl, getppid, raise).
    unsafe {
        cmd.pre_exec(move || {
            libc::setpgid(0, 0);
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM);
            // The parent may have died between fork and prctl: then nobody will send the signal.
            if libc::getppid() != parent {
                libc::raise(libc::SIGTERM);
            }
            Ok(())
        });
    }
}

/// The exit status a caught SIGINT or SIGTERM asks for (130 or 143), 0 before one is caught.
/// Stopping the cluster makes the command's own calls fail (its coordinator is gone); `main`
/// reads this to exit with the signal's status instead of reporting that failure.
pub static INTERRUPTED: AtomicI32 = AtomicI32::new(0);

/// A thread that, on SIGINT or SIGTERM, stops a local cluster's processes and ends this one
/// (status 130 or 143, as the signal's default action would), while it is armed. Commands that
/// start a cluster are busy in calls that a signal would otherwise end without stopping it.
struct SignalWatch {
    pids: Arc<Mutex<Vec<u32>>>,
    armed: Arc<AtomicBool>,
}

impl SignalWatch {
    fn start() -> Result<SignalWatch> {
        let pids: Arc<Mutex<Vec<u32>>> = Default::default();
        let armed = Arc::new(AtomicBool::new(true));
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        // Registered here, before the thread runs, so no signal slips through in between.
        let (mut term, mut int) = rt.block_on(async {
            use tokio::signal::unix::{SignalKind, signal};
            anyhow::Ok((signal(SignalKind::terminate())?, signal(SignalKind::interrupt())?))
        })?;
        let (p, a) = (pids.clone(), armed.clone());
        std::thread::Builder::new().name("signals".into()).spawn(move || {
            rt.block_on(async move {
                loop {
                    let code = tokio::select! {
                        _ = term.recv() => 143,
                        _ = int.recv() => 130,
                    };
                    if !a.load(Ordering::Acquire) {
                        continue;
                    }
                    INTERRUPTED.store(code, Ordering::Release);
                    let pids = p.lock().unwrap().clone();
                    eprintln!("interrupted: stopping {} processes", pids.len());
                    stop_pids(&pids);
                    std::process::exit(code);
                }
            })
        })?;
        Ok(SignalWatch { pids, armed })
    }
}

/// SIGTERM to each process, the last started first, then SIGKILL to any still running after
/// five seconds; reaps them.
fn stop_pids(pids: &[u32]) {
    for &p in pids.iter().rev() {
        // SAFETY: kill(2) on the pid of a child this process started and has not reaped.
        unsafe { libc::kill(p as i32, libc::SIGTERM) };
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    for &p in pids {
        loop {
            let mut status = 0;
            // SAFETY: waitpid(2) on our own child, without blocking.
            let r = unsafe { libc::waitpid(p as i32, &mut status, libc::WNOHANG) };
            if r != 0 {
                break;
            }
            if std::time::Instant::now() > deadline {
                // SAFETY: as above.
                unsafe {
                    libc::kill(p as i32, libc::SIGKILL);
                    libc::waitpid(p as i32, &mut status, 0);
                }
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl LocalCluster {
    /// Starts a coordinator (data dir `data`, certificates in `data/cluster`, created if
    /// missing) and `workers` workers of `cores` cores each, CPUs dealt in turn; logs go to
    /// `data/logs`.
    pub fn start(
        data: &Path,
        workers: usize,
        cores: usize,
        listen: &str,
        http: &str,
        memory_each: u64,
    ) -> Result<LocalCluster> {
        Self::start_with_token(data, workers, cores, listen, http, memory_each, None, None, &[])
    }

    /// [`LocalCluster::start`] with a dashboard token and, with `gpu`, one more worker that
    /// serves from that CUDA device.
    #[allow(clippy::too_many_arguments)]
    pub fn start_with_token(
        data: &Path,
        workers: usize,
        cores: usize,
        listen: &str,
        http: &str,
        memory_each: u64,
        token: Option<&str>,
        gpu: Option<usize>,
        coordinator_args: &[String],
    ) -> Result<LocalCluster> {
        std::fs::create_dir_all(data.join("logs")).with_context(|| format!("creating {}", data.display()))?;
        let cluster = data.join("cluster");
        if !cluster.join(embtune_transport::certs::CA_KEY).exists() {
            embtune_transport::certs::init_cluster(&cluster)?;
        }
        let exe = std::env::current_exe().context("locating the embtune binary")?;
        // Workers take this process's CPUs in turn; any CPUs left over go to the coordinator, so
        // that routing and reduction do not steal cycles from the engines being measured.
        let allowed = crate::cluster::allowed_cpus();
        let taken = (workers * cores).min(allowed.len());
        let spare: Vec<usize> = allowed[taken..].to_vec();
        let log = |name: &str| log_file(data, name);
        let _ = std::fs::remove_file(data.join(crate::cluster::COORDINATOR_FILE));
        let mut children = Children(Vec::new());
        let watch = SignalWatch::start().context("watching for signals")?;
        let launch = CoordinatorLaunch {
            exe: exe.clone(),
            token: token.map(str::to_string),
            spare: spare.clone(),
            extra: coordinator_args.to_vec(),
        };
        let coord = launch.command(listen, http, &cluster, data)?.spawn().context("starting the coordinator")?;
        watch.pids.lock().unwrap().push(coord.id());
        children.0.push(("coordinator".into(), coord));
        let file = wait_for_coordinator(data, &mut children.0[0].1, Duration::from_secs(30))?;
        // Every worker registers with the coordinator over QUIC and logs to logs/LOG.log.
        let worker = |args: Vec<String>, log_name: &str, cpus: Option<Vec<usize>>| -> Result<std::process::Child> {
            let mut cmd = Command::new(&exe);
            cmd.args(["worker", "--listen", "127.0.0.1:0"])
                .args(args)
                .arg("--coordinator")
                .arg(file.quic.to_string())
                .arg("--cluster")
                .arg(&cluster)
                .stdin(Stdio::null())
                .stdout(log(log_name)?)
                .stderr(log(log_name)?);
            if let Some(c) = cpus {
                pin_child(&mut cmd, c);
            }
            own_group_and_die_with_parent(&mut cmd);
            let child = cmd.spawn()?;
            watch.pids.lock().unwrap().push(child.id());
            Ok(child)
        };
        for i in 0..workers {
            let list: Vec<String> = (0..cores).map(|k| allowed[(i * cores + k) % allowed.len()].to_string()).collect();
            let args = vec![
                "--name".into(),
                format!("w{i}"),
                "--cores".into(),
                list.join(","),
                "--memory-limit".into(),
                memory_each.to_string(),
            ];
            let w = worker(args, &format!("worker-{i}"), None).with_context(|| format!("starting worker {i}"))?;
            children.0.push((format!("worker {i}"), w));
        }
        if let Some(g) = gpu {
            // The device does the work; the worker's host threads share the spare CPUs with the
            // coordinator rather than take time from the CPU workers' engine cores.
            let args = vec!["--name".into(), format!("gpu{g}"), "--gpu".into(), g.to_string()];
            let cpus = (!spare.is_empty()).then(|| spare.clone());
            let w = worker(args, "worker-gpu", cpus).context("starting the GPU worker")?;
            children.0.push(("gpu worker".into(), w));
        }
        Ok(LocalCluster { children, file, cluster, data: data.to_path_buf(), coordinator: launch, watch, spare })
    }

    /// Starts `n` load generators (`embtune loadgen`), on the CPUs the workers left, if any;
    /// they log to `data/logs/loadgen-I.log`.
    pub fn start_loadgens(&mut self, n: usize) -> Result<()> {
        let exe = std::env::current_exe().context("locating the embtune binary")?;
        for i in 0..n {
            let name = format!("loadgen-{i}");
            let mut cmd = Command::new(&exe);
            cmd.args(["loadgen", "--name", &format!("lg{i}"), "--coordinator", &self.file.quic.to_string()])
                .arg("--cluster")
                .arg(&self.cluster)
                .stdin(Stdio::null())
                .stdout(log_file(&self.data, &name)?)
                .stderr(log_file(&self.data, &name)?);
            if !self.spare.is_empty() {
                pin_child(&mut cmd, self.spare.clone());
            }
            own_group_and_die_with_parent(&mut cmd);
            let child = cmd.spawn().with_context(|| format!("starting load generator {i}"))?;
            self.watch.pids.lock().unwrap().push(child.id());
            self.children.0.push((format!("load generator {i}"), child));
        }
        Ok(())
    }
    /// From now on the caller handles SIGINT and SIGTERM itself (and stops the cluster).
    pub fn handle_signals_yourself(&self) {
        self.watch.armed.store(false, Ordering::Release);
    }

    /// Starts the coordinator again if it has exited, on the addresses it had, so that the
    /// workers (left running) register with it again; it resumes its jobs from the store.
    /// Returns how the dead one exited, if it had.
    pub fn revive_coordinator(&mut self) -> Result<Option<std::process::ExitStatus>> {
        let Some(status) = self.children.0[0].1.try_wait()? else { return Ok(None) };
        eprintln!("the coordinator exited ({status}); starting it again");
        let (listen, http) = (self.file.quic.to_string(), self.file.http.to_string());
        let _ = std::fs::remove_file(self.data.join(crate::cluster::COORDINATOR_FILE));
        let child = self
            .coordinator
            .command(&listen, &http, &self.cluster, &self.data)?
            .spawn()
            .context("starting the coordinator again")?;
        self.watch.pids.lock().unwrap()[0] = child.id();
        self.children.0[0].1 = child;
        self.file = wait_for_coordinator(&self.data, &mut self.children.0[0].1, Duration::from_secs(60))?;
        Ok(Some(status))
    }

    pub fn target(&self) -> Target {
        Target { coordinator: self.file.quic, cluster: self.cluster.clone() }
    }

    pub fn processes(&self) -> usize {
        self.children.0.len()
    }

    pub fn stop(&mut self) {
        // The watch must not signal pids that are reaped (and may be reused) from here on.
        self.watch.pids.lock().unwrap().clear();
        self.children.stop();
    }
}

impl Drop for LocalCluster {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Restricts the child that `cmd` starts to `cpus` (its threads may still move among them).
fn pin_child(cmd: &mut Command, cpus: Vec<usize>) {
    use std::os::unix::process::CommandExt;
    // SAFETY: the closure runs in the forked child before exec and only calls
    // async-signal-safe libc functions on a set built on its own stack.
    unsafe {
        cmd.pre_exec(move || {
            let mut set: libc::cpu_set_t = std::mem::zeroed();
            for &c in &cpus {
                libc::CPU_SET(c, &mut set);
            }
            // A failure leaves the child unpinned, which is harmless, so it is ignored.
            libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
            Ok(())
        });
    }
}

/// Memory each of `workers` local workers may use (`asked`, or a share of what is available),
/// checked against the model.
pub fn local_memory(spec: &embtune_workloads::ModelSpec, workers: usize, asked: Option<u64>) -> Result<u64> {
    let available = (MachineInfo::detect().mem_available as f64 * 0.8) as u64;
    let memory_each = asked.unwrap_or(available / workers as u64);
    if spec.total_bytes() > memory_each * workers as u64 {
        bail!(
            "`{}` needs {} of tables but {} local workers may hold {} together: pass a smaller --scale{}",
            spec.name,
            crate::ui::bytes(spec.total_bytes()),
            workers,
            crate::ui::bytes(memory_each * workers as u64),
            if asked.is_some() { ", more --workers or a larger --worker-memory" } else { "" }
        );
    }
    if memory_each * workers as u64 > available {
        bail!(
            "--worker-memory {} for {workers} workers exceeds the {} this machine has available",
            crate::ui::bytes(memory_each),
            crate::ui::bytes(available)
        );
    }
    Ok(memory_each)
}

pub fn run(mut a: UpArgs) -> Result<()> {
    if a.workload.preset.is_none() && a.workload.model.is_none() {
        a.workload.preset = Some("criteo-kaggle".into());
        a.workload.scale.get_or_insert(0.01);
    }
    if a.workers == 0 || a.cores_per_worker == 0 {
        bail!("--workers and --cores-per-worker must be at least 1");
    }
    let spec = a.workload.spec()?;
    // Refuse bad re-planning flags here rather than in the coordinator's log.
    a.replan.config()?;
    let memory_each = local_memory(&spec, a.workers, a.worker_memory)?;
    let machine = MachineInfo::detect();
    let mut local = LocalCluster::start_with_token(
        &a.data_dir,
        a.workers,
        a.cores_per_worker,
        &a.listen,
        &a.http,
        memory_each,
        a.http_token.as_deref(),
        a.gpu,
        &a.replan.to_args(),
    )?;
    let all_workers = a.workers + a.gpu.is_some() as usize;
    if let Err(e) = local.start_loadgens(a.loadgens) {
        local.stop();
        return Err(e);
    }
    let target = local.target();
    let rt = runtime()?;
    let deployed = rt.block_on(async {
        let client = target.client().await?;
        let status = client
            .wait_for_workers(all_workers, Duration::from_secs(60))
            .await
            .context("waiting for the workers to register (see the logs in DATA_DIR/logs)")?;
        client
            .wait_for_loadgens(a.loadgens, Duration::from_secs(60))
            .await
            .context("waiting for the load generators to register (see the logs in DATA_DIR/logs)")?;
        let topo = Topology::of(
            status
                .workers
                .iter()
                .take(all_workers)
                .map(|w| WorkerShape { cores: w.cores, memory_bytes: w.memory_bytes, core_memory_bytes: None })
                .collect(),
        )
        .with_client_memory(a.client_memory);
        let generator = BatchGenerator::new(&spec)?;
        let prof = profile(&generator);
        let caps = memory_caps(&machine, true);
        let choice = PlanChoice { strategy: a.strategy.unwrap_or_default(), ..Default::default() };
        let plan = resolve_plan(&spec, &topo, &choice, &prof.tables, &caps)?;
        let d =
            crate::cluster::deploy_watched(&client, &spec, &plan, false).await.context("deploying the first plan")?;
        let job = if a.tune_trials > 0 {
            let dataset = match a.workload.scale {
                Some(s) if s != 1.0 => {
                    format!("{}@{s}", a.workload.preset.clone().unwrap_or_else(|| spec.name.clone()))
                }
                _ => a.workload.preset.clone().unwrap_or_else(|| spec.name.clone()),
            };
            let cores: u32 = status.workers.iter().map(|w| w.cores as u32).sum();
            let config = embtune_protocol::tuning::JobConfig {
                trials: a.tune_trials,
                round_s: a.tune_round_secs,
                max_rounds: 3,
                concurrency: 4 * cores.max(1),
                client_memory_bytes: a.client_memory,
                ..Default::default()
            };
            Some(client.submit_tune(&dataset, &spec, &config).await.context("starting the tuning job")?)
        } else {
            None
        };
        anyhow::Ok((plan, d, job))
    });
    let (plan, d, job) = match deployed {
        Ok(x) => x,
        Err(e) => {
            local.stop();
            return Err(e);
        }
    };
    let file = &local.file;
    println!("coordinator: {}", file.quic);
    println!("dashboard: http://{}/", file.http);
    eprintln!(
        "serving `{}` on {} workers x {} cores{}: {} ({} of tables deployed in {:.1}s)",
        spec.name,
        a.workers,
        a.cores_per_worker,
        a.gpu.map(|g| format!(" and GPU {g}")).unwrap_or_default(),
        plan.summary(),
        crate::ui::bytes(d.bytes),
        d.seconds
    );
    // The hints name the binary that is running: after `cargo run` no `embtune` is on the PATH.
    let bin = crate::ui::self_command();
    if let Some(j) = &job {
        eprintln!(
            "tuning: job {j} ({} trials after the {} baselines); results: {bin} results show {j} --data-dir {}",
            a.tune_trials,
            embtune_tuner::Strategy::baselines(a.client_memory).len(),
            local.data.display()
        );
    }
    let cluster = &local.cluster;
    eprintln!(
        "try:  {bin} bench --coordinator {} --cluster {} {} --verify",
        file.quic,
        cluster.display(),
        workload_flags(&a.workload)
    );
    eprintln!(
        "      {bin} tune --coordinator {} --cluster {} {} --trials 10",
        file.quic,
        cluster.display(),
        workload_flags(&a.workload)
    );
    eprintln!("      {bin} cluster status --coordinator {} --cluster {}", file.quic, cluster.display());
    eprintln!("logs: {}; stop with Ctrl-C", local.data.join("logs").display());
    use std::io::Write;
    std::io::stdout().flush()?;
    // With a tuning job, follow it to its end (a progress bar on a terminal) and print what it
    // found; the cluster then serves on until Ctrl-C, so the dashboard and `embtune results`
    // can still be used. Ctrl-C during the job stops everything at once.
    // A coordinator that dies is started again (its state is in the store); the workers are
    // left running and register with it again.
    local.handle_signals_yourself();
    let revive = async {
        loop {
            tokio::time::sleep(Duration::from_millis(500)).await;
            if let Err(e) = local.revive_coordinator() {
                eprintln!("could not start the coordinator again: {e:#}");
            }
        }
    };
    rt.block_on(async {
        let stop = async {
            tokio::select! {
                _ = shutdown_signal() => {}
                _ = revive => {}
            }
        };
        tokio::pin!(stop);
        if let Some(j) = &job {
            let followed = async {
                let client = target.client().await?;
                crate::job_view::follow(&client, j, false).await
            };
            tokio::select! {
                r = followed => match r {
                    Ok((job, trials)) => {
                        crate::job_view::print_summary(&job, &trials);
                        eprintln!("the tuning job ended; the cluster serves on (stop with Ctrl-C)");
                    }
                    Err(e) => eprintln!("could not follow the tuning job ({e:#}); see the dashboard"),
                },
                _ = &mut stop => return,
            }
            std::io::stdout().flush().ok();
        }
        stop.await
    });
    eprintln!("stopping {} processes", local.processes());
    local.stop();
    Ok(())
}

/// The workload flags of `w` as a command line, for the hints `up` prints.
pub fn workload_flags(w: &WorkloadArgs) -> String {
    let mut f = Vec::new();
    if let Some(p) = &w.preset {
        f.push(format!("--preset {p}"));
    }
    if let Some(m) = &w.model {
        f.push(format!("--model {}", m.display()));
    }
    if let Some(s) = w.scale {
        f.push(format!("--scale {s}"));
    }
    for (name, v) in [
        ("--tables", w.tables.map(|x| x.to_string())),
        ("--rows", w.rows.map(|x| x.to_string())),
        ("--dim", w.dim.map(|x| x.to_string())),
        ("--pooling", w.pooling.clone()),
        ("--dist", w.dist.clone()),
        ("--batch", w.batch.map(|x| x.to_string())),
    ] {
        if let Some(v) = v {
            f.push(format!("{name} {v}"));
        }
    }
    f.join(" ")
}
