//! Routing: which worker sees which ids of a batch, and how their partial sums add up.
//!
//! Pure functions of the plan, the batch and the workers' health and load, so the rules are
//! tested without a network. Clients route their own batches by them (the direct path), and
//! the coordinator routes the batches it relays by the same functions:
//! - a replicated table's bags go to one replica, chosen by the power of two choices on the
//!   load each worker reports (plus the requests the router has in flight to it);
//! - a client-resident table goes to no worker: the client pools it itself;
//! - an owned or sharded table's ids go to the workers owning their shards, each worker getting
//!   every bag (empty where it holds none of the bag's rows) so its reply lines up with the
//!   batch;
//! - partial sums from several workers are added per table; mean pooling divides at the end by
//!   the whole bag's length, which only the router (client or coordinator) knows.

use embtune_workloads::{ModelSpec, PoolingMode, QueryBatch};

use crate::{Placement, Plan};

/// One worker's share of a batch: `tables` (model-spec indices), their bags' offsets and ids.
#[derive(Clone, Debug, PartialEq)]
pub struct SubRequest {
    pub worker: u16,
    pub tables: Vec<u16>,
    pub offsets: Vec<u32>,
    pub ids: Vec<u32>,
}

/// Why a batch cannot be routed.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum RouteError {
    #[error(
        "shard {shard} of table `{table}` (rows {rows}) is on worker {worker}, which is down; its look-ups cannot be served until the worker is back"
    )]
    ShardUnavailable { table: String, shard: usize, rows: String, worker: u16 },
    #[error("no healthy worker holds the replicated tables")]
    NoReplica,
    #[error("the batch has {got} tables, the deployed model `{model}` has {want}")]
    WrongShape { got: u32, want: usize, model: String },
}

/// Load the router sees per worker: `None` when the worker is down.
pub type Loads<'a> = &'a [Option<u64>];

/// Picks a replica by the power of two choices: two distinct healthy workers drawn with
/// `draws`, the less loaded wins (ties to the first drawn). With one healthy worker, that one.
pub fn pick_replica(loads: Loads<'_>, draws: (u64, u64)) -> Option<u16> {
    let healthy: Vec<u16> = (0..loads.len() as u16).filter(|&w| loads[w as usize].is_some()).collect();
    match healthy.len() {
        0 => None,
        1 => Some(healthy[0]),
        n => {
            let a = healthy[(draws.0 % n as u64) as usize];
            let mut b = healthy[(draws.1 % (n as u64 - 1)) as usize];
            if b >= a {
                // Skip `a` so the two draws are distinct.
                b = healthy[(healthy.iter().position(|&x| x == b).unwrap() + 1) % n];
            }
            let (la, lb) = (loads[a as usize].unwrap(), loads[b as usize].unwrap());
            Some(if lb < la { b } else { a })
        }
    }
}

