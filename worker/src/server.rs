//! The worker process: an engine behind a QUIC endpoint, registered with a coordinator.
//!
//! The worker answers `Deploy` (materialise its part of a plan), `Lookup` (pool a batch and
//! return partial sums), `WorkerStats`, and, for the coordinator's live re-planner,
//! `TakeTraffic` (the traffic served since it last asked, see [`crate::traffic`]) and `Retire`
//! (drop the plan kept beside the current one while clients switched to it). A background
//! task registers with the coordinator and sends a heartbeat with per-core counters and the
//! queue length every few hundred milliseconds; when the coordinator goes away the task keeps
//! trying, so a restarted coordinator finds its workers again.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use embtune_protocol::codec::FrameLimits;
use embtune_protocol::plan::human_bytes;
use embtune_protocol::wire::{
    ClientTraffic, CoreCounters, DeployProgressInfo, DeployedInfo, ErrorKind, Heartbeat, LookupHead, PooledHead,
    Request, Response, WireError, WorkerHello, WorkerStatsReply,
};
use embtune_protocol::{PlanError, WorkerAssignment};
use embtune_transport::endpoint::connect;
use embtune_transport::rpc::{Body, Peer, accept_loop, call};
use embtune_transport::{Tuning, certs, server_endpoint};
use embtune_workloads::QueryBatch;

use crate::engine::kernels::Isa;
use crate::engine::{DeployProgress, Engine, EngineConfig, EngineError, Lookup, LookupOutput};
use crate::machine::MachineInfo;
use crate::traffic::TrafficStats;

/// Largest batch a worker accepts in one request, and the most ids.
pub const MAX_BATCH: u32 = 1 << 16;
pub const MAX_IDS: u32 = 64 << 20;

/// How to run a worker.
#[derive(Clone, Debug)]
pub struct WorkerConfig {
    pub listen: SocketAddr,
    /// Address the coordinator should use for this worker (default: the listen address, or the
    /// local address that routes to the coordinator when listening on all interfaces).
    pub advertise: Option<SocketAddr>,
    pub coordinator: SocketAddr,
    pub cluster: PathBuf,
    pub cpus: Vec<usize>,
    pub memory_limit: u64,
    pub name: String,
    pub huge_pages: bool,
    /// Run the start-up calibration sweep (about a second) and report it when registering.
    pub calibrate: bool,
    /// Serve tables from this CUDA device instead of the CPU cores (feature `gpu`).
    pub gpu: Option<usize>,
    /// One look-up in this many has its ids counted into the per-table hot-row summaries that
    /// `TakeTraffic` reports ([`DEFAULT_TRAFFIC_SAMPLE`] is a good choice); 0 turns the
    /// summaries off. The exact per-table counts are kept either way.
    pub traffic_sample: u32,
    /// The highest kernel level the engine may use (`None`: the best the CPU has).
    pub isa: Option<Isa>,
}

/// The default of [`WorkerConfig::traffic_sample`]. Counting a batch's ids into the summaries
/// costs about 0.6-0.7 of what the engine spends pooling it (`cargo bench -p embtune-worker --bench
/// traffic`), so one request in 64 costs about 1% of a core's work, and a busy worker still
/// counts hundreds of thousands of ids a second, plenty for the hottest thousand rows.
pub const DEFAULT_TRAFFIC_SAMPLE: u32 = 64;

/// What serves the look-ups: the multi-core CPU engine or a GPU.
enum Backend {
    Cpu(Engine),
    #[cfg(feature = "gpu")]
    Gpu(Arc<crate::gpu::serve::GpuService>),
}

impl Backend {
    fn queue_len(&self) -> usize {
        match self {
            Backend::Cpu(e) => e.queue_len(),
            #[cfg(feature = "gpu")]
            Backend::Gpu(g) => g.queue_len(),
        }
    }

    fn stats(&self) -> Vec<crate::engine::CoreStats> {
        match self {
            Backend::Cpu(e) => e.stats(),
            #[cfg(feature = "gpu")]
            Backend::Gpu(g) => g.stats(),
        }
    }

    /// Whether the backend can serve the plan it replaces beside a new one. The device holds
    /// one plan's tables only.
    fn holds_two(&self) -> bool {
        match self {
            Backend::Cpu(_) => true,
            #[cfg(feature = "gpu")]
            Backend::Gpu(_) => false,
        }
    }

