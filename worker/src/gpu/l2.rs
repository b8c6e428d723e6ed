//! What the GPU keeps in L2: the hot rows of hot-cache tables copied into one region within a
//! budget, and the stream's access-policy window over it (off by default).

use std::ffi::c_void;

use cudarc::driver::sys;
use serde::{Deserialize, Serialize};

use embtune_protocol::DataFlow;

use super::driver::DevBuf;
use super::kernels::{self, Variant};
use super::rows::global_row;
use super::{GpuEngine, GpuError};
use crate::engine::storage::encode_row;

/// How the L2 keeps hot rows. Off by default: on an H100 (benches/gpu/RESULTS.md) the window
/// made the real trace up to 21% slower and never helped, since blocks run table by table and
/// the window holds the idle tables' hot rows too.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct L2Options {
    /// Set the stream's access-policy window over the hot region (hits persist).
    pub window: bool,
    /// Bytes of hot rows to pin in all (`None`: the device's persisting-L2 limit). Hot-cache
    /// tables share it in proportion to the rows they ask for.
    pub hot_budget: Option<u64>,
}

/// The hot rows of every hot-cache table, in one region.
pub(super) struct HotRegion {
    pub(super) region: DevBuf,
    pub(super) bytes: u64,
    pub(super) ranks: Vec<Option<DevBuf>>,
    /// Per table: offset of its hot rows in the region and how many.
    pub(super) place: Vec<(u64, u32)>,
}

impl GpuEngine {
    /// Copies the hot rows of every hot-cache table into one region, within the budget.
    pub(super) fn build_hot(&self, variants: &[Variant], table_variant: &[u32]) -> Result<Option<HotRegion>, GpuError> {
        let is_hot: Vec<bool> = table_variant.iter().map(|&v| variants[v as usize].is_hot()).collect();
        if !is_hot.iter().any(|&h| h) {
            return Ok(None);
        }
        let asked: Vec<u64> = self
            .tables
            .iter()
            .zip(&is_hot)
            .map(|(t, &h)| match (h, t.flow) {
                (true, DataFlow::HotCache { hot_rows, .. }) => {
                    (hot_rows as u64).min(t.hot_ids.len() as u64).min(t.rows)
                }
                _ => 0,
            })
            .collect();
        let asked_bytes: u64 = asked.iter().zip(&self.tables).map(|(&n, t)| n * t.stride as u64).sum();
        let budget = self.l2.hot_budget.unwrap_or(if self.info.max_persisting_l2 > 0 {
            self.info.max_persisting_l2
        } else {
            self.info.l2_bytes / 2
        });
        let scale = if asked_bytes > budget { budget as f64 / asked_bytes as f64 } else { 1.0 };
        let mut place = Vec::with_capacity(self.tables.len());
        let mut sorted_ids = Vec::with_capacity(self.tables.len());
        let mut ranks = Vec::with_capacity(self.tables.len());
        let mut offset = 0u64;
        for (t, &n) in self.tables.iter().zip(&asked) {
            if n == 0 && !matches!(t.flow, DataFlow::HotCache { .. }) {
                place.push((offset, 0));
                sorted_ids.push(Vec::new());
                ranks.push(None);
                continue;
            }
            let n = ((n as f64 * scale).floor() as usize).min(t.hot_ids.len());
            let (words, sorted) = kernels::hot_index(t.rows, &t.hot_ids[..n]);
            let rank = DevBuf::new(words.len() * 4)?;
            rank.upload(&words, &self.stream)?;
            ranks.push(Some(rank));
            place.push((offset, sorted.len() as u32));
            offset += (sorted.len() as u64 * t.stride as u64).next_multiple_of(256);
            sorted_ids.push(sorted);
        }
        let mut host = vec![0u8; offset as usize];
        for (i, t) in self.tables.iter().enumerate() {
            let mut scratch = vec![0f32; t.dim as usize];
            let base = place[i].0 as usize;
            for (k, &id) in sorted_ids[i].iter().enumerate() {
                let at = base + k * t.stride;
                encode_row(
                    t.seed,
                    global_row(t.held, id as u64),
                    t.row_type,
                    &mut scratch,
                    &mut host[at..at + t.stride],
                );
            }
        }
        let region = DevBuf::new(host.len())?;
        region.upload(&host, &self.stream)?;
        Ok(Some(HotRegion { region, bytes: offset, ranks, place }))
    }

    /// Points the stream's access-policy window at the hot region (or clears it).
    pub(super) fn set_l2_policy(&self, hot: Option<&HotRegion>) -> Result<(u64, u64), GpuError> {
        let stream = self.stream.cu_stream();
        let (bytes, limit, ratio, base) = match hot {
            Some(h) if self.l2.window && self.info.max_persisting_l2 > 0 && h.bytes > 0 => {
                let window = h.bytes.min(self.info.max_window_bytes.max(1));
                let limit = window.min(self.info.max_persisting_l2);
                (window, limit, (limit as f64 / window as f64).min(1.0) as f32, h.region.ptr)
            }
            _ => (0, 0, 0.0, 0),
        };
        if self.info.max_persisting_l2 > 0 {
            self.ctx.set_limit(sys::CUlimit::CU_LIMIT_PERSISTING_L2_CACHE_SIZE, limit as usize)?;
            if bytes == 0 {
                // SAFETY: resets the persisting lines of this context.
                unsafe { sys::cuCtxResetPersistingL2Cache() }.result()?;
            }
        }
        if self.info.max_window_bytes > 0 {
            // SAFETY: a zeroed union is a valid value; then the window member is set.
            let mut value: sys::CUstreamAttrValue = unsafe { std::mem::zeroed() };
            value.accessPolicyWindow = sys::CUaccessPolicyWindow {
                base_ptr: base as *mut c_void,
                num_bytes: bytes as usize,
                hitRatio: ratio,
                hitProp: sys::CUaccessProperty::CU_ACCESS_PROPERTY_PERSISTING,
                missProp: sys::CUaccessProperty::CU_ACCESS_PROPERTY_STREAMING,
            };
            // SAFETY: a live stream and a valid attribute value.
            unsafe {
                sys::cuStreamSetAttribute(
                    stream,
                    sys::CUlaunchAttributeID::CU_LAUNCH_ATTRIBUTE_ACCESS_POLICY_WINDOW,
                    &value,
                )
            }
            .result()?;
        }
        Ok((bytes, limit))
    }
}
