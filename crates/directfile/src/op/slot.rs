//! The fixed table of operation slots: the state machine shared by the future that started an
//! operation and the driver that completes it.
//!
//! ```text
//!            acquire             completion               future takes result
//!   Free ─────────────▶ InFlight ──────────▶ Completed ─────────────────────────▶ Free
//!                          │
//!                          │ future dropped (cancel sent)       completion arrives
//!                          └────────────────▶ Orphaned ────────────────────────────▶ Free
//! ```
//!
//! While a slot is `InFlight` or `Orphaned` it owns the operation's buffers and a reference to
//! the file descriptor, so the memory and the descriptor the kernel (or a worker thread) uses
//! stay valid until the completion is recorded, whatever the future does. The generation
//! counter, carried in each submission's `user_data`, makes a stale completion detectable.
//! Nothing here allocates after [`Slots::new`]: the waiter queue only grows to the largest
//! number of tasks that ever waited at once.
#![allow(unsafe_code)]

use crate::buf::AlignedBuf;
use crate::sync::{AtomicUsize, Mutex, MutexGuard, Ordering};
use crate::sys::{self, OwnedHandle, RawHandle};
use crate::wait::WaitQueue;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};

/// What an operation does, in the terms both drivers need. (The Windows drivers read no
/// fixed-buffer index, `dsync` flag or allocation mode: write-through is the handle's
/// `FILE_FLAG_WRITE_THROUGH`, and Windows has one flush and one way to allocate. They do read
/// `sync`: `FlushFileBuffers` after the write.)
#[derive(Clone, Copy, Debug)]
#[cfg_attr(windows, allow(dead_code))]
pub(crate) enum OpDesc {
    Nop,
    Write {
        offset: u64,
        ptr: *const u8,
        len: u32,
        fixed: Option<u16>,
        dsync: bool,
        /// Follow the write with an explicit data sync, and complete when it does
        /// ([`SyncStrategy::ExplicitSync`](crate::SyncStrategy::ExplicitSync)).
        sync: bool,
    },
    Read {
        offset: u64,
        ptr: *mut u8,
        len: u32,
        fixed: Option<u16>,
    },
    /// The iovecs are in the slot's `iovecs`.
    Writev {
        offset: u64,
        dsync: bool,
        sync: bool,
    },
    Fsync {
        datasync: bool,
    },
    Fallocate {
        mode: i32,
        offset: u64,
        len: u64,
    },
    Ftruncate {
        len: u64,
    },
}

impl OpDesc {
    /// Whether the kernel completes this operation from the device's interrupt, or with only a
    /// short hand-over: a read, a plain write (on ext4 and xfs iomap's completion worker just
    /// passes it to io_uring), a no-op. An `O_DSYNC` write (the file system's direct-I/O
    /// completion worker flushes on a device without FUA), a write with a linked sync, a sync,
    /// an allocation and a size change (io_uring's io-wq workers) are completed by a kernel
    /// thread that may need the CPU of a thread spinning for them for a while (`driver::spin`).
    pub(crate) fn completes_from_interrupt(&self) -> bool {
        matches!(
            self,
            OpDesc::Nop
                | OpDesc::Read { .. }
                | OpDesc::Write {
                    dsync: false,
                    sync: false,
                    ..
                }
                | OpDesc::Writev {
                    dsync: false,
                    sync: false,
                    ..
                }
        )
    }
}

/// The buffers an operation owns while it is in flight.
#[derive(Debug, Default)]
pub(crate) enum OpBufs {
    #[default]
    None,
    One(AlignedBuf),
    Many(Vec<AlignedBuf>),
}

impl OpBufs {
    pub(crate) fn into_one(self) -> AlignedBuf {
        match self {
            OpBufs::One(b) => b,
            other => unreachable!("expected one buffer, got {other:?}"),
        }
    }

    pub(crate) fn into_many(self) -> Vec<AlignedBuf> {
        match self {
            OpBufs::Many(b) => b,
            other => unreachable!("expected a buffer list, got {other:?}"),
        }
    }
}

#[derive(Debug)]
pub(crate) enum State {
    Free,
    /// Submitted; `waker` is set once the future has polled and found it not complete.
    /// `served`: that waiter is the reactor's to reap for (an async runtime's reactor,
    /// `driver/reactor.rs`), not counted in `unattended`.
    InFlight {
        waker: Option<Waker>,
        served: bool,
    },
    /// The result (a byte count or a negative errno), waiting for the future to take it.
    Completed(i32),
    /// The future was dropped: the slot waits for the completion to free itself.
    Orphaned,
}

