//! The in-process virtual bus: named channels, any number of nodes.
//!
//! A send takes the channel lock and puts the frame into every other node's
//! inbox (and the sender's own, with `receive_own`), so all nodes see all
//! frames in one global order. Arbitration is not simulated: order is the
//! order of `send` calls. An inbox is bounded (like a socket buffer); a full
//! inbox drops the frame and counts it at that node. A node in BUS_OFF
//! neither sends nor receives, like a controller that has left the bus.
//!
//! Scheme `virtual`: channels `"virtual:NAME"`, any non-empty name, on every
//! platform; listed while they have nodes ([`channels`]). Error states can be
//! injected ([`Backend::inject_state`]), and so can a transmit queue that
//! never drains ([`Backend::jam_tx`], a test fault); periodic sends use the
//! runtime's timer.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock, Weak};
use std::time::Duration;

use canx_core::frame::BusState;
use canx_core::{ErrorFrame, Frame};
use parking_lot::Mutex;

use super::{AvailableChannel, Backend, BusConfig, Capabilities, Scheme};
use crate::runtime::queue::BoundedQueue;
use crate::runtime::{epoch_now, Error, Origin, Result, RxFrame};

/// The `virtual` entry of [`super::SCHEMES`].
pub(super) const SCHEME: Scheme = Scheme {
    name: "virtual",
    default: false,
    check: |_| Ok(()),
    open: |name, config| Ok(Arc::new(VirtualNode::join(name, config))),
    available: || channels().into_iter().map(|n| AvailableChannel::new(n, "in-process virtual bus")).collect(),
};

/// Frames a node's inbox holds before it drops (like a socket receive buffer).
pub const INBOX_CAPACITY: usize = 65_536;
/// Most inbox entries one `recv_batch` takes.
const RECV_BATCH: usize = 256;

enum Inbound {
    Frame(RxFrame),
    Wake,
}

struct NodeEntry {
    id: u64,
    inbox: Arc<BoundedQueue<Inbound>>,
    receive_own: bool,
    fd: bool,
    off: Arc<AtomicBool>,
    drops: Arc<AtomicU64>,
}

#[derive(Default)]
struct VirtualChannel {
    nodes: Mutex<Vec<NodeEntry>>,
    /// Test hook: every receive on this channel fails ([`fail_receive`]).
    fail_receive: AtomicBool,
}

/// Test hook: from now on every receive of every node on channel `name`
/// fails, as a broken backend would (the receive threads stop after their
/// error limit). Returns whether the channel exists.
pub fn fail_receive(name: &str) -> bool {
    let Some(c) = registry().lock().get(name).and_then(Weak::upgrade) else {
        return false;
    };
    c.fail_receive.store(true, Ordering::Relaxed);
    for n in c.nodes.lock().iter() {
        let _ = n.inbox.try_push(Inbound::Wake);
    }
    true
}

fn registry() -> &'static Mutex<HashMap<String, Weak<VirtualChannel>>> {
    static R: OnceLock<Mutex<HashMap<String, Weak<VirtualChannel>>>> = OnceLock::new();
    R.get_or_init(Default::default)
}

/// Names of the virtual channels that have nodes now.
pub fn channels() -> Vec<String> {
    let mut names: Vec<String> =
        registry().lock().iter().filter(|(_, w)| w.strong_count() > 0).map(|(k, _)| k.clone()).collect();
    names.sort();
    names
}

/// One node on a virtual channel.
pub(crate) struct VirtualNode {
    id: u64,
    channel: Arc<VirtualChannel>,
    inbox: Arc<BoundedQueue<Inbound>>,
    off: Arc<AtomicBool>,
    drops: Arc<AtomicU64>,
    /// Test fault ([`Backend::jam_tx`]): no frame is accepted.
    jammed: AtomicBool,
}

