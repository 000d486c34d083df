//! Unit tests: codec, addressing, transfers of every size, timers, STmin,
//! BS, WAIT, OVFLW, padding and every row of Table 23. Two channels run on a
//! virtual clock; every frame on the wire is logged with its time.

use std::vec;
use std::vec::Vec;

use proptest::prelude::*;

use super::pci::{encode, ff_dl_min, max_sf_dl, parse, stmin_micros, EncodeError};
use super::*;
use crate::frame::{id_raw, make_id, CanFrame, FdFrame, Frame};
use crate::time::{Duration, Instant};

// ---------------------------------------------------------------- harness

#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum Ev {
    First(u32, TargetAddressType),
    Rx(Vec<u8>, TargetAddressType),
    Done,
    TxErr(NResult),
    RxErr(NResult),
    Unexp(PduKind, TargetAddressType),
}

pub(super) fn own(e: Event<'_>) -> Ev {
    match e {
        Event::FirstFrameReceived { len, ta_type } => Ev::First(len, ta_type),
        Event::Received(d, t) => Ev::Rx(d.to_vec(), t),
        Event::SendComplete => Ev::Done,
        Event::TxError(r) => Ev::TxErr(r),
        Event::RxError(r) => Ev::RxErr(r),
        Event::UnexpectedPdu { kind, ta_type } => Ev::Unexp(kind, ta_type),
    }
}

pub(super) fn buf(n: usize) -> &'static mut [u8] {
    Box::leak(vec![0u8; n].into_boxed_slice())
}

pub(super) fn chan(cfg: Config, rx: usize, tx: usize) -> Channel<'static> {
    Channel::new(cfg, buf(rx), buf(tx)).unwrap()
}

pub(super) fn drain(ch: &mut Channel<'_>) -> Vec<Ev> {
    let mut v = Vec::new();
    while let Some(e) = ch.poll_event() {
        v.push(own(e));
    }
    v
}

/// Payload as `isotpsend -D` makes it: byte i = (i % 0xFF) + 1.
pub(super) fn payload(n: usize) -> Vec<u8> {
    (0..n).map(|i| (i % 0xFF) as u8 + 1).collect()
}

fn tester() -> Address {
    Address::normal_11(0x7E0, 0x7E8).unwrap()
}
fn ecu() -> Address {
    Address::normal_11(0x7E8, 0x7E0).unwrap()
}

/// Two channels on a lossless wire with no delay and a virtual clock.
struct Pair {
    a: Channel<'static>,
    b: Channel<'static>,
    now: Instant,
    /// (time, sender 0 = a / 1 = b, frame)
    log: Vec<(Instant, usize, Frame)>,
    ev: [Vec<Ev>; 2],
    /// Frames of b are not delivered to a (an FC that never comes).
    mute_b: bool,
    mute_a: bool,
}

impl Pair {
    fn new(a: Config, b: Config, bufs: usize) -> Pair {
        Pair {
            a: chan(a, bufs, bufs),
            b: chan(b, bufs, bufs),
            now: Instant::ZERO,
            log: Vec::new(),
            ev: [Vec::new(), Vec::new()],
            mute_b: false,
            mute_a: false,
        }
    }

    /// Runs until nothing is left to do or `until` passes; panics if a
    /// channel asks for a deadline it then does nothing about (a spin).
    fn run(&mut self, until: Instant) {
        let mut idle_spins = 0;
        loop {
            let mut progressed = false;
            while let Some(f) = self.a.poll_transmit(self.now) {
                self.log.push((self.now, 0, f));
                if !self.mute_a {
                    self.b.handle_frame(self.now, &f);
                }
                progressed = true;
            }
            while let Some(f) = self.b.poll_transmit(self.now) {
                self.log.push((self.now, 1, f));
                if !self.mute_b {
                    self.a.handle_frame(self.now, &f);
                }
                progressed = true;
            }
            self.ev[0].extend(drain(&mut self.a));
            self.ev[1].extend(drain(&mut self.b));
            if progressed {
                idle_spins = 0;
                continue;
            }
            let next = crate::time::earliest(self.a.poll_timeout(), self.b.poll_timeout());
            let Some(t) = next else { break };
            if t > until {
                break;
            }
            if t <= self.now {
                idle_spins += 1;
                assert!(idle_spins < 4, "deadline {t:?} at or before now {:?} with nothing to do", self.now);
            }
            self.now = self.now.max(t);
            self.a.handle_timeout(self.now);
            self.b.handle_timeout(self.now);
        }
        self.ev[0].extend(drain(&mut self.a));
        self.ev[1].extend(drain(&mut self.b));
    }

    fn frames_from(&self, who: usize) -> Vec<(Instant, Vec<u8>)> {
        self.log.iter().filter(|(_, w, _)| *w == who).map(|(t, _, f)| (*t, f.data().to_vec())).collect()
    }
}

fn std_frame(id: u32, data: &[u8]) -> Frame {
    Frame::Can(CanFrame::new(make_id(id, false).unwrap(), data).unwrap())
}

fn fd_frame(id: u32, data: &[u8]) -> Frame {
    Frame::Fd(FdFrame::new(make_id(id, false).unwrap(), data, false, false).unwrap())
}

const T0: Instant = Instant::ZERO;
fn ms(n: u64) -> Instant {
    Instant::from_millis(n)
}

// ---------------------------------------------------------------- codec

#[test]
fn stmin_table_20() {
    assert_eq!(stmin_micros(0x00), 0);
    assert_eq!(stmin_micros(0x05), 5_000);
    assert_eq!(stmin_micros(0x7F), 127_000);
    assert_eq!(stmin_micros(0xF1), 100);
    assert_eq!(stmin_micros(0xF3), 300);
    assert_eq!(stmin_micros(0xF9), 900);
    for reserved in (0x80..=0xF0).chain(0xFA..=0xFF) {
        assert_eq!(stmin_micros(reserved), 127_000, "0x{reserved:02X}");
    }
}

#[test]
fn parser_names_its_reason() {
    use PciError::*;
    assert_eq!(parse(&[], 0), Err(Empty));
    assert_eq!(parse(&[0x40, 0, 0], 0), Err(ReservedType(4)));
    assert_eq!(parse(&[0xF0], 0), Err(ReservedType(15)));
    // SF: escape in a short frame, SF_DL larger than the frame
    assert_eq!(parse(&[0x00, 3, 1, 2, 3], 0), Err(SfEscapeInShortFrame));
    assert_eq!(parse(&[0x05, 1, 2], 0), Err(SfDlTooLong { sf_dl: 5, room: 2 }));
    // FD SF: the escape is mandatory above 8 bytes; SF_DL 0; too long
    assert_eq!(parse(&[0x05; 12], 0), Err(SfMissingEscape));
    let mut f = [0u8; 12];
    assert_eq!(parse(&f, 0), Err(SfDlZero));
    f[1] = 11;
    assert_eq!(parse(&f, 0), Err(SfDlTooLong { sf_dl: 11, room: 10 }));
    // FF: short frame, FF_DL below FF_DLmin (8 classic normal, 7 extended, 63 FD64), escape unneeded
    assert_eq!(parse(&[0x10, 20, 1, 2, 3, 4, 5], 0), Err(FfShortFrame));
    assert_eq!(parse(&[0x10, 7, 1, 2, 3, 4, 5, 6], 0), Err(FfDlTooSmall { ff_dl: 7, min: 8 }));
    assert_eq!(parse(&[0x10, 6, 1, 2, 3, 4, 5], 1), Err(FfDlTooSmall { ff_dl: 6, min: 7 }));
    assert!(parse(&[0x10, 7, 1, 2, 3, 4, 5], 1).is_ok());
    let mut ff = [0u8; 64];
    ff[0] = 0x10;
    ff[1] = 62;
    assert_eq!(parse(&ff, 0), Err(FfDlTooSmall { ff_dl: 62, min: 63 }));
    assert_eq!(parse(&[0x10, 0, 0, 0, 0x0F, 0xFF, 1, 2], 0), Err(FfEscapeUnneeded { ff_dl: 4095 }));
    assert_eq!(parse(&[0x10, 0, 0, 0, 0x10, 0x00, 1, 2], 0), Ok(Pdu::First { ff_dl: 4096, data: &[1, 2] }));
    // CF and FC
    assert_eq!(parse(&[0x21], 0), Err(CfEmpty));
    assert_eq!(parse(&[0x30, 0], 0), Err(FcTooShort));
    assert_eq!(parse(&[0x33, 0, 0], 0), Err(InvalidFlowStatus(3)));
    assert_eq!(parse(&[0x31, 8, 0xF3], 0), Ok(Pdu::FlowControl { fs: FlowStatus::Wait, bs: 8, stmin: 0xF3 }));
}

