//! A queue of tasks waiting for a resource (a free slot, a free pool buffer), each entry under
//! a ticket so that a task that stops waiting removes exactly its own entry.
//!
//! Without tickets a dropped waiter's stale waker stays queued and can consume the wake-up
//! meant for a live one, which then sleeps with the resource free. The queue only grows to the
//! largest number of tasks that ever waited at once; it is used under its owner's mutex.

use std::collections::VecDeque;
use std::task::Waker;

pub(crate) struct WaitQueue {
    waiters: VecDeque<(u64, Waker)>,
    next_ticket: u64,
}

impl WaitQueue {
    pub(crate) fn with_capacity(capacity: usize) -> WaitQueue {
        WaitQueue {
            waiters: VecDeque::with_capacity(capacity),
            next_ticket: 0,
        }
    }

    /// Queues `waker` under the task's ticket (taking a new ticket the first time), or
    /// refreshes the waker of the task's queued entry.
    pub(crate) fn register(&mut self, ticket: &mut Option<u64>, waker: &Waker) {
        if let Some(t) = *ticket {
            if let Some((_, queued)) = self.waiters.iter_mut().find(|(id, _)| *id == t) {
                if !queued.will_wake(waker) {
                    queued.clone_from(waker);
                }
                return;
            }
        }
        let t = *ticket.get_or_insert_with(|| {
            self.next_ticket += 1;
            self.next_ticket
        });
        self.waiters.push_back((t, waker.clone()));
    }

    /// Removes the entry of `ticket`. Returns `false` when it was no longer queued, that is,
    /// when it was popped to be woken (the caller then passes the wake-up on if it will not
    /// use the resource).
    pub(crate) fn remove(&mut self, ticket: u64) -> bool {
        match self.waiters.iter().position(|(id, _)| *id == ticket) {
            Some(i) => {
                self.waiters.remove(i);
                true
            }
            None => false,
        }
    }

    /// Number of queued tasks.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.waiters.len()
    }

    /// The next task to wake.
    pub(crate) fn pop(&mut self) -> Option<Waker> {
        self.waiters.pop_front().map(|(_, w)| w)
    }

    /// Takes every queued waker (to wake them all, outside the owner's lock).
    pub(crate) fn take_all(&mut self) -> VecDeque<(u64, Waker)> {
        std::mem::take(&mut self.waiters)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_removed_waiter_never_takes_another_ones_wakeup() {
        let mut q = WaitQueue::with_capacity(4);
        let (mut x, mut y) = (None, None);
        q.register(&mut x, Waker::noop());
        q.register(&mut y, Waker::noop());
        q.register(&mut x, Waker::noop()); // re-poll: no second entry
        assert_eq!(q.waiters.len(), 2);
        assert!(q.remove(x.unwrap()));
        assert!(q.pop().is_some()); // y's
        assert!(q.pop().is_none());
        assert!(
            !q.remove(y.unwrap()),
            "y was popped: the caller must pass the wake-up on"
        );
    }
}
