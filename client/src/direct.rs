//! The direct data path: a client that sends every query straight to the workers.
//!
//! The client caches the coordinator's routing table ([`RouteTable`]) and refreshes it in the
//! background. For each batch it pools the client-resident tables on its own engine
//! ([`crate::local`]), splits the rest by the pure routing functions of
//! `embtune_protocol::route` (a replica for the replicated tables by the power of two choices
//! on its own in-flight counts and the workers' reported queues), sends the sub-requests to
//! the workers at once over its own QUIC connections (large replies striped over several
//! lanes), adds the partial sums in f32 and divides mean-pooled tables: the same result, bit
//! for bit, as the coordinator's relay would return.
//!
//! No process but the client sees the query, so the coordinator's CPU and links bound nothing
//! (a coordinator relaying every reply flattened a 4.3x placement effect to 1.1x), and serving
//! goes on from the cached routes while the coordinator is down.
//!
//! Failures: a worker whose request fails or times out is avoided for a moment and the query
//! runs again, the replicated tables on another replica; a shard that only that worker holds
//! fails with a typed `ShardUnavailable` naming the shard. A worker that answers `StalePlan`
//! (it holds another deployment) makes the client refetch the routes and try again, backing
//! off while a redeployment is under way.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use parking_lot::{Mutex, RwLock};
use rand_core::{Rng, SeedableRng};

use embtune_protocol::codec::{self, FrameLimits};
use embtune_protocol::route::{self, RouteError, SubRequest};
use embtune_protocol::wire::{ErrorKind, LookupHead, PooledHead, Request, RouteTable, WireError, WireFormat};
use embtune_transport::lanes::{self, Lanes};
use embtune_transport::rpc::Body;
use embtune_transport::{Identity, TransportError, Tuning, certs};
use embtune_workloads::QueryBatch;

use crate::control::CoordinatorClient;
use crate::local::LocalTables;

/// How a client behaves.
#[derive(Clone, Debug)]
pub struct ClientConfig {
    /// Connections to each worker (see `embtune_transport::lanes`).
    pub lanes: usize,
    /// How long one sub-request may take before its worker counts as failed.
    pub timeout: Duration,
    /// How the workers encode the pooled rows they return (see [`Client::set_wire`]).
    pub wire: WireFormat,
    /// Engine threads for the client-resident tables.
    pub local_cores: usize,
    /// How long a query keeps trying while the workers and the routing table disagree (a
    /// redeployment under way) or while failed replicas are replaced.
    pub retry_for: Duration,
    /// How often the routing table is refreshed in the background.
    pub refresh: Duration,
    /// The id the workers count this client's traffic under (default: a random one; 0 is the
    /// coordinator's relay).
    pub id: Option<u32>,
}

impl Default for ClientConfig {
    fn default() -> Self {
        ClientConfig {
            lanes: lanes::DEFAULT_LANES,
            timeout: Duration::from_secs(10),
            wire: WireFormat::F32,
            local_cores: 1,
            retry_for: Duration::from_secs(10),
            refresh: Duration::from_millis(250),
            id: None,
        }
    }
}

/// Where a client's routing table comes from.
#[derive(Clone)]
pub enum RouteSource {
    /// A coordinator, over its control API. When its connection closes (the coordinator was
    /// restarted), the client connects again to the same address with the certificate in
    /// `cluster`.
    Coordinator { control: Arc<tokio::sync::Mutex<CoordinatorClient>>, cluster: std::path::PathBuf },
    /// A function in this process: the coordinator's own relay reads its table directly.
    Local(Arc<dyn Fn() -> Option<RouteTable> + Send + Sync>),
}

impl RouteSource {
    /// Routes from the coordinator `control` is connected to.
    pub fn coordinator(control: CoordinatorClient, cluster: &Path) -> RouteSource {
        RouteSource::Coordinator { control: Arc::new(tokio::sync::Mutex::new(control)), cluster: cluster.to_path_buf() }
    }

    async fn fetch(&self) -> Result<Option<RouteTable>, TransportError> {
        match self {
            RouteSource::Coordinator { control, cluster } => {
                let mut c = control.lock().await;
                if c.connection().close_reason().is_some() {
                    let mut fresh = CoordinatorClient::connect_lanes(c.addr(), cluster, 1).await?;
                    fresh.timeout = ROUTES_TIMEOUT;
                    *c = fresh;
                }
                c.routes().await
            }
            RouteSource::Local(f) => Ok(f()),
        }
    }
}