impl VirtualNode {
    pub fn join(name: &str, config: &BusConfig) -> VirtualNode {
        static NEXT: AtomicU64 = AtomicU64::new(1);
        let channel = {
            let mut reg = registry().lock();
            reg.retain(|_, w| w.strong_count() > 0);
            match reg.get(name).and_then(Weak::upgrade) {
                Some(c) => c,
                None => {
                    let c = Arc::new(VirtualChannel::default());
                    reg.insert(name.to_string(), Arc::downgrade(&c));
                    c
                }
            }
        };
        let id = NEXT.fetch_add(1, Ordering::Relaxed);
        let inbox = Arc::new(BoundedQueue::new(INBOX_CAPACITY));
        let off = Arc::new(AtomicBool::new(false));
        let drops = Arc::new(AtomicU64::new(0));
        channel.nodes.lock().push(NodeEntry {
            id,
            inbox: inbox.clone(),
            receive_own: config.receive_own,
            fd: config.fd,
            off: off.clone(),
            drops: drops.clone(),
        });
        VirtualNode { id, channel, inbox, off, drops, jammed: AtomicBool::new(false) }
    }
}

impl Drop for VirtualNode {
    fn drop(&mut self) {
        self.channel.nodes.lock().retain(|n| n.id != self.id);
    }
}

impl Backend for VirtualNode {
    fn host_timestamps(&self) -> bool {
        true // epoch_now() of the sending node, in this process
    }

    fn recv_batch(&self, out: &mut Vec<RxFrame>, timeout: Duration) -> Result<()> {
        if self.channel.fail_receive.load(Ordering::Relaxed) {
            let source = std::io::Error::other("injected receive failure");
            return Err(Error::Os { context: "virtual bus receive".into(), source });
        }
        self.inbox.pop_batch(timeout, RECV_BATCH, |m| {
            if let Inbound::Frame(f) = m {
                out.push(f);
            }
            true
        });
        Ok(())
    }

    fn send(&self, frame: &Frame, timeout: Duration) -> Result<()> {
        if self.off.load(Ordering::Relaxed) {
            return Err(Error::BusOff);
        }
        if self.jammed.load(Ordering::Relaxed) {
            std::thread::sleep(timeout);
            return Err(Error::SendTimeout);
        }
        let timestamp = epoch_now();
        let nodes = self.channel.nodes.lock();
        for n in nodes.iter() {
            let own = n.id == self.id;
            if (own && !n.receive_own) || n.off.load(Ordering::Relaxed) {
                continue;
            }
            if matches!(frame, Frame::Fd(_)) && !n.fd {
                continue; // a classic controller does not see FD frames
            }
            let origin = if own { Origin::Own } else { Origin::Bus };
            let rx = RxFrame { frame: *frame, timestamp, origin };
            if n.inbox.try_push(Inbound::Frame(rx)).is_err() {
                n.drops.fetch_add(1, Ordering::Relaxed);
            }
        }
        Ok(())
    }

    fn wake(&self) {
        let _ = self.inbox.try_push(Inbound::Wake);
    }

    fn backend_drops(&self) -> u64 {
        self.drops.load(Ordering::Relaxed)
    }

    fn restart(&self) -> Result<()> {
        self.off.store(false, Ordering::Relaxed);
        Ok(())
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities { fd: true, state_injection: true, ..Capabilities::default() }
    }

    fn jam_tx(&self, on: bool) -> Result<()> {
        self.jammed.store(on, Ordering::Relaxed);
        Ok(())
    }

    fn inject_state(&self, e: ErrorFrame) -> Result<()> {
        self.off.store(e.bus_state() == Some(BusState::BusOff), Ordering::Relaxed);
        let rx = RxFrame { frame: Frame::Error(e), timestamp: epoch_now(), origin: Origin::Own };
        if self.inbox.try_push(Inbound::Frame(rx)).is_err() {
            self.drops.fetch_add(1, Ordering::Relaxed);
        }
        Ok(())
    }
}
