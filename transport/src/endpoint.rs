//! QUIC endpoints with the cluster's mutual TLS.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use quinn::crypto::rustls::{QuicClientConfig, QuicServerConfig};
use quinn::{ClientConfig, Endpoint, MtuDiscoveryConfig, ServerConfig, TransportConfig, VarInt};
use rustls::RootCertStore;
use rustls::server::WebPkiClientVerifier;

use embtune_protocol::wire::ALPN;

use crate::{Identity, TransportError};

/// Transport settings. The defaults suit RPC between machines of one LAN: many concurrent
/// streams (one per request), large flow-control windows so a big response is never throttled
/// by them, an initial RTT estimate of a LAN rather than the internet's 333 ms, and keep-alives
/// with a short idle timeout so that a dead peer is noticed within two seconds.
#[derive(Clone, Debug)]
pub struct Tuning {
    /// Streams a peer may have open to us at once (QUIC flow control: it cannot open more, and
    /// waits for one to end). Each is a request in flight; a peer that opened thousands and
    /// sent only headers once held as many buffers (`crate::guard`). quinn keeps a slot per
    /// stream for every connection, so this is also memory per idle connection: 4,096 slots
    /// made an idle connection cost about 400 KB. A coordinator sends a worker at most 64
    /// requests at once, and a client's further requests wait for a stream to end.
    pub max_streams: u32,
    pub stream_window: u64,
    pub connection_window: u64,
    pub initial_rtt: Duration,
    pub keep_alive: Duration,
    pub idle_timeout: Duration,
    /// Largest UDP payload that path-MTU discovery may try: loopback (65536-byte MTU) and
    /// jumbo-frame LANs carry far larger datagrams than Ethernet's 1500 bytes, and fewer packets
    /// mean less CPU per byte (on loopback 65000 against 9000 cut the round trip of a 450 KB
    /// response from 830 to 500 us). On a smaller path the probes are lost and discovery settles
    /// on what the path carries; nothing else is sent larger than what was confirmed.
    pub mtu_upper_bound: u16,
    /// Congestion window at the start, bytes. Request/response traffic keeps the sender
    /// application-limited between responses, and Cubic does not grow its window then: with the
    /// internet's default (about 15 KB) a 450 KB response took three round trips to send on
    /// loopback. A LAN takes a window of a few megabytes; loss still shrinks it.
    pub initial_window: u64,
    /// Hand the kernel batches of packets in one call (UDP GSO). Off by default: on loopback
    /// the bursts it sends were declared lost by the sender, which made path-MTU discovery
    /// conclude a black hole and fall back to 1200-byte packets for a minute; without it the
    /// path keeps 9000-byte packets and a 450 KB response streamed 1.3-1.5x faster
    /// (BENCHMARKS.md, "Transport").
    pub segmentation_offload: bool,
    /// How long path-MTU discovery waits after detecting a black hole before it probes again.
    pub black_hole_cooldown: Duration,
}

impl Default for Tuning {
    fn default() -> Self {
        Tuning {
            max_streams: 128,
            stream_window: 64 << 20,
            connection_window: 256 << 20,
            initial_rtt: Duration::from_millis(1),
            keep_alive: Duration::from_millis(300),
            idle_timeout: Duration::from_millis(1500),
            mtu_upper_bound: 65000,
            initial_window: 4 << 20,
            segmentation_offload: false,
            black_hole_cooldown: Duration::from_secs(5),
        }
    }
}

impl Tuning {
    fn transport(&self) -> TransportConfig {
        let mut t = TransportConfig::default();
        t.max_concurrent_bidi_streams(VarInt::from_u32(self.max_streams))
            .max_concurrent_uni_streams(VarInt::from_u32(0))
            .stream_receive_window(VarInt::from_u64(self.stream_window).unwrap_or(VarInt::MAX))
            .receive_window(VarInt::from_u64(self.connection_window).unwrap_or(VarInt::MAX))
            .send_window(self.connection_window)
            .initial_rtt(self.initial_rtt)
            .keep_alive_interval(Some(self.keep_alive))
            .max_idle_timeout(Some(self.idle_timeout.try_into().expect("a short idle timeout")));
        let mut mtu = MtuDiscoveryConfig::default();
        mtu.upper_bound(self.mtu_upper_bound)
            .interval(Duration::from_secs(60))
            .black_hole_cooldown(self.black_hole_cooldown);
        t.mtu_discovery_config(Some(mtu));
        t.enable_segmentation_offload(self.segmentation_offload);
        let mut cubic = quinn::congestion::CubicConfig::default();
        cubic.initial_window(self.initial_window);
        t.congestion_controller_factory(Arc::new(cubic));
        t
    }
}

fn provider() {
    // Several crates may link rustls; pick ring explicitly and ignore "already installed".
    let _ = rustls::crypto::ring::default_provider().install_default();
}

fn roots(id: &Identity) -> Result<RootCertStore, TransportError> {
    let mut roots = RootCertStore::empty();
    roots
        .add(id.ca.clone())
        .map_err(|e| TransportError::Tls(format!("the cluster CA is not a valid certificate: {e}")))?;
    Ok(roots)
}

