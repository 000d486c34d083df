//! A bus shared between processes (and hosts): CAN frames as UDP datagrams
//! to an IP multicast group, interoperable with python-can's
//! `udp_multicast` interface.
//!
//! Scheme `udp_multicast`, every platform. Channels:
//!
//! | `channel=` | group |
//! | --- | --- |
//! | `udp_multicast:` | python-can's default, `[ff15:7079:7468:6f6e:6465:6d6f:6d63:6173]:43113` |
//! | `udp_multicast:239.74.163.2` | python-can's IPv4 default group, port 43113 |
//! | `udp_multicast:ff15::1`, `udp_multicast:[ff15::1]` | an IPv6 group, port 43113 |
//! | `udp_multicast:239.1.2.3:5000`, `udp_multicast:[ff15::1]:5000` | a group and port |
//!
//! Every node on the same group and port is on the same bus: canx buses in
//! this and other processes, and python-can's
//! `can.Bus(interface="udp_multicast", channel=GROUP)`.
//!
//! **Wire format** (python-can 4.6, `can/interfaces/udp_multicast/utils.py`,
//! `pack_message`/`unpack_message`; socket setup in `bus.py`,
//! `GeneralPurposeUdpMulticastBus`): one frame per datagram, a MessagePack map
//! with the string keys `timestamp` (float, s), `arbitration_id`,
//! `is_extended_id`, `is_remote_frame`, `is_error_frame`, `channel`, `dlc`
//! (python-can's: the data length in bytes), `data` (bin), `is_fd`,
//! `bitrate_switch`, `error_state_indicator`. Hop limit / TTL 1, multicast
//! loop on. python-can builds `can.Message(**map)` from a datagram, so a key
//! it does not know makes its receiver raise: canx sends exactly these keys
//! and so carries no sequence number. Received, keys canx does not know are
//! ignored; missing keys take `can.Message`'s defaults.
//!
//! **Semantics.** Like [`super::virtual_bus`]: a node does not receive its
//! own frames unless opened with `receive_own` (then they come back through
//! the group, in the order the group delivered them, as
//! [`Origin::Own`]); a bus opened without `fd` neither sends nor sees FD
//! frames. Own frames are recognised by their source address: each node
//! sends from its own socket (an ephemeral port), and receives on a second
//! one bound to the group's port. (python-can sends and receives on one
//! socket, so its buses receive their own frames.) Timestamps are the
//! receiving host's clock at reception, as python-can's. No arbitration is
//! simulated.
//!
//! On Windows the receive socket cannot be bound to the group address, so a
//! node may also receive other groups' frames sent to the same port: give
//! buses on Windows different ports, not only different groups (python-can's
//! sockets are bound to the port on every system).
//!
//! **Ordering and loss.** UDP multicast keeps the order of one sender's
//! datagrams on one host (loopback delivery is synchronous in the sender's
//! `send`); the order between senders is the order the kernel delivered
//! them, which every receiver on the host shares only approximately. A frame
//! is lost when a receiver's socket buffer is full (Linux counts those:
//! `SO_MEMINFO`, in [`Backend::backend_drops`]; other systems do not tell)
//! or its inbox is full (counted). Across hosts, the network may lose or
//! reorder datagrams, and nothing counts that (no sequence numbers, see
//! above). Datagrams that are not a valid frame are counted
//! ([`Backend::malformed`]), never a panic; on Linux so is a datagram
//! longer than 2,048 bytes (a python-can frame is under 300).

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use canx_core::frame::{fd_padded_len, make_id};
use canx_core::{CanFrame, ErrorFrame, FdFrame, Frame};
use parking_lot::Mutex;
use socket2::{Domain, Protocol, Socket, Type};

use super::{AvailableChannel, Backend, BusConfig, Capabilities, Scheme};
use crate::runtime::queue::BoundedQueue;
use crate::runtime::{epoch_now, Error, Origin, Result, RxFrame};

/// The `udp_multicast` entry of [`super::SCHEMES`].
pub(super) const SCHEME: Scheme = Scheme {
    name: "udp_multicast",
    default: false,
    check: |name| parse_group(name).map(|_| ()),
    open: |name, config| Ok(Arc::new(UdpMulticastNode::join(parse_group(name)?, config)?)),
    available: || {
        vec![
            AvailableChannel::new(DEFAULT_GROUP_V6.to_string(), "python-can's default IPv6 multicast group (UDP)"),
            AvailableChannel::new(DEFAULT_GROUP_V4.to_string(), "python-can's default IPv4 multicast group (UDP)"),
        ]
    },
};

/// python-can's default group (`UdpMulticastBus.DEFAULT_GROUP_IPv6`, site-local scope).
pub const DEFAULT_GROUP_V6: Ipv6Addr = Ipv6Addr::new(0xff15, 0x7079, 0x7468, 0x6f6e, 0x6465, 0x6d6f, 0x6d63, 0x6173);
/// python-can's IPv4 group (`UdpMulticastBus.DEFAULT_GROUP_IPv4`, administrative scope).
pub const DEFAULT_GROUP_V4: Ipv4Addr = Ipv4Addr::new(239, 74, 163, 2);
/// python-can's default port.
pub const DEFAULT_PORT: u16 = 43113;
/// IPv6 hop limit / IPv4 TTL of sent datagrams (python-can's default): the
/// frames stay on this host and its link.
pub const HOP_LIMIT: u32 = 1;
/// Frames a node's inbox holds before it drops (counted).
pub const INBOX_CAPACITY: usize = 65_536;
/// How long the socket reader waits before it looks at its stop flag.
const READ_SLICE: Duration = Duration::from_millis(100);
/// Socket receive buffer asked for (the kernel may cap it, Linux at `rmem_max`).
const RECV_BUFFER: usize = 4 << 20;
/// The deepest MessagePack nesting decoded (a frame's map is depth 1).
const MAX_DEPTH: usize = 8;

/// The group and port of a channel name (the part after `udp_multicast:`):
/// empty (python-can's IPv6 default), `GROUP`, `[GROUP]`, `V4GROUP:PORT` or
/// `[V6GROUP]:PORT`. Errors: [`Error::BadChannel`] when it is none of these
/// or not a multicast address.
pub fn parse_group(name: &str) -> Result<SocketAddr> {
    let addr = if name.is_empty() {
        SocketAddr::new(DEFAULT_GROUP_V6.into(), DEFAULT_PORT)
    } else if let Ok(ip) = name.parse::<IpAddr>() {
        SocketAddr::new(ip, DEFAULT_PORT)
    } else if let Some(ip) = name.strip_prefix('[').and_then(|s| s.strip_suffix(']')) {
        let ip: Ipv6Addr = ip.parse().map_err(|_| bad_group(name))?;
        SocketAddr::new(ip.into(), DEFAULT_PORT)
    } else {
        name.parse::<SocketAddr>().map_err(|_| bad_group(name))?
    };
    if !addr.ip().is_multicast() || addr.port() == 0 {
        return Err(bad_group(name));
    }
    Ok(addr)
}

fn bad_group(name: &str) -> Error {
    Error::BadChannel(format!(
        "udp_multicast channel {name:?}: expected a multicast group (IPv4 224.0.0.0/4 or IPv6 ff00::/8), \
         optionally with a port (\"239.74.163.2:43113\", \"[ff15::1]:43113\"), or nothing for python-can's \
         default group"
    ))
}

// ---------------------------------------------------------------- codec

/// Why a datagram is not a frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DecodeError {
    /// Not one complete MessagePack value (or trailing bytes after it).
    NotMessagePack,
    /// The value is not a map with string keys.
    NotAMap,
    /// A field has the wrong type (the field's key).
    BadField(&'static str),
    /// The identifier does not fit 11 (standard) or 29 (extended) bits.
    BadId,
    /// The data length is not one a frame of this kind can have, or `dlc`
    /// disagrees with it.
    BadLength,
    /// A remote frame flagged as CAN FD (FD has no remote frames).
    RemoteFd,
}

impl std::fmt::Display for DecodeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DecodeError::NotMessagePack => f.write_str("not a MessagePack value"),
            DecodeError::NotAMap => f.write_str("not a map with string keys"),
            DecodeError::BadField(k) => write!(f, "field {k:?} has the wrong type"),
            DecodeError::BadId => f.write_str("arbitration_id out of range"),
            DecodeError::BadLength => f.write_str("data length invalid for the frame kind"),
            DecodeError::RemoteFd => f.write_str("a remote frame cannot be CAN FD"),
        }
    }
}

