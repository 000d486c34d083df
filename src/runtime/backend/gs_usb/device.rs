//! The gs_usb device driver over a [`Transport`].
//!
//! Order of requests as the Linux driver sends them (K61 `gs_usb_probe`,
//! `gs_can_open`; research §1.10): HOST_FORMAT, DEVICE_CONFIG, per channel
//! BT_CONST (+ BT_CONST_EXT when the device has FD and BT_CONST_EXT); to
//! start a channel BITTIMING, DATA_BITTIMING (FD), MODE{START, flags}; to
//! stop MODE{RESET}.

use std::time::{Duration, Instant};

use parking_lot::Mutex;

use canx_core::gs_usb::proto::{DEVICE_IDS, ECHO_ID_RX, HOST_FORMAT_LE, MAX_CHANNELS};
use canx_core::gs_usb::{
    calc_bittiming, BitTiming, BitTimingLimits, BtConst, BtConstExt, ControlSetup, DecodeError, DeviceConfig,
    DeviceMode, Features, FrameFlags, HostFrame, Mode, ModeFlags, Quirks, Request, TxLayout,
};
use canx_core::Frame;

use super::{Transport, TransportError};

/// Echo-id slots per device, as the kernel (`GS_MAX_TX_URBS`): at most this
/// many frames in flight (OUT transfers queued or waiting for their echo).
pub const DEFAULT_TX_SLOTS: usize = 10;
/// A frame not echoed within this time means the device is stuck (no other
/// node acknowledges, bus off, firmware hung): the TX watchdog's limit.
pub const ECHO_TIMEOUT: Duration = Duration::from_secs(1);
/// Bulk IN transfers kept queued (the kernel queues 30, `GS_MAX_RX_URBS`).
pub const DEFAULT_RX_TRANSFERS: usize = 32;

/// Driver errors.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum GsUsbError {
    /// A USB operation failed: what was being done, and why.
    Transport { context: String, error: TransportError },
    /// The device's answer could not be decoded.
    Decode { context: String, error: DecodeError },
    /// No channel with this index.
    NoSuchChannel(u8),
    /// The device lacks a feature the caller asked for (listen-only, FD, ...).
    Unsupported(String),
    /// No bit timing for the requested bitrate on this device.
    BitTiming(String),
    /// All echo slots are taken: the device has not confirmed earlier frames.
    NoFreeSlot,
    /// The channel is not started.
    NotStarted(u8),
}

impl std::fmt::Display for GsUsbError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            GsUsbError::Transport { context, error } => write!(f, "gs_usb {context}: {error}"),
            GsUsbError::Decode { context, error } => write!(f, "gs_usb {context}: {error}"),
            GsUsbError::NoSuchChannel(c) => write!(f, "gs_usb: the device has no channel {c}"),
            GsUsbError::Unsupported(s) => write!(f, "gs_usb: the device does not support {s}"),
            GsUsbError::BitTiming(s) => write!(f, "gs_usb: {s}"),
            GsUsbError::NoFreeSlot => f.write_str("gs_usb: all transmit slots wait for the device's echo"),
            GsUsbError::NotStarted(c) => write!(f, "gs_usb: channel {c} is not started"),
        }
    }
}

impl std::error::Error for GsUsbError {}

type Result<T> = std::result::Result<T, GsUsbError>;

fn io(context: &str) -> impl FnOnce(TransportError) -> GsUsbError + '_ {
    move |error| GsUsbError::Transport { context: context.to_string(), error }
}

/// `true` for a VID:PID of the Linux gs_usb ID table.
pub fn is_gs_usb(vid: u16, pid: u16) -> bool {
    DEVICE_IDS.iter().any(|&(v, p, _)| v == vid && p == pid)
}

/// USB identity of an opened device (for quirk detection).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct UsbIdentity {
    pub vendor_id: u16,
    pub product_id: u16,
    pub manufacturer: String,
    pub product: String,
    pub serial: String,
}

/// How to start a channel.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct ChannelConfig {
    /// Nominal bitrate, bit/s.
    pub bitrate: u32,
    /// Nominal sample point, tenths of a percent; 0: Linux default (87.5/80/75 %).
    pub sample_point: u32,
    /// FD data bitrate, bit/s; `None` for a classic channel.
    pub data_bitrate: Option<u32>,
    /// Data-phase sample point, tenths of a percent; 0: default.
    pub data_sample_point: u32,
    /// Listen-only (canio `silent`).
    pub listen_only: bool,
    /// The controller receives its own frames (loopback mode).
    pub loopback: bool,
    /// No automatic retransmission.
    pub one_shot: bool,
}

