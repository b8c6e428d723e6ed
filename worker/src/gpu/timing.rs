//! Timing on the device with CUDA events: a launch's kernel time, launches back to back, and
//! the device's copy bandwidth.

use cudarc::driver::{CudaStream, result, sys};

use super::driver::DevBuf;
use super::{DeviceBatch, GpuEngine, GpuError};

/// A CUDA event, destroyed on drop.
pub(super) struct Event(sys::CUevent);

impl Event {
    pub(super) fn new() -> Result<Event, GpuError> {
        Ok(Event(result::event::create(sys::CUevent_flags::CU_EVENT_DEFAULT)?))
    }
    pub(super) fn record(&self, stream: &CudaStream) -> Result<(), GpuError> {
        // SAFETY: a live event and stream.
        unsafe { result::event::record(self.0, stream.cu_stream()) }?;
        Ok(())
    }
    pub(super) fn ms_since(&self, start: &Event) -> Result<f32, GpuError> {
        // SAFETY: both recorded on the same stream and completed (callers synchronise).
        Ok(unsafe { result::event::elapsed(start.0, self.0) }?)
    }
}

impl Drop for Event {
    fn drop(&mut self) {
        // SAFETY: created by event::create.
        unsafe {
            let _ = result::event::destroy(self.0);
        }
    }
}

impl GpuEngine {
    /// Times `reps` launches after `warmup` unmeasured ones, rotating through `batches`
    /// (launch i reads batches[i % len]). Returns each launch's milliseconds from CUDA events
    /// recorded between consecutive launches.
    pub fn time(&mut self, batches: &[DeviceBatch], reps: usize, warmup: usize) -> Result<Vec<f32>, GpuError> {
        if batches.is_empty() {
            return Err(GpuError::Request("no batches to time".into()));
        }
        self.ctx.bind_to_thread()?;
        for i in 0..warmup {
            self.launch(&batches[i % batches.len()])?;
        }
        let events: Vec<Event> = (0..=reps).map(|_| Event::new()).collect::<Result<_, _>>()?;
        events[0].record(&self.stream)?;
        for i in 0..reps {
            self.launch(&batches[(warmup + i) % batches.len()])?;
            events[i + 1].record(&self.stream)?;
        }
        self.stream.synchronize()?;
        (0..reps).map(|i| events[i + 1].ms_since(&events[i])).collect()
    }

    /// The device's copy bandwidth: a `bytes` device-to-device copy timed `reps` times (after
    /// one warm-up), median, counting bytes read and written.
    pub fn copy_bandwidth(&mut self, bytes: usize, reps: usize) -> Result<f64, GpuError> {
        self.ctx.bind_to_thread()?;
        let (a, b) = (DevBuf::new(bytes)?, DevBuf::new(bytes)?);
        // SAFETY: both buffers hold `bytes` bytes; contents do not matter, but initialise them.
        unsafe {
            result::memset_d8_async(a.ptr, 0x5a, bytes, self.stream.cu_stream())?;
            result::memcpy_dtod_async(b.ptr, a.ptr, bytes, self.stream.cu_stream())?;
        }
        let events: Vec<Event> = (0..=reps).map(|_| Event::new()).collect::<Result<_, _>>()?;
        events[0].record(&self.stream)?;
        for (i, e) in events.iter().enumerate().skip(1) {
            // SAFETY: as above.
            unsafe {
                let (src, dst) = if i % 2 == 0 { (a.ptr, b.ptr) } else { (b.ptr, a.ptr) };
                result::memcpy_dtod_async(dst, src, bytes, self.stream.cu_stream())?;
            }
            e.record(&self.stream)?;
        }
        self.stream.synchronize()?;
        let mut ms: Vec<f32> = (0..reps).map(|i| events[i + 1].ms_since(&events[i])).collect::<Result<_, _>>()?;
        ms.sort_by(f32::total_cmp);
        let median = ms[ms.len() / 2] as f64;
        Ok(2.0 * bytes as f64 / (median / 1e3))
    }
}
