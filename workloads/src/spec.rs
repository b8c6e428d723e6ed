//! The model spec: which embedding tables a model has, and how each is accessed.
//!
//! A spec is plain data, readable from TOML or JSON. Distributions and pooling factors use
//! the same short string forms as the command line (`zipf:1.05`, `uniform:1:40`), so a user
//! writes them the same way in both places.

use std::fmt;
use std::path::Path;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::WorkloadError;

/// The largest table the engine addresses: row ids travel as `u32`, which halves the bytes of
/// every id on the wire and in the gather loops. The largest public table we know of (Criteo
/// Terabyte's 292M rows) fits with room to spare.
pub const MAX_ROWS: u64 = u32::MAX as u64;

/// The widest row we accept; wider rows are not embedding tables any more.
pub const MAX_DIM: u32 = 4096;

/// How rows are stored. The engine dequantises `f16` and `int8` rows in registers while it
/// accumulates, so results are always `f32`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, Default, PartialOrd, Ord)]
#[serde(rename_all = "lowercase")]
pub enum RowType {
    #[default]
    F32,
    F16,
    /// Row-wise int8: `dim` signed bytes followed by an `f32` scale and an `f32` bias, so that
    /// `value = q * scale + bias` (the layout FBGEMM's int8 tables use).
    Int8,
}

impl RowType {
    pub const ALL: [RowType; 3] = [RowType::F32, RowType::F16, RowType::Int8];

    /// Bytes one row occupies, including the int8 scale and bias.
    pub fn row_bytes(self, dim: u32) -> usize {
        let d = dim as usize;
        match self {
            RowType::F32 => 4 * d,
            RowType::F16 => 2 * d,
            RowType::Int8 => d + 8,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            RowType::F32 => "f32",
            RowType::F16 => "f16",
            RowType::Int8 => "int8",
        }
    }
}

impl fmt::Display for RowType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for RowType {
    type Err = WorkloadError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "f32" | "fp32" => Ok(RowType::F32),
            "f16" | "fp16" => Ok(RowType::F16),
            "int8" | "i8" => Ok(RowType::Int8),
            _ => Err(WorkloadError::Parse(format!("unknown row type `{s}`: use f32, f16 or int8"))),
        }
    }
}

/// How the pooled vectors of a bag are combined.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum PoolingMode {
    #[default]
    Sum,
    Mean,
}

/// How many ids a sample looks up in one table (the bag length).
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Pooling {
    /// Every bag has exactly this many ids (`20`).
    Fixed(u32),
    /// Bag lengths uniform in `[min, max]` (`uniform:1:40`).
    Uniform { min: u32, max: u32 },
    /// Poisson-distributed bag lengths with this mean (`poisson:12`), as in Meta's traces where
    /// most bags are short and a few are long.
    Poisson { mean: f64 },
}

impl Pooling {
    /// The mean bag length, used by the cost model and by the profile.
    pub fn mean(&self) -> f64 {
        match *self {
            Pooling::Fixed(n) => n as f64,
            Pooling::Uniform { min, max } => (min as f64 + max as f64) / 2.0,
            Pooling::Poisson { mean } => mean,
        }
    }

    /// The longest bag this pooling can produce (Poisson is capped at mean + 10 sd so that a
    /// batch's size stays bounded).
    pub fn max_len(&self) -> u32 {
        match *self {
            Pooling::Fixed(n) => n,
            Pooling::Uniform { max, .. } => max,
            Pooling::Poisson { mean } => (mean + 10.0 * mean.sqrt() + 10.0).ceil() as u32,
        }
    }
}

impl fmt::Display for Pooling {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Pooling::Fixed(n) => write!(f, "{n}"),
            Pooling::Uniform { min, max } => write!(f, "uniform:{min}:{max}"),
            Pooling::Poisson { mean } => write!(f, "poisson:{mean}"),
        }
    }
}

