//! The Windows backend: an I/O completion port. The only module that makes overlapped calls.
//!
//! Each slot of the table has its `OVERLAPPED` here, in a fixed array made with the driver
//! (`SlotOverlapped`, `#[repr(C)]` with the `OVERLAPPED` first): the address the kernel hands
//! back in a packet is the slot's, so `(address - base) / size` is the slot's index, and the
//! generation stored beside the `OVERLAPPED` is the operation's. Nothing is allocated per
//! operation.
//!
//! A file is bound to the port when it is opened (`bind`), with
//! `FILE_SKIP_COMPLETION_PORT_ON_SUCCESS | FILE_SKIP_SET_EVENT_ON_HANDLE`, so every
//! `ReadFile`/`WriteFile` ends in one of three ways, each handled in `start_calls`:
//!
//! - **completed at once** (TRUE): no packet will come; the slot is completed on the calling
//!   thread, so the future's first look finds the result and registers no waker;
//! - **failed at once** (FALSE, error other than `ERROR_IO_PENDING`): no packet either;
//!   `submit` returns the error and the future hands back the buffer (the slot is freed);
//! - **pending** (`ERROR_IO_PENDING`): the packet completes the slot and wakes the future.
//!
//! Dropping a future in flight calls `CancelIoEx(handle, &overlapped)` with the slot locked
//! (so the `OVERLAPPED` cannot have been reused by another operation); the slot keeps the
//! buffer until the packet (`ERROR_OPERATION_ABORTED`, or the I/O's own result) arrives.
//!
//! Who dequeues packets: a reaper thread always waits in the port (a thread blocked in
//! `GetQueuedCompletionStatusEx` costs nothing), and so does every thread in
//! `Driver::block_on` between polls; the port hands each packet to one of them (the last to
//! wait first), and whoever gets it completes the slot and wakes its future, on any executor.
//! A `block_on` thread's waker interrupts its wait with a user APC (the wait is alertable).
//!
//! Operations without an overlapped form (`FlushFileBuffers`, allocation, length) run on a
//! small pool of worker threads, the thread-pool backend's (`threads.rs`).
//!
//! A write of a file whose [`SyncStrategy`](crate::SyncStrategy) is `ExplicitSync` is two
//! steps in one slot: the overlapped write as above, then, once it is over and wrote
//! something, `FlushFileBuffers` on a worker (`flush_after_write`). The slot is then a linked
//! operation (`SlotInner::linked`, as io_uring's write + fsync pair): its result is the
//! write's byte count once the flush succeeded, or the flush's error. The caller's thread
//! never waits for the flush.
//!
//! The calls that decide an operation's outcome go through [`Calls`], so tests can make the
//! outcomes that Wine never produces (it finishes file I/O inside the call, yet reports it
//! pending; it never completes at once nor refuses misaligned unbuffered I/O).
#![allow(unsafe_code)]

use super::threads::Threads;
use super::{Engine, Shared, Submission};
use crate::op::slot::{OpDesc, SlotInner, State};
use crate::sync::{AtomicBool, Ordering};
use crate::sys::{self, IoVec, Owned, RawHandle};
use crate::{Error, Result};
use std::cell::UnsafeCell;
use std::io;
use std::sync::Arc;
use windows_sys::Win32::Foundation::{
    RtlNtStatusToDosError, DUPLICATE_SAME_ACCESS, ERROR_GEN_FAILURE, ERROR_HANDLE_EOF,
    ERROR_IO_PENDING, ERROR_MORE_DATA, INVALID_HANDLE_VALUE, WAIT_IO_COMPLETION, WAIT_TIMEOUT,
};
use windows_sys::Win32::Storage::FileSystem::{
    ReadFile, SetFileCompletionNotificationModes, WriteFile,
};
use windows_sys::Win32::System::Threading::{
    GetCurrentProcess, GetCurrentThread, QueueUserAPC, INFINITE,
};
use windows_sys::Win32::System::WindowsProgramming::{
    FILE_SKIP_COMPLETION_PORT_ON_SUCCESS, FILE_SKIP_SET_EVENT_ON_HANDLE,
};
use windows_sys::Win32::System::IO::{
    CancelIoEx, CreateIoCompletionPort, GetQueuedCompletionStatusEx, PostQueuedCompletionStatus,
    OVERLAPPED, OVERLAPPED_ENTRY,
};

/// Completion key of the files bound to the port.
const KEY_FILE: usize = 1;
/// Completion key of the packets that only end a wait (shutdown, `nudge`).
const KEY_WAKE: usize = 2;
/// Packets dequeued per `GetQueuedCompletionStatusEx`.
const BATCH: usize = 64;
/// Workers for the operations without an overlapped form.
const BLOCKING_WORKERS: usize = 2;

/// One overlapped call, as the slot describes it.
#[derive(Clone, Copy, Debug)]
pub(crate) enum IoCall {
    /// `ReadFile(handle, ptr, len, NULL, overlapped)` at the overlapped's offset.
    Read {
        handle: RawHandle,
        ptr: *mut u8,
        len: u32,
    },
    /// `WriteFile(handle, ptr, len, NULL, overlapped)` at the overlapped's offset.
    Write {
        handle: RawHandle,
        ptr: *const u8,
        len: u32,
    },
}

/// The calls that start overlapped I/O: the real ones ([`Win32`]) unless a test puts in
/// others (the seam through which the three outcomes are tested under Wine).
pub(crate) trait Calls: Send + Sync + 'static {
    /// Starts `call`. Returns what the call returned: `Ok(())` for TRUE (completed at once:
    /// the `OVERLAPPED` then holds the status in `Internal` and the byte count in
    /// `InternalHigh`, and no packet will be queued), `Err(GetLastError())` for FALSE.
    ///
    /// # Safety
    /// The buffer of `call` and `overlapped` must stay valid until the I/O is over (its
    /// packet dequeued, or the call's return if it did not pend); `overlapped` holds the
    /// offset and zeroed status fields.
    unsafe fn start(
        &self,
        call: IoCall,
        overlapped: *mut OVERLAPPED,
    ) -> std::result::Result<(), u32>;
}

/// The real calls.
pub(crate) struct Win32;

impl Calls for Win32 {
    unsafe fn start(
        &self,
        call: IoCall,
        overlapped: *mut OVERLAPPED,
    ) -> std::result::Result<(), u32> {
        // SAFETY: the caller guarantees the buffer and the OVERLAPPED for the whole I/O.
        // `NULL` for the byte count, as Microsoft asks for overlapped calls: the count is in
        // the OVERLAPPED (at once) or the packet (pending).
        let ok = unsafe {
            match call {
                IoCall::Read { handle, ptr, len } => {
                    ReadFile(handle, ptr, len, std::ptr::null_mut(), overlapped)
                }
                IoCall::Write { handle, ptr, len } => {
                    WriteFile(handle, ptr, len, std::ptr::null_mut(), overlapped)
                }
            }
        };
        if ok != 0 {
            Ok(())
        } else {
            Err(sys::last_error())
        }
    }
}

