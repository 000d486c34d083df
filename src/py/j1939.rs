//! The native side of `canx.j1939`: `J1939Ecu` (one controller application
//! driven by the bus's receive thread, see `runtime::drivers::j1939`) and the
//! J1939-71/-73 codecs. The friendly API is `python/canx/j1939.py`.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use canx_core::j1939::dm::{emit_dm, DmMessage, Dtc, Lamps};
use canx_core::j1939::request::AckControl;
use canx_core::j1939::{codecs, EcuConfig, Name, Pgn};
use parking_lot::Mutex;
use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict};

use super::can::{notify_fileno, wait_for, CAN};
use super::errors::{deinit_error, to_py};
use super::events::{
    Data, J1939AbortedEvent, J1939CannotClaimEvent, J1939ClaimedEvent, J1939LostEvent, J1939MessageEvent,
    J1939RequestDoneEvent, J1939RequestEvent, J1939SentEvent,
};
use super::messages::buffer_bytes;
use super::reliable::released;
use crate::runtime::drivers::j1939::{
    CtsTurnaround, J1939Driver, J1939Error, J1939Event, MessageStream, NodeConfig, Via,
};
use crate::runtime::Channel;
use crate::runtime::{Bus, BusConfig, EngineHandle, EventQueue};

/// Through the one table (`errors.rs`).
fn ecu_err(py: Python<'_>, e: J1939Error) -> PyErr {
    to_py(py, e)
}

fn pgn_arg(pgn: u32) -> PyResult<Pgn> {
    Pgn::new(pgn).ok_or_else(|| PyValueError::new_err(format!("PGN {pgn} out of range (0..=0x3FFFF)")))
}

/// One J1939 controller application on a bus (native part of
/// `canx.j1939.ECU`). `J1939Ecu(bus, channel, name, address, *,
/// request_timeout=1.25, etp_buffer=1048576, queue_size=65536,
/// address_range=(128, 247), cts_delay=0.002)`: `bus` an open `canx.CAN` (shared with other
/// ECUs) or None with `channel` (a bus of its own); `name` the 64-bit NAME;
/// `address` the preferred source address (0..=253); `address_range`
/// (None: 128..=247) where an arbitrary-address-capable NAME may move; `request_timeout`
/// seconds (J1939-21 T3 1.25 s); `etp_buffer` bytes per ETP session (2);
/// `cts_delay` seconds between an RTS (or a window's last DT) and our CTS,
/// 0..=0.1, applied per `cts_turnaround`: "auto" (when the kernel's J1939
/// stack is active on the SocketCAN interface), "always" or "never" (see
/// canx_core::j1939::transport, "CTS turnaround").
///
/// Frozen: every method takes `&self` (closing sets an atomic flag), so a
/// `close()` racing a call that waits with the GIL released is safe. The
/// driver lock is only ever taken with the GIL released.
#[pyclass(module = "canx", frozen)]
pub struct J1939Ecu {
    driver: Arc<Mutex<J1939Driver>>,
    handle: EngineHandle,
    bus: Arc<Bus>,
    own_bus: bool,
    events: Arc<EventQueue<J1939Event>>,
    name: u64,
    closed: AtomicBool,
}

impl J1939Ecu {
    fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Relaxed) || self.bus.is_shut_down()
    }

    /// Runs `f` on the driver, then sends what it queued (an RTS, a request)
    /// from this thread: both without the GIL (the receive thread may hold
    /// the driver lock while a send waits for room in the socket).
    fn op<R: Send>(
        &self,
        py: Python<'_>,
        f: impl FnOnce(&mut J1939Driver) -> Result<R, J1939Error> + Send,
    ) -> PyResult<R> {
        if self.is_closed() {
            return Err(deinit_error());
        }
        let (driver, handle) = (&self.driver, &self.handle);
        let r = py.detach(|| {
            let r = f(&mut driver.lock());
            handle.kick();
            r
        });
        r.map_err(|e| ecu_err(py, e))
    }
}

