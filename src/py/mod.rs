//! The Python binding: module `canx._canx`.

mod can;
mod errors;
mod j1939;
mod messages;

use pyo3::prelude::*;

/// Names of the virtual channels that have at least one open node.
#[pyfunction]
fn virtual_channels() -> Vec<String> {
    crate::runtime::virtual_bus::channels()
}

#[pymodule]
fn _canx(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    m.add_class::<can::CAN>()?;
    m.add_class::<can::Listener>()?;
    m.add_class::<messages::Message>()?;
    m.add_class::<messages::RemoteTransmissionRequest>()?;
    m.add_class::<messages::ErrorFrame>()?;
    m.add_class::<messages::Match>()?;
    m.add_class::<messages::BusState>()?;
    m.add_function(wrap_pyfunction!(messages::_message_from_state, m)?)?;
    m.add_function(wrap_pyfunction!(virtual_channels, m)?)?;
    m.add_function(wrap_pyfunction!(can::_begin_shutdown, m)?)?;
    j1939::register(m)?;
    Ok(())
}