/// How long a routing-table request may take: a client serves on from its cached table, so a
/// coordinator that does not answer must not hold it up.
const ROUTES_TIMEOUT: Duration = Duration::from_secs(3);

/// A query's pooled output and what it cost.
#[derive(Clone, Debug, Default)]
pub struct QueryStats {
    /// The slowest worker engine's time, microseconds.
    pub engine_us: u32,
    /// Workers the query went to.
    pub fanout: u16,
    /// Bytes the query moved over the network, both ways.
    pub wire_bytes: u64,
    /// Times the query ran again (failover, stale plan).
    pub retries: u32,
}

/// Counters since the client started.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ClientCounters {
    pub queries: u64,
    pub sub_requests: u64,
    pub retries: u64,
    pub wire_bytes: u64,
}

/// A routing table with what routing needs precomputed.
struct Routed {
    table: RouteTable,
    columns: Vec<usize>,
    width: usize,
    dims: Vec<usize>,
    /// Engine holding the client-resident tables, if the plan has any.
    local: Option<Arc<LocalTables>>,
}

/// One worker's connections and what the client knows of it.
struct Link {
    lanes: RwLock<Option<Lanes>>,
    /// Serialises (re)connection attempts.
    connecting: tokio::sync::Mutex<()>,
    /// Sub-requests in flight to it from this client.
    inflight: AtomicU32,
    /// Avoid it until then: a request to it failed, or connecting did.
    avoid_until: Mutex<Option<Instant>>,
}

impl Link {
    fn avoided(&self, now: Instant) -> bool {
        self.avoid_until.lock().is_some_and(|t| now < t)
    }

    fn avoid(&self, d: Duration) {
        *self.avoid_until.lock() = Some(Instant::now() + d);
    }

    fn open(&self) -> Option<Lanes> {
        self.lanes.read().as_ref().filter(|l| l.close_reason().is_none()).cloned()
    }
}

/// How long a worker that failed is left alone before the client tries it again.
const AVOID_FOR: Duration = Duration::from_millis(500);

struct Inner {
    cfg: ClientConfig,
    source: RouteSource,
    /// This client's id in the workers' traffic counters.
    id: u32,
    /// The wire format asked of the workers, as `WireFormat::ALL`'s index.
    wire: std::sync::atomic::AtomicU8,
    eps: Vec<quinn::Endpoint>,
    limits: FrameLimits,
    state: RwLock<Option<Arc<Routed>>>,
    links: RwLock<HashMap<SocketAddr, Arc<Link>>>,
    refreshing: tokio::sync::Mutex<()>,
    rng: Mutex<rand_pcg::Pcg64Mcg>,
    queries: AtomicU64,
    sub_requests: AtomicU64,
    retries: AtomicU64,
    wire_bytes: AtomicU64,
}

/// A client of the direct data path; cheap to clone.
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

/// Bytes of a frame's header and metadata, roughly: what a look-up costs on the wire besides
/// its body.
const FRAME_OVERHEAD: u64 = 64;

impl Client {
    /// Connects to the coordinator at `addr` with the certificate in `cluster`, fetches the
    /// routing table and connects to its workers.
    pub async fn connect(addr: SocketAddr, cluster: &Path, cfg: ClientConfig) -> Result<Client, TransportError> {
        let mut control = CoordinatorClient::connect_lanes(addr, cluster, 1).await?;
        control.timeout = ROUTES_TIMEOUT;
        let id = certs::load(cluster, None, None)?;
        Client::with_source(RouteSource::coordinator(control, cluster), &id, cfg).await
    }