/// The event as a frozen `canx._canx.J1939*Event` (see `events.rs`).
fn event_to_py(py: Python<'_>, e: J1939Event) -> PyResult<Py<PyAny>> {
    let t = match e {
        J1939Event::Message { pgn, source, destination, priority, data, timestamp, via } => {
            let via = match via {
                Via::Single => "single",
                Via::Tp => "tp",
                Via::Etp => "etp",
            };
            let data = Data(data);
            J1939MessageEvent { pgn, source, destination, priority, data, timestamp, via }.into_pyobject(py)?.into_any()
        }
        J1939Event::Request { pgn, requester, global, timestamp } => {
            J1939RequestEvent { pgn, requester, is_global: global, timestamp }.into_pyobject(py)?.into_any()
        }
        J1939Event::RequestDone { pgn, destination, outcome, code, source, data } => {
            let data = data.map(Data);
            J1939RequestDoneEvent { pgn, destination, outcome, code, source, data }.into_pyobject(py)?.into_any()
        }
        J1939Event::Claimed { address } => J1939ClaimedEvent { address }.into_pyobject(py)?.into_any(),
        J1939Event::Lost { address, winner } => J1939LostEvent { address, winner }.into_pyobject(py)?.into_any(),
        J1939Event::CannotClaim => J1939CannotClaimEvent {}.into_pyobject(py)?.into_any(),
        J1939Event::Sent { pgn, destination, size } => {
            J1939SentEvent { pgn, destination, size }.into_pyobject(py)?.into_any()
        }
        J1939Event::Aborted { pgn, source, destination, reason, by_peer, transmit } => {
            J1939AbortedEvent { pgn, source, destination, reason, by_peer, transmit }.into_pyobject(py)?.into_any()
        }
    };
    Ok(t.unbind())
}

