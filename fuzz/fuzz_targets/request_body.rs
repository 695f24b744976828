//! Fuzz target: `cardvault::fuzzing::request_body` on arbitrary bytes.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| cardvault::fuzzing::request_body(data));
