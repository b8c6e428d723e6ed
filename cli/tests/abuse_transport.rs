//! Abusive peers against a real cluster (a coordinator and two workers started from the
//! `embtune` binary): peers that hold the cluster certificate and open streams that send only a
//! header, flood streams, flood idle connections, or claim frames past the limits. Each attack
//! must get typed errors, keep the attacked process's peak RSS within twice its idle RSS, and
//! leave the cluster answering verified queries. The figures these tests print are the ones in
//! RELIABILITY.md: `cargo test -p embtune --test abuse_transport -- --nocapture --test-threads 1`.

mod common;

use std::path::Path;
use std::time::Duration;

use common::{Cluster, reset_peak_rss, rss};
use embtune_client::CoordinatorClient;
use embtune_protocol::codec::{self, FrameLimits};
use embtune_protocol::wire::{ErrorKind, PROTOCOL_VERSION, Request, Response};
use embtune_transport::endpoint::connect;
use embtune_transport::{Tuning, certs, client_endpoint};
use embtune_worker::engine::reference::Reference;
use embtune_workloads::{BatchGenerator, ModelSpec, Preset, PresetOptions};

const T: Duration = Duration::from_secs(15);

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap()
}

/// Criteo Kaggle's 26 tables at 1%: replies of 426 KB per batch of 256, as a served model.
fn spec() -> ModelSpec {
    Preset::CriteoKaggle.spec(&PresetOptions { scale: Some(0.01), ..Default::default() }).unwrap()
}

/// A cluster with the model deployed, a client connected to it, and the processes warmed by
/// two seconds of load (16 queries at once): their idle RSS is that of a cluster that has
/// served, with its buffers allocated, as the figures were.
fn ready(coordinator_args: &[&str]) -> (Cluster, tokio::runtime::Runtime, CoordinatorClient, ModelSpec) {
    let c = Cluster::start_with(2, coordinator_args);
    let rt = rt();
    let spec = spec();
    let client = rt.block_on(async {
        let client = CoordinatorClient::connect(c.addr, &c.certs).await.unwrap();
        let status = client.wait_for_workers(2, *common::PATIENCE).await.unwrap();
        let topo = embtune_protocol::Topology::of(
            status
                .workers
                .iter()
                .map(|w| embtune_protocol::WorkerShape {
                    cores: w.cores,
                    memory_bytes: w.memory_bytes,
                    core_memory_bytes: None,
                })
                .collect(),
        );
        let plan = embtune_tuner::Strategy::AllShard.plan(&spec, &topo, &Default::default()).unwrap();
        client.deploy(&spec, &plan).await.unwrap();
        let g = BatchGenerator::new(&spec).unwrap();
        let batches = std::sync::Arc::new(g.pool(0, 32));
        let t0 = std::time::Instant::now();
        let tasks: Vec<_> = (0..16)
            .map(|k| {
                let (client, batches, digest) = (client.clone(), batches.clone(), spec.digest());
                tokio::spawn(async move {
                    let mut i = k;
                    while t0.elapsed() < Duration::from_secs(2) {
                        client.query(&batches[i % batches.len()], digest).await.expect("warm-up queries");
                        i += 16;
                    }
                })
            })
            .collect();
        for t in tasks {
            t.await.unwrap();
        }
        client
    });
    for i in 0..5 {
        verified(&rt, &client, &spec, i);
    }
    (c, rt, client, spec)
}

/// One query through the coordinator, checked against the reference.
fn verified(rt: &tokio::runtime::Runtime, client: &CoordinatorClient, spec: &ModelSpec, i: u64) {
    let g = BatchGenerator::new(spec).unwrap();
    let batch = g.batch(1000 + i);
    let (_, out) = rt.block_on(client.query(&batch, spec.digest())).expect("the cluster answers queries");
    let tables: Vec<u16> = (0..spec.tables.len() as u16).collect();
    Reference::new(spec, &[]).pool(&batch, &tables).check(&out).unwrap_or_else(|m| panic!("wrong result: {m}"));
}

async fn endpoint(certs: &Path) -> quinn::Endpoint {
    let id = certs::load(certs, None, None).unwrap();
    client_endpoint(&id, &Tuning::default()).unwrap()
}

/// A header claiming `meta` and `body` bytes.
fn header(meta: u32, body: u32) -> Vec<u8> {
    let mut h = codec::encode_head_raw(PROTOCOL_VERSION, &[], body as usize).unwrap();
    h[8..12].copy_from_slice(&meta.to_le_bytes());
    h
}

/// The error kind a stream's reply carries.
async fn reply_kind(recv: &mut quinn::RecvStream) -> Option<ErrorKind> {
    let bytes = tokio::time::timeout(T, recv.read_to_end(1 << 20)).await.ok()?.ok()?;
    match codec::decode_meta::<Response>(bytes.get(codec::HEADER_LEN..)?).ok()? {
        Response::Error(e) => Some(e.kind),
        _ => None,
    }
}

