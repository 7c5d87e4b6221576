//! Fault injection (cargo feature `fault-injection`, for tests): a plan that rewrites or holds
//! back completions, between the backend and the slot table, so that every error path of the
//! file API (and of what is built on it) can be driven on purpose.
//!
//! The `n`-th completion (counted from 0, in the order the backend reports them, over every
//! operation of the driver) can be turned into an error (EIO, ENOSPC, EINTR, ...) or a short
//! transfer (half the bytes, rounded down to 512). With `reorder(k)`, completions are held back
//! and delivered in groups of up to `k` in reverse order, and late (by the flusher's period).
//! The operation itself still ran: the fault is in what the caller is told, which is what the
//! caller must handle.

use crate::driver::Shared;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// What to do to one completion.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// Report this errno instead of the result.
    Errno(i32),
    /// Report half the bytes transferred (rounded down to a multiple of 512, at least 0).
    Short,
}

/// Which completions to fault, and whether to delay and reorder them.
#[derive(Clone, Debug, Default)]
pub struct FaultPlan {
    at: Vec<(u64, Fault)>,
    every: Option<(u64, Fault)>,
    reorder: usize,
}

impl FaultPlan {
    /// An empty plan (no fault).
    pub fn new() -> FaultPlan {
        FaultPlan::default()
    }

    /// Fault the `n`-th completion (0-based).
    pub fn at(mut self, n: u64, fault: Fault) -> FaultPlan {
        self.at.push((n, fault));
        self
    }

    /// Fault every `k`-th completion (the `k-1`-th, `2k-1`-th, ...).
    pub fn every(mut self, k: u64, fault: Fault) -> FaultPlan {
        assert!(k > 0);
        self.every = Some((k, fault));
        self
    }

    /// Hold completions back and deliver them late, up to `k` at a time in reverse order.
    pub fn reorder(mut self, k: usize) -> FaultPlan {
        self.reorder = k;
        self
    }

    fn fault_for(&self, n: u64) -> Option<Fault> {
        self.at
            .iter()
            .find(|(i, _)| *i == n)
            .map(|(_, f)| *f)
            .or_else(|| {
                self.every
                    .and_then(|(k, f)| ((n + 1) % k == 0).then_some(f))
            })
    }
}

pub(crate) struct Injector {
    plan: FaultPlan,
    count: AtomicU64,
    injected: AtomicU64,
    /// Held completions: `(index, generation, result, linked write half)`.
    held: Mutex<Vec<(u32, u32, i32, bool)>>,
}

/// How often held completions are delivered.
const FLUSH_PERIOD: Duration = Duration::from_micros(200);

impl Injector {
    pub(crate) fn new(plan: FaultPlan) -> Injector {
        Injector {
            plan,
            count: AtomicU64::new(0),
            injected: AtomicU64::new(0),
            held: Mutex::new(Vec::new()),
        }
    }

    pub(crate) fn injected(&self) -> u64 {
        self.injected.load(Ordering::Relaxed)
    }

    /// Applies the plan to one completion from the backend.
    pub(crate) fn complete(&self, shared: &Shared, index: u32, generation: u32, res: i32) {
        self.apply(shared, index, generation, res, false);
    }

    /// Applies the plan to the completion of a linked pair's write half: its faults reach the
    /// write's result, which the pair's result is made of.
    pub(crate) fn complete_linked_write(
        &self,
        shared: &Shared,
        index: u32,
        generation: u32,
        res: i32,
    ) {
        self.apply(shared, index, generation, res, true);
    }

    fn deliver(shared: &Shared, index: u32, generation: u32, res: i32, write_half: bool) {
        if write_half {
            shared.slots.complete_linked_write(index, generation, res);
        } else {
            shared.slots.complete(index, generation, res);
        }
    }

    fn apply(&self, shared: &Shared, index: u32, generation: u32, mut res: i32, write_half: bool) {
        let n = self.count.fetch_add(1, Ordering::Relaxed);
        if let Some(fault) = self.plan.fault_for(n) {
            self.injected.fetch_add(1, Ordering::Relaxed);
            res = match fault {
                Fault::Errno(errno) => -errno,
                Fault::Short if res > 0 => (res / 2) & !511,
                Fault::Short => res,
            };
        }
        if self.plan.reorder == 0 {
            Injector::deliver(shared, index, generation, res, write_half);
            return;
        }
        let full = {
            let mut held = self.held.lock().unwrap();
            held.push((index, generation, res, write_half));
            held.len() >= self.plan.reorder
        };
        if full {
            self.flush(shared);
        }
    }

    /// Delivers every held completion, newest first.
    fn flush(&self, shared: &Shared) -> bool {
        let batch = std::mem::take(&mut *self.held.lock().unwrap());
        let any = !batch.is_empty();
        for (index, generation, res, write_half) in batch.into_iter().rev() {
            Injector::deliver(shared, index, generation, res, write_half);
        }
        any
    }

    /// The flusher thread: delivers held completions periodically so none waits forever.
    pub(crate) fn start(shared: &Arc<Shared>) -> std::io::Result<()> {
        let shared = Arc::clone(shared);
        std::thread::Builder::new()
            .name("directfile-fault".into())
            .spawn(move || loop {
                let _abort = crate::driver::AbortOnUnwind;
                std::thread::sleep(FLUSH_PERIOD);
                let injector = shared.faults.as_ref().expect("started with a plan");
                if injector.flush(&shared) {
                    // A reaper waiting in the kernel for completions we held must look again.
                    shared.engine.nudge();
                }
                if shared.is_shut_down() && shared.slots.in_flight() == 0 {
                    shared.engine.nudge();
                    break;
                }
            })?;
        Ok(())
    }
}
