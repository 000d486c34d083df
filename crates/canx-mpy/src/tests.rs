//! Tests of the C ABI, called the way the C glue calls it.

use super::*;
use core::ptr::{null, null_mut};

/// Caller memory as the MicroPython object provides it (8-aligned words).
struct Mem(Vec<u64>);

impl Mem {
    fn new(name: u64, address: u8) -> Mem {
        Mem::of(CANX_J1939_FULL, name, address)
    }
    fn of(variant: u32, name: u64, address: u8) -> Mem {
        let size = canx_j1939_size(variant);
        let mut m = Mem(vec![0u64; (size as usize).div_ceil(8)]);
        // SAFETY: test memory of canx_j1939_size(variant) bytes, 8-aligned.
        assert_eq!(unsafe { canx_j1939_init(m.p(), variant, size, name, address) }, CANX_OK);
        m
    }
    fn p(&mut self) -> *mut c_void {
        self.0.as_mut_ptr().cast()
    }
}

#[derive(Debug, Clone, PartialEq)]
struct Ev {
    ev: CanxEvent,
    data: Vec<u8>,
}

/// Two engines on a wire, stepped 1 ms at a time.
struct Bus {
    a: Mem,
    b: Mem,
    now: u64,
    ev_a: Vec<Ev>,
    ev_b: Vec<Ev>,
}

fn drain_events(e: *mut c_void, into: &mut Vec<Ev>) {
    let mut buf = vec![0u8; 1785];
    loop {
        let mut ev = CanxEvent::default();
        // SAFETY: valid engine, event and buffer of 1785 bytes.
        let r = unsafe { canx_j1939_poll_event(e, &mut ev, buf.as_mut_ptr(), 1785) };
        assert!(r == 0 || r == 1, "{r}");
        if r == 0 {
            return;
        }
        let n = if ev.kind == CANX_EV_MESSAGE { (ev.len as usize).min(1785) } else { 0 };
        into.push(Ev { ev, data: buf[..n].to_vec() });
    }
}

impl Bus {
    fn of(variant: u32) -> Bus {
        let (a, b) = (Mem::of(variant, 0x10, 0x80), Mem::of(variant, 0x20, 0x90));
        let mut bus = Bus { a, b, now: 0, ev_a: vec![], ev_b: vec![] };
        // SAFETY: valid engines.
        unsafe {
            assert_eq!(canx_j1939_start(bus.a.p(), 0), CANX_OK);
            assert_eq!(canx_j1939_start(bus.b.p(), 0), CANX_OK);
        }
        bus
    }

    fn step(&mut self, ms: u64) {
        for _ in 0..ms {
            for _ in 0..64 {
                let mut moved = false;
                let mut f = CanxFrame::default();
                // SAFETY: valid engines and frame.
                unsafe {
                    while canx_j1939_poll_transmit(self.a.p(), self.now, &mut f) == 1 {
                        assert_eq!(canx_j1939_handle_frame(self.b.p(), self.now, &f), CANX_OK);
                        moved = true;
                    }
                    while canx_j1939_poll_transmit(self.b.p(), self.now, &mut f) == 1 {
                        assert_eq!(canx_j1939_handle_frame(self.a.p(), self.now, &f), CANX_OK);
                        moved = true;
                    }
                }
                drain_events(self.a.p(), &mut self.ev_a);
                drain_events(self.b.p(), &mut self.ev_b);
                if !moved {
                    break;
                }
            }
            self.now += 1000;
            // SAFETY: valid engines.
            unsafe {
                canx_j1939_handle_timeout(self.a.p(), self.now);
                canx_j1939_handle_timeout(self.b.p(), self.now);
            }
        }
    }

    fn claimed() -> Bus {
        Bus::claimed_of(CANX_J1939_FULL)
    }
    fn claimed_of(variant: u32) -> Bus {
        let mut bus = Bus::of(variant);
        bus.step(300);
        bus
    }
}

fn kinds(evs: &[Ev], kind: u8) -> Vec<&Ev> {
    evs.iter().filter(|e| e.ev.kind == kind).collect()
}

