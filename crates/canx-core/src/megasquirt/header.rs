//! The 29-bit MegaSquirt CAN header and the message type numbers.
//!
//! Source: `docs/protocols/megasquirt.md`, "The 29-bit identifier" and
//! "Message types" (MegaSquirt-II CANbus page; MS3 `ms3_can_isr.c`;
//! MS2-Extra `trans_can_isr.c`).
//!
//! | bits | width | field |
//! | --- | --- | --- |
//! | 28..18 | 11 | var_offset (0..2047) |
//! | 17..15 | 3 | msg_type |
//! | 14..11 | 4 | from_id |
//! | 10..7 | 4 | to_id |
//! | 6..3 | 4 | var_blk bits 3..0 |
//! | 2 | 1 | var_blk bit 4 |
//! | 1..0 | 2 | spare, 0 |
//!
//! `id = off<<18 | type<<15 | from<<11 | to<<7 | (blk & 0xF)<<3 | (blk & 0x10)>>2`.

use core::fmt;

use crate::frame::{CanFrame, ExtendedId, Frame, Id};

/// Largest var_offset a header can carry (11 bits).
pub const MAX_VAR_OFFSET: u16 = 0x7FF;
/// Largest var_blk a header can carry (5 bits); larger tables need MSG_REQX.
pub const MAX_VAR_BLK: u8 = 31;
/// Largest board id (4 bits).
pub const MAX_CAN_ID: u8 = 15;
/// The board id that addresses every board ("to_id 15 means all boards").
pub const BROADCAST_ID: u8 = 15;
/// Largest number of requests a board may have outstanding towards one board
/// (`NO_CANMSG` in the firmware).
pub const MAX_OUTSTANDING: usize = 10;

mod field {
    pub const OFFSET_SHIFT: u32 = 18;
    pub const TYPE_SHIFT: u32 = 15;
    pub const FROM_SHIFT: u32 = 11;
    pub const TO_SHIFT: u32 = 7;
    pub const BLK_LO_SHIFT: u32 = 3;
    /// var_blk bit 4 moves down two places to header bit 2.
    pub const BLK_HI_SHIFT_DOWN: u32 = 2;
}

/// The 3-bit msg_type of the header.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(u8)]
pub enum MsgType {
    /// Write data[0..n] to (var_blk, var_offset) of to_id.
    Cmd = 0,
    /// Read request; payload says where the reply goes ([`super::ReqRepr`]).
    Req = 1,
    /// Reply to a request; on receipt treated like `Cmd`.
    Rsp = 2,
    /// Run the remote's subroutine (chosen by from_id); DLC 0.
    Xsub = 3,
    /// Burn table var_blk to flash; DLC 0.
    Burn = 4,
    /// Ask for configured outmsg number `data[0]`.
    OutmsgReq = 5,
    /// Outmsg reply chunk (<= 8 bytes, offset advances).
    OutmsgRsp = 6,
    /// Extended message: the real type is `data[0]` ([`XtndType`]).
    Xtnd = 7,
}

impl MsgType {
    /// Every message type, in numeric order.
    pub const ALL: [MsgType; 8] = [
        MsgType::Cmd,
        MsgType::Req,
        MsgType::Rsp,
        MsgType::Xsub,
        MsgType::Burn,
        MsgType::OutmsgReq,
        MsgType::OutmsgRsp,
        MsgType::Xtnd,
    ];

    /// The type of a 3-bit field (higher bits are ignored).
    pub const fn from_bits(bits: u8) -> MsgType {
        MsgType::ALL[(bits & 7) as usize]
    }

    /// The 3-bit value.
    pub const fn bits(self) -> u8 {
        self as u8
    }

    /// The firmware's name (`MSG_CMD`, ...).
    pub const fn name(self) -> &'static str {
        match self {
            MsgType::Cmd => "MSG_CMD",
            MsgType::Req => "MSG_REQ",
            MsgType::Rsp => "MSG_RSP",
            MsgType::Xsub => "MSG_XSUB",
            MsgType::Burn => "MSG_BURN",
            MsgType::OutmsgReq => "OUTMSG_REQ",
            MsgType::OutmsgRsp => "OUTMSG_RSP",
            MsgType::Xtnd => "MSG_XTND",
        }
    }
}

/// The subtypes carried in `data[0]` of a `MSG_XTND` frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(u8)]
pub enum XtndType {
    /// data[1..] forwarded to the serial port.
    Fwd = 8,
    /// CRC32 of table var_blk, reply as MSG_RSP ([`super::CrcReqRepr`]).
    Crc = 9,
    /// Read request for any table number ([`super::ReqxRepr`]).
    Reqx = 12,
    /// Burn acknowledge `[14, ok]`.
    BurnAck = 14,
    /// Protocol / version query.
    Prot = 0x80,
    /// CRC32 after a series of CMD writes.
    Wcr = 0x81,
    /// Suspend (1) / resume (0) CAN polling, sent to id 15.
    Spnd = 0x82,
}

