//! TorchRec's table configs as embtune model specs, both ways.
//!
//! People who tune DLRM embeddings describe their tables as TorchRec `EmbeddingBagConfig`s
//! (`name`, `num_embeddings`, `embedding_dim`, `feature_names`, `pooling`, `data_type`). A
//! config file here is a list of those, as JSON (a bare list, or an object with `tables`) or
//! TOML (`[[tables]]`), with optional fields TorchRec's configs do not carry but a benchmark
//! needs: per-table pooling factors (what TorchRec's `ParameterConstraints.pooling_factors`
//! holds: mean ids per bag, one per feature) and access statistics (an embtune distribution
//! such as `zipf:1.05`, or a trace or frequency profile of the table's ids).
//!
//! Nothing is dropped quietly: every field is either used, known to TorchRec but without effect
//! on where look-ups go (listed as ignored), or unknown (reported, and refused under `strict`).
//! Where embtune models a table differently from TorchRec (several features on one table, a
//! data type embtune stores wider), the import says so in a note.
//!
//! [`to_torchrec`] writes a spec in the same format, so `import(to_torchrec(spec)) == spec`.

use std::collections::BTreeSet;
use std::path::Path;

use serde::Serialize;
use serde_json::{Map, Value};

use crate::WorkloadError;
use crate::spec::{AccessDist, ModelSpec, Pooling, PoolingMode, RowType, TableSpec};

/// `EmbeddingBagConfig` fields embtune reads.
const USED: [&str; 6] = ["name", "num_embeddings", "embedding_dim", "feature_names", "pooling", "data_type"];

/// `EmbeddingBagConfig` fields (TorchRec 1.9) that change training or initialisation, not which
/// rows a look-up reads or where they live.
const TORCHREC_IGNORED: [&str; 11] = [
    "weight_init_max",
    "weight_init_min",
    "num_embeddings_post_pruning",
    "init_fn",
    "need_pos",
    "input_dim",
    "total_num_buckets",
    "use_virtual_table",
    "virtual_table_eviction_policy",
    "enable_embedding_update",
    "stash_weights",
];

/// Per-table fields embtune adds to the configs.
const EXTRAS: [&str; 5] = ["pooling_factor", "pooling_factors", "access", "dist", "quantizable"];

/// Top-level fields of the object form.
const TOP: [&str; 5] = ["name", "batch_size", "seed", "source", "tables"];

/// What kind of remark an import makes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum NoteKind {
    /// A field neither TorchRec's config nor embtune knows: a typo, or a newer TorchRec.
    Unknown,
    /// The table is modelled differently from TorchRec (read the message).
    Approximated,
    /// A value the file did not give, and what was assumed.
    Defaulted,
    /// TorchRec fields that do not affect look-ups.
    Ignored,
}

/// One remark of an import, about one table or the whole file.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ImportNote {
    pub kind: NoteKind,
    /// The table it is about; `None` for the file.
    pub table: Option<String>,
    pub message: String,
}

impl std::fmt::Display for ImportNote {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = match self.kind {
            NoteKind::Unknown => "unknown field",
            NoteKind::Approximated => "approximated",
            NoteKind::Defaulted => "assumed",
            NoteKind::Ignored => "ignored",
        };
        match &self.table {
            Some(t) => write!(f, "{kind}: table `{t}`: {}", self.message),
            None => write!(f, "{kind}: {}", self.message),
        }
    }
}

/// A spec read from TorchRec configs, with what the import has to say about them.
#[derive(Clone, Debug)]
pub struct Imported {
    pub spec: ModelSpec,
    pub notes: Vec<ImportNote>,
}

impl Imported {
    /// Notes of a kind.
    pub fn notes_of(&self, kind: NoteKind) -> impl Iterator<Item = &ImportNote> {
        self.notes.iter().filter(move |n| n.kind == kind)
    }
}

/// Whether parsed file contents look like TorchRec configs rather than an embtune spec: a bare
/// list, or tables that have TorchRec's `num_embeddings`.
pub fn looks_like_torchrec(v: &Value) -> bool {
    match v {
        Value::Array(_) => true,
        Value::Object(o) => o
            .get("tables")
            .and_then(Value::as_array)
            .is_some_and(|ts| ts.iter().any(|t| t.get("num_embeddings").is_some())),
        _ => false,
    }
}

