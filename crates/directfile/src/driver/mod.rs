//! The driver: the slot table plus one backend that carries operations to the kernel.
//!
//! Backends share one small interface (`prepare`, `submit`, `cancel`, `reap`, `start`,
//! `shutdown`), dispatched by a `match` on [`Engine`] so the hot path has no virtual call.
//! Each platform has its native backend and the thread pool: io_uring (`uring.rs`) on Linux,
//! the I/O completion port (`iocp.rs`) on Windows, where `prepare` fills the slot's
//! `OVERLAPPED`, `submit` calls `WriteFile`/`ReadFile`, the port's waiters drain
//! `GetQueuedCompletionStatusEx`, and `cancel` calls `CancelIoEx`.

#[cfg(target_os = "linux")]
mod gate;
mod inline;
#[cfg(windows)]
mod iocp;
// The runtime reactors register io_uring's eventfd: Linux only (`Reactor` says what the other
// backends do with the choice).
#[cfg(target_os = "linux")]
mod reactor;
mod spin;
mod threads;
#[cfg(target_os = "linux")]
mod uring;

#[cfg(target_os = "linux")]
pub use uring::io_uring_status;

/// Whether io_uring works here, and why not if it does not (for `probe`): never on Windows.
#[cfg(not(target_os = "linux"))]
pub fn io_uring_status() -> std::result::Result<(), String> {
    Err("io_uring is a Linux interface".to_string())
}

/// The platform's own backend: io_uring on Linux.
#[cfg(target_os = "linux")]
const NATIVE: (BackendChoice, &str) = (BackendChoice::Uring, "io_uring");
/// The platform's own backend: the I/O completion port on Windows.
#[cfg(windows)]
const NATIVE: (BackendChoice, &str) = (BackendChoice::Iocp, "the I/O completion port");

/// Makes the platform's own backend, or says why it cannot work here.
#[cfg(target_os = "linux")]
fn native_engine(
    slots: usize,
    cooperative: bool,
) -> std::result::Result<(Engine, Backend), String> {
    uring::Uring::new(slots, cooperative).map(|u| (Engine::Uring(u), Backend::Uring))
}

/// Makes the platform's own backend, or says why it cannot work here.
#[cfg(windows)]
fn native_engine(
    slots: usize,
    _cooperative: bool,
) -> std::result::Result<(Engine, Backend), String> {
    iocp::Iocp::new(slots).map(|i| (Engine::Iocp(i), Backend::Iocp))
}

use crate::buf::BufPool;
#[cfg(target_os = "linux")]
use crate::buf::FixedRegistration;
use crate::op::slot::{OpDesc, SlotInner, Slots};
use crate::sync::{AtomicBool, Ordering};
use crate::{Error, Result};
use std::fmt;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

/// The most operation slots a driver has (`DriverBuilder::queue_depth` is capped to it): three
/// completions per slot (a write, its linked sync, a cancel) must fit the kernel's largest
/// completion queue (65536 entries).
pub const MAX_QUEUE_DEPTH: usize = 16_384;

/// Aborts the process if the thread holding it unwinds: a driver thread that dies with
/// operations in flight would leave buffers the kernel still writes into to be freed later.
pub(crate) struct AbortOnUnwind;

impl Drop for AbortOnUnwind {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("directfile: a driver thread panicked with I/O possibly in flight; aborting");
            std::process::abort();
        }
    }
}

/// Which backend a driver runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    /// io_uring: operations are submitted to a ring and completed by the kernel.
    Uring,
    /// A fixed pool of worker threads doing `pwritev2`/`preadv2`/`fdatasync` (positional
    /// `WriteFile`/`ReadFile`/`FlushFileBuffers` on Windows).
    Threads,
    /// Windows' I/O completion port: overlapped `WriteFile`/`ReadFile` on files bound to the
    /// driver's port, completed by packets (`GetQueuedCompletionStatusEx`).
    Iocp,
}

impl fmt::Display for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Backend::Uring => "uring",
            Backend::Threads => "threads",
            Backend::Iocp => "iocp",
        })
    }
}

/// Which backend to use when building a driver.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum BackendChoice {
    /// The platform's own backend when it works here (io_uring on Linux, the completion port
    /// on Windows), else threads (the reason is logged once). The environment variable
    /// `DIRECTFILE_BACKEND=uring|iocp|threads` overrides `Auto`.
    #[default]
    Auto,
    /// io_uring, or an error that says why it cannot work here (always on Windows).
    Uring,
    /// The thread pool.
    Threads,
    /// The I/O completion port, or an error that says why it cannot work here (always off
    /// Windows).
    Iocp,
}

