//! `RawBus`: the native side of the python-can plugin (`canx.pycan.CanxBus`)
//! and the command-line tools. Frames cross as flat tuples of python-can
//! field values, so building a `can.Message` costs one constructor call;
//! filters are kernel-style `(can_id, can_mask, inverted)`; `fileno()` is a
//! descriptor readable while frames are queued (`runtime::Notify`; none on
//! Windows); periodic sends run in the backend (BCM) or natively.

use std::sync::Arc;
use std::time::Duration;

use canx_core::frame::{fd_padded_len, make_id, BusState as CoreState, EFF_FLAG, EFF_MASK};
use canx_core::{CanFrame, ErrorFrame, FdFrame, Filter, Frame};
use parking_lot::Mutex;
use pyo3::exceptions::{PyNotImplementedError, PyOSError, PyTypeError, PyValueError};
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyByteArray, PyBytes, PyList, PyString, PyTuple, PyType};

use super::can::{wait_rx, DEFAULT_QUEUE};
use super::errors::{deinit_error, to_py};
use super::messages::buffer_bytes;
use crate::runtime::{Bus, BusConfig, Channel, DropPolicy, Listener, ListenerFilter, Notify, PeriodicSender, RxFrame};

/// `(arbitration_id, is_extended_id, is_remote_frame, is_error_frame, is_fd,
/// bitrate_switch, error_state_indicator, dlc, data, timestamp, own)`: the
/// python-can fields of a frame. Error frames: `arbitration_id` is the
/// error class (`CAN_ERR_*` bits), `data` the 8 detail bytes. `dlc` is the
/// payload length in bytes (python-can's meaning) or a remote frame's
/// requested length.
pub(crate) fn frame_tuple<'py>(py: Python<'py>, f: &Frame, timestamp: f64, own: bool) -> PyResult<Bound<'py, PyTuple>> {
    let (id, ext, rtr, err, fd, brs, esi, dlc) = fields(f);
    (id, ext, rtr, err, fd, brs, esi, dlc, PyBytes::new(py, f.data()), timestamp, own).into_pyobject(py)
}

/// `(arbitration_id, is_extended_id, is_remote_frame, is_error_frame, is_fd,
/// bitrate_switch, error_state_indicator, dlc)` of a frame. An error frame's
/// id is its class and it is not extended (as python-can's socketcan reports it).
fn fields(f: &Frame) -> (u32, bool, bool, bool, bool, bool, bool, usize) {
    match f {
        Frame::Can(c) => (c.raw_id(), c.is_extended(), c.is_remote(), false, false, false, false, c.dlc() as usize),
        Frame::Fd(c) => (c.raw_id(), c.is_extended(), false, false, true, c.brs(), c.esi(), c.data().len()),
        Frame::Error(e) => (e.class(), false, false, true, false, false, false, 8),
    }
}

/// The python-can class and channel `recv_msg` builds messages with.
struct MessageClass {
    cls: Py<PyType>,
    object_new: Py<PyAny>,
    channel: Py<PyAny>,
}

/// Every attribute [`build_message`] sets, in order. A `can.Message` is made
/// with `object.__new__` (no `__init__`: its checks and copies cost more than
/// the whole native receive) and these are python-can's `__slots__` (all of
/// them but `__weakref__`, in python-can 4.2 to 4.6). That is python-can
/// private API: `tests/test_pycan.py` checks this list against the installed
/// python-can's `Message.__slots__`, and `scripts/test-python-can-versions`
/// runs the python-can tests against each supported release.
const MESSAGE_SLOTS: [&str; 12] = [
    "timestamp",
    "arbitration_id",
    "is_extended_id",
    "is_remote_frame",
    "is_error_frame",
    "channel",
    "dlc",
    "data",
    "is_fd",
    "is_rx",
    "bitrate_switch",
    "error_state_indicator",
];

/// `_canx._pycan_message_slots()`: [`MESSAGE_SLOTS`], for the test that pins them.
#[pyfunction]
pub fn _pycan_message_slots() -> Vec<&'static str> {
    MESSAGE_SLOTS.to_vec()
}

