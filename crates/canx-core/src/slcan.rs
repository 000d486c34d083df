//! slcan (Lawicel serial-line CAN): the ASCII protocol of CANable, CANtact,
//! USBtin and Lawicel CAN232/CANUSB adapters and of the Linux `slcan` line
//! discipline. Sans-IO and no heap: bytes in, [`Line`]s out; frames and
//! commands out as bytes. Nothing here panics on any input.
//!
//! Sources (details in `docs/research/usb-adapters.md` §3):
//! - Lawicel CAN232/CANUSB command set (`Sn`, `sxxyy`, `O`, `L`, `C`, `Zn`,
//!   replies `\r` = OK, `\a` = error);
//! - USBtin firmware `frontend.c` (T. Fischl): `z\r` after `t`/`r`, `Z\r`
//!   after `T`/`R`, `sxxyyzz` = MCP2515 CNF1-3;
//! - CANable 1/2 firmware (`normaldotcom/canable-fw`, `canable2-fw`,
//!   README): no replies at all, `S7` = 750 kbit/s, `S9` = 83.3 kbit/s,
//!   `M0`/`M1` normal/silent mode, CAN FD lines `d`/`D` (no BRS), `b`/`B`
//!   (BRS) with a hex DLC 0-F, `Y1`/`Y2`/`Y4`/`Y5` data bit rate;
//! - Linux 6.1 `drivers/net/can/slcan/slcan-core.c`: `\r` or `\a` ends a
//!   line; `tTrR` frames with a DLC digit `0`-`8` (a 4-hex timestamp after
//!   the data is ignored); `s` state lines (`sb256256`: state `a|w|p|b`,
//!   3-digit decimal RX then TX error counters) and `e` error lines
//!   (`e3bcO`: count digit, then one letter per error) become error frames;
//!   the kernel writes uppercase hex and never replies.
//!
//! Receive path: [`Decoder::feed`] splits bytes into lines ([`LineSplitter`]:
//! `\r` or `\a` ends a line; `\n` and NUL are skipped, so `\r\n` framing
//! works; an overlong line is dropped whole) and classifies each one
//! ([`parse_line`]). Every line lands in exactly one counter of
//! [`DecoderStats`]; garbage never costs the next good line.
//!
//! Transmit path: [`encode_frame`] (uppercase hex, as the kernel writes) and
//! [`Command::encode`]; [`open_commands`] gives the open sequence of a
//! [`Dialect`] (`C`, bit rate, data bit rate, timestamps, mode, `O`/`L`).

use core::fmt;

use crate::frame::id_raw;
use crate::frame::{dlc_to_len, err, len_to_dlc, make_id, BusState, CanFrame, ErrorFrame, FdFrame, Frame};

/// Longest valid line without its terminator: `B` + 8 id digits + DLC +
/// 128 data digits + 4 timestamp digits.
pub const MAX_LINE: usize = 1 + 8 + 1 + 128 + 4;

/// Bytes a [`LineSplitter`] keeps of one line; longer lines are dropped
/// whole (counted as overlong). Larger than [`MAX_LINE`] so that long
/// version strings (CANable 2's `V` reply) are still read.
pub const LINE_CAPACITY: usize = 192;

/// Lawicel timestamps count milliseconds modulo 60000 (`0000`..`EA5F`).
pub const TIMESTAMP_PERIOD_MS: u32 = 60_000;

/// What an adapter answers to commands and frames.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Ack {
    /// Nothing (CANable 1/2 firmware, the Linux line discipline).
    None,
    /// `\r` (OK) or `\a` (error) after every command and every frame
    /// (Lawicel CAN232/CANUSB documentation, can-utils `slcanpty`).
    Cr,
    /// `\r`/`\a` after commands, `z\r` after `t`/`r` and `Z\r` after
    /// `T`/`R` (USBtin firmware; real CANUSB units).
    CrZ,
}

/// How the adapter is opened listen-only (canio `silent`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ListenOnly {
    /// `L` instead of `O` (Lawicel, USBtin, Linux).
    L,
    /// `M1` before `O` (`M0` for normal mode): CANable 1/2 firmware.
    M1,
}

/// An slcan dialect: what one family of adapters understands and answers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Dialect {
    /// The name used in channel options (`dialect=canable`).
    pub name: &'static str,
    pub ack: Ack,
    /// Nominal bit rates with an `S` code: `(bit/s, digit)`.
    pub bitrates: &'static [(u32, u8)],
    /// CAN FD lines `d`/`D`/`b`/`B` (CANable 2).
    pub fd: bool,
    /// FD data bit rates with a `Y` code: `(bit/s, digit)`.
    pub data_bitrates: &'static [(u32, u8)],
    pub listen_only: ListenOnly,
    /// `Z1`/`Z0` switch 4-hex millisecond receive timestamps.
    pub timestamps: bool,
    /// Hex digits of the custom bit timing command `s` (4: SJA1000
    /// BTR0/BTR1, Lawicel; 6: MCP2515 CNF1-3, USBtin; 0: none).
    pub btr_digits: u8,
}

const LAWICEL_RATES: &[(u32, u8)] = &[
    (10_000, 0),
    (20_000, 1),
    (50_000, 2),
    (100_000, 3),
    (125_000, 4),
    (250_000, 5),
    (500_000, 6),
    (800_000, 7),
    (1_000_000, 8),
];

const CANABLE_RATES: &[(u32, u8)] = &[
    (10_000, 0),
    (20_000, 1),
    (50_000, 2),
    (100_000, 3),
    (125_000, 4),
    (250_000, 5),
    (500_000, 6),
    (750_000, 7),
    (1_000_000, 8),
    (83_333, 9),
    (83_300, 9),
];

const CANABLE_DATA_RATES: &[(u32, u8)] = &[(1_000_000, 1), (2_000_000, 2), (4_000_000, 4), (5_000_000, 5)];