#[pymethods]
impl J1939Ecu {
    #[new]
    #[pyo3(signature = (bus, channel, name, address, *, request_timeout=1.25, etp_buffer=1048576, queue_size=65536, address_range=None, cts_delay=0.002, cts_turnaround="auto"))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        py: Python<'_>,
        bus: Option<&Bound<'_, PyAny>>,
        channel: Option<String>,
        name: u64,
        address: u8,
        request_timeout: f64,
        etp_buffer: usize,
        queue_size: usize,
        address_range: Option<(u8, u8)>,
        cts_delay: f64,
        cts_turnaround: &str,
    ) -> PyResult<Self> {
        if !(0.0..=0.1).contains(&cts_delay) {
            return Err(PyValueError::new_err("cts_delay must be between 0 and 0.1 seconds"));
        }
        let turnaround = match cts_turnaround {
            "auto" => CtsTurnaround::Auto,
            "always" => CtsTurnaround::Always,
            "never" => CtsTurnaround::Never,
            other => {
                return Err(PyValueError::new_err(format!(
                    "cts_turnaround must be 'auto', 'always' or 'never', not {other:?}"
                )))
            }
        };
        if !(request_timeout > 0.0 && request_timeout < 3600.0) {
            return Err(PyValueError::new_err("request_timeout must be between 0 and 3600 seconds"));
        }
        if queue_size == 0 {
            return Err(PyValueError::new_err("queue_size must be at least 1"));
        }
        if etp_buffer > 117_440_505 {
            return Err(PyValueError::new_err("etp_buffer above the ETP maximum (117440505 bytes)"));
        }
        let (bus, own_bus) = match (bus, channel) {
            (Some(b), None) => {
                let can = b.cast::<CAN>().map_err(|_| PyTypeError::new_err("bus must be a canx.CAN"))?;
                (can.borrow().bus_arc()?, false)
            }
            (None, Some(ch)) => {
                let target = Channel::parse(&ch, None).map_err(|e| to_py(py, e))?;
                let b = py.detach(|| Bus::open(BusConfig::new(target))).map_err(|e| to_py(py, e))?;
                (Arc::new(b), true)
            }
            _ => return Err(PyValueError::new_err("give exactly one of channel= and bus=")),
        };
        let mut config = EcuConfig::new(Name::from_u64(name), address);
        if let Some(r) = address_range {
            config.claim.range = r;
        }
        config.request_timeout = canx_core::Duration::from_micros((request_timeout * 1e6) as u64);
        config.transport.cts_delay = canx_core::Duration::from_micros((cts_delay * 1e6).round() as u64);
        let cfg = NodeConfig { config, turnaround, etp_buffer, queue: queue_size };
        // One engine per ECU; ECUs sharing a bus see each other through the
        // runtime's local echo. attach() reads every engine's filters (their
        // locks): without the GIL.
        let (driver, events) = J1939Driver::new(cfg).map_err(|e| ecu_err(py, e))?;
        let driver = Arc::new(Mutex::new(driver));
        let handle = py.detach(|| bus.attach(driver.clone()));
        Ok(J1939Ecu { driver, handle, bus, own_bus, events, name, closed: AtomicBool::new(false) })
    }

    /// The 64-bit NAME.
    #[getter]
    fn name(&self) -> u64 {
        self.name
    }

    /// Starts the address claim (J1939-81 4.5): Address Claimed goes out now,
    /// the address is usable 250 ms later unless a lower NAME contends.
    fn start(&self, py: Python<'_>) -> PyResult<()> {
        self.op(py, |d| d.start())
    }

    /// (state, address): state "idle", "claiming", "claimed" or
    /// "cannot_claim"; address being claimed or held, else None.
    fn state(&self, py: Python<'_>) -> PyResult<(&'static str, Option<u8>)> {
        self.op(py, |d| d.state())
    }

    /// Waits up to `timeout` s (GIL released) until the claim ends; returns
    /// `state()`.
    fn wait_claim(&self, py: Python<'_>, timeout: Option<f64>) -> PyResult<(&'static str, Option<u8>)> {
        let driver = self.driver.clone();
        let got = wait_for(
            py,
            timeout,
            || self.is_closed(),
            |slice| {
                // The first poll (zero slice) runs with the GIL held: skip it,
                // the driver is only locked without the GIL.
                if slice.is_zero() {
                    return None;
                }
                let s = driver.lock().state().ok()?;
                if matches!(s.0, "claimed" | "cannot_claim") {
                    return Some(s);
                }
                std::thread::sleep(slice.min(Duration::from_millis(5)));
                None
            },
        )?;
        match got {
            Some(s) => Ok(s),
            None => self.state(py),
        }
    }

    /// Sends `data` as `pgn` to `destination` (255: all) with `priority`
    /// (0..7): one frame up to 8 bytes, BAM above 8 to all (max 1785),
    /// RTS/CTS 9..1785 bytes to one CA, ETP above (J1939-21 5.10).
    /// Raises AddressClaimError before the claim, ValueError for bad sizes,
    /// J1939Error when no session is free.
    fn send(&self, py: Python<'_>, pgn: u32, data: &Bound<'_, PyAny>, priority: u8, destination: u8) -> PyResult<()> {
        let pgn = pgn_arg(pgn)?;
        let data = buffer_bytes(data)?;
        if data.is_empty() {
            return Err(PyValueError::new_err("a J1939 message has at least 1 byte"));
        }
        self.op(py, |d| d.send(priority, pgn, destination, &data))
    }

    /// Sends a Request (PGN 59904) for `pgn` to `destination` (255: all);
    /// the end comes as a ("request_done", ...) event.
    fn request(&self, py: Python<'_>, pgn: u32, destination: u8) -> PyResult<()> {
        let pgn = pgn_arg(pgn)?;
        self.op(py, |d| d.request(pgn, destination))
    }

    /// Registers the answer to requests for `pgn`: bytes (answered natively),
    /// b"" (the application answers "request" events), None (unregister:
    /// specific requests are NACKed, J1939-21 5.4.4).
    fn set_response(&self, py: Python<'_>, pgn: u32, data: Option<&Bound<'_, PyAny>>) -> PyResult<()> {
        let pgn = pgn_arg(pgn)?;
        let data = data.map(buffer_bytes).transpose()?;
        self.op(py, |d| d.set_response(pgn, data))
    }

    /// Answers a request (see `respond` in J1939-21 5.4.2: to the requester
    /// after a specific request, to all after a global one).
    fn respond(&self, py: Python<'_>, pgn: u32, requester: u8, global_: bool, data: &Bound<'_, PyAny>) -> PyResult<()> {
        let pgn = pgn_arg(pgn)?;
        let data = buffer_bytes(data)?;
        self.op(py, |d| d.with_ecu(|e, _| e.respond(pgn, requester, global_, &data))?.map_err(J1939Error::Ecu))
    }

    /// Sends an Acknowledgment (PGN 59392): control 0 ACK, 1 NACK, 2 access
    /// denied, 3 cannot respond.
    fn acknowledge(&self, py: Python<'_>, control: u8, pgn: u32, requester: u8) -> PyResult<()> {
        let pgn = pgn_arg(pgn)?;
        let c = match control {
            0 => AckControl::Ack,
            1 => AckControl::Nack,
            2 => AckControl::AccessDenied,
            3 => AckControl::CannotRespond,
            c => AckControl::Other(c),
        };
        self.op(py, |d| d.with_ecu(|e, _| e.acknowledge(c, pgn, requester))?.map_err(J1939Error::Ecu))
    }

    /// Sends a Request for Address Claimed to all (J1939-81 4.5.1).
    fn request_address_claims(&self, py: Python<'_>) -> PyResult<()> {
        self.op(py, |d| d.with_ecu(|e, _| e.request_address_claims())?.map_err(J1939Error::Ecu))
    }

    /// Commanded Address (PGN 65240, J1939-81 4.6): tells the CA named
    /// `target` to move to `new_address`; sent by TP to `destination`.
    fn command_address(&self, py: Python<'_>, target: u64, new_address: u8, destination: u8) -> PyResult<()> {
        self.op(py, |d| {
            d.with_ecu(|e, _| e.command_address(Name::from_u64(target), new_address, destination))?
                .map_err(J1939Error::Ecu)
        })
    }

    /// A native stream of this ECU's messages of `pgn` (None: all) from
    /// `source` (None: any), holding at most `maxsize` (more are dropped and
    /// counted). The receive thread fills it directly.
    #[pyo3(signature = (pgn=None, source=None, maxsize=65536))]
    fn subscribe(&self, py: Python<'_>, pgn: Option<u32>, source: Option<u8>, maxsize: usize) -> PyResult<J1939Stream> {
        if maxsize == 0 {
            return Err(PyValueError::new_err("maxsize must be at least 1"));
        }
        let pgn = pgn.map(pgn_arg).transpose()?;
        let stream = self.op(py, |d| d.subscribe(pgn, source, maxsize))?;
        Ok(J1939Stream { stream, bus: self.bus.clone() })
    }

    /// The bus's NAME <-> address table: [(address, NAME), ...].
    fn table(&self, py: Python<'_>) -> PyResult<Vec<(u8, u64)>> {
        self.op(py, |d| d.table())
    }

    /// The next event tuple, waiting up to `timeout` s (GIL released), or None.
    fn next_event(&self, py: Python<'_>, timeout: Option<f64>) -> PyResult<Option<Py<PyAny>>> {
        if self.closed.load(Ordering::Relaxed) {
            return Err(deinit_error());
        }
        let q = self.events.clone();
        match wait_for(
            py,
            timeout,
            || self.is_closed(),
            |slice| q.try_recv().or_else(|| if slice.is_zero() { None } else { q.recv_timeout(slice) }),
        )? {
            Some(e) => Ok(Some(event_to_py(py, e)?)),
            None => Ok(None),
        }
    }

    /// Counters (dict): queue and engine drops, refused sessions, ...
    fn stats<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let s = self.op(py, |d| d.stats())?;
        let out = PyDict::new(py);
        for (k, v) in s {
            out.set_item(k, v)?;
        }
        Ok(out)
    }

    /// Removes the ECU from the bus (and closes the bus if it opened it).
    /// Idempotent.
    fn close(&self, py: Python<'_>) {
        if !self.closed.swap(true, Ordering::Relaxed) {
            self.events.wake();
            py.detach(|| self.leave());
        }
    }

    /// The event queue's readiness descriptor (asyncio `add_reader`):
    /// readable while events are queued and after `close()`; may be
    /// spuriously readable. `canx.UnsupportedError` where the platform has none.
    fn fileno(&self, py: Python<'_>) -> PyResult<i64> {
        notify_fileno(py, self.events.notify())
    }

    #[getter]
    fn closed(&self) -> bool {
        self.closed.load(Ordering::Relaxed)
    }
}

