//! canio `Message`, `RemoteTransmissionRequest`, `Match`, `BusState`, and the
//! canx `ErrorFrame`, as native classes (the receive path builds them without
//! running Python code).

use canx_core::frame::{id_raw, len_to_dlc, make_id, BusState as CoreState, EFF_MASK, SFF_MASK};
use canx_core::{CanFrame, FdFrame, Filter, FilterError, Frame};
use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyTuple};

use crate::runtime::RxFrame;

/// Bytes of any buffer (bytes, bytearray, memoryview, array...). Ints and
/// strings are refused with TypeError, as canio does.
pub fn buffer_bytes(obj: &Bound<'_, PyAny>) -> PyResult<Vec<u8>> {
    if let Ok(b) = obj.cast::<PyBytes>() {
        return Ok(b.as_bytes().to_vec());
    }
    let py = obj.py();
    let mv =
        py.import("builtins")?.getattr("memoryview")?.call1((obj,)).map_err(|_| {
            PyTypeError::new_err(format!("object with buffer protocol required, not {}", type_name(obj)))
        })?;
    let b = mv.call_method0("tobytes")?;
    Ok(b.cast::<PyBytes>()?.as_bytes().to_vec())
}

pub fn type_name(obj: &Bound<'_, PyAny>) -> String {
    obj.get_type().name().map(|n| n.to_string()).unwrap_or_else(|_| "?".into())
}

/// An identifier from Python: any int; negative or too wide is canio's "id out of range".
fn to_id(id: i64, extended: bool) -> PyResult<u32> {
    let limit = if extended { EFF_MASK } else { SFF_MASK };
    match u32::try_from(id) {
        Ok(v) if v <= limit => Ok(v),
        _ => Err(PyValueError::new_err("id out of range")),
    }
}

fn check_id(id: u32, extended: bool) -> PyResult<()> {
    to_id(i64::from(id), extended).map(|_| ())
}

fn check_data(data: &[u8], fd: bool) -> PyResult<()> {
    if fd {
        if len_to_dlc(data.len()).is_none() {
            return Err(PyValueError::new_err("CAN FD data length must be 0-8, 12, 16, 20, 24, 32, 48 or 64"));
        }
    } else if data.len() > 8 {
        return Err(PyValueError::new_err("data length must be 0-8"));
    }
    Ok(())
}

/// A CAN data frame: canio's `Message(id, data, *, extended=False)`.
///
/// canx extensions: `fd=True` for a CAN FD frame of 0-8, 12, 16, 20, 24, 32,
/// 48 or 64 bytes, with `bitrate_switch` and `error_state_indicator`; a
/// receive `timestamp` (float seconds since the Unix epoch; None on messages
/// you build); value equality and a readable repr.
#[pyclass(module = "canx", subclass)]
#[derive(Clone)]
pub struct Message {
    id: u32,
    data: Vec<u8>,
    extended: bool,
    fd: bool,
    brs: bool,
    esi: bool,
    timestamp: Option<f64>,
    own: bool,
}

#[pymethods]
impl Message {
    #[new]
    #[pyo3(signature = (id, data=None, *, extended=false, fd=false, bitrate_switch=false, error_state_indicator=false))]
    fn new(
        id: i64,
        data: Option<&Bound<'_, PyAny>>,
        extended: bool,
        fd: bool,
        bitrate_switch: bool,
        error_state_indicator: bool,
    ) -> PyResult<Self> {
        let data = match data {
            Some(d) => buffer_bytes(d)?,
            None => Vec::new(),
        };
        let id = to_id(id, extended)?;
        check_data(&data, fd)?;
        if !fd && (bitrate_switch || error_state_indicator) {
            return Err(PyValueError::new_err("bitrate_switch and error_state_indicator need fd=True"));
        }
        Ok(Message {
            id,
            data,
            extended,
            fd,
            brs: bitrate_switch,
            esi: error_state_indicator,
            timestamp: None,
            own: false,
        })
    }

