//! The CUDA look-up backend (cargo feature `gpu`): embedding tables in device memory, one
//! kernel launch per batch covering every table.
//!
//! The driver (`libcuda`) and NVRTC are loaded at run time through cudarc, so a binary built
//! with this feature builds anywhere and runs on machines without CUDA until a GPU is asked
//! for; [`cuda_present`] says whether one can be. Kernels (`kernels.cu`) are compiled by NVRTC
//! for the device at hand, specialised to the variants the deployed tables use.
//!
//! Data flows map to kernels per table ([`Variant::for_table`]; bags of at most
//! [`kernels::SHORT_BAG`] ids on narrow rows take a kernel with several bags per warp instead):
//! - `Direct { prefetch: 0 }`: the baseline, one thread per output element;
//! - `Direct { prefetch: p }`: a warp (or part of one) per bag, 16-byte loads, rows prefetched
//!   into registers `p` steps ahead (`p = 1`: vector loads without prefetching);
//! - `HotCache { hot_rows, prefetch }`: as `Direct`, plus the `hot_rows` most frequent rows
//!   (from an access profile) copied to one contiguous region shared by all tables, found
//!   through a per-table rank bitmap (the id remap), and kept in L2 by the stream's
//!   access-policy window (persisting hits) and `evict_last` load hints;
//! - `Blocked`: the prefetching kernel (a GPU has no use for the CPU's blocked walk).
//!
//! Table contents are the CPU engine's: rows are encoded on the host by the same functions
//! (`storage::RowStore::fill`, `encode_row`) and copied in, so [`crate::engine::reference`]
//! checks the GPU as it checks the CPU engine.
//!
//! This module is the engine (deployment, layouts, launches); `driver` wraps the driver and
//! NVRTC, `l2` is what the L2 keeps, `timing` times launches with CUDA events, and `rows`
//! maps a shard's local rows to the table's.

pub mod bench;
mod driver;
pub mod kernels;
mod l2;
mod rows;
pub mod serve;
#[cfg(test)]
mod tests;
mod timing;

use std::collections::HashMap;
use std::ffi::c_void;
use std::sync::Arc;
use std::time::Instant;

use cudarc::driver::{CudaContext, CudaFunction, CudaStream, result, sys};
use serde::{Deserialize, Serialize};

use embtune_protocol::{DataFlow, LocalTable, ShardRows, WorkerAssignment};
use embtune_workloads::{PoolingMode, QueryBatch, RowType};

use crate::engine::storage::RowStore;
use driver::{DevBuf, attr};
pub use driver::{GpuInfo, compile, cuda_present};
pub use kernels::{KernelKnobs, Variant};
use kernels::{TableDesc, WARPS};
use l2::HotRegion;
pub use l2::L2Options;
use rows::{global_row, shard_rows};
pub use rows::{held_rows, local_row};
use timing::Event;

/// Why the GPU backend failed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum GpuError {
    #[error("no CUDA: {0}")]
    Unavailable(String),
    #[error("CUDA driver: {0}")]
    Driver(String),
    #[error("kernel compilation failed: {0}")]
    Compile(String),
    #[error("cannot deploy: {0}")]
    Deploy(String),
    #[error("bad request: {0}")]
    Request(String),
}

impl From<result::DriverError> for GpuError {
    fn from(e: result::DriverError) -> GpuError {
        GpuError::Driver(e.to_string())
    }
}

/// A table in device memory.
struct DevTable {
    name: String,
    rows: u64,
    dim: u32,
    row_type: RowType,
    mode: PoolingMode,
    /// Mean look-ups per sample (picks the multi-bag kernel for short bags).
    pooling: f64,
    seed: u64,
    /// The shard it holds (`None`: the whole table); local row r is global row
    /// `global_row(held, r)`, whose contents the seed sets.
    held: Option<ShardRows>,
    stride: usize,
    data: DevBuf,
    flow: DataFlow,
    /// Most frequent first, from the deployment or the last `set_flows`.
    hot_ids: Vec<u32>,
}

