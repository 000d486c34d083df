//! Random frames into the MegaSquirt realtime broadcast decoders. The checks
//! live in `canx_core::megasquirt::fuzzing::broadcast`, which a proptest
//! also runs.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    canx_core::megasquirt::fuzzing::broadcast(data);
});
