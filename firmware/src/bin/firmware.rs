//! The full example: two CAN nodes in one image, talking over an in-memory
//! `embedded-can` bus (qemu emulates no CAN controller), each pumped by its
//! own `canx_core::driver::Driver` exactly as on a board.
//!
//! - Node 0, the engine: a J1939 ECU (claims 0x00, broadcasts EEC1 every
//!   20 ms and ET1 every 1 s, answers VIN requests by TP) and the canio
//!   guide's reliable-delivery listener (standard ids 0x408/0x409).
//! - Node 1, the tester: a J1939 service tool (claims 0xF9, decodes EEC1
//!   and ET1, requests the VIN from the engine's address: RTS/CTS) and the
//!   guide's reliable sender.
//!
//! Prints over semihosting and exits with status 0 once the tester has the
//! claimed addresses, the engine speed, the VIN and an acknowledged
//! reliable message; status 1 if that takes more than 10 s (clock time)
//! or anything panics. The clock is simulated (1 ms per loop pass) unless
//! the `systick-clock` feature reads the SysTick counter instead.
#![no_std]
#![no_main]

use core::cell::RefCell;

use canx_core::driver::mem::{MemBus, MemPort};
use canx_core::driver::{Driver, DriverStats};
use canx_core::j1939::codecs::{eec1, et1, vin};
use canx_core::j1939::{ClaimEvent, Ecu, EcuConfig, EcuEvent, Pgn};
use canx_core::reliable::{CompatEvent, CompatListener, CompatSender};
use canx_core::{Duration, Instant};
#[cfg(not(feature = "systick-clock"))]
use canx_firmware::TICK;
use canx_firmware::{fmt_rpm, EngineApp, J1939Ecu, FRAME_TIME, TESTER_ADDRESS, TESTER_NAME, TP_SESSIONS};
use cortex_m_rt::entry;
use cortex_m_semihosting::{debug, hprintln};

/// Two nodes, 3 transmit mailboxes each (as bxCAN), 16-frame receive FIFOs.
type Bus = MemBus<2, 3, 16>;
/// Frames each driver keeps waiting for a mailbox.
const TXQ: usize = 8;
/// Give up after this much simulated time.
const LIMIT: Duration = Duration::from_secs(10);

/// Everything the run must see before it passes.
#[derive(Default)]
struct Seen {
    engine_address: Option<u8>,
    tester_address: Option<u8>,
    rpm_raw: Option<u16>,
    coolant: Option<i16>,
    vin: bool,
    reliable: bool,
}

impl Seen {
    fn done(&self) -> bool {
        self.engine_address.is_some()
            && self.tester_address.is_some()
            && self.rpm_raw.is_some()
            && self.vin
            && self.reliable
    }
}

/// Fails the run (semihosting exit status 1).
fn fail(why: &str) -> ! {
    hprintln!("FAIL: {}", why);
    debug::exit(debug::EXIT_FAILURE);
    loop {
        cortex_m::asm::nop();
    }
}

