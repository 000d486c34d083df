//! An entry point for fuzzers (`fuzz/fuzz_targets/isotp_channel.rs`) and
//! for the property test that exercises the same logic on stable Rust.
