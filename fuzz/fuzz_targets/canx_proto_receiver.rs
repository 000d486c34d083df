//! Fuzzes the CAN-X receiver through `canx_proto::fuzzing::drive_receiver`
//! (the same function the `random_input_never_panics` and
//! `mutated_sender_output_never_panics` property tests drive).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    canx_core::canx_proto::fuzzing::drive_receiver(data);
});