impl std::str::FromStr for BackendChoice {
    type Err = Error;
    fn from_str(s: &str) -> Result<BackendChoice> {
        match s {
            "auto" | "" => Ok(BackendChoice::Auto),
            "uring" | "io_uring" => Ok(BackendChoice::Uring),
            "threads" => Ok(BackendChoice::Threads),
            "iocp" => Ok(BackendChoice::Iocp),
            other => Err(Error::Unsupported(format!(
                "unknown backend {other:?}: expected auto, uring, iocp or threads"
            ))),
        }
    }
}

/// Which reactors a driver may use (`DriverBuilder::reactor`).
///
/// A reactor reaps io_uring completions through an eventfd the ring signals: Linux only. On
/// Windows (the completion port) and on the thread pool there is nothing to register with
/// a runtime's reactor: every choice is accepted there and the driver's own threads wake the
/// futures, as with [`Reactor::Thread`] (`crates/directfile/PLATFORMS.md`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Reactor {
    /// With the `tokio` feature: the reactor of the tokio runtime in which one of the
    /// driver's futures first waits, for the futures of that runtime. Without it, the
    /// driver's reaper thread. The default.
    #[default]
    Auto,
    /// async-io's reactor (smol's, and that of every executor built on async-io), for every
    /// future that waits outside `Driver::block_on`. Needs the `async-io` feature.
    #[cfg(feature = "async-io")]
    AsyncIo,
    /// The driver's reaper thread, whatever the features.
    Thread,
}

/// Builds a [`Driver`].
#[derive(Clone, Debug)]
pub struct DriverBuilder {
    queue_depth: usize,
    backend: BackendChoice,
    threads: Option<usize>,
    spin: Duration,
    max_iovecs: usize,
    cooperative: bool,
    reactor: Reactor,
    inline_at_qd1: bool,
    #[cfg(feature = "fault-injection")]
    faults: Option<crate::fault::FaultPlan>,
}

impl Default for DriverBuilder {
    fn default() -> Self {
        DriverBuilder {
            queue_depth: 256,
            backend: BackendChoice::Auto,
            threads: None,
            spin: Duration::from_micros(250),
            max_iovecs: 64,
            cooperative: false,
            reactor: Reactor::Auto,
            inline_at_qd1: true,
            #[cfg(feature = "fault-injection")]
            faults: None,
        }
    }
}

impl DriverBuilder {
    /// Number of operation slots: how many operations may be in flight at once. More wait for
    /// a free slot. Default 256.
    pub fn queue_depth(mut self, slots: usize) -> Self {
        self.queue_depth = slots.clamp(1, MAX_QUEUE_DEPTH);
        self
    }

    /// Which backend to use. Default [`BackendChoice::Auto`].
    pub fn backend(mut self, choice: BackendChoice) -> Self {
        self.backend = choice;
        self
    }

    /// Worker threads of the thread-pool backend. Default: `min(queue_depth, 32)`.
    pub fn threads(mut self, count: usize) -> Self {
        self.threads = Some(count.max(1));
        self
    }

    /// How long a future polled while it is the only operation in flight waits for its
    /// completion on the polling thread before it sleeps (the queue-depth-1 latency path; a
    /// wake-up from another thread costs tens of microseconds). While it waits it yields the
    /// CPU between looks when another thread completes the operation (an `O_DSYNC` write, a
    /// sync, anything on the thread pool), and spins that run out of budget back off.
    /// `Duration::ZERO` disables it. Default 250 us.
    pub fn spin(mut self, budget: Duration) -> Self {
        self.spin = budget;
        self
    }

    /// On io_uring under [`Driver::block_on`], a read or write that is the only operation in
    /// flight may run as one blocking system call on the calling thread instead of through
    /// the ring, whichever has been faster lately: each path's recent latency is measured and
    /// the other path is tried now and then. The blocking call skips the file system's
    /// completion worker; the ring spares the thread a sleep. Which one wins depends on the
    /// machine at the time (docs/BENCHMARKS.md, "Queue depth 1"). Only under
    /// `Driver::block_on`, whose thread waits for that operation anyway; never on another
    /// executor. The result, the buffers, cancellation and fault injection are the same on
    /// both paths. On by default; `false` keeps every operation on the ring.
    pub fn inline_at_qd1(mut self, on: bool) -> Self {
        self.inline_at_qd1 = on;
        self
    }

