//! The N_PCI codec: single, first, consecutive and flow-control frames
//! (ISO 15765-2:2016; facts and sources in `docs/protocols/isotp.md`
//! §1, §2, §4). [`parse`] is strict and says why it refused a frame; [`encode`]
//! builds a frame's data with the address byte, padding and CAN FD length
//! rounding.

use core::fmt;

use crate::frame::fd_padded_len;

/// Largest 12-bit FF_DL; longer PDUs use the 32-bit escape (isotp.md §1).
pub const FF_DL_12BIT_MAX: u32 = 4095;
/// Padding byte used where padding is mandatory (CAN_DL > 8) and none was
/// configured, and the usual configured one (isotp.md §4: 0xCC).
pub const DEFAULT_PADDING: u8 = 0xCC;

/// FlowStatus of a flow-control frame (isotp.md §1).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FlowStatus {
    /// 0: ContinueToSend (CTS).
    ContinueToSend,
    /// 1: Wait.
    Wait,
    /// 2: Overflow (the receiver's buffer is too small for FF_DL).
    Overflow,
}

impl FlowStatus {
    /// The 4-bit FS value.
    pub const fn code(self) -> u8 {
        match self {
            FlowStatus::ContinueToSend => 0,
            FlowStatus::Wait => 1,
            FlowStatus::Overflow => 2,
        }
    }
}

/// N_PDU kinds (N_PCItype, isotp.md §1).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PduKind {
    SingleFrame,
    FirstFrame,
    ConsecutiveFrame,
    FlowControl,
}

/// One parsed N_PDU; data slices borrow the frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pdu<'a> {
    /// SF: the whole message (`data.len()` = SF_DL).
    Single { data: &'a [u8] },
    /// FF: FF_DL and the first bytes of the message.
    First { ff_dl: u32, data: &'a [u8] },
    /// CF: sequence number 0..=15 and the bytes after N_PCI (the last CF
    /// may carry padding after the message's end; the receiver cuts it).
    Consecutive { sn: u8, data: &'a [u8] },
    /// FC: FS, BS, raw STmin byte.
    FlowControl { fs: FlowStatus, bs: u8, stmin: u8 },
}

impl Pdu<'_> {
    /// The PDU's kind.
    pub fn kind(&self) -> PduKind {
        match self {
            Pdu::Single { .. } => PduKind::SingleFrame,
            Pdu::First { .. } => PduKind::FirstFrame,
            Pdu::Consecutive { .. } => PduKind::ConsecutiveFrame,
            Pdu::FlowControl { .. } => PduKind::FlowControl,
        }
    }
}

/// Why [`parse`] refused a frame. Each is an N_PDU the standard says to
/// ignore (isotp.md §1, §8; the receiver does not act on it).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PciError {
    /// No N_PCI byte.
    Empty,
    /// N_PCItype 4..=15 (reserved, isotp.md §1).
    ReservedType(u8),
    /// SF_DL = 0 in the escape form.
    SfDlZero,
    /// SF_DL larger than the frame carries.
    SfDlTooLong { sf_dl: u8, room: u8 },
    /// The escape form (low nibble 0) in a frame of CAN_DL <= 8 (isotp.md §1).
    SfEscapeInShortFrame,
    /// A frame of CAN_DL > 8 without the escape form (isotp.md §1: SF_DL in byte 2).
    SfMissingEscape,
    /// An FF shorter than 8 bytes (an FF fills TX_DL, isotp.md §1).
    FfShortFrame,
    /// FF_DL below FF_DLmin for this RX_DL (isotp.md §1).
    FfDlTooSmall { ff_dl: u32, min: u32 },
    /// The 32-bit FF_DL form with FF_DL <= 4095 (isotp.md §1: the short form shall be used).
    FfEscapeUnneeded { ff_dl: u32 },
    /// A CF carrying no data.
    CfEmpty,
    /// An FC shorter than 3 N_PCI bytes.
    FcTooShort,
    /// FS 3..=15 (reserved, isotp.md §1): the sender aborts with N_INVALID_FS.
    InvalidFlowStatus(u8),
}

