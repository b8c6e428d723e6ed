//! Tuning records: jobs, trials and what was measured. The tuner writes them to its store,
//! the coordinator serves them, the CLI and the dashboard read them.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use embtune_workloads::ModelSpec;

use crate::plan::{Plan, WorkerShape};

/// What a plan is judged by.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Objective {
    /// Batches per second under closed-loop load (higher is better).
    Throughput,
    /// Mean latency with one batch in flight, microseconds (lower is better).
    Mean,
    /// 99th-percentile latency at a target rate of batches per second, microseconds (lower is
    /// better).
    P99 { qps: f64 },
}

impl Objective {
    pub fn name(&self) -> &'static str {
        match self {
            Objective::Throughput => "throughput",
            Objective::Mean => "mean",
            Objective::P99 { .. } => "p99",
        }
    }

    /// Unit of the objective's values, for reports.
    pub fn unit(&self) -> &'static str {
        match self {
            Objective::Throughput => "batches/s",
            _ => "us",
        }
    }

    /// Whether a larger value is better.
    pub fn maximise(&self) -> bool {
        matches!(self, Objective::Throughput)
    }

    /// Whether `a` is better than `b`.
    pub fn better(&self, a: f64, b: f64) -> bool {
        if self.maximise() { a > b } else { a < b }
    }

    /// How many times better `best` is than `other` (> 1 when better), whichever the direction.
    pub fn speedup(&self, other: f64, best: f64) -> f64 {
        if self.maximise() { best / other.max(1e-12) } else { other / best.max(1e-12) }
    }
}

impl std::str::FromStr for Objective {
    type Err = String;
    /// `p99` parses with a rate of 0; the caller supplies the target rate.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "throughput" => Ok(Objective::Throughput),
            "mean" => Ok(Objective::Mean),
            "p99" => Ok(Objective::P99 { qps: 0.0 }),
            _ => Err(format!("unknown objective `{s}`; use p99, mean or throughput")),
        }
    }
}

/// How a job searches.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum SearchKind {
    /// Simulated annealing on the calibrated cost model, Bayesian optimisation of the knobs.
    #[default]
    Model,
    /// Random plans from the same space: the yardstick the model-driven search is compared to.
    Random,
}

/// What a tuning job is asked to do.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct JobConfig {
    /// Measured trials of the search, besides the baselines.
    pub trials: u32,
    /// Stop after this many seconds, if set.
    pub time_limit_s: Option<f64>,
    pub objective: Objective,
    pub search: SearchKind,
    /// Seconds per measurement round, and the most rounds a trial may take to reach a
    /// confidence interval of `ci_target` (relative half-width).
    pub round_s: f64,
    pub max_rounds: u32,
    pub ci_target: f64,
    /// Closed-loop concurrency for throughput measurements.
    pub concurrency: u32,
    pub seed: u64,
    /// Rounds of the head-to-head at the end of the job (see [`HeadToHead`]); 0 skips it.
    #[serde(default = "default_head_to_head_rounds")]
    pub head_to_head_rounds: u32,
    /// Bytes of tables every client may hold: plans may then keep small tables in the clients
    /// (`Placement::Client`). 0 keeps every table on the workers.
    #[serde(default)]
    pub client_memory_bytes: u64,
    /// How the workers encode the pooled rows they return to the clients.
    #[serde(default)]
    pub wire: crate::wire::WireFormat,
    /// Load generators that measure each trial (0: every one connected, or the coordinator's
    /// own client when none is).
    #[serde(default)]
    pub loadgens: u32,
    /// Plans to measure as named baselines beside the strategies, such as another planner's
    /// (`embtune tune --baseline-plan torchrec=FILE`): measured once like every baseline, then
    /// raced in the head-to-head, which the job's best plan must win against them too.
    #[serde(default)]
    pub baseline_plans: Vec<NamedPlan>,
}

/// A plan with the name it is reported under.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct NamedPlan {
    pub name: String,
    pub plan: Plan,
}

fn default_head_to_head_rounds() -> u32 {
    3
}

