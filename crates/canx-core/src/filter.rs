//! Receive filters: one type for canio's `Match`, inverted filters and the
//! candump filter syntax, with the semantics of the Linux raw socket
//! (`Documentation/networking/can.rst`, section "RAW socket option
//! CAN_RAW_FILTER"), so a filter can be handed to the kernel unchanged or
//! applied natively with the same result.
//!
//! A [`Filter`] compares a frame's 32-bit key (the identifier plus the
//! `EFF_FLAG` and `RTR_FLAG` bits, laid out as `can_id`):
//! `(key ^ filter.id) & filter.mask == 0`, negated for an inverted filter.
//! Flag bits in the mask decide whether the frame kind matters: canio's
//! `Match` sets `EFF_FLAG` in the mask (the kind must agree) and leaves
//! `RTR_FLAG` out (remote or data does not matter).

use core::fmt;

use crate::frame::{Frame, EFF_FLAG, EFF_MASK, ERR_FLAG, RTR_FLAG, SFF_MASK};

/// Why a filter could not be built or parsed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FilterError {
    /// canio `Match`: the id does not fit 11 (or 29) bits.
    IdOutOfRange,
    /// canio `Match`: the mask does not fit 11 (or 29) bits.
    MaskOutOfRange,
    /// candump syntax: not `id:mask`, `id~mask`, `#errmask` or `j`.
    Syntax,
    /// candump syntax: a hex number is missing, malformed or longer than 8 digits.
    BadNumber,
    /// More filters than the list can hold.
    TooMany,
}

impl fmt::Display for FilterError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            FilterError::IdOutOfRange => "id out of range",
            FilterError::MaskOutOfRange => "mask out of range",
            FilterError::Syntax => "expected <id>:<mask>, <id>~<mask>, #<error_mask> or j",
            FilterError::BadNumber => "expected a hexadecimal number of 1 to 8 digits",
            FilterError::TooMany => "too many filters",
        })
    }
}

impl core::error::Error for FilterError {}

/// One acceptance filter (kernel `struct can_filter` semantics).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct Filter {
    /// Identifier bits and `EFF_FLAG`/`RTR_FLAG` to compare.
    pub id: u32,
    /// Which bits of `id` must agree.
    pub mask: u32,
    /// Accept frames that do *not* match (`CAN_INV_FILTER`).
    pub inverted: bool,
}

impl Filter {
    /// Accepts every data and remote frame.
    pub const ACCEPT_ALL: Filter = Filter { id: 0, mask: 0, inverted: false };

    /// CircuitPython `canio.Match(id, mask=None, extended=False)`: matches a
    /// frame when `(rx_id & mask) == (id & mask)` and its kind (standard or
    /// extended) agrees; remote or data does not matter. `mask=None` means
    /// all bits. Errors: [`FilterError::IdOutOfRange`],
    /// [`FilterError::MaskOutOfRange`] (canio's messages).
    pub fn canio_match(id: u32, mask: Option<u32>, extended: bool) -> Result<Filter, FilterError> {
        let limit = if extended { EFF_MASK } else { SFF_MASK };
        if id > limit {
            return Err(FilterError::IdOutOfRange);
        }
        let mask = mask.unwrap_or(limit);
        if mask > limit {
            return Err(FilterError::MaskOutOfRange);
        }
        let flag = if extended { EFF_FLAG } else { 0 };
        Ok(Filter { id: id | flag, mask: mask | EFF_FLAG, inverted: false })
    }

    /// `true` if a frame with this key passes the filter. Error frames never
    /// pass a data filter (they are selected by an error mask).
    pub fn matches_key(&self, key: u32) -> bool {
        if key & ERR_FLAG != 0 {
            return false;
        }
        let hit = (key ^ self.id) & self.mask == 0;
        hit != self.inverted
    }

    pub fn matches(&self, frame: &Frame) -> bool {
        self.matches_key(frame.key())
    }

    /// Whether the identifier in this filter is extended (its id has `EFF_FLAG`).
    pub fn is_extended(&self) -> bool {
        self.id & EFF_FLAG != 0
    }
}

/// One item of a candump filter list (`candump --help`): a filter, an error
/// class mask, or the "join" switch that makes all filters have to match.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum FilterItem {
    /// `<can_id>:<can_mask>` or `<can_id>~<can_mask>` (inverted).
    Filter(Filter),
    /// `#<error_mask>`: error classes to receive.
    ErrorMask(u32),
    /// `j` / `J`: logical AND of the filters instead of OR (`CAN_RAW_JOIN_FILTERS`).
    Join,
}

