//! The transport measured against plain TCP on the same path, in the same run.
//!
//! Two figures: the round trip of a small request with a response of `size` bytes (latency),
//! and the throughput of streaming responses of `size` bytes back to back (bandwidth). TCP
//! sends the same bytes over one connection with a 4-byte length prefix; QUIC sends embtune
//! frames, one request per stream, with the cluster's TLS. Rounds alternate.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use embtune_protocol::codec::FrameLimits;
use embtune_protocol::tuning::median;
use embtune_protocol::wire::{Request, Response};

use crate::endpoint::connect;
use crate::rpc::{Body, accept_loop, call};
use crate::{Identity, TransportError, Tuning, client_endpoint, server_endpoint};

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct NetReport {
    pub response_bytes: usize,
    pub rounds: usize,
    /// Median round trip, microseconds.
    pub tcp_rtt_us: f64,
    pub quic_rtt_us: f64,
    /// Median streaming throughput, bytes per second.
    pub tcp_bytes_per_s: f64,
    pub quic_bytes_per_s: f64,
    /// `quic / tcp` throughput.
    pub ratio: f64,
    /// QUIC connections in the striped figures below (1: none measured).
    #[serde(default)]
    pub connections: usize,
    /// Round trip of one response of `size` bytes fetched as `connections` equal stripes, one
    /// per connection, concurrently: how much parallel crypto on both ends saves a large reply.
    #[serde(default)]
    pub quic_striped_rtt_us: Option<f64>,
    /// Streaming throughput with the requests in flight spread over `connections` connections.
    #[serde(default)]
    pub quic_multi_bytes_per_s: Option<f64>,
}

