//! MegaSquirt binding: the native node (`canx._canx.MegasquirtNode`), its
//! tables (`MegasquirtTable`) and the broadcast decoder
//! (`MegasquirtBroadcastDecoder`). The public Python API is
//! `canx.megasquirt` (python/canx/megasquirt.py), which wraps these.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use canx_core::megasquirt::broadcast::{ADVANCED, DASH};
use canx_core::megasquirt::{Access, BroadcastDecoder, MsgType, XtndType};
use parking_lot::Mutex;
use pyo3::exceptions::{PyIndexError, PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyList, PySlice, PyTuple};

use super::can::{notify_fileno, wait_for, CAN};
use super::errors::{deinit_error, raise, to_py, Kind};
use super::events::{
    Data, MegasquirtBurnEvent, MegasquirtForwardEvent, MegasquirtRefusedEvent, MegasquirtSuspendEvent,
    MegasquirtUnhandledEvent, MegasquirtWriteEvent, MegasquirtXsubEvent,
};
use super::messages::{buffer_bytes, py_to_frame};
use crate::runtime::drivers::megasquirt::{MsError, Node, NodeConfig, NodeEvent, Outcome};

/// Through the one table (`errors.rs`).
fn ms_err(py: Python<'_>, e: MsError) -> PyErr {
    to_py(py, e)
}

fn timeout_err(py: Python<'_>, msg: String) -> PyErr {
    raise(py, Kind::MegasquirtTimeout, msg)
}

/// The firmware's name of message number `n` (0..7 header types, 8+ MSG_XTND subtypes).
fn msg_name(n: u8) -> &'static str {
    if n < 8 {
        MsgType::from_bits(n).name()
    } else {
        XtndType::from_u8(n).map_or("MSG_XTND", XtndType::name)
    }
}

/// The native MegaSquirt node. Use `canx.megasquirt.Node`.
#[pyclass(module = "canx._canx", frozen)]
pub struct MegasquirtNode {
    node: Arc<Node>,
    /// What each pending operation is, for error messages.
    what: Mutex<HashMap<u64, String>>,
}

impl MegasquirtNode {
    fn live(&self) -> PyResult<()> {
        if self.node.is_closed() {
            Err(deinit_error())
        } else {
            Ok(())
        }
    }

    /// Starts an operation, waiting (within `timeout`) for a free slot if all are busy.
    fn start_op(
        &self,
        py: Python<'_>,
        timeout: Option<f64>,
        start: impl Fn(&Node) -> Result<u64, MsError> + Sync,
    ) -> PyResult<u64> {
        let node = &*self.node;
        let got = wait_for(
            py,
            timeout,
            || node.is_closed(),
            |slice| match start(node) {
                Err(MsError::Busy) => {
                    std::thread::sleep(slice.min(Duration::from_millis(2)));
                    None
                }
                other => Some(other),
            },
        )?;
        match got {
            Some(r) => r.map_err(|e| ms_err(py, e)),
            None => Err(ms_err(py, MsError::Busy)),
        }
    }

    fn outcome_to_py(&self, py: Python<'_>, key: u64, o: Outcome) -> PyResult<Py<PyAny>> {
        let what = self.what.lock().remove(&key).unwrap_or_else(|| "request".into());
        Ok(match o {
            Outcome::Data(d) => PyBytes::new(py, &d).into_any().unbind(),
            Outcome::Done => py.None(),
            Outcome::Crc(c) => c.into_pyobject(py)?.into_any().unbind(),
            Outcome::Burn(ack) => ack.into_pyobject(py)?.to_owned().into_any().unbind(),
            Outcome::TimedOut => {
                let cfg = self.node.config();
                return Err(timeout_err(
                    py,
                    format!(
                        "{what}: no reply after {} tries of {:.0} ms",
                        u32::from(cfg.retries) + 1,
                        cfg.request_timeout.as_secs_f64() * 1000.0
                    ),
                ));
            }
        })
    }