    /// Cooperative completions (io_uring's `IORING_SETUP_COOP_TASKRUN`, Linux 5.19+; ignored
    /// by the thread pool; on an older kernel the ring is made without them and
    /// [`Driver::backend_reason`] says so). Off by default.
    ///
    /// The kernel posts the completion of a read or write as work for the thread that
    /// submitted it. By default it interrupts that thread, if it is running, to do so; with
    /// this on, it waits until the thread enters the kernel (it still wakes a sleeping one),
    /// and this crate's futures and `Driver::block_on` enter it whenever they look for a
    /// completion. That saves the interrupts: at QD32 O_DSYNC on `Driver::block_on`, 0.75x
    /// fio's IOPS became 0.94x (README, "Who waits for completions").
    ///
    /// Turn it on only when every thread that uses the driver waits in it: each runs its I/O
    /// under [`Driver::block_on`], or polls the driver's futures often. A thread may submit
    /// other threads' queued operations along with its own; if it then runs user code
    /// without system calls, their completions wait for its next system call or timer tick
    /// (1-4 ms), and on a CPU without timer ticks (`nohz_full`) for as long as it runs. The
    /// same holds for a `Driver::block_on` thread that computes or blocks outside the ring:
    /// the driver's watchdog reaps for it, but cannot post completions that wait on it.
    pub fn cooperative_completions(mut self, on: bool) -> Self {
        self.cooperative = on;
        self
    }

    /// Who reaps io_uring completions for the futures that wait on an executor other than
    /// [`Driver::block_on`]: the reactor of their async runtime (features `tokio`,
    /// `async-io`), or the driver's reaper thread. Default [`Reactor::Auto`]: with the `tokio`
    /// feature, the reactor of the tokio runtime in which a future first waits serves that
    /// runtime's futures; every other future is woken by the reaper thread. Ignored by the
    /// thread pool, whose workers wake the futures themselves, and on Windows, where the
    /// completion port's reaper thread does ([`Reactor`]).
    ///
    /// The rules (who reaps when, and how waiters go back to the reaper thread when a
    /// runtime shuts down): `docs/reactors.md`.
    pub fn reactor(mut self, reactor: Reactor) -> Self {
        self.reactor = reactor;
        self
    }

    /// The most buffers one vectored write may carry. Default 64.
    pub fn max_iovecs(mut self, count: usize) -> Self {
        self.max_iovecs = count.clamp(1, 1024);
        self
    }

    /// Injects the faults of `plan` into this driver's completions (tests only).
    #[cfg(feature = "fault-injection")]
    pub fn fault_plan(mut self, plan: crate::fault::FaultPlan) -> Self {
        self.faults = Some(plan);
        self
    }

    /// Makes the driver and starts its thread(s).
    ///
    /// # Errors
    /// [`Error::Unsupported`] when io_uring is forced (by [`BackendChoice::Uring`] or by
    /// `DIRECTFILE_BACKEND=uring`) and cannot work here; the message says why.
    pub fn build(self) -> Result<Driver> {
        let mut choice = self.backend;
        let mut forced_by = "the driver builder";
        if choice == BackendChoice::Auto {
            if let Ok(v) = std::env::var("DIRECTFILE_BACKEND") {
                choice = v.parse()?;
                forced_by = "DIRECTFILE_BACKEND";
            }
        }
        let threads = self.threads.unwrap_or(self.queue_depth.min(32));
        let (engine, backend, reason) = match choice {
            BackendChoice::Threads => (
                Engine::Threads(threads::Threads::new(self.queue_depth, threads)),
                Backend::Threads,
                format!("threads forced by {forced_by}"),
            ),
            BackendChoice::Uring | BackendChoice::Iocp if choice != NATIVE.0 => {
                return Err(Error::Unsupported(format!(
                    "the {choice:?} backend does not exist on this platform ({}); use auto, \
                     threads or {}",
                    std::env::consts::OS,
                    NATIVE.1
                )))
            }
            BackendChoice::Uring | BackendChoice::Iocp => {
                match native_engine(self.queue_depth, self.cooperative) {
                    Ok((engine, backend)) => {
                        (engine, backend, format!("{backend} forced by {forced_by}"))
                    }
                    Err(why) => {
                        return Err(Error::Unsupported(format!(
                            "{} cannot be used here: {why}",
                            NATIVE.1
                        )))
                    }
                }
            }
            BackendChoice::Auto => match native_engine(self.queue_depth, self.cooperative) {
                Ok((engine, backend)) => (engine, backend, format!("{} is available", NATIVE.1)),
                Err(why) => {
                    let reason = format!("{} unavailable ({why}); using the thread pool", NATIVE.1);
                    static LOGGED: std::sync::Once = std::sync::Once::new();
                    LOGGED.call_once(|| log::warn!("directfile: {reason}"));
                    (
                        Engine::Threads(threads::Threads::new(self.queue_depth, threads)),
                        Backend::Threads,
                        reason,
                    )
                }
            },
        };
        #[cfg(target_os = "linux")]
        let reason = match &engine {
            Engine::Uring(u) if self.cooperative && !u.cooperative() => format!(
                "{reason}; cooperative completions refused by the kernel (they need Linux 5.19)"
            ),
            _ => reason,
        };
        let engine = engine.with_reactor(self.reactor);
        static NEXT_ID: AtomicU64 = AtomicU64::new(1);
        let shared = Arc::new(Shared {
            id: NEXT_ID.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
            slots: Slots::new(self.queue_depth, self.max_iovecs),
            engine,
            spin: spin::Spin::new(self.spin),
            inline: inline::Inline::new(self.inline_at_qd1),
            closed: AtomicBool::new(false),
            shutdown: AtomicBool::new(false),
            backend,
            reason,
            #[cfg(feature = "fault-injection")]
            faults: self.faults.map(crate::fault::Injector::new),
        });
        let started = shared.engine.start(&shared);
        #[cfg(feature = "fault-injection")]
        let started = started.and_then(|()| match shared.faults.is_some() {
            true => crate::fault::Injector::start(&shared),
            false => Ok(()),
        });
        if let Err(e) = started {
            // Threads already running must see the shutdown and exit.
            shared.closed.store(true, Ordering::Release);
            shared.shutdown.store(true, Ordering::Release);
            shared.engine.shutdown(&shared);
            return Err(Error::Io(e));
        }
        Ok(Driver {
            handle: Arc::new(Handle { shared }),
        })
    }
}

