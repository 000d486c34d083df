//! C ABI over canx-core's J1939 [`Ecu`] for the MicroPython user C module
//! (issue #15; design in docs/micropython.md).
//!
//! Rules of this ABI (MicroPython raises by `longjmp`, which must never
//! cross Rust frames):
//! - C calls Rust, never the other way; Rust returns status codes and fills
//!   caller structs. No callbacks, no allocation, no statics (the archive has
//!   no `.data`/`.bss`, checked by `tests::archive_has_no_data_or_bss`).
//! - All state lives in caller memory of [`canx_j1939_size`] bytes aligned
//!   to [`canx_j1939_align`] (inside the MicroPython object), written in
//!   place by [`canx_j1939_init`]. It owns no resources: freeing the memory
//!   without a call into Rust is fine.
//! - Two engine variants, chosen at init by a `u32` (`CANX_J1939_SMALL`,
//!   `CANX_J1939_FULL`); the memory remembers which, so every later call
//!   dispatches on it. Each is a cargo feature (`small`, `full`, both by
//!   default): a build with one carries one monomorphised engine (about
//!   half the code); the other's size is then 0 and its init `CANX_EINVAL`.
//! - Only fixed-width integers and `#[repr(C)]` structs cross; no enums
//!   (arm-none-eabi-gcc uses short enums). Constants are mirrored in
//!   `include/canx_mpy.h`.
//! - Times are microseconds of a monotonic 64-bit clock chosen by the caller.
//! - Panics abort (`panic = "abort"`); the no_std panic handler calls the
//!   C hook `canx_mpy_fatal()` and never returns or unwinds.
#![cfg_attr(not(test), no_std)]
#![deny(unsafe_op_in_unsafe_fn)]

use core::ffi::c_void;
use core::mem::{align_of, size_of};

use canx_core::j1939::address_claim::ClaimEvent;
use canx_core::j1939::codecs::{eec1, et1, vin};
use canx_core::j1939::dm::{emit_dm, Dtc, Lamps};
use canx_core::j1939::transport::{SendError, TransportEvent};
use canx_core::j1939::{Ecu, EcuConfig, EcuError, EcuEvent, Name, Pgn, RequestOutcome, Responder, TableEvent};
use canx_core::{CanFrame, ExtendedId, Frame, Id, Instant, StandardId};

#[cfg(not(any(feature = "small", feature = "full")))]
compile_error!("enable at least one engine variant: feature `small` or `full`");

/// The small variant: 1 TP session (one 1785-byte buffer), 4 responders and
/// 4 outstanding requests, a 16-entry bus table, no ETP.
#[cfg(feature = "small")]
type Small = Ecu<'static, 1, 4, 0, 16>;
/// The full variant: 4 TP sessions, 16 responders and 16 outstanding
/// requests, the whole 254-entry bus table, no ETP (ETP needs caller
/// buffers of up to 16 MB that outlive the engine; not in this ABI).
#[cfg(feature = "full")]
type Full = Ecu<'static, 4, 16, 0, 254>;

/// `canx_j1939_size`/`init` variant: [`Small`].
pub const CANX_J1939_SMALL: u32 = 0;
/// `canx_j1939_size`/`init` variant: [`Full`].
pub const CANX_J1939_FULL: u32 = 1;

const MAGIC: u32 = 0x4A31_3933; // "J193"

/// What the caller's memory holds after [`canx_j1939_init`]: `magic` and
/// `variant` at offsets 0 and 4 for every variant.
#[repr(C)]
struct State<E> {
    magic: u32,
    variant: u32,
    ecu: E,
}

#[cfg(feature = "small")]
const _: () = assert!(core::mem::offset_of!(State<Small>, variant) == 4);
#[cfg(feature = "full")]
const _: () = assert!(core::mem::offset_of!(State<Full>, variant) == 4);
#[cfg(feature = "small")]
const SMALL_ALIGN: usize = align_of::<State<Small>>();
#[cfg(not(feature = "small"))]
const SMALL_ALIGN: usize = 1;
#[cfg(feature = "full")]
const FULL_ALIGN: usize = align_of::<State<Full>>();
#[cfg(not(feature = "full"))]
const FULL_ALIGN: usize = 1;
/// One alignment for every variant built in (the header is read before the
/// variant is known).
const ALIGN: usize = if SMALL_ALIGN > FULL_ALIGN { SMALL_ALIGN } else { FULL_ALIGN };
const _: () = assert!(ALIGN <= 8, "MicroPython's heap gives 8-byte alignment");

