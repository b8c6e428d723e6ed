//! The frame decoder: headers, then request and response metadata (`protocol/src/codec.rs`).
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| embtune_protocol::codec::fuzz_frame(data));
