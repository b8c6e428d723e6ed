//! Request/response over QUIC: one bidirectional stream per request, one frame each way.
//!
//! Requests from peers are read within the serving process's limits (`crate::guard`): buffers
//! that grow with what arrives, byte budgets, a read deadline and caps on connections and
//! requests in flight. Replies to our own calls are read into a buffer of their announced size
//! at once, so that the large ones land in place.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use quinn::{Connection, RecvStream, SendStream, VarInt};

use embtune_protocol::codec::{self, FrameLimits, HEADER_LEN};
use embtune_protocol::wire::{ErrorKind, Request, Response, WireError};

use crate::TransportError;
use crate::guard::{self, Budget, Guard, Held};

/// A frame's body: nothing, or 32-bit words (ids, offsets or floats).
#[derive(Debug, Default)]
pub enum Body {
    #[default]
    Empty,
    Words(Vec<u32>),
    Floats(Vec<f32>),
    /// Several word buffers sent back to back (ids then offsets), without joining them.
    Parts(Vec<std::sync::Arc<[u32]>>),
    /// Several owned word buffers sent back to back, handed to quinn without a copy.
    Vecs(Vec<Vec<u32>>),
}

impl Body {
    fn len_bytes(&self) -> usize {
        match self {
            Body::Empty => 0,
            Body::Words(w) => 4 * w.len(),
            Body::Floats(f) => 4 * f.len(),
            Body::Parts(p) => p.iter().map(|w| 4 * w.len()).sum(),
            Body::Vecs(p) => p.iter().map(|w| 4 * w.len()).sum(),
        }
    }

    /// The body as chunks that quinn sends from where they are. `write_all` of a borrowed
    /// slice would first copy it into a buffer of quinn's own: for a pooled response of
    /// hundreds of kilobytes, a copy as large as the message on every hop.
    fn into_chunks(self, chunks: &mut Vec<Bytes>) {
        match self {
            Body::Empty => {}
            Body::Words(v) => chunks.push(Bytes::from_owner(LeBytes(v))),
            Body::Floats(v) => chunks.push(Bytes::from_owner(LeBytes(v))),
            Body::Parts(parts) => {
                chunks.extend(parts.into_iter().filter(|p| !p.is_empty()).map(|p| Bytes::from_owner(LeBytes(p))))
            }
            Body::Vecs(parts) => {
                chunks.extend(parts.into_iter().filter(|p| !p.is_empty()).map(|p| Bytes::from_owner(LeBytes(p))))
            }
        }
    }
}

/// A buffer of 32-bit words, seen as its little-endian bytes without a copy.
struct LeBytes<T>(T);

impl AsRef<[u8]> for LeBytes<Vec<u32>> {
    fn as_ref(&self) -> &[u8] {
        codec::words_as_bytes(&self.0)
    }
}

impl AsRef<[u8]> for LeBytes<Vec<f32>> {
    fn as_ref(&self) -> &[u8] {
        codec::floats_as_bytes(&self.0)
    }
}

impl AsRef<[u8]> for LeBytes<std::sync::Arc<[u32]>> {
    fn as_ref(&self) -> &[u8] {
        codec::words_as_bytes(&self.0)
    }
}

/// Writes one frame and finishes the stream. The body is handed to quinn as it is, not copied.
pub async fn write_frame<T: serde::Serialize>(
    send: &mut SendStream,
    meta: &T,
    body: Body,
) -> Result<(), TransportError> {
    let head = codec::encode_head(meta, body.len_bytes()).map_err(TransportError::Frame)?;
    let mut chunks = vec![Bytes::from(head)];
    body.into_chunks(&mut chunks);
    send.write_all_chunks(&mut chunks).await.map_err(|e| TransportError::Stream(e.to_string()))?;
    send.finish().map_err(|e| TransportError::Stream(e.to_string()))?;
    Ok(())
}

/// What went wrong reading a frame: the peer broke the protocol or a limit (answer it with a
/// typed error) or the stream itself failed (nothing to answer).
pub enum ReadError {
    Protocol(WireError),
    Stream(String),
}

/// Reads one frame: header first, checked against `limits` before metadata or body is
/// allocated. For replies to our own requests: the body's buffer is allocated at its announced
/// size at once, so that a large reply is written in place without a copy (the peer is one we
/// chose to call, and the call has a timeout). Requests from peers are read by [`serve`], whose
/// buffers grow only with the bytes that arrive.
pub async fn read_frame<T: serde::de::DeserializeOwned>(
    recv: &mut RecvStream,
    limits: &FrameLimits,
) -> Result<(T, Vec<u32>), ReadError> {
    let (meta, body, _) = read_frame_with(recv, limits, Reading::Reply).await?;
    Ok((meta, body))
}