/// State shared by the driver handles, the futures, and the backend's thread(s).
pub(crate) struct Shared {
    pub(crate) id: u64,
    pub(crate) slots: Slots,
    pub(crate) engine: Engine,
    pub(crate) spin: spin::Spin,
    pub(crate) inline: inline::Inline,
    closed: AtomicBool,
    shutdown: AtomicBool,
    backend: Backend,
    reason: String,
    #[cfg(feature = "fault-injection")]
    pub(crate) faults: Option<crate::fault::Injector>,
}

impl Shared {
    /// Records a completion from the backend (through the fault plan, when there is one).
    pub(crate) fn complete(&self, index: u32, generation: u32, res: i32) {
        #[cfg(feature = "fault-injection")]
        if let Some(faults) = &self.faults {
            faults.complete(self, index, generation, res);
            return;
        }
        self.slots.complete(index, generation, res);
    }

    /// Records the completion of the write half of a linked write + sync pair (through the
    /// fault plan, when there is one: its faults reach the write's result).
    pub(crate) fn complete_linked_write(&self, index: u32, generation: u32, res: i32) {
        #[cfg(feature = "fault-injection")]
        if let Some(faults) = &self.faults {
            faults.complete_linked_write(self, index, generation, res);
            return;
        }
        self.slots.complete_linked_write(index, generation, res);
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    /// Set once no handle, file or future refers to the driver any more: the backend's
    /// threads finish the operations still in flight (orphaned ones) and exit.
    pub(crate) fn is_shut_down(&self) -> bool {
        self.shutdown.load(Ordering::Acquire)
    }
}

/// One submission, ready for the backend.
pub(crate) enum Submission {
    #[cfg(target_os = "linux")]
    Uring {
        /// One entry, or two linked ones (a write, then its data sync).
        entries: [io_uring::squeue::Entry; 2],
        count: usize,
        generation: u32,
    },
    Threads {
        index: u32,
        generation: u32,
    },
    /// The slot's `OVERLAPPED` is filled (in `prepare`); the call is made in `submit`.
    #[cfg(windows)]
    Iocp {
        index: u32,
        generation: u32,
    },
}

impl Submission {
    pub(crate) fn generation(&self) -> u32 {
        match self {
            #[cfg(target_os = "linux")]
            Submission::Uring { generation, .. } => *generation,
            Submission::Threads { generation, .. } => *generation,
            #[cfg(windows)]
            Submission::Iocp { generation, .. } => *generation,
        }
    }

    /// Whether the operation completes in two linked parts (see `SlotInner::linked`).
    pub(crate) fn linked(&self) -> bool {
        match self {
            #[cfg(target_os = "linux")]
            Submission::Uring { count, .. } => *count == 2,
            _ => false,
        }
    }
}

#[allow(clippy::large_enum_variant)] // one per driver
pub(crate) enum Engine {
    #[cfg(target_os = "linux")]
    Uring(uring::Uring),
    Threads(threads::Threads),
    #[cfg(windows)]
    Iocp(iocp::Iocp),
}

impl Engine {
    /// Builds the submission for an armed slot (called with the slot locked).
    pub(crate) fn prepare(&self, slot: &SlotInner, index: u32, generation: u32) -> Submission {
        match self {
            #[cfg(target_os = "linux")]
            Engine::Uring(u) => u.prepare(slot, index, generation),
            Engine::Threads(_) => Submission::Threads { index, generation },
            #[cfg(windows)]
            Engine::Iocp(i) => i.prepare(slot, index, generation),
        }
    }