    /// Starts, then waits for the outcome: the blocking form of every operation.
    fn run(
        &self,
        py: Python<'_>,
        what: String,
        timeout: Option<f64>,
        start: impl Fn(&Node) -> Result<u64, MsError> + Sync,
    ) -> PyResult<Py<PyAny>> {
        if let Some(t) = timeout {
            if t.is_nan() || t < 0.0 {
                return Err(PyValueError::new_err("timeout must be >= 0 seconds or None"));
            }
        }
        let t0 = Instant::now();
        let key = self.start_op(py, timeout, start)?;
        self.what.lock().insert(key, what.clone());
        let left = timeout.map(|t| (t - t0.elapsed().as_secs_f64()).max(0.0));
        let node = &*self.node;
        let got = wait_for(py, left, || node.is_closed(), |slice| node.wait(key, slice));
        match got {
            Ok(Some(o)) => self.outcome_to_py(py, key, o),
            Ok(None) => {
                self.abandon(py, key);
                Err(timeout_err(py, format!("{what}: no reply within {:.3} s", timeout.unwrap_or(0.0))))
            }
            Err(e) => {
                self.abandon(py, key);
                Err(e)
            }
        }
    }

    fn abandon(&self, py: Python<'_>, key: u64) {
        py.detach(|| self.node.abandon(key));
        self.what.lock().remove(&key);
    }
}

fn parse_timeout(t: f64) -> PyResult<Duration> {
    Duration::try_from_secs_f64(t)
        .map_err(|_| PyValueError::new_err("request_timeout must be a positive number of seconds"))
}