/// What [`GsUsbDevice::start`] programmed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Started {
    pub nominal: BitTiming,
    pub data: Option<BitTiming>,
    pub flags: ModeFlags,
}

#[derive(Clone, Copy, Debug)]
struct ChannelInfo {
    bt_const: BtConst,
    data_limits: Option<BitTimingLimits>,
    started: Option<ModeFlags>,
}

/// 32-bit µs device time unwrapped to 64 bits (the counter wraps after about
/// 71.6 minutes; research §1.8). Frames must be fed in device order.
#[derive(Clone, Copy, Debug, Default)]
pub struct TimestampUnwrap {
    last: Option<u32>,
    high: u64,
}

impl TimestampUnwrap {
    /// The 64-bit µs time of a 32-bit stamp.
    pub fn unwrap(&mut self, ts: u32) -> u64 {
        if let Some(last) = self.last {
            if ts < last && last - ts > u32::MAX / 2 {
                self.high += 1 << 32;
            }
        }
        self.last = Some(ts);
        self.high | u64::from(ts)
    }
}

/// Echo-id slots: a frame in flight holds one until the device echoes its id.
#[derive(Debug)]
pub struct EchoSlots {
    slots: Vec<Option<(u8, Frame, Instant)>>,
    unknown: u64,
}

impl EchoSlots {
    pub fn new(count: usize) -> EchoSlots {
        EchoSlots { slots: vec![None; count.max(1)], unknown: 0 }
    }
    /// Takes a free slot for `frame` on `channel`: its echo id.
    pub fn take(&mut self, channel: u8, frame: Frame) -> Option<u32> {
        let i = self.slots.iter().position(Option::is_none)?;
        self.slots[i] = Some((channel, frame, Instant::now()));
        Some(i as u32)
    }
    /// Frees the slot of an echo; `None` (and counted) for an id that is
    /// not in flight ("bad devices send bad echo_ids", K61).
    pub fn complete(&mut self, echo_id: u32) -> Option<(u8, Frame)> {
        let got = self.slots.get_mut(echo_id as usize).and_then(Option::take);
        if got.is_none() {
            self.unknown += 1;
        }
        got.map(|(c, f, _)| (c, f))
    }
    /// Frees a slot whose transfer failed.
    pub fn cancel(&mut self, echo_id: u32) {
        if let Some(s) = self.slots.get_mut(echo_id as usize) {
            *s = None;
        }
    }
    pub fn in_flight(&self) -> usize {
        self.slots.iter().filter(|s| s.is_some()).count()
    }
    /// How long the oldest frame in flight has waited for its echo.
    pub fn oldest_wait(&self) -> Option<Duration> {
        self.slots.iter().flatten().map(|(_, _, t)| t.elapsed()).max()
    }
    /// Echoes with an id that was not in flight.
    pub fn unknown_echoes(&self) -> u64 {
        self.unknown
    }
}

/// What the device sent, decoded.
#[derive(Clone, Debug, PartialEq)]
pub enum Event {
    /// A frame from the bus (error frames included).
    Rx { channel: u8, frame: Frame, timestamp_us: Option<u64>, overflow: bool },
    /// The device confirmed one of our frames (accepted by its controller).
    TxDone { channel: u8, frame: Frame, timestamp_us: Option<u64> },
    /// An echo with an id not in flight (counted, ignored).
    UnknownEcho(u32),
    /// A transfer that could not be decoded (counted, ignored).
    Malformed(DecodeError),
    /// A frame for a channel the device does not have.
    BadChannel(u8),
}

/// A gs_usb device: its channels, quirks, echo slots.
pub struct GsUsbDevice<T: Transport> {
    transport: T,
    identity: UsbIdentity,
    config: DeviceConfig,
    quirks: Quirks,
    channels: Mutex<Vec<ChannelInfo>>,
    slots: Mutex<EchoSlots>,
    clock: Mutex<TimestampUnwrap>,
    timeout: Duration,
}

impl<T: Transport> std::fmt::Debug for GsUsbDevice<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GsUsbDevice").field("identity", &self.identity).field("config", &self.config).finish()
    }
}