impl Dialect {
    /// CANable 1.0 and 2.0 slcan firmware (normaldotcom): no replies,
    /// `S7` = 750 kbit/s, `S9` = 83.3 kbit/s, CAN FD, `M1` = silent.
    pub const CANABLE: Dialect = Dialect {
        name: "canable",
        ack: Ack::None,
        bitrates: CANABLE_RATES,
        fd: true,
        data_bitrates: CANABLE_DATA_RATES,
        listen_only: ListenOnly::M1,
        timestamps: false,
        btr_digits: 0,
    };
    /// Lawicel CAN232/CANUSB: `\r`/`\a` replies, `S7` = 800 kbit/s,
    /// `sxxyy` (SJA1000 BTR0/BTR1), `L`, `Z1` timestamps.
    pub const LAWICEL: Dialect = Dialect {
        name: "lawicel",
        ack: Ack::Cr,
        bitrates: LAWICEL_RATES,
        fd: false,
        data_bitrates: &[],
        listen_only: ListenOnly::L,
        timestamps: true,
        btr_digits: 4,
    };
    /// USBtin: as Lawicel, but `z\r`/`Z\r` after frames and `sxxyyzz`
    /// (MCP2515 CNF1-3).
    pub const USBTIN: Dialect = Dialect {
        name: "usbtin",
        ack: Ack::CrZ,
        bitrates: LAWICEL_RATES,
        fd: false,
        data_bitrates: &[],
        listen_only: ListenOnly::L,
        timestamps: true,
        btr_digits: 6,
    };
    /// The Linux `slcan` line discipline (or any peer that never replies
    /// and uses the Lawicel bit rate table): `S7` = 800 kbit/s, `L`.
    pub const KERNEL: Dialect = Dialect {
        name: "kernel",
        ack: Ack::None,
        bitrates: LAWICEL_RATES,
        fd: false,
        data_bitrates: &[],
        listen_only: ListenOnly::L,
        timestamps: false,
        btr_digits: 4,
    };

    /// Every named dialect.
    pub const ALL: [Dialect; 4] = [Dialect::CANABLE, Dialect::LAWICEL, Dialect::USBTIN, Dialect::KERNEL];

    /// The dialect called `name` (ASCII case-insensitive; `linux` is `kernel`).
    pub fn from_name(name: &str) -> Option<Dialect> {
        if name.eq_ignore_ascii_case("linux") {
            return Some(Dialect::KERNEL);
        }
        Dialect::ALL.into_iter().find(|d| d.name.eq_ignore_ascii_case(name))
    }

    /// The `S` digit of `bitrate` (bit/s), if the dialect has one.
    pub fn bitrate_code(&self, bitrate: u32) -> Option<u8> {
        self.bitrates.iter().find(|(r, _)| *r == bitrate).map(|(_, c)| *c)
    }

    /// The `Y` digit of a CAN FD data bit rate (bit/s), if the dialect has one.
    pub fn data_bitrate_code(&self, bitrate: u32) -> Option<u8> {
        self.data_bitrates.iter().find(|(r, _)| *r == bitrate).map(|(_, c)| *c)
    }
}

/// A command to the adapter. [`Command::encode`] writes it with its `\r`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Command {
    /// `C`: close the channel.
    Close,
    /// `O`: open the channel.
    Open,
    /// `L`: open listen-only.
    ListenOnly,
    /// `M0`/`M1` (CANable): normal/silent mode, before `O`.
    Mode { silent: bool },
    /// `S<digit>`: a nominal bit rate from the dialect's table.
    Bitrate(u8),
    /// `s` + 4 or 6 hex digits: custom bit timing registers.
    BitTiming { registers: [u8; 3], len: u8 },
    /// `Y<digit>` (CANable 2): CAN FD data bit rate.
    DataBitrate(u8),
    /// `Z1`/`Z0`: receive timestamps on/off.
    Timestamps(bool),
    /// `V`: hardware/firmware version.
    Version,
    /// `N`: serial number.
    SerialNumber,
    /// `F`: status flags.
    Status,
}

/// Longest encoded command (`sxxyyzz\r`).
pub const MAX_COMMAND: usize = 8;

const HEX: &[u8; 16] = b"0123456789ABCDEF";

impl Command {
    /// Writes the command and its `\r` into `out`; returns the length.
    pub fn encode(&self, out: &mut [u8; MAX_COMMAND]) -> usize {
        let digit = |d: u8| if d < 10 { b'0' + d } else { HEX[usize::from(d & 0xF)] };
        let mut n = 0;
        let mut put = |b: u8| {
            if let Some(slot) = out.get_mut(n) {
                *slot = b;
                n += 1;
            }
        };
        match *self {
            Command::Close => put(b'C'),
            Command::Open => put(b'O'),
            Command::ListenOnly => put(b'L'),
            Command::Mode { silent } => {
                put(b'M');
                put(if silent { b'1' } else { b'0' });
            }
            Command::Bitrate(d) => {
                put(b'S');
                put(digit(d));
            }
            Command::BitTiming { registers, len } => {
                put(b's');
                for r in registers.iter().take(usize::from(len.min(3))) {
                    put(HEX[usize::from(r >> 4)]);
                    put(HEX[usize::from(r & 0xF)]);
                }
            }
            Command::DataBitrate(d) => {
                put(b'Y');
                put(digit(d));
            }
            Command::Timestamps(on) => {
                put(b'Z');
                put(if on { b'1' } else { b'0' });
            }
            Command::Version => put(b'V'),
            Command::SerialNumber => put(b'N'),
            Command::Status => put(b'F'),
        }
        put(b'\r');
        n
    }
}

/// How to open an adapter ([`open_commands`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct OpenConfig {
    /// Nominal bit rate, bit/s (ignored when `bit_timing` is given).
    pub bitrate: u32,
    /// Custom bit timing registers (`s` command), as many bytes as the
    /// dialect's `btr_digits / 2`: SJA1000 BTR0, BTR1 (Lawicel) or MCP2515
    /// CNF1, CNF2, CNF3 (USBtin).
    pub bit_timing: Option<([u8; 3], u8)>,
    /// CAN FD data bit rate, bit/s (`None`: the adapter's default).
    pub data_bitrate: Option<u32>,
    /// Open for CAN FD.
    pub fd: bool,
    /// Listen-only (canio `silent`).
    pub listen_only: bool,
    /// `Some(on)`: send `Z1`/`Z0`.
    pub timestamps: Option<bool>,
}

