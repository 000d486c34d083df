//! The driver against an in-process mock gs_usb device (the same behaviour
//! as tests/vm/gs_usb_emulator.py, which the kernel's driver accepts).

use std::collections::VecDeque;
use std::time::Duration;

use parking_lot::Mutex;

use canx_core::gs_usb::proto::ECHO_ID_RX;
use canx_core::gs_usb::{
    calc_bittiming, BitTimingLimits, BtConst, BtConstExt, ControlSetup, DeviceBitTiming, DeviceConfig, DeviceMode,
    Features, FrameFlags, HostFrame, Mode, ModeFlags, Request,
};
use canx_core::{frame::make_id, CanFrame, FdFrame, Frame};

use super::device::*;
use super::{Transport, TransportError};

const T: Duration = Duration::from_millis(100);

fn limits(t1: u32, t2: u32, sjw: u32, brp: u32) -> BitTimingLimits {
    BitTimingLimits {
        tseg1_min: 1,
        tseg1_max: t1,
        tseg2_min: 1,
        tseg2_max: t2,
        sjw_max: sjw,
        brp_min: 1,
        brp_max: brp,
        brp_inc: 1,
    }
}

/// A mock device: answers control requests from its BT_CONST, records what
/// the host sent, echoes OUT frames (with a timestamp when started so).
struct Mock {
    config: DeviceConfig,
    bt: BtConstExt,
    mps: usize,
    log: Mutex<Vec<(ControlSetup, Vec<u8>)>>,
    out: Mutex<Vec<Vec<u8>>>,
    inq: Mutex<VecDeque<Vec<u8>>>,
    /// Notified by push_in and wake_in: bulk_in_next blocks like nusb's.
    in_ready: parking_lot::Condvar,
    woken: std::sync::atomic::AtomicBool,
    /// OUT transfers to report as failed (bulk_out_failed).
    out_failed: Mutex<VecDeque<(Vec<u8>, TransportError)>>,
    in_started: Mutex<Option<(usize, usize)>>,
    ts: Mutex<u32>,
    echo: bool,
    stall: Option<u8>,
}

impl Mock {
    fn new(feature: Features, channels: u8) -> Mock {
        Mock {
            config: DeviceConfig { icount: channels - 1, sw_version: 2, hw_version: 1 },
            bt: BtConstExt {
                feature,
                fclk_can: 80_000_000,
                nominal: limits(256, 128, 128, 512),
                data: limits(32, 16, 16, 32),
            },
            mps: 512,
            log: Mutex::new(Vec::new()),
            out: Mutex::new(Vec::new()),
            inq: Mutex::new(VecDeque::new()),
            in_ready: parking_lot::Condvar::new(),
            woken: std::sync::atomic::AtomicBool::new(false),
            out_failed: Mutex::new(VecDeque::new()),
            in_started: Mutex::new(None),
            ts: Mutex::new(0),
            echo: true,
            stall: None,
        }
    }
    fn requests(&self) -> Vec<(u8, u16)> {
        self.log.lock().iter().map(|(s, _)| (s.request, s.value)).collect()
    }
    fn payload(&self, request: u8) -> Vec<u8> {
        self.log.lock().iter().rev().find(|(s, _)| s.request == request).map(|(_, d)| d.clone()).unwrap()
    }
    fn push_in(&self, f: &HostFrame) {
        let mut buf = [0u8; 80];
        let n = f.encode_device(&mut buf).unwrap();
        self.inq.lock().push_back(buf[..n].to_vec());
        self.in_ready.notify_all();
    }
    fn started_flags(&self) -> ModeFlags {
        DeviceMode::parse(&self.payload(Request::Mode as u8)).unwrap().flags
    }
}

