//! Fuzz target: `cardvault::fuzzing::certificate_name` on arbitrary bytes.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| cardvault::fuzzing::certificate_name(data));