impl Default for JobConfig {
    fn default() -> Self {
        JobConfig {
            trials: 20,
            time_limit_s: None,
            objective: Objective::Throughput,
            search: SearchKind::Model,
            round_s: 1.0,
            max_rounds: 5,
            ci_target: 0.05,
            concurrency: 8,
            seed: 1,
            head_to_head_rounds: default_head_to_head_rounds(),
            client_memory_bytes: 0,
            wire: crate::wire::WireFormat::F32,
            loadgens: 0,
            baseline_plans: Vec::new(),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JobStatus {
    Running,
    Done,
    /// Stopped by the coordinator going away; resumes when it comes back.
    Interrupted,
    Failed(String),
    /// The live job of a coordinator that re-plans while serving (`--replan auto`): its trials
    /// are the plan it served and every switch it made; it is never resumed as a tuning job.
    Live,
}

impl JobStatus {
    pub fn label(&self) -> &str {
        match self {
            JobStatus::Running => "running",
            JobStatus::Done => "done",
            JobStatus::Interrupted => "interrupted",
            JobStatus::Live => "live",
            JobStatus::Failed(_) => "failed",
        }
    }
}

/// The cluster a job ran on.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, Default)]
pub struct ClusterDesc {
    pub workers: Vec<WorkerShape>,
    pub cpu_model: String,
}

impl ClusterDesc {
    /// A short key: workers x cores and the CPU, for "best plan per dataset and cluster".
    pub fn key(&self) -> String {
        let cores: Vec<String> = self.workers.iter().map(|w| w.cores.to_string()).collect();
        format!("{}w[{}] {}", self.workers.len(), cores.join(","), self.cpu_model)
    }
}

/// A tuning job.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Job {
    pub id: String,
    /// The preset or model-file name the user gave.
    pub dataset: String,
    pub spec: ModelSpec,
    pub spec_digest: u64,
    pub cluster: ClusterDesc,
    pub config: JobConfig,
    pub status: JobStatus,
    pub created_ms: u64,
    pub updated_ms: u64,
    /// Trial number and value of the best measured plan so far.
    pub best: Option<(u32, f64)>,
    /// Each baseline's measured value.
    pub baselines: BTreeMap<String, f64>,
    /// Median relative error of the cost model's predictions over this job's trials.
    pub model_error: Option<f64>,
    /// Seconds spent in measured trials, summed over restarts.
    pub elapsed_s: f64,
    /// The best plan and the baselines measured again side by side once the search is over.
    #[serde(default)]
    pub head_to_head: Option<HeadToHead>,
    /// The cluster's ceiling for this job's shape: the objective measured after the
    /// head-to-head with every table cut to [`CEILING_ROWS`] rows and replicated (the engine nearly free;
    /// `ModelSpec::free_engine_shape`). No plan of the real tables can do better, so the best
    /// plan's share of it says how much any placement could still gain.
    #[serde(default)]
    pub ceiling: Option<f64>,
    /// What the clients and the network carried while the ceiling was measured.
    #[serde(default)]
    pub ceiling_load: Option<CeilingLoad>,
}

/// The load generators' side of a ceiling measurement.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct CeilingLoad {
    /// Share of their CPUs the load generators used (1 = every CPU they may run on, busy).
    pub client_cpu_share: f64,
    /// Bytes of look-ups and pooled rows per second on the network.
    pub wire_bytes_per_s: f64,
}

/// What bounded a job's cluster: see [`Job::ceiling_bound`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Bound {
    /// The workers' engines: the same shape with nearly free engines went clearly faster.
    Engines,
    /// The clients: at the ceiling the load generators' CPUs were nearly all busy.
    Clients,
    /// The network and its transport (sockets, encryption on either side): at the ceiling
    /// neither the engines nor the clients' CPUs were the limit.
    Network,
}

impl Bound {
    /// Below this share of the ceiling, the real tables' engine work is what holds the best
    /// plan back.
    pub const ENGINES_BELOW: f64 = 0.8;
    /// From this share of their CPUs, the load generators are the bound.
    pub const CLIENTS_FROM: f64 = 0.85;

    /// The bound, from the best plan's share of the ceiling and the load generators' CPU share
    /// at the ceiling (unknown: not the clients).
    pub fn classify(ceiling_share: f64, client_cpu_share: Option<f64>) -> Bound {
        if ceiling_share < Bound::ENGINES_BELOW {
            Bound::Engines
        } else if client_cpu_share.is_some_and(|c| c >= Bound::CLIENTS_FROM) {
            Bound::Clients
        } else {
            Bound::Network
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Bound::Engines => "engines",
            Bound::Clients => "clients",
            Bound::Network => "network",
        }
    }
}

impl Job {
    /// A job just submitted: running, nothing measured yet, created and updated at `now_ms`.
    /// The one way a job record starts; what a later state differs in is set on the result.
    pub fn new(
        id: String,
        dataset: String,
        spec: ModelSpec,
        cluster: ClusterDesc,
        config: JobConfig,
        now_ms: u64,
    ) -> Job {
        Job {
            id,
            dataset,
            spec_digest: spec.digest(),
            spec,
            cluster,
            config,
            status: JobStatus::Running,
            created_ms: now_ms,
            updated_ms: now_ms,
            best: None,
            baselines: BTreeMap::new(),
            model_error: None,
            elapsed_s: 0.0,
            head_to_head: None,
            ceiling: None,
            ceiling_load: None,
        }
    }

    /// The best plan's value as a share of the ceiling (1 = at the ceiling), whichever way the
    /// objective goes.
    pub fn ceiling_share(&self) -> Option<f64> {
        let (_, best) = self.best?;
        let c = self.ceiling?;
        let share = self.config.objective.speedup(c, best);
        share.is_finite().then_some(share)
    }

    /// What bounded this job's best plan: the workers' engines when the free-engine shape ran
    /// clearly faster, else the clients when their CPUs were nearly all busy at the ceiling,
    /// else the network.
    pub fn ceiling_bound(&self) -> Option<Bound> {
        let share = self.ceiling_share()?;
        Some(Bound::classify(share, self.ceiling_load.as_ref().map(|l| l.client_cpu_share)))
    }

    /// Each baseline's value as reported beside [`Job::speedup_vs`]: from the head-to-head when
    /// the job has one, otherwise from the baselines' own trials.
    pub fn reported_baselines(&self) -> &BTreeMap<String, f64> {
        match &self.head_to_head {
            Some(h) if !h.baselines.is_empty() => &h.baselines,
            _ => &self.baselines,
        }
    }

    /// Which measurement the job's reported figures (`best`, the reported baselines,
    /// `speedup_vs`, [`Job::headline`]) come from, in words for every view.
    pub fn figures_source(&self) -> String {
        match &self.head_to_head {
            Some(h) => format!("side by side: medians of {} alternating rounds after the search", h.rounds),
            None => "each trial's own measurement (no side-by-side rounds)".into(),
        }
    }

