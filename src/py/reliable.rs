//! Native classes for reliable delivery (`runtime::drivers::reliable`):
//! `NativeReliableSender`, `NativeReliableReceiver`, `NativeGuideSender`,
//! `NativeGuideListener`. `python/canx/reliable.py` wraps them with futures,
//! asyncio and callbacks; these classes only send, wait for events with the
//! GIL released, and report statistics.
//!
//! Events come out of `next_event(timeout)` as tuples:
//! `("outcome", ticket, delivered, tries, count)`,
//! `("message", id, extended, seq, data, timestamp)`,
//! `("guide", count, now_ms, timestamp)`,
//! `("malformed", id, extended, reason)`.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use canx_core::frame::{id_is_extended, id_raw, make_id};
use canx_core::reliable::{
    AckMapping, CompatListenerConfig, CompatSenderConfig, ReliableSenderConfig, RetryPolicy, Stats,
};
use canx_core::Id;
use parking_lot::Mutex;
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::PyDict;

use super::can::{notify_fileno, wait_for, CAN};
use super::errors::{deinit_error, to_py};
use super::events::{Data, GuideMessageEvent, MalformedEvent, ReliableMessageEvent, ReliableOutcomeEvent};
use super::messages::{buffer_bytes, Match};
use crate::runtime::drivers::reliable::{
    guide_policy, Event, GuideListenerDriver, GuideSenderDriver, Outstanding, ReceiverDriver, Refused,
    ReliableDriverStats, SenderDriver,
};
use crate::runtime::engine::{Driven, EngineHandle, EngineRef};
use crate::runtime::{Bus, EventQueue};

/// Runs `f` with the GIL released when this thread holds it (drop paths run
/// with or without it); while the interpreter shuts down `f` just runs.
pub(crate) fn released(f: impl FnOnce() + Send) {
    let mut f = Some(f);
    let _ = Python::try_attach(|py| {
        py.detach(|| {
            if let Some(f) = f.take() {
                f()
            }
        })
    });
    if let Some(f) = f {
        f()
    }
}

/// An engine attached to a bus, detached on `close()` or drop. The engine
/// lock is only ever taken with the GIL released: the receive thread holds
/// it while a send waits for room in the socket.
pub(crate) struct Attachment<D: Driven + 'static> {
    /// The Python `CAN` object: keeps it (and so the bus) alive while the engine is.
    _can: Py<CAN>,
    bus: Arc<Bus>,
    engine: Arc<Mutex<D>>,
    handle: EngineHandle,
    closed: AtomicBool,
}

impl<D: Driven + 'static> Attachment<D> {
    pub(crate) fn new(can: &Bound<'_, CAN>, driver: D) -> PyResult<Self> {
        let bus = can.borrow().bus_arc()?;
        let engine = Arc::new(Mutex::new(driver));
        // attach() reads every engine's filters (their locks): without the GIL.
        let handle = can.py().detach(|| bus.attach(engine.clone() as EngineRef));
        Ok(Attachment { _can: can.clone().unbind(), bus, engine, handle, closed: AtomicBool::new(false) })
    }
    /// `true` after `close()` or when the bus was shut down (`CAN.deinit()`).
    pub(crate) fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Relaxed) || self.bus.is_shut_down()
    }
    /// Runs `op` on the engine, then sends what it queued and wakes the
    /// receive thread, all without the GIL (the send may wait for room in
    /// the socket).
    pub(crate) fn with<R: Send>(&self, py: Python<'_>, op: impl FnOnce(&mut D) -> R + Send) -> PyResult<R> {
        if self.is_closed() {
            return Err(deinit_error());
        }
        let (engine, handle) = (&self.engine, &self.handle);
        Ok(py.detach(|| {
            let r = op(&mut engine.lock());
            handle.kick();
            r
        }))
    }
    /// Reads the engine (GIL released) without waking anyone; works after
    /// close too.
    pub(crate) fn peek<R: Send>(&self, py: Python<'_>, op: impl FnOnce(&D) -> R + Send) -> R {
        let engine = &self.engine;
        py.detach(|| op(&engine.lock()))
    }
    pub(crate) fn engine(&self) -> &Arc<Mutex<D>> {
        &self.engine
    }
    /// Detaches the engine (once); `detach` reads the other engines'
    /// filters, so the GIL is released.
    pub(crate) fn close(&self) {
        if !self.closed.swap(true, Ordering::Relaxed) {
            let (bus, handle) = (&self.bus, &self.handle);
            released(|| bus.detach(handle));
        }
    }
}

