//! Typed codecs of application PGNs (J1939-71): EEC1 engine speed, ET1
//! temperatures, Vehicle Identification.
//!
//! Parameter conventions (J1939-71 5.1.4): a 1-byte value is valid up to
//! 0xFA (0xFE error, 0xFF not available); a 2-byte value up to 0xFAFF. The
//! decoders return `None` for error and not-available values; unused bytes
//! are sent as 0xFF.

use core::fmt;

use super::id::Pgn;

/// Largest valid 1-byte parameter value.
pub const MAX_VALID_U8: u8 = 0xFA;
/// Largest valid 2-byte parameter value.
pub const MAX_VALID_U16: u16 = 0xFAFF;

/// EEC1, PGN 61444 (0xF004), priority 3, SPN 190 engine speed.
pub mod eec1 {
    use super::*;

    pub const PGN: Pgn = Pgn::EEC1;
    pub const PRIORITY: u8 = 3;
    /// Resolution of SPN 190: 0.125 rpm/bit, offset 0, range 0..=8031.875 rpm.
    pub const RPM_PER_BIT: f32 = 0.125;

    /// Raw SPN 190 (bytes 4-5, 1-based, little-endian), if valid.
    pub fn engine_speed_raw(data: &[u8]) -> Option<u16> {
        let raw = u16::from_le_bytes([*data.get(3)?, *data.get(4)?]);
        (raw <= MAX_VALID_U16).then_some(raw)
    }

    /// SPN 190 in rpm, if valid.
    pub fn engine_speed(data: &[u8]) -> Option<f32> {
        engine_speed_raw(data).map(|r| f32::from(r) * RPM_PER_BIT)
    }

    /// Raw value of `rpm` (rounded to the nearest 0.125 rpm); `None`
    /// outside 0..=8031.875 rpm or for NaN.
    pub fn raw_from_rpm(rpm: f32) -> Option<u16> {
        if !(0.0..=8031.875).contains(&rpm) {
            return None;
        }
        Some((rpm * 8.0 + 0.5) as u16)
    }

    /// An EEC1 payload carrying only the engine speed (other bytes 0xFF;
    /// `None` encodes "not available").
    pub fn encode(engine_speed_raw: Option<u16>) -> [u8; 8] {
        let mut d = [0xFF; 8];
        let raw = engine_speed_raw.filter(|r| *r <= MAX_VALID_U16).unwrap_or(0xFFFF);
        d[3..5].copy_from_slice(&raw.to_le_bytes());
        d
    }
}

/// ET1, PGN 65262 (0xFEEE): SPN 110 coolant (byte 1) and SPN 174 fuel
/// temperature (byte 2), 1 degC/bit, offset -40 degC (-40..=210 degC).
pub mod et1 {
    use super::*;

    pub const PGN: Pgn = Pgn::ET1;
    pub const PRIORITY: u8 = 6;
    pub const OFFSET_DEG_C: i16 = -40;

    fn temp(data: &[u8], i: usize) -> Option<i16> {
        let raw = *data.get(i)?;
        (raw <= MAX_VALID_U8).then_some(i16::from(raw) + OFFSET_DEG_C)
    }
    fn raw(deg_c: Option<i16>) -> u8 {
        match deg_c {
            Some(t) if (-40..=210).contains(&t) => (t - OFFSET_DEG_C) as u8,
            _ => 0xFF,
        }
    }

    /// SPN 110 engine coolant temperature, degC.
    pub fn coolant_temperature(data: &[u8]) -> Option<i16> {
        temp(data, 0)
    }
    /// SPN 174 fuel temperature, degC.
    pub fn fuel_temperature(data: &[u8]) -> Option<i16> {
        temp(data, 1)
    }
    /// An ET1 payload; `None` or out-of-range (-40..=210 degC) values are
    /// sent as not available.
    pub fn encode(coolant_deg_c: Option<i16>, fuel_deg_c: Option<i16>) -> [u8; 8] {
        let mut d = [0xFF; 8];
        d[0] = raw(coolant_deg_c);
        d[1] = raw(fuel_deg_c);
        d
    }
}

/// Vehicle Identification, PGN 65260 (0xFEEC), SPN 237: ASCII VIN
/// terminated by `*`, usually sent by TP on request.
pub mod vin {
    use super::*;

    pub const PGN: Pgn = Pgn::VEHICLE_IDENTIFICATION;

    /// Why a VIN could not be decoded or encoded.
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub enum VinError {
        /// A byte that is not printable ASCII (or a `*` inside the VIN).
        NotAscii,
        /// The buffer cannot hold the VIN and its `*`.
        BufferTooSmall,
    }

