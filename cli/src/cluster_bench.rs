//! `embtune bench --coordinator`: load a cluster and measure it.
//!
//! By default the load goes the direct path: this process is a client that queries the
//! workers by the coordinator's routing table. `--loadgens L` has the coordinator direct `L`
//! load generator processes instead (their reports merged), and `--via coordinator` relays
//! every query through the coordinator, for thin clients and for comparison.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};

use embtune_client::loadgen::{self, LoadConfig, LoadResult, Target as LoadTarget, Unverified};
use embtune_client::{Client, ClientConfig, CoordinatorClient, PreparedQuery};
use embtune_protocol::report::{BenchReport, CoreLoad, WorkerLoad};
use embtune_protocol::wire::{ClusterInfo, LoadSpec, WireFormat};
use embtune_protocol::{Topology, WorkerShape};
use embtune_worker::engine::reference::Reference;
use embtune_worker::machine::MachineInfo;
use embtune_workloads::{BatchGenerator, QueryBatch};

use crate::bench::{BenchArgs, Path, print_report};
use crate::cluster::{Target, runtime};
use crate::plan_choice::{PlanChoice, memory_caps, resolve_plan};
use crate::ui;
use crate::workload::{batch_pool, profile};

pub fn run(args: BenchArgs) -> Result<()> {
    let spec = args.workload.spec()?;
    let target = Target { coordinator: args.coordinator.unwrap(), cluster: args.cluster.clone().unwrap() };
    let quiet = args.json;
    let path = args.via;
    let wire = args.wire;
    if path == Path::Coordinator && args.loadgens > 0 {
        bail!("--loadgens drives load generators on the direct path; leave out --via coordinator");
    }
    runtime()?.block_on(async move {
        let control = target.client_lanes(args.lanes.lanes).await?;
        let status = control.status().await?;
        let up: Vec<_> = status.workers.iter().filter(|w| w.healthy).collect();
        if up.is_empty() {
            bail!(
                "the coordinator at {} has no healthy workers; start some with `embtune worker` or use `embtune up`",
                target.coordinator
            );
        }
        let machine = MachineInfo::detect();
        // Deploy when asked to, or when the cluster serves another model.
        let current = control.deployment().await?;
        let asked = args.plan.is_some()
            || args.strategy.is_some()
            || args.flows.is_some()
            || args.prefetch.is_some()
            || args.client_memory.is_some();
        let generator = BatchGenerator::new(&spec)?;
        // What clients may hold: as asked, or as the plan file was made for (it may keep tables
        // in the clients).
        let client_memory = match (args.client_memory, &args.plan) {
            (Some(m), _) => m,
            (None, Some(f)) => {
                crate::torchrec_cmd::read_plan_file(f, &spec).map_or(0, |p| p.topology.client_memory_bytes)
            }
            (None, None) => 0,
        };
        let plan = match current {
            Some(d) if !asked && d.spec.digest() == spec.digest() => d.plan,
            Some(d) if args.keep_plan => {
                d.spec.same_tables(&spec).map_err(|e| {
                    anyhow::anyhow!(
                        "--keep-plan: this workload's tables differ from the deployed model `{}` ({e}); only pooling, access distributions and batch size may differ",
                        d.spec.name
                    )
                })?;
                d.plan
            }
            None if args.keep_plan => bail!("--keep-plan: nothing is deployed on the cluster"),
            _ => {
                let topo = Topology::of(
                    status
                        .workers
                        .iter()
                        .filter(|w| w.healthy)
                        .map(|w| WorkerShape { cores: w.cores, memory_bytes: w.memory_bytes, core_memory_bytes: None })
                        .collect(),
                )
                .with_client_memory(client_memory);
                let prof = profile(&generator);
                let caps = memory_caps(&machine, !args.no_huge_pages);
                let choice = PlanChoice {
                    file: args.plan.as_ref(),
                    strategy: args.strategy.unwrap_or_default(),
                    flows: args.flows.as_deref(),
                    prefetch: args.prefetch,
                };
                let plan = resolve_plan(&spec, &topo, &choice, &prof.tables, &caps)?;
                let sp = ui::spinner(&format!("deploying {}", plan.summary()), quiet);
                crate::cluster::deploy_watched(&control, &spec, &plan, quiet).await?;
                sp.finish_and_clear();
                plan
            }
        };
        let cores: usize = up.iter().map(|w| w.cores as usize).sum();
        let cfg = LoadConfig {
            concurrency: args.concurrency.unwrap_or(2 * cores.max(1)),
            qps: args.qps,
            warmup: Duration::from_secs_f64(args.warmup.max(0.0)),
            duration: Duration::from_secs_f64(args.duration.max(0.05)),
            max_outstanding: 10_000,
            seed: 0xa11,
        };
        let bar = ui::bar(1000, quiet);
        bar.set_prefix("measuring");
        let timeline = match &args.timeline {
            Some(p) => {
                let mut f = std::fs::File::create(p).with_context(|| format!("creating {}", p.display()))?;
                use std::io::Write;
                writeln!(f, "t_s,queries_per_s")?;
                Some(std::sync::Mutex::new((f, 0.0f64, 0.0f64)))
            }
            None => None,
        };
        let duration_s = cfg.duration.as_secs_f64();
        let tick = |f: f64, qps: f64| {
            bar.set_position((f * 1000.0) as u64);
            bar.set_message(format!("{} queries/s", ui::si(qps)));
            // The load reports its running mean; the timeline wants each second's own rate.
            if let Some(t) = &timeline {
                let mut t = t.lock().unwrap();
                let (el, queries) = (f * duration_s, qps * f * duration_s);
                if el - t.1 >= 1.0 {
                    use std::io::Write;
                    let rate = (queries - t.2) / (el - t.1);
                    let _ = writeln!(t.0, "{el:.1},{rate:.1}");
                    (t.1, t.2) = (el, queries);
                }
            }
        };
        let verify_n = if args.verify { 8 } else { 0 };
        let (r, verified) = match (path, args.loadgens) {
            (Path::Direct, 0) => {
                let sp = ui::spinner("generating batches", quiet);
                let pool: Vec<QueryBatch> =
                    batch_pool(&generator, machine.llc_bytes).into_iter().map(Arc::unwrap_or_clone).collect();
                sp.finish_and_clear();
                let client = direct_client(&target, wire, args.client_cores, args.lanes.lanes).await?;
                let pool = Arc::new(pool);
                let r =
                    loadgen::run(&LoadTarget::Direct { client: client.clone(), pool: pool.clone() }, &cfg, &tick).await;
                let verified = if args.verify { Some(loadgen::verify(&client, &pool, verify_n).await) } else { None };
                (r, verified)
            }
            (Path::Direct, n) => {
                let epoch = control.routes().await?.map(|r| r.epoch).context("nothing is deployed on the cluster")?;
                let spec = LoadSpec {
                    epoch,
                    pool_first: 0,
                    pool_batches: generator.pool_size_for(machine.llc_bytes, 1 << 30) as u32,
                    concurrency: cfg.concurrency as u32,
                    qps: cfg.qps.unwrap_or(0.0),
                    warmup_ms: cfg.warmup.as_millis() as u32,
                    duration_ms: cfg.duration.as_millis() as u32,
                    wire,
                    verify: verify_n as u32,
                    seed: cfg.seed,
                };
                bar.set_message(format!("on {n} load generators"));
                let report = control.run_load(n as u32, &spec).await.context("running the load generators")?;
                let verified = report.verified.map(|ok| {
                    if ok { Ok(()) } else { Err(Unverified::Differs(report.first_error.clone().unwrap_or_default())) }
                });
                (LoadResult::from_report(&report), verified)
            }
            (Path::Coordinator, _) => {
                let sp = ui::spinner("generating batches", quiet);
                let pool = batch_pool(&generator, machine.llc_bytes);
                sp.finish_and_clear();
                let prepared: Arc<Vec<PreparedQuery>> =
                    Arc::new(pool.iter().map(|b| control.prepare(b, &spec)).collect());
                // One connection per four queries in flight (at most eight), so that the load
                // generator's side of a single connection does not cap what the cluster is offered.
                let mut clients = vec![control.clone()];
                for _ in 1..cfg.concurrency.div_ceil(4).clamp(1, 8) {
                    clients.push(target.client_lanes(args.lanes.lanes).await?);
                }
                let r = loadgen::run(&LoadTarget::Relay { clients, pool: prepared.clone() }, &cfg, &tick).await;
                let verified = if args.verify {
                    Some(verify_relay(&control, &plan, &spec, &pool, &prepared, verify_n).await)
                } else {
                    None
                };
                (r, verified)
            }
        };
        bar.finish_and_clear();
        // The coordinator may be gone by now (the direct path serves on without it): the
        // workers' counters are then left out, not the measurement.
        let after = control.status().await.ok();
        // A query the cluster refused (BatchTooLarge, say) is not a wrong result.
        let refused = match &verified {
            Some(Err(Unverified::Refused(e))) => Some(e.clone()),
            Some(Err(Unverified::Differs(m))) => {
                eprintln!("verification failed: {m}");
                None
            }
            _ => None,
        };
        let verified = verified.map(|v| v.is_ok());
        let mut report = report(&spec.name, &plan, &cfg, &r, &status, after.as_ref(), verified);
        report.path = Some(path.name().into());
        report.loadgens = Some(args.loadgens as u32);
        report.wire = Some(if path == Path::Coordinator { WireFormat::F32 } else { wire }.name().into());
        report.verified_batches = verified.map(|_| verify_n as u64);
        if args.json {
            println!("{}", serde_json::to_string_pretty(&report)?);
        } else {
            print_report(&report, &spec);
            if let Some(b) = report.wire_bytes_per_batch {
                println!(
                    "path: {}; {} on the wire per batch ({})",
                    path.name(),
                    ui::bytes(b as u64),
                    report.wire.as_deref().unwrap_or("")
                );
            }
            if after.is_none() {
                eprintln!("note: the coordinator did not answer after the run; per-worker counters are left out");
            }
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

/// A direct client of the cluster `target` names.
pub async fn direct_client(target: &Target, wire: WireFormat, local_cores: usize, lanes: usize) -> Result<Client> {
    let cfg = ClientConfig { wire, local_cores: local_cores.max(1), lanes, ..ClientConfig::default() };
    let client = Client::connect(target.coordinator, &target.cluster, cfg)
        .await
        .with_context(|| format!("connecting to the cluster of the coordinator at {}", target.coordinator))?;
    client.connect_all().await.context("connecting to the workers")?;
    Ok(client)
}

/// Checks the relayed results of the first `n` batches against the reference.
async fn verify_relay(
    control: &CoordinatorClient,
    plan: &embtune_protocol::Plan,
    spec: &embtune_workloads::ModelSpec,
    pool: &[Arc<QueryBatch>],
    prepared: &[PreparedQuery],
    n: usize,
) -> Result<(), Unverified> {
    let row_types: Vec<_> = plan.tables.iter().map(|t| t.row_type).collect();
    let reference = Reference::new(spec, &row_types);
    let tables: Vec<u16> = (0..spec.tables.len() as u16).collect();
    // The same prepared (striped) queries the load sent.
    for (i, (b, q)) in pool.iter().zip(prepared).take(n).enumerate() {
        let (_, out) = control.query_prepared(q).await.map_err(|e| Unverified::Refused(e.to_string()))?;
        reference
            .pool(b, &tables)
            .check(&out)
            .map_err(|m| Unverified::Differs(format!("batch {i} differs from the reference: {m}")))?;
    }
    Ok(())
}

fn report(
    model: &str,
    plan: &embtune_protocol::Plan,
    cfg: &LoadConfig,
    r: &LoadResult,
    before: &ClusterInfo,
    after: Option<&ClusterInfo>,
    verified: Option<bool>,
) -> BenchReport {
    let secs = r.elapsed.as_secs_f64().max(1e-9);
    let h = &r.latency;
    let mut per_core = Vec::new();
    let mut per_worker = Vec::new();
    for w in after.map_or(&[][..], |a| &a.workers[..]) {
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
        let busy = w.engine_ns.saturating_sub(b.map_or(0, |b| b.engine_ns));
        per_worker.push(WorkerLoad {
            worker: w.id,
            addr: w.addr.clone(),
            requests: reqs,
            p50_us: 0.0,
            p99_us: 0.0,
            // Core-busy time per request: the engine work a request costs this worker.
            engine_p50_us: if reqs > 0 { busy as f64 / reqs as f64 / 1000.0 } else { 0.0 },
        });
    }
    let mean = h.mean();
    let engine_mean = if r.queries > 0 { r.engine_us as f64 / r.queries as f64 } else { 0.0 };
    let healthy = after.unwrap_or(before).workers.iter().filter(|w| w.healthy);
    BenchReport {
        mode: "cluster".into(),
        model: model.to_string(),
        plan: plan.summary(),
        workers: healthy.clone().count(),
        cores: healthy.map(|w| w.cores as usize).sum(),
        // Samples per query, as the load measured them (the report printed `batch 0` before).
        batch_size: r.samples.checked_div(r.queries).unwrap_or(0) as u32,
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
        verified_batches: None,
        per_core,
        huge_pages: None,
        isa: String::new(),
        network_fraction: (mean > 0.0).then(|| (1.0 - engine_mean / mean).clamp(0.0, 1.0)),
        per_worker,
        path: None,
        loadgens: None,
        wire_bytes_per_batch: (r.queries > 0).then(|| r.wire_bytes as f64 / r.queries as f64),
        wire: None,
    }
}
