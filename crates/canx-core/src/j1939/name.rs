//! The 64-bit J1939 NAME (J1939-81 4.1.1), sent little-endian in Address
//! Claimed. Bit layout: 0-20 identity number, 21-31 manufacturer code, 32-34
//! ECU instance, 35-39 function instance, 40-47 function, 48 reserved, 49-55
//! vehicle system, 56-59 vehicle system instance, 60-62 industry group, 63
//! arbitrary address capable. Ordering is the numeric value: the lower NAME
//! wins address contention (J1939-81 4.4.3).

use core::fmt;

/// A J1939 NAME; compares as its `u64` value.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Name(u64);

/// The fields of a [`Name`], each in its own bit width (see the module doc).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Default)]
pub struct NameFields {
    /// 21 bits.
    pub identity_number: u32,
    /// 11 bits.
    pub manufacturer_code: u16,
    /// 3 bits.
    pub ecu_instance: u8,
    /// 5 bits.
    pub function_instance: u8,
    /// 8 bits.
    pub function: u8,
    /// 1 bit.
    pub reserved: bool,
    /// 7 bits.
    pub vehicle_system: u8,
    /// 4 bits.
    pub vehicle_system_instance: u8,
    /// 3 bits.
    pub industry_group: u8,
    /// 1 bit: may pick another address on contention.
    pub arbitrary_address_capable: bool,
}

/// A [`NameFields`] value does not fit its bit width.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NameError {
    IdentityNumber,
    ManufacturerCode,
    EcuInstance,
    FunctionInstance,
    VehicleSystem,
    VehicleSystemInstance,
    IndustryGroup,
}

impl fmt::Display for NameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            NameError::IdentityNumber => "identity number must fit 21 bits",
            NameError::ManufacturerCode => "manufacturer code must fit 11 bits",
            NameError::EcuInstance => "ECU instance must fit 3 bits",
            NameError::FunctionInstance => "function instance must fit 5 bits",
            NameError::VehicleSystem => "vehicle system must fit 7 bits",
            NameError::VehicleSystemInstance => "vehicle system instance must fit 4 bits",
            NameError::IndustryGroup => "industry group must fit 3 bits",
        })
    }
}

impl core::error::Error for NameError {}

const fn bits(v: u64, shift: u32, width: u32) -> u64 {
    (v >> shift) & ((1 << width) - 1)
}

impl Name {
    pub const fn from_u64(raw: u64) -> Name {
        Name(raw)
    }
    pub const fn to_u64(self) -> u64 {
        self.0
    }
    /// From the 8 bytes of an Address Claimed payload (little-endian).
    pub const fn from_bytes(b: [u8; 8]) -> Name {
        Name(u64::from_le_bytes(b))
    }
    /// The 8 bytes of an Address Claimed payload (little-endian).
    pub const fn to_bytes(self) -> [u8; 8] {
        self.0.to_le_bytes()
    }

    /// Builds a NAME; errors name the first field that does not fit.
    pub const fn from_fields(f: NameFields) -> Result<Name, NameError> {
        if f.identity_number >= 1 << 21 {
            return Err(NameError::IdentityNumber);
        }
        if f.manufacturer_code >= 1 << 11 {
            return Err(NameError::ManufacturerCode);
        }
        if f.ecu_instance >= 1 << 3 {
            return Err(NameError::EcuInstance);
        }
        if f.function_instance >= 1 << 5 {
            return Err(NameError::FunctionInstance);
        }
        if f.vehicle_system >= 1 << 7 {
            return Err(NameError::VehicleSystem);
        }
        if f.vehicle_system_instance >= 1 << 4 {
            return Err(NameError::VehicleSystemInstance);
        }
        if f.industry_group >= 1 << 3 {
            return Err(NameError::IndustryGroup);
        }
        Ok(Name(
            f.identity_number as u64
                | (f.manufacturer_code as u64) << 21
                | (f.ecu_instance as u64) << 32
                | (f.function_instance as u64) << 35
                | (f.function as u64) << 40
                | (f.reserved as u64) << 48
                | (f.vehicle_system as u64) << 49
                | (f.vehicle_system_instance as u64) << 56
                | (f.industry_group as u64) << 60
                | (f.arbitrary_address_capable as u64) << 63,
        ))
    }

