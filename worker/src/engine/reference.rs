//! The naive reference: every pooled value recomputed in f64 from the table seeds.
//!
//! It shares no storage and no kernels with the engine: each row is encoded from its seed and
//! decoded again, then added in f64. A result passes when it is within a bound on f32
//! rounding that grows with the bag's length and magnitude; a missing or extra row moves a
//! value by about the size of a row element, far outside it.

use embtune_workloads::{ModelSpec, PoolingMode, QueryBatch, RowType};

use super::storage::{decode_row_f64, encode_row, stride};

/// Reference pooled values for one request, with the tolerance of each.
pub struct RefOutput {
    pub values: Vec<f64>,
    pub tolerance: Vec<f64>,
    /// The sum of the absolute values of each pooled value's terms (divided like the value):
    /// what bounds the error of rounding its partial sums.
    pub magnitude: Vec<f64>,
    pub width: usize,
}

/// One table as the reference sees it.
#[derive(Clone, Debug)]
pub struct RefTable {
    pub name: String,
    pub rows: u64,
    pub dim: usize,
    pub row_type: RowType,
    pub seed: u64,
    pub mode: PoolingMode,
}

/// A reference for a model whose tables are stored as `row_types` (the plan's choice).
pub struct Reference {
    pub tables: Vec<RefTable>,
}

impl Reference {
    pub fn new(spec: &ModelSpec, row_types: &[RowType]) -> Reference {
        let tables = spec
            .tables
            .iter()
            .enumerate()
            .map(|(i, t)| RefTable {
                name: t.name.clone(),
                rows: t.rows,
                dim: t.dim as usize,
                row_type: row_types.get(i).copied().unwrap_or(t.row_type),
                seed: embtune_protocol::plan::table_seed(spec, i),
                mode: t.mode,
            })
            .collect();
        Reference { tables }
    }

    /// Pooled values of `batch`, whose slot `k` reads table `tables[k]`.
    pub fn pool(&self, batch: &QueryBatch, tables: &[u16]) -> RefOutput {
        let width: usize = tables.iter().map(|&t| self.tables[t as usize].dim).sum();
        let bs = batch.batch_size as usize;
        let mut values = vec![0f64; bs * width];
        let mut tolerance = vec![0f64; bs * width];
        let mut magnitude = vec![0f64; bs * width];
        let mut col = 0;
        for (slot, &t) in tables.iter().enumerate() {
            let rt = &self.tables[t as usize];
            let mut scratch = vec![0f32; rt.dim];
            let mut bytes = vec![0u8; stride(rt.row_type, rt.dim as u32)];
            let mut dec = vec![0f64; rt.dim];
            for b in 0..bs {
                let bag = batch.bag(slot, b);
                let mut abs = vec![0f64; rt.dim];
                let base = b * width + col;
                for &id in bag {
                    encode_row(rt.seed, id as u64, rt.row_type, &mut scratch, &mut bytes);
                    decode_row_f64(rt.row_type, rt.dim, &bytes, &mut dec);
                    for c in 0..rt.dim {
                        values[base + c] += dec[c];
                        abs[c] += dec[c].abs();
                    }
                }
                let n = bag.len().max(1) as f64;
                let div = if rt.mode == PoolingMode::Mean { n } else { 1.0 };
                for c in 0..rt.dim {
                    values[base + c] /= div;
                    // f32 summation of n terms: at most about n ulps of the running magnitude,
                    // plus the int8 rows' float scale and bias arithmetic.
                    tolerance[base + c] = (4.0 * f32::EPSILON as f64 * (n + 2.0) * abs[c] + 1e-6) / div;
                    magnitude[base + c] = abs[c] / div;
                }
            }
            col += rt.dim;
        }
        RefOutput { values, tolerance, magnitude, width }
    }
}

impl RefOutput {
    /// Widens every tolerance by `roundings` roundings to a format whose unit roundoff is
    /// `unit_roundoff` (a reply in f16 or bf16: each partial sum is rounded once, and a value
    /// is the sum of at most one partial per worker). Each rounding moves a partial by at most
    /// `unit_roundoff` times its size, which is at most the value's magnitude.
    pub fn allow_rounding(mut self, unit_roundoff: f64, roundings: usize) -> RefOutput {
        for (t, m) in self.tolerance.iter_mut().zip(&self.magnitude) {
            *t += unit_roundoff * roundings as f64 * m * (1.0 + 1e-9);
        }
        self
    }

    /// The first value of `got` outside its tolerance, described for an error message.
    pub fn check(&self, got: &[f32]) -> Result<(), String> {
        if got.len() != self.values.len() {
            return Err(format!("expected {} pooled values, got {}", self.values.len(), got.len()));
        }
        for (i, ((g, w), tol)) in got.iter().zip(&self.values).zip(&self.tolerance).enumerate() {
            let err = (*g as f64 - w).abs();
            // NaN fails too: it is never within tolerance.
            if err.is_nan() || err > *tol {
                return Err(format!(
                    "sample {} column {}: engine {g}, reference {w:.7} (error {err:.2e} > {tol:.2e})",
                    i / self.width,
                    i % self.width
                ));
            }
        }
        Ok(())
    }
}