/// Idle RSS, then the peak while `attack` runs (from VmHWM, reset before it), in MiB; prints
/// the row RELIABILITY.md takes and asserts the peak is within twice the idle figure. Returns
/// the peak, bytes.
fn within_twice_idle(what: &str, pid: u32, attack: impl FnOnce()) -> u64 {
    std::thread::sleep(Duration::from_millis(500));
    let (idle, _) = rss(pid);
    let exact = reset_peak_rss(pid);
    let sampler = {
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let s = stop.clone();
        let h = std::thread::spawn(move || {
            let mut peak = 0;
            while !s.load(std::sync::atomic::Ordering::Relaxed) {
                peak = peak.max(rss(pid).0);
                std::thread::sleep(Duration::from_millis(20));
            }
            peak
        });
        (stop, h)
    };
    attack();
    sampler.0.store(true, std::sync::atomic::Ordering::Relaxed);
    let sampled = sampler.1.join().unwrap();
    let (after, hwm) = rss(pid);
    let peak = if exact { hwm.max(sampled) } else { sampled };
    let mib = |b: u64| b as f64 / (1 << 20) as f64;
    println!(
        "RELIABILITY | {what} | idle {:.0} MiB | peak {:.0} MiB ({:.2}x) | after {:.0} MiB",
        mib(idle),
        mib(peak),
        peak as f64 / idle as f64,
        mib(after)
    );
    assert!(peak <= 2 * idle, "{what}: peak RSS {:.0} MiB against {:.0} MiB idle", mib(peak), mib(idle));
    peak
}

/// Header-only streams: 25 connections x 128 streams (the most a connection may open), each
/// sending a header that claims 32 MiB of metadata and nothing more (before the fix: 150 such streams took the coordinator from 1
/// to 5.4 GB). Against the coordinator and a worker.
#[test]
fn header_only_streams_time_out_and_cost_no_memory() {
    let (c, rt, client, spec) = ready(&[]);
    let targets = [
        ("coordinator", c.addr, c.coordinator.as_ref().unwrap().pid()),
        ("worker", c.workers[0].0, c.workers[0].1.pid()),
    ];
    for (name, addr, pid) in targets {
        let mut kinds = Vec::new();
        within_twice_idle(&format!("header-only streams (3,200) against the {name}"), pid, || {
            rt.block_on(async {
                let mut held = Vec::new();
                let mut eps = Vec::new();
                for _ in 0..25 {
                    let ep = endpoint(&c.certs).await;
                    let conn = connect(&ep, addr, T).await.unwrap();
                    for _ in 0..128 {
                        let (mut send, recv) = conn.open_bi().await.unwrap();
                        send.write_all(&header(32 << 20, 0)).await.unwrap();
                        held.push((send, recv));
                    }
                    eps.push((ep, conn));
                }
                // The cluster answers verified queries meanwhile (the worker's part included).
                for i in 0..10 {
                    let g = BatchGenerator::new(&spec).unwrap();
                    let batch = g.batch(2000 + i);
                    let (_, out) = client.query(&batch, spec.digest()).await.expect("queries during the attack");
                    let tables: Vec<u16> = (0..spec.tables.len() as u16).collect();
                    Reference::new(&spec, &[]).pool(&batch, &tables).check(&out).unwrap();
                }
                // Every stream is answered `TimedOut` at the read deadline (10 s).
                for (_, recv) in held.iter_mut().step_by(50) {
                    kinds.push(reply_kind(recv).await);
                }
                drop(held);
                drop(eps);
            });
        });
        assert!(kinds.iter().all(|k| *k == Some(ErrorKind::TimedOut)), "{name}: {kinds:?}");
        verified(&rt, &client, &spec, 7);
    }
}

