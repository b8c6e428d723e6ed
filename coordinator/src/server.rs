//! The coordinator process: the cluster's control plane.
//!
//! It drives the membership state machine ([`crate::membership`]) with registrations,
//! heartbeats and its own clock, deploys plans to workers (a worker that comes back gets its part
//! again before it serves), and publishes the routing table (`GetRoutes`) by which clients send
//! queries straight to the workers. It stays out of the data path: it relays a query only for
//! a thin client that asks it to (`Query`, `--via coordinator`), through the same direct client
//! everyone else uses. Load generators register with it, and it directs their rounds
//! (`RunLoad`, and every tuning job's measurements) and merges their reports.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU16, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use parking_lot::{Mutex, RwLock};

use embtune_client::loadgen::{decode_histogram, merge};
use embtune_client::service::Runner;
use embtune_client::{Client, ClientConfig, RouteSource};
use embtune_protocol::codec::FrameLimits;
use embtune_protocol::wire::{
    ClusterInfo, DeployedInfo, DeploymentInfo, DeploymentRecord, ErrorKind, Heartbeat, LoadReport, LoadSpec,
    LoadgenHello, LoadgenInfo, PooledHead, QueryHead, Request, Response, RouteTable, WireError, WorkerHello,
    WorkerInfo,
};
use embtune_protocol::{DataFlow, Plan, Topology, WorkerShape};
use embtune_transport::lanes::{self, Lanes};
use embtune_transport::rpc::{Body, Peer, accept_loop, call};
use embtune_transport::{Identity, TransportError, Tuning, certs, server_endpoint};
use embtune_workloads::{AccessProfile, BatchGenerator, ModelSpec, QueryBatch, TableProfile};

use crate::error::CoordinatorError;
use crate::membership::{Action, Membership};

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
    /// Live re-planning (off unless asked for).
    pub replan: crate::replan::ReplanConfig,
    /// How long workers keep serving the plan a redeployment replaced, after the new one is
    /// active: clients refresh their routes every 250 ms, so they have all moved by then.
    pub retire_after: Duration,
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
            lanes: lanes::DEFAULT_LANES,
            replan: Default::default(),
            retire_after: Duration::from_secs(2),
        }
    }
}

/// What is deployed.
pub struct Active {
    pub plan_id: u64,
    pub spec: ModelSpec,
    pub plan: Plan,
    /// Which registered worker plays each worker of the plan: plans are made for the workers
    /// that are up, which after a failure need not be the first ones.
    pub slots: Vec<u16>,
    pub hot: Vec<Vec<u32>>,
}

/// A connected load generator.
struct Loadgen {
    id: u16,
    hello: LoadgenHello,
    conn: quinn::Connection,
}

struct Inner {
    cfg: CoordinatorConfig,
    identity: Identity,
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
    membership: Mutex<Membership>,
    /// Control connections to the workers (deployments), by registered id, with the
    /// registration generation they were made for.
    conns: RwLock<std::collections::HashMap<u16, (u64, Lanes)>>,
    active: RwLock<Option<Arc<Active>>>,
    deploy_lock: tokio::sync::Mutex<()>,
    /// The direct client the coordinator relays queries through, made on first use.
    relay: tokio::sync::OnceCell<Client>,
    /// Runs load rounds in this process when no load generator is connected.
    own_load: tokio::sync::OnceCell<Arc<Runner>>,
    loadgens: Mutex<Vec<Loadgen>>,
    next_loadgen: AtomicU16,
    queries: AtomicU64,
    query_errors: AtomicU64,
    stats: crate::stats::QueryStats,
    limits: FrameLimits,
    started: Instant,
    replan: crate::replan::ReplanState,
}

/// A running coordinator; cheap to clone.
#[derive(Clone)]
pub struct Coordinator {
    inner: Arc<Inner>,
}

