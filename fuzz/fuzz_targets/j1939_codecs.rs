//! The J1939 payload codecs a peer controls: Request (J1939-21 5.4.2),
//! Acknowledgment (5.4.4), DM1/DM2 (J1939-73 5.7.1), NAME (J1939-81 4.1.1),
//! VIN, the DTC store's answers to requests, and the J1939 identifier.
//! Invariants: no panic; every parsed Request, Acknowledgment, DTC and
//! NAME emits back to the bytes it came from (up to the bits the format
//! defines); DM messages emit to a length that parses to the same DTCs.
#![no_main]

use arbitrary::Arbitrary;
use canx_core::frame::{make_id, Id};
use canx_core::j1939::dm::{emit_dm, DmMessage, Dtc, DtcStore};
use canx_core::j1939::request::{Acknowledgment, Request};
use canx_core::j1939::{J1939Id, Name, Pgn};
use libfuzzer_sys::fuzz_target;

#[derive(Arbitrary, Debug)]
struct Input {
    payload: Vec<u8>,
    raw_id: u32,
    name: [u8; 8],
    store_ops: Vec<(bool, u32, u8)>,
    request_pgns: Vec<u32>,
}

fuzz_target!(|input: Input| {
    let p = &input.payload[..input.payload.len().min(1785)];
    if let Ok(r) = Request::parse(p) {
        assert_eq!(&r.emit()[..], &p[..3]);
    }
    if let Ok(a) = Acknowledgment::parse(p) {
        let again = Acknowledgment::parse(&a.emit()).expect("emitted acknowledgment parses");
        assert_eq!(again, a);
    }
    if let Ok(m) = DmMessage::parse(p) {
        let mut dtcs = [Dtc::from_u32(0); 64];
        let mut n = 0;
        for d in m.dtcs().take(64) {
            assert_eq!(Dtc::from_bytes(d.to_bytes()), d);
            dtcs[n] = d;
            n += 1;
        }
        let mut buf = [0u8; 2 + 4 * 64];
        let len = emit_dm(m.lamps, m.flash, &dtcs[..n], &mut buf).expect("buffer fits 64 DTCs");
        let again = DmMessage::parse(&buf[..len]).expect("emitted DM parses");
        assert!(again.dtcs().eq(dtcs[..n].iter().copied()));
    }
    let _ = canx_core::j1939::codecs::vin::decode(p);
    let name = Name::from_bytes(input.name);
    assert_eq!(name.to_bytes(), input.name);
    if let Ok(again) = Name::from_fields(name.fields()) {
        assert_eq!(again, name);
    }
    if let Ok(Id::Extended(e)) = make_id(input.raw_id & 0x1FFF_FFFF, true) {
        let j = J1939Id::from_id(e);
        // Every 29-bit identifier decodes, and encodes back to itself.
        assert_eq!(j.to_id(), e, "{j:?}");
    }
    let mut store = DtcStore::<4>::new();
    for &(on, spn, fmi) in input.store_ops.iter().take(32) {
        if on {
            let _ = store.activate(spn, fmi);
        } else {
            store.deactivate(spn, fmi);
        }
        assert!(store.active().count() <= 4);
    }
    for &raw in input.request_pgns.iter().take(16) {
        if let Some(pgn) = Pgn::new(raw) {
            let mut buf = [0u8; 2 + 4 * 8];
            let _ = store.handle_request(pgn, &mut buf);
        }
    }
});