/// How a frame's buffers are sized and charged.
enum Reading<'a> {
    /// A reply: the body at its announced size at once.
    Reply,
    /// A request from a peer: buffers that grow with what arrives, every byte charged to the
    /// connection's and the process's budgets.
    Request { connection: &'a Arc<Budget>, process: &'a Arc<Budget>, refused: &'a AtomicU64 },
}

/// First allocation of a request's buffer once its first bytes arrive, and the factor it grows
/// by when they fill it: most requests (a batch's ids) fit the first; a large one is copied a
/// few times at most (a quarter of its size in all), never allocated ahead of its bytes.
const FIRST_BUFFER: usize = 256 << 10;
const GROWTH: usize = 4;

/// Bytes of a request held against the budgets until its reply has been written.
struct Charge(Vec<Held>);

impl<'a> Reading<'a> {
    /// Charges `n` more bytes, or says which budget is spent.
    fn charge(&self, charge: &mut Charge, n: usize) -> Result<(), ReadError> {
        let Reading::Request { connection, process, refused } = self else { return Ok(()) };
        if charge.0.is_empty() {
            charge.0.push(connection.try_take(0).expect("zero always fits"));
            charge.0.push(process.try_take(0).expect("zero always fits"));
        }
        let over = |what: &str, b: &Budget| {
            refused.fetch_add(1, Ordering::Relaxed);
            ReadError::Protocol(WireError::new(
                ErrorKind::Overloaded,
                format!(
                    "the {what} has {} of its {} buffered: the request was not read; retry later or send fewer requests at once",
                    human(b.used()),
                    human(b.cap())
                ),
            ))
        };
        if !charge.0[0].grow(n) {
            return Err(over("connection", connection));
        }
        if !charge.0[1].grow(n) {
            return Err(over("process", process));
        }
        Ok(())
    }

    /// Room for `need` bytes in a buffer of `cap` bytes that will hold `total` in the end:
    /// the new capacity, in bytes.
    fn grown(&self, cap: usize, need: usize, total: usize) -> usize {
        match self {
            Reading::Reply => total,
            Reading::Request { .. } => need.max(cap.saturating_mul(GROWTH)).max(FIRST_BUFFER).min(total),
        }
    }
}

fn human(b: usize) -> String {
    embtune_protocol::plan::human_bytes(b as u64)
}

/// Reads a frame; see [`read_frame`] and [`Reading`].
async fn read_frame_with<T: serde::de::DeserializeOwned>(
    recv: &mut RecvStream,
    limits: &FrameLimits,
    reading: Reading<'_>,
) -> Result<(T, Vec<u32>, Charge), ReadError> {
    let mut head = [0u8; HEADER_LEN];
    recv.read_exact(&mut head).await.map_err(|e| match e {
        quinn::ReadExactError::FinishedEarly(n) => ReadError::Protocol(WireError::new(
            ErrorKind::BadFrame,
            format!("truncated frame: {n} of {HEADER_LEN} header bytes"),
        )),
        quinn::ReadExactError::ReadError(e) => ReadError::Stream(e.to_string()),
    })?;
    let h = codec::parse_header(&head, limits).map_err(ReadError::Protocol)?;
    let mut charge = Charge(Vec::new());
    let meta = read_meta(recv, h.meta_len as usize, &reading, &mut charge).await?;
    let body = read_body(recv, h.body_len as usize, &reading, &mut charge).await?;
    let meta = codec::decode_meta(&meta).map_err(ReadError::Protocol)?;
    Ok((meta, body, charge))
}

fn truncated(filled: usize, what: &str) -> ReadError {
    ReadError::Protocol(WireError::new(ErrorKind::BadFrame, format!("truncated frame: {filled} bytes of {what}")))
}

/// Reads `len` bytes of metadata into a buffer that grows as they arrive: a header may claim
/// up to the limit and then send nothing.
async fn read_meta(
    recv: &mut RecvStream,
    len: usize,
    reading: &Reading<'_>,
    charge: &mut Charge,
) -> Result<Vec<u8>, ReadError> {
    let mut meta: Vec<u8> = Vec::new();
    while meta.len() < len {
        match recv.read_chunk(len - meta.len(), true).await {
            Ok(Some(chunk)) => {
                let n = chunk.bytes.len().min(len - meta.len());
                if meta.len() + n > meta.capacity() {
                    let cap = match reading {
                        Reading::Reply => len,
                        // Metadata is small but for plans: start at 4 KiB, not 256.
                        Reading::Request { .. } => (meta.len() + n).max(meta.capacity() * GROWTH).max(4096).min(len),
                    };
                    reading.charge(charge, cap - meta.capacity())?;
                    meta.reserve_exact(cap - meta.len());
                }
                meta.extend_from_slice(&chunk.bytes[..n]);
            }
            Ok(None) => return Err(truncated(meta.len(), "metadata")),
            Err(e) => return Err(ReadError::Stream(e.to_string())),
        }
    }
    Ok(meta)
}