    /// A client whose routes come from `source`, connecting with `identity`.
    pub async fn with_source(
        source: RouteSource,
        identity: &Identity,
        cfg: ClientConfig,
    ) -> Result<Client, TransportError> {
        let eps = lanes::endpoints(identity, &Tuning::default(), cfg.lanes)?;
        let seed = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos())
            as u64
            ^ ((std::process::id() as u64) << 32);
        let mut rng = rand_pcg::Pcg64Mcg::seed_from_u64(seed);
        let id = cfg.id.unwrap_or_else(|| rng.next_u32() | 1);
        let c = Client {
            inner: Arc::new(Inner {
                wire: std::sync::atomic::AtomicU8::new(
                    WireFormat::ALL.iter().position(|&w| w == cfg.wire).unwrap_or(0) as u8,
                ),
                cfg,
                source,
                id,
                eps,
                limits: FrameLimits::default(),
                state: RwLock::new(None),
                links: RwLock::new(HashMap::new()),
                refreshing: tokio::sync::Mutex::new(()),
                rng: Mutex::new(rng),
                queries: AtomicU64::new(0),
                sub_requests: AtomicU64::new(0),
                retries: AtomicU64::new(0),
                wire_bytes: AtomicU64::new(0),
            }),
        };
        // The first table may not exist yet (nothing deployed); queries fetch it when it does.
        c.refresh().await?;
        c.spawn_refresher();
        Ok(c)
    }

    /// This client's id, as the workers count its traffic.
    pub fn id(&self) -> u32 {
        self.inner.id
    }

    pub fn config(&self) -> &ClientConfig {
        &self.inner.cfg
    }

    /// The format the workers are asked to return pooled rows in.
    pub fn wire(&self) -> WireFormat {
        WireFormat::ALL[self.inner.wire.load(Ordering::Relaxed) as usize]
    }

    /// Asks for pooled rows in `wire` from now on (every clone of this client).
    pub fn set_wire(&self, wire: WireFormat) {
        let i = WireFormat::ALL.iter().position(|&w| w == wire).unwrap_or(0);
        self.inner.wire.store(i as u8, Ordering::Relaxed);
    }

    /// The routing table in use, if any.
    pub fn routes(&self) -> Option<RouteTable> {
        self.inner.state.read().as_ref().map(|r| r.table.clone())
    }

    /// Counters since the client started.
    pub fn counters(&self) -> ClientCounters {
        let i = &self.inner;
        ClientCounters {
            queries: i.queries.load(Ordering::Relaxed),
            sub_requests: i.sub_requests.load(Ordering::Relaxed),
            retries: i.retries.load(Ordering::Relaxed),
            wire_bytes: i.wire_bytes.load(Ordering::Relaxed),
        }
    }

    /// Refreshes the routing table every `cfg.refresh` for as long as the client lives; a
    /// coordinator that does not answer leaves the cached table in use.
    fn spawn_refresher(&self) {
        if matches!(self.inner.source, RouteSource::Local(_)) {
            return;
        }
        let weak: Weak<Inner> = Arc::downgrade(&self.inner);
        let every = self.inner.cfg.refresh;
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(every).await;
                let Some(inner) = weak.upgrade() else { return };
                let c = Client { inner };
                if let Err(e) = c.refresh().await {
                    tracing::debug!("routes not refreshed (serving from the cached table): {e}");
                }
            }
        });
    }

    /// Fetches the routing table; a new deployment materialises the client-resident tables
    /// and connects to workers not seen before.
    pub async fn refresh(&self) -> Result<(), TransportError> {
        let _one = self.inner.refreshing.lock().await;
        let Some(table) = self.inner.source.fetch().await? else {
            // A coordinator that restarted without a deployment knows less than this client:
            // the workers still serve the cached table's plan, so it stays in use.
            return Ok(());
        };
        let current = self.inner.state.read().clone();
        if let Some(cur) = &current
            && cur.table.epoch == table.epoch
            && cur.table.generation == table.generation
        {
            return Ok(());
        }
        let local = match &current {
            // The same deployment: the client tables stay as they are.
            Some(cur) if cur.table.epoch == table.epoch => cur.local.clone(),
            _ => LocalTables::build(&table, self.inner.cfg.local_cores).await?,
        };
        let (columns, width) = route::columns(&table.spec);
        let dims = table.spec.tables.iter().map(|t| t.dim as usize).collect();
        for w in &table.workers {
            if let Ok(addr) = w.addr.parse::<SocketAddr>() {
                self.link(addr);
            }
        }
        // A worker the table reports healthy again is tried again at once.
        for w in table.workers.iter().filter(|w| w.healthy) {
            if let Ok(addr) = w.addr.parse::<SocketAddr>()
                && current.as_ref().is_some_and(|c| c.table.workers.iter().any(|o| o.id == w.id && !o.healthy))
            {
                *self.link(addr).avoid_until.lock() = None;
            }
        }
        *self.inner.state.write() = Some(Arc::new(Routed { table, columns, width, dims, local }));
        Ok(())
    }

    /// Connects to every worker of the routing table now, instead of on first use.
    pub async fn connect_all(&self) -> Result<(), TransportError> {
        let Some(state) = self.state() else { return Ok(()) };
        for w in state.table.workers.iter().filter(|w| w.healthy) {
            let addr = parse_addr(&w.addr)?;
            self.lanes_to(addr).await?;
        }
        Ok(())
    }

    fn state(&self) -> Option<Arc<Routed>> {
        self.inner.state.read().clone()
    }

    fn link(&self, addr: SocketAddr) -> Arc<Link> {
        if let Some(l) = self.inner.links.read().get(&addr) {
            return l.clone();
        }
        self.inner
            .links
            .write()
            .entry(addr)
            .or_insert_with(|| {
                Arc::new(Link {
                    lanes: RwLock::new(None),
                    connecting: tokio::sync::Mutex::new(()),
                    inflight: AtomicU32::new(0),
                    avoid_until: Mutex::new(None),
                })
            })
            .clone()
    }

    /// Open connections to `addr`, connecting (once at a time) when there are none.
    async fn lanes_to(&self, addr: SocketAddr) -> Result<Lanes, TransportError> {
        let link = self.link(addr);
        if let Some(l) = link.open() {
            return Ok(l);
        }
        let _one = link.connecting.lock().await;
        if let Some(l) = link.open() {
            return Ok(l);
        }
        match Lanes::connect(&self.inner.eps, addr, Duration::from_secs(2)).await {
            Ok(l) => {
                *link.lanes.write() = Some(l.clone());
                Ok(l)
            }
            Err(e) => {
                link.avoid(AVOID_FOR);
                Err(e)
            }
        }
    }

    /// Pools `batch` (every table of the deployed model, in order): `batch x width` floats,
    /// exactly what the reference computes (up to the wire format's rounding).
    pub async fn query(&self, batch: &QueryBatch) -> Result<(PooledHead, Vec<f32>), TransportError> {
        self.query_with_stats(batch).await.map(|(h, out, _)| (h, out))
    }

    /// [`Client::query`] with what the query cost.
    pub async fn query_with_stats(
        &self,
        batch: &QueryBatch,
    ) -> Result<(PooledHead, Vec<f32>, QueryStats), TransportError> {
        let t0 = Instant::now();
        self.inner.queries.fetch_add(1, Ordering::Relaxed);
        let deadline = t0 + self.inner.cfg.retry_for;
        let mut stats = QueryStats::default();
        let mut backoff = Duration::from_millis(5);
        let mut refreshed = false;
        loop {
            let state = match self.state() {
                Some(s) => s,
                None => {
                    self.refresh().await?;
                    self.state().ok_or_else(|| {
                        remote(
                            ErrorKind::NoDeployment,
                            "nothing is deployed: deploy a plan first (embtune up or embtune bench --coordinator)",
                        )
                    })?
                }
            };
            check_batch(&state.table, batch)?;
            match self.attempt(&state, batch, &mut stats).await {
                Ok((engine_us, fanout, mut out)) => {
                    route::finalize_mean(&state.table.spec, batch, &mut out, state.width, &state.columns);
                    stats.engine_us = engine_us;
                    stats.fanout = fanout;
                    self.inner.wire_bytes.fetch_add(stats.wire_bytes, Ordering::Relaxed);
                    let head = PooledHead {
                        batch_size: batch.batch_size,
                        width: state.width as u32,
                        engine_us,
                        queue: 0,
                        coordinator_us: t0.elapsed().as_micros() as u32,
                        fanout,
                    };
                    return Ok((head, out, stats));
                }
                Err(Attempt::Fatal(e)) => return Err(e),
                Err(Attempt::Unroutable(e)) if refreshed => return Err(e),
                Err(Attempt::Unroutable(_)) => {
                    refreshed = true;
                    if let Err(e) = self.refresh().await {
                        tracing::debug!("no fresher routing table ({e}); the cached one stands");
                    }
                }
                Err(Attempt::Retry { stale, error }) => {
                    if Instant::now() + backoff > deadline {
                        return Err(error);
                    }
                    stats.retries += 1;
                    self.inner.retries.fetch_add(1, Ordering::Relaxed);
                    if stale {
                        // A redeployment is under way, or the routes are old: wait a moment for
                        // the workers and the coordinator to agree, then ask again.
                        tokio::time::sleep(backoff).await;
                        backoff = (backoff * 2).min(Duration::from_millis(200));
                        if let Err(e) = self.refresh().await {
                            tracing::debug!("refreshing routes after a stale plan: {e}");
                        }
                    }
                }
            }
        }
    }

    /// One try at a query on one routing table.
    async fn attempt(
        &self,
        state: &Arc<Routed>,
        batch: &QueryBatch,
        stats: &mut QueryStats,
    ) -> Result<(u32, u16, Vec<f32>), Attempt> {
        let table = &state.table;
        let now = Instant::now();
        let links: Vec<Option<(SocketAddr, Arc<Link>)>> =
            table.workers.iter().map(|w| w.addr.parse::<SocketAddr>().ok().map(|a| (a, self.link(a)))).collect();
        let usable: Vec<bool> = table
            .workers
            .iter()
            .zip(&links)
            .map(|(w, l)| w.healthy && l.as_ref().is_some_and(|(_, l)| !l.avoided(now)))
            .collect();
        let loads: Vec<Option<u64>> = table
            .workers
            .iter()
            .zip(&links)
            .zip(&usable)
            .map(|((w, l), &ok)| {
                ok.then(|| w.queue as u64 + l.as_ref().map_or(0, |(_, l)| l.inflight.load(Ordering::Relaxed) as u64))
            })
            .collect();
        let draws = {
            let mut r = self.inner.rng.lock();
            (r.next_u64(), r.next_u64())
        };
        let replica = route::pick_replica(&loads, draws);
        let subs = route::split(&table.spec, &table.plan, batch, replica, &usable).map_err(|e| {
            Attempt::Unroutable(match e {
                // Name the registered worker, not its position in the plan.
                RouteError::ShardUnavailable { table: t, shard, rows, worker } => remote(
                    ErrorKind::ShardUnavailable,
                    RouteError::ShardUnavailable { table: t, shard, rows, worker: table.workers[worker as usize].id }
                        .to_string(),
                ),
                other => remote(ErrorKind::ShardUnavailable, other.to_string()),
            })
        })?;
        let bs = batch.batch_size as usize;
        let local = state.local.clone().zip(route::client_part(&table.plan, batch));
        let local_job = local.map(|(engine, part)| {
            let tables = part.tables.clone();
            let b = part.into_batch(batch.batch_size);
            tokio::spawn(async move { (engine.pool(b, tables.clone()).await, tables) })
        });
        let alone = subs.len() == 1 && local_job.is_none();
        let mut calls = Vec::with_capacity(subs.len());
        for s in subs {
            let (addr, link) = links[s.worker as usize].clone().expect("a usable worker has an address");
            let me = self.clone();
            let state = state.clone();
            let tables = s.tables.clone();
            let fut = async move { me.sub_request(&state, addr, &link, s, bs).await.map(|r| (tables, r)) };
            calls.push(if alone { Call::Inline(Box::pin(fut)) } else { Call::Task(tokio::spawn(fut)) });
        }
        let fanout = calls.len() as u16;
        let wire = self.wire();
        let mut whole: Option<Vec<f32>> = None;
        let mut asm = route::Assembler::new(state.width, &state.columns, &state.dims, bs);
        let (mut engine_us, mut retry, mut stale, mut failure) = (0u32, false, false, None);
        let broken = |e: route::AssembleError| Attempt::Fatal(remote(ErrorKind::BadFrame, format!("a reply: {e}")));
        for call in calls {
            let r = match call {
                Call::Inline(f) => f.await,
                Call::Task(h) => h.await.unwrap_or_else(|e| Err(SubError::other(format!("a sub-request failed: {e}")))),
            };
            match r {
                Ok((tables, reply)) => {
                    stats.wire_bytes += reply.bytes;
                    engine_us = engine_us.max(reply.head.engine_us);
                    if alone
                        && wire == WireFormat::F32
                        && reply.stripes.len() == 1
                        && route::covers_all_in_order(&tables, state.dims.len())
                    {
                        // One worker answered for every table in spec order, in one piece: its
                        // reply is the output as it is (replicated plans send batches so).
                        let words = reply.stripes.into_iter().next().unwrap().2;
                        whole = Some(
                            codec::decode_pooled(wire, words, bs * state.width)
                                .map_err(|e| Attempt::Fatal(TransportError::Frame(e)))?,
                        );
                        continue;
                    }
                    let rw: usize = tables.iter().map(|&t| state.dims[t as usize]).sum();
                    asm.begin(&tables);
                    for (b0, b1, words) in &reply.stripes {
                        let values = match wire {
                            WireFormat::F32 => route::Values::F32(codec::words_as_floats(words)),
                            w => route::Values::Half(w, codec::half_bits(words, (b1 - b0) * rw)),
                        };
                        asm.place(*b0, *b1, values).map_err(broken)?;
                    }
                    asm.end().map_err(broken)?;
                }
                Err(SubError { error, worker_failed, stale: st, bytes }) => {
                    stats.wire_bytes += bytes;
                    retry |= worker_failed;
                    stale |= st;
                    if failure.is_none() || worker_failed || st {
                        failure = Some(error);
                    }
                }
            }
        }
        if let Some(job) = local_job {
            match job.await {
                Ok((Ok(reply), tables)) => {
                    asm.begin(&tables);
                    asm.place(0, bs, route::Values::F32(&reply)).map_err(broken)?;
                    asm.end().map_err(broken)?;
                }
                Ok((Err(e), _)) => return Err(Attempt::Fatal(e)),
                Err(e) => return Err(Attempt::Fatal(remote(ErrorKind::Internal, format!("client engine: {e}")))),
            }
        }
        if let Some(error) = failure {
            return Err(if retry || stale { Attempt::Retry { stale, error } } else { Attempt::Fatal(error) });
        }
        Ok((engine_us, fanout, whole.unwrap_or_else(|| asm.finish())))
    }

    /// Sends a sub-request to its worker, striped over several lanes when its reply is large,
    /// and returns the stripes' replies as they came, with the bytes moved.
    async fn sub_request(
        &self,
        state: &Routed,
        addr: SocketAddr,
        link: &Link,
        s: SubRequest,
        bs: usize,
    ) -> Result<SubReply, SubError> {
        let worker = state.table.workers[s.worker as usize].id;
        let lanes = match self.lanes_to(addr).await {
            Ok(l) => l,
            Err(e) => return Err(SubError::failed(worker, e, 0)),
        };
        let wire = self.wire();
        let reply_width = route::reply_width(&s, &state.dims);
        let k = lanes::stripes(bs * reply_width * wire.value_bytes(), lanes.len(), bs);
        // The sub-request's buffers go to quinn as they are (moved, not copied).
        let lookup = |n: u32, s: SubRequest| {
            let head = LookupHead {
                plan_id: state.table.epoch,
                batch_size: n,
                tables: s.tables,
                offsets: s.offsets.len() as u32,
                ids: s.ids.len() as u32,
                reply: wire,
                client: self.inner.id,
            };
            (Request::Lookup(head), Body::Vecs(vec![s.ids, s.offsets]))
        };
        let parts: Vec<(u32, SubRequest)> = if k == 1 { vec![(bs as u32, s)] } else { route::stripe(&s, bs, k) };
        let sent: u64 = parts.iter().map(|(_, p)| FRAME_OVERHEAD + 4 * (p.ids.len() + p.offsets.len()) as u64).sum();
        let rows: Vec<u32> = parts.iter().map(|(n, _)| *n).collect();
        let calls = parts.into_iter().map(|(n, p)| lookup(n, p)).collect();
        self.inner.sub_requests.fetch_add(rows.len() as u64, Ordering::Relaxed);
        link.inflight.fetch_add(1, Ordering::Relaxed);
        let r = lanes.call_all(calls, self.inner.limits, self.inner.cfg.timeout).await;
        link.inflight.fetch_sub(1, Ordering::Relaxed);
        let replies = match r {
            Ok(r) => r,
            Err(TransportError::Remote(e)) if e.kind == ErrorKind::StalePlan => {
                return Err(SubError {
                    error: TransportError::Remote(e),
                    worker_failed: false,
                    stale: true,
                    bytes: sent,
                });
            }
            // The worker answered with a typed error about the request itself: no retry helps.
            Err(TransportError::Remote(e)) => {
                return Err(SubError {
                    error: TransportError::Remote(e),
                    worker_failed: false,
                    stale: false,
                    bytes: sent,
                });
            }
            Err(e) => {
                link.avoid(AVOID_FOR);
                return Err(SubError::failed(worker, e, sent));
            }
        };
        let received: u64 = replies.iter().map(|(_, w)| FRAME_OVERHEAD + 4 * w.len() as u64).sum();
        let bytes = sent + received;
        let mut heads = Vec::with_capacity(replies.len());
        let mut stripes = Vec::with_capacity(replies.len());
        let mut b0 = 0;
        for (n, (resp, words)) in rows.iter().zip(replies) {
            match resp {
                embtune_protocol::wire::Response::Pooled(h) => heads.push(h),
                other => {
                    let e = crate::control::unexpected(other);
                    return Err(SubError { error: e, worker_failed: false, stale: false, bytes });
                }
            }
            let b1 = b0 + *n as usize;
            if words.len() != wire.words((b1 - b0) * reply_width) {
                let e = remote(
                    ErrorKind::BadFrame,
                    format!("worker {worker} sent {} words for {} {wire} values", words.len(), (b1 - b0) * reply_width),
                );
                return Err(SubError { error: e, worker_failed: false, stale: false, bytes });
            }
            stripes.push((b0, b1, words));
            b0 = b1;
        }
        Ok(SubReply { head: PooledHead::join(heads).unwrap_or_default(), stripes, bytes })
    }
}