#[test]
fn encoder_pads_and_rounds() {
    let mut out = [0u8; 64];
    // classic SF without padding keeps its length; with padding 8 bytes
    assert_eq!(encode(&Pdu::Single { data: &[1, 2, 3] }, None, 8, None, &mut out), Ok(4));
    assert_eq!(&out[..4], &[0x03, 1, 2, 3]);
    assert_eq!(encode(&Pdu::Single { data: &[1, 2, 3] }, Some(0xAB), 8, Some(0x55), &mut out), Ok(8));
    assert_eq!(&out[..8], &[0xAB, 0x03, 1, 2, 3, 0x55, 0x55, 0x55]);
    // FD: 8 bytes of SF need the escape and a 12-byte frame, padded with 0xCC without a pad byte
    assert_eq!(encode(&Pdu::Single { data: &[9; 8] }, None, 64, None, &mut out), Ok(12));
    assert_eq!(&out[..12], &[0, 8, 9, 9, 9, 9, 9, 9, 9, 9, 0xCC, 0xCC]);
    // too long for classic
    assert_eq!(encode(&Pdu::Single { data: &[9; 8] }, None, 8, None, &mut out), Err(EncodeError::TooLong));
    assert_eq!(encode(&Pdu::Single { data: &[] }, None, 8, None, &mut out), Err(EncodeError::BadLength));
    // FF 32-bit escape
    assert_eq!(encode(&Pdu::First { ff_dl: 66_000, data: &[7, 7] }, None, 8, None, &mut out), Ok(8));
    assert_eq!(&out[..8], &[0x10, 0, 0x00, 0x01, 0x01, 0xD0, 7, 7]);
    // FC without padding is 3 bytes (+ address byte), with padding 8
    assert_eq!(
        encode(&Pdu::FlowControl { fs: FlowStatus::ContinueToSend, bs: 8, stmin: 5 }, None, 8, None, &mut out),
        Ok(3)
    );
    assert_eq!(&out[..3], &[0x30, 8, 5]);
    // last CF of 13 bytes in FD rounds to 16
    assert_eq!(encode(&Pdu::Consecutive { sn: 3, data: &[1; 13] }, None, 64, Some(0), &mut out), Ok(16));
    assert_eq!(out[14..16], [0, 0]);
}

fn pdu_strategy() -> impl Strategy<Value = (Vec<u8>, u8, u32, bool, u8, u8, usize, Option<u8>)> {
    (
        proptest::collection::vec(any::<u8>(), 1..=64),
        0u8..4,
        any::<u32>(),
        any::<bool>(),
        any::<u8>(),
        any::<u8>(),
        prop_oneof![Just(8usize), Just(12), Just(16), Just(20), Just(24), Just(32), Just(48), Just(64)],
        proptest::option::of(any::<u8>()),
    )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn codec_round_trip((data, kind, ff_dl, ext, bs, stmin, tx_dl, padding) in pdu_strategy()) {
        let ab = if ext { Some(0x5A) } else { None };
        let ae = usize::from(ext);
        let pdu = match kind {
            0 => Pdu::Single { data: &data[..data.len().min(max_sf_dl(tx_dl, ae))] },
            1 => {
                let head = if ff_dl > 4095 { 6 } else { 2 };
                let room = tx_dl - ae - head;
                let min = ff_dl_min(tx_dl, ae);
                let ff_dl = ff_dl.max(min);
                let n = room.min(data.len());
                // an FF fills TX_DL: only a full chunk round-trips
                prop_assume!(n == room);
                Pdu::First { ff_dl, data: &data[..n] }
            }
            2 => Pdu::Consecutive { sn: bs & 0x0F, data: &data[..data.len().min(tx_dl - ae - 1)] },
            _ => Pdu::FlowControl { fs: [FlowStatus::ContinueToSend, FlowStatus::Wait, FlowStatus::Overflow][usize::from(bs % 3)], bs, stmin },
        };
        if let Pdu::Single { data } = pdu { prop_assume!(!data.is_empty()); }
        let mut out = [0u8; 64];
        let n = encode(&pdu, ab, tx_dl, padding, &mut out).unwrap();
        prop_assert!(n <= tx_dl.max(8));
        prop_assert!(crate::frame::len_to_dlc(n).is_some(), "CAN_DL {} is not a valid length", n);
        if let Some(b) = ab { prop_assert_eq!(out[0], b); }
        let back = parse(&out[ae..n], ae).unwrap();
        match (pdu, back) {
            // a CF's padding is only cut by the receiver, which knows the remaining length
            (Pdu::Consecutive { sn, data }, Pdu::Consecutive { sn: s2, data: d2 }) => {
                prop_assert_eq!(sn, s2);
                prop_assert_eq!(data, &d2[..data.len()]);
                let pad = padding.unwrap_or(pci::DEFAULT_PADDING);
                prop_assert!(d2[data.len()..].iter().all(|&x| x == pad));
            }
            (p, b) => prop_assert_eq!(p, b),
        }
    }

    #[test]
    fn parse_never_panics(data in proptest::collection::vec(any::<u8>(), 0..=64), ae in 0usize..2) {
        let _ = parse(&data, ae);
    }
}

// ---------------------------------------------------------------- addressing

#[test]
fn normal_fixed_and_mixed_29_identifiers() {
    let a = Address::normal_fixed_29(0x10, 0xF1);
    assert_eq!(id_raw(a.tx_id(TargetAddressType::Physical)), 0x18DA_10F1);
    assert_eq!(id_raw(a.tx_id(TargetAddressType::Functional)), 0x18DB_10F1);
    assert_eq!(id_raw(a.rx_id()), 0x18DA_F110);
    assert_eq!(a.rx_functional_id().map(id_raw), Some(0x18DB_F110));
    // priority is not part of the N_AI on receive; settable on send
    let ext = |raw| make_id(raw, true).unwrap();
    assert_eq!(a.classify(ext(0x1CDA_F110), &[0x02]), Some(TargetAddressType::Physical));
    assert_eq!(a.classify(ext(0x18DA_F111), &[0x02]), None);
    assert_eq!(a.classify(make_id(0x110, false).unwrap(), &[0x02]), None);
    let p7 = a.with_priority(7).unwrap();
    assert_eq!(id_raw(p7.tx_id(TargetAddressType::Physical)), 0x1CDA_10F1);
    assert_eq!(a.with_priority(8), Err(AddressError::InvalidPriority(8)));

    let m = Address::mixed_29(0x22, 0x33, 0x99);
    assert_eq!(id_raw(m.tx_id(TargetAddressType::Physical)), 0x18CE_2233);
    assert_eq!(id_raw(m.tx_id(TargetAddressType::Functional)), 0x18CD_2233);
    assert_eq!(m.classify(ext(0x18CE_3322), &[0x99, 0x01]), Some(TargetAddressType::Physical));
    assert_eq!(m.classify(ext(0x18CD_3322), &[0x99, 0x01]), Some(TargetAddressType::Functional));
    assert_eq!(m.classify(ext(0x18CE_3322), &[0x98, 0x01]), None, "wrong N_AE");
}

#[test]
fn extended_and_mixed_11_address_bytes() {
    let e = Address::extended_11(0x600, 0x601, 0x12, 0x34).unwrap();
    assert_eq!(e.tx_address_byte(), Some(0x12));
    assert_eq!(e.rx_address_byte(), Some(0x34));
    let id = make_id(0x601, false).unwrap();
    assert_eq!(e.classify(id, &[0x34, 0x01, 0xAA]), Some(TargetAddressType::Physical));
    assert_eq!(e.classify(id, &[0x12, 0x01, 0xAA]), None);
    assert_eq!(e.classify(id, &[]), None);
    let m = Address::mixed_11(0x700, 0x701, 0x55).unwrap();
    assert_eq!((m.tx_address_byte(), m.rx_address_byte()), (Some(0x55), Some(0x55)));
    assert_eq!(Address::normal_11(0x800, 0x7E8), Err(AddressError::InvalidId(0x800)));
    assert_eq!(Address::normal_29(0x2000_0000, 1), Err(AddressError::InvalidId(0x2000_0000)));
    assert_eq!(Address::normal_11(0x7E0, 0x7E0), Err(AddressError::SameRxTx));
    // extended on one identifier pair is fine: the address bytes differ
    assert!(Address::extended_11(0x600, 0x600, 1, 2).is_ok());
    let f = Address::normal_11(0x7E0, 0x7E8).unwrap().with_functional_txid(0x7DF).unwrap();
    assert_eq!(id_raw(f.tx_id(TargetAddressType::Functional)), 0x7DF);
    assert_eq!(f.with_functional_txid(0x1_0000), Err(AddressError::InvalidId(0x1_0000)));
}

