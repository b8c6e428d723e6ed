//! What a worker's look-ups looked like since the coordinator last asked: the input of the
//! coordinator's live re-planner (`Request::TakeTraffic`).
//!
//! Two kinds of figures, at two costs:
//!
//! - Exact counts, per table: ids looked up and samples (bags), for every request served for
//!   the current plan. They cost O(tables) per request under one short lock, on the thread that
//!   answers the request, and no allocation once the table vector has grown to the largest
//!   table index.
//! - The hottest rows, per table: a frequent-items summary ([`FrequentItems`]) over the ids of
//!   one request in `sample_every`. Counting ids costs time in proportion to the ids, so it is
//!   never done on the async threads or the engine's core threads: a sampled request's batch
//!   (already in an `Arc`, so nothing is copied) goes over a bounded channel to one dedicated
//!   thread, and when that thread falls behind, samples are dropped rather than queued. Memory
//!   is bounded by the channel's capacity and by `2 * HOT_CAPACITY` entries per table.
//!
//! A window ends when the coordinator takes it or when a new plan is deployed (traffic of one
//! plan would mislead the re-planning of another). Each window has a generation number; a
//! sample carries the generation it was recorded in, and the counting thread drops samples of
//! a window that has already been taken, so that no window's summaries mix in another's ids.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::Instant;

use crossbeam_channel::{Receiver, Sender, TrySendError};
use parking_lot::Mutex;

use embtune_protocol::wire::{TableTraffic, TrafficReply};
use embtune_workloads::QueryBatch;

/// Entries a frequent-items summary keeps per table (its `K`): a reported count is at most
/// `sampled / HOT_CAPACITY` below the true one, and a take reports this many rows per table.
pub const HOT_CAPACITY: usize = 1024;

/// Sampled requests waiting for the counting thread at most; past that they are dropped.
const SAMPLE_QUEUE: usize = 8;

/// Ids the counting thread inserts under one hold of the summaries' lock: a take waits for at
/// most this many inserts, however large the sampled request.
const CHUNK: usize = 8192;

/// A Misra-Gries frequent-items summary with batched decrements.
///
/// It keeps at most `2K` counters. When an id without a counter arrives and all `2K` are in
/// use, the `(K+1)`-th largest count `c` is subtracted from every counter and the counters
/// left at zero are dropped, which frees at least `K` of them; then the id is inserted. Each
/// such step removes `c` from at least `K + 1` counters, so over `N` inserts the steps
/// subtract at most `N / (K + 1)` from any one id. Hence every count is at most the true
/// count and at least the true count minus `N / (K + 1)`, and every id seen more than
/// `N / (K + 1)` times has a counter. Batching the decrements makes an insert O(1) amortised
/// (one selection over `2K` counts per `K` new ids) where the classic one-by-one decrement
/// costs O(K).
#[derive(Clone, Debug)]
pub struct FrequentItems {
    capacity: usize,
    /// Fx-hashed: SipHash made the summary cost as much per id as the gather itself
    /// (`cargo bench -p embtune-worker --bench traffic`).
    counts: rustc_hash::FxHashMap<u32, u64>,
    /// Ids inserted since the summary was created.
    total: u64,
    /// The sum of every decrement so far: a kept counter is at most this below its id's true
    /// count.
    subtracted: u64,
    /// Reused by the decrement step, so that it does not allocate each time.
    scratch: Vec<u64>,
}

impl FrequentItems {
    /// A summary keeping `capacity` (`K`, at least 1) ids' counts with the guarantee above.
    pub fn new(capacity: usize) -> FrequentItems {
        FrequentItems {
            capacity: capacity.max(1),
            counts: rustc_hash::FxHashMap::default(),
            total: 0,
            subtracted: 0,
            scratch: Vec::new(),
        }
    }

    /// Counts one occurrence of `id`.
    pub fn insert(&mut self, id: u32) {
        self.total += 1;
        if let Some(c) = self.counts.get_mut(&id) {
            *c += 1;
            return;
        }
        if self.counts.len() >= 2 * self.capacity {
            self.decrement();
        }
        self.counts.insert(id, 1);
    }