#[cfg(test)]
thread_local! {
    /// The calls the next driver built on this thread makes (tests only).
    pub(crate) static CALLS_FOR_NEXT_DRIVER: std::cell::Cell<Option<&'static dyn Calls>> =
        const { std::cell::Cell::new(None) };
}

/// What one overlapped call came to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// TRUE: done, with this many bytes; no packet.
    Completed(u32),
    /// FALSE with this error: nothing happened and no packet will come.
    Failed(u32),
    /// `ERROR_IO_PENDING`: the packet will say.
    Pending,
}

/// Classifies a call's return. A read at or past the end of the file that fails at once with
/// `ERROR_HANDLE_EOF` read 0 bytes. `ERROR_MORE_DATA` (a message-mode pipe's partial read) is
/// a warning status, for which a packet is queued although the call returned FALSE: it is
/// treated as pending so that the packet, not the call, completes the slot. `transferred`
/// reads the byte count from the OVERLAPPED; it is called only for a call that returned TRUE,
/// since on any other return the kernel may still be writing the OVERLAPPED.
pub(crate) fn outcome(
    ret: std::result::Result<(), u32>,
    transferred: impl FnOnce() -> u32,
    read: bool,
) -> Outcome {
    match ret {
        Ok(()) => Outcome::Completed(transferred()),
        Err(ERROR_IO_PENDING | ERROR_MORE_DATA) => Outcome::Pending,
        Err(ERROR_HANDLE_EOF) if read => Outcome::Completed(0),
        Err(e) => Outcome::Failed(e),
    }
}

/// What the slot's operation is, for the port.
#[derive(Clone, Copy, Debug)]
enum Op {
    Read {
        offset: u64,
        ptr: *mut u8,
        len: u32,
    },
    Write {
        offset: u64,
        ptr: *const u8,
        len: u32,
    },
    /// The slot's buffers (`iov`, `count`) written one after the other from `offset`.
    Writev {
        offset: u64,
        iov: *const IoVec,
        count: u32,
    },
    /// A packet posted to the port (`PostQueuedCompletionStatus`), completing with 0.
    Nop,
    /// Run by a worker thread.
    Blocking,
}

/// A slot's `OVERLAPPED` and what the port needs to finish its operation. `#[repr(C)]` with
/// the `OVERLAPPED` first: the packet's pointer is this struct's address.
#[repr(C)]
struct SlotOverlapped {
    raw: OVERLAPPED,
    generation: u32,
    handle: RawHandle,
    op: Op,
    /// A vectored write: the next buffer to write and the bytes written so far.
    next: u32,
    written: u32,
    /// A write followed by `FlushFileBuffers` (`SyncStrategy::ExplicitSync`).
    flush_after: bool,
}

/// How far an operation got after its calls returned.
enum Step {
    /// A call pends: its packet continues.
    Pending,
    /// Over, with this result (bytes, or a negative Win32 error).
    Done(i32),
    /// The first call failed at once: nothing was done.
    FailedAtOnce(u32),
}

pub(crate) struct Iocp {
    port: Owned,
    /// One per slot, never moved (a boxed slice made once). A slot's entry is written only
    /// while no call is in flight on it: in `prepare` (slot armed, locked), and by whoever
    /// owns the operation's next step (the submitter until a call pends, then the thread
    /// that dequeued its packet).
    overlapped: Box<[UnsafeCell<SlotOverlapped>]>,
    blocking: Threads,
    calls: &'static dyn Calls,
    /// Packets of file operations dispatched (tests: a completion at once must post none).
    #[cfg(test)]
    packets: std::sync::atomic::AtomicUsize,
}

// SAFETY: the raw pointers in the overlapped table point into buffers owned by the slots; the
// entries are accessed under the protocol described on `overlapped`.
unsafe impl Send for Iocp {}
// SAFETY: as above.
unsafe impl Sync for Iocp {}

/// A `BOOL` call's failure as an `io::Error`.
fn check(ok: i32, what: &str) -> io::Result<()> {
    sys::check(ok).map_err(|e| io::Error::new(e.kind(), format!("{what}: {e}")))
}

impl Iocp {
    /// Makes the port and the slots' `OVERLAPPED`s.
    pub(crate) fn new(slots: usize) -> std::result::Result<Iocp, String> {
        // No concurrency limit (`u32::MAX`): the port would otherwise hold packets back while
        // as many of its threads run as there are processors, and a `block_on` thread that
        // computes would count as one.
        // SAFETY: creates a new port: no file handle, no existing port.
        let port = unsafe {
            CreateIoCompletionPort(INVALID_HANDLE_VALUE, std::ptr::null_mut(), 0, u32::MAX)
        };
        if port.is_null() {
            return Err(format!(
                "CreateIoCompletionPort failed: {}",
                io::Error::last_os_error()
            ));
        }
        let overlapped = (0..slots)
            .map(|_| {
                UnsafeCell::new(SlotOverlapped {
                    raw: OVERLAPPED::default(),
                    generation: 0,
                    handle: sys::NO_HANDLE,
                    op: Op::Nop,
                    next: 0,
                    written: 0,
                    flush_after: false,
                })
            })
            .collect();
        #[cfg(test)]
        let calls = CALLS_FOR_NEXT_DRIVER.with(|c| c.take()).unwrap_or(&Win32);
        #[cfg(not(test))]
        let calls: &'static dyn Calls = &Win32;
        Ok(Iocp {
            port: Owned(port),
            overlapped,
            blocking: Threads::new(slots, BLOCKING_WORKERS),
            calls,
            #[cfg(test)]
            packets: std::sync::atomic::AtomicUsize::new(0),
        })
    }

    pub(crate) fn blocking(&self) -> &Threads {
        &self.blocking
    }

    /// Binds a file to the port, with completion packets skipped for calls that complete at
    /// once.
    pub(crate) fn bind(&self, handle: RawHandle) -> io::Result<()> {
        // SAFETY: `handle` is an open file handle; the port is ours and open.
        let port = unsafe { CreateIoCompletionPort(handle, self.port.0, KEY_FILE, 0) };
        if port.is_null() {
            return Err(io::Error::new(
                io::Error::last_os_error().kind(),
                format!(
                    "binding the file to the completion port: {}",
                    io::Error::last_os_error()
                ),
            ));
        }
        let modes = (FILE_SKIP_COMPLETION_PORT_ON_SUCCESS | FILE_SKIP_SET_EVENT_ON_HANDLE) as u8;
        // SAFETY: plain call on an open handle.
        check(
            unsafe { SetFileCompletionNotificationModes(handle, modes) },
            "SetFileCompletionNotificationModes(FILE_SKIP_COMPLETION_PORT_ON_SUCCESS)",
        )
    }

