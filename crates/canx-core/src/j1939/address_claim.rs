//! J1939-81 address claim: [`AddressClaimer`] for one NAME, and the live
//! NAME <-> address [`AddressTable`] of the bus.
//!
//! Rules (J1939-81 4.4, as summarized in the project's j1939.md):
//! - Address Claimed is PGN 60928 to global, 8 bytes = NAME little-endian
//!   (`18EEFFxx`); Cannot Claim is the same PGN from the NULL address 254.
//! - After sending a claim the CA waits 250 ms before using the address
//!   ([`CLAIM_WAIT`]); contention during the wait or later is resolved by
//!   NAME: the numerically lower NAME wins. The winner re-sends its claim.
//! - A loser that is arbitrary-address capable claims the next free address
//!   of [`ClaimConfig::range`] (as known from the table); otherwise, or when
//!   the range is full, it sends Cannot Claim at once.
//! - A Request for Address Claim (PGN 59904 asking for 60928, global or to
//!   our address) is answered with our claim; a CA without an address
//!   answers with Cannot Claim after a pseudo-random delay of 0..=153 ms
//!   (0.6 ms x 0..=255, from the caller's seed: deterministic).
//! - Commanded Address (PGN 65240, 9 bytes: NAME + new SA, arrives by TP):
//!   the CA with that NAME claims the new address.
//!
//! The claimer never reads a clock: drive it like every engine (see
//! [`AddressClaimer::poll_timeout`]).

use core::fmt;

use super::id::{frame, J1939Id, Pgn, GLOBAL_ADDRESS, MAX_UNICAST_ADDRESS, NULL_ADDRESS};
use super::name::Name;
use super::{Ring, XorShift32};
use crate::frame::{CanFrame, Frame};
use crate::time::{Duration, Instant};

/// Wait after a claim before the address may be used, J1939-81 4.4.4.3.
pub const CLAIM_WAIT: Duration = Duration::from_millis(250);
/// Delay before a claim that could not be sent is sent again (a full
/// transmit queue, bus-off, interface down: see
/// [`AddressClaimer::claim_not_sent`]). Not from J1939-81, which leaves a
/// failed transmission to the CAN controller's retries; 250 ms keeps a
/// bus-off node from retrying in a tight loop.
pub const CLAIM_RESEND: Duration = Duration::from_millis(250);
/// Step of the Cannot Claim delay: 0.6 ms x a random byte = 0..=153 ms.
pub const CANNOT_CLAIM_STEP: Duration = Duration::from_micros(600);
/// Priority of Address Claimed / Cannot Claim (J1939-81: 6).
pub const CLAIM_PRIORITY: u8 = 6;

/// The Address Claimed frame of `name` at `source` (254 for Cannot Claim).
pub fn claim_frame(name: Name, source: u8) -> CanFrame {
    frame(CLAIM_PRIORITY, Pgn::ADDRESS_CLAIMED, source, GLOBAL_ADDRESS, &name.to_bytes())
}

/// A Request for Address Claim from `source` (254 before owning an address)
/// to `destination` (255 for all): `18EAFFFE#00EE00`.
pub fn request_for_address_claim(source: u8, destination: u8) -> CanFrame {
    frame(CLAIM_PRIORITY, Pgn::REQUEST, source, destination, &Pgn::ADDRESS_CLAIMED.to_le_bytes())
}

/// The 9-byte Commanded Address payload (NAME LE + new source address).
pub fn commanded_address_payload(target: Name, new_address: u8) -> [u8; 9] {
    let n = target.to_bytes();
    [n[0], n[1], n[2], n[3], n[4], n[5], n[6], n[7], new_address]
}

/// A change of the bus table.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TableEvent {
    /// `name` now holds `address`.
    Added { address: u8, name: Name },
    /// `name` no longer holds `address` (moved, lost, or Cannot Claim).
    Removed { address: u8, name: Name },
}

/// Capacity of the bus table by default: every unicast address 0..=253.
pub const FULL_TABLE: usize = 254;

