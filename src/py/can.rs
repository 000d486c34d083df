//! canio `CAN` and `Listener`, backed by the native runtime.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use pyo3::exceptions::{PyKeyboardInterrupt, PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList, PyString, PyTuple};

use super::errors::{deinit_error, raise, to_py, Kind};
use super::messages::{py_to_frame, rx_to_py, type_name, BusState, Match};
use crate::runtime::{
    Bus, BusConfig, Channel, DropPolicy, Error, Listener as NativeListener, ListenerFilter, Notify, RxFrame,
};

/// How long a blocking call sleeps with the GIL released before it checks
/// for signals (Ctrl-C).
const SIGNAL_SLICE: Duration = Duration::from_millis(50);
/// Default listener queue length, frames.
pub const DEFAULT_QUEUE: usize = 65_536;

fn default_channel(py: Python<'_>) -> PyResult<String> {
    let os = py.import("os")?;
    let v = os.getattr("environ")?.call_method1("get", ("CANX_CHANNEL", "virtual:default"))?;
    v.extract()
}

/// Waits for a frame with the GIL released, in slices, so Ctrl-C interrupts.
pub fn wait_frame(py: Python<'_>, l: &NativeListener, bus: &Bus, timeout: Option<f64>) -> PyResult<Option<RxFrame>> {
    wait_rx(py, bus, timeout, |slice| {
        l.try_recv().or_else(|| if slice.is_zero() { None } else { l.recv_timeout(slice) })
    })
}

/// [`wait_for`] on what `bus`'s receive thread delivers: what is queued comes
/// first; then a shut-down bus raises canio's deinitialized error and a bus
/// whose receive thread stopped raises `canx.ReceiveThreadError` (at once,
/// or as soon as the thread stops during the wait), never a silent timeout.
pub fn wait_rx<T: Send>(
    py: Python<'_>,
    bus: &Bus,
    timeout: Option<f64>,
    poll: impl Fn(Duration) -> Option<T> + Sync,
) -> PyResult<Option<T>> {
    let r = wait_for(py, timeout, || bus.is_shut_down() || bus.thread_error().is_some(), poll);
    match (r, bus.thread_error()) {
        (Ok(Some(v)), _) => Ok(Some(v)),
        (Ok(None), Some(e)) if !bus.is_shut_down() => Err(to_py(py, Error::ReceiveThreadStopped(e))),
        (Err(err), Some(e)) if !bus.is_shut_down() && !err.is_instance_of::<PyKeyboardInterrupt>(py) => {
            Err(to_py(py, Error::ReceiveThreadStopped(e)))
        }
        (r, _) => r,
    }
}

/// Fails with `canx.ReceiveThreadError` if `bus`'s receive thread stopped.
pub fn check_receive_thread(py: Python<'_>, bus: &Bus) -> PyResult<()> {
    match bus.thread_error() {
        Some(e) => Err(to_py(py, Error::ReceiveThreadStopped(e))),
        None => Ok(()),
    }
}

/// Test hook (`_canx._virtual_fail_receive("virtual:name")`): every receive
/// on that virtual channel fails from now on, so the receive threads of its
/// buses stop after their error limit (about 1 s). Returns whether the
/// channel had open buses.
#[pyfunction]
pub fn _virtual_fail_receive(channel: &str) -> bool {
    crate::runtime::virtual_bus::fail_receive(channel.strip_prefix("virtual:").unwrap_or(channel))
}

/// Set at interpreter exit (atexit): from then on waits return at once
/// instead of releasing the GIL. CPython kills a thread that tries to take
/// the GIL back during finalization, and doing so inside native code aborts
/// the process; daemon threads parked in `receive()` or a callback pump must
/// therefore be out of native waits before finalization starts.
pub static FINALIZING: AtomicBool = AtomicBool::new(false);

/// Called by `canx`'s atexit handler.
#[pyfunction]
pub fn _begin_shutdown() {
    FINALIZING.store(true, Ordering::SeqCst);
}

pub fn finalizing() -> bool {
    FINALIZING.load(Ordering::Relaxed)
}

/// Threads inside a native wait or send with the GIL released (see
/// [`NativeWait`]); canx's atexit handler waits for this to reach zero
/// after `_begin_shutdown`, and does not wait at all when it is zero.
static NATIVE_WAITS: AtomicUsize = AtomicUsize::new(0);