    /// Starts the reaper thread and the workers.
    pub(crate) fn start(&self, shared: &Arc<Shared>) -> io::Result<()> {
        self.blocking.start(shared)?;
        let shared = Arc::clone(shared);
        std::thread::Builder::new()
            .name("directfile-reaper".into())
            .spawn(move || {
                let _abort = super::AbortOnUnwind;
                let Engine::Iocp(iocp) = &shared.engine else {
                    unreachable!()
                };
                let mut entries = [OVERLAPPED_ENTRY::default(); BATCH];
                loop {
                    let shut_down = shared.is_shut_down();
                    if shut_down && shared.slots.in_flight() == 0 {
                        break;
                    }
                    // After shutdown, operations still in flight may finish on a worker (no
                    // packet): look at the count again every 10 ms.
                    let timeout = if shut_down { 10 } else { INFINITE };
                    iocp.wait(&shared, &mut entries, timeout, false);
                }
                // `shared` (and with it the port) is dropped here, after the last completion.
            })?;
        Ok(())
    }

    /// Posts a packet that ends one thread's wait in the port.
    pub(crate) fn wake_reaper(&self) {
        // SAFETY: a packet without an OVERLAPPED to our open port.
        unsafe { PostQueuedCompletionStatus(self.port.0, 0, KEY_WAKE, std::ptr::null()) };
    }

    pub(crate) fn shutdown(&self) {
        self.blocking.shutdown();
        self.wake_reaper();
    }

    fn entry(&self, index: u32) -> *mut SlotOverlapped {
        self.overlapped[index as usize].get()
    }

    /// The slot index of an `OVERLAPPED` pointer from a packet.
    fn index_of(&self, overlapped: *mut OVERLAPPED) -> u32 {
        let base = self.overlapped.as_ptr() as usize;
        let offset = (overlapped as usize).wrapping_sub(base);
        let size = size_of::<UnsafeCell<SlotOverlapped>>();
        assert!(
            offset % size == 0 && offset / size < self.overlapped.len(),
            "a packet for an OVERLAPPED that is not a slot's"
        );
        (offset / size) as u32
    }

    /// Fills the slot's `OVERLAPPED` entry for the armed slot (called with the slot locked).
    pub(crate) fn prepare(&self, slot: &SlotInner, index: u32, generation: u32) -> Submission {
        let flush_after = matches!(
            slot.desc,
            OpDesc::Write { sync: true, .. } | OpDesc::Writev { sync: true, .. }
        );
        let op = match slot.desc {
            OpDesc::Nop => Op::Nop,
            OpDesc::Write {
                offset, ptr, len, ..
            } => Op::Write { offset, ptr, len },
            OpDesc::Read {
                offset, ptr, len, ..
            } => Op::Read { offset, ptr, len },
            OpDesc::Writev { offset, .. } => Op::Writev {
                offset,
                iov: slot.iovecs.0.as_ptr(),
                count: slot.iovecs.0.len() as u32,
            },
            OpDesc::Fsync { .. } | OpDesc::Fallocate { .. } | OpDesc::Ftruncate { .. } => {
                Op::Blocking
            }
        };
        // SAFETY: the slot is armed and locked and its operation not yet submitted, so no
        // call is in flight on this entry and no other thread touches it.
        unsafe {
            self.entry(index).write(SlotOverlapped {
                raw: OVERLAPPED::default(),
                generation,
                handle: slot.fd,
                op,
                next: 0,
                written: 0,
                flush_after,
            })
        };
        Submission::Iocp { index, generation }
    }

    /// Starts a prepared operation. An error means it failed at once: nothing was done.
    pub(crate) fn submit(&self, shared: &Shared, index: u32, generation: u32) -> Result<()> {
        let entry = self.entry(index);
        // SAFETY: prepared and not yet started: this thread owns the entry (`overlapped`).
        let op = unsafe { (*entry).op };
        match op {
            Op::Blocking => self.blocking.submit(index, generation),
            Op::Nop => {
                // SAFETY: our open port; the entry stays valid until its packet is dequeued
                // (the slot is in flight until then).
                let ok = unsafe {
                    PostQueuedCompletionStatus(self.port.0, 0, KEY_FILE, entry.cast::<OVERLAPPED>())
                };
                sys::check(ok).map_err(Error::Io)
            }
            // SAFETY: as above; the slot keeps the buffers until the operation is over.
            _ => match unsafe { self.start_calls(entry) } {
                Step::Pending => Ok(()),
                Step::Done(res) => {
                    // Completed at once: recorded here, so the future's first look finds it
                    // (or, for a write to be flushed, handed to a worker).
                    // SAFETY: no call pends on the entry: still this thread's.
                    unsafe { self.calls_done(shared, entry, index, generation, res) };
                    Ok(())
                }
                Step::FailedAtOnce(code) => Err(Error::from_errno(code as i32)),
            },
        }
    }

    /// Makes the operation's next call, and the one after while they complete at once (a
    /// vectored write's buffers). Returns when a call pends, fails, or the operation is over.
    ///
    /// # Safety
    /// The calling thread owns `entry` (`overlapped`'s protocol), and the slot keeps the
    /// buffers the entry points to until the operation is over. After `Step::Pending` the
    /// caller must not touch the entry: the packet may be handled already.
    unsafe fn start_calls(&self, entry: *mut SlotOverlapped) -> Step {
        loop {
            // SAFETY: this thread owns the entry until a call pends (the caller's guarantee).
            let e = unsafe { &mut *entry };
            let (offset, call, read) = match e.op {
                Op::Read { offset, ptr, len } => (
                    offset,
                    IoCall::Read {
                        handle: e.handle,
                        ptr,
                        len,
                    },
                    true,
                ),
                Op::Write { offset, ptr, len } => (
                    offset,
                    IoCall::Write {
                        handle: e.handle,
                        ptr,
                        len,
                    },
                    false,
                ),
                Op::Writev { offset, iov, .. } => {
                    // SAFETY: `next < count` (checked in `advance`), within the slot's iovecs.
                    let buf = unsafe { *iov.add(e.next as usize) };
                    let call = IoCall::Write {
                        handle: e.handle,
                        ptr: buf.ptr,
                        len: buf.len as u32,
                    };
                    (offset + u64::from(e.written), call, false)
                }
                Op::Nop | Op::Blocking => unreachable!("not an overlapped call"),
            };
            e.raw = OVERLAPPED::default();
            e.raw.Anonymous.Anonymous.Offset = offset as u32;
            e.raw.Anonymous.Anonymous.OffsetHigh = (offset >> 32) as u32;
            let raw: *mut OVERLAPPED = &mut e.raw;
            // SAFETY: the slot keeps the buffer; the entry lives as long as the driver, which
            // outlives every operation.
            let ret = unsafe { self.calls.start(call, raw) };
            let outcome = outcome(
                ret,
                // SAFETY: `outcome` calls this only after a TRUE return: the call is over and
                // no packet will come (FILE_SKIP_COMPLETION_PORT_ON_SUCCESS), so the kernel no
                // longer writes the OVERLAPPED; the field is read through the raw pointer, with
                // no reference to an OVERLAPPED that a pending call could be writing.
                || unsafe { (*raw).InternalHigh as u32 },
                read,
            );
            match outcome {
                Outcome::Pending => return Step::Pending,
                Outcome::Completed(bytes) => {
                    // SAFETY: nothing pends on the entry: still ours.
                    if let Some(res) = unsafe { Self::advance(entry, bytes) } {
                        return Step::Done(res);
                    }
                }
                Outcome::Failed(code) => {
                    // SAFETY: as above.
                    let written = unsafe { (*entry).written };
                    // A vectored write that wrote some buffers reports them, like pwritev.
                    return if written > 0 {
                        Step::Done(written as i32)
                    } else {
                        Step::FailedAtOnce(code)
                    };
                }
            }
        }
    }

