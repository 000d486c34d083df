//! [`Transport`] over the `nusb` crate: finding gs_usb devices, claiming
//! interface 0, control transfers, a queue of bulk IN transfers, a queue of
//! bulk OUT transfers.
//!
//! Waiting: the receive thread polls the IN endpoint's next completion with
//! a waker that unparks it (nusb's event thread calls it when a transfer
//! completes), so it sleeps in `park_timeout` for the whole wait, not in
//! slices; [`Transport::wake_in`] unparks it too (close, engine timers).
//!
//! nusb 0.2 (pure Rust): Linux usbfs, Windows WinUSB (control transfers go
//! through the interface; `wIndex` low byte = interface number, which gs_usb
//! satisfies), macOS IOKit. IN transfer lengths must be multiples of
//! wMaxPacketSize (nusb refuses others).

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};
use std::thread::Thread;
use std::time::{Duration, Instant};

use nusb::transfer::{Buffer, Bulk, ControlIn, ControlOut, ControlType, In, Out, Recipient, TransferError};
use nusb::{DeviceInfo, Endpoint, Interface, MaybeFuture};
use parking_lot::Mutex;

use canx_core::gs_usb::ControlSetup;

use super::device::{is_gs_usb, UsbIdentity};
use super::{Transport, TransportError};

fn map_err(e: TransferError) -> TransportError {
    match e {
        TransferError::Cancelled => TransportError::Timeout,
        TransferError::Stall => TransportError::Stall,
        TransferError::Disconnected => TransportError::Disconnected,
        other => TransportError::Other(other.to_string()),
    }
}

fn os_err(context: &str, e: nusb::Error) -> TransportError {
    TransportError::Other(format!("{context}: {e}"))
}

/// The gs_usb devices present now (VID:PID in the kernel's ID table).
pub fn list() -> Result<Vec<DeviceInfo>, TransportError> {
    let devices = nusb::list_devices().wait().map_err(|e| os_err("listing USB devices", e))?;
    Ok(devices.filter(|d| is_gs_usb(d.vendor_id(), d.product_id())).collect())
}

/// The identity of a listed device.
pub fn identity(info: &DeviceInfo) -> UsbIdentity {
    UsbIdentity {
        vendor_id: info.vendor_id(),
        product_id: info.product_id(),
        manufacturer: info.manufacturer_string().unwrap_or_default().to_string(),
        product: info.product_string().unwrap_or_default().to_string(),
        serial: info.serial_number().unwrap_or_default().to_string(),
    }
}

/// Interface 0 of a gs_usb device, claimed, with its two bulk endpoints.
pub struct NusbTransport {
    interface: Interface,
    ep_in: Mutex<Endpoint<Bulk, In>>,
    ep_out: Mutex<Endpoint<Bulk, Out>>,
    /// A transfer reported the device gone: every later call says so too.
    gone: AtomicBool,
    /// The thread blocked in `bulk_in_next` (unparked by `wake_in`).
    in_waiter: Mutex<Option<Thread>>,
    /// `wake_in` was called: the next (or current) `bulk_in_next` returns `None`.
    in_wake: AtomicBool,
    /// OUT transfers that failed, as submitted, with the error (reaped on the next send).
    out_failed: Mutex<VecDeque<(Vec<u8>, TransportError)>>,
}

/// Unparks the thread waiting for a transfer.
struct Unpark(Thread);

impl Wake for Unpark {
    fn wake(self: Arc<Self>) {
        self.0.unpark();
    }
    fn wake_by_ref(self: &Arc<Self>) {
        self.0.unpark();
    }
}

impl std::fmt::Debug for NusbTransport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NusbTransport").field("interface", &self.interface.interface_number()).finish()
    }
}

impl NusbTransport {
    /// Opens `info` and claims interface 0. `detach`: on Linux, unbind the
    /// kernel's gs_usb driver first (the interface is then no longer a
    /// SocketCAN canN); elsewhere the same as a plain claim. The bulk
    /// endpoints are read from the interface descriptor (first bulk IN,
    /// first bulk OUT), as Linux 6.1 does (`usb_find_common_endpoints`).
    pub fn open(info: &DeviceInfo, detach: bool) -> Result<NusbTransport, TransportError> {
        let device = info.open().wait().map_err(|e| os_err("opening the USB device", e))?;
        let interface =
            if detach { device.detach_and_claim_interface(0).wait() } else { device.claim_interface(0).wait() }
                .map_err(|e| {
                    os_err("claiming interface 0 (on Linux, is the kernel's gs_usb driver bound to it?)", e)
                })?;
        let (mut addr_in, mut addr_out) = (None, None);
        if let Some(desc) = interface.descriptor() {
            for ep in desc.endpoints() {
                if ep.transfer_type() != nusb::descriptors::TransferType::Bulk {
                    continue;
                }
                if ep.address() & 0x80 != 0 {
                    addr_in.get_or_insert(ep.address());
                } else {
                    addr_out.get_or_insert(ep.address());
                }
            }
        }
        let (Some(a_in), Some(a_out)) = (addr_in, addr_out) else {
            return Err(TransportError::Other("interface 0 has no bulk IN and OUT endpoints".into()));
        };
        let ep_in = interface.endpoint::<Bulk, In>(a_in).map_err(|e| os_err("bulk IN endpoint", e))?;
        let ep_out = interface.endpoint::<Bulk, Out>(a_out).map_err(|e| os_err("bulk OUT endpoint", e))?;
        Ok(NusbTransport {
            interface,
            ep_in: Mutex::new(ep_in),
            ep_out: Mutex::new(ep_out),
            gone: AtomicBool::new(false),
            in_waiter: Mutex::new(None),
            in_wake: AtomicBool::new(false),
            out_failed: Mutex::new(VecDeque::new()),
        })
    }