/// A sub-request's replies: one per stripe of samples (`b0..b1`), as the worker encoded them.
struct SubReply {
    head: PooledHead,
    stripes: Vec<(usize, usize, Vec<u32>)>,
    bytes: u64,
}

/// Why an attempt at a query did not succeed.
enum Attempt {
    /// The routing table (or the workers this client avoids) leaves a shard without a worker:
    /// worth one fresh look at the table, since a worker may have come back meanwhile.
    Unroutable(TransportError),
    /// Run it again: a worker failed (`stale` false) or holds another plan (`stale` true).
    Retry { stale: bool, error: TransportError },
    /// Give up with this error.
    Fatal(TransportError),
}

/// A sub-request's failure.
struct SubError {
    error: TransportError,
    /// The worker did not answer: avoid it and run the query again.
    worker_failed: bool,
    /// The worker holds another plan.
    stale: bool,
    bytes: u64,
}

impl SubError {
    fn failed(worker: u16, e: TransportError, bytes: u64) -> SubError {
        SubError {
            error: TransportError::Remote(WireError::new(ErrorKind::ShardUnavailable, format!("worker {worker}: {e}"))),
            worker_failed: true,
            stale: false,
            bytes,
        }
    }

    fn other(m: String) -> SubError {
        SubError { error: remote(ErrorKind::Internal, m), worker_failed: false, stale: false, bytes: 0 }
    }
}

