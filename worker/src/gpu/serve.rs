//! A GPU as a worker's look-up device: what `embtune worker --gpu N` serves requests with.
//!
//! The coordinator sees a GPU worker as a worker of one core whose memory is the device's:
//! the plan places whole tables, or one row-range or hash shard of a table, on it, exactly as
//! on a CPU worker's core. Requests name tables by their model-spec index and carry global row
//! ids; this module checks and translates them to the device's slots and local rows, runs one
//! launch for the request and returns the requested tables' partial sums in the same layout
//! as the CPU engine (`batch x width`, tables side by side in request order).
//!
//! The device is driven by one request at a time (a mutex around the engine): a launch already
//! covers every table of the batch, and the GPU is far faster than the QUIC path that feeds it.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use parking_lot::Mutex;

use embtune_protocol::{ShardRows, WorkerAssignment};
use embtune_workloads::{PoolingMode, QueryBatch};

use super::{GpuEngine, GpuError, GpuInfo, held_rows, local_row};
use crate::engine::{CoreStats, DeployReport, EngineError, LookupOutput};

/// One deployed table: where it sits on the device and which of its rows it holds.
struct Slot {
    slot: usize,
    name: String,
    rows: u64,
    dim: u32,
    held: Option<ShardRows>,
}

struct Inner {
    engine: GpuEngine,
    slots: Vec<Slot>,
    by_table: HashMap<u16, usize>,
    /// The deployed assignment's plan id.
    epoch: u64,
}

/// A device serving look-up requests.
pub struct GpuService {
    info: GpuInfo,
    inner: Mutex<Inner>,
    in_flight: AtomicU64,
    busy_ns: AtomicU64,
    tasks: AtomicU64,
    lookups: AtomicU64,
}

fn deploy_error(e: GpuError) -> EngineError {
    EngineError::Deploy(e.to_string())
}

impl GpuService {
    /// Opens device `ordinal`.
    pub fn open(ordinal: usize) -> Result<GpuService, GpuError> {
        let engine = GpuEngine::new(ordinal)?;
        Ok(GpuService {
            info: engine.info().clone(),
            inner: Mutex::new(Inner { engine, slots: Vec::new(), by_table: HashMap::new(), epoch: 0 }),
            in_flight: AtomicU64::new(0),
            busy_ns: AtomicU64::new(0),
            tasks: AtomicU64::new(0),
            lookups: AtomicU64::new(0),
        })
    }

    pub fn info(&self) -> &GpuInfo {
        &self.info
    }

    /// Replaces the device's tables with a worker's part of a plan. The device sums; mean
    /// pooling is the coordinator's, after it has added every shard's partial sums.
    pub fn deploy(&self, a: &WorkerAssignment) -> Result<DeployReport, EngineError> {
        let mut tables = a.tables.clone();
        for t in &mut tables {
            t.spec.mode = PoolingMode::Sum;
        }
        let held = tables.iter().map(held_rows).collect::<Result<Vec<_>, _>>().map_err(deploy_error)?;
        let mut inner = self.inner.lock();
        // Forget the old deployment first: a failed one leaves nothing half-served.
        inner.slots.clear();
        inner.by_table.clear();
        let r = inner.engine.deploy(&tables).map_err(deploy_error)?;
        inner.epoch = a.plan_id;
        for (i, (t, held)) in tables.iter().zip(held).enumerate() {
            inner.by_table.insert(t.table, i);
            inner.slots.push(Slot { slot: i, name: t.spec.name.clone(), rows: t.spec.rows, dim: t.spec.dim, held });
        }
        Ok(DeployReport {
            tables: r.tables,
            pieces: r.tables,
            bytes: r.bytes,
            seconds: r.seconds,
            ..DeployReport::default()
        })
    }

    /// Requests waiting for or using the device.
    pub fn queue_len(&self) -> usize {
        self.in_flight.load(Ordering::Relaxed) as usize
    }

    /// The device's counters, as one core's.
    pub fn stats(&self) -> Vec<CoreStats> {
        vec![CoreStats {
            core: 0,
            cpu: self.info.ordinal,
            busy_ns: self.busy_ns.load(Ordering::Relaxed),
            tasks: self.tasks.load(Ordering::Relaxed),
            lookups: self.lookups.load(Ordering::Relaxed),
            ..CoreStats::default()
        }]
    }

