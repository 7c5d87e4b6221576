//! Completions reaped by an async runtime's reactor (features `tokio` and `async-io`).
//!
//! Without a reactor, a future that waits on another executor than `Driver::block_on` is woken
//! by the driver's reaper thread: the kernel wakes that thread, it records the completion and
//! wakes the task, which a futex wake then moves to the executor's thread. With a reactor, the
//! ring signals an eventfd on each batch of completions (`IORING_REGISTER_EVENTFD`), the
//! runtime's reactor watches it (tokio's `AsyncFd`, async-io's `Async`), and the runtime thread
//! that sees it ready calls our waker, which reaps the completion queue and wakes the tasks on
//! that same thread. The reaper thread sleeps meanwhile.
//!
//! # Who reaps when
//!
//! - A future that finds its completion when polled takes it (the inline reap of `Op::poll`,
//!   and the spin at queue depth 1), on every executor, as before.
//! - A future that must wait is **served** when a reactor will certainly run while it waits:
//!   - tokio: the reactor of the runtime the driver is registered with, for a future polled
//!     on a thread of that runtime: any thread in its context for a multi-thread runtime
//!     (its workers turn the reactor as long as it lives), and for a current-thread runtime only
//!     the thread that drives it (`tokio::runtime::worker_index()` is `Some`), since no one
//!     turns that reactor once its `block_on` returns. The driver registers with the first
//!     runtime whose future waits; a future of a second runtime is not served.
//!   - async-io (`DriverBuilder::reactor(Reactor::AsyncIo)`): every future, since async-io's
//!     reactor is one per process and its own thread turns it when no `block_on` does.
//! - Every other waiting future, and every orphan (a future dropped in flight), is
//!   **unattended**: the reaper thread reaps for it as before. Futures polled outside any
//!   runtime, in a second runtime, or in a current-thread runtime's context without driving
//!   it (`Runtime::enter`) therefore take today's path; so does `Driver::block_on`'s thread.
//! - The reaper thread sleeps while nothing is unattended and a reactor is registered,
//!   whatever the number of operations in flight (`Uring::may_idle`).
//!
//! # The hand-over
//!
//! A reactor **leaves** when its runtime shuts down (tokio reports the registration gone) or
//! the driver is dropped. Then every waiter it served becomes unattended, and the reaper thread
//! takes them over. Three handshakes make sure no wake-up is lost; the loom model below checks
//! each (and fails when the sweep of rule 1 or the look of rule 2 is taken out):
//!
//! 1. **Leaving against a future that registers as served.** A future asks whether a reactor
//!    serves (the epoch, odd while one does; every attach and every leave adds one) under its
//!    slot's lock, and records its waker as served or unattended under that same lock. The
//!    leaving reactor adds one to the epoch, then sweeps every slot under its lock
//!    (`Slots::unserve_all`) and kicks the reaper. The slot lock orders the sweep's visit
//!    either after the registration (the sweep finds the waiter served and hands it over) or
//!    before it (then the future's look at the epoch comes after the change: it registers as
//!    unattended and kicks the reaper itself).
//! 2. **A readiness the reactor cannot act on.** When the reactor's waker runs, another thread
//!    may hold the completion lock (an inline reap, the reaper thread or a `block_on` thread in
//!    the kernel) and may have read the completion queue before the new entries arrived. The
//!    reactor sets `wanted`, fences, then tries the lock; every holder, after letting go,
//!    fences and reads `wanted` and, if set, reaps again. Either the reactor gets the lock, or
//!    the holder sees `wanted`. The reactor never blocks on the lock: that would block a
//!    runtime thread behind the reaper thread's wait in the kernel.
//! 3. **The reaper's sleep.** The reaper sleeps only while nothing is unattended and (at
//!    queue depth above one) a reactor serves; the leave and every hand-over end with `kick`,
//!    which pairs with the reaper's sleep as before (`gate.rs`).
//!
//! Completions that arrived before the eventfd was registered raise no signal: the attach
//! reaps once after it is published, so a served waiter never waits for one of those.
//!
//! # What it costs
//!
//! One `eventfd` write by the kernel per batch of completions while a reactor is registered
//! (none before the first registration); one `epoll_wait` return on the runtime's thread per
//! batch instead of a reaper thread wake-up and a futex wake per task. No allocation per
//! operation: the waker given to the reactor is made once per registration. The measured
//! cost is in `docs/reactors.md`.
//!
//! # What a runtime must have
//!
//! tokio: a runtime with its I/O driver (`enable_io` or `enable_all`, which `#[tokio::main]`
//! and `#[tokio::test]` turn on). tokio panics when asked to register with a runtime without
//! one and offers no way to ask first: the driver catches that panic once per runtime (the
//! panic hook still prints it) and leaves that runtime's futures to the reaper thread. A
//! build with `panic = "abort"` cannot catch it, so there the driver registers with no tokio
//! runtime.

