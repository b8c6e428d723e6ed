//! The cost model: how long a plan takes per batch, predicted from table shapes, access skew,
//! the plan's placements and data flows, and per-node coefficients.
//!
//! For every core it works out which rows its caches hold: each core's L2 (and its share of the
//! last-level cache) keeps the rows read most often per batch among all the pieces the core
//! reads, like an LFU cache across tables. A piece's access curve comes from its table's: a
//! shard holding a fraction `f` of a table's rows (hot rows are scattered, so any shard holds
//! its share of every rank band) has its `n` hottest rows carry `f * M(n / f)` of the table's
//! look-ups, `M` being the table's cumulative share curve (analytic for uniform, Zipf and
//! hot-set distributions, empirical from a profile otherwise). Look-ups then cost, per cache
//! line of row, what the calibration measured for the level they hit and the data flow that
//! reads them. Cores of a worker share floating (replicated) work, so a worker's time is the
//! larger of its busiest core's pinned work and its average load.
//!
//! The coefficients start from a short calibration run on each worker and are refitted to every
//! measured trial (see [`crate::fit`]).

use serde::{Deserialize, Serialize};

use embtune_protocol::{CoreId, DataFlow, Placement, Plan, ShardRows};
use embtune_workloads::dist::analytic_top_share;
use embtune_workloads::{ModelSpec, TableProfile};

use crate::rules::MemoryCaps;

/// Per-node costs, nanoseconds. Per-line costs multiply the cache lines of a row.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Coefficients {
    /// Fixed cost of one look-up: resolving the id, loop and bag bookkeeping.
    pub lookup_ns: f64,
    /// A line of a row found in the core's L1/L2.
    pub hit_ns: f64,
    /// A line found in the last-level cache, with the row prefetched ahead.
    pub llc_ns: f64,
    /// A line from DRAM, prefetched ahead (bandwidth-bound).
    pub dram_ns: f64,
    /// Extra per line when the flow does not prefetch (latency exposed), LLC and DRAM.
    pub nopf_llc_ns: f64,
    pub nopf_dram_ns: f64,
    /// A prefetch issued for a line already cached: a wasted load slot.
    pub prefetch_ns: f64,
    /// The hot-cache index probe, per look-up.
    pub probe_ns: f64,
    /// Sorting and scattering of the blocked flow, per look-up.
    pub blocked_ns: f64,
    /// Extra per look-up when rows are scattered without huge pages (TLB misses).
    pub tlb_ns: f64,
    /// Per task the executor runs.
    pub task_ns: f64,
    /// Per request a worker serves over the network, and per byte moved.
    pub request_ns: f64,
    pub byte_ns: f64,
    /// Per query at the router (the client, or the coordinator's relay): split, fan-out and
    /// reduce; output bytes cost `byte_ns` each there too.
    pub coordinator_ns: f64,
}

impl Default for Coefficients {
    /// Measured on the 2-core development VM (AMD EPYC, KVM) with `embtune compare`; a worker's
    /// calibration replaces them.
    fn default() -> Self {
        Coefficients {
            lookup_ns: 1.2,
            hit_ns: 0.4,
            llc_ns: 2.0,
            dram_ns: 9.5,
            nopf_llc_ns: 1.5,
            nopf_dram_ns: 5.0,
            prefetch_ns: 0.8,
            probe_ns: 2.5,
            blocked_ns: 8.0,
            tlb_ns: 15.0,
            task_ns: 2_000.0,
            request_ns: 60_000.0,
            byte_ns: 2.5,
            coordinator_ns: 40_000.0,
        }
    }
}

impl Coefficients {
    /// The coefficients as a vector, for fitting.
    pub fn to_vec(&self) -> Vec<f64> {
        vec![
            self.lookup_ns,
            self.hit_ns,
            self.llc_ns,
            self.dram_ns,
            self.nopf_llc_ns,
            self.nopf_dram_ns,
            self.prefetch_ns,
            self.probe_ns,
            self.blocked_ns,
            self.tlb_ns,
            self.task_ns,
            self.request_ns,
            self.byte_ns,
            self.coordinator_ns,
        ]
    }

    pub fn from_vec(v: &[f64]) -> Coefficients {
        let g = |i: usize| v.get(i).copied().unwrap_or(0.0).max(0.0);
        Coefficients {
            lookup_ns: g(0),
            hit_ns: g(1),
            llc_ns: g(2),
            dram_ns: g(3),
            nopf_llc_ns: g(4),
            nopf_dram_ns: g(5),
            prefetch_ns: g(6),
            probe_ns: g(7),
            blocked_ns: g(8),
            tlb_ns: g(9),
            task_ns: g(10),
            request_ns: g(11),
            byte_ns: g(12),
            coordinator_ns: g(13),
        }
    }
}

/// What the model knows about a cluster's nodes.
#[derive(Clone, Debug, PartialEq)]
pub struct Node {
    pub caps: MemoryCaps,
    pub coef: Coefficients,
}

/// The workload the model predicts for: shapes, skew curves and batch size.
pub struct Workload<'a> {
    pub spec: &'a ModelSpec,
    pub profiles: &'a [TableProfile],
}

