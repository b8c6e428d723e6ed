//! Plans: where every table lives and how it is read.
//!
//! A [`Plan`] is the one artefact the tuner searches over, the coordinator deploys and routes
//! by, and the worker's engine executes. It places each table at two levels (which workers,
//! then which cores within a worker) and gives each table a data flow and a row type.
//!
//! Placement semantics, the same in the local engine and in the cluster:
//! - [`Placement::Replicated`]: every worker holds the whole table; a request's bags for it are
//!   spread over all cores of the worker that serves it (work any core can take).
//! - [`Placement::Owned`]: one core of one worker holds it and does all its work.
//! - [`Placement::RowRange`] / [`Placement::Hash`]: rows are split into shards, each owned by a
//!   core of some worker; each shard produces partial sums that are added up.
//! - [`Placement::Client`]: every client holds the whole table and pools it itself, so its
//!   pooled rows never cross the network (the asymmetric rule applied one level up: a small
//!   table is replicated into the clients). Without clients (the local engine) it is not used.

use serde::{Deserialize, Serialize};

use embtune_workloads::{ModelSpec, RowType, TableSpec};

use crate::PlanError;

/// A core of a worker, by position: worker index in the topology, core index in the worker.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct CoreId {
    pub worker: u16,
    pub core: u16,
}

impl CoreId {
    pub fn new(worker: u16, core: u16) -> CoreId {
        CoreId { worker, core }
    }
}

impl std::fmt::Display for CoreId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "w{}c{}", self.worker, self.core)
    }
}

/// The shape of one worker as a plan sees it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct WorkerShape {
    pub cores: u16,
    /// Bytes of table memory the worker may use.
    pub memory_bytes: u64,
    /// Bytes of shards any single core may own; `None` for no per-core limit.
    #[serde(default)]
    pub core_memory_bytes: Option<u64>,
}

/// The cluster a plan was made for.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Topology {
    pub workers: Vec<WorkerShape>,
    /// Bytes of tables every client may hold ([`Placement::Client`]); 0 when tables may not
    /// live in the clients (the local engine, or a user who gave no `--client-memory`).
    #[serde(default)]
    pub client_memory_bytes: u64,
}

impl Topology {
    /// `workers` workers of `cores` cores and `memory_bytes` each, no client-resident tables.
    pub fn uniform(workers: u16, cores: u16, memory_bytes: u64) -> Topology {
        Topology::of(vec![WorkerShape { cores, memory_bytes, core_memory_bytes: None }; workers as usize])
    }

    /// These workers, no client-resident tables.
    pub fn of(workers: Vec<WorkerShape>) -> Topology {
        Topology { workers, client_memory_bytes: 0 }
    }

    /// The same topology with a per-client memory budget for client-resident tables.
    pub fn with_client_memory(mut self, bytes: u64) -> Topology {
        self.client_memory_bytes = bytes;
        self
    }

    pub fn total_cores(&self) -> usize {
        self.workers.iter().map(|w| w.cores as usize).sum()
    }

    /// Every core of the cluster, worker by worker.
    pub fn cores(&self) -> impl Iterator<Item = CoreId> + '_ {
        self.workers.iter().enumerate().flat_map(|(w, s)| (0..s.cores).map(move |c| CoreId::new(w as u16, c)))
    }

    pub fn contains(&self, c: CoreId) -> bool {
        self.workers.get(c.worker as usize).is_some_and(|w| c.core < w.cores)
    }
}

/// Where a table's rows live.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Placement {
    /// A full copy on every worker, its work spread over every core.
    Replicated,
    /// The whole table on one core.
    Owned(CoreId),
    /// Shard `i` holds rows `bounds[i]..bounds[i + 1]` and is owned by `owners[i]`. Bounds are
    /// chosen by access mass, not row count, so that hot rows spread over the owners.
    RowRange { bounds: Vec<u64>, owners: Vec<CoreId> },
    /// Row `r` belongs to shard `r mod owners.len()` ([`hash_shard`]).
    Hash { owners: Vec<CoreId> },
    /// A full copy in every client, pooled there: no worker holds it and its pooled rows never
    /// cross the network.
    Client,
}

