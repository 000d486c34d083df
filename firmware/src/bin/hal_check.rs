//! Compile-only check (feature `hal-check`): `canx_core::driver::Driver`
//! drives bxcan 0.8's `embedded_can::nb::Can` implementation, the CAN
//! peripheral of the STM32F4 (Feather STM32F405), and mcp25xx 0.2's
//! implementation for the MCP2515/MCP25625 SPI controller (RP2040 CAN
//! Feather; the SPI device is a stand-in here, a HAL's `SpiDevice` on a board).
//!
//! Linked but never run: there is no bxCAN in qemu. On a board the HAL
//! (`stm32f4xx-hal` with its `can` feature) implements `bxcan::Instance`
//! for `CAN1` and sets up the clocks and pins (PB8 RX / PB9 TX on the
//! Feather STM32F405, through its CAN transceiver); here a hand-written
//! `Instance` at CAN1's address stands in for it.
#![no_std]
#![no_main]

use bxcan::filter::Mask32;
use bxcan::{Can, FilterOwner, Instance, RegisterBlock};
use canx_core::driver::{Driver, Engine};
use canx_core::Instant;
use canx_firmware::EngineApp;
use cortex_m_rt::entry;
use mcp25xx::MCP25xx;

/// CAN1 of the STM32F405 (reference manual RM0090, memory map: 0x4000_6400).
struct Can1;

// SAFETY: CAN1's register block is at 0x4000_6400 on every STM32F405/407
// (RM0090 table 1), and this is the only handle to it in the image.
unsafe impl Instance for Can1 {
    const REGISTERS: *mut RegisterBlock = 0x4000_6400 as *mut _;
}

// SAFETY: CAN1 owns the 28 filter banks of the STM32F405's dual CAN (RM0090 32.7.4).
unsafe impl FilterOwner for Can1 {
    const NUM_FILTER_BANKS: u8 = 28;
}

#[entry]
fn main() -> ! {
    // 250 kbit/s from APB1 = 42 MHz (RM0090 32.7.7): prescaler 12, 14 time
    // quanta per bit (1 + TS1 11 + TS2 2), sample point 85.7 %, SJW 1.
    let mut can = Can::builder(Can1).set_bit_timing(0x001a_000b).leave_disabled();
    can.modify_filters().enable_bank(0, bxcan::Fifo::Fifo0, Mask32::accept_all());
    let _ = nb_enable(&mut can);
    let mut drv: Driver<Can<Can1>, 8> = Driver::new(can);
    let mut mcp: Driver<MCP25xx<NoSpi>, 8> = Driver::new(MCP25xx { spi: NoSpi });
    let mut app = EngineApp::<1>::new().ok();
    let mut now = Instant::ZERO;
    if let Some(app) = app.as_mut() {
        app.start(now);
    }
    loop {
        if let Some(app) = app.as_mut() {
            app.tick(now);
            let engines: &mut [&mut dyn Engine] = &mut [&mut app.ecu];
            drv.poll(now, engines);
            mcp.poll(now, engines);
            while app.ecu.poll_event().is_some() {}
        }
        now += canx_firmware::TICK;
    }
}

/// Stands in for a HAL's SPI device (e.g. rp2040-hal SPI1 + CS on GPIO19
/// through embedded-hal-bus on the RP2040 CAN Feather).
struct NoSpi;

impl embedded_hal::spi::ErrorType for NoSpi {
    type Error = core::convert::Infallible;
}

impl embedded_hal::spi::SpiDevice for NoSpi {
    fn transaction(&mut self, _ops: &mut [embedded_hal::spi::Operation<'_, u8>]) -> Result<(), Self::Error> {
        Ok(())
    }
}

fn nb_enable(can: &mut Can<Can1>) -> nb::Result<(), core::convert::Infallible> {
    can.enable_non_blocking()
}

#[panic_handler]
fn panic(_: &core::panic::PanicInfo) -> ! {
    loop {}
}
