//! Native CAN-X endpoint (`runtime::drivers::canx_proto`), wrapped by
//! `python/canx/canxproto.py`.
//!
//! Events come out of `next_event(timeout)` as tuples:
//! `("message", direction, device, stream, priority, msg_id, body, timestamp)`,
//! `("error", direction, device, stream, msg_id_or_None, reason, text)`
//! where `direction` is the identifier bit (0 = to the device, 1 = from the
//! device) and `reason` a snake_case name (`crc_mismatch`, `timeout`, ...).

use std::sync::Arc;
use std::time::Duration as StdDuration;

use canx_core::canx_proto::{Direction, Key};
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::PyDict;

use super::can::{notify_fileno, wait_for, CAN};
use super::errors::{deinit_error, raise, to_py, Kind};
use super::events::{CanxErrorEvent, CanxMessageEvent, Data};
use super::messages::buffer_bytes;
use super::reliable::{seconds, Attachment};
use crate::runtime::drivers::canx_proto::{
    reason_name, CanxConfig, CanxDriver, CanxEvent, CanxRefused, MAX_OPEN_LIMIT,
};
use crate::runtime::EventQueue;

fn direction(bit: u8) -> PyResult<Direction> {
    match bit {
        0 => Ok(Direction::ToDevice),
        1 => Ok(Direction::FromDevice),
        _ => Err(PyValueError::new_err("direction must be 0 (to the device) or 1 (from the device)")),
    }
}

fn bit(d: Direction) -> u8 {
    match d {
        Direction::ToDevice => 0,
        Direction::FromDevice => 1,
    }
}

/// The event as a frozen `canx._canx.*Event` (see `events.rs`).
fn event_to_py(py: Python<'_>, e: CanxEvent) -> PyResult<Py<PyAny>> {
    let t = match e {
        CanxEvent::Message { key, priority, msg_id, body, timestamp } => CanxMessageEvent {
            direction: bit(key.direction()),
            device: key.device(),
            stream: key.stream(),
            priority,
            msg_id,
            body: Data(body),
            timestamp,
        }
        .into_pyobject(py)?
        .into_any(),
        CanxEvent::Error(e) => CanxErrorEvent {
            direction: bit(e.key.direction()),
            device: e.key.device(),
            stream: e.key.stream(),
            msg_id: e.msg_id,
            reason: reason_name(&e.reason).to_string(),
            text: e.to_string(),
        }
        .into_pyobject(py)?
        .into_any(),
    };
    Ok(t.unbind())
}

/// A CAN-X endpoint engine (see `canx.canxproto.Endpoint`).
///
/// `NativeCanxEndpoint(can, *, direction=0, receive_direction=1, device=None,
/// max_open=16, reassembly_timeout=1.0, max_waiting=256, queue_size=4096)`:
/// `direction` is the bit of the frames it sends, `receive_direction` the
/// bit of those it accepts (None: both), `device` the only device id it
/// accepts (None: all).
#[pyclass(module = "canx._canx", frozen)]
pub struct NativeCanxEndpoint {
    att: Attachment<CanxDriver>,
    events: Arc<EventQueue<CanxEvent>>,
    direction: Direction,
}