impl Workload<'_> {
    /// Share of table `t`'s look-ups on its `n` most frequent rows.
    pub fn share(&self, t: usize, n: f64) -> f64 {
        let ts = &self.spec.tables[t];
        let n = n.clamp(0.0, ts.rows as f64);
        if n <= 0.0 {
            return 0.0;
        }
        if let Some(s) = analytic_top_share(&ts.dist, ts.rows, n.ceil() as u64) {
            return s;
        }
        match self.profiles.get(t) {
            Some(p) if p.lookups > 0 => {
                // The empirical curve, topped up linearly for rows the sample never saw.
                let seen = p.unique() as f64;
                if n <= seen {
                    p.top_share_rows(n.ceil() as u64)
                } else {
                    let rest = (ts.rows as f64 - seen).max(1.0);
                    let tail = 1.0 - p.top_share_rows(p.unique() as u64);
                    1.0 - tail * (1.0 - (n - seen) / rest)
                }
            }
            _ => n / ts.rows as f64,
        }
    }

    /// Look-ups of table `t` per batch.
    pub fn lookups(&self, t: usize) -> f64 {
        self.spec.batch_size as f64 * self.spec.tables[t].pooling.mean()
    }
}

/// A table's predicted cost, for `plan explain`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct TableCost {
    pub table: String,
    pub placement: String,
    pub flow: String,
    /// Core-nanoseconds per batch over all cores.
    pub ns_per_batch: f64,
    /// Share of its look-ups served from L2, LLC and DRAM.
    pub l2: f64,
    pub llc: f64,
    pub dram: f64,
}

/// What the model predicts for a plan.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Prediction {
    /// Busy nanoseconds per batch of every core.
    pub per_core_ns: Vec<(CoreId, f64)>,
    /// Time of one batch on each worker (cores in parallel), nanoseconds.
    pub per_worker_ns: Vec<f64>,
    /// Latency of one batch on an idle cluster, nanoseconds.
    pub latency_ns: f64,
    /// The busiest resource's time per batch under load: 1e9 / this is the throughput.
    pub bottleneck_ns: f64,
    pub per_table: Vec<TableCost>,
}

impl Prediction {
    /// Batches per second at saturation.
    pub fn throughput(&self) -> f64 {
        1e9 / self.bottleneck_ns.max(1.0)
    }
}

/// A table's access curve cut into segments of falling per-row rate: the shape every piece of
/// the table shares, scaled by the piece's mass and row fraction. Precomputed once per model.
#[derive(Clone, Debug, PartialEq)]
pub struct Curve {
    /// Row counts at segment ends (of the whole table) and the table's cumulative share there.
    ends: Vec<f64>,
    shares: Vec<f64>,
}

impl Curve {
    fn new(w: &Workload<'_>, t: usize) -> Curve {
        let rows = w.spec.tables[t].rows as f64;
        let (mut ends, mut shares) = (vec![0.0], vec![0.0]);
        let mut n = 1.0f64;
        loop {
            let nn = n.min(rows);
            ends.push(nn);
            shares.push(w.share(t, nn));
            if nn >= rows {
                break;
            }
            n = (n * 1.6).ceil();
        }
        Curve { ends, shares }
    }

    /// Share of look-ups on the `n` hottest rows (linear between segment ends).
    fn share(&self, n: f64) -> f64 {
        let i = self.ends.partition_point(|&e| e < n);
        if i == 0 {
            return 0.0;
        }
        if i >= self.ends.len() {
            return *self.shares.last().unwrap();
        }
        let (a, b) = (self.ends[i - 1], self.ends[i]);
        let (sa, sb) = (self.shares[i - 1], self.shares[i]);
        sa + (sb - sa) * (n - a) / (b - a).max(1e-12)
    }

    /// Look-ups per row per batch in segment `i` when the table gets `lookups` per batch.
    fn rate(&self, i: usize, lookups: f64) -> f64 {
        (self.shares[i] - self.shares[i - 1]).max(0.0) * lookups / (self.ends[i] - self.ends[i - 1]).max(1e-12)
    }
}

/// One piece of a table as a core sees it.
#[derive(Clone, Debug)]
struct PieceUse {
    table: usize,
    /// Fraction of the table's rows in the piece.
    rows_frac: f64,
    /// Fraction of the table's look-ups the piece serves on this core.
    mass: f64,
    flow: DataFlow,
    row_bytes: f64,
    /// Look-ups per batch this core does for the piece.
    lookups: f64,
    replicated: bool,
}

impl PieceUse {
    /// Share of the table's look-ups this piece serves on its `n` hottest rows: `m * M(n / f)`
    /// (the piece's `n` hottest rows are its part of the table's `n / f` hottest, hot rows being
    /// scattered). A replicated table on one of `C` cores is `f = 1, m = 1 / C`.
    fn share(&self, c: &Curve, n: f64) -> f64 {
        self.mass * c.share(n / self.rows_frac.max(1e-12))
    }

    /// Rows of the piece read at least `tau` times per batch, and their bytes.
    fn rows_above(&self, c: &Curve, tau: f64, table_lookups: f64) -> f64 {
        // Piece rate in table segment i: the table's rate scaled by m / f per row.
        let scale = self.mass / self.rows_frac.max(1e-12);
        let mut rows = 0.0;
        for i in 1..c.ends.len() {
            let r = c.rate(i, table_lookups) * scale;
            if r < tau {
                break;
            }
            rows += (c.ends[i] - c.ends[i - 1]) * self.rows_frac;
        }
        rows
    }
}

/// A piece as a cache key: its fields, floats by their bits.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct PieceKey(usize, u64, u64, DataFlow, u64, u64, bool);

impl PieceUse {
    fn key(&self) -> PieceKey {
        PieceKey(
            self.table,
            self.rows_frac.to_bits(),
            self.mass.to_bits(),
            self.flow,
            self.row_bytes.to_bits(),
            self.lookups.to_bits(),
            self.replicated,
        )
    }
}