    /// Hands a submission to the kernel or the workers. An error means nothing was submitted.
    pub(crate) fn submit(&self, shared: &Shared, submission: Submission) -> Result<()> {
        match (self, submission) {
            #[cfg(target_os = "linux")]
            (Engine::Uring(u), Submission::Uring { entries, count, .. }) => {
                u.submit(shared, &entries[..count])
            }
            (Engine::Threads(t), Submission::Threads { index, generation }) => {
                t.submit(index, generation)
            }
            #[cfg(windows)]
            (Engine::Iocp(i), Submission::Iocp { index, generation }) => {
                i.submit(shared, index, generation)
            }
            _ => unreachable!("submission prepared by another engine"),
        }
    }

    /// Asks for an orphaned operation to be cancelled. Its completion frees the slot.
    pub(crate) fn cancel(&self, shared: &Shared, index: u32, generation: u32) {
        match self {
            #[cfg(target_os = "linux")]
            Engine::Uring(u) => u.cancel(shared, index, generation),
            Engine::Threads(t) => t.cancel(shared, index, generation),
            #[cfg(windows)]
            Engine::Iocp(i) => i.cancel(shared, index, generation),
        }
    }

    /// The engine with `reactor` chosen (`DriverBuilder::reactor`; io_uring only: the other
    /// backends' own threads wake the futures).
    fn with_reactor(self, reactor: Reactor) -> Engine {
        match self {
            #[cfg(target_os = "linux")]
            Engine::Uring(u) => Engine::Uring(u.with_reactor(reactor)),
            other => {
                let _ = reactor;
                other
            }
        }
    }

    /// Called before a future registers its waker: registers the ring with the reactor of
    /// this thread's async runtime, if it can serve and none does yet (`reactor.rs`).
    pub(crate) fn offer_reactor(&self, shared: &Arc<Shared>) {
        match self {
            #[cfg(target_os = "linux")]
            Engine::Uring(u) => u.offer_reactor(shared),
            // No reactor to offer: the workers, or the port's waiters, wake the futures.
            _ => {
                let _ = shared;
            }
        }
    }

    /// Whether a reactor serves a future that waits on this thread (asked under its slot's
    /// lock: `reactor.rs`, rule 1).
    pub(crate) fn serves_here(&self) -> bool {
        match self {
            #[cfg(target_os = "linux")]
            Engine::Uring(u) => u.serves_here(),
            _ => false,
        }
    }

    /// Called after a future registered its waker: makes sure someone will reap its completion.
    pub(crate) fn kick(&self) {
        match self {
            #[cfg(target_os = "linux")]
            Engine::Uring(u) => u.kick(),
            // Workers complete operations themselves.
            Engine::Threads(_) => {}
            // The reaper thread always waits in the port.
            #[cfg(windows)]
            Engine::Iocp(_) => {}
        }
    }

    /// Whether another thread completes `desc`, one that may need the CPU of a thread spinning
    /// for it (`driver::spin`): on the thread pool, every operation (a worker does it);
    /// elsewhere, what the kernel does not complete from the interrupt.
    pub(crate) fn completed_by_a_thread(&self, desc: &OpDesc) -> bool {
        matches!(self, Engine::Threads(_)) || !desc.completes_from_interrupt()
    }

    /// Whether a read or write just armed in slot `desc` may run inline (`driver::inline`):
    /// on io_uring, on the thread that runs `Driver::block_on`, as the only operation in
    /// flight.
    pub(crate) fn inline_candidate(&self, shared: &Shared, desc: &OpDesc) -> bool {
        match self {
            #[cfg(target_os = "linux")]
            Engine::Uring(u) => {
                shared.inline.enabled()
                    && matches!(
                        desc,
                        OpDesc::Read { .. } | OpDesc::Write { .. } | OpDesc::Writev { .. }
                    )
                    && shared.slots.in_flight() == 1
                    && u.owned_here()
            }
            _ => {
                let _ = (shared, desc);
                false
            }
        }
    }

    /// Runs the operation armed in slot `index` as blocking system calls on this thread and
    /// records its completion (through the fault plan, as any other).
    #[cfg(target_os = "linux")]
    pub(crate) fn run_inline(&self, shared: &Shared, index: u32, generation: u32) {
        threads::run_inline(shared, index, generation);
    }