/// iovec storage that is made once per slot and never reallocated, so pointers into it stay
/// valid for the kernel while the slot is in flight.
pub(crate) struct IoVecs(pub(crate) Vec<sys::IoVec>);

// SAFETY: the iovecs point into buffers owned by the same slot; they are only dereferenced by
// the kernel or a worker while the slot (behind its mutex) keeps those buffers alive.
unsafe impl Send for IoVecs {}

/// One slot's contents, behind the slot's mutex.
pub(crate) struct SlotInner {
    pub(crate) generation: u32,
    pub(crate) state: State,
    /// The file's descriptor (a `HANDLE` on Windows).
    pub(crate) fd: RawHandle,
    pub(crate) desc: OpDesc,
    pub(crate) bufs: OpBufs,
    /// Keeps the descriptor open while the operation may still use it.
    pub(crate) file: Option<Arc<OwnedHandle>>,
    pub(crate) iovecs: IoVecs,
    /// The operation is two linked submissions (a write, then a data sync; io_uring): it
    /// completes once both have, whichever completion is reaped first.
    pub(crate) linked: bool,
    /// The linked write's result, once its completion arrived.
    pub(crate) linked_write: Option<i32>,
    /// The linked sync's result, if it arrived before the write's.
    pub(crate) linked_sync: Option<i32>,
}

// SAFETY: the raw pointers in `desc` point into `bufs`, which the slot owns and which are Send;
// they are only used while the slot keeps those buffers.
unsafe impl Send for SlotInner {}

struct FreeList {
    free: Vec<u32>,
    waiters: WaitQueue,
}

/// The table of slots and the list of free ones.
pub(crate) struct Slots {
    slots: Box<[Mutex<SlotInner>]>,
    free: Mutex<FreeList>,
    in_flight: AtomicUsize,
    /// Slots whose completion someone must reap without being asked: in flight with a
    /// registered waker (their future sleeps), or orphaned (their future is gone). While this
    /// is 0 the io_uring reaper thread can sleep outside the kernel and cost nothing.
    unattended: AtomicUsize,
    max_iovecs: usize,
}

impl Drop for Slots {
    fn drop(&mut self) {
        // Normally every slot is free by now (the driver's threads exit only when nothing is
        // in flight). If not (a driver thread died), the kernel may still own the buffers and
        // descriptors of in-flight slots: leak them rather than free memory it may write.
        for slot in self.slots.iter() {
            let mut slot = slot
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if matches!(slot.state, State::InFlight { .. } | State::Orphaned) {
                std::mem::forget(std::mem::take(&mut slot.bufs));
                std::mem::forget(slot.file.take());
                std::mem::forget(std::mem::take(&mut slot.iovecs.0));
            }
        }
    }
}

/// What a future's look at its slot found (`Slots::take_or_register`).
pub(crate) enum Look {
    /// The operation is over: its result and buffers.
    Done(Finished),
    /// Still in flight; nothing changed that the caller must act on (also when the waiter
    /// is a reactor's to reap for).
    Waiting,
    /// Still in flight, and the waiter became unattended: the caller must make sure the
    /// driver's reaper runs (`Engine::kick`).
    Unattended,
}

impl Look {
    /// The finished operation, if it is over.
    pub(crate) fn done(self) -> Option<Finished> {
        match self {
            Look::Done(f) => Some(f),
            _ => None,
        }
    }
}

/// The taken-back end of an operation: its result and its buffers.
pub(crate) struct Finished {
    pub(crate) res: i32,
    pub(crate) bufs: OpBufs,
}