impl Transport for Mock {
    fn control_in(&self, setup: ControlSetup, _t: Duration) -> Result<Vec<u8>, TransportError> {
        assert_eq!(setup.request_type, 0xC1, "{}", describe(&setup));
        self.log.lock().push((setup, Vec::new()));
        if self.stall == Some(setup.request) {
            return Err(TransportError::Stall);
        }
        let ch_ok = u32::from(setup.value) <= u32::from(self.config.icount);
        let mut reply = match Request::from_u8(setup.request) {
            Some(Request::DeviceConfig) => self.config.to_bytes().to_vec(),
            Some(Request::BtConst) if ch_ok => {
                BtConst { feature: self.bt.feature, fclk_can: self.bt.fclk_can, nominal: self.bt.nominal }
                    .to_bytes()
                    .to_vec()
            }
            Some(Request::BtConstExt) if ch_ok && self.bt.feature.contains(Features::BT_CONST_EXT) => {
                self.bt.to_bytes().to_vec()
            }
            Some(Request::Timestamp) => self.ts.lock().to_le_bytes().to_vec(),
            _ => return Err(TransportError::Stall),
        };
        reply.truncate(setup.length as usize);
        Ok(reply)
    }
    fn control_out(&self, setup: ControlSetup, data: &[u8], _t: Duration) -> Result<(), TransportError> {
        assert_eq!(setup.request_type, 0x41, "{}", describe(&setup));
        assert_eq!(data.len(), setup.length as usize, "{}", describe(&setup));
        self.log.lock().push((setup, data.to_vec()));
        if self.stall == Some(setup.request) {
            return Err(TransportError::Stall);
        }
        if setup.request == Request::BitTiming as u8 {
            // candleLight stalls timings outside BT_CONST (CLF can_set_bittiming).
            if !self.bt.nominal.accepts(&DeviceBitTiming::parse(data).unwrap()) {
                return Err(TransportError::Stall);
            }
        }
        Ok(())
    }
    fn bulk_in_start(&self, len: usize, count: usize) -> Result<(), TransportError> {
        *self.in_started.lock() = Some((len, count));
        Ok(())
    }
    fn bulk_in_next(&self, t: Duration) -> Option<Result<Vec<u8>, TransportError>> {
        use std::sync::atomic::Ordering::Relaxed;
        let deadline = std::time::Instant::now() + t;
        let mut q = self.inq.lock();
        loop {
            if let Some(b) = q.pop_front() {
                return Some(Ok(b));
            }
            if self.woken.swap(false, Relaxed) || self.in_ready.wait_until(&mut q, deadline).timed_out() {
                return q.pop_front().map(Ok);
            }
        }
    }
    fn wake_in(&self) {
        let _q = self.inq.lock();
        self.woken.store(true, std::sync::atomic::Ordering::Relaxed);
        self.in_ready.notify_all();
    }
    fn bulk_out_failed(&self) -> Option<(Vec<u8>, TransportError)> {
        self.out_failed.lock().pop_front()
    }
    fn bulk_out_pending(&self) -> usize {
        0
    }
    fn bulk_out_cancel(&self) {}
    fn bulk_out_submit(&self, data: &[u8]) -> Result<(), TransportError> {
        self.out.lock().push(data.to_vec());
        if self.echo {
            let ts_on = self.started_flags().contains(ModeFlags::HW_TIMESTAMP);
            let mut hf = HostFrame::decode(data, false).unwrap();
            hf.timestamp_us = ts_on.then(|| {
                let mut t = self.ts.lock();
                *t = t.wrapping_add(1000);
                *t
            });
            self.push_in(&hf);
        }
        Ok(())
    }
    fn max_packet_size_in(&self) -> usize {
        self.mps
    }
}

fn ident() -> UsbIdentity {
    UsbIdentity { vendor_id: 0x1d50, product_id: 0x606f, ..UsbIdentity::default() }
}

fn classic(id: u32, data: &[u8]) -> Frame {
    Frame::Can(CanFrame::new(make_id(id, false).unwrap(), data).unwrap())
}

const FD_FEATURES: Features = Features::LISTEN_ONLY
    .union(Features::LOOP_BACK)
    .union(Features::HW_TIMESTAMP)
    .union(Features::FD)
    .union(Features::BT_CONST_EXT);

#[test]
fn open_sequence_is_the_kernels() {
    let dev = GsUsbDevice::open(Mock::new(FD_FEATURES, 2), ident(), T).unwrap();
    let m = dev.transport();
    // HOST_FORMAT(wValue 1), DEVICE_CONFIG(1), then per channel BT_CONST, BT_CONST_EXT.
    assert_eq!(m.requests(), vec![(0, 1), (5, 1), (4, 0), (11, 0), (4, 1), (11, 1)]);
    assert_eq!(m.payload(0), 0x0000_beef_u32.to_le_bytes());
    assert_eq!(dev.channel_count(), 2);
    assert!(dev.bt_const(1).is_ok());
    assert_eq!(dev.bt_const(2).unwrap_err(), GsUsbError::NoSuchChannel(2));
    dev.start_rx(DEFAULT_RX_TRANSFERS).unwrap();
    // IN transfers are multiples of wMaxPacketSize (512 >= 80).
    assert_eq!(*m.in_started.lock(), Some((512, 32)));
}

