//! Entry points shared by the cargo-fuzz targets (`fuzz/fuzz_targets/
//! megasquirt_*.rs`) and the proptests that run the same code in `cargo test`.
//! They panic only when an engine breaks an invariant.
//!
//! Input format: a sequence of records
//! `[id: 4 bytes big-endian (bit 31 = extended), len: 1 byte (low 4 bits, max 8), data...]`;
//! a truncated last record is padded with zeros.

use super::broadcast::BroadcastDecoder;
use super::client::{Client, ClientConfig};
use super::header::{Header, MsgType};
use super::server::{OutmsgDef, Server, ServerConfig};
use super::tables::{Access, TableSet};
use crate::frame::{make_id, CanFrame, Frame};
use crate::time::{Duration, Instant};

/// Frames decoded from fuzzer bytes (see the module doc).
pub fn frames(mut data: &[u8]) -> impl Iterator<Item = Frame> + '_ {
    core::iter::from_fn(move || {
        let mut rec = [0u8; 13];
        if data.is_empty() {
            return None;
        }
        let n = data.len().min(5);
        rec[..n].copy_from_slice(&data[..n]);
        let len = usize::from(rec[4] & 0xF).min(8);
        let take = data.len().min(5 + len);
        rec[..take].copy_from_slice(&data[..take]);
        data = &data[take..];
        let raw = u32::from_be_bytes([rec[0], rec[1], rec[2], rec[3]]);
        let ext = raw & 0x8000_0000 != 0;
        let id = make_id(if ext { raw & 0x1FFF_FFFF } else { raw & 0x7FF }, ext).ok()?;
        CanFrame::new(id, &rec[5..5 + len]).ok().map(Frame::Can)
    })
}

const SERVER_ID: u8 = 0;

/// Runs fuzzer bytes into a [`Server`] with a read-only, a read-write and a
/// write-only table and checks: no panic, replies only from this board to
/// the sender of the frame just handled, at most one reply per non-outmsg
/// request, read-only tables unchanged, the write-only table never read.
pub fn server(data: &[u8]) {
    let mut ro = [0u8; 40];
    ro.iter_mut().enumerate().for_each(|(i, b)| *b = i as u8);
    let ro_copy = ro;
    let mut rw = [0u8; 16];
    let mut wo = [0u8; 8];
    let mut t: TableSet<'_, 3> = TableSet::new();
    let _ = t.add(7, Access::READ_ONLY, &mut ro);
    let _ = t.add(20, Access::READ_WRITE, &mut rw);
    let _ = t.add(3, Access::WRITE_ONLY, &mut wo);
    let Ok(mut s) = Server::<_, 8, 8>::new(ServerConfig::new(SERVER_ID), t) else { return };
    let _ = s.set_outmsg(0, OutmsgDef::new(&[0, 1, 2, 39, 5, 6, 7, 8, 9, 10]).ok());
    let now = Instant::ZERO;
    for f in frames(data) {
        if let Some((_, Ok(m))) = super::message::Message::from_frame(&f) {
            assert!(!m.name().is_empty());
        }
        s.handle_frame(now, &f);
        let h = Header::from_frame(&f);
        let mut replies = 0;
        while let Some(tx) = s.poll_transmit(now) {
            replies += 1;
            let rh = Header::from_frame(&Frame::Can(tx)).expect("replies are extended data frames");
            let req = h.expect("a reply answers a MegaSquirt frame");
            assert_eq!(rh.from_id(), SERVER_ID);
            assert_eq!(rh.to_id(), req.from_id());
            assert!(req.to_id() == SERVER_ID || req.to_id() == 15);
            if req.msg_type() != MsgType::OutmsgReq {
                assert!(replies <= 1);
            }
            // the write-only table 3 is never read
            if req.msg_type() == MsgType::Req {
                assert_ne!(req.var_blk(), 3);
            }
        }
        while s.poll_event().is_some() {}
    }
    assert_eq!(ro, ro_copy, "read-only table written");
}

