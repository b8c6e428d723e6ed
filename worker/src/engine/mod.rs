//! The multi-core look-up engine.
//!
//! One thread per core, pinned, each running tasks from two queues: its own (work on the
//! shards it owns: owned and sharded tables) and a shared one (bags of replicated tables, which
//! any core can serve). That is the asymmetric placement in executable form: pinned work keeps
//! a shard's rows in one core's caches, floating work balances itself.
//!
//! A request is split at submission into at most one pinned task per core that owns shards it
//! needs, plus `ceil(batch / sub_batch)` floating tasks over the replicated tables. Tasks write
//! pooled rows straight into disjoint regions of one output buffer; when a table has several
//! shards on this worker, the shards after the first write partial buffers that are added in
//! once the last shard finishes: by that shard itself when they are small, otherwise by
//! floating reduce tasks over slices of the batch, so that no single core adds them all up.
//! The last task of a request calls its completion.
//!
//! Output and partial buffers come from a pool and are never zeroed: every kernel overwrites
//! each bag it is given, and every float of a buffer belongs to exactly one task's bags. Debug
//! builds fill taken buffers with NaN so that the property tests catch any float left unwritten.

pub mod flows;
pub mod kernels;
pub mod reference;
pub mod storage;

use std::cell::UnsafeCell;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_deque::{Injector, Steal};
use parking_lot::{Mutex, RwLock};
use serde::{Deserialize, Serialize};

use embtune_protocol::{DataFlow, Knobs, LocalLayout, ShardRows, WorkerAssignment};
use embtune_workloads::{PoolingMode, QueryBatch, RowType};

use flows::{HotCache, Piece, Scratch};
use kernels::{BagRun, Isa};
use storage::RowStore;

/// Why the engine refused or failed a request or a deployment.
#[derive(Debug, Clone, PartialEq, thiserror::Error, Serialize, Deserialize)]
pub enum EngineError {
    #[error("table {table} is not deployed on this engine")]
    UnknownTable { table: u16 },
    #[error("row id {id} is out of range for table `{name}` ({rows} rows)")]
    RowOutOfRange { table: u16, name: String, id: u32, rows: u64 },
    #[error("row id {id} of table `{name}` belongs to a shard this worker does not hold")]
    NotHeld { table: u16, name: String, id: u32 },
    #[error("malformed request: {0}")]
    BadRequest(String),
    #[error("cannot deploy: {0}")]
    Deploy(String),
    #[error("the engine is shutting down")]
    ShuttingDown,
    #[error("request for plan {asked} but this worker holds plan {held}")]
    StalePlan { asked: u64, held: u64 },
}

/// How to start an engine.
#[derive(Clone, Debug)]
pub struct EngineConfig {
    /// OS CPU ids the core threads are pinned to, one thread each.
    pub cpus: Vec<usize>,
    /// Pin threads to `cpus` (off in tests that oversubscribe a small machine).
    pub pin: bool,
    /// Ask for transparent huge pages on large tables.
    pub huge_pages: bool,
    /// The highest kernel level to use (lowered to what the CPU supports); `None` picks the
    /// best the CPU supports.
    pub isa: Option<Isa>,
}

impl EngineConfig {
    /// `cores` threads pinned to CPUs `0..cores` (wrapping if the machine has fewer).
    pub fn with_cores(cores: usize) -> EngineConfig {
        let n = std::thread::available_parallelism().map_or(1, |n| n.get());
        EngineConfig { cpus: (0..cores).map(|c| c % n).collect(), pin: cores <= n, huge_pages: true, isa: None }
    }
}

/// A request: a batch and, for each of its table slots, which deployed table it reads.
#[derive(Clone)]
pub struct Lookup {
    pub batch: Arc<QueryBatch>,
    /// `tables[k]` is the model-spec index of the batch's k-th table.
    pub tables: Arc<[u16]>,
    /// Divide mean-pooled tables by their bag lengths. Off on workers whose results are
    /// partial sums that the coordinator adds up first.
    pub finalize_mean: bool,
    /// The plan the request was routed by: served by the current deployment or by the previous
    /// one kept beside it ([`Engine::deploy_keeping`]), whichever has this epoch, and refused
    /// when neither does; the request then reads the deployment it was checked against. 0 is
    /// served by the current one.
    pub epoch: u64,
}

impl Lookup {
    /// A request for every table of the model, in order.
    pub fn all_tables(batch: Arc<QueryBatch>) -> Lookup {
        let tables: Arc<[u16]> = (0..batch.num_tables as u16).collect();
        Lookup { batch, tables, finalize_mean: true, epoch: 0 }
    }
}

/// Pooled rows of a request: `batch x width` floats, each sample's tables side by side.
#[derive(Debug)]
pub struct LookupOutput {
    pub pooled: Vec<f32>,
    pub width: usize,
    /// Column where each table slot starts.
    pub columns: Vec<usize>,
    /// Wall time from submission to completion inside the engine.
    pub engine_time: Duration,
}

/// Called once with the request's result, on the thread that finished it.
pub type Completion = Box<dyn FnOnce(Result<LookupOutput, EngineError>) + Send>;

/// Per-core counters, cumulative since the engine started.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct CoreStats {
    pub core: usize,
    pub cpu: usize,
    pub busy_ns: u64,
    pub tasks: u64,
    pub lookups: u64,
    /// Tasks waiting in this core's own queue now.
    pub queued: u64,
}

