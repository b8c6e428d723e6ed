//! What a serving process lets its peers hold: connections, requests in flight, bytes of
//! requests being read, and how long a frame may take to arrive.
//!
//! Every peer of a cluster holds the cluster's certificate, so mutual TLS does not stop a buggy
//! or hostile one. Without these limits a peer that opened streams and sent only a frame header
//! claiming 32 MiB of metadata made the coordinator allocate 32 MiB per stream and wait forever
//! (150 streams took it from 1 GB to 5.4 GB in 12 s), and 2,000 idle connections took 800 MB.
//! Now:
//!
//! - a process serves at most [`ServeLimits::max_connections`] connections (more are refused
//!   during the handshake) and [`ServeLimits::max_requests`] requests at once (more get
//!   [`ErrorKind::Overloaded`] without being read);
//! - a connection may open [`crate::Tuning::max_streams`] streams at once (QUIC flow control:
//!   the peer cannot open more);
//! - request buffers grow with the bytes that arrive, never with what a header announces, and
//!   every byte buffered is charged to the connection's and the process's budget
//!   ([`ServeLimits::connection_bytes`], [`ServeLimits::process_bytes`]) until its request has
//!   been answered; a request past either gets [`ErrorKind::Overloaded`];
//! - a request frame must arrive within [`ServeLimits::read_deadline`], or it gets
//!   [`ErrorKind::TimedOut`];
//! - the heap that closed connections used is given back to the kernel ([`trim_heap`]).
//!
//! A process's limits are set once, before it serves ([`configure`]; `embtune coordinator` and
//! `embtune worker` take `--max-connections`); tests build a [`Guard`] of their own.
//!
//! [`ErrorKind::Overloaded`]: embtune_protocol::wire::ErrorKind::Overloaded
//! [`ErrorKind::TimedOut`]: embtune_protocol::wire::ErrorKind::TimedOut

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

/// Default for [`ServeLimits::max_connections`]. An idle connection costs about 100 KB (quinn's
/// send buffer of one jumbo datagram, its stream slots, TLS state), so 256 cost about 25 MiB:
/// room for a hundred workers (one connection each to the coordinator) and dozens of clients
/// (four lanes each). Larger clusters pass `--max-connections`.
pub const DEFAULT_MAX_CONNECTIONS: usize = 256;

/// The limits of a serving process.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServeLimits {
    /// Connections served at once; a handshake past it is refused.
    pub max_connections: usize,
    /// Requests being read or handled at once, over every connection.
    pub max_requests: usize,
    /// Bytes of request frames buffered at once on one connection. At least one largest frame
    /// ([`embtune_protocol::codec::FrameLimits`]), so that any valid request can be served.
    pub connection_bytes: usize,
    /// Bytes of request frames buffered at once in the process.
    pub process_bytes: usize,
    /// How long a request frame may take to arrive, from its stream's opening.
    pub read_deadline: Duration,
}

impl Default for ServeLimits {
    fn default() -> Self {
        ServeLimits {
            max_connections: DEFAULT_MAX_CONNECTIONS,
            max_requests: 8192,
            // The default frame limits: 32 MiB of metadata and 512 MiB of body.
            connection_bytes: 544 << 20,
            process_bytes: 2 << 30,
            read_deadline: Duration::from_secs(10),
        }
    }
}

/// A counter with a ceiling: units are taken while they fit and given back when the
/// [`Held`] that took them is dropped.
#[derive(Debug)]
pub struct Budget {
    used: AtomicUsize,
    cap: usize,
}

impl Budget {
    pub fn new(cap: usize) -> Arc<Budget> {
        Arc::new(Budget { used: AtomicUsize::new(0), cap })
    }

    /// Takes `n` units if they fit under the ceiling.
    pub fn try_take(self: &Arc<Self>, n: usize) -> Option<Held> {
        self.take(n).then(|| Held { budget: self.clone(), n })
    }