/// A compiled kernel for a set of variants and knobs.
#[derive(Clone)]
struct Kernel {
    lookup: CudaFunction,
    poison: CudaFunction,
    regs: i32,
    local_bytes: i32,
    compile_seconds: f64,
}

/// What the current flows compiled to.
struct Layout {
    variants: Vec<Variant>,
    table_variant: Vec<u32>,
    kernel: Kernel,
    hot: Option<HotRegion>,
    window_bytes: u64,
    persisting_limit: u64,
    l2_error: Option<String>,
    /// Descriptors and grid size by batch size (block ranges depend on it). A worker sees
    /// sub-batches of many sizes; allocating device memory per request would cost more than
    /// the look-up, so they are kept (up to [`MAX_DESC_SIZES`] sizes).
    descs: HashMap<u32, (DevBuf, u32)>,
}

/// Batch sizes whose launch descriptors a layout keeps.
const MAX_DESC_SIZES: usize = 1024;

/// A batch whose ids and offsets are already in device memory, for timing without copies.
pub struct DeviceBatch {
    ids: DevBuf,
    offs: DevBuf,
    pub batch_size: u32,
    pub lookups: usize,
}

/// What a deployment did.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct GpuDeployReport {
    pub tables: usize,
    pub bytes: u64,
    pub seconds: f64,
}

/// How the current flows are laid out on the device.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct GpuLayoutReport {
    /// Per table: the kernel variant it runs.
    pub variants: Vec<String>,
    /// Per table: hot rows pinned (0 for other flows).
    pub hot_rows: Vec<u32>,
    pub hot_bytes: u64,
    /// The access-policy window over the hot rows (0: none) and the persisting-L2 limit set.
    pub window_bytes: u64,
    pub persisting_limit: u64,
    /// Why the access-policy window could not be set, if it could not.
    pub l2_error: Option<String>,
    pub registers: i32,
    /// Bytes of local memory per thread (spills); 0 is what we want.
    pub local_bytes: i32,
    pub compile_seconds: f64,
    pub knobs: Option<KernelKnobs>,
}

/// Pooled rows of a look-up: `batch x width` floats, each sample's tables side by side.
#[derive(Clone, Debug)]
pub struct GpuOutput {
    pub pooled: Vec<f32>,
    pub width: usize,
    pub columns: Vec<usize>,
    /// Kernel time alone, from CUDA events.
    pub kernel_ms: f32,
}

/// The GPU engine: tables on one device, one launch per batch.
pub struct GpuEngine {
    info: GpuInfo,
    knobs: KernelKnobs,
    l2: L2Options,
    tables: Vec<DevTable>,
    layout: Option<Layout>,
    compiled: HashMap<String, Kernel>,
    /// Reused across look-ups: ids, offsets, pooled output.
    io_ids: Option<DevBuf>,
    io_offs: Option<DevBuf>,
    out: Option<DevBuf>,
    stream: Arc<CudaStream>,
    // Last, so that every buffer above is freed while the context lives.
    ctx: Arc<CudaContext>,
}