    /// Records that the current call moved `bytes`. Returns the operation's result when it is
    /// over, `None` when a vectored write has a next buffer to write.
    ///
    /// # Safety
    /// The calling thread owns `entry`.
    unsafe fn advance(entry: *mut SlotOverlapped, bytes: u32) -> Option<i32> {
        // SAFETY: the caller owns the entry.
        let e = unsafe { &mut *entry };
        match e.op {
            Op::Writev { iov, count, .. } => {
                // SAFETY: `next < count`, within the slot's iovecs.
                let asked = unsafe { (*iov.add(e.next as usize)).len };
                e.written += bytes;
                e.next += 1;
                if bytes as usize == asked && e.next < count {
                    None
                } else {
                    Some(e.written as i32)
                }
            }
            _ => Some(bytes as i32),
        }
    }

    /// Handles one dequeued packet.
    fn dispatch(&self, shared: &Shared, packet: &OVERLAPPED_ENTRY) {
        if packet.lpCompletionKey != KEY_FILE {
            return; // a wake-up
        }
        let index = self.index_of(packet.lpOverlapped);
        #[cfg(test)]
        self.packets.fetch_add(1, Ordering::SeqCst);
        let entry = packet.lpOverlapped.cast::<SlotOverlapped>();
        // SAFETY: the packet is this entry's operation finishing its call: no call is in
        // flight on it any more, and this thread owns its next step.
        let (generation, status, op) = unsafe {
            (
                (*entry).generation,
                (*entry).raw.Internal as i32,
                (*entry).op,
            )
        };
        let res = if status >= 0 {
            // SAFETY: owned, as above.
            match unsafe { Self::advance(entry, packet.dwNumberOfBytesTransferred) } {
                Some(res) => res,
                // SAFETY: owned, as above; the slot keeps the buffers while in flight.
                None => match unsafe { self.start_calls(entry) } {
                    Step::Pending => return,
                    Step::Done(res) => res,
                    Step::FailedAtOnce(code) => -(code as i32),
                },
            }
        } else {
            // SAFETY: a pure conversion of a status code.
            let code = unsafe { RtlNtStatusToDosError(status) };
            // SAFETY: owned, as above.
            let written = unsafe { (*entry).written };
            match op {
                Op::Read { .. } if code == ERROR_HANDLE_EOF => 0,
                Op::Writev { .. } if written > 0 && code as i32 != sys::CANCELED => written as i32,
                _ => -(code as i32),
            }
        };
        // SAFETY: the operation's calls are over: this thread owns the entry.
        unsafe { self.calls_done(shared, entry, index, generation, res) };
    }

    /// The operation's overlapped calls are over with `res`: a write to be flushed
    /// (`flush_after`) that wrote something goes on to its flush, everything else completes.
    ///
    /// # Safety
    /// The calling thread owns `entry` (no call pends on it), the entry of slot `index`.
    unsafe fn calls_done(
        &self,
        shared: &Shared,
        entry: *mut SlotOverlapped,
        index: u32,
        generation: u32,
        res: i32,
    ) {
        // SAFETY: owned (the caller's guarantee).
        let (flush_after, handle) = unsafe { ((*entry).flush_after, (*entry).handle) };
        if flush_after && res >= 0 {
            // SAFETY: as above.
            unsafe { self.flush_after_write(shared, entry, index, generation, res, handle) };
        } else {
            shared.complete(index, generation, res);
        }
    }

    /// Runs `FlushFileBuffers` after a write that moved `written` bytes, on a worker: the slot
    /// becomes a linked operation, as io_uring's write + fsync pair, whose write half is
    /// recorded here (through the fault plan, when there is one) and whose sync half is the
    /// worker's job (`Slots` combines them, in either order); its `OVERLAPPED` entry says
    /// `Blocking`, so that a cancellation withdraws the queued flush.
    ///
    /// # Safety
    /// As [`Iocp::calls_done`].
    unsafe fn flush_after_write(
        &self,
        shared: &Shared,
        entry: *mut SlotOverlapped,
        index: u32,
        generation: u32,
        written: i32,
        handle: RawHandle,
    ) {
        {
            let mut slot = shared.slots.lock(index);
            debug_assert_eq!(
                slot.generation, generation,
                "the slot is ours until completed"
            );
            // SAFETY: the entry is this thread's, and `op` is written under the slot lock,
            // which `cancel` holds while it reads `op`.
            unsafe { std::ptr::addr_of_mut!((*entry).op).write(Op::Blocking) };
            slot.desc = OpDesc::Fsync { datasync: true };
            slot.linked = true;
        }
        shared.complete_linked_write(index, generation, written);
        if self.blocking.submit(index, generation).is_err() {
            // The driver is shutting down (its workers take no new job), so nobody awaits
            // this operation any more; it is still flushed, here, as promised.
            let res = match sys::flush(handle) {
                Ok(()) => 0,
                Err(e) => -e.raw_os_error().unwrap_or(ERROR_GEN_FAILURE as i32),
            };
            shared.complete(index, generation, res);
        }
    }

    /// Waits in the port (up to `timeout` ms; alertable for a `block_on` thread, whose waker
    /// queues an APC) and records the completions of the packets it dequeues, up to `BATCH`.
    fn wait(
        &self,
        shared: &Shared,
        entries: &mut [OVERLAPPED_ENTRY; BATCH],
        timeout: u32,
        alertable: bool,
    ) {
        let mut count = 0u32;
        // SAFETY: `entries` is writable for BATCH entries; the port is open.
        let ok = unsafe {
            GetQueuedCompletionStatusEx(
                self.port.0,
                entries.as_mut_ptr(),
                BATCH as u32,
                &mut count,
                timeout,
                alertable as i32,
            )
        };
        if ok == 0 {
            match sys::last_error() {
                WAIT_TIMEOUT | WAIT_IO_COMPLETION => return,
                e => panic!(
                    "GetQueuedCompletionStatusEx failed: {}",
                    io::Error::from_raw_os_error(e as i32)
                ),
            }
        }
        for packet in &entries[..count as usize] {
            self.dispatch(shared, packet);
        }
    }

