//! ISO-TP, ISO 15765-2:2016 (the transport under UDS and OBD-II): one
//! [`Channel`] per address pair, sans-IO like every canx engine.
//!
//! - [`pci`]: the N_PCI codec (SF with the CAN FD escape, FF with 12-bit and
//!   32-bit FF_DL, CF, FC), a strict parser that names its reason.
//! - [`address`]: normal 11/29-bit, normal fixed (`0x18DA`/`0x18DB`),
//!   extended and mixed (`0x18CE`/`0x18CD`) addressing, physical and
//!   functional.
//! - [`Channel`]: one N_AI's sender and receiver: BS, STmin (the 100-900 µs
//!   range, reserved values read as 127 ms), FC.WAIT with N_WFTmax, the
//!   N_As/N_Ar/N_Bs/N_Cr timers, padding, Table 23's rules for unexpected
//!   N_PDUs, FC.OVFLW when FF_DL exceeds the receive buffer. Events carry
//!   the standard's [`NResult`].
//!
//! The facts and their sources are in `docs/protocols/isotp.md`.
//!
//! ## Driving a channel
//! Frames and the time go in ([`Channel::handle_frame`],
//! [`Channel::handle_timeout`]), frames ([`Channel::poll_transmit`]),
//! events ([`Channel::poll_event`]) and the next deadline
//! ([`Channel::poll_timeout`]) come out. A host with many channels (a
//! tester talking to many ECUs) keeps one `Channel` per ECU and offers every
//! received frame to each; a channel drops foreign frames after comparing
//! the identifier (and the address byte), which costs a few instructions.
//!
//! ```
//! use canx_core::isotp::{Address, Channel, Config, Event, TargetAddressType};
//! use canx_core::Instant;
//!
//! let tester = Address::normal_11(0x7E0, 0x7E8).unwrap();
//! let ecu = Address::normal_11(0x7E8, 0x7E0).unwrap();
//! let (mut rx_a, mut tx_a, mut rx_b, mut tx_b) = ([0u8; 64], [0u8; 64], [0u8; 64], [0u8; 64]);
//! let mut a = Channel::new(Config::new(tester), &mut rx_a[..], &mut tx_a[..]).unwrap();
//! let mut b = Channel::new(Config::new(ecu), &mut rx_b[..], &mut tx_b[..]).unwrap();
//! let now = Instant::ZERO;
//! let msg: Vec<u8> = (1..=20).collect(); // an FF and two CFs
//! a.send(now, &msg, TargetAddressType::Physical).unwrap();
//! for _ in 0..10 {
//!     while let Some(f) = a.poll_transmit(now) { b.handle_frame(now, &f); }
//!     while let Some(f) = b.poll_transmit(now) { a.handle_frame(now, &f); }
//! }
//! assert!(matches!(b.poll_event(), Some(Event::FirstFrameReceived { len: 20, .. })));
//! assert!(matches!(b.poll_event(), Some(Event::Received(d, TargetAddressType::Physical)) if d == &msg[..]));
//! assert!(matches!(a.poll_event(), Some(Event::SendComplete)));
//! ```

use core::fmt;

pub mod address;
mod channel;
pub mod fuzzing;
pub mod pci;

#[cfg(test)]
mod sim_tests;
#[cfg(test)]
mod tests;

pub use address::{Address, AddressError, AddressingMode, TargetAddressType};
pub use channel::{Channel, EVENT_QUEUE};
pub use pci::{FlowStatus, PciError, Pdu, PduKind};

use crate::time::Duration;

/// N_Result (ISO 15765-2:2016; `docs/protocols/isotp.md` §7): how a transfer ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum NResult {
    /// N_OK: completed.
    NOk,
    /// N_TIMEOUT_A: N_As (sender) or N_Ar (receiver) expired: a frame was
    /// not handed to the bus in time.
    NTimeoutA,
    /// N_TIMEOUT_Bs: the sender waited longer than N_Bs for an FC.
    NTimeoutBs,
    /// N_TIMEOUT_Cr: the receiver waited longer than N_Cr for a CF.
    NTimeoutCr,
    /// N_WRONG_SN: a CF with an unexpected sequence number.
    NWrongSn,
    /// N_INVALID_FS: an FC with a reserved FlowStatus (or OVFLW after the first FC).
    NInvalidFs,
    /// N_UNEXP_PDU: a reception was ended by a new SF or FF (isotp.md §6, Table 23).
    NUnexpPdu,
    /// N_WFT_OVRN: more consecutive FC.WAIT than N_WFTmax (sent by this
    /// receiver, or, with [`Config::tx_wft_max`], received by this sender).
    NWftOvrn,
    /// N_BUFFER_OVFLW: the receiver answered the FF with FC.OVFLW (sender
    /// side), or this receiver did because FF_DL exceeded its buffer.
    NBufferOvflw,
    /// N_ERROR: any other error (here: padding checks on receive failed).
    NError,
}

