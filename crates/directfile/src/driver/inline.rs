//! At queue depth 1 under `Driver::block_on` on io_uring: a read or write as one blocking system
//! call on the calling thread (`pwritev2`/`preadv2`), or through the ring, whichever has been
//! faster lately.
//!
//! The two paths differ in who finishes the operation. Through the ring, an `O_DIRECT` write
//! on ext4 or xfs is finished by the file system's direct-I/O completion worker (a kernel
//! thread on the CPU that took the interrupt: `iomap_dio_complete_work`), which hands it to
//! io_uring, which posts it for the submitting thread; that thread spins for it
//! (`driver::spin`). A blocking call skips the worker: the interrupt wakes the calling thread,
//! which finishes the operation itself, but it sleeps meanwhile, and a sleeping CPU can be slow
//! to wake in a virtual machine. Which costs less depends on the machine at the time: on the
//! 2-vCPU virtio guest, one morning the ring's spin had a p50 of 51 us against 65.5 for a
//! blocking call (on a buffer that straddled two pages, which was worth about 6 us of it), and
//! that afternoon the ring 52 us against 43 (docs/BENCHMARKS.md, "Queue depth 1").
//!
//! So both are measured, from submission to the future seeing its result: an average of each
//! path's recent latencies (each new one weighs 1/16; one above four times the average counts
//! as four times the average, so a stall of the device does not swing the choice), the faster
//! one is taken, and every `PROBE`-th operation takes the other one, to notice when the
//! machine changes (every `PROBE_FAR`-th while the faster one is ahead by more than 1/8).
//! Near-ties go to the blocking call, which sleeps where the ring's wait spins: half the CPU
//! per operation. Only under `Driver::block_on`: the thread waits there for this operation
//! anyway, while on another executor a blocking call would hold up the runtime's other tasks
//! for as long as the device takes.
//!
//! The averages are a heuristic and guard no memory: relaxed atomics, a lost update only
//! changes one choice.

// The choice is io_uring's only; elsewhere `Driver::inline_ops` reads a 0 from `ran`.
#![cfg_attr(not(target_os = "linux"), allow(dead_code))]

use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};

/// One operation in this many takes the path that is not the faster one, while the two are
/// within `FAR_SHIFT` of each other...
const PROBE: u32 = 32;
/// ... and one in this many when the faster is ahead by more than that. A probe of the slower
/// path costs the difference in latency (and, on the ring, a spin's CPU), so it is worth
/// paying often only while the order may flip; at 256 operations a change of the machine is
/// still seen within a few tenths of a second.
const PROBE_FAR: u32 = 256;
/// "Far ahead": by more than 1/8 (12.5 %) of the slower path's average.
const FAR_SHIFT: u32 = 3;
/// Weight of a new sample in the averages: 1/16.
const SHIFT: u32 = 4;
/// The ring is taken only when it is faster by more than 1/16 (6 %): the blocking call costs
/// the thread half the CPU (it sleeps where the ring's wait spins), so it wins near-ties.
const MARGIN_SHIFT: u32 = 4;

pub(crate) struct Inline {
    enabled: bool,
    /// Average latency in nanoseconds through the ring, and inline; 0 before a first sample.
    ring_ns: AtomicU64,
    inline_ns: AtomicU64,
    choices: AtomicU32,
    /// Operations run inline (a statistic for tests and benchmarks).
    ran: AtomicU64,
    /// 1 while the owner thread runs an operation inline: it is in flight but not in the ring
    /// (the reaper's watchdog, `Uring::idle`, tells the two apart).
    running: AtomicUsize,
}

impl Inline {
    pub(crate) fn new(enabled: bool) -> Inline {
        Inline {
            enabled,
            ring_ns: AtomicU64::new(0),
            inline_ns: AtomicU64::new(0),
            choices: AtomicU32::new(0),
            ran: AtomicU64::new(0),
            running: AtomicUsize::new(0),
        }
    }

    /// Whether the next queue-depth-1 operation runs inline. Each path is tried once before
    /// the averages decide.
    pub(crate) fn choose(&self) -> bool {
        if !self.enabled {
            return false;
        }
        let ring = self.ring_ns.load(Ordering::Relaxed);
        let inline = self.inline_ns.load(Ordering::Relaxed);
        if ring == 0 {
            return false;
        }
        if inline == 0 {
            return true;
        }
        let n = self.choices.fetch_add(1, Ordering::Relaxed);
        let faster_inline = ring.saturating_add(ring >> MARGIN_SHIFT) >= inline;
        let (fast, slow) = if inline < ring {
            (inline, ring)
        } else {
            (ring, inline)
        };
        let probe = if slow - fast > slow >> FAR_SHIFT {
            PROBE_FAR
        } else {
            PROBE
        };
        if n % probe == probe - 1 {
            !faster_inline
        } else {
            faster_inline
        }
    }