    /// The one set of headline figures every view shows: the best value, the baseline the
    /// speed-up is quoted against (the one the best plan leads least, or the winner itself when a
    /// baseline won), its value and the speed-up, from the same measurements, and whether the
    /// rounds call it a tie. `None` before a baseline is measured.
    pub fn headline(&self) -> Option<Headline> {
        let (best_trial, best) = self.best?;
        let o = self.config.objective;
        if let Some(h) = &self.head_to_head
            && !h.baselines.is_empty()
        {
            let tie_of = |name: &str| {
                h.versus.get(name).is_some_and(|v| v.verdict == Verdict::Tie)
                    || matches!(&h.outcome, Some(Outcome::Tie { baseline, .. }) if baseline == name)
            };
            let name = match &h.winner_baseline {
                Some(w) => w.clone(),
                None => h
                    .speedup_vs
                    .iter()
                    .filter(|(_, x)| x.is_finite())
                    .min_by(|a, b| {
                        a.1.total_cmp(b.1).then_with(|| {
                            let m = |k: &str| h.versus.get(k).map_or(f64::INFINITY, |v| v.median);
                            m(a.0).total_cmp(&m(b.0))
                        })
                    })?
                    .0
                    .clone(),
            };
            return Some(Headline {
                best_trial,
                best,
                value: *h.baselines.get(&name)?,
                speedup: h.speedup_vs.get(&name).copied().unwrap_or(1.0),
                tie: tie_of(&name),
                tied_trial: match &h.outcome {
                    Some(Outcome::Tie { trial, .. }) => Some(*trial),
                    _ => None,
                },
                winner_is_baseline: h.winner_baseline.is_some(),
                baseline: name,
                source: self.figures_source(),
            });
        }
        let (name, value) = self.baselines.iter().filter(|(_, v)| v.is_finite()).fold(
            None,
            |acc: Option<(&String, f64)>, (k, &v)| match acc {
                Some((_, b)) if !o.better(v, b) => acc,
                _ => Some((k, v)),
            },
        )?;
        Some(Headline {
            best_trial,
            best,
            baseline: name.clone(),
            value,
            speedup: o.speedup(value, best),
            tie: false,
            tied_trial: None,
            winner_is_baseline: false,
            source: self.figures_source(),
        })
    }

    /// How many times better the best plan is than each baseline: from the head-to-head when the
    /// job has one (measured side by side, so drift of the machine between the first trials and
    /// the last cancels out), otherwise from the trials' own values.
    pub fn speedup_vs(&self) -> BTreeMap<String, f64> {
        if let Some(h) = &self.head_to_head {
            return h.speedup_vs.clone();
        }
        let o = self.config.objective;
        match self.best {
            Some((_, best)) => self.baselines.iter().map(|(k, v)| (k.clone(), o.speedup(*v, best))).collect(),
            None => BTreeMap::new(),
        }
    }
}

/// How a contender compares with a baseline over the rounds of a head-to-head, from the
/// per-round paired ratios alone (each ratio is the contender's speed-up over the baseline
/// measured in the same round, > 1 when the contender is better).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// Better by at least [`TIE_MARGIN`] beyond the rounds' spread ([`Versus::from_ratios`]).
    Better,
    /// The rounds cannot tell the two apart: the median gain is within the rounds' spread or
    /// within [`TIE_MARGIN`].
    Tie,
    /// Worse by at least [`TIE_MARGIN`] beyond the rounds' spread.
    Worse,
}

impl Verdict {
    pub fn label(&self) -> &'static str {
        match self {
            Verdict::Better => "better",
            Verdict::Tie => "tie",
            Verdict::Worse => "worse",
        }
    }
}

/// The smallest gain, beyond the rounds' spread, that counts as a difference: below it, even a
/// contender that won every round is called a tie. Trials aim at a 95% interval of 5% and
/// rounds on a shared machine drift by a few percent, so a 2% lead is inside the noise.
pub const TIE_MARGIN: f64 = 0.02;

/// A contender against one baseline over the rounds that measured both: the median, lowest
/// and highest of the paired ratios, and the [`Verdict`] they give.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Versus {
    #[serde(with = "nan_as_null")]
    pub median: f64,
    #[serde(with = "nan_as_null")]
    pub lo: f64,
    #[serde(with = "nan_as_null")]
    pub hi: f64,
    pub rounds: u32,
    pub verdict: Verdict,
}

impl Versus {
    /// The tie rule, the one place it is defined. In logarithms (a ratio of 2 and one of 1/2
    /// are the same distance from 1), `m` is the median of the rounds' paired ratios and `d` the
    /// median deviation of the ratios from it, the rounds' spread. The contender is `Better`
    /// when `m - d` is at least `ln(1 + TIE_MARGIN)`, `Worse` when `m + d` is at most minus
    /// that, and otherwise, no rounds included, the two are a `Tie`. With two rounds `m - d` is
    /// the lower ratio: better in both rounds; with three it is the lowest ratio, or the median
    /// less its distance to the highest, so that one wild round neither makes nor breaks a
    /// difference that the other two agree on, while ratios that straddle 1 around a small
    /// median (0.95, 1.01, 1.03) are a tie.
    pub fn from_ratios(ratios: &[f64]) -> Versus {
        let r: Vec<f64> = ratios.iter().copied().filter(|x| x.is_finite() && *x > 0.0).collect();
        let logs: Vec<f64> = r.iter().map(|x| x.ln()).collect();
        let m = median(&logs);
        let d = median(&logs.iter().map(|l| (l - m).abs()).collect::<Vec<_>>());
        let margin = (1.0 + TIE_MARGIN).ln();
        let verdict = if r.is_empty() {
            Verdict::Tie
        } else if m - d >= margin {
            Verdict::Better
        } else if m + d <= -margin {
            Verdict::Worse
        } else {
            Verdict::Tie
        };
        let lo = r.iter().copied().fold(f64::INFINITY, f64::min);
        let hi = r.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        let (lo, hi) = if r.is_empty() { (f64::NAN, f64::NAN) } else { (lo, hi) };
        Versus { median: median(&r), lo, hi, rounds: r.len() as u32, verdict }
    }