/// A stream flood: 80 connections x 128 streams (the most a connection may open) of
/// header-only requests. The first 5,120 fit the process's 8,192 requests in flight, and the
/// cluster answers verified queries meanwhile; past the limit, the surplus gets `Overloaded` at
/// once, without being read.
#[test]
fn stream_floods_past_the_process_limit_are_refused_overloaded() {
    let (c, rt, client, spec) = ready(&[]);
    let pid = c.coordinator.as_ref().unwrap().pid();
    let mut overloaded = 0;
    within_twice_idle("stream flood (10,240 streams) against the coordinator", pid, || {
        rt.block_on(async {
            let ep = endpoint(&c.certs).await;
            let mut held = Vec::new();
            let mut conns = Vec::new();
            for k in 0..80 {
                if k == 40 {
                    verified_async(&client, &spec).await;
                }
                let conn = connect(&ep, c.addr, T).await.unwrap();
                for _ in 0..128 {
                    let (mut send, recv) = tokio::time::timeout(T, conn.open_bi()).await.unwrap().unwrap();
                    send.write_all(&header(100, 0)).await.unwrap();
                    held.push((send, recv));
                }
                conns.push(conn);
            }
            // The refused ones were answered at once; the rest wait for the deadline.
            for (_, recv) in held.iter_mut().rev().take(3000) {
                if let Ok(Ok(bytes)) = tokio::time::timeout(Duration::from_millis(5), recv.read_to_end(1 << 16)).await
                    && let Ok(Response::Error(e)) = codec::decode_meta::<Response>(&bytes[codec::HEADER_LEN..])
                {
                    assert_eq!(e.kind, ErrorKind::Overloaded, "{e}");
                    overloaded += 1;
                }
            }
            drop(held);
        });
    });
    assert!(overloaded >= 1000, "only {overloaded} of the 2,048 streams past the limit were refused Overloaded");
    // Once the flood ends, queries are served again.
    let served = common::wait_until(*common::PATIENCE, || {
        let g = BatchGenerator::new(&spec).unwrap();
        rt.block_on(client.query(&g.batch(5), spec.digest())).is_ok()
    });
    assert!(served.is_some(), "the coordinator did not serve again after the flood");
    verified(&rt, &client, &spec, 8);
}

async fn verified_async(client: &CoordinatorClient, spec: &ModelSpec) {
    let g = BatchGenerator::new(spec).unwrap();
    for i in 0..5 {
        let batch = g.batch(3000 + i);
        let (_, out) = client.query(&batch, spec.digest()).await.expect("queries during the attack");
        let tables: Vec<u16> = (0..spec.tables.len() as u16).collect();
        Reference::new(spec, &[]).pool(&batch, &tables).check(&out).unwrap();
    }
}

/// An idle-connection flood: 400 connections against a coordinator with the default cap of
/// 256 (`--max-connections`). The surplus is refused at the handshake with a message naming
/// the flag, the peak stays within twice idle, and once they close the memory comes back.
#[test]
fn idle_connection_floods_are_capped_and_their_memory_comes_back() {
    let (c, rt, client, spec) = ready(&[]);
    let pid = c.coordinator.as_ref().unwrap().pid();
    let (idle, _) = rss(pid);
    let mut refused = Vec::new();
    let peak = within_twice_idle("idle connections (400, cap 256) against the coordinator", pid, || {
        rt.block_on(async {
            // Several endpoints, as many clients would be.
            let mut eps = Vec::new();
            for _ in 0..8 {
                eps.push(endpoint(&c.certs).await);
            }
            let mut open = Vec::new();
            for i in 0..400 {
                match connect(&eps[i % eps.len()], c.addr, Duration::from_secs(5)).await {
                    Ok(conn) => open.push(conn),
                    Err(e) => refused.push(e.to_string()),
                }
            }
            // They sit idle (keep-alives only) for a while; the cluster serves meanwhile.
            tokio::time::sleep(Duration::from_secs(2)).await;
            verified_async(&client, &spec).await;
            for conn in &open {
                conn.close(0u32.into(), b"done");
            }
            drop(open);
            for ep in &eps {
                ep.wait_idle().await;
            }
        });
    });
    // The cluster's own connections (2 workers, the client's lanes) hold some of the 256.
    assert!(refused.len() >= 144, "only {} of 400 connections were refused", refused.len());
    assert!(refused.iter().all(|e| e.contains("--max-connections")), "{:?}", &refused[..3.min(refused.len())]);
    // The memory of the closed connections comes back (the heap is trimmed after closes): at
    // least two thirds of what the flood added, give or take 8 MiB of the allocator's and the
    // runtime's own noise (where the cap kept the flood from adding more than that, there is
    // nothing to give back).
    let slack = (peak.saturating_sub(idle) / 3).max(8 << 20);
    let back = common::wait_until(Duration::from_secs(20), || rss(pid).0 <= idle + slack);
    let now = rss(pid).0;
    println!(
        "RELIABILITY | idle connections closed | idle {} MiB | peak {} MiB | after closing {} MiB",
        idle >> 20,
        peak >> 20,
        now >> 20
    );
    assert!(
        back.is_some(),
        "RSS stayed at {} MiB after the connections closed (idle {} MiB, peak {} MiB)",
        now >> 20,
        idle >> 20,
        peak >> 20
    );
    verified(&rt, &client, &spec, 9);
}