impl Coordinator {
    /// Binds the endpoint and starts serving and monitoring.
    pub async fn start(cfg: CoordinatorConfig) -> Result<Coordinator, TransportError> {
        let identity: Identity = certs::load(&cfg.cluster, None, None)?;
        let store = embtune_tuner::store::Store::open(&cfg.data_dir.join("store"))
            .map_err(|e| TransportError::Stream(e.to_string()))?;
        let ep = server_endpoint(cfg.listen, &identity, &Tuning::default())?;
        let lane_eps = embtune_transport::lanes::endpoints(&identity, &Tuning::default(), 1)?;
        let c = Coordinator {
            inner: Arc::new(Inner {
                store,
                jobs: Mutex::new(Default::default()),
                membership: Mutex::new(Membership::new(cfg.dead_after)),
                unwritten: Default::default(),
                cfg,
                identity,
                ep: ep.clone(),
                lane_eps,
                conns: RwLock::new(Default::default()),
                active: RwLock::new(None),
                deploy_lock: tokio::sync::Mutex::new(()),
                relay: tokio::sync::OnceCell::new(),
                own_load: tokio::sync::OnceCell::new(),
                loadgens: Mutex::new(Vec::new()),
                next_loadgen: AtomicU16::new(0),
                queries: AtomicU64::new(0),
                query_errors: AtomicU64::new(0),
                stats: Default::default(),
                limits: FrameLimits::default(),
                started: Instant::now(),
                replan: Default::default(),
            }),
        };
        let me = c.clone();
        tokio::spawn(accept_loop(ep, c.inner.limits, move |req, body, peer| {
            let me = me.clone();
            async move { me.handle(req, body, peer).await }
        }));
        c.restore().await;
        let me = c.clone();
        tokio::spawn(async move { me.monitor().await });
        c.resume_interrupted();
        if c.inner.cfg.replan.mode != embtune_protocol::replan::ReplanMode::Off {
            tokio::spawn(c.clone().replan_loop(c.inner.cfg.replan.clone()));
        }
        Ok(c)
    }

    /// Routes by the deployment kept in the store, if any: after a restart the coordinator
    /// serves the same routing table, and its workers, registering again at the same
    /// addresses and saying they hold the plan, serve on without a redeployment.
    async fn restore(&self) {
        let d = match self.store().deployment() {
            Ok(Some(d)) => d,
            Ok(None) => return,
            Err(e) => {
                tracing::warn!("the stored deployment is unreadable ({e}); starting without one");
                return;
            }
        };
        let mut slots = Vec::with_capacity(d.workers.len());
        {
            let mut m = self.inner.membership.lock();
            for (p, a) in d.workers.iter().enumerate() {
                let Ok(addr) = a.parse::<SocketAddr>() else {
                    tracing::warn!("the stored deployment names a bad address `{a}`; starting without it");
                    return;
                };
                let shape = &d.plan.topology.workers[p.min(d.plan.topology.workers.len().saturating_sub(1))];
                let hello = WorkerHello {
                    name: format!("{addr} (from the stored deployment)"),
                    listen: a.clone(),
                    cores: shape.cores,
                    memory_bytes: shape.memory_bytes,
                    l2_bytes: 0,
                    llc_bytes: 0,
                    llc_cores: 0,
                    huge_pages: false,
                    cpu_model: String::new(),
                    calibration: None,
                    gpu: None,
                    holds: 0,
                };
                slots.push(m.expect(hello, addr, Instant::now()));
            }
        }
        let hot = hot_ids(&d.spec, &d.plan).await;
        tracing::info!("routing by the stored deployment, plan {} ({})", d.plan_id, d.plan.summary());
        *self.inner.active.write() =
            Some(Arc::new(Active { plan_id: d.plan_id, spec: d.spec, plan: d.plan, slots, hot }));
    }

    /// The store of tuning jobs.
    pub fn store(&self) -> &embtune_tuner::store::Store {
        &self.inner.store
    }

    /// What every registered worker said when it registered, in id order.
    pub fn hellos(&self) -> Vec<WorkerHello> {
        self.inner.membership.lock().members().iter().map(|m| m.hello.clone()).collect()
    }

    pub(crate) fn replan_state(&self) -> &crate::replan::ReplanState {
        &self.inner.replan
    }