fn pairs() -> Vec<(&'static str, Address, Address)> {
    vec![
        ("normal11", tester(), ecu()),
        (
            "normal29",
            Address::normal_29(0x1234_5678, 0x1234_5679).unwrap(),
            Address::normal_29(0x1234_5679, 0x1234_5678).unwrap(),
        ),
        ("fixed29", Address::normal_fixed_29(0x10, 0xF1), Address::normal_fixed_29(0xF1, 0x10)),
        (
            "ext11",
            Address::extended_11(0x600, 0x600, 0x20, 0x10).unwrap(),
            Address::extended_11(0x600, 0x600, 0x10, 0x20).unwrap(),
        ),
        (
            "ext29",
            Address::extended_29(0x600, 0x601, 0x20, 0x10).unwrap(),
            Address::extended_29(0x601, 0x600, 0x10, 0x20).unwrap(),
        ),
        ("mixed11", Address::mixed_11(0x700, 0x701, 0x42).unwrap(), Address::mixed_11(0x701, 0x700, 0x42).unwrap()),
        ("mixed29", Address::mixed_29(0x10, 0xF1, 0x42), Address::mixed_29(0xF1, 0x10, 0x42)),
    ]
}

// ---------------------------------------------------------------- transfers

const SIZES: [usize; 11] = [1, 6, 7, 8, 62, 63, 64, 4095, 4096, 10_000, 66_000];

fn transfer(name: &str, a: Config, b: Config, n: usize) -> Pair {
    let mut p = Pair::new(a, b, 70_000);
    let msg = payload(n);
    p.a.send(T0, &msg, TargetAddressType::Physical).unwrap();
    p.run(ms(600_000));
    assert_eq!(p.ev[0], vec![Ev::Done], "{name} {n}: sender");
    let rx: Vec<&Ev> = p.ev[1].iter().filter(|e| !matches!(e, Ev::First(..))).collect();
    assert_eq!(rx, vec![&Ev::Rx(msg, TargetAddressType::Physical)], "{name} {n}: receiver");
    // never more than one FF announce and only for multi-frame messages
    let firsts = p.ev[1].iter().filter(|e| matches!(e, Ev::First(..))).count();
    assert_eq!(firsts, usize::from(n > p.a.max_single_frame()), "{name} {n}");
    p
}

#[test]
fn every_size_every_addressing_classic() {
    for (name, a, b) in pairs() {
        for n in SIZES {
            let p = transfer(name, Config::new(a), Config::new(b), n);
            let ae = a.address_len();
            let frames = p.frames_from(0);
            if n <= 7 - ae {
                assert_eq!(frames.len(), 1);
                assert_eq!(frames[0].1[ae], n as u8, "SF_DL");
                assert_eq!(frames[0].1.len(), ae + 1 + n, "no padding: data optimisation");
            } else {
                let ff = &frames[0].1;
                assert_eq!(ff.len(), 8);
                let head = if n > 4095 { 6 } else { 2 };
                if n > 4095 {
                    assert_eq!(
                        &ff[ae..ae + 6],
                        &[&[0x10, 0][..], &(n as u32).to_be_bytes()].concat()[..],
                        "{name} {n}: 32-bit FF_DL"
                    );
                } else {
                    assert_eq!(ff[ae], 0x10 | (n >> 8) as u8);
                    assert_eq!(ff[ae + 1], n as u8);
                }
                let first = 8 - ae - head;
                let per_cf = 7 - ae;
                let cfs = (n - first).div_ceil(per_cf);
                assert_eq!(frames.len(), 1 + cfs, "{name} {n}: frame count");
                // sequence numbers 1, 2, ..., 15, 0, 1, ...
                for (i, (_, f)) in frames[1..].iter().enumerate() {
                    assert_eq!(f[ae], 0x20 | ((i + 1) & 0x0F) as u8);
                }
                // BS 0: exactly one FC
                assert_eq!(p.frames_from(1).len(), 1);
            }
        }
    }
}

#[test]
fn every_size_fd() {
    for (name, a, b) in pairs() {
        for tx_dl in [64u8, 12] {
            for n in SIZES {
                let fd = |addr| Config { fd: true, tx_dl, ..Config::new(addr) };
                let p = transfer(name, fd(a), fd(b), n);
                let ae = a.address_len();
                let frames = p.frames_from(0);
                for (_, f) in &frames {
                    assert!(crate::frame::len_to_dlc(f.len()).is_some() && f.len() <= usize::from(tx_dl));
                }
                let max_sf = if tx_dl == 64 { 62 - ae } else { 10 - ae };
                if n <= max_sf {
                    assert_eq!(frames.len(), 1, "{name} {n}");
                    if n + 1 + ae <= 8 {
                        assert_eq!(frames[0].1[ae], n as u8, "4-bit SF_DL in a short frame");
                    } else {
                        assert_eq!(&frames[0].1[ae..ae + 2], &[0, n as u8], "SF_DL escape");
                        assert_eq!(frames[0].1.len(), crate::frame::fd_padded_len(n + 2 + ae).unwrap());
                    }
                } else {
                    assert_eq!(frames[0].1.len(), usize::from(tx_dl), "FF fills TX_DL");
                    let last = &frames.last().unwrap().1;
                    assert!(last.len() <= usize::from(tx_dl));
                }
            }
        }
    }
}

#[test]
fn padding_on_send_and_checks_on_receive() {
    let pad = |addr| Config {
        padding: Some(0xAA),
        rx_check_padding_len: true,
        rx_padding_byte: Some(0xAA),
        ..Config::new(addr)
    };
    for n in [3, 22] {
        let p = transfer("pad", pad(tester()), pad(ecu()), n);
        for (_, f) in p.log.iter().map(|(t, _, f)| (t, f.data())) {
            assert_eq!(f.len(), 8, "every frame padded to 8");
        }
        let last = p.frames_from(0).last().unwrap().1.clone();
        assert_eq!(*last.last().unwrap(), 0xAA);
    }
    // an unpadded peer fails the length check: SF -> N_ERROR, FC -> sender N_ERROR
    let mut p = Pair::new(Config::new(tester()), pad(ecu()), 100);
    p.a.send(T0, &[1, 2, 3], TargetAddressType::Physical).unwrap();
    p.run(ms(10));
    assert_eq!(p.ev[1], vec![Ev::RxErr(NResult::NError)]);
    let mut p = Pair::new(pad(tester()), Config::new(ecu()), 100);
    p.a.send(T0, &payload(20), TargetAddressType::Physical).unwrap();
    p.run(ms(10));
    assert_eq!(p.ev[0], vec![Ev::TxErr(NResult::NError)]);
    // wrong padding byte in the last CF
    let other = Config { padding: Some(0x55), ..Config::new(tester()) };
    let mut p = Pair::new(other, pad(ecu()), 100);
    p.a.send(T0, &payload(10), TargetAddressType::Physical).unwrap();
    p.run(ms(10));
    assert!(p.ev[1].contains(&Ev::RxErr(NResult::NError)), "{:?}", p.ev[1]);
}

// ---------------------------------------------------------------- functional

#[test]
fn functional_is_single_frame_only() {
    let t = Address::normal_11(0x7E0, 0x7E8).unwrap().with_functional_txid(0x7DF).unwrap();
    let e = Address::normal_11(0x7E8, 0x7E0).unwrap().with_functional_rxid(0x7DF).unwrap();
    let mut p = Pair::new(Config::new(t), Config::new(e), 100);
    assert_eq!(
        p.a.send(T0, &payload(8), TargetAddressType::Functional),
        Err(SendError::FunctionalTooLong { len: 8, max: 7 })
    );
    p.a.send(T0, &[0x01, 0x00], TargetAddressType::Functional).unwrap();
    p.run(ms(10));
    assert_eq!(id_raw(p.log[0].2.id().unwrap()), 0x7DF);
    assert_eq!(p.ev[1], vec![Ev::Rx(vec![1, 0], TargetAddressType::Functional)]);
    // a functionally addressed FF is ignored (§9.8.3)
    p.b.handle_frame(p.now, &std_frame(0x7DF, &[0x10, 20, 1, 2, 3, 4, 5, 6]));
    assert_eq!(drain(&mut p.b), vec![Ev::Unexp(PduKind::FirstFrame, TargetAddressType::Functional)]);
    assert!(p.b.poll_transmit(p.now).is_none(), "no FC for a functional FF");
}

// ---------------------------------------------------------------- timers