// One call needs it: registering the eventfd with tokio's reactor (`AsyncFd`).
#![allow(unsafe_code)]

use super::Reactor;
use crate::sync::{fence, AtomicBool, AtomicU64, Ordering};

/// The state the hand-over rules share: which reactor epoch serves, and whether a reactor
/// wants a reap it could not do itself.
pub(crate) struct Handover {
    /// Odd while a reactor serves; one is added on every attach and every leave.
    epoch: AtomicU64,
    /// A reactor saw completions while another thread held the completion lock (rule 2).
    wanted: AtomicBool,
}

impl Handover {
    pub(crate) fn new() -> Handover {
        Handover {
            epoch: AtomicU64::new(0),
            wanted: AtomicBool::new(false),
        }
    }

    /// The serving reactor's epoch, if one serves.
    pub(crate) fn serving(&self) -> Option<u64> {
        let epoch = self.epoch.load(Ordering::SeqCst);
        (epoch & 1 == 1).then_some(epoch)
    }

    /// A reactor starts serving (the caller holds the link lock, and none serves).
    pub(crate) fn attach(&self) -> u64 {
        let epoch = self.epoch.fetch_add(1, Ordering::SeqCst) + 1;
        debug_assert!(epoch & 1 == 1, "attached twice");
        epoch
    }

    /// The serving reactor leaves (the caller holds the link lock). The caller must then
    /// hand its waiters over (`Slots::unserve_all`) and kick the reaper: rule 1.
    pub(crate) fn leave(&self) {
        let epoch = self.epoch.fetch_add(1, Ordering::SeqCst) + 1;
        debug_assert!(epoch & 1 == 0, "left twice");
    }

    /// Rule 2, the reactor's side, before it tries the completion lock.
    pub(crate) fn want_reap(&self) {
        // Every access to `wanted` is a read-modify-write: they are totally ordered, each
        // reading the one before. (loom lets a plain store here be ordered before the
        // holder's earlier swap, and then finds the request lost.)
        self.wanted.swap(true, Ordering::SeqCst);
        // Pairs with the fence in `wanted_after_release`.
        fence(Ordering::SeqCst);
    }

    /// Rule 2: a thread that got the completion lock is about to read the queue: requests
    /// made before are served by that read.
    pub(crate) fn taking_wanted(&self) {
        if cfg!(any(
            feature = "tokio",
            feature = "async-io",
            directfile_loom
        )) {
            // A swap, not a store: a request it erases is one it read, and reading it orders
            // the reactor's view of the queue (the completions it was signalled for) before
            // this thread's read of the queue. A plain store could erase a request whose
            // completions this thread then does not see: loom finds that.
            self.wanted.swap(false, Ordering::SeqCst);
        }
    }

    /// Rule 2, the holder's side, right after it let go of the completion lock: whether a
    /// reactor asked for a reap meanwhile (then the caller reaps again).
    pub(crate) fn wanted_after_release(&self) -> bool {
        if !cfg!(any(
            feature = "tokio",
            feature = "async-io",
            directfile_loom
        )) {
            return false;
        }
        // Pairs with the fence in `want_reap`. A read-modify-write that changes nothing: see
        // `want_reap`.
        fence(Ordering::SeqCst);
        self.wanted.fetch_or(false, Ordering::SeqCst)
    }
}

pub(crate) use link::Reactors;

// Without a reactor feature, nothing ever attaches: `Link` has no variant.
#[cfg_attr(
    not(any(feature = "tokio", feature = "async-io")),
    allow(
        dead_code,
        unused_variables,
        unused_imports,
        unused_mut,
        unreachable_code
    )
)]
mod link {
    use super::{Handover, Reactor};
    use crate::driver::uring::Uring;
    use crate::driver::{Engine, Shared};
    use crate::sync::{Mutex, Ordering};
    use std::fs::File;
    #[cfg(feature = "tokio")]
    use std::future::Future;
    use std::sync::atomic::AtomicU64 as StdAtomicU64;
    use std::sync::{Arc, Weak};
    use std::task::{Context, Poll, Waker};

