//! The messages embtune's processes exchange.
//!
//! Every request travels on its own QUIC bidirectional stream as one frame (see [`crate::codec`])
//! and is answered by one frame. A frame's metadata is one of the enums below, encoded with
//! bincode; bulk data (row ids, bag offsets, pooled vectors) follows as a raw body of
//! little-endian 32-bit words, never encoded element by element.

use serde::{Deserialize, Serialize};

use embtune_workloads::ModelSpec;

use crate::plan::{Plan, WorkerAssignment};
use crate::tuning::{BestRecord, Job, JobConfig, Trial};

/// The protocol version every frame carries. Peers with another version get a typed error.
pub const PROTOCOL_VERSION: u16 = 7;

/// The ALPN token of the QUIC handshake, `embtune/<PROTOCOL_VERSION>`: a peer speaking another
/// version fails the handshake. It is derived from the version, so the two cannot disagree (they
/// once did: `embtune/2` beside version 3).
pub const ALPN: &[u8] = ALPN_TOKEN.0.split_at(ALPN_TOKEN.1).0;

/// `embtune/` and the decimal digits of [`PROTOCOL_VERSION`] in a fixed buffer, with the length
/// used: consts cannot format strings, so the digits are written by hand.
const ALPN_TOKEN: ([u8; 13], usize) = {
    let mut buf = *b"embtune/00000";
    let mut digits = [0u8; 5];
    let (mut v, mut n) = (PROTOCOL_VERSION, 0);
    loop {
        digits[n] = b'0' + (v % 10) as u8;
        n += 1;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    let mut i = 0;
    while i < n {
        buf[8 + i] = digits[n - 1 - i];
        i += 1;
    }
    (buf, 8 + n)
};

/// The TLS server name every node's certificate carries, so that nodes can be reached at any
/// address without per-address certificates.
pub const SERVER_NAME: &str = "embtune.cluster";

/// A request's metadata.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub enum Request {
    // ---- to a worker ----
    /// Materialise these tables; replaces what the worker held.
    Deploy {
        plan_id: u64,
        assignment: WorkerAssignment,
    },
    /// Pool a batch; the body is `ids` then `offsets` (ids first, so that the receiver keeps the
    /// large part in place and moves only the offsets).
    Lookup(LookupHead),
    /// Per-core counters and what is deployed.
    WorkerStats,

    // ---- to the coordinator, from clients and load generators ----
    /// The routing table of the active deployment: clients send look-ups straight to the
    /// workers by it.
    GetRoutes,
    /// A load generator offers itself; the coordinator then sends `LoadRound` requests the
    /// other way on the same connection.
    RegisterLoadgen(LoadgenHello),
    /// Run `loadgens` of the registered load generators (0: all) for one round each, at once,
    /// and return their merged report.
    RunLoad {
        loadgens: u32,
        spec: LoadSpec,
    },

    // ---- to a load generator, from the coordinator ----
    /// Load the cluster for one round, straight to the workers, and report.
    LoadRound(LoadSpec),

    // ---- to the coordinator, from workers ----
    Register(WorkerHello),
    Heartbeat(Heartbeat),

    // ---- to the coordinator, from clients ----
    /// Pool a batch of the deployed model; the body is `ids` then `offsets` over every table.
    Query(QueryHead),
    /// Deploy a model and plan on the cluster (the plan's topology is the cluster's workers).
    DeployPlan {
        spec: Box<ModelSpec>,
        plan: Box<Plan>,
    },
    /// The current model and plan.
    GetDeployment,
    /// Workers, their health and load.
    ClusterStatus,

    // ---- tuning, to the coordinator ----
    /// Start a tuning job on the cluster.
    SubmitTune {
        dataset: String,
        spec: Box<ModelSpec>,
        config: JobConfig,
    },
    /// A job with its trials.
    GetJob {
        id: String,
    },
    ListJobs,
    /// Start again a job that stopped.
    ResumeJob {
        id: String,
    },
    /// The best plans found for a dataset, over every cluster.
    BestFor {
        dataset: String,
    },

    // ---- live re-planning, to a worker from the coordinator ----
    /// The traffic this worker served since the last `TakeTraffic` (or its deployment), which
    /// it then forgets: the coordinator's re-planner drains every worker once per interval.
    TakeTraffic,
    /// Drop every deployment but plan `keep`: the plan a worker held beside the new one while
    /// clients switched routes is no longer used.
    Retire {
        keep: u64,
    },
    /// What the coordinator's live re-planner last saw and did (to the coordinator).
    GetReplan,

    // ---- interrupting a deployment ----
    /// Stop the deployment in progress (to a worker: its own; to the coordinator: every
    /// worker's). The plan deployed before it keeps serving; the answer is `Ack` whether or not
    /// one was in progress.
    CancelDeploy,
}