/// Runs the comparison over loopback (or `bind`'s interface).
pub async fn run(
    id: &Identity,
    bind: std::net::IpAddr,
    size: usize,
    rounds: usize,
    round: Duration,
    inflight: usize,
    connections: usize,
) -> Result<NetReport, TransportError> {
    // QUIC server answering `WorkerStats` with `size` bytes and `ClusterStatus` with one stripe
    // of them (`size / connections`).
    let ep = server_endpoint(SocketAddr::new(bind, 0), id, &Tuning::default())?;
    let qaddr = ep.local_addr().map_err(|e| TransportError::Stream(e.to_string()))?;
    let words = size / 4;
    let connections = connections.max(1);
    let stripe_words = words.div_ceil(connections);
    tokio::spawn(accept_loop(ep, FrameLimits::default(), move |req, _body, _peer| async move {
        let n = if matches!(req, Request::ClusterStatus) { stripe_words } else { words };
        (Response::Ack, Body::Words(vec![7u32; n]))
    }));
    // TCP server answering each 1-byte request with a length-prefixed response of `size` bytes.
    let tl = tokio::net::TcpListener::bind(SocketAddr::new(bind, 0))
        .await
        .map_err(|e| TransportError::Stream(e.to_string()))?;
    let taddr = tl.local_addr().map_err(|e| TransportError::Stream(e.to_string()))?;
    tokio::spawn(async move {
        while let Ok((mut s, _)) = tl.accept().await {
            let _ = s.set_nodelay(true);
            tokio::spawn(async move {
                let payload = vec![7u8; size];
                let mut req = [0u8; 1];
                while s.read_exact(&mut req).await.is_ok() {
                    if s.write_all(&(size as u32).to_le_bytes()).await.is_err() || s.write_all(&payload).await.is_err()
                    {
                        break;
                    }
                }
            });
        }
    });
    let cep = client_endpoint(id, &Tuning::default())?;
    let qconn = connect(&cep, qaddr, Duration::from_secs(5)).await?;
    // The lanes of the striped figures, as a client or the coordinator opens them.
    let lane_eps = crate::lanes::endpoints(id, &Tuning::default(), connections)?;
    let lanes = crate::lanes::Lanes::connect(&lane_eps, qaddr, Duration::from_secs(5)).await?;

    let limits = FrameLimits::default();
    // One TCP connection per request in flight: TCP has no streams to multiplex on.
    let mut tconns = Vec::new();
    for _ in 0..inflight.max(1) {
        let s = tokio::net::TcpStream::connect(taddr).await.map_err(|e| TransportError::Stream(e.to_string()))?;
        s.set_nodelay(true).map_err(|e| TransportError::Stream(e.to_string()))?;
        tconns.push(s);
    }
    let mut buf = vec![0u8; size];
    let tcp_once = async |s: &mut tokio::net::TcpStream, buf: &mut Vec<u8>| -> std::io::Result<()> {
        s.write_all(&[1]).await?;
        let mut len = [0u8; 4];
        s.read_exact(&mut len).await?;
        s.read_exact(&mut buf[..u32::from_le_bytes(len) as usize]).await?;
        Ok(())
    };
    // Warm both paths (congestion windows, MTU discovery).
    for _ in 0..20 {
        call(&qconn, &Request::WorkerStats, Body::Empty, &limits, Duration::from_secs(10)).await?;
        let calls = (0..connections).map(|_| (Request::WorkerStats, Body::Empty)).collect();
        lanes.call_all(calls, limits, Duration::from_secs(10)).await?;
        tcp_once(&mut tconns[0], &mut buf).await.map_err(|e| TransportError::Stream(e.to_string()))?;
    }
    let (mut t_rtt, mut q_rtt, mut t_bw, mut q_bw) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let (mut s_rtt, mut m_bw) = (Vec::new(), Vec::new());
    for _ in 0..rounds {
        // Latency: one request at a time.
        let mut samples = Vec::new();
        let t0 = Instant::now();
        while t0.elapsed() < round / 4 {
            let s = Instant::now();
            tcp_once(&mut tconns[0], &mut buf).await.map_err(|e| TransportError::Stream(e.to_string()))?;
            samples.push(s.elapsed().as_secs_f64() * 1e6);
        }
        t_rtt.push(median(&samples));
        let mut samples = Vec::new();
        let t0 = Instant::now();
        while t0.elapsed() < round / 4 {
            let s = Instant::now();
            call(&qconn, &Request::WorkerStats, Body::Empty, &limits, Duration::from_secs(10)).await?;
            samples.push(s.elapsed().as_secs_f64() * 1e6);
        }
        q_rtt.push(median(&samples));
        // Bandwidth: `inflight` requests outstanding.
        let t0 = Instant::now();
        let mut bytes = 0usize;
        while t0.elapsed() < round / 4 {
            let mut fs = Vec::new();
            for s in tconns.iter_mut() {
                fs.push(async move {
                    let mut b = vec![0u8; size];
                    s.write_all(&[1]).await?;
                    let mut len = [0u8; 4];
                    s.read_exact(&mut len).await?;
                    s.read_exact(&mut b[..u32::from_le_bytes(len) as usize]).await
                });
            }
            for f in fs {
                f.await.map_err(|e| TransportError::Stream(e.to_string()))?;
                bytes += size;
            }
        }
        t_bw.push(bytes as f64 / t0.elapsed().as_secs_f64());
        let t0 = Instant::now();
        let mut bytes = 0usize;
        while t0.elapsed() < round / 4 {
            let calls: Vec<_> = (0..inflight.max(1))
                .map(|_| {
                    let c = qconn.clone();
                    tokio::spawn(async move {
                        call(&c, &Request::WorkerStats, Body::Empty, &FrameLimits::default(), Duration::from_secs(10))
                            .await
                    })
                })
                .collect();
            for c in calls {
                c.await.map_err(|e| TransportError::Stream(e.to_string()))??;
                bytes += size;
            }
        }
        q_bw.push(bytes as f64 / t0.elapsed().as_secs_f64());
        if connections > 1 {
            // Striped latency: one stripe per connection, all at once.
            let mut samples = Vec::new();
            let t0 = Instant::now();
            while t0.elapsed() < round / 4 {
                let s = Instant::now();
                let calls = (0..connections).map(|_| (Request::ClusterStatus, Body::Empty)).collect();
                lanes.call_all(calls, limits, Duration::from_secs(10)).await?;
                samples.push(s.elapsed().as_secs_f64() * 1e6);
            }
            s_rtt.push(median(&samples));
            // Throughput with the requests in flight dealt over the connections.
            let t0 = Instant::now();
            let mut bytes = 0usize;
            while t0.elapsed() < round / 4 {
                let calls = (0..inflight.max(1)).map(|_| (Request::WorkerStats, Body::Empty)).collect();
                bytes += size * lanes.call_all(calls, limits, Duration::from_secs(10)).await?.len();
            }
            m_bw.push(bytes as f64 / t0.elapsed().as_secs_f64());
        }
    }
    tracing::info!("QUIC path at the end: {:?}", qconn.stats().path);
    let (tb, qb) = (median(&t_bw), median(&q_bw));
    Ok(NetReport {
        response_bytes: size,
        rounds,
        tcp_rtt_us: median(&t_rtt),
        quic_rtt_us: median(&q_rtt),
        tcp_bytes_per_s: tb,
        quic_bytes_per_s: qb,
        ratio: qb / tb,
        connections,
        quic_striped_rtt_us: (connections > 1).then(|| median(&s_rtt)),
        quic_multi_bytes_per_s: (connections > 1).then(|| median(&m_bw)),
    })
}
