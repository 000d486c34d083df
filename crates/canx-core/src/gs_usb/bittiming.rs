//! Bit timing from a bitrate and a sample point, over a controller's limits.
//!
//! Same algorithm and same results as Linux `can_calc_bittiming` (6.1,
//! `drivers/net/can/dev/calc_bittiming.c`), so a device gets from canx the
//! very register values the kernel's gs_usb driver would give it:
//!
//! - nominal sample point, when none is given: 87.5 % up to 500 kbit/s,
//!   80 % up to 800 kbit/s, 75 % above (CiA recommendation as the kernel
//!   applies it);
//! - every tseg from the longest to the shortest, the prescaler rounded to
//!   the nearest (odd tseg*2 rounds up) and to a multiple of `brp_inc`; the
//!   smallest bitrate error wins, then the sample point closest to the
//!   nominal one without passing it;
//! - more than 5.0 % bitrate error is refused (`CAN_CALC_MAX_ERROR` is 50
//!   tenths of a percent; Linux 6.1 in the test VM accepts 3 Mbit/s from
//!   80 MHz at 1.2 % error and refuses 30 Mbit/s);
//! - `prop_seg = tseg1 / 2`, `phase_seg1 = tseg1 - prop_seg`;
//! - SJW 1 unless asked for (then at most `sjw_max` and `phase_seg2`).
//!
//! `tests/data/gs_usb_bittiming.json` holds the kernel's results for the
//! test emulator's limits; `tests/test_gs_usb_emulator.py` recomputes them
//! from the live kernel in the test VM.

use core::fmt;

pub use super::proto::BitTimingLimits;
use super::proto::DeviceBitTiming;

/// Largest bitrate error accepted, tenths of a percent (`CAN_CALC_MAX_ERROR`
/// = 50, i.e. 5.0 %; not 0.5 % as the team's research note says).
pub const MAX_ERROR_PERMILLE: u32 = 50;
const SYNC_SEG: u32 = 1;
/// Largest `tseg1_max` / `tseg2_max` accepted. Real controllers have at most
/// 256 / 128 (m_can); the bound keeps the search short whatever a device
/// reports (the kernel would loop over 2^33 values for `u32::MAX`).
pub const MAX_TSEG: u32 = 4096;

/// A computed bit timing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BitTiming {
    /// The bitrate this timing gives, bit/s (may differ from the request by ≤ 5 %).
    pub bitrate: u32,
    /// Sample point, tenths of a percent (875 = 87.5 %).
    pub sample_point: u32,
    /// Time quantum, ns (rounded down, as the kernel reports it).
    pub tq_ns: u32,
    pub prop_seg: u32,
    pub phase_seg1: u32,
    pub phase_seg2: u32,
    pub sjw: u32,
    pub brp: u32,
}

impl BitTiming {
    /// The BITTIMING / DATA_BITTIMING request payload of this timing.
    pub fn to_device(&self) -> DeviceBitTiming {
        DeviceBitTiming {
            prop_seg: self.prop_seg,
            phase_seg1: self.phase_seg1,
            phase_seg2: self.phase_seg2,
            sjw: self.sjw,
            brp: self.brp,
        }
    }
}

/// Why no bit timing was found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BitTimingError {
    /// Bitrate 0, clock 0, `brp_inc` 0, a sample point above 100 %, or tseg
    /// limits above [`MAX_TSEG`].
    InvalidArgument,
    /// No prescaler within `brp_min..=brp_max` fits this bitrate.
    NoSolution,
    /// The best timing is off by more than 5 %: the error in tenths of a percent.
    BitrateError(u32),
}

impl fmt::Display for BitTimingError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BitTimingError::InvalidArgument => f.write_str("invalid bitrate, clock or sample point"),
            BitTimingError::NoSolution => f.write_str("no bit timing for this bitrate within the controller's limits"),
            BitTimingError::BitrateError(e) => write!(f, "bitrate error {}.{}% too high", e / 10, e % 10),
        }
    }
}

impl core::error::Error for BitTimingError {}

/// The sample point Linux uses when none is given, tenths of a percent.
pub fn default_sample_point(bitrate: u32) -> u32 {
    if bitrate > 800_000 {
        750
    } else if bitrate > 500_000 {
        800
    } else {
        875
    }
}

