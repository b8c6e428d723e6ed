//! The spec parser's and the trace readers' fuzz targets (`spec::fuzz_spec`,
//! `trace::fuzz_trace`) on every input of their checked-in corpora (`fuzz/corpus/spec`,
//! `fuzz/corpus/trace`), and on random and mutated inputs: the floor that runs with every
//! `cargo test`. Coverage-guided runs: `fuzz/README.md`.

use std::path::PathBuf;

use proptest::prelude::*;

use embtune_workloads::spec::fuzz_spec;
use embtune_workloads::trace::fuzz_trace;
use embtune_workloads::{Preset, PresetOptions};

fn corpus(target: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus").join(target)
}

fn spec_seeds() -> Vec<String> {
    let mut out = vec![
        "name = \"m\"\nbatch_size = 4\n[[tables]]\nname = \"a\"\nrows = 100\ndim = 4\npooling = 2\ndist = \"zipf:1.05\"\n".to_string(),
        "name = \"m\"\nbatch_size = 2\nseed = 9\n[[tables]]\nname = \"a\"\nrows = 10\ndim = 8\nrow_type = \"f16\"\npooling = \"uniform:0:3\"\nmode = \"mean\"\ndist = \"hotset:0.9:0.1\"\n[[tables]]\nname = \"b\"\nrows = 5\ndim = 1\npooling = \"poisson:2\"\ndist = \"extreme\"\nquantizable = true\n".to_string(),
        r#"{"name":"j","batch_size":3,"tables":[{"name":"t","rows":50,"dim":2,"pooling":1,"dist":"uniform"}]}"#.to_string(),
        "pooling = 0\n".to_string(),
    ];
    for p in [Preset::CriteoKaggle, Preset::Avazu] {
        let spec = p.spec(&PresetOptions { scale: Some(0.001), ..Default::default() }).unwrap();
        out.push(toml::to_string(&spec).unwrap());
    }
    out
}

fn trace_seeds() -> Vec<String> {
    vec![
        "# a trace\n5\n5\n7\n\n9\n".into(),
        "3 10\n4,5\n6\t1\n".into(),
        "18446744073709551615 1\n0 18446744073709551615\n".into(),
        "1\n2\nx\n".into(),
    ]
}

/// Writes the seeds into the corpora: `cargo test -p embtune-workloads --test fuzz_inputs --
/// --ignored write_seeds` (kept, so the corpora are reproducible).
#[test]
#[ignore]
fn write_seeds() {
    for (target, seeds) in [("spec", spec_seeds()), ("trace", trace_seeds())] {
        std::fs::create_dir_all(corpus(target)).unwrap();
        for (i, s) in seeds.iter().enumerate() {
            std::fs::write(corpus(target).join(format!("seed-{i:02}")), s).unwrap();
        }
    }
}

fn replay(target: &str, f: fn(&[u8]), seeds: usize) {
    let mut n = 0;
    for e in std::fs::read_dir(corpus(target)).unwrap_or_else(|e| panic!("the corpus fuzz/corpus/{target}: {e}")) {
        f(&std::fs::read(e.unwrap().path()).unwrap());
        n += 1;
    }
    assert!(n >= seeds, "fuzz/corpus/{target} lost its seeds ({n} inputs)");
}

#[test]
fn every_corpus_input_parses_or_errs_without_panicking() {
    replay("spec", fuzz_spec, spec_seeds().len());
    replay("trace", fuzz_trace, trace_seeds().len());
    for s in spec_seeds() {
        fuzz_spec(s.as_bytes());
    }
}

/// Text made of the specs' own words, so that random inputs get past the TOML parser.
fn spec_text() -> impl Strategy<Value = String> {
    let word = prop_oneof![
        Just("name = \"t\"\n".to_string()),
        Just("[[tables]]\n".to_string()),
        Just("rows = ".to_string()),
        Just("dim = ".to_string()),
        Just("pooling = ".to_string()),
        Just("batch_size = ".to_string()),
        Just("dist = \"".to_string()),
        Just("\"\n".to_string()),
        Just("uniform:".to_string()),
        Just("poisson:".to_string()),
        Just("zipf:".to_string()),
        Just("hotset:".to_string()),
        Just("row_type = \"int8\"\n".to_string()),
        (0u64..100_000).prop_map(|n| format!("{n}\n")),
        any::<u64>().prop_map(|n| format!("{n}")),
        "[ -~]{0,6}",
    ];
    proptest::collection::vec(word, 0..40).prop_map(|w| format!("name = \"m\"\n{}", w.concat()))
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1000, ..ProptestConfig::default() })]

    #[test]
    fn random_specs_never_panic(text in spec_text()) {
        fuzz_spec(text.as_bytes());
    }

    #[test]
    fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
        fuzz_spec(&bytes);
        fuzz_trace(&bytes);
    }

    #[test]
    fn random_traces_never_panic(lines in proptest::collection::vec("[0-9]{0,21}([ ,\t][0-9]{0,21})?|#.*|[a-z ]{0,4}", 0..40)) {
        fuzz_trace(lines.join("\n").as_bytes());
    }
}
