//! Dataset presets: the real table cardinalities of public recommendation datasets.
//!
//! Each preset keeps the dataset's real row counts at `--scale 1`; `--scale X` multiplies them
//! so that a model fits the machine while keeping the relative sizes that make placement
//! interesting (a few huge tables, many tiny ones).

mod research;

use std::fmt;
use std::str::FromStr;

use crate::WorkloadError;
use crate::spec::{AccessDist, ModelSpec, Pooling, PoolingMode, RowType, TableSpec};

/// A named workload.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Preset {
    CriteoKaggle,
    CriteoTerabyte,
    Avazu,
    Kuairec,
    Taobao,
    Tenrec,
    Micro24,
    Dlrm2021,
    Dlrm2022,
    Synthetic,
}

impl Preset {
    pub const ALL: [Preset; 10] = [
        Preset::CriteoKaggle,
        Preset::CriteoTerabyte,
        Preset::Avazu,
        Preset::Kuairec,
        Preset::Taobao,
        Preset::Tenrec,
        Preset::Micro24,
        Preset::Dlrm2021,
        Preset::Dlrm2022,
        Preset::Synthetic,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Preset::CriteoKaggle => "criteo-kaggle",
            Preset::CriteoTerabyte => "criteo-terabyte",
            Preset::Avazu => "avazu",
            Preset::Kuairec => "kuairec",
            Preset::Taobao => "taobao",
            Preset::Tenrec => "tenrec",
            Preset::Micro24 => "micro24",
            Preset::Dlrm2021 => "dlrm-2021",
            Preset::Dlrm2022 => "dlrm-2022",
            Preset::Synthetic => "synthetic",
        }
    }

    /// One line for `--help` and listings.
    pub fn about(self) -> &'static str {
        match self {
            Preset::CriteoKaggle => "Criteo Kaggle DAC: 26 one-hot tables, 33.8M rows, dim 16 (DLRM's Kaggle config)",
            Preset::CriteoTerabyte => "Criteo 1TB, MLPerf DLRM-v2: 26 multi-hot tables capped at 40M rows, dim 128",
            Preset::Avazu => "Avazu CTR: 21 one-hot fields, 9.5M rows, dim 16",
            Preset::Kuairec => "KuaiRec (Kuaishou short video): user, item and feature fields, dim 16",
            Preset::Taobao => "Taobao display-ad click logs: user, ad and profile fields, dim 16",
            Preset::Tenrec => "Tenrec (Tencent): up to 84 fields of its QK/QB CTR files, dim 16",
            Preset::Micro24 => "MICRO'24 GPU config: 12 tables x 500K rows, dim 128, pooling 150, batch 2048",
            Preset::Dlrm2021 => "Meta dlrm_datasets 2021: 856 tables, batch 65,536, Poisson pooling (mean 8), dim 16",
            Preset::Dlrm2022 => "Meta dlrm_datasets 2022: 788 tables, batch 131,072, Poisson pooling (mean 16), dim 16",
            Preset::Synthetic => "shape from --tables --rows --dim --pooling --dist",
        }
    }

    /// The preset's table list at scale 1 with its defaults, before command-line overrides.
    fn base(self, o: &PresetOptions) -> Result<ModelSpec, WorkloadError> {
        let zipf = AccessDist::Zipf { s: 1.05 };
        let one_hot = |name: &str, src: &str, rows: &[u64], dim: u32| {
            let tables = rows
                .iter()
                .enumerate()
                .map(|(i, &r)| table(format!("C{}", i + 1), r, dim, Pooling::Fixed(1), zipf.clone()))
                .collect();
            spec(name, src, 256, tables)
        };
        Ok(match self {
            Preset::CriteoKaggle => one_hot(
                self.name(),
                "Criteo Kaggle Display Advertising Challenge: the 26 categorical cardinalities used by DLRM (facebookresearch/dlrm, --arch-sparse-feature-size=16)",
                &CRITEO_KAGGLE,
                16,
            ),
            Preset::CriteoTerabyte => {
                let tables = CRITEO_TERABYTE
                    .iter()
                    .zip(TERABYTE_MULTI_HOT.iter())
                    .enumerate()
                    .map(|(i, (&r, &l))| {
                        table(format!("C{}", i + 1), r.min(TERABYTE_CAP), 128, Pooling::Fixed(l), zipf.clone())
                    })
                    .collect();
                spec(
                    self.name(),
                    "Criteo 1TB click logs as in MLPerf DLRM-v2: cardinalities capped at 40M rows, the benchmark's multi-hot sizes, dim 128",
                    256,
                    tables,
                )
            }
            Preset::Avazu => {
                let tables =
                    AVAZU.iter().map(|&(n, r)| table(n.to_string(), r, 16, Pooling::Fixed(1), zipf.clone())).collect();
                spec(
                    self.name(),
                    "Avazu click-through data (Kaggle 2014): the distinct values of its 21 categorical fields",
                    256,
                    tables,
                )
            }
            Preset::Kuairec => from_research(self, research::KUAIREC, &zipf),
            Preset::Taobao => from_research(self, research::TAOBAO, &zipf),
            Preset::Tenrec => from_research(self, research::TENREC, &zipf),
            Preset::Micro24 => {
                let tables = (0..12)
                    .map(|i| table(format!("T{}", i + 1), 500_000, 128, Pooling::Fixed(150), zipf.clone()))
                    .collect();
                spec(
                    self.name(),
                    "Configuration of 'Pushing the Performance Envelope of DNN-based Recommendation Systems Inference on GPUs' (MICRO 2024)",
                    2048,
                    tables,
                )
            }
            Preset::Dlrm2021 => from_dlrm(
                self,
                &research::DLRM_2021,
                "Meta's synthetic embedding-lookup data set of 2021 (facebookresearch/dlrm_datasets, fbgemm_t856_bs65536): published table count, batch and reuse; row counts and per-table pooling assumed, see workloads/src/presets/research.rs",
            ),
            Preset::Dlrm2022 => from_dlrm(
                self,
                &research::DLRM_2022,
                "Meta's synthetic embedding-lookup data set of 2022 (facebookresearch/dlrm_datasets, fbgemm_t788_bs131072): published table count, batch and reuse; row counts and per-table pooling assumed, see workloads/src/presets/research.rs",
            ),
            Preset::Synthetic => {
                let n = o.tables.unwrap_or(8);
                if n == 0 {
                    return Err(WorkloadError::Invalid("--tables must be at least 1".into()));
                }
                let rows = o.rows.unwrap_or(1_000_000);
                let tables = (0..n)
                    .map(|i| table(format!("T{}", i + 1), rows, 64, Pooling::Fixed(20), AccessDist::Uniform))
                    .collect();
                spec(self.name(), "synthetic: shape from the command line", 256, tables)
            }
        })
    }

    /// The spec with the options applied: scale, then any overrides.
    pub fn spec(self, o: &PresetOptions) -> Result<ModelSpec, WorkloadError> {
        if self != Preset::Synthetic && (o.tables.is_some() || o.rows.is_some()) {
            return Err(WorkloadError::Invalid(format!(
                "--tables and --rows shape the synthetic preset only; {} has its own tables (use --scale to shrink them)",
                self.name()
            )));
        }
        let scale = o.scale.unwrap_or(1.0);
        if !(scale.is_finite() && scale > 0.0 && scale <= 1.0) {
            return Err(WorkloadError::Invalid(format!("--scale {scale} must be in (0, 1]")));
        }
        let mut s = self.base(o)?;
        for t in &mut s.tables {
            t.rows = ((t.rows as f64 * scale).ceil() as u64).max(1);
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
            s.batch_size = b;
        }
        if let Some(seed) = o.seed {
            s.seed = seed;
        }
        if scale != 1.0 {
            s.name = format!("{}@{scale}", s.name);
        }
        s.validate()?;
        Ok(s)
    }
}

