//! Deterministic simulation: engines on a simulated bus with a virtual
//! clock, seeded loss, duplication and reordering (random delivery delay),
//! and a step cap. Shared by the module tests.

use std::vec::Vec;

use super::ecu::{Ecu, EcuConfig, EcuEvent};
use super::id::{Pgn, GLOBAL_ADDRESS};
use super::name::Name;
use super::transport::{AbortReason, Direction, SessionHandle, Transport, TransportConfig, TransportEvent};
use crate::frame::{CanFrame, Frame};
use crate::test_support::Rng;
use crate::time::{Duration, Instant};

/// An engine the bus can drive.
pub(crate) trait Node {
    type Event;
    fn handle_frame(&mut self, now: Instant, f: &Frame);
    fn handle_timeout(&mut self, now: Instant);
    fn poll_transmit(&mut self, now: Instant) -> Option<CanFrame>;
    fn poll_timeout(&self) -> Option<Instant>;
    /// Polls every event, copying TP data out while it is readable.
    fn drain(&mut self, out: &mut Vec<(Self::Event, Option<Vec<u8>>)>);
}

impl<const S: usize, const Q: usize> Node for Transport<S, Q> {
    type Event = TransportEvent;
    fn handle_frame(&mut self, now: Instant, f: &Frame) {
        Transport::handle_frame(self, now, f)
    }
    fn handle_timeout(&mut self, now: Instant) {
        Transport::handle_timeout(self, now)
    }
    fn poll_transmit(&mut self, now: Instant) -> Option<CanFrame> {
        Transport::poll_transmit(self, now)
    }
    fn poll_timeout(&self) -> Option<Instant> {
        Transport::poll_timeout(self)
    }
    fn drain(&mut self, out: &mut Vec<(TransportEvent, Option<Vec<u8>>)>) {
        while let Some(e) = self.poll_event() {
            let d = match e {
                TransportEvent::Received(r) => self.received_data(r.handle).map(<[u8]>::to_vec),
                _ => None,
            };
            out.push((e, d));
        }
    }
}

impl<const S: usize, const R: usize, const E: usize, const T: usize> Node for Ecu<'_, S, R, E, T> {
    type Event = EcuEvent;
    fn handle_frame(&mut self, now: Instant, f: &Frame) {
        Ecu::handle_frame(self, now, f)
    }
    fn handle_timeout(&mut self, now: Instant) {
        Ecu::handle_timeout(self, now)
    }
    fn poll_transmit(&mut self, now: Instant) -> Option<CanFrame> {
        Ecu::poll_transmit(self, now)
    }
    fn poll_timeout(&self) -> Option<Instant> {
        Ecu::poll_timeout(self)
    }
    fn drain(&mut self, out: &mut Vec<(EcuEvent, Option<Vec<u8>>)>) {
        while let Some(e) = self.poll_event() {
            let d = match e {
                EcuEvent::Received(r) => self.received_data(r.handle).map(<[u8]>::to_vec),
                EcuEvent::ReceivedExtended(r) => self.received_extended_data(r.handle).map(<[u8]>::to_vec),
                EcuEvent::Message { .. } => e.message_data().map(<[u8]>::to_vec),
                _ => None,
            };
            out.push((e, d));
        }
    }
}

/// Fault injection, per frame put on the bus.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Faults {
    /// Frame lost for every receiver, per mille.
    pub loss: u64,
    /// Frame delivered twice, per mille.
    pub dup: u64,
    /// Delivery delay drawn from 0..=max_delay: reorders frames of
    /// different senders; one sender's frames stay in order (as on CAN,
    /// where a controller sends its queue in order) unless `reorder` hits.
    pub max_delay: Duration,
    /// Frame may overtake or fall behind frames of its own sender, per mille.
    pub reorder: u64,
}

/// What a node reported, with TP data copied out.
pub(crate) type Log<E> = Vec<(E, Option<Vec<u8>>)>;