impl FromStr for Pooling {
    type Err = WorkloadError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad =
            || WorkloadError::Parse(format!("bad pooling `{s}`: use a number (20), uniform:MIN:MAX or poisson:MEAN"));
        let parts: Vec<&str> = s.split(':').collect();
        let p = match parts.as_slice() {
            [n] => Pooling::Fixed(n.trim().parse().map_err(|_| bad())?),
            ["uniform", a, b] => {
                let (min, max) = (a.parse().map_err(|_| bad())?, b.parse().map_err(|_| bad())?);
                if min > max {
                    return Err(bad());
                }
                Pooling::Uniform { min, max }
            }
            ["poisson", m] => {
                let mean: f64 = m.parse().map_err(|_| bad())?;
                if !(mean.is_finite() && (0.0..=100_000.0).contains(&mean)) {
                    return Err(bad());
                }
                Pooling::Poisson { mean }
            }
            _ => return Err(bad()),
        };
        Ok(p)
    }
}

/// Human-readable form of [`Pooling`] (TOML, JSON): a bare integer or the string form.
#[derive(Serialize, Deserialize)]
#[serde(untagged)]
enum PoolingRepr {
    Fixed(u32),
    Text(String),
}

/// In spec files a pooling is `20` or `"uniform:1:40"`; on the wire (bincode, which cannot
/// decode "either a number or a string") it is always the string form.
impl Serialize for Pooling {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Pooling::Fixed(n) if s.is_human_readable() => s.serialize_u32(*n),
            other => s.serialize_str(&other.to_string()),
        }
    }
}

impl<'de> Deserialize<'de> for Pooling {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = if d.is_human_readable() {
            match PoolingRepr::deserialize(d)? {
                PoolingRepr::Fixed(n) => return Ok(Pooling::Fixed(n)),
                PoolingRepr::Text(t) => t,
            }
        } else {
            String::deserialize(d)?
        };
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// Which rows a look-up hits.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum AccessDist {
    /// Every row equally likely.
    Uniform,
    /// Zipf with exponent `s` over ranks, ranks mapped to rows by a seeded random permutation so
    /// that hot rows are scattered through the table, not packed at its start.
    Zipf { s: f64 },
    /// A fraction `p` of look-ups hit a fraction `h` of the rows (`hotset:0.99:0.001`, also
    /// spelled `extreme`), hot rows scattered like Zipf's.
    HotSet { p: f64, h: f64 },
    /// Ids drawn from the empirical distribution of a trace file (one id a line).
    Trace { path: String },
    /// Ids drawn from a frequency profile (`id count` a line).
    Profile { path: String },
}

impl AccessDist {
    /// The short name used in reports (`zipf:1.05`), without file paths' directories.
    pub fn label(&self) -> String {
        match self {
            AccessDist::Trace { path } | AccessDist::Profile { path } => {
                let kind = if matches!(self, AccessDist::Trace { .. }) { "trace" } else { "profile" };
                let name = Path::new(path).file_name().and_then(|n| n.to_str()).unwrap_or(path);
                format!("{kind}:{name}")
            }
            other => other.to_string(),
        }
    }

    /// True when look-ups concentrate on few rows, which is what the skew-aware data flows use.
    pub fn is_skewed(&self) -> bool {
        !matches!(self, AccessDist::Uniform)
    }
}

impl fmt::Display for AccessDist {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AccessDist::Uniform => f.write_str("uniform"),
            AccessDist::Zipf { s } => write!(f, "zipf:{s}"),
            AccessDist::HotSet { p, h } => write!(f, "hotset:{p}:{h}"),
            AccessDist::Trace { path } => write!(f, "trace:{path}"),
            AccessDist::Profile { path } => write!(f, "profile:{path}"),
        }
    }
}

impl FromStr for AccessDist {
    type Err = WorkloadError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = |why: &str| {
            WorkloadError::Parse(format!(
                "bad distribution `{s}`: {why}; use uniform, zipf:S, hotset:P:H, extreme, trace:PATH or profile:PATH"
            ))
        };
        let num = |t: &str| t.parse::<f64>().map_err(|_| bad("not a number"));
        if let Some(path) = s.strip_prefix("trace:") {
            return Ok(AccessDist::Trace { path: path.to_string() });
        }
        if let Some(path) = s.strip_prefix("profile:") {
            return Ok(AccessDist::Profile { path: path.to_string() });
        }
        let parts: Vec<&str> = s.split(':').collect();
        match parts.as_slice() {
            ["uniform"] => Ok(AccessDist::Uniform),
            ["extreme"] => Ok(AccessDist::HotSet { p: 0.99, h: 0.001 }),
            ["zipf", e] => {
                let s = num(e)?;
                if !(s.is_finite() && s > 0.0 && s <= 10.0) {
                    return Err(bad("the Zipf exponent must be in (0, 10]"));
                }
                Ok(AccessDist::Zipf { s })
            }
            ["hotset", p, h] => {
                let (p, h) = (num(p)?, num(h)?);
                if !((0.0..=1.0).contains(&p) && h > 0.0 && h <= 1.0) {
                    return Err(bad("P must be in [0, 1] and H in (0, 1]"));
                }
                Ok(AccessDist::HotSet { p, h })
            }
            _ => Err(bad("unknown form")),
        }
    }
}

