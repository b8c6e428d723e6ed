//! `embtune gpu-bench` (feature `gpu`): the CUDA look-up kernels on one workload, variant by
//! variant in alternating rounds, timed with CUDA events, each checked against the reference.

use anyhow::{Context, Result, bail};
use clap::Args;

use embtune_protocol::DataFlow;
use embtune_worker::gpu::bench::{GpuBench, GpuBenchReport, RunConfig};
use embtune_worker::gpu::kernels::{self, KernelKnobs, Variant};
use embtune_worker::gpu::{self, L2Options};

use crate::ui;
use crate::workload::WorkloadArgs;

#[derive(Args, Debug)]
pub struct GpuBenchArgs {
    #[command(flatten)]
    pub workload: WorkloadArgs,
    /// CUDA device ordinal.
    #[arg(long, default_value_t = 0)]
    pub device: usize,
    /// Kernel variants, comma-separated: baseline (a thread per output element), vector (a
    /// warp per bag, 16-byte loads), prefetch (vector + rows prefetched --prefetch ahead),
    /// hot (prefetch + hot rows pinned in L2), all.
    #[arg(long, default_value = "all", value_name = "LIST")]
    pub variant: String,
    /// Prefetch distances (steps of rows) to try for prefetch and hot, comma-separated.
    #[arg(long, default_value = "8", value_name = "LIST")]
    pub prefetch: String,
    /// Prefetch distances for hot (default: those of --prefetch), comma-separated.
    #[arg(long, value_name = "LIST")]
    pub hot_prefetch: Option<String>,
    /// Hot rows per table for hot, comma-separated; `auto` fills the persisting L2.
    #[arg(long, default_value = "auto", value_name = "LIST")]
    pub hot_rows: String,
    /// Warps per bag (1, 2, 4, 8), comma-separated: more put fewer tables in flight at once.
    #[arg(long, default_value = "1", value_name = "LIST")]
    pub split: String,
    /// How hot rows stay in L2, comma-separated: both (access-policy window + evict_last
    /// hints), window, hint, none (the hot copy alone: the engine's default).
    #[arg(long, default_value = "both,none", value_name = "LIST")]
    pub l2: String,
    /// Bytes of hot rows to pin in all, MiB (default: the device's persisting-L2 limit).
    #[arg(long, value_name = "MIB")]
    pub hot_mib: Option<u64>,
    /// Read the non-hot rows of hot tables with evict_first.
    #[arg(long)]
    pub cold_evict_first: bool,
    /// __launch_bounds__ minimum blocks of 256 threads per SM (caps registers); 0 picks by
    /// the prefetch distance (4 up to distance 4, 3 up to 8, else 2).
    #[arg(long, default_value_t = 0)]
    pub min_blocks: u32,
    /// Timed launches per variant and round (after --warmup launches).
    #[arg(long, default_value_t = 200)]
    pub reps: usize,
    #[arg(long, default_value_t = 20)]
    pub warmup: usize,
    /// Rounds: every variant is timed once per round, in turn.
    #[arg(long, default_value_t = 3)]
    pub rounds: usize,
    /// Pre-generated batches rotated through (batches 0..K, as `embtune workload dump`).
    #[arg(long, default_value_t = 8)]
    pub batches: usize,
    /// Check every variant on fresh batches against the f64 reference.
    #[arg(long)]
    pub verify: bool,
    /// Verification batches per variant and their size (samples).
    #[arg(long, default_value_t = 2)]
    pub verify_batches: usize,
    #[arg(long, default_value_t = 128)]
    pub verify_batch: u32,
    /// MiB of the device-to-device copy that measures the copy bandwidth (0: skip).
    #[arg(long, default_value_t = 1024)]
    pub copy_mib: usize,
    /// Look-ups with copies (ids in, pooled rows out) timed per variant.
    #[arg(long, default_value_t = 5)]
    pub e2e_reps: usize,
    /// Print one JSON object instead of tables.
    #[arg(long)]
    pub json: bool,
    /// Also write the JSON report to FILE.
    #[arg(long, value_name = "FILE")]
    pub json_out: Option<std::path::PathBuf>,
    /// Compile the kernels of these variants for ARCH (e.g. compute_90) with NVRTC, write the
    /// PTX to FILE and exit: needs NVRTC only, no device.
    #[arg(long, value_name = "FILE")]
    pub ptx_out: Option<std::path::PathBuf>,
}