impl NResult {
    /// The standard's name, e.g. `"N_TIMEOUT_Bs"`.
    pub const fn name(self) -> &'static str {
        match self {
            NResult::NOk => "N_OK",
            NResult::NTimeoutA => "N_TIMEOUT_A",
            NResult::NTimeoutBs => "N_TIMEOUT_Bs",
            NResult::NTimeoutCr => "N_TIMEOUT_Cr",
            NResult::NWrongSn => "N_WRONG_SN",
            NResult::NInvalidFs => "N_INVALID_FS",
            NResult::NUnexpPdu => "N_UNEXP_PDU",
            NResult::NWftOvrn => "N_WFT_OVRN",
            NResult::NBufferOvflw => "N_BUFFER_OVFLW",
            NResult::NError => "N_ERROR",
        }
    }
}

impl fmt::Display for NResult {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// What a [`Channel`] reports; [`Event::Received`] borrows the channel
/// until the next call, so a host copies the data it keeps.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Event<'a> {
    /// An FF started a reception of `len` bytes (N_USData_FF.indication),
    /// which lets UDS start its P2 timer early.
    FirstFrameReceived { len: u32, ta_type: TargetAddressType },
    /// A complete message (N_USData.indication with N_OK).
    Received(&'a [u8], TargetAddressType),
    /// The message given to [`Channel::send`] went out completely
    /// (N_USData.confirm with N_OK).
    SendComplete,
    /// The send failed (N_USData.confirm with this result); the channel is
    /// ready for the next `send`.
    TxError(NResult),
    /// A reception failed (N_USData.indication with this result); its bytes are dropped.
    RxError(NResult),
    /// An N_PDU for this channel that Table 23 says to ignore (a CF or FC
    /// nobody waits for, a functional FF, an SF/FF during a half-duplex
    /// send). The standard reports nothing; canx tells, and carries on.
    UnexpectedPdu { kind: PduKind, ta_type: TargetAddressType },
}

/// Settings of a [`Channel`]. [`Config::new`] gives the standard's and
/// Linux's defaults: classic CAN (TX_DL 8), no padding, BS 0, STmin 0,
/// N_WFTmax 0, every timer 1000 ms.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Config {
    /// Identifiers and address bytes.
    pub address: Address,
    /// Send CAN FD frames (and accept them). Default `false`.
    pub fd: bool,
    /// Bit rate switch on the FD frames sent. Default `false`.
    pub brs: bool,
    /// TX_DL, bytes per frame sent: 8 (classic; also allowed with FD) or an
    /// FD length 12, 16, 20, 24, 32, 48, 64 (isotp.md §4). Default 8.
    pub tx_dl: u8,
    /// Padding byte for SF, FC and the last CF (0xCC is the standard's
    /// suggestion). `None`: frames of 8 bytes or fewer keep their length
    /// (data optimisation); longer FD frames are padded with 0xCC anyway,
    /// padding being mandatory there (isotp.md §4). Default `None`.
    pub padding: Option<u8>,
    /// BS this receiver puts in its FCs: CFs per block, 0 = no further FC.
    pub bs: u8,
    /// Raw STmin byte this receiver puts in its FCs (isotp.md §2: 0x00..=0x7F
    /// ms, 0xF1..=0xF9 100..=900 µs).
    pub stmin: u8,
    /// Sender: use this gap between CFs instead of the receiver's STmin
    /// (Linux `CAN_ISOTP_FORCE_TXSTMIN`). Default `None`.
    pub stmin_override: Option<Duration>,
    /// N_WFTmax of this receiver: how many FC.WAIT it may send in a row
    /// while its buffer still holds an unread message (isotp.md §2, §8; the receiver
    /// then reports N_WFT_OVRN). 0: never wait; an unread multi-frame
    /// message is dropped (counted in [`Stats::rx_unread_dropped`]) when the next FF arrives.
    pub wft_max: u8,
    /// Sender: the most FC.WAIT accepted in a row before giving up with
    /// N_WFT_OVRN (python-can-isotp's and Zephyr's sender-side N_WFTmax).
    /// `None`: unlimited, as Linux. Default `None`.
    pub tx_wft_max: Option<u8>,
    /// N_As: the sender's SF/FF/CF must be handed out by
    /// [`Channel::poll_transmit`] within this time of becoming due, else N_TIMEOUT_A.
    pub n_as: Duration,
    /// N_Ar: the receiver's FC must be handed out within this time, else N_TIMEOUT_A.
    pub n_ar: Duration,
    /// N_Bs: the sender's wait for an FC (after the FF, a block, a WAIT), else N_TIMEOUT_Bs.
    pub n_bs: Duration,
    /// N_Br: the receiver's delay before its next FC (a performance
    /// bound). While waiting for room this receiver repeats FC.WAIT every
    /// N_Br / 2, so each arrives well within the sender's N_Bs.
    pub n_br: Duration,
    /// N_Cs: the sender's delay before its next CF (a performance bound;
    /// canx sends each CF at its STmin slot, and N_As bounds the rest).
    pub n_cs: Duration,
    /// N_Cr: the receiver's wait for the next CF, else N_TIMEOUT_Cr.
    pub n_cr: Duration,
    /// Receiver: the FC.CTS that follows the last CF of a block (BS > 0)
    /// is handed out no earlier than this after that CF arrived. Default
    /// [`DEFAULT_BLOCK_FC_DELAY`] (300 µs).
    ///
    /// Why: a sender may enter its wait for the FC only once its own last
    /// CF is confirmed. Linux's can-isotp does (`isotp_rcv_echo` sets
    /// `ISOTP_WAIT_FC` when the CF's echo comes back), and ignores an FC
    /// that arrives earlier (`isotp_rcv_fc`); a receiver on another CPU that
    /// answers at once can win that race and the transfer stalls until
    /// N_Bs/N_Cr expire (`docs/protocols/isotp.md` §3, §8). The delay is
    /// part of N_Br, the receiver's time until its next FC, which
    /// ISO 15765-2:2016 §9.8 (network layer timing) bounds only as a
    /// performance budget (N_Br + N_Ar < 0.9 N_Bs, about 900 ms with the
    /// defaults), not as a minimum. Zero: answer at once. canx's runtime
    /// applies it only to CFs another socket on the same host sent
    /// (SocketCAN's `MSG_DONTROUTE`): a remote node's own CF is confirmed
    /// long before an FC can cross the bus.
    pub block_fc_delay: Duration,
    /// Receiver: an FC.CTS (after an FF or a block) that no CF has answered
    /// within this is sent again, every this long, until a CF arrives or
    /// N_Cr (counted from the first copy, never extended by a repeat)
    /// ends the reception. Default [`DEFAULT_FC_REPEAT`] (50 ms); zero:
    /// never.
    ///
    /// Why: an FC the sender never took stalls the transfer for N_Cr
    /// (1 s) and fails it. It happens against Linux's can-isotp on the same
    /// host when the sender's CPU is held up between delivering its CF to
    /// us and to its own echo handler for longer than `block_fc_delay`
    /// (seen in CI's VM: one transfer of 66,000 bytes in blocks of 8 ended
    /// with N_TIMEOUT_Cr), and to any FC lost on the way. A sender that did
    /// take the first copy is already sending its CFs and ignores the
    /// repeat: ISO 15765-2:2016 §9.8.3 Table 23 ("FC N_PDU ... if awaiting
    /// FC, process, otherwise ignore"; Linux `isotp_rcv_fc` likewise). A
    /// repeat is sent only while no CF has arrived since the last FC, so it
    /// cannot be taken as the FC of a later block. Counted in
    /// [`Stats::fc_repeated`].
    pub fc_repeat: Duration,
    /// Receive: SF, FC and last-CF frames of 8 bytes or fewer must be
    /// padded to 8 (Linux `CAN_ISOTP_CHK_PAD_LEN`); a violation is N_ERROR.
    pub rx_check_padding_len: bool,
    /// Receive: the padding bytes of SF, FC and the last CF must equal this
    /// byte (Linux `CAN_ISOTP_CHK_PAD_DATA`); a violation is N_ERROR.
    pub rx_padding_byte: Option<u8>,
    /// Half duplex (Table 23's half-duplex rows): while sending a
    /// segmented message only FCs are taken; while receiving, FCs are
    /// ignored. Default full duplex, as Linux.
    pub half_duplex: bool,
    /// Receive without ever sending an FC (a sniffer, Linux
    /// `CAN_ISOTP_LISTEN_MODE`); [`Channel::send`] is refused.
    pub listen_only: bool,
    /// Wait for transmit confirmations ([`Channel::on_tx_confirm`], e.g.
    /// the host's echo of each frame sent, as Linux paces on its echo):
    /// N_As/N_Ar then run until the confirmation, the next CF waits for the
    /// previous one's confirmation (and STmin counts from it), N_Bs and N_Cr
    /// start at it, and `SendComplete` follows the last frame's. Default
    /// `false`: a frame counts as sent when `poll_transmit` returns it.
    pub tx_confirm: bool,
}

