//! Fuzz target: `cardvault::fuzzing::pan_parse` on arbitrary bytes.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| cardvault::fuzzing::pan_parse(data));
