//! What live re-planning reports: the coordinator's re-planner watches the traffic its workers
//! serve, compares it with the traffic the deployed plan was made for, and proposes (or, in
//! `auto` mode, deploys and then measures) a better plan. These records travel in
//! `Response::Replan`, feed the dashboard and `embtune plan live`, and are pure data.

use serde::{Deserialize, Serialize};

use crate::plan::Plan;

/// What the re-planner may do.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum ReplanMode {
    /// Watch nothing (the workers still count, which costs little; see BENCHMARKS.md).
    #[default]
    Off,
    /// Propose a plan past the gain threshold, show why, deploy nothing.
    Suggest,
    /// Deploy the proposal as a new epoch, measure it against the old plan over the same
    /// traffic and roll back a switch that made things worse.
    Auto,
}

impl ReplanMode {
    pub fn name(self) -> &'static str {
        match self {
            ReplanMode::Off => "off",
            ReplanMode::Suggest => "suggest",
            ReplanMode::Auto => "auto",
        }
    }
}

impl std::str::FromStr for ReplanMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "off" => Ok(ReplanMode::Off),
            "suggest" => Ok(ReplanMode::Suggest),
            "auto" => Ok(ReplanMode::Auto),
            other => Err(format!("unknown re-planning mode `{other}`: use auto, suggest or off")),
        }
    }
}

/// How one table's live traffic differs from what the deployed plan was made for.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct TableDrift {
    pub table: String,
    /// Mean ids per sample: planned (the spec's pooling) and live.
    pub pooling_planned: f64,
    pub pooling_live: f64,
    /// The table's share of every look-up of the model.
    pub share_planned: f64,
    pub share_live: f64,
    /// Share of the table's look-ups on its hottest 1% of rows.
    pub top1_planned: f64,
    pub top1_live: f64,
}

/// One check of the live traffic against the deployed plan.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Assessment {
    /// The plan the traffic was served by.
    pub plan_id: u64,
    /// Seconds of traffic the check saw, and the look-ups in them.
    pub window_s: f64,
    pub lookups: u64,
    pub current: String,
    pub proposed: String,
    /// The cost model's batches per second for the deployed and the proposed plan, both under
    /// the live traffic.
    pub predicted_current: f64,
    pub predicted_proposed: f64,
    /// `predicted_proposed / predicted_current`.
    pub gain: f64,
    /// The tables whose traffic moved most, largest change first.
    pub drift: Vec<TableDrift>,
    /// Why the re-planner proposes or keeps, in a sentence.
    pub verdict: String,
    /// Past the threshold: the plan it proposes.
    pub plan: Option<Plan>,
}

/// How a switch to a proposed plan ended.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "snake_case")]
pub enum SwitchOutcome {
    /// The new plan measured no worse than the old one: it stays.
    Kept,
    /// The new plan measured worse: the old one was deployed again.
    RolledBack,
    /// The new plan could not be deployed (the old one keeps serving).
    Failed(String),
}

/// One switch to a proposed plan, as measured.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Switch {
    /// Milliseconds since the Unix epoch when the switch started.
    pub at_ms: u64,
    pub from_plan: u64,
    pub to_plan: u64,
    pub predicted_gain: f64,
    /// Batches per second the busiest core of the cluster allows, measured from the workers'
    /// counters over the same traffic before and after the switch (`0` where not measured).
    pub capacity_before: f64,
    pub capacity_after: f64,
    /// Batches per second the workers served over the same windows. Under closed-loop load
    /// this is the clients' end-to-end rate, which also pays for what the engines do not see
    /// (a split table's partial sums cross the network and are added by the clients).
    pub served_before: f64,
    pub served_after: f64,
    /// Seconds from the start of the deployment until every worker held the new plan.
    pub deploy_s: f64,
    pub outcome: SwitchOutcome,
}

/// What the re-planner has seen and done since the coordinator started.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Default)]
pub struct ReplanStatus {
    pub mode: ReplanMode,
    /// Propose when the predicted gain is at least this.
    pub gain_threshold: f64,
    pub interval_s: f64,
    /// Checks made.
    pub checks: u64,
    /// The last check, if any traffic was seen.
    pub last: Option<Assessment>,
    /// Every switch, oldest first.
    pub switches: Vec<Switch>,
    /// The stored live job every switch is a trial of.
    pub job: Option<String>,
}
