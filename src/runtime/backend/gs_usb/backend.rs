//! The `gs_usb` channel scheme: a [`Backend`] over [`GsUsbDevice`].
//!
//! `channel="gs_usb:0"` (the first gs_usb device found), `"gs_usb:N"`, or
//! `"gs_usb:SERIAL"` (the device with this USB serial number); channel 0 of
//! the device, at `BusConfig::bitrate` with the kernel's default sample
//! point. On Linux a device bound to the kernel's gs_usb driver is not taken
//! away from it: opening fails and names the SocketCAN way (`ip link`), as
//! issue 12 asks.
//!
//! First cut (issue 12): classic CAN only (`BusConfig` has no data bitrate
//! yet), channel 0 only, one bus per device, timestamps mapped to epoch
//! seconds by one anchor at the first stamped frame (no drift correction),
//! one OUT transfer at a time (up to 10 frames wait for their echoes).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use canx_core::Frame;
use parking_lot::{Condvar, Mutex};

use super::device::{ChannelConfig, Event, GsUsbDevice, GsUsbError, UsbIdentity, DEFAULT_RX_TRANSFERS};
use super::{Transport, TransportError};
use crate::runtime::backend::{usb_description, AvailableChannel, Backend, BusConfig, Capabilities, Scheme};
use crate::runtime::{epoch_now, Error, Origin, Result, RxFrame};

/// The `gs_usb` entry of [`crate::runtime::backend::SCHEMES`].
pub(in crate::runtime::backend) const SCHEME: Scheme = Scheme {
    name: "gs_usb",
    default: false,
    check: |name| {
        if name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_') {
            Ok(())
        } else {
            Err(Error::BadChannel(format!("gs_usb channel {name:?}: a device index (0) or a USB serial number")))
        }
    },
    open: |name, config| Ok(Arc::new(open_nusb(name, config)?)),
    available,
};

/// Channels of the gs_usb devices present now: `"0"`, `"1"`... (by index),
/// described by their USB identity (also openable as `gs_usb:SERIAL`).
fn available() -> Vec<AvailableChannel> {
    let Ok(list) = super::usb::list() else { return Vec::new() };
    list.iter()
        .enumerate()
        .map(|(i, d)| {
            let desc = usb_description(
                d.vendor_id(),
                d.product_id(),
                d.serial_number(),
                d.manufacturer_string(),
                d.product_string(),
            );
            AvailableChannel::new(i.to_string(), format!("gs_usb USB device {desc}"))
        })
        .collect()
}

/// The data bitrate to start the channel with: `None` for a classic channel.
/// Errors: [`Error::BadChannel`] for `fd` without [`BusConfig::data_bitrate`].
fn data_bitrate(config: &BusConfig) -> Result<Option<u32>> {
    match (config.fd, config.data_bitrate) {
        (false, _) => Ok(None),
        (true, Some(rate)) => Ok(Some(rate)),
        (true, None) => Err(Error::BadChannel(
            "gs_usb: fd=True needs data_bitrate (the data-phase bit rate, bit/s, e.g. 2000000)".into(),
        )),
    }
}

fn open_nusb(name: &str, config: &BusConfig) -> Result<GsUsbBackend<super::usb::NusbTransport>> {
    data_bitrate(config)?; // before looking for the device
    let devices = super::usb::list().map_err(|e| to_error("gs_usb", e))?;
    let info = match name.parse::<usize>() {
        Ok(i) => devices.get(i),
        Err(_) => devices.iter().find(|d| d.serial_number() == Some(name)),
    }
    .ok_or_else(|| Error::BadChannel(format!("no gs_usb device {name:?} (found {})", devices.len())))?;
    let transport = super::usb::NusbTransport::open(info, false).map_err(|e| {
        let hint = if cfg!(target_os = "linux") {
            " (if the kernel's gs_usb driver has it, use its SocketCAN interface, e.g. channel=\"can0\")"
        } else {
            ""
        };
        Error::Unsupported(format!("gs_usb device {name:?}: {e}{hint}"))
    })?;
    GsUsbBackend::open(transport, super::usb::identity(info), config)
}

fn to_error(context: &str, e: TransportError) -> Error {
    let kind = match e {
        TransportError::Timeout => std::io::ErrorKind::TimedOut,
        TransportError::Disconnected => std::io::ErrorKind::NotConnected,
        _ => std::io::ErrorKind::Other,
    };
    Error::Os { context: context.to_string(), source: std::io::Error::new(kind, e.to_string()) }
}

fn from_driver(e: GsUsbError) -> Error {
    match e {
        GsUsbError::Transport { context, error: TransportError::Disconnected } => {
            Error::InterfaceDown(format!("gs_usb ({context}: the device was disconnected)"))
        }
        GsUsbError::Transport { context, error } => to_error(&format!("gs_usb {context}"), error),
        GsUsbError::NoFreeSlot => Error::SendTimeout,
        GsUsbError::BitTiming(s) => Error::BadChannel(format!("gs_usb: {s}")),
        other => Error::Unsupported(other.to_string()),
    }
}

/// A bus on channel 0 of a gs_usb device.
pub struct GsUsbBackend<T: Transport> {
    dev: GsUsbDevice<T>,
    receive_own: bool,
    silent: bool,
    wake: AtomicBool,
    /// Free echo slots are announced here (the receive thread frees them).
    slot_freed: (Mutex<()>, Condvar),
    /// epoch seconds - device seconds, set at the first stamped frame.
    anchor: Mutex<Option<f64>>,
    drops: AtomicU64,
    hardware_timestamps: bool,
    /// Started as a CAN FD channel.
    fd: bool,
    closed: AtomicBool,
}

