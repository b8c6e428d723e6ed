//! `embtune workload`: inspect workloads before running them.

use std::path::PathBuf;

use anyhow::Result;
use clap::{Args, Subcommand};
use serde::Serialize;

use embtune_workloads::dist::analytic_top_share;
use embtune_workloads::profile::TOP_FRACTIONS;
use embtune_workloads::trace::Empirical;
use embtune_workloads::{AccessProfile, BatchGenerator, Preset, TableProfile};

use crate::ui;
use crate::workload::WorkloadArgs;

#[derive(Subcommand, Debug)]
pub enum WorkloadCmd {
    /// List the dataset presets.
    Presets,
    /// Print a workload's model spec (TOML, or JSON with --json): a starting point for --model.
    Show {
        #[command(flatten)]
        workload: WorkloadArgs,
        /// Print the spec as JSON instead of TOML.
        #[arg(long)]
        json: bool,
        /// Print it as TorchRec EmbeddingBagConfigs (JSON) with embtune's extras
        /// (pooling_factor, access), which `workload import --torchrec` reads back to the same spec.
        #[arg(long, conflicts_with = "json")]
        torchrec: bool,
    },
    /// Read a model from TorchRec EmbeddingBagConfigs and write an embtune model spec; every
    /// field is used, listed as ignored, or reported as unknown.
    ///
    /// Example: embtune workload import --torchrec dlrm_tables.json --out dlrm.toml
    Import(crate::torchrec_cmd::WorkloadImportArgs),
    /// Per-table skew: distinct ids and the share of look-ups on the top 0.1%, 1% and 10% of
    /// rows, measured over generated batches (or a whole trace with --trace).
    Profile(ProfileArgs),
    /// Write generated batches to a folder, for peers and other tools: `index.json` (the spec
    /// and the file of every batch) and, per batch, `bN.offsets` and `bN.ids` as raw
    /// little-endian u32 (the table-batched layout: offsets has tables x batch + 1 entries).
    Dump {
        #[command(flatten)]
        workload: WorkloadArgs,
        /// Batches to write.
        #[arg(long, default_value_t = 16)]
        batches: usize,
        /// Output folder (created).
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
    },
}

#[derive(Args, Debug)]
pub struct ProfileArgs {
    #[command(flatten)]
    pub workload: WorkloadArgs,
    /// Profile a trace file (one id a line) instead of a model.
    #[arg(long, value_name = "FILE", conflicts_with_all = ["preset", "model"])]
    pub trace: Option<PathBuf>,
    /// Rows of the table the trace indexes (default: the largest id + 1).
    #[arg(long, value_name = "N", requires = "trace")]
    pub trace_rows: Option<u64>,
    /// Batches to generate and count.
    #[arg(long, default_value_t = 8)]
    pub batches: usize,
    /// Print JSON (per table: rows, distinct ids, top shares) instead of a table.
    #[arg(long)]
    pub json: bool,
}

#[derive(Serialize)]
struct Row {
    table: String,
    rows: u64,
    dist: String,
    lookups: u64,
    unique: usize,
    distinct_per_batch: Option<f64>,
    top_0_1pct: f64,
    top_1pct: f64,
    top_10pct: f64,
    /// The distribution's own shares, where it has a closed form.
    expected: Option<[f64; 3]>,
}

pub fn run(cmd: WorkloadCmd) -> Result<()> {
    match cmd {
        WorkloadCmd::Presets => {
            let mut t = ui::table(&["preset", "tables", "rows", "bytes (f32)", "about"]);
            for p in Preset::ALL {
                let s = p.spec(&Default::default())?;
                t.add_row(vec![
                    p.name().to_string(),
                    s.tables.len().to_string(),
                    ui::si(s.tables.iter().map(|t| t.rows as f64).sum()),
                    ui::bytes(s.total_bytes()),
                    p.about().to_string(),
                ]);
            }
            println!("{t}");
            println!("Shrink a preset to fit with --scale X; e.g. `embtune bench --preset criteo-kaggle --scale 0.1`.");
        }
        WorkloadCmd::Import(a) => crate::torchrec_cmd::workload_import(a)?,
        WorkloadCmd::Show { workload, json, torchrec } => {
            let spec = workload.spec()?;
            if torchrec {
                println!("{}", serde_json::to_string_pretty(&embtune_workloads::torchrec::to_torchrec(&spec))?);
            } else if json {
                println!("{}", serde_json::to_string_pretty(&spec)?);
            } else {
                print!("{}", toml::to_string(&spec)?);
            }
        }
        WorkloadCmd::Profile(a) => profile(a)?,
        WorkloadCmd::Dump { workload, batches, out } => dump(&workload, batches, &out)?,
    }
    Ok(())
}

