//! libFuzzer target: the recovery scan and plan (`recovery::scan_segment`, `recovery::plan`).
#![no_main]

#[path = "../bodies.rs"]
mod bodies;

libfuzzer_sys::fuzz_target!(|data: &[u8]| bodies::recovery_scan(data));