/// Why an open sequence cannot be made for a dialect.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConfigError {
    /// The bit rate has no `S` code in the dialect (use custom bit timing).
    UnknownBitrate(u32),
    /// The data bit rate has no `Y` code in the dialect.
    UnknownDataBitrate(u32),
    /// The dialect has no CAN FD.
    NoFd,
    /// The dialect has no custom bit timing command, or the register count
    /// does not match it.
    BitTiming,
    /// The dialect has no `Z` timestamps.
    NoTimestamps,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConfigError::UnknownBitrate(b) => write!(f, "bit rate {b} has no S code in this slcan dialect"),
            ConfigError::UnknownDataBitrate(b) => write!(f, "data bit rate {b} has no Y code in this slcan dialect"),
            ConfigError::NoFd => f.write_str("this slcan dialect has no CAN FD"),
            ConfigError::BitTiming => f.write_str("this slcan dialect has no such custom bit timing command"),
            ConfigError::NoTimestamps => f.write_str("this slcan dialect has no Z timestamps"),
        }
    }
}

impl core::error::Error for ConfigError {}

/// The commands of an open sequence, in order (at most 6).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Commands {
    items: [Command; 6],
    len: usize,
}

impl Commands {
    fn push(&mut self, c: Command) {
        if let Some(slot) = self.items.get_mut(self.len) {
            *slot = c;
            self.len += 1;
        }
    }
    pub fn as_slice(&self) -> &[Command] {
        &self.items[..self.len]
    }
}

/// The open sequence for `dialect`: `C`, `S<n>` or `s<regs>`, `Y<n>` (FD
/// with a data bit rate), `Z<n>` (if asked), `M0`/`M1` (CANable), then `O`
/// or `L`. `C` first closes a channel left open by an earlier session
/// (Lawicel refuses `S` on an open channel).
pub fn open_commands(dialect: &Dialect, cfg: &OpenConfig) -> Result<Commands, ConfigError> {
    let mut out = Commands { items: [Command::Close; 6], len: 0 };
    out.push(Command::Close);
    match cfg.bit_timing {
        Some((registers, len)) => {
            if dialect.btr_digits == 0 || u32::from(len) * 2 != u32::from(dialect.btr_digits) {
                return Err(ConfigError::BitTiming);
            }
            out.push(Command::BitTiming { registers, len });
        }
        None => {
            let code = dialect.bitrate_code(cfg.bitrate).ok_or(ConfigError::UnknownBitrate(cfg.bitrate))?;
            out.push(Command::Bitrate(code));
        }
    }
    if cfg.fd && !dialect.fd {
        return Err(ConfigError::NoFd);
    }
    if let Some(rate) = cfg.data_bitrate {
        if !dialect.fd {
            return Err(ConfigError::NoFd);
        }
        let code = dialect.data_bitrate_code(rate).ok_or(ConfigError::UnknownDataBitrate(rate))?;
        out.push(Command::DataBitrate(code));
    }
    if let Some(on) = cfg.timestamps {
        if !dialect.timestamps {
            return Err(ConfigError::NoTimestamps);
        }
        out.push(Command::Timestamps(on));
    }
    match (dialect.listen_only, cfg.listen_only) {
        (ListenOnly::M1, silent) => {
            out.push(Command::Mode { silent });
            out.push(Command::Open);
        }
        (ListenOnly::L, true) => out.push(Command::ListenOnly),
        (ListenOnly::L, false) => out.push(Command::Open),
    }
    Ok(out)
}

/// Why a frame cannot be written as an slcan line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EncodeError {
    /// Error frames are reported by controllers, never sent.
    ErrorFrame,
    /// A CAN FD frame and a dialect without FD lines.
    NoFd,
}

impl fmt::Display for EncodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EncodeError::ErrorFrame => f.write_str("error frames cannot be sent"),
            EncodeError::NoFd => f.write_str("CAN FD frame on an slcan dialect without CAN FD"),
        }
    }
}

impl core::error::Error for EncodeError {}

/// Longest encoded frame line with its `\r`.
pub const MAX_FRAME_LINE: usize = 1 + 8 + 1 + 128 + 1;

/// Writes `frame` as an slcan line with its `\r` into `out` (uppercase hex,
/// as Linux's `slc_encaps` writes; FD lines as CANable 2 reads them: `d`/`D`
/// without BRS, `b`/`B` with BRS, hex DLC; ESI is set by the controller and
/// has no letter). Returns the length.
pub fn encode_frame(frame: &Frame, dialect: &Dialect, out: &mut [u8; MAX_FRAME_LINE]) -> Result<usize, EncodeError> {
    let (id, ext, kind, dlc, data) = match frame {
        Frame::Error(_) => return Err(EncodeError::ErrorFrame),
        Frame::Can(f) => {
            let ext = f.is_extended();
            let kind = match (f.is_remote(), ext) {
                (false, false) => b't',
                (false, true) => b'T',
                (true, false) => b'r',
                (true, true) => b'R',
            };
            (f.id(), ext, kind, f.dlc(), f.data())
        }
        Frame::Fd(f) => {
            if !dialect.fd {
                return Err(EncodeError::NoFd);
            }
            let ext = f.is_extended();
            let kind = match (f.brs(), ext) {
                (false, false) => b'd',
                (false, true) => b'D',
                (true, false) => b'b',
                (true, true) => b'B',
            };
            // FdFrame lengths are valid FD lengths by construction.
            (f.id(), ext, kind, len_to_dlc(f.data().len()).unwrap_or(15), f.data())
        }
    };
    let mut n = 0;
    let mut put = |b: u8| {
        if let Some(slot) = out.get_mut(n) {
            *slot = b;
            n += 1;
        }
    };
    put(kind);
    let raw = id_raw(id);
    let digits = if ext { 8 } else { 3 };
    for i in (0..digits).rev() {
        put(HEX[((raw >> (4 * i)) & 0xF) as usize]);
    }
    put(HEX[usize::from(dlc & 0xF)]);
    for b in data {
        put(HEX[usize::from(b >> 4)]);
        put(HEX[usize::from(b & 0xF)]);
    }
    put(b'\r');
    Ok(n)
}