/// A sub-request run in place (the only one) or on a task of its own (so that replies are
/// opened on several threads).
enum Call<F: std::future::Future> {
    Inline(std::pin::Pin<Box<F>>),
    Task(tokio::task::JoinHandle<F::Output>),
}

fn remote(kind: ErrorKind, m: impl Into<String>) -> TransportError {
    TransportError::Remote(WireError::new(kind, m))
}

fn parse_addr(s: &str) -> Result<SocketAddr, TransportError> {
    s.parse().map_err(|_| remote(ErrorKind::Internal, format!("the routing table lists a bad address `{s}`")))
}

/// Checks a batch against the deployed model before anything is sent: the same typed errors
/// the coordinator's relay and the workers give.
pub fn check_batch(table: &RouteTable, batch: &QueryBatch) -> Result<(), TransportError> {
    let spec = &table.spec;
    if batch.num_tables as usize != spec.tables.len() {
        return Err(remote(
            ErrorKind::UnknownTable,
            format!("the batch has {} tables; `{}` has {}", batch.num_tables, spec.name, spec.tables.len()),
        ));
    }
    batch.check_layout().map_err(|e| remote(ErrorKind::BadFrame, e.to_string()))?;
    let rows: Vec<u64> = spec.tables.iter().map(|t| t.rows).collect();
    batch.check_ids(&rows).map_err(|e| remote(ErrorKind::RowOutOfRange, e.to_string()))
}