    /// Subtracts the `(K+1)`-th largest count from every counter and drops those left at zero.
    fn decrement(&mut self) {
        let k = self.capacity;
        self.scratch.clear();
        self.scratch.extend(self.counts.values().copied());
        // Descending order: index k holds the (K+1)-th largest count.
        let (_, &mut c, _) = self.scratch.select_nth_unstable_by(k, |a, b| b.cmp(a));
        // Counters below `c` hold less than the decrement: they drop, as those at `c` do.
        self.counts.retain(|_, v| {
            *v = v.saturating_sub(c);
            *v > 0
        });
        self.subtracted += c;
    }

    /// [`FrequentItems::top`] with each count raised by half the decrements so far: a kept
    /// id's true count lies between its counter and the counter plus every decrement, and the
    /// middle of that range is the unbiased guess. On a Zipf table the raw counters understate
    /// the head (by a fifth of its share on 200,000 rows), which would make the live traffic
    /// look less skewed than it is; the cost model reads these.
    pub fn estimated_top(&self, n: usize) -> Vec<(u32, u64)> {
        let lift = self.subtracted / 2;
        self.top(n).into_iter().map(|(id, c)| (id, (c + lift).min(self.total))).collect()
    }

    /// Ids inserted so far: the mass the error bound `total / K` is relative to.
    pub fn total(&self) -> u64 {
        self.total
    }

    /// Ids with a counter now.
    pub fn len(&self) -> usize {
        self.counts.len()
    }

    pub fn is_empty(&self) -> bool {
        self.counts.is_empty()
    }

    /// The `n` ids with the largest counts, most frequent first (ties by smaller id, so that
    /// the answer does not depend on the hash map's order).
    pub fn top(&self, n: usize) -> Vec<(u32, u64)> {
        let mut v: Vec<(u32, u64)> = self.counts.iter().map(|(&id, &c)| (id, c)).collect();
        let order = |a: &(u32, u64), b: &(u32, u64)| b.1.cmp(&a.1).then(a.0.cmp(&b.0));
        if n < v.len() {
            v.select_nth_unstable_by(n, order);
            v.truncate(n);
        }
        v.sort_unstable_by(order);
        v
    }
}

/// Exact counts of one table over a window.
#[derive(Clone, Copy, Debug, Default)]
struct TableCount {
    seen: bool,
    lookups: u64,
    samples: u64,
}

/// The exact counts of the open window; the hot path's lock.
struct Window {
    /// The plan the window counts: requests for any other are left out.
    plan_id: u64,
    generation: u64,
    started: Instant,
    requests: u64,
    /// Indexed by model-spec table index.
    tables: Vec<TableCount>,
}

impl Window {
    fn new(plan_id: u64, generation: u64) -> Window {
        Window { plan_id, generation, started: Instant::now(), requests: 0, tables: Vec::new() }
    }
}

/// The frequent-items summaries of the open window, owned by the counting thread between
/// takes.
struct Sketches {
    generation: u64,
    /// Indexed by model-spec table index; `None` for tables no sample has named.
    tables: Vec<Option<FrequentItems>>,
}

impl Sketches {
    fn new(generation: u64) -> Sketches {
        Sketches { generation, tables: Vec::new() }
    }
}

/// A sampled request, on its way to the counting thread.
struct Sample {
    generation: u64,
    tables: Arc<[u16]>,
    batch: Arc<QueryBatch>,
}

/// A worker's traffic statistics: the exact per-table counts, the sampling of requests for the
/// hot-row summaries, and the thread that maintains those summaries.
pub struct TrafficStats {
    /// One request in this many is sampled; 0 turns the summaries off (the exact counts stay).
    sample_every: u32,
    window: Mutex<Window>,
    sketches: Arc<Mutex<Sketches>>,
    /// Requests seen by [`TrafficStats::record`], which picks the sampled ones by it.
    tick: AtomicU64,
    /// Samples sent and not yet counted: lets tests wait for the counting thread.
    pending: Arc<AtomicU64>,
    /// Samples dropped because the counting thread was behind, since the worker started.
    dropped: AtomicU64,
    /// `None` when sampling is off; dropping it stops the counting thread.
    tx: Option<Sender<Sample>>,
    thread: Option<JoinHandle<()>>,
}

