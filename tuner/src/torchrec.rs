//! Plans in TorchRec's terms, both ways: an embtune [`Plan`] as TorchRec's per-table
//! `ParameterSharding`, and a TorchRec `ShardingPlan` (its planner's output) as an embtune plan.
//!
//! The file format is TorchRec's own `ShardingPlan._serialize()`: `{"plan": {MODULE_PATH:
//! {TABLE: {"sharding_type", "compute_kernel", "ranks", "shards": [{"shard_offsets",
//! "shard_sizes", "placement"}]}}}}`, with `world_size`, `local_world_size` and
//! `compute_device` beside it (what `torchrec.distributed.planner.Topology` needs) and, in an
//! export, an `embtune` section that says per table what TorchRec's form keeps and loses.
//! `benches/peers/torchrec_plan.py` builds `torchrec.distributed.types.ShardingPlan` from it.
//!
//! Ranks: a core is rank `worker x cores_per_worker + core`, so a worker is a TorchRec host
//! (`local_world_size` = cores per worker) and the topology must be uniform.
//!
//! | embtune | TorchRec |
//! | --- | --- |
//! | replicated | `data_parallel` on every rank |
//! | owned by a core | `table_wise` on its rank |
//! | row ranges | `row_wise` over every rank (`table_row_wise` when on one worker of several), a shard per rank at embtune's offsets (ranks without rows get an empty shard) |
//! | hash shards | no form: `row_wise` with even ranges on the same ranks, flagged |
//! | hot-row copy, blocked gather | no form (TorchRec reads rows directly), flagged |
//!
//! Back from TorchRec: `table_wise` is owned, `row_wise` and `table_row_wise` are row ranges at
//! TorchRec's offsets, `data_parallel` is replicated, and `column_wise` (`table_column_wise`,
//! `grid_shard`) over several ranks, which embtune cannot express, becomes even row ranges on the
//! same ranks (the same bytes per rank), flagged.

use std::collections::BTreeMap;

use serde::Serialize;
use serde_json::{Map, Value, json};

use embtune_protocol::{CoreId, DataFlow, Placement, Plan, Topology};
use embtune_workloads::{ModelSpec, RowType};

/// What the `format` field of an export says.
pub const FORMAT: &str = "torchrec-sharding-plan";
/// Bumped when the export's fields change meaning.
pub const FORMAT_VERSION: u32 = 1;

/// Why a plan cannot be moved between embtune and TorchRec.
#[derive(Debug, thiserror::Error, Clone, PartialEq)]
pub enum TorchrecError {
    #[error("{0}")]
    Topology(String),
    #[error("{0}")]
    Parse(String),
    #[error("{0}")]
    Mismatch(String),
}

/// TorchRec's rank numbering of a uniform topology.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct Ranks {
    pub world_size: u32,
    pub local_world_size: u32,
}

impl Ranks {
    /// The ranks of `topo`: every worker a host of `local_world_size` ranks.
    pub fn of(topo: &Topology) -> Result<Ranks, TorchrecError> {
        let first = topo.workers.first().ok_or_else(|| TorchrecError::Topology("the plan has no worker".into()))?;
        if topo.workers.iter().any(|w| w.cores != first.cores) {
            let cores: Vec<String> = topo.workers.iter().map(|w| w.cores.to_string()).collect();
            return Err(TorchrecError::Topology(format!(
                "TorchRec numbers ranks as host x local_world_size + local rank, so every worker needs the same cores; \
                 this plan's workers have {} cores",
                cores.join(", ")
            )));
        }
        Ok(Ranks { world_size: topo.total_cores() as u32, local_world_size: first.cores as u32 })
    }

    /// `worker x cores_per_worker + core`.
    pub fn rank(&self, c: CoreId) -> u32 {
        c.worker as u32 * self.local_world_size + c.core as u32
    }

    pub fn core(&self, rank: u32) -> CoreId {
        CoreId::new((rank / self.local_world_size) as u16, (rank % self.local_world_size) as u16)
    }

    pub fn hosts(&self) -> u32 {
        self.world_size / self.local_world_size
    }

    /// The topology of these ranks, `memory_bytes` for each worker.
    pub fn topology(&self, memory_bytes: u64) -> Topology {
        Topology::uniform(self.hosts() as u16, self.local_world_size as u16, memory_bytes)
    }
}

/// What one table's TorchRec form keeps.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct TableExport {
    pub table: String,
    /// embtune's placement, short (`rows/4`).
    pub placement: String,
    pub flow: String,
    pub sharding_type: String,
    /// `exact`, or `nearest` when some of the plan has no TorchRec form.
    pub torchrec_form: &'static str,
    /// What TorchRec's form cannot say (empty when exact).
    pub no_torchrec_form: Vec<String>,
    /// Where TorchRec keeps what a plan holds elsewhere (row types live on the table config).
    pub notes: Vec<String>,
}

