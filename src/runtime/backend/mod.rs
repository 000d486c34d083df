//! Backends: what a [`Bus`] sends and receives through, and the registry of
//! channel schemes that turns `channel=`/`interface=` into one.
//!
//! A backend implements [`Backend`] (receive a batch, send, wake, drop
//! counter; optionally kernel prefilters, link state, restart, periodic
//! offload) and says what it can do in [`Capabilities`]. A channel scheme is
//! one [`Scheme`] entry in [`SCHEMES`]: its name (the `interface=` value and
//! the `NAME:` prefix of a channel), how a channel name of it is checked, how
//! it is opened, and which channels of it exist now. Nothing outside this
//! module knows which backend a bus runs on; it asks the backend (through
//! [`Bus::capabilities`], [`Bus::peer_hints`], [`PeriodicSender`]).
//!
//! | scheme | channels | platforms | module |
//! | --- | --- | --- | --- |
//! | `socketcan` | `vcan0`, `can0` (no prefix) | Linux | [`socketcan`] (+ [`bcm`] for periodic offload) |
//! | `virtual` | `virtual:NAME` | all | [`virtual_bus`] |
//! | `udp_multicast` | `udp_multicast:`, `udp_multicast:GROUP[:PORT]` | all | [`udp_multicast`] |
//! | `gs_usb` | `gs_usb:0`, `gs_usb:SERIAL` | all (nusb) | [`gs_usb`] (channel 0; FD with `data_bitrate`) |
//! | `slcan` | `slcan:/dev/ttyACM0`, `slcan:COM3[@BAUD][,OPT=V...]` | all | [`slcan`] |
//!
//! Adding a backend (an `slcan:/dev/ttyACM0` serial adapter, a
//! `gs_usb:SERIAL` USB adapter) is one file with a `Backend` impl and a
//! `SCHEME` constant, and one line in [`SCHEMES`] (ARCHITECTURE.md,
//! "Backends").

#[cfg(target_os = "linux")]
pub mod bcm;
pub mod gs_usb;
pub mod slcan;
#[cfg(target_os = "linux")]
pub mod socketcan;
pub mod udp_multicast;
pub mod virtual_bus;

use std::fmt;
use std::sync::{Arc, Weak};
use std::time::Duration;

use canx_core::{ErrorFrame, Filter, Frame};

use super::drivers::PeriodicTask;
use super::engine::Clock;
use super::{Bus, Error, Result, RxFrame};

/// What a backend can do. Asked by the runtime and the bindings instead of
/// asking which backend it is (smoltcp's `DeviceCapabilities`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Capabilities {
    /// Can carry CAN FD frames when opened with `fd`.
    pub fd: bool,
    /// Receive timestamps come from the controller, not from the host's
    /// clock at reception.
    pub hardware_timestamps: bool,
    /// [`BusConfig::bitrate`] programs the controller (otherwise it is
    /// informational, as on SocketCAN, where `ip link` sets the rate).
    pub bitrate_control: bool,
    /// [`Backend::periodic`] can run a periodic transmission itself.
    pub periodic_offload: bool,
    /// [`Backend::inject_state`] works (a simulated controller).
    pub state_injection: bool,
    /// Kernel protocol stacks that can be other nodes on this bus.
    pub kernel_stacks: KernelStacks,
}

/// Protocol stacks of the operating system that may share the interface
/// with canx (and so be the peer of a canx engine).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KernelStacks {
    /// Linux `CAN_J1939` (net/can/j1939).
    pub j1939: bool,
    /// Linux `CAN_ISOTP` (net/can/isotp).
    pub isotp: bool,
}

