//! Fuzz target: `cardvault::fuzzing::record_open` on arbitrary bytes.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| cardvault::fuzzing::record_open(data));
