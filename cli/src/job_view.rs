//! A tuning job as the terminal shows it: following one to its end with a progress bar, the
//! table of its trials, and its contract JSON. `tune`, `up` and `results` all show jobs so,
//! which is why this is a module of its own and not part of any of them.

use std::time::Duration;

use anyhow::Result;

use embtune_client::CoordinatorClient;
use embtune_protocol::tuning::{Job, JobStatus, Trial};

use crate::ui;

/// The contract JSON of a finished job (`job`, `trials`, `best`, `baselines`, `speedup_vs`,
/// ...): the dashboard's job summary, built in one place (`embtune_dashboards::views`).
pub fn summary(job: &Job, trials: &[Trial]) -> serde_json::Value {
    embtune_dashboards::views::summary(job, trials)
}

/// Polls the job until it ends, drawing a progress bar.
pub(crate) async fn follow(client: &CoordinatorClient, id: &str, quiet: bool) -> Result<(Job, Vec<Trial>)> {
    let bar = ui::bar(1, quiet);
    bar.set_prefix("tuning");
    loop {
        let (job, trials) = client.job(id).await?;
        let total = job.config.trials as u64 + embtune_tuner::job::baseline_count(&job.config) as u64;
        bar.set_length(total);
        bar.set_position(trials.len() as u64);
        let o = job.config.objective;
        // While the search runs, every figure is a trial's own measurement; once the job has its
        // side-by-side rounds, the headline every view shows.
        let msg = match (job.best, embtune_dashboards::views::best_baseline_trial(&job), job.headline()) {
            (Some(_), _, Some(h)) if job.head_to_head.is_some() => format!(
                "{id}: best {} {} ({:.2}x {}{}, side by side)",
                fmt(h.best),
                o.unit(),
                h.speedup,
                h.baseline,
                if h.tie { ", a tie" } else { "" }
            ),
            (Some((n, b)), Some((name, base)), _) => format!(
                "{id}: {}/{total} trials; best trial {n} {} {} ({:.2}x {name}, trial against trial)",
                trials.len(),
                fmt(b),
                o.unit(),
                o.speedup(base, b)
            ),
            (Some((_, b)), None, _) => format!("{id}: best {} {}", fmt(b), o.unit()),
            _ => format!("{id}: measuring baselines"),
        };
        let msg =
            if trials.len() as u64 >= total && job.status == JobStatus::Running && job.config.head_to_head_rounds > 0 {
                format!("{id}: the best plan beside every baseline, {} rounds", job.config.head_to_head_rounds)
            } else {
                msg
            };
        bar.set_message(msg);
        match job.status {
            JobStatus::Done | JobStatus::Failed(_) => {
                bar.finish_and_clear();
                return Ok((job, trials));
            }
            _ => tokio::time::sleep(Duration::from_millis(400)).await,
        }
    }
}

/// Four significant figures or more: trials of one job often differ by a few percent, which
/// "1.2k" would hide.
fn fmt(v: f64) -> String {
    if !v.is_finite() {
        "-".into()
    } else if v >= 100_000.0 {
        ui::si(v)
    } else if v >= 1000.0 {
        format!("{v:.0}")
    } else {
        format!("{v:.1}")
    }
}

