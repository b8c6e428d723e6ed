//! The limits a serving process keeps against peers that hold the cluster certificate but
//! abuse it: header-only streams, floods of requests and connections, bodies past the byte
//! budgets. Each gets a typed error and none makes the process allocate what a header claims.

use std::sync::Arc;
use std::time::{Duration, Instant};

use embtune_protocol::codec::{self, FrameLimits};
use embtune_protocol::wire::{ErrorKind, PROTOCOL_VERSION, Request, Response};
use embtune_transport::endpoint::connect;
use embtune_transport::guard::{self, Guard, ServeLimits};
use embtune_transport::rpc::{Body, accept_loop, accept_loop_guarded, call};
use embtune_transport::{Tuning, certs, client_endpoint, server_endpoint};

const T: Duration = Duration::from_secs(10);

fn cluster() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    certs::init_cluster(dir.path()).unwrap();
    dir
}

/// A server answering `WorkerStats` with `Ack`, within `guard` (the process's when `None`).
async fn server(dir: &std::path::Path, guard: Option<Arc<Guard>>, tuning: &Tuning) -> std::net::SocketAddr {
    let id = certs::load(dir, None, None).unwrap();
    let ep = server_endpoint("127.0.0.1:0".parse().unwrap(), &id, tuning).unwrap();
    let addr = ep.local_addr().unwrap();
    let handler = |req, body: Vec<u32>, _peer| async move {
        match req {
            Request::WorkerStats => (Response::Ack, Body::Words(vec![body.len() as u32])),
            _ => (Response::Ack, Body::Empty),
        }
    };
    match guard {
        Some(g) => tokio::spawn(accept_loop_guarded(ep, FrameLimits::default(), g, handler)),
        None => tokio::spawn(accept_loop(ep, FrameLimits::default(), handler)),
    };
    addr
}

async fn client(dir: &std::path::Path, addr: std::net::SocketAddr) -> (quinn::Endpoint, quinn::Connection) {
    let id = certs::load(dir, None, None).unwrap();
    let ep = client_endpoint(&id, &Tuning::default()).unwrap();
    let conn = connect(&ep, addr, T).await.unwrap();
    (ep, conn)
}

/// A frame header claiming `meta` bytes of metadata and `body` bytes of body.
fn header(meta: u32, body: u32) -> Vec<u8> {
    let mut h = codec::encode_head_raw(PROTOCOL_VERSION, &[], body as usize).unwrap();
    h[8..12].copy_from_slice(&meta.to_le_bytes());
    h
}

/// Opens a stream, sends `bytes` without finishing it, and returns the stream's halves.
async fn hold(conn: &quinn::Connection, bytes: &[u8]) -> (quinn::SendStream, quinn::RecvStream) {
    let (mut send, recv) = conn.open_bi().await.unwrap();
    send.write_all(bytes).await.unwrap();
    (send, recv)
}

/// The error kind of the reply on `recv`.
async fn reply_kind(recv: &mut quinn::RecvStream) -> ErrorKind {
    let bytes = tokio::time::timeout(T, recv.read_to_end(1 << 20)).await.expect("a reply in time").unwrap();
    match codec::decode_meta::<Response>(&bytes[codec::HEADER_LEN..]).unwrap() {
        Response::Error(e) => e.kind,
        other => panic!("expected an error, got {other:?}"),
    }
}

fn rss_bytes() -> u64 {
    let s = std::fs::read_to_string("/proc/self/status").unwrap();
    let kb: u64 =
        s.lines().find(|l| l.starts_with("VmRSS:")).unwrap().split_whitespace().nth(1).unwrap().parse().unwrap();
    kb << 10
}

