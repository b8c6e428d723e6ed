//! The load generator process (`embtune loadgen`): a client of the direct path that the
//! coordinator directs.
//!
//! It connects to the coordinator, registers, and then answers `LoadRound` requests that the
//! coordinator opens on that same connection: each round loads the cluster straight to the
//! workers from a pool of batches it generates itself (batch `i` of a workload is the same in
//! every process), and returns a [`LoadReport`] with its latency histogram. Several load
//! generators on several machines offer a cluster more than any one process could decrypt and
//! add up; their reports merge exactly. When the coordinator goes away the process keeps
//! trying to register again, as workers do.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;

use embtune_protocol::codec::FrameLimits;
use embtune_protocol::wire::{ErrorKind, LoadReport, LoadSpec, LoadgenHello, Request, Response, WireError};
use embtune_transport::rpc::{Body, Peer, call, serve};
use embtune_transport::{TransportError, certs};
use embtune_workloads::{BatchGenerator, QueryBatch};

use crate::control::{CoordinatorClient, unexpected};
use crate::direct::{Client, ClientConfig, RouteSource};
use crate::loadgen::{self, LoadConfig, Target};

/// How to run a load generator.
#[derive(Clone, Debug)]
pub struct LoadgenConfig {
    pub coordinator: SocketAddr,
    pub cluster: PathBuf,
    pub name: String,
    pub client: ClientConfig,
}

/// A pool of batches, kept for the next round of the same workload.
struct Pool {
    key: (u64, u64, u32),
    batches: Arc<Vec<QueryBatch>>,
}

/// Runs load rounds with one direct client, keeping the last round's batches for the next:
/// the load generator process's engine, and the coordinator's own when no load generator is
/// connected.
pub struct Runner {
    client: Client,
    pool: Mutex<Option<Pool>>,
    /// One round at a time.
    busy: tokio::sync::Mutex<()>,
}

impl Runner {
    pub fn new(client: Client) -> Runner {
        Runner { client, pool: Mutex::new(None), busy: tokio::sync::Mutex::new(()) }
    }

    pub fn client(&self) -> &Client {
        &self.client
    }
}

/// Runs a load generator until the process is stopped.
pub async fn run(cfg: LoadgenConfig) -> Result<(), String> {
    let identity = certs::load(&cfg.cluster, None, None).map_err(|e| e.to_string())?;
    let mut announced = false;
    loop {
        let session = async {
            let control = CoordinatorClient::connect_lanes(cfg.coordinator, &cfg.cluster, 1).await?;
            let client = Client::with_source(
                RouteSource::coordinator(control.clone(), &cfg.cluster),
                &identity,
                cfg.client.clone(),
            )
            .await?;
            let hello =
                LoadgenHello { name: cfg.name.clone(), cores: cfg.client.local_cores as u16, pid: std::process::id() };
            let conn = control.connection().clone();
            let limits = FrameLimits::default();
            let id = match call(&conn, &Request::RegisterLoadgen(hello), Body::Empty, &limits, Duration::from_secs(5))
                .await?
            {
                (Response::LoadgenRegistered { id }, _) => id,
                (other, _) => return Err(unexpected(other)),
            };
            tracing::info!("registered with the coordinator at {} as load generator {id}", cfg.coordinator);
            let state = Arc::new(Runner::new(client));
            // Serves the rounds the coordinator opens on this connection until it closes.
            serve(conn, limits, move |req, _body, peer| {
                let state = state.clone();
                async move { handle(&state, req, peer).await }
            })
            .await;
            Ok::<(), TransportError>(())
        };
        match session.await {
            Ok(()) => tracing::warn!("the coordinator at {} closed the connection; registering again", cfg.coordinator),
            Err(e) if !announced => {
                tracing::warn!("coordinator at {} unreachable ({e}); retrying", cfg.coordinator);
                announced = true;
            }
            Err(_) => {}
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

async fn handle(state: &Arc<Runner>, req: Request, peer: Peer) -> (Response, Body) {
    match req {
        Request::LoadRound(spec) => match round(state, &spec).await {
            Ok(r) => (Response::Load(Box::new(r)), Body::Empty),
            Err(e) => {
                tracing::warn!("load round for {} failed: {e}", peer.addr);
                (Response::Error(e), Body::Empty)
            }
        },
        _ => (
            Response::Error(WireError::new(ErrorKind::NotSupported, "a load generator only runs load rounds")),
            Body::Empty,
        ),
    }
}

/// Runs one round of `spec` straight to the workers.
pub async fn round(state: &Runner, spec: &LoadSpec) -> Result<LoadReport, WireError> {
    let _one = state.busy.lock().await;
    let client = &state.client;
    if client.routes().map(|r| r.epoch) != Some(spec.epoch) {
        client.refresh().await.map_err(wire)?;
    }
    let routes = client.routes().ok_or_else(|| WireError::new(ErrorKind::NoDeployment, "nothing is deployed"))?;
    if routes.epoch != spec.epoch {
        return Err(WireError::new(
            ErrorKind::StalePlan,
            format!("the round is for plan {} but the coordinator routes by plan {}", spec.epoch, routes.epoch),
        ));
    }
    let key = (routes.spec.digest(), spec.pool_first, spec.pool_batches);
    let cached = state.pool.lock().as_ref().filter(|p| p.key == key).map(|p| p.batches.clone());
    let batches = match cached {
        Some(b) => b,
        None => {
            let model = routes.spec.clone();
            let (first, count) = (spec.pool_first, spec.pool_batches.max(1) as usize);
            let b = tokio::task::spawn_blocking(move || {
                BatchGenerator::new(&model).map(|g| Arc::new(g.pool(first, count)))
            })
            .await
            .map_err(|e| WireError::new(ErrorKind::Internal, format!("generating batches: {e}")))?
            .map_err(|e| WireError::new(ErrorKind::Internal, format!("generating batches: {e}")))?;
            *state.pool.lock() = Some(Pool { key, batches: b.clone() });
            b
        }
    };
    client.connect_all().await.map_err(wire)?;
    client.set_wire(spec.wire);
    let run_client = client.clone();
    let before = run_client.counters();
    let cfg = LoadConfig {
        concurrency: spec.concurrency.max(1) as usize,
        qps: (spec.qps > 0.0).then_some(spec.qps),
        warmup: Duration::from_millis(spec.warmup_ms as u64),
        duration: Duration::from_millis(spec.duration_ms.max(1) as u64),
        max_outstanding: 10_000,
        seed: spec.seed,
    };
    let target = Target::Direct { client: run_client.clone(), pool: batches.clone() };
    let r = loadgen::run(&target, &cfg, &|_, _| {}).await;
    let after = run_client.counters();
    let mut report = r.report();
    report.sub_requests = after.sub_requests - before.sub_requests;
    report.retries = after.retries - before.retries;
    if spec.verify > 0 {
        let checked = loadgen::verify(&run_client, &batches, spec.verify as usize).await;
        if let Err(m) = &checked {
            tracing::error!("{m}");
            report.first_error.get_or_insert_with(|| m.clone());
        }
        report.verified = Some(checked.is_ok());
    }
    Ok(report)
}

fn wire(e: TransportError) -> WireError {
    match e {
        TransportError::Remote(w) | TransportError::Frame(w) => w,
        other => WireError::new(ErrorKind::ShardUnavailable, other.to_string()),
    }
}