fn build_message<'py>(py: Python<'py>, mc: &MessageClass, rx: &RxFrame) -> PyResult<Bound<'py, PyAny>> {
    static NAMES: PyOnceLock<Vec<Py<PyString>>> = PyOnceLock::new();
    let names = NAMES.get_or_init(py, || MESSAGE_SLOTS.iter().map(|n| PyString::intern(py, n).unbind()).collect());
    let (id, ext, rtr, err, fd, brs, esi, dlc) = fields(&rx.frame);
    let m = mc.object_new.bind(py).call1((mc.cls.bind(py),))?;
    let values: [Bound<'py, PyAny>; 12] = [
        rx.timestamp.into_pyobject(py)?.into_any(),
        id.into_pyobject(py)?.into_any(),
        ext.into_pyobject(py)?.to_owned().into_any(),
        rtr.into_pyobject(py)?.to_owned().into_any(),
        err.into_pyobject(py)?.to_owned().into_any(),
        mc.channel.bind(py).clone(),
        dlc.into_pyobject(py)?.into_any(),
        PyByteArray::new(py, rx.frame.data()).into_any(),
        fd.into_pyobject(py)?.to_owned().into_any(),
        (!rx.own()).into_pyobject(py)?.to_owned().into_any(),
        brs.into_pyobject(py)?.to_owned().into_any(),
        esi.into_pyobject(py)?.to_owned().into_any(),
    ];
    for (name, value) in names.iter().zip(values) {
        m.setattr(name.bind(py), value)?;
    }
    Ok(m)
}

/// The inverse of [`frame_tuple`] (first 8 fields + data). FD data is padded
/// with zeros to the next valid FD length. Errors: ValueError naming the field.
#[allow(clippy::too_many_arguments)]
pub(crate) fn fields_to_frame(
    id: u32,
    extended: bool,
    remote: bool,
    error: bool,
    fd: bool,
    brs: bool,
    esi: bool,
    dlc: usize,
    data: &[u8],
) -> PyResult<Frame> {
    if error {
        let mut d = [0u8; 8];
        let n = data.len().min(8);
        d[..n].copy_from_slice(&data[..n]);
        return Ok(Frame::Error(ErrorFrame::new(id & EFF_MASK, d)));
    }
    let cid = make_id(id, extended).map_err(|_| {
        PyValueError::new_err(format!(
            "arbitration_id 0x{id:X} out of range for a {} id",
            if extended { "29-bit extended" } else { "11-bit standard" }
        ))
    })?;
    if fd {
        if remote {
            return Err(PyValueError::new_err("CAN FD has no remote frames"));
        }
        let n = fd_padded_len(data.len())
            .ok_or_else(|| PyValueError::new_err(format!("{} data bytes: CAN FD holds at most 64", data.len())))?;
        let mut buf = [0u8; 64];
        buf[..data.len()].copy_from_slice(data);
        return FdFrame::new(cid, &buf[..n], brs, esi).map(Frame::Fd).map_err(|e| PyValueError::new_err(e.to_string()));
    }
    if remote {
        return CanFrame::new_remote(cid, dlc.min(8)).map(Frame::Can).map_err(|e| PyValueError::new_err(e.to_string()));
    }
    if data.len() > 8 {
        return Err(PyValueError::new_err(format!("{} data bytes: CAN 2.0 holds at most 8 (use is_fd)", data.len())));
    }
    CanFrame::new(cid, data).map(Frame::Can).map_err(|e| PyValueError::new_err(e.to_string()))
}

fn filters_from(list: Option<Vec<(u32, u32, bool)>>) -> Vec<Filter> {
    list.unwrap_or_default().into_iter().map(|(id, mask, inverted)| Filter { id, mask, inverted }).collect()
}

struct Queues {
    current: Arc<Listener>,
    /// The listener replaced by the last `set_filters`: its queued frames are
    /// delivered first (those the new filters accept).
    previous: Option<Arc<Listener>>,
}

/// A bus for python-can and the tools.
///
/// `RawBus(channel, *, fd=False, receive_own=False, filters=None,
/// error_frames=True, queue_size=65536, bitrate=250000, data_bitrate=None)`
/// (`data_bitrate`: CAN FD data-phase bit/s, see `canx.CAN`): `channel` as for
/// `canx.CAN` (`"vcan0"`, `"can0"`, `"virtual:NAME"`); `filters`: list of
/// `(can_id, can_mask, inverted)` with Linux `struct can_filter` semantics
/// (EFF/RTR flag bits in id and mask), applied in the kernel on SocketCAN.
/// Raises `canx.ChannelError`, `canx.InterfaceError`.
#[pyclass(module = "canx._canx", frozen)]
pub struct RawBus {
    bus: Arc<Bus>,
    queues: Mutex<Queues>,
    error_frames: Mutex<bool>,
    queue_size: usize,
    notify: Mutex<Option<Arc<Notify>>>,
    message_class: parking_lot::RwLock<Option<MessageClass>>,
}

