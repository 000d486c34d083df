//! gs_usb wire format: vendor control requests, control structs and the bulk
//! host frame. Pure codec, no I/O; parsers never panic.
//!
//! All integers are little-endian (the host announces LE with `HOST_FORMAT`,
//! and candleLight is always LE). Struct layouts and request numbers: Linux 6.1
//! `drivers/net/can/usb/gs_usb.c` (K61) and candleLight_fw `include/gs_usb.h`
//! (CLF); summary in the team's `docs/research/usb-adapters.md` §1.2-§1.9.

use core::fmt;

use crate::frame::{
    dlc_to_len, len_to_dlc, make_id, CanFrame, ErrorFrame, FdFrame, Frame, FrameError, CANFD_MAX_LEN, CAN_MAX_LEN,
    EFF_FLAG, EFF_MASK, ERR_FLAG, RTR_FLAG, SFF_MASK,
};

/// USB IDs the Linux gs_usb driver binds (K61 `gs_usb_table`, plus 1209:ca01
/// CANnectivity from the linux-can tree), all on interface 0:
/// (vendor id, product id, name).
pub const DEVICE_IDS: &[(u16, u16, &str)] = &[
    (0x1d50, 0x606f, "GS USB / candleLight / CANable / CANtact Pro"),
    (0x1209, 0x2323, "candleLight (pid.codes)"),
    (0x1cd2, 0x606f, "CES CANext FD"),
    (0x16d0, 0x10b8, "ABE CANdebugger FD"),
    (0x16d0, 0x0f30, "Xylanta SAINT3"),
    (0x1209, 0xca01, "CANnectivity"),
];

/// `bmRequestType` of a gs_usb OUT request: vendor, interface recipient.
pub const REQUEST_TYPE_OUT: u8 = 0x41;
/// `bmRequestType` of a gs_usb IN request.
pub const REQUEST_TYPE_IN: u8 = 0xC1;
/// `echo_id` of a frame received from the bus (`GS_HOST_FRAME_ECHO_ID_RX`).
pub const ECHO_ID_RX: u32 = 0xFFFF_FFFF;
/// `HOST_FORMAT` payload announcing little-endian (`0x0000beef`).
pub const HOST_FORMAT_LE: u32 = 0x0000_beef;
/// Most channels the kernel driver accepts (`GS_MAX_INTF`).
pub const MAX_CHANNELS: usize = 3;

/// Why bytes from the device could not be decoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DecodeError {
    /// Fewer bytes than the struct or frame needs: (got, needed).
    Short { got: usize, needed: usize },
    /// A DLC code above 15.
    Dlc(u8),
    /// A `MODE.mode` value other than 0 (reset) or 1 (start).
    Mode(u32),
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DecodeError::Short { got, needed } => write!(f, "gs_usb: {got} bytes, {needed} needed"),
            DecodeError::Dlc(d) => write!(f, "gs_usb: DLC {d} > 15"),
            DecodeError::Mode(m) => write!(f, "gs_usb: unknown mode {m}"),
        }
    }
}

impl core::error::Error for DecodeError {}

/// Why a frame could not be encoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EncodeError {
    /// The output buffer is too small: (got, needed).
    BufferTooSmall { got: usize, needed: usize },
}

impl fmt::Display for EncodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EncodeError::BufferTooSmall { got, needed } => {
                write!(f, "gs_usb: buffer of {got} bytes, {needed} needed")
            }
        }
    }
}

impl core::error::Error for EncodeError {}

fn u32_at(buf: &[u8], off: usize) -> u32 {
    // Callers check the length first; a short slice reads as 0 rather than panicking.
    match buf.get(off..off + 4) {
        Some(b) => u32::from_le_bytes([b[0], b[1], b[2], b[3]]),
        None => 0,
    }
}

fn need(buf: &[u8], needed: usize) -> Result<(), DecodeError> {
    if buf.len() < needed {
        Err(DecodeError::Short { got: buf.len(), needed })
    } else {
        Ok(())
    }
}