/// What a backend does. Implemented by the SocketCAN socket and the virtual
/// bus node; the receive thread and the bindings only see this.
pub trait Backend: Send + Sync {
    /// Blocks until at least one frame arrived, `timeout` passed or
    /// [`Backend::wake`] was called; appends what arrived to `out`.
    fn recv_batch(&self, out: &mut Vec<RxFrame>, timeout: Duration) -> Result<()>;
    /// Queues one frame for transmission; `timeout` bounds the wait for room.
    fn send(&self, frame: &Frame, timeout: Duration) -> Result<()>;
    /// Queues `frames` in order. Returns how many were queued before the
    /// first one that failed, and that failure (`Ok` when all were queued).
    fn send_many(&self, frames: &[Frame], timeout: Duration) -> (usize, Result<()>) {
        for (i, f) in frames.iter().enumerate() {
            if let Err(e) = self.send(f, timeout) {
                return (i, Err(e));
            }
        }
        (frames.len(), Ok(()))
    }
    /// Makes a blocked `recv_batch` return soon.
    fn wake(&self);
    /// Applies the union of the listeners' filters where the backend can
    /// filter before the receive thread (the kernel). `None`: accept all.
    fn set_prefilter(&self, _filters: Option<&[Filter]>) {}
    /// Frames the backend itself lost (kernel `SO_RXQ_OVFL`, full virtual inbox).
    fn backend_drops(&self) -> u64;
    /// Input from the medium that was not a frame and was dropped (a
    /// garbage datagram on `udp_multicast`).
    fn malformed(&self) -> u64 {
        0
    }
    /// `Some(reason)` while the link is down.
    fn link_down(&self) -> Option<String> {
        None
    }
    /// Brings the controller back from BUS_OFF.
    fn restart(&self) -> Result<()> {
        Ok(())
    }
    /// What this backend can do.
    fn capabilities(&self) -> Capabilities;
    /// A periodic transmission of `frames` in turn, one every `period`, run
    /// by the backend itself (SocketCAN: the kernel's broadcast manager),
    /// created stopped. `None`: no offload, the runtime uses its own timer
    /// engine ([`crate::runtime::drivers::Periodic`]).
    fn periodic(&self, _frames: &[Frame], _period: Duration) -> Option<Result<Box<dyn PeriodicOffload>>> {
        None
    }
    /// Whether the kernel's J1939 stack is active on this bus now (it may
    /// then be the sender of a TP/ETP transfer: see
    /// `canx_core::j1939::transport`, "CTS turnaround"). `false` where no
    /// kernel stack can be present.
    fn kernel_j1939_active(&self) -> bool {
        false
    }
    /// Whether [`RxFrame::timestamp`] is this host's realtime clock at the
    /// frame's reception (kernel `SO_TIMESTAMPNS`; the virtual bus's send
    /// time), so that it orders received frames against [`epoch_now`]
    /// readings of this process. `false` for device or remote clocks
    /// (gs_usb, slcan timestamps, another host's UDP datagrams).
    fn host_timestamps(&self) -> bool {
        false
    }
    /// Where [`Capabilities::state_injection`]: makes the controller report
    /// the state of `e` with its counters.
    fn inject_state(&self, _e: ErrorFrame) -> Result<()> {
        Err(Error::Unsupported("error states can only be injected on a virtual bus".into()))
    }
    /// The bus shut down ([`Bus::shutdown`], after its receive thread
    /// ended): stop and release the device now, even if references to the
    /// backend live on (a USB adapter's channel is reset; a serial port is
    /// closed, so it can be opened again while Python objects still hold
    /// the bus). Idempotent. Default: nothing.
    fn close(&self) {}
    /// Backend-specific counters, `(name, value)`, shown by `CAN.stats()`
    /// next to the bus's own (slcan: malformed and unknown lines, replies).
    fn counters(&self) -> Vec<(&'static str, u64)> {
        Vec::new()
    }
    /// Test fault (the virtual bus): while `on`, no frame is accepted for
    /// transmission; every send waits its whole timeout, then fails with
    /// [`Error::SendTimeout`] (a transmit queue that never drains).
    fn jam_tx(&self, _on: bool) -> Result<()> {
        Err(Error::Unsupported("transmit jamming is a test fault of the virtual bus".into()))
    }
}

/// A periodic transmission run by the backend ([`Backend::periodic`]).
pub trait PeriodicOffload: Send {
    /// (Re)starts: the first frame goes out now; stops after `duration`
    /// (None: until stopped).
    fn start(&mut self, duration: Option<Duration>) -> Result<()>;
    /// Replaces the frames; they go out from the next period on.
    fn set_frames(&mut self, frames: Vec<Frame>) -> Result<()>;
    /// Stops sending. Idempotent.
    fn stop(&mut self);
    /// Frames sent by the current run (may be an estimate).
    fn sent(&self) -> u64;
    /// Whether it is (probably) still sending.
    fn is_running(&self) -> bool;
    /// A short name of the mechanism (`"bcm"`).
    fn mechanism(&self) -> &'static str;
}

/// A `send_periodic` task: run by the backend where it offers that
/// ([`Backend::periodic`]), else by the runtime's timer engine on the bus's
/// receive thread ([`PeriodicTask`]). Created stopped.
#[derive(Debug)]
pub struct PeriodicSender {
    inner: PeriodicInner,
}