impl RawBus {
    fn live(&self) -> PyResult<&Arc<Bus>> {
        if self.bus.is_shut_down() {
            Err(deinit_error())
        } else {
            Ok(&self.bus)
        }
    }

    fn try_take(&self) -> Option<RxFrame> {
        let mut q = self.queues.lock();
        if let Some(p) = &q.previous {
            let cur = &q.current.filter;
            while let Some(f) = p.try_recv() {
                if cur.accepts(&f.frame) {
                    return Some(f);
                }
            }
            q.previous = None;
        }
        let f = q.current.try_recv();
        if f.is_some() {
            q.current.rearm();
        }
        f
    }

    fn wait(&self, py: Python<'_>, timeout: Option<f64>) -> PyResult<Option<RxFrame>> {
        let bus = &self.bus;
        let r = wait_rx(py, bus, timeout, |slice| {
            self.try_take().or_else(|| {
                if slice.is_zero() {
                    return None;
                }
                // A filter change during this slice is seen at the next one (<= 50 ms).
                let current = self.queues.lock().current.clone();
                let f = current.recv_timeout(slice)?;
                current.rearm();
                Some(f)
            })
        })?;
        Ok(r)
    }
}

#[pymethods]
impl RawBus {
    #[new]
    #[pyo3(signature = (channel, *, fd=false, receive_own=false, filters=None, error_frames=true, queue_size=DEFAULT_QUEUE, bitrate=250_000, data_bitrate=None))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        py: Python<'_>,
        channel: &str,
        fd: bool,
        receive_own: bool,
        filters: Option<Vec<(u32, u32, bool)>>,
        error_frames: bool,
        queue_size: usize,
        bitrate: u32,
        data_bitrate: Option<u32>,
    ) -> PyResult<Self> {
        if queue_size == 0 {
            return Err(PyValueError::new_err("queue_size must be at least 1"));
        }
        let target = Channel::parse(channel, None).map_err(|e| to_py(py, e))?;
        let mut cfg = BusConfig::new(target);
        cfg.receive_own = receive_own;
        cfg.fd = fd;
        cfg.bitrate = bitrate.max(1);
        cfg.data_bitrate = data_bitrate.filter(|&r| r > 0);
        let bus = py.detach(|| Bus::open(cfg)).map_err(|e| to_py(py, e))?;
        let current = bus.listen(
            ListenerFilter { filters: filters_from(filters), error_frames },
            queue_size,
            DropPolicy::DropNewest,
        );
        Ok(RawBus {
            bus: Arc::new(bus),
            queues: Mutex::new(Queues { current, previous: None }),
            error_frames: Mutex::new(error_frames),
            queue_size,
            notify: Mutex::new(None),
            message_class: parking_lot::RwLock::new(None),
        })
    }

    /// The next frame as a field tuple (see `frame_tuple`), or None after
    /// `timeout` seconds (None: wait forever; 0: poll). Ctrl-C interrupts.
    #[pyo3(signature = (timeout=None))]
    fn recv<'py>(&self, py: Python<'py>, timeout: Option<f64>) -> PyResult<Option<Bound<'py, PyTuple>>> {
        self.live()?;
        match self.wait(py, timeout)? {
            Some(f) => Ok(Some(frame_tuple(py, &f.frame, f.timestamp, f.own())?)),
            None => Ok(None),
        }
    }

    /// Makes `recv_msg` build instances of `cls` (python-can's `can.Message`:
    /// a class with its attribute slots) with `channel` set.
    fn set_message_class(&self, py: Python<'_>, cls: Bound<'_, PyType>, channel: Py<PyAny>) -> PyResult<()> {
        let object_new = py.import("builtins")?.getattr("object")?.getattr("__new__")?.unbind();
        *self.message_class.write() = Some(MessageClass { cls: cls.unbind(), object_new, channel });
        Ok(())
    }

    /// The next frame as an instance of the class given to
    /// `set_message_class` (every python-can field set; `is_rx` False for
    /// own frames), or None after `timeout` s (None: forever).
    #[pyo3(signature = (timeout=None))]
    fn recv_msg<'py>(&self, py: Python<'py>, timeout: Option<f64>) -> PyResult<Option<Bound<'py, PyAny>>> {
        self.live()?;
        match self.wait(py, timeout)? {
            Some(f) => {
                let mc = self.message_class.read();
                let mc = mc.as_ref().ok_or_else(|| PyTypeError::new_err("call set_message_class first"))?;
                Ok(Some(build_message(py, mc, &f)?))
            }
            None => Ok(None),
        }
    }

    /// Sends a python-can `Message` (reads its fields natively). Errors as `send`.
    #[pyo3(signature = (msg, timeout=None))]
    fn send_msg(&self, py: Python<'_>, msg: &Bound<'_, PyAny>, timeout: Option<f64>) -> PyResult<()> {
        let bus = self.live()?;
        if msg.getattr(intern!(py, "is_error_frame"))?.is_truthy()? {
            return Err(to_py(py, crate::runtime::Error::Unsupported("error frames cannot be sent".into())));
        }
        let data = msg.getattr(intern!(py, "data"))?;
        let vec;
        let d: &[u8] = if let Ok(b) = data.cast::<PyByteArray>() {
            vec = b.to_vec();
            &vec
        } else if let Ok(b) = data.cast::<PyBytes>() {
            b.as_bytes()
        } else if data.is_none() {
            &[]
        } else {
            vec = buffer_bytes(&data)?;
            &vec
        };
        let frame = fields_to_frame(
            msg.getattr(intern!(py, "arbitration_id"))?.extract()?,
            msg.getattr(intern!(py, "is_extended_id"))?.is_truthy()?,
            msg.getattr(intern!(py, "is_remote_frame"))?.is_truthy()?,
            false,
            msg.getattr(intern!(py, "is_fd"))?.is_truthy()?,
            msg.getattr(intern!(py, "bitrate_switch"))?.is_truthy()?,
            msg.getattr(intern!(py, "error_state_indicator"))?.is_truthy()?,
            msg.getattr(intern!(py, "dlc"))?.extract::<Option<usize>>()?.unwrap_or(d.len()),
            d,
        )?;
        send_frame(py, bus, &frame, timeout)
    }

    /// Up to `max` frame tuples: waits up to `timeout` s for the first, then
    /// takes what is queued.
    #[pyo3(signature = (max=256, timeout=None))]
    fn recv_many<'py>(&self, py: Python<'py>, max: usize, timeout: Option<f64>) -> PyResult<Bound<'py, PyList>> {
        self.live()?;
        let out = PyList::empty(py);
        if max == 0 {
            return Ok(out);
        }
        if let Some(f) = self.wait(py, timeout)? {
            out.append(frame_tuple(py, &f.frame, f.timestamp, f.own())?)?;
            while out.len() < max {
                match self.try_take() {
                    Some(f) => out.append(frame_tuple(py, &f.frame, f.timestamp, f.own())?)?,
                    None => break,
                }
            }
        }
        Ok(out)
    }

    /// Sends one frame from python-can fields; `timeout` bounds the wait for
    /// room in the transmit queue (None: 1 hour). Raises ValueError (bad
    /// fields), `canx.SendTimeoutError`, `canx.BusOffError`,
    /// `canx.InterfaceDownError`, `canx.UnsupportedError` (FD on a classic bus).
    #[pyo3(signature = (arbitration_id, is_extended_id, is_remote_frame, is_fd, bitrate_switch, error_state_indicator, dlc, data, timeout=None))]
    #[allow(clippy::too_many_arguments)]
    fn send(
        &self,
        py: Python<'_>,
        arbitration_id: u32,
        is_extended_id: bool,
        is_remote_frame: bool,
        is_fd: bool,
        bitrate_switch: bool,
        error_state_indicator: bool,
        dlc: usize,
        data: &Bound<'_, PyAny>,
        timeout: Option<f64>,
    ) -> PyResult<()> {
        let bus = self.live()?;
        let bytes;
        let d: &[u8] = if let Ok(b) = data.cast::<PyBytes>() {
            b.as_bytes()
        } else if data.is_none() {
            &[]
        } else {
            bytes = buffer_bytes(data)?;
            &bytes
        };
        let frame = fields_to_frame(
            arbitration_id,
            is_extended_id,
            is_remote_frame,
            false,
            is_fd,
            bitrate_switch,
            error_state_indicator,
            dlc,
            d,
        )?;
        send_frame(py, bus, &frame, timeout)
    }

    /// Replaces the receive filters (list of `(can_id, can_mask, inverted)`;
    /// None or empty: everything) and whether error frames are delivered.
    /// Frames already queued are still delivered if the new filters accept them.
    #[pyo3(signature = (filters=None, error_frames=None))]
    fn set_filters(&self, filters: Option<Vec<(u32, u32, bool)>>, error_frames: Option<bool>) -> PyResult<()> {
        let bus = self.live()?;
        let mut ef = self.error_frames.lock();
        if let Some(e) = error_frames {
            *ef = e;
        }
        let new = bus.listen(
            ListenerFilter { filters: filters_from(filters), error_frames: *ef },
            self.queue_size,
            DropPolicy::DropNewest,
        );
        if let Some(n) = self.notify.lock().as_ref() {
            new.set_notify(n.clone());
        }
        let mut q = self.queues.lock();
        let old = std::mem::replace(&mut q.current, new);
        bus.unlisten(&old);
        // Frames of an older `previous` not yet taken are dropped with it.
        q.previous = Some(old);
        if let Some(n) = self.notify.lock().as_ref() {
            n.signal();
        }
        Ok(())
    }

    /// A file descriptor readable while frames are queued (may be readable
    /// spuriously: `recv(0)` then returns None). Stays the same for the
    /// life of the bus. Raises OSError if no descriptor can be made, and
    /// NotImplementedError where there is none to wait on (Windows), as
    /// python-can's `BusABC.fileno` does.
    fn fileno(&self) -> PyResult<i32> {
        self.live()?;
        let mut n = self.notify.lock();
        if n.is_none() {
            let new = Arc::new(Notify::new().map_err(|e| match e.kind() {
                std::io::ErrorKind::Unsupported => PyNotImplementedError::new_err(e.to_string()),
                _ => PyOSError::new_err(format!("readiness descriptor: {e}")),
            })?);
            self.queues.lock().current.set_notify(new.clone());
            *n = Some(new);
        }
        #[cfg(unix)]
        return Ok(n.as_ref().map_or(-1, |n| n.raw_fd()));
        #[cfg(not(unix))]
        return Err(PyNotImplementedError::new_err("fileno: no readiness descriptor on this platform"));
    }

    /// `(state, tec, rec)`: state is `"ERROR_ACTIVE"`, `"ERROR_WARNING"`,
    /// `"ERROR_PASSIVE"` or `"BUS_OFF"` (also while the interface is down).
    fn state(&self) -> PyResult<(&'static str, u8, u8)> {
        let s = self.live()?.state();
        let name = match s.state {
            CoreState::ErrorActive => "ERROR_ACTIVE",
            CoreState::ErrorWarning => "ERROR_WARNING",
            CoreState::ErrorPassive => "ERROR_PASSIVE",
            CoreState::BusOff => "BUS_OFF",
        };
        Ok((name, s.tec, s.rec))
    }

    /// Virtual bus only: makes this node's controller report `state`
    /// (`"ERROR_ACTIVE"`, `"ERROR_WARNING"`, `"ERROR_PASSIVE"`, `"BUS_OFF"`)
    /// with the given counters. Raises ValueError for another name,
    /// `canx.UnsupportedError` on SocketCAN.
    #[pyo3(signature = (state, tec=0, rec=0))]
    fn inject_state(&self, py: Python<'_>, state: &str, tec: u8, rec: u8) -> PyResult<()> {
        let s = match state {
            "ERROR_ACTIVE" => CoreState::ErrorActive,
            "ERROR_WARNING" => CoreState::ErrorWarning,
            "ERROR_PASSIVE" => CoreState::ErrorPassive,
            "BUS_OFF" => CoreState::BusOff,
            other => return Err(PyValueError::new_err(format!("unknown state {other:?}"))),
        };
        self.live()?.inject_state(s, tec, rec).map_err(|e| to_py(py, e))
    }

    /// Leaves BUS_OFF (counters to zero).
    fn restart(&self, py: Python<'_>) -> PyResult<()> {
        self.live()?.restart().map_err(|e| to_py(py, e))
    }

    /// Frames queued for `recv`.
    fn in_waiting(&self) -> PyResult<usize> {
        self.live()?;
        let q = self.queues.lock();
        Ok(q.current.len() + q.previous.as_ref().map_or(0, |p| p.len()))
    }

    /// Counters: `received`, `sent`, `backend_dropped`, `listener_dropped`, `error_frames`.
    fn stats(&self) -> PyResult<(u64, u64, u64, u64, u64)> {
        let s = self.live()?.stats();
        Ok((s.received, s.sent, s.backend_dropped, s.listener_dropped, s.error_frames))
    }

    /// Starts sending `frames` (list of field tuples `(arbitration_id,
    /// is_extended_id, is_remote_frame, is_fd, bitrate_switch,
    /// error_state_indicator, dlc, data)`) in turn, one every `period`
    /// seconds; stops after `duration` s (None, or a duration too long to
    /// count such as `float("inf")`: until stopped). With `autostart=False`
    /// nothing is sent until `start()`. Where the backend offers periodic
    /// offload (SocketCAN: the kernel's broadcast manager, `CAN_BCM`, no
    /// user-space timer) it runs there; elsewhere (the virtual bus) the
    /// runtime's native timer does. Raises ValueError (period not a positive
    /// number of seconds, duration NaN, an FD frame on a classic bus).
    #[pyo3(signature = (frames, period, duration=None, *, autostart=true))]
    fn send_periodic(
        &self,
        frames: &Bound<'_, PyAny>,
        period: f64,
        duration: Option<f64>,
        autostart: bool,
    ) -> PyResult<PeriodicSend> {
        let py = frames.py();
        let bus = self.live()?;
        let period = match Duration::try_from_secs_f64(period) {
            Ok(p) if !p.is_zero() => p,
            _ => return Err(PyValueError::new_err("period must be a positive number of seconds")),
        };
        let duration = periodic_duration(duration)?;
        if bus.config().silent {
            return Err(to_py(py, crate::runtime::Error::Silent));
        }
        let fs = frames_from(frames)?;
        if fs.iter().any(|f| matches!(f, Frame::Fd(_))) && !bus.config().fd {
            return Err(PyValueError::new_err("CAN FD frame on a bus opened without fd=True"));
        }
        let mut task = PeriodicSender::new(bus, fs, period).map_err(|e| to_py(py, e))?;
        if autostart {
            task.start(duration).map_err(|e| to_py(py, e))?;
        }
        Ok(PeriodicSend { bus: bus.clone(), task: Mutex::new(task) })
    }

    /// Channels that can be opened now, as `channel=` strings: CAN network
    /// interfaces (Linux), then the virtual channels that have nodes, then
    /// python-can's two default `udp_multicast` groups.
    #[staticmethod]
    fn available_channels() -> Vec<String> {
        crate::runtime::available_channels()
    }

    /// `available_channels()` as `(channel, scheme, description)` tuples
    /// (`canx list`): SocketCAN interfaces with their state and driver, gs_usb
    /// devices and USB serial ports with `VID:PID serial=... manufacturer
    /// product` where the OS gives them, virtual channels, udp_multicast groups.
    #[staticmethod]
    fn available_channel_details() -> Vec<(String, &'static str, String)> {
        crate::runtime::available_channel_details().into_iter().map(|c| (c.channel, c.scheme, c.description)).collect()
    }

    /// Stops the receive thread and releases the interface. Idempotent.
    fn shutdown(&self, py: Python<'_>) {
        let b = self.bus.clone();
        py.detach(|| b.shutdown());
    }

    #[getter]
    fn is_shut_down(&self) -> bool {
        self.bus.is_shut_down()
    }
}

