//! The coordinator process: membership, deployment and scatter/gather serving.
//!
//! Workers register (and re-register after a restart, keyed by their address) and heartbeat;
//! a worker silent for [`CoordinatorConfig::dead_after`] or whose connection closes is marked
//! down. A deployment sends each worker its part of a plan; a worker that comes back gets its
//! part again before it serves. A client's query is checked, split by the plan (replicated
//! tables to one replica by the power of two choices), fanned out concurrently, and the partial
//! sums are added up. A replicated part that fails on one replica is retried on another.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use parking_lot::{Mutex, RwLock};
use rand_core::{Rng, SeedableRng};
use tokio::sync::Semaphore;

use embtune_protocol::codec::FrameLimits;
use embtune_protocol::wire::{
    ClusterInfo, CoreCounters, DeployedInfo, DeploymentInfo, ErrorKind, Heartbeat, LookupHead, PooledHead, QueryHead,
    Request, Response, WireError, WorkerHello, WorkerInfo,
};
use embtune_protocol::{DataFlow, Plan, Topology, WorkerShape};
use embtune_transport::lanes::{self, Lanes};
use embtune_transport::rpc::{Body, Peer, accept_loop, call};
use embtune_transport::{Identity, TransportError, Tuning, certs, server_endpoint};
use embtune_workloads::{BatchGenerator, ModelSpec, QueryBatch};

use crate::route;

/// Largest client batch, and the most ids in one.
pub const MAX_BATCH: u32 = 1 << 16;
pub const MAX_IDS: u32 = 64 << 20;

#[derive(Clone, Debug)]
pub struct CoordinatorConfig {
    pub listen: SocketAddr,
    pub cluster: PathBuf,
    pub data_dir: PathBuf,
    pub heartbeat: Duration,
    /// A worker silent this long is marked down.
    pub dead_after: Duration,
    /// How long a sub-request may take before its worker counts as failed.
    pub request_timeout: Duration,
    /// Connections to each worker (`embtune_transport::lanes`).
    pub lanes: usize,
}

impl CoordinatorConfig {
    pub fn new(listen: SocketAddr, cluster: PathBuf, data_dir: PathBuf) -> Self {
        CoordinatorConfig {
            listen,
            cluster,
            data_dir,
            heartbeat: Duration::from_millis(250),
            dead_after: Duration::from_millis(1000),
            request_timeout: Duration::from_secs(10),
            lanes: lanes::configured(),
        }
    }
}

struct Slot {
    id: u16,
    hello: WorkerHello,
    addr: SocketAddr,
    /// Connections to the worker ([`Lanes`]): deployments and heartbeats' replies use the
    /// first; look-ups are dealt over all, and large ones striped across them.
    conn: Option<Lanes>,
    /// Connected, heartbeating and holding the current plan.
    healthy: bool,
    /// A bring-up is under way, so heartbeats from a worker not yet up do not start another.
    bringing_up: bool,
    /// Bumped on every registration, so a stale reconnection task can tell it lost.
    generation: u64,
    deployed_plan: u64,
    last_seen: Instant,
    queue: u32,
    inflight: Arc<AtomicU32>,
    permits: Arc<Semaphore>,
    requests: u64,
    engine_ns: u64,
    bytes_held: u64,
    counters: Vec<CoreCounters>,
}

/// What is deployed, with what routing needs precomputed.
pub struct Active {
    pub plan_id: u64,
    pub spec: ModelSpec,
    pub plan: Plan,
    /// Which registered worker plays each worker of the plan: plans are made for the workers
    /// that are up, which after a failure need not be the first ones.
    pub slots: Vec<u16>,
    pub hot: Vec<Vec<u32>>,
    pub columns: Vec<usize>,
    pub width: usize,
    pub dims: Vec<usize>,
}

struct Inner {
    cfg: CoordinatorConfig,
    /// Tuning jobs and trials, in the data dir.
    store: embtune_tuner::store::Store,
    /// Jobs running now, with their stop flags.
    jobs: Mutex<std::collections::HashMap<String, Arc<std::sync::atomic::AtomicBool>>>,
    /// Jobs that failed because the store could not be written (a full disk), as clients
    /// should see them until they are resumed (`jobs.rs`).
    unwritten: crate::jobs::Unwritten,
    ep: quinn::Endpoint,
    /// One client endpoint per lane to the workers, each with its own socket and receive task.
    lane_eps: Vec<quinn::Endpoint>,
    slots: RwLock<Vec<Slot>>,
    active: RwLock<Option<Arc<Active>>>,
    deploy_lock: tokio::sync::Mutex<()>,
    queries: AtomicU64,
    query_errors: AtomicU64,
    stats: crate::stats::QueryStats,
    rng: Mutex<rand_pcg::Pcg64Mcg>,
    limits: FrameLimits,
    started: Instant,
}