impl J1939Ecu {
    /// Detaches and closes this ECU's engine; shuts its own bus down.
    /// Called once, without the GIL.
    fn leave(&self) {
        self.bus.detach(&self.handle);
        self.driver.lock().close();
        if self.own_bus {
            self.bus.shutdown();
        }
    }
}

impl Drop for J1939Ecu {
    fn drop(&mut self) {
        if !self.closed.swap(true, Ordering::Relaxed) {
            let me = &*self;
            released(|| me.leave());
        }
    }
}

/// EEC1 (PGN 61444) payload with SPN 190 engine speed in rpm (0..8031.875,
/// 0.125 rpm/bit, J1939-71); None: "not available". ValueError out of range.
#[pyfunction]
#[pyo3(signature = (rpm))]
fn j1939_encode_eec1<'py>(py: Python<'py>, rpm: Option<f64>) -> PyResult<Bound<'py, PyBytes>> {
    let raw = match rpm {
        Some(r) => Some(
            codecs::eec1::raw_from_rpm(r as f32)
                .ok_or_else(|| PyValueError::new_err(format!("engine speed {r} rpm outside 0..8031.875 rpm")))?,
        ),
        None => None,
    };
    Ok(PyBytes::new(py, &codecs::eec1::encode(raw)))
}

/// SPN 190 engine speed (rpm) from an EEC1 payload, None if not available.
#[pyfunction]
fn j1939_decode_eec1(data: &[u8]) -> Option<f32> {
    codecs::eec1::engine_speed(data)
}