#[test]
fn n_bs_expires_without_flow_control() {
    let mut p = Pair::new(Config::new(tester()), Config::new(ecu()), 100);
    p.mute_b = true;
    p.a.send(T0, &payload(20), TargetAddressType::Physical).unwrap();
    p.run(ms(5000));
    assert_eq!(p.ev[0], vec![Ev::TxErr(NResult::NTimeoutBs)]);
    assert_eq!(p.now, ms(1000), "N_Bs default 1000 ms after the FF");
    assert!(!p.a.transmitting());
    // configured value; and N_Bs also guards the FC after a block and after a WAIT
    let cfg = Config { n_bs: Duration::from_millis(150), ..Config::new(tester()) };
    let mut a = chan(cfg, 100, 100);
    a.send(T0, &payload(30), TargetAddressType::Physical).unwrap();
    let _ff = a.poll_transmit(T0).unwrap();
    a.handle_frame(ms(10), &std_frame(0x7E8, &[0x30, 1, 0]));
    assert!(a.poll_transmit(ms(10)).is_some());
    assert!(a.poll_transmit(ms(10)).is_none(), "BS 1: wait for the next FC");
    assert_eq!(a.poll_timeout(), Some(ms(160)));
    a.handle_frame(ms(100), &std_frame(0x7E8, &[0x31, 0, 0]));
    assert_eq!(a.poll_timeout(), Some(ms(250)), "a WAIT restarts N_Bs");
    a.handle_timeout(ms(249));
    assert!(drain(&mut a).is_empty());
    a.handle_timeout(ms(250));
    assert_eq!(drain(&mut a), vec![Ev::TxErr(NResult::NTimeoutBs)]);
}

#[test]
fn n_cr_expires_when_the_sender_stalls() {
    let cfg = Config { n_cr: Duration::from_millis(300), fc_repeat: Duration::ZERO, ..Config::new(ecu()) };
    let mut b = chan(cfg, 100, 0);
    b.handle_frame(T0, &std_frame(0x7E0, &[0x10, 20, 1, 2, 3, 4, 5, 6]));
    assert!(b.poll_transmit(ms(1)).is_some(), "FC");
    assert_eq!(b.poll_timeout(), Some(ms(301)), "N_Cr runs from the FC");
    b.handle_frame(ms(100), &std_frame(0x7E0, &[0x21, 7, 8, 9, 10, 11, 12, 13]));
    assert_eq!(b.poll_timeout(), Some(ms(400)), "and restarts at each CF");
    b.handle_timeout(ms(399));
    assert_eq!(drain(&mut b), vec![Ev::First(20, TargetAddressType::Physical)]);
    b.handle_timeout(ms(400));
    assert_eq!(drain(&mut b), vec![Ev::RxErr(NResult::NTimeoutCr)]);
    assert!(!b.receiving());
    // a late CF is now unexpected
    b.handle_frame(ms(401), &std_frame(0x7E0, &[0x22, 14, 15, 16, 17, 18, 19, 20]));
    assert_eq!(drain(&mut b), vec![Ev::Unexp(PduKind::ConsecutiveFrame, TargetAddressType::Physical)]);
}

#[test]
fn n_as_and_n_ar_expire_when_frames_are_not_taken() {
    let mut a = chan(Config::new(tester()), 100, 100);
    a.send(T0, &[1, 2, 3], TargetAddressType::Physical).unwrap();
    assert_eq!(a.poll_timeout(), Some(ms(1000)));
    a.handle_timeout(ms(1000));
    assert_eq!(drain(&mut a), vec![Ev::TxErr(NResult::NTimeoutA)]);
    assert!(a.poll_transmit(ms(1000)).is_none(), "the frame is withdrawn");
    // a CF not taken within N_As of its slot
    a.send(ms(2000), &payload(20), TargetAddressType::Physical).unwrap();
    assert!(a.poll_transmit(ms(2000)).is_some());
    a.handle_frame(ms(2001), &std_frame(0x7E8, &[0x30, 0, 10]));
    assert!(a.poll_transmit(ms(2001)).is_some());
    assert_eq!(a.poll_timeout(), Some(ms(2011)), "STmin slot");
    a.handle_timeout(ms(3010));
    assert!(drain(&mut a).is_empty());
    a.handle_timeout(ms(3011));
    assert_eq!(drain(&mut a), vec![Ev::TxErr(NResult::NTimeoutA)]);
    // receiver: its FC not taken within N_Ar
    let mut b = chan(Config { n_ar: Duration::from_millis(50), ..Config::new(ecu()) }, 100, 0);
    b.handle_frame(T0, &std_frame(0x7E0, &[0x10, 20, 1, 2, 3, 4, 5, 6]));
    assert_eq!(b.poll_timeout(), Some(ms(50)));
    b.handle_timeout(ms(50));
    assert_eq!(drain(&mut b), vec![Ev::First(20, TargetAddressType::Physical), Ev::RxErr(NResult::NTimeoutA)]);
    assert!(b.poll_transmit(ms(50)).is_none());
    assert_eq!(b.poll_timeout(), None);
}

#[test]
fn block_fc_waits_block_fc_delay_after_the_last_cf() {
    // BS 2: the FC after the FF goes at once; the FC after each block's
    // last CF not before block_fc_delay (a Linux sender drops an FC that
    // beats its own CF's echo: docs/protocols/isotp.md §8).
    let us = Instant::from_micros;
    for (delay, want) in [(None, 300u64), (Some(0u64), 0), (Some(1_000), 1_000)] {
        let mut cfg = Config { bs: 2, fc_repeat: Duration::ZERO, ..Config::new(ecu()) };
        if let Some(d) = delay {
            cfg.block_fc_delay = Duration::from_micros(d);
        }
        let mut b = chan(cfg, 100, 0);
        b.handle_frame(T0, &std_frame(0x7E0, &[0x10, 30, 1, 2, 3, 4, 5, 6]));
        assert_eq!(b.poll_transmit(T0).map(|f| f.data()[0]), Some(0x30), "the FC after the FF is not delayed");
        b.handle_frame(us(10), &std_frame(0x7E0, &[0x21, 7, 8, 9, 10, 11, 12, 13]));
        assert!(b.poll_transmit(us(10)).is_none(), "no FC within the block");
        b.handle_frame(us(20), &std_frame(0x7E0, &[0x22, 14, 15, 16, 17, 18, 19, 20]));
        if want > 0 {
            assert!(b.poll_transmit(us(20)).is_none(), "delay {delay:?}");
            assert_eq!(b.poll_timeout(), Some(us(20 + want)));
            assert!(b.poll_transmit(us(19 + want)).is_none());
        }
        let fc = b.poll_transmit(us(20 + want)).expect("the block's FC");
        assert_eq!(fc.data()[..3], [0x30, 2, 0]);
        // N_Cr runs from the FC's hand-out, so the delay does not shorten the sender's time
        assert_eq!(b.poll_timeout(), Some(us(20 + want) + Duration::from_millis(1000)));
        b.handle_frame(us(30 + want), &std_frame(0x7E0, &[0x23, 21, 22, 23, 24, 25, 26, 27]));
        b.handle_frame(us(40 + want), &std_frame(0x7E0, &[0x24, 28, 29, 30]));
        let ev = drain(&mut b);
        assert!(matches!(ev.last(), Some(Ev::Rx(d, _)) if d.len() == 30), "{ev:?}");
    }
    // The delay counts from the CF's arrival: a host that reads it 200 µs
    // late waits the remaining 100 µs; 300 µs or more late, not at all.
    for (age, wait) in [(200u64, 100u64), (300, 0), (5_000, 0)] {
        let mut b = chan(Config { bs: 1, ..Config::new(ecu()) }, 100, 0);
        b.handle_frame(T0, &std_frame(0x7E0, &[0x10, 20, 1, 2, 3, 4, 5, 6]));
        assert!(b.poll_transmit(T0).is_some());
        let t = us(10_000);
        b.handle_frame_aged(t, Duration::from_micros(age), &std_frame(0x7E0, &[0x21, 7, 8, 9, 10, 11, 12, 13]));
        if wait > 0 {
            assert!(b.poll_transmit(t).is_none());
            assert_eq!(b.poll_timeout(), Some(t + Duration::from_micros(wait)));
        }
        assert!(b.poll_transmit(t + Duration::from_micros(wait)).is_some(), "age {age}");
    }
}

// ---------------------------------------------------------------- STmin and BS

fn cf_gaps(p: &Pair) -> Vec<u64> {
    let cfs: Vec<Instant> = p.frames_from(0).iter().filter(|(_, d)| d[0] >> 4 == 2).map(|(t, _)| *t).collect();
    cfs.windows(2).map(|w| (w[1] - w[0]).total_micros()).collect()
}