impl std::error::Error for DecodeError {}

/// Appends the datagram of `frame` to `out`: the map python-can's
/// `pack_message` makes (module docs), `timestamp` in seconds since the
/// epoch, `channel` nil. An error frame goes as `is_error_frame` with its
/// class as `arbitration_id` (python-can's SocketCAN convention).
pub fn encode(frame: &Frame, timestamp: f64, out: &mut Vec<u8>) {
    use rmp::encode as e;
    let (id, extended, remote, error, fd, brs, esi, dlc, data): (
        u32,
        bool,
        bool,
        bool,
        bool,
        bool,
        bool,
        usize,
        &[u8],
    ) = match frame {
        Frame::Can(f) => {
            let dlc = if f.is_remote() { usize::from(f.dlc()) } else { f.data().len() };
            (f.raw_id(), f.is_extended(), f.is_remote(), false, false, false, false, dlc, f.data())
        }
        Frame::Fd(f) => (f.raw_id(), f.is_extended(), false, false, true, f.brs(), f.esi(), f.data().len(), f.data()),
        Frame::Error(f) => (f.class(), true, false, true, false, false, false, f.data().len(), f.data()),
    };
    // Writing to a Vec cannot fail: the results are Ok by construction.
    let _ = e::write_map_len(out, 11);
    let _ = e::write_str(out, "timestamp");
    let _ = e::write_f64(out, timestamp);
    let _ = e::write_str(out, "arbitration_id");
    let _ = e::write_uint(out, u64::from(id));
    for (key, v) in [("is_extended_id", extended), ("is_remote_frame", remote), ("is_error_frame", error)] {
        let _ = e::write_str(out, key);
        let _ = e::write_bool(out, v);
    }
    let _ = e::write_str(out, "channel");
    let _ = e::write_nil(out);
    let _ = e::write_str(out, "dlc");
    let _ = e::write_uint(out, dlc as u64);
    let _ = e::write_str(out, "data");
    let _ = e::write_bin(out, data);
    for (key, v) in [("is_fd", fd), ("bitrate_switch", brs), ("error_state_indicator", esi)] {
        let _ = e::write_str(out, key);
        let _ = e::write_bool(out, v);
    }
}

/// The frame in `datagram` (a map as python-can's `pack_message` makes it;
/// unknown keys ignored, missing ones as `can.Message`'s defaults:
/// extended id, data frame, empty data). python-can's `dlc` is the data
/// length in bytes (FD: 0-64); for a remote frame it is the requested
/// length. Errors: [`DecodeError`]; never panics, never allocates.
///
/// Read in place (no `rmpv::Value` tree): one pass checks the whole
/// datagram is one MessagePack value within [`MAX_DEPTH`] (the nesting
/// rules of `rmpv::decode::read_value_with_max_depth`, which this decoder
/// replaced), a second reads the map's fields.
pub fn decode(datagram: &[u8]) -> std::result::Result<Frame, DecodeError> {
    let mut rd = Cursor(datagram);
    let top = rd.value(MAX_DEPTH as u16).ok_or(DecodeError::NotMessagePack)?;
    if !rd.0.is_empty() {
        return Err(DecodeError::NotMessagePack);
    }
    let Item::Map { len, items } = top else {
        return Err(DecodeError::NotAMap);
    };
    // Entries are read at the depth rmpv reads them: value (1) + map (1).
    let inner = MAX_DEPTH as u16 - 2;
    let (mut id, mut extended, mut remote, mut error, mut fd, mut brs, mut esi) =
        (0u64, true, false, false, false, false, false);
    let mut dlc: Option<u64> = None;
    // The first 64 data bytes and the data's length (longer is invalid for
    // every frame kind but an error frame, which keeps 8).
    let (mut data, mut data_len) = ([0u8; 64], 0usize);
    let mut rd = Cursor(items);
    for _ in 0..len {
        // Already checked whole: these reads cannot fail.
        let (Some(k), Some(v)) = (rd.value(inner), rd.value(inner)) else {
            return Err(DecodeError::NotMessagePack);
        };
        let Item::Str(key) = k else {
            return Err(DecodeError::NotAMap);
        };
        let flag = |name: &'static str| match v {
            Item::Bool(b) => Ok(b),
            Item::Nil => Ok(false),
            _ => Err(DecodeError::BadField(name)),
        };
        match key {
            b"arbitration_id" => match v {
                Item::Uint(x) => id = x,
                _ => return Err(DecodeError::BadField("arbitration_id")),
            },
            b"is_extended_id" => extended = flag("is_extended_id")?,
            b"is_remote_frame" => remote = flag("is_remote_frame")?,
            b"is_error_frame" => error = flag("is_error_frame")?,
            b"is_fd" => fd = flag("is_fd")?,
            b"bitrate_switch" => brs = flag("bitrate_switch")?,
            b"error_state_indicator" => esi = flag("error_state_indicator")?,
            b"dlc" => {
                dlc = match v {
                    Item::Nil => None,
                    Item::Uint(x) => Some(x),
                    _ => return Err(DecodeError::BadField("dlc")),
                }
            }
            b"data" => {
                data_len = match v {
                    Item::Bin(b) => {
                        let n = b.len().min(64);
                        data[..n].copy_from_slice(&b[..n]);
                        b.len()
                    }
                    Item::Nil => 0,
                    Item::Array { len, items } => {
                        let mut el = Cursor(items);
                        for i in 0..len {
                            match el.value(inner - 2) {
                                Some(Item::Uint(x)) if x <= 255 => {
                                    if let Some(d) = data.get_mut(i) {
                                        *d = x as u8;
                                    }
                                }
                                _ => return Err(DecodeError::BadField("data")),
                            }
                        }
                        len
                    }
                    _ => return Err(DecodeError::BadField("data")),
                }
            }
            // timestamp (the receiver stamps), channel, keys of later
            // versions; a key must be UTF-8 (the known ones above are ASCII).
            _ => {
                if std::str::from_utf8(key).is_err() {
                    return Err(DecodeError::NotAMap);
                }
            }
        }
    }
    let id = u32::try_from(id).map_err(|_| DecodeError::BadId)?;
    if error {
        let mut detail = [0u8; 8];
        let n = data_len.min(8);
        detail[..n].copy_from_slice(&data[..n]);
        return Ok(Frame::Error(ErrorFrame::new(id, detail)));
    }
    let id = make_id(id, extended).map_err(|_| DecodeError::BadId)?;
    if remote {
        if fd {
            return Err(DecodeError::RemoteFd);
        }
        let len = usize::try_from(dlc.unwrap_or(0)).map_err(|_| DecodeError::BadLength)?;
        return CanFrame::new_remote(id, len).map(Frame::Can).map_err(|_| DecodeError::BadLength);
    }
    if dlc.is_some_and(|d| d != data_len as u64) {
        return Err(DecodeError::BadLength);
    }
    let data = data.get(..data_len).ok_or(DecodeError::BadLength)?;
    if fd {
        if fd_padded_len(data.len()) != Some(data.len()) {
            return Err(DecodeError::BadLength);
        }
        FdFrame::new(id, data, brs, esi).map(Frame::Fd).map_err(|_| DecodeError::BadLength)
    } else {
        CanFrame::new(id, data).map(Frame::Can).map_err(|_| DecodeError::BadLength)
    }
}