enum PeriodicInner {
    Offloaded(Box<dyn PeriodicOffload>),
    Native(PeriodicTask),
}

impl fmt::Debug for PeriodicInner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PeriodicInner::Offloaded(t) => write!(f, "Offloaded({})", t.mechanism()),
            PeriodicInner::Native(t) => write!(f, "Native({t:?})"),
        }
    }
}

impl PeriodicSender {
    /// A stopped task sending `frames` in turn every `period` (> 0) on
    /// `bus`. Errors: those of the backend's offload (SocketCAN: no
    /// `can-bcm` module, more than 256 frames, classic and FD mixed).
    pub fn new(bus: &Bus, frames: Vec<Frame>, period: Duration) -> Result<PeriodicSender> {
        let inner = match bus.backend().periodic(&frames, period) {
            Some(task) => PeriodicInner::Offloaded(task?),
            None => PeriodicInner::Native(PeriodicTask::attach(bus, frames, period.into())),
        };
        Ok(PeriodicSender { inner })
    }

    /// (Re)starts: the first frame goes out now; stops after `duration`
    /// (None: until stopped).
    pub fn start(&mut self, duration: Option<Duration>) -> Result<()> {
        match &mut self.inner {
            PeriodicInner::Offloaded(t) => t.start(duration),
            PeriodicInner::Native(t) => {
                t.restart(duration.map(Into::into));
                Ok(())
            }
        }
    }

    /// Replaces the frames; they go out from the next period on.
    pub fn set_frames(&mut self, frames: Vec<Frame>) -> Result<()> {
        match &mut self.inner {
            PeriodicInner::Offloaded(t) => t.set_frames(frames),
            PeriodicInner::Native(t) => {
                t.with(|p| p.set_frames(frames));
                Ok(())
            }
        }
    }

    /// Stops sending; [`PeriodicSender::start`] resumes.
    pub fn stop(&mut self) {
        match &mut self.inner {
            PeriodicInner::Offloaded(t) => t.stop(),
            PeriodicInner::Native(t) => t.stop(),
        }
    }

    /// Stops and releases the timer (the native one is detached from `bus`).
    pub fn close(&mut self, bus: &Bus) {
        match &mut self.inner {
            PeriodicInner::Offloaded(t) => t.stop(),
            PeriodicInner::Native(t) => t.detach(bus),
        }
    }

    /// Frames sent so far by the current run (offloaded: may be estimated).
    pub fn sent(&self) -> u64 {
        match &self.inner {
            PeriodicInner::Offloaded(t) => t.sent(),
            PeriodicInner::Native(t) => t.peek(|p| p.sent()),
        }
    }

    pub fn is_running(&self) -> bool {
        match &self.inner {
            PeriodicInner::Offloaded(t) => t.is_running(),
            PeriodicInner::Native(t) => t.peek(|p| p.is_running()),
        }
    }

    /// `(count, last_error)` of frames the bus refused (an offload reports none).
    pub fn failed(&self) -> (u64, Option<String>) {
        match &self.inner {
            PeriodicInner::Offloaded(_) => (0, None),
            PeriodicInner::Native(t) => t.peek(|p| p.failed()),
        }
    }

    /// The backend's mechanism (`"bcm"`) or `"native"` (the runtime's timer).
    pub fn mechanism(&self) -> &'static str {
        match &self.inner {
            PeriodicInner::Offloaded(t) => t.mechanism(),
            PeriodicInner::Native(_) => "native",
        }
    }
}

/// What a protocol engine may ask about its bus without knowing the
/// backend: the other nodes (kernel protocol stacks) and the bus's clock.
/// Holds the backend weakly: after the bus is gone every answer is `false`.
#[derive(Clone)]
pub struct PeerHints(Weak<dyn Backend>, Clock);

impl fmt::Debug for PeerHints {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PeerHints")
    }
}

impl PeerHints {
    /// Hints of `backend` on the system clock (tests of engines without a bus).
    #[cfg(test)]
    pub(crate) fn new(backend: &Arc<dyn Backend>) -> PeerHints {
        PeerHints::with_clock(backend, Clock::System)
    }

    pub(crate) fn with_clock(backend: &Arc<dyn Backend>, clock: Clock) -> PeerHints {
        PeerHints(Arc::downgrade(backend), clock)
    }

