//! The io_uring backend: the only module that touches the `io_uring` crate.
//!
//! Entries are pushed from any thread (the submission queue is behind a mutex). Who enters the
//! kernel depends on who is waiting:
//!
//! - **Quiet** (at most one operation in flight and no future asleep on one): the reaper thread
//!   sleeps on a condition variable and costs nothing. A future submits its own entry and reaps
//!   completions inline when it is polled, which at queue depth 1 is the fastest path there is.
//! - **Busy** (futures asleep on their operations): the reaper is *active*. It holds the
//!   completion lock, so it alone reaps, and it waits in `io_uring_enter(GETEVENTS)`.
//! - **`Driver::block_on`**: the calling thread takes the reaper's role for as long as it runs
//!   (`Uring::block_on`): it polls its futures, then waits in the ring itself. No thread is woken
//!   for its I/O but itself, the way fio runs a ring.
//!
//! While a reaper (thread or `block_on`) is out of the kernel, reaping and running futures, a
//! pushed entry is left in the queue for its next `io_uring_enter`, up to [`SUBMIT_BATCH`]
//! entries: one system call for a batch (`gate.rs` says why no entry is stranded, with its loom
//! model).
#![allow(unsafe_code)]

use super::gate::{Standby, SubmitGate, Woke};
use super::reactor::Reactors;
use super::{Engine, Reactor, Shared, Submission};
use crate::op::slot::{OpDesc, SlotInner};
use crate::sync::{AtomicBool, AtomicUsize, Mutex, MutexGuard, Ordering};
use crate::Result;
use io_uring::{opcode, types, IoUring};
use std::io;
use std::sync::Arc;

/// `user_data` of the no-op that wakes the reaper at shutdown.
const TAG_WAKE: u64 = u64::MAX;
/// `user_data` of `IORING_OP_ASYNC_CANCEL` requests (their own completions carry nothing).
const TAG_CANCEL: u64 = u64::MAX - 1;
/// Set in the index half of `user_data` on the write of a linked write + data sync pair: its
/// completion is half of the operation's (slot indexes stay below `MAX_QUEUE_DEPTH`).
const LINKED_WRITE: u64 = 1 << 31;
const _: () = assert!((super::MAX_QUEUE_DEPTH as u64) < LINKED_WRITE);
const _: () = assert!((3 * super::MAX_QUEUE_DEPTH + 16).next_power_of_two() <= 65536);
/// Entries in the registered-buffer table, shared by all pools of one driver.
const FIXED_TABLE_ENTRIES: u32 = 1024;
/// This thread's owner token: non-zero, distinct from every other live thread's.
fn thread_token() -> usize {
    THREAD_TOKEN.with(|t| t as *const u8 as usize)
}

/// How often the reaper thread checks that a `block_on` thread that is the reaper comes back
/// to the ring, after a look that found it away with operations in the ring.
const WATCHDOG: std::time::Duration = std::time::Duration::from_millis(1);
/// The longest period between those checks: each look that finds nothing to do (the ring
/// empty, or the owner back since the last look) doubles the period up to this.
const WATCHDOG_MAX: std::time::Duration = std::time::Duration::from_millis(16);

/// The watchdog's decision after a period (`Uring::idle`): whether to reap and submit for the
/// owner (it did not come back to the ring while operations are in it), and the next period.
fn watch(
    came_back: bool,
    in_ring: bool,
    period: std::time::Duration,
) -> (bool, std::time::Duration) {
    if !came_back && in_ring {
        (true, WATCHDOG)
    } else {
        (false, (period * 2).min(WATCHDOG_MAX))
    }
}

thread_local! {
    /// Its address identifies this thread as the owner of a ring (`Uring::owner`).
    static THREAD_TOKEN: u8 = const { 0 };
    /// This thread is recording completions (running wakers) with the `cq` lock held.
    static DRAINING: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
    /// Looks at the ring for task work by this thread (`Uring::run_task_work`).
    static LOOKS: std::cell::Cell<u32> = const { std::cell::Cell::new(0) };
}

/// With cooperative completions, a thread that keeps looking for a completion in user space
/// enters the kernel at least on every this many looks (`Uring::run_task_work`).
const FORCE_TASK_WORK: u32 = 32;