fn put_u32s<const N: usize>(vals: [u32; N], out: &mut [u8]) {
    for (chunk, v) in out.chunks_exact_mut(4).zip(vals) {
        chunk.copy_from_slice(&v.to_le_bytes());
    }
}

// ------------------------------------------------------------------ requests

/// Direction of a control request's data stage.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    /// Host to device.
    Out,
    /// Device to host.
    In,
}

/// The vendor control requests (`enum gs_usb_breq`, K61/CLF; research §1.2).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Request {
    /// OUT, per device: `u32 0x0000beef`. Sent first by the kernel.
    HostFormat = 0,
    /// OUT, per channel: [`DeviceBitTiming`] (nominal).
    BitTiming = 1,
    /// OUT, per channel: [`DeviceMode`].
    Mode = 2,
    /// OUT: unused by the kernel, stalled by candleLight. Do not send.
    Berr = 3,
    /// IN, per channel: [`BtConst`].
    BtConst = 4,
    /// IN, per device: [`DeviceConfig`].
    DeviceConfig = 5,
    /// IN: `u32` device time in µs.
    Timestamp = 6,
    /// OUT, per channel: `u32` 0 off, 1 blink.
    Identify = 7,
    /// Unimplemented by firmwares; CANtact Pro fw <= 2 uses 8 for DATA_BITTIMING.
    GetUserId = 8,
    /// Unimplemented by firmwares.
    SetUserId = 9,
    /// OUT, per channel: [`DeviceBitTiming`] of the FD data phase.
    DataBitTiming = 10,
    /// IN, per channel: [`BtConstExt`] (only with FD and BT_CONST_EXT).
    BtConstExt = 11,
    /// OUT, per channel: `u32` 0 off, 1 on (120 Ω).
    SetTermination = 12,
    /// IN, per channel: `u32` 0 off, 1 on.
    GetTermination = 13,
    /// IN, per channel: [`DeviceState`] (linux-can tree only, not 6.1).
    GetState = 14,
}

impl Request {
    /// The request of a `bRequest` number; `None` for numbers gs_usb does not define.
    pub fn from_u8(n: u8) -> Option<Request> {
        use Request::*;
        Some(match n {
            0 => HostFormat,
            1 => BitTiming,
            2 => Mode,
            3 => Berr,
            4 => BtConst,
            5 => DeviceConfig,
            6 => Timestamp,
            7 => Identify,
            8 => GetUserId,
            9 => SetUserId,
            10 => DataBitTiming,
            11 => BtConstExt,
            12 => SetTermination,
            13 => GetTermination,
            14 => GetState,
            _ => return None,
        })
    }

    /// Direction of the data stage.
    pub fn direction(self) -> Direction {
        use Request::*;
        match self {
            BtConst | DeviceConfig | Timestamp | BtConstExt | GetTermination | GetState | GetUserId => Direction::In,
            _ => Direction::Out,
        }
    }

    /// Length of the data stage in bytes.
    pub fn length(self) -> u16 {
        use Request::*;
        match self {
            HostFormat | Berr | Timestamp | Identify | SetTermination | GetTermination | GetUserId | SetUserId => 4,
            BitTiming | DataBitTiming => DeviceBitTiming::SIZE as u16,
            Mode => DeviceMode::SIZE as u16,
            BtConst => self::BtConst::SIZE as u16,
            DeviceConfig => self::DeviceConfig::SIZE as u16,
            BtConstExt => self::BtConstExt::SIZE as u16,
            GetState => DeviceState::SIZE as u16,
        }
    }

    /// The setup packet for this request. Per-device requests (HOST_FORMAT,
    /// DEVICE_CONFIG) use `wValue = 1, wIndex = interface`; TIMESTAMP uses
    /// `0 / 0`; the rest `wValue = channel, wIndex = 0` (K61; research §1.2).
    pub fn setup(self, channel: u8, interface: u8) -> ControlSetup {
        let (value, index) = match self {
            Request::HostFormat | Request::DeviceConfig => (1, u16::from(interface)),
            Request::Timestamp => (0, 0),
            _ => (u16::from(channel), 0),
        };
        ControlSetup {
            request_type: match self.direction() {
                Direction::In => REQUEST_TYPE_IN,
                Direction::Out => REQUEST_TYPE_OUT,
            },
            request: self as u8,
            value,
            index,
            length: self.length(),
        }
    }
}

