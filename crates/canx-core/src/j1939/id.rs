//! J1939 identifiers: [`Pgn`] and the 29-bit identifier codec [`J1939Id`].
//!
//! Layout of the 29-bit identifier (J1939-21 5.2): priority bits 28-26, EDP
//! bit 25, DP bit 24, PF bits 23-16, PS bits 15-8, SA bits 7-0.
//! PDU1 (PF < 240): PS is the destination address; the PGN has PS = 0.
//! PDU2 (PF >= 240): broadcast; PS is the group extension, part of the PGN.
//! Only extended, non-RTR classic frames carry J1939.

use core::fmt;

use crate::frame::{CanFrame, ExtendedId, Frame, FrameError, Id};

/// The NULL address: a CA without an address (Cannot Claim, J1939-81 4.2.2).
pub const NULL_ADDRESS: u8 = 254;
/// The global (broadcast) destination address.
pub const GLOBAL_ADDRESS: u8 = 255;
/// Largest usable source address.
pub const MAX_UNICAST_ADDRESS: u8 = 253;
/// Default priority of most messages (J1939-21 5.2.1).
pub const DEFAULT_PRIORITY: u8 = 6;

/// A Parameter Group Number, 18 bits: `EDP<<17 | DP<<16 | PF<<8 | PS`
/// (PS = 0 for PDU1 PGNs).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Pgn(u32);

impl Pgn {
    /// Request, J1939-21 5.4.2 (0xEA00).
    pub const REQUEST: Pgn = Pgn(59904);
    /// Acknowledgment, J1939-21 5.4.4 (0xE800).
    pub const ACKNOWLEDGMENT: Pgn = Pgn(59392);
    /// Address Claimed / Cannot Claim, J1939-81 4.2.2 (0xEE00).
    pub const ADDRESS_CLAIMED: Pgn = Pgn(60928);
    /// Commanded Address, J1939-81 4.2.5 (0xFED8).
    pub const COMMANDED_ADDRESS: Pgn = Pgn(65240);
    /// TP.CM, J1939-21 5.10.3 (0xEC00).
    pub const TP_CM: Pgn = Pgn(60416);
    /// TP.DT, J1939-21 5.10.3 (0xEB00).
    pub const TP_DT: Pgn = Pgn(60160);
    /// ETP.CM, J1939-21 5.10.5 (0xC800).
    pub const ETP_CM: Pgn = Pgn(51200);
    /// ETP.DT (0xC700).
    pub const ETP_DT: Pgn = Pgn(50944);
    /// Proprietary A (0xEF00), PDU1.
    pub const PROPRIETARY_A: Pgn = Pgn(0xEF00);
    /// DM1 active diagnostic trouble codes, J1939-73 5.7.1.
    pub const DM1: Pgn = Pgn(65226);
    /// DM2 previously active DTCs, J1939-73 5.7.2.
    pub const DM2: Pgn = Pgn(65227);
    /// DM3 clear previously active DTCs, J1939-73 5.7.3.
    pub const DM3: Pgn = Pgn(65228);
    /// DM11 clear active DTCs, J1939-73 5.7.11.
    pub const DM11: Pgn = Pgn(65235);
    /// DM13 stop/start broadcast (0xDF00).
    pub const DM13: Pgn = Pgn(57088);
    /// DM14 memory access request.
    pub const DM14: Pgn = Pgn(55552);
    /// DM15 memory access response.
    pub const DM15: Pgn = Pgn(55296);
    /// DM16 binary data transfer.
    pub const DM16: Pgn = Pgn(55040);
    /// DM22 individual clear/reset of active and previously active DTC.
    pub const DM22: Pgn = Pgn(49920);
    /// EEC1 electronic engine controller 1 (0xF004), J1939-71.
    pub const EEC1: Pgn = Pgn(61444);
    /// ET1 engine temperature 1 (0xFEEE), J1939-71.
    pub const ET1: Pgn = Pgn(65262);
    /// Vehicle Identification (0xFEEC), SPN 237.
    pub const VEHICLE_IDENTIFICATION: Pgn = Pgn(65260);
    /// Software Identification (0xFEDA).
    pub const SOFTWARE_IDENTIFICATION: Pgn = Pgn(65242);
    /// Component Identification (0xFEEB).
    pub const COMPONENT_IDENTIFICATION: Pgn = Pgn(65259);
    /// ECU Identification (0xFDC5).
    pub const ECU_IDENTIFICATION: Pgn = Pgn(64965);