    /// The identifier (11 bits, or 29 with `extended`).
    #[getter]
    fn id(&self) -> u32 {
        self.id
    }
    #[setter]
    fn set_id(&mut self, id: i64) -> PyResult<()> {
        self.id = to_id(id, self.extended)?;
        Ok(())
    }
    /// The payload as bytes; set from any buffer of 0-8 bytes (FD: valid FD lengths).
    #[getter]
    fn data<'py>(&self, py: Python<'py>) -> Bound<'py, PyBytes> {
        PyBytes::new(py, &self.data)
    }
    #[setter]
    fn set_data(&mut self, data: &Bound<'_, PyAny>) -> PyResult<()> {
        let d = buffer_bytes(data)?;
        check_data(&d, self.fd)?;
        self.data = d;
        Ok(())
    }
    /// True for a 29-bit identifier.
    #[getter]
    fn extended(&self) -> bool {
        self.extended
    }
    #[setter]
    fn set_extended(&mut self, extended: bool) -> PyResult<()> {
        check_id(self.id, extended)?;
        self.extended = extended;
        Ok(())
    }
    /// True for a CAN FD frame.
    #[getter]
    fn fd(&self) -> bool {
        self.fd
    }
    #[getter]
    fn bitrate_switch(&self) -> bool {
        self.brs
    }
    #[getter]
    fn error_state_indicator(&self) -> bool {
        self.esi
    }
    /// Receive time, float seconds since the Unix epoch; None if not received.
    #[getter]
    fn timestamp(&self) -> Option<f64> {
        self.timestamp
    }
    /// True if this node sent the frame (received through loopback).
    #[getter]
    fn is_own(&self) -> bool {
        self.own
    }
    /// Data length code (0-8; FD: 0-15).
    #[getter]
    fn dlc(&self) -> u8 {
        len_to_dlc(self.data.len()).unwrap_or(0)
    }

    fn __repr__(&self) -> String {
        let mut s = format!("Message(id=0x{:X}, data=bytes.fromhex('{}')", self.id, hex(&self.data));
        if self.extended {
            s.push_str(", extended=True");
        }
        if self.fd {
            s.push_str(", fd=True");
            if self.brs {
                s.push_str(", bitrate_switch=True");
            }
            if self.esi {
                s.push_str(", error_state_indicator=True");
            }
        }
        s.push(')');
        s
    }

    /// Equal when id, kind, data and FD flags are equal (the timestamp is ignored).
    fn __eq__(&self, other: &Bound<'_, PyAny>) -> bool {
        match other.cast::<Message>() {
            Ok(o) => {
                let o = o.borrow();
                self.id == o.id
                    && self.extended == o.extended
                    && self.data == o.data
                    && self.fd == o.fd
                    && self.brs == o.brs
                    && self.esi == o.esi
            }
            Err(_) => false,
        }
    }

    /// Hash of the value (id, kind, data, FD flags), consistent with `==`.
    fn __hash__(&self) -> u64 {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        (self.id, self.extended, &self.data, self.fd, self.brs, self.esi).hash(&mut h);
        h.finish()
    }

    fn __reduce__<'py>(slf: &Bound<'py, Self>) -> PyResult<(Bound<'py, PyAny>, Bound<'py, PyTuple>)> {
        let py = slf.py();
        let m = slf.borrow();
        let f = py.import("canx._canx")?.getattr("_message_from_state")?;
        let args = PyTuple::new(
            py,
            [
                m.id.into_pyobject(py)?.into_any(),
                PyBytes::new(py, &m.data).into_any(),
                m.extended.into_pyobject(py)?.to_owned().into_any(),
                m.fd.into_pyobject(py)?.to_owned().into_any(),
                m.brs.into_pyobject(py)?.to_owned().into_any(),
                m.esi.into_pyobject(py)?.to_owned().into_any(),
                m.timestamp.into_pyobject(py)?.into_any(),
            ],
        )?;
        Ok((f, args))
    }
}

#[pyfunction]
pub fn _message_from_state(
    id: u32,
    data: Vec<u8>,
    extended: bool,
    fd: bool,
    brs: bool,
    esi: bool,
    timestamp: Option<f64>,
) -> Message {
    Message { id, data, extended, fd, brs, esi, timestamp, own: false }
}

impl Message {
    pub fn to_frame(&self) -> PyResult<Frame> {
        let id = make_id(self.id, self.extended).map_err(|_| PyValueError::new_err("id out of range"))?;
        if self.fd {
            FdFrame::new(id, &self.data, self.brs, self.esi)
                .map(Frame::Fd)
                .map_err(|e| PyValueError::new_err(e.to_string()))
        } else {
            CanFrame::new(id, &self.data).map(Frame::Can).map_err(|e| PyValueError::new_err(e.to_string()))
        }
    }
}

/// A remote frame: canio's `RemoteTransmissionRequest(id, length, *, extended=False)`.
#[pyclass(module = "canx", subclass)]
#[derive(Clone)]
pub struct RemoteTransmissionRequest {
    id: u32,
    length: usize,
    extended: bool,
    timestamp: Option<f64>,
    own: bool,
}

fn check_rtr_len(length: i64) -> PyResult<usize> {
    match usize::try_from(length) {
        Ok(n) if n <= 8 => Ok(n),
        _ => Err(PyValueError::new_err("RemoteTransmissionRequests limited to 8 bytes")),
    }
}

