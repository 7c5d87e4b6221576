//! The baselines users would otherwise reach for: `std` (std::fs `write_at`/`read_at` from one OS
//! thread per in-flight op) and `tokio` (`spawn_blocking` + pwrite/pread; tokio::fs cannot open
//! with O_DIRECT). Both open the file with O_DIRECT (+ O_DSYNC for --dsync), as fio does (on
//! Windows `FILE_FLAG_NO_BUFFERING`, + `FILE_FLAG_WRITE_THROUGH`, and positional
//! `seek_write`/`seek_read`).

use std::fs;
use std::io;
use std::path::Path;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Barrier, OnceLock};
use std::thread;
use std::time::Instant;

use crate::bench::stats::{Measurement, Phase, Recorder};
use crate::bench::workload::{AlignedVec, OffsetGenerator, Workload};
use crate::error::{cli_error, CliResult};
use crate::sys;

/// One positional op on a std file; a short transfer is an error (the file is laid out to
/// `size`, so it can only mean something went wrong).
#[inline]
fn positional_op(
    file: &fs::File,
    write: bool,
    buffer: &mut AlignedVec,
    offset: u64,
) -> io::Result<()> {
    let expected = buffer.as_slice().len();
    let done = if write {
        sys::write_at(file, buffer.as_slice(), offset)?
    } else {
        sys::read_at(file, buffer.as_mut_slice(), offset)?
    };
    if done != expected {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            format!("short transfer at offset {offset}: {done} of {expected} bytes"),
        ));
    }
    Ok(())
}

/// The file a worker of a baseline does its I/O on: the one shared file on Unix, where
/// `pwrite(2)`/`pread(2)` on one descriptor run in parallel. On Windows each worker opens its
/// own handle: std's handles are synchronous, and the I/O manager runs the calls made on one
/// synchronous handle one at a time, which would measure queue depth 1 whatever `--qd` says.
#[cfg(unix)]
fn worker_file(
    shared: &Arc<fs::File>,
    _path: &Path,
    _workload: &Workload,
) -> io::Result<Arc<fs::File>> {
    Ok(Arc::clone(shared))
}

/// See the Unix version.
#[cfg(windows)]
fn worker_file(
    _shared: &Arc<fs::File>,
    path: &Path,
    workload: &Workload,
) -> io::Result<Arc<fs::File>> {
    workload.open_std(path).map(Arc::new)
}

/// `std`: `qd` OS threads, each doing blocking `write_at`/`read_at` in a loop.
pub fn run_std(path: &Path, workload: &Workload) -> CliResult<Measurement> {
    let shared =
        Arc::new(workload.open_std(path).map_err(|err| {
            cli_error!("std: cannot open {} with O_DIRECT: {err}", path.display())
        })?);
    let files = (0..workload.qd)
        .map(|_| worker_file(&shared, path, workload))
        .collect::<io::Result<Vec<_>>>()
        .map_err(|err| cli_error!("std: cannot open {} with O_DIRECT: {err}", path.display()))?;
    let cursor = Arc::new(AtomicU64::new(0));
    let barrier = Barrier::new(workload.qd + 1);
    let phase_start: OnceLock<Instant> = OnceLock::new();
    let write = workload.rw.is_write();

    let (outcomes, totals) = thread::scope(|scope| {
        let handles: Vec<_> = (0..workload.qd)
            .map(|worker| {
                let (file, barrier, phase_start) = (&*files[worker], &barrier, &phase_start);
                let mut offsets = OffsetGenerator::new(workload, worker, &cursor);
                scope.spawn(move || -> io::Result<Recorder> {
                    let mut recorder = Recorder::new(workload.runtime);
                    let mut buffer =
                        AlignedVec::new(workload.bs, workload.memory_align, worker as u64);
                    barrier.wait();
                    let start = *phase_start.get().expect("set before the barrier opens");
                    let deadline = start + workload.runtime;
                    loop {
                        let offset = offsets.next_offset();
                        let started = Instant::now();
                        positional_op(file, write, &mut buffer, offset)?;
                        let finished = Instant::now();
                        recorder.record(start, started, finished);
                        if finished >= deadline {
                            return Ok(recorder);
                        }
                    }
                })
            })
            .collect();
        let phase = Phase::begin();
        phase_start.set(phase.start).expect("set once");
        barrier.wait();
        let outcomes: Vec<_> = handles.into_iter().map(|handle| handle.join()).collect();
        (outcomes, phase.end())
    });

    let mut merged = Recorder::new(workload.runtime);
    for outcome in outcomes {
        let recorder = outcome
            .map_err(|_| cli_error!("std: a worker thread panicked"))?
            .map_err(|err| cli_error!("std: I/O on {} failed: {err}", path.display()))?;
        merged.merge(&recorder);
    }
    Ok(Measurement::from_records(
        "std",
        workload.label(),
        &merged,
        &totals,
    ))
}

/// `tokio`: `qd` tasks on a multi-thread runtime, each awaiting `spawn_blocking(pwrite)` in a loop.
pub fn run_tokio(path: &Path, workload: &Workload) -> CliResult<Measurement> {
    let shared =
        Arc::new(workload.open_std(path).map_err(|err| {
            cli_error!("tokio: cannot open {} with O_DIRECT: {err}", path.display())
        })?);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .max_blocking_threads(workload.qd.max(512))
        .enable_all()
        .build()
        .map_err(|err| cli_error!("tokio: cannot build a runtime: {err}"))?;
    let cursor = Arc::new(AtomicU64::new(0));
    let write = workload.rw.is_write();
    let workers = (0..workload.qd)
        .map(|worker| {
            Ok((
                Recorder::new(workload.runtime),
                AlignedVec::new(workload.bs, workload.memory_align, worker as u64),
                OffsetGenerator::new(workload, worker, &cursor),
                worker_file(&shared, path, workload)?,
            ))
        })
        .collect::<io::Result<Vec<_>>>()
        .map_err(|err| cli_error!("tokio: cannot open {} with O_DIRECT: {err}", path.display()))?;
    let workload = *workload;

    let (outcomes, totals) = runtime.block_on(async move {
        let phase = Phase::begin();
        let start = phase.start;
        let deadline = start + workload.runtime;
        let mut handles = Vec::with_capacity(workers.len());
        for (mut recorder, mut buffer, mut offsets, file) in workers {
            handles.push(tokio::spawn(async move {
                loop {
                    let offset = offsets.next_offset();
                    let started = Instant::now();
                    let file = Arc::clone(&file);
                    let (result, returned) = tokio::task::spawn_blocking(move || {
                        let result = positional_op(&file, write, &mut buffer, offset);
                        (result, buffer)
                    })
                    .await
                    .map_err(|err| io::Error::other(format!("blocking task failed: {err}")))?;
                    buffer = returned;
                    result?;
                    let finished = Instant::now();
                    recorder.record(start, started, finished);
                    if finished >= deadline {
                        return Ok::<Recorder, io::Error>(recorder);
                    }
                }
            }));
        }
        let mut outcomes = Vec::with_capacity(handles.len());
        for handle in handles {
            outcomes.push(handle.await);
        }
        (outcomes, phase.end())
    });
    runtime.shutdown_background();

    let mut merged = Recorder::new(workload.runtime);
    for outcome in outcomes {
        let recorder = outcome
            .map_err(|err| cli_error!("tokio: a task failed: {err}"))?
            .map_err(|err| cli_error!("tokio: I/O on {} failed: {err}", path.display()))?;
        merged.merge(&recorder);
    }
    Ok(Measurement::from_records(
        "tokio",
        workload.label(),
        &merged,
        &totals,
    ))
}