// ---- error codes (canx_mpy.h CANX_E*) ----
pub const CANX_OK: i32 = 0;
/// A null pointer, too small or misaligned memory, or a state not made by init.
pub const CANX_EARG: i32 = -1;
/// No claimed address yet (or it was lost).
pub const CANX_ENOADDR: i32 = -2;
/// Too long: above 1785 bytes, or an output buffer too small.
pub const CANX_ETOOLONG: i32 = -3;
/// Invalid priority, address, PGN or value.
pub const CANX_EINVAL: i32 = -4;
/// A table or queue is full (transmit queue, responders, pending requests).
pub const CANX_EFULL: i32 = -5;
/// Every TP session is in use: retry after a `SENT`/`ABORTED` event.
pub const CANX_EBUSY: i32 = -6;

// ---- frame flags (values of machine.CAN) ----
pub const CANX_FLAG_RTR: u8 = 0x01;
pub const CANX_FLAG_EXT: u8 = 0x02;

// ---- event kinds ----
pub const CANX_EV_CLAIMED: u8 = 1;
pub const CANX_EV_LOST: u8 = 2;
pub const CANX_EV_CANNOT_CLAIM: u8 = 3;
pub const CANX_EV_TABLE_ADDED: u8 = 4;
pub const CANX_EV_TABLE_REMOVED: u8 = 5;
pub const CANX_EV_MESSAGE: u8 = 6;
pub const CANX_EV_REQUEST: u8 = 7;
pub const CANX_EV_SENT: u8 = 8;
pub const CANX_EV_ABORTED: u8 = 9;
pub const CANX_EV_REQUEST_DONE: u8 = 10;

// ---- REQUEST_DONE outcomes (event `detail` low byte; ack control in bits 8..15) ----
pub const CANX_OUTCOME_ANSWERED: u32 = 0;
pub const CANX_OUTCOME_ACKNOWLEDGED: u32 = 1;
pub const CANX_OUTCOME_ABORTED: u32 = 2;
pub const CANX_OUTCOME_TIMED_OUT: u32 = 3;

/// Event `flags` bits.
pub const CANX_EVF_TRUNCATED: u8 = 0x01;
pub const CANX_EVF_BY_PEER: u8 = 0x02;
pub const CANX_EVF_RECEIVE: u8 = 0x04;
pub const CANX_EVF_GLOBAL: u8 = 0x08;

/// One classic CAN frame (16 bytes). `id` without flag bits; `flags` as
/// machine.CAN (`CANX_FLAG_EXT`, `CANX_FLAG_RTR`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CanxFrame {
    pub id: u32,
    pub flags: u8,
    pub len: u8,
    pub pad: [u8; 2],
    pub data: [u8; 8],
}

/// One event (24 bytes). Fields by `kind`:
/// - `CLAIMED`/`LOST`/`CANNOT_CLAIM`: `source` = address; `name` = the
///   winner for `LOST`.
/// - `TABLE_ADDED`/`TABLE_REMOVED`: `source` = address, `name`.
/// - `MESSAGE` (single frame or TP-reassembled): `priority`, `pgn`,
///   `source`, `destination`, `len` (the whole length; the bytes copied into
///   the caller buffer are `min(len, cap)`, `CANX_EVF_TRUNCATED` if cut).
/// - `REQUEST`: `pgn`, `source` = requester, `CANX_EVF_GLOBAL`.
/// - `SENT`: `pgn`, `source`, `destination`, `len` = size.
/// - `ABORTED`: `pgn`, `source`, `destination`, `detail` = abort reason
///   code (J1939-21 5.10.3.5), flags `CANX_EVF_BY_PEER`, `CANX_EVF_RECEIVE`.
/// - `REQUEST_DONE`: `pgn`, `destination`, `detail` = outcome | ack-control
///   code << 8 or abort reason << 8.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CanxEvent {
    pub kind: u8,
    pub priority: u8,
    pub source: u8,
    pub destination: u8,
    pub pgn: u32,
    pub len: u32,
    pub detail: u16,
    pub flags: u8,
    pub pad: u8,
    pub name: u64,
}

const _: () = assert!(size_of::<CanxFrame>() == 16 && align_of::<CanxFrame>() == 4);
const _: () = assert!(size_of::<CanxEvent>() == 24 && align_of::<CanxEvent>() == 8);