impl<T: Transport> GsUsbDevice<T> {
    /// Runs the open sequence on a claimed interface 0. `timeout` bounds
    /// every control transfer.
    pub fn open(transport: T, identity: UsbIdentity, timeout: Duration) -> Result<Self> {
        transport
            .control_out(Request::HostFormat.setup(0, 0), &HOST_FORMAT_LE.to_le_bytes(), timeout)
            .map_err(io("HOST_FORMAT"))?;
        let raw = transport.control_in(Request::DeviceConfig.setup(0, 0), timeout).map_err(io("DEVICE_CONFIG"))?;
        let config =
            DeviceConfig::parse(&raw).map_err(|error| GsUsbError::Decode { context: "DEVICE_CONFIG".into(), error })?;
        let count = config.channel_count();
        if count > MAX_CHANNELS {
            return Err(GsUsbError::Unsupported(format!("{count} channels (at most {MAX_CHANNELS})")));
        }
        let mut channels = Vec::with_capacity(count);
        for ch in 0..count as u8 {
            let raw = transport.control_in(Request::BtConst.setup(ch, 0), timeout).map_err(io("BT_CONST"))?;
            let bt_const =
                BtConst::parse(&raw).map_err(|error| GsUsbError::Decode { context: "BT_CONST".into(), error })?;
            let f = bt_const.feature;
            let data_limits = if f.contains(Features::FD) && f.contains(Features::BT_CONST_EXT) {
                let raw =
                    transport.control_in(Request::BtConstExt.setup(ch, 0), timeout).map_err(io("BT_CONST_EXT"))?;
                let ext = BtConstExt::parse(&raw)
                    .map_err(|error| GsUsbError::Decode { context: "BT_CONST_EXT".into(), error })?;
                Some(ext.data)
            } else if f.contains(Features::FD) {
                // FD without BT_CONST_EXT: the kernel uses the nominal limits for the data phase.
                Some(bt_const.nominal)
            } else {
                None
            };
            channels.push(ChannelInfo { bt_const, data_limits, started: None });
        }
        let quirks = Quirks::detect(
            identity.vendor_id,
            identity.product_id,
            &identity.manufacturer,
            &identity.product,
            &config,
            &channels[0].bt_const,
        );
        Ok(GsUsbDevice {
            transport,
            identity,
            config,
            quirks,
            channels: Mutex::new(channels),
            slots: Mutex::new(EchoSlots::new(DEFAULT_TX_SLOTS)),
            clock: Mutex::new(TimestampUnwrap::default()),
            timeout,
        })
    }

    pub fn config(&self) -> DeviceConfig {
        self.config
    }
    pub fn quirks(&self) -> Quirks {
        self.quirks
    }
    pub fn identity(&self) -> &UsbIdentity {
        &self.identity
    }
    pub fn channel_count(&self) -> usize {
        self.channels.lock().len()
    }
    pub fn bt_const(&self, channel: u8) -> Result<BtConst> {
        self.channels.lock().get(channel as usize).map(|c| c.bt_const).ok_or(GsUsbError::NoSuchChannel(channel))
    }
    pub fn transport(&self) -> &T {
        &self.transport
    }
    /// `true` if a frame can be sent now without waiting for an echo.
    pub fn has_free_slot(&self) -> bool {
        self.slots.lock().in_flight() < DEFAULT_TX_SLOTS
    }
    /// Frames in flight (sent, not echoed yet).
    pub fn in_flight(&self) -> usize {
        self.slots.lock().in_flight()
    }
    /// How long the oldest frame in flight has waited for its echo (the TX watchdog's input).
    pub fn oldest_unechoed(&self) -> Option<Duration> {
        self.slots.lock().oldest_wait()
    }
    /// Echoes with ids that were not in flight, so far.
    pub fn unknown_echoes(&self) -> u64 {
        self.slots.lock().unknown_echoes()
    }