impl GpuEngine {
    /// Opens device `ordinal`. Fails with [`GpuError::Unavailable`] where there is no driver,
    /// no NVRTC or no such device.
    pub fn new(ordinal: usize) -> Result<GpuEngine, GpuError> {
        if !cuda_present() {
            return Err(GpuError::Unavailable(
                "libcuda or libnvrtc cannot be loaded (install the NVIDIA driver and CUDA's NVRTC, or set LD_LIBRARY_PATH)"
                    .into(),
            ));
        }
        result::init().map_err(|e| GpuError::Unavailable(format!("cuInit: {e}")))?;
        let count = result::device::get_count().map_err(|e| GpuError::Unavailable(format!("{e}")))?;
        if ordinal as i32 >= count {
            return Err(GpuError::Unavailable(format!("no CUDA device {ordinal} ({count} present)")));
        }
        let ctx = CudaContext::new(ordinal)?;
        let stream = ctx.new_stream()?;
        use sys::CUdevice_attribute::*;
        let mut driver_version = 0;
        // SAFETY: writes one int.
        unsafe { sys::cuDriverGetVersion(&mut driver_version) }.result()?;
        let (mut nv_major, mut nv_minor) = (0, 0);
        // SAFETY: writes two ints.
        unsafe { cudarc::nvrtc::sys::nvrtcVersion(&mut nv_major, &mut nv_minor) };
        let (free, total) = ctx.mem_get_info()?;
        let info = GpuInfo {
            ordinal,
            name: ctx.name()?,
            compute_capability: ctx.compute_capability()?,
            driver_version,
            nvrtc_version: (nv_major, nv_minor),
            total_mem: total as u64,
            free_mem: free as u64,
            sms: attr(&ctx, CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT)? as u32,
            clock_khz: attr(&ctx, CU_DEVICE_ATTRIBUTE_CLOCK_RATE).unwrap_or(0) as u32,
            mem_clock_khz: attr(&ctx, CU_DEVICE_ATTRIBUTE_MEMORY_CLOCK_RATE).unwrap_or(0) as u32,
            mem_bus_bits: attr(&ctx, CU_DEVICE_ATTRIBUTE_GLOBAL_MEMORY_BUS_WIDTH).unwrap_or(0) as u32,
            l2_bytes: attr(&ctx, CU_DEVICE_ATTRIBUTE_L2_CACHE_SIZE)? as u64,
            max_persisting_l2: attr(&ctx, CU_DEVICE_ATTRIBUTE_MAX_PERSISTING_L2_CACHE_SIZE).unwrap_or(0) as u64,
            max_window_bytes: attr(&ctx, CU_DEVICE_ATTRIBUTE_MAX_ACCESS_POLICY_WINDOW_SIZE).unwrap_or(0) as u64,
        };
        Ok(GpuEngine {
            info,
            knobs: KernelKnobs::default(),
            l2: L2Options::default(),
            tables: Vec::new(),
            layout: None,
            compiled: HashMap::new(),
            io_ids: None,
            io_offs: None,
            out: None,
            stream,
            ctx,
        })
    }

    pub fn info(&self) -> &GpuInfo {
        &self.info
    }

    /// Output width (sum of the deployed tables' dims) and each table's first column.
    pub fn columns(&self) -> (usize, Vec<usize>) {
        let mut cols = Vec::with_capacity(self.tables.len());
        let mut w = 0usize;
        for t in &self.tables {
            cols.push(w);
            w += t.dim as usize;
        }
        (w, cols)
    }

    /// Deploys the tables a worker assignment names: whole tables, or one shard of a table (a
    /// row range or a hash shard), whose rows the device stores contiguously from local row 0.
    /// Callers translate ids with [`local_row`] first. A table with several shards on one
    /// worker is refused: a device is one slot, so a plan gives it at most one shard a table.
    pub fn deploy_assignment(&mut self, a: &WorkerAssignment) -> Result<GpuDeployReport, GpuError> {
        self.deploy(&a.tables)
    }

