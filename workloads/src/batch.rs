//! Query batches and their seeded generator.

use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::WorkloadError;
use crate::dist::{Sampler, sample_pooling};
use crate::rng::StreamRng;
use crate::spec::ModelSpec;

/// A batch of samples, each looking up a bag of ids in every table, in the table-batched
/// layout FBGEMM uses: the ids of sample `b` in table `t` are
/// `ids[offsets[t * batch + b] .. offsets[t * batch + b + 1]]`.
///
/// One flat id buffer and one flat offset buffer travel over the network as two raw byte
/// slices, and the engine walks them without per-bag allocations.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueryBatch {
    pub batch_size: u32,
    pub num_tables: u32,
    /// `num_tables * batch_size + 1` non-decreasing positions into `ids`; the first is 0 and
    /// the last is `ids.len()`.
    pub offsets: Vec<u32>,
    pub ids: Vec<u32>,
}

impl QueryBatch {
    /// Builds a batch from per-table, per-sample bags (`bags[t][b]`), for tests and clients.
    pub fn from_bags(bags: &[Vec<Vec<u32>>]) -> QueryBatch {
        let num_tables = bags.len() as u32;
        let batch_size = bags.first().map_or(0, |t| t.len()) as u32;
        let mut offsets = vec![0u32];
        let mut ids = Vec::new();
        for table in bags {
            assert_eq!(table.len() as u32, batch_size, "every table needs one bag per sample");
            for bag in table {
                ids.extend_from_slice(bag);
                offsets.push(ids.len() as u32);
            }
        }
        QueryBatch { batch_size, num_tables, offsets, ids }
    }

    /// Total ids over all tables.
    pub fn lookups(&self) -> usize {
        self.ids.len()
    }

    /// The offsets of table `t`: `batch_size + 1` absolute positions into `ids`.
    pub fn table_offsets(&self, t: usize) -> &[u32] {
        let b = self.batch_size as usize;
        &self.offsets[t * b..(t + 1) * b + 1]
    }

    /// The ids of sample `b` in table `t`.
    pub fn bag(&self, t: usize, b: usize) -> &[u32] {
        let o = self.table_offsets(t);
        &self.ids[o[b] as usize..o[b + 1] as usize]
    }

    /// All ids of table `t`.
    pub fn table_ids(&self, t: usize) -> &[u32] {
        let o = self.table_offsets(t);
        &self.ids[o[0] as usize..o[self.batch_size as usize] as usize]
    }

    /// Samples `b0..b1` of every table, as a batch of their own. A batch's pooled output is
    /// sample-major, so the outputs of consecutive slices, concatenated, are the output of the
    /// whole: that is how a large batch is striped over several connections.
    pub fn slice(&self, b0: usize, b1: usize) -> QueryBatch {
        let (offsets, ids) =
            slice_bags(&self.offsets, &self.ids, self.num_tables as usize, self.batch_size as usize, b0, b1);
        QueryBatch { batch_size: (b1 - b0) as u32, num_tables: self.num_tables, offsets, ids }
    }

    /// Checks the layout invariants (not the id ranges, which need the tables).
    pub fn check_layout(&self) -> Result<(), WorkloadError> {
        let want = self.num_tables as usize * self.batch_size as usize + 1;
        let bad = |m: String| Err(WorkloadError::Invalid(m));
        if self.offsets.len() != want {
            return bad(format!(
                "a batch of {} tables x {} samples needs {want} offsets, not {}",
                self.num_tables,
                self.batch_size,
                self.offsets.len()
            ));
        }
        if self.offsets[0] != 0 || *self.offsets.last().unwrap() as usize != self.ids.len() {
            return bad("offsets must start at 0 and end at the number of ids".into());
        }
        if self.offsets.windows(2).any(|w| w[0] > w[1]) {
            return bad("offsets must not decrease".into());
        }
        Ok(())
    }

    /// Checks every id against its table's row count. Returns the first offender.
    pub fn check_ids(&self, rows: &[u64]) -> Result<(), WorkloadError> {
        if rows.len() != self.num_tables as usize {
            return Err(WorkloadError::Invalid(format!(
                "the batch has {} tables, the model {}",
                self.num_tables,
                rows.len()
            )));
        }
        for (t, &r) in rows.iter().enumerate() {
            if let Some(&id) = self.table_ids(t).iter().find(|&&id| id as u64 >= r) {
                return Err(WorkloadError::Invalid(format!("row id {id} is out of range for table {t} of {r} rows")));
            }
        }
        Ok(())
    }
}