impl XtndType {
    /// Every extended subtype.
    pub const ALL: [XtndType; 7] = [
        XtndType::Fwd,
        XtndType::Crc,
        XtndType::Reqx,
        XtndType::BurnAck,
        XtndType::Prot,
        XtndType::Wcr,
        XtndType::Spnd,
    ];

    /// The subtype of a `data[0]` byte; `None` for numbers the protocol does not define.
    pub const fn from_u8(v: u8) -> Option<XtndType> {
        Some(match v {
            8 => XtndType::Fwd,
            9 => XtndType::Crc,
            12 => XtndType::Reqx,
            14 => XtndType::BurnAck,
            0x80 => XtndType::Prot,
            0x81 => XtndType::Wcr,
            0x82 => XtndType::Spnd,
            _ => return None,
        })
    }

    /// The `data[0]` value.
    pub const fn code(self) -> u8 {
        self as u8
    }

    /// The firmware's name (`MSG_CRC`, ...).
    pub const fn name(self) -> &'static str {
        match self {
            XtndType::Fwd => "MSG_FWD",
            XtndType::Crc => "MSG_CRC",
            XtndType::Reqx => "MSG_REQX",
            XtndType::BurnAck => "MSG_BURNACK",
            XtndType::Prot => "MSG_PROT",
            XtndType::Wcr => "MSG_WCR",
            XtndType::Spnd => "MSG_SPND",
        }
    }
}

/// A header field out of its range.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HeaderError {
    /// var_offset above 2047.
    VarOffsetOutOfRange,
    /// from_id or to_id above 15.
    CanIdOutOfRange,
    /// var_blk above 31 (use MSG_REQX for larger tables).
    VarBlkOutOfRange,
}

impl fmt::Display for HeaderError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            HeaderError::VarOffsetOutOfRange => "var_offset must be 0-2047",
            HeaderError::CanIdOutOfRange => "board id must be 0-15",
            HeaderError::VarBlkOutOfRange => "var_blk must be 0-31",
        })
    }
}

impl core::error::Error for HeaderError {}

/// A decoded, validated header. Every field is within its width.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Header {
    msg_type: MsgType,
    from_id: u8,
    to_id: u8,
    var_blk: u8,
    var_offset: u16,
}

impl Header {
    /// A header. Errors: [`HeaderError`] for a field wider than its bits.
    pub const fn new(
        msg_type: MsgType,
        from_id: u8,
        to_id: u8,
        var_blk: u8,
        var_offset: u16,
    ) -> Result<Header, HeaderError> {
        if from_id > MAX_CAN_ID || to_id > MAX_CAN_ID {
            return Err(HeaderError::CanIdOutOfRange);
        }
        if var_blk > MAX_VAR_BLK {
            return Err(HeaderError::VarBlkOutOfRange);
        }
        if var_offset > MAX_VAR_OFFSET {
            return Err(HeaderError::VarOffsetOutOfRange);
        }
        Ok(Header { msg_type, from_id, to_id, var_blk, var_offset })
    }

    /// Decodes a raw 29-bit identifier; `None` above 29 bits. The two spare
    /// bits are ignored, as the firmware ignores them.
    pub const fn from_raw(raw: u32) -> Option<Header> {
        if raw > 0x1FFF_FFFF {
            return None;
        }
        let blk_lo = ((raw >> field::BLK_LO_SHIFT) & 0xF) as u8;
        let blk_hi = ((raw << field::BLK_HI_SHIFT_DOWN) & 0x10) as u8;
        Some(Header {
            msg_type: MsgType::from_bits((raw >> field::TYPE_SHIFT) as u8),
            from_id: ((raw >> field::FROM_SHIFT) & 0xF) as u8,
            to_id: ((raw >> field::TO_SHIFT) & 0xF) as u8,
            var_blk: blk_hi | blk_lo,
            var_offset: ((raw >> field::OFFSET_SHIFT) & 0x7FF) as u16,
        })
    }

    /// Decodes an identifier; `None` for a standard (11-bit) identifier.
    pub fn from_can_id(id: Id) -> Option<Header> {
        match id {
            Id::Extended(e) => Header::from_raw(e.as_raw()),
            Id::Standard(_) => None,
        }
    }

    /// The header of a classic data frame with an extended identifier;
    /// `None` for any other frame (standard id, remote, FD, error).
    pub fn from_frame(frame: &Frame) -> Option<Header> {
        match frame {
            Frame::Can(f) if !f.is_remote() => Header::from_can_id(f.id()),
            _ => None,
        }
    }

