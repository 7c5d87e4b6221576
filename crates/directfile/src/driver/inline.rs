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
//! So both are measured, from submission to the future seeing its result, and the faster one
//! is taken. Each path keeps an average of its recent latencies: the plain mean of its first 16
//! samples, then each new one weighs 1/16; one above four times the average counts as four
//! times the average, so a stall of the device does not swing the choice. The first operation
//! after a change of path is not counted: it pays for the switch, not for the path. Measured on
//! the 2-vCPU guest, a ring write right after a run of blocking ones took p50 55.7 us against
//! 48.5 in a run of ring writes (p90 112 against 61), and the very first operation of a driver
//! is colder still (179 us). Counted, those samples kept the chooser on the slower path for
//! the first 0.6 s of a 3 s run, a p50 of 60.1 us where the ring alone gave 50.1.
//!
//! The slower path is probed to notice when the machine changes: every `PROBE`-th operation
//! starts a burst of `BURST` operations on it (the first pays for the switch, the others are
//! counted), every `PROBE_FAR`-th while the faster one is ahead by more than 1/8 and both
//! have `SETTLED` samples. Near-ties go to the blocking call, which sleeps where the ring's
//! wait spins: half the CPU per operation. Only under `Driver::block_on`: the thread waits
//! there for this operation anyway, while on another executor a blocking call would hold up
//! the runtime's other tasks for as long as the device takes.
//!
//! The averages are a heuristic and guard no memory: relaxed atomics, a lost update only
//! changes one choice.

// The choice is io_uring's only; elsewhere `Driver::inline_ops` reads a 0 from `ran`.
#![cfg_attr(not(target_os = "linux"), allow(dead_code))]

use std::sync::atomic::{AtomicU32, AtomicU64, AtomicU8, AtomicUsize, Ordering};

/// One operation in this many starts a probe of the path that is not the faster one, while
/// the two are within `FAR_SHIFT` of each other...
const PROBE: u32 = 32;
/// ... and one in this many when the faster is ahead by more than that. A probe of the slower
/// path costs the difference in latency (and, on the ring, a spin's CPU), so it is worth
/// paying often only while the order may flip; at 256 operations a change of the machine is
/// still seen within a few tenths of a second.
const PROBE_FAR: u32 = 256;
/// Operations in a probe: one that pays for the switch and three that are counted.
const BURST: u32 = 4;
/// Samples each path needs before a probe may wait `PROBE_FAR` operations.
const SETTLED: u32 = 8;
/// "Far ahead": by more than 1/8 (12.5 %) of the slower path's average.
const FAR_SHIFT: u32 = 3;
/// The averages' window: the mean of the first 16 samples, then each new one weighs 1/16.
const WINDOW: u32 = 16;
/// The ring is taken only when it is faster by more than 1/16 (6 %): the blocking call costs
/// the thread half the CPU (it sleeps where the ring's wait spins), so it wins near-ties.
const MARGIN_SHIFT: u32 = 4;

/// `Inline::last`: no operation recorded yet, or the path of the last one.
const NONE: u8 = 0;
const RING: u8 = 1;
const INLINE: u8 = 2;