impl Placement {
    /// The cores that own shards of this table (empty for replicated tables).
    pub fn owners(&self) -> &[CoreId] {
        match self {
            Placement::Replicated | Placement::Client => &[],
            Placement::Owned(c) => std::slice::from_ref(c),
            Placement::RowRange { owners, .. } | Placement::Hash { owners } => owners,
        }
    }

    /// Number of shards (1 for owned, 0 for replicated and client-resident).
    pub fn shards(&self) -> usize {
        self.owners().len()
    }

    /// The shard that row `id` belongs to.
    #[inline]
    pub fn shard_of(&self, id: u32) -> usize {
        match self {
            Placement::Replicated | Placement::Owned(_) | Placement::Client => 0,
            Placement::RowRange { bounds, .. } => {
                // partition_point gives the first bound above id; shard i has bounds[i] <= id.
                bounds.partition_point(|&b| b <= id as u64) - 1
            }
            Placement::Hash { owners } => hash_shard(id, owners.len()),
        }
    }

    /// Rows held by shard `i` of a table of `rows` rows.
    pub fn shard_rows(&self, i: usize, rows: u64) -> ShardRows {
        match self {
            Placement::Replicated | Placement::Owned(_) | Placement::Client => ShardRows::Range { lo: 0, hi: rows },
            Placement::RowRange { bounds, .. } => ShardRows::Range { lo: bounds[i], hi: bounds[i + 1] },
            Placement::Hash { owners } => ShardRows::Hash { index: i as u32, of: owners.len() as u32 },
        }
    }

    /// Whether the clients hold this table (and workers do not).
    pub fn is_client(&self) -> bool {
        matches!(self, Placement::Client)
    }

    /// A short label for reports: `replicated`, `client`, `owned`, `rows/4`, `hash/2`.
    pub fn kind(&self) -> String {
        match self {
            Placement::Replicated => "replicated".into(),
            Placement::Client => "client".into(),
            Placement::Owned(_) => "owned".into(),
            Placement::RowRange { owners, .. } => format!("rows/{}", owners.len()),
            Placement::Hash { owners } => format!("hash/{}", owners.len()),
        }
    }
}

/// Which rows a shard holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ShardRows {
    Range { lo: u64, hi: u64 },
    Hash { index: u32, of: u32 },
}

impl ShardRows {
    /// Whether the shard holds row `id`.
    #[inline]
    pub fn contains(&self, id: u32) -> bool {
        match *self {
            ShardRows::Range { lo, hi } => (id as u64) >= lo && (id as u64) < hi,
            ShardRows::Hash { index, of } => hash_shard(id, of as usize) == index as usize,
        }
    }

    /// Number of rows the shard holds, of a table of `rows` rows.
    pub fn len(&self, rows: u64) -> u64 {
        match *self {
            ShardRows::Range { lo, hi } => hi - lo,
            // Hash shards differ by at most a handful of rows; the mean is what memory planning needs.
            ShardRows::Hash { of, .. } => rows.div_ceil(of as u64),
        }
    }

    pub fn is_empty(&self, rows: u64) -> bool {
        self.len(rows) == 0
    }
}

/// The hash shard of a row: `id mod shards`. Row ids of categorical features are already
/// hashed (and embtune's generators scatter hot rows with a random permutation), so the modulus
/// balances shards; in exchange a shard stores its rows densely at `id / shards` with no index.
#[inline]
pub fn hash_shard(id: u32, shards: usize) -> usize {
    id as usize % shards
}