    /// Whether operations may run inline at all (`DriverBuilder::inline_at_qd1`).
    pub(crate) fn enabled(&self) -> bool {
        self.enabled
    }

    /// Records how long a queue-depth-1 operation took on the path it was given.
    pub(crate) fn record(&self, inline: bool, nanos: u64) {
        let average = if inline {
            self.ran.fetch_add(1, Ordering::Relaxed);
            &self.inline_ns
        } else {
            &self.ring_ns
        };
        let nanos = nanos.max(1);
        let old = average.load(Ordering::Relaxed);
        let new = if old == 0 {
            nanos
        } else {
            let sample = nanos.min(old.saturating_mul(4));
            (old - (old >> SHIFT) + (sample >> SHIFT)).max(1)
        };
        average.store(new, Ordering::Relaxed);
    }

    /// Operations run inline so far.
    pub(crate) fn ran(&self) -> u64 {
        self.ran.load(Ordering::Relaxed)
    }

    /// Marks the start (`true`) or the end of an operation run inline.
    pub(crate) fn set_running(&self, running: bool) {
        self.running.store(running as usize, Ordering::Relaxed);
    }

    /// 1 while an operation runs inline, else 0.
    pub(crate) fn running(&self) -> usize {
        self.running.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tries_both_then_takes_the_faster_and_probes_the_other() {
        let inline = Inline::new(true);
        assert!(!inline.choose(), "the ring first");
        inline.record(false, 50_000);
        assert!(inline.choose(), "then inline");
        inline.record(true, 45_000);
        // 10 % apart: near, so one in `PROBE` takes the ring.
        let picks: Vec<bool> = (0..PROBE).map(|_| inline.choose()).collect();
        assert_eq!(picks.iter().filter(|&&p| p).count(), PROBE as usize - 1);
        assert!(!picks[PROBE as usize - 1], "the probe takes the ring");
        assert_eq!(inline.ran(), 1);
    }

    #[test]
    fn a_path_far_ahead_is_probed_less_often() {
        let inline = Inline::new(true);
        inline.record(false, 50_000);
        inline.record(true, 40_000);
        // 20 % apart: far, so one in `PROBE_FAR`.
        let picks: Vec<bool> = (0..PROBE_FAR).map(|_| inline.choose()).collect();
        assert_eq!(picks.iter().filter(|&&p| !p).count(), 1);
        assert!(!picks[PROBE_FAR as usize - 1], "the probe takes the ring");
        // The same when the ring is the one far ahead.
        let inline = Inline::new(true);
        inline.record(false, 40_000);
        inline.record(true, 50_000);
        let picks: Vec<bool> = (0..PROBE_FAR).map(|_| inline.choose()).collect();
        assert_eq!(picks.iter().filter(|&&p| p).count(), 1);
        assert!(picks[PROBE_FAR as usize - 1], "the probe runs inline");
    }

    #[test]
    fn follows_a_change_of_the_machine() {
        let inline = Inline::new(true);
        inline.record(false, 50_000);
        inline.record(true, 40_000);
        // Inline becomes slow: within a few dozen samples the ring wins.
        for _ in 0..60 {
            inline.record(true, 70_000);
        }
        assert!((0..PROBE - 1).all(|_| !inline.choose()));
    }

    #[test]
    fn a_stall_counts_as_four_times_the_average() {
        let inline = Inline::new(true);
        inline.record(false, 50_000);
        inline.record(true, 40_000);
        inline.record(true, 20_000_000);
        // 40 - 2.5 + 160/16 = 47.5 us, not 1.3 ms.
        assert_eq!(inline.inline_ns.load(Ordering::Relaxed), 47_500);
    }

    #[test]
    fn near_ties_go_inline() {
        let inline = Inline::new(true);
        inline.record(false, 100_000);
        inline.record(true, 105_000);
        assert!((0..PROBE - 1).all(|_| inline.choose()));
        let inline = Inline::new(true);
        inline.record(false, 100_000);
        inline.record(true, 110_000);
        assert!((0..PROBE - 1).all(|_| !inline.choose()));
    }

    #[test]
    fn disabled_never_runs_inline() {
        let inline = Inline::new(false);
        inline.record(false, 50_000);
        inline.record(true, 1);
        assert!((0..100).all(|_| !inline.choose()));
    }
}