/// A USB control setup packet (`struct usb_ctrlrequest`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ControlSetup {
    pub request_type: u8,
    pub request: u8,
    pub value: u16,
    pub index: u16,
    pub length: u16,
}

impl ControlSetup {
    pub const SIZE: usize = 8;
    /// The 8 bytes on the wire.
    pub fn to_bytes(&self) -> [u8; 8] {
        let v = self.value.to_le_bytes();
        let i = self.index.to_le_bytes();
        let l = self.length.to_le_bytes();
        [self.request_type, self.request, v[0], v[1], i[0], i[1], l[0], l[1]]
    }
}

// ------------------------------------------------------------------ flags

bitflags::bitflags! {
    /// `BT_CONST.feature` bits (research §1.4). Unknown bits are dropped on
    /// parse ([`Features::from_bits_truncate`]), so a firmware's private bits
    /// never turn into mode flags.
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
    pub struct Features: u32 {
        const LISTEN_ONLY = 1 << 0;
        const LOOP_BACK = 1 << 1;
        const TRIPLE_SAMPLE = 1 << 2;
        const ONE_SHOT = 1 << 3;
        const HW_TIMESTAMP = 1 << 4;
        const IDENTIFY = 1 << 5;
        const USER_ID = 1 << 6;
        const PAD_PKTS_TO_MAX_PKT_SIZE = 1 << 7;
        const FD = 1 << 8;
        /// The host must pad OUT transfers by one byte (LPC546xx USB erratum).
        const REQ_USB_QUIRK_LPC546XX = 1 << 9;
        const BT_CONST_EXT = 1 << 10;
        const TERMINATION = 1 << 11;
        const BERR_REPORTING = 1 << 12;
        const GET_STATE = 1 << 13;
    }
}

impl Features {
    /// Bits 0-13: the features of the linux-can tree (6.1 knows 0-11).
    pub const KNOWN: u32 = Self::all().bits();
}

bitflags::bitflags! {
    /// `MODE.flags` bits; same positions as the features (research §1.4).
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
    pub struct ModeFlags: u32 {
        const LISTEN_ONLY = 1 << 0;
        const LOOP_BACK = 1 << 1;
        const TRIPLE_SAMPLE = 1 << 2;
        const ONE_SHOT = 1 << 3;
        const HW_TIMESTAMP = 1 << 4;
        const PAD_PKTS_TO_MAX_PKT_SIZE = 1 << 7;
        const FD = 1 << 8;
        const BERR_REPORTING = 1 << 12;
    }
}

impl ModeFlags {
    /// No flag: a normal (active, error-reporting) channel.
    pub const NORMAL: ModeFlags = ModeFlags::empty();
    /// The bits that are mode flags at all.
    pub const KNOWN: u32 = Self::all().bits();

    /// Only the flags the device advertises: a host never sets a mode bit
    /// whose feature bit is clear (python `gs-usb` does `flags &= feature`).
    pub const fn restricted_to(self, features: Features) -> ModeFlags {
        ModeFlags::from_bits_truncate(self.bits() & features.bits())
    }
}

bitflags::bitflags! {
    /// Host frame `flags` byte (research §1.5).
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
    pub struct FrameFlags: u8 {
        /// The device's receive buffer overflowed before this frame.
        const OVERFLOW = 1 << 0;
        const FD = 1 << 1;
        const BRS = 1 << 2;
        const ESI = 1 << 3;
    }
}

impl FrameFlags {
    pub const KNOWN: u8 = Self::all().bits();
}

// ------------------------------------------------------------------ structs

/// `gs_device_config` (12 bytes, DEVICE_CONFIG reply).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DeviceConfig {
    /// Number of channels minus one.
    pub icount: u8,
    pub sw_version: u32,
    pub hw_version: u32,
}

