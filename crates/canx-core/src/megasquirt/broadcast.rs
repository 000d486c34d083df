//! Decoders for the realtime broadcasts on 11-bit identifiers: the
//! simplified dash broadcast (base 0x5E8, 5 frames) and the advanced
//! broadcast (base 0x5F0 + group). All fields are big-endian;
//! `physical = raw * mult / div + add`.
//!
//! Sources: `docs/protocols/megasquirt.md`, "Realtime broadcast"; the field
//! table of the msextra document "Megasquirt-2 and Megasquirt-3 CAN realtime
//! data broadcasting format" (2016) for the advanced groups (names, units,
//! signedness and scaling as published there). Groups 0..=15 are decoded.

use crate::frame::{id_raw, Frame, Id};

/// Default id of the first simplified dash frame.
pub const DASH_BASE: u16 = 0x5E8;
/// Number of simplified dash frames.
pub const DASH_FRAMES: u16 = 5;
/// Default id of advanced group 0.
pub const ADVANCED_BASE: u16 = 0x5F0;
/// Advanced groups the protocol defines (0..63).
pub const ADVANCED_GROUPS: u16 = 64;

/// One field of a broadcast frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Field {
    /// The firmware's variable name (`rpm`, `map`, ...).
    pub name: &'static str,
    /// Unit of the physical value (`kPa`, `degF`, `%`, ...; empty for bitfields and counts).
    pub unit: &'static str,
    /// Byte offset in the frame.
    pub offset: u8,
    /// Size in bytes: 1, 2 or 4 (4 only signed).
    pub size: u8,
    pub signed: bool,
    pub mult: i32,
    pub div: i32,
    pub add: i32,
}

impl Field {
    const fn new(
        name: &'static str,
        unit: &'static str,
        offset: u8,
        size: u8,
        signed: bool,
        mult: i32,
        div: i32,
    ) -> Field {
        Field { name, unit, offset, size, signed, mult, div, add: 0 }
    }

    /// The raw integer at this field's place; `None` if the frame is too short.
    pub fn raw(&self, data: &[u8]) -> Option<i32> {
        let o = usize::from(self.offset);
        match (self.size, self.signed) {
            (1, false) => data.get(o).map(|&b| i32::from(b)),
            (1, true) => data.get(o).map(|&b| i32::from(b as i8)),
            (2, false) => data.get(o..o + 2).map(|b| i32::from(u16::from_be_bytes([b[0], b[1]]))),
            (2, true) => data.get(o..o + 2).map(|b| i32::from(i16::from_be_bytes([b[0], b[1]]))),
            (4, true) => data.get(o..o + 4).map(|b| i32::from_be_bytes([b[0], b[1], b[2], b[3]])),
            _ => None,
        }
    }

    /// `raw * mult / div + add` (a zero `div` is treated as 1).
    pub fn scale(&self, raw: i32) -> f64 {
        let div = if self.div == 0 { 1.0 } else { f64::from(self.div) };
        f64::from(raw) * f64::from(self.mult) / div + f64::from(self.add)
    }

    /// The physical value; `None` if the frame is too short.
    pub fn value(&self, data: &[u8]) -> Option<f64> {
        self.raw(data).map(|r| self.scale(r))
    }
}

const fn u8f(name: &'static str, unit: &'static str, offset: u8, div: i32) -> Field {
    Field::new(name, unit, offset, 1, false, 1, div)
}
const fn u16f(name: &'static str, unit: &'static str, offset: u8, div: i32) -> Field {
    Field::new(name, unit, offset, 2, false, 1, div)
}
const fn s32f(name: &'static str, unit: &'static str, offset: u8, div: i32) -> Field {
    Field::new(name, unit, offset, 4, true, 1, div)
}
const fn s16f(name: &'static str, unit: &'static str, offset: u8, div: i32) -> Field {
    Field::new(name, unit, offset, 2, true, 1, div)
}

