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
//! - [`tables`]: caller-owned table storage ([`Tables`], [`TableSet`]).
//! - [`server`]: the table server engine ([`Server`]).
//! - [`client`]: the client engine ([`Client`]): reads, writes, CRC, outmsg.
//! - [`broadcast`]: realtime broadcast decoders (simplified dash, advanced).

pub mod broadcast;
pub mod client;
#[doc(hidden)]
pub mod fuzzing;
pub mod header;
pub mod payload;
mod queue;
#[cfg(test)]
mod sim_tests;
pub mod server;
pub mod tables;

pub use header::{Header, HeaderError, MsgType, XtndType, BROADCAST_ID, MAX_CAN_ID, MAX_OUTSTANDING, MAX_VAR_BLK, MAX_VAR_OFFSET};
pub use payload::{BurnAckRepr, CrcReqRepr, PayloadError, ReqRepr, ReqxRepr, SpndRepr};
pub use server::{OutmsgDef, Refusal, Server, ServerConfig, ServerError, ServerEvent, ServerStats, MAX_OUTMSGS, MAX_OUTMSG_BYTES, REALTIME_BLK};
pub use tables::{Access, TableError, TableSet, Tables};
pub use client::{Client, ClientConfig, ClientError, ClientEvent, ClientStats, Handle};
pub use broadcast::{BroadcastDecoder, Decoded, Field, Source, ADVANCED_BASE, DASH_BASE};