impl Slots {
    pub(crate) fn new(count: usize, max_iovecs: usize) -> Slots {
        assert!(count > 0 && count <= u32::MAX as usize);
        let slots = (0..count)
            .map(|_| {
                Mutex::new(SlotInner {
                    generation: 0,
                    state: State::Free,
                    fd: sys::NO_HANDLE,
                    desc: OpDesc::Nop,
                    bufs: OpBufs::None,
                    file: None,
                    iovecs: IoVecs(Vec::with_capacity(max_iovecs)),
                    linked: false,
                    linked_write: None,
                    linked_sync: None,
                })
            })
            .collect();
        Slots {
            slots,
            free: Mutex::new(FreeList {
                free: (0..count as u32).rev().collect(),
                waiters: WaitQueue::with_capacity(count),
            }),
            in_flight: AtomicUsize::new(0),
            unattended: AtomicUsize::new(0),
            max_iovecs,
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.slots.len()
    }

    pub(crate) fn max_iovecs(&self) -> usize {
        self.max_iovecs
    }

    /// Slots not free (in flight, completed but not taken, or orphaned).
    pub(crate) fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Acquire)
    }

    /// See the `unattended` field.
    #[cfg(target_os = "linux")]
    pub(crate) fn unattended(&self) -> usize {
        self.unattended.load(Ordering::SeqCst)
    }

    /// A slot's contents. A panic elsewhere while a slot was locked (a user waker's code) does
    /// not stop completions: the state machine is updated in single assignments, so a poisoned
    /// lock still guards consistent contents.
    pub(crate) fn lock(&self, index: u32) -> MutexGuard<'_, SlotInner> {
        self.slots[index as usize]
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// A free slot, or `Pending` with the task queued (under `ticket`) to be woken when one is
    /// released (backpressure: no allocation, no failure).
    pub(crate) fn poll_acquire(&self, cx: &mut Context<'_>, ticket: &mut Option<u64>) -> Poll<u32> {
        let mut list = self.free.lock().unwrap();
        match list.free.pop() {
            Some(index) => {
                if let Some(t) = ticket.take() {
                    // Served (perhaps by a poll for another reason): leave the queue.
                    list.waiters.remove(t);
                }
                self.in_flight.fetch_add(1, Ordering::AcqRel);
                Poll::Ready(index)
            }
            None => {
                list.waiters.register(ticket, cx.waker());
                Poll::Pending
            }
        }
    }

    /// Returns a slot to the free list (its state must already be `Free`) and wakes one
    /// task waiting for a slot.
    pub(crate) fn release(&self, index: u32) {
        let waiter = {
            let mut list = self.free.lock().unwrap();
            list.free.push(index);
            self.in_flight.fetch_sub(1, Ordering::AcqRel);
            list.waiters.pop()
        };
        if let Some(w) = waiter {
            w.wake();
        }
    }

    /// A task queued under `ticket` stops waiting (dropped, or the driver closed). If its entry
    /// was already popped, the wake-up it consumed is passed on to the next waiter.
    pub(crate) fn cancel_wait(&self, ticket: u64) {
        let waiter = {
            let mut list = self.free.lock().unwrap();
            if list.waiters.remove(ticket) || list.free.is_empty() {
                // Still queued (no wake-up consumed), or no slot to hand out: the next
                // release wakes a waiter anyway.
                return;
            }
            list.waiters.pop()
        };
        if let Some(w) = waiter {
            w.wake();
        }
    }

    /// Wakes every task waiting for a slot (the driver was closed: they must see it).
    pub(crate) fn wake_all_waiters(&self) {
        let waiters = self.free.lock().unwrap().waiters.take_all();
        for (_, w) in waiters {
            w.wake();
        }
    }

    /// Resets an acquired slot's contents for a new operation. Returns its generation.
    pub(crate) fn arm(
        slot: &mut SlotInner,
        fd: RawHandle,
        desc: OpDesc,
        bufs: OpBufs,
        file: Arc<OwnedHandle>,
    ) -> u32 {
        debug_assert!(matches!(slot.state, State::Free));
        slot.state = State::InFlight {
            waker: None,
            served: false,
        };
        slot.fd = fd;
        slot.desc = desc;
        slot.bufs = bufs;
        slot.file = Some(file);
        slot.generation
    }

    /// Empties a slot whose operation is over and makes it `Free` (the caller then releases
    /// it). Returns the buffers and the file reference, to be dropped outside the lock.
    pub(crate) fn disarm(slot: &mut SlotInner) -> (OpBufs, Option<Arc<OwnedHandle>>) {
        slot.state = State::Free;
        slot.generation = slot.generation.wrapping_add(1);
        slot.desc = OpDesc::Nop;
        slot.iovecs.0.clear();
        slot.linked = false;
        slot.linked_write = None;
        slot.linked_sync = None;
        (std::mem::take(&mut slot.bufs), slot.file.take())
    }

    /// Records the completion of the write of a linked write + data sync pair. The operation
    /// completes when the sync's completion ([`Slots::complete`]) has arrived too: the kernel
    /// starts the sync after the write, but the two completions may be reaped in either order.
    pub(crate) fn complete_linked_write(&self, index: u32, generation: u32, res: i32) {
        let mut slot = self.lock(index);
        if slot.generation != generation || !slot.linked {
            debug_assert!(false, "stale linked write completion for slot {index}");
            return;
        }
        slot.linked_write = Some(res);
        if let Some(sync) = slot.linked_sync.take() {
            self.finish(slot, index, Slots::linked_result(res, sync));
        }
    }

    /// The result of a linked pair: the write's error, else the sync's error, else the bytes
    /// written, which are durable now.
    pub(crate) fn linked_result(write: i32, sync: i32) -> i32 {
        if write < 0 {
            write
        } else if sync < 0 {
            sync
        } else {
            write
        }
    }

    /// Records the completion `res` of the operation `(index, generation)` (for a linked pair,
    /// its sync's): wakes its future, or frees the slot if the future is gone. Stale
    /// completions are ignored.
    pub(crate) fn complete(&self, index: u32, generation: u32, res: i32) {
        let mut slot = self.lock(index);
        if slot.generation != generation {
            debug_assert!(false, "stale completion for slot {index}");
            return;
        }
        let res = if slot.linked {
            match slot.linked_write {
                Some(write) => Slots::linked_result(write, res),
                None => {
                    // The write's completion is still to be reaped: it finishes the slot.
                    slot.linked_sync = Some(res);
                    return;
                }
            }
        } else {
            res
        };
        self.finish(slot, index, res);
    }

    /// The operation of the locked `slot` is over with result `res`.
    fn finish(&self, mut slot: MutexGuard<'_, SlotInner>, index: u32, res: i32) {
        match std::mem::replace(&mut slot.state, State::Completed(res)) {
            State::InFlight { waker, served } => {
                drop(slot);
                if let Some(w) = waker {
                    if !served {
                        self.unattended.fetch_sub(1, Ordering::SeqCst);
                    }
                    w.wake();
                }
            }
            State::Orphaned => {
                self.unattended.fetch_sub(1, Ordering::SeqCst);
                let (bufs, file) = Slots::disarm(&mut slot);
                drop(slot);
                // The buffers return to their pool (or are freed) only now that the kernel is
                // done with them.
                drop(bufs);
                drop(file);
                self.release(index);
            }
            other => {
                slot.state = other;
                debug_assert!(
                    false,
                    "completion for slot {index} in state {:?}",
                    slot.state
                );
            }
        }
    }

    /// The future's side: takes the result if the operation is complete, else records the
    /// waker (when given). `served` is asked, under the slot's lock, when a waker is recorded
    /// for the first time or replaced by another task's: whether a reactor will reap for this
    /// waiter; if not, the driver's own reaper must (the waiter is unattended). Asking under
    /// the lock is what keeps a reactor's leave (`unserve_all`) from missing the waiter
    /// (`driver/reactor.rs`, rule 1). The caller must then act on the returned [`Look`].
    pub(crate) fn take_or_register(
        &self,
        index: u32,
        generation: u32,
        waker: Option<&Waker>,
        served: impl FnOnce() -> bool,
    ) -> Look {
        let mut slot = self.lock(index);
        debug_assert_eq!(slot.generation, generation);
        match &mut slot.state {
            State::Completed(res) => {
                let res = *res;
                let (bufs, file) = Slots::disarm(&mut slot);
                drop(slot);
                drop(file);
                self.release(index);
                Look::Done(Finished { res, bufs })
            }
            State::InFlight {
                waker: registered,
                served: was_served,
            } => {
                let Some(w) = waker else {
                    return Look::Waiting;
                };
                if let Some(r) = registered {
                    if r.will_wake(w) {
                        return Look::Waiting;
                    }
                }
                // A new waiter, or the future moved to another task: who reaps for it?
                let now_served = served();
                let first = registered.is_none();
                match registered {
                    Some(r) => r.clone_from(w),
                    None => *registered = Some(w.clone()),
                }
                let newly_unattended = !now_served && (first || *was_served);
                if now_served && !first && !*was_served {
                    self.unattended.fetch_sub(1, Ordering::SeqCst);
                }
                if newly_unattended {
                    self.unattended.fetch_add(1, Ordering::SeqCst);
                }
                *was_served = now_served;
                if newly_unattended {
                    Look::Unattended
                } else {
                    Look::Waiting
                }
            }
            State::Free | State::Orphaned => unreachable!("slot {index} taken twice"),
        }
    }

    /// Hands every waiter a reactor was serving to the driver's own reaper (the reactor left:
    /// its runtime shut down, or the driver did). Returns how many there were. (io_uring's
    /// reactors only: no other backend serves a waiter through a reactor.)
    #[cfg(target_os = "linux")]
    pub(crate) fn unserve_all(&self) -> usize {
        let mut moved = 0;
        for index in 0..self.slots.len() as u32 {
            let mut slot = self.lock(index);
            if let State::InFlight { served, .. } = &mut slot.state {
                if *served {
                    *served = false;
                    moved += 1;
                    self.unattended.fetch_add(1, Ordering::SeqCst);
                }
            }
        }
        moved
    }

    /// The future's side when it is dropped before taking its result. Returns `true` when the
    /// operation is still in flight and must be cancelled (the slot is now `Orphaned`).
    pub(crate) fn abandon(&self, index: u32, generation: u32) -> bool {
        let mut slot = self.lock(index);
        debug_assert_eq!(slot.generation, generation);
        match slot.state {
            State::Completed(_) => {
                let (bufs, file) = Slots::disarm(&mut slot);
                drop(slot);
                drop(bufs);
                drop(file);
                self.release(index);
                false
            }
            State::InFlight { ref waker, served } => {
                // An orphan is always the driver's own reaper's: the task that dropped it may
                // belong to a runtime that is no longer driven, and its slot and buffer are
                // held until the completion is reaped.
                if waker.is_none() || served {
                    self.unattended.fetch_add(1, Ordering::SeqCst);
                }
                slot.state = State::Orphaned;
                true
            }
            State::Free | State::Orphaned => unreachable!("slot {index} abandoned twice"),
        }
    }

    /// Takes back an operation that could not be submitted at all ("failed at once").
    pub(crate) fn unsubmit(&self, index: u32) -> OpBufs {
        let mut slot = self.lock(index);
        let (bufs, file) = Slots::disarm(&mut slot);
        drop(slot);
        drop(file);
        self.release(index);
        bufs
    }
}