    /// Puts `tables` in device memory (replacing what was there) with their flows. A batch
    /// then has one slot per table, in this order, with ids local to each table's shard.
    pub fn deploy(&mut self, tables: &[LocalTable]) -> Result<GpuDeployReport, GpuError> {
        let t0 = Instant::now();
        let shards = tables.iter().map(held_rows).collect::<Result<Vec<_>, _>>()?;
        self.ctx.bind_to_thread()?;
        self.layout = None;
        self.tables.clear();
        let mut bytes = 0u64;
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get()).min(32);
        for (t, held) in tables.iter().zip(&shards) {
            let dim = t.spec.dim;
            let rows = held.map_or(t.spec.rows, |s| shard_rows(s, t.spec.rows));
            if rows == 0 || dim == 0 {
                return Err(GpuError::Deploy(format!("table `{}` has no rows or no columns here", t.spec.name)));
            }
            let store = RowStore::alloc(rows, t.row_type, dim, false)
                .map_err(|e| GpuError::Deploy(format!("host buffer for `{}`: {e}", t.spec.name)))?;
            let chunk = rows.div_ceil(threads as u64);
            std::thread::scope(|s| {
                for i in 0..threads as u64 {
                    let (lo, hi) = ((i * chunk).min(rows), ((i + 1) * chunk).min(rows));
                    let store = &store;
                    s.spawn(move || store.fill(t.content_seed, lo, hi, |r| global_row(*held, r)));
                }
            });
            let data = DevBuf::new(store.bytes() as usize)?;
            // SAFETY: the store's buffer holds exactly bytes() initialised bytes.
            let host = unsafe { std::slice::from_raw_parts(store.base(), store.bytes() as usize) };
            data.upload(host, &self.stream)?;
            bytes += store.bytes();
            self.tables.push(DevTable {
                name: t.spec.name.clone(),
                rows,
                dim,
                row_type: t.row_type,
                mode: t.spec.mode,
                pooling: t.spec.pooling.mean(),
                seed: t.content_seed,
                held: *held,
                stride: store.stride,
                data,
                flow: t.flow,
                hot_ids: Vec::new(),
            });
        }
        let flows: Vec<DataFlow> = tables.iter().map(|t| t.flow).collect();
        // Hot rows come as global ids, most frequent first; the device wants its own.
        let hot: Vec<Vec<u32>> = tables
            .iter()
            .zip(&shards)
            .map(|(t, held)| t.hot_ids.iter().filter_map(|&id| local_row(*held, id)).collect())
            .collect();
        self.set_flows(&flows, &hot)?;
        Ok(GpuDeployReport { tables: tables.len(), bytes, seconds: t0.elapsed().as_secs_f64() })
    }

    /// Kernel knobs and L2 options; they apply from the next [`GpuEngine::set_flows`] (or
    /// deployment) on.
    pub fn configure(&mut self, knobs: KernelKnobs, l2: L2Options) -> Result<(), GpuError> {
        if ![1, 2, 4, 8].contains(&knobs.split) {
            return Err(GpuError::Request(format!("split must be 1, 2, 4 or 8, not {}", knobs.split)));
        }
        if knobs.min_blocks > 8 {
            return Err(GpuError::Request(format!("min_blocks must be 0 (auto) to 8, not {}", knobs.min_blocks)));
        }
        self.knobs = knobs;
        self.l2 = l2;
        Ok(())
    }

    /// Changes the deployed tables' data flows (and hot rows, most frequent first) without
    /// copying the tables again: builds the hot region, sets the L2 policy and compiles (or
    /// reuses) the kernel for the variants the flows need.
    pub fn set_flows(&mut self, flows: &[DataFlow], hot_ids: &[Vec<u32>]) -> Result<GpuLayoutReport, GpuError> {
        if flows.len() != self.tables.len() || hot_ids.len() != self.tables.len() {
            return Err(GpuError::Request(format!(
                "{} flows and {} hot-row lists for {} tables",
                flows.len(),
                hot_ids.len(),
                self.tables.len()
            )));
        }
        self.ctx.bind_to_thread()?;
        self.layout = None;
        for ((t, f), h) in self.tables.iter_mut().zip(flows).zip(hot_ids) {
            t.flow = *f;
            t.hot_ids = h.clone();
        }
        // Variants, deduplicated: case i of the dispatch switch runs variants[i].
        let mut variants: Vec<Variant> = Vec::new();
        let mut table_variant = Vec::with_capacity(self.tables.len());
        for t in &self.tables {
            let mut flow = t.flow;
            // Hot ids are tagged with the top bit: tables of 2^31 rows or more go without.
            if let DataFlow::HotCache { prefetch, .. } = flow
                && t.rows > (1u64 << 31)
            {
                flow = DataFlow::Direct { prefetch: prefetch.max(1) };
            }
            let v = Variant::for_table(t.row_type, t.dim, flow, t.pooling);
            let i = match variants.iter().position(|x| *x == v) {
                Some(i) => i,
                None => {
                    variants.push(v);
                    variants.len() - 1
                }
            };
            table_variant.push(i as u32);
        }
        let kernel = self.kernel(&variants)?;
        let hot = self.build_hot(&variants, &table_variant)?;
        // Some virtualised or partitioned devices refuse persisting L2: run without it and say so.
        let (window_bytes, persisting_limit, l2_error) = match self.set_l2_policy(hot.as_ref()) {
            Ok((w, l)) => (w, l, None),
            Err(e) => {
                tracing::warn!("persisting L2 not available: {e}");
                (0, 0, Some(e.to_string()))
            }
        };
        let layout = Layout {
            variants,
            table_variant,
            kernel,
            hot,
            window_bytes,
            persisting_limit,
            l2_error,
            descs: HashMap::new(),
        };
        let report = self.layout_report(&layout);
        self.layout = Some(layout);
        Ok(report)
    }

    /// What the current flows compiled to.
    pub fn layout(&self) -> Option<GpuLayoutReport> {
        self.layout.as_ref().map(|l| self.layout_report(l))
    }

    fn layout_report(&self, l: &Layout) -> GpuLayoutReport {
        GpuLayoutReport {
            variants: l.table_variant.iter().map(|&i| l.variants[i as usize].label()).collect(),
            hot_rows: (0..self.tables.len()).map(|t| l.hot.as_ref().map_or(0, |h| h.place[t].1)).collect(),
            hot_bytes: l.hot.as_ref().map_or(0, |h| h.bytes),
            window_bytes: l.window_bytes,
            persisting_limit: l.persisting_limit,
            l2_error: l.l2_error.clone(),
            registers: l.kernel.regs,
            local_bytes: l.kernel.local_bytes,
            compile_seconds: l.kernel.compile_seconds,
            knobs: Some(self.knobs),
        }
    }

    fn kernel(&mut self, variants: &[Variant]) -> Result<Kernel, GpuError> {
        let src = kernels::source(variants, &self.knobs);
        if let Some(k) = self.compiled.get(&src) {
            return Ok(k.clone());
        }
        let t0 = Instant::now();
        let (maj, min) = self.info.compute_capability;
        let ptx = compile(&src, &format!("compute_{maj}{min}"))?;
        let module = self.ctx.load_module(cudarc::nvrtc::Ptx::from_src(ptx))?;
        let lookup = module.load_function("emb_lookup")?;
        let poison = module.load_function("emb_poison")?;
        let k = Kernel {
            regs: lookup.num_regs().unwrap_or(-1),
            local_bytes: lookup.local_size_bytes().unwrap_or(-1),
            lookup,
            poison,
            compile_seconds: t0.elapsed().as_secs_f64(),
        };
        self.compiled.insert(src, k.clone());
        Ok(k)
    }

    /// Checks a batch against the deployed tables: layout and every id's range.
    fn check(&self, batch: &QueryBatch) -> Result<(), GpuError> {
        if self.layout.is_none() {
            return Err(GpuError::Request("nothing is deployed".into()));
        }
        batch.check_layout().map_err(|e| GpuError::Request(e.to_string()))?;
        let rows: Vec<u64> = self.tables.iter().map(|t| t.rows).collect();
        batch.check_ids(&rows).map_err(|e| GpuError::Request(e.to_string()))
    }

    /// Copies a batch's ids and offsets to the device, for repeated launches.
    pub fn upload(&mut self, batch: &QueryBatch) -> Result<DeviceBatch, GpuError> {
        self.check(batch)?;
        self.ctx.bind_to_thread()?;
        let ids = DevBuf::new(batch.ids.len() * 4)?;
        ids.upload(&batch.ids, &self.stream)?;
        let offs = DevBuf::new(batch.offsets.len() * 4)?;
        offs.upload(&batch.offsets, &self.stream)?;
        Ok(DeviceBatch { ids, offs, batch_size: batch.batch_size, lookups: batch.ids.len() })
    }

    fn ensure_out(&mut self, batch: u32) -> Result<sys::CUdeviceptr, GpuError> {
        let need = batch as usize * self.columns().0 * 4;
        if self.out.as_ref().is_none_or(|b| b.len < need) {
            self.out = None;
            self.out = Some(DevBuf::new(need)?);
        }
        Ok(self.out.as_ref().unwrap().ptr)
    }

    /// The grid and descriptor buffer for `batch` bags per table.
    fn descs(&mut self, batch: u32) -> Result<(sys::CUdeviceptr, u32), GpuError> {
        let (width, cols) = self.columns();
        let split = self.knobs.split;
        let layout = self.layout.as_mut().ok_or_else(|| GpuError::Request("nothing is deployed".into()))?;
        if let Some((buf, blocks)) = layout.descs.get(&batch) {
            return Ok((buf.ptr, *blocks));
        }
        let mut bytes = Vec::with_capacity(self.tables.len() * 48);
        let mut block = 0u64;
        for (i, t) in self.tables.iter().enumerate() {
            let v = layout.variants[layout.table_variant[i] as usize];
            let (hot_base, rank) = match &layout.hot {
                Some(h) if v.is_hot() => (h.region.ptr + h.place[i].0, h.ranks[i].as_ref().map_or(0, |r| r.ptr)),
                _ => (0, 0),
            };
            let d = TableDesc {
                base: t.data.ptr,
                hot_base,
                rank,
                stride: t.stride as u32,
                dim: t.dim,
                out_col: cols[i] as u32,
                variant: layout.table_variant[i],
                block_begin: block as u32,
                mean: (t.mode == PoolingMode::Mean) as u32,
            };
            bytes.extend_from_slice(&d.to_bytes());
            block += v.blocks(batch, t.dim, split) as u64;
        }
        if block > i32::MAX as u64 {
            return Err(GpuError::Request(format!("a batch of {batch} needs {block} blocks, too many for one launch")));
        }
        let _ = width;
        let buf = DevBuf::new(bytes.len())?;
        buf.upload(&bytes, &self.stream)?;
        let ptr = buf.ptr;
        if layout.descs.len() >= MAX_DESC_SIZES {
            layout.descs.clear();
        }
        layout.descs.insert(batch, (buf, block as u32));
        Ok((ptr, block as u32))
    }

    /// Launches the look-up of a device batch (asynchronously) into the output buffer.
    pub fn launch(&mut self, b: &DeviceBatch) -> Result<(), GpuError> {
        self.launch_ptrs(b.ids.ptr, b.offs.ptr, b.batch_size)
    }

    fn launch_ptrs(&mut self, ids: sys::CUdeviceptr, offs: sys::CUdeviceptr, batch: u32) -> Result<(), GpuError> {
        if batch == 0 {
            return Ok(());
        }
        let out = self.ensure_out(batch)?;
        let (descs, blocks) = self.descs(batch)?;
        let (width, _) = self.columns();
        let func = self.layout.as_ref().unwrap().kernel.lookup.cu_function();
        let mut descs = descs;
        let mut ntables = self.tables.len() as u32;
        let (mut ids, mut offs, mut out) = (ids, offs, out);
        let mut width = width as u32;
        let mut batch = batch;
        let mut args: [*mut c_void; 7] = [
            &mut descs as *mut _ as *mut c_void,
            &mut ntables as *mut _ as *mut c_void,
            &mut ids as *mut _ as *mut c_void,
            &mut offs as *mut _ as *mut c_void,
            &mut out as *mut _ as *mut c_void,
            &mut width as *mut _ as *mut c_void,
            &mut batch as *mut _ as *mut c_void,
        ];
        // SAFETY: the arguments match emb_lookup's parameters; every buffer outlives the
        // launch (callers synchronise before dropping batches or the engine).
        unsafe {
            result::launch_kernel(func, (blocks, 1, 1), (kernels::THREADS, 1, 1), 0, self.stream.cu_stream(), &mut args)
        }?;
        Ok(())
    }

    /// Fills the output buffer for `batch` samples with NaN, so that unwritten elements fail
    /// a check.
    pub fn poison(&mut self, batch: u32) -> Result<(), GpuError> {
        let out = self.ensure_out(batch)?;
        let n = batch as u64 * self.columns().0 as u64;
        if n == 0 {
            return Ok(());
        }
        let func = self
            .layout
            .as_ref()
            .ok_or_else(|| GpuError::Request("nothing is deployed".into()))?
            .kernel
            .poison
            .cu_function();
        let (mut out, mut n64) = (out, n);
        let mut args: [*mut c_void; 2] = [&mut out as *mut _ as *mut c_void, &mut n64 as *mut _ as *mut c_void];
        let blocks = n.div_ceil(256) as u32;
        // SAFETY: matches emb_poison(float*, u64); the buffer holds n floats.
        unsafe { result::launch_kernel(func, (blocks, 1, 1), (256, 1, 1), 0, self.stream.cu_stream(), &mut args) }?;
        Ok(())
    }

    /// Waits for the stream and copies out the pooled rows of the last launch (`batch` samples).
    pub fn read_output(&mut self, batch: u32) -> Result<Vec<f32>, GpuError> {
        self.stream.synchronize()?;
        let n = batch as usize * self.columns().0;
        let mut host = vec![0f32; n];
        if n > 0 {
            let out = self.out.as_ref().ok_or_else(|| GpuError::Request("no output yet".into()))?;
            // SAFETY: the buffer holds at least n floats; synchronised below before use.
            unsafe { result::memcpy_dtoh_async(&mut host, out.ptr, self.stream.cu_stream()) }?;
            self.stream.synchronize()?;
        }
        Ok(host)
    }

    /// One look-up: ids and offsets in (into reused buffers), one launch, pooled rows out.
    pub fn lookup(&mut self, batch: &QueryBatch) -> Result<GpuOutput, GpuError> {
        self.check(batch)?;
        self.ctx.bind_to_thread()?;
        let need_ids = batch.ids.len() * 4;
        if self.io_ids.as_ref().is_none_or(|b| b.len < need_ids) {
            self.io_ids = None;
            self.io_ids = Some(DevBuf::new(need_ids.next_power_of_two())?);
        }
        let need_offs = batch.offsets.len() * 4;
        if self.io_offs.as_ref().is_none_or(|b| b.len < need_offs) {
            self.io_offs = None;
            self.io_offs = Some(DevBuf::new(need_offs.next_power_of_two())?);
        }
        let (ids, offs) = (self.io_ids.as_ref().unwrap(), self.io_offs.as_ref().unwrap());
        if !batch.ids.is_empty() {
            ids.upload(&batch.ids, &self.stream)?;
        }
        offs.upload(&batch.offsets, &self.stream)?;
        let (ids, offs) = (ids.ptr, offs.ptr);
        let (start, end) = (Event::new()?, Event::new()?);
        start.record(&self.stream)?;
        self.launch_ptrs(ids, offs, batch.batch_size)?;
        end.record(&self.stream)?;
        let pooled = self.read_output(batch.batch_size)?;
        let kernel_ms = end.ms_since(&start)?;
        let (width, columns) = self.columns();
        Ok(GpuOutput { pooled, width, columns, kernel_ms })
    }

    /// Rows of each deployed table (for id checks by callers).
    pub fn table_rows(&self) -> Vec<u64> {
        self.tables.iter().map(|t| t.rows).collect()
    }

    /// Names of the deployed tables.
    pub fn table_names(&self) -> Vec<String> {
        self.tables.iter().map(|t| t.name.clone()).collect()
    }

    /// Blocks per SM the current kernel can keep resident (occupancy), if known.
    pub fn occupancy(&self) -> Option<u32> {
        let l = self.layout.as_ref()?;
        l.kernel.lookup.occupancy_max_active_blocks_per_multiprocessor(kernels::THREADS, 0, None).ok()
    }

    /// Warps per block (for reports).
    pub fn warps_per_block() -> u32 {
        WARPS
    }
}
