//! Who submits a pushed io_uring entry: the future that pushed it, or the reaper (the reaper
//! thread, or a thread in `Driver::block_on`).
//!
//! While the reaper is *active* (it alone consumes completions, and waits for them in
//! `io_uring_enter`), a future that pushes an entry while the reaper is out of the kernel
//! (reaping, running futures) may leave the entry in the submission queue: the reaper's next
//! `io_uring_enter`, a moment later, submits it together with the others. That saves a system
//! call per operation at high queue depth, and the kernel then runs the completion work of
//! those entries on the reaper's thread instead of interrupting another thread for it. While
//! the reaper is in the kernel, pushers submit their own entries, so an entry never waits for
//! a completion to wake the reaper.
//!
//! An entry must never be stranded: left in the queue while the reaper sleeps in the kernel.
//! Two rules prevent it, both the same handshake (a store, a `SeqCst` fence, then a look at
//! the other side; one of the two sides always sees the other):
//!
//! 1. The pusher stores its entry, fences, then reads `in_kernel` (and `active`). The reaper
//!    stores `in_kernel`, fences, then enters the kernel (`submit_and_wait` reads the queue's
//!    tail after that fence). If the pusher saw the reaper out of the kernel, the reaper's next
//!    `io_uring_enter` sees the entry. That next call is certain for the reaper thread, which
//!    loops straight back. A `block_on` thread goes back after polling its future, which runs
//!    user code: so only its own thread may leave entries for it, and should it not come back
//!    (the future blocks), the reaper thread's watchdog submits them (`Uring::idle`).
//! 2. A reaper leaving the active state stores `active = false`, fences, then submits whatever
//!    is queued. If the pusher saw it still active, that submission sees the entry.
//!
//! The loom model below checks both handshakes for one reaper against a model of the kernel's
//! two queues, and `Standby`'s wake-ups (a future starting to wait, an owner leaving, an
//! operation pushed while the reaper sleeps unwatched). The hand-over between the reaper
//! thread and a `block_on` thread, and the watchdog's rescues, are covered by the tests in
//! `tests/block_on.rs`, not by the model. (An earlier
//! version also left entries while the reaper waited in the kernel, when enough completions
//! were owed to wake it: on the virtio disk here that cost 10-15 % of the IOPS at queue depth
//! 32, each entry waiting for the next burst of completions.)

use crate::sync::{fence, AtomicBool, AtomicUsize, Condvar, Mutex, MutexGuard, Ordering};

pub(crate) struct SubmitGate {
    active: AtomicBool,
    in_kernel: AtomicBool,
}

impl SubmitGate {
    pub(crate) fn new() -> SubmitGate {
        SubmitGate {
            active: AtomicBool::new(false),
            in_kernel: AtomicBool::new(false),
        }
    }

    /// The pusher's side, after its entry is in the queue (tail stored): whether it may leave
    /// the entry for the reaper. If not, it must `io_uring_enter` itself.
    pub(crate) fn may_leave_queued(&self) -> bool {
        // No reaper active, the common case at low queue depth: submit, without the fence.
        // (A stale `false` only makes the pusher submit itself, which is always safe.)
        if !self.active.load(Ordering::Relaxed) {
            return false;
        }
        // Pairs with the fences in `entering` and `deactivate`.
        fence(Ordering::SeqCst);
        self.active.load(Ordering::SeqCst) && !self.in_kernel.load(Ordering::SeqCst)
    }

    /// The reaper, holding the completion lock, becomes the only consumer of completions.
    pub(crate) fn activate(&self) {
        self.active.store(true, Ordering::SeqCst);
    }

    /// The active reaper, right before `io_uring_enter`: pushers from now on submit their own
    /// entries, and entries left before are visible to the call.
    pub(crate) fn entering(&self) {
        self.in_kernel.store(true, Ordering::SeqCst);
        // Pairs with the fence in `may_leave_queued`.
        fence(Ordering::SeqCst);
    }

    /// The active reaper is back from `io_uring_enter`: entries may be left for its next call.
    pub(crate) fn left_kernel(&self) {
        self.in_kernel.store(false, Ordering::SeqCst);
    }

    /// The reaper stops being the only consumer. The caller must then submit whatever is
    /// queued: entries left by pushers that saw it still active.
    pub(crate) fn deactivate(&self) {
        self.active.store(false, Ordering::SeqCst);
        // Pairs with the fence in `may_leave_queued`.
        fence(Ordering::SeqCst);
    }
}