/// Splits `batch` (every table of `spec`, in order) into per-worker sub-requests under `plan`,
/// sending the replicated tables to `replica` and leaving out the client-resident ones.
pub fn split(
    spec: &ModelSpec,
    plan: &Plan,
    batch: &QueryBatch,
    replica: Option<u16>,
    healthy: &[bool],
) -> Result<Vec<SubRequest>, RouteError> {
    if batch.num_tables as usize != spec.tables.len() {
        return Err(RouteError::WrongShape {
            got: batch.num_tables,
            want: spec.tables.len(),
            model: spec.name.clone(),
        });
    }
    let bs = batch.batch_size as usize;
    let mut subs: Vec<Option<SubRequest>> = vec![None; plan.topology.workers.len()];
    fn entry(subs: &mut [Option<SubRequest>], w: u16) -> &mut SubRequest {
        subs[w as usize].get_or_insert_with(|| SubRequest {
            worker: w,
            tables: Vec::new(),
            offsets: vec![0],
            ids: Vec::new(),
        })
    }
    for (t, tp) in plan.tables.iter().enumerate() {
        let offs = batch.table_offsets(t);
        // The whole table to one worker: its ids as they are, offsets rebased.
        let whole = |s: &mut SubRequest| {
            let base = s.ids.len() as u32;
            s.tables.push(t as u16);
            s.offsets.extend(offs[1..].iter().map(|&o| o - offs[0] + base));
            s.ids.extend_from_slice(batch.table_ids(t));
        };
        if batch.table_ids(t).is_empty() {
            // Every bag is empty: the pooled rows are zero, which the output already holds.
            continue;
        }
        let p = &tp.placement;
        match p {
            Placement::Replicated => {
                whole(entry(&mut subs, replica.ok_or(RouteError::NoReplica)?));
                continue;
            }
            // The client pools it; no worker sees its ids.
            Placement::Client => continue,
            _ => {}
        }
        let owners = p.owners();
        let shard_worker: Vec<u16> = owners.iter().map(|o| o.worker).collect();
        // Which workers this batch needs for this table; a down one is an error naming its shard.
        let mut needed = vec![false; subs.len()];
        let mut shard_used = vec![false; owners.len()];
        for &id in batch.table_ids(t) {
            shard_used[p.shard_of(id)] = true;
        }
        for (i, o) in owners.iter().enumerate().filter(|(i, _)| shard_used[*i]) {
            if !healthy.get(o.worker as usize).copied().unwrap_or(false) {
                let rows = match p.shard_rows(i, spec.tables[t].rows) {
                    crate::ShardRows::Range { lo, hi } => format!("{lo}..{hi}"),
                    crate::ShardRows::Hash { index, of } => format!("id mod {of} = {index}"),
                };
                return Err(RouteError::ShardUnavailable {
                    table: spec.tables[t].name.clone(),
                    shard: i,
                    rows,
                    worker: o.worker,
                });
            }
            needed[o.worker as usize] = true;
        }
        let mine: Vec<u16> = (0..subs.len() as u16).filter(|&w| needed[w as usize]).collect();
        if mine.len() == 1 {
            whole(entry(&mut subs, mine[0]));
            continue;
        }
        // Ids split by the worker of their shard; every worker involved sees every bag.
        for &w in &mine {
            entry(&mut subs, w).tables.push(t as u16);
        }
        for b in 0..bs {
            for &id in batch.bag(t, b) {
                let w = shard_worker[p.shard_of(id)];
                entry(&mut subs, w).ids.push(id);
            }
            for &w in &mine {
                let s = entry(&mut subs, w);
                s.offsets.push(s.ids.len() as u32);
            }
        }
    }
    Ok(subs.into_iter().flatten().collect())
}

/// The client-resident tables' share of `batch`: their bags, whole, for the client's own
/// engine (`worker` is `u16::MAX`). `None` when the plan keeps no table in the clients.
pub fn client_part(plan: &Plan, batch: &QueryBatch) -> Option<SubRequest> {
    let tables = plan.client_tables();
    if tables.is_empty() {
        return None;
    }
    let mut s = SubRequest { worker: u16::MAX, tables: Vec::new(), offsets: vec![0], ids: Vec::new() };
    for &t in &tables {
        let offs = batch.table_offsets(t as usize);
        let base = s.ids.len() as u32;
        s.tables.push(t);
        s.offsets.extend(offs[1..].iter().map(|&o| o - offs[0] + base));
        s.ids.extend_from_slice(batch.table_ids(t as usize));
    }
    Some(s)
}

impl SubRequest {
    /// The sub-request as a batch of its own tables, in its order.
    pub fn into_batch(self, batch_size: u32) -> QueryBatch {
        QueryBatch { batch_size, num_tables: self.tables.len() as u32, offsets: self.offsets, ids: self.ids }
    }
}

/// A reply's pooled values for some samples: f32 values, or halves (`WireFormat::F16` or
/// `Bf16` bits, one per value, sample-major).
#[derive(Clone, Copy, Debug)]
pub enum Values<'a> {
    F32(&'a [f32]),
    Half(crate::wire::WireFormat, &'a [u16]),
}

impl Values<'_> {
    fn len(&self) -> usize {
        match self {
            Values::F32(v) => v.len(),
            Values::Half(_, v) => v.len(),
        }
    }
}