/// How `enter_submit` makes room when the completion queue is backed up.
#[derive(Clone, Copy)]
enum Room<'a> {
    /// Let others reap: the caller holds a lock that reaping must not run under (wakers run
    /// user code).
    Wait,
    /// Reap unless another thread does.
    Reap(&'a Shared),
    /// Record completions: the caller holds the `cq` lock.
    Drain(&'a Shared),
}

/// The most entries left queued for the reaper's next `io_uring_enter`; the pusher that fills
/// the batch submits it. Unbounded batches made completions arrive in waves that kept the
/// device's queue half empty between them; on the virtio disk in its fast phase 2 did 3-7 %
/// more IOPS than 8 (parity with fio instead of 0.96x) for 0.3 us more CPU per write, and on
/// the memory-backed ext4 the batch no longer mattered (docs/BENCHMARKS.md, "Submission batch").
const SUBMIT_BATCH: usize = 2;

fn user_data(index: u32, generation: u32) -> u64 {
    (u64::from(generation) << 32) | u64::from(index)
}

/// The opcodes the file API needs; a kernel without any of them gets the thread pool.
const REQUIRED: [(u8, &str); 8] = [
    (opcode::Write::CODE, "IORING_OP_WRITE"),
    (opcode::Read::CODE, "IORING_OP_READ"),
    (opcode::Writev::CODE, "IORING_OP_WRITEV"),
    (opcode::WriteFixed::CODE, "IORING_OP_WRITE_FIXED"),
    (opcode::ReadFixed::CODE, "IORING_OP_READ_FIXED"),
    (opcode::Fsync::CODE, "IORING_OP_FSYNC"),
    (opcode::Fallocate::CODE, "IORING_OP_FALLOCATE"),
    (opcode::AsyncCancel::CODE, "IORING_OP_ASYNC_CANCEL"),
];

struct FixedTable {
    capacity: u32,
    used: Vec<bool>,
}

pub(crate) struct Uring {
    ring: IoUring,
    sq: Mutex<()>,
    cq: Mutex<()>,
    has_ftruncate: bool,
    fixed: Mutex<FixedTable>,
    /// How the reaper thread sleeps outside the kernel and is woken (`gate.rs`), and which
    /// `block_on` thread, if any, owns the ring.
    standby: Standby,
    /// Whether a pushed entry may be left for the active reaper to submit.
    gate: SubmitGate,
    /// Entries left for the reaper since the last submission (see `SUBMIT_BATCH`).
    queued: AtomicUsize,
    /// Times that thread visited the ring (to wait in it, or, between two polls of a future
    /// that woke itself, to submit and reap): the reaper thread's watchdog reads it.
    ring_visits: AtomicUsize,
    /// The ring runs with IORING_SETUP_COOP_TASKRUN (asked for, and the kernel has it).
    cooperative: bool,
    /// An async runtime's reactor that reaps for the futures of that runtime (`reactor.rs`).
    reactors: Reactors,
    /// Times the reaper thread waited in the kernel for completions.
    reaper_waits: AtomicUsize,
    /// Times the reaper's watchdog reaped and submitted for a `block_on` owner (`idle`).
    watchdog_rescues: AtomicUsize,
    /// Times the watchdog woke to look at the owner (`Driver::watchdog_looks`).
    watchdog_looks: AtomicUsize,
}

/// The completion lock, held. Letting go of it looks whether a reactor asked for a reap
/// meanwhile, and reaps again if so (rule 2 of `reactor.rs`).
struct CqGuard<'a> {
    guard: Option<MutexGuard<'a, ()>>,
    u: &'a Uring,
    shared: &'a Shared,
}

impl Drop for CqGuard<'_> {
    fn drop(&mut self) {
        drop(self.guard.take());
        if self.u.reactors.handover.wanted_after_release() {
            self.u.reap(self.shared);
        }
    }
}

/// What to tell the user when `io_uring_setup` fails.
fn explain_setup_error(e: &io::Error) -> String {
    let why = match e.raw_os_error() {
        Some(libc::EPERM) => {
            "blocked by a seccomp filter (Docker's default profile) or kernel.io_uring_disabled"
        }
        Some(libc::ENOSYS) => "the kernel has no io_uring (too old, or compiled out)",
        Some(libc::ENOMEM) => "not enough locked memory (raise RLIMIT_MEMLOCK / ulimit -l)",
        Some(libc::EINVAL) => "the kernel refused the ring parameters (too old?)",
        _ => "unexpected error",
    };
    format!("io_uring_setup failed: {e}: {why}")
}

impl Uring {
    /// Makes a ring for `slots` operations and checks that the kernel has every opcode we use.
    pub(crate) fn new(slots: usize, cooperative: bool) -> std::result::Result<Uring, String> {
        let entries = (slots as u32).next_power_of_two().clamp(8, 4096);
        // Every slot can have three completions outstanding (a write, the data sync linked
        // after it, and one cancel request), plus wake-ups: a completion queue of 3 x slots + 16
        // (rounded up) never overflows. The builder caps the slots at MAX_QUEUE_DEPTH so this
        // stays within the kernel's 65536.
        let cq_entries = (3 * slots as u32 + 16).next_power_of_two().max(entries * 2);
        // IORING_SETUP_SUBMIT_ALL (5.18): keep submitting past an entry that fails at prep, so
        // no entry pushed by another thread is left in the queue.
        // IORING_SETUP_COOP_TASKRUN | TASKRUN_FLAG (5.19), when asked for: see
        // `DriverBuilder::cooperative_completions` and `run_task_work`.
        let build = |submit_all: bool, coop: bool| {
            let mut builder = IoUring::builder();
            builder.setup_cqsize(cq_entries);
            if submit_all {
                builder.setup_submit_all();
            }
            if coop {
                builder.setup_coop_taskrun().setup_taskrun_flag();
            }
            builder.build(entries)
        };
        let (ring, cooperative) = match cooperative.then(|| build(true, true)) {
            Some(Ok(ring)) => (ring, true),
            _ => (
                build(true, false)
                    .or_else(|_| build(false, false))
                    .map_err(|e| explain_setup_error(&e))?,
                false,
            ),
        };
        let mut probe = io_uring::Probe::new();
        ring.submitter()
            .register_probe(&mut probe)
            .map_err(|e| format!("IORING_REGISTER_PROBE failed: {e}"))?;
        for (code, name) in REQUIRED {
            if !probe.is_supported(code) {
                return Err(format!("the kernel lacks {name}"));
            }
        }
        let capacity = match ring
            .submitter()
            .register_buffers_sparse(FIXED_TABLE_ENTRIES)
        {
            Ok(()) => FIXED_TABLE_ENTRIES,
            Err(_) => 0,
        };
        Ok(Uring {
            has_ftruncate: probe.is_supported(opcode::Ftruncate::CODE),
            ring,
            sq: Mutex::new(()),
            cq: Mutex::new(()),
            fixed: Mutex::new(FixedTable {
                capacity,
                used: vec![false; capacity as usize],
            }),
            standby: Standby::new(),
            gate: SubmitGate::new(),
            queued: AtomicUsize::new(0),
            ring_visits: AtomicUsize::new(0),
            cooperative,
            reactors: Reactors::new(Reactor::Auto),
            reaper_waits: AtomicUsize::new(0),
            watchdog_rescues: AtomicUsize::new(0),
            watchdog_looks: AtomicUsize::new(0),
        })
    }