/// A running coordinator; cheap to clone.
#[derive(Clone)]
pub struct Coordinator {
    inner: Arc<Inner>,
}

impl Coordinator {
    /// Binds the endpoint and starts serving and monitoring.
    pub async fn start(cfg: CoordinatorConfig) -> Result<Coordinator, TransportError> {
        let id: Identity = certs::load(&cfg.cluster, None, None)?;
        let store = embtune_tuner::store::Store::open(&cfg.data_dir.join("store"))
            .map_err(|e| TransportError::Stream(e.to_string()))?;
        let ep = server_endpoint(cfg.listen, &id, &Tuning::default())?;
        let lane_eps = embtune_transport::lanes::endpoints(&id, &Tuning::default(), cfg.lanes)?;
        let c = Coordinator {
            inner: Arc::new(Inner {
                store,
                jobs: Mutex::new(Default::default()),
                unwritten: Default::default(),
                cfg,
                ep: ep.clone(),
                lane_eps,
                slots: RwLock::new(Vec::new()),
                active: RwLock::new(None),
                deploy_lock: tokio::sync::Mutex::new(()),
                queries: AtomicU64::new(0),
                query_errors: AtomicU64::new(0),
                stats: Default::default(),
                rng: Mutex::new(rand_pcg::Pcg64Mcg::seed_from_u64(0x5eed)),
                limits: FrameLimits::default(),
                started: Instant::now(),
            }),
        };
        let me = c.clone();
        tokio::spawn(accept_loop(ep, c.inner.limits, move |req, body, peer| {
            let me = me.clone();
            async move { me.handle(req, body, peer).await }
        }));
        let me = c.clone();
        tokio::spawn(async move { me.monitor().await });
        c.resume_interrupted();
        Ok(c)
    }

    /// The store of tuning jobs.
    pub fn store(&self) -> &embtune_tuner::store::Store {
        &self.inner.store
    }

    /// What every registered worker said when it registered, in id order.
    pub fn hellos(&self) -> Vec<WorkerHello> {
        self.inner.slots.read().iter().map(|s| s.hello.clone()).collect()
    }

    pub(crate) fn unwritten(&self) -> &crate::jobs::Unwritten {
        &self.inner.unwritten
    }

    /// Marks a job running; false if it already is.
    pub(crate) fn register_job(&self, id: &str, stop: Arc<std::sync::atomic::AtomicBool>) -> bool {
        let mut j = self.inner.jobs.lock();
        if j.contains_key(id) {
            return false;
        }
        j.insert(id.to_string(), stop);
        true
    }

    pub(crate) fn unregister_job(&self, id: &str) {
        self.inner.jobs.lock().remove(id);
    }

    pub fn job_running(&self, id: &str) -> bool {
        self.inner.jobs.lock().contains_key(id)
    }

    /// Hook for observers of tuning progress (the log, for now).
    pub(crate) fn notify_trial(&self, job: &embtune_protocol::tuning::Job, t: &embtune_protocol::tuning::Trial) {
        match &t.measured {
            Some(m) => tracing::info!(
                "job {} trial {} ({}): {:.1} {} (predicted {:.1})",
                job.id,
                t.n,
                t.kind.label(),
                m.value,
                job.config.objective.unit(),
                t.predicted
            ),
            None => tracing::info!(
                "job {} trial {} ({}) failed: {}",
                job.id,
                t.n,
                t.kind.label(),
                t.failure.as_deref().unwrap_or("")
            ),
        }
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.inner.ep.local_addr().expect("a bound endpoint")
    }

    pub fn data_dir(&self) -> &PathBuf {
        &self.inner.cfg.data_dir
    }