/// A response's metadata.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub enum Response {
    Deployed(DeployedInfo),
    /// Pooled rows: the body is `batch x width` f32 values.
    Pooled(PooledHead),
    WorkerStats(WorkerStatsReply),
    Registered {
        worker: u16,
        heartbeat_ms: u32,
    },
    Ack,
    Deployment(Option<DeploymentInfo>),
    Cluster(ClusterInfo),
    JobAccepted {
        id: String,
    },
    JobDetail {
        job: Box<Job>,
        trials: Vec<Trial>,
    },
    Jobs(Vec<Job>),
    Best(Vec<(BestRecord, Option<Trial>)>),
    /// The routing table; `None` when nothing is deployed.
    Routes(Option<Box<RouteTable>>),
    LoadgenRegistered {
        id: u16,
    },
    /// A load round's report (one load generator's, or several merged).
    Load(Box<LoadReport>),
    Error(WireError),
    Traffic(Box<TrafficReply>),
    Replan(Box<Option<crate::replan::ReplanStatus>>),
}

/// How a worker encodes the pooled rows of a reply. Sums are accumulated in f32 on the worker
/// and rounded once, when the reply is encoded; the client adds partial sums in f32.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq, Hash, Default)]
pub enum WireFormat {
    #[default]
    F32,
    /// IEEE half precision: 11 significant bits, half the bytes.
    F16,
    /// bfloat16: 8 significant bits and f32's range, half the bytes.
    Bf16,
}

impl WireFormat {
    pub const ALL: [WireFormat; 3] = [WireFormat::F32, WireFormat::F16, WireFormat::Bf16];

    pub fn name(self) -> &'static str {
        match self {
            WireFormat::F32 => "f32",
            WireFormat::F16 => "f16",
            WireFormat::Bf16 => "bf16",
        }
    }

    /// Bytes per pooled value on the wire.
    pub fn value_bytes(self) -> usize {
        match self {
            WireFormat::F32 => 4,
            WireFormat::F16 | WireFormat::Bf16 => 2,
        }
    }

    /// The relative error of one rounding to this format (half a unit in the last place).
    pub fn unit_roundoff(self) -> f64 {
        match self {
            WireFormat::F32 => 0.0,
            WireFormat::F16 => 1.0 / 2048.0,
            WireFormat::Bf16 => 1.0 / 256.0,
        }
    }

    /// Words of a reply body holding `values` pooled values (two halves to a word).
    pub fn words(self, values: usize) -> usize {
        match self {
            WireFormat::F32 => values,
            WireFormat::F16 | WireFormat::Bf16 => values.div_ceil(2),
        }
    }
}

impl std::fmt::Display for WireFormat {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for WireFormat {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        WireFormat::ALL
            .into_iter()
            .find(|w| w.name() == s)
            .ok_or_else(|| format!("unknown wire format `{s}`; choose f32, f16 or bf16"))
    }
}

/// The routing table of a deployment: what a client needs to send look-ups straight to the
/// workers. Replica sets follow from the plan: every worker of the plan holds the replicated
/// tables, and each shard has the one owner the plan names.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct RouteTable {
    /// The deployment's plan id; workers refuse look-ups for any other (`StalePlan`).
    pub epoch: u64,
    pub spec: ModelSpec,
    pub plan: Plan,
    /// The plan's workers by position: `workers[p]` plays worker `p` of the plan.
    pub workers: Vec<RouteWorker>,
    /// Bumped whenever a worker's health changes, so a client can tell a fresher table.
    pub generation: u64,
}

/// A worker as the routing table lists it.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct RouteWorker {
    /// The worker's registered id.
    pub id: u16,
    /// Where clients reach it over QUIC.
    pub addr: String,
    pub healthy: bool,
    /// Tasks queued in its engine at its last heartbeat.
    pub queue: u32,
}

/// What a load generator says when it registers.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct LoadgenHello {
    pub name: String,
    /// Cores its client engine uses for client-resident tables.
    pub cores: u16,
    pub pid: u32,
}