#[test]
fn layouts() {
    assert_eq!(size_of::<CanxFrame>(), 16);
    assert_eq!(core::mem::offset_of!(CanxFrame, flags), 4);
    assert_eq!(core::mem::offset_of!(CanxFrame, len), 5);
    assert_eq!(core::mem::offset_of!(CanxFrame, data), 8);
    assert_eq!(size_of::<CanxEvent>(), 24);
    assert_eq!(core::mem::offset_of!(CanxEvent, pgn), 4);
    assert_eq!(core::mem::offset_of!(CanxEvent, len), 8);
    assert_eq!(core::mem::offset_of!(CanxEvent, detail), 12);
    assert_eq!(core::mem::offset_of!(CanxEvent, flags), 14);
    assert_eq!(core::mem::offset_of!(CanxEvent, name), 16);
    assert!(canx_j1939_align() <= 8, "MicroPython's heap gives 8-byte alignment");
    // TP buffers of 1785 bytes plus tables: a budget, so growth is seen.
    let small = canx_j1939_size(CANX_J1939_SMALL);
    let full = canx_j1939_size(CANX_J1939_FULL);
    assert!((1785..8_000).contains(&small), "small {small}");
    assert!((4 * 1785..24_000).contains(&full), "full {full}");
    assert!(full - small >= 3 * 1785, "three more TP buffers in full");
    assert_eq!(canx_j1939_size(2), 0, "unknown variant");
    println!("engine bytes: small {small}, full {full}");
}

#[test]
fn header_matches_constants() {
    let h = include_str!("../include/canx_mpy.h");
    for (name, v) in [
        ("CANX_OK", CANX_OK),
        ("CANX_EARG", CANX_EARG),
        ("CANX_ENOADDR", CANX_ENOADDR),
        ("CANX_ETOOLONG", CANX_ETOOLONG),
        ("CANX_EINVAL", CANX_EINVAL),
        ("CANX_EFULL", CANX_EFULL),
        ("CANX_EBUSY", CANX_EBUSY),
        ("CANX_J1939_SMALL", CANX_J1939_SMALL as i32),
        ("CANX_J1939_FULL", CANX_J1939_FULL as i32),
        ("CANX_FLAG_RTR", CANX_FLAG_RTR.into()),
        ("CANX_FLAG_EXT", CANX_FLAG_EXT.into()),
        ("CANX_EV_CLAIMED", CANX_EV_CLAIMED.into()),
        ("CANX_EV_LOST", CANX_EV_LOST.into()),
        ("CANX_EV_CANNOT_CLAIM", CANX_EV_CANNOT_CLAIM.into()),
        ("CANX_EV_TABLE_ADDED", CANX_EV_TABLE_ADDED.into()),
        ("CANX_EV_TABLE_REMOVED", CANX_EV_TABLE_REMOVED.into()),
        ("CANX_EV_MESSAGE", CANX_EV_MESSAGE.into()),
        ("CANX_EV_REQUEST", CANX_EV_REQUEST.into()),
        ("CANX_EV_SENT", CANX_EV_SENT.into()),
        ("CANX_EV_ABORTED", CANX_EV_ABORTED.into()),
        ("CANX_EV_REQUEST_DONE", CANX_EV_REQUEST_DONE.into()),
        ("CANX_OUTCOME_ANSWERED", CANX_OUTCOME_ANSWERED as i32),
        ("CANX_OUTCOME_ACKNOWLEDGED", CANX_OUTCOME_ACKNOWLEDGED as i32),
        ("CANX_OUTCOME_ABORTED", CANX_OUTCOME_ABORTED as i32),
        ("CANX_OUTCOME_TIMED_OUT", CANX_OUTCOME_TIMED_OUT as i32),
        ("CANX_EVF_TRUNCATED", CANX_EVF_TRUNCATED.into()),
        ("CANX_EVF_BY_PEER", CANX_EVF_BY_PEER.into()),
        ("CANX_EVF_RECEIVE", CANX_EVF_RECEIVE.into()),
        ("CANX_EVF_GLOBAL", CANX_EVF_GLOBAL.into()),
    ] {
        let line = format!("#define {name} ({v})");
        assert!(h.contains(&line), "canx_mpy.h lacks `{line}`");
    }
}

#[test]
fn claim_and_contention() {
    let mut bus = Bus::claimed();
    assert_eq!(kinds(&bus.ev_a, CANX_EV_CLAIMED)[0].ev.source, 0x80);
    assert_eq!(kinds(&bus.ev_b, CANX_EV_CLAIMED)[0].ev.source, 0x90);
    // SAFETY: valid engines.
    unsafe {
        assert_eq!(canx_j1939_address(bus.a.p()), 0x80);
        assert_eq!(canx_j1939_address(bus.b.p()), 0x90);
    }
    // A third NAME (lower = higher priority) wants 0x80: a loses it and moves.
    let mut c = Mem::new(0x01, 0x80);
    let mut f = CanxFrame::default();
    // SAFETY: valid engines and frame.
    unsafe {
        canx_j1939_start(c.p(), bus.now);
        assert_eq!(canx_j1939_poll_transmit(c.p(), bus.now, &mut f), 1);
        assert_eq!(f.flags, CANX_FLAG_EXT);
        assert_eq!(f.id & 0xFF, 0x80);
        assert_eq!(canx_j1939_handle_frame(bus.a.p(), bus.now, &f), CANX_OK);
    }
    bus.step(300);
    let lost = kinds(&bus.ev_a, CANX_EV_LOST);
    assert_eq!((lost[0].ev.source, lost[0].ev.name), (0x80, 0x01));
    // NAME 0x10 is not arbitrary-address capable: Cannot Claim follows.
    assert_eq!(kinds(&bus.ev_a, CANX_EV_CANNOT_CLAIM).len(), 1);
    // SAFETY: valid engine.
    assert_eq!(unsafe { canx_j1939_address(bus.a.p()) }, CANX_ENOADDR);
    assert!(!kinds(&bus.ev_b, CANX_EV_TABLE_ADDED).is_empty());
}