impl fmt::Display for Preset {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Preset {
    type Err = WorkloadError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Preset::ALL.into_iter().find(|p| p.name() == s).ok_or_else(|| {
            let names: Vec<&str> = Preset::ALL.iter().map(|p| p.name()).collect();
            WorkloadError::Parse(format!("unknown preset `{s}`; choose one of: {}", names.join(", ")))
        })
    }
}

/// Command-line adjustments to a preset. `None` keeps the preset's own value.
#[derive(Clone, Debug, Default)]
pub struct PresetOptions {
    /// Multiply every table's rows by this (0, 1].
    pub scale: Option<f64>,
    /// Synthetic only: number of tables.
    pub tables: Option<u32>,
    /// Synthetic only: rows per table.
    pub rows: Option<u64>,
    pub dim: Option<u32>,
    pub pooling: Option<Pooling>,
    pub dist: Option<AccessDist>,
    pub batch: Option<u32>,
    pub row_type: Option<RowType>,
    pub seed: Option<u64>,
    /// Let plans store tables as f16 or int8.
    pub allow_quantization: bool,
}

fn table(name: String, rows: u64, dim: u32, pooling: Pooling, dist: AccessDist) -> TableSpec {
    TableSpec { name, rows, dim, row_type: RowType::F32, pooling, mode: PoolingMode::Sum, dist, quantizable: false }
}

