//! The coordinator's control API over QUIC: deployments, the routing table, cluster status,
//! tuning jobs, load rounds, and the relay path (`--via coordinator`), where the coordinator
//! routes a query for a thin client.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use embtune_protocol::Plan;
use embtune_protocol::codec::FrameLimits;
use embtune_protocol::tuning::{BestRecord, Job, JobConfig, Trial};
use embtune_protocol::wire::{
    ClusterInfo, DeployedInfo, DeploymentInfo, ErrorKind, LoadReport, LoadSpec, PooledHead, QueryHead, Request,
    Response, RouteTable, WireError,
};
use embtune_transport::lanes::{self, Lanes};
use embtune_transport::rpc::{Body, call};
use embtune_transport::{TransportError, Tuning, certs};
use embtune_workloads::{ModelSpec, QueryBatch};

/// Connections to a coordinator: [`lanes::configured`] of them, each from its own endpoint,
/// so that large replies relayed through it are opened on several cores
/// (`embtune_transport::lanes`).
#[derive(Clone)]
pub struct CoordinatorClient {
    lanes: Lanes,
    _eps: Arc<Vec<quinn::Endpoint>>,
    limits: FrameLimits,
    pub timeout: Duration,
}

/// A batch ready to send: its head and body built once, sent many times, as one request or as
/// stripes of consecutive samples that travel on different lanes.
#[derive(Clone)]
pub struct PreparedQuery {
    pub head: QueryHead,
    pub stripes: Vec<(QueryHead, Vec<Arc<[u32]>>)>,
    pub lookups: u64,
}

fn query_head(batch: &QueryBatch, spec_digest: u64) -> QueryHead {
    QueryHead {
        spec_digest,
        batch_size: batch.batch_size,
        num_tables: batch.num_tables,
        offsets: batch.offsets.len() as u32,
        ids: batch.ids.len() as u32,
    }
}

fn query_body(batch: &QueryBatch) -> Vec<Arc<[u32]>> {
    vec![Arc::from(batch.ids.as_slice()), Arc::from(batch.offsets.as_slice())]
}

impl PreparedQuery {
    /// The batch as one request, exactly as given (malformed batches included: the coordinator
    /// is the one to judge them).
    pub fn new(batch: &QueryBatch, spec_digest: u64) -> PreparedQuery {
        let head = query_head(batch, spec_digest);
        PreparedQuery { head: head.clone(), stripes: vec![(head, query_body(batch))], lookups: batch.ids.len() as u64 }
    }

    /// The batch as up to `lanes` stripes of consecutive samples, as many as its reply of
    /// `reply_bytes_per_sample` per sample is worth ([`lanes::stripes`]). A batch whose layout
    /// is broken goes whole, so that the coordinator's error names the problem.
    pub fn striped(batch: &QueryBatch, spec_digest: u64, reply_bytes_per_sample: usize, lanes: usize) -> PreparedQuery {
        let bs = batch.batch_size as usize;
        let k = lanes::stripes(bs * reply_bytes_per_sample, lanes, bs);
        if k == 1 || batch.check_layout().is_err() {
            return PreparedQuery::new(batch, spec_digest);
        }
        let stripes = (0..k)
            .map(|i| {
                let (b0, b1) = lanes::stripe_bounds(bs, k, i);
                let s = batch.slice(b0, b1);
                (query_head(&s, spec_digest), query_body(&s))
            })
            .collect();
        PreparedQuery { head: query_head(batch, spec_digest), stripes, lookups: batch.ids.len() as u64 }
    }
}

impl CoordinatorClient {
    /// Connects with the certificate in the cluster folder `cluster`, over
    /// [`lanes::DEFAULT_LANES`] connections.
    pub async fn connect(addr: SocketAddr, cluster: &Path) -> Result<CoordinatorClient, TransportError> {
        Self::connect_lanes(addr, cluster, lanes::DEFAULT_LANES).await
    }

    /// Connects over `lanes` connections (at least one).
    pub async fn connect_lanes(
        addr: SocketAddr,
        cluster: &Path,
        lanes: usize,
    ) -> Result<CoordinatorClient, TransportError> {
        let id = certs::load(cluster, None, None)?;
        let eps = lanes::endpoints(&id, &Tuning::default(), lanes)?;
        let lanes = Lanes::connect(&eps, addr, Duration::from_secs(5)).await?;
        Ok(CoordinatorClient {
            lanes,
            _eps: Arc::new(eps),
            limits: FrameLimits::default(),
            timeout: Duration::from_secs(60),
        })
    }

