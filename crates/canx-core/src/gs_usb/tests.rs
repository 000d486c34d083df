use proptest::prelude::*;

use super::bittiming::{calc_bittiming, default_sample_point, BitTimingError, BitTimingLimits};
use super::proto::*;
use crate::frame::{make_id, CanFrame, FdFrame, Frame};

fn hex(s: &str) -> std::vec::Vec<u8> {
    let s: std::string::String = s.chars().filter(|c| !c.is_whitespace()).collect();
    (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap()).collect()
}

// ------------------------------------------------------------------ requests

#[test]
fn setup_packets_follow_the_kernel() {
    // HOST_FORMAT: OUT, wValue 1, wIndex = interface (K61 gs_usb_probe).
    assert_eq!(Request::HostFormat.setup(0, 0).to_bytes(), [0x41, 0, 1, 0, 0, 0, 4, 0]);
    assert_eq!(Request::DeviceConfig.setup(0, 0).to_bytes(), [0xC1, 5, 1, 0, 0, 0, 12, 0]);
    assert_eq!(Request::BtConst.setup(2, 0).to_bytes(), [0xC1, 4, 2, 0, 0, 0, 40, 0]);
    assert_eq!(Request::BtConstExt.setup(1, 0).to_bytes(), [0xC1, 11, 1, 0, 0, 0, 72, 0]);
    assert_eq!(Request::BitTiming.setup(1, 0).to_bytes(), [0x41, 1, 1, 0, 0, 0, 20, 0]);
    assert_eq!(Request::Mode.setup(0, 0).to_bytes(), [0x41, 2, 0, 0, 0, 0, 8, 0]);
    assert_eq!(Request::Timestamp.setup(2, 0).to_bytes(), [0xC1, 6, 0, 0, 0, 0, 4, 0]);
    for n in 0..=255u8 {
        match Request::from_u8(n) {
            Some(r) => assert_eq!(r as u8, n),
            None => assert!(n > 14),
        }
    }
}

// ------------------------------------------------------------------ structs

#[test]
fn structs_golden_bytes() {
    let cfg = DeviceConfig::parse(&hex("000000 01 02000000 01000000")).unwrap();
    assert_eq!(cfg, DeviceConfig { icount: 1, sw_version: 2, hw_version: 1 });
    assert_eq!(cfg.channel_count(), 2);
    assert_eq!(cfg.to_bytes().as_slice(), hex("000000 01 02000000 01000000").as_slice());
    assert_eq!(DeviceConfig::parse(&[0; 11]), Err(DecodeError::Short { got: 11, needed: 12 }));

    let mode = DeviceMode { mode: Mode::Start, flags: ModeFlags::HW_TIMESTAMP.union(ModeFlags::FD) };
    assert_eq!(mode.to_bytes().as_slice(), hex("01000000 10010000").as_slice());
    assert_eq!(DeviceMode::parse(&mode.to_bytes()), Ok(mode));
    assert_eq!(DeviceMode::parse(&hex("02000000 00000000")), Err(DecodeError::Mode(2)));

    // 500 kbit/s at 80 MHz as the kernel sent it to the emulator.
    let bt = DeviceBitTiming { prop_seg: 69, phase_seg1: 70, phase_seg2: 20, sjw: 1, brp: 1 };
    assert_eq!(bt.to_bytes().as_slice(), hex("45000000 46000000 14000000 01000000 01000000").as_slice());
    assert_eq!(DeviceBitTiming::parse(&bt.to_bytes()), Ok(bt));

    // candleLight bxCAN at 48 MHz, features LISTEN_ONLY|LOOP_BACK|HW_TIMESTAMP|IDENTIFY
    // plus unknown bits 14 and 31 that must be masked.
    let raw = hex("33400080 00366e01 01000000 10000000 01000000 08000000 04000000 01000000 00040000 01000000");
    let c = BtConst::parse(&raw).unwrap();
    assert_eq!(c.feature.bits(), 0x33);
    assert!(c.feature.contains(Features::HW_TIMESTAMP));
    assert_eq!(c.fclk_can, 24_000_000);
    assert_eq!(
        c.nominal,
        BitTimingLimits {
            tseg1_min: 1,
            tseg1_max: 16,
            tseg2_min: 1,
            tseg2_max: 8,
            sjw_max: 4,
            brp_min: 1,
            brp_max: 1024,
            brp_inc: 1
        }
    );
    assert_eq!(BtConst::parse(&c.to_bytes()), Ok(c));
    assert!(BtConst::parse(&raw[..39]).is_err());

    let ext = BtConstExt {
        feature: Features::FD.union(Features::BT_CONST_EXT),
        fclk_can: 80_000_000,
        nominal: c.nominal,
        data: BitTimingLimits { tseg1_max: 32, tseg2_max: 16, sjw_max: 16, brp_max: 32, ..c.nominal },
    };
    let bytes = ext.to_bytes();
    assert_eq!(&bytes[..8], hex("00050000 00b4c404").as_slice());
    assert_eq!(&bytes[40..44], [1, 0, 0, 0]);
    assert_eq!(&bytes[44..48], [32, 0, 0, 0]);
    assert_eq!(BtConstExt::parse(&bytes), Ok(ext));
    assert!(BtConstExt::parse(&bytes[..71]).is_err());
}