/// How a table's look-ups are executed on a CPU core.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DataFlow {
    /// Gather each id's row in order, prefetching the row `prefetch` ids ahead (across bag
    /// boundaries, so several bags are in flight at once). Best for tables far larger than
    /// the caches with little skew.
    Direct { prefetch: u16 },
    /// Keep the `hot_rows` most frequent rows (by observed frequency) re-laid out contiguously
    /// in a small buffer that stays cache-resident, found through a cache-resident index;
    /// other rows are gathered and prefetched as in `Direct`. Best for skewed tables.
    HotCache { hot_rows: u32, prefetch: u16 },
    /// Bucket the batch's ids by blocks of `block_rows` rows and walk the blocks in order,
    /// reading each distinct row once while it is hot. Best when a batch touches a large share
    /// of a table.
    Blocked { block_rows: u32 },
}

impl DataFlow {
    /// The plain gather with a prefetch distance that suits most tables.
    pub const DEFAULT: DataFlow = DataFlow::Direct { prefetch: 16 };

    pub fn name(&self) -> &'static str {
        match self {
            DataFlow::Direct { .. } => "direct",
            DataFlow::HotCache { .. } => "hot",
            DataFlow::Blocked { .. } => "blocked",
        }
    }
}

impl std::fmt::Display for DataFlow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DataFlow::Direct { prefetch } => write!(f, "direct(pf={prefetch})"),
            DataFlow::HotCache { hot_rows, prefetch } => write!(f, "hot(rows={hot_rows},pf={prefetch})"),
            DataFlow::Blocked { block_rows } => write!(f, "blocked(block={block_rows})"),
        }
    }
}

/// One table's plan.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TablePlan {
    /// The table's name in the spec (checked on import, for readable plans).
    pub name: String,
    pub placement: Placement,
    pub flow: DataFlow,
    /// The stored row type; narrower than the spec's only where the spec allows quantisation.
    pub row_type: RowType,
}

/// Knobs that apply to the whole plan.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Knobs {
    /// Bags per task when a replicated table's bags are spread over cores: small tasks balance
    /// better, large ones cost less scheduling.
    pub sub_batch: u32,
    /// Requests the coordinator keeps in flight to each worker.
    pub inflight_per_worker: u32,
}

impl Default for Knobs {
    fn default() -> Knobs {
        Knobs { sub_batch: 64, inflight_per_worker: 8 }
    }
}

/// A complete plan for a model on a topology.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Plan {
    /// Which strategy or search made it (`round-robin`, `tuned`, ...).
    pub strategy: String,
    /// Digest of the model spec it was made for ([`ModelSpec::digest`]).
    pub spec_digest: u64,
    pub topology: Topology,
    pub tables: Vec<TablePlan>,
    pub knobs: Knobs,
}

impl TablePlan {
    /// `table` placed by `placement`, read by the default direct gather, stored in the spec's
    /// row type.
    pub fn of(table: &TableSpec, placement: Placement) -> TablePlan {
        TablePlan { name: table.name.clone(), placement, flow: DataFlow::DEFAULT, row_type: table.row_type }
    }
}

impl Plan {
    /// The plan made by `strategy` that places `spec`'s tables by `placements` (one per table,
    /// in the spec's order) on `topology`: every table read by the default direct gather in the
    /// spec's row type, default knobs. The one way plans are put together from placements; the
    /// builders below change what differs. It is not validated: callers check it against their
    /// own limits with [`Plan::validate`].
    pub fn from_placements(
        strategy: impl Into<String>,
        spec: &ModelSpec,
        topology: Topology,
        placements: impl IntoIterator<Item = Placement>,
    ) -> Plan {
        Plan {
            strategy: strategy.into(),
            spec_digest: spec.digest(),
            topology,
            tables: spec.tables.iter().zip(placements).map(|(t, p)| TablePlan::of(t, p)).collect(),
            knobs: Knobs::default(),
        }
    }

    /// The same plan with every table read by `flow`.
    pub fn with_flow(mut self, flow: DataFlow) -> Plan {
        self.tables.iter_mut().for_each(|t| t.flow = flow);
        self
    }

    /// The same plan with these knobs.
    pub fn with_knobs(mut self, knobs: Knobs) -> Plan {
        self.knobs = knobs;
        self
    }

