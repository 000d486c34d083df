//! [`Transport`] over the `nusb` crate: finding gs_usb devices, claiming
//! interface 0, control transfers, a queue of bulk IN transfers, bulk OUT.
//!
//! nusb 0.2 (pure Rust): Linux usbfs, Windows WinUSB (control transfers go
//! through the interface; `wIndex` low byte = interface number, which gs_usb
//! satisfies), macOS IOKit. IN transfer lengths must be multiples of
//! wMaxPacketSize (nusb refuses others).

use std::time::Duration;

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
    gone: std::sync::atomic::AtomicBool,
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
        Ok(NusbTransport { interface, ep_in: Mutex::new(ep_in), ep_out: Mutex::new(ep_out), gone: Default::default() })
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
        use std::sync::atomic::Ordering::Relaxed;
        if self.gone.load(Relaxed) {
            return Some(Err(TransportError::Disconnected));
        }
        let mut ep = self.ep_in.lock();
        if ep.pending() == 0 {
            return Some(Err(TransportError::Other("no bulk IN transfer queued (bulk_in_start first)".into())));
        }
        let done = ep.wait_next_complete(timeout)?;
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

    fn bulk_out(&self, data: &[u8], timeout: Duration) -> Result<(), TransportError> {
        if self.gone.load(std::sync::atomic::Ordering::Relaxed) {
            return Err(TransportError::Disconnected);
        }
        let mut ep = self.ep_out.lock();
        // transfer_blocking asserts nothing is pending: the lock makes this
        // the only OUT transfer, and a timed-out one was cancelled and reaped.
        let mut buf = Buffer::new(data.len());
        buf.extend_from_slice(data);
        ep.transfer_blocking(buf, timeout).status.map_err(map_err)
    }

    fn max_packet_size_in(&self) -> usize {
        self.ep_in.lock().max_packet_size()
    }
}
