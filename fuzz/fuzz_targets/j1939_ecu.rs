//! Two J1939 ECUs (address claim, requests and acknowledgments, DM answers,
//! TP by BAM and RTS/CTS) on one simulated bus, plus a hostile third party
//! injecting arbitrary J1939 frames, all driven by a structured sequence of
//! operations from `arbitrary`: clock steps, injected frames, sends,
//! requests, lost frames.
//!
//! Invariants, after every operation: no panic; after `handle_timeout(now)`
//! and draining `poll_transmit(now)` (repeated while frames handled at
//! `now` set timers due at `now`), no deadline is at or before `now`;
//! received TP data has the announced length (at most 1785 bytes); at most
//! one `RequestDone` per accepted request. At the end, stepping from
//! deadline to deadline with the hostile peer silent: every accepted
//! request ends in exactly one `RequestDone`, every accepted TP send or answer ends
//! in exactly one `Sent` or transmit-side `Aborted`, and no deadline is
//! left (unless an event was dropped, which the ECU counts).
#![no_main]

use arbitrary::Arbitrary;
use canx_core::frame::{CanFrame, Frame};
use canx_core::j1939::transport::Direction;
use canx_core::j1939::{Ecu, EcuConfig, EcuEvent, J1939Id, Name, Pgn, Responder, TransportEvent, GLOBAL_ADDRESS};
use canx_core::time::{Duration, Instant};
use libfuzzer_sys::fuzz_target;

const ADDRS: [u8; 6] = [0x20, 0x30, 0x40, GLOBAL_ADDRESS, 0xFE, 0x00];
const PGNS: [Pgn; 16] = [
    Pgn::TP_CM,
    Pgn::TP_DT,
    Pgn::REQUEST,
    Pgn::ACKNOWLEDGMENT,
    Pgn::ADDRESS_CLAIMED,
    Pgn::COMMANDED_ADDRESS,
    Pgn::DM1,
    Pgn::DM2,
    Pgn::DM3,
    Pgn::DM11,
    Pgn::VEHICLE_IDENTIFICATION,
    Pgn::SOFTWARE_IDENTIFICATION,
    Pgn::EEC1,
    Pgn::PROPRIETARY_A,
    Pgn::ETP_CM,
    Pgn::ETP_DT,
];

#[derive(Arbitrary, Debug)]
enum Op {
    /// Advance the clock by `ms * 5` milliseconds.
    Step(u8),
    /// A frame from the hostile peer, seen by both ECUs.
    Inject { prio: u8, pgn: u8, sa: u8, da: u8, data: [u8; 8], len: u8 },
    /// `send` of `len * 7 + 1` bytes (capped at 1785) from ECU a or b.
    Send { from_b: bool, pgn: u8, to: u8, len: u8 },
    /// `request` of a PGN.
    Request { from_b: bool, pgn: u8, to: u8 },
    /// The next `n` frames on the bus are lost (for both ECUs).
    Lose(u8),
    /// Answer pending application requests (otherwise they are ignored).
    Answer(bool),
}

#[derive(Arbitrary, Debug)]
struct Input {
    name_a: u64,
    name_b: u64,
    addr_b: bool,
    ops: Vec<Op>,
}

#[derive(Default)]
struct Tally {
    requests: u32,
    done: u32,
    tp_sends: u32,
    tp_ends: u32,
    pending_app: Option<(Pgn, u8, bool)>,
}

type E<'a> = Ecu<'a, 4, 4>;

struct Bus<'a> {
    ecus: [E<'a>; 2],
    tally: [Tally; 2],
    now: Instant,
    lose: u32,
    answer: bool,
}

static VIN: [u8; 17] = *b"1FUJGLDR12LM12345";
static SOFT: [u8; 40] = [0x2A; 40];

impl Bus<'_> {
    /// Delivers every frame the ECUs transmit to the other one, drains the
    /// events and checks the per-step invariants.
    fn settle(&mut self) {
        let now = self.now;
        // A frame handled at `now` may set a timer due at `now` (the
        // contract: the driver then calls `handle_timeout(now)` at once), so
        // run timers and deliver frames until no deadline is at `now`; a
        // deadline that survives `handle_timeout(now)` 64 times is a finding.
        for pass in 0.. {
            for e in &mut self.ecus {
                e.handle_timeout(now);
            }
            self.exchange();
            let due = self.ecus.iter().filter_map(|e| e.poll_timeout()).any(|t| t <= now);
            if !due {
                break;
            }
            assert!(pass < 64, "a deadline at or before now {now:?} survives handle_timeout");
        }
        for (i, e) in self.ecus.iter().enumerate() {
            if let Some(t) = e.poll_timeout() {
                assert!(t > now, "ECU {i}: deadline {t:?} at or before now {now:?} after handle_timeout");
            }
            let t = &self.tally[i];
            assert!(t.done <= t.requests, "ECU {i}: more RequestDone than requests");
            assert!(t.tp_ends <= t.tp_sends, "ECU {i}: more TP send results than TP sends");
        }
    }

    /// Delivers every frame the ECUs transmit to the other one and drains
    /// the events, until the bus is quiet.
    fn exchange(&mut self) {
        let now = self.now;
        for _round in 0..10_000 {
            let mut moved = false;
            for i in 0..2 {
                while let Some(f) = self.ecus[i].poll_transmit(now) {
                    moved = true;
                    if self.lose > 0 {
                        self.lose -= 1;
                        continue;
                    }
                    self.ecus[1 - i].handle_frame(now, &Frame::Can(f));
                }
                while let Some(ev) = self.ecus[i].poll_event() {
                    moved = true;
                    self.event(i, ev);
                }
            }
            if !moved {
                break;
            }
        }
    }

    fn event(&mut self, i: usize, ev: EcuEvent) {
        let t = &mut self.tally[i];
        match ev {
            EcuEvent::RequestDone { .. } => t.done += 1,
            // Automatic VIN answers (17 bytes, TP) are not counted as sends.
            EcuEvent::Transport(TransportEvent::Sent { pgn, .. })
            | EcuEvent::Transport(TransportEvent::Aborted {
                direction: Direction::Transmit,
                handle: Some(_),
                pgn,
                ..
            }) if pgn != Pgn::VEHICLE_IDENTIFICATION => t.tp_ends += 1,
            EcuEvent::Received(r) => {
                let d = self.ecus[i].received_data(r.handle).expect("data readable until next poll_event");
                assert_eq!(d.len(), r.len as usize);
                assert!((9..=1785).contains(&d.len()));
            }
            EcuEvent::Request { pgn, requester, global } => {
                if self.answer {
                    let n = (usize::from(requester) % 40).max(1);
                    if self.ecus[i].respond(pgn, requester, global, &SOFT[..n]).is_ok() && n > 8 {
                        t.tp_sends += 1;
                    }
                } else {
                    t.pending_app = Some((pgn, requester, global));
                }
            }
            EcuEvent::Message { len, .. } => assert!(len <= 8),
            _ => {}
        }
    }

    fn send(&mut self, i: usize, pgn: Pgn, to: u8, len: usize) {
        let data = [0xA5u8; 1785];
        if self.ecus[i].send(6, pgn, to, &data[..len]).is_ok() && len > 8 {
            self.tally[i].tp_sends += 1;
        }
    }
}

