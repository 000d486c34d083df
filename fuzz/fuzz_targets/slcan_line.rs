//! Fuzzes the slcan line decoder (`canx_core::slcan`): never panics, every
//! line is counted exactly once, and every decoded frame encodes back to a
//! line that decodes to the same frame (`slcan::fuzz_decoder`).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    canx_core::slcan::fuzz_decoder(data);
});