#[cfg(all(test, not(directfile_loom)))]
mod tests {
    use super::*;

    /// Some open file (this test binary), as the slots hold one.
    fn fd() -> Arc<OwnedHandle> {
        let exe = std::fs::File::open(std::env::current_exe().unwrap()).unwrap();
        Arc::new(OwnedHandle::from(exe))
    }

    fn noop_cx() -> Context<'static> {
        Context::from_waker(Waker::noop())
    }

    /// Takes a free slot (there must be one).
    fn acquire(slots: &Slots) -> u32 {
        let Poll::Ready(i) = slots.poll_acquire(&mut noop_cx(), &mut None) else {
            panic!("no free slot")
        };
        i
    }

    /// Arms slot `i` with a no-op that owns `bufs`; returns its generation.
    fn arm(slots: &Slots, i: u32, bufs: OpBufs) -> u32 {
        Slots::arm(&mut slots.lock(i), sys::NO_HANDLE, OpDesc::Nop, bufs, fd())
    }

    /// One look at the slot, registering no waker: the result if the operation is over.
    fn look(slots: &Slots, i: u32, g: u32) -> Option<Finished> {
        slots.take_or_register(i, g, None, || false).done()
    }

    /// A waker that counts its wake-ups.
    struct Count(std::sync::atomic::AtomicUsize);
    impl std::task::Wake for Count {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        }
    }
    fn counting_waker() -> (Arc<Count>, Waker) {
        let count = Arc::new(Count(std::sync::atomic::AtomicUsize::new(0)));
        (count.clone(), Waker::from(count))
    }

    #[test]
    fn only_reads_and_plain_writes_complete_from_the_interrupt() {
        let write = |dsync, sync| OpDesc::Write {
            offset: 0,
            ptr: std::ptr::null(),
            len: 0,
            fixed: None,
            dsync,
            sync,
        };
        let writev = |dsync, sync| OpDesc::Writev {
            offset: 0,
            dsync,
            sync,
        };
        let read = OpDesc::Read {
            offset: 0,
            ptr: std::ptr::null_mut(),
            len: 0,
            fixed: None,
        };
        for desc in [OpDesc::Nop, read, write(false, false), writev(false, false)] {
            assert!(desc.completes_from_interrupt(), "{desc:?}");
        }
        for desc in [
            write(true, false),
            write(false, true),
            writev(true, false),
            writev(false, true),
            OpDesc::Fsync { datasync: true },
            OpDesc::Fallocate {
                mode: 0,
                offset: 0,
                len: 0,
            },
            OpDesc::Ftruncate { len: 0 },
        ] {
            assert!(!desc.completes_from_interrupt(), "{desc:?}");
        }
    }

    #[test]
    fn complete_then_take() {
        let slots = Slots::new(2, 4);
        let i = acquire(&slots);
        let g = arm(&slots, i, OpBufs::None);
        assert!(look(&slots, i, g).is_none());
        slots.complete(i, g, 7);
        let f = look(&slots, i, g).unwrap();
        assert_eq!(f.res, 7);
        assert_eq!(slots.in_flight(), 0);
        assert_eq!(slots.lock(i).generation, g + 1);
    }

    #[test]
    fn a_linked_pair_completes_with_both_halves_in_either_order() {
        let slots = Slots::new(1, 4);
        // Two OS errors (their values do not matter to the slot table).
        #[cfg(unix)]
        let (no_space, io_error) = (libc::ENOSPC, libc::EIO);
        #[cfg(windows)]
        let (no_space, io_error) = (
            windows_sys::Win32::Foundation::ERROR_DISK_FULL as i32,
            windows_sys::Win32::Foundation::ERROR_IO_DEVICE as i32,
        );
        for (write, sync, sync_first, expected) in [
            (4096, 0, false, 4096),
            (4096, 0, true, 4096),
            (2048, 0, true, 2048),
            (-no_space, 0, false, -no_space),
            (4096, -io_error, true, -io_error),
            (-io_error, -sys::CANCELED, false, -io_error),
        ] {
            let i = acquire(&slots);
            let g = {
                let mut slot = slots.lock(i);
                let g = Slots::arm(&mut slot, sys::NO_HANDLE, OpDesc::Nop, OpBufs::None, fd());
                slot.linked = true;
                g
            };
            if sync_first {
                slots.complete(i, g, sync);
                assert!(look(&slots, i, g).is_none(), "half done");
                slots.complete_linked_write(i, g, write);
            } else {
                slots.complete_linked_write(i, g, write);
                assert!(look(&slots, i, g).is_none(), "half done");
                slots.complete(i, g, sync);
            }
            let f = look(&slots, i, g).unwrap();
            assert_eq!(f.res, expected, "write {write} sync {sync}");
            assert_eq!(slots.in_flight(), 0);
            assert!(!slots.lock(i).linked, "disarmed");
        }
    }

    #[test]
    fn orphan_frees_on_completion_and_returns_buffer() {
        let slots = Slots::new(1, 4);
        let i = acquire(&slots);
        let pool = crate::BufPool::unregistered(1, 512, 512);
        let buf = pool.try_get().unwrap();
        let g = arm(&slots, i, OpBufs::One(buf));
        assert!(slots.abandon(i, g));
        // The kernel still owns the buffer: it must not be back in the pool yet.
        assert_eq!(pool.available(), 0);
        assert_eq!(slots.in_flight(), 1);
        slots.complete(i, g, -sys::CANCELED);
        assert_eq!(pool.available(), 1);
        assert_eq!(slots.in_flight(), 0);
    }

    #[test]
    fn full_table_queues_waiters_and_release_wakes_one() {
        use std::sync::atomic::Ordering;
        let (count, waker) = counting_waker();
        let slots = Slots::new(1, 4);
        let i = acquire(&slots);
        let mut ticket = None;
        assert!(slots
            .poll_acquire(&mut Context::from_waker(&waker), &mut ticket)
            .is_pending());
        let g = arm(&slots, i, OpBufs::None);
        slots.complete(i, g, 0);
        assert_eq!(count.0.load(Ordering::SeqCst), 0);
        look(&slots, i, g).unwrap();
        assert_eq!(count.0.load(Ordering::SeqCst), 1);
        assert!(slots.poll_acquire(&mut noop_cx(), &mut ticket).is_ready());
    }

    #[test]
    fn a_waiter_that_gives_up_does_not_strand_the_next_one() {
        use std::sync::atomic::Ordering;
        let ((x_count, x_waker), (y_count, y_waker)) = (counting_waker(), counting_waker());
        let slots = Slots::new(1, 4);
        let i = acquire(&slots);
        let (mut x, mut y) = (None, None);
        assert!(slots
            .poll_acquire(&mut Context::from_waker(&x_waker), &mut x)
            .is_pending());
        assert!(slots
            .poll_acquire(&mut Context::from_waker(&y_waker), &mut y)
            .is_pending());
        // X gives up (dropped, or lost a select!) before any slot is free.
        slots.cancel_wait(x.unwrap());
        let g = arm(&slots, i, OpBufs::None);
        slots.complete(i, g, 0);
        look(&slots, i, g).unwrap();
        assert_eq!(
            x_count.0.load(Ordering::SeqCst),
            0,
            "the stale waiter is not woken"
        );
        assert_eq!(y_count.0.load(Ordering::SeqCst), 1, "the live waiter is");
        // X had been popped and gives up: the wake-up goes on to the next.
        let mut z = None;
        let Poll::Ready(j) = slots.poll_acquire(&mut noop_cx(), &mut y) else {
            panic!()
        };
        assert!(slots
            .poll_acquire(&mut Context::from_waker(&x_waker), &mut z)
            .is_pending());
        let g = arm(&slots, j, OpBufs::None);
        slots.complete(j, g, 0);
        let mut w = None;
        assert!(slots
            .poll_acquire(&mut Context::from_waker(&y_waker), &mut w)
            .is_pending());
        look(&slots, j, g).unwrap(); // release pops z (x_waker)
        assert_eq!(x_count.0.load(Ordering::SeqCst), 1);
        slots.cancel_wait(z.unwrap()); // z will not use it: w must be woken
        assert_eq!(y_count.0.load(Ordering::SeqCst), 2);
    }
}