#[test]
fn stmin_is_never_undershot() {
    for (raw, micros) in [
        (0u8, 0u64),
        (5, 5_000),
        (0xF1, 100),
        (0xF3, 300),
        (0xF9, 900),
        (0x80, 127_000),
        (0xFA, 127_000),
        (0x7F, 127_000),
    ] {
        for bs in [0u8, 1, 3] {
            let mut p = transfer("stmin", Config::new(tester()), Config { stmin: raw, bs, ..Config::new(ecu()) }, 100);
            let gaps = cf_gaps(&p);
            assert_eq!(gaps.len(), 100_usize.div_ceil(7) - 1 - 1);
            for g in &gaps {
                assert!(*g >= micros, "STmin 0x{raw:02X} BS {bs}: gap {g} µs < {micros}");
            }
            // exactly at the slot when nothing else holds the sender back
            if bs == 0 {
                assert!(gaps.iter().all(|g| *g == micros), "0x{raw:02X}: {gaps:?}");
            }
            // poll_transmit says None before the slot
            if micros > 0 {
                p.a.send(p.now, &payload(20), TargetAddressType::Physical).unwrap();
                let t = p.now;
                let _ff = p.a.poll_transmit(t).unwrap();
                p.a.handle_frame(t, &std_frame(0x7E8, &[0x30, 0, raw]));
                assert!(p.a.poll_transmit(t).is_some(), "first CF right after the FC");
                assert!(p.a.poll_transmit(t + Duration::from_micros(micros - 1)).is_none());
                assert_eq!(p.a.poll_timeout(), Some(t + Duration::from_micros(micros)));
                assert!(p.a.poll_transmit(t + Duration::from_micros(micros)).is_some());
            }
        }
    }
}

#[test]
fn stmin_override_replaces_the_receivers() {
    let a = Config { stmin_override: Some(Duration::from_micros(2500)), ..Config::new(tester()) };
    let p = transfer("override", a, Config { stmin: 0x7F, ..Config::new(ecu()) }, 50);
    assert!(cf_gaps(&p).iter().all(|g| *g == 2500));
}

#[test]
fn block_sizes_0_1_8() {
    for (bs, n) in [(0u8, 200usize), (1, 200), (8, 200), (8, 4096)] {
        let p = transfer("bs", Config::new(tester()), Config { bs, ..Config::new(ecu()) }, n);
        let cfs = (n - if n > 4095 { 2 } else { 6 }).div_ceil(7);
        let fcs = p.frames_from(1).len();
        let want = if bs == 0 { 1 } else { 1 + (cfs - 1) / usize::from(bs) };
        assert_eq!(fcs, want, "BS {bs}, {n} bytes");
        assert!(p.frames_from(1).iter().all(|(_, d)| d[..] == [0x30, bs, 0]));
    }
}

#[test]
fn stmin_grows_across_blocks() {
    // the new STmin holds between the previous block's last CF and the next one
    let mut a = chan(Config::new(tester()), 100, 100);
    a.send(T0, &payload(40), TargetAddressType::Physical).unwrap();
    a.poll_transmit(T0).unwrap();
    a.handle_frame(T0, &std_frame(0x7E8, &[0x30, 1, 0]));
    assert!(a.poll_transmit(T0).is_some());
    a.handle_frame(T0, &std_frame(0x7E8, &[0x30, 1, 20]));
    assert!(a.poll_transmit(ms(19)).is_none());
    assert!(a.poll_transmit(ms(20)).is_some());
}

// ---------------------------------------------------------------- WAIT, OVFLW, SN, FS

#[test]
fn receiver_waits_while_its_buffer_is_unread() {
    let b_cfg = Config { wft_max: 2, ..Config::new(ecu()) };
    let mut p = Pair::new(Config::new(tester()), b_cfg, 1000);
    p.a.send(T0, &payload(30), TargetAddressType::Physical).unwrap();
    // run without taking b's events: its buffer stays unread
    for _ in 0..10 {
        while let Some(f) = p.a.poll_transmit(p.now) {
            p.b.handle_frame(p.now, &f);
        }
        while let Some(f) = p.b.poll_transmit(p.now) {
            p.a.handle_frame(p.now, &f);
        }
    }
    assert_eq!(drain(&mut p.a), vec![Ev::Done]);
    p.a.send(p.now, &payload(40), TargetAddressType::Physical).unwrap();
    let ff = p.a.poll_transmit(p.now).unwrap();
    p.b.handle_frame(p.now, &ff);
    let fc = p.b.poll_transmit(p.now).unwrap();
    assert_eq!(fc.data(), &[0x31, 0, 0], "FC.WAIT");
    p.a.handle_frame(p.now, &fc);
    assert_eq!(p.b.poll_timeout(), Some(ms(500)), "next WAIT at N_Br / 2");
    p.b.handle_timeout(ms(500));
    let wait = p.b.poll_transmit(ms(500)).unwrap();
    assert_eq!(wait.data(), &[0x31, 0, 0]);
    p.a.handle_frame(ms(500), &wait);
    assert_eq!(p.b.stats().wait_sent, 2);
    // the application takes the first message: the second goes on with a CTS
    let evs = drain(&mut p.b);
    assert_eq!(evs[1], Ev::Rx(payload(30), TargetAddressType::Physical));
    p.now = ms(600);
    p.run(ms(5000));
    assert_eq!(p.ev[0], vec![Ev::Done]);
    assert_eq!(p.ev[1], vec![Ev::Rx(payload(40), TargetAddressType::Physical)]);
    assert_eq!(p.a.stats().wait_received, 2);

    // never taken: after N_WFTmax WAITs the receiver gives up with N_WFT_OVRN
    let mut b = chan(b_cfg, 1000, 0);
    for (i, msg) in [payload(20), payload(25)].iter().enumerate() {
        let mut a = chan(Config::new(tester()), 100, 100);
        a.send(T0, msg, TargetAddressType::Physical).unwrap();
        b.handle_frame(T0, &a.poll_transmit(T0).unwrap());
        a.handle_frame(T0, &b.poll_transmit(T0).unwrap());
        while let Some(f) = a.poll_transmit(T0) {
            b.handle_frame(T0, &f);
        }
        if i == 0 {
            assert_eq!(b.stats().rx_messages, 1);
        }
    }
    assert_eq!(b.poll_timeout(), Some(ms(500)));
    b.handle_timeout(ms(500));
    assert_eq!(b.poll_transmit(ms(500)).unwrap().data(), &[0x31, 0, 0]);
    b.handle_timeout(ms(1000));
    assert!(b.poll_transmit(ms(1000)).is_none());
    let evs: Vec<Ev> = drain(&mut b).into_iter().filter(|e| matches!(e, Ev::RxErr(_))).collect();
    assert_eq!(evs, vec![Ev::RxErr(NResult::NWftOvrn)]);
}

#[test]
fn unread_message_is_dropped_and_counted_without_wait() {
    let mut p = Pair::new(Config::new(tester()), Config::new(ecu()), 1000);
    for n in [30, 40] {
        p.a.send(p.now, &payload(n), TargetAddressType::Physical).unwrap();
        for _ in 0..10 {
            while let Some(f) = p.a.poll_transmit(p.now) {
                p.b.handle_frame(p.now, &f);
            }
            while let Some(f) = p.b.poll_transmit(p.now) {
                p.a.handle_frame(p.now, &f);
            }
        }
    }
    let rx: Vec<Ev> = drain(&mut p.b).into_iter().filter(|e| matches!(e, Ev::Rx(..))).collect();
    assert_eq!(rx, vec![Ev::Rx(payload(40), TargetAddressType::Physical)], "the stale one is never shown");
    assert_eq!(p.b.stats().rx_unread_dropped, 1);
}

#[test]
fn sender_wft_max_and_unlimited_waits() {
    for (limit, waits, want) in [(Some(2u8), 3usize, Some(NResult::NWftOvrn)), (Some(2), 2, None), (None, 50, None)] {
        let mut a = chan(Config { tx_wft_max: limit, ..Config::new(tester()) }, 100, 100);
        a.send(T0, &payload(20), TargetAddressType::Physical).unwrap();
        a.poll_transmit(T0).unwrap();
        for i in 0..waits {
            a.handle_frame(ms(i as u64 * 900), &std_frame(0x7E8, &[0x31, 0, 0]));
        }
        let evs = drain(&mut a);
        match want {
            Some(r) => assert_eq!(evs, vec![Ev::TxErr(r)]),
            None => {
                assert!(evs.is_empty());
                a.handle_frame(ms(waits as u64 * 900), &std_frame(0x7E8, &[0x30, 0, 0]));
                assert!(a.poll_transmit(ms(waits as u64 * 900)).is_some(), "CTS after {waits} WAITs");
            }
        }
    }
}

