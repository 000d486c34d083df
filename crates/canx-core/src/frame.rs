//! CAN frames: classic (0-8 bytes, data or remote), CAN FD (0-64 bytes) and
//! error frames.
//!
//! Identifiers are `embedded_can`'s [`StandardId`] / [`ExtendedId`] / [`Id`]:
//! the kind of an identifier is always explicit and never inferred from its
//! value (0x123 may be standard or extended). Constructors validate and return
//! a [`FrameError`]; a constructed frame is always valid.
//!
//! Sources: ISO 11898-1:2015 (DLC to length table for FD), Linux
//! `include/uapi/linux/can.h` and `can/error.h` (flag bits, error classes).

use core::fmt;

pub use embedded_can::{ExtendedId, Id, StandardId};

/// Largest payload of a classic frame, bytes.
pub const CAN_MAX_LEN: usize = 8;
/// Largest payload of a CAN FD frame, bytes.
pub const CANFD_MAX_LEN: usize = 64;

/// Flag bits of the 32-bit "key" of a frame, laid out as Linux `can_id`
/// (`linux/can.h`): the key is what filters compare against.
pub const EFF_FLAG: u32 = 0x8000_0000;
/// Remote transmission request flag of the key.
pub const RTR_FLAG: u32 = 0x4000_0000;
/// Error frame flag of the key.
pub const ERR_FLAG: u32 = 0x2000_0000;
/// Mask of a standard (11-bit) identifier.
pub const SFF_MASK: u32 = 0x0000_07FF;
/// Mask of an extended (29-bit) identifier.
pub const EFF_MASK: u32 = 0x1FFF_FFFF;

/// Why a frame could not be built.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FrameError {
    /// The identifier does not fit the identifier kind (11 or 29 bits).
    IdOutOfRange,
    /// More than 8 data bytes in a classic frame.
    DataTooLong,
    /// A remote frame asked for more than 8 bytes.
    RemoteLengthTooLong,
    /// An FD payload length that is not one of 0-8, 12, 16, 20, 24, 32, 48, 64.
    InvalidFdLength,
    /// A DLC code above 15 (FD) or above 8 where a classic length is needed.
    InvalidDlc,
}

impl fmt::Display for FrameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            FrameError::IdOutOfRange => "id out of range",
            FrameError::DataTooLong => "data length must be 0-8",
            FrameError::RemoteLengthTooLong => "remote frame length must be 0-8",
            FrameError::InvalidFdLength => "CAN FD data length must be 0-8, 12, 16, 20, 24, 32, 48 or 64",
            FrameError::InvalidDlc => "invalid DLC",
        })
    }
}

impl core::error::Error for FrameError {}

/// Builds an [`Id`] from a raw value and an explicit kind.
pub fn make_id(raw: u32, extended: bool) -> Result<Id, FrameError> {
    if extended {
        ExtendedId::new(raw).map(Id::Extended).ok_or(FrameError::IdOutOfRange)
    } else {
        u16::try_from(raw).ok().and_then(StandardId::new).map(Id::Standard).ok_or(FrameError::IdOutOfRange)
    }
}

/// The numeric value of an identifier (11 or 29 bits).
pub fn id_raw(id: Id) -> u32 {
    match id {
        Id::Standard(s) => u32::from(s.as_raw()),
        Id::Extended(e) => e.as_raw(),
    }
}

/// `true` for a 29-bit identifier.
pub fn id_is_extended(id: Id) -> bool {
    matches!(id, Id::Extended(_))
}

/// Key of an identifier as Linux `can_id`: raw id plus `EFF_FLAG` if extended.
pub fn id_key(id: Id) -> u32 {
    match id {
        Id::Standard(s) => u32::from(s.as_raw()),
        Id::Extended(e) => e.as_raw() | EFF_FLAG,
    }
}

/// Payload length of an FD DLC code (ISO 11898-1 table 5); `None` above 15.
pub const fn dlc_to_len(dlc: u8) -> Option<usize> {
    Some(match dlc {
        0..=8 => dlc as usize,
        9 => 12,
        10 => 16,
        11 => 20,
        12 => 24,
        13 => 32,
        14 => 48,
        15 => 64,
        _ => return None,
    })
}

/// DLC code of a valid FD payload length; `None` for any other length.
pub const fn len_to_dlc(len: usize) -> Option<u8> {
    Some(match len {
        0..=8 => len as u8,
        12 => 9,
        16 => 10,
        20 => 11,
        24 => 12,
        32 => 13,
        48 => 14,
        64 => 15,
        _ => return None,
    })
}

