//! directfile's drivers as bench backends: `uring`, `iocp` and `threads` map to the library's
//! `BackendChoice`, `auto` lets it pick. `qd` worker futures, each owning one buffer from a
//! registered pool (fixed-buffer opcodes on io_uring) that every op hands back, run on the
//! executor the workload names: joined in one future on one thread on `Driver::block_on`
//! (which waits in the ring on io_uring, in the port on Windows), on
//! `futures::executor::block_on` (`+futures`) or on `smol::block_on` (`+smol`, async-io's
//! reactor reaps on io_uring), or one task each on a tokio multi-thread runtime (`+tokio`,
//! tokio's reactor reaps on io_uring). On Windows the completion port's reaper thread wakes
//! the futures of every executor but `Driver::block_on`.

use std::path::Path;
use std::sync::{Arc, OnceLock};
use std::time::Instant;

use directfile::{AlignedBuf, BackendChoice, Driver, File, OpenOptions, Reactor};
use futures::executor::block_on;
use futures::future::join_all;

use crate::args::ExecutorArg;
use crate::bench::stats::{Measurement, Phase, Recorder};
use crate::bench::workload::{OffsetGenerator, SplitMix64, Workload};
use crate::bench::Backend;
use crate::error::{cli_error, CliResult};

/// Builds a driver with `qd` slots for `backend` (Auto, Uring, Iocp or Threads). On
/// `Driver::block_on` every operation is submitted and waited for by the one thread that runs
/// it, which is what cooperative completions need: they are on there. On smol the driver
/// uses async-io's reactor (tokio's is the default when a future waits in a runtime); both
/// are io_uring's only: on Windows the completion port's reaper thread wakes the futures on
/// every executor.
fn driver_for(backend: Backend, workload: &Workload) -> CliResult<Driver> {
    let executor = workload.executor;
    let choice = match backend {
        Backend::Uring => BackendChoice::Uring,
        Backend::Iocp => BackendChoice::Iocp,
        Backend::Threads => BackendChoice::Threads,
        _ => BackendChoice::Auto,
    };
    let mut builder = Driver::builder()
        .queue_depth(workload.qd)
        .backend(choice)
        .cooperative_completions(executor == ExecutorArg::Own)
        .reactor(match executor {
            ExecutorArg::Smol => Reactor::AsyncIo,
            _ => Reactor::Auto,
        })
        .inline_at_qd1(!workload.tuning.ring_only);
    if let Some(spin) = workload.tuning.spin {
        builder = builder.spin(spin);
    }
    builder.build().map_err(|err| {
        cli_error!(
            "directfile {}: cannot start the driver: {err}",
            backend.name()
        )
    })
}

/// The backend `Driver::new()` picks here and why: `(backend, reason)`.
pub fn auto_choice() -> CliResult<(String, String)> {
    let driver = Driver::new().map_err(|err| cli_error!("{err}"))?;
    Ok((
        driver.backend().to_string(),
        driver.backend_reason().to_string(),
    ))
}

/// One in-flight op's loop: issue, await, record, until the deadline.
async fn worker(
    file: File,
    write: bool,
    mut buffer: AlignedBuf,
    mut offsets: OffsetGenerator,
    mut recorder: Recorder,
    phase: Arc<OnceLock<(Instant, Instant)>>,
) -> Result<Recorder, String> {
    let (start, deadline) = *phase.get().expect("the phase starts before the first poll");
    let bs = buffer.len();
    loop {
        let offset = offsets.next_offset();
        let started = Instant::now();
        let (result, returned) = if write {
            file.write_at(buffer, offset).await
        } else {
            file.read_at(buffer, offset).await
        };
        buffer = returned;
        let finished = Instant::now();
        match result {
            Ok(done) if done == bs => {}
            Ok(done) => {
                return Err(format!(
                    "short transfer at offset {offset}: {done} of {bs} bytes"
                ))
            }
            Err(err) => return Err(format!("at offset {offset}: {err}")),
        }
        if !write {
            // read_at sets len to the count read; it was bs, checked above.
            buffer.set_len(bs);
        }
        recorder.record(start, started, finished);
        if finished >= deadline {
            return Ok(recorder);
        }
    }
}

