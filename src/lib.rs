//! canx native extension: the runtime (SocketCAN and the virtual bus, receive
//! threads, listener queues) and its Python binding (`canx._canx`).
//! See ARCHITECTURE.md for the layers and how a frame flows.

pub mod runtime;

#[cfg(feature = "python")]
mod py;

pub use canx_core as core;