#[test]
fn single_frame_bam_and_rts_cts() {
    let mut bus = Bus::claimed();
    let big: Vec<u8> = (0..1785u32).map(|i| (i * 7 + 3) as u8).collect();
    // SAFETY: valid engines and buffers.
    unsafe {
        assert_eq!(canx_j1939_send(bus.a.p(), 6, 0xFF00, 0xFF, [1, 2, 3].as_ptr(), 3), CANX_OK);
        assert_eq!(canx_j1939_send(bus.a.p(), 7, 0xFECA, 0xFF, big.as_ptr(), 1785), CANX_OK);
        assert_eq!(canx_j1939_send(bus.a.p(), 7, 0xEF00, 0x90, big.as_ptr(), 1785), CANX_OK);
    }
    // BAM: 255 packets 50 ms apart (J1939-21 5.10.2.3).
    bus.step(14_000);
    let msgs = kinds(&bus.ev_b, CANX_EV_MESSAGE);
    assert_eq!(msgs.len(), 3, "{:?}", msgs.iter().map(|m| m.ev).collect::<Vec<_>>());
    assert_eq!((msgs[0].ev.pgn, msgs[0].ev.priority, &msgs[0].data[..]), (0xFF00, 6, &[1u8, 2, 3][..]));
    let bam = msgs.iter().find(|m| m.ev.pgn == 0xFECA).unwrap();
    assert_eq!((bam.ev.len, bam.ev.destination, &bam.data), (1785, 0xFF, &big));
    let cmdt = msgs.iter().find(|m| m.ev.pgn == 0xEF00).unwrap();
    assert_eq!((cmdt.ev.len, cmdt.ev.destination, cmdt.ev.source, &cmdt.data), (1785, 0x90, 0x80, &big));
    assert_eq!(kinds(&bus.ev_a, CANX_EV_SENT).len(), 2);
}

#[test]
fn truncated_copy_is_flagged() {
    let mut bus = Bus::claimed();
    // SAFETY: valid engines, frame and buffers.
    unsafe {
        assert_eq!(canx_j1939_send(bus.a.p(), 6, 0xFF00, 0xFF, [9u8; 8].as_ptr(), 8), CANX_OK);
        let mut f = CanxFrame::default();
        assert_eq!(canx_j1939_poll_transmit(bus.a.p(), bus.now, &mut f), 1);
        assert_eq!(canx_j1939_handle_frame(bus.b.p(), bus.now, &f), CANX_OK);
        let (mut ev, mut small) = (CanxEvent::default(), [0u8; 3]);
        assert_eq!(canx_j1939_poll_event(bus.b.p(), &mut ev, small.as_mut_ptr(), 3), 1);
        assert_eq!((ev.kind, ev.len, ev.flags), (CANX_EV_MESSAGE, 8, CANX_EVF_TRUNCATED));
        assert_eq!(small, [9; 3]);
    }
}

