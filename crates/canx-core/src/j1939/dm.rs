//! Diagnostic messages (J1939-73): the DM1/DM2 codec, a fixed-capacity DTC
//! store that answers DM1/DM2 and performs DM3/DM11 clears.
//!
//! DM1 (PGN 65226, active DTCs) and DM2 (65227, previously active) share a
//! layout (J1939-73 5.7.1): byte 1 lamp status, 2 bits each (malfunction
//! indicator bits 8-7, red stop 6-5, amber warning 4-3, protect 2-1); byte 2
//! the flash states in the same positions; then 4 bytes per DTC, a `u32`
//! little-endian: SPN low 16 bits (bits 0-15), FMI (16-20), SPN bits 16-18
//! (21-23), occurrence count (24-30), SPN conversion method (31).
//! With no DTC the message is 8 bytes: bytes 3-6 zero, bytes 7-8 0xFF. One
//! DTC also fits 8 bytes (padded 0xFF); more than one goes by BAM.
//! DM3 (65228) and DM11 (65235) are requested and answered with an
//! Acknowledgment after clearing previously active / active DTCs.

use core::fmt;

use super::id::Pgn;

/// 2-bit lamp status values (J1939-73 5.7.1.1).
pub mod lamp {
    pub const OFF: u8 = 0;
    pub const ON: u8 = 1;
    pub const ERROR: u8 = 2;
    pub const NOT_AVAILABLE: u8 = 3;
}

/// 2-bit flash values (J1939-73 5.7.1.2).
pub mod flash {
    /// Slow flash (1 Hz).
    pub const SLOW: u8 = 0;
    /// Fast flash (2 Hz or faster).
    pub const FAST: u8 = 1;
    pub const RESERVED: u8 = 2;
    /// Unavailable / do not flash.
    pub const OFF: u8 = 3;
}

/// The four 2-bit lamp fields of DM byte 1 (status) or byte 2 (flash).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct Lamps {
    pub malfunction: u8,
    pub red_stop: u8,
    pub amber_warning: u8,
    pub protect: u8,
}

impl Lamps {
    /// Every lamp off.
    pub const OFF: Lamps = Lamps { malfunction: 0, red_stop: 0, amber_warning: 0, protect: 0 };
    /// Every flash field "do not flash" (0xFF).
    pub const NO_FLASH: Lamps = Lamps { malfunction: 3, red_stop: 3, amber_warning: 3, protect: 3 };

    pub const fn from_byte(b: u8) -> Lamps {
        Lamps { malfunction: b >> 6, red_stop: (b >> 4) & 3, amber_warning: (b >> 2) & 3, protect: b & 3 }
    }
    /// Fields are masked to 2 bits.
    pub const fn to_byte(self) -> u8 {
        (self.malfunction & 3) << 6 | (self.red_stop & 3) << 4 | (self.amber_warning & 3) << 2 | (self.protect & 3)
    }
}

/// A diagnostic trouble code (J1939-73 5.7.1.5, conversion method 0 layout).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Dtc {
    /// Suspect parameter number, 19 bits.
    pub spn: u32,
    /// Failure mode identifier, 5 bits.
    pub fmi: u8,
    /// Occurrence count, 7 bits (127 = not available).
    pub occurrence_count: u8,
    /// SPN conversion method bit.
    pub conversion_method: bool,
}

/// A DTC field out of range, or a buffer too small.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DmError {
    Spn,
    Fmi,
    OccurrenceCount,
    /// The output buffer is too small (the `usize` is the length needed).
    BufferTooSmall(usize),
    /// A DM payload shorter than 2 bytes.
    Truncated,
    /// The store is full.
    Full,
}

impl fmt::Display for DmError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DmError::Spn => f.write_str("SPN must fit 19 bits"),
            DmError::Fmi => f.write_str("FMI must be 0-31"),
            DmError::OccurrenceCount => f.write_str("occurrence count must be 0-127"),
            DmError::BufferTooSmall(n) => write!(f, "buffer too small: {n} bytes needed"),
            DmError::Truncated => f.write_str("DM payload shorter than 2 bytes"),
            DmError::Full => f.write_str("DTC store full"),
        }
    }
}

impl core::error::Error for DmError {}