/// The smallest valid FD length that holds `len` bytes (the padding target);
/// `None` above 64.
pub const fn fd_padded_len(len: usize) -> Option<usize> {
    Some(match len {
        0..=8 => len,
        9..=12 => 12,
        13..=16 => 16,
        17..=20 => 20,
        21..=24 => 24,
        25..=32 => 32,
        33..=48 => 48,
        49..=64 => 64,
        _ => return None,
    })
}

/// A classic CAN 2.0 frame: a data frame of 0-8 bytes or a remote frame.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct CanFrame {
    id: Id,
    len: u8,
    remote: bool,
    data: [u8; CAN_MAX_LEN],
}

impl CanFrame {
    /// A data frame. Errors: [`FrameError::DataTooLong`] above 8 bytes.
    pub fn new(id: impl Into<Id>, data: &[u8]) -> Result<Self, FrameError> {
        if data.len() > CAN_MAX_LEN {
            return Err(FrameError::DataTooLong);
        }
        let mut buf = [0u8; CAN_MAX_LEN];
        buf[..data.len()].copy_from_slice(data);
        Ok(CanFrame { id: id.into(), len: data.len() as u8, remote: false, data: buf })
    }

    /// A data frame of the first `min(data.len(), 8)` bytes: infallible, for
    /// encoders whose payload is at most 8 bytes by construction.
    pub fn new_truncated(id: impl Into<Id>, data: &[u8]) -> Self {
        let n = data.len().min(CAN_MAX_LEN);
        let mut buf = [0u8; CAN_MAX_LEN];
        buf[..n].copy_from_slice(&data[..n]);
        CanFrame { id: id.into(), len: n as u8, remote: false, data: buf }
    }

    /// A remote frame asking for `len` bytes (0-8). Errors:
    /// [`FrameError::RemoteLengthTooLong`].
    pub fn new_remote(id: impl Into<Id>, len: usize) -> Result<Self, FrameError> {
        if len > CAN_MAX_LEN {
            return Err(FrameError::RemoteLengthTooLong);
        }
        Ok(CanFrame { id: id.into(), len: len as u8, remote: true, data: [0; CAN_MAX_LEN] })
    }

    pub fn id(&self) -> Id {
        self.id
    }
    pub fn raw_id(&self) -> u32 {
        id_raw(self.id)
    }
    pub fn is_extended(&self) -> bool {
        id_is_extended(self.id)
    }
    pub fn is_remote(&self) -> bool {
        self.remote
    }
    /// The payload; empty for a remote frame.
    pub fn data(&self) -> &[u8] {
        if self.remote {
            &[]
        } else {
            &self.data[..self.len as usize]
        }
    }
    /// Data length code: the payload length, or the requested length of a remote frame.
    pub fn dlc(&self) -> u8 {
        self.len
    }
    /// Filter key, laid out as Linux `can_id` (id + EFF/RTR flags).
    pub fn key(&self) -> u32 {
        id_key(self.id) | if self.remote { RTR_FLAG } else { 0 }
    }
}

impl fmt::Debug for CanFrame {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_id(f, self.id)?;
        if self.remote {
            write!(f, "#R{}", self.len)
        } else {
            f.write_str("#")?;
            write_hex(f, self.data())
        }
    }
}

impl embedded_can::Frame for CanFrame {
    fn new(id: impl Into<Id>, data: &[u8]) -> Option<Self> {
        CanFrame::new(id, data).ok()
    }
    fn new_remote(id: impl Into<Id>, dlc: usize) -> Option<Self> {
        CanFrame::new_remote(id, dlc).ok()
    }
    fn is_extended(&self) -> bool {
        CanFrame::is_extended(self)
    }
    fn is_remote_frame(&self) -> bool {
        self.remote
    }
    fn id(&self) -> Id {
        self.id
    }
    fn dlc(&self) -> usize {
        self.len as usize
    }
    fn data(&self) -> &[u8] {
        CanFrame::data(self)
    }
}

/// A CAN FD frame of 0-64 bytes (valid FD lengths only).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct FdFrame {
    id: Id,
    len: u8,
    brs: bool,
    esi: bool,
    data: [u8; CANFD_MAX_LEN],
}

