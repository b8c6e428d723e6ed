//! Request/response over QUIC: one bidirectional stream per request, one frame each way.

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use quinn::{Connection, RecvStream, SendStream, VarInt};

use embtune_protocol::codec::{self, FrameLimits, HEADER_LEN};
use embtune_protocol::wire::{ErrorKind, Request, Response, WireError};

use crate::TransportError;

/// A frame's body: nothing, or 32-bit words (ids, offsets or floats).
#[derive(Debug, Default)]
pub enum Body {
    #[default]
    Empty,
    Words(Vec<u32>),
    Floats(Vec<f32>),
    /// Several word buffers sent back to back (ids then offsets), without joining them.
    Parts(Vec<std::sync::Arc<[u32]>>),
}

impl Body {
    fn len_bytes(&self) -> usize {
        match self {
            Body::Empty => 0,
            Body::Words(w) => 4 * w.len(),
            Body::Floats(f) => 4 * f.len(),
            Body::Parts(p) => p.iter().map(|w| 4 * w.len()).sum(),
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

/// What went wrong reading a frame: the peer broke the protocol (answer it with a typed error)
/// or the stream itself failed (nothing to answer).
pub enum ReadError {
    Protocol(WireError),
    Stream(String),
}

/// Reads one frame: header first, checked against `limits` before metadata or body is
/// allocated.
pub async fn read_frame<T: serde::de::DeserializeOwned>(
    recv: &mut RecvStream,
    limits: &FrameLimits,
) -> Result<(T, Vec<u32>), ReadError> {
    let mut head = [0u8; HEADER_LEN];
    recv.read_exact(&mut head).await.map_err(|e| match e {
        quinn::ReadExactError::FinishedEarly(n) => ReadError::Protocol(WireError::new(
            ErrorKind::BadFrame,
            format!("truncated frame: {n} of {HEADER_LEN} header bytes"),
        )),
        quinn::ReadExactError::ReadError(e) => ReadError::Stream(e.to_string()),
    })?;
    let h = codec::parse_header(&head, limits).map_err(ReadError::Protocol)?;
    let truncated = |what: &str, e: quinn::ReadExactError| match e {
        quinn::ReadExactError::FinishedEarly(n) => {
            ReadError::Protocol(WireError::new(ErrorKind::BadFrame, format!("truncated frame: {n} bytes of {what}")))
        }
        quinn::ReadExactError::ReadError(e) => ReadError::Stream(e.to_string()),
    };
    let mut meta = vec![0u8; h.meta_len as usize];
    recv.read_exact(&mut meta).await.map_err(|e| truncated("metadata", e))?;
    let body = read_body(recv, h.body_len as usize).await?;
    let meta = codec::decode_meta(&meta).map_err(ReadError::Protocol)?;
    Ok((meta, body))
}

/// Reads a body of `len` bytes (a multiple of four, as the header check ensures) chunk by
/// chunk straight into a word buffer. Zeroing a buffer first only to overwrite it would cost a
/// pass over every response, on every hop.
async fn read_body(recv: &mut RecvStream, len: usize) -> Result<Vec<u32>, ReadError> {
    debug_assert!(len.is_multiple_of(4));
    let mut body: Vec<u32> = Vec::with_capacity(len / 4);
    let mut filled = 0;
    while filled < len {
        match recv.read_chunk(len - filled, true).await {
            Ok(Some(chunk)) => {
                let n = chunk.bytes.len().min(len - filled);
                // SAFETY: `filled + n <= len`, the buffer's capacity in bytes; the source is a
                // separate allocation of at least `n` bytes.
                unsafe {
                    let dst = (body.as_mut_ptr() as *mut u8).add(filled);
                    std::ptr::copy_nonoverlapping(chunk.bytes.as_ptr(), dst, n)
                };
                filled += n;
            }
            Ok(None) => {
                return Err(ReadError::Protocol(WireError::new(
                    ErrorKind::BadFrame,
                    format!("truncated frame: {filled} bytes of body"),
                )));
            }
            Err(e) => return Err(ReadError::Stream(e.to_string())),
        }
    }
    // SAFETY: all `len / 4` words were written above, and any bit pattern is a valid u32.
    unsafe { body.set_len(len / 4) };
    Ok(body)
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

/// Serves every request of a connection concurrently, each on its own task, until the peer
/// goes away. Frames that break the protocol get a typed error reply and are logged; the
/// connection and the process carry on.
pub async fn serve<H, F>(conn: Connection, limits: FrameLimits, handler: H)
where
    H: Fn(Request, Vec<u32>, Peer) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = (Response, Body)> + Send + 'static,
{
    let peer = Peer { addr: conn.remote_address(), conn: conn.clone() };
    loop {
        let (mut send, mut recv) = match conn.accept_bi().await {
            Ok(s) => s,
            Err(e) => {
                tracing::debug!("connection from {} ended: {e}", peer.addr);
                return;
            }
        };
        let handler = handler.clone();
        let peer = peer.clone();
        tokio::spawn(async move {
            let addr = peer.addr;
            let (reply, body) = match read_frame::<Request>(&mut recv, &limits).await {
                Ok((req, body)) => handler(req, body, peer).await,
                Err(ReadError::Protocol(e)) => {
                    tracing::warn!("refused a frame from {addr}: {e}");
                    // Tell the peer to stop sending the rest of an oversized or broken frame;
                    // nothing more of it is read, so memory stays bounded.
                    let _ = recv.stop(VarInt::from_u32(1));
                    (Response::Error(e), Body::Empty)
                }
                Err(ReadError::Stream(e)) => {
                    tracing::debug!("stream from {addr} failed: {e}");
                    return;
                }
            };
            if let Err(e) = write_frame(&mut send, &reply, body).await {
                tracing::debug!("reply to {addr} not delivered: {e}");
            }
        });
    }
}

/// Accepts connections on `ep` and serves each with `handler` until the endpoint closes.
pub async fn accept_loop<H, F>(ep: quinn::Endpoint, limits: FrameLimits, handler: H)
where
    H: Fn(Request, Vec<u32>, Peer) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = (Response, Body)> + Send + 'static,
{
    while let Some(incoming) = ep.accept().await {
        let handler = handler.clone();
        tokio::spawn(async move {
            match incoming.await {
                Ok(conn) => serve(conn, limits, handler).await,
                // Peers without a cluster certificate end here.
                Err(e) => tracing::warn!("refused a connection: {e}"),
            }
        });
    }
}