#[test]
fn open_fails_cleanly() {
    let mut m = Mock::new(Features::default(), 1);
    m.stall = Some(Request::BtConst as u8);
    let e = GsUsbDevice::open(m, ident(), T).unwrap_err();
    assert_eq!(e, GsUsbError::Transport { context: "BT_CONST".into(), error: TransportError::Stall });
    let m =
        Mock { config: DeviceConfig { icount: 7, sw_version: 2, hw_version: 1 }, ..Mock::new(Features::default(), 1) };
    assert!(matches!(GsUsbDevice::open(m, ident(), T), Err(GsUsbError::Unsupported(_))));
}

#[test]
fn start_programs_the_kernels_bit_timing_and_only_known_flags() {
    let dev = GsUsbDevice::open(Mock::new(FD_FEATURES, 1), ident(), T).unwrap();
    let cfg =
        ChannelConfig { bitrate: 500_000, data_bitrate: Some(2_000_000), listen_only: true, ..Default::default() };
    let s = dev.start(0, &cfg).unwrap();
    let m = dev.transport();
    // 500k / 2M at 80 MHz: the kernel's values (tests/data/gs_usb_bittiming.csv).
    assert_eq!(
        DeviceBitTiming::parse(&m.payload(1)).unwrap(),
        DeviceBitTiming { prop_seg: 69, phase_seg1: 70, phase_seg2: 20, sjw: 1, brp: 1 }
    );
    assert_eq!(
        DeviceBitTiming::parse(&m.payload(10)).unwrap(),
        DeviceBitTiming { prop_seg: 14, phase_seg1: 15, phase_seg2: 10, sjw: 1, brp: 1 }
    );
    let mode = DeviceMode::parse(&m.payload(2)).unwrap();
    assert_eq!(mode.mode, Mode::Start);
    assert_eq!(mode.flags, ModeFlags::LISTEN_ONLY.union(ModeFlags::FD).union(ModeFlags::HW_TIMESTAMP));
    assert_eq!(s.flags, mode.flags);
    assert_eq!(m.requests()[4..], [(1, 0), (10, 0), (2, 0)]);
    dev.stop(0).unwrap();
    assert_eq!(DeviceMode::parse(&m.payload(2)).unwrap().mode, Mode::Reset);
}

#[test]
fn start_refuses_what_the_device_lacks() {
    let dev = GsUsbDevice::open(Mock::new(Features::HW_TIMESTAMP, 1), ident(), T).unwrap();
    let refuse = |cfg: ChannelConfig| dev.start(0, &cfg).unwrap_err();
    assert_eq!(
        refuse(ChannelConfig { bitrate: 500_000, listen_only: true, ..Default::default() }),
        GsUsbError::Unsupported("listen-only".into())
    );
    assert_eq!(
        refuse(ChannelConfig { bitrate: 500_000, data_bitrate: Some(2_000_000), ..Default::default() }),
        GsUsbError::Unsupported("CAN FD".into())
    );
    assert!(matches!(refuse(ChannelConfig { bitrate: 0, ..Default::default() }), GsUsbError::BitTiming(_)));
    assert!(matches!(
        dev.start(3, &ChannelConfig { bitrate: 500_000, ..Default::default() }),
        Err(GsUsbError::NoSuchChannel(3))
    ));
    // Nothing was sent for the refused starts.
    assert!(dev.transport().requests().iter().all(|&(r, _)| r != Request::Mode as u8));
}

