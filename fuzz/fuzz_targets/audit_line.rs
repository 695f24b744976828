//! Fuzz target: `cardvault::fuzzing::audit_line` on arbitrary bytes.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| cardvault::fuzzing::audit_line(data));
