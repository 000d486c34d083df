//! A bus: one backend, one native receive thread, any number of listeners.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use canx_core::frame::BusState;
use canx_core::{ErrorFrame, Filter, Frame};
use parking_lot::{Mutex, RwLock};

use super::backend::{Backend, BusConfig, Capabilities, PeerHints};
use super::engine::{Clock, Driven, EngineHandle, EngineRef};
use super::faults::{Direction, FaultAction, FaultCounts, FaultMatch, Faults, RuleStatus, Verdict};
use super::listener::{DropPolicy, Listener, ListenerFilter};
use super::{epoch_now, Error, Origin, Result, RxFrame};

/// How the receive thread waits when nothing arrives (also how often a
/// downed SocketCAN interface is re-checked).
pub(crate) const IDLE_WAIT: Duration = Duration::from_millis(100);

/// Counters of one bus.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BusStats {
    /// Frames the receive thread took from the backend (error frames included).
    pub received: u64,
    /// Frames handed to the backend for transmission.
    pub sent: u64,
    /// Frames lost before the receive thread (kernel overflow, virtual inbox full).
    pub backend_dropped: u64,
    /// Frames dropped because a listener queue was full (sum over open listeners).
    pub listener_dropped: u64,
    /// Error frames seen.
    pub error_frames: u64,
    /// Frames of the local echo between engines lost to a full echo queue.
    pub echo_dropped: u64,
    /// Input that was not a frame ([`Backend::malformed`]: garbage datagrams).
    pub malformed: u64,
}

/// Controller state as last reported.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StateInfo {
    pub state: BusState,
    pub tec: u8,
    pub rec: u8,
    /// Why the link is down, while it is.
    pub link_down: Option<String>,
}

struct Shared {
    backend: Arc<dyn Backend>,
    listeners: RwLock<Vec<Arc<Listener>>>,
    engines: RwLock<Vec<EngineRef>>,
    state: Mutex<StateInfo>,
    stop: AtomicBool,
    auto_restart: AtomicBool,
    /// Drops counted by listeners that have since been removed.
    retired_drops: AtomicU64,
    received: AtomicU64,
    sent: AtomicU64,
    error_frames: AtomicU64,
    thread_error: Mutex<Option<String>>,
    /// Local echo: frames engines sent, each with its sender's id
    /// ([`engine_id`]), for the bus's other engines ([`Origin::Sibling`]).
    /// Drained by the receive thread every round; bounded by [`ECHO_CAPACITY`].
    echo: Mutex<VecDeque<(usize, RxFrame)>>,
    /// Frames the full echo queue dropped.
    echo_dropped: AtomicU64,
    /// Attached engines (read without the engine list's lock: `transmit`
    /// runs with an engine locked).
    engine_count: AtomicUsize,
    /// The engines' clock ([`BusConfig::clock`]).
    clock: Clock,
    /// Test faults: drop or delay chosen frames ([`Bus::add_fault`]).
    faults: Faults,
}

/// Most frames waiting in the local echo between two receive rounds.
const ECHO_CAPACITY: usize = 16_384;

/// Identifies an attached engine (its allocation) for the local echo.
fn engine_id(e: &EngineRef) -> usize {
    Arc::as_ptr(e).cast::<()>() as usize
}

/// An open bus. Dropping it (or [`Bus::shutdown`]) stops the receive thread.
pub struct Bus {
    shared: Arc<Shared>,
    config: BusConfig,
    thread: Mutex<Option<JoinHandle<()>>>,
    /// A stepped bus ([`Bus::stepped`]): the receive round the test runs
    /// with [`Bus::step`]; `None` on a bus with a receive thread.
    stepper: Mutex<Option<Round>>,
    /// The process that opened the bus: after a `fork()`, the child has a
    /// copy of this struct but not the receive thread, and the device
    /// (serial port, USB interface, socket) is still the parent's.
    pid: u32,
}

impl std::fmt::Debug for Bus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bus").field("config", &self.config).finish()
    }
}