#[pymethods]
impl RemoteTransmissionRequest {
    #[new]
    #[pyo3(signature = (id, length, *, extended=false))]
    fn new(id: i64, length: i64, extended: bool) -> PyResult<Self> {
        let id = to_id(id, extended)?;
        let length = check_rtr_len(length)?;
        Ok(RemoteTransmissionRequest { id, length, extended, timestamp: None, own: false })
    }
    #[getter]
    fn id(&self) -> u32 {
        self.id
    }
    #[setter]
    fn set_id(&mut self, id: i64) -> PyResult<()> {
        self.id = to_id(id, self.extended)?;
        Ok(())
    }
    /// Number of data bytes requested (0-8).
    #[getter]
    fn length(&self) -> usize {
        self.length
    }
    #[setter]
    fn set_length(&mut self, length: i64) -> PyResult<()> {
        self.length = check_rtr_len(length)?;
        Ok(())
    }
    #[getter]
    fn extended(&self) -> bool {
        self.extended
    }
    #[setter]
    fn set_extended(&mut self, extended: bool) -> PyResult<()> {
        check_id(self.id, extended)?;
        self.extended = extended;
        Ok(())
    }
    #[getter]
    fn timestamp(&self) -> Option<f64> {
        self.timestamp
    }
    #[getter]
    fn is_own(&self) -> bool {
        self.own
    }
    fn __repr__(&self) -> String {
        format!(
            "RemoteTransmissionRequest(id=0x{:X}, length={}{})",
            self.id,
            self.length,
            if self.extended { ", extended=True" } else { "" }
        )
    }
    fn __hash__(&self) -> u64 {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        (self.id, self.extended, self.length).hash(&mut h);
        h.finish()
    }
    fn __eq__(&self, other: &Bound<'_, PyAny>) -> bool {
        match other.cast::<RemoteTransmissionRequest>() {
            Ok(o) => {
                let o = o.borrow();
                self.id == o.id && self.extended == o.extended && self.length == o.length
            }
            Err(_) => false,
        }
    }
}

impl RemoteTransmissionRequest {
    pub fn to_frame(&self) -> PyResult<Frame> {
        let id = make_id(self.id, self.extended).map_err(|_| PyValueError::new_err("id out of range"))?;
        CanFrame::new_remote(id, self.length).map(Frame::Can).map_err(|e| PyValueError::new_err(e.to_string()))
    }
}

/// An error frame reported by the controller (canx extension; received only
/// by listeners opened with `error_frames=True`).
#[pyclass(module = "canx", frozen)]
pub struct ErrorFrame {
    /// `CAN_ERR_*` class bits (`linux/can/error.h`).
    #[pyo3(get)]
    error_class: u32,
    data: [u8; 8],
    #[pyo3(get)]
    timestamp: Option<f64>,
    state: Option<CoreState>,
}

#[pymethods]
impl ErrorFrame {
    #[getter]
    fn data<'py>(&self, py: Python<'py>) -> Bound<'py, PyBytes> {
        PyBytes::new(py, &self.data)
    }
    /// The bus state this frame reports, or None.
    #[getter]
    fn state<'py>(&self, py: Python<'py>) -> PyResult<Option<Bound<'py, PyAny>>> {
        self.state.map(|s| BusState::from(s).singleton(py)).transpose()
    }
    fn __repr__(&self) -> String {
        format!("ErrorFrame(error_class=0x{:X}, data=bytes.fromhex('{}'))", self.error_class, hex(&self.data))
    }
}

/// canio `Match(id, *, mask=None, extended=False)`: accepts frames whose
/// `(id & mask) == (match.id & mask)` and whose kind (standard or extended)
/// agrees; remote or data does not matter. `mask=None` means all bits.
#[pyclass(module = "canx", frozen)]
pub struct Match {
    #[pyo3(get)]
    id: u32,
    #[pyo3(get)]
    mask: u32,
    #[pyo3(get)]
    extended: bool,
    pub filter: Filter,
}

#[pymethods]
impl Match {
    #[new]
    #[pyo3(signature = (id, *, mask=None, extended=false))]
    fn new(id: i64, mask: Option<i64>, extended: bool) -> PyResult<Self> {
        let id = u32::try_from(id).map_err(|_| PyValueError::new_err("id out of range"))?;
        let mask =
            mask.map(|m| u32::try_from(m).map_err(|_| PyValueError::new_err("mask out of range"))).transpose()?;
        let filter = Filter::canio_match(id, mask, extended).map_err(|e| match e {
            FilterError::MaskOutOfRange => PyValueError::new_err("mask out of range"),
            _ => PyValueError::new_err("id out of range"),
        })?;
        let mask = mask.unwrap_or(if extended { EFF_MASK } else { SFF_MASK });
        Ok(Match { id, mask, extended, filter })
    }
    fn __repr__(&self) -> String {
        format!("Match(0x{:X}, mask=0x{:X}{})", self.id, self.mask, if self.extended { ", extended=True" } else { "" })
    }
    fn __eq__(&self, other: &Bound<'_, PyAny>) -> bool {
        other.cast::<Match>().map(|o| o.get().filter == self.filter).unwrap_or(false)
    }
}