/// The job's trials as a table, then its headline figures.
pub fn print_summary(job: &Job, trials: &[Trial]) {
    use embtune_dashboards::views;
    let o = job.config.objective;
    println!(
        "job {} on {} ({}), objective {} ({}), started {} UTC",
        job.id,
        job.dataset,
        job.cluster.key(),
        o.name(),
        o.unit(),
        ui::utc(job.created_ms)
    );
    let base = views::best_baseline_trial(job);
    let vs_head = match &base {
        Some((name, _)) => format!("vs {name} (trial)"),
        None => "vs best baseline".into(),
    };
    let side_head = match &job.head_to_head {
        Some(h) => format!("side by side ({} rounds)", h.rounds),
        None => "side by side".into(),
    };
    let mut t = ui::table(&[
        "#",
        "kind",
        "plan",
        "knobs",
        "predicted",
        "trial",
        "±95%",
        &side_head,
        &vs_head,
        "planning",
        "start",
        "end",
    ]);
    let headline = job.headline();
    for tr in trials {
        let (m, ci) =
            tr.measured.as_ref().map_or(("failed".to_string(), String::new()), |m| (fmt(m.value), ci_text(m.ci)));
        let vs = match (&base, &tr.measured) {
            (Some((_, r)), Some(m)) => format!("{:.2}x", o.speedup(*r, m.value)),
            _ => String::new(),
        };
        // A baseline that does not fit never ran: its stored plan is only a stand-in, so the row
        // says why instead of describing the stand-in.
        let plan = match &tr.failure {
            Some(f) if tr.did_not_fit() => f.clone(),
            Some(f) => format!("{} (failed: {f})", tr.plan.summary()),
            None => tr.plan.summary(),
        };
        let side = job.head_to_head.as_ref().and_then(|h| h.contenders.get(&tr.n)).map_or(String::new(), |v| {
            let mark = if job.best.is_some_and(|b| b.0 == tr.n) {
                " best"
            } else if headline.as_ref().and_then(|h| h.tied_trial) == Some(tr.n) {
                " tie"
            } else {
                ""
            };
            format!("{}{mark}", fmt(*v))
        });
        let time = |ms: u64| ui::utc(ms).split(' ').nth(1).unwrap_or("-").to_string();
        t.add_row(vec![
            tr.n.to_string(),
            tr.kind.label(),
            plan,
            views::TrialParams::of(&tr.plan).text(),
            fmt(tr.predicted),
            m,
            ci,
            side,
            vs,
            format!("{:.2}s", tr.planning_ms as f64 / 1e3),
            time(tr.started_ms),
            time(tr.ended_ms),
        ]);
    }
    println!("{t}");
    println!(
        "trial: each trial's own measurement (its rounds' mean); predicted: the cost model's, when proposed; \
         planning: the tuner's time proposing it"
    );
    if let Some((n, b)) = job.best {
        println!("best: trial {n}, {} {} ({})", fmt(b), o.unit(), job.figures_source());
    }
    if let Some(h) = &job.head_to_head {
        println!(
            "side by side, {} alternating rounds of {} contenders (speed-up: median of the rounds' paired ratios; a tie when they cannot tell the plans apart):",
            h.rounds,
            h.contenders.len()
        );
    }
    let reported = job.reported_baselines();
    for (k, x) in job.speedup_vs() {
        let value = reported.get(&k).copied().unwrap_or(f64::NAN);
        let how = match job
            .head_to_head
            .as_ref()
            .map(|h| (h.versus.get(&k), h.winner_baseline.as_deref() == Some(k.as_str())))
        {
            Some((_, true)) => "the best plan".to_string(),
            Some((Some(v), _)) => format!("{} (rounds {:.2}x to {:.2}x)", v.verdict.label(), v.lo, v.hi),
            _ => String::new(),
        };
        println!("  {x:.2}x {k} ({} {}) {how}", fmt(value), o.unit());
    }
    if let Some(v) = views::verdict_text(job) {
        println!("verdict: {v}");
    }
    if let (Some(c), Some(share)) = (job.ceiling, job.ceiling_share()) {
        // Over 100% is the noise of two measurements of the same bound.
        let reach = if share >= 1.0 { "is at it".to_string() } else { format!("reaches {:.0}% of it", share * 100.0) };
        println!(
            "ceiling: {} {} with every table cut to {} rows (the engine nearly free); the best plan {reach}{}",
            fmt(c),
            o.unit(),
            embtune_protocol::tuning::CEILING_ROWS,
            if share >= 0.9 { ": routing and transport, not placement, bound this cluster" } else { "" }
        );
    }
    if let Some(e) = job.model_error {
        println!("cost model: median error {:.0}% over the measured trials", e * 100.0);
    }
    if let JobStatus::Failed(e) = &job.status {
        println!("FAILED: {e}");
    }
}

/// A trial's 95% interval, or `-` after a single round (no interval).
fn ci_text(ci: f64) -> String {
    if ci.is_finite() { format!("{:.1}%", ci * 100.0) } else { "-".into() }
}