    /// What one look at the reactor's readiness found.
    enum Readiness {
        /// Completions were signalled (the readiness is cleared): reap, then look again.
        Signalled,
        /// Nothing yet: our waker is registered for the next signal.
        Armed,
        /// The reactor is gone (its runtime shut down): leave.
        Gone,
    }

    /// A registration of the ring's eventfd with one reactor.
    enum Link {
        #[cfg(feature = "tokio")]
        Tokio {
            fd: tokio::io::unix::AsyncFd<Arc<File>>,
        },
        #[cfg(feature = "async-io")]
        AsyncIo { fd: async_io::Async<Arc<File>> },
    }

    impl Link {
        /// Looks at the readiness with `waker`: clears a signal it finds, else registers
        /// `waker` for the next one.
        fn look(&self, waker: &Waker) -> Readiness {
            let mut cx = Context::from_waker(waker);
            match *self {
                #[cfg(feature = "tokio")]
                Link::Tokio { ref fd } => {
                    // Outside tokio's task budget: an exhausted budget would answer Pending
                    // and wake `waker` at once, that is, call us again from here.
                    let look = tokio::task::unconstrained(std::future::poll_fn(|cx| {
                        Poll::Ready(match fd.poll_read_ready(cx) {
                            Poll::Ready(Ok(mut guard)) => {
                                // Edge-triggered: no need to read the eventfd; a signal after
                                // this clear is a new edge (tokio keeps it: its tick changed).
                                guard.clear_ready();
                                Readiness::Signalled
                            }
                            Poll::Ready(Err(_)) => Readiness::Gone,
                            Poll::Pending => Readiness::Armed,
                        })
                    }));
                    match std::pin::pin!(look).as_mut().poll(&mut cx) {
                        Poll::Ready(readiness) => readiness,
                        Poll::Pending => unreachable!("the look is always ready"),
                    }
                }
                #[cfg(feature = "async-io")]
                Link::AsyncIo { ref fd } => match fd.poll_readable(&mut cx) {
                    Poll::Ready(Ok(())) => {
                        // Level-triggered (one-shot, re-armed by the next look): empty the
                        // counter first, or the next look fires again at once.
                        let mut count = [0u8; 8];
                        let _ = std::io::Read::read(&mut &**fd.get_ref(), &mut count);
                        Readiness::Signalled
                    }
                    Poll::Ready(Err(_)) => Readiness::Gone,
                    Poll::Pending => Readiness::Armed,
                },
            }
        }
    }

    struct Linked {
        link: Link,
        /// Our waker (made once per registration): it reaps when the reactor calls it.
        waker: Waker,
    }

    /// The waker the reactor calls: reaps on the calling (runtime) thread. It holds the
    /// driver weakly: the registration lives inside the driver, which must not keep itself.
    struct ReactorWake {
        shared: Weak<Shared>,
    }

    impl std::task::Wake for ReactorWake {
        fn wake(self: Arc<Self>) {
            self.wake_by_ref();
        }

        fn wake_by_ref(self: &Arc<Self>) {
            if let Some(shared) = self.shared.upgrade() {
                if let Engine::Uring(u) = &shared.engine {
                    u.reactors().wakes.fetch_add(1, Ordering::Relaxed);
                    u.reactors().signalled(u, &shared);
                }
            }
        }
    }

    /// The reactors of one io_uring driver: the hand-over state and the registration.
    pub(crate) struct Reactors {
        pub(crate) handover: Handover,
        choice: Reactor,
        linked: Mutex<Option<Linked>>,
        /// The tokio runtime registered (its id), read without the lock by `serves_here`.
        #[cfg_attr(not(feature = "tokio"), allow(dead_code))]
        runtime: StdAtomicU64,
        /// The last tokio runtime that could not be registered with (no I/O driver, shut
        /// down): not tried again.
        #[cfg_attr(not(feature = "tokio"), allow(dead_code))]
        refused: StdAtomicU64,
        /// The ring's eventfd, once registered with the ring (on the first attach).
        eventfd: Mutex<Option<Arc<File>>>,
        /// Times a reactor called our waker.
        pub(crate) wakes: std::sync::atomic::AtomicUsize,
    }