    /// The coordinator's address.
    pub fn addr(&self) -> SocketAddr {
        self.lanes.first().remote_address()
    }

    /// The control connection (the first lane).
    pub fn connection(&self) -> &quinn::Connection {
        self.lanes.first()
    }

    /// Connections to the coordinator.
    pub fn lanes(&self) -> usize {
        self.lanes.len()
    }

    /// `batch` prepared for this client: striped over its lanes when the reply is large.
    pub fn prepare(&self, batch: &QueryBatch, spec: &ModelSpec) -> PreparedQuery {
        PreparedQuery::striped(batch, spec.digest(), spec.output_width() * 4, self.lanes.len())
    }

    async fn rpc(&self, req: &Request, body: Body, timeout: Duration) -> Result<(Response, Vec<u32>), TransportError> {
        call(self.lanes.first(), req, body, &self.limits, timeout).await
    }

    /// Pools a batch of the deployed model: `batch x width` floats. The batch goes as one
    /// request; [`Client::prepare`] stripes large ones.
    pub async fn query(&self, batch: &QueryBatch, spec_digest: u64) -> Result<(PooledHead, Vec<f32>), TransportError> {
        self.query_prepared(&PreparedQuery::new(batch, spec_digest)).await
    }

    /// Sends a prepared batch, its stripes at once on consecutive lanes, and joins the replies:
    /// the output is sample-major, so the stripes' outputs follow each other
    /// ([`PooledHead::join`] reports the slowest stripe's times).
    pub async fn query_prepared(&self, q: &PreparedQuery) -> Result<(PooledHead, Vec<f32>), TransportError> {
        let calls =
            q.stripes.iter().map(|(head, parts)| (Request::Query(head.clone()), Body::Parts(parts.clone()))).collect();
        let replies = self.lanes.call_all(calls, self.limits, self.timeout).await?;
        let (heads, words) = pooled_parts(replies)?;
        Ok((heads, words.into_iter().map(f32::from_bits).collect()))
    }

    /// Deploys a model and plan on the cluster.
    pub async fn deploy(&self, spec: &ModelSpec, plan: &Plan) -> Result<DeployedInfo, TransportError> {
        let req = Request::DeployPlan { spec: Box::new(spec.clone()), plan: Box::new(plan.clone()) };
        match self.rpc(&req, Body::Empty, Duration::from_secs(900)).await? {
            (Response::Deployed(d), _) => Ok(d),
            (other, _) => Err(unexpected(other)),
        }
    }

    /// Asks every worker to stop the deployment it is making (see `Request::CancelDeploy`).
    pub async fn cancel_deploy(&self) -> Result<(), TransportError> {
        match self.rpc(&Request::CancelDeploy, Body::Empty, self.timeout).await? {
            (Response::Ack, _) => Ok(()),
            (other, _) => Err(unexpected(other)),
        }
    }

    /// The model and plan the cluster serves, if any.
    pub async fn deployment(&self) -> Result<Option<DeploymentInfo>, TransportError> {
        match self.rpc(&Request::GetDeployment, Body::Empty, self.timeout).await? {
            (Response::Deployment(d), _) => Ok(d),
            (other, _) => Err(unexpected(other)),
        }
    }

    /// What the coordinator's live re-planner found and did; `None` when it runs with
    /// `--replan off`.
    pub async fn replan(&self) -> Result<Option<embtune_protocol::replan::ReplanStatus>, TransportError> {
        match self.rpc(&Request::GetReplan, Body::Empty, self.timeout).await? {
            (Response::Replan(r), _) => Ok(*r),
            (other, _) => Err(unexpected(other)),
        }
    }

    /// The routing table of the active deployment, if any.
    pub async fn routes(&self) -> Result<Option<RouteTable>, TransportError> {
        match self.rpc(&Request::GetRoutes, Body::Empty, self.timeout).await? {
            (Response::Routes(r), _) => Ok(r.map(|r| *r)),
            (other, _) => Err(unexpected(other)),
        }
    }

    /// Has `loadgens` of the coordinator's load generators (0: all) run one round of `spec`
    /// at once, straight to the workers; their reports merged.
    pub async fn run_load(&self, loadgens: u32, spec: &LoadSpec) -> Result<LoadReport, TransportError> {
        let wait = Duration::from_millis((spec.warmup_ms + spec.duration_ms) as u64) + Duration::from_secs(300);
        match self.rpc(&Request::RunLoad { loadgens, spec: spec.clone() }, Body::Empty, wait).await? {
            (Response::Load(r), _) => Ok(*r),
            (other, _) => Err(unexpected(other)),
        }
    }

