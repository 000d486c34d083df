//! Engines of the runtime itself (no protocol): each is a [`super::Driven`]
//! the receive thread drives.

pub mod periodic;

pub use periodic::{Periodic, PeriodicTask};