/// Frames that claim more than the limits get `Oversized` from their header alone, and ones
/// that claim the most allowed and send little get `TimedOut`; neither allocates the claim.
#[test]
fn oversized_claims_are_refused_from_the_header() {
    let (c, rt, client, spec) = ready(&[]);
    let pid = c.coordinator.as_ref().unwrap().pid();
    let mut kinds = Vec::new();
    within_twice_idle("oversized claims (200 frames) against the coordinator", pid, || {
        rt.block_on(async {
            let ep = endpoint(&c.certs).await;
            // Two connections: one may open 128 streams at once.
            let conns = [connect(&ep, c.addr, T).await.unwrap(), connect(&ep, c.addr, T).await.unwrap()];
            let limits = FrameLimits::default();
            let mut held = Vec::new();
            for i in 0..200u32 {
                let conn = &conns[i as usize % 2];
                let (mut send, recv) = tokio::time::timeout(T, conn.open_bi()).await.unwrap().unwrap();
                let h = match i % 4 {
                    0 => header(limits.max_meta + 1, 0),
                    1 => header(0, limits.max_body + 4),
                    2 => header(u32::MAX, u32::MAX - 3),
                    // Within the limits, with a little of it sent: the rest never comes.
                    _ => {
                        let mut h = codec::encode_head(&Request::WorkerStats, limits.max_body as usize).unwrap();
                        h.extend(vec![0u8; 64 << 10]);
                        h
                    }
                };
                send.write_all(&h).await.unwrap();
                held.push((i, send, recv));
            }
            verified_async(&client, &spec).await;
            for (i, _, recv) in held.iter_mut() {
                kinds.push((*i % 4, reply_kind(recv).await));
            }
        });
    });
    for (form, kind) in kinds {
        let want = if form == 3 { ErrorKind::TimedOut } else { ErrorKind::Oversized };
        assert_eq!(kind, Some(want), "claim form {form}");
    }
    verified(&rt, &client, &spec, 10);
}

/// `bench` with one lane (no striping) and a batch over the coordinator's per-request limit
/// reports the refusal as `BatchTooLarge`, not as results that differ from the reference.
#[test]
fn a_batch_over_the_request_limit_is_reported_as_too_large() {
    let c = Cluster::start(1);
    let t = c.target_args();
    let rt = rt();
    rt.block_on(async {
        let client = CoordinatorClient::connect(c.addr, &c.certs).await.unwrap();
        client.wait_for_workers(1, *common::PATIENCE).await.unwrap();
    });
    let mut args: Vec<&str> = vec!["bench"];
    args.extend(t.iter().map(String::as_str));
    args.extend([
        "--preset",
        "synthetic",
        "--tables",
        "1",
        "--rows",
        "1000",
        "--dim",
        "4",
        "--pooling",
        "1",
        "--batch",
        "70000",
        "--duration",
        "0.3",
        "--warmup",
        "0",
        "--verify",
        "--json",
    ]);
    let out = std::process::Command::new(common::exe()).args(&args).env("EMBTUNE_LANES", "1").output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "a batch over the limit was served");
    assert!(err.contains("BatchTooLarge"), "{err}");
    assert!(!err.contains("differ from the reference"), "{err}");
}

/// 1,000 half-open HTTP requests against the coordinator's dashboard (the header never ends):
/// past 256 connections the rest are closed at once, the others at the 10 s header timeout, and
/// the dashboard answers meanwhile.
#[test]
fn half_open_http_requests_are_capped_and_cut_off() {
    let (c, rt, client, spec) = ready(&[]);
    let pid = c.coordinator.as_ref().unwrap().pid();
    let file: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(c.dir.path().join("data/coordinator.json")).unwrap()).unwrap();
    let http: std::net::SocketAddr = file["http"].as_str().unwrap().parse().unwrap();
    let mut closed = 0;
    within_twice_idle("half-open HTTP requests (1,000) against the dashboard", pid, || {
        rt.block_on(async {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            let mut held = Vec::new();
            for _ in 0..1000 {
                let Ok(mut s) = tokio::net::TcpStream::connect(http).await else { continue };
                let _ = s.write_all(b"GET /api/cluster HTTP/1.1\r\nHost: x\r\n").await;
                held.push(s);
            }
            verified_async(&client, &spec).await;
            // Every one is closed by the server within the header timeout (10 s), none answered.
            let t0 = std::time::Instant::now();
            for s in held.iter_mut() {
                let mut buf = [0u8; 256];
                loop {
                    let left = Duration::from_secs(30).saturating_sub(t0.elapsed());
                    match tokio::time::timeout(left, s.read(&mut buf)).await {
                        Ok(Ok(0)) | Ok(Err(_)) => {
                            closed += 1;
                            break;
                        }
                        // A 408 may come before the close; never a 200.
                        Ok(Ok(n)) => {
                            assert!(!String::from_utf8_lossy(&buf[..n]).contains(" 200 "), "a half request was served")
                        }
                        Err(_) => break,
                    }
                }
            }
        });
    });
    assert_eq!(closed, 1000, "{closed} of 1,000 half-open requests were closed by the server");
    verified(&rt, &client, &spec, 11);
}
