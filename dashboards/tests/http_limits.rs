//! The dashboard's HTTP server against slow and idle clients: a request header that never ends
//! is cut off, an idle connection is closed, and connections past the cap are closed at once,
//! while the server keeps answering others.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use embtune_coordinator::server::{Coordinator, CoordinatorConfig};
use embtune_dashboards::{HttpLimits, serve_with};

async fn coordinator(dir: &std::path::Path) -> Coordinator {
    let certs = dir.join("cluster");
    embtune_transport::certs::init_cluster(&certs).unwrap();
    Coordinator::start(CoordinatorConfig::new("127.0.0.1:0".parse().unwrap(), certs, dir.join("data"))).await.unwrap()
}

/// Whether the server closed `s` (a read returns end of file, or the connection is reset),
/// waiting up to `within`.
async fn closed_within(s: &mut TcpStream, within: Duration) -> bool {
    let mut buf = [0u8; 4096];
    let t0 = Instant::now();
    while t0.elapsed() < within {
        match tokio::time::timeout(within - t0.elapsed(), s.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            Ok(Ok(_)) => continue,
            Err(_) => return false,
        }
    }
    false
}

async fn healthz(addr: SocketAddr) -> bool {
    let Ok(Ok(mut s)) = tokio::time::timeout(Duration::from_secs(5), TcpStream::connect(addr)).await else {
        return false;
    };
    if s.write_all(b"GET /healthz HTTP/1.0\r\n\r\n").await.is_err() {
        return false;
    }
    let mut out = Vec::new();
    matches!(tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut out)).await, Ok(Ok(_)))
        && String::from_utf8_lossy(&out).starts_with("HTTP/1.0 200")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_headers_and_idle_connections_are_closed() {
    let dir = tempfile::tempdir().unwrap();
    let c = coordinator(dir.path()).await;
    let limits = HttpLimits {
        max_connections: 64,
        header_timeout: Duration::from_secs(1),
        idle_timeout: Duration::from_secs(2),
    };
    let addr = serve_with(c, "127.0.0.1:0".parse().unwrap(), None, limits).await.unwrap();

    // Half-open requests: a header that never ends, one byte at a time or not at all.
    let mut slow = Vec::new();
    for _ in 0..20 {
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(b"GET /api/cluster HTTP/1.1\r\nHost: x\r\n").await.unwrap();
        slow.push(s);
    }
    assert!(healthz(addr).await, "the server answers others meanwhile");
    for s in slow.iter_mut() {
        assert!(closed_within(s, Duration::from_secs(10)).await, "a half-open request was left open");
    }

    // An idle keep-alive connection is closed after its last reply.
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n").await.unwrap();
    let mut buf = [0u8; 1024];
    let n = s.read(&mut buf).await.unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
    let t0 = Instant::now();
    assert!(closed_within(&mut s, Duration::from_secs(15)).await, "an idle connection was left open");
    assert!(t0.elapsed() >= Duration::from_millis(900), "closed after {:?}, before it was idle", t0.elapsed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_past_the_cap_are_closed_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let c = coordinator(dir.path()).await;
    let limits = HttpLimits { max_connections: 8, ..Default::default() };
    let addr = serve_with(c, "127.0.0.1:0".parse().unwrap(), None, limits).await.unwrap();
    let mut held = Vec::new();
    for _ in 0..8 {
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n").await.unwrap();
        held.push(s);
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut ninth = TcpStream::connect(addr).await.unwrap();
    assert!(closed_within(&mut ninth, Duration::from_secs(5)).await, "a ninth connection was served");
    // Once the held ones go, the server answers again.
    drop(held);
    let t0 = Instant::now();
    while !healthz(addr).await {
        assert!(t0.elapsed() < Duration::from_secs(10), "no answer after the held connections closed");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