/// canio `BusState`: the controller's fault-confinement state.
#[pyclass(module = "canx", eq, eq_int, frozen, hash)]
#[allow(non_camel_case_types)]
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum BusState {
    /// All is well.
    ERROR_ACTIVE,
    /// TEC or REC above 96.
    ERROR_WARNING,
    /// TEC or REC above 127: can acknowledge but not transmit active error flags.
    ERROR_PASSIVE,
    /// Off the bus; needs restart() (or auto_restart).
    BUS_OFF,
}

#[pymethods]
impl BusState {
    fn __str__(&self) -> String {
        format!("canio.BusState.{:?}", self)
    }
    fn __repr__(&self) -> String {
        format!("canio.BusState.{:?}", self)
    }
}

impl BusState {
    /// The class attribute itself, so `can.state is BusState.ERROR_ACTIVE` holds (canio's singletons).
    pub fn singleton<'py>(self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        py.get_type::<BusState>().getattr(format!("{self:?}").as_str())
    }
}

impl From<CoreState> for BusState {
    fn from(s: CoreState) -> Self {
        match s {
            CoreState::ErrorActive => BusState::ERROR_ACTIVE,
            CoreState::ErrorWarning => BusState::ERROR_WARNING,
            CoreState::ErrorPassive => BusState::ERROR_PASSIVE,
            CoreState::BusOff => BusState::BUS_OFF,
        }
    }
}

impl From<BusState> for CoreState {
    fn from(s: BusState) -> Self {
        match s {
            BusState::ERROR_ACTIVE => CoreState::ErrorActive,
            BusState::ERROR_WARNING => CoreState::ErrorWarning,
            BusState::ERROR_PASSIVE => CoreState::ErrorPassive,
            BusState::BUS_OFF => CoreState::BusOff,
        }
    }
}

/// Converts a received frame to its Python class.
pub fn rx_to_py(py: Python<'_>, rx: &RxFrame) -> PyResult<Py<PyAny>> {
    Ok(match &rx.frame {
        Frame::Can(f) if f.is_remote() => Py::new(
            py,
            RemoteTransmissionRequest {
                id: f.raw_id(),
                length: f.dlc() as usize,
                extended: f.is_extended(),
                timestamp: Some(rx.timestamp),
                own: rx.own(),
            },
        )?
        .into_any(),
        Frame::Can(f) => Py::new(
            py,
            Message {
                id: f.raw_id(),
                data: f.data().to_vec(),
                extended: f.is_extended(),
                fd: false,
                brs: false,
                esi: false,
                timestamp: Some(rx.timestamp),
                own: rx.own(),
            },
        )?
        .into_any(),
        Frame::Fd(f) => Py::new(
            py,
            Message {
                id: id_raw(f.id()),
                data: f.data().to_vec(),
                extended: f.is_extended(),
                fd: true,
                brs: f.brs(),
                esi: f.esi(),
                timestamp: Some(rx.timestamp),
                own: rx.own(),
            },
        )?
        .into_any(),
        Frame::Error(e) => {
            let mut data = [0u8; 8];
            data.copy_from_slice(e.data());
            Py::new(
                py,
                ErrorFrame { error_class: e.class(), data, timestamp: Some(rx.timestamp), state: e.bus_state() },
            )?
            .into_any()
        }
    })
}

/// Converts a Python message to a frame; canio's TypeError for anything else.
pub fn py_to_frame(obj: &Bound<'_, PyAny>) -> PyResult<Frame> {
    if let Ok(m) = obj.cast::<Message>() {
        return m.borrow().to_frame();
    }
    if let Ok(r) = obj.cast::<RemoteTransmissionRequest>() {
        return r.borrow().to_frame();
    }
    Err(PyTypeError::new_err(format!(
        "message must be of type Message or RemoteTransmissionRequest, not {}",
        type_name(obj)
    )))
}

pub fn hex(data: &[u8]) -> String {
    use std::fmt::Write;
    let mut s = String::with_capacity(data.len() * 2);
    for b in data {
        let _ = write!(s, "{b:02x}");
    }
    s
}