#[test]
fn request_response_and_nack() {
    let mut bus = Bus::claimed();
    // SAFETY: valid engines.
    unsafe {
        assert_eq!(canx_j1939_register(bus.b.p(), 65260), CANX_OK);
        assert_eq!(canx_j1939_request(bus.a.p(), bus.now, 65260, 0x90), CANX_OK);
    }
    bus.step(5);
    let req = kinds(&bus.ev_b, CANX_EV_REQUEST)[0].ev;
    assert_eq!((req.pgn, req.source, req.flags & CANX_EVF_GLOBAL), (65260, 0x80, 0));
    let mut vin = [0u8; 32];
    // SAFETY: valid buffers and engines.
    unsafe {
        let n = canx_vin_encode(b"1M8GDM9AXKP042788".as_ptr(), 17, vin.as_mut_ptr(), 32);
        assert_eq!(n, 18);
        assert_eq!(canx_j1939_respond(bus.b.p(), req.pgn, req.source, 0, vin.as_ptr(), n as u32), CANX_OK);
    }
    bus.step(200);
    let answer = kinds(&bus.ev_a, CANX_EV_MESSAGE)[0];
    assert_eq!((answer.ev.pgn, &answer.data[..]), (65260, &vin[..18]));
    // SAFETY: valid buffer.
    assert_eq!(unsafe { canx_vin_decode(answer.data.as_ptr(), answer.data.len() as u32) }, 17);
    let done = kinds(&bus.ev_a, CANX_EV_REQUEST_DONE)[0].ev;
    assert_eq!((done.pgn, done.destination, u32::from(done.detail)), (65260, 0x90, CANX_OUTCOME_ANSWERED));
    // Unregistered, destination-specific: NACK.
    // SAFETY: valid engine.
    unsafe { assert_eq!(canx_j1939_request(bus.a.p(), bus.now, 65262, 0x90), CANX_OK) };
    bus.step(50);
    let done = kinds(&bus.ev_a, CANX_EV_REQUEST_DONE)[1].ev;
    assert_eq!(u32::from(done.detail & 0xFF), CANX_OUTCOME_ACKNOWLEDGED);
    assert_eq!(done.detail >> 8, 1, "NACK control code");
    // Nobody at 0x33: time out after 1.25 s.
    // SAFETY: valid engine.
    unsafe { assert_eq!(canx_j1939_request(bus.a.p(), bus.now, 65262, 0x33), CANX_OK) };
    bus.step(1300);
    let done = kinds(&bus.ev_a, CANX_EV_REQUEST_DONE)[2].ev;
    assert_eq!(u32::from(done.detail), CANX_OUTCOME_TIMED_OUT);
}

#[test]
fn dm1_and_codecs() {
    let mut out = [0u8; 64];
    let dtcs = [Dtc::new(100, 1, 2).unwrap().to_u32(), Dtc::new(190, 3, 1).unwrap().to_u32()];
    // SAFETY: valid buffers of the given lengths.
    unsafe {
        assert_eq!(canx_dm1_encode(0x04, 0xFF, null(), 0, out.as_mut_ptr(), 64), 8);
        assert_eq!(out[..8], [0x04, 0xFF, 0, 0, 0, 0, 0xFF, 0xFF]);
        assert_eq!(canx_dm1_encode(0x04, 0xFF, dtcs.as_ptr(), 2, out.as_mut_ptr(), 64), 10);
        let parsed = canx_core::j1939::dm::DmMessage::parse(&out[..10]).unwrap();
        assert_eq!(parsed.dtcs().map(|d| d.to_u32()).collect::<Vec<_>>(), dtcs);
        assert_eq!(canx_dm1_encode(0x04, 0xFF, dtcs.as_ptr(), 2, out.as_mut_ptr(), 9), CANX_ETOOLONG);
        assert_eq!(canx_dm1_encode(0, 0, dtcs.as_ptr(), 17, out.as_mut_ptr(), 64), CANX_ETOOLONG);
        assert_eq!(canx_dm1_encode(0, 0, null(), 1, out.as_mut_ptr(), 64), CANX_EARG);

        assert_eq!(canx_eec1_encode(1800 * 8, out.as_mut_ptr()), CANX_OK);
        assert_eq!(canx_eec1_decode(out.as_ptr(), 8), 1800 * 8);
        assert_eq!(canx_eec1_encode(0xFFFF, out.as_mut_ptr()), CANX_OK);
        assert_eq!(canx_eec1_decode(out.as_ptr(), 8), CANX_EINVAL);
        assert_eq!(canx_eec1_encode(0xFB00, out.as_mut_ptr()), CANX_EINVAL);
        assert_eq!(canx_eec1_encode(0, null_mut()), CANX_EARG);
        assert_eq!(canx_eec1_decode(out.as_ptr(), 3), CANX_EINVAL);

        assert_eq!(canx_et1_encode(90, i16::MIN, out.as_mut_ptr()), CANX_OK);
        assert_eq!(canx_et1_coolant(out.as_ptr(), 8), 90);
        assert_eq!(out[1], 0xFF);
        assert_eq!(canx_et1_encode(211, 0, out.as_mut_ptr()), CANX_EINVAL);

        assert_eq!(canx_vin_encode(b"ABC".as_ptr(), 3, out.as_mut_ptr(), 3), CANX_ETOOLONG);
        assert_eq!(canx_vin_encode([0xFFu8].as_ptr(), 1, out.as_mut_ptr(), 64), CANX_EINVAL);
    }
    // DM1 of 10 bytes goes by BAM between two engines.
    let mut bus = Bus::claimed();
    // SAFETY: valid engine and buffer.
    unsafe {
        let n = canx_dm1_encode(0x04, 0xFF, dtcs.as_ptr(), 2, out.as_mut_ptr(), 64);
        assert_eq!(canx_j1939_send(bus.a.p(), 6, 65226, 0xFF, out.as_ptr(), n as u32), CANX_OK);
    }
    bus.step(300);
    let m = kinds(&bus.ev_b, CANX_EV_MESSAGE)[0];
    assert_eq!((m.ev.pgn, &m.data[..]), (65226, &out[..10]));
}