impl Bus {
    /// Opens the backend of `config.channel` (its scheme's `open`) and
    /// starts the receive thread.
    pub fn open(config: BusConfig) -> Result<Bus> {
        let backend = config.channel.open(&config)?;
        Bus::with_backend(backend, config)
    }

    /// Starts the receive thread on an open backend (one not in the scheme
    /// registry, or a test double). `config.channel` names the bus.
    pub fn with_backend(backend: Arc<dyn Backend>, config: BusConfig) -> Result<Bus> {
        let shared = Bus::shared(backend, &config);
        let s2 = shared.clone();
        let name = format!("canx-rx-{}", config.channel);
        let thread = std::thread::Builder::new()
            .name(name)
            .spawn(move || receive_loop(&s2))
            .map_err(|e| Error::Os { context: "starting the receive thread".into(), source: e })?;
        let bus = Bus {
            shared,
            config,
            thread: Mutex::new(Some(thread)),
            stepper: Mutex::new(None),
            pid: std::process::id(),
        };
        bus.update_prefilter();
        Ok(bus)
    }

    /// Opens a bus without a receive thread (tests): nothing is received
    /// and no engine runs until the caller runs a receive round with
    /// [`Bus::step`]. With a [`Clock::manual`] clock in `config`, a test
    /// decides exactly when frames are delivered and what time engines see.
    pub fn stepped(config: BusConfig) -> Result<Bus> {
        let backend = config.channel.open(&config)?;
        Bus::stepped_with_backend(backend, config)
    }

    /// [`Bus::stepped`] on an open backend (a test double).
    pub fn stepped_with_backend(backend: Arc<dyn Backend>, config: BusConfig) -> Result<Bus> {
        let shared = Bus::shared(backend, &config);
        let bus = Bus {
            shared,
            config,
            thread: Mutex::new(None),
            stepper: Mutex::new(Some(Round::default())),
            pid: std::process::id(),
        };
        bus.update_prefilter();
        Ok(bus)
    }

    fn shared(backend: Arc<dyn Backend>, config: &BusConfig) -> Arc<Shared> {
        Arc::new(Shared {
            backend,
            listeners: RwLock::new(Vec::new()),
            engines: RwLock::new(Vec::new()),
            state: Mutex::new(StateInfo { state: BusState::ErrorActive, tec: 0, rec: 0, link_down: None }),
            stop: AtomicBool::new(false),
            auto_restart: AtomicBool::new(config.auto_restart),
            retired_drops: AtomicU64::new(0),
            received: AtomicU64::new(0),
            sent: AtomicU64::new(0),
            error_frames: AtomicU64::new(0),
            thread_error: Mutex::new(None),
            echo: Mutex::new(VecDeque::new()),
            echo_dropped: AtomicU64::new(0),
            engine_count: AtomicUsize::new(0),
            clock: config.clock.clone(),
            faults: Faults::default(),
        })
    }

    /// On a [`Bus::stepped`] bus: runs one receive round now, on the
    /// calling thread: takes what the backend has queued (without
    /// waiting), hands it to listeners and engines, fires the engines'
    /// timers due at the bus clock's now and sends what they produce.
    /// Returns the number of frames received. Errors: the backend's receive
    /// error; [`Error::Unsupported`] on a bus with a receive thread;
    /// [`Error::Closed`] after shutdown.
    pub fn step(&self) -> Result<usize> {
        let mut stepper = self.stepper.lock();
        let Some(round) = stepper.as_mut() else {
            return Err(Error::Unsupported("step() needs a bus opened with Bus::stepped".into()));
        };
        if self.shared.stop.load(Ordering::Relaxed) {
            return Err(Error::Closed);
        }
        round.run(&self.shared, Some(Duration::ZERO))
    }