/// One MessagePack value as [`decode`] needs it, borrowed from the datagram.
#[derive(Clone, Copy)]
enum Item<'a> {
    Nil,
    Bool(bool),
    /// A non-negative integer (any integer format).
    Uint(u64),
    Str(&'a [u8]),
    Bin(&'a [u8]),
    /// `len` elements, already checked, in `items`.
    Array {
        len: usize,
        items: &'a [u8],
    },
    /// `len` key-value pairs, already checked, in `items`.
    Map {
        len: usize,
        items: &'a [u8],
    },
    /// A negative integer, a float or an extension value.
    Other,
}

/// A cursor over a datagram (MessagePack spec, "Formats").
struct Cursor<'a>(&'a [u8]);

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let (head, rest) = (self.0.get(..n)?, self.0.get(n..)?);
        self.0 = rest;
        Some(head)
    }
    fn uint(&mut self, n: usize) -> Option<u64> {
        Some(self.take(n)?.iter().fold(0u64, |acc, &b| (acc << 8) | u64::from(b)))
    }
    /// Reads one value whole (nested values checked and skipped), or
    /// `None` when the bytes are not one or it nests deeper than `depth`.
    /// Depth is spent as rmpv 1.3 spends it: 1 per value, 1 more for an
    /// array, map or bin body, 2 more for a str or ext body.
    fn value(&mut self, depth: u16) -> Option<Item<'a>> {
        let depth = depth.checked_sub(1)?;
        let marker = *self.take(1)?.first()?;
        let body = |rd: &mut Self, len: u64, extra: u16| -> Option<&'a [u8]> {
            depth.checked_sub(extra)?;
            rd.take(usize::try_from(len).ok()?)
        };
        Some(match marker {
            0x00..=0x7f => Item::Uint(u64::from(marker)),
            0x80..=0x8f => return self.container(u64::from(marker & 0x0f), 2, depth),
            0x90..=0x9f => return self.container(u64::from(marker & 0x0f), 1, depth),
            0xa0..=0xbf => Item::Str(body(self, u64::from(marker & 0x1f), 2)?),
            0xc0 | 0xc1 => Item::Nil, // 0xc1 (never used) reads as nil in rmpv
            0xc2 => Item::Bool(false),
            0xc3 => Item::Bool(true),
            0xc4..=0xc6 => {
                let len = self.uint(1 << (marker - 0xc4))?;
                Item::Bin(body(self, len, 1)?)
            }
            0xc7..=0xc9 => {
                let len = self.uint(1 << (marker - 0xc7))?;
                body(self, len + 1, 2)?; // type byte and data
                Item::Other
            }
            0xca => {
                self.take(4)?;
                Item::Other
            }
            0xcb => {
                self.take(8)?;
                Item::Other
            }
            0xcc..=0xcf => Item::Uint(self.uint(1 << (marker - 0xcc))?),
            0xd0..=0xd3 => {
                let n = 1usize << (marker - 0xd0);
                let raw = self.uint(n)?;
                // Sign bit of the n-byte big-endian integer.
                if raw >> (8 * n - 1) & 1 == 1 {
                    Item::Other
                } else {
                    Item::Uint(raw)
                }
            }
            0xd4..=0xd8 => {
                body(self, 1 + (1 << (marker - 0xd4)), 2)?;
                Item::Other
            }
            0xd9..=0xdb => {
                let len = self.uint(1 << (marker - 0xd9))?;
                Item::Str(body(self, len, 2)?)
            }
            0xdc | 0xdd => {
                let len = self.uint(2 << (marker - 0xdc))?;
                return self.container(len, 1, depth);
            }
            0xde | 0xdf => {
                let len = self.uint(2 << (marker - 0xde))?;
                return self.container(len, 2, depth);
            }
            0xe0..=0xff => Item::Other, // negative fixint
        })
    }
    /// An array (`per` 1) or map (`per` 2) of `len` entries, each value read
    /// with `depth - 1`.
    fn container(&mut self, len: u64, per: u64, depth: u16) -> Option<Item<'a>> {
        let inner = depth.checked_sub(1)?;
        let start = self.0;
        for _ in 0..len.checked_mul(per)? {
            self.value(inner)?;
        }
        let items = start.get(..start.len() - self.0.len())?;
        let len = usize::try_from(len).ok()?;
        Some(if per == 1 { Item::Array { len, items } } else { Item::Map { len, items } })
    }
}

// ---------------------------------------------------------------- backend

enum Inbound {
    Frame(RxFrame),
    Failed(io::Error),
    Wake,
}

/// What the node and its socket reader thread share.
struct Shared {
    stop: AtomicBool,
    inbox_drops: AtomicU64,
    malformed: AtomicU64,
}

/// One node on a multicast group: a send socket (its own ephemeral port,
/// which tells its frames apart) and a receive socket bound to the group's
/// port, read by one thread into a bounded inbox.
pub(crate) struct UdpMulticastNode {
    group: SocketAddr,
    tx: UdpSocket,
    /// The send socket's write timeout now (set only when it changes).
    tx_timeout: Mutex<Option<Duration>>,
    rx: UdpSocket,
    shared: Arc<Shared>,
    inbox: Arc<BoundedQueue<Inbound>>,
}

fn os(context: impl Into<String>) -> impl FnOnce(io::Error) -> Error {
    let context = context.into();
    move |source| Error::Os { context, source }
}

impl UdpMulticastNode {
    /// Joins `group`. Errors: [`Error::Os`] when a socket cannot be made,
    /// bound or joined to the group (no multicast route, say).
    pub fn join(group: SocketAddr, config: &BusConfig) -> Result<UdpMulticastNode> {
        let (rx, interface) = receive_socket(group).map_err(os(format!("udp_multicast: cannot join group {group}")))?;
        let tx = send_socket(group, interface).map_err(os(format!("udp_multicast: cannot send to group {group}")))?;
        let own = tx.local_addr().map_err(os("udp_multicast: local address"))?;
        let shared = Arc::new(Shared {
            stop: AtomicBool::new(false),
            inbox_drops: AtomicU64::new(0),
            malformed: AtomicU64::new(0),
        });
        let inbox = Arc::new(BoundedQueue::new(INBOX_CAPACITY));
        let reader = Reader {
            socket: rx.try_clone().map_err(os("udp_multicast: socket"))?,
            own,
            receive_own: config.receive_own,
            fd: config.fd,
            shared: shared.clone(),
            inbox: inbox.clone(),
        };
        std::thread::Builder::new()
            .name(format!("canx-udp-{group}"))
            .spawn(move || reader.run())
            .map_err(os("udp_multicast: cannot start the socket reader"))?;
        Ok(UdpMulticastNode { group, tx, tx_timeout: Mutex::new(None), rx, shared, inbox })
    }

    /// Datagrams received that were not a frame.
    pub fn malformed(&self) -> u64 {
        self.shared.malformed.load(Ordering::Relaxed)
    }
}

/// The receive socket: bound to the group's port with address reuse (every
/// node on the host binds it, python-can's too), joined on the interface
/// the system picks for the group, as python-can does, so both meet. Where
/// the system has no route for an IPv4 group (a host or container with
/// loopback only), it joins on the loopback interface instead; the returned
/// interface is then what the send socket must use too.
fn receive_socket(group: SocketAddr) -> io::Result<(UdpSocket, Option<Ipv4Addr>)> {
    let s = Socket::new(Domain::for_address(group), Type::DGRAM, Some(Protocol::UDP))?;
    s.set_reuse_address(true)?;
    #[cfg(all(unix, not(any(target_os = "solaris", target_os = "illumos"))))]
    s.set_reuse_port(true)?;
    let _ = s.set_recv_buffer_size(RECV_BUFFER);
    // Bound to the group address where the system allows it (not Windows),
    // so another group on the same port is not received too.
    let bind_ip: IpAddr = match group.ip() {
        _ if cfg!(windows) => unspecified(group),
        ip => ip,
    };
    s.bind(&SocketAddr::new(bind_ip, group.port()).into())?;
    let mut interface = None;
    match group.ip() {
        IpAddr::V4(g) => {
            if let Err(e) = s.join_multicast_v4(&g, &Ipv4Addr::UNSPECIFIED) {
                s.join_multicast_v4(&g, &Ipv4Addr::LOCALHOST).map_err(|_| e)?;
                interface = Some(Ipv4Addr::LOCALHOST);
            }
            #[cfg(target_os = "linux")]
            s.set_multicast_all_v4(false)?;
        }
        IpAddr::V6(g) => {
            s.join_multicast_v6(&g, 0).map_err(|e| {
                io::Error::new(
                    e.kind(),
                    format!("{e} (no IPv6 multicast route here: an IPv4 group such as 239.74.163.2 can use loopback)"),
                )
            })?;
            #[cfg(target_os = "linux")]
            s.set_multicast_all_v6(false)?;
        }
    }
    // Windows applies the loop option at the receiver.
    set_loop(&s, group)?;
    s.set_read_timeout(Some(READ_SLICE))?;
    Ok((s.into(), interface))
}

