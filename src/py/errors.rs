//! The one mapping from runtime errors to Python exceptions. The exception
//! classes themselves are defined once, in `python/canx/errors.py`.

use pyo3::exceptions::{PyRuntimeError, PyValueError};
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::PyType;

use crate::runtime::Error;

/// canio's message for any use of a deinitialized object.
pub const DEINIT_MSG: &str = "Object has been deinitialized and can no longer be used. Create a new object.";

pub fn deinit_error() -> PyErr {
    PyValueError::new_err(DEINIT_MSG)
}

fn class<'py>(py: Python<'py>, name: &'static str) -> PyResult<Bound<'py, PyType>> {
    static MODULE: PyOnceLock<Py<PyModule>> = PyOnceLock::new();
    let m = MODULE.get_or_try_init(py, || py.import("canx.errors").map(|m| m.unbind()))?;
    Ok(m.bind(py).getattr(name)?.cast_into::<PyType>()?)
}

/// Builds an exception of class `name` from `canx.errors`.
pub fn canx_err(py: Python<'_>, name: &'static str, msg: String) -> PyErr {
    match class(py, name) {
        Ok(cls) => PyErr::from_type(cls, msg),
        Err(e) => PyRuntimeError::new_err(format!("{msg} (and canx.errors is missing: {e})")),
    }
}

pub fn to_py(py: Python<'_>, e: Error) -> PyErr {
    let msg = e.to_string();
    match e {
        Error::BadChannel(_) => canx_err(py, "ChannelError", msg),
        Error::Os { .. } => canx_err(py, "InterfaceError", msg),
        Error::InterfaceDown(_) => canx_err(py, "InterfaceDownError", msg),
        Error::BusOff => canx_err(py, "BusOffError", msg),
        Error::Silent => canx_err(py, "SilentModeError", msg),
        Error::SendTimeout => canx_err(py, "SendTimeoutError", msg),
        Error::Unsupported(_) => canx_err(py, "UnsupportedError", msg),
        Error::Closed => deinit_error(),
    }
}