fn spec(name: &str, source: &str, batch: u32, tables: Vec<TableSpec>) -> ModelSpec {
    ModelSpec { name: name.to_string(), batch_size: batch, seed: 0x5eed, source: source.to_string(), tables }
}

fn from_research(p: Preset, fields: &[research::FieldShape], dist: &AccessDist) -> ModelSpec {
    let tables = fields
        .iter()
        .map(|f| table(f.name.to_string(), f.rows.max(1), 16, Pooling::Fixed(f.pooling), dist.clone()))
        .collect();
    spec(p.name(), research_source(p), 256, tables)
}

/// `n` tables with the `dlrm-2021` preset's spreads of rows and pooling (the same seeded draws,
/// continued past its 856 tables), at its batch size: the model `embtune plan scale` plans at
/// sizes no published data set has.
pub fn dlrm_shaped(n: usize) -> Result<ModelSpec, WorkloadError> {
    let shape = research::DlrmShape { tables: n, ..research::DLRM_2021 };
    let mut s =
        from_dlrm(Preset::Dlrm2021, &shape, "the dlrm-2021 preset's spreads of rows and pooling over more tables");
    s.name = format!("dlrm-shaped-{n}");
    s.validate()?;
    Ok(s)
}

fn from_dlrm(p: Preset, shape: &research::DlrmShape, source: &str) -> ModelSpec {
    let dist = AccessDist::Zipf { s: shape.zipf };
    let tables = shape
        .tables()
        .into_iter()
        .enumerate()
        .map(|(i, (rows, mean))| table(format!("T{}", i + 1), rows, 16, Pooling::Poisson { mean }, dist.clone()))
        .collect();
    spec(p.name(), source, shape.batch, tables)
}

/// Where the research presets' shapes come from (details per field in `research.rs`).
fn research_source(p: Preset) -> &'static str {
    match p {
        Preset::Kuairec => {
            "KuaiRec (Gao et al., CIKM 2022): field cardinalities from the dataset's published statistics, see workloads/src/presets/research.rs"
        }
        Preset::Taobao => {
            "Taobao display-ad click dataset (Alibaba, Tianchi): field cardinalities from its published statistics, see workloads/src/presets/research.rs"
        }
        _ => {
            "Tenrec (Yuan et al., NeurIPS 2022): field cardinalities from its published statistics, see workloads/src/presets/research.rs"
        }
    }
}

