//! Request payloads: MSG_REQ, MSG_REQX, MSG_CRC (and the small MSG_BURNACK
//! and MSG_SPND bodies), as `Repr`s with `parse` / `emit`.
//!
//! Source: `docs/protocols/megasquirt.md`, "MSG_REQ payload (3 bytes)" and
//! "Message types" (extended types); MS2-Extra `trans_can_isr.c` for the
//! masks (`rem_table = data[0] & 0x1f`, `rem_bytes = data[2] & 0x0f`).
//!
//! All three requests carry the same "reply target" triple: the requester's
//! table (`reply_blk`), offset (`reply_offset`, 11 bits split 8 + 3) and the
//! byte count (1..8), packed as
//! `[reply_blk, reply_offset >> 3, (reply_offset & 7) << 5 | count]`.
//! Parsing never panics. A payload shorter than its layout is `Truncated`;
//! extra trailing bytes are ignored (the firmware reads fixed positions).

use core::fmt;

use super::header::{XtndType, MAX_VAR_BLK, MAX_VAR_OFFSET};

/// Largest byte count of one request (one CAN frame).
pub const MAX_COUNT: u8 = 8;

/// Why a payload is malformed, or why a `Repr` cannot be built.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PayloadError {
    /// Fewer bytes than the layout needs.
    Truncated,
    /// Byte count 0 or above 8 (for MSG_CRC: not 4).
    BadCount,
    /// Reply table above 31 (it must fit the 5-bit var_blk of the reply header).
    BadReplyBlk,
    /// Reply offset above 2047.
    BadReplyOffset,
    /// `data[0]` is not the extended subtype this payload needs.
    WrongSubtype,
}

impl fmt::Display for PayloadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            PayloadError::Truncated => "payload too short",
            PayloadError::BadCount => "byte count must be 1-8 (4 for MSG_CRC)",
            PayloadError::BadReplyBlk => "reply table must be 0-31",
            PayloadError::BadReplyOffset => "reply offset must be 0-2047",
            PayloadError::WrongSubtype => "wrong MSG_XTND subtype",
        })
    }
}

impl core::error::Error for PayloadError {}

fn pack_target(reply_blk: u8, reply_offset: u16, count: u8) -> [u8; 3] {
    [reply_blk, (reply_offset >> 3) as u8, ((reply_offset & 7) as u8) << 5 | (count & 0xF)]
}

/// `(reply_offset, count)` of bytes 1..=2 of a reply target.
fn unpack_target(b1: u8, b2: u8) -> (u16, u8) {
    (u16::from(b1) << 3 | u16::from(b2 >> 5), b2 & 0xF)
}

fn check_target(reply_blk: u8, reply_offset: u16) -> Result<(), PayloadError> {
    if reply_blk > MAX_VAR_BLK {
        return Err(PayloadError::BadReplyBlk);
    }
    if reply_offset > MAX_VAR_OFFSET {
        return Err(PayloadError::BadReplyOffset);
    }
    Ok(())
}

fn check_count(count: u8) -> Result<(), PayloadError> {
    if count == 0 || count > MAX_COUNT {
        return Err(PayloadError::BadCount);
    }
    Ok(())
}

/// MSG_REQ payload (3 bytes): where the requester wants the reply. The data
/// read is addressed by the request header (var_blk, var_offset).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ReqRepr {
    /// Table for the reply on the requester (0..31).
    pub reply_blk: u8,
    /// Offset for the reply on the requester (0..2047).
    pub reply_offset: u16,
    /// Bytes asked for (1..8).
    pub count: u8,
}

impl ReqRepr {
    /// Encoded length, bytes.
    pub const LEN: usize = 3;

    /// Validates the fields. Errors: `BadReplyBlk`, `BadReplyOffset`, `BadCount`.
    pub fn new(reply_blk: u8, reply_offset: u16, count: u8) -> Result<ReqRepr, PayloadError> {
        check_target(reply_blk, reply_offset)?;
        check_count(count)?;
        Ok(ReqRepr { reply_blk, reply_offset, count })
    }

    /// Parses untrusted bytes (`data[0]` masked to 5 bits, bit 4 of `data[2]` ignored).
    pub fn parse(data: &[u8]) -> Result<ReqRepr, PayloadError> {
        let [b0, b1, b2, ..] = *data else { return Err(PayloadError::Truncated) };
        let (reply_offset, count) = unpack_target(b1, b2);
        check_count(count)?;
        Ok(ReqRepr { reply_blk: b0 & 0x1F, reply_offset, count })
    }