pub(crate) struct Sim<N: Node> {
    pub nodes: Vec<N>,
    pub logs: Vec<Log<N::Event>>,
    pub now: Instant,
    pub frames: usize,
    /// Every frame put on the bus (before faults), if tracing.
    pub trace: Option<Vec<(usize, CanFrame)>>,
    inflight: Vec<(Instant, u64, usize, CanFrame)>,
    last: Vec<Instant>,
    seq: u64,
    rng: Rng,
    faults: Faults,
}

impl<N: Node> Sim<N> {
    pub(crate) fn new(nodes: Vec<N>, seed: u64, faults: Faults) -> Self {
        let logs = nodes.iter().map(|_| Vec::new()).collect();
        let last = nodes.iter().map(|_| Instant::ZERO).collect();
        Sim {
            nodes,
            logs,
            last,
            now: Instant::ZERO,
            frames: 0,
            trace: None,
            inflight: Vec::new(),
            seq: 0,
            rng: Rng::new(seed),
            faults,
        }
    }

    /// Adds a node to the bus.
    pub(crate) fn add(&mut self, node: N) {
        self.nodes.push(node);
        self.logs.push(Vec::new());
        self.last.push(self.now);
    }

    /// Transmits, delivers and advances the clock until nothing is left to
    /// do, `until` is reached, or `cap` steps ran. Returns `true` if quiet.
    pub(crate) fn run(&mut self, until: Instant, cap: usize) -> bool {
        self.run_with(until, cap, |_| {})
    }

    /// As [`Sim::run`], calling `each` after every step.
    pub(crate) fn run_with(&mut self, until: Instant, cap: usize, mut each: impl FnMut(&mut Self)) -> bool {
        for _ in 0..cap {
            for i in 0..self.nodes.len() {
                while let Some(f) = self.nodes[i].poll_transmit(self.now) {
                    self.frames += 1;
                    if let Some(t) = self.trace.as_mut() {
                        t.push((i, f));
                    }
                    if self.rng.per_mille(self.faults.loss) {
                        continue;
                    }
                    let copies = if self.rng.per_mille(self.faults.dup) { 2 } else { 1 };
                    for _ in 0..copies {
                        let d = self.rng.below(self.faults.max_delay.total_micros() + 1);
                        let mut at = self.now + Duration::from_micros(d);
                        if self.rng.per_mille(self.faults.reorder) {
                            at = self.now + Duration::from_micros(self.rng.below(2000));
                        } else {
                            at = at.max(self.last[i]);
                            self.last[i] = at;
                        }
                        self.seq += 1;
                        self.inflight.push((at, self.seq, i, f));
                    }
                }
                self.nodes[i].drain(&mut self.logs[i]);
            }
            each(self);
            let next_frame = self.inflight.iter().map(|x| x.0).min();
            let next_timer = self.nodes.iter().filter_map(|n| n.poll_timeout()).min();
            let Some(next) = crate::time::earliest(next_frame, next_timer) else { return true };
            if next > until {
                return false;
            }
            self.now = next.max(self.now);
            let now = self.now;
            let mut due: Vec<_> = self.inflight.iter().copied().filter(|x| x.0 <= now).collect();
            self.inflight.retain(|x| x.0 > now);
            due.sort_by_key(|x| (x.0, x.1));
            for (_, _, from, f) in due {
                for (j, n) in self.nodes.iter_mut().enumerate() {
                    if j != from {
                        n.handle_frame(now, &Frame::Can(f));
                    }
                }
            }
            for n in self.nodes.iter_mut() {
                n.handle_timeout(now);
            }
        }
        false
    }
}

fn payload(seed: u64, n: usize) -> Vec<u8> {
    let mut r = Rng::new(seed);
    (0..n).map(|_| r.next() as u8).collect()
}

type Tp = Transport<12, 32>;