/// The default of every ISO-TP timer (isotp.md §3: ISO 15765-2, Linux, python-can-isotp).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_millis(1000);

/// The default [`Config::block_fc_delay`]: 300 µs.
pub const DEFAULT_BLOCK_FC_DELAY: Duration = Duration::from_micros(300);

/// The default [`Config::fc_repeat`]: 50 ms.
pub const DEFAULT_FC_REPEAT: Duration = Duration::from_millis(50);

impl Config {
    /// Defaults for `address` (see [`Config`]).
    pub const fn new(address: Address) -> Config {
        Config {
            address,
            fd: false,
            brs: false,
            tx_dl: 8,
            padding: None,
            bs: 0,
            stmin: 0,
            stmin_override: None,
            wft_max: 0,
            tx_wft_max: None,
            n_as: DEFAULT_TIMEOUT,
            n_ar: DEFAULT_TIMEOUT,
            n_bs: DEFAULT_TIMEOUT,
            n_br: DEFAULT_TIMEOUT,
            n_cs: DEFAULT_TIMEOUT,
            n_cr: DEFAULT_TIMEOUT,
            block_fc_delay: DEFAULT_BLOCK_FC_DELAY,
            fc_repeat: DEFAULT_FC_REPEAT,
            rx_check_padding_len: false,
            rx_padding_byte: None,
            half_duplex: false,
            listen_only: false,
            tx_confirm: false,
        }
    }

