//! The synchronisation primitives of the completion path, swapped for loom's under `--cfg directfile_loom`
//! so the model checker can explore every interleaving of submit, complete and drop.

#[cfg(directfile_loom)]
pub(crate) use loom::sync::{
    atomic::{fence, AtomicBool, AtomicU64, AtomicUsize, Ordering},
    Condvar, Mutex, MutexGuard,
};
#[cfg(not(directfile_loom))]
// `fence` and `AtomicU64`: io_uring's gate and the runtime reactors (Linux only).
#[cfg_attr(not(target_os = "linux"), allow(unused_imports))]
pub(crate) use std::sync::{
    atomic::{fence, AtomicBool, AtomicU64, AtomicUsize, Ordering},
    Condvar, Mutex, MutexGuard,
};