/// An embtune plan in TorchRec's terms.
#[derive(Clone, Debug)]
pub struct Export {
    /// The file's contents.
    pub json: Value,
    pub tables: Vec<TableExport>,
}

impl Export {
    /// Tables whose TorchRec form is only the nearest one.
    pub fn nearest(&self) -> impl Iterator<Item = &TableExport> {
        self.tables.iter().filter(|t| !t.no_torchrec_form.is_empty())
    }
}

/// TorchRec's even row split of `rows` over `n` ranks (its planner's and its training input
/// dist's): blocks of `ceil(rows / n)`, the last ones shorter or empty.
pub fn even_split(rows: u64, n: usize) -> Vec<u64> {
    let block = rows.div_ceil(n.max(1) as u64).max(1);
    (0..n as u64).map(|i| rows.saturating_sub(i * block).min(block)).collect()
}

fn shard(offset: [u64; 2], size: [u64; 2], rank: u32, device: &str) -> Value {
    json!({ "shard_offsets": offset, "shard_sizes": size, "placement": format!("rank:{rank}/{device}") })
}

/// The plan as TorchRec's `ShardingPlan` for the module at `module_path` (`""` for an
/// `EmbeddingBagCollection` planned on its own), with what each table's form keeps.
pub fn export(plan: &Plan, spec: &ModelSpec, module_path: &str, device: &str) -> Result<Export, TorchrecError> {
    if plan.tables.len() != spec.tables.len() || plan.tables.iter().zip(&spec.tables).any(|(p, t)| p.name != t.name) {
        return Err(TorchrecError::Mismatch(format!("the plan was not made for the model `{}`", spec.name)));
    }
    let ranks = Ranks::of(&plan.topology)?;
    let all: Vec<u32> = (0..ranks.world_size).collect();
    let mut module = Map::new();
    let mut tables = Vec::new();
    let mut per_table = Map::new();
    for (tp, ts) in plan.tables.iter().zip(&spec.tables) {
        let (rows, dim) = (ts.rows, ts.dim as u64);
        let mut lost = Vec::new();
        let mut notes = Vec::new();
        // Row ranges as TorchRec's row-wise: `(rank, lo, hi)` per embtune shard.
        let row_wise = |pieces: Vec<(u32, u64, u64)>, lost: &mut Vec<String>| -> (String, Vec<u32>, Vec<Value>) {
            let hosts: std::collections::BTreeSet<u32> = pieces.iter().map(|p| p.0 / ranks.local_world_size).collect();
            // One worker of several: TorchRec's table-row-wise (row-wise within a host).
            let (kind, group): (&str, Vec<u32>) = if ranks.hosts() > 1 && hosts.len() == 1 {
                let h = *hosts.first().unwrap();
                ("table_row_wise", (h * ranks.local_world_size..(h + 1) * ranks.local_world_size).collect())
            } else {
                ("row_wise", all.clone())
            };
            let rising = pieces.windows(2).all(|w| w[0].0 < w[1].0);
            if rising {
                // A shard for every rank of the group, in rank order, empty where embtune puts
                // no rows: the layout TorchRec's row-wise sharding indexes by rank.
                let mut next = 0;
                let mut sizes = Vec::new();
                let mut shards = Vec::new();
                for &r in &group {
                    let (lo, hi) = match pieces.iter().find(|p| p.0 == r) {
                        Some(&(_, lo, hi)) => (lo, hi),
                        None => (next, next),
                    };
                    next = hi;
                    sizes.push(hi - lo);
                    shards.push(shard([lo, 0], [hi - lo, dim], r, device));
                }
                if sizes != even_split(rows, group.len()) {
                    lost.push(format!(
                        "uneven row ranges ({}): TorchRec's types and its inference sharding keep these offsets, but its \
                         training input dist splits rows evenly (blocks of {})",
                        sizes.iter().map(u64::to_string).collect::<Vec<_>>().join(", "),
                        rows.div_ceil(group.len() as u64)
                    ));
                }
                (kind.to_string(), group, shards)
            } else {
                lost.push(
                    "row ranges whose ranks do not rise with their rows (TorchRec's row-wise gives the i-th rank the i-th \
                     range): the shards are kept as they are"
                        .to_string(),
                );
                let shards = pieces.iter().map(|&(r, lo, hi)| shard([lo, 0], [hi - lo, dim], r, device)).collect();
                ("row_wise".to_string(), pieces.iter().map(|p| p.0).collect(), shards)
            }
        };
        // Every arm says how its placement maps; a new placement is one more arm.
        let (sharding_type, kernel, table_ranks, shards): (String, &str, Vec<u32>, Option<Vec<Value>>) = match &tp
            .placement
        {
            Placement::Replicated => ("data_parallel".into(), "dense", all.clone(), None),
            Placement::Client => {
                lost.push(
                    "client-resident (every client holds it and pools it itself, so no worker does): TorchRec has no \
                     such placement; exported as data-parallel, a copy on every rank, the nearest it has"
                        .to_string(),
                );
                ("data_parallel".into(), "dense", all.clone(), None)
            }
            Placement::Owned(c) => {
                let r = ranks.rank(*c);
                ("table_wise".into(), "fused", vec![r], Some(vec![shard([0, 0], [rows, dim], r, device)]))
            }
            Placement::RowRange { bounds, owners } => {
                let pieces = owners.iter().zip(bounds.windows(2)).map(|(o, b)| (ranks.rank(*o), b[0], b[1])).collect();
                let (k, rs, sh) = row_wise(pieces, &mut lost);
                (k, "fused", rs, Some(sh))
            }
            Placement::Hash { owners } => {
                lost.push(format!(
                    "hash shards (row id mod {}): TorchRec has no such sharding; exported as even row ranges on the \
                         same ranks (the same rows per rank, routed by range instead)",
                    owners.len()
                ));
                let split = even_split(rows, owners.len());
                let mut lo = 0;
                let mut pieces = Vec::new();
                for (o, n) in owners.iter().zip(split) {
                    pieces.push((ranks.rank(*o), lo, lo + n));
                    lo += n;
                }
                pieces.retain(|p| p.2 > p.1);
                let (k, rs, sh) = row_wise(pieces, &mut Vec::new());
                (k, "fused", rs, Some(sh))
            }
        };
        match tp.flow {
            DataFlow::Direct { .. } => {}
            DataFlow::HotCache { hot_rows, .. } => lost.push(format!(
                "hot-row copy ({hot_rows} hottest rows a shard kept contiguous in cache): TorchRec's CPU kernels read rows \
                 where they are (its nearest, the fused_uvm_caching kernel, is for GPUs)"
            )),
            DataFlow::Blocked { block_rows } => lost.push(format!(
                "blocked gather (ids sorted into blocks of {block_rows} rows): TorchRec's kernels gather in id order"
            )),
        }
        if tp.row_type != RowType::F32 || ts.row_type != RowType::F32 {
            notes.push(format!(
                "rows stored as {}: set data_type={} on its EmbeddingBagConfig (a ShardingPlan does not carry row types)",
                tp.row_type,
                match tp.row_type {
                    RowType::F32 => "FP32",
                    RowType::F16 => "FP16",
                    RowType::Int8 => "INT8",
                }
            ));
        }
        let mut entry = Map::new();
        entry.insert("sharding_type".into(), json!(sharding_type));
        entry.insert("compute_kernel".into(), json!(kernel));
        entry.insert("ranks".into(), json!(table_ranks));
        if let Some(s) = shards {
            entry.insert("shards".into(), Value::Array(s));
        }
        module.insert(ts.name.clone(), Value::Object(entry));
        let t = TableExport {
            table: ts.name.clone(),
            placement: tp.placement.kind(),
            flow: tp.flow.to_string(),
            sharding_type,
            torchrec_form: if lost.is_empty() { "exact" } else { "nearest" },
            no_torchrec_form: lost,
            notes,
        };
        per_table.insert(t.table.clone(), serde_json::to_value(&t).expect("serialises"));
        tables.push(t);
    }
    let json = json!({
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "model": spec.name,
        "world_size": ranks.world_size,
        "local_world_size": ranks.local_world_size,
        "compute_device": device,
        "plan": { module_path: module },
        "embtune": {
            "strategy": plan.strategy,
            "spec_digest": format!("{:#x}", spec.digest()),
            "knobs": format!(
                "sub-batch {}, {} requests in flight per worker: embtune's executor and coordinator knobs, no TorchRec form",
                plan.knobs.sub_batch, plan.knobs.inflight_per_worker
            ),
            "tables": per_table,
        },
    });
    Ok(Export { json, tables })
}

