//! The thread-pool backend: for where io_uring is missing or forbidden (old kernels, seccomp,
//! `kernel.io_uring_disabled`, gVisor). Same slots, same futures, same guarantees.
//!
//! A job is just `(slot index, generation)` in a bounded queue (its capacity is the number of
//! slots, so it never grows); the operation itself is described in the slot. A queued job that
//! no worker has taken can be withdrawn on cancellation; a running one completes and its
//! buffers come back through the slot.
//!
//! The operation itself is one blocking call of the platform (`run`): `pwritev2(2)`,
//! `preadv2(2)`, `fdatasync(2)`... on Linux, positional `ReadFile`/`WriteFile`,
//! `FlushFileBuffers`... on Windows (`threads/windows.rs`). On Windows the completion-port
//! driver also runs its operations that have no overlapped form here.
#![allow(unsafe_code)]

#[cfg(windows)]
mod windows;
#[cfg(windows)]
use windows::run;

use super::Shared;
use crate::op::slot::{OpDesc, State};
use crate::sync::{Condvar, Mutex};
use crate::{Error, Result};
use std::collections::VecDeque;
use std::io;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;

/// The longest a worker spins for the next job before sleeping on the condition variable.
const WORKER_SPIN_MAX: std::time::Duration = std::time::Duration::from_micros(100);

struct Queue {
    jobs: VecDeque<(u32, u32)>,
    shutdown: bool,
}

pub(crate) struct Threads {
    queue: Mutex<Queue>,
    ready: Condvar,
    /// Jobs queued, readable without the lock (for the workers' short spin).
    queued: AtomicUsize,
    /// Workers spinning for the next job: at most one, so idle workers do not eat the CPUs.
    spinning: AtomicUsize,
    workers: usize,
}

impl Threads {
    pub(crate) fn new(slots: usize, workers: usize) -> Threads {
        Threads {
            queue: Mutex::new(Queue {
                jobs: VecDeque::with_capacity(slots),
                shutdown: false,
            }),
            ready: Condvar::new(),
            queued: AtomicUsize::new(0),
            spinning: AtomicUsize::new(0),
            workers,
        }
    }

    pub(crate) fn start(&self, shared: &Arc<Shared>) -> io::Result<()> {
        for i in 0..self.workers {
            let shared = Arc::clone(shared);
            std::thread::Builder::new()
                .name(format!("directfile-worker-{i}"))
                .spawn(move || {
                    let _abort = super::AbortOnUnwind;
                    worker(&shared)
                })?;
        }
        Ok(())
    }

    pub(crate) fn submit(&self, index: u32, generation: u32) -> Result<()> {
        let mut queue = self.queue.lock().unwrap();
        if queue.shutdown {
            return Err(Error::Closed);
        }
        // Cannot grow: at most one job per slot.
        queue.jobs.push_back((index, generation));
        self.queued.fetch_add(1, Ordering::Release);
        drop(queue);
        self.ready.notify_one();
        Ok(())
    }

    pub(crate) fn cancel(&self, shared: &Shared, index: u32, generation: u32) {
        let withdrawn = {
            let mut queue = self.queue.lock().unwrap();
            match queue
                .jobs
                .iter()
                .position(|&job| job == (index, generation))
            {
                Some(pos) => {
                    queue.jobs.remove(pos);
                    self.queued.fetch_sub(1, Ordering::Release);
                    true
                }
                None => false,
            }
        };
        if withdrawn {
            shared
                .slots
                .complete(index, generation, -crate::sys::CANCELED);
        }
        // Otherwise a worker has it: it runs to completion and frees the orphaned slot.
    }

    pub(crate) fn shutdown(&self) {
        self.queue.lock().unwrap().shutdown = true;
        self.ready.notify_all();
    }