/// The NAME of every claimed address seen on the bus, for at most `N`
/// addresses (const generic; default [`FULL_TABLE`], 254 entries of 9 bytes,
/// about 2.2 KiB). A board that needs the RAM picks a smaller `N`: claims
/// that find the table full are not recorded and are counted
/// ([`AddressTable::dropped`]); the claimer's own contention does not depend
/// on the table.
#[derive(Clone)]
pub struct AddressTable<const N: usize = FULL_TABLE> {
    /// Address of each slot; [`EMPTY`] for a free slot.
    addrs: [u8; N],
    /// NAME of each slot (raw value).
    names: [u64; N],
    dropped: u32,
}

/// Marks a free slot (255 is the global address, never a claimed one).
const EMPTY: u8 = 0xFF;

impl<const N: usize> fmt::Debug for AddressTable<N> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map().entries(self.iter()).finish()
    }
}

impl<const N: usize> Default for AddressTable<N> {
    fn default() -> Self {
        Self::with_capacity()
    }
}

impl AddressTable {
    /// An empty table for every address (254 entries).
    pub const fn new() -> Self {
        Self::with_capacity()
    }
}

impl<const N: usize> AddressTable<N> {
    /// An empty table of `N` entries (`AddressTable::<16>::with_capacity()`).
    pub const fn with_capacity() -> Self {
        AddressTable { addrs: [EMPTY; N], names: [0; N], dropped: 0 }
    }
    fn slot_of_address(&self, address: u8) -> Option<usize> {
        if address == EMPTY {
            return None;
        }
        self.addrs.iter().position(|&a| a == address)
    }
    /// The NAME at `address`, if one claimed it.
    pub fn name_at(&self, address: u8) -> Option<Name> {
        self.slot_of_address(address).map(|i| Name::from_u64(self.names[i]))
    }
    /// The address `name` holds, if any.
    pub fn address_of(&self, name: Name) -> Option<u8> {
        let raw = name.to_u64();
        (0..N).find(|&i| self.addrs[i] != EMPTY && self.names[i] == raw).map(|i| self.addrs[i])
    }
    /// (address, NAME) of every entry, by address.
    pub fn iter(&self) -> impl Iterator<Item = (u8, Name)> + '_ {
        (0..=MAX_UNICAST_ADDRESS).filter_map(move |a| self.name_at(a).map(|n| (a, n)))
    }
    pub fn len(&self) -> usize {
        self.addrs.iter().filter(|&&a| a != EMPTY).count()
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    pub fn clear(&mut self) {
        self.addrs = [EMPTY; N];
    }
    /// Claims not recorded because the table was full.
    pub fn dropped(&self) -> u32 {
        self.dropped
    }

    /// Records an Address Claimed of `name` at `address`: the NAME leaves
    /// any other address; it takes `address` unless a lower NAME holds it
    /// (that claimant will lose contention). Reports changes through `out`.
    pub fn observe_claim(&mut self, address: u8, name: Name, mut out: impl FnMut(TableEvent)) {
        if address > MAX_UNICAST_ADDRESS {
            return;
        }
        let raw = name.to_u64();
        for i in 0..N {
            if self.addrs[i] != EMPTY && self.names[i] == raw && self.addrs[i] != address {
                out(TableEvent::Removed { address: self.addrs[i], name });
                self.addrs[i] = EMPTY;
            }
        }
        match self.slot_of_address(address) {
            Some(i) => {
                let held = Name::from_u64(self.names[i]);
                if held > name {
                    out(TableEvent::Removed { address, name: held });
                    self.names[i] = raw;
                    out(TableEvent::Added { address, name });
                }
            }
            None => match self.addrs.iter().position(|&a| a == EMPTY) {
                Some(i) => {
                    self.addrs[i] = address;
                    self.names[i] = raw;
                    out(TableEvent::Added { address, name });
                }
                None => self.dropped = self.dropped.saturating_add(1),
            },
        }
    }

    /// Records a Cannot Claim of `name`: it holds no address.
    pub fn observe_cannot_claim(&mut self, name: Name, mut out: impl FnMut(TableEvent)) {
        let raw = name.to_u64();
        for i in 0..N {
            if self.addrs[i] != EMPTY && self.names[i] == raw {
                out(TableEvent::Removed { address: self.addrs[i], name });
                self.addrs[i] = EMPTY;
            }
        }
    }
}

