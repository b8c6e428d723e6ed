//! embtune's transport: QUIC with mutual TLS between the processes of a cluster, and framed
//! request/response calls over it.
//!
//! - [`certs`]: the cluster CA and node certificates (`embtune cluster init`).
//! - [`endpoint`]: QUIC endpoints whose TLS trusts only the cluster CA and demands a client
//!   certificate, with transport settings tuned for low-latency RPC on a LAN.
//! - [`guard`]: what a serving process lets its peers hold (connections, requests in flight,
//!   buffered bytes, time to send a frame), and giving closed connections' memory back.
//! - [`lanes`]: several connections to one peer, and the rule that stripes a large reply over
//!   them so that more than one core seals and opens its packets.
//! - [`netbench`]: the transport measured beside plain TCP in one run.
//! - [`rpc`]: one request per bidirectional stream; frames as [`embtune_protocol::codec`]
//!   defines them, with limits checked before anything is allocated.

pub mod certs;
pub mod endpoint;
pub mod guard;
pub mod lanes;
pub mod netbench;
pub mod rpc;

pub use certs::Identity;
pub use endpoint::{Tuning, client_endpoint, server_endpoint};
pub use lanes::Lanes;
pub use rpc::{Body, call, serve};

use embtune_protocol::wire::WireError;

/// Why a transport operation failed.
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    #[error("certificates: {0}")]
    Certs(String),
    #[error("TLS: {0}")]
    Tls(String),
    #[error("cannot bind {addr}: {source}")]
    Bind { addr: std::net::SocketAddr, source: std::io::Error },
    #[error("cannot connect to {addr}: {reason}")]
    Connect { addr: std::net::SocketAddr, reason: String },
    #[error("connection: {0}")]
    Connection(#[from] quinn::ConnectionError),
    #[error("stream: {0}")]
    Stream(String),
    #[error("timed out after {0:?}")]
    Timeout(std::time::Duration),
    /// The peer answered with a typed error.
    #[error("{0}")]
    Remote(WireError),
    /// The peer's frame broke the protocol.
    #[error("bad frame from peer: {0}")]
    Frame(WireError),
}