/// Parses a file's text (`.toml` by TOML, anything else by JSON) into a generic value.
pub fn parse_text(path: &Path, text: &str) -> Result<Value, WorkloadError> {
    let at = |e: String| WorkloadError::Parse(format!("{}: {e}", path.display()));
    if path.extension().is_some_and(|e| e == "toml") {
        let t: toml::Value = toml::from_str(text).map_err(|e| at(e.to_string()))?;
        serde_json::to_value(t).map_err(|e| at(e.to_string()))
    } else {
        serde_json::from_str(text).map_err(|e| at(e.to_string()))
    }
}

/// Reads TorchRec configs from a file. `strict` refuses unknown fields instead of reporting them.
pub fn import_file(path: &Path, strict: bool) -> Result<Imported, WorkloadError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| WorkloadError::Io(format!("cannot read TorchRec configs {}: {e}", path.display())))?;
    let v = parse_text(path, &text)?;
    let stem = path.file_stem().and_then(|s| s.to_str()).unwrap_or("torchrec-model");
    import_value(&v, stem, strict).map_err(|e| match e {
        WorkloadError::Parse(m) => WorkloadError::Parse(format!("{}: {m}", path.display())),
        WorkloadError::Invalid(m) => WorkloadError::Invalid(format!("{}: {m}", path.display())),
        other => other,
    })
}