/// Settings of one claimer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ClaimConfig {
    pub name: Name,
    /// The address claimed first (0..=253).
    pub preferred_address: u8,
    /// Inclusive range searched after losing contention, if the NAME is
    /// arbitrary-address capable (default 128..=247, J1939's
    /// self-configurable range).
    pub range: (u8, u8),
    /// Seed of the pseudo-random Cannot Claim delay.
    pub seed: u32,
}

impl ClaimConfig {
    /// Defaults: range 128..=247, seed from the NAME.
    pub const fn new(name: Name, preferred_address: u8) -> Self {
        let v = name.to_u64();
        ClaimConfig { name, preferred_address, range: (128, 247), seed: (v ^ (v >> 32)) as u32 }
    }
}

/// An invalid [`ClaimConfig`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClaimConfigError {
    /// Preferred address above 253.
    Address,
    /// Range empty or above 253.
    Range,
}

impl fmt::Display for ClaimConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ClaimConfigError::Address => "preferred address must be 0-253",
            ClaimConfigError::Range => "address range must be a non-empty part of 0-253",
        })
    }
}

impl core::error::Error for ClaimConfigError {}

/// Where the claimer stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ClaimState {
    /// Not started: silent on the bus.
    Idle,
    /// Claim sent at `since`; usable at `since + 250 ms` if not contested.
    Claiming { address: u8, since: Instant },
    /// The address is ours.
    Claimed { address: u8 },
    /// No address: Cannot Claim sent.
    CannotClaim,
}

/// What the claimer reports.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ClaimEvent {
    /// The 250 ms wait passed: `address` may be used.
    Claimed { address: u8 },
    /// `address` was lost to `winner` (a lower NAME); a new claim or Cannot
    /// Claim follows.
    Lost { address: u8, winner: Name },
    /// No address could be claimed; Cannot Claim was sent.
    CannotClaim,
    /// The bus table changed.
    Table(TableEvent),
}

#[derive(Clone, Copy)]
enum Timer {
    ClaimWait = 0,
    CannotClaimReply = 1,
    ClaimResend = 2,
}
const TIMERS: usize = 3;

/// The J1939-81 address-claim state machine of one NAME (see module doc).
#[derive(Debug)]
pub struct AddressClaimer<const T: usize = FULL_TABLE> {
    config: ClaimConfig,
    state: ClaimState,
    timers: [Option<Instant>; TIMERS],
    tx: Ring<CanFrame, 8>,
    events: Ring<ClaimEvent, 32>,
    rng: XorShift32,
    table: AddressTable<T>,
    claims_not_sent: u32,
}

impl AddressClaimer {
    /// A claimer in state [`ClaimState::Idle`] with a full bus table (254
    /// entries). Errors: [`ClaimConfigError`].
    pub fn new(config: ClaimConfig) -> Result<Self, ClaimConfigError> {
        Self::with_capacity(config)
    }
}

impl<const T: usize> AddressClaimer<T> {
    /// A claimer whose bus table holds `T` entries (`AddressClaimer::<16>::with_capacity(cfg)`).
    /// Errors: [`ClaimConfigError`].
    pub fn with_capacity(config: ClaimConfig) -> Result<Self, ClaimConfigError> {
        if config.preferred_address > MAX_UNICAST_ADDRESS {
            return Err(ClaimConfigError::Address);
        }
        let (lo, hi) = config.range;
        if lo > hi || hi > MAX_UNICAST_ADDRESS {
            return Err(ClaimConfigError::Range);
        }
        Ok(AddressClaimer {
            config,
            state: ClaimState::Idle,
            timers: [None; TIMERS],
            tx: Ring::new(),
            events: Ring::new(),
            rng: XorShift32::new(config.seed),
            table: AddressTable::with_capacity(),
            claims_not_sent: 0,
        })
    }

    pub fn name(&self) -> Name {
        self.config.name
    }
    pub fn state(&self) -> ClaimState {
        self.state
    }
    /// The address, once claimed (after the 250 ms wait).
    pub fn address(&self) -> Option<u8> {
        match self.state {
            ClaimState::Claimed { address } => Some(address),
            _ => None,
        }
    }
    /// The address claimed or being claimed.
    pub fn claiming_address(&self) -> Option<u8> {
        match self.state {
            ClaimState::Claimed { address } | ClaimState::Claiming { address, .. } => Some(address),
            _ => None,
        }
    }
    /// The live bus table (includes this CA's own claim).
    pub fn table(&self) -> &AddressTable<T> {
        &self.table
    }
    /// Events dropped because the queue (32) was full.
    pub fn dropped_events(&self) -> u32 {
        self.events.dropped()
    }

