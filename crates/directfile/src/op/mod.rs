//! The operation future: acquire a slot, submit, and take the result back.
//!
//! One `Op` covers the three cases of every call:
//! - **completed at once**: the completion is already recorded when the future first looks
//!   (the kernel finished inline, or a spin found it): it returns `Ready` and never clones the
//!   waker;
//! - **failed at once**: the driver refused the submission: the error comes back with the
//!   buffers and the slot is freed;
//! - **pending**: the waker is recorded in the slot and the driver wakes it on completion.

#![allow(unsafe_code)]

pub(crate) mod slot;

use crate::driver::Driver;
use crate::sys::{self, OwnedHandle};
use crate::{Error, Result};
use slot::{Look, OpBufs, OpDesc, Slots};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

enum OpState {
    Unsubmitted {
        file: Arc<OwnedHandle>,
        desc: OpDesc,
        bufs: OpBufs,
        /// Our place in the queue of tasks waiting for a free slot, once we had to wait.
        ticket: Option<u64>,
    },
    Submitted {
        index: u32,
        generation: u32,
        /// A queue-depth-1 operation under `Driver::block_on` on io_uring: when it was
        /// submitted, and whether it ran inline (`driver::inline` compares the two paths).
        qd1: Option<(Instant, bool)>,
    },
    Done,
}

/// A submitted (or about to be submitted) operation. Resolves to the kernel's result (a byte
/// count, or an error) and the operation's buffers.
pub(crate) struct Op {
    driver: Driver,
    state: OpState,
}

// The raw pointers in `OpDesc` point into the buffers the Op owns (heap memory that does not
// move with the Op); they are only dereferenced by the driver while a slot owns those buffers.
// SAFETY: see above; every other field is Send.
unsafe impl Send for Op {}

impl Op {
    pub(crate) fn new(driver: Driver, file: Arc<OwnedHandle>, desc: OpDesc, bufs: OpBufs) -> Op {
        Op {
            driver,
            state: OpState::Unsubmitted {
                file,
                desc,
                bufs,
                ticket: None,
            },
        }
    }

    /// Tries to submit. `Ready(Err)` is the failed-at-once case; `Ready(Ok)` means submitted.
    fn poll_submit(&mut self, cx: &mut Context<'_>) -> Poll<Option<(Error, OpBufs)>> {
        let shared = self.driver.shared();
        let OpState::Unsubmitted { ticket, .. } = &mut self.state else {
            unreachable!()
        };
        if shared.is_closed() {
            if let Some(t) = ticket.take() {
                shared.slots.cancel_wait(t);
            }
            let OpState::Unsubmitted { bufs, .. } =
                std::mem::replace(&mut self.state, OpState::Done)
            else {
                unreachable!()
            };
            return Poll::Ready(Some((Error::Closed, bufs)));
        }
        let index = match shared.slots.poll_acquire(cx, ticket) {
            Poll::Ready(index) => index,
            Poll::Pending => return Poll::Pending,
        };
        let OpState::Unsubmitted {
            file, desc, bufs, ..
        } = std::mem::replace(&mut self.state, OpState::Done)
        else {
            unreachable!()
        };
        let submission = {
            let mut slot = shared.slots.lock(index);
            let fd = sys::raw(&file);
            let generation = Slots::arm(&mut slot, fd, desc, bufs, file);
            if let OpDesc::Writev { .. } = desc {
                let slot = &mut *slot;
                if let OpBufs::Many(bufs) = &mut slot.bufs {
                    debug_assert!(bufs.len() <= slot.iovecs.0.capacity());
                    for b in bufs.iter_mut() {
                        let len = b.len();
                        slot.iovecs.0.push(sys::io_vec(b.as_mut_ptr(), len));
                    }
                }
            }
            let candidate = shared.engine.inline_candidate(shared, &desc);
            #[cfg(target_os = "linux")]
            if candidate && shared.inline.choose() {
                drop(slot);
                let started = Instant::now();
                shared.engine.run_inline(shared, index, generation);
                self.state = OpState::Submitted {
                    index,
                    generation,
                    qd1: Some((started, true)),
                };
                return Poll::Ready(None);
            }
            let submission = shared.engine.prepare(&slot, index, generation);
            slot.linked = submission.linked();
            (submission, candidate.then(Instant::now))
        };
        let (submission, qd1_started) = submission;
        let generation = submission.generation();
        shared
            .spin
            .submitted(shared.engine.completed_by_a_thread(&desc));
        match shared.engine.submit(shared, submission) {
            Ok(()) => {
                self.state = OpState::Submitted {
                    index,
                    generation,
                    qd1: qd1_started.map(|started| (started, false)),
                };
                Poll::Ready(None)
            }
            Err(e) => {
                let bufs = shared.slots.unsubmit(index);
                Poll::Ready(Some((e, bufs)))
            }
        }
    }
}