/// Turns parsed TorchRec configs into a validated spec. `default_name` names a model whose file
/// does not (the bare-list form).
pub fn import_value(v: &Value, default_name: &str, strict: bool) -> Result<Imported, WorkloadError> {
    let mut notes = Vec::new();
    let empty = Map::new();
    let (top, tables) = match v {
        Value::Array(ts) => (&empty, ts),
        Value::Object(o) => {
            let ts = o.get("tables").and_then(Value::as_array).ok_or_else(|| {
                WorkloadError::Parse(
                    "expected a list of EmbeddingBagConfigs, or an object with `tables = [...]`".into(),
                )
            })?;
            (o, ts)
        }
        _ => return Err(WorkloadError::Parse("expected a list of EmbeddingBagConfigs".into())),
    };
    for k in top.keys().filter(|k| !TOP.contains(&k.as_str())) {
        notes.push(ImportNote {
            kind: NoteKind::Unknown,
            table: None,
            message: format!("top-level `{k}` is not one of {}", TOP.join(", ")),
        });
    }
    let name = match top.get("name") {
        None => default_name.to_string(),
        Some(n) => n.as_str().ok_or_else(|| WorkloadError::Parse("`name` must be a string".into()))?.to_string(),
    };
    let batch_size = match top.get("batch_size") {
        None => 256,
        Some(b) => int(b, "batch_size", None)?
            .try_into()
            .map_err(|_| WorkloadError::Invalid(format!("batch_size {b} is outside 1..={}", crate::spec::MAX_BATCH)))?,
    };
    let seed = top.get("seed").map(|s| int(s, "seed", None)).transpose()?.unwrap_or(0);
    let source = match top.get("source") {
        None => "TorchRec EmbeddingBagConfigs".to_string(),
        Some(s) => s.as_str().ok_or_else(|| WorkloadError::Parse("`source` must be a string".into()))?.to_string(),
    };
    let mut ignored: BTreeSet<&str> = BTreeSet::new();
    let mut no_pooling = Vec::new();
    let mut no_access = Vec::new();
    let mut specs = Vec::with_capacity(tables.len());
    for (i, t) in tables.iter().enumerate() {
        let o = t.as_object().ok_or_else(|| WorkloadError::Parse(format!("table {i} is not an object")))?;
        let tname = o
            .get("name")
            .and_then(Value::as_str)
            .ok_or_else(|| WorkloadError::Parse(format!("table {i} has no `name`")))?
            .to_string();
        for k in o.keys() {
            if let Some(known) = TORCHREC_IGNORED.iter().find(|f| **f == k) {
                ignored.insert(known);
            } else if !USED.contains(&k.as_str()) && !EXTRAS.contains(&k.as_str()) {
                notes.push(ImportNote {
                    kind: NoteKind::Unknown,
                    table: Some(tname.clone()),
                    message: format!(
                        "`{k}` is neither an EmbeddingBagConfig field embtune knows nor one of its extras ({})",
                        EXTRAS.join(", ")
                    ),
                });
            }
        }
        let rows = int(o.get("num_embeddings").unwrap_or(&Value::Null), "num_embeddings", Some(&tname))?;
        let dim = int(o.get("embedding_dim").unwrap_or(&Value::Null), "embedding_dim", Some(&tname))?;
        let dim = u32::try_from(dim)
            .map_err(|_| WorkloadError::Invalid(format!("table `{tname}`: dim {dim} is too large")))?;
        let features: Vec<String> = match o.get("feature_names") {
            None => Vec::new(),
            Some(Value::Array(fs)) => fs
                .iter()
                .map(|f| f.as_str().map(str::to_string))
                .collect::<Option<_>>()
                .ok_or_else(|| WorkloadError::Parse(format!("table `{tname}`: feature_names must be strings")))?,
            Some(_) => return Err(WorkloadError::Parse(format!("table `{tname}`: feature_names must be a list"))),
        };
        let mode = match o.get("pooling").map(|p| enum_name(p, "pooling", &tname)).transpose()?.as_deref() {
            None | Some("SUM") => PoolingMode::Sum,
            Some("MEAN") => PoolingMode::Mean,
            Some("NONE") => {
                return Err(WorkloadError::Invalid(format!(
                    "table `{tname}` has pooling NONE (a sequence embedding, one row per id): embtune models pooled bags only; \
                     leave it out or set pooling to SUM or MEAN"
                )));
            }
            Some(other) => {
                return Err(WorkloadError::Parse(format!(
                    "table `{tname}`: pooling `{other}`; TorchRec's PoolingType is SUM, MEAN or NONE"
                )));
            }
        };
        let row_type = match o.get("data_type").map(|d| enum_name(d, "data_type", &tname)).transpose()?.as_deref() {
            None | Some("FP32") => RowType::F32,
            Some("FP16") => RowType::F16,
            Some("BF16") => {
                notes.push(approx(
                    &tname,
                    "BF16 rows are stored as FP16 (the same 2 bytes a value; embtune has no bf16)",
                ));
                RowType::F16
            }
            Some("INT8") | Some("UINT8") => RowType::Int8,
            Some(n @ ("INT4" | "INT2")) => {
                notes.push(approx(
                    &tname,
                    &format!(
                        "{n} rows are stored as row-wise int8 (embtune's narrowest): more bytes a row than TorchRec's"
                    ),
                ));
                RowType::Int8
            }
            Some(other) => {
                return Err(WorkloadError::Parse(format!(
                    "table `{tname}`: data_type `{other}` is not an embedding row type; use FP32, FP16, BF16, INT8, UINT8, INT4 or INT2"
                )));
            }
        };
        let pooling = match (o.get("pooling_factor"), o.get("pooling_factors")) {
            (Some(_), Some(_)) => {
                return Err(WorkloadError::Parse(format!(
                    "table `{tname}` gives both pooling_factor and pooling_factors: keep one"
                )));
            }
            (Some(p), None) => pooling_of(p, &tname)?,
            (None, Some(Value::Array(ps))) => {
                if !features.is_empty() && ps.len() != features.len() {
                    return Err(WorkloadError::Invalid(format!(
                        "table `{tname}` has {} features but {} pooling_factors: give one per feature",
                        features.len(),
                        ps.len()
                    )));
                }
                let mut sum = 0.0;
                for p in ps {
                    sum += p.as_f64().filter(|x| x.is_finite() && *x >= 0.0).ok_or_else(|| {
                        WorkloadError::Parse(format!("table `{tname}`: pooling_factors must be non-negative numbers"))
                    })?;
                }
                pooling_from_mean(sum, &tname)?
            }
            (None, Some(_)) => {
                return Err(WorkloadError::Parse(format!(
                    "table `{tname}`: pooling_factors must be a list (one mean per feature)"
                )));
            }
            (None, None) => {
                no_pooling.push(tname.clone());
                Pooling::Fixed(features.len().max(1) as u32)
            }
        };
        if features.len() > 1 {
            notes.push(approx(
                &tname,
                &format!(
                    "serves {} features ({}): embtune models one bag a sample of their summed pooling ({pooling}); \
                     TorchRec pools each feature apart (the same rows read, {} outputs)",
                    features.len(),
                    features.join(", "),
                    features.len()
                ),
            ));
        }
        let dist = match (o.get("access"), o.get("dist")) {
            (Some(_), Some(_)) => {
                return Err(WorkloadError::Parse(format!("table `{tname}` gives both access and dist: keep one")));
            }
            (Some(d), None) | (None, Some(d)) => d
                .as_str()
                .ok_or_else(|| {
                    WorkloadError::Parse(format!("table `{tname}`: access must be a string such as zipf:1.05"))
                })?
                .parse::<AccessDist>()
                .map_err(|e| WorkloadError::Parse(format!("table `{tname}`: {e}")))?,
            (None, None) => {
                no_access.push(tname.clone());
                AccessDist::Uniform
            }
        };
        let quantizable = match o.get("quantizable") {
            None => false,
            Some(q) => q
                .as_bool()
                .ok_or_else(|| WorkloadError::Parse(format!("table `{tname}`: quantizable must be true or false")))?,
        };
        specs.push(TableSpec { name: tname, rows, dim, row_type, pooling, mode, dist, quantizable });
    }
    if !no_pooling.is_empty() {
        notes.push(ImportNote {
            kind: NoteKind::Defaulted,
            table: None,
            message: format!(
                "no pooling factor for {}: one id per feature a sample (TorchRec's planner assumes the same); \
                 add `pooling_factor = MEAN` per table",
                list(&no_pooling)
            ),
        });
    }
    if !no_access.is_empty() {
        notes.push(ImportNote {
            kind: NoteKind::Defaulted,
            table: None,
            message: format!(
                "no access statistics for {}: uniform access assumed; add `access = \"zipf:S\"` (or trace:FILE, profile:FILE)",
                list(&no_access)
            ),
        });
    }
    if !ignored.is_empty() {
        notes.push(ImportNote {
            kind: NoteKind::Ignored,
            table: None,
            message: format!(
                "{}: TorchRec training and initialisation settings, without effect on look-ups",
                ignored.iter().copied().collect::<Vec<_>>().join(", ")
            ),
        });
    }
    if strict {
        let unknown: Vec<String> =
            notes.iter().filter(|n| n.kind == NoteKind::Unknown).map(|n| n.to_string()).collect();
        if !unknown.is_empty() {
            return Err(WorkloadError::Invalid(format!(
                "{} unknown field(s), refused under --strict: {}",
                unknown.len(),
                unknown.join("; ")
            )));
        }
    }
    let spec = ModelSpec { name, batch_size, seed, source, tables: specs };
    spec.validate()?;
    Ok(Imported { spec, notes })
}