    /// Asks for an orphaned operation to be cancelled: `CancelIoEx` on its call, or the
    /// withdrawal of its queued job. Its completion (the packet, with
    /// `ERROR_OPERATION_ABORTED` or the I/O's own result) frees the slot.
    pub(crate) fn cancel(&self, shared: &Shared, index: u32, generation: u32) {
        let slot = shared.slots.lock(index);
        // Locked: the slot cannot be completed and reused meanwhile, so the OVERLAPPED
        // still names this operation's call (or none, between a vectored write's calls).
        if slot.generation != generation || !matches!(slot.state, State::Orphaned) {
            return;
        }
        let entry = self.entry(index);
        // SAFETY: `op` and `handle` are written only in `prepare`, which cannot run while the
        // slot is in flight; read through the raw pointer without borrowing the entry, which
        // the thread that owns the operation's next step may be writing.
        let (op, handle) = unsafe {
            (
                std::ptr::addr_of!((*entry).op).read(),
                std::ptr::addr_of!((*entry).handle).read(),
            )
        };
        match op {
            Op::Blocking => {
                drop(slot);
                self.blocking.cancel(shared, index, generation);
            }
            // A posted packet cannot be cancelled; it comes at once.
            Op::Nop => {}
            _ => {
                // SAFETY: `handle` is open (the slot holds the file); the OVERLAPPED pointer
                // only identifies the call. ERROR_NOT_FOUND (done already, or between two
                // calls of a vectored write) is harmless: the operation completes anyway.
                unsafe { CancelIoEx(handle, std::ptr::addr_of!((*entry).raw)) };
            }
        }
    }

    /// `Driver::block_on` on the port: the calling thread polls `fut` and, while it is
    /// pending, waits in the port itself and records the completions it dequeues (its own
    /// and other threads'). Its waker interrupts the wait with a user APC. Returns
    /// `Err(fut)` untouched if the thread's handle cannot be had (the caller then parks).
    pub(crate) fn block_on<F: std::future::Future>(
        &self,
        shared: &Arc<Shared>,
        fut: F,
    ) -> std::result::Result<F::Output, F> {
        let mut thread = std::ptr::null_mut();
        // SAFETY: duplicates this thread's pseudo-handle into a real one we own, so wakers on
        // other threads can queue an APC to this thread.
        let ok = unsafe {
            windows_sys::Win32::Foundation::DuplicateHandle(
                GetCurrentProcess(),
                GetCurrentThread(),
                GetCurrentProcess(),
                &mut thread,
                0,
                0,
                DUPLICATE_SAME_ACCESS,
            )
        };
        if ok == 0 {
            return Err(fut);
        }
        let local = Arc::new(PortWake {
            notified: AtomicBool::new(true),
            in_port: AtomicBool::new(false),
            thread: Owned(thread),
        });
        let waker = std::task::Waker::from(local.clone());
        let mut cx = std::task::Context::from_waker(&waker);
        let mut fut = std::pin::pin!(fut);
        let mut entries = [OVERLAPPED_ENTRY::default(); BATCH];
        loop {
            if local.notified.swap(false, Ordering::SeqCst) {
                if let std::task::Poll::Ready(out) = fut.as_mut().poll(&mut cx) {
                    return Ok(out);
                }
                continue;
            }
            // Pairs with `PortWake::wake_by_ref`: either it sees us in the port and queues
            // the APC, or we see its `notified` and do not wait.
            local.in_port.store(true, Ordering::SeqCst);
            std::sync::atomic::fence(Ordering::SeqCst);
            if !local.notified.load(Ordering::SeqCst) {
                self.wait(shared, &mut entries, INFINITE, true);
            }
            local.in_port.store(false, Ordering::SeqCst);
        }
    }
}

/// The waker of [`Iocp::block_on`]: records the wake-up and, if the thread waits in the port,
/// queues a no-op APC to it, which ends its alertable wait. (A late APC ends the thread's
/// next alertable wait early: harmless for `block_on`, which looks again; a program's own
/// alertable waits on that thread must already expect early returns.)
struct PortWake {
    notified: AtomicBool,
    in_port: AtomicBool,
    thread: Owned,
}

/// The APC that ends a `block_on` thread's wait: it has nothing to do.
unsafe extern "system" fn wake_apc(_: usize) {}

impl std::task::Wake for PortWake {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        if self.notified.swap(true, Ordering::SeqCst) {
            return;
        }
        std::sync::atomic::fence(Ordering::SeqCst);
        if self.in_port.load(Ordering::SeqCst) {
            // SAFETY: `thread` is a real handle to the `block_on` thread, kept open by this
            // waker; the APC function does nothing. If the thread has exited the call fails,
            // which is harmless.
            unsafe { QueueUserAPC(Some(wake_apc), self.thread.0, 0) };
        }
    }
}

/// The three outcomes of a call, cancellation and the vectored write's steps, on real files
/// and pipes under the real port. Wine finishes file I/O inside the call yet reports it
/// pending, so the outcomes it never produces (completed at once, failed at once) come from
/// a scripted [`Calls`]: "at once" makes the same call kept off the port (an event whose low
/// bit is set: no packet is queued) and waits for it, as a call that completes at once
/// would; "fails" returns an error without calling.
#[cfg(test)]
mod tests {
    use super::*;
    use crate::{BackendChoice, BufPool, Driver, OpenOptions};
    use std::collections::VecDeque;
    use std::future::Future;
    use std::path::PathBuf;
    use std::sync::atomic::AtomicUsize;
    use std::sync::Mutex;
    use std::task::{Context, Poll, Wake, Waker};
    use std::time::{Duration, Instant};
    use windows_sys::Win32::Foundation::{
        CloseHandle, ERROR_ACCESS_DENIED, ERROR_DISK_FULL, ERROR_FILE_NOT_FOUND,
        ERROR_INVALID_PARAMETER, HANDLE,
    };
    use windows_sys::Win32::System::Threading::CreateEventW;
    use windows_sys::Win32::System::IO::GetOverlappedResult;

    #[derive(Clone, Copy, Debug)]
    enum Mode {
        /// Completed at once (TRUE), with no packet.
        AtOnce,
        /// Failed at once (FALSE) with this error.
        Fail(u32),
        /// The real call (pending, under Wine).
        Real,
    }

    /// Calls that follow a script, one mode per call, then the real calls.
    struct Script {
        modes: Mutex<VecDeque<Mode>>,
        calls: AtomicUsize,
    }