/// ET1 (PGN 65262) payload: SPN 110 coolant and SPN 174 fuel temperature in
/// degC (-40..210, 1 degC/bit, J1939-71); None: "not available".
/// ValueError out of range.
#[pyfunction]
#[pyo3(signature = (coolant, fuel=None))]
fn j1939_encode_et1<'py>(py: Python<'py>, coolant: Option<i16>, fuel: Option<i16>) -> PyResult<Bound<'py, PyBytes>> {
    for t in [coolant, fuel].into_iter().flatten() {
        if !(-40..=210).contains(&t) {
            return Err(PyValueError::new_err(format!("temperature {t} degC outside -40..210 degC")));
        }
    }
    Ok(PyBytes::new(py, &codecs::et1::encode(coolant, fuel)))
}

/// (coolant degC, fuel degC) from an ET1 payload; None where not available.
#[pyfunction]
fn j1939_decode_et1(data: &[u8]) -> (Option<i16>, Option<i16>) {
    (codecs::et1::coolant_temperature(data), codecs::et1::fuel_temperature(data))
}

/// DM1/DM2 payload (J1939-73 5.7.1): `lamps` and `flash` bytes (2 bits per
/// lamp: MIL, red stop, amber warning, protect), `dtcs` a list of
/// (SPN, FMI, occurrence count). ValueError for fields out of range.
#[pyfunction]
fn j1939_encode_dm<'py>(
    py: Python<'py>,
    lamps: u8,
    flash: u8,
    dtcs: Vec<(u32, u8, u8)>,
) -> PyResult<Bound<'py, PyBytes>> {
    let mut v = Vec::with_capacity(dtcs.len());
    for (spn, fmi, oc) in dtcs {
        v.push(Dtc::new(spn, fmi, oc).map_err(|e| PyValueError::new_err(format!("DTC ({spn}, {fmi}, {oc}): {e}")))?);
    }
    let mut buf = vec![0u8; 8 + 4 * v.len()];
    let n = emit_dm(Lamps::from_byte(lamps), Lamps::from_byte(flash), &v, &mut buf)
        .map_err(|e| PyValueError::new_err(e.to_string()))?;
    Ok(PyBytes::new(py, &buf[..n]))
}

