//! libFuzzer target: the record/batch decoder (`format::decode_batch`, its header decoders).
#![no_main]

#[path = "../bodies.rs"]
mod bodies;

libfuzzer_sys::fuzz_target!(|data: &[u8]| bodies::decode_batch(data));