#[test]
fn cantact_pro_quirks() {
    let id = UsbIdentity { manufacturer: "LinkLayer Labs".into(), product: "CANtact Pro".into(), ..ident() };
    let dev = GsUsbDevice::open(Mock::new(FD_FEATURES, 1), id, T).unwrap();
    assert!(dev.quirks().data_bittiming_is_8 && dev.quirks().pad_out_by_one);
    dev.start(0, &ChannelConfig { bitrate: 500_000, data_bitrate: Some(2_000_000), ..Default::default() }).unwrap();
    let m = dev.transport();
    assert_eq!(m.requests()[4..], [(1, 0), (8, 0), (2, 0)]); // DATA_BITTIMING as request 8
    dev.send(0, &classic(0x123, &[1])).unwrap();
    assert_eq!(m.out.lock()[0].len(), 77); // FD channel: 76 + pad byte
}

#[test]
fn send_echo_and_slots() {
    let mut m = Mock::new(FD_FEATURES, 1);
    m.echo = false;
    let dev = GsUsbDevice::open(m, ident(), T).unwrap();
    assert_eq!(dev.send(0, &classic(1, &[])), Err(GsUsbError::NotStarted(0)));
    dev.start(0, &ChannelConfig { bitrate: 250_000, ..Default::default() }).unwrap();
    let fd = Frame::Fd(FdFrame::new(make_id(5, false).unwrap(), &[0; 12], true, false).unwrap());
    assert!(matches!(dev.send(0, &fd), Err(GsUsbError::Unsupported(_))));
    let ids: Vec<u32> = (0..DEFAULT_TX_SLOTS).map(|i| dev.send(0, &classic(i as u32, &[i as u8])).unwrap()).collect();
    assert_eq!(ids, (0..DEFAULT_TX_SLOTS as u32).collect::<Vec<_>>());
    assert_eq!(dev.send(0, &classic(0x7FF, &[])), Err(GsUsbError::NoFreeSlot));
    let m = dev.transport();
    assert!(m.out.lock().iter().all(|b| b.len() == 20)); // classic channel: 20-byte frames
                                                         // The device echoes slot 3 (with a timestamp): the frame is confirmed, the slot free.
    let mut echo = HostFrame::decode(&m.out.lock()[3], false).unwrap();
    echo.timestamp_us = Some(77);
    m.push_in(&echo);
    assert_eq!(
        dev.poll(T).unwrap(),
        Some(Event::TxDone { channel: 0, frame: classic(3, &[3]), timestamp_us: Some(77) })
    );
    assert_eq!(dev.send(0, &classic(0x7FF, &[])), Ok(3));
    // The same echo again, and an id out of range: counted, ignored.
    m.push_in(&echo);
    echo.echo_id = 4000;
    m.push_in(&echo);
    assert_eq!(
        dev.poll(T).unwrap(),
        Some(Event::TxDone { channel: 0, frame: classic(0x7FF, &[]), timestamp_us: Some(77) })
    );
    assert_eq!(dev.poll(T).unwrap(), Some(Event::UnknownEcho(4000)));
    assert_eq!(dev.unknown_echoes(), 1);
    assert_eq!(dev.poll(T).unwrap(), None);
}

