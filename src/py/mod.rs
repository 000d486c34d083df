//! The Python binding: module `canx._canx`.

mod can;
mod canx_proto;
mod errors;
mod events;
mod isotp;
mod j1939;
mod log;
mod megasquirt;
mod messages;
mod pycan;
mod reliable;

use pyo3::prelude::*;

/// Names of the virtual channels that have at least one open node.
#[pyfunction]
fn virtual_channels() -> Vec<String> {
    crate::runtime::virtual_bus::channels()
}

#[pymodule]
fn _canx(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    // The exception classes, looked up once: a class missing from canx.errors fails this import.
    errors::init(m.py())?;
    m.add_function(wrap_pyfunction!(errors::_error_table, m)?)?;
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
    m.add_function(wrap_pyfunction!(can::_native_waits, m)?)?;
    m.add_function(wrap_pyfunction!(can::_virtual_fail_receive, m)?)?;
    m.add_class::<megasquirt::MegasquirtNode>()?;
    m.add_class::<megasquirt::MegasquirtTable>()?;
    m.add_class::<megasquirt::MegasquirtBroadcastDecoder>()?;
    // Reliable delivery and CAN-X engines (wrapped by canx.reliable / canx.canxproto).
    m.add_class::<reliable::NativeReliableSender>()?;
    m.add_class::<reliable::NativeReliableReceiver>()?;
    m.add_class::<reliable::NativeGuideSender>()?;
    m.add_class::<reliable::NativeGuideListener>()?;
    m.add_class::<canx_proto::NativeCanxEndpoint>()?;
    m.add_class::<isotp::NativeIsoTp>()?;
    m.add_class::<pycan::RawBus>()?;
    m.add_class::<pycan::PeriodicSend>()?;
    m.add_function(wrap_pyfunction!(pycan::pycan_filter, m)?)?;
    m.add_function(wrap_pyfunction!(pycan::_pycan_message_slots, m)?)?;
    m.add_function(wrap_pyfunction!(log::parse_log_line, m)?)?;
    m.add_function(wrap_pyfunction!(log::format_log_line, m)?)?;
    m.add_function(wrap_pyfunction!(log::parse_frame_text, m)?)?;
    m.add_function(wrap_pyfunction!(log::format_frame_text, m)?)?;
    m.add_function(wrap_pyfunction!(log::parse_candump_filter, m)?)?;
    j1939::register(m)?;
    events::register(m)?;
    Ok(())
}