fn ecu_error(e: EcuError) -> i32 {
    match e {
        EcuError::NoAddress => CANX_ENOADDR,
        EcuError::TooLong | EcuError::Transport(SendError::TooLong) => CANX_ETOOLONG,
        EcuError::Full => CANX_EFULL,
        EcuError::Transport(SendError::NoSession) => CANX_EBUSY,
        _ => CANX_EINVAL,
    }
}

fn status(r: Result<(), EcuError>) -> i32 {
    r.map_or_else(ecu_error, |()| CANX_OK)
}

fn pgn(raw: u32) -> Option<Pgn> {
    Pgn::new(raw)
}

/// Byte slice from a C pointer and length (`len == 0` may pass null).
///
/// # Safety
/// `data` must be null with `len == 0`, or point to `len` readable bytes
/// that stay unchanged for the call.
unsafe fn bytes<'a>(data: *const u8, len: usize) -> Option<&'a [u8]> {
    if len == 0 {
        return Some(&[]);
    }
    if data.is_null() {
        return None;
    }
    // SAFETY: non-null and, by the caller's contract, `len` readable bytes.
    Some(unsafe { core::slice::from_raw_parts(data, len) })
}

/// # Safety
/// `data` must be null with `cap == 0`, or point to `cap` writable bytes not
/// aliased during the call.
unsafe fn bytes_mut<'a>(data: *mut u8, cap: usize) -> Option<&'a mut [u8]> {
    if cap == 0 {
        return Some(&mut []);
    }
    if data.is_null() {
        return None;
    }
    // SAFETY: non-null and, by the caller's contract, `cap` writable bytes.
    Some(unsafe { core::slice::from_raw_parts_mut(data, cap) })
}

/// The variant of the engine behind `e`, if it was made by
/// [`canx_j1939_init`].
///
/// # Safety
/// `e` must be null or point to [`canx_j1939_size`] bytes aligned to
/// [`canx_j1939_align`], initialised (e.g. zeroed) memory, not aliased
/// during the call.
unsafe fn variant(e: *mut c_void) -> Option<u32> {
    let h = e.cast::<[u32; 2]>();
    if h.is_null() || !(e as usize).is_multiple_of(ALIGN) {
        return None;
    }
    // SAFETY: aligned, non-null, initialised memory of at least the header
    // by the caller's contract.
    let [magic, variant] = unsafe { h.read() };
    (magic == MAGIC).then_some(variant)
}

/// Runs `$body` with `$ecu` bound to the engine behind `$e` (whichever
/// variant), or returns `CANX_EARG` (as `$ty`) if `$e` is no engine.
/// Every use must be inside an `unsafe fn` whose contract on `$e` is
/// [`variant`]'s, with the memory sized for the variant init wrote.
macro_rules! with_engine {
    ($e:expr, $ty:ty, |$ecu:ident| $body:expr) => {{
        let e: *mut c_void = $e;
        // SAFETY: the caller's contract on `e`.
        match unsafe { variant(e) } {
            #[cfg(feature = "small")]
            Some(CANX_J1939_SMALL) => {
                // SAFETY: init wrote a State<Small> here (the variant says
                // so), in memory of its size by the caller's contract.
                let $ecu = unsafe { &mut (*e.cast::<State<Small>>()).ecu };
                $body
            }
            #[cfg(feature = "full")]
            Some(CANX_J1939_FULL) => {
                // SAFETY: as above, for State<Full>.
                let $ecu = unsafe { &mut (*e.cast::<State<Full>>()).ecu };
                $body
            }
            _ => return <$ty>::from(CANX_EARG),
        }
    }};
}

fn state_size(variant: u32) -> Option<usize> {
    match variant {
        #[cfg(feature = "small")]
        CANX_J1939_SMALL => Some(size_of::<State<Small>>()),
        #[cfg(feature = "full")]
        CANX_J1939_FULL => Some(size_of::<State<Full>>()),
        _ => None,
    }
}

/// Bytes of caller memory one engine of `variant` needs (0 for an unknown
/// variant, or one left out of this build by its cargo feature).
#[no_mangle]
pub extern "C" fn canx_j1939_size(variant: u32) -> u32 {
    state_size(variant).map_or(0, |n| n as u32)
}

/// Alignment of that memory, the same for every variant (MicroPython's GC
/// heap gives 8 or 16).
#[no_mangle]
pub extern "C" fn canx_j1939_align() -> u32 {
    ALIGN as u32
}

