//! Fuzz target: `cardvault::fuzzing::kek_share` on arbitrary bytes.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| cardvault::fuzzing::kek_share(data));