    async fn handle(&self, req: Request, body: Vec<u32>, peer: Peer) -> (Response, Body) {
        let fail = |e: WireError| (Response::Error(e), Body::Empty);
        match req {
            Request::Register(hello) => self.register(hello, peer),
            Request::Heartbeat(hb) => {
                self.heartbeat(hb);
                (Response::Ack, Body::Empty)
            }
            Request::Query(head) => match self.query(head, body).await {
                Ok((head, out)) => (Response::Pooled(head), Body::Floats(out)),
                Err(e) => {
                    tracing::warn!("query from {} failed: {e}", peer.addr);
                    fail(e)
                }
            },
            Request::DeployPlan { spec, plan } => match self.deploy(*spec, *plan).await {
                Ok(info) => (Response::Deployed(info), Body::Empty),
                Err(e) => fail(e),
            },
            Request::GetDeployment => {
                let d = self.active().map(|a| DeploymentInfo {
                    plan_id: a.plan_id,
                    spec: a.spec.clone(),
                    plan: a.plan.clone(),
                });
                (Response::Deployment(d), Body::Empty)
            }
            Request::ClusterStatus => (Response::Cluster(self.status()), Body::Empty),
            Request::SubmitTune { dataset, spec, config } => match self.submit_job(dataset, *spec, config) {
                Ok(id) => (Response::JobAccepted { id }, Body::Empty),
                Err(e) => fail(e),
            },
            Request::GetJob { id } => match self.job_detail(&id) {
                Ok((job, trials)) => (Response::JobDetail { job: Box::new(job), trials }, Body::Empty),
                Err(e) => fail(WireError::new(ErrorKind::NoDeployment, e.to_string())),
            },
            Request::ListJobs => match self.list_jobs() {
                Ok(j) => (Response::Jobs(j), Body::Empty),
                Err(e) => fail(WireError::new(ErrorKind::Internal, e.to_string())),
            },
            Request::ResumeJob { id } => match self.resume_job(&id) {
                Ok(()) => (Response::Ack, Body::Empty),
                Err(e) => fail(e),
            },
            Request::BestFor { dataset } => match self.best_for(&dataset) {
                Ok(b) => (Response::Best(b), Body::Empty),
                Err(e) => fail(WireError::new(ErrorKind::Internal, e)),
            },
            Request::Deploy { .. } | Request::Lookup(_) | Request::WorkerStats => {
                fail(WireError::new(ErrorKind::NotSupported, "this is a coordinator; send look-ups as Query"))
            }
        }
    }

    /// The current deployment.
    pub fn active(&self) -> Option<Arc<Active>> {
        self.inner.active.read().clone()
    }

    fn register(&self, hello: WorkerHello, peer: Peer) -> (Response, Body) {
        let addr: SocketAddr = match hello.listen.parse() {
            Ok(a) => a,
            Err(_) => {
                return (
                    Response::Error(WireError::new(
                        ErrorKind::BadFrame,
                        format!("bad listen address `{}`", hello.listen),
                    )),
                    Body::Empty,
                );
            }
        };
        let (id, generation) = {
            let mut slots = self.inner.slots.write();
            let id = match slots.iter().position(|s| s.addr == addr) {
                Some(i) => i,
                None => {
                    let id = slots.len() as u16;
                    slots.push(Slot {
                        id,
                        hello: hello.clone(),
                        addr,
                        conn: None,
                        healthy: false,
                        bringing_up: false,
                        generation: 0,
                        deployed_plan: 0,
                        last_seen: Instant::now(),
                        queue: 0,
                        inflight: Arc::new(AtomicU32::new(0)),
                        permits: Arc::new(Semaphore::new(64)),
                        requests: 0,
                        engine_ns: 0,
                        bytes_held: 0,
                        counters: Vec::new(),
                    });
                    slots.len() - 1
                }
            };
            let s = &mut slots[id];
            s.hello = hello;
            s.generation += 1;
            s.healthy = false;
            s.bringing_up = true;
            s.conn = None;
            s.deployed_plan = 0;
            s.last_seen = Instant::now();
            // A new process: its counters start again from zero.
            s.counters.clear();
            s.queue = 0;
            (id as u16, s.generation)
        };
        tracing::info!("worker {id} registered from {} (serving at {addr})", peer.addr);
        self.spawn_bring_up(id, generation, 0);
        (Response::Registered { worker: id, heartbeat_ms: self.inner.cfg.heartbeat.as_millis() as u32 }, Body::Empty)
    }