fn init<const S: usize, const R: usize, const T: usize>(
    s: *mut State<Ecu<'static, S, R, 0, T>>,
    variant: u32,
    name: u64,
    address: u8,
) -> i32 {
    let ecu = match Ecu::new(EcuConfig::new(Name::from_u64(name), address)) {
        Ok(ecu) => ecu,
        Err(e) => return ecu_error(e),
    };
    // SAFETY: the caller (canx_j1939_init) checked `s` non-null, aligned and
    // large enough; `write` does not read or drop the old (possibly
    // uninitialised) contents.
    unsafe { s.write(State { magic: MAGIC, variant, ecu }) };
    CANX_OK
}

/// Makes an engine of `variant` (`CANX_J1939_SMALL`/`FULL`) for NAME
/// `name` preferring `address` in `mem` (`size` bytes). Returns `CANX_OK`,
/// or `CANX_EARG` (null, small or misaligned memory), `CANX_EINVAL`
/// (unknown variant, address above 253).
///
/// # Safety
/// `mem` must be null or point to `size` writable bytes not aliased during
/// the call.
#[no_mangle]
pub unsafe extern "C" fn canx_j1939_init(mem: *mut c_void, variant: u32, size: u32, name: u64, address: u8) -> i32 {
    let Some(need) = state_size(variant) else { return CANX_EINVAL };
    if mem.is_null() || !(mem as usize).is_multiple_of(ALIGN) || (size as usize) < need {
        return CANX_EARG;
    }
    match variant {
        #[cfg(feature = "small")]
        CANX_J1939_SMALL => init(mem.cast::<State<Small>>(), variant, name, address),
        #[cfg(feature = "full")]
        CANX_J1939_FULL => init(mem.cast::<State<Full>>(), variant, name, address),
        _ => CANX_EINVAL,
    }
}

/// Starts the address claim (usable 250 ms later: `CLAIMED` event).
///
/// # Safety
/// As every `e` argument: see [`canx_j1939_init`]'s memory, or null.
#[no_mangle]
pub unsafe extern "C" fn canx_j1939_start(e: *mut c_void, now_us: u64) -> i32 {
    with_engine!(e, i32, |ecu| {
        ecu.start(Instant::from_micros(now_us));
        CANX_OK
    })
}

/// Feeds one received frame (every bus frame; not this engine's own).
/// Standard and remote frames are ignored. `CANX_EARG` for a bad pointer or
/// `len > 8`.
///
/// # Safety
/// `e` as [`canx_j1939_start`]; `f` null or a readable frame.
#[no_mangle]
pub unsafe extern "C" fn canx_j1939_handle_frame(e: *mut c_void, now_us: u64, f: *const CanxFrame) -> i32 {
    with_engine!(e, i32, |ecu| {
        if f.is_null() {
            return CANX_EARG;
        }
        // SAFETY: non-null and readable by the caller's contract; CanxFrame is
        // plain data (every bit pattern valid).
        let f = unsafe { *f };
        let Some(data) = f.data.get(..usize::from(f.len)) else { return CANX_EARG };
        let id: Id = if f.flags & CANX_FLAG_EXT != 0 {
            match ExtendedId::new(f.id) {
                Some(id) => id.into(),
                None => return CANX_EINVAL,
            }
        } else {
            match u16::try_from(f.id).ok().and_then(StandardId::new) {
                Some(id) => id.into(),
                None => return CANX_EINVAL,
            }
        };
        let frame =
            if f.flags & CANX_FLAG_RTR != 0 { CanFrame::new_remote(id, data.len()) } else { CanFrame::new(id, data) };
        match frame {
            Ok(frame) => {
                ecu.handle_frame(Instant::from_micros(now_us), &Frame::Can(frame));
                CANX_OK
            }
            Err(_) => CANX_EINVAL,
        }
    })
}

/// Runs the timers due at `now_us`.
///
/// # Safety
/// `e` as [`canx_j1939_start`].
#[no_mangle]
pub unsafe extern "C" fn canx_j1939_handle_timeout(e: *mut c_void, now_us: u64) -> i32 {
    with_engine!(e, i32, |ecu| {
        ecu.handle_timeout(Instant::from_micros(now_us));
        CANX_OK
    })
}

