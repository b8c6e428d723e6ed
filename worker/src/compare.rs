//! Several plans on one workload, measured in alternating rounds.
//!
//! A shared, noisy machine moves absolute figures by tens of percent from one minute to the
//! next; ratios measured round by round, with every variant run in every round and the order
//! rotated, are stable. Each variant is deployed on its own engine up front (memory for all of
//! them is checked by the caller), and only one engine runs at a time.

use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use embtune_protocol::Plan;
use embtune_workloads::{ModelSpec, QueryBatch};

use crate::bench::drive;
use crate::engine::kernels::Isa;
use crate::engine::reference::Reference;
use crate::engine::{Engine, EngineConfig, EngineError, Lookup};
use crate::limit::median;

/// One plan to compare.
pub struct Variant {
    pub label: String,
    pub plan: Plan,
}

pub struct CompareConfig {
    pub spec: ModelSpec,
    pub variants: Vec<Variant>,
    pub cpus: Vec<usize>,
    pub rounds: usize,
    pub round: Duration,
    pub warmup: Duration,
    pub concurrency: usize,
    pub pool: Vec<Arc<QueryBatch>>,
    pub hot: Box<dyn Fn(usize, usize) -> Vec<u32> + Send + Sync>,
    pub huge_pages: bool,
    pub verify: bool,
    /// The highest kernel level to use (`None`: the best the CPU has).
    pub isa: Option<Isa>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct VariantResult {
    pub label: String,
    pub plan: String,
    /// Median over rounds.
    pub lookups_per_s: f64,
    pub rounds: Vec<f64>,
    /// Median over rounds of this variant's throughput over the first variant's in that round.
    pub speedup_vs_first: f64,
    pub p50_us: f64,
    pub p99_us: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub verified: Option<bool>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct CompareReport {
    pub model: String,
    pub cores: usize,
    pub rounds: usize,
    pub round_s: f64,
    pub variants: Vec<VariantResult>,
}

/// Runs the comparison; `progress` gets (round, rounds, variant label).
pub fn run(cfg: CompareConfig, progress: &dyn Fn(usize, usize, &str)) -> Result<CompareReport, EngineError> {
    let mut engines = Vec::new();
    for v in &cfg.variants {
        progress(0, cfg.rounds, &format!("deploying {}", v.label));
        let e =
            Engine::start(EngineConfig { cpus: cfg.cpus.clone(), pin: true, huge_pages: cfg.huge_pages, isa: cfg.isa });
        let mut a = v.plan.assignment(&cfg.spec, 0);
        a.fill_hot_ids(&v.plan, &cfg.hot);
        e.deploy(&a)?;
        engines.push(e);
    }
    for e in &engines {
        drive(e, &cfg.pool, cfg.concurrency, cfg.warmup, &|_| {});
    }
    let n = engines.len();
    let mut rounds = vec![Vec::new(); n];
    let mut hist: Vec<hdrhistogram::Histogram<u64>> =
        (0..n).map(|_| hdrhistogram::Histogram::new_with_bounds(1, 600_000_000, 3).unwrap()).collect();
    for r in 0..cfg.rounds {
        // Rotate the order so that no variant always runs right after another's warm caches.
        for k in 0..n {
            let i = (k + r) % n;
            progress(r, cfg.rounds, &cfg.variants[i].label);
            let m = drive(&engines[i], &cfg.pool, cfg.concurrency, cfg.round, &|_| {});
            rounds[i].push(m.lookups as f64 / cfg.round.as_secs_f64());
            hist[i].add(&m.latency).expect("same bounds");
        }
    }
    let mut results = Vec::new();
    for (i, v) in cfg.variants.iter().enumerate() {
        let ratios: Vec<f64> = rounds[i].iter().zip(&rounds[0]).map(|(a, b)| a / b).collect();
        let verified = cfg.verify.then(|| {
            let row_types: Vec<_> = v.plan.tables.iter().map(|t| t.row_type).collect();
            let reference = Reference::new(&cfg.spec, &row_types);
            cfg.pool.iter().take(3).all(|b| {
                let tables: Vec<u16> = (0..b.num_tables as u16).collect();
                engines[i]
                    .lookup(Lookup::all_tables(b.clone()))
                    .is_ok_and(|out| reference.pool(b, &tables).check(&out.pooled).is_ok())
            })
        });
        results.push(VariantResult {
            label: v.label.clone(),
            plan: v.plan.summary(),
            lookups_per_s: median(&rounds[i]),
            rounds: rounds[i].clone(),
            speedup_vs_first: median(&ratios),
            p50_us: hist[i].value_at_quantile(0.5) as f64,
            p99_us: hist[i].value_at_quantile(0.99) as f64,
            verified,
        });
    }
    Ok(CompareReport {
        model: cfg.spec.name.clone(),
        cores: cfg.cpus.len(),
        rounds: cfg.rounds,
        round_s: cfg.round.as_secs_f64(),
        variants: results,
    })
}