    /// Brings a worker up in the background, then lets heartbeats start another bring-up should
    /// this one fail (unless the worker registered again meanwhile, whose bring-up owns the flag).
    fn spawn_bring_up(&self, id: u16, generation: u64, holds: u64) {
        let me = self.clone();
        tokio::spawn(async move {
            me.bring_up(id, generation, holds).await;
            let mut slots = me.inner.slots.write();
            if let Some(s) = slots.get_mut(id as usize)
                && s.generation == generation
            {
                s.bringing_up = false;
            }
        });
    }

    /// Connects to a (re)registered worker and gives it its part of the current plan, unless it
    /// says it holds it already (`holds`, a plan id); only then does it serve.
    async fn bring_up(&self, id: u16, generation: u64, holds: u64) {
        let addr = self.inner.slots.read()[id as usize].addr;
        let conn = match Lanes::connect(&self.inner.lane_eps, addr, Duration::from_secs(3)).await {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!("cannot reach worker {id} at {addr}: {e}");
                return;
            }
        };
        if let Some(active) = self.active()
            && active.plan_id != holds
            && let Some(p) = active.slots.iter().position(|&s| s == id)
        {
            tracing::info!("redeploying plan {} to worker {id}", active.plan_id);
            if let Err(e) = self.deploy_one(conn.first(), &active, p as u16).await {
                tracing::error!("redeploying to worker {id} failed: {e}");
                return;
            }
        }
        let mut slots = self.inner.slots.write();
        let s = &mut slots[id as usize];
        if s.generation != generation {
            return; // It registered again meanwhile; that registration wins.
        }
        s.conn = Some(conn);
        s.deployed_plan = self.active().map_or(0, |a| a.plan_id);
        s.last_seen = Instant::now();
        s.healthy = true;
        tracing::info!("worker {id} at {addr} is up");
    }

    /// Records a heartbeat. A worker that was marked down for falling silent, but is
    /// heartbeating again, is brought back up: a stall (a loaded machine, a paused VM) must not
    /// take a live worker out of the cluster for good.
    fn heartbeat(&self, hb: Heartbeat) {
        let revive = {
            let mut slots = self.inner.slots.write();
            let Some(s) = slots.get_mut(hb.worker as usize) else { return };
            s.last_seen = Instant::now();
            s.queue = hb.queue;
            s.counters = hb.cores;
            let revive = !s.healthy && !s.bringing_up;
            if revive {
                s.bringing_up = true;
            }
            revive.then_some((s.id, s.generation, hb.plan_id))
        };
        if let Some((id, generation, holds)) = revive {
            tracing::info!("worker {id} is heartbeating again; bringing it back up");
            self.spawn_bring_up(id, generation, holds);
        }
    }

    /// Marks workers down when they fall silent or their connection closes.
    async fn monitor(&self) {
        let mut tick = tokio::time::interval(Duration::from_millis(100));
        loop {
            tick.tick().await;
            let mut slots = self.inner.slots.write();
            for s in slots.iter_mut() {
                let closed = s.conn.as_ref().is_some_and(|c| c.close_reason().is_some());
                if s.healthy && (closed || s.last_seen.elapsed() > self.inner.cfg.dead_after) {
                    s.healthy = false;
                    tracing::warn!(
                        "worker {} at {} is down ({})",
                        s.id,
                        s.addr,
                        if closed { "connection closed" } else { "no heartbeat" }
                    );
                }
            }
        }
    }

    /// The cluster as a topology: every registered worker, healthy or not, in id order.
    pub fn topology(&self) -> Topology {
        Topology {
            workers: self
                .inner
                .slots
                .read()
                .iter()
                .map(|s| WorkerShape {
                    cores: s.hello.cores,
                    memory_bytes: s.hello.memory_bytes,
                    core_memory_bytes: None,
                })
                .collect(),
        }
    }

    pub fn status(&self) -> ClusterInfo {
        let slots = self.inner.slots.read();
        ClusterInfo {
            workers: slots
                .iter()
                .map(|s| WorkerInfo {
                    id: s.id,
                    name: s.hello.name.clone(),
                    addr: s.addr.to_string(),
                    healthy: s.healthy,
                    cores: s.hello.cores,
                    memory_bytes: s.hello.memory_bytes,
                    bytes_held: s.bytes_held,
                    queue: s.queue,
                    requests: s.requests,
                    engine_ns: s.engine_ns,
                    core_counters: s.counters.clone(),
                    last_seen_ms: s.last_seen.elapsed().as_millis() as u64,
                    cpu_model: s.hello.cpu_model.clone(),
                    gpu: s.hello.gpu.clone(),
                })
                .collect(),
            plan_id: self.active().map(|a| a.plan_id),
            model: self.active().map(|a| a.spec.name.clone()),
            queries: self.inner.queries.load(Ordering::Relaxed),
            query_errors: self.inner.query_errors.load(Ordering::Relaxed),
        }
    }

    /// Deploys `plan` for `spec` on the cluster: every worker of the plan's topology gets its
    /// part, in parallel; the plan becomes active once all have it.
    pub async fn deploy(&self, spec: ModelSpec, plan: Plan) -> Result<DeployedInfo, WireError> {
        let bad = |m: String| WireError::new(ErrorKind::Deploy, m);
        spec.validate().map_err(|e| bad(e.to_string()))?;
        plan.validate(&spec).map_err(|e| bad(e.to_string()))?;
        let _one = self.inner.deploy_lock.lock().await;
        let need = plan.topology.workers.len();
        // The plan's workers are the cluster's healthy ones, in id order.
        let (mapping, conns): (Vec<u16>, Vec<(u16, quinn::Connection)>) = {
            let slots = self.inner.slots.read();
            let up: Vec<&Slot> = slots.iter().filter(|s| s.conn.is_some() && s.healthy).collect();
            if up.len() < need {
                return Err(bad(format!(
                    "the plan is for {need} workers but {} of the cluster's {} are up; wait for the workers or make the plan for this cluster",
                    up.len(),
                    slots.len()
                )));
            }
            let mapping: Vec<u16> = up.iter().take(need).map(|s| s.id).collect();
            let conns = up
                .iter()
                .take(need)
                .enumerate()
                .map(|(p, s)| (p as u16, s.conn.as_ref().unwrap().first().clone()))
                .collect();
            (mapping, conns)
        };
        let hot = hot_ids(&spec, &plan).await;
        let (columns, width) = route::columns(&spec);
        let dims = spec.tables.iter().map(|t| t.dim as usize).collect();
        let plan_id =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(1, |d| d.as_nanos() as u64);
        let inflight = plan.knobs.inflight_per_worker as usize;
        let active = Arc::new(Active { plan_id, spec, plan, slots: mapping, hot, columns, width, dims });
        let started = Instant::now();
        let results = futures_all(conns.iter().map(|(w, c)| {
            let active = active.clone();
            let me = self.clone();
            let (w, c) = (*w, c.clone());
            async move { (w, me.deploy_one(&c, &active, w).await) }
        }))
        .await;
        let mut info = DeployedInfo { plan_id, ..Default::default() };
        for (w, r) in results {
            let id = active.slots[w as usize];
            let d = r.map_err(|e| bad(format!("worker {id}: {e}")))?;
            info.bytes += d.bytes;
            info.huge_page_bytes += d.huge_page_bytes;
            let mut slots = self.inner.slots.write();
            let s = &mut slots[id as usize];
            s.deployed_plan = plan_id;
            s.bytes_held = d.bytes;
            s.permits = Arc::new(Semaphore::new(inflight.max(1)));
        }
        info.seconds = started.elapsed().as_secs_f64();
        *self.inner.active.write() = Some(active.clone());
        tracing::info!("deployed plan {plan_id} ({}) on {need} workers in {:.2}s", active.plan.summary(), info.seconds);
        Ok(info)
    }

    async fn deploy_one(
        &self,
        conn: &quinn::Connection,
        active: &Active,
        w: u16,
    ) -> Result<DeployedInfo, TransportError> {
        let mut a = active.plan.assignment(&active.spec, w);
        a.fill_hot_ids(&active.plan, |t, n| active.hot[t].iter().take(n).copied().collect());
        let (resp, _) = call(
            conn,
            &Request::Deploy { plan_id: active.plan_id, assignment: a },
            Body::Empty,
            &self.inner.limits,
            Duration::from_secs(600),
        )
        .await?;
        match resp {
            Response::Deployed(d) => Ok(d),
            other => {
                Err(TransportError::Remote(WireError::new(ErrorKind::Internal, format!("unexpected reply {other:?}"))))
            }
        }
    }

    /// Serves one query (from a client, or from a tuning job in this process) and counts it.
    pub async fn query(&self, head: QueryHead, body: Vec<u32>) -> Result<(PooledHead, Vec<f32>), WireError> {
        let t0 = Instant::now();
        let (samples, lookups) = (head.batch_size as u64, head.ids as u64);
        self.inner.queries.fetch_add(1, Ordering::Relaxed);
        let r = self.query_inner(head, body).await;
        match &r {
            Ok(_) => self.inner.stats.served(t0.elapsed(), samples, lookups),
            Err(_) => {
                self.inner.query_errors.fetch_add(1, Ordering::Relaxed);
                self.inner.stats.failed();
            }
        }
        r
    }

    /// Live query statistics.
    pub fn query_stats(&self) -> crate::stats::QuerySnapshot {
        self.inner.stats.snapshot()
    }

    async fn query_inner(&self, head: QueryHead, mut body: Vec<u32>) -> Result<(PooledHead, Vec<f32>), WireError> {
        let t0 = Instant::now();
        let active = self.active().ok_or_else(|| {
            WireError::new(
                ErrorKind::NoDeployment,
                "nothing is deployed: deploy a plan first (embtune up or embtune bench --coordinator)",
            )
        })?;
        if head.spec_digest != 0 && head.spec_digest != active.spec.digest() {
            return Err(WireError::new(
                ErrorKind::WrongModel,
                format!(
                    "the batch was made for another model (digest {:#x}); the cluster serves `{}` ({:#x})",
                    head.spec_digest,
                    active.spec.name,
                    active.spec.digest()
                ),
            ));
        }
        if head.batch_size > MAX_BATCH || head.ids > MAX_IDS {
            return Err(WireError::new(
                ErrorKind::BatchTooLarge,
                format!(
                    "batch of {} samples and {} ids exceeds the limits ({MAX_BATCH} samples, {MAX_IDS} ids)",
                    head.batch_size, head.ids
                ),
            ));
        }
        if body.len() as u64 != head.ids as u64 + head.offsets as u64 {
            return Err(WireError::new(ErrorKind::BadFrame, "the body does not hold the announced ids and offsets"));
        }
        let offsets = body.split_off(head.ids as usize);
        let batch = QueryBatch { batch_size: head.batch_size, num_tables: head.num_tables, offsets, ids: body };
        batch.check_layout().map_err(|e| WireError::new(ErrorKind::BadFrame, e.to_string()))?;
        let rows: Vec<u64> = active.spec.tables.iter().map(|t| t.rows).collect();
        if batch.num_tables as usize != rows.len() {
            return Err(WireError::new(
                ErrorKind::UnknownTable,
                format!("the batch has {} tables; `{}` has {}", batch.num_tables, active.spec.name, rows.len()),
            ));
        }
        batch.check_ids(&rows).map_err(|e| WireError::new(ErrorKind::RowOutOfRange, e.to_string()))?;

        let bs = batch.batch_size as usize;
        // A replica that fails (down, or too slow) is excluded and the query runs once more:
        // failover is rare, and re-running the whole query keeps the sums simple and exact.
        let mut avoid: Vec<u16> = Vec::new();
        let (mut out, engine_us, fanout) = loop {
            let (healthy, replica) = self.choose(&active, &avoid);
            let subs = route::split(&active.spec, &active.plan, &batch, replica, &healthy).map_err(|e| {
                let e = match e {
                    // Name the registered worker, not its position in the plan.
                    route::RouteError::ShardUnavailable { table, shard, rows, worker } => {
                        route::RouteError::ShardUnavailable {
                            table,
                            shard,
                            rows,
                            worker: active.slots[worker as usize],
                        }
                    }
                    other => other,
                };
                WireError::new(ErrorKind::ShardUnavailable, e.to_string())
            })?;
            let results = futures_all(subs.iter().map(|s| {
                let (me, active, s) = (self.clone(), active.clone(), s.clone());
                async move { me.sub_request(&active, &s, head.batch_size).await }
            }))
            .await;
            let mut out: Option<Vec<f32>> = None;
            let (mut engine_us, mut error, mut retry) = (0u32, None, false);
            let alone = subs.len() == 1;
            for (s, r) in subs.iter().zip(results) {
                match r {
                    // One worker answered for every table, in spec order: its reply is the output
                    // as it is (replicated plans send every batch this way). Taking it saves
                    // zeroing and adding a buffer of hundreds of kilobytes per batch.
                    Ok((ph, reply)) if alone && route::covers_all_in_order(&s.tables, active.dims.len()) => {
                        out = Some(reply);
                        engine_us = engine_us.max(ph.engine_us);
                    }
                    Ok((ph, reply)) => {
                        let out = out.get_or_insert_with(|| vec![0f32; bs * active.width]);
                        route::accumulate(out, active.width, &active.columns, &active.dims, &s.tables, &reply, bs);
                        engine_us = engine_us.max(ph.engine_us);
                    }
                    Err(e)
                        if e.kind == ErrorKind::ShardUnavailable && Some(s.worker) == replica && avoid.is_empty() =>
                    {
                        tracing::warn!("replica {} failed ({e}); retrying on another", active.slots[s.worker as usize]);
                        self.mark_suspect(active.slots[s.worker as usize]);
                        avoid.push(s.worker);
                        retry = true;
                    }
                    Err(e) => {
                        error.get_or_insert(e);
                    }
                }
            }
            if let Some(e) = error {
                return Err(e);
            }
            if !retry {
                break (out.unwrap_or_else(|| vec![0f32; bs * active.width]), engine_us, subs.len() as u16);
            }
        };
        route::finalize_mean(&active.spec, &batch, &mut out, active.width, &active.columns);
        Ok((
            PooledHead {
                batch_size: head.batch_size,
                width: active.width as u32,
                engine_us,
                queue: 0,
                coordinator_us: t0.elapsed().as_micros() as u32,
                fanout,
            },
            out,
        ))
    }

    /// Health of the plan's workers (by position in the plan) and a replica among them for the
    /// replicated tables, avoiding the plan positions in `avoid`. Workers that joined after the
    /// plan was made hold nothing of it.
    fn choose(&self, active: &Active, avoid: &[u16]) -> (Vec<bool>, Option<u16>) {
        let (healthy, loads): (Vec<bool>, Vec<Option<u64>>) = {
            let guard = self.inner.slots.read();
            let slot = |p: usize| &guard[active.slots[p] as usize];
            let n = active.slots.len();
            let healthy = (0..n).map(|p| slot(p).healthy && slot(p).conn.is_some()).collect();
            let loads = (0..n)
                .map(|p| {
                    let s = slot(p);
                    (s.healthy && s.conn.is_some() && !avoid.contains(&(p as u16)))
                        .then(|| s.queue as u64 + s.inflight.load(Ordering::Relaxed) as u64)
                })
                .collect();
            (healthy, loads)
        };
        let draws = {
            let mut r = self.inner.rng.lock();
            (r.next_u64(), r.next_u64())
        };
        (healthy, route::pick_replica(&loads, draws))
    }

    fn mark_suspect(&self, w: u16) {
        if let Some(s) = self.inner.slots.write().get_mut(w as usize) {
            s.healthy = false;
        }
    }

    async fn sub_request(
        &self,
        active: &Active,
        s: &route::SubRequest,
        batch_size: u32,
    ) -> Result<(PooledHead, Vec<f32>), WireError> {
        let id = active.slots[s.worker as usize];
        let (conn, inflight, permits) = {
            let slots = self.inner.slots.read();
            let slot = &slots[id as usize];
            match &slot.conn {
                Some(c) => (c.clone(), slot.inflight.clone(), slot.permits.clone()),
                None => {
                    return Err(WireError::new(ErrorKind::ShardUnavailable, format!("worker {id} is not connected")));
                }
            }
        };
        let _permit = permits.acquire_owned().await.map_err(|_| WireError::new(ErrorKind::Internal, "closed"))?;
        inflight.fetch_add(1, Ordering::Relaxed);
        let r = self.call_striped(&conn, active, s, batch_size).await;
        inflight.fetch_sub(1, Ordering::Relaxed);
        match r {
            Ok((ph, words)) => {
                let mut slots = self.inner.slots.write();
                let slot = &mut slots[id as usize];
                slot.requests += 1;
                slot.engine_ns += ph.engine_us as u64 * 1000;
                slot.queue = ph.queue;
                drop(slots);
                Ok((ph, bytemuck_floats(words)))
            }
            // A reply of the wrong kind: name the worker that sent it.
            Err(TransportError::Remote(e)) if e.kind == ErrorKind::Internal => {
                Err(WireError::new(ErrorKind::Internal, format!("worker {id} answered: {}", e.message)))
            }
            Err(TransportError::Remote(e)) => Err(e),
            Err(e) => Err(WireError::new(ErrorKind::ShardUnavailable, format!("worker {id}: {e}"))),
        }
    }

    /// The best plans for a dataset, each with its trial.
    pub fn best_for(
        &self,
        dataset: &str,
    ) -> Result<Vec<(embtune_protocol::tuning::BestRecord, Option<embtune_protocol::tuning::Trial>)>, String> {
        let recs = self.store().best_for(dataset).map_err(|e| e.to_string())?;
        Ok(recs
            .into_iter()
            .map(|r| {
                let t = self.store().trials(&r.job).ok().and_then(|ts| ts.into_iter().find(|t| t.n == r.trial));
                (r, t)
            })
            .collect())
    }

    /// Seconds since the coordinator started.
    pub fn uptime(&self) -> Duration {
        self.inner.started.elapsed()
    }
}