/// Counts one thread in [`NATIVE_WAITS`] while alive. `enter` returns None
/// (and counts nothing) once finalization began: the caller must then not
/// release the GIL. Counting before checking the flag (both SeqCst) means
/// the atexit handler either sees this thread counted or this thread sees
/// the flag.
pub(crate) struct NativeWait(());

impl NativeWait {
    pub(crate) fn enter() -> Option<NativeWait> {
        NATIVE_WAITS.fetch_add(1, Ordering::SeqCst);
        if FINALIZING.load(Ordering::SeqCst) {
            NATIVE_WAITS.fetch_sub(1, Ordering::SeqCst);
            return None;
        }
        Some(NativeWait(()))
    }
}

impl Drop for NativeWait {
    fn drop(&mut self) {
        NATIVE_WAITS.fetch_sub(1, Ordering::SeqCst);
    }
}

/// How many threads are inside a native wait or send with the GIL released
/// (for canx's atexit handler).
#[pyfunction]
pub fn _native_waits() -> usize {
    NATIVE_WAITS.load(Ordering::SeqCst)
}

/// The one blocking-wait helper of the binding: calls `poll(slice)` with the
/// GIL released in slices of at most 50 ms, checks for signals (Ctrl-C)
/// between slices, and gives up after `timeout` seconds (None, inf or a
/// huge value: never). `closed()` true ends the wait with canio's
/// deinitialized error. `poll(Duration::ZERO)` must not block.
pub fn wait_for<T: Send>(
    py: Python<'_>,
    timeout: Option<f64>,
    closed: impl Fn() -> bool,
    poll: impl Fn(Duration) -> Option<T> + Sync,
) -> PyResult<Option<T>> {
    if let Some(v) = poll(Duration::ZERO) {
        return Ok(Some(v));
    }
    if finalizing() {
        return Ok(None);
    }
    // inf, NaN-free huge values and anything past the clock's range mean "wait forever".
    let deadline =
        timeout.and_then(|t| Duration::try_from_secs_f64(t.max(0.0)).ok()).and_then(|d| Instant::now().checked_add(d));
    loop {
        let slice = match deadline {
            Some(d) => d.saturating_duration_since(Instant::now()).min(SIGNAL_SLICE),
            None => SIGNAL_SLICE,
        };
        if slice.is_zero() {
            return Ok(None);
        }
        let Some(counted) = NativeWait::enter() else {
            return Ok(None);
        };
        let got = py.detach(|| poll(slice));
        drop(counted);
        if let Some(v) = got {
            return Ok(Some(v));
        }
        py.check_signals()?;
        if closed() {
            return Err(deinit_error());
        }
    }
}

/// The readiness descriptor of a queue's [`Notify`] (for asyncio's
/// `loop.add_reader`, see `python/canx/_aio.py`): readable while items are
/// queued, possibly spuriously. Raises `canx.UnsupportedError` where the
/// platform has no such descriptor (callers fall back to polling), OSError
/// when the OS refuses one.
pub(crate) fn notify_fileno(py: Python<'_>, n: std::io::Result<Arc<Notify>>) -> PyResult<i64> {
    match n {
        #[cfg(unix)]
        Ok(n) => Ok(i64::from(n.raw_fd())),
        #[cfg(not(unix))]
        Ok(_) => Err(raise(py, Kind::Unsupported, "no readiness descriptor on this platform")),
        Err(e) if e.kind() == std::io::ErrorKind::Unsupported => {
            Err(raise(py, Kind::Unsupported, format!("no readiness descriptor on this platform: {e}")))
        }
        Err(e) => Err(e.into()),
    }
}