    /// The speed-up to report: the median ratio when the rounds tell the two apart, 1 for a tie
    /// (a difference the rounds cannot show is not reported as one).
    pub fn reported(&self) -> f64 {
        match self.verdict {
            Verdict::Tie => 1.0,
            _ => self.median,
        }
    }
}

/// How a head-to-head ended.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// A searched plan beat every baseline side by side (the tie rule): it is the job's best.
    Search,
    /// The best searched plan (`trial`) and the baseline `baseline` cannot be told apart in the
    /// rounds: the simpler plan, the baseline, is kept.
    Tie { trial: u32, baseline: String },
    /// A baseline beat the searched plans (or none was measured): it is the job's best.
    Baseline,
}

/// A job's headline figures ([`Job::headline`]).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Headline {
    pub best_trial: u32,
    pub best: f64,
    /// The baseline the speed-up is quoted against, and its reported value.
    pub baseline: String,
    pub value: f64,
    pub speedup: f64,
    /// The rounds cannot tell the best plan from this baseline.
    pub tie: bool,
    /// The searched plan that tied with the kept baseline, if one did.
    pub tied_trial: Option<u32>,
    /// The best plan is a baseline (no searched plan beat every baseline side by side).
    pub winner_is_baseline: bool,
    /// Which measurement the figures come from ([`Job::figures_source`]).
    pub source: String,
}

/// The end of a job: its best few search trials and every baseline, measured again in
/// alternating rounds. In each round every contender is deployed and loaded once, in an order
/// that rotates from round to round. Trials measured minutes apart on a shared machine differ by
/// more than plans do, and the best of many noisy trials owes some of its lead to luck; the
/// winner's speed-ups are ratios of measurements taken side by side. A baseline can win: then
/// the job's best plan is that baseline, never a plan that loses to one or cannot be told from
/// one (see [`Versus::from_ratios`], the tie rule).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct HeadToHead {
    /// The trial whose plan won.
    pub best_trial: u32,
    /// Rounds each contender was measured in.
    pub rounds: u32,
    /// Median over the rounds of the winner's value.
    pub best: f64,
    /// Median over the rounds of each contender's value, by trial number.
    pub contenders: BTreeMap<u32, f64>,
    /// Median over the rounds of each baseline's value.
    pub baselines: BTreeMap<String, f64>,
    /// The winner's speed-up over each baseline as reported: the median of the rounds' paired
    /// ratios where the rounds tell the two apart, 1 for a tie and for the winner itself.
    pub speedup_vs: BTreeMap<String, f64>,
    /// The winner against each other baseline: the paired ratios' median and range, and the
    /// verdict of the tie rule.
    #[serde(default)]
    pub versus: BTreeMap<String, Versus>,
    /// How it ended: a searched plan won, tied with a baseline (the baseline kept), or lost.
    /// `None` for jobs stored before ties were told apart.
    #[serde(default)]
    pub outcome: Option<Outcome>,
    /// Each round's values by trial number, as measured.
    #[serde(default)]
    pub per_round: Vec<BTreeMap<u32, f64>>,
    /// The winner's name when it is a baseline.
    #[serde(default)]
    pub winner_baseline: Option<String>,
}