#[entry]
fn main() -> ! {
    // Static storage (shows in .bss), handed out once.
    let Some(bus) = cortex_m::singleton!(: RefCell<Bus> = RefCell::new(MemBus::new())) else { fail("bus") };
    let bus: &'static RefCell<Bus> = bus;
    let Some(Some(engine)) =
        cortex_m::singleton!(: Option<EngineApp> = EngineApp::<TP_SESSIONS>::new().ok()).map(Option::as_mut)
    else {
        fail("engine ECU configuration")
    };
    let Some(Some(tester)) =
        cortex_m::singleton!(: Option<J1939Ecu> = Ecu::new(EcuConfig::new(TESTER_NAME, TESTER_ADDRESS)).ok())
            .map(Option::as_mut)
    else {
        fail("tester ECU configuration")
    };
    let mut listener: CompatListener = CompatListener::default();
    let mut sender = CompatSender::default();

    let mut engine_drv: Driver<_, TXQ> = Driver::new(MemPort::new(bus, 0));
    let mut tester_drv: Driver<_, TXQ> = Driver::new(MemPort::new(bus, 1));

    // The clock: simulated (TICK per loop pass, deterministic) by default;
    // with the `systick-clock` feature, the core's SysTick counter, as on a board.
    #[cfg(feature = "systick-clock")]
    let mut clock = match cortex_m::Peripherals::take() {
        Some(p) => canx_firmware::SysTickClock::new(p.SYST, canx_firmware::CORE_HZ),
        None => fail("core peripherals taken"),
    };
    #[cfg(feature = "systick-clock")]
    let clock_name = "SysTick at 168 MHz";
    #[cfg(not(feature = "systick-clock"))]
    let clock_name = "simulated, 1 ms per loop pass";
    hprintln!("canx firmware: J1939 engine ECU + tester over an in-memory CAN bus; clock: {}", clock_name);
    let mut now = Instant::ZERO;
    // Bus time owed: one frame leaves a mailbox per FRAME_TIME.
    let mut bus_credit = Duration::ZERO;
    let mut last = now;
    engine.start(now);
    tester.start(now);
    let mut seen = Seen::default();
    let mut vin_requested = false;
    let mut reliable_sent = false;

    loop {
        #[cfg(feature = "systick-clock")]
        {
            now = clock.now();
        }
        bus_credit = bus_credit + (now - last);
        last = now;
        engine.tick(now);
        engine_drv.poll(now, &mut [&mut engine.ecu, &mut listener]);
        tester_drv.poll(now, &mut [tester, &mut sender]);
        {
            let Ok(mut b) = bus.try_borrow_mut() else { fail("bus borrowed") };
            while bus_credit >= FRAME_TIME && b.deliver().is_some() {
                bus_credit = Duration::from_micros(bus_credit.total_micros() - FRAME_TIME.total_micros());
            }
            // An idle bus banks no time.
            bus_credit = bus_credit.min(FRAME_TIME);
        }

        // ---- engine node events ----
        while let Some(ev) = engine.ecu.poll_event() {
            if let EcuEvent::Address(ClaimEvent::Claimed { address }) = ev {
                hprintln!("engine: claimed address 0x{:02X}", address);
                seen.engine_address = Some(address);
            }
        }
        while let Some(ev) = listener.poll_event() {
            if let CompatEvent::Received { count, now_ms } = ev {
                hprintln!("engine: reliable message count={} now_ms={} (ACKed)", count, now_ms);
            }
        }

        // ---- tester node events ----
        while let Some(ev) = tester.poll_event() {
            match ev {
                EcuEvent::Address(ClaimEvent::Claimed { address }) => {
                    hprintln!("tester: claimed address 0x{:02X}", address);
                    seen.tester_address = Some(address);
                }
                EcuEvent::Message { id, data, len } if id.pgn == Pgn::EEC1 && seen.rpm_raw.is_none() => {
                    if let Some(raw) = eec1::engine_speed_raw(&data[..usize::from(len)]) {
                        let mut s: Line = Line::default();
                        let _ = fmt_rpm(raw, &mut s);
                        hprintln!("tester: engine speed {} rpm (EEC1 from 0x{:02X})", s.as_str(), id.source);
                        seen.rpm_raw = Some(raw);
                        if !vin_requested && tester.request(now, Pgn::VEHICLE_IDENTIFICATION, id.source).is_ok() {
                            vin_requested = true;
                        }
                    }
                }
                EcuEvent::Message { id, data, len } if id.pgn == Pgn::ET1 && seen.coolant.is_none() => {
                    let d = &data[..usize::from(len)];
                    if let (Some(c), Some(f)) = (et1::coolant_temperature(d), et1::fuel_temperature(d)) {
                        hprintln!("tester: coolant {} degC, fuel {} degC (ET1 from 0x{:02X})", c, f, id.source);
                        seen.coolant = Some(c);
                    }
                }
                EcuEvent::Received(r) if r.pgn == Pgn::VEHICLE_IDENTIFICATION => {
                    match tester.received_data(r.handle).map(vin::decode) {
                        Some(Ok(v)) => {
                            hprintln!("tester: VIN {} ({} bytes by TP from 0x{:02X})", v, r.len, r.source);
                            seen.vin = true;
                        }
                        _ => fail("VIN undecodable"),
                    }
                }
                EcuEvent::RequestDone { outcome, .. } if !seen.vin => {
                    hprintln!("tester: VIN request ended: {:?}", outcome);
                }
                _ => {}
            }
        }
        if seen.tester_address.is_some() && !reliable_sent && sender.send(now).is_ok() {
            reliable_sent = true;
        }
        while let Some(ev) = sender.poll_event() {
            match ev {
                CompatEvent::Delivered { count, tries } => {
                    hprintln!("tester: reliable message {} acknowledged after {} transmission(s)", count, tries);
                    seen.reliable = true;
                }
                CompatEvent::Failed { count, .. } => {
                    hprintln!("tester: reliable message {} failed", count);
                }
                _ => {}
            }
        }

        if seen.done() {
            report("engine", engine_drv.stats());
            report("tester", tester_drv.stats());
            hprintln!("PASS at t={} ms", now.total_millis());
            debug::exit(debug::EXIT_SUCCESS);
            loop {
                cortex_m::asm::nop();
            }
        }
        if now.total_micros() > LIMIT.total_micros() {
            fail("not everything seen within 10 s");
        }
        #[cfg(not(feature = "systick-clock"))]
        {
            now += TICK;
        }
    }
}

fn report(node: &str, s: DriverStats) {
    hprintln!(
        "{} driver: {} sent, {} received, {} mailbox-full retries, {} errors",
        node,
        s.transmitted,
        s.received,
        s.would_block,
        s.receive_errors + s.transmit_errors
    );
}

/// A small fixed buffer for formatting without a heap.
#[derive(Default)]
struct Line {
    buf: [u8; 24],
    len: usize,
}

impl Line {
    fn as_str(&self) -> &str {
        core::str::from_utf8(&self.buf[..self.len]).unwrap_or("?")
    }
}

impl core::fmt::Write for Line {
    fn write_str(&mut self, s: &str) -> core::fmt::Result {
        let end = self.len + s.len();
        let dst = self.buf.get_mut(self.len..end).ok_or(core::fmt::Error)?;
        dst.copy_from_slice(s.as_bytes());
        self.len = end;
        Ok(())
    }
}

#[panic_handler]
fn panic(info: &core::panic::PanicInfo) -> ! {
    hprintln!("PANIC: {}", info);
    debug::exit(debug::EXIT_FAILURE);
    loop {
        cortex_m::asm::nop();
    }
}