/// Builds a pooled output (`batch x width`, tables side by side in spec order) from the replies
/// of a query's sub-requests without first zeroing it: the first reply that holds a table is
/// copied into place, later ones (partial sums of the table's other shards) are added, and a
/// table no reply holds is zero. Zeroing and then adding every reply cost a third of a client's
/// time on Criteo batches (a memset and an add pass over hundreds of kilobytes).
///
/// A sub-request's replies, one per stripe of samples, are placed between [`Assembler::begin`]
/// and [`Assembler::end`], which checks that they covered every sample once: so when the next
/// sub-request's reply adds to a table, every value of it has been written.
pub struct Assembler<'a> {
    width: usize,
    columns: &'a [usize],
    dims: &'a [usize],
    batch: usize,
    /// Capacity `batch * width`; its length stays 0 until [`Assembler::finish`].
    out: Vec<f32>,
    /// Whether a finished sub-request has written each table.
    written: Vec<bool>,
    /// The current sub-request: its tables, whether each is copied (else added), and the
    /// samples its stripes have covered.
    current: Option<(Vec<u16>, Vec<bool>, usize)>,
    scratch: Vec<f32>,
}

/// Why replies cannot be assembled.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum AssembleError {
    #[error("a reply of {got} values for {rows} samples of width {width} (want {want})")]
    Length { got: usize, rows: usize, width: usize, want: usize },
    #[error("a sub-request's replies covered {covered} of {batch} samples")]
    Coverage { covered: usize, batch: usize },
    #[error("samples {0}..{1} are outside the batch or out of order")]
    Range(usize, usize),
}

impl<'a> Assembler<'a> {
    /// An output of `batch` samples whose tables start at `columns` with widths `dims`.
    ///
    /// Panics if a table's columns end past `width`: the writes below rely on it.
    pub fn new(width: usize, columns: &'a [usize], dims: &'a [usize], batch: usize) -> Assembler<'a> {
        assert_eq!(columns.len(), dims.len(), "a column for every table");
        assert!(columns.iter().zip(dims).all(|(c, d)| c + d <= width), "tables end within the width");
        Assembler {
            width,
            columns,
            dims,
            batch,
            out: Vec::with_capacity(batch * width),
            written: vec![false; dims.len()],
            current: None,
            scratch: Vec::new(),
        }
    }

    /// Starts a sub-request whose replies hold `tables`, side by side.
    pub fn begin(&mut self, tables: &[u16]) {
        let copy = tables.iter().map(|&t| !self.written[t as usize]).collect();
        self.current = Some((tables.to_vec(), copy, 0));
    }

    /// Places the current sub-request's reply for samples `b0..b1`.
    pub fn place(&mut self, b0: usize, b1: usize, values: Values<'_>) -> Result<(), AssembleError> {
        let (tables, copy, covered) = self.current.as_mut().expect("place() after begin()");
        // Stripes arrive in order and cover the batch once: each starts where the last ended.
        if b0 != *covered || b1 < b0 || b1 > self.batch {
            return Err(AssembleError::Range(b0, b1));
        }
        let rw: usize = tables.iter().map(|&t| self.dims[t as usize]).sum();
        let rows = b1 - b0;
        if values.len() != rows * rw {
            return Err(AssembleError::Length { got: values.len(), rows, width: rw, want: rows * rw });
        }
        *covered = b1;
        let base = self.out.as_mut_ptr();
        if let Values::Half(..) = values {
            self.scratch.resize(rw, 0.0);
        }
        for r in 0..rows {
            let row: &[f32] = match values {
                Values::F32(v) => &v[r * rw..(r + 1) * rw],
                Values::Half(format, bits) => {
                    decode_halves(format, &bits[r * rw..(r + 1) * rw], &mut self.scratch);
                    &self.scratch
                }
            };
            let b = b0 + r;
            let mut rc = 0;
            for (k, &t) in tables.iter().enumerate() {
                let d = self.dims[t as usize];
                let at = b * self.width + self.columns[t as usize];
                let src = &row[rc..rc + d];
                // SAFETY: `at + d <= batch * width`, the buffer's capacity (`b < batch`, and a
                // table's columns end within the width). A copy writes values not read before;
                // an add reads values a finished sub-request wrote (`written`), since every
                // finished sub-request covered every sample (`end`).
                unsafe {
                    let dst = base.add(at);
                    if copy[k] {
                        std::ptr::copy_nonoverlapping(src.as_ptr(), dst, d);
                    } else {
                        for (i, &x) in src.iter().enumerate() {
                            *dst.add(i) += x;
                        }
                    }
                }
                rc += d;
            }
        }
        Ok(())
    }

    /// Ends the current sub-request; its replies must have covered every sample.
    pub fn end(&mut self) -> Result<(), AssembleError> {
        let (tables, _, covered) = self.current.take().expect("end() after begin()");
        if covered != self.batch {
            return Err(AssembleError::Coverage { covered, batch: self.batch });
        }
        for t in tables {
            self.written[t as usize] = true;
        }
        Ok(())
    }

    /// The output: tables no reply held are zeros.
    pub fn finish(mut self) -> Vec<f32> {
        assert!(self.current.is_none(), "a sub-request was begun and not ended");
        let base = self.out.as_mut_ptr();
        for (t, _) in self.written.iter().enumerate().filter(|(_, w)| !**w) {
            let (c, d) = (self.columns[t], self.dims[t]);
            for b in 0..self.batch {
                // SAFETY: within capacity, as in `place`.
                unsafe { std::ptr::write_bytes(base.add(b * self.width + c), 0, d) };
            }
        }
        // SAFETY: every table's columns of every sample are written: by the first sub-request
        // that held the table (whose replies covered every sample), or zeroed just above.
        unsafe { self.out.set_len(self.batch * self.width) };
        self.out
    }
}

