//! candump log lines (`candump -L`, read by `canplayer`, `log2asc`, python-can's
//! `.log` reader) and can-utils frame text (`cansend`): parse into a [`Frame`]
//! and write into any [`core::fmt::Write`]. No heap; parsing never panics.
//!
//! Line: `(SECONDS.MICROS) CHANNEL FRAME[ R|T]`, e.g.
//! `(1436509052.249713) vcan0 044#2A366C2BBA`. The optional last field is the
//! direction (`candump -L -x`, python-can writes it). Frame text
//! (can-utils `lib.c`, `parse_canframe`, `sprint_canframe`):
//! - `123#11223344` classic data: a 3-digit id is standard, an 8-digit id
//!   extended; bytes as hex pairs, `.` allowed between bytes; up to 8 bytes
//!   (an `_X` raw-DLC suffix after 8 bytes is accepted and ignored);
//! - `123#R`, `123#R4` remote frame (requested length 0-8);
//! - `123##1DEADBEEF` CAN FD: one hex digit of flags (bit 0 BRS, bit 1 ESI,
//!   bit 2 FDF, ignored) then up to 64 bytes, padded with zeros to the next
//!   valid FD length as `cansend` does;
//! - `20000080#0000000000000000` error frame: an 8-digit id with
//!   `CAN_ERR_FLAG` (0x20000000) set; the class is the low 29 bits.

use core::fmt;

use crate::frame::{
    fd_padded_len, make_id, CanFrame, ErrorFrame, FdFrame, Frame, CANFD_MAX_LEN, CAN_MAX_LEN, EFF_MASK, ERR_FLAG,
    SFF_MASK,
};

/// A log timestamp: whole seconds since the Unix epoch and microseconds
/// (exact, no float rounding on the way through a file).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Timestamp {
    pub secs: u64,
    /// 0..1_000_000.
    pub micros: u32,
}

impl Timestamp {
    /// From float seconds, truncated to the microsecond as candump truncates
    /// the kernel's nanoseconds (a float near 1.7e9 s resolves ~0.25 us, so
    /// the last digit may still differ by one); negative and NaN give 0.
    pub fn from_secs_f64(t: f64) -> Timestamp {
        if t.is_nan() || t <= 0.0 {
            return Timestamp::default();
        }
        // The small bias keeps x.xxxxxx written as a float from reading back as one microsecond less.
        let total = (t * 1e6 + 1e-3) as u64;
        Timestamp { secs: total / 1_000_000, micros: (total % 1_000_000) as u32 }
    }
    pub fn as_secs_f64(self) -> f64 {
        self.secs as f64 + self.micros as f64 * 1e-6
    }
}

/// Direction of a logged frame (`candump -L -x` marks, python-can's `is_rx`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Direction {
    /// `R`: received.
    Rx,
    /// `T`: sent by this node.
    Tx,
}

/// One parsed log line; `channel` borrows from the line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LogLine<'a> {
    pub timestamp: Timestamp,
    pub channel: &'a str,
    pub frame: Frame,
    pub direction: Option<Direction>,
}

/// Why a line or frame text was rejected.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogError {
    /// The line does not start with `(SECONDS.MICROS)`.
    Timestamp,
    /// No channel or no frame after the timestamp.
    MissingField,
    /// More fields than `timestamp channel frame [R|T]`.
    TrailingText,
    /// No `#` after the identifier.
    MissingSeparator,
    /// The identifier is not 3 or 8 hex digits, or out of range.
    Id,
    /// Data bytes are not hex pairs.
    Data,
    /// More data than the frame kind holds (8 classic, 64 FD).
    DataTooLong,
    /// The FD flags digit is missing or not hex.
    FdFlags,
    /// A remote frame's length is not a digit 0-8.
    RemoteLength,
}

impl fmt::Display for LogError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            LogError::Timestamp => "expected a timestamp (SECONDS.MICROS) at the start",
            LogError::MissingField => "expected '(timestamp) channel frame'",
            LogError::TrailingText => "unexpected text after the frame (only R or T may follow)",
            LogError::MissingSeparator => "expected '#' after the CAN id",
            LogError::Id => "the CAN id must be 3 hex digits (standard, <= 7FF) or 8 (extended, <= 1FFFFFFF)",
            LogError::Data => "data must be pairs of hex digits (optionally separated by '.')",
            LogError::DataTooLong => "too many data bytes (8 for CAN 2.0, 64 for CAN FD)",
            LogError::FdFlags => "expected one hex digit of FD flags after '##'",
            LogError::RemoteLength => "a remote frame's length must be one digit 0-8",
        })
    }
}

impl core::error::Error for LogError {}