#[test]
fn every_error_code() {
    let mut buf = [0u8; 8];
    let mut f = CanxFrame::default();
    let mut ev = CanxEvent::default();
    // SAFETY: each call passes null or valid pointers as its contract allows.
    unsafe {
        // CANX_EARG: null/short/misaligned memory, uninitialised state, null out-pointers.
        assert_eq!(canx_j1939_init(null_mut(), CANX_J1939_FULL, 1 << 20, 1, 0x80), CANX_EARG);
        let full = canx_j1939_size(CANX_J1939_FULL);
        let mut mem = vec![0u64; full as usize / 8 + 2];
        let p: *mut c_void = mem.as_mut_ptr().cast();
        assert_eq!(canx_j1939_init(p, CANX_J1939_FULL, full - 1, 1, 0x80), CANX_EARG);
        assert_eq!(canx_j1939_init(p, CANX_J1939_FULL, canx_j1939_size(CANX_J1939_SMALL), 1, 0x80), CANX_EARG);
        assert_eq!(canx_j1939_init(p.cast::<u8>().add(1).cast(), CANX_J1939_FULL, full + 8, 1, 0x80), CANX_EARG);
        assert_eq!(canx_j1939_init(p, 2, full, 1, 0x80), CANX_EINVAL, "unknown variant");
        assert_eq!(canx_j1939_start(p, 0), CANX_EARG, "zeroed memory is not an engine");
        assert_eq!(canx_j1939_start(null_mut(), 0), CANX_EARG);
        assert_eq!(canx_j1939_poll_timeout(p), i64::from(CANX_EARG));
        assert_eq!(canx_j1939_dropped(p), i64::from(CANX_EARG));
        // CANX_EINVAL: a preferred address above 253.
        assert_eq!(canx_j1939_init(p, CANX_J1939_FULL, full, 1, 254), CANX_EINVAL);
        assert_eq!(canx_j1939_init(p, CANX_J1939_FULL, full, 1, 0x80), CANX_OK);
        assert_eq!(canx_j1939_handle_frame(p, 0, null()), CANX_EARG);
        assert_eq!(canx_j1939_poll_transmit(p, 0, null_mut()), CANX_EARG);
        assert_eq!(canx_j1939_poll_event(p, null_mut(), buf.as_mut_ptr(), 8), CANX_EARG);
        assert_eq!(canx_j1939_poll_event(p, &mut ev, null_mut(), 8), CANX_EARG);
        assert_eq!(canx_j1939_send(p, 6, 0xFF00, 0xFF, null(), 3), CANX_EARG);
        f.len = 9;
        assert_eq!(canx_j1939_handle_frame(p, 0, &f), CANX_EARG);
        // CANX_EINVAL: identifiers out of range, bad PGN.
        f = CanxFrame { id: 0x800, len: 0, ..CanxFrame::default() };
        assert_eq!(canx_j1939_handle_frame(p, 0, &f), CANX_EINVAL);
        f = CanxFrame { id: 0x2000_0000, flags: CANX_FLAG_EXT, ..CanxFrame::default() };
        assert_eq!(canx_j1939_handle_frame(p, 0, &f), CANX_EINVAL);
        f = CanxFrame { id: 0x123, ..CanxFrame::default() };
        assert_eq!(canx_j1939_handle_frame(p, 0, &f), CANX_OK, "standard frames are ignored");
        // CANX_ENOADDR before the claim.
        assert_eq!(canx_j1939_start(p, 0), CANX_OK);
        assert_eq!(canx_j1939_address(p), CANX_ENOADDR);
        assert_eq!(canx_j1939_send(p, 6, 0xFF00, 0xFF, buf.as_ptr(), 8), CANX_ENOADDR);
        assert_eq!(canx_j1939_request(p, 0, 0xFF00, 0xFF), CANX_ENOADDR);
        assert_eq!(canx_j1939_send(p, 6, 0x40000, 0xFF, buf.as_ptr(), 8), CANX_EINVAL);
        assert_eq!(canx_j1939_register(p, 0x40000), CANX_EINVAL);
        assert_eq!(canx_j1939_request(p, 0, 0x40000, 0xFF), CANX_EINVAL);
        assert!(canx_j1939_poll_timeout(p) >= 0);
    }
    let mut bus = Bus::claimed();
    let big = vec![0u8; 1786];
    // SAFETY: valid engines and buffers.
    unsafe {
        let a = bus.a.p();
        assert_eq!(canx_j1939_send(a, 8, 0xFF00, 0xFF, buf.as_ptr(), 8), CANX_EINVAL, "priority 8");
        assert_eq!(canx_j1939_send(a, 6, 0xEF00, 254, buf.as_ptr(), 8), CANX_EINVAL, "destination 254");
        assert_eq!(canx_j1939_request(a, 0, 0xFF00, 254), CANX_EINVAL);
        assert_eq!(canx_j1939_send(a, 6, 0xEF00, 0x90, big.as_ptr(), 1786), CANX_ETOOLONG);
        assert_eq!(canx_j1939_respond(a, 0xEF00, 0x90, 0, big.as_ptr(), 1786), CANX_ETOOLONG);
        // CANX_EBUSY: all 4 TP sessions of the full variant in use.
        for i in 0..4 {
            assert_eq!(canx_j1939_send(a, 7, 0xFEC0 + i, 0xFF, big.as_ptr(), 100), CANX_OK);
        }
        assert_eq!(canx_j1939_send(a, 7, 0xFECC, 0xFF, big.as_ptr(), 100), CANX_EBUSY);
        // CANX_EFULL: 16 registered PGNs, 16 pending requests, 32 queued frames.
        for i in 0..16 {
            assert_eq!(canx_j1939_register(a, 0xFF00 + i), CANX_OK);
        }
        assert_eq!(canx_j1939_register(a, 0xFF10), CANX_EFULL);
        for i in 0..16 {
            assert_eq!(canx_j1939_request(a, bus.now, 0xFF00 + i, 0x33), CANX_OK);
        }
        assert_eq!(canx_j1939_request(a, bus.now, 0xFF10, 0x33), CANX_EFULL);
        let mut full = false;
        for _ in 0..64 {
            match canx_j1939_send(a, 6, 0xFF00, 0xFF, buf.as_ptr(), 8) {
                CANX_OK => {}
                CANX_EFULL => {
                    full = true;
                    break;
                }
                r => panic!("{r}"),
            }
        }
        assert!(full);
        assert!(canx_j1939_dropped(a) > 0, "the refused frame is counted");
    }
}