#[test]
fn receive_frames_errors_overflow_and_timestamp_wrap() {
    let dev = GsUsbDevice::open(Mock::new(FD_FEATURES, 1), ident(), T).unwrap();
    dev.start(0, &ChannelConfig { bitrate: 500_000, data_bitrate: Some(2_000_000), ..Default::default() }).unwrap();
    let m = dev.transport();
    let mut f = HostFrame::new_rx(0, 0x8000_0000 | 0x1234_5678, &[1, 2, 3], FrameFlags::default());
    f.timestamp_us = Some(0xFFFF_FF00);
    m.push_in(&f);
    let mut g = HostFrame::new_rx(0, 0x42, &[9; 20], FrameFlags::FD.union(FrameFlags::BRS).union(FrameFlags::OVERFLOW));
    g.timestamp_us = Some(0x10); // wrapped
    m.push_in(&g);
    let mut e = HostFrame::new_rx(0, 0x2000_0004, &[0, 0x30, 0, 0, 0, 0, 0x80, 0x90], FrameFlags::default());
    e.timestamp_us = Some(0x20);
    m.push_in(&e);
    let Some(Event::Rx { frame, timestamp_us, overflow, .. }) = dev.poll(T).unwrap() else { panic!() };
    assert_eq!(frame, Frame::Can(CanFrame::new(make_id(0x1234_5678, true).unwrap(), &[1, 2, 3]).unwrap()));
    assert_eq!((timestamp_us, overflow), (Some(0xFFFF_FF00), false));
    let Some(Event::Rx { frame, timestamp_us, overflow, .. }) = dev.poll(T).unwrap() else { panic!() };
    assert!(matches!(frame, Frame::Fd(ref fd) if fd.brs() && fd.data() == [9; 20]));
    assert_eq!((timestamp_us, overflow), (Some((1 << 32) | 0x10), true));
    let Some(Event::Rx { frame: Frame::Error(err), timestamp_us, .. }) = dev.poll(T).unwrap() else { panic!() };
    assert_eq!(err.bus_state(), Some(canx_core::BusState::ErrorPassive));
    assert_eq!(timestamp_us, Some((1 << 32) | 0x20));
    // A short transfer and a frame for a channel the device does not have.
    m.inq.lock().push_back(vec![0xFF; 11]);
    m.inq.lock().push_back(vec![0xFF, 0xFF, 0xFF, 0xFF, 1, 0, 0, 0, 8, 0, 0, 0, 0xAA]);
    m.inq.lock().push_back({
        let mut b = vec![0; 24];
        b[..4].copy_from_slice(&ECHO_ID_RX.to_le_bytes());
        b[9] = 5;
        b
    });
    assert!(matches!(dev.poll(T).unwrap(), Some(Event::Malformed(_))));
    // Channel 0 runs with timestamps: the whole 24-byte struct is needed.
    assert_eq!(
        dev.poll(T).unwrap(),
        Some(Event::Malformed(canx_core::gs_usb::DecodeError::Short { got: 13, needed: 24 }))
    );
    assert_eq!(dev.poll(T).unwrap(), Some(Event::BadChannel(5)));
}

#[test]
fn timestamp_unwrap() {
    let mut u = TimestampUnwrap::default();
    assert_eq!(u.unwrap(10), 10);
    assert_eq!(u.unwrap(5), 5); // a small step back (reordering) is not a wrap
    assert_eq!(u.unwrap(u32::MAX - 1), u64::from(u32::MAX - 1));
    assert_eq!(u.unwrap(3), (1 << 32) + 3);
    assert_eq!(u.unwrap(u32::MAX), (1 << 32) + u64::from(u32::MAX));
    assert_eq!(u.unwrap(0), 2 << 32);
}

#[test]
fn solver_and_device_agree() {
    // What start() programs is calc_bittiming's answer for the device's BT_CONST.
    let dev = GsUsbDevice::open(Mock::new(Features::HW_TIMESTAMP, 1), ident(), T).unwrap();
    for rate in [125_000, 250_000, 1_000_000] {
        let s = dev.start(0, &ChannelConfig { bitrate: rate, sample_point: 800, ..Default::default() }).unwrap();
        let c = dev.bt_const(0).unwrap();
        assert_eq!(s.nominal, calc_bittiming(c.fclk_can, &c.nominal, rate, 800, 0).unwrap());
        assert_eq!(DeviceBitTiming::parse(&dev.transport().payload(1)).unwrap(), s.nominal.to_device());
    }
}

// ------------------------------------------------------------------ Backend

mod backend {
    use super::*;
    use crate::runtime::backend::gs_usb::backend::{GsUsbBackend, SharedDevice};
    use crate::runtime::backend::{Backend, BusConfig, Channel};
    use crate::runtime::{Error, Origin};
    use std::sync::Arc;

    fn config(receive_own: bool) -> BusConfig {
        let mut c = BusConfig::new(Channel::virtual_bus("unused"));
        c.bitrate = 500_000;
        c.receive_own = receive_own;
        c
    }