    /// The raw 29-bit identifier (spare bits 0).
    pub const fn raw(&self) -> u32 {
        let blk = self.var_blk as u32;
        (self.var_offset as u32) << field::OFFSET_SHIFT
            | (self.msg_type as u32) << field::TYPE_SHIFT
            | (self.from_id as u32) << field::FROM_SHIFT
            | (self.to_id as u32) << field::TO_SHIFT
            | (blk & 0xF) << field::BLK_LO_SHIFT
            | (blk & 0x10) >> field::BLK_HI_SHIFT_DOWN
    }

    /// The identifier as an `embedded_can` extended id.
    pub fn can_id(&self) -> ExtendedId {
        // raw() is at most 0x1FFF_FFFC: every field is within its width.
        ExtendedId::new(self.raw()).unwrap_or(ExtendedId::ZERO)
    }

    /// A classic data frame with this header. Errors: `DataTooLong` above 8 bytes.
    pub fn frame(&self, data: &[u8]) -> Result<CanFrame, crate::FrameError> {
        CanFrame::new(self.can_id(), data)
    }

    pub const fn msg_type(&self) -> MsgType {
        self.msg_type
    }
    pub const fn from_id(&self) -> u8 {
        self.from_id
    }
    pub const fn to_id(&self) -> u8 {
        self.to_id
    }
    pub const fn var_blk(&self) -> u8 {
        self.var_blk
    }
    pub const fn var_offset(&self) -> u16 {
        self.var_offset
    }
}

impl fmt::Display for Header {
    /// `MSG_REQ 4->0 blk 7 off 16`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {}->{} blk {} off {}",
            self.msg_type().name(),
            self.from_id(),
            self.to_id(),
            self.var_blk(),
            self.var_offset()
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn h(t: MsgType, from: u8, to: u8, blk: u8, off: u16) -> Header {
        Header::new(t, from, to, blk, off).unwrap()
    }

    #[test]
    fn hand_derived_vectors() {
        // All fields at their maximum: off 0x7FF, type 7, from 15, to 15, blk 31.
        //   0x7FF<<18 = 0x1FFC_0000, 7<<15 = 0x3_8000, 15<<11 = 0x7800, 15<<7 = 0x780,
        //   (31&0xF)<<3 = 0x78, (31&0x10)>>2 = 0x4
        //   sum = 0x1FFF_FFFC (only the two spare bits clear)
        assert_eq!(h(MsgType::Xtnd, 15, 15, 31, 0x7FF).raw(), 0x1FFF_FFFC);
        // MSG_REQ from board 4 to board 0, table 7, offset 0x10:
        //   0x10<<18 = 0x40_0000, 1<<15 = 0x8000, 4<<11 = 0x2000, 0<<7 = 0, 7<<3 = 0x38
        //   sum = 0x40_A038
        assert_eq!(h(MsgType::Req, 4, 0, 7, 0x10).raw(), 0x0040_A038);
        // var_blk 16: low nibble 0, bit 4 -> header bit 2 = 0x4.
        assert_eq!(h(MsgType::Cmd, 0, 0, 16, 0).raw(), 0x0000_0004);
        // var_blk 17: 1<<3 = 0x8, plus 0x4 = 0xC.
        assert_eq!(h(MsgType::Cmd, 0, 0, 17, 0).raw(), 0x0000_000C);
        // var_blk 20 (0x14): 4<<3 = 0x20, plus 0x4 = 0x24.
        assert_eq!(h(MsgType::Cmd, 0, 0, 20, 0).raw(), 0x0000_0024);
        // var_blk 31: 0xF<<3 = 0x78, plus 0x4 = 0x7C.
        assert_eq!(h(MsgType::Cmd, 0, 0, 31, 0).raw(), 0x0000_007C);
        // MSG_RSP from 0 to 4, blk 18 (0x12), off 0x123:
        //   0x123<<18 = 0x48C_0000, 2<<15 = 0x1_0000, 4<<7 = 0x200, 2<<3 = 0x10, bit4 -> 0x4
        //   sum = 0x48D_0214
        assert_eq!(h(MsgType::Rsp, 0, 4, 18, 0x123).raw(), 0x048D_0214);
        // var_offset 1024 uses bit 10 (the 11-bit field): 0x400<<18 = 0x1000_0000.
        assert_eq!(h(MsgType::Cmd, 0, 0, 0, 0x400).raw(), 0x1000_0000);
        // from 15 alone: 15<<11 = 0x7800; to 15 alone: 15<<7 = 0x780.
        assert_eq!(h(MsgType::Cmd, 15, 0, 0, 0).raw(), 0x7800);
        assert_eq!(h(MsgType::Cmd, 0, 15, 0, 0).raw(), 0x780);
        // each msg_type alone: type<<15.
        for t in MsgType::ALL {
            assert_eq!(h(t, 0, 0, 0, 0).raw(), u32::from(t.bits()) << 15);
        }
    }