impl Coordinator {
    /// Sends a sub-request to its worker: whole on the next lane, or, when its reply is large,
    /// as stripes of consecutive samples on as many lanes at once ([`lanes::stripes`]), whose
    /// replies are joined in order.
    async fn call_striped(
        &self,
        conn: &Lanes,
        active: &Active,
        s: &route::SubRequest,
        batch_size: u32,
    ) -> Result<(PooledHead, Vec<u32>), TransportError> {
        let bs = batch_size as usize;
        let k = lanes::stripes(bs * route::reply_width(s, &active.dims) * 4, conn.len(), bs);
        let lookup = |n: u32, s: &route::SubRequest| {
            let head = LookupHead {
                plan_id: active.plan_id,
                batch_size: n,
                tables: s.tables.clone(),
                offsets: s.offsets.len() as u32,
                ids: s.ids.len() as u32,
            };
            (Request::Lookup(head), Body::Parts(route::body(s)))
        };
        let calls = if k == 1 {
            vec![lookup(batch_size, s)]
        } else {
            route::stripe(s, bs, k).iter().map(|(n, st)| lookup(*n, st)).collect()
        };
        let replies = conn.call_all(calls, self.inner.limits, self.inner.cfg.request_timeout).await?;
        crate::client::pooled_parts(replies)
    }
}