    impl Reactors {
        pub(crate) fn new(choice: Reactor) -> Reactors {
            Reactors {
                handover: Handover::new(),
                choice,
                linked: Mutex::new(None),
                runtime: StdAtomicU64::new(0),
                refused: StdAtomicU64::new(0),
                eventfd: Mutex::new(None),
                wakes: std::sync::atomic::AtomicUsize::new(0),
            }
        }

        /// Which reactor serves, if one does.
        pub(crate) fn serving_name(&self) -> Option<&'static str> {
            self.handover.serving()?;
            match self.linked.lock().unwrap().as_ref().map(|l| &l.link) {
                #[cfg(feature = "tokio")]
                Some(Link::Tokio { .. }) => Some("tokio"),
                #[cfg(feature = "async-io")]
                Some(Link::AsyncIo { .. }) => Some("async-io"),
                _ => None,
            }
        }

        /// Called before a future registers its waker: registers with the reactor of this
        /// thread's runtime if none serves yet and this thread's runtime can serve.
        pub(crate) fn offer(&self, u: &Uring, shared: &Arc<Shared>) {
            if self.handover.serving().is_some() || matches!(self.choice, Reactor::Thread) {
                return;
            }
            #[cfg(feature = "async-io")]
            if self.choice == Reactor::AsyncIo {
                self.attach(u, shared, 0, |fd| {
                    async_io::Async::new(fd).ok().map(|fd| Link::AsyncIo { fd })
                });
                return;
            }
            #[cfg(all(feature = "tokio", panic = "unwind"))]
            if self.choice == Reactor::Auto {
                let Some(here) = tokio_here() else {
                    return;
                };
                if !here.drives || self.refused.load(Ordering::Relaxed) == here.id {
                    return;
                }
                let attached = self.attach(u, shared, here.id, |fd| {
                    // tokio panics (rather than failing) on a runtime without I/O driver.
                    let made = std::panic::catch_unwind(|| {
                        // SAFETY: the AsyncFd owns `fd` (a reference to the eventfd's File), so
                        // the descriptor stays open and names the same eventfd for as long as
                        // the AsyncFd lives, and `as_raw_fd` always returns it.
                        unsafe {
                            tokio::io::unix::AsyncFd::register_with_interest(
                                fd,
                                tokio::io::Interest::READABLE,
                            )
                        }
                    });
                    match made {
                        Ok(Ok(fd)) => Some(Link::Tokio { fd }),
                        _ => None,
                    }
                });
                if !attached && self.refused.swap(here.id, Ordering::Relaxed) != here.id {
                    log::warn!(
                        "directfile: cannot register with this tokio runtime (no I/O driver: \
                         enable_io); its futures are woken by the driver's thread"
                    );
                }
            }
            let _ = (u, shared);
        }

        /// Registers the ring's eventfd with a reactor (`make` wraps it) and publishes the
        /// new epoch; `runtime` is the tokio runtime's id (0 for async-io). Returns whether a
        /// reactor serves now.
        fn attach(
            &self,
            u: &Uring,
            shared: &Arc<Shared>,
            runtime: u64,
            make: impl FnOnce(Arc<File>) -> Option<Link>,
        ) -> bool {
            let mut linked = self.linked.lock().unwrap();
            if linked.is_some() {
                return self.handover.serving().is_some();
            }
            // The eventfd is registered with the ring only once a reactor took it: a ring
            // whose every runtime refused signals no eventfd.
            let registered = self.eventfd.lock().unwrap().clone();
            let fd = match &registered {
                Some(fd) => Arc::clone(fd),
                None => match crate::sys::eventfd() {
                    Ok(fd) => Arc::new(File::from(fd)),
                    Err(e) => {
                        log::warn!("directfile: cannot make an eventfd: {e}");
                        return false;
                    }
                },
            };
            let Some(link) = make(Arc::clone(&fd)) else {
                return false;
            };
            if registered.is_none() {
                if let Err(e) = u.register_eventfd(&fd) {
                    log::warn!("directfile: cannot register an eventfd with the ring: {e}");
                    return false;
                }
                *self.eventfd.lock().unwrap() = Some(fd);
            }
            let waker = Waker::from(Arc::new(ReactorWake {
                shared: Arc::downgrade(shared),
            }));
            *linked = Some(Linked { link, waker });
            // Before the epoch: `serves_here` compares it once the epoch says a reactor serves.
            self.runtime.store(runtime, Ordering::SeqCst);
            self.handover.attach();
            drop(linked);
            // Arm the registration, and reap completions that came before the eventfd was
            // registered (they raised no signal).
            self.signalled(u, shared);
            true
        }

