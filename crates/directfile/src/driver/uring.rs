//! The io_uring backend: the only module that touches the `io_uring` crate.
//!
//! Submission is allowed from any thread (the submission queue is behind a mutex); completions
//! are reaped by whoever gets there first: a future being polled (inline, the cheap path), or
//! the reaper thread, which sleeps in `io_uring_enter(GETEVENTS)` and wakes the futures whose
//! operations finished while nobody polled.
#![allow(unsafe_code)]

use super::{Engine, Shared, Submission};
use crate::op::slot::{OpDesc, SlotInner};
use crate::sync::{AtomicBool, Condvar, Mutex, Ordering};
use crate::Result;
use io_uring::{opcode, types, IoUring};
use std::io;
use std::sync::Arc;

/// `user_data` of the no-op that wakes the reaper at shutdown.
const TAG_WAKE: u64 = u64::MAX;
/// `user_data` of `IORING_OP_ASYNC_CANCEL` requests (their own completions carry nothing).
const TAG_CANCEL: u64 = u64::MAX - 1;
/// `IORING_ENTER_GETEVENTS`.
const ENTER_GETEVENTS: u32 = 1;
/// Entries in the registered-buffer table, shared by all pools of one driver.
const FIXED_TABLE_ENTRIES: u32 = 1024;

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
    /// The reaper sleeps on this condition variable, outside the kernel, while no completion
    /// is unattended (see `Slots::unattended`), so a future that spins for its own completion
    /// does not pay for waking the reaper too.
    reaper_lock: Mutex<()>,
    reaper_wake: Condvar,
    reaper_idle: AtomicBool,
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
    pub(crate) fn new(slots: usize) -> std::result::Result<Uring, String> {
        let entries = (slots as u32).next_power_of_two().clamp(8, 4096);
        // Every slot can have its operation and one cancel request outstanding, plus wake-ups:
        // a completion queue of 2 x slots + 16 (rounded up) never overflows. The builder caps
        // the slots at MAX_QUEUE_DEPTH so this stays within the kernel's 65536.
        let cq_entries = (2 * slots as u32 + 16).next_power_of_two().max(entries * 2);
        // IORING_SETUP_SUBMIT_ALL (5.18): keep submitting past an entry that fails at prep, so
        // no entry pushed by another thread is left in the queue.
        let ring = IoUring::builder()
            .setup_cqsize(cq_entries)
            .setup_submit_all()
            .build(entries)
            .or_else(|_| IoUring::builder().setup_cqsize(cq_entries).build(entries))
            .map_err(|e| explain_setup_error(&e))?;
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
            reaper_lock: Mutex::new(()),
            reaper_wake: Condvar::new(),
            reaper_idle: AtomicBool::new(false),
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
                loop {
                    if shared.is_shut_down() && shared.slots.in_flight() == 0 {
                        break;
                    }
                    if u.may_idle(&shared) {
                        // Nobody waits on us: sleep outside the kernel until a future
                        // registers a waker or is dropped in flight (`kick`), or shutdown.
                        let mut guard = u.reaper_lock.lock().unwrap();
                        u.reaper_idle.store(true, Ordering::SeqCst);
                        while u.may_idle(&shared) {
                            guard = u.reaper_wake.wait(guard).unwrap();
                        }
                        u.reaper_idle.store(false, Ordering::SeqCst);
                        continue;
                    }
                    // Wait for one completion without submitting: submitters enter the ring
                    // themselves, and sharing the submission lock with them only costs.
                    // SAFETY: to_submit 0, min_complete 1, IORING_ENTER_GETEVENTS, no argument:
                    // the call reads and writes no memory of ours.
                    let waited = unsafe {
                        u.ring
                            .submitter()
                            .enter::<libc::sigset_t>(0, 1, ENTER_GETEVENTS, None)
                    };
                    match waited {
                        Ok(_) => {}
                        Err(e) if matches!(e.raw_os_error(), Some(libc::EINTR | libc::EBUSY)) => {}
                        Err(e) => panic!("io_uring_enter(GETEVENTS) failed: {e}"),
                    }
                    u.reap(&shared, true);
                }
                // `shared` (and with it the ring) is dropped here, after the last completion.
            })?;
        Ok(())
    }

    pub(crate) fn prepare(&self, slot: &SlotInner, index: u32, generation: u32) -> Submission {
        let fd = types::Fd(slot.fd);
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
        Submission::Uring {
            entry: entry.user_data(user_data(index, generation)),
            generation,
        }
    }

    /// Pushes one entry and submits it.
    ///
    /// An entry once in the ring cannot be taken back, so this never reports failure for it:
    /// transient refusals (EBUSY, EAGAIN, EINTR) are retried after reaping; anything else can
    /// only be our bug and panics. Errors of the operation itself arrive as its completion.
    pub(crate) fn submit(&self, shared: &Shared, entry: &io_uring::squeue::Entry) -> Result<()> {
        {
            let _guard = self.sq.lock().unwrap();
            // SAFETY: the `sq` mutex is held, so no other SubmissionQueue exists.
            let mut sq = unsafe { self.ring.submission_shared() };
            loop {
                // SAFETY: the entry's pointers (buffers, iovecs) are owned by a slot that is
                // InFlight and keeps them until this entry's completion is reaped.
                if unsafe { sq.push(entry) }.is_ok() {
                    break;
                }
                // Queue full (another thread pushed and has not submitted yet): submit. No
                // reaping here: it would run wakers (user code) under the `sq` lock.
                sq.sync();
                self.enter_submit(None);
                sq.sync();
            }
            sq.sync();
        }
        self.enter_submit(Some(shared));
        Ok(())
    }

    /// `io_uring_enter` to submit what is queued. On EBUSY/EAGAIN (completions backed up), reaps
    /// when `shared` is given (never while a lock is held: reaping runs wakers) and retries.
    fn enter_submit(&self, shared: Option<&Shared>) {
        loop {
            match self.ring.submit() {
                Ok(_) => return,
                Err(e) if matches!(e.raw_os_error(), Some(libc::EINTR)) => {}
                Err(e) if matches!(e.raw_os_error(), Some(libc::EBUSY | libc::EAGAIN)) => {
                    // The completion queue is busy: make room (or let others) and retry.
                    if let Some(shared) = shared {
                        self.reap(shared, false);
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
    fn may_idle(&self, shared: &Shared) -> bool {
        shared.slots.unattended() == 0 && shared.slots.in_flight() <= 1 && !shared.is_shut_down()
    }

    /// Wakes the reaper if it sleeps: called after a slot became unattended.
    pub(crate) fn kick(&self) {
        // Pairs with the reaper's store of `reaper_idle` then load of `unattended` (both
        // SeqCst): either it sees the new unattended slot, or we see it idle and notify it
        // under its lock, which it holds until it waits.
        if self.reaper_idle.load(Ordering::SeqCst) {
            let _guard = self.reaper_lock.lock().unwrap();
            self.reaper_wake.notify_one();
        }
    }

    pub(crate) fn cancel(&self, shared: &Shared, index: u32, generation: u32) {
        let entry = opcode::AsyncCancel::new(user_data(index, generation))
            .build()
            .user_data(TAG_CANCEL);
        // The cancel entry holds no pointers; its failure (the operation already finished)
        // is harmless, since the operation's own completion frees the slot either way.
        let _ = self.submit(shared, &entry);
        self.kick();
    }

    /// Posts a no-op so the reaper returns from its wait and sees the shutdown flag.
    pub(crate) fn wake_reaper(&self) {
        let entry = opcode::Nop::new().build().user_data(TAG_WAKE);
        let _guard = self.sq.lock().unwrap();
        // SAFETY: the `sq` mutex is held, so no other SubmissionQueue exists.
        let mut sq = unsafe { self.ring.submission_shared() };
        // SAFETY: a no-op holds no pointers.
        while unsafe { sq.push(&entry) }.is_err() {
            sq.sync();
            let _ = self.ring.submit();
            sq.sync();
        }
        sq.sync();
        drop(sq);
        let _ = self.ring.submit();
        let _guard = self.reaper_lock.lock().unwrap();
        self.reaper_wake.notify_one();
    }

    /// Records every completion in the queue. With `wait_for_lock` false, returns at once if
    /// another thread is reaping (it will record ours too).
    pub(crate) fn reap(&self, shared: &Shared, wait_for_lock: bool) {
        let _guard = if wait_for_lock {
            self.cq.lock().unwrap()
        } else {
            match self.cq.try_lock() {
                Ok(g) => g,
                Err(_) => return,
            }
        };
        // SAFETY: the `cq` mutex is held, so no other CompletionQueue exists.
        let cq = unsafe { self.ring.completion_shared() };
        for cqe in cq {
            let data = cqe.user_data();
            if data >= TAG_CANCEL {
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
    Uring::new(8).map(drop)
}