pub(crate) struct Inline {
    enabled: bool,
    /// Average latency in nanoseconds through the ring, and inline; 0 before a first sample.
    ring_ns: AtomicU64,
    inline_ns: AtomicU64,
    /// Samples in each average, up to `WINDOW`.
    ring_n: AtomicU32,
    inline_n: AtomicU32,
    /// The path of the operation recorded last (`NONE`, `RING`, `INLINE`).
    last: AtomicU8,
    choices: AtomicU32,
    /// Operations left in the probe under way.
    burst: AtomicU32,
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
            ring_n: AtomicU32::new(0),
            inline_n: AtomicU32::new(0),
            last: AtomicU8::new(NONE),
            choices: AtomicU32::new(0),
            burst: AtomicU32::new(0),
            ran: AtomicU64::new(0),
            running: AtomicUsize::new(0),
        }
    }

    /// Whether the next queue-depth-1 operation runs inline. Each path runs until it has a
    /// sample before the averages decide.
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
        let faster_inline = ring.saturating_add(ring >> MARGIN_SHIFT) >= inline;
        let burst = self.burst.load(Ordering::Relaxed);
        if burst > 0 {
            self.burst.store(burst - 1, Ordering::Relaxed);
            return !faster_inline;
        }
        let n = self.choices.fetch_add(1, Ordering::Relaxed);
        let (fast, slow) = if inline < ring {
            (inline, ring)
        } else {
            (ring, inline)
        };
        let settled = self.ring_n.load(Ordering::Relaxed) >= SETTLED
            && self.inline_n.load(Ordering::Relaxed) >= SETTLED;
        let probe = if settled && slow - fast > slow >> FAR_SHIFT {
            PROBE_FAR
        } else {
            PROBE
        };
        if n % probe == probe - 1 {
            self.burst.store(BURST - 1, Ordering::Relaxed);
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
        let (path, average, count) = if inline {
            self.ran.fetch_add(1, Ordering::Relaxed);
            (INLINE, &self.inline_ns, &self.inline_n)
        } else {
            (RING, &self.ring_ns, &self.ring_n)
        };
        if self.last.load(Ordering::Relaxed) != path {
            // The first operation on this path since the other one ran (or the first of
            // all): it paid for the switch.
            self.last.store(path, Ordering::Relaxed);
            return;
        }
        let nanos = nanos.max(1);
        let old = average.load(Ordering::Relaxed);
        let n = count.load(Ordering::Relaxed);
        let new = if old == 0 {
            nanos
        } else {
            let sample = nanos.min(old.saturating_mul(4));
            let weight = u64::from((n + 1).min(WINDOW));
            ((old * (weight - 1) + sample) / weight).max(1)
        };
        average.store(new, Ordering::Relaxed);
        if n < WINDOW {
            count.store(n + 1, Ordering::Relaxed);
        }
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

    /// An `Inline` whose paths have `n` samples each: `ring_ns` and `inline_ns`.
    fn settled(n: u32, ring_ns: u64, inline_ns: u64) -> Inline {
        let inline = Inline::new(true);
        for path in [false, true] {
            let nanos = if path { inline_ns } else { ring_ns };
            // The first after a switch is not counted, whatever it took.
            for sample in std::iter::once(1).chain(std::iter::repeat_n(nanos, n as usize)) {
                inline.record(path, sample);
            }
        }
        inline
    }

    #[test]
    fn tries_both_and_counts_neither_first_operation() {
        let inline = Inline::new(true);
        assert!(!inline.choose(), "the ring first");
        inline.record(false, 180_000);
        assert!(
            !inline.choose(),
            "the first was a switch: the ring has no sample yet"
        );
        inline.record(false, 50_000);
        assert!(inline.choose(), "then inline");
        inline.record(true, 90_000);
        assert!(inline.choose());
        inline.record(true, 45_000);
        assert_eq!(inline.ring_ns.load(Ordering::Relaxed), 50_000);
        assert_eq!(inline.inline_ns.load(Ordering::Relaxed), 45_000);
        assert_eq!(inline.ran(), 2);
    }

    #[test]
    fn a_probe_is_a_burst_on_the_slower_path() {
        // 10 % apart: near, so one in `PROBE` starts a burst on the ring.
        let inline = settled(SETTLED, 50_000, 45_000);
        let picks: Vec<bool> = (0..PROBE + BURST - 1).map(|_| inline.choose()).collect();
        let first = picks.iter().position(|&p| !p).expect("a probe");
        assert_eq!(first, PROBE as usize - 1);
        assert!(picks[first..].iter().all(|&p| !p), "{picks:?}");
        assert_eq!(picks.len() - first, BURST as usize);
        assert!(inline.choose(), "back to the faster path");
    }

    #[test]
    fn a_path_far_ahead_is_probed_less_often_once_both_are_settled() {
        // 20 % apart but the ring has one sample: probed as often as when near.
        let inline = settled(1, 50_000, 40_000);
        let picks: Vec<bool> = (0..PROBE).map(|_| inline.choose()).collect();
        assert!(!picks[PROBE as usize - 1]);
        // Settled: one in `PROBE_FAR`.
        let inline = settled(SETTLED, 50_000, 40_000);
        let picks: Vec<bool> = (0..PROBE_FAR).map(|_| inline.choose()).collect();
        assert_eq!(picks.iter().filter(|&&p| !p).count(), 1);
        assert!(!picks[PROBE_FAR as usize - 1], "the probe takes the ring");
        // The same when the ring is the one far ahead.
        let inline = settled(SETTLED, 40_000, 50_000);
        let picks: Vec<bool> = (0..PROBE_FAR).map(|_| inline.choose()).collect();
        assert_eq!(picks.iter().filter(|&&p| p).count(), 1);
        assert!(picks[PROBE_FAR as usize - 1], "the probe runs inline");
    }

    #[test]
    fn the_first_samples_are_a_plain_mean() {
        let inline = settled(1, 100_000, 1_000);
        assert_eq!(inline.ring_ns.load(Ordering::Relaxed), 100_000);
        inline.record(false, 1);
        inline.record(false, 50_000);
        inline.record(false, 60_000);
        // A switch, uncounted, then (100 + 50 + 60) / 3 = 70 us.
        assert_eq!(inline.ring_ns.load(Ordering::Relaxed), 70_000);
        // Past the window each new sample weighs 1/16.
        let inline = settled(WINDOW, 64_000, 1_000);
        inline.record(true, 1);
        inline.record(false, 1);
        inline.record(false, 80_000);
        assert_eq!(inline.ring_ns.load(Ordering::Relaxed), 65_000);
    }

    #[test]
    fn follows_a_change_of_the_machine() {
        let inline = settled(WINDOW, 50_000, 40_000);
        // Inline becomes slow: within a few dozen samples the ring wins.
        for _ in 0..60 {
            inline.record(true, 70_000);
        }
        assert!((0..PROBE - 1).all(|_| !inline.choose()));
    }

    #[test]
    fn a_stall_counts_as_four_times_the_average() {
        let inline = settled(WINDOW, 50_000, 40_000);
        inline.record(true, 20_000_000);
        // (15 * 40 + 160) / 16 = 47.5 us, not 1.3 ms.
        assert_eq!(inline.inline_ns.load(Ordering::Relaxed), 47_500);
    }

    #[test]
    fn near_ties_go_inline() {
        let inline = settled(1, 100_000, 105_000);
        assert!((0..PROBE - 1).all(|_| inline.choose()));
        let inline = settled(1, 100_000, 110_000);
        assert!((0..PROBE - 1).all(|_| !inline.choose()));
    }

    #[test]
    fn disabled_never_runs_inline() {
        let inline = settled(1, 50_000, 1);
        let inline = Inline {
            enabled: false,
            ..inline
        };
        assert!((0..100).all(|_| !inline.choose()));
    }
}
