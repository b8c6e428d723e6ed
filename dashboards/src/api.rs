//! The JSON API. Every endpoint is documented in `dashboards/API.md`.

use std::sync::Arc;
use std::time::Instant;

use axum::Json;
use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use embtune_coordinator::stats::WINDOW;

use crate::auth::query_param;
use crate::heat::heat_map;
use crate::state::{AppState, Sample};
use crate::views;

/// An error as JSON: `{"error": "..."}`.
pub(crate) struct ApiError(StatusCode, String);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.0, Json(json!({"error": self.1}))).into_response()
    }
}

type ApiResult = Result<Json<Value>, ApiError>;

fn internal(e: impl std::fmt::Display) -> ApiError {
    ApiError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string())
}

fn no_job(id: &str) -> ApiError {
    ApiError(StatusCode::NOT_FOUND, format!("no job `{id}`; /api/jobs lists the jobs"))
}

/// The coordinator's live re-planner: the last check of the traffic against the deployed plan
/// and every switch; `{"mode": "off"}` when it is off.
pub(crate) async fn replan(State(s): State<Arc<AppState>>) -> ApiResult {
    match s.c.replan_status() {
        Some(r) => Ok(Json(serde_json::to_value(r).map_err(internal)?)),
        None => Ok(Json(json!({"mode": "off"}))),
    }
}

pub(crate) async fn not_found(uri: axum::http::Uri) -> ApiError {
    ApiError(StatusCode::NOT_FOUND, format!("nothing at {}; /api lists the endpoints", uri.path()))
}

/// `/api`: the endpoints.
pub(crate) async fn index() -> Json<Value> {
    Json(json!({
        "endpoints": [
            "/api/cluster", "/api/deployment", "/api/jobs", "/api/jobs/{id}", "/api/jobs/{id}/trials/{n}/plan",
            "/api/best", "/api/compare?a={job}&b={job}", "/api/latency", "/api/replan", "/metrics", "/healthz",
        ],
        "docs": "dashboards/API.md in the embtune repository",
    }))
}

/// `/api/cluster`: the workers, live query figures, and per-core load since the previous call.
pub(crate) async fn cluster(State(s): State<Arc<AppState>>) -> ApiResult {
    let info = s.c.status();
    let q = s.c.query_stats();
    let rates = s.load.lock().observe(Sample::of(&info, q.lookups, q.queries, q.samples, Instant::now()));
    let workers: Vec<Value> = info
        .workers
        .iter()
        .map(|w| {
            let mut v = serde_json::to_value(w).unwrap_or(Value::Null);
            let cores: Vec<Value> = w
                .core_counters
                .iter()
                .map(|c| {
                    let r = rates.as_ref().and_then(|r| r.cores.get(&(w.id, c.core)));
                    json!({
                        "core": c.core,
                        "cpu": c.cpu,
                        "busy_ns": c.busy_ns,
                        "tasks": c.tasks,
                        "lookups": c.lookups,
                        "busy_fraction": r.map(|r| r.busy_fraction),
                        "tasks_per_s": r.map(|r| r.tasks_per_s),
                        "lookups_per_s": r.map(|r| r.lookups_per_s),
                    })
                })
                .collect();
            let known: Vec<f64> = cores.iter().filter_map(|c| c["busy_fraction"].as_f64()).collect();
            v["load"] = json!(cores);
            v["busy_fraction"] = if known.is_empty() {
                Value::Null
            } else {
                json!(known.iter().fold(0.0, |a, b| a + b) / known.len() as f64)
            };
            let lookups: Vec<f64> = cores.iter().filter_map(|c| c["lookups_per_s"].as_f64()).collect();
            v["lookups_per_s"] =
                if lookups.is_empty() { Value::Null } else { json!(lookups.iter().fold(0.0, |a, b| a + b)) };
            v["memory_used_fraction"] = json!(w.bytes_held as f64 / w.memory_bytes.max(1) as f64);
            v
        })
        .collect();
    let healthy = info.workers.iter().filter(|w| w.healthy).count();
    let running = s.c.store().jobs().map(|j| j.iter().filter(|j| s.c.job_running(&j.id)).count()).unwrap_or(0);
    Ok(Json(json!({
        "traffic": traffic(&info),
        "loadgens": info.loadgens,
        "wire_bytes_per_batch": (q.queries > 0 && q.wire_bytes > 0).then(|| q.wire_bytes as f64 / q.queries as f64),
        "model": info.model,
        "plan_id": info.plan_id,
        "plan": s.c.active().map(|a| a.plan.summary()),
        "queries": info.queries,
        "query_errors": info.query_errors,
        "uptime_s": s.c.uptime().as_secs_f64(),
        "workers": workers,
        "workers_healthy": healthy,
        "jobs_running": running,
        "interval_s": rates.as_ref().map(|r| r.interval_s),
        "live": {
            "window_s": WINDOW.as_secs_f64(),
            "qps": q.window_qps,
            "samples_per_s": q.window_samples_per_s,
            // No query in the window is no latency to show, not a latency of 0.
            "p50_us": latency_or_null(&q, q.window_p50_us),
            "p99_us": latency_or_null(&q, q.window_p99_us),
            "queries_in_window": q.window_histogram.iter().map(|b| b.1).sum::<u64>(),
            "lookups_per_s": rates.as_ref().map(|r| r.lookups_per_s),
            "queries_per_s": rates.as_ref().map(|r| r.queries_per_s),
        },
        "stats": q,
    })))
}