/// What a core's cost depends on: its node (by class), its worker's core count, the set of
/// replicated tables (by id) and its own pieces.
#[derive(PartialEq, Eq, Hash)]
struct CoreKey {
    class: usize,
    cores: u16,
    replicated: u64,
    pieces: Vec<PieceKey>,
}

/// Per-core costs kept between the predictions of one search (see [`predict_cached`]); for one
/// model only.
#[derive(Default)]
pub struct CoreCache {
    /// (pinned, floating) nanoseconds per batch of a core, by what it reads.
    map: std::cell::RefCell<rustc_hash::FxHashMap<CoreKey, (f64, f64)>>,
    /// The replicated sets, sorted and with their memoised costs, by (set id, node class,
    /// worker size): a move that leaves the set alone reuses them.
    rep_sets: std::cell::RefCell<rustc_hash::FxHashMap<(u64, usize, u16), std::rc::Rc<RepSet>>>,
    /// The last few replicated sets seen, with their ids.
    replicated: std::cell::RefCell<Vec<(Vec<PieceKey>, u64)>>,
    next_id: std::cell::Cell<u64>,
}

impl CoreCache {
    /// The id of a replicated set: the one it had if seen among the last few, else a new one.
    fn replicated_id(&self, set: Vec<PieceKey>) -> u64 {
        let mut seen = self.replicated.borrow_mut();
        if let Some((_, id)) = seen.iter().find(|(s, _)| *s == set) {
            return *id;
        }
        let id = self.next_id.get();
        self.next_id.set(id + 1);
        if seen.len() >= 4 {
            seen.remove(0);
        }
        seen.push((set, id));
        id
    }
}

/// The model's inputs that do not depend on the plan, built once per search.
pub struct Model<'a> {
    pub w: Workload<'a>,
    pub curves: Vec<Curve>,
    pub nodes: Vec<Node>,
    /// Whether queries cross a network (a cluster), or go straight to one in-process engine
    /// (the local bench).
    pub networked: bool,
    /// Clients loading the cluster at once: each routes, reduces and pools the client-resident
    /// tables of its own queries.
    pub clients: f64,
    /// Bytes per pooled value on the wire (4 for f32, 2 for f16 and bf16).
    pub wire_value_bytes: f64,
}