#[pymethods]
impl MegasquirtNode {
    /// `MegasquirtNode(can, can_id, *, reply_blk=6, request_timeout=0.1,
    /// retries=2, realtime_blk=7, auto_burn_ack=False, event_capacity=4096)`.
    #[new]
    #[pyo3(signature = (can, can_id, *, reply_blk=6, request_timeout=0.1, retries=2, realtime_blk=7, auto_burn_ack=false, event_capacity=4096))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        py: Python<'_>,
        can: PyRef<'_, CAN>,
        can_id: u8,
        reply_blk: u8,
        request_timeout: f64,
        retries: u8,
        realtime_blk: u8,
        auto_burn_ack: bool,
        event_capacity: usize,
    ) -> PyResult<Self> {
        let bus = can.bus_arc()?;
        let mut cfg = NodeConfig::new(can_id);
        cfg.reply_blk = reply_blk;
        cfg.request_timeout = parse_timeout(request_timeout)?;
        cfg.retries = retries;
        cfg.realtime_blk = realtime_blk;
        cfg.auto_burn_ack = auto_burn_ack;
        cfg.event_capacity = event_capacity.max(1);
        let node = py.detach(|| Node::attach(bus, cfg)).map_err(|e| ms_err(py, e))?;
        Ok(MegasquirtNode { node: Arc::new(node), what: Mutex::new(HashMap::new()) })
    }

    #[getter]
    fn can_id(&self) -> u8 {
        self.node.config().can_id
    }
    #[getter]
    fn reply_blk(&self) -> u8 {
        self.node.config().reply_blk
    }
    #[getter]
    fn closed(&self) -> bool {
        self.node.is_closed()
    }

    /// Serves table `blk` with initial bytes `data`; returns its `MegasquirtTable`.
    #[pyo3(signature = (blk, data, *, readable=true, writable=false))]
    fn serve_table(
        &self,
        py: Python<'_>,
        blk: u8,
        data: &Bound<'_, PyAny>,
        readable: bool,
        writable: bool,
    ) -> PyResult<MegasquirtTable> {
        let bytes = buffer_bytes(data)?;
        py.detach(|| self.node.serve_table(blk, Access { read: readable, write: writable }, bytes))
            .map_err(|e| ms_err(py, e))?;
        Ok(MegasquirtTable { node: self.node.clone(), blk })
    }

    /// The served table `blk`. Raises KeyError if it is not served.
    fn table(&self, py: Python<'_>, blk: u8) -> PyResult<MegasquirtTable> {
        match py.detach(|| self.node.table_info(blk)) {
            Some(_) => Ok(MegasquirtTable { node: self.node.clone(), blk }),
            None => Err(pyo3::exceptions::PyKeyError::new_err(format!("table {blk} is not served by this node"))),
        }
    }

    /// Numbers of the served tables, ascending.
    fn tables(&self, py: Python<'_>) -> Vec<u16> {
        py.detach(|| self.node.tables()).into_iter().map(u16::from).collect()
    }

    fn set_outmsg(&self, py: Python<'_>, number: u8, offsets: Vec<u16>) -> PyResult<()> {
        py.detach(|| self.node.set_outmsg(number, &offsets)).map_err(|e| ms_err(py, e))
    }

    fn ack_burn(&self, py: Python<'_>, to: u8, ok: bool) -> PyResult<()> {
        py.detach(|| self.node.ack_burn(to, ok)).map_err(|e| ms_err(py, e))
    }

    #[pyo3(signature = (board, blk, offset, length, timeout=None))]
    fn read(
        &self,
        py: Python<'_>,
        board: u8,
        blk: u8,
        offset: u16,
        length: usize,
        timeout: Option<f64>,
    ) -> PyResult<Py<PyAny>> {
        let what = format!("read of {length} bytes at table {blk} offset {offset} of board {board}");
        self.run(py, what, timeout, |n| n.start_read(board, blk, offset, length))
    }

    #[pyo3(signature = (board, blk, offset, data, timeout=None))]
    fn write(
        &self,
        py: Python<'_>,
        board: u8,
        blk: u8,
        offset: u16,
        data: &Bound<'_, PyAny>,
        timeout: Option<f64>,
    ) -> PyResult<Py<PyAny>> {
        let data = buffer_bytes(data)?;
        let what = format!("write of {} bytes at table {blk} offset {offset} of board {board}", data.len());
        self.run(py, what, timeout, |n| n.start_write(board, blk, offset, &data))
    }

    #[pyo3(signature = (board, blk, timeout=None))]
    fn crc(&self, py: Python<'_>, board: u8, blk: u8, timeout: Option<f64>) -> PyResult<Py<PyAny>> {
        self.run(py, format!("CRC of table {blk} of board {board}"), timeout, |n| n.start_crc(board, blk))
    }

    #[pyo3(signature = (board, blk, wait_ack=false, timeout=None))]
    fn burn(&self, py: Python<'_>, board: u8, blk: u8, wait_ack: bool, timeout: Option<f64>) -> PyResult<Py<PyAny>> {
        self.run(py, format!("burn of table {blk} of board {board}"), timeout, |n| n.start_burn(board, blk, wait_ack))
    }

    /// OUTMSG_REQ; `into=None` needs `length` and returns the bytes.
    #[pyo3(signature = (board, number, length=None, into=None, timeout=None))]
    fn request_outmsg(
        &self,
        py: Python<'_>,
        board: u8,
        number: u8,
        length: Option<usize>,
        into: Option<(u8, u16)>,
        timeout: Option<f64>,
    ) -> PyResult<Py<PyAny>> {
        let what = format!("outmsg {number} of board {board}");
        match into {
            Some((blk, off)) => self.run(py, what, timeout, |n| n.start_outmsg_into(board, number, blk, off, length)),
            None => {
                let len = length.ok_or_else(|| {
                    PyValueError::new_err(
                        "request_outmsg: give length= (the outmsg's byte count) or into=(blk, offset)",
                    )
                })?;
                self.run(py, what, timeout, |n| n.start_outmsg(board, number, len))
            }
        }
    }

    /// Non-blocking start for the asyncio forms: `op` is "read", "write",
    /// "crc", "burn" or "outmsg"; `args` its arguments as for the blocking
    /// method (without timeout). Returns the operation key for `_wait`.
    fn _start(&self, py: Python<'_>, op: &str, args: &Bound<'_, PyTuple>) -> PyResult<u64> {
        self.live()?;
        let (key, what) = match op {
            "read" => {
                let (b, blk, off, len): (u8, u8, u16, usize) = args.extract()?;
                (
                    py.detach(|| self.node.start_read(b, blk, off, len)),
                    format!("read of {len} bytes at table {blk} offset {off} of board {b}"),
                )
            }
            "write" => {
                let (b, blk, off, data): (u8, u8, u16, Bound<'_, PyAny>) = args.extract()?;
                let d = buffer_bytes(&data)?;
                (
                    py.detach(|| self.node.start_write(b, blk, off, &d)),
                    format!("write at table {blk} offset {off} of board {b}"),
                )
            }
            "crc" => {
                let (b, blk): (u8, u8) = args.extract()?;
                (py.detach(|| self.node.start_crc(b, blk)), format!("CRC of table {blk} of board {b}"))
            }
            "burn" => {
                let (b, blk, ack): (u8, u8, bool) = args.extract()?;
                (py.detach(|| self.node.start_burn(b, blk, ack)), format!("burn of table {blk} of board {b}"))
            }
            "outmsg" => {
                let (b, num, len, into): (u8, u8, Option<usize>, Option<(u8, u16)>) = args.extract()?;
                let k = match (into, len) {
                    (Some((blk, off)), len) => py.detach(|| self.node.start_outmsg_into(b, num, blk, off, len)),
                    (None, Some(len)) => py.detach(|| self.node.start_outmsg(b, num, len)),
                    (None, None) => {
                        return Err(PyValueError::new_err(
                            "request_outmsg: give length= (the outmsg's byte count) or into=(blk, offset)",
                        ))
                    }
                };
                (k, format!("outmsg {num} of board {b}"))
            }
            other => return Err(PyValueError::new_err(format!("unknown operation {other:?}"))),
        };
        let key = key.map_err(|e| ms_err(py, e))?;
        self.what.lock().insert(key, what);
        Ok(key)
    }

    /// Waits up to `timeout` s for operation `key`: `(True, result)` when
    /// done, `(False, None)` if still pending. Raises the operation's error.
    fn _wait(&self, py: Python<'_>, key: u64, timeout: f64) -> PyResult<(bool, Py<PyAny>)> {
        let node = &*self.node;
        match wait_for(py, Some(timeout), || node.is_closed(), |slice| node.wait(key, slice))? {
            Some(o) => Ok((true, self.outcome_to_py(py, key, o)?)),
            None => Ok((false, py.None())),
        }
    }

    /// Gives up on operation `key`.
    fn _abandon(&self, py: Python<'_>, key: u64) {
        self.abandon(py, key);
    }

    /// canx internal (asyncio): a descriptor that becomes readable whenever
    /// an operation of this node ends (an outcome for `_wait`, or a free
    /// slot after `MegasquirtBusyError`); `_clear_completions` makes it
    /// unreadable again. `canx.UnsupportedError` where the platform has none.
    fn _completion_fileno(&self, py: Python<'_>) -> PyResult<i64> {
        notify_fileno(py, self.node.completion_notify())
    }

    /// canx internal (asyncio): clears the `_completion_fileno` descriptor.
    fn _clear_completions(&self) {
        if let Ok(n) = self.node.completion_notify() {
            n.clear();
        }
    }

    /// Starts queueing server events for `_next_event`.
    fn _enable_events(&self, py: Python<'_>) {
        py.detach(|| self.node.enable_events());
    }

    /// The next server event as a frozen `canx._canx.Megasquirt*Event`
    /// (see `events.rs`), or None after `timeout` s. Raises canio's
    /// deinitialized ValueError once the node is closed.
    fn _next_event<'py>(&self, py: Python<'py>, timeout: f64) -> PyResult<Option<Bound<'py, PyAny>>> {
        let node = &*self.node;
        let Some(ev) = wait_for(py, Some(timeout), || node.is_closed(), |slice| node.next_event(slice))? else {
            self.live()?;
            return Ok(None);
        };
        let t = match ev {
            NodeEvent::Written { from, msg, var_blk, var_offset, data } => {
                let data = Data(data);
                MegasquirtWriteEvent { from_id: from, msg: msg.name(), var_blk, var_offset, data }
                    .into_pyobject(py)?
                    .into_any()
            }
            NodeEvent::Burn { from, var_blk } => {
                MegasquirtBurnEvent { from_id: from, msg: "MSG_BURN", var_blk }.into_pyobject(py)?.into_any()
            }
            NodeEvent::Xsub { from, var_blk, var_offset } => {
                MegasquirtXsubEvent { from_id: from, msg: "MSG_XSUB", var_blk, var_offset }
                    .into_pyobject(py)?
                    .into_any()
            }
            NodeEvent::Suspend { from, suspend } => {
                MegasquirtSuspendEvent { from_id: from, msg: "MSG_SPND", suspend }.into_pyobject(py)?.into_any()
            }
            NodeEvent::Forward { from, data } => {
                MegasquirtForwardEvent { from_id: from, msg: "MSG_FWD", data: Data(data) }.into_pyobject(py)?.into_any()
            }
            NodeEvent::Unhandled { from, msg, var_blk, var_offset, data } => {
                let (msg, data) = (msg_name(msg), Data(data));
                MegasquirtUnhandledEvent { from_id: from, msg, var_blk, var_offset, data }.into_pyobject(py)?.into_any()
            }
            NodeEvent::Refused { from, msg, var_blk, var_offset, reason } => {
                let msg = msg_name(msg);
                MegasquirtRefusedEvent { from_id: from, msg, var_blk, var_offset, reason }.into_pyobject(py)?.into_any()
            }
        };
        Ok(Some(t))
    }

    /// Counters (ints): server frames/replies/refused/tx_dropped/events_dropped,
    /// client_*, events_dropped (application queue), send_failed.
    fn stats<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let s = py.detach(|| self.node.stats());
        let d = PyDict::new(py);
        d.set_item("frames", s.server.frames)?;
        d.set_item("replies", s.server.replies)?;
        d.set_item("refused", s.server.refused)?;
        d.set_item("tx_dropped", s.server.tx_dropped)?;
        d.set_item("server_events_dropped", s.server.events_dropped)?;
        d.set_item("client_frames_sent", s.client_frames_sent)?;
        d.set_item("client_replies", s.client_replies)?;
        d.set_item("client_unmatched", s.client_unmatched)?;
        d.set_item("client_timeouts", s.client_timeouts)?;
        d.set_item("client_retries", s.client_retries)?;
        d.set_item("events_dropped", s.events_dropped)?;
        d.set_item("send_failed", s.send_failed)?;
        d.set_item("outmsg_into_dropped", s.raw_dropped)?;
        Ok(d)
    }

    /// Detaches the node from its bus (the bus stays open). Idempotent.
    fn close(&self, py: Python<'_>) {
        py.detach(|| self.node.detach());
    }
}

