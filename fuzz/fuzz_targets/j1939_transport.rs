//! Arbitrary frames, clock steps and sends into the J1939 TP engine.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    canx_core::j1939::fuzz::transport(data);
});