impl TrafficStats {
    /// Starts counting for no plan (0), with one request in `sample_every` sampled, and spawns
    /// the counting thread `embtune-traffic` unless sampling is off.
    pub fn start(sample_every: u32) -> TrafficStats {
        let sketches = Arc::new(Mutex::new(Sketches::new(0)));
        let pending = Arc::new(AtomicU64::new(0));
        let (tx, thread) = if sample_every > 0 {
            let (tx, rx) = crossbeam_channel::bounded(SAMPLE_QUEUE);
            let (s, p) = (sketches.clone(), pending.clone());
            let thread = std::thread::Builder::new()
                .name("embtune-traffic".into())
                .spawn(move || count_samples(rx, s, p))
                .expect("spawning the traffic thread");
            (Some(tx), Some(thread))
        } else {
            (None, None)
        };
        TrafficStats {
            sample_every,
            window: Mutex::new(Window::new(0, 0)),
            sketches,
            tick: AtomicU64::new(0),
            pending,
            dropped: AtomicU64::new(0),
            tx,
            thread,
        }
    }

    pub fn sample_every(&self) -> u32 {
        self.sample_every
    }

    /// Samples dropped because the counting thread was behind, since the worker started.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// Counts a request served for plan `plan_id`, whose k-th table is model table
    /// `tables[k]`. Requests for another plan than the window's (a previous plan still served
    /// while clients switch) are not counted. Call it only after the request succeeded.
    pub fn record(&self, plan_id: u64, tables: &Arc<[u16]>, batch: &Arc<QueryBatch>) {
        let generation = {
            let mut w = self.window.lock();
            if plan_id != w.plan_id {
                return;
            }
            w.requests += 1;
            let bs = batch.batch_size as usize;
            // The largest index first, so that the vector grows at most once per request.
            if let Some(&max) = tables.iter().max()
                && w.tables.len() <= max as usize
            {
                w.tables.resize(max as usize + 1, TableCount::default());
            }
            for (slot, &t) in tables.iter().enumerate() {
                // Offsets are table-major: slot k's bags span offsets[k*bs ..= (k+1)*bs].
                let ids = batch.offsets[(slot + 1) * bs] - batch.offsets[slot * bs];
                let c = &mut w.tables[t as usize];
                c.seen = true;
                c.lookups += ids as u64;
                c.samples += bs as u64;
            }
            w.generation
        };
        let Some(tx) = &self.tx else { return };
        if !self.tick.fetch_add(1, Ordering::Relaxed).is_multiple_of(self.sample_every as u64) {
            return;
        }
        // Counted before sending, so that the counting thread never sees it go below zero.
        self.pending.fetch_add(1, Ordering::Relaxed);
        let sample = Sample { generation, tables: tables.clone(), batch: batch.clone() };
        if let Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) = tx.try_send(sample) {
            self.pending.fetch_sub(1, Ordering::Relaxed);
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Ends the window and opens one for plan `plan_id`, discarding what was counted: a new
    /// deployment starts from nothing.
    pub fn reset(&self, plan_id: u64) {
        self.end_window(plan_id);
    }

    /// Ends the window and returns what it counted (for its plan, which the next window counts
    /// too). `cores` is left empty: the engine's counters are the caller's.
    pub fn take(&self) -> TrafficReply {
        let plan_id = self.window.lock().plan_id;
        let (window, sketches, ended) = self.end_window(plan_id);
        let window_ns = ended.duration_since(window.started).as_nanos() as u64;
        let n = window.tables.len().max(sketches.tables.len());
        let mut tables = Vec::new();
        for t in 0..n {
            let count = window.tables.get(t).copied().unwrap_or_default();
            let sketch = sketches.tables.get(t).and_then(Option::as_ref);
            if !count.seen && sketch.is_none() {
                continue;
            }
            tables.push(TableTraffic {
                table: t as u16,
                lookups: count.lookups,
                samples: count.samples,
                sampled: sketch.map_or(0, FrequentItems::total),
                hot: sketch.map_or_else(Vec::new, |s| s.estimated_top(HOT_CAPACITY)),
            });
        }
        TrafficReply {
            plan_id: window.plan_id,
            window_ns,
            sample_every: self.sample_every,
            requests: window.requests,
            tables,
            cores: Vec::new(),
        }
    }

    /// Swaps in a fresh window for `plan_id` and fresh summaries, and returns the old ones and
    /// when the window ended.
    ///
    /// The summaries' lock is taken first and held across the swap of the window: the
    /// counting thread then cannot count a sample of the new window into the old summaries
    /// (it waits, and finds the new generation), and samples of the old window that it meets
    /// afterwards are dropped. The hot path never takes the summaries' lock, and holds the
    /// window's only for the swap, so no request waits for the counting thread.
    fn end_window(&self, plan_id: u64) -> (Window, Sketches, Instant) {
        let mut sketches = self.sketches.lock();
        let (old, ended) = {
            let mut w = self.window.lock();
            let next = Window::new(plan_id, w.generation + 1);
            let ended = next.started;
            (std::mem::replace(&mut *w, next), ended)
        };
        let old_sketches = std::mem::replace(&mut *sketches, Sketches::new(old.generation + 1));
        (old, old_sketches, ended)
    }

    /// Waits until the counting thread has counted every sample sent so far (tests).
    #[cfg(test)]
    fn settle(&self) {
        while self.pending.load(Ordering::Acquire) > 0 {
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
    }
}

impl Drop for TrafficStats {
    fn drop(&mut self) {
        // Closing the channel ends the counting thread after the sample in hand.
        self.tx = None;
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The counting thread: inserts each sample's ids into its tables' summaries, a chunk at a
/// time under the summaries' lock, until the channel closes.
fn count_samples(rx: Receiver<Sample>, sketches: Arc<Mutex<Sketches>>, pending: Arc<AtomicU64>) {
    for s in rx {
        let bs = s.batch.batch_size as usize;
        'sample: for (slot, &t) in s.tables.iter().enumerate() {
            let lo = s.batch.offsets[slot * bs] as usize;
            let hi = s.batch.offsets[(slot + 1) * bs] as usize;
            for chunk in s.batch.ids[lo..hi].chunks(CHUNK) {
                let mut sk = sketches.lock();
                if sk.generation != s.generation {
                    // The window this sample belongs to was taken: its ids would mislead the
                    // next one.
                    break 'sample;
                }
                if sk.tables.len() <= t as usize {
                    sk.tables.resize_with(t as usize + 1, || None);
                }
                let f = sk.tables[t as usize].get_or_insert_with(|| FrequentItems::new(HOT_CAPACITY));
                for &id in chunk {
                    f.insert(id);
                }
            }
        }
        // The batch is freed here too, off the request path.
        drop(s);
        pending.fetch_sub(1, Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use proptest::prelude::*;

    use super::*;

    /// Exact counts of a sequence.
    fn exact(ids: &[u32]) -> HashMap<u32, u64> {
        let mut m = HashMap::new();
        for &id in ids {
            *m.entry(id).or_insert(0) += 1;
        }
        m
    }

    /// Checks the summary's guarantee against exact counts.
    fn check_bounds(f: &FrequentItems, ids: &[u32]) -> Result<(), TestCaseError> {
        let truth = exact(ids);
        let total = ids.len() as u64;
        let k = f.capacity as u64;
        prop_assert_eq!(f.total(), total);
        prop_assert!(f.len() <= 2 * f.capacity);
        let reported: HashMap<u32, u64> = f.top(usize::MAX).into_iter().collect();
        for (&id, &c) in &reported {
            prop_assert!(c <= truth[&id], "id {} reported {} but seen {}", id, c, truth[&id]);
        }
        for (&id, &t) in &truth {
            let r = reported.get(&id).copied().unwrap_or(0);
            prop_assert!(t - r <= total / k + 1, "id {} seen {} reported {} (total {}, K {})", id, t, r, total, k);
            if t > total / k {
                prop_assert!(reported.contains_key(&id), "id {} seen {} > {}/{} is missing", id, t, total, k);
            }
        }
        Ok(())
    }

    proptest! {
        /// Skewed and uniform streams, small capacities so that the decrements run often.
        #[test]
        fn frequent_items_never_overcount_and_undercount_by_at_most_total_over_k(
            k in 1usize..40,
            ids in proptest::collection::vec(prop_oneof![0u32..8, 0u32..300, any::<u32>()], 0..3000),
        ) {
            let mut f = FrequentItems::new(k);
            for &id in &ids {
                f.insert(id);
            }
            check_bounds(&f, &ids)?;
            // The estimate stays within the range the counters guarantee.
            let raw: HashMap<u32, u64> = f.top(usize::MAX).into_iter().collect();
            for (id, e) in f.estimated_top(usize::MAX) {
                prop_assert!(e >= raw[&id] && e <= raw[&id] + f.subtracted, "id {} estimate {}", id, e);
                prop_assert!(e <= f.total());
            }
        }
    }

    #[test]
    fn the_estimate_recovers_most_of_a_zipf_heads_share_that_raw_counters_lose() {
        // Zipf(1.05) over 200,000 ranks, drawn by inversion from a fixed stream: the share of
        // the hottest 1,024 rows, exactly, by the raw counters and by the estimate.
        let n = 200_000usize;
        let weights: Vec<f64> = (1..=n).map(|r| (r as f64).powf(-1.05)).collect();
        let sum: f64 = weights.iter().sum();
        let mut cdf = Vec::with_capacity(n);
        let mut acc = 0.0;
        for w in &weights {
            acc += w / sum;
            cdf.push(acc);
        }
        let mut x = 0x2545_f491_4f6c_dd1d_u64;
        let ids: Vec<u32> = (0..400_000)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                let u = (x >> 11) as f64 / (1u64 << 53) as f64;
                cdf.partition_point(|&c| c < u).min(n - 1) as u32
            })
            .collect();
        let mut f = FrequentItems::new(HOT_CAPACITY);
        for &id in &ids {
            f.insert(id);
        }
        let mut truth: Vec<u64> = exact(&ids).into_values().collect();
        truth.sort_unstable_by(|a, b| b.cmp(a));
        let share = |v: &[u64]| v.iter().take(HOT_CAPACITY).sum::<u64>() as f64 / ids.len() as f64;
        let exact_share = share(&truth);
        let raw = share(&f.top(HOT_CAPACITY).into_iter().map(|(_, c)| c).collect::<Vec<_>>());
        let est = share(&f.estimated_top(HOT_CAPACITY).into_iter().map(|(_, c)| c).collect::<Vec<_>>());
        assert!(
            (est - exact_share).abs() < (raw - exact_share).abs() / 2.0,
            "exact {exact_share:.3}, raw {raw:.3}, estimated {est:.3}"
        );
    }

    #[test]
    fn top_is_sorted_by_count_then_id_and_truncated() {
        let mut f = FrequentItems::new(16);
        for (id, n) in [(5u32, 3), (2, 7), (9, 3), (1, 1)] {
            for _ in 0..n {
                f.insert(id);
            }
        }
        assert_eq!(f.top(10), vec![(2, 7), (5, 3), (9, 3), (1, 1)]);
        assert_eq!(f.top(2), vec![(2, 7), (5, 3)]);
        assert_eq!(f.top(0), vec![]);
    }

    #[test]
    fn a_decrement_drops_the_counters_below_the_k_plus_first_count() {
        // K = 2: four counters {1: 5, 2: 4, 3: 3, 4: 1} are full, so id 5 first subtracts the
        // third largest count, 3, dropping ids 3 and 4 (the latter held less than that).
        let mut f = FrequentItems::new(2);
        let ids: Vec<u32> = [(1u32, 5), (2, 4), (3, 3), (4, 1), (5, 1)]
            .into_iter()
            .flat_map(|(id, n)| std::iter::repeat_n(id, n))
            .collect();
        for &id in &ids {
            f.insert(id);
        }
        assert_eq!(f.top(10), vec![(1, 2), (2, 1), (5, 1)]);
        check_bounds(&f, &ids).unwrap();
    }

    #[test]
    fn a_hot_row_survives_a_flood_of_distinct_ids() {
        let k = 8;
        let mut f = FrequentItems::new(k);
        let mut ids = Vec::new();
        for i in 0..10_000u32 {
            ids.push(i + 100);
            if i % 4 == 0 {
                ids.push(7);
            }
        }
        for &id in &ids {
            f.insert(id);
        }
        assert!(f.len() <= 2 * k);
        assert_eq!(f.top(1)[0].0, 7);
        check_bounds(&f, &ids).unwrap();
    }

    /// A batch over `tables.len()` tables whose bag `b` of table `k` is `bags[k][b]`.
    fn batch(bags: &[Vec<Vec<u32>>]) -> Arc<QueryBatch> {
        Arc::new(QueryBatch::from_bags(bags))
    }

    #[test]
    fn exact_counts_cover_every_request_of_the_plan_and_takes_reset_them() {
        let t = TrafficStats::start(0);
        t.reset(3);
        let tables: Arc<[u16]> = Arc::from(vec![4u16, 1]);
        let b = batch(&[vec![vec![1, 2], vec![3]], vec![vec![], vec![5, 5, 5]]]);
        t.record(3, &tables, &b);
        t.record(3, &tables, &b);
        // Another plan's request (a previous plan still served during a switch) is left out.
        t.record(2, &tables, &b);
        let r = t.take();
        assert_eq!((r.plan_id, r.requests, r.sample_every), (3, 2, 0));
        let by: Vec<(u16, u64, u64, u64)> =
            r.tables.iter().map(|x| (x.table, x.lookups, x.samples, x.sampled)).collect();
        assert_eq!(by, vec![(1, 6, 4, 0), (4, 6, 4, 0)]);
        assert!(r.tables.iter().all(|x| x.hot.is_empty()));
        // The take opened a new window for the same plan.
        let r = t.take();
        assert_eq!((r.plan_id, r.requests), (3, 0));
        assert!(r.tables.is_empty());
        // A deployment opens one for its plan, forgetting the old one's counts.
        t.record(3, &tables, &b);
        t.reset(4);
        t.record(3, &tables, &b);
        let r = t.take();
        assert_eq!((r.plan_id, r.requests), (4, 0));
    }

    #[test]
    fn sampled_requests_feed_the_hot_rows() {
        let t = TrafficStats::start(2);
        t.reset(1);
        let tables: Arc<[u16]> = Arc::from(vec![0u16]);
        let b = batch(&[vec![vec![7, 7, 3], vec![7]]]);
        for _ in 0..6 {
            t.record(1, &tables, &b);
            // One at a time, so that none is dropped for a full queue.
            t.settle();
        }
        let r = t.take();
        assert_eq!(r.requests, 6);
        assert_eq!(r.sample_every, 2);
        let x = &r.tables[0];
        assert_eq!((x.table, x.lookups, x.samples), (0, 24, 12));
        // Requests 0, 2 and 4 were sampled: 3 x 4 ids.
        assert_eq!(x.sampled, 12);
        assert_eq!(x.hot, vec![(7, 9), (3, 3)]);
        assert_eq!(t.dropped(), 0);
        // The summaries start over with the window; the sampling keeps its pace across windows.
        t.record(1, &tables, &b);
        t.record(1, &tables, &b);
        t.settle();
        let r = t.take();
        assert_eq!(r.tables[0].sampled, 4, "request 6 is sampled, request 7 is not");
        assert_eq!(r.tables[0].hot, vec![(7, 3), (3, 1)]);
    }

    #[test]
    fn samples_of_a_taken_window_are_not_counted_in_the_next() {
        let t = TrafficStats::start(1);
        t.reset(1);
        let tables: Arc<[u16]> = Arc::from(vec![0u16]);
        // Hold the summaries so that the counting thread waits with the sample, then take the
        // window: whether the thread counts the sample before the take (into the window taken)
        // or after (and drops it as late), it never reaches the next window.
        let guard = t.sketches.lock();
        t.record(1, &tables, &batch(&[vec![vec![1, 2]]]));
        drop(guard);
        let _ = t.take();
        t.settle();
        let r = t.take();
        assert!(r.tables.is_empty(), "{r:?}");
    }
}