fn tp_node(addr: u8) -> Tp {
    let mut t = Tp::new(TransportConfig { packets_per_cts: 16, ..Default::default() }).unwrap();
    t.set_local_address(addr, true);
    t
}

/// Three nodes exchange BAM and RTS/CTS messages of random sizes over a
/// faulty bus: every send ends in exactly one Sent or Aborted event, every
/// delivered message is intact, and every engine ends idle (no session, no
/// timer): nothing hangs or silently vanishes.
fn tp_scenario(seed: u64, faults: Faults) -> (usize, usize, usize) {
    let addrs = [0x11u8, 0x22, 0x33];
    let mut sim = Sim::new(addrs.iter().map(|&a| tp_node(a)).collect(), seed, faults);
    sim.trace = Some(Vec::new());
    let mut rng = Rng::new(seed ^ 0xABCD);
    // (sender index, handle, pgn, dest, data)
    let mut sent: Vec<(usize, SessionHandle, Pgn, u8, Vec<u8>)> = Vec::new();
    for k in 0..12u32 {
        let from = (k % 3) as usize;
        let to = match rng.below(4) {
            0 => GLOBAL_ADDRESS,
            _ => addrs[(from + 1 + rng.below(2) as usize) % 3],
        };
        let len = if to == GLOBAL_ADDRESS { 9 + rng.below(60) as usize } else { 9 + rng.below(1777) as usize };
        let pgn = Pgn::new(0xFF00 + k).unwrap();
        let data = payload(seed * 100 + u64::from(k), len);
        let h = sim.nodes[from].send(6, pgn, addrs[from], to, &data).unwrap();
        sent.push((from, h, pgn, to, data));
    }
    let quiet = sim.run(Instant::from_millis(600_000), 200_000);
    assert!(quiet, "seed {seed}: did not settle");
    let mut ok = 0;
    let mut aborted = 0;
    let mut delivered = 0;
    for (from, h, pgn, to, data) in &sent {
        let ends: Vec<_> = sim.logs[*from]
            .iter()
            .filter(|(e, _)| match e {
                TransportEvent::Sent { handle, .. } => handle == h,
                TransportEvent::Aborted { handle: Some(handle), direction: Direction::Transmit, .. } => handle == h,
                _ => false,
            })
            .collect();
        assert_eq!(ends.len(), 1, "seed {seed}: send {pgn:?} ended {} times", ends.len());
        match ends[0].0 {
            TransportEvent::Sent { pgn: p, size, .. } => {
                assert_eq!((p, size as usize), (*pgn, data.len()));
                ok += 1;
            }
            TransportEvent::Aborted { reason, .. } => {
                assert_ne!(reason, AbortReason::Resources, "seed {seed}: slots suffice");
                aborted += 1
            }
            _ => unreachable!(),
        }
        // Every reception of this message is intact.
        for (j, log) in sim.logs.iter().enumerate() {
            for (e, d) in log {
                if let TransportEvent::Received(r) = e {
                    if r.pgn == *pgn {
                        assert_eq!(r.source, addrs[*from]);
                        assert!(*to == GLOBAL_ADDRESS || addrs[j] == *to);
                        assert_eq!(d.as_deref(), Some(&data[..]), "seed {seed}: corrupted {pgn:?}");
                        delivered += 1;
                    }
                }
            }
        }
    }
    assert_no_cts_without_dt(sim.trace.as_deref().unwrap_or(&[]), seed);
    for n in &sim.nodes {
        assert_eq!(n.sessions_in_use(), 0, "seed {seed}");
        assert_eq!(n.poll_timeout(), None, "seed {seed}");
        assert_eq!(n.stats().dropped_events, 0);
    }
    (ok, aborted, delivered)
}

