//! Fuzz target: `cardvault::fuzzing::markup_scan` on arbitrary bytes.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| cardvault::fuzzing::markup_scan(data));
