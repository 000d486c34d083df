//! Random replies into the MegaSquirt client with requests outstanding. The
//! checks live in `canx_core::megasquirt::fuzzing::client`, which a proptest
//! also runs.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    canx_core::megasquirt::fuzzing::client(data);
});