impl<T: Transport> GsUsbBackend<T> {
    /// Opens the device and starts channel 0; with `fd`, as a CAN FD channel
    /// whose data phase runs at [`BusConfig::data_bitrate`] (DATA_BITTIMING
    /// from the kernel's bit timing solver, MODE flag FD; frames with BRS use
    /// it). Errors: [`Error::BadChannel`] for `fd` without a data bitrate or a
    /// bitrate without bit timing, [`Error::Unsupported`] for FD or a mode the
    /// device lacks, [`Error::Os`] for USB errors.
    pub fn open(transport: T, identity: UsbIdentity, config: &BusConfig) -> Result<Self> {
        let data_bitrate = data_bitrate(config)?;
        let dev = GsUsbDevice::open(transport, identity, Duration::from_secs(1)).map_err(from_driver)?;
        let cfg = ChannelConfig {
            bitrate: config.bitrate,
            data_bitrate,
            listen_only: config.silent,
            ..ChannelConfig::default()
        };
        let started = dev.start(0, &cfg).map_err(|e| match e {
            GsUsbError::Unsupported(what) if what == "CAN FD" => {
                Error::Unsupported("gs_usb: this device has no CAN FD (its BT_CONST lacks the FD feature)".into())
            }
            other => from_driver(other),
        })?;
        dev.start_rx(DEFAULT_RX_TRANSFERS).map_err(from_driver)?;
        Ok(GsUsbBackend {
            dev,
            receive_own: config.receive_own,
            silent: config.silent,
            wake: AtomicBool::new(false),
            slot_freed: (Mutex::new(()), Condvar::new()),
            anchor: Mutex::new(None),
            drops: AtomicU64::new(0),
            closed: AtomicBool::new(false),
            hardware_timestamps: started.flags.contains(canx_core::gs_usb::ModeFlags::HW_TIMESTAMP),
            fd: started.flags.contains(canx_core::gs_usb::ModeFlags::FD),
        })
    }

    pub fn device(&self) -> &GsUsbDevice<T> {
        &self.dev
    }

    fn timestamp(&self, device_us: Option<u64>) -> f64 {
        let now = epoch_now();
        match device_us {
            None => now,
            Some(us) => {
                let dev_s = us as f64 / 1e6;
                let offset = *self.anchor.lock().get_or_insert(now - dev_s);
                offset + dev_s
            }
        }
    }

    fn handle(&self, ev: Event, out: &mut Vec<RxFrame>) {
        match ev {
            Event::Rx { frame, timestamp_us, overflow, .. } => {
                if overflow {
                    self.drops.fetch_add(1, Ordering::Relaxed);
                }
                out.push(RxFrame { frame, timestamp: self.timestamp(timestamp_us), origin: Origin::Bus });
            }
            Event::TxDone { frame, timestamp_us, .. } => {
                let _g = self.slot_freed.0.lock();
                self.slot_freed.1.notify_all();
                if self.receive_own {
                    out.push(RxFrame { frame, timestamp: self.timestamp(timestamp_us), origin: Origin::Own });
                }
            }
            // Counted by the driver (unknown echoes) or here (bad transfers).
            Event::UnknownEcho(_) => {}
            Event::Malformed(_) | Event::BadChannel(_) => {
                self.drops.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

impl<T: Transport> Drop for GsUsbBackend<T> {
    fn drop(&mut self) {
        self.close();
    }
}

impl<T: Transport> Backend for GsUsbBackend<T> {
    fn recv_batch(&self, out: &mut Vec<RxFrame>, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            if self.wake.swap(false, Ordering::Relaxed) {
                return Ok(());
            }
            let left = deadline.saturating_duration_since(Instant::now());
            // Short slices, so wake() is seen soon.
            match self.dev.poll(left.min(Duration::from_millis(50))).map_err(from_driver)? {
                Some(ev) => {
                    self.handle(ev, out);
                    for _ in 0..255 {
                        match self.dev.poll(Duration::ZERO).map_err(from_driver)? {
                            Some(ev) => self.handle(ev, out),
                            None => break,
                        }
                    }
                    if !out.is_empty() {
                        return Ok(());
                    }
                }
                None if left.is_zero() => return Ok(()),
                None => {}
            }
        }
    }

    fn send(&self, frame: &Frame, timeout: Duration) -> Result<()> {
        if self.closed.load(Ordering::Relaxed) {
            return Err(Error::Closed);
        }
        if self.silent {
            return Err(Error::Silent);
        }
        let deadline = Instant::now() + timeout;
        loop {
            match self.dev.send(0, frame, timeout) {
                Err(GsUsbError::NoFreeSlot) => {
                    // Under the lock (handle() notifies under it), so a slot
                    // freed after the failed try is not missed.
                    let mut g = self.slot_freed.0.lock();
                    while !self.dev.has_free_slot() {
                        if self.slot_freed.1.wait_until(&mut g, deadline).timed_out() {
                            return Err(Error::SendTimeout);
                        }
                    }
                }
                other => return other.map(|_| ()).map_err(from_driver),
            }
        }
    }

    fn wake(&self) {
        self.wake.store(true, Ordering::Relaxed);
    }

    /// Stops channel 0 (MODE RESET) once; the interface is released when the
    /// backend is dropped.
    fn close(&self) {
        if !self.closed.swap(true, Ordering::Relaxed) {
            let _ = self.dev.stop(0);
        }
    }

    fn backend_drops(&self) -> u64 {
        self.drops.load(Ordering::Relaxed)
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            fd: self.fd,
            hardware_timestamps: self.hardware_timestamps,
            bitrate_control: true,
            ..Capabilities::default()
        }
    }
}
