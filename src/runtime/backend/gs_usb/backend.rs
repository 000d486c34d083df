//! The `gs_usb` channel scheme: a [`Backend`] per CAN channel of a
//! [`GsUsbDevice`]; the channels of one device share it.
//!
//! `channel="gs_usb:0"` (the first gs_usb device found), `"gs_usb:N"`, or
//! `"gs_usb:SERIAL"` (the device with this USB serial number), CAN channel 0
//! of the device; `"gs_usb:0:1"` / `"gs_usb:SERIAL:1"` is its CAN channel 1
//! (multi-channel adapters: candleLight FD 2-channel, CANtact Pro ...). Each
//! channel is programmed from its own bus's `BusConfig` (bitrate with the
//! kernel's default sample point, FD with a data bitrate, listen-only). On
//! Linux a device bound to the kernel's gs_usb driver is not taken away from
//! it: opening fails and names the SocketCAN way (`ip link`), as issue 12
//! asks.
//!
//! Threads and transfers (one device, any number of its channels open):
//! - the device is opened once ([`SharedDevice`], found again by its nusb
//!   `DeviceId` while a bus holds it) and keeps [`DEFAULT_RX_TRANSFERS`]
//!   bulk IN transfers queued, from open to the last close;
//! - each bus's receive thread calls `recv_batch`; one of them at a time
//!   (the "pump", a `try_lock`) waits on the IN endpoint and routes what
//!   arrives: frames and echoes of its own channel to itself, those of
//!   other channels into their bounded inboxes (drops counted), waking
//!   their threads. The others wait on a condition variable and take over
//!   the pump when it is free. No polling slices: the pump sleeps until a
//!   transfer completes or [`Backend::wake`] (close, engine timers);
//! - `send` queues an OUT transfer and returns: up to
//!   [`super::device::DEFAULT_TX_SLOTS`] frames in flight per device, each
//!   holding an echo id until the device echoes it. A full set of slots
//!   waits (the send's timeout); frames not echoed for [`ECHO_TIMEOUT`]
//!   make the send fail with a clear error (the TX watchdog) instead of a
//!   silent hang.
//!
//! Timestamps: device µs mapped to epoch seconds by one anchor per device at
//! its first stamped frame (no drift correction yet).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use canx_core::gs_usb::ModeFlags;
use canx_core::Frame;
use parking_lot::{Condvar, Mutex};

use super::device::{ChannelConfig, Event, GsUsbDevice, GsUsbError, UsbIdentity, DEFAULT_RX_TRANSFERS, ECHO_TIMEOUT};
use super::{Transport, TransportError};
use crate::runtime::backend::{usb_description, AvailableChannel, Backend, BusConfig, Capabilities, Scheme};
use crate::runtime::queue::BoundedQueue;
use crate::runtime::{epoch_now, Error, Origin, Result, RxFrame};

/// Frames routed to another channel's bus wait here until its thread takes them.
const INBOX_CAPACITY: usize = 4096;
/// How many transfers the pump takes without waiting once one arrived.
const DRAIN: usize = 255;

/// The `gs_usb` entry of [`crate::runtime::backend::SCHEMES`].
pub(in crate::runtime::backend) const SCHEME: Scheme = Scheme {
    name: "gs_usb",
    default: false,
    check: |name| parse_name(name).map(|_| ()),
    open: |name, config| Ok(Arc::new(open_nusb(name, config)?)),
    available,
};

/// `"DEVICE"` or `"DEVICE:CH"` -> (DEVICE, CH): DEVICE an index or a USB
/// serial number, CH the CAN channel of the device (default 0).
fn parse_name(name: &str) -> Result<(&str, u8)> {
    let bad = || {
        Error::BadChannel(format!(
            "gs_usb channel {name:?}: a device index (0) or USB serial number, then optionally \
             :CHANNEL (the device's CAN channel, 0-2), e.g. gs_usb:0 or gs_usb:0:1"
        ))
    };
    let (dev, ch) = match name.split_once(':') {
        None => (name, 0),
        Some((dev, ch)) => (dev, ch.parse::<u8>().map_err(|_| bad())?),
    };
    if dev.is_empty() || !dev.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_') {
        return Err(bad());
    }
    if usize::from(ch) >= canx_core::gs_usb::proto::MAX_CHANNELS {
        return Err(bad());
    }
    Ok((dev, ch))
}

/// Channels of the gs_usb devices present now: `"0"`, `"1"`... (by index),
/// described by their USB identity (also openable as `gs_usb:SERIAL`; a
/// multi-channel device's other channels are `"0:1"`...: how many it has is
/// only known once it is opened).
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