impl<D: Driven + 'static> Drop for Attachment<D> {
    fn drop(&mut self) {
        self.close();
    }
}

/// Seconds (> 0, finite) as a core duration. `what` names the argument.
pub(crate) fn seconds(what: &str, t: f64) -> PyResult<canx_core::Duration> {
    if !t.is_finite() || t <= 0.0 || t > 86_400.0 {
        return Err(PyValueError::new_err(format!("{what} must be a positive number of seconds (at most one day)")));
    }
    Ok(canx_core::Duration::from_micros((t * 1e6).round().max(1.0) as u64))
}

fn py_id(raw: i64, extended: bool) -> PyResult<Id> {
    u32::try_from(raw)
        .ok()
        .and_then(|r| make_id(r, extended).ok())
        .ok_or_else(|| PyValueError::new_err("id out of range"))
}

fn ack_mapping(ack_offset: u32, ack_id: Option<i64>, ack_extended: bool) -> PyResult<AckMapping> {
    match ack_id {
        Some(raw) => Ok(AckMapping::Fixed(py_id(raw, ack_extended)?)),
        None if ack_offset == 0 => Err(PyValueError::new_err("ack_offset must be at least 1")),
        None => Ok(AckMapping::Offset(ack_offset)),
    }
}

/// Through the one table (`errors.rs`).
fn refused(py: Python<'_>, r: Refused) -> PyErr {
    to_py(py, r)
}

/// The event as a frozen `canx._canx.*Event` (see `events.rs`).
fn event_to_py(py: Python<'_>, e: Event) -> PyResult<Py<PyAny>> {
    let t = match e {
        Event::Outcome { ticket, delivered, tries, count } => {
            ReliableOutcomeEvent { ticket, delivered, tries, count }.into_pyobject(py)?.into_any()
        }
        Event::Message { id, seq, data, timestamp } => {
            let (id, extended) = (id_raw(id), id_is_extended(id));
            ReliableMessageEvent { id, extended, seq, data: Data(data), timestamp }.into_pyobject(py)?.into_any()
        }
        Event::GuideMessage { count, now_ms, timestamp } => {
            GuideMessageEvent { count, now_ms, timestamp }.into_pyobject(py)?.into_any()
        }
        Event::Malformed { id, reason } => {
            MalformedEvent { id: id_raw(id), extended: id_is_extended(id), reason }.into_pyobject(py)?.into_any()
        }
    };
    Ok(t.unbind())
}

/// Waits up to `timeout` s (None: forever) for an event, GIL released.
fn next_event<D: Driven + 'static>(
    py: Python<'_>,
    att: &Attachment<D>,
    q: &EventQueue<Event>,
    outstanding: Option<&Outstanding>,
    timeout: Option<f64>,
) -> PyResult<Option<Py<PyAny>>> {
    let got = match q.try_recv() {
        Some(e) => Some(e),
        None if att.is_closed() => return Err(deinit_error()),
        None => wait_for(
            py,
            timeout,
            || att.is_closed(),
            |slice| if slice.is_zero() { q.try_recv() } else { q.recv_timeout(slice) },
        )?,
    };
    match got {
        Some(e) => {
            if let (Event::Outcome { .. }, Some(o)) = (&e, outstanding) {
                o.taken();
            }
            Ok(Some(event_to_py(py, e)?))
        }
        None => Ok(None),
    }
}