/// The spec as TorchRec configs with embtune's extras, the object form: what [`import_value`]
/// reads back to the same spec.
pub fn to_torchrec(spec: &ModelSpec) -> Value {
    let tables: Vec<Value> = spec
        .tables
        .iter()
        .map(|t| {
            let pooling_factor = match t.pooling {
                Pooling::Fixed(n) => Value::from(n),
                other => Value::from(other.to_string()),
            };
            serde_json::json!({
                "name": t.name,
                "num_embeddings": t.rows,
                "embedding_dim": t.dim,
                "feature_names": [t.name],
                "pooling": match t.mode { PoolingMode::Sum => "SUM", PoolingMode::Mean => "MEAN" },
                "data_type": match t.row_type { RowType::F32 => "FP32", RowType::F16 => "FP16", RowType::Int8 => "INT8" },
                "pooling_factor": pooling_factor,
                "access": t.dist.to_string(),
                "quantizable": t.quantizable,
            })
        })
        .collect();
    serde_json::json!({
        "name": spec.name,
        "batch_size": spec.batch_size,
        "seed": spec.seed,
        "source": spec.source,
        "tables": tables,
    })
}

fn approx(table: &str, message: &str) -> ImportNote {
    ImportNote { kind: NoteKind::Approximated, table: Some(table.to_string()), message: message.to_string() }
}

fn list(names: &[String]) -> String {
    if names.len() > 4 {
        format!("{} tables ({}, ... {})", names.len(), names[..3].join(", "), names[names.len() - 1])
    } else {
        format!("table(s) {}", names.join(", "))
    }
}

