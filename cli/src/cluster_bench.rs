//! `embtune bench --coordinator`: load a cluster through its coordinator and measure it.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};

use embtune_coordinator::client::PreparedQuery;
use embtune_coordinator::loadgen::{self, LoadConfig};
use embtune_protocol::report::{BenchReport, CoreLoad, WorkerLoad};
use embtune_protocol::wire::ClusterInfo;
use embtune_protocol::{Topology, WorkerShape};
use embtune_worker::engine::reference::Reference;
use embtune_worker::machine::MachineInfo;
use embtune_workloads::BatchGenerator;

use crate::bench::{BenchArgs, PlanChoice, batch_pool, memory_caps, print_report, profile, resolve_plan};
use crate::cluster::{Target, runtime};
use crate::ui;

pub fn run(args: BenchArgs) -> Result<()> {
    let spec = args.workload.spec()?;
    let target = Target { coordinator: args.coordinator.unwrap(), cluster: args.cluster.clone().unwrap() };
    let quiet = args.json;
    runtime()?.block_on(async move {
        let client = target.client().await?;
        let status = client.status().await?;
        let up: Vec<_> = status.workers.iter().filter(|w| w.healthy).collect();
        if up.is_empty() {
            bail!(
                "the coordinator at {} has no healthy workers; start some with `embtune worker` or use `embtune up`",
                target.coordinator
            );
        }
        let sp = ui::spinner("generating batches", quiet);
        let generator = BatchGenerator::new(&spec)?;
        let machine = MachineInfo::detect();
        let pool = batch_pool(&generator, machine.llc_bytes);
        sp.finish_and_clear();
        // Deploy when asked to, or when the cluster serves another model.
        let current = client.deployment().await?;
        let asked = args.plan.is_some() || args.strategy.is_some() || args.flows.is_some() || args.prefetch.is_some();
        let plan = match current {
            Some(d) if !asked && d.spec.digest() == spec.digest() => d.plan,
            _ => {
                let topo = Topology {
                    workers: status
                        .workers
                        .iter()
                        .map(|w| WorkerShape { cores: w.cores, memory_bytes: w.memory_bytes, core_memory_bytes: None })
                        .collect(),
                };
                let prof = profile(&generator);
                let caps = memory_caps(&machine, !args.no_huge_pages);
                let choice = PlanChoice {
                    file: args.plan.as_ref(),
                    strategy: args.strategy.as_deref(),
                    flows: args.flows.as_deref(),
                    prefetch: args.prefetch,
                };
                let plan = resolve_plan(&spec, &topo, &choice, &prof.tables, &caps)?;
                let sp = ui::spinner(&format!("deploying {}", plan.summary()), quiet);
                client.deploy(&spec, &plan).await.context("deploying the plan")?;
                sp.finish_and_clear();
                plan
            }
        };
        let prepared: Arc<Vec<PreparedQuery>> = Arc::new(pool.iter().map(|b| client.prepare(b, &spec)).collect());
        let cores: usize = status.workers.iter().filter(|w| w.healthy).map(|w| w.cores as usize).sum();
        let cfg = LoadConfig {
            concurrency: args.concurrency.unwrap_or(2 * cores.max(1)),
            qps: args.qps,
            warmup: Duration::from_secs_f64(args.warmup.max(0.0)),
            duration: Duration::from_secs_f64(args.duration.max(0.05)),
            max_outstanding: 10_000,
        };
        let before = client.status().await?;
        let bar = ui::bar(1000, quiet);
        bar.set_prefix("measuring");
        // One connection per four lanes (at most eight), so that the load generator's side of a
        // single connection does not cap what the cluster is offered.
        let mut clients = vec![client.clone()];
        for _ in 1..cfg.concurrency.div_ceil(4).clamp(1, 8) {
            clients.push(target.client().await?);
        }
        let r = loadgen::run(&clients, prepared.clone(), &cfg, &|f, qps| {
            bar.set_position((f * 1000.0) as u64);
            bar.set_message(format!("{} queries/s", ui::si(qps)));
        })
        .await;
        bar.finish_and_clear();
        let after = client.status().await?;

        let (mut verified, mut verified_batches) = (None, None);
        // A query the cluster refused (BatchTooLarge, say) is not a wrong result.
        let mut refused = None;
        if args.verify {
            let row_types: Vec<_> = plan.tables.iter().map(|t| t.row_type).collect();
            let reference = Reference::new(&spec, &row_types);
            let tables: Vec<u16> = (0..spec.tables.len() as u16).collect();
            let n = 8.min(pool.len());
            let mut ok = true;
            // The same prepared (striped) queries the load sent.
            for (b, q) in pool.iter().zip(prepared.iter()).take(n) {
                match client.query_prepared(q).await {
                    Ok((_, out)) => {
                        if let Err(m) = reference.pool(b, &tables).check(&out) {
                            eprintln!("verification failed: {m}");
                            ok = false;
                        }
                    }
                    Err(e) => {
                        eprintln!("verification query failed: {e}");
                        refused.get_or_insert(e);
                        ok = false;
                    }
                }
            }
            verified = Some(ok && refused.is_none());
            verified_batches = Some(n as u64);
        }
        let report = report(&spec.name, &plan, &cfg, &r, &before, &after, verified, verified_batches);
        if args.json {
            println!("{}", serde_json::to_string_pretty(&report)?);
        } else {
            print_report(&report, &spec);
            if let Some(e) = &r.first_error {
                eprintln!("first error: {e}");
            }
        }
        if let Some(e) = refused {
            bail!("the cluster refused the verification queries, so nothing was verified: {e}");
        }
        if report.verified == Some(false) {
            bail!("verification failed: the cluster's results differ from the reference");
        }
        Ok(())
    })
}