impl DeviceConfig {
    pub const SIZE: usize = 12;
    pub fn parse(buf: &[u8]) -> Result<DeviceConfig, DecodeError> {
        need(buf, Self::SIZE)?;
        Ok(DeviceConfig { icount: buf[3], sw_version: u32_at(buf, 4), hw_version: u32_at(buf, 8) })
    }
    pub fn to_bytes(&self) -> [u8; Self::SIZE] {
        let mut out = [0u8; Self::SIZE];
        out[3] = self.icount;
        put_u32s([self.sw_version, self.hw_version], &mut out[4..]);
        out
    }
    /// Number of CAN channels (`icount + 1`, 1-256).
    pub fn channel_count(&self) -> usize {
        usize::from(self.icount) + 1
    }
}

/// `MODE.mode`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Stop the channel (`GS_CAN_MODE_RESET`).
    Reset = 0,
    /// Start the channel (`GS_CAN_MODE_START`).
    Start = 1,
}

/// `gs_device_mode` (8 bytes, MODE request).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DeviceMode {
    pub mode: Mode,
    pub flags: ModeFlags,
}

impl DeviceMode {
    pub const SIZE: usize = 8;
    pub fn parse(buf: &[u8]) -> Result<DeviceMode, DecodeError> {
        need(buf, Self::SIZE)?;
        let mode = match u32_at(buf, 0) {
            0 => Mode::Reset,
            1 => Mode::Start,
            m => return Err(DecodeError::Mode(m)),
        };
        Ok(DeviceMode { mode, flags: ModeFlags::from_bits_truncate(u32_at(buf, 4)) })
    }
    pub fn to_bytes(&self) -> [u8; Self::SIZE] {
        let mut out = [0u8; Self::SIZE];
        put_u32s([self.mode as u32, self.flags.bits()], &mut out);
        out
    }
}

/// `gs_device_state` (12 bytes, GET_STATE reply; linux-can tree only).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DeviceState {
    /// 0 active, 1 warning, 2 passive, 3 bus-off, 4 stopped, 5 sleeping.
    pub state: u32,
    pub rxerr: u32,
    pub txerr: u32,
}

impl DeviceState {
    pub const SIZE: usize = 12;
    pub fn parse(buf: &[u8]) -> Result<DeviceState, DecodeError> {
        need(buf, Self::SIZE)?;
        Ok(DeviceState { state: u32_at(buf, 0), rxerr: u32_at(buf, 4), txerr: u32_at(buf, 8) })
    }
}

/// `gs_device_bittiming` (20 bytes, BITTIMING / DATA_BITTIMING), in time quanta.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct DeviceBitTiming {
    pub prop_seg: u32,
    pub phase_seg1: u32,
    pub phase_seg2: u32,
    pub sjw: u32,
    pub brp: u32,
}

impl DeviceBitTiming {
    pub const SIZE: usize = 20;
    pub fn parse(buf: &[u8]) -> Result<DeviceBitTiming, DecodeError> {
        need(buf, Self::SIZE)?;
        Ok(DeviceBitTiming {
            prop_seg: u32_at(buf, 0),
            phase_seg1: u32_at(buf, 4),
            phase_seg2: u32_at(buf, 8),
            sjw: u32_at(buf, 12),
            brp: u32_at(buf, 16),
        })
    }
    pub fn to_bytes(&self) -> [u8; Self::SIZE] {
        let mut out = [0u8; Self::SIZE];
        put_u32s([self.prop_seg, self.phase_seg1, self.phase_seg2, self.sjw, self.brp], &mut out);
        out
    }
}

/// Limits of one bit-timing phase: the 8 `u32`s after `fclk_can` in
/// `gs_device_bt_const` (`struct can_bittiming_const` in Linux).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct BitTimingLimits {
    /// tseg1 = prop_seg + phase_seg1, in time quanta.
    pub tseg1_min: u32,
    pub tseg1_max: u32,
    pub tseg2_min: u32,
    pub tseg2_max: u32,
    pub sjw_max: u32,
    pub brp_min: u32,
    pub brp_max: u32,
    pub brp_inc: u32,
}