    #[test]
    fn frames_both_ways_with_own_echoes_and_hardware_time() {
        let b = GsUsbBackend::open(Mock::new(FD_FEATURES, 1), ident(), &config(true)).unwrap();
        assert!(b.capabilities().hardware_timestamps && b.capabilities().bitrate_control);
        b.send(&classic(0x123, &[0xDE, 0xAD]), T).unwrap();
        let m = b.device().transport();
        let mut rx = HostFrame::new_rx(0, 0x456, &[1, 2], FrameFlags::default());
        rx.timestamp_us = Some(1_000_000 + 5_000); // 4 ms after the echo (stamped 1000 µs)
        m.push_in(&rx);
        let mut out = Vec::new();
        b.recv_batch(&mut out, T).unwrap();
        assert_eq!(out.len(), 2, "{out:?}");
        assert_eq!((out[0].frame, out[0].origin), (classic(0x123, &[0xDE, 0xAD]), Origin::Own));
        assert_eq!((out[1].frame, out[1].origin), (classic(0x456, &[1, 2]), Origin::Bus));
        // Device time keeps its spacing in epoch seconds (one anchor).
        let dt = out[1].timestamp - out[0].timestamp;
        assert!((dt - 1.004).abs() < 1e-6, "{dt}");
        // Nothing more: recv_batch returns after its timeout with nothing.
        out.clear();
        b.recv_batch(&mut out, Duration::from_millis(20)).unwrap();
        assert!(out.is_empty());
    }

    #[test]
    fn without_receive_own_echoes_only_free_slots() {
        let b = GsUsbBackend::open(Mock::new(FD_FEATURES, 1), ident(), &config(false)).unwrap();
        for i in 0..25 {
            b.send(&classic(i, &[]), T).unwrap();
            let mut out = Vec::new();
            b.recv_batch(&mut out, Duration::from_millis(5)).unwrap();
            assert!(out.is_empty());
        }
        assert_eq!(b.device().transport().out.lock().len(), 25);
    }

    #[test]
    fn send_times_out_when_the_device_never_echoes() {
        let mut m = Mock::new(FD_FEATURES, 1);
        m.echo = false;
        let b = GsUsbBackend::open(m, ident(), &config(false)).unwrap();
        for i in 0..DEFAULT_TX_SLOTS as u32 {
            b.send(&classic(i, &[]), T).unwrap();
        }
        let t0 = std::time::Instant::now();
        assert!(matches!(b.send(&classic(0x7FF, &[]), Duration::from_millis(30)), Err(Error::SendTimeout)));
        assert!(t0.elapsed() >= Duration::from_millis(30));
    }

    #[test]
    fn silent_fd_and_bad_bitrate() {
        let mut c = config(false);
        c.silent = true;
        let b = GsUsbBackend::open(Mock::new(FD_FEATURES, 1), ident(), &c).unwrap();
        assert!(matches!(b.send(&classic(1, &[]), T), Err(Error::Silent)));
        let mode = DeviceMode::parse(&b.device().transport().payload(2)).unwrap();
        assert!(mode.flags.contains(ModeFlags::LISTEN_ONLY));
        b.close();
        assert_eq!(DeviceMode::parse(&b.device().transport().payload(2)).unwrap().mode, Mode::Reset);
        assert!(matches!(b.send(&classic(1, &[]), T), Err(Error::Closed)));
        let resets = |b: &GsUsbBackend<Mock>| b.device().transport().requests().iter().filter(|r| r.0 == 2).count();
        let before = resets(&b);
        b.close(); // once only
        assert_eq!(resets(&b), before);
        let mut c = config(false);
        c.fd = true; // without data_bitrate
        assert!(matches!(GsUsbBackend::open(Mock::new(FD_FEATURES, 1), ident(), &c), Err(Error::BadChannel(_))));
        let mut c = config(false);
        c.silent = true;
        assert!(matches!(
            GsUsbBackend::open(Mock::new(Features::HW_TIMESTAMP, 1), ident(), &c),
            Err(Error::Unsupported(_))
        ));
        let mut c = config(false);
        c.bitrate = 1;
        assert!(matches!(GsUsbBackend::open(Mock::new(FD_FEATURES, 1), ident(), &c), Err(Error::BadChannel(_))));
    }