    /// Deploys `a`; with `keep_previous` (and a backend that [`Backend::holds_two`]), the plan
    /// it replaces stays servable until [`Backend::retire`] or the next deployment.
    /// The CPU engine reports its progress to `progress` and stops when it is cancelled; the
    /// device's upload does neither (its tables are bounded by the device's memory, which
    /// uploads in seconds).
    fn deploy(
        &self,
        a: &WorkerAssignment,
        keep_previous: bool,
        progress: &DeployProgress,
    ) -> Result<crate::engine::DeployReport, EngineError> {
        match self {
            Backend::Cpu(e) => e.deploy_watched(a, keep_previous, progress),
            #[cfg(feature = "gpu")]
            Backend::Gpu(g) => {
                let _ = (keep_previous, progress);
                g.deploy(a)
            }
        }
    }

    /// The plan kept beside the current one (0: none).
    fn previous_epoch(&self) -> u64 {
        match self {
            Backend::Cpu(e) => e.epochs().1.unwrap_or(0),
            #[cfg(feature = "gpu")]
            Backend::Gpu(_) => 0,
        }
    }

    /// Drops every plan but `keep`; the device never holds another.
    fn retire(&self, keep: u64) {
        match self {
            Backend::Cpu(e) => e.retire(keep),
            #[cfg(feature = "gpu")]
            Backend::Gpu(_) => {
                let _ = keep;
            }
        }
    }

    /// Pools a request's batch, routed by plan `epoch`; the CPU engine's threads or a blocking
    /// thread for the device. The batch and tables come in `Arc`s so that the caller keeps
    /// them, to count the request's traffic afterwards without copying its ids.
    async fn lookup(
        &self,
        batch: &Arc<QueryBatch>,
        tables: &Arc<[u16]>,
        epoch: u64,
    ) -> Result<LookupOutput, EngineError> {
        match self {
            Backend::Cpu(e) => {
                let (tx, rx) = tokio::sync::oneshot::channel();
                // Workers return sums; the coordinator divides mean-pooled tables after adding
                // shards up.
                e.submit(
                    Lookup { batch: batch.clone(), tables: tables.clone(), finalize_mean: false, epoch },
                    Box::new(move |r| {
                        let _ = tx.send(r);
                    }),
                );
                rx.await.unwrap_or_else(|_| Err(EngineError::BadRequest("the engine dropped the request".into())))
            }
            #[cfg(feature = "gpu")]
            Backend::Gpu(g) => {
                let (g, batch, tables) = (g.clone(), batch.clone(), tables.clone());
                tokio::task::spawn_blocking(move || g.lookup(&batch, &tables, epoch))
                    .await
                    .unwrap_or_else(|e| Err(EngineError::BadRequest(format!("the device thread failed: {e}"))))
            }
        }
    }
}

/// Opens the device a worker was asked to serve from.
#[cfg(feature = "gpu")]
fn open_gpu(ordinal: usize) -> Result<Backend, String> {
    let g = crate::gpu::serve::GpuService::open(ordinal)
        .map_err(|e| format!("--gpu {ordinal}: {e} (run without --gpu to serve from the CPU cores)"))?;
    Ok(Backend::Gpu(Arc::new(g)))
}

#[cfg(not(feature = "gpu"))]
fn open_gpu(ordinal: usize) -> Result<Backend, String> {
    Err(format!(
        "--gpu {ordinal}: this embtune was built without the `gpu` feature; rebuild with \
         `cargo build --release --features gpu` (the CUDA driver is loaded at run time)"
    ))
}

struct State {
    engine: Backend,
    plan_id: AtomicU64,
    /// The plan kept servable beside `plan_id` while clients switch to it (0: none).
    previous_plan_id: AtomicU64,
    /// Bytes of the current plan's tables (a kept previous plan's are not counted).
    bytes_held: AtomicU64,
    requests: AtomicU64,
    errors: AtomicU64,
    memory_limit: u64,
    /// Serialises deployments: a second one waits for the first.
    deploying: tokio::sync::Mutex<()>,
    worker_id: Mutex<Option<u16>>,
    /// Look-ups served per client, for the dashboard's traffic view.
    traffic: Mutex<Traffic>,
    /// Per-table traffic of the current plan since the coordinator last took it.
    tables_traffic: TrafficStats,
    /// The deployment in progress: how far it is, and a way to stop it.
    progress: Arc<DeployProgress>,
    /// The plan being deployed and when it began (None: no deployment in progress).
    deploying_since: Mutex<Option<(u64, Instant)>>,
}

