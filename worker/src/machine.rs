//! Facts about the machine a worker runs on: caches, memory, CPUs.

use serde::{Deserialize, Serialize};

/// What the planner needs to know about a node.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MachineInfo {
    pub cpus: usize,
    pub cpu_model: String,
    /// Private L2 per core, bytes.
    pub l2_bytes: u64,
    /// Last-level cache, bytes, and how many CPUs share it.
    pub llc_bytes: u64,
    pub llc_cpus: u32,
    /// Memory the kernel says is available now.
    pub mem_available: u64,
    pub mem_total: u64,
    /// The transparent-huge-page mode (`always`, `madvise`, `never`).
    pub thp: String,
}

impl MachineInfo {
    /// Reads sysfs and procfs; falls back to conservative defaults where they are missing.
    pub fn detect() -> MachineInfo {
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
        let (mut l2, mut llc, mut llc_cpus) = (1u64 << 20, 32u64 << 20, cpus as u32);
        for i in 0..8 {
            let dir = format!("/sys/devices/system/cpu/cpu0/cache/index{i}");
            let read = |f: &str| std::fs::read_to_string(format!("{dir}/{f}")).ok().map(|s| s.trim().to_string());
            let (Some(level), Some(kind), Some(size)) = (read("level"), read("type"), read("size")) else { continue };
            if kind == "Instruction" {
                continue;
            }
            let bytes = parse_size(&size);
            match level.as_str() {
                "2" => l2 = bytes,
                "3" => {
                    llc = bytes;
                    llc_cpus = read("shared_cpu_list").map_or(cpus as u32, |l| count_cpu_list(&l));
                }
                _ => {}
            }
        }
        let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
        let field = |name: &str| {
            meminfo
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|r| r.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
                .map_or(0, |kb| kb * 1024)
        };
        let cpu_model = std::fs::read_to_string("/proc/cpuinfo")
            .unwrap_or_default()
            .lines()
            .find_map(|l| l.strip_prefix("model name").map(|r| r.trim_start_matches([' ', '\t', ':']).to_string()))
            .unwrap_or_else(|| std::env::consts::ARCH.to_string());
        let thp = std::fs::read_to_string("/sys/kernel/mm/transparent_hugepage/enabled")
            .ok()
            .and_then(|s| {
                s.split_whitespace().find(|w| w.starts_with('[')).map(|w| w.trim_matches(['[', ']']).to_string())
            })
            .unwrap_or_else(|| "unknown".into());
        MachineInfo {
            cpus,
            cpu_model,
            l2_bytes: l2,
            llc_bytes: llc,
            llc_cpus: llc_cpus.max(1),
            mem_available: field("MemAvailable:"),
            mem_total: field("MemTotal:"),
            thp,
        }
    }
}

/// `32K`, `1024K`, `32M` as bytes.
fn parse_size(s: &str) -> u64 {
    let (num, mult) = match s.chars().last() {
        Some('K') => (&s[..s.len() - 1], 1 << 10),
        Some('M') => (&s[..s.len() - 1], 1 << 20),
        Some('G') => (&s[..s.len() - 1], 1 << 30),
        _ => (s, 1),
    };
    num.parse::<u64>().unwrap_or(0) * mult
}

/// Parses a CPU list (`0-3,8,10-11`) into a list of CPU ids.
pub fn parse_cpu_list(s: &str) -> Result<Vec<usize>, String> {
    let mut out = Vec::new();
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let bad = || format!("bad CPU list `{s}`: use ids and ranges like 0-3,8");
        match part.split_once('-') {
            Some((a, b)) => {
                let (a, b): (usize, usize) = (a.parse().map_err(|_| bad())?, b.parse().map_err(|_| bad())?);
                if a > b {
                    return Err(bad());
                }
                out.extend(a..=b);
            }
            None => out.push(part.parse().map_err(|_| bad())?),
        }
    }
    if out.is_empty() {
        return Err(format!("the CPU list `{s}` names no CPU"));
    }
    Ok(out)
}

fn count_cpu_list(s: &str) -> u32 {
    parse_cpu_list(s).map_or(1, |v| v.len() as u32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_lists_and_sizes_parse() {
        assert_eq!(parse_cpu_list("0-3,8").unwrap(), vec![0, 1, 2, 3, 8]);
        assert!(parse_cpu_list("3-1").is_err());
        assert!(parse_cpu_list("x").is_err());
        assert_eq!(parse_size("1024K"), 1 << 20);
        assert_eq!(parse_size("32M"), 32 << 20);
    }

    #[test]
    fn detection_gives_sane_numbers() {
        let m = MachineInfo::detect();
        assert!(m.cpus >= 1 && m.l2_bytes >= 64 << 10 && m.llc_bytes >= m.l2_bytes);
    }
}