impl fmt::Display for PciError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PciError::Empty => f.write_str("no N_PCI byte"),
            PciError::ReservedType(t) => write!(f, "reserved N_PCItype {t}"),
            PciError::SfDlZero => f.write_str("SF_DL 0"),
            PciError::SfDlTooLong { sf_dl, room } => write!(f, "SF_DL {sf_dl} but the frame holds {room}"),
            PciError::SfEscapeInShortFrame => f.write_str("SF_DL escape in a frame of 8 bytes or fewer"),
            PciError::SfMissingEscape => f.write_str("SF in a frame above 8 bytes without the SF_DL escape"),
            PciError::FfShortFrame => f.write_str("FF shorter than 8 bytes"),
            PciError::FfDlTooSmall { ff_dl, min } => write!(f, "FF_DL {ff_dl} below FF_DLmin {min}"),
            PciError::FfEscapeUnneeded { ff_dl } => write!(f, "32-bit FF_DL form for FF_DL {ff_dl} <= 4095"),
            PciError::CfEmpty => f.write_str("CF without data"),
            PciError::FcTooShort => f.write_str("FC shorter than 3 bytes"),
            PciError::InvalidFlowStatus(fs) => write!(f, "reserved FlowStatus {fs}"),
        }
    }
}

impl core::error::Error for PciError {}

/// Largest SF_DL in a frame of `tx_dl` bytes with `ae` address bytes (isotp.md §1).
pub const fn max_sf_dl(tx_dl: usize, ae: usize) -> usize {
    if tx_dl <= 8 {
        tx_dl.saturating_sub(1 + ae)
    } else {
        tx_dl.saturating_sub(2 + ae)
    }
}

/// FF_DLmin for RX_DL `rx_dl` and `ae` address bytes: one more than the
/// largest SF_DL (isotp.md §1).
pub const fn ff_dl_min(rx_dl: usize, ae: usize) -> u32 {
    (max_sf_dl(rx_dl, ae) + 1) as u32
}

/// Parses the N_PCI of a frame. `payload` is the frame's data after the
/// address byte, `ae` the number of address bytes before it (0 or 1), so
/// CAN_DL is `payload.len() + ae`.
pub fn parse(payload: &[u8], ae: usize) -> Result<Pdu<'_>, PciError> {
    let can_dl = payload.len() + ae;
    let &b0 = payload.first().ok_or(PciError::Empty)?;
    match b0 >> 4 {
        0 => {
            let low = b0 & 0x0F;
            if can_dl <= 8 {
                if low == 0 {
                    return Err(PciError::SfEscapeInShortFrame);
                }
                let room = payload.len() - 1;
                if usize::from(low) > room {
                    return Err(PciError::SfDlTooLong { sf_dl: low, room: room as u8 });
                }
                Ok(Pdu::Single { data: &payload[1..1 + usize::from(low)] })
            } else {
                if low != 0 {
                    return Err(PciError::SfMissingEscape);
                }
                let &sf_dl = payload.get(1).ok_or(PciError::SfMissingEscape)?;
                if sf_dl == 0 {
                    return Err(PciError::SfDlZero);
                }
                let room = payload.len() - 2;
                if usize::from(sf_dl) > room {
                    return Err(PciError::SfDlTooLong { sf_dl, room: room as u8 });
                }
                Ok(Pdu::Single { data: &payload[2..2 + usize::from(sf_dl)] })
            }
        }
        1 => {
            if can_dl < 8 || payload.len() < 2 {
                return Err(PciError::FfShortFrame);
            }
            let short = (u32::from(b0 & 0x0F) << 8) | u32::from(payload[1]);
            let (ff_dl, data) = if short != 0 {
                (short, &payload[2..])
            } else {
                let Some(b) = payload.get(2..6) else { return Err(PciError::FfShortFrame) };
                let ff_dl = u32::from_be_bytes([b[0], b[1], b[2], b[3]]);
                if ff_dl <= FF_DL_12BIT_MAX {
                    return Err(PciError::FfEscapeUnneeded { ff_dl });
                }
                (ff_dl, &payload[6..])
            };
            let min = ff_dl_min(can_dl, ae);
            if ff_dl < min {
                return Err(PciError::FfDlTooSmall { ff_dl, min });
            }
            Ok(Pdu::First { ff_dl, data })
        }
        2 => {
            if payload.len() < 2 {
                return Err(PciError::CfEmpty);
            }
            Ok(Pdu::Consecutive { sn: b0 & 0x0F, data: &payload[1..] })
        }
        3 => {
            if payload.len() < 3 {
                return Err(PciError::FcTooShort);
            }
            let fs = match b0 & 0x0F {
                0 => FlowStatus::ContinueToSend,
                1 => FlowStatus::Wait,
                2 => FlowStatus::Overflow,
                other => return Err(PciError::InvalidFlowStatus(other)),
            };
            Ok(Pdu::FlowControl { fs, bs: payload[1], stmin: payload[2] })
        }
        t => Err(PciError::ReservedType(t)),
    }
}