/// Each variant: claim, a single frame, RTS/CTS of 1,785 bytes and a
/// request answered through the ABI between two engines of that variant.
#[test]
fn two_ecu_exchange_per_variant() {
    for variant in [CANX_J1939_SMALL, CANX_J1939_FULL] {
        let mut bus = Bus::claimed_of(variant);
        let big: Vec<u8> = (0..1785u32).map(|i| (i * 11 + 5) as u8).collect();
        // SAFETY: valid engines and buffers.
        unsafe {
            assert_eq!(canx_j1939_address(bus.a.p()), 0x80);
            assert_eq!(canx_j1939_address(bus.b.p()), 0x90);
            assert_eq!(canx_j1939_send(bus.b.p(), 6, 0xFF00, 0xFF, [4, 5].as_ptr(), 2), CANX_OK);
            assert_eq!(canx_j1939_register(bus.b.p(), 0xFEEC), CANX_OK);
        }
        bus.step(5);
        let m = kinds(&bus.ev_a, CANX_EV_MESSAGE);
        assert_eq!((m.len(), m[0].ev.pgn, &m[0].data[..]), (1, 0xFF00, &[4u8, 5][..]), "variant {variant}");
        // A third engine of the variant (at 0x91) gets 1,785 bytes by
        // RTS/CTS from b and requests a PGN b answers.
        let mut c = Mem::of(variant, 0x8000_0000_0000_0030, 0x91);
        // SAFETY: valid engines, frames and buffers.
        unsafe {
            assert_eq!(canx_j1939_start(c.p(), bus.now), CANX_OK);
            let mut ev_c = vec![];
            let mut f = CanxFrame::default();
            let mut now = bus.now;
            let mut sent = false;
            for _ in 0..3000 {
                for _ in 0..64 {
                    let mut moved = false;
                    while canx_j1939_poll_transmit(c.p(), now, &mut f) == 1 {
                        assert_eq!(canx_j1939_handle_frame(bus.b.p(), now, &f), CANX_OK);
                        moved = true;
                    }
                    while canx_j1939_poll_transmit(bus.b.p(), now, &mut f) == 1 {
                        assert_eq!(canx_j1939_handle_frame(c.p(), now, &f), CANX_OK);
                        moved = true;
                    }
                    drain_events(c.p(), &mut ev_c);
                    drain_events(bus.b.p(), &mut bus.ev_b);
                    if !moved {
                        break;
                    }
                }
                now += 1000;
                canx_j1939_handle_timeout(c.p(), now);
                canx_j1939_handle_timeout(bus.b.p(), now);
                if now == bus.now + 300_000 {
                    assert_eq!(canx_j1939_address(c.p()), 0x91, "variant {variant}");
                    assert_eq!(canx_j1939_send(bus.b.p(), 7, 0xEF00, 0x91, big.as_ptr(), 1785), CANX_OK);
                    assert_eq!(canx_j1939_request(c.p(), now, 0xFEEC, 0x90), CANX_OK);
                    sent = true;
                }
                let req = kinds(&bus.ev_b, CANX_EV_REQUEST);
                if let Some(r) = req.first() {
                    let (pgn, src, global) = (r.ev.pgn, r.ev.source, r.ev.flags & CANX_EVF_GLOBAL);
                    bus.ev_b.retain(|e| e.ev.kind != CANX_EV_REQUEST);
                    let vin = b"VIN0123456789ABCD*";
                    // While b's only session (small) carries the 1,785
                    // bytes, a 18-byte answer needs TP too: EBUSY, retried.
                    let r = canx_j1939_respond(bus.b.p(), pgn, src, global, vin.as_ptr(), 18);
                    if variant == CANX_J1939_SMALL {
                        assert_eq!(r, CANX_EBUSY, "the small variant's single session is busy");
                    } else {
                        assert_eq!(r, CANX_OK);
                    }
                }
                if variant == CANX_J1939_SMALL && !kinds(&bus.ev_b, CANX_EV_SENT).is_empty() && sent {
                    // Session free again: the answer goes now.
                    sent = false;
                    let vin = b"VIN0123456789ABCD*";
                    assert_eq!(canx_j1939_respond(bus.b.p(), 0xFEEC, 0x91, 0, vin.as_ptr(), 18), CANX_OK);
                }
            }
            let m = kinds(&ev_c, CANX_EV_MESSAGE);
            let tp = m.iter().find(|e| e.ev.len == 1785).expect("1,785 bytes arrived");
            assert_eq!((&tp.data, tp.ev.source, tp.ev.pgn), (&big, 0x90, 0xEF00), "variant {variant}");
            let vin = m.iter().find(|e| e.ev.pgn == 0xFEEC).expect("VIN answer arrived");
            assert_eq!(&vin.data[..], b"VIN0123456789ABCD*");
            let done = kinds(&ev_c, CANX_EV_REQUEST_DONE);
            assert_eq!(done.len(), 1, "variant {variant}");
        }
    }
}

