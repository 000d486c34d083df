//! ISO-TP addressing (ISO 15765-2:2016; facts and sources in
//! `docs/protocols/isotp.md` §5): which CAN identifiers and which
//! address byte (N_TA or N_AE in data byte 0) carry a channel's N_PDUs.

use core::fmt;

use crate::frame::{id_raw, make_id, Id, EFF_MASK};

/// The addressing format of a channel (python-can-isotp's `AddressingMode`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum AddressingMode {
    /// Normal addressing, 11-bit identifiers (e.g. OBD 0x7E0 / 0x7E8).
    Normal11,
    /// Normal addressing, 29-bit identifiers.
    Normal29,
    /// Normal fixed addressing: 29-bit `0x18DA<N_TA><N_SA>` (physical),
    /// `0x18DB<N_TA><N_SA>` (functional), priority 6 by default.
    NormalFixed29,
    /// Extended addressing, 11-bit identifiers: data byte 0 is the N_TA.
    Extended11,
    /// Extended addressing, 29-bit identifiers: data byte 0 is the N_TA.
    Extended29,
    /// Mixed addressing, 11-bit identifiers: data byte 0 is the N_AE.
    Mixed11,
    /// Mixed addressing, 29-bit: `0x18CE<N_TA><N_SA>` (physical),
    /// `0x18CD<N_TA><N_SA>` (functional), data byte 0 is the N_AE.
    Mixed29,
}

impl AddressingMode {
    /// Whether data byte 0 is an address byte (extended and mixed formats).
    pub const fn has_address_byte(self) -> bool {
        matches!(self, Self::Extended11 | Self::Extended29 | Self::Mixed11 | Self::Mixed29)
    }
}

/// N_TAtype: one receiver (physical) or many (functional, SF only).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum TargetAddressType {
    /// 1-to-1 communication; segmented messages allowed.
    #[default]
    Physical,
    /// 1-to-n communication; single frames only (isotp.md §5).
    Functional,
}

/// Why an [`Address`] could not be built.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AddressError {
    /// An identifier does not fit its format (11 or 29 bits).
    InvalidId(u32),
    /// A priority above 7 (normal fixed and mixed 29-bit).
    InvalidPriority(u8),
    /// The receive and transmit identifiers (and address bytes) are equal,
    /// so the channel would answer itself.
    SameRxTx,
}

impl fmt::Display for AddressError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AddressError::InvalidId(id) => write!(f, "identifier 0x{id:X} does not fit the addressing format"),
            AddressError::InvalidPriority(p) => write!(f, "priority {p} is above 7"),
            AddressError::SameRxTx => f.write_str("receive and transmit addresses are the same"),
        }
    }
}

impl core::error::Error for AddressError {}

/// Bits 28..26 of a 29-bit identifier: the priority, which is not part of
/// the N_AI in the fixed formats and so is ignored on receive.
const PRIORITY_MASK: u32 = 0x1C00_0000;
const PF_PHYSICAL_FIXED: u32 = 0xDA;
const PF_FUNCTIONAL_FIXED: u32 = 0xDB;
const PF_PHYSICAL_MIXED: u32 = 0xCE;
const PF_FUNCTIONAL_MIXED: u32 = 0xCD;
/// Default priority of the fixed formats (isotp.md §5: 0x18DA.. is priority 6).
pub const DEFAULT_PRIORITY: u8 = 6;

/// The N_AI of one ISO-TP channel: identifiers and address bytes for both
/// directions, physical and functional. Built by the constructors named
/// after python-can-isotp's addressing modes; `with_*` adjust it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Address {
    mode: AddressingMode,
    tx_physical: Id,
    tx_functional: Id,
    rx_physical: Id,
    rx_functional: Option<Id>,
    /// Data byte 0 sent: N_TA of the peer (extended) or N_AE (mixed).
    tx_prefix: Option<u8>,
    /// Data byte 0 expected: own address (extended) or N_AE (mixed).
    rx_prefix: Option<u8>,
    /// Identifier bits compared on receive.
    rx_mask: u32,
}

fn std_id(raw: u32) -> Result<Id, AddressError> {
    make_id(raw, false).map_err(|_| AddressError::InvalidId(raw))
}

fn ext_id(raw: u32) -> Result<Id, AddressError> {
    make_id(raw, true).map_err(|_| AddressError::InvalidId(raw))
}