/// Reads a body of `len` bytes (a multiple of four, as the header check ensures) chunk by
/// chunk straight into a word buffer. Zeroing a buffer first only to overwrite it would cost a
/// pass over every response, on every hop.
async fn read_body(
    recv: &mut RecvStream,
    len: usize,
    reading: &Reading<'_>,
    charge: &mut Charge,
) -> Result<Vec<u32>, ReadError> {
    debug_assert!(len.is_multiple_of(4));
    let mut body: Vec<u32> = Vec::new();
    if let Reading::Reply = reading {
        body.reserve_exact(len / 4);
    }
    let mut filled = 0;
    while filled < len {
        match recv.read_chunk(len - filled, true).await {
            Ok(Some(chunk)) => {
                let n = chunk.bytes.len().min(len - filled);
                let cap = 4 * body.capacity();
                if filled + n > cap {
                    let new_cap = reading.grown(cap, filled + n, len).next_multiple_of(4);
                    reading.charge(charge, new_cap - cap)?;
                    grow_words(&mut body, filled, new_cap / 4);
                }
                // SAFETY: `filled + n <= 4 * capacity` (grown above); the source is a separate
                // allocation of at least `n` bytes.
                unsafe {
                    let dst = (body.as_mut_ptr() as *mut u8).add(filled);
                    std::ptr::copy_nonoverlapping(chunk.bytes.as_ptr(), dst, n)
                };
                filled += n;
            }
            Ok(None) => return Err(truncated(filled, "body")),
            Err(e) => return Err(ReadError::Stream(e.to_string())),
        }
    }
    // SAFETY: all `len / 4` words were written above, and any bit pattern is a valid u32.
    unsafe { body.set_len(len / 4) };
    Ok(body)
}

/// Moves the `filled` bytes written so far into a buffer of `words` capacity. `Vec::reserve`
/// would copy only `len` elements, which is zero while the words are written past it.
fn grow_words(body: &mut Vec<u32>, filled: usize, words: usize) {
    let mut bigger: Vec<u32> = Vec::with_capacity(words);
    // SAFETY: both buffers hold at least `filled` bytes; they are separate allocations.
    unsafe { std::ptr::copy_nonoverlapping(body.as_ptr() as *const u8, bigger.as_mut_ptr() as *mut u8, filled) };
    *body = bigger;
}

/// Sends a request and waits up to `timeout` for its response. A typed error from the peer
/// comes back as [`TransportError::Remote`].
pub async fn call(
    conn: &Connection,
    req: &Request,
    body: Body,
    limits: &FrameLimits,
    timeout: Duration,
) -> Result<(Response, Vec<u32>), TransportError> {
    let fut = async {
        let (mut send, mut recv) = conn.open_bi().await?;
        write_frame(&mut send, req, body).await?;
        match read_frame::<Response>(&mut recv, limits).await {
            Ok((Response::Error(e), _)) => Err(TransportError::Remote(e)),
            Ok(ok) => Ok(ok),
            Err(ReadError::Protocol(e)) => Err(TransportError::Frame(e)),
            Err(ReadError::Stream(e)) => Err(TransportError::Stream(e)),
        }
    };
    tokio::time::timeout(timeout, fut).await.map_err(|_| TransportError::Timeout(timeout))?
}

/// Who sent a request, and the connection it came on (a server can open streams the other
/// way on it: the coordinator directs load generators so).
#[derive(Clone, Debug)]
pub struct Peer {
    pub addr: SocketAddr,
    pub conn: Connection,
}

/// Replies `e` to a stream whose request is not read, and tells the peer to stop sending it.
async fn refuse(mut send: SendStream, mut recv: RecvStream, e: WireError) {
    let _ = recv.stop(VarInt::from_u32(1));
    let _ = write_frame(&mut send, &Response::Error(e), Body::Empty).await;
}