type NusbShared = SharedDevice<super::usb::NusbTransport>;

/// The devices open now (by nusb `DeviceId`): a second channel of the same
/// device shares its [`SharedDevice`].
static OPEN: Mutex<Vec<(nusb::DeviceId, Weak<NusbShared>)>> = Mutex::new(Vec::new());

fn open_nusb(name: &str, config: &BusConfig) -> Result<GsUsbBackend<super::usb::NusbTransport>> {
    data_bitrate(config)?; // before looking for the device
    let (dev_name, channel) = parse_name(name)?;
    let devices = super::usb::list().map_err(|e| to_error("gs_usb", e))?;
    let info = match dev_name.parse::<usize>() {
        Ok(i) => devices.get(i),
        Err(_) => devices.iter().find(|d| d.serial_number() == Some(dev_name)),
    }
    .ok_or_else(|| Error::BadChannel(format!("no gs_usb device {dev_name:?} (found {})", devices.len())))?;
    let mut open = OPEN.lock();
    open.retain(|(_, w)| w.strong_count() > 0);
    let shared = match open.iter().find(|(id, _)| *id == info.id()).and_then(|(_, w)| w.upgrade()) {
        Some(s) => s,
        None => {
            let transport = super::usb::NusbTransport::open(info, false).map_err(|e| {
                let hint = if cfg!(target_os = "linux") {
                    " (if the kernel's gs_usb driver has it, use its SocketCAN interface, e.g. channel=\"can0\")"
                } else {
                    ""
                };
                Error::Unsupported(format!("gs_usb device {dev_name:?}: {e}{hint}"))
            })?;
            let s = Arc::new(SharedDevice::open(transport, super::usb::identity(info))?);
            open.push((info.id(), Arc::downgrade(&s)));
            s
        }
    };
    drop(open);
    GsUsbBackend::on_channel(shared, channel, config)
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
        GsUsbError::NoSuchChannel(c) => Error::BadChannel(format!("gs_usb: the device has no channel {c}")),
        other => Error::Unsupported(other.to_string()),
    }
}

/// Per open channel: where its frames go and what its bus wants.
struct Route {
    inbox: BoundedQueue<RxFrame>,
    receive_own: bool,
    drops: AtomicU64,
}

/// One opened gs_usb device, shared by the buses on its channels.
pub struct SharedDevice<T: Transport> {
    dev: GsUsbDevice<T>,
    /// `Some` per open channel.
    routes: Mutex<Vec<Option<Arc<Route>>>>,
    /// Held by the receive thread that waits on the IN endpoint now.
    pump: Mutex<()>,
    /// Notified when frames were routed to an inbox or the pump was freed.
    routed: (Mutex<()>, Condvar),
    /// Notified when an echo freed a slot.
    slot_freed: (Mutex<()>, Condvar),
    /// epoch seconds - device seconds, set at the first stamped frame.
    anchor: Mutex<Option<f64>>,
    /// Transfers that could not be decoded or named a channel nobody opened.
    malformed: AtomicU64,
}