    /// One request to a registered worker over its control connection.
    pub(crate) async fn call_worker(
        &self,
        id: u16,
        req: &Request,
        timeout: Duration,
    ) -> Result<Response, TransportError> {
        let conn = self
            .inner
            .conns
            .read()
            .get(&id)
            .map(|(_, l)| l.first().clone())
            .ok_or_else(|| TransportError::Stream(format!("worker {id} is not connected")))?;
        let (resp, _) = call(&conn, req, Body::Empty, &self.inner.limits, timeout).await?;
        match resp {
            Response::Error(e) => Err(TransportError::Remote(e)),
            r => Ok(r),
        }
    }

    /// Asks every connected worker to stop the deployment it is making, at once. The
    /// deployment call waiting on them then fails with their "cancelled" errors, and the
    /// plan that was active stays active.
    pub async fn cancel_deploy(&self) {
        let ids: Vec<u16> = self.inner.conns.read().keys().copied().collect();
        futures_all(ids.into_iter().map(|id| {
            let me = self.clone();
            async move {
                if let Err(e) = me.call_worker(id, &Request::CancelDeploy, Duration::from_secs(5)).await {
                    tracing::warn!("could not cancel worker {id}'s deployment: {e}");
                }
            }
        }))
        .await;
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

    /// Whether any tuning job runs now (it deploys plans of its own).
    pub fn any_job_running(&self) -> bool {
        !self.inner.jobs.lock().is_empty()
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
            Request::Register(hello) => self.register(hello, &peer),
            Request::Heartbeat(hb) => {
                self.heartbeat(hb);
                (Response::Ack, Body::Empty)
            }
            Request::GetRoutes => (Response::Routes(self.routes().map(Box::new)), Body::Empty),
            Request::RegisterLoadgen(hello) => {
                let id = self.register_loadgen(hello, peer.conn);
                (Response::LoadgenRegistered { id }, Body::Empty)
            }
            Request::RunLoad { loadgens, spec } => match self.run_load(loadgens, &spec).await {
                Ok(r) => (Response::Load(Box::new(r)), Body::Empty),
                Err(e) => fail(e),
            },
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
                Err(e) => fail(e.into()),
            },
            Request::GetJob { id } => match self.job_detail(&id) {
                Ok((job, trials)) => (Response::JobDetail { job: Box::new(job), trials }, Body::Empty),
                Err(e) => fail(e.into()),
            },
            Request::ListJobs => match self.list_jobs() {
                Ok(j) => (Response::Jobs(j), Body::Empty),
                Err(e) => fail(e.into()),
            },
            Request::ResumeJob { id } => match self.resume_job(&id) {
                Ok(()) => (Response::Ack, Body::Empty),
                Err(e) => fail(e.into()),
            },
            Request::BestFor { dataset } => match self.best_for(&dataset) {
                Ok(b) => (Response::Best(b), Body::Empty),
                Err(e) => fail(e.into()),
            },
            Request::GetReplan => (Response::Replan(Box::new(self.replan_status())), Body::Empty),
            Request::CancelDeploy => {
                self.cancel_deploy().await;
                (Response::Ack, Body::Empty)
            }
            Request::Deploy { .. }
            | Request::Lookup(_)
            | Request::WorkerStats
            | Request::LoadRound(_)
            | Request::TakeTraffic
            | Request::Retire { .. } => fail(WireError::new(
                ErrorKind::NotSupported,
                "this is a coordinator; look-ups go to the workers (GetRoutes)",
            )),
        }
    }

    /// The current deployment.
    pub fn active(&self) -> Option<Arc<Active>> {
        self.inner.active.read().clone()
    }

    /// The routing table of the current deployment.
    pub fn routes(&self) -> Option<RouteTable> {
        let a = self.active()?;
        let m = self.inner.membership.lock();
        Some(RouteTable {
            epoch: a.plan_id,
            spec: a.spec.clone(),
            plan: a.plan.clone(),
            workers: m.route_workers(&a.slots),
            generation: m.generation(),
        })
    }

    fn register(&self, hello: WorkerHello, peer: &Peer) -> (Response, Body) {
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
        let (id, action) = self.inner.membership.lock().register(hello, addr, Instant::now());
        // The old process's connection is of no use to the new one.
        self.inner.conns.write().remove(&id);
        tracing::info!("worker {id} registered from {} (serving at {addr})", peer.addr);
        self.act(action);
        (Response::Registered { worker: id, heartbeat_ms: self.inner.cfg.heartbeat.as_millis() as u32 }, Body::Empty)
    }

    /// Carries out what the membership state machine asks for.
    fn act(&self, action: Action) {
        let Action::BringUp { id, generation, holds } = action;
        let me = self.clone();
        tokio::spawn(async move {
            if !me.bring_up(id, generation, holds).await {
                me.inner.membership.lock().bring_up_ended(id, generation);
            }
        });
    }

    /// Connects to a (re)registered worker and gives it its part of the current plan, unless it
    /// says it holds it already (`holds`, a plan id); only then does it serve.
    async fn bring_up(&self, id: u16, generation: u64, holds: u64) -> bool {
        let Some(addr) = self.inner.membership.lock().get(id).map(|m| m.addr) else { return false };
        let conn = match Lanes::connect(&self.inner.lane_eps, addr, Duration::from_secs(3)).await {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!("cannot reach worker {id} at {addr}: {e}");
                return false;
            }
        };
        let active = self.active();
        if let Some(active) = &active
            && active.plan_id != holds
            && let Some(p) = active.slots.iter().position(|&s| s == id)
        {
            tracing::info!("redeploying plan {} to worker {id}", active.plan_id);
            match self.deploy_one(conn.first(), active, p as u16).await {
                Ok(d) => self.inner.membership.lock().deployed(id, active.plan_id, d.bytes),
                Err(e) => {
                    tracing::error!("redeploying to worker {id} failed: {e}");
                    return false;
                }
            }
        }
        let plan = active.map_or(0, |a| a.plan_id);
        {
            let mut m = self.inner.membership.lock();
            if !m.brought_up(id, generation, plan, Instant::now()) {
                return true; // It registered again meanwhile; that registration's bring-up wins.
            }
            self.inner.conns.write().insert(id, (generation, conn));
        }
        tracing::info!("worker {id} at {addr} is up");
        self.refresh_relay().await;
        true
    }

    /// Records a heartbeat; a worker that was marked down but heartbeats again is brought back.
    fn heartbeat(&self, hb: Heartbeat) {
        let worker = hb.worker;
        let action = self.inner.membership.lock().heartbeat(hb, Instant::now());
        if let Some(a) = action {
            tracing::info!("worker {worker} is heartbeating again; bringing it back up");
            self.act(a);
        }
    }

    /// Marks workers down when they fall silent or their connection closes, and forgets load
    /// generators whose connection closed.
    async fn monitor(&self) {
        let mut tick = tokio::time::interval(Duration::from_millis(100));
        let mut generation = 0;
        loop {
            tick.tick().await;
            let closed: Vec<u16> = self
                .inner
                .conns
                .read()
                .iter()
                .filter(|(_, (_, c))| c.close_reason().is_some())
                .map(|(&id, _)| id)
                .collect();
            let changed = {
                let mut m = self.inner.membership.lock();
                let mut down: Vec<(u16, crate::membership::DownReason)> =
                    closed.iter().filter_map(|&id| m.connection_closed(id).map(|r| (id, r))).collect();
                down.extend(m.tick(Instant::now()));
                for (id, why) in down {
                    let addr = m.get(id).map(|w| w.addr.to_string()).unwrap_or_default();
                    tracing::warn!("worker {id} at {addr} is down ({why})");
                }
                let changed = m.generation() != generation;
                generation = m.generation();
                changed
            };
            if changed {
                // The relay routes by the coordinator's own table: give it the new health.
                self.refresh_relay().await;
            }
            self.inner.loadgens.lock().retain(|l| {
                let open = l.conn.close_reason().is_none();
                if !open {
                    tracing::info!("load generator {} ({}) disconnected", l.id, l.hello.name);
                }
                open
            });
        }
    }

    /// The cluster as a topology: every registered worker, healthy or not, in id order.
    pub fn topology(&self) -> Topology {
        Topology::of(
            self.inner
                .membership
                .lock()
                .members()
                .iter()
                .map(|m| WorkerShape {
                    cores: m.hello.cores,
                    memory_bytes: m.hello.memory_bytes,
                    core_memory_bytes: None,
                })
                .collect(),
        )
    }

    pub fn status(&self) -> ClusterInfo {
        let m = self.inner.membership.lock();
        let now = Instant::now();
        ClusterInfo {
            workers: m
                .members()
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
                    requests: s.clients.iter().map(|c| c.requests).sum(),
                    engine_ns: s.counters.iter().map(|c| c.busy_ns).sum(),
                    core_counters: s.counters.clone(),
                    last_seen_ms: now.saturating_duration_since(s.last_seen).as_millis() as u64,
                    cpu_model: s.hello.cpu_model.clone(),
                    gpu: s.hello.gpu.clone(),
                    clients: s.clients.clone(),
                    deploying: s.deploying.clone(),
                })
                .collect(),
            plan_id: self.active().map(|a| a.plan_id),
            model: self.active().map(|a| a.spec.name.clone()),
            queries: self.inner.queries.load(Ordering::Relaxed),
            query_errors: self.inner.query_errors.load(Ordering::Relaxed),
            loadgens: self
                .inner
                .loadgens
                .lock()
                .iter()
                .map(|l| LoadgenInfo { id: l.id, name: l.hello.name.clone(), cores: l.hello.cores })
                .collect(),
        }
    }

    /// Deploys `plan` for `spec` on the cluster: every worker of the plan's topology gets its
    /// part, in parallel; the plan becomes active once all have it. The hot-cache tables' rows
    /// come from a profile of the spec made here; a caller that has one already (a tuning job)
    /// uses [`Coordinator::deploy_profiled`].
    pub async fn deploy(&self, spec: ModelSpec, plan: Plan) -> Result<DeployedInfo, WireError> {
        self.deploy_with(spec, plan, None).await
    }

    /// [`Coordinator::deploy`] with the hot rows taken from `profile`, the caller's profile of
    /// this spec, so that a job, which profiled its workload once, does not have it profiled
    /// again for every trial.
    pub async fn deploy_profiled(
        &self,
        spec: ModelSpec,
        plan: Plan,
        profile: &AccessProfile,
    ) -> Result<DeployedInfo, WireError> {
        self.deploy_with(spec, plan, Some(profile)).await
    }

    async fn deploy_with(
        &self,
        spec: ModelSpec,
        plan: Plan,
        profile: Option<&AccessProfile>,
    ) -> Result<DeployedInfo, WireError> {
        let bad = |m: String| WireError::new(ErrorKind::Deploy, m);
        spec.validate().map_err(|e| bad(e.to_string()))?;
        plan.validate(&spec).map_err(|e| bad(e.to_string()))?;
        if profile.is_some_and(|p| p.tables.len() != spec.tables.len()) {
            return Err(bad("the profile given is of another model".into()));
        }
        let _one = self.inner.deploy_lock.lock().await;
        let need = plan.topology.workers.len();
        // The plan's workers are the cluster's healthy ones, in id order.
        let (mapping, conns): (Vec<u16>, Vec<(u16, quinn::Connection)>) = {
            let m = self.inner.membership.lock();
            let conns = self.inner.conns.read();
            let up: Vec<u16> = m.healthy().into_iter().filter(|id| conns.contains_key(id)).collect();
            if up.len() < need {
                return Err(bad(format!(
                    "the plan is for {need} workers but {} of the cluster's {} are up; wait for the workers or make the plan for this cluster",
                    up.len(),
                    m.members().len()
                )));
            }
            let mapping: Vec<u16> = up.iter().take(need).copied().collect();
            let conns = mapping.iter().enumerate().map(|(p, id)| (p as u16, conns[id].1.first().clone())).collect();
            (mapping, conns)
        };
        let hot = match profile {
            Some(p) => hot_rows(&plan, &p.tables),
            None => hot_ids(&spec, &plan).await,
        };
        let plan_id =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(1, |d| d.as_nanos() as u64);
        let active = Arc::new(Active { plan_id, spec, plan, slots: mapping, hot });
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
            self.inner.membership.lock().deployed(id, plan_id, d.bytes);
        }
        info.seconds = started.elapsed().as_secs_f64();
        let record = DeploymentRecord {
            plan_id,
            spec: active.spec.clone(),
            plan: active.plan.clone(),
            workers: {
                let m = self.inner.membership.lock();
                active.slots.iter().map(|&id| m.get(id).map(|w| w.addr.to_string()).unwrap_or_default()).collect()
            },
        };
        if let Err(e) = self.store().put_deployment(&record) {
            tracing::warn!("the deployment is not kept in the store ({e}); a restarted coordinator will not know it");
        }
        *self.inner.active.write() = Some(active.clone());
        self.refresh_relay().await;
        self.retire_later(plan_id, active.slots.clone());
        tracing::info!("deployed plan {plan_id} ({}) on {need} workers in {:.2}s", active.plan.summary(), info.seconds);
        Ok(info)
    }

    /// Once clients have had time to move to plan `plan_id`, tells its workers to drop the plan
    /// it replaced (each kept it beside the new one while its memory allowed, so that queries
    /// routed by the old table were still served). A redeployment in between retires instead.
    fn retire_later(&self, plan_id: u64, workers: Vec<u16>) {
        let me = self.clone();
        tokio::spawn(async move {
            tokio::time::sleep(me.inner.cfg.retire_after).await;
            if me.active().map(|a| a.plan_id) != Some(plan_id) {
                return;
            }
            for id in workers {
                if let Err(e) = me.call_worker(id, &Request::Retire { keep: plan_id }, Duration::from_secs(5)).await {
                    tracing::debug!("worker {id} did not retire the plans before {plan_id}: {e}");
                }
            }
        });
    }

    async fn deploy_one(
        &self,
        conn: &quinn::Connection,
        active: &Active,
        w: u16,
    ) -> Result<DeployedInfo, TransportError> {
        let mut a = active.plan.assignment(&active.spec, w);
        a.plan_id = active.plan_id;
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

    /// A direct client in this process whose routes are the coordinator's own table: what
    /// relays queries for thin clients and loads the cluster when no load generator is
    /// connected.
    async fn relay(&self) -> Result<&Client, WireError> {
        self.inner
            .relay
            .get_or_try_init(|| async {
                let weak = Arc::downgrade(&self.inner);
                let source = RouteSource::Local(Arc::new(move || {
                    weak.upgrade().and_then(|inner| Coordinator { inner }.routes())
                }));
                let cfg = ClientConfig {
                    lanes: self.inner.cfg.lanes,
                    timeout: self.inner.cfg.request_timeout,
                    // The workers count relayed traffic as client 0.
                    id: Some(0),
                    ..ClientConfig::default()
                };
                Client::with_source(source, &self.inner.identity, cfg)
                    .await
                    .map_err(|e| WireError::new(ErrorKind::Internal, format!("starting the relay client: {e}")))
            })
            .await
    }

    /// Gives the relay client the current routing table (a new deployment, a worker's health).
    async fn refresh_relay(&self) {
        if let Some(r) = self.inner.relay.get()
            && let Err(e) = r.refresh().await
        {
            tracing::warn!("the relay client did not take the new routes: {e}");
        }
    }

    /// Serves one relayed query (a thin client's `--via coordinator`) and counts it.
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
        let (mut h, out) = self.relay().await?.query(&batch).await.map_err(|e| match e {
            TransportError::Remote(w) | TransportError::Frame(w) => w,
            other => WireError::new(ErrorKind::ShardUnavailable, other.to_string()),
        })?;
        h.coordinator_us = t0.elapsed().as_micros() as u32;
        Ok((h, out))
    }

    fn register_loadgen(&self, hello: LoadgenHello, conn: quinn::Connection) -> u16 {
        let id = self.inner.next_loadgen.fetch_add(1, Ordering::Relaxed);
        tracing::info!(
            "load generator {id} ({}, {} cores) registered from {}",
            hello.name,
            hello.cores,
            conn.remote_address()
        );
        self.inner.loadgens.lock().push(Loadgen { id, hello, conn });
        id
    }

    /// Load generators connected now.
    pub fn loadgens(&self) -> usize {
        self.inner.loadgens.lock().len()
    }

    /// Runs one round of `spec` on `n` connected load generators at once (0: every one; with
    /// none connected, on a client in this process), each offered an equal share of the
    /// concurrency or the arrival rate, and merges their reports.
    pub async fn run_load(&self, n: u32, spec: &LoadSpec) -> Result<LoadReport, WireError> {
        let chosen: Vec<(u16, quinn::Connection)> = {
            let l = self.inner.loadgens.lock();
            if n as usize > l.len() {
                return Err(WireError::new(
                    ErrorKind::NoLoadgen,
                    format!(
                        "asked for {n} load generators but {} are connected; start more with `embtune loadgen --coordinator {} --cluster DIR`",
                        l.len(),
                        self.local_addr()
                    ),
                ));
            }
            let take = if n == 0 { l.len() } else { n as usize };
            l.iter().take(take).map(|g| (g.id, g.conn.clone())).collect()
        };
        let report = if chosen.is_empty() {
            let runner = self.own_runner().await?;
            embtune_client::service::round(&runner, spec).await?
        } else {
            let k = chosen.len();
            let reports = futures_all(chosen.into_iter().enumerate().map(|(i, (id, conn))| {
                let mut s = spec.clone();
                s.concurrency = spec.concurrency.div_ceil(k as u32).max(1);
                s.qps = spec.qps / k as f64;
                s.seed = spec.seed.wrapping_add(i as u64);
                s.pool_first = spec.pool_first + i as u64 * spec.pool_batches as u64;
                let limits = self.inner.limits;
                async move {
                    let wait = Duration::from_millis((s.warmup_ms + s.duration_ms) as u64) + Duration::from_secs(300);
                    match call(&conn, &Request::LoadRound(s), Body::Empty, &limits, wait).await {
                        Ok((Response::Load(r), _)) => Ok(*r),
                        Ok((other, _)) => {
                            Err(WireError::new(ErrorKind::Internal, format!("load generator {id} answered {other:?}")))
                        }
                        Err(TransportError::Remote(e)) => Err(e),
                        Err(e) => Err(WireError::new(ErrorKind::NoLoadgen, format!("load generator {id}: {e}"))),
                    }
                }
            }))
            .await;
            let reports: Vec<LoadReport> = reports.into_iter().collect::<Result<_, _>>()?;
            merge(&reports)
        };
        self.inner.stats.served_round(
            &decode_histogram(&report.histogram),
            report.samples,
            report.lookups,
            report.errors,
            report.wire_bytes,
        );
        Ok(report)
    }

    async fn own_runner(&self) -> Result<Arc<Runner>, WireError> {
        let relay = self.relay().await?.clone();
        Ok(self.inner.own_load.get_or_init(|| async move { Arc::new(Runner::new(relay)) }).await.clone())
    }

    /// The best plans for a dataset, each with its trial.
    pub fn best_for(
        &self,
        dataset: &str,
    ) -> Result<Vec<(embtune_protocol::tuning::BestRecord, Option<embtune_protocol::tuning::Trial>)>, CoordinatorError>
    {
        let recs = self.store().best_for(dataset)?;
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

/// Hot rows per table for the plan's hot-cache tables, from a profile of the workload's own
/// generator (batches disjoint from any benchmark's), made only when the plan has such a table.
async fn hot_ids(spec: &ModelSpec, plan: &Plan) -> Vec<Vec<u32>> {
    if !plan.tables.iter().any(|t| matches!(t.flow, DataFlow::HotCache { .. })) {
        return vec![Vec::new(); spec.tables.len()];
    }
    let spec = spec.clone();
    let plan = plan.clone();
    tokio::task::spawn_blocking(move || {
        let Ok(g) = BatchGenerator::new(&spec) else { return vec![Vec::new(); spec.tables.len()] };
        hot_rows(&plan, &embtune_workloads::profile::profile_generator(&g).tables)
    })
    .await
    .unwrap_or_default()
}

/// Hot rows per table for the plan's hot-cache tables, the hottest of `profiles` (one per
/// table): each shard's share times the shard count, so that every shard finds its own.
fn hot_rows(plan: &Plan, profiles: &[TableProfile]) -> Vec<Vec<u32>> {
    plan.tables
        .iter()
        .zip(profiles)
        .map(|(tp, profile)| match tp.flow {
            DataFlow::HotCache { hot_rows, .. } => profile.hottest(hot_rows as usize * tp.placement.shards().max(1)),
            _ => Vec::new(),
        })
        .collect()
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