/// 150 streams (on two connections), each sending a header that claims 32 MiB of metadata and
/// then nothing: before the fix, the server allocated (and zeroed) 32 MiB per stream, 4.7 GiB in
/// all, and never gave up on them. Now the buffers grow with what arrives, so the claims cost nothing, and each
/// stream gets `TimedOut` at the read deadline. Uses the process's own guard (`accept_loop`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn header_only_streams_cost_nothing_and_time_out() {
    guard::configure(ServeLimits { read_deadline: Duration::from_secs(2), ..Default::default() });
    let dir = cluster();
    let addr = server(dir.path(), None, &Tuning::default()).await;
    let (_ep, conn) = client(dir.path(), addr).await;
    let (_ep2, conn2) = client(dir.path(), addr).await;
    let before = rss_bytes();
    let t0 = Instant::now();
    let mut held = Vec::new();
    for i in 0..150 {
        held.push(hold(if i % 2 == 0 { &conn } else { &conn2 }, &header(32 << 20, 0)).await);
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let during = rss_bytes();
    // Other requests are still served meanwhile.
    let (resp, _) =
        call(&conn, &Request::WorkerStats, Body::Words(vec![1; 10]), &FrameLimits::default(), T).await.unwrap();
    assert_eq!(resp, Response::Ack);
    for (_, recv) in held.iter_mut() {
        assert_eq!(reply_kind(recv).await, ErrorKind::TimedOut);
    }
    let waited = t0.elapsed();
    assert!(waited >= Duration::from_millis(1500) && waited < Duration::from_secs(30), "deadline after {waited:?}");
    assert!(
        during < before + (64 << 20),
        "150 header-only streams took RSS from {} MiB to {} MiB",
        before >> 20,
        during >> 20
    );
    assert!(guard::process().refused.deadlines.load(std::sync::atomic::Ordering::Relaxed) >= 150);
}

/// A body past the connection's byte budget is refused with `Overloaded` once the budget is
/// spent, and the connection goes on serving.
#[tokio::test]
async fn bytes_past_the_connection_budget_are_refused() {
    let dir = cluster();
    let g = Guard::new(ServeLimits { connection_bytes: 1 << 20, ..Default::default() });
    let addr = server(dir.path(), Some(g.clone()), &Tuning::default()).await;
    let (_ep, conn) = client(dir.path(), addr).await;
    let big = Body::Words(vec![7; 2 << 18]); // 2 MiB
    match call(&conn, &Request::WorkerStats, big, &FrameLimits::default(), T).await {
        Err(embtune_transport::TransportError::Remote(e)) => {
            assert_eq!(e.kind, ErrorKind::Overloaded);
            assert!(e.message.contains("connection"), "{}", e.message);
        }
        other => panic!("expected Overloaded, got {other:?}"),
    }
    // Within the budget, and the budget is given back after each request.
    for _ in 0..3 {
        let (resp, body) =
            call(&conn, &Request::WorkerStats, Body::Words(vec![7; 100_000]), &FrameLimits::default(), T)
                .await
                .unwrap();
        assert_eq!((resp, body), (Response::Ack, vec![100_000]));
    }
    assert_eq!(g.bytes.used(), 0, "every byte charged was given back");
}