/// A non-negative integer field.
fn int(v: &Value, field: &str, table: Option<&str>) -> Result<u64, WorkloadError> {
    v.as_u64().ok_or_else(|| {
        let at = table.map_or(String::new(), |t| format!("table `{t}`: "));
        if v.is_null() {
            WorkloadError::Parse(format!("{at}`{field}` is missing"))
        } else {
            WorkloadError::Parse(format!("{at}`{field}` must be a non-negative integer, not {v}"))
        }
    })
}

/// An enum as TorchRec prints it: `SUM`, `PoolingType.SUM` or `sum` all read as `SUM`.
fn enum_name(v: &Value, field: &str, table: &str) -> Result<String, WorkloadError> {
    let s = v.as_str().ok_or_else(|| WorkloadError::Parse(format!("table `{table}`: {field} must be a string")))?;
    Ok(s.rsplit('.').next().unwrap_or(s).to_ascii_uppercase())
}

/// `pooling_factor`: a mean (a number) or embtune's form (`uniform:1:40`, `poisson:12`).
fn pooling_of(v: &Value, table: &str) -> Result<Pooling, WorkloadError> {
    match v {
        Value::String(s) => s.parse().map_err(|e| WorkloadError::Parse(format!("table `{table}`: {e}"))),
        Value::Number(n) => pooling_from_mean(n.as_f64().unwrap_or(f64::NAN), table),
        _ => Err(WorkloadError::Parse(format!(
            "table `{table}`: pooling_factor must be a number (mean ids a bag) or a form such as poisson:12"
        ))),
    }
}

