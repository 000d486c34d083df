//! Drives a gs_usb device through canx's user-space driver (nusb transport):
//! for tests/test_gs_usb_emulator.py in the test VM, against the emulator.
//!
//!   cargo build --no-default-features --example gs_usb_probe
//!   target/debug/examples/gs_usb_probe BITRATE [DBITRATE|-] RECV_COUNT TIMEOUT_S [FRAME...]
//!
//! Opens the first gs_usb device (detaching the kernel driver), starts
//! channel 0, prints `ready`, sends each FRAME (can-utils text, `123#11`),
//! then prints one line per event until RECV_COUNT frames were received or
//! TIMEOUT_S passed: `rx FRAME ts=US`, `tx-done FRAME ts=US`, `other ...`.
//! Exit code 0 when RECV_COUNT frames arrived and every sent frame was
//! confirmed, 1 otherwise, 2 on errors.

use std::time::{Duration, Instant};

use canx::runtime::backend::gs_usb::device::{ChannelConfig, Event, GsUsbDevice, DEFAULT_RX_TRANSFERS};
use canx::runtime::backend::gs_usb::usb::{identity, list, NusbTransport};

fn text(f: &canx_core::Frame) -> String {
    let mut s = String::new();
    let _ = canx_core::log::write_frame(&mut s, f);
    s
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.len() < 4 {
        eprintln!("usage: gs_usb_probe BITRATE DBITRATE|- RECV_COUNT TIMEOUT_S [FRAME...]");
        std::process::exit(2);
    }
    let num = |s: &str| s.parse::<u32>().unwrap_or_else(|_| fail(&format!("not a number: {s}")));
    let bitrate = num(&args[0]);
    let data_bitrate = (args[1] != "-").then(|| num(&args[1]));
    let want = num(&args[2]) as usize;
    let timeout = Duration::from_secs(u64::from(num(&args[3])));
    let frames: Vec<canx_core::Frame> = args[4..]
        .iter()
        .map(|t| canx_core::log::parse_frame(t).unwrap_or_else(|e| fail(&format!("{t}: {e:?}"))))
        .collect();

    let infos = list().unwrap_or_else(|e| fail(&e.to_string()));
    let info = infos.first().unwrap_or_else(|| fail("no gs_usb device found"));
    let id = identity(info);
    let transport = NusbTransport::open(info, true).unwrap_or_else(|e| fail(&e.to_string()));
    let dev = GsUsbDevice::open(transport, id.clone(), Duration::from_secs(5)).unwrap_or_else(|e| fail(&e.to_string()));
    println!(
        "open {:04x}:{:04x} serial={} channels={} sw={}",
        id.vendor_id,
        id.product_id,
        id.serial,
        dev.channel_count(),
        dev.config().sw_version
    );
    let cfg = ChannelConfig { bitrate, data_bitrate, ..ChannelConfig::default() };
    let started = dev.start(0, &cfg).unwrap_or_else(|e| fail(&e.to_string()));
    println!("started {:?}", started.nominal);
    dev.start_rx(DEFAULT_RX_TRANSFERS).unwrap_or_else(|e| fail(&e.to_string()));
    println!("ready");
    for f in &frames {
        dev.send(0, f).unwrap_or_else(|e| fail(&e.to_string()));
    }
    let (mut rx, mut done) = (0, 0);
    let deadline = Instant::now() + timeout;
    while (rx < want || done < frames.len()) && Instant::now() < deadline {
        match dev.poll(Duration::from_millis(200)) {
            Ok(None) => {}
            Ok(Some(Event::Rx { frame, timestamp_us, .. })) => {
                rx += 1;
                println!("rx {} ts={}", text(&frame), timestamp_us.unwrap_or(0));
            }
            Ok(Some(Event::TxDone { frame, timestamp_us, .. })) => {
                done += 1;
                println!("tx-done {} ts={}", text(&frame), timestamp_us.unwrap_or(0));
            }
            Ok(Some(other)) => println!("other {other:?}"),
            Err(e) => fail(&e.to_string()),
        }
    }
    let _ = dev.stop(0);
    println!("end rx={rx} tx-done={done}");
    std::process::exit(if rx >= want && done == frames.len() { 0 } else { 1 });
}

fn fail(msg: &str) -> ! {
    eprintln!("gs_usb_probe: {msg}");
    println!("error {msg}");
    std::process::exit(2);
}
