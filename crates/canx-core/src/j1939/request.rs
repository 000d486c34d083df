//! Request (PGN 59904, J1939-21 5.4.2) and Acknowledgment (PGN 59392,
//! J1939-21 5.4.4) codecs.
//!
//! - Request: 3 data bytes, the requested PGN little-endian; the DA is one
//!   CA or global. Responders answer within Tr = 200 ms.
//! - Acknowledgment: 8 bytes sent to global: control (0 ACK, 1 NACK,
//!   2 Access Denied, 3 Cannot Respond), group function (0xFF when unused),
//!   two reserved 0xFF, the address being acknowledged (the requester's SA),
//!   the PGN little-endian. NACK only answers destination-specific requests,
//!   never global ones.

use core::fmt;

use super::id::{frame, Pgn, DEFAULT_PRIORITY, GLOBAL_ADDRESS};
use crate::frame::CanFrame;

/// A malformed Request or Acknowledgment payload.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ParseError {
    /// Too few bytes (3 for a Request, 8 for an Acknowledgment).
    Length,
    /// PGN bytes above 18 bits.
    Pgn,
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ParseError::Length => "payload too short",
            ParseError::Pgn => "PGN out of range",
        })
    }
}

impl core::error::Error for ParseError {}

/// A Request for one PGN.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Request {
    pub pgn: Pgn,
}

impl Request {
    /// Parses the first 3 bytes (extra bytes are tolerated).
    pub fn parse(data: &[u8]) -> Result<Request, ParseError> {
        match data {
            [a, b, c, ..] => Pgn::from_le_bytes([*a, *b, *c]).map(|pgn| Request { pgn }).ok_or(ParseError::Pgn),
            _ => Err(ParseError::Length),
        }
    }
    pub fn emit(&self) -> [u8; 3] {
        self.pgn.to_le_bytes()
    }
    /// The request frame (priority 6) from `source` to `destination`.
    pub fn frame(&self, source: u8, destination: u8) -> CanFrame {
        frame(DEFAULT_PRIORITY, Pgn::REQUEST, source, destination, &self.emit())
    }
}

/// Control byte of an Acknowledgment.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum AckControl {
    /// 0: positive acknowledgment.
    Ack,
    /// 1: negative acknowledgment (e.g. PGN not supported).
    Nack,
    /// 2: access denied.
    AccessDenied,
    /// 3: cannot respond (busy).
    CannotRespond,
    /// Any other code.
    Other(u8),
}

impl AckControl {
    pub const fn code(self) -> u8 {
        match self {
            AckControl::Ack => 0,
            AckControl::Nack => 1,
            AckControl::AccessDenied => 2,
            AckControl::CannotRespond => 3,
            AckControl::Other(c) => c,
        }
    }
    pub const fn from_code(c: u8) -> Self {
        match c {
            0 => AckControl::Ack,
            1 => AckControl::Nack,
            2 => AckControl::AccessDenied,
            3 => AckControl::CannotRespond,
            c => AckControl::Other(c),
        }
    }
}

/// An Acknowledgment message.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Acknowledgment {
    pub control: AckControl,
    /// Group function value, 0xFF when not used.
    pub group_function: u8,
    /// The address being acknowledged (the requester).
    pub address: u8,
    /// The acknowledged PGN.
    pub pgn: Pgn,
}

impl Acknowledgment {
    /// Parses 8 bytes (reserved bytes are not checked).
    pub fn parse(d: &[u8]) -> Result<Acknowledgment, ParseError> {
        let d: &[u8; 8] = d.get(..8).and_then(|d| d.try_into().ok()).ok_or(ParseError::Length)?;
        Ok(Acknowledgment {
            control: AckControl::from_code(d[0]),
            group_function: d[1],
            address: d[4],
            pgn: Pgn::from_le_bytes([d[5], d[6], d[7]]).ok_or(ParseError::Pgn)?,
        })
    }
    pub fn emit(&self) -> [u8; 8] {
        let p = self.pgn.to_le_bytes();
        [self.control.code(), self.group_function, 0xFF, 0xFF, self.address, p[0], p[1], p[2]]
    }
    /// The frame (priority 6, DA global) from `source`.
    pub fn frame(&self, source: u8) -> CanFrame {
        frame(DEFAULT_PRIORITY, Pgn::ACKNOWLEDGMENT, source, GLOBAL_ADDRESS, &self.emit())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn vectors() {
        let r = Request { pgn: Pgn::ADDRESS_CLAIMED };
        assert_eq!(r.emit(), [0x00, 0xEE, 0x00]);
        let f = r.frame(0xFE, 0xFF);
        assert_eq!(f.raw_id(), 0x18EA_FFFE);
        assert_eq!(Request::parse(&[0xEC, 0xFE, 0x00]), Ok(Request { pgn: Pgn::VEHICLE_IDENTIFICATION }));
        assert_eq!(Request::parse(&[0xEC, 0xFE]), Err(ParseError::Length));
        assert_eq!(Request::parse(&[0, 0, 0x04]), Err(ParseError::Pgn));
        // NACK of PGN 65260 to requester 0x21, from 0x00: 18E8FF00#01FFFFFF21ECFE00
        let a = Acknowledgment {
            control: AckControl::Nack,
            group_function: 0xFF,
            address: 0x21,
            pgn: Pgn::VEHICLE_IDENTIFICATION,
        };
        let f = a.frame(0x00);
        assert_eq!(f.raw_id(), 0x18E8_FF00);
        assert_eq!(f.data(), &[0x01, 0xFF, 0xFF, 0xFF, 0x21, 0xEC, 0xFE, 0x00]);
        assert_eq!(Acknowledgment::parse(f.data()), Ok(a));
    }

    proptest! {
        #[test]
        fn roundtrip(c: u8, g: u8, a: u8, pgn in 0u32..0x40000) {
            let pgn = Pgn::new(pgn).unwrap();
            let ack = Acknowledgment { control: AckControl::from_code(c), group_function: g, address: a, pgn };
            prop_assert_eq!(Acknowledgment::parse(&ack.emit()), Ok(ack));
            prop_assert_eq!(Request::parse(&Request { pgn }.emit()), Ok(Request { pgn }));
        }
    }
}