/// The send socket: an ephemeral port (its address marks this node's own
/// frames), connected to the group so the system fixes the source address.
fn send_socket(group: SocketAddr, interface: Option<Ipv4Addr>) -> io::Result<UdpSocket> {
    let s = Socket::new(Domain::for_address(group), Type::DGRAM, Some(Protocol::UDP))?;
    if let Some(i) = interface {
        s.set_multicast_if_v4(&i)?;
    }
    match group {
        SocketAddr::V4(_) => s.set_multicast_ttl_v4(HOP_LIMIT)?,
        SocketAddr::V6(_) => s.set_multicast_hops_v6(HOP_LIMIT)?,
    }
    set_loop(&s, group)?;
    s.bind(&SocketAddr::new(unspecified(group), 0).into())?;
    s.connect(&group.into())?;
    Ok(s.into())
}

fn unspecified(group: SocketAddr) -> IpAddr {
    match group {
        SocketAddr::V4(_) => Ipv4Addr::UNSPECIFIED.into(),
        SocketAddr::V6(_) => Ipv6Addr::UNSPECIFIED.into(),
    }
}

fn set_loop(s: &Socket, group: SocketAddr) -> io::Result<()> {
    match group {
        SocketAddr::V4(_) => s.set_multicast_loop_v4(true),
        SocketAddr::V6(_) => s.set_multicast_loop_v6(true),
    }
}

/// The socket reader thread: decodes datagrams into the inbox until the
/// node is dropped. Per wake-up it takes every datagram queued at the
/// socket, up to [`BATCH`] (Linux: one `recvmmsg` call), stamps them with
/// one clock reading, and queues their frames with one inbox lock and at
/// most one wake of the receive thread.
struct Reader {
    socket: UdpSocket,
    own: SocketAddr,
    receive_own: bool,
    fd: bool,
    shared: Arc<Shared>,
    inbox: Arc<BoundedQueue<Inbound>>,
}

impl Reader {
    fn run(self) {
        let mut batch = Batch::new();
        let mut frames = Vec::with_capacity(BATCH);
        let mut failures = 0u32;
        while !self.shared.stop.load(Ordering::Relaxed) {
            let n = match batch.recv(&self.socket) {
                Ok(n) => n,
                Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => continue,
                Err(e) if is_oversized(&e) => {
                    self.shared.malformed.fetch_add(1, Ordering::Relaxed);
                    continue;
                }
                Err(e) => {
                    if self.shared.stop.load(Ordering::Relaxed) {
                        break;
                    }
                    let _ = self.inbox.try_push(Inbound::Failed(e));
                    failures += 1;
                    // A socket that keeps failing: slow down, the receive
                    // thread stops the bus after its error limit.
                    std::thread::sleep(Duration::from_millis(10 * u64::from(failures.min(10))));
                    continue;
                }
            };
            failures = 0;
            let timestamp = epoch_now();
            for i in 0..n {
                match batch.get(i) {
                    Some((datagram, from)) => self.take(datagram, from, timestamp, &mut frames),
                    None => {
                        self.shared.malformed.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
            let dropped = self.inbox.push_many(&mut frames);
            if dropped > 0 {
                self.shared.inbox_drops.fetch_add(dropped as u64, Ordering::Relaxed);
            }
        }
    }

    /// Appends the frame of one datagram to `frames` (or counts it malformed).
    fn take(&self, datagram: &[u8], from: SocketAddr, timestamp: f64, frames: &mut Vec<Inbound>) {
        let own = same_node(from, self.own);
        if own && !self.receive_own {
            return;
        }
        let frame = match decode(datagram) {
            Ok(f) => f,
            Err(_) => {
                self.shared.malformed.fetch_add(1, Ordering::Relaxed);
                return;
            }
        };
        if matches!(frame, Frame::Fd(_)) && !self.fd {
            return; // a classic controller does not see FD frames
        }
        let origin = if own { Origin::Own } else { Origin::Bus };
        frames.push(Inbound::Frame(RxFrame { frame, timestamp, origin }));
    }
}

/// Datagrams a reader takes per wake-up at most.
const BATCH: usize = 32;
/// Receive buffer per datagram (Linux batches). A python-can frame is
/// under 300 bytes; a longer datagram is cut, and counted malformed.
#[cfg(target_os = "linux")]
const SLOT: usize = 2048;

/// The reader's receive buffers: [`BATCH`] datagrams per `recvmmsg` call.
#[cfg(target_os = "linux")]
struct Batch {
    bufs: Vec<u8>,
    addrs: Vec<libc::sockaddr_storage>,
    iovs: Vec<libc::iovec>,
    hdrs: Vec<libc::mmsghdr>,
}

#[cfg(target_os = "linux")]
impl Batch {
    fn new() -> Batch {
        // SAFETY: all-zero bytes are a valid value of these plain C structs
        // (integers and null pointers).
        let (addr, iov, hdr) = unsafe {
            (
                std::mem::zeroed::<libc::sockaddr_storage>(),
                std::mem::zeroed::<libc::iovec>(),
                std::mem::zeroed::<libc::mmsghdr>(),
            )
        };
        Batch { bufs: vec![0; BATCH * SLOT], addrs: vec![addr; BATCH], iovs: vec![iov; BATCH], hdrs: vec![hdr; BATCH] }
    }

    /// Waits (up to the socket's read timeout) for a datagram, then takes
    /// it and those queued behind it, up to [`BATCH`]. Returns how many.
    fn recv(&mut self, socket: &UdpSocket) -> io::Result<usize> {
        use std::os::fd::AsRawFd;
        for (i, ((iov, hdr), addr)) in self.iovs.iter_mut().zip(&mut self.hdrs).zip(&mut self.addrs).enumerate() {
            iov.iov_base = self.bufs[i * SLOT..].as_mut_ptr().cast();
            iov.iov_len = SLOT;
            hdr.msg_hdr.msg_name = (addr as *mut libc::sockaddr_storage).cast();
            hdr.msg_hdr.msg_namelen = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
            hdr.msg_hdr.msg_iov = iov;
            hdr.msg_hdr.msg_iovlen = 1;
            hdr.msg_hdr.msg_control = std::ptr::null_mut();
            hdr.msg_hdr.msg_controllen = 0;
            hdr.msg_hdr.msg_flags = 0;
            hdr.msg_len = 0;
        }
        // SAFETY: `hdrs` holds BATCH headers, each pointing at its own
        // iovec (one SLOT-byte range of `bufs`) and its own sockaddr_storage
        // with the matching lengths; none of these vectors is resized or
        // moved during the call. MSG_WAITFORONE: block (socket timeout) for
        // the first datagram only. No timeout argument (null).
        let n = unsafe {
            libc::recvmmsg(
                socket.as_raw_fd(),
                self.hdrs.as_mut_ptr(),
                BATCH as libc::c_uint,
                libc::MSG_WAITFORONE,
                std::ptr::null_mut(),
            )
        };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok((n as usize).min(BATCH))
    }

    /// Datagram `i` of the last [`Batch::recv`] and its source, or `None`
    /// when it was cut (longer than [`SLOT`]) or has no IP source.
    fn get(&self, i: usize) -> Option<(&[u8], SocketAddr)> {
        let hdr = self.hdrs.get(i)?;
        if hdr.msg_hdr.msg_flags & libc::MSG_TRUNC != 0 {
            return None;
        }
        let len = (hdr.msg_len as usize).min(SLOT);
        let from = socket_addr(self.addrs.get(i)?, hdr.msg_hdr.msg_namelen)?;
        Some((self.bufs.get(i * SLOT..i * SLOT + len)?, from))
    }
}

/// The IP address and port in a `sockaddr_storage` the kernel filled.
#[cfg(target_os = "linux")]
fn socket_addr(ss: &libc::sockaddr_storage, len: libc::socklen_t) -> Option<SocketAddr> {
    use std::net::SocketAddrV6;
    let len = len as usize;
    match libc::c_int::from(ss.ss_family) {
        libc::AF_INET if len >= std::mem::size_of::<libc::sockaddr_in>() => {
            // SAFETY: the family says the storage holds a sockaddr_in,
            // which it is large and aligned enough for (POSIX).
            let a = unsafe { &*(ss as *const libc::sockaddr_storage).cast::<libc::sockaddr_in>() };
            Some(SocketAddr::new(Ipv4Addr::from(u32::from_be(a.sin_addr.s_addr)).into(), u16::from_be(a.sin_port)))
        }
        libc::AF_INET6 if len >= std::mem::size_of::<libc::sockaddr_in6>() => {
            // SAFETY: as above, for sockaddr_in6.
            let a = unsafe { &*(ss as *const libc::sockaddr_storage).cast::<libc::sockaddr_in6>() };
            let ip = Ipv6Addr::from(a.sin6_addr.s6_addr);
            Some(SocketAddr::V6(SocketAddrV6::new(ip, u16::from_be(a.sin6_port), a.sin6_flowinfo, a.sin6_scope_id)))
        }
        _ => None,
    }
}

/// Elsewhere: one datagram per wake-up (`recv_from`).
#[cfg(not(target_os = "linux"))]
struct Batch {
    buf: Vec<u8>,
    last: Option<(usize, SocketAddr)>,
}

#[cfg(not(target_os = "linux"))]
impl Batch {
    fn new() -> Batch {
        Batch { buf: vec![0; 65_536], last: None }
    }
    fn recv(&mut self, socket: &UdpSocket) -> io::Result<usize> {
        self.last = Some(socket.recv_from(&mut self.buf)?);
        Ok(1)
    }
    fn get(&self, i: usize) -> Option<(&[u8], SocketAddr)> {
        let (n, from) = self.last.filter(|_| i == 0)?;
        Some((self.buf.get(..n)?, from))
    }
}

/// Whether a datagram from `from` was sent by the socket whose (connected)
/// address is `own`. IPv4-mapped IPv6 sources compare as IPv4.
fn same_node(from: SocketAddr, own: SocketAddr) -> bool {
    let canon = |ip: IpAddr| match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    };
    from.port() == own.port() && canon(from.ip()) == canon(own.ip())
}

/// Windows reports a datagram larger than the buffer as an error
/// (`WSAEMSGSIZE`); elsewhere it is truncated and fails to decode.
fn is_oversized(e: &io::Error) -> bool {
    cfg!(windows) && e.raw_os_error() == Some(10040)
}

impl Drop for UdpMulticastNode {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Relaxed);
    }
}

