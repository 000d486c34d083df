//! Runtime tests on the virtual bus (no kernel CAN needed).
//!
//! Timing is tested on stepped buses ([`Bus::stepped`]) with a manual clock
//! ([`Clock::manual`]): the test advances time and runs each receive round
//! itself, so counts and instants are exact and no assertion reads the wall
//! clock. The few tests on real receive threads prove the threading works;
//! they wait on conditions with generous bounds.

use std::sync::Arc;
use std::time::Duration;

use canx_core::frame::{make_id, BusState};
use canx_core::{CanFrame, Filter, Frame, Instant};
use parking_lot::Mutex;

use super::engine::Driven;
use super::*;

fn open(name: &str, own: bool) -> Bus {
    let mut c = BusConfig::virtual_bus(name);
    c.receive_own = own;
    Bus::open(c).unwrap()
}

fn frame(id: u32, data: &[u8]) -> Frame {
    Frame::Can(CanFrame::new(make_id(id, false).unwrap(), data).unwrap())
}

/// How long a real-thread test waits for a condition (generous: it only
/// matters when the test fails).
const T: Duration = Duration::from_secs(10);

/// A bus without a receive thread on `clock`.
fn stepped(name: &str, own: bool, clock: &Clock) -> Bus {
    let mut c = BusConfig::virtual_bus(name);
    c.receive_own = own;
    c.clock = clock.clone();
    Bus::stepped(c).unwrap()
}

fn ms(n: u64) -> canx_core::Duration {
    canx_core::Duration::from_millis(n)
}