/// Criteo Kaggle's 26 categorical cardinalities (as DLRM's data loader counts them).
pub const CRITEO_KAGGLE: [u64; 26] = [
    1460, 583, 10131227, 2202608, 305, 24, 12517, 633, 3, 93145, 5683, 8351593, 3194, 27, 14992, 5461306, 10, 5652,
    2173, 4, 7046547, 18, 15, 286181, 105, 142572,
];

/// Criteo Terabyte's 26 categorical cardinalities before MLPerf's cap.
pub const CRITEO_TERABYTE: [u64; 26] = [
    227605432, 39060, 17295, 7424, 20265, 3, 7122, 1543, 63, 130229467, 3067956, 405282, 10, 2209, 11938, 155, 4, 976,
    14, 292775614, 40790948, 187188510, 590152, 12973, 108, 36,
];

/// MLPerf DLRM-v2 caps every table at 40M rows.
pub const TERABYTE_CAP: u64 = 40_000_000;

/// MLPerf DLRM-v2's multi-hot sizes, one per table.
pub const TERABYTE_MULTI_HOT: [u32; 26] =
    [3, 2, 1, 2, 6, 1, 1, 1, 1, 7, 3, 8, 1, 6, 9, 5, 1, 1, 1, 12, 100, 27, 10, 3, 1, 1];