fn hex_val(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

fn parse_hex_u32(s: &[u8]) -> Option<u32> {
    if s.is_empty() || s.len() > 8 {
        return None;
    }
    let mut v = 0u32;
    for &b in s {
        v = (v << 4) | hex_val(b)? as u32;
    }
    Some(v)
}

/// Parses hex pairs (with optional `.` between bytes) into `out`; returns the byte count.
fn parse_data(s: &[u8], out: &mut [u8]) -> Result<usize, LogError> {
    let mut n = 0;
    let mut i = 0;
    while i < s.len() {
        if s[i] == b'.' {
            i += 1;
            continue;
        }
        if i + 1 >= s.len() {
            return Err(LogError::Data);
        }
        let (Some(h), Some(l)) = (hex_val(s[i]), hex_val(s[i + 1])) else { return Err(LogError::Data) };
        if n >= out.len() {
            return Err(LogError::DataTooLong);
        }
        out[n] = (h << 4) | l;
        n += 1;
        i += 2;
    }
    Ok(n)
}

/// Parses can-utils frame text (`cansend` syntax, the third field of a log
/// line): see the module doc.
pub fn parse_frame(text: &str) -> Result<Frame, LogError> {
    let s = text.as_bytes();
    let hash = s.iter().position(|&b| b == b'#').ok_or(LogError::MissingSeparator)?;
    let (id_txt, rest) = (&s[..hash], &s[hash + 1..]);
    let raw = parse_hex_u32(id_txt).ok_or(LogError::Id)?;
    let extended = match id_txt.len() {
        3 => false,
        8 => true,
        _ => return Err(LogError::Id),
    };
    if extended && raw & ERR_FLAG != 0 {
        let mut data = [0u8; CAN_MAX_LEN];
        parse_data(rest, &mut data)?;
        return Ok(Frame::Error(ErrorFrame::new(raw & EFF_MASK, data)));
    }
    if (extended && raw > EFF_MASK) || (!extended && raw > SFF_MASK) {
        return Err(LogError::Id);
    }
    let id = make_id(raw, extended).map_err(|_| LogError::Id)?;
    if let Some(fd) = rest.strip_prefix(b"#") {
        let flags = fd.first().and_then(|&b| hex_val(b)).ok_or(LogError::FdFlags)?;
        let mut data = [0u8; CANFD_MAX_LEN];
        let n = parse_data(&fd[1..], &mut data)?;
        let len = fd_padded_len(n).ok_or(LogError::DataTooLong)?;
        let f = FdFrame::new(id, &data[..len], flags & 1 != 0, flags & 2 != 0).map_err(|_| LogError::DataTooLong)?;
        return Ok(Frame::Fd(f));
    }
    if let Some(r) = rest.strip_prefix(b"R").or_else(|| rest.strip_prefix(b"r")) {
        let len = match r {
            [] => 0,
            [d, tail @ ..] if d.is_ascii_digit() && *d <= b'8' && (tail.is_empty() || is_raw_dlc(tail)) => {
                (d - b'0') as usize
            }
            _ => return Err(LogError::RemoteLength),
        };
        return CanFrame::new_remote(id, len).map(Frame::Can).map_err(|_| LogError::RemoteLength);
    }
    let mut data = [0u8; CAN_MAX_LEN];
    // `_X` raw DLC (9-F) after exactly 8 bytes: accepted, not kept.
    let body = match rest.len() {
        n if n >= 2 && is_raw_dlc(&rest[n - 2..]) => &rest[..n - 2],
        _ => rest,
    };
    let n = parse_data(body, &mut data)?;
    if body.len() != rest.len() && n != CAN_MAX_LEN {
        return Err(LogError::Data);
    }
    CanFrame::new(id, &data[..n]).map(Frame::Can).map_err(|_| LogError::DataTooLong)
}

fn is_raw_dlc(s: &[u8]) -> bool {
    matches!(s, [b'_', d] if hex_val(*d).is_some())
}

/// Parses one log line (surrounding whitespace ignored). See the module doc.
pub fn parse_line(line: &str) -> Result<LogLine<'_>, LogError> {
    let mut fields = line.split_ascii_whitespace();
    let ts = fields.next().ok_or(LogError::Timestamp)?;
    let timestamp = parse_timestamp(ts).ok_or(LogError::Timestamp)?;
    let channel = fields.next().ok_or(LogError::MissingField)?;
    let frame_txt = fields.next().ok_or(LogError::MissingField)?;
    let direction = match fields.next() {
        None => None,
        Some("R") | Some("r") => Some(Direction::Rx),
        Some("T") | Some("t") => Some(Direction::Tx),
        Some(_) => return Err(LogError::TrailingText),
    };
    if fields.next().is_some() {
        return Err(LogError::TrailingText);
    }
    let frame = parse_frame(frame_txt)?;
    Ok(LogLine { timestamp, channel, frame, direction })
}