    /// Whether the kernel has `IORING_OP_FTRUNCATE` (Linux 6.9).
    pub(crate) fn has_ftruncate(&self) -> bool {
        self.has_ftruncate
    }

    /// Starts the reaper thread.
    pub(crate) fn start(shared: &Arc<Shared>) -> io::Result<()> {
        let shared = Arc::clone(shared);
        std::thread::Builder::new()
            .name("directfile-reaper".into())
            .spawn(move || {
                let _abort = super::AbortOnUnwind;
                let Engine::Uring(u) = &shared.engine else {
                    unreachable!()
                };
                // Held while active: no one else consumes completions then.
                let mut cq: Option<CqGuard<'_>> = None;
                loop {
                    if shared.is_shut_down() && shared.slots.in_flight() == 0 {
                        break;
                    }
                    if u.may_idle(&shared) {
                        if let Some(guard) = cq.take() {
                            u.deactivate(&shared, guard);
                        }
                        u.idle(&shared);
                        continue;
                    }
                    if cq.is_none() {
                        let guard = u.lock_cq(&shared);
                        // A `block_on` thread may have taken the ring while we waited.
                        if u.may_idle(&shared) {
                            continue;
                        }
                        cq = Some(guard);
                        u.gate.activate();
                    }
                    // Submit what futures left queued and wait for one completion. While we
                    // are in the kernel, futures submit their own entries.
                    u.gate.entering();
                    u.queued.store(0, Ordering::Relaxed);
                    u.reaper_waits.fetch_add(1, Ordering::Relaxed);
                    let waited = u.ring.submitter().submit_and_wait(1);
                    u.gate.left_kernel();
                    Uring::check_enter(waited, "io_uring_enter(GETEVENTS)");
                    u.drain(&shared);
                }
                if let Some(guard) = cq.take() {
                    u.deactivate(&shared, guard);
                }
                // `shared` (and with it the ring) is dropped here, after the last completion.
            })?;
        Ok(())
    }

    pub(crate) fn prepare(&self, slot: &SlotInner, index: u32, generation: u32) -> Submission {
        let fd = types::Fd(slot.fd);
        let sync_after = matches!(
            slot.desc,
            OpDesc::Write { sync: true, .. } | OpDesc::Writev { sync: true, .. }
        );
        let entry = match slot.desc {
            OpDesc::Nop => opcode::Nop::new().build(),
            OpDesc::Write {
                offset,
                ptr,
                len,
                fixed: Some(buf_index),
                ..
            } => opcode::WriteFixed::new(fd, ptr, len, buf_index)
                .offset(offset)
                .build(),
            OpDesc::Write {
                offset,
                ptr,
                len,
                fixed: None,
                ..
            } => opcode::Write::new(fd, ptr, len).offset(offset).build(),
            OpDesc::Read {
                offset,
                ptr,
                len,
                fixed: Some(buf_index),
            } => opcode::ReadFixed::new(fd, ptr, len, buf_index)
                .offset(offset)
                .build(),
            OpDesc::Read {
                offset,
                ptr,
                len,
                fixed: None,
            } => opcode::Read::new(fd, ptr, len).offset(offset).build(),
            OpDesc::Writev { offset, .. } => {
                let iov = &slot.iovecs.0;
                opcode::Writev::new(fd, iov.as_ptr(), iov.len() as u32)
                    .offset(offset)
                    .build()
            }
            OpDesc::Fsync { datasync } => {
                let flags = if datasync {
                    types::FsyncFlags::DATASYNC
                } else {
                    types::FsyncFlags::empty()
                };
                opcode::Fsync::new(fd).flags(flags).build()
            }
            OpDesc::Fallocate { mode, offset, len } => opcode::Fallocate::new(fd, len)
                .offset(offset)
                .mode(mode)
                .build(),
            OpDesc::Ftruncate { len } => {
                debug_assert!(self.has_ftruncate, "File::set_len checks has_ftruncate");
                opcode::Ftruncate::new(fd, len).build()
            }
        };
        let data = user_data(index, generation);
        if sync_after {
            // A write-through write on a file system that may skip O_DSYNC's sync on this path
            // (SyncStrategy::ExplicitSync): the data sync runs after the write, whatever the
            // write's outcome (IO_HARDLINK: a failed or short write does not cancel it), and
            // its completion is the operation's. Entries of a link are pushed together.
            let sync = opcode::Fsync::new(fd)
                .flags(types::FsyncFlags::DATASYNC)
                .build()
                .user_data(data);
            return Submission::Uring {
                entries: [
                    entry
                        .flags(io_uring::squeue::Flags::IO_HARDLINK)
                        .user_data(data | LINKED_WRITE),
                    sync,
                ],
                count: 2,
                generation,
            };
        }
        Submission::Uring {
            entries: [entry.user_data(data), opcode::Nop::new().build()],
            count: 1,
            generation,
        }
    }

