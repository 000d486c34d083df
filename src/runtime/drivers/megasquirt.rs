//! A MegaSquirt node (table server + client) driven by a bus's receive thread.
//!
//! The sans-IO engine is `canx_core::megasquirt::Node` (a `Server`, a
//! `Client` and `OutmsgInto` as one board), hosted by the generic engine
//! host ([`MsEngine`] = `Hosted<Node, MsAdapter>`); this module owns what it
//! borrows and what the application waits on:
//!
//! - **Tables** live in the engine ([`MemTables`], heap `Vec<u8>` per table)
//!   behind the engine lock, so the receive thread answers MSG_REQ / MSG_CMD
//!   without the application, and the application reads and changes them
//!   with [`Node::table_read`] / [`Node::table_write`] (a copy under the lock).
//! - **Requests** (read, write, CRC, outmsg, burn) are started under the
//!   lock and get a key; their outcome lands in [`Completions`], which the
//!   application waits on (no engine lock held while waiting).
//! - **Server events** (writes into tables, burns, XSUB, refusals, ...) go to
//!   a bounded [`EventQueue`] once the application asks for them
//!   ([`Node::enable_events`]); overflow is counted.
//!
//! Frame routing is the core `Node`'s (`docs/protocols/megasquirt.md`, "The
//! model", "Message types"): MSG_RSP / OUTMSG_RSP addressed to this board's
//! reply table and MSG_BURNACK go to the client; everything else addressed to
//! this board (or to 15) goes to the server. The reply table can therefore
//! not be served.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration as StdDuration;

use canx_core::megasquirt::{
    Access, Client, ClientConfig, ClientError, ClientEvent, IntoError, IntoEvent, IntoKey, MsgType,
    NodeEvent as CoreEvent, OutmsgDef, Server, ServerConfig, ServerError, ServerEvent, ServerStats, Tables,
    BROADCAST_ID, MAX_CAN_ID, MAX_VAR_BLK, MAX_VAR_OFFSET,
};
use canx_core::{Duration, Filter};
use parking_lot::{Condvar, Mutex};

use super::host::{Adapter, Hosted};
use crate::runtime::engine::EngineHandle;
use crate::runtime::listener::Readiness;
use crate::runtime::{Bus, EventQueue, Notify};

/// Concurrent client operations per node.
pub const CLIENT_OPS: usize = 32;
/// Largest read or write of one operation, bytes (the whole var_offset space).
pub const MAX_TRANSFER: usize = MAX_VAR_OFFSET as usize + 1;
/// Largest served table, bytes.
pub const MAX_TABLE: usize = 65_536;
/// Reply frames the server may queue between two receive-thread rounds.
const SERVER_TXQ: usize = 256;
/// Server events queued inside the engine between two rounds.
const SERVER_EVQ: usize = 256;
/// OUTMSG_REQ frames with a caller-chosen reply target, queued.
const RAW_TXQ: usize = 64;
/// Operation keys: client handles below, `outmsg into` waits from here
/// (plus the core's `IntoKey`), `outmsg into` without a wait from `RAW_KEYS`.
const INTO_KEYS: u64 = 1 << 32;
const RAW_KEYS: u64 = 1 << 40;

type NodeClient = Client<CLIENT_OPS, MAX_TRANSFER>;

/// Errors of the node's operations (bad arguments and engine refusals).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MsError {
    /// An argument is out of range; the text says which.
    Invalid(String),
    /// Every client operation slot is in use.
    Busy,
    /// The bus was shut down.
    Closed,
}

impl fmt::Display for MsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MsError::Invalid(s) => f.write_str(s),
            MsError::Busy => write!(f, "all {CLIENT_OPS} request slots of this node are in use"),
            MsError::Closed => f.write_str("the bus has been shut down"),
        }
    }
}

impl std::error::Error for MsError {}

fn client_err(e: ClientError, what: &str) -> MsError {
    match e {
        ClientError::Busy => MsError::Busy,
        ClientError::InvalidBoard => {
            MsError::Invalid(format!("{what}: board must be 0-14 and not this node's own id (15 only for writes)"))
        }
        ClientError::InvalidLength => MsError::Invalid(format!("{what}: length must be 1-{MAX_TRANSFER}")),
        ClientError::OutOfRange => MsError::Invalid(format!("{what}: offset + length passes var_offset 2047")),
        ClientError::TableNotAddressable => MsError::Invalid(format!("{what}: table (var_blk) must be 0-31")),
        ClientError::InvalidOutmsgNumber => MsError::Invalid(format!("{what}: outmsg number must be 0-19")),
        ClientError::InvalidConfig => MsError::Invalid(format!("{what}: invalid configuration")),
        ClientError::BurnPending => MsError::Invalid(format!("{what}: {e}")),
    }
}

/// One served table.
#[derive(Debug)]
struct MemTable {
    var_blk: u8,
    access: Access,
    data: Vec<u8>,
}

/// Heap tables for the server: up to 256, each up to [`MAX_TABLE`] bytes.
#[derive(Debug, Default)]
pub struct MemTables {
    tables: Vec<MemTable>,
}

impl MemTables {
    fn get(&self, var_blk: u8) -> Option<&MemTable> {
        self.tables.iter().find(|t| t.var_blk == var_blk)
    }
    fn get_mut(&mut self, var_blk: u8) -> Option<&mut MemTable> {
        self.tables.iter_mut().find(|t| t.var_blk == var_blk)
    }
}