/// How the reaper thread sleeps outside the kernel, and who wakes it.
///
/// It sleeps while it has nothing to do (`may_idle`): no future waits on a completion, or a
/// thread in `Driver::block_on` owns the ring. A future that starts waiting (`unattended` up)
/// wakes it with `kick`, unless an owner is there to reap; an owner leaving (`disown`) wakes it
/// if anything was left unattended meanwhile.
///
/// While an owner is there, the reaper watches that it comes back to the ring, but only while
/// operations are in the ring: then its sleep is timed (the watchdog, `Uring::idle`). With
/// none in the ring (the owner waits on something else, or runs its lone operations inline)
/// there is nothing to rescue, and it sleeps without a timeout, marked `unwatched`; whoever
/// then puts an operation in the ring wakes it (`pushed`). An owned driver at rest so costs no
/// timer wake-ups at all, where a 16 ms watch cost 62 a second, for as long as it was owned.
///
/// Both handshakes are the same: a store, a `SeqCst` fence, then a look at the other side.
/// The loom model below checks each; loom's timed wait never times out, so no wake-up can
/// depend on the watchdog's timeout.
pub(crate) struct Standby {
    /// The owning thread's token, or 0.
    owner: AtomicUsize,
    idle: AtomicBool,
    /// The reaper sleeps without a timeout although owned (nothing was in the ring).
    unwatched: AtomicBool,
    lock: Mutex<()>,
    wake: Condvar,
}

impl Standby {
    pub(crate) fn new() -> Standby {
        Standby {
            owner: AtomicUsize::new(0),
            idle: AtomicBool::new(false),
            unwatched: AtomicBool::new(false),
            lock: Mutex::new(()),
            wake: Condvar::new(),
        }
    }

    /// The owner's token, or 0.
    pub(crate) fn owner(&self) -> usize {
        self.owner.load(Ordering::SeqCst)
    }

    pub(crate) fn owned(&self) -> bool {
        self.owner() != 0
    }

    /// Makes `token` the owner if there is none.
    pub(crate) fn try_own(&self, token: usize) -> bool {
        self.owner
            .compare_exchange(0, token, Ordering::SeqCst, Ordering::SeqCst)
            .is_ok()
    }

    /// A future raised `unattended` (SeqCst) and now needs someone to reap.
    pub(crate) fn kick(&self) {
        // Orders the caller's raise of `unattended` before the loads below. (SeqCst accesses
        // alone would do in the language's model; loom models them as acquire/release only,
        // and found the lost wake-up without this fence.)
        fence(Ordering::SeqCst);
        // An owner reaps; it wakes the reaper when it leaves (`disown`), if need be. Either
        // it saw our raise, or we see it gone.
        if self.owned() {
            return;
        }
        // Pairs with `sleep`'s store of `idle` then its look at `may_idle` (all SeqCst):
        // either it sees the raise, or we see it idle and notify it under its lock, which it
        // holds until it waits.
        if self.idle.load(Ordering::SeqCst) {
            self.notify();
        }
    }

    /// The owner leaves; `unattended` says whether futures wait on completions.
    pub(crate) fn disown(&self, unattended: impl Fn() -> usize) {
        self.owner.store(0, Ordering::SeqCst);
        // Pairs with `kick`, which skipped the reaper while we owned the ring.
        fence(Ordering::SeqCst);
        if unattended() > 0 {
            self.notify();
        }
    }

    /// Wakes the reaper if it sleeps.
    pub(crate) fn notify(&self) {
        let _guard = self.lock.lock().unwrap();
        self.wake.notify_one();
    }

    /// An operation was put in the ring (its slot counted in flight before): wakes the reaper
    /// if it sleeps unwatched, so that it watches the owner again. One fence and one load
    /// otherwise.
    pub(crate) fn pushed(&self) {
        // Pairs with `sleep`'s store of `unwatched` then its look at `in_ring`: either it sees
        // our operation, or we see it unwatched and notify it under its lock, which it holds
        // until it waits.
        fence(Ordering::SeqCst);
        // The first pusher to see it takes the mark: one notify wakes it, and the pushers
        // that follow before it runs need not take its lock for nothing. (A load first: the
        // common case writes nothing.)
        if self.unwatched.load(Ordering::SeqCst) && self.unwatched.swap(false, Ordering::SeqCst) {
            self.notify();
        }
    }

