//! Fuzzes an ISO-TP channel through `isotp::fuzzing::drive_channel`
//! (random frames, sends and clock steps; the same function the
//! `random_input_never_panics` and `plausible_frames_never_panic` property
//! tests drive).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    canx_core::isotp::fuzzing::drive_channel(data);
});