    /// Moves completed OUT transfers off the queue; failures are kept for
    /// [`Transport::bulk_out_failed`].
    fn reap_out(&self, ep: &mut Endpoint<Bulk, Out>) {
        while ep.pending() > 0 {
            let Poll::Ready(c) = ep.poll_next_complete(&mut Context::from_waker(Waker::noop())) else { break };
            if let Err(e) = c.status {
                let e = map_err(e);
                if e == TransportError::Disconnected {
                    self.gone.store(true, Relaxed);
                }
                self.out_failed.lock().push_back((c.buffer.to_vec(), e));
            }
        }
    }
}

fn control_type(setup: &ControlSetup) -> ControlType {
    match (setup.request_type >> 5) & 3 {
        0 => ControlType::Standard,
        1 => ControlType::Class,
        _ => ControlType::Vendor,
    }
}

fn recipient(setup: &ControlSetup) -> Recipient {
    match setup.request_type & 0x1F {
        0 => Recipient::Device,
        2 => Recipient::Endpoint,
        3 => Recipient::Other,
        _ => Recipient::Interface,
    }
}

impl Transport for NusbTransport {
    fn control_in(&self, setup: ControlSetup, timeout: Duration) -> Result<Vec<u8>, TransportError> {
        let req = ControlIn {
            control_type: control_type(&setup),
            recipient: recipient(&setup),
            request: setup.request,
            value: setup.value,
            index: setup.index,
            length: setup.length,
        };
        self.interface.control_in(req, timeout).wait().map_err(map_err)
    }

    fn control_out(&self, setup: ControlSetup, data: &[u8], timeout: Duration) -> Result<(), TransportError> {
        let req = ControlOut {
            control_type: control_type(&setup),
            recipient: recipient(&setup),
            request: setup.request,
            value: setup.value,
            index: setup.index,
            data,
        };
        self.interface.control_out(req, timeout).wait().map_err(map_err)
    }

    fn bulk_in_start(&self, len: usize, count: usize) -> Result<(), TransportError> {
        let mut ep = self.ep_in.lock();
        while ep.pending() < count {
            let buf = ep.allocate(len);
            ep.submit(buf);
        }
        Ok(())
    }

    fn bulk_in_next(&self, timeout: Duration) -> Option<Result<Vec<u8>, TransportError>> {
        if self.gone.load(Relaxed) {
            return Some(Err(TransportError::Disconnected));
        }
        let mut ep = self.ep_in.lock();
        if ep.pending() == 0 {
            return Some(Err(TransportError::Other("no bulk IN transfer queued (bulk_in_start first)".into())));
        }
        // Fast path (the drain loop polls with a zero timeout): no waker needed.
        let mut done = match ep.poll_next_complete(&mut Context::from_waker(Waker::noop())) {
            Poll::Ready(c) => Some(c),
            Poll::Pending => None,
        };
        if done.is_none() && !timeout.is_zero() {
            let deadline = Instant::now() + timeout;
            *self.in_waiter.lock() = Some(std::thread::current());
            let waker = Waker::from(Arc::new(Unpark(std::thread::current())));
            let mut cx = Context::from_waker(&waker);
            loop {
                // Polled again after every unpark: spurious ones are harmless.
                if let Poll::Ready(c) = ep.poll_next_complete(&mut cx) {
                    done = Some(c);
                    break;
                }
                let now = Instant::now();
                if self.in_wake.swap(false, Relaxed) || now >= deadline {
                    break;
                }
                std::thread::park_timeout(deadline - now);
            }
            *self.in_waiter.lock() = None;
        }
        let done = done?;
        let result = match done.status {
            Ok(()) => Ok(done.buffer[..done.actual_len.min(done.buffer.len())].to_vec()),
            Err(e) => Err(map_err(e)),
        };
        // Keep the queue full: the buffer goes straight back (unless the device is gone).
        if matches!(result, Err(TransportError::Disconnected)) {
            self.gone.store(true, Relaxed);
        } else {
            let mut buf = done.buffer;
            buf.clear(); // keeps requested_len: the same length goes back
            ep.submit(buf);
        }
        Some(result)
    }

    fn wake_in(&self) {
        self.in_wake.store(true, Relaxed);
        if let Some(t) = self.in_waiter.lock().as_ref() {
            t.unpark();
        }
    }

    fn bulk_out_submit(&self, data: &[u8]) -> Result<(), TransportError> {
        if self.gone.load(Relaxed) {
            return Err(TransportError::Disconnected);
        }
        let mut ep = self.ep_out.lock();
        self.reap_out(&mut ep);
        let mut buf = Buffer::new(data.len());
        buf.extend_from_slice(data);
        ep.submit(buf);
        Ok(())
    }

    fn bulk_out_failed(&self) -> Option<(Vec<u8>, TransportError)> {
        self.reap_out(&mut self.ep_out.lock());
        self.out_failed.lock().pop_front()
    }

    fn bulk_out_pending(&self) -> usize {
        let mut ep = self.ep_out.lock();
        self.reap_out(&mut ep);
        ep.pending()
    }

    fn bulk_out_cancel(&self) {
        let mut ep = self.ep_out.lock();
        ep.cancel_all();
        // Reap what the cancel returns, for at most 200 ms (a transfer still
        // pending then is dropped with the endpoint).
        let deadline = Instant::now() + Duration::from_millis(200);
        while ep.pending() > 0 && Instant::now() < deadline {
            let _ = ep.wait_next_complete(Duration::from_millis(50));
        }
    }

    fn max_packet_size_in(&self) -> usize {
        self.ep_in.lock().max_packet_size()
    }
}