/// The simplified dash broadcast, frame by frame (base+0 .. base+4).
pub static DASH: [&[Field]; DASH_FRAMES as usize] = [
    &[s16f("map", "kPa", 0, 10), u16f("rpm", "RPM", 2, 1), s16f("clt", "degF", 4, 10), s16f("tps", "%", 6, 10)],
    &[u16f("pw1", "us", 0, 1), u16f("pw2", "us", 2, 1), s16f("mat", "degF", 4, 10), s16f("adv_deg", "deg", 6, 10)],
    &[
        u8f("afrtgt1", "AFR", 0, 10),
        u8f("afr1", "AFR", 1, 10),
        s16f("egocor1", "%", 2, 10),
        s16f("egt1", "degF", 4, 10),
        u16f("pwseq1", "us", 6, 1),
    ],
    &[
        s16f("batt", "V", 0, 10),
        s16f("sensors1", "", 2, 10),
        s16f("sensors2", "", 4, 10),
        s16f("knk_rtd", "deg", 6, 10),
    ],
    &[u16f("vss1", "m/s", 0, 10), s16f("tc_retard", "deg", 2, 10), s16f("launch_timing", "deg", 4, 10)],
];

/// The advanced broadcast, groups 0..=15 (base+group).
pub static ADVANCED: [&[Field]; 16] = [
    &[u16f("seconds", "s", 0, 1), u16f("pw1", "ms", 2, 1000), u16f("pw2", "ms", 4, 1000), u16f("rpm", "RPM", 6, 1)],
    &[
        s16f("adv_deg", "deg BTDC", 0, 10),
        u8f("squirt", "", 2, 1),
        u8f("engine", "", 3, 1),
        u8f("afrtgt1", "AFR", 4, 10),
        u8f("afrtgt2", "AFR", 5, 10),
        u8f("wbo2_en1", "", 6, 1),
        u8f("wbo2_en2", "", 7, 1),
    ],
    &[s16f("baro", "kPa", 0, 10), s16f("map", "kPa", 2, 10), s16f("mat", "degF", 4, 10), s16f("clt", "degF", 6, 10)],
    &[
        s16f("tps", "%", 0, 10),
        s16f("batt", "V", 2, 10),
        s16f("afr1_old", "AFR", 4, 10),
        s16f("afr2_old", "AFR", 6, 10),
    ],
    &[s16f("knock", "%", 0, 10), s16f("egocor1", "%", 2, 10), s16f("egocor2", "%", 4, 10), s16f("aircor", "%", 6, 10)],
    &[
        s16f("warmcor", "%", 0, 10),
        s16f("tpsaccel", "%", 2, 10),
        s16f("tpsfuelcut", "%", 4, 10),
        s16f("barocor", "%", 6, 10),
    ],
    &[s16f("totalcor", "%", 0, 10), s16f("ve1", "%", 2, 10), s16f("ve2", "%", 4, 10), s16f("iacstep", "step", 6, 1)],
    &[
        s16f("cold_adv_deg", "deg", 0, 10),
        s16f("TPSdot", "%/s", 2, 10),
        s16f("MAPdot", "kPa/s", 4, 1),
        Field::new("RPMdot", "RPM/s", 6, 2, true, 10, 1),
    ],
    &[
        s16f("MAFload", "%", 0, 10),
        s16f("fuelload", "%", 2, 10),
        s16f("fuelcor", "%", 4, 10),
        s16f("MAF", "g/s", 6, 100),
    ],
    &[
        s16f("egoV1", "V", 0, 100),
        s16f("egoV2", "V", 2, 100),
        u16f("dwell", "ms", 4, 10),
        u16f("dwell_trl", "ms", 6, 10),
    ],
    &[
        u8f("status1", "", 0, 1),
        u8f("status2", "", 1, 1),
        u8f("status3", "", 2, 1),
        u8f("status4", "", 3, 1),
        s16f("status5", "", 4, 1),
        u8f("status6", "", 6, 1),
        u8f("status7", "", 7, 1),
    ],
    &[
        s16f("fuelload2", "%", 0, 10),
        s16f("ignload", "%", 2, 10),
        s16f("ignload2", "%", 4, 10),
        s16f("airtemp", "degF", 6, 10),
    ],
    &[s32f("wallfuel1", "us", 0, 100), s32f("wallfuel2", "us", 4, 100)],
    &[
        s16f("sensors1", "", 0, 10),
        s16f("sensors2", "", 2, 10),
        s16f("sensors3", "", 4, 10),
        s16f("sensors4", "", 6, 10),
    ],
    &[
        s16f("sensors5", "", 0, 10),
        s16f("sensors6", "", 2, 10),
        s16f("sensors7", "", 4, 10),
        s16f("sensors8", "", 6, 10),
    ],
    &[
        s16f("sensors9", "", 0, 10),
        s16f("sensors10", "", 2, 10),
        s16f("sensors11", "", 4, 10),
        s16f("sensors12", "", 6, 10),
    ],
];