/// A deployment's progress, shared between the thread that deploys and whoever watches it (the
/// worker's heartbeat) or stops it (a cancel request, the worker's shutdown).
#[derive(Debug, Default)]
pub struct DeployProgress {
    done: AtomicU64,
    total: AtomicU64,
    cancel: AtomicBool,
}

impl DeployProgress {
    /// Begins a deployment of `total` bytes: nothing filled, not cancelled.
    fn start(&self, total: u64) {
        self.done.store(0, Ordering::Relaxed);
        self.total.store(total, Ordering::Relaxed);
    }

    fn add(&self, bytes: u64) {
        self.done.fetch_add(bytes, Ordering::Relaxed);
    }

    /// Bytes of rows written so far.
    pub fn done(&self) -> u64 {
        self.done.load(Ordering::Relaxed)
    }

    /// Bytes of rows the deployment writes in all (0 before it has allocated them).
    pub fn total(&self) -> u64 {
        self.total.load(Ordering::Relaxed)
    }

    /// Asks the deployment to stop at its next chunk (within about 64 MiB of rows per core).
    pub fn cancel(&self) {
        self.cancel.store(true, Ordering::Relaxed);
    }

    pub fn cancelled(&self) -> bool {
        self.cancel.load(Ordering::Relaxed)
    }

    /// Clears a cancel, before the next deployment.
    pub fn reset(&self) {
        self.cancel.store(false, Ordering::Relaxed);
        self.start(0);
    }
}

/// What a deployment did.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct DeployReport {
    pub tables: usize,
    pub pieces: usize,
    pub bytes: u64,
    /// Bytes of table memory the kernel backed with transparent huge pages.
    pub huge_page_bytes: u64,
    /// Bytes in buffers large enough to ask for huge pages.
    pub huge_eligible_bytes: u64,
    pub hot_rows: u64,
    pub seconds: f64,
}

struct DeployedTable {
    name: String,
    rows: u64,
    dim: usize,
    mode: PoolingMode,
    layout: Layout,
}

enum Layout {
    Replicated(Piece),
    /// Pieces and the core each is pinned to; `complete` when they hold every row.
    Shards {
        pieces: Vec<(usize, Piece)>,
        complete: bool,
    },
}

/// Everything deployed, swapped atomically on redeployment: requests in flight keep the old
/// one alive through their `Arc`.
struct Deployment {
    tables: Vec<Option<DeployedTable>>,
    knobs: Knobs,
    /// The assignment's plan id.
    epoch: u64,
}

impl Deployment {
    fn empty() -> Arc<Deployment> {
        Arc::new(Deployment { tables: Vec::new(), knobs: Knobs::default(), epoch: 0 })
    }
}

/// The deployments a request may be served by: the current one and, while clients switch
/// their routes to it, the one it replaced. Holding at most two bounds the memory a switch
/// costs to one extra plan.
struct Deployments {
    current: Arc<Deployment>,
    /// The replaced deployment, kept servable by [`Engine::deploy_keeping`] until
    /// [`Engine::retire`] or the next deployment drops it.
    previous: Option<Arc<Deployment>>,
}

impl Deployments {
    /// The deployment that serves a request routed by plan `epoch`: the current one when the
    /// epochs match (or the request accepts any, epoch 0), else the previous one when it
    /// matches. Costs a comparison or two and an `Arc` clone, under the caller's read lock.
    fn pick(&self, epoch: u64) -> Result<Arc<Deployment>, EngineError> {
        if epoch == 0 || epoch == self.current.epoch {
            return Ok(self.current.clone());
        }
        match &self.previous {
            Some(p) if p.epoch == epoch => Ok(p.clone()),
            _ => Err(EngineError::StalePlan { asked: epoch, held: self.current.epoch }),
        }
    }
}

struct Sleeper {
    parked: AtomicBool,
    thread: Mutex<Option<std::thread::Thread>>,
}

struct Stats {
    busy_ns: AtomicU64,
    tasks: AtomicU64,
    lookups: AtomicU64,
}

struct Shared {
    isa: Isa,
    /// This machine's per-core L2, for data-flow decisions made at deployment.
    l2_bytes: u64,
    cpus: Vec<usize>,
    huge_pages: bool,
    deployments: RwLock<Deployments>,
    pinned: Vec<Injector<Task>>,
    floating: Injector<Task>,
    sleepers: Vec<Sleeper>,
    stats: Vec<Stats>,
    shutdown: AtomicBool,
    buffers: Mutex<Vec<Vec<f32>>>,
}

/// The engine: pinned core threads and the tables deployed on them.
pub struct Engine {
    shared: Arc<Shared>,
    threads: Vec<JoinHandle<()>>,
}

/// A cheap, cloneable handle that submits requests to an engine. A completion can hold one and
/// submit the next request from the core thread that finished the last, which keeps a closed
/// loop going without a driver thread competing with the core threads for CPUs.
#[derive(Clone)]
pub struct Submitter {
    shared: Arc<Shared>,
}

impl Submitter {
    /// As [`Engine::submit`].
    pub fn submit(&self, req: Lookup, done: Completion) {
        self.shared.submit(req, done);
    }

    /// As [`Engine::recycle`].
    pub fn recycle(&self, buf: Vec<f32>) {
        self.shared.recycle(buf);
    }
}

/// Buffers the pool keeps at most: enough for every request in flight on a busy engine.
const POOLED_BUFFERS: usize = 256;