#[test]
fn overflow_when_ff_dl_exceeds_the_buffer() {
    let mut p = Pair::new(Config::new(tester()), Config::new(ecu()), 100);
    p.a.send(T0, &payload(100), TargetAddressType::Physical).unwrap();
    p.run(ms(10));
    assert_eq!(p.ev[0], vec![Ev::Done], "100 bytes fit");
    let mut b = chan(Config::new(ecu()), 4095, 0);
    let mut a = chan(Config::new(tester()), 0, 66_000);
    a.send(T0, &payload(4096), TargetAddressType::Physical).unwrap();
    b.handle_frame(T0, &a.poll_transmit(T0).unwrap());
    let fc = b.poll_transmit(T0).unwrap();
    assert_eq!(fc.data(), &[0x32, 0, 0]);
    a.handle_frame(T0, &fc);
    assert_eq!(drain(&mut a), vec![Ev::TxErr(NResult::NBufferOvflw)]);
    assert_eq!(drain(&mut b), vec![Ev::RxErr(NResult::NBufferOvflw)]);
    // OVFLW after a CTS is not allowed: N_INVALID_FS
    a.send(T0, &payload(30), TargetAddressType::Physical).unwrap();
    a.poll_transmit(T0).unwrap();
    a.handle_frame(T0, &std_frame(0x7E8, &[0x30, 1, 0]));
    a.poll_transmit(T0).unwrap();
    a.handle_frame(T0, &std_frame(0x7E8, &[0x32, 0, 0]));
    assert_eq!(drain(&mut a), vec![Ev::TxErr(NResult::NInvalidFs)]);
    // sending: longer than the transmit buffer, empty, busy
    assert_eq!(
        a.send(T0, &payload(66_001), TargetAddressType::Physical),
        Err(SendError::TooLong { len: 66_001, max: 66_000 })
    );
    assert_eq!(a.send(T0, &[], TargetAddressType::Physical), Err(SendError::Empty));
    a.send(T0, &[1], TargetAddressType::Physical).unwrap();
    assert_eq!(a.send(T0, &[1], TargetAddressType::Physical), Err(SendError::Busy));
}

#[test]
fn invalid_flow_status_and_wrong_sn() {
    let mut a = chan(Config::new(tester()), 100, 100);
    a.send(T0, &payload(20), TargetAddressType::Physical).unwrap();
    a.poll_transmit(T0).unwrap();
    a.handle_frame(T0, &std_frame(0x7E8, &[0x35, 0, 0]));
    assert_eq!(drain(&mut a), vec![Ev::TxErr(NResult::NInvalidFs)]);
    let mut b = chan(Config::new(ecu()), 100, 0);
    b.handle_frame(T0, &std_frame(0x7E0, &[0x10, 20, 1, 2, 3, 4, 5, 6]));
    b.poll_transmit(T0).unwrap();
    b.handle_frame(T0, &std_frame(0x7E0, &[0x22, 7, 8, 9, 10, 11, 12, 13]));
    assert_eq!(drain(&mut b), vec![Ev::First(20, TargetAddressType::Physical), Ev::RxErr(NResult::NWrongSn)]);
    // CF rules: longer than RX_DL, short before the last
    b.handle_frame(T0, &std_frame(0x7E0, &[0x10, 20, 1, 2, 3, 4, 5, 6]));
    b.poll_transmit(T0).unwrap();
    b.handle_frame(T0, &std_frame(0x7E0, &[0x21, 7, 8, 9]));
    assert_eq!(b.stats().malformed, 1);
    b.handle_frame(T0, &std_frame(0x7E0, &[0x21, 7, 8, 9, 10, 11, 12, 13]));
    b.handle_frame(T0, &std_frame(0x7E0, &[0x22, 14, 15, 16, 17, 18, 19, 20]));
    assert_eq!(drain(&mut b).last(), Some(&Ev::Rx(payload(20), TargetAddressType::Physical)));
    // FD channel: a CF above RX_DL (learned from a 12-byte FF) is malformed
    let mut f = chan(Config { fd: true, tx_dl: 64, ..Config::new(ecu()) }, 100, 0);
    let mut ff = [0u8; 12];
    ff[0] = 0x10;
    ff[1] = 40;
    f.handle_frame(T0, &fd_frame(0x7E0, &ff));
    f.poll_transmit(T0).unwrap();
    let mut cf = [0u8; 16];
    cf[0] = 0x21;
    f.handle_frame(T0, &fd_frame(0x7E0, &cf));
    assert_eq!(f.stats().malformed, 1);
    // a classic channel ignores FD frames
    let mut c = chan(Config::new(ecu()), 100, 0);
    c.handle_frame(T0, &fd_frame(0x7E0, &[0x01, 0x3E]));
    assert!(drain(&mut c).is_empty() && c.stats().rx_frames == 0);
}

// ---------------------------------------------------------------- Table 23

/// b mid-reception of a 20-byte message (FF + FC done).
fn receiving(cfg: Config) -> Channel<'static> {
    let mut b = chan(cfg, 100, 100);
    b.handle_frame(T0, &std_frame(0x7E0, &[0x10, 20, 1, 2, 3, 4, 5, 6]));
    b.poll_transmit(T0).unwrap();
    assert_eq!(drain(&mut b), vec![Ev::First(20, TargetAddressType::Physical)]);
    b
}

#[test]
fn table_23_idle_row() {
    let mut b = chan(Config::new(ecu()), 100, 100);
    b.handle_frame(T0, &std_frame(0x7E0, &[0x21, 1, 2]));
    b.handle_frame(T0, &std_frame(0x7E0, &[0x30, 0, 0]));
    b.handle_frame(T0, &std_frame(0x7E0, &[0x40, 0, 0]));
    assert_eq!(
        drain(&mut b),
        vec![
            Ev::Unexp(PduKind::ConsecutiveFrame, TargetAddressType::Physical),
            Ev::Unexp(PduKind::FlowControl, TargetAddressType::Physical)
        ]
    );
    assert_eq!(b.stats().malformed, 1, "reserved N_PCItype ignored");
    assert!(b.poll_transmit(T0).is_none());
    b.handle_frame(T0, &std_frame(0x7E0, &[0x02, 0x3E, 0x00]));
    assert_eq!(drain(&mut b), vec![Ev::Rx(vec![0x3E, 0], TargetAddressType::Physical)]);
}

#[test]
fn table_23_reception_row() {
    // SF: terminate, N_UNEXP_PDU, take the SF
    let mut b = receiving(Config::new(ecu()));
    b.handle_frame(T0, &std_frame(0x7E0, &[0x01, 0x3E]));
    assert_eq!(drain(&mut b), vec![Ev::RxErr(NResult::NUnexpPdu), Ev::Rx(vec![0x3E], TargetAddressType::Physical)]);
    assert!(!b.receiving());
    // FF: terminate, N_UNEXP_PDU, start the new one
    let mut b = receiving(Config::new(ecu()));
    b.handle_frame(T0, &std_frame(0x7E0, &[0x10, 9, 9, 9, 9, 9, 9, 9]));
    assert_eq!(drain(&mut b), vec![Ev::RxErr(NResult::NUnexpPdu), Ev::First(9, TargetAddressType::Physical)]);
    b.poll_transmit(T0).unwrap();
    b.handle_frame(T0, &std_frame(0x7E0, &[0x21, 9, 9, 9]));
    assert_eq!(drain(&mut b), vec![Ev::Rx(vec![9; 9], TargetAddressType::Physical)]);
    // CF awaited: processed; FC (full duplex, nothing sent): ignored with an event
    let mut b = receiving(Config::new(ecu()));
    b.handle_frame(T0, &std_frame(0x7E0, &[0x30, 0, 0]));
    assert_eq!(drain(&mut b), vec![Ev::Unexp(PduKind::FlowControl, TargetAddressType::Physical)]);
    assert!(b.receiving());
    // a functional SF does not end a physical reception (its own N_AI)
    let e = ecu().with_functional_rxid(0x7DF).unwrap();
    let mut b = receiving(Config::new(e));
    b.handle_frame(T0, &std_frame(0x7DF, &[0x01, 0x3E]));
    assert_eq!(drain(&mut b), vec![Ev::Rx(vec![0x3E], TargetAddressType::Functional)]);
    assert!(b.receiving());
}

