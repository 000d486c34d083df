//! Fuzzes the candump log line parser (`canx_core::log::parse_line`): never
//! panics, and every accepted line writes back to text that parses to the
//! same line.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    if let Ok(line) = canx_core::log::parse_line(&text) {
        let mut out = String::new();
        canx_core::log::write_line(&mut out, &line).unwrap();
        let again = canx_core::log::parse_line(&out).expect("written lines parse");
        assert_eq!(again.frame, line.frame);
        assert_eq!(again.channel, line.channel);
        assert_eq!(again.timestamp, line.timestamp);
    }
    let _ = canx_core::log::parse_frame(&text);
});