/// Which broadcast a frame belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Source {
    /// Simplified dash frame 0..4.
    Dash(u8),
    /// Advanced group 0..63.
    Advanced(u8),
}

/// A decoder with configurable base ids (`None` turns a broadcast off).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BroadcastDecoder {
    pub dash_base: Option<u16>,
    pub advanced_base: Option<u16>,
}

impl Default for BroadcastDecoder {
    fn default() -> Self {
        BroadcastDecoder { dash_base: Some(DASH_BASE), advanced_base: Some(ADVANCED_BASE) }
    }
}

impl BroadcastDecoder {
    /// Which broadcast frame an identifier is; `None` for extended ids and
    /// ids outside both ranges. The dash range wins if the ranges overlap.
    pub fn source(&self, id: Id) -> Option<Source> {
        let Id::Standard(_) = id else { return None };
        let raw = id_raw(id);
        let rel = |base: Option<u16>, n: u16| {
            base.and_then(|b| raw.checked_sub(u32::from(b))).filter(|&r| r < u32::from(n)).map(|r| r as u8)
        };
        rel(self.dash_base, DASH_FRAMES)
            .map(Source::Dash)
            .or_else(|| rel(self.advanced_base, ADVANCED_GROUPS).map(Source::Advanced))
    }

    /// The field table of a source; `None` for advanced groups not decoded.
    pub fn fields(source: Source) -> Option<&'static [Field]> {
        match source {
            Source::Dash(i) => DASH.get(usize::from(i)).copied(),
            Source::Advanced(g) => ADVANCED.get(usize::from(g)).copied(),
        }
    }

    /// Decodes a frame into `(name, value, unit)` tuples; `None` if the
    /// frame is not a (decoded) broadcast frame. Fields past the end of a
    /// short frame are skipped.
    pub fn decode<'a>(&self, frame: &'a Frame) -> Option<Decoded<'a>> {
        let Frame::Can(f) = frame else { return None };
        if f.is_remote() {
            return None;
        }
        let fields = Self::fields(self.source(f.id())?)?;
        Some(Decoded { fields, data: f.data(), next: 0 })
    }
}

/// Iterator over the decoded fields of one frame.
#[derive(Clone, Debug)]
pub struct Decoded<'a> {
    fields: &'static [Field],
    data: &'a [u8],
    next: usize,
}

