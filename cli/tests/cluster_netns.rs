//! The cluster across hosts: a coordinator, three workers and a client, each in a network
//! namespace of its own, joined by veth pairs to a bridge, the workers' links shaped with netem
//! (2 ms +- 0.5 ms and 1% loss each way) where the kernel has it. A plan that replicates small
//! tables and shards large ones is deployed and verified against the reference, with the client
//! querying the workers straight over the shaped links (the direct path) and through the
//! coordinator's relay; one worker is
//! killed with SIGKILL (detected within 2 s, replicated tables still served, full queries refused
//! with an error that names the missing shard), restarted, and verified again.
//!
//! Needs root and iproute2; skips (and passes, printing a `SKIPPED:` line) otherwise, unless
//! EMBTUNE_NETNS_REQUIRED is set. Without netem in the kernel the links are not shaped: a
//! `SKIPPED:` line says so, and EMBTUNE_NETEM_REQUIRED makes that a failure.
//! Run it with `sudo cargo test -p embtune --test cluster_netns`. EMBTUNE_NETNS_WORKERS (default
//! 3) sets the worker namespaces and EMBTUNE_NETNS_BENCH_SECS (default 1) each bench's length:
//! `benches/scale/netns.sh` runs it with 8 workers and reports throughput and failover.

mod common;
mod netns;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use common::{Proc, wait_until};
use embtune_client::CoordinatorClient;
use embtune_protocol::wire::{ClusterInfo, ErrorKind};
use embtune_protocol::{Placement, Plan};
use embtune_transport::TransportError;
use embtune_worker::engine::reference::Reference;
use embtune_workloads::{BatchGenerator, ModelSpec, QueryBatch};
use netns::{Net, Shaping, say};

