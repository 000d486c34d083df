//! gs_usb, the USB protocol of candleLight, CANable (candleLight firmware),
//! CANtact and their clones: a pure codec with no I/O.
//!
//! - [`proto`]: vendor control requests, the little-endian control structs,
//!   the bulk "host frame" with its size rules, feature/mode flags, quirks.
//! - [`bittiming`]: bit timing from a bitrate and a sample point over the
//!   device's `BT_CONST`, computed as Linux `can_calc_bittiming` does.
//!
//! Nothing here panics on any input; every parser takes untrusted bytes and
//! returns a [`proto::DecodeError`].
//!
//! Sources (short names as in `docs/research/usb-adapters.md` of the team's
//! shared docs): Linux 6.1 `drivers/net/can/usb/gs_usb.c` (K61),
//! Linux 6.1 `drivers/net/can/dev/calc_bittiming.c`, candleLight_fw
//! `include/gs_usb.h` (CLF).
pub mod bittiming;
pub mod proto;
#[cfg(test)]
mod tests;

pub use bittiming::{calc_bittiming, BitTiming, BitTimingError, BitTimingLimits};
pub use proto::{
    BtConst, BtConstExt, ControlSetup, DecodeError, DeviceBitTiming, DeviceConfig, DeviceMode, DeviceState,
    EncodeError, Features, FrameFlags, HostFrame, Mode, ModeFlags, Quirks, Request, TxLayout,
};