fn bytemuck_floats(words: Vec<u32>) -> Vec<f32> {
    // u32 and f32 have the same size and alignment; reinterpret without copying.
    let mut words = std::mem::ManuallyDrop::new(words);
    let (ptr, len, cap) = (words.as_mut_ptr(), words.len(), words.capacity());
    // SAFETY: same layout; every bit pattern is a valid f32.
    unsafe { Vec::from_raw_parts(ptr as *mut f32, len, cap) }
}

/// Hot rows per table for the plan's hot-cache tables, from a profile of the workload's own
/// generator (batches disjoint from any benchmark's).
async fn hot_ids(spec: &ModelSpec, plan: &Plan) -> Vec<Vec<u32>> {
    let need: Vec<bool> = plan.tables.iter().map(|t| matches!(t.flow, DataFlow::HotCache { .. })).collect();
    if !need.iter().any(|&n| n) {
        return vec![Vec::new(); spec.tables.len()];
    }
    let spec = spec.clone();
    let plan = plan.clone();
    tokio::task::spawn_blocking(move || {
        let Ok(g) = BatchGenerator::new(&spec) else { return vec![Vec::new(); spec.tables.len()] };
        let profile = embtune_workloads::profile::profile_generator(&g);
        plan.tables
            .iter()
            .enumerate()
            .map(|(t, tp)| match tp.flow {
                DataFlow::HotCache { hot_rows, .. } => {
                    profile.tables[t].hottest(hot_rows as usize * tp.placement.shards().max(1))
                }
                _ => Vec::new(),
            })
            .collect()
    })
    .await
    .unwrap_or_default()
}

/// Runs futures concurrently and collects their results in order.
pub async fn futures_all<F>(futs: impl IntoIterator<Item = F>) -> Vec<F::Output>
where
    F: std::future::Future + Send + 'static,
    F::Output: Send + 'static,
{
    let handles: Vec<_> = futs.into_iter().map(tokio::spawn).collect();
    let mut out = Vec::with_capacity(handles.len());
    for h in handles {
        out.push(h.await.expect("a task of the coordinator panicked"));
    }
    out
}