    /// Largest PGN value (18 bits).
    pub const MAX: u32 = 0x3_FFFF;

    /// A PGN from its 18-bit value; `None` above [`Pgn::MAX`]. A PDU1 PGN with
    /// a non-zero PS byte is accepted as is; [`J1939Id::new`] normalizes it.
    pub const fn new(raw: u32) -> Option<Pgn> {
        if raw <= Self::MAX {
            Some(Pgn(raw))
        } else {
            None
        }
    }

    /// A PGN from the 3 little-endian bytes used inside Request, TP.CM and
    /// ACK payloads; `None` if the value exceeds 18 bits.
    pub const fn from_le_bytes(b: [u8; 3]) -> Option<Pgn> {
        Pgn::new(b[0] as u32 | (b[1] as u32) << 8 | (b[2] as u32) << 16)
    }

    /// The 3 little-endian bytes of the PGN.
    pub const fn to_le_bytes(self) -> [u8; 3] {
        [self.0 as u8, (self.0 >> 8) as u8, (self.0 >> 16) as u8]
    }

    pub const fn raw(self) -> u32 {
        self.0
    }
    /// Extended data page bit.
    pub const fn edp(self) -> bool {
        self.0 & 0x2_0000 != 0
    }
    /// Data page bit.
    pub const fn dp(self) -> bool {
        self.0 & 0x1_0000 != 0
    }
    /// PDU format byte.
    pub const fn pf(self) -> u8 {
        (self.0 >> 8) as u8
    }
    /// PDU specific byte (group extension for PDU2, 0 for a canonical PDU1 PGN).
    pub const fn ps(self) -> u8 {
        self.0 as u8
    }
    /// PDU1 (destination specific): PF < 240.
    pub const fn is_pdu1(self) -> bool {
        self.pf() < 240
    }
    /// PDU2 (broadcast): PF >= 240.
    pub const fn is_pdu2(self) -> bool {
        !self.is_pdu1()
    }
    /// The canonical form: PS cleared for PDU1 PGNs.
    pub const fn normalized(self) -> Pgn {
        if self.is_pdu1() {
            Pgn(self.0 & !0xFF)
        } else {
            self
        }
    }
}

impl fmt::Debug for Pgn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Pgn({} / 0x{:05X})", self.0, self.0)
    }
}

impl fmt::Display for Pgn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// Why a [`J1939Id`] could not be built.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IdError {
    /// Priority above 7.
    PriorityOutOfRange,
}

impl fmt::Display for IdError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            IdError::PriorityOutOfRange => "J1939 priority must be 0-7",
        })
    }
}

impl core::error::Error for IdError {}

/// A decoded 29-bit J1939 identifier.
///
/// Invariants (kept by every constructor): `priority <= 7`; the PGN is
/// canonical (PS = 0 for PDU1); `destination == GLOBAL_ADDRESS` for PDU2.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct J1939Id {
    /// 0 (highest) to 7.
    pub priority: u8,
    pub pgn: Pgn,
    /// Source address (SA).
    pub source: u8,
    /// Destination address (DA): PS of a PDU1 PGN, 255 (global) for PDU2.
    pub destination: u8,
}

impl J1939Id {
    /// Builds an identifier. A PDU1 PGN's PS byte is replaced by
    /// `destination`; for a PDU2 PGN `destination` is ignored and set to
    /// global. Errors: [`IdError::PriorityOutOfRange`].
    pub const fn new(priority: u8, pgn: Pgn, source: u8, destination: u8) -> Result<J1939Id, IdError> {
        if priority > 7 {
            return Err(IdError::PriorityOutOfRange);
        }
        let destination = if pgn.is_pdu1() { destination } else { GLOBAL_ADDRESS };
        Ok(J1939Id { priority, pgn: pgn.normalized(), source, destination })
    }

