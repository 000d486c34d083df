//! Deterministic simulation: a client and two table servers on a simulated
//! bus with a virtual clock, seeded loss and delay (reordering, replies
//! that arrive after the timeout). Every request must end in exactly one
//! completion or timeout, and every completion must carry the right bytes.

use std::collections::BTreeMap;
use std::vec::Vec;

use super::client::{Client, ClientConfig, ClientEvent, Handle};
use super::server::{OutmsgDef, Server, ServerConfig, ServerEvent, CRC32};
use super::tables::{Access, TableSet};
use crate::frame::{CanFrame, Frame};
use crate::test_support::Rng;
use crate::time::{Duration, Instant};

const CLIENT: u8 = 3;
const BOARDS: [u8; 2] = [1, 2];
const RT_LEN: usize = 96;
const BIG_LEN: usize = 64;
const OUTMSG0: [u16; 20] = [0, 3, 6, 9, 12, 15, 18, 21, 24, 27, 30, 33, 36, 39, 42, 45, 48, 51, 54, 95];
const OUTMSG1: [u16; 5] = [90, 80, 70, 60, 50];

#[derive(Debug)]
enum Expect {
    Read(Vec<u8>),
    Write,
    Crc(u32),
    Outmsg(Vec<u8>),
    Burn { wait: bool },
}

struct Mem {
    rt: [u8; RT_LEN],
    big: [u8; BIG_LEN],
    cfg: [u8; 32],
}

impl Mem {
    fn new(rng: &mut Rng) -> Mem {
        let mut m = Mem { rt: [0; RT_LEN], big: [0; BIG_LEN], cfg: [0; 32] };
        m.rt.iter_mut().chain(m.big.iter_mut()).for_each(|b| *b = rng.next() as u8);
        m
    }
}

struct Packet {
    at: Instant,
    seq: u64,
    /// 0 = client, 1.. = server index + 1
    src: usize,
    frame: CanFrame,
}

#[derive(Default, Debug)]
struct Totals {
    issued: u32,
    done: u32,
    timeouts: u32,
    unmatched: u32,
}