impl HeadToHead {
    /// Summarises rounds of measurements: `rounds[r]` holds each contender's value in round `r`
    /// by trial number, and `baselines` names the contenders that are baselines. `None` without
    /// a round or a contender.
    ///
    /// Measurements are compared within their round, never across rounds. Search contenders are
    /// ranked by the median of their scores (each value over the geometric mean of its round);
    /// the first that is [`Verdict::Better`] than every baseline, and whose median value is not
    /// below any baseline's, wins. Otherwise the baseline with the best median value wins: the
    /// simpler plan is kept when the best searched plan only ties with it. So the reported best
    /// is never below a reported baseline and no speed-up is below 1.
    pub fn from_rounds(
        objective: Objective,
        rounds: &[BTreeMap<u32, f64>],
        baselines: &BTreeMap<u32, String>,
    ) -> Option<HeadToHead> {
        let mut values: BTreeMap<u32, Vec<f64>> = BTreeMap::new();
        let mut scores: BTreeMap<u32, Vec<f64>> = BTreeMap::new();
        for round in rounds {
            let finite: Vec<f64> = round.values().copied().filter(|v| v.is_finite() && *v > 0.0).collect();
            let geomean = (finite.iter().map(|v| v.ln()).sum::<f64>() / finite.len().max(1) as f64).exp();
            for (&n, &v) in round {
                values.entry(n).or_default().push(v);
                scores.entry(n).or_default().push(v / geomean);
            }
        }
        let contenders: BTreeMap<u32, f64> = values.iter().map(|(&n, v)| (n, median(v))).collect();
        // `w` against `b` over the rounds that measured both.
        let versus = |w: u32, b: u32| {
            let ratios: Vec<f64> =
                rounds.iter().filter_map(|r| Some(objective.speedup(*r.get(&b)?, *r.get(&w)?))).collect();
            Versus::from_ratios(&ratios)
        };
        let mut order: Vec<(u32, f64)> =
            scores.iter().map(|(&n, v)| (n, median(v))).filter(|(_, s)| s.is_finite()).collect();
        order.sort_by(|a, b| if objective.maximise() { b.1.total_cmp(&a.1) } else { a.1.total_cmp(&b.1) });
        let measured_baselines: Vec<u32> = baselines.keys().copied().filter(|b| contenders.contains_key(b)).collect();
        let not_below = |w: u32, b: u32| !objective.better(contenders[&b], contenders[&w]);
        let search: Vec<u32> = order.iter().map(|&(n, _)| n).filter(|n| !baselines.contains_key(n)).collect();
        let clear_winner = search
            .iter()
            .copied()
            .find(|&w| measured_baselines.iter().all(|&b| versus(w, b).verdict == Verdict::Better && not_below(w, b)));
        // The best baseline by its median value: never below another baseline's.
        let best_baseline = measured_baselines
            .iter()
            .copied()
            .filter(|b| contenders[b].is_finite())
            .reduce(|a, b| if objective.better(contenders[&b], contenders[&a]) { b } else { a });
        let (best_trial, outcome) = match (clear_winner, best_baseline) {
            (Some(w), _) => (w, Outcome::Search),
            (None, Some(b)) => {
                // The searched plan with the best median side by side (the one every view shows
                // beside the baseline) ties with the kept baseline, unless a baseline beat it.
                let mut by_value: Vec<u32> = search.iter().copied().filter(|s| contenders[s].is_finite()).collect();
                by_value.sort_by(|x, y| {
                    let (a, b) = (contenders[x], contenders[y]);
                    if objective.maximise() { b.total_cmp(&a) } else { a.total_cmp(&b) }
                });
                let tie = by_value.into_iter().find(|&s| {
                    versus(s, b).verdict == Verdict::Tie
                        && measured_baselines.iter().all(|&o| versus(s, o).verdict != Verdict::Worse)
                });
                match tie {
                    Some(s) => (b, Outcome::Tie { trial: s, baseline: baselines[&b].clone() }),
                    None => (b, Outcome::Baseline),
                }
            }
            (None, None) => (order.first()?.0, Outcome::Search),
        };
        let mut speedup_vs = BTreeMap::new();
        let mut vs = BTreeMap::new();
        let mut baseline_values = BTreeMap::new();
        for &n in &measured_baselines {
            let name = baselines[&n].clone();
            baseline_values.insert(name.clone(), contenders[&n]);
            if n == best_trial {
                speedup_vs.insert(name, 1.0);
                continue;
            }
            let mut v = versus(best_trial, n);
            // Where the paired ratios and the medians disagree about which is ahead (the winner's
            // median is not below this baseline's, by its choice), the rounds cannot tell the two
            // apart either.
            let ahead = objective.better(contenders[&best_trial], contenders[&n]);
            if (v.verdict == Verdict::Worse && !objective.better(contenders[&n], contenders[&best_trial]))
                || (v.verdict == Verdict::Better && !ahead)
            {
                v.verdict = Verdict::Tie;
            }
            speedup_vs.insert(name.clone(), v.reported());
            vs.insert(name, v);
        }
        Some(HeadToHead {
            best_trial,
            rounds: rounds.len() as u32,
            best: contenders[&best_trial],
            contenders,
            baselines: baseline_values,
            speedup_vs,
            versus: vs,
            outcome: Some(outcome),
            per_round: rounds.to_vec(),
            winner_baseline: baselines.get(&best_trial).cloned(),
        })
    }

    /// The baselines the winner cannot be told apart from, by name (the kept baseline of a
    /// tie, and any other the rounds call a tie).
    pub fn ties(&self) -> Vec<String> {
        self.versus.iter().filter(|(_, v)| v.verdict == Verdict::Tie).map(|(k, _)| k.clone()).collect()
    }
}

/// The median of a non-empty list (the mean of the middle two for an even count); NaN if empty.
pub fn median(v: &[f64]) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    let m = s.len() / 2;
    if s.len() % 2 == 1 { s[m] } else { (s[m - 1] + s[m]) / 2.0 }
}

/// What produced a trial's plan.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TrialKind {
    Baseline(String),
    /// A placement from the model-driven search.
    Search,
    /// Knobs from Bayesian optimisation on the best placement.
    Knobs,
    Random,
    /// A switch the live re-planner made while serving: the plan it moved to, measured over
    /// the live traffic.
    Switch,
}

impl TrialKind {
    pub fn label(&self) -> String {
        match self {
            TrialKind::Baseline(n) => format!("baseline:{n}"),
            TrialKind::Search => "search".into(),
            TrialKind::Knobs => "knobs".into(),
            TrialKind::Random => "random".into(),
            TrialKind::Switch => "switch".into(),
        }
    }
}

/// What a trial measured.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, Default)]
pub struct Measured {
    /// The objective's value: the mean over rounds.
    pub value: f64,
    /// Each round's value, and the relative half-width of the 95% interval of their mean
    /// (infinite after a single round; stored as `null`, read back as NaN).
    pub rounds: Vec<f64>,
    #[serde(with = "nan_as_null")]
    pub ci: f64,
    pub batches_per_s: f64,
    pub mean_us: f64,
    pub p50_us: f64,
    pub p99_us: f64,
    pub errors: u64,
}

