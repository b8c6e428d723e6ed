//! The transport over real sockets: mutual TLS refuses strangers, and bad frames get typed
//! errors without breaking the connection.

use std::sync::Arc;
use std::time::Duration;

use embtune_protocol::codec::{self, FrameLimits};
use embtune_protocol::wire::{ErrorKind, PROTOCOL_VERSION, Request, Response};
use embtune_transport::endpoint::connect;
use embtune_transport::rpc::{Body, accept_loop, call};
use embtune_transport::{Tuning, certs, client_endpoint, server_endpoint};

const T: Duration = Duration::from_secs(5);

/// A server that answers `WorkerStats` with `Ack` and echoes a body's word count.
async fn server(dir: &std::path::Path) -> std::net::SocketAddr {
    let id = certs::load(dir, None, None).unwrap();
    let ep = server_endpoint("127.0.0.1:0".parse().unwrap(), &id, &Tuning::default()).unwrap();
    let addr = ep.local_addr().unwrap();
    let limits = FrameLimits { max_meta: 1 << 16, max_body: 1 << 20 };
    tokio::spawn(accept_loop(ep, limits, |req, body, _peer| async move {
        match req {
            Request::WorkerStats => (Response::Ack, Body::Words(vec![body.len() as u32])),
            _ => (Response::Registered { worker: 1, heartbeat_ms: 1 }, Body::Empty),
        }
    }));
    addr
}

fn cluster() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    certs::init_cluster(dir.path()).unwrap();
    dir
}

#[tokio::test]
async fn calls_round_trip_with_bodies() {
    let dir = cluster();
    let addr = server(dir.path()).await;
    let id = certs::load(dir.path(), None, None).unwrap();
    let ep = client_endpoint(&id, &Tuning::default()).unwrap();
    let conn = connect(&ep, addr, T).await.unwrap();
    let (resp, body) =
        call(&conn, &Request::WorkerStats, Body::Words(vec![7; 1000]), &FrameLimits::default(), T).await.unwrap();
    assert_eq!(resp, Response::Ack);
    assert_eq!(body, vec![1000]);
    // Many concurrent calls on one connection, one stream each.
    let mut tasks = Vec::new();
    for i in 0..64u32 {
        let conn = conn.clone();
        tasks.push(tokio::spawn(async move {
            call(&conn, &Request::WorkerStats, Body::Words(vec![0; i as usize]), &FrameLimits::default(), T)
                .await
                .unwrap()
                .1
        }));
    }
    for (i, t) in tasks.into_iter().enumerate() {
        assert_eq!(t.await.unwrap(), vec![i as u32]);
    }
}

#[tokio::test]
async fn a_certificate_from_another_cluster_is_refused() {
    let dir = cluster();
    let addr = server(dir.path()).await;
    let other = cluster();
    let id = certs::load(other.path(), None, None).unwrap();
    let ep = client_endpoint(&id, &Tuning::default()).unwrap();
    assert!(connect(&ep, addr, T).await.is_err(), "a foreign CA must not connect");
}

#[tokio::test]
async fn a_client_without_a_certificate_is_refused() {
    let dir = cluster();
    let addr = server(dir.path()).await;
    let id = certs::load(dir.path(), None, None).unwrap();
    // Trusts the cluster CA but presents no certificate of its own.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut roots = rustls::RootCertStore::empty();
    roots.add(id.ca.clone()).unwrap();
    let mut tls = rustls::ClientConfig::builder().with_root_certificates(roots).with_no_client_auth();
    tls.alpn_protocols = vec![embtune_protocol::wire::ALPN.to_vec()];
    let quic = quinn::crypto::rustls::QuicClientConfig::try_from(tls).unwrap();
    let mut ep = quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();
    ep.set_default_client_config(quinn::ClientConfig::new(Arc::new(quic)));
    // The handshake may complete on the client before the server's refusal arrives; a request
    // must fail either way.
    let refused = match connect(&ep, addr, T).await {
        Err(_) => true,
        Ok(conn) => call(&conn, &Request::WorkerStats, Body::Empty, &FrameLimits::default(), T).await.is_err(),
    };
    assert!(refused, "a client without a certificate was served");
}

/// Sends raw bytes as a frame and returns the reply.
async fn raw(conn: &quinn::Connection, bytes: &[u8]) -> Response {
    let (mut send, mut recv) = conn.open_bi().await.unwrap();
    send.write_all(bytes).await.unwrap();
    let _ = send.finish();
    let reply = recv.read_to_end(1 << 20).await.unwrap();
    codec::decode_meta(&reply[codec::HEADER_LEN..]).unwrap()
}

fn kind(r: Response) -> ErrorKind {
    match r {
        Response::Error(e) => e.kind,
        other => panic!("expected an error, got {other:?}"),
    }
}

#[tokio::test]
async fn bad_frames_get_typed_errors_and_the_connection_survives() {
    let dir = cluster();
    let addr = server(dir.path()).await;
    let id = certs::load(dir.path(), None, None).unwrap();
    let ep = client_endpoint(&id, &Tuning::default()).unwrap();
    let conn = connect(&ep, addr, T).await.unwrap();

    assert_eq!(kind(raw(&conn, b"GET / HTTP/1.1\r\n\r\n").await), ErrorKind::BadFrame);
    assert_eq!(kind(raw(&conn, b"EMB").await), ErrorKind::BadFrame, "truncated header");
    let wrong = codec::encode_head_raw(PROTOCOL_VERSION + 1, &[2], 0).unwrap();
    assert_eq!(kind(raw(&conn, &wrong).await), ErrorKind::WrongVersion);
    let garbage = codec::encode_head_raw(PROTOCOL_VERSION, &[0xee, 0xee, 0xee], 0).unwrap();
    assert_eq!(kind(raw(&conn, &garbage).await), ErrorKind::BadFrame);
    let mut short = codec::encode_head(&Request::WorkerStats, 64).unwrap();
    short.extend_from_slice(&[0; 8]);
    assert_eq!(kind(raw(&conn, &short).await), ErrorKind::BadFrame, "body shorter than announced");
    // 64 MiB announced against a 1 MiB limit: refused from the header, nothing read.
    let big = codec::encode_head(&Request::WorkerStats, 64 << 20).unwrap();
    assert_eq!(kind(raw(&conn, &big).await), ErrorKind::Oversized);

    let (resp, _) = call(&conn, &Request::WorkerStats, Body::Empty, &FrameLimits::default(), T).await.unwrap();
    assert_eq!(resp, Response::Ack, "the connection still serves requests");
}