    /// The reaper: if `may_idle`, sleeps until notified and says how; else returns `Busy` at
    /// once. While owned with operations in the ring (`in_ring`), the sleep ends after
    /// `timeout` too (`Woke::Watched`).
    pub(crate) fn sleep(
        &self,
        may_idle: impl Fn() -> bool,
        in_ring: impl Fn() -> bool,
        timeout: std::time::Duration,
    ) -> Woke {
        self.sleep_with(may_idle, in_ring, |guard| {
            let (guard, result) = self.wake.wait_timeout(guard, timeout).unwrap();
            (guard, result.timed_out())
        })
    }

    /// `sleep`, with the timed wait given (it returns whether it timed out): the loom model's
    /// times out at once (loom's own never does).
    fn sleep_with<'a>(
        &'a self,
        may_idle: impl Fn() -> bool,
        in_ring: impl Fn() -> bool,
        timed_wait: impl FnOnce(MutexGuard<'a, ()>) -> (MutexGuard<'a, ()>, bool),
    ) -> Woke {
        let guard = self.lock.lock().unwrap();
        self.idle.store(true, Ordering::SeqCst);
        // Pairs with the fence in `kick`.
        fence(Ordering::SeqCst);
        if !may_idle() {
            self.idle.store(false, Ordering::SeqCst);
            return Woke::Busy;
        }
        let watch = self.owned() && {
            self.unwatched.store(true, Ordering::SeqCst);
            // Pairs with the fence in `pushed`.
            fence(Ordering::SeqCst);
            in_ring()
        };
        let (guard, woke) = if watch {
            self.unwatched.store(false, Ordering::SeqCst);
            match timed_wait(guard) {
                (guard, true) => (guard, Woke::Watched),
                // A notify (or a spurious wake-up) is no period of watching: the owner gets a
                // whole one before it is judged.
                (guard, false) => (guard, Woke::Notified),
            }
        } else {
            (self.wake.wait(guard).unwrap(), Woke::Notified)
        };
        self.unwatched.store(false, Ordering::SeqCst);
        self.idle.store(false, Ordering::SeqCst);
        drop(guard);
        woke
    }
}

/// How the reaper's `Standby::sleep` ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Woke {
    /// It may not idle: it did not sleep.
    Busy,
    /// It watched an owner with operations in the ring for a whole period.
    Watched,
    /// It was notified (or woke spuriously): from a sleep without a timeout (no owner, or
    /// nothing in the ring), or before its period was over.
    Notified,
}

/// Model check of the rules above: every interleaving of a pusher with the active reaper and
/// its leaving, on a model of the kernel (a submission queue whose tail is an atomic, and a
/// completion queue; the device completes an entry the moment it is submitted). A stranded
/// entry shows up as the reaper blocked forever in its wait: a deadlock, which loom reports.
///
/// Run with `RUSTFLAGS="--cfg directfile_loom" cargo test -p directfile --release --lib loom`.
#[cfg(all(test, directfile_loom))]
mod loom_model {
    use super::*;
    use loom::sync::atomic::AtomicUsize;
    use loom::sync::{Arc, Condvar, Mutex};

    /// The kernel's side of one ring.
    struct Kernel {
        /// Pushed entries: written by pushers (Release), read by the kernel (Acquire).
        sq_tail: AtomicUsize,
        /// Serialises pushers, as the driver's `sq` mutex does.
        sq_lock: Mutex<()>,
        state: Mutex<KernelState>,
        cq_posted: Condvar,
    }

    struct KernelState {
        sq_head: usize,
        cq_tail: usize,
        cq_head: usize,
    }

    impl Kernel {
        fn new() -> Kernel {
            Kernel {
                sq_tail: AtomicUsize::new(0),
                sq_lock: Mutex::new(()),
                state: Mutex::new(KernelState {
                    sq_head: 0,
                    cq_tail: 0,
                    cq_head: 0,
                }),
                cq_posted: Condvar::new(),
            }
        }

        fn push(&self) {
            let _g = self.sq_lock.lock().unwrap();
            let t = self.sq_tail.load(Ordering::Relaxed);
            self.sq_tail.store(t + 1, Ordering::Release);
        }

        /// `io_uring_enter(to_submit = all, min_complete = wait)`; returns how many it took.
        fn enter(&self, wait: bool) -> usize {
            let mut st = self.state.lock().unwrap();
            let tail = self.sq_tail.load(Ordering::Acquire);
            let n = tail - st.sq_head;
            st.sq_head = tail;
            st.cq_tail += n;
            if n > 0 {
                self.cq_posted.notify_all();
            }
            while wait && st.cq_tail == st.cq_head {
                st = self.cq_posted.wait(st).unwrap();
            }
            n
        }

