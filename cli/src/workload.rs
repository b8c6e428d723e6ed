//! The workload flags every command shares, the model spec they build, and what commands
//! generate from it before measuring: the access profile and the pool of batches; and how the
//! notes of an imported TorchRec model are printed.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use clap::Args;

use embtune_workloads::torchrec::{ImportNote, NoteKind};
use embtune_workloads::{
    AccessDist, AccessProfile, BatchGenerator, ModelSpec, Pooling, Preset, PresetOptions, QueryBatch, RowType,
};

/// Which model and which queries. Pick a preset (real datasets' table shapes) or a model file.
#[derive(Args, Clone, Debug, Default)]
pub struct WorkloadArgs {
    /// Dataset preset: criteo-kaggle, criteo-terabyte, avazu, kuairec, taobao, tenrec, micro24,
    /// dlrm-2021, dlrm-2022, synthetic (`embtune workload presets` lists them).
    #[arg(long, value_name = "P", conflicts_with = "model")]
    pub preset: Option<String>,
    /// A model spec in TOML or JSON (`embtune workload show --preset avazu` prints one to start
    /// from), or a list of TorchRec EmbeddingBagConfigs (see `embtune workload import --help`).
    #[arg(long, value_name = "FILE")]
    pub model: Option<PathBuf>,
    /// Multiply every table's rows by X in (0, 1] so that the model fits this machine.
    #[arg(long, value_name = "X")]
    pub scale: Option<f64>,
    /// synthetic: number of tables.
    #[arg(long, value_name = "T")]
    pub tables: Option<u32>,
    /// synthetic: rows per table.
    #[arg(long, value_name = "R")]
    pub rows: Option<u64>,
    /// Embedding dimension of every table.
    #[arg(long, value_name = "D")]
    pub dim: Option<u32>,
    /// Ids per sample and table: a number, uniform:MIN:MAX or poisson:MEAN.
    #[arg(long, value_name = "L")]
    pub pooling: Option<String>,
    /// Access distribution: uniform, zipf:S, hotset:P:H (hotset:0.99:0.001 = 99% of look-ups
    /// on 0.1% of rows; also `extreme`), trace:FILE (ids one a line) or profile:FILE.
    #[arg(long, value_name = "DIST")]
    pub dist: Option<String>,
    /// Samples per batch.
    #[arg(long, value_name = "B")]
    pub batch: Option<u32>,
    /// Row type of every table: f32, f16 or int8.
    #[arg(long, value_name = "TYPE")]
    pub row_type: Option<String>,
    /// Seed of the tables' contents and of the queries.
    #[arg(long)]
    pub seed: Option<u64>,
    /// Let plans store tables as f16 or int8 (lossy) to save memory and bandwidth.
    #[arg(long)]
    pub allow_quantization: bool,
}

impl WorkloadArgs {
    /// The spec the flags describe. Overrides apply to model files as to presets.
    pub fn spec(&self) -> Result<ModelSpec> {
        let pooling: Option<Pooling> = self.pooling.as_deref().map(str::parse).transpose()?;
        let dist: Option<AccessDist> = self.dist.as_deref().map(str::parse).transpose()?;
        let row_type: Option<RowType> = self.row_type.as_deref().map(str::parse).transpose()?;
        let opts = PresetOptions {
            scale: self.scale,
            tables: self.tables,
            rows: self.rows,
            dim: self.dim,
            pooling,
            dist,
            batch: self.batch,
            row_type,
            seed: self.seed,
            allow_quantization: self.allow_quantization,
        };
        let spec = match (&self.preset, &self.model) {
            (Some(p), _) => {
                let preset: Preset = p.parse()?;
                preset.spec(&opts)?
            }
            (None, Some(path)) => {
                if opts.tables.is_some() || opts.rows.is_some() {
                    bail!("--tables and --rows shape the synthetic preset only; edit the model file instead");
                }
                let (mut spec, notes) = ModelSpec::load_with_notes(path)
                    .with_context(|| format!("loading the model {}", path.display()))?;
                // A file of TorchRec configs: say what was assumed or approximated.
                print_notes(&notes, false);
                apply_overrides(&mut spec, &opts);
                spec.validate()?;
                spec
            }
            (None, None) => bail!("name a workload: --preset P (see `embtune workload presets`) or --model FILE"),
        };
        Ok(spec)
    }
}

fn apply_overrides(spec: &mut ModelSpec, o: &PresetOptions) {
    for t in &mut spec.tables {
        if let Some(s) = o.scale {
            t.rows = ((t.rows as f64 * s).ceil() as u64).max(1);
        }
        if let Some(d) = o.dim {
            t.dim = d;
        }
        if let Some(p) = o.pooling {
            t.pooling = p;
        }
        if let Some(d) = &o.dist {
            t.dist = d.clone();
        }
        if let Some(r) = o.row_type {
            t.row_type = r;
        }
        if o.allow_quantization {
            t.quantizable = true;
        }
    }
    if let Some(b) = o.batch {
        spec.batch_size = b;
    }
    if let Some(s) = o.seed {
        spec.seed = s;
    }
}

/// Access profiles of every table (see [`embtune_workloads::profile::profile_generator`]).
pub fn profile(generator: &BatchGenerator) -> AccessProfile {
    embtune_workloads::profile::profile_generator(generator)
}

/// Batches a benchmark rotates through, generated in parallel before timing: enough that a
/// pass outgrows the last-level cache (`llc` bytes), so that the pool measures memory and not
/// the cache.
pub fn batch_pool(generator: &BatchGenerator, llc: u64) -> Vec<Arc<QueryBatch>> {
    let n = generator.pool_size_for(llc, 1 << 30);
    generator.pool(0, n).into_iter().map(Arc::new).collect()
}

/// Prints an import's notes to stderr, one a line; `ignored` ones only when asked.
pub fn print_notes(notes: &[ImportNote], ignored_too: bool) {
    for n in notes.iter().filter(|n| ignored_too || n.kind != NoteKind::Ignored) {
        eprintln!("note: {n}");
    }
}