    /// Whether a future polled on this thread may spin for its completion (on the thread pool,
    /// workers complete operations; see `Uring::may_spin`).
    pub(crate) fn may_spin(&self) -> bool {
        match self {
            #[cfg(target_os = "linux")]
            Engine::Uring(u) => u.may_spin(),
            Engine::Threads(_) => true,
            // Whoever waits in the port records the completion a spinning future looks for.
            #[cfg(windows)]
            Engine::Iocp(_) => true,
        }
    }

    /// With cooperative completions, for a thread that polls or spins for a completion: posts
    /// the completions whose kernel work waits for this thread to enter the kernel.
    pub(crate) fn run_task_work(&self) {
        match self {
            #[cfg(target_os = "linux")]
            Engine::Uring(u) => u.run_task_work(),
            Engine::Threads(_) => {}
            #[cfg(windows)]
            Engine::Iocp(_) => {}
        }
    }

    /// Records the completions that are ready, on the calling thread, without blocking.
    pub(crate) fn reap(&self, shared: &Shared) {
        match self {
            #[cfg(target_os = "linux")]
            Engine::Uring(u) => u.reap(shared),
            Engine::Threads(_) => {}
            // Packets go to the threads waiting in the port (the reaper, `Driver::block_on`):
            // one that waits is handed a packet as it is queued, so a look from here would
            // cost a system call per poll and find nothing.
            #[cfg(windows)]
            Engine::Iocp(_) => {
                let _ = shared;
            }
        }
    }

    fn start(&self, shared: &Arc<Shared>) -> std::io::Result<()> {
        match self {
            #[cfg(target_os = "linux")]
            Engine::Uring(_) => uring::Uring::start(shared),
            Engine::Threads(t) => t.start(shared),
            #[cfg(windows)]
            Engine::Iocp(i) => i.start(shared),
        }
    }

    /// The worker threads: the thread-pool backend's, or the completion port's for the
    /// operations that have no overlapped form (flush, allocation, length).
    pub(crate) fn thread_pool(&self) -> &threads::Threads {
        match self {
            Engine::Threads(t) => t,
            #[cfg(windows)]
            Engine::Iocp(i) => i.blocking(),
            #[cfg(target_os = "linux")]
            Engine::Uring(_) => unreachable!("the io_uring backend has no worker threads"),
        }
    }

    /// Makes a reaper waiting in the kernel look at the slot table again.
    #[cfg(feature = "fault-injection")]
    pub(crate) fn nudge(&self) {
        match self {
            #[cfg(target_os = "linux")]
            Engine::Uring(u) => u.wake_reaper(),
            Engine::Threads(_) => {}
            #[cfg(windows)]
            Engine::Iocp(i) => i.wake_reaper(),
        }
    }

    fn shutdown(&self, shared: &Shared) {
        match self {
            #[cfg(target_os = "linux")]
            Engine::Uring(u) => {
                u.detach_reactor(shared);
                u.wake_reaper();
            }
            Engine::Threads(t) => t.shutdown(),
            // No runtime reactor to detach (`shared` is for io_uring's).
            #[cfg(windows)]
            Engine::Iocp(i) => {
                let _ = shared;
                i.shutdown()
            }
        }
    }
}

struct Handle {
    shared: Arc<Shared>,
}

impl Drop for Handle {
    fn drop(&mut self) {
        self.shared.closed.store(true, Ordering::Release);
        self.shared.shutdown.store(true, Ordering::Release);
        self.shared.engine.shutdown(&self.shared);
    }
}

/// Carries operations to the kernel: an io_uring instance or a thread pool, plus the table of
/// operation slots.
///
/// Cheap to clone; files and in-flight futures hold a clone, so the driver lives until the last
/// of them is gone. Then its thread(s) finish every operation still in flight (those whose
/// futures were dropped were cancelled) and exit; nothing is leaked.
#[derive(Clone)]
pub struct Driver {
    handle: Arc<Handle>,
}

impl fmt::Debug for Driver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Driver")
            .field("backend", &self.backend())
            .field("queue_depth", &self.queue_depth())
            .field("in_flight", &self.in_flight())
            .finish()
    }
}

impl Driver {
    /// A driver with default settings and the automatic backend choice.
    ///
    /// # Errors
    /// See [`DriverBuilder::build`].
    pub fn new() -> Result<Driver> {
        DriverBuilder::default().build()
    }

    /// A builder for a driver with non-default settings.
    pub fn builder() -> DriverBuilder {
        DriverBuilder::default()
    }

    /// The process-wide driver that files use when opened without one, made on first use.
    ///
    /// # Errors
    /// When `DIRECTFILE_BACKEND` forces a backend that cannot work here.
    pub fn global() -> Result<Driver> {
        static GLOBAL: OnceLock<std::result::Result<Driver, String>> = OnceLock::new();
        GLOBAL
            .get_or_init(|| Driver::new().map_err(|e| e.to_string()))
            .clone()
            .map_err(Error::Unsupported)
    }