/// Next frame to send into `out`: 1 = a frame, 0 = none, `CANX_EARG`.
///
/// # Safety
/// `e` as [`canx_j1939_start`]; `out` null or writable.
#[no_mangle]
pub unsafe extern "C" fn canx_j1939_poll_transmit(e: *mut c_void, now_us: u64, out: *mut CanxFrame) -> i32 {
    with_engine!(e, i32, |ecu| {
        if out.is_null() {
            return CANX_EARG;
        }
        let Some(f) = ecu.poll_transmit(Instant::from_micros(now_us)) else { return 0 };
        let mut c = CanxFrame { id: f.raw_id(), len: f.data().len() as u8, ..CanxFrame::default() };
        if f.is_extended() {
            c.flags |= CANX_FLAG_EXT;
        }
        if f.is_remote() {
            c.flags |= CANX_FLAG_RTR;
        }
        c.data[..f.data().len()].copy_from_slice(f.data());
        // SAFETY: non-null and writable by the caller's contract.
        unsafe { out.write(c) };
        1
    })
}

/// Microseconds of the next timer, or -1 if none.
///
/// # Safety
/// `e` as [`canx_j1939_start`].
#[no_mangle]
pub unsafe extern "C" fn canx_j1939_poll_timeout(e: *mut c_void) -> i64 {
    with_engine!(e, i64, |ecu| ecu.poll_timeout().map_or(-1, |t| t.total_micros().min(i64::MAX as u64) as i64))
}

fn copy_out(ev: &mut CanxEvent, src: &[u8], buf: &mut [u8]) {
    let n = src.len().min(buf.len());
    buf[..n].copy_from_slice(&src[..n]);
    ev.len = src.len() as u32;
    if n < src.len() {
        ev.flags |= CANX_EVF_TRUNCATED;
    }
}

/// Next event into `out`, message bytes into `buf` (`cap` bytes; 1785
/// holds every TP message): 1 = an event, 0 = none, `CANX_EARG`.
///
/// # Safety
/// `e` as [`canx_j1939_start`]; `out` null or writable; `buf` as
/// `bytes_mut` (null with `cap == 0`, or `cap` writable bytes).
#[no_mangle]
pub unsafe extern "C" fn canx_j1939_poll_event(e: *mut c_void, out: *mut CanxEvent, buf: *mut u8, cap: u32) -> i32 {
    with_engine!(e, i32, |ecu| {
        // SAFETY: the caller's contract on `buf`/`cap`.
        let Some(buf) = (unsafe { bytes_mut(buf, cap as usize) }) else { return CANX_EARG };
        if out.is_null() {
            return CANX_EARG;
        }
        let Some(event) = ecu.poll_event() else { return 0 };
        let mut ev = CanxEvent::default();
        match event {
            EcuEvent::Address(c) => match c {
                ClaimEvent::Claimed { address } => (ev.kind, ev.source) = (CANX_EV_CLAIMED, address),
                ClaimEvent::Lost { address, winner } => {
                    (ev.kind, ev.source, ev.name) = (CANX_EV_LOST, address, winner.to_u64());
                }
                ClaimEvent::CannotClaim => (ev.kind, ev.source) = (CANX_EV_CANNOT_CLAIM, 254),
                ClaimEvent::Table(TableEvent::Added { address, name }) => {
                    (ev.kind, ev.source, ev.name) = (CANX_EV_TABLE_ADDED, address, name.to_u64());
                }
                ClaimEvent::Table(TableEvent::Removed { address, name }) => {
                    (ev.kind, ev.source, ev.name) = (CANX_EV_TABLE_REMOVED, address, name.to_u64());
                }
            },
            EcuEvent::Request { pgn, requester, global } => {
                (ev.kind, ev.pgn, ev.source) = (CANX_EV_REQUEST, pgn.raw(), requester);
                if global {
                    ev.flags |= CANX_EVF_GLOBAL;
                }
            }
            EcuEvent::Message { id, data, len } => {
                ev.kind = CANX_EV_MESSAGE;
                (ev.priority, ev.pgn, ev.source, ev.destination) =
                    (id.priority, id.pgn.raw(), id.source, id.destination);
                copy_out(&mut ev, data.get(..usize::from(len)).unwrap_or(&data), buf);
            }
            EcuEvent::Received(r) | EcuEvent::ReceivedExtended(r) => {
                ev.kind = CANX_EV_MESSAGE;
                (ev.priority, ev.pgn, ev.source, ev.destination) = (r.priority, r.pgn.raw(), r.source, r.destination);
                let data = if matches!(event, EcuEvent::Received(_)) {
                    ecu.received_data(r.handle)
                } else {
                    ecu.received_extended_data(r.handle)
                };
                copy_out(&mut ev, data.unwrap_or(&[]), buf);
                ev.len = r.len;
            }
            EcuEvent::Transport(TransportEvent::Sent { pgn, source, destination, size, .. }) => {
                (ev.kind, ev.pgn, ev.source, ev.destination, ev.len) =
                    (CANX_EV_SENT, pgn.raw(), source, destination, size);
            }
            EcuEvent::Transport(TransportEvent::Aborted {
                direction,
                pgn,
                source,
                destination,
                reason,
                by_peer,
                ..
            }) => {
                (ev.kind, ev.pgn, ev.source, ev.destination) = (CANX_EV_ABORTED, pgn.raw(), source, destination);
                ev.detail = u16::from(reason.code());
                if by_peer {
                    ev.flags |= CANX_EVF_BY_PEER;
                }
                if matches!(direction, canx_core::j1939::transport::Direction::Receive) {
                    ev.flags |= CANX_EVF_RECEIVE;
                }
            }
            EcuEvent::Transport(TransportEvent::Received(r)) => {
                ev.kind = CANX_EV_MESSAGE;
                (ev.priority, ev.pgn, ev.source, ev.destination) = (r.priority, r.pgn.raw(), r.source, r.destination);
                copy_out(&mut ev, ecu.received_data(r.handle).unwrap_or(&[]), buf);
                ev.len = r.len;
            }
            EcuEvent::RequestDone { pgn, destination, outcome } => {
                (ev.kind, ev.pgn, ev.destination) = (CANX_EV_REQUEST_DONE, pgn.raw(), destination);
                let (o, code) = match outcome {
                    RequestOutcome::Answered => (CANX_OUTCOME_ANSWERED, 0),
                    RequestOutcome::Acknowledged(c) => (CANX_OUTCOME_ACKNOWLEDGED, c.code()),
                    RequestOutcome::TransportAborted(r) => (CANX_OUTCOME_ABORTED, r.code()),
                    RequestOutcome::TimedOut => (CANX_OUTCOME_TIMED_OUT, 0),
                };
                ev.detail = (o as u16) | (u16::from(code) << 8);
            }
        }
        // SAFETY: non-null and writable by the caller's contract.
        unsafe { out.write(ev) };
        1
    })
}