    /// Hints of no bus (every answer `false`, the system clock): an engine
    /// not attached yet.
    pub fn none() -> PeerHints {
        PeerHints(Weak::<virtual_bus::VirtualNode>::new(), Clock::System)
    }

    /// Now, on the bus's clock ([`BusConfig::clock`]): what an engine uses
    /// for changes made from the application between receive rounds.
    pub fn now(&self) -> canx_core::Instant {
        self.1.now()
    }

    /// [`Backend::host_timestamps`] of the bus's backend.
    pub fn host_timestamps(&self) -> bool {
        self.0.upgrade().is_some_and(|b| b.host_timestamps())
    }

    /// [`Backend::kernel_j1939_active`] of the bus's backend.
    pub fn kernel_j1939_active(&self) -> bool {
        self.0.upgrade().is_some_and(|b| b.kernel_j1939_active())
    }
}

/// How to open a bus.
#[derive(Clone, Debug)]
pub struct BusConfig {
    pub channel: Channel,
    /// Receive frames this node sent (canio `loopback`, python-can `receive_own_messages`).
    pub receive_own: bool,
    /// Open for CAN FD.
    pub fd: bool,
    /// Listen-only: `send` fails with [`Error::Silent`].
    pub silent: bool,
    /// Leave BUS_OFF by itself before the next send.
    pub auto_restart: bool,
    /// Nominal bit rate, bit/s (programs the controller only where
    /// [`Capabilities::bitrate_control`]; informational on SocketCAN and virtual).
    pub bitrate: u32,
    /// CAN FD data-phase bit rate, bit/s, used when [`BusConfig::fd`]
    /// (programs the controller where [`Capabilities::bitrate_control`]:
    /// gs_usb DATA_BITTIMING, slcan `Yn`; `None`: the backend's own setting,
    /// an slcan `data_bitrate=` channel option; gs_usb refuses FD without it).
    pub data_bitrate: Option<u32>,
    /// The clock the bus's engines run on ([`Clock::System`]; tests:
    /// [`Clock::manual`]).
    pub clock: Clock,
}

impl BusConfig {
    pub fn new(channel: Channel) -> Self {
        BusConfig {
            channel,
            receive_own: false,
            fd: false,
            silent: false,
            auto_restart: false,
            bitrate: 250_000,
            data_bitrate: None,
            clock: Clock::System,
        }
    }

    /// A configuration for the in-process virtual channel `name` (tests,
    /// simulations).
    pub fn virtual_bus(name: &str) -> Self {
        BusConfig::new(Channel::virtual_bus(name))
    }
}

/// One channel scheme: an entry of [`SCHEMES`].
pub struct Scheme {
    /// The `interface=` value and the `NAME:` prefix of its channels.
    pub name: &'static str,
    /// Channels without a `NAME:` prefix belong to this scheme (one scheme:
    /// SocketCAN, so `"vcan0"` works as on python-can).
    pub default: bool,
    /// Checks a channel name of this scheme (the part after the prefix).
    /// Errors: [`Error::BadChannel`], or [`Error::Unsupported`] where the
    /// scheme does not exist on this platform.
    pub check: fn(&str) -> Result<()>,
    /// Opens a backend on a checked name.
    pub open: fn(&str, &BusConfig) -> Result<Arc<dyn Backend>>,
    /// The channels of this scheme that exist now (names without prefix).
    pub available: fn() -> Vec<AvailableChannel>,
}

/// A channel that exists now, as a scheme lists it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AvailableChannel {
    /// The name within the scheme (`"vcan0"`, `"0"`, `"/dev/ttyACM0"`).
    pub name: String,
    /// A short description for people (`canx list`): what it is and, for a
    /// USB device, `VID:PID`, serial number, manufacturer and product where
    /// the OS gives them without opening the device. May be empty.
    pub description: String,
}

impl AvailableChannel {
    pub fn new(name: impl Into<String>, description: impl Into<String>) -> Self {
        AvailableChannel { name: name.into(), description: description.into() }
    }
}

/// One line of [`available_channel_details`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChannelListing {
    /// The `channel=` string.
    pub channel: String,
    /// The scheme ([`Scheme::name`]).
    pub scheme: &'static str,
    /// [`AvailableChannel::description`].
    pub description: String,
}

/// Every channel scheme canx knows, in the order they are listed.
pub static SCHEMES: &[Scheme] =
    &[socketcan::SCHEME, virtual_bus::SCHEME, udp_multicast::SCHEME, slcan::SCHEME, gs_usb::backend::SCHEME];