fn fixed_id(priority: u8, pf: u32, ta: u8, sa: u8) -> Id {
    let raw = (u32::from(priority & 7) << 26) | (pf << 16) | (u32::from(ta) << 8) | u32::from(sa);
    // In range by construction (priority masked to 3 bits).
    make_id(raw & EFF_MASK, true).unwrap_or(Id::Extended(embedded_can::ExtendedId::ZERO))
}

impl Address {
    fn plain(
        mode: AddressingMode,
        tx: Id,
        rx: Id,
        tx_prefix: Option<u8>,
        rx_prefix: Option<u8>,
    ) -> Result<Self, AddressError> {
        if tx == rx && tx_prefix == rx_prefix {
            return Err(AddressError::SameRxTx);
        }
        Ok(Address {
            mode,
            tx_physical: tx,
            tx_functional: tx,
            rx_physical: rx,
            rx_functional: None,
            tx_prefix,
            rx_prefix,
            rx_mask: EFF_MASK,
        })
    }

    /// Normal addressing with 11-bit identifiers: send on `txid`, receive on
    /// `rxid` (e.g. a tester: 0x7E0 / 0x7E8). Functional frames go out on
    /// `txid` too unless [`Address::with_functional_txid`] (OBD: 0x7DF).
    pub fn normal_11(txid: u16, rxid: u16) -> Result<Self, AddressError> {
        Self::plain(AddressingMode::Normal11, std_id(txid.into())?, std_id(rxid.into())?, None, None)
    }

    /// Normal addressing with 29-bit identifiers.
    pub fn normal_29(txid: u32, rxid: u32) -> Result<Self, AddressError> {
        Self::plain(AddressingMode::Normal29, ext_id(txid)?, ext_id(rxid)?, None, None)
    }

    /// Normal fixed addressing (29-bit only): sends `0x18DA<target><source>`
    /// (functional `0x18DB<target><source>`), receives `0x18DA<source><target>`
    /// and functional `0x18DB<source><target>` at any priority. OBD tester:
    /// `normal_fixed_29(0x10, 0xF1)` (ECU 0x10, tester 0xF1).
    pub fn normal_fixed_29(target_address: u8, source_address: u8) -> Self {
        Self::fixed(AddressingMode::NormalFixed29, target_address, source_address, None)
    }

    /// Extended addressing, 11-bit: frames go out on `txid` with data byte 0
    /// = `target_address` (the peer's N_TA); frames on `rxid` are ours when
    /// data byte 0 = `source_address` (our own address, which the peer sends
    /// as its N_TA).
    pub fn extended_11(txid: u16, rxid: u16, target_address: u8, source_address: u8) -> Result<Self, AddressError> {
        Self::plain(
            AddressingMode::Extended11,
            std_id(txid.into())?,
            std_id(rxid.into())?,
            Some(target_address),
            Some(source_address),
        )
    }

    /// Extended addressing with 29-bit identifiers (see [`Address::extended_11`]).
    pub fn extended_29(txid: u32, rxid: u32, target_address: u8, source_address: u8) -> Result<Self, AddressError> {
        Self::plain(
            AddressingMode::Extended29,
            ext_id(txid)?,
            ext_id(rxid)?,
            Some(target_address),
            Some(source_address),
        )
    }

    /// Mixed addressing, 11-bit: data byte 0 is `address_extension` (N_AE)
    /// in both directions.
    pub fn mixed_11(txid: u16, rxid: u16, address_extension: u8) -> Result<Self, AddressError> {
        Self::plain(
            AddressingMode::Mixed11,
            std_id(txid.into())?,
            std_id(rxid.into())?,
            Some(address_extension),
            Some(address_extension),
        )
    }

    /// Mixed addressing, 29-bit: `0x18CE<target><source>` physical,
    /// `0x18CD<target><source>` functional, data byte 0 = `address_extension`.
    pub fn mixed_29(target_address: u8, source_address: u8, address_extension: u8) -> Self {
        Self::fixed(AddressingMode::Mixed29, target_address, source_address, Some(address_extension))
    }