impl Backend for UdpMulticastNode {
    fn recv_batch(&self, out: &mut Vec<RxFrame>, timeout: Duration) -> Result<()> {
        let mut failed = None;
        self.inbox.pop_batch(timeout, 256, |m| match m {
            Inbound::Frame(f) => {
                out.push(f);
                true
            }
            Inbound::Failed(source) => {
                failed = Some(source);
                false
            }
            Inbound::Wake => true,
        });
        match failed {
            Some(source) => Err(Error::Os { context: format!("udp_multicast: receive from {}", self.group), source }),
            None => Ok(()),
        }
    }

    fn send(&self, frame: &Frame, timeout: Duration) -> Result<()> {
        let mut buf = Vec::with_capacity(160);
        encode(frame, epoch_now(), &mut buf);
        let timeout = timeout.max(Duration::from_millis(1));
        {
            let mut now = self.tx_timeout.lock();
            if *now != Some(timeout) {
                self.tx.set_write_timeout(Some(timeout)).map_err(os("udp_multicast: send"))?;
                *now = Some(timeout);
            }
        }
        match self.tx.send(&buf) {
            Ok(_) => Ok(()),
            Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => {
                Err(Error::SendTimeout)
            }
            Err(e) => Err(Error::Os { context: format!("udp_multicast: send to {}", self.group), source: e }),
        }
    }

    fn wake(&self) {
        let _ = self.inbox.try_push(Inbound::Wake);
    }

    fn backend_drops(&self) -> u64 {
        self.shared.inbox_drops.load(Ordering::Relaxed) + kernel_drops(&self.rx)
    }

    fn malformed(&self) -> u64 {
        UdpMulticastNode::malformed(self)
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities { fd: true, ..Capabilities::default() }
    }
}

/// Datagrams the kernel dropped at `socket` because its receive buffer was
/// full (Linux `SO_MEMINFO`, `SK_MEMINFO_DROPS`); 0 where unknown.
#[cfg(target_os = "linux")]
fn kernel_drops(socket: &UdpSocket) -> u64 {
    use std::os::fd::AsRawFd;
    const SK_MEMINFO_VARS: usize = 9; // include/uapi/linux/sock_diag.h
    const SK_MEMINFO_DROPS: usize = 8;
    let mut info = [0u32; SK_MEMINFO_VARS];
    let mut len = std::mem::size_of_val(&info) as libc::socklen_t;
    // SAFETY: `info` is a writable buffer of `len` bytes that outlives the
    // call; the kernel writes at most `len` bytes and updates `len`.
    let r = unsafe {
        libc::getsockopt(socket.as_raw_fd(), libc::SOL_SOCKET, libc::SO_MEMINFO, info.as_mut_ptr().cast(), &mut len)
    };
    if r == 0 && len as usize >= (SK_MEMINFO_DROPS + 1) * 4 {
        u64::from(info[SK_MEMINFO_DROPS])
    } else {
        0
    }
}

#[cfg(not(target_os = "linux"))]
fn kernel_drops(_socket: &UdpSocket) -> u64 {
    0
}

#[cfg(test)]
mod tests {
    use super::*;
    use canx_core::{ExtendedId, StandardId};

    fn std_id(raw: u16) -> StandardId {
        StandardId::new(raw).unwrap()
    }

    #[test]
    fn channel_names() {
        let v6 = SocketAddr::new(DEFAULT_GROUP_V6.into(), 43113);
        assert_eq!(parse_group("").unwrap(), v6);
        assert_eq!(parse_group("ff15:7079:7468:6f6e:6465:6d6f:6d63:6173").unwrap(), v6);
        assert_eq!(parse_group("[ff15:7079:7468:6f6e:6465:6d6f:6d63:6173]").unwrap(), v6);
        assert_eq!(parse_group("239.74.163.2").unwrap(), "239.74.163.2:43113".parse().unwrap());
        assert_eq!(parse_group("239.1.2.3:5000").unwrap(), "239.1.2.3:5000".parse().unwrap());
        assert_eq!(parse_group("[ff15::1]:5000").unwrap(), "[ff15::1]:5000".parse().unwrap());
        for bad in ["127.0.0.1", "::1", "[ff15::1", "239.1.2.3:0", "239.1.2.3:x", "group", "239.1.2.3:70000"] {
            assert!(matches!(parse_group(bad), Err(Error::BadChannel(_))), "{bad}");
        }
    }

    #[test]
    fn frames_round_trip() {
        let frames = [
            Frame::Can(CanFrame::new(std_id(0x123), &[1, 2, 3]).unwrap()),
            Frame::Can(CanFrame::new(std_id(0x7FF), &[]).unwrap()),
            Frame::Can(CanFrame::new(ExtendedId::new(0x1FFF_FFFF).unwrap(), &[0xFF; 8]).unwrap()),
            Frame::Can(CanFrame::new_remote(ExtendedId::new(0x18EA_FF00).unwrap(), 3).unwrap()),
            Frame::Fd(FdFrame::new(std_id(0x10), &[7; 64], true, false).unwrap()),
            Frame::Fd(FdFrame::new(ExtendedId::new(0x1234_5678).unwrap(), &[9; 12], false, true).unwrap()),
            Frame::Error(ErrorFrame::new(0x40, [0, 4, 0, 0, 0, 0, 5, 6])),
        ];
        for f in frames {
            let mut buf = Vec::new();
            encode(&f, 1.5, &mut buf);
            assert_eq!(decode(&buf), Ok(f), "{f:?}");
        }
    }

    /// The bytes python-can 4.6 (msgpack 1.1, `pack_message`) sends for
    /// `Message(timestamp=1.5, arbitration_id=0x123, is_extended_id=False,
    /// data=[1, 2, 3])`: canx decodes them, and encodes the same frame to the
    /// same bytes (same keys in the same order; `channel` nil).
    #[test]
    fn python_can_bytes() {
        let mut py: Vec<u8> = vec![0x8b];
        let key = |v: &mut Vec<u8>, k: &str| {
            v.push(0xa0 | k.len() as u8);
            v.extend_from_slice(k.as_bytes());
        };
        key(&mut py, "timestamp");
        py.push(0xcb);
        py.extend_from_slice(&1.5f64.to_be_bytes());
        key(&mut py, "arbitration_id");
        py.extend_from_slice(&[0xcd, 0x01, 0x23]);
        for k in ["is_extended_id", "is_remote_frame", "is_error_frame"] {
            key(&mut py, k);
            py.push(0xc2);
        }
        key(&mut py, "channel");
        py.push(0xc0);
        key(&mut py, "dlc");
        py.push(3);
        key(&mut py, "data");
        py.extend_from_slice(&[0xc4, 3, 1, 2, 3]);
        for k in ["is_fd", "bitrate_switch", "error_state_indicator"] {
            key(&mut py, k);
            py.push(0xc2);
        }
        let f = Frame::Can(CanFrame::new(std_id(0x123), &[1, 2, 3]).unwrap());
        assert_eq!(decode(&py), Ok(f));
        let mut ours = Vec::new();
        encode(&f, 1.5, &mut ours);
        assert_eq!(ours, py);
    }