/// Samples `b0..b1` of every table of a batch laid out as [`QueryBatch`] (`tables` tables of
/// `bs` samples): the slice's offsets (rebased to 0) and ids. Panics on a broken layout; check
/// it first ([`QueryBatch::check_layout`]).
pub fn slice_bags(
    offsets: &[u32],
    ids: &[u32],
    tables: usize,
    bs: usize,
    b0: usize,
    b1: usize,
) -> (Vec<u32>, Vec<u32>) {
    assert!(b0 <= b1 && b1 <= bs, "samples {b0}..{b1} of a batch of {bs}");
    let n = b1 - b0;
    let mut out_offsets = Vec::with_capacity(tables * n + 1);
    out_offsets.push(0u32);
    let mut out_ids = Vec::new();
    for t in 0..tables {
        let o = &offsets[t * bs + b0..=t * bs + b1];
        let base = out_ids.len() as u32;
        out_offsets.extend(o[1..].iter().map(|&x| x - o[0] + base));
        out_ids.extend_from_slice(&ids[o[0] as usize..o[n] as usize]);
    }
    (out_offsets, out_ids)
}

/// Generates query batches for a model: batch `i` depends only on the spec, the seed and `i`,
/// so every machine and every thread count produces the same batches.
pub struct BatchGenerator {
    spec: ModelSpec,
    samplers: Vec<Sampler>,
    seed: u64,
}

impl BatchGenerator {
    /// A generator over the spec's tables, keyed by the spec's seed.
    pub fn new(spec: &ModelSpec) -> Result<BatchGenerator, WorkloadError> {
        Self::with_seed(spec, spec.seed)
    }

    pub fn with_seed(spec: &ModelSpec, seed: u64) -> Result<BatchGenerator, WorkloadError> {
        spec.validate()?;
        let samplers = spec.tables.iter().map(|t| Sampler::new(t, seed)).collect::<Result<_, _>>()?;
        Ok(BatchGenerator { spec: spec.clone(), samplers, seed })
    }

    pub fn spec(&self) -> &ModelSpec {
        &self.spec
    }

    /// Batch number `index` at the spec's batch size.
    pub fn batch(&self, index: u64) -> QueryBatch {
        self.batch_sized(index, self.spec.batch_size)
    }

    /// Batch number `index` with `batch_size` samples. Tables are generated in parallel: each
    /// (batch, table) pair has its own random stream, so the result does not depend on it.
    pub fn batch_sized(&self, index: u64, batch_size: u32) -> QueryBatch {
        let per_table: Vec<(Vec<u32>, Vec<u32>)> =
            (0..self.samplers.len()).into_par_iter().map(|t| self.table_bags(index, t, batch_size)).collect();
        let total: usize = per_table.iter().map(|p| p.1.len()).sum();
        let mut offsets = Vec::with_capacity(self.samplers.len() * batch_size as usize + 1);
        let mut ids = Vec::with_capacity(total);
        offsets.push(0u32);
        for (lengths, table_ids) in per_table {
            let base = ids.len() as u32;
            let mut pos = base;
            for len in lengths {
                pos += len;
                offsets.push(pos);
            }
            ids.extend_from_slice(&table_ids);
        }
        QueryBatch { batch_size, num_tables: self.samplers.len() as u32, offsets, ids }
    }

    fn table_bags(&self, index: u64, t: usize, batch_size: u32) -> (Vec<u32>, Vec<u32>) {
        let table = &self.spec.tables[t];
        let mut rng = StreamRng::new(self.seed, index, t as u64);
        let lengths: Vec<u32> = (0..batch_size).map(|_| sample_pooling(&table.pooling, &mut rng)).collect();
        let n: usize = lengths.iter().map(|&l| l as usize).sum();
        let sampler = &self.samplers[t];
        let ids = (0..n).map(|_| sampler.sample(&mut rng)).collect();
        (lengths, ids)
    }

    /// Batches `start..start + count`, generated in parallel. Benchmarks pre-generate a pool
    /// with this so that generation never competes with the engine for cores while timing.
    pub fn pool(&self, start: u64, count: usize) -> Vec<QueryBatch> {
        (0..count as u64).into_par_iter().map(|i| self.batch(start + i)).collect()
    }

    /// How many pre-generated batches a benchmark should rotate through so that the rows they
    /// touch do not all fit in a cache of `cache_bytes` (which would flatter the engine), within
    /// a budget of `max_bytes` of batches and at most [`MAX_POOL_BATCHES`].
    ///
    /// A batch costs its ids, its offsets and [`BATCH_OVERHEAD_BYTES`] of bookkeeping, whatever
    /// its rows: a tiny shape (one table of 100 rows, dim 1, one look-up, batch 1) touches 4 bytes
    /// of rows per batch, and sizing its pool by rows alone asked for tens of millions of batches
    /// (`bench` grew past 6 GB). Such a shape fits in cache whatever the pool.
    pub fn pool_size_for(&self, cache_bytes: u64, max_bytes: u64) -> usize {
        let batch = self.spec.batch_size as f64;
        let lookups = self.spec.mean_lookups_per_sample() * batch;
        let row_bytes: f64 =
            self.spec.tables.iter().map(|t| t.pooling.mean() * t.row_bytes() as f64).sum::<f64>() * batch;
        let offsets = self.spec.tables.len() as f64 * batch + 1.0;
        let batch_bytes = 4.0 * (lookups + offsets) + BATCH_OVERHEAD_BYTES as f64;
        let want = (4.0 * cache_bytes as f64 / row_bytes.max(1.0)).ceil();
        let cap = (max_bytes as f64 / batch_bytes).floor().min(MAX_POOL_BATCHES as f64) as usize;
        (want.min(MAX_POOL_BATCHES as f64) as usize).clamp(8, cap.max(8))
    }
}