/// Widens half-precision bits into `out` (the same length).
pub fn decode_halves(format: crate::wire::WireFormat, bits: &[u16], out: &mut [f32]) {
    use half::slice::{HalfBitsSliceExt, HalfFloatSliceExt};
    match format {
        crate::wire::WireFormat::Bf16 => bits.reinterpret_cast::<half::bf16>().convert_to_f32_slice(out),
        _ => bits.reinterpret_cast::<half::f16>().convert_to_f32_slice(out),
    }
}

/// Adds a worker's pooled reply into `out` (`batch x width`, tables side by side in spec order).
/// `columns[t]` is where table `t` starts in `out`; the reply holds `sub.tables` side by side.
pub fn accumulate(
    out: &mut [f32],
    width: usize,
    columns: &[usize],
    dims: &[usize],
    sub_tables: &[u16],
    reply: &[f32],
    batch: usize,
) {
    let reply_width: usize = sub_tables.iter().map(|&t| dims[t as usize]).sum();
    debug_assert_eq!(reply.len(), batch * reply_width);
    for b in 0..batch {
        let mut rc = 0;
        for &t in sub_tables {
            let d = dims[t as usize];
            let dst = &mut out[b * width + columns[t as usize]..][..d];
            let src = &reply[b * reply_width + rc..][..d];
            for (x, y) in dst.iter_mut().zip(src) {
                *x += y;
            }
            rc += d;
        }
    }
}

/// Whether a sub-request's tables are all `n` tables of the spec in spec order, so that its
/// reply has exactly the layout of the whole output.
pub fn covers_all_in_order(sub_tables: &[u16], n: usize) -> bool {
    sub_tables.len() == n && sub_tables.iter().enumerate().all(|(i, &t)| t as usize == i)
}

/// Divides mean-pooled tables by their bags' lengths, once every partial sum is in.
pub fn finalize_mean(spec: &ModelSpec, batch: &QueryBatch, out: &mut [f32], width: usize, columns: &[usize]) {
    for (t, ts) in spec.tables.iter().enumerate() {
        if ts.mode != PoolingMode::Mean {
            continue;
        }
        let o = batch.table_offsets(t);
        for b in 0..batch.batch_size as usize {
            let n = (o[b + 1] - o[b]) as f32;
            if n > 0.0 {
                for v in &mut out[b * width + columns[t]..][..ts.dim as usize] {
                    *v /= n;
                }
            }
        }
    }
}