impl Engine {
    /// Starts the core threads with nothing deployed.
    pub fn start(config: EngineConfig) -> Engine {
        assert!(!config.cpus.is_empty(), "an engine needs at least one core");
        let n = config.cpus.len();
        let shared = Arc::new(Shared {
            isa: Isa::at_most(config.isa),
            l2_bytes: crate::machine::MachineInfo::detect().l2_bytes,
            cpus: config.cpus.clone(),
            huge_pages: config.huge_pages,
            deployments: RwLock::new(Deployments { current: Deployment::empty(), previous: None }),
            pinned: (0..n).map(|_| Injector::new()).collect(),
            floating: Injector::new(),
            sleepers: (0..n).map(|_| Sleeper { parked: AtomicBool::new(false), thread: Mutex::new(None) }).collect(),
            stats: (0..n)
                .map(|_| Stats { busy_ns: AtomicU64::new(0), tasks: AtomicU64::new(0), lookups: AtomicU64::new(0) })
                .collect(),
            shutdown: AtomicBool::new(false),
            buffers: Mutex::new(Vec::new()),
        });
        let threads = (0..n)
            .map(|me| {
                let shared = shared.clone();
                let cpu = config.cpus[me];
                let pin = config.pin;
                std::thread::Builder::new()
                    .name(format!("embtune-core-{me}"))
                    .spawn(move || core_loop(shared, me, cpu, pin))
                    .expect("spawning a core thread")
            })
            .collect();
        Engine { shared, threads }
    }

    pub fn cores(&self) -> usize {
        self.shared.cpus.len()
    }

    pub fn isa(&self) -> Isa {
        self.shared.isa
    }

    /// Materialises the tables of an assignment and swaps them in. Each core first-touches the
    /// rows of the shards it owns (and a slice of the replicated tables), so pages land in the
    /// memory nearest to the core that reads them. The deployment it replaces is dropped once
    /// the requests in flight on it finish: `deploy_keeping(a, false)`.
    pub fn deploy(&self, a: &WorkerAssignment) -> Result<DeployReport, EngineError> {
        self.deploy_keeping(a, false)
    }

    /// As [`Engine::deploy`]; with `keep_previous`, the deployment it replaces stays servable (a
    /// request naming its epoch is served by it) until [`Engine::retire`] or the next
    /// deployment drops it, so that clients still routing by the old plan are served while
    /// they switch. At most two deployments are held: a deployment that was kept from before
    /// is dropped first, before the new tables are allocated, so that a switch never holds
    /// three plans' memory. A failed deployment therefore leaves only the current one.
    pub fn deploy_keeping(&self, a: &WorkerAssignment, keep_previous: bool) -> Result<DeployReport, EngineError> {
        self.deploy_watched(a, keep_previous, &DeployProgress::default())
    }