/// The small variant's single TP session: a second transfer while one runs
/// is refused with `CANX_EBUSY` (the caller keeps it and retries after
/// `SENT`/`ABORTED`), and an RTS from a peer meanwhile is answered with a
/// TP abort (J1939-21 5.10.3.5), seen by the peer as `ABORTED` `BY_PEER`.
#[test]
fn small_variant_single_session_busy() {
    let mut bus = Bus::claimed_of(CANX_J1939_SMALL);
    let mut c = Mem::of(CANX_J1939_SMALL, 0x8000_0000_0000_0030, 0x91);
    let data = [0x5Au8; 100];
    // SAFETY: valid engines, frames and buffers.
    unsafe {
        assert_eq!(canx_j1939_start(c.p(), bus.now), CANX_OK);
        let b = bus.b.p();
        let mut now = bus.now;
        let mut ev_c = vec![];
        let mut f = CanxFrame::default();
        let mut pump =
            |b: *mut c_void, c: *mut c_void, now: &mut u64, ev_b: &mut Vec<Ev>, ev_c: &mut Vec<Ev>, ms: u32| {
                for _ in 0..ms {
                    for _ in 0..64 {
                        let mut moved = false;
                        while canx_j1939_poll_transmit(c, *now, &mut f) == 1 {
                            assert_eq!(canx_j1939_handle_frame(b, *now, &f), CANX_OK);
                            moved = true;
                        }
                        while canx_j1939_poll_transmit(b, *now, &mut f) == 1 {
                            assert_eq!(canx_j1939_handle_frame(c, *now, &f), CANX_OK);
                            moved = true;
                        }
                        drain_events(c, ev_c);
                        drain_events(b, ev_b);
                        if !moved {
                            break;
                        }
                    }
                    *now += 1000;
                    canx_j1939_handle_timeout(c, *now);
                    canx_j1939_handle_timeout(b, *now);
                }
            };
        pump(b, c.p(), &mut now, &mut bus.ev_b, &mut ev_c, 300);
        assert_eq!(canx_j1939_address(c.p()), 0x91);
        // b: a BAM starts; a second transfer (RTS/CTS or BAM) is refused.
        assert_eq!(canx_j1939_send(b, 7, 0xFECA, 0xFF, data.as_ptr(), 100), CANX_OK);
        assert_eq!(canx_j1939_send(b, 7, 0xEF00, 0x91, data.as_ptr(), 100), CANX_EBUSY);
        assert_eq!(canx_j1939_send(b, 7, 0xFECB, 0xFF, data.as_ptr(), 100), CANX_EBUSY);
        // Single frames still go.
        assert_eq!(canx_j1939_send(b, 6, 0xFF00, 0xFF, data.as_ptr(), 8), CANX_OK);
        // c (its own single session free) opens RTS/CTS to b while b's
        // session carries the BAM: b refuses with an abort.
        assert_eq!(canx_j1939_send(c.p(), 7, 0xEF00, 0x90, data.as_ptr(), 100), CANX_OK);
        pump(b, c.p(), &mut now, &mut bus.ev_b, &mut ev_c, 50);
        let ab = kinds(&ev_c, CANX_EV_ABORTED);
        assert_eq!(ab.len(), 1, "{:?}", ev_c.iter().map(|e| e.ev).collect::<Vec<_>>());
        assert_ne!(ab[0].ev.flags & CANX_EVF_BY_PEER, 0);
        println!("small variant refuses a second session with abort reason {}", ab[0].ev.detail);
        // After the BAM ends (SENT), the refused transfer is accepted.
        pump(b, c.p(), &mut now, &mut bus.ev_b, &mut ev_c, 1000);
        assert_eq!(kinds(&bus.ev_b, CANX_EV_SENT).len(), 1);
        assert_eq!(canx_j1939_send(b, 7, 0xEF00, 0x91, data.as_ptr(), 100), CANX_OK);
        pump(b, c.p(), &mut now, &mut bus.ev_b, &mut ev_c, 1000);
        let got: Vec<_> = kinds(&ev_c, CANX_EV_MESSAGE).into_iter().filter(|e| e.ev.len == 100).collect();
        assert_eq!(got.len(), 2, "BAM and the retried RTS/CTS both arrived");
    }
}