/// A whole mean is a fixed bag length (what TorchRec's planner assumes); a fractional one the
/// Poisson bag lengths of that mean.
fn pooling_from_mean(mean: f64, table: &str) -> Result<Pooling, WorkloadError> {
    if !(mean.is_finite() && mean > 0.0 && mean <= 65_536.0) {
        return Err(WorkloadError::Invalid(format!(
            "table `{table}`: pooling factor {mean} must be a mean in (0, 65536] ids a bag"
        )));
    }
    if mean.fract() == 0.0 { Ok(Pooling::Fixed(mean as u32)) } else { Ok(Pooling::Poisson { mean }) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Preset, PresetOptions};

    fn import(text: &str) -> Result<Imported, WorkloadError> {
        import_value(&serde_json::from_str(text).unwrap(), "m", false)
    }

    #[test]
    fn every_preset_round_trips_through_torchrec_configs() {
        for p in Preset::ALL {
            let spec = p.spec(&PresetOptions { scale: Some(0.01), ..Default::default() }).unwrap();
            let back = import_value(&to_torchrec(&spec), "x", true).unwrap();
            assert_eq!(back.spec, spec, "{p}");
            assert_eq!(back.spec.digest(), spec.digest());
            assert!(back.notes.is_empty(), "{p}: {:?}", back.notes);
        }
        let mut odd = Preset::Synthetic.spec(&PresetOptions::default()).unwrap();
        odd.tables[0].pooling = Pooling::Uniform { min: 2, max: 9 };
        odd.tables[1].pooling = Pooling::Poisson { mean: 3.5 };
        odd.tables[1].mode = PoolingMode::Mean;
        odd.tables[2].row_type = RowType::Int8;
        odd.tables[2].quantizable = true;
        assert_eq!(import_value(&to_torchrec(&odd), "x", true).unwrap().spec, odd);
    }

    #[test]
    fn a_bare_list_of_configs_imports_with_defaults_said() {
        let r = import(
            r#"[{"name": "user", "num_embeddings": 1000, "embedding_dim": 16, "feature_names": ["uid"],
                 "pooling": "PoolingType.SUM", "data_type": "DataType.FP16"},
                {"name": "ad", "num_embeddings": 50, "embedding_dim": 16, "feature_names": ["ad", "clicked_ad"],
                 "pooling": "MEAN", "data_type": "FP32", "pooling_factors": [1.5, 20], "access": "zipf:1.1",
                 "weight_init_max": 0.1, "init_fn": null}]"#,
        )
        .unwrap();
        let s = &r.spec;
        assert_eq!(s.name, "m");
        assert_eq!((s.tables[0].rows, s.tables[0].dim, s.tables[0].row_type), (1000, 16, RowType::F16));
        assert_eq!(s.tables[0].pooling, Pooling::Fixed(1));
        assert_eq!(s.tables[0].dist, AccessDist::Uniform);
        assert_eq!(s.tables[1].pooling, Pooling::Poisson { mean: 21.5 });
        assert_eq!(s.tables[1].mode, PoolingMode::Mean);
        assert_eq!(s.tables[1].dist, AccessDist::Zipf { s: 1.1 });
        let said: Vec<String> = r.notes.iter().map(|n| n.to_string()).collect();
        let has = |k: NoteKind, what: &str| r.notes_of(k).any(|n| n.to_string().contains(what));
        assert!(has(NoteKind::Approximated, "clicked_ad"), "two features on one table: {said:?}");
        assert!(has(NoteKind::Defaulted, "no pooling factor for table(s) user"), "{said:?}");
        assert!(has(NoteKind::Defaulted, "uniform access assumed"), "{said:?}");
        assert!(has(NoteKind::Ignored, "init_fn, weight_init_max"), "{said:?}");
        assert_eq!(r.notes_of(NoteKind::Unknown).count(), 0);
    }

    #[test]
    fn unknown_fields_are_reported_and_refused_when_strict() {
        let text = r#"{"name": "m", "batch_sise": 4, "tables": [
            {"name": "t", "num_embeddings": 10, "embedding_dim": 4, "pooling_factr": 3}]}"#;
        let r = import(text).unwrap();
        let unknown: Vec<String> = r.notes_of(NoteKind::Unknown).map(|n| n.to_string()).collect();
        assert_eq!(unknown.len(), 2, "{unknown:?}");
        assert!(unknown[0].contains("batch_sise") && unknown[1].contains("`t`: `pooling_factr`"), "{unknown:?}");
        assert_eq!(r.spec.batch_size, 256, "the misspelt field was not used");
        let e = import_value(&serde_json::from_str(text).unwrap(), "m", true).unwrap_err().to_string();
        assert!(e.contains("--strict") && e.contains("pooling_factr"), "{e}");
    }

    #[test]
    fn toml_configs_read_like_json() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("dlrm.toml");
        std::fs::write(
            &p,
            "batch_size = 64\n[[tables]]\nname = \"a\"\nnum_embeddings = 100\nembedding_dim = 8\n\
             feature_names = [\"a\"]\npooling = \"SUM\"\ndata_type = \"INT4\"\npooling_factor = 20\naccess = \"hotset:0.9:0.01\"\n",
        )
        .unwrap();
        let r = import_file(&p, false).unwrap();
        assert_eq!(r.spec.name, "dlrm");
        assert_eq!(r.spec.batch_size, 64);
        assert_eq!(r.spec.tables[0].row_type, RowType::Int8);
        assert_eq!(r.spec.tables[0].pooling, Pooling::Fixed(20));
        assert!(r.notes_of(NoteKind::Approximated).any(|n| n.message.contains("INT4")));
        assert!(looks_like_torchrec(&parse_text(&p, &std::fs::read_to_string(&p).unwrap()).unwrap()));
    }

    #[test]
    fn bad_configs_fail_with_the_table_and_the_fix() {
        let cases = [
            (r#"[{"name": "t", "embedding_dim": 4}]"#, "`num_embeddings` is missing"),
            (r#"[{"name": "t", "num_embeddings": -3, "embedding_dim": 4}]"#, "non-negative integer"),
            (r#"[{"name": "t", "num_embeddings": 3, "embedding_dim": 4, "pooling": "NONE"}]"#, "pooled bags only"),
            (
                r#"[{"name": "t", "num_embeddings": 3, "embedding_dim": 4, "data_type": "INT64"}]"#,
                "not an embedding row type",
            ),
            (r#"[{"name": "t", "num_embeddings": 3, "embedding_dim": 4, "pooling_factor": 0}]"#, "pooling factor 0"),
            (
                r#"[{"name": "t", "num_embeddings": 3, "embedding_dim": 4, "feature_names": ["a"], "pooling_factors": [1, 2]}]"#,
                "one per feature",
            ),
            (r#"[{"name": "t", "num_embeddings": 3, "embedding_dim": 4, "access": "zipf:-1"}]"#, "zipf:S"),
            (r#"[{"name": "t", "num_embeddings": 0, "embedding_dim": 4}]"#, "has 0 rows"),
            (r#"{"tables": 3}"#, "list of EmbeddingBagConfigs"),
        ];
        for (text, want) in cases {
            let e = import(text).unwrap_err().to_string();
            assert!(e.contains(want), "{text}: {e}");
        }
    }
}