    /// Pushes one entry and submits it.
    ///
    /// An entry once in the ring cannot be taken back, so this never reports failure for it:
    /// transient refusals (EBUSY, EAGAIN, EINTR) are retried after reaping; anything else can
    /// only be our bug and panics. Errors of the operation itself arrive as its completion.
    pub(crate) fn submit(
        &self,
        shared: &Shared,
        entries: &[io_uring::squeue::Entry],
    ) -> Result<()> {
        self.with_sq(|sq| loop {
            // SAFETY: the entries' pointers (buffers, iovecs) are owned by a slot that is
            // InFlight and keeps them until the operation's last completion is reaped (a
            // linked write completes before its sync starts). `push_multiple` pushes all of
            // them, adjacent as a link needs, or none.
            if unsafe { sq.push_multiple(entries) }.is_ok() {
                break;
            }
            // Queue full (others pushed and left their entries to the reaper, or have not
            // submitted yet): submit. No reaping here: it would run wakers (user code) under
            // the `sq` lock.
            sq.sync();
            self.enter_submit(Room::Wait);
            sq.sync();
        });
        // While a `block_on` thread is the reaper, only its own entries wait for it: it may be
        // busy in user code for a while. (Refusing to leave an entry is always safe.)
        if self.gate.may_leave_queued() && {
            let owner = self.standby.owner();
            owner == 0 || owner == thread_token()
        } {
            // At most SUBMIT_BATCH entries wait for the reaper: the one that makes the batch
            // full submits it. (Only a cost trade; any entry may always be submitted.)
            if self.queued.fetch_add(1, Ordering::Relaxed) + 1 < SUBMIT_BATCH {
                self.standby.pushed();
                return Ok(());
            }
            self.queued.store(0, Ordering::Relaxed);
        }
        self.enter_submit(Room::Reap(shared));
        // An owner's reaper thread that sleeps unwatched (the ring was empty) watches again.
        // After the submission, which it need not wait for: the slot was counted in flight
        // when it was acquired, before this.
        self.standby.pushed();
        Ok(())
    }

    /// The reaper leaves the active state: from now on pushers submit their own entries. Those
    /// left queued while it was active are submitted here.
    fn deactivate(&self, shared: &Shared, cq: CqGuard<'_>) {
        self.gate.deactivate();
        drop(cq);
        self.enter_submit(Room::Reap(shared));
    }

    /// The result of a waiting `io_uring_enter`: transient refusals (a signal, completions
    /// backed up, no memory for a request) come back to the caller's loop, which drains and
    /// enters again; anything else can only be our bug.
    fn check_enter(result: io::Result<usize>, what: &str) {
        match result {
            Ok(_) => {}
            Err(e)
                if matches!(
                    e.raw_os_error(),
                    Some(libc::EINTR | libc::EBUSY | libc::EAGAIN)
                ) =>
            {
                std::thread::yield_now()
            }
            Err(e) => panic!("{what} failed: {e}"),
        }
    }

    /// `io_uring_enter` to submit what is queued. On EBUSY/EAGAIN (completions backed up) it
    /// makes room as `room` says, and retries.
    fn enter_submit(&self, room: Room<'_>) {
        loop {
            match self.ring.submit() {
                Ok(_) => return,
                Err(e) if matches!(e.raw_os_error(), Some(libc::EINTR)) => {}
                Err(e) if matches!(e.raw_os_error(), Some(libc::EBUSY | libc::EAGAIN)) => {
                    match room {
                        Room::Wait => {}
                        Room::Reap(shared) => self.reap(shared),
                        Room::Drain(shared) => self.drain(shared),
                    }
                    std::thread::yield_now();
                }
                Err(e) => panic!("io_uring_enter(submit) failed: {e}"),
            }
        }
    }

    /// Whether the reaper may sleep outside the kernel: nothing unattended, and at most one
    /// operation in flight (the one a future may be spinning on). With more in flight, futures
    /// are about to register wakers; staying in `io_uring_enter` then saves a condition
    /// variable wake-up per batch of completions.
    ///
    /// Also while a `block_on` thread is the reaper: then this thread only watches that it
    /// comes back to the ring (`idle`).
    ///
    /// And while a reactor serves, whatever the number in flight: then the futures that wait
    /// are its, or unattended (`reactor.rs`).
    fn may_idle(&self, shared: &Shared) -> bool {
        !shared.is_shut_down()
            && (self.owned()
                || (shared.slots.unattended() == 0
                    && (shared.slots.in_flight() <= 1
                        || self.reactors.handover.serving().is_some())))
    }

    /// Sleeps outside the kernel while `may_idle`: until a future registers a waker or is
    /// dropped in flight (`kick`), or shutdown. While a `block_on` thread is the reaper and
    /// operations are in the ring, it wakes now and then and, if that thread has not come back
    /// to the ring since the last look (it runs long user code, or blocks, perhaps on this
    /// very driver's I/O), reaps and submits for it once: a late completion, never a hang.
    ///
    /// With nothing in the ring there is nothing to rescue: the owner waits on something else,
    /// or runs its lone operations inline (`driver::inline`). Then this thread sleeps without
    /// a timeout until an operation is put in the ring (`Standby::pushed`). Measured on the
    /// 2-vCPU guest (docs/BENCHMARKS.md), its 62 looks a second at queue depth 1 on a busy
    /// disk, each a timer interrupt and a context switch on a CPU that the device's interrupt
    /// or the owner may need, cost a few per cent of the p50.
    ///
    /// The period is `WATCHDOG` after a rescue, and doubles up to `WATCHDOG_MAX` with each look
    /// that finds nothing to do (the ring empty, or the owner back since the last look); a
    /// sleep while the ring was empty leaves it as it was. A blocked owner's first late
    /// completion may so wait up to twice `WATCHDOG_MAX`; later ones about `WATCHDOG`.
    fn idle(&self, shared: &Shared) {
        let mut last_visits = self.ring_visits.load(Ordering::Relaxed);
        let mut period = WATCHDOG_MAX;
        // In the ring: in flight and not the operation the owner runs inline. (The two loads
        // may straddle an operation's end: at worst one needless look. They never read an
        // operation in the ring as none: only the owner runs an operation inline, and only
        // when it is the one in flight, `Op::poll_submit`.)
        let in_ring = || shared.slots.in_flight() > shared.inline.running();
        loop {
            match self
                .standby
                .sleep(|| self.may_idle(shared), in_ring, period)
            {
                Woke::Busy => return,
                Woke::Notified => {
                    // No whole period watched: whatever is in the ring now gets one before
                    // the owner is judged.
                    last_visits = self.ring_visits.load(Ordering::Relaxed);
                    continue;
                }
                Woke::Watched => {}
            }
            if !self.owned() {
                continue;
            }
            self.watchdog_looks.fetch_add(1, Ordering::Relaxed);
            let visits = self.ring_visits.load(Ordering::Relaxed);
            let rescue;
            (rescue, period) = watch(visits != last_visits, in_ring(), period);
            if rescue {
                // Not back in the ring for a whole period. If it is in there right now it
                // holds the lock, and all is well.
                if let Some(_cq) = self.try_lock_cq(shared) {
                    self.watchdog_rescues.fetch_add(1, Ordering::Relaxed);
                    self.drain(shared);
                    self.enter_submit(Room::Drain(shared));
                }
            }
            last_visits = visits;
        }
    }