    fn next_job(&self, shared: &Shared) -> Option<(u32, u32)> {
        // A short spin first: at queue depth 1 the next job usually arrives within the spin,
        // which saves the futex wake-up of a sleeping worker.
        // One worker at most spins, for no longer than 100 us, and only at queue depth 1 (the
        // operation this worker just finished is the only one): with more in flight, jobs
        // arrive while others run, and a spinning worker would only take a CPU from them.
        if !shared.spin.budget().is_zero()
            && shared.slots.in_flight() <= 1
            && self
                .spinning
                .compare_exchange(0, 1, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
        {
            let budget = shared.spin.budget().min(WORKER_SPIN_MAX);
            let start = Instant::now();
            while self.queued.load(Ordering::Acquire) == 0 && start.elapsed() < budget {
                std::hint::spin_loop();
            }
            self.spinning.store(0, Ordering::Release);
        }
        let mut queue = self.queue.lock().unwrap();
        loop {
            if let Some(job) = queue.jobs.pop_front() {
                self.queued.fetch_sub(1, Ordering::Release);
                return Some(job);
            }
            if queue.shutdown {
                return None;
            }
            queue = self.ready.wait(queue).unwrap();
        }
    }
}

fn worker(shared: &Arc<Shared>) {
    let threads = shared.engine.thread_pool();
    while let Some((index, generation)) = threads.next_job(shared) {
        let (fd, desc, iov_ptr, iov_len) = {
            let slot = shared.slots.lock(index);
            if slot.generation != generation {
                continue;
            }
            // A job taken off the queue can no longer be withdrawn (cancel looks in the queue),
            // so from here the slot waits for our `complete`.
            match &slot.state {
                State::InFlight { .. } => {}
                State::Orphaned => {
                    drop(slot);
                    shared
                        .slots
                        .complete(index, generation, -crate::sys::CANCELED);
                    continue;
                }
                other => unreachable!("queued job in slot state {other:?}"),
            }
            operation(&slot)
        };
        // SAFETY: the job is off the queue, so the slot (InFlight, or Orphaned if the future is
        // dropped meanwhile) is freed only by our `complete` below: until then it keeps the
        // buffers, iovecs and descriptor referred to by `desc`.
        let res = unsafe { run_op(fd, desc, iov_ptr, iov_len) };
        shared.complete(index, generation, res);
    }
}

/// Runs the operation armed in slot `index` with blocking syscalls on this thread and records
/// its completion: `driver::inline`, on io_uring under `Driver::block_on`.
#[cfg(target_os = "linux")]
pub(crate) fn run_inline(shared: &Shared, index: u32, generation: u32) {
    let (fd, desc, iov, iov_len) = operation(&shared.slots.lock(index));
    shared.inline.set_running(true);
    // SAFETY: the slot was armed by the `Op::poll_submit` that is calling us, and is in no
    // queue (no SQE, no job), so nothing but the `complete` below can complete it. Freeing it
    // (`Slots::disarm`, which drops the buffers, the iovecs and the descriptor's `Arc`) needs
    // that completion and then the future taking the result, or the future being dropped
    // (orphaning waits for a completion too); the future is borrowed by this very call. So
    // until `complete`, the buffers, iovecs and descriptor that `desc` refers to stay valid.
    let res = unsafe { run_op(fd, desc, iov, iov_len) };
    shared.inline.set_running(false);
    shared.complete(index, generation, res);
}

/// What `run_op` needs of an armed slot: its descriptor, operation and iovecs.
fn operation(
    slot: &crate::op::slot::SlotInner,
) -> (
    crate::sys::RawHandle,
    OpDesc,
    *const crate::sys::IoVec,
    usize,
) {
    (
        slot.fd,
        slot.desc,
        slot.iovecs.0.as_ptr(),
        slot.iovecs.0.len(),
    )
}

/// Runs one operation with blocking syscalls, the explicit sync after a write included.
/// Returns the byte count or a negative errno.
///
/// # Safety
/// As for [`run`].
unsafe fn run_op(
    fd: crate::sys::RawHandle,
    desc: OpDesc,
    iov: *const crate::sys::IoVec,
    iov_len: usize,
) -> i32 {
    // SAFETY: the caller's guarantee, passed on.
    let res = unsafe { run(fd, desc, iov, iov_len) };
    match desc {
        // SyncStrategy::ExplicitSync: the write completes once a data sync after it does.
        // Even a synchronous O_DSYNC write is not synced by every file system (FUSE with
        // FOPEN_DIRECT_IO sends no FUSE_FSYNC for it). On Windows the sync is
        // FlushFileBuffers, after a FILE_FLAG_WRITE_THROUGH write.
        OpDesc::Write { sync: true, .. } | OpDesc::Writev { sync: true, .. } => {
            // SAFETY: a data sync of the open descriptor; no memory is passed.
            let synced = unsafe { run(fd, OpDesc::Fsync { datasync: true }, iov, 0) };
            crate::op::slot::Slots::linked_result(res, synced)
        }
        _ => res,
    }
}

/// Runs one operation with a blocking syscall. Returns the byte count or a negative errno.
///
/// # Safety
/// The pointers in `desc` (and `iov`, `iov_len` for a vectored write) must be valid for the
/// length they describe for the whole call, and `fd` must be open.
#[cfg(target_os = "linux")]
unsafe fn run(fd: i32, desc: OpDesc, iov: *const libc::iovec, iov_len: usize) -> i32 {
    loop {
        let ret: i64 = match desc {
            OpDesc::Nop => 0,
            OpDesc::Write {
                offset,
                ptr,
                len,
                dsync,
                ..
            } => {
                let iov = libc::iovec {
                    iov_base: ptr as *mut _,
                    iov_len: len as usize,
                };
                let flags = if dsync { libc::RWF_DSYNC } else { 0 };
                // SAFETY: the caller guarantees `ptr` is valid for `len` bytes.
                unsafe { libc::pwritev2(fd, &iov, 1, offset as i64, flags) as i64 }
            }
            OpDesc::Read {
                offset, ptr, len, ..
            } => {
                let iov = libc::iovec {
                    iov_base: ptr.cast(),
                    iov_len: len as usize,
                };
                // SAFETY: the caller guarantees `ptr` is valid and writable for `len` bytes.
                unsafe { libc::preadv2(fd, &iov, 1, offset as i64, 0) as i64 }
            }
            // `sync` (an explicit data sync after the write) is the worker's, after `run`.
            OpDesc::Writev { offset, dsync, .. } => {
                let flags = if dsync { libc::RWF_DSYNC } else { 0 };
                // SAFETY: the caller guarantees the iovecs and what they point to are valid.
                unsafe { libc::pwritev2(fd, iov, iov_len as i32, offset as i64, flags) as i64 }
            }
            // SAFETY: plain syscalls on an open descriptor; no memory is passed.
            OpDesc::Fsync { datasync: true } => unsafe { libc::fdatasync(fd) as i64 },
            // SAFETY: as above.
            OpDesc::Fsync { datasync: false } => unsafe { libc::fsync(fd) as i64 },
            OpDesc::Fallocate { mode, offset, len } => {
                // SAFETY: as above.
                unsafe { libc::fallocate(fd, mode, offset as i64, len as i64) as i64 }
            }
            // SAFETY: as above.
            OpDesc::Ftruncate { len } => unsafe { libc::ftruncate(fd, len as i64) as i64 },
        };
        if ret >= 0 {
            return ret as i32;
        }
        let errno = io::Error::last_os_error()
            .raw_os_error()
            .unwrap_or(libc::EIO);
        if errno != libc::EINTR {
            return -errno;
        }
    }
}