    /// Checks the settings: TX_DL one of 8, 12, 16, 20, 24, 32, 48, 64, and
    /// 8 without FD.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if !matches!(self.tx_dl, 8 | 12 | 16 | 20 | 24 | 32 | 48 | 64) {
            return Err(ConfigError::InvalidTxDl(self.tx_dl));
        }
        if self.tx_dl > 8 && !self.fd {
            return Err(ConfigError::TxDlNeedsFd(self.tx_dl));
        }
        Ok(())
    }
}

/// A [`Config`] that [`Channel::new`] refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConfigError {
    /// TX_DL is not 8, 12, 16, 20, 24, 32, 48 or 64.
    InvalidTxDl(u8),
    /// TX_DL above 8 needs `fd`.
    TxDlNeedsFd(u8),
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConfigError::InvalidTxDl(n) => write!(f, "TX_DL {n} is not one of 8, 12, 16, 20, 24, 32, 48, 64"),
            ConfigError::TxDlNeedsFd(n) => write!(f, "TX_DL {n} needs CAN FD"),
        }
    }
}

impl core::error::Error for ConfigError {}

/// Why [`Channel::send`] refused a message (nothing was sent).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SendError {
    /// A message is still being sent; wait for `SendComplete` or `TxError`.
    Busy,
    /// An empty message (ISO-TP carries 1..=2^32-1 bytes).
    Empty,
    /// Longer than the transmit buffer (or 2^32-1 bytes); `max` bytes fit.
    TooLong { len: usize, max: usize },
    /// Functional addressing carries single frames only (isotp.md §5); `max` bytes fit one.
    FunctionalTooLong { len: usize, max: usize },
    /// The channel is [`Config::listen_only`].
    ListenOnly,
}

impl fmt::Display for SendError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SendError::Busy => f.write_str("a message is still being sent"),
            SendError::Empty => f.write_str("empty message"),
            SendError::TooLong { len, max } => {
                write!(f, "message of {len} bytes exceeds the {max}-byte transmit buffer")
            }
            SendError::FunctionalTooLong { len, max } => {
                write!(f, "functional addressing allows single frames only ({len} > {max} bytes)")
            }
            SendError::ListenOnly => f.write_str("the channel only listens"),
        }
    }
}

impl core::error::Error for SendError {}

/// Counters of a [`Channel`]; they only grow (saturating).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Messages sent completely.
    pub tx_messages: u32,
    /// Messages received completely.
    pub rx_messages: u32,
    /// Frames handed out by `poll_transmit`.
    pub tx_frames: u32,
    /// Frames for this channel's N_AI taken by `handle_frame`.
    pub rx_frames: u32,
    /// Sends that ended in `TxError`.
    pub tx_errors: u32,
    /// Receptions that ended in `RxError`.
    pub rx_errors: u32,
    /// Frames for this channel that the parser refused ([`PciError`]) or
    /// that broke a length rule (a CF longer than RX_DL, a short CF before the last).
    pub malformed: u32,
    /// N_PDUs ignored by Table 23 (each also an `UnexpectedPdu` event).
    pub unexpected: u32,
    /// FC.WAIT frames sent.
    pub wait_sent: u32,
    /// FC.WAIT frames received.
    pub wait_received: u32,
    /// FC.CTS frames sent again because no CF answered ([`Config::fc_repeat`]).
    pub fc_repeated: u32,
    /// Unread multi-frame messages overwritten by the next reception (only with `wft_max` 0).
    pub rx_unread_dropped: u32,
    /// Events dropped because the event queue was full.
    pub dropped_events: u32,
}