    impl Calls for Script {
        unsafe fn start(
            &self,
            call: IoCall,
            overlapped: *mut OVERLAPPED,
        ) -> std::result::Result<(), u32> {
            self.calls.fetch_add(1, Ordering::SeqCst);
            let mode = self.modes.lock().unwrap().pop_front().unwrap_or(Mode::Real);
            match mode {
                // SAFETY: the caller's guarantees, passed on.
                Mode::Real => unsafe { Win32.start(call, overlapped) },
                Mode::Fail(code) => Err(code),
                Mode::AtOnce => {
                    let handle = match call {
                        IoCall::Read { handle, .. } | IoCall::Write { handle, .. } => handle,
                    };
                    // SAFETY: an unnamed manual-reset event.
                    let event = unsafe { CreateEventW(std::ptr::null(), 1, 0, std::ptr::null()) };
                    assert!(!event.is_null());
                    let mut own = OVERLAPPED {
                        // SAFETY: the caller's OVERLAPPED holds the offset.
                        Anonymous: unsafe { (*overlapped).Anonymous },
                        hEvent: (event as usize | 1) as HANDLE,
                        ..OVERLAPPED::default()
                    };
                    // SAFETY: `own` lives until GetOverlappedResult below has waited for the
                    // call; the buffer is the caller's.
                    let started = unsafe { Win32.start(call, &mut own) };
                    let mut moved = 0u32;
                    let done = match started {
                        Ok(()) | Err(ERROR_IO_PENDING) => {
                            // SAFETY: waits for the call made with `own`.
                            sys::check(unsafe { GetOverlappedResult(handle, &own, &mut moved, 1) })
                                .map_err(|e| e.raw_os_error().unwrap() as u32)
                        }
                        Err(e) => Err(e),
                    };
                    // SAFETY: our event, no longer waited on.
                    unsafe { CloseHandle(event) };
                    done?;
                    // SAFETY: what a call that completes at once leaves in its OVERLAPPED.
                    unsafe {
                        (*overlapped).Internal = own.Internal;
                        (*overlapped).InternalHigh = moved as usize;
                    }
                    Ok(())
                }
            }
        }
    }