#[test]
fn mode_flags_only_what_the_device_has() {
    let features = Features::from_bits_truncate(0xFFFF_C013); // LISTEN_ONLY, LOOP_BACK, HW_TIMESTAMP + junk
    assert_eq!(features.bits(), 0x13);
    let wanted = ModeFlags::from_bits_truncate(0xFFFF_FFFF);
    assert_eq!(wanted.bits(), ModeFlags::KNOWN);
    assert_eq!(wanted.restricted_to(features).bits(), 0x13);
    assert!(!wanted.restricted_to(features).contains(ModeFlags::FD));
    assert_eq!(FrameFlags::from_bits_truncate(0xFF).bits(), 0x0F);
}

#[test]
fn quirks_of_cantact_pro_and_identify() {
    let cfg = |sw| DeviceConfig { icount: 0, sw_version: sw, hw_version: 1 };
    let c = BtConst { feature: Features::IDENTIFY, ..BtConst::default() };
    let q = Quirks::detect(0x1d50, 0x606f, "LinkLayer Labs", "CANtact Pro", &cfg(2), &c);
    assert!(q.data_bittiming_is_8 && q.pad_out_by_one && q.identify);
    assert_eq!(q.data_bittiming_request(), 8);
    let q = Quirks::detect(0x1d50, 0x606f, "LinkLayer Labs", "CANtact Pro", &cfg(3), &c);
    assert!(!q.data_bittiming_is_8 && !q.pad_out_by_one);
    assert_eq!(q.data_bittiming_request(), 10);
    let q = Quirks::detect(0x1d50, 0x606f, "bytewerk", "candleLight USB to CAN adapter", &cfg(1), &c);
    assert_eq!(q, Quirks::default()); // IDENTIFY needs sw_version > 1
    let lpc = BtConst { feature: Features::REQ_USB_QUIRK_LPC546XX, ..BtConst::default() };
    assert!(Quirks::detect(0x1209, 0x2323, "", "", &cfg(2), &lpc).pad_out_by_one);
}

// ------------------------------------------------------------------ host frames

#[test]
fn classic_frame_golden_bytes() {
    // research §7: 0x123, DLC 3, 11 22 33, echo id 0 -> 20 bytes.
    let f = Frame::Can(CanFrame::new(make_id(0x123, false).unwrap(), &[0x11, 0x22, 0x33]).unwrap());
    let hf = HostFrame::from_frame(&f, 0, 0);
    let mut buf = [0xAAu8; 100];
    let n = hf.encode(TxLayout::default(), &mut buf).unwrap();
    assert_eq!(&buf[..n], hex("00000000 23010000 03 00 00 00 112233 0000000000").as_slice());
    // In an FD channel the kernel sends 76 bytes; the quirk adds one.
    let layout = TxLayout { fd_channel: true, pad_out_by_one: true };
    assert_eq!(hf.encode(layout, &mut buf), Ok(77));
    assert!(buf[15..77].iter().all(|&b| b == 0));
    assert_eq!(hf.encode(TxLayout::default(), &mut [0; 19]), Err(EncodeError::BufferTooSmall { got: 19, needed: 20 }));
}