/// A TorchRec plan as an embtune plan, with what had no exact form.
#[derive(Clone, Debug)]
pub struct Imported {
    pub plan: Plan,
    pub ranks: Ranks,
    /// Per table, what the import had to approximate or leave out.
    pub notes: BTreeMap<String, Vec<String>>,
}

/// The rank of a shard's `placement` (`rank:3/cpu`, `rank:3/cuda:3`).
fn placement_rank(p: &str) -> Option<u32> {
    p.strip_prefix("rank:")?.split('/').next()?.parse().ok()
}

fn u64s(v: Option<&Value>, what: &str, table: &str) -> Result<Vec<u64>, TorchrecError> {
    v.and_then(Value::as_array).and_then(|a| a.iter().map(Value::as_u64).collect::<Option<Vec<u64>>>()).ok_or_else(
        || TorchrecError::Parse(format!("table `{table}`: `{what}` must be a list of non-negative integers")),
    )
}

/// One shard: `(rank, row offset, column offset, rows, columns)`.
type Shard = (u32, u64, u64, u64, u64);

/// Turns a TorchRec `ShardingPlan` (as `_serialize()` writes it, or an export of embtune's) into
/// an embtune plan for `spec`. The ranks come from the file's `world_size` and
/// `local_world_size`, else from `ranks`; every worker gets `memory_bytes`. Flows are the direct
/// gather (what TorchRec's CPU kernels do), row types the spec's.
pub fn import(v: &Value, spec: &ModelSpec, ranks: Option<Ranks>, memory_bytes: u64) -> Result<Imported, TorchrecError> {
    let root = v.as_object().ok_or_else(|| TorchrecError::Parse("a TorchRec plan is a JSON object".into()))?;
    let modules = match root.get("plan") {
        Some(Value::Object(m)) => m.clone(),
        Some(_) => return Err(TorchrecError::Parse("`plan` must map module paths to their table shardings".into())),
        None => {
            return Err(TorchrecError::Parse(
                "no `plan`: expected ShardingPlan._serialize()'s form, {\"plan\": {MODULE_PATH: {TABLE: {...}}}}"
                    .into(),
            ));
        }
    };
    let mut params: BTreeMap<String, &Map<String, Value>> = BTreeMap::new();
    for (path, m) in &modules {
        let m = m
            .as_object()
            .ok_or_else(|| TorchrecError::Parse(format!("module `{path}` must map tables to their shardings")))?;
        for (name, p) in m {
            let p = p.as_object().ok_or_else(|| TorchrecError::Parse(format!("table `{name}` is not an object")))?;
            if params.insert(name.clone(), p).is_some() {
                return Err(TorchrecError::Mismatch(format!("table `{name}` is sharded by two modules")));
            }
        }
    }
    let from_file =
        match (root.get("world_size").and_then(Value::as_u64), root.get("local_world_size").and_then(Value::as_u64)) {
            (Some(w), Some(l)) => Some(Ranks { world_size: w as u32, local_world_size: l as u32 }),
            _ => None,
        };
    let ranks = match (from_file, ranks) {
        (Some(f), Some(g)) if f != g => {
            return Err(TorchrecError::Topology(format!(
                "the plan is for world_size {} and local_world_size {}, not the {} x {} asked for",
                f.world_size,
                f.local_world_size,
                g.hosts(),
                g.local_world_size
            )));
        }
        (Some(r), _) | (None, Some(r)) => r,
        (None, None) => {
            return Err(TorchrecError::Topology(
                "the plan does not say its world_size and local_world_size: pass --workers and --cores".into(),
            ));
        }
    };
    if ranks.world_size == 0 || ranks.local_world_size == 0 || ranks.world_size % ranks.local_world_size != 0 {
        return Err(TorchrecError::Topology(format!(
            "world_size {} is not a whole number of hosts of local_world_size {}",
            ranks.world_size, ranks.local_world_size
        )));
    }
    let missing: Vec<&str> = spec.tables.iter().map(|t| t.name.as_str()).filter(|n| !params.contains_key(*n)).collect();
    if !missing.is_empty() {
        return Err(TorchrecError::Mismatch(format!(
            "the TorchRec plan has no sharding for {} of the model's tables ({}): was it made for this model?",
            missing.len(),
            missing.join(", ")
        )));
    }
    if let Some(extra) = params.keys().find(|k| spec.table_index(k).is_none()) {
        return Err(TorchrecError::Mismatch(format!(
            "the TorchRec plan shards `{extra}`, which the model `{}` lacks",
            spec.name
        )));
    }
    let mut notes: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut placements = Vec::new();
    for ts in &spec.tables {
        let p = params[&ts.name];
        let name = ts.name.as_str();
        let note =
            |notes: &mut BTreeMap<String, Vec<String>>, m: String| notes.entry(name.to_string()).or_default().push(m);
        let kind = p
            .get("sharding_type")
            .and_then(Value::as_str)
            .ok_or_else(|| TorchrecError::Parse(format!("table `{name}` has no sharding_type")))?;
        let kind = kind.rsplit('.').next().unwrap_or(kind).to_ascii_lowercase();
        let listed = match p.get("ranks") {
            None | Some(Value::Null) => Vec::new(),
            r => u64s(r, "ranks", name)?.into_iter().map(|r| r as u32).collect(),
        };
        let mut shards: Vec<Shard> = Vec::new();
        if let Some(list) = p.get("shards").and_then(Value::as_array) {
            for (i, s) in list.iter().enumerate() {
                let off = u64s(s.get("shard_offsets"), "shard_offsets", name)?;
                let size = u64s(s.get("shard_sizes"), "shard_sizes", name)?;
                if off.len() != 2 || size.len() != 2 {
                    return Err(TorchrecError::Parse(format!("table `{name}`: shards of an embedding table are 2-D")));
                }
                let rank = s
                    .get("placement")
                    .and_then(Value::as_str)
                    .and_then(placement_rank)
                    .or_else(|| listed.get(i).copied())
                    .ok_or_else(|| TorchrecError::Parse(format!("table `{name}`: shard {i} names no rank")))?;
                shards.push((rank, off[0], off[1], size[0], size[1]));
            }
        }
        for &r in listed.iter().chain(shards.iter().map(|s| &s.0)) {
            if r >= ranks.world_size {
                return Err(TorchrecError::Topology(format!(
                    "table `{name}` is on rank {r}, beyond world_size {}",
                    ranks.world_size
                )));
            }
        }
        for s in &shards {
            if s.1 + s.3 > ts.rows || s.2 + s.4 > ts.dim as u64 {
                return Err(TorchrecError::Mismatch(format!(
                    "table `{name}`: a shard reaches row {} and column {}, beyond the model's {} x {}",
                    s.1 + s.3,
                    s.2 + s.4,
                    ts.rows,
                    ts.dim
                )));
            }
        }
        let first_rank = || shards.first().map(|s| s.0).or_else(|| listed.first().copied());
        let placement = match kind.as_str() {
            "data_parallel" => Placement::Replicated,
            "table_wise" => {
                let r = first_rank()
                    .ok_or_else(|| TorchrecError::Parse(format!("table `{name}`: table-wise on no rank")))?;
                Placement::Owned(ranks.core(r))
            }
            "row_wise" | "table_row_wise" => {
                let mut rs: Vec<Shard> = shards.iter().copied().filter(|s| s.3 > 0).collect();
                rs.sort_by_key(|s| s.1);
                let mut bounds = vec![0];
                for s in &rs {
                    if s.1 != *bounds.last().unwrap() || s.2 != 0 || s.4 != ts.dim as u64 {
                        return Err(TorchrecError::Mismatch(format!(
                            "table `{name}`: row-wise shards must tile the rows (full width, no gap or overlap); one starts at row {}",
                            s.1
                        )));
                    }
                    bounds.push(s.1 + s.3);
                }
                if *bounds.last().unwrap() != ts.rows {
                    return Err(TorchrecError::Mismatch(format!(
                        "table `{name}`: the row-wise shards cover {} of its {} rows",
                        bounds.last().unwrap(),
                        ts.rows
                    )));
                }
                let owners: Vec<CoreId> = rs.iter().map(|s| ranks.core(s.0)).collect();
                if owners.len() == 1 { Placement::Owned(owners[0]) } else { Placement::RowRange { bounds, owners } }
            }
            "column_wise" | "table_column_wise" | "grid_shard" => {
                let mut distinct: Vec<u32> = Vec::new();
                for r in shards.iter().map(|s| s.0).chain(listed.iter().copied()) {
                    if !distinct.contains(&r) {
                        distinct.push(r);
                    }
                }
                match distinct.len() {
                    0 => return Err(TorchrecError::Parse(format!("table `{name}`: {kind} on no rank"))),
                    1 => Placement::Owned(ranks.core(distinct[0])),
                    k => {
                        let k = k.min(ts.rows as usize);
                        let split = even_split(ts.rows, k);
                        let mut bounds = vec![0];
                        for n in &split {
                            bounds.push(bounds.last().unwrap() + n);
                        }
                        note(
                            &mut notes,
                            format!(
                                "{kind} over {k} ranks ({} columns each): embtune cannot split columns; nearest form: even \
                                 row ranges on the same ranks (the same bytes per rank, each look-up read on one rank \
                                 instead of a slice on each)",
                                shards.first().map_or(0, |s| s.4)
                            ),
                        );
                        Placement::RowRange { bounds, owners: distinct[..k].iter().map(|&r| ranks.core(r)).collect() }
                    }
                }
            }
            other => {
                return Err(TorchrecError::Parse(format!(
                    "table `{name}`: sharding type `{other}`; TorchRec's are data_parallel, table_wise, row_wise, \
                     table_row_wise, column_wise, table_column_wise and grid_shard"
                )));
            }
        };
        if let Some(k) = p.get("compute_kernel").and_then(Value::as_str)
            && !matches!(k, "dense" | "fused" | "quant")
        {
            note(&mut notes, format!("compute kernel `{k}`: imported as embtune's direct gather"));
        }
        placements.push(placement);
    }
    let plan = Plan::from_placements("torchrec", spec, ranks.topology(memory_bytes), placements);
    plan.validate(spec).map_err(|e| TorchrecError::Mismatch(e.to_string()))?;
    Ok(Imported { plan, ranks, notes })
}

