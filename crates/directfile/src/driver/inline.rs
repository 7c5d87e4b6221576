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
//! The slower path is probed to notice when the machine changes: a probe is a burst of
//! `BURST` operations on it (the first pays for the switch, the others are counted). The
//! probes start `PROBE` operations apart, and while the same path is still the faster one at
//! each probe (and both have `SETTLED` samples) the interval doubles, up to `PROBE_MAX`; when
//! the faster path changes it is `PROBE` again. Near-ties go to the blocking call, which
//! sleeps where the ring's wait spins: half the CPU per operation. Only under
//! `Driver::block_on`: the thread waits there for this operation anyway, while on another
//! executor a blocking call would hold up the runtime's other tasks for as long as the device
//! takes.
//!
//! A probe costs its path's extra latency, and on a busy disk more: each probe puts an
//! operation in the ring, which wakes the reaper thread to watch the owner (`driver::gate`).
//! On the 2-vCPU guest with a neighbour writing, where the ring is the slower path but often
//! within 1/8 of the blocking call, the earlier schedule (every 32 operations while within
//! 1/8, every 256 beyond) ran 7 % of the writes as probes and woke the reaper 53 times a
//! second; the writes' p50 was 1.02x fio's `pwrite` against 0.96x with a probe every 1,024
//! (docs/BENCHMARKS.md).
//!
//! The averages are a heuristic and guard no memory: relaxed atomics, a lost update only
//! changes one choice.

// The choice is io_uring's only; elsewhere `Driver::inline_ops` reads a 0 from `ran`.
#![cfg_attr(not(target_os = "linux"), allow(dead_code))]

use std::sync::atomic::{AtomicU32, AtomicU64, AtomicU8, AtomicUsize, Ordering};

/// The first interval between probes, in operations, and the interval again whenever the
/// faster path changes...
const PROBE: u32 = 32;
/// ... and the longest it doubles to while the same path stays faster. A probe of the slower
/// path costs the difference in latency, so it is worth paying often only while the order may
/// flip; at 1,024 operations a change of the machine is still seen within a few tenths of a
/// second on a busy disk (300 us a write), within 50 ms on a quiet one.
const PROBE_MAX: u32 = 1024;
/// Operations in a probe: one that pays for the switch and three that are counted.
const BURST: u32 = 4;
/// Samples each path needs before the interval between probes may grow.
const SETTLED: u32 = 8;
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
    /// Operations until the next probe, and the interval it was set from.
    until_probe: AtomicU32,
    interval: AtomicU32,
    /// The faster path when the last probe started (`NONE` before the first).
    probed_fast: AtomicU8,
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
            until_probe: AtomicU32::new(PROBE),
            interval: AtomicU32::new(PROBE),
            probed_fast: AtomicU8::new(NONE),
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
        let left = self.until_probe.load(Ordering::Relaxed);
        if left > 1 {
            self.until_probe.store(left - 1, Ordering::Relaxed);
            return faster_inline;
        }
        // A probe starts. The interval to the next doubles if the same path was the faster
        // one at the last probe too.
        let fast = if faster_inline { INLINE } else { RING };
        let settled = self.ring_n.load(Ordering::Relaxed) >= SETTLED
            && self.inline_n.load(Ordering::Relaxed) >= SETTLED;
        let same = self.probed_fast.swap(fast, Ordering::Relaxed) == fast;
        let interval = if settled && same {
            (self.interval.load(Ordering::Relaxed) * 2).min(PROBE_MAX)
        } else {
            PROBE
        };
        self.interval.store(interval, Ordering::Relaxed);
        self.until_probe.store(interval, Ordering::Relaxed);
        self.burst.store(BURST - 1, Ordering::Relaxed);
        !faster_inline
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

    /// Where each probe starts: a pick of the slower path after one of the faster.
    fn probe_starts(picks: &[bool], fast: bool) -> Vec<usize> {
        (0..picks.len())
            .filter(|&i| picks[i] != fast && (i == 0 || picks[i - 1] == fast))
            .collect()
    }

    #[test]
    fn probes_back_off_while_the_same_path_stays_faster() {
        let b = BURST as usize - 1;
        let inline = settled(SETTLED, 50_000, 40_000);
        let picks: Vec<bool> = (0..6000).map(|_| inline.choose()).collect();
        let starts = probe_starts(&picks, true);
        assert_eq!(starts[0], PROBE as usize - 1);
        let gaps: Vec<usize> = starts.windows(2).map(|w| w[1] - w[0]).collect();
        assert_eq!(
            gaps[..7],
            [
                32 + b,
                64 + b,
                128 + b,
                256 + b,
                512 + b,
                1024 + b,
                1024 + b
            ]
        );
        // The same when the ring is the one ahead.
        let inline = settled(SETTLED, 40_000, 50_000);
        let picks: Vec<bool> = (0..300).map(|_| inline.choose()).collect();
        let starts = probe_starts(&picks, false);
        assert_eq!(starts[1] - starts[0], 32 + b);
        assert_eq!(starts[2] - starts[1], 64 + b);
        // Not settled: every `PROBE`.
        let inline = settled(1, 50_000, 40_000);
        let picks: Vec<bool> = (0..300).map(|_| inline.choose()).collect();
        let starts = probe_starts(&picks, true);
        assert!(
            starts.windows(2).all(|w| w[1] - w[0] == 32 + b),
            "{starts:?}"
        );
    }

    #[test]
    fn probes_come_often_again_once_the_faster_path_changes() {
        let b = BURST as usize - 1;
        let inline = settled(WINDOW, 50_000, 40_000);
        for _ in 0..3000 {
            inline.choose();
        }
        assert_eq!(inline.interval.load(Ordering::Relaxed), PROBE_MAX);
        // The ring becomes fast (as its probes would show): it is now the faster path.
        for _ in 0..40 {
            inline.record(false, 20_000);
        }
        let picks: Vec<bool> = (0..3000).map(|_| inline.choose()).collect();
        let starts = probe_starts(&picks, false);
        // The first probe of the blocking call notices the change: the next comes `PROBE`
        // later, then the interval doubles again.
        assert_eq!(starts[1] - starts[0], 32 + b);
        assert_eq!(starts[2] - starts[1], 64 + b);
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