    pub const fn fields(self) -> NameFields {
        NameFields {
            identity_number: self.identity_number(),
            manufacturer_code: self.manufacturer_code(),
            ecu_instance: self.ecu_instance(),
            function_instance: self.function_instance(),
            function: self.function(),
            reserved: self.reserved(),
            vehicle_system: self.vehicle_system(),
            vehicle_system_instance: self.vehicle_system_instance(),
            industry_group: self.industry_group(),
            arbitrary_address_capable: self.arbitrary_address_capable(),
        }
    }

    pub const fn identity_number(self) -> u32 {
        bits(self.0, 0, 21) as u32
    }
    pub const fn manufacturer_code(self) -> u16 {
        bits(self.0, 21, 11) as u16
    }
    pub const fn ecu_instance(self) -> u8 {
        bits(self.0, 32, 3) as u8
    }
    pub const fn function_instance(self) -> u8 {
        bits(self.0, 35, 5) as u8
    }
    pub const fn function(self) -> u8 {
        bits(self.0, 40, 8) as u8
    }
    pub const fn reserved(self) -> bool {
        bits(self.0, 48, 1) != 0
    }
    pub const fn vehicle_system(self) -> u8 {
        bits(self.0, 49, 7) as u8
    }
    pub const fn vehicle_system_instance(self) -> u8 {
        bits(self.0, 56, 4) as u8
    }
    pub const fn industry_group(self) -> u8 {
        bits(self.0, 60, 3) as u8
    }
    pub const fn arbitrary_address_capable(self) -> bool {
        bits(self.0, 63, 1) != 0
    }
}

impl From<u64> for Name {
    fn from(v: u64) -> Self {
        Name(v)
    }
}

impl From<Name> for u64 {
    fn from(n: Name) -> Self {
        n.0
    }
}

impl fmt::Debug for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Name(0x{:016X})", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn hand_vector() {
        // identity 0x1ABCD, manufacturer 0x123, ECU instance 2, function
        // instance 3, function 0x81, vehicle system 0x12, vs instance 5,
        // industry group 1, arbitrary capable.
        let f = NameFields {
            identity_number: 0x1_ABCD,
            manufacturer_code: 0x123,
            ecu_instance: 2,
            function_instance: 3,
            function: 0x81,
            reserved: false,
            vehicle_system: 0x12,
            vehicle_system_instance: 5,
            industry_group: 1,
            arbitrary_address_capable: true,
        };
        let n = Name::from_fields(f).unwrap();
        // low 32: 0x123 << 21 | 0x1ABCD = 0x2461ABCD
        // byte4: ecu 2 | fi 3 << 3 = 0x1A; byte5: 0x81; byte6: vs 0x12 << 1 = 0x24;
        // byte7: 5 | 1 << 4 | 1 << 7 = 0x95.
        assert_eq!(n.to_u64(), 0x9524_811A_2461_ABCD);
        assert_eq!(n.to_bytes(), [0xCD, 0xAB, 0x61, 0x24, 0x1A, 0x81, 0x24, 0x95]);
        assert_eq!(n.fields(), f);
        assert_eq!(Name::from_bytes(n.to_bytes()), n);
        assert!(Name::from_u64(1) < Name::from_u64(2));
        assert_eq!(Name::from_fields(NameFields { identity_number: 1 << 21, ..f }), Err(NameError::IdentityNumber));
        assert_eq!(Name::from_fields(NameFields { industry_group: 8, ..f }), Err(NameError::IndustryGroup));
    }

    proptest! {
        #[test]
        fn roundtrip(raw: u64) {
            let n = Name::from_u64(raw);
            prop_assert_eq!(Name::from_fields(n.fields()), Ok(n));
            prop_assert_eq!(Name::from_bytes(n.to_bytes()), n);
        }

        #[test]
        fn each_field(id in 0u32..1 << 21, mc in 0u16..1 << 11, ecu in 0u8..8, fi in 0u8..32, func: u8, res: bool,
                      vs in 0u8..128, vsi in 0u8..16, ig in 0u8..8, aac: bool) {
            let f = NameFields { identity_number: id, manufacturer_code: mc, ecu_instance: ecu, function_instance: fi,
                function: func, reserved: res, vehicle_system: vs, vehicle_system_instance: vsi, industry_group: ig,
                arbitrary_address_capable: aac };
            let n = Name::from_fields(f).unwrap();
            prop_assert_eq!(n.fields(), f);
            prop_assert_eq!(Name::from_bytes(n.to_bytes()).fields(), f);
        }
    }
}