impl Iterator for Decoded<'_> {
    type Item = (&'static str, f64, &'static str);
    fn next(&mut self) -> Option<Self::Item> {
        while let Some(f) = self.fields.get(self.next) {
            self.next += 1;
            if let Some(v) = f.value(self.data) {
                return Some((f.name, v, f.unit));
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{CanFrame, ExtendedId, StandardId};
    use std::vec::Vec;

    fn std_frame(id: u16, data: &[u8]) -> Frame {
        Frame::Can(CanFrame::new(StandardId::new(id).unwrap(), data).unwrap())
    }

    fn decode(d: &BroadcastDecoder, f: &Frame) -> Vec<(&'static str, f64, &'static str)> {
        d.decode(f).unwrap().collect()
    }

    #[test]
    fn dash_frame_0() {
        let d = BroadcastDecoder::default();
        // MAP 100.0 kPa (1000 = 0x03E8), RPM 3000 (0x0BB8), CLT -40.0 degF (-400 = 0xFE70), TPS 12.5 % (125 = 0x007D)
        let f = std_frame(0x5E8, &[0x03, 0xE8, 0x0B, 0xB8, 0xFE, 0x70, 0x00, 0x7D]);
        assert_eq!(
            decode(&d, &f),
            [("map", 100.0, "kPa"), ("rpm", 3000.0, "RPM"), ("clt", -40.0, "degF"), ("tps", 12.5, "%")]
        );
        // AFR target 14.7 (147 = 0x93) as u8, AFR 25.5 (0xFF, unsigned)
        let f = std_frame(0x5EA, &[0x93, 0xFF, 0, 0, 0, 0, 0x01, 0x00]);
        let v = decode(&d, &f);
        assert_eq!(v[0], ("afrtgt1", 14.7, "AFR"));
        assert_eq!(v[1], ("afr1", 25.5, "AFR"));
        assert_eq!(v[4], ("pwseq1", 256.0, "us"));
        assert_eq!(d.source(std_frame(0x5EC, &[]).id().unwrap()), Some(Source::Dash(4)));
        assert_eq!(d.source(std_frame(0x5ED, &[]).id().unwrap()), None);
    }

    #[test]
    fn advanced_groups() {
        let d = BroadcastDecoder::default();
        // group 0: seconds 600, pw1 3.5 ms (3500 = 0x0DAC), pw2 0, rpm 850 (0x0352)
        let f = std_frame(0x5F0, &[0x02, 0x58, 0x0D, 0xAC, 0, 0, 0x03, 0x52]);
        assert_eq!(
            decode(&d, &f),
            [("seconds", 600.0, "s"), ("pw1", 3.5, "ms"), ("pw2", 0.0, "ms"), ("rpm", 850.0, "RPM")]
        );
        // group 2: baro 101.3, map 35.0, mat 77.0, clt 190.5
        let f = std_frame(0x5F2, &[0x03, 0xF5, 0x01, 0x5E, 0x03, 0x02, 0x07, 0x71]);
        assert_eq!(
            decode(&d, &f),
            [("baro", 101.3, "kPa"), ("map", 35.0, "kPa"), ("mat", 77.0, "degF"), ("clt", 190.5, "degF")]
        );
        // group 3: tps -1.0 (0xFFF6), batt 13.8, afr1_old 14.7, afr2_old 0
        let f = std_frame(0x5F3, &[0xFF, 0xF6, 0x00, 0x8A, 0x00, 0x93, 0, 0]);
        assert_eq!(
            decode(&d, &f),
            [("tps", -1.0, "%"), ("batt", 13.8, "V"), ("afr1_old", 14.7, "AFR"), ("afr2_old", 0.0, "AFR")]
        );
        // RPMdot has mult 10
        let f = std_frame(0x5F7, &[0, 0, 0, 0, 0, 0, 0xFF, 0xFF]);
        assert_eq!(decode(&d, &f)[3], ("RPMdot", -10.0, "RPM/s"));
        // short frame: only whole fields
        assert_eq!(decode(&d, &std_frame(0x5F0, &[0, 1, 0])), [("seconds", 1.0, "s")]);
        // group 12: two big-endian s32 at 1/100: 0x0000_3039 = 12345 -> 123.45; -1 -> -0.01
        let f = std_frame(0x5FC, &[0, 0, 0x30, 0x39, 0xFF, 0xFF, 0xFF, 0xFF]);
        assert_eq!(decode(&d, &f), [("wallfuel1", 123.45, "us"), ("wallfuel2", -0.01, "us")]);
        // group 16 exists on the bus but is not decoded; extended ids never match
        assert!(d.decode(&std_frame(0x600, &[0; 8])).is_none());
        let e = Frame::Can(CanFrame::new(ExtendedId::new(0x5F0).unwrap(), &[0; 8]).unwrap());
        assert!(d.decode(&e).is_none());
    }

    #[test]
    fn configurable_bases() {
        let d = BroadcastDecoder { dash_base: None, advanced_base: Some(0x400) };
        assert!(d.decode(&std_frame(0x5E8, &[0; 8])).is_none());
        assert!(d.decode(&std_frame(0x5F0, &[0; 8])).is_none());
        assert_eq!(d.source(std_frame(0x402, &[]).id().unwrap()), Some(Source::Advanced(2)));
        assert_eq!(decode(&d, &std_frame(0x400, &[0, 0, 0, 0, 0, 0, 0, 1]))[3], ("rpm", 1.0, "RPM"));
        assert_eq!(d.source(std_frame(0x440, &[]).id().unwrap()), None);
    }

    #[test]
    fn tables_are_consistent() {
        for fields in DASH.iter().chain(ADVANCED.iter()) {
            let mut end = 0;
            for f in fields.iter() {
                assert!((matches!(f.size, 1 | 2) || f.size == 4 && f.signed) && f.div != 0, "{f:?}");
                assert!(usize::from(f.offset) >= end, "{f:?} overlaps");
                end = usize::from(f.offset) + usize::from(f.size);
                assert!(end <= 8, "{f:?}");
            }
        }
    }
}