/// Whether parsed JSON is a TorchRec sharding plan (rather than an embtune plan).
pub fn is_torchrec_plan(v: &Value) -> bool {
    v.get("plan").is_some_and(Value::is_object) && v.get("tables").is_none()
}

#[cfg(test)]
mod tests {
    use super::*;
    use embtune_workloads::{Preset, PresetOptions};

    fn spec() -> ModelSpec {
        Preset::Synthetic
            .spec(&PresetOptions { tables: Some(5), rows: Some(1000), dim: Some(8), ..Default::default() })
            .unwrap()
    }

    fn plan(s: &ModelSpec, topo: Topology, places: Vec<Placement>) -> Plan {
        Plan::from_placements("test", s, topo, places)
    }

    fn c(w: u16, k: u16) -> CoreId {
        CoreId::new(w, k)
    }

    #[test]
    fn ranks_are_worker_times_cores_plus_core() {
        let r = Ranks::of(&Topology::uniform(2, 4, 1)).unwrap();
        assert_eq!((r.world_size, r.local_world_size), (8, 4));
        assert_eq!(r.rank(c(1, 2)), 6);
        assert_eq!(r.core(6), c(1, 2));
        let mut odd = Topology::uniform(2, 4, 1);
        odd.workers[1].cores = 3;
        assert!(Ranks::of(&odd).unwrap_err().to_string().contains("same cores"));
        assert_eq!(even_split(10, 4), vec![3, 3, 3, 1]);
        assert_eq!(even_split(5, 4), vec![2, 2, 1, 0]);
        assert_eq!(even_split(2, 4), vec![1, 1, 0, 0]);
    }

