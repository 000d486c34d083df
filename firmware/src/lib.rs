//! The pieces both example binaries share: the engine ECU application
//! (address claim, EEC1/ET1 broadcasts, VIN on request) and the simulated
//! clock and bus timing of the qemu run.
//!
//! Everything protocol-related is canx-core, unchanged from the PC build:
//! this crate only schedules the broadcasts and moves frames with
//! [`canx_core::driver::Driver`].
#![no_std]
#![forbid(unsafe_code)]

use canx_core::j1939::codecs::{eec1, et1};
use canx_core::j1939::{Ecu, EcuConfig, EcuError, Name, Pgn, Responder, FULL_TABLE, GLOBAL_ADDRESS};
use canx_core::{Duration, Instant};

/// The VIN the engine ECU answers with (J1939-71 SPN 237: ASCII, `*`-terminated).
pub const VIN: &[u8] = b"1M8GDM9AXKP042788*";
/// The engine ECU's NAME (arbitrary identity number; industry group 0,
/// function 0 = engine) and preferred address 0x00 (J1939 "Engine #1").
pub const ENGINE_NAME: Name = Name::from_u64(0x0000_0000_0012_3456);
pub const ENGINE_ADDRESS: u8 = 0x00;
/// The tester's NAME and preferred address 0xF9 (J1939 "Off-board
/// diagnostic-service tool #1").
pub const TESTER_NAME: Name = Name::from_u64(0x0000_0000_0065_4321);
pub const TESTER_ADDRESS: u8 = 0xF9;

/// EEC1 repetition period. J1939-71 makes it engine-speed dependent; this
/// example uses a fixed 20 ms.
pub const EEC1_PERIOD: Duration = Duration::from_millis(20);
/// ET1 repetition period, 1 s (J1939-71).
pub const ET1_PERIOD: Duration = Duration::from_secs(1);
/// The engine speed the simulated engine reports, rpm.
pub const ENGINE_RPM: f32 = 1800.0;
/// The coolant and fuel temperatures it reports, degC.
pub const COOLANT_DEG_C: i16 = 85;
pub const FUEL_DEG_C: i16 = 40;

/// TP sessions of each ECU (one 1785-byte buffer each).
pub const TP_SESSIONS: usize = 2;
/// The ECU type of both nodes.
pub type J1939Ecu = Ecu<'static, TP_SESSIONS>;

/// Simulated time per main-loop pass of the qemu run. qemu's timers run on
/// host time, so the demo uses a virtual clock instead: deterministic, and
/// as fast as qemu executes. On a board, read a hardware timer instead.
pub const TICK: Duration = Duration::from_millis(1);
/// Bus time of one frame on the in-memory bus: a 29-bit frame with 8 data
/// bytes is about 130 bits with stuffing, 0.52 ms at 250 kbit/s.
pub const FRAME_TIME: Duration = Duration::from_micros(500);

/// Core clock of the STM32F405 as the Feather and qemu's netduinoplus2 run
/// it, Hz.
pub const CORE_HZ: u32 = 168_000_000;

/// A clock from the Cortex-M SysTick counter, polled (no interrupt): the
/// 24-bit counter counts core cycles down from the largest reload (2^24
/// cycles, 99.9 ms at 168 MHz) and each [`SysTickClock::now`] adds the
/// cycles since the previous call. Call `now` at least once per wrap
/// period, or time is lost.
pub struct SysTickClock {
    syst: cortex_m::peripheral::SYST,
    last: u32,
    cycles: u64,
    cycles_per_us: u64,
}

impl core::fmt::Debug for SysTickClock {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("SysTickClock").field("cycles", &self.cycles).finish()
    }
}