/// Model checks of the slot state machine: every interleaving of a future (take, register its
/// waker, or drop) with the driver's completion, within loom's bounds.
///
/// Run with `RUSTFLAGS="--cfg directfile_loom" cargo test -p directfile --release --lib loom`.
#[cfg(all(test, directfile_loom))]
mod loom_model {
    use super::*;
    use loom::sync::atomic::AtomicUsize as LoomCount;

    /// Some open file (this test binary), as the slots hold one.
    fn fd() -> Arc<OwnedHandle> {
        let exe = std::fs::File::open(std::env::current_exe().unwrap()).unwrap();
        Arc::new(OwnedHandle::from(exe))
    }

    /// A waker that counts its wake-ups in a loom-tracked atomic.
    struct CountWake(LoomCount);
    impl std::task::Wake for CountWake {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    fn armed_slot(slots: &Slots, bufs: OpBufs) -> (u32, u32) {
        let Poll::Ready(i) = slots.poll_acquire(&mut Context::from_waker(Waker::noop()), &mut None)
        else {
            panic!("a fresh table has a free slot")
        };
        let g = Slots::arm(&mut slots.lock(i), sys::NO_HANDLE, OpDesc::Nop, bufs, fd());
        (i, g)
    }

    /// Completion races with the future's poll: the future gets the result exactly once,
    /// either at once or after exactly one wake-up, and the slot ends free.
    #[test]
    fn loom_complete_races_with_poll() {
        loom::model(|| {
            let slots = Arc::new(Slots::new(1, 1));
            let (i, g) = armed_slot(&slots, OpBufs::None);
            let counter = Arc::new(CountWake(LoomCount::new(0)));
            let waker = Waker::from(counter.clone());
            let s2 = slots.clone();
            let completer = loom::thread::spawn(move || s2.complete(i, g, 42));
            let first = slots.take_or_register(i, g, Some(&waker), || false).done();
            completer.join().unwrap();
            let res = match first {
                Some(f) => {
                    // Completed before we registered: no wake-up was needed.
                    assert_eq!(counter.0.load(Ordering::SeqCst), 0);
                    f.res
                }
                None => {
                    // We registered first: the completion must have woken us.
                    assert_eq!(counter.0.load(Ordering::SeqCst), 1);
                    slots
                        .take_or_register(i, g, None, || false)
                        .done()
                        .expect("completed")
                        .res
                }
            };
            assert_eq!(res, 42);
            assert_eq!(slots.in_flight(), 0);
        });
    }