    #[test]
    fn an_export_is_torchrecs_sharding_plan_with_what_it_loses() {
        let s = spec();
        let mut p = plan(
            &s,
            Topology::uniform(2, 2, 1 << 30),
            vec![
                Placement::Replicated,
                Placement::Owned(c(1, 1)),
                Placement::RowRange {
                    bounds: vec![0, 250, 500, 750, 1000],
                    owners: vec![c(0, 0), c(0, 1), c(1, 0), c(1, 1)],
                },
                Placement::RowRange { bounds: vec![0, 100, 1000], owners: vec![c(1, 0), c(1, 1)] },
                Placement::Hash { owners: vec![c(0, 1), c(1, 0)] },
            ],
        );
        p.tables[1].flow = DataFlow::HotCache { hot_rows: 64, prefetch: 8 };
        let e = export(&p, &s, "sparse.ebc", "cpu").unwrap();
        let m = &e.json["plan"]["sparse.ebc"];
        assert_eq!(e.json["world_size"], 4);
        assert_eq!(e.json["local_world_size"], 2);
        assert_eq!(m["T1"]["sharding_type"], "data_parallel");
        assert_eq!(m["T1"]["ranks"], json!([0, 1, 2, 3]));
        assert!(m["T1"].get("shards").is_none(), "data-parallel has no sharding spec");
        assert_eq!(m["T2"]["sharding_type"], "table_wise");
        assert_eq!(m["T2"]["ranks"], json!([3]));
        assert_eq!(
            m["T2"]["shards"][0],
            json!({"shard_offsets": [0, 0], "shard_sizes": [1000, 8], "placement": "rank:3/cpu"})
        );
        assert_eq!(m["T3"]["sharding_type"], "row_wise");
        assert_eq!(m["T3"]["shards"][2]["shard_offsets"], json!([500, 0]));
        // Rows 0..100 and 100..1000 on worker 1 only: table-row-wise over its two ranks.
        assert_eq!(m["T4"]["sharding_type"], "table_row_wise");
        assert_eq!(m["T4"]["ranks"], json!([2, 3]));
        assert_eq!(m["T4"]["shards"][1]["shard_sizes"], json!([900, 8]));
        assert_eq!(m["T5"]["sharding_type"], "row_wise");
        let by: BTreeMap<&str, &TableExport> = e.tables.iter().map(|t| (t.table.as_str(), t)).collect();
        assert_eq!(by["T1"].torchrec_form, "exact");
        assert_eq!(by["T3"].torchrec_form, "exact", "an even split is TorchRec's own");
        assert!(by["T2"].no_torchrec_form[0].contains("hot-row copy"));
        assert!(by["T4"].no_torchrec_form[0].contains("uneven row ranges (100, 900)"));
        assert!(by["T5"].no_torchrec_form[0].contains("hash shards"));
        assert_eq!(e.nearest().count(), 3);
        assert_eq!(e.json["embtune"]["tables"]["T5"]["torchrec_form"], "nearest");
    }