/// The process's byte budget is shared by its connections.
#[tokio::test]
async fn bytes_past_the_process_budget_are_refused() {
    let dir = cluster();
    let g = Guard::new(ServeLimits { process_bytes: 4 << 20, ..Default::default() });
    let addr = server(dir.path(), Some(g.clone()), &Tuning::default()).await;
    let (_ep, a) = client(dir.path(), addr).await;
    // One connection sends 1.2 MiB of a 3 MiB body and stops: its buffer has grown to 3 MiB...
    let mut frame = codec::encode_head(&Request::WorkerStats, 3 << 20).unwrap();
    frame.extend(vec![0u8; 1200 << 10]);
    let (held, mut first) = hold(&a, &frame).await;
    let t0 = Instant::now();
    while g.bytes.used() < 3 << 20 {
        assert!(t0.elapsed() < T, "the held frame was never charged ({} B)", g.bytes.used());
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // ...so another connection's 2 MiB does not fit.
    let (_ep2, b) = client(dir.path(), addr).await;
    match call(&b, &Request::WorkerStats, Body::Words(vec![1; 512 << 10]), &FrameLimits::default(), T).await {
        Err(embtune_transport::TransportError::Remote(e)) => {
            assert_eq!(e.kind, ErrorKind::Overloaded);
            assert!(e.message.contains("process"), "{}", e.message);
        }
        other => panic!("expected Overloaded, got {other:?}"),
    }
    // Small requests still fit.
    let (resp, _) =
        call(&b, &Request::WorkerStats, Body::Words(vec![1; 1000]), &FrameLimits::default(), T).await.unwrap();
    assert_eq!(resp, Response::Ack);
    drop(held);
    let _ = reply_kind(&mut first).await;
}

/// Past `max_requests` in flight, a request is answered `Overloaded` without being read.
#[tokio::test]
async fn requests_past_the_process_limit_are_refused() {
    let dir = cluster();
    let g = Guard::new(ServeLimits { max_requests: 4, ..Default::default() });
    let addr = server(dir.path(), Some(g.clone()), &Tuning::default()).await;
    let (_ep, conn) = client(dir.path(), addr).await;
    let mut held = Vec::new();
    for _ in 0..4 {
        held.push(hold(&conn, &header(100, 0)).await);
    }
    let t0 = Instant::now();
    while g.requests.used() < 4 {
        assert!(t0.elapsed() < T, "the held streams never arrived");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let (_s, mut fifth) = hold(&conn, &header(100, 0)).await;
    assert_eq!(reply_kind(&mut fifth).await, ErrorKind::Overloaded);
    assert_eq!(g.refused.requests.load(std::sync::atomic::Ordering::Relaxed), 1);
    drop(held);
}

/// A connection may open `max_streams` streams at once: QUIC flow control holds the next one
/// back until a stream ends, so a flood of streams waits instead of piling up in the server.
#[tokio::test]
async fn streams_per_connection_are_bounded_by_flow_control() {
    let dir = cluster();
    let tuning = Tuning { max_streams: 8, ..Default::default() };
    let addr = server(dir.path(), Some(Guard::new(ServeLimits::default())), &tuning).await;
    let (_ep, conn) = client(dir.path(), addr).await;
    let mut held = Vec::new();
    for _ in 0..8 {
        held.push(hold(&conn, &header(100, 0)).await);
    }
    let ninth = tokio::time::timeout(Duration::from_millis(500), conn.open_bi()).await;
    assert!(ninth.is_err(), "a ninth stream opened while eight were held");
    // End two (quinn announces new stream credit once an eighth of the window is free): the
    // server answers their truncated frames, and their places are free.
    for _ in 0..2 {
        let (mut send, mut recv) = held.pop().unwrap();
        send.finish().unwrap();
        assert_eq!(reply_kind(&mut recv).await, ErrorKind::BadFrame);
    }
    assert!(tokio::time::timeout(T, conn.open_bi()).await.is_ok(), "a stream opens once one ends");
}

/// Past `max_connections`, a handshake is refused with a message that names the limit; a
/// connection that closes frees its place.
#[tokio::test]
async fn connections_past_the_limit_are_refused() {
    let dir = cluster();
    let g = Guard::new(ServeLimits { max_connections: 2, ..Default::default() });
    let addr = server(dir.path(), Some(g.clone()), &Tuning::default()).await;
    let (_e1, c1) = client(dir.path(), addr).await;
    let (_e2, _c2) = client(dir.path(), addr).await;
    let id = certs::load(dir.path(), None, None).unwrap();
    let ep = client_endpoint(&id, &Tuning::default()).unwrap();
    let err = connect(&ep, addr, T).await.expect_err("a third connection was accepted");
    assert!(err.to_string().contains("--max-connections"), "{err}");
    // (A client retransmits its first packet, so one refused attempt may count more than once.)
    assert!(g.refused.connections.load(std::sync::atomic::Ordering::Relaxed) >= 1);
    c1.close(0u32.into(), b"done");
    let t0 = Instant::now();
    loop {
        match connect(&ep, addr, T).await {
            Ok(_) => break,
            Err(e) => assert!(t0.elapsed() < T, "no place after a connection closed: {e}"),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