impl FdFrame {
    /// An FD frame. `brs`: bit rate switch; `esi`: error state indicator.
    /// Errors: [`FrameError::InvalidFdLength`] for lengths that no DLC encodes
    /// (use [`fd_padded_len`] to pad).
    pub fn new(id: impl Into<Id>, data: &[u8], brs: bool, esi: bool) -> Result<Self, FrameError> {
        if len_to_dlc(data.len()).is_none() {
            return Err(FrameError::InvalidFdLength);
        }
        let mut buf = [0u8; CANFD_MAX_LEN];
        buf[..data.len()].copy_from_slice(data);
        Ok(FdFrame { id: id.into(), len: data.len() as u8, brs, esi, data: buf })
    }

    pub fn id(&self) -> Id {
        self.id
    }
    pub fn raw_id(&self) -> u32 {
        id_raw(self.id)
    }
    pub fn is_extended(&self) -> bool {
        id_is_extended(self.id)
    }
    pub fn data(&self) -> &[u8] {
        &self.data[..self.len as usize]
    }
    /// DLC code 0-15.
    pub fn dlc(&self) -> u8 {
        // len is always a valid FD length (checked in `new`).
        len_to_dlc(self.len as usize).unwrap_or(15)
    }
    pub fn brs(&self) -> bool {
        self.brs
    }
    pub fn esi(&self) -> bool {
        self.esi
    }
    pub fn key(&self) -> u32 {
        id_key(self.id)
    }
}

impl fmt::Debug for FdFrame {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_id(f, self.id)?;
        write!(f, "##{:X}", (self.brs as u8) | ((self.esi as u8) << 1))?;
        write_hex(f, self.data())
    }
}

/// Error classes of an error frame (`linux/can/error.h`, `CAN_ERR_*`).
pub mod err {
    pub const TX_TIMEOUT: u32 = 0x001;
    pub const LOSTARB: u32 = 0x002;
    pub const CRTL: u32 = 0x004;
    pub const PROT: u32 = 0x008;
    pub const TRX: u32 = 0x010;
    pub const ACK: u32 = 0x020;
    pub const BUSOFF: u32 = 0x040;
    pub const BUSERROR: u32 = 0x080;
    pub const RESTARTED: u32 = 0x100;
    pub const CNT: u32 = 0x200;
    /// `data[1]` bits of the controller class.
    pub const CRTL_RX_WARNING: u8 = 0x04;
    pub const CRTL_TX_WARNING: u8 = 0x08;
    pub const CRTL_RX_PASSIVE: u8 = 0x10;
    pub const CRTL_TX_PASSIVE: u8 = 0x20;
    pub const CRTL_ACTIVE: u8 = 0x40;
}

/// The fault-confinement state of a CAN controller (ISO 11898-1 12.1.4;
/// canio's `BusState`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum BusState {
    ErrorActive,
    ErrorWarning,
    ErrorPassive,
    BusOff,
}

impl BusState {
    /// The state implied by the error counters (thresholds as in the
    /// CircuitPython ports: > 127 passive, > 96 warning; bus-off at TEC > 255).
    pub fn from_counters(tec: u16, rec: u16) -> BusState {
        let worst = tec.max(rec);
        if tec > 255 {
            BusState::BusOff
        } else if worst > 127 {
            BusState::ErrorPassive
        } else if worst > 96 {
            BusState::ErrorWarning
        } else {
            BusState::ErrorActive
        }
    }
}

/// An error frame as reported by a controller (`CAN_ERR_FLAG` frames in
/// SocketCAN): an error class bit set and 8 bytes of detail.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct ErrorFrame {
    class: u32,
    data: [u8; CAN_MAX_LEN],
}