impl Tables for MemTables {
    fn table(&self, var_blk: u8) -> Option<(&[u8], Access)> {
        self.get(var_blk).map(|t| (&t.data[..], t.access))
    }
    fn table_mut(&mut self, var_blk: u8) -> Option<&mut [u8]> {
        self.get_mut(var_blk).map(|t| &mut t.data[..])
    }
}

/// The result of one operation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// A read or outmsg: the bytes.
    Data(Vec<u8>),
    /// A write: every frame was sent. An outmsg `into` a table without a
    /// length: the request was sent.
    Done,
    /// A CRC query: the CRC32.
    Crc(u32),
    /// A burn: the MSG_BURNACK status if it waited for one.
    Burn(Option<bool>),
    /// No (complete) reply after every retry.
    TimedOut,
}

/// Outcomes of started operations, by key; the application waits here
/// (blocking: the condvar; asyncio: the optional [`Notify`], signalled
/// whenever an operation ends, so also when a slot frees).
#[derive(Debug, Default)]
pub struct Completions {
    map: Mutex<HashMap<u64, Outcome>>,
    cv: Condvar,
    notify: Readiness,
}

impl Completions {
    fn put(&self, key: u64, o: Outcome) {
        self.map.lock().insert(key, o);
        self.cv.notify_all();
        self.signal();
    }

    /// Signals the notify (if any): an operation ended.
    fn signal(&self) {
        self.notify.wake();
    }

    /// Takes the outcome of `key`, waiting up to `wait` for it.
    pub fn take(&self, key: u64, wait: StdDuration) -> Option<Outcome> {
        let mut m = self.map.lock();
        if let Some(o) = m.remove(&key) {
            return Some(o);
        }
        if wait.is_zero() {
            return None;
        }
        let deadline = std::time::Instant::now() + wait;
        loop {
            if self.cv.wait_until(&mut m, deadline).timed_out() {
                return m.remove(&key);
            }
            if let Some(o) = m.remove(&key) {
                return Some(o);
            }
        }
    }
}

/// What the server reports to the application (`ServerEvent` with the bytes
/// written copied out of the table).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NodeEvent {
    /// MSG_CMD / MSG_RSP / OUTMSG_RSP wrote `data` at (var_blk, var_offset).
    Written { from: u8, msg: MsgType, var_blk: u8, var_offset: u16, data: Vec<u8> },
    /// MSG_BURN of `var_blk`.
    Burn { from: u8, var_blk: u8 },
    /// MSG_XSUB.
    Xsub { from: u8, var_blk: u8, var_offset: u16 },
    /// MSG_SPND (suspend true / resume false).
    Suspend { from: u8, suspend: bool },
    /// MSG_FWD: bytes for the serial port.
    Forward { from: u8, data: Vec<u8> },
    /// MSG_PROT, MSG_WCR or an unknown MSG_XTND subtype (`msg` = subtype).
    Unhandled { from: u8, msg: u8, var_blk: u8, var_offset: u16, data: Vec<u8> },
    /// A request refused without reply; `reason` says why.
    Refused { from: u8, msg: u8, var_blk: u8, var_offset: u16, reason: String },
}

/// Counters of a node.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NodeStats {
    pub server: ServerStats,
    pub client_frames_sent: u32,
    pub client_replies: u32,
    pub client_unmatched: u32,
    pub client_timeouts: u32,
    pub client_retries: u32,
    /// Events lost because the application's event queue was full.
    pub events_dropped: u64,
    /// Frames the bus refused to send (bus off, interface down).
    pub send_failed: u64,
    /// OUTMSG_REQ `into` frames dropped because their queue was full.
    pub raw_dropped: u64,
}

/// The core board (`canx_core::megasquirt::Node`: server, client and
/// OUTMSG-into, routing frames between them) with this module's sizes.
type CoreNode =
    canx_core::megasquirt::Node<MemTables, SERVER_TXQ, SERVER_EVQ, CLIENT_OPS, MAX_TRANSFER, CLIENT_OPS, RAW_TXQ>;

/// The engine the receive thread drives: the core board hosted with
/// [`MsAdapter`].
pub type MsEngine = Hosted<CoreNode, MsAdapter>;

/// What the runtime keeps beside the core board: operation keys and their
/// [`Completions`], and whether the application wants server events.
#[derive(Debug)]
pub struct MsAdapter {
    can_id: u8,
    op_timeout: Duration,
    /// Keys of `outmsg into` requests that wait for nothing.
    next_raw: u64,
    /// Keys someone waits for; outcomes of others are dropped.
    waiting: HashSet<u64>,
    completions: Arc<Completions>,
    want_events: Arc<AtomicBool>,
    /// OUTMSG_REQ `into` requests refused because their queue was full.
    raw_dropped: u64,
    /// An event [`Adapter::settle`] finishes with the engine (its bytes are
    /// in the client's buffer or a served table).
    pending: Option<CoreEvent>,
}

impl MsAdapter {
    fn complete(&mut self, key: u64, o: Outcome) {
        if self.waiting.remove(&key) {
            self.completions.put(key, o);
        } else {
            self.completions.signal(); // an abandoned operation freed its slot
        }
    }

