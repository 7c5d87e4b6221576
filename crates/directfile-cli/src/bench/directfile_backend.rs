//! directfile's drivers as bench backends: `uring` and `threads` map to the library's
//! `BackendChoice`, `auto` lets it pick. `qd` worker futures, each owning one buffer from a
//! registered pool (fixed-buffer opcodes on io_uring) that every op hands back, are driven
//! concurrently by `join_all` on one thread: on `Driver::block_on` (which waits in the ring on
//! io_uring), or with `--executor futures` on `futures::executor::block_on` (backend names get a
//! `+futures` suffix then).

use std::cell::OnceCell;
use std::path::Path;
use std::time::Instant;

use directfile::{AlignedBuf, BackendChoice, Driver, File, OpenOptions};
use futures::executor::block_on;
use futures::future::join_all;

use crate::bench::stats::{Measurement, Phase, Recorder};
use crate::bench::workload::{OffsetGenerator, SplitMix64, Workload};
use crate::bench::Backend;
use crate::error::{cli_error, CliResult};

/// Builds a driver with `qd` slots for `backend` (Auto, Uring or Threads). On
/// `Driver::block_on` (`own_executor`) every operation is submitted and waited for by the one
/// thread that runs it, which is what cooperative completions need: they are on there.
fn driver_for(backend: Backend, queue_depth: usize, own_executor: bool) -> CliResult<Driver> {
    let choice = match backend {
        Backend::Uring => BackendChoice::Uring,
        Backend::Threads => BackendChoice::Threads,
        _ => BackendChoice::Auto,
    };
    Driver::builder()
        .queue_depth(queue_depth)
        .backend(choice)
        .cooperative_completions(own_executor)
        .build()
        .map_err(|err| {
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
    file: &File,
    write: bool,
    mut buffer: AlignedBuf,
    mut offsets: OffsetGenerator,
    mut recorder: Recorder,
    phase: &OnceCell<(Instant, Instant)>,
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
    let driver = driver_for(backend, workload.qd, workload.own_executor)?;
    let name = if workload.own_executor {
        driver.backend().to_string()
    } else {
        format!("{}+futures", driver.backend())
    };
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
    let phase_cell: OnceCell<(Instant, Instant)> = OnceCell::new();
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
            &file,
            write,
            buffer,
            OffsetGenerator::new(workload, index, &cursor),
            Recorder::new(workload.runtime),
            &phase_cell,
        ));
    }
    let all = join_all(futures);
    // block_on sets up its thread-local waker on first use: do that outside the measured phase.
    block_on(async {});
    let phase = Phase::begin();
    let _ = phase_cell.set((phase.start, phase.start + workload.runtime));
    let outcomes = if workload.own_executor {
        driver.block_on(all)
    } else {
        block_on(all)
    };
    let totals = phase.end();

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
