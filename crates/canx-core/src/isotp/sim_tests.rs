//! Deterministic simulations: two channels (full duplex, both sending) on a
//! simulated bus with a virtual clock and seeded loss, duplication, delay
//! and reordering, over random configurations (addressing, classic/FD,
//! TX_DL, BS, STmin, padding). Checked on every run:
//! - every `send` ends in exactly one `SendComplete` or `TxError`;
//! - every `Received` is byte for byte a message the peer sent;
//! - without faults every message arrives;
//! - a sender never sends two CFs of one message closer than STmin (virtual timestamps);
//! - no channel asks for a deadline it then does nothing about.

use std::vec::Vec;

use super::pci::stmin_micros;
use super::tests::{chan, own, Ev};
use super::*;
use crate::frame::Frame;
use crate::test_support::Rng;
use crate::time::{Duration, Instant};

struct Packet {
    at: Instant,
    seq: u64,
    dst: usize,
    frame: Frame,
}

#[derive(Default, Debug)]
struct Totals {
    sent: u32,
    done: u32,
    tx_errors: u32,
    received: u32,
    rx_errors: u32,
}

fn addresses(rng: &mut Rng) -> (Address, Address) {
    match rng.below(7) {
        0 => (Address::normal_11(0x7E0, 0x7E8).unwrap(), Address::normal_11(0x7E8, 0x7E0).unwrap()),
        1 => (Address::normal_29(0x1000, 0x1001).unwrap(), Address::normal_29(0x1001, 0x1000).unwrap()),
        2 => (Address::normal_fixed_29(0x10, 0xF1), Address::normal_fixed_29(0xF1, 0x10)),
        3 => (Address::extended_11(0x600, 0x600, 2, 1).unwrap(), Address::extended_11(0x600, 0x600, 1, 2).unwrap()),
        4 => (Address::extended_29(0x600, 0x601, 2, 1).unwrap(), Address::extended_29(0x601, 0x600, 1, 2).unwrap()),
        5 => (Address::mixed_11(0x700, 0x701, 9).unwrap(), Address::mixed_11(0x701, 0x700, 9).unwrap()),
        _ => (Address::mixed_29(0x10, 0xF1, 9), Address::mixed_29(0xF1, 0x10, 9)),
    }
}