impl State {
    fn deploy_progress(&self) -> Option<DeployProgressInfo> {
        let (plan_id, since) = (*self.deploying_since.lock())?;
        Some(DeployProgressInfo {
            plan_id,
            done_bytes: self.progress.done(),
            total_bytes: self.progress.total(),
            elapsed_ms: since.elapsed().as_millis() as u64,
        })
    }
}

/// Cancels the deployment in progress when dropped: when the worker's future is dropped on
/// SIGINT or SIGTERM, the runtime would otherwise wait for a fill of tens of gigabytes to
/// finish before the process could exit.
struct CancelOnDrop(Arc<State>);

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        if let Some(p) = self.0.deploy_progress() {
            tracing::warn!(
                "stopping: cancelling the deployment of plan {} at {} of {}",
                p.plan_id,
                human_bytes(p.done_bytes),
                human_bytes(p.total_bytes)
            );
        }
        self.0.progress.cancel();
    }
}

/// Per-client traffic counters, bounded: past [`Traffic::MAX_CLIENTS`] clients the quietest
/// one's counters are dropped, so a churn of clients cannot grow a worker's memory.
#[derive(Default)]
struct Traffic {
    clients: std::collections::HashMap<u32, ClientTraffic>,
}

impl Traffic {
    const MAX_CLIENTS: usize = 256;
    /// Clients a heartbeat reports: the busiest.
    const REPORTED: usize = 32;

    fn record(&mut self, client: u32, bytes_in: u64, bytes_out: u64) {
        if !self.clients.contains_key(&client)
            && self.clients.len() >= Self::MAX_CLIENTS
            && let Some(quiet) = self.clients.values().min_by_key(|c| c.requests).map(|c| c.client)
        {
            self.clients.remove(&quiet);
        }
        let c = self.clients.entry(client).or_insert_with(|| ClientTraffic { client, ..Default::default() });
        c.requests += 1;
        c.bytes_in += bytes_in;
        c.bytes_out += bytes_out;
    }

    fn busiest(&self) -> Vec<ClientTraffic> {
        let mut v: Vec<ClientTraffic> = self.clients.values().cloned().collect();
        v.sort_by_key(|c| std::cmp::Reverse(c.requests));
        v.truncate(Self::REPORTED);
        v
    }
}