    /// Decodes any 29-bit identifier (every value is a valid J1939 id).
    pub fn from_id(id: ExtendedId) -> J1939Id {
        let raw = id.as_raw();
        let priority = ((raw >> 26) & 7) as u8;
        let pf = (raw >> 16) as u8;
        let ps = (raw >> 8) as u8;
        let source = raw as u8;
        let page = (raw >> 24) & 3;
        if pf < 240 {
            J1939Id { priority, pgn: Pgn(page << 16 | (pf as u32) << 8), source, destination: ps }
        } else {
            J1939Id {
                priority,
                pgn: Pgn(page << 16 | (pf as u32) << 8 | ps as u32),
                source,
                destination: GLOBAL_ADDRESS,
            }
        }
    }

    /// Encodes the 29-bit identifier.
    pub fn to_id(&self) -> ExtendedId {
        let ps = if self.pgn.is_pdu1() { self.destination } else { self.pgn.ps() };
        let raw = (u32::from(self.priority & 7) << 26)
            | ((self.pgn.raw() & 0x3_0000) << 8)
            | (u32::from(self.pgn.pf()) << 16)
            | (u32::from(ps) << 8)
            | u32::from(self.source);
        // raw < 2^29 by construction.
        ExtendedId::new(raw).unwrap_or(ExtendedId::MAX)
    }

    /// The identifier and payload of a frame that carries J1939 (classic,
    /// extended, data); `None` for standard, remote, FD and error frames.
    pub fn from_frame(frame: &Frame) -> Option<(J1939Id, &[u8])> {
        match frame {
            Frame::Can(f) => Self::from_can_frame(f),
            _ => None,
        }
    }

    /// As [`J1939Id::from_frame`] for a classic frame.
    pub fn from_can_frame(f: &CanFrame) -> Option<(J1939Id, &[u8])> {
        match f.id() {
            Id::Extended(e) if !f.is_remote() => Some((J1939Id::from_id(e), f.data())),
            _ => None,
        }
    }

    /// A classic data frame with this identifier. Errors:
    /// [`FrameError::DataTooLong`] above 8 bytes.
    pub fn frame(&self, data: &[u8]) -> Result<CanFrame, FrameError> {
        CanFrame::new(self.to_id(), data)
    }

    /// `true` if the destination is global.
    pub const fn is_global(&self) -> bool {
        self.destination == GLOBAL_ADDRESS
    }
}

