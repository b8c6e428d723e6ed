//! Which rows of a table a GPU holds, and how its local rows map to the table's global ones
//! (a whole table, a row range or a hash shard).

use embtune_protocol::{LocalLayout, LocalTable, ShardRows};

use super::GpuError;

/// The rows of a table one device holds: `None` for the whole table.
pub fn held_rows(t: &LocalTable) -> Result<Option<ShardRows>, GpuError> {
    match &t.layout {
        LocalLayout::Replicated => Ok(None),
        LocalLayout::Shards(s) if s.len() == 1 => match s[0].rows {
            ShardRows::Range { lo: 0, hi } if hi == t.spec.rows => Ok(None),
            rows => Ok(Some(rows)),
        },
        LocalLayout::Shards(s) => Err(GpuError::Deploy(format!(
            "table `{}` has {} shards on this worker; a GPU holds at most one shard of a table \
             (give the GPU worker one core in the plan)",
            t.spec.name,
            s.len()
        ))),
    }
}

/// Rows of a `rows`-row table that a shard holds.
pub(super) fn shard_rows(s: ShardRows, rows: u64) -> u64 {
    match s {
        ShardRows::Range { lo, hi } => hi.min(rows).saturating_sub(lo),
        ShardRows::Hash { index, of } => rows.saturating_sub(index as u64).div_ceil(of as u64),
    }
}

/// The global row stored at local row `r`.
pub(super) fn global_row(held: Option<ShardRows>, r: u64) -> u64 {
    match held {
        None => r,
        Some(ShardRows::Range { lo, .. }) => lo + r,
        Some(ShardRows::Hash { index, of }) => r * of as u64 + index as u64,
    }
}

/// The local row of global row `id`, or `None` when the shard does not hold it.
pub fn local_row(held: Option<ShardRows>, id: u32) -> Option<u32> {
    match held {
        None => Some(id),
        Some(s) if !s.contains(id) => None,
        Some(ShardRows::Range { lo, .. }) => Some(id - lo as u32),
        Some(ShardRows::Hash { of, .. }) => Some(id / of),
    }
}