/// Runs a worker until the process is stopped. Returns only on a start-up error.
pub async fn run(cfg: WorkerConfig) -> Result<(), String> {
    let id = certs::load(&cfg.cluster, None, None).map_err(|e| e.to_string())?;
    let tuning = Tuning::default();
    let ep = server_endpoint(cfg.listen, &id, &tuning).map_err(|e| e.to_string())?;
    let bound = ep.local_addr().map_err(|e| e.to_string())?;
    let advertise = match cfg.advertise {
        Some(a) => a,
        None if bound.ip().is_unspecified() => {
            SocketAddr::new(route_to(cfg.coordinator).map_err(|e| e.to_string())?, bound.port())
        }
        None => bound,
    };
    let engine = match cfg.gpu {
        Some(ordinal) => open_gpu(ordinal)?,
        None => Backend::Cpu(Engine::start(EngineConfig {
            cpus: cfg.cpus.clone(),
            pin: true,
            huge_pages: cfg.huge_pages,
            isa: cfg.isa,
        })),
    };
    // A GPU worker is one slot (the device) whose memory is the device's.
    let (cores, memory_limit, gpu) = match &engine {
        Backend::Cpu(e) => {
            tracing::info!(
                "worker `{}` serving on {bound} (advertised {advertise}) with {} cores, {} kernels",
                cfg.name,
                e.cores(),
                e.isa().name()
            );
            (cfg.cpus.len() as u16, cfg.memory_limit, None)
        }
        #[cfg(feature = "gpu")]
        Backend::Gpu(g) => {
            let info = g.info();
            // Leave room for the hot-row region, ids, offsets and outputs.
            let memory = ((info.free_mem as f64 * 0.9) as u64).min(cfg.memory_limit);
            let desc =
                format!("{} ({} free of {})", info.summary(), human_bytes(info.free_mem), human_bytes(info.total_mem));
            tracing::info!("worker `{}` serving on {bound} (advertised {advertise}) from GPU {desc}", cfg.name);
            (1, memory, Some(desc))
        }
    };
    let state = Arc::new(State {
        engine,
        plan_id: AtomicU64::new(0),
        previous_plan_id: AtomicU64::new(0),
        bytes_held: AtomicU64::new(0),
        requests: AtomicU64::new(0),
        errors: AtomicU64::new(0),
        memory_limit,
        deploying: tokio::sync::Mutex::new(()),
        worker_id: Mutex::new(None),
        traffic: Mutex::new(Traffic::default()),
        // Its counting thread starts here, with the worker, and ends with the state.
        tables_traffic: TrafficStats::start(cfg.traffic_sample),
        progress: Arc::new(DeployProgress::default()),
        deploying_since: Mutex::new(None),
    });
    let _cancel_on_exit = CancelOnDrop(state.clone());
    let server = {
        let state = state.clone();
        tokio::spawn(accept_loop(ep.clone(), FrameLimits::default(), move |req, body, peer| {
            let state = state.clone();
            async move { handle(&state, req, body, peer).await }
        }))
    };
    let machine = MachineInfo::detect();
    // The CPU sweep says nothing about a device; its model starts from the defaults.
    let calibration = if cfg.calibrate && gpu.is_none() {
        let (cpu, isa) = (cfg.cpus[0], cfg.isa);
        let c = tokio::task::spawn_blocking(move || crate::calibrate::calibrate(cpu, isa)).await.ok().flatten();
        if let Some(c) = &c {
            tracing::info!(
                "calibrated: {:.1} ns per row from the core's caches, {:.1} from the LLC, {:.1} from DRAM, {:.0} ns per request",
                c.ns_per_row_l1,
                c.ns_per_row_llc,
                c.ns_per_row_dram,
                c.ns_per_request
            );
        }
        c
    } else {
        None
    };
    let hello = WorkerHello {
        name: cfg.name.clone(),
        listen: advertise.to_string(),
        cores,
        memory_bytes: memory_limit,
        l2_bytes: machine.l2_bytes,
        llc_bytes: machine.llc_bytes,
        llc_cores: machine.llc_cpus,
        huge_pages: cfg.huge_pages && machine.thp != "never",
        cpu_model: machine.cpu_model.clone(),
        calibration,
        gpu,
        holds: 0,
    };
    tokio::spawn(register_loop(ep, cfg.coordinator, hello, state));
    server.await.map_err(|e| e.to_string())
}

/// The local address the OS would use to reach `peer`: what to advertise when listening on all
/// interfaces.
fn route_to(peer: SocketAddr) -> std::io::Result<std::net::IpAddr> {
    let bind: SocketAddr = if peer.is_ipv4() { "0.0.0.0:0".parse().unwrap() } else { "[::]:0".parse().unwrap() };
    let s = std::net::UdpSocket::bind(bind)?;
    s.connect(peer)?;
    Ok(s.local_addr()?.ip())
}

