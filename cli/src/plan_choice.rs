//! Which plan a command runs: a plan file, or a strategy (`auto` or a named baseline) and
//! flows, turned into a plan for this machine's memory system and the workload's profile.
//!
//! `bench`, `bench --coordinator`, `compare`, `plan` and `up` all choose plans the same way, so
//! the choice lives here rather than in one of them.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

use anyhow::{Result, bail};
use clap::builder::{PossibleValue, PossibleValuesParser, TypedValueParser};

use embtune_protocol::{Plan, Topology};
use embtune_tuner::{BaselineOptions, FlowChoice, MemoryCaps, Strategy};
use embtune_worker::machine::MachineInfo;
use embtune_workloads::{ModelSpec, TableProfile};

/// How to place tables: the default planner, or one of the tuner's named strategies.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum StrategyChoice {
    /// The default plan (`embtune_tuner::default_plan`): replicate what every worker's memory
    /// holds, smallest first, and split the rest over every core by access share.
    #[default]
    Auto,
    /// A named strategy, as a tuning job's baselines use it.
    Named(Strategy),
}

impl StrategyChoice {
    /// The value parser of a `--strategy` flag. Its possible values come from
    /// [`Strategy::ALL`], so a new strategy shows up in `--help` and in the error for an
    /// unknown name without an edit here.
    pub fn parser() -> impl TypedValueParser<Value = StrategyChoice> {
        let auto = PossibleValue::new("auto")
            .help("replicate what every worker's memory holds, smallest first; split the rest over every core");
        let named = Strategy::ALL.into_iter().map(|s| {
            let aliases = Strategy::ALIASES.iter().filter(|(_, a)| *a == s).map(|(name, _)| *name);
            PossibleValue::new(s.name()).help(s.about()).aliases(aliases)
        });
        PossibleValuesParser::new(std::iter::once(auto).chain(named))
            .map(|s| s.parse::<StrategyChoice>().expect("every possible value is a strategy"))
    }
}

impl FromStr for StrategyChoice {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "auto" => Ok(StrategyChoice::Auto),
            s => s.parse::<Strategy>().map(StrategyChoice::Named).map_err(|e| format!("{e}, or auto")),
        }
    }
}

impl fmt::Display for StrategyChoice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StrategyChoice::Auto => f.write_str("auto"),
            StrategyChoice::Named(s) => s.fmt(f),
        }
    }
}

/// What the user asked for: a plan file, or a strategy and flows.
#[derive(Clone, Debug, Default)]
pub struct PlanChoice<'a> {
    pub file: Option<&'a PathBuf>,
    pub strategy: StrategyChoice,
    pub flows: Option<&'a str>,
    pub prefetch: Option<u16>,
}

/// The local machine's memory system in the planner's terms.
pub fn memory_caps(m: &MachineInfo, huge_pages: bool) -> MemoryCaps {
    MemoryCaps {
        l2_bytes: m.l2_bytes,
        llc_bytes: m.llc_bytes,
        llc_cores: m.llc_cpus,
        huge_pages: huge_pages && m.thp != "never",
    }
}

/// The plan `choice` describes, for `topo`.
pub fn resolve_plan(
    spec: &ModelSpec,
    topo: &Topology,
    choice: &PlanChoice<'_>,
    profiles: &[TableProfile],
    caps: &MemoryCaps,
) -> Result<Plan> {
    let mut plan = if let Some(path) = choice.file {
        // An embtune plan, or a TorchRec ShardingPlan imported for this spec.
        let plan = crate::torchrec_cmd::read_plan_file(path, spec)?;
        if plan.spec_digest != spec.digest() {
            bail!(
                "{} was made for another model (spec digest {:#x}, this one {:#x}): use the same preset, scale and flags it was tuned with",
                path.display(),
                plan.spec_digest,
                spec.digest()
            );
        }
        if plan.topology.workers.len() != topo.workers.len() || plan.topology.total_cores() != topo.total_cores() {
            eprintln!(
                "note: {} was made for {} worker(s) and {} cores; running it on {} worker(s) and {} cores, owners of missing cores folded onto present ones",
                path.display(),
                plan.topology.workers.len(),
                plan.topology.total_cores(),
                topo.workers.len(),
                topo.total_cores()
            );
        }
        embtune_tuner::job::adapt_plan(&plan, topo)
    } else {
        match choice.strategy {
            StrategyChoice::Auto => embtune_tuner::default_plan(spec, topo, profiles, caps)?,
            StrategyChoice::Named(s) => s.plan(spec, topo, &BaselineOptions::default())?,
        }
    };
    let flows = match choice.flows {
        Some(f) => f.parse::<FlowChoice>().map_err(anyhow::Error::msg)?,
        None => FlowChoice::Keep,
    };
    embtune_tuner::set_flows(&mut plan, spec, profiles, caps, flows, choice.prefetch);
    plan.validate(spec)?;
    Ok(plan)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_strategy_and_alias_parses_through_the_flag() {
        let p = StrategyChoice::parser();
        let cmd = clap::Command::new("t");
        let parse = |s: &str| p.parse_ref(&cmd, None, std::ffi::OsStr::new(s));
        assert_eq!(parse("auto").unwrap(), StrategyChoice::Auto);
        for s in Strategy::ALL {
            assert_eq!(parse(s.name()).unwrap(), StrategyChoice::Named(s));
        }
        for (alias, s) in Strategy::ALIASES {
            assert_eq!(parse(alias).unwrap(), StrategyChoice::Named(s));
        }
        let err = parse("greedy").unwrap_err().to_string();
        assert!(err.contains("greedy-cost"), "{err}");
    }
}