    /// As [`Engine::deploy_keeping`], reporting the bytes filled so far to `progress` and
    /// giving up when [`DeployProgress::cancel`] is called: a deployment of tens of gigabytes
    /// takes tens of seconds, and a worker told to stop must not finish it first. A cancelled
    /// deployment frees what it allocated and leaves the current one serving.
    pub fn deploy_watched(
        &self,
        a: &WorkerAssignment,
        keep_previous: bool,
        progress: &DeployProgress,
    ) -> Result<DeployReport, EngineError> {
        let started = Instant::now();
        // Taken out under the lock, dropped outside it: freeing gigabytes of tables must not
        // stall the requests waiting for the read lock.
        let older = self.shared.deployments.write().previous.take();
        drop(older);
        let cores = self.cores();
        if a.cores as usize > cores {
            return Err(EngineError::Deploy(format!(
                "the plan puts work on {} cores of this worker, which runs {cores}",
                a.cores
            )));
        }
        let huge = self.shared.huge_pages;
        // Allocate every piece first, then fill them in parallel.
        let mut tables: Vec<Option<DeployedTable>> = Vec::new();
        let mut fills: Vec<(usize, usize, usize)> = Vec::new(); // (table slot, piece, filler core)
        struct Pending {
            table: u16,
            name: String,
            rows: u64,
            dim: usize,
            mode: PoolingMode,
            seed: u64,
            flow: DataFlow,
            hot_ids: Vec<u32>,
            replicated: bool,
            complete: bool,
            pieces: Vec<(usize, ShardRows, RowStore)>,
        }
        let mut pending: Vec<Pending> = Vec::new();
        for t in &a.tables {
            let rows = t.spec.rows;
            let mut p = Pending {
                table: t.table,
                name: t.spec.name.clone(),
                rows,
                dim: t.spec.dim as usize,
                mode: t.spec.mode,
                seed: t.content_seed,
                flow: t.flow,
                hot_ids: t.hot_ids.clone(),
                replicated: matches!(t.layout, LocalLayout::Replicated),
                complete: true,
                pieces: Vec::new(),
            };
            let alloc = |n: u64| {
                RowStore::alloc(n, t.row_type, t.spec.dim, huge)
                    .map_err(|e| EngineError::Deploy(format!("table `{}`: cannot allocate {n} rows: {e}", t.spec.name)))
            };
            match &t.layout {
                LocalLayout::Replicated => p.pieces.push((0, ShardRows::Range { lo: 0, hi: rows }, alloc(rows)?)),
                LocalLayout::Shards(shards) => {
                    let mut covered = 0u64;
                    for s in shards {
                        if s.core as usize >= cores {
                            return Err(EngineError::Deploy(format!(
                                "table `{}`: shard on core {} of {cores}",
                                t.spec.name, s.core
                            )));
                        }
                        let n = match s.rows {
                            ShardRows::Range { lo, hi } if lo < hi && hi <= rows => hi - lo,
                            ShardRows::Hash { index, of } if of > 0 && index < of => {
                                (rows + (of - index) as u64 - 1) / of as u64
                            }
                            other => {
                                return Err(EngineError::Deploy(format!(
                                    "table `{}`: bad shard {other:?}",
                                    t.spec.name
                                )));
                            }
                        };
                        covered += n;
                        p.pieces.push((s.core as usize, s.rows, alloc(n)?));
                    }
                    p.complete = covered == rows;
                }
            }
            pending.push(p);
        }
        progress.start(pending.iter().flat_map(|p| &p.pieces).map(|(_, _, s)| s.bytes()).sum());
        // Fill: replicated tables in `cores` row slices, shards by their owner.
        for (ti, p) in pending.iter().enumerate() {
            for (pi, (core, _, store)) in p.pieces.iter().enumerate() {
                if p.replicated {
                    let _ = store;
                    for c in 0..cores {
                        fills.push((ti, pi, c));
                    }
                } else {
                    fills.push((ti, pi, *core));
                }
            }
        }
        let pin = self.threads.len() <= std::thread::available_parallelism().map_or(1, |n| n.get());
        std::thread::scope(|scope| {
            for c in 0..cores {
                let mine: Vec<(usize, usize)> = fills.iter().filter(|f| f.2 == c).map(|f| (f.0, f.1)).collect();
                let pending = &pending;
                let cpu = self.shared.cpus[c];
                scope.spawn(move || {
                    if pin {
                        core_affinity::set_for_current(core_affinity::CoreId { id: cpu });
                    }
                    for (ti, pi) in mine {
                        let p = &pending[ti];
                        let (_, rows, store) = &p.pieces[pi];
                        let (lo, hi) = if p.replicated {
                            let per = store.rows.div_ceil(cores as u64);
                            ((c as u64 * per).min(store.rows), ((c as u64 + 1) * per).min(store.rows))
                        } else {
                            (0, store.rows)
                        };
                        // In chunks of about 64 MiB, so that progress moves and a cancel is
                        // seen within a fraction of a second.
                        let chunk = (64u64 << 20).div_ceil(store.stride as u64).max(1);
                        let mut at = lo;
                        while at < hi {
                            if progress.cancelled() {
                                return;
                            }
                            let to = (at + chunk).min(hi);
                            match *rows {
                                ShardRows::Range { lo: base, .. } => store.fill(p.seed, at, to, |r| r + base),
                                ShardRows::Hash { index, of } => {
                                    store.fill(p.seed, at, to, |r| r * of as u64 + index as u64)
                                }
                            }
                            progress.add((to - at) * store.stride as u64);
                            at = to;
                        }
                    }
                });
            }
        });
        if progress.cancelled() {
            // `pending` holds every allocation; it goes when this returns.
            return Err(EngineError::Deploy(format!(
                "plan {}: deployment cancelled after {} of {} bytes; the plan deployed before it still serves",
                a.plan_id,
                progress.done(),
                progress.total()
            )));
        }
        let mut report = DeployReport { tables: pending.len(), ..Default::default() };
        for p in pending {
            let mut pieces = Vec::new();
            for (core, rows, store) in p.pieces {
                let hot = match p.flow {
                    DataFlow::HotCache { hot_rows, .. } => {
                        let h =
                            HotCache::build(&store, &rows, &p.hot_ids, hot_rows as usize, huge, self.shared.l2_bytes)
                                .map_err(|e| EngineError::Deploy(format!("table `{}`: hot cache: {e}", p.name)))?;
                        report.hot_rows += h.len() as u64;
                        Some(h)
                    }
                    _ => None,
                };
                report.pieces += 1;
                if store.bytes() >= storage::HUGE_PAGE as u64 && store.huge_advised() {
                    report.huge_eligible_bytes += store.bytes();
                    report.huge_page_bytes += store.huge_bytes();
                }
                let piece = Piece { store, rows, flow: p.flow, hot, table_rows: p.rows };
                report.bytes += piece.bytes();
                pieces.push((core, piece));
            }
            let layout = if p.replicated {
                Layout::Replicated(pieces.pop().unwrap().1)
            } else {
                Layout::Shards { pieces, complete: p.complete }
            };
            let idx = p.table as usize;
            if tables.len() <= idx {
                tables.resize_with(idx + 1, || None);
            }
            tables[idx] = Some(DeployedTable { name: p.name, rows: p.rows, dim: p.dim, mode: p.mode, layout });
        }
        let new = Arc::new(Deployment { tables, knobs: a.knobs, epoch: a.plan_id });
        let dropped = {
            let mut d = self.shared.deployments.write();
            let old = std::mem::replace(&mut d.current, new);
            // An empty deployment (epoch 0) or one of the same plan id could never be picked
            // over the current one, so keeping it would only hold memory.
            if keep_previous && old.epoch != 0 && old.epoch != a.plan_id { d.previous.replace(old) } else { Some(old) }
        };
        drop(dropped);
        report.seconds = started.elapsed().as_secs_f64();
        Ok(report)
    }

