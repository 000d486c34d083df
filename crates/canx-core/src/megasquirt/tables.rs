//! Table storage for the [`super::Server`]: the caller owns the bytes.
//!
//! A board's data lives in numbered tables (var_blk) of bytes
//! (`docs/protocols/megasquirt.md`, "The model"). The server reaches them
//! through the [`Tables`] trait, so Python, firmware or a test owns the
//! memory; [`TableSet`] is a ready implementation over borrowed
//! `&mut [u8]` slots.

use core::fmt;

/// What remote boards may do with a table.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Access {
    /// MSG_REQ / MSG_REQX / MSG_CRC / OUTMSG_REQ may read it.
    pub read: bool,
    /// MSG_CMD / MSG_RSP / OUTMSG_RSP may write it and MSG_BURN may burn it.
    pub write: bool,
}

impl Access {
    pub const READ_ONLY: Access = Access { read: true, write: false };
    pub const READ_WRITE: Access = Access { read: true, write: true };
    pub const WRITE_ONLY: Access = Access { read: false, write: true };
}

/// Where the server finds table bytes. Tables are numbered 0..255 (0..31
/// addressable by every message, 32..255 only by MSG_REQX reads).
///
/// The server checks [`Access`] and bounds itself before every access; an
/// implementation only has to return the right slice.
pub trait Tables {
    /// Table `var_blk` and its access rights, or `None` if not declared.
    fn table(&self, var_blk: u8) -> Option<(&[u8], Access)>;
    /// Table `var_blk` for writing, or `None` if not declared.
    fn table_mut(&mut self, var_blk: u8) -> Option<&mut [u8]>;
}

impl<T: Tables + ?Sized> Tables for &mut T {
    fn table(&self, var_blk: u8) -> Option<(&[u8], Access)> {
        (**self).table(var_blk)
    }
    fn table_mut(&mut self, var_blk: u8) -> Option<&mut [u8]> {
        (**self).table_mut(var_blk)
    }
}

/// Why a table could not be declared.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TableError {
    /// All `N` slots are in use.
    Full,
    /// This var_blk is already declared.
    Duplicate,
}

impl fmt::Display for TableError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            TableError::Full => "no free table slot",
            TableError::Duplicate => "table already declared",
        })
    }
}

impl core::error::Error for TableError {}

#[derive(Debug)]
struct Slot<'a> {
    var_blk: u8,
    access: Access,
    data: &'a mut [u8],
}

/// Up to `N` tables over caller-owned byte slices.
#[derive(Debug)]
pub struct TableSet<'a, const N: usize> {
    slots: [Option<Slot<'a>>; N],
}

impl<'a, const N: usize> Default for TableSet<'a, N> {
    fn default() -> Self {
        Self::new()
    }
}

impl<'a, const N: usize> TableSet<'a, N> {
    pub const fn new() -> Self {
        TableSet { slots: [const { None }; N] }
    }

    /// Declares table `var_blk` over `data`. Errors: [`TableError`].
    pub fn add(&mut self, var_blk: u8, access: Access, data: &'a mut [u8]) -> Result<(), TableError> {
        if self.slots.iter().flatten().any(|s| s.var_blk == var_blk) {
            return Err(TableError::Duplicate);
        }
        let free = self.slots.iter_mut().find(|s| s.is_none()).ok_or(TableError::Full)?;
        *free = Some(Slot { var_blk, access, data });
        Ok(())
    }

    /// The bytes of table `var_blk` (for the owner; no access check).
    pub fn get(&self, var_blk: u8) -> Option<&[u8]> {
        self.slots.iter().flatten().find(|s| s.var_blk == var_blk).map(|s| &*s.data)
    }

    /// The bytes of table `var_blk` for the owner to update (no access check).
    pub fn get_mut(&mut self, var_blk: u8) -> Option<&mut [u8]> {
        self.slots.iter_mut().flatten().find(|s| s.var_blk == var_blk).map(|s| &mut *s.data)
    }
}

impl<const N: usize> Tables for TableSet<'_, N> {
    fn table(&self, var_blk: u8) -> Option<(&[u8], Access)> {
        self.slots.iter().flatten().find(|s| s.var_blk == var_blk).map(|s| (&*s.data, s.access))
    }
    fn table_mut(&mut self, var_blk: u8) -> Option<&mut [u8]> {
        self.get_mut(var_blk)
    }
}