    /// The 3 payload bytes.
    pub fn emit(&self) -> [u8; 3] {
        pack_target(self.reply_blk & 0x1F, self.reply_offset, self.count)
    }
}

/// MSG_XTND / MSG_REQX payload (5 bytes) `[12, reply_blk, off>>3,
/// (off&7)<<5 | n, big_table]`: a read of any table 0..255 (the header's
/// var_offset is the offset in that table; its var_blk is unused).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ReqxRepr {
    pub reply_blk: u8,
    pub reply_offset: u16,
    pub count: u8,
    /// The table to read (0..255).
    pub table: u8,
}

impl ReqxRepr {
    pub const LEN: usize = 5;

    /// Validates the fields. Errors: `BadReplyBlk`, `BadReplyOffset`, `BadCount`.
    pub fn new(reply_blk: u8, reply_offset: u16, count: u8, table: u8) -> Result<ReqxRepr, PayloadError> {
        check_target(reply_blk, reply_offset)?;
        check_count(count)?;
        Ok(ReqxRepr { reply_blk, reply_offset, count, table })
    }

    /// Parses a whole MSG_XTND payload (starting with the subtype byte 12).
    /// A reply table above 31 is refused: the reply header could not carry it.
    pub fn parse(data: &[u8]) -> Result<ReqxRepr, PayloadError> {
        let [sub, b1, b2, b3, b4, ..] = *data else { return Err(PayloadError::Truncated) };
        if sub != XtndType::Reqx.code() {
            return Err(PayloadError::WrongSubtype);
        }
        let (reply_offset, count) = unpack_target(b2, b3);
        ReqxRepr::new(b1, reply_offset, count, b4)
    }

    pub fn emit(&self) -> [u8; 5] {
        let [a, b, c] = pack_target(self.reply_blk, self.reply_offset, self.count);
        [XtndType::Reqx.code(), a, b, c, self.table]
    }
}

/// MSG_XTND / MSG_CRC payload (4 bytes) `[9, reply_blk, off>>3, (off&7)<<5 | 4]`:
/// asks for the CRC32 of the header's var_blk, replied as a 4-byte MSG_RSP.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct CrcReqRepr {
    pub reply_blk: u8,
    pub reply_offset: u16,
}

impl CrcReqRepr {
    pub const LEN: usize = 4;
    /// The count field of a CRC request (a CRC32 is 4 bytes).
    pub const COUNT: u8 = 4;

    /// Errors: `BadReplyBlk`, `BadReplyOffset`.
    pub fn new(reply_blk: u8, reply_offset: u16) -> Result<CrcReqRepr, PayloadError> {
        check_target(reply_blk, reply_offset)?;
        Ok(CrcReqRepr { reply_blk, reply_offset })
    }

    /// Parses a whole MSG_XTND payload (starting with the subtype byte 9).
    pub fn parse(data: &[u8]) -> Result<CrcReqRepr, PayloadError> {
        let [sub, b1, b2, b3, ..] = *data else { return Err(PayloadError::Truncated) };
        if sub != XtndType::Crc.code() {
            return Err(PayloadError::WrongSubtype);
        }
        let (reply_offset, count) = unpack_target(b2, b3);
        if count != Self::COUNT {
            return Err(PayloadError::BadCount);
        }
        CrcReqRepr::new(b1, reply_offset)
    }

    pub fn emit(&self) -> [u8; 4] {
        let [a, b, c] = pack_target(self.reply_blk, self.reply_offset, Self::COUNT);
        [XtndType::Crc.code(), a, b, c]
    }
}

/// MSG_XTND / MSG_BURNACK payload `[14, ok]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct BurnAckRepr {
    pub ok: bool,
}

impl BurnAckRepr {
    pub const LEN: usize = 2;

    /// Any nonzero `ok` byte means success.
    pub fn parse(data: &[u8]) -> Result<BurnAckRepr, PayloadError> {
        let [sub, ok, ..] = *data else { return Err(PayloadError::Truncated) };
        if sub != XtndType::BurnAck.code() {
            return Err(PayloadError::WrongSubtype);
        }
        Ok(BurnAckRepr { ok: ok != 0 })
    }

    pub fn emit(&self) -> [u8; 2] {
        [XtndType::BurnAck.code(), self.ok as u8]
    }
}

/// MSG_XTND / MSG_SPND payload `[0x82, 1 suspend / 0 resume]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct SpndRepr {
    pub suspend: bool,
}

impl SpndRepr {
    pub const LEN: usize = 2;