/// Sends with a first non-blocking attempt under the GIL (the common case
/// costs one system call); only a full transmit queue waits, GIL released.
fn send_frame(py: Python<'_>, bus: &Bus, frame: &Frame, timeout: Option<f64>) -> PyResult<()> {
    let t = timeout_duration(timeout);
    match bus.send(frame, Duration::ZERO) {
        Err(crate::runtime::Error::SendTimeout) if !t.is_zero() => {
            // In slices with the GIL released, so Ctrl-C interrupts a send
            // waiting on a full transmit queue (docs/reliability.md).
            let r = super::can::wait_for(
                py,
                timeout,
                || false,
                |slice| match bus.send(frame, slice) {
                    Err(crate::runtime::Error::SendTimeout) => None,
                    other => Some(other),
                },
            )?;
            match r {
                Some(r) => r.map_err(|e| to_py(py, e)),
                None => Err(to_py(py, crate::runtime::Error::SendTimeout)),
            }
        }
        r => r.map_err(|e| to_py(py, e)),
    }
}

fn timeout_duration(t: Option<f64>) -> Duration {
    match t {
        None => Duration::from_secs(3600),
        Some(t) => Duration::try_from_secs_f64(t.max(0.0)).unwrap_or(Duration::from_secs(3600)),
    }
}

