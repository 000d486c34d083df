//! A whole MegaSquirt message (header + payload) decoded for monitoring
//! and logging: one enum over every message type and MSG_XTND subtype.
//!
//! Source: `docs/protocols/megasquirt.md`, "Message types", "MSG_REQ payload".

use super::header::{Header, MsgType, XtndType};
use super::payload::{BurnAckRepr, CrcReqRepr, PayloadError, ReqRepr, ReqxRepr, SpndRepr};
use crate::frame::Frame;

/// The payload of a MegaSquirt frame, by message type.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Message<'a> {
    /// MSG_CMD: bytes written at the header's (var_blk, var_offset).
    Cmd(&'a [u8]),
    /// MSG_REQ: read of the header's (var_blk, var_offset), reply target in the payload.
    Req(ReqRepr),
    /// MSG_RSP: reply bytes for the header's (var_blk, var_offset) on to_id.
    Rsp(&'a [u8]),
    /// MSG_XSUB.
    Xsub,
    /// MSG_BURN of the header's var_blk.
    Burn,
    /// OUTMSG_REQ for outmsg `number`; reply target in the header.
    OutmsgReq { number: u8 },
    /// OUTMSG_RSP chunk.
    OutmsgRsp(&'a [u8]),
    /// MSG_FWD: bytes for the serial port.
    Fwd(&'a [u8]),
    /// MSG_CRC of the header's var_blk.
    Crc(CrcReqRepr),
    /// MSG_REQX: read of any table.
    Reqx(ReqxRepr),
    /// MSG_BURNACK.
    BurnAck(BurnAckRepr),
    /// MSG_PROT: the bytes after the subtype.
    Prot(&'a [u8]),
    /// MSG_WCR: the bytes after the subtype.
    Wcr(&'a [u8]),
    /// MSG_SPND.
    Spnd(SpndRepr),
    /// A MSG_XTND subtype the protocol does not define.
    UnknownXtnd { subtype: u8, data: &'a [u8] },
}

impl<'a> Message<'a> {
    /// Decodes the payload of a frame with header `hdr`. Errors:
    /// [`PayloadError`] for a payload that does not fit its type (an empty
    /// MSG_XTND or OUTMSG_REQ is `Truncated`).
    pub fn parse(hdr: &Header, data: &'a [u8]) -> Result<Message<'a>, PayloadError> {
        Ok(match hdr.msg_type() {
            MsgType::Cmd => Message::Cmd(data),
            MsgType::Req => Message::Req(ReqRepr::parse(data)?),
            MsgType::Rsp => Message::Rsp(data),
            MsgType::Xsub => Message::Xsub,
            MsgType::Burn => Message::Burn,
            MsgType::OutmsgReq => Message::OutmsgReq { number: *data.first().ok_or(PayloadError::Truncated)? },
            MsgType::OutmsgRsp => Message::OutmsgRsp(data),
            MsgType::Xtnd => {
                let (&sub, rest) = data.split_first().ok_or(PayloadError::Truncated)?;
                match XtndType::from_u8(sub) {
                    Some(XtndType::Fwd) => Message::Fwd(rest),
                    Some(XtndType::Crc) => Message::Crc(CrcReqRepr::parse(data)?),
                    Some(XtndType::Reqx) => Message::Reqx(ReqxRepr::parse(data)?),
                    Some(XtndType::BurnAck) => Message::BurnAck(BurnAckRepr::parse(data)?),
                    Some(XtndType::Prot) => Message::Prot(rest),
                    Some(XtndType::Wcr) => Message::Wcr(rest),
                    Some(XtndType::Spnd) => Message::Spnd(SpndRepr::parse(data)?),
                    None => Message::UnknownXtnd { subtype: sub, data: rest },
                }
            }
        })
    }

    /// Header and payload of a frame; `None` if it is not a MegaSquirt frame
    /// (see [`Header::from_frame`]), `Some(Err)` if the payload is malformed.
    pub fn from_frame(frame: &'a Frame) -> Option<(Header, Result<Message<'a>, PayloadError>)> {
        let hdr = Header::from_frame(frame)?;
        Some((hdr, Message::parse(&hdr, frame.data())))
    }

    /// The firmware's name of the message (`MSG_REQ`, `MSG_CRC`, ...).
    pub fn name(&self) -> &'static str {
        match self {
            Message::Cmd(_) => MsgType::Cmd.name(),
            Message::Req(_) => MsgType::Req.name(),
            Message::Rsp(_) => MsgType::Rsp.name(),
            Message::Xsub => MsgType::Xsub.name(),
            Message::Burn => MsgType::Burn.name(),
            Message::OutmsgReq { .. } => MsgType::OutmsgReq.name(),
            Message::OutmsgRsp(_) => MsgType::OutmsgRsp.name(),
            Message::Fwd(_) => XtndType::Fwd.name(),
            Message::Crc(_) => XtndType::Crc.name(),
            Message::Reqx(_) => XtndType::Reqx.name(),
            Message::BurnAck(_) => XtndType::BurnAck.name(),
            Message::Prot(_) => XtndType::Prot.name(),
            Message::Wcr(_) => XtndType::Wcr.name(),
            Message::Spnd(_) => XtndType::Spnd.name(),
            Message::UnknownXtnd { .. } => MsgType::Xtnd.name(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::CanFrame;
    use proptest::prelude::*;
    use std::string::ToString;

    fn parse(t: MsgType, data: &[u8]) -> Result<Message<'_>, PayloadError> {
        Message::parse(&Header::new(t, 1, 0, 7, 16).unwrap(), data)
    }

    #[test]
    fn every_type() {
        assert_eq!(parse(MsgType::Cmd, &[1, 2]), Ok(Message::Cmd(&[1, 2])));
        assert_eq!(parse(MsgType::Req, &[6, 1, 4]), Ok(Message::Req(ReqRepr::new(6, 8, 4).unwrap())));
        assert_eq!(parse(MsgType::Req, &[6, 1]), Err(PayloadError::Truncated));
        assert_eq!(parse(MsgType::Rsp, &[9]), Ok(Message::Rsp(&[9])));
        assert_eq!(parse(MsgType::Xsub, &[]), Ok(Message::Xsub));
        assert_eq!(parse(MsgType::Burn, &[]), Ok(Message::Burn));
        assert_eq!(parse(MsgType::OutmsgReq, &[3]), Ok(Message::OutmsgReq { number: 3 }));
        assert_eq!(parse(MsgType::OutmsgReq, &[]), Err(PayloadError::Truncated));
        assert_eq!(parse(MsgType::OutmsgRsp, &[]), Ok(Message::OutmsgRsp(&[])));
        assert_eq!(parse(MsgType::Xtnd, &[]), Err(PayloadError::Truncated));
        assert_eq!(parse(MsgType::Xtnd, &[8, b'a']), Ok(Message::Fwd(b"a")));
        assert_eq!(parse(MsgType::Xtnd, &[9, 6, 1, 4]), Ok(Message::Crc(CrcReqRepr::new(6, 8).unwrap())));
        assert_eq!(parse(MsgType::Xtnd, &[12, 6, 1, 4, 40]), Ok(Message::Reqx(ReqxRepr::new(6, 8, 4, 40).unwrap())));
        assert_eq!(parse(MsgType::Xtnd, &[14, 1]), Ok(Message::BurnAck(BurnAckRepr { ok: true })));
        assert_eq!(parse(MsgType::Xtnd, &[0x80, 6, 0, 5]), Ok(Message::Prot(&[6, 0, 5])));
        assert_eq!(parse(MsgType::Xtnd, &[0x81]), Ok(Message::Wcr(&[])));
        assert_eq!(parse(MsgType::Xtnd, &[0x82, 0]), Ok(Message::Spnd(SpndRepr { suspend: false })));
        assert_eq!(parse(MsgType::Xtnd, &[11, 5]), Ok(Message::UnknownXtnd { subtype: 11, data: &[5] }));
        assert_eq!(parse(MsgType::Xtnd, &[12, 6]).map(|m| m.name()), Err(PayloadError::Truncated));
        assert_eq!(parse(MsgType::Xtnd, &[9, 6, 1, 4]).unwrap().name(), "MSG_CRC");
    }

    #[test]
    fn display_and_frames() {
        let h = Header::new(MsgType::Req, 4, 0, 7, 0x10).unwrap();
        assert_eq!(h.to_string(), "MSG_REQ 4->0 blk 7 off 16");
        let f = Frame::Can(h.frame(&[6, 1, 4]).unwrap());
        let (hd, m) = Message::from_frame(&f).unwrap();
        assert_eq!((hd, m.unwrap().name()), (h, "MSG_REQ"));
        let s = Frame::Can(CanFrame::new(crate::StandardId::new(1).unwrap(), &[]).unwrap());
        assert!(Message::from_frame(&s).is_none());
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]
        #[test]
        fn parse_never_panics(raw in 0u32..=0x1FFF_FFFF, data in proptest::collection::vec(any::<u8>(), 0..=8)) {
            let h = Header::from_raw(raw).unwrap();
            if let Ok(m) = Message::parse(&h, &data) {
                prop_assert!(!m.name().is_empty());
            }
        }
    }
}