/// What ended a line.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Terminator {
    /// `\r`.
    Cr,
    /// `\a` (BEL): Lawicel's error reply; Linux also ends lines with it.
    Bel,
}

/// Why a line that looked like a frame or a status line was rejected.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Malformed {
    /// Longer than [`LINE_CAPACITY`]: dropped whole.
    Overlong,
    /// Shorter than its kind needs.
    Short,
    /// A non-hex character in the identifier, data or timestamp.
    Hex,
    /// An identifier out of range (standard above 0x7FF, extended above
    /// 0x1FFFFFFF).
    Id,
    /// A DLC character out of range (classic `0`-`8`, FD `0`-`F`).
    Dlc,
    /// Characters after the data other than a 4-hex timestamp.
    Trailing,
    /// A timestamp of 60000 ms or more (Lawicel counts modulo 60000).
    Timestamp,
    /// An `e` line with a bad count or letter, or an `s` line with bad
    /// counters.
    Status,
}

/// One classified line from an adapter.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Line<'a> {
    /// A received frame, with the 4-hex millisecond timestamp if present
    /// (0..60000).
    Frame { frame: Frame, timestamp_ms: Option<u16> },
    /// An `s` state line or an `e` bus error line as an error frame (Linux
    /// `slc_bump_state` / `slc_bump_err` semantics).
    Error(ErrorFrame),
    /// An empty line ended by `\r`: a command's OK.
    Ok,
    /// An empty line ended by `\a`: a command or frame was refused.
    Refused,
    /// `z` or `Z` (USBtin, CANUSB): a frame was queued for transmission.
    Sent { extended: bool },
    /// Any other text: replies (`V1013`, `N4242`, `F00`), commands a Linux
    /// peer writes (`C`, `S6`, `O`, `L`, `F`), unknown lines.
    Other(&'a [u8]),
    /// A frame, `e` or `s` line that does not parse, or an overlong line.
    Malformed(Malformed),
}

fn hex_val(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

fn hex_u32(s: &[u8]) -> Option<u32> {
    if s.is_empty() || s.len() > 8 {
        return None;
    }
    s.iter().try_fold(0u32, |acc, &c| Some((acc << 4) | u32::from(hex_val(c)?)))
}

fn dec_u32(s: &[u8]) -> Option<u32> {
    if s.is_empty() || s.len() > 9 {
        return None;
    }
    s.iter().try_fold(0u32, |acc, &c| c.is_ascii_digit().then(|| acc * 10 + u32::from(c - b'0')))
}

/// Classifies one line (without its terminator; `\n`/NUL already removed).
/// Never panics; `terminator` only matters for an empty line.
pub fn parse_line(line: &[u8], terminator: Terminator) -> Line<'_> {
    let Some(&kind) = line.first() else {
        return match terminator {
            Terminator::Cr => Line::Ok,
            Terminator::Bel => Line::Refused,
        };
    };
    match kind {
        b't' | b'T' | b'r' | b'R' | b'd' | b'D' | b'b' | b'B' => match parse_frame(line) {
            Ok((frame, timestamp_ms)) => Line::Frame { frame, timestamp_ms },
            Err(m) => Line::Malformed(m),
        },
        b'z' | b'Z' if line.len() == 1 => Line::Sent { extended: kind == b'Z' },
        b'e' if line.get(1).is_some_and(u8::is_ascii_digit) => match parse_error_line(line) {
            Some(e) => Line::Error(e),
            None => Line::Malformed(Malformed::Status),
        },
        b's' if matches!(line.get(1), Some(b'a' | b'w' | b'p' | b'b')) => match parse_state_line(line) {
            Some(e) => Line::Error(e),
            None => Line::Malformed(Malformed::Status),
        },
        _ => Line::Other(line),
    }
}

/// `t/T/r/R/d/D/b/B` + id + DLC + data + optional 4-hex timestamp.
fn parse_frame(line: &[u8]) -> Result<(Frame, Option<u16>), Malformed> {
    let kind = line.first().copied().unwrap_or(0);
    let ext = kind.is_ascii_uppercase();
    let remote = matches!(kind, b'r' | b'R');
    let fd = matches!(kind, b'd' | b'D' | b'b' | b'B');
    let brs = matches!(kind, b'b' | b'B');
    let id_len = if ext { 8 } else { 3 };
    let id_text = line.get(1..1 + id_len).ok_or(Malformed::Short)?;
    let raw = hex_u32(id_text).ok_or(Malformed::Hex)?;
    let id = make_id(raw, ext).map_err(|_| Malformed::Id)?;
    let dlc_char = *line.get(1 + id_len).ok_or(Malformed::Short)?;
    let len = if fd {
        hex_val(dlc_char).and_then(dlc_to_len).ok_or(Malformed::Dlc)?
    } else {
        match dlc_char {
            b'0'..=b'8' => usize::from(dlc_char - b'0'),
            _ => return Err(Malformed::Dlc),
        }
    };
    let rest = line.get(2 + id_len..).unwrap_or(&[]);
    let data_chars = if remote { 0 } else { 2 * len };
    if rest.len() < data_chars {
        return Err(Malformed::Short);
    }
    let (data_text, tail) = rest.split_at(data_chars);
    let timestamp_ms = match tail.len() {
        0 => None,
        4 => {
            let t = hex_u32(tail).ok_or(Malformed::Hex)?;
            if t >= TIMESTAMP_PERIOD_MS {
                return Err(Malformed::Timestamp);
            }
            Some(t as u16)
        }
        _ => return Err(Malformed::Trailing),
    };
    let mut data = [0u8; 64];
    for (slot, pair) in data.iter_mut().zip(data_text.chunks_exact(2)) {
        let hi = hex_val(pair[0]).ok_or(Malformed::Hex)?;
        let lo = hex_val(pair[1]).ok_or(Malformed::Hex)?;
        *slot = (hi << 4) | lo;
    }
    let payload = data.get(..len).ok_or(Malformed::Dlc)?;
    let frame = if fd {
        Frame::Fd(FdFrame::new(id, payload, brs, false).map_err(|_| Malformed::Dlc)?)
    } else if remote {
        Frame::Can(CanFrame::new_remote(id, len).map_err(|_| Malformed::Dlc)?)
    } else {
        Frame::Can(CanFrame::new(id, payload).map_err(|_| Malformed::Dlc)?)
    };
    Ok((frame, timestamp_ms))
}