    /// `1` suspends; any other value resumes (as the firmware tests `== 1`).
    pub fn parse(data: &[u8]) -> Result<SpndRepr, PayloadError> {
        let [sub, v, ..] = *data else { return Err(PayloadError::Truncated) };
        if sub != XtndType::Spnd.code() {
            return Err(PayloadError::WrongSubtype);
        }
        Ok(SpndRepr { suspend: v == 1 })
    }

    pub fn emit(&self) -> [u8; 2] {
        [XtndType::Spnd.code(), self.suspend as u8]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn req_vectors() {
        // reply to table 6, offset 0x123 (bits 10..3 = 0x24, bits 2..0 = 3), 4 bytes:
        //   [6, 0x123>>3 = 0x24, 3<<5 | 4 = 0x64]
        let r = ReqRepr::new(6, 0x123, 4).unwrap();
        assert_eq!(r.emit(), [0x06, 0x24, 0x64]);
        assert_eq!(ReqRepr::parse(&[0x06, 0x24, 0x64]), Ok(r));
        // reserved bit 4 and upper bits of data[0] are ignored
        assert_eq!(ReqRepr::parse(&[0xE6, 0x24, 0x74]), Ok(r));
        assert_eq!(ReqRepr::parse(&[6, 0]), Err(PayloadError::Truncated));
        assert_eq!(ReqRepr::parse(&[6, 0, 0]), Err(PayloadError::BadCount));
        assert_eq!(ReqRepr::parse(&[6, 0, 9]), Err(PayloadError::BadCount));
        assert_eq!(ReqRepr::new(32, 0, 1), Err(PayloadError::BadReplyBlk));
        assert_eq!(ReqRepr::new(0, 2048, 1), Err(PayloadError::BadReplyOffset));
    }

    #[test]
    fn xtnd_vectors() {
        let x = ReqxRepr::new(5, 0x7FF, 8, 40).unwrap();
        // [12, 5, 0x7FF>>3 = 0xFF, 7<<5 | 8 = 0xE8, 40]
        assert_eq!(x.emit(), [12, 5, 0xFF, 0xE8, 40]);
        assert_eq!(ReqxRepr::parse(&x.emit()), Ok(x));
        assert_eq!(ReqxRepr::parse(&[12, 32, 0, 1, 40]), Err(PayloadError::BadReplyBlk));
        assert_eq!(ReqxRepr::parse(&[9, 5, 0, 1, 40]), Err(PayloadError::WrongSubtype));
        assert_eq!(ReqxRepr::parse(&[12, 5, 0, 1]), Err(PayloadError::Truncated));
        let c = CrcReqRepr::new(6, 8).unwrap();
        // [9, 6, 8>>3 = 1, 0<<5 | 4 = 4]
        assert_eq!(c.emit(), [9, 6, 1, 4]);
        assert_eq!(CrcReqRepr::parse(&[9, 6, 1, 4]), Ok(c));
        assert_eq!(CrcReqRepr::parse(&[9, 6, 1, 3]), Err(PayloadError::BadCount));
        assert_eq!(BurnAckRepr::parse(&[14, 1]), Ok(BurnAckRepr { ok: true }));
        assert_eq!(BurnAckRepr { ok: false }.emit(), [14, 0]);
        assert_eq!(SpndRepr::parse(&[0x82, 1]), Ok(SpndRepr { suspend: true }));
        assert_eq!(SpndRepr::parse(&[0x82]), Err(PayloadError::Truncated));
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]
        #[test]
        fn roundtrips(blk in 0u8..32, off in 0u16..2048, n in 1u8..=8, t in any::<u8>()) {
            let r = ReqRepr::new(blk, off, n).unwrap();
            prop_assert_eq!(ReqRepr::parse(&r.emit()), Ok(r));
            let x = ReqxRepr::new(blk, off, n, t).unwrap();
            prop_assert_eq!(ReqxRepr::parse(&x.emit()), Ok(x));
            let c = CrcReqRepr::new(blk, off).unwrap();
            prop_assert_eq!(CrcReqRepr::parse(&c.emit()), Ok(c));
        }

        #[test]
        fn parse_never_panics(data in proptest::collection::vec(any::<u8>(), 0..=8)) {
            if let Ok(r) = ReqRepr::parse(&data) { prop_assert!(r.count >= 1 && r.count <= 8 && r.reply_blk < 32); }
            if let Ok(r) = ReqxRepr::parse(&data) { prop_assert!(r.count >= 1 && r.count <= 8 && r.reply_blk < 32); }
            let _ = CrcReqRepr::parse(&data);
            let _ = BurnAckRepr::parse(&data);
            let _ = SpndRepr::parse(&data);
        }
    }
}