/// The claimed address (0..=253), or `CANX_ENOADDR`/`CANX_EARG`.
///
/// # Safety
/// `e` as [`canx_j1939_start`].
#[no_mangle]
pub unsafe extern "C" fn canx_j1939_address(e: *mut c_void) -> i32 {
    with_engine!(e, i32, |ecu| ecu.address().map_or(CANX_ENOADDR, i32::from))
}

/// Frames and events the engine dropped because its queues were full.
///
/// # Safety
/// `e` as [`canx_j1939_start`].
#[no_mangle]
pub unsafe extern "C" fn canx_j1939_dropped(e: *mut c_void) -> i64 {
    with_engine!(e, i64, |ecu| {
        let s = ecu.stats();
        i64::from(s.dropped_frames) + i64::from(s.dropped_events)
    })
}

/// Sends `len` bytes as `pgn` to `destination` (255 = all): one frame up to
/// 8 bytes, BAM above 8 to all, RTS/CTS to one CA (9..=1785 bytes).
/// Errors: `CANX_ENOADDR`, `CANX_ETOOLONG`, `CANX_EINVAL`, `CANX_EFULL`,
/// `CANX_EBUSY`, `CANX_EARG`.
///
/// # Safety
/// `e` as [`canx_j1939_start`]; `data` as `bytes` (null with `len == 0`,
/// or `len` readable bytes).
#[no_mangle]
pub unsafe extern "C" fn canx_j1939_send(
    e: *mut c_void,
    priority: u8,
    pgn_raw: u32,
    destination: u8,
    data: *const u8,
    len: u32,
) -> i32 {
    with_engine!(e, i32, |ecu| {
        // SAFETY: the caller's contract on `data`/`len`.
        let Some(data) = (unsafe { bytes(data, len as usize) }) else { return CANX_EARG };
        let Some(pgn) = pgn(pgn_raw) else { return CANX_EINVAL };
        if data.len() > 1785 {
            return CANX_ETOOLONG;
        }
        status(ecu.send(priority, pgn, destination, data))
    })
}