    /// Drops every deployment whose epoch is not `keep`: once every client routes by the new
    /// plan, the one kept beside it for the switch only holds memory. When `keep` is the
    /// previous deployment's epoch, it becomes the current one again; when no deployment has
    /// that epoch, nothing is left. Requests in flight keep what they read alive.
    pub fn retire(&self, keep: u64) {
        let dropped = {
            let mut d = self.shared.deployments.write();
            let previous = d.previous.take();
            match previous {
                Some(p) if p.epoch == keep && d.current.epoch != keep => {
                    (Some(std::mem::replace(&mut d.current, p)), None)
                }
                p if d.current.epoch == keep => (None, p),
                p => (Some(std::mem::replace(&mut d.current, Deployment::empty())), p),
            }
        };
        drop(dropped);
    }

    /// The plan ids this engine serves: the current deployment's (0: nothing deployed) and the
    /// previous one's, if it is kept.
    pub fn epochs(&self) -> (u64, Option<u64>) {
        let d = self.shared.deployments.read();
        (d.current.epoch, d.previous.as_ref().map(|p| p.epoch))
    }

    /// Removes every table, of the current deployment and of any kept one.
    pub fn undeploy(&self) {
        let dropped = {
            let mut d = self.shared.deployments.write();
            (std::mem::replace(&mut d.current, Deployment::empty()), d.previous.take())
        };
        drop(dropped);
    }

    /// Checks a request and queues its tasks; `done` runs when the last task finishes, or at
    /// once with the error if the request is malformed or names rows this engine lacks.
    pub fn submit(&self, req: Lookup, done: Completion) {
        self.shared.submit(req, done);
    }

    /// A handle that submits to this engine, for completions that submit in turn.
    pub fn submitter(&self) -> Submitter {
        Submitter { shared: self.shared.clone() }
    }

    /// Submits and waits: the convenient form for tests and tools.
    pub fn lookup(&self, req: Lookup) -> Result<LookupOutput, EngineError> {
        let (tx, rx) = crossbeam_channel::bounded(1);
        self.submit(
            req,
            Box::new(move |r| {
                let _ = tx.send(r);
            }),
        );
        rx.recv().unwrap_or(Err(EngineError::ShuttingDown))
    }

    /// Returns an output buffer for reuse, so that large outputs are neither re-faulted nor
    /// re-zeroed per request.
    pub fn recycle(&self, buf: Vec<f32>) {
        self.shared.recycle(buf);
    }

    /// Per-core counters.
    pub fn stats(&self) -> Vec<CoreStats> {
        self.shared
            .stats
            .iter()
            .enumerate()
            .map(|(i, s)| CoreStats {
                core: i,
                cpu: self.shared.cpus[i],
                busy_ns: s.busy_ns.load(Ordering::Relaxed),
                tasks: s.tasks.load(Ordering::Relaxed),
                lookups: s.lookups.load(Ordering::Relaxed),
                queued: self.shared.pinned[i].len() as u64,
            })
            .collect()
    }