fn client_config(id: &Identity, tuning: &Tuning) -> Result<ClientConfig, TransportError> {
    provider();
    let mut tls = rustls::ClientConfig::builder()
        .with_root_certificates(roots(id)?)
        .with_client_auth_cert(id.chain.clone(), id.key.clone_key())
        .map_err(|e| TransportError::Tls(e.to_string()))?;
    tls.alpn_protocols = vec![ALPN.to_vec()];
    let quic = QuicClientConfig::try_from(tls).map_err(|e| TransportError::Tls(e.to_string()))?;
    let mut c = ClientConfig::new(Arc::new(quic));
    c.transport_config(Arc::new(tuning.transport()));
    Ok(c)
}

fn server_config(id: &Identity, tuning: &Tuning) -> Result<ServerConfig, TransportError> {
    provider();
    // Client certificates are mandatory: a peer without one signed by the cluster CA is
    // refused during the handshake, before it can send a single frame.
    let verifier =
        WebPkiClientVerifier::builder(Arc::new(roots(id)?)).build().map_err(|e| TransportError::Tls(e.to_string()))?;
    let mut tls = rustls::ServerConfig::builder()
        .with_client_cert_verifier(verifier)
        .with_single_cert(id.chain.clone(), id.key.clone_key())
        .map_err(|e| TransportError::Tls(e.to_string()))?;
    tls.alpn_protocols = vec![ALPN.to_vec()];
    let quic = QuicServerConfig::try_from(tls).map_err(|e| TransportError::Tls(e.to_string()))?;
    let mut s = ServerConfig::with_crypto(Arc::new(quic));
    s.transport_config(Arc::new(tuning.transport()));
    Ok(s)
}

/// A UDP socket with large kernel buffers: a burst of a multi-megabyte response must not
/// overflow the receive queue before the endpoint task drains it.
fn socket(bind: SocketAddr) -> Result<std::net::UdpSocket, TransportError> {
    let err = |source| TransportError::Bind { addr: bind, source };
    let s =
        socket2::Socket::new(socket2::Domain::for_address(bind), socket2::Type::DGRAM, Some(socket2::Protocol::UDP))
            .map_err(err)?;
    // The kernel caps these at net.core.[rw]mem_max; a smaller grant is fine.
    let _ = s.set_recv_buffer_size(16 << 20);
    let _ = s.set_send_buffer_size(16 << 20);
    s.bind(&bind.into()).map_err(err)?;
    Ok(s.into())
}

fn new_endpoint(bind: SocketAddr, server: Option<ServerConfig>, tuning: &Tuning) -> Result<Endpoint, TransportError> {
    let mut cfg = quinn::EndpointConfig::default();
    // Let path-MTU discovery use the large datagrams loopback and jumbo-frame LANs carry
    // (quinn's default caps payloads at Ethernet's 1472 bytes whatever the path allows).
    cfg.max_udp_payload_size(tuning.mtu_upper_bound.max(1200)).map_err(|e| TransportError::Tls(e.to_string()))?;
    Endpoint::new(cfg, server, socket(bind)?, Arc::new(quinn::TokioRuntime))
        .map_err(|source| TransportError::Bind { addr: bind, source })
}

/// An endpoint that accepts cluster peers on `bind` and can also connect out (one UDP socket
/// per process).
pub fn server_endpoint(bind: SocketAddr, id: &Identity, tuning: &Tuning) -> Result<Endpoint, TransportError> {
    let mut ep = new_endpoint(bind, Some(server_config(id, tuning)?), tuning)?;
    ep.set_default_client_config(client_config(id, tuning)?);
    Ok(ep)
}

/// An endpoint that only connects out, for clients and load generators.
pub fn client_endpoint(id: &Identity, tuning: &Tuning) -> Result<Endpoint, TransportError> {
    let mut ep = new_endpoint("0.0.0.0:0".parse().unwrap(), None, tuning)?;
    ep.set_default_client_config(client_config(id, tuning)?);
    Ok(ep)
}

/// Connects to a cluster peer, failing after `timeout`.
pub async fn connect(ep: &Endpoint, addr: SocketAddr, timeout: Duration) -> Result<quinn::Connection, TransportError> {
    let connecting = ep
        .connect(addr, embtune_protocol::wire::SERVER_NAME)
        .map_err(|e| TransportError::Connect { addr, reason: e.to_string() })?;
    match tokio::time::timeout(timeout, connecting).await {
        Ok(Ok(c)) => Ok(c),
        Ok(Err(quinn::ConnectionError::ConnectionClosed(c)))
            if c.error_code == quinn::TransportErrorCode::CONNECTION_REFUSED =>
        {
            Err(TransportError::Connect {
                addr,
                reason: "refused: the peer serves as many connections as it allows (--max-connections); close idle clients or raise the limit".into(),
            })
        }
        Ok(Err(e)) => Err(TransportError::Connect { addr, reason: e.to_string() }),
        Err(_) => Err(TransportError::Connect { addr, reason: format!("no answer within {timeout:?}") }),
    }
}