    /// An IOCP driver whose calls follow `modes`, without the spin (every look is one look).
    fn scripted(modes: &[Mode]) -> (Driver, &'static Script) {
        let script: &'static Script = Box::leak(Box::new(Script {
            modes: Mutex::new(modes.iter().copied().collect()),
            calls: AtomicUsize::new(0),
        }));
        CALLS_FOR_NEXT_DRIVER.with(|c| c.set(Some(script)));
        let driver = Driver::builder()
            .backend(BackendChoice::Iocp)
            .spin(Duration::ZERO)
            .build()
            .unwrap();
        (driver, script)
    }

    fn packets(driver: &Driver) -> usize {
        match &driver.shared().engine {
            Engine::Iocp(i) => i.packets.load(Ordering::SeqCst),
            _ => unreachable!(),
        }
    }

    fn scratch(name: &str) -> PathBuf {
        static N: AtomicUsize = AtomicUsize::new(0);
        let base =
            std::env::var_os("DIRECTFILE_TEST_DIR").map_or_else(std::env::temp_dir, PathBuf::from);
        let dir = base.join(format!(
            "iocp-{name}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).unwrap();
        dir.join("f")
    }

    fn open(driver: &Driver, name: &str) -> crate::File {
        OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .driver(driver)
            .open(scratch(name))
            .unwrap()
    }

    #[derive(Default)]
    struct Wakes(AtomicUsize);
    impl Wake for Wakes {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    /// Polls once with a counting waker.
    fn poll_once<F: Future + Unpin>(fut: &mut F, wakes: &Arc<Wakes>) -> Poll<F::Output> {
        let waker = Waker::from(wakes.clone());
        std::pin::Pin::new(fut).poll(&mut Context::from_waker(&waker))
    }

    /// Polls until ready (woken or not), for up to 10 s.
    fn finish<F: Future + Unpin>(fut: &mut F, wakes: &Arc<Wakes>) -> F::Output {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Poll::Ready(out) = poll_once(fut, wakes) {
                return out;
            }
            assert!(Instant::now() < deadline, "never completed");
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    fn filled(file: &crate::File, len: usize, byte: u8) -> crate::AlignedBuf {
        let mut buf = file.alloc_buf(len);
        buf.set_len(len);
        buf.fill(byte);
        buf
    }

    #[test]
    fn outcome_tells_the_three_returns_apart() {
        let ov = || 4096;
        assert_eq!(outcome(Ok(()), ov, false), Outcome::Completed(4096));
        assert_eq!(outcome(Err(ERROR_IO_PENDING), ov, false), Outcome::Pending);
        assert_eq!(
            outcome(Err(ERROR_DISK_FULL), ov, false),
            Outcome::Failed(ERROR_DISK_FULL)
        );
        assert_eq!(
            outcome(Err(ERROR_HANDLE_EOF), ov, true),
            Outcome::Completed(0)
        );
        assert_eq!(
            outcome(Err(ERROR_HANDLE_EOF), ov, false),
            Outcome::Failed(ERROR_HANDLE_EOF)
        );
        assert_eq!(outcome(Err(ERROR_MORE_DATA), ov, true), Outcome::Pending);
        // The OVERLAPPED is not read unless the call returned TRUE: a pending call's kernel
        // may be writing it.
        let untouched = || -> u32 { panic!("the OVERLAPPED was read after a FALSE return") };
        assert_eq!(
            outcome(Err(ERROR_IO_PENDING), untouched, true),
            Outcome::Pending
        );
        assert_eq!(
            outcome(Err(ERROR_DISK_FULL), untouched, false),
            Outcome::Failed(ERROR_DISK_FULL)
        );
    }

    #[test]
    fn completed_at_once_is_ready_at_the_first_poll_and_posts_no_packet() {
        let (driver, script) = scripted(&[Mode::AtOnce, Mode::AtOnce]);
        let file = open(&driver, "at-once");
        let unit = file.alignment().offset;
        let wakes = Arc::new(Wakes::default());
        let mut write = Box::pin(file.write_at(filled(&file, 2 * unit, 7), 0));
        let Poll::Ready((n, _)) = poll_once(&mut write, &wakes) else {
            panic!("a call that completed at once left the future pending")
        };
        assert_eq!(n.unwrap(), 2 * unit);
        let mut read = Box::pin(file.read_at(filled(&file, 2 * unit, 0), 0));
        let Poll::Ready((n, back)) = poll_once(&mut read, &wakes) else {
            panic!("a call that completed at once left the future pending")
        };
        assert_eq!(n.unwrap(), 2 * unit);
        assert!(
            back.iter().all(|&b| b == 7),
            "the at-once write reached the file"
        );
        assert_eq!(wakes.0.load(Ordering::SeqCst), 0, "no waker was needed");
        assert_eq!(script.calls.load(Ordering::SeqCst), 2);
        // The real (pending) path on the same slots afterwards: exactly one packet each.
        let (n, back) = futures_block_on(file.read_at(back, 0));
        assert_eq!(n.unwrap(), 2 * unit);
        assert!(back.iter().all(|&b| b == 7));
        assert_eq!(packets(&driver), 1, "the at-once calls posted no packet");
        assert_eq!(driver.in_flight(), 0);
    }

    /// `SyncStrategy::ExplicitSync`: a write that completes at once is not ready at the first
    /// poll; its flush runs on a worker (not on the polling thread, which returns), and the
    /// write completes when the flush does. On a pipe the flush waits for the server to read.
    #[test]
    fn an_explicit_sync_write_completed_at_once_completes_when_its_flush_does() {
        let (driver, script) = scripted(&[Mode::AtOnce]);
        let mut pipe = test_pipe_with(&driver, Some(crate::SyncStrategy::ExplicitSync));
        let wakes = Arc::new(Wakes::default());
        let mut buf = pipe.file.alloc_buf(1);
        buf.extend_from_slice(&[5]);
        let mut write = Box::pin(pipe.file.write_at(buf, u64::MAX));
        assert!(
            poll_once(&mut write, &wakes).is_pending(),
            "ready before its flush"
        );
        assert_eq!(script.calls.load(Ordering::SeqCst), 1, "the write was made");
        assert_eq!(pipe.take(), 5, "and it was done at once");
        let (n, _) = finish(&mut write, &wakes);
        assert_eq!(n.unwrap(), 1);
        assert!(
            wakes.0.load(Ordering::SeqCst) >= 1,
            "the flush's worker woke the task"
        );
        assert_eq!(packets(&driver), 0, "a write done at once posts no packet");
        assert_eq!(driver.in_flight(), 0);
    }

    #[test]
    fn failed_at_once_returns_the_error_and_the_buffer_and_frees_the_slot() {
        let (driver, script) = scripted(&[
            Mode::Fail(ERROR_INVALID_PARAMETER),
            Mode::Fail(ERROR_DISK_FULL),
        ]);
        let file = open(&driver, "failed-at-once");
        let unit = file.alignment().offset;
        let wakes = Arc::new(Wakes::default());
        for (code, kind) in [
            (ERROR_INVALID_PARAMETER, io::ErrorKind::InvalidInput),
            (ERROR_DISK_FULL, io::ErrorKind::StorageFull),
        ] {
            let mut write = Box::pin(file.write_at(filled(&file, unit, 1), 0));
            let Poll::Ready((r, buf)) = poll_once(&mut write, &wakes) else {
                panic!("a call that failed at once left the future pending")
            };
            let e = r.unwrap_err();
            assert_eq!(e.raw_os_error(), Some(code as i32), "{e}");
            assert_eq!(e.kind(), kind, "{e}");
            assert_eq!(buf.len(), unit, "the buffer came back");
            assert_eq!(driver.in_flight(), 0, "the slot was freed");
        }
        assert_eq!(script.calls.load(Ordering::SeqCst), 2);
        assert_eq!(wakes.0.load(Ordering::SeqCst), 0);
        assert_eq!(packets(&driver), 0);
        assert_eq!(file.len().unwrap(), 0, "nothing was written");
    }

    #[test]
    fn misaligned_requests_never_reach_the_call() {
        let (driver, script) = scripted(&[]);
        let file = open(&driver, "misaligned");
        let unit = file.alignment().offset;
        let (r, _) = futures_block_on(file.write_at(filled(&file, unit, 1), 1));
        assert!(
            matches!(
                r,
                Err(Error::Misaligned {
                    what: "offset",
                    value: 1,
                    ..
                })
            ),
            "{r:?}"
        );
        assert_eq!(
            script.calls.load(Ordering::SeqCst),
            0,
            "refused before WriteFile"
        );
    }

    #[test]
    fn pending_completes_by_its_packet_and_wakes_the_task() {
        let (driver, _) = scripted(&[]);
        let mut pipe = test_pipe(&driver);
        let wakes = Arc::new(Wakes::default());
        let mut buf = pipe.file.alloc_buf(1);
        buf.set_len(1);
        let mut read = Box::pin(pipe.file.read_at(buf, u64::MAX));
        assert!(
            poll_once(&mut read, &wakes).is_pending(),
            "a read of an empty pipe pends"
        );
        pipe.release();
        let deadline = Instant::now() + Duration::from_secs(10);
        while wakes.0.load(Ordering::SeqCst) == 0 {
            assert!(
                Instant::now() < deadline,
                "the packet did not wake the task"
            );
            std::thread::sleep(Duration::from_millis(1));
        }
        let Poll::Ready((n, buf)) = poll_once(&mut read, &wakes) else {
            panic!("woken but not ready")
        };
        assert_eq!(n.unwrap(), 1);
        assert_eq!(buf[0], 1);
        assert_eq!(packets(&driver), 1);
    }

    #[test]
    fn dropping_a_pending_read_cancels_it_and_the_buffer_waits_for_the_packet() {
        let (driver, _) = scripted(&[]);
        let mut pipe = test_pipe(&driver);
        let pool = BufPool::unregistered(1, 4096, 4096);
        let wakes = Arc::new(Wakes::default());
        let mut buf = pool.try_get().unwrap();
        buf.set_len(1);
        let mut read = Box::pin(pipe.file.read_at(buf, u64::MAX));
        assert!(poll_once(&mut read, &wakes).is_pending());
        drop(read); // CancelIoEx; the slot keeps the buffer until the packet
        let deadline = Instant::now() + Duration::from_secs(10);
        while driver.in_flight() > 0 {
            assert!(
                Instant::now() < deadline,
                "the cancelled read never completed"
            );
            std::thread::sleep(Duration::from_millis(1));
        }
        assert_eq!(
            pool.available(),
            1,
            "the buffer is back once the packet came"
        );
        assert_eq!(packets(&driver), 1, "the aborted read's packet");
        // The cancelled read took no data: the next read gets the byte written now.
        pipe.release();
        let mut buf = pool.try_get().unwrap();
        buf.set_len(1);
        let (n, _) = futures_block_on(pipe.file.read_at(buf, u64::MAX));
        assert_eq!(n.unwrap(), 1);
    }

    #[test]
    fn a_read_cancelled_while_its_future_waits_reports_canceled() {
        let (driver, _) = scripted(&[]);
        let pipe = test_pipe(&driver);
        let wakes = Arc::new(Wakes::default());
        let mut buf = pipe.file.alloc_buf(1);
        buf.set_len(1);
        let mut read = Box::pin(pipe.file.read_at(buf, u64::MAX));
        assert!(poll_once(&mut read, &wakes).is_pending());
        // SAFETY: cancels every call in flight on the pipe's handle, which the file keeps open.
        let ok = unsafe { CancelIoEx(pipe.file.as_raw_handle(), std::ptr::null()) };
        assert_ne!(ok, 0, "CancelIoEx: {}", io::Error::last_os_error());
        let (r, buf) = finish(&mut read, &wakes);
        let e = r.unwrap_err();
        assert!(
            matches!(e, Error::Canceled),
            "ERROR_OPERATION_ABORTED is Error::Canceled: {e:?}"
        );
        assert_eq!(e.kind(), io::ErrorKind::Other, "not retried as Interrupted");
        assert_eq!(buf.capacity(), pipe.file.alloc_buf(1).capacity());
        assert_eq!(driver.in_flight(), 0);
    }

    #[test]
    fn a_vectored_write_makes_one_call_per_buffer_in_any_mix_of_outcomes() {
        // Pending, then at once, then pending: all three buffers, in order.
        let (driver, script) = scripted(&[Mode::Real, Mode::AtOnce, Mode::Real]);
        let file = open(&driver, "writev");
        let unit = file.alignment().offset;
        let bufs = (1..=3u8).map(|i| filled(&file, unit, i)).collect();
        let (n, bufs) = futures_block_on(file.write_vectored_at(bufs, 0));
        assert_eq!(n.unwrap(), 3 * unit);
        assert_eq!(bufs.len(), 3);
        assert_eq!(script.calls.load(Ordering::SeqCst), 3);
        let (_, back) = futures_block_on(file.read_at(filled(&file, 3 * unit, 0), 0));
        for i in 0..3 {
            assert!(
                back[i * unit..(i + 1) * unit]
                    .iter()
                    .all(|&b| b == i as u8 + 1),
                "buffer {i}"
            );
        }
        // A later call that fails at once: the buffers written so far are reported.
        let (driver, _) = scripted(&[Mode::AtOnce, Mode::Fail(ERROR_DISK_FULL)]);
        let file = open(&driver, "writev-short");
        let bufs = (1..=3u8).map(|i| filled(&file, unit, i)).collect();
        let (n, _) = futures_block_on(file.write_vectored_at(bufs, 0));
        assert_eq!(n.unwrap(), unit, "a short vectored write, like pwritev");
        // The first call failing at once: the error, nothing written.
        let (driver, _) = scripted(&[Mode::Fail(ERROR_DISK_FULL)]);
        let file = open(&driver, "writev-failed");
        let bufs = (1..=3u8).map(|i| filled(&file, unit, i)).collect();
        let (r, bufs) = futures_block_on(file.write_vectored_at(bufs, 0));
        assert_eq!(r.unwrap_err().kind(), io::ErrorKind::StorageFull);
        assert_eq!(bufs.len(), 3);
        assert_eq!(driver.in_flight(), 0);
    }

    #[test]
    fn reads_at_the_end_of_the_file_read_nothing_at_once_or_by_packet() {
        let (driver, _) = scripted(&[Mode::Fail(ERROR_HANDLE_EOF)]);
        let file = open(&driver, "eof");
        let unit = file.alignment().offset;
        let wakes = Arc::new(Wakes::default());
        let mut read = Box::pin(file.read_at(filled(&file, unit, 9), 0));
        let Poll::Ready((n, buf)) = poll_once(&mut read, &wakes) else {
            panic!("EOF at once left the future pending")
        };
        assert_eq!(n.unwrap(), 0);
        assert_eq!(buf.len(), 0);
        // The real call: pending, then the packet's STATUS_END_OF_FILE.
        let mut buf = buf;
        buf.set_len(unit);
        let (n, _) = futures_block_on(file.read_at(buf, 8 * unit as u64));
        assert_eq!(n.unwrap(), 0);
        assert_eq!(packets(&driver), 1);
    }

    #[test]
    fn win32_errors_map_to_kinds_a_caller_can_match() {
        for (code, kind) in [
            (ERROR_DISK_FULL, io::ErrorKind::StorageFull),
            (ERROR_ACCESS_DENIED, io::ErrorKind::PermissionDenied),
            (ERROR_FILE_NOT_FOUND, io::ErrorKind::NotFound),
            (ERROR_INVALID_PARAMETER, io::ErrorKind::InvalidInput),
        ] {
            let e = Error::from_errno(code as i32);
            assert_eq!(
                (e.raw_os_error(), e.kind()),
                (Some(code as i32), kind),
                "{e}"
            );
        }
        let e = Error::from_errno(sys::CANCELED);
        assert!(matches!(e, Error::Canceled));
        assert_eq!(io::Error::from(e).raw_os_error(), Some(sys::CANCELED));
    }

    /// A named pipe: the client end opened through `driver`, the server end kept here.
    struct TestPipe {
        file: crate::File,
        server: Owned,
    }

    impl TestPipe {
        fn release(&mut self) {
            let mut written = 0u32;
            // SAFETY: a synchronous one-byte write from a live local to our pipe.
            let ok = unsafe {
                WriteFile(
                    self.server.0,
                    [1u8].as_ptr(),
                    1,
                    &mut written,
                    std::ptr::null_mut(),
                )
            };
            assert!(ok != 0 && written == 1, "{}", io::Error::last_os_error());
        }

        /// The server reads one byte (blocking until there is one).
        fn take(&mut self) -> u8 {
            let (mut byte, mut read) = ([0u8], 0u32);
            // SAFETY: a synchronous one-byte read into a live local from our pipe.
            let ok = unsafe {
                ReadFile(
                    self.server.0,
                    byte.as_mut_ptr(),
                    1,
                    &mut read,
                    std::ptr::null_mut(),
                )
            };
            assert!(ok != 0 && read == 1, "{}", io::Error::last_os_error());
            byte[0]
        }
    }

    fn test_pipe(driver: &Driver) -> TestPipe {
        test_pipe_with(driver, None)
    }

    /// As `test_pipe`, the client end opened write-through with `strategy` if there is one.
    fn test_pipe_with(driver: &Driver, strategy: Option<crate::SyncStrategy>) -> TestPipe {
        use windows_sys::Win32::Storage::FileSystem::PIPE_ACCESS_DUPLEX;
        static N: AtomicUsize = AtomicUsize::new(0);
        let path = format!(
            r"\\.\pipe\directfile-iocp-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        );
        let wide: Vec<u16> = path.encode_utf16().chain([0]).collect();
        // PIPE_TYPE_BYTE | PIPE_READMODE_BYTE | PIPE_WAIT are all 0.
        // SAFETY: `wide` is NUL-terminated; no security attributes.
        let server = unsafe {
            windows_sys::Win32::System::Pipes::CreateNamedPipeW(
                wide.as_ptr(),
                PIPE_ACCESS_DUPLEX,
                0,
                1,
                4096,
                4096,
                0,
                std::ptr::null(),
            )
        };
        assert!(
            server != INVALID_HANDLE_VALUE,
            "CreateNamedPipeW: {}",
            io::Error::last_os_error()
        );
        let server = Owned(server);
        let mut options = OpenOptions::new();
        options.read(true).write(true).direct(false).driver(driver);
        if let Some(strategy) = strategy {
            options.write_through(true).sync_strategy(strategy);
        }
        let file = options.open(&path).unwrap();
        TestPipe { file, server }
    }

    /// A tiny executor (the crate's futures on no runtime).
    fn futures_block_on<F: Future>(fut: F) -> F::Output {
        struct Unpark(std::thread::Thread);
        impl Wake for Unpark {
            fn wake(self: Arc<Self>) {
                self.0.unpark();
            }
        }
        let waker = Waker::from(Arc::new(Unpark(std::thread::current())));
        let mut cx = Context::from_waker(&waker);
        let mut fut = std::pin::pin!(fut);
        loop {
            if let Poll::Ready(out) = fut.as_mut().poll(&mut cx) {
                return out;
            }
            std::thread::park_timeout(Duration::from_millis(10));
        }
    }
}