/// Serves every request of a connection concurrently, each on its own task, until the peer
/// goes away, within `guard`'s limits. Frames that break the protocol or a limit get a typed
/// error reply and are logged; the connection and the process carry on.
pub async fn serve<H, F>(conn: Connection, limits: FrameLimits, guard: Arc<Guard>, handler: H)
where
    H: Fn(Request, Vec<u32>, Peer) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = (Response, Body)> + Send + 'static,
{
    let peer = Peer { addr: conn.remote_address(), conn: conn.clone() };
    let connection = Budget::new(guard.limits.connection_bytes);
    loop {
        let (mut send, mut recv) = match conn.accept_bi().await {
            Ok(s) => s,
            Err(e) => {
                tracing::debug!("connection from {} ended: {e}", peer.addr);
                return;
            }
        };
        let Some(in_flight) = guard.requests.try_take(1) else {
            guard.refused.requests.fetch_add(1, Ordering::Relaxed);
            let e = WireError::new(
                ErrorKind::Overloaded,
                format!(
                    "{} requests are in flight, this process's limit: the request was not read; retry later",
                    guard.limits.max_requests
                ),
            );
            tokio::spawn(refuse(send, recv, e));
            continue;
        };
        let handler = handler.clone();
        let (guard, connection) = (guard.clone(), connection.clone());
        let peer = peer.clone();
        tokio::spawn(async move {
            let addr = peer.addr;
            let _in_flight = in_flight;
            let deadline = guard.limits.read_deadline;
            let reading =
                Reading::Request { connection: &connection, process: &guard.bytes, refused: &guard.refused.bytes };
            let read = tokio::time::timeout(deadline, read_frame_with::<Request>(&mut recv, &limits, reading)).await;
            let (reply, body) = match read {
                Ok(Ok((req, body, charge))) => {
                    let out = handler(req, body, peer).await;
                    drop(charge);
                    out
                }
                Ok(Err(ReadError::Protocol(e))) => {
                    tracing::warn!("refused a frame from {addr}: {e}");
                    // Tell the peer to stop sending the rest of an oversized or broken frame;
                    // nothing more of it is read, so memory stays bounded.
                    let _ = recv.stop(VarInt::from_u32(1));
                    (Response::Error(e), Body::Empty)
                }
                Ok(Err(ReadError::Stream(e))) => {
                    tracing::debug!("stream from {addr} failed: {e}");
                    return;
                }
                Err(_) => {
                    guard.refused.deadlines.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!("a frame from {addr} did not arrive within {deadline:?}");
                    let _ = recv.stop(VarInt::from_u32(1));
                    let e = WireError::new(
                        ErrorKind::TimedOut,
                        format!("the request frame did not arrive within {deadline:?}; it was dropped"),
                    );
                    (Response::Error(e), Body::Empty)
                }
            };
            if let Err(e) = write_frame(&mut send, &reply, body).await {
                tracing::debug!("reply to {addr} not delivered: {e}");
            }
        });
    }
}

/// Accepts connections on `ep` and serves each with `handler` until the endpoint closes, within
/// this process's limits ([`crate::guard::process`]).
pub async fn accept_loop<H, F>(ep: quinn::Endpoint, limits: FrameLimits, handler: H)
where
    H: Fn(Request, Vec<u32>, Peer) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = (Response, Body)> + Send + 'static,
{
    accept_loop_guarded(ep, limits, guard::process(), handler).await
}

/// [`accept_loop`] within `guard`'s limits rather than the process's.
pub async fn accept_loop_guarded<H, F>(ep: quinn::Endpoint, limits: FrameLimits, guard: Arc<Guard>, handler: H)
where
    H: Fn(Request, Vec<u32>, Peer) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = (Response, Body)> + Send + 'static,
{
    let trimmer = tokio::spawn(guard.clone().trimmer());
    while let Some(incoming) = ep.accept().await {
        let Some(slot) = guard.connections.try_take(1) else {
            // Refused before the handshake costs anything; the peer sees CONNECTION_REFUSED.
            guard.refused.connections.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(
                "refused a connection from {}: {} connections are open, this process's limit (--max-connections)",
                incoming.remote_address(),
                guard.limits.max_connections
            );
            incoming.refuse();
            continue;
        };
        let handler = handler.clone();
        let guard = guard.clone();
        tokio::spawn(async move {
            match incoming.await {
                Ok(conn) => serve(conn, limits, guard.clone(), handler).await,
                // Peers without a cluster certificate end here.
                Err(e) => tracing::warn!("refused a connection: {e}"),
            }
            drop(slot);
            guard.connection_closed();
        });
    }
    trimmer.abort();
}
