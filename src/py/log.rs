//! candump `.log` lines, can-utils frame text and candump filter items for
//! Python (`canx.log`, the command-line tools), over `canx_core::log` and
//! `canx_core::filter`. Frames cross as the field tuples of `RawBus`.

use canx_core::log::{self, Direction, LogLine, Timestamp};
use canx_core::{FilterItem, Frame};
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::PyTuple;

use super::messages::buffer_bytes;
use super::pycan::{fields_to_frame, frame_tuple};

/// Parses one candump log line. Returns `(timestamp, channel, fields,
/// is_rx)`: `timestamp` epoch seconds (float), `fields` the 11-tuple of
/// `RawBus.recv` (own = direction T), `is_rx` True/False when the line has
/// an R/T mark, else None. Raises ValueError naming the problem.
#[pyfunction]
pub fn parse_log_line<'py>(py: Python<'py>, line: &str) -> PyResult<(f64, String, Bound<'py, PyTuple>, Option<bool>)> {
    let l = log::parse_line(line).map_err(|e| PyValueError::new_err(e.to_string()))?;
    let is_rx = l.direction.map(|d| d == Direction::Rx);
    let ts = l.timestamp.as_secs_f64();
    Ok((ts, l.channel.to_string(), frame_tuple(py, &l.frame, ts, is_rx == Some(false))?, is_rx))
}

/// Parses can-utils frame text (`cansend` syntax: `123#DEADBEEF`,
/// `123#R`, `123##1AABB`, `12345678#00`) into the field 11-tuple
/// (timestamp 0.0). Raises ValueError naming the problem.
#[pyfunction]
pub fn parse_frame_text<'py>(py: Python<'py>, text: &str) -> PyResult<Bound<'py, PyTuple>> {
    let f = log::parse_frame(text.trim()).map_err(|e| PyValueError::new_err(e.to_string()))?;
    frame_tuple(py, &f, 0.0, false)
}

#[allow(clippy::too_many_arguments)]
fn frame_of(
    id: u32,
    ext: bool,
    rtr: bool,
    err: bool,
    fd: bool,
    brs: bool,
    esi: bool,
    dlc: usize,
    data: &Bound<'_, PyAny>,
) -> PyResult<Frame> {
    let d = if data.is_none() { Vec::new() } else { buffer_bytes(data)? };
    fields_to_frame(id, ext, rtr, err, fd, brs, esi, dlc, &d)
}

/// One candump log line (no newline) from python-can fields:
/// `(SECONDS.MICROS) CHANNEL FRAME[ R|T]`; `is_rx` None writes no mark.
#[pyfunction]
#[pyo3(signature = (timestamp, channel, arbitration_id, is_extended_id, is_remote_frame, is_error_frame, is_fd, bitrate_switch, error_state_indicator, dlc, data, is_rx=None))]
#[allow(clippy::too_many_arguments)]
pub fn format_log_line(
    timestamp: f64,
    channel: &str,
    arbitration_id: u32,
    is_extended_id: bool,
    is_remote_frame: bool,
    is_error_frame: bool,
    is_fd: bool,
    bitrate_switch: bool,
    error_state_indicator: bool,
    dlc: usize,
    data: &Bound<'_, PyAny>,
    is_rx: Option<bool>,
) -> PyResult<String> {
    if channel.is_empty() || channel.contains(char::is_whitespace) {
        return Err(PyValueError::new_err(format!("channel {channel:?} cannot be written to a log line")));
    }
    let frame = frame_of(
        arbitration_id,
        is_extended_id,
        is_remote_frame,
        is_error_frame,
        is_fd,
        bitrate_switch,
        error_state_indicator,
        dlc,
        data,
    )?;
    let line = LogLine {
        timestamp: Timestamp::from_secs_f64(timestamp),
        channel,
        frame,
        direction: is_rx.map(|r| if r { Direction::Rx } else { Direction::Tx }),
    };
    let mut s = String::with_capacity(48);
    log::write_line(&mut s, &line).map_err(|_| PyValueError::new_err("cannot format"))?;
    Ok(s)
}

/// can-utils frame text from python-can fields (`123#DEADBEEF`).
#[pyfunction]
#[allow(clippy::too_many_arguments)]
pub fn format_frame_text(
    arbitration_id: u32,
    is_extended_id: bool,
    is_remote_frame: bool,
    is_error_frame: bool,
    is_fd: bool,
    bitrate_switch: bool,
    error_state_indicator: bool,
    dlc: usize,
    data: &Bound<'_, PyAny>,
) -> PyResult<String> {
    let frame = frame_of(
        arbitration_id,
        is_extended_id,
        is_remote_frame,
        is_error_frame,
        is_fd,
        bitrate_switch,
        error_state_indicator,
        dlc,
        data,
    )?;
    let mut s = String::with_capacity(24);
    log::write_frame(&mut s, &frame).map_err(|_| PyValueError::new_err("cannot format"))?;
    Ok(s)
}

/// One candump filter item (`candump --help`): `("filter", can_id,
/// can_mask, inverted)` for `<id>:<mask>` / `<id>~<mask>` (Linux
/// `can_filter` values, an 8-digit id is extended), `("error_mask", mask)`
/// for `#<mask>`, `("join",)` for `j`. Raises ValueError naming the problem.
#[pyfunction]
pub fn parse_candump_filter<'py>(py: Python<'py>, item: &str) -> PyResult<Bound<'py, PyTuple>> {
    let it = FilterItem::parse(item).map_err(|e| PyValueError::new_err(e.to_string()))?;
    match it {
        FilterItem::Filter(f) => ("filter", f.id, f.mask, f.inverted).into_pyobject(py),
        FilterItem::ErrorMask(m) => ("error_mask", m).into_pyobject(py),
        FilterItem::Join => ("join",).into_pyobject(py),
    }
}