impl BitTimingLimits {
    pub const SIZE: usize = 32;
    fn parse_at(buf: &[u8], off: usize) -> BitTimingLimits {
        let f = |i: usize| u32_at(buf, off + 4 * i);
        BitTimingLimits {
            tseg1_min: f(0),
            tseg1_max: f(1),
            tseg2_min: f(2),
            tseg2_max: f(3),
            sjw_max: f(4),
            brp_min: f(5),
            brp_max: f(6),
            brp_inc: f(7),
        }
    }
    fn words(&self) -> [u32; 8] {
        [
            self.tseg1_min,
            self.tseg1_max,
            self.tseg2_min,
            self.tseg2_max,
            self.sjw_max,
            self.brp_min,
            self.brp_max,
            self.brp_inc,
        ]
    }
    /// `true` if `bt` is within these limits (what candleLight checks
    /// before it accepts BITTIMING; CLF `can_set_bittiming`).
    pub fn accepts(&self, bt: &DeviceBitTiming) -> bool {
        let tseg1 = bt.prop_seg.saturating_add(bt.phase_seg1);
        (self.tseg1_min..=self.tseg1_max).contains(&tseg1)
            && (self.tseg2_min..=self.tseg2_max).contains(&bt.phase_seg2)
            && (1..=self.sjw_max).contains(&bt.sjw)
            && (self.brp_min..=self.brp_max).contains(&bt.brp)
    }
}

/// `gs_device_bt_const` (40 bytes, BT_CONST reply).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct BtConst {
    pub feature: Features,
    /// CAN controller clock, Hz.
    pub fclk_can: u32,
    pub nominal: BitTimingLimits,
}

impl BtConst {
    pub const SIZE: usize = 40;
    pub fn parse(buf: &[u8]) -> Result<BtConst, DecodeError> {
        need(buf, Self::SIZE)?;
        Ok(BtConst {
            feature: Features::from_bits_truncate(u32_at(buf, 0)),
            fclk_can: u32_at(buf, 4),
            nominal: BitTimingLimits::parse_at(buf, 8),
        })
    }
    pub fn to_bytes(&self) -> [u8; Self::SIZE] {
        let mut out = [0u8; Self::SIZE];
        put_u32s([self.feature.bits(), self.fclk_can], &mut out[..8]);
        put_u32s(self.nominal.words(), &mut out[8..]);
        out
    }
}

/// `gs_device_bt_const_extended` (72 bytes, BT_CONST_EXT reply).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct BtConstExt {
    pub feature: Features,
    pub fclk_can: u32,
    pub nominal: BitTimingLimits,
    /// Limits of the FD data phase (`dtseg1_min` ... `dbrp_inc`).
    pub data: BitTimingLimits,
}

impl BtConstExt {
    pub const SIZE: usize = 72;
    pub fn parse(buf: &[u8]) -> Result<BtConstExt, DecodeError> {
        need(buf, Self::SIZE)?;
        Ok(BtConstExt {
            feature: Features::from_bits_truncate(u32_at(buf, 0)),
            fclk_can: u32_at(buf, 4),
            nominal: BitTimingLimits::parse_at(buf, 8),
            data: BitTimingLimits::parse_at(buf, 40),
        })
    }
    pub fn to_bytes(&self) -> [u8; Self::SIZE] {
        let mut out = [0u8; Self::SIZE];
        put_u32s([self.feature.bits(), self.fclk_can], &mut out[..8]);
        put_u32s(self.nominal.words(), &mut out[8..40]);
        put_u32s(self.data.words(), &mut out[40..]);
        out
    }
}

// ------------------------------------------------------------------ quirks

/// Device quirks the host must honour (K61 `gs_make_candev`; research §1.9).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Quirks {
    /// Send DATA_BITTIMING as request 8 (CANtact Pro firmware <= 2).
    pub data_bittiming_is_8: bool,
    /// Pad every OUT transfer by one byte (LPC546xx erratum).
    pub pad_out_by_one: bool,
    /// The device may blink on IDENTIFY (feature set and `sw_version > 1`).
    pub identify: bool,
}