fn stats_dict<'py>(
    py: Python<'py>,
    s: Stats,
    d: ReliableDriverStats,
    q: &EventQueue<Event>,
    sender: bool,
) -> PyResult<Bound<'py, PyDict>> {
    let out = PyDict::new(py);
    if sender {
        out.set_item("sent", s.sent)?;
        out.set_item("resent", s.resent)?;
        out.set_item("acknowledged", s.acknowledged)?;
        out.set_item("failed", s.failed)?;
        out.set_item("stale_acks", s.stale_acks)?;
        out.set_item("waiting", d.waiting)?;
    } else {
        out.set_item("delivered", s.delivered)?;
        out.set_item("duplicates_dropped", s.duplicates_dropped)?;
        out.set_item("ack_sent", s.ack_sent)?;
        out.set_item("dropped_no_room", u64::from(s.dropped_no_room) + d.app_queue_full)?;
        out.set_item("peers_evicted", s.peers_evicted)?;
    }
    out.set_item("malformed", s.malformed)?;
    out.set_item("send_failed", d.send_failed)?;
    out.set_item("events_dropped", q.dropped())?;
    Ok(out)
}

// ------------------------------------------------------------------ general sender

/// General-mode reliable sender engine (see `canx.reliable.Sender`).
///
/// `NativeReliableSender(can, *, timeout=0.1, retries=3, backoff=2,
/// max_timeout=1.0, ack_offset=1, ack_id=None, ack_extended=False,
/// initial_seq=0, max_outstanding=1024)`. Times in seconds; `retries=None`
/// resends forever; `backoff` is the integer factor of each further wait.
#[pyclass(module = "canx._canx", frozen)]
pub struct NativeReliableSender {
    att: Attachment<SenderDriver>,
    events: Arc<EventQueue<Event>>,
    outstanding: Arc<Outstanding>,
}

#[pymethods]
impl NativeReliableSender {
    #[new]
    #[pyo3(signature = (can, *, timeout=0.1, retries=Some(3), backoff=2, max_timeout=1.0, ack_offset=1, ack_id=None, ack_extended=false, initial_seq=0, max_outstanding=1024))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        can: &Bound<'_, CAN>,
        timeout: f64,
        retries: Option<u32>,
        backoff: u32,
        max_timeout: f64,
        ack_offset: u32,
        ack_id: Option<i64>,
        ack_extended: bool,
        initial_seq: u8,
        max_outstanding: usize,
    ) -> PyResult<Self> {
        if backoff == 0 {
            return Err(PyValueError::new_err("backoff must be at least 1"));
        }
        let policy = RetryPolicy {
            timeout: seconds("timeout", timeout)?,
            retries,
            multiplier: backoff,
            max_timeout: seconds("max_timeout", max_timeout.max(timeout))?,
        };
        let config = ReliableSenderConfig { ack: ack_mapping(ack_offset, ack_id, ack_extended)?, policy, initial_seq };
        let driver = SenderDriver::new(config, max_outstanding);
        let (events, outstanding) = (driver.events(), driver.outstanding());
        Ok(NativeReliableSender { att: Attachment::new(can, driver)?, events, outstanding })
    }

    /// Accepts `data` (0..=7 bytes) for data id `id`; returns the ticket its
    /// outcome event carries. Raises ValueError (bad id, too long, no ACK
    /// id), `canx.LimitError` (max_outstanding, 1024 data ids).
    #[pyo3(signature = (id, data, extended=false))]
    fn send(&self, py: Python<'_>, id: i64, data: &Bound<'_, PyAny>, extended: bool) -> PyResult<u64> {
        let id = py_id(id, extended)?;
        let data = buffer_bytes(data)?;
        self.att.with(py, |d| d.send(id, &data))?.map_err(|r| refused(py, r))
    }

    #[pyo3(signature = (timeout=None))]
    fn next_event(&self, py: Python<'_>, timeout: Option<f64>) -> PyResult<Option<Py<PyAny>>> {
        next_event(py, &self.att, &self.events, Some(&self.outstanding), timeout)
    }

    /// Messages accepted whose outcome has not been taken yet.
    fn outstanding(&self) -> usize {
        self.outstanding.get()
    }

    fn stats<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let (s, d) = self.att.peek(py, |e| e.stats());
        let out = stats_dict(py, s, d, &self.events, true)?;
        out.set_item("in_flight", self.att.peek(py, |e| e.pending()) - d.waiting)?;
        Ok(out)
    }

    fn close(&self) {
        self.att.close();
        self.events.wake();
    }

    /// The event queue's readiness descriptor (asyncio `add_reader`):
    /// readable while events are queued and after `close()`; may be
    /// spuriously readable. `canx.UnsupportedError` where the platform has none.
    fn fileno(&self, py: Python<'_>) -> PyResult<i64> {
        notify_fileno(py, self.events.notify())
    }

    #[getter]
    fn closed(&self) -> bool {
        self.att.is_closed()
    }
}