#[allow(clippy::too_many_arguments)]
fn report(
    model: &str,
    plan: &embtune_protocol::Plan,
    cfg: &LoadConfig,
    r: &loadgen::LoadResult,
    before: &ClusterInfo,
    after: &ClusterInfo,
    verified: Option<bool>,
    verified_batches: Option<u64>,
) -> BenchReport {
    let secs = r.elapsed.as_secs_f64();
    let h = &r.latency;
    let row_bytes: f64 = 0.0;
    let _ = row_bytes;
    let mut per_core = Vec::new();
    let mut per_worker = Vec::new();
    for w in &after.workers {
        let b = before.workers.iter().find(|x| x.id == w.id);
        for c in &w.core_counters {
            let prev = b.and_then(|b| b.core_counters.iter().find(|x| x.core == c.core));
            per_core.push(CoreLoad {
                worker: w.id,
                core: c.core,
                cpu: c.cpu as usize,
                // A worker that restarted during the run starts its counters again: never negative.
                busy: c.busy_ns.saturating_sub(prev.map_or(0, |p| p.busy_ns)) as f64 / 1e9 / secs,
                tasks: c.tasks.saturating_sub(prev.map_or(0, |p| p.tasks)),
                lookups: c.lookups.saturating_sub(prev.map_or(0, |p| p.lookups)),
            });
        }
        let reqs = w.requests.saturating_sub(b.map_or(0, |b| b.requests));
        let engine = w.engine_ns.saturating_sub(b.map_or(0, |b| b.engine_ns));
        per_worker.push(WorkerLoad {
            worker: w.id,
            addr: w.addr.clone(),
            requests: reqs,
            p50_us: 0.0,
            p99_us: 0.0,
            engine_p50_us: if reqs > 0 { engine as f64 / reqs as f64 / 1000.0 } else { 0.0 },
        });
    }
    let mean = h.mean();
    let engine_mean = if r.queries > 0 { r.engine_us as f64 / r.queries as f64 } else { 0.0 };
    BenchReport {
        mode: "cluster".into(),
        model: model.to_string(),
        plan: plan.summary(),
        workers: after.workers.iter().filter(|w| w.healthy).count(),
        cores: after.workers.iter().filter(|w| w.healthy).map(|w| w.cores as usize).sum(),
        batch_size: 0,
        concurrency: cfg.concurrency,
        target_qps: cfg.qps,
        duration_s: secs,
        batches: r.queries,
        batches_per_s: r.queries as f64 / secs,
        samples_per_s: r.samples as f64 / secs,
        lookups_per_s: r.lookups as f64 / secs,
        gbytes_per_s: 0.0,
        mean_us: mean,
        p50_us: h.value_at_quantile(0.5) as f64,
        p95_us: h.value_at_quantile(0.95) as f64,
        p99_us: h.value_at_quantile(0.99) as f64,
        p999_us: h.value_at_quantile(0.999) as f64,
        max_us: h.max() as f64,
        errors: r.errors,
        verified,
        verified_batches,
        per_core,
        huge_pages: None,
        isa: String::new(),
        network_fraction: (mean > 0.0).then(|| (1.0 - engine_mean / mean).clamp(0.0, 1.0)),
        per_worker,
    }
}
