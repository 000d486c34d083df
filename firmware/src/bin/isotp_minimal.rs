//! Size reference: canx-core's driver and two ISO-TP channels, nothing else.
//!
//! A UDS tester (0x7E0 -> 0x7E8) and an ECU on one in-memory bus, each on
//! its own controller and `canx_core::driver::Driver`: the tester sends
//! ReadDataByIdentifier 0xF190 (a single frame), the ECU answers with the
//! VIN (20 bytes: a first frame and two consecutive frames, with BS 8 and
//! STmin 1 ms in the tester's flow control). Prints the VIN over
//! semihosting and exits. `scripts/build-firmware` reports its flash and
//! static RAM use.
#![no_std]
#![no_main]

use core::cell::RefCell;

use canx_core::driver::mem::{MemBus, MemPort};
use canx_core::driver::Driver;
use canx_core::isotp::{Address, Channel, Config, Event, TargetAddressType};
use canx_core::{Duration, Instant};
use canx_firmware::{TICK, VIN};
use cortex_m_rt::entry;
use cortex_m_semihosting::{debug, hprintln};

type Bus = MemBus<2, 3, 8>;
/// Receive/transmit buffers of each channel: enough for one VIN answer.
const BUF: usize = 64;

fn fail() -> ! {
    debug::exit(debug::EXIT_FAILURE);
    loop {}
}

#[entry]
fn main() -> ! {
    let bus = cortex_m::singleton!(: RefCell<Bus> = RefCell::new(MemBus::new()));
    let bufs = cortex_m::singleton!(: [[u8; BUF]; 4] = [[0; BUF]; 4]);
    let (Some(bus), Some(bufs)) = (bus, bufs) else { fail() };
    let bus: &'static RefCell<Bus> = bus;
    let [t_rx, t_tx, e_rx, e_tx] = bufs;
    let (Ok(t_addr), Ok(e_addr)) = (Address::normal_11(0x7E0, 0x7E8), Address::normal_11(0x7E8, 0x7E0)) else { fail() };
    let t_cfg = Config { bs: 8, stmin: 1, padding: Some(0xCC), ..Config::new(t_addr) };
    let e_cfg = Config { padding: Some(0xCC), ..Config::new(e_addr) };
    let (Ok(mut tester), Ok(mut ecu)) = (Channel::new(t_cfg, &mut t_rx[..], &mut t_tx[..]), Channel::new(e_cfg, &mut e_rx[..], &mut e_tx[..]))
    else {
        fail()
    };
    let mut dt: Driver<_, 8> = Driver::new(MemPort::new(bus, 0));
    let mut de: Driver<_, 8> = Driver::new(MemPort::new(bus, 1));
    let mut now = Instant::ZERO;
    if tester.send(now, &[0x22, 0xF1, 0x90], TargetAddressType::Physical).is_err() {
        fail();
    }
    let mut answer = [0u8; 3 + 17];
    answer[..3].copy_from_slice(&[0x62, 0xF1, 0x90]);
    answer[3..].copy_from_slice(&VIN[..17]);
    let mut ok = false;
    while now < Instant::ZERO + Duration::from_secs(2) && !ok {
        dt.poll(now, &mut [&mut tester]);
        de.poll(now, &mut [&mut ecu]);
        if let Ok(mut b) = bus.try_borrow_mut() {
            b.deliver_all();
        }
        let mut request = false;
        while let Some(ev) = ecu.poll_event() {
            if let Event::Received(d, _) = ev {
                request = d == [0x22, 0xF1, 0x90];
            }
        }
        if request && ecu.send(now, &answer, TargetAddressType::Physical).is_err() {
            fail();
        }
        while let Some(ev) = tester.poll_event() {
            if let Event::Received(d, _) = ev {
                if d == answer {
                    if let Ok(vin) = core::str::from_utf8(&d[3..]) {
                        hprintln!("isotp-minimal: VIN {} ({} bytes by ISO-TP)", vin, d.len());
                        ok = true;
                    }
                }
            }
        }
        now += TICK;
    }
    debug::exit(if ok { debug::EXIT_SUCCESS } else { debug::EXIT_FAILURE });
    loop {}
}

#[panic_handler]
fn panic(_: &core::panic::PanicInfo) -> ! {
    fail()
}