        /// The reactor called our waker (or we just attached): reap, and re-arm.
        fn signalled(&self, u: &Uring, shared: &Shared) {
            loop {
                let readiness = {
                    let linked = self.linked.lock().unwrap();
                    let Some(linked) = linked.as_ref() else {
                        return;
                    };
                    linked.link.look(&linked.waker)
                };
                self.handover.want_reap();
                u.reap(shared);
                match readiness {
                    Readiness::Signalled => continue,
                    Readiness::Armed => return,
                    Readiness::Gone => {
                        self.leave(u, shared);
                        return;
                    }
                }
            }
        }

        /// The reactor leaves: its waiters go to the reaper thread (rule 1).
        pub(crate) fn leave(&self, u: &Uring, shared: &Shared) {
            let link = {
                let mut linked = self.linked.lock().unwrap();
                let link = linked.take();
                if link.is_some() {
                    self.handover.leave();
                }
                link
            };
            if link.is_none() {
                return;
            }
            shared.slots.unserve_all();
            u.kick();
            // Deregistered from the reactor here, outside our locks.
            drop(link);
        }

        /// Whether a future waiting on this thread is served (asked under the future's slot
        /// lock: rule 1).
        pub(crate) fn serves_here(&self) -> bool {
            if self.handover.serving().is_none() {
                return false;
            }
            match self.choice {
                #[cfg(feature = "async-io")]
                Reactor::AsyncIo => true,
                #[cfg(feature = "tokio")]
                Reactor::Auto => tokio_here().is_some_and(|here| {
                    here.drives && here.id == self.runtime.load(Ordering::SeqCst)
                }),
                _ => false,
            }
        }
    }

    /// The tokio runtime of this thread.
    #[cfg(feature = "tokio")]
    struct TokioHere {
        id: u64,
        /// A reactor turn on this runtime is certain while this thread's future waits: a
        /// multi-thread runtime (its workers turn it), or the thread that drives a
        /// current-thread one.
        drives: bool,
    }

    #[cfg(feature = "tokio")]
    fn tokio_here() -> Option<TokioHere> {
        let handle = tokio::runtime::Handle::try_current().ok()?;
        let drives = match handle.runtime_flavor() {
            tokio::runtime::RuntimeFlavor::MultiThread => true,
            _ => tokio::runtime::worker_index().is_some(),
        };
        Some(TokioHere {
            id: runtime_id(&handle),
            drives,
        })
    }

    /// A tokio runtime id as a number (`runtime::Id` is opaque but hashes its number).
    #[cfg(feature = "tokio")]
    fn runtime_id(handle: &tokio::runtime::Handle) -> u64 {
        use std::hash::{Hash, Hasher};
        /// Keeps what is hashed: the id's one `u64`.
        struct Keep(u64);
        impl Hasher for Keep {
            fn finish(&self) -> u64 {
                self.0
            }
            fn write(&mut self, bytes: &[u8]) {
                for &b in bytes {
                    self.0 = self.0.rotate_left(8) ^ u64::from(b);
                }
            }
            fn write_u64(&mut self, n: u64) {
                self.0 ^= n;
            }
        }
        let mut keep = Keep(0);
        handle.id().hash(&mut keep);
        // 0 means "none" in `runtime` and `refused`.
        keep.finish().max(1)
    }
}

/// Model check of the hand-over rules: every interleaving of a future that registers as
/// served with the reactor leaving (rule 1, with the reaper's sleep of rule 3), and of the
/// reactor's wanted reap with a thread that holds the completion lock (rule 2).
///
/// Run with `RUSTFLAGS="--cfg directfile_loom" cargo test -p directfile --release --lib loom`.
#[cfg(all(test, directfile_loom))]
mod loom_model {
    use super::*;
    use crate::driver::gate::{Standby, Woke};
    use crate::op::slot::{Look, OpBufs, OpDesc, Slots};
    use loom::sync::atomic::AtomicUsize;
    use loom::sync::{Arc, Mutex};
    use std::os::fd::{AsFd, OwnedFd};
    use std::task::{Context, Poll, Waker};

    fn fd() -> std::sync::Arc<OwnedFd> {
        std::sync::Arc::new(std::io::stdin().as_fd().try_clone_to_owned().unwrap())
    }