/// Why [`encode`] cannot build a frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum EncodeError {
    /// The PDU does not fit `tx_dl` (an SF too long, an FF/CF chunk too long).
    TooLong,
    /// SF_DL 0 or FF_DL not above the largest SF_DL.
    BadLength,
}

impl fmt::Display for EncodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EncodeError::TooLong => f.write_str("N_PDU does not fit TX_DL"),
            EncodeError::BadLength => f.write_str("invalid SF_DL or FF_DL"),
        }
    }
}

impl core::error::Error for EncodeError {}

/// The CAN_DL of a frame whose PDU takes `raw` bytes: with `padding`
/// frames of 8 bytes or fewer are padded to 8, without it they keep their
/// length (CAN frame data optimisation, isotp.md §4); above 8 the length is
/// rounded up to the next CAN FD length, always padded (isotp.md §4).
pub const fn padded_len(raw: usize, padding: bool) -> usize {
    if raw <= 8 {
        if padding {
            8
        } else {
            raw
        }
    } else {
        match fd_padded_len(raw) {
            Some(n) => n,
            None => 64,
        }
    }
}

/// Writes the frame data for `pdu` into `out` and returns CAN_DL.
/// `address_byte` goes first (extended/mixed). `tx_dl` bounds the frame
/// (8 for classic CAN, 8..=64 for FD). An FF is written as given (the
/// caller fills TX_DL); an SF uses the 4-bit form when it fits 8 bytes and
/// the escape otherwise. `padding` is the fill byte (`None`: data
/// optimisation up to 8 bytes, 0xCC above).
pub fn encode(
    pdu: &Pdu<'_>,
    address_byte: Option<u8>,
    tx_dl: usize,
    padding: Option<u8>,
    out: &mut [u8; 64],
) -> Result<usize, EncodeError> {
    let ae = usize::from(address_byte.is_some());
    let tx_dl = tx_dl.min(64);
    if let Some(b) = address_byte {
        out[0] = b;
    }
    let p = &mut out[ae..];
    let raw = match *pdu {
        Pdu::Single { data } => {
            let n = data.len();
            if n == 0 {
                return Err(EncodeError::BadLength);
            }
            if ae + 1 + n <= 8 {
                p[0] = n as u8;
                p[1..1 + n].copy_from_slice(data);
                ae + 1 + n
            } else if ae + 2 + n <= tx_dl && tx_dl > 8 {
                p[0] = 0;
                p[1] = n as u8;
                p[2..2 + n].copy_from_slice(data);
                ae + 2 + n
            } else {
                return Err(EncodeError::TooLong);
            }
        }
        Pdu::First { ff_dl, data } => {
            let head = if ff_dl <= FF_DL_12BIT_MAX {
                if ff_dl as usize <= max_sf_dl(tx_dl, ae) {
                    return Err(EncodeError::BadLength);
                }
                p[0] = 0x10 | (ff_dl >> 8) as u8;
                p[1] = ff_dl as u8;
                2
            } else {
                p[0] = 0x10;
                p[1] = 0;
                p[2..6].copy_from_slice(&ff_dl.to_be_bytes());
                6
            };
            if ae + head + data.len() > tx_dl {
                return Err(EncodeError::TooLong);
            }
            p[head..head + data.len()].copy_from_slice(data);
            ae + head + data.len()
        }
        Pdu::Consecutive { sn, data } => {
            if ae + 1 + data.len() > tx_dl {
                return Err(EncodeError::TooLong);
            }
            p[0] = 0x20 | (sn & 0x0F);
            p[1..1 + data.len()].copy_from_slice(data);
            ae + 1 + data.len()
        }
        Pdu::FlowControl { fs, bs, stmin } => {
            p[0] = 0x30 | fs.code();
            p[1] = bs;
            p[2] = stmin;
            ae + 3
        }
    };
    let len = padded_len(raw, padding.is_some());
    if len > tx_dl.max(8) {
        return Err(EncodeError::TooLong);
    }
    out[raw..len].fill(padding.unwrap_or(DEFAULT_PADDING));
    Ok(len)
}

/// Reads a raw STmin byte (isotp.md §2): 0x00..=0x7F milliseconds,
/// 0xF1..=0xF9 100..=900 µs; every reserved value is read as 0x7F
/// (127 ms), as the standard tells a sender to do (and as Linux does).
/// Returns microseconds.
pub const fn stmin_micros(raw: u8) -> u64 {
    match raw {
        0x00..=0x7F => raw as u64 * 1000,
        0xF1..=0xF9 => (raw - 0xF0) as u64 * 100,
        _ => 127_000,
    }
}