impl<'a> Model<'a> {
    /// A model of a cluster: queries pass a coordinator and the network.
    pub fn new(w: Workload<'a>, nodes: Vec<Node>) -> Model<'a> {
        let curves = (0..w.spec.tables.len()).map(|t| Curve::new(&w, t)).collect();
        Model { w, curves, nodes, networked: true, clients: 1.0, wire_value_bytes: 4.0 }
    }

    /// A model of one in-process engine: no network, no coordinator.
    pub fn local(w: Workload<'a>, node: Node) -> Model<'a> {
        Model { networked: false, ..Model::new(w, vec![node]) }
    }

    fn node(&self, worker: u16) -> &Node {
        &self.nodes[(worker as usize).min(self.nodes.len() - 1)]
    }

    /// Pushes the cache segments of `u` onto `out`: (rate, bytes) per segment of its curve.
    /// A piece's rows above a rate are the segments of its curve up to the first one read less
    /// often (see [`PieceUse::rows_above`]), so each segment counts at the running minimum of the
    /// rates before it. Segments read less than once in 1e9 batches are left out.
    fn segments(&self, u: &PieceUse, out: &mut Vec<(f64, f64)>) {
        let c = &self.curves[u.table];
        let tl = self.w.lookups(u.table);
        let scale = u.mass / u.rows_frac.max(1e-12);
        let mut run = f64::INFINITY;
        for i in 1..c.ends.len() {
            run = run.min(c.rate(i, tl) * scale);
            if run < RATE_LO {
                break;
            }
            out.push((run, (c.ends[i] - c.ends[i - 1]) * u.rows_frac * u.row_bytes));
        }
    }

    /// The replicated tables as one core of a worker with `cores_here` cores sees them (a 1/C
    /// share of each), their segments sorted once for every core that reads them.
    /// With `tables`, its costs keep the per-table figures (`plan explain`); a search's do not,
    /// since it keeps sets and their costs between moves and needs only the totals.
    fn rep_set(&self, replicated: &[PieceUse], cores_here: f64, tables: bool) -> RepSet {
        let pieces: Vec<PieceUse> = replicated
            .iter()
            .map(|u| PieceUse { mass: u.mass / cores_here, lookups: u.lookups / cores_here, ..u.clone() })
            .collect();
        let mut segs = Vec::new();
        for u in &pieces {
            self.segments(u, &mut segs);
        }
        segs.sort_unstable_by(|a, b| b.0.total_cmp(&a.0));
        let total = segs.iter().map(|s| s.1).sum();
        RepSet { pieces, segs, total, tables, memo: Default::default(), base: Default::default() }
    }

    /// Busy nanoseconds per batch of one core reading its `pinned` pieces and the replicated
    /// set `rep`, split into pinned and floating (replicated) work, plus per-table time and hits.
    ///
    /// The admission rates of the core's L2 and its share of the LLC (LFU caches: the rate above
    /// which the hottest rows fill them) come from the core's few pinned segments merged into the
    /// replicated set's, sorted once per set. The replicated pieces' cost depends on nothing
    /// else than those two rates, so it is computed once per pair and reused by every core
    /// that sees the same pair: the usual case, where the replicated tables' hottest rows fill
    /// the caches before a pinned piece's do. (Sorting every replicated segment again per core,
    /// and costing every replicated piece per core, made a move that replicates a table cost
    /// tens of milliseconds on a thousand nodes.)
    fn core_cost(&self, worker: u16, cores_here: f64, pinned: &[PieceUse], rep: &RepSet) -> CoreCost {
        let node = self.node(worker);
        let caps = &node.caps;
        let l2 = caps.l2_bytes as f64;
        // Its own L2, and its share of the last-level cache among the engine cores that share it.
        let llc = l2 + caps.llc_bytes as f64 / cores_here.min(caps.llc_cores as f64).max(1.0);
        let mut segs = Vec::new();
        for u in pinned {
            self.segments(u, &mut segs);
        }
        segs.sort_unstable_by(|a, b| b.0.total_cmp(&a.0));
        let [t2, t3] = thresholds(&segs, &rep.segs, rep.total, [l2, llc]);
        let mut out = CoreCost::default();
        for u in pinned {
            let (ns, hits) = self.piece_cost(node, u, t2, t3);
            out.pinned += ns;
            out.tables.push((u.table, ns, hits));
        }
        let mut memo = rep.memo.borrow_mut();
        let r = memo.entry((t2.to_bits(), t3.to_bits())).or_insert_with(|| {
            let mut r = CoreCost::default();
            for u in &rep.pieces {
                let (ns, hits) = self.piece_cost(node, u, t2, t3);
                r.floating += ns;
                if rep.tables {
                    r.tables.push((u.table, ns, hits));
                }
            }
            r
        });
        out.floating += r.floating;
        out.tables.extend_from_slice(&r.tables);
        out
    }

    /// One piece's nanoseconds per batch and its look-ups from L2, LLC and DRAM, with the
    /// core's admission rates `t2` and `t3` (0: everything fits).
    fn piece_cost(&self, node: &Node, u: &PieceUse, t2: f64, t3: f64) -> (f64, [f64; 3]) {
        let c = &self.curves[u.table];
        let tl = self.w.lookups(u.table);
        let m = u.mass.max(1e-12);
        let n2 = if t2 == 0.0 { f64::INFINITY } else { u.rows_above(c, t2, tl) };
        let n3 = if t3 == 0.0 { f64::INFINITY } else { u.rows_above(c, t3, tl) };
        let h1 = (u.share(c, n2) / m).min(1.0);
        let h12 = (u.share(c, n3) / m).clamp(h1, 1.0);
        let ns = lookup_cost(&node.coef, &node.caps, u, c, h1, h12 - h1, 1.0 - h12, n2);
        (ns, [h1 * u.lookups, (h12 - h1) * u.lookups, (1.0 - h12) * u.lookups])
    }

    /// The cost of a core that reads only the replicated set `rep` (every such core of an
    /// equal node and worker size costs the same), computed once per set.
    fn rep_only_cost(&self, worker: u16, cores_here: f64, rep: &RepSet) -> (f64, f64) {
        let cc = rep.base.get_or_init(|| self.core_cost(worker, cores_here, &[], rep));
        (cc.pinned, cc.floating)
    }
}

/// Segments read less often than this per batch are out of every cache and of the count.
const RATE_LO: f64 = 1e-9;
/// Admission rates are searched up to this many reads per batch.
const RATE_HI: f64 = 1e9;

/// The admission rates of LFU caches of each of `capacities` bytes over the segments of `a`
/// and `b` (each sorted by falling rate; `b_total` is `b`'s bytes): the rate above which the
/// hottest rows fill the cache (0 where everything fits). The two lists are walked as one,
/// in rate order; the first group of equal rates that overflows a cache sets its threshold
/// just above that rate, so that the group (which a threshold admits all or none of) stays out.
fn thresholds<const N: usize>(a: &[(f64, f64)], b: &[(f64, f64)], b_total: f64, capacities: [f64; N]) -> [f64; N] {
    let total = a.iter().map(|s| s.1).sum::<f64>() + b_total;
    let mut out = [0.0; N];
    let mut open: Vec<usize> = (0..N).filter(|&k| total > capacities[k]).collect();
    if open.is_empty() {
        return out;
    }
    let (mut i, mut j, mut acc) = (0, 0, 0.0);
    while (i < a.len() || j < b.len()) && !open.is_empty() {
        let r = match (a.get(i), b.get(j)) {
            (Some(x), Some(y)) => x.0.max(y.0),
            (Some(x), None) => x.0,
            (None, Some(y)) => y.0,
            (None, None) => break,
        };
        let mut group = 0.0;
        while i < a.len() && a[i].0 == r {
            group += a[i].1;
            i += 1;
        }
        while j < b.len() && b[j].0 == r {
            group += b[j].1;
            j += 1;
        }
        open.retain(|&k| {
            if acc + group > capacities[k] {
                out[k] = (r * (1.0 + 1e-12)).min(RATE_HI);
                false
            } else {
                true
            }
        });
        acc += group;
    }
    out
}

/// The replicated tables as one core of a given worker size sees them (see
/// [`Model::rep_set`]), with the costs computed from them so far.
struct RepSet {
    pieces: Vec<PieceUse>,
    /// Every piece's segments, most read first, and their bytes.
    segs: Vec<(f64, f64)>,
    total: f64,
    /// Whether its costs keep the per-table figures.
    tables: bool,
    /// The replicated pieces' cost per pair of admission rates (their bits).
    memo: std::cell::RefCell<rustc_hash::FxHashMap<(u64, u64), CoreCost>>,
    /// The cost of a core that reads only this set.
    base: std::cell::OnceCell<CoreCost>,
}

#[derive(Clone, Debug, Default)]
struct CoreCost {
    pinned: f64,
    floating: f64,
    tables: Vec<(usize, f64, [f64; 3])>,
}

/// Predicts `plan` with `model`.
pub fn predict_model(model: &Model<'_>, plan: &Plan) -> Prediction {
    predict_with(model, plan, None)
}

/// [`predict_model`] for a search: each core's cost is remembered in `cache`, keyed by what the
/// core reads, so that a plan one move away from one predicted before costs only the cores the
/// move changed (the rest is linear bookkeeping). The per-table figures are left out
/// (`per_table` is empty): the search needs the totals only.
pub fn predict_cached(model: &Model<'_>, plan: &Plan, cache: &CoreCache) -> Prediction {
    predict_with(model, plan, Some(cache))
}

fn predict_with(model: &Model<'_>, plan: &Plan, cache: Option<&CoreCache>) -> Prediction {
    let w = &model.w;
    let topo = &plan.topology;
    let cores: Vec<CoreId> = topo.cores().collect();
    // A core's index is its worker's first index plus its number: no map to build per call
    // (the search predicts a plan per move, on up to tens of thousands of cores).
    let mut first = Vec::with_capacity(topo.workers.len());
    let mut acc = 0usize;
    for shape in &topo.workers {
        first.push(acc);
        acc += shape.cores as usize;
    }
    let index_of = |c: CoreId| topo.contains(c).then(|| first[c.worker as usize] + c.core as usize);
    // Pinned pieces (owned and sharded) with their core's index: one list, sorted by core
    // below, rather than a list per core (tens of thousands of allocations per move).
    let mut pinned_at: Vec<(u32, PieceUse)> = Vec::new();
    // Replicated tables are read by every core of every worker, a 1/C share of the look-ups on
    // each: kept once here, not copied to every core, which made a prediction tables x cores.
    let mut replicated: Vec<PieceUse> = Vec::new();
    // What a client reads: its client-resident tables, whole.
    let mut client_uses: Vec<PieceUse> = Vec::new();
    let mut tasks = vec![0f64; cores.len()];
    let mut stamp = vec![0usize; cores.len()];
    let workers = topo.workers.len() as f64;
    for (t, (tp, ts)) in plan.tables.iter().zip(&w.spec.tables).enumerate() {
        let rb = tp.row_type.row_bytes(ts.dim) as f64;
        let n = w.lookups(t);
        match &tp.placement {
            Placement::Replicated => replicated.push(PieceUse {
                table: t,
                rows_frac: 1.0,
                mass: 1.0 / workers,
                flow: tp.flow,
                row_bytes: rb,
                lookups: n / workers,
                replicated: true,
            }),
            Placement::Client => client_uses.push(PieceUse {
                table: t,
                rows_frac: 1.0,
                mass: 1.0,
                flow: tp.flow,
                row_bytes: rb,
                lookups: n,
                replicated: false,
            }),
            p => {
                for (s, &owner) in p.owners().iter().enumerate() {
                    let rows = p.shard_rows(s, ts.rows);
                    let frac = rows.len(ts.rows) as f64 / ts.rows as f64;
                    let mass = shard_mass(w, t, &rows, frac);
                    let Some(i) = index_of(owner) else { continue };
                    pinned_at.push((
                        i as u32,
                        PieceUse {
                            table: t,
                            rows_frac: frac,
                            mass,
                            flow: tp.flow,
                            row_bytes: rb,
                            lookups: n * mass,
                            replicated: false,
                        },
                    ));
                    // A table's shards on one core are one task there: the core is stamped
                    // with the table it last counted.
                    if stamp[i] != t + 1 {
                        stamp[i] = t + 1;
                        tasks[i] += 1.0;
                    }
                }
            }
        }
    }
    // Stable: a core's pieces stay in table order, as the plan lists its tables.
    pinned_at.sort_by_key(|p| p.0);
    let (at, pinned_pieces): (Vec<u32>, Vec<PieceUse>) = pinned_at.into_iter().unzip();
    // With a cache: which replicated set this is (an id shared by equal sets), and room kept
    // bounded.
    let cached = cache.map(|c| {
        let id = c.replicated_id(replicated.iter().map(PieceUse::key).collect());
        if c.map.borrow().len() > 4 * cores.len() + 4096 {
            c.map.borrow_mut().clear();
        }
        if c.rep_sets.borrow().len() > 16 {
            c.rep_sets.borrow_mut().clear();
        }
        (c, id)
    });
    let bs = w.spec.batch_size as f64;
    let float_tasks = (bs / plan.knobs.sub_batch.max(1) as f64).ceil();
    let mut per_core_ns = Vec::with_capacity(cores.len());
    let mut pinned = vec![0f64; cores.len()];
    let mut floating = vec![0f64; cores.len()];
    let mut table_ns = vec![0f64; w.spec.tables.len()];
    let mut table_hits = vec![[0f64; 3]; w.spec.tables.len()];
    let mut add_tables = |cc: &CoreCost, count: f64| {
        for (t, ns, hits) in &cc.tables {
            table_ns[*t] += ns * count;
            for k in 0..3 {
                table_hits[*t][k] += hits[k] * count;
            }
        }
    };
    // Workers whose nodes are equal are one class: per worker, the first such worker.
    let mut class_of: Vec<Option<usize>> = vec![None; topo.workers.len()];
    let mut firsts: Vec<usize> = Vec::new();
    // The replicated set per (class, worker size), and how many cores read only it.
    let mut rep_sets: Vec<((usize, u16), std::rc::Rc<RepSet>, f64)> = Vec::new();
    let mut cursor = 0usize;
    for (i, &core) in cores.iter().enumerate() {
        let shape = &topo.workers[core.worker as usize];
        let cores_here = shape.cores.max(1) as f64;
        let coef = &model.node(core.worker).coef;
        let wi = core.worker as usize;
        let class = *class_of[wi].get_or_insert_with(|| {
            let node = model.node(core.worker);
            firsts.iter().copied().find(|&f| model.node(f as u16) == node).unwrap_or_else(|| {
                firsts.push(wi);
                wi
            })
        });
        let k = match rep_sets.iter().position(|r| r.0 == (class, shape.cores)) {
            Some(k) => k,
            None => {
                let set = match cached.as_ref() {
                    Some((cache, rep_id)) => cache
                        .rep_sets
                        .borrow_mut()
                        .entry((*rep_id, class, shape.cores))
                        .or_insert_with(|| std::rc::Rc::new(model.rep_set(&replicated, cores_here, false)))
                        .clone(),
                    None => std::rc::Rc::new(model.rep_set(&replicated, cores_here, true)),
                };
                rep_sets.push(((class, shape.cores), set, 0.0));
                rep_sets.len() - 1
            }
        };
        let from = cursor;
        while cursor < at.len() && at[cursor] as usize == i {
            cursor += 1;
        }
        let mine = &pinned_pieces[from..cursor];
        let rep = &rep_sets[k].1.clone();
        let (cc_pinned, cc_floating) = if mine.is_empty() {
            // Cores that read only replicated tables see the same pieces as every such core of
            // a worker with as many cores on an equal node: costed once per set and counted.
            rep_sets[k].2 += 1.0;
            model.rep_only_cost(core.worker, cores_here, rep)
        } else if let Some((cache, rep_id)) = cached.as_ref() {
            let key = CoreKey {
                class,
                cores: shape.cores,
                replicated: *rep_id,
                pieces: mine.iter().map(PieceUse::key).collect(),
            };
            let hit = cache.map.borrow().get(&key).copied();
            hit.unwrap_or_else(|| {
                let cc = model.core_cost(core.worker, cores_here, mine, rep);
                cache.map.borrow_mut().insert(key, (cc.pinned, cc.floating));
                (cc.pinned, cc.floating)
            })
        } else {
            let cc = model.core_cost(core.worker, cores_here, mine, rep);
            add_tables(&cc, 1.0);
            (cc.pinned, cc.floating)
        };
        // Tasks carry a fixed cost: one pinned task per core per request that needs it, and the
        // floating tasks shared out; all of it only on workers that serve the request.
        pinned[i] = cc_pinned + tasks[i].min(1.0) * coef.task_ns;
        floating[i] = cc_floating + float_tasks / cores_here / workers * coef.task_ns;
        per_core_ns.push((core, pinned[i] + floating[i]));
    }
    if cached.is_none() {
        for (_, set, count) in &rep_sets {
            if *count > 0.0 {
                add_tables(set.base.get().expect("costed above"), *count);
            }
        }
    }
    // A worker finishes a batch when its busiest core's pinned work is done and the floating
    // work has been shared out: max(pinned max, total / cores). One pass over the cores.
    let mut pinned_max = vec![0f64; topo.workers.len()];
    let mut total = vec![0f64; topo.workers.len()];
    for (i, c) in cores.iter().enumerate() {
        let wi = c.worker as usize;
        pinned_max[wi] = pinned_max[wi].max(pinned[i]);
        total[wi] += pinned[i] + floating[i];
    }
    let per_worker_ns: Vec<f64> = topo
        .workers
        .iter()
        .enumerate()
        .map(|(wi, shape)| pinned_max[wi].max(total[wi] / shape.cores.max(1) as f64))
        .collect();
    // The client's own engine pools the client-resident tables, in parallel with the workers.
    let client_ns = if client_uses.is_empty() {
        0.0
    } else {
        let cc = model.core_cost(0, 1.0, &client_uses, &model.rep_set(&[], 1.0, true));
        add_tables(&cc, 1.0);
        cc.pinned + cc.floating
    };
    // Network: a request to each worker that holds a part of the batch; ids in, pooled rows
    // out, for every table the clients do not hold.
    let remote: Vec<usize> = (0..w.spec.tables.len()).filter(|&t| !plan.tables[t].placement.is_client()).collect();
    let width: f64 = remote.iter().map(|&t| w.spec.tables[t].dim as f64).sum();
    let out_bytes = bs * width * model.wire_value_bytes;
    let in_bytes: f64 = remote.iter().map(|&t| w.lookups(t) * 4.0).sum::<f64>() + bs * remote.len() as f64 * 4.0;
    let mut latency = 0f64;
    let mut bottleneck = 0f64;
    let on_network = if model.networked && !remote.is_empty() { 1.0 } else { 0.0 };
    for (wi, busy) in per_worker_ns.iter().enumerate() {
        let c = &model.node(wi as u16).coef;
        let net = on_network * (c.request_ns + c.byte_ns * (out_bytes + in_bytes) / workers);
        latency = latency.max(busy + net);
        // Under load a worker's cores overlap framing with gathering; part of it remains.
        bottleneck = bottleneck.max(busy + net * 0.25);
    }
    // The client routes, receives and adds the replies; every client does so for its own
    // queries, so under load the clients share it.
    let coef0 = &model.node(0).coef;
    let reduce = on_network * (coef0.coordinator_ns + coef0.byte_ns * out_bytes);
    latency = latency.max(client_ns) + reduce;
    bottleneck = bottleneck.max((client_ns + reduce) * 0.5 / model.clients.max(1.0));
    let per_table = if cached.is_some() { Vec::new() } else { per_table(plan, w, &table_ns, &table_hits) };
    Prediction { per_core_ns, per_worker_ns, latency_ns: latency, bottleneck_ns: bottleneck, per_table }
}

/// The per-table figures of a prediction.
fn per_table(plan: &Plan, w: &Workload<'_>, table_ns: &[f64], table_hits: &[[f64; 3]]) -> Vec<TableCost> {
    plan.tables
        .iter()
        .zip(&w.spec.tables)
        .enumerate()
        .map(|(t, (tp, ts))| {
            let n: f64 = table_hits[t].iter().sum::<f64>().max(1e-12);
            TableCost {
                table: ts.name.clone(),
                placement: tp.placement.kind(),
                flow: tp.flow.to_string(),
                ns_per_batch: table_ns[t],
                l2: table_hits[t][0] / n,
                llc: table_hits[t][1] / n,
                dram: table_hits[t][2] / n,
            }
        })
        .collect()
}

/// Predicts `plan` on a cluster of `nodes` (one per worker of the plan's topology).
pub fn predict(w: &Workload<'_>, plan: &Plan, nodes: &[Node]) -> Prediction {
    let model = Model::new(Workload { spec: w.spec, profiles: w.profiles }, nodes.to_vec());
    predict_model(&model, plan)
}

/// Predicts `plan` on one in-process engine.
pub fn predict_local(w: &Workload<'_>, plan: &Plan, node: &Node) -> Prediction {
    let model = Model::local(Workload { spec: w.spec, profiles: w.profiles }, node.clone());
    predict_model(&model, plan)
}

/// Share of table `t`'s look-ups that land on a shard holding `frac` of its rows.
fn shard_mass(w: &Workload<'_>, t: usize, rows: &ShardRows, frac: f64) -> f64 {
    // With a profile of a skewed table, count the shard's observed look-ups.
    if let Some(p) = w.profiles.get(t)
        && p.lookups > 0
        && !matches!(w.spec.tables[t].dist, embtune_workloads::AccessDist::Uniform)
    {
        let all: u64 = p.hot.iter().map(|&(_, c)| c as u64).sum();
        if all > 0 {
            let seen: u64 = p.hot.iter().filter(|(id, _)| rows.contains(*id)).map(|&(_, c)| c as u64).sum();
            return seen as f64 / all as f64;
        }
    }
    frac
}

/// Nanoseconds per batch for a piece's look-ups on one core, by where they hit and the flow.
#[allow(clippy::too_many_arguments)]
fn lookup_cost(
    c: &Coefficients,
    caps: &MemoryCaps,
    u: &PieceUse,
    curve: &Curve,
    l2: f64,
    llc: f64,
    dram: f64,
    in_l2_rows: f64,
) -> f64 {
    let lines = (u.row_bytes / 64.0).ceil().max(1.0);
    let tlb = if caps.huge_pages { 0.0 } else { c.tlb_ns * (llc + dram) };
    let direct_pf = lines * (l2 * (c.hit_ns + c.prefetch_ns) + llc * c.llc_ns + dram * c.dram_ns) + tlb;
    let per = match u.flow {
        DataFlow::Direct { prefetch: 0 } => {
            lines * (l2 * c.hit_ns + llc * (c.llc_ns + c.nopf_llc_ns) + dram * (c.dram_ns + c.nopf_dram_ns)) + tlb
        }
        DataFlow::Direct { .. } => direct_pf,
        DataFlow::HotCache { hot_rows, .. } => {
            // The hot copy is contiguous (no TLB misses) and cached like any rows of its rate;
            // the rest is read as by the direct flow.
            let hot = (u.share(curve, hot_rows as f64) / u.mass.max(1e-12)).min(1.0);
            let hot_cost = lines * if (hot_rows as f64) <= in_l2_rows.max(1.0) { c.hit_ns } else { c.llc_ns };
            c.probe_ns + hot * hot_cost + (1.0 - hot) * direct_pf
        }
        DataFlow::Blocked { .. } => c.blocked_ns + lines * (l2 * c.hit_ns + (llc + dram) * c.llc_ns) + tlb * 0.2,
    };
    u.lookups * (c.lookup_ns + per)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Strategy;
    use embtune_protocol::Topology;
    use embtune_workloads::{AccessProfile, BatchGenerator, Preset, PresetOptions};

    proptest::proptest! {
        /// The thresholds over a core's pinned segments and a replicated set's, walked as two
        /// sorted lists, are those over all of them sorted as one list.
        #[test]
        fn thresholds_over_two_lists_equal_those_over_one(
            a in proptest::collection::vec((0u8..20, 1.0f64..1e6), 0..30),
            b in proptest::collection::vec((0u8..20, 1.0f64..1e6), 0..60),
            caps in (1.0f64..2e7, 1.0f64..2e7),
        ) {
            // Rates from a small set, so that equal rates (a group) occur across the lists.
            let seg = |v: &[(u8, f64)]| {
                let mut s: Vec<(f64, f64)> = v.iter().map(|&(r, bytes)| (f64::from(r) * 0.5 + 0.001, bytes)).collect();
                s.sort_unstable_by(|x, y| y.0.total_cmp(&x.0));
                s
            };
            let (sa, sb) = (seg(&a), seg(&b));
            let mut all = sa.clone();
            all.extend_from_slice(&sb);
            all.sort_unstable_by(|x, y| y.0.total_cmp(&x.0));
            let b_total: f64 = sb.iter().map(|s| s.1).sum();
            let all_total: f64 = all.iter().map(|s| s.1).sum();
            let two = thresholds(&sa, &sb, b_total, [caps.0, caps.1]);
            let one = thresholds(&all, &[], 0.0, [caps.0, caps.1]);
            let other_way = thresholds(&[], &all, all_total, [caps.0, caps.1]);
            proptest::prop_assert_eq!(two, one);
            proptest::prop_assert_eq!(one, other_way);
        }
    }

    fn synthetic(rows: u64, dist: &str) -> (ModelSpec, Vec<TableProfile>) {
        let spec = Preset::Synthetic
            .spec(&PresetOptions {
                tables: Some(1),
                rows: Some(rows),
                dim: Some(64),
                dist: Some(dist.parse().unwrap()),
                ..Default::default()
            })
            .unwrap();
        let g = BatchGenerator::new(&spec).unwrap();
        let p = AccessProfile::from_batches(&[rows], &g.pool(1 << 40, 4));
        (spec, p.tables)
    }

    fn plan(spec: &ModelSpec, topo: Topology, placement: Placement, flow: DataFlow) -> Plan {
        Plan::from_placements("t", spec, topo, [placement]).with_flow(flow)
    }

    fn node() -> Node {
        Node { caps: MemoryCaps::default(), coef: Coefficients::default() }
    }

    #[test]
    fn hit_rates_follow_size_and_skew() {
        let one = Topology::uniform(1, 1, 1 << 40);
        let (small, p) = synthetic(1000, "uniform");
        let pr = predict_local(
            &Workload { spec: &small, profiles: &p },
            &plan(&small, one.clone(), Placement::Replicated, DataFlow::DEFAULT),
            &node(),
        );
        assert!(pr.per_table[0].l2 > 0.99, "{:?}", pr.per_table[0]);

        let (big, p) = synthetic(16_000_000, "uniform");
        let pr = predict_local(
            &Workload { spec: &big, profiles: &p },
            &plan(&big, one.clone(), Placement::Replicated, DataFlow::DEFAULT),
            &node(),
        );
        assert!(pr.per_table[0].dram > 0.9, "{:?}", pr.per_table[0]);

        let (hot, p) = synthetic(16_000_000, "hotset:0.99:0.001");
        let pr = predict_local(
            &Workload { spec: &hot, profiles: &p },
            &plan(&hot, one, Placement::Replicated, DataFlow::DEFAULT),
            &node(),
        );
        assert!(pr.per_table[0].l2 + pr.per_table[0].llc > 0.95, "{:?}", pr.per_table[0]);
    }

    #[test]
    fn spreading_work_over_cores_beats_one_core() {
        let (spec, p) = synthetic(8_000_000, "zipf:1.05");
        let w = Workload { spec: &spec, profiles: &p };
        let two = Topology::uniform(1, 2, 1 << 40);
        let owned = predict_local(
            &w,
            &plan(&spec, two.clone(), Placement::Owned(CoreId::new(0, 0)), DataFlow::DEFAULT),
            &node(),
        );
        let sharded = predict_local(
            &w,
            &plan(
                &spec,
                two.clone(),
                Placement::RowRange {
                    bounds: vec![0, 4_000_000, 8_000_000],
                    owners: vec![CoreId::new(0, 0), CoreId::new(0, 1)],
                },
                DataFlow::DEFAULT,
            ),
            &node(),
        );
        let replicated = predict_local(&w, &plan(&spec, two, Placement::Replicated, DataFlow::DEFAULT), &node());
        assert!(sharded.throughput() > 1.5 * owned.throughput(), "{} vs {}", sharded.throughput(), owned.throughput());
        assert!(replicated.throughput() > 1.5 * owned.throughput());
        // Sharding gives each core half the hot rows: more of them fit its caches.
        assert!(sharded.per_table[0].dram <= replicated.per_table[0].dram + 1e-9);
    }

    #[test]
    fn no_prefetch_costs_more_on_cold_tables_and_less_on_hot_ones() {
        let one = Topology::uniform(1, 1, 1 << 40);
        let (big, p) = synthetic(16_000_000, "uniform");
        let w = Workload { spec: &big, profiles: &p };
        let pf = predict_local(
            &w,
            &plan(&big, one.clone(), Placement::Replicated, DataFlow::Direct { prefetch: 16 }),
            &node(),
        );
        let nopf = predict_local(
            &w,
            &plan(&big, one.clone(), Placement::Replicated, DataFlow::Direct { prefetch: 0 }),
            &node(),
        );
        assert!(pf.throughput() > nopf.throughput());
        let (small, p) = synthetic(1000, "uniform");
        let w = Workload { spec: &small, profiles: &p };
        let pf = predict_local(
            &w,
            &plan(&small, one.clone(), Placement::Replicated, DataFlow::Direct { prefetch: 16 }),
            &node(),
        );
        let nopf =
            predict_local(&w, &plan(&small, one, Placement::Replicated, DataFlow::Direct { prefetch: 0 }), &node());
        assert!(nopf.throughput() > pf.throughput());
    }

    #[test]
    fn round_robin_on_a_skewed_model_is_predicted_slower_than_balanced_plans() {
        let spec = Preset::CriteoKaggle.spec(&PresetOptions { scale: Some(0.01), ..Default::default() }).unwrap();
        let g = BatchGenerator::new(&spec).unwrap();
        let rows: Vec<u64> = spec.tables.iter().map(|t| t.rows).collect();
        let prof = AccessProfile::from_batches(&rows, &g.pool(1 << 40, 4));
        let w = Workload { spec: &spec, profiles: &prof.tables };
        let topo = Topology::uniform(1, 4, 8 << 30);
        let rr = Strategy::RoundRobin.plan(&spec, &topo, &Default::default()).unwrap();
        let st = Strategy::SizeThreshold.plan(&spec, &topo, &Default::default()).unwrap();
        assert!(predict_local(&w, &st, &node()).throughput() > predict_local(&w, &rr, &node()).throughput());
    }
}