/// A CAN bus: CircuitPython's `canio.CAN`, on a PC.
///
/// `CAN(tx=None, rx=None, baudrate=250000, loopback=False, silent=False,
/// auto_restart=False, *, channel=None, interface=None, fd=False,
/// send_timeout=1.0, data_bitrate=None)`. `data_bitrate` (bit/s): the CAN FD
/// data-phase rate, used with `fd=True` where canx programs the controller
/// (gs_usb: required for FD; slcan: `Yn`, unless the channel option
/// `data_bitrate=` is given); informational on SocketCAN.
/// `tx`/`rx` are board pins and mean nothing on a PC (any objects are
/// accepted), except that a `str` `tx` without `channel` and `interface`
/// is the channel (`CAN("vcan0")`, as python-can's first argument; a board
/// pin is never a string); `channel` picks the bus: `"vcan0"`/`"can0"` (SocketCAN),
/// `"virtual:name"` (the in-process virtual bus) or `"udp_multicast:GROUP"`
/// (shared between processes; `interface="udp_multicast"` alone: python-can's
/// default group). Without `channel` and `interface` the bus is
/// `$CANX_CHANNEL`, else `"virtual:default"`.
///
/// Raises: `ValueError("tx and rx cannot both be None")` (canio) when no pins
/// and no channel are given; ValueError for a `str` `rx` without `channel`
/// (and a `str` `tx`); `canx.ChannelError` for a channel canx does not
/// understand; `canx.InterfaceError` when the OS refuses the interface.
#[pyclass(module = "canx", subclass)]
#[allow(clippy::upper_case_acronyms)] // canio's class name
pub struct CAN {
    bus: Option<Arc<Bus>>,
    channel: String,
    baudrate: u32,
    loopback: bool,
    silent: bool,
    auto_restart: bool,
    send_timeout: f64,
}

impl CAN {
    fn bus(&self) -> PyResult<&Arc<Bus>> {
        self.bus.as_ref().ok_or_else(deinit_error)
    }

    /// The open bus, for engines attached from other classes (deinitialized: canio's ValueError).
    pub(crate) fn bus_arc(&self) -> PyResult<Arc<Bus>> {
        self.bus().cloned()
    }
}