// linux/can/error.h: protocol error types (data[2]) and locations (data[3]),
// controller problems (data[1]).
const PROT_BIT: u8 = 0x01;
const PROT_FORM: u8 = 0x02;
const PROT_STUFF: u8 = 0x04;
const PROT_BIT0: u8 = 0x08;
const PROT_BIT1: u8 = 0x10;
const PROT_LOC_CRC_SEQ: u8 = 0x08;
const PROT_LOC_ACK: u8 = 0x19;
const CRTL_RX_OVERFLOW: u8 = 0x01;
const CRTL_TX_OVERFLOW: u8 = 0x02;

/// `e<n><letters>`: `n` (0-8) error letters follow (Linux 6.1
/// `slc_bump_err`): `a` ACK, `b` bit0, `B` bit1, `c` CRC, `f` form,
/// `o` RX overrun, `O` TX overrun, `s` stuff. The error frame has
/// `CAN_ERR_PROT | CAN_ERR_BUSERROR` and the kernel's detail bytes.
fn parse_error_line(line: &[u8]) -> Option<ErrorFrame> {
    let n = usize::from(line.get(1)?.checked_sub(b'0')?);
    if n > 8 {
        return None;
    }
    let letters = line.get(2..2 + n)?;
    let mut class = err::PROT | err::BUSERROR;
    let mut d = [0u8; 8];
    for &c in letters {
        match c {
            b'a' => {
                class |= err::ACK;
                d[3] = PROT_LOC_ACK;
            }
            b'b' => d[2] |= PROT_BIT0,
            b'B' => d[2] |= PROT_BIT1,
            b'c' => {
                d[2] |= PROT_BIT;
                d[3] = PROT_LOC_CRC_SEQ;
            }
            b'f' => d[2] |= PROT_FORM,
            b'o' => {
                class |= err::CRTL;
                d[1] = CRTL_RX_OVERFLOW;
            }
            b'O' => {
                class |= err::CRTL;
                d[1] = CRTL_TX_OVERFLOW;
            }
            b's' => d[2] |= PROT_STUFF,
            _ => return None,
        }
    }
    Some(ErrorFrame::new(class, d))
}

/// `s<state><rx:3><tx:3>`: state `a` active, `w` warning, `p` passive,
/// `b` bus-off, then the RX and TX error counters as 3 decimal digits each
/// (Linux 6.1 `slc_bump_state`; `sb256256`). Counters above 255 are
/// reported as 255.
fn parse_state_line(line: &[u8]) -> Option<ErrorFrame> {
    let state = match line.get(1)? {
        b'a' => BusState::ErrorActive,
        b'w' => BusState::ErrorWarning,
        b'p' => BusState::ErrorPassive,
        b'b' => BusState::BusOff,
        _ => return None,
    };
    if line.len() != 8 {
        return None;
    }
    let rx = dec_u32(line.get(2..5)?)?;
    let tx = dec_u32(line.get(5..8)?)?;
    let clamp = |v: u32| v.min(255) as u8;
    Some(ErrorFrame::from_state(state, clamp(tx), clamp(rx)))
}

/// Splits a byte stream into lines: `\r` or `\a` ends a line; `\n` and NUL
/// are skipped anywhere; a line longer than [`LINE_CAPACITY`] is reported
/// once as overlong when it ends.
#[derive(Clone)]
pub struct LineSplitter {
    buf: [u8; LINE_CAPACITY],
    len: usize,
    overlong: bool,
}

impl Default for LineSplitter {
    fn default() -> Self {
        LineSplitter { buf: [0; LINE_CAPACITY], len: 0, overlong: false }
    }
}

impl fmt::Debug for LineSplitter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LineSplitter").field("pending", &self.len).field("overlong", &self.overlong).finish()
    }
}

/// One line out of a [`LineSplitter`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RawLine<'a> {
    Line(&'a [u8], Terminator),
    Overlong,
}

impl LineSplitter {
    /// Takes one byte; returns a line when `byte` ends one (`\n` and NUL
    /// are skipped).
    pub fn push(&mut self, byte: u8) -> Option<RawLine<'_>> {
        let term = match byte {
            b'\r' => Terminator::Cr,
            0x07 => Terminator::Bel,
            b'\n' | 0 => return None,
            _ => {
                if self.len < LINE_CAPACITY {
                    self.buf[self.len] = byte;
                    self.len += 1;
                } else {
                    self.overlong = true;
                }
                return None;
            }
        };
        let len = core::mem::take(&mut self.len);
        if core::mem::take(&mut self.overlong) {
            return Some(RawLine::Overlong);
        }
        Some(RawLine::Line(&self.buf[..len], term))
    }

    /// Bytes of an unfinished line held now.
    pub fn pending(&self) -> usize {
        self.len
    }

    /// Forgets an unfinished line.
    pub fn clear(&mut self) {
        self.len = 0;
        self.overlong = false;
    }
}

/// What a [`Decoder`] saw. Every line is counted in exactly one of
/// `frames`, `errors`, `ok`, `refused`, `sent`, `other`, `malformed`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DecoderStats {
    /// Frame lines decoded.
    pub frames: u64,
    /// `e`/`s` lines decoded into error frames.
    pub errors: u64,
    /// Empty lines ended by `\r` (OK replies).
    pub ok: u64,
    /// Empty lines ended by `\a` (error replies).
    pub refused: u64,
    /// `z`/`Z` lines (transmit acknowledgements).
    pub sent: u64,
    /// Other text lines (replies, a Linux peer's commands, unknown text).
    pub other: u64,
    /// Frame/status lines that do not parse, and overlong lines.
    pub malformed: u64,
    /// `\n` and NUL bytes skipped.
    pub skipped_bytes: u64,
}