type SendFields = (u32, bool, bool, bool, bool, bool, usize, Py<PyAny>);

fn frames_from(frames: &Bound<'_, PyAny>) -> PyResult<Vec<Frame>> {
    let py = frames.py();
    let list: Vec<SendFields> =
        frames.extract().map_err(|_| PyTypeError::new_err("frames must be a list of field tuples"))?;
    if list.is_empty() {
        return Err(PyValueError::new_err("at least one frame is needed"));
    }
    list.into_iter()
        .map(|(id, ext, rtr, fd, brs, esi, dlc, data)| {
            let d = buffer_bytes(data.bind(py))?;
            fields_to_frame(id, ext, rtr, false, fd, brs, esi, dlc, &d)
        })
        .collect()
}

/// A `send_periodic` duration in seconds: None and durations too long to
/// represent (`float("inf")`, python-can's "forever") run until stopped;
/// negative ones are zero. Raises ValueError for NaN.
fn periodic_duration(d: Option<f64>) -> PyResult<Option<Duration>> {
    match d {
        None => Ok(None),
        Some(d) if d.is_nan() => Err(PyValueError::new_err("duration must be a number of seconds or None")),
        Some(d) => Ok(Duration::try_from_secs_f64(d.max(0.0)).ok()),
    }
}

/// A periodic transmission (from `RawBus.send_periodic`): offloaded to the
/// backend where it can (kernel BCM on SocketCAN), else the runtime's native
/// timer (the virtual bus).
#[pyclass(module = "canx._canx", frozen)]
pub struct PeriodicSend {
    bus: Arc<Bus>,
    task: Mutex<PeriodicSender>,
}