// ------------------------------------------------------------------ general receiver

/// General-mode reliable receiver engine: ACKs in the receive thread.
///
/// `NativeReliableReceiver(can, matches, *, ack_offset=1, ack_id=None,
/// ack_extended=False, queue_size=4096)`.
#[pyclass(module = "canx._canx", frozen)]
pub struct NativeReliableReceiver {
    att: Attachment<ReceiverDriver>,
    events: Arc<EventQueue<Event>>,
}

#[pymethods]
impl NativeReliableReceiver {
    #[new]
    #[pyo3(signature = (can, matches, *, ack_offset=1, ack_id=None, ack_extended=false, queue_size=4096))]
    fn new(
        can: &Bound<'_, CAN>,
        matches: Vec<PyRef<'_, Match>>,
        ack_offset: u32,
        ack_id: Option<i64>,
        ack_extended: bool,
        queue_size: usize,
    ) -> PyResult<Self> {
        if matches.is_empty() {
            return Err(PyValueError::new_err("a receiver needs at least one Match for its data ids"));
        }
        let filters: Vec<_> = matches.iter().map(|m| m.filter).collect();
        let driver = ReceiverDriver::new(&filters, ack_mapping(ack_offset, ack_id, ack_extended)?, queue_size);
        let events = driver.events();
        Ok(NativeReliableReceiver { att: Attachment::new(can, driver)?, events })
    }

    #[pyo3(signature = (timeout=None))]
    fn next_event(&self, py: Python<'_>, timeout: Option<f64>) -> PyResult<Option<Py<PyAny>>> {
        next_event(py, &self.att, &self.events, None, timeout)
    }

    /// Events waiting to be taken.
    fn in_waiting(&self) -> usize {
        self.events.len()
    }

    fn stats<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let (s, d) = self.att.peek(py, |e| e.stats());
        stats_dict(py, s, d, &self.events, false)
    }

    fn close(&self) {
        self.att.close();
        self.events.wake();
    }

    /// The event queue's readiness descriptor (asyncio `add_reader`):
    /// readable while events are queued and after `close()`; may be
    /// spuriously readable. `canx.UnsupportedError` where the platform has none.
    fn fileno(&self, py: Python<'_>) -> PyResult<i64> {
        notify_fileno(py, self.events.notify())
    }

    #[getter]
    fn closed(&self) -> bool {
        self.att.is_closed()
    }
}

// ------------------------------------------------------------------ guide sender

/// The canio guide's `sender-ack` as an engine (see `canx.reliable.GuideSender`).
///
/// `NativeGuideSender(can, *, data_id=0x408, ack_id=0x409, extended=False,
/// timeout=0.1, retries=None, first_count=0, max_outstanding=1024)`.
#[pyclass(module = "canx._canx", frozen)]
pub struct NativeGuideSender {
    att: Attachment<GuideSenderDriver>,
    events: Arc<EventQueue<Event>>,
    outstanding: Arc<Outstanding>,
}

