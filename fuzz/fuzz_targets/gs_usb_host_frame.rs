//! Fuzzes the gs_usb decoders (bytes from a USB device are untrusted): the
//! host frame with and without timestamps, its conversion to a canx frame,
//! the control structs, and the bit-timing solver over arbitrary limits.
#![no_main]

use canx_core::gs_usb::{calc_bittiming, BitTimingLimits, BtConst, BtConstExt, DeviceConfig, DeviceMode, HostFrame};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    for ts in [false, true] {
        if let Ok(f) = HostFrame::decode(data, ts) {
            let _ = f.to_frame();
        }
    }
    let _ = DeviceConfig::parse(data);
    let _ = DeviceMode::parse(data);
    let _ = BtConstExt::parse(data);
    if let Ok(c) = BtConst::parse(data) {
        let l: BitTimingLimits = c.nominal;
        let rate = data.get(40..44).map_or(500_000, |b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]));
        let sp = data.get(44..46).map_or(0, |b| u32::from(u16::from_le_bytes([b[0], b[1]])));
        let _ = calc_bittiming(c.fclk_can, &l, rate, sp, 0);
    }
});