    /// The backend this driver runs.
    pub fn backend(&self) -> Backend {
        self.shared().backend
    }

    /// Why this backend was chosen (for example the error that ruled io_uring out).
    pub fn backend_reason(&self) -> &str {
        &self.shared().reason
    }

    /// Whether cooperative completions are on: asked for with
    /// [`DriverBuilder::cooperative_completions`], and the kernel has them (io_uring only; a
    /// refusal is noted in [`Driver::backend_reason`]).
    pub fn cooperative_completions(&self) -> bool {
        match &self.shared().engine {
            #[cfg(target_os = "linux")]
            Engine::Uring(u) => u.cooperative(),
            _ => false,
        }
    }

    /// The async runtime reactor that reaps this driver's completions for the futures of its
    /// runtime (`"tokio"` or `"async-io"`), or `None` while only the driver's own threads do
    /// ([`DriverBuilder::reactor`]).
    pub fn completion_reactor(&self) -> Option<&'static str> {
        match &self.shared().engine {
            #[cfg(target_os = "linux")]
            Engine::Uring(u) => u.reactors().serving_name(),
            _ => None,
        }
    }

    /// How many times the io_uring driver's reaper thread has waited in the kernel for
    /// completions (0 on the thread pool and the completion port): it stays where it is while
    /// `Driver::block_on` or a runtime's reactor reaps.
    pub fn reaper_thread_waits(&self) -> usize {
        match &self.shared().engine {
            #[cfg(target_os = "linux")]
            Engine::Uring(u) => u.reaper_waits(),
            _ => 0,
        }
    }

    /// How many times the io_uring driver's reaper thread reaped and submitted for a thread in
    /// `Driver::block_on` that owned the ring but had not come back to it, with operations in
    /// it (its future blocked or computed): its watchdog (0 on the thread pool and the
    /// completion port). A thread that waits in the ring, or runs lone operations inline,
    /// needs none.
    pub fn watchdog_rescues(&self) -> usize {
        match &self.shared().engine {
            #[cfg(target_os = "linux")]
            Engine::Uring(u) => u.watchdog_rescues(),
            _ => 0,
        }
    }

    /// How many times that watchdog woke to look at a thread in `Driver::block_on` (0 on the
    /// thread pool and the completion port). It looks only while operations are in the ring,
    /// at most once a millisecond and usually once in 16: an owner that waits on something
    /// else, or runs its lone operations inline, draws none.
    pub fn watchdog_looks(&self) -> usize {
        match &self.shared().engine {
            #[cfg(target_os = "linux")]
            Engine::Uring(u) => u.watchdog_looks(),
            _ => 0,
        }
    }

    /// How many operations ran as a blocking call on the thread in `Driver::block_on`
    /// instead of through the ring ([`DriverBuilder::inline_at_qd1`]; 0 off io_uring).
    pub fn inline_ops(&self) -> u64 {
        self.shared().inline.ran()
    }

    /// How many times a runtime's reactor called the driver to reap its completions (0 off
    /// io_uring).
    pub fn reactor_wakes(&self) -> usize {
        match &self.shared().engine {
            #[cfg(target_os = "linux")]
            Engine::Uring(u) => u
                .reactors()
                .wakes
                .load(std::sync::atomic::Ordering::Relaxed),
            _ => 0,
        }
    }

    /// Number of operation slots.
    pub fn queue_depth(&self) -> usize {
        self.shared().slots.len()
    }

    /// Operations in flight (including cancelled ones whose completion has not arrived).
    pub fn in_flight(&self) -> usize {
        self.shared().slots.in_flight()
    }

    /// Refuses new operations from now on ([`Error::Closed`]); operations in flight finish.
    pub fn close(&self) {
        self.shared().closed.store(true, Ordering::Release);
        // Tasks waiting for a slot must see it now, not after slots they will not use free up.
        self.shared().slots.wake_all_waiters();
    }

    /// Number of completions the fault plan has changed so far.
    #[cfg(feature = "fault-injection")]
    pub fn faults_injected(&self) -> u64 {
        self.shared().faults.as_ref().map_or(0, |f| f.injected())
    }

    /// Makes a pool of `count` buffers of `buf_size` bytes aligned to `align`, registered with
    /// this driver's ring when it is io_uring (so operations on them use the fixed-buffer
    /// opcodes). Registration is best effort: when the ring refuses (memlock limit, table full)
    /// the pool works with the ordinary opcodes; [`BufPool::is_registered`] tells.
    pub fn buf_pool(&self, count: usize, buf_size: usize, align: usize) -> BufPool {
        let pool = BufPool::unregistered(count, buf_size, align);
        #[cfg(target_os = "linux")]
        if let Engine::Uring(u) = &self.shared().engine {
            let (base, _) = pool.region();
            if let Some(first_index) = u.register_buffers(base, count, buf_size) {
                let weak = Arc::downgrade(&self.handle.shared);
                pool.set_registration(FixedRegistration {
                    driver_id: self.shared().id,
                    first_index,
                    unregister: std::sync::Mutex::new(Some(Box::new(move || {
                        if let Some(shared) = weak.upgrade() {
                            if let Engine::Uring(u) = &shared.engine {
                                u.unregister_buffers(first_index, count);
                            }
                        }
                    }))),
                });
            }
        }
        pool
    }

    /// Whether `set_len` can go through the driver (on io_uring, `IORING_OP_FTRUNCATE` needs
    /// Linux 6.9; every other backend runs it on a worker thread).
    pub(crate) fn has_ftruncate_op(&self) -> bool {
        match &self.shared().engine {
            #[cfg(target_os = "linux")]
            Engine::Uring(u) => u.has_ftruncate(),
            _ => true,
        }
    }

    pub(crate) fn shared(&self) -> &Shared {
        &self.handle.shared
    }

    pub(crate) fn shared_arc(&self) -> &Arc<Shared> {
        &self.handle.shared
    }

    /// Binds a newly opened file to this driver's completion port (when it has one).
    #[cfg(windows)]
    pub(crate) fn bind(&self, handle: crate::sys::RawHandle) -> std::io::Result<()> {
        match &self.shared().engine {
            Engine::Iocp(i) => i.bind(handle),
            Engine::Threads(_) => Ok(()),
        }
    }
}

