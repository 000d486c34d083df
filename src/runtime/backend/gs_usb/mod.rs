//! gs_usb (candleLight, CANable with candleLight firmware, CANtact) adapters
//! driven from user space: the device driver over a [`Transport`].
//!
//! - [`device`]: [`device::GsUsbDevice`], the driver: the open sequence
//!   (HOST_FORMAT, DEVICE_CONFIG, BT_CONST, BT_CONST_EXT, quirks), starting a
//!   channel (bit timing from `canx_core::gs_usb::calc_bittiming`, MODE
//!   flags limited to the device's features), sending with echo-id slots,
//!   decoding what the device sends into events (received frames, TX
//!   confirmations, overflows), 32-bit timestamps unwrapped.
//! - [`Transport`]: the USB operations the driver needs. [`usb`] implements it
//!   over the `nusb` crate (Linux usbfs, Windows WinUSB, macOS IOKit); the
//!   tests drive the driver with an in-process mock device.
//!
//! - [`backend`]: the `gs_usb:` channel scheme, a `Backend` over the driver
//!   (first cut: classic CAN, channel 0; see its doc for what is missing).
//!
//! Not yet here (issue 12): drift correction of device time.
//!
//! Protocol facts: `canx_core::gs_usb` and the team's
//! `docs/research/usb-adapters.md` §1, §6.

pub mod backend;
pub mod device;
pub mod usb;

#[cfg(test)]
mod tests;

use std::fmt;
use std::time::Duration;

use canx_core::gs_usb::ControlSetup;

/// Why a USB operation failed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TransportError {
    /// The transfer did not complete within its timeout.
    Timeout,
    /// The device answered with a STALL (candleLight: unknown or invalid request).
    Stall,
    /// The device is gone (unplugged, unbound).
    Disconnected,
    /// Anything else, with the OS's or library's words.
    Other(String),
}

impl fmt::Display for TransportError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TransportError::Timeout => f.write_str("USB transfer timed out"),
            TransportError::Stall => f.write_str("the device stalled the request"),
            TransportError::Disconnected => f.write_str("the device was disconnected"),
            TransportError::Other(s) => f.write_str(s),
        }
    }
}

impl std::error::Error for TransportError {}

/// The USB operations of a gs_usb driver: control transfers on interface 0,
/// a bulk IN endpoint with a queue of transfers, a bulk OUT endpoint.
pub trait Transport: Send + Sync {
    /// A vendor IN control request; returns the data stage (at most `setup.length` bytes).
    fn control_in(&self, setup: ControlSetup, timeout: Duration) -> Result<Vec<u8>, TransportError>;
    /// A vendor OUT control request with `data` as its data stage.
    fn control_out(&self, setup: ControlSetup, data: &[u8], timeout: Duration) -> Result<(), TransportError>;
    /// Keeps `count` bulk IN transfers of `len` bytes queued from now on
    /// (every completion is resubmitted by [`Transport::bulk_in_next`]).
    fn bulk_in_start(&self, len: usize, count: usize) -> Result<(), TransportError>;
    /// The next completed bulk IN transfer's bytes; `None` after `timeout`
    /// or once [`Transport::wake_in`] was called.
    fn bulk_in_next(&self, timeout: Duration) -> Option<Result<Vec<u8>, TransportError>>;
    /// Makes a blocked (or the next) [`Transport::bulk_in_next`] return `None` now.
    fn wake_in(&self);
    /// Queues one bulk OUT transfer and returns at once (several may be in
    /// flight; the caller bounds them, gs_usb by its echo slots).
    fn bulk_out_submit(&self, data: &[u8]) -> Result<(), TransportError>;
    /// The oldest OUT transfer that failed since the last call: its bytes as
    /// submitted (a gs_usb frame starts with its echo id) and why.
    fn bulk_out_failed(&self) -> Option<(Vec<u8>, TransportError)>;
    /// OUT transfers submitted and not completed yet.
    fn bulk_out_pending(&self) -> usize;
    /// Cancels the OUT transfers in flight (close).
    fn bulk_out_cancel(&self);
    /// wMaxPacketSize of the bulk IN endpoint (IN lengths must be multiples of it).
    fn max_packet_size_in(&self) -> usize;
}