/// Waits until `cond` holds (at most [`T`]); returns whether it did.
fn wait_until(mut cond: impl FnMut() -> bool) -> bool {
    let t0 = std::time::Instant::now();
    while !cond() {
        if t0.elapsed() > T {
            return false;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    true
}

#[test]
fn order_is_preserved_and_filters_apply() {
    let a = open("rt-order", false);
    let b = open("rt-order", false);
    let all = b.listen(ListenerFilter::default(), 100_000, DropPolicy::DropNewest);
    let some = b.listen(
        ListenerFilter { filters: vec![Filter::canio_match(0x10, Some(0x7F0), false).unwrap()], error_frames: false },
        100,
        DropPolicy::DropNewest,
    );
    for i in 0..20_000u32 {
        a.send(&frame(i % 0x800, &i.to_le_bytes()), T).unwrap();
    }
    for i in 0..20_000u32 {
        let f = all.recv_timeout(T).expect("frame");
        assert_eq!(f.frame.data(), &i.to_le_bytes());
        assert!(!f.own());
    }
    // 0x010..=0x01F, 16 ids each seen 20000/2048 times (9 or 10): only the first 100 fit.
    assert_eq!(some.len(), 100);
    assert!(some.dropped() > 0);
    assert_eq!(b.stats().received, 20_000);
    assert_eq!(a.stats().sent, 20_000);
}

#[test]
fn drop_oldest_keeps_newest_and_counts() {
    let clock = Clock::system();
    let a = stepped("rt-drop", false, &clock);
    let b = stepped("rt-drop", false, &clock);
    let l = b.listen(ListenerFilter::default(), 10, DropPolicy::DropOldest);
    for i in 0..50u8 {
        a.send(&frame(1, &[i]), T).unwrap();
    }
    assert_eq!(b.run_until_idle().unwrap(), 50);
    assert_eq!(l.dropped(), 40);
    let got: Vec<u8> = (0..10).map(|_| l.try_recv().unwrap().frame.data()[0]).collect();
    assert_eq!(got, (40..50).collect::<Vec<u8>>());
}

#[test]
fn bus_off_blocks_send_until_restart() {
    let a = open("rt-off", true);
    a.inject_state(BusState::BusOff, 255, 0).unwrap();
    assert_eq!(a.state().state, BusState::BusOff);
    assert!(matches!(a.send(&frame(1, &[]), T), Err(Error::BusOff)));
    a.restart().unwrap();
    assert_eq!(a.state().state, BusState::ErrorActive);
    a.send(&frame(1, &[]), T).unwrap();
}

/// A toy engine: answers every frame on 0x100 with the same data on 0x101,
/// and sends a heartbeat on 0x7FF every 20 ms.
struct Echo {
    out: Vec<Frame>,
    next_beat: Instant,
    beats: Arc<Mutex<u32>>,
}

impl Driven for Echo {
    fn handle_frame(&mut self, _now: Instant, rx: &RxFrame) {
        if !rx.own() && rx.frame.key() == 0x100 {
            self.out.push(frame(0x101, rx.frame.data()));
        }
    }
    fn handle_timeout(&mut self, now: Instant) {
        if now >= self.next_beat {
            self.out.push(frame(0x7FF, &[]));
            *self.beats.lock() += 1;
            self.next_beat = now + canx_core::Duration::from_millis(20);
        }
    }
    fn poll_transmit(&mut self, _now: Instant) -> Option<Frame> {
        self.out.pop()
    }
    fn poll_timeout(&self) -> Option<Instant> {
        Some(self.next_beat)
    }
    fn flush_events(&mut self) {}
    fn filters(&self) -> Option<Vec<Filter>> {
        Some(vec![Filter::canio_match(0x100, None, false).unwrap()])
    }
}

/// The receive thread drives engines: it answers a frame and fires timers
/// with no application code running.
#[test]
fn engines_answer_natively_on_the_receive_thread() {
    let a = open("rt-engine", false);
    let b = open("rt-engine", false);
    let beats = Arc::new(Mutex::new(0));
    let handle = b.attach(Arc::new(Mutex::new(Echo { out: vec![], next_beat: engine::now(), beats: beats.clone() })));
    let l = a.listen(
        ListenerFilter { filters: vec![Filter::canio_match(0x101, None, false).unwrap()], error_frames: false },
        16,
        DropPolicy::DropNewest,
    );
    a.send(&frame(0x100, b"ping"), T).unwrap();
    let reply = l.recv_timeout(T).expect("the engine answers without any application code");
    assert_eq!(reply.frame.data(), b"ping");
    assert!(wait_until(|| *beats.lock() >= 3), "the 20 ms timer fires on the receive thread");
    b.detach(&handle);
}

/// Timers on the bus clock, exactly: a 20 ms heartbeat fires at 0, 20, ...,
/// 300 ms (16 times) over 300 ms of 1 ms steps, answers go out in the round
/// that received the request, and a detached engine is no longer driven.
#[test]
fn engines_answer_and_timers_fire_on_the_bus_clock() {
    let (clock, time) = Clock::manual(Instant::from_millis(1000));
    let a = stepped("rt-engine-clock", false, &clock);
    let b = stepped("rt-engine-clock", false, &clock);
    let beats = Arc::new(Mutex::new(0));
    let handle = b.attach(Arc::new(Mutex::new(Echo { out: vec![], next_beat: clock.now(), beats: beats.clone() })));
    let l = a.listen(ListenerFilter::default(), 64, DropPolicy::DropNewest);
    a.send(&frame(0x100, b"ping"), T).unwrap();
    assert_eq!(b.step().unwrap(), 1);
    a.step().unwrap();
    let got: Vec<(u32, Vec<u8>)> =
        std::iter::from_fn(|| l.try_recv()).map(|f| (f.frame.key(), f.frame.data().to_vec())).collect();
    // The heartbeat due at the start and the answer, in the same round.
    assert_eq!(got.len(), 2, "{got:?}");
    assert!(got.contains(&(0x101, b"ping".to_vec())), "{got:?}");
    assert_eq!(*beats.lock(), 1);
    for _ in 0..300 {
        time.advance(ms(1));
        b.step().unwrap();
    }
    assert_eq!(*beats.lock(), 16, "0, 20, ..., 300 ms");
    b.detach(&handle);
    for _ in 0..100 {
        time.advance(ms(1));
        b.step().unwrap();
    }
    assert_eq!(*beats.lock(), 16, "a detached engine is no longer driven");
}

/// `shutdown` stops the receive thread (it returns: no bound on how fast)
/// and is idempotent; the bus refuses sends afterwards.
#[test]
fn shutdown_stops_the_receive_thread() {
    let a = Arc::new(open("rt-shut", false));
    let (tx, rx) = std::sync::mpsc::channel();
    let a2 = a.clone();
    std::thread::spawn(move || {
        a2.shutdown();
        a2.shutdown();
        tx.send(()).unwrap();
    });
    rx.recv_timeout(T).expect("shutdown returns");
    assert!(a.is_shut_down());
    assert!(matches!(a.send(&frame(1, &[]), T), Err(Error::Closed)));
}

/// B4: a receive thread that dies of repeated backend errors is visible: the
/// next send fails with the cause and the state reads BUS_OFF with the reason.
#[test]
fn dead_receive_thread_surfaces_in_send_and_state() {
    let a = open("rt-dead-rx", false);
    a.send(&frame(1, &[]), T).unwrap();
    assert!(virtual_bus::fail_receive("rt-dead-rx"));
    // 51 failed receives 20 ms apart, then the thread stops; wait on that, not on time.
    let t0 = std::time::Instant::now();
    while a.thread_error().is_none() {
        assert!(t0.elapsed() < Duration::from_secs(30), "the receive thread never gave up");
        std::thread::sleep(Duration::from_millis(10));
    }
    match a.send(&frame(1, &[]), T) {
        Err(Error::ReceiveThreadStopped(why)) => assert!(why.contains("injected receive failure"), "{why}"),
        other => panic!("send after the receive thread died: {other:?}"),
    }
    let s = a.state();
    assert_eq!(s.state, BusState::BusOff);
    assert!(s.link_down.unwrap().contains("receive thread stopped"));
    a.shutdown();
    assert!(matches!(a.send(&frame(1, &[]), T), Err(Error::Closed)));
}

/// A periodic task on the bus clock: at a 10 ms period, 300 ms of 1 ms
/// steps send exactly 31 frames at 0, 10, ..., 300 ms (new data from the
/// first slot after `set_frames`). A stall of several periods sends one
/// frame when the thread wakes, skips the missed slots (no burst) and
/// continues on the original 10 ms grid.
#[test]
fn periodic_task_sends_on_the_grid_and_skips_missed_slots() {
    use super::drivers::PeriodicTask;
    let (clock, time) = Clock::manual(Instant::from_millis(5000));
    let a = stepped("rt-periodic", false, &clock);
    let b = stepped("rt-periodic", false, &clock);
    let l = b.listen(ListenerFilter::default(), 1000, DropPolicy::DropNewest);
    let t0 = clock.now();
    let mut task = PeriodicTask::start(&a, vec![frame(0x55, &[1])], ms(10), None);
    let mut got: Vec<(u64, u8)> = vec![];
    let tick = |got: &mut Vec<(u64, u8)>| {
        a.step().unwrap();
        b.step().unwrap();
        let at = (clock.now() - t0).total_micros() / 1000;
        got.extend(std::iter::from_fn(|| l.try_recv()).map(|f| (at, f.frame.data()[0])));
    };
    tick(&mut got);
    for step in 1..=300 {
        time.advance(ms(1));
        if step == 205 {
            task.with(|p| p.set_frames(vec![frame(0x55, &[2])]));
        }
        tick(&mut got);
    }
    let expected: Vec<(u64, u8)> = (0..=30).map(|k| (k * 10, if k * 10 < 205 { 1 } else { 2 })).collect();
    assert_eq!(got, expected);
    got.clear();
    // A 35 ms stall: the 310, 320 and 330 slots are skipped.
    time.advance(ms(35));
    tick(&mut got);
    for _ in 0..25 {
        time.advance(ms(1));
        tick(&mut got);
    }
    assert_eq!(got, vec![(335, 2), (340, 2), (350, 2), (360, 2)]);
    assert_eq!(task.peek(|p| p.sent()), 35);
    task.detach(&a);
    got.clear();
    for _ in 0..50 {
        time.advance(ms(1));
        tick(&mut got);
    }
    assert_eq!(got, vec![], "a detached task sends nothing");
}

/// Periodic sends on real receive threads: frames arrive, in order, with
/// the modified data after `set_frames` (no timing asserted).
#[test]
fn periodic_task_sends_natively() {
    use super::drivers::PeriodicTask;
    let a = open("rt-periodic-thread", false);
    let b = open("rt-periodic-thread", false);
    let l = b.listen(ListenerFilter::default(), 1000, DropPolicy::DropNewest);
    let mut task = PeriodicTask::start(&a, vec![frame(0x55, &[1])], canx_core::Duration::from_millis(10), None);
    let first = l.recv_timeout(T).expect("periodic frame");
    assert_eq!(first.frame.data(), &[1]);
    task.with(|p| p.set_frames(vec![frame(0x55, &[2])]));
    let sent_before = task.peek(|p| p.sent());
    assert!(wait_until(|| task.peek(|p| p.sent()) >= sent_before + 3));
    task.detach(&a);
    let mut last = first;
    while let Some(f) = l.recv_timeout(Duration::from_millis(200)) {
        last = f;
    }
    assert_eq!(last.frame.data(), &[2]);
}

#[cfg(target_os = "linux")]
#[test]
fn notify_fd_is_readable_exactly_while_frames_are_queued() {
    let a = open("rt-notify", false);
    let b = open("rt-notify", false);
    let l = b.listen(ListenerFilter::default(), 100, DropPolicy::DropNewest);
    let n = Arc::new(Notify::new().unwrap());
    l.set_notify(n.clone());
    let readable = |ms: i32| {
        let mut p = libc::pollfd { fd: n.raw_fd(), events: libc::POLLIN, revents: 0 };
        // SAFETY: one valid pollfd.
        unsafe { libc::poll(&mut p, 1, ms) == 1 }
    };
    assert!(!readable(0));
    a.send(&frame(1, &[1]), T).unwrap();
    a.send(&frame(1, &[2]), T).unwrap();
    assert!(readable(2000));
    let t0 = std::time::Instant::now();
    while l.len() < 2 && t0.elapsed() < T {
        std::thread::sleep(Duration::from_millis(1));
    }
    assert!(l.try_recv().is_some());
    l.rearm();
    assert!(readable(0), "still a frame queued");
    assert!(l.try_recv().is_some());
    l.rearm();
    assert!(!readable(0), "queue empty");
    a.send(&frame(1, &[3]), T).unwrap();
    assert!(readable(2000));
}

/// A backend whose transmit queue never has room: every send "waits" its
/// whole timeout (counted, not slept) and fails with `SendTimeout`. Nothing
/// is ever received.
#[derive(Default)]
struct Jammed {
    timeouts: std::sync::atomic::AtomicUsize,
}

impl Backend for Jammed {
    fn capabilities(&self) -> Capabilities {
        Capabilities::default()
    }
    fn recv_batch(&self, _out: &mut Vec<RxFrame>, timeout: Duration) -> Result<()> {
        std::thread::sleep(timeout.min(Duration::from_millis(5)));
        Ok(())
    }
    fn send(&self, _frame: &Frame, _timeout: Duration) -> Result<()> {
        self.timeouts.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Err(Error::SendTimeout)
    }
    fn wake(&self) {}
    fn backend_drops(&self) -> u64 {
        0
    }
}

/// An engine that sends `n` frames when asked and records what failed.
struct Burst {
    out: Vec<Frame>,
    failed: Vec<(Frame, String)>,
}

impl Driven for Burst {
    fn handle_frame(&mut self, _now: Instant, _rx: &RxFrame) {}
    fn handle_timeout(&mut self, _now: Instant) {}
    fn poll_transmit(&mut self, _now: Instant) -> Option<Frame> {
        (!self.out.is_empty()).then(|| self.out.remove(0))
    }
    fn poll_timeout(&self) -> Option<Instant> {
        None
    }
    fn flush_events(&mut self) {}
    fn send_failed(&mut self, frame: &Frame, error: &Error, _now: Instant) {
        self.failed.push((*frame, error.to_string()));
    }
}

/// B3: with a transmit queue that never drains, one engine call waits for
/// one send timeout, not one per frame: the rest of the batch fails at once
/// and every frame is reported to the engine.
#[test]
fn send_timeout_fails_the_rest_of_the_batch_at_once() {
    let jam = Arc::new(Jammed::default());
    let bus = Bus::with_backend(jam.clone(), BusConfig::virtual_bus("rt-jammed")).unwrap();
    let engine = Arc::new(Mutex::new(Burst { out: vec![], failed: vec![] }));
    let handle = bus.attach(engine.clone());
    let frames: Vec<Frame> = (0..40u8).map(|i| frame(0x200, &[i])).collect();
    engine.lock().out = frames.clone();
    handle.kick();
    let e = engine.lock();
    assert_eq!(jam.timeouts.load(std::sync::atomic::Ordering::Relaxed), 1, "one wait for the whole batch");
    assert_eq!(e.failed.iter().map(|(f, _)| *f).collect::<Vec<_>>(), frames, "every frame reported, in order");
    assert!(e.failed.iter().all(|(_, err)| err.contains("timed out")));
    assert!(e.out.is_empty());
}

/// Records every frame it is handed, with its origin; sends what is queued.
struct Recorder {
    seen: Vec<(u32, Origin)>,
    out: Vec<Frame>,
}

impl Driven for Recorder {
    fn handle_frame(&mut self, _now: Instant, rx: &RxFrame) {
        self.seen.push((rx.frame.key(), rx.origin));
    }
    fn handle_timeout(&mut self, _now: Instant) {}
    fn poll_transmit(&mut self, _now: Instant) -> Option<Frame> {
        self.out.pop()
    }
    fn poll_timeout(&self) -> Option<Instant> {
        None
    }
    fn flush_events(&mut self) {}
}

/// Local echo: a frame one engine sends reaches the bus's other engines once
/// as `Sibling` (not the sender, not the listeners); the socket's loopback
/// copy is tagged `Own`; a frame from another node is `Bus`.
#[test]
fn engines_of_one_bus_see_each_other_tagged_by_origin() {
    let clock = Clock::system();
    let a = stepped("rt-origin", true, &clock);
    let peer = stepped("rt-origin", false, &clock);
    let l = a.listen(ListenerFilter::default(), 100, DropPolicy::DropNewest);
    let mk = || Arc::new(Mutex::new(Recorder { seen: vec![], out: vec![] }));
    let (x, y) = (mk(), mk());
    let hx = a.attach(x.clone());
    a.attach(y.clone());
    x.lock().out.push(frame(0x300, &[1]));
    hx.kick();
    peer.send(&frame(0x301, &[2]), T).unwrap();
    a.run_until_idle().unwrap();
    // Room for a duplicate to show up: a few more rounds.
    for _ in 0..3 {
        assert_eq!(a.step().unwrap(), 0);
    }
    let mut ys = y.lock().seen.clone();
    ys.sort_by_key(|s| (s.0, s.1 as u8));
    assert_eq!(ys, vec![(0x300, Origin::Own), (0x300, Origin::Sibling), (0x301, Origin::Bus)]);
    let xs = x.lock().seen.clone();
    assert!(!xs.contains(&(0x300, Origin::Sibling)), "the sender is not echoed to itself: {xs:?}");
    assert!(xs.contains(&(0x300, Origin::Own)) && xs.contains(&(0x301, Origin::Bus)), "{xs:?}");
    let got: Vec<(u32, bool)> = std::iter::from_fn(|| l.try_recv()).map(|f| (f.frame.key(), f.own())).collect();
    assert_eq!(got, vec![(0x300, true), (0x301, false)], "listeners see the loopback copy only");
    assert_eq!(a.stats().echo_dropped, 0);
}

/// `step` belongs to stepped buses; a bus with a receive thread refuses it.
#[test]
fn step_needs_a_stepped_bus() {
    let a = open("rt-step-threaded", false);
    assert!(matches!(a.step(), Err(Error::Unsupported(_))));
    let b = stepped("rt-step-threaded", false, &Clock::system());
    assert_eq!(b.step().unwrap(), 0);
    b.shutdown();
    assert!(matches!(b.step(), Err(Error::Closed)));
}

/// The virtual bus's transmit jam (test fault): each send waits its
/// timeout and fails with `SendTimeout`; unjammed, sends go through again.
#[test]
fn jammed_virtual_bus_times_out_sends() {
    let clock = Clock::system();
    let a = stepped("rt-jam", false, &clock);
    let b = stepped("rt-jam", false, &clock);
    a.jam_tx(true).unwrap();
    assert!(matches!(a.send(&frame(1, &[1]), Duration::from_millis(1)), Err(Error::SendTimeout)));
    assert_eq!(b.step().unwrap(), 0, "nothing left the jammed node");
    a.jam_tx(false).unwrap();
    a.send(&frame(1, &[2]), T).unwrap();
    assert_eq!(b.step().unwrap(), 1);
    assert_eq!(a.stats().sent, 1);
}

/// Engines read the bus clock for application-side changes too
/// ([`PeerHints::now`]): a J1939 address claim started from the
/// application on a manual-clock bus is claimed exactly `CLAIM_WAIT`
/// (250 ms, J1939-81) of bus time later, not on the system clock.
#[test]
fn j1939_claim_runs_on_the_bus_clock() {
    use super::drivers::j1939::{CtsTurnaround, J1939Driver, NodeConfig};
    use canx_core::j1939::{EcuConfig, Name};
    let (clock, time) = Clock::manual(Instant::from_millis(1_000_000));
    let a = stepped("rt-j1939-clock", false, &clock);
    let b = stepped("rt-j1939-clock", false, &clock);
    let mk = |name: u64, addr: u8| NodeConfig {
        config: EcuConfig::new(Name::from_u64(name), addr),
        turnaround: CtsTurnaround::Auto,
        etp_buffer: 2048,
        queue: 64,
    };
    let (da, _qa) = J1939Driver::new(mk(1, 0x10)).unwrap();
    let (db, _qb) = J1939Driver::new(mk(2, 0x20)).unwrap();
    let (da, db) = (Arc::new(Mutex::new(da)), Arc::new(Mutex::new(db)));
    let ha = a.attach(da.clone());
    let _hb = b.attach(db.clone());
    da.lock().start().unwrap();
    ha.kick();
    assert_eq!(da.lock().state().unwrap(), ("claiming", Some(0x10)));
    for _ in 0..249 {
        time.advance(ms(1));
        a.step().unwrap();
        b.step().unwrap();
    }
    assert_eq!(da.lock().state().unwrap(), ("claiming", Some(0x10)), "249 ms after the claim");
    time.advance(ms(1));
    a.step().unwrap();
    assert_eq!(da.lock().state().unwrap(), ("claimed", Some(0x10)), "250 ms after the claim");
}

/// J1939 sessions of several ECUs on one bus share each receive round: with
/// every CTS in the same round, the first DT of each session goes out
/// before any session has sent its whole 255-packet window. Before, each
/// engine sent its whole window in turn, so 64 concurrent 1785-byte
/// transfers in the qemu VM (about 6500 frames/s) reached the last
/// receivers more than T2 (1.25 s, J1939-21 5.10.2.4) after their CTS: they
/// aborted with reason 3 (timeout) and ignored the 255 DTs that followed.
#[test]
fn j1939_sessions_of_one_bus_share_each_round() {
    use super::drivers::j1939::{CtsTurnaround, J1939Driver, J1939Event, NodeConfig};
    use canx_core::j1939::{EcuConfig, Name, Pgn};
    const N: usize = 3;
    let (clock, time) = Clock::manual(Instant::from_millis(1_000_000));
    let tx = stepped("rt-j1939-share", false, &clock);
    let rx = stepped("rt-j1939-share", false, &clock);
    let mon = stepped("rt-j1939-share", false, &clock);
    let l = mon.listen(ListenerFilter::default(), 4096, DropPolicy::DropNewest);
    let mk = |name: u64, addr: u8| NodeConfig {
        config: EcuConfig::new(Name::from_u64(name), addr),
        turnaround: CtsTurnaround::Auto,
        etp_buffer: 2048,
        queue: 64,
    };
    let mut senders = Vec::new();
    let mut receivers = Vec::new();
    for i in 0..N as u8 {
        let (d, q) = J1939Driver::new(mk(1000 + u64::from(i), i)).unwrap();
        let d = Arc::new(Mutex::new(d));
        senders.push((d.clone(), tx.attach(d), q));
        let (d, q) = J1939Driver::new(mk(2000 + u64::from(i), 0x40 + i)).unwrap();
        let d = Arc::new(Mutex::new(d));
        receivers.push((d.clone(), rx.attach(d), q));
    }
    for (d, h, _) in senders.iter().chain(receivers.iter()) {
        d.lock().start().unwrap();
        h.kick();
    }
    for _ in 0..260 {
        time.advance(ms(1));
        tx.step().unwrap();
        rx.step().unwrap();
    }
    for (d, _, _) in senders.iter().chain(receivers.iter()) {
        assert_eq!(d.lock().state().unwrap().0, "claimed");
    }
    let data: Vec<u8> = (0..1785u32).map(|i| (i * 13 + 1) as u8).collect();
    for (i, (d, h, _)) in senders.iter().enumerate() {
        d.lock().send(6, Pgn::PROPRIETARY_A, 0x40 + i as u8, &data).unwrap();
        h.kick();
    }
    rx.step().unwrap(); // the RTSs in, the CTSs out
    while l.try_recv().is_some() {}
    mon.step().unwrap();
    while l.try_recv().is_some() {} // claims, RTSs, CTSs
    tx.step().unwrap(); // the CTSs in: this round's DTs out
    while mon.step().unwrap() > 0 {}
    let mut first = [None; N];
    let mut count = [0usize; N];
    let mut window_done = None;
    let mut k = 0usize;
    while let Some(f) = l.try_recv() {
        let Frame::Can(c) = f.frame else { continue };
        let id = c.raw_id();
        if (id >> 16) & 0xFF == 0xEB {
            let s = (id & 0xFF) as usize;
            first[s].get_or_insert(k);
            count[s] += 1;
            if count[s] == 255 && window_done.is_none() {
                window_done = Some(k);
            }
            k += 1;
        }
    }
    assert!(first.iter().all(Option::is_some), "every session sent DTs in the round: {first:?}, {count:?}");
    if let Some(done) = window_done {
        assert!(
            first.iter().all(|f| f.unwrap() < done),
            "a session sent its whole window (DT {done}) before another started: first DTs at {first:?}"
        );
    }
    // And the transfers complete.
    for _ in 0..100 {
        time.advance(ms(1));
        tx.step().unwrap();
        rx.step().unwrap();
    }
    for (i, (_, _, q)) in receivers.iter().enumerate() {
        let got = std::iter::from_fn(|| q.try_recv())
            .any(|e| matches!(e, J1939Event::Message { data: ref d, source, .. } if *d == data && source == i as u8));
        assert!(got, "receiver {i} got the message");
    }
    for (i, (_, _, q)) in senders.iter().enumerate() {
        let sent = std::iter::from_fn(|| q.try_recv()).any(|e| matches!(e, J1939Event::Sent { size: 1785, .. }));
        assert!(sent, "sender {i} completed");
    }
}

/// The per-round budget is for taking turns: an ECU alone on its bus has
/// nobody to take turns with, so its whole 255-DT window leaves in the round
/// that took the CTS in (full `send_many` batches, no round per 16 frames).
#[test]
fn j1939_lone_ecu_sends_its_window_in_one_round() {
    use super::drivers::j1939::{CtsTurnaround, J1939Driver, NodeConfig};
    use canx_core::j1939::{EcuConfig, Name, Pgn};
    let (clock, time) = Clock::manual(Instant::from_millis(1_000_000));
    let tx = stepped("rt-j1939-lone", false, &clock);
    let rx = stepped("rt-j1939-lone", false, &clock);
    let mon = stepped("rt-j1939-lone", false, &clock);
    let l = mon.listen(ListenerFilter::default(), 4096, DropPolicy::DropNewest);
    let mk = |name: u64, addr: u8| NodeConfig {
        config: EcuConfig::new(Name::from_u64(name), addr),
        turnaround: CtsTurnaround::Auto,
        etp_buffer: 2048,
        queue: 64,
    };
    let (a, _) = J1939Driver::new(mk(1000, 0x10)).unwrap();
    let a = Arc::new(Mutex::new(a));
    let ha = tx.attach(a.clone());
    let (b, _) = J1939Driver::new(mk(2000, 0x40)).unwrap();
    let b = Arc::new(Mutex::new(b));
    let hb = rx.attach(b.clone());
    for (d, h) in [(&a, &ha), (&b, &hb)] {
        d.lock().start().unwrap();
        h.kick();
    }
    for _ in 0..260 {
        time.advance(ms(1));
        tx.step().unwrap();
        rx.step().unwrap();
    }
    let data: Vec<u8> = (0..1785u32).map(|i| (i * 7 + 3) as u8).collect();
    a.lock().send(6, Pgn::PROPRIETARY_A, 0x40, &data).unwrap();
    ha.kick();
    rx.step().unwrap(); // the RTS in, the CTS out
    mon.run_until_idle().unwrap();
    while l.try_recv().is_some() {}
    tx.step().unwrap(); // the CTS in: the DTs out
    mon.run_until_idle().unwrap();
    let dts = std::iter::from_fn(|| l.try_recv())
        .filter(|f| matches!(f.frame, Frame::Can(c) if (c.raw_id() >> 16) & 0xFF == 0xEB))
        .count();
    assert_eq!(dts, 255, "DTs sent in the round that took the CTS in");
}

#[test]
fn fault_rules_drop_and_delay_counted_on_the_bus_clock() {
    let (clock, time) = Clock::manual(Instant::from_millis(1000));
    let a = stepped("rt-faults", false, &clock);
    let b = stepped("rt-faults", false, &clock);
    let l = b.listen(ListenerFilter::default(), 100, DropPolicy::DropNewest);
    let only = |id| FaultMatch { id, mask: 0x7FF, extended: Some(false) };
    let dropped = b.add_fault(Direction::Rx, only(1), FaultAction::Drop, 2).unwrap();
    let delayed = b.add_fault(Direction::Rx, only(2), FaultAction::Delay(Duration::from_millis(50)), 1).unwrap();
    let tx_drop = a.add_fault(Direction::Tx, only(3), FaultAction::Drop, 1).unwrap();
    for (id, d) in [(1, 0u8), (2, 1), (1, 2), (1, 3), (3, 4), (3, 5), (4, 6)] {
        a.send(&frame(id, &[d]), T).unwrap();
    }
    b.run_until_idle().unwrap();
    let got = |l: &Listener| -> Vec<u8> { std::iter::from_fn(|| l.try_recv()).map(|f| f.frame.data()[0]).collect() };
    // 1/0 and 1/2 dropped (count 2), 1/3 passes; 2/1 held; 3/4 never sent.
    assert_eq!(got(&l), vec![3, 5, 6]);
    time.advance(ms(49));
    b.run_until_idle().unwrap();
    assert!(got(&l).is_empty(), "released before its delay");
    time.advance(ms(1));
    b.run_until_idle().unwrap();
    assert_eq!(got(&l), vec![1]);
    assert_eq!(b.fault_status(dropped), Some(RuleStatus { taken: 2, remaining: 0 }));
    assert_eq!(b.fault_status(delayed), Some(RuleStatus { taken: 1, remaining: 0 }));
    assert_eq!(a.fault_status(tx_drop), Some(RuleStatus { taken: 1, remaining: 0 }));
    let c = b.fault_counts();
    assert_eq!((c.dropped, c.delayed, c.held_overflow), (2, 1, 0));
    assert_eq!(a.stats().sent, 6, "a dropped tx frame is not handed to the backend");
    // Bounds: count 0, a delay over the maximum, more than MAX_RULES rules.
    assert!(b.add_fault(Direction::Rx, FaultMatch::ANY, FaultAction::Drop, 0).is_err());
    assert!(b.add_fault(Direction::Rx, FaultMatch::ANY, FaultAction::Delay(Duration::from_secs(61)), 1).is_err());
    for _ in 0..faults::MAX_RULES {
        b.add_fault(Direction::Rx, only(0x7FF), FaultAction::Drop, 1).unwrap();
    }
    assert!(b.add_fault(Direction::Rx, only(0x7FF), FaultAction::Drop, 1).is_err());
    b.clear_faults(false);
    a.send(&frame(0x7FF, &[9]), T).unwrap();
    b.run_until_idle().unwrap();
    assert_eq!(got(&l), vec![9]);
}

#[test]
fn fault_delay_beyond_the_held_capacity_passes_and_is_counted() {
    let (clock, time) = Clock::manual(Instant::from_millis(1000));
    let a = stepped("rt-faults-cap", false, &clock);
    let b = stepped("rt-faults-cap", false, &clock);
    let l = b.listen(ListenerFilter::default(), 10_000, DropPolicy::DropNewest);
    let n = faults::HELD_CAPACITY as u64 + 10;
    b.add_fault(Direction::Rx, FaultMatch::ANY, FaultAction::Delay(Duration::from_millis(10)), n).unwrap();
    for i in 0..n {
        a.send(&frame(5, &i.to_le_bytes()), T).unwrap();
        if i % 512 == 0 {
            b.run_until_idle().unwrap(); // the virtual inbox is bounded too
        }
    }
    b.run_until_idle().unwrap();
    assert_eq!(l.len(), 10, "the 10 beyond the held capacity pass undelayed");
    assert_eq!(b.fault_counts().held_overflow, 10);
    time.advance(ms(10));
    b.run_until_idle().unwrap();
    assert_eq!(l.len(), n as usize);
}
