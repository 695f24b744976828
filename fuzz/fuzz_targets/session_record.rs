//! Fuzz target: `cardvault::fuzzing::session_record` on arbitrary bytes.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| cardvault::fuzzing::session_record(data));