    /// Tasks waiting anywhere in the engine: the load a router compares between replicas.
    pub fn queue_len(&self) -> usize {
        self.shared.floating.len() + self.shared.pinned.iter().map(Injector::len).sum::<usize>()
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        self.shared.shutdown.store(true, Ordering::SeqCst);
        for c in 0..self.shared.sleepers.len() {
            self.shared.unpark(c);
        }
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// Every id of a slot must be a row of the table, and where this worker holds only some shards,
/// a row of one of them: anything else would be silently dropped from the sum.
fn check_ids(t: u16, table: &DeployedTable, ids: &[u32]) -> Result<(), EngineError> {
    // A max-reduction vectorises; the rare failure is located afterwards.
    let max = ids.iter().copied().max().unwrap_or(0);
    if !ids.is_empty() && max as u64 >= table.rows {
        let id = *ids.iter().find(|&&id| id as u64 >= table.rows).unwrap();
        return Err(EngineError::RowOutOfRange { table: t, name: table.name.clone(), id, rows: table.rows });
    }
    if let Layout::Shards { pieces, complete: false } = &table.layout
        && let Some(&id) = ids.iter().find(|&&id| !pieces.iter().any(|(_, p)| p.rows.contains(id)))
    {
        return Err(EngineError::NotHeld { table: t, name: table.name.clone(), id });
    }
    Ok(())
}

struct SlotState {
    /// Partial sums of this worker's 2nd..kth shard of the slot's table.
    partials: Vec<UnsafeCell<Vec<f32>>>,
    /// Shards still running; the one that brings it to zero adds the partials in.
    remaining: AtomicU32,
    /// Bags per reduce task, or 0 when the last shard adds the partials in itself.
    reduce_chunk: usize,
}

/// Floats below which the last shard of a table adds the partials in itself: splitting off
/// tasks costs more than adding a few hundred kilobytes.
const INLINE_REDUCE: usize = 1 << 16;

/// How to add `partials` buffers of `bs` bags x `dim` into the output: (bags per reduce task,
/// reduce tasks), or (0, 0) to add them inline. At most one task per core, each non-empty.
fn reduce_split(bs: usize, dim: usize, partials: usize, cores: usize) -> (usize, usize) {
    let floats = bs * dim * partials;
    if partials == 0 || bs == 0 || floats < INLINE_REDUCE {
        return (0, 0);
    }
    let want = floats.div_ceil(INLINE_REDUCE).min(cores).min(bs).max(1);
    let chunk = bs.div_ceil(want);
    (chunk, bs.div_ceil(chunk))
}

struct Request {
    lookup: Lookup,
    dep: Arc<Deployment>,
    out_ptr: *mut f32,
    out: Mutex<Option<Vec<f32>>>,
    width: usize,
    columns: Vec<usize>,
    slots: Vec<SlotState>,
    /// Per core: (slot, piece, partial target) triples its pinned task runs.
    pinned: Vec<Vec<(usize, usize, usize)>>,
    floating: usize,
    sub: usize,
    remaining: AtomicUsize,
    done: Mutex<Option<Completion>>,
    started: Instant,
}

// SAFETY: tasks of one request write disjoint regions of `out` and of the partial buffers
// (see the module docs); the regions are read only after `remaining` reaches zero, whose
// AcqRel ordering publishes every write.
unsafe impl Send for Request {}
unsafe impl Sync for Request {}

impl Request {
    /// Runs when every task is done: partial buffers back to the pool, mean division, then the
    /// completion.
    fn finish(&self, shared: &Shared) {
        for s in &self.slots {
            for p in &s.partials {
                // SAFETY: every task of the request is done, so nothing else touches the partials.
                shared.recycle(std::mem::take(unsafe { &mut *p.get() }));
            }
        }
        let mut out = self.out.lock().take().unwrap_or_default();
        let b = &self.lookup.batch;
        let bs = b.batch_size as usize;
        if self.lookup.finalize_mean {
            for (slot, &t) in self.lookup.tables.iter().enumerate() {
                let table = self.dep.tables[t as usize].as_ref().unwrap();
                if table.mode == PoolingMode::Mean {
                    let o = b.table_offsets(slot);
                    for s in 0..bs {
                        let n = (o[s + 1] - o[s]) as f32;
                        if n > 0.0 {
                            let c = s * self.width + self.columns[slot];
                            for v in &mut out[c..c + table.dim] {
                                *v /= n;
                            }
                        }
                    }
                }
            }
        }
        let result = LookupOutput {
            pooled: out,
            width: self.width,
            columns: self.columns.clone(),
            engine_time: self.started.elapsed(),
        };
        if let Some(done) = self.done.lock().take() {
            done(Ok(result));
        }
    }
}

enum TaskKind {
    Floating {
        b0: usize,
        b1: usize,
    },
    Pinned {
        core: usize,
    },
    /// Adds a sharded slot's partial buffers into bags `b0..b1` of the output.
    Reduce {
        slot: usize,
        b0: usize,
        b1: usize,
    },
}

struct Task {
    req: Arc<Request>,
    kind: TaskKind,
}

impl Task {
    /// Runs the task; returns the look-ups it did.
    fn run(&self, shared: &Shared, scratch: &mut Scratch) -> u64 {
        let isa = shared.isa;
        let r = &*self.req;
        let b = &r.lookup.batch;
        let bs = b.batch_size as usize;
        let mut lookups = 0u64;
        match self.kind {
            TaskKind::Floating { b0, b1 } => {
                for (slot, &t) in r.lookup.tables.iter().enumerate() {
                    let table = r.dep.tables[t as usize].as_ref().unwrap();
                    if let Layout::Replicated(piece) = &table.layout {
                        let o = b.table_offsets(slot);
                        lookups += (o[b1] - o[b0]) as u64;
                        let run = BagRun {
                            offsets: &o[b0..=b1],
                            ids: &b.ids,
                            // SAFETY: bags b0..b1 of this slot's columns belong to this task alone.
                            out: unsafe { r.out_ptr.add(b0 * r.width + r.columns[slot]) },
                            out_stride: r.width,
                        };
                        // SAFETY: ids were range-checked in `prepare`; the output region is ours.
                        unsafe { piece.pool(isa, run, scratch) };
                    }
                }
            }
            TaskKind::Pinned { core } => {
                for &(slot, j, _) in &r.pinned[core] {
                    let t = r.lookup.tables[slot];
                    let table = r.dep.tables[t as usize].as_ref().unwrap();
                    let Layout::Shards { pieces, .. } = &table.layout else { unreachable!() };
                    let o = b.table_offsets(slot);
                    lookups += (o[bs] - o[0]) as u64;
                    let (out, stride) = if j == 0 {
                        // SAFETY: only shard 0 of a slot writes the slot's columns of `out`.
                        (unsafe { r.out_ptr.add(r.columns[slot]) }, r.width)
                    } else {
                        // SAFETY: partial j-1 belongs to shard j alone until the slot completes.
                        let p = unsafe { &mut *r.slots[slot].partials[j - 1].get() };
                        *p = shared.take_buffer(bs * table.dim);
                        (p.as_mut_ptr(), table.dim)
                    };
                    let run = BagRun { offsets: o, ids: &b.ids, out, out_stride: stride };
                    // SAFETY: as above.
                    unsafe { pieces[j].1.pool(isa, run, scratch) };
                    self.shard_done(shared, slot, table.dim);
                }
            }
            TaskKind::Reduce { slot, b0, b1 } => {
                let t = r.lookup.tables[slot];
                let dim = r.dep.tables[t as usize].as_ref().unwrap().dim;
                // SAFETY: the slot's shards are all done, and bags b0..b1 are this task's alone.
                unsafe { self.add_partials(slot, dim, b0, b1) };
            }
        }
        lookups
    }

    /// Adds the slot's partial buffers into bags `b0..b1` of the output.
    ///
    /// # Safety
    /// Every shard of the slot must be done, and no one else may touch those bags' columns.
    unsafe fn add_partials(&self, slot: usize, dim: usize, b0: usize, b1: usize) {
        let r = &*self.req;
        for p in &r.slots[slot].partials {
            // SAFETY: per the contract, the partials are no longer written.
            let p = unsafe { &*p.get() };
            for bag in b0..b1 {
                // SAFETY: per the contract, the columns are ours.
                let o = unsafe { std::slice::from_raw_parts_mut(r.out_ptr.add(bag * r.width + r.columns[slot]), dim) };
                for (d, v) in o.iter_mut().zip(&p[bag * dim..(bag + 1) * dim]) {
                    *d += v;
                }
            }
        }
    }

    /// Marks one shard of a slot finished; the last one adds the other shards' partials in, or
    /// queues reduce tasks that do so slice by slice on whichever cores are free.
    fn shard_done(&self, shared: &Shared, slot: usize, dim: usize) {
        let r = &*self.req;
        let s = &r.slots[slot];
        if s.remaining.fetch_sub(1, Ordering::AcqRel) != 1 {
            return;
        }
        let bs = r.lookup.batch.batch_size as usize;
        if s.reduce_chunk == 0 {
            // SAFETY: every shard of the slot is done (AcqRel above), and no other task writes
            // the slot's columns any more.
            unsafe { self.add_partials(slot, dim, 0, bs) };
            return;
        }
        let mut n = 0;
        for b0 in (0..bs).step_by(s.reduce_chunk) {
            let b1 = (b0 + s.reduce_chunk).min(bs);
            shared.floating.push(Task { req: self.req.clone(), kind: TaskKind::Reduce { slot, b0, b1 } });
            n += 1;
        }
        shared.wake_any(n);
    }
}

impl Shared {
    fn submit(&self, req: Lookup, done: Completion) {
        if self.shutdown.load(Ordering::Relaxed) {
            return done(Err(EngineError::ShuttingDown));
        }
        // One read lock and an `Arc` clone, as with a single deployment: the epoch picks which.
        // The guard is released before `done` can run, since a completion may submit again.
        let picked = self.deployments.read().pick(req.epoch);
        let dep = match picked {
            Ok(dep) => dep,
            Err(e) => return done(Err(e)),
        };
        match self.prepare(&dep, &req) {
            Ok(state) => self.enqueue(state, done),
            Err(e) => done(Err(e)),
        }
    }

    fn cores(&self) -> usize {
        self.cpus.len()
    }

    /// A buffer of `n` floats with unspecified contents (whatever a previous request left):
    /// every float of it is overwritten by a kernel before anything reads it.
    fn take_buffer(&self, n: usize) -> Vec<f32> {
        let mut b = {
            let mut pool = self.buffers.lock();
            // The smallest buffer that is large enough: a large output buffer taken for a small
            // partial would leave the next large request to grow (and zero) a small one.
            let fit =
                pool.iter().enumerate().filter(|(_, b)| b.len() >= n).min_by_key(|(_, b)| b.len()).map(|(i, _)| i);
            match fit.or_else(|| pool.iter().enumerate().max_by_key(|(_, b)| b.len()).map(|(i, _)| i)) {
                Some(i) => pool.swap_remove(i),
                None => Vec::new(),
            }
        };
        if b.len() < n {
            b.resize(n, 0.0);
        } else {
            b.truncate(n);
        }
        if cfg!(debug_assertions) {
            b.fill(f32::NAN);
        }
        b
    }

    fn recycle(&self, buf: Vec<f32>) {
        if buf.capacity() == 0 {
            return;
        }
        let mut pool = self.buffers.lock();
        if pool.len() < POOLED_BUFFERS {
            pool.push(buf);
        }
    }

    /// Validates a request against the deployment its epoch picked, and lays out its tasks.
    fn prepare(&self, dep: &Arc<Deployment>, req: &Lookup) -> Result<Arc<Request>, EngineError> {
        let b = &req.batch;
        b.check_layout().map_err(|e| EngineError::BadRequest(e.to_string()))?;
        if req.tables.len() != b.num_tables as usize {
            return Err(EngineError::BadRequest(format!(
                "the request names {} tables for a batch of {}",
                req.tables.len(),
                b.num_tables
            )));
        }
        let bs = b.batch_size as usize;
        let cores = self.cores();
        let mut columns = Vec::with_capacity(req.tables.len());
        let mut width = 0usize;
        let mut slots = Vec::with_capacity(req.tables.len());
        for (slot, &t) in req.tables.iter().enumerate() {
            let table =
                dep.tables.get(t as usize).and_then(Option::as_ref).ok_or(EngineError::UnknownTable { table: t })?;
            check_ids(t, table, b.table_ids(slot))?;
            columns.push(width);
            width += table.dim;
            slots.push(SlotState { partials: Vec::new(), remaining: AtomicU32::new(0), reduce_chunk: 0 });
        }
        let mut pinned: Vec<Vec<(usize, usize, usize)>> = vec![Vec::new(); cores];
        let mut any_replicated = false;
        let mut reduce_tasks = 0usize;
        for (slot, &t) in req.tables.iter().enumerate() {
            let table = dep.tables[t as usize].as_ref().unwrap();
            match &table.layout {
                Layout::Replicated(_) => any_replicated = true,
                Layout::Shards { pieces, .. } => {
                    for (j, (core, _)) in pieces.iter().enumerate() {
                        pinned[*core].push((slot, j, j));
                    }
                    let s = &mut slots[slot];
                    s.remaining = AtomicU32::new(pieces.len() as u32);
                    // Partial buffers are taken by the shards' own tasks, on their own cores.
                    s.partials = (1..pieces.len()).map(|_| UnsafeCell::new(Vec::new())).collect();
                    let (chunk, tasks) = reduce_split(bs, table.dim, pieces.len() - 1, cores);
                    s.reduce_chunk = chunk;
                    reduce_tasks += tasks;
                }
            }
        }
        let out = self.take_buffer(bs * width);
        let sub = dep.knobs.sub_batch.max(1) as usize;
        let floating = if any_replicated && bs > 0 { bs.div_ceil(sub) } else { 0 };
        let tasks = floating + pinned.iter().filter(|p| !p.is_empty()).count() + reduce_tasks;
        let mut out = out;
        Ok(Arc::new(Request {
            lookup: req.clone(),
            dep: dep.clone(),
            out_ptr: out.as_mut_ptr(),
            out: Mutex::new(Some(out)),
            width,
            columns,
            slots,
            pinned,
            floating,
            sub,
            remaining: AtomicUsize::new(tasks),
            done: Mutex::new(None),
            started: Instant::now(),
        }))
    }

    fn enqueue(&self, req: Arc<Request>, done: Completion) {
        *req.done.lock() = Some(done);
        if req.remaining.load(Ordering::Relaxed) == 0 {
            // A batch of zero samples, or of no tables: nothing to run.
            return req.finish(self);
        }
        for (core, work) in req.pinned.iter().enumerate() {
            if !work.is_empty() {
                self.pinned[core].push(Task { req: req.clone(), kind: TaskKind::Pinned { core } });
                self.wake(core);
            }
        }
        for i in 0..req.floating {
            let b0 = i * req.sub;
            let b1 = ((i + 1) * req.sub).min(req.lookup.batch.batch_size as usize);
            self.floating.push(Task { req: req.clone(), kind: TaskKind::Floating { b0, b1 } });
        }
        if req.floating > 0 {
            self.wake_any(req.floating);
        }
    }

    fn wake(&self, core: usize) {
        if self.sleepers[core].parked.load(Ordering::SeqCst) {
            self.unpark(core);
        }
    }

    fn wake_any(&self, mut n: usize) {
        for c in 0..self.sleepers.len() {
            if n == 0 {
                break;
            }
            if self.sleepers[c].parked.load(Ordering::SeqCst) {
                self.unpark(c);
                n -= 1;
            }
        }
    }

    fn unpark(&self, core: usize) {
        if let Some(t) = self.sleepers[core].thread.lock().as_ref() {
            t.unpark();
        }
    }

    fn pop(&self, me: usize) -> Option<Task> {
        loop {
            match self.pinned[me].steal() {
                Steal::Success(t) => return Some(t),
                Steal::Retry => continue,
                Steal::Empty => {}
            }
            match self.floating.steal() {
                Steal::Success(t) => return Some(t),
                Steal::Retry => continue,
                Steal::Empty => return None,
            }
        }
    }

    fn has_work(&self, me: usize) -> bool {
        !self.pinned[me].is_empty() || !self.floating.is_empty()
    }
}

/// How long an idle core spins before it parks: long enough to catch the next task of a busy
/// stream without a wake-up, short enough not to steal a small machine's other threads' time.
const SPIN: Duration = Duration::from_micros(30);

fn core_loop(shared: Arc<Shared>, me: usize, cpu: usize, pin: bool) {
    if pin {
        core_affinity::set_for_current(core_affinity::CoreId { id: cpu });
    }
    *shared.sleepers[me].thread.lock() = Some(std::thread::current());
    let mut scratch = Scratch::default();
    let stats = &shared.stats[me];
    loop {
        if let Some(task) = shared.pop(me) {
            let t0 = Instant::now();
            let lookups = task.run(&shared, &mut scratch);
            stats.busy_ns.fetch_add(t0.elapsed().as_nanos() as u64, Ordering::Relaxed);
            stats.tasks.fetch_add(1, Ordering::Relaxed);
            stats.lookups.fetch_add(lookups, Ordering::Relaxed);
            if task.req.remaining.fetch_sub(1, Ordering::AcqRel) == 1 {
                task.req.finish(&shared);
            }
            continue;
        }
        let spin_start = Instant::now();
        while !shared.has_work(me) && spin_start.elapsed() < SPIN {
            std::hint::spin_loop();
        }
        if shared.has_work(me) {
            continue;
        }
        if shared.shutdown.load(Ordering::SeqCst) {
            return;
        }
        // Announce the park, then re-check: a submitter that pushed before seeing the flag
        // will have left work we now find, and one that pushes after will unpark us.
        shared.sleepers[me].parked.store(true, Ordering::SeqCst);
        if !shared.has_work(me) && !shared.shutdown.load(Ordering::SeqCst) {
            std::thread::park_timeout(Duration::from_millis(50));
        }
        shared.sleepers[me].parked.store(false, Ordering::SeqCst);
    }
}

/// Bytes of rows a look-up into this table reads, for GB/s figures.
pub fn row_bytes(row_type: RowType, dim: u32) -> usize {
    row_type.row_bytes(dim)
}

#[cfg(test)]
mod tests;