fn list<T: std::str::FromStr>(s: &str, what: &str) -> Result<Vec<T>> {
    s.split(',')
        .map(str::trim)
        .filter(|x| !x.is_empty())
        .map(|x| x.parse::<T>().map_err(|_| anyhow::anyhow!("--{what}: `{x}` is not a valid value")))
        .collect()
}

/// The contenders the flags describe, in order.
pub fn configs(a: &GpuBenchArgs) -> Result<Vec<RunConfig>> {
    let mut variants: Vec<String> = a.variant.split(',').map(|s| s.trim().to_lowercase()).collect();
    if variants.iter().any(|v| v == "all") {
        variants = ["baseline", "vector", "prefetch", "hot"].map(String::from).to_vec();
    }
    let prefetch: Vec<u16> = list(&a.prefetch, "prefetch")?;
    let hot_prefetch: Vec<u16> = match &a.hot_prefetch {
        Some(l) => list(l, "hot-prefetch")?,
        None => prefetch.clone(),
    };
    let splits: Vec<u32> = list(&a.split, "split")?;
    let hot_rows: Vec<u32> = a
        .hot_rows
        .split(',')
        .map(|x| if x.trim() == "auto" { Ok(0) } else { x.trim().parse() })
        .collect::<Result<_, _>>()?;
    let l2s: Vec<&str> = a.l2.split(',').map(str::trim).collect();
    let base = KernelKnobs { split: 1, min_blocks: a.min_blocks, hot_hint: true, cold_evict_first: a.cold_evict_first };
    let l2_default = L2Options { window: false, hot_budget: a.hot_mib.map(|m| m << 20) };
    let mut out = Vec::new();
    for v in &variants {
        for &split in &splits {
            let knobs = KernelKnobs { split, ..base };
            let sp = if splits.len() > 1 || split != 1 { format!(" split={split}") } else { String::new() };
            match v.as_str() {
                "baseline" => out.push(RunConfig {
                    name: "baseline".into(),
                    flow: DataFlow::Direct { prefetch: 0 },
                    knobs: base,
                    l2: l2_default,
                }),
                "vector" => out.push(RunConfig {
                    name: format!("vector{sp}"),
                    flow: DataFlow::Direct { prefetch: 1 },
                    knobs,
                    l2: l2_default,
                }),
                "prefetch" => {
                    for &p in &prefetch {
                        out.push(RunConfig {
                            name: format!("prefetch pf={p}{sp}"),
                            flow: DataFlow::Direct { prefetch: p },
                            knobs,
                            l2: l2_default,
                        })
                    }
                }
                "hot" => {
                    for &p in &hot_prefetch {
                        for &h in &hot_rows {
                            for &l2 in &l2s {
                                let (window, hint) = match l2 {
                                    "both" => (true, true),
                                    "window" => (true, false),
                                    "hint" => (false, true),
                                    "none" => (false, false),
                                    x => bail!("--l2: `{x}` is not both, window, hint or none"),
                                };
                                let rows = if h == 0 { "auto".to_string() } else { h.to_string() };
                                out.push(RunConfig {
                                    name: format!("hot rows={rows} pf={p}{sp} l2={l2}"),
                                    flow: DataFlow::HotCache { hot_rows: h, prefetch: p },
                                    knobs: KernelKnobs { hot_hint: hint, ..knobs },
                                    l2: L2Options { window, ..l2_default },
                                });
                            }
                        }
                    }
                }
                x => bail!("--variant: `{x}` is not baseline, vector, prefetch, hot or all"),
            }
            if v == "baseline" {
                break;
            }
        }
    }
    if out.is_empty() {
        bail!("no variants to run");
    }
    Ok(out)
}