impl TryFrom<String> for AccessDist {
    type Error = WorkloadError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl From<AccessDist> for String {
    fn from(d: AccessDist) -> String {
        d.to_string()
    }
}

/// One embedding table.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TableSpec {
    pub name: String,
    pub rows: u64,
    pub dim: u32,
    #[serde(default)]
    pub row_type: RowType,
    pub pooling: Pooling,
    #[serde(default)]
    pub mode: PoolingMode,
    pub dist: AccessDist,
    /// Whether a plan may store this table in a narrower row type than `row_type` (f16 or
    /// int8) to save memory and bandwidth; off unless the user allows the precision loss.
    #[serde(default)]
    pub quantizable: bool,
}

impl TableSpec {
    /// Bytes of one row in the spec's row type.
    pub fn row_bytes(&self) -> usize {
        self.row_type.row_bytes(self.dim)
    }

    /// Bytes of the whole table in the spec's row type.
    pub fn bytes(&self) -> u64 {
        self.rows * self.row_bytes() as u64
    }
}

/// A model: its embedding tables, the batch size it is served at and the seed that makes its
/// tables and queries reproducible.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelSpec {
    pub name: String,
    #[serde(default = "default_batch")]
    pub batch_size: u32,
    #[serde(default)]
    pub seed: u64,
    /// Where the table shapes come from (a paper, a dataset's statistics), for reports.
    /// (Never skipped when empty: the wire format is positional.)
    #[serde(default)]
    pub source: String,
    pub tables: Vec<TableSpec>,
}

fn default_batch() -> u32 {
    256
}

/// The largest batch a spec may ask for; larger batches are split by the caller.
pub const MAX_BATCH: u32 = 1 << 20;

impl ModelSpec {
    /// Reads a spec from a `.toml` or `.json` file and validates it. A file of TorchRec
    /// `EmbeddingBagConfig`s is read too ([`crate::torchrec`]); what its import had to say is
    /// dropped here, [`ModelSpec::load_with_notes`] keeps it.
    pub fn load(path: &Path) -> Result<ModelSpec, WorkloadError> {
        Ok(ModelSpec::load_with_notes(path)?.0)
    }