impl Future for Op {
    type Output = (Result<i32>, OpBufs);

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        if let OpState::Unsubmitted { .. } = this.state {
            match this.poll_submit(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Some((e, bufs))) => return Poll::Ready((Err(e), bufs)),
                Poll::Ready(None) => {}
            }
        }
        let OpState::Submitted {
            index,
            generation,
            qd1,
        } = this.state
        else {
            panic!("Op polled after completion");
        };
        let shared = this.driver.shared();
        // Reap whatever the kernel has finished, on this thread: cheaper than any wake-up.
        // (With cooperative completions, first post those that wait for this thread.)
        shared.engine.run_task_work();
        shared.engine.reap(shared);
        let mut done = None;
        // At queue depth 1 nothing else can make progress: wait for the completion on this
        // thread for a short while rather than pay two thread wake-ups. (Otherwise one look at
        // the slot, below, takes the result or registers the waker under a single lock.)
        // A spin that runs out of budget backs the next ones off (`driver::spin`). An operation
        // that ran inline is complete already: it neither spins nor counts as a spin that
        // caught its completion, which would end the back-off of the ring's.
        let ran_inline = matches!(qd1, Some((_, true)));
        if !ran_inline && shared.slots.in_flight() == 1 && shared.engine.may_spin() {
            if let Some(budget) = shared.spin.start() {
                let start = Instant::now();
                loop {
                    done = shared
                        .slots
                        .take_or_register(index, generation, None, || false)
                        .done();
                    if done.is_some() || start.elapsed() >= budget {
                        break;
                    }
                    shared.spin.pause();
                    shared.engine.run_task_work();
                    shared.engine.reap(shared);
                }
                shared.spin.ended(done.is_some());
            }
        }
        let done = match done {
            Some(d) => Some(d),
            None => {
                // About to wait: the first time in an async runtime that can reap for us,
                // register the ring with its reactor.
                shared.engine.offer_reactor(this.driver.shared_arc());
                match shared
                    .slots
                    .take_or_register(index, generation, Some(cx.waker()), || {
                        shared.engine.serves_here()
                    }) {
                    Look::Done(f) => Some(f),
                    Look::Waiting => None,
                    Look::Unattended => {
                        // Our completion is now unattended: make sure the reaper is awake.
                        shared.engine.kick();
                        None
                    }
                }
            }
        };
        match done {
            Some(f) => {
                this.state = OpState::Done;
                if let Some((started, inline)) = qd1 {
                    let nanos = started.elapsed().as_nanos().min(u64::MAX as u128) as u64;
                    shared.inline.record(inline, nanos);
                }
                let res = if f.res < 0 {
                    Err(Error::from_errno(-f.res))
                } else {
                    Ok(f.res)
                };
                Poll::Ready((res, f.bufs))
            }
            None => Poll::Pending,
        }
    }
}

impl Drop for Op {
    fn drop(&mut self) {
        match std::mem::replace(&mut self.state, OpState::Done) {
            OpState::Submitted {
                index, generation, ..
            } => {
                let shared = self.driver.shared();
                if shared.slots.abandon(index, generation) {
                    shared.engine.cancel(shared, index, generation);
                }
            }
            OpState::Unsubmitted {
                ticket: Some(t), ..
            } => self.driver.shared().slots.cancel_wait(t),
            OpState::Unsubmitted { .. } | OpState::Done => {}
        }
    }
}