/// [`LineSplitter`] plus [`parse_line`] plus counters.
#[derive(Clone, Debug, Default)]
pub struct Decoder {
    splitter: LineSplitter,
    stats: DecoderStats,
}

impl Decoder {
    pub fn new() -> Decoder {
        Decoder::default()
    }

    /// Feeds bytes; calls `on_line` for every line completed, in order.
    pub fn feed(&mut self, input: &[u8], mut on_line: impl FnMut(Line<'_>)) {
        for &b in input {
            if b == b'\n' || b == 0 {
                self.stats.skipped_bytes += 1;
                continue;
            }
            let Some(raw) = self.splitter.push(b) else { continue };
            let line = match raw {
                RawLine::Overlong => Line::Malformed(Malformed::Overlong),
                RawLine::Line(text, term) => parse_line(text, term),
            };
            let s = &mut self.stats;
            match line {
                Line::Frame { .. } => s.frames += 1,
                Line::Error(_) => s.errors += 1,
                Line::Ok => s.ok += 1,
                Line::Refused => s.refused += 1,
                Line::Sent { .. } => s.sent += 1,
                Line::Other(_) => s.other += 1,
                Line::Malformed(_) => s.malformed += 1,
            }
            on_line(line);
        }
    }

    pub fn stats(&self) -> DecoderStats {
        self.stats
    }

    /// Bytes of an unfinished line held now.
    pub fn pending(&self) -> usize {
        self.splitter.pending()
    }
}

/// Unwraps Lawicel's millisecond timestamps (modulo 60000) into a
/// monotonic count. A gap of 60 s or more without a frame cannot be seen
/// in the timestamps themselves; the caller re-anchors against its clock.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TimestampUnwrapper {
    last: Option<u16>,
    base: u64,
}

impl TimestampUnwrapper {
    /// The unwrapped milliseconds of `ms` (values of 60000 or more are
    /// taken modulo 60000).
    pub fn unwrap(&mut self, ms: u16) -> u64 {
        let ms = (u32::from(ms) % TIMESTAMP_PERIOD_MS) as u16;
        if self.last.is_some_and(|last| ms < last) {
            self.base += u64::from(TIMESTAMP_PERIOD_MS);
        }
        self.last = Some(ms);
        self.base + u64::from(ms)
    }
}