impl Dtc {
    /// Errors: the first field out of range.
    pub const fn new(spn: u32, fmi: u8, occurrence_count: u8) -> Result<Dtc, DmError> {
        if spn >= 1 << 19 {
            return Err(DmError::Spn);
        }
        if fmi >= 32 {
            return Err(DmError::Fmi);
        }
        if occurrence_count >= 128 {
            return Err(DmError::OccurrenceCount);
        }
        Ok(Dtc { spn, fmi, occurrence_count, conversion_method: false })
    }
    pub const fn from_u32(v: u32) -> Dtc {
        Dtc {
            spn: (v & 0xFFFF) | ((v >> 21) & 7) << 16,
            fmi: ((v >> 16) & 0x1F) as u8,
            occurrence_count: ((v >> 24) & 0x7F) as u8,
            conversion_method: v >> 31 != 0,
        }
    }
    /// Fields are masked to their widths.
    pub const fn to_u32(self) -> u32 {
        (self.spn & 0xFFFF)
            | ((self.fmi as u32) & 0x1F) << 16
            | ((self.spn >> 16) & 7) << 21
            | ((self.occurrence_count as u32) & 0x7F) << 24
            | (self.conversion_method as u32) << 31
    }
    pub const fn from_bytes(b: [u8; 4]) -> Dtc {
        Dtc::from_u32(u32::from_le_bytes(b))
    }
    pub const fn to_bytes(self) -> [u8; 4] {
        self.to_u32().to_le_bytes()
    }
}

/// A parsed DM1/DM2 payload borrowing its DTC bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DmMessage<'a> {
    pub lamps: Lamps,
    pub flash: Lamps,
    dtc_bytes: &'a [u8],
}

impl<'a> DmMessage<'a> {
    /// Parses untrusted bytes (single frame or reassembled TP); never panics.
    /// Errors: [`DmError::Truncated`] below 2 bytes.
    pub fn parse(data: &'a [u8]) -> Result<DmMessage<'a>, DmError> {
        match data {
            [l, f, rest @ ..] => {
                Ok(DmMessage { lamps: Lamps::from_byte(*l), flash: Lamps::from_byte(*f), dtc_bytes: rest })
            }
            _ => Err(DmError::Truncated),
        }
    }
    /// The DTCs: whole 4-byte groups, skipping the all-zero "no DTC" entry
    /// and all-0xFF padding.
    pub fn dtcs(&self) -> impl Iterator<Item = Dtc> + 'a {
        self.dtc_bytes
            .chunks_exact(4)
            .filter(|c| *c != [0, 0, 0, 0] && *c != [0xFF; 4])
            .map(|c| Dtc::from_bytes([c[0], c[1], c[2], c[3]]))
    }
}

/// Encodes a DM1/DM2 payload into `buf`; returns its length (8 for zero or
/// one DTC, 2 + 4n otherwise). Errors: [`DmError::BufferTooSmall`].
pub fn emit_dm(lamps: Lamps, flash: Lamps, dtcs: &[Dtc], buf: &mut [u8]) -> Result<usize, DmError> {
    let len = if dtcs.len() <= 1 { 8 } else { 2 + 4 * dtcs.len() };
    let out = buf.get_mut(..len).ok_or(DmError::BufferTooSmall(len))?;
    out[0] = lamps.to_byte();
    out[1] = flash.to_byte();
    if dtcs.is_empty() {
        out[2..].copy_from_slice(&[0, 0, 0, 0, 0xFF, 0xFF]);
    } else {
        out[2..].fill(0xFF);
        for (chunk, d) in out[2..].chunks_exact_mut(4).zip(dtcs) {
            chunk.copy_from_slice(&d.to_bytes());
        }
    }
    Ok(len)
}

/// What [`DtcStore::handle_request`] asks the application to send.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DmAnswer {
    /// Send these many bytes of the caller's buffer as the requested PGN.
    Data(usize),
    /// Send a positive Acknowledgment (DM3/DM11 done).
    Ack,
}

/// `N` active and `N` previously active DTCs with lamp states.
#[derive(Clone, Debug)]
pub struct DtcStore<const N: usize> {
    pub lamps: Lamps,
    pub flash: Lamps,
    active: [Option<Dtc>; N],
    previous: [Option<Dtc>; N],
}

impl<const N: usize> Default for DtcStore<N> {
    fn default() -> Self {
        Self::new()
    }
}

impl<const N: usize> DtcStore<N> {
    pub const fn new() -> Self {
        DtcStore { lamps: Lamps::OFF, flash: Lamps::NO_FLASH, active: [None; N], previous: [None; N] }
    }

