//! Arbitrary claims, requests, Commanded Address payloads, clock steps and
//! failed sends
//! into the J1939-81 address claimer.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    canx_core::j1939::fuzz::address_claim(data);
});