    /// The completion lock. It guards no data (only who may consume completions), so a panic
    /// of the thread that held it (user code in a waker or in `block_on`) changes nothing.
    fn lock_cq<'a>(&'a self, shared: &'a Shared) -> CqGuard<'a> {
        let guard = self
            .cq
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        self.reactors.handover.taking_wanted();
        CqGuard {
            guard: Some(guard),
            u: self,
            shared,
        }
    }

    fn try_lock_cq<'a>(&'a self, shared: &'a Shared) -> Option<CqGuard<'a>> {
        let guard = self.try_lock_cq_raw()?;
        self.reactors.handover.taking_wanted();
        Some(CqGuard {
            guard: Some(guard),
            u: self,
            shared,
        })
    }

    fn try_lock_cq_raw(&self) -> Option<MutexGuard<'_, ()>> {
        match self.cq.try_lock() {
            Ok(g) => Some(g),
            Err(std::sync::TryLockError::Poisoned(p)) => Some(p.into_inner()),
            Err(std::sync::TryLockError::WouldBlock) => None,
        }
    }

    /// Whether a thread in `block_on` is the reaper.
    fn owned(&self) -> bool {
        self.standby.owned()
    }

    /// Whether the ring runs with cooperative completions.
    pub(crate) fn cooperative(&self) -> bool {
        self.cooperative
    }

    /// Whether a future polled on this thread may spin for its completion: not on the thread
    /// that owns the ring in `block_on`, which left the entry for its own next visit to the
    /// ring (and spins there, `spin_for_one`). Elsewhere a spinning future sees its completion
    /// whoever records it: itself inline, the reaper thread, or the owner.
    pub(crate) fn may_spin(&self) -> bool {
        self.standby.owner() != thread_token()
    }

    /// Whether this thread runs `Driver::block_on` on the ring.
    pub(crate) fn owned_here(&self) -> bool {
        self.standby.owner() == thread_token()
    }

    /// Wakes the reaper if it sleeps: called after a slot became unattended.
    pub(crate) fn kick(&self) {
        // Not while a `block_on` thread owns the ring: it reaps (and the reaper's watchdog
        // covers it if it does not come back).
        self.standby.kick();
    }

    pub(crate) fn cancel(&self, shared: &Shared, index: u32, generation: u32) {
        let data = user_data(index, generation);
        let cancel = |target: u64| {
            opcode::AsyncCancel::new(target)
                .build()
                .user_data(TAG_CANCEL)
        };
        // The cancel entry holds no pointers; its failure (the operation already finished) is
        // harmless, since the operation's own completion frees the slot either way. A linked
        // pair is cancelled at its write: the sync waiting behind it is in no list a cancel
        // searches, and runs after the write anyway (IO_HARDLINK), so the slot frees then.
        let linked = {
            let slot = shared.slots.lock(index);
            slot.generation == generation && slot.linked
        };
        let target = if linked { data | LINKED_WRITE } else { data };
        let _ = self.submit(shared, &[cancel(target)]);
        self.kick();
    }

    /// Posts a no-op so the reaper returns from its wait and sees the shutdown flag.
    pub(crate) fn wake_reaper(&self) {
        self.post_wake();
        self.standby.notify();
    }

    /// Records every completion in the queue, unless another thread is reaping (it will record
    /// ours too).
    /// (Rule 2 of `reactor.rs`: after letting go, it reaps again if a reactor asked.)
    pub(crate) fn reap(&self, shared: &Shared) {
        loop {
            let Some(guard) = self.try_lock_cq_raw() else {
                return;
            };
            self.reactors.handover.taking_wanted();
            self.drain(shared);
            drop(guard);
            if !self.reactors.handover.wanted_after_release() {
                return;
            }
        }
    }

    /// This ring with `reactor` chosen (`DriverBuilder::reactor`), before it is used.
    pub(crate) fn with_reactor(mut self, reactor: Reactor) -> Uring {
        self.reactors = Reactors::new(reactor);
        self
    }

    /// The reactors of this ring (`reactor.rs`).
    pub(crate) fn reactors(&self) -> &Reactors {
        &self.reactors
    }

    /// Registers `eventfd` with the ring (`IORING_REGISTER_EVENTFD`): from now on the kernel
    /// signals it whenever it posts completions.
    pub(crate) fn register_eventfd(&self, eventfd: &std::fs::File) -> io::Result<()> {
        self.ring
            .submitter()
            .register_eventfd(std::os::fd::AsRawFd::as_raw_fd(eventfd))
    }

    /// Called before a future registers its waker: registers the ring with this thread's
    /// runtime's reactor if none serves yet (not for the thread that owns the ring).
    pub(crate) fn offer_reactor(&self, shared: &Arc<Shared>) {
        if self.standby.owner() != thread_token() {
            self.reactors.offer(self, shared);
        }
    }

    /// Whether the reactor serves a future waiting on this thread.
    pub(crate) fn serves_here(&self) -> bool {
        self.standby.owner() != thread_token() && self.reactors.serves_here()
    }

    /// The driver is dropped: the reactor, if any, leaves (its registration goes).
    pub(crate) fn detach_reactor(&self, shared: &Shared) {
        self.reactors.leave(self, shared);
    }

    /// Times the reaper thread waited in the kernel for completions.
    pub(crate) fn reaper_waits(&self) -> usize {
        self.reaper_waits.load(Ordering::Relaxed)
    }

    /// Times the reaper's watchdog reaped and submitted for a `block_on` owner.
    pub(crate) fn watchdog_rescues(&self) -> usize {
        self.watchdog_rescues.load(Ordering::Relaxed)
    }

    pub(crate) fn watchdog_looks(&self) -> usize {
        self.watchdog_looks.load(Ordering::Relaxed)
    }

    /// Runs `f` on the submission queue, under the `sq` lock. With `try_with_sq`, the only way
    /// this driver touches the queue: a `SubmissionQueue` stores its tail when dropped, so one
    /// that outlived the lock would write a stale tail over another thread's push, and the
    /// kernel would run old entries again. (Edition 2021 keeps a temporary of a block's tail
    /// expression alive past the block's locals, the guard included: that happened once.)
    fn with_sq<R>(&self, f: impl FnOnce(&mut io_uring::SubmissionQueue<'_>) -> R) -> R {
        self.on_sq(self.sq.lock().unwrap_or_else(|p| p.into_inner()), f)
    }

    /// `with_sq` if the `sq` lock is free; `None` (and `f` not run) if another thread holds it.
    fn try_with_sq<R>(&self, f: impl FnOnce(&mut io_uring::SubmissionQueue<'_>) -> R) -> Option<R> {
        match self.sq.try_lock() {
            Ok(guard) => Some(self.on_sq(guard, f)),
            Err(std::sync::TryLockError::Poisoned(p)) => Some(self.on_sq(p.into_inner(), f)),
            Err(std::sync::TryLockError::WouldBlock) => None,
        }
    }

    fn on_sq<R>(
        &self,
        guard: MutexGuard<'_, ()>,
        f: impl FnOnce(&mut io_uring::SubmissionQueue<'_>) -> R,
    ) -> R {
        // SAFETY: `guard` holds the `sq` mutex until after `sq` is dropped (explicitly, below),
        // so no other SubmissionQueue of this ring exists meanwhile.
        let mut sq = unsafe { self.ring.submission_shared() };
        let result = f(&mut sq);
        sq.sync();
        drop(sq);
        drop(guard);
        result
    }

    /// With cooperative completions (IORING_SETUP_COOP_TASKRUN), the kernel posts the
    /// completions of the entries a thread submitted when that thread next enters the kernel
    /// (or wakes it, if it sleeps). So a thread that polls or spins for a completion in user
    /// space calls this on every look: it enters the ring when the ring flags such work
    /// (IORING_SQ_TASKRUN), and on every `FORCE_TASK_WORK`th call of the thread regardless,
    /// because the flag is the ring's, not the thread's (another thread that runs its own
    /// work clears it). The flag is read only if the `sq` lock is free: this runs with the `cq`
    /// lock held (`spin_for_one`), and a pusher may hold `sq` while it waits for the
    /// completion queue to drain; a missed look is made up by a later one.
    pub(crate) fn run_task_work(&self) {
        if !self.cooperative {
            return;
        }
        let forced = LOOKS.with(|n| {
            let looks = n.get().wrapping_add(1);
            n.set(looks);
            looks % FORCE_TASK_WORK == 0
        });
        if forced || self.try_with_sq(|sq| sq.taskrun()).unwrap_or(false) {
            let getevents = io_uring::EnterFlags::GETEVENTS.bits();
            // SAFETY: to_submit 0, min_complete 0, GETEVENTS, no argument: the call reads and
            // writes no memory of ours.
            let _ = unsafe {
                self.ring
                    .submitter()
                    .enter::<libc::sigset_t>(0, 0, getevents, None)
            };
        }
    }

    /// Records every completion in the queue. The caller holds the `cq` lock.
    fn drain(&self, shared: &Shared) {
        struct Draining(bool);
        impl Drop for Draining {
            fn drop(&mut self) {
                DRAINING.with(|d| d.set(self.0));
            }
        }
        let _draining = Draining(DRAINING.with(|d| d.replace(true)));
        // SAFETY: the caller holds the `cq` mutex, so no other CompletionQueue exists.
        let cq = unsafe { self.ring.completion_shared() };
        for cqe in cq {
            let data = cqe.user_data();
            if data >= TAG_CANCEL {
                continue;
            }
            if data & LINKED_WRITE != 0 {
                let index = (data & !LINKED_WRITE) as u32;
                shared.complete_linked_write(index, (data >> 32) as u32, cqe.result());
                continue;
            }
            shared.complete(data as u32, (data >> 32) as u32, cqe.result());
        }
    }

    /// Registers `count` buffers of `size` bytes starting at `base` in the fixed-buffer table.
    /// Returns the table index of the first one, or `None` if the table has no room or the
    /// kernel refuses (memlock limit).
    pub(crate) fn register_buffers(&self, base: *mut u8, count: usize, size: usize) -> Option<u32> {
        let mut table = self.fixed.lock().unwrap();
        let count32 = u32::try_from(count).ok()?;
        let first = (0..table.capacity.checked_sub(count32)? + 1).find(|&i| {
            table.used[i as usize..(i + count32) as usize]
                .iter()
                .all(|u| !u)
        })?;
        // Address arithmetic only (wrapping_add needs no unsafe): base + i * size stays inside
        // the pool's region of count * size bytes.
        let iovecs: Vec<libc::iovec> = (0..count)
            .map(|i| libc::iovec {
                iov_base: base.wrapping_add(i * size).cast(),
                iov_len: size,
            })
            .collect();
        // One entry per call: the kernel registers entries one by one and, when it stops (the
        // memlock limit without CAP_IPC_LOCK), reports how many it took, which the io-uring
        // crate does not pass on. A pool is registered whole or not at all.
        for (i, iovec) in iovecs.iter().enumerate() {
            // SAFETY: the iovec describes part of the pool's memory, which stays allocated until
            // the pool is dropped, and the pool unregisters it (unregister_buffers) first.
            let added = unsafe {
                self.ring.submitter().register_buffers_update(
                    first + i as u32,
                    std::slice::from_ref(iovec),
                    None,
                )
            };
            if added.is_err() {
                if !self.clear_entries(first, i) {
                    // Could not take back what was added: keep those entries reserved.
                    table.used[first as usize..first as usize + i].fill(true);
                }
                return None;
            }
        }
        table.used[first as usize..(first + count32) as usize].fill(true);
        Some(first)
    }

    /// Empties `count` table entries from `first`. Returns whether the kernel accepted it.
    fn clear_entries(&self, first: u32, count: usize) -> bool {
        if count == 0 {
            return true;
        }
        let empty = vec![
            libc::iovec {
                iov_base: std::ptr::null_mut(),
                iov_len: 0
            };
            count
        ];
        // SAFETY: empty iovecs clear the entries; no memory is handed to the kernel.
        unsafe {
            self.ring
                .submitter()
                .register_buffers_update(first, &empty, None)
        }
        .is_ok()
    }

    /// Removes a pool's buffers from the table (called when the pool is dropped). If the kernel
    /// refuses, the entries stay reserved, so no later pool can be validated against them.
    pub(crate) fn unregister_buffers(&self, first: u32, count: usize) {
        let mut table = self.fixed.lock().unwrap();
        if self.clear_entries(first, count) {
            table.used[first as usize..first as usize + count].fill(false);
        }
    }
}

/// Whether io_uring works here, and why not if it does not (for `probe`).
pub fn io_uring_status() -> std::result::Result<(), String> {
    Uring::new(8, false).map(drop)
}

/// The waker of [`Uring::block_on`]: records the wake-up; if the thread waits in the ring,
/// posts a no-op whose completion ends the wait. (The thread never parks: out of the ring it
/// polls, or is about to look at `notified` before it waits.)
struct LocalWake {
    notified: AtomicBool,
    in_ring: AtomicBool,
    shared: std::sync::Weak<Shared>,
}

impl std::task::Wake for LocalWake {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        if self.notified.swap(true, Ordering::SeqCst) {
            return;
        }
        // Pairs with `block_on`, which sets `in_ring`, fences, then reads `notified`: either
        // it sees our wake-up and does not wait, or we see it in the ring and end the wait.
        std::sync::atomic::fence(Ordering::SeqCst);
        if self.in_ring.load(Ordering::SeqCst) {
            if let Some(shared) = self.shared.upgrade() {
                if let Engine::Uring(u) = &shared.engine {
                    u.post_wake();
                }
            }
        }
    }
}

impl Uring {
    /// Posts a no-op whose completion returns a waiter from `io_uring_enter`.
    fn post_wake(&self) {
        let entry = opcode::Nop::new().build().user_data(TAG_WAKE);
        self.with_sq(|sq| {
            // SAFETY: a no-op holds no pointers.
            while unsafe { sq.push(&entry) }.is_err() {
                sq.sync();
                self.enter_submit(Room::Wait);
                sq.sync();
            }
        });
        self.enter_submit(Room::Wait);
    }

    /// Submits what is queued, then waits up to `shared.spin` for a completion without
    /// sleeping. The caller holds the `cq` lock. Returns whether a completion arrived.
    fn spin_for_one(&self, shared: &Shared, budget: std::time::Duration) -> bool {
        self.queued.store(0, Ordering::Relaxed);
        self.enter_submit(Room::Drain(shared));
        let start = std::time::Instant::now();
        loop {
            self.run_task_work();
            // SAFETY: the caller holds the `cq` mutex, so no other CompletionQueue exists.
            if !unsafe { self.ring.completion_shared() }.is_empty() {
                return true;
            }
            if start.elapsed() >= budget {
                return false;
            }
            shared.spin.pause();
        }
    }

    /// Runs `fut` on this thread, which becomes the ring's reaper: while `fut` is pending the
    /// thread waits in `io_uring_enter`, submitting what its futures queued and reaping every
    /// completion; the reaper thread stands by (and watches that it comes back to the ring).
    /// Nested on the thread that owns the ring, it runs the same loop. Returns `Err(fut)`
    /// untouched if another thread owns the ring: the caller then parks instead.
    ///
    /// # Panics
    ///
    /// If called from a waker that this thread runs while it records completions (it holds
    /// the completion lock then, so nothing could complete): a waker must not block.
    pub(crate) fn block_on<F: std::future::Future>(
        &self,
        shared: &Arc<Shared>,
        fut: F,
    ) -> std::result::Result<F::Output, F> {
        assert!(
            !DRAINING.with(|d| d.get()),
            "directfile: Driver::block_on called from a waker while this thread records \
             completions; a waker must not block"
        );
        let me = thread_token();
        let outermost = self.standby.owner() != me;
        if outermost && !self.standby.try_own(me) {
            return Err(fut);
        }
        let mut owner = Owner {
            u: self,
            shared,
            outermost,
            established: false,
        };
        if outermost {
            // The reaper thread may be waiting in the kernel with the lock: its wait ends on
            // this no-op, it sees the owner and stands by. The gate is ours once it let go.
            let cq = match self.try_lock_cq(shared) {
                Some(cq) => cq,
                None => {
                    self.post_wake();
                    self.lock_cq(shared)
                }
            };
            self.gate.activate();
            owner.established = true;
            drop(cq);
            // The reaper thread may sleep without a timeout: have it start watching.
            self.standby.notify();
        }
        let local = Arc::new(LocalWake {
            notified: AtomicBool::new(true),
            in_ring: AtomicBool::new(false),
            shared: Arc::downgrade(shared),
        });
        let waker = std::task::Waker::from(local.clone());
        let mut cx = std::task::Context::from_waker(&waker);
        let mut fut = std::pin::pin!(fut);
        loop {
            if local.notified.swap(false, Ordering::SeqCst) {
                // The lock is not held while user code runs: futures reap inline, and a
                // future that blocks does not stop the reaper thread's watchdog.
                if let std::task::Poll::Ready(out) = fut.as_mut().poll(&mut cx) {
                    return Ok(out);
                }
                if local.notified.load(Ordering::SeqCst) {
                    // Woken while polled (it may wake itself): poll again, but first submit
                    // what it queued, or a future that yields in a loop would starve its I/O.
                    if self.queued.swap(0, Ordering::Relaxed) > 0 {
                        self.enter_submit(Room::Reap(shared));
                    } else {
                        // With cooperative completions, post those that wait for this thread
                        // (entering the ring to submit, above, does that too).
                        self.run_task_work();
                    }
                    // Record what completed, for every waiter: with what was submitted above,
                    // a visit to the ring, which the reaper's watchdog need not make for us.
                    self.reap(shared);
                    self.ring_visits.fetch_add(1, Ordering::Relaxed);
                    continue;
                }
            }
            let cq = self.lock_cq(shared);
            self.ring_visits.fetch_add(1, Ordering::Relaxed);
            // One operation in flight: submit it and watch the completion queue for a short
            // while, as a future does on other executors (`Op::poll`): cheaper than sleeping
            // in the kernel and being woken, on these machines.
            // A spin that runs out of budget backs the next ones off (`driver::spin`).
            if shared.slots.in_flight() == 1 && !local.notified.load(Ordering::SeqCst) {
                if let Some(budget) = shared.spin.start() {
                    let caught = self.spin_for_one(shared, budget);
                    shared.spin.ended(caught);
                    if caught {
                        self.drain(shared);
                        continue;
                    }
                }
            }
            local.in_ring.store(true, Ordering::SeqCst);
            self.gate.entering();
            self.queued.store(0, Ordering::Relaxed);
            if local.notified.load(Ordering::SeqCst) {
                self.enter_submit(Room::Drain(shared));
            } else {
                // Submit what our futures queued and wait for one completion (ours, another
                // thread's, or a waker's no-op).
                let waited = self.ring.submitter().submit_and_wait(1);
                Uring::check_enter(waited, "io_uring_enter(GETEVENTS)");
            }
            self.gate.left_kernel();
            local.in_ring.store(false, Ordering::SeqCst);
            self.drain(shared);
            drop(cq);
        }
    }
}

/// A `block_on` call on the ring, for as long as it runs (a panic included). The outermost
/// one on the owning thread gives the ring back when dropped.
struct Owner<'a> {
    u: &'a Uring,
    shared: &'a Shared,
    outermost: bool,
    /// The gate was activated (the reaper thread had let go of it).
    established: bool,
}