impl FilterItem {
    /// Parses one candump filter item. As in candump, an id written with
    /// exactly 8 hex digits sets `EFF_FLAG` (extended), and the error flag is
    /// cleared from masks. Never panics.
    pub fn parse(s: &str) -> Result<FilterItem, FilterError> {
        let s = s.trim();
        if s.eq_ignore_ascii_case("j") {
            return Ok(FilterItem::Join);
        }
        if let Some(rest) = s.strip_prefix('#') {
            return Ok(FilterItem::ErrorMask(parse_hex(rest)? & EFF_MASK));
        }
        let (sep_at, inverted) = match (s.find(':'), s.find('~')) {
            (Some(i), None) => (i, false),
            (None, Some(i)) => (i, true),
            _ => return Err(FilterError::Syntax),
        };
        let (id_txt, mask_txt) = (&s[..sep_at], &s[sep_at + 1..]);
        let mut id = parse_hex(id_txt)?;
        let mask = parse_hex(mask_txt)? & !ERR_FLAG;
        if id_txt.len() == 8 {
            id |= EFF_FLAG;
        }
        Ok(FilterItem::Filter(Filter { id: id & !ERR_FLAG, mask, inverted }))
    }
}

impl fmt::Display for FilterItem {
    /// candump syntax. An extended id prints as 8 digits, a standard one as 3;
    /// so `parse(display(x)) == x` for every item whose non-extended id fits 28 bits.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FilterItem::Join => f.write_str("j"),
            FilterItem::ErrorMask(m) => write!(f, "#{:X}", m),
            FilterItem::Filter(flt) => {
                let sep = if flt.inverted { '~' } else { ':' };
                if flt.is_extended() {
                    write!(f, "{:08X}{}{:X}", flt.id & !EFF_FLAG, sep, flt.mask)
                } else {
                    write!(f, "{:03X}{}{:X}", flt.id, sep, flt.mask)
                }
            }
        }
    }
}

fn parse_hex(s: &str) -> Result<u32, FilterError> {
    if s.is_empty() || s.len() > 8 || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(FilterError::BadNumber);
    }
    u32::from_str_radix(s, 16).map_err(|_| FilterError::BadNumber)
}

/// A set of filters with kernel raw-socket semantics, held without heap in a
/// fixed array of `N` filters. No filters accepts every data frame (like an
/// unfiltered socket); error frames pass only where `error_mask` selects
/// their class.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FilterSet<const N: usize> {
    filters: [Filter; N],
    len: usize,
    /// Error classes (`CAN_ERR_*`) to receive; 0 receives no error frames.
    pub error_mask: u32,
    /// All filters must match instead of any.
    pub join: bool,
}

impl<const N: usize> Default for FilterSet<N> {
    fn default() -> Self {
        Self::new()
    }
}

impl<const N: usize> FilterSet<N> {
    pub const fn new() -> Self {
        FilterSet { filters: [Filter::ACCEPT_ALL; N], len: 0, error_mask: 0, join: false }
    }

    /// Adds a filter. Errors: [`FilterError::TooMany`] past `N`.
    pub fn push(&mut self, f: Filter) -> Result<(), FilterError> {
        let slot = self.filters.get_mut(self.len).ok_or(FilterError::TooMany)?;
        *slot = f;
        self.len += 1;
        Ok(())
    }

    pub fn add_item(&mut self, item: FilterItem) -> Result<(), FilterError> {
        match item {
            FilterItem::Filter(f) => self.push(f),
            FilterItem::ErrorMask(m) => {
                self.error_mask |= m;
                Ok(())
            }
            FilterItem::Join => {
                self.join = true;
                Ok(())
            }
        }
    }

    /// Parses a comma-separated candump filter list (`123:7FF,#FFFFFFFF`).
    pub fn parse_candump(list: &str) -> Result<Self, FilterError> {
        let mut set = Self::new();
        for item in list.split(',').filter(|s| !s.trim().is_empty()) {
            set.add_item(FilterItem::parse(item)?)?;
        }
        Ok(set)
    }

    pub fn filters(&self) -> &[Filter] {
        &self.filters[..self.len]
    }

    /// `true` if the frame passes this set.
    pub fn accepts(&self, frame: &Frame) -> bool {
        if let Frame::Error(e) = frame {
            return e.class() & self.error_mask != 0;
        }
        let fs = self.filters();
        if fs.is_empty() {
            return true;
        }
        let key = frame.key();
        if self.join {
            fs.iter().all(|f| f.matches_key(key))
        } else {
            fs.iter().any(|f| f.matches_key(key))
        }
    }
}