    /// Queues a server event if the application asked for them.
    fn push(&self, e: NodeEvent, out: &EventQueue<NodeEvent>) {
        if self.want_events.load(Ordering::Relaxed) {
            out.push(e);
        }
    }
}

impl Adapter<CoreNode> for MsAdapter {
    type Event = NodeEvent;

    fn event(&mut self, ev: CoreEvent, _at: f64, out: &EventQueue<NodeEvent>) {
        match ev {
            // Their bytes are in the engine: `settle`.
            CoreEvent::Client(ClientEvent::ReadDone { .. } | ClientEvent::OutmsgDone { .. })
            | CoreEvent::Server(ServerEvent::Written { .. })
            | CoreEvent::Into(IntoEvent::Done { .. }) => self.pending = Some(ev),
            CoreEvent::Client(ev) => {
                let key = u64::from(ev.handle().0);
                let o = match ev {
                    ClientEvent::CrcDone { crc, .. } => Outcome::Crc(crc),
                    ClientEvent::BurnDone { ack, .. } => Outcome::Burn(ack),
                    ClientEvent::TimedOut { .. } => Outcome::TimedOut,
                    ClientEvent::WriteDone { .. } | ClientEvent::ReadDone { .. } | ClientEvent::OutmsgDone { .. } => {
                        Outcome::Done
                    }
                };
                self.complete(key, o);
            }
            CoreEvent::Into(IntoEvent::TimedOut { key }) => {
                self.complete(INTO_KEYS + u64::from(key.0), Outcome::TimedOut)
            }
            CoreEvent::Server(ev) => match ev {
                ServerEvent::Burn { from, var_blk } => self.push(NodeEvent::Burn { from, var_blk }, out),
                ServerEvent::Xsub { from, var_blk, var_offset } => {
                    self.push(NodeEvent::Xsub { from, var_blk, var_offset }, out)
                }
                // the client takes every MSG_BURNACK to this board; one to 15 is informational
                ServerEvent::BurnAck { .. } | ServerEvent::Written { .. } => {}
                ServerEvent::Suspend { from, suspend } => self.push(NodeEvent::Suspend { from, suspend }, out),
                ServerEvent::Forward { from, data, len } => {
                    let data = data.get(..usize::from(len)).unwrap_or(&[]).to_vec();
                    self.push(NodeEvent::Forward { from, data }, out)
                }
                ServerEvent::Unhandled { from, msg, var_blk, var_offset, data, len } => {
                    let data = data.get(..usize::from(len)).unwrap_or(&[]).to_vec();
                    self.push(NodeEvent::Unhandled { from, msg, var_blk, var_offset, data }, out)
                }
                ServerEvent::Refused { from, msg, var_blk, var_offset, reason } => {
                    self.push(NodeEvent::Refused { from, msg, var_blk, var_offset, reason: reason.to_string() }, out)
                }
            },
        }
    }

    /// Copies a read's bytes out of the client's buffer (valid until the
    /// next `poll_event`), or written bytes out of a served table.
    fn settle(&mut self, node: &mut CoreNode, _at: f64, out: &EventQueue<NodeEvent>) {
        let table = |var_blk: u8, off: u16, len: u8| {
            let (s, n) = (usize::from(off), usize::from(len));
            node.server.tables().get(var_blk).and_then(|t| t.data.get(s..s + n)).unwrap_or(&[]).to_vec()
        };
        match self.pending.take() {
            Some(CoreEvent::Client(ClientEvent::ReadDone { handle, .. } | ClientEvent::OutmsgDone { handle, .. })) => {
                let o = Outcome::Data(node.client.read_data(handle).unwrap_or(&[]).to_vec());
                self.complete(u64::from(handle.0), o);
            }
            Some(CoreEvent::Server(ServerEvent::Written { from, msg, var_blk, var_offset, len })) => {
                let data = table(var_blk, var_offset, len);
                self.push(NodeEvent::Written { from, msg, var_blk, var_offset, data }, out);
            }
            Some(CoreEvent::Into(IntoEvent::Done { key, var_blk, offset, len })) => {
                let o = Outcome::Data(table(var_blk, offset, len));
                self.complete(INTO_KEYS + u64::from(key.0), o);
            }
            _ => {}
        }
    }

    fn filters(&self) -> Option<Vec<Filter>> {
        // extended frames whose to_id (bits 10..7) is this board or 15
        let mask = 0xF << 7;
        let mine = Filter::canio_match(u32::from(self.can_id) << 7, Some(mask), true).ok()?;
        let all = Filter::canio_match(u32::from(BROADCAST_ID) << 7, Some(mask), true).ok()?;
        Some(vec![mine, all])
    }
}

/// How a node is set up.
#[derive(Debug, Clone, Copy)]
pub struct NodeConfig {
    /// This board's CAN id, 0..14.
    pub can_id: u8,
    /// The table replies to this node's requests are addressed to (0..31, default 6).
    pub reply_blk: u8,
    /// How long one request waits for its reply before it is sent again.
    pub request_timeout: StdDuration,
    /// Resends before an operation fails.
    pub retries: u8,
    /// Table the outmsg offsets index (default 7, `outpc`).
    pub realtime_blk: u8,
    /// Answer every accepted MSG_BURN with MSG_BURNACK ok at once.
    pub auto_burn_ack: bool,
    /// Capacity of the application's event queue.
    pub event_capacity: usize,
}