#[test]
fn table_23_full_duplex_send_and_receive() {
    // sending a segmented message, an FF from the peer starts a reception; both finish
    let mut p = Pair::new(Config::new(tester()), Config::new(ecu()), 1000);
    p.a.send(T0, &payload(50), TargetAddressType::Physical).unwrap();
    p.b.send(T0, &payload(60), TargetAddressType::Physical).unwrap();
    p.run(ms(1000));
    assert!(
        p.ev[0].contains(&Ev::Done) && p.ev[0].contains(&Ev::Rx(payload(60), TargetAddressType::Physical)),
        "{:?}",
        p.ev[0]
    );
    assert!(
        p.ev[1].contains(&Ev::Done) && p.ev[1].contains(&Ev::Rx(payload(50), TargetAddressType::Physical)),
        "{:?}",
        p.ev[1]
    );
}

#[test]
fn table_23_half_duplex_rows() {
    let hd = |a| Config { half_duplex: true, ..Config::new(a) };
    // segmented send in progress: SF, FF, CF ignored; the awaited FC processed
    let mut a = chan(hd(tester()), 100, 100);
    a.send(T0, &payload(20), TargetAddressType::Physical).unwrap();
    a.poll_transmit(T0).unwrap();
    a.handle_frame(T0, &std_frame(0x7E8, &[0x01, 1]));
    a.handle_frame(T0, &std_frame(0x7E8, &[0x10, 9, 1, 2, 3, 4, 5, 6]));
    a.handle_frame(T0, &std_frame(0x7E8, &[0x21, 1]));
    assert_eq!(
        drain(&mut a),
        vec![
            Ev::Unexp(PduKind::SingleFrame, TargetAddressType::Physical),
            Ev::Unexp(PduKind::FirstFrame, TargetAddressType::Physical),
            Ev::Unexp(PduKind::ConsecutiveFrame, TargetAddressType::Physical)
        ]
    );
    assert!(a.poll_transmit(T0).is_none(), "no FC was queued for the ignored FF");
    a.handle_frame(T0, &std_frame(0x7E8, &[0x30, 0, 0]));
    assert!(a.poll_transmit(T0).is_some());
    // reception in progress: FC ignored, send refused
    let mut b = receiving(hd(ecu()));
    b.handle_frame(T0, &std_frame(0x7E0, &[0x30, 0, 0]));
    assert_eq!(drain(&mut b), vec![Ev::Unexp(PduKind::FlowControl, TargetAddressType::Physical)]);
    assert_eq!(b.send(T0, &[1], TargetAddressType::Physical), Err(SendError::Busy));
}

// ---------------------------------------------------------------- many channels

#[test]
fn a_tester_with_many_ecus() {
    const ECUS: [u8; 4] = [0x10, 0x11, 0x17, 0x28];
    let mut testers: Vec<Channel<'static>> =
        ECUS.iter().map(|&e| chan(Config::new(Address::normal_fixed_29(e, 0xF1)), 5000, 5000)).collect();
    let mut ecus: Vec<Channel<'static>> = ECUS
        .iter()
        .map(|&e| chan(Config { bs: 4, ..Config::new(Address::normal_fixed_29(0xF1, e)) }, 5000, 5000))
        .collect();
    for (i, t) in testers.iter_mut().enumerate() {
        t.send(T0, &payload(100 + i * 300), TargetAddressType::Physical).unwrap();
    }
    for (i, e) in ecus.iter_mut().enumerate() {
        e.send(T0, &payload(3000 - i * 200), TargetAddressType::Physical).unwrap();
    }
    // one shared bus: every frame reaches every other channel
    let mut now = T0;
    for _ in 0..5000 {
        let mut wire = Vec::new();
        for c in testers.iter_mut().chain(ecus.iter_mut()) {
            while let Some(f) = c.poll_transmit(now) {
                wire.push(f);
            }
            c.handle_timeout(now);
        }
        for f in &wire {
            for c in testers.iter_mut().chain(ecus.iter_mut()) {
                c.handle_frame(now, f);
            }
        }
        now += Duration::from_micros(200);
    }
    for (i, t) in testers.iter_mut().enumerate() {
        let evs = drain(t);
        assert!(evs.contains(&Ev::Done), "{evs:?}");
        assert!(evs.contains(&Ev::Rx(payload(3000 - i * 200), TargetAddressType::Physical)));
        assert_eq!(t.stats().unexpected + t.stats().malformed, 0, "never sees another ECU's frames");
    }
    for (i, e) in ecus.iter_mut().enumerate() {
        let evs = drain(e);
        assert!(evs.contains(&Ev::Rx(payload(100 + i * 300), TargetAddressType::Physical)));
        assert_eq!(e.stats().tx_messages, 1);
    }
}

// ---------------------------------------------------------------- driver

#[test]
fn runs_under_the_embedded_driver() {
    use crate::driver::mem::{MemBus, MemPort};
    use crate::driver::{Driver, Engine};
    use core::cell::RefCell;
    let bus: RefCell<MemBus<2, 2, 16>> = RefCell::new(MemBus::new());
    let mut da: Driver<_, 4> = Driver::new(MemPort::new(&bus, 0));
    let mut db: Driver<_, 4> = Driver::new(MemPort::new(&bus, 1));
    let mut a = chan(Config::new(tester()), 0, 500);
    let mut b = chan(Config { bs: 8, stmin: 1, ..Config::new(ecu()) }, 500, 0);
    a.send(T0, &payload(300), TargetAddressType::Physical).unwrap();
    let mut now = T0;
    let mut got = None;
    for _ in 0..2000 {
        da.poll(now, &mut [&mut a as &mut dyn Engine]);
        db.poll(now, &mut [&mut b as &mut dyn Engine]);
        bus.borrow_mut().deliver_all();
        while let Some(e) = b.poll_event() {
            if let Event::Received(d, _) = e {
                got = Some(d.to_vec());
            }
        }
        now += Duration::from_micros(250);
    }
    assert_eq!(got, Some(payload(300)));
    assert_eq!(drain(&mut a), vec![Ev::Done]);
    // an FD channel sends nothing through the classic trait method and times out
    let mut fd = chan(Config { fd: true, tx_dl: 64, ..Config::new(tester()) }, 0, 0);
    fd.send(T0, &[1], TargetAddressType::Physical).unwrap();
    assert!(Engine::poll_transmit(&mut fd, T0).is_none());
    assert!(matches!(Engine::poll_transmit_frame(&mut fd, T0), Some(Frame::Fd(_))));
}