#[pymethods]
impl CAN {
    #[new]
    #[pyo3(signature = (tx=None, rx=None, baudrate=250000, loopback=false, silent=false, auto_restart=false, *, channel=None, interface=None, fd=false, send_timeout=1.0, data_bitrate=None))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        py: Python<'_>,
        tx: Option<&Bound<'_, PyAny>>,
        rx: Option<&Bound<'_, PyAny>>,
        baudrate: u32,
        loopback: bool,
        silent: bool,
        auto_restart: bool,
        channel: Option<String>,
        interface: Option<String>,
        fd: bool,
        send_timeout: f64,
        data_bitrate: Option<u32>,
    ) -> PyResult<Self> {
        if tx.is_none() && rx.is_none() && channel.is_none() && interface.is_none() {
            return Err(PyValueError::new_err("tx and rx cannot both be None"));
        }
        // A pin is never a string: CAN("can0") without channel= means the
        // channel (a bus opened on "virtual:default" instead would look dead).
        let is_str = |o: Option<&Bound<'_, PyAny>>| o.is_some_and(|o| o.is_instance_of::<PyString>());
        let channel = match channel {
            None if interface.is_none() && is_str(tx) => tx.map(|t| t.extract::<String>()).transpose()?,
            None if interface.is_none() && is_str(rx) => {
                return Err(PyValueError::new_err(
                    "rx is a board pin, not a channel: give the bus as CAN(\"can0\") or CAN(channel=\"can0\")",
                ))
            }
            c => c,
        };
        if send_timeout.is_nan() {
            return Err(PyValueError::new_err("send_timeout must be a number of seconds"));
        }
        if baudrate == 0 {
            return Err(PyValueError::new_err("baudrate must be positive"));
        }
        if data_bitrate == Some(0) {
            return Err(PyValueError::new_err("data_bitrate must be positive"));
        }
        let channel = match channel {
            Some(c) => c,
            None if interface.as_deref() == Some("virtual") => "virtual:default".into(),
            None if interface.as_deref() == Some("udp_multicast") => "udp_multicast:".into(),
            None => default_channel(py)?,
        };
        let target = Channel::parse(&channel, interface.as_deref()).map_err(|e| to_py(py, e))?;
        let mut cfg = BusConfig::new(target);
        cfg.receive_own = loopback;
        cfg.fd = fd;
        cfg.silent = silent;
        cfg.auto_restart = auto_restart;
        cfg.bitrate = baudrate;
        cfg.data_bitrate = data_bitrate;
        let bus = py.detach(|| Bus::open(cfg)).map_err(|e| to_py(py, e))?;
        Ok(CAN { bus: Some(Arc::new(bus)), channel, baudrate, loopback, silent, auto_restart, send_timeout })
    }

    /// Sends a `Message` or `RemoteTransmissionRequest` (queued for
    /// transmission). Raises TypeError for anything else (canio's message),
    /// `canx.BusOffError`, `canx.SilentModeError`, `canx.InterfaceDownError`,
    /// `canx.SendTimeoutError`.
    fn send(&self, py: Python<'_>, message: &Bound<'_, PyAny>) -> PyResult<()> {
        let bus = self.bus()?;
        let frame = py_to_frame(message)?;
        // The kernel may push back (ENOBUFS) for up to send_timeout: never
        // with the GIL held, and in slices, so Ctrl-C interrupts a send
        // waiting on a full transmit queue (docs/reliability.md).
        let r = wait_for(
            py,
            Some(self.send_timeout),
            || false,
            |slice| match bus.send(&frame, slice) {
                Err(Error::SendTimeout) => None,
                other => Some(other),
            },
        )?;
        match r {
            Some(r) => r.map_err(|e| to_py(py, e)),
            None => Err(to_py(py, Error::SendTimeout)),
        }
    }

    /// Starts receiving frames that match any of `matches` (a list or tuple
    /// of `Match`; None or empty: everything). `timeout`: seconds that
    /// `receive()` and iteration wait. canx extensions: `error_frames=True`
    /// also delivers `ErrorFrame`s; `queue_size` bounds the queue (frames);
    /// `drop_oldest=True` makes a full queue drop its oldest frame instead of
    /// the arriving one.
    #[pyo3(signature = (matches=None, *, timeout=10.0, error_frames=false, queue_size=DEFAULT_QUEUE, drop_oldest=false))]
    fn listen(
        &self,
        py: Python<'_>,
        matches: Option<&Bound<'_, PyAny>>,
        timeout: f64,
        error_frames: bool,
        queue_size: usize,
        drop_oldest: bool,
    ) -> PyResult<Listener> {
        let bus = self.bus()?;
        check_receive_thread(py, bus)?;
        let mut filters = Vec::new();
        if let Some(m) = matches {
            if !(m.is_instance_of::<PyList>() || m.is_instance_of::<PyTuple>()) {
                return Err(PyTypeError::new_err(format!(
                    "matches must be a list or tuple of Match, not {}",
                    type_name(m)
                )));
            }
            for item in m.try_iter()? {
                let item = item?;
                let mm = item
                    .cast::<Match>()
                    .map_err(|_| PyTypeError::new_err(format!("expected Match, not {}", type_name(&item))))?;
                filters.push(mm.get().filter);
            }
        }
        if queue_size == 0 {
            return Err(PyValueError::new_err("queue_size must be at least 1"));
        }
        let policy = if drop_oldest { DropPolicy::DropOldest } else { DropPolicy::DropNewest };
        let l = bus.listen(ListenerFilter { filters, error_frames }, queue_size, policy);
        Ok(Listener { bus: Some(bus.clone()), inner: l, timeout, notify: OnceLock::new() })
    }

    /// Leaves BUS_OFF (error counters to zero).
    fn restart(&self, py: Python<'_>) -> PyResult<()> {
        self.bus()?.restart().map_err(|e| to_py(py, e))
    }

    /// Releases the bus. Idempotent; afterwards every other member raises ValueError.
    fn deinit(&mut self, py: Python<'_>) {
        if let Some(b) = self.bus.take() {
            py.detach(|| b.shutdown());
        }
    }

    fn __enter__(slf: PyRef<'_, Self>) -> PyResult<PyRef<'_, Self>> {
        slf.bus()?;
        Ok(slf)
    }

    #[pyo3(signature = (*_args))]
    fn __exit__(&mut self, py: Python<'_>, _args: &Bound<'_, PyTuple>) {
        self.deinit(py);
    }

    /// Leave BUS_OFF by itself before the next send.
    #[getter]
    fn auto_restart(&self) -> PyResult<bool> {
        self.bus()?;
        Ok(self.auto_restart)
    }
    #[setter]
    fn set_auto_restart(&mut self, v: bool) -> PyResult<()> {
        self.bus()?.set_auto_restart(v);
        self.auto_restart = v;
        Ok(())
    }
    /// Bit rate in bit/s (informational on a PC: SocketCAN rates are set with `ip link`).
    #[getter]
    fn baudrate(&self) -> PyResult<u32> {
        self.bus()?;
        Ok(self.baudrate)
    }
    #[getter]
    fn loopback(&self) -> PyResult<bool> {
        self.bus()?;
        Ok(self.loopback)
    }
    #[getter]
    fn silent(&self) -> PyResult<bool> {
        self.bus()?;
        Ok(self.silent)
    }
    /// Transmit error count (0-255) as last reported by the controller.
    #[getter]
    fn transmit_error_count(&self) -> PyResult<u8> {
        Ok(self.bus()?.state().tec)
    }
    /// Receive error count (0-255) as last reported by the controller.
    #[getter]
    fn receive_error_count(&self) -> PyResult<u8> {
        Ok(self.bus()?.state().rec)
    }
    /// The controller's `BusState`. A SocketCAN interface that is down, or a
    /// bus whose receive thread stopped, reads BUS_OFF (`link_error` says why).
    #[getter]
    fn state<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let s: BusState = self.bus()?.state().state.into();
        s.singleton(py)
    }
    /// canx: the channel this bus is on (`"vcan0"`, `"virtual:default"`).
    #[getter]
    fn channel(&self) -> PyResult<String> {
        self.bus()?;
        Ok(self.channel.clone())
    }
    /// canx: why the interface is unusable (down or removed, or the receive
    /// thread stopped), else None.
    #[getter]
    fn link_error(&self) -> PyResult<Option<String>> {
        Ok(self.bus()?.state().link_down)
    }
    /// canx: counters as a dict: `received`, `sent`, `backend_dropped`
    /// (kernel overflow or virtual inbox), `listener_dropped` (full listener
    /// queues), `echo_dropped` (frames the bounded local echo between the
    /// engines of this bus lost), `malformed` (input that was not a frame:
    /// garbage `udp_multicast` datagrams), `error_frames`, `receive_thread_stopped` (1 once the receive
    /// thread stopped after repeated backend errors; `link_error` says why),
    /// plus the backend's own counters (slcan: `slcan_malformed_lines`,
    /// `slcan_other_lines`, ...; `Backend::counters`).
    fn stats<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let bus = self.bus()?;
        let s = bus.stats();
        let d = PyDict::new(py);
        d.set_item("received", s.received)?;
        d.set_item("sent", s.sent)?;
        d.set_item("backend_dropped", s.backend_dropped)?;
        d.set_item("listener_dropped", s.listener_dropped)?;
        d.set_item("echo_dropped", s.echo_dropped)?;
        d.set_item("malformed", s.malformed)?;
        d.set_item("error_frames", s.error_frames)?;
        d.set_item("receive_thread_stopped", u8::from(bus.thread_error().is_some()))?;
        for (name, value) in bus.backend().counters() {
            d.set_item(name, value)?;
        }
        Ok(d)
    }
    /// canx, virtual bus only: makes the controller report `state` with the
    /// given error counters, as a real controller would after bus errors.
    /// BUS_OFF stops the node sending and receiving until restart().
    /// Raises `canx.UnsupportedError` on a real interface.
    #[pyo3(signature = (state, *, tec=None, rec=None))]
    fn inject_error_state(&self, py: Python<'_>, state: BusState, tec: Option<u8>, rec: Option<u8>) -> PyResult<()> {
        let (dt, dr) = match state {
            BusState::ERROR_ACTIVE => (0, 0),
            BusState::ERROR_WARNING => (100, 0),
            BusState::ERROR_PASSIVE => (130, 0),
            BusState::BUS_OFF => (255, 0),
        };
        self.bus()?.inject_state(state.into(), tec.unwrap_or(dt), rec.unwrap_or(dr)).map_err(|e| to_py(py, e))
    }

    /// Test hook (virtual bus only; not public API): while `on`, the
    /// controller accepts no frame for transmission, so every send waits its
    /// whole send timeout and fails with `canx.SendTimeoutError`, and an
    /// engine's frames fail after its internal send timeout (100 ms per
    /// batch). Raises `canx.UnsupportedError` on a real interface.
    fn _jam_tx(&self, py: Python<'_>, on: bool) -> PyResult<()> {
        self.bus()?.jam_tx(on).map_err(|e| to_py(py, e))
    }

    /// Test hook (every backend; not public API, see `canx.pytest_plugin`'s
    /// `can_faults`): the next `count` frames matching `(id & mask) == (frame
    /// id & mask)` (and `extended`, if not None) that this bus receives
    /// (`direction` "rx": never reach its listeners or engines) or sends
    /// ("tx": never reach the interface; the sender sees success) are
    /// dropped (`delay` None) or delayed by `delay` seconds (0..=60).
    /// Returns the rule's id. Raises ValueError for a bad direction, count or
    /// delay, `canx.UnsupportedError` beyond 64 rules.
    #[pyo3(signature = (direction, count, *, id=0, mask=0, extended=None, delay=None))]
    #[allow(clippy::too_many_arguments)]
    fn _add_fault(
        &self,
        py: Python<'_>,
        direction: &str,
        count: u64,
        id: u32,
        mask: u32,
        extended: Option<bool>,
        delay: Option<f64>,
    ) -> PyResult<u64> {
        use crate::runtime::{Direction, FaultAction, FaultMatch};
        let direction = match direction {
            "rx" => Direction::Rx,
            "tx" => Direction::Tx,
            other => return Err(PyValueError::new_err(format!("direction must be 'rx' or 'tx', not {other:?}"))),
        };
        if count == 0 {
            return Err(PyValueError::new_err("count must be at least 1"));
        }
        let action = match delay {
            None => FaultAction::Drop,
            Some(d) if d.is_finite() && (0.0..=60.0).contains(&d) => FaultAction::Delay(Duration::from_secs_f64(d)),
            Some(d) => return Err(PyValueError::new_err(format!("delay must be 0..=60 seconds, not {d}"))),
        };
        self.bus()?.add_fault(direction, FaultMatch { id, mask, extended }, action, count).map_err(|e| to_py(py, e))
    }

    /// Test hook: `(taken, remaining)` of a fault rule (also after it
    /// finished), or None for an unknown id.
    fn _fault_status(&self, rule: u64) -> PyResult<Option<(u64, u64)>> {
        Ok(self.bus()?.fault_status(rule).map(|s| (s.taken, s.remaining)))
    }

    /// Test hook: removes every fault rule; delayed frames still held go
    /// out at once (`flush`) or are discarded.
    #[pyo3(signature = (flush=true))]
    fn _clear_faults(&self, flush: bool) -> PyResult<()> {
        self.bus()?.clear_faults(flush);
        Ok(())
    }

    /// Test hook: {"dropped", "delayed", "held_overflow", "late_send_failed"}.
    fn _fault_counts<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let c = self.bus()?.fault_counts();
        let d = PyDict::new(py);
        d.set_item("dropped", c.dropped)?;
        d.set_item("delayed", c.delayed)?;
        d.set_item("held_overflow", c.held_overflow)?;
        d.set_item("late_send_failed", c.late_send_failed)?;
        Ok(d)
    }

    fn __repr__(&self) -> String {
        match &self.bus {
            Some(_) => format!("<canx.CAN channel={:?} baudrate={}>", self.channel, self.baudrate),
            None => "<canx.CAN deinitialized>".into(),
        }
    }
}