impl Quirks {
    /// The quirks of a device from its IDs, strings, DEVICE_CONFIG and BT_CONST.
    /// CANtact Pro = 1d50:606f + manufacturer "LinkLayer Labs" + product
    /// "CANtact Pro" + `sw_version <= 2`: request 8 and a pad byte (K61
    /// checks these strings). The pad byte is also asked for by the
    /// `REQ_USB_QUIRK_LPC546XX` feature.
    pub fn detect(
        vid: u16,
        pid: u16,
        manufacturer: &str,
        product: &str,
        config: &DeviceConfig,
        bt_const: &BtConst,
    ) -> Quirks {
        let cantact_pro = vid == 0x1d50
            && pid == 0x606f
            && manufacturer == "LinkLayer Labs"
            && product == "CANtact Pro"
            && config.sw_version <= 2;
        Quirks {
            data_bittiming_is_8: cantact_pro,
            pad_out_by_one: cantact_pro || bt_const.feature.contains(Features::REQ_USB_QUIRK_LPC546XX),
            identify: bt_const.feature.contains(Features::IDENTIFY) && config.sw_version > 1,
        }
    }

    /// `bRequest` to use for DATA_BITTIMING.
    pub fn data_bittiming_request(&self) -> u8 {
        if self.data_bittiming_is_8 {
            Request::GetUserId as u8
        } else {
            Request::DataBitTiming as u8
        }
    }
}

// ------------------------------------------------------------------ host frame

/// Layout of host frames sent to a channel.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct TxLayout {
    /// The channel was started in FD mode: every frame carries 64 data bytes
    /// (76-byte transfers), as the kernel sends them (K61 `hf_size_tx`).
    pub fd_channel: bool,
    /// One pad byte after the frame ([`Quirks::pad_out_by_one`]).
    pub pad_out_by_one: bool,
}

/// One `gs_host_frame`: the 12-byte header, 8 (classic) or 64 (FD) data
/// bytes and, from the device with HW_TIMESTAMP on, a `u32` µs timestamp.
///
/// Sizes (research §1.5): classic 20 B (24 with timestamp), FD 76 B (80).
/// The host never sends the timestamp.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct HostFrame {
    /// The host's tag, echoed back by the device; [`ECHO_ID_RX`] on a received frame.
    pub echo_id: u32,
    /// Linux `can_id`: id | EFF 0x8000_0000 | RTR 0x4000_0000 | ERR 0x2000_0000.
    pub can_id: u32,
    /// DLC code: 0-8 classic, 0-15 FD.
    pub can_dlc: u8,
    pub channel: u8,
    pub flags: FrameFlags,
    /// Data; the first [`HostFrame::len`] bytes are the payload.
    pub data: [u8; CANFD_MAX_LEN],
    /// Device time, µs, wrapping at 2^32 (present with HW_TIMESTAMP).
    pub timestamp_us: Option<u32>,
}

impl fmt::Debug for HostFrame {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HostFrame")
            .field("echo_id", &self.echo_id)
            .field("can_id", &format_args!("{:#010x}", self.can_id))
            .field("can_dlc", &self.can_dlc)
            .field("channel", &self.channel)
            .field("flags", &self.flags)
            .field("data", &self.payload())
            .field("timestamp_us", &self.timestamp_us)
            .finish()
    }
}

impl HostFrame {
    pub const HEADER_SIZE: usize = 12;
    /// Classic frame without timestamp.
    pub const CLASSIC_SIZE: usize = 20;
    /// FD frame without timestamp.
    pub const FD_SIZE: usize = 76;
    /// Largest transfer a device sends (FD with timestamp).
    pub const MAX_SIZE: usize = 80;