#[pymethods]
impl NativeCanxEndpoint {
    #[new]
    #[pyo3(signature = (can, *, direction=0, receive_direction=Some(1), device=None, max_open=16, reassembly_timeout=1.0, max_waiting=256, queue_size=4096))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        can: &Bound<'_, CAN>,
        direction: u8,
        receive_direction: Option<u8>,
        device: Option<u8>,
        max_open: usize,
        reassembly_timeout: f64,
        max_waiting: usize,
        queue_size: usize,
    ) -> PyResult<Self> {
        if !(1..=MAX_OPEN_LIMIT).contains(&max_open) {
            return Err(PyValueError::new_err(format!("max_open must be 1-{MAX_OPEN_LIMIT}")));
        }
        let config = CanxConfig {
            receive_direction: receive_direction.map(self::direction).transpose()?,
            device,
            max_open,
            reassembly_timeout: seconds("reassembly_timeout", reassembly_timeout)?,
            max_waiting,
            queue_size,
        };
        let driver = CanxDriver::new(config);
        let events = driver.events();
        Ok(NativeCanxEndpoint { att: Attachment::new(can, driver)?, events, direction: self::direction(direction)? })
    }

    /// Queues one message for (this endpoint's direction, `device`,
    /// `stream`). Blocks (GIL released) up to `timeout` s while
    /// `max_waiting` messages wait, then raises `canx.SendTimeoutError`.
    /// ValueError: stream above 1023, priority above 3, body above 2032 bytes.
    #[pyo3(signature = (device, stream, msg_id, body, priority=0, timeout=Some(1.0)))]
    #[allow(clippy::too_many_arguments)]
    fn send(
        &self,
        py: Python<'_>,
        device: u8,
        stream: u16,
        msg_id: u8,
        body: &Bound<'_, PyAny>,
        priority: u8,
        timeout: Option<f64>,
    ) -> PyResult<()> {
        let key = Key::new(self.direction, device, stream).map_err(|e| PyValueError::new_err(e.to_string()))?;
        let body = buffer_bytes(body)?;
        loop {
            match self.att.with(py, |d| d.send(priority, key, msg_id, &body))? {
                Ok(()) => return Ok(()),
                Err(r @ CanxRefused::Invalid(_)) => return Err(to_py(py, r)),
                Err(CanxRefused::Full) => {
                    let engine = self.att.engine().clone();
                    let room = wait_for(
                        py,
                        timeout,
                        || self.att.is_closed(),
                        |slice| {
                            // The zero-slice poll runs with the GIL held: the
                            // engine is only locked without it.
                            if !slice.is_zero() && !engine.lock().is_full() {
                                return Some(());
                            }
                            std::thread::sleep(slice.min(StdDuration::from_micros(500)));
                            None
                        },
                    )?;
                    if room.is_none() {
                        return Err(raise(
                            py,
                            Kind::SendTimeout,
                            "CAN-X send timed out: the endpoint's transmit queue stayed full",
                        ));
                    }
                }
            }
        }
    }

    /// Waits up to `timeout` s (None: forever) until every queued message
    /// has left; returns whether it did.
    #[pyo3(signature = (timeout=None))]
    fn flush(&self, py: Python<'_>, timeout: Option<f64>) -> PyResult<bool> {
        if self.att.is_closed() {
            return Err(deinit_error());
        }
        let engine = self.att.engine().clone();
        let done = wait_for(
            py,
            timeout,
            || self.att.is_closed(),
            |slice| {
                // The zero-slice poll runs with the GIL held: skip it.
                if !slice.is_zero() && engine.lock().unsent() == 0 {
                    return Some(());
                }
                std::thread::sleep(slice.min(StdDuration::from_millis(1)));
                None
            },
        )?;
        Ok(done.is_some())
    }

    #[pyo3(signature = (timeout=None))]
    fn next_event(&self, py: Python<'_>, timeout: Option<f64>) -> PyResult<Option<Py<PyAny>>> {
        let q = &self.events;
        let got = match q.try_recv() {
            Some(e) => Some(e),
            None if self.att.is_closed() => return Err(deinit_error()),
            None => wait_for(
                py,
                timeout,
                || self.att.is_closed(),
                |slice| if slice.is_zero() { q.try_recv() } else { q.recv_timeout(slice) },
            )?,
        };
        got.map(|e| event_to_py(py, e)).transpose()
    }

    fn in_waiting(&self) -> usize {
        self.events.len()
    }

    fn stats<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let (s, r, d) = self.att.peek(py, |e| e.stats());
        let open = self.att.peek(py, |e| e.open_envelopes());
        let out = PyDict::new(py);
        out.set_item("messages_queued", s.queued)?;
        out.set_item("messages_sent", s.sent)?;
        out.set_item("frames_sent", s.frames)?;
        out.set_item("keys_evicted", s.keys_evicted)?;
        out.set_item("waiting", d.waiting)?;
        out.set_item("send_failed", d.send_failed)?;
        out.set_item("frames_received", r.frames)?;
        out.set_item("frames_ignored", r.ignored)?;
        out.set_item("messages_received", r.delivered)?;
        out.set_item("errors", r.errors)?;
        out.set_item("refused_open", r.refused)?;
        out.set_item("open_envelopes", open)?;
        out.set_item("events_dropped", u64::from(r.events_dropped) + self.events.dropped())?;
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
