//! The cluster as real processes on loopback: a coordinator and workers started from the
//! `embtune` binary, queried over QUIC, every pooled result checked against the reference.

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use common::{Cluster, wait_until};
use embtune_client::CoordinatorClient;
use embtune_protocol::wire::ErrorKind;
use embtune_protocol::{CoreId, Placement, Plan, Topology};
use embtune_transport::TransportError;
use embtune_worker::engine::reference::Reference;
use embtune_workloads::{BatchGenerator, ModelSpec, Preset, PresetOptions, QueryBatch};

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap()
}

fn json(out: &std::process::Output) -> serde_json::Value {
    assert!(out.status.success(), "embtune failed: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn bench_and_status_through_the_cli_are_verified() {
    let c = Cluster::start(2);
    c.wait_healthy(2);
    let t = c.target_args();
    let mut args: Vec<&str> = vec!["bench"];
    args.extend(t.iter().map(String::as_str));
    args.extend([
        "--preset",
        "criteo-kaggle",
        "--scale",
        "0.01",
        "--duration",
        "1",
        "--warmup",
        "0.2",
        "--verify",
        "--json",
    ]);
    // The workers register within a few seconds; the bench waits for none, so retry briefly.
    let mut r = serde_json::Value::Null;
    wait_until(*common::PATIENCE, || {
        let out = c.run(&args);
        if out.status.success() {
            r = serde_json::from_slice(&out.stdout).unwrap();
            true
        } else {
            false
        }
    })
    .unwrap_or_else(|| panic!("bench never succeeded: {}", c.log("coordinator")));
    assert_eq!(r["verified"], true, "{r}");
    assert_eq!(r["workers"], 2);
    for f in ["lookups_per_s", "p50_us", "p99_us", "p999_us", "batches", "cores"] {
        assert!(r.get(f).is_some(), "missing {f}");
    }
    assert_eq!(r["errors"], 0);

    let mut args: Vec<&str> = vec!["cluster", "status"];
    args.extend(t.iter().map(String::as_str));
    args.push("--json");
    let s = json(&c.run(&args));
    let w = s["workers"].as_array().unwrap();
    assert_eq!(w.len(), 2);
    for x in w {
        assert_eq!(x["healthy"], true);
        assert_eq!(x["cores"], 1);
        assert!(x["addr"].as_str().unwrap().starts_with("127.0.0.1:"));
        assert!(x.get("id").is_some());
    }
}

/// Three Zipf tables of 10,000 rows, for `mixed_plan`.
fn synthetic_spec(dim: u32, pooling: u32, batch: u32) -> ModelSpec {
    Preset::Synthetic
        .spec(&PresetOptions {
            tables: Some(3),
            rows: Some(10_000),
            dim: Some(dim),
            pooling: Some(embtune_workloads::Pooling::Fixed(pooling)),
            batch: Some(batch),
            dist: Some("zipf:1.1".parse().unwrap()),
            ..Default::default()
        })
        .unwrap()
}

fn small_spec() -> ModelSpec {
    synthetic_spec(8, 4, 32)
}

/// T1 replicated, T2 owned by worker 1, T3 split by rows over workers 0 and 1.
fn mixed_plan(spec: &ModelSpec) -> Plan {
    let placements = [
        Placement::Replicated,
        Placement::Owned(CoreId::new(1, 0)),
        Placement::RowRange { bounds: vec![0, 5000, 10_000], owners: vec![CoreId::new(0, 0), CoreId::new(1, 0)] },
    ];
    Plan::from_placements("test", spec, Topology::uniform(2, 1, 2_000_000_000), placements)
}

async fn check(client: &CoordinatorClient, spec: &ModelSpec, batch: &QueryBatch) -> Result<(), TransportError> {
    let (_, out) = client.query(batch, spec.digest()).await?;
    let tables: Vec<u16> = (0..spec.tables.len() as u16).collect();
    Reference::new(spec, &[]).pool(batch, &tables).check(&out).map_err(|m| panic!("wrong result: {m}"))
}

fn kind(e: TransportError) -> (ErrorKind, String) {
    match e {
        TransportError::Remote(w) => (w.kind, w.message),
        other => panic!("expected a typed error, got {other}"),
    }
}

/// Wide rows and large batches: replies of hundreds of kilobytes, which the client stripes over
/// its lanes to the coordinator and the coordinator over its lanes to each worker.
#[test]
fn large_batches_striped_over_lanes_are_exact() {
    let c = Cluster::start(2);
    let rt = rt();
    let spec = synthetic_spec(128, 3, 203);
    let plan = mixed_plan(&spec);
    let g = BatchGenerator::new(&spec).unwrap();
    let tables: Vec<u16> = (0..spec.tables.len() as u16).collect();
    rt.block_on(async {
        let client = CoordinatorClient::connect(c.addr, &c.certs).await.unwrap();
        assert!(client.lanes() > 1, "the client opens several lanes by default");
        client.wait_for_workers(2, *common::PATIENCE).await.unwrap();
        client.deploy(&spec, &plan).await.unwrap();
        for i in 0..6 {
            let batch = g.batch(i);
            let q = client.prepare(&batch, &spec);
            // 203 samples x 384 floats: 312 KB of pooled rows, 4 stripes of 50-51 samples.
            assert_eq!(q.stripes.len(), client.lanes().min(4), "batch {i} is striped");
            let (head, striped) = client.query_prepared(&q).await.unwrap();
            assert_eq!(head.batch_size, batch.batch_size);
            Reference::new(&spec, &[])
                .pool(&batch, &tables)
                .check(&striped)
                .unwrap_or_else(|m| panic!("batch {i}: {m}"));
            let (_, whole) = client.query(&batch, spec.digest()).await.unwrap();
            assert_eq!(striped, whole, "batch {i}: striped and whole replies differ");
        }
    });
}

#[test]
fn a_dead_worker_is_detected_routed_around_and_redeployed_when_back() {
    let mut c = Cluster::start(2);
    let rt = rt();
    let spec = small_spec();
    let plan = mixed_plan(&spec);
    let g = BatchGenerator::new(&spec).unwrap();
    let client = rt.block_on(async {
        let client = CoordinatorClient::connect(c.addr, &c.certs).await.unwrap();
        client.wait_for_workers(2, *common::PATIENCE).await.unwrap();
        client.deploy(&spec, &plan).await.unwrap();
        for i in 0..5 {
            check(&client, &spec, &g.batch(i)).await.unwrap();
        }
        client
    });

    // kill -9 the process the coordinator registered as worker 1 (workers register in the order their
    // calibration finishes, not the order they were started): noticed within two seconds.
    let w1_addr: SocketAddr =
        rt.block_on(client.status()).unwrap().workers.iter().find(|w| w.id == 1).unwrap().addr.parse().unwrap();
    let at = c.workers.iter().position(|(a, _)| *a == w1_addr).expect("worker 1 is one of ours");
    let (_, mut w1) = c.workers.remove(at);
    w1.kill9();
    let took = wait_until(Duration::from_secs(5), || {
        rt.block_on(client.status()).unwrap().workers.iter().any(|w| w.id == 1 && !w.healthy)
    })
    .expect("the dead worker was never marked down");
    assert!(took <= Duration::from_secs(2), "detection took {took:?}");

    rt.block_on(async {
        // Bags only in the replicated table: served by worker 0.
        let full = g.batch(9);
        let only_replicated = QueryBatch::from_bags(&[
            (0..32).map(|b| full.bag(0, b).to_vec()).collect(),
            vec![vec![]; 32],
            vec![vec![]; 32],
        ]);
        check(&client, &spec, &only_replicated).await.expect("replicated tables must still be served");
        // A batch needing worker 1's shards fails, naming the shard.
        let (k, msg) = kind(client.query(&full, spec.digest()).await.unwrap_err());
        assert_eq!(k, ErrorKind::ShardUnavailable);
        assert!(msg.contains("worker 1") && msg.contains("down"), "{msg}");
        assert!(msg.contains("T2") || msg.contains("T3"), "{msg}");
    });

    // Back on the same address: redeployed, then serving everything again.
    c.add_worker(Some(w1_addr));
    let back = wait_until(*common::PATIENCE, || {
        rt.block_on(client.status()).unwrap().workers.iter().filter(|w| w.healthy).count() == 2
    });
    assert!(back.is_some(), "the worker did not come back: {}", c.log("coordinator"));
    rt.block_on(async {
        for i in 20..25 {
            check(&client, &spec, &g.batch(i)).await.unwrap();
        }
    });
}

#[test]
fn a_stalled_worker_is_marked_down_and_serves_again_once_it_resumes() {
    let c = Cluster::start(2);
    let rt = rt();
    let spec = small_spec();
    let plan = mixed_plan(&spec);
    let g = BatchGenerator::new(&spec).unwrap();
    let client = rt.block_on(async {
        let client = CoordinatorClient::connect(c.addr, &c.certs).await.unwrap();
        client.wait_for_workers(2, *common::PATIENCE).await.unwrap();
        client.deploy(&spec, &plan).await.unwrap();
        client
    });
    // Freeze worker 1 (as a loaded machine or a paused VM would) until the coordinator gives up
    // on it, then let it go on. Its process, connection and tables are all still there.
    let w1_addr: SocketAddr =
        rt.block_on(client.status()).unwrap().workers.iter().find(|w| w.id == 1).unwrap().addr.parse().unwrap();
    let (_, w1) = c.workers.iter().find(|(a, _)| *a == w1_addr).expect("worker 1 is one of ours");
    w1.signal("STOP");
    let down = wait_until(Duration::from_secs(10), || {
        rt.block_on(client.status()).unwrap().workers.iter().any(|w| w.id == 1 && !w.healthy)
    });
    w1.signal("CONT");
    assert!(down.is_some(), "the frozen worker was never marked down");
    // It must come back by itself: nobody restarts it.
    let back = wait_until(*common::PATIENCE, || {
        rt.block_on(client.status()).unwrap().workers.iter().filter(|w| w.healthy).count() == 2
    });
    assert!(back.is_some(), "the resumed worker stayed down: {}", c.log("coordinator"));
    rt.block_on(async {
        for i in 0..5 {
            check(&client, &spec, &g.batch(i)).await.unwrap();
        }
    });
}

#[test]
fn bad_queries_get_typed_errors_and_the_cluster_keeps_serving() {
    let c = Cluster::start(2);
    let rt = rt();
    let spec = small_spec();
    let g = BatchGenerator::new(&spec).unwrap();
    rt.block_on(async {
        let client = CoordinatorClient::connect(c.addr, &c.certs).await.unwrap();
        client.wait_for_workers(2, *common::PATIENCE).await.unwrap();
        client.deploy(&spec, &mixed_plan(&spec)).await.unwrap();

        let mut bad = g.batch(1);
        bad.ids[3] = 10_000; // one past the last row
        let (k, msg) = kind(client.query(&bad, spec.digest()).await.unwrap_err());
        assert_eq!(k, ErrorKind::RowOutOfRange, "{msg}");
        assert!(msg.contains("10000"), "{msg}");

        let (k, _) = kind(client.query(&g.batch(1), spec.digest() ^ 1).await.unwrap_err());
        assert_eq!(k, ErrorKind::WrongModel);

        let two = QueryBatch::from_bags(&[vec![vec![1]], vec![vec![2]]]);
        let (k, _) = kind(client.query(&two, 0).await.unwrap_err());
        assert_eq!(k, ErrorKind::UnknownTable);

        let mut ragged = g.batch(2);
        ragged.offsets[5] = ragged.offsets[6] + 1;
        let (k, _) = kind(client.query(&ragged, spec.digest()).await.unwrap_err());
        assert_eq!(k, ErrorKind::BadFrame);

        let huge = QueryBatch { batch_size: 70_000, num_tables: 3, offsets: vec![0; 3 * 70_000 + 1], ids: vec![] };
        let (k, _) = kind(client.query(&huge, spec.digest()).await.unwrap_err());
        assert_eq!(k, ErrorKind::BatchTooLarge);

        for i in 0..3 {
            check(&client, &spec, &g.batch(i)).await.expect("still serving after bad queries");
        }
        let s = client.status().await.unwrap();
        assert!(s.query_errors >= 5);
        assert!(s.workers.iter().all(|w| w.healthy));
    });
}

#[test]
fn peers_without_the_cluster_certificate_are_refused() {
    let c = Cluster::start(1);
    let other = tempfile::tempdir().unwrap();
    embtune_transport::certs::init_cluster(other.path()).unwrap();
    let rt = rt();
    rt.block_on(async {
        let ok = CoordinatorClient::connect(c.addr, &c.certs).await.unwrap();
        ok.wait_for_workers(1, *common::PATIENCE).await.unwrap();
        let worker = c.workers[0].0;
        for target in [c.addr, worker] {
            match CoordinatorClient::connect(target, other.path()).await {
                Err(_) => {}
                Ok(stranger) => assert!(stranger.status().await.is_err(), "a stranger was served by {target}"),
            }
        }
        let _ = Arc::new(());
    });
}
