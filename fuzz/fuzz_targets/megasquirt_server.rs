//! Random frames into the MegaSquirt table server. The checks live in
//! `canx_core::megasquirt::fuzzing::server`, which a proptest also runs.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    canx_core::megasquirt::fuzzing::server(data);
});