    #[test]
    fn decode_vectors() {
        let d = Header::from_raw(0x048D_0214).unwrap();
        assert_eq!(
            (d.msg_type(), d.from_id(), d.to_id(), d.var_blk(), d.var_offset()),
            (MsgType::Rsp, 0, 4, 18, 0x123)
        );
        // spare bits are ignored
        assert_eq!(Header::from_raw(0x048D_0217), Some(d));
        assert_eq!(Header::from_raw(0x2000_0000), None);
        let max = Header::from_raw(0x1FFF_FFFF).unwrap();
        assert_eq!(max, h(MsgType::Xtnd, 15, 15, 31, 0x7FF));
    }

    #[test]
    fn validation_and_frames() {
        assert_eq!(Header::new(MsgType::Cmd, 16, 0, 0, 0), Err(HeaderError::CanIdOutOfRange));
        assert_eq!(Header::new(MsgType::Cmd, 0, 16, 0, 0), Err(HeaderError::CanIdOutOfRange));
        assert_eq!(Header::new(MsgType::Cmd, 0, 0, 32, 0), Err(HeaderError::VarBlkOutOfRange));
        assert_eq!(Header::new(MsgType::Cmd, 0, 0, 0, 2048), Err(HeaderError::VarOffsetOutOfRange));
        let hd = h(MsgType::Req, 4, 0, 7, 0x10);
        let f = hd.frame(&[1, 2, 3]).unwrap();
        assert_eq!(Header::from_frame(&Frame::Can(f)), Some(hd));
        let std = CanFrame::new(crate::StandardId::new(0x10).unwrap(), &[]).unwrap();
        assert_eq!(Header::from_frame(&Frame::Can(std)), None);
        let rtr = CanFrame::new_remote(hd.can_id(), 3).unwrap();
        assert_eq!(Header::from_frame(&Frame::Can(rtr)), None);
        for x in XtndType::ALL {
            assert_eq!(XtndType::from_u8(x.code()), Some(x));
        }
        assert_eq!(XtndType::from_u8(10), None);
        assert_eq!(MsgType::from_bits(0xFF), MsgType::Xtnd);
    }

    /// Every value of every field, with the other fields at zero and at
    /// their maximum, lands in its own bits and decodes back.
    #[test]
    fn every_field_value_exhaustively() {
        for others_max in [false, true] {
            let (o, f, t, b, ty) = if others_max { (0x7FF, 15, 15, 31, 7) } else { (0, 0, 0, 0, 0) };
            let mut all = std::vec::Vec::new();
            for v in 0..=0x7FFu16 {
                all.push(h(MsgType::from_bits(ty), f, t, b, v));
            }
            for v in 0..8u8 {
                all.push(h(MsgType::from_bits(v), f, t, b, o));
            }
            for v in 0..16u8 {
                all.push(h(MsgType::from_bits(ty), v, t, b, o));
                all.push(h(MsgType::from_bits(ty), f, v, b, o));
            }
            for v in 0..32u8 {
                all.push(h(MsgType::from_bits(ty), f, t, v, o));
            }
            for hd in all {
                assert_eq!(Header::from_raw(hd.raw()), Some(hd));
                assert_eq!(u32::from(hd.var_offset()), hd.raw() >> 18);
                assert_eq!(u32::from(hd.msg_type().bits()), hd.raw() >> 15 & 7);
                assert_eq!(u32::from(hd.from_id()), hd.raw() >> 11 & 0xF);
                assert_eq!(u32::from(hd.to_id()), hd.raw() >> 7 & 0xF);
                assert_eq!(u32::from(hd.var_blk() & 0xF), hd.raw() >> 3 & 0xF);
                assert_eq!(u32::from(hd.var_blk() >> 4), hd.raw() >> 2 & 1);
            }
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]
        #[test]
        fn pack_unpack_roundtrip(t in 0u8..8, from in 0u8..16, to in 0u8..16, blk in 0u8..32, off in 0u16..2048) {
            let hd = h(MsgType::from_bits(t), from, to, blk, off);
            let raw = hd.raw();
            prop_assert_eq!(raw & 3, 0);
            prop_assert!(raw <= 0x1FFF_FFFF);
            // the formula from megasquirt.md, written independently
            let b = u32::from(blk);
            let expect = u32::from(off) << 18 | u32::from(t) << 15 | u32::from(from) << 11
                | u32::from(to) << 7 | (b & 0xF) << 3 | (b & 0x10) >> 2;
            prop_assert_eq!(raw, expect);
            prop_assert_eq!(Header::from_raw(raw), Some(hd));
        }

        #[test]
        fn unpack_pack_roundtrip(raw in 0u32..=0x1FFF_FFFF) {
            let hd = Header::from_raw(raw).unwrap();
            prop_assert_eq!(hd.raw(), raw & !3);
        }
    }
}