    #[test]
    fn a_row_range_on_some_ranks_gets_empty_shards_on_the_others() {
        let s = spec();
        let p = plan(
            &s,
            Topology::uniform(1, 4, 1 << 30),
            vec![
                Placement::RowRange { bounds: vec![0, 600, 1000], owners: vec![c(0, 1), c(0, 3)] },
                Placement::RowRange { bounds: vec![0, 600, 1000], owners: vec![c(0, 3), c(0, 1)] },
                Placement::Replicated,
                Placement::Replicated,
                Placement::Replicated,
            ],
        );
        let e = export(&p, &s, "", "cpu").unwrap();
        let t1 = &e.json["plan"][""]["T1"];
        assert_eq!(t1["ranks"], json!([0, 1, 2, 3]));
        let sizes: Vec<u64> = (0..4).map(|i| t1["shards"][i]["shard_sizes"][0].as_u64().unwrap()).collect();
        let offsets: Vec<u64> = (0..4).map(|i| t1["shards"][i]["shard_offsets"][0].as_u64().unwrap()).collect();
        assert_eq!(sizes, vec![0, 600, 0, 400]);
        assert_eq!(offsets, vec![0, 0, 600, 600]);
        let back = import(&e.json, &s, None, 1 << 30).unwrap();
        assert_eq!(back.plan.tables[0].placement, p.tables[0].placement);
        assert_eq!(back.plan.tables[1].placement, p.tables[1].placement, "falling ranks kept as they are");
        assert!(e.tables[1].no_torchrec_form[0].contains("do not rise"));
    }

