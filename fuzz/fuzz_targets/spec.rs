//! The model spec parser: TOML and JSON specs and the command line's short forms
//! (`workloads/src/spec.rs`).
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| embtune_workloads::spec::fuzz_spec(data));
