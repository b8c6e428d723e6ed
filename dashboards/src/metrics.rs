//! `/metrics`: Prometheus metrics in the OpenMetrics text format, encoded from the
//! coordinator's state at scrape time by a custom collector (nothing is counted twice: the
//! coordinator's own counters and histogram buckets are the source).
//!
//! | metric | type | labels |
//! | --- | --- | --- |
//! | `embtune_queries_total`, `embtune_query_errors_total`, `embtune_lookups_total`, `embtune_samples_total` | counter | |
//! | `embtune_query_latency_seconds` | histogram | |
//! | `embtune_workers`, `embtune_workers_healthy` | gauge | |
//! | `embtune_worker_up`, `embtune_worker_queue`, `embtune_worker_cores`, `embtune_worker_memory_bytes`, `embtune_worker_table_bytes` | gauge | `worker` |
//! | `embtune_worker_requests_total` | counter | `worker` |
//! | `embtune_worker_info` | info | `worker`, `name`, `addr` |
//! | `embtune_core_busy_seconds_total`, `embtune_core_tasks_total`, `embtune_core_lookups_total` | counter | `worker`, `core` |
//! | `embtune_plan_tables` | gauge | `mode` |
//! | `embtune_replan_checks`, `embtune_replan_predicted_gain` | gauge | |
//! | `embtune_replan_switches` | gauge | `outcome` |
//! | `embtune_tune_jobs_running` | gauge | |
//! | `embtune_tune_trials`, `embtune_tune_trials_failed`, `embtune_tune_trials_target`, `embtune_tune_best`, `embtune_tune_best_baseline`, `embtune_tune_speedup`, `embtune_tune_tie`, `embtune_tune_head_to_head_rounds`, `embtune_tune_model_error`, `embtune_tune_ceiling_share`, `embtune_tune_running` | gauge | `job`, `dataset`, `objective` |

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::exemplar::Exemplar;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::{Registry, Unit};

use embtune_coordinator::server::Coordinator;
use embtune_protocol::Placement;

use crate::counts::{Counts, TrialCounts};
use crate::state::AppState;
use crate::views;

pub(crate) async fn scrape(State(s): State<Arc<AppState>>) -> Response {
    let mut out = String::new();
    match prometheus_client::encoding::text::encode(&mut out, &s.registry) {
        Ok(()) => ([(header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")], out)
            .into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, format!("encoding the metrics failed: {e}")).into_response(),
    }
}

/// The registry `/metrics` encodes: one collector that reads `c` (and the job trial counts
/// `counts` caches) at every scrape.
pub(crate) fn registry(c: Coordinator, counts: Arc<TrialCounts>) -> Registry {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(Collector { c, counts }));
    registry
}

/// Encodes the coordinator's state on every scrape.
struct Collector {
    c: Coordinator,
    counts: Arc<TrialCounts>,
}

impl std::fmt::Debug for Collector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("embtune collector")
    }
}