fn parse_timestamp(s: &str) -> Option<Timestamp> {
    let inner = s.strip_prefix('(')?.strip_suffix(')')?;
    let (sec, frac) = inner.split_once('.')?;
    if sec.is_empty() || sec.len() > 19 || frac.is_empty() || frac.len() > 9 {
        return None;
    }
    let mut secs = 0u64;
    for b in sec.bytes() {
        if !b.is_ascii_digit() {
            return None;
        }
        secs = secs.checked_mul(10)?.checked_add((b - b'0') as u64)?;
    }
    let mut micros = 0u32;
    for (i, b) in frac.bytes().enumerate() {
        if !b.is_ascii_digit() {
            return None;
        }
        if i < 6 {
            micros = micros * 10 + (b - b'0') as u32;
        }
    }
    for _ in frac.len()..6 {
        micros *= 10;
    }
    Some(Timestamp { secs, micros })
}

fn write_hex<W: fmt::Write>(w: &mut W, data: &[u8]) -> fmt::Result {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    for &b in data {
        w.write_char(HEX[(b >> 4) as usize] as char)?;
        w.write_char(HEX[(b & 15) as usize] as char)?;
    }
    Ok(())
}

/// Writes a frame in can-utils text (`sprint_canframe`): uppercase hex, ids
/// as 3 or 8 digits, `R<len>` for remote frames (no digit for length 0),
/// `##<flags>` for FD (BRS 1, ESI 2).
pub fn write_frame<W: fmt::Write>(w: &mut W, frame: &Frame) -> fmt::Result {
    match frame {
        Frame::Can(f) => {
            if f.is_extended() {
                write!(w, "{:08X}#", f.raw_id())?;
            } else {
                write!(w, "{:03X}#", f.raw_id())?;
            }
            if f.is_remote() {
                w.write_char('R')?;
                if f.dlc() > 0 {
                    write!(w, "{}", f.dlc())?;
                }
                Ok(())
            } else {
                write_hex(w, f.data())
            }
        }
        Frame::Fd(f) => {
            if f.is_extended() {
                write!(w, "{:08X}##", f.raw_id())?;
            } else {
                write!(w, "{:03X}##", f.raw_id())?;
            }
            write!(w, "{:X}", (f.brs() as u8) | ((f.esi() as u8) << 1))?;
            write_hex(w, f.data())
        }
        Frame::Error(e) => {
            write!(w, "{:08X}#", e.class() | ERR_FLAG)?;
            write_hex(w, e.data())
        }
    }
}