/// Runs the variants and returns the report; `None` when `--ptx-out` only wrote the PTX.
pub fn measure(a: &GpuBenchArgs) -> Result<Option<GpuBenchReport>> {
    let spec = a.workload.spec()?;
    let configs = configs(a)?;
    if let Some(path) = &a.ptx_out {
        let mut text = String::new();
        for c in &configs {
            let variants: Vec<Variant> = {
                let mut v: Vec<Variant> = Vec::new();
                for t in &spec.tables {
                    let x = Variant::for_table(t.row_type, t.dim, c.flow, t.pooling.mean());
                    if !v.contains(&x) {
                        v.push(x);
                    }
                }
                v
            };
            let ptx = gpu::compile(&kernels::source(&variants, &c.knobs), "compute_90")?;
            text.push_str(&format!("// ===== {} =====\n{ptx}\n", c.name));
        }
        std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))?;
        println!("wrote the PTX of {} variants to {}", configs.len(), path.display());
        return Ok(None);
    }
    let bench = GpuBench {
        spec: spec.clone(),
        device: a.device,
        configs,
        batches: a.batches,
        reps: a.reps.max(1),
        warmup: a.warmup,
        rounds: a.rounds.max(1),
        verify: if a.verify { a.verify_batches.max(1) } else { 0 },
        verify_batch: a.verify_batch.max(1),
        copy_bytes: a.copy_mib << 20,
        e2e_reps: a.e2e_reps,
    };
    let quiet = a.json;
    Ok(Some(embtune_worker::gpu::bench::run(&bench, &|line| {
        if !quiet {
            eprintln!("  {line}");
        }
    })?))
}

pub fn run(a: GpuBenchArgs) -> Result<()> {
    let Some(report) = measure(&a)? else { return Ok(()) };
    let json = serde_json::to_string_pretty(&report)?;
    if let Some(p) = &a.json_out {
        std::fs::write(p, &json).with_context(|| format!("writing {}", p.display()))?;
    }
    if a.json {
        println!("{json}");
    } else {
        print(&report);
    }
    check_verified(&report)
}

/// Fails when a variant's results differ from the reference.
pub fn check_verified(report: &GpuBenchReport) -> Result<()> {
    if report.runs.iter().any(|r| r.verified == Some(false)) {
        bail!("verification failed: a GPU variant's results differ from the reference (see above)");
    }
    Ok(())
}

fn print(r: &GpuBenchReport) {
    println!("device  {}", r.device.summary());
    println!(
        "model   {} ({} tables, batch {}, {} look-ups and {} of rows per batch, {} batches rotated, {} of tables)",
        r.model,
        r.tables,
        r.batch_size,
        ui::si(r.lookups_per_batch),
        ui::bytes(r.row_bytes_per_batch as u64),
        r.rotated_batches,
        ui::bytes(r.table_bytes)
    );
    if let Some(bw) = r.copy_bytes_per_s {
        println!("copy    device-to-device {:.0} GB/s (read + write)", bw / 1e9);
    }
    let mut t = ui::table(&[
        "variant",
        "ms/batch",
        "p10-p90",
        "rounds",
        "look-ups/s",
        "GB/s rows",
        "of copy",
        "with copies",
        "regs",
        "blocks/SM",
        "hot rows",
        "verified",
    ]);
    for x in &r.runs {
        let rounds: Vec<String> = x.round_medians.iter().map(|m| format!("{m:.3}")).collect();
        t.add_row(vec![
            x.name.clone(),
            format!("{:.3}", x.ms.median),
            format!("{:.3}-{:.3}", x.ms.p10, x.ms.p90),
            rounds.join(" "),
            ui::si(x.lookups_per_s),
            format!("{:.0}", x.row_bytes_per_s / 1e9),
            x.of_copy_bandwidth.map_or("-".into(), |f| format!("{:.0}%", f * 100.0)),
            x.e2e_ms.map_or("-".into(), |m| format!("{m:.2} ms")),
            format!("{}{}", x.layout.registers, if x.layout.local_bytes > 0 { " (spills)" } else { "" }),
            x.blocks_per_sm.map_or("-".into(), |b| b.to_string()),
            if x.layout.hot_bytes > 0 {
                format!("{} ({})", x.layout.hot_rows.iter().max().unwrap_or(&0), ui::bytes(x.layout.hot_bytes))
            } else {
                "-".into()
            },
            match (x.verified, &x.verify_rel_error) {
                (Some(true), Some(e)) => format!("yes ({e:.1e})"),
                (Some(true), None) => "yes".into(),
                (Some(false), _) => "NO".into(),
                (None, _) => "-".into(),
            },
        ]);
    }
    println!("{t}");
    for x in &r.runs {
        if let Some(e) = &x.verify_error {
            println!("{}: {e}", x.name);
        }
    }
}