    /// Checks the plan against its spec and topology: one entry per table in order, owners
    /// that exist, shard bounds that cover the table, allowed row types and memory limits.
    pub fn validate(&self, spec: &ModelSpec) -> Result<(), PlanError> {
        let err = |m: String| Err(PlanError::Invalid(m));
        if self.tables.len() != spec.tables.len() {
            return err(format!(
                "the plan has {} tables, the model `{}` {}",
                self.tables.len(),
                spec.name,
                spec.tables.len()
            ));
        }
        if self.topology.workers.is_empty() || self.topology.workers.iter().any(|w| w.cores == 0) {
            return err("the topology needs at least one worker and every worker a core".into());
        }
        if self.knobs.sub_batch == 0 || self.knobs.inflight_per_worker == 0 {
            return err("knobs sub_batch and inflight_per_worker must be at least 1".into());
        }
        for (tp, ts) in self.tables.iter().zip(&spec.tables) {
            if tp.name != ts.name {
                return err(format!("plan table `{}` stands where the model has `{}`", tp.name, ts.name));
            }
            for &o in tp.placement.owners() {
                if !self.topology.contains(o) {
                    return err(format!("table `{}` is placed on {o}, which the topology lacks", ts.name));
                }
            }
            match &tp.placement {
                Placement::RowRange { bounds, owners } => {
                    if owners.is_empty() || bounds.len() != owners.len() + 1 {
                        return err(format!(
                            "table `{}`: {} row-range bounds for {} shards",
                            ts.name,
                            bounds.len(),
                            owners.len()
                        ));
                    }
                    if bounds[0] != 0 || *bounds.last().unwrap() != ts.rows || bounds.windows(2).any(|w| w[0] >= w[1]) {
                        return err(format!(
                            "table `{}`: row-range bounds must rise strictly from 0 to {}",
                            ts.name, ts.rows
                        ));
                    }
                }
                Placement::Hash { owners } if owners.is_empty() => {
                    return err(format!("table `{}`: a hash placement needs owners", ts.name));
                }
                _ => {}
            }
            if tp.row_type != ts.row_type && !(ts.quantizable && narrower(tp.row_type, ts.row_type)) {
                return err(format!(
                    "table `{}` is stored as {} in the plan but {} in the model, which does not allow quantisation",
                    ts.name, tp.row_type, ts.row_type
                ));
            }
            match tp.flow {
                DataFlow::HotCache { hot_rows: 0, .. } => {
                    return err(format!("table `{}`: a hot cache needs rows", ts.name));
                }
                DataFlow::Blocked { block_rows: 0 } => return err(format!("table `{}`: blocks need rows", ts.name)),
                _ => {}
            }
        }
        let mem = self.memory(spec);
        if mem.per_client > self.topology.client_memory_bytes {
            return Err(PlanError::Memory(if self.topology.client_memory_bytes == 0 {
                "the plan keeps tables in the clients, but clients may hold none here (pass --client-memory SIZE)"
                    .to_string()
            } else {
                format!(
                    "the client-resident tables need {} in every client but a client may hold {} (--client-memory)",
                    human_bytes(mem.per_client),
                    human_bytes(self.topology.client_memory_bytes)
                )
            }));
        }
        for (w, (need, shape)) in mem.per_worker.iter().zip(&self.topology.workers).enumerate() {
            if *need > shape.memory_bytes {
                return Err(PlanError::Memory(format!(
                    "worker {w} would hold {} of tables but has {}",
                    human_bytes(*need),
                    human_bytes(shape.memory_bytes)
                )));
            }
        }
        for (c, need) in &mem.per_core {
            if let Some(limit) = self.topology.workers[c.worker as usize].core_memory_bytes
                && *need > limit
            {
                return Err(PlanError::Memory(format!(
                    "core {c} would own {} of shards but may hold {}",
                    human_bytes(*need),
                    human_bytes(limit)
                )));
            }
        }
        Ok(())
    }