/// Where each table's columns start, and the output width.
pub fn columns(spec: &ModelSpec) -> (Vec<usize>, usize) {
    let mut c = Vec::with_capacity(spec.tables.len());
    let mut w = 0;
    for t in &spec.tables {
        c.push(w);
        w += t.dim as usize;
    }
    (c, w)
}

/// Floats a sub-request's reply holds per sample: the widths of its tables.
pub fn reply_width(sub: &SubRequest, dims: &[usize]) -> usize {
    sub.tables.iter().map(|&t| dims[t as usize]).sum()
}

/// The bounds of stripe `i` of `k` over `n` items: equal parts, the first ones one larger.
pub fn stripe_bounds(n: usize, k: usize, i: usize) -> (usize, usize) {
    let (q, r) = (n / k, n % k);
    let lo = i * q + i.min(r);
    (lo, lo + q + usize::from(i < r))
}

/// A sub-request for a batch of `bs` samples cut into `k` stripes of consecutive samples, each
/// with its sample count. The worker's reply is sample-major, so the stripes' replies,
/// concatenated in order, are the reply of the whole.
pub fn stripe(sub: &SubRequest, bs: usize, k: usize) -> Vec<(u32, SubRequest)> {
    (0..k.max(1))
        .map(|i| {
            let (b0, b1) = stripe_bounds(bs, k.max(1), i);
            let (offsets, ids) =
                embtune_workloads::batch::slice_bags(&sub.offsets, &sub.ids, sub.tables.len(), bs, b0, b1);
            ((b1 - b0) as u32, SubRequest { worker: sub.worker, tables: sub.tables.clone(), offsets, ids })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{CoreId, Topology};
    use embtune_workloads::{BatchGenerator, Preset, PresetOptions};

    fn setup() -> (ModelSpec, Plan, QueryBatch) {
        let mut spec = Preset::Synthetic
            .spec(&PresetOptions {
                tables: Some(4),
                rows: Some(1000),
                dim: Some(4),
                batch: Some(16),
                pooling: Some("uniform:0:5".parse().unwrap()),
                ..Default::default()
            })
            .unwrap();
        spec.tables[3].mode = PoolingMode::Mean;
        let placements = vec![
            Placement::Replicated,
            Placement::Owned(CoreId::new(1, 0)),
            Placement::RowRange {
                bounds: vec![0, 300, 700, 1000],
                owners: vec![CoreId::new(0, 0), CoreId::new(1, 1), CoreId::new(0, 1)],
            },
            Placement::Hash { owners: vec![CoreId::new(0, 0), CoreId::new(1, 0)] },
        ];
        let plan = Plan::from_placements("t", &spec, Topology::uniform(2, 2, 1 << 30), placements);
        let batch = BatchGenerator::new(&spec).unwrap().batch(3);
        (spec, plan, batch)
    }

    #[test]
    fn stripes_of_a_sub_request_hold_its_bags_in_order() {
        let (spec, plan, batch) = setup();
        let bs = batch.batch_size as usize;
        for s in split(&spec, &plan, &batch, Some(1), &[true, true]).unwrap() {
            let whole = QueryBatch {
                batch_size: bs as u32,
                num_tables: s.tables.len() as u32,
                offsets: s.offsets.clone(),
                ids: s.ids.clone(),
            };
            for k in [1, 3, 4, 16] {
                let stripes = stripe(&s, bs, k);
                assert_eq!(stripes.len(), k);
                assert_eq!(stripes.iter().map(|(n, _)| *n as usize).sum::<usize>(), bs);
                let mut b0 = 0;
                for (n, st) in &stripes {
                    assert_eq!((st.worker, &st.tables), (s.worker, &s.tables));
                    let part = QueryBatch {
                        batch_size: *n,
                        num_tables: st.tables.len() as u32,
                        offsets: st.offsets.clone(),
                        ids: st.ids.clone(),
                    };
                    part.check_layout().unwrap();
                    for t in 0..s.tables.len() {
                        for b in 0..*n as usize {
                            assert_eq!(part.bag(t, b), whole.bag(t, b0 + b), "k {k} table {t} bag {}", b0 + b);
                        }
                    }
                    b0 += *n as usize;
                }
            }
        }
    }

    #[test]
    fn every_id_goes_exactly_to_its_shards_worker() {
        let (spec, plan, batch) = setup();
        let subs = split(&spec, &plan, &batch, Some(1), &[true, true]).unwrap();
        assert_eq!(subs.len(), 2);
        for s in &subs {
            let sb = QueryBatch {
                batch_size: batch.batch_size,
                num_tables: s.tables.len() as u32,
                offsets: s.offsets.clone(),
                ids: s.ids.clone(),
            };
            sb.check_layout().unwrap();
            for (k, &t) in s.tables.iter().enumerate() {
                let p = &plan.tables[t as usize].placement;
                for &id in sb.table_ids(k) {
                    let w = match p {
                        Placement::Replicated => 1,
                        p => p.owners()[p.shard_of(id)].worker,
                    };
                    assert_eq!(w, s.worker, "table {t} id {id}");
                }
            }
        }
        // Every id of every bag appears once across the workers.
        for t in 0..4 {
            for b in 0..batch.batch_size as usize {
                let mut got: Vec<u32> = subs
                    .iter()
                    .filter_map(|s| {
                        let k = s.tables.iter().position(|&x| x == t as u16)?;
                        let o = &s.offsets[k * batch.batch_size as usize..];
                        Some(s.ids[o[b] as usize..o[b + 1] as usize].to_vec())
                    })
                    .flatten()
                    .collect();
                let mut want = batch.bag(t, b).to_vec();
                got.sort_unstable();
                want.sort_unstable();
                assert_eq!(got, want, "table {t} bag {b}");
            }
        }
    }

    #[test]
    fn a_dead_shard_owner_is_named_and_replicas_avoid_dead_workers() {
        let (spec, plan, batch) = setup();
        let err = split(&spec, &plan, &batch, Some(0), &[true, false]).unwrap_err();
        let RouteError::ShardUnavailable { worker, .. } = &err else { panic!("{err}") };
        assert_eq!(*worker, 1);
        assert!(err.to_string().contains("is down"));
        assert_eq!(pick_replica(&[None, Some(5)], (0, 0)), Some(1));
        assert_eq!(pick_replica(&[None, None], (0, 0)), None);
    }

    #[test]
    fn tables_without_ids_need_no_worker() {
        let (spec, plan, batch) = setup();
        // Only the replicated table has ids: worker 1 being down does not matter.
        let only = QueryBatch::from_bags(&[
            (0..16).map(|b| batch.bag(0, b).to_vec()).collect(),
            vec![vec![]; 16],
            vec![vec![]; 16],
            vec![vec![]; 16],
        ]);
        let subs = split(&spec, &plan, &only, Some(0), &[true, false]).unwrap();
        assert_eq!(subs.len(), 1);
        assert_eq!(subs[0].worker, 0);
        assert_eq!(subs[0].tables, vec![0]);
    }

    #[test]
    fn power_of_two_choices_prefers_the_less_loaded() {
        let loads = [Some(10), Some(1), Some(50)];
        let mut wins = [0; 3];
        for a in 0..3u64 {
            for b in 0..2u64 {
                wins[pick_replica(&loads, (a, b)).unwrap() as usize] += 1;
            }
        }
        // Worker 2 never wins a pair; worker 1 wins every pair it is in.
        assert_eq!(wins[2], 0);
        assert!(wins[1] >= 4, "{wins:?}");
    }

    #[test]
    fn only_every_table_in_spec_order_covers_the_output() {
        assert!(covers_all_in_order(&[0, 1, 2], 3));
        assert!(!covers_all_in_order(&[0, 2, 1], 3));
        assert!(!covers_all_in_order(&[0, 1], 3));
        assert!(!covers_all_in_order(&[1, 2, 3], 3));
    }

    #[test]
    fn the_assembler_copies_first_replies_adds_later_ones_and_zeroes_the_rest() {
        let (spec, plan, batch) = setup();
        let (cols, width) = columns(&spec);
        let dims: Vec<usize> = spec.tables.iter().map(|t| t.dim as usize).collect();
        let bs = batch.batch_size as usize;
        let subs = split(&spec, &plan, &batch, Some(1), &[true, true]).unwrap();
        // Fake replies: sub i's value at (sample b, column c) is i * 1000 + b * 10 + c.
        let reply = |i: usize, s: &SubRequest| -> Vec<f32> {
            let rw = reply_width(s, &dims);
            (0..bs * rw).map(|k| (i * 1000 + (k / rw) * 10 + k % rw) as f32).collect()
        };
        let mut want = vec![0f32; bs * width];
        for (i, s) in subs.iter().enumerate() {
            accumulate(&mut want, width, &cols, &dims, &s.tables, &reply(i, s), bs);
        }
        for stripes in [1, 3] {
            let mut a = Assembler::new(width, &cols, &dims, bs);
            for (i, s) in subs.iter().enumerate() {
                let r = reply(i, s);
                let rw = reply_width(s, &dims);
                a.begin(&s.tables);
                for k in 0..stripes {
                    let (b0, b1) = stripe_bounds(bs, stripes, k);
                    a.place(b0, b1, Values::F32(&r[b0 * rw..b1 * rw])).unwrap();
                }
                a.end().unwrap();
            }
            assert_eq!(a.finish(), want, "{stripes} stripes");
        }
        // Half precision: the same values (small integers are exact in f16).
        let mut a = Assembler::new(width, &cols, &dims, bs);
        for (i, s) in subs.iter().enumerate() {
            let r: Vec<u16> = reply(i, s).iter().map(|&v| half::f16::from_f32(v % 2048.0).to_bits()).collect();
            a.begin(&s.tables);
            a.place(0, bs, Values::Half(crate::wire::WireFormat::F16, &r)).unwrap();
            a.end().unwrap();
        }
        let mut want16 = vec![0f32; bs * width];
        for (i, s) in subs.iter().enumerate() {
            let r: Vec<f32> = reply(i, s).iter().map(|v| v % 2048.0).collect();
            accumulate(&mut want16, width, &cols, &dims, &s.tables, &r, bs);
        }
        assert_eq!(a.finish(), want16);
        // Replies of the wrong length, out of order or short of the batch are refused.
        let mut a = Assembler::new(width, &cols, &dims, bs);
        a.begin(&subs[0].tables);
        assert!(matches!(a.place(0, bs, Values::F32(&[1.0])), Err(AssembleError::Length { .. })));
        assert!(matches!(a.place(3, bs, Values::F32(&[])), Err(AssembleError::Range(3, _))));
        let rw = reply_width(&subs[0], &dims);
        a.place(0, 2, Values::F32(&vec![0.0; 2 * rw])).unwrap();
        assert!(matches!(a.end(), Err(AssembleError::Coverage { covered: 2, .. })));
    }

    #[test]
    fn accumulate_and_mean_rebuild_the_pooled_output() {
        let (spec, _, batch) = setup();
        let (cols, width) = columns(&spec);
        let dims: Vec<usize> = spec.tables.iter().map(|t| t.dim as usize).collect();
        let bs = batch.batch_size as usize;
        let mut out = vec![0f32; bs * width];
        // Two replies covering table 3 in halves: ones from each.
        accumulate(&mut out, width, &cols, &dims, &[3], &vec![1.0; bs * 4], bs);
        accumulate(&mut out, width, &cols, &dims, &[0, 3], &vec![1.0; bs * 8], bs);
        finalize_mean(&spec, &batch, &mut out, width, &cols);
        let o = batch.table_offsets(3);
        for b in 0..bs {
            let n = (o[b + 1] - o[b]) as f32;
            let want = if n > 0.0 { 2.0 / n } else { 2.0 };
            assert_eq!(out[b * width + cols[3]], want);
            assert_eq!(out[b * width + cols[0]], 1.0);
            assert_eq!(out[b * width + cols[1]], 0.0);
        }
    }
}
