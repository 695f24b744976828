//! Fuzz target: `cardvault::fuzzing::scan_detect` on arbitrary bytes.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| cardvault::fuzzing::scan_detect(data));