    /// Table memory per worker, per core and per client under this plan.
    pub fn memory(&self, spec: &ModelSpec) -> MemoryUse {
        let mut per_worker = vec![0u64; self.topology.workers.len()];
        let mut per_core: std::collections::BTreeMap<CoreId, u64> = Default::default();
        let mut per_client = 0u64;
        // Replicated tables cost every worker the same: summed once and added to each worker at
        // the end, so that the pass stays linear in tables plus workers (a thousand workers made
        // it tables x workers, and the search calls it on every move).
        let mut replicated = 0u64;
        for (tp, ts) in self.tables.iter().zip(&spec.tables) {
            let row = tp.row_type.row_bytes(ts.dim) as u64;
            let hot = match tp.flow {
                DataFlow::HotCache { hot_rows, .. } => hot_rows as u64 * row,
                _ => 0,
            };
            match &tp.placement {
                Placement::Replicated => replicated += ts.rows * row + hot.min(ts.rows * row),
                Placement::Client => per_client += ts.rows * row + hot.min(ts.rows * row),
                p => {
                    for (i, &o) in p.owners().iter().enumerate() {
                        let n = p.shard_rows(i, ts.rows).len(ts.rows);
                        let bytes = n * row + hot.min(n * row);
                        per_worker[o.worker as usize] += bytes;
                        *per_core.entry(o).or_default() += bytes;
                    }
                }
            }
        }
        for w in &mut per_worker {
            *w += replicated;
        }
        MemoryUse { per_worker, per_core, per_client }
    }

    /// Indices of the tables the clients hold.
    pub fn client_tables(&self) -> Vec<u16> {
        (0..self.tables.len() as u16).filter(|&t| self.tables[t as usize].placement.is_client()).collect()
    }

    /// What every client holds under this plan: the client-resident tables, whole, on its
    /// `cores` engine cores. `None` when the plan keeps no table in the clients.
    pub fn client_assignment(&self, spec: &ModelSpec, cores: u16) -> Option<WorkerAssignment> {
        let tables: Vec<LocalTable> = self
            .tables
            .iter()
            .zip(&spec.tables)
            .enumerate()
            .filter(|(_, (tp, _))| tp.placement.is_client())
            .map(|(i, (tp, ts))| LocalTable {
                table: i as u16,
                spec: ts.clone(),
                content_seed: table_seed(spec, i),
                row_type: tp.row_type,
                flow: tp.flow,
                layout: LocalLayout::Replicated,
                hot_ids: Vec::new(),
            })
            .collect();
        (!tables.is_empty()).then_some(WorkerAssignment {
            worker: u16::MAX,
            cores: cores.max(1),
            tables,
            knobs: self.knobs,
            plan_id: 0,
        })
    }

    /// What worker `w` must hold under this plan.
    pub fn assignment(&self, spec: &ModelSpec, w: u16) -> WorkerAssignment {
        let mut tables = Vec::new();
        for (i, (tp, ts)) in self.tables.iter().zip(&spec.tables).enumerate() {
            let layout = match &tp.placement {
                Placement::Replicated => LocalLayout::Replicated,
                // The clients hold it; no worker does.
                Placement::Client => continue,
                p => {
                    let shards: Vec<LocalShard> = p
                        .owners()
                        .iter()
                        .enumerate()
                        .filter(|(_, o)| o.worker == w)
                        .map(|(s, o)| LocalShard { shard: s as u32, core: o.core, rows: p.shard_rows(s, ts.rows) })
                        .collect();
                    if shards.is_empty() {
                        continue;
                    }
                    LocalLayout::Shards(shards)
                }
            };
            tables.push(LocalTable {
                table: i as u16,
                spec: ts.clone(),
                content_seed: table_seed(spec, i),
                row_type: tp.row_type,
                flow: tp.flow,
                layout,
                hot_ids: Vec::new(),
            });
        }
        WorkerAssignment {
            worker: w,
            cores: self.topology.workers[w as usize].cores,
            tables,
            knobs: self.knobs,
            plan_id: 0,
        }
    }