    #[test]
    fn fd_with_a_data_bitrate_programs_the_data_phase_and_sends_fd_frames() {
        let mut c = config(false);
        c.fd = true;
        c.data_bitrate = Some(2_000_000);
        let b = GsUsbBackend::open(Mock::new(FD_FEATURES, 1), ident(), &c).unwrap();
        assert!(b.capabilities().fd);
        let m = b.device().transport();
        // DATA_BITTIMING (10): the kernel's values for 2M at 80 MHz (tests/data/gs_usb_bittiming.csv).
        assert_eq!(
            DeviceBitTiming::parse(&m.payload(10)).unwrap(),
            DeviceBitTiming { prop_seg: 14, phase_seg1: 15, phase_seg2: 10, sjw: 1, brp: 1 }
        );
        assert!(DeviceMode::parse(&m.payload(2)).unwrap().flags.contains(ModeFlags::FD));
        let fd = Frame::Fd(FdFrame::new(make_id(0x1F0, false).unwrap(), &[0xA5; 64], true, false).unwrap());
        b.send(&fd, T).unwrap();
        let sent = HostFrame::decode(&m.out.lock()[0], false).unwrap();
        assert_eq!(sent.payload(), &[0xA5; 64][..]);
        assert!(sent.flags.contains(FrameFlags::FD) && sent.flags.contains(FrameFlags::BRS));
        // fd without data_bitrate: data_bitrate alone is ignored (classic channel).
        let mut c2 = config(false);
        c2.data_bitrate = Some(2_000_000);
        let b2 = GsUsbBackend::open(Mock::new(FD_FEATURES, 1), ident(), &c2).unwrap();
        assert!(!b2.capabilities().fd);
        assert!(!DeviceMode::parse(&b2.device().transport().payload(2)).unwrap().flags.contains(ModeFlags::FD));
        // A device without the FD feature: a clear Unsupported.
        let Err(Error::Unsupported(msg)) = GsUsbBackend::open(Mock::new(Features::HW_TIMESTAMP, 1), ident(), &c) else {
            panic!("FD accepted on a classic device")
        };
        assert!(msg.contains("CAN FD"), "{msg}");
        // A data rate the solver cannot reach: BadChannel naming it.
        c.data_bitrate = Some(1);
        assert!(matches!(GsUsbBackend::open(Mock::new(FD_FEATURES, 1), ident(), &c), Err(Error::BadChannel(_))));
    }

    #[test]
    fn the_tx_watchdog_names_a_device_that_never_echoes() {
        let mut m = Mock::new(FD_FEATURES, 1);
        m.echo = false;
        let b = GsUsbBackend::open(m, ident(), &config(false)).unwrap();
        for i in 0..DEFAULT_TX_SLOTS as u32 {
            b.send(&classic(i, &[]), T).unwrap();
        }
        // A send that may wait longer than the echo timeout ends at the
        // watchdog with an error that says what is wrong, not at its own timeout.
        let t0 = std::time::Instant::now();
        let Err(Error::Os { context, source }) = b.send(&classic(0x7FF, &[]), Duration::from_secs(30)) else {
            panic!("no watchdog error")
        };
        assert!(t0.elapsed() < Duration::from_secs(20));
        assert!(context.contains("not confirmed (echoed) the 10 frames"), "{context}");
        assert_eq!(source.kind(), std::io::ErrorKind::TimedOut);
    }

    #[test]
    fn a_failed_out_transfer_frees_its_slot_and_is_reported() {
        let mut m = Mock::new(FD_FEATURES, 1);
        m.echo = false;
        let b = GsUsbBackend::open(m, ident(), &config(false)).unwrap();
        for i in 0..DEFAULT_TX_SLOTS as u32 {
            b.send(&classic(i, &[]), T).unwrap();
        }
        let m = b.device().transport();
        let sent = m.out.lock()[4].clone();
        m.out_failed.lock().push_back((sent, TransportError::Stall));
        assert!(matches!(b.send(&classic(0x7FF, &[]), T), Err(Error::Os { .. })));
        assert_eq!(b.device().in_flight(), DEFAULT_TX_SLOTS - 1);
        b.send(&classic(0x7FF, &[]), T).unwrap(); // slot 4 again
        assert_eq!(HostFrame::decode(m.out.lock().last().unwrap(), false).unwrap().echo_id, 4);
    }

    #[test]
    fn wake_ends_a_long_wait_at_once() {
        let b = Arc::new(GsUsbBackend::open(Mock::new(FD_FEATURES, 1), ident(), &config(false)).unwrap());
        let b2 = b.clone();
        let t = std::thread::spawn(move || {
            let t0 = std::time::Instant::now();
            let mut out = Vec::new();
            b2.recv_batch(&mut out, Duration::from_secs(30)).unwrap();
            t0.elapsed()
        });
        std::thread::sleep(Duration::from_millis(50));
        b.wake();
        assert!(t.join().unwrap() < Duration::from_secs(20));
    }