/// Look-ups per client, added over the workers that reported them (each worker reports its
/// busiest clients with every heartbeat): what every client sends straight to the workers.
fn traffic(info: &embtune_protocol::wire::ClusterInfo) -> Vec<Value> {
    let mut per: std::collections::BTreeMap<u32, (u64, u64, u64, Vec<Value>)> = Default::default();
    for w in &info.workers {
        for t in &w.clients {
            let e = per.entry(t.client).or_default();
            e.0 += t.requests;
            e.1 += t.bytes_in;
            e.2 += t.bytes_out;
            e.3.push(json!({"worker": w.id, "requests": t.requests}));
        }
    }
    let mut rows: Vec<Value> = per
        .into_iter()
        .map(|(client, (requests, bytes_in, bytes_out, workers))| {
            json!({
                "client": client,
                // Client 0 is the coordinator's relay; the others are direct clients.
                "relay": client == 0,
                "requests": requests,
                "bytes_in": bytes_in,
                "bytes_out": bytes_out,
                "workers": workers,
            })
        })
        .collect();
    rows.sort_by_key(|r| std::cmp::Reverse(r["requests"].as_u64().unwrap_or(0)));
    rows
}

/// `/api/deployment`: the deployed model, plan and heat map.
pub(crate) async fn deployment(State(s): State<Arc<AppState>>) -> ApiResult {
    let Some(a) = s.c.active() else {
        return Ok(Json(json!({"deployed": false})));
    };
    let profile = s.profile(&a.spec).await;
    let heat = heat_map(&a.spec, &a.plan, profile.as_deref(), Some(&a.slots));
    let mem = a.plan.memory(&a.spec);
    Ok(Json(json!({
        "deployed": true,
        "plan_id": a.plan_id,
        "model": a.spec.name,
        "spec": spec_summary(&a.spec),
        "summary": a.plan.summary(),
        "strategy": a.plan.strategy,
        "knobs": a.plan.knobs,
        "slots": a.slots,
        "memory_per_worker": mem.per_worker,
        "plan": a.plan,
        "heatmap": heat,
    })))
}