/// Builds a frame from parts the engine knows to be valid (priority masked,
/// data cut at 8 bytes, so the constructor cannot fail).
pub(crate) fn frame(priority: u8, pgn: Pgn, source: u8, destination: u8, data: &[u8]) -> CanFrame {
    let ps = if pgn.is_pdu1() { destination } else { pgn.ps() };
    let raw = (u32::from(priority & 7) << 26)
        | ((pgn.raw() & 0x3_0000) << 8)
        | (u32::from(pgn.pf()) << 16)
        | (u32::from(ps) << 8)
        | u32::from(source);
    let id = ExtendedId::new(raw).unwrap_or(ExtendedId::MAX);
    CanFrame::new_truncated(id, data)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn eid(raw: u32) -> ExtendedId {
        ExtendedId::new(raw).unwrap()
    }

    #[test]
    fn address_claim_id() {
        // 18EEFF80: priority 6, PGN 0xEE00 (PDU1), DA global, SA 0x80.
        let id = J1939Id::from_id(eid(0x18EE_FF80));
        assert_eq!(id, J1939Id { priority: 6, pgn: Pgn::ADDRESS_CLAIMED, source: 0x80, destination: 255 });
        assert_eq!(id.to_id().as_raw(), 0x18EE_FF80);
        // Request for address claim 18EAFFFE.
        let r = J1939Id::from_id(eid(0x18EA_FFFE));
        assert_eq!((r.pgn, r.source, r.destination), (Pgn::REQUEST, NULL_ADDRESS, GLOBAL_ADDRESS));
    }

    #[test]
    fn pdu2_and_pages() {
        // EEC1 from SA 0x00 at priority 3: 0CF00400.
        let id = J1939Id::from_id(eid(0x0CF0_0400));
        assert_eq!(id.priority, 3);
        assert_eq!(id.pgn, Pgn::EEC1);
        assert!(id.pgn.is_pdu2());
        assert_eq!(id.destination, GLOBAL_ADDRESS);
        // EDP and DP bits.
        let id = J1939Id::from_id(eid(0x19FE_EC11));
        assert!(id.pgn.dp() && !id.pgn.edp());
        assert_eq!(id.pgn.raw(), 0x1FEEC);
        let id = J1939Id::from_id(eid(0x1AEA_1122));
        assert!(id.pgn.edp() && !id.pgn.dp());
        assert_eq!(id.pgn.raw(), 0x2EA00);
        assert_eq!(id.destination, 0x11);
        assert_eq!(id.to_id().as_raw(), 0x1AEA_1122);
    }

    #[test]
    fn new_normalizes() {
        let id = J1939Id::new(6, Pgn::new(0xEA12).unwrap(), 1, 2).unwrap();
        assert_eq!(id.pgn, Pgn::REQUEST);
        assert_eq!(id.to_id().as_raw(), 0x18EA_0201);
        let id = J1939Id::new(6, Pgn::ET1, 1, 2).unwrap();
        assert_eq!(id.destination, GLOBAL_ADDRESS);
        assert_eq!(J1939Id::new(8, Pgn::ET1, 1, 2), Err(IdError::PriorityOutOfRange));
        assert_eq!(Pgn::new(0x40000), None);
        assert_eq!(Pgn::from_le_bytes([0x00, 0xEE, 0x00]), Some(Pgn::ADDRESS_CLAIMED));
        assert_eq!(Pgn::from_le_bytes([0x00, 0x00, 0x04]), None);
    }

    #[test]
    fn frames_that_carry_j1939() {
        use crate::frame::StandardId;
        let f = CanFrame::new(eid(0x18EE_FF80), &[1]).unwrap();
        assert!(J1939Id::from_frame(&Frame::Can(f)).is_some());
        let r = CanFrame::new_remote(eid(0x18EE_FF80), 8).unwrap();
        assert!(J1939Id::from_frame(&Frame::Can(r)).is_none());
        let s = CanFrame::new(StandardId::new(0x80).unwrap(), &[1]).unwrap();
        assert!(J1939Id::from_frame(&Frame::Can(s)).is_none());
    }

    proptest! {
        #[test]
        fn id_roundtrip(raw in 0u32..=0x1FFF_FFFF) {
            let id = J1939Id::from_id(eid(raw));
            prop_assert_eq!(id.to_id().as_raw(), raw);
            prop_assert_eq!(J1939Id::new(id.priority, id.pgn, id.source, id.destination), Ok(id));
        }

        #[test]
        fn fields_roundtrip(prio in 0u8..8, edp: bool, dp: bool, pf: u8, ps: u8, sa: u8) {
            let pgn = Pgn::new((edp as u32) << 17 | (dp as u32) << 16 | (pf as u32) << 8 | if pf >= 240 { ps as u32 } else { 0 }).unwrap();
            let id = J1939Id::new(prio, pgn, sa, ps).unwrap();
            let back = J1939Id::from_id(id.to_id());
            prop_assert_eq!(back, id);
            prop_assert_eq!(back.pgn.pf(), pf);
            prop_assert_eq!(back.pgn.edp(), edp);
            prop_assert_eq!(back.pgn.dp(), dp);
            prop_assert_eq!(back.destination, if pf < 240 { ps } else { 255 });
            prop_assert_eq!(Pgn::from_le_bytes(pgn.to_le_bytes()), Some(pgn));
        }
    }
}