    impl fmt::Display for VinError {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str(match self {
                VinError::NotAscii => "VIN must be printable ASCII without '*'",
                VinError::BufferTooSmall => "buffer too small for the VIN",
            })
        }
    }

    impl core::error::Error for VinError {}

    /// The VIN: the bytes before the first `*` (or all of them, trailing
    /// 0xFF padding removed, if there is no `*`).
    pub fn decode(data: &[u8]) -> Result<&str, VinError> {
        let end = match data.iter().position(|&b| b == b'*') {
            Some(i) => i,
            None => data.len() - data.iter().rev().take_while(|&&b| b == 0xFF).count(),
        };
        let s = &data[..end];
        if !s.iter().all(|b| (0x20..0x7F).contains(b)) {
            return Err(VinError::NotAscii);
        }
        core::str::from_utf8(s).map_err(|_| VinError::NotAscii)
    }

    /// Writes `vin` and `*` into `buf`; returns the length.
    pub fn encode(vin: &str, buf: &mut [u8]) -> Result<usize, VinError> {
        let b = vin.as_bytes();
        if !b.iter().all(|c| (0x20..0x7F).contains(c) && *c != b'*') {
            return Err(VinError::NotAscii);
        }
        let out = buf.get_mut(..b.len() + 1).ok_or(VinError::BufferTooSmall)?;
        out[..b.len()].copy_from_slice(b);
        out[b.len()] = b'*';
        Ok(b.len() + 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn eec1_1800_rpm() {
        // 1800 rpm / 0.125 = 14400 = 0x3840, bytes 4-5 little-endian.
        assert_eq!(eec1::raw_from_rpm(1800.0), Some(14400));
        let d = eec1::encode(Some(14400));
        assert_eq!(d, [0xFF, 0xFF, 0xFF, 0x40, 0x38, 0xFF, 0xFF, 0xFF]);
        assert_eq!(eec1::engine_speed(&d), Some(1800.0));
        assert_eq!(eec1::engine_speed(&eec1::encode(None)), None);
        assert_eq!(eec1::engine_speed(&[0, 0, 0, 0xFF, 0xFA]), Some(8031.875));
        assert_eq!(eec1::engine_speed(&[0, 0, 0, 0x00, 0xFB]), None);
        assert_eq!(eec1::engine_speed(&[0, 0, 0, 0]), None);
        assert_eq!(eec1::raw_from_rpm(8031.875), Some(0xFAFF));
        assert_eq!(eec1::raw_from_rpm(8032.0), None);
        assert_eq!(eec1::raw_from_rpm(-1.0), None);
        assert_eq!(eec1::raw_from_rpm(f32::NAN), None);
        // A captured frame: 0CF00400#F07D7D403882FFF0 -> 1800 rpm.
        assert_eq!(eec1::engine_speed(&[0xF0, 0x7D, 0x7D, 0x40, 0x38, 0x82, 0xFF, 0xF0]), Some(1800.0));
    }

    #[test]
    fn et1_temperatures() {
        // Coolant 85 degC -> 125 (0x7D); fuel 40 degC -> 80 (0x50).
        let d = et1::encode(Some(85), Some(40));
        assert_eq!(d, [0x7D, 0x50, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF]);
        assert_eq!(et1::coolant_temperature(&d), Some(85));
        assert_eq!(et1::fuel_temperature(&d), Some(40));
        assert_eq!(et1::coolant_temperature(&[0]), Some(-40));
        assert_eq!(et1::coolant_temperature(&[0xFA]), Some(210));
        assert_eq!(et1::coolant_temperature(&[0xFE]), None);
        assert_eq!(et1::fuel_temperature(&[0x00]), None);
        assert_eq!(et1::encode(Some(211), None), [0xFF; 8]);
    }

    #[test]
    fn vin_star_terminated() {
        let mut buf = [0u8; 32];
        let n = vin::encode("1M8GDM9AXKP042788", &mut buf).unwrap();
        assert_eq!(&buf[..n], b"1M8GDM9AXKP042788*");
        assert_eq!(vin::decode(&buf[..n]), Ok("1M8GDM9AXKP042788"));
        assert_eq!(vin::decode(b"ABC*\xFF\xFF"), Ok("ABC"));
        assert_eq!(vin::decode(b"ABC\xFF\xFF"), Ok("ABC"));
        assert_eq!(vin::decode(b"AB\x01*"), Err(vin::VinError::NotAscii));
        assert_eq!(vin::encode("A*B", &mut buf), Err(vin::VinError::NotAscii));
        assert_eq!(vin::encode("ABCD", &mut buf[..4]), Err(vin::VinError::BufferTooSmall));
    }

    proptest! {
        #[test]
        fn eec1_roundtrip(raw in 0u16..=0xFAFF) {
            let d = eec1::encode(Some(raw));
            prop_assert_eq!(eec1::engine_speed_raw(&d), Some(raw));
            prop_assert_eq!(eec1::raw_from_rpm(eec1::engine_speed(&d).unwrap()), Some(raw));
        }

        #[test]
        fn et1_roundtrip(c in -40i16..=210, f in -40i16..=210) {
            let d = et1::encode(Some(c), Some(f));
            prop_assert_eq!((et1::coolant_temperature(&d), et1::fuel_temperature(&d)), (Some(c), Some(f)));
        }

        #[test]
        fn vin_roundtrip(s in "[A-HJ-NPR-Z0-9]{0,40}") {
            let mut buf = [0u8; 64];
            let n = vin::encode(&s, &mut buf).unwrap();
            prop_assert_eq!(vin::decode(&buf[..n]), Ok(s.as_str()));
        }

        #[test]
        fn decoders_never_panic(data in proptest::collection::vec(any::<u8>(), 0..20)) {
            let _ = eec1::engine_speed(&data);
            let _ = et1::coolant_temperature(&data);
            let _ = et1::fuel_temperature(&data);
            let _ = vin::decode(&data);
        }
    }
}