fn spec_summary(spec: &embtune_workloads::ModelSpec) -> Value {
    json!({
        "name": spec.name,
        "digest": format!("{:#x}", spec.digest()),
        "batch_size": spec.batch_size,
        "total_bytes": spec.total_bytes(),
        "tables": spec.tables.iter().map(|t| json!({
            "name": t.name, "rows": t.rows, "dim": t.dim, "row_type": t.row_type.to_string(),
            "pooling": t.pooling.to_string(), "dist": t.dist.to_string(), "bytes": t.bytes(),
        })).collect::<Vec<_>>(),
    })
}

/// `/api/jobs`: every job, newest first.
pub(crate) async fn jobs(State(s): State<Arc<AppState>>) -> ApiResult {
    let store = s.c.store();
    let mut jobs = store.jobs().map_err(internal)?;
    jobs.reverse();
    let rows: Vec<Value> =
        jobs.iter().map(|j| views::list_row(j, s.counts.get(store, j), s.c.job_running(&j.id))).collect();
    Ok(Json(Value::Array(rows)))
}

fn load_job(
    s: &AppState,
    id: &str,
) -> Result<(embtune_protocol::tuning::Job, Vec<embtune_protocol::tuning::Trial>), ApiError> {
    let store = s.c.store();
    let job = store.job(id).map_err(|e| match e {
        embtune_tuner::store::StoreError::NoJob(_) => no_job(id),
        e => internal(e),
    })?;
    let trials = store.trials(id).map_err(internal)?;
    Ok((job, trials))
}

/// `/api/jobs/{id}`: a job with its trials, history and model error.
pub(crate) async fn job(State(s): State<Arc<AppState>>, Path(id): Path<String>) -> ApiResult {
    let (job, trials) = load_job(&s, &id)?;
    Ok(Json(views::detail(&job, &trials, s.c.job_running(&id))))
}

/// `/api/jobs/{id}/trials/{n}/plan`: one trial's plan with its heat map.
pub(crate) async fn trial_plan(State(s): State<Arc<AppState>>, Path((id, n)): Path<(String, u32)>) -> ApiResult {
    let (job, trials) = load_job(&s, &id)?;
    let t = trials.iter().find(|t| t.n == n).ok_or_else(|| {
        ApiError(StatusCode::NOT_FOUND, format!("job `{id}` has no trial {n} ({} trials)", trials.len()))
    })?;
    let profile = s.profile(&job.spec).await;
    // A failed baseline's plan may not be for this spec at all; show what can be shown.
    let heat =
        (t.plan.tables.len() == job.spec.tables.len()).then(|| heat_map(&job.spec, &t.plan, profile.as_deref(), None));
    let deployed = s.c.active().is_some_and(|a| a.plan == t.plan && a.spec.digest() == job.spec_digest);
    Ok(Json(json!({
        "job": job.id,
        "dataset": job.dataset,
        "trial": t.n,
        "kind": t.kind.label(),
        "objective": job.config.objective.name(),
        "unit": job.config.objective.unit(),
        "strategy": t.plan.strategy,
        "summary": t.plan.summary(),
        "knobs": t.plan.knobs,
        "params": views::TrialParams::of(&t.plan),
        "started_ms": t.started_ms,
        "ended_ms": t.ended_ms,
        "side_by_side": job.head_to_head.as_ref().and_then(|h| h.contenders.get(&t.n)),
        "predicted": t.predicted.is_finite().then_some(t.predicted),
        "measured": t.measured,
        "failure": t.failure,
        "best": job.best.is_some_and(|b| b.0 == t.n),
        "deployed": deployed,
        "memory_per_worker": (t.plan.tables.len() == job.spec.tables.len()).then(|| t.plan.memory(&job.spec).per_worker),
        "spec": spec_summary(&job.spec),
        "plan": t.plan,
        "heatmap": heat,
    })))
}