/// A served table's bytes, shared with the native server (copies under its lock).
#[pyclass(module = "canx._canx", frozen)]
pub struct MegasquirtTable {
    node: Arc<Node>,
    blk: u8,
}

impl MegasquirtTable {
    fn len_now(&self, py: Python<'_>) -> PyResult<usize> {
        py.detach(|| self.node.table_info(self.blk))
            .map(|(n, _)| n)
            .ok_or_else(|| PyValueError::new_err(format!("table {} is not served", self.blk)))
    }

    fn index(&self, py: Python<'_>, i: isize) -> PyResult<usize> {
        let n = self.len_now(py)? as isize;
        let j = if i < 0 { i + n } else { i };
        if j < 0 || j >= n {
            return Err(PyIndexError::new_err("table index out of range"));
        }
        Ok(j as usize)
    }
}

#[pymethods]
impl MegasquirtTable {
    /// The table number (var_blk).
    #[getter]
    fn blk(&self) -> u8 {
        self.blk
    }
    #[getter]
    fn readable(&self, py: Python<'_>) -> PyResult<bool> {
        py.detach(|| self.node.table_info(self.blk))
            .map(|(_, a)| a.read)
            .ok_or_else(|| PyValueError::new_err("not served"))
    }
    #[getter]
    fn writable(&self, py: Python<'_>) -> PyResult<bool> {
        py.detach(|| self.node.table_info(self.blk))
            .map(|(_, a)| a.write)
            .ok_or_else(|| PyValueError::new_err("not served"))
    }