impl<T: Transport> SharedDevice<T> {
    /// Runs the open sequence and queues the IN transfers.
    pub fn open(transport: T, identity: UsbIdentity) -> Result<Self> {
        let dev = GsUsbDevice::open(transport, identity, Duration::from_secs(1)).map_err(from_driver)?;
        dev.start_rx(DEFAULT_RX_TRANSFERS).map_err(from_driver)?;
        let channels = dev.channel_count();
        Ok(SharedDevice {
            dev,
            routes: Mutex::new(vec![None; channels]),
            pump: Mutex::new(()),
            routed: (Mutex::new(()), Condvar::new()),
            slot_freed: (Mutex::new(()), Condvar::new()),
            anchor: Mutex::new(None),
            malformed: AtomicU64::new(0),
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

    /// Routes one event: to `out` for channel `mine`, else to its inbox.
    /// Returns `true` if another channel's inbox got a frame.
    fn route(&self, ev: Event, mine: u8, out: &mut Vec<RxFrame>) -> bool {
        let (channel, rx) = match ev {
            Event::Rx { channel, frame, timestamp_us, overflow } => {
                if overflow {
                    if let Some(r) = self.routes.lock().get(channel as usize).cloned().flatten() {
                        r.drops.fetch_add(1, Ordering::Relaxed);
                    }
                }
                (channel, RxFrame { frame, timestamp: self.timestamp(timestamp_us), origin: Origin::Bus })
            }
            Event::TxDone { channel, frame, timestamp_us } => {
                {
                    let _g = self.slot_freed.0.lock();
                    self.slot_freed.1.notify_all();
                }
                let own = self.routes.lock().get(channel as usize).cloned().flatten().is_some_and(|r| r.receive_own);
                if !own {
                    return false;
                }
                (channel, RxFrame { frame, timestamp: self.timestamp(timestamp_us), origin: Origin::Own })
            }
            // Counted by the driver (unknown echoes) or here (bad transfers).
            Event::UnknownEcho(_) => return false,
            Event::Malformed(_) | Event::BadChannel(_) => {
                self.malformed.fetch_add(1, Ordering::Relaxed);
                return false;
            }
        };
        if channel == mine {
            out.push(rx);
            return false;
        }
        match self.routes.lock().get(channel as usize).cloned().flatten() {
            Some(r) => {
                if r.inbox.try_push(rx).is_err() {
                    r.drops.fetch_add(1, Ordering::Relaxed);
                }
                true
            }
            None => {
                self.malformed.fetch_add(1, Ordering::Relaxed);
                false
            }
        }
    }

    fn notify_routed(&self) {
        let _g = self.routed.0.lock();
        self.routed.1.notify_all();
    }
}

/// A bus on one CAN channel of a gs_usb device.
pub struct GsUsbBackend<T: Transport> {
    shared: Arc<SharedDevice<T>>,
    channel: u8,
    route: Arc<Route>,
    silent: bool,
    wake: AtomicBool,
    hardware_timestamps: bool,
    /// Started as a CAN FD channel.
    fd: bool,
    closed: AtomicBool,
}

impl<T: Transport> GsUsbBackend<T> {
    /// Opens the device and starts its channel 0 (a bus of its own; see
    /// [`GsUsbBackend::on_channel`]).
    pub fn open(transport: T, identity: UsbIdentity, config: &BusConfig) -> Result<Self> {
        data_bitrate(config)?;
        Self::on_channel(Arc::new(SharedDevice::open(transport, identity)?), 0, config)
    }

    /// Starts `channel` of an opened device; with `fd`, as a CAN FD channel
    /// whose data phase runs at [`BusConfig::data_bitrate`] (DATA_BITTIMING
    /// from the kernel's bit timing solver, MODE flag FD; frames with BRS use
    /// it). Errors: [`Error::BadChannel`] for a channel the device lacks or
    /// one already open, `fd` without a data bitrate, or a bitrate without
    /// bit timing; [`Error::Unsupported`] for FD or a mode the device lacks;
    /// [`Error::Os`] for USB errors.
    pub fn on_channel(shared: Arc<SharedDevice<T>>, channel: u8, config: &BusConfig) -> Result<Self> {
        let data_bitrate = data_bitrate(config)?;
        let count = shared.dev.channel_count();
        if usize::from(channel) >= count {
            return Err(Error::BadChannel(format!(
                "gs_usb: the device has {count} channel(s) (0-{}), not {channel}",
                count - 1
            )));
        }
        let route = Arc::new(Route {
            inbox: BoundedQueue::new(INBOX_CAPACITY),
            receive_own: config.receive_own,
            drops: AtomicU64::new(0),
        });
        {
            let mut routes = shared.routes.lock();
            if routes[usize::from(channel)].is_some() {
                return Err(Error::BadChannel(format!("gs_usb: channel {channel} of this device is already open")));
            }
            routes[usize::from(channel)] = Some(route.clone());
        }
        let cfg = ChannelConfig {
            bitrate: config.bitrate,
            data_bitrate,
            listen_only: config.silent,
            ..ChannelConfig::default()
        };
        let started = shared.dev.start(channel, &cfg).map_err(|e| {
            shared.routes.lock()[usize::from(channel)] = None;
            match e {
                GsUsbError::Unsupported(what) if what == "CAN FD" => {
                    Error::Unsupported("gs_usb: this device has no CAN FD (its BT_CONST lacks the FD feature)".into())
                }
                other => from_driver(other),
            }
        })?;
        Ok(GsUsbBackend {
            shared,
            channel,
            route,
            silent: config.silent,
            wake: AtomicBool::new(false),
            closed: AtomicBool::new(false),
            hardware_timestamps: started.flags.contains(ModeFlags::HW_TIMESTAMP),
            fd: started.flags.contains(ModeFlags::FD),
        })
    }

    pub fn device(&self) -> &GsUsbDevice<T> {
        &self.shared.dev
    }

    pub fn shared(&self) -> &Arc<SharedDevice<T>> {
        &self.shared
    }

    /// Frames other channels' threads routed here.
    fn take_inbox(&self, out: &mut Vec<RxFrame>) {
        while let Some(f) = self.route.inbox.try_pop() {
            out.push(f);
        }
    }

    /// The TX watchdog's error: frames in flight and none echoed for [`ECHO_TIMEOUT`].
    fn echo_timeout(&self, waited: Duration) -> Error {
        Error::Os {
            context: format!(
                "gs_usb channel {}: the device has not confirmed (echoed) the {} frames in flight, the oldest \
                 for {:.1} s (no other node acknowledges them, the bus is off, or the adapter hangs)",
                self.channel,
                self.shared.dev.in_flight(),
                waited.as_secs_f64()
            ),
            source: std::io::Error::new(std::io::ErrorKind::TimedOut, "no echo from the device"),
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
        let shared = &*self.shared;
        loop {
            if self.wake.swap(false, Ordering::Relaxed) {
                return Ok(());
            }
            self.take_inbox(out);
            if !out.is_empty() {
                return Ok(());
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if let Some(pump) = shared.pump.try_lock() {
                let mut routed = false;
                let first = shared.dev.poll(left);
                let result = match first {
                    Ok(Some(ev)) => {
                        routed |= shared.route(ev, self.channel, out);
                        let mut r = Ok(());
                        for _ in 0..DRAIN {
                            match shared.dev.poll(Duration::ZERO) {
                                Ok(Some(ev)) => routed |= shared.route(ev, self.channel, out),
                                Ok(None) => break,
                                Err(e) => {
                                    r = Err(e);
                                    break;
                                }
                            }
                        }
                        r
                    }
                    Ok(None) => Ok(()),
                    Err(e) => Err(e),
                };
                drop(pump);
                // Other channels' threads: frames for them, or the pump is free.
                if routed || shared.routes.lock().iter().flatten().count() > 1 {
                    shared.notify_routed();
                }
                result.map_err(from_driver)?;
                if !out.is_empty() || left.is_zero() {
                    return Ok(());
                }
            } else {
                // Another channel's thread pumps: wait for what it routes here,
                // or for the pump to be free.
                let mut g = shared.routed.0.lock();
                // Under the lock: a pump released after this check notifies
                // after this thread waits, so the hand-over is not missed.
                if shared.pump.is_locked() && self.route.inbox.is_empty() && !self.wake.load(Ordering::Relaxed) {
                    if left.is_zero() {
                        return Ok(());
                    }
                    let _ = shared.routed.1.wait_for(&mut g, left);
                }
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
            match self.shared.dev.send(self.channel, frame) {
                Err(GsUsbError::NoFreeSlot) => {
                    if let Some(waited) = self.shared.dev.oldest_unechoed().filter(|w| *w >= ECHO_TIMEOUT) {
                        return Err(self.echo_timeout(waited));
                    }
                    let now = Instant::now();
                    if now >= deadline {
                        return Err(Error::SendTimeout);
                    }
                    // Until an echo frees a slot (notified under the lock, so
                    // none is missed), at most until the watchdog would fire;
                    // a failed OUT transfer frees its slot on the next try.
                    let mut g = self.shared.slot_freed.0.lock();
                    if !self.shared.dev.has_free_slot() {
                        let until = deadline.min(now + ECHO_TIMEOUT / 4);
                        let _ = self.shared.slot_freed.1.wait_until(&mut g, until);
                    }
                }
                other => return other.map(|_| ()).map_err(from_driver),
            }
        }
    }

    fn wake(&self) {
        self.wake.store(true, Ordering::Relaxed);
        self.shared.dev.transport().wake_in();
        self.shared.notify_routed();
    }

    /// Stops the channel (MODE RESET) once; the last channel closed also
    /// cancels the OUT transfers in flight. The interface is released when
    /// the last bus on the device is dropped.
    fn close(&self) {
        if !self.closed.swap(true, Ordering::Relaxed) {
            let _ = self.shared.dev.stop(self.channel);
            let last = {
                let mut routes = self.shared.routes.lock();
                routes[usize::from(self.channel)] = None;
                routes.iter().all(Option::is_none)
            };
            if last {
                self.shared.dev.cancel_tx();
            }
        }
    }

    fn backend_drops(&self) -> u64 {
        self.route.drops.load(Ordering::Relaxed)
    }

    fn malformed(&self) -> u64 {
        self.shared.malformed.load(Ordering::Relaxed)
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
