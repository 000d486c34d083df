//! The one table from native errors to Python exceptions.
//!
//! Every error type of the runtime and its drivers implements [`NativeError`],
//! which names a [`Kind`]; [`to_py`] turns it into a Python exception. The
//! exception classes are defined once, in `python/canx/errors.py`; each
//! [`Kind`] names its class there. [`init`] runs when `canx._canx` is
//! imported: it imports `canx.errors` once, looks every class up and caches
//! them, so a class missing from `canx.errors` fails that import instead of
//! surfacing as a `RuntimeError` the first time such an error is raised.

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyList, PyType};

use crate::runtime::drivers::canx_proto::CanxRefused;
use crate::runtime::drivers::j1939::J1939Error;
use crate::runtime::drivers::megasquirt::MsError;
use crate::runtime::drivers::reliable::Refused;
use crate::runtime::Error;
use canx_core::j1939::EcuError;

/// canio's message for any use of a deinitialized object.
pub const DEINIT_MSG: &str = "Object has been deinitialized and can no longer be used. Create a new object.";

/// The Python exception a native error becomes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// A bad argument: the builtin `ValueError` (canio parity).
    Value,
    /// Use of a closed or deinitialized object: `canx.errors.ClosedError`, a
    /// `ValueError` with canio's message.
    Closed,
    Channel,
    Interface,
    InterfaceDown,
    BusOff,
    SilentMode,
    SendTimeout,
    Unsupported,
    Limit,
    J1939,
    AddressClaim,
    MegasquirtBusy,
    MegasquirtTimeout,
    ReceiveThread,
}

/// Every kind with a class in `canx.errors`, in the order of the cache.
const CLASSES: [(Kind, &str); 14] = [
    (Kind::Closed, "ClosedError"),
    (Kind::Channel, "ChannelError"),
    (Kind::Interface, "InterfaceError"),
    (Kind::InterfaceDown, "InterfaceDownError"),
    (Kind::BusOff, "BusOffError"),
    (Kind::SilentMode, "SilentModeError"),
    (Kind::SendTimeout, "SendTimeoutError"),
    (Kind::Unsupported, "UnsupportedError"),
    (Kind::Limit, "LimitError"),
    (Kind::J1939, "J1939Error"),
    (Kind::AddressClaim, "AddressClaimError"),
    (Kind::MegasquirtBusy, "MegasquirtBusyError"),
    (Kind::MegasquirtTimeout, "MegasquirtTimeoutError"),
    (Kind::ReceiveThread, "ReceiveThreadError"),
];

static TABLE: PyOnceLock<Vec<Py<PyType>>> = PyOnceLock::new();

fn load(py: Python<'_>) -> PyResult<Vec<Py<PyType>>> {
    let m = py.import("canx.errors")?;
    let base = m.getattr("CanxError")?;
    CLASSES
        .iter()
        .map(|(_, name)| {
            let cls = m.getattr(*name)?.cast_into::<PyType>()?;
            if !cls.is_subclass(&base)? {
                return Err(pyo3::exceptions::PyImportError::new_err(format!("canx.errors.{name} is not a CanxError")));
            }
            Ok(cls.unbind())
        })
        .collect()
}

/// Looks every class of the table up in `canx.errors` (once). Called from the
/// module init of `canx._canx`; an error there fails `import canx`.
pub fn init(py: Python<'_>) -> PyResult<()> {
    TABLE.get_or_try_init(py, || load(py)).map(|_| ())
}

