//! Protocol engines of `canx-core` wrapped as [`super::Driven`] engines, with
//! the state the application shares with them (tables, completions, events).

pub mod megasquirt;