fuzz_target!(|input: Input| {
    let mut ecus = [(input.name_a, 0x20), (input.name_b, if input.addr_b { 0x30 } else { 0x20 })].map(|(n, a)| {
        let mut c = EcuConfig::new(Name::from_u64(n), a);
        c.claim.range = (0x20, 0x40);
        E::new(c).expect("valid config")
    });
    for e in &mut ecus {
        let _ = e.register(Pgn::VEHICLE_IDENTIFICATION, Responder::Data(&VIN));
        let _ = e.register(Pgn::SOFTWARE_IDENTIFICATION, Responder::Application);
        let _ = e.register(Pgn::EEC1, Responder::Data(&VIN[..8]));
        e.start(Instant::ZERO);
    }
    let mut bus = Bus { ecus, tally: Default::default(), now: Instant::ZERO, lose: 0, answer: true };
    bus.settle();
    for op in input.ops.iter().take(400) {
        match *op {
            Op::Step(ms) => bus.now += Duration::from_millis(u64::from(ms) * 5),
            Op::Inject { prio, pgn, sa, da, data, len } => {
                let sa = ADDRS[usize::from(sa) % ADDRS.len()] ^ (sa & 0x80);
                let da = ADDRS[usize::from(da) % ADDRS.len()];
                let pgn = PGNS[usize::from(pgn) % PGNS.len()];
                if let Ok(id) = J1939Id::new(prio & 7, pgn, sa, da) {
                    if let Ok(f) = CanFrame::new(id.to_id(), &data[..usize::from(len % 9)]) {
                        let f = Frame::Can(f);
                        for e in &mut bus.ecus {
                            e.handle_frame(bus.now, &f);
                        }
                    }
                }
            }
            Op::Send { from_b, pgn, to, len } => {
                let to = ADDRS[usize::from(to) % ADDRS.len()];
                let pgn = match PGNS[usize::from(pgn) % PGNS.len()] {
                    Pgn::VEHICLE_IDENTIFICATION => Pgn::PROPRIETARY_A,
                    p => p,
                };
                bus.send(usize::from(from_b), pgn, to, (usize::from(len) * 7 + 1).min(1785));
            }
            Op::Request { from_b, pgn, to } => {
                let i = usize::from(from_b);
                let to = ADDRS[usize::from(to) % ADDRS.len()];
                let pgn = PGNS[usize::from(pgn) % PGNS.len()];
                if bus.ecus[i].request(bus.now, pgn, to).is_ok() {
                    bus.tally[i].requests += 1;
                }
            }
            Op::Lose(n) => bus.lose = u32::from(n % 8),
            Op::Answer(a) => {
                bus.answer = a;
                for i in 0..2 {
                    if let Some((pgn, req, global)) = bus.tally[i].pending_app.take() {
                        if bus.ecus[i].respond(pgn, req, global, &SOFT[..9]).is_ok() {
                            bus.tally[i].tp_sends += 1;
                        }
                    }
                }
            }
        }
        bus.settle();
    }
    // Everything started ends: the hostile peer is silent, no frame is lost.
    bus.lose = 0;
    for _ in 0..20_000 {
        let next = bus.ecus.iter().filter_map(|e| e.poll_timeout()).min();
        match next {
            Some(t) => bus.now = t.max(bus.now),
            None => break,
        }
        bus.settle();
    }
    for (i, e) in bus.ecus.iter().enumerate() {
        let s = e.stats();
        if s.dropped_events > 0 || s.dropped_frames > 0 {
            continue;
        }
        let t = &bus.tally[i];
        assert_eq!(t.done, t.requests, "ECU {i}: a request never ended");
        assert_eq!(t.tp_ends, t.tp_sends, "ECU {i}: a TP send never ended");
        assert_eq!(e.poll_timeout(), None, "ECU {i}: a deadline is left with nothing running");
    }
});