    /// Makes `(spn, fmi)` active, raising its occurrence count (up to 126)
    /// if it was already known. Errors: [`DmError::Full`].
    pub fn activate(&mut self, spn: u32, fmi: u8) -> Result<(), DmError> {
        let key = |d: &Option<Dtc>| d.is_some_and(|d| d.spn == spn && d.fmi == fmi);
        if self.active.iter().any(key) {
            return Ok(());
        }
        let count = match self.previous.iter().position(key) {
            Some(i) => self.previous[i].take().map_or(1, |d| (d.occurrence_count + 1).min(126)),
            None => 1,
        };
        let dtc = Dtc::new(spn, fmi, count)?;
        let slot = self.active.iter_mut().find(|d| d.is_none()).ok_or(DmError::Full)?;
        *slot = Some(dtc);
        Ok(())
    }

    /// Moves `(spn, fmi)` from active to previously active (dropped if that
    /// list is full).
    pub fn deactivate(&mut self, spn: u32, fmi: u8) {
        for d in self.active.iter_mut() {
            if d.is_some_and(|d| d.spn == spn && d.fmi == fmi) {
                let moved = d.take();
                if let Some(slot) = self.previous.iter_mut().find(|p| p.is_none()) {
                    *slot = moved;
                }
            }
        }
    }