        /// Completions ready to consume.
        fn cq_len(&self) -> usize {
            let st = self.state.lock().unwrap();
            st.cq_tail - st.cq_head
        }

        fn consume(&self, n: usize) {
            self.state.lock().unwrap().cq_head += n;
        }

        fn unsubmitted(&self) -> usize {
            self.sq_tail.load(Ordering::Acquire) - self.state.lock().unwrap().sq_head
        }
    }

    fn reaper_drain(k: &Kernel) -> usize {
        let n = k.cq_len();
        k.consume(n);
        n
    }

    /// One operation is in flight when the model starts (the reaper active), and a
    /// pusher pushes `pushes` entries, each left queued or submitted by itself per the gate.
    ///
    /// With `leave` false the reaper waits until it has consumed every completion (rule 1): a
    /// stranded entry leaves it blocked forever. With `leave` true it waits once (for the
    /// initial completion) and leaves the active state (rule 2): nothing may stay queued.
    fn run(pushes: usize, leave: bool) {
        loom::model(move || {
            let k = Arc::new(Kernel::new());
            let gate = Arc::new(SubmitGate::new());
            k.push();
            k.enter(false);
            gate.activate();

            let (k2, g2) = (k.clone(), gate.clone());
            let pusher = loom::thread::spawn(move || {
                for _ in 0..pushes {
                    k2.push();
                    if !g2.may_leave_queued() {
                        k2.enter(false);
                    }
                }
            });

            let mut consumed = 0;
            while consumed < if leave { 1 } else { 1 + pushes } {
                gate.entering();
                k.enter(true);
                gate.left_kernel();
                consumed += reaper_drain(&k);
            }
            if leave {
                gate.deactivate();
                k.enter(false);
            }

            pusher.join().unwrap();
            assert_eq!(k.unsubmitted(), 0, "an entry was left in the queue");
            consumed += reaper_drain(&k);
            assert_eq!(consumed, 1 + pushes);
        });
    }

    #[test]
    fn loom_gate_active_reaper_one_push() {
        run(1, false);
    }

    #[test]
    fn loom_gate_active_reaper_two_pushes() {
        run(2, false);
    }

    #[test]
    fn loom_gate_reaper_leaves_one_push() {
        run(1, true);
    }

    #[test]
    fn loom_gate_reaper_leaves_two_pushes() {
        run(2, true);
    }

    /// A thread whose future starts waiting: raises `unattended`, then kicks the reaper.
    fn a_future_starts_waiting(
        standby: &Arc<Standby>,
        unattended: &Arc<AtomicUsize>,
    ) -> loom::thread::JoinHandle<()> {
        let (standby, unattended) = (standby.clone(), unattended.clone());
        loom::thread::spawn(move || {
            unattended.fetch_add(1, Ordering::SeqCst);
            standby.kick();
        })
    }

    /// The reaper, with nothing in the ring: sleeps while owned or while nothing is
    /// unattended, and returns once it may not. A lost wake-up blocks it: a deadlock.
    fn sleep_while_idle(standby: &Standby, unattended: &AtomicUsize) {
        let may_idle = || standby.owned() || unattended.load(Ordering::SeqCst) == 0;
        while standby.sleep(may_idle, || false, std::time::Duration::from_millis(1)) != Woke::Busy {
        }
    }

    /// The reaper's sleep against `kick` and an owner leaving: a future starts waiting while a
    /// `block_on` thread owns the ring, then the owner leaves. The reaper must end up awake
    /// (it sleeps while owned or while nothing is unattended); a lost wake-up is a deadlock.
    /// loom's timed wait never times out, so the watchdog cannot paper over one.
    #[test]
    fn loom_standby_owner_leaves_while_a_future_starts_waiting() {
        loom::model(|| {
            let standby = Arc::new(Standby::new());
            let unattended = Arc::new(AtomicUsize::new(0));
            assert!(standby.try_own(1));

            let future = a_future_starts_waiting(&standby, &unattended);
            let (s3, u3) = (standby.clone(), unattended.clone());
            let owner = loom::thread::spawn(move || {
                s3.disown(|| u3.load(Ordering::SeqCst));
            });

            sleep_while_idle(&standby, &unattended);

            future.join().unwrap();
            owner.join().unwrap();
        });
    }

    /// Without an owner: `kick` against the reaper going to sleep.
    #[test]
    fn loom_standby_kick_against_sleep() {
        loom::model(|| {
            let standby = Arc::new(Standby::new());
            let unattended = Arc::new(AtomicUsize::new(0));
            let future = a_future_starts_waiting(&standby, &unattended);
            sleep_while_idle(&standby, &unattended);
            future.join().unwrap();
        });
    }

