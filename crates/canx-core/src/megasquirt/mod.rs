//! MegaSquirt CAN ("Al-CAN", MS-II / MS2-Extra / MS3): the 29-bit table
//! protocol and the 11-bit realtime broadcasts, as sans-IO engines.
//!
//! Source of every rule: `docs/protocols/megasquirt.md` (which cites the
//! MegaSquirt-II CANbus page, the MS3 and MS2-Extra firmware, and the msextra
//! documents "Megasquirt 29bit CAN Protocol" (2015) and "Megasquirt-2 and
//! Megasquirt-3 CAN realtime data broadcasting format" (2016)).
//!
//! - [`header`]: the 29-bit identifier codec and the message type numbers.
//! - [`payload`]: request payload `Repr`s (MSG_REQ, MSG_REQX, MSG_CRC, ...).
//! - [`message`]: a whole frame decoded as one [`Message`] (for monitors and logs).
//! - [`tables`]: caller-owned table storage ([`Tables`], [`TableSet`]).
//! - [`server`]: the table server engine ([`Server`]).
//! - [`client`]: the client engine ([`Client`]): reads, writes, CRC, outmsg, burn.
//! - [`broadcast`]: realtime broadcast decoders (simplified dash, advanced).
//!
//! Every engine has the same sans-IO shape: `handle_frame(now, &frame)`,
//! `handle_timeout(now)`, `poll_transmit(now)`, `poll_event()`,
//! `poll_timeout()`. Capacities are const generics; table bytes are owned by
//! the caller; queues are bounded and count what they drop.
//!
//! ```
//! use canx_core::megasquirt::{Access, Client, ClientConfig, ClientEvent, Server, ServerConfig, TableSet};
//! use canx_core::{Frame, Instant};
//!
//! // An ECU (board 0) serving its realtime table 7 from caller-owned bytes.
//! let mut outpc = [0u8; 64];
//! outpc[10..14].copy_from_slice(&[1, 2, 3, 4]);
//! let mut tables: TableSet<'_, 1> = TableSet::new();
//! tables.add(7, Access::READ_ONLY, &mut outpc)?;
//! let mut ecu: Server<_> = Server::new(ServerConfig::new(0), tables)?;
//! // A dash (board 3) reading 4 bytes of it.
//! let mut dash: Client = Client::new(ClientConfig::new(3))?;
//! let h = dash.read(0, 7, 10, 4)?;
//!
//! let now = Instant::ZERO;
//! while let Some(req) = dash.poll_transmit(now) {
//!     ecu.handle_frame(now, &Frame::Can(req)); // the bus
//! }
//! while let Some(rsp) = ecu.poll_transmit(now) {
//!     dash.handle_frame(now, &Frame::Can(rsp));
//! }
//! assert!(matches!(dash.poll_event(), Some(ClientEvent::ReadDone { handle, len: 4, .. }) if handle == h));
//! assert_eq!(dash.read_data(h), Some(&[1, 2, 3, 4][..]));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

pub mod broadcast;
pub mod client;
#[doc(hidden)]
pub mod fuzzing;
pub mod header;
pub mod message;
pub mod node;
pub mod outmsg_into;
pub mod payload;
pub mod server;
#[cfg(test)]
mod sim_tests;
pub mod tables;

pub use broadcast::{BroadcastDecoder, Decoded, Field, Source, ADVANCED_BASE, DASH_BASE};
pub use client::{Client, ClientConfig, ClientError, ClientEvent, ClientStats, Handle};
pub use header::{
    Header, HeaderError, MsgType, XtndType, BROADCAST_ID, MAX_CAN_ID, MAX_OUTSTANDING, MAX_VAR_BLK, MAX_VAR_OFFSET,
};
pub use message::Message;
pub use node::{Node, NodeEvent};
pub use outmsg_into::{IntoError, IntoEvent, IntoKey, OutmsgInto};
pub use payload::{BurnAckRepr, CrcReqRepr, PayloadError, ReqRepr, ReqxRepr, SpndRepr};
pub use server::{
    OutmsgDef, Refusal, Server, ServerConfig, ServerError, ServerEvent, ServerStats, MAX_OUTMSGS, MAX_OUTMSG_BYTES,
    REALTIME_BLK,
};
pub use tables::{Access, TableError, TableSet, Tables};