    /// The decoder canx used before the in-place one (an `rmpv::Value`
    /// tree), kept as the reference the in-place decoder must agree with.
    fn decode_rmpv(datagram: &[u8]) -> std::result::Result<Frame, DecodeError> {
        use rmpv::Value;
        let mut rd = datagram;
        let value =
            rmpv::decode::read_value_with_max_depth(&mut rd, MAX_DEPTH).map_err(|_| DecodeError::NotMessagePack)?;
        if !rd.is_empty() {
            return Err(DecodeError::NotMessagePack);
        }
        let Value::Map(entries) = value else {
            return Err(DecodeError::NotAMap);
        };
        let (mut id, mut extended, mut remote, mut error, mut fd, mut brs, mut esi) =
            (0u64, true, false, false, false, false, false);
        let mut dlc: Option<u64> = None;
        let mut data: Vec<u8> = Vec::new();
        for (k, v) in &entries {
            let Some(key) = k.as_str() else {
                return Err(DecodeError::NotAMap);
            };
            let flag = |name: &'static str| match v {
                Value::Boolean(b) => Ok(*b),
                Value::Nil => Ok(false),
                _ => Err(DecodeError::BadField(name)),
            };
            match key {
                "arbitration_id" => id = v.as_u64().ok_or(DecodeError::BadField("arbitration_id"))?,
                "is_extended_id" => extended = flag("is_extended_id")?,
                "is_remote_frame" => remote = flag("is_remote_frame")?,
                "is_error_frame" => error = flag("is_error_frame")?,
                "is_fd" => fd = flag("is_fd")?,
                "bitrate_switch" => brs = flag("bitrate_switch")?,
                "error_state_indicator" => esi = flag("error_state_indicator")?,
                "dlc" => {
                    dlc = match v {
                        Value::Nil => None,
                        _ => Some(v.as_u64().ok_or(DecodeError::BadField("dlc"))?),
                    }
                }
                "data" => {
                    data = match v {
                        Value::Binary(b) => b.clone(),
                        Value::Nil => Vec::new(),
                        Value::Array(a) => a
                            .iter()
                            .map(|x| x.as_u64().and_then(|b| u8::try_from(b).ok()))
                            .collect::<Option<Vec<u8>>>()
                            .ok_or(DecodeError::BadField("data"))?,
                        _ => return Err(DecodeError::BadField("data")),
                    }
                }
                _ => {} // timestamp (the receiver stamps), channel, keys of later versions
            }
        }
        let id = u32::try_from(id).map_err(|_| DecodeError::BadId)?;
        if error {
            let mut detail = [0u8; 8];
            let n = data.len().min(8);
            detail[..n].copy_from_slice(&data[..n]);
            return Ok(Frame::Error(ErrorFrame::new(id, detail)));
        }
        let id = make_id(id, extended).map_err(|_| DecodeError::BadId)?;
        if remote {
            if fd {
                return Err(DecodeError::RemoteFd);
            }
            let len = usize::try_from(dlc.unwrap_or(0)).map_err(|_| DecodeError::BadLength)?;
            return CanFrame::new_remote(id, len).map(Frame::Can).map_err(|_| DecodeError::BadLength);
        }
        if dlc.is_some_and(|d| d != data.len() as u64) {
            return Err(DecodeError::BadLength);
        }
        if fd {
            if fd_padded_len(data.len()) != Some(data.len()) {
                return Err(DecodeError::BadLength);
            }
            FdFrame::new(id, &data, brs, esi).map(Frame::Fd).map_err(|_| DecodeError::BadLength)
        } else {
            CanFrame::new(id, &data).map(Frame::Can).map_err(|_| DecodeError::BadLength)
        }
    }

    /// The in-place decoder gives the same result as the `rmpv` one for
    /// every datagram: mutated frames (seeded xorshift: flips, cuts,
    /// inserts, also of nesting and type markers) and random bytes.
    #[test]
    fn in_place_decoder_agrees_with_rmpv() {
        let seeds = [
            Frame::Can(CanFrame::new(std_id(0x123), &[1, 2, 3]).unwrap()),
            Frame::Can(CanFrame::new_remote(ExtendedId::new(0x18EA_FF00).unwrap(), 3).unwrap()),
            Frame::Fd(FdFrame::new(std_id(0x10), &[7; 64], true, true).unwrap()),
            Frame::Error(ErrorFrame::new(0x40, [1; 8])),
        ];
        let mut extra = Vec::new();
        {
            use rmpv::Value as V;
            let nest = |n: usize| (0..n).fold(V::from(1), |v, _| V::Array(vec![v]));
            for n in 0..6 {
                extra.push(map(vec![("arbitration_id", V::from(1)), ("x", nest(n))]));
                extra.push(map(vec![("arbitration_id", V::from(1)), ("data", nest(n))]));
            }
            extra.push(map(vec![("arbitration_id", V::from(1)), ("data", V::Array(vec![V::from(1); 70]))]));
            extra.push(map(vec![
                ("arbitration_id", V::from(1)),
                ("is_error_frame", V::from(true)),
                ("data", V::Binary(vec![9; 100])),
            ]));
            extra.push(map(vec![("arbitration_id", V::from(-1i64 << 40)), ("dlc", V::from(1.5))]));
            extra.push(map(vec![("arbitration_id", V::Ext(3, vec![1, 2])), ("y", V::String("\u{e9}".into()))]));
            let mut bad_key = map(vec![("arbitration_id", V::from(1)), ("zz", V::Nil)]);
            let at = bad_key.len() - 3;
            bad_key[at] = 0xff; // a key that is not UTF-8
            extra.push(bad_key);
        }
        for d in &extra {
            assert_eq!(decode(d), decode_rmpv(d), "{d:02x?}");
        }
        let mut x = 0x2545_F491_4F6C_DD1Du64;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let mut accepted = 0u32;
        for round in 0..60_000 {
            let mut d = Vec::new();
            match round % 6 {
                4 => d = extra[(next() as usize) % extra.len()].clone(),
                5 => d.extend((0..next() % 40).map(|_| next() as u8)),
                i => encode(&seeds[i], 1.0, &mut d),
            }
            for _ in 0..next() % 4 {
                let at = (next() as usize) % (d.len() + 1);
                match next() % 5 {
                    0 if at < d.len() => d[at] ^= 1 << (next() % 8),
                    1 if at < d.len() => d[at] = next() as u8,
                    2 => d.truncate(at),
                    3 => d.insert(at, [0x91, 0xdc, 0xc4, 0xd0, 0xc7, 0xd4, 0xa1, 0xc1][(next() % 8) as usize]),
                    _ => d.insert(at, next() as u8),
                }
            }
            let got = decode(&d);
            assert_eq!(got, decode_rmpv(&d), "{d:02x?}");
            accepted += u32::from(got.is_ok());
        }
        assert!(accepted > 1000, "{accepted}");
    }

    /// Mutated datagrams (bytes flipped, cut, inserted; seeded xorshift, so
    /// the run is the same every time) never panic the decoder, and what it
    /// accepts is a frame that encodes and decodes to itself.
    #[test]
    fn mutated_datagrams_never_panic() {
        let seeds = [
            Frame::Can(CanFrame::new(std_id(0x123), &[1, 2, 3]).unwrap()),
            Frame::Can(CanFrame::new_remote(ExtendedId::new(0x18EA_FF00).unwrap(), 3).unwrap()),
            Frame::Fd(FdFrame::new(std_id(0x10), &[7; 64], true, true).unwrap()),
            Frame::Error(ErrorFrame::new(0x40, [1; 8])),
        ];
        let mut x = 0x9E37_79B9_7F4A_7C15u64;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let (mut accepted, mut refused) = (0u32, 0u32);
        for round in 0..40_000 {
            let mut d = Vec::new();
            encode(&seeds[round % seeds.len()], 1.0, &mut d);
            for _ in 0..1 + next() % 4 {
                let at = (next() as usize) % (d.len() + 1);
                match next() % 4 {
                    0 if at < d.len() => d[at] ^= 1 << (next() % 8),
                    1 if at < d.len() => d[at] = next() as u8,
                    2 => d.truncate(at),
                    _ => d.insert(at, next() as u8),
                }
            }
            match decode(&d) {
                Ok(f) => {
                    let mut again = Vec::new();
                    encode(&f, 0.0, &mut again);
                    assert_eq!(decode(&again), Ok(f), "{d:02x?}");
                    accepted += 1;
                }
                Err(_) => refused += 1,
            }
        }
        assert!(accepted > 1000 && refused > 1000, "{accepted} accepted, {refused} refused");
    }

    fn map(entries: Vec<(&str, rmpv::Value)>) -> Vec<u8> {
        let v = rmpv::Value::Map(entries.into_iter().map(|(k, v)| (rmpv::Value::from(k), v)).collect());
        let mut buf = Vec::new();
        rmpv::encode::write_value(&mut buf, &v).unwrap();
        buf
    }

    #[test]
    fn defaults_and_unknown_keys() {
        use rmpv::Value as V;
        // python-can's Message defaults: extended id.
        let f = decode(&map(vec![("arbitration_id", V::from(5)), ("sequence", V::from(9))])).unwrap();
        assert_eq!(f, Frame::Can(CanFrame::new(ExtendedId::new(5).unwrap(), &[]).unwrap()));
        // data as an array of ints (other encoders).
        let f = decode(&map(vec![
            ("arbitration_id", V::from(5)),
            ("is_extended_id", V::from(false)),
            ("data", V::Array(vec![V::from(1), V::from(255)])),
        ]))
        .unwrap();
        assert_eq!(f.data(), &[1, 255]);
    }

    #[test]
    fn malformed_datagrams_are_errors() {
        use rmpv::Value as V;
        let id = |v: V| ("arbitration_id", v);
        let std = ("is_extended_id", V::from(false));
        let cases: Vec<(Vec<u8>, DecodeError)> = vec![
            (vec![], DecodeError::NotMessagePack),
            (b"hello world".to_vec(), DecodeError::NotMessagePack),
            (vec![0x8b], DecodeError::NotMessagePack),
            (vec![0xdf, 0xff, 0xff, 0xff, 0xff], DecodeError::NotMessagePack),
            ([map(vec![]), vec![0]].concat(), DecodeError::NotMessagePack),
            (vec![0x91, 0x01], DecodeError::NotAMap),
            (map(vec![id(V::from("x"))]), DecodeError::BadField("arbitration_id")),
            (map(vec![id(V::from(-1))]), DecodeError::BadField("arbitration_id")),
            (map(vec![id(V::from(0x800)), std.clone()]), DecodeError::BadId),
            (map(vec![id(V::from(0x2000_0000u32))]), DecodeError::BadId),
            (map(vec![id(V::from(1u64 << 40))]), DecodeError::BadId),
            (map(vec![id(V::from(1)), ("data", V::Binary(vec![0; 9]))]), DecodeError::BadLength),
            (map(vec![id(V::from(1)), ("data", V::Binary(vec![0; 3])), ("dlc", V::from(4))]), DecodeError::BadLength),
            (
                map(vec![id(V::from(1)), ("is_fd", V::from(true)), ("data", V::Binary(vec![0; 9]))]),
                DecodeError::BadLength,
            ),
            (
                map(vec![id(V::from(1)), ("is_fd", V::from(true)), ("data", V::Binary(vec![0; 65]))]),
                DecodeError::BadLength,
            ),
            (
                map(vec![id(V::from(1)), ("is_remote_frame", V::from(true)), ("dlc", V::from(9))]),
                DecodeError::BadLength,
            ),
            (
                map(vec![id(V::from(1)), ("is_remote_frame", V::from(true)), ("is_fd", V::from(true))]),
                DecodeError::RemoteFd,
            ),
            (map(vec![id(V::from(1)), ("is_fd", V::from(3))]), DecodeError::BadField("is_fd")),
            (map(vec![id(V::from(1)), ("data", V::from(3))]), DecodeError::BadField("data")),
            (map(vec![id(V::from(1)), ("data", V::Array(vec![V::from(256)]))]), DecodeError::BadField("data")),
        ];
        for (bytes, want) in cases {
            assert_eq!(decode(&bytes), Err(want), "{bytes:02x?}");
        }
        // Deep nesting is refused, not a stack overflow.
        let deep: Vec<u8> = std::iter::repeat_n(0x91u8, 100_000).chain([0x01]).collect();
        assert_eq!(decode(&deep), Err(DecodeError::NotMessagePack));
    }

    #[test]
    fn own_address_matching() {
        let own: SocketAddr = "192.0.2.2:5000".parse().unwrap();
        assert!(same_node("192.0.2.2:5000".parse().unwrap(), own));
        assert!(same_node("[::ffff:192.0.2.2]:5000".parse().unwrap(), own));
        assert!(!same_node("192.0.2.2:5001".parse().unwrap(), own));
        assert!(!same_node("192.0.2.3:5000".parse().unwrap(), own));
    }

    // ------------------------------------------------ buses over real sockets

    use crate::runtime::{Bus, DropPolicy, ListenerFilter};

    /// A bus on `group` (one group per test: tests run in parallel), or
    /// `None` with the reason printed when this host cannot join a
    /// multicast group (no multicast route: some CI sandboxes).
    fn open(group: &str, own: bool, fd: bool) -> Option<Bus> {
        let mut c = BusConfig::new(super::super::Channel::parse(&format!("udp_multicast:{group}"), None).unwrap());
        c.receive_own = own;
        c.fd = fd;
        match Bus::open(c) {
            Ok(b) => Some(b),
            Err(e @ Error::Os { .. }) => {
                eprintln!("SKIPPED: this host cannot join multicast group {group}: {e}");
                None
            }
            Err(e) => panic!("{e}"),
        }
    }

    const T: Duration = Duration::from_secs(10);

    fn wait_until(mut cond: impl FnMut() -> bool) -> bool {
        let t0 = std::time::Instant::now();
        while !cond() {
            if t0.elapsed() > T {
                return false;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        true
    }

    fn can(id: u16, data: &[u8]) -> Frame {
        Frame::Can(CanFrame::new(std_id(id), data).unwrap())
    }

    /// One sender's frames arrive in order; every frame sent is received or
    /// counted as dropped (kernel buffer on Linux, inbox elsewhere).
    #[test]
    fn one_senders_order_and_loss_accounting() {
        let group = "239.255.42.1:43201";
        let (Some(a), Some(b)) = (open(group, false, false), open(group, false, false)) else { return };
        let l = b.listen(ListenerFilter::default(), 1 << 20, DropPolicy::DropNewest);
        let n = 20_000u32;
        for i in 0..n {
            a.send(&can(0x100, &i.to_le_bytes()), T).unwrap();
        }
        assert!(
            wait_until(|| b.stats().received + b.stats().backend_dropped >= u64::from(n)),
            "received {} + dropped {} of {n}",
            b.stats().received,
            b.stats().backend_dropped
        );
        let mut last = None;
        while let Some(f) = l.recv_timeout(Duration::ZERO) {
            let i = u32::from_le_bytes(f.frame.data().try_into().unwrap());
            assert!(last.is_none_or(|l| i > l), "{i} after {last:?}");
            assert_eq!(f.origin, Origin::Bus);
            last = Some(i);
        }
        let s = b.stats();
        assert_eq!(s.received + s.backend_dropped, u64::from(n), "{s:?}");
        assert_eq!(a.stats().received, 0, "a node does not receive its own frames");
    }

    #[test]
    fn own_frames_only_with_receive_own() {
        let group = "239.255.42.2:43202";
        let (Some(a), Some(b)) = (open(group, true, false), open(group, false, false)) else { return };
        let la = a.listen(ListenerFilter::default(), 100, DropPolicy::DropNewest);
        let lb = b.listen(ListenerFilter::default(), 100, DropPolicy::DropNewest);
        a.send(&can(0x1, &[1]), T).unwrap();
        b.send(&can(0x2, &[2]), T).unwrap();
        let own = la.recv_timeout(T).unwrap();
        let other = la.recv_timeout(T).unwrap();
        let mut seen = [own, other];
        seen.sort_by_key(|f| f.frame.key());
        assert_eq!((seen[0].frame, seen[0].origin), (can(0x1, &[1]), Origin::Own));
        assert_eq!((seen[1].frame, seen[1].origin), (can(0x2, &[2]), Origin::Bus));
        assert_eq!(lb.recv_timeout(T).map(|f| (f.frame, f.origin)), Some((can(0x1, &[1]), Origin::Bus)));
        assert!(lb.recv_timeout(Duration::from_millis(200)).is_none(), "b received its own frame");
        assert!(seen.iter().all(|f| (f.timestamp - epoch_now()).abs() < 60.0));
    }

    #[test]
    fn fd_frames_reach_fd_buses_only() {
        let group = "[ff15::4354:4658]:43203";
        let Some(a) = open(group, false, true).or_else(|| open("239.255.42.3:43203", false, true)) else { return };
        let group = a.config().channel.name().to_string();
        let (Some(fd), Some(classic)) = (open(&group, false, true), open(&group, false, false)) else { return };
        let lfd = fd.listen(ListenerFilter::default(), 100, DropPolicy::DropNewest);
        let lc = classic.listen(ListenerFilter::default(), 100, DropPolicy::DropNewest);
        let big = Frame::Fd(FdFrame::new(ExtendedId::new(0x1ABC_DEF0).unwrap(), &[0x5A; 64], true, false).unwrap());
        a.send(&big, T).unwrap();
        a.send(&can(0x3, &[3]), T).unwrap();
        assert_eq!(lfd.recv_timeout(T).map(|f| f.frame), Some(big));
        assert_eq!(lfd.recv_timeout(T).map(|f| f.frame), Some(can(0x3, &[3])));
        assert_eq!(lc.recv_timeout(T).map(|f| f.frame), Some(can(0x3, &[3])), "the classic bus skips the FD frame");
        assert!(matches!(classic.send(&big, T), Err(Error::Unsupported(_))));
    }

    /// Garbage datagrams on the group are counted at every receiver and do
    /// not stop the bus; the next good frame arrives.
    #[test]
    fn garbage_datagrams_are_counted() {
        let group = "239.255.42.4:43204";
        let Some(b) = open(group, false, false) else { return };
        let l = b.listen(ListenerFilter::default(), 100, DropPolicy::DropNewest);
        let g = parse_group(group).unwrap();
        let (_also_a_receiver, interface) = receive_socket(g).unwrap();
        let tx = send_socket(g, interface).unwrap();
        let mut good = Vec::new();
        encode(&can(0x7, &[7]), 0.0, &mut good);
        let deep: Vec<u8> = std::iter::repeat_n(0x91u8, 60_000).collect();
        for junk in [&b"not a frame"[..], &[], &[0xc1], &good[..good.len() - 1], &deep] {
            tx.send(junk).unwrap();
        }
        tx.send(&good).unwrap();
        assert_eq!(l.recv_timeout(T).map(|f| f.frame), Some(can(0x7, &[7])));
        assert_eq!(b.stats().malformed, 5);
        assert_eq!(b.stats().received, 1);
        assert!(b.thread_error().is_none());
    }

    /// Datagrams queued at the socket are taken in one batch (Linux: one
    /// `recvmmsg`), a cut (too long) datagram in the middle is reported as
    /// such, and the datagrams after it are intact with their source.
    #[test]
    fn a_batch_takes_every_queued_datagram() {
        let group = parse_group("239.255.42.8:43208").unwrap();
        let Ok((rx, interface)) = receive_socket(group) else {
            eprintln!("SKIPPED: this host cannot join multicast group {group}");
            return;
        };
        let tx = send_socket(group, interface).unwrap();
        let mut good = Vec::new();
        encode(&can(0x9, &[9]), 0.0, &mut good);
        let long = vec![0xc0u8; 3000];
        let sent: Vec<&[u8]> = vec![&good, b"junk", &long, &good, &good];
        for d in &sent {
            tx.send(d).unwrap();
        }
        std::thread::sleep(Duration::from_millis(100));
        let mut batch = Batch::new();
        let mut got = Vec::new();
        while got.len() < sent.len() {
            let n = batch.recv(&rx).unwrap();
            if cfg!(target_os = "linux") {
                assert_eq!(n, sent.len(), "all queued datagrams in one call");
            }
            got.extend((0..n).map(|i| batch.get(i).map(|(d, from)| (d.to_vec(), from))));
        }
        let own = tx.local_addr().unwrap();
        for (i, (g, want)) in got.iter().zip(&sent).enumerate() {
            match g {
                Some((d, from)) => {
                    assert_eq!(&d[..], *want, "datagram {i}");
                    assert!(same_node(*from, own), "{from} is not {own}");
                }
                None => assert!(i == 2 && cfg!(target_os = "linux"), "datagram {i} missing"),
            }
        }
    }

    /// Bursts with malformed datagrams among good ones (taken in batches):
    /// each malformed one counted, every good frame delivered, in order.
    #[test]
    fn malformed_datagrams_inside_a_burst() {
        let group = "239.255.42.9:43209";
        let Some(b) = open(group, false, false) else { return };
        let l = b.listen(ListenerFilter::default(), 1 << 16, DropPolicy::DropNewest);
        let g = parse_group(group).unwrap();
        let (_also_a_receiver, interface) = receive_socket(g).unwrap();
        let tx = send_socket(g, interface).unwrap();
        let (mut good, mut junk) = (0u32, 0u64);
        for i in 0..2000u32 {
            if i % 7 == 3 {
                tx.send(if i % 2 == 0 { &b"\x91\x01"[..] } else { &[0xc1] }).unwrap();
                junk += 1;
            } else {
                let mut d = Vec::new();
                encode(&can(0x10, &good.to_le_bytes()), 0.0, &mut d);
                tx.send(&d).unwrap();
                good += 1;
            }
            if i % 50 == 49 {
                // Bursts of 50: within the smallest socket buffer (no kernel drops).
                assert!(wait_until(|| b.stats().received + b.stats().malformed >= u64::from(i + 1)));
            }
        }
        for want in 0..good {
            let f = l.recv_timeout(T).expect("a good frame is missing");
            assert_eq!(f.frame, can(0x10, &want.to_le_bytes()));
        }
        assert!(wait_until(|| b.stats().malformed == junk), "malformed {} of {junk}", b.stats().malformed);
        assert_eq!(b.stats().backend_dropped, 0);
    }

    /// Two groups on one port do not hear each other (not on Windows: there
    /// the receive socket is bound to the port only, and under wine it hears
    /// every group joined on the host: module docs).
    #[cfg(not(windows))]
    #[test]
    fn groups_are_separate() {
        let (Some(a), Some(b)) = (open("239.255.42.5:43205", false, false), open("239.255.42.6:43205", false, false))
        else {
            return;
        };
        let Some(c) = open("239.255.42.6:43205", false, false) else { return };
        let lb = b.listen(ListenerFilter::default(), 100, DropPolicy::DropNewest);
        a.send(&can(0x5, &[5]), T).unwrap();
        c.send(&can(0x6, &[6]), T).unwrap();
        assert_eq!(lb.recv_timeout(T).map(|f| f.frame), Some(can(0x6, &[6])));
        assert!(lb.recv_timeout(Duration::from_millis(200)).is_none(), "a frame of another group arrived");
    }

    /// Linux counts datagrams a full socket buffer dropped: a receive socket
    /// nobody reads overflows, and what it holds plus what it dropped is
    /// what was sent.
    #[cfg(target_os = "linux")]
    #[test]
    fn kernel_drops_are_counted() {
        let group = parse_group("239.255.42.7:43207").unwrap();
        let Ok((rx, interface)) = receive_socket(group) else {
            eprintln!("SKIPPED: this host cannot join multicast group {group}");
            return;
        };
        let tx = send_socket(group, interface).unwrap();
        let mut buf = Vec::new();
        encode(&can(0x8, &[8; 8]), 0.0, &mut buf);
        let n = 20_000u64;
        for _ in 0..n {
            tx.send(&buf).unwrap();
        }
        rx.set_read_timeout(Some(Duration::from_millis(100))).unwrap();
        let mut queued = 0u64;
        let mut b = [0u8; 512];
        while rx.recv(&mut b).is_ok() {
            queued += 1;
        }
        let dropped = kernel_drops(&rx);
        assert!(dropped > 0, "nothing dropped: the test needs a buffer smaller than {n} datagrams");
        assert_eq!(queued + dropped, n);
    }
}