impl Driver {
    /// Runs `fut` to completion on the calling thread: a small executor for a thread that does
    /// its own I/O (one thread per core, a benchmark, a tool).
    ///
    /// On io_uring the thread becomes the ring's reaper while it runs: between polls of `fut`
    /// it waits in `io_uring_enter`, not in a futex, submits the entries its futures queued
    /// (up to 8 per call) and reaps the completions itself, so no other thread is woken for
    /// its I/O. At queue depth 32 that takes about half the CPU time per operation of the same
    /// futures on another executor (README, "Measured").
    ///
    /// Other threads may use the driver meanwhile; their completions are reaped by this thread
    /// when it waits. If `fut` runs long or blocks (a nested executor, a blocking channel), the
    /// driver's own thread notices within a millisecond and reaps for it: late completions,
    /// never a hang. Nested `block_on` on the same thread waits in the ring as well. A waker
    /// must not block. When every thread that uses the driver runs its I/O this way,
    /// [`DriverBuilder::cooperative_completions`] saves the interrupts that post completions
    /// to a running thread.
    ///
    /// If another thread's `block_on` owns the ring, or on the thread-pool backend, it parks
    /// the thread between polls like any executor. Futures from this crate also run on any
    /// other executor.
    pub fn block_on<F: std::future::Future>(&self, fut: F) -> F::Output {
        let fut = match &self.shared().engine {
            #[cfg(target_os = "linux")]
            Engine::Uring(u) => match u.block_on(&self.handle.shared, fut) {
                Ok(out) => return out,
                Err(fut) => fut,
            },
            Engine::Threads(_) => fut,
            #[cfg(windows)]
            Engine::Iocp(i) => match i.block_on(&self.handle.shared, fut) {
                Ok(out) => return out,
                Err(fut) => fut,
            },
        };
        park_block_on(fut)
    }
}

/// A minimal executor: poll, park until woken, repeat.
fn park_block_on<F: std::future::Future>(fut: F) -> F::Output {
    struct Unpark {
        notified: AtomicBool,
        thread: std::thread::Thread,
    }
    impl std::task::Wake for Unpark {
        fn wake(self: Arc<Self>) {
            self.wake_by_ref();
        }
        fn wake_by_ref(self: &Arc<Self>) {
            if !self.notified.swap(true, Ordering::SeqCst) {
                self.thread.unpark();
            }
        }
    }
    let unpark = Arc::new(Unpark {
        notified: AtomicBool::new(true),
        thread: std::thread::current(),
    });
    let waker = std::task::Waker::from(unpark.clone());
    let mut cx = std::task::Context::from_waker(&waker);
    let mut fut = std::pin::pin!(fut);
    loop {
        if unpark.notified.swap(false, Ordering::SeqCst) {
            if let std::task::Poll::Ready(out) = fut.as_mut().poll(&mut cx) {
                return out;
            }
        } else {
            std::thread::park();
        }
    }
}