#[test]
fn fd_and_extended_frame_golden_bytes() {
    let data: std::vec::Vec<u8> = (1..=12).collect();
    let f = Frame::Fd(FdFrame::new(make_id(0x1234_5678, true).unwrap(), &data, true, false).unwrap());
    let hf = HostFrame::from_frame(&f, 1, 7);
    let mut buf = [0u8; 100];
    let n = hf.encode(TxLayout::default(), &mut buf).unwrap();
    assert_eq!(n, 76);
    assert_eq!(&buf[..24], hex("07000000 78563492 09 01 06 00 0102030405060708090a0b0c").as_slice());
    assert!(buf[24..76].iter().all(|&b| b == 0));
    // The device echoes it with a timestamp after the 64 data bytes.
    let mut echo = hf;
    echo.timestamp_us = Some(0xDEAD_BEEF);
    let m = echo.encode_device(&mut buf).unwrap();
    assert_eq!(m, 80);
    assert_eq!(&buf[76..80], [0xEF, 0xBE, 0xAD, 0xDE]);
    let back = HostFrame::decode(&buf[..80], true).unwrap();
    assert_eq!(back, echo);
    assert_eq!(back.to_frame(), Ok(f));
}

#[test]
fn decode_size_rules() {
    // RX classic, 2 bytes, no timestamps: 12 + 2 bytes suffice.
    let rx = hex("ffffffff 56040000 02 00 00 00 1122");
    let f = HostFrame::decode(&rx, false).unwrap();
    assert!(f.is_rx());
    assert_eq!(f.payload(), [0x11, 0x22]);
    assert_eq!(f.timestamp_us, None);
    assert_eq!(HostFrame::decode(&rx[..13], false), Err(DecodeError::Short { got: 13, needed: 14 }));
    // An echo needs only the header.
    let echo = hex("03000000 56040000 02 00 00 00");
    assert_eq!(HostFrame::decode(&echo, false).unwrap().echo_id, 3);
    // With timestamps the full struct is needed, classic 24 / FD 80.
    let mut ts = hex("ffffffff 56040000 02 00 00 00 1122000000000000 78563412");
    assert_eq!(HostFrame::decode(&ts, true).unwrap().timestamp_us, Some(0x1234_5678));
    assert_eq!(HostFrame::decode(&ts[..23], true), Err(DecodeError::Short { got: 23, needed: 24 }));
    ts[10] = 0x02; // FD: now 80 needed
    assert_eq!(HostFrame::decode(&ts, true), Err(DecodeError::Short { got: 24, needed: 80 }));
    // DLC above 15, unknown flag bits masked, classic DLC 9-15 means 8 bytes.
    assert_eq!(HostFrame::decode(&hex("ffffffff 00000000 10 00 00 00"), false), Err(DecodeError::Dlc(16)));
    let f = HostFrame::decode(&hex("ffffffff 00000000 0f 00 f0 00 0102030405060708"), false).unwrap();
    assert_eq!(f.flags.bits(), 0);
    assert_eq!(f.len(), 8);
    // Remote frame: no data bytes needed.
    let r = HostFrame::decode(&hex("ffffffff 23010040 04 00 00 00"), false).unwrap();
    assert_eq!(r.to_frame().unwrap(), Frame::Can(CanFrame::new_remote(make_id(0x123, false).unwrap(), 4).unwrap()));
}

#[test]
fn error_and_overflow_frames() {
    // CAN_ERR_FLAG | CAN_ERR_CRTL | CAN_ERR_CNT, data[1] = RX_PASSIVE, tec 0x80, rec 0x7f.
    let raw = hex("ffffffff 04020020 08 00 01 00 0010000000008 07f");
    let mut raw8 = raw.clone();
    raw8.resize(20, 0);
    let f = HostFrame::decode(&raw8, false).unwrap();
    assert!(f.flags.contains(FrameFlags::OVERFLOW));
    match f.to_frame().unwrap() {
        Frame::Error(e) => {
            assert_eq!(e.class(), 0x204);
            assert_eq!(e.bus_state(), Some(crate::frame::BusState::ErrorPassive));
        }
        other => panic!("not an error frame: {other:?}"),
    }
}