#[pymethods]
impl NativeGuideSender {
    #[new]
    #[pyo3(signature = (can, *, data_id=0x408, ack_id=0x409, extended=false, timeout=0.1, retries=None, first_count=0, max_outstanding=1024))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        can: &Bound<'_, CAN>,
        data_id: i64,
        ack_id: i64,
        extended: bool,
        timeout: f64,
        retries: Option<u32>,
        first_count: u32,
        max_outstanding: usize,
    ) -> PyResult<Self> {
        let config = CompatSenderConfig {
            data_id: py_id(data_id, extended)?,
            ack_id: py_id(ack_id, extended)?,
            policy: guide_policy(seconds("timeout", timeout)?, retries),
        };
        let driver = GuideSenderDriver::new(config, first_count, max_outstanding);
        let (events, outstanding) = (driver.events(), driver.outstanding());
        Ok(NativeGuideSender { att: Attachment::new(can, driver)?, events, outstanding })
    }

    /// Accepts one message `struct.pack("<II", count, now_ms)`; `count`
    /// defaults to the previous one + 1. Returns `(ticket, count)`.
    #[pyo3(signature = (now_ms, count=None))]
    fn send(&self, py: Python<'_>, now_ms: u32, count: Option<u32>) -> PyResult<(u64, u32)> {
        self.att.with(py, |d| d.send(count, now_ms))?.map_err(|r| refused(py, r))
    }

    #[pyo3(signature = (timeout=None))]
    fn next_event(&self, py: Python<'_>, timeout: Option<f64>) -> PyResult<Option<Py<PyAny>>> {
        next_event(py, &self.att, &self.events, Some(&self.outstanding), timeout)
    }

    fn outstanding(&self) -> usize {
        self.outstanding.get()
    }

    fn stats<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let (s, d) = self.att.peek(py, |e| e.stats());
        stats_dict(py, s, d, &self.events, true)
    }

    fn close(&self) {
        self.att.close();
        self.events.wake();
    }

    /// The event queue's readiness descriptor (asyncio `add_reader`):
    /// readable while events are queued and after `close()`; may be
    /// spuriously readable. `canx.UnsupportedError` where the platform has none.
    fn fileno(&self, py: Python<'_>) -> PyResult<i64> {
        notify_fileno(py, self.events.notify())
    }

    #[getter]
    fn closed(&self) -> bool {
        self.att.is_closed()
    }
}

// ------------------------------------------------------------------ guide listener

/// The canio guide's `listener-ack` as an engine: ACKs in the receive thread.
///
/// `NativeGuideListener(can, *, data_id=0x408, ack_id=0x409, extended=False, queue_size=4096)`.
#[pyclass(module = "canx._canx", frozen)]
pub struct NativeGuideListener {
    att: Attachment<GuideListenerDriver>,
    events: Arc<EventQueue<Event>>,
}

#[pymethods]
impl NativeGuideListener {
    #[new]
    #[pyo3(signature = (can, *, data_id=0x408, ack_id=0x409, extended=false, queue_size=4096))]
    fn new(can: &Bound<'_, CAN>, data_id: i64, ack_id: i64, extended: bool, queue_size: usize) -> PyResult<Self> {
        let config = CompatListenerConfig { data_id: py_id(data_id, extended)?, ack_id: py_id(ack_id, extended)? };
        let driver = GuideListenerDriver::new(config, queue_size);
        let events = driver.events();
        Ok(NativeGuideListener { att: Attachment::new(can, driver)?, events })
    }

    #[pyo3(signature = (timeout=None))]
    fn next_event(&self, py: Python<'_>, timeout: Option<f64>) -> PyResult<Option<Py<PyAny>>> {
        next_event(py, &self.att, &self.events, None, timeout)
    }

    fn in_waiting(&self) -> usize {
        self.events.len()
    }

    fn stats<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let (s, d) = self.att.peek(py, |e| e.stats());
        stats_dict(py, s, d, &self.events, false)
    }

    fn close(&self) {
        self.att.close();
        self.events.wake();
    }

    /// The event queue's readiness descriptor (asyncio `add_reader`):
    /// readable while events are queued and after `close()`; may be
    /// spuriously readable. `canx.UnsupportedError` where the platform has none.
    fn fileno(&self, py: Python<'_>) -> PyResult<i64> {
        notify_fileno(py, self.events.notify())
    }

    #[getter]
    fn closed(&self) -> bool {
        self.att.is_closed()
    }
}