    /// Claim frames the driver reported as not sent ([`Self::claim_not_sent`]).
    pub fn claims_not_sent(&self) -> u32 {
        self.claims_not_sent
    }

    /// The driver could not send `frame`, a frame this claimer produced
    /// (transmit queue full, bus-off, interface down). J1939-81 4.4.4.3
    /// counts the 250 ms wait from the Address Claimed message's
    /// transmission, so a claim that never left claims nothing: the wait is
    /// cancelled, the state stays (or goes back to) `Claiming`, and the
    /// claim is sent again after [`CLAIM_RESEND`]. Returns whether `frame`
    /// was this claimer's current claim (other frames are ignored).
    pub fn claim_not_sent(&mut self, now: Instant, frame: &Frame) -> bool {
        let Some((id, data)) = J1939Id::from_frame(frame) else { return false };
        let address = match self.state {
            ClaimState::Claiming { address, .. } | ClaimState::Claimed { address } => address,
            _ => return false,
        };
        if id.pgn != Pgn::ADDRESS_CLAIMED || id.source != address || data != self.config.name.to_bytes() {
            return false;
        }
        let since = match self.state {
            ClaimState::Claiming { since, .. } => since,
            _ => now,
        };
        self.state = ClaimState::Claiming { address, since };
        self.timers[Timer::ClaimWait as usize] = None;
        self.timers[Timer::ClaimResend as usize] = Some(now + CLAIM_RESEND);
        self.claims_not_sent = self.claims_not_sent.saturating_add(1);
        true
    }

    /// Claims the preferred address (again, from any state).
    pub fn start(&mut self, now: Instant) {
        let a = self.config.preferred_address;
        self.claim(now, a);
    }

    /// Feeds one bus frame; only Address Claimed and Request frames matter.
    pub fn handle_frame(&mut self, now: Instant, frame: &Frame) {
        if let Some((id, data)) = J1939Id::from_frame(frame) {
            self.handle_j1939(now, &id, data);
        }
    }

    /// As [`AddressClaimer::handle_frame`] for a decoded message.
    pub fn handle_j1939(&mut self, now: Instant, id: &J1939Id, data: &[u8]) {
        if id.pgn == Pgn::ADDRESS_CLAIMED {
            if let Ok(b) = <[u8; 8]>::try_from(data) {
                self.on_claim(now, id.source, Name::from_bytes(b));
            }
        } else if id.pgn == Pgn::REQUEST && data.len() >= 3 {
            let asked = Pgn::from_le_bytes([data[0], data[1], data[2]]);
            let to_us = id.is_global() || Some(id.destination) == self.claiming_address();
            if asked == Some(Pgn::ADDRESS_CLAIMED) && to_us {
                self.on_request(now);
            }
        }
    }

    /// Handles a Commanded Address payload (received by TP): if the NAME is
    /// ours and the address is 0..=253, claims it. Returns `true` if acted on.
    pub fn handle_commanded_address(&mut self, now: Instant, data: &[u8]) -> bool {
        let Some(name) = data.get(..8).and_then(|b| <[u8; 8]>::try_from(b).ok()) else { return false };
        match data.get(8) {
            Some(&new) if Name::from_bytes(name) == self.config.name && new <= MAX_UNICAST_ADDRESS => {
                self.claim(now, new);
                true
            }
            _ => false,
        }
    }