    pub fn active(&self) -> impl Iterator<Item = Dtc> + '_ {
        self.active.iter().flatten().copied()
    }
    pub fn previously_active(&self) -> impl Iterator<Item = Dtc> + '_ {
        self.previous.iter().flatten().copied()
    }

    /// Encodes DM1 (`previous == false`) or DM2 into `buf`.
    pub fn emit(&self, previous: bool, buf: &mut [u8]) -> Result<usize, DmError> {
        let list = if previous { &self.previous } else { &self.active };
        let mut dtcs = [Dtc { spn: 0, fmi: 0, occurrence_count: 0, conversion_method: false }; N];
        let mut n = 0;
        for d in list.iter().flatten() {
            dtcs[n] = *d;
            n += 1;
        }
        emit_dm(self.lamps, self.flash, &dtcs[..n], buf)
    }

    /// Answers a request for DM1/DM2 (data in `buf`) or performs DM3 (clear
    /// previously active) / DM11 (clear active, lamps off) and asks for an
    /// ACK. `None` for other PGNs.
    pub fn handle_request(&mut self, pgn: Pgn, buf: &mut [u8]) -> Option<Result<DmAnswer, DmError>> {
        match pgn {
            Pgn::DM1 => Some(self.emit(false, buf).map(DmAnswer::Data)),
            Pgn::DM2 => Some(self.emit(true, buf).map(DmAnswer::Data)),
            Pgn::DM3 => {
                self.previous = [None; N];
                Some(Ok(DmAnswer::Ack))
            }
            Pgn::DM11 => {
                self.active = [None; N];
                self.lamps = Lamps::OFF;
                Some(Ok(DmAnswer::Ack))
            }
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn no_dtc_form() {
        let mut buf = [0u8; 8];
        let n = emit_dm(Lamps::OFF, Lamps::NO_FLASH, &[], &mut buf).unwrap();
        assert_eq!(&buf[..n], &[0x00, 0xFF, 0x00, 0x00, 0x00, 0x00, 0xFF, 0xFF]);
        let m = DmMessage::parse(&buf).unwrap();
        assert_eq!(m.dtcs().count(), 0);
        assert_eq!(m.flash, Lamps::NO_FLASH);
    }

    #[test]
    fn one_dtc_hand_vector() {
        // SPN 110 (coolant temp), FMI 0, OC 5, amber lamp on, MIL on.
        let dtc = Dtc::new(110, 0, 5).unwrap();
        assert_eq!(dtc.to_bytes(), [0x6E, 0x00, 0x00, 0x05]);
        // SPN 524287 (max), FMI 31, OC 127, CM 1.
        let big = Dtc { spn: 0x7FFFF, fmi: 31, occurrence_count: 127, conversion_method: true };
        assert_eq!(big.to_bytes(), [0xFF, 0xFF, 0xFF, 0xFF]);
        let dtc2 = Dtc::new(0x5_1234, 3, 1).unwrap();
        // low 16 = 0x1234; byte2 = FMI 3 | (SPN>>16 = 5) << 5 = 0xA3.
        assert_eq!(dtc2.to_bytes(), [0x34, 0x12, 0xA3, 0x01]);
        let lamps = Lamps { malfunction: lamp::ON, amber_warning: lamp::ON, ..Lamps::OFF };
        assert_eq!(lamps.to_byte(), 0x44);
        let mut buf = [0u8; 8];
        assert_eq!(emit_dm(lamps, Lamps::NO_FLASH, &[dtc], &mut buf), Ok(8));
        assert_eq!(buf, [0x44, 0xFF, 0x6E, 0x00, 0x00, 0x05, 0xFF, 0xFF]);
        assert_eq!(DmMessage::parse(&buf).unwrap().dtcs().collect::<std::vec::Vec<_>>(), [dtc]);
    }

    #[test]
    fn many_dtcs_and_errors() {
        let dtcs = [Dtc::new(1, 1, 1).unwrap(), Dtc::new(2, 2, 2).unwrap(), Dtc::new(3, 3, 3).unwrap()];
        let mut buf = [0u8; 14];
        assert_eq!(emit_dm(Lamps::OFF, Lamps::NO_FLASH, &dtcs, &mut buf[..13]), Err(DmError::BufferTooSmall(14)));
        assert_eq!(emit_dm(Lamps::OFF, Lamps::NO_FLASH, &dtcs, &mut buf), Ok(14));
        assert_eq!(DmMessage::parse(&buf).unwrap().dtcs().collect::<std::vec::Vec<_>>(), dtcs);
        assert_eq!(DmMessage::parse(&[1]), Err(DmError::Truncated));
        assert_eq!(Dtc::new(1 << 19, 0, 0), Err(DmError::Spn));
        assert_eq!(Dtc::new(0, 32, 0), Err(DmError::Fmi));
        assert_eq!(Dtc::new(0, 0, 128), Err(DmError::OccurrenceCount));
    }

    #[test]
    fn store_dm1_dm2_dm3_dm11() {
        let mut s = DtcStore::<4>::new();
        let mut buf = [0u8; 64];
        s.activate(190, 2).unwrap();
        s.activate(110, 0).unwrap();
        s.lamps.amber_warning = lamp::ON;
        assert_eq!(s.handle_request(Pgn::DM1, &mut buf), Some(Ok(DmAnswer::Data(10))));
        s.deactivate(190, 2);
        s.activate(190, 2).unwrap(); // back: count 2
        assert_eq!(s.active().find(|d| d.spn == 190).unwrap().occurrence_count, 2);
        s.deactivate(110, 0);
        assert_eq!(s.handle_request(Pgn::DM2, &mut buf), Some(Ok(DmAnswer::Data(8))));
        assert_eq!(DmMessage::parse(&buf[..8]).unwrap().dtcs().next().unwrap().spn, 110);
        assert_eq!(s.handle_request(Pgn::DM3, &mut buf), Some(Ok(DmAnswer::Ack)));
        assert_eq!(s.previously_active().count(), 0);
        assert_eq!(s.handle_request(Pgn::DM11, &mut buf), Some(Ok(DmAnswer::Ack)));
        assert_eq!(s.active().count(), 0);
        assert_eq!(s.lamps, Lamps::OFF);
        assert_eq!(s.handle_request(Pgn::EEC1, &mut buf), None);
        for k in 0..4 {
            s.activate(k, 1).unwrap();
        }
        assert_eq!(s.activate(9, 1), Err(DmError::Full));
    }

    proptest! {
        #[test]
        fn dtc_roundtrip(v: u32) {
            prop_assert_eq!(Dtc::from_u32(v).to_u32(), v);
        }

        #[test]
        fn dtc_fields(spn in 0u32..1 << 19, fmi in 0u8..32, oc in 0u8..128, cm: bool) {
            let d = Dtc { spn, fmi, occurrence_count: oc, conversion_method: cm };
            prop_assert_eq!(Dtc::from_bytes(d.to_bytes()), d);
        }

        #[test]
        fn lamps_roundtrip(b: u8) {
            prop_assert_eq!(Lamps::from_byte(b).to_byte(), b);
        }

        #[test]
        fn dm_parse_never_panics(data in proptest::collection::vec(any::<u8>(), 0..64)) {
            if let Ok(m) = DmMessage::parse(&data) {
                prop_assert!(m.dtcs().count() <= data.len() / 4);
            }
        }
    }
}
