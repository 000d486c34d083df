//! Protocol drivers: canx-core engines wired to the runtime (see `engine`).

pub mod j1939;