type Labels = Vec<(&'static str, String)>;

fn counter(e: &mut DescriptorEncoder, name: &str, help: &str, unit: Option<&Unit>, v: f64) -> std::fmt::Result {
    ConstCounter::new(v).encode(e.encode_descriptor(name, help, unit, MetricType::Counter)?)
}

fn gauge(e: &mut DescriptorEncoder, name: &str, help: &str, v: f64) -> std::fmt::Result {
    ConstGauge::new(v).encode(e.encode_descriptor(name, help, None, MetricType::Gauge)?)
}

/// A counter family: one sample per label set.
fn counters(
    e: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    unit: Option<&Unit>,
    samples: &[(Labels, f64)],
) -> std::fmt::Result {
    let mut m = e.encode_descriptor(name, help, unit, MetricType::Counter)?;
    for (labels, v) in samples {
        ConstCounter::new(*v).encode(m.encode_family(labels)?)?;
    }
    Ok(())
}

/// A gauge family: one sample per label set.
fn gauges(e: &mut DescriptorEncoder, name: &str, help: &str, samples: &[(Labels, f64)]) -> std::fmt::Result {
    let mut m = e.encode_descriptor(name, help, None, MetricType::Gauge)?;
    for (labels, v) in samples {
        ConstGauge::new(*v).encode(m.encode_family(labels)?)?;
    }
    Ok(())
}

impl prometheus_client::collector::Collector for Collector {
    fn encode(&self, mut e: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let q = self.c.query_stats();
        let info = self.c.status();

        // Queries.
        counter(&mut e, "embtune_queries", "Queries the coordinator served.", None, q.queries as f64)?;
        counter(&mut e, "embtune_query_errors", "Queries that failed.", None, q.errors as f64)?;
        counter(&mut e, "embtune_lookups", "Embedding look-ups (ids) in served queries.", None, q.lookups as f64)?;
        counter(&mut e, "embtune_samples", "Samples (bags per table) in served queries.", None, q.samples as f64)?;
        {
            // Per-bucket counts from the cumulative ones; the encoder adds them up again.
            let mut buckets = Vec::with_capacity(q.buckets.len() + 1);
            let mut prev = 0u64;
            for &(le_us, cum) in &q.buckets {
                buckets.push((le_us as f64 / 1e6, cum.saturating_sub(prev)));
                prev = prev.max(cum);
            }
            buckets.push((f64::INFINITY, q.queries.saturating_sub(prev)));
            let mut m = e.encode_descriptor(
                "embtune_query_latency",
                "Latency of served queries, seen by the coordinator.",
                Some(&Unit::Seconds),
                MetricType::Histogram,
            )?;
            m.encode_histogram::<NoLabelSet>(
                q.latency_sum_us as f64 / 1e6,
                q.queries,
                &buckets,
                None::<&HashMap<usize, Exemplar<NoLabelSet, f64>>>,
            )?;
        }

        // Workers.
        let w = |id: u16| -> Labels { vec![("worker", id.to_string())] };
        gauge(&mut e, "embtune_workers", "Workers registered.", info.workers.len() as f64)?;
        gauge(
            &mut e,
            "embtune_workers_healthy",
            "Workers connected, heartbeating and holding the current plan.",
            info.workers.iter().filter(|w| w.healthy).count() as f64,
        )?;
        let per_worker = |f: &dyn Fn(&embtune_protocol::wire::WorkerInfo) -> f64| -> Vec<(Labels, f64)> {
            info.workers.iter().map(|x| (w(x.id), f(x))).collect()
        };
        gauges(
            &mut e,
            "embtune_worker_up",
            "1 if the worker is healthy, else 0.",
            &per_worker(&|x| x.healthy as u8 as f64),
        )?;
        gauges(
            &mut e,
            "embtune_worker_queue",
            "Tasks queued on the worker's engine (last heartbeat).",
            &per_worker(&|x| x.queue as f64),
        )?;
        gauges(&mut e, "embtune_worker_cores", "Engine cores of the worker.", &per_worker(&|x| x.cores as f64))?;
        gauges(
            &mut e,
            "embtune_worker_memory_bytes",
            "Bytes of table memory the worker may use.",
            &per_worker(&|x| x.memory_bytes as f64),
        )?;
        gauges(
            &mut e,
            "embtune_worker_table_bytes",
            "Bytes of tables the worker holds for the current plan.",
            &per_worker(&|x| x.bytes_held as f64),
        )?;
        counters(
            &mut e,
            "embtune_worker_requests",
            "Look-up requests the worker served, from every client (its heartbeats' busiest clients).",
            None,
            &per_worker(&|x| x.requests as f64),
        )?;
        {
            // Traffic per client and worker: direct clients reach the workers without the
            // coordinator, so only the workers' own counters see it. Client 0 is the relay.
            let per_client = |f: &dyn Fn(&embtune_protocol::wire::ClientTraffic) -> f64| -> Vec<(Labels, f64)> {
                info.workers
                    .iter()
                    .flat_map(|x| {
                        x.clients.iter().map(move |t| {
                            (vec![("worker", x.id.to_string()), ("client", format!("{:08x}", t.client))], f(t))
                        })
                    })
                    .collect()
            };
            counters(
                &mut e,
                "embtune_client_requests",
                "Look-up requests a client sent straight to a worker (client 00000000: the coordinator's relay).",
                None,
                &per_client(&|t| t.requests as f64),
            )?;
            counters(
                &mut e,
                "embtune_client_request_bytes",
                "Bytes of look-up requests a client sent to a worker.",
                Some(&Unit::Bytes),
                &per_client(&|t| t.bytes_in as f64),
            )?;
            counters(
                &mut e,
                "embtune_client_reply_bytes",
                "Bytes of pooled rows a worker sent to a client.",
                Some(&Unit::Bytes),
                &per_client(&|t| t.bytes_out as f64),
            )?;
        }
        gauge(&mut e, "embtune_loadgens", "Load generators connected.", info.loadgens.len() as f64)?;
        counter(
            &mut e,
            "embtune_wire_bytes",
            "Bytes of look-ups and pooled rows on the network in the load rounds the coordinator directed.",
            Some(&Unit::Bytes),
            q.wire_bytes as f64,
        )?;
        {
            let mut m = e.encode_descriptor("embtune_worker", "Who each worker is.", None, MetricType::Info)?;
            for x in &info.workers {
                let labels: Labels =
                    vec![("worker", x.id.to_string()), ("name", x.name.clone()), ("addr", x.addr.clone())];
                m.encode_info(&labels)?;
            }
        }
        let per_core = |f: &dyn Fn(&embtune_protocol::wire::CoreCounters) -> f64| -> Vec<(Labels, f64)> {
            info.workers
                .iter()
                .flat_map(|x| {
                    x.core_counters
                        .iter()
                        .map(move |c| (vec![("worker", x.id.to_string()), ("core", c.core.to_string())], f(c)))
                })
                .collect()
        };
        counters(
            &mut e,
            "embtune_core_busy",
            "Time the engine core spent running tasks.",
            Some(&Unit::Seconds),
            &per_core(&|c| c.busy_ns as f64 / 1e9),
        )?;
        counters(&mut e, "embtune_core_tasks", "Tasks the engine core ran.", None, &per_core(&|c| c.tasks as f64))?;
        counters(
            &mut e,
            "embtune_core_lookups",
            "Look-ups the engine core did.",
            None,
            &per_core(&|c| c.lookups as f64),
        )?;

        // The deployed plan.
        {
            let mut modes: Vec<(Labels, f64)> = ["replicated", "owned", "sharded", "client"]
                .iter()
                .map(|m| (vec![("mode", m.to_string())], 0.0))
                .collect();
            if let Some(a) = self.c.active() {
                for t in &a.plan.tables {
                    let i = match t.placement {
                        Placement::Replicated => 0,
                        Placement::Owned(_) => 1,
                        Placement::Client => 3,
                        _ => 2,
                    };
                    modes[i].1 += 1.0;
                }
            }
            gauges(&mut e, "embtune_plan_tables", "Tables of the deployed plan by placement.", &modes)?;
        }

        // Live re-planning: the same status `plan live` and /api/replan show.
        if let Some(r) = self.c.replan_status() {
            gauge(&mut e, "embtune_replan_checks", "Live re-planning checks of the served traffic.", r.checks as f64)?;
            if let Some(a) = &r.last {
                gauge(
                    &mut e,
                    "embtune_replan_predicted_gain",
                    "The cost model's gain of the best plan found for the live traffic over the deployed one.",
                    a.gain,
                )?;
            }
            let count = |f: &dyn Fn(&embtune_protocol::replan::SwitchOutcome) -> bool| {
                r.switches.iter().filter(|w| f(&w.outcome)).count() as f64
            };
            gauges(
                &mut e,
                "embtune_replan_switches",
                "Switches the live re-planner made, by outcome.",
                &[
                    (
                        vec![("outcome", "kept".into())],
                        count(&|o| matches!(o, embtune_protocol::replan::SwitchOutcome::Kept)),
                    ),
                    (
                        vec![("outcome", "rolled_back".into())],
                        count(&|o| matches!(o, embtune_protocol::replan::SwitchOutcome::RolledBack)),
                    ),
                    (
                        vec![("outcome", "failed".into())],
                        count(&|o| matches!(o, embtune_protocol::replan::SwitchOutcome::Failed(_))),
                    ),
                ],
            )?;
        }

        // Tuning.
        let store = self.c.store();
        let jobs = store.jobs().unwrap_or_default();
        let running = jobs.iter().filter(|j| self.c.job_running(&j.id)).count();
        gauge(&mut e, "embtune_tune_jobs_running", "Tuning jobs running now.", running as f64)?;
        let jl = |j: &embtune_protocol::tuning::Job| -> Labels {
            vec![("job", j.id.clone()), ("dataset", j.dataset.clone()), ("objective", j.config.objective.name().into())]
        };
        let per_job = |f: &dyn Fn(&embtune_protocol::tuning::Job) -> Option<f64>| -> Vec<(Labels, f64)> {
            jobs.iter().filter_map(|j| f(j).filter(|v| v.is_finite()).map(|v| (jl(j), v))).collect()
        };
        let counts: HashMap<&str, Counts> = jobs.iter().map(|j| (j.id.as_str(), self.counts.get(store, j))).collect();
        gauges(
            &mut e,
            "embtune_tune_trials",
            "Trials the job has recorded (baselines and failures included).",
            &per_job(&|j| Some(counts[j.id.as_str()].total as f64)),
        )?;
        gauges(
            &mut e,
            "embtune_tune_trials_failed",
            "Trials of the job that failed.",
            &per_job(&|j| Some(counts[j.id.as_str()].failed as f64)),
        )?;
        gauges(
            &mut e,
            "embtune_tune_trials_target",
            "Trials the job will record: its search trials and the baselines.",
            &per_job(&|j| Some((j.config.trials as usize + views::baseline_count(j)) as f64)),
        )?;
        gauges(
            &mut e,
            "embtune_tune_best",
            "The job's best value in the objective's unit (batches/s or microseconds): while it runs the best trial's own measurement, once done the median of the side-by-side rounds (embtune_tune_head_to_head_rounds).",
            &per_job(&|j| j.best.map(|b| b.1)),
        )?;
        gauges(
            &mut e,
            "embtune_tune_best_baseline",
            "Value of the baseline the speed-up is quoted against (the one the best plan leads least), from the same measurement as embtune_tune_best.",
            &per_job(&|j| views::best_baseline(j).map(|b| b.1)),
        )?;
        gauges(
            &mut e,
            "embtune_tune_speedup",
            "How many times better the job's best is than the baseline of embtune_tune_best_baseline: the median of the side-by-side rounds' ratios, 1 for a tie.",
            &per_job(&views::speedup),
        )?;
        gauges(
            &mut e,
            "embtune_tune_tie",
            "1 when the side-by-side rounds cannot tell the job's best from that baseline (a tie: the simpler plan is kept), else 0.",
            &per_job(&|j| j.headline().map(|h| h.tie as u8 as f64)),
        )?;
        gauges(
            &mut e,
            "embtune_tune_head_to_head_rounds",
            "Side-by-side rounds the job's best, baselines and speed-up come from; 0 while the search runs (each trial's own measurement).",
            &per_job(&|j| Some(j.head_to_head.as_ref().map_or(0.0, |h| h.rounds as f64))),
        )?;
        gauges(
            &mut e,
            "embtune_tune_model_error",
            "Median relative error of the cost model over the job's trials.",
            &per_job(&|j| j.model_error),
        )?;
        gauges(
            &mut e,
            "embtune_tune_ceiling_share",
            "The job's best as a share of the cluster's ceiling for its shape (every table cut to 1,000 rows): 1 means placement has nothing left to gain.",
            &per_job(&|j| j.ceiling_share()),
        )?;
        gauges(
            &mut e,
            "embtune_tune_running",
            "1 while the job runs, else 0.",
            &per_job(&|j| Some(self.c.job_running(&j.id) as u8 as f64)),
        )?;
        Ok(())
    }
}