    /// Programs and starts a channel. Hardware timestamps are always turned
    /// on where the device has them (as the kernel does). Errors:
    /// [`GsUsbError::Unsupported`] for a mode the device lacks,
    /// [`GsUsbError::BitTiming`], transport errors.
    pub fn start(&self, channel: u8, cfg: &ChannelConfig) -> Result<Started> {
        let info = *self.channels.lock().get(channel as usize).ok_or(GsUsbError::NoSuchChannel(channel))?;
        let features = info.bt_const.feature;
        let mut flags = ModeFlags::NORMAL;
        for (wanted, flag, name) in [
            (cfg.listen_only, ModeFlags::LISTEN_ONLY, "listen-only"),
            (cfg.loopback, ModeFlags::LOOP_BACK, "loopback"),
            (cfg.one_shot, ModeFlags::ONE_SHOT, "one-shot"),
            (cfg.data_bitrate.is_some(), ModeFlags::FD, "CAN FD"),
        ] {
            if wanted {
                if !flag.restricted_to(features).contains(flag) {
                    return Err(GsUsbError::Unsupported(name.into()));
                }
                flags = flags.union(flag);
            }
        }
        flags = flags.union(ModeFlags::HW_TIMESTAMP.restricted_to(features));
        let fclk = info.bt_const.fclk_can;
        let nominal = calc_bittiming(fclk, &info.bt_const.nominal, cfg.bitrate, cfg.sample_point, 0)
            .map_err(|e| GsUsbError::BitTiming(format!("bitrate {}: {e}", cfg.bitrate)))?;
        let data = match (cfg.data_bitrate, info.data_limits) {
            (Some(rate), Some(limits)) => Some(
                calc_bittiming(fclk, &limits, rate, cfg.data_sample_point, 0)
                    .map_err(|e| GsUsbError::BitTiming(format!("data bitrate {rate}: {e}")))?,
            ),
            _ => None,
        };
        let t = self.timeout;
        self.transport
            .control_out(Request::BitTiming.setup(channel, 0), &nominal.to_device().to_bytes(), t)
            .map_err(io("BITTIMING"))?;
        if let Some(d) = data {
            let mut setup = Request::DataBitTiming.setup(channel, 0);
            setup.request = self.quirks.data_bittiming_request();
            self.transport.control_out(setup, &d.to_device().to_bytes(), t).map_err(io("DATA_BITTIMING"))?;
        }
        let mode = DeviceMode { mode: Mode::Start, flags };
        self.transport.control_out(Request::Mode.setup(channel, 0), &mode.to_bytes(), t).map_err(io("MODE start"))?;
        if let Some(c) = self.channels.lock().get_mut(channel as usize) {
            c.started = Some(flags);
        }
        Ok(Started { nominal, data, flags })
    }

    /// Stops a channel (MODE RESET).
    pub fn stop(&self, channel: u8) -> Result<()> {
        if channel as usize >= self.channel_count() {
            return Err(GsUsbError::NoSuchChannel(channel));
        }
        let mode = DeviceMode { mode: Mode::Reset, flags: ModeFlags::NORMAL };
        self.transport
            .control_out(Request::Mode.setup(channel, 0), &mode.to_bytes(), self.timeout)
            .map_err(io("MODE reset"))?;
        if let Some(c) = self.channels.lock().get_mut(channel as usize) {
            c.started = None;
        }
        Ok(())
    }

    /// Queues the bulk IN transfers: `count` of the largest frame this
    /// device sends, rounded up to wMaxPacketSize (nusb's rule for IN).
    pub fn start_rx(&self, count: usize) -> Result<()> {
        let mps = self.transport.max_packet_size_in().max(1);
        let len = HostFrame::MAX_SIZE.div_ceil(mps) * mps;
        self.transport.bulk_in_start(len, count).map_err(io("bulk IN"))
    }

    /// Sends `frame` on `channel`: queues its OUT transfer and returns its
    /// echo id at once; the frame is confirmed when the device echoes the id
    /// ([`Event::TxDone`]). Up to [`DEFAULT_TX_SLOTS`] frames are in flight.
    /// Errors: [`GsUsbError::NoFreeSlot`] when all slots wait for echoes,
    /// [`GsUsbError::NotStarted`], [`GsUsbError::Unsupported`] for an FD
    /// frame on a classic channel, transport errors (an earlier OUT transfer
    /// that failed frees its slot and is reported here; a disconnect fails
    /// every later send).
    pub fn send(&self, channel: u8, frame: &Frame) -> Result<u32> {
        let flags = self
            .channels
            .lock()
            .get(channel as usize)
            .ok_or(GsUsbError::NoSuchChannel(channel))?
            .started
            .ok_or(GsUsbError::NotStarted(channel))?;
        let fd_channel = flags.contains(ModeFlags::FD);
        if matches!(frame, Frame::Fd(_)) && !fd_channel {
            return Err(GsUsbError::Unsupported("CAN FD frames on a channel started without data_bitrate".into()));
        }
        self.reap_failed_out()?;
        let echo_id = self.slots.lock().take(channel, *frame).ok_or(GsUsbError::NoFreeSlot)?;
        let hf = HostFrame::from_frame(frame, channel, echo_id);
        let layout = TxLayout { fd_channel, pad_out_by_one: self.quirks.pad_out_by_one };
        let mut buf = [0u8; HostFrame::FD_SIZE + 1];
        let n = match hf.encode(layout, &mut buf) {
            Ok(n) => n,
            Err(e) => {
                self.slots.lock().cancel(echo_id);
                return Err(GsUsbError::Unsupported(e.to_string()));
            }
        };
        if let Err(e) = self.transport.bulk_out_submit(&buf[..n]) {
            self.slots.lock().cancel(echo_id);
            return Err(GsUsbError::Transport { context: "bulk OUT".into(), error: e });
        }
        Ok(echo_id)
    }