fn dump(w: &WorkloadArgs, n: usize, out: &std::path::Path) -> Result<()> {
    use anyhow::Context;
    let spec = w.spec()?;
    let generator = BatchGenerator::new(&spec)?;
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    let mut files = Vec::new();
    for (i, b) in generator.pool(0, n.max(1)).iter().enumerate() {
        let write = |name: String, v: &[u32]| -> Result<String> {
            let bytes: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
            std::fs::write(out.join(&name), bytes).with_context(|| format!("writing {name}"))?;
            Ok(name)
        };
        let offsets = write(format!("b{i}.offsets"), &b.offsets)?;
        let ids = write(format!("b{i}.ids"), &b.ids)?;
        files.push(serde_json::json!({ "offsets": offsets, "ids": ids, "lookups": b.ids.len() }));
    }
    let index = serde_json::json!({ "spec": spec, "batch_size": spec.batch_size, "num_tables": spec.tables.len(), "batches": files });
    std::fs::write(out.join("index.json"), serde_json::to_string_pretty(&index)?)?;
    println!("wrote {} batches of `{}` to {}", n.max(1), spec.name, out.display());
    Ok(())
}

fn profile(a: ProfileArgs) -> Result<()> {
    let rows_out: Vec<Row> = if let Some(path) = &a.trace {
        let e = Empirical::from_trace_file(path)?;
        let rows = a.trace_rows.unwrap_or_else(|| e.id_space());
        let p = AccessProfile::from_empirical(&e, rows);
        vec![row(path.display().to_string(), "trace".into(), &p, None, None)]
    } else {
        let spec = a.workload.spec()?;
        let generator = BatchGenerator::new(&spec)?;
        let sp = ui::spinner("generating batches", a.json);
        let batches = generator.pool(0, a.batches.max(1));
        sp.finish_and_clear();
        let rows: Vec<u64> = spec.tables.iter().map(|t| t.rows).collect();
        let p = AccessProfile::from_batches(&rows, &batches);
        spec.tables
            .iter()
            .zip(&p.tables)
            .zip(&p.distinct_per_batch)
            .map(|((t, tp), d)| {
                let expected = TOP_FRACTIONS
                    .map(|f| analytic_top_share(&t.dist, t.rows, ((t.rows as f64 * f).ceil() as u64).max(1)));
                let expected = expected.iter().all(Option::is_some).then(|| expected.map(Option::unwrap));
                row(t.name.clone(), t.dist.label(), tp, Some(*d), expected)
            })
            .collect()
    };
    if a.json {
        println!("{}", serde_json::to_string_pretty(&rows_out)?);
        return Ok(());
    }
    let mut t = ui::table(&[
        "table",
        "rows",
        "dist",
        "look-ups",
        "unique",
        "distinct/batch",
        "top 0.1%",
        "top 1%",
        "top 10%",
        "expected (0.1/1/10%)",
    ]);
    for r in &rows_out {
        t.add_row(vec![
            r.table.clone(),
            ui::si(r.rows as f64),
            r.dist.clone(),
            ui::si(r.lookups as f64),
            ui::si(r.unique as f64),
            r.distinct_per_batch.map_or("-".into(), |d| format!("{:.0}", d)),
            pct(r.top_0_1pct),
            pct(r.top_1pct),
            pct(r.top_10pct),
            r.expected.map_or("-".into(), |e| format!("{} / {} / {}", pct(e[0]), pct(e[1]), pct(e[2]))),
        ]);
    }
    println!("{t}");
    Ok(())
}

fn row(table: String, dist: String, p: &TableProfile, distinct: Option<f64>, expected: Option<[f64; 3]>) -> Row {
    Row {
        table,
        rows: p.rows,
        dist,
        lookups: p.lookups,
        unique: p.unique(),
        distinct_per_batch: distinct,
        top_0_1pct: p.top_share(TOP_FRACTIONS[0]),
        top_1pct: p.top_share(TOP_FRACTIONS[1]),
        top_10pct: p.top_share(TOP_FRACTIONS[2]),
        expected,
    }
}

fn pct(v: f64) -> String {
    format!("{:.1}%", v * 100.0)
}