impl ErrorFrame {
    /// `class` is the 29-bit `CAN_ERR_*` mask; `data` the detail bytes.
    pub fn new(class: u32, data: [u8; CAN_MAX_LEN]) -> Self {
        ErrorFrame { class: class & EFF_MASK, data }
    }
    /// An error frame that reports a state with the given counters (as
    /// `CAN_ERR_CRTL`/`CAN_ERR_BUSOFF` + `CAN_ERR_CNT` do).
    pub fn from_state(state: BusState, tec: u8, rec: u8) -> Self {
        let mut data = [0u8; CAN_MAX_LEN];
        data[6] = tec;
        data[7] = rec;
        let class = match state {
            BusState::BusOff => err::BUSOFF,
            BusState::ErrorActive => {
                data[1] = err::CRTL_ACTIVE;
                err::CRTL
            }
            BusState::ErrorWarning => {
                data[1] = err::CRTL_TX_WARNING | err::CRTL_RX_WARNING;
                err::CRTL
            }
            BusState::ErrorPassive => {
                data[1] = err::CRTL_TX_PASSIVE | err::CRTL_RX_PASSIVE;
                err::CRTL
            }
        };
        ErrorFrame::new(class | err::CNT, data)
    }
    pub fn class(&self) -> u32 {
        self.class
    }
    pub fn data(&self) -> &[u8] {
        &self.data
    }
    /// Transmit error count, if the frame carries counters (`CAN_ERR_CNT`).
    pub fn tx_error_count(&self) -> Option<u8> {
        (self.class & err::CNT != 0).then_some(self.data[6])
    }
    /// Receive error count, if the frame carries counters.
    pub fn rx_error_count(&self) -> Option<u8> {
        (self.class & err::CNT != 0).then_some(self.data[7])
    }
    /// The bus state this frame reports, if it reports one.
    pub fn bus_state(&self) -> Option<BusState> {
        if self.class & err::BUSOFF != 0 {
            return Some(BusState::BusOff);
        }
        if self.class & err::RESTARTED != 0 {
            return Some(BusState::ErrorActive);
        }
        if self.class & err::CRTL != 0 {
            let d = self.data[1];
            if d & (err::CRTL_RX_PASSIVE | err::CRTL_TX_PASSIVE) != 0 {
                return Some(BusState::ErrorPassive);
            }
            if d & (err::CRTL_RX_WARNING | err::CRTL_TX_WARNING) != 0 {
                return Some(BusState::ErrorWarning);
            }
            if d & err::CRTL_ACTIVE != 0 {
                return Some(BusState::ErrorActive);
            }
        }
        None
    }
    pub fn key(&self) -> u32 {
        self.class | ERR_FLAG
    }
}

impl fmt::Debug for ErrorFrame {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:08X}#", self.key())?;
        write_hex(f, &self.data)
    }
}

/// Any frame on the bus.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum Frame {
    Can(CanFrame),
    Fd(FdFrame),
    Error(ErrorFrame),
}

impl Frame {
    /// The identifier; `None` for error frames.
    pub fn id(&self) -> Option<Id> {
        match self {
            Frame::Can(f) => Some(f.id()),
            Frame::Fd(f) => Some(f.id()),
            Frame::Error(_) => None,
        }
    }
    pub fn data(&self) -> &[u8] {
        match self {
            Frame::Can(f) => f.data(),
            Frame::Fd(f) => f.data(),
            Frame::Error(f) => f.data(),
        }
    }
    /// Filter key, laid out as Linux `can_id` (id, EFF, RTR and ERR flags).
    pub fn key(&self) -> u32 {
        match self {
            Frame::Can(f) => f.key(),
            Frame::Fd(f) => f.key(),
            Frame::Error(f) => f.key(),
        }
    }
    pub fn is_error(&self) -> bool {
        matches!(self, Frame::Error(_))
    }
}

impl From<CanFrame> for Frame {
    fn from(f: CanFrame) -> Self {
        Frame::Can(f)
    }
}
impl From<FdFrame> for Frame {
    fn from(f: FdFrame) -> Self {
        Frame::Fd(f)
    }
}
impl From<ErrorFrame> for Frame {
    fn from(f: ErrorFrame) -> Self {
        Frame::Error(f)
    }
}

fn write_id(f: &mut fmt::Formatter<'_>, id: Id) -> fmt::Result {
    match id {
        Id::Standard(s) => write!(f, "{:03X}", s.as_raw()),
        Id::Extended(e) => write!(f, "{:08X}", e.as_raw()),
    }
}