    /// The reaper's `may_idle` (`Uring::may_idle`).
    fn may_idle(slots: &Slots, handover: &Handover, standby: &Standby) -> bool {
        standby.owned()
            || (slots.unattended() == 0 && (slots.in_flight() <= 1 || handover.serving().is_some()))
    }

    /// A future registers its waker as served while the reactor leaves. The reaper sleeps
    /// while nothing is unattended (one operation in flight); it must end up awake, with the
    /// waiter handed over to it exactly once: a lost hand-over leaves it asleep, a deadlock
    /// that loom reports (its timed wait never times out).
    #[test]
    fn loom_reactor_leaves_while_a_future_registers_as_served() {
        // Three threads with several locks each: unbounded, the search had not ended after
        // five minutes. Bounded to three preemptions per execution (loom's usual bound); the
        // model still fails without the sweep of rule 1.
        let mut model = loom::model::Builder::new();
        model.preemption_bound = Some(3);
        model.check(|| {
            let slots = Arc::new(Slots::new(1, 1));
            let handover = Arc::new(Handover::new());
            let standby = Arc::new(Standby::new());
            handover.attach();
            let Poll::Ready(i) =
                slots.poll_acquire(&mut Context::from_waker(Waker::noop()), &mut None)
            else {
                panic!("a fresh table has a free slot")
            };
            let g = Slots::arm(&mut slots.lock(i), 0, OpDesc::Nop, OpBufs::None, fd());

            let (s2, h2, st2) = (slots.clone(), handover.clone(), standby.clone());
            let future = loom::thread::spawn(move || {
                // As `Op::poll`: who serves is asked under the slot lock.
                match s2.take_or_register(i, g, Some(Waker::noop()), || h2.serving().is_some()) {
                    Look::Unattended => st2.kick(),
                    Look::Waiting => {}
                    Look::Done(_) => unreachable!("not completed in this model"),
                }
            });
            let (s3, h3, st3) = (slots.clone(), handover.clone(), standby.clone());
            let reactor = loom::thread::spawn(move || {
                h3.leave();
                s3.unserve_all();
                st3.kick();
            });

            // The reaper: sleeps while it may. It returns once it has a waiter to reap for.
            while standby.sleep(
                || may_idle(&slots, &handover, &standby),
                || false,
                std::time::Duration::from_millis(1),
            ) != Woke::Busy
            {}
            future.join().unwrap();
            reactor.join().unwrap();
            assert_eq!(slots.unattended(), 1, "the waiter was handed over once");
            assert!(handover.serving().is_none());
            // The reaper records the completion: the waiter is attended no more, the slot free.
            slots.complete(i, g, 0);
            assert_eq!(slots.unattended(), 0);
            assert!(slots
                .take_or_register(i, g, None, || false)
                .done()
                .is_some());
        });
    }

    /// The reactor's signal arrives while another thread holds the completion lock and has
    /// already read the queue: the completion must still be reaped by someone.
    #[test]
    fn loom_wanted_reap_against_a_lock_holder() {
        loom::model(|| {
            let handover = Arc::new(Handover::new());
            let lock = Arc::new(Mutex::new(()));
            // Completions posted and reaped (a model of the queue's tail and head).
            let posted = Arc::new(AtomicUsize::new(0));
            let reaped = Arc::new(AtomicUsize::new(0));
            let reap =
                |h: &Handover, lock: &Mutex<()>, posted: &AtomicUsize, reaped: &AtomicUsize| loop {
                    let Ok(guard) = lock.try_lock() else {
                        return;
                    };
                    h.taking_wanted();
                    reaped.store(posted.load(Ordering::SeqCst), Ordering::SeqCst);
                    drop(guard);
                    if !h.wanted_after_release() {
                        return;
                    }
                };

            // A holder (an inline reap) that read the queue before the completion came.
            let (h2, l2, p2, r2) = (
                handover.clone(),
                lock.clone(),
                posted.clone(),
                reaped.clone(),
            );
            let holder = loom::thread::spawn(move || reap(&h2, &l2, &p2, &r2));
            // The kernel posts a completion and signals; the reactor's waker runs.
            posted.store(1, Ordering::SeqCst);
            handover.want_reap();
            reap(&handover, &lock, &posted, &reaped);
            holder.join().unwrap();
            assert_eq!(
                reaped.load(Ordering::SeqCst),
                1,
                "the completion was left in the queue"
            );
        });
    }
}