    fn __len__(&self, py: Python<'_>) -> PyResult<usize> {
        self.len_now(py)
    }

    /// A copy of the whole table.
    fn bytes<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyBytes>> {
        let d = py.detach(|| self.node.table_read(self.blk, 0, None)).map_err(|e| ms_err(py, e))?;
        Ok(PyBytes::new(py, &d))
    }

    fn __bytes__<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyBytes>> {
        self.bytes(py)
    }

    /// `n` bytes from `offset`. Raises ValueError outside the table.
    fn read<'py>(&self, py: Python<'py>, offset: usize, n: usize) -> PyResult<Bound<'py, PyBytes>> {
        let d = py.detach(|| self.node.table_read(self.blk, offset, Some(n))).map_err(|e| ms_err(py, e))?;
        Ok(PyBytes::new(py, &d))
    }

    /// Writes bytes at `offset` (atomically with respect to the bus).
    fn write(&self, py: Python<'_>, offset: usize, data: &Bound<'_, PyAny>) -> PyResult<()> {
        let d = buffer_bytes(data)?;
        py.detach(|| self.node.table_write(self.blk, offset, &d)).map_err(|e| ms_err(py, e))
    }

    fn __getitem__<'py>(&self, py: Python<'py>, key: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyAny>> {
        if let Ok(s) = key.cast::<PySlice>() {
            let all = py.detach(|| self.node.table_read(self.blk, 0, None)).map_err(|e| ms_err(py, e))?;
            let ind = s.indices(all.len() as isize)?;
            let out: Vec<u8> =
                (0..ind.slicelength).map(|k| all[(ind.start + k as isize * ind.step) as usize]).collect();
            return Ok(PyBytes::new(py, &out).into_any());
        }
        let i: isize = key.extract().map_err(|_| PyTypeError::new_err("table indices must be integers or slices"))?;
        let j = self.index(py, i)?;
        let v = py.detach(|| self.node.table_read(self.blk, j, Some(1))).map_err(|e| ms_err(py, e))?;
        Ok(v[0].into_pyobject(py)?.into_any())
    }

    fn __setitem__(&self, py: Python<'_>, key: &Bound<'_, PyAny>, value: &Bound<'_, PyAny>) -> PyResult<()> {
        if let Ok(s) = key.cast::<PySlice>() {
            let n = self.len_now(py)?;
            let ind = s.indices(n as isize)?;
            let data = buffer_bytes(value)?;
            if data.len() != ind.slicelength {
                return Err(PyValueError::new_err(format!(
                    "a table slice of {} bytes needs {} bytes, got {} (tables do not resize)",
                    ind.slicelength,
                    ind.slicelength,
                    data.len()
                )));
            }
            if ind.step == 1 {
                return py
                    .detach(|| self.node.table_write(self.blk, ind.start as usize, &data))
                    .map_err(|e| ms_err(py, e));
            }
            let mut all = py.detach(|| self.node.table_read(self.blk, 0, None)).map_err(|e| ms_err(py, e))?;
            for (k, b) in data.iter().enumerate() {
                all[(ind.start + k as isize * ind.step) as usize] = *b;
            }
            return py.detach(|| self.node.table_write(self.blk, 0, &all)).map_err(|e| ms_err(py, e));
        }
        let i: isize = key.extract().map_err(|_| PyTypeError::new_err("table indices must be integers or slices"))?;
        let v: u8 = value.extract().map_err(|_| PyValueError::new_err("byte must be in range(0, 256)"))?;
        let j = self.index(py, i)?;
        py.detach(|| self.node.table_write(self.blk, j, &[v])).map_err(|e| ms_err(py, e))
    }

    fn __repr__(&self, py: Python<'_>) -> String {
        match py.detach(|| self.node.table_info(self.blk)) {
            Some((n, a)) => format!(
                "<canx.megasquirt.Table blk={} {} bytes {}{}>",
                self.blk,
                n,
                if a.read { "r" } else { "-" },
                if a.write { "w" } else { "-" }
            ),
            None => format!("<canx.megasquirt.Table blk={} (not served)>", self.blk),
        }
    }
}