/// Requests `pgn` from `destination` (255 = all); ends with `REQUEST_DONE`.
///
/// # Safety
/// `e` as [`canx_j1939_start`].
#[no_mangle]
pub unsafe extern "C" fn canx_j1939_request(e: *mut c_void, now_us: u64, pgn_raw: u32, destination: u8) -> i32 {
    with_engine!(e, i32, |ecu| {
        let Some(pgn) = pgn(pgn_raw) else { return CANX_EINVAL };
        status(ecu.request(Instant::from_micros(now_us), pgn, destination))
    })
}

/// Reports requests for `pgn` as `REQUEST` events (answer with
/// [`canx_j1939_respond`]); unregistered PGNs are NACKed when requested
/// from this CA. `CANX_EFULL` above 8 PGNs.
///
/// # Safety
/// `e` as [`canx_j1939_start`].
#[no_mangle]
pub unsafe extern "C" fn canx_j1939_register(e: *mut c_void, pgn_raw: u32) -> i32 {
    with_engine!(e, i32, |ecu| {
        let Some(pgn) = pgn(pgn_raw) else { return CANX_EINVAL };
        status(ecu.register(pgn, Responder::Application))
    })
}

/// Answers a request: `global` as the request's `CANX_EVF_GLOBAL`.
/// Errors as [`canx_j1939_send`].
///
/// # Safety
/// As [`canx_j1939_send`].
#[no_mangle]
pub unsafe extern "C" fn canx_j1939_respond(
    e: *mut c_void,
    pgn_raw: u32,
    requester: u8,
    global: u8,
    data: *const u8,
    len: u32,
) -> i32 {
    with_engine!(e, i32, |ecu| {
        // SAFETY: the caller's contract on `data`/`len`.
        let Some(data) = (unsafe { bytes(data, len as usize) }) else { return CANX_EARG };
        let Some(pgn) = pgn(pgn_raw) else { return CANX_EINVAL };
        if data.len() > 1785 {
            return CANX_ETOOLONG;
        }
        status(ecu.respond(pgn, requester, global != 0, data))
    })
}

/// EEC1 (PGN 61444) payload with engine speed `rpm_x8` (0.125 rpm/bit,
/// SPN 190, J1939-71; 0xFFFF = not available) into `out[8]`.
/// `CANX_EINVAL` above 0xFAFF (except 0xFFFF).
///
/// # Safety
/// `out` null or 8 writable bytes.
#[no_mangle]
pub unsafe extern "C" fn canx_eec1_encode(rpm_x8: u16, out: *mut u8) -> i32 {
    if rpm_x8 > 0xFAFF && rpm_x8 != 0xFFFF {
        return CANX_EINVAL;
    }
    // SAFETY: the caller's contract on `out`.
    let Some(out) = (unsafe { bytes_mut(out, 8) }) else { return CANX_EARG };
    out.copy_from_slice(&eec1::encode((rpm_x8 != 0xFFFF).then_some(rpm_x8)));
    CANX_OK
}

/// Raw engine speed (0.125 rpm/bit) of an EEC1 payload, or `CANX_EINVAL`
/// (short or not available).
///
/// # Safety
/// `data` as `bytes`.
#[no_mangle]
pub unsafe extern "C" fn canx_eec1_decode(data: *const u8, len: u32) -> i32 {
    // SAFETY: the caller's contract on `data`/`len`.
    let Some(data) = (unsafe { bytes(data, len as usize) }) else { return CANX_EARG };
    eec1::engine_speed_raw(data).map_or(CANX_EINVAL, i32::from)
}

/// ET1 (PGN 65262) payload: coolant and fuel temperature in degC
/// (-40..=210; `i16::MIN` = not available) into `out[8]`.
///
/// # Safety
/// `out` null or 8 writable bytes.
#[no_mangle]
pub unsafe extern "C" fn canx_et1_encode(coolant_deg_c: i16, fuel_deg_c: i16, out: *mut u8) -> i32 {
    let ok = |t: i16| t == i16::MIN || (-40..=210).contains(&t);
    if !ok(coolant_deg_c) || !ok(fuel_deg_c) {
        return CANX_EINVAL;
    }
    let opt = |t: i16| (t != i16::MIN).then_some(t);
    // SAFETY: the caller's contract on `out`.
    let Some(out) = (unsafe { bytes_mut(out, 8) }) else { return CANX_EARG };
    out.copy_from_slice(&et1::encode(opt(coolant_deg_c), opt(fuel_deg_c)));
    CANX_OK
}