    /// On a [`Bus::stepped`] bus: steps until a round receives nothing and
    /// no local echo is pending (at most 10 000 rounds). Returns the frames
    /// received. Errors: as [`Bus::step`].
    pub fn run_until_idle(&self) -> Result<usize> {
        let mut total = 0;
        for _ in 0..10_000 {
            let n = self.step()?;
            total += n;
            if n == 0 && self.shared.echo.lock().is_empty() {
                break;
            }
        }
        Ok(total)
    }

    /// The bus's engine clock ([`BusConfig::clock`]).
    pub fn clock(&self) -> &Clock {
        &self.shared.clock
    }

    /// Test fault where the backend has it (the virtual bus): while `on`,
    /// every send waits its whole timeout and fails with
    /// [`Error::SendTimeout`]. Errors: [`Error::Unsupported`] elsewhere.
    pub fn jam_tx(&self, on: bool) -> Result<()> {
        self.shared.backend.jam_tx(on)
    }

    pub fn config(&self) -> &BusConfig {
        &self.config
    }

    /// What the backend can do.
    pub fn capabilities(&self) -> Capabilities {
        self.shared.backend.capabilities()
    }

    /// What engines may ask about the bus: its other nodes (kernel stacks), its clock.
    pub fn peer_hints(&self) -> PeerHints {
        PeerHints::with_clock(&self.shared.backend, self.shared.clock.clone())
    }

    pub(crate) fn backend(&self) -> &Arc<dyn Backend> {
        &self.shared.backend
    }