    #[test]
    fn export_then_import_gives_the_placements_back() {
        let s = spec();
        let p = plan(
            &s,
            Topology::uniform(2, 4, 1 << 30),
            vec![
                Placement::Owned(c(1, 3)),
                Placement::Replicated,
                Placement::RowRange { bounds: vec![0, 10, 900, 1000], owners: vec![c(0, 0), c(0, 2), c(1, 1)] },
                Placement::RowRange { bounds: vec![0, 500, 1000], owners: vec![c(1, 0), c(1, 1)] },
                Placement::Owned(c(0, 0)),
            ],
        );
        let e = export(&p, &s, "", "cpu").unwrap();
        let back = import(&e.json, &s, None, 1 << 30).unwrap();
        assert_eq!(back.plan.topology, p.topology);
        for (a, b) in back.plan.tables.iter().zip(&p.tables) {
            assert_eq!(a.placement, b.placement, "{}", a.name);
        }
        assert_eq!(back.plan.strategy, "torchrec");
        assert!(back.notes.is_empty());
    }

    /// What TorchRec 1.9.2's planner wrote for a 2 x 4 topology (`_serialize()`, trimmed to the
    /// forms it makes), including a column-wise table.
    #[test]
    fn a_planner_plan_imports_with_column_wise_flagged() {
        let s = spec();
        let v = json!({"world_size": 8, "local_world_size": 4, "plan": {"": {
            "T1": {"sharding_type": "table_wise", "compute_kernel": "fused", "ranks": [5],
                   "shards": [{"shard_offsets": [0, 0], "shard_sizes": [1000, 8], "placement": "rank:5/cpu"}]},
            "T2": {"sharding_type": "data_parallel", "compute_kernel": "dense", "ranks": [0,1,2,3,4,5,6,7]},
            "T3": {"sharding_type": "column_wise", "compute_kernel": "fused", "ranks": [2, 6],
                   "shards": [{"shard_offsets": [0, 0], "shard_sizes": [1000, 4], "placement": "rank:2/cpu"},
                              {"shard_offsets": [0, 4], "shard_sizes": [1000, 4], "placement": "rank:6/cpu"}]},
            "T4": {"sharding_type": "row_wise", "compute_kernel": "fused", "ranks": [0,1,2,3,4,5,6,7],
                   "shards": (0..8).map(|i| json!({"shard_offsets": [(i * 125), 0], "shard_sizes": [125, 8],
                              "placement": format!("rank:{i}/cpu")})).collect::<Vec<_>>()},
            "T5": {"sharding_type": "column_wise", "compute_kernel": "fused_uvm_caching", "ranks": [7, 7],
                   "shards": [{"shard_offsets": [0, 0], "shard_sizes": [1000, 4], "placement": "rank:7/cpu"},
                              {"shard_offsets": [0, 4], "shard_sizes": [1000, 4], "placement": "rank:7/cpu"}]}
        }}});
        let r = import(&v, &s, None, 1 << 30).unwrap();
        let t = &r.plan.tables;
        assert_eq!(r.plan.topology.workers.len(), 2);
        assert_eq!(t[0].placement, Placement::Owned(c(1, 1)));
        assert_eq!(t[1].placement, Placement::Replicated);
        assert_eq!(t[2].placement, Placement::RowRange { bounds: vec![0, 500, 1000], owners: vec![c(0, 2), c(1, 2)] });
        assert!(r.notes["T3"][0].contains("column_wise over 2 ranks"), "{:?}", r.notes);
        let Placement::RowRange { bounds, owners } = &t[3].placement else { panic!() };
        assert_eq!((bounds.len(), owners[7]), (9, c(1, 3)));
        assert_eq!(t[4].placement, Placement::Owned(c(1, 3)), "column-wise on one rank is owned");
        assert!(r.notes["T5"][0].contains("fused_uvm_caching"));
        assert!(t.iter().all(|t| t.flow == DataFlow::DEFAULT));
    }

