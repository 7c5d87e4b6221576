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
//! two queues. The hand-over between the reaper thread and a `block_on` thread, and the
//! watchdog, are covered by the tests in `tests/block_on.rs`, not by the model. (An earlier
//! version also left entries while the reaper waited in the kernel, when enough completions
//! were owed to wake it: on the virtio disk here that cost 10-15 % of the IOPS at queue depth
//! 32, each entry waiting for the next burst of completions.)

use crate::sync::{fence, AtomicBool, Ordering};

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
}