/// Off Linux: the `socketcan` scheme exists only to say why it cannot work.
#[cfg(not(target_os = "linux"))]
mod socketcan {
    use super::*;

    fn needs_linux(name: &str) -> Error {
        Error::Unsupported(format!(
            "channel {name:?} is a SocketCAN interface, and SocketCAN needs Linux (this is {}); \
             use a virtual channel such as \"virtual:test\"",
            std::env::consts::OS
        ))
    }

    pub(super) const SCHEME: Scheme = Scheme {
        name: "socketcan",
        default: true,
        check: |name| Err(needs_linux(name)),
        open: |name, _| Err(needs_linux(name)),
        available: Vec::new,
    };
}

/// Where a bus goes: a scheme of [`SCHEMES`] and a channel name in it.
/// Displayed as the user writes it (`"vcan0"`, `"virtual:test"`).
#[derive(Clone)]
pub struct Channel {
    scheme: &'static Scheme,
    name: String,
}

impl Channel {
    /// Parses `channel` (`"vcan0"`, `"can0"`, `"virtual:name"`, `"SCHEME:name"`)
    /// with `interface` (None, or a scheme name, which must agree with a
    /// prefix). Errors: [`Error::BadChannel`] (unknown scheme, empty or
    /// invalid name), [`Error::Unsupported`] (a scheme this platform lacks,
    /// such as SocketCAN off Linux).
    pub fn parse(channel: &str, interface: Option<&str>) -> Result<Channel> {
        let (prefix, name) = match channel.split_once(':') {
            // With `interface=`, a channel whose prefix is no scheme is all
            // name (python-can's udp_multicast channel "ff15::1").
            Some((p, _)) if interface.is_some() && !SCHEMES.iter().any(|s| s.name.eq_ignore_ascii_case(p)) => {
                (None, channel)
            }
            Some((scheme, rest)) => (Some(scheme), rest),
            None => (None, channel),
        };
        let scheme = match (interface, prefix) {
            (Some(a), Some(b)) if !a.eq_ignore_ascii_case(b) => {
                return Err(Error::BadChannel(format!(
                    "channel {channel:?} names interface {b:?} but interface={a:?} was given"
                )))
            }
            (Some(a), _) | (None, Some(a)) => {
                SCHEMES.iter().find(|s| s.name.eq_ignore_ascii_case(a)).ok_or_else(|| {
                    let known: Vec<String> = SCHEMES.iter().map(|s| format!("{:?}", s.name)).collect();
                    Error::BadChannel(format!("unknown interface {a:?}: canx knows {}", known.join(" and ")))
                })?
            }
            (None, None) => SCHEMES
                .iter()
                .find(|s| s.default)
                .ok_or_else(|| Error::BadChannel(format!("channel {channel:?} needs a scheme prefix")))?,
        };
        // `udp_multicast:` is python-can's default group.
        if name.is_empty() && scheme.name != udp_multicast::SCHEME.name {
            return Err(Error::BadChannel(format!("empty channel name in {channel:?}")));
        }
        (scheme.check)(name)?;
        Ok(Channel { scheme, name: name.to_string() })
    }

    /// The in-process virtual channel `name`.
    pub fn virtual_bus(name: &str) -> Channel {
        Channel { scheme: &virtual_bus::SCHEME, name: name.to_string() }
    }

    /// The scheme's name (`"socketcan"`, `"virtual"`).
    pub fn scheme(&self) -> &'static str {
        self.scheme.name
    }

    /// The name within the scheme (`"vcan0"`, `"test"` for `"virtual:test"`).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Opens the backend of this channel.
    pub(crate) fn open(&self, config: &BusConfig) -> Result<Arc<dyn Backend>> {
        (self.scheme.open)(&self.name, config)
    }
}

impl PartialEq for Channel {
    fn eq(&self, other: &Channel) -> bool {
        self.scheme.name == other.scheme.name && self.name == other.name
    }
}

impl Eq for Channel {}

impl fmt::Display for Channel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.scheme.default {
            f.write_str(&self.name)
        } else {
            write!(f, "{}:{}", self.scheme.name, self.name)
        }
    }
}

impl fmt::Debug for Channel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Channel({self})")
    }
}

/// Every channel that can be opened now, as `channel=` strings, scheme by
/// scheme (SocketCAN interfaces of type CAN, then open virtual channels).
pub fn available_channels() -> Vec<String> {
    available_channel_details().into_iter().map(|c| c.channel).collect()
}