/// Runs fuzzer bytes as replies into a [`Client`] with requests
/// outstanding (the first byte picks the request mix) and checks: no panic,
/// at most one completion per request, and completions only for requests.
pub fn client(data: &[u8]) {
    let Ok(mut c) = Client::<4, 32>::new(ClientConfig::new(3)) else { return };
    let mix = data.first().copied().unwrap_or(0);
    let mut handles = [None; 4];
    handles[0] = c.read(0, 7, u16::from(mix) * 4, 20).ok();
    handles[1] = c.read(1, 40, 0, 8).ok();
    handles[2] = c.crc(0, mix & 0x1F).ok();
    handles[3] = c.outmsg(0, mix % 20, 1 + u16::from(mix % 24)).ok();
    let mut now = Instant::ZERO;
    while c.poll_transmit(now).is_some() {}
    let mut seen = [false; 4];
    for (k, f) in frames(data.get(1..).unwrap_or(&[])).enumerate() {
        c.handle_frame(now, &f);
        if k % 7 == 6 {
            now += Duration::from_millis(30);
            c.handle_timeout(now);
        }
        while c.poll_transmit(now).is_some() {}
        while let Some(ev) = c.poll_event() {
            let handle = ev.handle();
            let i = handles.iter().position(|h| *h == Some(handle)).expect("completion for an unknown handle");
            assert!(!seen[i], "second completion");
            seen[i] = true;
            if let Some(d) = c.read_data(handle) {
                assert!(d.len() <= 32);
            }
        }
    }
}

/// Runs fuzzer bytes through the broadcast decoders (default bases and a
/// base chosen by the first two bytes) and checks: no panic, only
/// whole fields of the frame decoded, every value finite.
pub fn broadcast(data: &[u8]) {
    let base = u16::from_be_bytes([data.first().copied().unwrap_or(0), data.get(1).copied().unwrap_or(0)]) & 0x7FF;
    let decoders = [
        BroadcastDecoder::default(),
        BroadcastDecoder { dash_base: Some(base), advanced_base: Some(base.wrapping_add(3) & 0x7FF) },
    ];
    for f in frames(data.get(2..).unwrap_or(&[])) {
        for d in &decoders {
            if let Some(fields) = d.decode(&f) {
                let n = f.data().len();
                for (name, value, _unit) in fields {
                    assert!(!name.is_empty());
                    assert!(value.is_finite());
                }
                assert!(n <= 8);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    fn arb_record() -> impl Strategy<Value = std::vec::Vec<u8>> {
        // mostly MegaSquirt-shaped records to the server / client
        (any::<u32>(), 0u8..8, 0u8..16, 0u8..32, 0u16..64, 0u8..16, proptest::collection::vec(any::<u8>(), 0..=8))
            .prop_map(|(r, t, from, blk, off, to, d)| {
                let id = if r % 4 == 0 {
                    r
                } else {
                    0x8000_0000
                        | u32::from(off) << 18
                        | u32::from(t) << 15
                        | u32::from(from) << 11
                        | u32::from([0, 3, 15, to][(r >> 8) as usize % 4]) << 7
                        | u32::from(blk & 0xF) << 3
                        | u32::from(blk & 0x10) >> 2
                };
                let mut v = id.to_be_bytes().to_vec();
                v.push(d.len() as u8);
                v.extend_from_slice(&d);
                v
            })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]
        #[test]
        fn server_fuzz_entry(recs in proptest::collection::vec(arb_record(), 0..32), tail in proptest::collection::vec(any::<u8>(), 0..12)) {
            let mut data: std::vec::Vec<u8> = recs.concat();
            data.extend_from_slice(&tail);
            super::server(&data);
        }

        #[test]
        fn client_fuzz_entry(mix in any::<u8>(), recs in proptest::collection::vec(arb_record(), 0..32)) {
            let mut data = std::vec![mix];
            data.extend(recs.concat());
            super::client(&data);
        }

        #[test]
        fn raw_bytes(data in proptest::collection::vec(any::<u8>(), 0..200)) {
            super::server(&data);
            super::client(&data);
            super::broadcast(&data);
        }

        #[test]
        fn broadcast_fuzz_entry(base in 0u16..0x800, recs in proptest::collection::vec((0x5E0u32..0x640, proptest::collection::vec(any::<u8>(), 0..=8)), 0..16)) {
            let mut data = base.to_be_bytes().to_vec();
            for (id, d) in recs {
                data.extend_from_slice(&id.to_be_bytes());
                data.push(d.len() as u8);
                data.extend_from_slice(&d);
            }
            super::broadcast(&data);
        }
    }
}