    /// Sends one frame. Errors: [`Error::Silent`], [`Error::BusOff`] (unless
    /// auto_restart), [`Error::InterfaceDown`], [`Error::SendTimeout`],
    /// [`Error::Unsupported`] (FD frame on a classic bus), [`Error::Closed`].
    pub fn send(&self, frame: &Frame, timeout: Duration) -> Result<()> {
        if self.shared.stop.load(Ordering::Relaxed) {
            return Err(Error::Closed);
        }
        if let Some(e) = self.thread_error() {
            return Err(Error::ReceiveThreadStopped(e));
        }
        if self.config.silent {
            return Err(Error::Silent);
        }
        if matches!(frame, Frame::Fd(_)) && !self.config.fd {
            return Err(Error::Unsupported("CAN FD frame on a bus opened without fd=True".into()));
        }
        if matches!(frame, Frame::Error(_)) {
            return Err(Error::Unsupported("error frames cannot be sent".into()));
        }
        if self.shared.state.lock().state == BusState::BusOff {
            if let Some(reason) = self.shared.backend.link_down() {
                return Err(Error::InterfaceDown(reason));
            }
            if self.shared.auto_restart.load(Ordering::Relaxed) {
                self.restart()?;
            } else {
                return Err(Error::BusOff);
            }
        }
        if self.shared.faults.active() {
            let rx = RxFrame { frame: *frame, timestamp: epoch_now(), origin: Origin::Own };
            match self.shared.faults.check(Direction::Tx, &rx, self.shared.clock.now()) {
                Verdict::Pass => {}
                Verdict::Dropped => return Ok(()),
                Verdict::Held => {
                    self.shared.backend.wake();
                    return Ok(());
                }
            }
        }
        self.shared.backend.send(frame, timeout)?;
        self.shared.sent.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// Test fault: the next `count` frames matching `matcher` that this bus
    /// receives ([`Direction::Rx`]) or sends ([`Direction::Tx`]) are dropped
    /// or delayed (see [`super::faults`] for exactly what each means).
    /// Works on every backend. Returns the rule's id for
    /// [`Bus::fault_status`]. Errors: [`Error::Unsupported`] for a count of
    /// 0, a delay over [`super::faults::MAX_DELAY`], or too many rules.
    pub fn add_fault(&self, direction: Direction, matcher: FaultMatch, action: FaultAction, count: u64) -> Result<u64> {
        let id = self.shared.faults.add(direction, matcher, action, count)?;
        self.shared.backend.wake();
        Ok(id)
    }

    /// A fault rule's progress, also after it finished (`None`: unknown id).
    pub fn fault_status(&self, id: u64) -> Option<RuleStatus> {
        self.shared.faults.status(id)
    }

    /// Removes every fault rule. Held (delayed) frames go out at the next
    /// receive round if `flush`, else are discarded.
    pub fn clear_faults(&self, flush: bool) {
        self.shared.faults.clear(flush);
        self.shared.backend.wake();
    }

    /// The bus's fault totals.
    pub fn fault_counts(&self) -> FaultCounts {
        self.shared.faults.counts()
    }

    /// Adds a listener; it sees frames that arrive from now on.
    pub fn listen(&self, filter: ListenerFilter, capacity: usize, policy: DropPolicy) -> Arc<Listener> {
        let l = Arc::new(Listener::new(filter, capacity, policy));
        self.shared.listeners.write().push(l.clone());
        self.update_prefilter();
        l
    }

    /// Removes a listener; its queue stays readable.
    pub fn unlisten(&self, l: &Arc<Listener>) {
        l.close();
        let mut ls = self.shared.listeners.write();
        if ls.iter().any(|x| Arc::ptr_eq(x, l)) {
            self.shared.retired_drops.fetch_add(l.dropped(), Ordering::Relaxed);
            ls.retain(|x| !Arc::ptr_eq(x, l));
        }
        drop(ls);
        self.update_prefilter();
    }

    /// Attaches a protocol engine: from now on the receive thread feeds it
    /// frames and timeouts and sends what it produces. What it sends is
    /// also handed to the bus's other engines ([`Origin::Sibling`]).
    pub fn attach(&self, engine: EngineRef) -> EngineHandle {
        engine.lock().attached(self.peer_hints());
        {
            let mut es = self.shared.engines.write();
            es.push(engine.clone());
            self.shared.engine_count.store(es.len(), Ordering::Relaxed);
        }
        self.update_prefilter();
        let backend = self.shared.backend.clone();
        self.shared.backend.wake();
        let bus = Arc::downgrade(&self.shared);
        let id = engine_id(&engine);
        let flush = move |e: &mut dyn Driven| {
            if let Some(shared) = bus.upgrade().filter(|s| !s.stop.load(Ordering::Relaxed)) {
                transmit(
                    &shared,
                    id,
                    e,
                    shared.clock.now(),
                    shared.engine_count.load(Ordering::Relaxed) == 1,
                    &mut Vec::new(),
                );
                e.flush_events();
            }
        };
        EngineHandle {
            engine,
            wake: Arc::new(move || backend.wake()),
            flush: Arc::new(flush),
            clock: self.shared.clock.clone(),
        }
    }

    /// Detaches an engine (its pending frames are not sent).
    pub fn detach(&self, handle: &EngineHandle) {
        {
            let mut es = self.shared.engines.write();
            es.retain(|e| !Arc::ptr_eq(e, &handle.engine));
            self.shared.engine_count.store(es.len(), Ordering::Relaxed);
        }
        self.update_prefilter();
    }

    fn update_prefilter(&self) {
        let ls = self.shared.listeners.read();
        let es = self.shared.engines.read();
        let mut all: Vec<Filter> = ls.iter().flat_map(|l| l.filter.filters.iter().copied()).collect();
        let mut accept_all = ls.iter().any(|l| l.filter.filters.is_empty());
        for e in es.iter() {
            match e.lock().filters() {
                Some(fs) => all.extend(fs),
                None => accept_all = true,
            }
        }
        if accept_all {
            self.shared.backend.set_prefilter(None);
        } else {
            // No listener and no engine: nothing comes up from the kernel but error frames.
            self.shared.backend.set_prefilter(Some(&all));
        }
    }

    /// The controller state. A link that is down, or a receive thread that
    /// stopped ([`Bus::thread_error`]), reads as BUS_OFF with `link_down` saying why.
    pub fn state(&self) -> StateInfo {
        let mut s = self.shared.state.lock().clone();
        if let Some(reason) = self.shared.backend.link_down() {
            s.state = BusState::BusOff;
            s.link_down = Some(reason);
        }
        if let Some(e) = self.thread_error() {
            s.state = BusState::BusOff;
            s.link_down = Some(Error::ReceiveThreadStopped(e).to_string());
        }
        s
    }

    /// Leaves BUS_OFF: counters to zero, state ERROR_ACTIVE.
    pub fn restart(&self) -> Result<()> {
        self.shared.backend.restart()?;
        let mut s = self.shared.state.lock();
        s.state = BusState::ErrorActive;
        s.tec = 0;
        s.rec = 0;
        Ok(())
    }

    /// Leave BUS_OFF by itself before the next send (canio `auto_restart`).
    pub fn set_auto_restart(&self, on: bool) {
        self.shared.auto_restart.store(on, Ordering::Relaxed);
    }

    /// Where [`Capabilities::state_injection`] (the virtual bus): the
    /// controller reports `state` with the counters; else [`Error::Unsupported`].
    pub fn inject_state(&self, state: BusState, tec: u8, rec: u8) -> Result<()> {
        let e = ErrorFrame::from_state(state, tec, rec);
        self.shared.backend.inject_state(e)?;
        apply_error_frame(&self.shared, &e);
        Ok(())
    }

    pub fn stats(&self) -> BusStats {
        let listener_dropped = self.shared.listeners.read().iter().map(|l| l.dropped()).sum::<u64>()
            + self.shared.retired_drops.load(Ordering::Relaxed);
        BusStats {
            received: self.shared.received.load(Ordering::Relaxed),
            sent: self.shared.sent.load(Ordering::Relaxed),
            backend_dropped: self.shared.backend.backend_drops(),
            listener_dropped,
            error_frames: self.shared.error_frames.load(Ordering::Relaxed),
            echo_dropped: self.shared.echo_dropped.load(Ordering::Relaxed),
            malformed: self.shared.backend.malformed(),
        }
    }

    /// The error that stopped the receive thread, if it stopped (then
    /// [`Bus::send`] fails with [`Error::ReceiveThreadStopped`] and
    /// [`Bus::state`] reads BUS_OFF).
    pub fn thread_error(&self) -> Option<String> {
        self.shared.thread_error.lock().clone()
    }

    pub fn is_shut_down(&self) -> bool {
        self.shared.stop.load(Ordering::Relaxed)
    }

    /// Stops the receive thread and closes every listener. Idempotent.
    ///
    /// In a child process forked after the bus was opened, the bus is
    /// marked shut down and its listeners closed, but the receive thread
    /// (which does not exist in the child) is not joined and the backend is
    /// not closed: the device still belongs to the parent, and closing it
    /// from the child (slcan's close command, a USB interface release)
    /// would break the parent's bus. The child's copies of the descriptors
    /// go when the child exits (docs/reliability.md, "fork").
    pub fn shutdown(&self) {
        self.shared.stop.store(true, Ordering::Relaxed);
        if std::process::id() != self.pid {
            std::mem::forget(self.thread.lock().take());
            for l in self.shared.listeners.write().drain(..) {
                l.close();
            }
            return;
        }
        self.shared.backend.wake();
        if let Some(t) = self.thread.lock().take() {
            let _ = t.join();
        }
        self.shared.backend.close();
        for l in self.shared.listeners.write().drain(..) {
            l.close();
        }
    }
}

impl Drop for Bus {
    fn drop(&mut self) {
        self.shutdown();
    }
}

fn apply_error_frame(shared: &Shared, e: &ErrorFrame) {
    let mut s = shared.state.lock();
    if let Some(tec) = e.tx_error_count() {
        s.tec = tec;
    }
    if let Some(rec) = e.rx_error_count() {
        s.rec = rec;
    }
    if let Some(st) = e.bus_state() {
        s.state = st;
    }
}

/// Runs every engine: the local echo (frames the bus's other engines sent
/// since the last round), then the frames of this batch in, timeouts, frames
/// out, events out. `echo` is scratch space. Returns the earliest engine
/// deadline.
fn run_engines(
    shared: &Shared,
    batch: &[RxFrame],
    echo: &mut VecDeque<(usize, RxFrame)>,
) -> Option<canx_core::Instant> {
    let engines = shared.engines.read();
    echo.clear();
    std::mem::swap(&mut *shared.echo.lock(), echo);
    if engines.is_empty() {
        return None;
    }
    let mut next: Option<canx_core::Instant> = None;
    // Reused for every engine of this round (no allocation when none sends).
    let mut out: Vec<Frame> = Vec::new();
    let lone = engines.len() == 1;
    for e in engines.iter() {
        let id = engine_id(e);
        let mut e = e.lock();
        let now = shared.clock.now();
        for (_, f) in echo.iter().filter(|(from, _)| *from != id) {
            e.handle_frame(now, f);
        }
        for f in batch {
            e.handle_frame(now, f);
        }
        e.handle_timeout(now);
        transmit(shared, id, &mut *e, now, lone, &mut out);
        e.flush_events();
        next = canx_core::time::earliest(next, e.poll_timeout());
    }
    next
}

/// Sends everything engine `e` wants to send at `now`, in batches (one
/// sendmmsg on SocketCAN: a J1939 window is 255 DTs). A frame that fails is
/// reported to the engine and the rest of its batch still goes, except after
/// [`Error::SendTimeout`]: the transmit queue stayed full for a whole
/// [`SEND_TIMEOUT`], so the rest of the batch fails at once (each frame
/// reported to the engine) and the engine's further frames wait for the next
/// round. The engine is locked while this runs, so one stalled queue costs
/// its callers one timeout per round, not one per frame. Frames sent are
/// queued for the bus's other engines (local echo; `id` is the sender's
/// [`engine_id`]). An engine `lone` on its bus has nobody to take turns
/// with: its per-round budget is renewed here ([`Driven::renew_budget`]),
/// so its frames leave in full batches instead of a round each. `out` is
/// scratch space.
fn transmit(shared: &Shared, id: usize, e: &mut dyn Driven, now: canx_core::Instant, lone: bool, out: &mut Vec<Frame>) {
    loop {
        out.clear();
        while out.len() < SEND_BATCH {
            match e.poll_transmit(now) {
                Some(f) => out.push(f),
                None if lone && e.renew_budget() => continue,
                None => break,
            }
        }
        if out.is_empty() {
            break;
        }
        if shared.faults.active() {
            let before = out.len();
            let timestamp = epoch_now();
            let mut taken: Vec<Frame> = Vec::new();
            out.retain(|f| {
                let rx = RxFrame { frame: *f, timestamp, origin: Origin::Own };
                match shared.faults.check(Direction::Tx, &rx, now) {
                    Verdict::Pass => true,
                    Verdict::Dropped | Verdict::Held => {
                        taken.push(*f);
                        false
                    }
                }
            });
            if out.len() < before {
                // Lost (or held) on the wire: the engine sent it.
                e.sent(before - out.len(), shared.clock.now());
                echo(shared, id, &taken);
            }
            if out.is_empty() {
                continue;
            }
        }
        let mut rest = &out[..];
        while !rest.is_empty() {
            let (n, r) = shared.backend.send_many(rest, SEND_TIMEOUT);
            shared.sent.fetch_add(n as u64, Ordering::Relaxed);
            if n > 0 {
                e.sent(n, shared.clock.now());
            }
            echo(shared, id, &rest[..n]);
            match r {
                Ok(()) => break,
                Err(Error::SendTimeout) => {
                    for f in &rest[n..] {
                        e.send_failed(f, &Error::SendTimeout, shared.clock.now());
                    }
                    return;
                }
                Err(err) => {
                    e.send_failed(&rest[n], &err, shared.clock.now());
                    rest = &rest[n + 1..];
                }
            }
        }
    }
}

/// Queues `frames`, just sent by engine `id`, for the bus's other engines.
fn echo(shared: &Shared, id: usize, frames: &[Frame]) {
    if frames.is_empty() || shared.engine_count.load(Ordering::Relaxed) < 2 {
        return;
    }
    let timestamp = epoch_now();
    let mut q = shared.echo.lock();
    for f in frames {
        if q.len() >= ECHO_CAPACITY {
            shared.echo_dropped.fetch_add(1, Ordering::Relaxed);
            continue;
        }
        q.push_back((id, RxFrame { frame: *f, timestamp, origin: Origin::Sibling }));
    }
}

/// How long an engine's frame may wait for room in the transmit queue.
const SEND_TIMEOUT: Duration = Duration::from_millis(100);
/// Most frames handed to the backend in one `send_many`.
const SEND_BATCH: usize = 64;

fn receive_loop(shared: &Shared) {
    let mut round = Round::default();
    let mut failures = 0u32;
    while !shared.stop.load(Ordering::Relaxed) {
        match round.run(shared, None) {
            Ok(_) => failures = 0,
            Err(e) => {
                // Transient errors (interface down) are reported by the
                // backend's link state; anything else repeated is fatal.
                failures += 1;
                if failures > 50 {
                    *shared.thread_error.lock() = Some(e.to_string());
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }
}

/// The state of a bus's receive rounds, kept between rounds: the receive
/// thread's, or a stepped bus's ([`Bus::step`]).
#[derive(Default)]
struct Round {
    batch: Vec<RxFrame>,
    echo: VecDeque<(usize, RxFrame)>,
    /// The engines' earliest deadline after the last round.
    deadline: Option<canx_core::Instant>,
}

impl Round {
    /// One receive round: waits for frames (`wait`, or by default until the
    /// earliest engine deadline on the bus clock, at most [`IDLE_WAIT`]),
    /// hands them to the listeners, runs the engines. Returns the number of
    /// frames received; on a receive error nothing else is done.
    fn run(&mut self, shared: &Shared, wait: Option<Duration>) -> Result<usize> {
        let batch = &mut self.batch;
        batch.clear();
        let wait = match (wait, self.deadline) {
            (Some(w), _) => w,
            // Echoed frames wait for the engines: only look for what arrived.
            _ if !shared.echo.lock().is_empty() => Duration::ZERO,
            (None, d) => {
                let d = if shared.faults.active() { canx_core::time::earliest(d, shared.faults.next_due()) } else { d };
                match d {
                    Some(d) => Duration::from_micros((d - shared.clock.now()).total_micros()).min(IDLE_WAIT),
                    None => IDLE_WAIT,
                }
            }
        };
        shared.backend.recv_batch(batch, wait)?;
        let received = batch.len();
        if shared.faults.active() {
            let now = shared.clock.now();
            shared.faults.filter_rx(batch, now);
            shared.faults.take_due(Direction::Rx, now, batch);
            let mut late = Vec::new();
            shared.faults.take_due(Direction::Tx, now, &mut late);
            for f in &late {
                match shared.backend.send(&f.frame, SEND_TIMEOUT) {
                    Ok(()) => {
                        shared.sent.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(_) => {
                        shared.faults.late_send_failed.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        }
        shared.received.fetch_add(received as u64, Ordering::Relaxed);
        if !batch.is_empty() {
            let listeners = shared.listeners.read();
            for f in batch.iter() {
                if let Frame::Error(e) = &f.frame {
                    shared.error_frames.fetch_add(1, Ordering::Relaxed);
                    // An injected (own) error frame was applied when it was injected;
                    // applying it again here could undo a restart() made since.
                    if f.origin != Origin::Own {
                        apply_error_frame(shared, e);
                    }
                }
                for l in listeners.iter() {
                    l.offer(f);
                }
            }
        }
        self.deadline = run_engines(shared, batch, &mut self.echo);
        Ok(received)
    }
}