/// One round of load, as the coordinator (or `embtune bench`) asks a load generator for it.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct LoadSpec {
    /// The deployment to load: a load generator whose routes are older fetches them first.
    pub epoch: u64,
    /// The batches to send, in turn: `pool_batches` batches of the deployed model's generator
    /// from index `pool_first` (every process generates the same batch for an index).
    pub pool_first: u64,
    pub pool_batches: u32,
    /// Queries in flight (closed loop); ignored when `qps` is above zero.
    pub concurrency: u32,
    /// Poisson arrivals at this rate (open loop), or 0 for the closed loop.
    pub qps: f64,
    pub warmup_ms: u32,
    pub duration_ms: u32,
    pub wire: WireFormat,
    /// Batches to check against the reference after the round (0: none).
    pub verify: u32,
    /// Seed of the open loop's arrivals.
    pub seed: u64,
}

/// What a load round measured, after warm-up.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Default)]
pub struct LoadReport {
    /// Load generators whose reports are merged here.
    pub loadgens: u32,
    pub queries: u64,
    pub samples: u64,
    pub lookups: u64,
    pub errors: u64,
    /// The longest load generator's measured time, seconds.
    pub elapsed_s: f64,
    /// Bytes of look-up requests and replies that crossed the network (bodies and heads).
    pub wire_bytes: u64,
    /// Sums over queries of the slowest worker engine's time, microseconds.
    pub engine_us: u64,
    /// Sub-requests sent to workers, and those retried after a failure or a stale plan.
    pub sub_requests: u64,
    pub retries: u64,
    /// Query latency in microseconds, an HdrHistogram in its V2 serialisation.
    pub histogram: Vec<u8>,
    pub first_error: Option<String>,
    /// Whether the verified batches matched the reference (None: none checked).
    pub verified: Option<bool>,
    /// CPU seconds the load generators' processes used during the measured time, and the
    /// CPUs they may run on, summed: how close the clients came to their own bound.
    pub cpu_s: f64,
    pub cpus: f64,
}

/// A look-up sent to a worker: for each of `tables`, `batch_size` bags.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct LookupHead {
    /// The deployment the coordinator routed by; a worker on another one refuses.
    pub plan_id: u64,
    pub batch_size: u32,
    /// Model-spec indices of the tables, in the order of the offsets.
    pub tables: Vec<u16>,
    /// Words of offsets in the body (`tables.len() * batch_size + 1`), after the ids.
    pub offsets: u32,
    /// Words of ids at the start of the body.
    pub ids: u32,
    /// How the reply's pooled rows are encoded.
    pub reply: WireFormat,
    /// Which client sent it (0: the coordinator's relay), for per-client traffic counters.
    pub client: u32,
}

/// A client's batch over every table of the deployed model.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct QueryHead {
    /// Digest of the spec the client generated the batch for; 0 to skip the check.
    pub spec_digest: u64,
    pub batch_size: u32,
    pub num_tables: u32,
    pub offsets: u32,
    pub ids: u32,
}

/// A pooled reply.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Default)]
pub struct PooledHead {
    pub batch_size: u32,
    pub width: u32,
    /// Time inside the worker's engine (for a worker) or the slowest worker's engine (for the
    /// coordinator), microseconds.
    pub engine_us: u32,
    /// Tasks queued in the worker's engine when the reply left.
    pub queue: u32,
    /// Coordinator replies: time from receiving the query to sending the reply, microseconds.
    pub coordinator_us: u32,
    /// Coordinator replies: workers the query fanned out to.
    pub fanout: u16,
}

impl PooledHead {
    /// The head of a reply assembled from stripes of consecutive samples: their samples add
    /// up, and the times, queue and fan-out are the slowest stripe's.
    pub fn join(parts: impl IntoIterator<Item = PooledHead>) -> Option<PooledHead> {
        parts.into_iter().reduce(|a, b| PooledHead {
            batch_size: a.batch_size + b.batch_size,
            width: a.width,
            engine_us: a.engine_us.max(b.engine_us),
            queue: a.queue.max(b.queue),
            coordinator_us: a.coordinator_us.max(b.coordinator_us),
            fanout: a.fanout.max(b.fanout),
        })
    }
}

/// What a worker says when it registers.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct WorkerHello {
    pub name: String,
    /// Where the coordinator can reach the worker.
    pub listen: String,
    pub cores: u16,
    pub memory_bytes: u64,
    pub l2_bytes: u64,
    pub llc_bytes: u64,
    pub llc_cores: u32,
    pub huge_pages: bool,
    pub cpu_model: String,
    /// Gather cost calibration measured when the worker started.
    pub calibration: Option<Calibration>,
    /// The GPU that serves this worker's tables (`embtune worker --gpu N`): its name and
    /// memory. Such a worker has one core, the device, and `memory_bytes` is the device's.
    pub gpu: Option<String>,
    /// The plan the worker holds when it registers (0: none): a coordinator that restarted
    /// with that deployment need not send it again.
    #[serde(default)]
    pub holds: u64,
}