#[test]
fn dlc_len_round_trip() {
    for len in 0..=64usize {
        let padded = crate::frame::fd_padded_len(len).unwrap();
        let hf = HostFrame::new_rx(0, 0x10, &[0x55; 64][..len], FrameFlags::FD);
        assert_eq!(hf.len(), padded);
    }
    for dlc in 0..=15u8 {
        let mut hf = HostFrame::new_rx(0, 0x10, &[], FrameFlags::default());
        hf.can_dlc = dlc;
        assert_eq!(hf.len(), usize::from(dlc).min(8));
        hf.flags = FrameFlags::FD;
        assert_eq!(Some(hf.len()), crate::frame::dlc_to_len(dlc));
    }
}

proptest! {
    #[test]
    fn decode_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..100), ts in any::<bool>()) {
        if let Ok(f) = HostFrame::decode(&bytes, ts) {
            let _ = f.to_frame();
            let mut buf = [0u8; 100];
            let n = f.encode_device(&mut buf).unwrap();
            // What a device sends decodes to the same frame (data beyond the payload aside).
            let g = HostFrame::decode(&buf[..n], f.timestamp_us.is_some()).unwrap();
            prop_assert_eq!(g.payload(), f.payload());
            prop_assert_eq!((g.echo_id, g.can_id, g.can_dlc, g.flags, g.timestamp_us),
                            (f.echo_id, f.can_id, f.can_dlc, f.flags, f.timestamp_us));
        }
        let _ = DeviceConfig::parse(&bytes);
        let _ = DeviceMode::parse(&bytes);
        let _ = BtConst::parse(&bytes);
        let _ = BtConstExt::parse(&bytes);
        let _ = DeviceState::parse(&bytes);
    }

    #[test]
    fn frames_round_trip(id in 0u32..0x2000_0000, ext in any::<bool>(), len in 0usize..=64, fd in any::<bool>(),
                         brs in any::<bool>(), echo in any::<u32>(), ts in proptest::option::of(any::<u32>())) {
        let raw = if ext { id } else { id & 0x7FF };
        let idv = make_id(raw, ext).unwrap();
        let data: std::vec::Vec<u8> = (0..len as u8).collect();
        let frame = if fd {
            let n = crate::frame::fd_padded_len(len).unwrap();
            let mut d = data.clone();
            d.resize(n, 0);
            Frame::Fd(FdFrame::new(idv, &d, brs, false).unwrap())
        } else {
            Frame::Can(CanFrame::new(idv, &data[..len.min(8)]).unwrap())
        };
        let mut hf = HostFrame::from_frame(&frame, 0, echo);
        hf.echo_id = ECHO_ID_RX;
        hf.timestamp_us = ts;
        let mut buf = [0u8; 100];
        let n = hf.encode_device(&mut buf).unwrap();
        let back = HostFrame::decode(&buf[..n], ts.is_some()).unwrap();
        prop_assert_eq!(back.to_frame().unwrap(), frame);
        prop_assert_eq!(back.timestamp_us, ts);
    }

    #[test]
    fn bittiming_never_panics(clock in any::<u32>(), bitrate in any::<u32>(), sp in 0u32..1200, sjw in 0u32..200,
                              lim in proptest::array::uniform8(prop_oneof![0u32..600, any::<u32>()])) {
        let btc = BitTimingLimits { tseg1_min: lim[0], tseg1_max: lim[1], tseg2_min: lim[2], tseg2_max: lim[3],
                                    sjw_max: lim[4], brp_min: lim[5], brp_max: lim[6], brp_inc: lim[7] };
        if let Ok(bt) = calc_bittiming(clock, &btc, bitrate, sp, sjw) {
            prop_assert!(bt.brp >= 1);
            prop_assert!(bt.sjw >= 1);
        }
    }

    #[test]
    fn bittiming_within_limits(bitrate in 10_000u32..=1_000_000, sp in prop_oneof![Just(0u32), 500u32..=900]) {
        let btc = BitTimingLimits { tseg1_min: 1, tseg1_max: 16, tseg2_min: 1, tseg2_max: 8, sjw_max: 4,
                                    brp_min: 1, brp_max: 1024, brp_inc: 1 };
        match calc_bittiming(48_000_000, &btc, bitrate, sp, 0) {
            Ok(bt) => {
                // Like the kernel, the solver does not enforce tseg1_min: at a low
                // sample point and few quanta it may give tseg1 = 0 (the VM test
                // checks the kernel does the same); everything else is in range.
                if sp == 0 || sp >= 700 {
                    prop_assert!(btc.accepts(&bt.to_device()), "{:?}", bt);
                }
                prop_assert!((1..=8).contains(&bt.phase_seg2) && (1..=1024).contains(&bt.brp), "{:?}", bt);
                let err = u64::from(bitrate.abs_diff(bt.bitrate)) * 1000 / u64::from(bitrate);
                prop_assert!(err <= 50);
                let nominal = if sp == 0 { default_sample_point(bitrate) } else { sp };
                prop_assert!(bt.sample_point <= nominal);
            }
            Err(BitTimingError::BitrateError(e)) => prop_assert!(e > 50),
            Err(e) => prop_assert!(false, "{e}"),
        }
    }
}