    pub async fn status(&self) -> Result<ClusterInfo, TransportError> {
        match self.rpc(&Request::ClusterStatus, Body::Empty, self.timeout).await? {
            (Response::Cluster(c), _) => Ok(c),
            (other, _) => Err(unexpected(other)),
        }
    }

    /// Starts a tuning job; returns its id.
    pub async fn submit_tune(
        &self,
        dataset: &str,
        spec: &ModelSpec,
        config: &JobConfig,
    ) -> Result<String, TransportError> {
        let req =
            Request::SubmitTune { dataset: dataset.to_string(), spec: Box::new(spec.clone()), config: config.clone() };
        match self.rpc(&req, Body::Empty, self.timeout).await? {
            (Response::JobAccepted { id }, _) => Ok(id),
            (other, _) => Err(unexpected(other)),
        }
    }

    /// A job and its trials.
    pub async fn job(&self, id: &str) -> Result<(Job, Vec<Trial>), TransportError> {
        match self.rpc(&Request::GetJob { id: id.to_string() }, Body::Empty, self.timeout).await? {
            (Response::JobDetail { job, trials }, _) => Ok((*job, trials)),
            (other, _) => Err(unexpected(other)),
        }
    }

    pub async fn jobs(&self) -> Result<Vec<Job>, TransportError> {
        match self.rpc(&Request::ListJobs, Body::Empty, self.timeout).await? {
            (Response::Jobs(j), _) => Ok(j),
            (other, _) => Err(unexpected(other)),
        }
    }

    pub async fn resume(&self, id: &str) -> Result<(), TransportError> {
        match self.rpc(&Request::ResumeJob { id: id.to_string() }, Body::Empty, self.timeout).await? {
            (Response::Ack, _) => Ok(()),
            (other, _) => Err(unexpected(other)),
        }
    }

    pub async fn best_for(&self, dataset: &str) -> Result<Vec<(BestRecord, Option<Trial>)>, TransportError> {
        match self.rpc(&Request::BestFor { dataset: dataset.to_string() }, Body::Empty, self.timeout).await? {
            (Response::Best(b), _) => Ok(b),
            (other, _) => Err(unexpected(other)),
        }
    }

    /// Waits until `n` load generators are connected, or `timeout` passes.
    pub async fn wait_for_loadgens(&self, n: usize, timeout: Duration) -> Result<ClusterInfo, TransportError> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let s = self.status().await?;
            if s.loadgens.len() >= n {
                return Ok(s);
            }
            if tokio::time::Instant::now() > deadline {
                return Err(TransportError::Remote(WireError::new(
                    ErrorKind::NoLoadgen,
                    format!("{} of {n} load generators connected after {timeout:?}", s.loadgens.len()),
                )));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Waits until `n` workers are healthy, or `timeout` passes.
    pub async fn wait_for_workers(&self, n: usize, timeout: Duration) -> Result<ClusterInfo, TransportError> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let s = self.status().await?;
            if s.workers.iter().filter(|w| w.healthy).count() >= n {
                return Ok(s);
            }
            if tokio::time::Instant::now() > deadline {
                return Err(TransportError::Remote(WireError::new(
                    ErrorKind::Internal,
                    format!("{} of {n} workers up after {timeout:?}", s.workers.iter().filter(|w| w.healthy).count()),
                )));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// The pooled replies of a batch's stripes, in order, as one head and one buffer.
pub fn pooled_parts(replies: Vec<(Response, Vec<u32>)>) -> Result<(PooledHead, Vec<u32>), TransportError> {
    if replies.len() == 1 {
        return match replies.into_iter().next().unwrap() {
            (Response::Pooled(h), words) => Ok((h, words)),
            (other, _) => Err(unexpected(other)),
        };
    }
    let mut heads = Vec::with_capacity(replies.len());
    let mut words = Vec::with_capacity(replies.iter().map(|r| r.1.len()).sum());
    for r in replies {
        match r {
            (Response::Pooled(h), w) => {
                heads.push(h);
                words.extend_from_slice(&w);
            }
            (other, _) => return Err(unexpected(other)),
        }
    }
    Ok((PooledHead::join(heads).expect("at least one stripe"), words))
}

pub(crate) fn unexpected(r: Response) -> TransportError {
    TransportError::Remote(WireError::new(ErrorKind::Internal, format!("unexpected reply {r:?}")))
}
