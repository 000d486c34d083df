//! Fuzzes the reliable-delivery engines (compat listener and sender, general
//! receiver and sender) through `reliable::fuzzing::drive_engines` (the same
//! function the `random_input_never_panics` and
//! `structured_input_never_panics` property tests drive).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    canx_core::reliable::fuzzing::drive_engines(data);
});