impl NodeConfig {
    pub fn new(can_id: u8) -> Self {
        NodeConfig {
            can_id,
            reply_blk: 6,
            request_timeout: StdDuration::from_millis(100),
            retries: 2,
            realtime_blk: 7,
            auto_burn_ack: false,
            event_capacity: crate::runtime::events::DEFAULT_EVENT_CAPACITY,
        }
    }
}

/// A MegaSquirt node attached to a bus: the application's side.
pub struct Node {
    bus: Arc<Bus>,
    engine: Arc<Mutex<MsEngine>>,
    handle: EngineHandle,
    completions: Arc<Completions>,
    events: Arc<EventQueue<NodeEvent>>,
    want_events: Arc<AtomicBool>,
    config: NodeConfig,
    detached: AtomicBool,
}

impl std::fmt::Debug for Node {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Node").field("config", &self.config).finish()
    }
}

fn micros(d: StdDuration) -> Duration {
    Duration::from_micros(u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
}

impl Node {
    /// Attaches a node to `bus`. Errors: [`MsError::Invalid`] for an id
    /// above 14, a reply table above 31, or a zero request timeout.
    pub fn attach(bus: Arc<Bus>, config: NodeConfig) -> Result<Node, MsError> {
        if config.can_id >= MAX_CAN_ID {
            return Err(MsError::Invalid(format!(
                "can_id must be 0-14 (15 addresses every board), not {}",
                config.can_id
            )));
        }
        if config.reply_blk > MAX_VAR_BLK {
            return Err(MsError::Invalid(format!("reply_blk must be 0-31, not {}", config.reply_blk)));
        }
        if config.request_timeout.is_zero() {
            return Err(MsError::Invalid("request_timeout must be positive".into()));
        }
        if bus.is_shut_down() {
            return Err(MsError::Closed);
        }
        let mut scfg = ServerConfig::new(config.can_id);
        scfg.realtime_blk = config.realtime_blk;
        scfg.auto_burn_ack = config.auto_burn_ack;
        let server = Server::new(scfg, MemTables::default()).map_err(|e| MsError::Invalid(e.to_string()))?;
        let mut ccfg = ClientConfig::new(config.can_id);
        ccfg.reply_blk = config.reply_blk;
        ccfg.timeout = micros(config.request_timeout);
        ccfg.retries = config.retries;
        // quarantine: long enough that a late reply is never taken for a newer request
        ccfg.quarantine = micros(config.request_timeout.saturating_mul(4).max(StdDuration::from_millis(200)));
        let client = NodeClient::new(ccfg).map_err(|e| client_err(e, "client"))?;
        let completions = Arc::new(Completions::default());
        let want_events = Arc::new(AtomicBool::new(false));
        let op_timeout = micros(config.request_timeout.saturating_mul(u32::from(config.retries) + 1));
        let adapter = MsAdapter {
            can_id: config.can_id,
            op_timeout,
            next_raw: RAW_KEYS,
            waiting: HashSet::new(),
            completions: completions.clone(),
            want_events: want_events.clone(),
            raw_dropped: 0,
            pending: None,
        };
        let hosted = MsEngine::host(Box::new(CoreNode::new(server, client)), adapter, config.event_capacity);
        let events = hosted.events();
        let engine = Arc::new(Mutex::new(hosted));
        let handle = bus.attach(engine.clone());
        Ok(Node { bus, engine, handle, completions, events, want_events, config, detached: AtomicBool::new(false) })
    }

    pub fn config(&self) -> &NodeConfig {
        &self.config
    }
    pub fn bus(&self) -> &Arc<Bus> {
        &self.bus
    }

    /// `true` once detached or once the bus is shut down.
    pub fn is_closed(&self) -> bool {
        self.detached.load(Ordering::Relaxed) || self.bus.is_shut_down()
    }

    fn live(&self) -> Result<(), MsError> {
        if self.is_closed() {
            Err(MsError::Closed)
        } else {
            Ok(())
        }
    }

    /// Stops the receive thread driving this node. Idempotent.
    pub fn detach(&self) {
        if !self.detached.swap(true, Ordering::Relaxed) {
            self.bus.detach(&self.handle);
        }
        self.completions.signal(); // asyncio waiters wake and see the node closed
    }

    /// Serves table `var_blk` (0..255; 32..255 are readable only by
    /// MSG_REQX) with initial contents `data` (1..=65536 bytes).
    pub fn serve_table(&self, var_blk: u8, access: Access, data: Vec<u8>) -> Result<(), MsError> {
        self.live()?;
        if data.is_empty() || data.len() > MAX_TABLE {
            return Err(MsError::Invalid(format!("a table holds 1-{MAX_TABLE} bytes, not {}", data.len())));
        }
        if var_blk == self.config.reply_blk {
            return Err(MsError::Invalid(format!(
                "table {var_blk} is this node's reply table (reply_blk); choose another reply_blk to serve it"
            )));
        }
        let mut e = self.engine.lock();
        let tables = e.engine.server.tables_mut();
        if tables.get(var_blk).is_some() {
            return Err(MsError::Invalid(format!("table {var_blk} is already served")));
        }
        tables.tables.push(MemTable { var_blk, access, data });
        Ok(())
    }

    /// (length, access) of a served table.
    pub fn table_info(&self, var_blk: u8) -> Option<(usize, Access)> {
        let e = self.engine.lock();
        e.engine.server.tables().get(var_blk).map(|t| (t.data.len(), t.access))
    }

    /// Served table numbers, ascending.
    pub fn tables(&self) -> Vec<u8> {
        let e = self.engine.lock();
        let mut v: Vec<u8> = e.engine.server.tables().tables.iter().map(|t| t.var_blk).collect();
        v.sort_unstable();
        v
    }

    /// A copy of `n` bytes of table `var_blk` from `offset` (`None` n: to the end).
    pub fn table_read(&self, var_blk: u8, offset: usize, n: Option<usize>) -> Result<Vec<u8>, MsError> {
        let e = self.engine.lock();
        let t = e
            .engine
            .server
            .tables()
            .get(var_blk)
            .ok_or_else(|| MsError::Invalid(format!("table {var_blk} is not served")))?;
        let end = match n {
            Some(n) => offset.checked_add(n),
            None => Some(t.data.len()),
        };
        end.and_then(|end| t.data.get(offset..end)).map(<[u8]>::to_vec).ok_or_else(|| {
            MsError::Invalid(format!("bytes {offset}..+{n:?} are outside table {var_blk} ({} bytes)", t.data.len()))
        })
    }

    /// Writes `data` into table `var_blk` at `offset` (the owner may write read-only tables).
    pub fn table_write(&self, var_blk: u8, offset: usize, data: &[u8]) -> Result<(), MsError> {
        let mut e = self.engine.lock();
        let t = e
            .engine
            .server
            .tables_mut()
            .get_mut(var_blk)
            .ok_or_else(|| MsError::Invalid(format!("table {var_blk} is not served")))?;
        let len = t.data.len();
        let dst = offset.checked_add(data.len()).and_then(|end| t.data.get_mut(offset..end)).ok_or_else(|| {
            MsError::Invalid(format!("{} bytes at {offset} are outside table {var_blk} ({len} bytes)", data.len()))
        })?;
        dst.copy_from_slice(data);
        Ok(())
    }

    /// Sets (or clears, with an empty list) outmsg `number` (0..19): byte
    /// offsets into the realtime table, 1..=24 of them.
    pub fn set_outmsg(&self, number: u8, offsets: &[u16]) -> Result<(), MsError> {
        self.live()?;
        let def = if offsets.is_empty() {
            None
        } else {
            Some(OutmsgDef::new(offsets).map_err(|e| MsError::Invalid(e.to_string()))?)
        };
        self.engine
            .lock()
            .engine
            .server
            .set_outmsg(number, def)
            .map_err(|e: ServerError| MsError::Invalid(e.to_string()))
    }

    /// Queues MSG_BURNACK `[14, ok]` to board `to` (0..15).
    pub fn ack_burn(&self, to: u8, ok: bool) -> Result<(), MsError> {
        self.live()?;
        let r = self.engine.lock().engine.server.ack_burn(to, ok);
        self.handle.kick();
        r.map_err(|e| match e {
            ServerError::QueueFull => MsError::Busy,
            e => MsError::Invalid(e.to_string()),
        })
    }

    fn start(
        &self,
        what: &str,
        op: impl FnOnce(&mut NodeClient) -> Result<canx_core::megasquirt::Handle, ClientError>,
    ) -> Result<u64, MsError> {
        self.live()?;
        let key = {
            let mut e = self.engine.lock();
            let h = op(&mut e.engine.client).map_err(|err| client_err(err, what))?;
            let key = u64::from(h.0);
            e.adapter.waiting.insert(key);
            key
        };
        self.handle.kick();
        Ok(key)
    }

    /// Starts a read of `len` bytes of table `var_blk` at `offset` on `board`
    /// (MSG_REQ for tables 0..31, MSG_REQX above; split in requests of <= 8 bytes).
    pub fn start_read(&self, board: u8, var_blk: u8, offset: u16, len: usize) -> Result<u64, MsError> {
        let len = u16::try_from(len).map_err(|_| MsError::Invalid(format!("read: length must be 1-{MAX_TRANSFER}")))?;
        self.start("read", |c| c.read(board, var_blk, offset, len))
    }

    /// Starts a write of `data` to table `var_blk` (0..31) at `offset` on
    /// `board` (15: every board), as MSG_CMD frames of <= 8 bytes.
    pub fn start_write(&self, board: u8, var_blk: u8, offset: u16, data: &[u8]) -> Result<u64, MsError> {
        self.start("write", |c| c.write(board, var_blk, offset, data))
    }

    /// Starts a MSG_CRC query of table `var_blk` (0..31) on `board`.
    pub fn start_crc(&self, board: u8, var_blk: u8) -> Result<u64, MsError> {
        self.start("crc", |c| c.crc(board, var_blk))
    }

    /// Starts a MSG_BURN of table `var_blk` on `board`; with `wait_ack` it
    /// completes when MSG_BURNACK arrives.
    pub fn start_burn(&self, board: u8, var_blk: u8, wait_ack: bool) -> Result<u64, MsError> {
        self.start("burn", |c| c.burn(board, var_blk, wait_ack))
    }

    /// Starts an OUTMSG_REQ for outmsg `number` (0..19) of `board`,
    /// expecting `len` bytes (1..24) into this node's reply table.
    pub fn start_outmsg(&self, board: u8, number: u8, len: usize) -> Result<u64, MsError> {
        let len = u16::try_from(len).map_err(|_| MsError::Invalid("outmsg: length must be 1-24".into()))?;
        self.start("outmsg", |c| c.outmsg(board, number, len))
    }

    /// Sends OUTMSG_REQ `number` to `board` with the reply target
    /// (`var_blk`, `offset`) in a served, writable table of this node: the
    /// OUTMSG_RSP frames are written there by the server. With `len`, the
    /// operation completes with those `len` bytes once they all arrived
    /// (or times out); without, it completes as soon as the request is queued.
    pub fn start_outmsg_into(
        &self,
        board: u8,
        number: u8,
        var_blk: u8,
        offset: u16,
        len: Option<usize>,
    ) -> Result<u64, MsError> {
        self.live()?;
        let key = {
            let mut e = self.engine.lock();
            let deadline = self.handle.now() + e.adapter.op_timeout;
            let waits =
                e.engine.outmsg_into(board, number, var_blk, offset, len, deadline).map_err(|err| match err {
                    IntoError::Busy => MsError::Busy,
                    IntoError::QueueFull => {
                        e.adapter.raw_dropped += 1;
                        MsError::Busy
                    }
                    IntoError::NotServed => {
                        MsError::Invalid(format!("outmsg into: table {var_blk} is not served by this node"))
                    }
                    IntoError::NotWritable => {
                        MsError::Invalid(format!("outmsg into: table {var_blk} is not writable by the bus"))
                    }
                    IntoError::DoesNotFit => {
                        MsError::Invalid(format!("outmsg into: the reply does not fit table {var_blk}"))
                    }
                    err => MsError::Invalid(err.to_string()),
                })?;
            let a = &mut e.adapter;
            match waits {
                Some(k) => {
                    let key = INTO_KEYS + u64::from(k.0);
                    a.waiting.insert(key);
                    key
                }
                None => {
                    let key = a.next_raw;
                    a.next_raw += 1;
                    a.completions.put(key, Outcome::Done);
                    key
                }
            }
        };
        self.handle.kick();
        Ok(key)
    }

    /// Waits up to `wait` for the outcome of operation `key`.
    pub fn wait(&self, key: u64, wait: StdDuration) -> Option<Outcome> {
        self.completions.take(key, wait)
    }

    /// A [`Notify`] signalled whenever an operation of this node ends (its
    /// outcome is ready for [`Self::wait`], or its slot is free again); the
    /// reader clears it. Made on first use; `Notify::new`'s error where the
    /// platform has none.
    pub fn completion_notify(&self) -> std::io::Result<Arc<Notify>> {
        self.completions.notify.get_or_make(|| false)
    }

    /// Gives up on operation `key`: its outcome, when it comes, is dropped.
    pub fn abandon(&self, key: u64) {
        let mut e = self.engine.lock();
        e.adapter.waiting.remove(&key);
        if let Some(k) = key.checked_sub(INTO_KEYS).filter(|k| *k < RAW_KEYS - INTO_KEYS) {
            e.engine.into.cancel(IntoKey(k as u32));
        }
        drop(e);
        self.completions.map.lock().remove(&key);
    }

    /// From now on server events are queued for [`Self::next_event`].
    pub fn enable_events(&self) {
        self.want_events.store(true, Ordering::Relaxed);
    }

    /// The next server event, waiting up to `wait`.
    pub fn next_event(&self, wait: StdDuration) -> Option<NodeEvent> {
        if wait.is_zero() {
            self.events.try_recv()
        } else {
            self.events.recv_timeout(wait)
        }
    }

    pub fn stats(&self) -> NodeStats {
        let e = self.engine.lock();
        let c = e.engine.client.stats();
        NodeStats {
            server: e.engine.server.stats(),
            client_frames_sent: c.frames_sent,
            client_replies: c.replies,
            client_unmatched: c.unmatched,
            client_timeouts: c.timeouts,
            client_retries: c.retries,
            events_dropped: self.events.dropped(),
            send_failed: e.host_stats().send_failed,
            raw_dropped: e.adapter.raw_dropped,
        }
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.detach();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::{BusConfig, Clock, DropPolicy, ListenerFilter, ManualClock};

    fn open(name: &str) -> Arc<Bus> {
        Arc::new(Bus::open(BusConfig::virtual_bus(name)).unwrap())
    }

    /// Two stepped buses (no receive threads) on `name` sharing a manual clock.
    fn stepped_pair(name: &str) -> (Arc<Bus>, Arc<Bus>, Arc<ManualClock>) {
        let (clock, time) = Clock::manual(canx_core::Instant::from_millis(1000));
        let mk = || {
            let mut c = BusConfig::virtual_bus(name);
            c.clock = clock.clone();
            Arc::new(Bus::stepped(c).unwrap())
        };
        (mk(), mk(), time)
    }

    /// Steps both buses in 1 ms ticks until `key`'s outcome is there (at
    /// most `limit_ms`); returns it and the bus-clock milliseconds it took.
    fn step_until(a: &Bus, b: &Bus, time: &ManualClock, n: &Node, key: u64, limit_ms: u64) -> (Option<Outcome>, u64) {
        for t in 0..=limit_ms {
            a.run_until_idle().unwrap();
            b.run_until_idle().unwrap();
            if let Some(o) = n.wait(key, StdDuration::ZERO) {
                return (Some(o), t);
            }
            time.advance(canx_core::Duration::from_millis(1));
        }
        (None, limit_ms)
    }

    fn node(bus: &Arc<Bus>, id: u8) -> Node {
        Node::attach(bus.clone(), NodeConfig::new(id)).unwrap()
    }

    fn wait(n: &Node, key: u64) -> Outcome {
        n.wait(key, StdDuration::from_secs(3)).expect("an outcome")
    }

    const RO: Access = Access::READ_ONLY;
    const RW: Access = Access::READ_WRITE;

    /// A write completes when its last frame is sent (MSG_CMD has no
    /// reply), i.e. in `poll_transmit`: the outcome reaches the waiter in
    /// that round, not at the next frame or timer (a node alone on its bus
    /// has neither).
    #[test]
    fn write_completes_in_the_round_it_is_sent() {
        // A stepped bus (no receive thread) that is never stepped: the
        // frames go out from the calling thread, and so does the outcome.
        let (bus, _other, _time) = stepped_pair("ms-rt-write-alone");
        let dash = node(&bus, 3);
        let k = dash.start_write(5, 20, 0, &[1, 2, 3, 4, 5, 6, 7, 8, 9]).unwrap();
        assert_eq!(dash.wait(k, StdDuration::ZERO), Some(Outcome::Done));
    }

    /// A request nobody answers ends after 1 + 2 retries of 100 ms on the
    /// bus clock: not before 300 ms, and at once then.
    #[test]
    fn unanswered_read_times_out_after_the_retries_on_the_bus_clock() {
        let (a, b, time) = stepped_pair("ms-rt-timeout");
        let ecu = node(&a, 0);
        let dash = node(&b, 3);
        ecu.serve_table(7, RO, vec![0; 8]).unwrap();
        let k = dash.start_read(0, 9, 0, 4).unwrap();
        let (o, t) = step_until(&a, &b, &time, &dash, k, 1000);
        assert_eq!(o, Some(Outcome::TimedOut));
        assert_eq!(t, 300, "3 tries of 100 ms");
        assert_eq!(ecu.stats().server.refused, 3, "every try reached the server");
    }

    #[test]
    fn read_write_across_tables_natively() {
        let (a, b) = (open("ms-rt-1"), open("ms-rt-1"));
        let ecu = node(&a, 0);
        let dash = node(&b, 3);
        ecu.serve_table(7, RO, (0..=255u8).collect()).unwrap();
        ecu.serve_table(20, RW, vec![0; 32]).unwrap();
        ecu.serve_table(40, RO, vec![0xB0; 16]).unwrap();
        // a 20-byte read is three MSG_REQ (8 + 8 + 4)
        let k = dash.start_read(0, 7, 100, 20).unwrap();
        assert_eq!(wait(&dash, k), Outcome::Data((100..120).collect()));
        // MSG_REQX for a table above 31
        let k = dash.start_read(0, 40, 2, 3).unwrap();
        assert_eq!(wait(&dash, k), Outcome::Data(vec![0xB0; 3]));
        // writes land in the server's table
        let k = dash.start_write(0, 20, 10, &[1, 2, 3, 4, 5, 6, 7, 8, 9, 10]).unwrap();
        assert_eq!(wait(&dash, k), Outcome::Done);
        let k = dash.start_read(0, 20, 10, 10).unwrap();
        assert_eq!(wait(&dash, k), Outcome::Data((1..=10).collect()));
        assert_eq!(ecu.table_read(20, 10, Some(10)).unwrap(), (1..=10).collect::<Vec<u8>>());
        // the owner's changes are what the bus reads
        ecu.table_write(7, 0, &[9, 9]).unwrap();
        let k = dash.start_read(0, 7, 0, 2).unwrap();
        assert_eq!(wait(&dash, k), Outcome::Data(vec![9, 9]));
        // an unknown table gets no reply: a timeout after the retries
        // (timing exactly: unanswered_read_times_out_after_the_retries_on_the_bus_clock)
        let k = dash.start_read(0, 9, 0, 4).unwrap();
        assert_eq!(wait(&dash, k), Outcome::TimedOut);
        assert!(ecu.stats().server.refused >= 3);
        assert!(matches!(ecu.serve_table(6, RW, vec![0; 8]), Err(MsError::Invalid(_))));
        assert!(matches!(ecu.serve_table(7, RW, vec![0; 8]), Err(MsError::Invalid(_))));
        assert!(matches!(dash.start_read(3, 7, 0, 1), Err(MsError::Invalid(_))));
    }

    #[test]
    fn refusals_and_writes_are_events() {
        let (a, b) = (open("ms-rt-2"), open("ms-rt-2"));
        let ecu = node(&a, 0);
        let gpio = node(&b, 1);
        ecu.serve_table(7, RO, vec![0; 64]).unwrap();
        ecu.serve_table(2, RW, vec![0; 8]).unwrap();
        ecu.enable_events();
        let k = gpio.start_write(0, 7, 0, &[1]).unwrap();
        assert_eq!(wait(&gpio, k), Outcome::Done);
        let k = gpio.start_write(0, 2, 4, &[5, 6]).unwrap();
        assert_eq!(wait(&gpio, k), Outcome::Done);
        let e1 = ecu.next_event(StdDuration::from_secs(2)).unwrap();
        assert!(
            matches!(e1, NodeEvent::Refused { from: 1, msg: 0, var_blk: 7, ref reason, .. } if reason == "table not writable")
        );
        let e2 = ecu.next_event(StdDuration::from_secs(2)).unwrap();
        assert_eq!(e2, NodeEvent::Written { from: 1, msg: MsgType::Cmd, var_blk: 2, var_offset: 4, data: vec![5, 6] });
        assert_eq!(ecu.table_read(7, 0, Some(1)).unwrap(), vec![0]);
    }

    #[test]
    fn outmsg_both_ways() {
        let (a, b) = (open("ms-rt-3"), open("ms-rt-3"));
        let ecu = node(&a, 0);
        let gpio = node(&b, 1);
        ecu.serve_table(7, RO, (0..64u8).collect()).unwrap();
        ecu.set_outmsg(0, &[6, 7, 18, 19, 20, 21, 22, 23, 24, 25]).unwrap();
        let k = gpio.start_outmsg(0, 0, 10).unwrap();
        assert_eq!(wait(&gpio, k), Outcome::Data(vec![6, 7, 18, 19, 20, 21, 22, 23, 24, 25]));
        gpio.serve_table(3, RW, vec![0; 32]).unwrap();
        let k = gpio.start_outmsg_into(0, 0, 3, 4, Some(10)).unwrap();
        assert_eq!(wait(&gpio, k), Outcome::Data(vec![6, 7, 18, 19, 20, 21, 22, 23, 24, 25]));
        assert_eq!(gpio.table_read(3, 4, Some(10)).unwrap(), vec![6, 7, 18, 19, 20, 21, 22, 23, 24, 25]);
        // an outmsg the ECU does not define: timeout
        let k = gpio.start_outmsg_into(0, 5, 3, 4, Some(2)).unwrap();
        assert_eq!(wait(&gpio, k), Outcome::TimedOut);
        assert!(gpio.start_outmsg_into(0, 0, 9, 0, None).is_err());
    }

    #[test]
    fn crc_and_burn_ack() {
        let (a, b) = (open("ms-rt-4"), open("ms-rt-4"));
        let mut cfg = NodeConfig::new(0);
        cfg.auto_burn_ack = true;
        let ecu = Node::attach(a.clone(), cfg).unwrap();
        let dash = node(&b, 3);
        ecu.serve_table(15, RO, b"123456789".to_vec()).unwrap();
        ecu.serve_table(20, RW, vec![0; 4]).unwrap();
        let k = dash.start_crc(0, 15).unwrap();
        assert_eq!(wait(&dash, k), Outcome::Crc(0xCBF4_3926));
        let k = dash.start_burn(0, 20, true).unwrap();
        assert_eq!(wait(&dash, k), Outcome::Burn(Some(true)));
    }

    /// Two nodes on one bus object see each other through the runtime's
    /// local echo, with or without loopback, and each frame arrives once.
    #[test]
    fn two_nodes_on_one_bus_with_and_without_loopback() {
        for (name, loopback) in [("ms-rt-6", true), ("ms-rt-7", false)] {
            let mut c = BusConfig::virtual_bus(name);
            c.receive_own = loopback;
            let bus = Arc::new(Bus::open(c).unwrap());
            let ecu = node(&bus, 0);
            let dash = node(&bus, 3);
            ecu.serve_table(7, RO, vec![7; 16]).unwrap();
            // 8 bytes: one request frame, one reply frame.
            let k = dash.start_read(0, 7, 0, 8).unwrap();
            assert_eq!(wait(&dash, k), Outcome::Data(vec![7; 8]), "loopback={loopback}");
            let s = ecu.stats().server;
            assert_eq!((s.frames, s.replies, s.refused), (1, 1, 0), "one request, seen once (loopback={loopback})");
        }
    }

    #[test]
    fn abandoned_outcomes_are_dropped_and_detach_stops() {
        let (a, b, time) = stepped_pair("ms-rt-5");
        let ecu = node(&a, 0);
        let dash = node(&b, 3);
        ecu.serve_table(7, RO, vec![1; 8]).unwrap();
        let k = dash.start_read(0, 9, 0, 1).unwrap();
        dash.abandon(k);
        // Past the operation's whole life (3 tries of 100 ms): its outcome was dropped.
        let (o, _) = step_until(&a, &b, &time, &dash, k, 500);
        assert_eq!(o, None);
        assert_eq!(dash.stats().client_timeouts, 1, "the abandoned read ran to its end");
        ecu.detach();
        let l = a.listen(ListenerFilter::default(), 16, DropPolicy::DropNewest);
        let k = dash.start_read(0, 7, 0, 1).unwrap();
        let (o, _) = step_until(&a, &b, &time, &dash, k, 1000);
        assert_eq!(o, Some(Outcome::TimedOut));
        assert!(l.try_recv().is_some(), "the request was on the bus");
        assert!(matches!(ecu.serve_table(1, RO, vec![0]), Err(MsError::Closed)));
    }
}