/// One broadcast field as Python sees it: (kind, index, name, unit, offset, size, signed, mult, div, add).
type FieldRow = (&'static str, usize, &'static str, &'static str, u8, u8, bool, i32, i32, i32);

/// The realtime broadcast decoder (simplified dash at `dash_base`, advanced
/// groups at `advanced_base`; None turns one off).
#[pyclass(module = "canx._canx", frozen)]
pub struct MegasquirtBroadcastDecoder {
    inner: BroadcastDecoder,
}

#[pymethods]
impl MegasquirtBroadcastDecoder {
    #[new]
    #[pyo3(signature = (dash_base=Some(0x5E8), advanced_base=Some(0x5F0)))]
    fn new(dash_base: Option<u16>, advanced_base: Option<u16>) -> PyResult<Self> {
        for b in [dash_base, advanced_base].into_iter().flatten() {
            if b > 0x7FF {
                return Err(PyValueError::new_err("broadcast base ids are 11-bit (0-0x7FF)"));
            }
        }
        Ok(MegasquirtBroadcastDecoder { inner: BroadcastDecoder { dash_base, advanced_base } })
    }

    #[getter]
    fn dash_base(&self) -> Option<u16> {
        self.inner.dash_base
    }
    #[getter]
    fn advanced_base(&self) -> Option<u16> {
        self.inner.advanced_base
    }

    /// `[(name, value, unit), ...]` for a broadcast `Message`, None for any other frame.
    fn decode<'py>(&self, py: Python<'py>, message: &Bound<'py, PyAny>) -> PyResult<Option<Bound<'py, PyList>>> {
        let frame = py_to_frame(message)?;
        let Some(d) = self.inner.decode(&frame) else { return Ok(None) };
        let items: Vec<(&str, f64, &str)> = d.collect();
        Ok(Some(PyList::new(py, items)?))
    }

    /// `(kind, index)` of a frame id: ("dash", 0..4) or ("advanced", 0..63); None otherwise.
    fn source(&self, id: u16) -> Option<(&'static str, u8)> {
        let id = canx_core::StandardId::new(id)?;
        match self.inner.source(canx_core::Id::Standard(id))? {
            canx_core::megasquirt::Source::Dash(i) => Some(("dash", i)),
            canx_core::megasquirt::Source::Advanced(g) => Some(("advanced", g)),
        }
    }

    /// The field tables: `[(kind, index, name, unit, offset, size, signed, mult, div, add), ...]`.
    #[staticmethod]
    fn fields() -> Vec<FieldRow> {
        let mut out = Vec::new();
        for (kind, table) in [("dash", &DASH[..]), ("advanced", &ADVANCED[..])] {
            for (i, fields) in table.iter().enumerate() {
                for f in fields.iter() {
                    out.push((kind, i, f.name, f.unit, f.offset, f.size, f.signed, f.mult, f.div, f.add));
                }
            }
        }
        out
    }
}