fn config(rng: &mut Rng, addr: Address, fd: bool, tx_dl: u8, padding: Option<u8>) -> Config {
    const STMINS: [u8; 8] = [0, 0, 1, 3, 0xF1, 0xF5, 0x80, 0x0A];
    Config {
        fd,
        tx_dl,
        padding,
        bs: [0u8, 1, 2, 8, 20][rng.below(5) as usize],
        stmin: STMINS[rng.below(8) as usize],
        n_bs: Duration::from_millis(200),
        n_cr: Duration::from_millis(200),
        tx_confirm: rng.pct(40),
        ..Config::new(addr)
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Faults {
    None,
    /// Loss and duplication; frames stay in order, as on a CAN bus.
    LossDup,
    /// Also some frames arrive up to 300 ms late. ISO-TP has no message
    /// identity and CAN never reorders one sender's frames, so a late FF can
    /// splice two messages of the same length: only the weaker invariants hold.
    Reorder,
}

fn run(seed: u64, mode: Faults, totals: &mut Totals) {
    let faults = mode != Faults::None;
    let mut rng = Rng::new(seed);
    let (aa, ab) = addresses(&mut rng);
    let fd = rng.pct(40);
    let tx_dl = if fd { [8u8, 12, 16, 32, 64][rng.below(5) as usize] } else { 8 };
    let padding = if rng.pct(50) { Some(0xCC) } else { None };
    let cfgs = [config(&mut rng, aa, fd, tx_dl, padding), config(&mut rng, ab, fd, tx_dl, padding)];
    let mut ch = [chan(cfgs[0], 5000, 5000), chan(cfgs[1], 5000, 5000)];
    let ae = aa.address_len();
    let (loss, dup, late) = match mode {
        Faults::None => (0, 0, 0),
        Faults::LossDup => (1 + rng.below(6), rng.below(3), 0),
        Faults::Reorder => (rng.below(4), rng.below(2), 1 + rng.below(4)),
    };

    let mut bus: Vec<Packet> = Vec::new();
    let mut seq = 0u64;
    let mut sent: [Vec<Vec<u8>>; 2] = [Vec::new(), Vec::new()];
    let mut open = [false; 2];
    let mut last_cf: [Option<Instant>; 2] = [None; 2];
    let mut now = Instant::ZERO;
    // long enough for 5000 bytes at a reserved STmin (127 ms per CF) after the last send
    let end = Instant::from_millis(200_000);
    let issue_until = Instant::from_millis(20_000);
    let mut next_issue = Instant::ZERO;
    let mut stalls = 0;
    let mut wire_at = [Instant::ZERO; 2];
    // transmit confirmations (the echo of each frame, also of lost ones: they were sent)
    let mut echoes: Vec<(Instant, usize, Frame)> = Vec::new();

    // Events are taken after every frame delivered, as a host does (a
    // multi-frame message left unread when the next FF arrives is
    // overwritten with `wft_max` 0, which is not what this checks).
    macro_rules! take_events {
        () => {
            for who in 0..2 {
                while let Some(e) = ch[who].poll_event() {
                    match own(e) {
                        Ev::Done => {
                            assert!(open[who], "seed {seed}: completion without a send");
                            open[who] = false;
                            totals.done += 1;
                        }
                        Ev::TxErr(r) => {
                            assert!(open[who], "seed {seed}: TxError {r} without a send");
                            assert!(faults, "seed {seed}: TxError {r} on a clean bus");
                            open[who] = false;
                            totals.tx_errors += 1;
                        }
                        Ev::Rx(data, _) => {
                            if mode == Faults::Reorder {
                                assert!(
                                    sent[1 - who].iter().any(|m| m.len() == data.len()),
                                    "seed {seed}: a length never sent"
                                );
                            } else {
                                assert!(
                                    sent[1 - who].contains(&data),
                                    "seed {seed}: received {} bytes never sent",
                                    data.len()
                                );
                            }
                            totals.received += 1;
                        }
                        Ev::RxErr(r) => {
                            assert!(faults, "seed {seed}: RxError {r} on a clean bus");
                            totals.rx_errors += 1;
                        }
                        Ev::First(..) => {}
                        Ev::Unexp(kind, _) => assert!(faults, "seed {seed}: unexpected {kind:?} on a clean bus"),
                    }
                }
            }
        };
    }

    loop {
        // 1. deliver what is due, in (time, sequence) order
        bus.sort_by_key(|p| (p.at, p.seq));
        let due = bus.iter().take_while(|p| p.at <= now).count();
        for p in bus.drain(..due).collect::<Vec<_>>() {
            ch[p.dst].handle_frame(now, &p.frame);
            take_events!();
        }
        echoes.sort_by_key(|e| e.0);
        let due = echoes.iter().take_while(|e| e.0 <= now).count();
        for (_, who, f) in echoes.drain(..due).collect::<Vec<_>>() {
            ch[who].on_tx_confirm(now, &f);
        }
        // 2. timers (a send they end reports it before step 3 looks)
        for c in ch.iter_mut() {
            c.handle_timeout(now);
        }
        take_events!();
        // 3. new messages
        if now >= next_issue && now < issue_until {
            let who = rng.below(2) as usize;
            if !ch[who].transmitting() {
                let len = match rng.below(4) {
                    0 => 1 + rng.below(8),
                    1 => 1 + rng.below(64),
                    2 => 1 + rng.below(600),
                    _ => 1 + rng.below(5000),
                } as usize;
                let msg: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
                ch[who].send(now, &msg, TargetAddressType::Physical).unwrap();
                assert!(!open[who]);
                open[who] = true;
                sent[who].push(msg);
                totals.sent += 1;
            }
            next_issue = now + Duration::from_micros(rng.below(200_000));
        }
        // 4. transmit, with STmin checked on the sender's own timestamps
        for who in 0..2 {
            while let Some(f) = ch[who].poll_transmit(now) {
                match f.data().get(ae).map(|b| b >> 4) {
                    Some(1) => last_cf[who] = None,
                    Some(2) => {
                        if let Some(t) = last_cf[who] {
                            let want = stmin_micros(cfgs[1 - who].stmin);
                            let gap = (now - t).total_micros();
                            assert!(gap >= want, "seed {seed}: CF gap {gap} µs < STmin {want} µs");
                        }
                        last_cf[who] = Some(now);
                    }
                    _ => {}
                }
                if cfgs[who].tx_confirm {
                    echoes.push((now + Duration::from_micros(20 + rng.below(300)), who, f));
                }
                let copies = if rng.pct(dup) { 2 } else { 1 };
                for _ in 0..copies {
                    if rng.pct(loss) {
                        continue;
                    }
                    // in order on the wire, except the late ones (reordering)
                    let at = if rng.pct(late) {
                        now + Duration::from_micros(1_000 + rng.below(300_000))
                    } else {
                        let at = (now + Duration::from_micros(50 + rng.below(400))).max(wire_at[who]);
                        wire_at[who] = at;
                        at
                    };
                    seq += 1;
                    bus.push(Packet { at, seq, dst: 1 - who, frame: f });
                }
            }
        }
        // 5. events
        take_events!();
        // 6. the next instant
        let mut next = crate::time::earliest(bus.iter().map(|p| p.at).min(), echoes.iter().map(|e| e.0).min());
        for c in &ch {
            next = crate::time::earliest(next, c.poll_timeout());
        }
        if now < issue_until {
            next = crate::time::earliest(next, Some(next_issue));
        }
        let Some(t) = next else { break };
        if t > end {
            break;
        }
        if t <= now {
            stalls += 1;
            assert!(stalls < 50, "seed {seed}: deadline {t:?} <= now {now:?} and nothing happens");
        } else {
            stalls = 0;
        }
        now = now.max(t);
    }
    assert!(!open[0] && !open[1], "seed {seed}: a send never ended: {cfgs:?} {:?} now {now:?}", ch);
    assert!(bus.is_empty());
    if !faults {
        assert_eq!(totals.tx_errors + totals.rx_errors, 0);
    }
}

#[test]
fn clean_bus_delivers_everything() {
    let mut t = Totals::default();
    for seed in 0..40 {
        let before = t.sent;
        run(seed, Faults::None, &mut t);
        assert!(t.sent > before, "seed {seed} sent nothing");
    }
    assert_eq!(t.done, t.sent);
    assert_eq!(t.received, t.sent);
}

#[test]
fn lossy_bus_never_delivers_wrong_bytes() {
    let mut t = Totals::default();
    for seed in 1000..1060 {
        run(seed, Faults::LossDup, &mut t);
    }
    // every send ended once (checked per run); faults did bite, and most still got through
    assert_eq!(t.done + t.tx_errors, t.sent);
    assert!(t.tx_errors > 0 && t.rx_errors > 0, "{t:?}");
    assert!(t.received > t.sent / 2, "{t:?}");
}

#[test]
fn reordering_bus_ends_every_send_once() {
    let mut t = Totals::default();
    for seed in 2000..2040 {
        run(seed, Faults::Reorder, &mut t);
    }
    // every send ended once (checked per run); faults did bite, and most still got through
    assert_eq!(t.done + t.tx_errors, t.sent);
    assert!(t.tx_errors > 0 && t.rx_errors > 0, "{t:?}");
    assert!(t.received > t.sent / 2, "{t:?}");
}
