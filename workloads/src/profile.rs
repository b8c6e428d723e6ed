//! Access profiles: how skewed each table's look-ups are.
//!
//! A profile counts the ids of a sample of batches (or a whole trace). The engine uses it to
//! pick the hot rows of its cache-resident data flow, the tuner to predict cache hit rates, and
//! `embtune workload profile` to show a user what their workload looks like.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use crate::batch::QueryBatch;
use crate::trace::Empirical;

/// The row shares reported for every table: the top 0.1%, 1% and 10% of rows.
pub const TOP_FRACTIONS: [f64; 3] = [0.001, 0.01, 0.1];

/// Observed access counts of one table.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct TableProfile {
    pub rows: u64,
    pub lookups: u64,
    /// Distinct ids and their counts, most frequent first.
    pub hot: Vec<(u32, u32)>,
}

impl TableProfile {
    /// Distinct ids seen.
    pub fn unique(&self) -> usize {
        self.hot.len()
    }

    /// Share of look-ups on the `top` most frequent rows.
    pub fn top_share_rows(&self, top: u64) -> f64 {
        if self.lookups == 0 {
            return 0.0;
        }
        let n = (top as usize).min(self.hot.len());
        self.hot[..n].iter().map(|&(_, c)| c as u64).sum::<u64>() as f64 / self.lookups as f64
    }

    /// Share of look-ups on the top `fraction` of the table's rows (at least one row).
    pub fn top_share(&self, fraction: f64) -> f64 {
        self.top_share_rows(((self.rows as f64 * fraction).ceil() as u64).max(1))
    }

    /// The `n` most frequent row ids, most frequent first: the rows a cache-resident data flow
    /// should keep.
    pub fn hottest(&self, n: usize) -> Vec<u32> {
        self.hot.iter().take(n).map(|&(id, _)| id).collect()
    }

    /// Smallest number of rows that covers `share` of the look-ups.
    pub fn rows_for_share(&self, share: f64) -> u64 {
        let want = (share * self.lookups as f64).ceil() as u64;
        let mut acc = 0u64;
        for (i, &(_, c)) in self.hot.iter().enumerate() {
            acc += c as u64;
            if acc >= want {
                return i as u64 + 1;
            }
        }
        self.hot.len() as u64
    }
}

/// Profiles of every table of a model.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct AccessProfile {
    pub tables: Vec<TableProfile>,
    /// Batches the profile was counted over.
    pub batches: u64,
    /// Mean distinct ids per table per batch, over the counted batches: how much a data flow
    /// that gathers each distinct row once can save.
    pub distinct_per_batch: Vec<f64>,
}

impl AccessProfile {
    /// Counts the ids of `batches` for tables of `rows` rows.
    pub fn from_batches(rows: &[u64], batches: &[QueryBatch]) -> AccessProfile {
        let mut counts: Vec<HashMap<u32, u32>> = vec![HashMap::new(); rows.len()];
        let mut distinct = vec![0f64; rows.len()];
        let mut lookups = vec![0u64; rows.len()];
        for b in batches {
            for (t, c) in counts.iter_mut().enumerate() {
                let ids = b.table_ids(t);
                lookups[t] += ids.len() as u64;
                let mut fresh = std::collections::HashSet::with_capacity(ids.len());
                for &id in ids {
                    *c.entry(id).or_default() += 1;
                    fresh.insert(id);
                }
                distinct[t] += fresh.len() as f64;
            }
        }
        let n = batches.len().max(1) as f64;
        let tables = counts
            .into_iter()
            .zip(rows)
            .zip(&lookups)
            .map(|((c, &rows), &lookups)| TableProfile { rows, lookups, hot: sorted(c) })
            .collect();
        AccessProfile {
            tables,
            batches: batches.len() as u64,
            distinct_per_batch: distinct.into_iter().map(|d| d / n).collect(),
        }
    }

    /// A one-table profile of a whole trace.
    pub fn from_empirical(e: &Empirical, rows: u64) -> TableProfile {
        let mut c: HashMap<u32, u32> = HashMap::new();
        for (&id, &n) in e.ids.iter().zip(&e.counts) {
            *c.entry((id % rows) as u32).or_default() += n as u32;
        }
        TableProfile { rows, lookups: e.total, hot: sorted(c) }
    }
}

/// Where batches for profiling come from: far from any benchmark's own batch indices, so hot
/// rows are learned from traffic a benchmark does not replay.
pub const PROFILE_BATCH_BASE: u64 = 1 << 40;

/// Access profiles of every table of a generator's model, counted over about four million
/// look-ups of profiling batches.
pub fn profile_generator(g: &crate::BatchGenerator) -> AccessProfile {
    let spec = g.spec();
    let per_batch = (spec.mean_lookups_per_sample() * spec.batch_size as f64).max(1.0);
    let n = ((4e6 / per_batch).ceil() as usize).clamp(1, 64);
    let batches = g.pool(PROFILE_BATCH_BASE, n);
    let rows: Vec<u64> = spec.tables.iter().map(|t| t.rows).collect();
    AccessProfile::from_batches(&rows, &batches)
}

fn sorted(c: HashMap<u32, u32>) -> Vec<(u32, u32)> {
    let mut v: Vec<(u32, u32)> = c.into_iter().collect();
    v.sort_unstable_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn profile_counts_shares_and_hot_rows() {
        let b = QueryBatch::from_bags(&[vec![vec![1, 1, 1, 2], vec![1, 3]]]);
        let p = AccessProfile::from_batches(&[1000], &[b.clone(), b]);
        let t = &p.tables[0];
        assert_eq!(t.lookups, 12);
        assert_eq!(t.unique(), 3);
        assert_eq!(t.hottest(2), vec![1, 2]);
        assert!((t.top_share_rows(1) - 8.0 / 12.0).abs() < 1e-12);
        // 0.1% of 1000 rows is one row.
        assert!((t.top_share(0.001) - 8.0 / 12.0).abs() < 1e-12);
        assert_eq!(t.rows_for_share(0.5), 1);
        assert_eq!(t.rows_for_share(1.0), 3);
        assert!((p.distinct_per_batch[0] - 3.0).abs() < 1e-12);
    }
}
