//! Native ISO-TP channel (`runtime::drivers::isotp`), wrapped by
//! `python/canx/isotp.py` (`CanStack`, `socket`).
//!
//! Messages come out of `recv(timeout)` as `IsotpMessageEvent`s, error
//! reports out of `next_report(timeout)` as `IsotpErrorEvent`s (frozen
//! classes of `events.rs`). A send returns a ticket; `wait_sent(ticket,
//! timeout)` tells how it ended, with the GIL released.

use std::sync::Arc;
use std::time::Duration as StdDuration;

use canx_core::isotp::{Address, Config, NResult, PduKind, TargetAddressType};
use canx_core::Duration;
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::PyDict;

use super::can::{notify_fileno, wait_for, CAN};
use super::errors::{deinit_error, to_py, Kind, NativeError};
use super::events::{Data, IsotpErrorEvent, IsotpMessageEvent};
use super::messages::buffer_bytes;
use super::reliable::Attachment;
use crate::runtime::drivers::isotp::{
    IsoTpConfig, IsoTpDriver, IsoTpMessage, IsoTpRefused, IsoTpReport, TxStatus, MAX_SIZE,
};
use crate::runtime::EventQueue;

impl NativeError for IsoTpRefused {
    fn kind(&self) -> Kind {
        match self {
            IsoTpRefused::Invalid(_) => Kind::Value,
            IsoTpRefused::Full => Kind::Limit,
        }
    }
    fn message(&self) -> String {
        self.to_string()
    }
}

/// python-can-isotp's `AddressingMode` values (0..=6).
fn address(
    mode: u8,
    txid: Option<u32>,
    rxid: Option<u32>,
    target_address: Option<u8>,
    source_address: Option<u8>,
    address_extension: Option<u8>,
) -> PyResult<Address> {
    let need = |v: Option<u32>, what: &str| v.ok_or_else(|| PyValueError::new_err(format!("{what} is required")));
    let need8 = |v: Option<u8>, what: &str| v.ok_or_else(|| PyValueError::new_err(format!("{what} is required")));
    let id11 = |v: Option<u32>, what: &str| -> PyResult<u16> {
        u16::try_from(need(v, what)?).map_err(|_| PyValueError::new_err(format!("{what} does not fit 11 bits")))
    };
    let r = match mode {
        0 => Address::normal_11(id11(txid, "txid")?, id11(rxid, "rxid")?),
        1 => Address::normal_29(need(txid, "txid")?, need(rxid, "rxid")?),
        2 => Ok(Address::normal_fixed_29(
            need8(target_address, "target_address")?,
            need8(source_address, "source_address")?,
        )),
        3 => Address::extended_11(
            id11(txid, "txid")?,
            id11(rxid, "rxid")?,
            need8(target_address, "target_address")?,
            need8(source_address, "source_address")?,
        ),
        4 => Address::extended_29(
            need(txid, "txid")?,
            need(rxid, "rxid")?,
            need8(target_address, "target_address")?,
            need8(source_address, "source_address")?,
        ),
        5 => {
            Address::mixed_11(id11(txid, "txid")?, id11(rxid, "rxid")?, need8(address_extension, "address_extension")?)
        }
        6 => Ok(Address::mixed_29(
            need8(target_address, "target_address")?,
            need8(source_address, "source_address")?,
            need8(address_extension, "address_extension")?,
        )),
        _ => return Err(PyValueError::new_err("addressing mode must be 0..6 (python-can-isotp's AddressingMode)")),
    };
    r.map_err(|e| PyValueError::new_err(e.to_string()))
}

fn millis(what: &str, ms: u32) -> PyResult<Duration> {
    if ms == 0 {
        return Err(PyValueError::new_err(format!("{what} must be at least 1 ms")));
    }
    Ok(Duration::from_millis(u64::from(ms)))
}

fn pdu_name(k: PduKind) -> &'static str {
    match k {
        PduKind::SingleFrame => "SF",
        PduKind::FirstFrame => "FF",
        PduKind::ConsecutiveFrame => "CF",
        PduKind::FlowControl => "FC",
    }
}

fn functional(t: TargetAddressType) -> bool {
    t == TargetAddressType::Functional
}