/// `/api/best[?dataset=D]`: the best plan per dataset and cluster.
pub(crate) async fn best(State(s): State<Arc<AppState>>, RawQuery(q): RawQuery) -> ApiResult {
    let q = q.unwrap_or_default();
    let filter = query_param(&q, "dataset").or_else(|| query_param(&q, "preset")).filter(|d| !d.is_empty());
    let store = s.c.store();
    let mut recs = match &filter {
        Some(d) => store.best_for(d),
        None => store.all_best(),
    }
    .map_err(internal)?;
    recs.sort_by(|a, b| (&a.dataset, &a.cluster).cmp(&(&b.dataset, &b.cluster)));
    let rows: Vec<Value> = recs
        .iter()
        .map(|r| {
            let job = store.job(&r.job).ok();
            let trial = store.trials(&r.job).ok().and_then(|ts| ts.into_iter().find(|t| t.n == r.trial));
            json!({
                "preset": r.dataset,
                "dataset": r.dataset,
                "cluster": r.cluster,
                "job": r.job,
                "trial": r.trial,
                "best": r.value,
                "objective": job.as_ref().map(|j| j.config.objective.name()),
                "unit": job.as_ref().map(|j| j.config.objective.unit()),
                "speedup": job.as_ref().and_then(views::speedup),
                "tie": job.as_ref().and_then(|j| j.headline()).map(|h| h.tie),
                "best_baseline": job.as_ref().and_then(views::best_baseline).map(|(name, value)| json!({"name": name, "value": value})),
                "summary": trial.as_ref().map(|t| t.plan.summary()),
                "plan": trial.as_ref().map(|t| &t.plan),
            })
        })
        .collect();
    Ok(Json(Value::Array(rows)))
}

/// `/api/compare?a=JOB&b=JOB`: two jobs side by side.
pub(crate) async fn compare(State(s): State<Arc<AppState>>, RawQuery(q): RawQuery) -> ApiResult {
    let q = q.unwrap_or_default();
    let (Some(a), Some(b)) = (query_param(&q, "a"), query_param(&q, "b")) else {
        return Err(ApiError(StatusCode::BAD_REQUEST, "name two jobs: /api/compare?a=JOB&b=JOB".into()));
    };
    let (ja, ta) = load_job(&s, &a)?;
    let (jb, tb) = load_job(&s, &b)?;
    Ok(Json(views::compare((&ja, &ta), (&jb, &tb))))
}

/// A latency of the rolling window, or null when no query finished in it.
fn latency_or_null(q: &embtune_coordinator::stats::QuerySnapshot, us: f64) -> Value {
    if q.window_histogram.iter().all(|b| b.1 == 0) || !us.is_finite() { Value::Null } else { json!(us) }
}

/// `/api/latency`: the latency histogram of the last seconds of queries, under the current plan.
pub(crate) async fn latency(State(s): State<Arc<AppState>>) -> ApiResult {
    let q = s.c.query_stats();
    let active = s.c.active();
    let bucket = |(le, count): &(u64, u64)| json!({"le_us": le, "count": count});
    let in_window: u64 = q.window_histogram.iter().map(|b| b.1).sum();
    let over = q.buckets.last().map_or(0, |b| q.queries.saturating_sub(b.1));
    Ok(Json(json!({
        "plan_id": active.as_ref().map(|a| a.plan_id),
        "model": active.as_ref().map(|a| a.spec.name.clone()),
        "plan": active.as_ref().map(|a| a.plan.summary()),
        "window_s": WINDOW.as_secs_f64(),
        "qps": q.window_qps,
        "samples_per_s": q.window_samples_per_s,
        "p50_us": latency_or_null(&q, q.window_p50_us),
        "p99_us": latency_or_null(&q, q.window_p99_us),
        "count": in_window,
        "histogram": q.window_histogram.iter().map(bucket).collect::<Vec<_>>(),
        "cumulative": {
            "queries": q.queries,
            "errors": q.errors,
            "mean_us": if q.queries > 0 { Some(q.latency_sum_us as f64 / q.queries as f64) } else { None },
            "buckets": q.buckets.iter().map(bucket).collect::<Vec<_>>(),
            "over_last_bucket": over,
        },
    })))
}