/// A worker's measured gather speed: what the tuner's cost model starts from.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Default)]
pub struct Calibration {
    /// Nanoseconds per looked-up row by where it comes from, for 256-byte rows.
    pub ns_per_row_l1: f64,
    pub ns_per_row_llc: f64,
    pub ns_per_row_dram: f64,
    /// Nanoseconds per request of fixed engine overhead.
    pub ns_per_request: f64,
}

/// A worker's periodic load report.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Default)]
pub struct Heartbeat {
    pub worker: u16,
    pub queue: u32,
    pub plan_id: u64,
    pub cores: Vec<CoreCounters>,
    /// Look-ups served per client since the worker started (the busiest clients).
    pub clients: Vec<ClientTraffic>,
    /// The deployment in progress, if any.
    pub deploying: Option<DeployProgressInfo>,
}

/// How far a worker is in materialising a plan's tables.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq, Default)]
pub struct DeployProgressInfo {
    pub plan_id: u64,
    /// Bytes of rows written so far, of `total_bytes`.
    pub done_bytes: u64,
    pub total_bytes: u64,
    /// Milliseconds since the deployment began.
    pub elapsed_ms: u64,
}

/// Cumulative traffic between one client and one worker.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq, Default)]
pub struct ClientTraffic {
    pub client: u32,
    pub requests: u64,
    /// Bytes of requests received and replies sent (frame bodies and heads).
    pub bytes_in: u64,
    pub bytes_out: u64,
}

/// Cumulative counters of one core.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Default)]
pub struct CoreCounters {
    pub core: u16,
    pub cpu: u32,
    pub busy_ns: u64,
    pub tasks: u64,
    pub lookups: u64,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Default)]
pub struct DeployedInfo {
    pub plan_id: u64,
    pub bytes: u64,
    pub huge_page_bytes: u64,
    pub seconds: f64,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Default)]
pub struct WorkerStatsReply {
    pub plan_id: u64,
    pub cores: Vec<CoreCounters>,
    pub requests: u64,
    pub errors: u64,
    pub bytes_held: u64,
}

/// The traffic one table's look-ups brought to a worker over a window.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Default)]
pub struct TableTraffic {
    /// The table's index in the spec.
    pub table: u16,
    /// Ids looked up, every request counted.
    pub lookups: u64,
    /// Samples (bags) of this table in the requests, every request counted.
    pub samples: u64,
    /// Ids of the sampled requests, the mass `hot` was counted over.
    pub sampled: u64,
    /// The most frequent rows of the sampled requests and their counts (a frequent-items
    /// summary: each count is at most `sampled / capacity` below the true one), most frequent
    /// first.
    pub hot: Vec<(u32, u64)>,
}

/// A worker's traffic since the coordinator last took it.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Default)]
pub struct TrafficReply {
    /// The plan the traffic was served for (the current one; requests for a previous plan
    /// still served during a switch are not counted).
    pub plan_id: u64,
    /// Nanoseconds the window covered.
    pub window_ns: u64,
    /// One request in `sample_every` has its ids counted into `hot` (0: sampling is off).
    pub sample_every: u32,
    /// Requests served in the window.
    pub requests: u64,
    pub tables: Vec<TableTraffic>,
    /// Per-core counters at the end of the window (cumulative, like `WorkerStats`).
    pub cores: Vec<CoreCounters>,
}

/// The deployment a coordinator keeps in its store, so that after a restart it routes by the
/// same table and its workers, registering again, keep serving what they hold.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct DeploymentRecord {
    pub plan_id: u64,
    pub spec: ModelSpec,
    pub plan: Plan,
    /// The address of the worker at each plan position.
    pub workers: Vec<String>,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct DeploymentInfo {
    pub plan_id: u64,
    pub spec: ModelSpec,
    pub plan: Plan,
}

/// The coordinator's view of the cluster.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Default)]
pub struct ClusterInfo {
    pub workers: Vec<WorkerInfo>,
    pub plan_id: Option<u64>,
    pub model: Option<String>,
    /// Queries served and failed since the coordinator started (relayed ones only: direct
    /// clients reach the workers without it).
    pub queries: u64,
    pub query_errors: u64,
    /// Load generators connected now.
    pub loadgens: Vec<LoadgenInfo>,
}

/// A registered load generator.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Default)]
pub struct LoadgenInfo {
    pub id: u16,
    pub name: String,
    pub cores: u16,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Default)]