    /// An owner with nothing in the ring, so the reaper sleeps unwatched, while an operation
    /// is put in the ring: the reaper must end up watching (a timed sleep with the operation
    /// seen). A lost wake-up leaves it asleep without a timeout: a deadlock. Here a timed
    /// wait times out at once (a legal timeout), so only an untimed one can block.
    #[test]
    fn loom_standby_push_wakes_an_unwatched_reaper() {
        loom::model(|| {
            let standby = Arc::new(Standby::new());
            let in_flight = Arc::new(AtomicUsize::new(0));
            assert!(standby.try_own(1));

            let (s2, f2) = (standby.clone(), in_flight.clone());
            let pusher = loom::thread::spawn(move || {
                // The slot is counted in flight (`Slots::acquire`), then pushed.
                f2.fetch_add(1, Ordering::AcqRel);
                s2.pushed();
            });

            let in_ring = || in_flight.load(Ordering::Acquire) > 0;
            loop {
                match standby.sleep_with(|| standby.owned(), in_ring, |guard| (guard, true)) {
                    Woke::Watched => break,
                    Woke::Notified => {}
                    Woke::Busy => unreachable!("owned: may idle"),
                }
            }
            pusher.join().unwrap();
        });
    }
}

/// `Standby::sleep`'s outcomes on real threads and clocks (the loom models cover the
/// wake-up races; loom's timed wait never runs its clock).
#[cfg(all(test, not(directfile_loom)))]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::time::{Duration, Instant};

    const LONG: Duration = Duration::from_secs(30);

    /// Runs `sleep` on a thread with an owner and `in_ring`, lets `poke` act on the standby
    /// once the thread sleeps, and returns how it woke and how long it slept.
    fn sleep_owned(
        in_ring: bool,
        timeout: Duration,
        poke: impl FnOnce(&Standby),
    ) -> (Woke, Duration) {
        let standby = Arc::new(Standby::new());
        assert!(standby.try_own(1));
        let sleeper = {
            let standby = Arc::clone(&standby);
            std::thread::spawn(move || {
                let start = Instant::now();
                let woke = standby.sleep(|| true, || in_ring, timeout);
                (woke, start.elapsed())
            })
        };
        // `idle` is stored under the lock that the wait releases: once it is up and the lock
        // is free again, the sleeper waits on the condition variable. (A sleep that ends on its
        // own before this thread looks, a short watched period on a loaded machine, ends the
        // wait too: the assertions then judge it, rather than this loop hanging.)
        while !sleeper.is_finished()
            && (!standby.idle.load(Ordering::SeqCst) || standby.lock.try_lock().is_err())
        {
            std::thread::sleep(Duration::from_millis(1));
        }
        poke(&standby);
        sleeper.join().unwrap()
    }

    #[test]
    fn a_watched_period_that_runs_out_is_watched() {
        let (woke, slept) = sleep_owned(true, Duration::from_millis(20), |_| {});
        assert_eq!(woke, Woke::Watched);
        assert!(slept >= Duration::from_millis(20), "slept {slept:?}");
    }

    #[test]
    fn a_notify_that_ends_a_watched_period_early_is_no_period_watched() {
        let (woke, slept) = sleep_owned(true, LONG, Standby::notify);
        assert_eq!(woke, Woke::Notified);
        assert!(slept < LONG, "slept {slept:?}");
    }

    #[test]
    fn an_owner_with_nothing_in_the_ring_is_not_watched_until_a_push() {
        let (woke, slept) = sleep_owned(false, Duration::from_millis(1), |standby| {
            // Not watched: no timeout ends this sleep (well past the 1 ms it was given).
            std::thread::sleep(Duration::from_millis(50));
            assert!(standby.unwatched.load(Ordering::SeqCst));
            assert!(
                standby.idle.load(Ordering::SeqCst),
                "the sleep ended on a timeout"
            );
            standby.pushed();
            // The push took the mark: a second one notifies no one.
            assert!(!standby.unwatched.load(Ordering::SeqCst));
        });
        assert_eq!(woke, Woke::Notified);
        assert!(slept >= Duration::from_millis(50), "slept {slept:?}");
    }

    #[test]
    fn a_reaper_that_may_not_idle_does_not_sleep() {
        let standby = Standby::new();
        assert_eq!(standby.sleep(|| false, || true, LONG), Woke::Busy);
        assert!(!standby.idle.load(Ordering::SeqCst));
    }
}