fn write_hex(f: &mut fmt::Formatter<'_>, data: &[u8]) -> fmt::Result {
    for b in data {
        write!(f, "{:02X}", b)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn sid(v: u16) -> StandardId {
        StandardId::new(v).unwrap()
    }

    #[test]
    fn classic_validation() {
        let f = CanFrame::new(sid(0x123), &[1, 2, 3]).unwrap();
        assert_eq!(f.data(), &[1, 2, 3]);
        assert_eq!(f.dlc(), 3);
        assert!(!f.is_extended());
        assert_eq!(f.key(), 0x123);
        assert_eq!(CanFrame::new(sid(1), &[0; 9]), Err(FrameError::DataTooLong));
        assert_eq!(CanFrame::new_truncated(sid(1), &[1, 2, 3]), CanFrame::new(sid(1), &[1, 2, 3]).unwrap());
        assert_eq!(CanFrame::new_truncated(sid(1), &[7; 12]).data(), &[7; 8]);
        let r = CanFrame::new_remote(sid(0x7FF), 8).unwrap();
        assert!(r.is_remote());
        assert_eq!(r.data(), &[] as &[u8]);
        assert_eq!(r.dlc(), 8);
        assert_eq!(r.key(), 0x7FF | RTR_FLAG);
        assert_eq!(CanFrame::new_remote(sid(1), 9), Err(FrameError::RemoteLengthTooLong));
    }

    #[test]
    fn id_kind_is_never_inferred() {
        let s = make_id(0x123, false).unwrap();
        let e = make_id(0x123, true).unwrap();
        assert_ne!(s, e);
        assert_eq!(id_key(e), 0x123 | EFF_FLAG);
        assert_eq!(make_id(0x800, false), Err(FrameError::IdOutOfRange));
        assert_eq!(make_id(0x2000_0000, true), Err(FrameError::IdOutOfRange));
        assert!(make_id(0x1FFF_FFFF, true).is_ok());
    }

    #[test]
    fn fd_lengths() {
        for len in 0..=70usize {
            let ok = FdFrame::new(sid(1), &[0xAA; 70][..len], true, false);
            assert_eq!(ok.is_ok(), len_to_dlc(len).is_some(), "len {len}");
        }
        let f = FdFrame::new(ExtendedId::new(0x1234_5678).unwrap(), &[7; 64], true, true).unwrap();
        assert_eq!(f.dlc(), 15);
        assert!(f.brs() && f.esi());
        assert_eq!(fd_padded_len(9), Some(12));
        assert_eq!(fd_padded_len(65), None);
        for dlc in 0..=15u8 {
            assert_eq!(len_to_dlc(dlc_to_len(dlc).unwrap()), Some(dlc));
        }
        assert_eq!(dlc_to_len(16), None);
    }

    #[test]
    fn error_frame_state() {
        for st in [BusState::ErrorActive, BusState::ErrorWarning, BusState::ErrorPassive, BusState::BusOff] {
            let e = ErrorFrame::from_state(st, 100, 5);
            assert_eq!(e.bus_state(), Some(st));
            assert_eq!(e.tx_error_count(), Some(100));
            assert_eq!(e.rx_error_count(), Some(5));
        }
        assert_eq!(BusState::from_counters(0, 0), BusState::ErrorActive);
        assert_eq!(BusState::from_counters(97, 0), BusState::ErrorWarning);
        assert_eq!(BusState::from_counters(0, 128), BusState::ErrorPassive);
        assert_eq!(BusState::from_counters(256, 0), BusState::BusOff);
    }

    #[test]
    fn embedded_can_frame_trait() {
        use embedded_can::Frame as _;
        let f = <CanFrame as embedded_can::Frame>::new(sid(5), &[1, 2]).unwrap();
        assert_eq!(f.dlc(), 2);
        assert!(!f.is_remote_frame());
        assert!(<CanFrame as embedded_can::Frame>::new(sid(5), &[0; 9]).is_none());
    }

    proptest! {
        #[test]
        fn classic_roundtrip(raw in 0u32..=EFF_MASK, ext in any::<bool>(), data in proptest::collection::vec(any::<u8>(), 0..=12)) {
            match make_id(raw, ext) {
                Ok(id) => {
                    let r = CanFrame::new(id, &data);
                    prop_assert_eq!(r.is_ok(), data.len() <= 8);
                    if let Ok(f) = r {
                        prop_assert_eq!(f.data(), &data[..]);
                        prop_assert_eq!(f.raw_id(), raw);
                        prop_assert_eq!(f.is_extended(), ext);
                    }
                }
                Err(e) => prop_assert!(!ext || raw > EFF_MASK || e == FrameError::IdOutOfRange),
            }
        }

        #[test]
        fn fd_roundtrip(data in proptest::collection::vec(any::<u8>(), 0..=64)) {
            let padded = fd_padded_len(data.len()).unwrap();
            let mut buf = data.clone();
            buf.resize(padded, 0);
            let f = FdFrame::new(sid(0x42), &buf, false, false).unwrap();
            prop_assert_eq!(dlc_to_len(f.dlc()), Some(padded));
            prop_assert_eq!(&f.data()[..data.len()], &data[..]);
        }
    }
}