impl SysTickClock {
    /// Starts SysTick on the core clock of `core_hz` (at least 1 MHz).
    pub fn new(mut syst: cortex_m::peripheral::SYST, core_hz: u32) -> Self {
        use cortex_m::peripheral::syst::SystClkSource;
        syst.set_clock_source(SystClkSource::Core);
        syst.set_reload(0x00FF_FFFF);
        syst.clear_current();
        syst.enable_counter();
        let last = cortex_m::peripheral::SYST::get_current();
        SysTickClock { syst, last, cycles: 0, cycles_per_us: u64::from(core_hz / 1_000_000).max(1) }
    }

    /// Microseconds since [`SysTickClock::new`].
    pub fn now(&mut self) -> Instant {
        let current = cortex_m::peripheral::SYST::get_current();
        // The counter counts down and wraps from 0 to 0xFF_FFFF.
        let elapsed = self.last.wrapping_sub(current) & 0x00FF_FFFF;
        self.last = current;
        self.cycles += u64::from(elapsed);
        Instant::from_micros(self.cycles / self.cycles_per_us)
    }

    /// Gives the SysTick peripheral back.
    pub fn free(self) -> cortex_m::peripheral::SYST {
        self.syst
    }
}

/// The engine ECU application: one J1939 CA that claims `ENGINE_ADDRESS`,
/// broadcasts EEC1 and ET1 at their rates once it has an address, and
/// answers VIN requests (the ECU sends it by BAM or RTS/CTS itself).
/// `S`: TP sessions (one 1785-byte buffer each); `T`: entries of the bus
/// address table (9 bytes each; 254 = every address).
#[derive(Debug)]
pub struct EngineApp<const S: usize = TP_SESSIONS, const T: usize = FULL_TABLE> {
    pub ecu: Ecu<'static, S, 8, 0, T>,
    next_eec1: Instant,
    next_et1: Instant,
    /// Broadcasts the ECU refused (transmit queue full).
    pub send_failures: u32,
}

impl<const S: usize, const T: usize> EngineApp<S, T> {
    /// Errors: an invalid configuration ([`EcuError`]).
    pub fn new() -> Result<Self, EcuError> {
        let mut ecu = Ecu::new(EcuConfig::new(ENGINE_NAME, ENGINE_ADDRESS))?;
        ecu.register(Pgn::VEHICLE_IDENTIFICATION, Responder::Data(VIN))?;
        Ok(EngineApp { ecu, next_eec1: Instant::ZERO, next_et1: Instant::ZERO, send_failures: 0 })
    }

    /// Starts the address claim.
    pub fn start(&mut self, now: Instant) {
        self.ecu.start(now);
    }

    /// Queues the broadcasts that are due (none before the claim is done).
    pub fn tick(&mut self, now: Instant) {
        if self.ecu.address().is_none() {
            return;
        }
        if now >= self.next_eec1 {
            let data = eec1::encode(eec1::raw_from_rpm(ENGINE_RPM));
            if self.ecu.send(eec1::PRIORITY, Pgn::EEC1, GLOBAL_ADDRESS, &data).is_err() {
                self.send_failures = self.send_failures.saturating_add(1);
            }
            self.next_eec1 = now + EEC1_PERIOD;
        }
        if now >= self.next_et1 {
            let data = et1::encode(Some(COOLANT_DEG_C), Some(FUEL_DEG_C));
            if self.ecu.send(et1::PRIORITY, Pgn::ET1, GLOBAL_ADDRESS, &data).is_err() {
                self.send_failures = self.send_failures.saturating_add(1);
            }
            self.next_et1 = now + ET1_PERIOD;
        }
    }

    /// The earliest of the ECU's deadlines and the next broadcast.
    pub fn poll_at(&self) -> Option<Instant> {
        let next = self.ecu.address().map(|_| self.next_eec1.min(self.next_et1));
        canx_core::time::earliest(next, self.ecu.poll_timeout())
    }
}

/// Writes `raw` (SPN 190, 0.125 rpm/bit) as "1800.000" without floats.
pub fn fmt_rpm(raw: u16, f: &mut impl core::fmt::Write) -> core::fmt::Result {
    write!(f, "{}.{:03}", raw / 8, u32::from(raw % 8) * 125)
}