impl Drop for CAN {
    fn drop(&mut self) {
        if let Some(b) = self.bus.take() {
            b.shutdown();
        }
    }
}

/// Receives frames for a `CAN.listen()` call. Not constructible directly.
#[pyclass(module = "canx")]
pub struct Listener {
    bus: Option<Arc<Bus>>,
    inner: Arc<NativeListener>,
    timeout: f64,
    /// Made by the first `_fileno()` (asyncio).
    notify: OnceLock<Arc<Notify>>,
}

impl Listener {
    fn live(&self) -> PyResult<&Arc<Bus>> {
        match &self.bus {
            Some(b) if !b.is_shut_down() => Ok(b),
            _ => Err(deinit_error()),
        }
    }
}

#[pymethods]
impl Listener {
    #[new]
    fn new() -> PyResult<Self> {
        Err(PyTypeError::new_err("can't create 'Listener' instances"))
    }

    /// The next `Message` or `RemoteTransmissionRequest` (or `ErrorFrame`),
    /// or None after `timeout` seconds. Returns at once if one is queued.
    /// Ctrl-C interrupts the wait.
    fn receive(&self, py: Python<'_>) -> PyResult<Option<Py<PyAny>>> {
        let bus = self.live()?;
        match wait_frame(py, &self.inner, bus, Some(self.timeout))? {
            Some(f) => Ok(Some(rx_to_py(py, &f)?)),
            None => Ok(None),
        }
    }