    #[test]
    fn two_channels_share_one_device() {
        let shared = Arc::new(SharedDevice::open(Mock::new(FD_FEATURES, 2), ident()).unwrap());
        let b0 = GsUsbBackend::on_channel(shared.clone(), 0, &config(true)).unwrap();
        let mut c1 = config(false);
        c1.bitrate = 125_000;
        let b1 = Arc::new(GsUsbBackend::on_channel(shared.clone(), 1, &c1).unwrap());
        assert!(matches!(GsUsbBackend::on_channel(shared.clone(), 1, &c1), Err(Error::BadChannel(_))));
        assert!(matches!(GsUsbBackend::on_channel(shared.clone(), 2, &c1), Err(Error::BadChannel(_))));
        let m = shared.device().transport();
        // Each channel got its own bit timing (BITTIMING with wValue = channel).
        let timings: Vec<u16> = m.requests().iter().filter(|r| r.0 == 1).map(|r| r.1).collect();
        assert_eq!(timings, [0, 1]);
        // Bus 1's thread waits while bus 0's thread pumps: frames of channel 1
        // are routed to it, channel 0's stay with bus 0, in order.
        let b1t = b1.clone();
        let rx1 = std::thread::spawn(move || {
            let mut got = Vec::new();
            while got.len() < 3 {
                let mut out = Vec::new();
                b1t.recv_batch(&mut out, Duration::from_secs(5)).unwrap();
                got.extend(out.into_iter().map(|f| f.frame));
            }
            got
        });
        let stamped = |ch: u8, id: u32, d: u8| {
            let mut f = HostFrame::new_rx(ch, id, &[d], FrameFlags::default());
            f.timestamp_us = Some(u32::from(d) * 10); // both channels started with HW_TIMESTAMP
            f
        };
        for i in 0..3u32 {
            m.push_in(&stamped(1, 0x100 + i, i as u8));
            m.push_in(&stamped(0, 0x200 + i, i as u8));
        }
        b0.send(&classic(0x300, &[]), T).unwrap(); // own echo (receive_own on bus 0)
        let mut got0 = Vec::new();
        while got0.len() < 4 {
            let mut out = Vec::new();
            b0.recv_batch(&mut out, Duration::from_millis(200)).unwrap();
            got0.extend(out.into_iter().map(|f| f.frame));
        }
        assert_eq!(got0, [classic(0x200, &[0]), classic(0x201, &[1]), classic(0x202, &[2]), classic(0x300, &[])]);
        assert_eq!(rx1.join().unwrap(), [classic(0x100, &[0]), classic(0x101, &[1]), classic(0x102, &[2])]);
        // Channel 1 sends with its own channel byte.
        b1.send(&classic(0x7, &[]), T).unwrap();
        assert_eq!(HostFrame::decode(m.out.lock().last().unwrap(), false).unwrap().channel, 1);
        // Closing one channel resets it only; the other keeps working.
        b1.close();
        let resets: Vec<u16> = m
            .log
            .lock()
            .iter()
            .filter(|(s, d)| s.request == 2 && DeviceMode::parse(d).unwrap().mode == Mode::Reset)
            .map(|(s, _)| s.value)
            .collect();
        assert_eq!(resets, [1]);
        b0.send(&classic(0x8, &[]), T).unwrap();
    }

    #[test]
    fn channel_names() {
        let c = Channel::parse("gs_usb:0", None).unwrap();
        assert_eq!((c.scheme(), c.name()), ("gs_usb", "0"));
        assert_eq!(c.to_string(), "gs_usb:0");
        assert!(Channel::parse("gs_usb:ABC123", None).is_ok());
        assert!(Channel::parse("0", Some("gs_usb")).is_ok());
        assert!(matches!(Channel::parse("gs_usb:a/b", None), Err(Error::BadChannel(_))));
        assert!(Channel::parse("gs_usb:0:1", None).is_ok());
        assert!(Channel::parse("gs_usb:ABC123:2", None).is_ok());
        for bad in ["gs_usb:0:3", "gs_usb:0:x", "gs_usb::1", "gs_usb:0:1:2"] {
            assert!(matches!(Channel::parse(bad, None), Err(Error::BadChannel(_))), "{bad}");
        }
    }
}