    /// Pools `batch`, whose k-th table is model table `tables[k]`, into partial sums.
    /// `epoch` is the plan the request was routed by (0: any), checked under the same lock as
    /// the tables it reads.
    pub fn lookup(&self, batch: &QueryBatch, tables: &[u16], epoch: u64) -> Result<LookupOutput, EngineError> {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        let r = self.lookup_inner(batch, tables, epoch);
        self.in_flight.fetch_sub(1, Ordering::Relaxed);
        r
    }

    fn lookup_inner(&self, batch: &QueryBatch, tables: &[u16], epoch: u64) -> Result<LookupOutput, EngineError> {
        if tables.len() != batch.num_tables as usize {
            return Err(EngineError::BadRequest(format!(
                "{} table ids for a batch of {} tables",
                tables.len(),
                batch.num_tables
            )));
        }
        batch.check_layout().map_err(|e| EngineError::BadRequest(e.to_string()))?;
        let mut inner = self.inner.lock();
        if epoch != 0 && epoch != inner.epoch {
            return Err(EngineError::StalePlan { asked: epoch, held: inner.epoch });
        }
        // Busy time starts when the device is ours, not while waiting for it.
        let t0 = Instant::now();
        let n = inner.slots.len();
        let b = batch.batch_size as usize;
        // Which request column fills each device slot (`None`: empty bags).
        let mut source: Vec<Option<usize>> = vec![None; n];
        for (k, &t) in tables.iter().enumerate() {
            let &slot = inner.by_table.get(&t).ok_or(EngineError::UnknownTable { table: t })?;
            if source[slot].replace(k).is_some() {
                return Err(EngineError::BadRequest(format!("table {t} appears twice in the request")));
            }
        }
        // The device batch: every slot in order, ids translated to the shard's local rows.
        let mut ids = Vec::with_capacity(batch.ids.len());
        let mut offsets = Vec::with_capacity(n * b + 1);
        for (slot, src) in inner.slots.iter().zip(&source) {
            match *src {
                None => offsets.extend(std::iter::repeat_n(ids.len() as u32, b)),
                Some(k) => {
                    for s in 0..b {
                        offsets.push(ids.len() as u32);
                        let (lo, hi) = (batch.offsets[k * b + s] as usize, batch.offsets[k * b + s + 1] as usize);
                        for &id in &batch.ids[lo..hi] {
                            if id as u64 >= slot.rows {
                                let (table, name, rows) = (tables[k], slot.name.clone(), slot.rows);
                                return Err(EngineError::RowOutOfRange { table, name, id, rows });
                            }
                            let local = local_row(slot.held, id).ok_or_else(|| EngineError::NotHeld {
                                table: tables[k],
                                name: slot.name.clone(),
                                id,
                            })?;
                            ids.push(local);
                        }
                    }
                }
            }
        }
        offsets.push(ids.len() as u32);
        let device_batch = QueryBatch { batch_size: batch.batch_size, num_tables: n as u32, offsets, ids };
        let out = inner.engine.lookup(&device_batch).map_err(|e| EngineError::BadRequest(e.to_string()))?;
        // The requested tables' columns, in request order.
        let mut columns = Vec::with_capacity(tables.len());
        let mut width = 0usize;
        for &t in tables {
            columns.push(width);
            width += inner.slots[inner.by_table[&t]].dim as usize;
        }
        let mut pooled = Vec::with_capacity(b * width);
        for s in 0..b {
            let row = &out.pooled[s * out.width..(s + 1) * out.width];
            for &t in tables {
                let slot = &inner.slots[inner.by_table[&t]];
                let c = out.columns[slot.slot];
                pooled.extend_from_slice(&row[c..c + slot.dim as usize]);
            }
        }
        drop(inner);
        let engine_time = t0.elapsed();
        self.busy_ns.fetch_add(engine_time.as_nanos() as u64, Ordering::Relaxed);
        self.tasks.fetch_add(1, Ordering::Relaxed);
        self.lookups.fetch_add(batch.ids.len() as u64, Ordering::Relaxed);
        Ok(LookupOutput { pooled, width, columns, engine_time })
    }
}