pub struct WorkerInfo {
    pub id: u16,
    pub name: String,
    pub addr: String,
    pub healthy: bool,
    pub cores: u16,
    pub memory_bytes: u64,
    /// Bytes of tables it holds under the current plan.
    pub bytes_held: u64,
    pub queue: u32,
    /// Sub-requests served since it registered, and their engine time.
    pub requests: u64,
    pub engine_ns: u64,
    pub core_counters: Vec<CoreCounters>,
    pub last_seen_ms: u64,
    pub cpu_model: String,
    /// The GPU serving its tables, if it is a GPU worker.
    #[serde(default)]
    pub gpu: Option<String>,
    /// Traffic per client since the worker started, as its last heartbeat reported it.
    #[serde(default)]
    pub clients: Vec<ClientTraffic>,
    /// The deployment it was making at its last heartbeat, if any.
    #[serde(default)]
    pub deploying: Option<DeployProgressInfo>,
}

/// Why a request failed: a kind to branch on and a message for people.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq, thiserror::Error)]
#[error("{kind:?}: {message}")]
pub struct WireError {
    pub kind: ErrorKind,
    pub message: String,
}

impl WireError {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> WireError {
        WireError { kind, message: message.into() }
    }
}

#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// The frame could not be parsed.
    BadFrame,
    /// The frame's protocol version is not ours.
    WrongVersion,
    /// The frame exceeds the size limits.
    Oversized,
    /// A batch over the request limits.
    BatchTooLarge,
    UnknownTable,
    RowOutOfRange,
    /// A row of a shard the receiving worker does not hold.
    NotHeld,
    /// A shard needed by the query is on a worker that is down.
    ShardUnavailable,
    /// Nothing is deployed.
    NoDeployment,
    /// The request was routed by another plan than the one the worker holds: refetch the
    /// routes and try again.
    StalePlan,
    /// No load generator is connected to run the load.
    NoLoadgen,
    /// The batch was generated for another model.
    WrongModel,
    Deploy,
    /// The request is valid but not for this kind of node.
    NotSupported,
    Internal,
    /// The receiver is at a limit that protects its memory (requests in flight, buffered bytes
    /// per connection or per process); the request was not read. Retry later, or lower the
    /// concurrency. (New kinds go last: bincode encodes a kind by its position.)
    Overloaded,
    /// The frame did not arrive within the receiver's read deadline.
    TimedOut,
    /// The job asked for is not in the coordinator's store: check its id (`embtune results
    /// list`).
    NoJob,
    /// The coordinator's store could not be read or written (a full disk, a damaged record):
    /// nothing of the request was committed; free space or repair the data directory, then
    /// retry.
    Store,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// New kinds go last: bincode encodes a kind by its position, so a kind added in the middle
    /// would change what every older kind decodes as.
    #[test]
    fn error_kinds_keep_their_positions() {
        let meta = |k: ErrorKind| crate::codec::encode_head(&k, 0).unwrap()[crate::codec::HEADER_LEN..].to_vec();
        assert_eq!(meta(ErrorKind::BadFrame), [0]);
        assert_eq!(meta(ErrorKind::TimedOut), [16]);
        assert_eq!(meta(ErrorKind::NoJob), [17]);
        assert_eq!(meta(ErrorKind::Store), [18]);
    }

    #[test]
    fn the_alpn_token_names_the_protocol_version() {
        assert_eq!(ALPN, format!("embtune/{PROTOCOL_VERSION}").as_bytes());
    }

    #[test]
    fn wire_formats_parse_by_name_and_pack_two_halves_a_word() {
        for w in WireFormat::ALL {
            assert_eq!(w.name().parse::<WireFormat>(), Ok(w));
        }
        assert!("f64".parse::<WireFormat>().unwrap_err().contains("f16"));
        assert_eq!(WireFormat::F16.words(7), 4);
        assert_eq!(WireFormat::F32.words(7), 7);
    }

    #[test]
    fn stripes_heads_join_into_the_whole_batch_with_the_slowest_times() {
        let part = |batch_size, engine_us, coordinator_us| PooledHead {
            batch_size,
            width: 26,
            engine_us,
            coordinator_us,
            queue: engine_us / 10,
            fanout: 1,
        };
        let j = PooledHead::join([part(64, 30, 200), part(64, 50, 150), part(63, 40, 300)]).unwrap();
        assert_eq!(
            j,
            PooledHead { batch_size: 191, width: 26, engine_us: 50, coordinator_us: 300, queue: 5, fanout: 1 }
        );
        assert_eq!(PooledHead::join([part(8, 1, 2)]), Some(part(8, 1, 2)));
        assert_eq!(PooledHead::join([]), None);
    }
}