fn report_to_py(py: Python<'_>, r: IsoTpReport) -> PyResult<Py<PyAny>> {
    let e = match r {
        IsoTpReport::TxError { ticket, result, timestamp } => IsotpErrorEvent {
            direction: "tx",
            n_result: Some(result.name()),
            pdu: None,
            ticket: Some(ticket),
            functional: false,
            timestamp,
        },
        IsoTpReport::RxError { result, interrupted_by, timestamp } => IsotpErrorEvent {
            direction: "rx",
            n_result: Some(result.name()),
            pdu: interrupted_by.map(pdu_name),
            ticket: None,
            functional: false,
            timestamp,
        },
        IsoTpReport::Unexpected { kind, ta_type, timestamp } => IsotpErrorEvent {
            direction: "rx",
            n_result: None,
            pdu: Some(pdu_name(kind)),
            ticket: None,
            functional: functional(ta_type),
            timestamp,
        },
    };
    Ok(e.into_pyobject(py)?.into_any().unbind())
}

fn message_to_py(py: Python<'_>, m: IsoTpMessage) -> PyResult<Py<PyAny>> {
    let e = IsotpMessageEvent { data: Data(m.data), functional: functional(m.ta_type), timestamp: m.timestamp };
    Ok(e.into_pyobject(py)?.into_any().unbind())
}

/// One ISO-TP channel (ISO 15765-2:2016) on a bus (see `canx.isotp.CanStack`).
///
/// `NativeIsoTp(can, mode, *, txid=None, rxid=None, target_address=None,
/// source_address=None, address_extension=None, priority=None,
/// functional_txid=None, functional_rxid=None, fd=False, brs=False,
/// tx_dl=8, padding=None, bs=0, stmin=0, stmin_override_us=None,
/// tx_wft_max=None, n_as_ms=1000, n_ar_ms=1000, n_bs_ms=1000,
/// n_cr_ms=1000, block_fc_delay_us=300, fc_repeat_ms=50, rx_check_padding_len=False, rx_padding_byte=None,
/// half_duplex=False, listen_only=False, rx_size=4095, tx_size=1048576,
/// queue_size=1024, max_waiting=64)`. `mode` is python-can-isotp's
/// `AddressingMode` value; times in ms (STmin override and block FC delay in µs; fc_repeat_ms 0: never); sizes in bytes.
#[pyclass(module = "canx._canx", frozen)]
pub struct NativeIsoTp {
    att: Attachment<IsoTpDriver>,
    messages: Arc<EventQueue<IsoTpMessage>>,
    reports: Arc<EventQueue<IsoTpReport>>,
    status: Arc<TxStatus>,
    max_single_frame: usize,
}