    /// [`ModelSpec::load`], with the notes of a TorchRec import (empty for an embtune spec).
    pub fn load_with_notes(path: &Path) -> Result<(ModelSpec, Vec<crate::torchrec::ImportNote>), WorkloadError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| WorkloadError::Io(format!("cannot read model spec {}: {e}", path.display())))?;
        // TorchRec configs are told apart by their shape (a bare list, or `num_embeddings`);
        // text that does not parse at all falls through to the typed parse and its message.
        if let Ok(v) = crate::torchrec::parse_text(path, &text)
            && crate::torchrec::looks_like_torchrec(&v)
        {
            let r = crate::torchrec::import_file(path, false)?;
            return Ok((r.spec, r.notes));
        }
        let spec = Self::from_text(&text, path.extension().is_some_and(|e| e == "json"), &path.display().to_string())?;
        Ok((spec, Vec::new()))
    }

    /// Reads a spec from TOML (or JSON) text and validates it; `origin` names it in errors.
    pub fn from_text(text: &str, json: bool, origin: &str) -> Result<ModelSpec, WorkloadError> {
        let spec: ModelSpec = if json {
            serde_json::from_str(text).map_err(|e| WorkloadError::Parse(format!("{origin}: {e}")))?
        } else {
            toml::from_str(text).map_err(|e| WorkloadError::Parse(format!("{origin}: {e}")))?
        };
        spec.validate()?;
        Ok(spec)
    }

    /// Checks every limit the engine relies on, so that bad specs fail here with a message
    /// rather than deep inside a deployment.
    pub fn validate(&self) -> Result<(), WorkloadError> {
        let bad = |m: String| Err(WorkloadError::Invalid(m));
        if self.tables.is_empty() {
            return bad(format!("model `{}` has no tables", self.name));
        }
        if self.tables.len() > u16::MAX as usize {
            return bad(format!("model `{}` has {} tables; at most 65535 are supported", self.name, self.tables.len()));
        }
        if self.batch_size == 0 || self.batch_size > MAX_BATCH {
            return bad(format!("batch size {} is outside 1..={MAX_BATCH}", self.batch_size));
        }
        let mut names = std::collections::HashSet::new();
        for t in &self.tables {
            if !names.insert(t.name.as_str()) {
                return bad(format!("table name `{}` appears twice", t.name));
            }
            if t.rows == 0 || t.rows > MAX_ROWS {
                return bad(format!("table `{}` has {} rows; a table needs 1..={MAX_ROWS} rows", t.name, t.rows));
            }
            if t.dim == 0 || t.dim > MAX_DIM {
                return bad(format!("table `{}` has dim {}; use 1..={MAX_DIM}", t.name, t.dim));
            }
            // A bag may be empty, but a table whose every bag is empty is no table: it looks
            // nothing up, and a benchmark sized by look-ups would rotate through millions of
            // empty batches (it grew past 6 GB before this check).
            if t.pooling.mean() <= 0.0 || t.pooling.max_len() == 0 {
                return bad(format!(
                    "table `{}`: pooling {} makes every bag empty; give it at least one look-up per sample on average (e.g. pooling = 1 or uniform:0:2)",
                    t.name, t.pooling
                ));
            }
            if t.pooling.max_len() > 1 << 16 {
                return bad(format!("table `{}`: pooling {} allows bags over 65536 ids", t.name, t.pooling));
            }
        }
        Ok(())
    }

    /// Width of one pooled output sample: the tables' dims side by side.
    pub fn output_width(&self) -> usize {
        self.tables.iter().map(|t| t.dim as usize).sum()
    }

    /// Bytes of all tables in their spec row types.
    pub fn total_bytes(&self) -> u64 {
        self.tables.iter().map(TableSpec::bytes).sum()
    }

    /// Mean look-ups per sample, summed over tables.
    pub fn mean_lookups_per_sample(&self) -> f64 {
        self.tables.iter().map(|t| t.pooling.mean()).sum()
    }

    /// Index of a table by name.
    pub fn table_index(&self, name: &str) -> Option<usize> {
        self.tables.iter().position(|t| t.name == name)
    }

    /// The same shape with every table cut to at most `rows` rows, read uniformly: the same
    /// tables, dims, row types, pooling and batch size, so the same ids per sample and the same
    /// pooled replies, but rows that stay in cache, so the engine is nearly free. What a cluster
    /// does with it is the ceiling of any plan for this shape: the cost of everything around the
    /// engine (routing, transport, reduction).
    pub fn free_engine_shape(&self, rows: u64) -> ModelSpec {
        let mut s = self.clone();
        s.name = format!("{} (tables cut to {rows} rows)", self.name);
        for t in &mut s.tables {
            t.rows = t.rows.min(rows.max(1));
            t.dist = AccessDist::Uniform;
        }
        s
    }

    /// A stable 64-bit digest of the spec, used to key tuning jobs and stored plans: two specs
    /// with the same digest have the same tables and the same queries.
    /// Whether `other` has this spec's tables with the same contents (seed, names, rows, dims,
    /// row types, pooling modes), so that a plan made for one serves the other: the two may
    /// differ in batch size, pooling and access distributions, which is how live traffic drifts
    /// from what a plan was made for. The error names the first difference.
    pub fn same_tables(&self, other: &ModelSpec) -> Result<(), String> {
        if self.seed != other.seed {
            return Err(format!("seed {} against {}", self.seed, other.seed));
        }
        if self.tables.len() != other.tables.len() {
            return Err(format!("{} tables against {}", self.tables.len(), other.tables.len()));
        }
        for (a, b) in self.tables.iter().zip(&other.tables) {
            if (&a.name, a.rows, a.dim, a.row_type, a.mode, a.quantizable)
                != (&b.name, b.rows, b.dim, b.row_type, b.mode, b.quantizable)
            {
                return Err(format!(
                    "table `{}` ({} rows x {}) against `{}` ({} rows x {})",
                    a.name, a.rows, a.dim, b.name, b.rows, b.dim
                ));
            }
        }
        Ok(())
    }

    pub fn digest(&self) -> u64 {
        let canonical = serde_json::to_string(self).expect("a spec always serialises");
        fnv1a(canonical.as_bytes())
    }
}