#[pymethods]
impl PeriodicSend {
    /// Replaces the frames (same shape as for `send_periodic`); takes effect at the next period.
    fn modify(&self, py: Python<'_>, frames: &Bound<'_, PyAny>) -> PyResult<()> {
        let fs = frames_from(frames)?;
        self.task.lock().set_frames(fs).map_err(|e| to_py(py, e))
    }
    /// Stops sending; `start` resumes.
    fn stop(&self) {
        self.task.lock().stop();
    }
    /// (Re)starts: the first frame goes out now; stops after `duration` s
    /// (None or too long to represent, such as `float("inf")`: never).
    /// Raises ValueError for a NaN duration.
    #[pyo3(signature = (duration=None))]
    fn start(&self, py: Python<'_>, duration: Option<f64>) -> PyResult<()> {
        let d = periodic_duration(duration)?;
        self.task.lock().start(d).map_err(|e| to_py(py, e))
    }
    /// Stops and releases the timer (cannot be restarted).
    fn close(&self) {
        self.task.lock().close(&self.bus);
    }
    /// Frames sent so far (with BCM: estimated from the clock; the kernel does not report it).
    #[getter]
    fn sent(&self) -> u64 {
        self.task.lock().sent()
    }
    #[getter]
    fn running(&self) -> bool {
        self.task.lock().is_running()
    }
    /// `(count, last_error)` of frames the bus refused (BCM: the kernel reports none).
    #[getter]
    fn failed(&self) -> (u64, Option<String>) {
        self.task.lock().failed()
    }
    /// `"bcm"` (kernel broadcast manager) or `"native"` (runtime timer).
    #[getter]
    fn mechanism(&self) -> &'static str {
        self.task.lock().mechanism()
    }
}

/// The `Filter` of a python-can filter dict `{can_id, can_mask[, extended]}`
/// as `(can_id, can_mask, inverted)`: python-can's socketcan mapping (the
/// kind must agree only when `extended` is given).
#[pyfunction]
#[pyo3(signature = (can_id, can_mask, extended=None))]
pub fn pycan_filter(can_id: u32, can_mask: u32, extended: Option<bool>) -> (u32, u32, bool) {
    let mut id = can_id & EFF_MASK;
    let mut mask = can_mask & EFF_MASK;
    if let Some(e) = extended {
        mask |= EFF_FLAG;
        if e {
            id |= EFF_FLAG;
        }
    }
    (id, mask, false)
}