/// Checks the RTR flag helper constant is as in `linux/can.h`.
const _: () = assert!(RTR_FLAG == 0x4000_0000);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::{make_id, BusState, CanFrame, ErrorFrame};
    use proptest::prelude::*;

    fn data(id: u32, ext: bool) -> Frame {
        Frame::Can(CanFrame::new(make_id(id, ext).unwrap(), &[1]).unwrap())
    }
    fn rtr(id: u32, ext: bool) -> Frame {
        Frame::Can(CanFrame::new_remote(make_id(id, ext).unwrap(), 1).unwrap())
    }

    #[test]
    fn canio_match_semantics() {
        let m = Filter::canio_match(0x408, None, false).unwrap();
        assert!(m.matches(&data(0x408, false)));
        assert!(m.matches(&rtr(0x408, false)), "RTR does not matter");
        assert!(!m.matches(&data(0x408, true)), "kind must agree");
        assert!(!m.matches(&data(0x409, false)));
        let m = Filter::canio_match(0x400, Some(0x700), false).unwrap();
        assert!(m.matches(&data(0x4FF, false)));
        assert!(!m.matches(&data(0x3FF, false)));
        let e = Filter::canio_match(0x1234_5678, None, true).unwrap();
        assert!(e.matches(&data(0x1234_5678, true)));
        assert!(!e.matches(&data(0x678, false)));
        assert_eq!(Filter::canio_match(0x800, None, false), Err(FilterError::IdOutOfRange));
        assert_eq!(Filter::canio_match(0x1, Some(0x800), false), Err(FilterError::MaskOutOfRange));
        assert!(Filter::canio_match(0x800, None, true).is_ok());
    }

    #[test]
    fn candump_syntax_as_documented() {
        // `candump --help` examples.
        let f = |s| match FilterItem::parse(s).unwrap() {
            FilterItem::Filter(f) => f,
            other => panic!("{other:?}"),
        };
        // 123:7FF matches 0x123 including EFF and RTR frames.
        let a = f("123:7FF");
        assert!(a.matches(&data(0x123, false)) && a.matches(&data(0x123, true)) && a.matches(&rtr(0x123, false)));
        // 123:C00007FF matches only SFF non-RTR.
        let b = f("123:C00007FF");
        assert!(b.matches(&data(0x123, false)) && !b.matches(&data(0x123, true)) && !b.matches(&rtr(0x123, false)));
        // 12345678:DFFFFFFF matches only extended 0x12345678.
        let c = f("12345678:DFFFFFFF");
        assert!(c.is_extended());
        assert!(c.matches(&data(0x1234_5678, true)) && !c.matches(&data(0x678, false)));
        // 0~0 inverted: nothing passes.
        let d = f("0~0");
        assert!(d.inverted && !d.matches(&data(0x1, false)));
        assert_eq!(FilterItem::parse("#FFFFFFFF").unwrap(), FilterItem::ErrorMask(EFF_MASK));
        assert_eq!(FilterItem::parse("J").unwrap(), FilterItem::Join);
        for bad in ["", "123", "123:", ":7FF", "12G:7FF", "123:7FF:1", "123456789:1", "1:2~3", "#", "#xyz"] {
            assert!(FilterItem::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn filter_set_semantics() {
        let set = FilterSet::<4>::parse_candump("100:700,200:7FF").unwrap();
        assert!(set.accepts(&data(0x1AB, false)));
        assert!(set.accepts(&data(0x200, false)));
        assert!(!set.accepts(&data(0x300, false)));
        let err = Frame::Error(ErrorFrame::from_state(BusState::BusOff, 0, 0));
        assert!(!set.accepts(&err));
        let set = FilterSet::<4>::parse_candump("0~0,#FFFFFFFF").unwrap();
        assert!(set.accepts(&err) && !set.accepts(&data(1, false)));
        let set = FilterSet::<4>::parse_candump("100:700,7FF~7FF,j").unwrap();
        assert!(
            set.accepts(&data(0x100, false)) && !set.accepts(&data(0x7FF, false)) && !set.accepts(&data(0x2FF, false))
        );
        assert!(FilterSet::<0>::new().accepts(&data(5, true)));
        assert_eq!(FilterSet::<1>::parse_candump("1:1,2:2"), Err(FilterError::TooMany));
    }

    fn arb_item() -> impl Strategy<Value = FilterItem> {
        prop_oneof![
            Just(FilterItem::Join),
            (0u32..=EFF_MASK).prop_map(FilterItem::ErrorMask),
            (0u32..0x1000_0000, any::<u32>(), any::<bool>(), any::<bool>()).prop_map(|(id, mask, ext, inverted)| {
                let id = if ext { (id & EFF_MASK) | EFF_FLAG } else { id & !RTR_FLAG };
                FilterItem::Filter(Filter { id, mask: mask & !ERR_FLAG, inverted })
            }),
        ]
    }

    proptest! {
        #[test]
        fn candump_roundtrip(item in arb_item()) {
            let mut buf = std::string::String::new();
            use core::fmt::Write;
            write!(buf, "{item}").unwrap();
            prop_assert_eq!(FilterItem::parse(&buf), Ok(item), "{}", buf);
        }

        #[test]
        fn parse_never_panics(s in "\\PC{0,24}") {
            let _ = FilterItem::parse(&s);
            let _ = FilterSet::<8>::parse_candump(&s);
        }

        #[test]
        fn parse_never_panics_on_near_syntax(s in "[0-9a-fA-FjJ#:~,x ]{0,30}") {
            let _ = FilterSet::<8>::parse_candump(&s);
        }

        #[test]
        fn canio_match_agrees_with_definition(id in 0u32..=0x7FF, mask in 0u32..=0x7FF, rx in 0u32..=0x7FF, rx_ext in any::<bool>()) {
            let m = Filter::canio_match(id, Some(mask), false).unwrap();
            let expect = !rx_ext && (rx & mask) == (id & mask);
            let fr = data(rx, rx_ext);
            prop_assert_eq!(m.matches(&fr), expect);
        }
    }
}