/// The kernel as TP sender aborts (reason 8) when it gets a second CTS with
/// no DT in between (CTS(0) then CTS(n) included): our receivers never do
/// that, with or without retransmission requests.
fn assert_no_cts_without_dt(trace: &[(usize, CanFrame)], seed: u64) {
    use super::id::J1939Id;
    use super::transport::TpCm;
    // Keyed by (data sender, data receiver): a CTS was sent and no DT seen yet.
    let mut waiting = std::collections::HashMap::new();
    for (_, f) in trace {
        let (id, data) = J1939Id::from_can_frame(f).unwrap();
        if id.pgn == Pgn::TP_CM {
            match TpCm::parse(data) {
                Ok(TpCm::Cts { .. }) => {
                    let again = waiting.insert((id.destination, id.source), true).unwrap_or(false);
                    assert!(!again, "seed {seed}: two CTS without a DT from {:02X}", id.destination);
                }
                Ok(TpCm::Rts { .. }) | Ok(TpCm::Abort { .. }) | Ok(TpCm::EndOfMsgAck { .. }) => {
                    waiting.remove(&(id.source, id.destination));
                    waiting.remove(&(id.destination, id.source));
                }
                _ => {}
            }
        } else if id.pgn == Pgn::TP_DT {
            waiting.remove(&(id.source, id.destination));
        }
    }
}

#[test]
fn tp_lossless_everything_completes() {
    for seed in [1u64, 2, 3] {
        let faults = Faults { max_delay: Duration::from_micros(0), ..Default::default() };
        let (ok, aborted, delivered) = tp_scenario(seed, faults);
        assert_eq!((ok, aborted), (12, 0), "seed {seed}");
        assert!(delivered >= 12);
    }
}

#[test]
fn tp_faulty_bus_completes_or_aborts() {
    let mut total = (0, 0);
    for seed in [11u64, 12, 13, 14, 15, 16, 17, 18] {
        let faults = Faults { loss: 3, dup: 2, max_delay: Duration::from_micros(300), reorder: 1 };
        let (ok, aborted, _) = tp_scenario(seed, faults);
        total.0 += ok;
        total.1 += aborted;
    }
    // Retransmission and duplicate tolerance keep most transfers alive
    // (86 of 96 with this seed list; without them about half abort).
    assert!(total.0 > 4 * total.1, "{total:?}");
}

#[test]
fn tp_heavy_loss_still_terminates() {
    for seed in [21u64, 22, 23] {
        let faults = Faults { loss: 60, dup: 30, max_delay: Duration::from_millis(2), reorder: 20 };
        tp_scenario(seed, faults);
    }
}

#[test]
fn sixty_four_concurrent_rts_cts_sessions() {
    let nodes: Vec<Transport<2, 8>> = (0..128u8)
        .map(|a| {
            let mut t = Transport::new(TransportConfig::default()).unwrap();
            t.set_local_address(a, true);
            t
        })
        .collect();
    let mut sim = Sim::new(nodes, 64, Faults::default());
    for a in 0..64u8 {
        let data = payload(u64::from(a), 1785);
        sim.nodes[usize::from(a)].send(6, Pgn::PROPRIETARY_A, a, a + 64, &data).unwrap();
    }
    let mut peak = 0;
    let quiet = sim.run_with(Instant::from_millis(60_000), 10_000, |s| {
        peak = peak.max(s.nodes.iter().map(|n| n.sessions_in_use()).sum::<usize>());
    });
    assert!(quiet);
    assert_eq!(peak, 128, "all 64 transfers were in flight together");
    for a in 0..64u8 {
        let tx = &sim.logs[usize::from(a)];
        assert!(tx
            .iter()
            .any(|(e, _)| matches!(e, TransportEvent::Sent { destination, .. } if *destination == a + 64)));
        let rx = &sim.logs[usize::from(a + 64)];
        let got: Vec<_> =
            rx.iter().filter_map(|(e, d)| matches!(e, TransportEvent::Received(_)).then_some(d)).collect();
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].as_deref(), Some(&payload(u64::from(a), 1785)[..]));
    }
    // 64 x (RTS + CTS + 255 DT + EoMA)
    assert_eq!(sim.frames, 64 * 258);
}

