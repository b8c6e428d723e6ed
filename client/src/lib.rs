//! embtune's client: how programs query a cluster and drive it.
//!
//! - [`direct`]: the direct data path. [`Client`] caches the coordinator's routing table, sends
//!   each query straight to the workers that hold its rows, pools the client-resident tables
//!   itself ([`local`]), adds the partial sums and fails over between replicas; the coordinator
//!   never sees the query.
//! - [`control`]: [`CoordinatorClient`], the coordinator's control API (deployments, routes,
//!   status, tuning jobs, load rounds) and the relay path for thin clients.
//! - [`loadgen`]: closed-loop and Poisson load over either path, with mergeable reports.
//! - [`service`]: the `embtune loadgen` process, a client the coordinator directs.
//!
//! # Example
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use embtune_client::{Client, ClientConfig};
//! use embtune_workloads::BatchGenerator;
//!
//! // The coordinator's address and the cluster's certificate folder (`embtune up` prints both).
//! let client = Client::connect("127.0.0.1:7700".parse()?, "embtune-data/cluster".as_ref(), ClientConfig::default()).await?;
//! let routes = client.routes().expect("a deployed model");
//! let batch = BatchGenerator::new(&routes.spec)?.batch(0);
//! let (_head, pooled) = client.query(&batch).await?;
//! assert_eq!(pooled.len(), batch.batch_size as usize * routes.spec.output_width());
//! # Ok(()) }
//! ```

pub mod control;
pub mod direct;
pub mod loadgen;
pub mod local;
pub mod service;

pub use control::{CoordinatorClient, PreparedQuery};
pub use direct::{Client, ClientConfig, ClientCounters, QueryStats, RouteSource};
