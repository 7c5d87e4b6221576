//! When a future at queue depth 1 waits for its completion by spinning on the polling thread.
//!
//! Spinning saves the two thread wake-ups of a sleep in the kernel, which is the QD1 latency
//! path when an operation completes within the budget. When it does not (a slow device phase,
//! an `O_DSYNC` write whose flush runs in a kernel worker, a machine whose CPUs are taken),
//! the spin only burns the budget before the thread sleeps anyway, and on a busy machine it
//! takes the CPU from the kernel worker that would have completed the write. Measured on the
//! 2-core virtio machine with the other core busy (docs/BENCHMARKS.md, "The spin budget"):
//! QD1 `O_DSYNC` p50 225-246 us spinning against 111-137 us without, when fio psync took
//! 119-200 us.
//!
//! So misses back off: after two spins in a row that ran out of budget, the next waits at
//! queue depth 1 sleep at once, 64 of them, doubling with each further miss in a row up to
//! 1024; a spin that catches its completion ends the back-off. One miss alone does not: the
//! device's tail (1 % of writes above a few milliseconds on this disk) would otherwise turn
//! spinning off for a good part of a fast phase. A probe every few dozen
//! operations costs one budget's worth of CPU, and a device that becomes fast again is
//! noticed within that many operations.
//!
//! How it spins depends on who completes the operation. An `O_DSYNC` write (on a device
//! without FUA the file system flushes in its direct-I/O completion worker), a sync, an
//! allocation or a size change (io_uring hands them to its io-wq worker) and anything on the
//! thread pool (a worker does it) are completed by a kernel or driver thread that may need
//! this very CPU for a while: there the spin yields it (`sched_yield`) between looks. Measured
//! on the 2-core virtio machine (docs/BENCHMARKS.md, "The spin budget"): QD1 `O_DSYNC` p50
//! 172.6 us with a pure spin (which mostly ran out of budget and backed off) against 121.8 us
//! yielding. Reads complete from the device's interrupt, and a plain write's completion work
//! on ext4 and xfs is short (iomap's worker only hands it to io_uring): for those a pure spin
//! catches the completion soonest; yielding there cost 7 us of p50 one day (54.6 against 61.6)
//! and a tenth of the IOPS another (0.75x fio against 0.85x).
//!
//! The counters are a heuristic and guard no memory: a lost update only changes whether one
//! wait spins or how, so plain relaxed atomics suffice (the completion path's correctness never
//! depends on whether a waiter spun).

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::Duration;

/// Misses in a row that start a back-off.
const MISSES_TO_BACK_OFF: u32 = 2;
/// Waits skipped after the first back-off's misses.
const FIRST_BACKOFF: u32 = 64;
/// The longest back-off (a probe every 1024 QD1 waits).
const MAX_BACKOFF: u32 = 1024;

pub(crate) struct Spin {
    budget: Duration,
    /// QD1 waits left that sleep without spinning.
    skip: AtomicU32,
    /// Misses in a row (reset by a hit).
    misses: AtomicU32,
    /// The operation submitted last is completed by another thread that may need this CPU.
    /// At queue depth 1, the only spin there is, that is the operation spun for.
    yields: AtomicBool,
}

impl Spin {
    pub(crate) fn new(budget: Duration) -> Spin {
        Spin {
            budget,
            skip: AtomicU32::new(0),
            misses: AtomicU32::new(0),
            yields: AtomicBool::new(false),
        }
    }

    /// Records, at each submission, whether another thread completes the operation.
    pub(crate) fn submitted(&self, completed_by_a_thread: bool) {
        if self.yields.load(Ordering::Relaxed) != completed_by_a_thread {
            self.yields.store(completed_by_a_thread, Ordering::Relaxed);
        }
    }

    /// Between two looks of a spin: give the CPU to whoever completes the operation, or only
    /// pause the CPU's pipeline.
    pub(crate) fn pause(&self) {
        if self.yields.load(Ordering::Relaxed) {
            std::thread::yield_now();
        } else {
            std::hint::spin_loop();
        }
    }

    /// The budget to spin for now, or `None` if spinning is off or backing off (which
    /// counts this wait against the back-off).
    pub(crate) fn start(&self) -> Option<Duration> {
        if self.budget.is_zero() {
            return None;
        }
        let skip = self.skip.load(Ordering::Relaxed);
        if skip > 0 {
            self.skip.store(skip - 1, Ordering::Relaxed);
            return None;
        }
        Some(self.budget)
    }

    /// Records how a spin that [`Spin::start`] allowed ended.
    pub(crate) fn ended(&self, caught: bool) {
        if caught {
            if self.misses.load(Ordering::Relaxed) != 0 {
                self.misses.store(0, Ordering::Relaxed);
            }
            return;
        }
        let misses = self.misses.load(Ordering::Relaxed).saturating_add(1);
        self.misses.store(misses, Ordering::Relaxed);
        if misses >= MISSES_TO_BACK_OFF {
            let backoff = FIRST_BACKOFF
                .saturating_mul(1 << (misses - MISSES_TO_BACK_OFF).min(4))
                .min(MAX_BACKOFF);
            self.skip.store(backoff, Ordering::Relaxed);
        }
    }

    /// The configured budget (zero: never spins).
    pub(crate) fn budget(&self) -> Duration {
        self.budget
    }
}

#[cfg(all(test, not(directfile_loom)))]
mod tests {
    use super::*;

    #[test]
    fn misses_in_a_row_back_off_and_a_hit_ends_the_back_off() {
        let spin = Spin::new(Duration::from_micros(250));
        assert_eq!(spin.start(), Some(Duration::from_micros(250)));
        // One miss (the device's tail) changes nothing.
        spin.ended(false);
        assert!(spin.start().is_some());
        spin.ended(false);
        let skipped = (0..FIRST_BACKOFF)
            .filter(|_| spin.start().is_none())
            .count();
        assert_eq!(skipped, FIRST_BACKOFF as usize);
        // The probe after the back-off misses again: twice as long.
        assert!(spin.start().is_some());
        spin.ended(false);
        let skipped = (0..4 * FIRST_BACKOFF)
            .take_while(|_| spin.start().is_none())
            .count();
        assert_eq!(skipped, 2 * FIRST_BACKOFF as usize);
        // That call was the probe: it catches its completion, and the next waits spin.
        spin.ended(true);
        assert!(spin.start().is_some());
        spin.ended(true);
        assert!(spin.start().is_some());
    }

    #[test]
    fn misses_in_a_row_back_off_no_longer_than_the_cap() {
        let spin = Spin::new(Duration::from_micros(1));
        for _ in 0..20 {
            while spin.start().is_none() {}
            spin.ended(false);
        }
        let skipped = (0..4 * MAX_BACKOFF)
            .take_while(|_| spin.start().is_none())
            .count();
        assert_eq!(skipped, MAX_BACKOFF as usize);
    }

    #[test]
    fn a_zero_budget_never_spins() {
        let spin = Spin::new(Duration::ZERO);
        assert!(spin.start().is_none());
    }
}
