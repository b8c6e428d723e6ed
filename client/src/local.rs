//! Client-resident tables: the plan's `client` tables, materialised in the client and pooled
//! there by the same engine the workers run.
//!
//! Rows are a function of the table's seed and the row id (ARCHITECTURE.md), so a client builds
//! its copy from the spec alone and its sums match the workers' and the reference's. Their
//! pooled rows never cross the network: for a model whose many small tables make most of the
//! output, that is most of the bytes a query would otherwise move.

use std::sync::Arc;

use embtune_protocol::wire::{ErrorKind, RouteTable, WireError};
use embtune_transport::TransportError;
use embtune_worker::engine::{Engine, EngineConfig, Lookup};
use embtune_workloads::QueryBatch;

/// An engine holding the client-resident tables of one deployment.
pub struct LocalTables {
    engine: Engine,
    /// Bytes of tables it holds.
    pub bytes: u64,
}

impl LocalTables {
    /// Materialises the client tables of `table`'s plan on `cores` engine threads (not pinned:
    /// a client shares its machine). `None` when the plan keeps no table in the clients.
    pub async fn build(table: &RouteTable, cores: usize) -> Result<Option<Arc<LocalTables>>, TransportError> {
        let Some(assignment) = table.plan.client_assignment(&table.spec, cores as u16) else { return Ok(None) };
        tokio::task::spawn_blocking(move || {
            let engine = Engine::start(EngineConfig {
                cpus: (0..assignment.cores as usize).collect(),
                pin: false,
                huge_pages: true,
                isa: None,
            });
            let report = engine.deploy(&assignment).map_err(|e| {
                TransportError::Remote(WireError::new(
                    ErrorKind::Deploy,
                    format!("materialising the client-resident tables: {e}"),
                ))
            })?;
            tracing::info!("client-resident tables: {} tables, {} bytes", report.tables, report.bytes);
            Ok(Some(Arc::new(LocalTables { engine, bytes: report.bytes })))
        })
        .await
        .map_err(|e| TransportError::Stream(format!("materialising the client-resident tables: {e}")))?
    }

    /// Pools `batch`, whose slot `k` reads the model's table `tables[k]`: sums, side by side,
    /// `batch x width` (mean pooling is divided by the caller, once every part is in).
    pub async fn pool(&self, batch: QueryBatch, tables: Vec<u16>) -> Result<Vec<f32>, TransportError> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.engine.submit(
            Lookup { batch: Arc::new(batch), tables: tables.into(), finalize_mean: false, epoch: 0 },
            Box::new(move |r| {
                let _ = tx.send(r);
            }),
        );
        match rx.await {
            Ok(Ok(out)) => Ok(out.pooled),
            Ok(Err(e)) => {
                Err(TransportError::Remote(WireError::new(ErrorKind::Internal, format!("client engine: {e}"))))
            }
            Err(_) => Err(TransportError::Stream("the client engine dropped a request".into())),
        }
    }
}