    /// A one-line summary: placements and flows counted.
    pub fn summary(&self) -> String {
        let mut kinds: std::collections::BTreeMap<String, usize> = Default::default();
        let mut flows: std::collections::BTreeMap<&str, usize> = Default::default();
        for t in &self.tables {
            let k = match t.placement {
                Placement::Replicated => "replicated",
                Placement::Client => "client-resident",
                Placement::Owned(_) => "owned",
                Placement::RowRange { .. } => "row-sharded",
                Placement::Hash { .. } => "hash-sharded",
            };
            *kinds.entry(k.to_string()).or_default() += 1;
            *flows.entry(t.flow.name()).or_default() += 1;
        }
        let k: Vec<String> = kinds.iter().map(|(k, n)| format!("{n} {k}")).collect();
        let f: Vec<String> = flows.iter().map(|(k, n)| format!("{n} {k}")).collect();
        format!("{}: {}; flows {}", self.strategy, k.join(", "), f.join(", "))
    }
}

/// Table memory a plan needs.
#[derive(Clone, Debug, PartialEq)]
pub struct MemoryUse {
    pub per_worker: Vec<u64>,
    pub per_core: std::collections::BTreeMap<CoreId, u64>,
    /// What every client holds: the client-resident tables.
    pub per_client: u64,
}

fn narrower(a: RowType, b: RowType) -> bool {
    a.row_bytes(64) < b.row_bytes(64)
}

/// The seed of table `i`'s contents: rows are a function of (seed, row id) alone, so every
/// shard, replica and reference computes the same values.
pub fn table_seed(spec: &ModelSpec, i: usize) -> u64 {
    embtune_workloads::rng::mix(spec.seed ^ embtune_workloads::spec::fnv1a(spec.tables[i].name.as_bytes()))
}

/// What one worker holds and how: the worker-local view of a [`Plan`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct WorkerAssignment {
    pub worker: u16,
    pub cores: u16,
    pub tables: Vec<LocalTable>,
    pub knobs: Knobs,
    /// The deployment (plan id) this is part of; the engine refuses look-ups routed by any
    /// other, atomically with the tables it swaps in. 0 outside a cluster.
    #[serde(default)]
    pub plan_id: u64,
}

impl WorkerAssignment {
    /// Gives every hot-cache table its hot row list: `hottest(table, n)` returns the `n` most
    /// frequent row ids of a table. Each shard keeps the hottest of its own rows, so a table of
    /// `k` shards asks for `k` times its per-shard budget.
    pub fn fill_hot_ids(&mut self, plan: &Plan, hottest: impl Fn(usize, usize) -> Vec<u32>) {
        for t in &mut self.tables {
            if let DataFlow::HotCache { hot_rows, .. } = t.flow {
                let shards = plan.tables[t.table as usize].placement.shards().max(1);
                t.hot_ids = hottest(t.table as usize, hot_rows as usize * shards);
            }
        }
    }
}

/// One table (or some of its shards) on a worker.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LocalTable {
    /// The table's index in the model spec; requests name tables by it.
    pub table: u16,
    pub spec: TableSpec,
    pub content_seed: u64,
    pub row_type: RowType,
    pub flow: DataFlow,
    pub layout: LocalLayout,
    /// For the hot-cache flow: the hottest rows, most frequent first, from an access profile.
    /// Each shard keeps the ones it holds. Empty for other flows.
    pub hot_ids: Vec<u32>,
}

/// How a worker holds a table.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum LocalLayout {
    /// The whole table; any core serves any of its bags.
    Replicated,
    /// These shards, each pinned to one core of the worker.
    Shards(Vec<LocalShard>),
}

/// A shard on a core of the worker.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LocalShard {
    /// The shard's index in the table's placement.
    pub shard: u32,
    pub core: u16,
    pub rows: ShardRows,
}