    #[test]
    fn plans_that_do_not_fit_the_model_are_refused_with_the_reason() {
        let s = spec();
        let good = export(&plan(&s, Topology::uniform(1, 2, 1 << 30), vec![Placement::Replicated; 5]), &s, "", "cpu")
            .unwrap()
            .json;
        type Edit = Box<dyn Fn(&mut Value)>;
        let cases: Vec<(Edit, &str)> = vec![
            (
                Box::new(|v| {
                    v["plan"][""].as_object_mut().unwrap().remove("T2");
                }),
                "no sharding for 1",
            ),
            (Box::new(|v| v["plan"][""]["X"] = v["plan"][""]["T1"].clone()), "which the model"),
            (Box::new(|v| v["plan"][""]["T1"]["sharding_type"] = json!("diagonal")), "sharding type `diagonal`"),
            (Box::new(|v| v["plan"][""]["T1"]["ranks"] = json!([0, 9])), "beyond world_size 2"),
            (
                Box::new(|v| {
                    v["plan"][""]["T1"] = json!({"sharding_type": "row_wise", "ranks": [0, 1], "shards": [
                        {"shard_offsets": [0, 0], "shard_sizes": [400, 8], "placement": "rank:0/cpu"},
                        {"shard_offsets": [500, 0], "shard_sizes": [500, 8], "placement": "rank:1/cpu"}]})
                }),
                "tile the rows",
            ),
            (
                Box::new(|v| {
                    v["plan"][""]["T1"] = json!({"sharding_type": "table_wise", "ranks": [0], "shards": [
                        {"shard_offsets": [0, 0], "shard_sizes": [2000, 8], "placement": "rank:0/cpu"}]})
                }),
                "beyond the model's 1000 x 8",
            ),
            (Box::new(|v| v["local_world_size"] = json!(3)), "whole number of hosts"),
            (
                Box::new(|v| {
                    v.as_object_mut().unwrap().remove("plan");
                }),
                "no `plan`",
            ),
        ];
        for (edit, want) in cases {
            let mut v = good.clone();
            edit(&mut v);
            let e = import(&v, &s, None, 1 << 30).unwrap_err().to_string();
            assert!(e.contains(want), "{want}: {e}");
        }
        let mut v = good.clone();
        v.as_object_mut().unwrap().remove("world_size");
        assert!(import(&v, &s, None, 1 << 30).unwrap_err().to_string().contains("--workers"));
        let r = import(&v, &s, Some(Ranks { world_size: 2, local_world_size: 2 }), 1 << 30).unwrap();
        assert_eq!(r.plan.topology.total_cores(), 2);
        assert!(import(&good, &s, None, 10).unwrap_err().to_string().contains("memory"));
    }
}
