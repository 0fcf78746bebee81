#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| usepod_edge_fuzz::harness::request_policy(data));