/// Avazu's 21 categorical fields and their distinct values.
pub const AVAZU: [(&str, u64); 21] = [
    ("C1", 7),
    ("banner_pos", 7),
    ("site_id", 4737),
    ("site_domain", 7745),
    ("site_category", 26),
    ("app_id", 8552),
    ("app_domain", 559),
    ("app_category", 36),
    ("device_id", 2686408),
    ("device_ip", 6729486),
    ("device_model", 8251),
    ("device_type", 5),
    ("device_conn_type", 4),
    ("C14", 2626),
    ("C15", 8),
    ("C16", 9),
    ("C17", 435),
    ("C18", 4),
    ("C19", 68),
    ("C20", 172),
    ("C21", 60),
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_preset_builds_and_validates() {
        for p in Preset::ALL {
            let s = p.spec(&PresetOptions { scale: Some(0.01), ..Default::default() }).unwrap();
            assert!(!s.tables.is_empty(), "{p}");
            assert!(!s.source.is_empty(), "{p} names no source");
        }
    }

    #[test]
    fn presets_carry_the_published_shapes() {
        let k = Preset::CriteoKaggle.spec(&PresetOptions::default()).unwrap();
        assert_eq!(k.tables.len(), 26);
        assert_eq!(k.tables[2].rows, 10_131_227);
        let t = Preset::CriteoTerabyte.spec(&PresetOptions::default()).unwrap();
        assert_eq!(t.tables.iter().map(|t| t.rows).max(), Some(TERABYTE_CAP));
        assert_eq!(t.tables[20].pooling, Pooling::Fixed(100));
        assert_eq!(Preset::Avazu.spec(&PresetOptions::default()).unwrap().tables.len(), 21);
        let m = Preset::Micro24.spec(&PresetOptions::default()).unwrap();
        assert_eq!((m.tables.len(), m.batch_size, m.tables[0].dim), (12, 2048, 128));
        let tenrec = Preset::Tenrec.spec(&PresetOptions::default()).unwrap();
        assert!(tenrec.tables.len() <= 84);
    }

    #[test]
    fn scale_shrinks_rows_but_keeps_every_table() {
        let s = Preset::CriteoKaggle.spec(&PresetOptions { scale: Some(0.001), ..Default::default() }).unwrap();
        assert_eq!(s.tables[2].rows, 10_132);
        assert_eq!(s.tables[8].rows, 1);
        assert!(Preset::CriteoKaggle.spec(&PresetOptions { scale: Some(2.0), ..Default::default() }).is_err());
    }

    #[test]
    fn synthetic_takes_its_shape_from_options() {
        let o = PresetOptions {
            tables: Some(3),
            rows: Some(500),
            dim: Some(32),
            pooling: Some(Pooling::Fixed(7)),
            dist: Some("hotset:0.99:0.001".parse().unwrap()),
            ..Default::default()
        };
        let s = Preset::Synthetic.spec(&o).unwrap();
        assert_eq!(s.tables.len(), 3);
        assert!(s.tables.iter().all(|t| t.rows == 500 && t.dim == 32 && t.pooling == Pooling::Fixed(7)));
        let err = Preset::Avazu.spec(&PresetOptions { rows: Some(5), ..Default::default() }).unwrap_err();
        assert!(err.to_string().contains("--scale"));
    }

    #[test]
    fn dlrm_presets_carry_the_published_counts() {
        let a = Preset::Dlrm2021.spec(&PresetOptions::default()).unwrap();
        assert_eq!((a.tables.len(), a.batch_size), (856, 65_536));
        let b = Preset::Dlrm2022.spec(&PresetOptions::default()).unwrap();
        assert_eq!((b.tables.len(), b.batch_size), (788, 131_072));
        for (s, mean, max_rows) in [(&a, 8.0, 10_000_000), (&b, 16.0, 20_000_000)] {
            // The assumed spreads: rows from 100 to the ceiling with both ends reached within a
            // factor of three, and the tables' mean pooling on target with short and long bags.
            let rows: Vec<u64> = s.tables.iter().map(|t| t.rows).collect();
            let (lo, hi) = (*rows.iter().min().unwrap(), *rows.iter().max().unwrap());
            assert!((100..300).contains(&lo) && hi <= max_rows && hi > max_rows / 3, "{}: {lo}..{hi}", s.name);
            let pools: Vec<f64> = s.tables.iter().map(|t| t.pooling.mean()).collect();
            let avg = pools.iter().sum::<f64>() / pools.len() as f64;
            assert!((avg - mean).abs() < 0.1, "{}: mean pooling {avg}", s.name);
            assert!(pools.iter().any(|&p| p < 2.0) && pools.iter().any(|&p| p > 2.0 * mean), "{}", s.name);
        }
        // Scaling keeps every table and the batch, shrinking rows only.
        let small = Preset::Dlrm2021.spec(&PresetOptions { scale: Some(0.001), ..Default::default() }).unwrap();
        assert_eq!((small.tables.len(), small.batch_size), (856, 65_536));
        assert!(small.tables.iter().all(|t| t.rows <= 10_000));
    }

    #[test]
    fn a_scaled_dlrm_preset_generates_valid_batches_quickly() {
        let o = PresetOptions { scale: Some(0.001), batch: Some(256), ..Default::default() };
        let s = Preset::Dlrm2021.spec(&o).unwrap();
        let g = crate::BatchGenerator::new(&s).unwrap();
        let t0 = std::time::Instant::now();
        let rows: Vec<u64> = s.tables.iter().map(|t| t.rows).collect();
        for i in 0..4 {
            let b = g.batch(i);
            b.check_layout().unwrap();
            b.check_ids(&rows).unwrap();
            assert_eq!(b.offsets.len(), 856 * 256 + 1);
            // About 8 ids per bag on average: 856 x 256 x 8 = 1.75M.
            assert!((1_500_000..2_000_000).contains(&b.lookups()), "{}", b.lookups());
        }
        // Generous for a debug build on a shared 2-core machine: a batch takes tens of ms.
        assert!(t0.elapsed().as_secs() < 20, "{:?}", t0.elapsed());
    }

    #[test]
    fn unknown_presets_list_the_known_ones() {
        let e = "criteo".parse::<Preset>().unwrap_err().to_string();
        assert!(e.contains("criteo-kaggle") && e.contains("micro24"), "{e}");
    }
}