impl Drop for Owner<'_> {
    fn drop(&mut self) {
        if !self.outermost {
            return;
        }
        let u = self.u;
        if self.established {
            u.gate.left_kernel();
            // Rule 2 of `gate.rs`: entries this thread left are submitted below.
            u.gate.deactivate();
        }
        // Entries this thread left (`queued`) go in now, before the reaper may take over.
        u.queued.store(0, Ordering::Relaxed);
        u.enter_submit(Room::Reap(self.shared));
        u.standby.disown(|| self.shared.slots.unattended());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_watchdog_backs_off_while_idle_and_rescues_at_its_shortest_period() {
        // Nothing to do (the ring empty, or the owner came back): the period doubles, capped.
        let mut period = WATCHDOG;
        let mut periods = Vec::new();
        for (came_back, in_ring) in [(false, false), (true, true), (true, false), (false, false)] {
            let rescue;
            (rescue, period) = watch(came_back, in_ring, period);
            assert!(!rescue);
            periods.push(period.as_millis());
        }
        assert_eq!(periods, [2, 4, 8, 16]);
        assert_eq!(watch(true, true, period), (false, WATCHDOG_MAX));
        // Away with operations in the ring: a rescue, and the next look after `WATCHDOG`.
        assert_eq!(watch(false, true, WATCHDOG_MAX), (true, WATCHDOG));
        assert_eq!(watch(false, true, WATCHDOG), (true, WATCHDOG));
    }
}
