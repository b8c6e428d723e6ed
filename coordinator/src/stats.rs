//! Live statistics of the queries a coordinator sees: those it relays one by one, and the
//! rounds its load generators run straight to the workers, reported whole. Cumulative counters
//! and latency histogram (for Prometheus), and a rolling window (for the dashboard's live
//! figures).

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};

/// Upper bounds of the exported latency histogram's buckets, microseconds.
pub const BUCKETS_US: [u64; 16] = [
    50, 100, 200, 400, 800, 1_600, 3_200, 6_400, 12_800, 25_600, 51_200, 102_400, 204_800, 409_600, 819_200, 1_638_400,
];

/// How far back the live figures look.
pub const WINDOW: Duration = Duration::from_secs(10);

struct Inner {
    queries: u64,
    errors: u64,
    lookups: u64,
    samples: u64,
    latency_sum_us: u64,
    wire_bytes: u64,
    all: Histogram<u64>,
    /// One histogram per second of the window, newest last.
    window: VecDeque<(Instant, Histogram<u64>, u64)>,
}

/// Query statistics, shared by the serving tasks.
pub struct QueryStats {
    inner: Mutex<Inner>,
}

/// A snapshot for reports.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct QuerySnapshot {
    pub queries: u64,
    pub errors: u64,
    pub lookups: u64,
    pub samples: u64,
    pub latency_sum_us: u64,
    /// Bytes of look-ups and pooled replies on the network, for queries whose bytes are known.
    pub wire_bytes: u64,
    /// Cumulative counts of queries at most `BUCKETS_US[i]` microseconds, then +Inf.
    pub buckets: Vec<(u64, u64)>,
    /// Over the last [`WINDOW`]: queries per second, samples per second, p50 and p99.
    pub window_qps: f64,
    pub window_samples_per_s: f64,
    pub window_p50_us: f64,
    pub window_p99_us: f64,
    /// The window's latency histogram: (bucket upper bound, count in the bucket).
    pub window_histogram: Vec<(u64, u64)>,
}

impl Default for QueryStats {
    fn default() -> Self {
        QueryStats {
            inner: Mutex::new(Inner {
                queries: 0,
                errors: 0,
                lookups: 0,
                samples: 0,
                latency_sum_us: 0,
                wire_bytes: 0,
                all: Histogram::new_with_bounds(1, 3_600_000_000, 2).unwrap(),
                window: VecDeque::new(),
            }),
        }
    }
}

impl QueryStats {
    /// Records a served query.
    pub fn served(&self, latency: Duration, samples: u64, lookups: u64) {
        let us = latency.as_micros().max(1) as u64;
        let now = Instant::now();
        let mut s = self.inner.lock();
        s.queries += 1;
        s.samples += samples;
        s.lookups += lookups;
        s.latency_sum_us += us;
        s.all.saturating_record(us);
        let fresh = s.window.back().is_none_or(|(t, _, _)| now.duration_since(*t) >= Duration::from_secs(1));
        if fresh {
            s.window.push_back((now, Histogram::new_with_bounds(1, 3_600_000_000, 2).unwrap(), 0));
        }
        let (_, h, n) = s.window.back_mut().unwrap();
        h.saturating_record(us);
        *n += samples;
        while s.window.front().is_some_and(|(t, _, _)| now.duration_since(*t) > WINDOW) {
            s.window.pop_front();
        }
    }

    /// Records a load round run straight to the workers: `latency` holds its queries'
    /// latencies in microseconds.
    pub fn served_round(&self, latency: &Histogram<u64>, samples: u64, lookups: u64, errors: u64, wire_bytes: u64) {
        let now = Instant::now();
        let mut s = self.inner.lock();
        s.queries += latency.len();
        s.errors += errors;
        s.samples += samples;
        s.lookups += lookups;
        s.wire_bytes += wire_bytes;
        s.latency_sum_us += (latency.mean() * latency.len() as f64) as u64;
        let _ = s.all.add(latency);
        let mut h = Histogram::new_with_bounds(1, 3_600_000_000, 2).unwrap();
        let _ = h.add(latency);
        s.window.push_back((now, h, samples));
        while s.window.front().is_some_and(|(t, _, _)| now.duration_since(*t) > WINDOW) {
            s.window.pop_front();
        }
    }

    pub fn failed(&self) {
        self.inner.lock().errors += 1;
    }

    pub fn snapshot(&self) -> QuerySnapshot {
        let now = Instant::now();
        let s = self.inner.lock();
        let mut w = Histogram::<u64>::new_with_bounds(1, 3_600_000_000, 2).unwrap();
        let mut samples = 0;
        let mut start = now;
        for (t, h, n) in s.window.iter().filter(|(t, _, _)| now.duration_since(*t) <= WINDOW) {
            let _ = w.add(h);
            samples += n;
            start = start.min(*t);
        }
        let span = now.duration_since(start).as_secs_f64().max(1.0);
        let cumulative = |h: &Histogram<u64>| -> Vec<(u64, u64)> {
            BUCKETS_US.iter().map(|&b| (b, h.count_between(0, b))).collect()
        };
        let mut per_bucket = Vec::new();
        let mut prev = 0;
        for (b, c) in cumulative(&w) {
            per_bucket.push((b, c - prev));
            prev = c;
        }
        QuerySnapshot {
            queries: s.queries,
            errors: s.errors,
            lookups: s.lookups,
            samples: s.samples,
            latency_sum_us: s.latency_sum_us,
            wire_bytes: s.wire_bytes,
            buckets: cumulative(&s.all),
            window_qps: w.len() as f64 / span,
            window_samples_per_s: samples as f64 / span,
            window_p50_us: if w.is_empty() { 0.0 } else { w.value_at_quantile(0.5) as f64 },
            window_p99_us: if w.is_empty() { 0.0 } else { w.value_at_quantile(0.99) as f64 },
            window_histogram: per_bucket,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_and_buckets_add_up() {
        let s = QueryStats::default();
        for us in [30u64, 90, 90, 700, 5000] {
            s.served(Duration::from_micros(us), 2, 10);
        }
        s.failed();
        let snap = s.snapshot();
        assert_eq!((snap.queries, snap.errors, snap.samples, snap.lookups), (5, 1, 10, 50));
        assert_eq!(snap.buckets[0], (50, 1));
        assert_eq!(snap.buckets[1], (100, 3));
        assert_eq!(snap.buckets.last().unwrap().1, 5);
        assert_eq!(snap.window_histogram.iter().map(|b| b.1).sum::<u64>(), 5);
        assert!(snap.window_p99_us >= 4900.0);

        let mut round = Histogram::<u64>::new_with_bounds(1, 3_600_000_000, 2).unwrap();
        for us in [60u64, 60, 60] {
            round.record(us).unwrap();
        }
        s.served_round(&round, 30, 300, 2, 9000);
        let snap = s.snapshot();
        assert_eq!((snap.queries, snap.errors, snap.samples, snap.wire_bytes), (8, 3, 40, 9000));
        assert_eq!(snap.buckets[1], (100, 6));
        assert_eq!(snap.window_histogram.iter().map(|b| b.1).sum::<u64>(), 8);
    }
}
