//! Frames from bytes and candump filters: arbitrary identifiers, lengths and
//! flags into the frame constructors, and arbitrary text into the candump
//! filter parser (`FilterItem::parse`, `FilterSet::parse_candump`).
//! Invariants: no panic; a constructor accepts exactly the lengths CAN and
//! CAN FD allow and keeps identifier and data; a parsed filter item writes
//! back (Display) to text that parses to the same item; a filter set
//! accepts or rejects every frame without panicking, and an empty set
//! accepts every data frame.
#![no_main]

use arbitrary::Arbitrary;
use canx_core::filter::{Filter, FilterItem, FilterSet};
use canx_core::frame::{fd_padded_len, id_raw, make_id, CanFrame, FdFrame, Frame};
use libfuzzer_sys::fuzz_target;

#[derive(Arbitrary, Debug)]
struct RawFrame {
    raw: u32,
    extended: bool,
    fd: bool,
    remote: bool,
    brs: bool,
    esi: bool,
    data: Vec<u8>,
}

#[derive(Arbitrary, Debug)]
struct Input {
    filters: String,
    items: Vec<String>,
    frames: Vec<RawFrame>,
}

fn frame(r: &RawFrame) -> Option<Frame> {
    let id = match make_id(r.raw, r.extended) {
        Ok(id) => id,
        Err(_) => {
            assert!(r.raw > if r.extended { 0x1FFF_FFFF } else { 0x7FF }, "valid id refused");
            return None;
        }
    };
    assert_eq!(id_raw(id), r.raw);
    let data = &r.data[..r.data.len().min(80)];
    if r.fd {
        match FdFrame::new(id, data, r.brs, r.esi) {
            Ok(f) => {
                assert_eq!(fd_padded_len(data.len()), Some(data.len()), "FD length {} accepted", data.len());
                assert_eq!(f.data(), data);
                assert_eq!(f.raw_id(), r.raw);
                Some(Frame::Fd(f))
            }
            Err(_) => {
                assert_ne!(fd_padded_len(data.len()), Some(data.len()), "FD length {} refused", data.len());
                None
            }
        }
    } else if r.remote {
        match CanFrame::new_remote(id, data.len()) {
            Ok(f) => {
                assert!(f.is_remote());
                Some(Frame::Can(f))
            }
            Err(_) => {
                assert!(data.len() > 8);
                None
            }
        }
    } else {
        match CanFrame::new(id, data) {
            Ok(f) => {
                assert_eq!(f.data(), data);
                assert_eq!(f.raw_id(), r.raw);
                assert_eq!(f.is_extended(), r.extended);
                Some(Frame::Can(f))
            }
            Err(_) => {
                assert!(data.len() > 8, "classic length {} refused", data.len());
                let t = CanFrame::new_truncated(id, data);
                assert_eq!(t.data(), &data[..8]);
                None
            }
        }
    }
}

fuzz_target!(|input: Input| {
    let set = FilterSet::<8>::parse_candump(&input.filters);
    for text in &input.items {
        if let Ok(item) = FilterItem::parse(text) {
            let again = FilterItem::parse(&item.to_string());
            let fits = match item {
                FilterItem::Filter(f) => f.is_extended() || f.id < 1 << 28,
                _ => true,
            };
            if fits {
                assert_eq!(again, Ok(item), "{text:?} -> {item}");
            }
        }
    }
    let empty = FilterSet::<8>::new();
    for r in input.frames.iter().take(64) {
        if let Some(f) = frame(r) {
            let _ = f.key();
            assert!(empty.accepts(&f), "an empty set accepts every data frame");
            if let Ok(s) = &set {
                let _ = s.accepts(&f);
            }
            let _ = Filter::ACCEPT_ALL.matches(&f);
        }
    }
});
