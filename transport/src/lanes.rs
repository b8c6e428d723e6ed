//! Several QUIC connections ("lanes") to one peer, and the rule for striping a large reply
//! over them.
//!
//! quinn seals and opens every packet of a connection on that connection's one task, and an
//! endpoint's socket is read by one task. A single connection therefore tops out at what one
//! core encrypts and copies: on the device, 1.3-1.8 GB/s, about half of plain TCP over several
//! sockets. Lanes, each from its own client endpoint, spread that work over cores: requests are
//! dealt over them, and one large reply is fetched as stripes, one per lane, in parallel
//! (BENCHMARKS.md, "Transport").

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use embtune_protocol::codec::FrameLimits;
use embtune_protocol::wire::{Request, Response};
use quinn::{Connection, Endpoint};

use crate::endpoint::connect;
use crate::rpc::{Body, call};
use crate::{Identity, TransportError, Tuning, client_endpoint};

/// Lanes a process opens to each peer unless its configuration says otherwise (the command
/// line's `--lanes`, or `EMBTUNE_LANES`, which the `embtune` binary reads; 1 turns striping off,
/// for comparisons).
pub const DEFAULT_LANES: usize = 4;

/// Smallest stripe worth its own request: below this, a request's fixed cost (about 50 µs on
/// loopback) outweighs the parallel crypto it buys.
pub const STRIPE_BYTES: usize = 64 << 10;

/// Into how many stripes a reply of `bytes` is split over `lanes` lanes: one per
/// [`STRIPE_BYTES`], at most one per lane, never more than `items` (the samples there are to
/// split), and at least one.
pub fn stripes(bytes: usize, lanes: usize, items: usize) -> usize {
    (bytes / STRIPE_BYTES).min(lanes).min(items).max(1)
}

pub use embtune_protocol::route::stripe_bounds;

/// Client endpoints, one per lane, each on its own UDP socket.
pub fn endpoints(id: &Identity, tuning: &Tuning, lanes: usize) -> Result<Vec<Endpoint>, TransportError> {
    (0..lanes.max(1)).map(|_| client_endpoint(id, tuning)).collect()
}

/// Open connections to one peer. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Lanes {
    conns: Vec<Connection>,
    next: std::sync::Arc<AtomicUsize>,
}

impl Lanes {
    /// Connects once through each endpoint (at least one: see [`endpoints`]).
    pub async fn connect(eps: &[Endpoint], addr: SocketAddr, timeout: Duration) -> Result<Lanes, TransportError> {
        assert!(!eps.is_empty(), "lanes need at least one endpoint");
        let mut conns = Vec::with_capacity(eps.len());
        for ep in eps {
            conns.push(connect(ep, addr, timeout).await?);
        }
        Ok(Lanes { conns, next: Default::default() })
    }

    pub fn len(&self) -> usize {
        self.conns.len()
    }

    pub fn is_empty(&self) -> bool {
        self.conns.is_empty()
    }

    /// The lane for control messages, whose order matters to nobody but which should not
    /// wander: always the first.
    pub fn first(&self) -> &Connection {
        &self.conns[0]
    }

    /// `k` lanes for one request's stripes, taken in turn so that concurrent requests spread.
    pub fn take(&self, k: usize) -> impl Iterator<Item = &Connection> {
        let start = self.next.fetch_add(k.max(1), Ordering::Relaxed);
        (0..k).map(move |i| &self.conns[(start + i) % self.conns.len()])
    }

    /// Why a lane closed, if one did: the peer is then treated as gone.
    pub fn close_reason(&self) -> Option<quinn::ConnectionError> {
        self.conns.iter().find_map(|c| c.close_reason())
    }

    /// Makes every call at once, dealt over the lanes in turn, and returns the replies in the
    /// calls' order. Several calls run on tasks of their own, so that their replies are opened
    /// on different threads; a lone call runs in place.
    pub async fn call_all(
        &self,
        calls: Vec<(Request, Body)>,
        limits: FrameLimits,
        timeout: Duration,
    ) -> Result<Vec<(Response, Vec<u32>)>, TransportError> {
        let conns: Vec<Connection> = self.take(calls.len()).cloned().collect();
        if calls.len() == 1 {
            let (req, body) = calls.into_iter().next().unwrap();
            return Ok(vec![call(&conns[0], &req, body, &limits, timeout).await?]);
        }
        let tasks: Vec<_> = calls
            .into_iter()
            .zip(conns)
            .map(|((req, body), c)| tokio::spawn(async move { call(&c, &req, body, &limits, timeout).await }))
            .collect();
        let mut replies = Vec::with_capacity(tasks.len());
        for t in tasks {
            replies.push(t.await.map_err(|e| TransportError::Stream(format!("a lane's call task failed: {e}")))??);
        }
        Ok(replies)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stripes_cover_every_item_once() {
        for n in 0..40 {
            for k in 1..6 {
                let mut next = 0;
                for i in 0..k {
                    let (lo, hi) = stripe_bounds(n, k, i);
                    assert_eq!(lo, next, "n {n} k {k} stripe {i}");
                    assert!(hi - lo <= n.div_ceil(k));
                    next = hi;
                }
                assert_eq!(next, n);
            }
        }
    }

    #[test]
    fn small_replies_are_not_striped() {
        assert_eq!(stripes(10_000, 4, 256), 1);
        assert_eq!(stripes(STRIPE_BYTES * 2, 4, 256), 2);
        // A Criteo batch of 256 samples (426 KB of pooled rows) goes as 4 stripes over 4 lanes.
        assert_eq!(stripes(256 * 26 * 16 * 4, 4, 256), 4);
        assert_eq!(stripes(usize::MAX / 2, 4, 3), 3, "never more stripes than samples");
        assert_eq!(stripes(usize::MAX / 2, 1, 256), 1);
        assert_eq!(stripes(0, 4, 0), 1);
    }
}