/// Registers, then heartbeats; on any failure waits a moment and registers again.
async fn register_loop(ep: quinn::Endpoint, coordinator: SocketAddr, hello: WorkerHello, state: Arc<State>) {
    let limits = FrameLimits::default();
    let t = Duration::from_secs(2);
    let mut announced = false;
    loop {
        let session = async {
            let conn = connect(&ep, coordinator, t).await?;
            // A restarted coordinator that kept its deployment need not send this one again.
            let hello = WorkerHello { holds: state.plan_id.load(Ordering::Relaxed), ..hello.clone() };
            let (resp, _) = call(&conn, &Request::Register(hello), Body::Empty, &limits, t).await?;
            let Response::Registered { worker, heartbeat_ms } = resp else {
                return Err(embtune_transport::TransportError::Remote(WireError::new(
                    ErrorKind::Internal,
                    format!("unexpected reply {resp:?}"),
                )));
            };
            *state.worker_id.lock() = Some(worker);
            tracing::info!("registered with the coordinator at {coordinator} as worker {worker}");
            loop {
                tokio::time::sleep(Duration::from_millis(heartbeat_ms as u64)).await;
                let hb = Heartbeat {
                    worker,
                    queue: state.engine.queue_len() as u32,
                    plan_id: state.plan_id.load(Ordering::Relaxed),
                    cores: counters(&state.engine),
                    clients: state.traffic.lock().busiest(),
                    deploying: state.deploy_progress(),
                };
                call(&conn, &Request::Heartbeat(hb), Body::Empty, &limits, t).await?;
            }
        };
        let res: Result<(), embtune_transport::TransportError> = session.await;
        if let Err(e) = res
            && !announced
        {
            tracing::warn!("coordinator at {coordinator} unreachable ({e}); retrying");
            announced = true;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

fn counters(engine: &Backend) -> Vec<CoreCounters> {
    engine
        .stats()
        .iter()
        .map(|s| CoreCounters {
            core: s.core as u16,
            cpu: s.cpu as u32,
            busy_ns: s.busy_ns,
            tasks: s.tasks,
            lookups: s.lookups,
        })
        .collect()
}

fn wire(e: EngineError) -> WireError {
    let kind = match &e {
        EngineError::UnknownTable { .. } => ErrorKind::UnknownTable,
        EngineError::RowOutOfRange { .. } => ErrorKind::RowOutOfRange,
        EngineError::NotHeld { .. } => ErrorKind::NotHeld,
        EngineError::BadRequest(_) => ErrorKind::BadFrame,
        EngineError::Deploy(_) => ErrorKind::Deploy,
        EngineError::ShuttingDown => ErrorKind::Internal,
        EngineError::StalePlan { .. } => ErrorKind::StalePlan,
    };
    WireError::new(kind, e.to_string())
}

fn error(kind: ErrorKind, m: impl Into<String>) -> (Response, Body) {
    (Response::Error(WireError::new(kind, m)), Body::Empty)
}

async fn handle(state: &Arc<State>, req: Request, body: Vec<u32>, peer: Peer) -> (Response, Body) {
    match req {
        Request::Deploy { plan_id, assignment } => deploy(state, plan_id, assignment).await,
        Request::Lookup(head) => {
            state.requests.fetch_add(1, Ordering::Relaxed);
            let r = lookup(state, head, body).await;
            if let (Response::Error(e), _) = &r {
                state.errors.fetch_add(1, Ordering::Relaxed);
                tracing::warn!("look-up from {} refused: {e}", peer.addr);
            }
            r
        }
        Request::TakeTraffic => {
            let mut r = state.tables_traffic.take();
            r.cores = counters(&state.engine);
            let dropped = state.tables_traffic.dropped();
            if dropped > 0 {
                tracing::debug!(
                    "{dropped} traffic samples dropped since the worker started (the counting thread was behind)"
                );
            }
            (Response::Traffic(Box::new(r)), Body::Empty)
        }
        Request::Retire { keep } => retire(state, keep).await,
        Request::CancelDeploy => {
            // Only a deployment in progress is cancelled; the next one starts uncancelled.
            if let Some(p) = state.deploy_progress() {
                state.progress.cancel();
                tracing::warn!(
                    "cancelling the deployment of plan {} at {} of {}",
                    p.plan_id,
                    human_bytes(p.done_bytes),
                    human_bytes(p.total_bytes)
                );
            }
            (Response::Ack, Body::Empty)
        }
        Request::WorkerStats => (
            Response::WorkerStats(WorkerStatsReply {
                plan_id: state.plan_id.load(Ordering::Relaxed),
                cores: counters(&state.engine),
                requests: state.requests.load(Ordering::Relaxed),
                errors: state.errors.load(Ordering::Relaxed),
                bytes_held: state.bytes_held.load(Ordering::Relaxed),
            }),
            Body::Empty,
        ),
        other => error(ErrorKind::NotSupported, format!("a worker does not serve {}", request_name(&other))),
    }
}

pub fn request_name(r: &Request) -> &'static str {
    match r {
        Request::Deploy { .. } => "Deploy",
        Request::Lookup(_) => "Lookup",
        Request::WorkerStats => "WorkerStats",
        Request::Register(_) => "Register",
        Request::Heartbeat(_) => "Heartbeat",
        Request::Query(_) => "Query",
        Request::DeployPlan { .. } => "DeployPlan",
        Request::GetDeployment => "GetDeployment",
        Request::ClusterStatus => "ClusterStatus",
        Request::SubmitTune { .. } => "SubmitTune",
        Request::GetJob { .. } => "GetJob",
        Request::ListJobs => "ListJobs",
        Request::ResumeJob { .. } => "ResumeJob",
        Request::BestFor { .. } => "BestFor",
        Request::GetRoutes => "GetRoutes",
        Request::RegisterLoadgen(_) => "RegisterLoadgen",
        Request::RunLoad { .. } => "RunLoad",
        Request::LoadRound(_) => "LoadRound",
        Request::TakeTraffic => "TakeTraffic",
        Request::Retire { .. } => "Retire",
        Request::GetReplan => "GetReplan",
        Request::CancelDeploy => "CancelDeploy",
    }
}

/// Bytes an assignment needs: its pieces plus hot copies.
fn assignment_bytes(a: &WorkerAssignment) -> u64 {
    a.tables
        .iter()
        .map(|t| {
            let row = t.row_type.row_bytes(t.spec.dim) as u64;
            let rows: u64 = match &t.layout {
                embtune_protocol::LocalLayout::Replicated => t.spec.rows,
                embtune_protocol::LocalLayout::Shards(s) => s.iter().map(|s| s.rows.len(t.spec.rows)).sum(),
            };
            rows * row
        })
        .sum()
}

async fn deploy(state: &Arc<State>, plan_id: u64, a: WorkerAssignment) -> (Response, Body) {
    let need = assignment_bytes(&a);
    if need > state.memory_limit {
        let e = PlanError::Memory(format!(
            "this worker's part of plan {plan_id} needs {} but its --memory-limit is {}",
            human_bytes(need),
            human_bytes(state.memory_limit)
        ));
        return error(ErrorKind::Deploy, e.to_string());
    }
    let _one_at_a_time = state.deploying.lock().await;
    // Clients switch to a new plan one by one, so the plan it replaces keeps serving those
    // still routing by it until the coordinator retires it, when memory allows both; when it
    // does not, the old plan goes at once and its clients retry on `StalePlan` and refetch.
    // A plan kept from an earlier switch is dropped before the new one is built, so the
    // current plan and the new one are all that must fit.
    let keep = state.engine.holds_two() && state.bytes_held.load(Ordering::Relaxed) + need <= state.memory_limit;
    state.previous_plan_id.store(0, Ordering::Relaxed);
    state.progress.reset();
    *state.deploying_since.lock() = Some((plan_id, Instant::now()));
    let st = state.clone();
    // Materialising gigabytes takes seconds of CPU: off the async threads.
    let mut fill = tokio::task::spawn_blocking(move || st.engine.deploy(&a, keep, &st.progress));
    // A deployment of gigabytes says how far it is in the log (and in every heartbeat).
    let every = Duration::from_secs(5);
    let mut log = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
    let res = loop {
        tokio::select! {
            r = &mut fill => break r,
            _ = log.tick() => {
                if let Some(p) = state.deploy_progress() {
                    tracing::info!(
                        "deploying plan {plan_id}: {} of {} ({:.0}%) in {:.0}s",
                        human_bytes(p.done_bytes),
                        human_bytes(p.total_bytes),
                        100.0 * p.done_bytes as f64 / p.total_bytes.max(1) as f64,
                        p.elapsed_ms as f64 / 1e3
                    );
                }
            }
        }
    };
    *state.deploying_since.lock() = None;
    match res {
        Ok(Ok(r)) => {
            // The engine is the authority on what it kept (nothing for an empty worker, or
            // for a redeployment of the same plan).
            let previous = state.engine.previous_epoch();
            state.previous_plan_id.store(previous, Ordering::Relaxed);
            state.plan_id.store(plan_id, Ordering::Relaxed);
            state.bytes_held.store(r.bytes, Ordering::Relaxed);
            // Traffic of the old plan would mislead the re-planning of the new one.
            state.tables_traffic.reset(plan_id);
            tracing::info!(
                "deployed plan {plan_id}: {} tables, {} in {:.2}s{}",
                r.tables,
                human_bytes(r.bytes),
                r.seconds,
                if previous != 0 { format!("; plan {previous} kept until retired") } else { String::new() }
            );
            (
                Response::Deployed(DeployedInfo {
                    plan_id,
                    bytes: r.bytes,
                    huge_page_bytes: r.huge_page_bytes,
                    seconds: r.seconds,
                }),
                Body::Empty,
            )
        }
        Ok(Err(e)) => (Response::Error(wire(e)), Body::Empty),
        Err(e) => error(ErrorKind::Internal, format!("deployment panicked: {e}")),
    }
}

/// Drops the plan kept beside the current one, once every client routes by the current one.
/// Only the kept plan is ever dropped: a `keep` other than the current plan (a retirement
/// overtaken by a newer deployment) is refused and changes nothing.
async fn retire(state: &Arc<State>, keep: u64) -> (Response, Body) {
    // Not in the middle of a deployment, which changes what is current and what is kept.
    let _one_at_a_time = state.deploying.lock().await;
    let current = state.plan_id.load(Ordering::Relaxed);
    if keep != current {
        return error(
            ErrorKind::StalePlan,
            format!("asked to keep plan {keep} only, but this worker's current plan is {current}; nothing retired"),
        );
    }
    let previous = state.previous_plan_id.swap(0, Ordering::Relaxed);
    if previous != 0 {
        let st = state.clone();
        // Freeing a plan's tables can take a while for gigabytes: off the async threads.
        if let Err(e) = tokio::task::spawn_blocking(move || st.engine.retire(keep)).await {
            return error(ErrorKind::Internal, format!("retiring plan {previous} panicked: {e}"));
        }
        tracing::info!("retired plan {previous}; serving plan {keep} only");
    }
    (Response::Ack, Body::Empty)
}

async fn lookup(state: &Arc<State>, head: LookupHead, mut body: Vec<u32>) -> (Response, Body) {
    let current = state.plan_id.load(Ordering::Relaxed);
    let previous = state.previous_plan_id.load(Ordering::Relaxed);
    if head.plan_id != current && (previous == 0 || head.plan_id != previous) {
        // The router's table is older or newer than what this worker holds (a redeployment,
        // or the worker restarted): it refetches the routes and tries again.
        let also = if previous != 0 { format!(" (and plan {previous} until it is retired)") } else { String::new() };
        return error(
            ErrorKind::StalePlan,
            format!("request for plan {} but this worker holds plan {current}{also}", head.plan_id),
        );
    }
    if head.batch_size > MAX_BATCH || head.ids > MAX_IDS {
        return error(
            ErrorKind::BatchTooLarge,
            format!(
                "batch of {} samples and {} ids exceeds the limits ({MAX_BATCH} samples, {MAX_IDS} ids)",
                head.batch_size, head.ids
            ),
        );
    }
    let want_offsets = head.tables.len() as u64 * head.batch_size as u64 + 1;
    if head.offsets as u64 != want_offsets || body.len() as u64 != head.offsets as u64 + head.ids as u64 {
        return error(
            ErrorKind::BadFrame,
            format!(
                "{} tables x {} samples need {want_offsets} offsets; the frame announces {} offsets and {} ids in {} words",
                head.tables.len(),
                head.batch_size,
                head.offsets,
                head.ids,
                body.len()
            ),
        );
    }
    // The body is ids then offsets, so the (large) ids stay in place and only the offsets move.
    let bytes_in = 4 * body.len() as u64;
    let offsets = body.split_off(head.ids as usize);
    let batch =
        Arc::new(QueryBatch { batch_size: head.batch_size, num_tables: head.tables.len() as u32, offsets, ids: body });
    let tables: Arc<[u16]> = head.tables.into();
    match state.engine.lookup(&batch, &tables, head.plan_id).await {
        Ok(out) => {
            // Sums stay f32 in the engine; a narrower wire format rounds each value once, here.
            let words = embtune_protocol::codec::encode_pooled(head.reply, out.pooled);
            state.traffic.lock().record(head.client, bytes_in, 4 * words.len() as u64);
            // Only served requests count; those for a kept previous plan are left out there.
            state.tables_traffic.record(head.plan_id, &tables, &batch);
            (
                Response::Pooled(PooledHead {
                    batch_size: head.batch_size,
                    width: out.width as u32,
                    engine_us: out.engine_time.as_micros() as u32,
                    queue: state.engine.queue_len() as u32,
                    coordinator_us: 0,
                    fanout: 1,
                }),
                Body::Words(words),
            )
        }
        Err(e) => (Response::Error(wire(e)), Body::Empty),
    }
}