    /// The future is dropped while the completion arrives: the buffer is released exactly once
    /// and never before the completion, and the slot ends free.
    #[test]
    fn loom_drop_races_with_completion() {
        loom::model(|| {
            let slots = Arc::new(Slots::new(1, 1));
            let pool = crate::BufPool::unregistered(1, 512, 512);
            let (i, g) = armed_slot(&slots, OpBufs::One(pool.try_get().unwrap()));
            let completed = Arc::new(loom::sync::atomic::AtomicBool::new(false));
            let (s2, c2) = (slots.clone(), completed.clone());
            let completer = loom::thread::spawn(move || {
                c2.store(true, Ordering::SeqCst);
                s2.complete(i, g, -sys::CANCELED);
            });
            let must_cancel = slots.abandon(i, g);
            if must_cancel {
                // Still in flight when dropped: the buffer is not back until completion.
                assert!(pool.available() == 0 || completed.load(Ordering::SeqCst));
            }
            completer.join().unwrap();
            assert_eq!(pool.available(), 1);
            assert_eq!(slots.in_flight(), 0);
            assert!(matches!(slots.lock(i).state, State::Free));
        });
    }

    /// A linked write + sync pair whose two completions are recorded by two threads (in
    /// either order) while the future polls or is dropped: the result, combined from both
    /// halves, is taken exactly once; the buffer is released once, and only after both halves.
    #[test]
    fn loom_linked_halves_race_with_poll_and_drop() {
        loom::model(|| {
            let slots = Arc::new(Slots::new(1, 1));
            let pool = crate::BufPool::unregistered(1, 512, 512);
            let (i, g) = armed_slot(&slots, OpBufs::One(pool.try_get().unwrap()));
            slots.lock(i).linked = true;
            let halves = Arc::new(LoomCount::new(0));
            let (s2, h2) = (slots.clone(), halves.clone());
            let write = loom::thread::spawn(move || {
                h2.fetch_add(1, Ordering::SeqCst);
                s2.complete_linked_write(i, g, 512);
            });
            let (s3, h3) = (slots.clone(), halves.clone());
            let sync = loom::thread::spawn(move || {
                h3.fetch_add(1, Ordering::SeqCst);
                s3.complete(i, g, 0);
            });
            let counter = Arc::new(CountWake(LoomCount::new(0)));
            let waker = Waker::from(counter.clone());
            match slots.take_or_register(i, g, Some(&waker), || false).done() {
                Some(f) => {
                    assert_eq!(f.res, 512);
                    assert_eq!(halves.load(Ordering::SeqCst), 2, "both halves were in");
                    drop(f);
                }
                None => {
                    if slots.abandon(i, g) {
                        // Dropped in flight: the buffer stays with the slot until both halves.
                        assert!(pool.available() == 0 || halves.load(Ordering::SeqCst) == 2);
                    }
                }
            }
            write.join().unwrap();
            sync.join().unwrap();
            if let State::Completed(res) = slots.lock(i).state {
                assert_eq!(res, 512);
                assert_eq!(counter.0.load(Ordering::SeqCst), 1, "woken once");
                slots
                    .take_or_register(i, g, None, || false)
                    .done()
                    .expect("completed");
            }
            assert_eq!(pool.available(), 1);
            assert_eq!(slots.in_flight(), 0);
        });
    }

    /// Two tasks compete for one slot: the loser waits (backpressure) and is woken by the
    /// release; no wake-up is lost.
    #[test]
    fn loom_backpressure_wakes_the_waiter() {
        loom::model(|| {
            let slots = Arc::new(Slots::new(1, 1));
            let (i, g) = armed_slot(&slots, OpBufs::None);
            let counter = Arc::new(CountWake(LoomCount::new(0)));
            let waker = Waker::from(counter.clone());
            let s2 = slots.clone();
            let owner = loom::thread::spawn(move || {
                s2.complete(i, g, 0);
                s2.take_or_register(i, g, None, || false)
                    .done()
                    .expect("completed");
            });
            let mut ticket = None;
            let got = slots.poll_acquire(&mut Context::from_waker(&waker), &mut ticket);
            owner.join().unwrap();
            match got {
                Poll::Ready(_) => assert_eq!(slots.in_flight(), 1),
                Poll::Pending => {
                    assert_eq!(
                        counter.0.load(Ordering::SeqCst),
                        1,
                        "release woke the waiter"
                    );
                    let again = slots.poll_acquire(&mut Context::from_waker(&waker), &mut ticket);
                    assert!(again.is_ready());
                }
            }
        });
    }
}