fn ecu(name: u64, addr: u8) -> Ecu<'static, 4> {
    Ecu::new(EcuConfig::new(Name::from_u64(name), addr)).unwrap()
}

#[test]
fn two_ecus_contend_for_one_address() {
    const CAPABLE: u64 = 1 << 63;
    for seed in [1u64, 2, 3, 4, 5, 6] {
        for capable in [0, CAPABLE] {
            let (lo, hi) = (capable | (1000 + seed), capable | (2000 + seed));
            let mut sim = Sim::new(
                vec![ecu(hi, 0x90), ecu(lo, 0x90)],
                seed,
                Faults { max_delay: Duration::from_millis(3), ..Default::default() },
            );
            // Start in either order, a few ms apart.
            let first = (seed % 2) as usize;
            sim.nodes[first].start(Instant::ZERO);
            sim.run(Instant::from_millis(seed), 1000);
            let now = sim.now;
            sim.nodes[1 - first].start(now);
            assert!(sim.run(Instant::from_millis(10_000), 10_000));
            assert_eq!(sim.nodes[1].address(), Some(0x90), "seed {seed}: lower NAME keeps it");
            if capable != 0 {
                assert_eq!(sim.nodes[0].address(), Some(0x91), "seed {seed}: loser moved to the next free address");
            } else {
                assert_eq!(sim.nodes[0].claim_state(), super::ClaimState::CannotClaim, "seed {seed}");
                assert_eq!(sim.nodes[0].address(), None);
            }
            // Both tables agree.
            let t0: Vec<_> = sim.nodes[0].table().iter().collect();
            let t1: Vec<_> = sim.nodes[1].table().iter().collect();
            assert_eq!(t0, t1, "seed {seed}");
        }
    }
}

#[test]
fn ecu_tp_over_lossy_bus_between_many_ecus() {
    // Four ECUs; each sends a 300-byte message to the next and one BAM.
    for seed in [31u64, 32, 33] {
        let mut sim = Sim::new(
            (0..4u64).map(|i| ecu(100 + i, 0x40 + i as u8)).collect(),
            seed,
            Faults { loss: 2, dup: 0, max_delay: Duration::from_micros(200), reorder: 0 },
        );
        for n in sim.nodes.iter_mut() {
            n.start(Instant::ZERO);
        }
        // Claims must be delivered; run lossless through the claim.
        assert!(sim.run(Instant::from_millis(1000), 10_000));
        for (i, n) in sim.nodes.iter().enumerate() {
            assert_eq!(n.address(), Some(0x40 + i as u8));
        }
        for i in 0..4usize {
            let data = payload(seed + i as u64, 300);
            sim.nodes[i].send(6, Pgn::PROPRIETARY_A, 0x40 + ((i + 1) % 4) as u8, &data).unwrap();
            sim.nodes[i].send(6, Pgn::new(0xFF10 + i as u32).unwrap(), GLOBAL_ADDRESS, &data[..40]).unwrap();
        }
        assert!(sim.run(Instant::from_millis(60_000), 100_000), "seed {seed}");
        for i in 0..4usize {
            let ends = sim.logs[i]
                .iter()
                .filter(|(e, _)| {
                    matches!(
                        e,
                        EcuEvent::Transport(TransportEvent::Sent { .. })
                            | EcuEvent::Transport(TransportEvent::Aborted { direction: Direction::Transmit, .. })
                    )
                })
                .count();
            assert_eq!(ends, 2, "seed {seed} node {i}");
            assert_eq!(sim.nodes[i].transport().sessions_in_use(), 0);
        }
    }
}