/// Rows per table of the free-engine shape a job's ceiling is measured on
/// (`ModelSpec::free_engine_shape`): few enough that every row stays in cache.
pub const CEILING_ROWS: u64 = 1000;

/// How the failure of a trial whose plan cannot fit in memory begins: such a trial is never
/// deployed, and its stored plan is only a stand-in.
pub const DOES_NOT_FIT: &str = "does not fit";

/// The stored failure of a trial whose plan (`what`) cannot be made on the cluster: the one
/// place that text is written; [`Trial::did_not_fit`] is the one place it is read.
pub fn does_not_fit(what: &str, why: &dyn std::fmt::Display) -> String {
    format!("{DOES_NOT_FIT}: {what}: {why}")
}

/// One trial of a job: a plan deployed and measured.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Trial {
    pub job: String,
    pub n: u32,
    pub kind: TrialKind,
    pub plan: Plan,
    /// The model's prediction of the objective when the trial was proposed; NaN for a plan
    /// that could not be made (a baseline that does not fit), stored as `null`.
    #[serde(with = "nan_as_null")]
    pub predicted: f64,
    pub measured: Option<Measured>,
    /// Why the trial failed, if it did.
    pub failure: Option<String>,
    pub started_ms: u64,
    pub ended_ms: u64,
    /// Milliseconds the tuner spent proposing the trial (model, search), before it was deployed;
    /// 0 in trials stored before this was recorded.
    #[serde(default)]
    pub planning_ms: u64,
}

impl Trial {
    /// Whether the trial's plan could not be made at all (it was never deployed, and its stored
    /// plan is only a stand-in), as opposed to one that failed while deployed or measured.
    pub fn did_not_fit(&self) -> bool {
        self.measured.is_none() && self.failure.as_deref().is_some_and(|f| f.starts_with(DOES_NOT_FIT))
    }
}

/// JSON has no NaN: serde_json writes it as `null`, which a plain `f64` then refuses to read,
/// so a stored trial with a NaN would make its whole job unreadable. In JSON (the store, the
/// API) this writes every non-finite value as `null` and reads `null` back as NaN; binary
/// formats (bincode on the wire) carry the `f64` as it is, so the frame layout is unchanged.
mod nan_as_null {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &f64, s: S) -> Result<S::Ok, S::Error> {
        match (s.is_human_readable(), v.is_finite()) {
            (false, _) => s.serialize_f64(*v),
            (true, true) => s.serialize_some(v),
            (true, false) => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
        if d.is_human_readable() { Ok(Option::<f64>::deserialize(d)?.unwrap_or(f64::NAN)) } else { f64::deserialize(d) }
    }
}