// ------------------------------------------------------------------ bit timing

#[test]
fn default_sample_points() {
    assert_eq!(default_sample_point(500_000), 875);
    assert_eq!(default_sample_point(500_001), 800);
    assert_eq!(default_sample_point(800_000), 800);
    assert_eq!(default_sample_point(1_000_000), 750);
}

#[test]
fn bittiming_errors() {
    let btc = BitTimingLimits {
        tseg1_min: 1,
        tseg1_max: 16,
        tseg2_min: 1,
        tseg2_max: 8,
        sjw_max: 4,
        brp_min: 1,
        brp_max: 1024,
        brp_inc: 1,
    };
    assert_eq!(calc_bittiming(48_000_000, &btc, 0, 0, 0), Err(BitTimingError::InvalidArgument));
    assert_eq!(calc_bittiming(48_000_000, &btc, 500_000, 1001, 0), Err(BitTimingError::InvalidArgument));
    let huge = BitTimingLimits { tseg1_max: u32::MAX, ..btc };
    assert_eq!(calc_bittiming(48_000_000, &huge, 500_000, 0, 0), Err(BitTimingError::InvalidArgument));
    // 20 Mbit/s from 48 MHz needs at least 2.4 tq per bit: no prescaler fits.
    assert!(calc_bittiming(48_000_000, &btc, 20_000_000, 0, 0).is_err());
    // 1 kbit/s would need brp > 1024.
    assert_eq!(calc_bittiming(48_000_000, &btc, 1_000, 0, 0), Err(BitTimingError::NoSolution));
    // sjw: asked for 3, limited by sjw_max and phase_seg2.
    let bt = calc_bittiming(48_000_000, &btc, 500_000, 0, 3).unwrap();
    assert_eq!(bt.sjw, 3.min(bt.phase_seg2));
    let bt = calc_bittiming(48_000_000, &btc, 500_000, 0, 9).unwrap();
    assert_eq!(bt.sjw, 4.min(bt.phase_seg2));
}

/// The kernel's own results (tests/data/gs_usb_bittiming.csv, recorded from
/// Linux 6.1 in the test VM through the gs_usb emulator): same input, same output.
#[test]
fn bittiming_matches_the_kernel() {
    let table = include_str!("../../../../tests/data/gs_usb_bittiming.csv");
    let mut rows = 0;
    for line in table.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#')) {
        let cols: std::vec::Vec<&str> = line.split(',').collect();
        if cols[0] == "profile" {
            continue;
        }
        assert_eq!(cols.len(), 21, "{line}");
        let n: std::vec::Vec<u32> = cols[2..13].iter().map(|c| c.trim().parse().unwrap()).collect();
        let btc = BitTimingLimits {
            tseg1_min: n[1],
            tseg1_max: n[2],
            tseg2_min: n[3],
            tseg2_max: n[4],
            sjw_max: n[5],
            brp_min: n[6],
            brp_max: n[7],
            brp_inc: n[8],
        };
        let result = calc_bittiming(n[0], &btc, n[9], n[10], 0);
        rows += 1;
        if cols[13] == "ERR" {
            assert!(result.is_err(), "{line}: the kernel refused, canx gives {result:?}");
            continue;
        }
        let want: std::vec::Vec<u32> = cols[13..].iter().map(|c| c.trim().parse().unwrap()).collect();
        let bt = result.unwrap_or_else(|e| panic!("{line}: {e}"));
        let got = [bt.bitrate, bt.sample_point, bt.tq_ns, bt.prop_seg, bt.phase_seg1, bt.phase_seg2, bt.sjw, bt.brp];
        assert_eq!(got.as_slice(), want.as_slice(), "{line}");
    }
    assert!(rows >= 10, "only {rows} rows in gs_usb_bittiming.csv");
}