    /// canx: up to `max` frames in one call: waits up to `timeout` seconds
    /// (default: the listener's) for the first, then takes what is queued.
    #[pyo3(signature = (max=256, timeout=None))]
    fn receive_many<'py>(&self, py: Python<'py>, max: usize, timeout: Option<f64>) -> PyResult<Bound<'py, PyList>> {
        let bus = self.live()?;
        let out = PyList::empty(py);
        if max == 0 {
            return Ok(out);
        }
        if let Some(f) = wait_frame(py, &self.inner, bus, Some(timeout.unwrap_or(self.timeout)))? {
            out.append(rx_to_py(py, &f)?)?;
            while out.len() < max {
                match self.inner.try_recv() {
                    Some(f) => out.append(rx_to_py(py, &f)?)?,
                    None => break,
                }
            }
        }
        Ok(out)
    }

    /// canx internal (asyncio): the next frame if one is queued, else None;
    /// never waits. Raises canio's ValueError once deinitialized.
    fn _receive_nowait(&self, py: Python<'_>) -> PyResult<Option<Py<PyAny>>> {
        self.live()?;
        let f = self.inner.try_recv();
        self.inner.rearm();
        f.map(|f| rx_to_py(py, &f)).transpose()
    }

    /// canx internal (asyncio): a descriptor readable while frames are
    /// queued (and once the listener is deinitialized); readiness may be
    /// spurious. Raises `canx.UnsupportedError` where the platform has none.
    fn _fileno(&self, py: Python<'_>) -> PyResult<i64> {
        self.live()?;
        let n = match self.notify.get() {
            Some(n) => Ok(n.clone()),
            None => Notify::new().map(|n| {
                let n = self.notify.get_or_init(|| Arc::new(n)).clone();
                self.inner.set_notify(n.clone());
                n
            }),
        };
        notify_fileno(py, n)
    }

    /// How many frames are queued.
    fn in_waiting(&self) -> PyResult<usize> {
        self.live()?;
        Ok(self.inner.len())
    }

    /// Seconds `receive()` and iteration wait for a frame.
    #[getter]
    fn timeout(&self) -> PyResult<f64> {
        self.live()?;
        Ok(self.timeout)
    }
    #[setter]
    fn set_timeout(&mut self, t: f64) -> PyResult<()> {
        self.live()?;
        if t.is_nan() || t < 0.0 {
            return Err(PyValueError::new_err("timeout must be >= 0"));
        }
        self.timeout = t;
        Ok(())
    }

    /// canx: frames dropped because this listener's queue was full.
    #[getter]
    fn dropped(&self) -> u64 {
        self.inner.dropped()
    }

    fn __iter__(slf: PyRef<'_, Self>) -> PyResult<PyRef<'_, Self>> {
        slf.live()?;
        Ok(slf)
    }

    fn __next__(&self, py: Python<'_>) -> PyResult<Option<Py<PyAny>>> {
        // None from __next__ ends iteration (StopIteration); a later iter() waits again.
        self.receive(py)
    }

    fn __aiter__(slf: &Bound<'_, Self>) -> PyResult<Py<PyAny>> {
        let py = slf.py();
        slf.borrow().live()?;
        Ok(py.import("canx._aio")?.getattr("ListenerAsyncIterator")?.call1((slf,))?.unbind())
    }

    /// Stops receiving. Idempotent.
    fn deinit(&mut self) {
        if let Some(b) = self.bus.take() {
            b.unlisten(&self.inner);
        }
    }

    fn __enter__(slf: PyRef<'_, Self>) -> PyResult<PyRef<'_, Self>> {
        slf.live()?;
        Ok(slf)
    }

    #[pyo3(signature = (*_args))]
    fn __exit__(&mut self, _args: &Bound<'_, PyTuple>) {
        self.deinit();
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        self.deinit();
    }
}