    /// Payload length in bytes: classic `min(dlc, 8)` (DLC 9-15 mean 8),
    /// FD the ISO 11898-1 table; 0 for a remote frame.
    pub fn len(&self) -> usize {
        if self.can_id & RTR_FLAG != 0 && !self.is_fd() {
            return 0;
        }
        if self.is_fd() {
            dlc_to_len(self.can_dlc & 0x0F).unwrap_or(CANFD_MAX_LEN)
        } else {
            usize::from(self.can_dlc).min(CAN_MAX_LEN)
        }
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    pub fn payload(&self) -> &[u8] {
        &self.data[..self.len()]
    }
    pub fn is_fd(&self) -> bool {
        self.flags.contains(FrameFlags::FD)
    }
    /// A frame received from the bus (not an echo of one of ours).
    pub fn is_rx(&self) -> bool {
        self.echo_id == ECHO_ID_RX
    }
    fn data_area(fd: bool) -> usize {
        if fd {
            CANFD_MAX_LEN
        } else {
            CAN_MAX_LEN
        }
    }

    /// Bytes a device sends for this frame kind: the full struct with
    /// timestamps, else the header and the payload (K61
    /// `gs_usb_get_minimum_rx_length`: echoes and remote frames carry no data).
    pub fn min_rx_len(fd: bool, timestamps: bool, payload_len: usize) -> usize {
        if timestamps {
            Self::HEADER_SIZE + Self::data_area(fd) + 4
        } else {
            Self::HEADER_SIZE + payload_len
        }
    }

    /// Decodes one device-to-host transfer. `timestamps`: the channel runs
    /// with HW_TIMESTAMP (then the struct must be complete and the `u32`
    /// after the data area is the timestamp). Unknown flag bits are dropped.
    ///
    /// Errors: [`DecodeError::Short`] below the minimum length of research
    /// §1.5; [`DecodeError::Dlc`] for a DLC above 15.
    pub fn decode(buf: &[u8], timestamps: bool) -> Result<HostFrame, DecodeError> {
        need(buf, Self::HEADER_SIZE)?;
        let echo_id = u32_at(buf, 0);
        let can_id = u32_at(buf, 4);
        let can_dlc = buf[8];
        let channel = buf[9];
        let flags = FrameFlags::from_bits_truncate(buf[10]);
        if can_dlc > 15 {
            return Err(DecodeError::Dlc(can_dlc));
        }
        let fd = flags.contains(FrameFlags::FD);
        let mut frame =
            HostFrame { echo_id, can_id, can_dlc, channel, flags, data: [0; CANFD_MAX_LEN], timestamp_us: None };
        let payload = if echo_id != ECHO_ID_RX { 0 } else { frame.len() };
        need(buf, Self::min_rx_len(fd, timestamps, payload))?;
        let area = Self::data_area(fd);
        let avail = buf.len().saturating_sub(Self::HEADER_SIZE).min(area);
        frame.data[..avail].copy_from_slice(&buf[Self::HEADER_SIZE..Self::HEADER_SIZE + avail]);
        if timestamps {
            frame.timestamp_us = Some(u32_at(buf, Self::HEADER_SIZE + area));
        }
        Ok(frame)
    }

    /// Size of the host-to-device transfer of this frame under `layout`.
    pub fn tx_len(&self, layout: TxLayout) -> usize {
        Self::HEADER_SIZE + Self::data_area(self.is_fd() || layout.fd_channel) + usize::from(layout.pad_out_by_one)
    }

    /// Encodes the frame for the OUT endpoint (no timestamp). Returns the
    /// number of bytes written. Errors: [`EncodeError::BufferTooSmall`].
    pub fn encode(&self, layout: TxLayout, out: &mut [u8]) -> Result<usize, EncodeError> {
        let n = self.tx_len(layout);
        let Some(out) = out.get_mut(..n) else {
            return Err(EncodeError::BufferTooSmall { got: out.len(), needed: n });
        };
        out.fill(0);
        out[0..4].copy_from_slice(&self.echo_id.to_le_bytes());
        out[4..8].copy_from_slice(&self.can_id.to_le_bytes());
        out[8] = self.can_dlc;
        out[9] = self.channel;
        out[10] = self.flags.bits();
        let len = self.len();
        out[12..12 + len].copy_from_slice(&self.data[..len]);
        Ok(n)
    }

    /// Encodes the frame as a device sends it (with the timestamp when
    /// `timestamp_us` is set): for emulators and mock devices.
    pub fn encode_device(&self, out: &mut [u8]) -> Result<usize, EncodeError> {
        let area = Self::data_area(self.is_fd());
        let n = Self::HEADER_SIZE + area + if self.timestamp_us.is_some() { 4 } else { 0 };
        let Some(out) = out.get_mut(..n) else {
            return Err(EncodeError::BufferTooSmall { got: out.len(), needed: n });
        };
        out.fill(0);
        out[0..4].copy_from_slice(&self.echo_id.to_le_bytes());
        out[4..8].copy_from_slice(&self.can_id.to_le_bytes());
        out[8] = self.can_dlc;
        out[9] = self.channel;
        out[10] = self.flags.bits();
        out[12..12 + area].copy_from_slice(&self.data[..area]);
        if let Some(ts) = self.timestamp_us {
            out[12 + area..].copy_from_slice(&ts.to_le_bytes());
        }
        Ok(n)
    }

    /// The host frame of a canx frame, to send on `channel` with `echo_id`.
    pub fn from_frame(frame: &Frame, channel: u8, echo_id: u32) -> HostFrame {
        let mut hf = HostFrame {
            echo_id,
            can_id: frame.key(),
            can_dlc: 0,
            channel,
            flags: FrameFlags::default(),
            data: [0; CANFD_MAX_LEN],
            timestamp_us: None,
        };
        let d = frame.data();
        hf.data[..d.len()].copy_from_slice(d);
        match frame {
            Frame::Can(f) => hf.can_dlc = f.dlc(),
            Frame::Fd(f) => {
                hf.can_dlc = f.dlc();
                hf.flags = FrameFlags::FD
                    .union(if f.brs() { FrameFlags::BRS } else { FrameFlags::empty() })
                    .union(if f.esi() { FrameFlags::ESI } else { FrameFlags::empty() });
            }
            Frame::Error(_) => hf.can_dlc = CAN_MAX_LEN as u8,
        }
        hf
    }

    /// The canx frame this host frame carries. An `ERR_FLAG` id gives an
    /// [`ErrorFrame`]; FD flags an [`FdFrame`]. Errors: [`FrameError`] for
    /// an id out of range (cannot happen for masked ids) or an FD DLC above 15.
    pub fn to_frame(&self) -> Result<Frame, FrameError> {
        if self.can_id & ERR_FLAG != 0 {
            let mut d = [0u8; CAN_MAX_LEN];
            d.copy_from_slice(&self.data[..CAN_MAX_LEN]);
            return Ok(Frame::Error(ErrorFrame::new(self.can_id & EFF_MASK, d)));
        }
        let extended = self.can_id & EFF_FLAG != 0;
        let raw = self.can_id & if extended { EFF_MASK } else { SFF_MASK };
        let id = make_id(raw, extended)?;
        if self.is_fd() {
            let len = dlc_to_len(self.can_dlc).ok_or(FrameError::InvalidDlc)?;
            let f = FdFrame::new(
                id,
                &self.data[..len],
                self.flags.contains(FrameFlags::BRS),
                self.flags.contains(FrameFlags::ESI),
            )?;
            return Ok(Frame::Fd(f));
        }
        if self.can_id & RTR_FLAG != 0 {
            return Ok(Frame::Can(CanFrame::new_remote(id, usize::from(self.can_dlc).min(CAN_MAX_LEN))?));
        }
        Ok(Frame::Can(CanFrame::new(id, self.payload())?))
    }

    /// A frame with DLC derived from `payload` (FD: padded up to a valid
    /// length by the DLC table). For building test frames and emulators.
    pub fn new_rx(channel: u8, can_id: u32, payload: &[u8], flags: FrameFlags) -> HostFrame {
        let fd = flags.contains(FrameFlags::FD);
        let area = Self::data_area(fd);
        let n = payload.len().min(area);
        let mut data = [0; CANFD_MAX_LEN];
        data[..n].copy_from_slice(&payload[..n]);
        let can_dlc = if fd { len_to_dlc(crate::frame::fd_padded_len(n).unwrap_or(64)).unwrap_or(15) } else { n as u8 };
        HostFrame { echo_id: ECHO_ID_RX, can_id, can_dlc, channel, flags, data, timestamp_us: None }
    }
}