/// Runs `workload` on `path` through directfile with `backend`.
pub fn run(backend: Backend, path: &Path, workload: &Workload) -> CliResult<Measurement> {
    let driver = driver_for(backend, workload)?;
    let name = match workload.executor {
        ExecutorArg::Own => driver.backend().to_string(),
        ExecutorArg::Futures => format!("{}+futures", driver.backend()),
        ExecutorArg::Tokio => format!("{}+tokio", driver.backend()),
        ExecutorArg::Smol => format!("{}+smol", driver.backend()),
    };
    let name = workload
        .tuning
        .name(name, driver.backend() == directfile::Backend::Uring);
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .direct(true)
        .write_through(workload.dsync)
        .driver(&driver)
        .open(path)
        .map_err(|err| cli_error!("directfile {name}: cannot open {}: {err}", path.display()))?;
    let alignment = file.alignment();
    if workload.bs % alignment.offset != 0 {
        return Err(cli_error!(
            "--bs {} is not a multiple of the direct-I/O alignment {} bytes of {}",
            workload.bs,
            alignment.offset,
            path.display()
        ));
    }
    let pool = driver.buf_pool(workload.qd, workload.bs, alignment.buffer_align());
    let cursor = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let phase_cell: Arc<OnceLock<(Instant, Instant)>> = Arc::new(OnceLock::new());
    let write = workload.rw.is_write();

    let mut futures = Vec::with_capacity(workload.qd);
    for index in 0..workload.qd {
        let mut buffer = pool.try_get().ok_or_else(|| {
            cli_error!("directfile {name}: buffer pool has fewer than qd buffers")
        })?;
        let mut rng = SplitMix64::new(index as u64 + 1);
        for chunk in buffer.as_full_mut().chunks_mut(8) {
            let bytes = rng.next_u64().to_le_bytes();
            chunk.copy_from_slice(&bytes[..chunk.len()]);
        }
        buffer.set_len(workload.bs);
        futures.push(worker(
            file.clone(),
            write,
            buffer,
            OffsetGenerator::new(workload, index, &cursor),
            Recorder::new(workload.runtime),
            Arc::clone(&phase_cell),
        ));
    }
    // Executors set up outside the measured phase: block_on's thread-local waker, smol's
    // reactor thread, tokio's worker threads.
    block_on(async {});
    let runtime = match workload.executor {
        ExecutorArg::Tokio => Some(
            tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
                .map_err(|err| cli_error!("directfile {name}: cannot start tokio: {err}"))?,
        ),
        ExecutorArg::Smol => {
            smol::block_on(async {});
            None
        }
        _ => None,
    };
    let phase = Phase::begin();
    let _ = phase_cell.set((phase.start, phase.start + workload.runtime));
    let outcomes = match (workload.executor, &runtime) {
        (ExecutorArg::Own, _) => driver.block_on(join_all(futures)),
        (ExecutorArg::Tokio, Some(runtime)) => runtime.block_on(async {
            let tasks: Vec<_> = futures.into_iter().map(tokio::spawn).collect();
            let mut outcomes = Vec::with_capacity(tasks.len());
            for task in tasks {
                outcomes.push(task.await.unwrap_or_else(|err| Err(format!("task: {err}"))));
            }
            outcomes
        }),
        (ExecutorArg::Smol, _) => smol::block_on(join_all(futures)),
        _ => block_on(join_all(futures)),
    };
    let totals = phase.end();
    drop(runtime);

    let mut merged = Recorder::new(workload.runtime);
    for outcome in outcomes {
        let recorder = outcome.map_err(|err| {
            cli_error!("directfile {name}: I/O on {} failed {err}", path.display())
        })?;
        merged.merge(&recorder);
    }
    Ok(Measurement::from_records(
        &name,
        workload.label(),
        &merged,
        &totals,
    ))
}