/// Worker namespaces: 3, or EMBTUNE_NETNS_WORKERS (at most 80, the addresses .11 to .90).
static WORKERS: std::sync::LazyLock<usize> = std::sync::LazyLock::new(|| {
    std::env::var("EMBTUNE_NETNS_WORKERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|&n| (2..=80).contains(&n))
        .unwrap_or(3)
});
const COORD_PORT: u16 = 7700;
const WORKER_PORT: u16 = 7701;

/// The namespaces and every process in them; dropped (also when an assertion fails), it kills
/// the processes, then deletes the namespaces, and on failure prints every log.
struct NsCluster {
    dir: tempfile::TempDir,
    certs: PathBuf,
    coordinator: Option<Proc>,
    workers: Vec<Option<Proc>>,
    net: Net,
}

impl NsCluster {
    fn start(net: Net) -> NsCluster {
        let dir = tempfile::tempdir().unwrap();
        let certs = dir.path().join("cluster");
        let out =
            std::process::Command::new(common::exe()).args(["cluster", "init", "--out"]).arg(&certs).output().unwrap();
        assert!(out.status.success(), "cluster init: {}", String::from_utf8_lossy(&out.stderr));
        let mut c = NsCluster { dir, certs, coordinator: None, workers: Vec::new(), net };
        let (ns, listen) = (c.net.node("coordinator").ns.clone(), c.coordinator_addr().to_string());
        let data = c.dir.path().join("data");
        c.coordinator = Some(netns::spawn(
            &ns,
            c.dir.path(),
            "coordinator",
            &[
                "coordinator",
                "--listen",
                &listen,
                "--http",
                "127.0.0.1:0",
                "--cluster",
                c.certs.to_str().unwrap(),
                "--data-dir",
                data.to_str().unwrap(),
            ],
        ));
        for i in 0..(*WORKERS) {
            let p = c.spawn_worker(i);
            c.workers.push(Some(p));
        }
        c
    }

    fn coordinator_addr(&self) -> SocketAddr {
        SocketAddr::new(self.net.node("coordinator").ip.into(), COORD_PORT)
    }

    fn worker_addr(&self, i: usize) -> SocketAddr {
        SocketAddr::new(self.net.node(&format!("worker-{i}")).ip.into(), WORKER_PORT)
    }

    /// Worker `i` in its namespace, on one core (they share this machine's CPUs).
    fn spawn_worker(&self, i: usize) -> Proc {
        let ncpu = std::thread::available_parallelism().map_or(1, |n| n.get());
        netns::spawn(
            &self.net.node(&format!("worker-{i}")).ns,
            self.dir.path(),
            &format!("worker-{i}"),
            &[
                "worker",
                "--listen",
                &self.worker_addr(i).to_string(),
                "--coordinator",
                &self.coordinator_addr().to_string(),
                "--cluster",
                self.certs.to_str().unwrap(),
                "--cores",
                &(i % ncpu).to_string(),
                "--memory-limit",
                "2000000000",
                "--name",
                &format!("w{i}"),
            ],
        )
    }

    /// `embtune ARGS --coordinator C --cluster DIR` in the client's namespace.
    fn client_cli(&self, args: &[&str], timeout: Duration) -> std::process::Output {
        let (coord, certs) = (self.coordinator_addr().to_string(), self.certs.to_str().unwrap().to_string());
        let mut all: Vec<&str> = args.to_vec();
        all.extend(["--coordinator", &coord, "--cluster", &certs]);
        netns::run(&self.net.node("client").ns, self.dir.path(), &all, timeout)
    }

    fn status_cli(&self) -> serde_json::Value {
        json(&self.client_cli(&["cluster", "status", "--json"], Duration::from_secs(15)))
    }

    /// A library client whose socket lives in the client's namespace, with its runtime.
    fn client(&self) -> (tokio::runtime::Runtime, CoordinatorClient) {
        let (addr, certs) = (self.coordinator_addr(), self.certs.clone());
        netns::in_netns(&self.net.node("client").ns, move || {
            let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
            let client = rt
                .block_on(CoordinatorClient::connect(addr, &certs))
                .expect("connecting to the coordinator from the client namespace");
            (rt, client)
        })
    }

    fn log(&self, name: &str) -> String {
        std::fs::read_to_string(self.dir.path().join(format!("{name}.log"))).unwrap_or_default()
    }
}

impl Drop for NsCluster {
    fn drop(&mut self) {
        for p in self.workers.iter_mut().filter_map(Option::take) {
            drop(p); // SIGKILL and reap
        }
        drop(self.coordinator.take());
        self.net.delete();
        if std::thread::panicking() {
            let mut names = vec!["coordinator".to_string()];
            names.extend((0..(*WORKERS)).map(|i| format!("worker-{i}")));
            for n in names {
                eprintln!("----- {n}.log -----\n{}", self.log(&n));
            }
        }
    }
}

fn json(out: &std::process::Output) -> serde_json::Value {
    assert!(out.status.success(), "embtune failed ({}): {}", out.status, String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("bad JSON ({e}): {}", String::from_utf8_lossy(&out.stdout)))
}

fn healthy(s: &serde_json::Value) -> usize {
    s["workers"].as_array().map_or(0, |w| w.iter().filter(|x| x["healthy"] == true).count())
}

/// `embtune bench` against the cluster from the client namespace, every sampled result verified.
fn bench(c: &NsCluster, extra: &[&str]) -> serde_json::Value {
    let secs = std::env::var("EMBTUNE_NETNS_BENCH_SECS").unwrap_or_else(|_| "1".into());
    let timeout = Duration::from_secs(40 + secs.parse::<f64>().unwrap_or(1.0) as u64);
    let mut args = vec![
        "bench",
        "--preset",
        "criteo-kaggle",
        "--scale",
        "0.01",
        "--duration",
        &secs,
        "--warmup",
        "0.2",
        "--verify",
        "--json",
    ];
    args.extend_from_slice(extra);
    let r = json(&c.client_cli(&args, timeout));
    assert_eq!(r["verified"], true, "{r}");
    assert_eq!(r["errors"], 0, "{r}");
    assert_eq!(r["workers"], *WORKERS, "{r}");
    assert!(r["batches"].as_u64().unwrap() > 0, "{r}");
    r
}

/// Queries `batch` and checks every pooled value against the reference.
fn check(
    rt: &tokio::runtime::Runtime,
    client: &CoordinatorClient,
    spec: &ModelSpec,
    plan: &Plan,
    batch: &QueryBatch,
) -> Result<(), TransportError> {
    let (_, out) = rt.block_on(client.query(batch, spec.digest()))?;
    let row_types: Vec<_> = plan.tables.iter().map(|t| t.row_type).collect();
    let tables: Vec<u16> = (0..spec.tables.len() as u16).collect();
    Reference::new(spec, &row_types).pool(batch, &tables).check(&out).map_err(|m| panic!("wrong result: {m}"))
}

fn worker_id(s: &ClusterInfo, addr: SocketAddr) -> u16 {
    s.workers
        .iter()
        .find(|w| w.addr == addr.to_string())
        .unwrap_or_else(|| panic!("{addr} is not registered: {s:?}"))
        .id
}

#[test]
fn a_cluster_across_network_namespaces_survives_a_dead_worker() {
    let t0 = Instant::now();
    if let Err(why) = netns::preflight() {
        return netns::skip(&why);
    }
    let net = match Net::create(*WORKERS) {
        Ok(n) => n,
        Err(why) => return netns::skip(&why),
    };
    match &net.shaping {
        Shaping::Netem(how) => say(&format!("links: {how}")),
        Shaping::None(why) => {
            say(&format!("links: NOT shaped, no netem in this kernel ({why}); running without delay and loss"));
            netns::unshaped(&format!("no netem in this kernel, the links run without delay and loss ({why})"));
        }
    }
    let mut c = NsCluster::start(net);

    // 1. Every worker registers over the bridge, at its namespace's address.
    let mut status = serde_json::Value::Null;
    wait_until(*common::PATIENCE, || {
        status = c.status_cli();
        healthy(&status) == *WORKERS
    })
    .unwrap_or_else(|| panic!("workers never all came up: {status}"));
    let mut addrs: Vec<String> =
        status["workers"].as_array().unwrap().iter().map(|w| w["addr"].as_str().unwrap().to_string()).collect();
    addrs.sort();
    let mut want: Vec<String> = (0..(*WORKERS)).map(|i| c.worker_addr(i).to_string()).collect();
    want.sort();
    assert_eq!(addrs, want, "{status}");
    say(&format!("[{:>5.1}s] {} workers up at {}", t0.elapsed().as_secs_f64(), *WORKERS, addrs.join(", ")));

    // 2. Deploy `size-threshold` (small tables replicated, large ones sharded across workers) and verify
    // through the CLI. (`auto` would replicate everything here: every table fits in each worker's memory.)
    let r = bench(&c, &["--strategy", "size-threshold"]);
    assert_eq!(r["path"], "direct", "{r}");
    let plan_summary = r["plan"].clone();
    say(&format!(
        "[{:>5.1}s] bench verified: plan {plan_summary}, {} batches, {} batches/s, {} look-ups/s, p50 {} us, p99 {} us",
        t0.elapsed().as_secs_f64(),
        r["batches"],
        r["batches_per_s"],
        r["lookups_per_s"],
        r["p50_us"],
        r["p99_us"]
    ));

    // 3. What was deployed: both kinds of table must be there.
    let (rt, client) = c.client();
    let d = rt.block_on(client.deployment()).unwrap().expect("a plan is deployed");
    let (spec, plan) = (d.spec, d.plan);
    let replicated: Vec<usize> =
        (0..plan.tables.len()).filter(|&t| matches!(plan.tables[t].placement, Placement::Replicated)).collect();
    let workers_of = |t: usize| {
        let mut w: Vec<u16> = plan.tables[t].placement.owners().iter().map(|o| o.worker).collect();
        w.sort();
        w.dedup();
        w
    };
    let sharded: Vec<usize> = (0..plan.tables.len()).filter(|&t| workers_of(t).len() >= 2).collect();
    assert!(!replicated.is_empty() && !sharded.is_empty(), "want replicated and sharded tables: {plan:?}");
    let g = BatchGenerator::new(&spec).unwrap();
    for i in 0..3 {
        check(&rt, &client, &spec, &plan, &g.batch(i)).unwrap();
    }

    // 4. SIGKILL a worker that holds shards: marked down within 2 s.
    let s = rt.block_on(client.status()).unwrap();
    let victim = workers_of(sharded[0])[1];
    let idx = (0..(*WORKERS)).find(|&i| worker_id(&s, c.worker_addr(i)) == victim).unwrap();
    let its_tables: Vec<&str> = (0..plan.tables.len())
        .filter(|&t| workers_of(t).contains(&victim))
        .map(|t| spec.tables[t].name.as_str())
        .collect();
    let killed = Instant::now();
    c.workers[idx].take().unwrap().kill9();
    wait_until(Duration::from_secs(5), || {
        let s = rt.block_on(client.status()).unwrap();
        !s.workers.iter().find(|w| w.id == victim).unwrap().healthy
    })
    .expect("the killed worker was never marked down");
    let took = killed.elapsed();
    assert!(took <= Duration::from_secs(2), "detection took {took:?}");
    say(&format!(
        "[{:>5.1}s] worker {victim} (worker-{idx}) killed, marked down after {took:?}",
        t0.elapsed().as_secs_f64()
    ));
    let s = c.status_cli();
    assert_eq!(healthy(&s), (*WORKERS) - 1, "{s}");
    let dead = s["workers"].as_array().unwrap().iter().find(|w| w["id"] == victim).unwrap();
    assert_eq!(dead["healthy"], false, "{s}");

    // 5. Replicated tables are still served; a full batch is refused, naming the missing shard.
    let full = g.batch(9);
    let bs = full.batch_size as usize;
    let only_replicated = QueryBatch::from_bags(
        &(0..spec.tables.len())
            .map(|t| {
                if replicated.contains(&t) {
                    (0..bs).map(|b| full.bag(t, b).to_vec()).collect()
                } else {
                    vec![vec![]; bs]
                }
            })
            .collect::<Vec<_>>(),
    );
    for _ in 0..5 {
        check(&rt, &client, &spec, &plan, &only_replicated).expect("replicated tables must still be served");
    }
    let err = rt.block_on(client.query(&full, spec.digest())).expect_err("a full batch needs the dead worker's shards");
    let TransportError::Remote(w) = err else { panic!("expected a typed error, got {err}") };
    assert_eq!(w.kind, ErrorKind::ShardUnavailable, "{w}");
    let msg = &w.message;
    assert!(msg.contains("shard") && msg.contains(&format!("worker {victim}")) && msg.contains("down"), "{msg}");
    assert!(its_tables.iter().any(|t| msg.contains(&format!("`{t}`"))), "{msg} names none of {its_tables:?}");
    say(&format!("[{:>5.1}s] replicated-only batches served; full batch refused: {msg}", t0.elapsed().as_secs_f64()));

    // 6. Restart it on the same address: redeployed and serving everything, verified.
    let restarted = Instant::now();
    let p = c.spawn_worker(idx);
    c.workers[idx] = Some(p);
    wait_until(*common::PATIENCE, || {
        rt.block_on(client.status()).unwrap().workers.iter().filter(|w| w.healthy).count() == *WORKERS
    })
    .unwrap_or_else(|| panic!("the restarted worker never came back: {}", c.log("coordinator")));
    let s = rt.block_on(client.status()).unwrap();
    assert_eq!(worker_id(&s, c.worker_addr(idx)), victim, "re-registered under another id: {s:?}");
    say(&format!("[{:>5.1}s] worker {victim} back after {:?}", t0.elapsed().as_secs_f64(), restarted.elapsed()));
    for i in 20..25 {
        check(&rt, &client, &spec, &plan, &g.batch(i)).unwrap();
    }
    check(&rt, &client, &spec, &plan, &full).unwrap();
    drop(client);
    drop(rt);
    let r = bench(&c, &[]);
    assert_eq!(r["plan"], plan_summary, "the bench kept the deployed plan");
    let relayed = bench(&c, &["--via", "coordinator"]);
    assert_eq!(relayed["path"], "coordinator", "{relayed}");
    say(&format!(
        "[{:>5.1}s] bench verified again after the restart: direct {} batches/s (p50 {} us), relayed {} batches/s (p50 {} us)",
        t0.elapsed().as_secs_f64(),
        r["batches_per_s"],
        r["p50_us"],
        relayed["batches_per_s"],
        relayed["p50_us"]
    ));
    if t0.elapsed() > Duration::from_secs(60) {
        say(&format!("warning: the test took {:?}, over its 60 s budget", t0.elapsed()));
    }
}