    /// Runs expired timers. Extra calls are harmless.
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.timers[Timer::ClaimWait as usize].is_some_and(|t| t <= now) {
            self.timers[Timer::ClaimWait as usize] = None;
            if let ClaimState::Claiming { address, .. } = self.state {
                self.state = ClaimState::Claimed { address };
                self.events.push_counted(ClaimEvent::Claimed { address });
            }
        }
        if self.timers[Timer::ClaimResend as usize].is_some_and(|t| t <= now) {
            self.timers[Timer::ClaimResend as usize] = None;
            if let ClaimState::Claiming { address, .. } = self.state {
                self.claim(now, address);
            }
        }
        if self.timers[Timer::CannotClaimReply as usize].is_some_and(|t| t <= now) {
            self.timers[Timer::CannotClaimReply as usize] = None;
            if self.state == ClaimState::CannotClaim {
                self.tx.push_counted(claim_frame(self.config.name, NULL_ADDRESS));
            }
        }
    }

    /// The next frame to send. Changes after `start`, `handle_*`.
    pub fn poll_transmit(&mut self, _now: Instant) -> Option<CanFrame> {
        self.tx.pop()
    }

    pub fn poll_event(&mut self) -> Option<ClaimEvent> {
        self.events.pop()
    }

    /// End of the claim wait or of the Cannot Claim delay.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.timers.iter().flatten().min().copied()
    }

    fn claim(&mut self, now: Instant, address: u8) {
        self.state = ClaimState::Claiming { address, since: now };
        self.timers[Timer::ClaimWait as usize] = Some(now + CLAIM_WAIT);
        self.timers[Timer::CannotClaimReply as usize] = None;
        self.timers[Timer::ClaimResend as usize] = None;
        self.tx.push_counted(claim_frame(self.config.name, address));
        let events = &mut self.events;
        self.table.observe_claim(address, self.config.name, |e| {
            events.push_counted(ClaimEvent::Table(e));
        });
    }

    fn on_claim(&mut self, now: Instant, source: u8, name: Name) {
        if name == self.config.name {
            return; // our own frame, echoed
        }
        let events = &mut self.events;
        match source {
            NULL_ADDRESS => {
                self.table.observe_cannot_claim(name, |e| {
                    events.push_counted(ClaimEvent::Table(e));
                });
                return;
            }
            GLOBAL_ADDRESS => return,
            _ => self.table.observe_claim(source, name, |e| {
                events.push_counted(ClaimEvent::Table(e));
            }),
        }
        if self.claiming_address() != Some(source) {
            return;
        }
        if name < self.config.name {
            self.lose(now, source, name);
        } else {
            // We win: defend the address.
            self.tx.push_counted(claim_frame(self.config.name, source));
            let events = &mut self.events;
            self.table.observe_claim(source, self.config.name, |e| {
                events.push_counted(ClaimEvent::Table(e));
            });
        }
    }

    fn lose(&mut self, now: Instant, address: u8, winner: Name) {
        self.events.push_counted(ClaimEvent::Lost { address, winner });
        if self.config.name.arbitrary_address_capable() {
            if let Some(next) = self.free_address_after(address) {
                self.claim(now, next);
                return;
            }
        }
        self.state = ClaimState::CannotClaim;
        self.timers = [None; TIMERS];
        self.tx.push_counted(claim_frame(self.config.name, NULL_ADDRESS));
        self.events.push_counted(ClaimEvent::CannotClaim);
    }

    /// The first address of the range after `lost` (cyclic) that nobody holds.
    fn free_address_after(&self, lost: u8) -> Option<u8> {
        let (lo, hi) = self.config.range;
        let span = u16::from(hi) - u16::from(lo) + 1;
        let start = if (lo..=hi).contains(&lost) { u16::from(lost) - u16::from(lo) + 1 } else { 0 };
        (0..span)
            .map(|k| (u16::from(lo) + (start + k) % span) as u8)
            .find(|&a| a != lost && self.table.name_at(a).is_none())
    }

    fn on_request(&mut self, now: Instant) {
        match self.state {
            ClaimState::Claiming { address, .. } | ClaimState::Claimed { address } => {
                self.tx.push_counted(claim_frame(self.config.name, address));
            }
            ClaimState::CannotClaim => {
                if self.timers[Timer::CannotClaimReply as usize].is_none() {
                    let delay = CANNOT_CLAIM_STEP.saturating_mul(self.rng.next_u32() & 0xFF);
                    self.timers[Timer::CannotClaimReply as usize] = Some(now + delay);
                }
            }
            ClaimState::Idle => {}
        }
    }
}

impl<const T: usize> crate::driver::Events for AddressClaimer<T> {
    type Event<'a> = ClaimEvent;
    fn poll_event(&mut self) -> Option<ClaimEvent> {
        AddressClaimer::poll_event(self)
    }
}

#[cfg(test)]
mod tests;