/// Writes one log line without the line break: `(SECONDS.MICROS) CHANNEL FRAME[ R|T]`.
pub fn write_line<W: fmt::Write>(w: &mut W, line: &LogLine<'_>) -> fmt::Result {
    write!(w, "({:010}.{:06}) {} ", line.timestamp.secs, line.timestamp.micros, line.channel)?;
    write_frame(w, &line.frame)?;
    match line.direction {
        Some(Direction::Rx) => w.write_str(" R"),
        Some(Direction::Tx) => w.write_str(" T"),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// A fixed-size `fmt::Write` buffer (the crate has no heap).
    struct Buf {
        b: [u8; 256],
        n: usize,
    }
    impl Buf {
        fn new() -> Buf {
            Buf { b: [0; 256], n: 0 }
        }
        fn as_str(&self) -> &str {
            core::str::from_utf8(&self.b[..self.n]).unwrap()
        }
    }
    impl fmt::Write for Buf {
        fn write_str(&mut self, s: &str) -> fmt::Result {
            let end = self.n + s.len();
            if end > self.b.len() {
                return Err(fmt::Error);
            }
            self.b[self.n..end].copy_from_slice(s.as_bytes());
            self.n = end;
            Ok(())
        }
    }

    fn line_text(l: &LogLine<'_>) -> Buf {
        let mut b = Buf::new();
        write_line(&mut b, l).unwrap();
        b
    }

    #[test]
    fn candump_examples() {
        let l = parse_line("(1436509052.249713) vcan0 044#2A366C2BBA\n").unwrap();
        assert_eq!(l.timestamp, Timestamp { secs: 1436509052, micros: 249713 });
        assert_eq!(l.channel, "vcan0");
        assert_eq!(l.direction, None);
        let Frame::Can(f) = l.frame else { panic!() };
        assert_eq!((f.raw_id(), f.is_extended(), f.data()), (0x44, false, &[0x2A, 0x36, 0x6C, 0x2B, 0xBA][..]));
        assert_eq!(line_text(&l).as_str(), "(1436509052.249713) vcan0 044#2A366C2BBA");

        let l = parse_line("(0000000001.000001) can1 12345678#R T").unwrap();
        let Frame::Can(f) = l.frame else { panic!() };
        assert!(f.is_remote() && f.is_extended() && f.dlc() == 0);
        assert_eq!(l.direction, Some(Direction::Tx));

        let l = parse_line("(1.5) vcan0 123##5112233445566778899").unwrap();
        assert_eq!(l.timestamp, Timestamp { secs: 1, micros: 500_000 });
        let Frame::Fd(f) = l.frame else { panic!() };
        assert!(f.brs() && !f.esi());
        assert_eq!(f.data().len(), 12, "9 bytes padded to 12 as cansend does");
        assert_eq!(&f.data()[9..], &[0, 0, 0]);

        let l = parse_line("(1.000000) vcan0 20000004#0004000000000000 R").unwrap();
        let Frame::Error(e) = l.frame else { panic!() };
        assert_eq!(e.class(), 4);
        assert_eq!(e.data()[1], 4);

        assert!(matches!(parse_frame("123#R3"), Ok(Frame::Can(f)) if f.is_remote() && f.dlc() == 3));
        assert!(matches!(parse_frame("123#11.22.33"), Ok(Frame::Can(f)) if f.data() == [0x11, 0x22, 0x33]));
        assert!(matches!(parse_frame("123#1122334455667788_C"), Ok(Frame::Can(f)) if f.data().len() == 8));
        assert!(matches!(parse_frame("123#"), Ok(Frame::Can(f)) if f.data().is_empty() && !f.is_remote()));
    }

    #[test]
    fn bad_input_names_the_problem() {
        for (text, err) in [
            ("vcan0 123#11", LogError::Timestamp),
            ("(1.x) vcan0 123#11", LogError::Timestamp),
            ("(1.0) vcan0", LogError::MissingField),
            ("(1.0) vcan0 123#11 X", LogError::TrailingText),
            ("(1.0) vcan0 12311", LogError::MissingSeparator),
            ("(1.0) vcan0 1234#11", LogError::Id),
            ("(1.0) vcan0 800#11", LogError::Id),
            ("(1.0) vcan0 123#1", LogError::Data),
            ("(1.0) vcan0 123#zz", LogError::Data),
            ("(1.0) vcan0 123#112233445566778899", LogError::DataTooLong),
            ("(1.0) vcan0 123##", LogError::FdFlags),
            ("(1.0) vcan0 123#R9", LogError::RemoteLength),
        ] {
            assert_eq!(parse_line(text).unwrap_err(), err, "{text}");
        }
        assert_eq!(parse_frame("123##0").map(|f| f.data().len()), Ok(0));
    }

    fn arb_frame() -> impl Strategy<Value = Frame> {
        let id = prop_oneof![(0u32..=SFF_MASK).prop_map(|i| (i, false)), (0u32..=EFF_MASK).prop_map(|i| (i, true))];
        prop_oneof![
            (id.clone(), proptest::collection::vec(any::<u8>(), 0..=8))
                .prop_map(|((i, e), d)| Frame::Can(CanFrame::new(make_id(i, e).unwrap(), &d).unwrap())),
            (id.clone(), 0usize..=8)
                .prop_map(|((i, e), n)| Frame::Can(CanFrame::new_remote(make_id(i, e).unwrap(), n).unwrap())),
            (id, proptest::collection::vec(any::<u8>(), 0..=64), any::<bool>(), any::<bool>()).prop_map(
                |((i, e), d, brs, esi)| {
                    let n = fd_padded_len(d.len()).unwrap();
                    let mut p = [0u8; 64];
                    p[..d.len()].copy_from_slice(&d);
                    Frame::Fd(FdFrame::new(make_id(i, e).unwrap(), &p[..n], brs, esi).unwrap())
                }
            ),
            (1u32..=EFF_MASK, any::<[u8; 8]>()).prop_map(|(c, d)| Frame::Error(ErrorFrame::new(c, d))),
        ]
    }

    proptest! {
        #[test]
        fn round_trip(frame in arb_frame(), secs in 0u64..10_000_000_000, micros in 0u32..1_000_000,
                      chan in "[a-z][a-z0-9]{0,14}", dir in prop_oneof![Just(None), Just(Some(Direction::Rx)), Just(Some(Direction::Tx))]) {
            let line = LogLine { timestamp: Timestamp { secs, micros }, channel: &chan, frame, direction: dir };
            let text = line_text(&line);
            prop_assert_eq!(parse_line(text.as_str()), Ok(line));
        }

        #[test]
        fn parser_never_panics(s in "\\PC{0,80}") {
            let _ = parse_line(&s);
            let _ = parse_frame(&s);
        }

        #[test]
        fn float_timestamps_round_trip(t in 0.0f64..4e9) {
            let ts = Timestamp::from_secs_f64(t);
            prop_assert!((ts.as_secs_f64() - t).abs() < 1e-6);
        }
    }
}
