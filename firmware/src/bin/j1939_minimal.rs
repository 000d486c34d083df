//! Size reference: canx-core's driver and one J1939 ECU, nothing else.
//!
//! The engine ECU of the full example (address claim, EEC1 every 20 ms, ET1
//! every 1 s, VIN on request by TP) on one in-memory controller with no
//! other node, pumped by `canx_core::driver::Driver`. It prints the claimed
//! address once over semihosting and exits after 2 s of simulated time.
//! `scripts/build-firmware` reports its flash and static RAM use against
//! the core + J1939 budget (32 KiB flash, 8 KiB RAM).
#![no_std]
#![no_main]

use core::cell::RefCell;

use canx_core::driver::mem::{MemBus, MemPort};
use canx_core::driver::Driver;
use canx_core::{Duration, Instant};
use canx_firmware::{EngineApp, TICK};
use cortex_m_rt::entry;
use cortex_m_semihosting::{debug, hprintln};

type Bus = MemBus<1, 3, 4>;
/// One TP session (enough to answer one VIN request at a time) and a bus
/// table of 16 NAMEs (a small network; further claims are counted, not kept).
type App = EngineApp<1, 16>;

#[entry]
fn main() -> ! {
    let bus = cortex_m::singleton!(: RefCell<Bus> = RefCell::new(MemBus::new()));
    let app = cortex_m::singleton!(: Option<App> = App::new().ok());
    let (Some(bus), Some(Some(app))) = (bus, app.map(Option::as_mut)) else {
        debug::exit(debug::EXIT_FAILURE);
        loop {}
    };
    let bus: &'static RefCell<Bus> = bus;
    let mut drv: Driver<_, 8> = Driver::new(MemPort::new(bus, 0));
    let mut now = Instant::ZERO;
    app.start(now);
    let mut printed = false;
    while now < Instant::ZERO + Duration::from_secs(2) {
        app.tick(now);
        drv.poll(now, &mut [&mut app.ecu]);
        if let Ok(mut b) = bus.try_borrow_mut() {
            b.deliver_all();
        }
        while app.ecu.poll_event().is_some() {}
        if let (Some(a), false) = (app.ecu.address(), printed) {
            hprintln!("j1939-minimal: claimed address 0x{:02X}", a);
            printed = true;
        }
        now += TICK;
    }
    debug::exit(if printed { debug::EXIT_SUCCESS } else { debug::EXIT_FAILURE });
    loop {}
}

#[panic_handler]
fn panic(_: &core::panic::PanicInfo) -> ! {
    debug::exit(debug::EXIT_FAILURE);
    loop {}
}
