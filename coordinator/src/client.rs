//! The client API: what external programs (and embtune's own commands) use to talk to a
//! coordinator over QUIC.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use embtune_protocol::Plan;
use embtune_protocol::codec::FrameLimits;
use embtune_protocol::tuning::{BestRecord, Job, JobConfig, Trial};
use embtune_protocol::wire::{
    ClusterInfo, DeployedInfo, DeploymentInfo, ErrorKind, PooledHead, QueryHead, Request, Response, WireError,
};
use embtune_transport::endpoint::connect;
use embtune_transport::rpc::{Body, call};
use embtune_transport::{TransportError, Tuning, certs, client_endpoint};
use embtune_workloads::{ModelSpec, QueryBatch};

/// A connection to a coordinator.
#[derive(Clone)]
pub struct Client {
    conn: quinn::Connection,
    _ep: quinn::Endpoint,
    limits: FrameLimits,
    pub timeout: Duration,
}

/// A batch ready to send: its head and body built once, sent many times.
#[derive(Clone)]
pub struct PreparedQuery {
    pub head: QueryHead,
    pub parts: Vec<Arc<[u32]>>,
    pub lookups: u64,
}

impl PreparedQuery {
    pub fn new(batch: &QueryBatch, spec_digest: u64) -> PreparedQuery {
        PreparedQuery {
            head: QueryHead {
                spec_digest,
                batch_size: batch.batch_size,
                num_tables: batch.num_tables,
                offsets: batch.offsets.len() as u32,
                ids: batch.ids.len() as u32,
            },
            parts: vec![Arc::from(batch.ids.as_slice()), Arc::from(batch.offsets.as_slice())],
            lookups: batch.ids.len() as u64,
        }
    }
}

impl Client {
    /// Connects with the certificate in the cluster folder `cluster`.
    pub async fn connect(addr: SocketAddr, cluster: &Path) -> Result<Client, TransportError> {
        let id = certs::load(cluster, None, None)?;
        let ep = client_endpoint(&id, &Tuning::default())?;
        let conn = connect(&ep, addr, Duration::from_secs(5)).await?;
        Ok(Client { conn, _ep: ep, limits: FrameLimits::default(), timeout: Duration::from_secs(60) })
    }

    async fn rpc(&self, req: &Request, body: Body, timeout: Duration) -> Result<(Response, Vec<u32>), TransportError> {
        call(&self.conn, req, body, &self.limits, timeout).await
    }

    /// Pools a batch of the deployed model: `batch x width` floats.
    pub async fn query(&self, batch: &QueryBatch, spec_digest: u64) -> Result<(PooledHead, Vec<f32>), TransportError> {
        self.query_prepared(&PreparedQuery::new(batch, spec_digest)).await
    }

    pub async fn query_prepared(&self, q: &PreparedQuery) -> Result<(PooledHead, Vec<f32>), TransportError> {
        match self.rpc(&Request::Query(q.head.clone()), Body::Parts(q.parts.clone()), self.timeout).await? {
            (Response::Pooled(h), words) => Ok((h, words.into_iter().map(f32::from_bits).collect())),
            (other, _) => Err(unexpected(other)),
        }
    }

    /// Deploys a model and plan on the cluster.
    pub async fn deploy(&self, spec: &ModelSpec, plan: &Plan) -> Result<DeployedInfo, TransportError> {
        let req = Request::DeployPlan { spec: Box::new(spec.clone()), plan: Box::new(plan.clone()) };
        match self.rpc(&req, Body::Empty, Duration::from_secs(900)).await? {
            (Response::Deployed(d), _) => Ok(d),
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

fn unexpected(r: Response) -> TransportError {
    TransportError::Remote(WireError::new(ErrorKind::Internal, format!("unexpected reply {r:?}")))
}