/// Coolant temperature (degC) of an ET1 payload, or `CANX_EINVAL`.
///
/// # Safety
/// `data` as `bytes`.
#[no_mangle]
pub unsafe extern "C" fn canx_et1_coolant(data: *const u8, len: u32) -> i32 {
    // SAFETY: the caller's contract on `data`/`len`.
    let Some(data) = (unsafe { bytes(data, len as usize) }) else { return CANX_EARG };
    et1::coolant_temperature(data).map_or(CANX_EINVAL, i32::from)
}

/// VIN payload (PGN 65260, "VIN*") of `vin` into `out` (`cap` bytes);
/// returns its length or `CANX_EINVAL`/`CANX_ETOOLONG`.
///
/// # Safety
/// `vin` as `bytes`; `out` as `bytes_mut`.
#[no_mangle]
pub unsafe extern "C" fn canx_vin_encode(vin_ptr: *const u8, vin_len: u32, out: *mut u8, cap: u32) -> i32 {
    // SAFETY: the caller's contracts on both buffers.
    let (Some(v), Some(out)) = (unsafe { bytes(vin_ptr, vin_len as usize) }, unsafe { bytes_mut(out, cap as usize) })
    else {
        return CANX_EARG;
    };
    let Ok(v) = core::str::from_utf8(v) else { return CANX_EINVAL };
    match vin::encode(v, out) {
        Ok(n) => n as i32,
        Err(vin::VinError::BufferTooSmall) => CANX_ETOOLONG,
        Err(_) => CANX_EINVAL,
    }
}

/// Length of the VIN in a VIN payload (its first bytes), or `CANX_EINVAL`.
///
/// # Safety
/// `data` as `bytes`.
#[no_mangle]
pub unsafe extern "C" fn canx_vin_decode(data: *const u8, len: u32) -> i32 {
    // SAFETY: the caller's contract on `data`/`len`.
    let Some(data) = (unsafe { bytes(data, len as usize) }) else { return CANX_EARG };
    vin::decode(data).map_or(CANX_EINVAL, |v| v.len() as i32)
}

/// DM1/DM2 payload (J1939-73 5.7.1): lamp byte, flash byte and `n` DTCs
/// (J1939-73 5.7.1.5 bytes as a little-endian u32: SPN bits 0..15, FMI << 16,
/// SPN bits 16..18 << 21, OC << 24, CM << 31; `Dtc::to_u32`)
/// into `out` (`cap` bytes); returns its length (8, or 2 + 4n above one
/// DTC) or `CANX_ETOOLONG` (more than 16 DTCs or `cap` too small).
///
/// # Safety
/// `dtcs` null with `n == 0` or `n` readable u32s; `out` as `bytes_mut`.
#[no_mangle]
pub unsafe extern "C" fn canx_dm1_encode(
    lamps: u8,
    flash: u8,
    dtcs: *const u32,
    n: u32,
    out: *mut u8,
    cap: u32,
) -> i32 {
    // SAFETY: the caller's contract on `out`/`cap`.
    let Some(out) = (unsafe { bytes_mut(out, cap as usize) }) else { return CANX_EARG };
    if n > 0 && dtcs.is_null() {
        return CANX_EARG;
    }
    let mut list = [Dtc::from_u32(0); 16];
    if n as usize > list.len() {
        return CANX_ETOOLONG;
    }
    for (i, slot) in list.iter_mut().enumerate().take(n as usize) {
        // SAFETY: i < n, within the caller's `n` readable u32s (unaligned
        // read: the glue may pass any buffer).
        *slot = Dtc::from_u32(unsafe { dtcs.add(i).read_unaligned() });
    }
    match emit_dm(Lamps::from_byte(lamps), Lamps::from_byte(flash), &list[..n as usize], out) {
        Ok(len) => len as i32,
        Err(_) => CANX_ETOOLONG,
    }
}

#[cfg(not(test))]
extern "C" {
    /// Provided by the C glue: report and stop (reset on a board, abort()
    /// on unix). Must not return and must not raise (no nlr_raise).
    fn canx_mpy_fatal() -> !;
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_: &core::panic::PanicInfo<'_>) -> ! {
    // SAFETY: the glue's contract: canx_mpy_fatal never returns nor unwinds.
    unsafe { canx_mpy_fatal() }
}

#[cfg(all(test, feature = "small", feature = "full"))]
mod tests;