/// The most batches a benchmark pool holds, whatever the shape (see
/// [`BatchGenerator::pool_size_for`]).
pub const MAX_POOL_BATCHES: usize = 1 << 16;

/// Bytes a pooled batch costs beyond its ids and offsets: its two buffers' allocator headers,
/// the batch itself and the request prepared from it.
pub const BATCH_OVERHEAD_BYTES: usize = 256;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::presets::{Preset, PresetOptions};

    #[test]
    fn pools_are_capped_by_count_and_bytes_for_tiny_shapes() {
        let tiny: ModelSpec = toml::from_str(
            "name = \"tiny\"\nbatch_size = 1\n[[tables]]\nname = \"a\"\nrows = 100\ndim = 1\npooling = 1\ndist = \"uniform\"\n",
        )
        .unwrap();
        let g = BatchGenerator::new(&tiny).unwrap();
        // A 32 MiB LLC once asked for 33 million batches of this shape.
        let n = g.pool_size_for(32 << 20, 1 << 30);
        assert_eq!(n, MAX_POOL_BATCHES);
        // A byte budget binds by the batches' whole size, not their rows.
        let per_batch = 4 * (1 + 2) + BATCH_OVERHEAD_BYTES;
        assert_eq!(g.pool_size_for(32 << 20, (1000 * per_batch) as u64), 1000);
    }

    #[test]
    fn slices_hold_exactly_their_samples() {
        let g = BatchGenerator::new(&small_spec()).unwrap();
        let b = g.batch_sized(3, 37);
        for (b0, b1) in [(0, 37), (0, 10), (10, 11), (11, 37), (20, 20)] {
            let s = b.slice(b0, b1);
            s.check_layout().unwrap();
            assert_eq!(s.batch_size as usize, b1 - b0);
            for t in 0..b.num_tables as usize {
                for i in b0..b1 {
                    assert_eq!(s.bag(t, i - b0), b.bag(t, i), "table {t} sample {i}");
                }
            }
        }
    }

    fn small_spec() -> ModelSpec {
        Preset::Synthetic
            .spec(&PresetOptions {
                tables: Some(3),
                rows: Some(1000),
                dim: Some(8),
                pooling: Some("uniform:0:6".parse().unwrap()),
                dist: Some("zipf:1.1".parse().unwrap()),
                batch: Some(32),
                ..Default::default()
            })
            .unwrap()
    }

    #[test]
    fn batches_are_deterministic_and_distinct() {
        let spec = small_spec();
        let g = BatchGenerator::new(&spec).unwrap();
        let a = g.batch(5);
        assert_eq!(a, BatchGenerator::new(&spec).unwrap().batch(5));
        assert_ne!(a, g.batch(6));
        a.check_layout().unwrap();
        a.check_ids(&[1000, 1000, 1000]).unwrap();
        assert_eq!(a.batch_size, 32);
    }

    #[test]
    fn generated_batches_have_a_fixed_digest() {
        // Guards "same seed, same batches on any machine": if this changes, every stored
        // benchmark and tuning result stops being comparable.
        let g = BatchGenerator::new(&small_spec()).unwrap();
        let b = g.batch(0);
        let bytes: Vec<u8> = b.offsets.iter().chain(b.ids.iter()).flat_map(|x| x.to_le_bytes()).collect();
        assert_eq!(
            crate::spec::fnv1a(&bytes),
            GOLDEN_DIGEST,
            "batch 0 changed: digest {:#x}",
            crate::spec::fnv1a(&bytes)
        );
    }
    const GOLDEN_DIGEST: u64 = 0x9a7e_acb8_c0e9_9ef8;

    #[test]
    fn from_bags_and_accessors_agree() {
        let b = QueryBatch::from_bags(&[vec![vec![1, 2], vec![]], vec![vec![3], vec![4, 5, 6]]]);
        b.check_layout().unwrap();
        assert_eq!(b.bag(0, 0), &[1, 2]);
        assert!(b.bag(0, 1).is_empty());
        assert_eq!(b.bag(1, 1), &[4, 5, 6]);
        assert_eq!(b.table_ids(1), &[3, 4, 5, 6]);
        assert!(b.check_ids(&[3, 7]).is_ok());
        let err = b.check_ids(&[3, 6]).unwrap_err().to_string();
        assert!(err.contains("row id 6"), "{err}");
    }

    #[test]
    fn broken_layouts_are_rejected() {
        let mut b = QueryBatch::from_bags(&[vec![vec![1, 2], vec![3]]]);
        b.offsets[1] = 5;
        assert!(b.check_layout().is_err());
        let mut c = QueryBatch::from_bags(&[vec![vec![1, 2], vec![3]]]);
        c.offsets.pop();
        assert!(c.check_layout().is_err());
    }
}