/// FNV-1a, a tiny stable hash: the digest must not change between releases or machines, which
/// rules out `std`'s randomly keyed hasher.
pub fn fnv1a(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= *b as u64;
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// The spec parser's fuzz target (`fuzz/fuzz_targets/spec.rs`, and replayed over the
/// checked-in corpus and random bytes by `workloads/tests/fuzz_inputs.rs`): any text, read as
/// TOML, as JSON and as the command line's short forms, gives a valid spec or a typed error,
/// never a panic; a valid spec round-trips through TOML and JSON, and a small one generates a
/// batch whose layout checks and whose ids are within their tables.
#[doc(hidden)]
pub fn fuzz_spec(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else { return };
    for json in [false, true] {
        let Ok(spec) = ModelSpec::from_text(text, json, "fuzz-input") else { continue };
        let toml_text = toml::to_string(&spec).expect("a valid spec writes as TOML");
        assert_eq!(ModelSpec::from_text(&toml_text, false, "again").expect("and reads back"), spec);
        let json_text = serde_json::to_string(&spec).expect("a valid spec writes as JSON");
        assert_eq!(ModelSpec::from_text(&json_text, true, "again").expect("and reads back"), spec);
        let _ = (spec.digest(), spec.output_width(), spec.total_bytes(), spec.mean_lookups_per_sample());
        // A batch of a small spec (no files: a fuzzer must not read the disk).
        let files = spec.tables.iter().any(|t| matches!(t.dist, AccessDist::Trace { .. } | AccessDist::Profile { .. }));
        let ids: u64 = spec.tables.iter().map(|t| t.pooling.max_len() as u64).sum::<u64>() * spec.batch_size as u64;
        if !files && ids <= 1 << 16 {
            let g = crate::BatchGenerator::new(&spec).expect("a valid spec generates");
            let b = g.batch(0);
            b.check_layout().expect("a generated batch is well formed");
            for (t, table) in spec.tables.iter().enumerate() {
                for i in 0..spec.batch_size as usize {
                    assert!(b.bag(t, i).iter().all(|&id| (id as u64) < table.rows));
                }
            }
        }
    }
    for part in text.split(['\n', ',', '=', '"']).take(64) {
        let _ = part.trim().parse::<Pooling>();
        let _ = part.trim().parse::<AccessDist>();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_free_engine_shape_keeps_what_crosses_the_wire() {
        let mut spec: ModelSpec = toml::from_str(
            "name = \"m\"\nbatch_size = 64\n[[tables]]\nname = \"a\"\nrows = 5000000\ndim = 32\npooling = 7\ndist = \"zipf:1.05\"\n\n[[tables]]\nname = \"b\"\nrows = 10\ndim = 8\npooling = 1\ndist = \"uniform\"\n",
        )
        .unwrap();
        spec.tables[0].row_type = RowType::F16;
        let free = spec.free_engine_shape(1000);
        free.validate().unwrap();
        assert_eq!(free.batch_size, 64);
        assert_eq!(free.output_width(), spec.output_width(), "the same pooled replies");
        assert_eq!(free.mean_lookups_per_sample(), spec.mean_lookups_per_sample(), "the same ids per sample");
        assert_eq!([free.tables[0].rows, free.tables[1].rows], [1000, 10]);
        assert_eq!(free.tables[0].row_type, RowType::F16);
        assert!(free.tables.iter().all(|t| t.dist == AccessDist::Uniform));
        assert_ne!(free.digest(), spec.digest());
    }

    #[test]
    fn distributions_round_trip_through_their_string_form() {
        for s in ["uniform", "zipf:1.05", "hotset:0.99:0.001", "trace:/a/b.txt", "profile:p.txt"] {
            let d: AccessDist = s.parse().unwrap();
            assert_eq!(d.to_string(), s);
        }
        assert_eq!("extreme".parse::<AccessDist>().unwrap(), AccessDist::HotSet { p: 0.99, h: 0.001 });
    }

    #[test]
    fn bad_distributions_say_what_is_accepted() {
        for s in ["zipf", "zipf:-1", "hotset:1.5:0.1", "hotset:0.5:0", "normal", "zipf:x"] {
            let e = s.parse::<AccessDist>().unwrap_err().to_string();
            assert!(e.contains("zipf:S"), "{s}: {e}");
        }
    }

    #[test]
    fn a_table_whose_every_bag_is_empty_is_refused() {
        let spec = |pooling: &str| {
            toml::from_str::<ModelSpec>(&format!(
                "name = \"m\"\n[[tables]]\nname = \"a\"\nrows = 10\ndim = 4\npooling = {pooling}\ndist = \"uniform\"\n"
            ))
            .unwrap()
        };
        for empty in ["0", "\"uniform:0:0\"", "\"poisson:0\""] {
            let err = spec(empty).validate().unwrap_err().to_string();
            assert!(err.contains("every bag empty"), "{empty}: {err}");
        }
        // Some empty bags are fine.
        spec("\"uniform:0:2\"").validate().unwrap();
        spec("\"poisson:0.5\"").validate().unwrap();
    }

    #[test]
    fn pooling_accepts_numbers_and_forms() {
        assert_eq!("20".parse::<Pooling>().unwrap(), Pooling::Fixed(20));
        assert_eq!("uniform:1:40".parse::<Pooling>().unwrap(), Pooling::Uniform { min: 1, max: 40 });
        assert!("uniform:5:1".parse::<Pooling>().is_err());
        assert!("poisson:-3".parse::<Pooling>().is_err());
    }

    #[test]
    fn spec_parses_from_toml_and_rejects_bad_tables() {
        let text = r#"
            name = "demo"
            batch_size = 128
            seed = 7
            [[tables]]
            name = "user"
            rows = 1000
            dim = 16
            row_type = "int8"
            pooling = "uniform:1:8"
            dist = "zipf:1.05"
            [[tables]]
            name = "item"
            rows = 50
            dim = 16
            pooling = 1
            mode = "mean"
            dist = "uniform"
        "#;
        let spec: ModelSpec = toml::from_str(text).unwrap();
        spec.validate().unwrap();
        assert_eq!(spec.tables[0].row_type, RowType::Int8);
        assert_eq!(spec.tables[1].mode, PoolingMode::Mean);
        assert_eq!(spec.output_width(), 32);

        let mut dup = spec.clone();
        dup.tables[1].name = "user".into();
        assert!(dup.validate().unwrap_err().to_string().contains("twice"));
        let mut big = spec.clone();
        big.tables[0].rows = MAX_ROWS + 1;
        assert!(big.validate().is_err());
        let mut zero = spec;
        zero.tables[0].dim = 0;
        assert!(zero.validate().is_err());
    }

    #[test]
    fn specs_survive_the_wire_codec() {
        let spec = crate::Preset::CriteoTerabyte
            .spec(&crate::PresetOptions {
                scale: Some(0.001),
                pooling: Some("poisson:3".parse().unwrap()),
                ..Default::default()
            })
            .unwrap();
        let mut mixed = spec.clone();
        mixed.tables[0].pooling = Pooling::Fixed(4);
        mixed.tables[1].dist = "trace:/x/y.txt".parse().unwrap();
        let cfg = bincode::config::standard();
        let bytes = bincode::serde::encode_to_vec(&mixed, cfg).unwrap();
        let (back, _): (ModelSpec, _) = bincode::serde::decode_from_slice(&bytes, cfg).unwrap();
        assert_eq!(back, mixed);
        // And the human form keeps bare numbers.
        let text = toml::to_string(&mixed).unwrap();
        assert!(text.contains("pooling = 4"), "{text}");
        assert_eq!(toml::from_str::<ModelSpec>(&text).unwrap(), mixed);
    }

    #[test]
    fn digest_is_stable_and_sensitive() {
        let spec = ModelSpec {
            name: "m".into(),
            batch_size: 4,
            seed: 1,
            source: String::new(),
            tables: vec![TableSpec {
                name: "t".into(),
                rows: 10,
                dim: 4,
                row_type: RowType::F32,
                pooling: Pooling::Fixed(2),
                mode: PoolingMode::Sum,
                dist: AccessDist::Uniform,
                quantizable: false,
            }],
        };
        let d = spec.digest();
        assert_eq!(d, spec.clone().digest());
        let mut other = spec;
        other.seed = 2;
        assert_ne!(d, other.digest());
    }
}
