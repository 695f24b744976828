//! Fuzz target: `cardvault::fuzzing::token_parse` on arbitrary bytes.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| cardvault::fuzzing::token_parse(data));