/// [`available_channels`] with each channel's scheme and description.
pub fn available_channel_details() -> Vec<ChannelListing> {
    let mut out = Vec::new();
    for s in SCHEMES {
        for c in (s.available)() {
            let channel = if s.default { c.name } else { format!("{}:{}", s.name, c.name) };
            out.push(ChannelListing { channel, scheme: s.name, description: c.description });
        }
    }
    out
}

/// `VID:PID serial=S manufacturer product` of a USB device, the parts the OS gave.
pub(crate) fn usb_description(
    vid: u16,
    pid: u16,
    serial: Option<&str>,
    manufacturer: Option<&str>,
    product: Option<&str>,
) -> String {
    let mut d = format!("{vid:04x}:{pid:04x}");
    for (label, v) in [("serial=", serial), ("", manufacturer), ("", product)] {
        if let Some(v) = v.filter(|v| !v.is_empty()) {
            d.push(' ');
            d.push_str(label);
            d.push_str(v);
        }
    }
    d
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usb_descriptions_name_what_the_os_gave() {
        assert_eq!(
            usb_description(0x1d50, 0x606f, Some("CANXEMU0001"), Some("canx"), Some("gs_usb emulator")),
            "1d50:606f serial=CANXEMU0001 canx gs_usb emulator"
        );
        assert_eq!(usb_description(0x16d0, 0x117e, None, Some(""), Some("CANable")), "16d0:117e CANable");
    }

    #[test]
    fn channel_parse() {
        let v = Channel::parse("virtual:x", None).unwrap();
        assert_eq!((v.scheme(), v.name(), v.to_string()), ("virtual", "x", "virtual:x".to_string()));
        assert_eq!(Channel::parse("x", Some("virtual")).unwrap(), Channel::virtual_bus("x"));
        assert_eq!(Channel::parse("x", Some("VIRTUAL")).unwrap(), Channel::virtual_bus("x"));
        assert!(matches!(Channel::parse("virtual:x", Some("socketcan")), Err(Error::BadChannel(_))));
        assert!(matches!(Channel::parse("pcan:x", None), Err(Error::BadChannel(_))));
        assert!(matches!(Channel::parse("virtual:", None), Err(Error::BadChannel(_))));
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn socketcan_channels_on_linux() {
        let c = Channel::parse("vcan0", None).unwrap();
        assert_eq!((c.scheme(), c.name(), c.to_string()), ("socketcan", "vcan0", "vcan0".to_string()));
        assert_eq!(Channel::parse("socketcan:vcan0", None).unwrap(), c);
        assert_eq!(Channel::parse("vcan0", Some("socketcan")).unwrap(), c);
        assert!(matches!(Channel::parse("averyveryverylongname", None), Err(Error::BadChannel(_))));
        assert!(matches!(Channel::parse("a/b", None), Err(Error::BadChannel(_))));
    }

    #[cfg(not(target_os = "linux"))]
    #[test]
    fn socketcan_needs_linux() {
        for (ch, iface) in [("vcan0", None), ("can0", Some("socketcan")), ("socketcan:can0", None)] {
            match Channel::parse(ch, iface) {
                Err(Error::Unsupported(m)) => assert!(m.contains("SocketCAN needs Linux"), "{m}"),
                other => panic!("{ch}: {other:?}"),
            }
        }
    }

    #[test]
    fn open_virtual_channels_are_listed() {
        let _bus = Bus::open(BusConfig::virtual_bus("backend-listing")).unwrap();
        assert!(available_channels().contains(&"virtual:backend-listing".to_string()));
        let details = available_channel_details();
        let v = details.iter().find(|c| c.channel == "virtual:backend-listing").unwrap();
        assert_eq!((v.scheme, v.description.as_str()), ("virtual", "in-process virtual bus"));
        let udp: Vec<_> = details.iter().filter(|c| c.scheme == "udp_multicast").collect();
        assert_eq!(udp.len(), 2);
        assert!(udp.iter().all(|c| c.channel.starts_with("udp_multicast:") && c.description.contains("multicast")));
    }

    #[test]
    fn capabilities_of_the_virtual_bus() {
        let bus = Bus::open(BusConfig::virtual_bus("backend-caps")).unwrap();
        let c = bus.capabilities();
        assert!(c.fd && c.state_injection && !c.periodic_offload && !c.kernel_stacks.j1939);
        assert!(!bus.peer_hints().kernel_j1939_active());
    }
}