/// Best (tseg1, tseg2) for a `tseg` (= tseg1 + tseg2) and the sample point
/// they give (kernel `can_update_sample_point`). Returns (sample point,
/// error, tseg1, tseg2); the error is `u32::MAX` if no candidate was at or
/// below the nominal sample point.
fn update_sample_point(btc: &BitTimingLimits, sp_nominal: u32, tseg: u32) -> (u32, u32, u32, u32) {
    let mut best_sp = 0;
    let mut best_err = u32::MAX;
    let (mut best_t1, mut best_t2) = (0, 0);
    let all = u64::from(tseg + SYNC_SEG);
    for i in 0..=1u64 {
        // tseg2 = tseg + SYNC - sp*(tseg+SYNC)/1000 - i, in the kernel's u32
        // arithmetic (it cannot underflow: sp <= 1000).
        let raw = all.saturating_sub(u64::from(sp_nominal) * all / 1000).saturating_sub(i);
        let mut tseg2 = (raw as u32).clamp(btc.tseg2_min, btc.tseg2_max.max(btc.tseg2_min));
        let mut tseg1 = tseg.wrapping_sub(tseg2);
        if tseg1 > btc.tseg1_max {
            tseg1 = btc.tseg1_max;
            tseg2 = tseg.wrapping_sub(tseg1);
        }
        let sp = (1000 * all.saturating_sub(u64::from(tseg2)) / all) as u32;
        let err = sp_nominal.abs_diff(sp);
        if sp <= sp_nominal && err < best_err {
            best_sp = sp;
            best_err = err;
            best_t1 = tseg1;
            best_t2 = tseg2;
        }
    }
    (best_sp, best_err, best_t1, best_t2)
}

/// Bit timing for `bitrate` (bit/s) on a controller clocked at `clock_hz`
/// within `btc`. `sample_point`: tenths of a percent, 0 for the default
/// ([`default_sample_point`]). `sjw`: 0 for the default (1).
///
/// Errors: [`BitTimingError::InvalidArgument`], [`BitTimingError::NoSolution`],
/// [`BitTimingError::BitrateError`] above 5 %.
///
/// The kernel computes `tsegall * bitrate` in 32 bits; here it is 64 bits,
/// which gives the same results wherever the kernel's product does not
/// overflow (any bitrate up to 10 Mbit/s with tseg limits up to 400).
pub fn calc_bittiming(
    clock_hz: u32,
    btc: &BitTimingLimits,
    bitrate: u32,
    sample_point: u32,
    sjw: u32,
) -> Result<BitTiming, BitTimingError> {
    if bitrate == 0
        || clock_hz == 0
        || btc.brp_inc == 0
        || sample_point > 1000
        || btc.tseg1_max > MAX_TSEG
        || btc.tseg2_max > MAX_TSEG
    {
        return Err(BitTimingError::InvalidArgument);
    }
    let sp_nominal = if sample_point != 0 { sample_point } else { default_sample_point(bitrate) };
    let clock = u64::from(clock_hz);
    let want = u64::from(bitrate);

    let mut best_bitrate_error = u64::MAX;
    let mut best_sp_error = u32::MAX;
    let mut best_tseg = 0u32;
    let mut best_brp = 0u32;

    // "tseg even = round down, odd = round up" (the kernel's comment).
    let top = (u64::from(btc.tseg1_max) + u64::from(btc.tseg2_max)) * 2 + 1;
    let bottom = (u64::from(btc.tseg1_min) + u64::from(btc.tseg2_min)) * 2;
    let mut tseg = top;
    while tseg >= bottom && tseg > 0 {
        let tsegall = u64::from(SYNC_SEG) + tseg / 2;
        let mut brp = clock / (tsegall * want) + tseg % 2;
        brp = (brp / u64::from(btc.brp_inc)) * u64::from(btc.brp_inc);
        if brp >= u64::from(btc.brp_min) && brp <= u64::from(btc.brp_max) && brp > 0 {
            let rate = clock / (brp * tsegall);
            let bitrate_error = want.abs_diff(rate);
            if bitrate_error <= best_bitrate_error {
                if bitrate_error < best_bitrate_error {
                    best_sp_error = u32::MAX;
                }
                let (_, sp_error, _, _) = update_sample_point(btc, sp_nominal, (tseg / 2) as u32);
                if sp_error < best_sp_error {
                    best_sp_error = sp_error;
                    best_bitrate_error = bitrate_error;
                    best_tseg = (tseg / 2) as u32;
                    best_brp = brp as u32;
                    if bitrate_error == 0 && sp_error == 0 {
                        break;
                    }
                }
            }
        }
        tseg -= 1;
    }

    if best_brp == 0 {
        return Err(BitTimingError::NoSolution);
    }
    if best_bitrate_error != 0 {
        let permille = (best_bitrate_error * 1000 / want) as u32;
        if permille > MAX_ERROR_PERMILLE {
            return Err(BitTimingError::BitrateError(permille));
        }
    }

    let (sp, _, tseg1, tseg2) = update_sample_point(btc, sp_nominal, best_tseg);
    let prop_seg = tseg1 / 2;
    let sjw = if sjw == 0 || btc.sjw_max == 0 { 1 } else { sjw.min(btc.sjw_max).min(tseg2) };
    let total = u64::from(SYNC_SEG) + u64::from(tseg1) + u64::from(tseg2);
    Ok(BitTiming {
        bitrate: (clock / (u64::from(best_brp) * total)) as u32,
        sample_point: sp,
        tq_ns: (u64::from(best_brp) * 1_000_000_000 / clock) as u32,
        prop_seg,
        phase_seg1: tseg1 - prop_seg,
        phase_seg2: tseg2,
        sjw,
        brp: best_brp,
    })
}