fn run(seed: u64, totals: &mut Totals) {
    let mut rng = Rng::new(seed);
    let mut mems = [Mem::new(&mut rng), Mem::new(&mut rng)];
    let snapshot: Vec<([u8; RT_LEN], [u8; BIG_LEN])> = mems.iter().map(|m| (m.rt, m.big)).collect();
    let mut servers: Vec<Server<TableSet<'_, 3>, 16, 16>> = mems
        .iter_mut()
        .zip(BOARDS)
        .map(|(m, id)| {
            let mut t = TableSet::new();
            t.add(7, Access::READ_ONLY, &mut m.rt).unwrap();
            t.add(40, Access::READ_ONLY, &mut m.big).unwrap();
            t.add(20, Access::READ_WRITE, &mut m.cfg).unwrap();
            let mut s = Server::new(ServerConfig { auto_burn_ack: true, ..ServerConfig::new(id) }, t).unwrap();
            s.set_outmsg(0, Some(OutmsgDef::new(&OUTMSG0).unwrap())).unwrap();
            s.set_outmsg(1, Some(OutmsgDef::new(&OUTMSG1).unwrap())).unwrap();
            s
        })
        .collect();
    let mut cfg = ClientConfig::new(CLIENT);
    cfg.timeout = Duration::from_millis(20);
    cfg.quarantine = Duration::from_secs(2);
    cfg.retries = rng.below(3) as u8;
    let mut client: Client<4, 64> = Client::new(cfg).unwrap();

    let mut bus: Vec<Packet> = Vec::new();
    let mut seq = 0u64;
    let mut expect: BTreeMap<Handle, Expect> = BTreeMap::new();
    let loss = 5 + rng.below(20);

    let mut send = |bus: &mut Vec<Packet>, rng: &mut Rng, now: Instant, src: usize, frame: CanFrame| {
        if rng.pct(loss) {
            return;
        }
        // mostly prompt, sometimes far later than the 20 ms timeout (but within the 2 s quarantine)
        let delay = if rng.pct(6) { 21_000 + rng.below(1_500_000) } else { 100 + rng.below(3_000) };
        seq += 1;
        bus.push(Packet { at: now + Duration::from_micros(delay), seq, src, frame });
    };

    const ISSUE_UNTIL: u64 = 2_000;
    const STEPS: u64 = 3_600;
    for ms in 0..STEPS {
        let now = Instant::from_millis(ms);
        // 1. deliver what is due, in (time, sequence) order
        bus.sort_by_key(|p| (p.at, p.seq));
        let due = bus.iter().take_while(|p| p.at <= now).count();
        for p in bus.drain(..due).collect::<Vec<_>>() {
            let f = Frame::Can(p.frame);
            if p.src != 0 {
                client.handle_frame(now, &f);
            }
            for (k, s) in servers.iter_mut().enumerate() {
                if p.src != k + 1 {
                    s.handle_frame(now, &f);
                }
            }
        }
        // 2. timers
        if client.poll_timeout().is_some_and(|t| t <= now) {
            client.handle_timeout(now);
        }
        // 3. new work
        if ms < ISSUE_UNTIL && rng.pct(40) {
            let bi = rng.below(2) as usize;
            let board = BOARDS[bi];
            let (rt, big) = &snapshot[bi];
            let r = match rng.below(11) {
                10 => {
                    let wait = rng.pct(70);
                    client.burn(board, 20, wait).map(|h| (h, Expect::Burn { wait }))
                }
                0..=4 => {
                    let (table, data): (u8, &[u8]) = if rng.pct(50) { (7, &rt[..]) } else { (40, &big[..]) };
                    let off = rng.below(data.len() as u64) as usize;
                    let len = 1 + rng.below((data.len() - off).min(64) as u64) as usize;
                    client
                        .read(board, table, off as u16, len as u16)
                        .map(|h| (h, Expect::Read(data[off..off + len].to_vec())))
                }
                5 => client.crc(board, 7).map(|h| (h, Expect::Crc(CRC32.checksum(rt)))),
                6 | 7 => {
                    let offs: &[u16] = if rng.pct(50) { &OUTMSG0 } else { &OUTMSG1 };
                    let number = if offs.len() == OUTMSG0.len() { 0 } else { 1 };
                    let bytes = offs.iter().map(|&o| rt[usize::from(o)]).collect();
                    client.outmsg(board, number, offs.len() as u16).map(|h| (h, Expect::Outmsg(bytes)))
                }
                _ => {
                    let data: Vec<u8> = (0..1 + rng.below(32)).map(|_| rng.next() as u8).collect();
                    let off = rng.below(32 - data.len() as u64 + 1) as u16;
                    let to = if rng.pct(20) { 15 } else { board };
                    client.write(to, 20, off, &data).map(|h| (h, Expect::Write))
                }
            };
            if let Ok((h, e)) = r {
                assert!(expect.insert(h, e).is_none(), "handle reused");
                totals.issued += 1;
            }
        }
        // 4. transmit
        while let Some(f) = client.poll_transmit(now) {
            send(&mut bus, &mut rng, now, 0, f);
        }
        for (k, s) in servers.iter_mut().enumerate() {
            while let Some(f) = s.poll_transmit(now) {
                send(&mut bus, &mut rng, now, k + 1, f);
            }
            while let Some(e) = s.poll_event() {
                // the client only sends valid requests: nothing is ever refused
                assert!(!matches!(e, ServerEvent::Refused { .. }), "seed {seed}: {e:?}");
            }
        }
        // 5. completions
        while let Some(ev) = client.poll_event() {
            let handle = ev.handle();
            let want = expect.remove(&handle).unwrap_or_else(|| panic!("seed {seed}: second completion {ev:?}"));
            match (ev, want) {
                (ClientEvent::TimedOut { .. }, Expect::Write) => panic!("writes never time out"),
                (ClientEvent::TimedOut { .. }, Expect::Burn { wait: false }) => {
                    panic!("unacknowledged burns never time out")
                }
                (ClientEvent::TimedOut { .. }, _) => totals.timeouts += 1,
                (ClientEvent::ReadDone { .. }, Expect::Read(d))
                | (ClientEvent::OutmsgDone { .. }, Expect::Outmsg(d)) => {
                    assert_eq!(client.read_data(handle), Some(&d[..]), "seed {seed}: mismatched reply for {ev:?}");
                    totals.done += 1;
                }
                (ClientEvent::CrcDone { crc, .. }, Expect::Crc(c)) => {
                    assert_eq!(crc, c, "seed {seed}");
                    totals.done += 1;
                }
                (ClientEvent::WriteDone { .. }, Expect::Write) => totals.done += 1,
                (ClientEvent::BurnDone { ack, .. }, Expect::Burn { wait }) => {
                    assert_eq!(ack, wait.then_some(true), "seed {seed}");
                    totals.done += 1;
                }
                (ev, want) => panic!("seed {seed}: {ev:?} for {want:?}"),
            }
        }
    }
    assert!(expect.is_empty(), "seed {seed}: never completed: {expect:?}");
    assert_eq!(client.pending(), 0);
    totals.unmatched += client.stats().unmatched;
}

#[test]
fn client_server_lossy_bus_50_seeds() {
    let mut totals = Totals::default();
    for seed in 0..50 {
        run(seed, &mut totals);
    }
    // the run exercised every path: completions, timeouts and late replies
    assert_eq!(totals.issued, totals.done + totals.timeouts);
    assert!(totals.done > 1_000, "{totals:?}");
    assert!(totals.timeouts > 50, "{totals:?}");
    assert!(totals.unmatched > 50, "{totals:?}");
}