/// (lamps byte, flash byte, [(SPN, FMI, occurrence count), ...]).
type DmParts = (u8, u8, Vec<(u32, u8, u8)>);

/// (lamps, flash, [(SPN, FMI, occurrence count), ...]) from a DM1/DM2
/// payload. ValueError below 2 bytes.
#[pyfunction]
fn j1939_decode_dm(data: &[u8]) -> PyResult<DmParts> {
    let m = DmMessage::parse(data).map_err(|e| PyValueError::new_err(e.to_string()))?;
    Ok((m.lamps.to_byte(), m.flash.to_byte(), m.dtcs().map(|d| (d.spn, d.fmi, d.occurrence_count)).collect()))
}

/// (priority, PGN, source, destination) of a 29-bit identifier (J1939-21
/// 5.2); destination 255 for PDU2 PGNs.
#[pyfunction]
fn j1939_decode_id(can_id: u32) -> PyResult<(u8, u32, u8, u8)> {
    let id = canx_core::ExtendedId::new(can_id)
        .ok_or_else(|| PyValueError::new_err(format!("{can_id:#x} is not a 29-bit identifier")))?;
    let j = canx_core::j1939::J1939Id::from_id(id);
    Ok((j.priority, j.pgn.raw(), j.source, j.destination))
}

/// Native part of `canx.j1939.PgnStream` (made by `J1939Ecu.subscribe`).
#[pyclass(module = "canx")]
pub struct J1939Stream {
    stream: Arc<MessageStream>,
    bus: Arc<Bus>,
}

#[pymethods]
impl J1939Stream {
    /// The next ("message", pgn, source, destination, priority, data,
    /// timestamp, via) tuple, waiting up to `timeout` s (None: forever) with
    /// the GIL released; None after `timeout`, or at once when the stream is
    /// closed and empty. Ctrl-C interrupts the wait; raises ValueError when
    /// the bus was shut down.
    #[pyo3(signature = (timeout=None))]
    fn get(&self, py: Python<'_>, timeout: Option<f64>) -> PyResult<Option<Py<PyAny>>> {
        let stream = &self.stream;
        let bus = &self.bus;
        let q = &stream.queue;
        // Some(None): closed and drained, the wait ends without a message.
        let got = wait_for(
            py,
            timeout,
            || bus.is_shut_down(),
            |slice| match q.try_recv() {
                Some(e) => Some(Some(e)),
                None if stream.is_closed() => Some(None),
                None if slice.is_zero() => None,
                None => q.recv_timeout(slice).map(Some),
            },
        )?;
        match got.flatten() {
            Some(e) => Ok(Some(event_to_py(py, e)?)),
            None => Ok(None),
        }
    }

    /// Messages lost because the stream was full.
    #[getter]
    fn dropped(&self) -> u64 {
        self.stream.queue.dropped()
    }

    /// Stops delivery to this stream. Idempotent.
    fn close(&self) {
        self.stream.close();
        self.stream.queue.wake();
    }

    /// The stream's readiness descriptor (asyncio `add_reader`): readable
    /// while messages are queued and after `close()`; may be spuriously
    /// readable. `canx.UnsupportedError` where the platform has none.
    fn fileno(&self, py: Python<'_>) -> PyResult<i64> {
        notify_fileno(py, self.stream.queue.notify())
    }

    /// Whether `close()` was called.
    #[getter]
    fn closed(&self) -> bool {
        self.stream.is_closed()
    }
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<J1939Ecu>()?;
    m.add_class::<J1939Stream>()?;
    m.add_function(wrap_pyfunction!(j1939_encode_eec1, m)?)?;
    m.add_function(wrap_pyfunction!(j1939_decode_eec1, m)?)?;
    m.add_function(wrap_pyfunction!(j1939_encode_et1, m)?)?;
    m.add_function(wrap_pyfunction!(j1939_decode_et1, m)?)?;
    m.add_function(wrap_pyfunction!(j1939_encode_dm, m)?)?;
    m.add_function(wrap_pyfunction!(j1939_decode_dm, m)?)?;
    m.add_function(wrap_pyfunction!(j1939_decode_id, m)?)?;
    Ok(())
}