    fn fixed(mode: AddressingMode, ta: u8, sa: u8, ae: Option<u8>) -> Self {
        let (pf_p, pf_f) = match mode {
            AddressingMode::Mixed29 => (PF_PHYSICAL_MIXED, PF_FUNCTIONAL_MIXED),
            _ => (PF_PHYSICAL_FIXED, PF_FUNCTIONAL_FIXED),
        };
        let p = DEFAULT_PRIORITY;
        Address {
            mode,
            tx_physical: fixed_id(p, pf_p, ta, sa),
            tx_functional: fixed_id(p, pf_f, ta, sa),
            rx_physical: fixed_id(p, pf_p, sa, ta),
            rx_functional: Some(fixed_id(p, pf_f, sa, ta)),
            tx_prefix: ae,
            rx_prefix: ae,
            rx_mask: EFF_MASK & !PRIORITY_MASK,
        }
    }

    /// Sets the priority (0..=7) of the identifiers sent in the fixed
    /// formats (normal fixed, mixed 29); other formats are unchanged.
    pub fn with_priority(mut self, priority: u8) -> Result<Self, AddressError> {
        if priority > 7 {
            return Err(AddressError::InvalidPriority(priority));
        }
        if matches!(self.mode, AddressingMode::NormalFixed29 | AddressingMode::Mixed29) {
            let set = |id: Id| {
                let raw = (id_raw(id) & !PRIORITY_MASK) | (u32::from(priority) << 26);
                make_id(raw, true).unwrap_or(id)
            };
            self.tx_physical = set(self.tx_physical);
            self.tx_functional = set(self.tx_functional);
        }
        Ok(self)
    }

    /// The identifier functional frames are sent on (raw; 29-bit when the
    /// format is). OBD on 11 bits: 0x7DF.
    pub fn with_functional_txid(mut self, txid: u32) -> Result<Self, AddressError> {
        self.tx_functional = self.same_width(txid)?;
        Ok(self)
    }

    /// An identifier whose frames are received as functionally addressed
    /// (an ECU answering OBD requests on 0x7DF). In the fixed formats this
    /// replaces the computed `0x18DB`/`0x18CD` identifier (priority still ignored).
    pub fn with_functional_rxid(mut self, rxid: u32) -> Result<Self, AddressError> {
        self.rx_functional = Some(self.same_width(rxid)?);
        Ok(self)
    }

    fn same_width(&self, raw: u32) -> Result<Id, AddressError> {
        match self.tx_physical {
            Id::Standard(_) => std_id(raw),
            Id::Extended(_) => ext_id(raw),
        }
    }

    /// The addressing format.
    pub fn mode(&self) -> AddressingMode {
        self.mode
    }

    /// The identifier frames of `ta_type` are sent on.
    pub fn tx_id(&self, ta_type: TargetAddressType) -> Id {
        match ta_type {
            TargetAddressType::Physical => self.tx_physical,
            TargetAddressType::Functional => self.tx_functional,
        }
    }

    /// The physical receive identifier.
    pub fn rx_id(&self) -> Id {
        self.rx_physical
    }

    /// The functional receive identifier, if any.
    pub fn rx_functional_id(&self) -> Option<Id> {
        self.rx_functional
    }

    /// Data byte 0 of every frame sent (extended: N_TA; mixed: N_AE).
    pub fn tx_address_byte(&self) -> Option<u8> {
        self.tx_prefix
    }

    /// Data byte 0 a received frame must carry (extended: own address; mixed: N_AE).
    pub fn rx_address_byte(&self) -> Option<u8> {
        self.rx_prefix
    }

    /// Bytes of N_PCI offset: 1 with an address byte, else 0.
    pub fn address_len(&self) -> usize {
        usize::from(self.tx_prefix.is_some())
    }

    /// Whether a received frame with identifier `id` and data `data` is for
    /// this channel, and how it was addressed. Cheap: two integer compares
    /// and one byte compare, so a host with many channels may offer every
    /// frame to every channel.
    #[inline]
    pub fn classify(&self, id: Id, data: &[u8]) -> Option<TargetAddressType> {
        let same = |mine: Id| -> bool {
            core::mem::discriminant(&mine) == core::mem::discriminant(&id)
                && (id_raw(mine) ^ id_raw(id)) & self.rx_mask == 0
        };
        let ta = if same(self.rx_physical) {
            TargetAddressType::Physical
        } else if self.rx_functional.is_some_and(same) {
            TargetAddressType::Functional
        } else {
            return None;
        };
        match self.rx_prefix {
            Some(b) if data.first() != Some(&b) => None,
            _ => Some(ta),
        }
    }
}