/// The class of `kind`; `None` for the builtin `ValueError`.
fn class(py: Python<'_>, kind: Kind) -> Option<Bound<'_, PyType>> {
    let i = CLASSES.iter().position(|(k, _)| *k == kind)?;
    // `init` ran at import, so the table is there; if it somehow is not, the
    // caller falls back to ValueError/RuntimeError rather than panicking.
    TABLE.get(py).map(|t| t[i].bind(py).clone())
}

/// Builds the exception of `kind` with message `msg` (a `Closed` kind always
/// carries canio's [`DEINIT_MSG`]).
pub fn raise(py: Python<'_>, kind: Kind, msg: impl Into<String>) -> PyErr {
    let msg = if kind == Kind::Closed { DEINIT_MSG.to_string() } else { msg.into() };
    match class(py, kind) {
        Some(cls) => PyErr::from_type(cls, msg),
        None if kind == Kind::Value || kind == Kind::Closed => PyValueError::new_err(msg),
        None => pyo3::exceptions::PyRuntimeError::new_err(msg),
    }
}

/// canio's `ValueError` for a deinitialized object (a `canx.errors.ClosedError`).
pub fn deinit_error() -> PyErr {
    Python::attach(|py| raise(py, Kind::Closed, DEINIT_MSG))
}

/// A native error: which exception it becomes, and with what message.
pub trait NativeError {
    fn kind(&self) -> Kind;
    /// The exception's message.
    fn message(&self) -> String;
}

/// Converts any native error into its Python exception (the one mapping).
pub fn to_py<E: NativeError>(py: Python<'_>, e: E) -> PyErr {
    raise(py, e.kind(), e.message())
}

impl NativeError for Error {
    fn kind(&self) -> Kind {
        match self {
            Error::BadChannel(_) => Kind::Channel,
            Error::Os { .. } => Kind::Interface,
            Error::InterfaceDown(_) => Kind::InterfaceDown,
            Error::BusOff => Kind::BusOff,
            Error::Silent => Kind::SilentMode,
            Error::SendTimeout => Kind::SendTimeout,
            Error::Unsupported(_) => Kind::Unsupported,
            Error::Closed => Kind::Closed,
            Error::ReceiveThreadStopped(_) => Kind::ReceiveThread,
        }
    }
    fn message(&self) -> String {
        self.to_string()
    }
}

impl NativeError for J1939Error {
    fn kind(&self) -> Kind {
        match self {
            J1939Error::Closed => Kind::Closed,
            J1939Error::Ecu(EcuError::NoAddress) => Kind::AddressClaim,
            J1939Error::Ecu(EcuError::TooLong | EcuError::Invalid | EcuError::Claim(_) | EcuError::Config(_)) => {
                Kind::Value
            }
            J1939Error::Ecu(EcuError::Full | EcuError::Transport(_)) => Kind::J1939,
        }
    }
    fn message(&self) -> String {
        match self {
            J1939Error::Ecu(EcuError::NoAddress) => "no claimed address: call claim_address() first (J1939-81)".into(),
            e => e.to_string(),
        }
    }
}

impl NativeError for MsError {
    fn kind(&self) -> Kind {
        match self {
            MsError::Invalid(_) => Kind::Value,
            MsError::Busy => Kind::MegasquirtBusy,
            MsError::Closed => Kind::Closed,
        }
    }
    fn message(&self) -> String {
        self.to_string()
    }
}

impl NativeError for Refused {
    fn kind(&self) -> Kind {
        match self {
            Refused::Invalid(_) => Kind::Value,
            Refused::TooManyOutstanding | Refused::PeerTableFull => Kind::Limit,
        }
    }
    fn message(&self) -> String {
        self.to_string()
    }
}

impl NativeError for CanxRefused {
    fn kind(&self) -> Kind {
        match self {
            CanxRefused::Invalid(_) => Kind::Value,
            CanxRefused::Full => Kind::Limit,
        }
    }
    fn message(&self) -> String {
        match self {
            CanxRefused::Invalid(e) => e.to_string(),
            CanxRefused::Full => "the CAN-X endpoint's transmit queue is full (max_waiting)".into(),
        }
    }
}

/// `_canx._error_table()`: (kind, class) for every kind with a class, so a
/// test can check the table against `canx.errors`.
#[pyfunction]
pub fn _error_table(py: Python<'_>) -> PyResult<Bound<'_, PyList>> {
    init(py)?;
    let out = PyList::empty(py);
    for (kind, _) in CLASSES {
        out.append((format!("{kind:?}"), class(py, kind)))?;
    }
    Ok(out)
}