/// The best plan found for a dataset on a cluster: which job and trial.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct BestRecord {
    pub dataset: String,
    /// [`ClusterDesc::key`] of the cluster.
    pub cluster: String,
    pub job: String,
    pub trial: u32,
    pub value: f64,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Rounds of trial 7 (a search trial), 0 (round-robin) and 1 (all-replicate).
    fn rounds(v: &[(f64, f64, f64)]) -> Vec<BTreeMap<u32, f64>> {
        v.iter().map(|&(b, rr, ar)| [(7, b), (0, rr), (1, ar)].into_iter().collect()).collect()
    }

    fn names() -> BTreeMap<u32, String> {
        [(0, "round-robin".to_string()), (1, "all-replicate".to_string())].into_iter().collect()
    }

    #[test]
    fn head_to_head_takes_the_median_of_each_rounds_ratio() {
        // The machine got twice as fast in round 2: plans measured in different rounds would
        // show a 4x "speed-up" that is all drift; ratios within a round show the true 2x.
        let h = HeadToHead::from_rounds(
            Objective::Throughput,
            &rounds(&[(100.0, 50.0, 90.0), (200.0, 100.0, 180.0), (110.0, 55.0, 100.0)]),
            &names(),
        )
        .unwrap();
        assert_eq!(h.rounds, 3);
        assert_eq!(h.best_trial, 7);
        assert_eq!(h.best, 110.0);
        assert_eq!(h.contenders[&0], 55.0);
        assert_eq!(h.baselines["round-robin"], 55.0);
        assert!((h.speedup_vs["round-robin"] - 2.0).abs() < 1e-12);
        assert!((h.speedup_vs["all-replicate"] - 100.0 / 90.0).abs() < 1e-12, "{:?}", h.speedup_vs);
    }

    #[test]
    fn a_baseline_that_wins_side_by_side_is_the_best_plan() {
        // Trial 7 looked best in its own trial, but all-replicate beats it in two rounds of three.
        let h = HeadToHead::from_rounds(
            Objective::Throughput,
            &rounds(&[(100.0, 50.0, 104.0), (100.0, 50.0, 98.0), (100.0, 50.0, 103.0)]),
            &names(),
        )
        .unwrap();
        assert_eq!(h.best_trial, 1);
        assert_eq!(h.best, 103.0);
        assert_eq!(h.speedup_vs["all-replicate"], 1.0);
        assert!((h.speedup_vs["round-robin"] - 103.0 / 50.0).abs() < 1e-12);
    }

    #[test]
    fn a_contender_that_loses_to_a_baseline_in_most_rounds_does_not_win() {
        // Trial 7 has the higher median value (one round on a fast machine lifts it), yet
        // all-replicate beats it in two rounds of three: all-replicate wins.
        let h = HeadToHead::from_rounds(
            Objective::Throughput,
            &rounds(&[(2000.0, 1000.0, 1900.0), (1500.0, 800.0, 1600.0), (2200.0, 1100.0, 2300.0)]),
            &names(),
        )
        .unwrap();
        assert_eq!(h.best_trial, 1, "{h:?}");
        assert!(h.speedup_vs.values().all(|&x| x >= 1.0), "{h:?}");
    }

    #[test]
    fn the_bound_is_the_engines_below_the_ceiling_else_the_clients_or_the_network() {
        assert_eq!(Bound::classify(0.5, Some(0.99)), Bound::Engines);
        assert_eq!(Bound::classify(0.95, Some(0.9)), Bound::Clients);
        assert_eq!(Bound::classify(0.95, Some(0.4)), Bound::Network);
        assert_eq!(Bound::classify(1.1, None), Bound::Network);
        let mut j = job(Some((3, 95.0)), &[]);
        j.ceiling = Some(100.0);
        j.ceiling_load = Some(CeilingLoad { client_cpu_share: 0.97, wire_bytes_per_s: 1e9 });
        assert_eq!(j.ceiling_bound(), Some(Bound::Clients));
        j.ceiling = None;
        assert_eq!(j.ceiling_bound(), None);
    }

    #[test]
    fn the_tie_rule_weighs_the_median_against_the_spread() {
        assert_eq!(Versus::from_ratios(&[1.10, 1.05, 1.20]).verdict, Verdict::Better);
        // Won two rounds of three by little: the ratios straddle 1 around a small median.
        assert_eq!(Versus::from_ratios(&[0.95, 1.034, 1.008]).verdict, Verdict::Tie);
        // Won every round, but by less than the margin.
        assert_eq!(Versus::from_ratios(&[1.01, 1.015, 1.03]).verdict, Verdict::Tie);
        assert_eq!(Versus::from_ratios(&[0.9, 0.95, 0.8]).verdict, Verdict::Worse);
        assert_eq!(Versus::from_ratios(&[]).verdict, Verdict::Tie);
        // One wild round does not undo a 10x lead the other two agree on (measured locally:
        // all-replicate over round-robin on a loaded 2-core machine).
        assert_eq!(Versus::from_ratios(&[0.94, 10.5, 30.27]).verdict, Verdict::Better);
        // Nor does it make a lead of one round out of two small ones.
        assert_eq!(Versus::from_ratios(&[0.5, 1.05, 1.1]).verdict, Verdict::Tie);
        // Two rounds: better in both, or a tie.
        assert_eq!(Versus::from_ratios(&[1.05, 1.3]).verdict, Verdict::Better);
        assert_eq!(Versus::from_ratios(&[0.99, 1.3]).verdict, Verdict::Tie);
        // One round: the margin alone.
        assert_eq!(Versus::from_ratios(&[1.03]).verdict, Verdict::Better);
        assert_eq!(Versus::from_ratios(&[1.01]).verdict, Verdict::Tie);
        let v = Versus::from_ratios(&[0.95, 1.034, 1.008, f64::NAN]);
        assert_eq!((v.lo, v.hi, v.rounds), (0.95, 1.034, 3));
        assert_eq!(v.reported(), 1.0, "a tie is reported as no speed-up");
        assert_eq!(Versus::from_ratios(&[1.1, 1.2, 1.3]).reported(), 1.2);
    }

    #[test]
    fn a_searched_plan_that_ties_with_a_baseline_keeps_the_baseline() {
        // The device's job: the searched plan's ratios over all-replicate are 0.95, 1.03 and
        // 1.01 (median 1.01), while all-replicate's median value is the higher one.
        let h = HeadToHead::from_rounds(
            Objective::Throughput,
            &rounds(&[(1342.0, 700.0, 1412.0), (1500.0, 760.0, 1450.0), (1300.0, 690.0, 1290.0)]),
            &names(),
        )
        .unwrap();
        assert_eq!(h.best_trial, 1, "{h:?}");
        assert_eq!(h.outcome, Some(Outcome::Tie { trial: 7, baseline: "all-replicate".into() }));
        assert_eq!(h.best, 1412.0);
        assert_eq!(h.speedup_vs["all-replicate"], 1.0);
        assert_eq!(h.versus["round-robin"].verdict, Verdict::Better);
        assert_eq!(h.per_round.len(), 3);
    }

    /// Whatever the rounds, the reported best is never below a reported baseline, and no
    /// reported speed-up is below 1: the medians and the ratios never contradict each other.
    #[test]
    fn the_best_and_the_speedups_never_contradict_each_other() {
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x % 10_000) as f64 / 10_000.0
        };
        let names: BTreeMap<u32, String> = (0..3).map(|i| (i, format!("b{i}"))).collect();
        for case in 0..2000 {
            let objective = if case % 2 == 0 { Objective::Throughput } else { Objective::Mean };
            let n_rounds = 1 + case % 5;
            let rounds: Vec<BTreeMap<u32, f64>> = (0..n_rounds)
                .map(|_| {
                    let drift = 0.7 + 0.6 * next();
                    (0..6)
                        .map(|n| (n, drift * (1000.0 + 60.0 * n as f64 * (next() - 0.4)) * (0.9 + 0.2 * next())))
                        .collect()
                })
                .collect();
            let h = HeadToHead::from_rounds(objective, &rounds, &names).unwrap();
            for (k, &b) in &h.baselines {
                assert!(!objective.better(b, h.best), "case {case}: best {} below {k} {b}: {h:?}", h.best);
                assert!(h.speedup_vs[k] >= 1.0, "case {case}: speed-up over {k} below 1: {h:?}");
            }
            if h.outcome == Some(Outcome::Search) {
                assert!(h.versus.values().all(|v| v.verdict == Verdict::Better), "{h:?}");
            }
            assert!(h.versus.values().all(|v| v.verdict != Verdict::Worse), "{h:?}");
        }
    }

    #[test]
    fn the_ceiling_share_is_the_best_over_the_ceiling_either_way() {
        let mut j = job(Some((3, 80.0)), &[("round-robin", 50.0)]);
        assert_eq!(j.ceiling_share(), None, "no ceiling measured");
        j.ceiling = Some(100.0);
        assert!((j.ceiling_share().unwrap() - 0.8).abs() < 1e-12, "throughput: 80 of 100");
        j.config.objective = Objective::Mean;
        j.best = Some((3, 125.0));
        assert!((j.ceiling_share().unwrap() - 0.8).abs() < 1e-12, "latency: 100 us is the floor, 125 us reached");
    }

    #[test]
    fn head_to_head_of_a_latency_objective_divides_the_other_way() {
        let h = HeadToHead::from_rounds(Objective::Mean, &rounds(&[(10.0, 30.0, 20.0)]), &names()).unwrap();
        assert_eq!(h.best_trial, 7);
        assert_eq!(h.speedup_vs["round-robin"], 3.0);
        assert_eq!(h.speedup_vs["all-replicate"], 2.0);
        assert!(HeadToHead::from_rounds(Objective::Mean, &[], &names()).is_none());
    }

    fn job(best: Option<(u32, f64)>, baselines: &[(&str, f64)]) -> Job {
        let spec = ModelSpec { name: "m".into(), batch_size: 1, seed: 1, source: String::new(), tables: vec![] };
        Job {
            status: JobStatus::Done,
            best,
            baselines: baselines.iter().map(|&(k, v)| (k.to_string(), v)).collect(),
            ..Job::new("j".into(), "d".into(), spec, ClusterDesc::default(), JobConfig::default(), 0)
        }
    }

    #[test]
    fn a_job_reports_the_head_to_head_speedups_when_it_has_them() {
        let mut job = job(Some((5, 300.0)), &[("round-robin", 100.0)]);
        assert_eq!(job.speedup_vs()["round-robin"], 3.0);
        job.head_to_head = HeadToHead::from_rounds(Objective::Throughput, &rounds(&[(250.0, 125.0, 200.0)]), &names());
        assert_eq!(job.speedup_vs()["round-robin"], 2.0);
    }

    /// A failed trial has no prediction (NaN): JSON (the store) holds it as `null` and bincode
    /// (the wire) as the float itself, and both read it back.
    #[test]
    fn a_trial_without_a_prediction_round_trips_through_json_and_frames() {
        let t = Trial {
            job: "j".into(),
            n: 3,
            kind: TrialKind::Baseline("all-replicate".into()),
            plan: Plan {
                strategy: "all-replicate: does not fit".into(),
                spec_digest: 1,
                topology: crate::plan::Topology::uniform(1, 1, 1),
                tables: vec![],
                knobs: crate::plan::Knobs::default(),
            },
            predicted: f64::NAN,
            measured: None,
            failure: Some("does not fit".into()),
            started_ms: 1,
            ended_ms: 2,
            planning_ms: 5,
        };
        let json = serde_json::to_string(&t).unwrap();
        assert!(json.contains("\"predicted\":null"), "{json}");
        let back: Trial = serde_json::from_str(&json).unwrap();
        assert!(back.predicted.is_nan());
        let bytes = crate::codec::encode_head(&t, 0).unwrap();
        let back: Trial = crate::codec::decode_meta(&bytes[crate::codec::HEADER_LEN..]).unwrap();
        assert!(back.predicted.is_nan());
        // One round measured: no interval (infinite), which must not poison the record either.
        let one = Trial {
            measured: Some(Measured { value: 3.0, rounds: vec![3.0], ci: f64::INFINITY, ..Default::default() }),
            ..t.clone()
        };
        let back: Trial = serde_json::from_str(&serde_json::to_string(&one).unwrap()).unwrap();
        assert!(!back.measured.unwrap().ci.is_finite());
        let ok = Trial { predicted: 2.5, ..t };
        let back: Trial = serde_json::from_str(&serde_json::to_string(&ok).unwrap()).unwrap();
        assert_eq!(back, ok);
        let bytes = crate::codec::encode_head(&ok, 0).unwrap();
        assert_eq!(crate::codec::decode_meta::<Trial>(&bytes[crate::codec::HEADER_LEN..]).unwrap(), ok);
    }

    #[test]
    fn a_job_stored_before_the_head_to_head_existed_still_reads() {
        let mut v = serde_json::to_value(job(None, &[])).unwrap();
        v.as_object_mut().unwrap().remove("head_to_head");
        v["config"].as_object_mut().unwrap().remove("head_to_head_rounds");
        v["config"].as_object_mut().unwrap().remove("baseline_plans");
        let back: Job = serde_json::from_value(v).unwrap();
        assert_eq!(back.head_to_head, None);
        assert_eq!(back.config.head_to_head_rounds, 3);
        assert!(back.config.baseline_plans.is_empty());
    }
}