    /// Frees the slots of OUT transfers that failed; the first failure is
    /// the error (the frame was not sent).
    fn reap_failed_out(&self) -> Result<()> {
        let mut first = None;
        while let Some((bytes, error)) = self.transport.bulk_out_failed() {
            if let Some(id) = bytes.get(..4) {
                self.slots.lock().cancel(u32::from_le_bytes([id[0], id[1], id[2], id[3]]));
            }
            first.get_or_insert(GsUsbError::Transport { context: "bulk OUT".into(), error });
        }
        first.map_or(Ok(()), Err)
    }

    /// Cancels the OUT transfers in flight and frees their slots (close).
    pub fn cancel_tx(&self) {
        self.transport.bulk_out_cancel();
        let _ = self.reap_failed_out();
        let mut slots = self.slots.lock();
        for id in 0..DEFAULT_TX_SLOTS as u32 {
            slots.cancel(id);
        }
    }

    /// Decodes one transfer from the device.
    pub fn decode(&self, bytes: &[u8]) -> Event {
        // Timestamps are on when the frame's channel was started with them;
        // the channel byte is in the header, so peek at it first.
        let channel = bytes.get(9).copied().unwrap_or(0);
        let flags = self.channels.lock().get(channel as usize).map(|c| c.started);
        let Some(started) = flags else {
            return if bytes.len() < HostFrame::HEADER_SIZE {
                Event::Malformed(DecodeError::Short { got: bytes.len(), needed: HostFrame::HEADER_SIZE })
            } else {
                Event::BadChannel(channel)
            };
        };
        let ts_on = started.is_some_and(|f| f.contains(ModeFlags::HW_TIMESTAMP));
        let hf = match HostFrame::decode(bytes, ts_on) {
            Ok(hf) => hf,
            Err(e) => return Event::Malformed(e),
        };
        let timestamp_us = hf.timestamp_us.map(|t| self.clock.lock().unwrap(t));
        if hf.echo_id != ECHO_ID_RX {
            return match self.slots.lock().complete(hf.echo_id) {
                Some((channel, frame)) => Event::TxDone { channel, frame, timestamp_us },
                None => Event::UnknownEcho(hf.echo_id),
            };
        }
        match hf.to_frame() {
            Ok(frame) => Event::Rx { channel, frame, timestamp_us, overflow: hf.flags.contains(FrameFlags::OVERFLOW) },
            Err(_) => Event::Malformed(DecodeError::Dlc(hf.can_dlc)),
        }
    }

    /// Waits up to `timeout` for the next transfer from the device and decodes it.
    pub fn poll(&self, timeout: Duration) -> Result<Option<Event>> {
        match self.transport.bulk_in_next(timeout) {
            None => Ok(None),
            Some(Ok(bytes)) => Ok(Some(self.decode(&bytes))),
            Some(Err(e)) => Err(GsUsbError::Transport { context: "bulk IN".into(), error: e }),
        }
    }

    /// The device's current µs counter (TIMESTAMP request).
    pub fn device_time(&self) -> Result<u32> {
        let raw = self.transport.control_in(Request::Timestamp.setup(0, 0), self.timeout).map_err(io("TIMESTAMP"))?;
        raw.get(..4).map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]])).ok_or(GsUsbError::Decode {
            context: "TIMESTAMP".into(),
            error: DecodeError::Short { got: raw.len(), needed: 4 },
        })
    }
}

/// A setup packet's human name, for logs and test failures.
pub fn describe(setup: &ControlSetup) -> String {
    match Request::from_u8(setup.request) {
        Some(r) => format!("{r:?}(value {}, index {})", setup.value, setup.index),
        None => format!("request {}(value {}, index {})", setup.request, setup.value, setup.index),
    }
}