#[cfg(feature = "alloc")]
#[test]
fn owned_buffers_make_a_static_channel() {
    fn keep(c: Channel<'static>) -> Channel<'static> {
        c
    }
    let mut a = keep(Channel::new(Config::new(tester()), vec![0u8; 0], vec![0u8; 5000]).unwrap());
    let mut b = keep(Channel::new(Config::new(ecu()), vec![0u8; 5000], vec![0u8; 0]).unwrap());
    a.send(T0, &payload(4095), TargetAddressType::Physical).unwrap();
    for _ in 0..1000 {
        while let Some(f) = a.poll_transmit(T0) {
            b.handle_frame(T0, &f);
        }
        while let Some(f) = b.poll_transmit(T0) {
            a.handle_frame(T0, &f);
        }
    }
    assert_eq!(drain(&mut b).last(), Some(&Ev::Rx(payload(4095), TargetAddressType::Physical)));
    assert_eq!(b.send(T0, &payload(100), TargetAddressType::Physical), Err(SendError::TooLong { len: 100, max: 0 }));
}

// ---------------------------------------------------------------- transmit confirmations

fn confirming(a: Address) -> Config {
    Config { tx_confirm: true, ..Config::new(a) }
}

#[test]
fn tx_confirm_paces_on_confirmations() {
    let mut a = chan(Config { stmin_override: Some(Duration::from_millis(5)), ..confirming(tester()) }, 100, 100);
    let mut b = chan(Config { fc_repeat: Duration::ZERO, ..confirming(ecu()) }, 100, 100);
    a.send(T0, &payload(20), TargetAddressType::Physical).unwrap();
    let ff = a.poll_transmit(T0).unwrap();
    assert!(a.poll_transmit(T0).is_none());
    assert_eq!(a.poll_timeout(), Some(ms(1000)), "N_As runs until the confirmation");
    a.on_tx_confirm(ms(2), &ff);
    assert_eq!(a.poll_timeout(), Some(ms(1002)), "N_Bs from the confirmation");
    b.handle_frame(ms(3), &ff);
    let fc = b.poll_transmit(ms(3)).unwrap();
    assert_eq!(b.poll_timeout(), Some(ms(1003)), "N_Ar until the FC is confirmed");
    b.on_tx_confirm(ms(4), &fc);
    assert_eq!(b.poll_timeout(), Some(ms(1004)), "N_Cr from the FC's confirmation");
    a.handle_frame(ms(5), &fc);
    let cf1 = a.poll_transmit(ms(5)).unwrap();
    assert!(a.poll_transmit(ms(50)).is_none(), "no CF before the previous one is confirmed");
    a.on_tx_confirm(ms(8), &cf1);
    assert!(a.poll_transmit(ms(12)).is_none(), "STmin counts from the confirmation");
    let cf2 = a.poll_transmit(ms(13)).unwrap();
    b.handle_frame(ms(13), &cf1);
    b.handle_frame(ms(13), &cf2);
    assert!(drain(&mut a).is_empty(), "complete only when the last frame is confirmed");
    assert!(a.transmitting());
    // a confirmation of someone else's frame changes nothing
    a.on_tx_confirm(ms(14), &std_frame(0x123, &[0x21, 0]));
    assert!(a.transmitting());
    a.on_tx_confirm(ms(14), &cf2);
    assert_eq!(drain(&mut a), vec![Ev::Done]);
    assert_eq!(drain(&mut b).last(), Some(&Ev::Rx(payload(20), TargetAddressType::Physical)));
}

#[test]
fn tx_confirm_timeouts_are_n_timeout_a() {
    // SF never confirmed
    let mut a = chan(confirming(tester()), 100, 100);
    a.send(T0, &[1], TargetAddressType::Physical).unwrap();
    a.poll_transmit(ms(10)).unwrap();
    a.handle_timeout(ms(1009));
    assert!(drain(&mut a).is_empty());
    a.handle_timeout(ms(1010));
    assert_eq!(drain(&mut a), vec![Ev::TxErr(NResult::NTimeoutA)]);
    // FF never confirmed: N_TIMEOUT_A, not N_TIMEOUT_Bs
    a.send(ms(2000), &payload(20), TargetAddressType::Physical).unwrap();
    a.poll_transmit(ms(2000)).unwrap();
    a.handle_timeout(ms(3000));
    assert_eq!(drain(&mut a), vec![Ev::TxErr(NResult::NTimeoutA)]);
    // FC never confirmed and no CF
    let mut b = chan(confirming(ecu()), 100, 100);
    b.handle_frame(T0, &std_frame(0x7E0, &[0x10, 20, 1, 2, 3, 4, 5, 6]));
    b.poll_transmit(T0).unwrap();
    b.handle_timeout(ms(1000));
    assert_eq!(drain(&mut b), vec![Ev::First(20, TargetAddressType::Physical), Ev::RxErr(NResult::NTimeoutA)]);
    // an answer stands for the confirmation: a CF after our unconfirmed FC, an FC after our FF
    let mut b = chan(confirming(ecu()), 100, 100);
    b.handle_frame(T0, &std_frame(0x7E0, &[0x10, 20, 1, 2, 3, 4, 5, 6]));
    b.poll_transmit(T0).unwrap();
    b.handle_frame(ms(1), &std_frame(0x7E0, &[0x21, 7, 8, 9, 10, 11, 12, 13]));
    assert_eq!(b.poll_timeout(), Some(ms(1001)), "N_Cr");
    a.send(ms(4000), &payload(20), TargetAddressType::Physical).unwrap();
    a.poll_transmit(ms(4000)).unwrap();
    a.handle_frame(ms(4001), &std_frame(0x7E8, &[0x30, 0, 0]));
    assert!(a.poll_transmit(ms(4001)).is_some());
}

// ---------------------------------------------------------------- FC repeat

#[test]
fn an_unanswered_fc_is_repeated_until_n_cr_which_it_does_not_extend() {
    // BS 2, STmin 5 ms: an FC.CTS no CF answers goes again every
    // fc_repeat (50 ms) + STmin; N_Cr still counts from the first copy.
    let mut b = chan(Config { bs: 2, stmin: 5, ..Config::new(ecu()) }, 100, 0);
    b.handle_frame(T0, &std_frame(0x7E0, &[0x10, 30, 1, 2, 3, 4, 5, 6]));
    assert_eq!(b.poll_transmit(T0).map(|f| f.data()[..3].to_vec()), Some(vec![0x30, 2, 5]));
    let mut repeats = Vec::new();
    let mut now = T0;
    while let Some(t) = b.poll_timeout() {
        now = t;
        b.handle_timeout(now);
        while let Some(f) = b.poll_transmit(now) {
            assert_eq!(f.data()[..3], [0x30, 2, 5], "the same FC.CTS");
            repeats.push(now);
        }
    }
    let want: Vec<Instant> = (1..=18).map(|k| ms(55 * k)).collect();
    assert_eq!(repeats, want);
    assert_eq!(now, ms(1000), "N_Cr from the first FC");
    assert_eq!(drain(&mut b), vec![Ev::First(30, TargetAddressType::Physical), Ev::RxErr(NResult::NTimeoutCr)]);
    assert_eq!(b.stats().fc_repeated, 18);
}

#[test]
fn a_cf_stops_the_repeats_and_a_block_fc_is_repeated_too() {
    let mut b = chan(Config { bs: 2, ..Config::new(ecu()) }, 100, 0);
    b.handle_frame(T0, &std_frame(0x7E0, &[0x10, 30, 1, 2, 3, 4, 5, 6]));
    assert!(b.poll_transmit(T0).is_some());
    // the sender took the FC: its first CF comes after 10 ms, no repeat
    b.handle_frame(ms(10), &std_frame(0x7E0, &[0x21, 7, 8, 9, 10, 11, 12, 13]));
    assert_eq!(b.poll_timeout(), Some(ms(1010)), "only N_Cr is left");
    b.handle_timeout(ms(100));
    assert!(b.poll_transmit(ms(100)).is_none());
    // the block's FC (after block_fc_delay) is repeated if no CF follows
    b.handle_frame(ms(200), &std_frame(0x7E0, &[0x22, 14, 15, 16, 17, 18, 19, 20]));
    let t = ms(200) + DEFAULT_BLOCK_FC_DELAY;
    assert!(b.poll_transmit(t).is_some(), "the block's FC");
    assert_eq!(b.poll_timeout(), Some(t + DEFAULT_FC_REPEAT));
    b.handle_timeout(t + DEFAULT_FC_REPEAT);
    // a CF that was on its way when the repeat was queued: taken, the repeat withdrawn
    b.handle_frame(t + DEFAULT_FC_REPEAT, &std_frame(0x7E0, &[0x23, 21, 22, 23, 24, 25, 26, 27]));
    assert!(b.poll_transmit(t + DEFAULT_FC_REPEAT).is_none(), "the queued repeat is withdrawn");
    b.handle_frame(ms(300), &std_frame(0x7E0, &[0x24, 28, 29, 30]));
    let ev = drain(&mut b);
    assert!(matches!(ev.last(), Some(Ev::Rx(d, _)) if d.len() == 30), "{ev:?}");
    assert_eq!(b.stats().fc_repeated, 1);
    assert_eq!(b.stats().unexpected, 0);
}

#[test]
fn a_lost_block_fc_costs_one_repeat_interval_and_no_message() {
    // canx to canx, BS 4: the receiver's first block FC is lost on the way
    // (as an FC a Linux sender ignores); the repeat lets the transfer end.
    for fc_repeat in [DEFAULT_FC_REPEAT, Duration::ZERO] {
        let mut p = Pair::new(Config::new(tester()), Config { bs: 4, fc_repeat, ..Config::new(ecu()) }, 1000);
        p.a.send(T0, &payload(100), TargetAddressType::Physical).unwrap();
        // FF, its FC, and the first block of 4 CFs
        while p.frames_from(0).len() < 5 {
            p.run(p.now);
            p.now += Duration::from_micros(100);
            p.a.handle_timeout(p.now);
            p.b.handle_timeout(p.now);
        }
        p.mute_b = true;
        p.run(p.now + Duration::from_millis(1));
        assert_eq!(p.frames_from(1).len(), 2, "the block FC went out (and was lost)");
        p.mute_b = false;
        p.run(ms(600_000));
        if fc_repeat == Duration::ZERO {
            assert_eq!(p.ev[0], vec![Ev::TxErr(NResult::NTimeoutBs)]);
            assert!(matches!(p.ev[1].last(), Some(Ev::RxErr(NResult::NTimeoutCr))), "{:?}", p.ev[1]);
        } else {
            assert_eq!(p.ev[0], vec![Ev::Done]);
            assert!(matches!(p.ev[1].last(), Some(Ev::Rx(d, _)) if *d == payload(100)));
            assert_eq!(p.b.stats().fc_repeated, 1);
        }
    }
}
