//! The trace and frequency-profile readers (`workloads/src/trace.rs`).
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| embtune_workloads::trace::fuzz_trace(data));