#[pymethods]
impl NativeIsoTp {
    #[new]
    #[pyo3(signature = (can, mode, *, txid=None, rxid=None, target_address=None, source_address=None, address_extension=None, priority=None, functional_txid=None, functional_rxid=None, fd=false, brs=false, tx_dl=8, padding=None, bs=0, stmin=0, stmin_override_us=None, tx_wft_max=None, n_as_ms=1000, n_ar_ms=1000, n_bs_ms=1000, n_cr_ms=1000, block_fc_delay_us=300, fc_repeat_ms=50, rx_check_padding_len=false, rx_padding_byte=None, half_duplex=false, listen_only=false, rx_size=4095, tx_size=1048576, queue_size=1024, max_waiting=64))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        can: &Bound<'_, CAN>,
        mode: u8,
        txid: Option<u32>,
        rxid: Option<u32>,
        target_address: Option<u8>,
        source_address: Option<u8>,
        address_extension: Option<u8>,
        priority: Option<u8>,
        functional_txid: Option<u32>,
        functional_rxid: Option<u32>,
        fd: bool,
        brs: bool,
        tx_dl: u8,
        padding: Option<u8>,
        bs: u8,
        stmin: u8,
        stmin_override_us: Option<u64>,
        tx_wft_max: Option<u8>,
        n_as_ms: u32,
        n_ar_ms: u32,
        n_bs_ms: u32,
        n_cr_ms: u32,
        block_fc_delay_us: u32,
        fc_repeat_ms: u32,
        rx_check_padding_len: bool,
        rx_padding_byte: Option<u8>,
        half_duplex: bool,
        listen_only: bool,
        rx_size: usize,
        tx_size: usize,
        queue_size: usize,
        max_waiting: usize,
    ) -> PyResult<Self> {
        let mut a = address(mode, txid, rxid, target_address, source_address, address_extension)?;
        let bad = |e: canx_core::isotp::AddressError| PyValueError::new_err(e.to_string());
        if let Some(p) = priority {
            a = a.with_priority(p).map_err(bad)?;
        }
        if let Some(id) = functional_txid {
            a = a.with_functional_txid(id).map_err(bad)?;
        }
        if let Some(id) = functional_rxid {
            a = a.with_functional_rxid(id).map_err(bad)?;
        }
        for (what, n) in [("rx_size", rx_size), ("tx_size", tx_size)] {
            if n == 0 || n > MAX_SIZE {
                return Err(PyValueError::new_err(format!("{what} must be 1..{MAX_SIZE} bytes")));
            }
        }
        let mut channel = Config::new(a);
        channel.fd = fd;
        channel.brs = brs;
        channel.tx_dl = tx_dl;
        channel.padding = padding;
        channel.bs = bs;
        channel.stmin = stmin;
        channel.stmin_override = stmin_override_us.map(Duration::from_micros);
        channel.tx_wft_max = tx_wft_max;
        channel.n_as = millis("n_as", n_as_ms)?;
        channel.n_ar = millis("n_ar", n_ar_ms)?;
        channel.n_bs = millis("rx_flowcontrol_timeout", n_bs_ms)?;
        channel.n_cr = millis("rx_consecutive_frame_timeout", n_cr_ms)?;
        channel.block_fc_delay = Duration::from_micros(u64::from(block_fc_delay_us));
        channel.fc_repeat = Duration::from_millis(u64::from(fc_repeat_ms));
        channel.rx_check_padding_len = rx_check_padding_len;
        channel.rx_padding_byte = rx_padding_byte;
        channel.half_duplex = half_duplex;
        channel.listen_only = listen_only;
        let config = IsoTpConfig { channel, rx_size, tx_size, queue_size: queue_size.max(1), max_waiting };
        let driver = IsoTpDriver::new(config).map_err(|e| PyValueError::new_err(e.to_string()))?;
        let (messages, reports, status) = (driver.events(), driver.reports(), driver.status());
        let att = Attachment::new(can, driver)?;
        let max_single_frame = att.peek(can.py(), |d| d.max_single_frame());
        Ok(NativeIsoTp { att, messages, reports, status, max_single_frame })
    }

    /// Queues `data` (bytes-like, 1..=tx_size bytes; functional: one SF's
    /// worth) and returns its ticket. `watch=True` keeps its result for
    /// `wait_sent`. ValueError for a message the channel cannot send,
    /// `canx.LimitError` when `max_waiting` messages wait.
    #[pyo3(signature = (data, functional=false, watch=false))]
    fn send(&self, py: Python<'_>, data: &Bound<'_, PyAny>, functional: bool, watch: bool) -> PyResult<u64> {
        let data = buffer_bytes(data)?;
        let ta = if functional { TargetAddressType::Functional } else { TargetAddressType::Physical };
        let status = self.status.clone();
        let r = self.att.with(py, move |d| {
            let r = d.send(&data, ta);
            if let (Ok(t), true) = (&r, watch) {
                // Watched before the receive thread can end it: the engine is locked here.
                status.watch(*t);
            }
            r
        })?;
        r.map_err(|e| to_py(py, e))
    }

    /// How ticket `ticket` (sent with `watch=True`) ended: the N_Result
    /// name (`"N_OK"`, `"N_TIMEOUT_Bs"`, ...), or None when it has not
    /// ended within `timeout` s (None: wait forever; 0: just look).
    #[pyo3(signature = (ticket, timeout=None))]
    fn wait_sent(&self, py: Python<'_>, ticket: u64, timeout: Option<f64>) -> PyResult<Option<&'static str>> {
        let status = &self.status;
        let r: Option<NResult> = wait_for(
            py,
            timeout,
            || self.att.is_closed(),
            |slice| if slice.is_zero() { status.take(ticket) } else { status.wait(ticket, slice) },
        )?;
        if r.is_none() && self.att.is_closed() && !status.ended(ticket) {
            return Err(deinit_error());
        }
        Ok(r.map(NResult::name))
    }

    /// Stops keeping the result of a watched ticket (a caller gave up waiting).
    fn forget(&self, ticket: u64) {
        self.status.forget(ticket);
    }

    /// The next message received (`IsotpMessageEvent`), or None after
    /// `timeout` s (None: wait forever; 0: just look).
    #[pyo3(signature = (timeout=None))]
    fn recv(&self, py: Python<'_>, timeout: Option<f64>) -> PyResult<Option<Py<PyAny>>> {
        take(py, &self.att, &self.messages, timeout)?.map(|m| message_to_py(py, m)).transpose()
    }

    /// The next error report (`IsotpErrorEvent`), or None after `timeout` s.
    #[pyo3(signature = (timeout=None))]
    fn next_report(&self, py: Python<'_>, timeout: Option<f64>) -> PyResult<Option<Py<PyAny>>> {
        take(py, &self.att, &self.reports, timeout)?.map(|r| report_to_py(py, r)).transpose()
    }

    /// Messages received and not read yet.
    fn available(&self) -> usize {
        self.messages.len()
    }

    /// A send is in progress or waiting.
    fn transmitting(&self, py: Python<'_>) -> bool {
        self.att.peek(py, |d| d.transmitting())
    }

    /// A segmented reception is in progress.
    fn receiving(&self, py: Python<'_>) -> bool {
        self.att.peek(py, |d| d.receiving())
    }

    /// Abandons the message being sent and the waiting ones; returns how many.
    fn stop_sending(&self, py: Python<'_>) -> PyResult<usize> {
        self.att.with(py, |d| d.stop_sending())
    }

    /// Drops the messages received and not read; returns how many.
    fn clear_rx_queue(&self) -> usize {
        let mut n = 0;
        while self.messages.try_recv().is_some() {
            n += 1;
        }
        n
    }

    /// Largest message one SF carries (functional sends are limited to it).
    #[getter]
    fn max_single_frame(&self) -> usize {
        self.max_single_frame
    }

    fn stats<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let (s, d) = self.att.peek(py, |e| e.stats());
        let out = PyDict::new(py);
        out.set_item("tx_messages", s.tx_messages)?;
        out.set_item("rx_messages", s.rx_messages)?;
        out.set_item("tx_frames", s.tx_frames)?;
        out.set_item("rx_frames", s.rx_frames)?;
        out.set_item("tx_errors", s.tx_errors)?;
        out.set_item("rx_errors", s.rx_errors)?;
        out.set_item("malformed", s.malformed)?;
        out.set_item("unexpected", s.unexpected)?;
        out.set_item("wait_sent", s.wait_sent)?;
        out.set_item("wait_received", s.wait_received)?;
        out.set_item("fc_repeated", s.fc_repeated)?;
        out.set_item("first_frames", d.first_frames)?;
        out.set_item("min_paced_gap_us", d.min_paced_gap_us)?;
        out.set_item("waiting", d.waiting)?;
        out.set_item("send_failed", d.send_failed)?;
        out.set_item("messages_dropped", self.messages.dropped())?;
        out.set_item("reports_dropped", self.reports.dropped())?;
        out.set_item("events_dropped", u64::from(s.dropped_events))?;
        Ok(out)
    }

    fn close(&self) {
        self.att.close();
        self.messages.wake();
        self.reports.wake();
    }

    /// The message queue's readiness descriptor (asyncio `add_reader`):
    /// readable while messages are queued and after `close()`; may be
    /// spuriously readable. `canx.UnsupportedError` where there is none.
    fn fileno(&self, py: Python<'_>) -> PyResult<i64> {
        notify_fileno(py, self.messages.notify())
    }

    /// The same for the error reports' queue.
    fn report_fileno(&self, py: Python<'_>) -> PyResult<i64> {
        notify_fileno(py, self.reports.notify())
    }

    #[getter]
    fn closed(&self) -> bool {
        self.att.is_closed()
    }
}

fn take<T: Send>(
    py: Python<'_>,
    att: &Attachment<IsoTpDriver>,
    q: &EventQueue<T>,
    timeout: Option<f64>,
) -> PyResult<Option<T>> {
    match q.try_recv() {
        Some(e) => Ok(Some(e)),
        None if att.is_closed() => Err(deinit_error()),
        None => wait_for(
            py,
            timeout,
            || att.is_closed(),
            |slice| if slice.is_zero() { q.try_recv() } else { q.recv_timeout(slice.min(StdDuration::from_secs(1))) },
        ),
    }
}