/// The fuzzing entry point (cargo-fuzz target `slcan_line`, proptest):
/// feeds `input` through a [`Decoder`], checks that every line is counted
/// exactly once and that every decoded frame encodes back to a line that
/// decodes to the same frame.
#[doc(hidden)]
pub fn fuzz_decoder(input: &[u8]) {
    let mut dec = Decoder::new();
    let mut seen = 0u64;
    let mut frames = 0u64;
    dec.feed(input, |line| {
        seen += 1;
        if let Line::Frame { frame, .. } = line {
            frames += 1;
            let mut out = [0u8; MAX_FRAME_LINE];
            let n = encode_frame(&frame, &Dialect::CANABLE, &mut out).unwrap_or(0);
            let mut again = Decoder::new();
            let mut back = 0;
            again.feed(&out[..n], |l| {
                assert_eq!(l, Line::Frame { frame, timestamp_ms: None });
                back += 1;
            });
            assert_eq!(back, 1);
        }
    });
    let s = dec.stats();
    assert_eq!(seen, s.frames + s.errors + s.ok + s.refused + s.sent + s.other + s.malformed);
    assert_eq!(frames, s.frames);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::make_id;
    use proptest::prelude::*;
    use std::vec::Vec;

    fn lines(input: &[u8]) -> (Vec<std::string::String>, DecoderStats) {
        let mut dec = Decoder::new();
        let mut out = Vec::new();
        dec.feed(input, |l| out.push(std::format!("{l:?}")));
        (out, dec.stats())
    }

    fn frames(input: &[u8]) -> Vec<(Frame, Option<u16>)> {
        let mut dec = Decoder::new();
        let mut out = Vec::new();
        dec.feed(input, |l| {
            if let Line::Frame { frame, timestamp_ms } = l {
                out.push((frame, timestamp_ms));
            }
        });
        out
    }

    fn can(id: u32, ext: bool, data: &[u8]) -> Frame {
        Frame::Can(CanFrame::new(make_id(id, ext).unwrap(), data).unwrap())
    }

    fn enc(f: &Frame) -> std::string::String {
        let mut out = [0u8; MAX_FRAME_LINE];
        let n = encode_frame(f, &Dialect::CANABLE, &mut out).unwrap();
        std::string::String::from_utf8(out[..n].to_vec()).unwrap()
    }

    #[test]
    fn kernel_examples_decode() {
        // The examples in slcan-core.c's format comment.
        let got = frames(b"t1230\rt4563112233\rT12ABCDEF2AA55\rr1230\r");
        assert_eq!(
            got,
            [
                (can(0x123, false, &[]), None),
                (can(0x456, false, &[0x11, 0x22, 0x33]), None),
                (can(0x12AB_CDEF, true, &[0xAA, 0x55]), None),
                (Frame::Can(CanFrame::new_remote(make_id(0x123, false).unwrap(), 0).unwrap()), None),
            ]
        );
    }

    #[test]
    fn encode_is_uppercase_like_the_kernel() {
        assert_eq!(enc(&can(0x456, false, &[0x11, 0x22, 0xab])), "t45631122AB\r");
        assert_eq!(enc(&can(0x12ab_cdef, true, &[0xAA, 0x55])), "T12ABCDEF2AA55\r");
        assert_eq!(enc(&Frame::Can(CanFrame::new_remote(make_id(0x7ff, false).unwrap(), 5).unwrap())), "r7FF5\r");
        assert_eq!(enc(&Frame::Can(CanFrame::new_remote(make_id(1, true).unwrap(), 8).unwrap())), "R000000018\r");
        let fd = Frame::Fd(FdFrame::new(make_id(0x1, false).unwrap(), &[0xEE; 12], true, false).unwrap());
        assert_eq!(enc(&fd), std::format!("b0019{}\r", "EE".repeat(12)));
        let fd = Frame::Fd(FdFrame::new(make_id(0x1, true).unwrap(), &[1; 64], false, true).unwrap());
        assert!(enc(&fd).starts_with("D00000001F0101"));
        let mut out = [0u8; MAX_FRAME_LINE];
        assert_eq!(encode_frame(&fd, &Dialect::LAWICEL, &mut out), Err(EncodeError::NoFd));
        let e = Frame::Error(ErrorFrame::new(err::ACK, [0; 8]));
        assert_eq!(encode_frame(&e, &Dialect::CANABLE, &mut out), Err(EncodeError::ErrorFrame));
    }

    #[test]
    fn every_length_round_trips() {
        for ext in [false, true] {
            for len in 0..=8usize {
                let data: Vec<u8> = (0..len as u8).map(|i| i.wrapping_mul(37)).collect();
                let f = can(if ext { 0x1ABC_DEF0 } else { 0x5A5 }, ext, &data);
                assert_eq!(frames(enc(&f).as_bytes()), [(f, None)]);
                let r = Frame::Can(CanFrame::new_remote(make_id(0x10, ext).unwrap(), len).unwrap());
                assert_eq!(frames(enc(&r).as_bytes()), [(r, None)]);
            }
        }
        for dlc in 0..=15u8 {
            let len = dlc_to_len(dlc).unwrap();
            for brs in [false, true] {
                let f =
                    Frame::Fd(FdFrame::new(make_id(0x3FF, false).unwrap(), &[0x5Au8; 64][..len], brs, false).unwrap());
                assert_eq!(frames(enc(&f).as_bytes()), [(f, None)]);
            }
        }
    }

    #[test]
    fn lowercase_hex_and_timestamps_are_read() {
        assert_eq!(frames(b"t12a2beef\r"), [(can(0x12A, false, &[0xBE, 0xEF]), None)]);
        assert_eq!(frames(b"t1231AAEA5F\r"), [(can(0x123, false, &[0xAA]), Some(59_999))]);
        assert_eq!(frames(b"r12380001\r").len(), 1);
        // 0xEA60 = 60000: not a Lawicel timestamp.
        assert_eq!(lines(b"t1231AAEA60\r").1.malformed, 1);
    }

    #[test]
    fn replies_and_acks_are_classified() {
        let (l, s) = lines(b"\r\x07z\rZ\rV1013\rN4242\rF00\rC\rS6\rO\rL\rF\r");
        assert_eq!(l[0], "Ok");
        assert_eq!(l[1], "Refused");
        assert_eq!(l[2], "Sent { extended: false }");
        assert_eq!(l[3], "Sent { extended: true }");
        assert_eq!((s.ok, s.refused, s.sent, s.other, s.malformed), (1, 1, 2, 8, 0));
    }

    #[test]
    fn crlf_nul_and_bel_terminators() {
        let got = frames(b"t1230\r\nt1231AA\x07\0t12320102\n\r");
        assert_eq!(got.len(), 3);
        assert_eq!(got[2].0, can(0x123, false, &[1, 2]));
        let (_, s) = lines(b"t1230\r\n\0");
        assert_eq!(s.skipped_bytes, 2);
    }

    #[test]
    fn malformed_lines_are_counted_and_the_next_frame_arrives() {
        let bad: &[&[u8]] = &[
            b"t12",        // short id
            b"t12G0",      // bad hex
            b"t8001",      // standard id > 0x7FF (well, DLC 1 without data)
            b"t800",       // short
            b"T200000000", // extended id > 0x1FFFFFFF
            b"t1239",      // classic DLC 9
            b"t1232AA",    // short data
            b"t1231AABB",  // trailing junk (not 4 chars)
            b"t1231AAB",   // trailing junk
            b"d123G",      // bad FD DLC
            b"e9a",        // error count out of range
            b"e2aX",       // bad error letter
            b"sa12",       // short state line
            b"sa0x1002",   // non-decimal counter
        ];
        for b in bad {
            let mut input = b.to_vec();
            input.extend_from_slice(b"\rt7FF0\r");
            let (l, s) = lines(&input);
            assert_eq!(s.malformed, 1, "{:?}: {l:?}", std::string::String::from_utf8_lossy(b));
            assert_eq!(frames(&input).last().map(|f| f.0), Some(can(0x7FF, false, &[])));
        }
    }

    #[test]
    fn overlong_lines_are_dropped_whole() {
        let mut input = [b'x'; 500].to_vec();
        input.extend_from_slice(b"t1230\r\rt1231FF\r");
        let (l, s) = lines(&input);
        assert_eq!(s.malformed, 1, "{l:?}");
        assert_eq!(s.frames, 1); // the first t1230 was part of the overlong line
        assert_eq!(frames(&input), [(can(0x123, false, &[0xFF]), None)]);
    }

    #[test]
    fn kernel_status_lines_become_error_frames() {
        let mut got = Vec::new();
        Decoder::new().feed(b"sb256256\rsa057033\rsw100090\re1a\re3bcO\rsx000000\re\r", |l| {
            got.push(match l {
                Line::Error(e) => Some(e),
                _ => None,
            })
        });
        let Some(off) = got[0] else { panic!("{got:?}") };
        assert_eq!(off.bus_state(), Some(BusState::BusOff));
        let Some(active) = got[1] else { panic!() };
        assert_eq!(
            (active.bus_state(), active.rx_error_count(), active.tx_error_count()),
            (Some(BusState::ErrorActive), Some(57), Some(33))
        );
        let Some(warn) = got[2] else { panic!() };
        assert_eq!(warn.bus_state(), Some(BusState::ErrorWarning));
        let Some(ack) = got[3] else { panic!() };
        assert_eq!(ack.class(), err::PROT | err::BUSERROR | err::ACK);
        assert_eq!(ack.data()[3], PROT_LOC_ACK);
        let Some(multi) = got[4] else { panic!() };
        assert_eq!(multi.class(), err::PROT | err::BUSERROR | err::CRTL);
        assert_eq!(
            (multi.data()[1], multi.data()[2], multi.data()[3]),
            (CRTL_TX_OVERFLOW, PROT_BIT0 | PROT_BIT, PROT_LOC_CRC_SEQ)
        );
        // `sx...` and a bare `e` are not status lines (the kernel ignores them too).
        assert_eq!((got.len(), got[5], got[6]), (7, None, None));
    }

    #[test]
    fn open_sequences_per_dialect() {
        let text = |d: &Dialect, cfg: OpenConfig| {
            let cmds = open_commands(d, &cfg).unwrap();
            let mut s = std::string::String::new();
            for c in cmds.as_slice() {
                let mut b = [0u8; MAX_COMMAND];
                let n = c.encode(&mut b);
                s.push_str(core::str::from_utf8(&b[..n]).unwrap());
            }
            s
        };
        let base = OpenConfig { bitrate: 500_000, ..OpenConfig::default() };
        assert_eq!(text(&Dialect::CANABLE, base), "C\rS6\rM0\rO\r");
        assert_eq!(text(&Dialect::LAWICEL, base), "C\rS6\rO\r");
        assert_eq!(text(&Dialect::KERNEL, OpenConfig { listen_only: true, ..base }), "C\rS6\rL\r");
        assert_eq!(text(&Dialect::CANABLE, OpenConfig { listen_only: true, ..base }), "C\rS6\rM1\rO\r");
        // S7 is 800k for Lawicel/USBtin/Linux, 750k for CANable.
        assert_eq!(text(&Dialect::USBTIN, OpenConfig { bitrate: 800_000, ..base }), "C\rS7\rO\r");
        assert_eq!(text(&Dialect::CANABLE, OpenConfig { bitrate: 750_000, ..base }), "C\rS7\rM0\rO\r");
        assert_eq!(text(&Dialect::CANABLE, OpenConfig { bitrate: 83_333, ..base }), "C\rS9\rM0\rO\r");
        assert_eq!(
            open_commands(&Dialect::CANABLE, &OpenConfig { bitrate: 800_000, ..base }).unwrap_err(),
            ConfigError::UnknownBitrate(800_000)
        );
        assert_eq!(
            open_commands(&Dialect::LAWICEL, &OpenConfig { bitrate: 750_000, ..base }).unwrap_err(),
            ConfigError::UnknownBitrate(750_000)
        );
        let fd = OpenConfig { fd: true, data_bitrate: Some(5_000_000), bitrate: 1_000_000, ..base };
        assert_eq!(text(&Dialect::CANABLE, fd), "C\rS8\rY5\rM0\rO\r");
        assert_eq!(open_commands(&Dialect::LAWICEL, &fd).unwrap_err(), ConfigError::NoFd);
        let btr = OpenConfig { bit_timing: Some(([0x03, 0x1C, 0], 2)), timestamps: Some(true), ..base };
        assert_eq!(text(&Dialect::LAWICEL, btr), "C\rs031C\rZ1\rO\r");
        assert_eq!(open_commands(&Dialect::USBTIN, &btr).unwrap_err(), ConfigError::BitTiming);
        let cnf = OpenConfig { bit_timing: Some(([0x01, 0xB5, 0x01], 3)), ..base };
        assert_eq!(text(&Dialect::USBTIN, cnf), "C\rs01B501\rO\r");
        assert_eq!(open_commands(&Dialect::CANABLE, &cnf).unwrap_err(), ConfigError::BitTiming);
        assert_eq!(
            open_commands(&Dialect::CANABLE, &OpenConfig { timestamps: Some(true), ..base }).unwrap_err(),
            ConfigError::NoTimestamps
        );
    }

    #[test]
    fn dialect_names() {
        assert_eq!(Dialect::from_name("CANable"), Some(Dialect::CANABLE));
        assert_eq!(Dialect::from_name("linux"), Some(Dialect::KERNEL));
        assert_eq!(Dialect::from_name("usbtin"), Some(Dialect::USBTIN));
        assert_eq!(Dialect::from_name("pcan"), None);
    }

    #[test]
    fn timestamps_unwrap_at_60000() {
        let mut u = TimestampUnwrapper::default();
        assert_eq!(u.unwrap(59_990), 59_990);
        assert_eq!(u.unwrap(5), 60_005);
        assert_eq!(u.unwrap(5), 60_005);
        assert_eq!(u.unwrap(10), 60_010);
        assert_eq!(u.unwrap(0), 120_000);
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

        /// Any bytes: no panic, every line counted once, frames round-trip.
        #[test]
        fn any_bytes(input in proptest::collection::vec(any::<u8>(), 0..600)) {
            fuzz_decoder(&input);
        }

        /// Lines built from the slcan alphabet reach the frame parser's corners.
        #[test]
        fn slcan_alphabet(input in proptest::collection::vec(proptest::sample::select(b"tTrRdDbBeszZ0123456789aAbBcCfFoOsx\r\x07\n\0".to_vec()), 0..400)) {
            fuzz_decoder(&input);
        }

        /// Garbage, then a terminator, then a good line: the good frame arrives.
        #[test]
        fn garbage_never_costs_the_next_frame(
            garbage in proptest::collection::vec(any::<u8>(), 0..400),
            id in 0u32..0x800, len in 0usize..=8, byte in any::<u8>(),
        ) {
            let f = can(id, false, &[byte; 8][..len]);
            let mut input = garbage.clone();
            input.push(b'\r');
            input.extend_from_slice(enc(&f).as_bytes());
            prop_assert_eq!(frames(&input).last().map(|x| x.0), Some(f));
        }

        /// Any valid frame encodes to a line that decodes to it.
        #[test]
        fn frames_round_trip(id in 0u32..0x2000_0000, ext in any::<bool>(), remote in any::<bool>(),
                             data in proptest::collection::vec(any::<u8>(), 0..=8)) {
            let id = if ext { id } else { id & 0x7FF };
            let f = if remote {
                Frame::Can(CanFrame::new_remote(make_id(id, ext).unwrap(), data.len()).unwrap())
            } else {
                can(id, ext, &data)
            };
            prop_assert_eq!(frames(enc(&f).as_bytes()), std::vec![(f, None)]);
        }
    }
}