/// Bytes in KiB/MiB/GiB for messages.
pub fn human_bytes(b: u64) -> String {
    const U: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = b as f64;
    let mut i = 0;
    while v >= 1024.0 && i < U.len() - 1 {
        v /= 1024.0;
        i += 1;
    }
    if i == 0 { format!("{b} B") } else { format!("{v:.1} {}", U[i]) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use embtune_workloads::{Preset, PresetOptions};

    fn spec() -> ModelSpec {
        Preset::Synthetic
            .spec(&PresetOptions { tables: Some(3), rows: Some(1000), dim: Some(8), ..Default::default() })
            .unwrap()
    }

    fn plan(tables: Vec<Placement>) -> Plan {
        Plan::from_placements("test", &spec(), Topology::uniform(2, 2, 1 << 30), tables)
    }

    #[test]
    fn row_range_shards_cover_every_row_once() {
        let p = Placement::RowRange {
            bounds: vec![0, 10, 500, 1000],
            owners: vec![CoreId::new(0, 0), CoreId::new(0, 1), CoreId::new(1, 0)],
        };
        for id in [0u32, 9, 10, 499, 500, 999] {
            let s = p.shard_of(id);
            assert!(p.shard_rows(s, 1000).contains(id), "id {id} shard {s}");
            for other in 0..3 {
                if other != s {
                    assert!(!p.shard_rows(other, 1000).contains(id));
                }
            }
        }
    }

    #[test]
    fn hash_shards_are_balanced() {
        let mut counts = [0u32; 5];
        let perm = embtune_workloads::rng::Permutation::new(1 << 20, 3);
        for r in 0..100_000u64 {
            counts[hash_shard(perm.apply(r) as u32, 5)] += 1;
        }
        assert!(counts.iter().all(|&c| (19_000..21_000).contains(&c)), "{counts:?}");
    }

    #[test]
    fn validation_catches_bad_plans() {
        let s = spec();
        let ok = plan(vec![
            Placement::Replicated,
            Placement::Owned(CoreId::new(1, 1)),
            Placement::RowRange { bounds: vec![0, 400, 1000], owners: vec![CoreId::new(0, 0), CoreId::new(1, 0)] },
        ]);
        ok.validate(&s).unwrap();

        let missing = plan(vec![Placement::Replicated, Placement::Owned(CoreId::new(2, 0)), Placement::Replicated]);
        assert!(missing.validate(&s).unwrap_err().to_string().contains("w2c0"));

        let gap = plan(vec![
            Placement::Replicated,
            Placement::Replicated,
            Placement::RowRange { bounds: vec![0, 400, 999], owners: vec![CoreId::new(0, 0), CoreId::new(1, 0)] },
        ]);
        assert!(gap.validate(&s).is_err());

        let mut quant = ok.clone();
        quant.tables[0].row_type = RowType::Int8;
        assert!(quant.validate(&s).unwrap_err().to_string().contains("quantisation"));

        let mut small = ok.clone();
        small.topology.workers[0].memory_bytes = 1000;
        assert!(matches!(small.validate(&s), Err(PlanError::Memory(_))));
    }

    #[test]
    fn assignments_hold_exactly_the_workers_shards() {
        let s = spec();
        let p = plan(vec![
            Placement::Replicated,
            Placement::Owned(CoreId::new(1, 1)),
            Placement::RowRange { bounds: vec![0, 400, 1000], owners: vec![CoreId::new(0, 0), CoreId::new(1, 0)] },
        ]);
        let a0 = p.assignment(&s, 0);
        assert_eq!(a0.tables.iter().map(|t| t.table).collect::<Vec<_>>(), vec![0, 2]);
        let LocalLayout::Shards(sh) = &a0.tables[1].layout else { panic!() };
        assert_eq!(sh, &vec![LocalShard { shard: 0, core: 0, rows: ShardRows::Range { lo: 0, hi: 400 } }]);
        let a1 = p.assignment(&s, 1);
        assert_eq!(a1.tables.iter().map(|t| t.table).collect::<Vec<_>>(), vec![0, 1, 2]);
        let mem = p.memory(&s);
        let row = 8 * 4;
        assert_eq!(mem.per_worker, vec![1000 * row + 400 * row, 1000 * row + 1000 * row + 600 * row]);
    }
}