/// The archive must keep no writable statics (natmod-clean, and state only
/// in the caller's object): canx's own objects have no `.data`/`.bss`
/// (read-only-after-relocation `.data.rel.ro` is allowed). The sysroot's
/// precompiled host `core`/`compiler_builtins` are not checked (they are
/// rebuilt with -Zbuild-std for boards).
#[test]
fn archive_has_no_data_or_bss() {
    let dir = env!("CARGO_MANIFEST_DIR");
    let target = std::env::var("CARGO_TARGET_DIR").unwrap_or_else(|_| format!("{dir}/target"));
    let st = std::process::Command::new(env!("CARGO"))
        .args(["build", "-q", "--release", "--lib", "--manifest-path", &format!("{dir}/Cargo.toml")])
        .status()
        .expect("cargo");
    assert!(st.success());
    let lib = format!("{target}/release/libcanx_mpy.a");
    let out = std::process::Command::new("objdump").args(["-h", &lib]).output().expect("objdump (binutils)");
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    let mut member = String::new();
    let mut checked = 0;
    let mut bad = vec![];
    for line in text.lines() {
        if let Some((m, _)) = line.split_once(":     file format") {
            member = m.to_string();
            continue;
        }
        if !member.starts_with("canx_") {
            continue;
        }
        let cols: Vec<&str> = line.split_whitespace().collect();
        if cols.len() < 3 || !cols[0].chars().all(|c| c.is_ascii_digit()) {
            continue;
        }
        checked += 1;
        let (name, size) = (cols[1], u64::from_str_radix(cols[2], 16).unwrap_or(1));
        let writable = (name.starts_with(".data") && !name.starts_with(".data.rel.ro"))
            || name.starts_with(".bss")
            || name == "COMMON";
        if writable && size > 0 {
            bad.push(format!("{member}: {name} ({size} B)"));
        }
    }
    assert!(checked > 10, "no canx objects found in {lib}");
    assert!(bad.is_empty(), "writable statics: {bad:?}");
}