    fn take(&self, n: usize) -> bool {
        self.used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |u| u.checked_add(n).filter(|&t| t <= self.cap))
            .is_ok()
    }

    pub fn used(&self) -> usize {
        self.used.load(Ordering::Acquire)
    }

    pub fn cap(&self) -> usize {
        self.cap
    }
}

/// Units of a [`Budget`], given back on drop.
#[derive(Debug)]
pub struct Held {
    budget: Arc<Budget>,
    n: usize,
}

impl Held {
    /// Adds `more` units to this holding, if they fit.
    pub fn grow(&mut self, more: usize) -> bool {
        let ok = self.budget.take(more);
        if ok {
            self.n += more;
        }
        ok
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        self.budget.used.fetch_sub(self.n, Ordering::AcqRel);
    }
}

/// What a process refused or cut short, for logs, tests and RELIABILITY.md.
#[derive(Debug, Default)]
pub struct Refusals {
    pub connections: AtomicU64,
    pub requests: AtomicU64,
    pub bytes: AtomicU64,
    pub deadlines: AtomicU64,
}

/// A process's (or a test server's) limits and what is held against them.
#[derive(Debug)]
pub struct Guard {
    pub limits: ServeLimits,
    pub connections: Arc<Budget>,
    pub requests: Arc<Budget>,
    pub bytes: Arc<Budget>,
    pub refused: Refusals,
    /// Connections closed since the heap was last trimmed.
    closed_since_trim: AtomicUsize,
}

impl Guard {
    pub fn new(limits: ServeLimits) -> Arc<Guard> {
        Arc::new(Guard {
            connections: Budget::new(limits.max_connections),
            requests: Budget::new(limits.max_requests),
            bytes: Budget::new(limits.process_bytes),
            limits,
            refused: Refusals::default(),
            closed_since_trim: AtomicUsize::new(0),
        })
    }

    /// Notes a closed connection; the heap is trimmed a moment later (see [`Guard::trimmer`]).
    pub(crate) fn connection_closed(&self) {
        self.closed_since_trim.fetch_add(1, Ordering::AcqRel);
    }

    /// Gives closed connections' memory back to the kernel, at most once a second and only
    /// after some closed: trimming walks the heap, and the request buffers it frees would
    /// otherwise be reused by the next requests (which is why freed memory is kept at all; see
    /// `keep_freed_memory` in the cli).
    pub(crate) async fn trimmer(self: Arc<Self>) {
        loop {
            tokio::time::sleep(Duration::from_secs(1)).await;
            if self.closed_since_trim.swap(0, Ordering::AcqRel) > 0 {
                let _ = tokio::task::spawn_blocking(trim_heap).await;
            }
        }
    }
}

static PROCESS: OnceLock<Arc<Guard>> = OnceLock::new();

/// Sets this process's limits; call it once, before serving. False if they were already set
/// (or already used, which fixes the defaults).
pub fn configure(limits: ServeLimits) -> bool {
    PROCESS.set(Guard::new(limits)).is_ok()
}

/// This process's guard: what [`configure`] set, or the defaults.
pub fn process() -> Arc<Guard> {
    PROCESS.get_or_init(|| Guard::new(ServeLimits::default())).clone()
}

/// Returns free heap memory to the kernel. glibc keeps freed memory for reuse (and the cli
/// raises its trim threshold so that request buffers are not returned after every request), so
/// without this the memory of a thousand closed connections stays resident for good.
pub fn trim_heap() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only releases free memory of the allocator's arenas.
    unsafe {
        libc::malloc_trim(0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn budgets_refuse_past_the_ceiling_and_give_back_on_drop() {
        let b = Budget::new(100);
        let mut a = b.try_take(60).unwrap();
        assert!(b.try_take(41).is_none());
        assert!(a.grow(40));
        assert!(!a.grow(1));
        assert_eq!(b.used(), 100);
        drop(a);
        assert_eq!(b.used(), 0);
        assert!(b.try_take(100).is_some());
    }
}