impl<const S: usize, const Q: usize> Node for super::etp::Etp<'_, S, Q> {
    type Event = TransportEvent;
    fn handle_frame(&mut self, now: Instant, f: &Frame) {
        super::etp::Etp::handle_frame(self, now, f)
    }
    fn handle_timeout(&mut self, now: Instant) {
        super::etp::Etp::handle_timeout(self, now)
    }
    fn poll_transmit(&mut self, now: Instant) -> Option<CanFrame> {
        super::etp::Etp::poll_transmit(self, now)
    }
    fn poll_timeout(&self) -> Option<Instant> {
        super::etp::Etp::poll_timeout(self)
    }
    fn drain(&mut self, out: &mut Vec<(TransportEvent, Option<Vec<u8>>)>) {
        while let Some(e) = self.poll_event() {
            let d = match e {
                TransportEvent::Received(r) => self.received_data(r.handle).map(<[u8]>::to_vec),
                _ => None,
            };
            out.push((e, d));
        }
    }
}

/// ETP between two nodes, both directions at once, on a faulty bus: every
/// send ends once, every delivery is intact, both engines end idle.
#[test]
fn etp_faulty_bus_completes_or_aborts() {
    use super::etp::{Etp, EtpConfig};
    let mut outcomes = (0, 0);
    for seed in [41u64, 42, 43, 44] {
        let mut bufs: Vec<Vec<u8>> = (0..8).map(|_| std::vec![0u8; 20_000]).collect();
        let mut it = bufs.iter_mut().map(|b| &mut b[..]);
        let mut take4 = || -> [&mut [u8]; 4] { core::array::from_fn(|_| it.next().unwrap()) };
        let (m, n) = (take4(), take4());
        let cfg = EtpConfig { priority: 7, packets_per_cts: 64, ..EtpConfig::default() };
        let mut a = Etp::<4>::new(cfg, m);
        let mut b = Etp::<4>::new(cfg, n);
        a.set_local_address(0x11, true);
        b.set_local_address(0x22, true);
        let mut sim = Sim::new(
            std::vec![a, b],
            seed,
            Faults { loss: 1, dup: 2, max_delay: Duration::from_micros(300), reorder: 0 },
        );
        let mut rng = Rng::new(seed);
        let mut sent = Vec::new();
        for k in 0..4u32 {
            let from = (k % 2) as usize;
            let (src, dst) = if from == 0 { (0x11, 0x22) } else { (0x22, 0x11) };
            let data = payload(seed + u64::from(k), 1786 + rng.below(18_000) as usize);
            let pgn = Pgn::new(0xEF00 + k).unwrap();
            let h = sim.nodes[from].send(6, pgn, src, dst, &data).unwrap();
            sent.push((from, h, pgn, data));
        }
        assert!(sim.run(Instant::from_millis(600_000), 500_000), "seed {seed}");
        for (from, h, pgn, data) in &sent {
            let ends: Vec<_> = sim.logs[*from]
                .iter()
                .filter(|(e, _)| match e {
                    TransportEvent::Sent { handle, .. } => handle == h,
                    TransportEvent::Aborted { handle: Some(handle), direction: Direction::Transmit, .. } => handle == h,
                    _ => false,
                })
                .collect();
            assert_eq!(ends.len(), 1, "seed {seed}");
            if matches!(ends[0].0, TransportEvent::Sent { .. }) {
                outcomes.0 += 1;
            } else {
                outcomes.1 += 1;
            }
            for (e, d) in &sim.logs[1 - from] {
                if matches!(e, TransportEvent::Received(r) if r.pgn == *pgn) {
                    assert!(d.as_deref() == Some(&data[..]), "seed {seed}: corrupted");
                }
            }
        }
        for n in &sim.nodes {
            assert_eq!(n.sessions_in_use(), 0);
            assert_eq!(n.poll_timeout(), None);
        }
    }
    assert!(outcomes.0 > 0 && outcomes.0 + outcomes.1 == 16, "{outcomes:?}");
}
